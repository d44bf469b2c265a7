// The machine's own Node, as `which -a node` finds it outside node_modules
// (the PATH, then /usr/local/bin and /usr/bin), other than the Node LTS from
// devDependencies: scripts/test.ts and scripts/npm_smoke.ts test the npm
// build on it too. `undefined` when there is none. PICO_SYSTEM_NODE
// overrides the search: a path to a node, or `none` to skip that Node.
import { execFileSync } from "node:child_process";
import { accessSync, constants, realpathSync } from "node:fs";
import { delimiter, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function realExecutable(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

const insideNodeModules = (path: string) => path.split(/[\\/]/).includes("node_modules");

/** The machine's own Node: its path and version (e.g. `v20.20.2`). */
export interface SystemNode {
  path: string;
  version: string;
}

/** Finds the first `node` outside node_modules that is not the devDependency's. */
export function findSystemNode(): SystemNode | undefined {
  const override = process.env.PICO_SYSTEM_NODE;
  if (override === "none") return undefined;
  const ours = new Set(
    [process.execPath, join(root, "node_modules/.bin/node")].map(realExecutable).filter((path) => path !== undefined),
  );
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/bin", "/usr/bin"];
  const candidates = override ? [override] : dirs.filter((dir) => dir !== "").map((dir) => join(dir, "node"));
  for (const path of candidates) {
    const real = realExecutable(path);
    if (real === undefined) {
      if (override) throw new Error(`PICO_SYSTEM_NODE=${override} is not an executable`);
      continue;
    }
    if (!override && (insideNodeModules(path) || insideNodeModules(real) || ours.has(real))) continue;
    try {
      const version = execFileSync(path, ["--version"], { encoding: "utf8", timeout: 10_000 }).trim();
      return { path, version };
    } catch {
      continue;
    }
  }
  return undefined;
}

/**
 * Whether this Node version loads ES modules from `require()` without a
 * flag: Node 20.19+, 22.12+ and 23+ (21 needs a flag).
 */
export function requiresEsm(version: string): boolean {
  const [major, minor] = version.replace(/^v/, "").split(".").map(Number);
  if (major === 20) return minor >= 19;
  if (major === 22) return minor >= 12;
  return major >= 23;
}
