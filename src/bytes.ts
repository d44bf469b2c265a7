/**
 * Byte-chunk helpers shared by the framing (joining a packet's parts) and
 * the adapters' write queues (merging and joining queued chunks).
 *
 * @module
 */

/**
 * How many of the first chunks continue one another in the same buffer
 * (each starting where the one before ends): at least 1 when there is any.
 */
export function contiguousCount(chunks: Uint8Array[]): number {
  if (chunks.length === 0) return 0;
  const first = chunks[0];
  let end = first.byteOffset + first.byteLength;
  let count = 1;
  while (count < chunks.length) {
    const next = chunks[count];
    if (next.buffer !== first.buffer || next.byteOffset !== end) break;
    end += next.byteLength;
    count++;
  }
  return count;
}

/**
 * Copies the first `count` chunks, `length` bytes in all, into one new
 * buffer, behind `room` bytes left free.
 */
export function copyChunks(chunks: Uint8Array[], count: number, length: number, room = 0): Uint8Array {
  const joined = new Uint8Array(room + length);
  let offset = room;
  for (let i = 0; i < count; i++) {
    joined.set(chunks[i], offset);
    offset += chunks[i].byteLength;
  }
  return joined;
}
