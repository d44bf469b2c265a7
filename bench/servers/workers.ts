// pico-socket-server on `n` worker threads with the hashing handler, for the
// scaling benchmark: `<runtime> bench/servers/workers.ts <n>`.
import process from "node:process";
import { startServer } from "../../mod.ts";
import { announce } from "./listening.ts";

const server = await startServer({
  hostname: "127.0.0.1",
  port: 0,
  max: 20_000,
  packet: 4,
  workers: Number(process.argv[2] ?? 1),
  handler: new URL("./hash_handler.ts", import.meta.url),
  onError: () => {},
});
announce(server.port);
