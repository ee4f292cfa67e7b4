// A fixed-capacity FIFO for work queues: O(1) push, shift and indexed access.

export class Ring<T> {
  private buf: (T | undefined)[];
  private head = 0;
  length = 0;

  constructor(public capacity: number) {
    this.buf = new Array(Math.max(1, capacity));
  }

  get full(): boolean {
    return this.length >= this.capacity;
  }

  push(v: T): void {
    if (this.length >= this.capacity) throw new RangeError('ring full');
    this.buf[(this.head + this.length) % this.buf.length] = v;
    this.length++;
  }

  /** The i-th element from the head (0 = oldest). */
  at(i: number): T | undefined {
    return i < this.length ? this.buf[(this.head + i) % this.buf.length] : undefined;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) % this.buf.length;
    this.length--;
    return v;
  }

  clear(): T[] {
    const out: T[] = [];
    while (this.length) out.push(this.shift()!);
    return out;
  }
}
