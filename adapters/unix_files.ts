/**
 * A Unix socket file's state, on `node:fs` and `node:net` (which Node, Bun
 * and Deno ship): what src/unix_path.ts asks before it replaces a stale
 * socket file.
 *
 * @module
 */

import { lstatSync } from "node:fs";
import { connect } from "node:net";

/** Whether a process accepts connections on the Unix socket at `path`. */
export function acceptsOnPath(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

/** Whether `path` is a socket file. */
export function isSocketFile(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}
