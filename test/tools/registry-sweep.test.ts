// The listener registry does not pile up: when a listener starts, entries of dead processes
// of this pid namespace are removed; entries of live processes, of another pid namespace, or
// that name none (which this process cannot judge) stay.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';
import { pidNamespace, selfStamp, subdir, writeEntry } from '../../src/ism/runtime-dir.js';
import { createServer } from '../../src/smc/index.js';

testRuntimeDir('sweep');

test('a starting listener removes dead processes\' entries, and only those it can judge', async () => {
  // A pid that was alive and is not any more: a child that has exited.
  const deadPid = Number(execFileSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }));
  const entry = (pid: number, extra: Record<string, unknown>) => ({ netns: 'x', address: '127.0.0.1', port: 1, pid, ...extra });
  writeEntry('listeners', `1.${deadPid}.1.json`, entry(deadPid, { start: '12345', pidns: pidNamespace() }));
  writeEntry('listeners', `2.${deadPid}.1.json`, entry(deadPid, { start: '12345', pidns: pidNamespace() })); // another port: swept too
  writeEntry('listeners', `3.${process.pid}.99.json`, entry(process.pid, { start: selfStamp().start, pidns: pidNamespace() }));
  writeEntry('listeners', `4.${deadPid}.1.json`, entry(deadPid, { start: '12345', pidns: 'pid:[4026531836000]' }));
  writeEntry('listeners', `5.${deadPid}.1.json`, entry(deadPid, { start: '12345' }));
  const dir = subdir('listeners');
  assert.equal(fs.readdirSync(dir).length, 5);

  const server = createServer(() => {}).listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const port = (server.address() as net.AddressInfo).port;
    const names = fs.readdirSync(dir).sort();
    assert.ok(!names.includes(`1.${deadPid}.1.json`), names.join(' '));
    assert.ok(!names.includes(`2.${deadPid}.1.json`), names.join(' '));
    assert.ok(names.includes(`3.${process.pid}.99.json`), 'a live process keeps its entry');
    assert.ok(names.includes(`4.${deadPid}.1.json`), 'another pid namespace is not judged');
    assert.ok(names.includes(`5.${deadPid}.1.json`), 'an entry without a pid namespace is not judged');
    assert.ok(names.some((n) => n.startsWith(`${port}.${process.pid}.`)), 'the new listener is registered');
  } finally {
    server.close();
  }
});
