// SMC decline and fallback reason codes in words: the descriptions are smc-tools' (smcss(8),
// section "Mode", which smc_chk greps for its report); the names are Linux's SMC_CLC_DECL_*.

import { declineName } from '../smc/clc.js';

/** smcss(8)'s description of each Linux reason code. */
export const DECLINE_TEXT: Readonly<Record<number, string>> = {
  0x01010000: 'Out of memory',
  0x02010000: 'Timeout while waiting for confirm link message over RDMA device',
  0x02020000: 'Timeout while waiting for RDMA device to be added',
  0x03000000: 'Configuration error',
  0x03010000: 'Peer does not support SMC',
  0x03020000: 'Connection uses IPsec',
  0x03030000: 'No SMC devices found (R and D)',
  0x03030001: 'No ISM device for SMC-D found',
  0x03030002: 'No RDMA device for SMC-R found',
  0x03030003: 'Hardware has no ISMv2 support',
  0x03030004: 'Peer sent no SMCv2 extension',
  0x03030005: 'Peer sent no SMC-Dv2 extension',
  0x03030006: 'Peer sent no ISMv2 SEID',
  0x03030007: 'No SMC-Dv2 device found, but required',
  0x03030008: 'Peer sent no UEID',
  0x03040000: 'SMC modes mismatch (R or D)',
  0x03050000: 'Peer has eyecatcher in RMBE',
  0x03060000: 'Fastopen sockopt not supported',
  0x03070000: 'IP prefix / subnet mismatch',
  0x03080000: 'Error retrieving VLAN ID of IP device',
  0x03090000: 'Error while registering VLAN ID on ISM device',
  0x030a0000: 'No active SMC-R link in link group',
  0x030b0000: 'SMC-R link from server not found',
  0x030c0000: 'SMC version mismatch',
  0x030d0000: 'SMC-D connection limit reached',
  0x030e0000: 'SMC-Rv2 connection found no route to peer',
  0x030f0000: 'SMC-Rv2 connection mismatch direct/indirect with peer',
  0x04000000: 'Synchronization error',
  0x05000000: 'Peer declined during handshake',
  0x09990000: 'Internal error',
  0x09990001: 'rtoken handling failed',
  0x09990002: 'RDMA link failed',
  0x09990003: 'RMB registration failed',
};

/** '0x03010000'. */
export function declineHex(code: number): string {
  return `0x${(code >>> 0).toString(16).padStart(8, '0')}`;
}

/** 'PEERNOSMC', or undefined for a code Linux does not name. */
export function declineShortName(code: number): string | undefined {
  const m = /^SMC_CLC_DECL_(\S+)/.exec(declineName(code));
  return m?.[1];
}

/** The code in a status string such as 'SMC_CLC_DECL_PEERNOSMC (0x03010000)' or '0x09990000'. */
export function codeOf(text: string | undefined): number | undefined {
  const m = text ? /0x([0-9a-f]{1,8})/i.exec(text) : null;
  return m ? parseInt(m[1]!, 16) : undefined;
}

/** '0x03010000 Peer does not support SMC (SMC_CLC_DECL_PEERNOSMC)'. */
export function describeDecline(code: number): string {
  const name = declineShortName(code);
  const text = DECLINE_TEXT[code >>> 0] ?? 'Unknown error code';
  return `${declineHex(code)} ${text}${name ? ` (SMC_CLC_DECL_${name})` : ''}`;
}
