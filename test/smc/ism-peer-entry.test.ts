// A peer's registry entry is the word of any process of the same user: before its device page
// is mapped, its doorbell must be a socket file of the ism directory by the runtime
// directory's naming (not a path to some other socket) and its slot count one a device may
// have; a malformed entry is ENODEV and maps nothing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { IsmDevice } from '../../src/ism/device.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const rt = testRuntimeDir('ism-peer-entry');
const softrdmaMaps = () => fs.readFileSync('/proc/self/maps', 'latin1').split('\n').filter((l) => l.includes('memfd:softrdma')).length;

for (const [field, value] of [['bell', '../evil.sock'], ['bell', '/run/other.sock'], ['slots', 7.5], ['slots', 1 << 21]] as const) {
  test(`a peer entry with ${field} ${JSON.stringify(value)} is refused (ENODEV) before anything is mapped`, () => {
    const peer = IsmDevice.open({ slots: 8 });
    const me = IsmDevice.open({ slots: 8 });
    const hex = peer.gid.toString(16).padStart(16, '0');
    const file = path.join(rt, 'ism', `${hex}.json`);
    const entry = fs.readFileSync(file, 'utf8');
    try {
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(entry) as object, [field]: value }));
      const before = softrdmaMaps();
      assert.throws(() => me.attachDmb(peer.gid, 1n), { code: 'ENODEV' });
      assert.equal(softrdmaMaps(), before, 'the peer page stayed mapped');
    } finally {
      fs.writeFileSync(file, entry);
      me.close();
      peer.close();
    }
  });
}
