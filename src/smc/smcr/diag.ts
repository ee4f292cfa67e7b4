// What SMC-R's link groups and links look like from outside (Linux: smc_diag.c's
// smc_diag_lgrinfo for smcss -R, and the SMC_NETLINK_GET_LGR_SMCR / GET_LINK_SMCR dumps of
// smc_core.c, smc_nl_fill_lgr and smc_nl_fill_link, for `smcr linkgroup`). Read-only: it
// reads the public fields of SmcrLinkGroup and SmcrLink and changes nothing. getSmcInfo(),
// the status socket smcss and linkgroup ask (status.ts) and the tools use it.
//
// IDs. Linux numbers link groups 0x100, 0x200, ... per host and makes a link's UID the group's
// ID plus its link id. softrdma lists link groups of many processes side by side, so a per-process
// counter would repeat; a link group's ID here is its link UID (4 random bytes, sent to the
// peer in CONFIRM_LINK) with the low byte cleared. As in Linux, the ID with the low byte masked
// off finds the group from either its ID or its link's UID.

import { interfaceAddresses } from '../interfaces.js';
import { mtuBytes } from '../../abi/enums.js';
import type { SmcrConnection } from './connection.js';
import type { SmcrLinkGroup } from './lgr.js';
import type { SmcrLink } from './link.js';

/** Linux's link states (enum smc_link_state), as smc-tools names them. */
export type SmcrLinkState = 'LINK_UNUSED' | 'LINK_INACTIVE' | 'LINK_ACTIVATING' | 'LINK_ACTIVE';
/** Linux's link group types (enum smc_lgr_type): SINGLE with one active link, SYM with two (on two devices each side); softrdma makes no asymmetric ones. */
export type SmcrLgrType = 'NONE' | 'SINGLE' | 'SYM' | 'ASYMP' | 'ASYML';

/** One link of a link group (smc_nl_fill_link; smc_diag_linkinfo for smcss -R). */
export interface SmcrLinkStatus {
  /** smc_link.link_id: 1 for the first link of a group, the server's next numbers for links ADD_LINK added. */
  id: number;
  /** smc_link.link_uid as a number (its 4 bytes big-endian). */
  uid: number;
  /** The peer's link UID (smc_link.peer_link_uid), from its CONFIRM_LINK; 0 before. */
  peerUid: number;
  state: SmcrLinkState;
  /** Connections on the link. */
  conns: number;
  /** The RoCE device's name and port (softrdma's rxe devices have one port). */
  ibDev: string;
  ibPort: number;
  /** GIDs as Linux prints them (smc_gid_be16_convert: eight %04x groups); peerGid '' before the peer is known. */
  gid: string;
  peerGid: string;
  /** Our QP's number and the peer's (0 before the peer is known). */
  qpn: number;
  peerQpn: number;
  /** The link's path MTU in bytes (the smaller of the two ports' MTUs; ours until the peer is known). */
  mtu: number;
  /** The network interface holding the device's address, where one does (status only). */
  netDev?: string;
}

/** One link group (smc_nl_fill_lgr), with its links. */
export interface SmcrLinkGroupStatus {
  /** The group's ID (see above): what `linkgroup` shows as LG-ID. */
  id: number;
  role: 'client' | 'server';
  type: SmcrLgrType;
  /** softrdma has no VLANs and no PNET IDs: 0 and '', which is what Linux reports for none. */
  vlan: number;
  pnetId: string;
  /** The SMC version of the group's links (softrdma's SMC-R is SMC-Rv2). */
  version: number;
  conns: number;
  /** Bytes of the send buffers and RMBs of the connections on the group (buffers pooled for reuse not counted). */
  sndbufAlloc: number;
  rmbAlloc: number;
  /** The peer's system ID (8 bytes, hex; '' until the first link is confirmed) and RoCE GID ('' until the peer is known). */
  peerSystemId: string;
  peerGid: string;
  links: SmcrLinkStatus[];
}

/** A connection's link group and link, for getSmcInfo() (the group without its list of links). */
export interface SmcrInfo {
  linkGroup: Omit<SmcrLinkGroupStatus, 'links'>;
  link: SmcrLinkStatus;
}

/** smc_diag.c's smc_gid_be16_convert: a 16-byte GID as eight big-endian %04x groups joined by ':'. */
export function gidText(gid: Uint8Array | undefined): string {
  if (!gid || gid.length !== 16) return '';
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((gid[i]! << 8) | gid[i + 1]!).toString(16).padStart(4, '0'));
  return g.join(':');
}

/** A link group's ID: its link UID with the low byte cleared (never 0, which smc-tools takes for "no filter"). */
export function linkGroupId(g: SmcrLinkGroup): number {
  return ((g.linkUid.readUInt32BE(0) & 0xffffff00) >>> 0) || 0x100;
}

function linkState(g: SmcrLinkGroup, l: SmcrLink): SmcrLinkState {
  if (g.dead || l.isDown) return 'LINK_INACTIVE';
  return l.active ? 'LINK_ACTIVE' : 'LINK_ACTIVATING';
}

/** The network interface that holds an address (the device's UDP socket is bound to it), or ''. */
function interfaceOf(address: string): string {
  return interfaceAddresses().find((a) => a.address === address)?.name ?? '';
}

export function smcrLinkStatus(g: SmcrLinkGroup, withNetDev = false, l: SmcrLink = g.link): SmcrLinkStatus {
  const r = l.remote;
  let conns = 0;
  for (const c of g.conns.values()) if (c.link === l) conns++;
  const s: SmcrLinkStatus = {
    id: l.id, uid: l.uid.readUInt32BE(0), peerUid: l.peerUid.readUInt32BE(0), state: linkState(g, l), conns,
    ibDev: l.dev.device.name, ibPort: 1, gid: gidText(l.local.gid), peerGid: gidText(r?.gid),
    qpn: l.local.qpn, peerQpn: r?.qpn ?? 0, mtu: mtuBytes(r ? Math.min(l.local.mtu, r.mtu) : l.local.mtu),
  };
  if (withNetDev) s.netDev = interfaceOf(l.dev.address);
  return s;
}

function groupFields(g: SmcrLinkGroup): Omit<SmcrLinkGroupStatus, 'links'> {
  let sndbufAlloc = 0, rmbAlloc = 0;
  for (const c of g.conns.values()) { sndbufAlloc += c.sndbuf.size; rmbAlloc += c.rmb.size; }
  // The key register() gave the group: "<local address>|<peer system ID>|<peer GID>", all hex but the address.
  const key = g.peerKey.split('|');
  const peerGid = key[2] ? gidText(Buffer.from(key[2], 'hex')) : gidText(g.link.remote?.gid);
  return {
    id: linkGroupId(g), role: g.role, type: !g.confirmed || g.dead ? 'NONE' : g.activeLinks().length >= 2 ? 'SYM' : 'SINGLE', vlan: 0, pnetId: '', version: 2,
    conns: g.conns.size, sndbufAlloc, rmbAlloc, peerSystemId: key[1] ?? '', peerGid,
  };
}

/** A link group and its links as `linkgroup` lists them. */
export function smcrLinkGroupStatus(g: SmcrLinkGroup): SmcrLinkGroupStatus {
  const links = g.links.length > 0 ? g.links : [g.link];
  return { ...groupFields(g), links: links.map((l) => smcrLinkStatus(g, true, l)) };
}

/** getSmcInfo()'s smcr field for a connection: its group and the link it is on. */
export function smcrInfo(conn: SmcrConnection): SmcrInfo {
  return { linkGroup: groupFields(conn.lgr), link: smcrLinkStatus(conn.lgr, false, conn.link) };
}
