// What the benchmark's echo servers are told on their command line: TCP,
// TLS with the test certificate, or a Unix socket (a fresh path in the
// temporary directory, printed as `PATH <path>` instead of `PORT <port>`).
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

const mode = process.argv.find((arg) => arg === "tls" || arg === "unix" || arg === "tcp") ?? "tcp";

/** TLS settings when the server is to serve TLS. */
export const tls: { cert: string; key: string } | undefined = mode === "tls"
  ? {
    cert: readFileSync(new URL("../../tests/fixtures/tls/chain.pem", import.meta.url), "utf8"),
    key: readFileSync(new URL("../../tests/fixtures/tls/server.key", import.meta.url), "utf8"),
  }
  : undefined;

/** The Unix socket path when the server is to listen on one. */
export const path: string | undefined = mode === "unix" ? join(tmpdir(), `pico-bench-${process.pid}.sock`) : undefined;

/** Prints where the server listens, as bench/common.ts reads it. */
export function announce(port: number): void {
  console.log(path !== undefined ? `PATH ${path}` : `PORT ${port}`);
}
