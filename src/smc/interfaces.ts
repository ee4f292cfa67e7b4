// The host's interface addresses for per-connection decisions (is the peer local, which
// subnet, which address reaches it). os.networkInterfaces() costs ~70 us a call here (a
// getifaddrs(3) and an object per address), which SMC-R's client paid two or three times per
// connection; connections read a snapshot instead, refreshed at most once a second, so an
// address added or removed is seen within a second.

import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { performance } from 'node:perf_hooks';

/** How old a snapshot may be before the next reader takes a new one. */
const MAX_AGE_MS = 1000;

/** One address of an interface, with the interface's name ('eth0'). */
export type InterfaceAddress = NetworkInterfaceInfo & { name: string };

let snapshot: { at: number; list: readonly InterfaceAddress[] } | undefined;

/** Every address of every interface, as os.networkInterfaces() gave it at most a second ago. */
export function interfaceAddresses(): readonly InterfaceAddress[] {
  const now = performance.now();
  if (!snapshot || now - snapshot.at > MAX_AGE_MS) {
    const list: InterfaceAddress[] = [];
    for (const [name, addrs] of Object.entries(networkInterfaces())) for (const a of addrs ?? []) list.push({ ...a, name });
    snapshot = { at: now, list };
  }
  return snapshot.list;
}

/** Take a fresh snapshot at the next read (after this process changed the host's addresses). */
export function forgetInterfaceAddresses(): void {
  snapshot = undefined;
}
