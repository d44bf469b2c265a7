/**
 * Worker threads for a group (`workers`) on `node:worker_threads`, which
 * Node, Deno and Bun all ship: each runs `worker_thread.ts`, a member
 * server of the group. Shared by the three adapters.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import type { WorkerThread, WorkerThreadEvents } from "../src/transport.ts";

// The thread's entry beside this module (compiled to .js in the npm package).
const entry = new URL(import.meta.url.endsWith(".ts") ? "./worker_thread.ts" : "./worker_thread.js", import.meta.url);

/** Starts a worker thread of a group with `data` (its `workerData`). */
export function startThread(data: unknown, events: WorkerThreadEvents): WorkerThread {
  const worker = new Worker(entry, { workerData: data });
  let failure: Error | undefined;
  worker.on("message", (message) => events.message(message));
  // An uncaught error in the thread: it ends with it. Listening here also
  // keeps the error from ending the main thread.
  worker.on("error", (error) => {
    failure ??= error instanceof Error ? error : new Error(String(error));
  });
  worker.on("exit", (code) => {
    events.exit(failure ?? (code === 0 ? undefined : new Error(`the thread exited with code ${code}`)));
  });
  return {
    post: (message) => worker.postMessage(message),
    terminate: async () => void await worker.terminate(),
  };
}
