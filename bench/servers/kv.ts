// examples/kv.ts for the RESP benchmark (bench/kv.ts): on a free port, printed.
import { startKv } from "../../examples/kv.ts";
import { announce } from "./listening.ts";

const server = await startKv(0);
announce(server.port);
