// Live connection state for `softrdma smcss`, made when asked for, as the kernel answers
// smcss over netlink: a process with SMC-capable sockets listens on a Unix socket in the
// runtime directory (status/<pid>.sock) and answers each connection with its connections as
// they are at that moment (JSON). Nothing is written while nobody asks, so a process with
// many connections pays nothing for being listable.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';
import { threadId } from 'node:worker_threads';
import { openedIsmDevice } from '../ism/device.js';
import { forgetDirectories, keepPresent, listEntries, pidNamespaceKnown, pidNamespaceTag, removeEntry, runtimeDirRefusals, subdir, type RefusalKind } from '../ism/runtime-dir.js';
import { poolStats } from './dmb-pool.js';
import { declineName } from './clc.js';
import { CONN_ABORT, CONN_CLOSED, CONN_DONE_WRITING, PROD_CONS_UPD_REQ, PROD_URG_PENDING, PROD_URG_PRESENT, PROD_WRITE_BLOCKED } from './cdc.js';
import { getSmcInfo, smcState } from './state.js';
import type { SmcrConnection } from './smcr/connection.js';
import { gidText, linkGroupId, smcrLinkGroupStatus, type SmcrLinkGroupStatus } from './smcr/diag.js';
import { SmcrLinkGroup } from './smcr/lgr.js';

const debug = util.debuglog('smc');
/**
 * What every copy of softrdma in this thread shares (an application's own dependency and the
 * one smc-run preloads): the totals, the live sockets and the one status socket smcss asks.
 */
interface SharedStatus {
  totals: SmcTotals; live: Set<net.Socket>; endpoint: Endpoint | undefined;
  /** Connection tokens (smcss -d), given out once per connection; optional: an older copy may have made this object. */
  tokens?: WeakMap<object, number>; lastToken?: number;
  /**
   * Each copy's SMC-R link groups (linkgroup, smcss -R): every copy adds its lister, whichever
   * copy's status socket answers; optional: an older copy may have made this object.
   */
  linkGroupListers?: Set<() => SmcrLinkGroupStatus[]>;
}
const shared: SharedStatus = ((globalThis as { [k: symbol]: SharedStatus | undefined })[Symbol.for('softrdma.smc.status')] ??= {
  totals: { smcd: 0, smcr: 0, tcp: 0, failed: 0, fallbackReasons: {} }, live: new Set(), endpoint: undefined,
});
const live = shared.live;
(shared.linkGroupListers ??= new Set()).add(() => SmcrLinkGroup.list().map(smcrLinkGroupStatus));
/** node:net's own listen: the auto preload makes later listen() calls SMC listeners. */
const plainListen = net.Server.prototype.listen;

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
  /** sk_shutdown as smc_diag reports it: 1 receiving is shut (the peer finished writing), 2 sending. */
  shutdown?: number;
  /** smc_diag_conninfo's fields (smcss -d); SMC-D connections only. */
  conninfo?: ConnInfo;
  /** smcd_diag_dmbinfo's fields (smcss -D); SMC-D connections only. */
  dmbinfo?: DmbInfo;
  /** smc_diag_lgrinfo's fields (smcss -R); SMC-R connections only. */
  lgrinfo?: LgrInfo;
}

export interface DiagCursor { wrap: number; count: number }

/** A connection's cursors, buffer sizes and CDC flags, named and laid out as Linux's smc_diag_conninfo. */
export interface ConnInfo {
  /**
   * Names the connection among this process's, as alert_token_local does in Linux (where the
   * DMB token cannot: a DMB is reused by later connections between the same two devices).
   * A per-process counter, given when smcss first sees the connection.
   */
  token: number;
  /** Ring sizes: the DMBs less their CDC area, as Linux counts them (softrdma writes straight into the peer's DMB, so the send buffer is the peer's ring). */
  sndbufSize: number;
  rmbeSize: number;
  peerRmbeSize: number;
  /** The last CDC the peer wrote: its producer cursor in our DMB, its consumer cursor in its own. */
  rxProd: DiagCursor;
  rxCons: DiagCursor;
  /** The CDC we wrote last: our producer cursor in the peer's DMB, our consumer cursor in ours. */
  txProd: DiagCursor;
  txCons: DiagCursor;
  /** Send buffer cursors: with no separate send buffer, all three are txProd. */
  txPrep: DiagCursor;
  txSent: DiagCursor;
  txFin: DiagCursor;
  /** The CDC flag bytes as Linux reports them (write_blocked 0x80, ...; peer_done_writing 0x80, ...). */
  rxProdFlags: number;
  rxConnStateFlags: number;
  txProdFlags: number;
  txConnStateFlags: number;
  /** The same flags by their Linux names. */
  rxFlags: string[];
  txFlags: string[];
}

/** An SMC-D connection's devices and DMBs, as smcd_diag_dmbinfo; 64-bit values as 16 hex digits. */
export interface DmbInfo {
  gid: string;
  /** The token of our DMB (the peer writes into it). */
  token: string;
  peerGid: string;
  /** The token of the peer's DMB (we write into it). */
  peerToken: string;
  /** Linux's link group id; softrdma has no link groups, so 0. */
  linkId: number;
}

/**
 * An SMC-R connection's link group and link, as smc_diag_lgrinfo (role, the first link's
 * device, port, link id and GIDs), with the link group's ID and both QPNs besides.
 */
export interface LgrInfo {
  role: 'client' | 'server';
  ibDev: string;
  ibPort: number;
  linkId: number;
  /** GIDs as Linux prints them: eight %04x groups. */
  gid: string;
  peerGid: string;
  /** The link group's ID (`softrdma linkgroup`'s LG-ID). */
  lgrId: number;
  qpn: number;
  peerQpn: number;
}

export interface ProcessStatus {
  pid: number;
  argv: string[];
  connections: ConnectionStatus[];
  /** The process's SMC-R link groups and their links (`softrdma linkgroup`); absent from older copies' answers. */
  linkGroups?: SmcrLinkGroupStatus[];
}

/** How the connections of this process settled, since it started (smc_run-style totals). */
export interface SmcTotals {
  smcd: number;
  /** Connections that settled on SMC-R; optional: an older copy may have made the shared totals. */
  smcr?: number;
  tcp: number;
  /** Connections reset because the handshake failed after the point of no return. */
  failed: number;
  /** TCP connections by local fallback reason: an SMC_CLC_DECL_* name, or, where no CLC reason applies, the cause ('policy', 'disabled', 'not an IP connection'). */
  fallbackReasons: Record<string, number>;
}

const totals = shared.totals;

export function countSettled(mode: 'SMCD' | 'SMCR' | 'TCP' | 'failed', reason?: number, cause?: string): void {
  if (mode === 'SMCD') totals.smcd++;
  else if (mode === 'SMCR') totals.smcr = (totals.smcr ?? 0) + 1;
  else if (mode === 'failed') totals.failed++;
  else {
    totals.tcp++;
    const name = reason === undefined ? cause ?? 'unknown' : declineName(reason);
    totals.fallbackReasons[name] = (totals.fallbackReasons[name] ?? 0) + 1;
  }
}

export function smcTotals(): SmcTotals {
  return { ...totals, smcr: totals.smcr ?? 0, fallbackReasons: { ...totals.fallbackReasons } };
}

/** What this process refused to trust, since it started (README, "Security"). */
export interface SmcRefusals {
  /** Failed checks of the runtime directory, its subdirectories and entries, by kind. */
  runtimeDir: Partial<Record<RefusalKind, number>>;
  /** Proposals declined because their GID could not be verified (no live entry, wrong proof). */
  proposals: number;
  /** Handshakes declined because the peer device held its limit of our DMBs. */
  dmbsOverPeerLimit: number;
  /** Doorbell connections closed at once, over the device's cap. */
  doorbellConnections: number;
}

export function smcRefusals(): SmcRefusals {
  const dev = openedIsmDevice();
  return {
    runtimeDir: runtimeDirRefusals(),
    proposals: dev?.stats.proposalsRefused ?? 0,
    dmbsOverPeerLimit: poolStats().refusedOverPeerLimit,
    doorbellConnections: dev?.stats.doorbellRefused ?? 0,
  };
}

export function track(sock: net.Socket): void {
  live.add(sock);
  if (!shared.endpoint) openEndpoint();
}

export function untrack(sock: net.Socket): void {
  live.delete(sock);
}

/**
 * The status socket's file name: one per thread that uses SMC sockets (worker threads have their
 * own), with the pid namespace, so that containers sharing the directory do not take each other's.
 */
function statusSocketName(pid: number, thread: number): string {
  return `${thread === 0 ? pid : `${pid}-${thread}`}.${pidNamespaceTag()}.sock`;
}

/** The pid a status socket's file name belongs to (and its pid namespace), or undefined for another file. */
export function parseStatusSocketName(name: string): { pid: number; pidns: string | undefined } | undefined {
  const m = /^(\d+)(?:-\d+)?(?:\.(\d+|x[0-9a-f]+))?\.sock$/.exec(name);
  return m ? { pid: Number(m[1]), pidns: m[2] } : undefined;
}

/**
 * Remove the status sockets of this pid namespace whose process is gone (kill -9 and signals
 * Node does not handle skip the exit hook that removes them). A pid that runs again (reused)
 * keeps its stale file until that process lists itself: harmless, smcss gets no answer there.
 */
function sweepDeadStatusSockets(dir: string): void {
  if (!pidNamespaceKnown()) return; // pids cannot be judged
  const ns = pidNamespaceTag();
  for (const name of listEntries(dir) ?? []) {
    const n = parseStatusSocketName(name);
    if (!n || n.pidns !== ns || n.pid === process.pid) continue;
    try {
      process.kill(n.pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') removeEntry(`${dir}/${name}`);
    }
  }
}

/**
 * This thread's status socket's file name (in the status directory), opening it if need be;
 * undefined if it cannot be opened. A worker's listener entries name it (discovery.ts).
 */
export function statusSocketAnchor(): string | undefined {
  if (!shared.endpoint?.server) openEndpoint();
  const f = shared.endpoint?.server ? shared.endpoint.file : undefined;
  return f === undefined ? undefined : path.basename(f);
}

interface Endpoint {
  server: net.Server | undefined;
  file: string | undefined;
  /** Checks, with the registry's other entries, that the socket file is still there. */
  kept: boolean;
}

let swept = false;

/** Where this thread's status socket belongs now (the runtime directory may have been made again). */
function statusSocketPath(): string {
  return path.join(subdir('status'), statusSocketName(process.pid, threadId));
}

function openEndpoint(): void {
  const ep: Endpoint = shared.endpoint ?? { server: undefined, file: undefined, kept: false };
  shared.endpoint = ep;
  // Whatever goes wrong below (no runtime directory yet, a listen error), try again later:
  // smcss should find this process once the cause is gone.
  if (!ep.kept) {
    ep.kept = true;
    keepPresent(() => {
      if (ep.server && ep.file && ep.file === statusSocketPath() && fs.existsSync(ep.file)) return;
      // The directory was removed under us, or never made: listen again at the same name.
      forgetDirectories();
      ep.server?.close();
      ep.server = undefined;
      openEndpoint();
    });
  }
  let file: string;
  try {
    const dir = subdir('status');
    file = statusSocketPath();
    if (!swept) {
      swept = true;
      sweepDeadStatusSockets(dir);
    }
  } catch (err) {
    debug('smcss status socket unavailable: %s', (err as Error).message);
    return;
  }
  removeEntry(file); // left by a killed process that had our pid (and thread id)
  const server = net.createServer((c) => {
    c.on('error', () => {});
    c.end(JSON.stringify(processStatus()));
  });
  server.on('error', (err) => {
    // E.g. a path longer than sun_path: smcss cannot list this process, its sockets still work.
    debug('smcss status socket %s: %s', file, err.message);
    if (ep.server === server) ep.server = undefined;
  });
  // exclusive: a cluster worker's listen would otherwise be the primary's (see ism/device.ts).
  (plainListen as (o: net.ListenOptions) => net.Server).call(server, { path: file, exclusive: true });
  server.unref();
  ep.server = server;
  if (ep.file === undefined) process.once('exit', () => { if (ep.file) removeEntry(ep.file); });
  ep.file = file;
}

const PROD_FLAG_NAMES: Array<[number, string]> = [
  [PROD_WRITE_BLOCKED, 'write_blocked'], [PROD_URG_PENDING, 'urg_data_pending'], [PROD_URG_PRESENT, 'urg_data_present'], [PROD_CONS_UPD_REQ, 'cons_curs_upd_req'],
];
const CONN_FLAG_NAMES: Array<[number, string]> = [[CONN_DONE_WRITING, 'peer_done_writing'], [CONN_CLOSED, 'peer_conn_closed'], [CONN_ABORT, 'peer_conn_abort']];

function flagNames(prod: number, conn: number): string[] {
  return [...PROD_FLAG_NAMES.filter(([b]) => prod & b), ...CONN_FLAG_NAMES.filter(([b]) => conn & b)].map(([, n]) => n);
}

const hex64 = (v: bigint) => v.toString(16).padStart(16, '0');

function connectionToken(conn: object): number {
  const tokens = shared.tokens ??= new WeakMap();
  let t = tokens.get(conn);
  if (t === undefined) {
    // Like Linux's, a 32-bit number that is never 0.
    t = shared.lastToken = ((shared.lastToken ?? 0) % 0xffffffff) + 1;
    tokens.set(conn, t);
  }
  return t;
}

type Conn = NonNullable<NonNullable<ReturnType<typeof smcState>>['conn']>;

function connInfo(conn: Conn): ConnInfo {
  const f = conn.diag();
  const c = f.cursors;
  return {
    token: connectionToken(conn),
    sndbufSize: f.sndbufSize, rmbeSize: f.rmbeSize, peerRmbeSize: f.peerRmbeSize,
    rxProd: c.rx, rxCons: c.peerCons, txProd: c.tx, txCons: c.cons, txPrep: c.tx, txSent: c.tx, txFin: c.tx,
    rxProdFlags: f.peerProdFlags, rxConnStateFlags: f.peerConnFlags, txProdFlags: f.prodFlags, txConnStateFlags: f.connFlags,
    rxFlags: flagNames(f.peerProdFlags, f.peerConnFlags), txFlags: flagNames(f.prodFlags, f.connFlags),
  };
}

/**
 * Linux's smc_state names for a half-closed connection (smc_close.c): shutting down our write
 * side first is PEERCLOSEWAIT1 (PEERCLOSEWAIT2 once the peer finished too), the peer finishing
 * first is APPCLOSEWAIT1 (APPFINCLOSEWAIT1 once we finished too); smcss prints them as such.
 */
function smcdState(s: NonNullable<ReturnType<typeof smcState>>): string {
  const peerDone = s.conn?.peerFinished ?? false;
  if (s.writeDone) return peerDone ? (s.writeDoneAfterPeer ? 'APPFINCLOSEWAIT1' : 'PEERCLOSEWAIT2') : 'PEERCLOSEWAIT1';
  return peerDone ? 'APPCLOSEWAIT1' : 'ACTIVE';
}

function describe(sock: net.Socket): ConnectionStatus {
  const s = smcState(sock)!;
  const info = getSmcInfo(sock);
  const st = s.phase === 'smcd' ? smcdState(s) : s.phase === 'tcp' ? 'ACTIVE' : s.phase === 'closed' ? 'CLOSED' : 'INIT';
  const c: ConnectionStatus = {
    state: st, role: s.role,
    localAddress: sock.localAddress ?? '', localPort: sock.localPort ?? 0,
    peerAddress: sock.remoteAddress ?? '', peerPort: sock.remotePort ?? 0,
    mode: info.pending ? 'INIT' : info.mode,
    bytesSent: info.mode !== 'TCP' ? info.smcBytesSent : sock.bytesWritten ?? 0,
    bytesReceived: info.mode !== 'TCP' ? info.smcBytesReceived : sock.bytesRead,
  };
  if (info.fallbackReason !== undefined) c.fallbackReason = declineName(info.fallbackReason);
  if (info.peerDeclineReason !== undefined) c.peerDeclineReason = declineName(info.peerDeclineReason);
  if (info.fallbackCause !== undefined) c.fallbackCause = info.fallbackCause;
  if (s.conn) {
    c.bufferSize = info.bufferSize;
    c.peerBufferSize = info.peerBufferSize;
    c.conninfo = connInfo(s.conn);
    // What Linux's sk_shutdown would say: RCV_SHUTDOWN once the peer finished writing, SEND_SHUTDOWN once we did.
    c.shutdown = (s.conn.peerFinished ? 1 : 0) | (s.writeDone ? 2 : 0);
    const d = s.conn.diag().smcd;
    if (s.device && d) {
      c.dmbinfo = { gid: hex64(s.device.gid), token: hex64(d.token), peerGid: hex64(d.peerGid), peerToken: hex64(d.peerToken), linkId: 0 };
    }
    if (s.conn.mode === 'SMCR') {
      const g = (s.conn as SmcrConnection).lgr;
      c.lgrinfo = {
        role: g.role, ibDev: g.dev.device.name, ibPort: 1, linkId: g.linkNum, gid: gidText(g.link.local.gid), peerGid: gidText(g.link.remote?.gid),
        lgrId: linkGroupId(g), qpn: g.link.local.qpn, peerQpn: g.link.remote?.qpn ?? 0,
      };
    }
  }
  return c;
}

function processStatus(): ProcessStatus {
  const connections: ConnectionStatus[] = [];
  for (const sock of live) {
    if (sock.destroyed) { live.delete(sock); continue; }
    connections.push(describe(sock));
  }
  const linkGroups = [...(shared.linkGroupListers ?? [])].flatMap((list) => list());
  return { pid: process.pid, argv: process.argv.slice(1, 3), connections, linkGroups };
}
