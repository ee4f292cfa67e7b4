#!/usr/bin/env node
// The softrdma command.

import os from 'node:os';
import { devinfoCommand, DEVINFO_USAGE } from './devinfo.js';
import { demo, DEMO_USAGE } from './demo.js';
import { smcDemo, SMC_DEMO_USAGE } from './smc-demo.js';
import { perftest, PERFTEST_USAGE } from '../tools/perftest/index.js';
import { isUsageError, synopsis, UsageError, usageErrorLine } from '../tools/usage.js';
import { pingpong, PINGPONG_USAGE } from '../tools/pingpong.js';
import { rping, RPING_USAGE } from '../tools/rping.js';
import { cmatose, CMATOSE_USAGE } from '../tools/cmatose.js';
import { smcss, SMCSS_USAGE } from '../tools/smcss.js';
import { linkgroup, LINKGROUP_USAGE } from '../tools/linkgroup.js';
import { smcChk, SMC_CHK_USAGE } from '../tools/smc-chk.js';
import { smcRun, SMC_RUN_USAGE, smcRunOptionEnd } from '../tools/smc-run.js';
import { smcTcpOption, SMC_TCP_OPTION_USAGE, tcpOptionRunOptionEnd } from '../tools/smc-tcp-option.js';
import { packageVersion } from '../tools/version.js';

/** parseArgs' own errors: an unknown option, a missing value (getopt's, in the C tools). */
const isParseArgsError = (err: Error) => !(err instanceof UsageError);

interface Command {
  /** What the top-level help shows: the arguments, then one line or two of what it does. */
  args: string;
  about: string;
  usage: string;
  /** The tool talks to a peer over rxe or the rdma_cm: SIGINT and SIGTERM exit through the exit hooks. */
  exitOnSignals?: boolean;
  /** Short options that mean --version for this tool (as in the original: smc_run -v, perftest -V). */
  versionShort?: string[];
  /** Where the tool's own options end (smc-run: at the command it runs). */
  optionEnd?: (args: string[]) => number;
  /**
   * The exit status of a usage error (UsageError or parseArgs'), as the original exits for bad
   * input (a UsageError may carry its own); softrdma's own commands exit 2.
   */
  usageExit: number | ((err: Error) => number);
  /** What --version prints, given the package version (default `softrdma <command> <version>`). */
  versionText?: (version: string) => string;
  /** Exit code, or nothing for 0. Usage errors are thrown (UsageError or parseArgs'). */
  run(args: string[]): Promise<number | void>;
}

// The usage exit statuses are the originals': ibv_devinfo returns -1 (255) from getopt's
// default case and 1 for -i below 1; the *_pingpong examples, cmatose/udaddy, smcss and smc_run
// exit 1; perftest's parser returns FAILURE (1); rping returns EINVAL (22); smc_chk exits 2 when
// getopt fails; smc.c (smcr linkgroup) exits -1 (255).
const COMMANDS: Record<string, Command> = {
  demo: { args: '[-v]', about: 'RDMA WRITE and SEND between two rxe devices in one process', usage: DEMO_USAGE, usageExit: 2, run: demo },
  devinfo: { args: '[-d DEV] [-i PORT] [-l] [-v]', about: 'like ibv_devinfo (an rxe device on --bind ADDR)', usage: DEVINFO_USAGE, usageExit: (err) => (isParseArgsError(err) ? 255 : 1), run: devinfoCommand },
  perftest: { args: '<test> [options] [host]', about: "perftest's ib_*_bw and ib_*_lat (write, read, send, atomic)", usage: PERFTEST_USAGE, usageExit: 1, versionShort: ['-V'], exitOnSignals: true, run: async (a) => { await perftest(a); } },
  pingpong: { args: 'rc|uc|ud [options] [host]', about: "rdma-core's ibv_{rc,uc,ud}_pingpong", usage: PINGPONG_USAGE, usageExit: 1, exitOnSignals: true, run: async (a) => { await pingpong(a); } },
  rping: { args: '-s|-c [-a ADDR] [options]', about: "librdmacm's rping, through softrdma/cm", usage: RPING_USAGE, usageExit: 22, exitOnSignals: true, run: rping },
  cmatose: { args: '[-s ADDR] [-c N] [--ud]', about: "librdmacm's cmatose / udaddy: N connections at once", usage: CMATOSE_USAGE, usageExit: 1, exitOnSignals: true, run: cmatose },
  smcss: { args: '[-a|-l] [-d] [-D|-R] [-W]', about: "SMC sockets of this user's processes (like smcss)", usage: SMCSS_USAGE, usageExit: 1, versionShort: ['-V', '-v'], versionText: (v) => `smcss utility, softrdma-${v}`, run: smcss },
  linkgroup: { args: '[-d|-dd] [show|link-show]', about: "SMC-R link groups and links (like smcr linkgroup)", usage: LINKGROUP_USAGE, usageExit: 255, versionShort: ['-v'], run: linkgroup },
  'smc-chk': { args: '<host> <port>', about: 'does a service get SMC-D, and if not why (like smc_chk -C)', usage: SMC_CHK_USAGE, usageExit: 2, versionShort: ['-v'], run: smcChk },
  'smc-run': { args: '[-d] [-r SIZE] [-o] <cmd...>', about: 'run a Node program with SMC-capable sockets (like smc_run)', usage: SMC_RUN_USAGE, usageExit: 1, versionShort: ['-v'], optionEnd: smcRunOptionEnd, run: smcRun },
  'smc-tcp-option': { args: '<sub> [DIR | CMD...]', about: "Linux's SMC TCP option in a cgroup's SYNs (BPF, root)", usage: SMC_TCP_OPTION_USAGE, usageExit: 2, versionShort: ['-v'], optionEnd: tcpOptionRunOptionEnd, run: smcTcpOption },
  'smc-demo': { args: '', about: 'SMC-D next to TCP on this host: mode, MiB/s, round trip', usage: SMC_DEMO_USAGE, usageExit: 2, run: smcDemo },
};

function topUsage(): string {
  const left = Object.entries(COMMANDS).map(([name, c]) => `  ${name}${c.args ? ' ' + c.args : ''}`);
  const width = Math.max(...left.map((l) => l.length)) + 2;
  const lines = Object.values(COMMANDS).map((c, i) => left[i]!.padEnd(width) + c.about);
  return `usage: softrdma <command> [options]
       softrdma <command> --help | --version
       softrdma --help | --version

commands:
${lines.join('\n')}`;
}

/** --help / --version anywhere among the tool's own options (not in a value, not after --). */
function wants(c: Command, args: string[]): 'help' | 'version' | undefined {
  const end = c.optionEnd ? c.optionEnd(args) : args.indexOf('--') < 0 ? args.length : args.indexOf('--');
  for (const a of args.slice(0, end)) {
    if (a === '-h' || a === '--help') return 'help';
    if (a === '--version' || c.versionShort?.includes(a)) return 'version';
  }
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd !== undefined && Object.hasOwn(COMMANDS, cmd)) {
    const c = COMMANDS[cmd]!;
    const w = wants(c, rest);
    if (w === 'help') { console.log(c.usage); return 0; }
    if (w === 'version') { console.log(c.versionText ? c.versionText(packageVersion()) : `softrdma ${cmd} ${packageVersion()}`); return 0; }
    // Ctrl-C and kill end a run through process.exit, so that the exit hooks run: the rdma_cm's
    // sweep sends the DREQ or REJ a Linux peer gets from the kernel when a process dies (without
    // it a peer waiting on its CQ waits for ever), and rxe's held ACKs leave.
    // The process still dies of the signal (the last 'exit' listener raises it again, with the
    // default action back), so shells and parents see what they would without this.
    if (c.exitOnSignals) {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) {
        process.once(sig, () => {
          process.once('exit', () => process.kill(process.pid, sig));
          process.exit(128 + os.constants.signals[sig]);
        });
      }
    }
    try {
      return (await c.run(rest)) ?? 0;
    } catch (err) {
      if (!isUsageError(err)) {
        console.error(`softrdma ${cmd}: ${err instanceof Error ? err.message : String(err)}`);
        return 1;
      }
      const own = err instanceof UsageError ? err : undefined;
      if (own?.bare) console.error(own.message);
      else console.error(`softrdma ${cmd}: ${usageErrorLine(err)}\n${synopsis(c.usage)}\n(softrdma ${cmd} --help lists the options)`);
      return own?.exitCode ?? (typeof c.usageExit === 'number' ? c.usageExit : c.usageExit(err));
    }
  }
  switch (cmd) {
    case '-v':
    case '-V':
    case '--version':
    case 'version':
      console.log(packageVersion());
      return 0;
    case '-h':
    case '--help':
    case 'help':
      console.log(topUsage());
      return 0;
    case undefined:
      // No command: the usage on stderr and exit 1, as node-style CLIs (npm, git) do.
      console.error(topUsage());
      return 1;
    default:
      console.error(`softrdma: unknown ${cmd.startsWith('-') ? 'option' : 'command'} '${cmd}'\n${topUsage()}`);
      return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`softrdma: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
