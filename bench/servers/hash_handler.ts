// The handler module of the scaling benchmark (bench/scaling.ts): real CPU
// work per packet: SHA-256 over the packet, ROUNDS times over (each round
// hashing the packet and the last digest), the last digest written over the
// packet's first 32 bytes, which is sent back (the load generator counts
// whole echoes).
import { createHash } from "node:crypto";
import process from "node:process";
import type { Session } from "../../mod.ts";

const ROUNDS = Number(process.env.BENCH_HASH_ROUNDS ?? 16);

export default async function hash(session: Session): Promise<void> {
  for await (const packet of session) {
    let digest: Uint8Array = new Uint8Array(32);
    for (let round = 0; round < ROUNDS; round++) digest = createHash("sha256").update(packet).update(digest).digest();
    packet.set(digest.subarray(0, Math.min(32, packet.length)));
    await session.send(packet);
  }
}
