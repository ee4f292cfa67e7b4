#!/usr/bin/env node
// The softrdma command.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { createRxeDevice } from '../index.js';
import { devinfo } from './devinfo.js';
import { demo } from './demo.js';
import { smcDemo } from './smc-demo.js';
import { perftest, PERFTEST_USAGE } from '../tools/perftest/index.js';
import { isUsageError } from '../tools/usage.js';
import { pingpong, PINGPONG_USAGE } from '../tools/pingpong.js';
import { smcss, SMCSS_USAGE } from '../tools/smcss.js';
import { smcRun, SMC_RUN_USAGE } from '../tools/smc-run.js';

/** The version of the installed package (its package.json, two levels above dist/src/cli). */
function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const USAGE = `usage: softrdma <command> [options]
       softrdma --version | --help

commands:
  demo                      two rxe devices on 127.0.0.2/127.0.0.3 in one process: RDMA WRITE
                            bandwidth and SEND latency (no configuration needed)
  devinfo [--bind ADDR] [-v] like ibv_devinfo, for an rxe device bound to ADDR (default 127.0.0.1)
  perftest <test> [host]    perftest's ib_{write,read,send,atomic}_bw and ib_{write,read,send}_lat
                            (softrdma perftest --help for options)
  pingpong rc|ud [host]     ibv_rc_pingpong / ibv_ud_pingpong, interoperable with rdma-core's
  smcss [-a] [-d] [--json]   SMC-capable connections of this user's processes, like smc-tools' smcss
  smc-run [--] <cmd...>      run a Node program with every TCP socket SMC-capable (like smc_run)
  smc-demo                   an SMC-D connection next to TCP on this host: mode, throughput, round trip`;

/** -h prints the tool's usage; a usage error prints it too and exits 2; other errors propagate. */
async function runTool(name: string, usage: string, run: () => Promise<unknown>, args: string[]): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) { console.log(usage); return 0; }
  try {
    await run();
    return 0;
  } catch (err) {
    if (!isUsageError(err)) throw err;
    console.error(`softrdma ${name}: ${err.message}\n${usage}`);
    return 2;
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'demo':
      await demo();
      return 0;
    case 'devinfo': {
      const { values } = parseArgs({ args: rest, options: { bind: { type: 'string', default: '127.0.0.1' }, verbose: { type: 'boolean', short: 'v' }, port: { type: 'string' } } });
      const dev = await createRxeDevice({ address: values.bind!, port: values.port ? Number(values.port) : 0 });
      try {
        console.log(devinfo([dev], values.verbose));
      } finally {
        await dev.close();
      }
      return 0;
    }
    case 'perftest':
      return runTool('perftest', PERFTEST_USAGE, () => perftest(rest), rest);
    case 'pingpong':
      return runTool('pingpong', PINGPONG_USAGE, () => pingpong(rest), rest);
    case 'smcss':
      return runTool('smcss', SMCSS_USAGE, async () => smcss(rest), rest);
    case 'smc-run': {
      if (rest[0] === '-h' || rest[0] === '--help') { console.log(SMC_RUN_USAGE); return 0; }
      let code = 0;
      const rc = await runTool('smc-run', SMC_RUN_USAGE, async () => { code = await smcRun(rest); }, []);
      return rc || code;
    }
    case 'smc-demo':
      await smcDemo();
      return 0;
    case '-v':
    case '--version':
    case 'version':
      console.log(packageVersion());
      return 0;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      console.error(`softrdma: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`softrdma: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
