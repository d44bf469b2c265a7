// The fault suite over TLS and over Unix domain sockets: servers on every
// adapter and runtime (in child processes), attacked by clients on Node's
// node:net and node:tls. Run from Node only: Deno's node:tls client, paused,
// keeps its process busy (it spins while its peer streams), which would
// measure the client, not the server under test.
import process from "node:process";
import { fileURLToPath } from "node:url";
import { faults } from "./faults.ts";
import type { RuntimeName } from "./support/fault_child.ts";

const bin = (runtime: RuntimeName) => fileURLToPath(new URL(`../node_modules/.bin/${runtime}`, import.meta.url));

// The framing, limit, drain and hostile-peer cases.
const CASES =
  /send loop|reset while they wait|resets mid-packet|half a packet|flood of 10x|never read hold|packet 4: seeded|stop\(\) with a full/;

const servers: Array<{ runtime: RuntimeName; transport: "node" | "deno" | "bun" }> = [
  { runtime: "node", transport: "node" },
  { runtime: "deno", transport: "deno" },
  { runtime: "deno", transport: "node" },
  { runtime: "bun", transport: "bun" },
  { runtime: "bun", transport: "node" },
];

const only = process.env.PICO_SECURE_FAULTS; // e.g. "deno" to run one runtime's
for (const { runtime, transport } of servers) {
  if (only !== undefined && only !== runtime) continue;
  const host = { runtime, executable: bin(runtime) };
  const name = `${transport} adapter on ${runtime}`;
  faults(`${name} over TLS`, { transport, tls: true }, CASES, host);
  faults(`${name} on a Unix socket`, { transport, unix: true }, CASES, host);
  // Deno's adapter serves TLS on a Unix socket through node:tls: the Node adapter's path.
  if (transport !== "node" || runtime === "node") {
    faults(`${name} over TLS on a Unix socket`, { transport, tls: true, unix: true }, CASES, host);
  }
}
