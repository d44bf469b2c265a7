/**
 * An echo server over TLS, with ALPN: `node examples/tls.ts` (or `deno run -A`,
 * `bun`), then `openssl s_client -connect 127.0.0.1:9443 -alpn echo/1 -quiet`.
 * TLS_CERT and TLS_KEY name the PEM files; by default the test certificate
 * for localhost in tests/fixtures/tls (its CA: tests/fixtures/tls/ca.pem).
 *
 * @module
 */

import { readFileSync } from "node:fs";
import process from "node:process";
import { startServer } from "../mod.ts";

const fixtures = new URL("../tests/fixtures/tls/", import.meta.url);
const server = await startServer({
  port: Number(process.env.PORT ?? 9443),
  hostname: "127.0.0.1",
  max: 100,
  packet: "line",
  tls: {
    cert: readFileSync(process.env.TLS_CERT ?? new URL("chain.pem", fixtures)),
    key: readFileSync(process.env.TLS_KEY ?? new URL("server.key", fixtures)),
    alpnProtocols: ["echo/1"],
  },
  handshakeTimeoutMs: 5000,
  handler: async (session) => {
    await session.send(`hello over ${session.encrypted ? "TLS" : "TCP"}, protocol ${session.alpnProtocol}`);
    for await (const line of session) await session.send(line);
  },
});
console.log(`tls echo on 127.0.0.1:${server.port}`);
process.once("SIGINT", () => server.stop({ timeoutMs: 1000 }).then(() => process.exit(0)));
