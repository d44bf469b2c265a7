// The conformance suite against the npm build (npm/, made by
// `npm run build`), on Node: what npm users import is what is tested. Set
// PICO_NPM_DIR to test a build elsewhere (scripts/test.ts does, to run a
// compiled copy of this suite on the machine's own Node).
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type Api, conformance } from "./conformance.ts";
import type { Transport } from "../src/transport.ts";

const dir = process.env.PICO_NPM_DIR ?? fileURLToPath(new URL("../npm/", import.meta.url));
if (!existsSync(join(dir, "mod.js"))) throw new Error(`No npm build in ${dir}: run \`npm run build\` first`);

const api = (await import(pathToFileURL(join(dir, "mod.js")).href)) as Api;
const { nodeTransport } = (await import(pathToFileURL(join(dir, "adapters/node.js")).href)) as {
  nodeTransport: Transport;
};
conformance(`npm build on Node ${process.versions.node}`, nodeTransport, api);

// Workers from the npm build: the compiled thread entry, on this Node; a
// Node that cannot share a port between threads (before 22.12) gets a
// clear error instead.
const [major, minor] = process.versions.node.split(".").map(Number);
const sharesPorts = major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
test(`npm build on Node ${process.versions.node}: workers ${sharesPorts ? "share a port" : "are refused clearly"}`, {
  timeout: 30_000,
}, async () => {
  const start = api.startServer({
    hostname: "127.0.0.1",
    port: 0,
    max: 4,
    workers: 2,
    packet: "line",
    // A module each thread can import without a file (this Node may not run TypeScript).
    handler: "data:text/javascript,export default async (session) => { " +
      "for await (const packet of session) await session.send(`worker ${session.worker}`); }",
  });
  if (!sharesPorts) {
    await assert.rejects(start, (error: { code?: string; message?: string }) => {
      assert.equal(error.code, "ENOTSUP");
      assert.match(error.message!, /Node 22\.12 or later/);
      return true;
    });
    return;
  }
  const server = await start;
  try {
    const seen = new Set<string>();
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      seen.add(await new Promise<string>((resolve, reject) => {
        const socket = connect({ port: server.port, host: "127.0.0.1" }, () => socket.write("who\n"));
        socket.setEncoding("utf8");
        socket.once("data", (answer: string) => {
          socket.destroy();
          resolve(answer);
        });
        socket.once("error", reject);
      }));
    }
    assert.deepEqual(seen, new Set(["worker 1\n", "worker 2\n"]));
  } finally {
    await server.stop();
  }
});
