// The numbers of the control path: object ids, method ids and each method's attribute ids
// (the role of Linux's ib_user_ioctl_cmds.h). The uapi registry declares what each id means;
// callers of ctx.invoke() name what they pass and read by these numbers.
//
// As in uverbs, attribute ids are per method: MR.REG's attribute 2 is its memory, CQ.CREATE's
// is its cqe. Attribute 0 is the object's own handle (given, or made by a create). Outputs
// have ids of their own, named RESP_*, never an input's. The input numbers are those of the
// flat table `A` that came before, so raw invoke() calls written against it still work; the
// outputs that used to share an input's number are numbered from 12, past all of that table.

/** Ids with this bit belong to a provider's driver namespace (uverbs' UVERBS_API_NS_FLAG). */
export const DRIVER_NS = 1 << 12;

/** Object ids, in uverbs' order (UVERBS_OBJECT_DEVICE, _PD, ...). */
export const Obj = { DEVICE: 0, PD: 1, COMP_CHANNEL: 2, CQ: 3, QP: 4, SRQ: 5, AH: 6, MR: 7, MW: 8 } as const;

/** Method ids; each object numbers its own. */
export const M = {
  DEVICE: { QUERY: 0, QUERY_PORT: 1, QUERY_GID_TABLE: 2, QUERY_PKEY: 3 },
  PD: { ALLOC: 0, DEALLOC: 1 },
  COMP_CHANNEL: { CREATE: 0, DESTROY: 1 },
  CQ: { CREATE: 0, DESTROY: 1, RESIZE: 2 },
  QP: { CREATE: 0, DESTROY: 1, MODIFY: 2, QUERY: 3 },
  SRQ: { CREATE: 0, DESTROY: 1, MODIFY: 2, QUERY: 3 },
  AH: { CREATE: 0, DESTROY: 1 },
  MR: { REG: 0, DEREG: 1, REREG: 2 },
  MW: { ALLOC: 0, DEALLOC: 1 },
} as const;

/** The handle of the object a method acts on, or of the one it makes. */
const HANDLE = 0;

/** Attribute ids, by object and method: `Attr.CQ.CREATE.CQE` (uverbs' UVERBS_ATTR_CREATE_CQ_CQE). */
export const Attr = {
  DEVICE: {
    QUERY: { RESP_DEVICE_ATTR: 1 },
    QUERY_PORT: { PORT_NUM: 2, RESP_PORT_ATTR: 3 },
    QUERY_GID_TABLE: { PORT_NUM: 2, RESP_ENTRIES: 4 },
    QUERY_PKEY: { PORT_NUM: 2, INDEX: 5, RESP_PKEY: 6 },
  },
  PD: {
    ALLOC: { HANDLE },
    DEALLOC: { HANDLE },
  },
  COMP_CHANNEL: {
    CREATE: { HANDLE },
    DESTROY: { HANDLE },
  },
  CQ: {
    CREATE: { HANDLE, CQE: 2, COMP_CHANNEL: 3, COMP_VECTOR: 4, RESP_CQE: 12 },
    RESIZE: { HANDLE, CQE: 2, RESP_CQE: 12 },
    DESTROY: { HANDLE },
  },
  QP: {
    CREATE: { HANDLE, PD_HANDLE: 1, QP_TYPE: 2, SEND_CQ: 3, RECV_CQ: 4, SRQ: 5, CAP: 6, SQ_SIG_ALL: 7, RESP_QP_NUM: 8, RESP_CAP: 12 },
    MODIFY: { HANDLE, ATTR_MASK: 9, ATTR: 10 },
    QUERY: { HANDLE, RESP_ATTR: 10 },
    DESTROY: { HANDLE },
  },
  SRQ: {
    CREATE: { HANDLE, PD_HANDLE: 1, MAX_WR: 2, MAX_SGE: 3, SRQ_LIMIT: 4 },
    MODIFY: { HANDLE, MAX_WR: 2, SRQ_LIMIT: 4, ATTR_MASK: 5 },
    QUERY: { HANDLE, RESP_SRQ_ATTR: 6 },
    DESTROY: { HANDLE },
  },
  AH: {
    CREATE: { HANDLE, PD_HANDLE: 1, AH_ATTR: 2 },
    DESTROY: { HANDLE },
  },
  MR: {
    REG: { HANDLE, PD_HANDLE: 1, MEMORY: 2, IOVA: 3, ACCESS_FLAGS: 4, RESP_LKEY: 5, RESP_RKEY: 6, RESP_IOVA: 12 },
    REREG: { HANDLE, PD_HANDLE: 1, MEMORY: 2, IOVA: 3, ACCESS_FLAGS: 4, FLAGS: 7, RESP_LKEY: 5, RESP_RKEY: 6, RESP_IOVA: 12 },
    DEREG: { HANDLE },
  },
  MW: {
    ALLOC: { HANDLE, PD_HANDLE: 1, TYPE: 2, RESP_RKEY: 6 },
    DEALLOC: { HANDLE },
  },
} as const;

/** MR.REREG's FLAGS: what the call changes (ibv_rereg_mr's IBV_REREG_MR_CHANGE_*). */
export const Rereg = { CHANGE_TRANSLATION: 1, CHANGE_PD: 2, CHANGE_ACCESS: 4 } as const;

/**
 * @deprecated The flat attribute table of softrdma 0.1, kept so code written against it keeps
 * working: each input id here is the same number in `Attr.<OBJECT>.<METHOD>` for the methods
 * that take that attribute. Outputs that shared an input's number (MR.REG's iova, QP.CREATE's
 * cap, CQ.CREATE's cqe) now have their own: read them as `Attr.MR.REG.RESP_IOVA` and so on.
 */
export const A = {
  HANDLE: 0,
  PD: 1,
  // MR
  MEM: 2, IOVA: 3, ACCESS: 4, LKEY: 5, RKEY: 6, REREG_FLAGS: 7, LENGTH: 8,
  // MW
  MW_TYPE: 2,
  // CQ
  CQE: 2, CHANNEL: 3, COMP_VECTOR: 4,
  // QP
  QP_TYPE: 2, SEND_CQ: 3, RECV_CQ: 4, SRQ: 5, CAP: 6, SQ_SIG_ALL: 7, QPN: 8, ATTR_MASK: 9, ATTR: 10, INIT_ATTR: 11,
  // SRQ
  MAX_WR: 2, MAX_SGE: 3, SRQ_LIMIT: 4, SRQ_MASK: 5, SRQ_ATTR: 6,
  // AH
  AH_ATTR: 2,
  // DEVICE
  DEVICE_ATTR: 1, PORT: 2, PORT_ATTR: 3, GID_TABLE: 4, PKEY_INDEX: 5, PKEY: 6,
} as const;
