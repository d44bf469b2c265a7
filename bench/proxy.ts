// Behind a load balancer in `npm run bench`: pico-socket-server (packet 4)
// with `proxyProtocol` and clients that begin each connection with a PROXY
// v1 header, against the same server and clients without, on each runtime:
// ping-pong (the header once per connection) and churn (once per round
// trip). bench/run.ts adds its section to bench/results.md; `npm run
// bench:proxy` runs it alone and prints it.
import {
  echoServerCommand,
  fmt,
  type LoadResult,
  median,
  pairedRatios,
  range,
  runLoad,
  type Runtime,
  SCENARIOS,
  type Server,
  startServer,
  stopServer,
  runSectionAlone,
} from "./common.ts";

const PROXY_SCENARIOS = SCENARIOS.filter((scenario) => scenario.name === "pingpong" || scenario.name === "churn");
const MODES = ["plain", "proxy"] as const;

/** Runs both scenarios with and without PROXY headers on every runtime; returns the section's Markdown lines. */
export async function proxySection(runtimes: Runtime[], seconds: number, repeats: number): Promise<string[]> {
  const samples = new Map<string, LoadResult[]>();
  const rate = (run: LoadResult) => run.messages / run.seconds;
  for (const runtime of runtimes) {
    const servers = new Map<string, Server>();
    try {
      for (const mode of MODES) {
        const command = echoServerCommand(runtime, "pico4");
        servers.set(mode, await startServer(mode === "proxy" ? [...command, "tcp", "proxy"] : command));
      }
      for (const mode of MODES) await runLoad(servers.get(mode)!.port, { ...PROXY_SCENARIOS[0].load, proxy: mode === "proxy" }, 0.5);
      for (let repeat = 0; repeat < repeats; repeat++) {
        for (const scenario of PROXY_SCENARIOS) {
          for (const mode of repeat % 2 === 0 ? MODES : [...MODES].reverse()) {
            const result = await runLoad(servers.get(mode)!.port, { ...scenario.load, proxy: mode === "proxy" }, seconds);
            const key = `${runtime}/${scenario.name}/${mode}`;
            samples.set(key, [...(samples.get(key) ?? []), result]);
            console.error(`bench: ${key} #${repeat + 1}: ${Math.round(rate(result))} msg/s`);
          }
        }
      }
    } finally {
      for (const server of servers.values()) await stopServer(server);
    }
  }
  const lines = ["## Behind a load balancer", ""];
  lines.push(
    `pico-socket-server (packet 4) with \`proxyProtocol\`, its clients beginning each connection with a PROXY v1 header / the same without, messages per second (churn: connections per second, one round trip each): the median of ${repeats} paired ratios, with the lowest and highest.`,
    "",
    `| runtime | ${PROXY_SCENARIOS.map((s) => `${s.name}: plain msg/s | with PROXY | ratio`).join(" | ")} |`,
    `|---|${PROXY_SCENARIOS.map(() => "---:|---:|---:").join("|")}|`,
  );
  for (const runtime of runtimes) {
    const cells = PROXY_SCENARIOS.map((scenario) => {
      const plain = samples.get(`${runtime}/${scenario.name}/plain`) ?? [];
      const proxied = samples.get(`${runtime}/${scenario.name}/proxy`) ?? [];
      const ratios = pairedRatios(proxied, plain);
      return `${fmt(median(plain.map(rate)))} | ${fmt(median(proxied.map(rate)))} | ${ratios.length ? `${fmt(median(ratios), 2)} (${range(ratios)})` : "—"}`;
    });
    lines.push(`| ${runtime} | ${cells.join(" | ")} |`);
  }
  return lines;
}

if (import.meta.main) await runSectionAlone("proxy", "PROXY protocol benchmark", proxySection);
