// The floor under SMC-R's ping-pong on a link: raw UDP carrying, each way, the two datagrams an
// SMC-R message puts on the wire (its RDMA WRITE, 48 bytes with a 14-byte payload, and its
// CDC SEND, 60 bytes), both ends spinning on recv(MSG_DONTWAIT) and answering with one
// sendmmsg(2): no event loop, no protocol work, no ACKs. No user-space SMC-R over the same
// link can do a round trip in less; bench/smcr-vs-tcp.ts prints it beside TCP's round trip.
// Each role blocks its process while it runs (it never yields to the event loop).

import koffi from 'koffi';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { libcLibrary } from '../src/sys/libc.js';
import { ipv4Bytes } from '../src/abi/inet.js';
import { dgramHandle } from '../src/providers/rxe/sockopt.js';

/** The datagram sizes of one SMC-R message of 14 bytes: WRITE (BTH, RETH, payload, pad, ICRC) and CDC SEND (BTH, 44, ICRC). */
export const SMCR_MESSAGE_DATAGRAMS = [12 + 16 + 14 + 2 + 4, 12 + 44 + 4];
const MSG_DONTWAIT = 0x40;

interface Floor { sock: dgram.Socket; fd: number; send(): number; recv(): boolean }

async function open(bind: string, port: number, peer: string, peerPort: number): Promise<Floor> {
  const sock = dgram.createSocket('udp4');
  sock.bind(port, bind);
  await once(sock, 'listening');
  const handle = dgramHandle(sock);
  if (!handle) throw new Error('no fd for the UDP socket');
  handle.recvStop();
  const fd = handle.fd;
  const libc = libcLibrary();
  const sendmmsg = libc.func('int sendmmsg(int, void *, unsigned int, int)') as (fd: number, vec: unknown, n: number, f: number) => number;
  const recv = libc.func('intptr_t recv(int, void *, size_t, int)') as (fd: number, buf: Buffer, n: number, f: number) => number;
  // Two mmsghdrs (64 bytes each), two iovecs, one sockaddr_in, the two datagrams.
  const n = SMCR_MESSAGE_DATAGRAMS.length;
  const total = n * 64 + n * 16 + 16 + n * 128;
  const mem = koffi.alloc('uint8_t', total);
  const v = Buffer.from(koffi.view(mem, total));
  v.fill(0);
  const base = koffi.address(mem);
  const nameAt = n * 80;
  v.writeUInt16LE(2, nameAt);
  v.writeUInt16BE(peerPort, nameAt + 2);
  ipv4Bytes(peer).copy(v, nameAt + 4);
  for (let i = 0; i < n; i++) {
    const m = i * 64, iov = n * 64 + i * 16, data = nameAt + 16 + i * 128;
    v.writeBigUInt64LE(base + BigInt(nameAt), m);
    v.writeUInt32LE(16, m + 8);
    v.writeBigUInt64LE(base + BigInt(iov), m + 16);
    v.writeBigUInt64LE(1n, m + 24);
    v.writeBigUInt64LE(base + BigInt(data), iov);
    v.writeBigUInt64LE(BigInt(SMCR_MESSAGE_DATAGRAMS[i]!), iov + 8);
    v.fill(0x61 + i, data, data + SMCR_MESSAGE_DATAGRAMS[i]!);
  }
  const rb = Buffer.alloc(2048);
  return { sock, fd, send: () => sendmmsg(fd, mem, n, 0), recv: () => recv(fd, rb, rb.length, MSG_DONTWAIT) > 0 };
}

/** Spin until `n` datagrams came, or `ms` passed with none (false). */
function awaitDatagrams(f: Floor, n: number, ms: number): boolean {
  let got = 0;
  let last = performance.now();
  while (got < n) {
    if (f.recv()) { got++; last = performance.now(); } else if (performance.now() - last > ms) return false;
  }
  return true;
}

/** Answer every message with one until nothing has come for `idleMs`; `ready` once bound. */
export async function floorServer(bind: string, port: number, peer: string, peerPort: number, ready: () => void, idleMs = 3000): Promise<void> {
  const f = await open(bind, port, peer, peerPort);
  ready();
  while (awaitDatagrams(f, SMCR_MESSAGE_DATAGRAMS.length, idleMs)) f.send();
  f.sock.close();
}

/** Median round trip (us) of `iters` messages after `warm` not counted; undefined if the server does not answer. */
export async function floorClient(bind: string, port: number, peer: string, peerPort: number, iters: number, warm = 500): Promise<number | undefined> {
  const f = await open(bind, port, peer, peerPort);
  const n = SMCR_MESSAGE_DATAGRAMS.length;
  const times: number[] = [];
  try {
    for (let i = 0; i < warm + iters; i++) {
      const t0 = performance.now();
      f.send();
      if (!awaitDatagrams(f, n, i === 0 ? 5000 : 1000)) return undefined;
      if (i >= warm) times.push((performance.now() - t0) * 1000);
    }
  } finally {
    f.sock.close();
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}
