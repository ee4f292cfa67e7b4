// perftest's out-of-band messages (perftest 6.06, perftest_communication.c) byte for byte,
// and what a softrdma side does when the peer sends something else: a clear error and exit
// status 1, within --timeout, never a hang or a crash.

import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import {
  decodeBwReport, decodeDest, decodeMtu, decodeVersion, DEST_BYTES, encodeBwReport, encodeDest, encodeInt32, encodeMtu, encodeVersion,
} from '../../src/tools/perftest/exchange.js';
import { run } from '../helpers/procs.js';

const GID = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 2]);

describe("perftest's exchange messages", () => {
  it('address message: KEY_PRINT_FMT_GID in 108 bytes, NUL-terminated', () => {
    const d = { lid: 0, outReads: 0x10, qpn: 0x11, psn: 0xabcdef, rkey: 0x1234, vaddr: 0x7f0000001000n, gid: GID, srqn: 0 };
    const b = encodeDest(d);
    assert.equal(b.length, DEST_BYTES);
    assert.equal(b.toString('latin1'), '0000:0010:000011:abcdef:00001234:00007f0000001000:00:00:00:00:00:00:00:00:00:00:ff:ff:0a:4d:00:02:00000000:\0');
    assert.deepEqual(decodeDest(b), d);
    // What a C peer sends for a 64-bit address and a full rkey.
    const c = Buffer.alloc(108);
    c.write('0000:0080:000012:0f00ba:ffffff01:00007ffd12345678:00:00:00:00:00:00:00:00:00:00:ff:ff:0a:4d:00:02:00000000:', 'latin1');
    const e = decodeDest(c);
    assert.equal(e.outReads, 0x80);
    assert.equal(e.rkey, 0xffffff01);
    assert.equal(e.vaddr, 0x7ffd12345678n);
    assert.throws(() => decodeDest(Buffer.alloc(108, 'x')), /malformed address message from the peer: 'x{107}/);
    assert.throws(() => decodeDest(Buffer.from(c.toString('latin1').replace('000012', '0000zz'), 'latin1')), /malformed address message/);
    assert.throws(() => decodeDest(c.subarray(0, 59)), /must be 108 bytes, got 59/);
  });

  it('version: 16 bytes, the number, then our mark after the NUL (atof on the C side stops at the NUL)', () => {
    assert.equal(encodeVersion(false).toString('hex'), Buffer.from('6.06\0\0\0\0\0\0\0\0\0\0\0\0', 'latin1').toString('hex'));
    assert.equal(encodeVersion(true).toString('latin1'), '6.06\0softrdma/1\0');
    assert.deepEqual(decodeVersion(encodeVersion(true)), { version: '6.06', number: 6.06, softrdma: true });
    assert.deepEqual(decodeVersion(encodeVersion(false)), { version: '6.06', number: 6.06, softrdma: false });
    assert.equal(decodeVersion(Buffer.from('5.60\0\0\0\0\0\0\0\0\0\0\0\0', 'latin1')).number, 5.6);
    assert.equal(decodeVersion(Buffer.from('garbage garbage\0', 'latin1')).number, 0);
    assert.equal(decodeVersion(Buffer.from('GET / HTTP/1.1\r\n', 'latin1')).number, 0);
  });

  it('check_sys_data ints (network order), check_mtu ("%d" in 2 bytes), xchg_bw_reports (5 big-endian 8-byte fields)', () => {
    assert.equal(encodeInt32(4096).toString('hex'), '00001000');
    assert.equal(encodeInt32(64).toString('hex'), '00000040');
    assert.equal(encodeMtu(3).toString('hex'), '3300');
    assert.equal(decodeMtu(Buffer.from('5\0', 'latin1')), 5);
    assert.equal(decodeMtu(Buffer.from('9\0', 'latin1')), undefined);
    const r = { size: 4096n, iters: 200n, bwPeak: 10.5, bwAvg: 2, msgRate: 0.25 };
    const b = encodeBwReport(r);
    assert.equal(b.toString('hex'), '0000000000001000' + '00000000000000c8' + '4025000000000000' + '4000000000000000' + '3fd0000000000000');
    assert.deepEqual(decodeBwReport(b), r);
  });
});

/** A fake perftest server that says what `script` says, then keeps the connection open. */
async function fakeServer(script: (sock: net.Socket) => void) {
  const socks: net.Socket[] = [];
  const server = net.createServer((sock) => { socks.push(sock); sock.on('error', () => {}); script(sock); });
  server.on('close', () => socks.forEach((s) => s.destroy()));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

const GOOD_START = Buffer.concat([encodeVersion(false), encodeInt32(4096), encodeInt32(64), encodeMtu(3)]);

describe('a peer that breaks the exchange', () => {
  for (const [name, script, re] of [
    ['garbage', (s: net.Socket) => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /peer's perftest version 'GET \/ HTTP\/1.1..' is older than 5.70/],
    ['an old version', (s: net.Socket) => s.write(encodeVersion(false, '5.60')), /version '5.60' is older than 5.70/],
    ['a malformed address', (s: net.Socket) => s.write(Buffer.concat([GOOD_START, Buffer.alloc(108, '?')])), /malformed address message from the peer/],
    ['a truncated address, then silence', (s: net.Socket) => s.write(Buffer.concat([GOOD_START, encodeDest({ lid: 0, outReads: 16, qpn: 17, psn: 1, rkey: 2, vaddr: 4096n, gid: GID, srqn: 0 }).subarray(0, 50)])),
      /silent for 2000 ms \(expected the peer's address message\)/],
    ['a truncated address, then close', (s: net.Socket) => s.end(GOOD_START.subarray(0, 22)), /closed the connection while the peer's cache line size was expected \(2 bytes of it arrived\)/],
  ] as const) {
    it(`${name}: exit 1 with a clear error within --timeout`, async () => {
      const { server, port } = await fakeServer(script);
      try {
        const t0 = Date.now();
        const p = run(['perftest', 'write_bw', '--bind', '127.0.0.3', '--udp-port', '0', '-p', String(port), '--timeout', '2', '127.0.0.1']);
        assert.equal(await p.exit(15_000), 1, p.stderr);
        assert.match(p.stderr, re);
        assert.doesNotMatch(p.stderr, /at .*\.js:\d+/); // a message, not a stack trace
        assert.ok(Date.now() - t0 < 12_000);
      } finally {
        server.close();
      }
    });
  }

  it('a client that sends garbage to a softrdma server: the server exits 1 and says why', async () => {
    const srv = run(['perftest', 'send_lat', '--bind', '127.0.0.2', '-p', '0', '--udp-port', '0', '--timeout', '2']);
    const [, tcp] = await srv.waitFor(/out-of-band TCP port (\d+)/);
    const sock = net.connect(Number(tcp), '127.0.0.1');
    sock.on('error', () => {});
    await once(sock, 'connect');
    sock.write('\x00\x01\x02not a version at all');
    assert.equal(await srv.exit(15_000), 1, srv.stderr);
    assert.match(srv.stderr, /perftest version '' is older than 5.70/);
    sock.destroy();
  });
});
