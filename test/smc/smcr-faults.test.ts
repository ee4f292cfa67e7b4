// SMC-R over a lossy RoCE path (issue 20): 1% loss and 1% duplication of RoCEv2 packets in the
// kernel, both directions, and 5% reordering by the rxe devices' fault hook; a 32 MiB echo must
// come back byte-exact and the counters must show the recovery (retransmissions, duplicates).
//
// This kernel has neither sch_netem nor nft (and no act_gact, so tc's `random` is out too).
// What it has: cls_bpf with classic BPF, whose SKF_AD_RANDOM load draws a random number per
// packet, and act_mirred. So a filter on each veth's egress matches UDP to 4791 with
// probability 1%, and its action is either
//   - redirect to a veth whose peer is down: the kernel drops it (loss), or
//   - mirror to a second veth pair between the namespaces whose far end has the MAC of the
//     real one: the copy arrives as a second delivery of the same packet (duplication).
// Skipped, saying why, where any of that is missing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { jsonLines, runNode, type Proc } from '../helpers/procs.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-faults-test');

const PEER = fileURLToPath(new URL('./smcr-hostile-peer.js', import.meta.url));
const tag = `sf${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const ADDR_A = '10.233.11.1', ADDR_B = '10.233.11.2';
const MIB = 32;

/**
 * Classic BPF (tc's `bytecode` form, data from the Ethernet header on): IPv4 UDP to 4791 (no IP
 * options, which these packets never have), then a random u32 >= k, i.e. a share of 1 - k/2^32.
 */
function roceRandom(share: number): string {
  const k = Math.floor((1 - share) * 2 ** 32);
  const SKF_AD_RANDOM = 2 ** 32 - 0x1000 + 56;
  const prog = [
    [0x30, 0, 0, 23], // ldb [23]: IP protocol
    [0x15, 0, 5, 17], // jeq UDP, else no match
    [0x28, 0, 0, 36], // ldh [36]: UDP destination port
    [0x15, 0, 3, 4791], // jeq 4791, else no match
    [0x20, 0, 0, SKF_AD_RANDOM], // ld rand
    [0x35, 0, 1, k], // jge k: match
    [0x06, 0, 0, 0xffffffff], // ret -1: match (the filter's action runs)
    [0x06, 0, 0, 0], // ret 0: no match
  ];
  return `${prog.length},${prog.map((i) => i.join(' ')).join(',')}`;
}

const tc = (ns: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'tc', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const sysctl = (ns: string, kv: string) => execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv], { stdio: 'ignore' });
const macOf = (ns: string, dev: string) => (JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show', dev]).toString()) as Array<{ address: string }>)[0]!.address;

function impair(): void {
  const va = `${tag}va`, vb = `${tag}vb`;
  // The duplicates' path: da in A, db in B, each with the MAC of the real end on its side.
  ip('link', 'add', `${tag}da`, 'type', 'veth', 'peer', 'name', `${tag}db`);
  ip('link', 'set', `${tag}da`, 'netns', NS_A);
  ip('link', 'set', `${tag}db`, 'netns', NS_B);
  ip('-n', NS_A, 'link', 'set', `${tag}da`, 'address', macOf(NS_A, va), 'up');
  ip('-n', NS_B, 'link', 'set', `${tag}db`, 'address', macOf(NS_B, vb), 'up');
  for (const [ns, real, dup] of [[NS_A, va, `${tag}da`], [NS_B, vb, `${tag}db`]] as const) {
    // A copy arrives on the other veth than the route back: no reverse-path filter.
    for (const d of ['all', 'default', real, dup]) sysctl(ns, `net.ipv4.conf.${d}.rp_filter=0`);
    // The black hole: a veth whose peer is down drops what is sent to it.
    ip('-n', ns, 'link', 'add', `${tag}s`, 'type', 'veth', 'peer', 'name', `${tag}t`);
    ip('-n', ns, 'link', 'set', `${tag}s`, 'up');
    tc(ns, 'qdisc', 'add', 'dev', real, 'clsact');
    tc(ns, 'filter', 'add', 'dev', real, 'egress', 'protocol', 'ip', 'prio', '1', 'bpf', 'bytecode', roceRandom(0.01), 'action', 'mirred', 'egress', 'redirect', 'dev', `${tag}s`);
    tc(ns, 'filter', 'add', 'dev', real, 'egress', 'protocol', 'ip', 'prio', '2', 'bpf', 'bytecode', roceRandom(0.01), 'action', 'mirred', 'egress', 'mirror', 'dev', dup);
  }
}

/** Packets a device received (the copies' path: that the duplicates were delivered, not only made). */
const rxPackets = (ns: string, dev: string) => (JSON.parse(execFileSync('ip', ['-n', ns, '-j', '-s', 'link', 'show', dev]).toString()) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;

/** Packets each filter's action took, from `tc -s`: [dropped, duplicated]. */
function impaired(ns: string, dev: string): [number, number] {
  const s = tc(ns, '-s', 'filter', 'show', 'dev', dev, 'egress');
  const sent = [...s.matchAll(/Sent \d+ bytes (\d+) pkt/g)].map((m) => Number(m[1]));
  return [sent[0] ?? 0, sent[1] ?? 0];
}

const skip = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: ADDR_A, addrB: ADDR_B, tools: ['tc'], extra: impair });
const procs: Proc[] = [];

test(`SMC-R over a RoCE path with 1% loss, 1% duplication (kernel) and 5% reordering (rxe): ${MIB} MiB echo byte-exact`, { skip, timeout: 90_000 }, async (t) => {
  t.after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exit(5000).catch(() => undefined)));
    deleteNamespaces(NS_A, NS_B);
  });
  const env = { SOFTRDMA_SMCR_TESTLINK_MS: '0' };
  const srv = runNode(PEER, ['server', '--bind', ADDR_A, '--listen', 'echo:7401', '--reorder', '0.05'], { netns: NS_A, env });
  procs.push(srv);
  await srv.waitFor(/"listening"/);
  const c = runNode(PEER, ['client', '--bind', ADDR_B, '--peer', ADDR_A, '--port', '7401', '--test', 'echo', '--mib', String(MIB), '--reorder', '0.05'], { netns: NS_B, env });
  procs.push(c);
  const r = await c.waitUntil((out) => jsonLines(out).find((l) => l.client === 'echo' || l.client === 'fail'), 'the echo', 75_000);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.bytes, MIB << 20);
  const dev = r.device as Record<string, number>, qp = r.qp as Record<string, number>;
  const [lostA, dupA] = impaired(NS_A, `${tag}va`);
  const [lostB, dupB] = impaired(NS_B, `${tag}vb`);
  t.diagnostic(JSON.stringify({ ms: r.ms, lostA, dupA, lostB, dupB, qp, reordered: dev.fault_reordered, duplicate_request: dev.duplicate_request, out_of_seq_request: dev.out_of_seq_request }));
  // The impairments happened...
  assert.ok(lostA > 0 && lostB > 0, `kernel drops: ${lostA} A->B, ${lostB} B->A`);
  assert.ok(dupA > 0 && dupB > 0, `kernel duplicates: ${dupA} A->B, ${dupB} B->A`);
  assert.ok(rxPackets(NS_B, `${tag}db`) >= dupA && rxPackets(NS_A, `${tag}da`) >= dupB, 'the copies arrived at the far ends');
  assert.ok(dev.fault_reordered > 0, 'the client\'s device reordered');
  // ...and were recovered from: the client's QP resent what was lost, its responder saw
  // duplicates (the kernel's copies) and out-of-sequence requests (after a loss or a reorder).
  assert.ok(qp.retransmits > 0, `retransmits ${qp.retransmits}`);
  assert.ok(dev.duplicate_request > 0, `duplicate requests ${dev.duplicate_request}`);
  assert.ok(dev.out_of_seq_request > 0, `out-of-sequence requests ${dev.out_of_seq_request}`);
  // Nothing of it reached SMC: no message refused, no connection aborted.
  assert.deepEqual(Object.values(r.lgrRx as Record<string, number>).filter((v) => v !== 0), []);
  assert.equal(await c.exit(10_000), 0, c.stdout + c.stderr);
});
