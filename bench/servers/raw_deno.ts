// The raw baseline on Deno: the smallest Deno.listen echo server.
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`PORT ${listener.addr.port}`);

async function echo(conn: Deno.Conn): Promise<void> {
  conn.setNoDelay(true);
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

for await (const conn of listener) echo(conn);
