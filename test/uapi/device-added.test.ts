// onDeviceAdded: the verbs layer announces each device made (Linux's ib_client add), which the
// rdma_cm follows to give a new device its CM agent and its wildcard listens.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRxeDevice, type Device } from '../../src/index.js';
import { onDeviceAdded } from '../../src/verbs/api.js';

const turn = () => new Promise((r) => setImmediate(r));

test('onDeviceAdded: each device made is announced once, after it is made; stopping ends it', async () => {
  const heard: Device[] = [];
  const stop = onDeviceAdded((d) => heard.push(d));
  const a = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    await turn();
    assert.equal(heard.length, 1);
    assert.ok(heard[0] === a);
    stop();
    const b = await createRxeDevice({ address: '127.0.0.3', port: 0 });
    await turn();
    await b.close();
    assert.equal(heard.length, 1, 'nothing after stop()');
  } finally {
    stop();
    await a.close();
  }
});
