// Isolation (README "Security"): what another user of the host, or a process in another pid
// namespace, can and cannot do to a user's SMC-D: the doorbell, Proposals naming someone
// else's ism GID, the runtime directory, registry entries, and what a failed device costs.
// Attackers run as a second Unix user made for this file (useradd; removed at the end).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { secondUser, secondUserUnavailable, type SecondUser } from '../helpers/second-user.js';

const runtime = testRuntimeDir('isolation-test');
const smc = await import('../../src/smc/index.js');
const deviceMod = await import('../../src/ism/device.js');
const { IsmDevice, defaultIsmDevice } = deviceMod;
const discovery = await import('../../src/smc/discovery.js');
const rdir = await import('../../src/ism/runtime-dir.js');
const clc = await import('../../src/smc/clc.js');

const url = (rel: string) => pathToFileURL(fileURLToPath(new URL(rel, import.meta.url))).href;
const SMC_URL = url('../../src/smc/index.js');
const DEVICE_URL = url('../../src/ism/device.js');
const DISCOVERY_URL = url('../../src/smc/discovery.js');
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));

const noUser = secondUserUnavailable();
let user: SecondUser | undefined;
before(() => { if (!noUser) user = secondUser('iso'); });

/** What refusals this build counts (an older build counts none). */
type Refusals = { runtimeDir: Record<string, number>; proposals: number; dmbsOverPeerLimit: number; doorbellConnections: number };
const refusals = (): Refusals | undefined => (smc as unknown as { smcRefusals?: () => Refusals }).smcRefusals?.();

const hex64 = (v: bigint) => v.toString(16).padStart(16, '0');
const fdCount = () => fs.readdirSync('/proc/self/fd').length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Everything under dir (names, recursively), for "nothing was written here". */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      out.push(`${rel}${e.name}`);
      if (e.isDirectory()) walk(path.join(d, e.name), `${rel}${e.name}/`);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** An SMC-D connection of this process to an echo server of this process; resolves with its mode. */
function smcRoundTrip(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = smc.connect(port, '127.0.0.1');
    s.on('error', reject);
    s.once('smc', (i) => { s.end(); resolve(i.mode); });
  });
}

function echoServer(): Promise<{ server: net.Server; port: number }> {
  const server = smc.createServer((c) => { c.on('error', () => {}); c.pipe(c); });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as net.AddressInfo).port })));
}

describe('the doorbell', () => {
  it('another user can neither connect to it nor make the owner hold descriptors', { skip: noUser }, async () => {
    const dev = IsmDevice.open({ slots: 64 });
    try {
      const entry = JSON.parse(fs.readFileSync(path.join(runtime, 'ism', `${hex64(dev.gid)}.json`), 'utf8')) as { bell?: string };
      // Everything an attacker could try: every softrdma name in /proc/net/unix, and the real path.
      const candidates = entry.bell ? [path.join(runtime, 'ism', entry.bell)] : [];
      const fdsBefore = fdCount();
      const attacker = user!.node(`
        const net = require('net'), fs = require('fs');
        const listed = fs.readFileSync('/proc/net/unix', 'utf8').split('\\n').slice(1)
          .map((l) => l.trim().split(/\\s+/)[7]).filter((p) => p && (p.includes('softrdma') || p.includes('/ism/')));
        const targets = [...new Set([...listed, ...JSON.parse(process.argv[1])])].map((p) => (p.startsWith('@') ? p.replace(/@/g, '\\0') : p)); // abstract: '@' stands for NUL
        const held = []; const errors = {};
        const flood = (t) => new Promise((done) => {
          let n = 0;
          const next = () => {
            if (n++ >= 300) return done();
            const c = net.connect(t);
            c.on('connect', () => { held.push(c); next(); });
            c.on('error', (e) => { errors[e.code] = (errors[e.code] || 0) + 1; done(); });
          };
          next();
        });
        Promise.all(targets.map(flood)).then(() => {
          console.log(JSON.stringify({ targets: targets.length, connected: held.length, errors }));
          setTimeout(() => process.exit(0), 1500); // hold them while the owner counts
        });`, [JSON.stringify(candidates)]);
      const r = await attacker.line<{ targets: number; connected: number; errors: Record<string, number> }>();
      await sleep(100);
      const fdsDuring = fdCount();
      await attacker.exit();
      assert.ok(r.targets > 0, 'the attacker found something to try');
      assert.equal(r.connected, 0, `another user connected to the doorbell: ${JSON.stringify(r)}`);
      assert.ok(fdsDuring - fdsBefore < 10, `the owner holds ${fdsDuring - fdsBefore} more descriptors during the flood`);
      const held = await (dev as unknown as { doorbellConnections?: () => Promise<number> }).doorbellConnections?.();
      assert.equal(held, 0);
    } finally {
      dev.close();
    }
  });

  it('accepts a bounded number of connections, closes the rest at once and counts them', async () => {
    const dev = IsmDevice.open({ slots: 64, maxDoorbellConnections: 4 } as { slots: number });
    const socks: net.Socket[] = [];
    try {
      const entry = JSON.parse(fs.readFileSync(path.join(runtime, 'ism', `${hex64(dev.gid)}.json`), 'utf8')) as { bell?: string };
      const address = entry.bell ? path.join(runtime, 'ism', entry.bell) : `\0softrdma-ism-${hex64(dev.gid)}`;
      let closedByOwner = 0;
      await Promise.all(Array.from({ length: 10 }, () => new Promise<void>((resolve) => {
        const c = net.connect(address, () => resolve());
        c.on('error', () => resolve());
        c.on('close', () => { closedByOwner++; });
        c.resume();
        socks.push(c);
      })));
      await sleep(200);
      assert.equal(closedByOwner, 6, 'six of ten connections closed by the owner');
      assert.equal((dev.stats as unknown as { doorbellRefused?: number }).doorbellRefused, 6);
      assert.equal(await (dev as unknown as { doorbellConnections: () => Promise<number> }).doorbellConnections(), 4);
    } finally {
      for (const c of socks) c.destroy();
      dev.close();
    }
  });
});

describe('Proposals', () => {
  it('another user naming our GID is declined before anything is allocated; our own client still gets SMC-D', { skip: noUser }, async () => {
    const { server, port } = await echoServer();
    try {
      assert.equal(await smcRoundTrip(port), 'SMCD', 'SMC-D works before');
      const dev = defaultIsmDevice();
      await sleep(50);
      const dmbsBefore = dev.query().dmbs;
      const registeredBefore = dev.stats.dmbsRegistered;
      const refusedBefore = refusals()?.proposals ?? 0;
      // The attacker knows our GID (with an abstract doorbell, /proc/net/unix told it). It cannot
      // read our registry, so its Proposal carries no valid proof.
      const proposal = clc.encodeProposal({
        version: 1, path: clc.SMC_TYPE_D, peerId: randomBytes(8), smcdGid: dev.gid, chid: 0xffff,
        subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [],
      });
      const attacker = user!.node(`
        const net = require('net');
        const c = net.connect(Number(process.argv[1]), '127.0.0.1', () => c.write(Buffer.from(process.argv[2], 'hex')));
        let got = Buffer.alloc(0);
        const report = () => { console.log(JSON.stringify({ reply: got.toString('hex') })); setTimeout(() => process.exit(0), 500); };
        c.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length >= 8 && got.length >= got.readUInt16BE(5)) report(); });
        c.on('error', () => report());
        setTimeout(report, 3000);`, [String(port), proposal.toString('hex')]);
      const { reply } = await attacker.line<{ reply: string }>();
      // While the attacker still holds its connection:
      const dmbsDuring = dev.query().dmbs;
      const registeredDuring = dev.stats.dmbsRegistered;
      await attacker.exit();
      const msg = clc.decodeClc(Buffer.from(reply, 'hex'));
      assert.equal(msg.type, clc.CLC_DECLINE, `the server answered the attacker with CLC type ${msg.type}`);
      assert.equal((msg as { diagnosis: number }).diagnosis, clc.DECLINE.NOSMCDDEV);
      assert.equal(dmbsDuring, dmbsBefore, 'no DMB allocated for the attacker');
      assert.equal(registeredDuring, registeredBefore);
      assert.equal((refusals()?.proposals ?? 0) - refusedBefore, 1, 'counted');
      assert.equal(await smcRoundTrip(port), 'SMCD', 'our own client still gets SMC-D');
    } finally {
      server.close();
    }
  });

  it('a proof made for another connection is declined', async () => {
    const { server, port } = await echoServer();
    try {
      const dev = defaultIsmDevice();
      const prove = (dev as unknown as { proposalProof?: (c: string) => Buffer }).proposalProof;
      const proof = prove ? prove.call(dev, `127.0.0.1 1 127.0.0.1 ${port}`) : undefined;
      const reply = await new Promise<Buffer>((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1', () => c.write(clc.encodeProposal({
          version: 1, path: clc.SMC_TYPE_D, peerId: randomBytes(8), smcdGid: dev.gid, chid: 0xffff,
          subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [], ...(proof ? { proof } : {}),
        } as Parameters<typeof clc.encodeProposal>[0])));
        let got = Buffer.alloc(0);
        c.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); if (got.length >= 8 && got.length >= got.readUInt16BE(5)) { c.destroy(); resolve(got); } });
        c.on('error', reject);
      });
      const msg = clc.decodeClc(reply);
      assert.equal(msg.type, clc.CLC_DECLINE, `answered with CLC type ${msg.type}`);
      assert.equal((msg as { diagnosis: number }).diagnosis, clc.DECLINE.NOSMCDDEV);
    } finally {
      server.close();
    }
  });

  it('one peer device holds at most the per-peer number of DMBs; the rest fall back with SMC_CLC_DECL_MAX_DMB', async () => {
    const srv = runNode(SERVER, [], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime, SOFTRDMA_SMC_MAX_DMBS_PER_PEER: '4' } });
    const socks: net.Socket[] = [];
    try {
      const port = Number((await srv.waitFor(/"port":(\d+)/))[1]);
      const open = () => new Promise<{ mode: string; peer?: number }>((resolve, reject) => {
        const s = smc.connect(port, '127.0.0.1', () => s.write('E'));
        socks.push(s);
        s.on('error', reject);
        s.once('smc', (i) => resolve({ mode: i.mode, ...(i.peerDeclineReason !== undefined ? { peer: i.peerDeclineReason } : {}) }));
      });
      const first = [];
      for (let i = 0; i < 6; i++) first.push(await open());
      assert.deepEqual(first.map((r) => r.mode), ['SMCD', 'SMCD', 'SMCD', 'SMCD', 'TCP', 'TCP']);
      assert.deepEqual(first.slice(4).map((r) => r.peer), [clc.DECLINE.MAX_DMB, clc.DECLINE.MAX_DMB]);
      // Closing gives them back: the next connection gets SMC-D again.
      for (const s of socks.splice(0)) s.end();
      await sleep(300);
      assert.equal((await open()).mode, 'SMCD');
    } finally {
      for (const s of socks) s.destroy();
      srv.child.stdin!.end();
      await srv.exit(10_000);
    }
  });
});

/** A plain node:net server that records what each connection sent, and ends it 300 ms after its first bytes. */
async function plainServer(): Promise<{ server: net.Server; port: number; received: string[] }> {
  const received: string[] = [];
  const server = net.createServer((c) => {
    const i = received.push('') - 1;
    c.on('error', () => {});
    c.on('data', (d: Buffer) => {
      if (received[i] === '') setTimeout(() => c.end(), 300);
      received[i] += d.toString('latin1');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, received };
}

/** A listener entry as an attacker plants it: a live pid (ours), our namespaces, the plain server's port. */
function plantedEntry(port: number): string {
  return JSON.stringify({
    pid: process.pid, start: rdir.processStartTime(process.pid), pidns: fs.readlinkSync('/proc/self/ns/pid'),
    netns: fs.readlinkSync('/proc/self/ns/net'), address: '127.0.0.1', port,
  });
}

/**
 * A victim process with SOFTRDMA_RUNTIME_DIR=dir: two SMC clients to port, each writes
 * 'hello'. With listenFirst it first listens (an SMC server: its entry goes into the
 * directory), prints ready and waits for a line on stdin before it connects.
 */
function victim(dir: string, port: number, listenFirst = false) {
  const code = `import * as smc from ${JSON.stringify(SMC_URL)};
    const log = (o) => console.log(JSON.stringify(o));
    let left = 2;
    const one = () => {
      const s = smc.connect(${port}, '127.0.0.1', () => s.write('hello'));
      s.on('smc', (i) => log({ event: 'smc', info: i }));
      s.on('error', (e) => log({ event: 'error', code: e.code }));
      s.on('data', () => {});
      s.on('end', () => s.end());
      s.on('close', () => { if (--left === 0) { log({ event: 'done', refusals: smc.smcRefusals ? smc.smcRefusals() : null }); process.exit(0); } });
    };
    const go = () => { one(); one(); };
    if (${listenFirst}) {
      smc.createServer(() => {}).listen(0, '127.0.0.1', () => { log({ event: 'ready' }); process.stdin.once('data', go); });
    } else go();`;
  return runNode(code, [], { env: { SOFTRDMA_RUNTIME_DIR: dir }, execArgv: ['--input-type=module', '-e'], stdin: 'pipe' });
}

interface VictimResult { infos: Array<{ mode: string; fallbackReason?: number; fallbackCause?: string }>; refusals: Refusals | null; stderr: string }
async function victimResult(p: ReturnType<typeof victim>): Promise<VictimResult> {
  const done = await p.waitUntil((out) => out.split('\n').find((l) => l.includes('"done"')), 'done', 20_000);
  await p.exit(10_000);
  const infos = p.stdout.split('\n').filter((l) => l.includes('"smc"')).map((l) => (JSON.parse(l) as { info: VictimResult['infos'][number] }).info);
  return { infos, refusals: (JSON.parse(done) as { refusals: Refusals | null }).refusals, stderr: p.stderr };
}

function assertPlainTcp(r: VictimResult, received: string[], kind: string): void {
  assert.deepEqual(received, ['hello', 'hello'], 'the plain server got exactly what the application wrote (no Proposal)');
  assert.deepEqual(r.infos.map((i) => i.mode), ['TCP', 'TCP']);
  assert.ok(r.infos.every((i) => i.fallbackReason === clc.DECLINE.NOSMCDEV && /runtime directory refused/.test(i.fallbackCause ?? '')), JSON.stringify(r.infos));
  assert.ok(r.refusals, 'refusals are counted');
  assert.ok((r.refusals.runtimeDir[kind] ?? 0) >= 2, `refusal '${kind}' counted per connection: ${JSON.stringify(r.refusals)}`);
  assert.equal(r.stderr.match(/SOFTRDMA_RUNTIME_DIR/g)?.length, 1, `one warning per process:\n${r.stderr}`);
}

describe('the runtime directory', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-iso-'));
  fs.chmodSync(tmp, 0o755); // others may look in (as in /tmp), not write
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const scratch: string[] = [];
  after(() => { for (const d of scratch) fs.rmSync(d, { recursive: true, force: true }); });

  /** A directory made by the second user in /tmp (world-writable, sticky), holding a planted listener entry. */
  async function attackerDir(port: number, mode: string): Promise<string> {
    const dir = path.join(os.tmpdir(), `softrdma-iso-${process.pid}-${randomBytes(4).toString('hex')}`);
    scratch.push(dir);
    const p = user!.node(`const fs = require('fs'); const [dir, entry, mode, port] = process.argv.slice(1);
      fs.mkdirSync(dir + '/listeners', { recursive: true }); fs.chmodSync(dir, parseInt(mode, 8));
      fs.writeFileSync(dir + '/listeners/' + port + '.1.1.json', entry); console.log('{}');`, [dir, plantedEntry(port), mode, String(port)]);
    await p.exit();
    assert.ok(fs.existsSync(path.join(dir, 'listeners')), p.stderr);
    return dir;
  }

  it('made beforehand by another user: plain TCP, counted, nothing written there', { skip: noUser }, async () => {
    const plain = await plainServer();
    try {
      const dir = await attackerDir(plain.port, '777');
      const before = tree(dir);
      const r = await victimResult(victim(dir, plain.port));
      assertPlainTcp(r, plain.received, 'owner');
      assert.deepEqual(tree(dir), before, 'nothing written into the other user\'s directory');
    } finally {
      plain.server.close();
    }
  });

  it('a symbolic link, swapped after first use to another user\'s directory: plain TCP, counted, nothing written', { skip: noUser }, async () => {
    const plain = await plainServer();
    try {
      const attacker = await attackerDir(plain.port, '755');
      // A directory of the victim's own that passes every check made through the link.
      const own = fs.mkdtempSync(path.join(tmp, 'own-'));
      const link = path.join(os.tmpdir(), `softrdma-iso-link-${process.pid}-${randomBytes(4).toString('hex')}`);
      scratch.push(link);
      const planted = user!.node(`require('fs').symlinkSync(process.argv[1], process.argv[2]); console.log('{}');`, [own, link]);
      await planted.exit();
      assert.ok(fs.lstatSync(link).isSymbolicLink());
      const before = tree(attacker);
      const p = victim(link, plain.port, true);
      await p.waitFor(/"ready"/);
      // Swap the link to the attacker's directory, as its owner can at any time.
      const swap = user!.node(`const fs = require('fs'); fs.unlinkSync(process.argv[2]); fs.symlinkSync(process.argv[1], process.argv[2]); console.log('{}');`, [attacker, link]);
      await swap.exit();
      p.child.stdin!.write('go\n');
      const r = await victimResult(p);
      assertPlainTcp(r, plain.received, 'symlink');
      assert.deepEqual(tree(attacker), before, 'nothing written into the other user\'s directory');
      assert.deepEqual(tree(own), [], 'nor into the directory the link pointed to first');
    } finally {
      plain.server.close();
    }
  });

  it('an entry file of another user in our own directory: not trusted (plain TCP), counted', { skip: noUser }, async () => {
    const plain = await plainServer();
    try {
      const dir = fs.mkdtempSync(path.join(tmp, 'entry-'));
      fs.mkdirSync(path.join(dir, 'listeners'), { mode: 0o700 });
      const file = path.join(dir, 'listeners', `${plain.port}.1.1.json`);
      fs.writeFileSync(file, plantedEntry(plain.port));
      fs.chownSync(file, user!.uid, user!.gid);
      const r = await victimResult(victim(dir, plain.port));
      assert.deepEqual(plain.received, ['hello', 'hello'], 'the plain server got exactly what the application wrote (no Proposal)');
      assert.deepEqual(r.infos.map((i) => i.mode), ['TCP', 'TCP']);
      assert.ok(r.refusals && (r.refusals.runtimeDir['entry owner'] ?? 0) >= 1, JSON.stringify(r.refusals));
      assert.equal(r.stderr.match(/SOFTRDMA_RUNTIME_DIR/g)?.length, 1, `one warning per process:\n${r.stderr}`);
      assert.ok(!fs.readdirSync(dir).includes('ism'), 'no ism device made (nothing was proposed)');
    } finally {
      plain.server.close();
    }
  });

  it('our own directory with a mode other than 0700: plain TCP, counted, nothing written, mode left alone', { skip: noUser }, async () => {
    const plain = await plainServer();
    try {
      const dir = fs.mkdtempSync(path.join(tmp, 'mode-'));
      fs.chmodSync(dir, 0o777);
      // Anyone could write here: the other user did.
      const p = user!.node(`const fs = require('fs'); fs.mkdirSync(process.argv[1] + '/listeners'); fs.writeFileSync(process.argv[1] + '/listeners/' + process.argv[3] + '.1.1.json', process.argv[2]); console.log('{}');`,
        [dir, plantedEntry(plain.port), String(plain.port)]);
      await p.exit();
      const before = tree(dir);
      const r = await victimResult(victim(dir, plain.port));
      assertPlainTcp(r, plain.received, 'mode');
      assert.deepEqual(tree(dir), before, 'nothing written');
      assert.equal(fs.statSync(dir).mode & 0o777, 0o777, 'not chmod\'ed into shape');
    } finally {
      plain.server.close();
    }
  });
});

describe('pid namespaces', () => {
  const unshare = (() => {
    if (process.getuid?.() !== 0) return 'needs root for unshare -p';
    const r = spawnSync('unshare', ['-p', '-f', '--mount-proc', 'true']);
    return r.status === 0 ? undefined : `unshare -p -f --mount-proc does not work here: ${r.error?.message ?? r.stderr}`;
  })();

  it('a client in another pid namespace (sharing /tmp) neither removes nor uses a live listener\'s entry', { skip: unshare }, async () => {
    const port = 30000 + (process.pid % 20000);
    const reg = new discovery.ListenerRegistration('127.0.0.1', port);
    try {
      const file = fs.readdirSync(path.join(runtime, 'listeners')).find((n) => n.startsWith(`${port}.`));
      assert.ok(file);
      const code = `import { isSmcListener } from ${JSON.stringify(DISCOVERY_URL)}; import fs from 'node:fs';
        console.log(JSON.stringify({ listener: isSmcListener('127.0.0.1', ${port}), pidns: fs.readlinkSync('/proc/self/ns/pid'), pid: process.pid }));`;
      const child = spawn('unshare', ['-p', '-f', '--mount-proc', process.execPath, '--input-type=module', '-e', code], { env: { ...process.env, SOFTRDMA_RUNTIME_DIR: runtime }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { err += d; });
      const status = await new Promise<number | null>((r) => child.on('close', r));
      assert.equal(status, 0, err);
      const r = JSON.parse(out.trim().split('\n').pop()!) as { listener: boolean; pidns: string; pid: number };
      assert.notEqual(r.pidns, fs.readlinkSync('/proc/self/ns/pid'), 'it ran in another pid namespace');
      assert.equal(r.listener, false, 'a listener it cannot judge is not proposed to');
      assert.ok(fs.existsSync(path.join(runtime, 'listeners', file)), 'the live listener\'s entry is still there');
      discovery.clearDiscoveryCache();
      assert.equal(discovery.isSmcListener('127.0.0.1', port), true, 'and clients here still find it');
    } finally {
      reg.remove();
    }
  });

  it('entries of another pid namespace are never removed; dead ones of ours are', () => {
    const dir = path.join(runtime, 'listeners');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const port = 31000 + (process.pid % 20000);
    const base = { start: '1', netns: fs.readlinkSync('/proc/self/ns/net'), address: '127.0.0.1', port };
    const foreign = path.join(dir, `${port}.999999.1.json`);
    fs.writeFileSync(foreign, JSON.stringify({ ...base, pid: 4_000_000, pidns: 'pid:[1]' }), { mode: 0o600 });
    const dead = path.join(dir, `${port}.999998.1.json`);
    fs.writeFileSync(dead, JSON.stringify({ ...base, pid: 4_000_001, pidns: fs.readlinkSync('/proc/self/ns/pid') }), { mode: 0o600 });
    discovery.clearDiscoveryCache();
    assert.equal(discovery.isSmcListener('127.0.0.1', port), false);
    assert.ok(fs.existsSync(foreign), 'an entry of another pid namespace is kept');
    assert.ok(!fs.existsSync(dead), 'a dead entry of our pid namespace is removed');
    fs.rmSync(foreign);

    // The same for ism device entries.
    const dev = defaultIsmDevice();
    const gid = 0x1234567890abcdefn;
    const ism = path.join(runtime, 'ism', `${hex64(gid)}.json`);
    fs.writeFileSync(ism, JSON.stringify({ gid: hex64(gid), chid: 0xffff, pid: 4_000_000, start: '1', pidns: 'pid:[1]', netns: base.netns, pageFd: 3, slots: 8, bell: 'x.sock', key: '00'.repeat(32) }), { mode: 0o600 });
    assert.equal(dev.reachable(gid), false);
    assert.throws(() => dev.attachDmb(gid, 5n), /ENODEV|pid namespace|gone/);
    assert.ok(fs.existsSync(ism), 'a device entry of another pid namespace is kept');
    fs.rmSync(ism);
  });
});

describe('a device that cannot be made', () => {
  it('leaks nothing: 500 failed constructions and 500 Proposals leave descriptors and memfds flat', { skip: noUser }, async () => {
    // A runtime directory that belongs to someone else: refused by this build and by older ones.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-iso-leak-'));
    fs.chownSync(dir, user!.uid, user!.gid);
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const proposal = clc.encodeProposal({ version: 1, path: clc.SMC_TYPE_D, peerId: randomBytes(8), smcdGid: 0x42n, chid: 0xffff, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] });
    const code = `import fs from 'node:fs'; import net from 'node:net';
      import { IsmDevice } from ${JSON.stringify(DEVICE_URL)}; import * as smc from ${JSON.stringify(SMC_URL)};
      const fds = () => fs.readdirSync('/proc/self/fd');
      const memfds = () => fds().filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).startsWith('/memfd:'); } catch { return false; } }).length;
      const proposal = Buffer.from(${JSON.stringify(proposal.toString('hex'))}, 'hex');
      const srv = smc.createServer((c) => c.on('error', () => {}));
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      const port = srv.address().port;
      const propose = () => new Promise((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => c.write(proposal));
        c.on('data', () => c.destroy()); c.on('error', () => {}); c.on('close', resolve);
      });
      const open = () => { try { IsmDevice.open({ slots: 64 }).close(); return true; } catch { return false; } };
      // Once first, so whatever is made once per process (libc binding, status socket) is counted before.
      open(); await propose();
      await new Promise((r) => setTimeout(r, 100));
      const before = { fds: fds().length, memfds: memfds() };
      let opened = 0;
      for (let i = 0; i < 500; i++) if (open()) opened++;
      for (let i = 0; i < 500; i++) await propose();
      await new Promise((r) => setTimeout(r, 200));
      console.log(JSON.stringify({ before, after: { fds: fds().length, memfds: memfds() }, opened }));
      process.exit(0);`;
    const p = runNode(code, [], { env: { SOFTRDMA_RUNTIME_DIR: dir }, execArgv: ['--no-warnings', '--input-type=module', '-e'] });
    const line = await p.waitFor(/\{"before".*\}/, 60_000);
    await p.exit(10_000);
    const r = JSON.parse(line[0]) as { before: { fds: number; memfds: number }; after: { fds: number; memfds: number }; opened: number };
    assert.equal(r.opened, 0, 'the directory is refused, so no device can be made');
    assert.equal(r.after.memfds, r.before.memfds, `memfds: ${JSON.stringify(r)}`);
    assert.ok(r.after.fds - r.before.fds <= 2, `descriptors: ${JSON.stringify(r)}`);
  });
});

describe('listener lifetime', () => {
  it('20 servers listen and close without a warning and leave no exit listener behind', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const exitBefore = process.listenerCount('exit');
    try {
      const servers = await Promise.all(Array.from({ length: 20 }, () => echoServer()));
      assert.ok(process.listenerCount('exit') - exitBefore <= 1, `${process.listenerCount('exit') - exitBefore} exit listeners for 20 servers`);
      await Promise.all(servers.map(({ server }) => new Promise((r) => server.close(r))));
      await sleep(10);
      assert.equal(process.listenerCount('exit'), exitBefore);
      assert.deepEqual(warnings.map((w) => w.name), []);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('server.close() removes the entry at once, while a connection is still open: a new listener on the port gets no Proposal', async () => {
    const { server, port } = await echoServer();
    const held = smc.connect(port, '127.0.0.1');
    try {
      await new Promise((r) => held.once('smc', r));
      const closed = new Promise((r) => server.close(r));
      discovery.clearDiscoveryCache();
      assert.equal(discovery.isSmcListener('127.0.0.1', port), false, 'the port is no longer listed');
      assert.deepEqual(fs.readdirSync(path.join(runtime, 'listeners')).filter((n) => n.startsWith(`${port}.`)), []);
      // Another program takes the port while our connection is still open.
      const received: string[] = [];
      const plain = net.createServer((c) => { c.on('error', () => {}); c.on('data', (d: Buffer) => { received.push(d.toString('latin1')); c.end(); }); });
      await new Promise<void>((r) => plain.listen(port, '127.0.0.1', () => r()));
      try {
        const info = await new Promise<{ mode: string; fallbackReason?: number }>((resolve, reject) => {
          const s = smc.connect(port, '127.0.0.1', () => s.write('hello'));
          s.on('error', reject);
          s.once('smc', (i) => resolve(i));
          s.on('data', () => {});
          s.on('end', () => s.end());
        });
        await sleep(50);
        assert.equal(info.mode, 'TCP');
        assert.equal(info.fallbackReason, clc.DECLINE.PEERNOSMC);
        assert.deepEqual(received, ['hello'], 'the plain server got no Proposal');
      } finally {
        plain.close();
      }
      held.end();
      await closed;
    } finally {
      held.destroy();
    }
  });
});

describe('the runtime directory removed under a live device (last: it removes this file\'s directory)', () => {
  it('the device makes its entry and its doorbell again, and a new peer can ring it', async () => {
    const a = IsmDevice.open({ slots: 64 });
    try {
      fs.rmSync(runtime, { recursive: true, force: true });
      rdir.forgetDirectories();
      await sleep(1100); // ensureRegistered checks at most once a second
      a.ensureRegistered();
      assert.equal(fs.statSync(runtime).mode & 0o777, 0o700);
      assert.ok(fs.existsSync(path.join(runtime, 'ism', `${hex64(a.gid)}.json`)), 'entry written again');
      const b = IsmDevice.open({ slots: 64 });
      try {
        const dmb = a.registerDmb(4096);
        const r = b.attachDmb(a.gid, dmb.token);
        const rang = new Promise<void>((resolve) => { dmb.onSignal = resolve; });
        dmb.arm();
        assert.equal(r.signal(), true);
        const keep = setTimeout(() => {}, 5000); // doorbell sockets are unref'd
        await rang;
        clearTimeout(keep);
        r.detach();
        a.unregisterDmb(dmb);
      } finally {
        b.close();
      }
    } finally {
      a.close();
    }
  });
});
