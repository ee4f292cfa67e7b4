#!/usr/bin/env node
// The softrdma command.

import fs from 'node:fs';
import os from 'node:os';
import { devinfoCommand, DEVINFO_USAGE } from './devinfo.js';
import { demo, DEMO_USAGE } from './demo.js';
import { smcDemo, SMC_DEMO_USAGE } from './smc-demo.js';
import { perftest, PERFTEST_USAGE } from '../tools/perftest/index.js';
import { isUsageError, synopsis, usageErrorLine } from '../tools/usage.js';
import { pingpong, PINGPONG_USAGE } from '../tools/pingpong.js';
import { rping, RPING_USAGE } from '../tools/rping.js';
import { cmatose, CMATOSE_USAGE } from '../tools/cmatose.js';
import { smcss, SMCSS_USAGE } from '../tools/smcss.js';
import { linkgroup, LINKGROUP_USAGE } from '../tools/linkgroup.js';
import { smcChk, SMC_CHK_USAGE } from '../tools/smc-chk.js';
import { smcRun, SMC_RUN_USAGE, smcRunOptionEnd } from '../tools/smc-run.js';
import { smcTcpOption, SMC_TCP_OPTION_USAGE, tcpOptionRunOptionEnd } from '../tools/smc-tcp-option.js';

/** The version of the installed package (its package.json, two levels above dist/src/cli). */
function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

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
  /** Exit code, or nothing for 0. Usage errors are thrown (UsageError or parseArgs'). */
  run(args: string[]): Promise<number | void>;
}

const COMMANDS: Record<string, Command> = {
  demo: { args: '[-v]', about: 'RDMA WRITE and SEND between two rxe devices in one process', usage: DEMO_USAGE, run: demo },
  devinfo: { args: '[-d DEV] [-i PORT] [-l] [-v]', about: 'like ibv_devinfo (an rxe device on --bind ADDR)', usage: DEVINFO_USAGE, run: devinfoCommand },
  perftest: { args: '<test> [options] [host]', about: "perftest's ib_*_bw and ib_*_lat (write, read, send, atomic)", usage: PERFTEST_USAGE, versionShort: ['-V'], exitOnSignals: true, run: async (a) => { await perftest(a); } },
  pingpong: { args: 'rc|uc|ud [options] [host]', about: "rdma-core's ibv_{rc,uc,ud}_pingpong", usage: PINGPONG_USAGE, exitOnSignals: true, run: async (a) => { await pingpong(a); } },
  rping: { args: '-s|-c [-a ADDR] [options]', about: "librdmacm's rping, through softrdma/cm", usage: RPING_USAGE, exitOnSignals: true, run: rping },
  cmatose: { args: '[-s ADDR] [-c N] [--ud]', about: "librdmacm's cmatose / udaddy: N connections at once", usage: CMATOSE_USAGE, exitOnSignals: true, run: cmatose },
  smcss: { args: '[-a|-l] [-d] [-D|-R] [-W]', about: "SMC sockets of this user's processes (like smcss)", usage: SMCSS_USAGE, versionShort: ['-V', '-v'], run: smcss },
  linkgroup: { args: '[-d|-dd] [show|link-show]', about: "SMC-R link groups and links (like smcr linkgroup)", usage: LINKGROUP_USAGE, versionShort: ['-v'], run: linkgroup },
  'smc-chk': { args: '<host> <port>', about: 'does a service get SMC-D, and if not why (like smc_chk -C)', usage: SMC_CHK_USAGE, versionShort: ['-v'], run: smcChk },
  'smc-run': { args: '[-d] [-r SIZE] [-o] <cmd...>', about: 'run a Node program with SMC-capable sockets (like smc_run)', usage: SMC_RUN_USAGE, versionShort: ['-v'], optionEnd: smcRunOptionEnd, run: smcRun },
  'smc-tcp-option': { args: '<sub> [DIR | CMD...]', about: "Linux's SMC TCP option in a cgroup's SYNs (BPF, root)", usage: SMC_TCP_OPTION_USAGE, versionShort: ['-v'], optionEnd: tcpOptionRunOptionEnd, run: smcTcpOption },
  'smc-demo': { args: '', about: 'SMC-D next to TCP on this host: mode, MiB/s, round trip', usage: SMC_DEMO_USAGE, run: smcDemo },
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
    if (w === 'version') { console.log(`softrdma ${cmd} ${packageVersion()}`); return 0; }
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
      console.error(`softrdma ${cmd}: ${usageErrorLine(err)}\n${synopsis(c.usage)}\n(softrdma ${cmd} --help lists the options)`);
      return 2;
    }
  }
  switch (cmd) {
    case '-v':
    case '-V':
    case '--version':
    case 'version':
      console.log(packageVersion());
      return 0;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      console.log(topUsage());
      return cmd === undefined ? 2 : 0;
    default:
      console.error(`softrdma: unknown ${cmd.startsWith('-') ? 'option' : 'command'} '${cmd}'\n${topUsage()}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`softrdma: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
