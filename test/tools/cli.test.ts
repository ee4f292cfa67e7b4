// The softrdma command as its users know the originals: every subcommand answers --help and
// --version without running anything, an unknown option gets one line naming it and the
// usage, and the top-level help is aligned. Then each tool against its original: ibv_devinfo
// (rdma-core's libibverbs/examples/devinfo.c), smcss (smc-tools' smcss.c), smc_chk and smc_run
// (smc-tools' scripts and man pages).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { addrText, format, tcpModeText } from '../../src/tools/smcss.js';
import { isNodeProgram, parseBufferSize, parseSmcRunArgs } from '../../src/tools/smc-run.js';
import { nodeGuidFor } from '../../src/providers/rxe/device.js';
import { guidString } from '../../src/cli/devinfo.js';
import { advice, report } from '../../src/tools/smc-chk.js';
import { cgroup2Mount } from '../../src/sys/smc-tcp-option.js';
import { tcpOptionUnavailable } from '../helpers/tcp-option.js';

const runtime = testRuntimeDir('cli');
const env = { SOFTRDMA_RUNTIME_DIR: runtime };
const COMMANDS = ['demo', 'devinfo', 'perftest', 'pingpong', 'rping', 'cmatose', 'smcss', 'linkgroup', 'smc-chk', 'smc-run', 'smc-tcp-option', 'smc-demo'];
const version = (JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
/**
 * The exit status of a usage error, the original's: ibv_devinfo 255 (getopt's default: return
 * -1), the *_pingpong examples, cmatose, smcss and smc_run 1, perftest 1 (FAILURE), rping 22
 * (EINVAL), smc_chk 2 (getopt failed), smcr linkgroup 255 (exit(-1)); softrdma's own commands 2.
 */
const USAGE_EXIT: Record<string, number> = {
  demo: 2, devinfo: 255, perftest: 1, pingpong: 1, rping: 22, cmatose: 1, smcss: 1, linkgroup: 255, 'smc-chk': 2, 'smc-run': 1, 'smc-tcp-option': 2, 'smc-demo': 2,
};
/** What --version prints: smcss's format (smcss.c: "smcss utility, smc-tools-%s"), else softrdma's. */
// smcss and perftest print what the originals print (perftest 4.5-0.17: the version of its exchange).
const versionLine = (cmd: string) => (cmd === 'smcss' ? `smcss utility, softrdma-${version}` : cmd === 'perftest' ? 'Version: 6.06' : `softrdma ${cmd} ${version}`);

async function out(args: string[], ms = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = run(args, { env });
  const code = await p.exit(ms);
  return { code, stdout: p.stdout, stderr: p.stderr };
}

describe('every subcommand', () => {
  it('the top-level help lists every command, descriptions in one column', async () => {
    const r = await out(['--help']);
    assert.equal(r.code, 0);
    const lines = r.stdout.split('\n').filter((l) => /^ {2}[a-z]/.test(l));
    assert.deepEqual(lines.map((l) => l.trim().split(' ')[0]), COMMANDS);
    const columns = new Set(lines.map((l) => /^ {2}\S.*?\s{2,}(?=\S)/.exec(l)![0].length));
    assert.equal(columns.size, 1, r.stdout);
    assert.ok(lines.every((l) => l.length <= 100), 'help lines fit 100 columns');
  });

  for (const cmd of COMMANDS) {
    it(`${cmd} --help prints its usage and runs nothing; --version prints the version`, async () => {
      // Options that would make the command do something come first: --help still wins.
      const extra = cmd === 'smc-run' ? ['-d'] : cmd === 'perftest' ? ['write_bw', '127.0.0.9'] : cmd === 'smc-chk' ? ['127.0.0.1', '1'] : [];
      const t0 = Date.now();
      // perftest exits 1 after both, as its mains return FAILURE after HELP_EXIT and VERSION_EXIT.
      const done = cmd === 'perftest' ? 1 : 0;
      const h = await out([cmd, ...extra, '--help']);
      assert.equal(h.code, done, h.stderr);
      assert.match(h.stdout, new RegExp(`^usage: softrdma ${cmd}`));
      assert.equal(h.stderr, '');
      const v = await out([cmd, '--version']);
      assert.equal(v.code, done, v.stderr);
      assert.equal(v.stdout.trim(), versionLine(cmd));
      assert.ok(Date.now() - t0 < 10_000);
    });

    it(`${cmd} --bogus: one line naming the option, then the synopsis; exit ${USAGE_EXIT[cmd]}, as the original`, async () => {
      const args = cmd === 'perftest' ? [cmd, 'write_bw', '--bogus'] : cmd === 'pingpong' ? [cmd, 'rc', '--bogus'] : [cmd, '--bogus'];
      const r = await out(args);
      assert.equal(r.code, USAGE_EXIT[cmd]);
      assert.equal(r.stdout, '');
      if (cmd === 'linkgroup') {
        // smc.c's own message, alone (its '--' prefix loses one dash, as there).
        assert.equal(r.stderr, 'Error: Option "-bogus" is unknown, try "softrdma linkgroup help".\n');
        return;
      }
      const [first, second, third] = r.stderr.trimEnd().split('\n');
      assert.equal(first, `softrdma ${cmd}: unknown option '--bogus'`);
      assert.match(second!, new RegExp(`^usage: softrdma ${cmd}`));
      assert.equal(third, `(softrdma ${cmd} --help lists the options)`);
    });
  }

  it('an unknown command or top-level option is named, exit 1', async () => {
    const cmd = await out(['frobnicate']);
    assert.match(cmd.stderr, /^softrdma: unknown command 'frobnicate'/);
    assert.equal(cmd.code, 1);
    const opt = await out(['--frob']);
    assert.match(opt.stderr, /^softrdma: unknown option '--frob'/);
    assert.equal(opt.code, 1);
  });

  it('no command: the usage on stderr, exit 1 (as npm and git); --help: on stdout, exit 0', async () => {
    const none = await out([]);
    assert.equal(none.code, 1);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^usage: softrdma <command> \[options\]\n/);
    const help = await out(['--help']);
    assert.equal(help.code, 0);
    assert.equal(help.stdout, `${none.stderr}`);
  });
});

describe('devinfo (ibv_devinfo)', () => {
  it('the default layout: no GIDs, tabs as devinfo.c prints them, a blank line after each port', async () => {
    const r = await out(['devinfo']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^hca_id:\trxe0\n\ttransport:\t\t\tInfiniBand \(0\)\n\tfw_ver:\t\t\t\t\S+\n\tnode_guid:\t\t\t0000:7fff:fe00:0001\n/);
    assert.match(r.stdout, /\tvendor_id:\t\t\t0xffffff\n\tvendor_part_id:\t\t\t0\n\thw_ver:\t\t\t\t0x0\n\tphys_port_cnt:\t\t\t1\n\t\tport:\t1\n\t\t\tstate:\t\t\tPORT_ACTIVE \(4\)\n/);
    assert.match(r.stdout, /\t\t\tlink_layer:\t\tEthernet\n\n$/);
    assert.doesNotMatch(r.stdout, /GID|max_qp/);
  });

  it('-v: device limits and the GID table as rdma-core prints RoCE v2 GIDs (inet_ntop)', async () => {
    const r = await out(['devinfo', '-v', '--bind', '127.0.0.2']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\tmax_qp:\t\t\t\t\d+\n\tmax_qp_wr:\t\t\t\d+\n/);
    assert.match(r.stdout, /\tatomic_cap:\t\t\tATOMIC_HCA \(1\)\n/);
    assert.match(r.stdout, /\t\t\tphys_state:\t\tLINK_UP \(5\)\n\t\t\tGID\[ {2}0\]:\t\t::ffff:127\.0\.0\.2, RoCE v2\n\n$/);
  });

  it('-l lists the devices, -d picks one, -i picks a port; errors as ibv_devinfo gives them', async () => {
    const l = await out(['devinfo', '-l', '--bind', '127.0.0.2', '--bind', '127.0.0.3']);
    assert.equal(l.stdout, '2 HCAs found:\n\trxe0\n\trxe1\n\n');
    const d = await out(['devinfo', '-d', 'rxe1', '--bind', '127.0.0.2', '--bind', '127.0.0.3']);
    assert.match(d.stdout, /^hca_id:\trxe1\n/);
    assert.equal(d.stdout.match(/hca_id/g)!.length, 1);
    const missing = await out(['devinfo', '-d', 'mlx5_0']);
    assert.equal(missing.code, 255);
    assert.equal(missing.stderr, "IB device 'mlx5_0' wasn't found\n");
    const port = await out(['devinfo', '-i', '2']);
    assert.equal(port.code, 4);
    assert.equal(port.stderr, 'Invalid port requested for device\n');
    assert.match((await out(['devinfo', '-i', '1'])).stdout, /\t\tport:\t1\n/);
  });

  it('-v: device_cap_flags and their names (print_device_cap_flags), the ODP block, the unsupported lines and num_comp_vectors, as devinfo.c', async () => {
    const r = await out(['devinfo', '-v', '--bind', '127.0.0.2']);
    assert.equal(r.code, 0, r.stderr);
    // PORT_ACTIVE_EVENT | SYS_IMAGE_GUID | RC_RNR_NAK_GEN | SRQ_RESIZE | MEM_WINDOW | MEM_WINDOW_TYPE_2B (ib_user_verbs.h's bits).
    assert.match(r.stdout, /\tmax_qp_wr:\t\t\t\d+\n\tdevice_cap_flags:\t\t0x01023c00\n\t{5}PORT_ACTIVE_EVENT\n\t{5}SYS_IMAGE_GUID\n\t{5}RC_RNR_NAK_GEN\n\t{5}SRQ_RESIZE\n\t{5}MEM_WINDOW\n\t{5}MEM_WINDOW_TYPE_2B\n\tmax_sge:/);
    assert.doesNotMatch(r.stdout, /MEM_MGT_EXTENSIONS|AUTO_PATH_MIG|Unknown flags/);
    const after = [
      '\tlocal_ca_ack_delay:\t\t15',
      '\tgeneral_odp_caps:',
      '\trc_odp_caps:', '\t\t\t\t\tNO SUPPORT', '\tuc_odp_caps:', '\t\t\t\t\tNO SUPPORT',
      '\tud_odp_caps:', '\t\t\t\t\tNO SUPPORT', '\txrc_odp_caps:', '\t\t\t\t\tNO SUPPORT',
      '\tcompletion_timestamp_mask not supported',
      '\tcore clock not supported',
      '\tdevice_cap_flags_ex:\t\t0x1023C00',
      '\ttso_caps:', '\t\tmax_tso:\t\t\t0',
      '\trss_caps:', '\t\tmax_rwq_indirection_tables:\t\t\t0', '\t\tmax_rwq_indirection_table_size:\t\t\t0',
      '\t\trx_hash_function:\t\t\t\t0x0', '\t\trx_hash_fields_mask:\t\t\t\t0x0',
      '\tmax_wq_type_rq:\t\t\t0',
      '\tpacket_pacing_caps:', '\t\tqp_rate_limit_min:\t0kbps', '\t\tqp_rate_limit_max:\t0kbps',
      '\ttag matching not supported',
      '\tnum_comp_vectors:\t\t1',
      '\t\tport:\t1',
    ].join('\n');
    assert.ok(r.stdout.includes(`\n${after}\n`), r.stdout);
    // Without -v none of it.
    assert.doesNotMatch((await out(['devinfo', '--bind', '127.0.0.2'])).stdout, /device_cap_flags|odp_caps|num_comp_vectors/);
  });

  it('exit codes of bad input as devinfo.c: an unknown option or a missing value 255, -i below 1 1; other words are ignored', async () => {
    const bogus = await out(['devinfo', '-x']);
    assert.equal(bogus.code, 255);
    assert.equal((await out(['devinfo', '-d'])).code, 255);
    assert.equal((await out(['devinfo', '-i', '0'])).code, 1);
    assert.equal((await out(['devinfo', '-i', 'abc'])).code, 1);
    const words = await out(['devinfo', 'extra', '-l', 'words']);
    assert.equal(words.code, 0, words.stderr);
    assert.equal(words.stdout, '1 HCA found:\n\trxe0\n\n');
  });

  it('--bind that is no address (empty, or a name that does not resolve): a usage error at once, no device made, exit 1', async () => {
    for (const [args, re] of [
      [['devinfo', '--bind='], /^softrdma devinfo: --bind must be an IPv4 or IPv6 address or a host name, got ''\n/],
      [['devinfo', '--bind', ''], /^softrdma devinfo: --bind must be/],
      [['devinfo', '-v', '--bind', 'no-such-host.invalid'], /^softrdma devinfo: --bind must be an IPv4 or IPv6 address or a host name that resolves, got 'no-such-host\.invalid'/],
    ] as const) {
      const t0 = Date.now();
      const r = await out([...args], 10_000); // it used to hang for ever: the UDP socket stayed open
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '');
      assert.ok(Date.now() - t0 < 10_000);
    }
  });

  it('RxeDevice.create with an address that is no IP address rejects and leaves no socket open (the process exits)', async () => {
    const { spawnSync } = await import('node:child_process');
    const index = new URL('../../src/index.js', import.meta.url).href;
    const script = `import { createRxeDevice } from ${JSON.stringify(index)};
      for (const address of ['', 'localhost', '127.0.0.300', undefined]) {
        try { await createRxeDevice({ address, port: 0 }); console.log('created'); } catch (e) { console.log(e.code, e.message); }
      }
      console.log(JSON.stringify(process.getActiveResourcesInfo().filter((r) => /UDP/.test(r))));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}`);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 5, r.stdout);
    for (const l of lines.slice(0, 4)) assert.match(l, /^EINVAL .*address must be an IPv4 or IPv6 address/);
    assert.equal(lines[4], '[]');
  });

  it('the node GUID comes from the address, EUI-64 style, the same in every run', async () => {
    // As rxe from a MAC: 52:54:00:77:00:02 gives 5054:00ff:fe77:0002; 10.77.0.2 stands for 02:00:0a:4d:00:02.
    assert.equal(guidString(nodeGuidFor('10.77.0.2')), '0000:0aff:fe4d:0002');
    assert.equal(nodeGuidFor('fd00::1'), nodeGuidFor('fd00::1'));
    assert.notEqual(nodeGuidFor('fd00::1'), nodeGuidFor('fd00::2'));
    assert.equal(Number((nodeGuidFor('fd00::1') >> 24n) & 0xffffn), 0xfffe);
    const guid = (s: string) => /node_guid:\t\t\t(\S+)/.exec(s)![1];
    const a = await out(['devinfo', '--bind', '127.0.0.3']);
    const b = await out(['devinfo', '--bind', '127.0.0.3']);
    assert.equal(guid(a.stdout), '0000:7fff:fe00:0003');
    assert.equal(guid(a.stdout), guid(b.stdout));
    assert.match(a.stdout, /sys_image_guid:\t\t\t0000:7fff:fe00:0003/);
  });
});

describe('smcss (smc-tools smcss.c)', () => {
  const base = { pid: 42, localAddress: '127.0.0.1', localPort: 5000, peerAddress: '127.0.0.1', peerPort: 40000 };
  it('Mode of a fallback: TCP 0x<local>, /0x<peer> only when the peer declined; -v adds the names and the cause', () => {
    assert.equal(tcpModeText({ fallbackReason: 'SMC_CLC_DECL_PEERNOSMC (0x03010000)' }), 'TCP 0x03010000');
    assert.equal(tcpModeText({ fallbackReason: 'SMC_CLC_DECL_PEERDECL (0x05000000)', peerDeclineReason: 'SMC_CLC_DECL_NOSMCDDEV (0x03030001)' }), 'TCP 0x05000000/0x03030001');
    const row = { ...base, state: 'ACTIVE', mode: 'TCP', fallbackReason: 'SMC_CLC_DECL_PEERDECL (0x05000000)', peerDeclineReason: 'SMC_CLC_DECL_NOSMCDDEV (0x03030001)', fallbackCause: 'peer declined' };
    const plain = format([row], { uid: 1000 }).split('\n')[1];
    assert.equal(plain, 'ACTIVE         01000 0000042 127.0.0.1:5000          127.0.0.1:40000         0000 TCP 0x05000000/0x03030001');
    assert.match(format([row], { uid: 1000, verbose: true }), /TCP 0x05000000\/0x03030001 \(PEERDECL\/NOSMCDDEV: peer declined\)$/);
  });

  it('-d: token, sizes and flags in hex, cursors %04x:%08x, in smcss columns; -D: GIDs and DMB tokens %016llx, link id %08x; LISTEN rows end after the local address', () => {
    const cur = (wrap: number, count: number) => ({ wrap, count });
    const conninfo = {
      token: 0x2a, sndbufSize: 0xfffe0, rmbeSize: 0xffe0, peerRmbeSize: 0xfffe0,
      rxProd: cur(0, 0x2a), rxCons: cur(1, 8), txProd: cur(1, 0x10), txCons: cur(0, 0x2a), txPrep: cur(1, 0x10), txSent: cur(1, 0x10), txFin: cur(1, 0x10),
      rxProdFlags: 0x80, rxConnStateFlags: 0, txProdFlags: 0, txConnStateFlags: 0x80, rxFlags: ['write_blocked'], txFlags: ['peer_done_writing'],
    };
    const dmbinfo = { gid: '00000000000000ab', token: '1234567890abcdef', peerGid: 'fedcba0987654321', peerToken: '0000000000000001', linkId: 0 };
    const row = { ...base, state: 'ACTIVE', mode: 'SMCD', shutdown: 2, conninfo, dmbinfo };
    const text = format([row, { ...base, state: 'LISTEN', mode: 'SMCD', peerAddress: '*', peerPort: 0 }], { debug: true, uid: 0 });
    const [head, line, listen] = text.split('\n');
    assert.match(head!, /^State {10}UID {3}Inode {3}Local Address {11}Peer Address {12}Intf Mode Shutd Token {4}Sndbuf {3}Rcvbuf {3}Peerbuf  rxprod-Cursor rxcons-Cursor rxFlags txprod-Cursor/);
    // Every printf of smcss.c ends with its blank ("%04x:%08x ", "%-*s "): kept, as smcss prints them.
    assert.equal(line, 'ACTIVE         00000 0000042 127.0.0.1:5000          127.0.0.1:40000         0000 SMCD  <-W  0000002a 000fffe0 0000ffe0 000fffe0 0000:0000002a 0001:00000008 80:00   0001:00000010 0000:0000002a 00:80   0001:00000010 0001:00000010 0001:00000010 ');
    assert.equal(listen, 'LISTEN         00000 0000042 127.0.0.1:5000          ');
    assert.ok(head!.endsWith('txfin-Cursor  '), JSON.stringify(head));
    const [dHead, dLine] = format([row], { smcd: true, uid: 0 }).split('\n');
    assert.match(dHead!, /Intf Mode GID {14}Token {12}Peer-GID {9}Peer-Token {7}Linkid$/);
    assert.equal(dLine, 'ACTIVE         00000 0000042 127.0.0.1:5000          127.0.0.1:40000         0000 SMCD 00000000000000ab 1234567890abcdef fedcba0987654321 0000000000000001 00000000 ');
  });

  it('the trailing blanks of print_header and show_one_smc_sock: "Mode ", "%4s ", INIT after the inode, CLOSED after the interface', () => {
    const [head, smcd, init, closed] = format([
      { ...base, state: 'ACTIVE', mode: 'SMCD' }, { ...base, state: 'INIT', mode: 'SMCD' }, { ...base, state: 'CLOSED', mode: 'SMCD' },
    ], { uid: 0 }).split('\n');
    assert.equal(head, 'State          UID   Inode   Local Address           Peer Address            Intf Mode ');
    assert.equal(smcd, 'ACTIVE         00000 0000042 127.0.0.1:5000          127.0.0.1:40000         0000 SMCD ');
    assert.equal(init, 'INIT           00000 0000042 ');
    assert.equal(closed, 'CLOSED         00000 0000042 127.0.0.1:5000          127.0.0.1:40000         0000 ');
    const [rHead] = format([], { smcr: true, uid: 0 }).split('\n');
    assert.ok(rHead!.endsWith('Mode Role IB-device       Port Linkid GID                                      Peer-GID'), JSON.stringify(rHead));
  });

  it('addresses longer than 23 characters are cut with ".." unless -W', () => {
    assert.equal(addrText('fd00:1234:5678:9abc::1', 40000, false), 'fd00:1234:5678:..:40000');
    assert.equal(addrText('fd00:1234:5678:9abc::1', 40000, true), 'fd00:1234:5678:9abc::1:40000');
    // An AF_INET6 socket's IPv4 address, as the kernel reports it and smcss's inet_ntop prints it.
    assert.equal(addrText('::ffff:127.0.0.1', 80, false), '::ffff:127.0.0.1:80');
    assert.equal(addrText('127.0.0.1', 80, false), '127.0.0.1:80');
  });

  it("smcss's option rules: -l excludes -a and -d, -D excludes -R; usage() exits 1; -v is smcss's version line; other words are ignored", async () => {
    for (const [a, b] of [['-l', '-a'], ['-l', '-d'], ['-D', '-R']] as const) {
      const r = await out(['smcss', a, b]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /together with .* is not supported/);
    }
    assert.equal((await out(['smcss', '-x'])).code, 1);
    for (const v of ['-v', '-V', '--version']) assert.equal((await out(['smcss', v])).stdout, `smcss utility, softrdma-${version}\n`);
    const words = await out(['smcss', 'extra']);
    assert.equal(words.code, 0, words.stderr);
    assert.match(words.stdout, /^State {10}UID/);
  });

  it('lists a live SMC-D connection and its listener: default, -a, -l, -D, -R', async () => {
    const srv = run(['smc-chk', '-S', '-p', '0'], { env });
    try {
      const [, port] = await srv.waitFor(/Server started on port (\d+)/);
      const client = run(['smc-run', process.execPath, '-e', `const s=require('net').connect(${port},'127.0.0.1',()=>console.log('connected'));setTimeout(()=>s.destroy(),20000)`], { env });
      try {
        await client.waitFor(/connected/);
        const rowRe = new RegExp(`^ACTIVE +\\d{5} \\d{7} 127\\.0\\.0\\.1:\\d+ +127\\.0\\.0\\.1:${port} +0000 SMCD $`, 'm');
        const listenRe = new RegExp(`^LISTEN +\\d{5} \\d{7} \\S+:${port} +$`, 'm');
        // The server side is an AF_INET6 socket where the host has IPv6 (smc-chk -S listens on ::): its IPv4
        // addresses keep '::ffff:', as smcss prints the kernel's.
        const v6 = new RegExp(`^LISTEN +\\d{5} \\d{7} :::${port} `, 'm').test((await out(['smcss', '-l'])).stdout);
        const mapped = v6 ? '::ffff:' : '';
        const serverRe = new RegExp(`^ACTIVE +\\d{5} \\d{7} ${mapped}127\\.0\\.0\\.1:${port} +${mapped}127\\.0\\.0\\.1:\\d+ +0000 SMCD $`, 'm');
        let r = await out(['smcss']);
        for (let i = 0; i < 20 && !rowRe.test(r.stdout); i++) r = await out(['smcss']); // the handshake may still run
        assert.match(r.stdout, rowRe);
        assert.match(r.stdout, serverRe);
        assert.doesNotMatch(r.stdout, listenRe);
        assert.match((await out(['smcss', '-a'])).stdout, listenRe);
        // A listener has no link group: Linux reports it as SMC-R (diag_mode), so -D -a leaves it out and -R -a shows it.
        const da = (await out(['smcss', '-D', '-a'])).stdout;
        assert.doesNotMatch(da, /^LISTEN/m);
        assert.match(da, /^ACTIVE/m);
        assert.match((await out(['smcss', '-R', '-a'])).stdout, listenRe);
        const l = (await out(['smcss', '-l'])).stdout;
        assert.match(l, listenRe);
        assert.doesNotMatch(l, /^ACTIVE/m);
        const smcdRe = new RegExp(`${rowRe.source.slice(0, -1)}[0-9a-f]{16} [0-9a-f]{16} [0-9a-f]{16} [0-9a-f]{16} 00000000 $`, 'm');
        assert.match((await out(['smcss', '-D'])).stdout, smcdRe);
        assert.equal((await out(['smcss', '-R'])).stdout.trim().split('\n').length, 1);
      } finally {
        client.child.kill();
        await client.exit();
      }
    } finally {
      srv.child.kill('SIGINT');
      await srv.exit();
    }
  });
});

describe('smc-chk (smc_chk -C)', () => {
  it('an SMC server: "Success, using SMC-D", exit 0', async () => {
    const srv = run(['smc-chk', '-S', '-p', '0'], { env });
    try {
      const [, port] = await srv.waitFor(/Server started on port (\d+)/);
      const r = await out(['smc-chk', '127.0.0.1', port!]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      // smc_chk's connect mode: "  Live test (SMC-D and SMC-R)", the result, then test_iface's blank line.
      assert.match(r.stdout, new RegExp(`^Test with target IP 127\\.0\\.0\\.1 and port ${port}\n  Live test \\(SMC-D and SMC-R\\)\n     Success, using SMC-D\n.*\n\n$`));
      const c = await out(['smc-chk', '-C', '127.0.0.1', '-p', port!]);
      assert.equal(c.code, 0);
      // -6 is taken (with -C the address decides, as in smc_chk).
      const six = await out(['smc-chk', '-6', '-C', '127.0.0.1', '-p', port!]);
      assert.equal(six.code, 0, six.stdout + six.stderr);
      assert.match(six.stdout, /Success, using SMC-D/);
      const long = await out(['smc-chk', '--ipv6', '127.0.0.1', port!]);
      assert.equal(long.code, 0, long.stdout + long.stderr);
    } finally {
      srv.child.kill('SIGINT');
      assert.equal(await srv.exit(), 0);
    }
  });

  it('a plain TCP server: the fallback reason in words and what to do, exit 1', async () => {
    const plain = net.createServer((s) => s.resume()).listen(0, '127.0.0.1');
    await once(plain, 'listening');
    const port = (plain.address() as net.AddressInfo).port;
    try {
      const r = await out(['smc-chk', '127.0.0.1', String(port)]);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /Failed {2}\(TCP fallback\), reasons:\n {10}Client: 0x03010000 Peer does not support SMC \(SMC_CLC_DECL_PEERNOSMC\)\n {10}Cause: {2}peer is not an SMC listener\n {5}What to do:\n/);
      assert.match(r.stdout, /softrdma smc-run node server\.js/);
      assert.doesNotMatch(r.stdout, /Server:/); // the peer sent no Decline
    } finally {
      plain.close();
    }
  });

  it('other causes in words (unit), and a closed port', async () => {
    const info = (fallbackCause: string, peerDeclineReason?: number) => ({ mode: 'TCP' as const, pending: false, smcBytesSent: 0, smcBytesReceived: 0, fallbackReason: 0x03010000, fallbackCause, ...(peerDeclineReason ? { peerDeclineReason } : {}) });
    assert.match(report(info('server wrote first'), 'h', 1).join('\n'), /Cause: {2}server wrote first\n {5}What to do:\n.*sent data before answering the SMC proposal/);
    assert.match(report(info('handshake timed out'), 'h', 1).join('\n'), /did not answer the SMC proposal in time/);
    const declined = report({ ...info('peer declined: SMC_CLC_DECL_MAX_DMB (0x030d0000)', 0x030d0000), fallbackReason: 0x05000000 }, 'h', 1).join('\n');
    assert.match(declined, /Client: 0x05000000 Peer declined during handshake \(SMC_CLC_DECL_PEERDECL\)\n {10}Server: 0x030d0000 SMC-D connection limit reached \(SMC_CLC_DECL_MAX_DMB\)/);
    assert.match(declined, /SOFTRDMA_SMC_MAX_DMBS_PER_PEER/);
    assert.match(advice(info('peer is not an SMC listener'), '192.0.2.1', 80).join(' '), /not an address of this host/);
    const closed = await out(['smc-chk', '127.0.0.1', '1']);
    assert.equal(closed.code, 1);
    assert.match(closed.stdout, /Failed, no connection: ECONNREFUSED\n\n$/);
  });

  it('the destination is resolved first: an unknown host is smc_chk\'s "Error: Unknown destination", exit 1; a name is tested at its address', async () => {
    for (const args of [['-C', 'no-such-host.invalid', '-p', '1'], ['no-such-host.invalid', '80']]) {
      const r = await out(['smc-chk', ...args]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(r.stdout, "Error: Unknown destination 'no-such-host.invalid'\n");
    }
    const { lookup } = await import('node:dns/promises');
    const ip = (await lookup('localhost')).address;
    const named = await out(['smc-chk', '-C', 'localhost', '-p', '1']);
    assert.match(named.stdout, new RegExp(`^Test with target IP ${ip.replace(/\./g, '\\.')} and port 1\n`));
  });

  it('no host and no -S: the usage, exit 0 (smc_chk without a mode); -S with -C: smc_chk\'s error, exit 1; a bad option: exit 2', async () => {
    const none = await out(['smc-chk']);
    assert.equal(none.code, 0);
    assert.match(none.stdout, /^usage: softrdma smc-chk/);
    const both = await out(['smc-chk', '-S', '-C', '127.0.0.1']);
    assert.equal(both.code, 1);
    assert.equal(both.stderr, "Error: Cannot combine options '-S/--server' and '-C/--connect'\n");
    assert.equal((await out(['smc-chk', '-x'])).code, 2);
  });
});

describe('smc-run (smc_run)', () => {
  const show = `console.log(JSON.stringify({ debug: process.env.NODE_DEBUG, buffer: process.env.SOFTRDMA_SMC_BUFFER, options: process.env.NODE_OPTIONS }))`;

  it('-d sets NODE_DEBUG=smc, -r sets the DMB size (k/m suffixes, rounded up to 16 KiB x 2^n); the preload is --require', async () => {
    const r = await out(['smc-run', '-d', '-r', '100k', process.execPath, '-e', show]);
    assert.equal(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout) as { debug: string; buffer: string; options: string };
    assert.match(o.debug, /(^|,)smc$/);
    assert.equal(o.buffer, String(128 * 1024));
    assert.match(o.options, /--require "[^"]+auto\.js"/);
    assert.equal(parseBufferSize('1m'), 1 << 20);
    assert.equal(parseBufferSize('1000'), 16384);
    assert.throws(() => parseBufferSize('12q'), /invalid buffer size/);
    assert.deepEqual(parseSmcRunArgs(['-r64k', '--', 'node', '-d']).command, ['node', '-d']);
    assert.equal(parseSmcRunArgs(['-r64k', 'node']).bufferSize, 65536);
  });

  it('options grouped as smc_run\'s getopts "dhr:t:v" takes them: -dr 1m, -dr1m, -dv; bad input exits 1', async () => {
    const g = parseSmcRunArgs(['-dr', '1m', 'node', '-x']);
    assert.equal(g.debug, true);
    assert.equal(g.bufferSize, 1 << 20);
    assert.deepEqual(g.command, ['node', '-x']);
    assert.equal(parseSmcRunArgs(['-dr64k', 'node']).bufferSize, 65536);
    assert.equal(parseSmcRunArgs(['-do', 'node']).tcpOption, true);
    assert.equal(parseSmcRunArgs(['-dv', 'node']).action, 'version');
    assert.throws(() => parseSmcRunArgs(['-dx', 'node']), /unknown option '-x'/);
    assert.throws(() => parseSmcRunArgs(['-dr']), /option '-r' needs a value/);
    const r = await out(['smc-run', '-dr', '100k', process.execPath, '-e', show]);
    assert.equal(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout) as { debug: string; buffer: string };
    assert.match(o.debug, /(^|,)smc$/);
    assert.equal(o.buffer, String(128 * 1024));
    const v = await out(['smc-run', '-dv', 'node']);
    assert.equal(v.code, 0);
    assert.equal(v.stdout, `softrdma smc-run ${version}\n`);
    for (const bad of [['-x', 'node'], ['-r', '12q', 'node'], []]) assert.equal((await out(['smc-run', ...bad])).code, 1, bad.join(' '));
  });

  it('a Node script (#! runs node) is run; a program that is not Node gets a clear error, unless --any', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smc-run-'));
    try {
      const js = path.join(dir, 'tool');
      fs.writeFileSync(js, `#!/usr/bin/env node\n${show}\n`, { mode: 0o755 });
      const sh = path.join(dir, 'tool.sh');
      fs.writeFileSync(sh, `#!/bin/sh\necho "$NODE_OPTIONS"\n`, { mode: 0o755 });
      const withPath = { ...env, PATH: `${dir}:${process.env.PATH}` };
      assert.ok(isNodeProgram(js));
      assert.ok(isNodeProgram(process.execPath));
      assert.ok(!isNodeProgram(sh));
      const p = run(['smc-run', 'tool'], { env: withPath });
      assert.equal(await p.exit(), 0, p.stderr);
      assert.match(p.stdout, /--require/);
      const bad = run(['smc-run', 'tool.sh'], { env: withPath });
      assert.equal(await bad.exit(), 2);
      assert.equal(bad.stdout, '');
      assert.match(bad.stderr, /^softrdma smc-run: tool\.sh \(.*tool\.sh\) is not a Node program, so SMC would not reach its sockets/);
      assert.match(bad.stderr, /--any/);
      const any = run(['smc-run', '--any', 'tool.sh'], { env: withPath });
      assert.equal(await any.exit(), 0);
      assert.match(any.stdout, /--require/);
      const missing = run(['smc-run', 'no-such-tool-here'], { env: withPath });
      assert.equal(await missing.exit(), 127);
      assert.match(missing.stderr, /no-such-tool-here: command not found on PATH/);
      // What a shell says and returns for a file it may not execute, and for a directory: 126.
      const noExec = path.join(dir, 'noexec.js');
      fs.writeFileSync(noExec, `#!/usr/bin/env node\n${show}\n`, { mode: 0o644 });
      for (const [target, why] of [[noExec, 'Permission denied'], [dir, 'Is a directory']]) {
        const r = run(['smc-run', target], { env: withPath });
        assert.equal(await r.exit(), 126, r.stderr);
        assert.equal(r.stderr, `softrdma smc-run: ${target}: ${why}\n`);
      }
      const onPath = run(['smc-run', 'noexec.js'], { env: withPath });
      assert.equal(await onPath.exit(), 126);
      assert.match(onPath.stderr, /noexec\.js: Permission denied/);
      // bash's PATH search passes over a directory of that name: not found, 127.
      fs.mkdirSync(path.join(dir, 'adir'));
      const dirOnPath = run(['smc-run', 'adir'], { env: withPath });
      assert.equal(await dirOnPath.exit(), 127);
      assert.match(dirOnPath.stderr, /adir: command not found on PATH/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a signal to smc-run's whole process group (timeout, kill -- -PGID, a terminal's Ctrl-C) reaches the program once, not twice", async () => {
    const { spawn } = await import('node:child_process');
    const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
    const app = `let n = 0; for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { console.log('got ' + s + ' ' + (++n)); setTimeout(() => process.exit(0), 300); });
      console.log('ready'); setTimeout(() => {}, 20000);`;
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      // A group of its own, as a shell's job or timeout's child has.
      const p = spawn(process.execPath, [cli, 'smc-run', process.execPath, '-e', app], { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
      let out = '';
      p.stdout!.on('data', (d: Buffer) => { out += d; });
      const exited = new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)));
      for (let i = 0; i < 200 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(out, /ready/);
      process.kill(-p.pid!, sig);
      assert.equal(await Promise.race([exited, new Promise((r) => setTimeout(() => r('hung'), 10_000))]), 0, out);
      assert.deepEqual(out.match(/^got .*$/gm), [`got ${sig} 1`], `${sig}: ${out}`);
    }
  });

  it('signals sent to smc-run reach the program (as smc_run, which execs it): its handler runs, smc-run waits and exits with its status', async () => {
    const app = `for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(s, () => { console.log('got ' + s); setTimeout(() => process.exit(s === 'SIGTERM' ? 0 : 3), 200); });
      console.log('ready'); setTimeout(() => {}, 20000);`;
    for (const [sig, code] of [['SIGTERM', 0], ['SIGINT', 3], ['SIGHUP', 3]] as const) {
      const p = run(['smc-run', process.execPath, '-e', app], { env });
      await p.waitFor(/ready/);
      p.child.kill(sig);
      assert.equal(await p.exit(10_000), code, `${sig}: ${p.stdout}${p.stderr}`);
      assert.match(p.stdout, new RegExp(`^got ${sig}$`, 'm'));
    }
  });

  it('-o / --tcp-option [--cgroup DIR]: parsed; --cgroup alone is a usage error', () => {
    const o = parseSmcRunArgs(['-o', '--cgroup', '/sys/fs/cgroup/x', 'node', '--cgroup']);
    assert.equal(o.tcpOption, true);
    assert.equal(o.cgroup, '/sys/fs/cgroup/x');
    assert.deepEqual(o.command, ['node', '--cgroup']);
    assert.equal(parseSmcRunArgs(['--tcp-option', 'node']).tcpOption, true);
    assert.equal(parseSmcRunArgs(['node', '-o']).tcpOption, false);
    assert.throws(() => parseSmcRunArgs(['--cgroup', '/x', 'node']), /--cgroup goes with --tcp-option/);
    assert.throws(() => parseSmcRunArgs(['-o', '--cgroup']), /needs a value|no command/);
  });

  it('-o runs the command in a fresh cgroup with the SMC TCP option program, removed after', { skip: tcpOptionUnavailable() ?? false }, async () => {
    const mount = cgroup2Mount()!;
    const probe = `const fs=require('fs');const cg=fs.readFileSync('/proc/self/cgroup','utf8').match(/^0::(.*)$/m)[1];` +
      `console.log(JSON.stringify({cg,options:process.env.NODE_OPTIONS}))`;
    const p = run(['smc-run', '-o', process.execPath, '-e', probe], { env });
    assert.equal(await p.exit(), 0, p.stderr);
    const o = JSON.parse(p.stdout) as { cg: string; options: string };
    assert.match(o.cg, new RegExp(`/softrdma-tcpopt-${p.child.pid}-1$`));
    assert.match(o.options, /--require/, 'still preloads softrdma/smc/auto');
    assert.equal(fs.existsSync(path.join(mount, o.cg)), false, 'the cgroup is gone');
    // The exit code is the command's.
    const q = run(['smc-run', '-o', '--any', '/bin/sh', '-c', 'exit 7'], { env });
    assert.equal(await q.exit(), 7, q.stderr);
    const bad = run(['smc-run', '-o', '--cgroup', '/no/such/dir', process.execPath, '-e', '0'], { env });
    assert.equal(await bad.exit(), 1);
    assert.match(bad.stderr, /cannot make a cgroup in \/no\/such\/dir: ENOENT/);
  });
});

describe('smc-peer (the benchmarks\' and demos\' peer process)', () => {
  it('a usage mistake is one line naming it and the usage, exit 2, no stack', async () => {
    const { spawnSync } = await import('node:child_process');
    const peer = new URL('../../src/tools/smc-peer.js', import.meta.url).pathname;
    for (const args of [['--bogus'], ['--api', 'foo', '--test', 'bulk'], ['--api', 'net', '--test', 'nope', '--port', '1']]) {
      const r = spawnSync(process.execPath, [peer, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^smc-peer: .*\nusage: smc-peer\.js serve/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});
