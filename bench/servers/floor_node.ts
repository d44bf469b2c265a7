// The floor of the handler model on Node: the thinnest echo server in which,
// as in a pico-socket-server handler, a loop awaits each packet and then
// awaits its send (here a settled promise), written straight on node:net with
// nothing else: no sessions, no limits, no framing, no backpressure. No API
// that hands packets to an awaiting handler can cost less per message, so its
// ratio to raw_node.ts bounds what a session can reach.
//
//   npm run bench:ab -- --runtime node --scenario pingpong --kind pico0 --raw --floor
import { createServer } from "node:net";
import { handoff } from "./handoff.ts";

const SENT = Promise.resolve();

const server = createServer((socket) => {
  socket.setNoDelay(true);
  const { arrived, next } = handoff();
  socket.on("data", arrived);
  socket.on("end", () => arrived(null));
  socket.on("error", () => {
    socket.destroy();
    arrived(null);
  });
  (async () => {
    for (let packet = await next(); packet !== null; packet = await next()) {
      socket.write(packet);
      await SENT;
    }
    socket.end();
  })();
});
server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => {
  const address = server.address();
  console.log(`PORT ${typeof address === "object" && address ? address.port : 0}`);
});
