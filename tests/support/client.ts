/**
 * A test client on `node:net`, which Node, Deno and Bun all ship, so the
 * conformance suite drives every adapter with the same client.
 */

import { readFileSync } from "node:fs";
import { connect as netConnect, createServer, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";

/** The test CA (tests/fixtures/tls, made by scripts/make_test_certs.sh), which signed the server's certificate. */
export const TEST_CA: string = readFileSync(new URL("../fixtures/tls/ca.pem", import.meta.url), "utf8");
/** The test server's certificate chain and key, for `tls`. */
export const TEST_TLS: { cert: string; key: string } = {
  cert: readFileSync(new URL("../fixtures/tls/chain.pem", import.meta.url), "utf8"),
  key: readFileSync(new URL("../fixtures/tls/server.key", import.meta.url), "utf8"),
};

/**
 * Where a server listens, as clients reach it: a loopback port or a Unix
 * socket path, with TLS or without.
 */
export interface Endpoint {
  port?: number;
  path?: string;
  hostname?: string;
  /** Connect with TLS, trusting the test CA; `alpn` the protocols offered. */
  tls?: boolean;
  /** Begin with a PROXY protocol v1 header (before any TLS), as a load balancer would. */
  proxy?: boolean;
  alpn?: string[];
}

let proxySerial = 0;

/** A connected test client that records everything the server sends. */
export class Client {
  readonly socket: Socket;
  /** The TCP (or Unix) socket under a TLS client's socket: where a reset goes. */
  readonly raw: Socket;
  #chunks: Uint8Array[] = [];
  #length = 0;
  #wake: Array<() => void> = [];
  #closed = false;
  #error: Error | undefined;
  #secured: Promise<void>;

  constructor(socket: Socket, raw: Socket = socket) {
    this.socket = socket;
    this.raw = raw;
    this.#secured = socket === raw ? Promise.resolve() : new Promise((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
      socket.once("close", () => reject(new Error("The connection closed before the TLS handshake was done")));
    });
    this.#secured.catch(() => {});
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#length += chunk.length;
      this.#notify();
    });
    socket.on("error", (error) => {
      this.#error = error;
    });
    // The client is half-open capable (so it can end its side and still
    // read); the server's end of stream therefore counts as closed.
    const onClosed = () => {
      this.#closed = true;
      this.#notify();
    };
    socket.on("end", onClosed);
    socket.on("close", onClosed);
  }

  /**
   * Connects to `port` on loopback (or to an endpoint) once the TCP (and
   * TLS) handshake completes.
   */
  static async connect(target: number | Endpoint, hostname = "127.0.0.1"): Promise<Client> {
    // A Unix socket whose listen queue is full refuses with EAGAIN (TCP
    // would queue the SYN): try again, as a real client does.
    for (let attempt = 1; ; attempt++) {
      try {
        return await Client.#connectOnce(target, hostname);
      } catch (error) {
        if ((error as { code?: string }).code !== "EAGAIN" || attempt === 50) throw error;
        await sleep(20);
      }
    }
  }

  static #connectOnce(target: number | Endpoint, hostname: string): Promise<Client> {
    const endpoint: Endpoint = typeof target === "number" ? { port: target } : target;
    const where = endpoint.path !== undefined
      ? { path: endpoint.path }
      : { port: endpoint.port!, host: endpoint.hostname ?? hostname };
    return new Promise((resolve, reject) => {
      const raw = netConnect({ ...where, allowHalfOpen: true });
      // Queued before anything the TLS client writes, so it goes first.
      if (endpoint.proxy) raw.write(`PROXY TCP4 192.0.2.1 192.0.2.2 ${40000 + (proxySerial++ % 20000)} 443\r\n`);
      // A TLS client's handshake goes on after the TCP connect (its writes
      // wait for it): a connection the server holds waiting, unread, is
      // connected as a plain one is. `secured()` waits for it.
      const socket = endpoint.tls
        ? tlsConnect({
          socket: raw,
          ca: TEST_CA,
          servername: "localhost",
          ALPNProtocols: endpoint.alpn,
          allowHalfOpen: true,
        } as ConnectionOptions)
        : raw;
      raw.once("connect", () => {
        raw.off("error", reject);
        resolve(new Client(socket, raw));
      });
      raw.once("error", reject);
    });
  }

  /** Resolves once a TLS client's handshake is done; rejects with its failure. */
  secured(timeoutMs = 5000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("Timed out waiting for the TLS handshake")), timeoutMs);
    });
    return Promise.race([this.#secured, timeout]).finally(() => clearTimeout(timer));
  }

  /** Connects `count` clients at once (in groups, so the client side keeps up). */
  static async connectMany(target: number | Endpoint, count: number, group = 100): Promise<Client[]> {
    const clients: Client[] = [];
    for (let i = 0; i < count; i += group) {
      clients.push(...await Promise.all(Array.from({ length: Math.min(group, count - i) }, () => Client.connect(target))));
    }
    return clients;
  }

  /** Whether the server closed (or reset) the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The socket error seen, if any (e.g. ECONNRESET). */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Everything received so far. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let offset = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /** Everything received so far, as UTF-8 text. */
  text(): string {
    return new TextDecoder().decode(this.bytes());
  }

  /** Sends bytes or text; resolves once handed to the OS. */
  write(data: Uint8Array | string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Sends `data` one byte per TCP write, pausing between bytes. */
  async writeByteByByte(data: Uint8Array): Promise<void> {
    for (const byte of data) {
      await this.write(new Uint8Array([byte]));
      await sleep(1);
    }
  }

  /**
   * Stops reading: the server's bytes stay in the kernel's buffers (a TLS
   * client's TCP socket is paused too, as Deno's node:tls reads on under a
   * paused TLS socket).
   */
  stopReading(): void {
    this.socket.pause();
    if (this.raw !== this.socket) this.raw.pause();
  }

  /** Ends the client's side (FIN). */
  end(): void {
    this.socket.end();
  }

  /** Resets the connection (RST); a Unix socket, which has no reset, is closed. */
  reset(): void {
    try {
      this.raw.resetAndDestroy();
    } catch {
      this.raw.destroy();
    }
    if (this.socket !== this.raw) this.socket.destroy();
  }

  /** Closes the client at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves once at least `length` bytes arrived; rejects on close or timeout. */
  async received(length: number, timeoutMs = 5000): Promise<Uint8Array> {
    await this.#until(() => this.#length >= length || this.#closed, `${length} bytes`, timeoutMs);
    if (this.#length < length) {
      throw new Error(`Connection closed after ${this.#length} of ${length} bytes`);
    }
    return this.bytes();
  }

  /** Resolves with everything received once the server closed the connection. */
  async whenClosed(timeoutMs = 5000): Promise<Uint8Array> {
    await this.#until(() => this.#closed, "the connection to close", timeoutMs);
    return this.bytes();
  }

  /** Whether the server closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    try {
      await this.whenClosed(ms);
      return true;
    } catch {
      return false;
    }
  }

  async #until(condition: () => boolean, what: string, timeoutMs: number): Promise<void> {
    if (condition()) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), timeoutMs);
        const check = () => {
          if (condition()) resolve();
          else this.#wake.push(check);
        };
        this.#wake.push(check);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `condition` holds, failing after `timeoutMs`. */
export async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Whether a plain `node:net` server can bind `port` on loopback right now. */
export function canBind(port: number, hostname = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ port, host: hostname, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/** Binds a plain `node:net` server on a free loopback port; returns it and its port. */
export function occupyPort(): Promise<{ port: number; release: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const blocker = createServer();
    blocker.once("error", reject);
    blocker.listen({ port: 0, host: "127.0.0.1" }, () => {
      const address = blocker.address();
      const port = typeof address === "object" && address ? address.port : 0;
      resolve({ port, release: () => new Promise((done) => blocker.close(() => done())) });
    });
  });
}
