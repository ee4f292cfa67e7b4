// The libc calls Node lacks for shared memory: memfd_create, mmap/munmap and the memfd seals;
// mallopt, for the receive path's heap (see keepFreedHeap); sched_yield, for pollers; gettid,
// which names the thread that owns an ism device. Everything else (open, fstat, readlink,
// close) goes through node:fs: the one descriptor a libc call makes (memfd_create's) is
// reopened through node:fs and closed at once (memfdCreate).

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';
import { SoftrdmaError } from '../abi/errors.js';
import { libcLibrary } from '../sys/libc.js';

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;

interface Libc {
  memfdCreate(name: string, flags: number): number;
  close(fd: number): number;
  mmap(addr: unknown, len: number, prot: number, flags: number, fd: number, off: number): unknown;
  munmap(addr: unknown, len: number): number;
  /** munmap of an address the reaper read from a ledger (a number, not a pointer of ours). */
  munmapAt(addr: bigint, len: number): number;
  pageSize(): number;
  fcntl(fd: number, cmd: number, ...rest: unknown[]): number;
  mallopt?: (param: number, value: number) => number;
  schedYield: () => number;
  gettid?: () => number;
  errno(): number;
}

let lib: Libc | undefined;

function libc(): Libc {
  if (lib) return lib;
  const so = libcLibrary();
  const errnoLocation = so.func('int *__errno_location(void)');
  lib = {
    memfdCreate: so.func('int memfd_create(const char *name, unsigned int flags)') as Libc['memfdCreate'],
    close: so.func('int close(int fd)') as Libc['close'],
    mmap: so.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as Libc['mmap'],
    munmap: so.func('int munmap(void *addr, size_t len)') as Libc['munmap'],
    munmapAt: so.func('munmap', 'int', ['uint64_t', 'size_t']) as Libc['munmapAt'],
    pageSize: ((sysconf: (n: number) => number) => () => sysconf(30 /* _SC_PAGESIZE */))(so.func('long sysconf(int name)') as (n: number) => number),
    fcntl: so.func('int fcntl(int fd, int cmd, ...)') as Libc['fcntl'],
    errno: () => koffi.decode(errnoLocation(), 'int') as number,
    schedYield: so.func('int sched_yield(void)') as Libc['schedYield'],
  };
  try {
    lib.mallopt = so.func('int mallopt(int param, int value)') as Libc['mallopt'];
  } catch {
    // Not glibc: nothing to tune.
  }
  try {
    lib.gettid = so.func('int gettid(void)') as Libc['gettid'];
  } catch {
    // glibc before 2.30: threads are not told apart (see kernelThreadId).
  }
  return lib;
}

/** An Error carrying an errno-style code, like node's own system errors. */
export class SystemError extends SoftrdmaError {
  constructor(code: string, readonly syscall: string, detail?: string) {
    super(code, `${syscall} failed: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'SystemError';
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 9: 'EBADF', 12: 'ENOMEM', 13: 'EACCES', 22: 'EINVAL', 23: 'ENFILE',
  24: 'EMFILE', 28: 'ENOSPC', 38: 'ENOSYS',
};

function fail(syscall: string, detail?: string): never {
  const n = libc().errno();
  throw new SystemError(ERRNO_NAMES[n] ?? `E${n}`, syscall, detail);
}

/**
 * A new memfd (close-on-exec, sealable), as a descriptor node:fs opened: memfd_create's own
 * is reopened through /proc/self/fd (read-write: the same file, its name and seals included)
 * and closed. In a worker thread node tracks the descriptors that fs.openSync opened
 * (trackUnmanagedFds) and closes them when the thread ends, terminate() included; one made
 * by a libc call behind its back would leak then, and fs.closeSync of it warns ("closed but
 * not opened in unmanaged mode").
 */
export function memfdCreate(name: string): number {
  const c = libc();
  const raw = c.memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (raw < 0) fail('memfd_create', name);
  try {
    return fs.openSync(`/proc/self/fd/${raw}`, 'r+'); // libuv adds O_CLOEXEC
  } finally {
    c.close(raw);
  }
}

/** Forbid resizing: a peer that maps the file can then never be hit by SIGBUS. */
export function sealSize(fd: number): void {
  if (libc().fcntl(fd, F_ADD_SEALS, 'int', F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) fail('fcntl(F_ADD_SEALS)');
}

export function seals(fd: number): number {
  const s = libc().fcntl(fd, F_GET_SEALS, 'int', 0);
  if (s < 0) fail('fcntl(F_GET_SEALS)');
  return s;
}

export interface Mapping {
  readonly pointer: unknown;
  readonly length: number;
  readonly buffer: ArrayBuffer;
  /**
   * A view of the memory was handed to code outside softrdma (a Dmb's or RemoteDmb's
   * `bytes`), which may keep it after the memory is released: releaseMapping then leaves
   * zeroed private memory in its place instead of a hole.
   */
  exposed?: boolean;
}

export function mapShared(fd: number, length: number): Mapping {
  const ptr = libc().mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (koffi.address(ptr) === 0xffffffffffffffffn) fail('mmap', `${length} bytes`);
  const m: Mapping = { pointer: ptr, length, buffer: koffi.view(ptr, length) as ArrayBuffer };
  if (!isMainThread) ledgerRecord(m, fd);
  return m;
}

/** Placeholders left by releaseMapping: unmapped once no view of them can be reached. */
const unmapWhenCollected = new FinalizationRegistry<{ pointer: unknown; length: number }>((m) => {
  libc().munmap(m.pointer, m.length);
  placeholders--;
});
const releasedMappings = new WeakSet<Mapping>();
let placeholders = 0;

/** @internal (tests) Placeholders of this thread not unmapped yet. */
export function placeholderCount(): number {
  return placeholders;
}

/**
 * Give a mapping's memory back (once; later calls do nothing). A typed array made over the
 * mapping (koffi.view) is not told when the memory goes, so munmap would turn a view that
 * someone kept into a SIGSEGV at its next access. A mapping whose views stayed within
 * softrdma (whose owners drop them first) is unmapped. An exposed one is replaced, in one
 * mmap (MAP_FIXED), by private anonymous memory: the shared pages are no longer referenced
 * from here (the peer's memfd is freed once its last mapping goes), a stale view reads zeros
 * and its writes land in memory of its own; the placeholder is unmapped once its ArrayBuffer
 * has been garbage collected (a worker thread that ends before that leaves it reserved,
 * without memory, for the process's life). If even that mmap fails, the shared mapping stays
 * until then.
 */
export function releaseMapping(m: Mapping): void {
  if (releasedMappings.has(m)) return;
  releasedMappings.add(m);
  const c = libc();
  // Out of the ledger first: a range the ledger names is always this mapping.
  ledgerClear(m);
  if (!m.exposed) {
    c.munmap(m.pointer, m.length);
    return;
  }
  c.mmap(m.pointer, m.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  unmapWhenCollected.register(m.buffer, { pointer: m.pointer, length: m.length });
  placeholders++;
}

/** The calling thread's kernel thread id, or undefined where libc lacks gettid. */
export function kernelThreadId(): number | undefined {
  return libc().gettid?.();
}

const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;
let heapTuned: boolean | undefined;

/**
 * Keep freed heap memory for reuse instead of handing it back to the kernel at once.
 *
 * An SMC-D receiver copies the ring into a fresh Buffer per slice, and the garbage
 * collector frees those in batches. With glibc's defaults the freed top of the heap (anything
 * over 128 KiB) is returned with sbrk and the next slices fault the pages back in, zeroed by
 * the kernel: measured here, that cost more than the copy itself and halved the receive rate.
 * The trim threshold covers one garbage collection's batch (V8 collects when external memory
 * has grown by about 64 MiB). Setting it turns off glibc's dynamic mmap threshold, so that one
 * is set as well, to a value the dynamic scheme also reaches, and large Buffers keep coming
 * from the heap. Process-wide and once; SOFTRDMA_SMC_HEAP_TUNE=0 turns it off. Returns
 * whether it applied.
 */
export function keepFreedHeap(): boolean {
  if (heapTuned !== undefined) return heapTuned;
  heapTuned = false;
  if (process.env.SOFTRDMA_SMC_HEAP_TUNE === '0') return false;
  const set = libc().mallopt;
  if (!set) return false;
  heapTuned = set(M_MMAP_THRESHOLD, 16 << 20) === 1 && set(M_TRIM_THRESHOLD, 64 << 20) === 1;
  return heapTuned;
}

/** Let another runnable thread on this CPU go first (a poller that found nothing to do). */
export function schedYield(): void {
  libc().schedYield();
}

// The mapping ledger of a worker thread. worker.terminate() runs none of the thread's exit
// hooks, and the memory it mapped (its device page and DMBs, the peers' pages and DMBs it
// attached) stays mapped in the process: node closes the thread's descriptors, not its
// mappings. So each worker thread that maps shared memory keeps a ledger: a memfd of its own,
// named softrdma-ledger-<tid>-<random>, made by libc (node does not track it, so it outlives
// the thread) and mapped here, with a record (address, length, inode) of every mapping made
// by mapShared, cleared before the mapping goes. reapDeadThreadMappings, run in another
// thread once a worker has ended (and at each device open), finds the ledgers of threads that
// no longer run and unmaps what they name: only ranges that /proc/self/maps shows exactly as
// recorded (same start and end, shared, the same memfd inode, a memfd of softrdma's); anything
// else is left alone.

const LEDGER_MAGIC = 0x4752444cn; // 'LDGR'
/** Header: magic u64, claimed i32 (a reaper took it) + pad, the ledger's own mapping (address, length, inode), slots used u64. */
const LEDGER_HEADER = 64;
const LEDGER_SLOT = 32;
const LEDGER_SLOTS = 65536;
const LEDGER_SIZE = LEDGER_HEADER + LEDGER_SLOTS * LEDGER_SLOT;
const LEDGER_NAME = /^\/memfd:softrdma-ledger-(\d+)-[0-9a-f]{16} \(deleted\)$/;

interface Ledger {
  fd: number;
  pointer: unknown;
  words: BigUint64Array;
  free: number[];
  next: number;
  /** Slots in use. */
  live: number;
  slots: WeakMap<Mapping, number>;
}

/** This worker thread's ledger; null once making one failed (its mappings then go unrecorded). */
let ledger: Ledger | null | undefined;

function ownLedger(): Ledger | null {
  if (ledger !== undefined) return ledger;
  ledger = null;
  const c = libc();
  const tid = c.gettid?.();
  if (tid === undefined) return null;
  const raw = c.memfdCreate(`softrdma-ledger-${tid}-${randomBytes(8).toString('hex')}`, MFD_CLOEXEC);
  if (raw < 0) return null;
  try {
    fs.ftruncateSync(raw, LEDGER_SIZE);
    const ptr = c.mmap(null, LEDGER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0);
    if (koffi.address(ptr) === 0xffffffffffffffffn) throw new Error('mmap');
    const words = new BigUint64Array(koffi.view(ptr, LEDGER_SIZE) as ArrayBuffer);
    words[2] = koffi.address(ptr);
    words[3] = BigInt(LEDGER_SIZE);
    words[4] = BigInt(fs.fstatSync(raw, { bigint: true }).ino);
    words[0] = LEDGER_MAGIC;
    ledger = { fd: raw, pointer: ptr, words, free: [], next: 0, live: 0, slots: new WeakMap() };
  } catch {
    c.close(raw);
  }
  return ledger;
}

function ledgerRecord(m: Mapping, fd: number): void {
  const l = ownLedger();
  if (!l) return;
  let slot = l.free.pop();
  if (slot === undefined) {
    if (l.next >= LEDGER_SLOTS) return; // full: this mapping is not reaped after a terminate
    slot = l.next++;
    l.words[5] = BigInt(l.next); // the slots in use lie below: a reaper looks no further
  }
  let ino: bigint;
  try {
    ino = fs.fstatSync(fd, { bigint: true }).ino;
  } catch {
    l.free.push(slot);
    return;
  }
  const w = (LEDGER_HEADER + slot * LEDGER_SLOT) / 8;
  l.words[w + 1] = BigInt(m.length);
  l.words[w + 2] = ino;
  l.words[w] = koffi.address(m.pointer); // last: a slot with an address is complete
  l.slots.set(m, slot);
  l.live++;
}

function ledgerClear(m: Mapping): void {
  const l = ledger;
  const slot = l ? l.slots.get(m) : undefined;
  if (!l || slot === undefined) return;
  l.slots.delete(m);
  l.words[(LEDGER_HEADER + slot * LEDGER_SLOT) / 8] = 0n;
  l.free.push(slot);
  l.live--;
}

/**
 * Give this thread's ledger back if it records nothing (its devices closed, a worker thread
 * exiting normally): nothing is left for a reaper, and a thread that ends so leaves neither
 * the ledger's descriptor nor its mapping behind. A later mapping makes a new one.
 */
export function releaseLedgerIfEmpty(): void {
  const l = ledger;
  if (!l || l.live > 0) return;
  ledger = undefined;
  const c = libc();
  c.munmap(l.pointer, LEDGER_SIZE);
  c.close(l.fd);
}

/** /proc/self/maps as { start, end, shared, inode, name } per mapping. */
function processMaps(): Array<{ start: bigint; end: bigint; shared: boolean; inode: bigint; name: string }> {
  const out = [];
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ \S+ (\d+) +(.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), shared: m[3]![3] === 's', inode: BigInt(m[4]!), name: m[5]! });
  }
  return out;
}

/**
 * Unmap what worker threads that ended without releasing it (worker.terminate()) left mapped,
 * as their ledgers record it, and close the ledgers. A ledger counts as dead when its thread
 * id is not in /proc/self/task; each recorded range is unmapped only if /proc/self/maps has a
 * mapping of exactly that range, shared, of the recorded inode, named as softrdma's memfds
 * are. Returns the number of ranges unmapped. Never throws.
 */
export function reapDeadThreadMappings(): number {
  let reaped = 0;
  let fds: string[];
  try {
    fds = fs.readdirSync('/proc/self/fd');
  } catch {
    return 0;
  }
  for (const name of fds) {
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue;
    }
    const tid = LEDGER_NAME.exec(link)?.[1];
    if (tid === undefined || fs.existsSync(`/proc/self/task/${tid}`)) continue;
    try {
      reaped += reapLedger(Number(name), link);
    } catch {
      // Gone meanwhile (another thread reaped it), or unreadable: left as it is.
    }
  }
  return reaped;
}

/** O_PATH (Linux): a descriptor that names a file without opening it. */
const O_PATH = 0o10000000;

/**
 * Open read-write the file a /proc/<pid>/fd/<n> link names, only once it is checked: the
 * number may name anything (closed and reused meanwhile, or another process's terminal or
 * device), and opening some files has side effects. So an O_PATH descriptor first (it opens
 * nothing), its link compared with `link` and its type a regular file, and only then that very
 * file opened (O_NOCTTY, O_NONBLOCK should it be anything else). Returns the descriptor, or
 * what the link named instead; system call failures throw.
 */
export function openProcFdChecked(procFd: string, link: string): { fd: number } | { named: string; notFile?: true } {
  const { O_RDWR, O_NOCTTY, O_NONBLOCK } = fs.constants;
  const path = fs.openSync(procFd, O_PATH /* libuv adds O_CLOEXEC */);
  try {
    const named = fs.readlinkSync(`/proc/self/fd/${path}`);
    if (named !== link) return { named };
    if (!fs.fstatSync(path).isFile()) return { named, notFile: true };
    return { fd: fs.openSync(`/proc/self/fd/${path}`, O_RDWR | O_NOCTTY | O_NONBLOCK) };
  } finally {
    fs.closeSync(path);
  }
}

function reapLedger(raw: number, link: string): number {
  const c = libc();
  // A descriptor of our own for the ledger, checked to be the same file the number named: the
  // number may be closed and reused meanwhile (by a reaper in another thread) for anything.
  const opened = openProcFdChecked(`/proc/self/fd/${raw}`, link);
  if (!('fd' in opened)) return 0;
  const own = opened.fd;
  let ptr: unknown;
  try {
    const st = fs.fstatSync(own, { bigint: true });
    if (!st.isFile() || st.size !== BigInt(LEDGER_SIZE)) return 0;
    ptr = c.mmap(null, LEDGER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
    if (koffi.address(ptr) === 0xffffffffffffffffn) { ptr = undefined; return 0; }
    const buf = koffi.view(ptr, LEDGER_SIZE) as ArrayBuffer;
    const words = new BigUint64Array(buf);
    // One reaper per ledger, whichever thread gets there first.
    if (words[0] !== LEDGER_MAGIC || Atomics.compareExchange(new Int32Array(buf), 2, 0, 1) !== 0) return 0;
    const page = BigInt(c.pageSize());
    const maps = processMaps();
    const unmap = (addr: bigint, length: bigint, ino: bigint, ledgerItself: boolean): boolean => {
      if (addr === 0n || length === 0n || addr % page !== 0n) return false;
      const end = addr + ((length + page - 1n) / page) * page;
      const m = maps.find((x) => x.start === addr);
      if (!m || m.end !== end || !m.shared || m.inode !== ino) return false;
      if (ledgerItself ? m.name !== link : !m.name.startsWith('/memfd:softrdma-')) return false;
      return c.munmapAt(addr, Number(end - addr)) === 0;
    };
    let n = 0;
    const used = words[5]! < BigInt(LEDGER_SLOTS) ? Number(words[5]) : LEDGER_SLOTS;
    for (let slot = 0; slot < used; slot++) {
      const w = (LEDGER_HEADER + slot * LEDGER_SLOT) / 8;
      const addr = words[w]!;
      if (addr === 0n) continue;
      if (unmap(addr, words[w + 1]!, words[w + 2]!, false)) n++;
      words[w] = 0n;
    }
    // The dead thread's own mapping of the ledger, then the ledger's descriptor, once checked
    // to be the same file as ours.
    if (unmap(words[2]!, words[3]!, words[4]!, true)) n++;
    const rawSt = fs.fstatSync(raw, { bigint: true });
    if (rawSt.ino === st.ino && rawSt.dev === st.dev) c.close(raw);
    return n;
  } finally {
    if (ptr !== undefined) c.munmap(ptr, LEDGER_SIZE);
    fs.closeSync(own);
  }
}
