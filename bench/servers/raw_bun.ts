// The raw baseline on Bun: the smallest Bun.listen echo server (TCP, TLS or
// a Unix socket), with the write queue that Bun's partial writes require to
// echo correctly.
import { announce, path, tls } from "./listening.ts";

type Queue = { pending: Uint8Array[] };

const server = Bun.listen<Queue>({
  ...(path !== undefined ? { unix: path } : { hostname: "127.0.0.1", port: 0 }),
  tls,
  socket: {
    open(socket) {
      socket.data = { pending: [] };
      if (path === undefined) socket.setNoDelay(true);
    },
    data(socket, chunk) {
      const queue = socket.data.pending;
      if (queue.length > 0) {
        queue.push(chunk);
        return;
      }
      const written = socket.write(chunk);
      if (written < chunk.length) queue.push(chunk.subarray(Math.max(written, 0)));
    },
    drain(socket) {
      const queue = socket.data.pending;
      while (queue.length > 0) {
        const chunk = queue[0];
        const written = socket.write(chunk);
        if (written < chunk.length) {
          queue[0] = chunk.subarray(Math.max(written, 0));
          return;
        }
        queue.shift();
      }
    },
    error() {},
  },
});
announce(server.port ?? 0);
