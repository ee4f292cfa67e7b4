// Waits bounded by a timeout, one after another (a latency test's completion waits), sharing
// one AbortSignal until a wait times out. The first listener on a fresh AbortSignal costs Node
// ~6 us (AbortSignal.timeout ~11 us), a listener on a signal already listened to ~0.2 us: a
// signal per wait was a fifth of a sleeping send_lat's half round trip (bench/RESULTS.md).

/** The error a timed-out wait rejects with. */
export class WaitTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(readonly ms: number) {
    super(`timed out after ${ms} ms`);
    this.name = 'WaitTimeoutError';
  }
}

export class WaitTimeouts {
  private ac = new AbortController();

  /**
   * wait(signal), aborted with a WaitTimeoutError after `ms`. Waits must not overlap (a timeout
   * aborts the shared signal, and every wait listening to it).
   */
  async run<T>(ms: number, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = this.ac;
    // Infinity: no timer, the wait ends by itself or by abort().
    const timer = Number.isFinite(ms) ? setTimeout(() => {
      this.ac = new AbortController();
      ac.abort(new WaitTimeoutError(ms));
    }, ms) : undefined;
    try {
      return await wait(ac.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  /** End the wait under way (if any) with `reason`. */
  abort(reason: Error): void {
    const ac = this.ac;
    this.ac = new AbortController();
    ac.abort(reason);
  }
}
