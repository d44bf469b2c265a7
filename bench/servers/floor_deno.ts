// The floor of the handler model on Deno: the thinnest echo server in which,
// as in a pico-socket-server handler, a loop awaits each chunk and then
// awaits its send (here a settled promise, the bytes queued for a write
// loop), and each chunk belongs to whoever receives it: reads land in the
// unused rest of a fresh 256 KiB buffer, never in memory handed out before.
// Written straight on Deno.listen with nothing else: no sessions, no limits,
// no framing, no write bound. Its ratio to raw_deno.ts (which reads into one
// buffer it reuses) bounds what a session can reach.
//
//   npm run bench:ab -- --runtime deno --scenario pingpong --kind pico0 --raw --floor
import { handoff } from "./handoff.ts";

const SENT = Promise.resolve();
const BUFFER_SIZE = 256 * 1024;
const ROOM_MIN = 1024;

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`PORT ${listener.addr.port}`);

function serve(conn: Deno.Conn): void {
  conn.setNoDelay(true);
  const { arrived, next } = handoff();

  (async () => {
    let buffer = new Uint8Array(0);
    try {
      for (;;) {
        if (buffer.length < ROOM_MIN) buffer = new Uint8Array(BUFFER_SIZE);
        const read = await conn.read(buffer);
        if (read === null) break;
        const chunk = buffer.subarray(0, read);
        buffer = buffer.subarray(read);
        arrived(chunk);
      }
    } catch {
      // peer went away
    }
    arrived(null);
  })();

  const queue: Uint8Array[] = [];
  let writing = false;
  const flush = async () => {
    try {
      while (queue.length > 0) {
        const chunk = queue[0];
        const written = await conn.write(chunk);
        if (written < chunk.length) queue[0] = chunk.subarray(written);
        else queue.shift();
      }
    } catch {
      queue.length = 0; // peer went away
    }
    writing = false;
  };

  (async () => {
    for (let chunk = await next(); chunk !== null; chunk = await next()) {
      queue.push(chunk);
      if (!writing) {
        writing = true;
        flush();
      }
      await SENT;
    }
    try {
      conn.close();
    } catch {
      // already closed
    }
  })();
}

for await (const conn of listener) serve(conn);
