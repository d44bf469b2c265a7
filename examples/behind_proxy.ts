/**
 * A line echo server behind a load balancer: `node examples/behind_proxy.ts`
 * (or `deno run -A`, `bun`), with HAProxy in front (see the README, "Behind a
 * load balancer"), or by hand:
 * `printf 'PROXY TCP4 203.0.113.9 127.0.0.1 5555 9925\r\nhi\n' | nc 127.0.0.1 9925`.
 * Each session greets its client by its real address (from the PROXY
 * header); at most 4 sessions per client address; only loopback peers may
 * connect. PORT picks the port (0: any).
 *
 * @module
 */

import process from "node:process";
import { startServer } from "../mod.ts";

const server = await startServer({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 9925),
  max: 1000,
  maxPerAddress: 4,
  proxyProtocol: { trusted: ["127.0.0.0/8", "::1"], timeoutMs: 3000 },
  packet: "line",
  handler: async (session) => {
    const client = session.remoteAddress;
    await session.send(`hello ${client.hostname}:${client.port} (via ${session.proxyAddress?.hostname})`);
    for await (const line of session) await session.send(line);
  },
  onRefused: ({ remoteAddress, reason }) => console.log(`refused ${remoteAddress.hostname}: ${reason}`),
});
console.log(`behind a load balancer on 127.0.0.1:${server.port}`);
process.once("SIGINT", () => server.stop({ timeoutMs: 1000 }).then(() => process.exit(0)));
process.once("SIGTERM", () => server.stop({ timeoutMs: 1000 }).then(() => process.exit(0)));
