// Which local address the kernel would send from towards a destination: how rping, cmatose and
// perftest pick the device to use when the user names only the peer.

import dgram from 'node:dgram';
import { isIP } from 'node:net';

/** The local address the kernel would send from towards `dst` (a connected UDP socket; nothing is sent). */
export async function routeSource(dst: string): Promise<string> {
  const sock = dgram.createSocket(isIP(dst) === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.connect(9, dst, () => resolve()); });
    return sock.address().address;
  } finally {
    sock.close();
  }
}
