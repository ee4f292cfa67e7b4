// softrdma smc-demo: start an SMC server process and measure, from this process, a 64 MiB
// transfer and a 14-byte ping-pong over SMC-D and over plain node:net TCP, against the same
// kind of server. Needs no configuration.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const peer = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tools', 'smc-peer.js');

async function startServer(api: 'smc' | 'net'): Promise<{ port: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [peer, 'serve', '--api', api], { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout! });
  const [line] = (await once(rl, 'line')) as [string];
  rl.close();
  return {
    port: (JSON.parse(line) as { port: number }).port,
    stop: async () => { child.stdin!.end(); if (child.exitCode === null) await once(child, 'exit'); },
  };
}

async function client(args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [peer, 'client', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d; });
  const [code] = (await once(child, 'exit')) as [number];
  if (code !== 0) throw new Error(`smc-peer client ${args.join(' ')} exited with ${code}`);
  return JSON.parse(out) as Record<string, unknown>;
}

export async function smcDemo(): Promise<void> {
  const rows: string[][] = [];
  for (const api of ['smc', 'net'] as const) {
    const srv = await startServer(api);
    try {
      const bulk = await client(['--api', api, '--test', 'bulk', '--port', String(srv.port), '--bytes', String(64 << 20)]);
      const pp = await client(['--api', api, '--test', 'pingpong', '--port', String(srv.port), '--iters', '5000']);
      rows.push([api === 'smc' ? 'softrdma/smc' : 'node:net', String(bulk.mode), (bulk.mibPerSec as number).toFixed(0),
        bulk.verified ? 'yes' : 'NO', (pp.medianUs as number).toFixed(1), (pp.meanUs as number).toFixed(1)]);
    } finally {
      await srv.stop();
    }
  }
  const head = ['API', 'Mode', 'MiB/s (64 KiB writes)', 'sha256 ok', 'RTT median us', 'RTT mean us'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(w[i]!)).join('  '));
  console.log('\nBoth servers ran as separate processes on 127.0.0.1. Mode SMCD: the stream went through shared memory;');
  console.log('the TCP connection carried only the CLC handshake. `softrdma smcss -a` lists live SMC sockets.');
}
