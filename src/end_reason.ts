/**
 * Why a session ended: the reasons, and how an error a handler lets
 * propagate is classified (errors the session raised itself carry their
 * socket or timeout reason; any other is a crash).
 *
 * @module
 */

import type { SocketServerError } from "./errors.ts";

/**
 * Why a session ended, mirroring proc_socket_server's exits:
 * - `"normal"`: the handler returned while the connection was open;
 * - `"socket_closed"`: the connection was closed (by the peer, by
 *   `session.close()` or by a stop) before the handler returned, or the
 *   handler let `send()`'s `socket_closed` error propagate;
 * - `"socket_error"`: the connection failed, or the peer broke the framing
 *   (`packet_too_large`, `truncated_packet`), and the handler let the error
 *   from `recv()`, iteration or `send()` propagate;
 * - `"timeout"`: the idle timeout fired and the handler let the error
 *   propagate;
 * - `"crash"`: the handler threw or rejected with an error of its own (any
 *   error the session did not raise, whatever its code).
 *
 * @example Counting how sessions end
 * ```ts
 * import type { SessionEndReason } from "@pico/socket-server";
 * const ended: Record<SessionEndReason, number> = {
 *   normal: 0, socket_closed: 0, socket_error: 0, timeout: 0, crash: 0,
 * };
 * ```
 */
export type SessionEndReason =
  | "normal"
  | "socket_closed"
  | "socket_error"
  | "timeout"
  | "crash";

/**
 * Errors a session raised itself, with the reason a handler that lets one
 * propagate ends with; any other error a handler throws is a crash.
 */
const raisedReasons = new WeakMap<object, SessionEndReason>();

/** Marks `error` as raised by a session, ending it with `reason` if a handler lets it propagate. */
export function raise(error: SocketServerError, reason: SessionEndReason): SocketServerError {
  raisedReasons.set(error, reason);
  return error;
}

/**
 * The reason a session ended, given whether its handler failed and with
 * what, and whether its connection was closed by then.
 */
export function endReason(closed: boolean, handlerError: unknown, failed: boolean): SessionEndReason {
  if (!failed) return closed ? "socket_closed" : "normal";
  const raised = typeof handlerError === "object" && handlerError !== null
    ? raisedReasons.get(handlerError)
    : undefined;
  return raised ?? "crash";
}
