// The SMC TCP option (src/sys/smc-tcp-option.ts): the program is the one
// scripts/interop/smc-tcp-option.c loaded (proven against Linux 6.1's SMC-R), and it attaches,
// reports and detaches on a cgroup v2 directory. The kernel parts need root, a cgroup v2 mount
// and bpf(2): skipped with the reason where missing.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  attachSmcTcpOption, attachSockOpsProgram, BpfError, bpfSyscallNumber, cgroup2Mount, detachSmcTcpOption, detachSockOpsProgram, loadSmcTcpOptionProgram,
  loadSockOpsProgram, smcTcpOptionProgram, smcTcpOptionStatus, SMC_TCP_OPTION_PROG_NAME,
} from '../../src/sys/smc-tcp-option.js';
import { SoftrdmaError } from '../../src/abi/errors.js';

// struct bpf_insn[] of scripts/interop/smc-tcp-option.c as of b66f39a, dumped from
// that program compiled against the host's linux/bpf.h: the program run against Linux 6.1.
const C_PROGRAM = `bf16000000000000 6162000000000000 1502090003000000 150208000b000000 15020b000e000000
150210000f000000 1502020004000000 1502010005000000 0500180000000000 bf61000000000000 b702000000000000
0500020000000000 bf61000000000000 b702000040000000 850000003b000000 0500110000000000 6162d40000000000
5702000002000000 15020e0000000000 bf61000000000000 b702000006000000 0500080000000000 6162d40000000000
5702000002000000 1502080000000000 18030000fe06e2d4 00000000c3d90000 7b3af8ff00000000 bf61000000000000
0500050000000000 b703000000000000 8500000090000000 0500000000000000 b700000001000000 9500000000000000
bfa2000000000000 07020000f8ffffff b703000006000000 b704000000000000 850000008f000000 0500f8ff00000000`;

test('the program is, instruction for instruction, the C one proven against Linux', () => {
  assert.equal(smcTcpOptionProgram().toString('hex'), C_PROGRAM.replace(/\s+/g, ''));
});

test('bpf(2) numbers for x86_64 and aarch64 only', () => {
  assert.equal(bpfSyscallNumber('x64'), 321);
  assert.equal(bpfSyscallNumber('arm64'), 280);
  assert.equal(bpfSyscallNumber('ia32'), undefined);
  assert.equal(bpfSyscallNumber('s390x'), undefined);
});

test('the cgroup v2 mount is found in mountinfo (not a bind mount of a subtree, not v1)', () => {
  const info = [
    '25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
    '26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
    '40 30 0:30 /sub /mnt/sub rw - cgroup2 cgroup2 rw',
    '27 25 0:24 / /sys/fs/cgroup/unified\\040x rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate',
  ].join('\n');
  assert.equal(cgroup2Mount(info), '/sys/fs/cgroup/unified x');
  assert.equal(cgroup2Mount('26 25 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu'), undefined);
});

/** Why the kernel parts cannot run here, or undefined. */
function kernelUnavailable(): string | undefined {
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
const kernelSkip = kernelUnavailable();

function freshCgroup(tag: string): string {
  const dir = path.join(cgroup2Mount()!, `softrdma-test-${tag}-${process.pid}`);
  fs.mkdirSync(dir);
  return dir;
}

describe('on a cgroup v2 directory', { skip: kernelSkip }, () => {
  const made: string[] = [];
  after(() => { for (const d of made.reverse()) try { fs.rmdirSync(d); } catch { /* gone */ } });

  test('attach (once), status here and in a child cgroup, detach leaves nothing', () => {
    const dir = freshCgroup('attach');
    made.push(dir);
    const child = path.join(dir, 'child');
    fs.mkdirSync(child);
    made.push(child);
    assert.deepEqual(smcTcpOptionStatus(dir), { cgroup: dir, active: false, attached: false, programs: [], effective: [] });
    assert.equal(attachSmcTcpOption(dir), true);
    assert.equal(attachSmcTcpOption(dir), false, 'a second attach is a no-op');
    const s = smcTcpOptionStatus(dir);
    assert.equal(s.active, true);
    assert.equal(s.attached, true);
    assert.equal(s.programs.length, 1, JSON.stringify(s));
    assert.equal(s.programs[0]!.name, SMC_TCP_OPTION_PROG_NAME);
    const c = smcTcpOptionStatus(child);
    assert.equal(c.attached, false);
    assert.equal(c.active, true, 'in effect for a child cgroup');
    assert.deepEqual(c.effective.map((p) => p.id), [s.programs[0]!.id]);
    assert.equal(detachSmcTcpOption(child), 0, 'nothing to detach from the child');
    assert.equal(detachSmcTcpOption(dir), 1);
    assert.deepEqual(smcTcpOptionStatus(dir), { cgroup: dir, active: false, attached: false, programs: [], effective: [] });
    assert.equal(smcTcpOptionStatus(child).active, false);
  });

  test('another sock_ops program on the cgroup stays, and is not taken for ours', () => {
    const dir = freshCgroup('multi');
    made.push(dir);
    // r0 = 1; exit: a foreign program of the same type with another name.
    const other = loadSockOpsProgram(Buffer.from('b7000000010000009500000000000000', 'hex'), 'other_prog');
    try {
      attachSockOpsProgram(dir, other);
      let s = smcTcpOptionStatus(dir);
      assert.deepEqual(s.programs.map((p) => [p.name, p.ours]), [['other_prog', false]]);
      assert.equal(s.active, false, 'another program is not ours');
      assert.equal(detachSmcTcpOption(dir), 0);
      assert.equal(attachSmcTcpOption(dir), true, 'ours attaches next to it (BPF_F_ALLOW_MULTI)');
      s = smcTcpOptionStatus(dir);
      assert.deepEqual(s.programs.map((p) => [p.name, p.ours]).sort(), [['other_prog', false], [SMC_TCP_OPTION_PROG_NAME, true]]);
      assert.equal(s.active, true);
      assert.equal(detachSmcTcpOption(dir), 1);
      assert.deepEqual(smcTcpOptionStatus(dir).programs.map((p) => p.name), ['other_prog'], 'detach takes ours only');
      detachSockOpsProgram(dir, other);
      assert.deepEqual(smcTcpOptionStatus(dir).programs, []);
    } finally { fs.closeSync(other); }
  });

  test('bad cgroup paths: ENOENT, ENOTDIR, EINVAL (not cgroup v2), each naming the path', () => {
    const missing = path.join(cgroup2Mount()!, 'no-such-cgroup-here');
    const file = path.join(cgroup2Mount()!, 'cgroup.procs');
    const notCgroup = os.tmpdir();
    for (const [dir, code] of [[missing, 'ENOENT'], [file, 'ENOTDIR'], [notCgroup, 'EINVAL']] as const) {
      for (const f of [attachSmcTcpOption, detachSmcTcpOption, smcTcpOptionStatus]) {
        assert.throws(() => f(dir), (e: unknown) => e instanceof BpfError && e instanceof SoftrdmaError && e.code === code && e.message.includes(dir), `${f.name}(${dir})`);
      }
    }
  });

  test('a program the verifier rejects: the error carries the verifier\'s log', () => {
    // exit without setting r0
    assert.throws(() => loadSockOpsProgram(Buffer.from('9500000000000000', 'hex'), 'bad'), (e: unknown) =>
      e instanceof BpfError && (e.code === 'EACCES' || e.code === 'EINVAL') && /R0 !read_ok/.test(e.verifierLog ?? '') && /R0 !read_ok/.test(e.message));
  });
});

test('no cgroup of these tests is left behind', { skip: kernelSkip }, () => {
  const left = fs.readdirSync(cgroup2Mount()!).filter((n) => n.includes(`-${process.pid}`));
  assert.deepEqual(left, []);
});
