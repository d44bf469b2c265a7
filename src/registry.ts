/**
 * The process-wide registry of servers by name. It lives on `globalThis`
 * under a registered symbol, so a module loaded twice (two copies, two
 * versions) still shares one registry, as Erlang's registered names do.
 *
 * @module
 */

import { SocketServerError } from "./errors.ts";
import type { ServerState, ServerStatus, StopOptions, StopResult } from "./server.ts";
import type { Session } from "./session.ts";
import type { Transport } from "./transport.ts";

/**
 * What the process-wide registry holds of a server: the part of
 * `SocketServer` that the look-up functions use. Structural, so that a
 * server started by another copy of this module (another version, or a
 * bundled copy) is found and served as well.
 *
 * @example Looking at any registered server
 * ```ts
 * import { startServer, type RegisteredServer } from "@pico/socket-server";
 * const server: RegisteredServer = await startServer(0, 10, () => {});
 * console.log(server.name, server.port, server.state);
 * await server.stop();
 * ```
 */
export interface RegisteredServer {
  /** The registered name. */
  readonly name: string;
  /** The port listened on. */
  readonly port: number;
  /** Where the server is in its life. */
  readonly state: ServerState;
  /** Resolves once the server listens; rejects if its listen failed. */
  readonly listening: Promise<unknown>;
  /** A snapshot of the server's counters. */
  status(): ServerStatus;
  /** The running sessions. */
  children(): Session[];
  /** Stops the server, at once or gracefully. */
  stop(options?: StopOptions): Promise<StopResult>;
}

interface Registry {
  servers: Map<string, RegisteredServer>;
  defaultTransport: Transport | undefined;
}

const REGISTRY_KEY = Symbol.for("pico-socket-server.registry.v1");

function registry(): Registry {
  const holder = globalThis as unknown as Record<symbol, Registry | undefined>;
  return holder[REGISTRY_KEY] ??= { servers: new Map(), defaultTransport: undefined };
}

/** The name a server on `port` gets when none is given. */
export function defaultServerName(port: number): string {
  return `picoSocketServer_${port}`;
}

/** Registers `server` under its name; throws `name_in_use` if taken. */
export function register(server: RegisteredServer): void {
  const servers = registry().servers;
  if (servers.has(server.name)) {
    throw new SocketServerError(
      `A server named '${server.name}' is already registered`,
      "name_in_use",
    );
  }
  servers.set(server.name, server);
}

/** Removes `server`'s name, if it is still registered to that server. */
export function unregister(server: RegisteredServer): void {
  const servers = registry().servers;
  if (servers.get(server.name) === server) servers.delete(server.name);
}

/** The server registered under `name`, if any. */
export function lookup(name: string): RegisteredServer | undefined {
  return registry().servers.get(name);
}

/** Sets the transport used when a start call names none (done by `mod.ts`). */
export function setDefaultTransport(transport: Transport): void {
  registry().defaultTransport ??= transport;
}

/** The transport used when a start call names none. */
export function getDefaultTransport(): Transport {
  const transport = registry().defaultTransport;
  if (transport === undefined) {
    throw new SocketServerError(
      "No transport for this runtime: pass the transport option",
      "invalid_argument",
    );
  }
  return transport;
}
