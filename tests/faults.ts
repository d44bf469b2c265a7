/**
 * The fault suite: hostile peers against a server running in a child
 * process (tests/support/fault_server.ts), on every adapter and runtime (see
 * the `*_adapter.test.ts` files). A frozen event loop there fails a status
 * request here, within its deadline, instead of hanging the run.
 *
 * Each case is a function of a scale, so that `npm run stress`
 * (bench/stress.ts) runs the same checks at production counts; `npm test`
 * runs them at SMALL. Each returns the figures the stress table prints.
 */

import { existsSync } from "node:fs";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { encodePacket, type PacketType } from "../src/framing.ts";
import { concat } from "./support/bytes.ts";
import { canBind, Client, type Endpoint, sleep } from "./support/client.ts";
import { type FaultReport, FaultServer, type FaultServerConfig, type RuntimeName } from "./support/fault_child.ts";

/** How many peers and bytes each case uses. */
export interface FaultScale {
  /** Connections reset while they wait for the one session slot. */
  backlogResets: number;
  /** `max` of the flood case; 10x as many connect at once. */
  floodMax: number;
  /** Connections opened and closed, `churnBatch` at a time. */
  churn: number;
  churnBatch: number;
  /** Peers that never read while their sessions stream 64 KiB packets. */
  neverReading: number;
  /** Hostile peers per packet type in the framing fuzz, and the bytes each sends. */
  fuzzPeers: number;
  fuzzBytes: number;
  /** Bytes of a body announced as 0xFFFFFFFF long, or of an endless line. */
  hostileStream: number;
  /** Connections waiting when the server stops. */
  stopWaiting: number;
  /** Peers that open TCP to a TLS server and stall their handshake. */
  handshakeStalls: number;
}

/** The counts `npm test` runs with. */
export const SMALL: FaultScale = {
  backlogResets: 100,
  floodMax: 5,
  churn: 600,
  churnBatch: 50,
  neverReading: 30,
  fuzzPeers: 6,
  fuzzBytes: 16 * 1024,
  hostileStream: 512 * 1024,
  stopWaiting: 30,
  handshakeStalls: 1000,
};

/** The counts `npm run stress` runs with. */
export const PRODUCTION: FaultScale = {
  backlogResets: 2000,
  floodMax: 200,
  churn: 20_000,
  churnBatch: 200,
  neverReading: 200,
  fuzzPeers: 50,
  fuzzBytes: 1024 * 1024,
  hostileStream: 50 * 1024 * 1024,
  stopWaiting: 2000,
  handshakeStalls: 5000,
};

/** What a case measured, for the stress table. */
export interface FaultFigures {
  /** The most sessions that ran at once. */
  peak?: number;
  /** Open descriptors after the case minus before (the server's). */
  fdGrowth?: number;
  /** Live heap after a full collection, after minus before, in bytes. */
  heapGrowth?: number;
  /** Resident memory at the height of the case minus before, in bytes. */
  rssGrowth?: number;
  /** How long an honest client waited for its answer during the attack, in ms. */
  honestMs?: number;
  /** Anything else worth a column. */
  note?: string;
}

/** Where a case's server runs: a runtime and its executable (by default this process's). */
export interface FaultHost {
  runtime?: RuntimeName;
  executable?: string;
}

/**
 * What a case's server listens with: an adapter's name (TCP), or the adapter
 * with TLS and/or a Unix socket.
 */
export type FaultTransport =
  | FaultServerConfig["transport"]
  | Pick<FaultServerConfig, "transport" | "tls" | "unix" | "workers" | "proxy">;

function over(transport: FaultTransport): Pick<FaultServerConfig, "transport" | "tls" | "unix" | "workers" | "proxy"> {
  return typeof transport === "string" ? { transport } : transport;
}

/** One fault case: its name and what it does against a server of `transport` on `host`. */
export interface FaultCase {
  name: string;
  /** Only over TLS (the case is about handshakes). */
  tlsOnly?: boolean;
  /** Only behind PROXY (the case is about its header). */
  proxyOnly?: boolean;
  run(transport: FaultTransport, scale: FaultScale, host?: FaultHost): Promise<FaultFigures>;
}

function frame(packetType: PacketType, body: Uint8Array | string): Uint8Array {
  return concat(encodePacket(packetType, body));
}

/** A small, seeded pseudo-random generator (mulberry32): the same bytes every run. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `body` against a fault server, then checks what must hold after any
 * attack: the server still answers, no unhandled rejection or uncaught
 * exception, nothing reported to onError unless `errorsExpected`, no
 * session ended as a crash unless expected, and it stops cleanly.
 */
async function withFaultServer(
  config: FaultServerConfig,
  host: FaultHost | undefined,
  body: (server: FaultServer) => Promise<FaultFigures>,
  expect: { crashes?: number } = {},
): Promise<FaultFigures> {
  const server = await FaultServer.start(config, host?.runtime, host?.executable);
  try {
    const figures = await body(server);
    const report = await server.stop();
    assert.equal(report.workers, config.workers ?? 0, "the server ran on the threads asked");
    assert.deepEqual(report.unhandled, [], "no unhandled rejection or uncaught exception");
    assert.equal(report.ended.crash ?? 0, expect.crashes ?? 0, `sessions ended as crashes: ${JSON.stringify(report)}`);
    if (expect.crashes === undefined) assert.deepEqual(report.errors, [], "nothing reported to onError");
    assert.equal(report.started, Object.values(report.ended).reduce((sum, n) => sum + n, 0), "every start has an end");
    return figures;
  } finally {
    await server.kill();
  }
}

/** Connects an honest client, sends `request` and times the answer of `answerLength` bytes. */
async function honestRoundTrip(port: Endpoint, request: Uint8Array, answerLength: number): Promise<number> {
  const started = performance.now();
  const client = await Client.connect(port);
  try {
    await client.write(request);
    const answer = await client.received(answerLength, 10_000);
    assert.deepEqual(answer.subarray(0, request.length), request.subarray(0, answerLength));
    return performance.now() - started;
  } finally {
    client.destroy();
  }
}

const PING = frame(4, "ping");

/** A client that connects, reads a little of a stream, then leaves as `leave` says. */
function sendLoopCase(name: string, leave: (client: Client) => Promise<void>): FaultCase {
  return {
    name,
    run: (transport, _scale, host) =>
      withFaultServer({ ...over(transport), handler: "stream", max: 4, packet: 4 }, host, async (server) => {
        const client = await Client.connect(server.endpoint);
        await client.received(64 * 1024);
        await leave(client);
        // The server must still run timers and answer: a frozen loop cannot.
        const report = await server.until((r) => r.num === 0, "the streaming session to end", 10_000);
        const ticks = report.ticks;
        const later = await server.until((r) => r.ticks > ticks + 5, "the server's timers to tick on", 3000);
        const reasons = Object.keys(later.ended);
        assert.ok(reasons.every((reason) => reason === "socket_closed" || reason === "socket_error"), reasons.join());
        // A new peer is streamed to as before.
        const started = performance.now();
        const next = await Client.connect(server.endpoint);
        await next.received(64 * 1024);
        next.destroy();
        return { honestMs: performance.now() - started, note: reasons.join() };
      }),
  };
}

/**
 * Peers that stall what comes before their session (a TLS handshake, a
 * PROXY header): half send nothing, half only its start (`partial`). Each
 * holds a slot until the time limit closes it, counted in `failures`, while
 * an honest client is served; every descriptor comes back.
 */
function stallCase(stall: {
  name: string;
  only: "tls" | "proxy";
  limit: Pick<FaultServerConfig, "handshakeTimeoutMs" | "proxyTimeoutMs">;
  partial: Uint8Array | string;
  failures: "handshakeFailures" | "proxyErrors";
  what: string;
  note: string;
}): FaultCase {
  return {
    name: stall.name,
    tlsOnly: stall.only === "tls",
    proxyOnly: stall.only === "proxy",
    run: (transport, scale, host) =>
      withFaultServer(
        { ...over(transport), handler: "echo", max: scale.handshakeStalls + 10, packet: 4, ...stall.limit },
        host,
        async (server) => {
          const before = await server.status();
          // Neither a TLS client nor a load balancer: bytes as they are.
          const bare = { ...server.endpoint, tls: false, proxy: false };
          const stalled = await Client.connectMany(bare, scale.handshakeStalls);
          await Promise.all(stalled.filter((_, i) => i % 2 === 1).map((client) => client.write(stall.partial)));
          // Each holds a slot until its timeout (a slow machine may see the first ones time out already).
          await server.until(
            (r) => r.handshaking + r[stall.failures] === scale.handshakeStalls,
            "every stalled peer to be taken",
          );
          const honestMs = await honestRoundTrip(server.endpoint, PING, PING.length);
          const after = await server.until(
            (r) => r[stall.failures] === scale.handshakeStalls && r.handshaking === 0,
            `every stalled ${stall.what} to time out`,
          );
          assert.equal(after.started, 1, "only the honest client started a session");
          await Promise.all(stalled.map((client) => client.whenClosed(5000)));
          const settled = await server.until((r) => r.num === 0, "the honest session to end");
          const fdGrowth = settled.fds < 0 ? undefined : settled.fds - before.fds;
          if (fdGrowth !== undefined) assert.ok(fdGrowth <= 2, `${fdGrowth} descriptors left open`);
          return { honestMs, fdGrowth, note: `${scale.handshakeStalls} ${stall.note}` };
        },
      ),
  };
}

/** The fault cases, in the order they run. */
export const faultCases: FaultCase[] = [
  stallCase({
    name: "peers that stall their TLS handshake are closed at handshakeTimeoutMs; an honest client is served meanwhile",
    only: "tls",
    limit: { handshakeTimeoutMs: 2000 },
    // The start of a ClientHello.
    partial: new Uint8Array([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03]),
    failures: "handshakeFailures",
    what: "handshake",
    note: "closed by the timeout",
  }),
  stallCase({
    name: "peers that stall their PROXY header are closed at its time limit; an honest client is served meanwhile",
    only: "proxy",
    limit: { proxyTimeoutMs: 2000 },
    partial: "PROXY TCP4 198.51.100.",
    failures: "proxyErrors",
    what: "header",
    note: "closed by the time limit",
  }),
  sendLoopCase("a peer that half-closes, then resets, during a send loop cannot freeze the server", async (client) => {
    client.end();
    await sleep(100);
    client.reset();
  }),
  sendLoopCase("a peer that half-closes, then goes away, during a send loop cannot freeze the server", async (client) => {
    client.end();
    await sleep(100);
    client.destroy();
  }),
  sendLoopCase("a peer that resets during a send loop cannot freeze the server", async (client) => {
    client.reset();
  }),
  {
    name: "connections reset while they wait for a slot are skipped at once: an honest client is served",
    run: (transport, scale, host) =>
      withFaultServer({ ...over(transport), handler: "echo", max: 1, packet: 4 }, host, async (server) => {
        const holder = await Client.connect(server.endpoint);
        await holder.write(PING);
        await holder.received(PING.length);
        const doomed = await Client.connectMany(server.endpoint, scale.backlogResets);
        for (const client of doomed) client.reset();
        await sleep(50);
        holder.destroy();
        const honestMs = await honestRoundTrip(server.endpoint, PING, PING.length);
        const report = await server.status();
        return { honestMs, peak: report.peak, note: `acceptErrors ${report.acceptErrors}` };
      }),
  },
  {
    name: "a peer that resets mid-packet ends only its own session",
    run: (transport, _scale, host) =>
      withFaultServer({ ...over(transport), handler: "echo", max: 4, packet: 4 }, host, async (server) => {
        const honest = await Client.connect(server.endpoint);
        const hostile = await Client.connect(server.endpoint);
        const packet = frame(4, new Uint8Array(4096).fill(7));
        await hostile.write(packet.subarray(0, 1000));
        await server.until((r) => r.num === 2, "both sessions");
        hostile.reset();
        await server.until((r) => r.num === 1, "the hostile session to end");
        await honest.write(PING);
        await honest.received(PING.length);
        honest.destroy();
        const report = await server.until((r) => r.num === 0, "the honest session to end");
        assert.equal((report.ended.socket_error ?? 0) + (report.ended.socket_closed ?? 0), 2);
        return {};
      }),
  },
  {
    name: "a peer that sends half a packet and goes silent is ended by the idle timeout, no one else",
    run: (transport, _scale, host) =>
      withFaultServer(
        { ...over(transport), handler: "echo", max: 4, packet: 4, session: { idleTimeoutMs: 300 } },
        host,
        async (server) => {
          const silent = await Client.connect(server.endpoint);
          await silent.write(frame(4, new Uint8Array(100)).subarray(0, 50));
          const honestMs = await honestRoundTrip(server.endpoint, PING, PING.length);
          await silent.whenClosed(5000);
          const report = await server.until((r) => r.num === 0, "the silent session to end");
          assert.equal(report.ended.timeout, 1);
          return { honestMs };
        },
      ),
  },
  {
    name: "a flood of 10x max connections: never more than max at once, every one served, none lost",
    run: (transport, scale, host) =>
      withFaultServer({ ...over(transport), handler: "echo", max: scale.floodMax, packet: 4 }, host, async (server) => {
        const count = scale.floodMax * 10;
        const clients = await Client.connectMany(server.endpoint, count);
        const started = performance.now();
        await Promise.all(clients.map(async (client, i) => {
          const request = frame(4, `request ${i}`);
          await client.write(request);
          assert.deepEqual(await client.received(request.length, 60_000), request);
          client.end();
          await client.whenClosed(60_000);
        }));
        const report = await server.until((r) => r.num === 0, "every session to end");
        assert.equal(report.started, count, "every connection got its session");
        assert.ok(report.peak <= scale.floodMax, `peak ${report.peak} above max ${scale.floodMax}`);
        return { peak: report.peak, honestMs: (performance.now() - started) / count, note: "ms per client" };
      }),
  },
  {
    name: "churn of many connections leaves no descriptor and no live memory behind",
    run: (transport, scale, host) =>
      withFaultServer({ ...over(transport), handler: "echo", max: scale.churnBatch, packet: 4 }, host, async (server) => {
        const before = await server.collected();
        let peakRss = before.rss;
        for (let done = 0; done < scale.churn; done += scale.churnBatch) {
          await Promise.all(Array.from({ length: Math.min(scale.churnBatch, scale.churn - done) }, async (_, i) => {
            const client = await Client.connect(server.endpoint);
            const request = frame(4, `churn ${done + i}`);
            await client.write(request);
            await client.received(request.length);
            // Every other one leaves with a reset.
            if (i % 2 === 0) client.destroy();
            else client.reset();
          }));
          if (done % (scale.churnBatch * 10) === 0) peakRss = Math.max(peakRss, (await server.status()).rss);
        }
        await server.until((r) => r.num === 0 && r.started === scale.churn, "every session to end");
        const after = await server.collected();
        const figures = {
          fdGrowth: after.fds - before.fds,
          heapGrowth: after.heapUsed - before.heapUsed,
          rssGrowth: Math.max(peakRss, after.rss) - before.rss,
        };
        if (before.fds >= 0) assert.ok(figures.fdGrowth <= 2, `descriptors grew by ${figures.fdGrowth}`);
        assert.ok(figures.heapGrowth < 4 * 1024 * 1024, `live heap grew by ${figures.heapGrowth} bytes`);
        return figures;
      }),
  },
  {
    name: "peers that never read hold at most writeHighWaterMark plus a packet each",
    run: (transport, scale, host) =>
      withFaultServer({ ...over(transport), handler: "stream", max: scale.neverReading, packet: 4 }, host, async (server) => {
        const before = await server.collected();
        const clients = await Client.connectMany(server.endpoint, scale.neverReading);
        // Over TLS, they read until their handshake is done.
        await Promise.all(clients.map((client) => client.secured()));
        for (const client of clients) client.stopReading();
        await server.until((r) => r.num === scale.neverReading, "every session");
        // Long enough for every session to fill the kernel's buffers and its
        // own, and for a growing one to show.
        let during: FaultReport = before;
        for (let i = 0; i < 10; i++) {
          await sleep(150);
          const report = await server.status();
          if (report.rss > during.rss) during = report;
        }
        const rssGrowth = during.rss - before.rss;
        // Deno's and Bun's bound (256 KiB) is the largest default; one 64 KiB packet
        // past it, a 64 KiB join buffer, and room for the runtime's own.
        const perSession = 256 * 1024 + 2 * 64 * 1024;
        const bound = scale.neverReading * perSession + 24 * 1024 * 1024;
        assert.ok(rssGrowth < bound, `RSS grew by ${mb(rssGrowth)} MB for ${scale.neverReading} peers (bound ${mb(bound)})`);
        for (const client of clients) client.destroy();
        await server.until((r) => r.num === 0, "every session to end");
        return { rssGrowth, note: `${mb(rssGrowth / scale.neverReading)} MB/peer` };
      }),
  },
  {
    name: "a peer that floods and never reads is held back by the write and read bounds",
    run: (transport, scale, host) =>
      withFaultServer({ ...over(transport), handler: "echo", max: 4 }, host, async (server) => {
        const before = await server.collected();
        const flooder = await Client.connect(server.endpoint);
        flooder.stopReading();
        const piece = new Uint8Array(64 * 1024).fill(0x66);
        let sent = 0;
        // Writes until the flood is sent or the server stops taking it (the
        // kernel's buffers full both ways: the server no longer reads).
        while (sent < scale.hostileStream) {
          const written = flooder.write(piece);
          const taken = await Promise.race([written.then(() => true, () => false), sleep(1000).then(() => false)]);
          if (!taken) break;
          sent += piece.length;
        }
        const during = await server.status();
        const honestMs = await honestRoundTrip(server.endpoint, new TextEncoder().encode("hello"), 5);
        flooder.destroy();
        await server.until((r) => r.num === 0, "the sessions to end");
        const rssGrowth = during.rss - before.rss;
        // readHighWaterMark (256 KiB) and Deno's write bound (256 KiB), a
        // read buffer, and room for the runtime's own.
        assert.ok(rssGrowth < 24 * 1024 * 1024, `RSS grew by ${mb(rssGrowth)} MB`);
        return { rssGrowth, honestMs, note: `${mb(sent)} MB taken of ${mb(scale.hostileStream)}` };
      }),
  },
  ...([1, 2, 4, "line"] as PacketType[]).map((packetType): FaultCase => ({
    name: `packet ${packetType}: seeded random bytes at random split points end only their own sessions`,
    run: (transport, scale, host) =>
      withFaultServer(
        { ...over(transport), handler: "echo", max: scale.fuzzPeers + 1, packet: packetType, packetSize: 1024 },
        host,
        async (server) => {
          const honest = await Client.connect(server.endpoint);
          const next = random(typeof packetType === "number" ? packetType * 7919 : 104729);
          const hostile = Promise.all(Array.from({ length: scale.fuzzPeers }, async (_, peer) => {
            const client = await Client.connect(server.endpoint);
            let sent = 0;
            while (sent < scale.fuzzBytes && !client.closed) {
              const piece = new Uint8Array(1 + Math.floor(next() * 2048));
              for (let i = 0; i < piece.length; i++) piece[i] = Math.floor(next() * 256);
              await client.write(piece).catch(() => {});
              sent += piece.length;
              if (next() < 0.2) await sleep(0);
            }
            if (peer % 3 === 0) client.reset();
            else if (peer % 3 === 1) client.end();
            else client.destroy();
          }));
          // The honest client's conversation goes on meanwhile.
          let honestMs = 0;
          let received = 0;
          for (let round = 0; round < 20; round++) {
            const request = frame(packetType, `honest ${round} ${"x".repeat(round * 10)}`);
            const started = performance.now();
            await honest.write(request);
            received += request.length;
            const answer = await honest.received(received, 10_000);
            assert.deepEqual(answer.subarray(received - request.length), request);
            honestMs = Math.max(honestMs, performance.now() - started);
          }
          await hostile;
          honest.destroy();
          await server.until((r) => r.num === 0, "every session to end");
          return { honestMs, note: "slowest answer" };
        },
      ),
  })),
  {
    name: "a length header of 0xFFFFFFFF and an endless line are refused at packetSize, before they are buffered",
    run: async (transport, scale, host) => {
      const piece = new Uint8Array(64 * 1024).fill(0x78);
      const attack = async (packetType: PacketType, first: Uint8Array) => {
        await withFaultServer(
          { ...over(transport), handler: "echo", max: 2, packet: packetType, packetSize: 64 * 1024 },
          host,
          async (server) => {
            const before = await server.collected();
            const client = await Client.connect(server.endpoint);
            await client.write(first);
            let sent = 0;
            while (!client.closed && sent < scale.hostileStream) {
              await client.write(piece).catch(() => {});
              sent += piece.length;
            }
            await client.whenClosed(10_000);
            const report = await server.until((r) => r.num === 0, "the session to end");
            assert.equal(report.ended.socket_error, 1);
            assert.ok(report.rss - before.rss < 32 * 1024 * 1024, `RSS grew by ${mb(report.rss - before.rss)} MB`);
            return {};
          },
        );
      };
      await attack(4, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
      await attack("line", piece);
      return {};
    },
  },
  {
    name: "stop() with a full waiting queue closes every connection and releases the port",
    run: async (transport, scale, host) => {
      const config: FaultServerConfig = { ...over(transport), handler: "echo", max: 1, packet: 4 };
      const server = await FaultServer.start(config, host?.runtime, host?.executable);
      try {
        const clients = await Client.connectMany(server.endpoint, scale.stopWaiting + 1);
        await server.until((r) => r.num === 1, "one running session");
        const started = performance.now();
        const report = await server.stop();
        await Promise.all(clients.map((client) => client.whenClosed(10_000)));
        assert.deepEqual(report.unhandled, []);
        assert.equal(report.num, 0);
        if (server.endpoint.path === undefined) assert.ok(await canBind(server.port), "the port can be bound again");
        else assert.ok(!existsSync(server.endpoint.path), "the socket file is removed");
        return { honestMs: performance.now() - started, note: "ms to stop" };
      } finally {
        await server.kill();
      }
    },
  },
  {
    name: "handlers that throw every kind of value are crashes of their own session only",
    run: async (transport, _scale, host) => {
      const kinds = [
        "undefined", "null", "string", "number", "bigint", "symbol", "error", "typeerror", "object", "cyclic",
        "throwing-getters", "null-prototype", "function", "rejected-thenable",
      ];
      await withFaultServer({ ...over(transport), handler: "throw", max: 4, packet: "line" }, host, async (server) => {
        for (const kind of kinds) {
          const client = await Client.connect(server.endpoint);
          await client.write(`${kind}\n`);
          await client.whenClosed(5000);
        }
        const report = await server.until((r) => r.num === 0 && r.started === kinds.length, "every session to end");
        assert.equal(report.errors.length, kinds.length, report.errors.join("; "));
        await honestRoundTrip(server.endpoint, new TextEncoder().encode("still here\n"), 11);
        return {};
      }, { crashes: kinds.length });
      await withFaultServer({ ...over(transport), handler: "throwAtOnce", max: 4 }, host, async (server) => {
        const clients = await Client.connectMany(server.endpoint, 8);
        await Promise.all(clients.map((client) => client.whenClosed(5000)));
        await server.until((r) => r.started === 8 && r.num === 0, "every session to end");
        return {};
      }, { crashes: 8 });
      return {};
    },
  },
];

function mb(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

/**
 * Registers every fault case as a test against `transport`'s fault servers
 * on this runtime (over TLS or a Unix socket when it says so; `only` picks
 * cases by a word of their names).
 */
export function faults(label: string, transport: FaultTransport, only?: RegExp, host?: FaultHost): void {
  describe(`${label}: hostile peers (server in a child process)`, () => {
    for (const faultCase of faultCases) {
      if (only !== undefined && !only.test(faultCase.name)) continue;
      if (faultCase.tlsOnly && !over(transport).tls) continue;
      if (faultCase.proxyOnly && !over(transport).proxy) continue;
      test(faultCase.name, { timeout: 60_000 }, async () => {
        await faultCase.run(transport, SMALL, host);
      });
    }
  });
}
