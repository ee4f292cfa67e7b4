// The libc calls Node lacks for shared memory: memfd_create, mmap/munmap and the memfd seals.
// Everything else (open, fstat, readlink, close) goes through node:fs.

import koffi from 'koffi';

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;

interface Libc {
  memfdCreate(name: string, flags: number): number;
  mmap(addr: null, len: number, prot: number, flags: number, fd: number, off: number): unknown;
  munmap(addr: unknown, len: number): number;
  fcntl(fd: number, cmd: number, ...rest: unknown[]): number;
  errno(): number;
}

let lib: Libc | undefined;

function libc(): Libc {
  if (lib) return lib;
  const so = koffi.load('libc.so.6');
  const errnoLocation = so.func('int *__errno_location(void)');
  lib = {
    memfdCreate: so.func('int memfd_create(const char *name, unsigned int flags)') as Libc['memfdCreate'],
    mmap: so.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as Libc['mmap'],
    munmap: so.func('int munmap(void *addr, size_t len)') as Libc['munmap'],
    fcntl: so.func('int fcntl(int fd, int cmd, ...)') as Libc['fcntl'],
    errno: () => koffi.decode(errnoLocation(), 'int') as number,
  };
  return lib;
}

/** An Error carrying an errno-style code, like node's own system errors. */
export class SystemError extends Error {
  constructor(readonly code: string, readonly syscall: string, detail?: string) {
    super(`${syscall} failed: ${code}${detail ? ` (${detail})` : ''}`);
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
}

export function mapShared(fd: number, length: number): Mapping {
  const ptr = libc().mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (koffi.address(ptr) === 0xffffffffffffffffn) fail('mmap', `${length} bytes`);
  return { pointer: ptr, length, buffer: koffi.view(ptr, length) as ArrayBuffer };
}

export function unmap(m: Mapping): void {
  libc().munmap(m.pointer, m.length);
}
