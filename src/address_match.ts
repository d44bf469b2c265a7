/**
 * Client addresses as a server compares them: CIDR ranges of trusted
 * proxies (IPv4 and IPv6), and the key a client is counted under for
 * `maxPerAddress` (an IPv4-mapped IPv6 address counts as its IPv4 one);
 * IP addresses in text and bytes.
 *
 * @module
 */

import { invalidArgument } from "./errors.ts";

/** A CIDR range, as 16 bytes (IPv4 as IPv4-mapped IPv6) and a prefix length. */
export interface AddressRange {
  bytes: Uint8Array;
  bits: number;
}

/** A dotted-quad IPv4 address. */
export const IPV4: RegExp = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Whether `text` is an IPv6 address (no zone; an IPv4 tail allowed). */
export function isIPv6(text: string): boolean {
  return ipv6Bytes(text) !== undefined;
}

/** The 16 bytes of an IPv6 address in text, or undefined. */
export function ipv6Bytes(text: string): Uint8Array | undefined {
  if (text.length > 45 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  // An IPv4 tail is allowed only at the very end.
  const groups = (part: string, last: boolean): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (last && i === pieces.length - 1 && piece.includes(".")) {
        if (!IPV4.test(piece)) return undefined;
        const [a, b, c, d] = piece.split(".").map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1], true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

/** An IPv6 address's 16 bytes in canonical text (RFC 5952: lower case, the longest zero run as ::). */
export function formatIPv6(bytes: Uint8Array): string {
  // An IPv4-mapped address as the runtimes write it (RFC 5952 §5).
  if (bytes.subarray(0, 10).every((byte) => byte === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${bytes.subarray(12).join(".")}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}


/** An address's 16 bytes (IPv4 mapped into IPv6), or undefined for what is not an IP address. */
export function addressBytes(hostname: string): Uint8Array | undefined {
  if (IPV4.test(hostname)) {
    const bytes = new Uint8Array(16);
    bytes[10] = bytes[11] = 0xff;
    hostname.split(".").forEach((part, i) => (bytes[12 + i] = Number(part)));
    return bytes;
  }
  const zone = hostname.indexOf("%");
  return ipv6Bytes(zone < 0 ? hostname : hostname.slice(0, zone));
}

/** Parses `"10.0.0.0/8"`, `"fd00::/8"`, or a single address; throws `invalid_argument`. */
export function parseRange(text: unknown): AddressRange {
  const bad = () => invalidArgument("trusted address", text, 'a CIDR range or an address, e.g. "10.0.0.0/8" or "::1"');
  if (typeof text !== "string") throw bad();
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const bytes = addressBytes(address);
  if (bytes === undefined || address.includes("%")) throw bad();
  const v4 = IPV4.test(address);
  const most = v4 ? 32 : 128;
  let bits = most;
  if (slash >= 0) {
    const prefix = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > most) throw bad();
    bits = Number(prefix);
  }
  return { bytes, bits: v4 ? 96 + bits : bits };
}

/** Whether `hostname` lies in `range`. */
export function inRange(bytes: Uint8Array, range: AddressRange): boolean {
  const whole = range.bits >> 3;
  for (let i = 0; i < whole; i++) if (bytes[i] !== range.bytes[i]) return false;
  const rest = range.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (bytes[whole] & mask) === (range.bytes[whole] & mask);
}

/** The key a client is counted under: its address, an IPv4-mapped IPv6 one as IPv4. */
export function clientKey(hostname: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(hostname);
  return mapped !== null && IPV4.test(mapped[1]) ? mapped[1] : hostname.toLowerCase();
}
