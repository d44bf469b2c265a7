// Behind a real HAProxy (Debian's `haproxy`, started here in the foreground
// on loopback ports) in TCP mode: `send-proxy` (v1), `send-proxy-v2` with a
// CRC32c and a unique ID, and `send-proxy-v2` in front of a TLS server, each
// with HAProxy's own health checks sending PROXY headers. Clients bind
// distinct loopback addresses (127.0.0.2, 127.0.0.3, …) and must reach the
// handler with them. Run on Node, Deno and Bun, on each runtime's own
// sockets (scripts/test.ts); skipped, saying so, where haproxy is missing.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect, createServer as netServer } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import process from "node:process";
import { join } from "node:path";
import { type Session, type SocketServer, startServer } from "../mod.ts";
import { sleep, TEST_CA, TEST_TLS, until } from "./support/client.ts";

const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
// Debian installs it in /usr/sbin, which a user's PATH may not hold.
const HAPROXY = ["haproxy", "/usr/sbin/haproxy"].find((command) => spawnSync(command, ["-v"], { stdio: "ignore" }).status === 0);
const SKIP = HAPROXY !== undefined ? false : "haproxy is not installed (apt-get install haproxy; .ci/run does)";
const decoder = new TextDecoder();

/** A free loopback port (bound, then released). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = netServer();
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

function whoIs(session: Session): string {
  const id = session.proxyTlvs.get(0x05);
  return `${session.remoteAddress.hostname}:${session.remoteAddress.port} ${session.localAddress.hostname}:${session.localAddress.port}` +
    ` via ${session.proxyAddress?.hostname ?? "-"}${id ? ` id ${decoder.decode(id)}` : ""}${session.encrypted ? " tls" : ""}`;
}

/** Connects from `from` to `port` (over TLS if asked), returns the first line and what echo said. */
function ask(port: number, from: string, tls = false): Promise<{ who: string; echo: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const raw = netConnect({ port, host: "127.0.0.1", localAddress: from });
    const socket = tls ? tlsConnect({ socket: raw, ca: TEST_CA, servername: "localhost" }) : raw;
    let text = "";
    let localPort = 0;
    raw.once("connect", () => (localPort = raw.localPort ?? 0));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer through port ${port} from ${from} (got ${JSON.stringify(text)})`));
    }, 5000);
    socket.setEncoding("utf8");
    socket.on(tls ? "secureConnect" : "connect", () => socket.write("ping\n"));
    socket.on("data", (chunk: string) => {
      text += chunk;
      const lines = text.split("\n");
      if (lines.length < 3) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ who: lines[0], echo: lines[1], localPort });
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe(`${runtime}: behind a real HAProxy`, { skip: SKIP }, () => {
  test("send-proxy, send-proxy-v2 and send-proxy-v2 before TLS: the handler sees each client's own address; health checks pass", {
    timeout: 60_000,
  }, async () => {
    const sessions: string[] = [];
    const handler = async (session: Session) => {
      sessions.push(whoIs(session));
      await session.send(whoIs(session));
      for await (const line of session) await session.send(`echo ${decoder.decode(line)}`);
    };
    const common = { hostname: "127.0.0.1", port: 0, max: 100, packet: "line" as const, handler };
    const plain: SocketServer = await startServer({ ...common, proxyProtocol: { trusted: ["127.0.0.1"] } });
    const secure: SocketServer = await startServer({ ...common, proxyProtocol: { trusted: ["127.0.0.1"] }, tls: TEST_TLS });
    const [v1Port, v2Port, tlsPort] = [await freePort(), await freePort(), await freePort()];
    const directory = mkdtempSync(join(tmpdir(), "pico-haproxy-"));
    const config = join(directory, "haproxy.cfg");
    writeFileSync(config, [
      "global",
      "  maxconn 500",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 30s",
      "  timeout server 30s",
      `frontend v1`,
      `  bind 127.0.0.1:${v1Port}`,
      "  default_backend v1",
      "backend v1",
      `  server s 127.0.0.1:${plain.port} send-proxy check check-send-proxy inter 200ms`,
      `frontend v2`,
      `  bind 127.0.0.1:${v2Port}`,
      "  unique-id-format %ci:%cp",
      "  default_backend v2",
      "backend v2",
      `  server s 127.0.0.1:${plain.port} send-proxy-v2 proxy-v2-options crc32c,unique-id check check-send-proxy inter 200ms`,
      `frontend tls`,
      `  bind 127.0.0.1:${tlsPort}`,
      "  default_backend tls",
      "backend tls",
      `  server s 127.0.0.1:${secure.port} send-proxy-v2 check check-send-proxy check-ssl verify none inter 200ms`,
      "",
    ].join("\n"));
    let proxy: ChildProcess | undefined;
    let stderr = "";
    try {
      proxy = spawn(HAPROXY!, ["-f", config, "-db"], { stdio: ["ignore", "ignore", "pipe"] });
      proxy.stderr!.on("data", (chunk: Uint8Array) => (stderr += decoder.decode(chunk)));
      // Until HAProxy listens and its health checks find the servers up.
      const deadline = Date.now() + 20_000;
      for (;;) {
        try {
          await ask(v1Port, "127.0.0.9");
          await ask(v2Port, "127.0.0.9");
          await ask(tlsPort, "127.0.0.9", true);
          break;
        } catch (error) {
          if (Date.now() > deadline || proxy.exitCode !== null) throw new Error(`HAProxy did not come up: ${error} ${stderr}`);
          await sleep(100);
        }
      }
      const clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
      for (const from of clients) {
        const v1 = await ask(v1Port, from);
        assert.equal(v1.who, `${from}:${v1.localPort} 127.0.0.1:${v1Port} via 127.0.0.1`);
        assert.equal(v1.echo, "echo ping");
        const v2 = await ask(v2Port, from);
        assert.equal(v2.who, `${from}:${v2.localPort} 127.0.0.1:${v2Port} via 127.0.0.1 id ${from}:${v2.localPort}`);
        const overTls = await ask(tlsPort, from, true);
        assert.equal(overTls.who, `${from}:${overTls.localPort} 127.0.0.1:${tlsPort} via 127.0.0.1 tls`);
        assert.equal(overTls.echo, "echo ping");
      }
      // Many at once, from several addresses.
      const many = await Promise.all(Array.from({ length: 24 }, (_, i) => ask([v1Port, v2Port][i % 2], clients[i % 4])));
      assert.ok(many.every((answer, i) => answer.who.startsWith(`${clients[i % 4]}:${answer.localPort} `)));
      // HAProxy's checks (a LOCAL header for v2) were sessions of the balancer itself, never errors.
      await sleep(500);
      assert.equal(plain.status().proxyErrors, 0, `checks and clients all sent valid headers: ${stderr}`);
      assert.equal(secure.status().proxyErrors, 0);
      assert.equal(secure.status().handshakeFailures, 0);
      assert.ok(
        sessions.some((who) => /^127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ via 127\.0\.0\.1/.test(who)),
        "health checks reached the server as the balancer's own sessions",
      );
    } finally {
      proxy?.kill("SIGKILL");
      await plain.stop();
      await secure.stop();
      rmSync(directory, { recursive: true, force: true });
    }
  });
});

test(`${runtime}: examples/behind_proxy.ts greets a client by the address its PROXY header gives`, { timeout: 30_000 }, async () => {
  const script = new URL("../examples/behind_proxy.ts", import.meta.url).pathname;
  const args = runtime === "deno" ? ["run", "-A", "--no-check", script] : [script];
  const child = spawn(process.execPath, args, { env: { ...process.env, PORT: "0" }, stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  child.stdout!.on("data", (chunk: Uint8Array) => (output += decoder.decode(chunk)));
  try {
    await until(() => /on 127\.0\.0\.1:\d+/.test(output), "the example to listen", 20_000);
    const port = Number(output.match(/on 127\.0\.0\.1:(\d+)/)![1]);
    const socket = netConnect(port, "127.0.0.1");
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (text += chunk));
    socket.write("PROXY TCP4 203.0.113.9 127.0.0.1 5555 9925\r\nhi\n");
    await until(() => text.split("\n").length >= 3, "the greeting and the echo");
    assert.equal(text, "hello 203.0.113.9:5555 (via 127.0.0.1)\nhi\n");
    socket.destroy();
  } finally {
    child.kill("SIGKILL");
  }
});
