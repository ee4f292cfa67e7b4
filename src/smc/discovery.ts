// Capability discovery for one host. Linux marks SMC in the TCP SYN; user space cannot, so SMC
// listeners announce themselves in the per-user runtime directory: one small file per
// listening socket, naming the pid (and its start time), network namespace, address and
// port. A client proposes SMC only to a destination that is local and matches a live entry,
// so a peer not known to speak SMC never receives a byte the application did not write.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isAlive, keepPresent, listEntries, netNamespace, readEntry, removeEntry, restoreEntry, selfStartTime, subdir, writeEntry } from '../ism/runtime-dir.js';

interface ListenerEntry {
  pid: number;
  start: string;
  netns: string;
  address: string;
  port: number;
}

let serial = 0;

export class ListenerRegistration {
  private readonly file: string;
  private readonly onExit = () => this.remove();
  private readonly stopKeeping: () => void;
  constructor(address: string, port: number) {
    this.file = path.join(subdir('listeners'), `${port}.${process.pid}.${++serial}.json`);
    const e: ListenerEntry = { pid: process.pid, start: selfStartTime(), netns: netNamespace(), address, port };
    writeEntry(this.file, e);
    process.once('exit', this.onExit);
    // Without its entry no client would propose SMC to this listener again: write it back.
    this.stopKeeping = keepPresent(() => restoreEntry(this.file, e));
  }
  remove(): void {
    this.stopKeeping();
    process.removeListener('exit', this.onExit);
    removeEntry(this.file);
  }
}

/** '::ffff:1.2.3.4' (an IPv4 peer on a dual-stack socket) as '1.2.3.4'. */
export function unmapV4(a: string): string {
  return a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

function isLoopback(a: string): boolean {
  return a === '::1' || (net.isIPv4(a) && a.startsWith('127.'));
}

let localAddrs: { at: number; set: Set<string> } | undefined;
function isLocalAddress(a: string): boolean {
  if (isLoopback(a)) return true;
  const now = Date.now();
  if (!localAddrs || now - localAddrs.at > 5000) {
    const set = new Set<string>();
    for (const list of Object.values(os.networkInterfaces())) for (const i of list ?? []) set.add(unmapV4(i.address));
    localAddrs = { at: now, set };
  }
  return localAddrs.set.has(a);
}

function addressMatches(listening: string, dest: string): boolean {
  const l = unmapV4(listening);
  if (l === dest) return true;
  if (l === '::') return true; // dual-stack wildcard
  if (l === '0.0.0.0') return net.isIPv4(dest);
  return false;
}

/**
 * Per port, the addresses live SMC listeners of this namespace registered; dropped whenever
 * the directory changes (inotify) and after a second.
 */
const cache = new Map<number, { at: number; addresses: string[] }>();
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

function listenersOn(port: number): string[] {
  const hit = cache.get(port);
  const now = Date.now();
  if (hit && now - hit.at < 1000 && watcher) return hit.addresses;
  const dir = subdir('listeners');
  watch(dir);
  const addresses: string[] = [];
  const prefix = `${port}.`;
  const names = listEntries(dir);
  if (!names) {
    // The directory was removed: no listener can be found there, and the watch is dead.
    watcher?.close();
    watcher = undefined;
  }
  for (const name of names ?? []) {
    if (!name.startsWith(prefix) || !name.endsWith('.json')) continue;
    const file = path.join(dir, name);
    const e = readEntry<ListenerEntry>(file);
    if (!e || e.port !== port) continue;
    if (!isAlive(e.pid, e.start)) { removeEntry(file); continue; }
    if (e.netns === netNamespace()) addresses.push(e.address);
  }
  cache.set(port, { at: now, addresses });
  return addresses;
}

/**
 * Is there a live SMC listener for this destination on this host, in this namespace? The
 * address may be given as a function: it is asked for only when some listener uses the port
 * (a socket's remoteAddress costs a system call, which a fallback connection should not pay).
 */
export function isSmcListener(address: string | undefined | (() => string | undefined), port: number | undefined): boolean {
  if (!port) return false;
  const listening = listenersOn(port);
  if (listening.length === 0) return false;
  const a = typeof address === 'function' ? address() : address;
  if (!a) return false;
  const dest = unmapV4(a);
  return isLocalAddress(dest) && listening.some((l) => addressMatches(l, dest));
}

/** Forget cached answers (tests, or after starting a server in this process). */
export function clearDiscoveryCache(): void {
  cache.clear();
}
