/**
 * The entry of a group's worker thread (adapters/threads.ts): the runtime's
 * default sockets, then one member server of the group.
 *
 * @module
 */

import "../mod.ts";
import { parentPort, workerData } from "node:worker_threads";
import { type MemberInit, runMember } from "../src/group_member.ts";

const port = parentPort!;
void runMember({
  post: (message) => port.postMessage(message),
  onMessage: (receive) => port.on("message", receive),
}, workerData as MemberInit);
