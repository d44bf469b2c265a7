// Unit tests of the packet framing (src/framing.ts): whole packets out of any
// split or coalescing of the byte stream, size limits, truncation, encoding,
// zero-copy views and argument validation. No sockets and no timers, so the
// same file runs fast under Node (`node --test`), Deno (`deno test`) and Bun
// (`bun test`).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { SocketServerError } from "../src/errors.ts";
import {
  createDecoder,
  encodePacket,
  type PacketType,
} from "../src/framing.ts";
import { validatePacketSize, validatePacketType } from "../src/options.ts";
import { concat } from "./support/bytes.ts";

// ---------------------------------------------------------------------------
// Helpers

const utf8 = new TextEncoder();
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** The bytes `encodePacket` asks to write, joined into one stream. */
const frame = (type: PacketType, body: Uint8Array | string): Uint8Array => concat(encodePacket(type, body));

/** Frames every body and joins them into one stream. */
const stream = (type: PacketType, bodies: (Uint8Array | string)[]): Uint8Array =>
  concat(bodies.map((body) => frame(type, body)));

/** `length` deterministic bytes, all 256 values appearing in long runs. */
function bytesOf(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed * 31) & 0xff;
  return bytes;
}

/** A body for `type`: any bytes, but for "line" letters only (no `\n` or `\r`). */
function bodyFor(type: PacketType, length: number, seed = 0): Uint8Array {
  const bytes = bytesOf(length, seed);
  return type === "line" ? bytes.map((b) => 65 + (b % 26)) : bytes;
}

/** A decoder whose packets are collected (as copies) in `packets`. */
function collecting(type: PacketType, packetSize: number) {
  const packets: Uint8Array[] = [];
  const decoder = createDecoder(type, packetSize, { packet: (packet) => packets.push(packet.slice()) });
  return { decoder, packets };
}

/** Feeds `chunks` to a fresh decoder, finishes it and returns the packets. */
function decodeAll(type: PacketType, packetSize: number, chunks: Uint8Array[]): Uint8Array[] {
  const { decoder, packets } = collecting(type, packetSize);
  for (const chunk of chunks) decoder.push(chunk);
  decoder.finish();
  return packets;
}

function oneByteChunks(bytes: Uint8Array): Uint8Array[] {
  return Array.from(bytes, (byte) => new Uint8Array([byte]));
}

/** Cuts `bytes` into chunks of pseudo-random sizes 1..maxChunk (seeded). */
function randomChunks(bytes: Uint8Array, maxChunk: number, seed: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let state = seed >>> 0;
  for (let offset = 0; offset < bytes.length;) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const size = 1 + (state % maxChunk);
    chunks.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}

/**
 * Asserts the decoded packets equal the expected bodies: first their count
 * and lengths, then their bytes (reporting the first differing byte rather
 * than dumping large arrays).
 */
function assertPackets(actual: Uint8Array[], expected: (Uint8Array | string)[], what = "packets"): void {
  const want = expected.map((body) => (typeof body === "string" ? utf8.encode(body) : body));
  assert.deepEqual(actual.map((p) => p.length), want.map((p) => p.length), `${what}: packet lengths`);
  actual.forEach((packet, i) => {
    const at = packet.findIndex((byte, j) => byte !== want[i][j]);
    if (at >= 0) assert.fail(`${what}: packet ${i} differs at byte ${at}: ${packet[at]} != ${want[i][at]}`);
  });
}

/** Asserts `fn` throws a SocketServerError with `code` (and a matching message). */
function throwsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SocketServerError, `expected a SocketServerError, got ${error}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

// ---------------------------------------------------------------------------
// Behaviour shared by every framed type (1, 2, 4 and "line")

type FramedType = 1 | 2 | 4 | "line";

/** Registers the tests every framed packet type must pass. */
function framedDecoderTests(type: FramedType, roundTripSizes: number[]): void {
  test("push() tells whether its chunk ended inside a packet", () => {
    const first = frame(type, bodyFor(type, 10));
    const bytes = concat([first, frame(type, bodyFor(type, 6, 1))]);
    const decoder = createDecoder(type, 0, { packet: () => {} });
    assert.equal(decoder.push(bytes.subarray(0, 1)), true, "in the first packet's first byte");
    assert.equal(decoder.push(bytes.subarray(1, 7)), true, "inside the first packet");
    assert.equal(decoder.push(bytes.subarray(7, first.length)), false, "at the first packet's end");
    assert.equal(decoder.push(bytes.subarray(first.length, bytes.length - 1)), true, "one byte short of the second's end");
    assert.equal(decoder.push(bytes.subarray(bytes.length - 1)), false, "at the second packet's end");
    assert.equal(decoder.push(bytes), false, "two whole packets");
  });

  test("round trip: encoded packets of boundary sizes decode to the same bodies", () => {
    const bodies = roundTripSizes.map((size, i) => bodyFor(type, size, i));
    assertPackets(decodeAll(type, 0, [stream(type, bodies)]), bodies);
  });

  test("round trip with each part encodePacket returns delivered as its own chunk", () => {
    const bodies = roundTripSizes.map((size, i) => bodyFor(type, size, i));
    const chunks = bodies.flatMap((body) => encodePacket(type, body));
    assertPackets(decodeAll(type, 0, chunks), bodies);
  });

  test("frames stay intact while many more are made after them (small frames share buffers)", () => {
    // 600 distinct 250-byte bodies: frames worth several of the shared slabs.
    const bodies = Array.from({ length: 600 }, (_, i) => bodyFor(type, 250, i));
    const chunks = bodies.flatMap((body) => encodePacket(type, body));
    assertPackets(decodeAll(type, 0, chunks), bodies);
  });

  test("round trip of UTF-8 strings", () => {
    const strings = ["héllo", "", "✓ done", "🎉", "plain ascii"];
    assert.deepEqual(decodeAll(type, 0, [stream(type, strings)]).map(text), strings);
  });

  test("yields whole packets from one-byte chunks", () => {
    const bodies = Array.from({ length: 40 }, (_, i) => bodyFor(type, (i * 5) % 23, i));
    assertPackets(decodeAll(type, 0, oneByteChunks(stream(type, bodies))), bodies);
  });

  test("yields the same two packets at every split point of the stream", () => {
    for (const sizes of [[9, 12], [0, 5], [5, 0]]) {
      const bodies = sizes.map((size, i) => bodyFor(type, size, i + 1));
      const bytes = stream(type, bodies);
      for (let at = 0; at <= bytes.length; at++) {
        const chunks = [bytes.subarray(0, at), bytes.subarray(at)];
        assertPackets(decodeAll(type, 0, chunks), bodies, `sizes ${sizes}, split at ${at}`);
      }
    }
  });

  test("yields the same packets however a long stream is chunked", () => {
    const bodies = Array.from({ length: 200 }, (_, i) => bodyFor(type, (i * 37) % 250, i));
    const bytes = stream(type, bodies);
    for (const [maxChunk, seed] of [[3, 1], [17, 2], [64, 3], [1000, 4], [5000, 5]]) {
      assertPackets(decodeAll(type, 0, randomChunks(bytes, maxChunk, seed)), bodies, `chunks of at most ${maxChunk}`);
    }
  });

  test("yields many packets coalesced in one chunk, in order", () => {
    const bodies = Array.from({ length: 500 }, (_, i) => bodyFor(type, i % 13, i));
    assertPackets(decodeAll(type, 0, [stream(type, bodies)]), bodies);
  });

  test("yields zero-length packets, alone and between others", () => {
    const empty = new Uint8Array(0);
    assertPackets(decodeAll(type, 0, [frame(type, empty)]), [empty]);
    const bodies = [empty, bodyFor(type, 3), empty, empty, bodyFor(type, 1), empty];
    assertPackets(decodeAll(type, 0, [stream(type, bodies)]), bodies);
  });

  test("yields nothing and finishes cleanly for an empty stream or empty chunks", () => {
    assert.deepEqual(decodeAll(type, 0, []), []);
    assert.deepEqual(decodeAll(type, 0, [new Uint8Array(0), new Uint8Array(0)]), []);
  });

  test("finish() after a clean stream does not throw", () => {
    const { decoder, packets } = collecting(type, 0);
    decoder.push(stream(type, [bodyFor(type, 10), new Uint8Array(0)]));
    decoder.finish();
    assert.equal(packets.length, 2);
  });

  test("a stream cut anywhere inside its last packet is a truncated_packet at finish()", () => {
    const first = bodyFor(type, 4, 1);
    const whole = stream(type, [first, bodyFor(type, 10, 2)]);
    const firstLength = frame(type, first).length;
    for (let cut = firstLength + 1; cut < whole.length; cut++) {
      const { decoder, packets } = collecting(type, 0);
      decoder.push(whole.subarray(0, cut));
      assertPackets(packets, [first], `cut at ${cut}`);
      throwsCode(() => decoder.finish(), "truncated_packet");
    }
  });

  test("accepts a packet of exactly packetSize bytes", () => {
    for (const limit of [1, 100, 255]) {
      const body = bodyFor(type, limit);
      assertPackets(decodeAll(type, limit, [frame(type, body)]), [body], `limit ${limit}`);
      assertPackets(decodeAll(type, limit, oneByteChunks(frame(type, body))), [body], `limit ${limit}, bytewise`);
    }
  });

  test("rejects a packet of packetSize + 1 bytes with packet_too_large", () => {
    for (const limit of [1, 100, 254]) {
      const { decoder, packets } = collecting(type, limit);
      throwsCode(
        () => decoder.push(frame(type, bodyFor(type, limit + 1))),
        "packet_too_large",
        new RegExp(`${limit + 1} bytes exceeds the packet size limit of ${limit} bytes`),
      );
      assert.equal(packets.length, 0);
    }
  });

  test("packets before an over-long one are still delivered", () => {
    const good = [bodyFor(type, 3, 1), bodyFor(type, 10, 2)];
    const { decoder, packets } = collecting(type, 10);
    throwsCode(() => decoder.push(stream(type, [...good, bodyFor(type, 11, 3)])), "packet_too_large");
    assertPackets(packets, good);
  });

  test("packetSize 0 means no limit", () => {
    const body = bodyFor(type, type === 1 ? 255 : type === 2 ? 65_535 : 70_000);
    assertPackets(decodeAll(type, 0, [frame(type, body)]), [body]);
  });
}

/** Registers the tests particular to length-prefixed types. */
function lengthPrefixTests(type: 1 | 2 | 4, limit: number): void {
  const header = (length: number): Uint8Array => {
    const bytes = new Uint8Array(type);
    for (let i = 0; i < type; i++) bytes[i] = Math.floor(length / 256 ** (type - 1 - i)) & 0xff;
    return bytes;
  };

  test(`rejects an over-long packet from its header alone (limit ${limit})`, () => {
    const { decoder, packets } = collecting(type, limit);
    throwsCode(() => decoder.push(header(limit + 1)), "packet_too_large", new RegExp(`${limit + 1} bytes`));
    assert.equal(packets.length, 0);
  });

  test("rejects an over-long header delivered byte by byte on its last byte", () => {
    const { decoder } = collecting(type, limit);
    const bytes = header(limit + 1);
    for (let i = 0; i < type - 1; i++) decoder.push(bytes.subarray(i, i + 1));
    throwsCode(() => decoder.push(bytes.subarray(type - 1)), "packet_too_large");
  });

  test("accepts a header announcing exactly packetSize and waits for the body", () => {
    const { decoder, packets } = collecting(type, limit);
    decoder.push(header(limit));
    assert.equal(packets.length, 0);
    const body = bytesOf(limit, 9);
    decoder.push(body);
    assertPackets(packets, [body]);
    decoder.finish();
  });

  test("reads the length header as big-endian unsigned", () => {
    const max = type === 4 ? 0xffffffff : 256 ** type - 1;
    throwsCode(() => createDecoder(type, 100, { packet: () => {} }).push(new Uint8Array(type).fill(0xff)), "packet_too_large", new RegExp(`^Packet of ${max} bytes`));
    // 0x01 then zeros: 256^(type-1), i.e. the first byte is the most significant.
    const length = 256 ** (type - 1);
    const body = bytesOf(length, 4);
    assertPackets(decodeAll(type, 0, [concat([new Uint8Array([1, ...new Uint8Array(type - 1)]), body])]), [body]);
  });

  if (type > 1) {
    test("finish() inside a partial header is a truncated_packet naming the header", () => {
      for (let have = 1; have < type; have++) {
        const { decoder } = collecting(type, 0);
        decoder.push(header(5).subarray(0, have));
        throwsCode(() => decoder.finish(), "truncated_packet", new RegExp(`header \\(${have} of ${type} bytes\\)`));
      }
    });
  }

  test("finish() after a header alone or a partial body is a truncated_packet with the counts", () => {
    const whole = frame(type, bytesOf(10));
    for (const have of [0, 1, 9]) {
      const { decoder, packets } = collecting(type, 0);
      decoder.push(whole.subarray(0, type + have));
      assert.equal(packets.length, 0);
      throwsCode(() => decoder.finish(), "truncated_packet", new RegExp(`\\(${have} of 10 bytes\\)`));
    }
  });

  test("a packet inside one chunk is a view on that chunk, not a copy", () => {
    const backing = new Uint8Array(100);
    const bodies = [bytesOf(10, 1), bytesOf(0), bytesOf(7, 2)];
    const bytes = stream(type, bodies);
    backing.set(bytes, 13);
    const chunk = backing.subarray(13, 13 + bytes.length);
    const packets: Uint8Array[] = [];
    createDecoder(type, 0, { packet: (packet) => packets.push(packet) }).push(chunk);
    assertPackets(packets, bodies);
    assert.equal(packets[0].buffer, chunk.buffer);
    assert.equal(packets[0].byteOffset, 13 + type);
    assert.equal(packets[2].buffer, chunk.buffer);
    assert.equal(packets[2].byteOffset, 13 + type + 10 + type + type);
  });

  test("a body arriving whole in the chunk that completes a split header is a view on it", () => {
    const bytes = frame(type, bytesOf(20));
    const first = bytes.subarray(0, type - 1); // empty for type 1
    const second = bytes.slice(type - 1);
    let packet: Uint8Array | undefined;
    const decoder = createDecoder(type, 0, { packet: (p) => (packet = p) });
    decoder.push(first);
    decoder.push(second);
    assertPackets([packet!], [bytesOf(20)]);
    assert.equal(packet!.buffer, second.buffer);
  });

  test("a body arriving whole in the chunk after a header that ended its chunk is that chunk, not a copy", () => {
    const bytes = frame(type, bytesOf(20, 3));
    const header = bytes.slice(0, type);
    const body = bytes.slice(type);
    let packet: Uint8Array | undefined;
    const decoder = createDecoder(type, 0, { packet: (p) => (packet = p) });
    decoder.push(header);
    assert.equal(packet, undefined);
    decoder.push(body);
    assertPackets([packet!], [bytesOf(20, 3)]);
    assert.equal(packet!.buffer, body.buffer);
  });
}

// ---------------------------------------------------------------------------
// The suites

describe("packet 1", () => {
  framedDecoderTests(1, [0, 1, 2, 127, 128, 254, 255]);
  lengthPrefixTests(1, 100);
});

describe("packet 2", () => {
  framedDecoderTests(2, [0, 1, 255, 256, 16_383, 16_384, 65_534, 65_535]);
  lengthPrefixTests(2, 300);
});

describe("packet 4", () => {
  framedDecoderTests(4, [0, 1, 255, 256, 65_535, 65_536, 200_000]);
  lengthPrefixTests(4, 70_000);

  test("a 0xFFFFFFFF length is 4294967295, not negative, when checked against packetSize", () => {
    const { decoder } = collecting(4, 1000);
    throwsCode(
      () => decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff])),
      "packet_too_large",
      /^Packet of 4294967295 bytes exceeds the packet size limit of 1000 bytes$/,
    );
  });

  test("a 0x80000000 length is 2147483648, not negative", () => {
    const { decoder } = collecting(4, 1000);
    throwsCode(() => decoder.push(new Uint8Array([0x80, 0, 0, 0])), "packet_too_large", /^Packet of 2147483648 bytes/);
  });

  test("without a limit, a huge announced packet buffers only what arrived", () => {
    const { decoder, packets } = collecting(4, 0);
    decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    assert.equal(packets.length, 0);
    throwsCode(() => decoder.finish(), "truncated_packet", /\(3 of 4294967295 bytes\)/);
  });
});

describe('packet "line"', () => {
  const lines = (...parts: string[]) => parts.map((part) => utf8.encode(part));
  const decodeText = (packetSize: number, ...parts: string[]) => decodeAll("line", packetSize, lines(...parts)).map(text);

  framedDecoderTests("line", [0, 1, 255, 256, 16_383, 16_384, 70_000]);

  test("strips \\n and \\r\\n terminators", () => {
    assert.deepEqual(decodeText(0, "a\nb\r\nc\n"), ["a", "b", "c"]);
  });

  test("keeps a lone \\r in the middle or at the start of a line", () => {
    assert.deepEqual(decodeText(0, "c\rd\n\rx\n"), ["c\rd", "\rx"]);
  });

  test("strips only one \\r before the \\n", () => {
    assert.deepEqual(decodeText(0, "x\r\r\n\r\r\n"), ["x\r", "\r"]);
  });

  test("yields empty lines as empty packets, for both terminators", () => {
    assert.deepEqual(decodeText(0, "\n\r\n\n"), ["", "", ""]);
    assert.deepEqual(decodeText(0, "a\n\nb\r\n\r\nc\n"), ["a", "", "b", "", "c"]);
  });

  test("joins a line split across chunks", () => {
    assert.deepEqual(decodeText(0, "hel", "lo wo", "rld\n"), ["hello world"]);
    assert.deepEqual(decodeText(0, "a", "", "b\nc", "d\n"), ["ab", "cd"]);
  });

  test("joins a line split between \\r and \\n", () => {
    assert.deepEqual(decodeText(0, "one\r", "\ntwo\r", "\n"), ["one", "two"]);
  });

  test("yields the same lines at every split point of a \\r\\n stream", () => {
    const bytes = utf8.encode("first\r\nsec\rond\r\n\r\nlast\n");
    for (let at = 0; at <= bytes.length; at++) {
      const packets = decodeAll("line", 0, [bytes.subarray(0, at), bytes.subarray(at)]);
      assert.deepEqual(packets.map(text), ["first", "sec\rond", "", "last"], `split at ${at}`);
    }
  });

  test("yields \\r\\n lines from one-byte chunks", () => {
    const packets = decodeAll("line", 0, oneByteChunks(utf8.encode("ab\r\n\r\nc\rd\r\n")));
    assert.deepEqual(packets.map(text), ["ab", "", "c\rd"]);
  });

  test("a \\r\\n-terminated line of exactly packetSize content bytes is accepted", () => {
    assert.deepEqual(decodeText(5, "12345\r\n"), ["12345"]);
    assert.deepEqual(decodeText(5, "12345\r", "\n"), ["12345"]);
    assert.deepEqual(decodeText(5, "12", "345\r", "\n"), ["12345"]);
    assert.deepEqual(decodeAll("line", 5, oneByteChunks(utf8.encode("12345\r\n"))).map(text), ["12345"]);
  });

  test("a line of packetSize + 1 content bytes is rejected at its newline", () => {
    throwsCode(() => decodeText(5, "123456\n"), "packet_too_large", /^Packet of 6 bytes exceeds the packet size limit of 5 bytes$/);
    throwsCode(() => decodeText(5, "123456\r\n"), "packet_too_large");
    throwsCode(() => decodeText(5, "123456", "\n"), "packet_too_large", /^Packet of 6 bytes/);
  });

  test("an over-long line without newline is rejected once more than packetSize + 1 bytes are buffered", () => {
    const { decoder, packets } = collecting("line", 5);
    decoder.push(utf8.encode("123")); // 3 buffered
    decoder.push(utf8.encode("456")); // 6 = packetSize + 1 (room for a "\r"): still accepted
    throwsCode(() => decoder.push(utf8.encode("7")), "packet_too_large", /^Packet of 7 bytes exceeds the packet size limit of 5 bytes$/);
    assert.equal(packets.length, 0);
  });

  test("an over-long line in a single chunk without newline is rejected at once", () => {
    const { decoder } = collecting("line", 5);
    throwsCode(() => decoder.push(utf8.encode("1234567")), "packet_too_large");
  });

  test("an over-long line delivered byte by byte is rejected at its packetSize + 2nd byte", () => {
    const { decoder } = collecting("line", 5);
    const bytes = oneByteChunks(utf8.encode("1234567"));
    for (const chunk of bytes.slice(0, 6)) decoder.push(chunk);
    throwsCode(() => decoder.push(bytes[6]), "packet_too_large");
  });

  test("lines before an over-long unterminated one in the same chunk are still delivered", () => {
    const { decoder, packets } = collecting("line", 5);
    throwsCode(() => decoder.push(utf8.encode("ok\r\nfine\nway too long")), "packet_too_large");
    assert.deepEqual(packets.map(text), ["ok", "fine"]);
  });

  test("an unterminated last line is a truncated_packet at finish()", () => {
    const { decoder, packets } = collecting("line", 0);
    decoder.push(utf8.encode("done\nhalf"));
    assert.deepEqual(packets.map(text), ["done"]);
    throwsCode(() => decoder.finish(), "truncated_packet", /\(4 bytes without a newline\)/);
  });

  test("a lone trailing \\r is a truncated_packet at finish()", () => {
    const { decoder } = collecting("line", 0);
    decoder.push(utf8.encode("done\r"));
    throwsCode(() => decoder.finish(), "truncated_packet", /\(5 bytes without a newline\)/);
  });

  test("a line inside one chunk is a view on that chunk, \\r\\n stripped without copying", () => {
    const chunk = utf8.encode("abc\r\nde\n");
    const packets: Uint8Array[] = [];
    createDecoder("line", 0, { packet: (packet) => packets.push(packet) }).push(chunk);
    assert.deepEqual(packets.map(text), ["abc", "de"]);
    for (const packet of packets) assert.equal(packet.buffer, chunk.buffer);
    assert.equal(packets[0].byteOffset, chunk.byteOffset);
    assert.equal(packets[1].byteOffset, chunk.byteOffset + 5);
  });
});

describe("packet 0", () => {
  test("yields each chunk itself, in order, whatever its size", () => {
    const chunks = [bytesOf(3), bytesOf(70_000, 1), bytesOf(1, 2)];
    const seen: Uint8Array[] = [];
    const decoder = createDecoder(0, 0, { packet: (packet) => seen.push(packet) });
    for (const chunk of chunks) decoder.push(chunk);
    decoder.finish();
    assert.equal(seen.length, chunks.length);
    seen.forEach((packet, i) => assert.equal(packet, chunks[i]));
  });

  test("ignores packetSize", () => {
    const chunk = bytesOf(100);
    const seen: Uint8Array[] = [];
    createDecoder(0, 10, { packet: (packet) => seen.push(packet) }).push(chunk);
    assert.equal(seen[0], chunk);
  });

  test("finish() never throws: there is no framing to truncate", () => {
    const decoder = createDecoder(0, 0, { packet: () => {} });
    decoder.push(bytesOf(5));
    decoder.finish();
  });

  test("round trip: encodePacket sends the body itself", () => {
    const body = bytesOf(10);
    const parts = encodePacket(0, body);
    assert.equal(parts.length, 1);
    assert.equal(parts[0], body);
    assertPackets(decodeAll(0, 0, parts), [body]);
  });
});

describe("encodePacket", () => {
  test("writes big-endian length headers of 1, 2 and 4 bytes", () => {
    assert.deepEqual([...frame(1, bytesOf(3))].slice(0, 1), [3]);
    assert.deepEqual([...frame(1, bytesOf(255))].slice(0, 1), [0xff]);
    assert.deepEqual([...frame(2, bytesOf(0x0102))].slice(0, 2), [1, 2]);
    assert.deepEqual([...frame(2, bytesOf(0xfffe))].slice(0, 2), [0xff, 0xfe]);
    assert.deepEqual([...frame(4, bytesOf(0x0305))].slice(0, 4), [0, 0, 3, 5]);
    assert.deepEqual([...encodePacket(4, new Uint8Array(0x01020304))[0]], [1, 2, 3, 4]);
  });

  test("writes a zero length header for an empty body", () => {
    assert.deepEqual([...frame(1, "")], [0]);
    assert.deepEqual([...frame(2, new Uint8Array(0))], [0, 0]);
    assert.deepEqual([...frame(4, "")], [0, 0, 0, 0]);
  });

  test("encodes string bodies as UTF-8", () => {
    assert.deepEqual([...frame(1, "é")], [2, 0xc3, 0xa9]);
    assert.deepEqual([...frame(2, "✓")], [0, 3, 0xe2, 0x9c, 0x93]);
    assert.deepEqual([...frame(4, "🎉")], [0, 0, 0, 4, 0xf0, 0x9f, 0x8e, 0x89]);
    assert.deepEqual([...frame(0, "hé")], [0x68, 0xc3, 0xa9]);
    assert.deepEqual([...frame("line", "é")], [0xc3, 0xa9, 10]);
  });

  test("sends a small body as one buffer: header then body", () => {
    const body = bytesOf(100);
    for (const type of [1, 2, 4] as const) {
      const parts = encodePacket(type, body);
      assert.equal(parts.length, 1, `packet ${type}`);
      assert.deepEqual(parts[0].subarray(type), body);
    }
  });

  test("sends a 64 KiB body as its header plus the body itself, not a copy", () => {
    const body = bytesOf(65_536);
    const parts = encodePacket(4, body);
    assert.equal(parts.length, 2);
    assert.deepEqual([...parts[0]], [0, 1, 0, 0]);
    assert.equal(parts[1], body);
    const max2 = bytesOf(65_535);
    const parts2 = encodePacket(2, max2);
    assert.equal(parts2.length, 2);
    assert.deepEqual([...parts2[0]], [0xff, 0xff]);
    assert.equal(parts2[1], max2);
  });

  /** The packets a fresh decoder delivers for `chunks`, as they are (no copies). */
  function received(type: PacketType, chunks: Uint8Array[]): Uint8Array[] {
    const packets: Uint8Array[] = [];
    const decoder = createDecoder(type, 0, { packet: (packet) => packets.push(packet) });
    for (const chunk of chunks) decoder.push(chunk);
    return packets;
  }

  test("sends a large received packet again with its own header: one buffer, a view on the chunk", () => {
    for (const type of [2, 4] as const) {
      const body = bytesOf(20_000, type);
      const chunk = stream(type, [bytesOf(5), body]);
      const [, packet] = received(type, [chunk]);
      const parts = encodePacket(type, packet);
      assert.equal(parts.length, 1, `packet ${type}`);
      assert.equal(parts[0].buffer, chunk.buffer, `packet ${type}: no copy`);
      assert.deepEqual(parts[0], frame(type, body), `packet ${type}`);
    }
  });

  test("sends a large packet joined from several chunks again as one buffer: the copy has room for its header", () => {
    for (const type of [2, 4] as const) {
      const body = bytesOf(type === 2 ? 60_000 : 70_000, 9);
      const bytes = frame(type, body);
      const [packet] = received(type, [bytes.slice(0, 1_000), bytes.slice(1_000, 40_000), bytes.slice(40_000)]);
      assert.deepEqual(packet, body);
      const parts = encodePacket(type, packet);
      assert.equal(parts.length, 1, `packet ${type}`);
      assert.equal(parts[0].buffer, packet.buffer, `packet ${type}: no copy`);
      assert.deepEqual(parts[0], bytes);
      // Sent with another header length, it gets a header of its own.
      if (type === 4) continue;
      const other = encodePacket(4, packet);
      assert.equal(other.length, 2);
      assert.equal(other[1], packet);
    }
  });

  test("a small packet joined from several chunks is copied at its exact size", () => {
    const body = bytesOf(3_000, 2);
    const bytes = frame(4, body);
    const [packet] = received(4, [bytes.slice(0, 100), bytes.slice(100)]);
    assert.deepEqual(packet, body);
    assert.equal(packet.byteOffset, 0);
    assert.equal(packet.buffer.byteLength, 3_000);
  });

  test("a packet whose chunks lie back to back in one buffer comes out as a view on it, and goes out with its header", () => {
    const body = bytesOf(70_000, 3);
    const bytes = frame(4, body);
    // Consecutive reads into one read buffer; one split right after the header.
    for (const cuts of [[1_000, 40_000], [4], [4, 30_000, 69_999]]) {
      const bounds = [0, ...cuts, bytes.length];
      const chunks = bounds.slice(1).map((end, i) => bytes.subarray(bounds[i], end));
      const [packet] = received(4, chunks);
      assert.equal(packet.buffer, bytes.buffer, `cuts ${cuts}: no copy`);
      assert.deepEqual(packet, body);
      const parts = encodePacket(4, packet);
      assert.equal(parts.length, 1, `cuts ${cuts}`);
      assert.equal(parts[0].buffer, bytes.buffer);
      assert.deepEqual(parts[0], bytes);
    }
  });

  test("chunks of one buffer with a gap between them are copied into a packet of their own", () => {
    const body = bytesOf(40_000, 5);
    const framed = frame(4, body);
    // The same bytes, with 10 unrelated bytes between the two reads.
    const buffer = new Uint8Array(framed.length + 10);
    buffer.set(framed.subarray(0, 20_000), 0);
    buffer.fill(0xee, 20_000, 20_010);
    buffer.set(framed.subarray(20_000), 20_010);
    const [packet] = received(4, [buffer.subarray(0, 20_000), buffer.subarray(20_010)]);
    assert.notEqual(packet.buffer, buffer.buffer);
    assert.deepEqual(packet, body);
    assert.deepEqual(buffer.subarray(20_000, 20_010), new Uint8Array(10).fill(0xee));
    assert.deepEqual(concat(encodePacket(4, packet)), framed);
  });

  test("a received packet sent with another header length gets a header of its own", () => {
    const body = bytesOf(20_000, 4);
    const [packet] = received(4, [frame(4, body)]);
    const parts = encodePacket(2, packet);
    assert.equal(parts.length, 2);
    assert.deepEqual([...parts[0]], [20_000 >>> 8, 20_000 & 0xff]);
    assert.equal(parts[1], packet);
  });

  test("a body whose header arrived in an earlier chunk, and any buffer of the caller's, gets a header of its own", () => {
    const body = bytesOf(20_000, 6);
    const bytes = frame(4, body);
    const [split] = received(4, [bytes.slice(0, 4), bytes.slice(4)]);
    assert.equal(encodePacket(4, split).length, 2);
    // The caller's bytes in front look like the header: still not used.
    const own = bytes.slice().subarray(4);
    const parts = encodePacket(4, own);
    assert.equal(parts.length, 2);
    assert.equal(parts[1], own);
    assert.deepEqual(concat(parts), bytes);
  });

  test("line appends exactly one \\n and nothing else", () => {
    assert.deepEqual([...frame("line", "hi")], [104, 105, 10]);
    assert.deepEqual([...frame("line", "")], [10]);
    assert.deepEqual([...frame("line", "a\r")], [97, 13, 10]);
    const big = bodyFor("line", 70_000);
    const framed = frame("line", big);
    assert.equal(framed.length, big.length + 1);
    assert.deepEqual(framed.subarray(0, big.length), big);
    assert.equal(framed[big.length], 10);
  });

  test("line sends a large body itself, followed by the newline", () => {
    const big = bodyFor("line", 70_000);
    const parts = encodePacket("line", big);
    assert.equal(parts.length, 2);
    assert.equal(parts[0], big);
    assert.deepEqual([...parts[1]], [10]);
  });

  test("accepts the largest body each header can carry", () => {
    assert.equal(frame(1, new Uint8Array(255)).length, 256);
    assert.equal(frame(2, new Uint8Array(65_535)).length, 65_537);
  });

  test("rejects a body too long for its header with packet_too_large", () => {
    throwsCode(() => encodePacket(1, new Uint8Array(256)), "packet_too_large", /256 bytes with packet type 1: at most 255/);
    throwsCode(() => encodePacket(2, new Uint8Array(65_536)), "packet_too_large", /65536 bytes with packet type 2: at most 65535/);
    throwsCode(() => encodePacket(1, "é".repeat(128)), "packet_too_large", /256 bytes/);
  });

  test("does not modify the body", () => {
    const body = bytesOf(50);
    const before = body.slice();
    for (const type of [0, 1, 2, 4, "line"] as const) encodePacket(type, body);
    assert.deepEqual(body, before);
  });
});

describe("validation", () => {
  test("validatePacketType returns each valid type", () => {
    for (const type of [0, 1, 2, 4, "line"]) assert.equal(validatePacketType(type), type);
  });

  test("validatePacketType rejects anything else with invalid_argument", () => {
    for (const bad of [3, 8, -1, 1.5, NaN, "1", "raw", "LINE", "", null, undefined, {}, [4]]) {
      throwsCode(() => validatePacketType(bad), "invalid_argument", /^Invalid packet type/);
    }
    throwsCode(() => validatePacketType("raw"), "invalid_argument", /"raw"/);
  });

  test("validatePacketSize returns integers of 0 or more", () => {
    for (const size of [0, 1, 4096, Number.MAX_SAFE_INTEGER]) assert.equal(validatePacketSize(size), size);
  });

  test("validatePacketSize rejects anything else with invalid_argument", () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53, "10", null, undefined, {}]) {
      throwsCode(() => validatePacketSize(bad), "invalid_argument", /^Invalid packet size/);
    }
  });

  // Values JSON.stringify cannot serialise (a bigint, a cyclic object) must
  // still be refused with invalid_argument, not a TypeError from the message.
  test("validatePacketType rejects a bigint or a cyclic object with invalid_argument", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const bad of [4n, cyclic]) throwsCode(() => validatePacketType(bad), "invalid_argument");
  });

  test("validatePacketSize rejects a bigint or a cyclic object with invalid_argument", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const bad of [4096n, cyclic]) throwsCode(() => validatePacketSize(bad), "invalid_argument");
  });
});
