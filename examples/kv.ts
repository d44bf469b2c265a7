/**
 * A key-value server that speaks the Redis protocol (RESP2), written on
 * packet type 0 with an incremental parser that no byte split can confuse:
 * `node examples/kv.ts` (or `deno run -A`, `bun`), then
 * `redis-cli -p 6380 SET greeting hello` and `redis-cli -p 6380 GET greeting`.
 * Commands: PING, ECHO, GET, SET (with EX or PX), DEL, EXISTS, INCR, MGET,
 * MSET, QUIT, and CONFIG GET (answered empty, for redis-benchmark);
 * pipelined requests are answered in order. PORT picks the port (0: any);
 * SIGTERM or SIGINT stop it gracefully.
 *
 * @module
 */

import process from "node:process";
import { type Session, type SocketServer, startServer } from "../mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The most bytes a bulk string (a key, a value) may have. */
export const MAX_BULK: number = 1024 * 1024;
/** The most arguments a command may have. */
export const MAX_ARGUMENTS: number = 1024 * 1024;
/** The most bytes one command may have, all its arguments together. */
export const MAX_REQUEST: number = 16 * 1024 * 1024;
// An inline command (a line without RESP framing, as nc sends) or a
// header line may be at most this long.
const MAX_LINE = 64 * 1024;

/** A protocol error: the connection is answered with it and closed. */
export class ProtocolError extends Error {}

/**
 * Reads commands (arrays of bulk strings, or inline lines) from a byte
 * stream in any pieces. `push` returns the commands complete so far; the
 * bytes of an incomplete one wait for the next chunk, bounded by the
 * limits above.
 */
export class RespParser {
  #buffer = new Uint8Array(4096);
  #start = 0;
  #end = 0;

  push(chunk: Uint8Array): Uint8Array[][] {
    this.#append(chunk);
    const commands: Uint8Array[][] = [];
    for (;;) {
      const command = this.#next();
      if (command === undefined) break;
      if (command.length > 0) commands.push(command);
    }
    // What waits is one incomplete command: bounded.
    if (this.#end - this.#start > MAX_REQUEST) throw new ProtocolError("request too big");
    return commands;
  }

  #append(chunk: Uint8Array): void {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end + chunk.length > this.#buffer.length) {
      const waiting = this.#end - this.#start;
      const size = Math.max(this.#buffer.length, (waiting + chunk.length) * 2);
      const grown = size > this.#buffer.length ? new Uint8Array(size) : this.#buffer;
      grown.set(this.#buffer.subarray(this.#start, this.#end), 0);
      this.#buffer = grown;
      this.#start = 0;
      this.#end = waiting;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The index of the CR of the CRLF ending the line at `from`, or -1 if not all here. */
  #lineEnd(from: number): number {
    const buffer = this.#buffer;
    for (let i = from; i < this.#end - 1; i++) {
      if (buffer[i] === 0x0d && buffer[i + 1] === 0x0a) return i;
      if (i - from > MAX_LINE) throw new ProtocolError("too big request line");
    }
    if (this.#end - from > MAX_LINE) throw new ProtocolError("too big request line");
    return -1;
  }

  #number(from: number, to: number, what: string): number {
    const text = decoder.decode(this.#buffer.subarray(from, to));
    if (!/^-?\d{1,10}$/.test(text)) throw new ProtocolError(`invalid ${what} length`);
    return Number(text);
  }

  /** The next complete command (empty for a blank line), or undefined. */
  #next(): Uint8Array[] | undefined {
    const buffer = this.#buffer;
    let at = this.#start;
    if (at >= this.#end) return undefined;
    if (buffer[at] !== 0x2a) {
      // Inline: words separated by spaces, up to CRLF (or a bare LF).
      let end = at;
      while (end < this.#end && buffer[end] !== 0x0a) end++;
      if (end === this.#end) {
        if (end - at > MAX_LINE) throw new ProtocolError("too big inline request");
        return undefined;
      }
      const line = decoder.decode(buffer.subarray(at, buffer[end - 1] === 0x0d ? end - 1 : end));
      this.#start = end + 1;
      return line.split(" ").filter((word) => word !== "").map((word) => encoder.encode(word));
    }
    const headerEnd = this.#lineEnd(at + 1);
    if (headerEnd < 0) return undefined;
    const count = this.#number(at + 1, headerEnd, "multibulk");
    if (count > MAX_ARGUMENTS) throw new ProtocolError("invalid multibulk length");
    at = headerEnd + 2;
    const args: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      if (at >= this.#end) return undefined;
      if (buffer[at] !== 0x24) throw new ProtocolError(`expected '$', got '${String.fromCharCode(buffer[at])}'`);
      const lengthEnd = this.#lineEnd(at + 1);
      if (lengthEnd < 0) return undefined;
      const length = this.#number(at + 1, lengthEnd, "bulk");
      if (length < 0 || length > MAX_BULK) throw new ProtocolError("invalid bulk length");
      const valueAt = lengthEnd + 2;
      if (valueAt + length + 2 > this.#end) return undefined;
      if (buffer[valueAt + length] !== 0x0d || buffer[valueAt + length + 1] !== 0x0a) {
        throw new ProtocolError("a bulk string not ended by CRLF");
      }
      args.push(buffer.slice(valueAt, valueAt + length));
      at = valueAt + length + 2;
    }
    this.#start = at;
    return args;
  }
}

// --- Replies.

const OK = encoder.encode("+OK\r\n");
const PONG = encoder.encode("+PONG\r\n");
const NIL = encoder.encode("$-1\r\n");
const CRLF = encoder.encode("\r\n");

const simpleError = (message: string) => encoder.encode(`-${message}\r\n`);
const integer = (n: number) => encoder.encode(`:${n}\r\n`);
function bulk(value: Uint8Array | undefined): Uint8Array[] {
  return value === undefined ? [NIL] : [encoder.encode(`$${value.length}\r\n`), value, CRLF];
}
const arity = (name: string) => simpleError(`ERR wrong number of arguments for '${name}' command`);

/** The store: values by key, with an optional expiry (ms since the epoch). */
export class Store {
  #values = new Map<string, { value: Uint8Array; expiresAt: number }>();

  get(key: string): Uint8Array | undefined {
    const entry = this.#values.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== 0 && entry.expiresAt <= Date.now()) {
      this.#values.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: Uint8Array, expiresAt = 0): void {
    this.#values.set(key, { value, expiresAt });
  }

  delete(key: string): boolean {
    return this.get(key) !== undefined && this.#values.delete(key);
  }

  /** Drops expired keys (a slow sweep; reads drop them too). */
  sweep(): void {
    const now = Date.now();
    for (const [key, entry] of this.#values) if (entry.expiresAt !== 0 && entry.expiresAt <= now) this.#values.delete(key);
  }
}

/**
 * A key as a string, one character per byte: keys are binary, and decoding
 * them as UTF-8 would make two invalid sequences the same key.
 */
export function keyOf(bytes: Uint8Array): string {
  if (bytes.length <= 256) return String.fromCharCode(...bytes);
  let key = "";
  for (let at = 0; at < bytes.length; at += 4096) key += String.fromCharCode(...bytes.subarray(at, at + 4096));
  return key;
}

/** Runs one command; `replies` gets its answer. Returns false for QUIT. */
export function execute(store: Store, command: Uint8Array[], replies: Uint8Array[]): boolean {
  const name = keyOf(command[0]).toUpperCase();
  const key = (i: number) => keyOf(command[i]);
  const argc = command.length;
  switch (name) {
    case "PING":
      if (argc > 2) replies.push(arity("ping"));
      else if (argc === 2) replies.push(...bulk(command[1]));
      else replies.push(PONG);
      return true;
    case "ECHO":
      replies.push(...(argc === 2 ? bulk(command[1]) : [arity("echo")]));
      return true;
    case "GET":
      replies.push(...(argc === 2 ? bulk(store.get(key(1))) : [arity("get")]));
      return true;
    case "SET": {
      if (argc !== 3 && argc !== 5) {
        replies.push(argc < 3 ? arity("set") : simpleError("ERR syntax error"));
        return true;
      }
      let expiresAt = 0;
      if (argc === 5) {
        const unit = key(3).toUpperCase();
        const amount = key(4);
        if ((unit !== "EX" && unit !== "PX") || !/^\d{1,15}$/.test(amount)) {
          replies.push(simpleError(unit === "EX" || unit === "PX" ? "ERR value is not an integer or out of range" : "ERR syntax error"));
          return true;
        }
        if (Number(amount) === 0) {
          replies.push(simpleError("ERR invalid expire time in 'set' command"));
          return true;
        }
        expiresAt = Date.now() + Number(amount) * (unit === "EX" ? 1000 : 1);
      }
      store.set(key(1), command[2], expiresAt);
      replies.push(OK);
      return true;
    }
    case "DEL":
    case "EXISTS": {
      if (argc < 2) {
        replies.push(arity(name.toLowerCase()));
        return true;
      }
      let count = 0;
      for (let i = 1; i < argc; i++) if (name === "DEL" ? store.delete(key(i)) : store.get(key(i)) !== undefined) count++;
      replies.push(integer(count));
      return true;
    }
    case "INCR": {
      if (argc !== 2) {
        replies.push(arity("incr"));
        return true;
      }
      const current = store.get(key(1));
      const text = current === undefined ? "0" : decoder.decode(current);
      if (!/^-?\d{1,19}$/.test(text) || !Number.isSafeInteger(Number(text) + 1)) {
        replies.push(simpleError("ERR value is not an integer or out of range"));
        return true;
      }
      const next = Number(text) + 1;
      store.set(key(1), encoder.encode(String(next)));
      replies.push(integer(next));
      return true;
    }
    case "MGET":
      if (argc < 2) {
        replies.push(arity("mget"));
        return true;
      }
      replies.push(encoder.encode(`*${argc - 1}\r\n`));
      for (let i = 1; i < argc; i++) replies.push(...bulk(store.get(key(i))));
      return true;
    case "MSET":
      if (argc < 3 || argc % 2 === 0) {
        replies.push(arity("mset"));
        return true;
      }
      for (let i = 1; i < argc; i += 2) store.set(key(i), command[i + 1]);
      replies.push(OK);
      return true;
    case "CONFIG":
      // redis-benchmark asks for `save` and `appendonly`: none here.
      replies.push(argc >= 2 && key(1).toUpperCase() === "GET" ? encoder.encode("*0\r\n") : simpleError("ERR unsupported CONFIG"));
      return true;
    case "QUIT":
      replies.push(OK);
      return false;
    default:
      replies.push(simpleError(`ERR unknown command '${decoder.decode(command[0]).slice(0, 128)}'`));
      return true;
  }
}

function join(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let length = 0;
  for (const part of parts) length += part.length;
  const joined = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return joined;
}

/** Serves one client: its commands in order, each chunk's answers in one write. */
export function kvHandler(store: Store): (session: Session) => Promise<void> {
  return async (session) => {
    const parser = new RespParser();
    for await (const chunk of session) {
      const replies: Uint8Array[] = [];
      let open = true;
      try {
        for (const command of parser.push(chunk)) {
          open = execute(store, command, replies);
          if (!open) break;
        }
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        replies.push(simpleError(`ERR Protocol error: ${error.message}`));
        open = false;
      }
      if (replies.length > 0) await session.send(join(replies));
      if (!open || session.signal.aborted) return;
    }
  };
}

/** Starts the key-value server on `port`. */
export async function startKv(port: number, max = 10_000): Promise<SocketServer> {
  const store = new Store();
  const sweeper = setInterval(() => store.sweep(), 1000);
  (sweeper as { unref?: () => void }).unref?.();
  const server = await startServer({
    hostname: "127.0.0.1",
    port,
    max,
    packet: 0,
    session: { idleTimeoutMs: 5 * 60_000 },
    handler: kvHandler(store),
  });
  return server;
}

if (import.meta.main) {
  const server = await startKv(Number(process.env.PORT ?? 6380));
  console.log(`kv (RESP) on 127.0.0.1:${server.port}`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, async () => {
      const { ended, closed } = await server.stop({ timeoutMs: 5000 });
      console.log(`stopped: ${ended} sessions ended, ${closed} closed`);
      process.exit(0);
    });
  }
}
