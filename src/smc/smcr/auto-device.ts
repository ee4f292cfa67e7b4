// The rxe devices SMC-R brings up itself. With `smcr: true` and no device of the application's
// on the TCP connection's local address, the SMC layer creates one there (Linux has its RoCE
// devices before any socket exists; softrdma's are processes' own, so the first socket that
// needs one makes it): an rxe device bound to UDP 4791 of that address (SOFTRDMA_SMCR_UDP_PORT
// for tests), unref()'d so it never keeps the process alive. It goes through the public verbs
// entry point (createRxeDevice), loaded only when the first one is needed.
//
// Only IPv4 addresses that are not loopback: Linux offers SMC-Rv2 on AF_INET only, and a
// loopback peer is on this host, where SMC-D serves it. When the port is taken on that address
// (another process's device, Linux's kernel rxe, anything bound to 4791), the device cannot
// exist: the connection is declined as Linux declines without a RoCE device (NOSMCRDEV),
// counted, and not tried again for RETRY_MS. Several processes on one host therefore cannot all
// have SMC-R on the same address; the first to need a device has it (a device-owning daemon
// is the later answer, docs/smc.md).

import { isIPv4 } from 'node:net';
import { interfaceAddresses } from '../interfaces.js';
import { getDeviceList, type Device } from '../../verbs/api.js';
import { CmDevice } from '../../cm/rdma-cm/cm-device.js';

const envPort = Number(process.env.SOFTRDMA_SMCR_UDP_PORT);
/** The UDP port of the devices made here: RoCEv2's 4791 (peers must use the same). */
export const SMCR_UDP_PORT = Number.isInteger(envPort) && envPort > 0 && envPort < 65536 ? envPort : 4791;
/** After a failed bring-up, the address is not tried again for this long. */
const RETRY_MS = 60_000;

interface Slot { device?: Device; pending?: Promise<Device | undefined>; failedUntil?: number; error?: string }
const slots = new Map<string, Slot>();
let nextName = 0;

const counters = { created: 0, failed: 0, refused: 0 };

/** Devices made here, bring-ups that failed (the port taken), and connections refused meanwhile. */
export function smcrAutoDeviceCounters(): typeof counters {
  return { ...counters };
}

/** May SMC-R bring up a device on this local address (IPv4, not loopback)? */
export function autoDeviceAllowed(address: string): boolean {
  return isIPv4(address) && !address.startsWith('127.') && address !== '0.0.0.0';
}

export type AutoDevice =
  | { device: Device }
  | { pending: Promise<Device | undefined> }
  | { failed: string };

/**
 * The device on `address`: one the process has (the application's or ours), one coming up, or
 * why there is none. Starts the bring-up when nothing is there yet.
 */
export function autoDevice(address: string): AutoDevice {
  const have = CmDevice.holding(address);
  if (have && have.driver === 'rxe') return { device: have };
  const slot = slots.get(address);
  if (slot?.pending) return { pending: slot.pending };
  if (slot?.failedUntil !== undefined && slot.failedUntil > performance.now()) {
    counters.refused++;
    return { failed: slot.error! };
  }
  const s: Slot = {};
  s.pending = bringUp(address, s);
  slots.set(address, s);
  return { pending: s.pending };
}

async function bringUp(address: string, s: Slot): Promise<Device | undefined> {
  try {
    const { createRxeDevice } = await import('../../index.js');
    const device = await createRxeDevice({ address, port: SMCR_UDP_PORT, name: `smc_rxe${nextName++}` });
    device.unref();
    counters.created++;
    s.device = device;
    return device;
  } catch (e) {
    counters.failed++;
    const code = (e as NodeJS.ErrnoException).code;
    s.error = `no rxe device on ${address}: UDP ${SMCR_UDP_PORT} ${code === 'EADDRINUSE' ? 'is taken there (another process or a kernel rxe)' : `could not be bound (${code ?? (e as Error).message})`}`;
    s.failedUntil = performance.now() + RETRY_MS;
    return undefined;
  } finally {
    s.pending = undefined;
  }
}

/** Why the last bring-up on this address failed (while it is not tried again). */
export function autoDeviceError(address: string): string | undefined {
  return slots.get(address)?.error;
}

/** The IPv4 addresses a wildcard SMC-R listener covers: every non-internal interface's. */
export function wildcardAddresses(): string[] {
  const out: string[] = [];
  for (const i of interfaceAddresses()) if (i.family === 'IPv4' && !i.internal && autoDeviceAllowed(i.address)) out.push(i.address);
  return out;
}

/** The devices made here (tests). */
export function smcrAutoDevices(): Device[] {
  const live = new Set(getDeviceList());
  return [...slots.values()].flatMap((s) => (s.device && live.has(s.device) ? [s.device] : []));
}
