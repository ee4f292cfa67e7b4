// tshark as a capture process for tests: start it, wait until it really captures, and wait
// for it to stop by itself (-c N): dumpcap drops what it has not read yet when interrupted,
// so a test that needs every packet stops the capture by count, not by signal.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';

/** Why a capture test cannot run here, or undefined when it can. */
export function captureUnavailable(): string | undefined {
  try { execFileSync('tshark', ['-v'], { stdio: 'ignore' }); } catch { return 'tshark is not installed'; }
  if (process.getuid?.() !== 0) return 'capturing on lo needs root';
  return undefined;
}

export interface Capture {
  /** Resolves once tshark has seen its -c count of packets and exited. */
  finished(ms?: number): Promise<void>;
  kill(): void;
}

/** tshark -i lo -f filter -c count -w file [...extra] (in netns, if given), resolved once it is capturing. */
export async function startCapture(filter: string, count: number, file: string, extra: string[] = [], netns?: string): Promise<Capture> {
  const args = ['-i', 'lo', '-f', filter, '-c', String(count), ...extra, '-w', file];
  const cap: ChildProcess = netns
    ? spawn('ip', ['netns', 'exec', netns, 'tshark', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn('tshark', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const closed = new Promise<void>((resolve) => cap.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tshark did not start: ${err}`)), 30_000);
    let grace: NodeJS.Timeout | undefined;
    const ready = () => { clearTimeout(timer); clearTimeout(grace); resolve(); };
    cap.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      // "Capturing on" comes before dumpcap really captures; tshark 4 reports that later as
      // "Capture started". Older ones do not: give them a moment.
      if (/Capture started/.test(err)) ready();
      else if (/Capturing on/.test(err)) grace ??= setTimeout(ready, 2000);
    });
    cap.once('exit', () => { clearTimeout(timer); clearTimeout(grace); reject(new Error(`tshark exited: ${err}`)); });
  });
  return {
    finished: (ms = 30_000) => new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { cap.kill('SIGKILL'); reject(new Error(`tshark saw fewer than ${count} packets: ${err}`)); }, ms);
      void closed.then(() => { clearTimeout(timer); resolve(); });
    }),
    kill: () => { if (cap.exitCode === null) cap.kill('SIGKILL'); },
  };
}

/** tshark -r file -Y filter -T fields -e ...: one array of field values per matching frame. */
export function readFields(file: string, filter: string, fields: string[], extra: string[] = []): string[][] {
  const out = execFileSync('tshark', ['-r', file, ...extra, '-Y', filter, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.split('\n').filter((l) => l.length > 0).map((l) => l.split('\t'));
}

/**
 * RoCEv2 ICRC over captured bytes from the IP header on, as the receiver computes it (IBA
 * A17.8, Linux rxe_icrc.c): 8 bytes of ones for the absent LRH, then the IP header with the
 * fields routers may change set to ones (IPv4: TOS, TTL, header checksum; IPv6: traffic
 * class, flow label, hop limit), the UDP header with its checksum set to ones, and the
 * IB packet with BTH resv8a set to ones, up to the ICRC itself.
 */
export function icrcOf(ipAndRest: Buffer): { want: number; got: number } {
  const v6 = ipAndRest[0]! >> 4 === 6;
  const ihl = v6 ? 40 : (ipAndRest[0]! & 0x0f) * 4;
  const ip = Buffer.from(ipAndRest.subarray(0, ihl));
  if (v6) {
    ip[0] = 0x6f; // version 6, traffic class high nibble
    ip.fill(0xff, 1, 4); // traffic class low nibble, flow label
    ip[7] = 0xff; // hop limit
  } else {
    ip[1] = 0xff; // TOS
    ip[8] = 0xff; // TTL
    ip.writeUInt16BE(0xffff, 10); // header checksum
  }
  const udp = Buffer.from(ipAndRest.subarray(ihl, ihl + 8));
  udp.writeUInt16BE(0xffff, 6); // UDP checksum
  const ib = Buffer.from(ipAndRest.subarray(ihl + 8));
  const want = ib.readUInt32LE(ib.length - 4);
  ib[4] = 0xff; // BTH resv8a
  const got = crc32(ib.subarray(0, ib.length - 4), crc32(udp, crc32(ip, crc32(Buffer.alloc(8, 0xff))))) >>> 0;
  return { want, got };
}

/** Frames of a classic pcap file (what tshark -F pcap writes). */
export function pcapFrames(file: string): { linktype: number; frames: Buffer[] } {
  const b = readFileSync(file);
  const le = b.readUInt32LE(0) === 0xa1b2c3d4;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const frames: Buffer[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = u32(o + 8);
    frames.push(b.subarray(o + 16, o + 16 + incl));
    o += 16 + incl;
  }
  return { linktype: u32(20), frames };
}
