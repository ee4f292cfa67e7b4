// The registry of SMC listeners: which destinations a client may propose to.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it, mock } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('discovery-test');
const { ListenerRegistration, clearDiscoveryCache, isSmcListener } = await import('../../src/smc/discovery.js');
const { keepPresent, subdir } = await import('../../src/ism/runtime-dir.js');

/** Run `check` while a listener entry for (address, port) exists, with a fresh cache. */
function withListener(address: string, port: number, check: () => void): void {
  const reg = new ListenerRegistration(address, port);
  try {
    clearDiscoveryCache();
    check();
  } finally {
    reg.remove();
  }
}

describe('listener discovery', () => {

  it('matches the registered address and port only, whatever was asked before', () => {
    const port = 40000 + (process.pid % 20000);
    withListener('127.0.0.2', port, () => {
      assert.equal(isSmcListener('127.0.0.2', port), true);
      // Same port, other address: answered from the same cached directory scan, and no.
      assert.equal(isSmcListener('127.0.0.3', port), false);
      assert.equal(isSmcListener('::ffff:127.0.0.2', port), true, 'an IPv4-mapped peer address');
      assert.equal(isSmcListener('127.0.0.2', port + 1), false);
      let asked = 0;
      assert.equal(isSmcListener(() => { asked++; return '127.0.0.2'; }, port + 1), false);
      assert.equal(asked, 0, 'no listener on the port: the address is never asked for');
      assert.equal(isSmcListener(() => { asked++; return '127.0.0.2'; }, port), true);
      assert.equal(asked, 1);
    });
    clearDiscoveryCache();
    assert.equal(isSmcListener('127.0.0.2', port), false, 'gone once removed');
  });

  it('a wildcard listener matches local destinations of its family, never a remote one', () => {
    const port = 40001 + (process.pid % 20000);
    withListener('0.0.0.0', port, () => {
      assert.equal(isSmcListener('127.0.0.9', port), true);
      assert.equal(isSmcListener('::1', port), false, 'an IPv4 wildcard does not take IPv6');
      assert.equal(isSmcListener('192.0.2.1', port), false, 'not an address of this host');
    });
  });
});

describe('entries kept present', () => {
  it('share one timer, survive a check that throws, and stop when asked', () => {
    mock.timers.enable({ apis: ['setInterval'] });
    try {
      const runs = { a: 0, b: 0 };
      const stopA = keepPresent(() => { runs.a++; throw new Error('a failing check'); });
      const stopB = keepPresent(() => { runs.b++; });
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 1, b: 1 });
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 2, b: 2 }, 'a check that threw runs again, and the others still run');
      stopA();
      mock.timers.tick(2000);
      assert.deepEqual(runs, { a: 2, b: 3 });
      stopB();
      mock.timers.tick(10_000);
      assert.deepEqual(runs, { a: 2, b: 3 }, 'nothing runs once every check stopped');
    } finally {
      mock.timers.reset();
    }
  });

  it('a listener entry removed under a live registration is written again on the next round', () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const port = 40002 + (process.pid % 20000);
    const reg = new ListenerRegistration('127.0.0.2', port);
    try {
      const dir = subdir('listeners');
      const mine = () => fs.readdirSync(dir).filter((n) => n.startsWith(`${port}.${process.pid}.`));
      const [name] = mine();
      assert.ok(name, 'registered');
      fs.rmSync(`${dir}/${name}`);
      assert.deepEqual(mine(), []);
      mock.timers.tick(2000);
      assert.deepEqual(mine(), [name]);
      reg.remove();
      mock.timers.tick(2000);
      assert.deepEqual(mine(), [], 'a removed registration stays removed');
    } finally {
      reg.remove();
      mock.timers.reset();
    }
  });
});

describe('a \'::\' listener and IPv4 destinations', () => {
  it('dual-stack: a listener for both; ipv6Only: for IPv6 destinations only (no Proposal to whoever holds 0.0.0.0 on that port)', async () => {
    const smc = await import('../../src/smc/index.js');
    for (const ipv6Only of [false, true]) {
      const srv = smc.createServer(() => {});
      await new Promise<void>((r) => srv.listen({ port: 0, host: '::', ipv6Only }, r));
      try {
        clearDiscoveryCache();
        const port = (srv.address() as { port: number }).port;
        assert.equal(isSmcListener('::1', port), true, `ipv6Only ${ipv6Only}, ::1`);
        assert.equal(isSmcListener('127.0.0.1', port), !ipv6Only, `ipv6Only ${ipv6Only}, 127.0.0.1`);
      } finally { srv.close(); }
    }
  });
});
