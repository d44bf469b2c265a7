// The conformance suite against the npm build (npm/, made by
// `npm run build`), on Node: what npm users import is what is tested. Set
// PICO_NPM_DIR to test a build elsewhere (scripts/test.ts does, to run a
// compiled copy of this suite on the machine's own Node).
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
