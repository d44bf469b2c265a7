// The conformance suite against the Node adapter (`node:net`), which runs on
// Node and also under Deno and Bun.
import { nodeTransport } from "../adapters/node.ts";
import { conformance } from "./conformance.ts";

conformance("node adapter", nodeTransport);
