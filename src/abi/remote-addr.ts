// A peer's 64-bit virtual address as a work request takes it (SendWr rdma/atomic remoteAddr):
// a number while every offset added to it stays exact, a bigint beyond. Kernel peers hand out
// addresses above 2^53 (Linux SMC-R's RMBs are at 0xffff8880...), where a number has already
// lost its low bits: a write meant for offset 100 would land at offset 0.

export type RemoteAddr = number | bigint;

/** Offsets added to a number address stay below 2^32 (a message or buffer length). */
const NUMBER_LIMIT = BigInt(Number.MAX_SAFE_INTEGER) - 0xffffffffn;

/** The address as a number if it and anything up to 4 GiB past it are exact, else as given. */
export function remoteAddr(v: bigint): RemoteAddr {
  return v >= 0n && v <= NUMBER_LIMIT ? Number(v) : BigInt.asUintN(64, v);
}

/** addr + offset, in the address's own type. */
export function remoteAddrPlus(addr: RemoteAddr, offset: number): RemoteAddr {
  return typeof addr === 'bigint' ? BigInt.asUintN(64, addr + BigInt(offset)) : addr + offset;
}
