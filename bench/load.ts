// The load generator: drives one echo server with one scenario and prints a
// JSON line of results. Every message is framed with a 4-byte big-endian
// length header, so the same load runs against raw byte echo servers,
// pico-socket-server with packet type 0 or 4, and Erlang's {packet, 4}.
//
//   <runtime> bench/load.ts '{"scenario":"pingpong","port":1234,...}'
//
// Scenarios:
// - pingpong: `connections` clients, one `size`-byte message in flight each;
// - pipelined: `connections` clients, `inflight` messages in flight each;
// - churn: `connections` loops of connect, one round trip, close;
// - idle: open `connections` sessions, report when all are up, hold them
//   until stdin closes.
// With `"proxy": true`, each connection begins with a PROXY v1 header.
import { connect, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import process from "node:process";

interface LoadOptions {
  scenario: "pingpong" | "pipelined" | "churn" | "idle";
  port: number;
  connections: number;
  size: number;
  inflight: number;
  seconds: number;
  /** Connect with TLS (the test certificate is not checked: loopback only). */
  tls?: boolean;
  /** A Unix socket's path instead of the port. */
  path?: string;
  /** Begin each connection with a PROXY protocol v1 header, as a load balancer does. */
  proxy?: boolean;
}

/** What one load run reports (bench/run.ts reads it). */
export interface LoadResult {
  messages: number;
  bytes: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

const options = JSON.parse(process.argv[2]) as LoadOptions;

function frame(size: number): Uint8Array {
  const message = new Uint8Array(4 + size);
  new DataView(message.buffer).setUint32(0, size);
  for (let i = 4; i < message.length; i++) message[i] = i & 0xff;
  return message;
}

/** Latency samples in microseconds, kept in a growable typed array. */
class Samples {
  values = new Float64Array(1 << 16);
  count = 0;
  add(value: number): void {
    if (this.count === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.count++] = value;
  }
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const sorted = this.values.subarray(0, this.count).sort();
    return sorted[Math.min(this.count - 1, Math.floor((p / 100) * this.count))];
  }
}

let serial = 0;

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const where = options.path !== undefined ? { path: options.path } : { port, host: "127.0.0.1" };
    // The header goes first, before the TLS client's hello.
    const raw = connect(where);
    if (options.proxy) raw.write(`PROXY TCP4 192.0.2.1 192.0.2.2 ${40000 + (serial++ % 20000)} 443\r\n`);
    const socket = options.tls ? connectTls({ socket: raw, rejectUnauthorized: false }) : raw;
    if (options.path === undefined) socket.setNoDelay(true);
    socket.once(options.tls ? "secureConnect" : "connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/**
 * Keeps `inflight` framed messages in flight on one connection until
 * `deadline`; each echo that comes back completes the oldest message.
 */
function drive(socket: Socket, message: Uint8Array, inflight: number, deadline: number, samples: Samples) {
  return new Promise<{ messages: number; bytes: number }>((resolve) => {
    const sentAt: number[] = [];
    let received = 0;
    let messages = 0;
    const finish = () => {
      socket.removeAllListeners("data");
      resolve({ messages, bytes: messages * message.length });
    };
    const send = () => {
      sentAt.push(performance.now());
      socket.write(message);
    };
    socket.on("data", (chunk: Uint8Array) => {
      received += chunk.length;
      while (received >= message.length) {
        received -= message.length;
        messages++;
        const now = performance.now();
        samples.add((now - sentAt.shift()!) * 1000);
        if (now < deadline) send();
        else if (sentAt.length === 0) return finish();
      }
    });
    socket.on("error", finish);
    for (let i = 0; i < inflight; i++) send();
  });
}

async function steady(): Promise<LoadResult> {
  const message = frame(options.size);
  const sockets = await Promise.all(Array.from({ length: options.connections }, () => open(options.port)));
  const samples = new Samples();
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  const inflight = options.scenario === "pipelined" ? options.inflight : 1;
  const results = await Promise.all(sockets.map((socket) => drive(socket, message, inflight, deadline, samples)));
  const seconds = (performance.now() - started) / 1000;
  for (const socket of sockets) socket.destroy();
  return {
    messages: results.reduce((n, r) => n + r.messages, 0),
    bytes: results.reduce((n, r) => n + r.bytes, 0) * 2,
    seconds,
    p50Us: samples.percentile(50),
    p99Us: samples.percentile(99),
    errors: 0,
  };
}

async function churn(): Promise<LoadResult> {
  const message = frame(options.size);
  const samples = new Samples();
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  let messages = 0;
  let errors = 0;
  const loop = async () => {
    while (performance.now() < deadline) {
      const begun = performance.now();
      try {
        const socket = await open(options.port);
        await new Promise<void>((resolve, reject) => {
          let received = 0;
          socket.on("data", (chunk: Uint8Array) => {
            received += chunk.length;
            if (received >= message.length) resolve();
          });
          socket.once("error", reject);
          socket.once("close", () => reject(new Error("closed early")));
          socket.write(message);
        }).finally(() => socket.destroy());
        messages++;
        samples.add((performance.now() - begun) * 1000);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections }, loop));
  const seconds = (performance.now() - started) / 1000;
  return {
    messages,
    bytes: messages * message.length * 2,
    seconds,
    p50Us: samples.percentile(50),
    p99Us: samples.percentile(99),
    errors,
  };
}

async function idle(): Promise<void> {
  const sockets: Socket[] = [];
  const batch = 250;
  for (let opened = 0; opened < options.connections; opened += batch) {
    const count = Math.min(batch, options.connections - opened);
    sockets.push(...(await Promise.all(Array.from({ length: count }, () => open(options.port)))));
  }
  // One round trip on every connection proves every session is served.
  const message = frame(8);
  await Promise.all(sockets.map((socket) =>
    new Promise<void>((resolve) => {
      let received = 0;
      const onData = (chunk: Uint8Array) => {
        received += chunk.length;
        if (received >= message.length) {
          socket.off("data", onData);
          resolve();
        }
      };
      socket.on("data", onData);
      socket.write(message);
    })
  ));
  console.log(JSON.stringify({ ready: sockets.length }));
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.once("end", resolve));
  for (const socket of sockets) socket.destroy();
}

if (options.scenario === "idle") {
  await idle();
} else {
  const result = options.scenario === "churn" ? await churn() : await steady();
  console.log(JSON.stringify(result));
}
process.exit(0);
