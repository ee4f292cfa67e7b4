// `softrdma devinfo`: ibv_devinfo for softrdma devices.

import { getDeviceList, gidToString, PortState, mtuBytes, type Device } from '../index.js';

const STATE = ['NOP', 'DOWN', 'INIT', 'ARMED', 'ACTIVE', 'ACTIVE_DEFER'];
const guid = (g: bigint) => g.toString(16).padStart(16, '0').replace(/(.{4})(?=.)/g, '$1:');

export function devinfo(devs: readonly Device[] = getDeviceList(), verbose = false): string {
  const out: string[] = [];
  for (const dev of devs) {
    const ctx = dev.open();
    try {
      const d = ctx.queryDevice();
      out.push(`hca_id:\t${dev.name}`, `\ttransport:\t\t\tInfiniBand (0)`, `\tfw_ver:\t\t\t\t${d.fwVer}`,
        `\tnode_guid:\t\t\t${guid(d.nodeGuid)}`, `\tsys_image_guid:\t\t\t${guid(d.sysImageGuid)}`,
        `\tvendor_id:\t\t\t0x${d.vendorId.toString(16)}`, `\tvendor_part_id:\t\t\t${d.vendorPartId}`, `\thw_ver:\t\t\t\t0x${d.hwVer.toString(16)}`,
        `\tphys_port_cnt:\t\t\t${d.physPortCnt}`);
      if (verbose) {
        for (const k of ['maxMrSize', 'maxQp', 'maxQpWr', 'maxSge', 'maxCq', 'maxCqe', 'maxMr', 'maxPd', 'maxQpRdAtom', 'maxQpInitRdAtom', 'maxMw', 'maxAh', 'maxSrq', 'maxSrqWr', 'maxSrqSge', 'maxInlineData'] as const) {
          out.push(`\t${k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())}:\t\t\t${d[k]}`);
        }
        out.push(`\tatomic_cap:\t\t\tATOMIC_${d.atomicCap} (${d.atomicCap === 'HCA' ? 1 : 0})`);
      }
      const p = ctx.queryPort(1);
      out.push(`\t\tport:\t1`, `\t\t\tstate:\t\t\tPORT_${STATE[p.state]} (${p.state})`,
        `\t\t\tmax_mtu:\t\t${mtuBytes(p.maxMtu)} (${p.maxMtu})`, `\t\t\tactive_mtu:\t\t${mtuBytes(p.activeMtu)} (${p.activeMtu})`,
        `\t\t\tsm_lid:\t\t\t${p.smLid}`, `\t\t\tport_lid:\t\t${p.lid}`, `\t\t\tport_lmc:\t\t0x00`, `\t\t\tlink_layer:\t\t${p.linkLayer}`);
      if (verbose) out.push(`\t\t\tmax_msg_sz:\t\t0x${p.maxMsgSz.toString(16)}`, `\t\t\tgid_tbl_len:\t\t${p.gidTblLen}`, `\t\t\tpkey_tbl_len:\t\t${p.pkeyTblLen}`);
      for (const g of ctx.queryGidTable(1)) out.push(`\t\t\tGID[${String(g.index).padStart(3)}]:\t\t${gidToString(g.gid)}, ${g.type} (${g.address})`);
      if (p.state !== PortState.ACTIVE) out.push('\t\t\t(port not active)');
    } finally {
      ctx.close();
    }
    out.push('');
  }
  return out.join('\n');
}
