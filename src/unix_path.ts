/**
 * Listening on a Unix domain socket's path, the same on every runtime: a
 * socket file left by a process that crashed (no one accepts on it) is
 * replaced; one a live process listens on is left alone (`EADDRINUSE`), and
 * so is a file that is not a socket. Runtime-neutral: the adapter gives its
 * runtime's verbs.
 *
 * @module
 */

/** What an adapter's runtime does for {@linkcode listenOnPath}. */
export interface PathVerbs<L> {
  /** Binds and listens on the path; rejects (or throws) with `code` `"EADDRINUSE"` when the file exists. */
  listen(): Promise<L> | L;
  /** Whether the path is a socket file (false: no file, or another kind). */
  isSocket(path: string): boolean;
  /** Whether a process accepts connections on the socket (a connect succeeds). */
  accepts(path: string): Promise<boolean>;
  /** Removes the file. */
  remove(path: string): void;
}

/** Listens on `path`, replacing a stale socket file once. */
export async function listenOnPath<L>(path: string, verbs: PathVerbs<L>): Promise<L> {
  try {
    return await verbs.listen();
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code !== "EADDRINUSE") throw error;
    if (!verbs.isSocket(path) || await verbs.accepts(path)) throw error;
  }
  try {
    verbs.remove(path);
  } catch {
    // Removed by another process meanwhile: listen decides.
  }
  return await verbs.listen();
}
