// softrdma: the verbs API.

import { Device, type Context, type QP } from './verbs/api.js';
import { Obj } from './abi/ids.js';
import { RxeAttr, RxeMethod } from './providers/rxe/driver-methods.js';
import { RxeDevice, RXE_DEFAULT_LIMITS, type RxeDeviceOptions, type RxeLimits } from './providers/rxe/device.js';

export * from './verbs/api.js';
export * from './abi/enums.js';
export * from './verbs/connect.js';
// SendWr is the verbs API's (its ud.ah and bindMw.mw are the API's objects).
export type {
  WrId, Sge, GlobalRoute, AhAttr, MwBindInfo, RecvWr, WorkCompletion, QpCap, QpCapInit, QpInitAttr, QpAttrValues, QpAttrFull,
  SrqAttrValues, DeviceAttr, PortAttr, GidEntry, AsyncEvent,
} from './abi/types.js';
export { VerbsError } from './uapi/errors.js';
export { SoftrdmaError } from './abi/errors.js';
export { Obj, M, Attr, A, DRIVER_NS } from './abi/ids.js';
export { RxeMethod, RxeAttr } from './providers/rxe/driver-methods.js';
export type { FaultPlan } from './providers/rxe/link.js';
export { gidFromAddress, addressFromGid, gidToString } from './abi/inet.js';

/**
 * Create an rxe (RoCEv2) device bound to a local IP address, like `rdma link add rxe0 type rxe`.
 * It appears in getDeviceList() until closed.
 */
export async function createRxeDevice(opts: RxeDeviceOptions): Promise<Device> {
  return new Device(await RxeDevice.create(opts));
}

export type { RxeDeviceOptions, RxeLimits };
export { RxeDevice, RXE_DEFAULT_LIMITS };

/** The rxe provider behind a Device (its bound address, UDP port, counters); throws for other drivers. */
export function rxeOf(dev: Device): RxeDevice {
  if (!(dev.provider instanceof RxeDevice)) throw new TypeError(`${dev.name} is not an rxe device`);
  return dev.provider;
}

/** The rxe counters of a context's device and of one QP, through the driver-namespace methods. */
export function queryRxeCounters(ctx: Context, qp: QP): { device: Record<string, number>; qp: Record<string, number> } {
  return {
    device: ctx.invoke(Obj.DEVICE, RxeMethod.DEVICE_QUERY_COUNTERS, {})[RxeAttr.COUNTERS] as Record<string, number>,
    qp: ctx.invoke(Obj.QP, RxeMethod.QP_QUERY_COUNTERS, { 0: qp.handle })[RxeAttr.COUNTERS] as Record<string, number>,
  };
}
