// The demo chat, on the runtime's default transport (picked by mod.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { serverStatus } from "../mod.ts";
import { startChat } from "../examples/chat.ts";
import { Client, TEST_TLS, until } from "./support/client.ts";

test("the chat relays lines to the others and answers /who and /status", { timeout: 20_000 }, async () => {
  const log: string[] = [];
  const server = await startChat(0, "127.0.0.1", (line) => log.push(line));
  try {
    assert.equal(server.name, `picoSocketServer_${server.port}`);
    const alice = await Client.connect(server.port);
    await until(() => alice.text().includes("welcome"), "alice's welcome");
    const bob = await Client.connect(server.port);
    await until(() => bob.text().includes("welcome") && alice.text().includes("joined"), "bob's arrival");
    await alice.write("hello bob\r\n");
    await until(() => bob.text().includes(": hello bob\n"), "the line to reach bob");
    assert.ok(!alice.text().includes("hello bob"), "a line is not echoed to its sender");
    await bob.write("/who\n");
    await until(() => bob.text().includes("(you)"), "the /who answer");
    assert.ok(bob.text().includes(`127.0.0.1:${alice.socket.localPort}\n`));
    assert.ok(bob.text().includes(`127.0.0.1:${bob.socket.localPort} (you)\n`));
    await bob.write("/status\n");
    await until(() => bob.text().includes("sessions"), "the /status answer");
    assert.ok(bob.text().includes(`${server.name}: 2/100 sessions, port ${server.port}`));
    await bob.write("/quit\n");
    await bob.whenClosed();
    await until(() => alice.text().includes("left"), "alice to hear bob left");
    alice.end();
    await alice.whenClosed();
    await until(() => server.status().num === 0, "everyone to leave");
    assert.equal(log.filter((line) => line.startsWith("+")).length, 2);
    assert.equal(log.filter((line) => line.startsWith("-")).length, 2);
    assert.equal((await serverStatus(server.port)).num, 0);
  } finally {
    await server.stop();
  }
});

test("the chat serves over TLS when given a certificate and key", { timeout: 20_000 }, async () => {
  const server = await startChat(0, "127.0.0.1", () => {}, TEST_TLS);
  try {
    const alice = await Client.connect({ port: server.port, tls: true });
    await until(() => alice.text().includes("welcome"), "alice's welcome over TLS");
    await alice.write("/status\n");
    await until(() => alice.text().includes("sessions"), "the /status answer");
    alice.end();
    await alice.whenClosed();
  } finally {
    await server.stop();
  }
});
