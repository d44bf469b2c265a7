// The conformance suite against the Deno adapter (`Deno.listen`), and what
// only this adapter does; it runs under `deno test` only.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { denoTransport } from "../adapters/deno.ts";
import { startServer } from "../mod.ts";
import { conformance } from "./conformance.ts";
import { faults } from "./faults.ts";
import { secure } from "./secure.ts";
import { Client, until } from "./support/client.ts";

// The parts of Deno's listener and connection the adapter uses.
interface Conn {
  readonly remoteAddr: unknown;
  readonly localAddr: unknown;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
  setKeepAlive(keepAlive?: boolean): void;
}
interface DenoListen {
  listen(options: unknown): { readonly addr: unknown; accept(): Promise<Conn>; close(): void };
}

if ("Deno" in globalThis) {
  conformance("deno adapter", denoTransport);
  faults("deno adapter", "deno");
  secure("deno adapter", denoTransport);

  describe("deno adapter: write ops", () => {
    test("the packets a handler answers at once leave in one write op", async () => {
      // Deno's own listener, its connections' write ops counted.
      const deno = (globalThis as unknown as { Deno: DenoListen }).Deno;
      const listen = deno.listen;
      const writes: number[] = [];
      deno.listen = (options) => {
        const listener = listen.call(deno, options);
        return {
          get addr() {
            return listener.addr;
          },
          async accept() {
            const conn = await listener.accept();
            return {
              remoteAddr: conn.remoteAddr,
              localAddr: conn.localAddr,
              read: (buffer) => conn.read(buffer),
              write: (data) => {
                writes.push(data.length);
                return conn.write(data);
              },
              close: () => conn.close(),
              setNoDelay: (noDelay) => conn.setNoDelay(noDelay),
              setKeepAlive: (keepAlive) => conn.setKeepAlive(keepAlive),
            };
          },
          close: () => listener.close(),
        };
      };
      // Eight packets of 2 KiB, sent in one go; the handler answers them once
      // all have arrived, each with its own send().
      const packets = new Uint8Array(8 * (4 + 2048));
      for (let i = 0; i < 8; i++) {
        const offset = i * (4 + 2048);
        new DataView(packets.buffer).setUint32(offset, 2048);
        packets.fill(i + 1, offset + 4, offset + 4 + 2048);
      }
      let server;
      try {
        server = await startServer({
          hostname: "127.0.0.1",
          port: 0,
          max: 1,
          transport: denoTransport,
          packet: 4,
          handler: async (session) => {
            await until(() => session.bytesIn === packets.length, "all eight packets");
            for await (const packet of session) await session.send(packet);
          },
        });
      } finally {
        deno.listen = listen;
      }
      try {
        const client = await Client.connect(server.port);
        await client.write(packets);
        assert.deepEqual(await client.received(packets.length), packets);
        assert.deepEqual(writes, [packets.length]);
        client.destroy();
      } finally {
        await server.stop();
      }
    });
  });
} else {
  describe.skip("deno adapter (needs Deno)", () => {});
}
