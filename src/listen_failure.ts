/**
 * The error adapters reject `listen()` with: a clear message and the POSIX
 * `code` the core reports. Runtime-neutral.
 *
 * @module
 */

const TEXT: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EACCES: "permission denied",
  EADDRNOTAVAIL: "address not available",
};

/**
 * `Cannot listen on <hostname>:<port>: <reason>`, with `code` (e.g.
 * `"EADDRINUSE"`) and the runtime's error as `cause`.
 */
export function listenFailure(
  hostname: string,
  port: number,
  code: string | undefined,
  cause: unknown,
): Error & { code: string } {
  const reason = (code !== undefined ? TEXT[code] : undefined) ??
    (cause instanceof Error ? cause.message : String(cause));
  const failure = new Error(`Cannot listen on ${hostname}:${port}: ${reason}`, { cause }) as Error & { code: string };
  failure.code = code ?? "socket_error";
  return failure;
}
