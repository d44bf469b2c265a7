// `npm run stress`: the fault suite's checks (tests/faults.ts) at production
// counts — tens of thousands of connections, 50 MB hostile streams — against
// a server on each runtime's own adapter, run in a child process as in
// `npm test`; the hostile peers run here, on Node. Prints a table of what
// each case held (peak sessions, descriptor, live-heap and RSS growth, how
// long an honest client waited during the attack) and writes it to
// bench/stress.md. Exits non-zero if any check failed.
//
//   npm run stress [-- --runtime node|deno|bun] [-- --case <text in its name>]

import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type FaultFigures, faultCases, PRODUCTION } from "../tests/faults.ts";
import type { RuntimeName } from "../tests/support/fault_child.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({
  options: { runtime: { type: "string", multiple: true }, case: { type: "string" } },
});
const runtimes = (values.runtime ?? ["node", "deno", "bun"]) as RuntimeName[];
const cases = faultCases.filter((faultCase) => values.case === undefined || faultCase.name.includes(values.case));

interface Row {
  runtime: RuntimeName;
  name: string;
  figures?: FaultFigures;
  failure?: string;
  seconds: number;
}

const rows: Row[] = [];
for (const runtime of runtimes) {
  const executable = `${root}node_modules/.bin/${runtime}`;
  for (const faultCase of cases) {
    const started = performance.now();
    process.stdout.write(`${runtime}: ${faultCase.name} ... `);
    const row: Row = { runtime, name: faultCase.name, seconds: 0 };
    try {
      row.figures = await faultCase.run(runtime, PRODUCTION, { runtime, executable });
    } catch (error) {
      row.failure = error instanceof Error ? error.message.split("\n")[0] : String(error);
    }
    row.seconds = (performance.now() - started) / 1000;
    console.log(row.failure === undefined ? `ok (${row.seconds.toFixed(1)} s)` : `FAILED: ${row.failure}`);
    rows.push(row);
  }
}

const mb = (bytes: number | undefined) => (bytes === undefined ? "" : (bytes / 1024 / 1024).toFixed(1));
const lines = [
  `Stress run of ${new Date().toISOString().slice(0, 10)} (\`npm run stress\`), counts: ${JSON.stringify(PRODUCTION)}.`,
  "",
  "| runtime | case | result | peak sessions | fd growth | live heap growth (MB) | RSS growth (MB) | honest client (ms) | note | time (s) |",
  "|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map(({ runtime, name, figures = {}, failure, seconds }) =>
    `| ${runtime} | ${name} | ${failure === undefined ? "ok" : `FAILED: ${failure.replaceAll("|", "/")}`} | ${
      figures.peak ?? ""
    } | ${figures.fdGrowth ?? ""} | ${mb(figures.heapGrowth)} | ${mb(figures.rssGrowth)} | ${
      figures.honestMs === undefined ? "" : figures.honestMs.toFixed(1)
    } | ${figures.note ?? ""} | ${seconds.toFixed(1)} |`
  ),
];
const table = lines.join("\n");
console.log(`\n${table}`);
writeFileSync(`${root}bench/stress.md`, `# Stress results\n\n${table}\n`);
process.exitCode = rows.some((row) => row.failure !== undefined) ? 1 : 0;
