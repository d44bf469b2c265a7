/**
 * TLS and Unix domain sockets, through an adapter on the running runtime:
 * the same handler, limits and packet types as over TCP, what only TLS has
 * (the handshake, its timeout, ALPN) and what only a socket file has (stale
 * files, a live one, removal). Clients are node:net and node:tls, and where
 * installed the real `openssl s_client`, `socat` and `nc -U`. Run by the
 * `*_adapter.test.ts` files; tests/secure_faults.test.ts runs the fault
 * suite over TLS and Unix sockets.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as netServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type ServerOptions,
  serverPort,
  serverStatus,
  type SessionHandler,
  SocketServerError,
  startServer,
} from "../mod.ts";
import type { SocketServer } from "../mod.ts";
import type { Transport } from "../src/transport.ts";
import { encodePacket, type PacketType } from "../src/framing.ts";
import { concat } from "./support/bytes.ts";
import { Client, type Endpoint, sleep, TEST_TLS, until } from "./support/client.ts";

const TIMEOUT = { timeout: 30_000 };
const CA_FILE = fileURLToPath(
  new URL("./fixtures/tls/ca.pem", import.meta.url),
);
const NODE = fileURLToPath(
  new URL("../node_modules/.bin/node", import.meta.url),
);

const echo: SessionHandler = async (session) => {
  for await (const packet of session) await session.send(packet);
};

function frame(packetType: PacketType, body: Uint8Array | string): Uint8Array {
  return concat(encodePacket(packetType, body));
}

/** Whether a command is installed (`which`). */
function installed(command: string): boolean {
  return spawnSync("which", [command], { stdio: "ignore" }).status === 0;
}

/** A fresh directory for socket files, removed by the returned function. */
function socketDirectory(): {
  path: (name: string) => string;
  remove: () => void;
} {
  const directory = mkdtempSync(join(tmpdir(), "pico-unix-"));
  return {
    path: (name) => join(directory, name),
    remove: () => rmSync(directory, { recursive: true, force: true }),
  };
}

/**
 * Runs a real client (`command args`), feeds it `input`, and resolves with
 * its output once `expected` appears in it (then ends its input), or
 * rejects after `timeoutMs`.
 */
function runClient(
  command: string,
  args: string[],
  input: string,
  expected: RegExp,
  timeoutMs = 10_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `${command} printed no ${expected} within ${timeoutMs} ms; it printed: ${output}`,
        ),
      );
    }, timeoutMs);
    const collect = (chunk: Uint8Array) => {
      output += new TextDecoder().decode(chunk);
      if (expected.test(output)) {
        clearTimeout(timer);
        child.stdin!.end();
        child.kill();
        resolve(output);
      }
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.stdin!.on("error", () => {});
    child.stdin!.write(input);
  });
}

/** A plain node:net server listening on `path`, as another process's live socket. */
function occupyPath(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = netServer((socket) => {
      socket.on("error", () => {}); // our probe connects and leaves at once
      socket.end("other\n");
    });
    server.once("error", reject);
    server.listen({ path }, () => resolve(server));
  });
}

/** Leaves a socket file at `path` that no process listens on, as a crashed server does. */
function leaveStaleSocket(path: string): void {
  const script = `const s = require("node:net").createServer(); s.listen(${
    JSON.stringify(path)
  }, () => process.kill(process.pid, "SIGKILL"));`;
  spawnSync(NODE, ["-e", script]);
}

type Mode = "tls" | "unix" | "tls+unix";

/** Registers the TLS and Unix socket tests against `transport`. */
export function secure(label: string, transport: Transport): void {
  for (const mode of ["tls", "unix", "tls+unix"] as Mode[]) {
    describe(`${label} (${mode}): the same server`, () => {
      const tls = mode !== "unix";
      const unix = mode !== "tls";
      let serial = 0;

      /** Starts a server in this mode; the endpoint reaches it. */
      async function start(
        options: Omit<
          ServerOptions,
          "transport" | "hostname" | "port" | "path"
        >,
      ): Promise<
        { server: SocketServer; endpoint: Endpoint; done: () => Promise<void> }
      > {
        const directory = unix ? socketDirectory() : undefined;
        const path = directory?.path(`s${++serial}.sock`);
        const server = await startServer({
          transport,
          ...(path !== undefined ? { path } : { hostname: "127.0.0.1", port: 0 }),
          ...(tls ? { tls: TEST_TLS } : {}),
          ...options,
        });
        const endpoint: Endpoint = path !== undefined ? { path, tls } : { port: server.port, tls };
        return {
          server,
          endpoint,
          done: async () => {
            await server.stop();
            directory?.remove();
          },
        };
      }

      for (const packetType of [0, 1, 2, 4, "line"] as PacketType[]) {
        test(
          `packet ${packetType}: byte by byte and many per chunk, echoed whole`,
          TIMEOUT,
          async () => {
            const { endpoint, done } = await start({
              max: 2,
              handler: echo,
              packet: packetType,
              packetSize: 1024,
            });
            try {
              const bodies = ["one", "", "three", "x".repeat(200)];
              const wire = concat(
                bodies.map((body) => frame(packetType, body)),
              );
              const expected = wire;
              const client = await Client.connect(endpoint);
              await client.writeByteByByte(wire.subarray(0, 12));
              await client.write(wire.subarray(12));
              assert.deepEqual(
                await client.received(expected.length),
                expected,
              );
              client.destroy();
            } finally {
              await done();
            }
          },
        );
      }

      test(
        "max bounds the sessions; waiting clients are served as slots free",
        TIMEOUT,
        async () => {
          let live = 0;
          let peak = 0;
          const { endpoint, done } = await start({
            max: 2,
            packet: "line",
            handler: async (session) => {
              await session.send("hi");
              await session.recv();
            },
            onSessionStart: () => void (peak = Math.max(peak, ++live)),
            onSessionEnd: () => void live--,
          });
          try {
            const clients = await Client.connectMany(endpoint, 6);
            for (const client of clients) {
              await client.received(3);
              await client.write("bye\n");
              await client.whenClosed();
            }
            assert.equal(peak, 2);
          } finally {
            await done();
          }
        },
      );

      test(
        "a graceful stop lets a session finish; a peer reset ends only its session",
        TIMEOUT,
        async () => {
          const ended: string[] = [];
          const { server, endpoint, done } = await start({
            max: 4,
            handler: async (session) => {
              for await (const packet of session) {
                if (session.signal.aborted) {
                  await session.send("done");
                  return;
                }
                await session.send(packet);
              }
            },
            onSessionEnd: (_session, reason) => void ended.push(reason),
          });
          try {
            const doomed = await Client.connect(endpoint);
            await doomed.write("a");
            await doomed.received(1);
            doomed.reset();
            await until(() => ended.length === 1, "the reset session to end");
            assert.ok(
              ended[0] === "socket_error" || ended[0] === "socket_closed",
              ended[0],
            );
            const client = await Client.connect(endpoint);
            await client.write("b");
            await client.received(1);
            const stopping = server.stop({ timeoutMs: 5000 });
            await sleep(50);
            await client.write("c");
            assert.equal(
              new TextDecoder().decode(await client.received(5)),
              "bdone",
            );
            assert.deepEqual(await stopping, { ended: 1, closed: 0 });
          } finally {
            await done();
          }
        },
      );

      test(
        "a peer that never reads: the session's sends wait, and go on once it reads",
        {
          ...TIMEOUT,
          // tests/secure_faults.test.ts runs never-reading TLS peers on Node against servers on Deno.
          skip: tls && process.versions.deno !== undefined
            ? "Deno's node:tls client (tls.connect over a net.Socket) reads on while paused: it cannot play a peer that never reads"
            : false,
        },
        async () => {
          const chunk = new Uint8Array(64 * 1024).fill(0x5a);
          let sent = 0;
          const { endpoint, done } = await start({
            max: 1,
            handler: async (session) => {
              for (let i = 0; i < 320; i++) {
                await session.send(chunk);
                sent++;
              }
            },
          });
          try {
            const client = await Client.connect(endpoint);
            await client.secured();
            client.stopReading();
            await sleep(300);
            assert.ok(
              sent < 320,
              `all ${sent} sends were taken while the peer read nothing`,
            );
            client.socket.resume();
            client.raw.resume();
            await client.received(320 * chunk.length, 20_000);
            assert.equal(sent, 320);
            client.destroy();
          } finally {
            await done();
          }
        },
      );

      test(
        `session.encrypted is ${tls}; the status counts no handshake failure`,
        TIMEOUT,
        async () => {
          const { server, endpoint, done } = await start({
            max: 1,
            handler: async (session) => {
              await session.send(
                `${session.encrypted} ${session.alpnProtocol}`,
              );
            },
          });
          try {
            const client = await Client.connect(endpoint);
            assert.equal(
              new TextDecoder().decode(await client.whenClosed()),
              `${tls} null`,
            );
            const status = server.status();
            assert.equal(status.handshakeFailures, 0);
            assert.equal(status.handshaking, 0);
          } finally {
            await done();
          }
        },
      );
    });
  }

  describe(`${label}: TLS`, () => {
    async function withTls(
      options: Omit<ServerOptions, "transport" | "hostname" | "port">,
      body: (server: SocketServer) => Promise<void>,
    ): Promise<void> {
      const server = await startServer({
        transport,
        hostname: "127.0.0.1",
        port: 0,
        tls: TEST_TLS,
        ...options,
      });
      try {
        await body(server);
      } finally {
        await server.stop();
      }
    }

    test(
      "ALPN: the session gets the protocol agreed, or null when the client offers none",
      TIMEOUT,
      async () => {
        await withTls({
          max: 2,
          tls: { ...TEST_TLS, alpnProtocols: ["echo/2", "echo/1"] },
          handler: (session) => session.send(`${session.alpnProtocol}`),
        }, async (server) => {
          const offering = await Client.connect({
            port: server.port,
            tls: true,
            alpn: ["echo/1"],
          });
          assert.equal(
            new TextDecoder().decode(await offering.whenClosed()),
            "echo/1",
          );
          const silent = await Client.connect({ port: server.port, tls: true });
          assert.equal(
            new TextDecoder().decode(await silent.whenClosed()),
            "null",
          );
        });
      },
    );

    test(
      "handshakes that stall or fail time out, free their slot, start no session and are counted",
      TIMEOUT,
      async () => {
        const started: number[] = [];
        const errors: unknown[] = [];
        await withTls({
          max: 1,
          handshakeTimeoutMs: 300,
          handler: echo,
          onSessionStart: (session) => void started.push(session.id),
          onSessionEnd: (session) => void started.push(-session.id),
          onError: (error) => void errors.push(error),
        }, async (server) => {
          // One opens TCP and sends nothing; one sends half a ClientHello; one is not TLS at all.
          const startedAt = Date.now();
          const silent = await Client.connect(server.port);
          await until(
            () => server.status().handshaking === 1,
            "the silent peer's handshake to hold the slot",
          );
          const waiting = await Client.connect(server.port);
          await waiting.write(
            new Uint8Array([
              0x16,
              0x03,
              0x01,
              0x00,
              0xc8,
              0x01,
              0x00,
              0x00,
              0xc4,
              0x03,
              0x03,
            ]),
          );
          const garbage = await Client.connect(server.port);
          await garbage.write("GET / HTTP/1.0\r\n\r\n");
          // The silent peer's handshake holds the one slot: the others wait, unread.
          await sleep(100);
          assert.equal(garbage.closed, false, "the garbage waits while the slot is taken");
          assert.equal(server.status().handshaking, 1);
          assert.ok(
            await silent.closesWithin(3000),
            "the silent peer is closed",
          );
          assert.ok(Date.now() - startedAt >= 280, "not before the timeout (300 ms)");
          assert.ok(
            await waiting.closesWithin(3000),
            "the half hello is closed",
          );
          assert.ok(await garbage.closesWithin(3000), "the garbage is closed");
          const honest = await Client.connect({ port: server.port, tls: true });
          await honest.write("still served");
          assert.equal(
            new TextDecoder().decode(await honest.received(12)),
            "still served",
          );
          const status = server.status();
          assert.equal(status.handshakeFailures, 3);
          assert.equal(status.num, 1);
          assert.equal(
            started.length,
            1,
            "only the honest client started a session",
          );
          assert.deepEqual(errors, [], "handshake failures are not errors");
          honest.destroy();
        });
      },
    );

    test("stop() closes connections in their handshake", TIMEOUT, async () => {
      await withTls({ max: 2, handler: echo }, async (server) => {
        const silent = await Client.connect(server.port);
        await until(
          () => server.status().handshaking === 1,
          "the handshake to start",
        );
        assert.deepEqual(await server.stop({ timeoutMs: 1000 }), {
          ended: 0,
          closed: 0,
        });
        assert.ok(await silent.closesWithin(3000));
      });
    });

    test(
      "a bad certificate or key, and bad TLS options, reject the start",
      TIMEOUT,
      async () => {
        const cases: Array<[ServerOptions["tls"], string]> = [
          [
            { cert: "not a certificate", key: TEST_TLS.key },
            "invalid_argument",
          ],
          [
            { cert: TEST_TLS.cert, key: TEST_TLS.key, alpnProtocols: [""] },
            "invalid_argument",
          ],
          [null as unknown as ServerOptions["tls"], "invalid_argument"],
        ];
        for (const [tls, code] of cases) {
          await assert.rejects(
            startServer({
              transport,
              hostname: "127.0.0.1",
              port: 0,
              max: 1,
              handler: echo,
              tls,
            }),
            (error: unknown) => error instanceof SocketServerError && error.code === code,
          );
        }
        // PEM that is no key, and the key of another certificate (the CA's): refused before binding.
        const broken = TEST_TLS.key.replace(/[A-Za-z]{8}\n/, "AAAAAAAA\n");
        const otherKey = readFileSync(new URL("./fixtures/tls/ca.key", import.meta.url), "utf8");
        for (const [key, message] of [[broken, /tls\.key holds no private key/], [otherKey, /not the private key/]] as const) {
          await assert.rejects(
            startServer({ transport, hostname: "127.0.0.1", port: 0, max: 1, handler: echo, tls: { cert: TEST_TLS.cert, key } }),
            (error: unknown) =>
              error instanceof SocketServerError && error.code === "invalid_argument" && message.test(error.message),
          );
        }
      },
    );

    test("openssl s_client completes a handshake with ALPN and gets an echo", {
      ...TIMEOUT,
      skip: installed("openssl") ? false : "openssl is not installed (apt-get install openssl)",
    }, async () => {
      await withTls({
        max: 2,
        tls: { ...TEST_TLS, alpnProtocols: ["echo/1"] },
        handler: echo,
      }, async (server) => {
        const output = await runClient(
          "openssl",
          [
            "s_client",
            "-connect",
            `127.0.0.1:${server.port}`,
            "-servername",
            "localhost",
            "-CAfile",
            CA_FILE,
            "-verify_return_error",
            "-alpn",
            "echo/1",
            "-no_ign_eof",
          ],
          "hello from openssl\n",
          /^hello from openssl$/m,
        );
        assert.match(output, /ALPN protocol: echo\/1/);
        assert.match(output, /Verify return code: 0 \(ok\)/);
      });
    });
  });

  describe(`${label}: Unix domain sockets`, () => {
    test(
      "path: server.path, port 0, the default name, and stop() removes the file",
      TIMEOUT,
      async () => {
        const directory = socketDirectory();
        try {
          const path = directory.path("app.sock");
          const server = await startServer({
            transport,
            path,
            max: 2,
            handler: echo,
          });
          try {
            assert.equal(server.path, path);
            assert.equal(server.port, 0);
            assert.equal(server.name, `picoSocketServer_${path}`);
            assert.equal(await serverPort(server.name), 0);
            assert.equal((await serverStatus(server.name)).path, path);
            assert.ok(existsSync(path));
            const client = await Client.connect({ path });
            await client.write("x");
            await client.received(1);
            await server.suspend();
            assert.ok(!existsSync(path), "suspend releases the path");
            await server.resume();
            const again = await Client.connect({ path });
            await again.write("y");
            await again.received(1);
            client.destroy();
            again.destroy();
          } finally {
            await server.stop();
          }
          assert.ok(!existsSync(path), "stop removes the socket file");
        } finally {
          directory.remove();
        }
      },
    );

    test(
      "a stale socket file is replaced; a live one, or a file that is no socket, is EADDRINUSE",
      TIMEOUT,
      async () => {
        const directory = socketDirectory();
        try {
          const stale = directory.path("stale.sock");
          leaveStaleSocket(stale);
          assert.ok(
            existsSync(stale),
            "the crashed process left its socket file",
          );
          const server = await startServer({
            transport,
            path: stale,
            max: 1,
            handler: echo,
          });
          try {
            const client = await Client.connect({ path: stale });
            await client.write("z");
            assert.equal(
              new TextDecoder().decode(await client.received(1)),
              "z",
            );
            client.destroy();
          } finally {
            await server.stop();
          }

          const live = directory.path("live.sock");
          const other = await occupyPath(live);
          try {
            await assert.rejects(
              startServer({ transport, path: live, max: 1, handler: echo }),
              (error: unknown) =>
                error instanceof SocketServerError &&
                error.code === "EADDRINUSE" && error.message.includes(live),
            );
            const survivor = await Client.connect({ path: live });
            assert.equal(
              new TextDecoder().decode(await survivor.whenClosed()),
              "other\n",
              "the live server still serves",
            );
          survivor.destroy();
          } finally {
            await new Promise((resolve) => other.close(resolve));
          }

          const file = directory.path("notes.txt");
          writeFileSync(file, "keep me");
          await assert.rejects(
            startServer({ transport, path: file, max: 1, handler: echo }),
            (error: unknown) => error instanceof SocketServerError && error.code === "EADDRINUSE",
          );
          assert.ok(
            existsSync(file),
            "a file that is not a socket is never removed",
          );
        } finally {
          directory.remove();
        }
      },
    );

    test(
      "path with a port, an overlong path, and a missing directory are refused clearly",
      TIMEOUT,
      async () => {
        await assert.rejects(
          startServer({
            transport,
            path: "/tmp/x.sock",
            port: 8080,
            max: 1,
            handler: echo,
          }),
          (error: unknown) =>
            error instanceof SocketServerError &&
            error.code === "invalid_argument",
        );
        await assert.rejects(
          startServer({
            transport,
            path: `/tmp/${"x".repeat(120)}.sock`,
            max: 1,
            handler: echo,
          }),
          (error: unknown) =>
            error instanceof SocketServerError &&
            error.code === "invalid_argument" &&
            /107 bytes/.test(error.message),
        );
        await assert.rejects(
          startServer({
            transport,
            path: "/nonexistent-dir/x.sock",
            max: 1,
            handler: echo,
          }),
          (error: unknown) =>
            error instanceof SocketServerError &&
            error.message.includes("/nonexistent-dir/x.sock"),
        );
      },
    );

    for (
      const [tool, args] of [["socat", ["-", "UNIX-CONNECT:"]], ["nc", [
        "-U",
        "-q",
        "1",
      ]]] as const
    ) {
      test(`${tool} reaches a session on the socket`, {
        ...TIMEOUT,
        skip: installed(tool)
          ? false
          : `${tool} is not installed (apt-get install ${tool === "nc" ? "netcat-openbsd" : tool})`,
      }, async () => {
        const directory = socketDirectory();
        try {
          const path = directory.path("tool.sock");
          const server = await startServer({
            transport,
            path,
            max: 1,
            packet: "line",
            handler: echo,
          });
          try {
            const argv = tool === "socat" ? [args[0], `${args[1]}${path}`] : [...args, path];
            const output = await runClient(
              tool,
              argv,
              `hello from ${tool}\n`,
              new RegExp(`hello from ${tool}\\n`),
            );
            assert.equal(output, `hello from ${tool}\n`);
          } finally {
            await server.stop();
          }
        } finally {
          directory.remove();
        }
      });
    }
  });
}
