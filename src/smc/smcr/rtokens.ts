// The peer's rtokens in a link group (Linux: lgr->rtokens[SMC_RMBS_PER_LGR_MAX][SMC_LINKS_PER_LGR_MAX]
// and lgr->rtokens_used_mask, smc_core.h 314-317; smc_rtoken_add / smc_rtoken_delete / smc_rtoken_set /
// smc_rtoken_set2 / smcr_rtoken_clear_link, smc_core.c). An entry is one RMB of the peer: its rkey
// and address on each link of the group. Entries come from the CLC Accept/Confirm of each
// connection (smc_rmb_rtoken_handling) and from the peer's CONFIRM_RKEY requests; they stay when
// the connection ends and go only with a DELETE_RKEY naming them, or with the link group.
//
// softrdma keeps the table to answer as Linux does (CONFIRM_RKEY, DELETE_RKEY, whether a server
// may add a connection to the group) and to give a connection that joins the group its RMB's
// rkeys on the group's other links. Nothing writes through it: a connection copies its keys when
// it joins (and gets those of a link added later from ADD_LINK), so what the peer does to the
// table afterwards changes nothing a connection writes to.
//
// One departure from Linux: an entry a client added for a connection whose handshake then
// failed before its CLC Confirm went out is freed again (lgr.ts provisional). The server never
// counts on it, and a softrdma server quarantines an RMB offered in a failed handshake and
// offers the next connection a fresh one: kept, such entries filled the table after ~1,000
// failed handshakes, and every later connection to that server declined ERR_RTOK.

import type { SmcrLink } from './link.js';

/** SMC_RMBS_PER_LGR_MAX (smc_core.h 26): entries per link group (lgr.ts MAX_CONNS is the same number). */
export const RTOKENS_MAX = 255;

/** An rtoken: an RMB's rkey and address on one link (struct smc_rtoken). */
export interface Rtoken { rkey: number; addr: bigint }

export class RtokenTable {
  /** Entries by index (Linux's rtoken_idx); undefined: a free slot. */
  private readonly slots: Array<Map<SmcrLink, Rtoken> | undefined> = [];
  /** Indexes of the entries by link and rkey, so a lookup costs no scan (a DELETE_RKEY names up to 255 rkeys). */
  private readonly byKey = new Map<SmcrLink, Map<number, Set<number>>>();
  private used = 0;

  /** Entries in use. */
  get size(): number { return this.used; }
  /** No free entry (Linux: bitmap_full(lgr->rtokens_used_mask, SMC_RMBS_PER_LGR_MAX)). */
  get full(): boolean { return this.used >= RTOKENS_MAX; }

  /** The first entry (lowest index) with this rkey on this link (smc_rtoken_find_by_link). */
  private first(link: SmcrLink, rkey: number): number | undefined {
    const s = this.byKey.get(link)?.get(rkey);
    if (!s || s.size === 0) return undefined;
    let min = RTOKENS_MAX;
    for (const i of s) if (i < min) min = i;
    return min;
  }

  private unindex(i: number, link: SmcrLink, rkey: number): void {
    const m = this.byKey.get(link);
    const s = m?.get(rkey);
    if (!s) return;
    s.delete(i);
    if (s.size === 0) m!.delete(rkey);
    if (m!.size === 0) this.byKey.delete(link);
  }

  /** Set entry i's rtoken on a link (replacing what it had there). */
  private put(i: number, link: SmcrLink, t: Rtoken): void {
    const e = this.slots[i]!;
    const old = e.get(link);
    if (old) this.unindex(i, link, old.rkey);
    e.set(link, { rkey: t.rkey, addr: t.addr });
    let m = this.byKey.get(link);
    if (!m) this.byKey.set(link, m = new Map());
    let s = m.get(t.rkey);
    if (!s) m.set(t.rkey, s = new Set());
    s.add(i);
  }

  /**
   * smc_rtoken_add: the index of the entry with this rkey and address on this link, else a new
   * entry in the lowest free slot (smc_rmb_reserve_rtoken_idx); undefined when the table is full
   * (-ENOSPC).
   */
  add(link: SmcrLink, t: Rtoken): number | undefined {
    const s = this.byKey.get(link)?.get(t.rkey);
    if (s) {
      let min: number | undefined;
      for (const i of s) if (this.slots[i]!.get(link)!.addr === t.addr && (min === undefined || i < min)) min = i;
      if (min !== undefined) return min;
    }
    if (this.full) return undefined;
    let i = 0;
    while (i < this.slots.length && this.slots[i] !== undefined) i++;
    this.slots[i] = new Map();
    this.used++;
    this.put(i, link, t);
    return i;
  }

  /** smc_rtoken_set2: entry i's rtoken on another link (a CONFIRM_RKEY's further rtokens). */
  set(i: number, link: SmcrLink, t: Rtoken): void {
    if (this.slots[i]) this.put(i, link, t);
  }

  /** smc_rtoken_set: the entry whose rkey on `known` is rkeyKnown gets its rtoken on `link` (ADD_LINK's rkey pairs); false: no such entry. */
  setByKnown(known: SmcrLink, rkeyKnown: number, link: SmcrLink, t: Rtoken): boolean {
    const i = this.first(known, rkeyKnown);
    if (i === undefined) return false;
    this.put(i, link, t);
    return true;
  }

  /** Entry i's rtokens on every link. */
  entry(i: number): ReadonlyMap<SmcrLink, Rtoken> | undefined {
    return this.slots[i];
  }

  /** smc_rtoken_delete: free the first entry with this rkey on this link (all its links); false if none (-ENOENT). */
  delete(link: SmcrLink, rkey: number): boolean {
    const i = this.first(link, rkey);
    if (i === undefined) return false;
    for (const [l, t] of this.slots[i]!) this.unindex(i, l, t.rkey);
    this.slots[i] = undefined;
    this.used--;
    while (this.slots.length > 0 && this.slots[this.slots.length - 1] === undefined) this.slots.pop();
    return true;
  }

  /** Free entry i if it is still `expected` (not freed and filled again since). */
  deleteEntry(i: number, expected: ReadonlyMap<SmcrLink, Rtoken>): boolean {
    const e = this.slots[i];
    if (!e || e !== expected) return false;
    for (const [l, t] of e) this.unindex(i, l, t.rkey);
    this.slots[i] = undefined;
    this.used--;
    while (this.slots.length > 0 && this.slots[this.slots.length - 1] === undefined) this.slots.pop();
    return true;
  }

  /** smcr_rtoken_clear_link: a link leaves the group; every entry loses its rtoken there (the entries stay). */
  clearLink(link: SmcrLink): void {
    this.byKey.delete(link);
    for (const e of this.slots) e?.delete(link);
  }

  /** The link group ends. */
  clear(): void {
    this.slots.length = 0;
    this.byKey.clear();
    this.used = 0;
  }
}
