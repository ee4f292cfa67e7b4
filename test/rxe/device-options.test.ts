// createRxeDevice's options as a JavaScript caller may get them wrong (a review's findings):
// each is refused with EINVAL naming the option, before any socket is bound (node:dgram would
// bind port 70000 as 4464); a wildcard address is no port's address (Linux has no all-zero
// GID); an IPv4-mapped IPv6 address is the IPv4 address, as a '::' server reports its IPv4 peers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Access, QpState, QpType, SendFlags, WcStatus, WrOpcode, connectQp, createRxeDevice, rxeOf, type MtuValue, type RemoteQpInfo, type RxeDeviceOptions } from '../../src/index.js';
import { IsmDevice } from '../../src/ism/device.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { connect, openSide, waitCompletions } from '../helpers/pair.js';

testRuntimeDir('device-options');

async function refused(opts: unknown, attr: string, message: RegExp): Promise<void> {
  await assert.rejects(createRxeDevice(opts as RxeDeviceOptions), (e: Error & { code?: string; attr?: string }) => {
    assert.equal(e.code, 'EINVAL', e.message);
    assert.equal(e.attr, attr, e.message);
    assert.match(e.message, message);
    return true;
  });
}

test('bad options are EINVAL naming the option, and nothing is bound', async () => {
  await refused(undefined, 'options', /options must be an object with an address, got undefined/);
  await refused({ address: '127.0.0.2', port: 70000 }, 'port', /port must be an integer from 0 to 65535, got 70000/);
  await refused({ address: '127.0.0.2', port: -1 }, 'port', /got -1/);
  await refused({ address: '127.0.0.2', port: '4791' }, 'port', /got '4791'/);
  await refused({ address: '127.0.0.2', mtu: 3 }, 'mtu', /mtu must be 256, 512, 1024, 2048 or 4096 \(bytes\), got 3/);
  await refused({ address: '127.0.0.2', mtu: '4096' }, 'mtu', /got '4096'/);
  await refused({ address: '127.0.0.2', name: 5 }, 'name', /name must be a non-empty string/);
  await refused({ address: '127.0.0.2', gso: 'no' }, 'gso', /gso must be a boolean/);
  for (const address of ['0.0.0.0', '::', '::0']) await refused({ address }, 'address', /not the wildcard/);
});

test('an IPv4-mapped address makes an IPv4 device: its own GID, reachable from an IPv4 device', async () => {
  const a = await openSide('::ffff:127.0.0.2', 0);
  const b = await openSide('127.0.0.3', rxeOf(a.dev).port).catch(async (e: unknown) => { await a.dev.close(); throw e; });
  try {
    assert.equal(rxeOf(a.dev).address, '127.0.0.2');
    assert.equal(rxeOf(a.dev).family, 4);
    assert.equal(Buffer.from(a.ctx.queryGid()).toString('hex'), '00000000000000000000ffff7f000002');
    a.pd.createAh({ grh: { dgid: a.ctx.queryGid() } }).destroy();
    // An RC WRITE from the IPv4 device into the mapped one, byte-exact.
    const cap = { maxSendWr: 4, maxRecvWr: 4 };
    const qa = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap });
    const qb = b.pd.createQp({ qpType: QpType.RC, sendCq: b.cq, recvCq: b.cq, cap });
    connect(qa, { qpn: qb.qpn, gid: b.ctx.queryGid() }, { psn: 1, remotePsn: 2 });
    connect(qb, { qpn: qa.qpn, gid: a.ctx.queryGid() }, { psn: 2, remotePsn: 1 });
    const dst = Buffer.alloc(64);
    const rmr = a.pd.regMr(dst, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const src = Buffer.alloc(64, 0x5a);
    const smr = b.pd.regMr(src, 0);
    qb.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED, sgList: [smr.sge()], rdma: { remoteAddr: rmr.addr, rkey: rmr.rkey } });
    const [wc] = await waitCompletions(b.cq, 1);
    assert.equal(wc!.status, WcStatus.SUCCESS);
    assert.deepEqual(dst, src);
  } finally {
    await a.dev.close();
    await b.dev.close();
  }
});

test('ism: a RemoteDmb write of a string is EINVAL (it wrote zeros and said nothing), attach and unregister check their arguments', () => {
  const dev = IsmDevice.open();
  try {
    const dmb = dev.registerDmb(4096);
    dmb.view.fill(0x2e);
    const remote = dev.attachDmb(dev.gid, dmb.token);
    assert.throws(() => remote.write(0, 'hello' as unknown as Uint8Array), { code: 'EINVAL', message: /data must be a Buffer or Uint8Array, got a string/ });
    assert.equal(dmb.view[0], 0x2e, 'nothing written');
    assert.throws(() => dev.attachDmb(String(dev.gid) as unknown as bigint, dmb.token), { code: 'EINVAL', message: /peerGid must be a bigint/ });
    assert.throws(() => dev.unregisterDmb(undefined as unknown as never), { code: 'EINVAL', message: /unregisterDmb needs a Dmb/ });
    remote.detach();
    dev.unregisterDmb(dmb);
  } finally {
    dev.close();
  }
});

test('connectQp checks the remote QP first, and a QP that started in RESET is left in RESET when a step fails', async () => {
  const a = await openSide('127.0.0.2', 0);
  try {
    const qp = a.pd.createQp({ qpType: QpType.RC, sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
    const attr = (e: unknown) => (e as { attr?: string }).attr;
    assert.throws(() => connectQp(qp, undefined as unknown as RemoteQpInfo), (e) => attr(e) === 'remote');
    assert.throws(() => connectQp(qp, { qpn: '5', psn: 0, gid: a.ctx.queryGid() } as unknown as RemoteQpInfo), (e) => attr(e) === 'remote.qpn');
    assert.throws(() => connectQp(qp, { qpn: 5, psn: 0, gid: Buffer.alloc(4) }), (e) => attr(e) === 'remote.gid');
    assert.equal(qp.state, QpState.RESET);
    // A path MTU no QP takes: RTR fails after INIT, and the QP goes back to RESET.
    assert.throws(() => connectQp(qp, { qpn: 5, psn: 0, gid: a.ctx.queryGid() }, { mtu: 9 as MtuValue }), { code: 'EINVAL', message: /path_mtu/ });
    assert.equal(qp.state, QpState.RESET);
    qp.destroy();
  } finally {
    await a.dev.close();
  }
});
