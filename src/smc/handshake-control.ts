// Whether a client connection should try SMC at all, learned from this process's own recent
// connections to the same peer (address and port). Setting up SMC-D costs more than setting
// up TCP (a CLC exchange of three messages, a DMB, a closing CDC): for a connection that
// opens, moves a few bytes and closes, about 1.8x TCP's CPU time, which the faster data path
// never earns back. Linux grew a hook for this decision (smc_hs_ctrl, a BPF struct_ops that
// may veto SMC per connection, motivated by exactly these short-lived connections); this is
// a built-in policy of that kind.
//
// The rule: a connection is short when it ended having moved less than SHORT_BYTES (both
// directions) within SHORT_MS. After SHORT_RUN short connections in a row to a peer, the next
// ones go straight to TCP (no CLC at all), each observed in the same way; one that is not
// short turns SMC back on. Now and then a connection tries SMC anyway, so a peer whose traffic
// changed is noticed: after PROBE_FIRST connections, then after twice as many each time the
// probe was short too, up to PROBE_MAX (a probe costs an SMC setup, which is what this saves).
// SOFTRDMA_SMC_LEARN=0 or setSmcLearning(false) turns it off (every connection to an SMC
// listener then proposes SMC, as before).

import { invalidArgType } from './options.js';

const SHORT_BYTES = 64 * 1024;
/** SOFTRDMA_SMC_LEARN_SHORT_MS changes it (tests on a loaded machine, where 100 ms is not short). */
const SHORT_MS = Number(process.env.SOFTRDMA_SMC_LEARN_SHORT_MS) > 0 ? Number(process.env.SOFTRDMA_SMC_LEARN_SHORT_MS) : 100;
const SHORT_RUN = 8;
const PROBE_FIRST = 32;
const PROBE_MAX = 1024;
/** Peers remembered at most; the oldest is forgotten first. */
const MAX_PEERS = 1024;

interface PeerHistory {
  /** Short connections in a row (SMC or learned-TCP ones). */
  shortRun: number;
  /** Connections sent to TCP since SMC was last tried, and how many until the next try. */
  sinceProbe: number;
  probeAfter: number;
}

const peers = new Map<string, PeerHistory>();
/** Remembered peers by port: a connection to a port none of them has is not looked up (its key may need a getpeername). */
const ports = new Map<number, number>();

function portOf(key: string): number {
  return Number(key.slice(key.lastIndexOf('|') + 1));
}

function forget(key: string): void {
  if (!peers.delete(key)) return;
  const p = portOf(key);
  const n = ports.get(p)! - 1;
  if (n > 0) ports.set(p, n); else ports.delete(p);
}
let enabled = process.env.SOFTRDMA_SMC_LEARN !== '0';
let skipped = 0;

/** Turn the learned choice on or off for this process (on unless SOFTRDMA_SMC_LEARN=0). */
export function setSmcLearning(on: boolean): void {
  if (typeof on !== 'boolean') throw invalidArgType('on', 'of type boolean', on);
  enabled = on;
  if (!on) {
    peers.clear();
    ports.clear();
  }
}

/** The last key made: a client that connects to one peer again and again looks it up with one string, hashed once. */
let lastKey = { address: '', port: 0, key: '|0' };

export function peerKey(address: string | undefined, port: number | undefined): string {
  const a = address ?? '';
  const p = port ?? 0;
  if (a !== lastKey.address || p !== lastKey.port) lastKey = { address: a, port: p, key: `${a}|${p}` };
  return lastKey.key;
}

/**
 * Whether the rule could send a connection to this port to TCP (a peer on that port is
 * remembered): only then is the peer's key worth making, which needs its address.
 */
export function mayLearnTcp(port: number | undefined): boolean {
  return enabled && ports.has(port ?? 0);
}

/**
 * Whether the rule would let a connection to this peer try SMC without a probe (shouldTrySmc with
 * nothing counted or changed): a peer it sends to TCP reads false even where shouldTrySmc would
 * let this one through as its probe.
 */
export function wouldTrySmc(key: string): boolean {
  if (!enabled) return true;
  const h = peers.get(key);
  return !h || h.shortRun < SHORT_RUN;
}

/** Whether a new connection to this peer should propose SMC. */
export function shouldTrySmc(key: string): boolean {
  if (!enabled) return true;
  const h = peers.get(key);
  if (!h || h.shortRun < SHORT_RUN) return true;
  if (++h.sinceProbe >= h.probeAfter) {
    h.sinceProbe = 0;
    h.probeAfter = Math.min(2 * h.probeAfter, PROBE_MAX);
    return true;
  }
  skipped++;
  return false;
}

/** A client connection to this peer ended: how much it moved and how long it lived (ms). */
export function recordConnection(key: string, bytes: number, ms: number): void {
  if (!enabled) return;
  const short = bytes < SHORT_BYTES && ms < SHORT_MS;
  let h = peers.get(key);
  if (!h) {
    if (!short) return; // nothing to learn from a peer whose connections pay
    if (peers.size >= MAX_PEERS) forget(peers.keys().next().value!);
    peers.set(key, (h = { shortRun: 0, sinceProbe: 0, probeAfter: PROBE_FIRST }));
    const p = portOf(key);
    ports.set(p, (ports.get(p) ?? 0) + 1);
  }
  if (short) {
    h.shortRun++;
  } else {
    forget(key);
  }
}

/** For status and tests: connections that went to TCP by this rule, and the peers it remembers. */
export function learningStats(): { enabled: boolean; skipped: number; peers: number; shortPeers: number } {
  let shortPeers = 0;
  for (const h of peers.values()) if (h.shortRun >= SHORT_RUN) shortPeers++;
  return { enabled, skipped, peers: peers.size, shortPeers };
}

export const LEARNING = { SHORT_BYTES, SHORT_MS, SHORT_RUN, PROBE_FIRST, PROBE_MAX } as const;
