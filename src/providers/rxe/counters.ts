// Per-device and per-QP counters, named as in Linux rxe's hw_counters where one exists.

export function newDeviceCounters() {
  return {
    sent_pkts: 0,
    rcvd_pkts: 0,
    sent_bytes: 0,
    rcvd_bytes: 0,
    duplicate_request: 0,
    out_of_seq_request: 0,
    rcvd_rnr_err: 0,
    send_rnr_err: 0,
    rcvd_seq_err: 0,
    retry_exceeded_err: 0,
    retry_rnr_exceeded_err: 0,
    completer_retry_err: 0,
    send_err: 0,
    ack_deferred: 0,
    /** Last packets of SENDs and WRITEs sent without AckReq because a later packet of the same burst asked (one ACK covers both). */
    ack_req_coalesced: 0,
    /** Times the requester went past its window because no packet in flight asked for an ACK: one packet that asks, or a short message whole (requester.ts). */
    window_forced_asks: 0,
    rdma_sends: 0,
    rdma_recvs: 0,
    link_downed: 0,
    icrc_errors: 0,
    /** IPv4 packets whose ICRC matched only under an inferred IP Identification (a kernel rxe or NIC peer, or a GSO segment after the first). */
    icrc_id_inferred: 0,
    /** UDP GSO sends, and the packets they carried (runs of equal-size packets to one peer). */
    gso_sends: 0,
    gso_packets: 0,
    /** Datagrams the kernel handed over whole under UDP GRO, and the packets split out of them. */
    gro_datagrams: 0,
    gro_packets: 0,
    /** recvmmsg calls that returned datagrams, when the device socket is read that way (mmsg-receiver.ts; 0 with node:dgram's events). */
    recvmmsg_batches: 0,
    /** Of those, the batches an empty CQ's poll read (busy polling, cq.ts) rather than the event loop. */
    busy_poll_batches: 0,
    /** sendmmsg calls this device's flushes made (mmsg-sender.ts; 0 on node:dgram's path). */
    sendmmsg_calls: 0,
    /** Receive errors the socket reported (recvmmsg's path: a failed call, or a datagram too large for a slot). */
    recv_err: 0,
    /** QPs that send from the device port because their own source port could not be bound (or too many are in use). */
    sport_unavailable: 0,
    malformed_drops: 0,
    /** WQEs the send path failed because building a packet threw (a bug: post_send should have refused the WR): LOC_QP_OP_ERR, reported on softrdma:rxe:requester-error. */
    requester_errors: 0,
    unknown_qp_drops: 0,
    /** Packets for a connected (RC/UC) QP from an address other than its path's (Linux rxe's check_addr; it counts none). */
    addr_mismatch_drops: 0,
    qp_state_drops: 0,
    qkey_drops: 0,
    /** QP1 (the GSI, gsi.ts): MADs sent and received; received packets with another Q_Key than the GSI's (Linux: the port's qkey_viol_cntr). */
    gsi_sent_mads: 0,
    gsi_rcvd_mads: 0,
    gsi_qkey_drops: 0,
    /** Packets for QP1 that are no MAD: not a UD opcode, or a payload other than 256 bytes. */
    gsi_malformed_drops: 0,
    /** MADs whose consumer (the MAD layer) threw: a bug there, reported on softrdma:rxe:receive-error. */
    gsi_handler_errors: 0,
    no_recv_wqe_drops: 0,
    unexpected_response_drops: 0,
    /** RC request packets dropped because too many were already held behind a read being answered (responder.ts MAX_HELD). */
    resp_held_drops: 0,
    fault_dropped: 0,
    fault_duplicated: 0,
    fault_reordered: 0,
    fault_corrupted: 0,
    cq_overflows: 0,
  };
}
export type DeviceCounters = ReturnType<typeof newDeviceCounters>;

export function newQpCounters() {
  return {
    sent_pkts: 0,
    rcvd_pkts: 0,
    sent_bytes: 0,
    rcvd_bytes: 0,
    retransmits: 0,
    timeouts: 0,
    rnr_naks_sent: 0,
    rnr_naks_rcvd: 0,
    seq_naks_sent: 0,
    seq_naks_rcvd: 0,
    duplicates: 0,
    acks_sent: 0,
    acks_rcvd: 0,
    /** Packets dropped because they came from an address other than this QP's path. */
    addr_mismatch_drops: 0,
  };
}
export type QpCounters = ReturnType<typeof newQpCounters>;
