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
 * buffer (or the start of `into`, when given), behind `room` bytes left free.
 */
export function copyChunks(
  chunks: Uint8Array[],
  count: number,
  length: number,
  room = 0,
  into?: Uint8Array,
): Uint8Array {
  const joined = into === undefined ? new Uint8Array(room + length) : into.subarray(0, room + length);
  let offset = room;
  for (let i = 0; i < count; i++) {
    joined.set(chunks[i], offset);
    offset += chunks[i].byteLength;
  }
  return joined;
}

/**
 * Cuts small buffers one after another out of larger shared ones (slabs):
 * one allocation per slab instead of one per piece, for the many short-lived
 * pieces of a busy server. A slab is never reused: it is freed once no piece
 * of it is referenced any more. Pieces larger than `pieceMax` get a buffer of
 * their own. Consecutive pieces lie back to back in one slab until it is full.
 */
export class Slabs {
  #slabSize: number;
  #pieceMax: number;
  #slab = new Uint8Array(0);
  #used = 0;

  constructor(slabSize: number, pieceMax: number) {
    this.#slabSize = slabSize;
    this.#pieceMax = pieceMax;
  }

  /** A zero-filled buffer of `size` bytes that no other piece shares. */
  cut(size: number): Uint8Array {
    if (size > this.#pieceMax) return new Uint8Array(size);
    if (this.#used + size > this.#slab.length) {
      this.#slab = new Uint8Array(this.#slabSize);
      this.#used = 0;
    }
    const piece = this.#slab.subarray(this.#used, this.#used + size);
    this.#used += size;
    return piece;
  }
}
