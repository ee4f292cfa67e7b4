// Capability discovery for one host. Linux marks SMC in the TCP SYN; user space cannot, so SMC
// listeners announce themselves in the per-user runtime directory: one small file per
// listening socket, naming the pid (and its start time), network namespace, address and
// port. A client proposes SMC only to a destination that is local and matches a live entry,
// so a peer not known to speak SMC never receives a byte the application did not write.
// Entries are read only from the checked, owner-only runtime directory, and only if they are
// files of this user (src/ism/runtime-dir.ts). An entry whose process this process cannot
// judge (another pid namespace, e.g. a container sharing /tmp) is neither used nor removed.

import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { threadId } from 'node:worker_threads';
import { unmapV4 } from '../abi/inet.js';
import { interfaceAddresses, type InterfaceAddress } from './interfaces.js';
import { keepPresent, listEntries, liveness, netNamespace, openEntryPath, pidNamespaceTag, readEntry, removeEntry, restoreEntry, selfStamp, statFields, statRunning, subdir, type ProcessStamp, writeEntry } from '../ism/runtime-dir.js';

export interface ListenerEntry extends ProcessStamp {
  netns: string;
  address: string;
  port: number;
  /** A '::' listener that takes IPv6 only (IPV6_V6ONLY): not a listener for IPv4 destinations. */
  v6only?: true;
  /**
   * A worker thread's listener: its thread's status socket (a name in the status directory).
   * A terminated worker runs no exit hook, so its entry stays while the process lives; libuv
   * unlinks the socket when the thread's handles close, which tells that the listener is gone.
   */
  anchor?: string;
}

/** How a v6-only '::' listener stands in the port cache's address list. */
const V6ONLY_ANY = '::%v6only';

let serial = 0;

/** Live registrations: one shared exit hook removes all their entries (not a hook each). */
const live = new Set<ListenerRegistration>();
function removeAllAtExit(): void {
  for (const r of live) r.remove();
}

/**
 * A listener entry, if it is of a live process this process can judge. An entry of a dead
 * process (same pid namespace) is removed. An entry of another pid namespace is neither used
 * nor removed: its pid means nothing here (and SMC-D reaches a peer's memory through
 * /proc/<pid>, which needs it).
 */
function liveEntry(dir: string, name: string): ListenerEntry | undefined {
  const file = `${dir}/${name}`;
  const e = readEntry<ListenerEntry>(file);
  if (!e) return undefined;
  const alive = listenerLiveness(e);
  if (alive === false) removeEntry(file);
  return alive ? e : undefined;
}

/** liveness() of the entry's process, and for a worker's listener, of its thread. */
export function listenerLiveness(e: ListenerEntry): boolean | undefined {
  const alive = liveness(e);
  if (alive !== true || e.anchor === undefined) return alive;
  if (typeof e.anchor !== 'string' || e.anchor.includes('/')) return false;
  try {
    return fs.existsSync(`${subdir('status')}/${e.anchor}`);
  } catch {
    return undefined;
  }
}

/**
 * Between full reads of the directory (a second), a cheap check that a listener's process has
 * not exited: kill -9 changes no file, so the directory watch cannot tell, and a process of
 * another user could take the port meanwhile. The process's /proc/<pid>/stat stays open (one
 * pread per Proposal, ~2 us, where an open and close cost ~25 us): a read of a process that
 * has been reaped fails with ESRCH, even once its pid is reused, and a killed process not yet
 * reaped reads state Z. (signal 0, used until 2026-12-05, could not tell a zombie: its socket
 * is closed and its port free, yet it takes signals until its parent reaps it.)
 */
const statFds = new Map<number, { fd: number; start: string }>();
/** Open stat files at most: listener processes of this user that clients here talk to. */
const MAX_STAT_FDS = 64;
const statBuf = Buffer.alloc(1024);

function dropStat(pid: number): void {
  const h = statFds.get(pid);
  if (!h) return;
  statFds.delete(pid);
  try { fs.closeSync(h.fd); } catch { /* already closed */ }
}

function stillRunning(pid: number, start: string): boolean {
  if (pid === process.pid) return true;
  let h = statFds.get(pid);
  if (h && h.start !== start) { dropStat(pid); h = undefined; }
  if (!h) {
    let fd: number;
    try { fd = fs.openSync(`/proc/${pid}/stat`, 'r'); } catch { return false; }
    if (statFds.size >= MAX_STAT_FDS) dropStat(statFds.keys().next().value!);
    statFds.set(pid, (h = { fd, start }));
  }
  let n: number;
  try { n = fs.readSync(h.fd, statBuf, 0, statBuf.length, 0); } catch { n = -1; }
  // The pid may belong to another process than the entry's (reused): its start time tells.
  const alive = n > 0 && statRunning(statFields(statBuf.toString('latin1', 0, n)), start);
  if (!alive) dropStat(pid);
  return alive;
}

let lastSweep = 0;

/**
 * Remove the entries of dead processes (kill -9 leaves them), so that they do not pile up:
 * run when a listener starts, at most once a second. Only entries of this pid namespace can
 * be judged (liveness); the others are left alone.
 */
function sweepDeadListeners(): void {
  const now = Date.now();
  if (now - lastSweep < 1000) return;
  lastSweep = now;
  try {
    const dir = subdir('listeners');
    for (const name of listEntries(dir) ?? []) if (name.endsWith('.json')) liveEntry(dir, name);
  } catch {
    // A sweep is housekeeping: readers skip dead entries anyway.
  }
}

export class ListenerRegistration {
  private readonly name: string;
  private readonly stopKeeping: () => void;
  private removed = false;
  /** `anchor`: in a worker thread, its status socket's name (see ListenerEntry.anchor). */
  constructor(address: string, port: number, v6only = false, anchor?: string) {
    // The pid namespace and thread in the name: containers sharing the directory, or workers of
    // one process, never write each other's entry.
    this.name = `${port}.${process.pid}.${threadId}.${pidNamespaceTag()}.${++serial}.json`;
    const e: ListenerEntry = {
      ...selfStamp(), netns: netNamespace(), address, port,
      ...(v6only && address === '::' ? { v6only: true as const } : {}),
      ...(anchor !== undefined ? { anchor } : {}),
    };
    writeEntry('listeners', this.name, e);
    sweepDeadListeners();
    if (live.size === 0) process.on('exit', removeAllAtExit);
    live.add(this);
    // Without its entry no client would propose SMC to this listener again: write it back.
    this.stopKeeping = keepPresent(() => restoreEntry('listeners', this.name, e));
  }
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.stopKeeping();
    live.delete(this);
    if (live.size === 0) process.removeListener('exit', removeAllAtExit);
    const file = openEntryPath('listeners', this.name);
    if (file) removeEntry(file);
    cache.clear();
  }
}

export function isLoopback(a: string): boolean {
  return a === '::1' || (a.startsWith('127.') && net.isIPv4(a));
}

let localAddrs: { of: readonly InterfaceAddress[]; set: Set<string> } | undefined;
/** A loopback address or one of this host's interfaces' (from the refreshed snapshot). */
export function isLocalAddress(a: string): boolean {
  if (isLoopback(a)) return true;
  const list = interfaceAddresses();
  if (localAddrs?.of !== list) localAddrs = { of: list, set: new Set(list.map((i) => unmapV4(i.address))) };
  return localAddrs.set.has(a);
}

function addressMatches(listening: string, dest: string): boolean {
  const l = unmapV4(listening);
  if (l === dest) return true;
  if (l === '::') return true; // dual-stack wildcard
  if (l === V6ONLY_ANY) return net.isIPv6(dest);
  if (l === '0.0.0.0') return net.isIPv4(dest);
  return false;
}

/**
 * Per port, the addresses live SMC listeners of this namespace registered; dropped whenever
 * the directory changes (inotify) and after a second.
 */
const cache = new Map<number, PortEntry>();

interface PortEntry {
  at: number;
  addresses: string[];
  /** The processes of the listeners behind `addresses`, checked before a Proposal (stillRunning). */
  procs: { pid: number; start: string }[];
  /** Worker listeners' status sockets (ListenerEntry.anchor), checked with the pids. */
  anchors: string[];
  /** The last loopback destination asked about and the answer (the same while the entry lives). */
  lastDest: string | undefined;
  lastAnswer: boolean;
}
let watcher: fs.FSWatcher | undefined;

function watch(dir: string): void {
  if (watcher) return;
  try {
    watcher = fs.watch(dir, { persistent: false }, () => cache.clear());
    watcher.on('error', () => { watcher = undefined; cache.clear(); });
  } catch {
    watcher = undefined;
  }
}

function listenersOn(port: number): PortEntry {
  const hit = cache.get(port);
  // Not Date.now() (a runtime call, ~0.5 us a connection), nor the global performance (a lazy
  // getter, called on every access): perf_hooks' own.
  const now = performance.now();
  if (hit && now - hit.at < 1000 && watcher) return hit;
  const dir = subdir('listeners');
  watch(dir);
  const addresses: string[] = [];
  const procs: { pid: number; start: string }[] = [];
  const anchors: string[] = [];
  const prefix = `${port}.`;
  const names = listEntries(dir);
  if (!names) {
    // The directory was removed: no listener can be found there, and the watch is dead.
    watcher?.close();
    watcher = undefined;
  }
  for (const name of names ?? []) {
    if (!name.startsWith(prefix) || !name.endsWith('.json')) continue;
    const e = liveEntry(dir, name);
    if (e && e.port === port && e.netns === netNamespace()) {
      addresses.push(e.v6only ? V6ONLY_ANY : e.address);
      if (!procs.some((p) => p.pid === e.pid)) procs.push({ pid: e.pid, start: e.start });
      if (e.anchor !== undefined) anchors.push(`${subdir('status')}/${e.anchor}`);
    }
  }
  const entry: PortEntry = { at: now, addresses, procs, anchors, lastDest: undefined, lastAnswer: false };
  cache.set(port, entry);
  return entry;
}

/**
 * Is there a live SMC listener for this destination on this host, in this namespace? The
 * address may be given as a function: it is asked for only when some listener uses the port
 * (a socket's remoteAddress costs a system call, which a fallback connection should not pay).
 */
export function isSmcListener(address: string | undefined | (() => string | undefined), port: number | undefined): boolean {
  if (!port) return false;
  const entry = listenersOn(port);
  if (entry.addresses.length === 0) return false;
  const a = typeof address === 'function' ? address() : address;
  if (!a) return false;
  // A client that connects to one local peer again and again asks the same question: the
  // answer for a loopback address depends on the entry's addresses alone.
  if (a === entry.lastDest) return entry.lastAnswer;
  const dest = unmapV4(a);
  if (!isLocalAddress(dest)) return false;
  let answer = false;
  for (const l of entry.addresses) if (addressMatches(l, dest)) { answer = true; break; }
  if (isLoopback(dest)) {
    entry.lastDest = a;
    entry.lastAnswer = answer;
  }
  return answer;
}

/**
 * Right before a Proposal goes to a listener isSmcListener found: are the listeners behind the
 * port's cached answer still running? If one is not, the cache for the port is dropped and the
 * caller asks isSmcListener again (which reads the directory). Not part of isSmcListener itself:
 * a connection that then goes TCP anyway (learned) should not pay the system call.
 */
export function listenersStillRunning(port: number | undefined): boolean {
  const hit = port ? cache.get(port) : undefined;
  if (!hit || (hit.procs.every((p) => stillRunning(p.pid, p.start)) && hit.anchors.every((a) => fs.existsSync(a)))) return true;
  cache.delete(port!);
  return false;
}

/** Forget cached answers (tests, or after starting a server in this process). */
export function clearDiscoveryCache(): void {
  cache.clear();
}
