/**
 * How long a closing connection waits for a peer that takes none of its
 * queued bytes (`lingerMs`), shared by the adapters. Runtime-neutral.
 *
 * A connection is closed right after a handler's last send, usually with
 * bytes still queued: they go out as long as the peer keeps taking them, and
 * are dropped (with the socket) once it has taken none for `lingerMs`, so
 * that a peer that stops reading cannot keep a closed session's socket and
 * queue alive.
 *
 * @module
 */

/**
 * Looks at a closing connection's queued bytes five times per `lingerMs`, and
 * calls `onStall` (once) when they have not gone down for `lingerMs`, at once
 * if that is 0; once none are left, it stops by itself. Stop it when the
 * connection is gone.
 */
export class StallWatch {
  #queued: () => number;
  #onStall: () => void;
  #lingerMs: number;
  #last: number;
  #progressAt: number;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param queued The bytes still queued now.
   * @param onStall Drops the connection.
   */
  constructor(queued: () => number, onStall: () => void, lingerMs: number) {
    this.#queued = queued;
    this.#onStall = onStall;
    this.#lingerMs = lingerMs;
    this.#last = queued();
    this.#progressAt = Date.now();
    if (lingerMs === 0) onStall();
    else this.#arm();
  }

  /** No more looks: the connection is gone. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    const timer = setTimeout(() => {
      this.#timer = undefined;
      const queued = this.#queued();
      if (queued === 0) return; // all gone out: the adapter ends the connection
      const now = Date.now();
      // Progress is a fall since the last look: a count that rose meanwhile
      // (Node's handle adds a write it has just begun) starts again from there.
      const fell = queued < this.#last;
      this.#last = queued;
      if (fell) {
        this.#progressAt = now;
      } else if (now - this.#progressAt >= this.#lingerMs) {
        this.#onStall();
        return;
      }
      this.#arm();
    }, this.#lingerMs / 5);
    // The socket keeps the process alive while it is open; the timer need not.
    (timer as { unref?: () => void }).unref?.();
    this.#timer = timer;
  }
}
