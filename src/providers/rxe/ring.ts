// A bounded FIFO for work queues and CQs: O(1) push, shift and indexed access.
//
// `capacity` is the queue's size as the application asked for it (max_send_wr, cqe, ...);
// the slots behind it are allocated on demand, starting small and doubling (a power of two,
// so indexing is a mask), so a queue created at the device's maximum size costs almost
// nothing until it is filled. Memory then grows only with what the application has posted
// and not yet polled, never with what it merely asked for. Growth copies the live entries
// once per doubling: amortised O(1), no allocation on an ordinary push.

const INITIAL_SLOTS = 16;

function slotsFor(n: number): number {
  let s = INITIAL_SLOTS;
  while (s < n) s *= 2;
  return s;
}

export class Ring<T> {
  private buf: (T | undefined)[];
  private mask: number;
  private head = 0;
  length = 0;
  private cap: number;

  /** `capacity` may be 0: a 0-entry work queue is legal, and always full. */
  constructor(capacity: number) {
    this.cap = capacity;
    this.buf = new Array(INITIAL_SLOTS);
    this.mask = INITIAL_SLOTS - 1;
  }

  /** The most entries the ring holds. */
  get capacity(): number { return this.cap; }

  /** Slots allocated now (for tests and accounting): grows with use, at most about 2 × capacity. */
  get allocated(): number { return this.buf.length; }

  get full(): boolean {
    return this.length >= this.cap;
  }

  push(v: T): void {
    if (this.length >= this.cap) throw new RangeError('ring full');
    if (this.length === this.buf.length) this.realloc(this.buf.length * 2);
    this.buf[(this.head + this.length) & this.mask] = v;
    this.length++;
  }

  /** The i-th element from the head (0 = oldest). */
  at(i: number): T | undefined {
    return i < this.length ? this.buf[(this.head + i) & this.mask] : undefined;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.length--;
    return v;
  }

  clear(): T[] {
    const out: T[] = [];
    while (this.length) out.push(this.shift()!);
    if (this.buf.length > INITIAL_SLOTS) this.realloc(INITIAL_SLOTS);
    return out;
  }

  /** Change the capacity (CQ resize); entries stay in order. Fails below the entries held. */
  resize(capacity: number): void {
    if (capacity < this.length) throw new RangeError(`cannot shrink below the ${this.length} entries queued`);
    this.cap = capacity;
    if (this.buf.length > slotsFor(this.cap)) this.realloc(slotsFor(this.length));
  }

  private realloc(slots: number): void {
    const next: (T | undefined)[] = new Array(slots);
    for (let i = 0; i < this.length; i++) next[i] = this.buf[(this.head + i) & this.mask];
    this.buf = next;
    this.mask = slots - 1;
    this.head = 0;
  }
}
