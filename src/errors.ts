/**
 * The error class of pico-socket-server and its codes.
 *
 * @module
 */

/**
 * What went wrong, as a stable string a caller can test:
 * - `"retrylater"`: no server is registered under that reference;
 * - `"timeout"`: a bounded wait ran out (or a session's idle timeout fired);
 * - `"name_in_use"`: another server is registered under that name;
 * - `"socket_closed"`: the session's connection is closed;
 * - `"socket_error"`: the connection failed (its `cause` tells how);
 * - `"packet_too_large"`: a packet is longer than `packetSize` allows;
 * - `"truncated_packet"`: the stream ended inside a packet;
 * - `"invalid_argument"`: a function was called with a value it cannot use;
 * - `"invalid_state"`: the server is not in a state that allows the call;
 * - `"shutdown"`: the server began a graceful stop (`session.signal.reason`);
 * - or the POSIX name of a failed listen, e.g. `"EADDRINUSE"`, `"EACCES"`.
 *
 * @example Telling a busy port from other failures
 * ```ts
 * import type { SocketServerErrorCode } from "@pico/socket-server";
 * const code: SocketServerErrorCode = "EADDRINUSE";
 * ```
 */
export type SocketServerErrorCode =
  | "retrylater"
  | "timeout"
  | "name_in_use"
  | "socket_closed"
  | "socket_error"
  | "packet_too_large"
  | "truncated_packet"
  | "invalid_argument"
  | "invalid_state"
  | "shutdown"
  | "EADDRINUSE"
  | "EACCES"
  | "EADDRNOTAVAIL"
  | (string & Record<never, never>);

/**
 * An error raised by pico-socket-server, with a `code` to test instead of the
 * message.
 *
 * @example Retrying when a server is not there yet
 * ```ts
 * import { serverPort, SocketServerError } from "@pico/socket-server";
 * try {
 *   await serverPort("no-such-server");
 * } catch (error) {
 *   if (error instanceof SocketServerError && error.code === "retrylater") {
 *     console.log("not started yet");
 *   }
 * }
 * ```
 */
export class SocketServerError extends Error {
  /** What went wrong; see {@linkcode SocketServerErrorCode}. */
  readonly code: SocketServerErrorCode;

  /**
   * Creates an error with a message and a code.
   *
   * @param message What happened, in sentence case, naming the offending value.
   * @param code The stable code a caller tests.
   * @param options `cause`: the underlying error, if any.
   * @example Creating one
   * ```ts
   * import { SocketServerError } from "@pico/socket-server";
   * const error = new SocketServerError("No server named 'chat'", "retrylater");
   * console.log(error.code);
   * ```
   */
  constructor(
    message: string,
    code: SocketServerErrorCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SocketServerError";
    this.code = code;
  }
}

/**
 * The `invalid_argument` error for a value a caller passed, showing the value
 * as JSON where it can be (a bigint, a cyclic object or a function cannot
 * break the message). Internal to the package.
 */
export function invalidArgument(what: string, value: unknown, expected: string): SocketServerError {
  return new SocketServerError(`Invalid ${what} ${show(value)}: expected ${expected}`, "invalid_argument");
}

function show(value: unknown): string {
  if (typeof value === "function") return "a function";
  if (typeof value === "bigint") return `${value}n`;
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch {
    // cyclic, or a toJSON that throws: fall back to the kind of value
  }
  try {
    return String(value);
  } catch {
    return `a value of type ${typeof value}`;
  }
}

/**
 * The `invalid_state` error of a server asked to `action` while in `state`.
 * Internal to the package.
 */
export function invalidState(name: string, state: string, action: string): SocketServerError {
  return new SocketServerError(`Cannot ${action} server '${name}': it is ${state}`, "invalid_state");
}

/**
 * Runs a user callback (an event, `onError`); what it throws is logged,
 * never propagated. Internal to the package.
 */
export function safely(callback: () => void, name = "an event callback"): void {
  try {
    callback();
  } catch (failure) {
    console.error(`pico-socket-server: ${name} threw:`, failure);
  }
}
