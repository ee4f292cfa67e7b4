// softrdma/cm: the rdma_cm API over softrdma's IB CM (QP1, the CM agent), wire-compatible with
// Linux's rdma_cm. Devices are the process's rxe devices (createRxeDevice from 'softrdma').
export * from './rdma-cm/index.js';
export { RDMA_UDP_QKEY, PortSpace, serviceIdFor } from './wire/cma-header.js';
export { RejReason, rejReasonName, SidrStatus, sidrStatusName } from './wire/cm-messages.js';
