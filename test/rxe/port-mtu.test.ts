// The port MTU an rxe device takes from its interface, as Linux rxe's rxe_set_mtu: the netdev
// MTU less 80 bytes of headers, rounded down to an IB MTU (256-4096). Vectors from that rule,
// and devices on veth ends of 1500 and 9000 bytes in network namespaces (root only; skipped
// with the reason otherwise).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { ibMtuForNetdev } from '../../src/providers/rxe/port-mtu.js';
import { deleteNamespaces, ip, setUpVethPair } from '../helpers/netns.js';

test('IB MTU for a netdev MTU: less RXE_MAX_HDR_LENGTH (80), the largest IB MTU that fits', () => {
  const cases: Array<[number, number]> = [
    [1500, 1024], [9000, 4096], [65536, 4096], [4176, 4096], [4175, 2048], [2128, 2048], [2127, 1024],
    [1104, 1024], [1103, 512], [1280, 1024], [576, 256], [336, 256], [100, 256],
  ];
  for (const [netdev, ib] of cases) assert.equal(ibMtuForNetdev(netdev), ib, `netdev MTU ${netdev}`);
});

const tag = `pm${process.pid % 100000}`;
const NS_A = `${tag}a`, NS_B = `${tag}b`;
const A = '10.233.31.1', B = '10.233.31.2';
const why = setUpVethPair({ tag, nsA: NS_A, nsB: NS_B, addrA: A, addrB: B, extra: () => ip('-n', NS_B, 'link', 'set', `${tag}vb`, 'mtu', '9000') });
process.on('exit', () => deleteNamespaces(NS_A, NS_B));

const INDEX = new URL('../../src/index.js', import.meta.url).href;
/** The active MTU (bytes) of a device made in `ns` on `addr`, from a child process there. */
function activeMtu(ns: string, addr: string): number {
  const src = `const { createRxeDevice } = await import(${JSON.stringify(INDEX)});
    const dev = await createRxeDevice({ address: ${JSON.stringify(addr)}, port: 4791 });
    const ctx = dev.open(); console.log(128 << ctx.queryPort(1).activeMtu); ctx.close(); await dev.close();`;
  return Number(execFileSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', src], { encoding: 'utf8', timeout: 20_000 }).trim());
}

test('a device takes its port MTU from its interface: 1024 on a 1500-byte veth, 4096 on a 9000-byte one', { skip: why }, () => {
  assert.equal(activeMtu(NS_A, A), 1024);
  assert.equal(activeMtu(NS_B, B), 4096);
});

