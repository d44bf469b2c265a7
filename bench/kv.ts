// The RESP example (examples/kv.ts) on each runtime against the real
// redis-server, both driven by the real redis-benchmark
// (`-t ping,set,get -c 50 -P 16`), the server on CPU 0 and redis-benchmark on
// CPU 1 as in `npm run bench`: `npm run bench:kv` writes bench/kv.md.
// Needs Debian's redis-server and redis-tools.
import { execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import process from "node:process";
import { CAN_PIN, fmt, median, root, runCommand, type Runtime, type Server, startServer, stopServer } from "./common.ts";

const REQUESTS = Number(process.env.BENCH_KV_REQUESTS ?? 300_000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const TESTS = ["PING_INLINE", "PING_MBULK", "SET", "GET"];

/** Runs redis-benchmark against `port`; requests per second by test. */
function redisBenchmark(port: number): Promise<Record<string, number>> {
  const args = ["-p", String(port), "-t", "ping,set,get", "-c", "50", "-P", "16", "-n", String(REQUESTS), "--csv"];
  const command = CAN_PIN ? ["taskset", "-c", "1", "redis-benchmark", ...args] : ["redis-benchmark", ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], command.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("close", (code) => {
      const rates: Record<string, number> = {};
      for (const line of output.split("\n")) {
        const [name, rps] = line.split(",").map((cell) => cell.replaceAll('"', ""));
        if (TESTS.includes(name)) rates[name] = Number(rps);
      }
      if (Object.keys(rates).length === 0) reject(new Error(`redis-benchmark failed (${code}): ${output}`));
      else resolve(rates);
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

const runtimes = (process.env.BENCH_RUNTIMES?.split(",") ?? ["node", "deno", "bun"]) as Runtime[];
const servers: Array<{ label: string; command: string[] }> = [
  {
    label: `redis-server ${execFileSync("redis-server", ["--version"]).toString().match(/v=(\S+)/)?.[1]}`,
    // It prints no port of its own: given a free one, told as the echo servers tell theirs.
    command: [
      "sh",
      "-c",
      'echo PORT "$0"; exec redis-server --port "$0" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning',
      String(await freePort()),
    ],
  },
  ...runtimes.map((runtime) => ({ label: `kv.ts on ${runtime}`, command: [...runCommand[runtime], join(root, "bench/servers/kv.ts")] })),
];
const started = Date.now();
const results = new Map<string, Record<string, number[]>>();
for (const { label, command } of servers) {
  let server: Server | undefined;
  try {
    server = await startServer(command);
    await redisBenchmark(server.port); // warm-up
    for (let i = 0; i < REPEATS; i++) {
      const rates = await redisBenchmark(server.port);
      const kept = results.get(label) ?? {};
      for (const [name, rate] of Object.entries(rates)) (kept[name] ??= []).push(rate);
      results.set(label, kept);
      console.error(`bench: ${label} #${i + 1}: ${JSON.stringify(rates)}`);
    }
  } finally {
    if (server) await stopServer(server);
  }
}
const redis = results.get(servers[0].label)!;
const lines = [
  "# RESP benchmark",
  "",
  `Made by \`npm run bench:kv\` on ${new Date().toISOString().slice(0, 10)}, in ${Math.round((Date.now() - started) / 1000)} s: \`redis-benchmark -t ping,set,get -c 50 -P 16 -n ${REQUESTS}\` (on CPU 1) against each server (on CPU 0), requests per second, the median of ${REPEATS} runs; in brackets, the ratio to redis-server.`,
  "",
  `| server | ${TESTS.join(" | ")} |`,
  `|---|${TESTS.map(() => "---:").join("|")}|`,
];
for (const { label } of servers) {
  const rates = results.get(label)!;
  const cells = TESTS.map((name) => {
    const rate = median(rates[name] ?? []);
    const ratio = label === servers[0].label ? "" : ` (${fmt(rate / median(redis[name]), 2)})`;
    return `${fmt(rate)}${ratio}`;
  });
  lines.push(`| ${label} | ${cells.join(" | ")} |`);
}
const text = [...lines, ""].join("\n");
writeFileSync(join(root, "bench/kv.md"), text);
console.log(text);
