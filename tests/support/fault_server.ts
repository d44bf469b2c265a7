/**
 * A server run in a child process for the fault suite (tests/faults.ts) and
 * `npm run stress`: a peer that freezes the event loop freezes this process,
 * not the test runner, and the runner sees it as a status request that gets
 * no answer in time.
 *
 * Usage: `<runtime> tests/support/fault_server.ts '<FaultServerConfig JSON>'`.
 * It prints `{"port":N}` once listening, then answers each line of JSON
 * `{"id":N,"command":"status"|"gc"|"stop","timeoutMs"?:N}` on stdin with one
 * line of JSON on stdout (see FaultReport).
 */

import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { startServer } from "../../mod.ts";
import { bunTransport } from "../../adapters/bun.ts";
import { denoTransport } from "../../adapters/deno.ts";
import { nodeTransport } from "../../adapters/node.ts";
import type { PacketType, SessionInfo, SessionOptions, SocketServer } from "../../mod.ts";
import { type FaultHandlerName, handlers } from "./fault_handlers.ts";
import type { Transport } from "../../src/transport.ts";

/** How the child's server is started. */
export interface FaultServerConfig {
  transport: "node" | "deno" | "bun";
  handler: FaultHandlerName;
  max: number;
  packet?: PacketType;
  packetSize?: number;
  backlog?: number;
  session?: SessionOptions;
  /** Serve TLS with the test certificate. */
  tls?: boolean;
  /** Listen on a Unix socket in a new temporary directory instead of a port. */
  unix?: boolean;
  handshakeTimeoutMs?: number;
  /** Run on this many worker threads (the runtime's own sockets; `transport` is not used). */
  workers?: number;
  /** Behind a load balancer: each connection begins with a PROXY header. */
  proxy?: boolean;
  proxyTimeoutMs?: number;
}

/** What the child answers to `status` (and `gc`, after a full collection). */
export interface FaultReport {
  id: number;
  num: number;
  waiting: number;
  accepted: number;
  acceptErrors: number;
  handshakeFailures: number;
  handshaking: number;
  proxyErrors: number;
  /** The most sessions that ran at once, from onSessionStart/onSessionEnd. */
  peak: number;
  started: number;
  ended: Record<string, number>;
  /** What onError was told, as text. */
  errors: string[];
  /** Unhandled rejections and uncaught exceptions seen by the process. */
  unhandled: string[];
  rss: number;
  heapUsed: number;
  external: number;
  /** Open file descriptors (-1 where /proc/self/fd does not exist). */
  fds: number;
  /** Timer ticks so far: they stop when the event loop is frozen. */
  ticks: number;
  /** Worker threads serving (0: the server runs in the process's main thread). */
  workers: number;
}

const transports: Record<FaultServerConfig["transport"], Transport> = {
  node: nodeTransport,
  deno: denoTransport,
  bun: bunTransport,
};

function describe(value: unknown): string {
  try {
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    return typeof value === "symbol" ? value.toString() : String(value);
  } catch {
    return "an undescribable value";
  }
}

const config = JSON.parse(process.argv[process.argv.length - 1]) as FaultServerConfig;
const unhandled: string[] = [];
process.on("unhandledRejection", (reason) => void unhandled.push(`unhandled rejection: ${describe(reason)}`));
process.on("uncaughtException", (error) => void unhandled.push(`uncaught exception: ${describe(error)}`));

let live = 0;
let peak = 0;
let started = 0;
const errors: string[] = [];
const ended: Record<string, number> = {};
let ticks = 0;
setInterval(() => ticks++, 10);

const fixtures = new URL("../fixtures/tls/", import.meta.url);
const directory = config.unix ? mkdtempSync(join(tmpdir(), "pico-fault-")) : undefined;
process.on("exit", () => directory !== undefined && rmSync(directory, { recursive: true, force: true }));
// With workers, each thread loads the handler module, which picks the
// handler named here (the environment is the process's, so every thread's).
process.env.PICO_FAULT_HANDLER = config.handler;
const common = {
  ...(directory !== undefined ? { path: join(directory, "s.sock") } : { hostname: "127.0.0.1", port: 0 }),
  ...(config.tls
    ? {
      tls: {
        cert: readFileSync(new URL("chain.pem", fixtures), "utf8"),
        key: readFileSync(new URL("server.key", fixtures), "utf8"),
      },
      handshakeTimeoutMs: config.handshakeTimeoutMs,
    }
    : {}),
  ...(config.proxy ? { proxyProtocol: { timeoutMs: config.proxyTimeoutMs ?? 5000 } } : {}),
  max: config.max,
  packet: config.packet,
  packetSize: config.packetSize,
  backlog: config.backlog,
  session: config.session,
  onError: (error: unknown) => void errors.push(describe(error)),
  onSessionStart: () => {
    started++;
    peak = Math.max(peak, ++live);
  },
  onSessionEnd: (_session: unknown, reason: string) => {
    live--;
    ended[reason] = (ended[reason] ?? 0) + 1;
  },
};
const server: SocketServer<SessionInfo> = config.workers === undefined
  ? await startServer({ ...common, transport: transports[config.transport], handler: handlers[config.handler] })
  : await startServer({ ...common, workers: config.workers, handler: new URL("./fault_handlers.ts", import.meta.url) });

function countFds(): number {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return -1;
  }
}

/** A full collection where the runtime offers one (node and deno need --expose-gc). */
function collect(): void {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun !== undefined) bun.gc(true);
  else (globalThis as { gc?: () => void }).gc?.();
}

function report(id: number): FaultReport {
  const status = server.status();
  const memory = process.memoryUsage();
  return {
    id,
    num: status.num,
    waiting: status.waiting,
    accepted: status.accepted,
    acceptErrors: status.acceptErrors,
    handshakeFailures: status.handshakeFailures,
    handshaking: status.handshaking,
    proxyErrors: status.proxyErrors,
    peak,
    started,
    ended,
    errors,
    unhandled,
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    external: memory.external,
    fds: countFds(),
    ticks,
    workers: status.workers ?? 0,
  };
}

function answer(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", async (text: string) => {
  input += text;
  let newline: number;
  while ((newline = input.indexOf("\n")) >= 0) {
    const line = input.slice(0, newline);
    input = input.slice(newline + 1);
    const request = JSON.parse(line) as { id: number; command: string; timeoutMs?: number };
    if (request.command === "gc") {
      collect();
      // Twice, a turn apart: finalizers of the first free more.
      await new Promise((resolve) => setTimeout(resolve, 10));
      collect();
    }
    if (request.command === "stop") {
      const result = await server.stop(request.timeoutMs === undefined ? undefined : { timeoutMs: request.timeoutMs });
      answer({ ...report(request.id), stopped: result });
      setTimeout(() => process.exit(0), 10);
      continue;
    }
    answer(report(request.id));
  }
});
process.stdin.on("end", () => process.exit(0));

answer({ port: server.port, path: server.path });
