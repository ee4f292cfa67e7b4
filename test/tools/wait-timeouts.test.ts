// WaitTimeouts: sequential waits share one AbortSignal (a listener on a fresh signal costs Node
// microseconds per wait) until one times out; a timed-out wait rejects with WaitTimeoutError
// and later waits get a signal that is not aborted.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WaitTimeoutError, WaitTimeouts } from '../../src/tools/wait-timeouts.js';

/** A wait that settles when its signal aborts (with the reason) or when `resolve` is called. */
function waitOn(signal: AbortSignal): { promise: Promise<string>; resolve: (v: string) => void } {
  let resolve!: (v: string) => void;
  const promise = new Promise<string>((res, rej) => {
    const onAbort = () => rej(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    resolve = (v) => { signal.removeEventListener('abort', onAbort); res(v); };
  });
  return { promise, resolve };
}

describe('WaitTimeouts', () => {
  it('waits that finish in time share one signal, which is never aborted', async () => {
    const w = new WaitTimeouts();
    const seen = new Set<AbortSignal>();
    for (let i = 0; i < 5; i++) {
      const v = await w.run(5000, (signal) => {
        seen.add(signal);
        const x = waitOn(signal);
        setImmediate(() => x.resolve(`done ${i}`));
        return x.promise;
      });
      assert.equal(v, `done ${i}`);
    }
    assert.equal(seen.size, 1);
    assert.equal([...seen][0]!.aborted, false);
  });

  it('a wait that does not finish rejects with WaitTimeoutError, and the next wait has a fresh signal', async () => {
    const w = new WaitTimeouts();
    let first: AbortSignal | undefined;
    const t0 = performance.now();
    await assert.rejects(w.run(30, (signal) => { first = signal; return waitOn(signal).promise; }), (err: unknown) => {
      assert.ok(err instanceof WaitTimeoutError);
      assert.equal(err.code, 'ETIMEDOUT');
      assert.equal(err.ms, 30);
      return true;
    });
    assert.ok(performance.now() - t0 >= 25, 'not before its time');
    assert.equal(first!.aborted, true);
    const v = await w.run(5000, (signal) => {
      assert.notEqual(signal, first);
      assert.equal(signal.aborted, false);
      const x = waitOn(signal);
      x.resolve('after');
      return x.promise;
    });
    assert.equal(v, 'after');
  });

  it('a wait that throws passes its error on and leaves no timer behind', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const w = new WaitTimeouts();
    await assert.rejects(w.run(60_000, () => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await w.run(60_000, () => Promise.resolve(7)), 7);
    assert.equal(timers(), before);
  });
});
