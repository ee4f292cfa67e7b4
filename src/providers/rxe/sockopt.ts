// The few socket options node:dgram does not expose, set through koffi on the socket's fd:
// IPv4 IP_MTU_DISCOVER=IP_PMTUDISC_DO (DF set, Identification 0 on an unconnected socket,
// so the ICRC we compute matches what the kernel sends) and IPv6 UDP_NO_CHECK6_RX
// (accept the zero UDP checksum Linux rxe sends over IPv6); UDP_SEGMENT and UDP_GRO for
// batched sends and receives.

import type { Socket } from 'node:dgram';
import { libcLibrary } from '../../sys/libc.js';

const IPPROTO_IP = 0;
const IP_MTU_DISCOVER = 10;
const IP_PMTUDISC_DO = 2;
const IPPROTO_UDP = 17;
const UDP_NO_CHECK6_RX = 102;

let setsockoptFn: ((fd: number, level: number, name: number, val: Buffer, len: number) => number) | undefined;

function setsockopt(fd: number, level: number, name: number, value: number): void {
  setsockoptFn ??= libcLibrary().func('int setsockopt(int, int, int, const void *, uint32_t)') as unknown as typeof setsockoptFn;
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  if (setsockoptFn!(fd, level, name, v, 4) !== 0) throw new Error(`setsockopt(${level}, ${name}) failed`);
}

/**
 * node:dgram's state of a socket (the object under its state symbol): the native handle
 * (null once closed), the bind state (BIND_STATE_BOUND is 2) and the queue of sends held
 * while it binds. Read without the deprecated `_handle` getter.
 */
export interface DgramState { handle: { fd?: number; recvStop?: () => number } | null; bindState: number; queue: unknown }

export function dgramState(sock: Socket): DgramState | undefined {
  for (const sym of Object.getOwnPropertySymbols(sock)) {
    const s = (sock as unknown as Record<symbol, unknown>)[sym];
    if (s && typeof s === 'object' && 'handle' in s && 'bindState' in s) return s as DgramState;
  }
  return undefined;
}

/** The native UDP handle of a bound dgram socket (its fd, and recvStop). */
export function dgramHandle(sock: Socket): { fd: number; recvStop(): number } | undefined {
  const h = dgramState(sock)?.handle;
  if (typeof h?.fd === 'number' && h.fd >= 0 && typeof h.recvStop === 'function') return h as { fd: number; recvStop(): number };
  return undefined;
}

/** The fd of a bound dgram socket. */
export function socketFd(sock: Socket): number {
  const h = dgramHandle(sock);
  if (!h) throw new Error('cannot find the fd of the UDP socket');
  return h.fd;
}

const UDP_SEGMENT = 103;
const UDP_GRO = 104;

/** An option the kernel may not know: whether it took it. */
function trySetUdpOption(sock: Socket, name: number, value: number): boolean {
  try {
    setsockopt(socketFd(sock), IPPROTO_UDP, name, value);
    return true;
  } catch {
    return false;
  }
}

/**
 * UDP GSO: every send larger than `segmentSize` leaves as segments of that size (the last
 * may be shorter), cut by the kernel (or the NIC). False where the kernel refuses (< 4.18).
 */
export function enableUdpSegmentation(sock: Socket, segmentSize: number): boolean {
  return trySetUdpOption(sock, UDP_SEGMENT, segmentSize);
}

/**
 * UDP GRO: the kernel may hand a run of segments over as one datagram (see wire/gro.ts).
 * False where the kernel refuses (< 5.0).
 */
export function enableUdpGro(sock: Socket): boolean {
  return trySetUdpOption(sock, UDP_GRO, 1);
}

export function prepareRoceSocket(sock: Socket, family: 4 | 6): void {
  const fd = socketFd(sock);
  if (family === 4) setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO);
  else setsockopt(fd, IPPROTO_UDP, UDP_NO_CHECK6_RX, 1);
}
