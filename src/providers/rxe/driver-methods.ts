// rxe's driver-namespace uapi: methods that only this provider has. They live in the id
// range with DRIVER_NS set, so no core id is ever taken by a driver.

import { DRIVER_NS, Obj } from '../../abi/ids.js';
import type { DriverRegistrar } from '../../uapi/registry.js';
import type { RxeQp } from './qp.js';
import type { RxeContext } from './context.js';

export const RxeMethod = {
  /** QP: the QP's transport counters (retransmits, NAKs, duplicates...). */
  QP_QUERY_COUNTERS: DRIVER_NS | 0,
  /** DEVICE: the device's counters (drops by reason, ICRC errors...). */
  DEVICE_QUERY_COUNTERS: DRIVER_NS | 1,
} as const;

export const RxeAttr = { COUNTERS: DRIVER_NS | 1 } as const;

export function registerRxeDriverMethods(r: DriverRegistrar): void {
  r.defineMethod(Obj.QP, {
    id: RxeMethod.QP_QUERY_COUNTERS, name: 'RXE_QUERY_COUNTERS',
    attrs: [{ id: 0, name: 'qp_handle', type: { kind: 'handle', object: Obj.QP, access: 'read' }, mandatory: true },
      { id: RxeAttr.COUNTERS, name: 'counters', type: { kind: 'object' }, out: true }],
    handler: (ctx) => ({ out: { [RxeAttr.COUNTERS]: { ...(ctx.attrs.get(0) as RxeQp).counters } } }),
  });
  r.defineMethod(Obj.DEVICE, {
    id: RxeMethod.DEVICE_QUERY_COUNTERS, name: 'RXE_QUERY_COUNTERS',
    attrs: [{ id: RxeAttr.COUNTERS, name: 'counters', type: { kind: 'object' }, out: true }],
    handler: (ctx) => ({ out: { [RxeAttr.COUNTERS]: { ...((ctx.context as { provider: RxeContext }).provider.device.counters) } } }),
  });
}
