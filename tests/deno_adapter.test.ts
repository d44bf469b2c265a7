// The conformance suite against the Deno adapter (`Deno.listen`), and what
// only this adapter does; it runs under `deno test` only.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { denoTransport } from "../adapters/deno.ts";
import { startServer } from "../mod.ts";
import { conformance } from "./conformance.ts";
import { faults } from "./faults.ts";
import { secure } from "./secure.ts";
import { group } from "./group.ts";
import { proxy } from "./proxy.ts";
import { Client, TEST_CA, TEST_TLS, until } from "./support/client.ts";

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
  group("deno adapter", denoTransport);
  proxy("deno adapter", denoTransport);

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

// Deno's own clients: Deno.connectTls (rustls, not node:tls) and Deno.connect on a Unix socket.
interface DenoClients {
  connectTls(options: {
    hostname: string;
    port: number;
    caCerts: string[];
    alpnProtocols?: string[];
  }): Promise<Conn & { handshake(): Promise<{ alpnProtocol: string | null }> }>;
  connect(options: { transport: "unix"; path: string }): Promise<Conn>;
  makeTempDir(): Promise<string>;
  remove(path: string, options: { recursive: boolean }): Promise<void>;
}

async function readAtLeast(conn: Conn, length: number): Promise<string> {
  const buffer = new Uint8Array(1024);
  let text = "";
  while (text.length < length) {
    const read = await conn.read(buffer);
    if (read === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, read));
  }
  return text;
}

if ("Deno" in globalThis) {
  describe("deno adapter: Deno's own TLS and Unix socket clients", () => {
    const deno = (globalThis as unknown as { Deno: DenoClients }).Deno;
    const echo = async (session: import("../mod.ts").Session) => {
      await session.send(`${session.alpnProtocol}|`);
      for await (const packet of session) await session.send(packet);
    };

    test("Deno.connectTls verifies the certificate, agrees ALPN and gets an echo", { timeout: 20_000 }, async () => {
      const server = await startServer({
        transport: denoTransport,
        hostname: "127.0.0.1",
        port: 0,
        max: 2,
        tls: { ...TEST_TLS, alpnProtocols: ["echo/1"] },
        handler: echo,
      });
      try {
        const conn = await deno.connectTls({
          hostname: "localhost",
          port: server.port,
          caCerts: [TEST_CA],
          alpnProtocols: ["echo/1"],
        });
        assert.equal((await conn.handshake()).alpnProtocol, "echo/1");
        await conn.write(new TextEncoder().encode("from rustls"));
        assert.equal(await readAtLeast(conn, 18), "echo/1|from rustls");
        conn.close();
      } finally {
        await server.stop();
      }
    });

    test("Deno.connect on a Unix socket gets an echo", { timeout: 20_000 }, async () => {
      const directory = await deno.makeTempDir();
      const path = `${directory}/deno.sock`;
      const server = await startServer({ transport: denoTransport, path, max: 2, handler: echo });
      try {
        const conn = await deno.connect({ transport: "unix", path });
        await conn.write(new TextEncoder().encode("over unix"));
        assert.equal(await readAtLeast(conn, 14), "null|over unix");
        conn.close();
      } finally {
        await server.stop();
        await deno.remove(directory, { recursive: true });
      }
    });
  });
}
