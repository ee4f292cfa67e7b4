// The rdma_cm API (librdmacm's model): event channels, ids, and the events they deliver.
export { createEventChannel, EventChannel, type EventChannelEvents } from './event-channel.js';
export { createId, RdmaCmId, type RdmaCmState } from './cm-id.js';
export type { ConnParam, CreateIdOptions, CmQpInit } from './params.js';
export { RDMA_CM_EVENT, type RdmaCmEvent, type RdmaCmEventType, type ConnEventParam, type UdEventParam } from './events.js';
export type { PortSpaceName, SockAddr } from './addresses.js';
export type { CmPath } from './qp-transitions.js';
