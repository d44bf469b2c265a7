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

import { setDefaultTransport } from "./src/default_transport.ts";

// The running runtime's adapter, loaded when the first server without a
// `transport` option starts: importing the package loads no socket API.
setDefaultTransport(() =>
  "Deno" in globalThis
    ? import("./adapters/deno.ts").then((module) => module.denoTransport)
    : "Bun" in globalThis
    ? import("./adapters/bun.ts").then((module) => module.bunTransport)
    : import("./adapters/node.ts").then((module) => module.nodeTransport)
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
export {
  type RefusedConnection,
  type RegisteredServer,
  type ServerOptions,
  type ServerState,
  type ServerStatus,
  type SessionHandler,
  SocketServer,
  type StopOptions,
  type StopResult,
  type ProxyProtocolOptions,
  type TlsOptions,
  type WorkersOptions,
} from "./src/server.ts";
export type { SessionEndReason } from "./src/end_reason.ts";
export type { RecvOptions, Session, SessionInfo, SessionOptions } from "./src/session.ts";
export type { SocketAddress } from "./src/transport.ts";
