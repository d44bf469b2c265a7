// The conformance and fault suites against the Node adapter (`node:net`),
// which runs on Node and also under Deno and Bun; then what only Node's own
// sockets do.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type AddressInfo, Server as NetServer } from "node:net";
import { execFileSync } from "node:child_process";
import process from "node:process";
import { nodeTransport } from "../adapters/node.ts";
import { startServer } from "../mod.ts";
import { conformance } from "./conformance.ts";
import { faults } from "./faults.ts";
import { secure } from "./secure.ts";
import { group } from "./group.ts";
import { proxy } from "./proxy.ts";
import { Client } from "./support/client.ts";

conformance("node adapter", nodeTransport);
faults("node adapter", "node");
secure("node adapter", nodeTransport);
group("node adapter", nodeTransport);
proxy("node adapter", nodeTransport);

const onNode = process.versions.deno === undefined && process.versions.bun === undefined;

test("node adapter: an accept Node fails is reported with its code, and the server goes on", {
  timeout: 20_000,
  skip: onNode ? false : "Node's own sockets only (the adapter accepts through their handle there)",
}, async () => {
  const reported: unknown[] = [];
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    max: 1,
    transport: nodeTransport,
    handler: async (session) => {
      for await (const packet of session) await session.send(packet);
    },
    onError: (error) => reported.push(error),
  });
  try {
    // The listening socket's handle, told by libuv that accept() failed with
    // EMFILE (-24), as when the process is out of file descriptors.
    const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
    const listening = handles.find((handle): handle is NetServer =>
      handle instanceof NetServer && (handle.address() as AddressInfo | null)?.port === server.port
    ) as (NetServer & { _handle: { onconnection(status: number, client: unknown): void } }) | undefined;
    assert.ok(listening, "the server's listening socket");
    listening._handle.onconnection(-24, undefined);
    const client = await Client.connect(server.port);
    await client.write("served");
    assert.equal(new TextDecoder().decode(await client.received(6)), "served");
    assert.equal(reported.length, 1);
    assert.equal((reported[0] as { code?: string }).code, "EMFILE");
    client.destroy();
  } finally {
    await server.stop();
  }
});

test("node adapter: reads go into the adapter's own buffers on Node, unless PICO_NODE_PLAIN_READS=1", {
  timeout: 20_000,
  skip: onNode ? false : "Node's own sockets only",
}, async () => {
  const server = await startServer({ hostname: "127.0.0.1", port: 0, max: 1, transport: nodeTransport, handler: () => {} });
  try {
    const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
    const listening = handles.find((handle): handle is NetServer =>
      handle instanceof NetServer && (handle.address() as AddressInfo | null)?.port === server.port
    ) as (NetServer & { _handle: { onconnection: { name: string } } }) | undefined;
    assert.ok(listening, "the server's listening socket");
    const plain = process.env.PICO_NODE_PLAIN_READS === "1";
    assert.equal(listening._handle.onconnection.name, plain ? "onconnection" : "onHandleConnection");
  } finally {
    await server.stop();
  }
});

test("importing the package loads no socket API until a server needs one", {
  timeout: 20_000,
  skip: onNode ? false : "Node's process.moduleLoadList only",
}, () => {
  // A fresh process: this one has loaded node:net already.
  const script = `
    const loaded = () => process.moduleLoadList.includes("NativeModule net");
    const api = await import(${JSON.stringify(new URL("../mod.ts", import.meta.url).href)});
    const afterImport = loaded();
    const server = await api.startServer({ hostname: "127.0.0.1", port: 0, max: 1, handler: () => {} });
    const afterStart = loaded();
    await server.stop();
    console.log(JSON.stringify({ afterImport, afterStart }));
  `;
  const output = execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.deepEqual(JSON.parse(output), { afterImport: false, afterStart: true });
});
