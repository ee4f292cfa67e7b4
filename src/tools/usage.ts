// The error a tool throws for bad command-line input: the CLI prints it with the tool's
// synopsis and exits with the status the original tool exits with for bad input (each
// command's in src/cli/main.ts; an error may carry its own), unlike a runtime failure (exit 1).
// And what every tool's option parsing shares: integer values (one parser for all), getopt's
// way with values that start with '-', addresses that may be host names.

import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { ParseArgsConfig } from 'node:util';

export interface UsageErrorOptions {
  /** The exit status, where the original exits with another one for this mistake than for the command's other usage errors. */
  exitCode?: number;
  /** Print the message alone, as the original does (no 'softrdma <cmd>: ' prefix, no synopsis). */
  bare?: boolean;
}

export class UsageError extends Error {
  readonly exitCode: number | undefined;
  readonly bare: boolean;
  constructor(message: string, opts: UsageErrorOptions = {}) {
    super(message);
    this.exitCode = opts.exitCode;
    this.bare = opts.bare ?? false;
  }
}

/**
 * How an integer option's value may be written. 'c': what C's strtol(s, &end, 0) takes whole
 * (the rdma-core and perftest tools parse their numbers so): decimal, 0x hex, or octal with a
 * leading 0 ('010' is 8). 'decimal': digits only (atoi-style tools: rping, cmatose; smc-chk).
 * Neither takes a sign, spaces, an empty value, exponents, '0b' or '0o'.
 */
export type IntSyntax = 'c' | 'decimal';

const C_INT = /^(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i;
const DECIMAL_INT = /^\d+$/;

/** The longest delay setTimeout takes (ms); a timeout option must stay below it. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The same in whole seconds: the upper bound of every timeout option given in seconds. */
export const MAX_TIMER_SEC = Math.floor(MAX_TIMER_MS / 1000);

/** The value of an integer written in `syntax`, or NaN when it is not one. */
export function parseIntText(text: string, syntax: IntSyntax): number {
  if (syntax === 'decimal') return DECIMAL_INT.test(text) ? Number(text) : NaN;
  if (!C_INT.test(text)) return NaN;
  if (/^0x/i.test(text)) return parseInt(text.slice(2), 16);
  if (text.length > 1 && text.startsWith('0')) return parseInt(text.slice(1), 8);
  return Number(text);
}

/**
 * An integer option: `def` when not given, else an integer in [min, max] written in `syntax`,
 * or a UsageError that names the option by `label`, as the user would write it ('-C',
 * '--udp-port', '-s/--size').
 */
export function intOption(label: string, v: string | undefined, def: number, min: number, max: number, syntax: IntSyntax = 'decimal'): number {
  if (v === undefined) return def;
  const n = parseIntText(v, syntax);
  if (!(n >= min && n <= max)) {
    const forms = syntax === 'c' ? ' (decimal, 0x hex or 0-prefixed octal)' : '';
    throw new UsageError(`${label} must be an integer from ${min} to ${max}${forms}, got '${v}'`);
  }
  return n;
}

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * The long options every command answers besides its own: the CLI (src/cli/main.ts) handles
 * --help and --version before the tool parses, so they count for getopt_long's prefix rule too.
 */
const COMMON_LONG = ['help', 'version'] as const;

/**
 * getopt_long's rule for a long option's name (glibc's getopt.c): an exact match wins;
 * otherwise any prefix of exactly one option's name stands for it; a prefix of several is
 * "ambiguous". Returns the full name; undefined when nothing matches (getopt's "unrecognized
 * option", which parseArgs reports); throws the ambiguity as getopt words it, as a usage error
 * (a parse error, as getopt's: the code parseArgs' own errors have).
 */
export function longOptionName(given: string, options: Options): string | undefined {
  const own = Object.keys(options);
  const added = COMMON_LONG.filter((n) => !Object.hasOwn(options, n));
  if (own.includes(given) || (added as readonly string[]).includes(given)) return given;
  if (given === '') return undefined;
  // The original's own options first: softrdma's added --help/--version must not make a prefix
  // the original reads as one of its options ambiguous (ibv_devinfo's --ver is --verbose).
  for (const names of [own, added as readonly string[]]) {
    const hits = names.filter((n) => n.startsWith(given));
    if (hits.length === 1) return hits[0];
    if (hits.length > 1) {
      const err = new Error(`option '--${given}' is ambiguous; possibilities: ${hits.map((h) => `'--${h}'`).join(' ')}`) as Error & { code: string };
      err.code = 'ERR_PARSE_ARGS_AMBIGUOUS_OPTION';
      throw err;
    }
  }
  return undefined;
}

/** An argument `--name[=value]` with its name expanded by longOptionName (unchanged when nothing matches). */
function expandLong(a: string, options: Options, lenient: boolean): { arg: string; name: string | undefined } {
  const eq = a.indexOf('=');
  const given = eq < 0 ? a.slice(2) : a.slice(2, eq);
  let name: string | undefined;
  try {
    name = longOptionName(given, options);
  } catch (err) {
    if (!lenient) throw err;
    name = undefined;
  }
  return { arg: name === undefined ? a : `--${name}${eq < 0 ? '' : a.slice(eq)}`, name };
}

/** One option as getopt meets it: its name (undefined: unknown), the arguments it spans, where it sits in a group. */
export interface GetoptOption {
  name: string | undefined;
  /** Its first argument's index in args, and its last (the value's, when the next argument is the value). */
  first: number;
  last: number;
  /** In a group of short options ('-vl'): the character's index in args[first]; undefined for a long option. */
  char?: number | undefined;
}

/**
 * The options in `args` in getopt's order, as getopt_long meets them (without complaining: an
 * unknown or ambiguous option is listed with no name): long options by the prefix rule, groups
 * of short options letter by letter, a value-taking option's value (the rest of its group, or
 * the next argument whatever it starts with) skipped. Stops at '--'. For tools that act on an
 * option as soon as getopt returns it (devinfo's -l), and for the CLI's --help/--version.
 */
export function getoptScan(args: readonly string[], options: Options): GetoptOption[] {
  const shortName = new Map<string, string>();
  for (const [n, o] of Object.entries(options)) if (o.short) shortName.set(o.short, n);
  const takes = (n: string | undefined) => n !== undefined && options[n]?.type === 'string';
  const out: GetoptOption[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a.startsWith('--')) {
      const { name } = expandLong(a, options, true);
      const value = takes(name) && !a.includes('=') && i + 1 < args.length;
      out.push({ name, first: i, last: value ? i + 1 : i });
      if (value) i++;
      continue;
    }
    if (!a.startsWith('-') || a.length < 2) continue;
    for (let k = 1; k < a.length; k++) {
      const name = shortName.get(a[k]!);
      const o: GetoptOption = { name, first: i, last: i, char: k };
      out.push(o);
      if (!takes(name)) continue;
      if (k === a.length - 1 && i + 1 < args.length) o.last = ++i;
      break;
    }
  }
  return out;
}

/**
 * The arguments as getopt_long reads them, for parseArgs:
 * - a long option may be abbreviated to any unambiguous prefix of its name (`--iter 5` is
 *   `--iters 5`; an exact name wins; `--help` and `--version` count, as the CLI answers them):
 *   rewritten to its full name; an ambiguous prefix is getopt's "option '--x' is ambiguous;
 *   possibilities: ..." (a usage error);
 * - an option that takes a value takes the next argument whatever it starts with ('-C -1' is
 *   -C with '-1', which the range check then refuses in words), where parseArgs would call '-1'
 *   an ambiguous value: rewritten as '-C-1' and '--name=-1', which parseArgs reads as the value.
 * Nothing after '--' is touched.
 */
export function getoptArgs(args: readonly string[], options: Options): string[] {
  const out: string[] = [];
  const shortTakes = new Map<string, boolean>();
  for (const o of Object.values(options)) if (o.short) shortTakes.set(o.short, o.type === 'string');
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    if (a === '--') { out.push(...args.slice(i)); break; }
    let longName: string | undefined;
    if (a.startsWith('--')) ({ arg: a, name: longName } = expandLong(a, options, false));
    out.push(a);
    const next = args[i + 1];
    if (a.startsWith('--')) {
      // The value of a long option that takes one is the next argument, whatever it is.
      if (next !== undefined && !a.includes('=') && longName !== undefined && options[longName]?.type === 'string') {
        out[out.length - 1] = `${a}=${next}`;
        i++;
      }
      continue;
    }
    const dashValue = next !== undefined && next.startsWith('-') && next.length > 1;
    if (!dashValue) continue;
    if (!a.startsWith('-') || a.length < 2) continue;
    // A group of short options: the first that takes a value takes the rest of the group, or
    // (when it ends the group) the next argument.
    for (let k = 1; k < a.length; k++) {
      const takes = shortTakes.get(a[k]!);
      if (takes === undefined) break;
      if (!takes) continue;
      if (k === a.length - 1) { out[out.length - 1] = a + next; i++; }
      break;
    }
  }
  return out;
}

/**
 * Addresses given to the single-dash address options (`-a`, `-I`, `-s`, `-b`): IP literals, or
 * host names resolved as getaddrinfo() resolves them for the originals (the first answer).
 * A name is resolved in the family of a literal given with it (`-I 127.0.0.3 -a localhost`
 * gives 127.0.0.1, not ::1), so that both ends of a connection are of one family.
 * Returns the addresses by option name; an unresolvable name is a UsageError.
 */
export async function resolveAddressOptions(options: ReadonlyArray<readonly [string, string | undefined]>): Promise<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {};
  const literal = options.map(([, v]) => (v === undefined ? 0 : isIP(v))).find((f) => f !== 0) ?? 0;
  for (const [k, v] of options) out[k] = v === undefined ? v : await resolveAddress(`-${k}`, v, literal);
  return out;
}

/**
 * A local address option of softrdma's own (`--bind`): an IP literal, or a host name resolved as
 * resolveAddressOptions resolves -b (its first answer); anything else (an empty value, a name
 * that does not resolve) is a UsageError naming the option as `label` ('--bind').
 */
export function resolveBindOption(label: string, v: string, opts: UsageErrorOptions = {}): Promise<string> {
  return resolveAddress(label, v, 0, opts);
}

/** One address option: an IP literal as it is, a host name by getaddrinfo (in `family` if not 0). */
async function resolveAddress(label: string, v: string, family: number, opts: UsageErrorOptions = {}): Promise<string> {
  if (isIP(v) !== 0) return v;
  if (v === '') throw new UsageError(`${label} must be an IPv4 or IPv6 address or a host name, got ''`, opts);
  try {
    return (await lookup(v, family ? { family } : {})).address;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`${label} must be an IPv4 or IPv6 address or a host name that resolves${family ? ` to an IPv${family} address` : ''}, got '${v}' (${code ?? (err as Error).message})`, opts);
  }
}

/**
 * What to say when an rxe device cannot take its UDP port (EADDRINUSE): two tools on one host
 * need an address each. For perftest and pingpong, whose options are these.
 */
export function udpPortTaken(bind: string, udpPort: number, tool: string): string {
  return `UDP port ${udpPort} on ${bind} is taken (another rxe device, perftest or pingpong on this address?). ` +
    'Two processes on one host need an address each: e.g. --bind 127.0.0.2 for the server and --bind 127.0.0.3 ' +
    `for the client (each on port 4791 of its own address); or --udp-port 0 on the ${tool} server and, on the client, ` +
    'the port the server prints.';
}

/** parseArgs' own errors (unknown option, missing value) are usage errors too. */
export function isUsageError(err: unknown): err is Error {
  return err instanceof UsageError || ((err as { code?: string })?.code?.startsWith('ERR_PARSE_ARGS') ?? false);
}

/** parseArgs names an option '-C, --C' when its long name is its short one: that is just '-C'. */
function optionName(s: string): string {
  return s.replace(/^-(\w), --\1$/, '-$1');
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
    if ((x = /Option '([^']+?)(?: <value>)?' argument missing/.exec(m))) return `option '${optionName(x[1]!)}' needs a value`;
    if ((x = /Option '([^']+?)(?: <value>)?' does not take an argument/.exec(m))) return `option '${optionName(x[1]!)}' takes no value`;
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && (x = /Unexpected argument '([^']+)'/.exec(m))) return `unexpected argument '${x[1]}'`;
  return m.split('\n')[0]!;
}

/** The first line of a usage text: the synopsis. */
export function synopsis(usage: string): string {
  return usage.split('\n')[0]!;
}
