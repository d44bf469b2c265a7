/**
 * A test client on `node:net`, which Node, Deno and Bun all ship, so the
 * conformance suite drives every adapter with the same client.
 */

import { connect as netConnect, createServer, type Socket } from "node:net";

/** A connected test client that records everything the server sends. */
export class Client {
  readonly socket: Socket;
  #chunks: Uint8Array[] = [];
  #length = 0;
  #wake: Array<() => void> = [];
  #closed = false;
  #error: Error | undefined;

  constructor(socket: Socket) {
    this.socket = socket;
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

  /** Connects to `port` on loopback once the TCP handshake completes. */
  static connect(port: number, hostname = "127.0.0.1"): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = netConnect({ port, host: hostname, allowHalfOpen: true });
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new Client(socket));
      });
      socket.once("error", reject);
    });
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

  /** Ends the client's side (FIN). */
  end(): void {
    this.socket.end();
  }

  /** Resets the connection (RST). */
  reset(): void {
    this.socket.resetAndDestroy();
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
