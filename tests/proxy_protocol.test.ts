// The PROXY protocol parser (src/proxy_protocol.ts) and the address ranges
// (src/address_match.ts): every valid header at every split point,
// truncations, garbage, limits; no sockets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32c, type ProxyHeader, ProxyHeaderParser } from "../src/proxy_protocol.ts";
import { addressBytes, clientKey, inRange, parseRange } from "../src/address_match.ts";
import { SocketServerError } from "../src/errors.ts";
import { concat } from "./support/bytes.ts";
import { proxyHeaderV2, SIGNATURE } from "./support/proxy_header.ts";

const encoder = new TextEncoder();
const PAYLOAD = encoder.encode("GET / HTTP/1.0\r\n\r\n");

const v2 = proxyHeaderV2;

const port = (n: number) => [n >> 8, n & 0xff];
const V4_ADDRESSES = [192, 168, 0, 1, 10, 0, 0, 2, ...port(56324), ...port(443)];
const V6_ADDRESSES = [
  0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
  ...port(1234), ...port(8443),
];
function unixAddresses(source: string, destination: string): number[] {
  const block = new Uint8Array(216);
  block.set(encoder.encode(source), 0);
  block.set(encoder.encode(destination), 108);
  return [...block];
}

const VALID: Array<{ name: string; bytes: Uint8Array; header: ProxyHeader }> = [
  {
    name: "v1 TCP4",
    bytes: encoder.encode("PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n"),
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: "192.168.0.1", port: 56324 },
      destination: { hostname: "10.0.0.2", port: 443 },
    },
  },
  {
    name: "v1 TCP6",
    bytes: encoder.encode("PROXY TCP6 2001:DB8::1 ::ffff:10.0.0.2 1234 8443\r\n"),
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: "2001:db8::1", port: 1234 },
      destination: { hostname: "::ffff:10.0.0.2", port: 8443 },
    },
  },
  { name: "v1 UNKNOWN", bytes: encoder.encode("PROXY UNKNOWN\r\n"), header: { version: 1, command: "local" } },
  {
    name: "v1 UNKNOWN with addresses (ignored)",
    bytes: encoder.encode("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
    header: { version: 1, command: "local" },
  },
  {
    name: "v1 of the longest length",
    bytes: encoder.encode("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", port: 65535 },
      destination: { hostname: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", port: 65535 },
    },
  },
  {
    name: "v2 PROXY TCP4",
    bytes: v2(1, 0x11, V4_ADDRESSES),
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "192.168.0.1", port: 56324 },
      destination: { hostname: "10.0.0.2", port: 443 },
    },
  },
  {
    name: "v2 PROXY TCP6",
    bytes: v2(1, 0x21, V6_ADDRESSES),
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "2001:db8::1", port: 1234 },
      destination: { hostname: "::1", port: 8443 },
    },
  },
  {
    name: "v2 PROXY UNIX stream",
    bytes: v2(1, 0x31, unixAddresses("/run/client.sock", "/run/app.sock")),
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "/run/client.sock", port: 0 },
      destination: { hostname: "/run/app.sock", port: 0 },
    },
  },
  { name: "v2 LOCAL (a health check)", bytes: v2(0, 0x00, []), header: { version: 2, command: "local" } },
  { name: "v2 LOCAL with an address block (skipped)", bytes: v2(0, 0x11, V4_ADDRESSES), header: { version: 2, command: "local" } },
  { name: "v2 PROXY UNSPEC", bytes: v2(1, 0x00, [1, 2, 3]), header: { version: 2, command: "local" } },
  {
    name: "v2 TCP4 with ALPN, authority, unique ID, NOOP and a CRC32c",
    bytes: v2(1, 0x11, V4_ADDRESSES, [
      [0x01, [...encoder.encode("h2")]],
      [0x02, [...encoder.encode("example.com")]],
      [0x04, [0, 0, 0]],
      [0x05, [1, 2, 3, 4, 5, 6, 7, 8]],
    ], true),
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "192.168.0.1", port: 56324 },
      destination: { hostname: "10.0.0.2", port: 443 },
      tlvs: new Map([
        [0x01, encoder.encode("h2")],
        [0x02, encoder.encode("example.com")],
        [0x05, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])],
      ]),
    },
  },
];

/** Feeds `bytes` cut at the given points; returns what the parser made of it. */
function feed(bytes: Uint8Array, cuts: number[]): ReturnType<ProxyHeaderParser["push"]> {
  const parser = new ProxyHeaderParser();
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    const result = parser.push(bytes.subarray(from, cut));
    from = cut;
    if (result !== undefined) {
      return { header: result.header, rest: concat([result.rest, bytes.subarray(from)]) };
    }
  }
  return undefined;
}

function rejects(bytes: Uint8Array, message: RegExp, cuts: number[] = []): void {
  assert.throws(() => feed(bytes, cuts), (error: unknown) => {
    assert.ok(error instanceof SocketServerError, String(error));
    assert.equal(error.code, "proxy_error");
    assert.match(error.message, message);
    return true;
  });
}

for (const { name, bytes, header } of VALID) {
  test(`proxy header: ${name}, split at every point, then the payload`, () => {
    const whole = concat([bytes, PAYLOAD]);
    for (let cut = 0; cut <= whole.length; cut++) {
      const result = feed(whole, [cut]);
      assert.ok(result, `complete at cut ${cut}`);
      assert.deepEqual(result.header, header);
      assert.deepEqual(result.rest, PAYLOAD, `the payload after the header, cut at ${cut}`);
    }
    // Byte by byte, and in threes.
    assert.deepEqual(feed(whole, Array.from({ length: whole.length }, (_, i) => i))?.header, header);
    assert.deepEqual(feed(whole, Array.from({ length: Math.floor(whole.length / 3) }, (_, i) => 3 * i))?.rest, PAYLOAD);
  });

  test(`proxy header: ${name}, every truncation needs more bytes, none is taken as complete`, () => {
    for (let length = 0; length < bytes.length; length++) {
      assert.equal(new ProxyHeaderParser().push(bytes.subarray(0, length)), undefined, `${length} bytes`);
    }
  });
}

test("proxy header: garbage, wrong signatures and a non-PROXY client are refused at their first wrong byte", () => {
  rejects(encoder.encode("GET / HTTP/1.1\r\n"), /no PROXY signature/);
  rejects(encoder.encode("PROXZ TCP4"), /no PROXY signature/);
  rejects(encoder.encode("proxy TCP4"), /no PROXY signature/);
  rejects(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]), /no PROXY signature/); // a TLS ClientHello
  rejects(new Uint8Array([...SIGNATURE.slice(0, 11), 0x0b]), /no PROXY signature/);
  rejects(new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x01]), /no PROXY signature/);
  // Refused at once, not after more bytes: the parser throws on the first chunk.
  assert.throws(() => new ProxyHeaderParser().push(new Uint8Array([0x00])), /no PROXY signature/);
});

test("proxy header: malformed version 1 lines", () => {
  const bad = [
    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 ::1 ::1 1 2\r\n",
    "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    "PROXY TCP6 1::2::3 ::1 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
  ];
  for (const line of bad) {
    if (line.endsWith("2\n")) {
      // A bare LF is not the end of the line: the parser waits for CRLF.
      assert.equal(new ProxyHeaderParser().push(encoder.encode(line)), undefined);
      continue;
    }
    rejects(encoder.encode(line), /Invalid PROXY protocol header/);
  }
  rejects(new Uint8Array([...encoder.encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2"), 0xff, 0x0d, 0x0a]), /non-ASCII/);
});

test("proxy header: a version 1 line longer than 107 bytes is refused at its 107th byte, never buffered further", () => {
  const long = encoder.encode("PROXY UNKNOWN " + "x".repeat(200) + "\r\n");
  const parser = new ProxyHeaderParser();
  assert.equal(parser.push(long.subarray(0, 106)), undefined);
  assert.throws(() => parser.push(long.subarray(106, 107)), /longer than 107 bytes/);
  // 107 bytes with CRLF as the last two is the longest allowed.
  const longest = encoder.encode("PROXY UNKNOWN " + "x".repeat(91) + "\r\n");
  assert.equal(longest.length, 107);
  assert.ok(new ProxyHeaderParser().push(longest));
  rejects(encoder.encode("PROXY UNKNOWN " + "x".repeat(92) + "\r\n"), /longer than 107 bytes/);
});

test("proxy header: malformed version 2 headers", () => {
  const withFixed = (byte12: number, byte13: number, length: number, body: number[] = []) =>
    new Uint8Array([...SIGNATURE, byte12, byte13, length >> 8, length & 0xff, ...body]);
  rejects(withFixed(0x11, 0x11, 0), /version 1 after a version 2 signature/);
  rejects(withFixed(0x31, 0x11, 0), /version 3/);
  rejects(withFixed(0x22, 0x11, 0), /unknown command 2/);
  rejects(withFixed(0x21, 0x41, 0), /unknown address family 4/);
  rejects(withFixed(0x21, 0x12, 12, V4_ADDRESSES), /datagram/);
  rejects(withFixed(0x21, 0x13, 12, V4_ADDRESSES), /unknown transport 3/);
  // A length too short for the family's addresses (an overflow if trusted).
  rejects(withFixed(0x21, 0x11, 11, V4_ADDRESSES.slice(0, 11)), /shorter than its 12 bytes of addresses/);
  rejects(withFixed(0x21, 0x21, 12, V4_ADDRESSES), /shorter than its 36 bytes/);
  rejects(withFixed(0x21, 0x31, 0), /shorter than its 216 bytes/);
  // TLVs cut short or running past the end.
  rejects(v2(1, 0x11, [...V4_ADDRESSES, 0x01, 0x00]), /TLV cut short/);
  rejects(v2(1, 0x11, [...V4_ADDRESSES, 0x01, 0x00, 0x05, 0x61]), /past the header's end/);
  // A CRC32c that does not match, or of the wrong size.
  const good = v2(1, 0x11, V4_ADDRESSES, [[0x05, [1]]], true);
  const corrupt = good.slice();
  corrupt[good.length - 1] ^= 1;
  rejects(corrupt, /CRC32c does not match/);
  const flipped = good.slice();
  flipped[17] ^= 1; // an address byte
  rejects(flipped, /CRC32c does not match/);
  rejects(v2(1, 0x11, V4_ADDRESSES, [[0x03, [0, 0]]]), /CRC32c TLV that is not 4 bytes/);
});

test("proxy header: a version 2 length of 65535 is read whole (the protocol's most), no more", () => {
  const tlv = new Array(65535 - 12 - 3).fill(0x61);
  const header = v2(1, 0x11, V4_ADDRESSES, [[0xe0, tlv]]);
  assert.equal(header.length, 16 + 65535);
  const parser = new ProxyHeaderParser();
  assert.equal(parser.push(header.subarray(0, header.length - 1)), undefined);
  const done = parser.push(concat([header.subarray(header.length - 1), PAYLOAD]));
  assert.equal(done?.header.tlvs?.get(0xe0)?.length, tlv.length);
  assert.deepEqual(done?.rest, PAYLOAD);
});

test("crc32c: the check value of the Castagnoli polynomial", () => {
  assert.equal(crc32c(encoder.encode("123456789")), 0xe3069283);
});

test("address ranges: IPv4, IPv6, single addresses, IPv4-mapped peers; bad ranges refused", () => {
  const has = (range: string, address: string) => inRange(addressBytes(address)!, parseRange(range));
  assert.equal(has("10.0.0.0/8", "10.200.3.4"), true);
  assert.equal(has("10.0.0.0/8", "11.0.0.1"), false);
  assert.equal(has("10.0.0.0/8", "::ffff:10.1.2.3"), true, "an IPv4-mapped peer is its IPv4 address");
  assert.equal(has("127.0.0.1", "127.0.0.1"), true);
  assert.equal(has("127.0.0.1", "127.0.0.2"), false);
  assert.equal(has("192.168.1.128/25", "192.168.1.200"), true);
  assert.equal(has("192.168.1.128/25", "192.168.1.100"), false);
  assert.equal(has("0.0.0.0/0", "8.8.8.8"), true);
  assert.equal(has("0.0.0.0/0", "2001:db8::1"), false);
  assert.equal(has("fd00::/8", "fd12:3456::1"), true);
  assert.equal(has("fd00::/8", "fe80::1"), false);
  assert.equal(has("::1", "::1"), true);
  assert.equal(has("::/0", "2001:db8::1"), true);
  assert.equal(has("2001:db8::/33", "2001:db8:7fff::1"), true);
  assert.equal(has("2001:db8::/33", "2001:db8:8000::1"), false);
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/", "10.0.0.0/-1", "fe80::1%eth0", 10, ""]) {
    assert.throws(() => parseRange(bad), (error: unknown) => error instanceof SocketServerError && error.code === "invalid_argument");
  }
  assert.equal(clientKey("::ffff:127.0.0.2"), "127.0.0.2");
  assert.equal(clientKey("127.0.0.2"), "127.0.0.2");
  assert.equal(clientKey("2001:DB8::1"), "2001:db8::1");
});
