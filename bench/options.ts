// The options every benchmark takes: --runs N (median of N runs), --json, --help; a bad
// option prints the usage and exits 2, as the softrdma command does. And the runtime
// directory the SMC benchmarks give their processes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

export interface BenchOptions {
  runs: number;
  json: boolean;
  /** The benchmark's own string options, by name. */
  strings: Record<string, string | undefined>;
}

/** `extra` names the benchmark's own string options and their defaults. */
export function benchOptions(usage: string, extra: Record<string, string | undefined>): BenchOptions {
  const options: NonNullable<Parameters<typeof parseArgs>[0]>['options'] = {
    runs: { type: 'string', default: '3' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  };
  for (const [name, def] of Object.entries(extra)) options[name] = def === undefined ? { type: 'string' } : { type: 'string', default: def };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ options }) as { values: Record<string, string | boolean | undefined> });
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) {
    console.error(`--runs must be a positive integer, got ${String(values.runs)}\n${usage}`);
    process.exit(2);
  }
  const strings: Record<string, string | undefined> = {};
  for (const name of Object.keys(extra)) strings[name] = values[name] as string | undefined;
  return { runs, json: values.json === true, strings };
}

/**
 * A runtime directory of this run's own (the registry entries of its listeners only, not
 * those of other softrdma processes of the user), removed when the benchmark exits.
 */
export function benchRuntimeDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-bench-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
