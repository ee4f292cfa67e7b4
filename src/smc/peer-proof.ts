// Who a server pairs with. A Proposal names the client's ism GID, and nothing in TCP says the
// sender owns that device: any local process, of any user, could connect and name another
// process's GID, have the server allocate DMBs "for" it, and use up the DMB slots, so the
// owner's own clients fall back to TCP. So a server checks, before it allocates anything, that
// the Proposal comes from a process that can read the GID's registry entry, i.e. a process of
// this user (the entry is a file of this user in the owner-only runtime directory).
//
// How: each ism device has a 256-bit random key, written only into its registry entry. The
// client puts HMAC-SHA256(key, GID + this TCP connection's 4-tuple), first 16 bytes, into its
// Proposal (in reserved bytes of the SMC-D area, see clc.ts); the server reads the key from
// the entry of the GID the Proposal names and compares (timing-safe). Bound to the 4-tuple, a
// proof is worth nothing on any other connection.
//
// Why this and not the alternatives: per connection it costs one HMAC on each side (~2 us)
// and the socket addresses the server's node:net socket caches anyway (getsockname and
// getpeername, once each); the entry is read once per peer device, as the reachability check
// did before. Asking the kernel who holds the client's socket (sock_diag netlink by exact
// 4-tuple for the uid and inode, then /proc/<pid>/fd of the GID's process for the inode) needs
// a netlink socket through FFI, the tcp_diag module, and a scan of the peer's fd table that
// grows with its connections (O(n) per connection). A nonce proved through the client's own
// DMB needs another round trip. The proof names a user, not a process: any process of the
// same user can read any of the user's entries, and is trusted as a peer (as it can ptrace).
//
// A Proposal that fails the check is declined with SMC_CLC_DECL_NOSMCDDEV (0x03030001), the
// code Linux gives when its ISM devices cannot reach the GID a Proposal names, and the
// connection stays TCP; the device counts it (stats.proposalsRefused).

import type net from 'node:net';
import type { IsmDevice } from '../ism/device.js';
import { DECLINE, type Proposal } from './clc.js';
import { unmapV4 } from '../abi/inet.js';
import { peerName } from './state.js';

function connection(clientAddress: string | undefined, clientPort: number | undefined, serverAddress: string | undefined, serverPort: number | undefined): string {
  return `${unmapV4(clientAddress ?? '')} ${clientPort ?? 0} ${unmapV4(serverAddress ?? '')} ${serverPort ?? 0}`;
}

/** The proof a client puts into its Proposal on this (connected) socket. */
export function proposalProof(device: IsmDevice, sock: net.Socket): Buffer {
  const peer = peerName(sock); // not sock.remoteAddress: node:net would keep it past 'close'
  return device.proposalProof(connection(sock.localAddress, sock.localPort, peer.address, peer.port));
}

/** 0 if the Proposal received on this (accepted) socket comes from the device it names, else the Decline reason. */
export function checkProposal(device: IsmDevice, p: Proposal, sock: net.Socket): number {
  if (!p.smcdGid) return DECLINE.NOSMCDDEV;
  const peer = peerName(sock);
  const ok = device.verifyProposal(p.smcdGid, connection(peer.address, peer.port, sock.localAddress, sock.localPort), p.proof);
  return ok ? 0 : DECLINE.NOSMCDDEV;
}
