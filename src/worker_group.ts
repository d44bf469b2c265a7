/**
 * A group of worker threads serving one port (`workers: n`), as the main
 * thread runs it: each thread runs a member server (group_member.ts) that
 * listens on the port with `reusePort` and shares one exact limit
 * (SharedSlots). The group starts, stops, suspends and resumes them all,
 * sums their counters, lists their sessions, tells the main thread's event
 * callbacks of every session in an order consistent with the limit, and
 * restarts a thread that dies, with back-off, giving back its slots.
 *
 * @module
 */

import { defaultTransport } from "./default_transport.ts";
import type { SessionEndReason } from "./end_reason.ts";
import { invalidState, safely, SocketServerError } from "./errors.ts";
import {
  fromWire,
  type GroupMessage,
  type MemberInit,
  type MemberMessage,
  type MemberSettings,
  type MemberStatus,
  type WireSession,
} from "./group_member.ts";
import { checkMax, reportError, type ResolvedWorkers } from "./options.ts";
import { defaultServerName, type Named, register, unregister } from "./registry.ts";
import type { ServerState, ServerStatus, StopResult, WorkersOptions } from "./server.ts";
import type { SessionInfo } from "./session.ts";
import { SharedSlots } from "./shared_slots.ts";
import type { SocketAddress, Transport, WorkerThread } from "./transport.ts";

// A thread that dies is started again after a pause that doubles while it
// keeps dying (none the first time), up to the longest; one that ran this
// long before dying starts the count over.
const RESTART_FIRST_MS = 100;
const RESTART_LONGEST_MS = 5000;
const RESTART_STABLE_MS = 5000;
// How long an event waits for one before it in the group's order; only a
// thread ended between numbering an event and posting it leaves a gap.
const GAP_MS = 1000;

/** A session of the group as the main thread sees it. */
class RemoteSession implements SessionInfo {
  readonly id: number;
  readonly worker: number;
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  readonly proxyAddress: SocketAddress | undefined;
  readonly startedAt: number;
  readonly encrypted: boolean;
  readonly alpnProtocol: string | null;
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
  #close: (session: RemoteSession) => void;

  constructor(wire: WireSession, close: (session: RemoteSession) => void) {
    this.id = wire.id;
    this.worker = wire.worker;
    this.remoteAddress = wire.remoteAddress;
    this.localAddress = wire.localAddress;
    this.proxyAddress = wire.proxyAddress;
    this.startedAt = wire.startedAt;
    this.encrypted = wire.encrypted;
    this.alpnProtocol = wire.alpnProtocol;
    this.bytesIn = wire.bytesIn;
    this.bytesOut = wire.bytesOut;
    this.packetsIn = wire.packetsIn;
    this.packetsOut = wire.packetsOut;
    this.#close = close;
  }

  /** Takes the counters of a later report. */
  update(wire: WireSession): void {
    this.bytesIn = wire.bytesIn;
    this.bytesOut = wire.bytesOut;
    this.packetsIn = wire.packetsIn;
    this.packetsOut = wire.packetsOut;
  }

  close(): void {
    this.#close(this);
  }
}

/**
 * Delivers numbered events in their order: each waits for the ones before
 * it, or skips a gap that stays open `GAP_MS`.
 */
class EventOrder {
  #next = 0;
  #waiting = new Map<number, () => void>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  push(seq: number, deliver: () => void): void {
    if (seq < this.#next) {
      deliver(); // after its gap was skipped
      return;
    }
    this.#waiting.set(seq, deliver);
    this.#drain();
  }

  /** Delivers every waiting event, skipping gaps (no more can come). */
  flush(): void {
    while (this.#waiting.size > 0) {
      this.#next = Math.min(...this.#waiting.keys());
      this.#drain();
    }
  }

  #drain(): void {
    for (let deliver = this.#waiting.get(this.#next); deliver; deliver = this.#waiting.get(this.#next)) {
      this.#waiting.delete(this.#next++);
      deliver();
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#waiting.size > 0) {
      const stuckAt = this.#next;
      this.#timer = setTimeout(() => {
        if (this.#next === stuckAt) this.flush();
      }, GAP_MS);
    }
  }
}

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

const NO_STATUS: MemberStatus = {
  handshaking: 0,
  handshakeFailures: 0,
  proxyErrors: 0,
  refused: 0,
  acceptErrors: 0,
  waiting: 0,
};

/** One worker thread's place in the group; its thread changes when it is restarted. */
class Member {
  readonly worker: number;
  thread: WorkerThread | undefined;
  // Its sessions started and not yet ended, as received (not as delivered).
  live = new Set<number>();
  status: MemberStatus = NO_STATUS;
  calls = new Map<number, Pending<unknown>>();
  starting: Pending<number> | undefined;
  // Why its start failed, as it said.
  failure: Error | undefined;
  startedAt = 0;
  deaths = 0;
  restartTimer: ReturnType<typeof setTimeout> | undefined;
  // Ended on purpose (stop, a failed start): not restarted.
  retired = false;

  constructor(worker: number) {
    this.worker = worker;
  }
}

/** The part of the registry entry a group needs: the SocketServer that stands for it. */
export type GroupOwner = Named;

/** A running group of worker threads on one port. */
export class WorkerGroup {
  #options: WorkersOptions;
  #settings: MemberSettings;
  #module: string;
  #owner: GroupOwner;
  #name: string;
  #port = 0;
  #state: ServerState = "starting";
  #slots: SharedSlots;
  #members: Member[];
  #transport: Transport | undefined;
  #sessions = new Map<number, RemoteSession>();
  #order = new EventOrder();
  #accepted = 0;
  #ended: Record<SessionEndReason, number> = { normal: 0, socket_closed: 0, socket_error: 0, timeout: 0, crash: 0 };
  // Counted by threads that have ended.
  #before: MemberStatus = { ...NO_STATUS };
  #refusedTold = 0;
  #workerRestarts = 0;
  #nextCall = 1;
  #stopped: Promise<StopResult> | undefined;
  #resuming: Promise<void> | undefined;
  readonly listening: Promise<unknown>;

  /**
   * @param options The options as given (the main thread's callbacks).
   * @param workers What resolveWorkers made of them: how many threads, the
   * handler module, each thread's settings.
   */
  constructor(options: WorkersOptions, workers: ResolvedWorkers, owner: GroupOwner) {
    this.#options = options;
    this.#settings = workers.settings;
    this.#module = workers.module;
    this.#owner = owner;
    this.#name = options.name ?? "";
    this.#slots = new SharedSlots(options.max, workers.count);
    this.#members = Array.from({ length: workers.count }, (_, index) => new Member(index + 1));
    if (options.name !== undefined) register(owner);
    this.listening = this.#start();
    this.listening.catch(() => {});
  }

  get name(): string {
    return this.#name;
  }

  get port(): number {
    return this.#port;
  }

  get max(): number {
    return this.#slots.max;
  }

  get state(): ServerState {
    return this.#state;
  }

  async #start(): Promise<void> {
    try {
      const transport = this.#transport = await defaultTransport();
      if (transport.startThread === undefined) {
        throw new SocketServerError(
          `The ${transport.name} transport cannot run worker threads: start without workers`,
          "invalid_argument",
        );
      }
      // The first binds the port (the OS picks one for port 0); the others join it.
      const [first, ...others] = this.#members;
      this.#port = await this.#spawn(first, this.#settings.port ?? 0);
      await Promise.all(others.map((member) => this.#spawn(member, this.#port)));
      if (this.#options.name === undefined) {
        this.#name = defaultServerName(this.#port);
        register(this.#owner);
      }
    } catch (error) {
      this.#state = "stopped";
      await Promise.all(this.#members.map((member) => this.#retire(member)));
      unregister(this.#owner);
      throw error;
    }
    this.#state = "running";
  }

  /** Starts `member`'s thread on `port`; resolves with the port it listens on. */
  #spawn(member: Member, port: number): Promise<number> {
    const init: MemberInit = {
      worker: member.worker,
      slots: this.#slots.buffer,
      module: this.#module,
      options: { ...this.#settings, port },
      relayRefused: this.#options.onRefused !== undefined,
    };
    member.failure = undefined;
    member.startedAt = Date.now();
    const started = new Promise<number>((resolve, reject) => {
      member.starting = { resolve, reject };
    });
    let thread: WorkerThread | undefined;
    try {
      thread = this.#transport!.startThread!(init, {
        message: (message) => {
          if (member.thread === thread) this.#received(member, message as MemberMessage);
        },
        exit: (error) => {
          if (member.thread === thread) this.#exited(member, error);
        },
      });
    } catch (error) {
      // A thread that could not start is one that ended at once.
      queueMicrotask(() => this.#exited(member, error instanceof Error ? error : new Error(String(error))));
      return started;
    }
    member.thread = thread;
    return started;
  }

  #received(member: Member, message: MemberMessage): void {
    switch (message.type) {
      case "listening":
        member.starting?.resolve(message.port);
        member.starting = undefined;
        return;
      case "failed":
        member.failure = fromWire(message.error);
        member.starting?.reject(member.failure);
        member.starting = undefined;
        void member.thread?.terminate();
        return;
      case "start": {
        const { session } = message;
        member.live.add(session.id);
        this.#order.push(message.seq, () => this.#started(session));
        return;
      }
      case "end": {
        const { session, reason } = message;
        member.live.delete(session.id);
        const error = message.error && fromWire(message.error);
        this.#order.push(message.seq, () => this.#sessionEnded(session.id, reason, error, session));
        return;
      }
      case "error": {
        const session = message.session && (this.#sessions.get(message.session.id) ?? this.#record(message.session));
        this.#report(fromWire(message.error), session);
        return;
      }
      case "refused": {
        const onRefused = this.#options.onRefused;
        const refused = ++this.#refusedTold;
        if (onRefused) safely(() => onRefused({ remoteAddress: message.remoteAddress, refused, reason: message.reason }));
        return;
      }
      case "status":
        member.status = message.status;
        return;
      case "reply": {
        const call = member.calls.get(message.call);
        member.calls.delete(message.call);
        if (message.error) call?.reject(fromWire(message.error));
        else call?.resolve(message.result);
        return;
      }
    }
  }

  #record(wire: WireSession): RemoteSession {
    return new RemoteSession(wire, (session) => this.#closeSession(session));
  }

  #closeSession(session: RemoteSession): void {
    const member = this.#members[session.worker - 1];
    const message: GroupMessage = { type: "close", id: session.id };
    member?.thread?.post(message);
  }

  #started(wire: WireSession): void {
    const session = this.#record(wire);
    this.#sessions.set(session.id, session);
    this.#accepted++;
    const onSessionStart = this.#options.onSessionStart;
    if (onSessionStart) safely(() => onSessionStart(session));
  }

  #sessionEnded(id: number, reason: SessionEndReason, error: Error | undefined, wire?: WireSession): void {
    const session = this.#sessions.get(id);
    if (session === undefined) return;
    if (wire) session.update(wire);
    this.#sessions.delete(id);
    this.#ended[reason]++;
    const onSessionEnd = this.#options.onSessionEnd;
    if (onSessionEnd) {
      safely(() => (error === undefined ? onSessionEnd(session, reason) : onSessionEnd(session, reason, error)));
    }
  }

  /**
   * A thread ended. Its sessions end (after their starts, before any start
   * that takes their slots), its slots go back to the group, its counters
   * are kept; unless the group ended it, it is reported and restarted.
   */
  #exited(member: Member, error: Error | undefined): void {
    member.thread = undefined;
    const why = member.failure ?? error ?? new Error("the thread exited");
    const gone = new SocketServerError(
      `Worker ${member.worker} of ${this.#name === "" ? "a starting server" : `server '${this.#name}'`} ended: ${why.message}`,
      "worker_exit",
      { cause: why },
    );
    for (const call of member.calls.values()) call.reject(gone);
    member.calls.clear();
    member.starting?.reject(member.failure ?? gone);
    member.starting = undefined;
    for (const id of member.live) this.#order.push(this.#slots.nextSequence(), () => this.#sessionEnded(id, "crash", gone));
    member.live.clear();
    for (const key of ["handshakeFailures", "proxyErrors", "refused", "acceptErrors"] as const) {
      this.#before[key] += member.status[key];
    }
    member.status = NO_STATUS;
    this.#slots.releaseHolder(member.worker - 1);
    if (member.retired || this.#state !== "running" && this.#state !== "suspended") return;
    this.#workerRestarts++;
    this.#report(gone);
    if (Date.now() - member.startedAt >= RESTART_STABLE_MS) member.deaths = 0;
    const delayMs = member.deaths === 0 ? 0 : Math.min(RESTART_FIRST_MS * 2 ** (member.deaths - 1), RESTART_LONGEST_MS);
    member.deaths++;
    member.restartTimer = setTimeout(() => {
      member.restartTimer = undefined;
      // A suspended group starts it when it resumes.
      if (this.#state === "running") this.#restart(member);
    }, delayMs);
  }

  #restart(member: Member): void {
    this.#spawn(member, this.#port).then(
      // Suspended while it started: it follows the group.
      () => this.#state === "suspended" ? this.#call(member, "suspend") : undefined,
    ).catch(() => {}); // a failed start is the thread's end, handled there
  }

  /** Ends `member`'s thread on purpose; resolves once it is gone. */
  async #retire(member: Member): Promise<void> {
    member.retired = true;
    clearTimeout(member.restartTimer);
    await member.thread?.terminate();
  }

  #call(member: Member, op: "stop" | "suspend" | "resume", timeoutMs?: number): Promise<unknown> {
    const thread = member.thread;
    if (thread === undefined) return Promise.resolve(undefined);
    const call = this.#nextCall++;
    const message: GroupMessage = { type: "call", call, op, timeoutMs };
    return new Promise((resolve, reject) => {
      member.calls.set(call, { resolve, reject });
      thread.post(message);
    });
  }

  status(): ServerStatus {
    const sum = { ...this.#before, handshaking: 0, waiting: 0 };
    for (const { status } of this.#members) {
      for (const key of Object.keys(sum) as (keyof MemberStatus)[]) sum[key] += status[key];
    }
    return {
      num: this.#sessions.size,
      max: this.#slots.max,
      name: this.#name,
      port: this.#port,
      state: this.#state,
      accepted: this.#accepted,
      handshaking: sum.handshaking,
      handshakeFailures: sum.handshakeFailures,
      proxyErrors: sum.proxyErrors,
      refused: sum.refused,
      acceptErrors: sum.acceptErrors,
      waiting: this.#state === "running" ? sum.waiting : 0,
      ended: { ...this.#ended },
      workers: this.#members.length,
      workerRestarts: this.#workerRestarts,
    };
  }

  children(): SessionInfo[] {
    return [...this.#sessions.values()];
  }

  setMax(max: number): void {
    checkMax(max);
    this.#slots.setMax(max);
  }

  async suspend(): Promise<void> {
    await this.#resuming?.catch(() => {});
    if (this.#state === "suspended") return;
    this.#expectState("running", "suspend");
    this.#state = "suspended";
    await Promise.all(this.#members.map((member) => this.#call(member, "suspend").catch(() => {})));
  }

  resume(): Promise<void> {
    if (this.#resuming) return this.#resuming;
    if (this.#state === "running") return Promise.resolve();
    try {
      this.#expectState("suspended", "resume");
    } catch (error) {
      return Promise.reject(error);
    }
    // A thread that died while the group was suspended starts now.
    this.#resuming = Promise.all(this.#members.map((member) =>
      member.thread === undefined && member.restartTimer === undefined
        ? this.#spawn(member, this.#port)
        : this.#call(member, "resume")
    )).then(() => {
      this.#resuming = undefined;
      if (this.#state === "suspended") this.#state = "running";
    }, (error) => {
      this.#resuming = undefined;
      throw error;
    });
    return this.#resuming;
  }

  stop(timeoutMs: number | undefined): Promise<StopResult> {
    this.#stopped ??= this.#stop(timeoutMs);
    return this.#stopped;
  }

  async #stop(timeoutMs: number | undefined): Promise<StopResult> {
    try {
      await this.listening;
    } catch {
      return { ended: 0, closed: 0 };
    }
    this.#state = "stopping";
    const results = await Promise.all(this.#members.map((member) => {
      clearTimeout(member.restartTimer);
      return this.#call(member, "stop", timeoutMs).catch(() => undefined) as Promise<StopResult | undefined>;
    }));
    await Promise.all(this.#members.map((member) => this.#retire(member)));
    this.#order.flush();
    unregister(this.#owner);
    this.#state = "stopped";
    return {
      ended: results.reduce((sum, result) => sum + (result?.ended ?? 0), 0),
      closed: results.reduce((sum, result) => sum + (result?.closed ?? 0), 0),
    };
  }

  #expectState(state: ServerState, action: string): void {
    if (this.#state !== state) throw invalidState(this.#name, this.#state, action);
  }

  #report(error: unknown, session?: SessionInfo): void {
    const onError = this.#options.onError ?? reportError;
    safely(() => onError(error, session), "onError");
  }
}

