// The SMC TCP option for user space: a BPF_PROG_TYPE_SOCK_OPS program, attached to a cgroup v2
// directory, that puts Linux's SMC experimental option (kind 254, length 6, magic E2 D4 C3 D9:
// include/net/tcp.h TCPOPT_EXP, TCPOPT_SMC_MAGIC) into the SYN and SYN-ACK of every TCP socket
// of the processes in that cgroup. Linux's SMC negotiates only with a peer whose SYN (its
// server: af_smc.c smc_listen_work, tcp_sk(clcsock)->syn_smc) or SYN-ACK (its client:
// __smc_connect) carried it; node:net cannot set TCP options, so without this program a Linux
// SMC peer always falls back to TCP against softrdma.
//
// The program (raw instructions, the same as scripts/interop/smc-tcp-option.c, now removed, had):
//   TCP_CONNECT_CB, TCP_LISTEN_CB       -> bpf_sock_ops_cb_flags_set(WRITE_HDR_OPT_CB_FLAG)
//   HDR_OPT_LEN_CB on a SYN / SYN-ACK   -> bpf_reserve_hdr_opt(6)
//   WRITE_HDR_OPT_CB on a SYN / SYN-ACK -> bpf_store_hdr_opt({254, 6, E2 D4 C3 D9})
//   ACTIVE/PASSIVE_ESTABLISHED_CB       -> flags off again: nothing runs per data packet
// Everything goes through bpf(2) by syscall() (koffi); no libbpf, no clang. Root only (CAP_BPF
// and CAP_NET_ADMIN). Errors are BpfError with an errno-style code; every fd opened here is
// closed on every path.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import koffi from 'koffi';
import { SoftrdmaError } from '../abi/errors.js';
import { libcLibrary } from './libc.js';

/** The name the program is loaded under: how status and detach tell it from other programs. */
export const SMC_TCP_OPTION_PROG_NAME = 'smc_tcp_opt';
/** The option as it appears on the wire. */
export const SMC_TCP_OPTION = Buffer.from([0xfe, 0x06, 0xe2, 0xd4, 0xc3, 0xd9]);

const BPF_PROG_LOAD = 5;
const BPF_PROG_ATTACH = 8;
const BPF_PROG_DETACH = 9;
const BPF_PROG_GET_FD_BY_ID = 13;
const BPF_OBJ_GET_INFO_BY_FD = 15;
const BPF_PROG_QUERY = 16;
const BPF_PROG_TYPE_SOCK_OPS = 13;
const BPF_CGROUP_SOCK_OPS = 3;
const BPF_F_ALLOW_MULTI = 2;
const BPF_F_QUERY_EFFECTIVE = 1;
/** sizeof(union bpf_attr) in 6.x headers; the kernel takes any size whose tail is zero. */
const ATTR_SIZE = 144;
/** sizeof(struct bpf_prog_info) in 6.x headers (name at 64). */
const INFO_SIZE = 232;
const CGROUP2_SUPER_MAGIC = 0x63677270;

/** bpf(2)'s number: only the two architectures softrdma is built for. */
export function bpfSyscallNumber(arch: string = process.arch): number | undefined {
  return arch === 'x64' ? 321 : arch === 'arm64' ? 280 : undefined;
}

export class BpfError extends SoftrdmaError {
  constructor(code: string, readonly syscall: string, message: string, readonly verifierLog?: string) {
    super(code, message);
    this.name = 'BpfError';
  }
}

const ERRNO_NAME = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

function errnoName(n: number): string {
  return ERRNO_NAME.get(n) ?? `E${n}`;
}

// ---------------------------------------------------------------------------- the program

const enum Op { TCP_CONNECT_CB = 3, ACTIVE_ESTABLISHED_CB = 4, PASSIVE_ESTABLISHED_CB = 5, TCP_LISTEN_CB = 11, HDR_OPT_LEN_CB = 14, WRITE_HDR_OPT_CB = 15 }
const WRITE_HDR_OPT_CB_FLAG = 1 << 6;
const FUNC_SOCK_OPS_CB_FLAGS_SET = 59;
const FUNC_STORE_HDR_OPT = 143;
const FUNC_RESERVE_HDR_OPT = 144;
/** offsetof(struct bpf_sock_ops, op) and (…, skb_tcp_flags). */
const OFF_OP = 0;
const OFF_FLAGS = 212;
const TCPHDR_SYN = 0x02;

type Insn = [code: number, dst: number, src: number, off: number, imm: number];
const R0 = 0, R1 = 1, R2 = 2, R3 = 3, R4 = 4, R6 = 6, R10 = 10;
const movReg = (d: number, s: number): Insn => [0xbf, d, s, 0, 0]; // ALU64 | MOV | X
const movImm = (d: number, v: number): Insn => [0xb7, d, 0, 0, v]; // ALU64 | MOV | K
const addImm = (d: number, v: number): Insn => [0x07, d, 0, 0, v]; // ALU64 | ADD | K
const andImm = (d: number, v: number): Insn => [0x57, d, 0, 0, v]; // ALU64 | AND | K
const ldxW = (d: number, s: number, o: number): Insn => [0x61, d, s, o, 0]; // LDX | MEM | W
const stxDw = (d: number, s: number, o: number): Insn => [0x7b, d, s, o, 0]; // STX | MEM | DW
const jeqImm = (d: number, v: number, o: number): Insn => [0x15, d, 0, o, v]; // JMP | JEQ | K
const ja = (o: number): Insn => [0x05, 0, 0, o, 0];
const call = (f: number): Insn => [0x85, 0, 0, 0, f];
const exit = (): Insn => [0x95, 0, 0, 0, 0];
/** LD_IMM64: two slots, the low then the high 32 bits. */
const ldImm64 = (d: number, lo: number, hi: number): Insn[] => [[0x18, d, 0, 0, lo], [0, 0, 0, 0, hi]];

/** The program's instructions, 8 bytes each (struct bpf_insn, little-endian). */
export function smcTcpOptionProgram(): Buffer {
  // The option bytes FE 06 E2 D4 C3 D9 (+2 pad) as a little-endian u64 on the stack.
  const optLo = SMC_TCP_OPTION.readUInt32LE(0);
  const optHi = SMC_TCP_OPTION.readUInt16LE(4);
  const prog: Insn[] = [
    /*  0 */ movReg(R6, R1),
    /*  1 */ ldxW(R2, R6, OFF_OP),
    /*  2 */ jeqImm(R2, Op.TCP_CONNECT_CB, 9), // -> 12 on
    /*  3 */ jeqImm(R2, Op.TCP_LISTEN_CB, 8), // -> 12
    /*  4 */ jeqImm(R2, Op.HDR_OPT_LEN_CB, 11), // -> 16 len
    /*  5 */ jeqImm(R2, Op.WRITE_HDR_OPT_CB, 16), // -> 22 write
    /*  6 */ jeqImm(R2, Op.ACTIVE_ESTABLISHED_CB, 2), // -> 9 off
    /*  7 */ jeqImm(R2, Op.PASSIVE_ESTABLISHED_CB, 1), // -> 9
    /*  8 */ ja(24), // -> 33 out
    /*  9 */ movReg(R1, R6), // off:
    /* 10 */ movImm(R2, 0),
    /* 11 */ ja(2), // -> 14
    /* 12 */ movReg(R1, R6), // on:
    /* 13 */ movImm(R2, WRITE_HDR_OPT_CB_FLAG),
    /* 14 */ call(FUNC_SOCK_OPS_CB_FLAGS_SET),
    /* 15 */ ja(17), // -> 33
    /* 16 */ ldxW(R2, R6, OFF_FLAGS), // len:
    /* 17 */ andImm(R2, TCPHDR_SYN),
    /* 18 */ jeqImm(R2, 0, 14), // -> 33
    /* 19 */ movReg(R1, R6),
    /* 20 */ movImm(R2, SMC_TCP_OPTION.length),
    /* 21 */ ja(8), // -> 30 (r3 = 0, reserve)
    /* 22 */ ldxW(R2, R6, OFF_FLAGS), // write:
    /* 23 */ andImm(R2, TCPHDR_SYN),
    /* 24 */ jeqImm(R2, 0, 8), // -> 33
    /* 25 */ ...ldImm64(R3, optLo, optHi), // 25-26
    /* 27 */ stxDw(R10, R3, -8),
    /* 28 */ movReg(R1, R6),
    /* 29 */ ja(5), // -> 35 store
    /* 30 */ movImm(R3, 0),
    /* 31 */ call(FUNC_RESERVE_HDR_OPT),
    /* 32 */ ja(0),
    /* 33 */ movImm(R0, 1), // out:
    /* 34 */ exit(),
    /* 35 */ movReg(R2, R10), // store:
    /* 36 */ addImm(R2, -8),
    /* 37 */ movImm(R3, SMC_TCP_OPTION.length),
    /* 38 */ movImm(R4, 0),
    /* 39 */ call(FUNC_STORE_HDR_OPT),
    /* 40 */ ja(-8), // -> 33
  ];
  const b = Buffer.alloc(prog.length * 8);
  prog.forEach(([code, dst, src, off, imm], i) => {
    b[i * 8] = code;
    b[i * 8 + 1] = (src << 4) | dst;
    b.writeInt16LE(off, i * 8 + 2);
    b.writeInt32LE(imm | 0, i * 8 + 4);
  });
  return b;
}

// ---------------------------------------------------------------------------- bpf(2)

interface Sys {
  syscall(nr: number, ...args: unknown[]): number;
  errno(): number;
}
let sys: Sys | undefined;

function libc(): Sys {
  if (sys) return sys;
  const so = libcLibrary();
  const errnoLocation = so.func('int *__errno_location(void)');
  sys = {
    syscall: so.func('long syscall(long number, ...)') as Sys['syscall'],
    errno: () => koffi.decode(errnoLocation(), 'int') as number,
  };
  return sys;
}

/** Memory outside the JS heap whose address can go into a bpf_attr; freed by the caller. */
class Native {
  readonly ptr: unknown;
  readonly bytes: Buffer;
  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    this.bytes = Buffer.from(koffi.view(this.ptr, size) as ArrayBuffer);
    this.bytes.fill(0);
  }
  get address(): bigint { return koffi.address(this.ptr) as bigint; }
  free(): void { koffi.free(this.ptr); }
}

const CMD_NAMES: Record<number, string> = {
  [BPF_PROG_LOAD]: 'BPF_PROG_LOAD', [BPF_PROG_ATTACH]: 'BPF_PROG_ATTACH', [BPF_PROG_DETACH]: 'BPF_PROG_DETACH',
  [BPF_PROG_GET_FD_BY_ID]: 'BPF_PROG_GET_FD_BY_ID', [BPF_OBJ_GET_INFO_BY_FD]: 'BPF_OBJ_GET_INFO_BY_FD', [BPF_PROG_QUERY]: 'BPF_PROG_QUERY',
};

function hint(code: string): string {
  if (code === 'EPERM' || code === 'EACCES') return ': needs root (CAP_BPF and CAP_NET_ADMIN)';
  if (code === 'ENOSYS') return ': this kernel has no bpf(2)';
  return '';
}

/** bpf(cmd, attr, ATTR_SIZE); returns the result or the errno name (negative result). */
function bpfRaw(cmd: number, attr: Native): { ret: number; code?: string } {
  const nr = bpfSyscallNumber();
  if (nr === undefined) {
    throw new BpfError('ENOSYS', 'bpf', `bpf(2) is not supported on ${process.arch} by softrdma (only x86_64 and aarch64)`);
  }
  const l = libc();
  const ret = Number(l.syscall(nr, 'int', cmd, 'void *', attr.ptr, 'uint', ATTR_SIZE));
  if (ret < 0) return { ret, code: errnoName(l.errno()) };
  return { ret };
}

function bpf(cmd: number, attr: Native, what = ''): number {
  const r = bpfRaw(cmd, attr);
  if (r.code) throw new BpfError(r.code, 'bpf', `bpf(${CMD_NAMES[cmd]}) failed: ${r.code}${what ? ` (${what})` : ''}${hint(r.code)}`);
  return r.ret;
}

function withAttr<T>(fn: (a: Native) => T): T {
  const a = new Native(ATTR_SIZE);
  try { return fn(a); } finally { a.free(); }
}

function closeFd(fd: number): void {
  try { fs.closeSync(fd); } catch { /* already closed */ }
}

/** Load the program; returns its fd (the caller closes it). */
export function loadSmcTcpOptionProgram(): number {
  return loadSockOpsProgram(smcTcpOptionProgram(), SMC_TCP_OPTION_PROG_NAME);
}

/** libbpf's PROG_LOAD_ATTEMPTS: a load the verifier broke off with EAGAIN is tried again. */
const PROG_LOAD_ATTEMPTS = 5;

/**
 * Load a sock_ops program; returns its fd (the caller closes it). A verifier rejection is a
 * BpfError EINVAL (or EACCES) carrying the verifier's log.
 */
export function loadSockOpsProgram(insns: Buffer, name: string): number {
  const prog = new Native(insns.length);
  const license = new Native(8);
  insns.copy(prog.bytes);
  license.bytes.write('GPL\0', 'latin1');
  const loadOnce = (log?: Native) => withAttr((a) => {
    a.bytes.writeUInt32LE(BPF_PROG_TYPE_SOCK_OPS, 0);
    a.bytes.writeUInt32LE(insns.length / 8, 4);
    a.bytes.writeBigUInt64LE(prog.address, 8);
    a.bytes.writeBigUInt64LE(license.address, 16);
    if (log) {
      a.bytes.writeUInt32LE(1, 24); // log_level
      a.bytes.writeUInt32LE(log.size, 28);
      a.bytes.writeBigUInt64LE(log.address, 32);
    }
    a.bytes.write(name, 48, 15, 'latin1'); // prog_name[16]
    return bpfRaw(BPF_PROG_LOAD, a);
  });
  // The verifier gives up with EAGAIN when a signal is pending (Node's child processes' SIGCHLD,
  // say); libbpf tries a load up to 5 times for that (PROG_LOAD_ATTEMPTS, bpf.c).
  const load = (log?: Native) => {
    for (let attempt = 1; ; attempt++) {
      const r = loadOnce(log);
      if ((r.code !== 'EAGAIN' && r.code !== 'EWOULDBLOCK') || attempt >= PROG_LOAD_ATTEMPTS) return r;
    }
  };
  try {
    const r = load();
    if (!r.code) return r.ret;
    if (r.code !== 'EINVAL' && r.code !== 'EACCES') {
      throw new BpfError(r.code, 'bpf', `bpf(BPF_PROG_LOAD) of sock_ops program ${name} failed: ${r.code}${hint(r.code)}`);
    }
    // Again with a log, for the verifier's reason (as libbpf does).
    const log = new Native(1 << 16);
    try {
      const again = load(log);
      if (!again.code) return again.ret;
      const text = log.bytes.toString('latin1', 0, Math.max(0, log.bytes.indexOf(0))).trim();
      throw new BpfError(again.code, 'bpf', `the kernel rejected sock_ops program ${name} (bpf(BPF_PROG_LOAD): ${again.code})${text ? `:\n${text}` : ''}`, text);
    } finally { log.free(); }
  } finally {
    prog.free();
    license.free();
  }
}

// ---------------------------------------------------------------------------- cgroups

/** The cgroup v2 mount point (from /proc/self/mountinfo), or undefined when there is none. */
export function cgroup2Mount(mountinfo?: string): string | undefined {
  let text = mountinfo;
  if (text === undefined) {
    try { text = fs.readFileSync('/proc/self/mountinfo', 'utf8'); } catch { return undefined; }
  }
  for (const line of text.split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const [pre, post] = line.split(' - ');
    if (!post || post.split(' ')[0] !== 'cgroup2') continue;
    const f = pre!.split(' ');
    if (f[3] !== '/') continue; // a bind mount of a subtree
    return f[4]!.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return undefined;
}

/** The cgroup v2 directory a process is in ("0::/path" of /proc/PID/cgroup under the mount). */
export function cgroupDirOf(pid: number | 'self' = 'self'): string {
  const mount = cgroup2Mount();
  if (!mount) throw new BpfError('ENOENT', 'open', 'no cgroup v2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup)');
  let text: string;
  try { text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'); } catch (e) {
    throw new BpfError((e as NodeJS.ErrnoException).code ?? 'ENOENT', 'open', `/proc/${pid}/cgroup: ${(e as Error).message}`);
  }
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  if (!line) throw new BpfError('ENOENT', 'open', `process ${pid} is in no cgroup v2 (no 0:: line in /proc/${pid}/cgroup)`);
  const dir = path.join(mount, line.slice(3).replace(/ \(deleted\)$/, ''));
  return dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
}

/** Open a cgroup v2 directory; ENOENT / ENOTDIR / EINVAL (not cgroup v2) with the path. */
function openCgroup(dir: string): number {
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new BpfError(code, 'open', `cgroup directory ${dir}: ${code}${code === 'ENOENT' ? ' (no such directory)' : code === 'ENOTDIR' ? ' (not a directory)' : ''}`);
  }
  try {
    const st = fs.statfsSync(dir);
    if (st.type !== CGROUP2_SUPER_MAGIC) {
      throw new BpfError('EINVAL', 'open', `${dir} is not a cgroup v2 directory (file system type 0x${st.type.toString(16)}; cgroup v2 is mounted at ${cgroup2Mount() ?? 'no place'})`);
    }
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

function withCgroup<T>(dir: string, fn: (fd: number) => T): T {
  const fd = openCgroup(dir);
  try { return fn(fd); } finally { closeFd(fd); }
}

/** The ids of the sock_ops programs attached to a cgroup (effective: those of its ancestors too). */
function queryIds(cgfd: number, dir: string, effective: boolean): number[] {
  for (let cap = 64; ; cap *= 4) {
    const ids = new Native(cap * 4);
    try {
      const r = withAttr((a) => {
        a.bytes.writeUInt32LE(cgfd, 0);
        a.bytes.writeUInt32LE(BPF_CGROUP_SOCK_OPS, 4);
        a.bytes.writeUInt32LE(effective ? BPF_F_QUERY_EFFECTIVE : 0, 8);
        a.bytes.writeBigUInt64LE(ids.address, 16);
        a.bytes.writeUInt32LE(cap, 24);
        const res = bpfRaw(BPF_PROG_QUERY, a);
        return { ...res, count: a.bytes.readUInt32LE(24) };
      });
      if (r.code === 'ENOSPC') continue;
      if (r.code) throw new BpfError(r.code, 'bpf', `bpf(BPF_PROG_QUERY) on ${dir} failed: ${r.code}${hint(r.code)}`);
      return Array.from({ length: Math.min(r.count, cap) }, (_, i) => ids.bytes.readUInt32LE(i * 4));
    } finally { ids.free(); }
  }
}

/** A program's fd by id (the caller closes it), or undefined if it went away meanwhile. */
function progFd(id: number): number | undefined {
  return withAttr((a) => {
    a.bytes.writeUInt32LE(id, 0);
    const r = bpfRaw(BPF_PROG_GET_FD_BY_ID, a);
    if (r.code === 'ENOENT') return undefined;
    if (r.code) throw new BpfError(r.code, 'bpf', `bpf(BPF_PROG_GET_FD_BY_ID, ${id}) failed: ${r.code}${hint(r.code)}`);
    return r.ret;
  });
}

function progName(fd: number): string {
  const info = new Native(INFO_SIZE);
  try {
    withAttr((a) => {
      a.bytes.writeUInt32LE(fd, 0);
      a.bytes.writeUInt32LE(INFO_SIZE, 4);
      a.bytes.writeBigUInt64LE(info.address, 8);
      bpf(BPF_OBJ_GET_INFO_BY_FD, a, 'program info');
    });
    const name = info.bytes.subarray(64, 80);
    const end = name.indexOf(0);
    return name.toString('latin1', 0, end < 0 ? 16 : end);
  } finally { info.free(); }
}

export interface AttachedProgram { id: number; name: string; ours: boolean }

function describe(ids: number[]): AttachedProgram[] {
  const out: AttachedProgram[] = [];
  for (const id of ids) {
    const fd = progFd(id);
    if (fd === undefined) continue;
    try {
      const name = progName(fd);
      out.push({ id, name, ours: name === SMC_TCP_OPTION_PROG_NAME });
    } finally { closeFd(fd); }
  }
  return out;
}

export interface SmcTcpOptionStatus {
  cgroup: string;
  /** Does a TCP socket of a process in this cgroup send the option (ours here or on an ancestor)? */
  active: boolean;
  /** Ours, attached to this very cgroup. */
  attached: boolean;
  /** The sock_ops programs attached to this cgroup. */
  programs: AttachedProgram[];
  /** Those in effect for it: its own and its ancestors' (the kernel runs them all). */
  effective: AttachedProgram[];
}

export function smcTcpOptionStatus(dir: string): SmcTcpOptionStatus {
  return withCgroup(dir, (fd) => {
    const programs = describe(queryIds(fd, dir, false));
    const effective = describe(queryIds(fd, dir, true));
    return { cgroup: dir, active: effective.some((p) => p.ours), attached: programs.some((p) => p.ours), programs, effective };
  });
}

/**
 * Attach a loaded sock_ops program (its fd) to a cgroup v2 directory with BPF_F_ALLOW_MULTI:
 * other programs attached there stay, and run too.
 */
export function attachSockOpsProgram(dir: string, pfd: number): void {
  withCgroup(dir, (cgfd) => attachFd(cgfd, dir, pfd));
}

function attachFd(cgfd: number, dir: string, pfd: number): void {
  withAttr((a) => {
    a.bytes.writeUInt32LE(cgfd, 0);
    a.bytes.writeUInt32LE(pfd, 4);
    a.bytes.writeUInt32LE(BPF_CGROUP_SOCK_OPS, 8);
    a.bytes.writeUInt32LE(BPF_F_ALLOW_MULTI, 12);
    const r = bpfRaw(BPF_PROG_ATTACH, a);
    if (r.code) {
      const why = r.code === 'EPERM' && process.getuid?.() === 0
        ? ` (a sock_ops program attached to ${dir} or an ancestor without BPF_F_ALLOW_MULTI forbids more)`
        : hint(r.code);
      throw new BpfError(r.code, 'bpf', `bpf(BPF_PROG_ATTACH) to ${dir} failed: ${r.code}${why}`);
    }
  });
}

/** Detach a sock_ops program (its fd) from a cgroup v2 directory. */
export function detachSockOpsProgram(dir: string, pfd: number): void {
  withCgroup(dir, (cgfd) => detachFd(cgfd, dir, pfd));
}

function detachFd(cgfd: number, dir: string, pfd: number): void {
  withAttr((a) => {
    a.bytes.writeUInt32LE(cgfd, 0);
    a.bytes.writeUInt32LE(pfd, 4);
    a.bytes.writeUInt32LE(BPF_CGROUP_SOCK_OPS, 8);
    bpf(BPF_PROG_DETACH, a, `from ${dir}`);
  });
}

/**
 * Attach the SMC TCP option program to a cgroup v2 directory (BPF_F_ALLOW_MULTI: other sock_ops
 * programs stay). Returns false when one of ours was attached there already (nothing done).
 */
export function attachSmcTcpOption(dir: string): boolean {
  return withCgroup(dir, (cgfd) => {
    if (describe(queryIds(cgfd, dir, false)).some((p) => p.ours)) return false;
    const pfd = loadSmcTcpOptionProgram();
    try { attachFd(cgfd, dir, pfd); } finally { closeFd(pfd); }
    return true;
  });
}

/** Detach every copy of ours from a cgroup; returns how many there were. */
export function detachSmcTcpOption(dir: string): number {
  return withCgroup(dir, (cgfd) => {
    let n = 0;
    for (const id of queryIds(cgfd, dir, false)) {
      const pfd = progFd(id);
      if (pfd === undefined) continue;
      try {
        if (progName(pfd) !== SMC_TCP_OPTION_PROG_NAME) continue;
        detachFd(cgfd, dir, pfd);
        n++;
      } finally { closeFd(pfd); }
    }
    return n;
  });
}
