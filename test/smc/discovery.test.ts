// The registry of SMC listeners: which destinations a client may propose to.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('discovery-test');
const { ListenerRegistration, clearDiscoveryCache, isSmcListener } = await import('../../src/smc/discovery.js');

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
