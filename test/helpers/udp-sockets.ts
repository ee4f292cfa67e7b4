// Plain UDP sockets for the sender tests: one bound to an ephemeral port, and a bounded wait
// for the datagrams it receives.

import dgram from 'node:dgram';
import { once } from 'node:events';

/** A socket bound to an ephemeral port of `address`. */
export async function boundUdp(type: 'udp4' | 'udp6' = 'udp4', address = type === 'udp4' ? '127.0.0.1' : '::1'): Promise<dgram.Socket> {
  const s = dgram.createSocket(type);
  s.bind(0, address);
  await once(s, 'listening');
  return s;
}

/** The next `n` datagrams `sock` receives, in order; fails after `ms`. */
export function receiveDatagrams(sock: dgram.Socket, n: number, ms = 5000): Promise<Buffer[]> {
  const got: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`received ${got.length} of ${n} datagrams`)), ms);
    sock.on('message', (m) => {
      got.push(m);
      if (got.length === n) { clearTimeout(t); resolve(got); }
    });
  });
}
