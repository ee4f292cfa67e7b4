// The SMC TCP option (src/sys/smc-tcp-option.ts, softrdma smc-tcp-option): the program is the
// one scripts/interop/smc-tcp-option.c (removed) loaded, proven against Linux 6.1's SMC-R; it
// attaches, reports and detaches on a cgroup v2 directory; and on the wire a SYN carries option
// 254 with the SMC magic exactly when its sender is in the cgroup, a SYN-ACK exactly when the
// listener is. The kernel parts need root, a cgroup v2 mount and bpf(2); the wire part tshark and a
// network namespace: each is skipped with the reason where missing.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  attachSmcTcpOption, attachSockOpsProgram, BpfError, bpfSyscallNumber, cgroup2Mount, cgroupDirOf, detachSmcTcpOption, detachSockOpsProgram,
  loadSockOpsProgram, smcTcpOptionProgram, smcTcpOptionStatus, SMC_TCP_OPTION_PROG_NAME,
} from '../../src/sys/smc-tcp-option.js';
import { SoftrdmaError } from '../../src/abi/errors.js';
import { captureUnavailable, readFields, startCapture } from '../helpers/capture.js';
import { deleteNamespaces, ip } from '../helpers/netns.js';
import { jsonLines, run, runNode, type Proc } from '../helpers/procs.js';
import { tcpOptionUnavailable } from '../helpers/tcp-option.js';

// struct bpf_insn[] of scripts/interop/smc-tcp-option.c as of b66f39a, dumped from
// that program compiled against the host's linux/bpf.h: the program run against Linux 6.1.
const C_PROGRAM = `bf16000000000000 6162000000000000 1502090003000000 150208000b000000 15020b000e000000
150210000f000000 1502020004000000 1502010005000000 0500180000000000 bf61000000000000 b702000000000000
0500020000000000 bf61000000000000 b702000040000000 850000003b000000 0500110000000000 6162d40000000000
5702000002000000 15020e0000000000 bf61000000000000 b702000006000000 0500080000000000 6162d40000000000
5702000002000000 1502080000000000 18030000fe06e2d4 00000000c3d90000 7b3af8ff00000000 bf61000000000000
0500050000000000 b703000000000000 8500000090000000 0500000000000000 b700000001000000 9500000000000000
bfa2000000000000 07020000f8ffffff b703000006000000 b704000000000000 850000008f000000 0500f8ff00000000`;

const PEER = fileURLToPath(new URL('../helpers/tcp-syn-peer.js', import.meta.url));

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

const kernelSkip = tcpOptionUnavailable();

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

  test('the CLI: attach, status (text, --json, exit code), detach; a bad path is exit 1 with the path', async () => {
    const dir = freshCgroup('cli');
    made.push(dir);
    const cli = async (...args: string[]) => { const p = run(['smc-tcp-option', ...args]); const code = await p.exit(20_000); return { code, out: p.stdout, err: p.stderr }; };
    let r = await cli('status', dir);
    assert.equal(r.code, 1);
    assert.match(r.out, /SMC TCP option off/);
    r = await cli('attach', dir);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^attached smc_tcp_opt to /);
    r = await cli('status', '--json', dir);
    assert.equal(r.code, 0, r.err);
    assert.equal((JSON.parse(r.out) as { attached: boolean }).attached, true);
    r = await cli('detach', dir);
    assert.equal(r.code, 0, r.err);
    r = await cli('status', '--json', dir);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.out), { cgroup: dir, active: false, attached: false, programs: [], effective: [] });
    r = await cli('attach', `${dir}/nope`);
    assert.equal(r.code, 1);
    assert.equal(r.err, `softrdma smc-tcp-option: cgroup directory ${dir}/nope: ENOENT (no such directory)\n`);
    r = await cli('attach');
    assert.equal(r.code, 2);
  });
});

const NS = `tcpopt${process.pid}`;
describe('on the wire (a network namespace, tshark)', { skip: kernelSkip ?? captureUnavailable() }, () => {
  const procs: Proc[] = [];
  after(() => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    deleteNamespaces(NS);
  });

  test('a SYN carries option 254 + E2D4C3D9 iff its sender is in the cgroup, a SYN-ACK iff the listener is', async (t) => {
    try {
      ip('netns', 'add', NS);
      ip('-n', NS, 'link', 'set', 'lo', 'up');
    } catch (e) {
      deleteNamespaces(NS);
      t.skip(`cannot make a network namespace: ${(e as Error).message}`);
      return;
    }
    const file = path.join(os.tmpdir(), `smc-tcp-option-${process.pid}.pcap`);
    // Four connections, (client, server) in/out of the cgroup: 8 SYN and SYN-ACK.
    const cap = await startCapture('tcp[tcpflags] & tcp-syn != 0', 8, file, [], NS);
    try {
      const peer = (...args: string[]) => ['ip', 'netns', 'exec', NS, process.execPath, PEER, ...args];
      // In the cgroup: softrdma smc-tcp-option run (its own fresh child cgroup, removed at the end).
      const serverIn = run(['smc-tcp-option', 'run', '--', ...peer('listen', '127.0.0.1', '7001')]);
      const serverOut = runNode(PEER, ['listen', '127.0.0.1', '7002'], { netns: NS });
      procs.push(serverIn, serverOut);
      const [inLine] = await Promise.all([serverIn.waitFor(/\{"listening".*\}/), serverOut.waitFor(/listening/)]);
      const serverPid = (JSON.parse(inLine[0]) as { pid: number }).pid;
      const cg = fs.readFileSync(`/proc/${serverPid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'))!.slice(3);
      const cgDir = path.join(cgroup2Mount()!, cg);
      assert.match(path.basename(cgDir), new RegExp(`^softrdma-tcpopt-${serverIn.child.pid}-\\d+$`), 'the server runs in the fresh cgroup');
      assert.equal(smcTcpOptionStatus(cgDir).attached, true);
      assert.equal(smcTcpOptionStatus(cgroupDirOf()).active, false, 'the test process itself is outside');

      const clientIn = run(['smc-tcp-option', 'run', ...peer('connect', '127.0.0.2', '127.0.0.1', '7001', '7002')]);
      assert.equal(await clientIn.exit(20_000), 0, clientIn.stderr);
      const clientOut = runNode(PEER, ['connect', '127.0.0.3', '127.0.0.1', '7001', '7002'], { netns: NS });
      assert.equal(await clientOut.exit(20_000), 0, clientOut.stderr);
      assert.equal(jsonLines(clientIn.stdout).length + jsonLines(clientOut.stdout).length, 4);
      await cap.finished();

      serverIn.child.kill('SIGTERM'); // forwarded to the server; the cgroup goes when it exited
      assert.equal(await serverIn.exit(20_000), 128 + os.constants.signals.SIGTERM, serverIn.stderr);
      assert.equal(fs.existsSync(cgDir), false, `${cgDir} removed`);
      serverOut.child.kill('SIGTERM');
      await serverOut.exit(20_000);

      const rows = readFields(file, 'tcp.flags.syn == 1', ['ip.src', 'ip.dst', 'tcp.srcport', 'tcp.dstport', 'tcp.flags.ack', 'tcp.options.experimental.exid', 'tcp.options.experimental.data']);
      const seen = rows.map(([src, dst, sport, dport, ack, exid, data]) => {
        const synAck = ack === '1' || ack === 'True';
        const client = synAck ? dst : src;
        const server = synAck ? sport : dport;
        return `${synAck ? 'SYN-ACK' : 'SYN'} ${client === '127.0.0.2' ? 'client-in' : 'client-out'}/${server === '7001' ? 'server-in' : 'server-out'}: ${exid ? `${exid} ${data}` : 'none'}`;
      }).sort();
      const smc = '0xe2d4 c3d9';
      assert.deepEqual(seen, [
        `SYN client-in/server-in: ${smc}`,
        `SYN client-in/server-out: ${smc}`,
        'SYN client-out/server-in: none',
        'SYN client-out/server-out: none',
        `SYN-ACK client-in/server-in: ${smc}`,
        'SYN-ACK client-in/server-out: none',
        `SYN-ACK client-out/server-in: ${smc}`,
        'SYN-ACK client-out/server-out: none',
      ].sort());
      // And the raw bytes: kind 254, length 6, the magic, in the SYN's options.
      const raw = readFields(file, 'tcp.flags.syn == 1 && ip.src == 127.0.0.2', ['tcp.options']);
      assert.equal(raw.length, 2);
      for (const [opts] of raw) assert.match(opts!.replace(/:/g, ''), /fe06e2d4c3d9/);
    } finally {
      cap.kill();
      fs.rmSync(file, { force: true });
    }
  });
});

test('no cgroup of these tests is left behind', { skip: kernelSkip }, () => {
  const left = fs.readdirSync(cgroup2Mount()!).filter((n) => n.includes(`-${process.pid}`));
  assert.deepEqual(left, []);
});
