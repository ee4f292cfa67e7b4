// Run src/tools/smc-peer.js as separate processes: a server that reports its port, and
// clients that print one JSON result. Shared by `softrdma smc-demo` and bench/smc-vs-tcp.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const PEER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'smc-peer.js');
/** SMC_BENCH_PROF=DIR: a CPU profile of every peer process (node --cpu-prof), to see where a benchmark's time goes. */
const PROF = process.env.SMC_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.SMC_BENCH_PROF] : [];

export interface PeerOptions {
  execArgv?: string[];
  env?: NodeJS.ProcessEnv;
}

export interface PeerServer {
  port: number;
  /** With --and-net: the port of the same process's plain node:net listener. */
  netPort?: number;
  pid: number;
  stop(): Promise<void>;
}

/** smc-peer serve ...; resolves once it listens. stop() closes its stdin and waits for exit. */
export async function startPeerServer(args: string[], opts: PeerOptions = {}): Promise<PeerServer> {
  const child = spawn(process.execPath, [...PROF, ...(opts.execArgv ?? []), PEER, 'serve', ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: opts.env ?? process.env });
  const rl = readline.createInterface({ input: child.stdout! });
  const [line] = (await once(rl, 'line')) as [string];
  rl.close();
  const hello = JSON.parse(line) as { port: number; netPort?: number; pid: number };
  return {
    port: hello.port,
    netPort: hello.netPort,
    pid: hello.pid,
    stop: async () => { child.stdin!.end(); if (child.exitCode === null) await once(child, 'exit'); },
  };
}

/** smc-peer client ...; the JSON object it printed. */
export async function runPeerClient(args: string[], opts: PeerOptions = {}): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [...PROF, ...(opts.execArgv ?? []), PEER, 'client', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: opts.env ?? process.env });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d; });
  const [code] = (await once(child, 'exit')) as [number];
  if (code !== 0) throw new Error(`smc-peer client ${args.join(' ')} exited with ${code}`);
  return JSON.parse(out) as Record<string, unknown>;
}
