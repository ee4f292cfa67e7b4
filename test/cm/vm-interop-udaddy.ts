// Interop with the kernel's udaddy (rdma-core's librdmacm/examples/udaddy.c) over softrdma/cm's
// UDP port space: SIDR_REQ/SIDR_REP, then UD datagrams both ways. Not part of the suite; run in
// the rxe VM's namespace by scripts/interop/rping.sh:
//   node dist/test/cm/vm-interop-udaddy.js server LOCAL [count]         (guest: udaddy -s LOCAL -b GUEST)
//   node dist/test/cm/vm-interop-udaddy.js client LOCAL GUEST [count]   (guest: udaddy -b GUEST)
// udaddy's exchange: the client SENDs `count` 100-byte messages WITH_IMM (its QPN), the server,
// having received them, makes an AH from the first one's GRH and SENDs `count` back WITH_IMM.
// Prints one JSON line: what was received, from which QPN, and the SIDR result.

import { Access, SendFlags, WcOpcode, WcStatus, WrOpcode, createRxeDevice, type CQ, type WorkCompletion } from '../../src/index.js';
import { createEventChannel, createId, RDMA_UDP_QKEY, type RdmaCmId } from '../../src/cm/index.js';

const [mode, local, a3, a4] = process.argv.slice(2);
const guest = mode === 'client' ? a3! : undefined;
const count = Number((mode === 'client' ? a4 : a3) ?? 10);
const SIZE = 100, GRH = 40, PORT = 7174;

const dev = await createRxeDevice({ address: local! });
const ch = createEventChannel();
const out: Record<string, unknown> = { mode, local, count };

async function completions(cq: CQ, n: number, ms = 30_000): Promise<WorkCompletion[]> {
  const got: WorkCompletion[] = [];
  const timer = AbortSignal.timeout(ms);
  while (got.length < n) got.push(await cq.next({ signal: timer }));
  return got;
}

function setup(id: RdmaCmId) {
  const pd = id.verbs!.allocPd();
  const cq = id.verbs!.createCq(2 * count + 4);
  const qp = id.createQp(pd, { sendCq: cq, recvCq: cq, cap: { maxSendWr: count + 1, maxRecvWr: count + 1, maxSendSge: 1, maxRecvSge: 1 } });
  const mem = Buffer.alloc(SIZE + GRH);
  const mr = pd.regMr(mem, Access.LOCAL_WRITE);
  for (let i = 0; i < count; i++) qp.postRecv({ wrId: BigInt(i), sgList: [mr.sge()] });
  return { pd, cq, qp, mem, mr };
}

try {
  if (mode === 'server') {
    const l = createId(ch, 'udp');
    l.bindAddr(local!, PORT);
    l.listen();
    console.error('listening');
    const req = await ch.next('CONNECT_REQUEST', 120_000);
    const s = setup(req.id);
    req.id.accept({});
    out.sidr = 'SIDR_REP sent';
    const rx = await completions(s.cq, count);
    out.received = rx.filter((w) => w.status === WcStatus.SUCCESS && w.opcode === WcOpcode.RECV && w.byteLen === SIZE + GRH).length;
    out.fromQpn = rx[0]!.immData;
    out.srcQp = rx[0]!.srcQp;
    // udaddy's create_reply_ah (ibv_init_ah_from_wc): the peer's GID from the 40 bytes before the
    // data: over RoCEv2 IPv4 the IP header in their last 20 (source address at 32), over IPv6 the
    // IPv6 header (source address at 8); its QPN from the immediate.
    const v4 = s.mem[20]! >> 4 === 4;
    const dgid = v4 ? Buffer.concat([Buffer.from('00000000000000000000ffff', 'hex'), s.mem.subarray(32, 36)]) : Buffer.from(s.mem.subarray(8, 24));
    const ah = s.pd.createAh({ grh: { dgid, hopLimit: 64 }, isGlobal: true, portNum: 1 });
    for (let i = 0; i < count; i++) {
      s.qp.postSend({ wrId: 100n, opcode: WrOpcode.SEND_WITH_IMM, immData: s.qp.qpn, sendFlags: SendFlags.SIGNALED, sgList: [s.mr.sge(0, SIZE)], ud: { ah, remoteQpn: rx[0]!.immData!, remoteQkey: RDMA_UDP_QKEY } });
    }
    const tx = await completions(s.cq, count);
    out.sent = tx.filter((w) => w.status === WcStatus.SUCCESS).length;
    req.id.destroyId();
    l.destroyId();
  } else {
    const id = createId(ch, 'udp');
    id.resolveAddr({ address: guest!, port: PORT }, local);
    await ch.next('ADDR_RESOLVED', 5000, id);
    id.resolveRoute();
    await ch.next('ROUTE_RESOLVED', 5000, id);
    const c = setup(id);
    id.connect();
    const e = await ch.next(['ESTABLISHED', 'UNREACHABLE'], 60_000, id);
    out.sidr = e.event === 'ESTABLISHED' ? { qpn: e.ud!.qpNum, qkey: `0x${e.ud!.qkey.toString(16)}` } : { event: e.event, status: e.status, reason: e.reason };
    if (e.event === 'ESTABLISHED') {
      const ah = c.pd.createAh({ grh: { dgid: e.ud!.dgid, hopLimit: e.ud!.hopLimit, flowLabel: e.ud!.flowLabel }, isGlobal: true, portNum: 1 });
      for (let i = 0; i < count; i++) {
        c.qp.postSend({ wrId: 100n, opcode: WrOpcode.SEND_WITH_IMM, immData: c.qp.qpn, sendFlags: 0, sgList: [c.mr.sge(0, SIZE)], ud: { ah, remoteQpn: e.ud!.qpNum, remoteQkey: e.ud!.qkey } });
      }
      const rx = await completions(c.cq, count);
      out.received = rx.filter((w) => w.status === WcStatus.SUCCESS && w.opcode === WcOpcode.RECV && w.byteLen === SIZE + GRH).length;
      out.fromQpn = rx[0]!.immData;
      out.qpnMatches = rx.every((w) => w.immData === e.ud!.qpNum);
    }
    id.destroyId();
  }
  out.ok = out.received === count;
} catch (err) {
  out.error = String(err);
  out.ok = false;
}
console.log(JSON.stringify(out));
ch.close();
await dev.close();
process.exitCode = out.ok ? 0 : 1;
