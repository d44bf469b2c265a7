// What the handler model alone costs an idle session: one suspended async
// function awaiting one pending promise (its resolve and reject kept), per
// "session", with no socket at all. Compare with the raw servers' memory per
// idle connection in bench/results.md: a session can cost no less than raw
// plus this. Not part of `npm run bench`; run it by hand:
//
//   node --expose-gc bench/idle_floor.ts
//   deno run --v8-flags=--expose-gc bench/idle_floor.ts
//   bun bench/idle_floor.ts
import process from "node:process";

const COUNT = 100_000;
const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
const v8gc = (globalThis as { gc?: () => void }).gc;
if (bun === undefined && v8gc === undefined) throw new Error("run with --expose-gc (see the top of this file)");
const collect = () => (bun ? bun.gc(true) : (v8gc!(), v8gc!()));
const rss = () => (collect(), process.memoryUsage().rss);

class Waiting {
  resolve: ((value: unknown) => void) | undefined;
  reject: ((error: unknown) => void) | undefined;
  next(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }
}

async function handler(source: Waiting): Promise<void> {
  while ((await source.next()) !== null);
}

const kept: Waiting[] = [];
const before = rss();
for (let i = 0; i < COUNT; i++) {
  const source = new Waiting();
  kept.push(source);
  handler(source).then(() => {}, () => {});
}
await new Promise((resolve) => setTimeout(resolve, 100));
const after = rss();
console.log(JSON.stringify({ sessions: kept.length, rssBytesPerSession: Math.round((after - before) / COUNT) }));
