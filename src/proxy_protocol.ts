/**
 * The PROXY protocol (HAProxy's, versions 1 and 2), as a server receives
 * it: the header a load balancer sends first on each connection with the
 * client's real addresses. Parsed incrementally, however TCP splits it,
 * never buffering more than the protocol allows (107 bytes for a v1 line,
 * 16 + 65535 for v2); the bytes after the header are the connection's own.
 * Also read on a connection: `readProxyHeader`.
 *
 * @module
 */

import { SocketServerError } from "./errors.ts";
import type { Connection, ConnectionEvents, SocketAddress } from "./transport.ts";
import { formatIPv6, IPV4, isIPv6, ipv6Bytes } from "./address_match.ts";

/** What a PROXY header said. */
export interface ProxyHeader {
  version: 1 | 2;
  /**
   * `"proxy"`: a relayed connection, with its addresses when the family is
   * known; `"local"`: the balancer's own (a health check), or a v1
   * `UNKNOWN` line: the socket's addresses stand.
   */
  command: "proxy" | "local";
  /** The client's address, for a relayed TCP (or Unix) connection. */
  source?: SocketAddress;
  /** The address the client connected to. */
  destination?: SocketAddress;
  /** v2 TLVs by type (without the CRC32c and NOOP ones). */
  tlvs?: Map<number, Uint8Array>;
}

/** The most bytes of a v1 line, CRLF included. */
export const V1_MAX = 107;
const V2_SIGNATURE = new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = new TextEncoder().encode("PROXY ");
const V2_FIXED = 16;
const TLV_CRC32C = 0x03;
const TLV_NOOP = 0x04;

function malformed(why: string): SocketServerError {
  return new SocketServerError(`Invalid PROXY protocol header: ${why}`, "proxy_error");
}

/**
 * Reads one PROXY header from the bytes of a connection, in any pieces.
 * `push` returns undefined while it needs more, the header and the bytes
 * after it once complete, and throws a `proxy_error` as soon as the bytes
 * cannot be a valid header.
 */
export class ProxyHeaderParser {
  #buffer = new Uint8Array(V1_MAX);
  #length = 0;
  // Once known: 1 or 2, and for v2 the header's whole length.
  #version: 0 | 1 | 2 = 0;
  #total = 0;

  push(chunk: Uint8Array): { header: ProxyHeader; rest: Uint8Array } | undefined {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#version !== 2) {
        // Byte by byte up to the line's end (v1) or the v2 length field.
        const byte = chunk[offset++];
        this.#append(byte);
        const at = this.#length - 1;
        if (this.#version === 0) {
          const v1 = this.#buffer[0] === V1_PREFIX[0];
          const signature = v1 ? V1_PREFIX : V2_SIGNATURE;
          if (byte !== signature[at]) throw malformed("no PROXY signature");
          if (at === signature.length - 1) this.#version = v1 ? 1 : 2;
          continue;
        }
        // v1: the line ends with CRLF within V1_MAX bytes.
        if (byte === 0x0a && this.#buffer[at - 1] === 0x0d) {
          return { header: parseV1(this.#buffer.subarray(0, at - 1)), rest: chunk.subarray(offset) };
        }
        if (this.#length >= V1_MAX) throw malformed(`a version 1 line longer than ${V1_MAX} bytes`);
        continue;
      }
      // v2: the fixed part, then exactly its length.
      if (this.#length < V2_FIXED) {
        this.#append(chunk[offset++]);
        if (this.#length === V2_FIXED) {
          const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset);
          this.#total = V2_FIXED + view.getUint16(14);
          checkV2Fixed(this.#buffer);
          const whole = new Uint8Array(this.#total);
          whole.set(this.#buffer.subarray(0, V2_FIXED));
          this.#buffer = whole;
        }
      } else {
        const take = Math.min(chunk.length - offset, this.#total - this.#length);
        this.#buffer.set(chunk.subarray(offset, offset + take), this.#length);
        this.#length += take;
        offset += take;
      }
      if (this.#total > 0 && this.#length === this.#total) {
        return { header: parseV2(this.#buffer), rest: chunk.subarray(offset) };
      }
    }
    return undefined;
  }

  #append(byte: number): void {
    this.#buffer[this.#length++] = byte;
  }
}

// --- Version 1: "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>" or "PROXY UNKNOWN[ ...]".

function parsePort(text: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(text) || Number(text) > 65535) throw malformed(`bad port '${text}'`);
  return Number(text);
}

function parseV1(line: Uint8Array): ProxyHeader {
  for (const byte of line) if (byte < 0x20 || byte > 0x7e) throw malformed("a version 1 line with a control or non-ASCII byte");
  const text = new TextDecoder().decode(line);
  const parts = text.split(" ");
  if (parts[1] === "UNKNOWN") return { version: 1, command: "local" };
  if (parts.length !== 6 || (parts[1] !== "TCP4" && parts[1] !== "TCP6")) throw malformed(`'${text}'`);
  const [, family, source, destination, sourcePort, destinationPort] = parts;
  const valid = family === "TCP4" ? (address: string) => IPV4.test(address) : isIPv6;
  if (!valid(source) || !valid(destination)) throw malformed(`bad ${family} address in '${text}'`);
  return {
    version: 1,
    command: "proxy",
    source: { hostname: family === "TCP6" ? formatIPv6(ipv6Bytes(source)!) : source, port: parsePort(sourcePort) },
    destination: { hostname: family === "TCP6" ? formatIPv6(ipv6Bytes(destination)!) : destination, port: parsePort(destinationPort) },
  };
}

// --- Version 2: signature, version/command, family/transport, length, addresses, TLVs.

function checkV2Fixed(buffer: Uint8Array): void {
  const version = buffer[12] >> 4;
  const command = buffer[12] & 0x0f;
  if (version !== 2) throw malformed(`version ${version} after a version 2 signature`);
  if (command > 1) throw malformed(`unknown command ${command}`);
}

const ADDRESS_LENGTH: Record<number, number> = { 0x1: 12, 0x2: 36, 0x3: 216 };

function parseV2(header: Uint8Array): ProxyHeader {
  const view = new DataView(header.buffer, header.byteOffset, header.length);
  const local = (header[12] & 0x0f) === 0;
  const family = header[13] >> 4;
  const transport = header[13] & 0x0f;
  const body = header.subarray(V2_FIXED);
  let addressLength = 0;
  let result: ProxyHeader;
  if (local || family === 0) {
    // LOCAL (a health check), or PROXY of an unknown family: the socket's addresses stand.
    result = { version: 2, command: "local" };
  } else {
    if (family > 3) throw malformed(`unknown address family ${family}`);
    if (transport !== 1) throw malformed(transport === 2 ? "a datagram header on a stream connection" : `unknown transport ${transport}`);
    addressLength = ADDRESS_LENGTH[family];
    if (body.length < addressLength) {
      throw malformed(`a length of ${body.length} bytes, shorter than its ${addressLength} bytes of addresses`);
    }
    if (family === 0x1) {
      const ip = (at: number) => Array.from(body.subarray(at, at + 4)).join(".");
      result = {
        version: 2,
        command: "proxy",
        source: { hostname: ip(0), port: view.getUint16(V2_FIXED + 8) },
        destination: { hostname: ip(4), port: view.getUint16(V2_FIXED + 10) },
      };
    } else if (family === 0x2) {
      result = {
        version: 2,
        command: "proxy",
        source: { hostname: formatIPv6(body.subarray(0, 16)), port: view.getUint16(V2_FIXED + 32) },
        destination: { hostname: formatIPv6(body.subarray(16, 32)), port: view.getUint16(V2_FIXED + 34) },
      };
    } else {
      const path = (at: number) => {
        const bytes = body.subarray(at, at + 108);
        const end = bytes.indexOf(0);
        return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
      };
      result = { version: 2, command: "proxy", source: { hostname: path(0), port: 0 }, destination: { hostname: path(108), port: 0 } };
    }
  }
  if (!local && family !== 0) {
    const tlvs = parseTlvs(header, V2_FIXED + addressLength);
    if (tlvs.size > 0) result.tlvs = tlvs;
  }
  return result;
}

function parseTlvs(header: Uint8Array, start: number): Map<number, Uint8Array> {
  const tlvs = new Map<number, Uint8Array>();
  let at = start;
  let crcAt = -1;
  while (at < header.length) {
    if (header.length - at < 3) throw malformed("a TLV cut short");
    const type = header[at];
    const length = (header[at + 1] << 8) | header[at + 2];
    const valueAt = at + 3;
    if (valueAt + length > header.length) throw malformed(`a TLV of ${length} bytes past the header's end`);
    if (type === TLV_CRC32C) {
      if (length !== 4) throw malformed("a CRC32c TLV that is not 4 bytes");
      crcAt = valueAt;
    } else if (type !== TLV_NOOP) {
      tlvs.set(type, header.slice(valueAt, valueAt + length));
    }
    at = valueAt + length;
  }
  if (crcAt >= 0) {
    const expected = new DataView(header.buffer, header.byteOffset + crcAt, 4).getUint32(0);
    const zeroed = header.slice();
    zeroed.fill(0, crcAt, crcAt + 4);
    if (crc32c(zeroed) !== expected) throw malformed("the CRC32c does not match");
  }
  return tlvs;
}

let crcTable: Uint32Array | undefined;

/** CRC32c (Castagnoli) of `bytes`, as the PROXY protocol's CRC TLV holds it. */
export function crc32c(bytes: Uint8Array): number {
  const table = crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    return c >>> 0;
  });
  let crc = 0xffffffff;
  for (const byte of bytes) crc = table[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * Reads a PROXY header from `connection`, within `timeoutMs`. Resolves with
 * the header, the bytes after it held by the connection for its next
 * start(); rejects with a `proxy_error` (malformed, cut short, too slow).
 */
export function readProxyHeader(connection: Connection, timeoutMs: number): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    const parser = new ProxyHeaderParser();
    let done = false;
    const timer = timeoutMs > 0
      ? setTimeout(() => finish(malformed(`no complete header within ${timeoutMs} ms`)), timeoutMs)
      : undefined;
    const finish = (outcome: ProxyHeader | Error, rest?: Uint8Array) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (outcome instanceof Error) reject(outcome);
      else {
        connection.handOver(rest!);
        resolve(outcome);
      }
    };
    const events: ConnectionEvents = {
      data(chunk) {
        if (done) return true;
        try {
          const complete = parser.push(chunk);
          if (complete) finish(complete.header, complete.rest);
        } catch (error) {
          finish(error as Error);
        }
        return true;
      },
      end: () => finish(malformed("the connection ended before the header did")),
      error: (error) => finish(malformed(`the connection failed before the header was read: ${error.message}`)),
      lost: () => finish(malformed("the connection closed before the header was read")),
    };
    connection.start(events);
  });
}
