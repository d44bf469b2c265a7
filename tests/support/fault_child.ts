/**
 * Runs tests/support/fault_server.ts in a child process of the running
 * runtime (or one named) and talks to it: the fault suite's hostile peers
 * attack that server, and a frozen event loop there shows here as a status
 * request that gets no answer within its deadline, instead of a hung test.
 */

import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { FaultReport, FaultServerConfig } from "./fault_server.ts";
import type { Endpoint } from "./client.ts";

export type { FaultReport, FaultServerConfig };

const SCRIPT = fileURLToPath(new URL("./fault_server.ts", import.meta.url));

/** The runtimes a fault server can run on. */
export type RuntimeName = "node" | "deno" | "bun";

/** The runtime this process runs on. */
export function currentRuntime(): RuntimeName {
  if (process.versions.deno !== undefined) return "deno";
  if (process.versions.bun !== undefined) return "bun";
  return "node";
}

/** The command that runs a TypeScript file on `runtime`, with a collector exposed. */
function command(runtime: RuntimeName, executable: string): { file: string; args: string[] } {
  switch (runtime) {
    case "deno":
      return { file: executable, args: ["run", "-A", "--v8-flags=--expose-gc", SCRIPT] };
    case "bun":
      return { file: executable, args: [SCRIPT] };
    case "node":
      return { file: executable, args: ["--expose-gc", "--no-warnings", SCRIPT] };
  }
}

/** A fault server in a child process. */
export class FaultServer {
  readonly port: number;
  /** Where clients reach it: its port or Unix socket, with TLS when it serves TLS. */
  readonly endpoint: Endpoint;
  #child: ChildProcess;
  #pending = new Map<number, (report: FaultReport) => void>();
  #nextId = 1;
  #stderr = "";
  #exited: Promise<number | null>;

  private constructor(child: ChildProcess, endpoint: Endpoint, exited: Promise<number | null>) {
    this.#child = child;
    this.port = endpoint.port ?? 0;
    this.endpoint = endpoint;
    this.#exited = exited;
  }

  /**
   * Starts a server in a child process on `runtime` (by default this
   * process's own, with this process's executable).
   */
  static start(
    config: FaultServerConfig,
    runtime: RuntimeName = currentRuntime(),
    executable: string = process.execPath,
  ): Promise<FaultServer> {
    const { file, args } = command(runtime, executable);
    const child = spawn(file, [...args, JSON.stringify(config)], { stdio: ["pipe", "pipe", "pipe"] });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return new Promise((resolve, reject) => {
      let server: FaultServer | undefined;
      let stderr = "";
      let buffered = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`The fault server did not start within 20 s: ${stderr}`));
      }, 20_000);
      child.stderr!.on("data", (chunk: Uint8Array) => {
        stderr += new TextDecoder().decode(chunk);
        if (server !== undefined) server.#stderr = stderr;
      });
      child.stdout!.on("data", (chunk: Uint8Array) => {
        buffered += new TextDecoder().decode(chunk);
        let newline: number;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          const message = JSON.parse(line) as { port?: number; path?: string } & Partial<FaultReport>;
          if (server === undefined && typeof message.port === "number") {
            clearTimeout(timer);
            const endpoint = message.path !== undefined ? { path: message.path } : { port: message.port };
            server = new FaultServer(child, { ...endpoint, tls: config.tls, proxy: config.proxy }, exited);
            resolve(server);
          } else if (server !== undefined) {
            const settle = server.#pending.get(message.id!);
            server.#pending.delete(message.id!);
            settle?.(message as FaultReport);
          }
        }
      });
      exited.then((code) => {
        clearTimeout(timer);
        if (server === undefined) reject(new Error(`The fault server exited (${code}) before listening: ${stderr}`));
      });
    });
  }

  /** What the child wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * The server's counters. Rejects when no answer comes within `timeoutMs`:
   * the child's event loop is frozen (or stalled that long).
   */
  status(timeoutMs = 3000): Promise<FaultReport> {
    return this.#request("status", timeoutMs);
  }

  /** The counters after a full garbage collection (memory figures then mean live memory). */
  collected(timeoutMs = 10_000): Promise<FaultReport> {
    return this.#request("gc", timeoutMs);
  }

  /** Stops the server (gracefully with `stopTimeoutMs`) and waits for the child to exit. */
  async stop(stopTimeoutMs?: number, timeoutMs = 10_000): Promise<FaultReport> {
    const report = await this.#request("stop", timeoutMs, stopTimeoutMs);
    await this.#exited;
    return report;
  }

  /** Kills the child (after a failed test); safe to call at any time. */
  async kill(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill("SIGKILL");
    await this.#exited;
  }

  /** Waits until the server's counters satisfy `condition`, or fails after `timeoutMs`. */
  async until(condition: (report: FaultReport) => boolean, what: string, timeoutMs = 10_000): Promise<FaultReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const report = await this.status();
      if (condition(report)) return report;
      if (Date.now() > deadline) {
        throw new Error(`Timed out waiting for ${what}; last status: ${JSON.stringify(report)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  #request(command: string, timeoutMs: number, stopTimeoutMs?: number): Promise<FaultReport> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new Error(
            `The server's event loop answered no '${command}' within ${timeoutMs} ms (frozen or stalled)` +
              (this.#stderr ? `; its stderr: ${this.#stderr.slice(-2000)}` : ""),
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, (report) => {
        clearTimeout(timer);
        resolve(report);
      });
      this.#child.stdin!.write(`${JSON.stringify({ id, command, timeoutMs: stopTimeoutMs })}\n`);
    });
  }
}
