/**
 * Servers that share one port (`reusePort`) and one exact limit (a
 * SharedSlots): what each worker of `workers: n` runs, here as two servers
 * in one thread, through an adapter on the running runtime. Run by the
 * `*_adapter.test.ts` files.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ServerOptions, type SocketServer, startServer } from "../mod.ts";
import { memberOptions } from "../src/server.ts";
import { SharedSlots } from "../src/shared_slots.ts";
import type { Transport } from "../src/transport.ts";
import { Client, until } from "./support/client.ts";

const TIMEOUT = { timeout: 30_000 };

/** Registers the group tests against `transport`. */
export function group(label: string, transport: Transport): void {
  let serial = 0;
  describe(`${label}: servers sharing a port and one limit`, () => {
    async function startPair(
      max: number,
      options: Omit<ServerOptions, "max" | "port" | "name">,
    ): Promise<{ servers: SocketServer[]; slots: SharedSlots; stop: () => Promise<void> }> {
      const slots = new SharedSlots(max);
      const name = `group-${label}-${++serial}`;
      const first = await startServer(
        memberOptions({ transport, hostname: "127.0.0.1", port: 0, max, name: `${name}-a`, ...options }, slots),
      );
      const second = await startServer(
        memberOptions({ transport, hostname: "127.0.0.1", port: first.port, max, name: `${name}-b`, ...options }, slots),
      ).catch(async (error) => {
        await first.stop();
        throw error;
      });
      const servers = [first, second];
      return { servers, slots, stop: async () => void await Promise.all(servers.map((server) => server.stop())) };
    }

    test("a flood of 10x max: never more than max at once across both, every one served", TIMEOUT, async () => {
      let live = 0;
      let peak = 0;
      const startedOn = new Map<SocketServer, number>();
      let servers: SocketServer[] = [];
      const pair = await startPair(3, {
        packet: "line",
        handler: async (session) => {
          await session.send("hi");
          await session.recv();
        },
        onSessionStart: (session) => {
          peak = Math.max(peak, ++live);
          const server = servers.find((s) => s.children().includes(session));
          if (server) startedOn.set(server, (startedOn.get(server) ?? 0) + 1);
        },
        onSessionEnd: () => void live--,
      });
      servers = pair.servers;
      try {
        const clients = await Client.connectMany(pair.servers[0].port, 30);
        await Promise.all(clients.map(async (client) => {
          await client.received(3, 20_000);
          await client.write("bye\n");
          await client.whenClosed(20_000);
        }));
        assert.ok(peak <= 3, `peak ${peak} sessions for max 3`);
        assert.equal(peak, 3);
        const served = pair.servers.reduce((sum, server) => sum + server.status().accepted, 0);
        assert.equal(served, 30, "every connection was served");
        assert.equal(pair.slots.used, 0, "every slot came back");
        assert.ok(
          pair.servers.every((server) => server.status().accepted > 0),
          `the kernel spread the connections: ${pair.servers.map((s) => s.status().accepted).join(" + ")}`,
        );
      } finally {
        await pair.stop();
      }
    });

    test("setMax on one raises the limit of both; status shows the group's max", TIMEOUT, async () => {
      const pair = await startPair(1, { handler: async (session) => void await session.recv() });
      try {
        const clients = await Client.connectMany(pair.servers[0].port, 6);
        await until(() => pair.slots.used === 1, "one session");
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(pair.slots.used, 1, "the limit holds while connections wait");
        pair.servers[1].setMax(4);
        await until(() => pair.slots.used === 4, "four sessions across both");
        assert.deepEqual(pair.servers.map((server) => server.status().max), [4, 4]);
        for (const client of clients) client.destroy();
        await until(() => pair.slots.used === 2 || pair.slots.used === 0, "the sessions to end", 10_000);
        await until(() => pair.slots.used === 0, "every slot back", 10_000);
      } finally {
        await pair.stop();
      }
    });
  });
}
