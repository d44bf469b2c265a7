/**
 * Behind a load balancer, through an adapter on the running runtime: PROXY
 * protocol headers (v1 and v2) before the session and before TLS, trusted
 * peers, the header's time limit, malformed headers, and maxPerAddress.
 * Clients are node:net sockets that write the headers themselves (bound to
 * 127.0.0.2, 127.0.0.3, … where a test needs distinct peers). Run by the
 * `*_adapter.test.ts` files; tests/haproxy.test.ts puts a real HAProxy in
 * front.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect as netConnect, createServer as netServer, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type RefusedConnection,
  type ServerOptions,
  type Session,
  type SessionHandler,
  type SocketServer,
  startServer,
} from "../mod.ts";
import type { Transport } from "../src/transport.ts";
import { proxyHeaderV2 } from "./support/proxy_header.ts";
import { sleep, TEST_CA, TEST_TLS, until } from "./support/client.ts";

const TIMEOUT = { timeout: 30_000 };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A v2 PROXY header (with a CRC32c) for a TCP4 connection from `source`, or a LOCAL one. */
export function proxyV2(
  source: [string, number],
  destination: [string, number],
  tlvs: [number, Uint8Array][] = [],
  command: "proxy" | "local" = "proxy",
): Uint8Array {
  const ip = (text: string) => text.split(".").map(Number);
  const port = (n: number) => [n >> 8, n & 0xff];
  if (command === "local") return proxyHeaderV2(0, 0x00, [], tlvs, true);
  const addresses = [...ip(source[0]), ...ip(destination[0]), ...port(source[1]), ...port(destination[1])];
  return proxyHeaderV2(1, 0x11, addresses, tlvs, true);
}

/** A raw client: connects (from `localAddress` if given), collects what it receives. */
class Peer {
  readonly socket: Socket;
  received = "";
  closed = false;
  constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => (this.received += text));
    socket.on("error", () => {});
    socket.on("close", () => (this.closed = true));
  }
  static connect(port: number | { path: string }, localAddress?: string): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const where = typeof port === "number" ? { port, host: "127.0.0.1", localAddress } : port;
      const socket = netConnect(where, () => resolve(new Peer(socket)));
      socket.once("error", reject);
    });
  }
  async send(...parts: Array<Uint8Array | string>): Promise<void> {
    for (const part of parts) await new Promise<void>((resolve) => this.socket.write(part, () => resolve()));
  }
  async sendByteByByte(bytes: Uint8Array): Promise<void> {
    for (const byte of bytes) {
      await this.send(new Uint8Array([byte]));
      await sleep(1);
    }
  }
  async line(timeoutMs = 5000): Promise<string> {
    await until(() => this.received.includes("\n") || this.closed, "a line", timeoutMs);
    const at = this.received.indexOf("\n");
    if (at < 0) throw new Error(`closed without a line (got ${JSON.stringify(this.received)})`);
    const line = this.received.slice(0, at);
    this.received = this.received.slice(at + 1);
    return line;
  }
  whenClosed(timeoutMs = 5000): Promise<void> {
    return until(() => this.closed, "the connection to close", timeoutMs);
  }
  destroy(): void {
    this.socket.destroy();
  }
}

/** Answers each line with who the session thinks it talks to, then the line. */
const whoAmI: SessionHandler = async (session) => {
  await session.send(whoIs(session));
  for await (const line of session) await session.send(`echo ${decoder.decode(line)}`);
};

function whoIs(session: Session): string {
  const address = (a: { hostname: string; port: number } | undefined) => (a === undefined ? "-" : `${a.hostname}:${a.port}`);
  const tlvs = [...session.proxyTlvs].map(([type, value]) => `${type}=${decoder.decode(value)}`).join(",");
  return `${address(session.remoteAddress)} ${address(session.localAddress)} via ${address(session.proxyAddress)}` +
    `${tlvs ? ` tlvs ${tlvs}` : ""}${session.encrypted ? " tls" : ""}`;
}

/** Registers the PROXY protocol and maxPerAddress tests against `transport`. */
export function proxy(label: string, transport: Transport): void {
  describe(`${label}: behind a load balancer (PROXY protocol, maxPerAddress)`, () => {
    async function start(options: Partial<ServerOptions> = {}) {
      const events = { starts: 0, errors: [] as unknown[], refused: [] as RefusedConnection[] };
      const server = await startServer({
        transport,
        hostname: "127.0.0.1",
        port: 0,
        max: 10,
        packet: "line",
        proxyProtocol: true,
        handler: whoAmI,
        onSessionStart: () => void events.starts++,
        onError: (error) => void events.errors.push(error),
        onRefused: (info) => void events.refused.push(info),
        ...options,
      });
      return { server, events };
    }

    test("v1 and v2 headers, whole or byte by byte: the session sees the client's addresses, the bytes after intact", TIMEOUT, async () => {
      const { server, events } = await start();
      try {
        const v1 = encoder.encode("PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n");
        const v6 = encoder.encode("PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n");
        const v2 = proxyV2(["203.0.113.8", 40002], ["198.51.100.1", 443], [[0x02, encoder.encode("example.com")]]);
        const cases: Array<[Uint8Array, string]> = [
          [v1, "203.0.113.7:40000 198.51.100.1:443 via 127.0.0.1:"],
          [v6, "2001:db8::7:40001 2001:db8::1:443 via 127.0.0.1:"],
          [v2, "203.0.113.8:40002 198.51.100.1:443 via 127.0.0.1:"],
        ];
        for (const [header, expected] of cases) {
          for (const split of ["whole", "bytes"] as const) {
            const peer = await Peer.connect(server.port);
            const payload = encoder.encode("first line\nsecond\n");
            if (split === "whole") await peer.send(new Uint8Array([...header, ...payload]));
            else await peer.sendByteByByte(new Uint8Array([...header, ...payload.subarray(0, 3)])).then(() => peer.send(payload.subarray(3)));
            const who = await peer.line();
            assert.ok(who.startsWith(expected), `${JSON.stringify(who)} starts with ${expected}`);
            assert.ok(who.endsWith(`:${peer.socket.localPort}${header === v2 ? " tlvs 2=example.com" : ""}`), who);
            assert.equal(await peer.line(), "echo first line", "the bytes after the header are the session's first");
            assert.equal(await peer.line(), "echo second");
            peer.destroy();
          }
        }
        assert.equal(server.status().proxyErrors, 0);
        assert.equal(events.starts, 6);
        assert.deepEqual(events.errors, []);
      } finally {
        await server.stop();
      }
    });

    test("a v2 LOCAL header and a v1 UNKNOWN line (health checks) keep the socket's addresses", TIMEOUT, async () => {
      const { server } = await start();
      try {
        for (const header of [proxyV2(["0.0.0.0", 0], ["0.0.0.0", 0], [], "local"), encoder.encode("PROXY UNKNOWN\r\n")]) {
          const peer = await Peer.connect(server.port);
          await peer.send(header);
          const who = await peer.line();
          const me = `127.0.0.1:${peer.socket.localPort}`;
          assert.equal(who, `${me} 127.0.0.1:${server.port} via ${me}`);
          peer.destroy();
        }
      } finally {
        await server.stop();
      }
    });

    test("missing, garbage, over-long and slow headers: closed with no session, counted, nothing reported", TIMEOUT, async () => {
      const { server, events } = await start({ proxyProtocol: { timeoutMs: 300 } });
      try {
        const bad: Array<Uint8Array | string> = [
          "hello without a header\n",
          new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05]), // a TLS ClientHello
          "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
          "PROXY UNKNOWN " + "x".repeat(200) + "\r\n",
          new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x12, 0, 12]),
        ];
        for (const bytes of bad) {
          const peer = await Peer.connect(server.port);
          await peer.send(bytes);
          await peer.whenClosed();
          assert.equal(peer.received, "", "nothing is sent to a peer without a valid header");
        }
        // Half a header, then silence: closed at timeoutMs.
        const slow = await Peer.connect(server.port);
        await slow.send("PROXY TCP4 1.2.3.4 ");
        const started = Date.now();
        await slow.whenClosed(5000);
        assert.ok(Date.now() - started >= 200, "closed at the time limit, not before");
        // A peer that resets mid-header.
        const reset = await Peer.connect(server.port);
        await reset.send("PROXY TCP");
        reset.socket.resetAndDestroy();
        await until(() => server.status().proxyErrors === bad.length + 2, "every failure counted");
        assert.equal(events.starts, 0, "no session started");
        assert.deepEqual(events.errors, [], "nothing reported to onError");
        assert.equal(server.status().handshaking, 0, "no slot held");
        // Honest clients are still served.
        const honest = await Peer.connect(server.port);
        await honest.send("PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n");
        assert.match(await honest.line(), /^192\.0\.2\.1:1000 /);
        honest.destroy();
      } finally {
        await server.stop();
      }
    });

    test("a header in progress holds a session slot; the next connection waits for it", TIMEOUT, async () => {
      const { server } = await start({ max: 1, proxyProtocol: { timeoutMs: 10_000 } });
      try {
        const slow = await Peer.connect(server.port);
        await slow.send("PROXY TCP4 ");
        await until(() => server.status().handshaking === 1, "the header read to hold the slot");
        const next = await Peer.connect(server.port);
        await next.send("PROXY TCP4 192.0.2.9 192.0.2.2 1000 2000\r\n");
        await sleep(150);
        assert.equal(next.received, "", "the next one waits while the slot is held");
        slow.destroy();
        assert.match(await next.line(), /^192\.0\.2\.9:1000 /);
        next.destroy();
      } finally {
        await server.stop();
      }
    });

    test("trust is by the socket's peer: an untrusted peer is closed at once, whatever its header claims", TIMEOUT, async () => {
      const { server, events } = await start({ proxyProtocol: { trusted: ["127.0.0.2/32", "10.0.0.0/8"] } });
      try {
        const untrusted = await Peer.connect(server.port, "127.0.0.1");
        await untrusted.send("PROXY TCP4 127.0.0.2 127.0.0.1 1000 2000\r\n");
        await untrusted.whenClosed();
        assert.equal(untrusted.received, "");
        assert.equal(server.status().proxyErrors, 1);
        const trusted = await Peer.connect(server.port, "127.0.0.2");
        await trusted.send("PROXY TCP4 198.51.100.5 127.0.0.1 1000 2000\r\n");
        assert.match(await trusted.line(), /^198\.51\.100\.5:1000 .* via 127\.0\.0\.2:/);
        trusted.destroy();
        assert.equal(events.starts, 1);
      } finally {
        await server.stop();
      }
    });

    test("maxPerAddress: a flood from one address is refused past its share; another address is served", TIMEOUT, async () => {
      const { server, events } = await start({ proxyProtocol: false, maxPerAddress: 2, max: 50 });
      try {
        const flood: Peer[] = [];
        for (let i = 0; i < 20; i++) flood.push(await Peer.connect(server.port, "127.0.0.3"));
        const honest = await Peer.connect(server.port, "127.0.0.4");
        assert.match(await honest.line(), /^127\.0\.0\.4:\d+ .* via -$/);
        await until(() => flood.filter((peer) => peer.closed).length === 18, "18 of the flood refused");
        const served = flood.filter((peer) => !peer.closed);
        assert.equal(served.length, 2);
        for (const peer of served) assert.match(await peer.line(), /^127\.0\.0\.3:/);
        assert.equal(server.status().refused, 18);
        assert.equal(events.refused.length, 18);
        assert.ok(events.refused.every((info) => info.reason === "per_address" && info.remoteAddress.hostname === "127.0.0.3"));
        assert.equal(events.refused.at(-1)!.refused, 18);
        // A share comes back when a session ends.
        served[0].destroy();
        await until(() => server.status().num === 2, "its end");
        const again = await Peer.connect(server.port, "127.0.0.3");
        assert.match(await again.line(), /^127\.0\.0\.3:/);
        for (const peer of [...flood, honest, again]) peer.destroy();
      } finally {
        await server.stop();
      }
    });

    test("maxPerAddress behind PROXY counts the header's client addresses", TIMEOUT, async () => {
      const { server, events } = await start({ maxPerAddress: 1 });
      try {
        const first = await Peer.connect(server.port);
        await first.send("PROXY TCP6 ::ffff:10.1.1.1 ::1 1000 2000\r\n");
        assert.match(await first.line(), /^::ffff:10\.1\.1\.1:1000 /);
        const second = await Peer.connect(server.port);
        await second.send(proxyV2(["10.1.1.1", 1001], ["10.0.0.1", 2000]));
        await second.whenClosed();
        assert.equal(events.refused.length, 1, "an IPv4-mapped address counts as its IPv4 one");
        assert.equal(events.refused[0].remoteAddress.hostname, "10.1.1.1");
        const other = await Peer.connect(server.port);
        await other.send("PROXY TCP4 10.1.1.2 10.0.0.1 1000 2000\r\n");
        assert.match(await other.line(), /^10\.1\.1\.2:1000 /);
        for (const peer of [first, other]) peer.destroy();
      } finally {
        await server.stop();
      }
    });

    test("a PROXY header before TLS: the handshake takes the bytes after it, the session is encrypted", TIMEOUT, async () => {
      const { server } = await start({ tls: TEST_TLS });
      // A relay that writes the header joined to the client's first bytes (its
      // ClientHello), as a load balancer may.
      const relay = netServer((client) => {
        const upstream = netConnect(server.port, "127.0.0.1");
        let first = true;
        client.on("data", (chunk: Uint8Array) => {
          upstream.write(first ? new Uint8Array([...proxyV2(["192.0.2.44", 5555], ["192.0.2.1", 443]), ...chunk]) : chunk);
          first = false;
        });
        upstream.on("data", (chunk: Uint8Array) => client.write(chunk));
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on("close", end).on("error", end);
        upstream.on("close", end).on("error", end);
      });
      await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
      try {
        const port = (relay.address() as { port: number }).port;
        const client = tlsConnect({ port, host: "127.0.0.1", ca: TEST_CA, servername: "localhost" });
        client.setEncoding("utf8");
        let text = "";
        client.on("data", (chunk: string) => (text += chunk));
        client.on("error", () => {});
        await until(() => text.includes("\n"), "the greeting over TLS", 10_000);
        assert.match(text, /^192\.0\.2\.44:5555 192\.0\.2\.1:443 via 127\.0\.0\.1:\d+ tls\n$/);
        client.write("over tls\n");
        await until(() => text.includes("echo over tls\n"), "the echo");
        client.destroy();
        assert.equal(server.status().handshakeFailures, 0);
      } finally {
        relay.close();
        await server.stop();
      }
    });

    test("on a Unix socket: the header's TCP addresses, the socket's peer as the proxy", TIMEOUT, async () => {
      const directory = mkdtempSync(join(tmpdir(), "pico-proxy-"));
      let server: SocketServer | undefined;
      try {
        ({ server } = await start({ hostname: undefined, port: undefined, path: join(directory, "s.sock") }));
        const peer = await Peer.connect({ path: server.path! });
        await peer.send("PROXY TCP4 192.0.2.77 192.0.2.1 7777 80\r\nhi\n");
        assert.match(await peer.line(), /^192\.0\.2\.77:7777 192\.0\.2\.1:80 via :0$/);
        assert.equal(await peer.line(), "echo hi");
        peer.destroy();
      } finally {
        await server?.stop();
        rmSync(directory, { recursive: true, force: true });
      }
    });

    test("bad proxyProtocol and maxPerAddress options are refused", TIMEOUT, async () => {
      for (const options of [
        { proxyProtocol: { trusted: ["10.0.0.0/33"] } },
        { proxyProtocol: { trusted: "10.0.0.0/8" } },
        { proxyProtocol: { timeoutMs: 0 } },
        { proxyProtocol: "yes" },
        { maxPerAddress: 0 },
        { maxPerAddress: 1.5 },
      ]) {
        await assert.rejects(
          startServer({ transport, port: 0, max: 1, handler: () => {}, ...options } as unknown as ServerOptions),
          (error: { code?: string }) => error.code === "invalid_argument",
          JSON.stringify(options),
        );
      }
    });
  });
}
