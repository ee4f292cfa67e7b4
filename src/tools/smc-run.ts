// softrdma smc-run [--] command [args...]: run a Node program with every TCP socket
// SMC-capable (the role of smc-tools' smc_run): NODE_OPTIONS gains --import softrdma/smc/auto.

import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UsageError } from './usage.js';

export const SMC_RUN_USAGE = `usage: softrdma smc-run [--] <command> [args...]
  Runs the command with NODE_OPTIONS="--import softrdma/smc/auto", so every node:net
  server and client in Node processes it starts negotiates SMC-D with local peers.`;

export function autoModuleUrl(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return pathToFileURL(path.join(here, '..', 'smc', 'auto.js')).href;
}

export function smcRun(args: string[]): Promise<number> {
  const cmd = args[0] === '--' ? args.slice(1) : args;
  if (cmd.length === 0) return Promise.reject(new UsageError('no command given'));
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${autoModuleUrl()}`.trim() };
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: 'inherit', env });
    child.on('error', reject);
    // A child killed by a signal exits as a shell reports it: 128 + the signal number.
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + os.constants.signals[signal] : 1)));
  });
}
