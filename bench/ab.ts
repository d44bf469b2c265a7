// A/B: this checkout's pico-socket-server against another commit's (HEAD by
// default), on one runtime and scenario, as alternating runs of the same load
// generator. Reports messages/s and the server's CPU time per message (user +
// system, from /proc), which moves much less than messages/s on a shared
// machine: a change that saves work shows there first.
//
//   npm run bench:ab                                # deno, pipe64k, packet 4, vs HEAD
//   npm run bench:ab -- --runtime node --scenario pingpong --kind pico0 --base HEAD~3
//   npm run bench:ab -- --raw                       # also the runtime's raw server
//
// Options: --runtime node|deno|bun, --scenario pingpong|pipe1k|pipe64k|churn,
// --kind pico0|pico4, --base <git revision>, --rounds N (5), --seconds S (3),
// --raw, --floor (Node and Deno: also servers/floor_<runtime>.ts, the
// thinnest server with the handler model), --extra FILE (any other echo
// server that prints "PORT n", run on the same runtime; may be repeated).
// Linux only (/proc); servers on CPU 0, the generator on CPU 1.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import {
  cpuSeconds,
  echoServerCommand,
  median,
  root,
  runCommand,
  runLoad,
  type Runtime,
  SCENARIOS,
  type Server,
  startServer,
  stopServer,
} from "./common.ts";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: "deno" },
    scenario: { type: "string", default: "pipe64k" },
    kind: { type: "string", default: "pico4" },
    base: { type: "string", default: "HEAD" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "3" },
    raw: { type: "boolean", default: false },
    floor: { type: "boolean", default: false },
    extra: { type: "string", multiple: true, default: [] },
  },
});
const runtime = values.runtime as Runtime;
const kind = values.kind as "pico0" | "pico4";
const scenario = SCENARIOS.find((s) => s.name === values.scenario);
if (
  !["node", "deno", "bun"].includes(runtime) || !["pico0", "pico4"].includes(kind) || scenario === undefined ||
  (values.floor && runtime === "bun")
) {
  console.error("usage: npm run bench:ab -- [--runtime node|deno|bun] [--scenario pingpong|pipe1k|pipe64k|churn] [--kind pico0|pico4] [--base REV] [--rounds N] [--seconds S] [--raw] [--floor (node, deno)] [--extra FILE]...");
  process.exit(2);
}
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

// The other build: a temporary worktree of --base.
const git = (...args: string[]) => execFileSync("git", args, { cwd: root }).toString().trim();
const baseRev = git("rev-parse", "--short", values.base!);
const tempDir = mkdtempSync(join(tmpdir(), "pico-ab-"));
const baseDir = join(tempDir, "base");
const removeWorktree = () => {
  try {
    git("worktree", "remove", "--force", baseDir);
  } catch {
    git("worktree", "prune"); // interrupted before it was made
  }
  rmSync(tempDir, { recursive: true, force: true });
};
const servers: Server[] = [];
// Interrupted (Ctrl-C, or a timeout's SIGTERM), the finally below does not
// run: stop the servers and remove the worktree here.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const server of servers) server.process.kill();
    removeWorktree();
    process.exit(130);
  });
}
git("worktree", "add", "--detach", baseDir, baseRev);

const variants: Array<{ name: string; command: string[] }> = [
  { name: `base ${baseRev}`, command: echoServerCommand(runtime, kind, baseDir) },
  { name: `this checkout${git("status", "--porcelain").length > 0 ? " (with changes)" : ""}`, command: echoServerCommand(runtime, kind) },
  ...(values.raw ? [{ name: `raw ${runtime}`, command: echoServerCommand(runtime, "raw") }] : []),
  ...(values.floor ? [{ name: `floor ${runtime}`, command: [...runCommand[runtime], join(root, `bench/servers/floor_${runtime}.ts`)] }] : []),
  ...values.extra!.map((file) => ({ name: file.split("/").at(-1)!, command: [...runCommand[runtime], file] })),
];
const rates = variants.map(() => [] as number[]);
const cpu = variants.map(() => [] as number[]);

try {
  for (const variant of variants) servers.push(await startServer(variant.command));
  for (const server of servers) await runLoad(server.port, scenario.load, 0.5); // warm-up (JIT)
  for (let round = 0; round < rounds; round++) {
    // Each round reverses the order, so neither build always runs first.
    const order = variants.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const pid = servers[i].process.pid!;
      const before = cpuSeconds(pid);
      const result = await runLoad(servers[i].port, scenario.load, seconds);
      const used = cpuSeconds(pid) - before;
      rates[i].push(result.messages / result.seconds);
      cpu[i].push((used / Math.max(1, result.messages)) * 1e6);
      console.error(`ab: ${variants[i].name} #${round + 1}: ${Math.round(rates[i].at(-1)!)} msg/s, ${cpu[i].at(-1)!.toFixed(2)} µs CPU/msg`);
    }
  }
} finally {
  for (const server of servers) await stopServer(server);
  removeWorktree();
}

// Medians, and the best run of each: on a shared machine other tenants only
// ever add time, so the least CPU per message is the steadiest estimate of
// what a build costs.
const best = (i: number) => ({ rate: Math.max(...rates[i]), cpu: Math.min(...cpu[i]) });
console.log(`${runtime} ${scenario.name} ${kind}, ${rounds} alternating runs of ${seconds} s:`);
console.log(`  ${"".padEnd(28)} ${"median msg/s".padStart(12)} ${"µs CPU/msg".padStart(10)}   ${"best msg/s".padStart(10)} ${"µs CPU/msg".padStart(10)}`);
variants.forEach((variant, i) => {
  const vsBase = i === 0 ? "" : `   vs base: median ${(median(rates[i]) / median(rates[0])).toFixed(3)}x msg/s, ${(median(cpu[i]) / median(cpu[0])).toFixed(3)}x CPU; best ${(best(i).rate / best(0).rate).toFixed(3)}x msg/s, ${(best(i).cpu / best(0).cpu).toFixed(3)}x CPU`;
  const n = (value: number, digits = 0) => value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  console.log(`  ${variant.name.padEnd(28)} ${n(median(rates[i])).padStart(12)} ${n(median(cpu[i]), 2).padStart(10)}   ${n(best(i).rate).padStart(10)} ${n(best(i).cpu, 2).padStart(10)}${vsBase}`);
});
