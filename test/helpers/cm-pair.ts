// Two rxe devices (127.0.0.2, 127.0.0.3) and an rdma_cm event channel for each side, for the
// rdma_cm tests (everything is closed whatever the test body does); an id resolved from the one
// towards a listener on the other, and a QP for an id.

import type { Device } from '../../src/index.js';
import { createEventChannel, createId, type EventChannel, type RdmaCmId } from '../../src/cm/index.js';
import { twoDevices } from './pair.js';

export async function onTwoDevices(body: (t: { a: Device; b: Device; sch: EventChannel; cch: EventChannel }) => Promise<void>): Promise<void> {
  const { a, b, close } = await twoDevices();
  const sch = createEventChannel(), cch = createEventChannel();
  try {
    await body({ a, b, sch, cch });
  } finally {
    sch.close();
    cch.close();
    await close();
  }
}

/** A QP on the id's device, from a PD and CQ of its own. */
export function withQp(id: RdmaCmId): void {
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(16);
  id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: 4, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1 } });
}

/** An id of `ch` resolved towards `l` (on 127.0.0.3) from 127.0.0.2. */
export async function resolvedTo(ch: EventChannel, l: RdmaCmId, opts: Parameters<typeof createId>[2]): Promise<RdmaCmId> {
  const id = createId(ch, 'tcp', opts);
  id.resolveAddr({ address: '127.0.0.3', port: l.localAddr!.port }, '127.0.0.2');
  await ch.next('ADDR_RESOLVED', 5000, id);
  id.resolveRoute();
  await ch.next('ROUTE_RESOLVED', 5000, id);
  return id;
}
