/**
 * Sessions as OpenTelemetry spans, and a gauge of the sessions running, from
 * the server's diagnostics channels — no change to the server or the
 * handler: `node examples/opentelemetry.ts` (or `deno run -A`, `bun`), then
 * `nc 127.0.0.1 9926`; each session prints its span when it ends, and the
 * gauge every 10 s. Uses `@opentelemetry/api` and, to print, the SDK (dev
 * dependencies of this repository; the package itself depends on nothing).
 *
 * @module
 */

import diagnostics from "node:diagnostics_channel";
import process from "node:process";
import { type Attributes, type Meter, type Span, SpanKind, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import {
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_TRANSPORT,
  ATTR_SERVER_PORT,
} from "@opentelemetry/semantic-conventions";
import { type Session, type SocketServer, startServer } from "../mod.ts";

/** What the session channel's events carry. */
interface SessionEvent {
  server: SocketServer;
  session: Session;
  error?: unknown;
  result?: unknown;
}

/**
 * Makes every session of every server in this thread a span (kind SERVER,
 * with the semantic conventions' network and server attributes; an error
 * recorded and the status set when the handler fails), and counts the
 * sessions running in the up-down counter `pico_socket_server.sessions.active`.
 * Returns what undoes it.
 */
export function instrumentSessions(tracer: Tracer, meter: Meter): () => void {
  const channel = diagnostics.tracingChannel("pico-socket-server.session");
  const active = meter.createUpDownCounter("pico_socket_server.sessions.active", {
    description: "Sessions running now",
    unit: "{session}",
  });
  const spans = new WeakMap<Session, { span: Span; attributes: Attributes }>();
  const finish = ({ session }: SessionEvent) => {
    const entry = spans.get(session);
    if (entry === undefined) return;
    spans.delete(session);
    entry.span.end();
    active.add(-1, { [ATTR_SERVER_PORT]: entry.attributes[ATTR_SERVER_PORT] });
  };
  const handlers = {
    start(message: unknown) {
      const { server, session } = message as SessionEvent;
      const attributes: Attributes = {
        [ATTR_NETWORK_PEER_ADDRESS]: session.remoteAddress.hostname,
        [ATTR_NETWORK_PEER_PORT]: session.remoteAddress.port,
        [ATTR_NETWORK_TRANSPORT]: server.path === undefined ? "tcp" : "unix",
        [ATTR_SERVER_PORT]: server.port,
      };
      spans.set(session, { span: tracer.startSpan("pico-socket-server session", { kind: SpanKind.SERVER, attributes }), attributes });
      active.add(1, { [ATTR_SERVER_PORT]: server.port });
    },
    // A handler that returned (or threw) at once: `end` carries its result
    // or error, and no asyncEnd follows.
    end(message: unknown) {
      const event = message as SessionEvent;
      if ("result" in event || "error" in event) finish(event);
    },
    asyncStart() {},
    asyncEnd(message: unknown) {
      finish(message as SessionEvent);
    },
    error(message: unknown) {
      const { session, error } = message as SessionEvent;
      const span = spans.get(session)?.span;
      if (span === undefined) return;
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
    },
  };
  channel.subscribe(handlers);
  return () => channel.unsubscribe(handlers);
}

if (import.meta.main) {
  const { BasicTracerProvider, ConsoleSpanExporter, SimpleSpanProcessor } = await import("@opentelemetry/sdk-trace-base");
  const { ConsoleMetricExporter, MeterProvider, PeriodicExportingMetricReader } = await import("@opentelemetry/sdk-metrics");
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())] });
  const meterProvider = new MeterProvider({
    readers: [new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter(), exportIntervalMillis: 10_000 })],
  });
  instrumentSessions(tracerProvider.getTracer("pico-socket-server"), meterProvider.getMeter("pico-socket-server"));
  const server = await startServer({
    hostname: "127.0.0.1",
    port: Number(process.env.PORT ?? 9926),
    max: 100,
    packet: "line",
    handler: async (session) => {
      for await (const line of session) await session.send(line);
    },
  });
  console.log(`echo with OpenTelemetry on 127.0.0.1:${server.port}`);
  process.once("SIGINT", async () => {
    await server.stop({ timeoutMs: 1000 });
    await meterProvider.shutdown();
    process.exit(0);
  });
}
