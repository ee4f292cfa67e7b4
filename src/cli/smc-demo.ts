// softrdma smc-demo: start an SMC server process and measure, from this process, a 64 MiB
// transfer and a 14-byte ping-pong over SMC-D and over plain node:net TCP, against the same
// kind of server. Needs no configuration.

import { runPeerClient, startPeerServer } from '../tools/smc-peer-process.js';
import { formatTable } from '../tools/table.js';

export async function smcDemo(): Promise<void> {
  const rows: string[][] = [];
  for (const api of ['smc', 'net'] as const) {
    const srv = await startPeerServer(['--api', api]);
    try {
      const bulk = await runPeerClient(['--api', api, '--test', 'bulk', '--port', String(srv.port), '--bytes', String(64 << 20)]);
      const pp = await runPeerClient(['--api', api, '--test', 'pingpong', '--port', String(srv.port), '--iters', '5000']);
      rows.push([api === 'smc' ? 'softrdma/smc' : 'node:net', String(bulk.mode), (bulk.mibPerSec as number).toFixed(0),
        bulk.verified ? 'yes' : 'NO', (pp.medianUs as number).toFixed(1), (pp.meanUs as number).toFixed(1)]);
    } finally {
      await srv.stop();
    }
  }
  const head = ['API', 'Mode', 'MiB/s (64 KiB writes)', 'sha256 ok', 'RTT median us', 'RTT mean us'];
  console.log(formatTable([head, ...rows]));
  console.log('\nBoth servers ran as separate processes on 127.0.0.1. Mode SMCD: the stream went through shared memory;');
  console.log('the TCP connection carried only the CLC handshake. `softrdma smcss -a` lists live SMC sockets.');
}
