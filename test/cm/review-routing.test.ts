// Two findings of a review of the CM against Linux 6.1 cm.c and cma.c, each with the case that
// showed it: a REJ for TIMEOUT is matched by the CA GUID in its ARI whatever its info length says
// (cm_acquire_rejected_id), and an UNREACHABLE from REP resends running out leaves the QP as it
// is (cma_ib_handler moves a QP to ERR on a REJ only).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QpState, rxeOf } from '../../src/index.js';
import { createEventChannel, createId, type RdmaCmEvent, type RdmaCmId } from '../../src/cm/index.js';
import { CmTable } from '../../src/cm/cm-table.js';
import { CmMsgResponse, RejReason, blankCm, decodeCmMad, encodeCmMad, type CmMad, type CmMessage } from '../../src/cm/wire/cm-messages.js';
import { PortSpace, cmaReqPrivateData, serviceIdFor } from '../../src/cm/wire/cma-header.js';
import { twoDevices } from '../helpers/pair.js';
import { resolvedTo, withQp } from '../helpers/cm-pair.js';

const ACTIVE_GUID = 0x1111222233334444n, PASSIVE_GUID = 0x5555666677778888n;
const SID = serviceIdFor(PortSpace.TCP, 7174);
const ACTIVE_ID = 0xa1a1a1a1;

function mad(msg: CmMessage, tid: bigint): CmMad {
  const d = decodeCmMad(encodeCmMad(msg, tid));
  assert.ok(d.ok);
  return d.value;
}

/** A passive side that answered a REQ with its REP (REP_SENT). */
function passive(): { t: CmTable; pid: number } {
  const t = new CmTable({ localCaGuid: PASSIVE_GUID });
  const lid = t.create().localId;
  t.listen(lid, SID);
  const req = {
    ...blankCm('REQ'), localCommId: ACTIVE_ID, serviceId: SID, localCaGuid: ACTIVE_GUID, localQpn: 0x111, maxCmRetries: 15,
    localCmResponseTimeout: 20, remoteCmResponseTimeout: 20, primaryLocalAckTimeout: 19, pathMtu: 3,
    privateData: cmaReqPrivateData({ ipVersion: 4, srcPort: 1, srcAddr: '1.1.1.1', dstAddr: '2.2.2.2' }),
  };
  const pid = t.receive(mad(req, 7n)).outcomes[0]!.localId!;
  const { kind: _k, localCommId: _l, remoteCommId: _r, ...rep } = blankCm('REP');
  t.call(pid, { type: 'send_rep', rep: { ...rep, localQpn: 0x222, localCaGuid: PASSIVE_GUID } });
  assert.equal(t.get(pid)!.state, 'REP_SENT');
  return { t, pid };
}

describe('a REJ for TIMEOUT is matched by the GUID in its ARI (cm_acquire_rejected_id)', () => {
  const ari = (guid: bigint) => { const b = Buffer.alloc(72); b.writeBigUInt64BE(guid); return b; };
  const rej = (over: object) => ({ ...blankCm('REJ'), localCommId: ACTIVE_ID, messageRejected: CmMsgResponse.OTHER, reason: RejReason.TIMEOUT, ...over });

  it('with the GUID in the ARI and an info length of 0: taken', () => {
    const { t, pid } = passive();
    const r = t.receive(mad(rej({ remoteCommId: 0, rejectedInfoLength: 0, ari: ari(ACTIVE_GUID) }), 9n));
    assert.equal(r.dropped, undefined);
    assert.equal(t.get(pid)?.state ?? 'IDLE', 'IDLE');
  });

  it('without the GUID, even with both comm ids right: dropped', () => {
    const { t, pid } = passive();
    const r = t.receive(mad(rej({ remoteCommId: pid, rejectedInfoLength: 0 }), 9n));
    assert.equal(r.dropped, 'unexpected');
    assert.equal(t.get(pid)!.state, 'REP_SENT');
  });
});

describe('UNREACHABLE leaves the QP alone (cma_ib_handler)', () => {
  it('a passive side whose REP resends run out (every RTU lost) reports UNREACHABLE with its QP still in RTS', async () => {
    const { a, close } = await twoDevices();
    const sch = createEventChannel(), cch = createEventChannel();
    try {
      const l = createId(sch, 'tcp');
      l.bindAddr('127.0.0.3', 0);
      l.listen();
      let server: RdmaCmId | undefined;
      sch.on('CONNECT_REQUEST', (e: RdmaCmEvent) => {
        server = e.id;
        withQp(e.id);
        // From now on nothing the client sends arrives: its RTUs are lost.
        rxeOf(a).faults = { drop: 1 };
        e.id.accept();
      });
      // The REP waits the client's response timeout (2^8 x 4.096 us), resent twice.
      const c = await resolvedTo(cch, l, { cmResponseTimeout: 8, maxCmRetries: 2, packetLifeTime: 1 });
      withQp(c);
      c.connect();
      assert.equal((await cch.next(['ESTABLISHED', 'REJECTED', 'UNREACHABLE'], 5000, c)).event, 'ESTABLISHED');
      const e = await sch.next(['ESTABLISHED', 'UNREACHABLE', 'REJECTED'], 10_000);
      assert.equal(e.event, 'UNREACHABLE');
      assert.equal(e.id, server);
      assert.equal(server!.qp!.state, QpState.RTS);
    } finally {
      rxeOf(a).faults = undefined;
      sch.close();
      cch.close();
      await close();
    }
  });
});
