// Unit tests of the runtime-neutral core against the in-memory transport:
// no sockets, so every runtime runs them fast and deterministically.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  serverChildren,
  serverPort,
  serverStatus,
  startRawServer,
  startServer,
  stopServer,
} from "../src/api.ts";
import { SocketServerError } from "../src/errors.ts";
import type { ServerOptions, SessionHandler } from "../src/server.ts";
import type { Session, SessionOptions } from "../src/session.ts";
import type { ListenOptions, Listener, Transport } from "../src/transport.ts";
import { MemoryTransport, withDefaultTransport } from "./support/memory_transport.ts";

/** Lets promise callbacks and zero-delay timers run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Waits until `condition` holds, failing after `timeoutMs`. */
async function until(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<SocketServerError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SocketServerError, `expected a SocketServerError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail(`expected a rejection with code ${code}`);
}

const echo: SessionHandler = async (session) => {
  for await (const packet of session) await session.send(packet);
};

/** Collects the errors a server reports instead of logging them. */
function errorLog(): { errors: Array<{ error: unknown; session?: Session }>; onError: (e: unknown, s?: Session) => void } {
  const errors: Array<{ error: unknown; session?: Session }> = [];
  return { errors, onError: (error, session) => errors.push({ error, session }) };
}

describe("starting and naming servers", () => {
  test("startServer(port, max, handler) on port 0 registers picoSocketServer_<real port>", async () => {
    const transport = new MemoryTransport();
    const server = await startServer(0, 3, echo, { transport });
    try {
      assert.ok(server.port > 0);
      assert.equal(server.name, `picoSocketServer_${server.port}`);
      assert.equal(await serverPort(server.name), server.port);
      assert.equal(await serverPort(server.port), server.port);
      assert.deepEqual(
        { num: (await serverStatus(server)).num, max: (await serverStatus(server)).max },
        { num: 0, max: 3 },
      );
    } finally {
      await server.stop();
    }
  });

  test("startServer(name, port, max, handler) registers the name and serves raw packets", async () => {
    const transport = new MemoryTransport();
    const server = await withDefaultTransport(transport, () => startServer("core-named", 0, 2, echo));
    try {
      assert.equal(server.name, "core-named");
      assert.equal(await serverPort("core-named"), server.port);
      const peer = transport.connect(server.port);
      peer.write("abc");
      await peer.whenReceived(3);
      assert.equal(peer.text(), "abc");
    } finally {
      await stopServer("core-named");
    }
  });

  test("a duplicate name is refused with name_in_use and starts nothing", async () => {
    const transport = new MemoryTransport();
    const first = await startServer({ name: "core-dup", port: 0, max: 1, handler: echo, transport });
    try {
      const error = await rejectsWithCode(
        startServer({ name: "core-dup", port: 0, max: 1, handler: echo, transport }),
        "name_in_use",
      );
      assert.match(error.message, /core-dup/);
      assert.equal(transport.listeners.size, 1, "the second server must not listen");
      assert.equal(await serverPort("core-dup"), first.port);
    } finally {
      await first.stop();
    }
  });

  test("a port in use rejects with EADDRINUSE and leaves the registry as it was", async () => {
    const transport = new MemoryTransport();
    const first = await startServer({ port: 0, max: 1, handler: echo, transport });
    try {
      const error = await rejectsWithCode(
        startServer({ name: "core-busy", port: first.port, max: 1, handler: echo, transport }),
        "EADDRINUSE",
      );
      assert.match(error.message, new RegExp(`${first.port}`));
      await rejectsWithCode(serverPort("core-busy"), "retrylater");
      assert.equal(await serverPort(first.port), first.port);
    } finally {
      await first.stop();
    }
  });

  test("startRawServer 5- and 7-argument forms frame packets with the given type and size", async () => {
    const transport = new MemoryTransport();
    const [five, seven] = await withDefaultTransport(transport, () =>
      Promise.all([
        startRawServer(0, 4, echo, 2, 100),
        startRawServer("core-raw7", 0, 4, { noDelay: false }, echo, "line", 5),
      ]));
    try {
      assert.equal(five.name, `picoSocketServer_${five.port}`);
      const framed = transport.connect(five.port);
      framed.write(new Uint8Array([0, 3, 1, 2, 3]));
      await framed.whenReceived(5);
      assert.deepEqual([...framed.bytes()], [0, 3, 1, 2, 3]);
      assert.equal(framed.connection.noDelay, true, "noDelay is on by default");

      assert.equal(seven.name, "core-raw7");
      const lines = transport.connect(seven.port);
      lines.write("hello\r\ntoo long\n");
      await lines.whenClosed();
      assert.equal(lines.text(), "hello\n");
      assert.equal(lines.connection.noDelay, false);
    } finally {
      await Promise.all([five.stop(), seven.stop()]);
    }
  });

  test("startRawServer with the wrong number of arguments rejects with invalid_argument", async () => {
    // @ts-expect-error: deliberately a 3-argument call
    await rejectsWithCode(startRawServer(0, 1, echo), "invalid_argument");
  });

  /** What a server started on `transport` with these session options asks it to listen with. */
  async function listenOptions(transport: MemoryTransport, session?: SessionOptions): Promise<ListenOptions> {
    const server = await startServer({ transport, port: 0, max: 1, handler: echo, session });
    const options = transport.listeners.get(server.port)!.options;
    await server.stop();
    return options;
  }

  test("the write bound and the linger reach the transport, with their defaults", async () => {
    const transport = new MemoryTransport();
    const defaults = await listenOptions(transport);
    assert.equal(defaults.writeHighWaterMark, 64 * 1024);
    assert.equal(defaults.lingerMs, 5_000);
    const tuned = await listenOptions(transport, { writeHighWaterMark: 1024, lingerMs: 250 });
    assert.equal(tuned.writeHighWaterMark, 1024);
    assert.equal(tuned.lingerMs, 250);
  });

  test("a transport's own write bound is the default its sessions get", async () => {
    class AsyncWritesTransport extends MemoryTransport {
      readonly writeHighWaterMark = 256 * 1024;
    }
    const transport = new AsyncWritesTransport();
    assert.equal((await listenOptions(transport)).writeHighWaterMark, 256 * 1024);
    assert.equal((await listenOptions(transport, { writeHighWaterMark: 1024 })).writeHighWaterMark, 1024);
  });

  test("invalid options reject with invalid_argument naming the value", async () => {
    const transport = new MemoryTransport();
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ port: 0, max: 0, handler: echo }, /max 0/],
      [{ port: 70000, max: 1, handler: echo }, /port 70000/],
      [{ port: 0, max: 1, handler: "nope" }, /handler "nope"/],
      [{ port: 0, max: 1, handler: echo, packet: 3 }, /packet type 3/],
      [{ port: 0, max: 1, handler: echo, packetSize: -1 }, /packet size -1/],
      [{ port: 0, max: 1, handler: echo, name: "" }, /server name ""/],
      [{ port: 0, max: 1, handler: echo, session: { idleTimeoutMs: -5 } }, /idleTimeoutMs -5/],
      [{ port: 0, max: 1, handler: echo, session: { lingerMs: -1 } }, /lingerMs -1/],
    ];
    for (const [options, message] of bad) {
      const error = await rejectsWithCode(
        startServer({ transport, ...options } as unknown as ServerOptions),
        "invalid_argument",
      );
      assert.match(error.message, message);
    }
    assert.equal(transport.listeners.size, 0);
  });
});

describe("looking servers up", () => {
  test("unknown references reject with retrylater; stopServer resolves quietly", async () => {
    await rejectsWithCode(serverPort("core-nobody"), "retrylater");
    await rejectsWithCode(serverStatus(1), "retrylater");
    await rejectsWithCode(serverChildren("core-nobody", 10), "retrylater");
    await stopServer("core-nobody");
    await stopServer(1);
  });

  test("a server registered but not yet listening answers once it listens, or times out", async () => {
    const memory = new MemoryTransport();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow: Transport = {
      name: "slow",
      async listen(options: ListenOptions): Promise<Listener> {
        await gate;
        return memory.listen(options);
      },
    };
    const starting = startServer({ name: "core-slow", port: 0, max: 1, handler: echo, transport: slow });
    const error = await rejectsWithCode(serverPort("core-slow", 20), "timeout");
    assert.match(error.message, /core-slow.*20 ms/);
    const port = serverPort("core-slow");
    release();
    const server = await starting;
    assert.equal(await port, server.port);
    await server.stop();
    await rejectsWithCode(serverPort("core-slow", 20), "retrylater");
  });

  test("a failed listen makes waiting look-ups reject with retrylater", async () => {
    const failing: Transport = {
      name: "failing",
      listen(): Promise<Listener> {
        return new Promise((_, reject) =>
          setTimeout(() => reject(Object.assign(new Error("permission denied"), { code: "EACCES" })), 10)
        );
      },
    };
    const starting = startServer({ name: "core-eacces", port: 80, max: 1, handler: echo, transport: failing });
    const lookup = serverStatus("core-eacces");
    const error = await rejectsWithCode(starting, "EACCES");
    assert.match(error.message, /Cannot listen on 0\.0\.0\.0:80: permission denied/);
    await rejectsWithCode(lookup, "retrylater");
  });
});

describe("the session limit", () => {
  test("with 3x max connections at once, exactly max run and the rest start in arrival order", async () => {
    const transport = new MemoryTransport();
    const max = 4;
    const started: number[] = [];
    const releases = new Map<number, () => void>();
    const server = await startServer({
      port: 0,
      max,
      transport,
      handler: async (session) => {
        const first = await session.recv();
        started.push(first![0]);
        await new Promise<void>((resolve) => releases.set(first![0], resolve));
      },
    });
    try {
      const peers = Array.from({ length: 3 * max }, (_, i) => {
        const peer = transport.connect(server.port);
        peer.write(new Uint8Array([i]));
        return peer;
      });
      await until(() => started.length === max, "max sessions to start");
      await settle();
      assert.deepEqual(started, [0, 1, 2, 3]);
      assert.equal(server.status().num, max);
      assert.equal(transport.listeners.get(server.port)!.waiting, 2 * max);
      let peak = 0;
      for (let served = max; served < 3 * max; served++) {
        releases.get(served - max)!();
        await until(() => started.length === served + 1, `session ${served} to start`);
        peak = Math.max(peak, server.status().num);
      }
      assert.deepEqual(started, Array.from({ length: 3 * max }, (_, i) => i));
      assert.ok(peak <= max, `never more than max sessions (saw ${peak})`);
      for (const release of releases.values()) release();
      await until(() => server.status().num === 0, "all sessions to end");
      assert.equal(server.status().accepted, 3 * max);
      assert.equal(server.status().ended.normal, 3 * max);
      assert.ok(peers.every((peer) => peer.closed));
    } finally {
      await server.stop();
    }
  });

  test("connections beyond backlog are refused and counted", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({
      port: 0,
      max: 1,
      backlog: 2,
      transport,
      handler: () => new Promise(() => {}),
    });
    try {
      const peers = Array.from({ length: 5 }, () => transport.connect(server.port));
      await settle();
      assert.deepEqual(peers.map((peer) => peer.refused), [false, false, false, true, true]);
      assert.equal(server.status().refused, 2);
      assert.equal(server.status().num, 1);
    } finally {
      await server.stop();
    }
    assert.equal(server.status().refused, 2, "the count outlives the listener");
  });

  test("accept failures of one connection (e.g. ENOTCONN) are skipped at once, counted and not reported", { timeout: 10_000 }, async () => {
    const transport = new MemoryTransport();
    transport.acceptFailures = 200;
    transport.acceptFailureCode = "ENOTCONN";
    const { errors, onError } = errorLog();
    const server = await startServer({ port: 0, max: 2, transport, handler: echo, onError });
    try {
      const started = Date.now();
      const peer = transport.connect(server.port);
      peer.write("served");
      await peer.whenReceived(6);
      assert.ok(Date.now() - started < 1000, "no back-off for failures of one connection");
      assert.equal(server.status().acceptErrors, 200);
      assert.deepEqual(errors, []);
    } finally {
      await server.stop();
    }
  });

  test("a failing accept is reported and retried, not spun on", async () => {
    const transport = new MemoryTransport();
    transport.acceptFailures = 2;
    const { errors, onError } = errorLog();
    const server = await startServer({ port: 0, max: 2, transport, handler: echo, onError });
    try {
      const peer = transport.connect(server.port);
      peer.write("still served");
      await peer.whenReceived(12);
      assert.equal(peer.text(), "still served");
      assert.equal(errors.length, 2);
      assert.equal((errors[0].error as { code?: string }).code, "EMFILE");
      assert.equal(errors[0].session, undefined);
      assert.ok(transport.listeners.get(server.port)!.acceptCalls <= 4, "accept is not retried in a tight loop");
    } finally {
      await server.stop();
    }
  });
});

describe("how sessions end", () => {
  for (const [loss, reason] of [["reset", "socket_error"], ["lose", "socket_closed"]] as const) {
    test(`a connection ${loss === "reset" ? "reset" : "lost without an error"} after the peer's end of stream fails every later send(): the session ends ${reason}, not as a crash`, { timeout: 10_000 }, async () => {
      const transport = new MemoryTransport();
      const { errors, onError } = errorLog();
      const ended: Array<[string, unknown]> = [];
      let go!: () => void;
      const ready = new Promise<void>((resolve) => (go = resolve));
      let sends = 0;
      const server = await startServer({
        port: 0,
        max: 1,
        transport,
        onError,
        onSessionEnd: (_session, why, error) => ended.push([why, error]),
        handler: async (session) => {
          assert.equal(await session.recv(), null);
          await ready;
          // A streaming handler that lets send()'s error propagate (bounded,
          // so that sends resolving on a dead connection fail this test
          // rather than freeze it).
          for (let i = 0; i < 1000; i++) {
            await session.send("more");
            sends++;
          }
        },
      });
      try {
        const peer = transport.connect(server.port);
        peer.end();
        await settle();
        peer[loss]();
        go();
        await until(() => ended.length === 1, "the session to end");
        assert.equal(sends, 0, "no send resolves once the connection is gone");
        assert.equal(ended[0][0], reason);
        assert.equal((ended[0][1] as SocketServerError).code, reason);
        assert.deepEqual(errors, [], "not reported to onError");
        assert.equal(server.status().ended.crash, 0);
      } finally {
        await server.stop();
      }
    });
  }

  test("a send() waiting for the peer when the connection fails resolves; the next one rejects and ends the session socket_error", { timeout: 10_000 }, async () => {
    const transport = new MemoryTransport();
    const { errors, onError } = errorLog();
    const ended: string[] = [];
    let session!: Session;
    let sending: Promise<void> | undefined;
    let go!: () => void;
    const ready = new Promise<void>((resolve) => (go = resolve));
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      onError,
      onSessionEnd: (_session, why) => ended.push(why),
      handler: async (s) => {
        session = s;
        await ready;
        sending = s.send("slow");
        await sending;
        await s.send("next");
      },
    });
    try {
      const peer = transport.connect(server.port);
      await until(() => session !== undefined, "the session");
      peer.connection.writeBlocker = new Promise(() => {});
      go();
      await until(() => sending !== undefined, "the send");
      let sent = false;
      void sending!.then(() => (sent = true));
      await settle();
      assert.equal(sent, false, "the send waits for the peer");
      peer.reset();
      await sending;
      await until(() => ended.length === 1, "the session to end");
      assert.deepEqual(ended, ["socket_error"]);
      assert.deepEqual(errors, []);
    } finally {
      await server.stop();
    }
  });

  test("a handler that returns at once closes its connection with reason normal", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 2, transport, handler: () => {} });
    try {
      const peer = transport.connect(server.port);
      await peer.whenClosed();
      await until(() => server.status().ended.normal === 1, "the session to end");
      assert.equal(server.status().num, 0);
    } finally {
      await server.stop();
    }
  });

  test("a handler that throws or rejects closes only its own session and is reported", async () => {
    // A SocketServerError of the handler's own making is a crash too: only
    // errors the session raised end it with their socket reason.
    const transport = new MemoryTransport();
    const { errors, onError } = errorLog();
    const server = await startServer({
      port: 0,
      max: 5,
      transport,
      onError,
      handler: async (session) => {
        const command = new TextDecoder().decode((await session.recv())!);
        if (command === "throw") throw new Error("thrown by handler");
        if (command === "reject") return Promise.reject(new TypeError("rejected by handler"));
        if (command === "own") throw new SocketServerError("made by handler", "socket_closed");
        await echo(session);
      },
    });
    try {
      const survivor = transport.connect(server.port);
      survivor.write("keep");
      const thrower = transport.connect(server.port);
      thrower.write("throw");
      const rejecter = transport.connect(server.port);
      rejecter.write("reject");
      const own = transport.connect(server.port);
      own.write("own");
      await thrower.whenClosed();
      await rejecter.whenClosed();
      await own.whenClosed();
      await until(() => server.status().ended.crash === 3, "the three crashes to be counted");
      assert.deepEqual(errors.map(({ error }) => (error as Error).message).sort(), [
        "made by handler",
        "rejected by handler",
        "thrown by handler",
      ]);
      assert.ok(errors.every(({ session }) => session !== undefined && session.closed));
      survivor.write("alive");
      await survivor.whenReceived(5);
      assert.equal(survivor.text(), "alive");
      assert.equal(survivor.closed, false);
      assert.equal(server.status().num, 1);
    } finally {
      await server.stop();
    }
  });

  test("a handler that throws synchronously is a crash too", async () => {
    const transport = new MemoryTransport();
    const { errors, onError } = errorLog();
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      onError,
      handler: () => {
        throw new RangeError("sync");
      },
    });
    try {
      await transport.connect(server.port).whenClosed();
      assert.equal((errors[0].error as Error).message, "sync");
      // The slot was freed: a second connection is served.
      await transport.connect(server.port).whenClosed();
      assert.equal(server.status().ended.crash, 2);
    } finally {
      await server.stop();
    }
  });

  test("an onError that throws is contained", async () => {
    const transport = new MemoryTransport();
    const logged: unknown[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => logged.push(args);
    try {
      const server = await startServer({
        port: 0,
        max: 1,
        transport,
        onError: () => {
          throw new Error("onError broke");
        },
        handler: () => {
          throw new Error("handler broke");
        },
      });
      await transport.connect(server.port).whenClosed();
      assert.equal(logged.length, 1);
      await server.stop();
    } finally {
      console.error = original;
    }
  });

  test("a peer reset rejects recv() with socket_error and ends the session so", async () => {
    const transport = new MemoryTransport();
    let seen: unknown;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      handler: async (session) => {
        try {
          await session.recv();
        } catch (error) {
          seen = error;
          throw error;
        }
      },
    });
    try {
      transport.connect(server.port).reset();
      await until(() => server.status().ended.socket_error === 1, "the session to end");
      assert.ok(seen instanceof SocketServerError);
      assert.equal(seen.code, "socket_error");
      assert.equal((seen.cause as { code?: string }).code, "ECONNRESET");
      assert.equal(server.status().ended.crash, 0);
    } finally {
      await server.stop();
    }
  });

  test("a handler returning after the peer closed ends with socket_closed", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 1, transport, handler: echo });
    try {
      const peer = transport.connect(server.port);
      peer.write("bye");
      peer.end();
      await peer.whenClosed();
      assert.equal(peer.text(), "bye");
      await until(() => server.status().ended.socket_closed === 1, "the session to end");
    } finally {
      await server.stop();
    }
  });

  test("the idle timeout rejects recv() with timeout and ends the session so", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 1, transport, handler: echo, session: { idleTimeoutMs: 30 } });
    try {
      const peer = transport.connect(server.port);
      for (let i = 0; i < 4; i++) {
        peer.write("x");
        await new Promise((resolve) => setTimeout(resolve, 15));
      }
      assert.equal(peer.closed, false, "input keeps the session alive");
      await peer.whenClosed();
      await until(() => server.status().ended.timeout === 1, "the session to time out");
    } finally {
      await server.stop();
    }
  });

  test("a packet over packetSize ends the session with socket_error before its body arrives", async () => {
    const transport = new MemoryTransport();
    let seen: unknown;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      packet: 4,
      packetSize: 10,
      handler: async (session) => {
        try {
          for await (const packet of session) await session.send(packet);
        } catch (error) {
          seen = error;
          throw error;
        }
      },
    });
    try {
      const peer = transport.connect(server.port);
      peer.write(new Uint8Array([0, 0, 0, 2, 7, 7, 0, 0, 0, 11]));
      await peer.whenClosed();
      assert.deepEqual([...peer.bytes()], [0, 0, 0, 2, 7, 7]);
      assert.ok(seen instanceof SocketServerError);
      assert.equal(seen.code, "packet_too_large");
      await until(() => server.status().ended.socket_error === 1, "the session to end");
    } finally {
      await server.stop();
    }
  });
});

/**
 * Runs `handler` as the one session of a "line" server whose peer sends
 * `input` and ends; resolves once the handler has returned.
 */
async function runLineSession(input: string, handler: (session: Session) => Promise<void>): Promise<void> {
  const transport = new MemoryTransport();
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const server = await startServer({
    port: 0,
    max: 1,
    transport,
    packet: "line",
    handler: async (session) => {
      await handler(session);
      done();
    },
  });
  try {
    const peer = transport.connect(server.port);
    peer.write(input);
    peer.end();
    await finished;
  } finally {
    await server.stop();
  }
}

const lineText = (packet: Uint8Array | null) => (packet === null ? null : new TextDecoder().decode(packet));

describe("sessions", () => {
  test("recv() yields packets that arrived before it was called, and null at end", async () => {
    const received: Array<string | null> = [];
    await runLineSession("one\ntwo\r\n", async (session) => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      for (let i = 0; i < 3; i++) received.push(lineText(await session.recv()));
    });
    assert.deepEqual(received, ["one", "two", null]);
  });

  test("leaving a for await loop early ends that loop, not the session: recv() and a new loop go on", async () => {
    const seen: string[] = [];
    await runLineSession("a\nb\nc\nd\n", async (session) => {
      for await (const line of session) {
        seen.push(`first loop: ${lineText(line)}`);
        break;
      }
      seen.push(`recv: ${lineText(await session.recv())}`);
      for await (const line of session) seen.push(`second loop: ${lineText(line)}`);
      seen.push(`after: ${lineText(await session.recv())}`);
    });
    assert.deepEqual(seen, ["first loop: a", "recv: b", "second loop: c", "second loop: d", "after: null"]);
  });

  test("a second concurrent recv() is refused with invalid_argument", async () => {
    const transport = new MemoryTransport();
    let seen: unknown;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      handler: async (session) => {
        const first = session.recv();
        await session.recv().catch((error) => (seen = error));
        await first;
      },
    });
    try {
      const peer = transport.connect(server.port);
      await until(() => seen !== undefined, "the second recv to fail");
      assert.equal((seen as SocketServerError).code, "invalid_argument");
      peer.write("x");
      await peer.whenClosed();
    } finally {
      await server.stop();
    }
  });

  test("the connection learns whether each chunk ended inside a packet (never, with packet 0)", async () => {
    const transport = new MemoryTransport();
    const framed = await startServer({ port: 0, max: 1, transport, packet: 4, handler: echo });
    const raw = await startServer({ port: 0, max: 1, transport, packet: 0, handler: echo });
    try {
      const peer = transport.connect(framed.port);
      for (const chunk of [[0, 0], [0, 2, 7], [8], [0, 0, 0, 1, 9, 0, 0]]) {
        peer.write(new Uint8Array(chunk));
        await settle();
      }
      assert.deepEqual(peer.connection.dataAnswers, [true, true, false, true]);
      const rawPeer = transport.connect(raw.port);
      rawPeer.write(new Uint8Array([0, 0]));
      await settle();
      assert.deepEqual(rawPeer.connection.dataAnswers, [false]);
    } finally {
      await Promise.all([framed.stop(), raw.stop()]);
    }
  });

  test("each send tells the connection whether the handler has more received packets to answer", async () => {
    const transport = new MemoryTransport();
    const framed = await startServer({ port: 0, max: 1, transport, packet: 4, handler: echo });
    // Packet 0: each chunk is a packet; the handler starts once two have come.
    const raw = await startServer({
      port: 0,
      max: 1,
      transport,
      packet: 0,
      handler: async (session) => {
        await until(() => session.bytesIn === 3, "both chunks");
        await echo(session);
      },
    });
    try {
      const peer = transport.connect(framed.port);
      // Three packets in one chunk, then one alone.
      peer.write(new Uint8Array([0, 0, 0, 1, 7, 0, 0, 0, 1, 8, 0, 0, 0, 1, 9]));
      await until(() => peer.connection.moreToCome.length === 3, "three answers");
      peer.write(new Uint8Array([0, 0, 0, 1, 10]));
      await until(() => peer.connection.moreToCome.length === 4, "the fourth answer");
      assert.deepEqual(peer.connection.moreToCome, [true, true, false, false]);
      assert.deepEqual([...peer.bytes()], [0, 0, 0, 1, 7, 0, 0, 0, 1, 8, 0, 0, 0, 1, 9, 0, 0, 0, 1, 10]);
      const rawPeer = transport.connect(raw.port);
      rawPeer.write(new Uint8Array([1, 2]));
      rawPeer.write(new Uint8Array([3]));
      await until(() => rawPeer.connection.moreToCome.length === 2, "both answers");
      assert.deepEqual(rawPeer.connection.moreToCome, [true, false]);
    } finally {
      await Promise.all([framed.stop(), raw.stop()]);
    }
  });

  test("a peer faster than the handler is paused above readHighWaterMark and resumed below", async () => {
    const transport = new MemoryTransport();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let count = 0;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      session: { readHighWaterMark: 100 },
      handler: async (session) => {
        await gate;
        for await (const _ of session) count++;
      },
    });
    try {
      const peer = transport.connect(server.port);
      for (let i = 0; i < 5; i++) peer.write(new Uint8Array(40));
      await settle();
      assert.equal(peer.connection.paused, true);
      release();
      await until(() => !peer.connection.paused, "reading to resume");
      peer.end();
      await peer.whenClosed();
      assert.equal(count, 5);
    } finally {
      await server.stop();
    }
  });

  test("send() adds the header, counts bytes and packets, and rejects once closed", async () => {
    const transport = new MemoryTransport();
    let session!: Session;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      packet: 1,
      handler: (s) => {
        session = s;
        return new Promise(() => {});
      },
    });
    try {
      const peer = transport.connect(server.port);
      await until(() => session !== undefined, "the session");
      await session.send("hi");
      await session.send(new Uint8Array([9]));
      assert.deepEqual([...peer.bytes()], [2, 104, 105, 1, 9]);
      assert.deepEqual([session.bytesOut, session.packetsOut], [5, 2]);
      await rejectsWithCode(session.send(new Uint8Array(256)), "packet_too_large");
      peer.write(new Uint8Array([1, 5]));
      assert.deepEqual([session.bytesIn, session.packetsIn], [2, 1]);
      session.close();
      session.close();
      assert.equal(peer.connection.closeCalls, 1, "close() is idempotent");
      await rejectsWithCode(session.send("late"), "socket_closed");
      assert.equal(await session.recv(), null);
    } finally {
      await server.stop();
    }
  });

  test("send() waits while the transport reports backpressure", async () => {
    const transport = new MemoryTransport();
    let session!: Session;
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      handler: (s) => {
        session = s;
        return new Promise(() => {});
      },
    });
    try {
      const peer = transport.connect(server.port);
      await until(() => session !== undefined, "the session");
      let drain!: () => void;
      peer.connection.writeBlocker = new Promise((resolve) => (drain = resolve));
      let sent = false;
      const sending = session.send("slow").then(() => (sent = true));
      await settle();
      assert.equal(sent, false);
      drain();
      await sending;
      assert.equal(sent, true);
    } finally {
      await server.stop();
    }
  });
});

describe("children and stop", () => {
  test("serverChildren lists running sessions, never waiting ones, and a caller can close them", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 2, transport, handler: echo });
    try {
      const peers = [0, 1, 2].map(() => transport.connect(server.port));
      await until(() => server.status().num === 2, "two sessions");
      const children = await serverChildren(server.name);
      assert.equal(children.length, 2);
      assert.deepEqual(children.map((s) => s.remoteAddress.port), [peers[0], peers[1]].map((p) => p.connection.remoteAddress.port));
      children[0].close();
      await peers[0].whenClosed();
      await until(() => peers[2].connection.started, "the waiting connection to start");
      assert.equal((await serverChildren(server.port)).length, 2);
      assert.equal(server.status().ended.socket_closed, 1);
    } finally {
      await server.stop();
    }
  });

  test("stopServer closes running and waiting connections, frees the port, removes the name", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ name: "core-stop", port: 0, max: 2, transport, handler: echo });
    const peers = [0, 1, 2, 3].map(() => transport.connect(server.port));
    await until(() => server.status().num === 2, "two sessions");
    await stopServer("core-stop");
    assert.ok(peers.every((peer) => peer.closed));
    assert.equal(server.state, "stopped");
    assert.equal(transport.listeners.size, 0, "the port is free");
    await rejectsWithCode(serverStatus("core-stop"), "retrylater");
    await rejectsWithCode(serverChildren(server), "retrylater");
    await stopServer("core-stop");
    await stopServer(server);
    const again = await startServer({ name: "core-stop", port: server.port, max: 1, handler: echo, transport });
    await again.stop();
  });
});

describe("running a server in production", () => {
  test("stop({ timeoutMs }) lets sessions that heed the signal end by themselves", async () => {
    const transport = new MemoryTransport();
    let reason: unknown;
    const server = await startServer({
      port: 0,
      max: 3,
      transport,
      handler: async (session) => {
        await new Promise<void>((resolve) => session.signal.addEventListener("abort", () => resolve()));
        reason = session.signal.reason;
        await session.send("bye");
      },
    });
    const peers = [0, 1, 2, 3].map(() => transport.connect(server.port));
    await until(() => server.status().num === 3, "three sessions");
    const result = await server.stop({ timeoutMs: 1000 });
    assert.deepEqual(result, { ended: 3, closed: 0 });
    assert.equal((reason as SocketServerError).code, "shutdown");
    assert.deepEqual(peers.map((peer) => peer.text()), ["bye", "bye", "bye", ""], "the waiting one is closed unserved");
    assert.ok(peers.every((peer) => peer.closed));
    await rejectsWithCode(serverStatus(server), "retrylater");
  });

  test("stop({ timeoutMs }) closes sessions that do not end in time", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 2, transport, handler: echo });
    const peers = [0, 1].map(() => transport.connect(server.port));
    await until(() => server.status().num === 2, "two sessions");
    let status: string | undefined;
    const stopping = server.stop({ timeoutMs: 40 });
    status = (await serverStatus(server)).state;
    assert.equal(status, "stopping");
    assert.deepEqual(await stopping, { ended: 0, closed: 2 });
    assert.ok(peers.every((peer) => peer.closed));
    assert.deepEqual(await server.stop(), { ended: 0, closed: 2 }, "a second stop returns the first result");
  });

  test("suspend() refuses new connections while sessions go on; resume() serves again on the same port", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({ port: 0, max: 5, transport, handler: echo });
    try {
      const port = server.port;
      const early = transport.connect(port);
      await until(() => server.status().num === 1, "one session");
      await server.suspend();
      assert.equal((await serverStatus(port)).state, "suspended");
      assert.throws(() => transport.connect(port), /Connection refused/);
      early.write("still");
      await early.whenReceived(5);
      await server.resume();
      assert.equal(server.status().state, "running");
      assert.equal(server.port, port);
      const late = transport.connect(port);
      late.write("again");
      await late.whenReceived(5);
      assert.equal(server.status().num, 2);
      await server.resume(); // resuming a running server changes nothing
      assert.equal(server.status().num, 2);
    } finally {
      await server.stop();
    }
    await rejectsWithCode(server.suspend(), "invalid_state");
  });

  test("setMax() up starts waiting connections in order; down ends no session", async () => {
    const transport = new MemoryTransport();
    const order: number[] = [];
    const server = await startServer({
      port: 0,
      max: 1,
      transport,
      handler: async (session) => {
        order.push(session.remoteAddress.port);
        await session.recv();
      },
    });
    try {
      const peers = Array.from({ length: 6 }, () => transport.connect(server.port));
      await until(() => server.status().num === 1, "one session");
      assert.equal(server.status().waiting, 5);
      server.setMax(4);
      await until(() => server.status().num === 4, "four sessions");
      assert.deepEqual(order, peers.slice(0, 4).map((peer) => peer.connection.remoteAddress.port));
      server.setMax(2);
      assert.equal(server.status().num, 4, "lowering max ends nothing");
      peers[0].end();
      peers[1].end();
      await until(() => server.status().num === 2, "two sessions left");
      await settle();
      assert.equal(server.status().num, 2, "no new session while at the new max");
      peers[2].end();
      await until(() => order.length === 5, "a slot to free up");
      assert.equal(server.status().num, 2);
      assert.throws(() => server.setMax(0), /Invalid max 0/);
      // Many setMax calls while clients connect never exceed the last max.
      for (let i = 0; i < 50; i++) {
        server.setMax(1 + (i % 3));
        transport.connect(server.port);
      }
      server.setMax(3);
      await settle();
      assert.ok(server.status().num <= 4);
    } finally {
      await server.stop();
    }
  });

  test("recv({ timeoutMs }) rejects with timeout; caught it lets the session go on, uncaught it ends it", async () => {
    const transport = new MemoryTransport();
    const server = await startServer({
      port: 0,
      max: 2,
      transport,
      packet: "line",
      handler: async (session) => {
        try {
          await session.recv({ timeoutMs: 20 });
        } catch (error) {
          await session.send(`caught ${(error as SocketServerError).code}`);
        }
        const line = await session.recv({ timeoutMs: 20 });
        await session.send(`got ${new TextDecoder().decode(line!)}`);
      },
    });
    try {
      const quick = transport.connect(server.port);
      await until(() => quick.text() === "caught timeout\n", "the first timeout");
      quick.write("late\n");
      await quick.whenClosed();
      assert.equal(quick.text(), "caught timeout\ngot late\n");
      const silent = transport.connect(server.port);
      await silent.whenClosed();
      await until(() => server.status().ended.timeout === 1, "the timeout end");
      assert.equal(server.status().ended.crash, 0);
    } finally {
      await server.stop();
    }
  });

  test("every session has exactly one start and one end event, whatever happens", async () => {
    const transport = new MemoryTransport();
    const starts = new Map<number, number>();
    const ends = new Map<number, string[]>();
    const refusals: number[] = [];
    const server = await startServer({
      port: 0,
      max: 3,
      backlog: 5,
      transport,
      onError: () => {},
      onSessionStart: (session) => starts.set(session.id, (starts.get(session.id) ?? 0) + 1),
      onSessionEnd: (session, reason) => ends.set(session.id, [...(ends.get(session.id) ?? []), reason]),
      onRefused: (info) => refusals.push(info.refused),
      handler: async (session) => {
        const command = new TextDecoder().decode((await session.recv())!);
        if (command === "crash") throw new Error("crash");
        if (command === "wait") await session.recv();
      },
    });
    const commands = ["crash", "ok", "wait", "reset", "close"];
    const peers = [];
    for (let i = 0; i < 40; i++) {
      const peer = transport.connect(server.port);
      peers.push(peer);
      if (peer.refused) continue;
      const command = commands[i % commands.length];
      if (command === "reset") peer.reset();
      else if (command === "close") peer.end();
      else peer.write(command);
      if (command === "wait" && i % 2 === 0) peer.end();
    }
    for (const peer of peers) if (!peer.refused && !peer.closed) peer.end();
    await until(() => server.status().num === 0 && server.status().waiting === 0, "all sessions to end");
    const refused = peers.filter((peer) => peer.refused).length;
    assert.equal(server.status().accepted + refused, 40);
    assert.equal(refusals.length, refused);
    assert.deepEqual(refusals, Array.from({ length: refused }, (_, i) => i + 1));
    assert.equal(starts.size, server.status().accepted);
    assert.ok([...starts.values()].every((count) => count === 1));
    assert.equal(ends.size, starts.size);
    assert.ok([...ends.values()].every((reasons) => reasons.length === 1));
    const ended = server.status().ended;
    assert.equal(Object.values(ended).reduce((a, b) => a + b, 0), starts.size);
    await server.stop();
  });
});
