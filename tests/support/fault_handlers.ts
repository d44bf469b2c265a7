// The handlers of the fault server (fault_server.ts), by name; as a module,
// its default export is the one PICO_FAULT_HANDLER names, for the fault
// server's worker threads.
import process from "node:process";
import type { Session, SessionHandler } from "../../mod.ts";

const CHUNK = new Uint8Array(64 * 1024).fill(0x61);

/** Values a handler can throw; the "throw" handler picks one by the line it receives. */
const thrown: Record<string, () => unknown> = {
  undefined: () => undefined,
  null: () => null,
  string: () => "a string",
  number: () => 42,
  bigint: () => 42n,
  symbol: () => Symbol("thrown"),
  error: () => new Error("an error"),
  typeerror: () => new TypeError("a type error"),
  object: () => ({ what: "a plain object" }),
  cyclic: () => {
    const value: Record<string, unknown> = {};
    value.self = value;
    return value;
  },
  "throwing-getters": () =>
    new Proxy({}, {
      get() {
        throw new Error("no property of mine may be read");
      },
      getPrototypeOf() {
        throw new Error("no prototype either");
      },
      ownKeys() {
        throw new Error("no keys either");
      },
      getOwnPropertyDescriptor() {
        throw new Error("no descriptors either");
      },
      has() {
        throw new Error("nothing is in me");
      },
    }),
  "null-prototype": () => Object.create(null),
  function: () => function thrown() {},
  "rejected-thenable": () => ({ then: (_: unknown, reject: (error: unknown) => void) => reject(new Error("then")) }),
};

export const handlers = {
  echo: (async (session) => {
    for await (const packet of session) await session.send(packet);
  }) as SessionHandler,
  /** Sends 64 KiB packets for as long as send() lets it; lets its error propagate. */
  stream: (async (session) => {
    for (;;) await session.send(CHUNK);
  }) as SessionHandler,
  /** Echoes until it receives a line naming a kind of value, then throws it. */
  throw: (async (session) => {
    for await (const packet of session) {
      const kind = new TextDecoder().decode(packet);
      const make = thrown[kind];
      if (make === undefined) {
        await session.send(packet);
        continue;
      }
      if (kind === "rejected-thenable") return await (make() as Promise<void>);
      throw make();
    }
  }) as SessionHandler,
  /** Throws synchronously, before any await. */
  throwAtOnce: ((_session: Session) => {
    throw new Error("thrown before the first await");
  }) as SessionHandler,
} as const;

/** The name of a fault server's handler. */
export type FaultHandlerName = keyof typeof handlers;

const picked: SessionHandler = handlers[(process.env.PICO_FAULT_HANDLER ?? "echo") as FaultHandlerName];
export default picked;
