// The socket's side of the data path, over whichever transport the handshake chose (Linux:
// smc_tx.c's sendmsg and smc_rx.c's delivery into the socket): writes go into the transport
// as far as the peer's buffer has room, the rest when the peer consumed; what the transport
// reports becomes the stream's data, end and errors.

import type { Socket } from './socket.js';
import { connReset, type SmcState } from './state.js';
import type { TransportEvents } from './transport.js';

function unrefTimer(sock: Socket): void {
  (sock as unknown as { _unrefTimer(): void })._unrefTimer();
}

/**
 * What the transport's events do to the socket, for one connection (label: 'SMC-D', for the
 * protocol error's message).
 */
export function transportEvents(sock: Socket, s: SmcState, label: string): TransportEvents {
  return {
    data: (chunk) => {
      unrefTimer(sock);
      return sock.smcPush(chunk);
    },
    // After the ticks the data set off, as TCP's FIN comes in a read callback of its own after
    // the data's: node:http answers a request in the request's 'end' handler (a tick after
    // the data), and gives up on answering at the socket's 'end'. Then, as node's
    // onStreamRead: push the end and read(0), so a paused stream with nothing buffered still
    // emits 'end'.
    peerDone: () => { process.nextTick(peerEnded, sock); },
    peerAbort: () => { sock.destroy(connReset('peer aborted the SMC connection')); },
    writable: () => pump(s),
    protocolError: (msg) => { sock.destroy(Object.assign(new Error(`${label} protocol error: ${msg}`), { code: 'EPROTO' })); },
  };
}

function peerEnded(sock: Socket): void {
  if (sock.destroyed) return;
  sock.smcPush(null);
  sock.read(0);
}

/** Write buf through the transport; cb when all of it is in the peer's buffer. */
export function smcWrite(sock: Socket, s: SmcState, buf: Buffer, cb: (err?: Error | null) => void): void {
  unrefTimer(sock);
  s.pending = { buf, off: 0, cb };
  pump(s);
}

function pump(s: SmcState): void {
  const p = s.pending;
  const conn = s.conn;
  if (!p || !conn || conn.released) return;
  if (conn.peerClosed) {
    // The peer closed its end entirely (peer_conn_closed). As over TCP, where the first write
    // into a closed connection is discarded and draws a reset, the first write is dropped
    // and the next fails with EPIPE.
    s.pending = undefined;
    if (!s.wroteAfterPeerClosed) {
      s.wroteAfterPeerClosed = true;
      p.cb();
    } else {
      p.cb(Object.assign(new Error('write after the peer closed the SMC connection'), { code: 'EPIPE', errno: -32, syscall: 'write' }));
    }
    return;
  }
  const n = conn.write(p.off === 0 ? p.buf : p.buf.subarray(p.off));
  p.off += n;
  if (p.off === p.buf.length) {
    s.pending = undefined;
    p.cb();
  }
  conn.kick(); // poll for the peer's reply or its consumer cursor
}
