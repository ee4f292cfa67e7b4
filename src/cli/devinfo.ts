// `softrdma devinfo`: rdma-core's ibv_devinfo for softrdma devices: its options (-d, -i, -l,
// -v) and its layout, line for line (libibverbs/examples/devinfo.c), for the fields an rxe
// device has. A softrdma device exists only while a process holds it, so this command creates
// the devices it shows: one per --bind address, named rxe0, rxe1, ... as `rdma link add` would.

import { isIPv4 } from 'node:net';
import { parseArgs } from 'node:util';
import { addressFromGid, createRxeDevice, getDeviceList, mtuBytes, type Device } from '../index.js';
import { getoptArgs, getoptScan, intOption, resolveBindOption } from '../tools/usage.js';

export const DEVINFO_USAGE = `usage: softrdma devinfo [options]      print the ca attributes (like ibv_devinfo)

Options:
  -d, --ib-dev=<dev>     use IB device <dev> (default all devices)
  -i, --ib-port=<port>   use port <port> of IB device (default all ports)
  -l, --list             print only the IB devices names
  -v, --verbose          print all the attributes of the IB device(s)
      --bind=<addr>      create an rxe device on this local address (default 127.0.0.1;
                         repeat for more devices: rxe0, rxe1, ...)
      --udp-port=<port>  its RoCEv2 UDP port (default 0: any free port, so that devinfo
                         works next to a running device on 4791)`;

const PORT_STATE: Record<number, string> = { 1: 'PORT_DOWN', 2: 'PORT_INIT', 3: 'PORT_ARMED', 4: 'PORT_ACTIVE' };
const PHYS_STATE: Record<number, string> = { 1: 'SLEEP', 2: 'POLLING', 3: 'DISABLED', 4: 'PORT_CONFIGURATION TRAINNING', 5: 'LINK_UP', 6: 'LINK_ERROR_RECOVERY', 7: 'PHY TEST' };
const WIDTH: Record<number, string> = { 1: '1', 2: '4', 4: '8', 8: '12', 16: '2' };
const SPEED: Record<number, string> = { 1: '2.5 Gbps', 2: '5.0 Gbps', 4: '10.0 Gbps', 8: '10.0 Gbps', 16: '14.0 Gbps', 32: '25.0 Gbps', 64: '50.0 Gbps', 128: '100.0 Gbps', 256: '200.0 Gbps' };

/** print_device_cap_flags: the IBV_DEVICE_* bits devinfo.c names, in its order. */
const DEVICE_CAP_FLAGS: ReadonlyArray<readonly [number, string]> = [
  [1 << 0, 'RESIZE_MAX_WR'], [1 << 1, 'BAD_PKEY_CNTR'], [1 << 2, 'BAD_QKEY_CNTR'], [1 << 3, 'RAW_MULTI'],
  [1 << 4, 'AUTO_PATH_MIG'], [1 << 5, 'CHANGE_PHY_PORT'], [1 << 6, 'UD_AV_PORT_ENFORCE'], [1 << 7, 'CURR_QP_STATE_MOD'],
  [1 << 8, 'SHUTDOWN_PORT'], [1 << 9, 'INIT_TYPE'], [1 << 10, 'PORT_ACTIVE_EVENT'], [1 << 11, 'SYS_IMAGE_GUID'],
  [1 << 12, 'RC_RNR_NAK_GEN'], [1 << 13, 'SRQ_RESIZE'], [1 << 14, 'N_NOTIFY_CQ'], [1 << 17, 'MEM_WINDOW'],
  [1 << 18, 'UD_IP_CSUM'], [1 << 20, 'XRC'], [1 << 21, 'MEM_MGT_EXTENSIONS'], [1 << 23, 'MEM_WINDOW_TYPE_2A'],
  [1 << 24, 'MEM_WINDOW_TYPE_2B'], [1 << 25, 'RC_IP_CSUM'], [1 << 26, 'RAW_IP_CSUM'], [1 << 29, 'MANAGED_FLOW_STEERING'],
];

/** print_device_cap_flags: one line per flag set, five tabs in; the rest as 'Unknown flags: 0x%X'. */
export function deviceCapFlagLines(flags: number): string[] {
  let unknown = flags >>> 0;
  const out: string[] = [];
  for (const [bit, name] of DEVICE_CAP_FLAGS) {
    if (flags & bit) out.push(`\t\t\t\t\t${name}`);
    unknown = (unknown & ~bit) >>> 0;
  }
  if (unknown) out.push(`\t\t\t\t\tUnknown flags: 0x${unknown.toString(16).toUpperCase()}`);
  return out;
}

/**
 * What devinfo.c (rdma-core 44 and later) prints after local_ca_ack_delay for a device with no
 * ODP, no completion timestamps, no TSO, RSS, packet pacing or tag matching, no extended
 * capability flags (a softrdma device has none of them, nor has Linux rxe), then
 * num_comp_vectors: 1, the completion vectors a softrdma CQ may be given (Linux rxe has one per CPU).
 */
const EXTENDED_ATTRIBUTES: readonly string[] = [
  '\tgeneral_odp_caps:',
  '\trc_odp_caps:', '\t\t\t\t\tNO SUPPORT',
  '\tuc_odp_caps:', '\t\t\t\t\tNO SUPPORT',
  '\tud_odp_caps:', '\t\t\t\t\tNO SUPPORT',
  '\txrc_odp_caps:', '\t\t\t\t\tNO SUPPORT',
  '\tcompletion_timestamp_mask not supported',
  '\tcore clock not supported',
  '\tdevice_cap_flags_ex:\t\t0x%EX%',
  '\ttso_caps:', '\t\tmax_tso:\t\t\t0',
  '\trss_caps:', '\t\tmax_rwq_indirection_tables:\t\t\t0', '\t\tmax_rwq_indirection_table_size:\t\t\t0',
  '\t\trx_hash_function:\t\t\t\t0x0', '\t\trx_hash_fields_mask:\t\t\t\t0x0',
  '\tmax_wq_type_rq:\t\t\t0',
  '\tpacket_pacing_caps:', '\t\tqp_rate_limit_min:\t0kbps', '\t\tqp_rate_limit_max:\t0kbps',
  '\ttag matching not supported',
  '\tnum_comp_vectors:\t\t1',
];

/** guid_str(): four groups of four hex digits. */
export function guidString(g: bigint): string {
  return g.toString(16).padStart(16, '0').replace(/(.{4})(?=.)/g, '$1:');
}

/** A GID as inet_ntop(AF_INET6) prints it: '::ffff:10.0.0.1', 'fe80::1'. */
export function gidText(gid: Uint8Array): string {
  const a = addressFromGid(gid);
  return isIPv4(a) ? `::ffff:${a}` : a;
}

export interface DevinfoOptions { verbose?: boolean; port?: number }

export function devinfo(devs: readonly Device[] = getDeviceList(), opts: DevinfoOptions = {}): string {
  const out: string[] = [];
  const verbose = opts.verbose ?? false;
  for (const dev of devs) {
    const ctx = dev.open();
    try {
      const d = ctx.queryDevice();
      if (opts.port && opts.port > d.physPortCnt) throw new Error('Invalid port requested for device');
      out.push(`hca_id:\t${dev.name}`, `\ttransport:\t\t\tInfiniBand (0)`);
      if (d.fwVer) out.push(`\tfw_ver:\t\t\t\t${d.fwVer}`);
      out.push(`\tnode_guid:\t\t\t${guidString(d.nodeGuid)}`, `\tsys_image_guid:\t\t\t${guidString(d.sysImageGuid)}`,
        `\tvendor_id:\t\t\t0x${d.vendorId.toString(16).padStart(4, '0')}`, `\tvendor_part_id:\t\t\t${d.vendorPartId}`,
        `\thw_ver:\t\t\t\t0x${d.hwVer.toString(16).toUpperCase()}`, `\tphys_port_cnt:\t\t\t${d.physPortCnt}`);
      if (verbose) {
        out.push(
          `\tmax_mr_size:\t\t\t0x${d.maxMrSize.toString(16)}`, `\tpage_size_cap:\t\t\t0x${d.pageSizeCap.toString(16)}`,
          `\tmax_qp:\t\t\t\t${d.maxQp}`, `\tmax_qp_wr:\t\t\t${d.maxQpWr}`,
          `\tdevice_cap_flags:\t\t0x${(d.deviceCapFlags >>> 0).toString(16).padStart(8, '0')}`,
          ...deviceCapFlagLines(d.deviceCapFlags),
          `\tmax_sge:\t\t\t${d.maxSge}`, `\tmax_sge_rd:\t\t\t${d.maxSge}`, `\tmax_cq:\t\t\t\t${d.maxCq}`, `\tmax_cqe:\t\t\t${d.maxCqe}`,
          `\tmax_mr:\t\t\t\t${d.maxMr}`, `\tmax_pd:\t\t\t\t${d.maxPd}`, `\tmax_qp_rd_atom:\t\t\t${d.maxQpRdAtom}`,
          `\tmax_ee_rd_atom:\t\t\t0`, `\tmax_res_rd_atom:\t\t${d.maxQpRdAtom * d.maxQp}`, `\tmax_qp_init_rd_atom:\t\t${d.maxQpInitRdAtom}`,
          `\tmax_ee_init_rd_atom:\t\t0`, `\tatomic_cap:\t\t\tATOMIC_${d.atomicCap} (${d.atomicCap === 'HCA' ? 1 : d.atomicCap === 'GLOB' ? 2 : 0})`,
          `\tmax_ee:\t\t\t\t0`, `\tmax_rdd:\t\t\t0`, `\tmax_mw:\t\t\t\t${d.maxMw}`, `\tmax_raw_ipv6_qp:\t\t0`, `\tmax_raw_ethy_qp:\t\t0`,
          `\tmax_mcast_grp:\t\t\t0`, `\tmax_mcast_qp_attach:\t\t0`, `\tmax_total_mcast_qp_attach:\t0`,
          `\tmax_ah:\t\t\t\t${d.maxAh}`, `\tmax_fmr:\t\t\t0`, `\tmax_srq:\t\t\t${d.maxSrq}`);
        if (d.maxSrq) out.push(`\tmax_srq_wr:\t\t\t${d.maxSrqWr}`, `\tmax_srq_sge:\t\t\t${d.maxSrqSge}`);
        out.push(`\tmax_pkeys:\t\t\t1`, `\tlocal_ca_ack_delay:\t\t15`);
        // device_cap_flags_ex (PRIX64): the 64-bit flags, whose low half is device_cap_flags;
        // none of the high half (print_device_cap_flags_ex) is set.
        const ex = (d.deviceCapFlags >>> 0).toString(16).toUpperCase();
        out.push(...EXTENDED_ATTRIBUTES.map((l) => l.replace('%EX%', ex)));
      }
      for (let port = 1; port <= d.physPortCnt; port++) {
        if (opts.port && port !== opts.port) continue;
        const p = ctx.queryPort(port);
        out.push(`\t\tport:\t${port}`, `\t\t\tstate:\t\t\t${PORT_STATE[p.state] ?? 'invalid state'} (${p.state})`,
          `\t\t\tmax_mtu:\t\t${mtuBytes(p.maxMtu)} (${p.maxMtu})`, `\t\t\tactive_mtu:\t\t${mtuBytes(p.activeMtu)} (${p.activeMtu})`,
          `\t\t\tsm_lid:\t\t\t${p.smLid}`, `\t\t\tport_lid:\t\t${p.lid}`, `\t\t\tport_lmc:\t\t0x00`, `\t\t\tlink_layer:\t\t${p.linkLayer}`);
        if (verbose) {
          out.push(`\t\t\tmax_msg_sz:\t\t0x${p.maxMsgSz.toString(16)}`, `\t\t\tport_cap_flags:\t\t0x${p.portCapFlags.toString(16).padStart(8, '0')}`,
            `\t\t\tport_cap_flags2:\t0x0000`, `\t\t\tmax_vl_num:\t\t1 (1)`, `\t\t\tbad_pkey_cntr:\t\t0x0`, `\t\t\tqkey_viol_cntr:\t\t0x0`,
            `\t\t\tsm_sl:\t\t\t0`, `\t\t\tpkey_tbl_len:\t\t${p.pkeyTblLen}`, `\t\t\tgid_tbl_len:\t\t${p.gidTblLen}`, `\t\t\tsubnet_timeout:\t\t0`,
            `\t\t\tinit_type_reply:\t0`, `\t\t\tactive_width:\t\t${WIDTH[p.activeWidth] ?? 'invalid width'}X (${p.activeWidth})`,
            `\t\t\tactive_speed:\t\t${SPEED[p.activeSpeed] ?? 'invalid speed'} (${p.activeSpeed})`,
            `\t\t\tphys_state:\t\t${PHYS_STATE[p.physState] ?? 'invalid physical state'} (${p.physState})`);
          const typed = p.linkLayer === 'Ethernet';
          for (const g of ctx.queryGidTable(port)) {
            if (g.gid.every((b) => b === 0)) continue;
            out.push(`\t\t\tGID[${String(g.index).padStart(3)}]:\t\t${gidText(g.gid)}${typed ? `, ${g.type}` : ''}`);
          }
        }
        out.push('');
      }
    } finally {
      ctx.close();
    }
  }
  return out.join('\n');
}

/**
 * `softrdma devinfo [options]`; returns the exit code (ibv_devinfo's: 4 for a port the device
 * lacks, 255 for a device it does not have). Usage errors are thrown: parseArgs' (getopt's in
 * devinfo.c: 255) and UsageErrors for values (-i below 1: 1 in devinfo.c; --bind and
 * --udp-port alike). Arguments that are not options are ignored, as devinfo.c ignores them.
 */
export const DEVINFO_OPTIONS = {
  'ib-dev': { type: 'string', short: 'd' }, 'ib-port': { type: 'string', short: 'i' }, list: { type: 'boolean', short: 'l' },
  verbose: { type: 'boolean', short: 'v' }, bind: { type: 'string', multiple: true }, 'udp-port': { type: 'string' },
  port: { type: 'string' }, // the old spelling of --udp-port
} as const;

/**
 * devinfo.c lists the devices as soon as getopt returns 'l' (and returns 0): the options before
 * -l are read (an unknown one, or -i 0, is still a usage error), those after it are not
 * (`-l -x`, `-l -i 0` list). softrdma's own --bind, --udp-port (--port) make the devices that
 * are listed, so they are taken wherever they are.
 */
function untilList(args: string[]): string[] {
  const scan = getoptScan(args, DEVINFO_OPTIONS);
  const l = scan.find((o) => o.name === 'list');
  if (!l) return args;
  const head = args.slice(0, l.first);
  if (l.char !== undefined && l.char > 1) head.push(args[l.first]!.slice(0, l.char));
  const own = scan.filter((o) => o.first > l.first && (o.name === 'bind' || o.name === 'udp-port' || o.name === 'port'));
  return [...head, '-l', ...own.flatMap((o) => args.slice(o.first, o.last + 1))];
}

export async function devinfoCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args: getoptArgs(untilList(args), DEVINFO_OPTIONS), options: DEVINFO_OPTIONS, allowPositionals: true });
  // devinfo.c reads -i with strtol(optarg, NULL, 0) into an int and refuses a port below 1;
  // print_hca_cap takes it as a uint8_t, so 256 would wrap to 0 (every port): refused here.
  const port = intOption('-i/--ib-port', values['ib-port'], 0, 1, 255, 'c');
  const udpPort = values.port !== undefined && values['udp-port'] === undefined
    ? intOption('--port', values.port, 0, 0, 65535, 'c')
    : intOption('--udp-port', values['udp-port'], 0, 0, 65535, 'c');
  // Checked before any device is made (an empty --bind once left a socket open for ever).
  const binds: string[] = [];
  for (const b of values.bind?.length ? values.bind : ['127.0.0.1']) binds.push(await resolveBindOption('--bind', b));
  const devs: Device[] = [];
  try {
    for (const [i, address] of binds.entries()) devs.push(await createRxeDevice({ address, port: udpPort, name: `rxe${i}` }));
    if (values.list) {
      console.log(`${devs.length} HCA${devs.length !== 1 ? 's' : ''} found:\n${devs.map((d) => `\t${d.name}\n`).join('')}`);
      return 0;
    }
    let shown = devs;
    if (values['ib-dev'] !== undefined) {
      shown = devs.filter((d) => d.name === values['ib-dev']);
      if (!shown.length) {
        console.error(`IB device '${values['ib-dev']}' wasn't found`);
        return 255;
      }
    }
    try {
      process.stdout.write(devinfo(shown, { verbose: values.verbose, port }) + '\n');
    } catch (err) {
      if ((err as Error).message !== 'Invalid port requested for device') throw err;
      console.error((err as Error).message);
      return 4;
    }
    return 0;
  } finally {
    for (const d of devs) await d.close();
  }
}
