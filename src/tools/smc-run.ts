// softrdma smc-run [--] command [args...]: run a Node program with every TCP socket
// SMC-capable (the role of smc-tools' smc_run): NODE_OPTIONS gains --require softrdma/smc/auto
// (--import on a Node that cannot require() an ES module).

import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UsageError } from './usage.js';

export const SMC_RUN_USAGE = `usage: softrdma smc-run [--] <command> [args...]
  Runs the command with NODE_OPTIONS="--require softrdma/smc/auto", so every node:net
  server and client in Node processes it starts negotiates SMC-D with local peers.`;

export function autoModuleUrl(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return pathToFileURL(path.join(here, '..', 'smc', 'auto.js')).href;
}

/** Can this Node require() an ES module without a flag (20.19+, 22.12+, 23+)? */
export function canRequireEsm(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major >= 23 || (major === 22 && minor >= 12) || (major === 20 && minor >= 19);
}

/**
 * The NODE_OPTIONS words that preload the auto module. --require runs it synchronously before
 * the main script, as LD_PRELOAD would. --import goes through the ES module loader, which in
 * Node 20 reads files asynchronously: the event loop turns before the main script runs, and an
 * IPC message that arrives meanwhile (a cluster worker receiving a server handle) finds no
 * 'message' listener and is lost; that happens with an empty --import module too.
 */
export function preloadOptions(version = process.versions.node): string {
  const file = fileURLToPath(autoModuleUrl());
  const quoted = `"${file.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  return canRequireEsm(version) ? `--require ${quoted}` : `--import ${autoModuleUrl()}`;
}

export function smcRun(args: string[]): Promise<number> {
  const cmd = args[0] === '--' ? args.slice(1) : args;
  if (cmd.length === 0) return Promise.reject(new UsageError('no command given'));
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${preloadOptions()}`.trim() };
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: 'inherit', env });
    child.on('error', reject);
    // A child killed by a signal exits as a shell reports it: 128 + the signal number.
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + os.constants.signals[signal] : 1)));
  });
}
