/**
 * A line-based chat: every line a client sends goes to every other client.
 * `/who` lists who is here, `/status` shows the server's status, `/quit`
 * leaves. Runs unchanged on Node, Deno and Bun:
 *
 *     npm start                      # Node
 *     deno run -A examples/chat.ts   # Deno
 *     bun examples/chat.ts           # Bun
 *
 * then, in other terminals: `nc 127.0.0.1 9923`. Set PORT and HOST to listen
 * elsewhere (HOST=0.0.0.0 to let other machines in). Set TLS_CERT and TLS_KEY
 * to the files of a PEM certificate (chain) and its key to serve over TLS;
 * then chat with `openssl s_client -connect 127.0.0.1:9923 -quiet`.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import process from "node:process";
import { type Session, serverChildren, serverStatus, type SocketServer, startServer, type TlsOptions } from "../mod.ts";

const decoder = new TextDecoder();

function who(session: Session): string {
  const { hostname, port } = session.remoteAddress;
  return `${hostname}:${port}`;
}

/**
 * Starts the chat server. Its name is the default one, so on port 9923 it is
 * registered as `picoSocketServer_9923`.
 *
 * @param port The port (0 for any free one).
 * @param hostname The address to listen on.
 * @param log Where status lines go.
 * @param tls A certificate and key to serve over TLS.
 * @returns The running server.
 */
export async function startChat(
  port = 9923,
  hostname = "127.0.0.1",
  log: (line: string) => void = console.log,
  tls?: TlsOptions,
): Promise<SocketServer> {
  // Sends to the others without waiting on them: a client that stops reading
  // misses lines while its previous one is still queued, instead of slowing
  // everybody down or growing the server's memory.
  const sending = new WeakSet<Session>();
  function deliver(to: Session, line: string): void {
    if (sending.has(to)) return;
    sending.add(to);
    to.send(line).catch(() => {}).finally(() => sending.delete(to));
  }

  const server: SocketServer = await startServer({
    port,
    hostname,
    tls,
    max: 100,
    packet: "line",
    packetSize: 4096,
    session: { idleTimeoutMs: 60 * 60 * 1000 },
    handler: async (session) => {
      const me = who(session);
      const everyone = () => serverChildren(server);
      const broadcast = async (line: string) => {
        for (const other of await everyone()) if (other !== session) deliver(other, line);
      };
      const { num, max } = server.status();
      log(`+ ${me} joined (${num}/${max})`);
      await session.send(`welcome ${me}: ${num} here; /who, /status, /quit`);
      await broadcast(`* ${me} joined`);
      try {
        for await (const packet of session) {
          const line = decoder.decode(packet);
          if (line === "/quit") break;
          if (line === "/who") {
            for (const other of await everyone()) {
              await session.send(`${who(other)}${other === session ? " (you)" : ""}`);
            }
          } else if (line === "/status") {
            const status = await serverStatus(server);
            await session.send(
              `${status.name}: ${status.num}/${status.max} sessions, port ${status.port}, ` +
                `${status.accepted} accepted, ${status.refused} refused`,
            );
          } else if (line !== "") {
            await broadcast(`${me}: ${line}`);
          }
        }
      } finally {
        await broadcast(`* ${me} left`);
        // This session still counts until the handler returns.
        log(`- ${me} left (${server.status().num - 1}/${server.status().max})`);
      }
    },
  });
  return server;
}

if (import.meta.main) {
  const port = Number(process.env.PORT ?? 9923);
  const hostname = process.env.HOST ?? "127.0.0.1";
  const { TLS_CERT, TLS_KEY } = process.env;
  if ((TLS_CERT === undefined) !== (TLS_KEY === undefined)) {
    console.error("chat: set both TLS_CERT and TLS_KEY (PEM files) to serve over TLS, or neither");
    process.exit(2);
  }
  const tls = TLS_CERT !== undefined && TLS_KEY !== undefined
    ? { cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY) }
    : undefined;
  const server = await startChat(port, hostname, console.log, tls);
  const client = tls
    ? `openssl s_client -connect ${hostname}:${server.port} -quiet`
    : `nc ${hostname} ${server.port}`;
  console.log(`chat: ${server.name} on ${hostname}:${server.port}${tls ? " (TLS)" : ""} — try: ${client} (Ctrl-C stops)`);
  process.once("SIGINT", async () => {
    console.log("\nchat: stopping");
    await server.stop();
    console.log("chat: stopped");
    process.exit(0);
  });
}
