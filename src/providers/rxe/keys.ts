// Memory regions, memory windows and the key table behind lkeys and rkeys.
// key = 24-bit index << 8 | 8-bit key byte. The key byte is random and changes on every
// re-registration or re-bind, so a stale or guessed key names nothing.

import { randomInt } from 'node:crypto';
import { Access } from '../../abi/enums.js';
import type { ProviderMr, ProviderMw } from '../../uapi/provider.js';
import { fail } from '../../uapi/errors.js';

export class RxePd {
  private static next = 1;
  readonly id = RxePd.next++;
}

function newKeyByte(old = -1): number {
  let k = randomInt(256);
  if (k === old) k = (k + 1 + randomInt(255)) & 0xff;
  return k;
}

const REMOTE_ACCESS = Access.REMOTE_READ | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC;

export class RxeMr implements ProviderMr {
  keyByte: number;
  boundMwCount = 0;
  valid = true;
  constructor(
    readonly index: number,
    public pd: RxePd,
    public mem: Buffer,
    public iova: number,
    public access: number,
  ) {
    this.keyByte = newKeyByte();
  }
  get lkey(): number { return ((this.index << 8) | this.keyByte) >>> 0; }
  /** Linux rxe_mr_init: the rkey is the lkey only when the MR grants remote access; 0 otherwise. */
  get rkey(): number { return this.access & REMOTE_ACCESS ? this.lkey : 0; }
  get length(): number { return this.mem.length; }
  rekey(): void { this.keyByte = newKeyByte(this.keyByte); }
}

export class RxeMw implements ProviderMw {
  keyByte: number;
  /** Bound range, when valid. */
  mr: RxeMr | undefined;
  /** Window VA start (the MR address, or 0 for a zero-based window). */
  iova = 0;
  /** MR address the window starts at. */
  base = 0;
  length = 0;
  access = 0;
  /** A type 2 window is bound to one QP and usable only through it. */
  qpn: number | undefined;
  constructor(
    readonly index: number,
    readonly pd: RxePd,
    readonly type: number,
  ) {
    this.keyByte = newKeyByte();
  }
  get rkey(): number { return ((this.index << 8) | this.keyByte) >>> 0; }
  get bound(): boolean { return this.mr !== undefined; }
  unbind(): void {
    if (this.mr) this.mr.boundMwCount--;
    this.mr = undefined;
    this.length = 0;
    this.access = 0;
    this.qpn = undefined;
  }
}

export type KeyError = 'rkey' | 'pd' | 'access' | 'bounds' | 'state';

export interface Resolved {
  mem: Buffer;
  offset: number;
}

export class KeyTable {
  private readonly objs = new Map<number, RxeMr | RxeMw>();
  private next = 1;

  get size(): number { return this.objs.size; }

  private allocIndex(): number {
    // The uapi enforces max_mr and max_mw (after the object is made: rxe's order); this guards
    // the 24-bit index space itself.
    if (this.objs.size >= 0xffffff) fail('ENOMEM', `no free memory keys (${this.objs.size} in use)`);
    // Walk forward instead of reusing the lowest free index, so a just-freed index (and any
    // key a peer still holds for it) is not handed out again soon.
    for (;;) {
      const i = this.next;
      this.next = this.next >= 0xffffff ? 1 : this.next + 1;
      if (!this.objs.has(i)) return i;
    }
  }

  addMr(pd: RxePd, mem: Buffer, iova: number, access: number): RxeMr {
    const mr = new RxeMr(this.allocIndex(), pd, mem, iova, access);
    this.objs.set(mr.index, mr);
    return mr;
  }

  addMw(pd: RxePd, type: number): RxeMw {
    const mw = new RxeMw(this.allocIndex(), pd, type);
    this.objs.set(mw.index, mw);
    return mw;
  }

  remove(obj: RxeMr | RxeMw): void {
    if (this.objs.get(obj.index) === obj) this.objs.delete(obj.index);
  }

  /** Whether obj is still in the table (not deregistered or deallocated). */
  holds(obj: RxeMr | RxeMw): boolean {
    return this.objs.get(obj.index) === obj;
  }

  lookup(key: number): RxeMr | RxeMw | undefined {
    const o = this.objs.get(key >>> 8);
    return o && o.keyByte === (key & 0xff) ? o : undefined;
  }

  /** Local (lkey) access for an SGE: MRs only, same PD, LOCAL_WRITE when written. */
  resolveLocal(lkey: number, pd: RxePd, addr: number, len: number, write: boolean): Resolved | KeyError {
    const out: Resolved = { mem: NO_MEM, offset: 0 };
    return this.resolveLocalInto(out, lkey, pd, addr, len, write) ?? out;
  }

  /**
   * resolveLocal without allocating: the memory and offset go into `out`, undefined is
   * returned on success. For the responder's per-packet lookups of receive SGEs (Linux
   * copy_data looks up each SGE it copies into, on every copy).
   */
  resolveLocalInto(out: Resolved, lkey: number, pd: RxePd, addr: number, len: number, write: boolean): KeyError | undefined {
    const mr = this.lookup(lkey);
    if (!(mr instanceof RxeMr) || !mr.valid) return 'rkey';
    if (mr.pd !== pd) return 'pd';
    if (write && !(mr.access & Access.LOCAL_WRITE)) return 'access';
    const offset = addr - mr.iova;
    if (!(offset >= 0 && offset + len <= mr.length)) return 'bounds';
    out.mem = mr.mem;
    out.offset = offset;
    return undefined;
  }

  /**
   * Whether an SGE's lkey still names a valid MR of `pd` (Linux copy_data looks each SGE's MR
   * up again on every copy). A deregistered MR has left the table, and a re-registered one has
   * a new key byte, so a match also means its memory, address and access are unchanged.
   */
  liveLocal(lkey: number, pd: RxePd): boolean {
    const mr = this.lookup(lkey);
    return mr instanceof RxeMr && mr.valid && mr.pd === pd;
  }

  /** Remote (rkey) access from a responder: PD, full key, access, bounds and state. */
  resolveRemote(rkey: number, pd: RxePd, qpn: number, va: number, len: number, need: number): Resolved | KeyError {
    const out: Resolved = { mem: NO_MEM, offset: 0 };
    return this.resolveRemoteInto(out, rkey, pd, qpn, va, len, need) ?? out;
  }

  /**
   * resolveRemote without allocating: the memory and offset go into `out`, undefined is
   * returned on success. For the responder's per-packet lookups (Linux check_rkey looks the
   * rkey up for every RDMA WRITE packet).
   */
  resolveRemoteInto(out: Resolved, rkey: number, pd: RxePd, qpn: number, va: number, len: number, need: number): KeyError | undefined {
    const o = this.lookup(rkey);
    if (!o) return 'rkey';
    if (o instanceof RxeMr) {
      if (!o.valid) return 'state';
      if (o.pd !== pd) return 'pd';
      if ((o.access & need) !== need) return 'access';
      const offset = va - o.iova;
      if (!(offset >= 0 && offset + len <= o.length)) return 'bounds';
      out.mem = o.mem;
      out.offset = offset;
      return undefined;
    }
    if (!o.mr) return 'state';
    if (o.type === 1 ? o.pd !== pd : o.qpn !== qpn) return 'pd';
    if ((o.access & need) !== need) return 'access';
    const offset = va - o.iova;
    if (!(offset >= 0 && offset + len <= o.length)) return 'bounds';
    out.mem = o.mr.mem;
    out.offset = o.base - o.mr.iova + offset;
    return undefined;
  }
}

/** The memory of a Resolved that names none yet. */
export const NO_MEM = Buffer.alloc(0);
