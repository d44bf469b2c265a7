/**
 * The conformance suite: what a user observes on real loopback sockets,
 * run against every adapter on every runtime (see the `*_adapter.test.ts`
 * files). Clients use `node:net`, which all three runtimes ship.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as sourceApi from "../mod.ts";
import type { ServerOptions, Session, SessionHandler, SocketServer } from "../mod.ts";
import type { Transport } from "../src/transport.ts";
import { encodePacket, type PacketType } from "../src/framing.ts";
import { concat } from "./support/bytes.ts";
import { canBind, Client, occupyPort, sleep, until } from "./support/client.ts";

/**
 * The functions under test: the sources' by default, or the same names from
 * another build of the package (e.g. the npm build).
 */
export type Api = Pick<
  typeof sourceApi,
  "startServer" | "stopServer" | "serverPort" | "serverStatus" | "serverChildren" | "SocketServerError"
>;

const HOST = "127.0.0.1";
const TIMEOUT = { timeout: 20_000 };

const echo: SessionHandler = async (session) => {
  for await (const packet of session) await session.send(packet);
};


function frame(packetType: PacketType, body: Uint8Array | string): Uint8Array {
  return concat(encodePacket(packetType, body));
}

function bytesOf(length: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

/** Runs the whole suite against `transport`, labelled with `label`. */
export function conformance(label: string, transport: Transport, api: Api = sourceApi): void {
  const { serverChildren, serverPort, serverStatus, startServer, stopServer, SocketServerError } = api;
  let serial = 0;

  async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<Error> {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof SocketServerError, `expected a SocketServerError, got ${error}`);
      assert.equal(error.code, code, error.message);
      return error;
    }
    assert.fail(`expected a rejection with code ${code}`);
  }

  const uniqueName = (what: string) => `conformance-${label}-${what}-${++serial}`;

  /** Starts a server on loopback with this suite's transport. */
  function start(options: Omit<ServerOptions, "transport" | "hostname">): Promise<SocketServer> {
    return startServer({ hostname: HOST, transport, ...options });
  }

  async function withServer(
    options: Omit<ServerOptions, "transport" | "hostname">,
    body: (server: SocketServer) => Promise<void>,
  ): Promise<void> {
    const server = await start(options);
    try {
      await body(server);
    } finally {
      await server.stop();
    }
  }

  describe(`${label}: starting, naming and stopping`, () => {
    test("port 0 gets a real port and the default name picoSocketServer_<port>", TIMEOUT, async () => {
      await withServer({ port: 0, max: 2, handler: echo }, async (server) => {
        assert.ok(server.port > 0);
        assert.equal(server.name, `picoSocketServer_${server.port}`);
        assert.equal(await serverPort(server.port), server.port);
        assert.equal(await serverPort(server.name, 100), server.port);
        const { num, max } = await serverStatus(server.port);
        assert.deepEqual({ num, max }, { num: 0, max: 2 });
        const client = await Client.connect(server.port);
        await client.write("ping");
        assert.equal(new TextDecoder().decode(await client.received(4)), "ping");
        client.destroy();
      });
    });

    test("named servers are found by name and a duplicate name is refused", TIMEOUT, async () => {
      const name = uniqueName("named");
      await withServer({ name, port: 0, max: 1, handler: echo }, async (server) => {
        assert.equal(await serverPort(name), server.port);
        const other = await occupyPort();
        await other.release();
        const error = await rejectsWithCode(
          start({ name, port: other.port, max: 1, handler: echo }),
          "name_in_use",
        );
        assert.ok(error.message.includes(`'${name}'`), error.message);
        assert.ok(await canBind(other.port), "the refused server must not hold a port");
        assert.equal(await serverPort(name), server.port, "the first server keeps its name");
      });
    });

    test("a port in use rejects with EADDRINUSE and registers nothing", TIMEOUT, async () => {
      const blocker = await occupyPort();
      try {
        const name = uniqueName("busy");
        const error = await rejectsWithCode(start({ name, port: blocker.port, max: 1, handler: echo }), "EADDRINUSE");
        assert.match(error.message, new RegExp(`${blocker.port}`));
        await rejectsWithCode(serverStatus(name), "retrylater");
        await rejectsWithCode(serverStatus(blocker.port), "retrylater");
      } finally {
        await blocker.release();
      }
    });

    test("stopServer closes running and waiting sessions, frees the port and the name", TIMEOUT, async () => {
      const name = uniqueName("stop");
      const server = await start({ name, port: 0, max: 2, handler: echo });
      const port = server.port;
      const clients = [];
      for (let i = 0; i < 5; i++) clients.push(await Client.connect(port));
      await until(() => server.status().num === 2, "two running sessions");
      await stopServer(name);
      await Promise.all(clients.map((client) => client.whenClosed()));
      assert.ok(await canBind(port), "the port can be bound again at once");
      await rejectsWithCode(serverStatus(name), "retrylater");
      await rejectsWithCode(serverPort(server), "retrylater");
      await stopServer(name);
      await stopServer(server);
      const again = await start({ name, port, max: 1, handler: echo });
      await again.stop();
    });
  });

  describe(`${label}: the session limit`, () => {
    test("with 3x max clients at once, exactly max run and the rest start in arrival order", TIMEOUT, async () => {
      const max = 4;
      const started: number[] = [];
      let peak = 0;
      await withServer({
        port: 0,
        max,
        packet: "line",
        handler: async (session) => {
          const first = await session.recv();
          started.push(Number(new TextDecoder().decode(first!)));
          peak = Math.max(peak, (await serverStatus(session.localAddress.port)).num);
          await session.send("started");
          // Runs until the client leaves.
          while ((await session.recv()) !== null);
        },
      }, async (server) => {
        const clients: Client[] = [];
        for (let i = 0; i < 3 * max; i++) {
          const client = await Client.connect(server.port);
          await client.write(`${i}\n`);
          clients.push(client);
        }
        await until(() => started.length === max, "max sessions");
        await sleep(50);
        assert.deepEqual(started, [0, 1, 2, 3], "exactly max are served");
        assert.equal(server.status().num, max);
        for (let leaving = 0; leaving < 2 * max; leaving++) {
          clients[leaving].end();
          await until(() => started.length === max + leaving + 1, `client ${max + leaving} to be served`);
        }
        assert.deepEqual(started, Array.from({ length: 3 * max }, (_, i) => i), "served in arrival order");
        for (const client of clients.slice(2 * max)) client.end();
        await until(() => server.status().num === 0, "all sessions to end");
        assert.ok(peak <= max, `never more than max sessions (saw ${peak})`);
        assert.equal(server.status().accepted, 3 * max);
        for (const client of clients) await client.whenClosed();
      });
    });

    // On Deno the kernel's backlog does the waiting: nothing to refuse.
    test("connections beyond backlog are refused and counted", TIMEOUT, async () => {
      const refusals: string[] = [];
      await withServer({
        port: 0,
        max: 1,
        backlog: 2,
        handler: echo,
        onRefused: (info) => refusals.push(info.remoteAddress.hostname),
      }, async (server) => {
        const running = await Client.connect(server.port);
        await until(() => server.status().num === 1, "one session");
        const waiting = [await Client.connect(server.port), await Client.connect(server.port)];
        await until(() => server.status().waiting === 2, "two waiting");
        const refused = [await Client.connect(server.port), await Client.connect(server.port)];
        await Promise.all(refused.map((client) => client.whenClosed()));
        assert.equal(server.status().refused, 2);
        assert.equal(refusals.length, 2);
        assert.ok(refusals.every((hostname) => hostname.endsWith("127.0.0.1")));
        running.end();
        for (const client of waiting) {
          await client.write("in");
          assert.equal(new TextDecoder().decode(await client.received(2)), "in");
          client.end();
        }
        await until(() => server.status().num === 0, "all to end");
        assert.equal(server.status().accepted, 3);
      });
    });

    test("serverChildren lists running sessions, which a caller can close", TIMEOUT, async () => {
      await withServer({ port: 0, max: 2, handler: echo }, async (server) => {
        const clients = [await Client.connect(server.port), await Client.connect(server.port)];
        const waiting = await Client.connect(server.port);
        await until(() => server.status().num === 2, "two sessions");
        const children = await serverChildren(server.port);
        assert.equal(children.length, 2, "waiting connections are not children");
        const ports = clients.map((client) => client.socket.localPort).sort();
        assert.deepEqual(children.map((s) => s.remoteAddress.port).sort(), ports);
        assert.ok(children.every((s) => s.remoteAddress.hostname.endsWith("127.0.0.1")));
        assert.ok(children.every((s) => s.localAddress.port === server.port));
        for (const session of children) session.close();
        await Promise.all(clients.map((client) => client.whenClosed()));
        await waiting.write("served now");
        assert.equal(new TextDecoder().decode(await waiting.received(10)), "served now");
        waiting.destroy();
      });
    });
  });

  describe(`${label}: addresses`, () => {
    test("a session knows both ends: the peer's address and port, and the listener's", TIMEOUT, async () => {
      const seen: Array<{ local: string; remote: string }> = [];
      await withServer({
        port: 0,
        max: 2,
        handler: (session) => {
          const { localAddress: local, remoteAddress: remote } = session;
          seen.push({ local: `${local.hostname}:${local.port}`, remote: `${remote.hostname}:${remote.port}` });
        },
      }, async (server) => {
        const clients = [await Client.connect(server.port), await Client.connect(server.port)];
        await until(() => seen.length === 2, "two sessions");
        const expected = clients.map((client) => ({
          local: `${HOST}:${server.port}`,
          remote: `${HOST}:${client.socket.localPort}`,
        }));
        const order = (list: typeof seen) => [...list].sort((a, b) => a.remote.localeCompare(b.remote));
        assert.deepEqual(order(seen.map(({ local, remote }) => ({ local, remote: remote.replace(/^::ffff:/, "") }))), order(expected));
        for (const client of clients) client.destroy();
      });
    });
  });

  describe(`${label}: handlers and peers that misbehave`, () => {
    test("a handler that throws, one that rejects and one that returns at once close only their socket", TIMEOUT, async () => {
      const reported: Array<{ error: unknown; session?: Session }> = [];
      await withServer({
        port: 0,
        max: 10,
        packet: "line",
        onError: (error, session) => reported.push({ error, session }),
        handler: async (session) => {
          const command = new TextDecoder().decode((await session.recv())!);
          if (command === "throw") throw new Error("handler threw");
          if (command === "reject") return Promise.reject(new Error("handler rejected"));
          if (command === "return") return;
          await session.send(`echo ${command}`);
          await echo(session);
        },
      }, async (server) => {
        const survivor = await Client.connect(server.port);
        await survivor.write("keep\n");
        await survivor.received(10);
        for (const command of ["throw", "reject", "return"]) {
          const client = await Client.connect(server.port);
          await client.write(`${command}\n`);
          assert.equal((await client.whenClosed()).length, 0, `${command}: nothing is sent`);
        }
        await until(() => server.status().ended.crash === 2 && server.status().ended.normal === 1, "three ends");
        assert.deepEqual(reported.map(({ error }) => (error as Error).message), ["handler threw", "handler rejected"]);
        await survivor.write("still here\n");
        assert.equal(new TextDecoder().decode(await survivor.received(21)), "echo keep\nstill here\n");
        survivor.end();
        await survivor.whenClosed();
      });
    });

    test("a peer reset mid-session ends that session with socket_error only", TIMEOUT, async () => {
      let failure: unknown;
      await withServer({
        port: 0,
        max: 4,
        handler: async (session) => {
          try {
            await echo(session);
          } catch (error) {
            failure = error;
            throw error;
          }
        },
      }, async (server) => {
        const other = await Client.connect(server.port);
        const resetting = await Client.connect(server.port);
        await resetting.write("hello");
        await resetting.received(5);
        resetting.reset();
        await until(() => server.status().ended.socket_error === 1, "the reset session to end");
        assert.ok(failure instanceof SocketServerError);
        assert.equal(failure.code, "socket_error");
        assert.equal(server.status().ended.crash, 0);
        await other.write("fine");
        assert.equal(new TextDecoder().decode(await other.received(4)), "fine");
        other.destroy();
      });
    });

    test("peers sending seeded random garbage end only their own sessions", TIMEOUT, async () => {
      let seed = 42;
      const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
      for (const packet of [0, 1, 2, 4, "line"] as const) {
        const reported: unknown[] = [];
        await withServer({
          port: 0,
          max: 8,
          packet,
          packetSize: 1000,
          onError: (error) => reported.push(error),
          handler: echo,
        }, async (server) => {
          const clients = await Promise.all(Array.from({ length: 4 }, () => Client.connect(server.port)));
          await Promise.all(clients.map(async (client) => {
            for (let sent = 0; sent < 20_000 && !client.closed;) {
              const chunk = new Uint8Array(1 + Math.floor(random() * 2000)).map(() => Math.floor(random() * 256));
              await client.write(chunk).catch(() => {});
              sent += chunk.length;
            }
            client.end();
            await client.whenClosed();
          }));
          await until(() => server.status().num === 0, `packet ${packet}: all garbage sessions to end`);
          assert.deepEqual(reported, [], "garbage is a peer's fault, never a crash");
          const ended = server.status().ended;
          assert.equal(ended.crash, 0);
          assert.equal(ended.normal + ended.socket_closed + ended.socket_error, 4);
          const fine = await Client.connect(server.port);
          const ok = frame(packet === 0 ? 0 : packet, "ok");
          await fine.write(ok);
          assert.deepEqual(await fine.received(ok.length), ok, "the server still serves");
          fine.destroy();
        });
      }
    });

    test("a peer that closes ends its session with socket_closed", TIMEOUT, async () => {
      await withServer({ port: 0, max: 1, handler: echo }, async (server) => {
        const client = await Client.connect(server.port);
        await client.write("last words");
        client.end();
        assert.equal(new TextDecoder().decode(await client.whenClosed()), "last words");
        await until(() => server.status().ended.socket_closed === 1, "the session to end");
      });
    });

    test("a large transfer arrives whole and in order through backpressure", TIMEOUT, async () => {
      await withServer({ port: 0, max: 1, packet: 4, handler: echo }, async (server) => {
        const client = await Client.connect(server.port);
        const packets = [bytesOf(3 * 1024 * 1024, 7), bytesOf(100, 9), bytesOf(1024 * 1024, 11)];
        const stream = concat(packets.map((p) => frame(4, p)));
        await client.write(stream);
        const received = await client.received(stream.length, 15_000);
        assert.equal(received.length, stream.length);
        assert.deepEqual(received, stream);
        client.destroy();
      });
    });
  });

  describe(`${label}: relaying`, () => {
    test("packets a handler keeps stay intact while many more arrive", TIMEOUT, async () => {
      const ack = new Uint8Array([1]);
      await withServer({
        port: 0,
        max: 1,
        packet: 4,
        handler: async (session) => {
          // Keeps every packet (acknowledging each) until the empty one, then
          // sends them all back.
          const kept: Uint8Array[] = [];
          for await (const packet of session) {
            if (packet.length > 0) {
              kept.push(packet);
              await session.send(ack);
              continue;
            }
            for (const packet of kept) await session.send(packet);
            return;
          }
        },
      }, async (server) => {
        const client = await Client.connect(server.port);
        // Small and large packets, alone or several at once, each group
        // written once the ones before are acknowledged: the server keeps
        // packets from reads of every size, small ones and ones that fill an
        // adapter's read buffer, while more reads follow.
        const packets = Array.from({ length: 120 }, (_, i) => bytesOf(i % 5 === 0 ? 70_000 + i : 1 + i * 53, i));
        const framed = packets.map((p) => frame(4, p));
        const ackLength = frame(4, ack).length;
        for (let i = 0; i < framed.length; i += 1 + (i % 4)) {
          const group = framed.slice(i, i + 1 + (i % 4));
          await client.write(concat(group));
          await client.received((i + group.length) * ackLength);
        }
        await client.write(frame(4, new Uint8Array(0)));
        const expected = concat([...framed.map(() => frame(4, ack)), ...framed]);
        const received = await client.received(expected.length, 15_000);
        assert.equal(received.length, expected.length);
        assert.deepEqual(received, expected);
        client.destroy();
      });
    });

    test("a stream of small and large pieces relayed as packet 0 comes back whole", TIMEOUT, async () => {
      await withServer({ port: 0, max: 1, packet: 0, handler: echo }, async (server) => {
        const client = await Client.connect(server.port);
        // Reads of every size, so that small and large writes meet in a turn.
        const pieces = Array.from({ length: 60 }, (_, i) => bytesOf(i % 3 === 0 ? 70_000 : 1 + i * 37, i));
        const stream = concat(pieces);
        for (const piece of pieces) await client.write(piece);
        const received = await client.received(stream.length, 15_000);
        assert.equal(received.length, stream.length);
        assert.deepEqual(received, stream);
        client.destroy();
      });
    });
  });

  describe(`${label}: packet types`, () => {
    for (const packetType of [1, 2, 4, "line"] as const) {
      const packetSize = 200;
      const body = (length: number, seed = 3) =>
        packetType === "line" ? new TextEncoder().encode("x".repeat(length)) : bytesOf(length, seed);

      test(`packet ${packetType}: one byte at a time, many per chunk, empty and exactly packetSize`, TIMEOUT, async () => {
        await withServer({ port: 0, max: 1, packet: packetType, packetSize, handler: echo }, async (server) => {
          const client = await Client.connect(server.port);
          const single = frame(packetType, body(5));
          await client.writeByteByByte(single);
          assert.deepEqual(await client.received(single.length), single);
          const many = [body(0), body(1), body(packetSize), body(17), body(0)];
          const coalesced = concat(many.map((p) => frame(packetType, p)));
          await client.write(coalesced);
          const expected = concat([single, coalesced]);
          assert.deepEqual(await client.received(expected.length), expected);
          client.end();
          await client.whenClosed();
        });
      });

      test(`packet ${packetType}: one byte over packetSize ends the session with a clear error`, TIMEOUT, async () => {
        let failure: unknown;
        await withServer({
          port: 0,
          max: 2,
          packet: packetType,
          packetSize,
          handler: async (session) => {
            try {
              await echo(session);
            } catch (error) {
              failure = error;
              throw error;
            }
          },
        }, async (server) => {
          const bystander = await Client.connect(server.port);
          const client = await Client.connect(server.port);
          const ok = frame(packetType, body(3));
          const tooLong = frame(packetType, body(packetSize + 1));
          // For length-prefixed types the header alone must end the session.
          const sent = packetType === "line" ? tooLong : tooLong.subarray(0, packetType);
          await client.write(concat([ok, sent]));
          assert.deepEqual(await client.whenClosed(), ok, "the packet before is still answered");
          await until(() => server.status().ended.socket_error === 1, "the session to end");
          assert.ok(failure instanceof SocketServerError);
          assert.equal(failure.code, "packet_too_large");
          assert.match(failure.message, new RegExp(`${packetSize + 1} bytes.*${packetSize}`));
          await bystander.write(ok);
          assert.deepEqual(await bystander.received(ok.length), ok);
          bystander.destroy();
        });
      });

      test(`packet ${packetType}: a truncated packet at end of stream is an error`, TIMEOUT, async () => {
        let failure: unknown;
        await withServer({
          port: 0,
          max: 1,
          packet: packetType,
          handler: async (session) => {
            try {
              await echo(session);
            } catch (error) {
              failure = error;
              throw error;
            }
          },
        }, async (server) => {
          const client = await Client.connect(server.port);
          const whole = frame(packetType, body(4));
          const partial = frame(packetType, body(10)).subarray(0, 6);
          await client.write(concat([whole, partial]));
          client.end();
          assert.deepEqual(await client.whenClosed(), whole);
          await until(() => server.status().ended.socket_error === 1, "the session to end");
          assert.ok(failure instanceof SocketServerError);
          assert.equal(failure.code, "truncated_packet");
        });
      });
    }

    test("packet line: \\r\\n and \\n both end a line; send appends \\n", TIMEOUT, async () => {
      const lines: string[] = [];
      await withServer({
        port: 0,
        max: 1,
        packet: "line",
        handler: async (session) => {
          for await (const line of session) {
            lines.push(new TextDecoder().decode(line));
            await session.send(line);
          }
        },
      }, async (server) => {
        const client = await Client.connect(server.port);
        await client.write("crlf\r\nlf\n\r\n");
        await client.writeByteByByte(new TextEncoder().encode("split\r\n"));
        assert.equal(new TextDecoder().decode(await client.received(15)), "crlf\nlf\n\nsplit\n");
        assert.deepEqual(lines, ["crlf", "lf", "", "split"]);
        client.end();
        await client.whenClosed();
      });
    });

    test("answers sent while more packets wait go out even if the handler answers no more", TIMEOUT, async () => {
      const bodies = ["one", "two", "three", "four"];
      const sent = concat(bodies.map((body) => frame(4, body)));
      await withServer({
        port: 0,
        max: 1,
        packet: 4,
        handler: async (session) => {
          await until(() => session.bytesIn === sent.length, "all four packets");
          // Each answer is sent while more packets wait to be taken; the
          // last packet gets none, and the handler then waits for more.
          for (let i = 0; i < 3; i++) await session.send((await session.recv())!.slice().reverse());
          await session.recv();
          await session.recv();
        },
      }, async (server) => {
        const client = await Client.connect(server.port);
        await client.write(sent);
        const expected = concat(["eno", "owt", "eerht"].map((body) => frame(4, body)));
        assert.deepEqual(await client.received(expected.length), expected);
        client.destroy();
      });
    });

    test("packet 0: raw chunks pass through unframed", TIMEOUT, async () => {
      await withServer({ port: 0, max: 1, packet: 0, handler: echo }, async (server) => {
        const client = await Client.connect(server.port);
        const data = bytesOf(70_000);
        await client.write(data);
        assert.deepEqual(await client.received(data.length), data);
        client.destroy();
      });
    });
  });

  describe(`${label}: running a server in production`, () => {
    test("a graceful stop lets sessions that finish in time end by themselves", TIMEOUT, async () => {
      const server = await start({
        port: 0,
        max: 4,
        packet: "line",
        handler: async (session) => {
          const aborted = new Promise<void>((resolve) => session.signal.addEventListener("abort", () => resolve()));
          const next = session.recv();
          await Promise.race([aborted, next]);
          await session.send("goodbye");
        },
      });
      const clients: Client[] = [];
      for (let i = 0; i < 3; i++) clients.push(await Client.connect(server.port));
      await until(() => server.status().num === 3, "three sessions");
      const result = await server.stop({ timeoutMs: 5000 });
      assert.deepEqual(result, { ended: 3, closed: 0 });
      for (const client of clients) assert.equal(new TextDecoder().decode(await client.whenClosed()), "goodbye\n");
      assert.ok(await canBind(server.port), "the port is free after the drain");
    });

    test("a graceful stop closes sessions that do not finish in time", TIMEOUT, async () => {
      const server = await start({ port: 0, max: 4, handler: echo });
      const clients = [await Client.connect(server.port), await Client.connect(server.port)];
      await until(() => server.status().num === 2, "two sessions");
      const started = Date.now();
      const result = await stopServer(server, { timeoutMs: 100 });
      assert.deepEqual(result, { ended: 0, closed: 2 });
      assert.ok(Date.now() - started >= 90, "the drain waited for its timeout");
      await Promise.all(clients.map((client) => client.whenClosed()));
    });

    test("suspend refuses new connections while sessions go on; resume serves on the same port", TIMEOUT, async () => {
      await withServer({ port: 0, max: 4, handler: echo }, async (server) => {
        const port = server.port;
        const alive = await Client.connect(port);
        await until(() => server.status().num === 1, "one session");
        await server.suspend();
        assert.equal(server.status().state, "suspended");
        await assert.rejects(Client.connect(port), (error: { code?: string }) => error.code === "ECONNREFUSED");
        await alive.write("during");
        assert.equal(new TextDecoder().decode(await alive.received(6)), "during");
        await server.resume();
        assert.equal(server.status().state, "running");
        const later = await Client.connect(port);
        await later.write("after");
        assert.equal(new TextDecoder().decode(await later.received(5)), "after");
        await alive.write("!");
        assert.equal(new TextDecoder().decode(await alive.received(7)), "during!");
        alive.destroy();
        later.destroy();
      });
    });

    test("setMax up starts waiting clients in order; down ends no session", TIMEOUT, async () => {
      const served: number[] = [];
      await withServer({
        port: 0,
        max: 1,
        packet: "line",
        handler: async (session) => {
          const first = await session.recv();
          if (first === null) return;
          served.push(Number(new TextDecoder().decode(first)));
          while ((await session.recv()) !== null);
        },
      }, async (server) => {
        const clients: Client[] = [];
        for (let i = 0; i < 6; i++) {
          const client = await Client.connect(server.port);
          await client.write(`${i}\n`);
          clients.push(client);
        }
        await until(() => served.length === 1, "one session");
        server.setMax(4);
        await until(() => served.length === 4, "four sessions");
        assert.deepEqual(served, [0, 1, 2, 3]);
        server.setMax(2);
        await sleep(30);
        assert.equal(server.status().num, 4, "lowering max ends nothing");
        clients[0].end();
        clients[1].end();
        clients[2].end();
        await until(() => server.status().num === 2 && served.length === 5, "one more served at the new max");
        await sleep(30);
        assert.equal(served.length, 5, "no more than the new max run");
        // Concurrent changes while clients connect never break the limit.
        const more: Promise<Client>[] = [];
        for (let i = 0; i < 20; i++) {
          server.setMax(1 + (i % 4));
          more.push(Client.connect(server.port));
        }
        server.setMax(3);
        const extra = await Promise.all(more);
        await until(() => server.status().num === 3, "three sessions at the final max");
        for (const client of [...clients, ...extra]) client.destroy();
        await until(() => server.status().num === 0, "all to leave");
      });
    });

    test("the idle timeout fires on silence only", TIMEOUT, async () => {
      await withServer({ port: 0, max: 2, handler: echo, session: { idleTimeoutMs: 150 } }, async (server) => {
        const chatty = await Client.connect(server.port);
        const silent = await Client.connect(server.port);
        for (let i = 0; i < 8; i++) {
          await chatty.write("x");
          await sleep(50);
        }
        assert.equal(chatty.closed, false, "input keeps a session alive past the timeout");
        await silent.whenClosed();
        await until(() => server.status().ended.timeout === 1, "the silent session to time out");
        await chatty.whenClosed();
        assert.equal(server.status().ended.timeout, 2);
      });
    });

    test("a peer faster than its handler is paused: the server reads on only as the handler takes packets", TIMEOUT, async () => {
      const total = 16 * 1024 * 1024;
      const readHighWaterMark = 128 * 1024;
      let session: Session | undefined;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let taken = 0;
      await withServer({
        port: 0,
        max: 1,
        packet: 0,
        session: { readHighWaterMark },
        handler: async (s) => {
          session = s;
          await gate;
          for await (const chunk of s) taken += chunk.length;
        },
      }, async (server) => {
        const client = await Client.connect(server.port);
        const piece = bytesOf(64 * 1024, 5);
        for (let sent = 0; sent < total; sent += piece.length) client.socket.write(piece);
        await until(() => session !== undefined, "the session to start");
        // Wait until the server stops reading: its kernel buffers fill, then
        // the peer's.
        let last = -1;
        while (session!.bytesIn !== last) {
          last = session!.bytesIn;
          await sleep(200);
        }
        // Paused at readHighWaterMark, give or take one read.
        assert.ok(session!.bytesIn <= readHighWaterMark + 1024 * 1024, `read ${session!.bytesIn} bytes ahead of the handler`);
        release();
        client.socket.end();
        await until(() => taken === total, `the handler to take all ${total} bytes (took ${taken})`, 15_000);
        assert.equal(session!.bytesIn, total);
        client.destroy();
      });
    });

    test("a peer that never reads cannot grow the server's memory", TIMEOUT, async () => {
      let sent = 0;
      let session: Session | undefined;
      const packet = new Uint8Array(64 * 1024);
      await withServer({
        port: 0,
        max: 1,
        session: { writeHighWaterMark: 128 * 1024 },
        handler: async (s) => {
          session = s;
          while (!s.closed) {
            await s.send(packet);
            sent += packet.length;
          }
        },
      }, async (server) => {
        const client = await Client.connect(server.port);
        client.stopReading();
        // Wait until sending stalls: kernel buffers full, then the bound.
        let last = -1;
        while (sent !== last) {
          last = sent;
          await sleep(200);
        }
        const stalledAt = sent;
        await sleep(300);
        assert.equal(sent, stalledAt, "send() waits instead of queueing more");
        // Bounded by the kernel's socket buffers plus the write bound and one
        // packet; far below what an unbounded queue would reach.
        assert.ok(stalledAt < 64 * 1024 * 1024, `stalled after ${stalledAt} bytes`);
        assert.ok(session!.bytesOut - stalledAt <= packet.length * 2);
        client.destroy();
      });
    });

    /**
     * Runs `body` with a client connected to a server whose one session
     * queues `packets` without waiting and returns, so that it closes with
     * them queued; the client reads nothing until `body` runs.
     */
    async function afterClosingWithQueued(
      packets: Uint8Array[],
      lingerMs: number | undefined,
      body: (client: Client) => Promise<void>,
    ): Promise<void> {
      let ended = false;
      await withServer({
        port: 0,
        max: 1,
        session: { lingerMs },
        handler: (session) => {
          for (const packet of packets) void session.send(packet);
        },
        onSessionEnd: () => (ended = true),
      }, async (server) => {
        const client = await Client.connect(server.port);
        client.stopReading();
        await until(() => ended, "the session to end");
        await body(client);
      });
    }

    test("a closed session's queued bytes are dropped once its peer has taken none for lingerMs", TIMEOUT, async () => {
      // More than loopback's kernel buffers hold, so most of it waits in the
      // adapter's queue when the session closes.
      const packet = bytesOf(32 * 1024 * 1024, 7);
      await afterClosingWithQueued([packet], 300, async (client) => {
        // Well past lingerMs (looked at five times per lingerMs) with nothing
        // taken: the connection is dropped with its queue.
        await sleep(1_500);
        client.socket.resume();
        const received = await client.whenClosed(5_000);
        assert.ok(received.length < packet.length, `dropped: ${received.length} of ${packet.length} bytes arrived`);
        assert.deepEqual(received, packet.subarray(0, received.length), "what arrived is the packet's start");
      });
    });

    test("a closed session's queued bytes all reach a peer that keeps taking them", TIMEOUT, async () => {
      const packet = bytesOf(32 * 1024 * 1024, 9);
      await afterClosingWithQueued([packet], undefined, async (client) => {
        client.socket.resume();
        const received = await client.whenClosed(15_000);
        assert.equal(received.length, packet.length);
        assert.deepEqual(received, packet);
      });
    });

    test("a closed session's queued bytes reach a slow peer, however long it takes, while it keeps taking them", {
      ...TIMEOUT,
      skip: transport.lingerProgress === "write" && "the transport sees progress only once a whole write is out",
    }, async () => {
      const packet = bytesOf(64 * 1024, 11);
      const count = 512; // 32 MiB: several times what loopback's kernel buffers hold
      await afterClosingWithQueued(new Array(count).fill(packet), 500, async (client) => {
        // Takes about 1 MiB, then rests 50 ms, and so on: always some
        // progress within lingerMs, and 32 rests take three times as long.
        const started = Date.now();
        let received = 0;
        let resting = false;
        client.socket.on("data", (chunk: Uint8Array) => {
          const before = received;
          received += chunk.length;
          if (resting || Math.floor(received / (1024 * 1024)) === Math.floor(before / (1024 * 1024))) return;
          resting = true;
          client.stopReading();
          setTimeout(() => {
            resting = false;
            client.socket.resume();
          }, 50);
        });
        client.socket.resume();
        const all = await client.whenClosed(15_000);
        assert.equal(all.length, packet.length * count, "every byte arrived");
        assert.ok(Date.now() - started > 1_000, "over a time well past lingerMs");
      });
    });

    test("start and end events match connections under churn", TIMEOUT, async () => {
      let starts = 0;
      let ends = 0;
      const server = await start({
        port: 0,
        max: 5,
        onError: () => {},
        onSessionStart: () => starts++,
        onSessionEnd: () => ends++,
        handler: async (session) => {
          for (;;) {
            const packet = await session.recv();
            if (packet === null) return;
            if (packet[0] === 1) throw new Error("crash");
            await session.send(packet);
            if (packet[0] === 2) return;
          }
        },
      });
      const rounds = 60;
      await Promise.all(Array.from({ length: rounds }, async (_, i) => {
        const client = await Client.connect(server.port);
        if (i % 4 === 0) {
          // Reset once served: a connection reset while it still waits in
          // the kernel's backlog never reaches the server at all (Deno).
          await client.write(new Uint8Array([3]));
          await client.received(1);
          client.reset();
        } else if (i % 4 === 1) client.end();
        else {
          await client.write(new Uint8Array([i % 4 === 2 ? 1 : 2]));
          await client.whenClosed();
        }
      }));
      await until(() => ends === rounds, `${rounds} end events (saw ${ends})`);
      assert.equal(starts, rounds);
      assert.equal(server.status().accepted, rounds);
      const ended = Object.values(server.status().ended).reduce((a, b) => a + b, 0);
      assert.equal(ended, rounds);
      await server.stop();
    });

    test("failed accepts are reported and retried without a busy loop", TIMEOUT, async () => {
      let failuresLeft = 3;
      let accepts = 0;
      const flaky: Transport = {
        name: `${transport.name} with failing accepts`,
        async listen(options) {
          const listener = await transport.listen(options);
          return {
            get localAddress() {
              return listener.localAddress;
            },
            get refused() {
              return listener.refused;
            },
            get waiting() {
              return listener.waiting;
            },
            accept() {
              accepts++;
              if (failuresLeft > 0) {
                failuresLeft--;
                return Promise.reject(Object.assign(new Error("Too many open files"), { code: "EMFILE" }));
              }
              return listener.accept();
            },
            close: () => listener.close(),
          };
        },
      };
      const reported: unknown[] = [];
      const server = await startServer({
        hostname: HOST,
        port: 0,
        max: 2,
        transport: flaky,
        handler: echo,
        onError: (error) => reported.push(error),
      });
      try {
        const client = await Client.connect(server.port);
        await client.write("served");
        assert.equal(new TextDecoder().decode(await client.received(6)), "served");
        assert.equal(reported.length, 3);
        assert.equal((reported[0] as { code?: string }).code, "EMFILE");
        assert.ok(accepts <= 6, `accept was retried ${accepts} times`);
        client.destroy();
      } finally {
        await server.stop();
      }
    });
  });
}
