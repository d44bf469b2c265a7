// TLS and Unix sockets in `npm run bench`: pico-socket-server against each
// runtime's own minimal TLS echo server (node:tls, Deno.listenTls, Bun.listen
// with tls) and raw Unix-socket echo server, run back to back as in the main
// table. bench/run.ts adds its section to bench/results.md;
// `npm run bench:secure` runs it alone and prints it.
import { join } from "node:path";
import {
  echoServerCommand,
  fmt,
  type Kind,
  runCommand,
  type Listening,
  type LoadResult,
  median,
  pairedRatios,
  range,
  root,
  runLoad,
  type Runtime,
  type Scenario,
  SCENARIOS,
  type Server,
  startServer,
  stopServer,
  runSectionAlone,
} from "./common.ts";

interface SecureScenario extends Scenario {
  listening: Listening;
}

const base = (name: string) => SCENARIOS.find((scenario) => scenario.name === name)!;

/** The scenarios, each with how its servers listen. */
export const SECURE_SCENARIOS: SecureScenario[] = [
  { ...base("pingpong"), name: "tls-pingpong", label: "TLS ping-pong 64 B × 50 conns", listening: "tls" },
  { ...base("pipe64k"), name: "tls-pipe64k", label: "TLS pipelined 64 KiB × 16 in flight", listening: "tls" },
  { ...base("pingpong"), name: "unix-pingpong", label: "Unix socket ping-pong 64 B × 50 conns", listening: "unix" },
];

type SecureKind = Exclude<Kind, "erlang"> | "rawNodeTls";
const KINDS: SecureKind[] = ["raw", "pico0", "pico4"];

/**
 * The servers of a runtime and listening kind: on Deno over TLS, also the
 * node:tls echo server (bench/servers/raw_node.ts run by Deno), the raw
 * baseline of what pico-socket-server uses there.
 */
function kindsOf(runtime: Runtime, listening: Listening): SecureKind[] {
  return runtime === "deno" && listening === "tls" ? [...KINDS, "rawNodeTls"] : KINDS;
}

function command(runtime: Runtime, kind: SecureKind, listening: Listening): string[] {
  if (kind === "rawNodeTls") return [...runCommand[runtime], join(root, "bench/servers/raw_node.ts"), listening];
  return echoServerCommand(runtime, kind, undefined, listening);
}

/**
 * Runs every scenario on every runtime, servers of one listening kind side
 * by side, and returns the section's Markdown lines.
 */
export async function secureSection(runtimes: Runtime[], seconds: number, repeats: number): Promise<string[]> {
  const samples = new Map<string, LoadResult[]>();
  const key = (runtime: string, kind: string, scenario: string) => `${runtime}/${kind}/${scenario}`;
  for (const runtime of runtimes) {
    for (const listening of ["tls", "unix"] as const) {
      const scenarios = SECURE_SCENARIOS.filter((scenario) => scenario.listening === listening);
      const servers = new Map<SecureKind, Server>();
      const kinds = kindsOf(runtime, listening);
      try {
        for (const kind of kinds) servers.set(kind, await startServer(command(runtime, kind, listening)));
        const load = (scenario: Scenario, server: Server) => ({ ...scenario.load, tls: listening === "tls", path: server.path });
        for (const kind of kinds) await runLoad(servers.get(kind)!.port, load(scenarios[0], servers.get(kind)!), 0.5);
        for (let repeat = 0; repeat < repeats; repeat++) {
          for (const scenario of scenarios) {
            for (const kind of repeat % 2 === 0 ? kinds : [...kinds].reverse()) {
              const server = servers.get(kind)!;
              const result = await runLoad(server.port, load(scenario, server), seconds);
              const k = key(runtime, kind, scenario.name);
              samples.set(k, [...(samples.get(k) ?? []), result]);
              console.error(`bench: ${k} #${repeat + 1}: ${Math.round(result.messages / result.seconds)} msg/s`);
            }
          }
        }
      } finally {
        for (const server of servers.values()) await stopServer(server);
      }
    }
  }
  const rate = (run: LoadResult) => run.messages / run.seconds;
  const cell = (runtime: string, kind: SecureKind, scenario: string, against: SecureKind = "raw") => {
    const ratios = pairedRatios(
      samples.get(key(runtime, kind, scenario)) ?? [],
      samples.get(key(runtime, against, scenario)) ?? [],
    );
    return ratios.length === 0 ? "—" : `${fmt(median(ratios), 2)} (${range(ratios)})`;
  };
  const lines = ["## TLS and Unix sockets", ""];
  lines.push(
    `pico-socket-server / the same runtime's own minimal echo server over the same transport (TLS: node:tls on Node, Deno.listenTls on Deno, Bun.listen with tls on Bun, all with the test certificate; Unix sockets: node:net, Deno.listen, Bun.listen), messages per second: the median of ${repeats} paired ratios, with the lowest and highest. On Deno, pico-socket-server serves TLS through node:tls (see the README): the rows below Deno's compare it with the node:tls echo server on Deno (bench/servers/raw_node.ts), and that server with Deno.listenTls's.`,
    "",
  );
  lines.push(
    `| runtime | ${SECURE_SCENARIOS.map((s) => `${s.name} p0`).join(" | ")} | ${SECURE_SCENARIOS.map((s) => `${s.name} p4`).join(" | ")} |`,
    `|---|${SECURE_SCENARIOS.map(() => "---:").join("|")}|${SECURE_SCENARIOS.map(() => "---:").join("|")}|`,
  );
  for (const runtime of runtimes) {
    lines.push(
      `| ${runtime} | ${SECURE_SCENARIOS.map((s) => cell(runtime, "pico0", s.name)).join(" | ")} | ${SECURE_SCENARIOS.map((s) => cell(runtime, "pico4", s.name)).join(" | ")} |`,
    );
    if (runtime === "deno") {
      const tlsOnly = (kind: SecureKind, s: SecureScenario) => s.listening === "tls" ? cell(runtime, kind, s.name, "rawNodeTls") : "";
      lines.push(
        `| deno, against node:tls on Deno | ${SECURE_SCENARIOS.map((s) => tlsOnly("pico0", s)).join(" | ")} | ${SECURE_SCENARIOS.map((s) => tlsOnly("pico4", s)).join(" | ")} |`,
        `| deno: node:tls / Deno.listenTls (raw servers) | ${
          SECURE_SCENARIOS.map((s) => s.listening === "tls" ? cell(runtime, "rawNodeTls", s.name) : "").join(" | ")
        } | ${SECURE_SCENARIOS.map(() => "").join(" | ")} |`,
      );
    }
  }
  lines.push("", "| scenario | runtime | server | messages/s | MB/s | p50 µs | p99 µs |", "|---|---|---|---:|---:|---:|---:|");
  for (const scenario of SECURE_SCENARIOS) {
    for (const runtime of runtimes) {
      for (const kind of [...KINDS, "rawNodeTls" as const]) {
        const runs = samples.get(key(runtime, kind, scenario.name)) ?? [];
        if (runs.length === 0) continue;
        const errors = runs.reduce((n, r) => n + r.errors, 0);
        lines.push(
          `| ${scenario.label} | ${runtime} | ${kind} | ${fmt(median(runs.map(rate)))} | ${fmt(median(runs.map((r) => r.bytes / r.seconds / 1e6)), 1)} | ${fmt(median(runs.map((r) => r.p50Us)))} | ${fmt(median(runs.map((r) => r.p99Us)))}${errors ? ` (${errors} errors)` : ""} |`,
        );
      }
    }
  }
  return lines;
}

if (import.meta.main) await runSectionAlone("secure", "TLS and Unix socket benchmarks", secureSection);
