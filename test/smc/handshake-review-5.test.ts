// Handshake findings of a review (docs/smc.md, "How a connection is made"): an 'smc' listener
// that throws loses nothing the application wrote, ended or was sent; a client in the middle of
// an SMC-R handshake that reads bytes that are no CLC message after the server's Accept fails
// the connect (Linux's smc_clc_wait_msg: EPROTO) instead of splitting the connection; a server
// whose Accept is out and that reads part of a Confirm and then the client's end hands the
// application no data (ECONNRESET); a v2 Decline (44 bytes) on the SMC-D path is the peer's
// Decline, with its reason.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runNode, jsonLines } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('handshake-review-5');
process.env.SOFTRDMA_SMC_LEARN = '0';
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);
const clc = await import('../../src/smc/clc.js');
const { kSmc } = await import('../../src/smc/state.js');
const { inSmcrHandshake } = await import('../../src/smc/smcr/clc-flow.js');
const { SmcrLinkGroup } = await import('../../src/smc/smcr/lgr.js');
const { defaultIsmDevice } = await import('../../src/ism/device.js');
const { proposalProof } = await import('../../src/smc/peer-proof.js');
const { setup, within } = await import('./smcr-relay-harness.js');
const { CLC_ACCEPT, DECLINE } = clc;

const PEER = fileURLToPath(new URL('./smc-throw-listener-peer.js', import.meta.url));
const hex = (n: number | undefined) => (n === undefined ? 'none' : `0x${(n >>> 0).toString(16)}`);

async function throwingPeer(mode: string): Promise<Record<string, unknown>> {
  const p = runNode(PEER, [mode]);
  assert.equal(await p.exit(20_000), 0, p.stdout + p.stderr);
  const [r] = jsonLines(p.stdout);
  assert.ok(r, p.stdout + p.stderr);
  return r;
}

for (const [mode, settles] of [['smcd', 'SMCD'], ['tcp', 'TCP']] as const) {
  test(`an 'smc' listener that throws (${settles}): the write and end() held during the handshake still go out, their callbacks come`, async () => {
    const r = await throwingPeer(mode);
    assert.equal(r.fail, undefined, JSON.stringify(r));
    assert.equal(r.mode, settles);
    assert.equal(r.serverGot, 'hello', JSON.stringify(r));
    assert.deepEqual(r.thrown, ['client smc listener']);
    const events = r.events as string[];
    assert.ok(events.includes('client write ok') && events.includes('client end'), JSON.stringify(r));
  });
}

test('\'smc\' listeners that throw at both ends of a server that writes first: its write goes out, the client gets it', async () => {
  const r = await throwingPeer('banner');
  assert.equal(r.fail, undefined, JSON.stringify(r));
  assert.equal(r.mode, 'TCP');
  assert.equal(r.clientGot, 'banner', JSON.stringify(r));
  assert.deepEqual((r.thrown as string[]).sort(), ['client smc listener', 'server smc listener']);
  assert.ok((r.events as string[]).includes('server write ok'), JSON.stringify(r));
});

test('SMC-R client: bytes that are no CLC message after the server\'s Accept fail the connect and give back its handshake (no split connection)', async (t) => {
  const env = await setup(t);
  env.next({ server: (m, frame) => (m.type === CLC_ACCEPT ? Buffer.concat([frame, Buffer.from('HELLO')]) : undefined) });
  const c = env.connect();
  const seen: string[] = [];
  c.on('smc', (i: { mode: string; fallbackCause?: string }) => seen.push(`smc ${i.mode} ${i.fallbackCause ?? ''}`));
  c.on('error', (e: NodeJS.ErrnoException) => seen.push(`error ${e.code}`));
  let data = '';
  c.on('data', (d: Buffer) => { data += d.toString(); });
  await within(new Promise((resolve) => c.once('close', resolve)), 5000, 'the client closes');
  assert.deepEqual(seen, ['error ECONNRESET']);
  assert.equal(data, '');
  assert.equal(inSmcrHandshake((c as unknown as Record<symbol, object>)[kSmc]!), false, 'the handshake entry was given back');
  const held = SmcrLinkGroup.list().filter((g) => g.role === 'client' && !g.dead && g.conns.size > 0);
  assert.equal(held.length, 0, 'no client link group holds a connection for it');
});

/**
 * A raw client with a valid SMC-D Proposal (the proof from this process's ism device) to an SMC
 * server; after the server's Accept (48 bytes), `answer` is what it does.
 */
async function rawSmcdClient(answer: (c: net.Socket) => void) {
  const dev = defaultIsmDevice();
  const serverSide = { data: '', errors: [] as string[], info: undefined as ReturnType<typeof smc.getSmcInfo> | undefined };
  let clientGot = Buffer.alloc(0);
  let clientClosed!: () => void;
  const clientClose = new Promise<void>((resolve) => { clientClosed = resolve; });
  const serverClose = new Promise<void>((resolve) => {
    const srv = smc.createServer({ smcHandshakeTimeout: 400 }, (s) => {
      s.on('data', (d: Buffer) => { serverSide.data += d.toString('latin1'); });
      s.on('error', (e: NodeJS.ErrnoException) => serverSide.errors.push(e.code ?? e.message));
      s.on('smc', (i: ReturnType<typeof smc.getSmcInfo>) => { serverSide.info = i; });
      s.on('end', () => s.end());
      s.on('close', () => { srv.close(); resolve(); });
    });
    srv.listen(0, '127.0.0.1', () => {
      const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1', () => {
        c.write(clc.encodeProposal({ version: 1, path: clc.SMC_TYPE_D, peerId: Buffer.alloc(8, 1), smcdGid: dev.gid, chid: dev.chid, proof: proposalProof(dev, c), subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] }));
      });
      let answered = false;
      c.on('data', (d: Buffer) => {
        clientGot = Buffer.concat([clientGot, d]);
        if (!answered && clientGot.length >= 48) { answered = true; answer(c); }
      });
      c.on('end', () => c.end());
      c.on('error', () => {});
      c.on('close', () => clientClosed());
    });
  });
  await within(Promise.all([serverClose, clientClose]), 5000, 'both ends close');
  return { serverSide, afterAccept: clientGot.subarray(48) };
}

test('SMC-D server: part of a Confirm and then the client\'s end after our Accept: ECONNRESET, no data for the application', async () => {
  const dev = defaultIsmDevice();
  const partial = clc.encodeAcceptConfirm({ type: clc.CLC_CONFIRM, version: 1, firstContact: true, gid: dev.gid, token: 1n, dmbeIndex: 0, dmbeSize: 0, linkId: 0 }).subarray(0, 10);
  const { serverSide } = await rawSmcdClient((c) => c.end(partial));
  assert.equal(serverSide.data, '', 'the Confirm\'s bytes are no data');
  assert.deepEqual(serverSide.errors, ['ECONNRESET']);
  assert.equal(serverSide.info, undefined, 'never settled');
});

test('SMC-D server: a v2 Decline (44 bytes) after our Accept is the peer\'s Decline, with its reason; the data after it arrives', async () => {
  const decline = clc.encodeSmcDecline({ version: 2, outOfSync: false, peerId: Buffer.alloc(8), diagnosis: DECLINE.TIMEOUT_CL, osType: 2, diagnosisV2: [0, 0, 0, 0] });
  assert.equal(decline.length, 44);
  const { serverSide, afterAccept } = await rawSmcdClient((c) => { c.write(Buffer.concat([decline, Buffer.from('hello')])); c.end(); });
  assert.equal(serverSide.info?.mode, 'TCP');
  assert.equal(hex(serverSide.info?.fallbackReason), hex(DECLINE.PEERDECL), serverSide.info?.fallbackCause);
  assert.equal(hex(serverSide.info?.peerDeclineReason), hex(DECLINE.TIMEOUT_CL));
  assert.equal(serverSide.data, 'hello');
  assert.deepEqual(serverSide.errors, []);
  assert.equal(afterAccept.toString('hex'), '', 'the server sent no Decline of its own');
});
