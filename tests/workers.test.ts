// Servers on several worker threads (`workers`), on the running runtime's
// own sockets and threads: one port, one exact limit across the threads,
// the group driven and watched from the main thread, a dead thread
// restarted. Run on Node, Deno and Bun (scripts/test.ts).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import process from "node:process";
import {
  type PacketType,
  serverChildren,
  serverPort,
  serverStatus,
  type SessionInfo,
  type SocketServer,
  SocketServerError,
  startServer,
  stopServer,
  type WorkersOptions,
} from "../mod.ts";
import { encodePacket } from "../src/framing.ts";
import { concat } from "./support/bytes.ts";
import { canBind, Client, until } from "./support/client.ts";

const TIMEOUT = { timeout: 60_000 };
const ECHO = new URL("./support/echo_handler.ts", import.meta.url);
const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
let serial = 0;

function frame(packetType: PacketType, body: string): Uint8Array {
  return concat(encodePacket(packetType, body));
}

async function rejectsWithCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SocketServerError, `a SocketServerError, not ${error}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

/** A group of `workers` threads on the echo module, with events kept. */
async function startGroup(options: Partial<WorkersOptions> & { max: number }) {
  const events: string[] = [];
  let live = 0;
  let peak = 0;
  const errors: unknown[] = [];
  const ended: { session: SessionInfo; reason: string }[] = [];
  const server = await startServer({
    name: `workers-${runtime}-${++serial}`,
    hostname: "127.0.0.1",
    port: 0,
    workers: 2,
    handler: ECHO,
    packet: "line",
    onSessionStart: (session) => {
      events.push(`start ${session.id}`);
      peak = Math.max(peak, ++live);
    },
    onSessionEnd: (session, reason) => {
      events.push(`end ${session.id}`);
      live--;
      ended.push({ session, reason });
    },
    onError: (error) => errors.push(error),
    ...options,
  });
  return { server, events, errors, ended, live: () => live, peak: () => peak };
}

/** Sends "who" and resolves with the worker number once answered. */
async function who(client: Client, timeoutMs = 20_000): Promise<number> {
  await client.write("who\n");
  const answer = new TextDecoder().decode(await client.received("worker 1\n".length, timeoutMs));
  const match = answer.match(/^worker (\d+)\n/);
  assert.ok(match, `an answer from a worker, not ${JSON.stringify(answer)}`);
  return Number(match[1]);
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

describe(`${runtime}: a server on two worker threads`, () => {
  test("a flood of 10x max: never more than max at once across the threads, every one served by both", TIMEOUT, async () => {
    const group = await startGroup({ max: 3 });
    try {
      const clients = await Client.connectMany(group.server.port, 30);
      const workers = await Promise.all(clients.map(async (client) => {
        const worker = await who(client);
        client.end();
        await client.whenClosed(20_000);
        return worker;
      }));
      await until(() => group.server.status().num === 0 && group.events.length === 60, "every session to end", 10_000);
      assert.ok(group.peak() <= 3, `a count kept from the events reached ${group.peak()} for max 3`);
      assert.equal(group.peak(), 3, "the limit was reached");
      assert.deepEqual(new Set(workers), new Set([1, 2]), "the kernel spread the connections over both threads");
      const status = group.server.status();
      assert.equal(status.accepted, 30, "every connection was served");
      assert.equal(status.ended.socket_closed + status.ended.normal, 30);
      assert.equal(status.workers, 2);
      assert.equal(status.workerRestarts, 0);
      assert.deepEqual(group.errors, []);
    } finally {
      await group.server.stop();
    }
  });

  test("setMax raises the limit of every thread; lowering it ends no session", TIMEOUT, async () => {
    const group = await startGroup({ max: 1 });
    try {
      const clients = await Client.connectMany(group.server.port, 6);
      const answered = new Set<Client>();
      for (const client of clients) void who(client).then(() => answered.add(client), () => {});
      await until(() => answered.size === 1, "one session");
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(answered.size, 1, "the limit holds while five wait");
      assert.equal(group.server.status().num, 1);
      group.server.setMax(4);
      assert.equal(group.server.max, 4);
      await until(() => answered.size === 4, "four sessions across the threads", 10_000);
      assert.equal(group.server.status().max, 4);
      group.server.setMax(1);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(group.server.status().num, 4, "running sessions go on");
      for (const client of answered) client.destroy();
      await until(() => answered.size === 5, "one more once all four ended", 10_000);
      assert.throws(() => group.server.setMax(0), SocketServerError);
      for (const client of clients) client.destroy();
    } finally {
      await group.server.stop();
    }
  });

  test("status sums and children from both threads; closing a child from the main thread", TIMEOUT, async () => {
    const group = await startGroup({ max: 50 });
    try {
      const clients: Client[] = [];
      const seen = new Set<number>();
      while (seen.size < 2 && clients.length < 40) {
        const client = await Client.connect(group.server.port);
        clients.push(client);
        seen.add(await who(client));
      }
      await until(() => group.server.status().num === clients.length, "the starts to be told");
      const children = group.server.children();
      assert.equal(children.length, clients.length);
      assert.deepEqual(new Set(children.map((session) => session.worker)), new Set([1, 2]));
      assert.equal(new Set(children.map((session) => session.id)).size, children.length, "ids unique in the group");
      assert.ok(children.every((session) => session.remoteAddress.hostname === "127.0.0.1"));
      assert.ok(children.every((session) => session.localAddress.port === group.server.port));
      assert.equal((await serverChildren(group.server.name)).length, clients.length);
      assert.equal(await serverPort(group.server.name), group.server.port);
      const status = await serverStatus(group.server.name);
      assert.equal(status.num, clients.length);
      assert.equal(status.accepted, clients.length);
      assert.equal(status.state, "running");
      // The client of the newest session sees it closed by the main thread.
      children[children.length - 1].close();
      await until(() => clients.filter((client) => client.closed).length === 1, "one client closed", 10_000);
      await until(() => group.server.status().num === clients.length - 1, "its end");
      for (const client of clients) client.destroy();
    } finally {
      await group.server.stop();
    }
  });

  test("a graceful stop of the group: every session told, ends by itself, the port and name released", TIMEOUT, async () => {
    const group = await startGroup({ max: 10 });
    const { port, name } = group.server;
    const clients = await Client.connectMany(port, 6);
    await Promise.all(clients.map((client) => who(client)));
    await until(() => group.server.status().num === 6, "six sessions");
    const result = await stopServer(name, { timeoutMs: 10_000 });
    assert.deepEqual(result, { ended: 6, closed: 0 });
    for (const client of clients) {
      assert.match(new TextDecoder().decode(await client.whenClosed()), /bye\n$/);
    }
    assert.equal(group.server.state, "stopped");
    assert.equal(group.live(), 0, "every end was told");
    assert.ok(await canBind(port), "the port is free");
    await rejectsWithCode(serverStatus(name), "retrylater");
    assert.deepEqual(await group.server.stop(), result, "stopping again returns the first result");
  });

  test("suspend and resume act on every thread", TIMEOUT, async () => {
    const group = await startGroup({ max: 10 });
    try {
      const early = await Client.connect(group.server.port);
      await who(early);
      await group.server.suspend();
      assert.equal(group.server.state, "suspended");
      for (let i = 0; i < 8; i++) assert.ok(await refused(group.server.port), "no thread listens");
      assert.equal(await who(early).catch(() => -1) > 0, true, "a running session goes on");
      await group.server.resume();
      assert.equal(group.server.state, "running");
      const late = await Client.connectMany(group.server.port, 8);
      assert.deepEqual(new Set(await Promise.all(late.map((client) => who(client)))), new Set([1, 2]));
      for (const client of [early, ...late]) client.destroy();
    } finally {
      await group.server.stop();
    }
  });

  test("a thread that dies mid-flight is restarted: reported, its sessions ended, its slots back", TIMEOUT, async () => {
    const group = await startGroup({ max: 2 });
    try {
      // Two sessions take both slots; one of them kills its thread.
      const [victim, other] = await Client.connectMany(group.server.port, 2);
      const dying = await who(victim);
      await who(other);
      await victim.write("crash\n");
      await victim.whenClosed(10_000);
      await until(() => group.server.status().workerRestarts === 1, "the restart", 10_000);
      const [error] = group.errors;
      assert.ok(error instanceof SocketServerError && error.code === "worker_exit", `worker_exit, not ${error}`);
      assert.match(error.message, new RegExp(`Worker ${dying} .*the handler module broke its thread`));
      await until(() => group.ended.some(({ reason }) => reason === "crash"), "the lost session's end");
      assert.equal(group.ended.find(({ reason }) => reason === "crash")!.session.worker, dying);
      // Its slot came back (else nothing past the one running would start),
      // and both threads serve again.
      const next = await Client.connect(group.server.port);
      assert.ok(await who(next) > 0, "the freed slot serves a new client");
      next.destroy();
      await until(() => group.server.status().num === 1, "its end");
      // The restarted thread listens again: the kernel gives it connections.
      let servedBy = 0;
      for (let attempt = 0; servedBy !== dying && attempt < 400; attempt++) {
        const client = await Client.connect(group.server.port);
        servedBy = await who(client);
        client.destroy();
        if (servedBy !== dying) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(servedBy, dying, "the restarted thread takes connections");
      assert.ok(await who(other) > 0, "the other thread's session never noticed");
      other.destroy();
      assert.ok(group.peak() <= 2);
    } finally {
      await group.server.stop();
    }
  });

  test("one echo module serves every packet type", TIMEOUT, async () => {
    for (const packet of [0, 1, 2, 4, "line"] as const) {
      const group = await startGroup({ max: 4, packet, packetSize: 1024 });
      try {
        const client = await Client.connect(group.server.port);
        const message = frame(packet, "who");
        await client.write(packet === 0 ? "who" : message);
        const answer = frame(packet, "worker 1");
        const got = await client.received(answer.length);
        assert.match(new TextDecoder().decode(got), /worker [12]/, `packet ${packet}`);
        const body = frame(packet, "x".repeat(200));
        if (packet !== 0) {
          // Byte by byte: the member's framing joins them.
          await client.writeByteByByte(body);
          await client.received(answer.length + body.length, 10_000);
        }
        client.destroy();
      } finally {
        await group.server.stop();
      }
    }
  });

  test("a packet too large or a handler that throws ends that session only", TIMEOUT, async () => {
    const group = await startGroup({ max: 4, packet: 2, packetSize: 16 });
    try {
      const [big, thrower, honest] = await Client.connectMany(group.server.port, 3);
      await big.write(frame(2, "y".repeat(100)));
      await thrower.write(frame(2, "throw"));
      assert.ok(await big.closesWithin(10_000));
      assert.ok(await thrower.closesWithin(10_000));
      await honest.write(frame(2, "who"));
      assert.match(new TextDecoder().decode(await honest.received(frame(2, "worker 1").length)), /worker/);
      await until(() => group.ended.length === 2, "two ends");
      assert.deepEqual(group.ended.map(({ reason }) => reason).sort(), ["crash", "socket_error"]);
      assert.equal(group.errors.length, 1, "the handler's error, with its session");
      assert.equal(group.server.status().workerRestarts, 0);
      honest.destroy();
    } finally {
      await group.server.stop();
    }
  });

  test("bad options are refused with a clear error before any thread starts", TIMEOUT, async () => {
    const base = { port: 0, hostname: "127.0.0.1", max: 2 };
    await rejectsWithCode(startServer({ ...base, workers: 0, handler: ECHO }), "invalid_argument", /workers/);
    await rejectsWithCode(startServer({ ...base, workers: 2.5, handler: ECHO }), "invalid_argument", /workers/);
    await rejectsWithCode(
      startServer({ ...base, workers: 2, handler: (() => {}) as unknown as URL }),
      "invalid_argument",
      /module/,
    );
    await rejectsWithCode(
      startServer({ ...base, workers: 2, handler: "./support/echo_handler.ts" }),
      "invalid_argument",
      /import\.meta\.url/,
    );
    await rejectsWithCode(
      startServer({ ...base, handler: ECHO as unknown as () => void }),
      "invalid_argument",
      /workers/,
    );
    await rejectsWithCode(
      startServer({ max: 2, workers: 2, handler: ECHO, path: "/tmp/x.sock" } as WorkersOptions),
      "invalid_argument",
      /Unix/,
    );
    await rejectsWithCode(startServer({ ...base, max: 0, workers: 2, handler: ECHO }), "invalid_argument", /max/);
  });

  test("a handler module that cannot load, or exports no handler, fails the start and leaves nothing", TIMEOUT, async () => {
    const name = `workers-${runtime}-bad`;
    await rejectsWithCode(
      startServer({ name, port: 0, hostname: "127.0.0.1", max: 2, workers: 2, handler: new URL("./support/nothing_here.ts", import.meta.url) }),
      "invalid_argument",
      /Cannot load the handler module/,
    );
    await rejectsWithCode(
      startServer({ name, port: 0, hostname: "127.0.0.1", max: 2, workers: 2, handler: new URL("./support/no_default_handler.ts", import.meta.url) }),
      "invalid_argument",
      /no default export/,
    );
    await rejectsWithCode(serverStatus(name), "retrylater");
  });

  test("a port in use fails the start with EADDRINUSE", TIMEOUT, async () => {
    const blocker = await startServer({ port: 0, hostname: "127.0.0.1", max: 1, handler: () => {} });
    try {
      await rejectsWithCode(
        startServer({ port: blocker.port, hostname: "127.0.0.1", max: 2, workers: 2, handler: ECHO }),
        "EADDRINUSE",
      );
    } finally {
      await blocker.stop();
    }
  });

  test('workers: "auto" runs one thread per core', TIMEOUT, async () => {
    const server: SocketServer<SessionInfo> = await startServer({
      port: 0,
      hostname: "127.0.0.1",
      max: 2,
      workers: "auto",
      handler: ECHO,
    });
    try {
      assert.equal(server.status().workers, navigator.hardwareConcurrency);
    } finally {
      await server.stop();
    }
  });
});

test(`${runtime}: examples/workers.ts serves lines from its threads and stops on SIGTERM`, TIMEOUT, async () => {
  const { spawn } = await import("node:child_process");
  const script = new URL("../examples/workers.ts", import.meta.url).pathname;
  const args = runtime === "deno" ? ["run", "-A", "--no-check", script] : [script];
  const child = spawn(process.execPath, args, { env: { ...process.env, PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Uint8Array) => (output += new TextDecoder().decode(chunk)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  try {
    await until(() => /line echo on 127\.0\.0\.1:\d+/.test(output), "the example to listen", 30_000);
    const port = Number(output.match(/line echo on 127\.0\.0\.1:(\d+)/)![1]);
    const client = await Client.connect(port);
    await client.write("hello\n");
    assert.match(new TextDecoder().decode(await client.received("worker 1: hello\n".length, 10_000)), /^worker \d+: hello\n$/);
    child.kill("SIGTERM");
    await client.whenClosed(10_000);
    const code = await exited;
    // Deno's node:child_process reports a child sent SIGTERM as killed by
    // it, even one that exits by itself (checked: its shell sees 0).
    if (runtime !== "deno") assert.equal(code, 0);
    assert.match(output, /stopped: 1 sessions ended, 0 closed/);
  } finally {
    child.kill("SIGKILL");
  }
});

test(`${runtime}: two threads behind PROXY: the header's address in every thread, errors summed`, TIMEOUT, async () => {
  const group = await startGroup({ max: 10, proxyProtocol: { timeoutMs: 2000 } });
  try {
    const seen = new Set<number>();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const client = await Client.connect(group.server.port);
      await client.write(`PROXY TCP4 198.51.100.${i + 1} 127.0.0.1 ${1000 + i} 443\r\n`);
      seen.add(await who(client));
      client.destroy();
    }
    assert.deepEqual(seen, new Set([1, 2]));
    await until(() => group.ended.length === group.server.status().accepted, "the ends");
    assert.ok(group.ended.every(({ session }) => /^198\.51\.100\.\d+$/.test(session.remoteAddress.hostname)));
    assert.ok(group.ended.every(({ session }) => session.proxyAddress?.hostname === "127.0.0.1"));
    for (let i = 0; i < 6; i++) {
      const bad = await Client.connect(group.server.port);
      await bad.write("no header\n");
      await bad.whenClosed();
    }
    await until(() => group.server.status().proxyErrors === 6, "six header errors summed over the threads", 5000);
  } finally {
    await group.server.stop();
  }
});
