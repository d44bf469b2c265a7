/**
 * What a server tells the runtime's own observability channels
 * (`node:diagnostics_channel`, which Node, Deno and Bun ship): a
 * TracingChannel `pico-socket-server.session` around each handler run, and
 * plain channels for refused connections, accept errors, TLS handshake
 * failures and PROXY header errors. The module is taken with
 * `process.getBuiltinModule`, so src/ imports no runtime module; where it
 * is missing nothing is traced. Nothing is published, and nothing
 * allocated for it, while no one subscribes.
 *
 * @module
 */

interface Channel {
  readonly hasSubscribers: boolean;
  publish(message: unknown): void;
  runStores<T>(context: unknown, fn: () => T): T;
}

interface TracingChannel {
  readonly start: Channel;
  readonly end: Channel;
  readonly asyncStart: Channel;
  readonly asyncEnd: Channel;
  readonly error: Channel;
}

interface DiagnosticsChannel {
  channel(name: string): Channel;
  tracingChannel(name: string): TracingChannel;
}

const diagnostics = (globalThis as {
  process?: { getBuiltinModule?: (id: string) => unknown };
}).process?.getBuiltinModule?.("node:diagnostics_channel") as DiagnosticsChannel | undefined;

/** The channels' names. */
export const CHANNELS = {
  session: "pico-socket-server.session",
  refused: "pico-socket-server.refused",
  acceptError: "pico-socket-server.accept-error",
  handshakeFailure: "pico-socket-server.handshake-failure",
  proxyError: "pico-socket-server.proxy-error",
} as const;

const session = diagnostics?.tracingChannel(CHANNELS.session);
/** Refused connections: `{ server, remoteAddress, reason, refused }`. */
export const refusedChannel: Channel | undefined = diagnostics?.channel(CHANNELS.refused);
/** Accepts that failed: `{ server, error }`. */
export const acceptErrorChannel: Channel | undefined = diagnostics?.channel(CHANNELS.acceptError);
/** TLS handshakes that failed or timed out: `{ server, remoteAddress, error }`. */
export const handshakeFailureChannel: Channel | undefined = diagnostics?.channel(CHANNELS.handshakeFailure);
/** Untrusted peers and bad PROXY headers: `{ server, remoteAddress, error }`. */
export const proxyErrorChannel: Channel | undefined = diagnostics?.channel(CHANNELS.proxyError);

/**
 * Whether anyone listens on the session TracingChannel. Its sub-channels
 * are asked: Bun's TracingChannel has no `hasSubscribers` of its own.
 */
export function tracingSessions(): boolean {
  return session !== undefined && (
    session.start.hasSubscribers || session.end.hasSubscribers || session.asyncStart.hasSubscribers ||
    session.asyncEnd.hasSubscribers || session.error.hasSubscribers
  );
}

/** What the session channel's events carry. */
export interface SessionTrace {
  server: unknown;
  session: unknown;
  error?: unknown;
  result?: unknown;
}

/**
 * Runs a handler inside the session TracingChannel, as `tracePromise`
 * would, for a handler that may also return at once: `start` and the
 * stores bound to it around the call, `end` after its synchronous part
 * (carrying `result` or `error` when the handler finished at once, as
 * `traceSync` does), `error` if it throws or rejects, then `asyncStart` and
 * `asyncEnd` once a returned promise settles. Returns (or throws) what the
 * handler did.
 */
export function traceHandler<R>(context: SessionTrace, run: () => R): R {
  const channel = session!;
  return channel.start.runStores(context, () => {
    try {
      const result = run();
      const settling = result as unknown as PromiseLike<unknown> | null | undefined;
      if (settling !== null && typeof settling === "object" && typeof settling.then === "function") {
        settling.then(
          (value) => {
            context.result = value;
            channel.asyncStart.publish(context);
            channel.asyncEnd.publish(context);
          },
          (error) => {
            context.error = error;
            channel.error.publish(context);
            channel.asyncStart.publish(context);
            channel.asyncEnd.publish(context);
          },
        );
      } else {
        context.result = result;
      }
      return result;
    } catch (error) {
      context.error = error;
      channel.error.publish(context);
      throw error;
    } finally {
      channel.end.publish(context);
    }
  });
}
