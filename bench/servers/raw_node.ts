// The raw baseline on Node: the smallest node:net (or node:tls) echo server.
import { createServer, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { announce, path, tls } from "./listening.ts";

const echo = (socket: Socket) => {
  if (path === undefined) socket.setNoDelay(true);
  socket.on("data", (chunk) => socket.write(chunk));
  socket.on("error", () => socket.destroy());
};
const server = tls !== undefined ? createTlsServer(tls, echo) : createServer(echo);
const where = path !== undefined ? { path } : { port: 0, host: "127.0.0.1" };
server.listen({ ...where, backlog: 4096 }, () => {
  const address = server.address();
  announce(typeof address === "object" && address ? address.port : 0);
});
