// softrdma smcss: the SMC-capable sockets of all this user's processes on the host, in the
// style of smc-tools' smcss. It asks each process's status socket for its connections as
// they are now (src/smc/status.ts) and reads the listener registry; sockets and entries of
// dead processes are removed on the way.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pidNamespaceTag, readEntry, removeEntry, runtimeDir } from '../ism/runtime-dir.js';
import { listenerLiveness, type ListenerEntry } from '../smc/discovery.js';
import { parseStatusSocketName, type ConnectionStatus, type DiagCursor, type ProcessStatus } from '../smc/status.js';
import type { SmcrLinkGroupStatus } from '../smc/smcr/diag.js';
import { codeOf, declineHex, declineShortName } from './decline-text.js';
import { getoptArgs, UsageError } from './usage.js';

export const SMCSS_USAGE = `usage: softrdma smcss [ OPTIONS ]
  -h, --help          this message
  -v, -V, --version   show version information (smcss's -v)
  -a, --all           show all sockets
  -l, --listening     show listening sockets
  -d, --debug         show debug socket information
  -e, --extended      the same (smc-tools' later name for it)
  -W, --wide          do not truncate IP addresses
  -D, --smcd          show SMC-D information (GIDs, DMB tokens); SMC-D sockets only
  -R, --smcr          show SMC-R information (role, RoCE device, port, link id, GIDs); SMC-R sockets only
      --verbose       fallback and decline reasons also by name, with the cause in words
      --json          the rows as one JSON document, for scripts
  no OPTIONS          show all connected sockets
Long options may be abbreviated, as smcss's getopt_long takes them (--listen, --wid, --vers);
--v and --ver are ambiguous here (--verbose, --version).

Like smc-tools' smcss, for the SMC sockets of this user's processes on this host
(the Inode column is the process id).`;

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
  /** The SMC-R link groups of the processes that answered, with their pids (`softrdma linkgroup`). */
  linkGroups: Array<SmcrLinkGroupStatus & { pid: number }>;
  /** Processes that have a status socket but gave no status (busy, or exiting). */
  warnings: string[];
}

export async function collect(all: boolean): Promise<Collected> {
  const root = runtimeDir();
  const rows: Row[] = [];
  const linkGroups: Collected['linkGroups'] = [];
  if (all) {
    for (const { value: l } of list<ListenerEntry>(path.join(root, 'listeners'))) {
      if (listenerLiveness(l) !== true) continue;
      rows.push({ pid: l.pid, state: 'LISTEN', localAddress: l.address, localPort: l.port, peerAddress: '*', peerPort: 0, mode: 'SMCD' });
    }
  }
  const dir = path.join(root, 'status');
  const warnings: string[] = [];
  // Sockets of another pid namespace (a container sharing the directory) are left out: their
  // pids mean nothing here.
  const ns = pidNamespaceTag();
  const asked = namesIn(dir).flatMap((n) => {
    const s = parseStatusSocketName(n);
    return s === undefined || (s.pidns !== undefined && s.pidns !== ns) ? [] : [ask(path.join(dir, n), s.pid)];
  });
  for (const p of await Promise.all(asked)) {
    if (!p) continue;
    if ('unanswered' in p) { warnings.push(p.unanswered); continue; }
    for (const c of p.connections) rows.push({ ...c, pid: p.pid });
    for (const g of p.linkGroups ?? []) linkGroups.push({ pid: p.pid, ...g });
  }
  return { rows, linkGroups, warnings };
}

/**
 * smcss's addr_format: "addr:port", the address cut to fit 23 characters unless wide. As
 * smcss prints the kernel's, an IPv4 address of an AF_INET6 socket keeps its '::ffff:' (Node
 * reports an AF_INET6 socket's IPv4 peers so, an AF_INET socket's addresses without it).
 */
export function addrText(a: string, p: number, wide: boolean): string {
  const host = a;
  const port = String(p);
  if (wide || host.length + 1 + port.length <= ADDR_LEN_SHORT) return `${host}:${port}`;
  return `${host.slice(0, ADDR_LEN_SHORT - 1 - port.length - 2)}..:${port}`;
}

const ADDR_LEN_SHORT = 23;
const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
const cursor = (c: DiagCursor) => `${hex(c.wrap, 4)}:${hex(c.count, 8)}`;

/** smcss's Mode for a fallback: "TCP 0x<local>", with "/0x<peer>" only when the peer declined. */
export function tcpModeText(r: Pick<Row, 'fallbackReason' | 'peerDeclineReason'>): string {
  const peer = codeOf(r.peerDeclineReason);
  return `TCP ${declineHex(codeOf(r.fallbackReason) ?? 0)}${peer ? `/${declineHex(peer)}` : ''}`;
}

/** For -v: the reasons by name and the cause in softrdma's words. */
function reasonWords(r: Row): string {
  const name = (t?: string) => { const c = codeOf(t); return c === undefined ? undefined : (declineShortName(c) ?? declineHex(c)); };
  const names = [name(r.fallbackReason), name(r.peerDeclineReason)].filter(Boolean).join('/');
  return `(${[names, r.fallbackCause].filter(Boolean).join(': ')})`;
}

export interface FormatOptions { debug?: boolean; smcd?: boolean; smcr?: boolean; wide?: boolean; verbose?: boolean; uid?: number }

/** -d's columns (smc_diag_conninfo), each followed by a space as smcss prints them; none without conninfo. */
function debugColumns(r: Row): string {
  // Shutd: ' R-W  ', '<' / '>' where a direction is still open.
  const m = r.shutdown ?? 0;
  let l = ` ${m & 1 ? 'R' : '<'}-${m & 2 ? 'W' : '>'}  `;
  const c = r.conninfo;
  if (!c) return l;
  l += `${hex(c.token, 8)} ${hex(c.sndbufSize, 8)} ${hex(c.rmbeSize, 8)} ${hex(c.peerRmbeSize, 8)} `;
  l += `${cursor(c.rxProd)} ${cursor(c.rxCons)} ${hex(c.rxProdFlags, 2)}:${hex(c.rxConnStateFlags, 2)}   `;
  l += `${cursor(c.txProd)} ${cursor(c.txCons)} ${hex(c.txProdFlags, 2)}:${hex(c.txConnStateFlags, 2)}   `;
  l += `${cursor(c.txPrep)} ${cursor(c.txSent)} ${cursor(c.txFin)} `;
  return l;
}

/** -D's columns (smcd_diag_dmbinfo): GIDs and tokens as %016llx, the link id as %08x. */
function smcdColumns(r: Row): string {
  const d = r.dmbinfo;
  return d ? `${d.gid} ${d.token} ${d.peerGid} ${d.peerToken} ${hex(d.linkId, 8)} ` : '';
}

/** -R's columns (smc_diag_lgrinfo): role, RoCE device (%-15s), port and link id (%02x), our GID (%-40s) and the peer's. */
function smcrColumns(r: Row): string {
  const g = r.lgrinfo;
  return g ? `${g.role === 'server' ? 'SERV' : 'CLNT'} ${g.ibDev.padEnd(15)} ${hex(g.ibPort, 2)}   ${hex(g.linkId, 2)}     ${g.gid.padEnd(40)} ${g.peerGid}` : '';
}

/** Rows as smcss prints them (print_header and show_one_smc_sock), trailing blanks and all. */
export function format(rows: Row[], o: FormatOptions = {}): string {
  let head = 'State          UID   Inode   Local Address           Peer Address            Intf Mode ';
  if (o.debug) head += 'Shutd Token    Sndbuf   Rcvbuf   Peerbuf  rxprod-Cursor rxcons-Cursor rxFlags txprod-Cursor txcons-Cursor txFlags txprep-Cursor txsent-Cursor txfin-Cursor  ';
  if (o.smcr) head += 'Role IB-device       Port Linkid GID                                      Peer-GID';
  if (o.smcd) head += 'GID              Token            Peer-GID         Peer-Token       Linkid';
  const uid = o.uid ?? (process.getuid?.() ?? 0);
  const lines = [head];
  for (const r of rows) {
    let l = `${r.state.padEnd(14)} ${String(uid).padStart(5, '0')} ${String(r.pid).padStart(7, '0')} `;
    if (r.state !== 'INIT') {
      const local = addrText(r.localAddress, r.localPort, !!o.wide);
      l += `${local.padEnd(ADDR_LEN_SHORT)} `;
      if (r.state !== 'LISTEN') {
        const peer = addrText(r.peerAddress, r.peerPort, !!o.wide);
        l += `${peer.padEnd(ADDR_LEN_SHORT)} 0000 `;
        if (r.state !== 'CLOSED') {
          if (r.mode === 'TCP') {
            l += tcpModeText(r);
            if (o.verbose) l += ` ${reasonWords(r)}`;
          } else {
            l += `${r.mode.padStart(4)} `;
            if (o.debug) l += debugColumns(r);
            if (o.smcr) l += smcrColumns(r);
            if (o.smcd) l += smcdColumns(r);
          }
        }
      }
    }
    lines.push(l);
  }
  return lines.join('\n');
}

/**
 * `softrdma smcss [options]`. Usage errors (an unknown option, combinations smcss refuses) exit
 * 1, as smcss's usage(); arguments that are not options are ignored, as smcss.c ignores them.
 */
export const SMCSS_OPTIONS = {
  all: { type: 'boolean', short: 'a' }, listening: { type: 'boolean', short: 'l' }, debug: { type: 'boolean', short: 'd' },
  wide: { type: 'boolean', short: 'W' }, smcd: { type: 'boolean', short: 'D' }, smcr: { type: 'boolean', short: 'R' },
  verbose: { type: 'boolean' }, json: { type: 'boolean' },
  details: { type: 'boolean' }, // the old spelling of --debug
  extended: { type: 'boolean', short: 'e' }, // smc-tools' later spelling (getopt "aleDRhvVW")
  // smcss.c's own --help and --version (the CLI answers them first): listed so that getopt_long's
  // prefix rule weighs them as the original's options (--vers is --version).
  help: { type: 'boolean' }, version: { type: 'boolean' },
} as const;

export async function smcss(args: string[]): Promise<void> {
  // smcss.c reads them with getopt_long: long options by any unambiguous prefix (--listen, --wid).
  const { values: v } = parseArgs({ args: getoptArgs(args, SMCSS_OPTIONS), allowPositionals: true, options: SMCSS_OPTIONS });
  const debug = v.debug || v.details || v.extended;
  // smcss's own combinations (main() in smcss.c).
  if (v.smcr && v.smcd) throw new UsageError('--smcd together with --smcr is not supported');
  if (v.listening && debug) throw new UsageError(`--listening together with --${v.extended ? 'extended' : 'debug'} is not supported`);
  if (v.listening && v.all) throw new UsageError('--listening together with --all is not supported');
  if (v.listening && v.smcr) throw new UsageError('--listening together with --smcr is not supported');
  if (v.listening && v.smcd) throw new UsageError('--listening together with --smcd is not supported');
  const { rows: all, warnings } = await collect(!!(v.all || v.listening));
  const rows = all.filter((r) => {
    if (v.listening) return r.state === 'LISTEN';
    if (!v.all && (r.state === 'LISTEN' || r.state === 'INIT')) return false;
    // Linux reports a socket without a link group that did not fall back (a listener, a handshake
    // in progress) as SMC-R (diag_mode), so smcss -R -a lists those too and -D -a does not.
    const unsettled = r.state === 'LISTEN' || r.state === 'INIT';
    if (v.smcd && (r.mode !== 'SMCD' || unsettled)) return false;
    if (v.smcr && r.mode !== 'SMCR' && !unsettled) return false;
    return true;
  });
  for (const w of warnings) console.error(`smcss: ${w}`);
  console.log(v.json ? JSON.stringify(rows, null, 2) : format(rows, { debug, smcd: v.smcd, smcr: v.smcr, wide: v.wide, verbose: v.verbose }));
}
