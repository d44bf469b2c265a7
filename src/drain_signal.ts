/**
 * The promise that writers wait on while a connection's queue is above its
 * bound, shared by the adapters. Runtime-neutral.
 *
 * @module
 */

/** One promise per backpressure episode, resolved when the queue drains. */
export class DrainSignal {
  #drained: Promise<void> | undefined;
  #resolve: (() => void) | undefined;

  /** Whether a writer is waiting. */
  get waiting(): boolean {
    return this.#drained !== undefined;
  }

  /** The promise to wait on: the same one until {@linkcode DrainSignal.wake}. */
  wait(): Promise<void> {
    return this.#drained ??= new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Resolves the waiting writers (queue drained, or connection closed). */
  wake(): void {
    const resolve = this.#resolve;
    this.#drained = undefined;
    this.#resolve = undefined;
    resolve?.();
  }
}
