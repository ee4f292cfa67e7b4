// softrdma smc-demo: start an SMC server process and measure, from this process, a transfer
// and a 14-byte ping-pong over SMC-D and over plain node:net TCP, against the same kind of
// server. Needs no configuration.
//
// Each API first moves 64 MiB with a sha256 check on both ends (the proof that the bytes
// arrived intact), then streams for 2 s without the hash for the rate (hashing runs at
// ~500 MiB/s here and would hide the difference between the two transports), after a second
// of the same that is not counted: both transports speed up by half or more over their first
// GiB (JIT, heap growth), and a steady state is what a long-lived service sees.

import { runPeerClient, startPeerServer } from '../tools/smc-peer-process.js';
import { parseArgs } from 'node:util';
import { formatTable } from '../tools/table.js';

interface Figures { mode: string; verified: boolean; mibPerSec: number; medianUs: number; meanUs: number }

export const SMC_DEMO_USAGE = `usage: softrdma smc-demo

Starts an SMC server process and measures, from this process, a transfer and a 14-byte
ping-pong over SMC-D (softrdma/smc) and over plain TCP (node:net). Takes about 15 seconds.`;

function step(text: string): void {
  process.stderr.write(`  ${text}\n`);
}

async function measure(api: 'smc' | 'net'): Promise<Figures> {
  const srv = await startPeerServer(['--api', api]);
  try {
    const client = (args: string[]) => runPeerClient(['--api', api, '--port', String(srv.port), ...args]);
    const name = api === 'smc' ? 'softrdma/smc' : 'node:net';
    step(`${name}: 64 MiB with a sha256 check on both ends`);
    const checked = await client(['--test', 'bulk', '--bytes', String(64 << 20)]);
    step(`${name}: 3 s of 64 KiB writes (the first second not counted)`);
    const bulk = await client(['--test', 'bulk', '--seconds', '2', '--warmup-seconds', '1', '--no-verify']);
    step(`${name}: 5000 round trips of 14 bytes`);
    const pp = await client(['--test', 'pingpong', '--iters', '5000']);
    return {
      mode: String(bulk.mode), verified: checked.verified === true && bulk.verified === true,
      mibPerSec: bulk.mibPerSec as number, medianUs: pp.medianUs as number, meanUs: pp.meanUs as number,
    };
  } finally {
    await srv.stop();
  }
}

export async function smcDemo(args: string[] = []): Promise<void> {
  parseArgs({ args, options: {} });
  console.log(`softrdma smc-demo: the same byte stream over SMC-D (softrdma/smc: shared memory between two processes,
negotiated over TCP) and over plain TCP (node:net), each against a server process of its own on 127.0.0.1.
Below: whether each used SMC-D, a sha256 check, throughput in MiB/s and the round trip of 14-byte messages.
`);
  const smc = await measure('smc');
  const tcp = await measure('net');
  const row = (name: string, f: Figures) => [name, f.mode, f.verified ? 'yes' : 'NO', f.mibPerSec.toFixed(0), f.medianUs.toFixed(1), f.meanUs.toFixed(1)];
  console.log(formatTable([
    ['API', 'Mode', '64 MiB sha256 ok', 'MiB/s (2 s of 64 KiB writes)', 'RTT median us', 'RTT mean us'],
    row('softrdma/smc', smc), row('node:net', tcp),
  ]));
  console.log(`\nSMC-D against TCP: ${(smc.mibPerSec / tcp.mibPerSec).toFixed(2)}x the throughput, ${(smc.medianUs / tcp.medianUs).toFixed(2)}x the median round trip`);
  console.log('(one run each; `npm run bench:smc` takes medians and compares against the targets).');
  console.log('\nBoth servers ran as separate processes on 127.0.0.1. Mode SMCD: the stream went through shared memory;');
  console.log('the TCP connection carried only the CLC handshake. `softrdma smcss -a` lists live SMC sockets.');
}
