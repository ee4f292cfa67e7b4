// DMB reuse between connections with the same peer device, as Linux reuses RMBs within a link
// group. Registering a fresh DMB (memfd_create, seal, mmap) and having the peer open and map
// it, with fresh page faults on both sides, costs more than a whole short TCP connection; a
// DMB the peer already has mapped costs nothing.
//
// A DMB goes back to the free list only once the peer's last write into it is visible: its
// CDC with peer_conn_closed or peer_conn_abort, which the peer writes just before it lets go
// of the connection. Until then it waits on a draining list (a peer that died never writes
// it, so those are unregistered when the pool goes idle). The CDC area is zeroed before the
// DMB is handed out again; the data area is not, as only the same two processes, which both
// saw those bytes, can read it.
//
// One peer device holds at most maxDmbsPerPeer() DMBs of ours at a time (in use, or waiting
// for its final CDC): a peer cannot take every slot of the device and push everyone else's
// connections to TCP. Over the limit takeDmb fails, and the handshake declines with
// SMC_CLC_DECL_MAX_DMB, Linux's "SMC-D DMB limit exceeded".

import { IsmError, type Dmb, type IsmDevice } from '../ism/device.js';
import { CdcArea, CONN_ABORT, CONN_CLOSED, SMCD_CDC_LEN, unpackCursor } from './cdc.js';

/** Free DMBs kept per peer and size, and in bytes over all pools; more are unregistered. */
const MAX_FREE = 64;
const MAX_FREE_BYTES = 64 * 1024 * 1024;
/** DMBs waiting for the peer's final CDC, per peer and size. */
const MAX_DRAINING = 256;
/** A pool not used for this long gives all its DMBs back to the device. */
const IDLE_MS = 10_000;
/** DMBs one peer device may hold at once, unless SOFTRDMA_SMC_MAX_DMBS_PER_PEER says otherwise. */
const DEFAULT_MAX_PER_PEER = 1024;
let maxPerPeer = Number(process.env.SOFTRDMA_SMC_MAX_DMBS_PER_PEER) > 0 ? Math.floor(Number(process.env.SOFTRDMA_SMC_MAX_DMBS_PER_PEER)) : DEFAULT_MAX_PER_PEER;

export function maxDmbsPerPeer(): number {
  return maxPerPeer;
}

/** @internal (tests) */
export function setMaxDmbsPerPeer(n: number): void {
  maxPerPeer = n;
}

/** DMBs handed out per device and peer and not yet back on a free list (or unregistered). */
const held = new Map<string, number>();
let refusedCount = 0;

function peerKey(device: IsmDevice, peerGid: bigint): string {
  return `${device.gid}:${peerGid}`;
}

function hold(dmb: Dmb, k: string): void {
  held.set(k, (held.get(k) ?? 0) + 1);
  dmb.onRelease = () => unhold(k);
}

function unhold(k: string): void {
  const n = (held.get(k) ?? 1) - 1;
  if (n > 0) held.set(k, n);
  else held.delete(k);
}

interface Pool {
  device: IsmDevice;
  free: Dmb[];
  draining: Dmb[];
  lastUsed: number;
}

const pools = new Map<string, Pool>();
let freeBytes = 0;
let reuseCount = 0;
let sweeper: NodeJS.Timeout | undefined;

function key(device: IsmDevice, peerGid: bigint, size: number): string {
  return `${device.gid}:${peerGid}:${size}`;
}

/** Has the peer written its last CDC (closed or aborted) into this DMB? */
export function peerLetGo(dmb: Dmb): boolean {
  if (dmb.isClosed) return false;
  const flags = unpackCursor(new CdcArea(dmb.view).loadProd()).connFlags;
  return (flags & (CONN_CLOSED | CONN_ABORT)) !== 0;
}

/** A DMB of this size for a connection with peerGid: a reused one when the pool has one. */
export function takeDmb(device: IsmDevice, peerGid: bigint, size: number): Dmb {
  const k = peerKey(device, peerGid);
  if ((held.get(k) ?? 0) >= maxPerPeer) {
    // Some may only wait for the peer's final CDC, which may have come meanwhile.
    for (const [pk, p] of pools) if (p.device === device && pk.startsWith(`${k}:`)) promote(p);
  }
  if ((held.get(k) ?? 0) >= maxPerPeer) {
    refusedCount++;
    throw new IsmError('EDQUOT', `peer ${peerGid.toString(16)} holds ${maxPerPeer} DMBs already`);
  }
  const p = pools.get(key(device, peerGid, size));
  if (p) {
    p.lastUsed = Date.now();
    // The DMBs the peer let go of most recently are the ones it most likely still has
    // mapped (and the warmest in cache): promote them and take from the top.
    if (p.draining.length > 0) promote(p);
    for (let d = p.free.pop(); d; d = p.free.pop()) {
      freeBytes -= d.size;
      if (d.isClosed) continue; // the device closed under the pool
      d.view.fill(0, 0, SMCD_CDC_LEN);
      reuseCount++;
      hold(d, k);
      d.forPeer = peerGid;
      return d;
    }
  }
  const d = device.registerDmb(size);
  hold(d, k);
  d.forPeer = peerGid;
  return d;
}

/**
 * The connection that used dmb is over. It becomes reusable for the same peer once the peer
 * has let go of it; never for another peer.
 */
export function returnDmb(device: IsmDevice, peerGid: bigint, dmb: Dmb): void {
  dmb.onSignal = undefined;
  dmb.disarm();
  if (dmb.isClosed) return;
  const k = key(device, peerGid, dmb.size);
  let p = pools.get(k);
  if (!p) {
    p = { device, free: [], draining: [], lastUsed: Date.now() };
    pools.set(k, p);
  }
  p.lastUsed = Date.now();
  if (peerLetGo(dmb)) {
    keepOrFree(p, dmb);
  } else if (p.draining.length < MAX_DRAINING) {
    p.draining.push(dmb);
  } else {
    device.unregisterDmb(dmb);
  }
  sweeper ??= setInterval(sweep, IDLE_MS / 2).unref();
}

function promote(p: Pool): void {
  const still: Dmb[] = [];
  for (const d of p.draining) {
    if (!peerLetGo(d)) still.push(d);
    else keepOrFree(p, d);
  }
  p.draining = still;
}

/** Keep d on top of the free list; over the limits, the oldest free DMBs go, not d. */
function keepOrFree(p: Pool, d: Dmb): void {
  // Free again: no longer held by the peer.
  const released = d.onRelease;
  d.onRelease = undefined;
  released?.();
  p.free.push(d);
  freeBytes += d.size;
  while (p.free.length > MAX_FREE || (freeBytes > MAX_FREE_BYTES && p.free.length > 1)) {
    const old = p.free.shift()!;
    freeBytes -= old.size;
    p.device.unregisterDmb(old);
  }
}

function sweep(): void {
  const now = Date.now();
  for (const [k, p] of pools) {
    if (now - p.lastUsed < IDLE_MS) continue;
    for (const d of p.free) freeBytes -= d.size;
    for (const d of [...p.free, ...p.draining]) p.device.unregisterDmb(d);
    pools.delete(k);
  }
  if (pools.size === 0 && sweeper) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

/** For stats and tests: DMBs held by pools, how many times one was reused, and how many were refused over the per-peer limit. */
export function poolStats(): { free: number; draining: number; reused: number; refusedOverPeerLimit: number } {
  let free = 0;
  let draining = 0;
  for (const p of pools.values()) { free += p.free.length; draining += p.draining.length; }
  return { free, draining, reused: reuseCount, refusedOverPeerLimit: refusedCount };
}

/** For tests: DMBs of ours that this peer device holds now. */
export function heldByPeer(device: IsmDevice, peerGid: bigint): number {
  return held.get(peerKey(device, peerGid)) ?? 0;
}
