// `npm run bench`: pico-socket-server against each runtime's own raw sockets,
// side by side in one run, on loopback. For each runtime (Node, Deno, Bun) it
// starts a raw echo server, pico-socket-server with packet type 0 and with
// packet type 4, and (where `erl` can be had) an Erlang/OTP {packet, 4}
// server, drives each with the same load generator (bench/load.ts, run by
// Bun), alternating servers and taking the median of REPEATS runs (five
// short runs rather than three long ones are steadier on a shared machine:
// their median shrugs off two slow spells, that of three only one). Writes
// bench/results.md and bench/chart.svg.
//
//   npm run bench              # the whole table (a few minutes)
//   BENCH_SECONDS=1 BENCH_REPEATS=1 npm run bench   # a quick look
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  CAN_PIN,
  echoServerCommand,
  fmt,
  type Kind,
  type LoadResult,
  median,
  openIdleSessions,
  pairedRatios as pairRatios,
  range,
  root,
  rssKiB,
  runCommand,
  runLoad,
  type Runtime,
  type Scenario,
  SCENARIOS,
  type Server,
  startServer,
  stopServer,
} from "./common.ts";
import { secureSection } from "./secure.ts";
import { scalingSection } from "./scaling.ts";
import { proxySection } from "./proxy.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 1.2);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const IDLE_SESSIONS = Number(process.env.BENCH_IDLE ?? 10_000);

// BENCH_RUNTIMES=node,bun narrows a run; BENCH_ERLANG=0 and BENCH_IDLE=0 leave
// those parts out (for quick looks while optimising, not for the table).
const RUNTIMES = (process.env.BENCH_RUNTIMES?.split(",") ?? ["node", "deno", "bun"]) as Runtime[];

// --- Servers

let erlangDir: string | undefined;

/** Finds or installs `erl` (Debian's erlang-base), compiles echo.erl. */
function prepareErlang(): boolean {
  const has = (command: string) => {
    try {
      execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  if (!has("erl") && process.getuid?.() === 0 && has("apt-get")) {
    console.error("bench: installing Debian's erlang-base for the Erlang/OTP baseline...");
    try {
      execFileSync("sh", ["-c", "apt-get install -y -qq erlang-base >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq erlang-base >/dev/null 2>&1)"], { stdio: "ignore", timeout: 240_000 });
    } catch {
      // reported below
    }
  }
  if (!has("erlc") && !has("erl")) {
    console.error("bench: no Erlang/OTP here (apt-get install erlang-base); its column is left out");
    return false;
  }
  erlangDir = mkdtempSync(join(tmpdir(), "pico-bench-erl-"));
  execFileSync("erl", ["-noshell", "-eval", `{ok, _} = compile:file("${join(root, "bench/servers/echo.erl")}", [{outdir, "${erlangDir}"}]), halt().`]);
  return true;
}

async function idleMemory(command: string[]): Promise<number> {
  const server = await startServer(command);
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = rssKiB(server.process.pid!);
    const closeSessions = await openIdleSessions(server.port, IDLE_SESSIONS);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = rssKiB(server.process.pid!);
    await closeSessions();
    return ((after - before) * 1024) / IDLE_SESSIONS;
  } finally {
    await stopServer(server);
  }
}

function serverCommand(runtime: Runtime | "erlang", kind: Kind): string[] {
  if (kind === "erlang") return ["erl", "+K", "true", "-noshell", "-pa", erlangDir!, "-s", "echo", "main"];
  return echoServerCommand(runtime as Runtime, kind);
}

// --- Run

const started = Date.now();
const haveErlang = process.env.BENCH_ERLANG !== "0" && prepareErlang();
const targets: Array<{ runtime: Runtime | "erlang"; kind: Kind }> = [
  ...RUNTIMES.flatMap((runtime) => (["raw", "pico0", "pico4"] as Kind[]).map((kind) => ({ runtime, kind }))),
  ...(haveErlang ? [{ runtime: "erlang" as const, kind: "erlang" as Kind }] : []),
];
const key = (runtime: string, kind: string, scenario: string) => `${runtime}/${kind}/${scenario}`;
const samples = new Map<string, LoadResult[]>();

const versions: Record<string, string> = {};
for (const runtime of RUNTIMES) {
  versions[runtime] = execFileSync(runCommand[runtime][0], ["--version"]).toString().split("\n")[0].trim();
}
if (haveErlang) {
  versions.erlang = "OTP " + execFileSync("erl", ["-noshell", "-eval", 'io:format("~s", [erlang:system_info(otp_release)]), halt().']).toString();
}

// Throughput: the servers of one runtime run side by side (idle when not
// driven); each scenario drives raw, pico0 and pico4 in turn, REPEATS times,
// and the Erlang server right after pico4 (right before it in the reversed
// repeats), so that each runtime's packet 4 server and Erlang's are compared
// run by run too, not only across the minutes between two groups.
for (const runtime of RUNTIMES) {
  const kinds = [...targets.filter((t) => t.runtime === runtime).map((t) => t.kind), ...(haveErlang ? ["erlang" as Kind] : [])];
  const servers = new Map<Kind, Server>();
  for (const kind of kinds) servers.set(kind, await startServer(serverCommand(runtime, kind)));
  try {
    for (const kind of kinds) await runLoad(servers.get(kind)!.port, SCENARIOS[0].load, 0.5); // warm-up (JIT)
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const scenario of SCENARIOS) {
        // Every other repeat in reverse, so no server always runs right after another.
        for (const kind of repeat % 2 === 0 ? kinds : [...kinds].reverse()) {
          const result = await runLoad(servers.get(kind)!.port, scenario.load, SECONDS);
          const k = key(runtime, kind, scenario.name);
          samples.set(k, [...(samples.get(k) ?? []), result]);
          // Erlang's overall figures: its runs beside every runtime.
          if (kind === "erlang") {
            const all = key("erlang", "erlang", scenario.name);
            samples.set(all, [...(samples.get(all) ?? []), result]);
          }
          console.error(`bench: ${k} #${repeat + 1}: ${Math.round(result.messages / result.seconds)} msg/s`);
        }
      }
    }
  } finally {
    for (const server of servers.values()) await stopServer(server);
  }
}

// Is the generator the bottleneck? Raw servers run faster than the library
// ones under the same generator; and here, two generator processes splitting
// the same load against the Node raw server.
const generatorCheck: Array<{ generators: number; rate: number }> = [];
{
  const server = await startServer(serverCommand("node", "raw"));
  try {
    await runLoad(server.port, SCENARIOS[0].load, 0.5);
    for (const generators of [1, 2, 1, 2, 1, 2]) {
      const result = await runLoad(server.port, SCENARIOS[0].load, SECONDS, generators);
      generatorCheck.push({ generators, rate: result.messages / result.seconds });
    }
  } finally {
    await stopServer(server);
  }
}

// Idle sessions: resident memory per session, fresh servers. The servers
// take turns (raw, p0, p4, ..., then again), so a change in the machine's
// state between repeats reaches every server alike.
const idle = new Map<string, number>();
const idleSamples = new Map<string, number[]>();
for (let repeat = 0; repeat < Math.min(REPEATS, 3); repeat++) {
  for (const { runtime, kind } of IDLE_SESSIONS > 0 ? targets : []) {
    const perSession = idleSamples.get(`${runtime}/${kind}`) ?? [];
    perSession.push(await idleMemory(serverCommand(runtime, kind)));
    idleSamples.set(`${runtime}/${kind}`, perSession);
  }
}
for (const [target, perSession] of idleSamples) {
  idle.set(target, median(perSession));
  console.error(`bench: ${target} idle: ${Math.round(median(perSession))} B/session`);
}

// Decoder microbenchmark, per runtime: the median of three processes (how
// fast large packets are joined depends on how the process's allocator
// happens to serve their buffers, which differs from one process to the next).
type DecoderResult = { small: { mbPerSecond: number; packetsPerSecond: number }; large: { mbPerSecond: number } };
const decoder = new Map<Runtime, DecoderResult>();
for (const runtime of RUNTIMES) {
  const command = runCommand[runtime];
  const runs: DecoderResult[] = [];
  for (let i = 0; i < 3; i++) {
    const output = execFileSync(command[0], [...command.slice(1), join(root, "bench/decoder.ts")], { cwd: root }).toString();
    runs.push(JSON.parse(output.trim().split("\n").pop()!));
  }
  const small = median(runs.map((r) => r.small.mbPerSecond));
  decoder.set(runtime, {
    small: runs.find((r) => r.small.mbPerSecond === small)!.small,
    large: { mbPerSecond: median(runs.map((r) => r.large.mbPerSecond)) },
  });
}

// TLS and Unix sockets: their own section (bench/secure.ts). BENCH_SECURE=0 leaves it out.
const secureLines = process.env.BENCH_SECURE === "0" ? [] : await secureSection(RUNTIMES, SECONDS, REPEATS);
// Behind a load balancer: PROXY headers or not (bench/proxy.ts). BENCH_PROXY=0 leaves it out.
const proxyLines = process.env.BENCH_PROXY === "0" ? [] : await proxySection(RUNTIMES, SECONDS, REPEATS);
// Using every core: workers 1 and 2 (bench/scaling.ts). BENCH_SCALING=0 leaves it out.
const scalingLines = process.env.BENCH_SCALING === "0" ? [] : await scalingSection(RUNTIMES, SECONDS, REPEATS);

// --- Report

interface Row {
  runtime: string;
  kind: Kind;
  scenario: Scenario;
  rate: number;
  mbps: number;
  p50: number;
  p99: number;
  errors: number;
}
const rows: Row[] = [];
for (const { runtime, kind } of targets) {
  for (const scenario of SCENARIOS) {
    const runs = samples.get(key(runtime, kind, scenario.name)) ?? [];
    if (runs.length === 0) continue;
    rows.push({
      runtime,
      kind,
      scenario,
      rate: median(runs.map((r) => r.messages / r.seconds)),
      mbps: median(runs.map((r) => r.bytes / r.seconds / 1e6)),
      p50: median(runs.map((r) => r.p50Us)),
      p99: median(runs.map((r) => r.p99Us)),
      errors: runs.reduce((n, r) => n + r.errors, 0),
    });
  }
}
const rowOf = (runtime: string, kind: Kind, scenario: string) =>
  rows.find((r) => r.runtime === runtime && r.kind === kind && r.scenario.name === scenario);
/** `kind` / `against` (raw, or Erlang beside packet 4), repeat by repeat. */
const pairedRatios = (runtime: string, kind: Kind, scenario: string, against: Kind = "raw"): number[] =>
  pairRatios(samples.get(key(runtime, kind, scenario)) ?? [], samples.get(key(runtime, against, scenario)) ?? []);
/** The median of the paired ratios. */
const ratio = (runtime: string, kind: Kind, scenario: string) => {
  const ratios = pairedRatios(runtime, kind, scenario);
  return ratios.length > 0 ? median(ratios) : NaN;
};
const kindLabel: Record<Kind, string> = { raw: "raw", pico0: "pico, packet 0", pico4: "pico, packet 4", erlang: "Erlang {packet,4}" };

const lines: string[] = [];
lines.push("# Benchmark results", "");
lines.push(`Made by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}, in ${Math.round((Date.now() - started) / 1000)} s, on this machine: ${process.platform} ${process.arch}, ${execFileSync("nproc").toString().trim()} cores.`);
lines.push(`Runtimes: ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join("; ")}.`);
lines.push(`Each figure is the median of ${REPEATS} runs of ${SECONDS} s, servers of a runtime driven in turn (raw, packet 0, packet 4${haveErlang ? ", Erlang" : ""}; every other repeat in reverse order) by the same load generator (bench/load.ts on Bun), all on 127.0.0.1${CAN_PIN ? ", servers pinned to CPU 0 and the generator to CPU 1 (taskset)" : ""}. Every message carries a 4-byte length header, so raw echo servers, packet 0 and packet 4 servers see the same bytes. A ratio is pico-socket-server / the same runtime's raw server: the median over the repeats of the ratio of their back-to-back runs.`, "");
lines.push("## Ratios (pico-socket-server / raw, messages per second)", "");
const ratioHeader = `| runtime | ${SCENARIOS.map((s) => `${s.name} p0`).join(" | ")} | ${SCENARIOS.map((s) => `${s.name} p4`).join(" | ")} |`;
const ratioRule = `|---|${SCENARIOS.map(() => "---:").join("|")}|${SCENARIOS.map(() => "---:").join("|")}|`;
lines.push(ratioHeader, ratioRule);
for (const runtime of RUNTIMES) {
  lines.push(`| ${runtime} | ${SCENARIOS.map((s) => fmt(ratio(runtime, "pico0", s.name), 2)).join(" | ")} | ${SCENARIOS.map((s) => fmt(ratio(runtime, "pico4", s.name), 2)).join(" | ")} |`);
}
lines.push("", `Lowest and highest of the ${REPEATS} paired ratios (how much this machine moved during the run):`, "", ratioHeader, ratioRule);
for (const runtime of RUNTIMES) {
  lines.push(`| ${runtime} | ${SCENARIOS.map((s) => range(pairedRatios(runtime, "pico0", s.name))).join(" | ")} | ${SCENARIOS.map((s) => range(pairedRatios(runtime, "pico4", s.name))).join(" | ")} |`);
}
if (haveErlang) {
  lines.push("", "## Against Erlang/OTP {packet, 4}", "");
  lines.push(`pico-socket-server with packet type 4 / the Erlang \`gen_tcp\` \`{packet, 4}\` server (bench/servers/echo.erl), messages per second: the median of the ${REPEATS} ratios of back-to-back runs in the same runtime's group, with the lowest and highest. Above 1.00 the runtime is ahead.`, "");
  lines.push(`| runtime | ${SCENARIOS.map((s) => s.name).join(" | ")} |`, `|---|${SCENARIOS.map(() => "---:").join("|")}|`);
  for (const runtime of RUNTIMES) {
    const cell = (scenario: string) => {
      const ratios = pairedRatios(runtime, "pico4", scenario, "erlang");
      return ratios.length > 0 ? `${fmt(median(ratios), 2)} (${range(ratios)})` : "—";
    };
    lines.push(`| ${runtime} | ${SCENARIOS.map((s) => cell(s.name)).join(" | ")} |`);
  }
}
lines.push("", "## Throughput and latency", "");
lines.push("| scenario | runtime | server | messages/s | MB/s | p50 µs | p99 µs | vs raw |");
lines.push("|---|---|---|---:|---:|---:|---:|---:|");
for (const scenario of SCENARIOS) {
  for (const row of rows.filter((r) => r.scenario === scenario)) {
    const vs = row.kind === "raw" || row.kind === "erlang" ? "" : fmt(ratio(row.runtime, row.kind, scenario.name), 2);
    lines.push(`| ${scenario.label} | ${row.runtime} | ${kindLabel[row.kind]} | ${fmt(row.rate)} | ${fmt(row.mbps, 1)} | ${fmt(row.p50)} | ${fmt(row.p99)} | ${vs}${row.errors ? ` (${row.errors} errors)` : ""} |`);
  }
}
if (secureLines.length > 0) lines.push("", ...secureLines);
if (proxyLines.length > 0) lines.push("", ...proxyLines);
if (scalingLines.length > 0) lines.push("", ...scalingLines);
lines.push("", `## Idle sessions (${IDLE_SESSIONS.toLocaleString("en-US")} connections held open)`, "");
lines.push("Resident memory growth of the server process per connection (median of fresh servers).", "");
lines.push("| runtime | raw B/session | pico p0 B/session | pico p4 B/session | pico p0 / raw |");
lines.push("|---|---:|---:|---:|---:|");
for (const runtime of RUNTIMES) {
  const raw = idle.get(`${runtime}/raw`)!;
  const p0 = idle.get(`${runtime}/pico0`)!;
  lines.push(`| ${runtime} | ${fmt(raw)} | ${fmt(p0)} | ${fmt(idle.get(`${runtime}/pico4`)!)} | ${fmt(p0 / raw, 2)} |`);
}
if (haveErlang) lines.push("", `Erlang/OTP {packet, 4}: ${fmt(idle.get("erlang/erlang")!)} B/session.`);
lines.push("", "## Packet decoder alone (packet type 4, 64 KiB chunks, median of 3 processes)", "");
lines.push("| runtime | 64 B packets: MB/s | 64 B packets: packets/s | 1 MiB packets: MB/s |");
lines.push("|---|---:|---:|---:|");
for (const runtime of RUNTIMES) {
  const d = decoder.get(runtime)!;
  lines.push(`| ${runtime} | ${fmt(d.small.mbPerSecond)} | ${fmt(d.small.packetsPerSecond)} | ${fmt(d.large.mbPerSecond)} |`);
}
lines.push("", "## Is the load generator the bottleneck?", "");
lines.push("Ping-pong against Node's raw server with the same load from one generator process and split over two:", "");
lines.push("| generators | messages/s (each run) | median |");
lines.push("|---:|---|---:|");
for (const generators of [1, 2]) {
  const rates = generatorCheck.filter((g) => g.generators === generators).map((g) => g.rate);
  lines.push(`| ${generators} | ${rates.map((r) => fmt(r)).join(", ")} | ${fmt(median(rates))} |`);
}
lines.push("", "![pico-socket-server / raw](chart.svg)", "");
writeFileSync(join(root, "bench/results.md"), lines.join("\n"));
writeFileSync(join(root, "bench/chart.svg"), chart());
console.log(lines.join("\n"));

/** Grouped bars: the ratio to raw per scenario and runtime, with a line at 1. */
function chart(): string {
  const groups = [...SCENARIOS.map((s) => s.name), "idle memory"];
  const series = RUNTIMES.flatMap((runtime) => (["pico0", "pico4"] as Kind[]).map((kind) => ({ runtime, kind })));
  const colors = ["#1f77b4", "#aec7e8", "#2ca02c", "#98df8a", "#d62728", "#ff9896"];
  const width = 900, height = 360, left = 50, bottom = 60, top = 40;
  const plotHeight = height - top - bottom;
  const groupWidth = (width - left - 20) / groups.length;
  const barWidth = (groupWidth - 16) / series.length;
  const max = 1.6;
  const y = (v: number) => top + plotHeight * (1 - Math.min(v, max) / max);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="14">pico-socket-server / the runtime's raw sockets (higher is better; idle memory: lower is better)</text>`,
  ];
  for (const v of [0, 0.5, 1, 1.5]) {
    parts.push(`<line x1="${left}" x2="${width - 20}" y1="${y(v)}" y2="${y(v)}" stroke="${v === 1 ? "#333" : "#ddd"}"/>`);
    parts.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`);
  }
  groups.forEach((group, g) => {
    const x0 = left + g * groupWidth + 8;
    series.forEach(({ runtime, kind }, i) => {
      const value = group === "idle memory"
        ? (idle.get(`${runtime}/${kind}`) ?? NaN) / (idle.get(`${runtime}/raw`) ?? NaN)
        : ratio(runtime, kind, group);
      if (!Number.isFinite(value)) return;
      parts.push(`<rect x="${x0 + i * barWidth}" y="${y(value)}" width="${barWidth - 2}" height="${y(0) - y(value)}" fill="${colors[i]}"><title>${runtime} ${kindLabel[kind]}: ${value.toFixed(2)}</title></rect>`);
    });
    parts.push(`<text x="${x0 + (groupWidth - 16) / 2}" y="${height - bottom + 18}" text-anchor="middle">${group}</text>`);
  });
  series.forEach(({ runtime, kind }, i) => {
    const x = left + i * 140;
    parts.push(`<rect x="${x}" y="${height - 22}" width="12" height="12" fill="${colors[i]}"/>`);
    parts.push(`<text x="${x + 16}" y="${height - 12}">${runtime} ${kind === "pico0" ? "packet 0" : "packet 4"}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}
