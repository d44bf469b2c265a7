// pico-socket-server's echo server on the running runtime's default adapter:
// `<runtime> bench/servers/pico.ts <packet type> [tcp|tls|unix] [proxy]`
// (proxy: each connection begins with a PROXY protocol header).
import process from "node:process";
import { type PacketType, startServer } from "../../mod.ts";
import { announce, path, tls } from "./listening.ts";

const arg = process.argv[2] ?? "0";
const packet = (arg === "line" ? "line" : Number(arg)) as PacketType;
const server = await startServer({
  ...(path !== undefined ? { path } : { hostname: "127.0.0.1", port: 0 }),
  tls,
  proxyProtocol: process.argv.includes("proxy"),
  max: 20_000,
  packet,
  handler: async (session) => {
    for await (const data of session) await session.send(data);
  },
  onError: () => {},
});
announce(server.port);
