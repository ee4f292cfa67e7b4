// The per-user directory where softrdma processes of one host find each other: ism devices,
// SMC listeners and per-process connection status. Entries name their owner's pid and start
// time, so entries of dead (or recycled) pids are recognised as stale and ignored.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

let cached: string | undefined;

/** $SOFTRDMA_RUNTIME_DIR, else $XDG_RUNTIME_DIR/softrdma, else <tmpdir>/softrdma-<uid>; mode 0700. */
export function runtimeDir(): string {
  const wanted = process.env.SOFTRDMA_RUNTIME_DIR
    ?? (process.env.XDG_RUNTIME_DIR ? path.join(process.env.XDG_RUNTIME_DIR, 'softrdma')
      : path.join(os.tmpdir(), `softrdma-${process.getuid?.() ?? 0}`));
  if (cached === wanted) return cached;
  fs.mkdirSync(wanted, { recursive: true, mode: 0o700 });
  const st = fs.statSync(wanted);
  // Another user's directory would let them plant entries we then trust.
  if (process.getuid && st.uid !== process.getuid()) throw new Error(`${wanted} belongs to uid ${st.uid}`);
  if ((st.mode & 0o077) !== 0) fs.chmodSync(wanted, 0o700);
  cached = wanted;
  return wanted;
}

const made = new Set<string>();
/** A directory under runtimeDir(), created on first use (callers sit on connection paths). */
export function subdir(name: string): string {
  const d = path.join(runtimeDir(), name);
  if (!made.has(d)) {
    fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    made.add(d);
  }
  return d;
}

/**
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces and
 * parentheses): index 0 is field 3 (state), index i is field i + 3. Throws if there is no
 * such process.
 */
export function procStatFields(pid: number): string[] {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Field 22 of /proc/<pid>/stat: the start time, which tells a live pid from a recycled one. */
export function processStartTime(pid: number): string | undefined {
  try {
    return procStatFields(pid)[19];
  } catch {
    return undefined;
  }
}

let selfStart: string | undefined;
export function selfStartTime(): string {
  selfStart ??= processStartTime(process.pid) ?? '0';
  return selfStart;
}

export function isAlive(pid: number, start: string): boolean {
  return processStartTime(pid) === start;
}

let netns: string | undefined;
/** The network namespace: loopback addresses and ports only mean the same thing inside one. */
export function netNamespace(): string {
  if (netns === undefined) {
    try { netns = fs.readlinkSync('/proc/self/ns/net'); } catch { netns = 'unknown'; }
  }
  return netns;
}

/**
 * Forget which directories exist: someone removed them under us (a tmp cleaner, rm -rf).
 * The next runtimeDir()/subdir() creates and checks them again.
 */
export function forgetDirectories(): void {
  cached = undefined;
  made.clear();
}

/**
 * Write a small JSON file atomically (rename), owner-only. If its directory was removed
 * meanwhile, it is made again (owner-checked, as at first use) and the write retried once.
 */
export function writeEntry(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const data = JSON.stringify(value);
  try {
    fs.writeFileSync(tmp, data, { mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    forgetDirectories();
    runtimeDir();
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(tmp, data, { mode: 0o600 });
  }
  fs.renameSync(tmp, file);
}

/** Write an entry again if it is gone (its directory removed under a live process). */
export function restoreEntry(file: string, value: unknown): void {
  if (!fs.existsSync(file)) writeEntry(file, value);
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

export function readEntry<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function removeEntry(file: string): void {
  try { fs.unlinkSync(file); } catch { /* already gone */ }
}
