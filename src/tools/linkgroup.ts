// softrdma linkgroup: the SMC-R link groups and links of this user's softrdma processes on the
// host, as smc-tools' `smcr linkgroup` prints the kernel's (linkgroup.c: print_lgr_smcr_header,
// show_lgr_smcr_info, show_lgr_smcr_info_lgr_details). The link groups come from each
// process's status socket, as smcss's connections do (src/smc/status.ts, smcss.ts collect()).
// Arguments as smc-tools parses them: `show` (default) or `link-show`, each matched by any
// prefix; then `all`, an LG-ID, `ibdev DEV` or `netdev DEV`; -d / -dd for more detail.

import type { SmcrLinkGroupStatus, SmcrLinkStatus } from '../smc/smcr/diag.js';
import { collect } from './smcss.js';
import { UsageError } from './usage.js';

export const LINKGROUP_USAGE = `usage: softrdma linkgroup [-d|-dd] [show | link-show] [all | LG-ID] [ibdev DEV] [netdev DEV]
  show                the link groups: LG-ID, LG-Role, LG-Type, VLAN, #Conns, PNET-ID (default)
  link-show           the links: their link group, Net-Dev, Link-State, #Conns
  all                 every link group (the default)
  LG-ID               only the link group with this id (hex; a link's UID names its group too)
  ibdev DEV           link-show: only links on this RoCE device
  netdev DEV          link-show: only links on this network interface
  -d, --details       show: one block of details per link group;
                      link-show: also Link-UID, Peer-UID, IB-Dev, IB-P
  -dd, --ddetails     link-show: also the local and the peer GID
  -a, --absolute      taken, as smc-tools takes it (no details: a later -a undoes -d)
      --json          the link groups and their links as one JSON document, with their pids
                      (link-show: the links that pass ibdev/netdev)
  -h, --help          this message (any prefix of -help or --help: -he, as smc.c)
  -v, --version       show version information (any prefix of -version: -vers)

Like smc-tools' smcr linkgroup, for the SMC-R link groups of this user's softrdma processes on
this host. As smc-tools, prints nothing at all when there is no link group; 'linkgroup help'
prints this on stderr and exits 255, as 'smcr linkgroup help'.`;

/** linkgroup.c's SMC_DETAIL_LEVEL_V / _VV. */
const DETAIL_V = 1;
const DETAIL_VV = 2;
const MASK_LINK_ID = 0xffffff00;
const INVALID_LINK_ID = 0xffffffff;
/** smctools_common.h's SMC_MAX_IBNAME and IFNAMSIZ - 1. */
const MAX_IBNAME = 8;
const MAX_NETDEV = 15;

export interface LinkgroupOptions {
  /** `linkgroup help`: the usage, as smc-tools prints it for that. */
  help: boolean;
  links: boolean;
  detail: number;
  /** The LG-ID as given (0: none; 0xffffffff: not a number, which matches nothing). */
  lgid: number;
  ibdev: string;
  netdev: string;
  json: boolean;
}

/** util.c's contains(): whether `given` is a non-empty prefix of `word`. */
const prefixOf = (given: string, word: string) => given.length > 0 && word.startsWith(given);

/**
 * Whether the options ask for the version or the help, as smc.c's main() takes its options in
 * order (`--x` read as `-x`): -ad/-da and any prefix of -absolute first, then of -version, of
 * -details, of -ddetails, of -help (so `-v`, `-vers`, `--version`; `-h`, `-he`, `--help`); as
 * parseLinkgroupArgs, anywhere up to '--', and up to an unknown option (which it reports).
 */
export function linkgroupWants(args: string[]): 'help' | 'version' | undefined {
  for (const a of args) {
    if (a === '--') return undefined;
    if (!a.startsWith('-')) continue;
    if (a === '--json') continue;
    const opt = a.startsWith('--') ? a.slice(1) : a;
    if (opt.startsWith('-ad') || opt.startsWith('-da') || prefixOf(opt, '-absolute')) continue;
    if (prefixOf(opt, '-version')) return 'version';
    if (prefixOf(opt, '-details') || prefixOf(opt, '-ddetails')) continue;
    if (prefixOf(opt, '-help')) return 'help';
    return undefined;
  }
  return undefined;
}

/** strtol(s, 16) as unsigned int: the leading hex digits, or undefined when there are none. */
function hexNumber(s: string): number | undefined {
  const m = /^\s*([+-]?)(?:0x)?([0-9a-f]+)/i.exec(s);
  if (!m) return undefined;
  const v = Number.parseInt(m[2]!.slice(-16), 16);
  return (m[1] === '-' ? -v : v) >>> 0;
}

/**
 * The options and arguments, as smc.c's main() and linkgroup.c's handle_cmd_params() take them
 * (smc.c takes options before the object only; softrdma anywhere, up to '--'). An unknown
 * option is smc.c's error, alone, and exit 255 (its exit(-1)).
 */
export function parseLinkgroupArgs(args: string[]): LinkgroupOptions {
  const o: LinkgroupOptions = { help: false, links: false, detail: 0, lgid: 0, ibdev: '', netdev: '', json: false };
  const rest: string[] = [];
  let optionsEnd = false;
  for (const a of args) {
    if (optionsEnd || !a.startsWith('-')) { rest.push(a); continue; }
    if (a === '--') { optionsEnd = true; continue; }
    if (a === '--json') { o.json = true; continue; }
    const opt = a.startsWith('--') ? a.slice(1) : a;
    // smc.c: -ad / -da (SMC_OPTION_DETAIL_ABS) and -a[bsolute] (SMC_OPTION_ABS) replace the
    // detail level with one below SMC_DETAIL_LEVEL_V, so linkgroup prints no details.
    if (opt.startsWith('-ad') || opt.startsWith('-da') || prefixOf(opt, '-absolute')) o.detail = 0;
    else if (prefixOf(opt, '-details')) o.detail = DETAIL_V;
    else if (prefixOf(opt, '-ddetails')) o.detail = DETAIL_VV;
    else throw new UsageError(`Error: Option "${opt}" is unknown, try "softrdma linkgroup help".`, { bare: true });
  }
  if (rest.length > 4) throw new UsageError(`unexpected argument '${rest[4]!}'`);
  if (rest.length === 1 && prefixOf(rest[0]!, 'help')) return { ...o, help: true };
  let i = 0;
  if (rest.length > 0) {
    if (prefixOf(rest[0]!, 'show')) i = 1;
    else if (prefixOf(rest[0]!, 'link-show')) { o.links = true; i = 1; }
  }
  let all = false;
  let pending: 'ibdev' | 'netdev' | undefined;
  for (; i < rest.length; i++) {
    const a = rest[i]!;
    if (pending) { o[pending] = a; pending = undefined; i++; break; }
    if (prefixOf(a, 'help')) return { ...o, help: true };
    if (prefixOf(a, 'all')) { all = true; continue; }
    if (prefixOf(a, 'ibdev')) { pending = 'ibdev'; continue; }
    if (prefixOf(a, 'netdev')) { pending = 'netdev'; continue; }
    if (all) throw new UsageError(`unexpected argument '${a}'`);
    o.lgid = hexNumber(a) ?? INVALID_LINK_ID;
    i++;
    break;
  }
  // `ibdev` or `netdev` last, without a device: no filter (handle_cmd_params leaves it empty).
  if (i < rest.length) throw new UsageError(`unexpected argument '${rest[i]!}'`);
  return o;
}

/** filter_smcr_item: whether a link group (or, for link-show, its link) is left out. */
function filtered(o: LinkgroupOptions, g: SmcrLinkGroupStatus, l: SmcrLinkStatus | undefined): boolean {
  if (!o.ibdev && !o.netdev && o.lgid === 0) return false;
  if (o.netdev && o.links) return l?.netDev !== o.netdev;
  if (o.ibdev && o.links) return l?.ibDev !== o.ibdev;
  if (o.lgid !== 0) return (o.lgid === INVALID_LINK_ID ? 0 : (o.lgid & MASK_LINK_ID) >>> 0) !== g.id;
  return false;
}

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const roleText = (g: SmcrLinkGroupStatus) => (g.role === 'server' ? 'SERV' : 'CLNT');
/** printf's %#4x: a 0x prefix except for zero, right-aligned in 4. */
const altHex4 = (n: number) => (n === 0 ? '0' : `0x${n.toString(16)}`).padStart(4);
/** printf's %-N s, or %-.N s (cut, not padded) when the text is longer than max. */
const field = (s: string, width: number, max: number) => (s.length > max ? s.slice(0, max) : s.padEnd(width));

/** print_lgr_smcr_header; empty for show with details, which prints blocks instead. */
export function linkgroupHeader(o: Pick<LinkgroupOptions, 'links' | 'detail'>): string | undefined {
  if (!o.links && o.detail >= DETAIL_V) return undefined;
  let h = 'LG-ID    LG-Role  LG-Type  ';
  if (o.links) {
    h += 'Net-Dev         Link-State      #Conns  ';
    if (o.detail >= DETAIL_V) {
      h += 'Link-UID  Peer-UID  IB-Dev    IB-P  ';
      if (o.detail >= DETAIL_VV) h += 'Local-GID                                 Peer-GID  ';
    }
  } else h += 'VLAN  #Conns  PNET-ID ';
  return h;
}

/** show_lgr_smcr_info_lgr_details: one link group's block (the SMC-Rv2 peer lines are not known to softrdma). */
function detailsBlock(g: SmcrLinkGroupStatus): string[] {
  return [
    `LG-ID    : ${hex8(g.id)}`,
    `LG-Role  : ${roleText(g)}`,
    `LG-Type  : ${g.type}`,
    `VLAN     : ${g.vlan.toString(16)}`,
    `PNET-ID  : ${g.pnetId.trim()}`,
    `Version  : ${g.version}`,
    `#Conns   : ${g.conns}`,
    `Sndbuf   : ${g.sndbufAlloc} B`,
    `RMB      : ${g.rmbAlloc} B`,
  ];
}

/** A link group's row (show) or one of its links' (link-show), as show_lgr_smcr_info prints it. */
function row(o: LinkgroupOptions, g: SmcrLinkGroupStatus, l: SmcrLinkStatus | undefined): string {
  let r = `${hex8(g.id)} ${roleText(g).padEnd(8)} ${g.type.padEnd(8)} `;
  if (l) {
    r += `${field(l.netDev ?? '', MAX_NETDEV, MAX_NETDEV)} ${l.state.padEnd(15)} ${String(l.conns).padStart(6)}  `;
    if (o.detail >= DETAIL_V) {
      r += `${hex8(l.uid)}  ${hex8(l.peerUid)}  ${field(l.ibDev, 8, MAX_IBNAME)}  ${String(l.ibPort).padStart(4)}  `;
      if (o.detail >= DETAIL_VV) r += `${l.gid.padEnd(40)}  ${l.peerGid}  `;
    }
  } else {
    r += `${altHex4(g.vlan)}  ${String(g.conns).padStart(6)}  ${g.pnetId.trim().padEnd(16)} `;
  }
  return r;
}

/** The text `smcr linkgroup` would print for these link groups (its trailing blanks too; nothing when there are none). */
export function formatLinkgroups(groups: SmcrLinkGroupStatus[], o: LinkgroupOptions): string {
  if (groups.length === 0) return '';
  const lines: string[] = [];
  const head = linkgroupHeader(o);
  if (head !== undefined) lines.push(head);
  let blocks = 0;
  for (const g of groups) {
    if (o.links) {
      for (const l of g.links) if (!filtered(o, g, l)) lines.push(row(o, g, l));
      continue;
    }
    if (filtered(o, g, undefined)) continue;
    if (o.detail >= DETAIL_V) {
      if (blocks++ > 0) lines.push('');
      lines.push(...detailsBlock(g));
    } else lines.push(row(o, g, undefined));
  }
  return lines.join('\n');
}

/** --json: the link groups the text would show; for link-show, those with a link that passes, with those links. */
export function jsonLinkgroups<G extends SmcrLinkGroupStatus>(groups: G[], o: LinkgroupOptions): G[] {
  if (!o.links) return groups.filter((g) => !filtered(o, g, undefined));
  return groups.flatMap((g) => {
    const links = g.links.filter((l) => !filtered(o, g, l));
    return links.length ? [{ ...g, links }] : [];
  });
}

export async function linkgroup(args: string[]): Promise<number> {
  const o = parseLinkgroupArgs(args);
  // linkgroup.c's usage(): on stderr, exit(-1).
  if (o.help) { console.error(LINKGROUP_USAGE); return 255; }
  const { linkGroups, warnings } = await collect(false);
  for (const w of warnings) console.error(`linkgroup: ${w}`);
  if (o.json) {
    console.log(JSON.stringify(jsonLinkgroups(linkGroups, o), null, 2));
    return 0;
  }
  const text = formatLinkgroups(linkGroups, o);
  if (text) console.log(text);
  return 0;
}
