// The per-user directory where softrdma processes of one host find each other: ism devices,
// SMC listeners and per-process connection status. Entries name their owner's pid, start
// time and pid namespace, so entries of dead (or recycled) pids are recognised as stale.
//
// Isolation. Whoever can write into this directory decides whom our clients propose SMC to
// and which ism devices our servers trust, so it is checked as sshd checks ~/.ssh, and used
// so that the check stays true:
// - The directory is opened once with O_DIRECTORY|O_NOFOLLOW (a symlink, planted in /tmp by
//   another user, is refused, whatever it points to) and checked on that descriptor: owner is
//   this user, mode exactly 0700. Every later path goes through /proc/self/fd/<descriptor>,
//   the kernel's name for the directory that was checked (openat() without a native binding),
//   so a name in /tmp that is removed and planted again cannot be swapped in under a check.
//   Subdirectories are checked the same way (lstat: a directory, ours, 0700).
// - Every entry read is opened with O_NOFOLLOW and must be a regular file of this user.
// - A failed check refuses the directory or the entry: SMC falls back to TCP, the refusal is
//   counted by kind (runtimeDirRefusals()) and the first one is reported once per process as
//   a process warning (code SOFTRDMA_RUNTIME_DIR), not through NODE_DEBUG: a refused
//   directory turns SMC off for the whole process, and is either an attack or a
//   misconfiguration the user has to fix (remove the directory), which a debug log that is
//   off by default would hide. --no-warnings silences it.
// Nothing is chmod'ed or chown'ed into shape: a directory that is not as we would have made
// it may already hold what someone else put there.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SoftrdmaError } from '../abi/errors.js';

const { O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

/** What a refused check found. */
export type RefusalKind = 'symlink' | 'not a directory' | 'owner' | 'mode' | 'entry owner' | 'entry not a file';

export class RuntimeDirError extends SoftrdmaError {
  constructor(readonly kind: RefusalKind, message: string) {
    super('ERR_SOFTRDMA_RUNTIME_DIR', message);
    this.name = 'RuntimeDirError';
  }
}

const refusals: Partial<Record<RefusalKind, number>> = {};
let warned = false;

/** How many checks of the runtime directory and its entries failed, by kind, since the process started. */
export function runtimeDirRefusals(): Partial<Record<RefusalKind, number>> {
  return { ...refusals };
}

/** A path as the user knows it: the directory's name instead of /proc/self/fd/<n>. */
function shown(p: string): string {
  return held && p.startsWith(`${held.path}/`) ? held.name + p.slice(held.path.length) : p;
}

function refuse(kind: RefusalKind, message: string): RuntimeDirError {
  refusals[kind] = (refusals[kind] ?? 0) + 1;
  const err = new RuntimeDirError(kind, message);
  if (!warned) {
    warned = true;
    process.emitWarning(`${message}; SMC connections of this process use TCP while this holds (this warning is given once)`, { code: 'SOFTRDMA_RUNTIME_DIR' });
  }
  return err;
}

function uid(): number {
  return process.geteuid?.() ?? 0;
}

/**
 * $SOFTRDMA_RUNTIME_DIR, else $XDG_RUNTIME_DIR/softrdma, else /run/user/<uid>/softrdma when the
 * user's runtime directory exists (a service or cron job without $XDG_RUNTIME_DIR then meets the
 * user's other processes there), else <tmpdir>/softrdma-<uid>. The last is a name any user can
 * take first in a shared /tmp: that refuses the directory (it is not ours), so SMC turns off for
 * this user (fails closed; docs/security.md).
 */
export function runtimeDirName(): string {
  if (process.env.SOFTRDMA_RUNTIME_DIR) return process.env.SOFTRDMA_RUNTIME_DIR;
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'softrdma');
  // Decided once per process: a process must not move to another directory when logind makes
  // or removes /run/user/<uid> (at a first login, a last logout) under it; its entries and its
  // status sockets would be split over two directories.
  userRunDir ??= isOwnPrivateDir(`/run/user/${uid()}`) ? path.join(`/run/user/${uid()}`, 'softrdma') : '';
  return userRunDir || path.join(os.tmpdir(), `softrdma-${process.getuid?.() ?? 0}`);
}

let userRunDir: string | undefined;

/** A real directory (not a link) of this user, mode 0700: what systemd-logind makes /run/user/<uid>. */
function isOwnPrivateDir(p: string): boolean {
  try {
    const st = fs.lstatSync(p);
    return st.isDirectory() && st.uid === uid() && (st.mode & 0o777) === 0o700;
  } catch {
    return false;
  }
}

interface Held {
  name: string;
  fd: number;
  dev: number;
  ino: number;
  /** /proc/self/fd/<fd>: the checked directory, whatever its name in the file system now points to. */
  path: string;
}

let held: Held | undefined;
let verified = false;
/**
 * Descriptors of directories we used before (removed under us, or another $SOFTRDMA_RUNTIME_DIR).
 * They are never closed: libuv unlinks a Unix socket's bound path when the socket closes, and
 * a path through a descriptor number that was closed and reused would name another directory.
 * One per directory that was removed and made again: few.
 */
const retired: number[] = [];

/**
 * The runtime directory, made (mode 0700) if missing and checked as above; the returned path
 * (/proc/self/fd/<n>) is only meaningful inside this process. Throws RuntimeDirError when the
 * directory is refused.
 */
export function runtimeDir(): string {
  const name = runtimeDirName();
  if (held && verified && held.name === name) return held.path;
  return openRuntimeDir(name);
}

function openRuntimeDir(name: string): string {
  fs.mkdirSync(path.dirname(name), { recursive: true, mode: 0o700 });
  try {
    fs.mkdirSync(name, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  let fd: number;
  try {
    fd = fs.openSync(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP): tell which it was.
    let link = code === 'ELOOP';
    try { link = fs.lstatSync(name).isSymbolicLink(); } catch { /* gone meanwhile */ }
    throw link ? refuse('symlink', `${name} is a symbolic link`) : refuse('not a directory', `${name} is not a directory`);
  }
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    checkDir(name, st, '');
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (held && held.dev === st.dev && held.ino === st.ino) {
    // The same directory (forgetDirectories() after a spurious miss): keep its descriptor.
    fs.closeSync(fd);
    held.name = name;
  } else {
    if (held) retired.push(held.fd);
    held = { name, fd, dev: st.dev, ino: st.ino, path: `/proc/self/fd/${fd}` };
    made.clear();
  }
  verified = true;
  return held.path;
}

function checkDir(name: string, st: fs.Stats, what: string): void {
  if (st.isSymbolicLink()) throw refuse('symlink', `${name}${what} is a symbolic link`);
  if (!st.isDirectory()) throw refuse('not a directory', `${name}${what} is not a directory`);
  if (st.uid !== uid()) throw refuse('owner', `${name}${what} belongs to uid ${st.uid}, not to this user (uid ${uid()})`);
  if ((st.mode & 0o777) !== 0o700) throw refuse('mode', `${name}${what} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, not 0700`);
}

const made = new Set<string>();
/** A directory under runtimeDir(), created (0700) on first use and checked (callers sit on connection paths). */
export function subdir(name: string): string {
  const root = runtimeDir();
  const d = `${root}/${name}`;
  if (made.has(name)) return d;
  try {
    fs.mkdirSync(d, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  checkDir(held!.name, fs.lstatSync(d), `/${name}`);
  made.add(name);
  return d;
}

/** The path of an entry as of now (the directory may have been made again since last time). */
export function entryPath(dir: string, name: string): string {
  return `${subdir(dir)}/${name}`;
}

/**
 * Where an entry is in the directory this process has open, without making or checking
 * anything (for removing entries, also at exit); undefined if none was ever opened. If that
 * directory was removed meanwhile, the path names nothing, as the entry is gone too.
 */
export function openEntryPath(dir: string, name: string): string | undefined {
  return held ? `${held.path}/${dir}/${name}` : undefined;
}

/**
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces and
 * parentheses): index 0 is field 3 (state), index i is field i + 3. Throws if there is no
 * such process.
 */
export function procStatFields(pid: number, tid?: number): string[] {
  // With a thread id: that thread's own line (/proc/<pid>/task/<tid>/stat), the same fields.
  return statFields(fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'latin1'));
}

/** The fields of a /proc/<pid>/stat line after the command name (which may hold spaces): the state (field 3) first. */
export function statFields(line: string): string[] {
  return line.slice(line.lastIndexOf(')') + 2).split(' ');
}

/** Whether stat fields (statFields) are of the process that started at `start`, and running: a zombie (Z) or dead (X) one is not. */
export function statRunning(f: string[], start: string): boolean {
  return f[19] === start && f[0] !== 'Z' && f[0] !== 'X';
}

/** Field 22 of /proc/<pid>/stat (of a thread's, with tid): the start time, which tells a live pid (or tid) from a recycled one. */
export function processStartTime(pid: number, tid?: number): string | undefined {
  try {
    return procStatFields(pid, tid)[19];
  } catch {
    return undefined;
  }
}

let selfStart: string | undefined;
export function selfStartTime(): string {
  selfStart ??= processStartTime(process.pid) ?? '0';
  return selfStart;
}

/** The process with this pid and start time runs (a zombie does not: it has exited, unreaped); with tid, that thread of it. */
export function isAlive(pid: number, start: string, tid?: number): boolean {
  try {
    return statRunning(procStatFields(pid, tid), start);
  } catch {
    return false;
  }
}

function nsLink(kind: string): string {
  try { return fs.readlinkSync(`/proc/self/ns/${kind}`); } catch { return 'unknown'; }
}

let netns: string | undefined;
/** The network namespace: loopback addresses and ports only mean the same thing inside one. */
export function netNamespace(): string {
  netns ??= nsLink('net');
  return netns;
}

let pidns: string | undefined;
/** The pid namespace: a pid (and /proc/<pid>) only means the same process inside one. */
export function pidNamespace(): string {
  pidns ??= nsLink('pid');
  return pidns;
}

/**
 * The pid namespace's inode number, for file names that hold a pid: two containers sharing the
 * directory can have the same pid, and must not take each other's names. Where /proc does not
 * say, a random name of this process's own (so it takes no other process's names either).
 */
export function pidNamespaceTag(): string {
  pidnsTag ??= /\[(\d+)\]/.exec(pidNamespace())?.[1] ?? `x${randomBytes(6).toString('hex')}`;
  return pidnsTag;
}

let pidnsTag: string | undefined;

/** Whether this process knows its pid namespace (pidNamespaceTag is its inode number, not a random name). */
export function pidNamespaceKnown(): boolean {
  return /^\d+$/.test(pidNamespaceTag());
}

/** What every entry records about the process that wrote it. */
export interface ProcessStamp {
  pid: number;
  start: string;
  pidns?: string;
}

export function selfStamp(): Required<ProcessStamp> {
  return { pid: process.pid, start: selfStartTime(), pidns: pidNamespace() };
}

/**
 * Is the process that wrote an entry alive: true, false, or undefined when this process
 * cannot tell (the entry comes from another pid namespace, e.g. a container that shares /tmp,
 * or names none). Only a definite false allows removing someone else's entry.
 */
export function liveness(e: ProcessStamp): boolean | undefined {
  const mine = pidNamespace();
  if (e.pidns === undefined || e.pidns !== mine || mine === 'unknown') return undefined;
  return isAlive(e.pid, e.start);
}

/**
 * Forget which directories were checked: someone removed them under us (a tmp cleaner,
 * rm -rf). The next runtimeDir()/subdir() opens and checks them again.
 */
export function forgetDirectories(): void {
  verified = false;
  made.clear();
}

/**
 * Write a small JSON entry atomically (rename), owner-only, as dir/name. If the directory was
 * removed meanwhile, it is made again (checked, as at first use) and the write retried once.
 */
export function writeEntry(dir: string, name: string, value: unknown): void {
  const data = JSON.stringify(value);
  const write = () => {
    const d = subdir(dir);
    const tmp = `${d}/${name}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600);
    try { fs.writeFileSync(fd, data); } finally { fs.closeSync(fd); }
    fs.renameSync(tmp, `${d}/${name}`);
  };
  try {
    write();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    forgetDirectories();
    write();
  }
}

/** Write an entry again if it is gone (its directory removed under a live process). */
export function restoreEntry(dir: string, name: string, value: unknown): void {
  let present = false;
  try { present = fs.existsSync(entryPath(dir, name)); } catch { present = false; }
  if (!present) writeEntry(dir, name, value);
}

/** How often what a live process keeps in the runtime directory is checked (a tmp cleaner may remove it). */
const KEEP_MS = 2000;
const keepers = new Set<() => void>();
let keepTimer: NodeJS.Timeout | undefined;

/**
 * Run check every 2 s until the returned function is called: every listener entry and the
 * status socket of a thread share one unref'd timer instead of a timer each. A check that
 * throws is tried again on the next round.
 */
export function keepPresent(check: () => void): () => void {
  keepers.add(check);
  keepTimer ??= setInterval(runKeepers, KEEP_MS).unref();
  return () => {
    keepers.delete(check);
    if (keepers.size === 0 && keepTimer) {
      clearInterval(keepTimer);
      keepTimer = undefined;
    }
  };
}

function runKeepers(): void {
  for (const check of keepers) {
    try { check(); } catch { /* the next round tries again */ }
  }
}

/** The names in a subdirectory; undefined if it is gone (it is made again on the next write). */
export function listEntries(dir: string): string[] | undefined {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    forgetDirectories();
    return undefined;
  }
}

/**
 * An entry's JSON, if it is a regular file of this user (opened without following a link;
 * anything else is refused and counted); undefined if it is missing or unreadable.
 */
export function readEntry<T>(file: string): T | undefined {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO put there must not block the event loop (it is refused below).
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') refuse('entry not a file', `${shown(file)} is a symbolic link`);
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) { refuse('entry not a file', `${shown(file)} is not a regular file`); return undefined; }
    if (st.uid !== uid()) { refuse('entry owner', `${shown(file)} belongs to uid ${st.uid}, not to this user (uid ${uid()})`); return undefined; }
    return JSON.parse(fs.readFileSync(fd, 'utf8')) as T;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

export function removeEntry(file: string): void {
  try { fs.unlinkSync(file); } catch { /* already gone */ }
}
