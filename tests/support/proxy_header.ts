// PROXY protocol version 2 headers written out by hand, for the parser's
// tests and the clients that play a load balancer (tests/proxy.ts).
import { crc32c } from "../../src/proxy_protocol.ts";

/** The 12 bytes that begin every v2 header. */
export const SIGNATURE: number[] = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/**
 * A v2 header: command (0 LOCAL, 1 PROXY), the family/transport byte, the
 * address block, TLVs, and a CRC32c TLV last when `crc`.
 */
export function proxyHeaderV2(
  command: number,
  familyTransport: number,
  addresses: number[],
  tlvs: [number, ArrayLike<number>][] = [],
  crc = false,
): Uint8Array {
  const tlvBytes: number[] = [];
  for (const [type, value] of tlvs) tlvBytes.push(type, value.length >> 8, value.length & 0xff, ...Array.from(value));
  const crcAt = crc ? 16 + addresses.length + tlvBytes.length + 3 : -1;
  if (crc) tlvBytes.push(0x03, 0, 4, 0, 0, 0, 0);
  const length = addresses.length + tlvBytes.length;
  const header = new Uint8Array([...SIGNATURE, 0x20 | command, familyTransport, length >> 8, length & 0xff, ...addresses, ...tlvBytes]);
  if (crc) new DataView(header.buffer).setUint32(crcAt, crc32c(header));
  return header;
}
