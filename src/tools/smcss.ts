// softrdma smcss: the SMC-capable sockets of all this user's processes on the host, in the
// style of smc-tools' smcss. It asks each process's status socket for its connections as
// they are now (src/smc/status.ts) and reads the listener registry; sockets and entries of
// dead processes are removed on the way.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isAlive, readEntry, removeEntry, runtimeDir } from '../ism/runtime-dir.js';
import { statusSocketPid, type ConnectionStatus, type ProcessStatus } from '../smc/status.js';
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

/** The names in a directory; none if it cannot be read (smcss lists what it can). */
function namesIn(dir: string): string[] {
  try { return fs.readdirSync(dir); } catch { return []; }
}

function list<T>(dir: string): Array<{ file: string; value: T }> {
  return namesIn(dir).filter((n) => n.endsWith('.json')).flatMap((n) => {
    const v = readEntry<T>(path.join(dir, n));
    return v ? [{ file: path.join(dir, n), value: v }] : [];
  });
}

/** How long a process may take to answer (its event loop may be busy). */
const ASK_TIMEOUT_MS = 2000;

function pidExists(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
}

type Answer = ProcessStatus | { unanswered: string } | undefined;

/** One process's status, why it gave none, or undefined when nobody listens (the process is gone). */
function ask(file: string, pid: number): Promise<Answer> {
  return new Promise((resolve) => {
    const c = net.connect(file);
    let text = '';
    const done = (v: Answer) => { clearTimeout(timer); c.destroy(); resolve(v); };
    const timer = setTimeout(() => done({ unanswered: `pid ${pid} did not answer within ${ASK_TIMEOUT_MS} ms` }), ASK_TIMEOUT_MS);
    c.setEncoding('utf8');
    c.on('data', (d: string) => { text += d; });
    c.on('end', () => {
      try { done(JSON.parse(text) as ProcessStatus); } catch { done({ unanswered: `pid ${pid} answered with malformed status` }); }
    });
    c.on('error', (err: NodeJS.ErrnoException) => {
      // Nobody listens: the process is gone (kill -9 leaves the file) or is exiting. Not news.
      const gone = err.code === 'ECONNREFUSED' || err.code === 'ENOENT';
      if (gone && !pidExists(pid)) removeEntry(file);
      done(gone ? undefined : { unanswered: `pid ${pid}: ${err.code ?? err.message}` });
    });
  });
}

export interface Collected {
  rows: Row[];
  /** Processes that have a status socket but gave no status (busy, or exiting). */
  warnings: string[];
}

export async function collect(all: boolean): Promise<Collected> {
  const root = runtimeDir();
  const rows: Row[] = [];
  if (all) {
    for (const { value: l } of list<{ pid: number; start: string; address: string; port: number }>(path.join(root, 'listeners'))) {
      if (!isAlive(l.pid, l.start)) continue;
      rows.push({ pid: l.pid, state: 'LISTEN', localAddress: l.address, localPort: l.port, peerAddress: '*', peerPort: 0, mode: 'SMCD' });
    }
  }
  const dir = path.join(root, 'status');
  const warnings: string[] = [];
  const asked = namesIn(dir).flatMap((n) => {
    const pid = statusSocketPid(n);
    return pid === undefined ? [] : [ask(path.join(dir, n), pid)];
  });
  for (const p of await Promise.all(asked)) {
    if (!p) continue;
    if ('unanswered' in p) { warnings.push(p.unanswered); continue; }
    for (const c of p.connections) rows.push({ ...c, pid: p.pid });
  }
  return { rows, warnings };
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

export async function smcss(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { all: { type: 'boolean', short: 'a' }, details: { type: 'boolean', short: 'd' }, json: { type: 'boolean' } } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { rows, warnings } = await collect(!!values.all);
  for (const w of warnings) console.error(`smcss: ${w}`);
  console.log(values.json ? JSON.stringify(rows, null, 2) : format(rows, !!values.details));
}
