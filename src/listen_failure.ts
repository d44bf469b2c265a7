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
  ENOENT: "no such directory",
};

/** Where a listener listens, as messages say it: `host:port`, or the Unix socket's path. */
export function endpointName(where: { hostname: string; port: number; path?: string }): string {
  return where.path ?? `${where.hostname}:${where.port}`;
}

/**
 * `Cannot listen on <hostname>:<port>: <reason>` (or on the Unix socket's
 * path), with `code` (e.g. `"EADDRINUSE"`) and the runtime's error as
 * `cause`.
 */
export function listenFailure(
  where: { hostname: string; port: number; path?: string },
  code: string | undefined,
  cause: unknown,
): Error & { code: string } {
  const reason = (code !== undefined ? TEXT[code] : undefined) ??
    (cause instanceof Error ? cause.message : String(cause));
  const failure = new Error(`Cannot listen on ${endpointName(where)}: ${reason}`, { cause }) as Error & { code: string };
  failure.code = code ?? "socket_error";
  return failure;
}
