// The raw baseline on Bun: the smallest Bun.listen echo server, with the
// write queue that Bun's partial writes require to echo correctly.
type Queue = { pending: Uint8Array[] };

const server = Bun.listen<Queue>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(socket) {
      socket.data = { pending: [] };
      socket.setNoDelay(true);
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
console.log(`PORT ${server.port}`);
