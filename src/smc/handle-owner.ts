// Who owns an accepted TCP handle's reads during the SMC handshake. node:net links a handle to
// the Socket its reads go to through an own property (owner_symbol). An application may wrap
// an accepted handle in a new net.Socket({ handle }) (Node's own tests do); the new Socket then
// owns the reads, and a Proposal still on its way would reach it as data. So until the
// handshake settles, a new owner must join the handshake (socket.ts makes it an SMC socket
// sharing the state).
//
// The new Socket sets the handle's owner and then its `onread` (node:net's initSocketHandle),
// so the handle gets an own `onread` accessor that passes the store on to node's (the native
// accessor on the handle's prototype) and, while following, looks at the owner. Until
// 2026-12-04 the owner property itself became an accessor, and back to a value once the
// handshake settled: it exists on every handle from its creation (node's instance template),
// so redefining it turned every accepted handle into a dictionary-mode object, with two
// Object.defineProperty calls (~5 us) and slower property access in node's stream code for
// the rest of the connection, on every connection an SMC server accepted, SMC or not. Adding
// a property the handle does not have, with one getter and setter shared by all handles,
// leaves the handles one fast shape. The accessor stays for the handle's life; following
// ends with a plain store.

/** The SMC socket whose handshake a new owner joins; undefined once it settled. */
const kFollow = Symbol('softrdma.smc.followOwner');

interface OwnedHandle {
  [kFollow]?: object | undefined;
  [key: symbol]: unknown;
}

/** What a new owner does to the handshake of the socket it replaces (socket.ts sets it). */
let join: (sock: object, owner: unknown) => void = () => {};

export function setOwnerJoin(fn: (sock: object, owner: unknown) => void): void {
  join = fn;
}

/** node:net's owner_symbol, found once on a handle that has it. */
let ownerSymbol: symbol | null | undefined;

/** The prototype that holds node's `onread` accessor, for handles of one prototype (TCP). */
let holderOf: { proto: object; holder: object | null } | undefined;

function onreadHolder(h: object): object | null {
  const proto = Object.getPrototypeOf(h) as object | null;
  if (!proto) return null;
  if (holderOf?.proto !== proto) {
    let p: object | null = proto;
    while (p && !Object.prototype.hasOwnProperty.call(p, 'onread')) p = Object.getPrototypeOf(p) as object | null;
    holderOf = { proto, holder: p };
  }
  return holderOf.holder;
}

function getOnread(this: OwnedHandle): unknown {
  const holder = onreadHolder(this);
  return holder ? Reflect.get(holder, 'onread', this) : undefined;
}

function setOnread(this: OwnedHandle, v: unknown): void {
  const holder = onreadHolder(this);
  if (holder) Reflect.set(holder, 'onread', v, this);
  const sock = this[kFollow];
  if (sock === undefined || !ownerSymbol) return;
  const owner = this[ownerSymbol];
  if (owner !== sock) join(sock, owner);
}

const ONREAD: PropertyDescriptor = { get: getOnread, set: setOnread, configurable: true, enumerable: false };

/**
 * Until unfollow(handle), a new owner of the handle joins sock's handshake. Returns the handle,
 * or undefined when sock does not own it (nothing to follow).
 */
export function followOwner(handle: object, sock: object): object | undefined {
  const h = handle as OwnedHandle;
  ownerSymbol ??= Object.getOwnPropertySymbols(h).find((k) => k.description === 'owner_symbol') ?? null;
  if (!ownerSymbol || h[ownerSymbol] !== sock || !onreadHolder(h)) return undefined;
  if (!(kFollow in h)) Object.defineProperty(h, 'onread', ONREAD);
  h[kFollow] = sock;
  return h;
}

/** The handshake settled: owners change as on node:net from here on. */
export function unfollow(handle: object): void {
  (handle as OwnedHandle)[kFollow] = undefined;
}
