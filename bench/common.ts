// What bench/run.ts (the table) and bench/ab.ts (comparing two builds) share:
// the runtimes' commands, the scenarios, starting and stopping echo servers
// pinned to a CPU, and driving them with the load generator.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import process from "node:process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LoadResult } from "./load.ts";

export type { LoadResult };

/** The repository this file belongs to. */
export const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name: string) => join(root, "node_modules/.bin", name);

export type Runtime = "node" | "deno" | "bun";
export type Kind = "raw" | "pico0" | "pico4" | "erlang";

export const runCommand: Record<Runtime, string[]> = {
  node: [bin("node")],
  deno: [bin("deno"), "run", "-A"],
  bun: [bin("bun")],
};

// With taskset and two cores or more, servers run on CPU 0 and the load
// generator on CPU 1, so they do not take turns on one core: much steadier
// figures than letting the scheduler move them around.
export const CAN_PIN = (() => {
  try {
    execFileSync("sh", ["-c", "command -v taskset"], { stdio: "ignore" });
    return Number(execFileSync("nproc").toString()) >= 2;
  } catch {
    return false;
  }
})();
const pinned = (cpu: number, command: string[]) => (CAN_PIN ? ["taskset", "-c", String(cpu), ...command] : command);
/** The load generator's command: Bun, on CPU 1. */
export const GENERATOR = pinned(1, runCommand.bun);

export interface Scenario {
  name: string;
  label: string;
  load: { scenario: string; connections: number; size: number; inflight: number; tls?: boolean; path?: string; proxy?: boolean };
}

/** How an echo server listens: TCP, TLS over TCP (the test certificate), or a Unix socket. */
export type Listening = "tcp" | "tls" | "unix";
export const SCENARIOS: Scenario[] = [
  { name: "pingpong", label: "ping-pong 64 B × 50 conns", load: { scenario: "pingpong", connections: 50, size: 64, inflight: 1 } },
  { name: "pipe1k", label: "pipelined 1 KiB × 16 in flight", load: { scenario: "pipelined", connections: 8, size: 1024, inflight: 16 } },
  { name: "pipe64k", label: "pipelined 64 KiB × 16 in flight", load: { scenario: "pipelined", connections: 8, size: 65536, inflight: 16 } },
  { name: "churn", label: "churn (connect, 1 round trip, close) × 16", load: { scenario: "churn", connections: 16, size: 64, inflight: 1 } },
];

/**
 * The command of a runtime's raw or pico-socket-server echo server, from the
 * checkout at `dir` (this one unless comparing builds).
 */
export function echoServerCommand(
  runtime: Runtime,
  kind: "raw" | "pico0" | "pico4",
  dir = root,
  listening: Listening = "tcp",
): string[] {
  if (kind === "raw") return [...runCommand[runtime], join(dir, `bench/servers/raw_${runtime}.ts`), listening];
  return [...runCommand[runtime], join(dir, "bench/servers/pico.ts"), kind === "pico0" ? "0" : "4", listening];
}

export interface Server {
  process: ChildProcess;
  port: number;
  /** The Unix socket's path, for a server on one (it prints `PATH <path>`). */
  path?: string;
}

/** Starts an echo server on CPU 0 (or, `anyCpu`, where the scheduler likes); resolves once it prints its port. */
export function startServer(serverCommand: string[], anyCpu = false): Promise<Server> {
  const command = anyCpu ? serverCommand : pinned(0, serverCommand);
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], command.slice(1), { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    const timer = setTimeout(() => reject(new Error(`no port from ${command.join(" ")}`)), 20_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = output.match(/(PORT|PATH) (\S+)\n/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] === "PORT" ? { process: child, port: Number(match[2]) } : { process: child, port: 0, path: match[2] });
      }
    });
    child.once("exit", (code) => reject(new Error(`${command.join(" ")} exited with ${code}`)));
  });
}

export function stopServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    if (server.process.exitCode !== null) return resolve();
    server.process.once("exit", () => resolve());
    server.process.kill("SIGKILL");
  }).then(() => {
    if (server.path !== undefined) rmSync(server.path, { force: true });
  });
}

export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
}

/** CPU time a process has used so far (user + system), in seconds. */
export function cpuSeconds(pid: number): number {
  // Fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second on
  // Linux); the command name (field 2) may hold spaces, so count from ")".
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Runs the load generator (on CPU 1, or `anyCpu` where the scheduler likes)
 * against a port; `generators` processes split the connections.
 */
export function runLoad(
  port: number,
  load: Scenario["load"],
  seconds: number,
  generators = 1,
  anyCpu = false,
): Promise<LoadResult> {
  const share = { ...load, connections: Math.max(1, Math.round(load.connections / generators)) };
  const generator = anyCpu ? runCommand.bun : GENERATOR;
  const one = () =>
    new Promise<LoadResult>((resolve, reject) => {
      const child = spawn(generator[0], [...generator.slice(1), join(root, "bench/load.ts"), JSON.stringify({ ...share, port, seconds })], {
        cwd: root,
        stdio: ["ignore", "pipe", "inherit"],
      });
      let output = "";
      child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.once("exit", (code) => {
        try {
          resolve(JSON.parse(output.trim().split("\n").pop()!));
        } catch {
          reject(new Error(`load generator failed (${code}): ${output}`));
        }
      });
    });
  return Promise.all(Array.from({ length: generators }, one)).then((results) => ({
    messages: results.reduce((n, r) => n + r.messages, 0),
    bytes: results.reduce((n, r) => n + r.bytes, 0),
    seconds: Math.max(...results.map((r) => r.seconds)),
    p50Us: Math.max(...results.map((r) => r.p50Us)),
    p99Us: Math.max(...results.map((r) => r.p99Us)),
    errors: results.reduce((n, r) => n + r.errors, 0),
  }));
}

/**
 * Opens `count` idle sessions on a port from the load generator (on CPU 1),
 * each proven served by one round trip; resolves once all are up, with the
 * function that closes them.
 */
export async function openIdleSessions(port: number, count: number): Promise<() => Promise<void>> {
  const client = spawn(GENERATOR[0], [
    ...GENERATOR.slice(1),
    join(root, "bench/load.ts"),
    JSON.stringify({ scenario: "idle", port, connections: count, size: 8, inflight: 1, seconds: 0 }),
  ], { cwd: root, stdio: ["pipe", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    let output = "";
    client.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("ready")) resolve();
    });
    client.once("exit", (code) => reject(new Error(`idle client exited with ${code}`)));
  });
  return () => {
    const exited = new Promise<void>((resolve) => client.once("exit", () => resolve()));
    client.stdin!.end();
    return exited;
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * The ratios of `mine` to `other` run by run (messages per second): the two
 * ran one right after the other, so a slow spell of the machine mostly hits
 * both, and the ratio of a pair moves less than either rate.
 */
export function pairedRatios(mine: LoadResult[], other: LoadResult[]): number[] {
  const rate = (run: LoadResult) => run.messages / run.seconds;
  return mine.flatMap((run, i) => (other[i] ? [rate(run) / rate(other[i])] : []));
}

/** A number for a table: grouped, with `digits` decimals; "—" when not finite. */
export function fmt(n: number, digits = 0): string {
  return Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "—";
}

/** The lowest and highest of some paired ratios, as "0.90–0.99". */
export function range(ratios: number[]): string {
  return ratios.length > 0 ? `${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)}` : "—";
}

/**
 * Runs one section of `npm run bench` on its own (`npm run bench:<name>`):
 * on BENCH_RUNTIMES, BENCH_SECONDS and BENCH_REPEATS, then writes it to
 * bench/<name>.md under `title` and prints it.
 */
export async function runSectionAlone(
  name: string,
  title: string,
  section: (runtimes: Runtime[], seconds: number, repeats: number) => Promise<string[]>,
  defaultSeconds = 1.2,
): Promise<void> {
  const runtimes = (process.env.BENCH_RUNTIMES?.split(",") ?? ["node", "deno", "bun"]) as Runtime[];
  const started = Date.now();
  const lines = await section(runtimes, Number(process.env.BENCH_SECONDS ?? defaultSeconds), Number(process.env.BENCH_REPEATS ?? 5));
  const text = [
    `# ${title}`,
    "",
    `Made by \`npm run bench:${name}\` on ${new Date().toISOString().slice(0, 10)}, in ${Math.round((Date.now() - started) / 1000)} s (the same section is part of \`npm run bench\`'s results.md).`,
    "",
    ...lines.slice(2),
    "",
  ].join("\n");
  writeFileSync(join(root, `bench/${name}.md`), text);
  console.log(text);
}
