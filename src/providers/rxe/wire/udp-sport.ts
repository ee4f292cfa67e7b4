// The UDP source port of a QP's packets. RoCEv2 fixes only the destination port (4791); the
// source port carries entropy so that switches (ECMP) and NIC receive queues spread QPs while
// each QP stays one flow, in order. Linux rxe's rule, followed here so captures look alike:
//   - at create: 0xC000 + (hash_32(qpn, 14) & 0x3fff)
//   - when modify_qp sets a path (AV with a GRH): rdma_get_udp_sport(flow_label, qpn,
//     dest_qpn), which derives a flow label from both QPNs when the AV has none. That label
//     is symmetric, so both ends of an RC connection send from the same port.
// The result is always in the dynamic range 0xC000-0xFFFF.

const DYNAMIC_PORT_MIN = 0xc000;
/** Linux include/linux/hash.h GOLDEN_RATIO_32. */
const GOLDEN_RATIO_32 = 0x61c88647;
const FLOW_LABEL_MASK = 0xfffff;

/** Linux hash_32(val, bits): the top `bits` of val × GOLDEN_RATIO_32 (mod 2^32). */
export function hash32(val: number, bits: number): number {
  return Math.imul(val >>> 0, GOLDEN_RATIO_32) >>> (32 - bits);
}

/** The port a QP sends from until a path is set. */
export function initialSourcePort(qpn: number): number {
  return DYNAMIC_PORT_MIN + (hash32(qpn, 14) & 0x3fff);
}

/** rdma_calc_flow_label: fold the 48-bit product of the two QPNs into 20 bits. */
export function flowLabelOf(lqpn: number, rqpn: number): number {
  let v = BigInt(lqpn >>> 0) * BigInt(rqpn >>> 0);
  v ^= v >> 20n;
  v ^= v >> 40n;
  return Number(v & BigInt(FLOW_LABEL_MASK));
}

/** rdma_flow_label_to_udp_sport: fold the 20-bit label into 14 bits in the dynamic range. */
export function sourcePortOfFlowLabel(fl: number): number {
  const low = fl & 0x3fff;
  const high = fl & 0xfc000;
  return ((low ^ (high >>> 14)) | DYNAMIC_PORT_MIN) & 0xffff;
}

/** rdma_get_udp_sport: the port of a connected QP, from the AV's flow label or both QPNs. */
export function connectedSourcePort(flowLabel: number, lqpn: number, rqpn: number): number {
  const fl = (flowLabel & FLOW_LABEL_MASK) || flowLabelOf(lqpn, rqpn);
  return sourcePortOfFlowLabel(fl);
}
