// The handle table of one uapi context: every live object by its handle and by its
// implementation, and the use counts that make a parent with children EBUSY. Handles count
// up and are never reused, so a stale handle can only name nothing.

import type { UObject } from './spec.js';

export class HandleTable {
  private readonly byHandle = new Map<number, UObject>();
  private readonly byImpl = new WeakMap<object, UObject>();
  private nextHandle = 1;

  get size(): number {
    return this.byHandle.size;
  }

  /** Live objects, oldest first. */
  all(): UObject[] {
    return [...this.byHandle.values()];
  }

  /** The live object with this handle, if any. */
  get(handle: number): UObject | undefined {
    const u = this.byHandle.get(handle);
    return u?.live ? u : undefined;
  }

  /** The object whose implementation is `impl`, if it is (or was) in this table. */
  ofImpl(impl: unknown): UObject | undefined {
    return typeof impl === 'object' && impl !== null ? this.byImpl.get(impl) : undefined;
  }

  /** Add a new object holding a use count on each of `holds` until it is removed. */
  add(type: number, impl: unknown, holds: UObject[]): UObject {
    const u: UObject = { handle: this.nextHandle++, type, impl, usecnt: 0, holds, live: true, locks: 0 };
    for (const p of holds) p.usecnt++;
    this.byHandle.set(u.handle, u);
    if (typeof impl === 'object' && impl !== null) this.byImpl.set(impl, u);
    return u;
  }

  /**
   * Remove an object: it names nothing from now on (also while `teardown` runs, so a teardown
   * that calls back in cannot destroy it twice); then its holds on its parents are released.
   * If `teardown` throws and `keepOnFailure` is set, the object is put back as it was (uverbs
   * keeps a uobject whose destroy failed, so the caller can retry).
   */
  remove(u: UObject, teardown: () => void, keepOnFailure: boolean): void {
    u.live = false;
    this.byHandle.delete(u.handle);
    let done = false;
    try {
      teardown();
      done = true;
    } finally {
      if (done || !keepOnFailure) {
        for (const p of u.holds) if (p.usecnt > 0) p.usecnt--;
      } else {
        u.live = true;
        this.byHandle.set(u.handle, u);
      }
    }
  }
}

/** Move a child's hold from its current parent of `type` to `to` (MR.REREG with CHANGE_PD). */
export function moveHold(child: UObject, to: UObject, type: number): void {
  const i = child.holds.findIndex((h) => h.type === type);
  if (i >= 0) {
    const from = child.holds[i]!;
    if (from.usecnt > 0) from.usecnt--;
    child.holds.splice(i, 1);
  }
  child.holds.push(to);
  to.usecnt++;
}
