// Unit tests of the packet framing (src/framing.ts): whole packets out of
// any split or coalescing of the byte stream, limits, truncation, encoding.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { SocketServerError } from "../src/errors.ts";
import {
  createDecoder,
  encodePacket,
  type PacketType,
  validatePacketSize,
  validatePacketType,
} from "../src/framing.ts";
import { concat } from "./support/bytes.ts";

const frame = (type: PacketType, body: Uint8Array | string) => concat(encodePacket(type, body));

function bytesOf(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

/** Lines for "line" must not contain newlines: printable bytes only. */
function bodyFor(type: PacketType, length: number, seed = 0): Uint8Array {
  return type === "line" ? bytesOf(length, seed).map((b) => 65 + (b % 26)) : bytesOf(length, seed);
}

/** Feeds `chunks` to a decoder; returns the packets (copied) and finishes. */
function decodeAll(type: PacketType, packetSize: number, chunks: Uint8Array[]): Uint8Array[] {
  const packets: Uint8Array[] = [];
  const decoder = createDecoder(type, packetSize, (packet) => packets.push(packet.slice()));
  for (const chunk of chunks) decoder.push(chunk);
  decoder.finish();
  return packets;
}

function oneByteChunks(stream: Uint8Array): Uint8Array[] {
  return Array.from(stream, (byte) => new Uint8Array([byte]));
}

function throwsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SocketServerError, `expected SocketServerError, got ${error}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

for (const type of [1, 2, 4, "line"] as const) {
  describe(`packet ${type}`, () => {
    const sizes = type === 1 ? [0, 1, 17, 255] : type === 2 ? [0, 1, 300, 65535] : [0, 1, 300, 70_000];

    test("round trip: encoded packets decode to the same bodies", () => {
      const bodies = sizes.map((size, i) => bodyFor(type, size, i));
      const stream = concat(bodies.map((body) => frame(type, body)));
      assert.deepEqual(decodeAll(type, 0, [stream]), bodies);
    });

    test("yields whole packets from one-byte chunks", () => {
      const bodies = [bodyFor(type, 5), bodyFor(type, 0), bodyFor(type, 40, 3)];
      const stream = concat(bodies.map((body) => frame(type, body)));
      assert.deepEqual(decodeAll(type, 0, oneByteChunks(stream)), bodies);
    });

    test("yields the same two packets at every split point of the stream", () => {
      const bodies = [bodyFor(type, 9, 1), bodyFor(type, 12, 2)];
      const stream = concat(bodies.map((body) => frame(type, body)));
      for (let at = 0; at <= stream.length; at++) {
        assert.deepEqual(decodeAll(type, 0, [stream.subarray(0, at), stream.subarray(at)]), bodies, `split at ${at}`);
      }
    });

    test("yields many packets coalesced in one chunk, in order", () => {
      const bodies = Array.from({ length: 100 }, (_, i) => bodyFor(type, i % 13, i));
      assert.deepEqual(decodeAll(type, 0, [concat(bodies.map((body) => frame(type, body)))]), bodies);
    });

    test("accepts exactly packetSize bytes and rejects one more", () => {
      const limit = 100;
      assert.deepEqual(decodeAll(type, limit, [frame(type, bodyFor(type, limit))]), [bodyFor(type, limit)]);
      const decoder = createDecoder(type, limit, () => {});
      throwsCode(() => decoder.push(frame(type, bodyFor(type, limit + 1))), "packet_too_large", /101 bytes.*100 bytes/);
    });

    test("a truncated packet at end of stream is an error; a clean end is not", () => {
      const whole = frame(type, bodyFor(type, 10));
      for (const cut of [1, whole.length - 1]) {
        const decoder = createDecoder(type, 0, () => {});
        decoder.push(whole.subarray(0, cut));
        throwsCode(() => decoder.finish(), "truncated_packet");
      }
      const clean = createDecoder(type, 0, () => {});
      clean.push(whole);
      clean.finish();
    });
  });
}

describe("length-prefixed packets", () => {
  for (const type of [1, 2, 4] as const) {
    test(`packet ${type} refuses an over-long packet from its header alone`, () => {
      const header = frame(type, new Uint8Array(51)).subarray(0, type);
      const decoder = createDecoder(type, 50, () => assert.fail("no packet expected"));
      throwsCode(() => decoder.push(header), "packet_too_large");
    });
  }

  test("packet 4 reads lengths as unsigned 32-bit numbers", () => {
    const decoder = createDecoder(4, 1000, () => {});
    throwsCode(() => decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff])), "packet_too_large", /4294967295/);
  });

  test("packet 4 without a limit buffers only what arrived of a huge announced packet", () => {
    const packets: Uint8Array[] = [];
    const decoder = createDecoder(4, 0, (packet) => packets.push(packet));
    decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    assert.equal(packets.length, 0);
    throwsCode(() => decoder.finish(), "truncated_packet", /3 of 4294967295 bytes/);
  });

  test("a packet inside one chunk is a view on that chunk, not a copy", () => {
    const chunk = frame(2, bytesOf(10));
    let packet: Uint8Array | undefined;
    createDecoder(2, 0, (p) => (packet = p)).push(chunk);
    assert.equal(packet!.buffer, chunk.buffer);
    assert.equal(packet!.byteOffset, chunk.byteOffset + 2);
  });
});

describe("packet 0", () => {
  test("yields each chunk itself, whatever its size, and ignores packetSize", () => {
    const chunks = [bytesOf(3), bytesOf(70_000), new Uint8Array(0)];
    const seen: Uint8Array[] = [];
    const decoder = createDecoder(0, 10, (packet) => seen.push(packet));
    for (const chunk of chunks) decoder.push(chunk);
    decoder.finish();
    assert.equal(seen.length, 3);
    seen.forEach((packet, i) => assert.equal(packet, chunks[i]));
  });
});

describe('packet "line"', () => {
  const text = (packets: Uint8Array[]) => packets.map((p) => new TextDecoder().decode(p));
  const chunks = (...parts: string[]) => parts.map((part) => new TextEncoder().encode(part));

  test("strips \\n and \\r\\n, keeps a lone \\r, yields empty lines", () => {
    assert.deepEqual(text(decodeAll("line", 0, chunks("a\nb\r\n\n\r\nc\rd\n"))), ["a", "b", "", "", "c\rd"]);
  });

  test("joins a line split between \\r and \\n", () => {
    assert.deepEqual(text(decodeAll("line", 0, chunks("one\r", "\ntwo\n"))), ["one", "two"]);
  });

  test("a \\r\\n-terminated line of exactly packetSize bytes is accepted", () => {
    assert.deepEqual(text(decodeAll("line", 5, chunks("12", "345\r", "\n"))), ["12345"]);
  });

  test("refuses an over-long line before its newline arrives", () => {
    const decoder = createDecoder("line", 5, () => {});
    decoder.push(new TextEncoder().encode("123456"));
    throwsCode(() => decoder.push(new TextEncoder().encode("7")), "packet_too_large");
  });

  test("an unterminated last line is a truncated packet", () => {
    const decoder = createDecoder("line", 0, () => {});
    decoder.push(new TextEncoder().encode("done\nhalf"));
    throwsCode(() => decoder.finish(), "truncated_packet", /4 bytes without a newline/);
  });
});

describe("encodePacket", () => {
  test("writes big-endian headers of 1, 2 and 4 bytes", () => {
    assert.deepEqual([...frame(1, bytesOf(3))].slice(0, 1), [3]);
    assert.deepEqual([...frame(2, bytesOf(258))].slice(0, 2), [1, 2]);
    assert.deepEqual([...frame(4, bytesOf(0x010203))].slice(0, 4), [0, 1, 2, 3]);
  });

  test("sends strings as UTF-8 and appends exactly one newline for lines", () => {
    assert.deepEqual([...frame(1, "é")], [2, 0xc3, 0xa9]);
    assert.deepEqual([...frame("line", "hi")], [104, 105, 10]);
    assert.deepEqual([...frame("line", "")], [10]);
  });

  test("sends large bodies as header plus the body itself, not a copy", () => {
    const body = bytesOf(100_000);
    const parts = encodePacket(4, body);
    assert.equal(parts.length, 2);
    assert.equal(parts[1], body);
    assert.deepEqual([...parts[0]], [0, 1, 0x86, 0xa0]);
  });

  test("refuses bodies that do not fit the header", () => {
    throwsCode(() => encodePacket(1, new Uint8Array(256)), "packet_too_large", /at most 255/);
    throwsCode(() => encodePacket(2, new Uint8Array(65536)), "packet_too_large", /at most 65535/);
  });

  test("packet 0 sends the bytes as they are", () => {
    const body = bytesOf(10);
    assert.equal(encodePacket(0, body)[0], body);
  });
});

describe("validation", () => {
  test("packet types and sizes are checked with invalid_argument", () => {
    for (const type of [0, 1, 2, 4, "line"]) assert.equal(validatePacketType(type), type);
    for (const bad of [3, "raw", null, 8, -1]) throwsCode(() => validatePacketType(bad), "invalid_argument");
    assert.equal(validatePacketSize(0), 0);
    for (const bad of [-1, 1.5, "10", NaN]) throwsCode(() => validatePacketSize(bad), "invalid_argument");
  });
});
