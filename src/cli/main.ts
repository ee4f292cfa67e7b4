#!/usr/bin/env node
// The softrdma command.

import { parseArgs } from 'node:util';
import { createRxeDevice } from '../index.js';
import { devinfo } from './devinfo.js';
import { demo } from './demo.js';
import { perftest, PERFTEST_USAGE, UsageError } from '../tools/perftest/index.js';
import { pingpong, PINGPONG_USAGE } from '../tools/pingpong.js';

const USAGE = `usage: softrdma <command> [options]

commands:
  demo                      two rxe devices on 127.0.0.2/127.0.0.3 in one process: RDMA WRITE
                            bandwidth and SEND latency (no configuration needed)
  devinfo [--bind ADDR] [-v] like ibv_devinfo, for an rxe device bound to ADDR (default 127.0.0.1)
  perftest <test> [host]    perftest's ib_{write,read,send,atomic}_bw and ib_{write,read,send}_lat
                            (softrdma perftest --help for options)
  pingpong rc|ud [host]     ibv_rc_pingpong / ibv_ud_pingpong, interoperable with rdma-core's

not yet: smcss, smc-run (see README, "What works")`;

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
      if (rest.includes('-h') || rest.includes('--help')) { console.log(PERFTEST_USAGE); return 0; }
      try {
        await perftest(rest);
      } catch (err) {
        if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
          console.error(`softrdma perftest: ${(err as Error).message}\n${PERFTEST_USAGE}`);
          return 2;
        }
        throw err;
      }
      return 0;
    case 'pingpong':
      if (rest.includes('-h') || rest.includes('--help')) { console.log(PINGPONG_USAGE); return 0; }
      try {
        await pingpong(rest);
      } catch (err) {
        if (err instanceof RangeError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
          console.error(`softrdma pingpong: ${(err as Error).message}\n${PINGPONG_USAGE}`);
          return 2;
        }
        throw err;
      }
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
