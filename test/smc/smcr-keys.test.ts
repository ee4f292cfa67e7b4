// An RMB's rkey opens it only to the link group it was given to: each group registers its
// buffers in a PD of its own (lgr.ts pdOn; Linux: a PD per link), so a peer that knows the keys
// of its own RMBs gets nowhere by guessing the key byte of a neighbour's RMB on the same
// device. Two client/server link group pairs between two rxe devices in one process, built at
// the link group level (no sockets, no namespaces).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WcStatus, wcStatusStr } from '../../src/abi/enums.js';
import { remoteAddr } from '../../src/abi/remote-addr.js';
import { smcrDeviceOf } from '../../src/smc/smcr/device.js';
import { SmcrLinkGroup } from '../../src/smc/smcr/lgr.js';
import { twoDevices } from '../helpers/pair.js';

async function linkedPair(a: Parameters<typeof smcrDeviceOf>[0], b: Parameters<typeof smcrDeviceOf>[0]) {
  const cl = new SmcrLinkGroup(smcrDeviceOf(a), 'client');
  const sv = new SmcrLinkGroup(smcrDeviceOf(b), 'server');
  cl.first.connect({ qpn: sv.first.local.qpn, psn: sv.first.local.psn, gid: sv.first.local.gid, mtu: sv.first.local.mtu });
  sv.first.connect({ qpn: cl.first.local.qpn, psn: cl.first.local.psn, gid: cl.first.local.gid, mtu: cl.first.local.mtu });
  await Promise.all([cl.confirmFirstLink(), sv.confirmFirstLink()]);
  return { cl, sv };
}

/** Wait (bounded) until `cond` holds, polling on the event loop. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('a peer can write into the RMBs of its own link group, and into no other group\'s with their exact keys', async () => {
  const { a, b, close } = await twoDevices();
  const groups: SmcrLinkGroup[] = [];
  try {
    const one = await linkedPair(a, b);
    const two = await linkedPair(a, b);
    groups.push(one.cl, one.sv, two.cl, two.sv);
    const src = one.cl.takeRmb(16384);
    src.buf.fill(0x5a, 0, 64);
    const own = one.sv.takeRmb(16384);
    const neighbour = two.sv.takeRmb(16384);
    const link = one.cl.first;
    const write = (to: typeof own) => link.write(src.mr.sge(0, 64), remoteAddr(BigInt(to.mr.addr)), to.mr.rkey);
    write(own);
    await until(() => own.buf[0] === 0x5a && own.buf[63] === 0x5a, 'the write into our own group\'s RMB');
    assert.equal(link.isDown, false);
    write(neighbour);
    await until(() => link.isDown, 'the link to fail on the neighbour\'s key');
    assert.match(link.downReason, new RegExp(`RDMA WRITE completed with ${wcStatusStr(WcStatus.REM_ACCESS_ERR)}`));
    assert.ok(neighbour.buf.subarray(0, 64).every((x) => x === 0), 'no byte landed in the other group\'s RMB');
  } finally {
    for (const g of groups) g.free(false, 'test over');
    await new Promise((r) => setImmediate(r));
    await close();
  }
});
