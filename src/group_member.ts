/**
 * One member of a group of servers on one port (`workers: n`), in its worker
 * thread: it loads the handler module, runs a server that shares the port
 * and the group's limit, and tells the main thread of its sessions, errors
 * and counters; it stops, suspends, resumes and closes sessions when asked.
 * Also the messages between the two sides and how an error crosses them.
 *
 * @module
 */

import { startServer } from "./api.ts";
import type { SessionEndReason } from "./end_reason.ts";
import { SocketServerError } from "./errors.ts";
import { memberOptions, type ServerOptions, type SessionHandler, type SocketServer } from "./server.ts";
import { type Session, setThreadWorker } from "./session.ts";
import { SharedSlots } from "./shared_slots.ts";
import type { MemberChannel, SocketAddress } from "./transport.ts";

// How often a member looks whether its counters changed, to report them.
const STATUS_EVERY_MS = 100;

/** A server's options that can cross to a thread (no functions, no transport). */
export type MemberSettings = Omit<
  ServerOptions,
  "handler" | "transport" | "onError" | "onSessionStart" | "onSessionEnd" | "onRefused"
>;

/** What a worker thread is started with. */
export interface MemberInit {
  /** Its number in the group, 1 to n. */
  worker: number;
  /** The group's SharedSlots buffer. */
  slots: SharedArrayBuffer;
  /** The handler module's URL or specifier. */
  module: string;
  options: MemberSettings;
  /** Whether to report each refused connection (the main thread has onRefused). */
  relayRefused: boolean;
}

/** A session as it crosses to the main thread. */
export interface WireSession {
  id: number;
  worker: number;
  remoteAddress: SocketAddress;
  localAddress: SocketAddress;
  proxyAddress?: SocketAddress;
  startedAt: number;
  encrypted: boolean;
  alpnProtocol: string | null;
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
}

/** An error as it crosses a thread: what a user reads of it. */
export interface WireError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
}

/** A member's counters that only it knows. */
export interface MemberStatus {
  handshaking: number;
  handshakeFailures: number;
  proxyErrors: number;
  refused: number;
  acceptErrors: number;
  waiting: number;
}

/** What a member tells the main thread. */
export type MemberMessage =
  | { type: "listening"; port: number }
  | { type: "failed"; error: WireError }
  | { type: "start"; seq: number; session: WireSession }
  | { type: "end"; seq: number; session: WireSession; reason: SessionEndReason; error?: WireError }
  | { type: "error"; error: WireError; session?: WireSession }
  | { type: "refused"; remoteAddress: SocketAddress; reason: "backlog" | "per_address" }
  | { type: "status"; status: MemberStatus }
  | { type: "reply"; call: number; result?: unknown; error?: WireError };

/** What the main thread asks of a member. */
export type GroupMessage =
  | { type: "call"; call: number; op: "stop" | "suspend" | "resume"; timeoutMs?: number }
  | { type: "close"; id: number };

/**
 * An error, as it can cross a thread; never throws, whatever a handler
 * threw (a value whose every property throws, a symbol, a cyclic object).
 */
export function toWire(error: unknown): WireError {
  try {
    if (!(error instanceof Error)) return { name: "Error", message: typeof error === "symbol" ? error.toString() : String(error) };
    const wire: WireError = { name: String(error.name), message: String(error.message) };
    if (typeof error.stack === "string") wire.stack = error.stack;
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string") wire.code = code;
    return wire;
  } catch {
    return { name: "Error", message: "a value that cannot be described" };
  }
}

/** An error that crossed a thread, back as an Error (a SocketServerError when it has a code). */
export function fromWire(wire: WireError): Error {
  const error = wire.code === undefined ? new Error(wire.message) : new SocketServerError(wire.message, wire.code);
  error.name = wire.name;
  if (wire.stack !== undefined) error.stack = wire.stack;
  return error;
}

function describe(session: Session): WireSession {
  const wire: WireSession = {
    id: session.id,
    worker: session.worker,
    remoteAddress: session.remoteAddress,
    localAddress: session.localAddress,
    startedAt: session.startedAt,
    encrypted: session.encrypted,
    alpnProtocol: session.alpnProtocol,
    bytesIn: session.bytesIn,
    bytesOut: session.bytesOut,
    packetsIn: session.packetsIn,
    packetsOut: session.packetsOut,
  };
  if (session.proxyAddress !== undefined) wire.proxyAddress = session.proxyAddress;
  return wire;
}

/** The handler module's default export; a clear error when it has none. */
async function loadHandler(specifier: string): Promise<SessionHandler> {
  let module: { default?: unknown };
  try {
    module = await import(specifier);
  } catch (error) {
    throw new SocketServerError(
      `Cannot load the handler module ${specifier}: ${error instanceof Error ? error.message : String(error)}`,
      "invalid_argument",
      { cause: error },
    );
  }
  if (typeof module.default !== "function") {
    throw new SocketServerError(
      `The handler module ${specifier} has no default export that is a function (the session handler)`,
      "invalid_argument",
    );
  }
  return module.default as SessionHandler;
}

/**
 * Runs one member of a group in this thread until the main thread stops it
 * (or ends the thread).
 */
export async function runMember(channel: MemberChannel, init: MemberInit): Promise<void> {
  const post = (message: MemberMessage) => channel.post(message);
  setThreadWorker(init.worker);
  const slots = new SharedSlots(init.slots, 0, init.worker - 1);
  const sessions = new Map<number, Session>();
  let server: SocketServer;
  try {
    const handler = await loadHandler(init.module);
    server = await startServer(memberOptions({
      ...init.options,
      handler,
      onSessionStart: (session) => {
        sessions.set(session.id, session);
        post({ type: "start", seq: slots.nextSequence(), session: describe(session) });
      },
      onSessionEnd: (session, reason, error) => {
        sessions.delete(session.id);
        const message: MemberMessage = { type: "end", seq: slots.nextSequence(), session: describe(session), reason };
        if (error !== undefined) message.error = toWire(error);
        post(message);
      },
      onError: (error, session) => {
        post({ type: "error", error: toWire(error), session: session && describe(session) });
      },
      onRefused: init.relayRefused
        ? ({ remoteAddress, reason }) => post({ type: "refused", remoteAddress, reason })
        : undefined,
    }, slots));
  } catch (error) {
    post({ type: "failed", error: toWire(error) });
    return;
  }
  post({ type: "listening", port: server.port });

  let reported = "";
  const report = () => {
    const { handshaking, handshakeFailures, proxyErrors, refused, acceptErrors, waiting } = server.status();
    const status: MemberStatus = { handshaking, handshakeFailures, proxyErrors, refused, acceptErrors, waiting };
    const key = `${handshaking} ${handshakeFailures} ${proxyErrors} ${refused} ${acceptErrors} ${waiting}`;
    if (key !== reported) post({ type: "status", status });
    reported = key;
  };
  const timer = setInterval(report, STATUS_EVERY_MS);

  channel.onMessage(async (received) => {
    const message = received as GroupMessage;
    if (message.type === "close") {
      sessions.get(message.id)?.close();
      return;
    }
    const { call, op } = message;
    try {
      const result = op === "stop"
        ? await server.stop({ timeoutMs: message.timeoutMs })
        : op === "suspend"
        ? await server.suspend()
        : await server.resume();
      if (op === "stop") clearInterval(timer);
      report();
      post({ type: "reply", call, result });
    } catch (error) {
      report();
      post({ type: "reply", call, error: toWire(error) });
    }
  });
}
