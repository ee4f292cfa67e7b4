// One error base across the layers: whichever layer fails, the error is a SoftrdmaError with
// a node-style code, and errno-style codes carry their errno number.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { SoftrdmaError, VerbsError } from '../../src/index.js';
import { IsmError } from '../../src/ism/index.js';
import { SystemError } from '../../src/ism/libc.js';
import { RuntimeDirError } from '../../src/ism/runtime-dir.js';
import { ClcError, DECLINE } from '../../src/smc/clc.js';
import { decodeClc } from '../../src/smc/clc.js';

test('every layer\'s error is a SoftrdmaError with a code', () => {
  const cases: Array<[SoftrdmaError, string, number | undefined, string]> = [
    [new VerbsError('EBUSY', 'in use', { object: 'PD', method: 'DEALLOC' }), 'EBUSY', constants.errno.EBUSY, 'VerbsError'],
    [new IsmError('ENOSPC', 'no room'), 'ENOSPC', constants.errno.ENOSPC, 'IsmError'],
    [new SystemError('EMFILE', 'memfd_create'), 'EMFILE', constants.errno.EMFILE, 'SystemError'],
    [new ClcError(DECLINE.SYNCERR, 'no eyecatcher'), 'EPROTO', constants.errno.EPROTO, 'ClcError'],
    [new RuntimeDirError('mode', 'group-writable'), 'ERR_SOFTRDMA_RUNTIME_DIR', undefined, 'RuntimeDirError'],
  ];
  for (const [err, code, errno, name] of cases) {
    assert.ok(err instanceof SoftrdmaError, name);
    assert.ok(err instanceof Error, name);
    assert.equal(err.code, code, name);
    assert.equal(err.errno, errno, name);
    assert.equal(err.name, name);
    assert.match(String(err.stack), new RegExp(`^${name}: `));
  }
});

test('a malformed CLC message is a ClcError carrying its Decline reason', () => {
  assert.throws(() => decodeClc(Buffer.from('not a CLC message at all')), (e: unknown) =>
    e instanceof ClcError && e instanceof SoftrdmaError && e.code === 'EPROTO' && e.reason === DECLINE.SYNCERR);
});
