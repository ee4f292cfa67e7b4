// The error a tool throws for bad command-line input: the CLI prints it with the tool's
// usage and exits 2, unlike a runtime failure (exit 1).

import { isIP } from 'node:net';

export class UsageError extends Error {}

/**
 * A single-dash integer option as rdma-core's examples take them (`-C 100`): `def` when not
 * given, else an integer in [min, max] or a UsageError naming the option.
 */
export function intOption(name: string, v: string | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new UsageError(`-${name} must be an integer from ${min} to ${max}, got '${v}'`);
  return n;
}

/** Single-dash address options (`-a`, `-b`, ...): each given one must be an IPv4 or IPv6 literal. */
export function checkAddressOptions(options: ReadonlyArray<readonly [string, string | undefined]>): void {
  for (const [k, v] of options) if (v !== undefined && isIP(v) === 0) throw new UsageError(`-${k} must be an IPv4 or IPv6 address, got '${v}'`);
}

/** parseArgs' own errors (unknown option, missing value) are usage errors too. */
export function isUsageError(err: unknown): err is Error {
  return err instanceof UsageError || ((err as { code?: string })?.code?.startsWith('ERR_PARSE_ARGS') ?? false);
}

/**
 * One line for a usage error. parseArgs' messages run to three sentences ("Unknown option
 * '--x'. To specify a positional argument starting with a '-', place it at the end of the
 * command after '--', as in ..."): keep what names the option.
 */
export function usageErrorLine(err: Error): string {
  const m = err.message;
  const code = (err as { code?: string }).code;
  let x: RegExpExecArray | null;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && (x = /Unknown option '([^']+)'/.exec(m))) return `unknown option '${x[1]}'`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if ((x = /Option '([^']+?)(?: <value>)?' argument missing/.exec(m))) return `option '${x[1]}' needs a value`;
    if ((x = /Option '([^']+?)(?: <value>)?' does not take an argument/.exec(m))) return `option '${x[1]}' takes no value`;
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && (x = /Unexpected argument '([^']+)'/.exec(m))) return `unexpected argument '${x[1]}'`;
  return m.split('\n')[0]!;
}

/** The first line of a usage text: the synopsis. */
export function synopsis(usage: string): string {
  return usage.split('\n')[0]!;
}
