// The libc calls Node lacks for shared memory: memfd_create, mmap/munmap and the memfd seals;
// mallopt, for the receive path's heap (see keepFreedHeap); sched_yield, for pollers; gettid,
// which names the thread that owns an ism device. Everything else (open, fstat, readlink,
// close) goes through node:fs.

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
  mmap(addr: unknown, len: number, prot: number, flags: number, fd: number, off: number): unknown;
  munmap(addr: unknown, len: number): number;
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
    mmap: so.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as Libc['mmap'],
    munmap: so.func('int munmap(void *addr, size_t len)') as Libc['munmap'],
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

export function memfdCreate(name: string): number {
  const fd = libc().memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) fail('memfd_create', name);
  return fd;
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
  return { pointer: ptr, length, buffer: koffi.view(ptr, length) as ArrayBuffer };
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
