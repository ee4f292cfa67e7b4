// What a socket reports, in order: 'end', 'error:CODE', 'close', the errors themselves, and a
// promise of its 'close' (the tests of how a connection ends, over TCP and SMC alike).

import type net from 'node:net';

export interface SocketEvents { events: string[]; errors: NodeJS.ErrnoException[]; closed: Promise<void> }

export function recordEvents(s: net.Socket): SocketEvents {
  const events: string[] = [];
  const errors: NodeJS.ErrnoException[] = [];
  s.on('end', () => events.push('end'));
  s.on('error', (e: NodeJS.ErrnoException) => { events.push(`error:${e.code}`); errors.push(e); });
  const closed = new Promise<void>((resolve) => s.on('close', () => { events.push('close'); resolve(); }));
  return { events, errors, closed };
}

/** Resume a paused reader and count what it reads until it closes: the bytes, or a rejection after `ms`. */
export async function readUntilClosed(s: net.Socket, rec: SocketEvents, ms = 10_000): Promise<number> {
  let got = 0;
  s.on('data', (d: Buffer) => { got += d.length; });
  s.resume();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no 'close' of the reader within ${ms} ms (${got} bytes read)`)), ms); });
  try {
    await Promise.race([rec.closed, late]);
  } finally {
    clearTimeout(timer);
  }
  return got;
}
