/**
 * Erlang's `proc_socket_server` API in TypeScript: start a
 * server, stop it, ask its port, status and sessions by reference.
 *
 * @module
 */

import { invalidArgument, SocketServerError } from "./errors.ts";
import type { PacketType } from "./framing.ts";
import { defaultServerName, lookup } from "./registry.ts";
import {
  type RegisteredServer,
  type ServerOptions,
  type ServerStatus,
  type SessionHandler,
  SocketServer,
  type StopOptions,
  type StopResult,
  type WorkersOptions,
} from "./server.ts";
import type { Session, SessionInfo, SessionOptions } from "./session.ts";

/**
 * How a server is named in `stopServer`, `serverPort`, `serverStatus` and
 * `serverChildren`: the server itself, its registered name, or a port number
 * (meaning the default name `picoSocketServer_<port>`).
 *
 * @example Three ways to name one server
 * ```ts
 * import { startServer, type ServerRef } from "@pico/socket-server";
 * const server = await startServer(0, 10, () => {});
 * const refs: ServerRef[] = [server, server.name, server.port];
 * await server.stop();
 * ```
 */
export type ServerRef = SocketServer<SessionInfo> | RegisteredServer | string | number;

/**
 * Starts a server, resolving once it listens. Four forms, as proc_socket_server's
 * `start_server/3` and `start_server/4`, plus options:
 * - `startServer(port, max, handler)`
 * - `startServer(name, port, max, handler)`
 * - `startServer(port, max, handler, options)` (more options, e.g. `hostname`)
 * - `startServer(options)`
 * - `startServer({ workers, handler: module, ... })`: on `workers` threads
 *   sharing the port and one exact `max` (see {@linkcode WorkersOptions})
 *
 * The positional forms use packet type `0` (raw), as proc_socket_server does. Rejects
 * with a {@linkcode SocketServerError}: `name_in_use`, `invalid_argument`, or
 * the listen failure's code (e.g. `EADDRINUSE`), leaving nothing registered.
 *
 * @param args The port, max and handler (and name or options), or an options object.
 * @returns The running server.
 * @example An echo server
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * const server = await startServer(0, 100, async (session) => {
 *   for await (const packet of session) await session.send(packet);
 * });
 * console.log(`listening on ${server.port} as ${server.name}`);
 * await server.stop();
 * ```
 */
export function startServer(
  ...args:
    | [port: number, max: number, handler: SessionHandler]
    | [name: string, port: number, max: number, handler: SessionHandler]
    | [port: number, max: number, handler: SessionHandler, options: Partial<ServerOptions>]
    | [options: ServerOptions]
): Promise<SocketServer>;
/**
 * Starts a server on `workers` threads, resolving once every thread
 * listens: each loads the handler module and listens on the same port, and
 * all share one exact `max` (see {@linkcode WorkersOptions}). Rejects as the
 * other forms do, and with `invalid_argument` when the handler module
 * cannot be loaded or has no default export function.
 *
 * @param options The options, with `workers` and the handler's module.
 * @returns The running server, standing for every thread.
 * @example Two threads
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * const server = await startServer({
 *   port: 0,
 *   max: 100,
 *   workers: 2,
 *   handler: new URL("./echo_handler.ts", import.meta.url),
 * });
 * console.log(server.status().workers); // 2
 * await server.stop();
 * ```
 */
export function startServer(options: WorkersOptions): Promise<SocketServer<SessionInfo>>;
export function startServer(
  ...args:
    | [port: number, max: number, handler: SessionHandler]
    | [name: string, port: number, max: number, handler: SessionHandler]
    | [port: number, max: number, handler: SessionHandler, options: Partial<ServerOptions>]
    | [options: ServerOptions | WorkersOptions]
): Promise<SocketServer<SessionInfo>> {
  return start(() => {
    if (args.length === 1) return args[0];
    if (typeof args[0] === "string") {
      const [name, port, max, handler] = args as [string, number, number, SessionHandler];
      return { name, port, max, handler };
    }
    const [port, max, handler, options] = args as [number, number, SessionHandler, Partial<ServerOptions>?];
    return { ...options, port, max, handler };
  });
}

/**
 * Starts a server with a packet type and size, as proc_socket_server's
 * `start_raw_server/5` and `start_raw_server/7`:
 * - `startRawServer(port, max, handler, packetType, packetSize)`
 * - `startRawServer(name, port, max, sessionOptions, handler, packetType, packetSize)`
 *
 * @param args The positional arguments of one of the two forms.
 * @returns The running server.
 * @example A server of 4-byte length-prefixed packets of at most 1 MiB
 * ```ts
 * import { startRawServer } from "@pico/socket-server";
 * const server = await startRawServer(0, 50, async (session) => {
 *   for await (const packet of session) await session.send(packet);
 * }, 4, 1024 * 1024);
 * await server.stop();
 * ```
 */
export function startRawServer(
  ...args:
    | [port: number, max: number, handler: SessionHandler, packetType: PacketType, packetSize: number]
    | [
      name: string,
      port: number,
      max: number,
      sessionOptions: SessionOptions,
      handler: SessionHandler,
      packetType: PacketType,
      packetSize: number,
    ]
): Promise<SocketServer> {
  return start(() => {
    if (args.length === 5) {
      const [port, max, handler, packet, packetSize] = args;
      return { port, max, handler, packet, packetSize };
    }
    if (args.length === 7) {
      const [name, port, max, session, handler, packet, packetSize] = args;
      return { name, port, max, session, handler, packet, packetSize };
    }
    throw new SocketServerError(
      `Invalid call: startRawServer takes 5 or 7 arguments, not ${(args as unknown[]).length}`,
      "invalid_argument",
    );
  });
}

async function start<S extends SessionInfo>(options: () => ServerOptions | WorkersOptions): Promise<SocketServer<S>> {
  const server = new SocketServer<S>(options());
  await server.listening;
  return server;
}

/**
 * Stops a server (see `SocketServer.stop`): at once, or gracefully with
 * `{ timeoutMs }`. An unknown reference resolves quietly (`{ ended: 0,
 * closed: 0 }`), as proc_socket_server's `ok`, so stopping twice is safe.
 *
 * @param ref The server, its name, or its port.
 * @param options `timeoutMs`: let sessions drain that long before closing them.
 * @returns How many sessions ended by themselves and how many were closed.
 * @example Stopping by name
 * ```ts
 * import { startServer, stopServer } from "@pico/socket-server";
 * await startServer("echo", 0, 10, () => {});
 * await stopServer("echo", { timeoutMs: 1000 });
 * await stopServer("echo"); // already gone: resolves
 * ```
 */
export async function stopServer(ref: ServerRef, options?: StopOptions): Promise<StopResult> {
  const server = typeof ref === "object" && ref !== null ? ref : lookup(nameOf(ref)) as RegisteredServer | undefined;
  return await server?.stop(options) ?? { ended: 0, closed: 0 };
}

/**
 * The port a server listens on (the real one if it was started on port 0).
 *
 * @param ref The server, its name, or its port.
 * @param timeoutMs How long to wait for a server that is registered but not
 *   yet listening; without it, wait until it listens or fails.
 * @returns The port.
 * @example Finding the port the OS picked
 * ```ts
 * import { serverPort, startServer } from "@pico/socket-server";
 * const server = await startServer("api", 0, 10, () => {});
 * console.log(await serverPort("api"));
 * await server.stop();
 * ```
 */
export async function serverPort(ref: ServerRef, timeoutMs?: number): Promise<number> {
  return (await find(ref, timeoutMs)).port;
}

/**
 * A snapshot of a server's counters: at least `{ num, max }`, as proc_socket_server.
 *
 * @param ref The server, its name, or its port.
 * @param timeoutMs How long to wait for a server not yet listening.
 * @returns The status; see {@linkcode ServerStatus}.
 * @example Reporting the load
 * ```ts
 * import { serverStatus, startServer } from "@pico/socket-server";
 * const server = await startServer(0, 10, () => {});
 * const { num, max } = await serverStatus(server.port);
 * console.log(`${num}/${max}`);
 * await server.stop();
 * ```
 */
export async function serverStatus(ref: ServerRef, timeoutMs?: number): Promise<ServerStatus> {
  return (await find(ref, timeoutMs)).status();
}

/**
 * The running sessions of a server (never the waiting connections).
 *
 * @param ref The server, its name, or its port.
 * @param timeoutMs How long to wait for a server not yet listening.
 * @returns The sessions, oldest first; each can be inspected and closed.
 * @example Closing every session
 * ```ts
 * import { serverChildren, startServer } from "@pico/socket-server";
 * const server = await startServer(0, 10, () => {});
 * for (const session of await serverChildren(server)) session.close();
 * await server.stop();
 * ```
 */
export function serverChildren<S extends SessionInfo>(ref: SocketServer<S>, timeoutMs?: number): Promise<S[]>;
/**
 * The running sessions of a server named by its name or port: its
 * {@linkcode Session}s, or for a server with workers, their
 * {@linkcode SessionInfo}.
 *
 * @param ref The server's name or port (or the server).
 * @param timeoutMs How long to wait for a server not yet listening.
 * @returns The sessions, oldest first.
 * @example Counting sessions by name
 * ```ts
 * import { serverChildren, startServer } from "@pico/socket-server";
 * const server = await startServer("api", 0, 10, () => {});
 * console.log((await serverChildren("api")).length);
 * await server.stop();
 * ```
 */
export function serverChildren(ref: ServerRef, timeoutMs?: number): Promise<SessionInfo[]>;
export async function serverChildren(ref: ServerRef, timeoutMs?: number): Promise<SessionInfo[]> {
  return (await find(ref, timeoutMs)).children();
}

function nameOf(ref: string | number): string {
  return typeof ref === "number" ? defaultServerName(ref) : ref;
}

function describe(ref: ServerRef): string {
  if (typeof ref === "object" && ref !== null) return `'${ref.name}'`;
  return typeof ref === "number" ? `on port ${ref}` : `'${ref}'`;
}

function retryLater(ref: ServerRef): SocketServerError {
  return new SocketServerError(`No server ${describe(ref)} is running`, "retrylater");
}

/** The running server `ref` names, waiting up to `timeoutMs` for one starting. */
async function find(ref: ServerRef, timeoutMs: number | undefined): Promise<RegisteredServer> {
  if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0)) {
    throw invalidArgument("timeout", timeoutMs, "a number of milliseconds, 0 or more");
  }
  let server: RegisteredServer | undefined;
  if (typeof ref === "object" && ref !== null) {
    server = ref.state === "starting" || lookup(ref.name) === ref ? ref : undefined;
  } else if (typeof ref === "string" || typeof ref === "number") {
    server = lookup(nameOf(ref)) as RegisteredServer | undefined;
  } else {
    throw invalidArgument("server reference", ref, "a server, a name or a port");
  }
  if (server === undefined) throw retryLater(ref);
  if (server.state === "starting") {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = timeoutMs === undefined ? undefined : new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      const outcome = await (timedOut ? Promise.race([server.listening, timedOut]) : server.listening);
      if (outcome === "timeout") {
        throw new SocketServerError(
          `Server ${describe(ref)} did not start listening within ${timeoutMs} ms`,
          "timeout",
        );
      }
    } catch (error) {
      if (error instanceof SocketServerError && error.code === "timeout") throw error;
      throw retryLater(ref);
    } finally {
      clearTimeout(timer);
    }
  }
  if (server.state === "starting" || server.state === "stopped") throw retryLater(ref);
  return server;
}
