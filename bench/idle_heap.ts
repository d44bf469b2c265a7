// Where an idle session's memory goes on Node: a raw node:net echo server or
// a pico-socket-server one (packet type 0 or 4) in this process, 10,000 idle
// connections from the load generator, then V8's own account: the young
// generation's size (which V8 grows while objects survive, so it depends on
// how much each session keeps) and, after a full collection, the live heap
// per session. Not part of `npm run bench`; run it by hand, one server per
// process:
//
//   node --expose-gc bench/idle_heap.ts raw
//   node --expose-gc bench/idle_heap.ts pico0
//   node --expose-gc bench/idle_heap.ts pico4
import { createServer } from "node:net";
import process from "node:process";
import { getHeapSpaceStatistics } from "node:v8";
import { openIdleSessions } from "./common.ts";
import { startServer } from "../mod.ts";

const SESSIONS = Number(process.env.BENCH_IDLE ?? 10_000);
const kind = process.argv[2] ?? "pico0";
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined || !["raw", "pico0", "pico4"].includes(kind)) {
  console.error("usage: node --expose-gc bench/idle_heap.ts raw|pico0|pico4");
  process.exit(2);
}

let port: number;
if (kind === "raw") {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("data", (chunk) => socket.write(chunk));
    socket.on("error", () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, resolve));
  port = (server.address() as { port: number }).port;
} else {
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    max: SESSIONS * 2,
    packet: kind === "pico4" ? 4 : 0,
    handler: async (session) => {
      for await (const packet of session) await session.send(packet);
    },
    onError: () => {},
  });
  port = server.port;
}

const newSpace = () => getHeapSpaceStatistics().find((space) => space.space_name === "new_space")!.space_size;
const liveHeap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const heapBefore = liveHeap();
const newSpaceBefore = newSpace();
const closeSessions = await openIdleSessions(port, SESSIONS);
const newSpaceAfter = newSpace();
const heapAfter = liveHeap();
console.log(JSON.stringify({
  server: kind,
  sessions: SESSIONS,
  newSpaceKiB: { before: Math.round(newSpaceBefore / 1024), after: Math.round(newSpaceAfter / 1024) },
  liveHeapBytesPerSession: Math.round((heapAfter - heapBefore) / SESSIONS),
}));
await closeSessions();
process.exit(0);
