// A server listening behind a plain TCP relay: a client on this host that reached an SMC
// listener's own port would get SMC-D; through the relay (from another local address) it gets
// SMC-R, the CLC handshake passing through unchanged.

import { once } from 'node:events';
import net from 'node:net';

/**
 * Listen with `server` on `host` (a port of its own), then a relay on `host` too (another port)
 * that forwards each connection to the server from `localAddress`. Returns the relay: clients
 * connect to its port.
 */
export async function listenBehindRelay(server: net.Server, host: string, localAddress: string): Promise<net.Server> {
  server.listen(0, host);
  await once(server, 'listening');
  const relay = net.createServer((c) => {
    const u = net.connect({ host, port: (server.address() as net.AddressInfo).port, localAddress });
    for (const x of [c, u]) x.on('error', () => {});
    c.pipe(u);
    u.pipe(c);
  });
  relay.listen(0, host);
  await once(relay, 'listening');
  return relay;
}
