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
const CASES = process.env.PICO_CASES ? new RegExp(process.env.PICO_CASES) :
  /stall their TLS|send loop|reset while they wait|resets mid-packet|half a packet|flood of 10x|never read hold|packet 4: seeded|stop\(\) with a full/;

// Each runtime's own adapter in every mode, and the Node adapter's TLS on
// Bun (on Deno, the Deno adapter's TLS is the Node adapter's already). The
// Node adapter's Unix sockets on Deno and Bun are in tests/secure.ts.
const servers: Array<{ runtime: RuntimeName; transport: "node" | "deno" | "bun"; modes: Array<"tls" | "unix" | "tls+unix"> }> = [
  { runtime: "node", transport: "node", modes: ["tls", "unix", "tls+unix"] },
  { runtime: "deno", transport: "deno", modes: ["tls", "unix", "tls+unix"] },
  { runtime: "bun", transport: "bun", modes: ["tls", "unix", "tls+unix"] },
  { runtime: "bun", transport: "node", modes: ["tls"] },
];

// The same and the throwing handlers against servers on two worker threads
// (each runtime's own sockets and threads).
const WORKER_CASES = process.env.PICO_CASES ? CASES : new RegExp(`${CASES.source}|handlers that throw every kind`);

// And behind a load balancer: each client begins with a PROXY header.
const PROXY_CASES = process.env.PICO_CASES ? CASES : new RegExp(`${CASES.source}|stall their PROXY`);

const only = process.env.PICO_SECURE_FAULTS; // e.g. "deno" to run one runtime's
for (const { runtime, transport, modes } of servers) {
  if (only !== undefined && only !== runtime) continue;
  const host = { runtime, executable: bin(runtime) };
  const name = `${transport} adapter on ${runtime}`;
  for (const mode of modes) {
    const over = mode === "tls" ? "over TLS" : mode === "unix" ? "on a Unix socket" : "over TLS on a Unix socket";
    faults(`${name} ${over}`, { transport, tls: mode !== "unix", unix: mode !== "tls" }, CASES, host);
  }
  if (transport === runtime) faults(`${runtime} with 2 workers`, { transport, workers: 2 }, WORKER_CASES, host);
  if (transport === runtime) faults(`${runtime} adapter behind PROXY`, { transport, proxy: true }, PROXY_CASES, host);
}
