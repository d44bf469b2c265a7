/**
 * Every option a caller gives, checked in one place, with its default:
 * the server's (`ServerOptions`), the sessions' (`SessionOptions`) and the
 * packet type and size. Each failure is an `invalid_argument` error naming
 * the value.
 *
 * @module
 */

import { invalidArgument } from "./errors.ts";
import type { PacketType } from "./framing.ts";
import type { RefusedConnection, ServerOptions, SessionHandler } from "./server.ts";
import type { SessionEndReason } from "./end_reason.ts";
import type { Session, SessionOptions } from "./session.ts";
import type { Transport } from "./transport.ts";

/** Checks a packet type given by a caller; throws a clear error otherwise. */
export function validatePacketType(packetType: unknown): PacketType {
  if (
    packetType === 0 || packetType === 1 || packetType === 2 ||
    packetType === 4 || packetType === "line"
  ) {
    return packetType;
  }
  throw invalidArgument("packet type", packetType, '0, 1, 2, 4 or "line"');
}

/** Checks a packet size given by a caller; throws a clear error otherwise. */
export function validatePacketSize(packetSize: unknown): number {
  if (
    typeof packetSize === "number" && Number.isSafeInteger(packetSize) &&
    packetSize >= 0
  ) {
    return packetSize;
  }
  throw invalidArgument("packet size", packetSize, "an integer of 0 or more");
}

/** A server's options, checked, defaults applied. */
export interface ResolvedServerOptions {
  name: string | undefined;
  port: number;
  hostname: string;
  max: number;
  handler: SessionHandler;
  packetType: PacketType;
  packetSize: number;
  // Checked; the write bound's default is the transport's, applied once it is known.
  session: ResolvedSessionOptions;
  /** Whether the session options set writeHighWaterMark (else the transport's applies). */
  writeBoundGiven: boolean;
  backlog: number;
  transport: Transport | undefined;
  onError: (error: unknown, session?: Session) => void;
  onSessionStart: ((session: Session) => void) | undefined;
  onSessionEnd: ((session: Session, reason: SessionEndReason, error?: unknown) => void) | undefined;
  onRefused: ((info: RefusedConnection) => void) | undefined;
}

function isInteger(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function reportError(error: unknown, session?: Session): void {
  const where = session === undefined
    ? "failed to accept a connection"
    : `session ${session.id} from ${session.remoteAddress.hostname}:${session.remoteAddress.port} crashed`;
  console.error(`pico-socket-server: ${where}:`, error);
}

/** Checks the options of a start call and applies defaults; throws `invalid_argument`. */
export function resolveServerOptions(options: ServerOptions): ResolvedServerOptions {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("server options", options, "an object");
  }
  const { name, port = 0, hostname = "0.0.0.0", max, handler, backlog = 4096 } = options;
  if (name !== undefined && (typeof name !== "string" || name === "")) {
    throw invalidArgument("server name", name, "a non-empty string");
  }
  if (!isInteger(port, 0, 65535)) throw invalidArgument("port", port, "an integer from 0 to 65535");
  if (typeof hostname !== "string" || hostname === "") {
    throw invalidArgument("hostname", hostname, "a non-empty string");
  }
  checkMax(max);
  if (typeof handler !== "function") throw invalidArgument("handler", handler, "a function");
  if (!isInteger(backlog, 1, Number.MAX_SAFE_INTEGER)) {
    throw invalidArgument("backlog", backlog, "an integer of 1 or more");
  }
  const transport = options.transport;
  if (transport !== undefined && (typeof transport !== "object" || typeof transport?.listen !== "function")) {
    throw invalidArgument("transport", transport, "an object with a listen() method");
  }
  return {
    name,
    port,
    hostname,
    max,
    handler,
    packetType: validatePacketType(options.packet ?? 0),
    packetSize: validatePacketSize(options.packetSize ?? 0),
    session: resolveSessionOptions(options.session),
    writeBoundGiven: options.session?.writeHighWaterMark !== undefined,
    backlog,
    transport,
    onError: options.onError ?? reportError,
    onSessionStart: options.onSessionStart,
    onSessionEnd: options.onSessionEnd,
    onRefused: options.onRefused,
  };
}

/** Checks a session limit. */
export function checkMax(max: unknown): asserts max is number {
  if (!isInteger(max, 1, Number.MAX_SAFE_INTEGER)) throw invalidArgument("max", max, "an integer of 1 or more");
}

/** The settings a session runs with, defaults applied. */
export interface ResolvedSessionOptions {
  noDelay: boolean;
  keepAlive: boolean;
  keepAliveDelayMs: number;
  idleTimeoutMs: number;
  readHighWaterMark: number;
  writeHighWaterMark: number;
  lingerMs: number;
}

/**
 * Applies defaults to caller's session options and checks them; the write
 * bound's default is the transport's when it has one.
 */
export function resolveSessionOptions(
  options: SessionOptions = {},
  writeHighWaterMark: number = 64 * 1024,
): ResolvedSessionOptions {
  const resolved: ResolvedSessionOptions = {
    noDelay: options.noDelay ?? true,
    keepAlive: options.keepAlive ?? false,
    keepAliveDelayMs: options.keepAliveDelayMs ?? 60_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 0,
    readHighWaterMark: options.readHighWaterMark ?? 256 * 1024,
    writeHighWaterMark: options.writeHighWaterMark ?? writeHighWaterMark,
    lingerMs: options.lingerMs ?? 5_000,
  };
  for (
    const key of ["keepAliveDelayMs", "idleTimeoutMs", "readHighWaterMark", "writeHighWaterMark", "lingerMs"] as const
  ) {
    const value = resolved[key];
    if (!(typeof value === "number" && value >= 0 && Number.isFinite(value))) {
      throw invalidArgument(`session option ${key}`, value, "a number of 0 or more");
    }
  }
  return resolved;
}
