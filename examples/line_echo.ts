/**
 * The handler module of `examples/workers.ts`: each worker thread imports
 * it and serves its default export. Echoes each line, saying which worker
 * thread answered; ends its session when the server stops gracefully.
 *
 * @module
 */

import type { Session } from "../mod.ts";

/**
 * Echoes lines until the peer leaves or the server stops.
 *
 * @param session The session to serve.
 */
export default async function lineEcho(session: Session): Promise<void> {
  session.signal.addEventListener("abort", () => session.close(), { once: true });
  for await (const line of session) {
    await session.send(`worker ${session.worker}: ${new TextDecoder().decode(line)}`);
  }
}
