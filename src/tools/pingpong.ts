// `softrdma pingpong rc|uc|ud|srq`: ports of rdma-core's ibv_rc_pingpong, ibv_uc_pingpong and
// ibv_ud_pingpong (srq, ibv_srq_pingpong, in srq-pingpong.ts). They speak the same TCP exchange (port 18515; "%04x:%06x:%06x:%s" =
// LID:QPN:PSN:GID in a 52-byte buffer with its NUL, then "done\0" from the client), use the
// same defaults and print the same lines, so either side can be the real binary on a kernel
// rxe device. uc is rc on a UC QP (uc_pingpong.c): no ACKs, so no retries, RNR timer or
// outstanding reads to set up.

import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  Access, connectQp, createRxeDevice, initQp, rxeOf, mtuEnum, QpType, SendFlags, WcStatus, wcStatusStr, WrOpcode,
  type AH, type CompChannel, type CQ, type Device, type QP, type WorkCompletion,
} from '../index.js';
import { getoptArgs, intOption, resolveBindOption, udpPortTaken, UsageError } from './usage.js';
import { hex } from './table.js';
import { MAX_QP, srqPingpong } from './srq-pingpong.js';
import { decodeDest, driveCq, encodeDest, exchangeDests, gidText, MSG_BYTES, RECV_WRID, SEND_WRID, type Dest } from './pingpong-common.js';

// The exchange's message, for tests and other tools.
export { decodeDest, encodeDest, MSG_BYTES, type Dest } from './pingpong-common.js';

export const PINGPONG_USAGE = `usage: softrdma pingpong rc|uc|ud|srq [options] [server-host]

Run the server without a host, then the client with the server's host. Either side may be
rdma-core's ibv_rc_pingpong / ibv_uc_pingpong / ibv_ud_pingpong / ibv_srq_pingpong (give it -g
with the index of a RoCEv2 GID). Numbers may be decimal, 0x hex or 0-prefixed octal, as strtol
reads them.

  -p, --port N       TCP port of the exchange (default 18515)
  -d, --ib-dev NAME  device name (default rxe0)
      --bind ADDR    local IP address of the rxe device (default 127.0.0.1)
      --udp-port N   RoCEv2 UDP port (default 4791)
  -i, --ib-port N    port number (default 1)
  -s, --size N       message size (default 4096 for rc and uc, 1024 for ud: ud_pingpong.c's
                     default, whatever its --help says)
  -m, --mtu N        path MTU for rc and uc (default 1024; ud has no -m, as ud_pingpong)
  -r, --rx-depth N   receives to post (default 500; srq: the shared receive queue's)
  -n, --iters N      exchanges (default 1000; srq: sends and receives of all QPs together,
                     as srq_pingpong.c counts them, whatever its --help says)
  -q, --num-qp N     srq only: RC QPs sharing the receive queue (default 16, at most 256)
  -l, --sl N         service level (default 0)
  -e, --events       wait on a completion channel instead of polling
  -g, --gid-idx N    local GID index (default 0; the only GID an rxe device has)
  -c, --chk          validate the received buffer: the client writes the first byte of each
                     4 KiB page, the server checks it after the run (as the C tools, the byte
                     is i / page_size % sizeof(char): always 0); not srq (srq_pingpong has no -c)

Not here: rc_pingpong's -o, -O, -P (on-demand paging), -t (timestamps), -j (device memory),
-N (the new post-send API) and -U; ibv_xsrq_pingpong (XRC).`;

/** The page size the C tools' -c walks the buffer by (sysconf(_SC_PAGESIZE) on x86-64). */
const PAGE_SIZE = 4096;
/** UD receives start with the 40-byte GRH; sends go from just after it. */
const GRH = 40;

const OPTIONS = {
  port: { type: 'string', short: 'p' }, 'ib-dev': { type: 'string', short: 'd' }, bind: { type: 'string' },
  'udp-port': { type: 'string' }, 'ib-port': { type: 'string', short: 'i' }, size: { type: 'string', short: 's' },
  mtu: { type: 'string', short: 'm' }, 'rx-depth': { type: 'string', short: 'r' }, iters: { type: 'string', short: 'n' },
  sl: { type: 'string', short: 'l' }, events: { type: 'boolean', short: 'e' }, 'gid-idx': { type: 'string', short: 'g' },
  chk: { type: 'boolean', short: 'c' }, 'num-qp': { type: 'string', short: 'q' },
} as const;
export const PINGPONG_OPTIONS = OPTIONS;

export async function pingpong(argv: string[], out: (line: string) => void = (l) => console.log(l)): Promise<{ usecPerIter: number; bytes: number }> {
  const { values, positionals } = parseArgs({ args: getoptArgs(argv, OPTIONS), allowPositionals: true, options: OPTIONS });
  const [kind, servername, extra] = positionals;
  if (kind !== 'rc' && kind !== 'uc' && kind !== 'ud' && kind !== 'srq') throw new UsageError(`expected 'rc', 'uc', 'ud' or 'srq', got '${kind ?? ''}'`);
  if (extra !== undefined) throw new UsageError(`unexpected argument '${extra}'`);
  // Options the C tool of that kind does not have are unknown to its getopt.
  const given = (long: string, short: string) => (argv.some((a) => a.startsWith(`--${long.slice(0, 3)}`)) ? `--${long}` : `-${short}`); // --name, or a prefix of it
  // ud_pingpong.c's getopt string has no 'm' ("p:d:i:s:r:n:l:eg:c").
  if (kind === 'ud' && values.mtu !== undefined) throw new UsageError(`unknown option '${given('mtu', 'm')}' (ud_pingpong has no path MTU option)`);
  // srq_pingpong.c's is "p:d:i:s:m:q:r:n:l:eg:": no -c; only it has -q.
  if (kind === 'srq' && values.chk) throw new UsageError(`unknown option '${given('chk', 'c')}' (srq_pingpong has no data check)`);
  if (kind !== 'srq' && values['num-qp'] !== undefined) throw new UsageError(`unknown option '${given('num-qp', 'q')}' (only srq has several QPs)`);
  // The C tools read their numbers with strtol(..., 0): decimal, 0x hex, 0-prefixed octal.
  const num = (name: keyof typeof OPTIONS, v: string | undefined, d: number, min: number, max: number) => {
    const short = (OPTIONS as Record<string, { short?: string }>)[name]!.short;
    return intOption(short ? `-${short}/--${name}` : `--${name}`, v, d, min, max, 'c');
  };
  const ud = kind === 'ud';
  const port = num('port', values.port, 18515, 0, 65535);
  const ibPort = num('ib-port', values['ib-port'], 1, 1, 1);
  // ud_pingpong.c's size is 1024 (its usage text says 2048; the code is what runs).
  const size = num('size', values.size, ud ? 1024 : 4096, 1, 1 << 30);
  const mtuBytes = num('mtu', values.mtu, 1024, 256, 4096);
  if (![256, 512, 1024, 2048, 4096].includes(mtuBytes)) throw new UsageError(`-m/--mtu must be 256, 512, 1024, 2048 or 4096, got '${values.mtu}'`);
  const mtu = mtuEnum(mtuBytes);
  const rxDepth = num('rx-depth', values['rx-depth'], 500, 1, 16384);
  const iters = num('iters', values.iters, 1000, 1, 2 ** 31 - 1);
  const sl = num('sl', values.sl, 0, 0, 15);
  const gidx = num('gid-idx', values['gid-idx'], 0, 0, 0);
  // srq_pingpong.c does not check -q against MAX_QP (its arrays would overflow): refused here.
  const numQp = num('num-qp', values['num-qp'], 16, 1, MAX_QP);
  if (kind === 'srq' && numQp > rxDepth) throw new Error(`rx_depth ${rxDepth} is too small for ${numQp} QPs -- must have at least one receive per QP.`);
  const bind = await resolveBindOption('--bind', values.bind ?? '127.0.0.1');
  const udpPort = num('udp-port', values['udp-port'], 4791, 0, 65535);

  let dev: Device;
  try {
    dev = await createRxeDevice({ address: bind, port: udpPort, name: values['ib-dev'] ?? 'rxe0' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    throw new Error(udpPortTaken(bind, udpPort, 'pingpong'));
  }
  const ctx = dev.open();
  let sock: net.Socket | undefined;
  // The TCP exchange; its socket closes when the run is over. An extension for scripts: with
  // -p 0 or --udp-port 0, the server says which ports it took.
  const announce = port === 0 || values['udp-port'] === '0'
    ? (tcpPort: number) => process.stderr.write(`listening: TCP port ${tcpPort}, UDP port ${rxeOf(dev).port}\n`)
    : undefined;
  const exchange = async (mine: Buffer, theirLength: number, beforeAnswer: (theirs: Buffer) => void): Promise<Buffer> => {
    const r = await exchangeDests({ servername, port, announce }, mine, theirLength, beforeAnswer);
    sock = r.sock;
    return r.theirs;
  };
  try {
    if (kind === 'srq') {
      return await srqPingpong(ctx, { servername, ibPort, size, mtu, numQp, rxDepth, iters, gidx, events: values.events === true, exchange }, out);
    }
    if (ud) {
      const portMtu = 128 << ctx.queryPort(ibPort).activeMtu;
      // pp_init_ctx: a message, no usage, exit 1.
      if (size > portMtu) throw new Error(`Requested size larger than port MTU (${portMtu})`);
    }
    const pd = ctx.allocPd();
    const buf = Buffer.alloc(ud ? size + GRH : size, 0x7b);
    const mr = pd.regMr(buf, Access.LOCAL_WRITE);
    const channel: CompChannel | undefined = values.events ? ctx.createCompChannel() : undefined;
    const cq: CQ = ctx.createCq(rxDepth + 1, { channel });
    const maxInline = 256;
    const qp: QP = pd.createQp({
      qpType: ud ? QpType.UD : kind === 'uc' ? QpType.UC : QpType.RC, sendCq: cq, recvCq: cq,
      cap: { maxSendWr: 1, maxRecvWr: rxDepth, maxSendSge: 1, maxRecvSge: 1, maxInlineData: maxInline },
    });
    const sendFlags = SendFlags.SIGNALED | (size <= maxInline ? SendFlags.INLINE : 0);
    initQp(qp, { portNum: ibPort, access: Access.LOCAL_WRITE, qkey: 0x11111111 });
    const recvSge = mr.sge(0, buf.length);
    const postRecv = (n: number) => {
      for (let i = 0; i < n; i++) qp.postRecv({ wrId: RECV_WRID, sgList: [recvSge] });
      return n;
    };
    let routs = postRecv(rxDepth);
    if (channel) cq.reqNotify();

    const my: Dest = { lid: ctx.queryPort(ibPort).lid, qpn: qp.qpn, psn: randomBytes(3).readUIntBE(0, 3), gid: ctx.queryGid(ibPort, gidx) };
    // ud_pingpong.c's line has a colon before the GID where rc's and uc's have a comma.
    out(`  local address:  LID 0x${hex(my.lid, 4)}, QPN 0x${hex(my.qpn, 6)}, PSN 0x${hex(my.psn, 6)}${ud ? ':' : ','} GID ${gidText(my.gid)}`);

    let ah: AH | undefined;
    const connect = (rem: Dest) => {
      if (ud) {
        connectQp(qp, { qpn: rem.qpn, psn: rem.psn, gid: rem.gid }, { psn: my.psn });
        ah = pd.createAh({ grh: { dgid: rem.gid, hopLimit: 64, sgidIndex: gidx }, isGlobal: true, portNum: ibPort, sl });
      } else {
        // As rc_pingpong: hop limit 1, one outstanding read/atomic, RNR timer 12 (uc_pingpong:
        // hop limit 1; connectQp leaves the RC-only attributes out of a UC QP's transitions).
        connectQp(qp, { qpn: rem.qpn, psn: rem.psn, gid: rem.gid }, {
          psn: my.psn, mtu, hopLimit: 1, sgidIndex: gidx, portNum: ibPort, maxRdAtomic: 1, maxDestRdAtomic: 1, minRnrTimer: 12, timeout: 14, retryCnt: 7, rnrRetry: 7,
        });
      }
    };

    const rem = decodeDest(await exchange(encodeDest(my), MSG_BYTES, (theirs) => connect(decodeDest(theirs))));
    out(`  remote address: LID 0x${hex(rem.lid, 4)}, QPN 0x${hex(rem.qpn, 6)}, PSN 0x${hex(rem.psn, 6)}, GID ${gidText(rem.gid)}`);
    if (servername) connect(rem);

    const sendSge = ud ? mr.sge(GRH, size) : mr.sge(0, size);
    const postSend = () => qp.postSend({
      wrId: SEND_WRID, opcode: WrOpcode.SEND, sendFlags, sgList: [sendSge],
      ...(ud ? { ud: { ah: ah!, remoteQpn: rem.qpn, remoteQkey: 0x11111111 } } : {}),
    });
    // -c, as rc_pingpong.c, uc_pingpong.c and ud_pingpong.c: the client writes
    // `i / page_size % sizeof(char)` at the start of each page, which is 0 for every page (the
    // modulus is 1), and the server checks the same after the run (what it received last).
    // Matching it keeps -c working against a C peer, whose buffers start as 0x7b.
    const data = ud ? GRH : 0;
    if (servername && values.chk) for (let i = 0; i < size; i += PAGE_SIZE) buf[data + i] = 0;

    let pending = RECV_WRID;
    if (servername) { postSend(); pending |= SEND_WRID; }
    const t0 = process.hrtime.bigint();
    let rcnt = 0, scnt = 0;
    const onWc = (wc: WorkCompletion) => {
      if (wc.status !== WcStatus.SUCCESS) throw new Error(`Failed status ${wcStatusStr(wc.status)} (${wc.status}) for wr_id ${wc.wrId}`);
      if (wc.wrId === SEND_WRID) scnt++;
      else if (wc.wrId === RECV_WRID) {
        if (--routs <= 1) routs += postRecv(rxDepth - routs);
        rcnt++;
      } else throw new Error(`Completion for unknown wr_id ${wc.wrId}`);
      pending &= ~Number(wc.wrId);
      if (scnt < iters && !pending) {
        postSend();
        pending = RECV_WRID | SEND_WRID;
      }
    };
    await driveCq(cq, channel, 2, () => rcnt >= iters && scnt >= iters, onWc, () => `${rcnt} received, ${scnt} sent`);
    const usec = Number(process.hrtime.bigint() - t0) / 1e3;
    const bytes = size * iters * 2;
    out(`${bytes} bytes in ${(usec / 1e6).toFixed(2)} seconds = ${((bytes * 8) / usec).toFixed(2)} Mbit/sec`);
    out(`${iters} iters in ${(usec / 1e6).toFixed(2)} seconds = ${(usec / iters).toFixed(2)} usec/iter`);
    if (!servername && values.chk) {
      for (let i = 0; i < size; i += PAGE_SIZE) if (buf[data + i] !== 0) out(`invalid data in page ${i / PAGE_SIZE}`);
    }
    return { usecPerIter: usec / iters, bytes };
  } finally {
    sock?.destroy();
    ctx.close();
    await dev.close();
  }
}
