/**
 * Packet framing: whole packets out of arbitrarily split or coalesced TCP
 * chunks, and the header (or newline) `send` adds. Shared by every adapter.
 *
 * @module
 */

import { contiguousCount, copyChunks, Slabs } from "./bytes.ts";
import { SocketServerError } from "./errors.ts";

/**
 * How a session's byte stream is cut into packets, as proc_socket_server's
 * `{packet, N}`:
 * - `0`: raw, each chunk as it arrives;
 * - `1`, `2`, `4`: a big-endian unsigned length header of that many bytes
 *   before each packet;
 * - `"line"`: one line per packet, ended by `\n` or `\r\n` (not included).
 *
 * @example Choosing a length-prefixed protocol
 * ```ts
 * import type { PacketType } from "@pico/socket-server";
 * const packet: PacketType = 4;
 * ```
 */
export type PacketType = 0 | 1 | 2 | 4 | "line";

const NEWLINE = 10;
const CARRIAGE_RETURN = 13;
const EMPTY = new Uint8Array(0);
// Bodies up to this size are copied behind their header so one write carries
// both; larger ones go out as two writes rather than being copied.
const COALESCE_LIMIT = 16 * 1024;

/**
 * Large packets a decoder delivered right behind their own length header, in
 * bytes no one else writes, mapped to that header's length: views on a
 * chunk they arrived in whole (or on chunks that lie back to back in one
 * buffer), and packets it copied together from several chunks behind room
 * where it wrote their header. Sent again with the same packet type, as a
 * relay or an echo does, such a packet goes out together with that header
 * as one buffer: one write, no copy. The same length in the same number of
 * bytes is the same header.
 */
const withHeader = new WeakMap<Uint8Array, number>();

/**
 * Cuts a byte stream into packets. `push` gives the sink each whole
 * packet, in order; `finish` is called at end of stream. Both throw a
 * {@linkcode SocketServerError} (`packet_too_large`, `truncated_packet`) when
 * the peer breaks the framing; after that the decoder must not be used.
 */
export interface PacketDecoder {
  /**
   * Feeds the next chunk; the decoder may keep views into it. Returns true
   * when the chunk ended inside a packet (part of it has come, not all).
   */
  push(chunk: Uint8Array): boolean;
  /** Declares end of stream; throws if a packet was left incomplete. */
  finish(): void;
}

/** Where a decoder delivers whole packets, in order. */
export interface PacketSink {
  /** Takes one whole packet; it may be a view into a pushed chunk. */
  packet(packet: Uint8Array): void;
}

/** Makes the decoder for a packet type, delivering packets to `sink`. */
export function createDecoder(packetType: PacketType, packetSize: number, sink: PacketSink): PacketDecoder {
  if (packetType === 0) return new RawDecoder(sink);
  if (packetType === "line") return new LineDecoder(packetSize, sink);
  return new LengthPrefixDecoder(packetType, packetSize, sink);
}

/** Packet type 0: each chunk is a packet. */
class RawDecoder implements PacketDecoder {
  #sink: PacketSink;
  constructor(sink: PacketSink) {
    this.#sink = sink;
  }
  push(chunk: Uint8Array): boolean {
    this.#sink.packet(chunk);
    return false;
  }
  finish(): void {}
}

/** The parts as one view, when they lie back to back in one buffer. */
function adjacentView(parts: Uint8Array[], length: number): Uint8Array | undefined {
  const first = parts[0];
  if (parts.length === 1) return first;
  if (contiguousCount(parts) < parts.length) return undefined;
  return new Uint8Array(first.buffer, first.byteOffset, length);
}

/**
 * Joins parts into one buffer of `length` bytes: their view when they lie
 * back to back in one buffer, as consecutive reads into the rest of an
 * adapter's read buffer do, else a copy (the only one made).
 */
function concat(parts: Uint8Array[], length: number): Uint8Array {
  return adjacentView(parts, length) ?? copyChunks(parts, parts.length, length);
}

function tooLarge(length: number, packetSize: number): SocketServerError {
  return new SocketServerError(
    `Packet of ${length} bytes exceeds the packet size limit of ${packetSize} bytes`,
    "packet_too_large",
  );
}

class LengthPrefixDecoder implements PacketDecoder {
  #headerLength: 1 | 2 | 4;
  #packetSize: number;
  #sink: PacketSink;
  // A header split across chunks: its bytes so far, and their value.
  #headerFilled = 0;
  #headerValue = 0;
  // Length of the packet whose body is being collected, or -1 between packets.
  #bodyLength = -1;
  // Body pieces are kept as views and joined once, when the packet is whole:
  // memory grows with bytes received, never with the length announced. Made
  // per packet that needs it: an idle session keeps no array.
  #bodyParts: Uint8Array[] | undefined;
  #bodyFilled = 0;
  // Where the body being collected starts, when its header came whole in
  // one chunk right before it: the packet, if its parts turn out to lie back
  // to back there, still has its header in front.
  #headerBuffer: ArrayBufferLike | undefined;
  #bodyOffset = 0;

  constructor(
    headerLength: 1 | 2 | 4,
    packetSize: number,
    sink: PacketSink,
  ) {
    this.#headerLength = headerLength;
    this.#packetSize = packetSize;
    this.#sink = sink;
  }

  push(chunk: Uint8Array): boolean {
    let offset = 0;
    const end = chunk.length;
    while (offset < end) {
      if (this.#bodyLength < 0) {
        let length: number;
        const headerLength = this.#headerLength;
        // Whether the header sits in this chunk, right before the body.
        let headerHere = false;
        if (this.#headerFilled === 0 && end - offset >= headerLength) {
          length = readLength(chunk, offset, headerLength);
          offset += headerLength;
          headerHere = true;
        } else {
          // Multiplying, not shifting, keeps 32-bit lengths unsigned.
          while (this.#headerFilled < headerLength && offset < end) {
            this.#headerValue = this.#headerValue * 256 + chunk[offset++];
            this.#headerFilled++;
          }
          if (this.#headerFilled < headerLength) return true;
          length = this.#headerValue;
          this.#headerFilled = 0;
          this.#headerValue = 0;
        }
        if (this.#packetSize > 0 && length > this.#packetSize) {
          throw tooLarge(length, this.#packetSize);
        }
        if (end - offset >= length) {
          // Whole packet inside this chunk: hand out a view, no copy.
          const packet = length === 0 ? EMPTY : chunk.subarray(offset, offset + length);
          offset += length;
          if (headerHere && length >= COALESCE_LIMIT) withHeader.set(packet, headerLength);
          this.#sink.packet(packet);
          continue;
        }
        this.#bodyLength = length;
        this.#bodyFilled = 0;
        if (headerHere && length >= COALESCE_LIMIT) {
          this.#headerBuffer = chunk.buffer;
          this.#bodyOffset = chunk.byteOffset + offset;
        }
      }
      const take = Math.min(this.#bodyLength - this.#bodyFilled, end - offset);
      // A header that ends the chunk leaves nothing to keep; skipping the
      // empty view lets a body that then arrives whole go out uncopied.
      if (take === 0) return true;
      (this.#bodyParts ??= []).push(chunk.subarray(offset, offset + take));
      this.#bodyFilled += take;
      offset += take;
      if (this.#bodyFilled === this.#bodyLength) {
        const packet = this.#join();
        this.#headerBuffer = undefined;
        this.#bodyParts = undefined;
        this.#bodyLength = -1;
        this.#sink.packet(packet);
      }
    }
    return this.#bodyLength >= 0;
  }

  /**
   * The collected body as one buffer: a view when its parts lie back to back
   * in one buffer, else a copy (the only one made), allocated with room for
   * its header in front when the packet is large enough to be sent on as one
   * buffer with it.
   */
  #join(): Uint8Array {
    const parts = this.#bodyParts!;
    const length = this.#bodyLength;
    const headerLength = this.#headerLength;
    const large = length >= COALESCE_LIMIT;
    const view = adjacentView(parts, length);
    if (view !== undefined) {
      if (large && view.buffer === this.#headerBuffer && view.byteOffset === this.#bodyOffset) {
        withHeader.set(view, headerLength);
      }
      return view;
    }
    if (!large) return copyChunks(parts, parts.length, length);
    const joined = copyChunks(parts, parts.length, length, headerLength);
    writeLength(joined, headerLength, length);
    const packet = joined.subarray(headerLength);
    withHeader.set(packet, headerLength);
    return packet;
  }

  finish(): void {
    if (this.#headerFilled > 0) {
      throw new SocketServerError(
        `Stream ended inside a packet header (${this.#headerFilled} of ${this.#headerLength} bytes)`,
        "truncated_packet",
      );
    }
    if (this.#bodyLength >= 0) {
      throw new SocketServerError(
        `Stream ended inside a packet (${this.#bodyFilled} of ${this.#bodyLength} bytes)`,
        "truncated_packet",
      );
    }
  }
}

/** Writes `length` big-endian into the first `headerLength` bytes. */
function writeLength(bytes: Uint8Array, headerLength: number, length: number): void {
  if (headerLength === 1) {
    bytes[0] = length;
  } else if (headerLength === 2) {
    bytes[0] = length >>> 8;
    bytes[1] = length & 0xff;
  } else {
    bytes[0] = length >>> 24;
    bytes[1] = (length >>> 16) & 0xff;
    bytes[2] = (length >>> 8) & 0xff;
    bytes[3] = length & 0xff;
  }
}

function readLength(bytes: Uint8Array, offset: number, headerLength: number): number {
  if (headerLength === 1) return bytes[offset];
  if (headerLength === 2) return (bytes[offset] << 8) | bytes[offset + 1];
  // `>>> 0` keeps lengths up to 2^32-1 unsigned.
  return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) |
    (bytes[offset + 2] << 8) | bytes[offset + 3]) >>> 0;
}

class LineDecoder implements PacketDecoder {
  #packetSize: number;
  #sink: PacketSink;
  // A line cut by the end of a chunk, in pieces (made when needed).
  #parts: Uint8Array[] | undefined;
  #partsLength = 0;

  constructor(packetSize: number, sink: PacketSink) {
    this.#packetSize = packetSize;
    this.#sink = sink;
  }

  push(chunk: Uint8Array): boolean {
    let offset = 0;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, offset);
      if (newline < 0) break;
      let line: Uint8Array;
      if (this.#partsLength === 0) {
        line = chunk.subarray(offset, newline);
      } else {
        const parts = this.#parts!;
        parts.push(chunk.subarray(offset, newline));
        line = concat(parts, this.#partsLength + newline - offset);
        this.#parts = undefined;
        this.#partsLength = 0;
      }
      offset = newline + 1;
      const length = line.length > 0 && line[line.length - 1] === CARRIAGE_RETURN
        ? line.length - 1
        : line.length;
      if (this.#packetSize > 0 && length > this.#packetSize) {
        throw tooLarge(length, this.#packetSize);
      }
      this.#sink.packet(length === line.length ? line : line.subarray(0, length));
    }
    if (offset < chunk.length) {
      const rest = offset === 0 ? chunk : chunk.subarray(offset);
      (this.#parts ??= []).push(rest);
      this.#partsLength += rest.length;
      // A line already longer than the limit (plus room for a `\r`) is
      // refused now, before more of it is buffered.
      if (this.#packetSize > 0 && this.#partsLength > this.#packetSize + 1) {
        throw tooLarge(this.#partsLength, this.#packetSize);
      }
      return true;
    }
    return false;
  }

  finish(): void {
    if (this.#partsLength > 0) {
      throw new SocketServerError(
        `Stream ended inside a line (${this.#partsLength} bytes without a newline)`,
        "truncated_packet",
      );
    }
  }
}

const encoder = new TextEncoder();

// Frames up to 8 KiB are cut one after another from shared 64 KiB slabs, as
// Node's Buffer pool does: a send then allocates a view, not a buffer of its
// own (and on V8, a frame of up to 64 bytes is not made in the JavaScript
// heap, where the first write of it would have to move it out). A frame
// still queued for a slow peer keeps its slab. Frames lie back to back, so a
// transport can send a turn's worth of them as one view (see mergeAdjacent).
const frameSlabs = new Slabs(64 * 1024, 8 * 1024);
const LINE_END = new Uint8Array([NEWLINE]);

/**
 * Frames `data` for sending: the bytes to write, in order: one buffer, or a
 * header and the body itself (large bodies are not copied). A large packet a
 * decoder delivered, sent with the same header length, goes out as one
 * buffer together with the header it arrived with. Strings are sent as UTF-8.
 * Throws when the body does not fit the header.
 */
export function encodePacket(
  packetType: PacketType,
  data: Uint8Array | string,
): Uint8Array[] {
  const body = typeof data === "string" ? encoder.encode(data) : data;
  if (packetType === 0) return [body];
  if (packetType === "line") {
    if (body.length < COALESCE_LIMIT) {
      const framed = frameSlabs.cut(body.length + 1);
      framed.set(body);
      framed[body.length] = NEWLINE;
      return [framed];
    }
    return [body, LINE_END];
  }
  const headerLength = packetType;
  const length = body.length;
  const limit = headerLength === 4 ? 0xffffffff : (1 << (8 * headerLength)) - 1;
  if (length > limit) {
    throw new SocketServerError(
      `Cannot send ${length} bytes with packet type ${packetType}: at most ${limit} fit its header`,
      "packet_too_large",
    );
  }
  const coalesce = length < COALESCE_LIMIT;
  if (!coalesce && withHeader.get(body) === headerLength) {
    // A received packet sent on: its own header is right in front of it.
    return [new Uint8Array(body.buffer, body.byteOffset - headerLength, headerLength + length)];
  }
  const framed = coalesce ? frameSlabs.cut(headerLength + length) : new Uint8Array(headerLength);
  writeLength(framed, headerLength, length);
  if (coalesce) {
    framed.set(body, headerLength);
    return [framed];
  }
  return [framed, body];
}
