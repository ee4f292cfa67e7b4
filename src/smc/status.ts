// Live connection state for `softrdma smcss`: each process with SMC-capable sockets keeps one
// status file in the runtime directory, rewritten (at most every 200 ms) while it changes and
// removed at exit. smcss reads them all and ignores files of dead processes.

import path from 'node:path';
import type net from 'node:net';
import { removeEntry, selfStartTime, subdir, writeEntry } from '../ism/runtime-dir.js';
import { declineName } from './clc.js';
import { getSmcInfo, smcState } from './socket.js';

const live = new Set<net.Socket>();
let timer: NodeJS.Timeout | undefined;
let file: string | undefined;
const INTERVAL_MS = 200;

export interface ConnectionStatus {
  state: string;
  role: 'client' | 'server';
  localAddress: string;
  localPort: number;
  peerAddress: string;
  peerPort: number;
  mode: string;
  fallbackReason?: string;
  peerDeclineReason?: string;
  fallbackCause?: string;
  bufferSize?: number;
  peerBufferSize?: number;
  bytesSent: number;
  bytesReceived: number;
  cursors?: unknown;
}

export interface ProcessStatus {
  pid: number;
  start: string;
  argv: string[];
  updated: number;
  connections: ConnectionStatus[];
}

/** How the connections of this process settled, since it started (smc_run-style totals). */
export interface SmcTotals {
  smcd: number;
  tcp: number;
  /** Connections reset because the handshake failed after the point of no return. */
  failed: number;
  /** TCP connections by local fallback reason: an SMC_CLC_DECL_* name, or, where no CLC reason applies, the cause ('policy', 'disabled', 'not an IP connection'). */
  fallbackReasons: Record<string, number>;
}

const totals: SmcTotals = { smcd: 0, tcp: 0, failed: 0, fallbackReasons: {} };

export function countSettled(mode: 'SMCD' | 'TCP' | 'failed', reason?: number, cause?: string): void {
  if (mode === 'SMCD') totals.smcd++;
  else if (mode === 'failed') totals.failed++;
  else {
    totals.tcp++;
    const name = reason === undefined ? cause ?? 'unknown' : declineName(reason);
    totals.fallbackReasons[name] = (totals.fallbackReasons[name] ?? 0) + 1;
  }
}

export function smcTotals(): SmcTotals {
  return { ...totals, fallbackReasons: { ...totals.fallbackReasons } };
}

export function track(sock: net.Socket): void {
  live.add(sock);
  schedule();
}

export function untrack(sock: net.Socket): void {
  if (live.delete(sock)) schedule();
}

function schedule(): void {
  if (timer) return;
  timer = setTimeout(flush, INTERVAL_MS);
  timer.unref();
}

function describe(sock: net.Socket): ConnectionStatus {
  const s = smcState(sock)!;
  const info = getSmcInfo(sock);
  const st = s.phase === 'smcd' ? (s.writeDone ? 'APPFINCLOSEWAIT' : 'ACTIVE') : s.phase === 'tcp' ? 'ACTIVE' : s.phase === 'closed' ? 'CLOSED' : 'INIT';
  const c: ConnectionStatus = {
    state: st, role: s.role,
    localAddress: sock.localAddress ?? '', localPort: sock.localPort ?? 0,
    peerAddress: sock.remoteAddress ?? '', peerPort: sock.remotePort ?? 0,
    mode: info.pending ? 'INIT' : info.mode,
    bytesSent: info.mode === 'SMCD' ? info.smcBytesSent : sock.bytesWritten ?? 0,
    bytesReceived: info.mode === 'SMCD' ? info.smcBytesReceived : sock.bytesRead,
  };
  if (info.fallbackReason !== undefined) c.fallbackReason = declineName(info.fallbackReason);
  if (info.peerDeclineReason !== undefined) c.peerDeclineReason = declineName(info.peerDeclineReason);
  if (info.fallbackCause !== undefined) c.fallbackCause = info.fallbackCause;
  if (s.conn) {
    c.bufferSize = info.bufferSize;
    c.peerBufferSize = info.peerBufferSize;
    c.cursors = s.conn.cursors();
  }
  return c;
}

function flush(): void {
  timer = undefined;
  const connections: ConnectionStatus[] = [];
  for (const sock of live) {
    if (sock.destroyed) { live.delete(sock); continue; }
    connections.push(describe(sock));
  }
  if (!file) {
    file = path.join(subdir('status'), `${process.pid}.json`);
    process.once('exit', () => { if (file) removeEntry(file); });
  }
  const status: ProcessStatus = { pid: process.pid, start: selfStartTime(), argv: process.argv.slice(1, 3), updated: Date.now(), connections };
  try { writeEntry(file, status); } catch { /* status is best effort; the connections are not */ }
  // Keep byte counters current while connections live.
  if (live.size > 0) schedule();
}
