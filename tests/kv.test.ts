// examples/kv.ts, a Redis-protocol key-value server: its RESP parser at
// every split point of a pipelined batch, and the server driven by the real
// `redis-cli` (Debian's redis-tools; skipped, saying so, where missing), on
// the running runtime's own sockets. Run on Node, Deno and Bun.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { ProtocolError, RespParser, startKv } from "../examples/kv.ts";
import { Client, until } from "./support/client.ts";

const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const REDIS_CLI = spawnSync("redis-cli", ["--version"], { stdio: "ignore" }).status === 0;
const SKIP_CLI = REDIS_CLI ? false : "redis-cli is not installed (apt-get install redis-tools; .ci/run does)";

/** Runs redis-cli with `args` (and `input` on stdin); resolves with its output. */
function redisCli(port: number, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("redis-cli", ["-p", String(port), ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Uint8Array) => (output += decoder.decode(chunk)));
    child.stderr.on("data", (chunk: Uint8Array) => (output += decoder.decode(chunk)));
    child.once("error", reject);
    child.once("close", () => resolve(output.trim()));
    child.stdin.end(input ?? "");
  });
}

function resp(...args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${encoder.encode(arg).length}\r\n${arg}\r\n`).join("")}`;
}

describe(`${runtime}: examples/kv.ts, a RESP server`, () => {
  test("the parser reads a pipelined batch the same at every split point", () => {
    const batch = encoder.encode(
      resp("SET", "key", "a value\r\nwith CRLF inside") + "PING\r\n" + resp("MGET", "key", "", "missing") +
        "ECHO  spaced   words\n" + resp("INCR", "n") + "\r\n",
    );
    const expected = [
      ["SET", "key", "a value\r\nwith CRLF inside"],
      ["PING"],
      ["MGET", "key", "", "missing"],
      ["ECHO", "spaced", "words"],
      ["INCR", "n"],
    ];
    const text = (commands: Uint8Array[][]) => commands.map((command) => command.map((arg) => decoder.decode(arg)));
    for (let cut = 0; cut <= batch.length; cut++) {
      const parser = new RespParser();
      const commands = [...parser.push(batch.subarray(0, cut)), ...parser.push(batch.subarray(cut))];
      assert.deepEqual(text(commands), expected, `cut at ${cut}`);
    }
    const parser = new RespParser();
    const commands = Array.from(batch).flatMap((byte) => parser.push(new Uint8Array([byte])));
    assert.deepEqual(text(commands), expected, "byte by byte");
  });

  test("keys are binary: two invalid UTF-8 keys stay two keys", { timeout: 10_000 }, async () => {
    const server = await startKv(0);
    try {
      const client = await Client.connect(server.port);
      const set = (key: number[], value: string) =>
        new Uint8Array([...encoder.encode("*3\r\n$3\r\nSET\r\n$2\r\n"), ...key, ...encoder.encode(`\r\n$1\r\n${value}\r\n`)]);
      const get = (key: number[]) => new Uint8Array([...encoder.encode("*2\r\n$3\r\nGET\r\n$2\r\n"), ...key, 13, 10]);
      await client.write(new Uint8Array([...set([0xff, 0xfe], "a"), ...set([0xfe, 0xff], "b"), ...get([0xff, 0xfe]), ...get([0xfe, 0xff])]));
      const expected = "+OK\r\n+OK\r\n$1\r\na\r\n$1\r\nb\r\n";
      await client.received(expected.length);
      assert.equal(client.text(), expected);
      client.destroy();
    } finally {
      await server.stop();
    }
  });

  test("the parser refuses bad framing and oversized requests", () => {
    for (const bad of ["*x\r\n", "*1\r\n+OK\r\n", "*1\r\n$2\r\nabc\r\n", "*1\r\n$-5\r\n", "*1\r\n$99999999\r\n", "*9999999999\r\n"]) {
      assert.throws(() => new RespParser().push(encoder.encode(bad)), ProtocolError, JSON.stringify(bad));
    }
    const parser = new RespParser();
    assert.throws(() => parser.push(new Uint8Array(70 * 1024).fill(0x61)), ProtocolError, "an endless inline line");
  });

  test("redis-cli: every command, expiry, errors", { skip: SKIP_CLI, timeout: 30_000 }, async () => {
    const server = await startKv(0);
    const cli = (...args: string[]) => redisCli(server.port, args);
    // redis-cli's own notation: (nil), (integer) n, numbered arrays.
    const shown = (...args: string[]) => redisCli(server.port, ["--no-raw", ...args]);
    try {
      assert.equal(await cli("PING"), "PONG");
      assert.equal(await cli("PING", "hi"), "hi");
      assert.equal(await cli("ECHO", "hello world"), "hello world");
      assert.equal(await cli("SET", "greeting", "hello"), "OK");
      assert.equal(await cli("GET", "greeting"), "hello");
      assert.equal(await shown("GET", "nothing"), "(nil)");
      assert.equal(await cli("EXISTS", "greeting", "nothing", "greeting"), "2");
      assert.equal(await cli("INCR", "counter"), "1");
      assert.equal(await cli("INCR", "counter"), "2");
      assert.match(await cli("INCR", "greeting"), /ERR value is not an integer/);
      assert.equal(await cli("MSET", "a", "1", "b", "2"), "OK");
      assert.equal(await shown("MGET", "a", "b", "c"), '1) "1"\n2) "2"\n3) (nil)');
      assert.equal(await cli("DEL", "a", "b", "c"), "2");
      assert.equal(await shown("MGET", "a", "b"), "1) (nil)\n2) (nil)");
      assert.equal(await shown("EXISTS", "a"), "(integer) 0");
      assert.equal(await cli("SET", "short", "lived", "PX", "150"), "OK");
      assert.equal(await cli("SET", "longer", "lived", "EX", "100"), "OK");
      assert.equal(await cli("GET", "short"), "lived");
      await new Promise((resolve) => setTimeout(resolve, 250));
      assert.equal(await shown("GET", "short"), "(nil)", "expired after 150 ms");
      assert.equal(await cli("GET", "longer"), "lived");
      assert.match(await cli("SET", "k", "v", "EX", "soon"), /ERR value is not an integer/);
      assert.match(await cli("SET", "k"), /ERR wrong number of arguments for 'set'/);
      assert.match(await cli("FLUSHALL"), /ERR unknown command 'FLUSHALL'/);
      assert.equal(await cli("QUIT"), "OK");
    } finally {
      await server.stop();
    }
  });

  test("redis-cli --pipe: a pipelined batch of 10,000 commands, answered in order", { skip: SKIP_CLI, timeout: 30_000 }, async () => {
    const server = await startKv(0);
    try {
      let input = "";
      for (let i = 0; i < 5000; i++) input += resp("SET", `key:${i}`, `value ${i}`) + resp("INCR", "total");
      const report = await redisCli(server.port, ["--pipe"], input);
      assert.match(report, /errors: 0, replies: 10000/);
      assert.equal(await redisCli(server.port, ["GET", "total"]), "5000");
      assert.equal(await redisCli(server.port, ["GET", "key:4999"]), "value 4999");
      // In order: each INCR's answer follows its SET's.
      const client = await Client.connect(server.port);
      await client.write(resp("SET", "x", "1") + resp("INCR", "x") + resp("GET", "x") + "PING\r\n");
      await client.received("+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n".length);
      assert.equal(client.text(), "+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n");
      client.destroy();
    } finally {
      await server.stop();
    }
  });

  test("a protocol error is answered and closes that connection only; a graceful stop lets clients finish", { timeout: 20_000 }, async () => {
    const server = await startKv(0);
    try {
      const bad = await Client.connect(server.port);
      const good = await Client.connect(server.port);
      await bad.write("*1\r\n$-7\r\n");
      const closed = decoder.decode(await bad.whenClosed());
      assert.match(closed, /^-ERR Protocol error: invalid bulk length\r\n$/);
      await good.write("PING\r\n");
      await good.received(7);
      const stopping = server.stop({ timeoutMs: 5000 });
      await good.write("PING\r\n");
      await good.whenClosed();
      assert.deepEqual(await stopping, { ended: 1, closed: 0 });
      await until(() => server.state === "stopped", "stopped");
    } finally {
      await server.stop();
    }
  });
});
