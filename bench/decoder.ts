// Microbenchmark of the packet decoder alone (no sockets): a stream of
// 4-byte length-prefixed packets, fed in 64 KiB chunks (separate buffers) as
// a socket would deliver them. Prints one JSON line: MB/s and packets/s for small (64-byte)
// and large (1 MiB) packets.
//
//   <runtime> bench/decoder.ts
import { createDecoder, encodePacket } from "../src/framing.ts";

const CHUNK = 64 * 1024;

function stream(packetSize: number, totalBytes: number): Uint8Array[] {
  const body = new Uint8Array(packetSize).fill(7);
  const framed = encodePacket(4, body);
  const one = new Uint8Array(framed.reduce((n, f) => n + f.length, 0));
  let offset = 0;
  for (const part of framed) {
    one.set(part, offset);
    offset += part.length;
  }
  const count = Math.max(1, Math.floor(totalBytes / one.length));
  const all = new Uint8Array(count * one.length);
  for (let i = 0; i < count; i++) all.set(one, i * one.length);
  const chunks: Uint8Array[] = [];
  // Each chunk a buffer of its own, as most sockets deliver them (chunks back
  // to back in one buffer would let the decoder skip joining large packets).
  for (let at = 0; at < all.length; at += CHUNK) chunks.push(all.slice(at, at + CHUNK));
  return chunks;
}

function measure(packetSize: number, streamBytes: number, passes: number, rounds: number) {
  const chunks = stream(packetSize, streamBytes);
  const bytes = chunks.reduce((n, c) => n + c.length, 0) * passes;
  let best = Infinity;
  let packets = 0;
  for (let round = 0; round < rounds; round++) {
    packets = 0;
    let checksum = 0;
    const decoder = createDecoder(4, 0, {
      packet(packet) {
        packets++;
        checksum += packet.length;
      },
    });
    const started = performance.now();
    // The stream holds whole packets, so it can be fed again and again.
    for (let pass = 0; pass < passes; pass++) for (const chunk of chunks) decoder.push(chunk);
    decoder.finish();
    const seconds = (performance.now() - started) / 1000;
    if (checksum !== packets * packetSize) throw new Error("decoder lost bytes");
    best = Math.min(best, seconds);
  }
  return { mbPerSecond: bytes / best / 1e6, packetsPerSecond: packets / best };
}

// A few MiB of stream fed many times over: received bytes are fresh in the
// cache when a server decodes them, and so they are here (a stream of
// hundreds of MiB would measure this machine's memory instead).
// Warm up, then measure (best of several rounds: the decoder's own speed).
measure(64, 4 << 20, 1, 3);
measure(1 << 20, 4 << 20, 4, 3);
const small = measure(64, 4 << 20, 16, 5);
const large = measure(1 << 20, 4 << 20, 64, 5);
console.log(JSON.stringify({ small, large }));
