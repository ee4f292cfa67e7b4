import { createRxeDevice, connectQp, Access, QpType, WrOpcode, SendFlags, WcStatus, wcStatusStr, type Device } from 'softrdma';

// Two rxe devices in one process, like `rdma link add rxe0 type rxe netdev lo` on two hosts.
const devA = await createRxeDevice({ address: '127.0.0.2' });
const devB = await createRxeDevice({ address: '127.0.0.3' });

function open(dev: Device, memory: Buffer) {
  const ctx = dev.open();                                          // ibv_open_device
  const pd = ctx.allocPd();
  const cq = ctx.createCq(256);
  const mr = pd.regMr(memory, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const qp = pd.createQp({ qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 64, maxRecvWr: 64 } });
  return { ctx, cq, mr, qp };
}
const bufA = Buffer.alloc(1 << 20), bufB = Buffer.alloc(1 << 20);
const a = open(devA, bufA), b = open(devB, bufB);

// What the peers exchange out of band (perftest and rdma-core's examples use TCP): QPN, PSN,
// GID. connectQp takes each QP through INIT, RTR and RTS with the attributes each step needs.
connectQp(a.qp, { qpn: b.qp.qpn, psn: 0, gid: b.ctx.queryGid() });
connectQp(b.qp, { qpn: a.qp.qpn, psn: 0, gid: a.ctx.queryGid() });

// RDMA WRITE: A's bytes land in B's buffer, given its address and rkey; B's CPU is not involved.
bufA.write('hello over RoCEv2');
a.qp.postSend({ wrId: 1, opcode: WrOpcode.RDMA_WRITE, sendFlags: SendFlags.SIGNALED,
                sgList: [a.mr.sge(0, 4096)], rdma: { remoteAddr: b.mr.addr, rkey: b.mr.rkey } });
const wc = await a.cq.next();                                      // completions arrive on the event loop
if (wc.status !== WcStatus.SUCCESS) throw new Error(wcStatusStr(wc.status));
console.log(bufB.toString('utf8', 0, 17));                         // hello over RoCEv2

// SEND into a receive B posted. (`for await (const wc of cq)` takes completions as they come.)
b.qp.postRecv({ wrId: 2, sgList: [b.mr.sge(8192, 64)] });
a.qp.postSend({ wrId: 3, opcode: WrOpcode.SEND, sendFlags: SendFlags.SIGNALED, sgList: [a.mr.sge(0, 5)] });
const [sent, received] = await Promise.all([a.cq.next(), b.cq.next()]);
console.log(sent.wrId, received.wrId, received.byteLen, bufB.toString('utf8', 8192, 8192 + received.byteLen));  // 3 2 5 hello

// Errors are VerbsErrors naming the object, method and attribute.
try {
  a.ctx.allocPd().regMr(Buffer.alloc(64), Access.REMOTE_WRITE);
} catch (err) {
  console.log((err as Error).message);
}

// Close what was opened (contexts and everything in them go with the device), and the
// program ends. Or devA.unref(), as with a socket, to let it end while the devices stay up.
await devA.close();
await devB.close();
