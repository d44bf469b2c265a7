/**
 * The transport a server uses when its options name none: this copy of the
 * module's own (module state, so another copy or version of the library
 * loaded in the same process cannot set it), loaded on first use, so that
 * importing the package loads only the running runtime's adapter, and only
 * when a server needs it.
 *
 * @module
 */

import { SocketServerError } from "./errors.ts";
import type { Transport } from "./transport.ts";

let loadTransport: (() => Promise<Transport>) | undefined;
let loaded: Promise<Transport> | undefined;

/**
 * Sets how the default transport is loaded (`mod.ts`: the running runtime's
 * adapter); returns the loader it replaces.
 */
export function setDefaultTransport(
  load: (() => Promise<Transport>) | undefined,
): (() => Promise<Transport>) | undefined {
  const previous = loadTransport;
  loadTransport = load;
  loaded = undefined;
  return previous;
}

/** The default transport, loaded once; rejects when none was set. */
export function defaultTransport(): Promise<Transport> {
  if (loadTransport === undefined) {
    return Promise.reject(
      new SocketServerError("No transport for this runtime: pass the transport option", "invalid_argument"),
    );
  }
  return loaded ??= loadTransport();
}
