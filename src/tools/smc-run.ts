// softrdma smc-run [--] command [args...]: run a Node program with every TCP socket
// SMC-capable (the role of smc-tools' smc_run): NODE_OPTIONS gains --require softrdma/smc/auto
// (--import on a Node that cannot require() an ES module).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { forwardSignals, OWN_SESSION } from './forward-signals.js';
import { resolveCommand, whyNotRunnable } from './command-path.js';
import { runWithTcpOption } from './smc-tcp-option.js';
import { UsageError } from './usage.js';
import { packageVersion } from './version.js';

export { resolveCommand };

export const SMC_RUN_USAGE = `usage: softrdma smc-run [options] [--] <command> [args...]

Runs a Node program (node itself, or a script whose #! line runs node, such as npm or npx)
with NODE_OPTIONS="--require softrdma/smc/auto", so every node:net server and client in the
Node processes it starts negotiates SMC-D with local peers (like smc_run's LD_PRELOAD).

  -d          debug: one line per connection on stderr when it settles on SMC-D or TCP,
              with the reason (NODE_DEBUG=smc)
  -r SIZE     receive buffer (DMB) size in bytes, k or m suffixes allowed, rounded up to
              16 KiB x 2^n (SOFTRDMA_SMC_BUFFER; default 1m)
  -t SIZE     accepted for smc_run's sake and ignored: SMC-D has no send buffer (the sender
              writes into the peer's receive buffer)
  --any       run the command even if it is not a Node program (NODE_OPTIONS still reaches
              the Node programs it starts, e.g. from a shell script)
  -o, --tcp-option
              also put Linux's SMC TCP option into the command's SYNs and SYN-ACKs, so that a
              Linux host's own SMC (SMC-R) negotiates with it: the command runs in a fresh
              cgroup v2 child with a BPF sock_ops program attached, removed when it exits
              (root; see softrdma smc-tcp-option)
  --cgroup DIR
              with -o: make that cgroup under DIR, not under this process's own cgroup
  -v          version;  -h  this help`;

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

/**
 * smc-run's own options, as smc_run's `getopts "dhr:t:v"` reads them (plus softrdma's -o): a group
 * of letters in one word (-dr 1m, -dr1m, -do), the value of -r or -t the rest of the word or
 * the next word; they end at the first word that is not an option (the command), or '--'.
 * softrdma's long options (--debug, --any, --tcp-option, --cgroup DIR) go among them.
 */
interface Scanned {
  /** Index of the command (or of '--' before it). */
  end: number;
  flags: Array<{ opt: string; value?: string }>;
  /** An option smc_run's getopts does not know, or one that lacks its value. */
  error?: string;
}

const SHORT_FLAGS = new Set(['d', 'h', 'v', 'o']);
const SHORT_VALUES = new Set(['r', 't']);
const LONG_FLAGS = new Set(['--debug', '--any', '--tcp-option', '--help', '--version']);

function scan(args: string[]): Scanned {
  const flags: Scanned['flags'] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--' || !a.startsWith('-') || a === '-') return { end: i, flags };
    if (a.startsWith('--')) {
      if (LONG_FLAGS.has(a)) { flags.push({ opt: a }); continue; }
      if (a === '--cgroup' || a.startsWith('--cgroup=')) {
        const value = a === '--cgroup' ? args[++i] : a.slice('--cgroup='.length);
        if (value === undefined) return { end: args.length, flags, error: "option '--cgroup' needs a value" };
        flags.push({ opt: '--cgroup', value });
        continue;
      }
      return { end: i, flags, error: `unknown option '${a}'` };
    }
    for (let k = 1; k < a.length; k++) {
      const c = a[k]!;
      if (SHORT_FLAGS.has(c)) { flags.push({ opt: `-${c}` }); continue; }
      if (!SHORT_VALUES.has(c)) return { end: i, flags, error: `unknown option '-${c}'` };
      const value = k < a.length - 1 ? a.slice(k + 1) : args[++i];
      if (value === undefined) return { end: args.length, flags, error: `option '-${c}' needs a value` };
      flags.push({ opt: `-${c}`, value });
      break;
    }
  }
  return { end: args.length, flags };
}

/** Where smc-run's own options end: at the first word that is not one of them (the command). */
export function smcRunOptionEnd(args: string[]): number {
  return scan(args).end;
}

/** smc_run's SIZE: bytes, or with a k/m suffix; as a DMB size, rounded up to 16 KiB x 2^n. */
export function parseBufferSize(text: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(text);
  if (!m) throw new UsageError(`invalid buffer size '${text}' (bytes, or with a k or m suffix)`);
  const bytes = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : 1 << 20);
  if (bytes > 1 << 30) throw new UsageError(`buffer size '${text}' is over 1 GiB`);
  let size = 16384;
  while (size < bytes) size *= 2;
  return size;
}

export interface SmcRunOptions {
  command: string[]; debug: boolean; bufferSize: number | undefined; any: boolean; tcpOption: boolean; cgroup: string | undefined;
  /** -h or -v inside a group of options (`-dv`): smc_run's getopts acts on it where it comes. */
  action?: 'help' | 'version';
}

/**
 * smc-run's arguments. Usage errors exit 1, as smc_run's (an invalid option, an invalid size, no
 * command).
 */
export function parseSmcRunArgs(args: string[]): SmcRunOptions {
  const o: SmcRunOptions = { command: [], debug: false, bufferSize: undefined, any: false, tcpOption: false, cgroup: undefined };
  const s = scan(args);
  for (const { opt, value } of s.flags) {
    if (opt === '-h' || opt === '--help') return { ...o, action: 'help' };
    if (opt === '-v' || opt === '--version') return { ...o, action: 'version' };
    if (opt === '-d' || opt === '--debug') o.debug = true;
    else if (opt === '--any') o.any = true;
    else if (opt === '-o' || opt === '--tcp-option') o.tcpOption = true;
    else if (opt === '--cgroup') o.cgroup = value;
    else if (opt === '-r') o.bufferSize = parseBufferSize(value!);
    else if (opt === '-t') {
      parseBufferSize(value!);
      process.stderr.write('softrdma smc-run: -t ignored: SMC-D has no send buffer (the sender writes into the receiver\'s buffer; size that with -r)\n');
    }
  }
  if (s.error) throw new UsageError(s.error);
  o.command = args[s.end] === '--' ? args.slice(s.end + 1) : args.slice(s.end);
  if (o.command.length === 0) throw new UsageError('no command given');
  if (o.cgroup !== undefined && !o.tcpOption) throw new UsageError("--cgroup goes with --tcp-option");
  return o;
}

/**
 * Does this file run Node? The node binary itself (this one, or one named node/nodejs), or a
 * script whose #! line runs node (npm, npx, a project's bin). A shell script that starts
 * node is not recognised (use --any).
 */
export function isNodeProgram(file: string): boolean {
  let real: string;
  try { real = fs.realpathSync(file); } catch { return false; }
  try { if (real === fs.realpathSync(process.execPath)) return true; } catch { /* no execPath: go on */ }
  if (/^node(js)?(\d+)?$/.test(path.basename(real))) return true;
  let head = '';
  try {
    const fd = fs.openSync(real, 'r');
    try {
      const b = Buffer.alloc(256);
      head = b.subarray(0, fs.readSync(fd, b, 0, 256, 0)).toString('latin1');
    } finally { fs.closeSync(fd); }
  } catch { return false; }
  if (!head.startsWith('#!')) return false;
  const line = head.slice(2).split('\n')[0]!.trim().split(/\s+/);
  // "#!/usr/bin/node", "#!/usr/bin/env node", "#!/usr/bin/env -S node --flag"
  const words = path.basename(line[0] ?? '') === 'env' ? line.slice(1).filter((w) => !w.startsWith('-')) : line.slice(0, 1);
  return words.length > 0 && /^node(js)?(\d+)?$/.test(path.basename(words[0]!));
}

export function smcRun(args: string[]): Promise<number> {
  let o: SmcRunOptions;
  try { o = parseSmcRunArgs(args); } catch (e) { return Promise.reject(e); }
  if (o.action === 'help') { console.log(SMC_RUN_USAGE); return Promise.resolve(0); }
  if (o.action === 'version') { console.log(`softrdma smc-run ${packageVersion()}`); return Promise.resolve(0); }
  const cmd = o.command;
  const file = resolveCommand(cmd[0]!);
  if (!file) {
    const { code, why } = whyNotRunnable(cmd[0]!);
    process.stderr.write(`softrdma smc-run: ${cmd[0]}: ${why}\n`);
    return Promise.resolve(code);
  }
  if (!o.any && !isNodeProgram(file)) {
    process.stderr.write(`softrdma smc-run: ${cmd[0]} (${file}) is not a Node program, so SMC would not reach its sockets: ` +
      'smc-run preloads softrdma into Node (NODE_OPTIONS), not into other programs. Run a Node program ' +
      "(node app.js, npm start, a script whose #! line runs node), or give --any if the command starts Node programs itself.\n");
    return Promise.resolve(2);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${preloadOptions()}`.trim() };
  if (o.debug) env.NODE_DEBUG = [process.env.NODE_DEBUG, 'smc'].filter(Boolean).join(',');
  if (o.bufferSize !== undefined) env.SOFTRDMA_SMC_BUFFER = String(o.bufferSize);
  if (o.tcpOption) return runWithTcpOption(file, cmd.slice(1), { env, parent: o.cgroup });
  return new Promise((resolve, reject) => {
    const child = spawn(file, cmd.slice(1), { stdio: 'inherit', env, argv0: cmd[0], ...OWN_SESSION });
    const stop = forwardSignals(child);
    child.on('error', (err) => { stop(); reject(err); });
    // A child killed by a signal exits as a shell reports it: 128 + the signal number.
    child.on('exit', (code, signal) => { stop(); resolve(code ?? (signal ? 128 + os.constants.signals[signal] : 1)); });
  });
}
