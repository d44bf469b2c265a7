/**
 * A line echo server on every core: `node examples/workers.ts` (or
 * `deno run -A`, `bun`), then `nc 127.0.0.1 9924` a few times: each line
 * comes back from the worker thread that runs that session. PORT picks the
 * port (0: any). One limit, `max`, holds across all the threads.
 *
 * @module
 */

import process from "node:process";
import { startServer } from "../mod.ts";

const server = await startServer({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 9924),
  max: 1000,
  workers: "auto", // one thread per core
  packet: "line",
  handler: new URL("./line_echo.ts", import.meta.url),
  onSessionStart: (session) => console.log(`+ session ${session.id} on worker ${session.worker}`),
  onSessionEnd: (session, reason) => console.log(`- session ${session.id} (${reason})`),
  onError: (error) => console.error("error:", error),
});
console.log(`line echo on 127.0.0.1:${server.port}, ${server.status().workers} worker threads`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, async () => {
    const { ended, closed } = await server.stop({ timeoutMs: 5000 });
    console.log(`stopped: ${ended} sessions ended, ${closed} closed`);
    process.exit(0);
  });
}
