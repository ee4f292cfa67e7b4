// The port MTU Linux rxe gives a device: from its netdev's MTU (rxe_set_mtu, rxe.c), the
// largest IB MTU that fits once RXE_MAX_HDR_LENGTH (80 bytes: IP, UDP, BTH and the largest
// extension headers, rxe_param.h eth_mtu_int_to_enum) is taken off, between 256 and 4096. A
// 1500-byte Ethernet link gives 1024, jumbo frames (9000) and loopback give 4096.

import fs from 'node:fs';
import { networkInterfaces } from 'node:os';

/** rxe_param.h RXE_MAX_HDR_LENGTH. */
const RXE_MAX_HDR_LENGTH = 80;

/** eth_mtu_int_to_enum + rxe_set_mtu's clamp, in bytes. */
export function ibMtuForNetdev(netdevMtu: number): number {
  const room = netdevMtu - RXE_MAX_HDR_LENGTH;
  for (const m of [4096, 2048, 1024, 512, 256]) if (room >= m) return m;
  return 256;
}

/** The MTU of the interface holding `address` (its /sys/class/net entry), or undefined. */
export function netdevMtuOf(address: string): number | undefined {
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (!addrs?.some((a) => a.address === address)) continue;
    try {
      const mtu = Number(fs.readFileSync(`/sys/class/net/${name}/mtu`, 'utf8'));
      return Number.isInteger(mtu) && mtu > 0 ? mtu : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * The default port MTU of a device on `address`: from its interface as Linux rxe does; where
 * the interface cannot be read, 4096 on loopback and 1024 elsewhere (a 1500-byte link).
 */
export function defaultPortMtu(address: string): number {
  const mtu = netdevMtuOf(address);
  if (mtu !== undefined) return ibMtuForNetdev(mtu);
  return address.startsWith('127.') || address === '::1' ? 4096 : 1024;
}
