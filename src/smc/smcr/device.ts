// The RoCE device an SMC-R link group runs over (Linux: struct smc_ib_device and its port,
// smc_ib.c): one verbs context and protection domain per device, shared by every link and
// buffer of the process on it. softrdma's smc layer reaches rxe only through the verbs API
// (the layer rule): the application creates the device (createRxeDevice) and names it, or
// passes `smcr: true` and the device holding the TCP connection's local address is found
// by its GID table (CmDevice.holding), the way Linux picks the RoCEv2 GID whose interface holds that address
// (smc_ib.c 228-271).

import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { mtuBytes } from '../../abi/enums.js';
import { addressFromGid } from '../../abi/inet.js';
import { CmDevice } from '../../cm/rdma-cm/cm-device.js';
import type { Context, Device } from '../../verbs/api.js';

/**
 * What a socket's `smcr` option may be. `discovery: false` proposes SMC-R without asking the
 * peer first (smcr/discovery.ts): for peers known to have SMC-R that cannot answer the query
 * (Linux's SMC-R).
 */
export type SmcrOption = boolean | { device: Device; discovery?: boolean };

export class SmcrDevice {
  readonly ctx: Context;
  /** The port's IPv4-mapped RoCEv2 GID (index 0 of softrdma's rxe) and its address. */
  readonly gid: Buffer;
  readonly address: string;
  /** The port's active MTU (IB enum, 1..5). */
  readonly mtu: number;
  /**
   * A MAC for the CLC and LLC messages. A user-space device has no interface of its own;
   * a locally administered address derived from the IPv4 address (02:00:a:b:c:d) keeps the
   * field plausible for dissectors. Nothing routes by it.
   */
  readonly mac: Buffer;
  private closed = false;
  /** Called when the device goes (the application closed it): the link groups on it end. */
  readonly onClose = new Set<() => void>();

  constructor(readonly device: Device) {
    this.ctx = device.open();
    this.ctx.once('close', () => {
      this.closed = true;
      if (byDevice.get(device) === this) byDevice.delete(device);
      for (const f of [...this.onClose]) f();
    });
    this.gid = Buffer.from(this.ctx.queryGid(1, 0));
    this.address = addressFromGid(this.gid);
    this.mtu = this.ctx.queryPort(1).activeMtu;
    this.mac = Buffer.alloc(6);
    this.mac[0] = 0x02;
    if (isIPv4(this.address)) this.gid.copy(this.mac, 2, 12, 16);
    else randomBytes(4).copy(this.mac, 2);
  }

  get mtuBytes(): number { return mtuBytes(this.mtu); }
  get isClosed(): boolean { return this.closed; }

  /** Destroy the context (and with it every QP, CQ and MR the link groups left). */
  close(): void {
    if (this.closed) return;
    try { this.ctx.close(); } catch { /* the device is gone already */ }
  }
}

const byDevice = new Map<Device, SmcrDevice>();

/** The SmcrDevice of a verbs device (one per device and process). */
export function smcrDeviceOf(device: Device): SmcrDevice {
  let d = byDevice.get(device);
  if (!d) {
    d = new SmcrDevice(device);
    byDevice.set(device, d);
  }
  return d;
}

/**
 * The device a socket with the `smcr` option uses for a TCP connection from localAddress:
 * the one it names, or (smcr: true) the rxe device whose GID is that address.
 * undefined: none (the handshake then declines with NOSMCRDEV, as Linux's "no SMC-R device").
 */
export function pickSmcrDevice(opt: SmcrOption | undefined, localAddress: string): SmcrDevice | undefined {
  if (!opt) return undefined;
  if (opt !== true) {
    const d = smcrDeviceOf(opt.device);
    return d.address === localAddress ? d : undefined;
  }
  // Found by its GID table, as the rdma_cm finds an id's device: no context or PD is opened on
  // the devices that do not hold the address.
  const dev = CmDevice.holding(localAddress);
  if (!dev || dev.driver !== 'rxe') return undefined;
  try {
    return smcrDeviceOf(dev);
  } catch {
    return undefined; // a device closing under us
  }
}
