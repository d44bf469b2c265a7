/**
 * pico-socket-server keeps track of a number of TCP sessions for one server,
 * as `proc_socket_server` does in Erlang's UBF: start and stop it, cap how
 * many sessions run at once (more connections wait, served in arrival
 * order), list them, ask its port and status. One handler function is served
 * unchanged by Deno, Bun and Node; the adapter for the running runtime is
 * picked here, and any transport can be passed as the `transport` option.
 *
 * @example A line echo server that runs on Deno, Bun and Node
 * ```ts
 * import { startServer, stopServer } from "@pico/socket-server";
 *
 * const server = await startServer({
 *   port: 0,
 *   max: 100,
 *   packet: "line",
 *   handler: async (session) => {
 *     for await (const line of session) await session.send(line);
 *   },
 * });
 * console.log(`${server.name} listens on port ${server.port}`);
 * await stopServer(server);
 * ```
 *
 * @module
 */

import { bunTransport } from "./adapters/bun.ts";
import { denoTransport } from "./adapters/deno.ts";
import { nodeTransport } from "./adapters/node.ts";
import { setDefaultTransport } from "./src/registry.ts";

setDefaultTransport(
  "Deno" in globalThis ? denoTransport : "Bun" in globalThis ? bunTransport : nodeTransport,
);

export {
  type ServerRef,
  serverChildren,
  serverPort,
  serverStatus,
  startRawServer,
  startServer,
  stopServer,
} from "./src/api.ts";
export { SocketServerError, type SocketServerErrorCode } from "./src/errors.ts";
export type { PacketType } from "./src/framing.ts";
export type { RegisteredServer } from "./src/registry.ts";
export {
  type RefusedConnection,
  type ServerOptions,
  type ServerState,
  type ServerStatus,
  type SessionHandler,
  SocketServer,
  type StopOptions,
  type StopResult,
} from "./src/server.ts";
export { type RecvOptions, Session, type SessionEndReason, type SessionOptions } from "./src/session.ts";
export type {
  Connection,
  ConnectionEvents,
  Listener,
  ListenOptions,
  SocketAddress,
  Transport,
} from "./src/transport.ts";
