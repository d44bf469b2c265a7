// Builds the npm package into npm/ from the same sources (`npm run build`):
// ES modules and .d.ts declarations compiled by the TypeScript compiler from
// npm (strict, isolatedDeclarations, erasableSyntaxOnly), a package.json
// generated from deno.json, README and LICENSE. Fails when deno.json's
// exports and the generated package.json's exports disagree.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "npm");
const denoJson = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as {
  name: string;
  version: string;
  license: string;
  exports: Record<string, string>;
};

const NPM_NAME = "pico-socket-server";

function fail(message: string): never {
  console.error(`build_npm: ${message}`);
  process.exit(1);
}

// 1. Compile. The entry points are deno.json's exports; tsc follows imports.
rmSync(out, { recursive: true, force: true });
// Also the worker threads' entry, which is started by its URL, not imported.
const entries = [...Object.values(denoJson.exports), "adapters/worker_thread.ts"].map((path) => join(root, path));
try {
  execFileSync(join(root, "node_modules/.bin/tsc"), [
    "--outDir", out,
    "--rootDir", root,
    "--declaration",
    "--isolatedDeclarations",
    "--erasableSyntaxOnly",
    "--verbatimModuleSyntax",
    "--rewriteRelativeImportExtensions",
    "--strict",
    "--target", "es2022",
    "--module", "nodenext",
    "--moduleResolution", "nodenext",
    "--lib", "es2022,dom",
    "--types", "node",
    "--skipLibCheck",
    "--removeComments", "false",
    ...entries,
  ], { cwd: root, stdio: "inherit" });
} catch {
  fail("the TypeScript compiler reported errors");
}

// 2. Declarations: tsc rewrites `.ts` specifiers in JavaScript only
// (rewriteRelativeImportExtensions); point the .d.ts files at the .js files
// too. And the JSDoc examples, written for JSR, import
// "@pico/socket-server[/…]": npm users' editors show "pico-socket-server[/…]".
function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}
const relativeTs = /(from\s+|import\s*\(\s*)(["'])(\.{1,2}\/[^"']+)\.ts\2/g;
const stillTs = /(?:from\s+|import\s*\(\s*)["']\.{1,2}\/[^"']+\.ts["']/;
const jsrName = new RegExp(`(["'])${denoJson.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?=["'/])`, "g");
for (const file of walk(out)) {
  if (!file.endsWith(".js") && !file.endsWith(".d.ts")) continue;
  const text = readFileSync(file, "utf8");
  let fixed = text.replace(jsrName, `$1${NPM_NAME}`);
  if (file.endsWith(".d.ts")) {
    fixed = fixed.replace(relativeTs, (_, prefix, quote, path) => `${prefix}${quote}${path}.js${quote}`);
  }
  if (fixed !== text) writeFileSync(file, fixed);
  if (stillTs.test(fixed)) fail(`${relative(root, file)} still imports .ts files`);
}

// 3. package.json, from deno.json.
const toJs = (path: string) => path.replace(/\.ts$/, ".js");
const toDts = (path: string) => path.replace(/\.ts$/, ".d.ts");
// `types` and `import` for TypeScript and ES module imports; `default` for
// `require()` (Node 20.19+ and 22.12+ load ES modules from it and match the
// "require" and "default" conditions, not "import").
const exportsMap: Record<string, { types: string; import: string; default: string }> = {};
for (const [subpath, path] of Object.entries(denoJson.exports)) {
  exportsMap[subpath] = { types: toDts(path), import: toJs(path), default: toJs(path) };
}
const packageJson = {
  name: NPM_NAME,
  version: denoJson.version,
  description:
    "Keep track of a number of TCP sessions for one server — start, stop, cap, list — with one handler that Deno, Bun and Node serve unchanged. Erlang UBF's proc_socket_server for JavaScript.",
  license: denoJson.license,
  type: "module",
  main: toJs(denoJson.exports["."]),
  types: toDts(denoJson.exports["."]),
  exports: exportsMap,
  // mod.js has one side effect: it registers the running runtime's transport
  // as the default. With `false`, a bundler could skip mod.js when a name is
  // re-exported from deeper and lose that default.
  sideEffects: ["./mod.js"],
  files: ["mod.js", "mod.d.ts", "src/", "adapters/", "README.md", "LICENSE"],
  engines: { node: ">=20" },
  keywords: ["tcp", "socket", "server", "sessions", "erlang", "ubf", "deno", "bun", "node"],
};
writeFileSync(join(out, "package.json"), JSON.stringify(packageJson, null, 2) + "\n");
copyFileSync(join(root, "README.md"), join(out, "README.md"));
copyFileSync(join(root, "LICENSE"), join(out, "LICENSE"));

// 4. The exports must agree with deno.json, and every file they name exist.
const written = JSON.parse(readFileSync(join(out, "package.json"), "utf8")) as typeof packageJson;
const denoKeys = Object.keys(denoJson.exports).sort().join(",");
const npmKeys = Object.keys(written.exports).sort().join(",");
if (denoKeys !== npmKeys) fail(`exports disagree: deno.json has ${denoKeys}, package.json has ${npmKeys}`);
for (const [subpath, target] of Object.entries(written.exports)) {
  const source = denoJson.exports[subpath];
  if (target.import !== toJs(source) || target.default !== toJs(source) || target.types !== toDts(source)) {
    fail(`export ${subpath} points elsewhere than deno.json's ${source}`);
  }
  for (const file of [target.types, target.import]) {
    if (!existsSync(join(out, file))) fail(`export ${subpath} names ${file}, which the build did not produce`);
  }
}
console.log(`build_npm: ${NPM_NAME}@${denoJson.version} built in npm/ (exports ${npmKeys})`);
