/**
 * The process-wide registry of servers by name. It lives on `globalThis`
 * under a registered symbol, so a module loaded twice (two copies, two
 * versions) still shares one registry, as Erlang's registered names do.
 * It holds any object with a name; what a registered server offers is
 * `RegisteredServer` (server.ts).
 *
 * @module
 */

import { SocketServerError } from "./errors.ts";

/** What the registry needs of a server: its name. */
export interface Named {
  /** The registered name. */
  readonly name: string;
}

const REGISTRY_KEY = Symbol.for("pico-socket-server.registry.v1");

function servers(): Map<string, Named> {
  const holder = globalThis as unknown as Record<symbol, { servers: Map<string, Named> } | undefined>;
  return (holder[REGISTRY_KEY] ??= { servers: new Map() }).servers;
}

/** The name a server on `port` (or Unix socket `path`) gets when none is given. */
export function defaultServerName(portOrPath: number | string): string {
  return `picoSocketServer_${portOrPath}`;
}

/** Registers `server` under its name; throws `name_in_use` if taken. */
export function register(server: Named): void {
  const registered = servers();
  if (registered.has(server.name)) {
    throw new SocketServerError(
      `A server named '${server.name}' is already registered`,
      "name_in_use",
    );
  }
  registered.set(server.name, server);
}

/** Removes `server`'s name, if it is still registered to that server. */
export function unregister(server: Named): void {
  const registered = servers();
  if (registered.get(server.name) === server) registered.delete(server.name);
}

/** The server registered under `name`, if any. */
export function lookup(name: string): Named | undefined {
  return servers().get(name);
}
