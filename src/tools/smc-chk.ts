// `softrdma smc-chk <host> <port>`: smc-tools' smc_chk -C for softrdma. It connects to a
// service with softrdma/smc, waits until the connection settles, and says in words whether
// it got SMC (SMC-D with a local peer, SMC-R with another host) and, if not, why: the local fallback reason, the peer's Decline reason (as
// smc_chk reports "Client:" and "Server:", with smcss(8)'s descriptions), the cause in
// softrdma's own words, and what to do about it. `-S` starts a server to check against (an SMC
// listener that reads and drops what it is sent), as smc_chk -S does.

import type net from 'node:net';
import { lookup } from 'node:dns/promises';
import { interfaceAddresses } from '../smc/interfaces.js';
import { runtimeDirName } from '../ism/runtime-dir.js';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { connect, createServer, DECLINE, type SmcInfo } from '../smc/index.js';
import { getoptArgs, intOption, MAX_TIMER_SEC, UsageError } from './usage.js';
import { describeDecline } from './decline-text.js';

export const SMC_CHK_USAGE = `usage: softrdma smc-chk [options] <host> <port>
       softrdma smc-chk [options] -C <host> [-p <port>]
       softrdma smc-chk -S [-6] [-p <port>]

Check SMC with a service: connect to it with softrdma/smc and tell whether the connection
uses SMC-D (a service on this host) or SMC-R (another host) and, if it fell back to TCP, why
and what to do about it (like smc_chk -C).
Exit code 0: SMC-D or SMC-R; 1: TCP fallback, no connection, or an unknown host (smc_chk
exits 0 after a fallback); 2: bad options.

  -C, --connect HOST   the service's host (or give host and port as arguments); a name is
                       resolved first, as smc_chk does, and the test uses its first address
  -p, --port PORT      its port (default 37373, as smc_chk's)
  -S, --server         start an SMC server on PORT (0: any free port) to check against;
                       it prints "Server started on port N" and runs until interrupted
  -6, --ipv6           with -S: listen on IPv6 only (with -C the address decides, as in smc_chk)
  -d, --debug          show the connection's SMC state as JSON (getSmcInfo)
  -t, --timeout SEC    give up on connecting after SEC seconds (default 10)
  -v, --version        version;  -h, --help  this help`;

const DEFAULT_PORT = 37373;

function isLocal(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host.startsWith('127.')) return true;
  return interfaceAddresses().some((i) => i.address === host || i.address === `::ffff:${host}`);
}

/** What to do, for a fallback on the client side: by softrdma's cause, then by the codes. */
export function advice(info: SmcInfo, host: string, port: number): string[] {
  const cause = info.fallbackCause ?? '';
  const peer = info.peerDeclineReason;
  if (cause === 'peer is not an SMC listener') {
    if (!isLocal(host)) {
      return [`${host} is not an address of this host, so only SMC-R can reach it, and that needs the server to run`,
        "softrdma/smc with SMC-R (the default) and to answer discovery (SIDR on UDP 4791 of its address: see the",
        "README's SMC-R section); a Linux host's own SMC cannot answer it. The fallback reasons above say more."];
    }
    return [`No SMC listener is registered for port ${port} on this host (the registry in the runtime directory). Either the`,
      "server does not use softrdma/smc: start it with 'softrdma smc-run node server.js', or create it with",
      "softrdma/smc's createServer(); or it runs as another user, or in another network or pid namespace, which SMC-D",
      'does not reach (see README, Security).'];
  }
  if (cause === 'server wrote first') {
    return ['The server sent data before answering the SMC proposal (a protocol where the server speaks first, such as',
      'SSH or SMTP, or a server that is not SMC-capable). Such a connection stays TCP.'];
  }
  if (cause === 'handshake timed out') {
    return ['The server did not answer the SMC proposal in time (busy, or its event loop blocked). Retry, or raise the',
      'handshake timeout (smcHandshakeTimeout).'];
  }
  if (cause.startsWith('runtime directory refused')) {
    return ["softrdma's runtime directory failed its checks (owner, mode 0700, no symbolic links): fix or remove it",
      `(${runtimeDirName()}; another user may have made it first) and retry, or set SOFTRDMA_RUNTIME_DIR to a directory of your own.`];
  }
  if (cause === 'no ism device') return ['The shared-memory (ism) device could not be opened: see NODE_DEBUG=smc output (smc-chk -d).'];
  if (cause === 'disabled' || cause === 'policy') return [`SMC was turned off for this connection (${cause}): check SOFTRDMA_SMC and any smcPolicy.`];
  if (peer === DECLINE.NOSMCDDEV) {
    return ['The server could not verify this process as an SMC-D peer (no live device entry, or a wrong proof): both',
      'must run as the same user, in the same pid namespace, with the same runtime directory.'];
  }
  if (peer === DECLINE.MAX_DMB) {
    return ['The server holds its limit of buffers for this peer (SOFTRDMA_SMC_MAX_DMBS_PER_PEER, default 1024): close',
      'connections, or raise the limit on the server.'];
  }
  if (peer !== undefined) return ['The server declined SMC; its reason is above.'];
  return [];
}

/**
 * The live test's line, smc_chk's in its connect mode (-C): softrdma/smc's client tries both, SMC-D
 * with a service on this host and SMC-R with one on another.
 */
const LIVE_TEST = '  Live test (SMC-D and SMC-R)';

export function report(info: SmcInfo, host: string, port: number): string[] {
  const out = [`Test with target IP ${host} and port ${port}`, LIVE_TEST];
  if (info.mode === 'SMCD') {
    out.push('     Success, using SMC-D', `     (buffers: ${info.bufferSize} bytes to receive, ${info.peerBufferSize} bytes at the peer)`);
    return out;
  }
  if (info.mode === 'SMCR') {
    const l = info.smcr?.link;
    out.push('     Success, using SMC-R', `     (buffers: ${info.bufferSize} bytes to receive, ${info.peerBufferSize} bytes at the peer` +
      (l ? `; link ${l.id} on ${l.ibDev}, QP 0x${l.qpn.toString(16)} to 0x${l.peerQpn.toString(16)})` : ')'));
    return out;
  }
  out.push('     Failed  (TCP fallback), reasons:');
  if (info.fallbackReason !== undefined) out.push(`          Client: ${describeDecline(info.fallbackReason)}`);
  if (info.peerDeclineReason !== undefined) out.push(`          Server: ${describeDecline(info.peerDeclineReason)}`);
  if (info.fallbackCause) out.push(`          Cause:  ${info.fallbackCause}`);
  const what = advice(info, host, port);
  if (what.length) out.push('     What to do:', ...what.map((l) => `          ${l}`));
  return out;
}

async function serve(port: number, ipv6: boolean): Promise<number> {
  const server = createServer((s) => { s.on('error', () => {}); s.resume(); });
  // smc_chk -S -6: its server binds an AF_INET6 socket; without -6 ours takes both families.
  server.listen(ipv6 ? { port, host: '::', ipv6Only: true } : { port });
  await once(server, 'listening');
  console.log(`Server started on port ${(server.address() as net.AddressInfo).port}`);
  await new Promise<void>((resolve) => {
    const stop = () => { server.close(); resolve(); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

export const SMC_CHK_OPTIONS = {
  connect: { type: 'string', short: 'C' }, port: { type: 'string', short: 'p' }, server: { type: 'boolean', short: 'S' },
  debug: { type: 'boolean', short: 'd' }, timeout: { type: 'string', short: 't' }, ipv6: { type: 'boolean', short: '6' },
} as const;

/**
 * `softrdma smc-chk`. Usage errors exit 2 (smc_chk's when getopt fails); no host and no -S prints
 * the usage and exits 0, as smc_chk without a mode; a host that does not resolve is smc_chk's
 * `Error: Unknown destination '<name>'`, exit 1.
 */
export async function smcChk(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: getoptArgs(args, SMC_CHK_OPTIONS), allowPositionals: true, options: SMC_CHK_OPTIONS });
  // smc_chk's -C HOST -p PORT, or HOST PORT as arguments.
  const rest = [...positionals];
  const name = values.server ? undefined : values.connect ?? rest.shift();
  const portText = values.port ?? rest.shift();
  if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
  const port = intOption(values.port !== undefined ? '-p/--port' : 'the port', portText, DEFAULT_PORT, 0, 65535);
  if (values.server) {
    if (values.connect !== undefined) {
      // set_mode(): the mode given first, then the other.
      const first = args.findIndex((a) => /^(-S|--server)$/.test(a)) < args.findIndex((a) => /^(-C|--connect)/.test(a));
      const [a, b] = first ? ["'-S/--server'", "'-C/--connect'"] : ["'-C/--connect'", "'-S/--server'"];
      throw new UsageError(`Error: Cannot combine options ${a} and ${b}`, { bare: true, exitCode: 1 });
    }
    return serve(port, values.ipv6 === true);
  }
  if (name === undefined) {
    console.log(SMC_CHK_USAGE);
    return 0;
  }
  if (port === 0) throw new UsageError('port 0 is not a service');
  // Whole seconds, within what a timer takes (a larger value would fire at once, with a warning).
  const timeoutMs = intOption('-t/--timeout', values.timeout, 10, 1, MAX_TIMER_SEC) * 1000;
  // smc_chk: ip="`getent ahosts $2 | awk '{print($1)}' | head -1`" (getaddrinfo's first answer).
  let host: string;
  try {
    host = (await lookup(name)).address;
  } catch {
    console.log(`Error: Unknown destination '${name}'`);
    return 1;
  }

  const sock = connect({ host, port, smc: true });
  const info = await new Promise<SmcInfo | Error>((resolve) => {
    const timer = setTimeout(() => resolve(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
    sock.once('smc', (i: SmcInfo) => { clearTimeout(timer); resolve(i); });
    sock.once('error', (e) => { clearTimeout(timer); resolve(e); });
  });
  sock.destroy();
  if (info instanceof Error) {
    console.log(`Test with target IP ${host} and port ${port}\n${LIVE_TEST}\n     Failed, no connection: ${(info as NodeJS.ErrnoException).code ?? info.message}\n`);
    return 1;
  }
  for (const l of report(info, host, port)) console.log(l);
  if (values.debug) console.log(`     [debug] getSmcInfo: ${JSON.stringify(info)}`);
  console.log(''); // test_iface's closing echo
  return info.mode === 'SMCD' || info.mode === 'SMCR' ? 0 : 1;
}
