// examples/opentelemetry.ts with the OpenTelemetry SDK's in-memory
// exporters: each session a SERVER span with the semantic conventions'
// attributes, errors recorded, and the gauge of running sessions. Run on
// Node, Deno and Bun.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { instrumentSessions } from "../examples/opentelemetry.ts";
import { startServer } from "../mod.ts";
import { Client, until } from "./support/client.ts";

const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

test(`${runtime}: sessions as OpenTelemetry spans and a live-session gauge`, { timeout: 20_000 }, async () => {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const undo = instrumentSessions(tracerProvider.getTracer("test"), meterProvider.getMeter("test"));
  const gauge = async () => {
    const { resourceMetrics } = await reader.collect();
    const metric = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)
      .find((m) => m.descriptor.name === "pico_socket_server.sessions.active");
    return metric?.dataPoints.reduce((sum, point) => sum + (point.value as number), 0) ?? 0;
  };
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    max: 10,
    packet: "line",
    onError: () => {},
    handler: async (session) => {
      for await (const line of session) {
        if (new TextDecoder().decode(line) === "fail") throw new Error("the handler failed");
        await session.send(line);
      }
    },
  });
  try {
    const [first, second] = await Client.connectMany(server.port, 2);
    await first.write("hi\n");
    await first.received(3);
    await until(() => server.status().num === 2, "two sessions");
    assert.equal(await gauge(), 2);
    assert.equal(spans.getFinishedSpans().length, 0, "no span ends while its session runs");
    const port = first.socket.localPort;
    first.end();
    await second.write("fail\n");
    await until(() => spans.getFinishedSpans().length === 2, "both spans to end");
    assert.equal(await gauge(), 0);
    const finished = spans.getFinishedSpans();
    for (const span of finished) {
      assert.equal(span.name, "pico-socket-server session");
      assert.equal(span.kind, SpanKind.SERVER);
      assert.equal(span.attributes["network.peer.address"], "127.0.0.1");
      assert.equal(span.attributes["network.transport"], "tcp");
      assert.equal(span.attributes["server.port"], server.port);
    }
    const ok = finished.find((span) => span.attributes["network.peer.port"] === port)!;
    assert.equal(ok.status.code, SpanStatusCode.UNSET);
    const failed = finished.find((span) => span !== ok)!;
    assert.equal(failed.status.code, SpanStatusCode.ERROR);
    assert.equal(failed.status.message, "the handler failed");
    assert.equal(failed.events[0]?.name, "exception");
  } finally {
    undo();
    await server.stop();
    await meterProvider.shutdown();
  }
});
