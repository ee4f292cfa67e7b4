#!/usr/bin/env node
// The softrdma command.

import os from 'node:os';
import { isUsageError, synopsis, UsageError, usageErrorLine, getoptScan, type Options } from '../tools/usage.js';
import { packageVersion } from '../tools/version.js';

/** parseArgs' own errors: an unknown option, a missing value (getopt's, in the C tools). */
const isParseArgsError = (err: Error) => !(err instanceof UsageError);

/** What a command's module provides; loaded only for the command run (see COMMANDS). */
interface CommandImpl {
  usage: string;
  /**
   * The tool's options as getopt_long reads them (its parseArgs options): --help and --version
   * are then found as getopt would meet them, abbreviated (`--vers`), grouped (`smcss -av`), and
   * not inside another option's value; unset: only the exact words, anywhere.
   */
  options?: Options;
  /** The tool's own way of finding help and version among its arguments (linkgroup: smc.c's prefixes). */
  wants?: (args: string[]) => 'help' | 'version' | undefined;
  /** Where the tool's own options end (smc-run: at the command it runs). */
  optionEnd?: (args: string[]) => number;
  /** What --version prints, given the package version (default `softrdma <command> <version>`). */
  versionText?: (version: string) => string;
  /** Exit code, or nothing for 0. Usage errors are thrown (UsageError or parseArgs'). */
  run(args: string[]): Promise<number | void>;
}

interface Command {
  /** What the top-level help shows: the arguments, then one line or two of what it does. */
  args: string;
  about: string;
  /** The tool talks to a peer over rxe or the rdma_cm: SIGINT and SIGTERM exit through the exit hooks. */
  exitOnSignals?: boolean;
  /** Short options that mean --version for this tool (as in the original: smc_run -v, perftest -V). */
  versionShort?: string[];
  /** The exit status after --help or --version (perftest: FAILURE, as its mains return after HELP_EXIT/VERSION_EXIT); default 0. */
  helpVersionExit?: number;
  /**
   * The exit status of a usage error (UsageError or parseArgs'), as the original exits for bad
   * input (a UsageError may carry its own); softrdma's own commands exit 2.
   */
  usageExit: number | ((err: Error) => number);
  /**
   * The command's module, imported when it runs: each tool loads only what it uses (loading
   * every tool's modules, ~150 of them, took a command's start from node's ~60 ms to ~200).
   */
  load(): Promise<CommandImpl>;
}

// The usage exit statuses are the originals': ibv_devinfo returns -1 (255) from getopt's
// default case and 1 for -i below 1; the *_pingpong examples, cmatose/udaddy, smcss and smc_run
// exit 1; perftest's parser returns FAILURE (1); rping returns EINVAL (22); smc_chk exits 2 when
// getopt fails; smc.c (smcr linkgroup) exits -1 (255).
const COMMANDS: Record<string, Command> = {
  demo: {
    args: '[-v]', about: 'RDMA WRITE and SEND between two rxe devices in one process', usageExit: 2,
    load: async () => { const m = await import('./demo.js'); return { usage: m.DEMO_USAGE, run: m.demo }; },
  },
  devinfo: {
    args: '[-d DEV] [-i PORT] [-l] [-v]', about: 'like ibv_devinfo (an rxe device on --bind ADDR)', usageExit: (err) => (isParseArgsError(err) ? 255 : 1),
    load: async () => { const m = await import('./devinfo.js'); return { usage: m.DEVINFO_USAGE, options: m.DEVINFO_OPTIONS, run: m.devinfoCommand }; },
  },
  perftest: {
    args: '<test> [options] [host]', about: "perftest's ib_*_bw and ib_*_lat (write, read, send, atomic)", usageExit: 1, versionShort: ['-V'], helpVersionExit: 1, exitOnSignals: true,
    load: async () => {
      const m = await import('../tools/perftest/index.js');
      return { usage: m.PERFTEST_USAGE, options: m.PERFTEST_OPTIONS, versionText: () => `Version: ${m.PERFTEST_VERSION}`, run: async (a) => { await m.perftest(a); } };
    },
  },
  pingpong: {
    args: 'rc|uc|ud|srq [opts] [host]', about: "rdma-core's ibv_{rc,uc,ud,srq}_pingpong", usageExit: 1, exitOnSignals: true,
    load: async () => { const m = await import('../tools/pingpong.js'); return { usage: m.PINGPONG_USAGE, options: m.PINGPONG_OPTIONS, run: async (a) => { await m.pingpong(a); } }; },
  },
  rping: {
    args: '-s|-c -a ADDR [options]', about: "librdmacm's rping, through softrdma/cm", usageExit: 22, exitOnSignals: true,
    load: async () => { const m = await import('../tools/rping.js'); return { usage: m.RPING_USAGE, options: m.RPING_OPTIONS, run: m.rping }; },
  },
  cmatose: {
    args: '[-s ADDR] [-c N] [--ud]', about: "librdmacm's cmatose / udaddy: N connections at once", usageExit: 1, exitOnSignals: true,
    load: async () => { const m = await import('../tools/cmatose.js'); return { usage: m.CMATOSE_USAGE, options: m.CMATOSE_OPTIONS, run: m.cmatose }; },
  },
  smcss: {
    args: '[-a|-l] [-d] [-D|-R] [-W]', about: "SMC sockets of this user's processes (like smcss)", usageExit: 1, versionShort: ['-V', '-v'],
    load: async () => { const m = await import('../tools/smcss.js'); return { usage: m.SMCSS_USAGE, options: m.SMCSS_OPTIONS, versionText: (v) => `smcss utility, softrdma-${v}`, run: m.smcss }; },
  },
  linkgroup: {
    args: '[-d|-dd] [show|link-show]', about: 'SMC-R link groups and links (like smcr linkgroup)', usageExit: 255, versionShort: ['-v'],
    load: async () => { const m = await import('../tools/linkgroup.js'); return { usage: m.LINKGROUP_USAGE, wants: m.linkgroupWants, run: m.linkgroup }; },
  },
  'smc-chk': {
    args: '<host> <port>', about: 'does a service get SMC-D, and if not why (like smc_chk -C)', usageExit: 2, versionShort: ['-v'],
    load: async () => { const m = await import('../tools/smc-chk.js'); return { usage: m.SMC_CHK_USAGE, options: m.SMC_CHK_OPTIONS, run: m.smcChk }; },
  },
  'smc-run': {
    args: '[-d] [-r SIZE] [-o] <cmd...>', about: 'run a Node program with SMC-capable sockets (like smc_run)', usageExit: 1, versionShort: ['-v'],
    load: async () => { const m = await import('../tools/smc-run.js'); return { usage: m.SMC_RUN_USAGE, optionEnd: m.smcRunOptionEnd, run: m.smcRun }; },
  },
  'smc-tcp-option': {
    args: '<sub> [DIR | CMD...]', about: "Linux's SMC TCP option in a cgroup's SYNs (BPF, root)", usageExit: 2, versionShort: ['-v'],
    load: async () => { const m = await import('../tools/smc-tcp-option.js'); return { usage: m.SMC_TCP_OPTION_USAGE, optionEnd: m.tcpOptionRunOptionEnd, run: m.smcTcpOption }; },
  },
  'smc-demo': {
    args: '', about: 'SMC-D next to TCP on this host: mode, MiB/s, round trip', usageExit: 2,
    load: async () => { const m = await import('./smc-demo.js'); return { usage: m.SMC_DEMO_USAGE, run: m.smcDemo }; },
  },
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

/**
 * --help / --version among the tool's own options (not after --). With the tool's options, as
 * getopt_long meets them: in order, by any unambiguous prefix (`--vers`), in a group of short
 * options (`smcss -av`), not inside an option's value; up to the first option getopt would
 * refuse (the tool's parser reports that one). Without, the exact words anywhere.
 */
function wants(c: Command, impl: CommandImpl, args: string[]): 'help' | 'version' | undefined {
  if (impl.wants) return impl.wants(args);
  const end = impl.optionEnd ? impl.optionEnd(args) : args.indexOf('--') < 0 ? args.length : args.indexOf('--');
  const own = args.slice(0, end);
  if (impl.options) {
    for (const o of getoptScan(own, impl.options)) {
      if (o.char === undefined) {
        if (o.name === 'help' || o.name === 'version') return o.name;
        if (o.name === undefined) return undefined;
        continue;
      }
      if (o.name !== undefined) continue;
      const letter = `-${own[o.first]![o.char]!}`;
      if (letter === '-h') return 'help';
      if (c.versionShort?.includes(letter)) return 'version';
      return undefined;
    }
    return undefined;
  }
  for (const a of own) {
    if (a === '-h' || a === '--help') return 'help';
    if (a === '--version' || c.versionShort?.includes(a)) return 'version';
  }
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd !== undefined && Object.hasOwn(COMMANDS, cmd)) {
    const c = COMMANDS[cmd]!;
    const impl = await c.load();
    const w = wants(c, impl, rest);
    if (w === 'help') { console.log(impl.usage); return c.helpVersionExit ?? 0; }
    if (w === 'version') { console.log(impl.versionText ? impl.versionText(packageVersion()) : `softrdma ${cmd} ${packageVersion()}`); return c.helpVersionExit ?? 0; }
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
      return (await impl.run(rest)) ?? 0;
    } catch (err) {
      if (!isUsageError(err)) {
        console.error(`softrdma ${cmd}: ${err instanceof Error ? err.message : String(err)}`);
        return 1;
      }
      const own = err instanceof UsageError ? err : undefined;
      if (own?.bare) console.error(own.message);
      else console.error(`softrdma ${cmd}: ${usageErrorLine(err)}\n${synopsis(impl.usage)}\n(softrdma ${cmd} --help lists the options)`);
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
