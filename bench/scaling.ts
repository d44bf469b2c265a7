// Using every core in `npm run bench`: pico-socket-server with `workers: 1`
// and `workers: 2` (bench/servers/workers.ts) and a handler with real CPU
// work per packet (bench/servers/hash_handler.ts: SHA-256 over each 1 KiB
// packet, BENCH_HASH_ROUNDS times), pipelined load, messages per second.
// The servers and the load generator are not pinned: the threads need every
// core. bench/run.ts adds its section to bench/results.md; `npm run
// bench:scaling` runs it alone and prints it.
import { join } from "node:path";
import process from "node:process";
import {
  fmt,
  type LoadResult,
  median,
  pairedRatios,
  range,
  root,
  runCommand,
  runLoad,
  type Runtime,
  runSectionAlone,
  type Server,
  startServer,
  stopServer,
} from "./common.ts";

const LOAD = { scenario: "pipelined", connections: 16, size: 1024, inflight: 8 };
const WORKERS = [1, 2] as const;

/** Runs the scenario on every runtime and returns the section's Markdown lines. */
export async function scalingSection(runtimes: Runtime[], seconds: number, repeats: number): Promise<string[]> {
  const samples = new Map<string, LoadResult[]>();
  const rate = (run: LoadResult) => run.messages / run.seconds;
  for (const runtime of runtimes) {
    const servers = new Map<number, Server>();
    try {
      for (const workers of WORKERS) {
        servers.set(workers, await startServer([...runCommand[runtime], join(root, "bench/servers/workers.ts"), String(workers)], true));
      }
      for (const workers of WORKERS) await runLoad(servers.get(workers)!.port, LOAD, 0.5, 1, true);
      for (let repeat = 0; repeat < repeats; repeat++) {
        for (const workers of repeat % 2 === 0 ? WORKERS : [...WORKERS].reverse()) {
          const result = await runLoad(servers.get(workers)!.port, LOAD, seconds, 1, true);
          const key = `${runtime}/${workers}`;
          samples.set(key, [...(samples.get(key) ?? []), result]);
          console.error(`bench: ${key} workers #${repeat + 1}: ${Math.round(rate(result))} msg/s`);
        }
      }
    } finally {
      for (const server of servers.values()) await stopServer(server);
    }
  }
  const rounds = process.env.BENCH_HASH_ROUNDS ?? "16";
  const lines = ["## Using every core", ""];
  lines.push(
    `pico-socket-server with \`workers: 2\` / the same with \`workers: 1\`, messages per second, on ${process.env.BENCH_CORES ?? "this machine's"} cores, the load generator included: a handler hashing each 1 KiB packet with SHA-256 (${rounds} rounds), ${LOAD.connections} connections with ${LOAD.inflight} packets in flight each; the median of ${repeats} paired ratios, with the lowest and highest.`,
    "",
    "| runtime | workers: 1, msg/s | workers: 2, msg/s | 2 / 1 |",
    "|---|---:|---:|---:|",
  );
  for (const runtime of runtimes) {
    const one = samples.get(`${runtime}/1`) ?? [];
    const two = samples.get(`${runtime}/2`) ?? [];
    const ratios = pairedRatios(two, one);
    lines.push(`| ${runtime} | ${fmt(median(one.map(rate)))} | ${fmt(median(two.map(rate)))} | ${ratios.length ? `${fmt(median(ratios), 2)} (${range(ratios)})` : "—"} |`);
  }
  return lines;
}

if (import.meta.main) await runSectionAlone("scaling", "Scaling benchmark", scalingSection, 2);
