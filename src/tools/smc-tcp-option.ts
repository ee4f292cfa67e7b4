// softrdma smc-tcp-option attach|detach|status|run: the SMC TCP option (src/sys/smc-tcp-option.ts)
// for the processes of a cgroup v2 directory, so that Linux's own SMC negotiates with them.
// `run` (and `smc-run --tcp-option`) make a fresh child cgroup for one command.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  attachSmcTcpOption, cgroupDirOf, detachSmcTcpOption, smcTcpOptionStatus, SMC_TCP_OPTION_PROG_NAME,
  type AttachedProgram,
} from '../sys/smc-tcp-option.js';
import { resolveCommand } from './command-path.js';
import { forwardSignals, OWN_SESSION } from './forward-signals.js';
import { UsageError } from './usage.js';

export const SMC_TCP_OPTION_USAGE = `usage: softrdma smc-tcp-option attach|detach CGROUP_DIR
       softrdma smc-tcp-option status [--json] [CGROUP_DIR]
       softrdma smc-tcp-option run [--cgroup PARENT] [--] <command> [args...]

Puts Linux's SMC TCP option (kind 254, magic E2 D4 C3 D9) into the SYN and SYN-ACK of every
TCP connection made or accepted by the processes in a cgroup v2 directory, so that a Linux
host's own SMC (AF_SMC, smc_run) negotiates SMC with them instead of falling back to TCP. Node
cannot set TCP options: a BPF sock_ops program (${SMC_TCP_OPTION_PROG_NAME}) attached to the cgroup does it, a few
instructions per SYN and SYN-ACK, nothing on other packets. Root only (CAP_BPF, CAP_NET_ADMIN).

  attach DIR   attach the program to DIR (a directory of the cgroup v2 mount, e.g.
               /sys/fs/cgroup/myapp); it applies to DIR's processes and its child cgroups'.
               Other sock_ops programs stay (BPF_F_ALLOW_MULTI); attaching twice is a no-op
  detach DIR   detach it from DIR
  status [DIR] whether the program is in effect for DIR (default: this process's own cgroup),
               attached there or on an ancestor, and the other sock_ops programs;
               exit 0 in effect, 1 not.  --json: the same as one JSON object
  run CMD...   run a command (any program) in a fresh child cgroup with the program
               attached; the cgroup is removed when the command exits. --cgroup PARENT: make
               it under PARENT instead of under this process's own cgroup
  -v           version;  -h  this help`;

export interface TcpOptionRunOptions {
  /** The directory the fresh cgroup is made in (default: the caller's own cgroup v2 directory). */
  parent?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with the cgroup's path once the program is attached (before the command starts). */
  onCgroup?: (dir: string) => void;
}

let serial = 0;

/**
 * Run `file args` in a fresh child cgroup that has the option program attached; resolves with
 * its exit code (128 + signal when killed) once it exited and the cgroup is gone.
 *
 * The command must be in the cgroup before it opens any socket, so it cannot be moved after
 * spawn (it may connect first). A shell shim moves itself and then execs the command:
 * `sh -c 'echo $$ > DIR/cgroup.procs && exec "$@"'`: the pid written is the command's.
 */
export function runWithTcpOption(file: string, args: string[], o: TcpOptionRunOptions = {}): Promise<number> {
  const parent = o.parent ?? cgroupDirOf();
  const dir = path.join(parent, `softrdma-tcpopt-${process.pid}-${++serial}`);
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such directory' : code === 'EACCES' || code === 'EPERM' ? 'needs root' : (e as Error).message;
    return Promise.reject(Object.assign(new Error(`cannot make a cgroup in ${parent}: ${code} (${why})`), { code }));
  }
  try {
    attachSmcTcpOption(dir);
  } catch (e) {
    removeCgroup(dir);
    return Promise.reject(e as Error);
  }
  o.onCgroup?.(dir);
  return new Promise((resolve, reject) => {
    const shim = 'echo $$ > "$0/cgroup.procs" && exec "$@"';
    const child = spawn('/bin/sh', ['-c', shim, dir, file, ...args], { stdio: 'inherit', env: o.env ?? process.env, ...OWN_SESSION });
    // Signals meant for the command reach it (the shim has exec'd by then); the cgroup is
    // removed once it has exited.
    const done = forwardSignals(child);
    child.on('error', (err) => { done(); removeCgroup(dir); reject(err); });
    child.on('exit', (code, signal) => {
      done();
      void removeCgroupWhenEmpty(dir).then(() => resolve(code ?? (signal ? 128 + os.constants.signals[signal] : 1)));
    });
  });
}

function removeCgroup(dir: string): boolean {
  try { fs.rmdirSync(dir); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ENOENT'; }
}

/**
 * rmdir the cgroup (the kernel then frees the program with it). A process that outlived the
 * command (a daemon it started) keeps it: that is said, and the cgroup left.
 */
async function removeCgroupWhenEmpty(dir: string): Promise<void> {
  // An exited task leaves the cgroup a moment after its parent hears of it.
  for (let i = 0; i < 50; i++) {
    if (removeCgroup(dir)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  let procs = '';
  try { procs = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim().split('\n').join(' '); } catch { /* gone */ }
  process.stderr.write(`softrdma: cgroup ${dir} not removed: processes ${procs || '?'} still in it (they keep the SMC TCP option; rmdir it when they are gone)\n`);
}

export function tcpOptionRunOptionEnd(args: string[]): number {
  // args[0] is the subcommand
  if (args[0] !== 'run') return args.indexOf('--') < 0 ? args.length : args.indexOf('--');
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return i;
    if (a === '--cgroup') { i++; continue; }
    if (!a.startsWith('-') || a === '-') return i;
  }
  return args.length;
}

function programsText(ps: AttachedProgram[]): string {
  return ps.length === 0 ? 'none' : ps.map((p) => `${p.name || '(no name)'} (id ${p.id})`).join(', ');
}

export async function smcTcpOption(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) throw new UsageError('no subcommand given (attach, detach, status or run)');
  if (sub.startsWith('-')) throw new UsageError(`unknown option '${sub}'`);
  if (sub === 'run') {
    const end = tcpOptionRunOptionEnd(args);
    let parent: string | undefined;
    for (let i = 1; i < end; i++) {
      const a = args[i]!;
      if (a === '--cgroup') {
        parent = args[++i];
        if (parent === undefined) throw new UsageError("option '--cgroup' needs a value");
      } else throw new UsageError(`unknown option '${a}'`);
    }
    const cmd = args[end] === '--' ? args.slice(end + 1) : args.slice(end);
    if (cmd.length === 0) throw new UsageError('no command given');
    const file = resolveCommand(cmd[0]!);
    if (!file) {
      process.stderr.write(`softrdma smc-tcp-option: ${cmd[0]}: command not found${cmd[0]!.includes('/') ? '' : ' on PATH'}\n`);
      return 127;
    }
    return runWithTcpOption(file, cmd.slice(1), { parent });
  }
  const { values, positionals } = parseArgs({ args: rest, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
  if (sub !== 'status' && values.json) throw new UsageError(`--json is for status only`);
  const dir = positionals[0];
  switch (sub) {
    case 'attach':
    case 'detach': {
      // No default: the caller's own cgroup is usually a session's or the root, and the option
      // would reach every program in it. Name the cgroup meant for the SMC programs.
      if (dir === undefined) throw new UsageError(`${sub} needs a CGROUP_DIR (a directory of the cgroup v2 mount)`);
      if (sub === 'attach') {
        const fresh = attachSmcTcpOption(dir);
        console.log(fresh ? `attached ${SMC_TCP_OPTION_PROG_NAME} to ${dir}` : `${SMC_TCP_OPTION_PROG_NAME} was attached to ${dir} already`);
      } else {
        const n = detachSmcTcpOption(dir);
        console.log(n > 0 ? `detached ${SMC_TCP_OPTION_PROG_NAME} from ${dir}` : `${SMC_TCP_OPTION_PROG_NAME} was not attached to ${dir}`);
      }
      return 0;
    }
    case 'status': {
      const s = smcTcpOptionStatus(dir ?? cgroupDirOf());
      if (values.json) console.log(JSON.stringify(s));
      else {
        const from = s.attached ? 'attached here' : s.active ? 'attached to an ancestor' : '';
        console.log(`cgroup ${s.cgroup}: SMC TCP option ${s.active ? `on (${from})` : 'off'}`);
        console.log(`  sock_ops programs attached here: ${programsText(s.programs)}`);
        console.log(`  in effect (with the ancestors'): ${programsText(s.effective)}`);
      }
      return s.active ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown subcommand '${sub}' (attach, detach, status or run)`);
  }
}
