// Helpers of the uapi tests (test/uapi): the VerbsError a call throws, and a device of one's own
// for the length of a test.

import assert from 'node:assert/strict';
import { VerbsError, createRxeDevice, type Context, type PD } from '../../src/index.js';

/** The VerbsError fn throws; the test fails if it throws something else or nothing. */
export function caught(fn: () => unknown): VerbsError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VerbsError, `not a VerbsError: ${String(e)}`);
    return e;
  }
  assert.fail('did not throw');
}

/** Run fn with a context and a PD of a new rxe device on 127.0.0.2, closed afterwards whatever happens. */
export async function withDevice(fn: (ctx: Context, pd: PD) => Promise<void> | void): Promise<void> {
  const dev = await createRxeDevice({ address: '127.0.0.2', port: 0 });
  try {
    const ctx = dev.open();
    await fn(ctx, ctx.allocPd());
  } finally {
    await dev.close();
  }
}
