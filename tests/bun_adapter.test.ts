// The conformance suite against the Bun adapter (`Bun.listen`); it runs
// under `bun test` only.
import { describe } from "node:test";
import { bunTransport } from "../adapters/bun.ts";
import { conformance } from "./conformance.ts";
import { faults } from "./faults.ts";
import { secure } from "./secure.ts";
import { group } from "./group.ts";
import { proxy } from "./proxy.ts";

if ("Bun" in globalThis) {
  conformance("bun adapter", bunTransport);
  faults("bun adapter", "bun");
  secure("bun adapter", bunTransport);
  group("bun adapter", bunTransport);
  proxy("bun adapter", bunTransport);
} else {
  describe.skip("bun adapter (needs Bun)", () => {});
}
