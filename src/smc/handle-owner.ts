// Who owns an accepted TCP handle's reads during the SMC handshake. node:net links a handle to
// the Socket its reads go to through an own property (owner_symbol). An application may wrap
// an accepted handle in a new net.Socket({ handle }) (Node's own tests do); the new Socket then
// owns the reads, and a Proposal still on its way would reach it as data. So until the
// handshake settles, a new owner must join the handshake (socket.ts makes it an SMC socket
// sharing the state).
//
// node:net's initSocketHandle sets the handle's owner and then asks the handle for its async
// id (handle.getAsyncId()); the handle gets an own getAsyncId, one function shared by all
// handles, that looks at the owner while following and then answers as the prototype's. It
// is a plain property store: the handle keeps a fast shape. Until 2026-12-04 the owner
// property itself became an accessor, and back to a value once the handshake settled; it
// exists on every handle from its creation (node's instance template), so redefining it turned
// every accepted handle into a dictionary-mode object, with two Object.defineProperty calls
// and slower property access in node's stream code for the rest of the connection, on every
// connection an SMC server accepted, SMC or not. (An own `onread` accessor, which
// initSocketHandle also sets after the owner, kept the shape fast but still took an
// Object.defineProperty per connection and a Reflect.set into node's native accessor when the
// socket closed: ~2% of a short connection's CPU time.)

/** The SMC socket whose handshake a new owner joins; undefined once it settled. */
const kFollow = Symbol('softrdma.smc.followOwner');

interface OwnedHandle {
  [kFollow]?: object | undefined;
  [key: symbol]: unknown;
  getAsyncId?: () => number;
}

/** What a new owner does to the handshake of the socket it replaces (socket.ts sets it): true if it joined. */
let join: (sock: object, owner: unknown) => boolean = () => false;

export function setOwnerJoin(fn: (sock: object, owner: unknown) => boolean): void {
  join = fn;
}

/** node:net's owner_symbol, found once on a handle that has it. */
let ownerSymbol: symbol | null | undefined;

/** The prototypes' getAsyncId, for handles of one prototype (TCP). */
let protoOf: { proto: object; getAsyncId: (() => number) | undefined } | undefined;

function protoGetAsyncId(h: object): (() => number) | undefined {
  const proto = Object.getPrototypeOf(h) as { getAsyncId?: unknown } | null;
  if (!proto) return undefined;
  if (protoOf?.proto !== proto) protoOf = { proto, getAsyncId: typeof proto.getAsyncId === 'function' ? proto.getAsyncId as () => number : undefined };
  return protoOf.getAsyncId;
}

function getAsyncIdFollowing(this: OwnedHandle): number {
  const sock = this[kFollow];
  if (sock !== undefined) {
    const owner = this[ownerSymbol!];
    // The owner that joined is the one a later owner replaces (a handle wrapped twice).
    if (owner !== sock && join(sock, owner)) this[kFollow] = owner as object;
  }
  return protoGetAsyncId(this)!.call(this);
}

/**
 * Until unfollow(handle), a new owner of the handle joins sock's handshake. Returns the handle,
 * or undefined when sock does not own it (nothing to follow).
 */
export function followOwner(handle: object, sock: object): object | undefined {
  const h = handle as OwnedHandle;
  ownerSymbol ??= Object.getOwnPropertySymbols(h).find((k) => k.description === 'owner_symbol') ?? null;
  if (!ownerSymbol || h[ownerSymbol] !== sock) return undefined;
  if (h.getAsyncId !== getAsyncIdFollowing) {
    if (!protoGetAsyncId(h)) return undefined;
    h.getAsyncId = getAsyncIdFollowing;
  }
  h[kFollow] = sock;
  return h;
}

/** The handshake settled: owners change as on node:net from here on. */
export function unfollow(handle: object): void {
  (handle as OwnedHandle)[kFollow] = undefined;
}
