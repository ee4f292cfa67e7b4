// An SMC-D Accept or Confirm that names a DMB another connection uses (a review's finding): a
// peer of the same user, buggy or hostile, names the token of a DMB this process already
// writes into for a live connection, or one of this process's own receive DMBs (its own GID).
// Taken, our writes on the new connection would land in the other connection's ring. Each must
// be declined (SYNCERR), and the other connection must go on byte-exact.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { SmcdConnection } from '../../src/smc/smcd-connection.js';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('dmb-taken');
process.env.SOFTRDMA_SMC_LEARN = '0';
const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);
const clc = await import('../../src/smc/clc.js');
const { smcState } = await import('../../src/smc/state.js');
const { defaultIsmDevice } = await import('../../src/ism/device.js');
const { proposalProof } = await import('../../src/smc/peer-proof.js');
const { ListenerRegistration } = await import('../../src/smc/discovery.js');
const { DECLINE } = clc;

const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => { t = setTimeout(() => rej(new Error(`no ${what} within ${ms} ms`)), ms); })]).finally(() => clearTimeout(t));
}

/** Settled (not pending) SMC info of a socket, waited for on its 'smc' event. */
async function settled(s: net.Socket): Promise<ReturnType<typeof smc.getSmcInfo>> {
  if (!smc.getSmcInfo(s).pending) return smc.getSmcInfo(s);
  await within(once(s, 'smc'), 5000, "'smc' event");
  return smc.getSmcInfo(s);
}

/** An echo round trip of n bytes of b on s: the bytes come back as sent. */
async function echoes(s: net.Socket, n: number, b: number): Promise<void> {
  let got = Buffer.alloc(0);
  const onData = (d: Buffer) => { got = Buffer.concat([got, d]); };
  s.on('data', onData);
  s.write(Buffer.alloc(n, b));
  await within(new Promise<void>((r) => { const iv = setInterval(() => { if (got.length >= n) { clearInterval(iv); r(); } }, 2); }), 5000, 'the echo');
  s.off('data', onData);
  assert.deepEqual(got, Buffer.alloc(n, b), 'the other connection got bytes that were not its own');
}

after(() => defaultIsmDevice().close());

test("client: an Accept naming the client's own GID and its receive DMB of a live connection with another process is declined; that connection goes on", async () => {
  const peer = runNode(SERVER, ['--api', 'smc'], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime, SOFTRDMA_SMC_LEARN: '0' } });
  try {
    const port = Number((await peer.waitFor(/"port":(\d+)/))[1]);
    const legit = smc.connect({ port, host: '127.0.0.1' });
    legit.on('error', () => {});
    assert.equal((await settled(legit)).mode, 'SMCD');
    legit.write('E');
    await echoes(legit, 100, 0x41);
    const dev = defaultIsmDevice();
    const token = (smcState(legit)!.conn as SmcdConnection).rx.token;

    // The hostile server: registered as an SMC listener, as any process of the user can be.
    const hostile = net.createServer((s) => {
      s.on('error', () => {});
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        const first = buf.length === 0;
        buf = Buffer.concat([buf, d]);
        if (first || buf.length >= 8) {
          if (buf.length >= 8 && buf.length >= buf.readUInt16BE(5)) {
            s.removeAllListeners('data');
            s.resume();
            s.write(clc.encodeAcceptConfirm({ type: clc.CLC_ACCEPT, version: 1, firstContact: true, gid: dev.gid, token, dmbeIndex: 0, dmbeSize: clc.compressBufSize(1 << 20), linkId: 0 }));
          }
        }
      });
    });
    hostile.listen(0, '127.0.0.1');
    await once(hostile, 'listening');
    const hport = (hostile.address() as net.AddressInfo).port;
    const reg = new ListenerRegistration('127.0.0.1', hport);
    try {
      const c = smc.connect({ port: hport, host: '127.0.0.1' });
      c.on('error', () => {});
      const info = await settled(c);
      assert.equal(info.mode, 'TCP', JSON.stringify(info));
      assert.equal(info.fallbackReason, DECLINE.SYNCERR, JSON.stringify(info));
      // Were it on SMC-D, these bytes would go into the legit connection's ring.
      c.write(Buffer.alloc(64, 0x58));
      await echoes(legit, 100, 0x42);
      c.destroy();
    } finally {
      reg.remove();
      hostile.close();
    }
    legit.destroy();
  } finally {
    peer.child.stdin!.end();
    await peer.exit(10_000);
  }
});

test('server: a Confirm naming a DMB the server already writes into for a live connection is declined and the connection reset; that connection goes on', async () => {
  const server = smc.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted: net.Socket[] = [];
  server.on('connection', (s: net.Socket) => accepted.push(s));
  try {
    const legit = smc.connect({ port, host: '127.0.0.1' });
    legit.on('error', () => {});
    assert.equal((await settled(legit)).mode, 'SMCD');
    await echoes(legit, 100, 0x41);
    const dev = defaultIsmDevice();
    // The legit client's receive DMB: the server attached it, and writes the echo into it.
    const token = (smcState(legit)!.conn as SmcdConnection).rx.token;

    const raw = net.connect(port, '127.0.0.1');
    raw.on('error', () => {});
    await once(raw, 'connect');
    let got = Buffer.alloc(0);
    raw.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
    const closed = once(raw, 'close');
    raw.write(clc.encodeProposal({ version: 1, path: clc.SMC_TYPE_D, peerId: clc.localSystemId(), smcdGid: dev.gid, chid: dev.chid, proof: proposalProof(dev, raw), subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] }));
    await within(new Promise<void>((r) => { const iv = setInterval(() => { if (got.length >= 48) { clearInterval(iv); r(); } }, 2); }), 5000, 'the Accept');
    assert.equal(got[4], clc.CLC_ACCEPT);
    raw.write(clc.encodeAcceptConfirm({ type: clc.CLC_CONFIRM, version: 1, firstContact: true, gid: dev.gid, token, dmbeIndex: 0, dmbeSize: clc.compressBufSize(1 << 20), linkId: 0 }));
    await within(closed, 5000, 'the reset');
    // What came after the Accept: the server's Decline, SYNCERR.
    const decline = clc.decodeClc(got.subarray(48, 48 + got.readUInt16BE(48 + 5)));
    assert.equal(decline.type, clc.CLC_DECLINE, got.toString('hex'));
    assert.equal((decline as { diagnosis: number }).diagnosis, DECLINE.SYNCERR);
    const rawSide = accepted.find((s) => s.remotePort === raw.localPort);
    assert.ok(rawSide && smc.getSmcInfo(rawSide).mode !== 'SMCD', 'the server took the DMB');
    await echoes(legit, 100, 0x42);
    legit.destroy();
  } finally {
    server.close();
  }
});
