// Packaging smoke test: `npm pack` the build in npm/, install the tarball
// into a fresh temporary project (offline: the package has no
// dependencies), and there run an echo server plus client written against
// `import ... from "pico-socket-server"` on Node (the LTS from
// devDependencies and the machine's own), Bun and Deno; from CommonJS on
// Node, a `require()` of it (where Node loads ES modules from `require`:
// 20.19+, 22.12+, 23+) and an `await import()` of it (every Node); and a type
// check of a TypeScript consumer against the installed types (tsc,
// moduleResolution nodenext), both with the DOM library only (as Deno and
// Bun projects) and with @types/node (as Node projects). Exits non-zero on
// any failure; prints `N passed, N failed`.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { findSystemNode, requiresEsm } from "./system_node.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name: string) => join(root, "node_modules/.bin", name);
if (!existsSync(join(root, "npm/package.json"))) {
  console.error("npm_smoke: npm/ is missing: run `npm run build` first");
  process.exit(1);
}

const project = mkdtempSync(join(tmpdir(), "pico-npm-smoke-"));
let passed = 0;
let failed = 0;

function check(label: string, command: string, args: string[], expect: string): void {
  try {
    const output = execFileSync(command, args, { cwd: project, encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
    if (!output.includes(expect)) throw new Error(`expected "${expect}" in:\n${output}`);
    console.log(`ok - ${label}`);
    passed++;
  } catch (error) {
    const details = error as { stdout?: string; stderr?: string; message: string };
    console.log(`not ok - ${label}\n${details.stdout ?? ""}${details.stderr ?? ""}${details.message}`);
    failed++;
  }
}

try {
  // Pack and install, as a user would.
  const packed = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", project, join(root, "npm")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }),
  ) as Array<{ filename: string; size: number; unpackedSize: number; entryCount: number }>;
  const tarball = join(project, packed[0].filename);
  console.log(
    `packed ${packed[0].filename}: ${statSync(tarball).size} bytes, ${packed[0].entryCount} files, ${packed[0].unpackedSize} bytes unpacked`,
  );
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "smoke", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], {
    cwd: project,
    stdio: ["ignore", "ignore", "inherit"],
  });

  // An echo server and a client, ES modules.
  writeFileSync(
    join(project, "echo.mjs"),
    `import { connect } from "node:net";
import { startServer, serverStatus } from "pico-socket-server";
const server = await startServer({
  hostname: "127.0.0.1", port: 0, max: 4, packet: 4,
  handler: async (session) => { for await (const packet of session) await session.send(packet); },
});
const reply = await new Promise((resolve, reject) => {
  const socket = connect(server.port, "127.0.0.1", () => socket.write(new Uint8Array([0, 0, 0, 5, 104, 101, 108, 108, 111])));
  let bytes = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    bytes = Buffer.concat([bytes, chunk]);
    if (bytes.length >= 9) { socket.destroy(); resolve(bytes.subarray(4).toString()); }
  });
  socket.on("error", reject);
});
const { num, max } = await serverStatus(server.name);
await server.stop();
console.log(\`echo \${reply} from \${server.name} (max \${max}, num \${num})\`);
`,
  );
  // CommonJS: require() of the ES module package (Node 20.19+, 22.12+, 23+),
  // and import() from CommonJS, which every Node can do.
  writeFileSync(
    join(project, "require.cjs"),
    `const { startServer, SocketServerError } = require("pico-socket-server");
const { nodeTransport } = require("pico-socket-server/node");
startServer({ hostname: "127.0.0.1", port: 0, max: 1, transport: nodeTransport, handler: () => {} })
  .then(async (server) => { await server.stop(); console.log("require ok", typeof SocketServerError); });
`,
  );
  writeFileSync(
    join(project, "import.cjs"),
    `(async () => {
  const { startServer, SocketServerError } = await import("pico-socket-server");
  const server = await startServer({ hostname: "127.0.0.1", port: 0, max: 1, handler: () => {} });
  await server.stop();
  console.log("import() ok", typeof SocketServerError);
})();
`,
  );
  // A TypeScript consumer, type-checked against the installed declarations.
  writeFileSync(
    join(project, "consumer.ts"),
    `import { startServer, serverStatus, type Session, type ServerStatus, SocketServerError } from "pico-socket-server";
import { nodeTransport } from "pico-socket-server/node";
import { bunTransport } from "pico-socket-server/bun";
import { denoTransport } from "pico-socket-server/deno";
import type { Connection, Transport } from "pico-socket-server/transport";
const transports: Transport[] = [nodeTransport, bunTransport, denoTransport];
const close = (connection: Connection): void => connection.close();
async function handler(session: Session): Promise<void> {
  const packet: Uint8Array | null = await session.recv({ timeoutMs: 1000 });
  if (packet !== null) await session.send(packet);
}
const server = await startServer({ port: 0, max: 10, packet: "line", handler, transport: nodeTransport });
const status: ServerStatus = await serverStatus(server);
const code: string = new SocketServerError("x", "retrylater").code;
console.log(status.num, code, transports.map((transport) => transport.name).join(), typeof close);
await server.stop({ timeoutMs: 100 });
`,
  );
  // Two consumer projects: the DOM library and no Node types (as in Deno or
  // Bun projects), and es2022 with @types/node (as in Node projects; linked
  // from this repository's node_modules, nothing is downloaded).
  const tsconfig = (lib: string[], types: string[]) =>
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: "es2022",
        module: "nodenext",
        moduleResolution: "nodenext",
        lib,
        types,
      },
      files: ["consumer.ts"],
    });
  writeFileSync(join(project, "tsconfig.dom.json"), tsconfig(["es2022", "dom"], []));
  writeFileSync(join(project, "tsconfig.node.json"), tsconfig(["es2022"], ["node"]));
  mkdirSync(join(project, "node_modules/@types"), { recursive: true });
  symlinkSync(join(root, "node_modules/@types/node"), join(project, "node_modules/@types/node"), "dir");

  const node = { path: bin("node"), version: execFileSync(bin("node"), ["--version"], { encoding: "utf8" }).trim() };
  const systemNode = findSystemNode();
  if (systemNode === undefined) {
    console.log("# no Node outside node_modules on this machine (or PICO_SYSTEM_NODE=none): skipped there");
  }
  const nodes = systemNode === undefined ? [node] : [node, systemNode];
  for (const { path, version } of nodes) {
    const which = path === node.path ? "Node" : "the machine's Node";
    check(`import on ${which} ${version}`, path, ["echo.mjs"], "echo hello");
    if (requiresEsm(version)) check(`require() on ${which} ${version}`, path, ["require.cjs"], "require ok function");
    else console.log(`# require() of ES modules needs Node 20.19+, 22.12+ or 23+: not on ${version}`);
    check(`import() from CommonJS on ${which} ${version}`, path, ["import.cjs"], "import() ok function");
  }
  check("import on Bun", bin("bun"), ["echo.mjs"], "echo hello");
  check("import on Deno", bin("deno"), ["run", "-A", "echo.mjs"], "echo hello");
  check("a TypeScript consumer type-checks (nodenext, DOM library, no Node types)", bin("tsc"), ["-p", "tsconfig.dom.json"], "");
  check("a TypeScript consumer type-checks (nodenext, @types/node)", bin("tsc"), ["-p", "tsconfig.node.json"], "");
  const installed = JSON.parse(readFileSync(join(project, "node_modules/pico-socket-server/package.json"), "utf8"));
  console.log(`installed pico-socket-server@${installed.version} with exports ${Object.keys(installed.exports).join(", ")}`);
} finally {
  rmSync(project, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
