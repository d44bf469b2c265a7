/**
 * An echo server on a Unix domain socket: `node examples/unix.ts` (or
 * `deno run -A`, `bun`), then `socat - UNIX-CONNECT:/tmp/pico-echo.sock`
 * (or `nc -U /tmp/pico-echo.sock`). SOCKET names another path.
 *
 * @module
 */

import process from "node:process";
import { startServer } from "../mod.ts";

const server = await startServer({
  path: process.env.SOCKET ?? "/tmp/pico-echo.sock",
  max: 100,
  packet: "line",
  handler: async (session) => {
    for await (const line of session) await session.send(line);
  },
});
console.log(`unix echo on ${server.path} (registered as ${server.name})`);
// stop() removes the socket file; a file left by a crash is replaced at the next start.
process.once("SIGINT", () => server.stop({ timeoutMs: 1000 }).then(() => process.exit(0)));
