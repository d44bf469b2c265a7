// Runs every suite on every runtime (`npm test`): type checks, the core unit
// tests and the conformance suite, each against its own runtime's adapter,
// and the Node adapter under all three runtimes. Prints each runner's output
// and ends with one line `N passed, N failed`; exits non-zero on any failure.
//
// Runs on Node (the LTS from devDependencies); the runtimes are the ones
// `npm ci` installed into node_modules/.bin.

import { spawn } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { findSystemNode } from "./system_node.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name: string) => `${root}node_modules/.bin/${name}`;

const unitTests = [
  "tests/core.test.ts",
  "tests/framing.test.ts",
  "tests/write_window.test.ts",
  "tests/accept_queue.test.ts",
  "tests/accept_loop.test.ts",
  "tests/stall_watch.test.ts",
  "tests/shared_slots.test.ts",
  "tests/proxy_protocol.test.ts",
];
// On every runtime: the Node adapter (all three ship node:net) and the demo
// on the runtime's default adapter.
const everywhere = ["tests/node_adapter.test.ts", "tests/chat.test.ts"];
// On every runtime, on its own sockets: servers with workers, behind a real
// HAProxy, the diagnostics channels (and OpenTelemetry on them), and the RESP
// example under redis-cli.
const ownSockets = [
  "tests/workers.test.ts",
  "tests/haproxy.test.ts",
  "tests/tracing.test.ts",
  "tests/kv.test.ts",
  "tests/opentelemetry.test.ts",
];

interface Step {
  label: string;
  /** When set, the step is not run and this says why. */
  skip?: string;
  /** Runs before the command (e.g. clears an output directory). */
  before?: () => void;
  command: string;
  args: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Reads passed/failed counts from the runner's output. */
  count?: (output: string) => { passed: number; failed: number };
}

function lastNumber(output: string, pattern: RegExp): number {
  const matches = [...output.matchAll(pattern)];
  return matches.length === 0 ? 0 : Number(matches[matches.length - 1][1]);
}

// deno test prints `ok | 4 passed (24 steps) | 0 failed`; the steps are the
// node:test tests inside each describe().
function countDeno(output: string): { passed: number; failed: number } {
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const summary = plain.match(/(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?/);
  if (!summary) return { passed: 0, failed: 1 };
  return {
    passed: Number(summary[2] ?? summary[1]),
    failed: Number(summary[4] ?? summary[3]),
  };
}

const nodeCount = (output: string) => ({
  passed: lastNumber(output, /(?:ℹ|#) pass (\d+)/g),
  failed: lastNumber(output, /(?:ℹ|#) fail (\d+)/g),
});
const plainCount = (output: string) => ({
  passed: lastNumber(output, /^(\d+) passed, \d+ failed$/gm),
  failed: lastNumber(output, /^\d+ passed, (\d+) failed$/gm),
});
// The machine's own Node, outside node_modules, if there is one: the npm
// build is tested there too, from a compiled copy of its test (an older Node
// cannot run TypeScript), compiled afresh into .npm-tests/.
const systemNode = findSystemNode();

const steps: Step[] = [
  {
    label: "type check (tsc, isolatedDeclarations)",
    command: bin("tsc"),
    args: ["-p", "tsconfig.json"],
  },
  {
    label: "type check with the JSDoc examples (deno check --doc)",
    command: bin("deno"),
    args: [
      "check", "--doc", "mod.ts", "src/api.ts", "src/errors.ts", "src/framing.ts", "src/registry.ts",
      "src/server.ts", "src/session.ts", "src/end_reason.ts", "src/transport.ts", "src/default_transport.ts", "src/unix_path.ts", "src/shared_slots.ts", "src/group_member.ts", "src/worker_group.ts", "adapters/deno.ts", "adapters/bun.ts", "adapters/node.ts", "adapters/tls_check.ts", "adapters/unix_files.ts",
      "adapters/threads.ts", "adapters/worker_thread.ts", "tests/workers.test.ts", "tests/haproxy.test.ts",
      "src/proxy_protocol.ts", "src/address_match.ts", "src/tracing.ts", "tests/tracing.test.ts", "tests/kv.test.ts", "examples/kv.ts",
      "tests/opentelemetry.test.ts", "examples/opentelemetry.ts",
      "examples/chat.ts", "examples/tls.ts", "examples/unix.ts", "examples/workers.ts", "examples/line_echo.ts", "examples/behind_proxy.ts",
    ],
  },
  {
    label: "node: unit tests and the node adapter",
    command: bin("node"),
    // Two files at a time: most of their time is spent waiting on sockets
    // and timers, and Node's default on two cores is one.
    args: [
      "--test",
      "--test-concurrency=2",
      "--test-reporter=spec",
      ...unitTests,
      ...everywhere,
      ...ownSockets,
      "tests/secure_faults.test.ts",
    ],
    count: nodeCount,
  },
  {
    label: "node: the node adapter on its plain path (PICO_NODE_PLAIN_READS=1: no private handles for reads)",
    command: bin("node"),
    args: ["--test", "--test-reporter=spec", "tests/node_adapter.test.ts"],
    env: { PICO_NODE_PLAIN_READS: "1" },
    count: nodeCount,
  },
  {
    label: "deno: unit tests, the deno adapter and the node adapter",
    command: bin("deno"),
    args: ["test", "-A", ...unitTests, "tests/deno_adapter.test.ts", ...everywhere],
    count: countDeno,
  },
  {
    // deno test type-checks each worker thread's modules as it starts (a
    // second or two each); they were checked above.
    label: "deno: workers, behind HAProxy, diagnostics channels, OpenTelemetry, the RESP example (--no-check)",
    command: bin("deno"),
    args: ["test", "-A", "--no-check", ...ownSockets],
    count: countDeno,
  },
  {
    label: "bun: unit tests, the bun adapter and the node adapter",
    command: bin("bun"),
    args: ["test", ...[...unitTests, "tests/bun_adapter.test.ts", ...everywhere, ...ownSockets].map((file) => `./${file}`)],
    count: (output) => ({
      passed: lastNumber(output, /^\s*(\d+) pass$/gm),
      failed: lastNumber(output, /^\s*(\d+) fail$/gm),
    }),
  },
  {
    label: "npm build (scripts/build_npm.ts)",
    command: bin("node"),
    args: ["scripts/build_npm.ts"],
  },
  {
    label: "node: the conformance suite against the npm build",
    command: bin("node"),
    args: ["--test", "--test-reporter=spec", "tests/npm_build.test.ts"],
    count: nodeCount,
  },
  ...(systemNode === undefined ? [{
    label: "machine's node: the conformance suite against the npm build",
    skip: "no node outside node_modules (PATH, /usr/local/bin, /usr/bin), or PICO_SYSTEM_NODE=none",
    command: "",
    args: [],
  }] : [
    {
      label: `compile the npm build's test for the machine's Node (${systemNode.version})`,
      before: () => {
        rmSync(`${root}.npm-tests`, { recursive: true, force: true });
        // The test clients read the TLS fixtures next to them.
        cpSync(`${root}tests/fixtures`, `${root}.npm-tests/tests/fixtures`, { recursive: true });
      },
      command: bin("tsc"),
      args: [
        "--outDir", ".npm-tests", "--rootDir", ".", "--strict", "--rewriteRelativeImportExtensions",
        "--target", "es2022", "--module", "nodenext", "--skipLibCheck", "--types", "node",
        "tests/npm_build.test.ts",
      ],
    },
    {
      label: `machine's node (${systemNode.path}, ${systemNode.version}): the conformance suite against the npm build`,
      command: systemNode.path,
      args: ["--test", ".npm-tests/tests/npm_build.test.js"],
      env: { PICO_NPM_DIR: `${root}npm` },
      count: nodeCount,
    },
  ]),
  {
    label: "npm pack, install and run in a fresh project (Node, Bun, Deno, CommonJS, TypeScript)",
    command: bin("node"),
    args: ["scripts/npm_smoke.ts"],
    count: plainCount,
  },
  {
    label: "JSR: deno doc --lint",
    command: bin("deno"),
    args: ["doc", "--lint", "mod.ts", "src/transport.ts", "adapters/deno.ts", "adapters/bun.ts", "adapters/node.ts"],
    // Without package.json, deno doc takes node:* types from its own copy of
    // @types/node: with node_modules/@types/node it prints ~80 warnings, one
    // per `/// <reference path>` in its index.d.ts (denoland/deno#36751).
    env: { DENO_NO_PACKAGE_JSON: "1" },
  },
  {
    label: "JSR: deno publish --dry-run",
    command: bin("deno"),
    args: ["publish", "--dry-run", "--allow-dirty"],
  },
];

function run(step: Step): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(step.command, step.args, {
      cwd: root,
      env: { ...process.env, ...step.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer, stream: NodeJS.WriteStream) => {
      output += chunk.toString();
      stream.write(chunk);
    };
    child.stdout.on("data", (chunk: Buffer) => collect(chunk, process.stdout));
    child.stderr.on("data", (chunk: Buffer) => collect(chunk, process.stderr));
    child.on("error", (error) => {
      output += String(error);
      resolve({ code: 127, output });
    });
    child.on("close", (code) => resolve({ code: code ?? 1, output }));
  });
}

let passed = 0;
let failed = 0;
const failedSteps: string[] = [];
for (const step of steps) {
  if (step.skip !== undefined) {
    console.log(`\n=== ${step.label}: skipped (${step.skip})`);
    continue;
  }
  console.log(`\n=== ${step.label}`);
  const started = Date.now();
  step.before?.();
  const { code, output } = await run(step);
  const counts = step.count?.(output);
  if (counts) {
    passed += counts.passed;
    failed += counts.failed;
  }
  if (code !== 0) {
    failedSteps.push(step.label);
    if (!counts || counts.failed === 0) failed++;
  }
  console.log(`=== ${step.label}: ${code === 0 ? "ok" : `FAILED (exit ${code})`} in ${Date.now() - started} ms`);
}

if (failedSteps.length > 0) console.log(`\nFailed: ${failedSteps.join("; ")}`);
console.log(`\n${passed} passed, ${failed} failed`);
process.exitCode = failedSteps.length > 0 ? 1 : 0;
