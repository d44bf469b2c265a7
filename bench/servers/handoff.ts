// The hand-over between a floor server's read side and its handler loop:
// `arrived` from the reads (null at the end), `next` awaited by the loop, as
// a session's recv() is. Shared by floor_node.ts and floor_deno.ts.
export function handoff(): {
  arrived: (chunk: Uint8Array | null) => void;
  next: () => Promise<Uint8Array | null>;
} {
  const waiting: Array<Uint8Array | null> = [];
  let wake: ((chunk: Uint8Array | null) => void) | undefined;
  return {
    arrived(chunk) {
      if (wake === undefined) {
        waiting.push(chunk);
        return;
      }
      const resolve = wake;
      wake = undefined;
      resolve(chunk);
    },
    next: () =>
      waiting.length > 0 ? Promise.resolve(waiting.shift()!) : new Promise((resolve) => (wake = resolve)),
  };
}
