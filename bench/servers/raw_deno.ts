// The raw baseline on Deno: the smallest Deno.listen (Deno.listenTls) echo server.
import { announce, path, tls } from "./listening.ts";

const listener = path !== undefined
  ? Deno.listen({ transport: "unix", path })
  : tls !== undefined
  ? Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls })
  : Deno.listen({ hostname: "127.0.0.1", port: 0 });
announce(listener.addr.transport === "unix" ? 0 : listener.addr.port);

async function echo(conn: Deno.Conn): Promise<void> {
  // A TlsConn has no setNoDelay (Deno 2.9).
  (conn as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const read = await conn.read(buffer);
      if (read === null) break;
      let offset = 0;
      while (offset < read) offset += await conn.write(buffer.subarray(offset, read));
    }
  } catch {
    // peer went away
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

for await (const conn of listener) echo(conn as Deno.Conn);
