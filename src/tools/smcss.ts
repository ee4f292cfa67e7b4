// softrdma smcss: the SMC-capable sockets of all this user's processes on the host, in the
// style of smc-tools' smcss. It reads the live status files the processes keep current
// (src/smc/status.ts) and the listener registry; files of dead processes are skipped.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isAlive, readEntry, runtimeDir } from '../ism/runtime-dir.js';
import type { ConnectionStatus, ProcessStatus } from '../smc/status.js';
import { formatTable } from './table.js';
import { UsageError } from './usage.js';

export const SMCSS_USAGE = `usage: softrdma smcss [-a] [-d] [--json]
  -a, --all       also list listening sockets
  -d, --details   buffer sizes and CDC cursors
  --json          one JSON document for scripts`;

interface Row extends Partial<ConnectionStatus> {
  pid: number;
  state: string;
  localAddress: string;
  localPort: number;
  peerAddress: string;
  peerPort: number;
  mode: string;
}

function list<T>(dir: string): Array<{ file: string; value: T }> {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  return names.filter((n) => n.endsWith('.json')).flatMap((n) => {
    const v = readEntry<T>(path.join(dir, n));
    return v ? [{ file: path.join(dir, n), value: v }] : [];
  });
}

export function collect(all: boolean): Row[] {
  const root = runtimeDir();
  const rows: Row[] = [];
  if (all) {
    for (const { value: l } of list<{ pid: number; start: string; address: string; port: number }>(path.join(root, 'listeners'))) {
      if (!isAlive(l.pid, l.start)) continue;
      rows.push({ pid: l.pid, state: 'LISTEN', localAddress: l.address, localPort: l.port, peerAddress: '*', peerPort: 0, mode: 'SMCD' });
    }
  }
  for (const { value: p } of list<ProcessStatus>(path.join(root, 'status'))) {
    if (!isAlive(p.pid, p.start)) continue;
    for (const c of p.connections) rows.push({ ...c, pid: p.pid });
  }
  return rows;
}

function addr(a: string, p: number): string {
  const host = a.includes(':') && !a.startsWith('::ffff:') ? `[${a}]` : a.replace(/^::ffff:/, '');
  return `${host}:${p === 0 ? '*' : p}`;
}

function modeText(r: Row): string {
  if (r.mode !== 'TCP') return r.mode;
  const hex = (s?: string) => (s ? (s.match(/0x[0-9a-f]+/)?.[0] ?? s) : '0x00000000');
  return `TCP ${hex(r.fallbackReason)}/${hex(r.peerDeclineReason)}`;
}

export function format(rows: Row[], details: boolean): string {
  const head = ['State', 'Pid', 'Local Address', 'Peer Address', 'Mode'];
  if (details) head.push('Sndbuf', 'Rcvbuf', 'Tx prod', 'Tx cons', 'Rx prod', 'Rx cons', 'Sent', 'Received');
  const lines = rows.map((r) => {
    const cells = [r.state, String(r.pid), addr(r.localAddress, r.localPort), addr(r.peerAddress, r.peerPort), modeText(r)];
    if (details) {
      const c = r.cursors as { tx: { wrap: number; count: number }; peerCons: { wrap: number; count: number }; rx: { wrap: number; count: number }; cons: { wrap: number; count: number } } | undefined;
      const wc = (x?: { wrap: number; count: number }) => (x ? `${x.wrap}:${x.count}` : '-');
      cells.push(r.peerBufferSize ? String(r.peerBufferSize) : '-', r.bufferSize ? String(r.bufferSize) : '-',
        wc(c?.tx), wc(c?.peerCons), wc(c?.rx), wc(c?.cons), String(r.bytesSent ?? 0), String(r.bytesReceived ?? 0));
    }
    return cells;
  });
  return formatTable([head, ...lines], ' ');
}

export function smcss(args: string[]): void {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { all: { type: 'boolean', short: 'a' }, details: { type: 'boolean', short: 'd' }, json: { type: 'boolean' } } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const rows = collect(!!values.all);
  console.log(values.json ? JSON.stringify(rows, null, 2) : format(rows, !!values.details));
}
