// The runtimes' own observability channels (node:diagnostics_channel, on
// Node, Deno and Bun): the session TracingChannel around each handler run,
// with an AsyncLocalStorage bound to it (how a tracer keeps a span across
// awaits), and the refused, accept-error, handshake-failure and proxy-error
// channels, on the running runtime's own sockets (accept errors through the
// in-memory transport). Run on every runtime (scripts/test.ts).
import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { AsyncLocalStorage } from "node:async_hooks";
import { type Session, type SessionHandler, type SocketServer, startServer } from "../mod.ts";
import { tracingSessions } from "../src/tracing.ts";
import { MemoryTransport } from "./support/memory_transport.ts";
import { Client, TEST_TLS, until } from "./support/client.ts";

const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
const TIMEOUT = { timeout: 20_000 };
const session = diagnostics.tracingChannel("pico-socket-server.session");

type Event = { kind: string; server: unknown; session: Session; error?: unknown };
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** Subscribes to the session TracingChannel; returns what it saw. */
function watchSessions(): Event[] {
  const events: Event[] = [];
  const record = (kind: string) => (message: unknown) => {
    const { server, session, error } = message as { server: unknown; session: Session; error?: unknown };
    events.push({ kind, server, session, error });
  };
  const handlers = {
    start: record("start"),
    end: record("end"),
    asyncStart: record("asyncStart"),
    asyncEnd: record("asyncEnd"),
    error: record("error"),
  };
  session.subscribe(handlers);
  cleanups.push(() => session.unsubscribe(handlers));
  return events;
}

/** Subscribes to a plain channel; returns its messages. */
function watch(name: string): Record<string, unknown>[] {
  const messages: Record<string, unknown>[] = [];
  const listener = (message: unknown) => void messages.push(message as Record<string, unknown>);
  diagnostics.subscribe(name, listener);
  cleanups.push(() => diagnostics.unsubscribe(name, listener));
  return messages;
}

async function serve(handler: SessionHandler, options: Record<string, unknown> = {}): Promise<SocketServer> {
  return await startServer({ hostname: "127.0.0.1", port: 0, max: 10, packet: "line", handler, onError: () => {}, ...options });
}

describe(`${runtime}: diagnostics channels`, () => {
  test("no subscriber: nothing traced", () => {
    assert.equal(tracingSessions(), false);
    const events = watchSessions();
    assert.equal(tracingSessions(), true);
    cleanups.pop()!();
    assert.equal(tracingSessions(), false);
    assert.deepEqual(events, []);
  });

  test("an async handler: start and end around its call, asyncStart and asyncEnd when it settles, with server and session", TIMEOUT, async () => {
    const events = watchSessions();
    const server = await serve(async (session) => {
      for await (const line of session) await session.send(line);
    });
    try {
      const client = await Client.connect(server.port);
      const port = client.socket.localPort;
      await client.write("hi\n");
      await client.received(3);
      await until(() => events.length === 2, "start and end");
      client.end();
      await until(() => events.length === 4, "asyncStart and asyncEnd");
      assert.deepEqual(events.map((event) => event.kind), ["start", "end", "asyncStart", "asyncEnd"]);
      assert.ok(events.every((event) => event.server === server && event.session === events[0].session));
      assert.equal(events[0].session.remoteAddress.port, port);
    } finally {
      await server.stop();
    }
  });

  test("handlers that throw at once, reject, or return at once", TIMEOUT, async () => {
    const events = watchSessions();
    const failure = new Error("handler failed");
    const handlers: Record<string, SessionHandler> = {
      throws: () => {
        throw failure;
      },
      rejects: async () => {
        await Promise.resolve();
        throw failure;
      },
      returns: () => {},
    };
    const expected: Record<string, string[]> = {
      throws: ["start", "error", "end"],
      rejects: ["start", "end", "error", "asyncStart", "asyncEnd"],
      returns: ["start", "end"],
    };
    for (const [name, handler] of Object.entries(handlers)) {
      events.length = 0;
      const server = await serve(handler);
      try {
        const client = await Client.connect(server.port);
        await client.whenClosed();
        await until(() => events.length === expected[name].length, `${name}: its events`);
        assert.deepEqual(events.map((event) => event.kind), expected[name], name);
        if (name !== "returns") assert.equal(events.find((event) => event.kind === "error")!.error, failure);
      } finally {
        await server.stop();
      }
    }
  });

  test("a store bound to the start channel is the handler's across its awaits (a tracer's span)", TIMEOUT, async () => {
    watchSessions();
    const store = new AsyncLocalStorage<{ span: number }>();
    session.start.bindStore(store, (message) => ({ span: (message as { session: Session }).session.id }));
    cleanups.push(() => session.start.unbindStore(store));
    const seen: Array<[number, number | undefined]> = [];
    const server = await serve(async (session) => {
      for await (const _line of session) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        seen.push([session.id, store.getStore()?.span]);
        await session.send("ok");
      }
    });
    try {
      const clients = await Client.connectMany(server.port, 3);
      await Promise.all(clients.map(async (client) => {
        await client.write("a\n");
        await client.received(3);
      }));
      assert.equal(seen.length, 3);
      assert.ok(seen.every(([id, span]) => id === span), JSON.stringify(seen));
      for (const client of clients) client.destroy();
    } finally {
      await server.stop();
    }
  });

  test("refused connections: backlog and per_address", TIMEOUT, async () => {
    const refused = watch("pico-socket-server.refused");
    const server = await serve(async (session) => void await session.recv(), { max: 1, backlog: 1, maxPerAddress: 5 });
    try {
      const clients = await Client.connectMany(server.port, 3);
      await until(() => refused.length === 1, "the third refused");
      assert.equal(refused[0].server, server);
      assert.equal(refused[0].reason, "backlog");
      assert.equal(refused[0].refused, 1);
      for (const client of clients) client.destroy();
    } finally {
      await server.stop();
    }
    refused.length = 0;
    const perAddress = await serve(async (session) => void await session.recv(), { maxPerAddress: 1 });
    try {
      const clients = await Client.connectMany(perAddress.port, 2);
      await until(() => refused.length === 1, "the second refused");
      assert.equal(refused[0].reason, "per_address");
      assert.equal((refused[0].remoteAddress as { hostname: string }).hostname, "127.0.0.1");
      for (const client of clients) client.destroy();
    } finally {
      await perAddress.stop();
    }
  });

  test("a failed TLS handshake and a bad PROXY header are published with the error", TIMEOUT, async () => {
    const handshakes = watch("pico-socket-server.handshake-failure");
    const proxies = watch("pico-socket-server.proxy-error");
    const tls = await serve(() => {}, { tls: TEST_TLS });
    const proxied = await serve(() => {}, { proxyProtocol: true });
    try {
      for (const server of [tls, proxied]) {
        const client = await Client.connect(server.port);
        await client.write("GET / HTTP/1.0\r\n\r\n");
        await client.whenClosed();
      }
      await until(() => handshakes.length === 1 && proxies.length === 1, "both published");
      assert.equal(handshakes[0].server, tls);
      assert.ok(handshakes[0].error instanceof Error);
      assert.equal(proxies[0].server, proxied);
      assert.match(String((proxies[0].error as Error).message), /PROXY/);
      assert.equal((proxies[0].remoteAddress as { hostname: string }).hostname, "127.0.0.1");
    } finally {
      await tls.stop();
      await proxied.stop();
    }
  });

  test("accept errors: the runtime's failures and connections lost before they were accepted", TIMEOUT, async () => {
    const errors = watch("pico-socket-server.accept-error");
    const transport = new MemoryTransport();
    transport.acceptFailures = 2;
    const server = await startServer({ port: 0, max: 2, transport, handler: () => {}, onError: () => {} });
    try {
      const peer = transport.connect(server.port);
      await peer.whenClosed();
      assert.equal(errors.length, 2);
      assert.equal(errors[0].server, server);
      assert.equal((errors[0].error as { code?: string }).code, "EMFILE");
    } finally {
      await server.stop();
    }
  });
});
