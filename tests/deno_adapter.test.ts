// The conformance suite against the Deno adapter (`Deno.listen`); it runs
// under `deno test` only.
import { describe } from "node:test";
import { denoTransport } from "../adapters/deno.ts";
import { conformance } from "./conformance.ts";

if ("Deno" in globalThis) {
  conformance("deno adapter", denoTransport);
} else {
  describe.skip("deno adapter (needs Deno)", () => {});
}
