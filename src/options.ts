/**
 * Every option a caller gives, checked in one place, with its default:
 * the server's (`ServerOptions`), the sessions' (`SessionOptions`) and the
 * packet type and size. Each failure is an `invalid_argument` error naming
 * the value.
 *
 * @module
 */

import { type AddressRange, parseRange } from "./address_match.ts";
import { invalidArgument } from "./errors.ts";
import type { PacketType } from "./framing.ts";
import type { RefusedConnection, ServerOptions, SessionHandler, WorkersOptions } from "./server.ts";
import type { SessionEndReason } from "./end_reason.ts";
import type { Session, SessionInfo, SessionOptions } from "./session.ts";
import type { TlsSettings, Transport } from "./transport.ts";
import type { MemberSettings } from "./group_member.ts";

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
  /** A Unix domain socket's path, instead of `hostname` and `port`. */
  path: string | undefined;
  /** TLS settings, text and defaults made uniform. */
  tls: TlsSettings | undefined;
  handshakeTimeoutMs: number;
  /** With `proxyProtocol`: the trusted ranges (undefined: every address) and the header's time limit. */
  proxy: { trusted: AddressRange[] | undefined; timeoutMs: number } | undefined;
  /** At most this many sessions per client address (Infinity: no limit). */
  maxPerAddress: number;
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

/** The default `onError`: logs the error and where it came from. */
export function reportError(error: unknown, session?: SessionInfo): void {
  const where = session === undefined
    ? (error as { code?: unknown } | null)?.code === "worker_exit" ? "a worker thread ended" : "failed to accept a connection"
    : `session ${session.id}${session.worker ? ` (worker ${session.worker})` : ""} from ` +
      `${session.remoteAddress.hostname}:${session.remoteAddress.port} crashed`;
  console.error(`pico-socket-server: ${where}:`, error);
}

/** Checks the options of a start call and applies defaults; throws `invalid_argument`. */
export function resolveServerOptions(options: ServerOptions): ResolvedServerOptions {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("server options", options, "an object");
  }
  const { name, port = 0, hostname = "0.0.0.0", max, handler, backlog = 4096, handshakeTimeoutMs = 5000 } = options;
  if (name !== undefined && (typeof name !== "string" || name === "")) {
    throw invalidArgument("server name", name, "a non-empty string");
  }
  if (!isInteger(port, 0, 65535)) throw invalidArgument("port", port, "an integer from 0 to 65535");
  if (typeof hostname !== "string" || hostname === "") {
    throw invalidArgument("hostname", hostname, "a non-empty string");
  }
  const path = resolvePath(options);
  if (!(typeof handshakeTimeoutMs === "number" && handshakeTimeoutMs >= 0 && !Number.isNaN(handshakeTimeoutMs))) {
    throw invalidArgument("handshakeTimeoutMs", handshakeTimeoutMs, "a number of milliseconds, 0 (no limit) or more");
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
    path,
    tls: resolveTls(options.tls),
    handshakeTimeoutMs,
    proxy: resolveProxy(options.proxyProtocol),
    maxPerAddress: resolveMaxPerAddress(options.maxPerAddress),
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

/** A group's checked settings: how many threads, and the handler module they load. */
export interface ResolvedWorkers {
  count: number;
  module: string;
  /** What each thread's server is started with: the options without the handler, callbacks and workers. */
  settings: MemberSettings;
}

// Enough for any machine; a typo of 10000 threads is refused.
const MAX_WORKERS = 1024;

/**
 * With `workers`, the group's settings, checked; without, `undefined` (a
 * handler module given without `workers` is refused).
 */
export function resolveWorkers(options: ServerOptions | WorkersOptions): ResolvedWorkers | undefined {
  if (typeof options !== "object" || options === null) return undefined;
  const { handler } = options;
  if (!("workers" in options) || options.workers === undefined) {
    if (typeof handler === "string" || handler instanceof URL) {
      throw invalidArgument("handler", String(handler), "a function (a module is for servers started with workers)");
    }
    return undefined;
  }
  const { workers, handler: _handler, onError, onSessionStart, onSessionEnd, onRefused: _onRefused, ...settings } =
    options as WorkersOptions;
  let count: number;
  if (workers === "auto") {
    count = Math.max(1, (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1);
  } else if (isInteger(workers, 1, MAX_WORKERS)) {
    count = workers;
  } else {
    throw invalidArgument("workers", workers, `an integer from 1 to ${MAX_WORKERS}, or "auto"`);
  }
  if ("transport" in options && options.transport !== undefined) {
    throw invalidArgument("transport", options.transport, "none with workers: each worker thread uses its runtime's sockets");
  }
  if ("path" in options && options.path !== undefined) {
    throw invalidArgument(
      "path",
      options.path,
      "none with workers: the threads share a TCP port (SO_REUSEPORT), which Unix domain sockets cannot share; " +
        "run one server on the path",
    );
  }
  for (const [name, callback] of Object.entries({ onError, onSessionStart, onSessionEnd })) {
    if (callback !== undefined && typeof callback !== "function") throw invalidArgument(name, callback, "a function");
  }
  return { count, module: handlerModule(handler), settings };
}

/** A handler module as a thread can import it: a URL, an absolute path as a file URL, or a bare specifier. */
function handlerModule(handler: unknown): string {
  if (handler instanceof URL) return handler.href;
  if (typeof handler !== "string" || handler === "") {
    throw invalidArgument(
      "handler",
      handler,
      "with workers, the handler's module: a URL (new URL(\"./handler.ts\", import.meta.url)) or a specifier, " +
        "whose default export is the handler",
    );
  }
  if (handler.startsWith("/")) return new URL(`file://${encodeURI(handler).replace(/[?#]/g, encodeURIComponent)}`).href;
  if (handler.startsWith("./") || handler.startsWith("../")) {
    throw invalidArgument(
      "handler",
      handler,
      "a module a worker thread can find: a relative path has no base there; pass new URL(path, import.meta.url)",
    );
  }
  return handler;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// sun_path holds 108 bytes on Linux, the last one a NUL.
const PATH_MAX_BYTES = 107;

/** The Unix socket path, checked: not with a port or hostname, and short enough to bind. */
function resolvePath(options: ServerOptions): string | undefined {
  const { path } = options;
  if (path === undefined) return undefined;
  if (typeof path !== "string" || path === "" || path.includes("\0")) {
    throw invalidArgument("path", path, "a non-empty file path");
  }
  const bytes = textEncoder.encode(path).length;
  if (bytes > PATH_MAX_BYTES) {
    throw invalidArgument("path", path, `a path of at most ${PATH_MAX_BYTES} bytes (a Unix socket's limit), not ${bytes}`);
  }
  if ((options.port ?? 0) !== 0 || options.hostname !== undefined) {
    throw invalidArgument("path", path, "given without port and hostname (a Unix socket has neither)");
  }
  return path;
}


/** The proxyProtocol option, checked: its trusted ranges parsed, its time limit. */
function resolveProxy(proxy: ServerOptions["proxyProtocol"]): ResolvedServerOptions["proxy"] {
  if (proxy === undefined || proxy === false) return undefined;
  if (proxy === true) return { trusted: undefined, timeoutMs: 5000 };
  if (typeof proxy !== "object" || proxy === null) {
    throw invalidArgument("proxyProtocol", proxy, "true, or an object with trusted and timeoutMs");
  }
  const { trusted, timeoutMs = 5000 } = proxy;
  if (!(typeof timeoutMs === "number" && timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    throw invalidArgument("proxyProtocol.timeoutMs", timeoutMs, "a number of milliseconds above 0");
  }
  if (trusted !== undefined && !Array.isArray(trusted)) {
    throw invalidArgument("proxyProtocol.trusted", trusted, "an array of CIDR ranges or addresses");
  }
  return { trusted: trusted?.map(parseRange), timeoutMs };
}

function resolveMaxPerAddress(max: unknown): number {
  if (max === undefined) return Infinity;
  if (!isInteger(max, 1, Number.MAX_SAFE_INTEGER)) throw invalidArgument("maxPerAddress", max, "an integer of 1 or more");
  return max;
}

/** The TLS option, checked, PEM as text, ALPN protocols as a list. */
function resolveTls(tls: ServerOptions["tls"]): TlsSettings | undefined {
  if (tls === undefined) return undefined;
  if (typeof tls !== "object" || tls === null) throw invalidArgument("tls", tls, "an object with cert and key");
  const pem = (what: "cert" | "key"): string => {
    const value: unknown = tls[what];
    const text = value instanceof Uint8Array ? textDecoder.decode(value) : value;
    if (typeof text !== "string" || !text.includes("-----BEGIN ")) {
      throw invalidArgument(`tls.${what}`, value, "PEM text (a string or its bytes)");
    }
    return text;
  };
  const { alpnProtocols = [] } = tls;
  if (
    !Array.isArray(alpnProtocols) ||
    !alpnProtocols.every((protocol) =>
      typeof protocol === "string" && protocol !== "" && textEncoder.encode(protocol).length <= 255
    )
  ) {
    throw invalidArgument("tls.alpnProtocols", alpnProtocols, "an array of protocol names of 1 to 255 bytes");
  }
  return { cert: pem("cert"), key: pem("key"), alpnProtocols: [...alpnProtocols] };
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
