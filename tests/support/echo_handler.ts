// The handler module of the servers with workers in tests/workers.test.ts:
// echoes every packet. "who" answers with the worker's number; "crash"
// ends the whole worker thread with an uncaught error; "throw" makes the
// handler fail. On a graceful stop it says "bye" and ends.
import type { Session } from "../../mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export default async function echo(session: Session): Promise<void> {
  session.signal.addEventListener("abort", () => {
    void session.send("bye").catch(() => {}).finally(() => session.close());
  }, { once: true });
  for await (const packet of session) {
    const text = decoder.decode(packet);
    if (text === "crash") {
      setTimeout(() => {
        throw new Error("the handler module broke its thread");
      });
      continue;
    }
    if (text === "throw") throw new Error("handler failed");
    await session.send(text === "who" ? encoder.encode(`worker ${session.worker}`) : packet);
  }
}
