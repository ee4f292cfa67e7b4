// Whether the SMC TCP option's kernel side (src/sys/smc-tcp-option.ts) can be tested here.

import fs from 'node:fs';
import { bpfSyscallNumber, cgroup2Mount, loadSmcTcpOptionProgram } from '../../src/sys/smc-tcp-option.js';

/** Why the program cannot be loaded and attached here (root, cgroup v2, bpf(2)), or undefined. */
export function tcpOptionUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (CAP_BPF, CAP_NET_ADMIN, cgroup directories)';
  if (bpfSyscallNumber() === undefined) return `no bpf(2) number for ${process.arch}`;
  if (!cgroup2Mount()) return 'no cgroup v2 mount';
  try {
    fs.closeSync(loadSmcTcpOptionProgram());
  } catch (e) {
    return `this kernel does not load the program: ${(e as Error).message}`;
  }
  return undefined;
}
