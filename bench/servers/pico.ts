// pico-socket-server's echo server on the running runtime's default adapter:
// `<runtime> bench/servers/pico.ts <packet type>`.
import process from "node:process";
import { type PacketType, startServer } from "../../mod.ts";

const arg = process.argv[2] ?? "0";
const packet = (arg === "line" ? "line" : Number(arg)) as PacketType;
const server = await startServer({
  hostname: "127.0.0.1",
  port: 0,
  max: 20_000,
  packet,
  handler: async (session) => {
    for await (const data of session) await session.send(data);
  },
  onError: () => {},
});
console.log(`PORT ${server.port}`);
