// An SMC-R close whose closing CDC can never arrive (the RoCE path cut for good) must not look
// like a clean end to either side: the TCP FIN waits for the CDC's completion (close.ts
// afterCdcSent), and when the link goes down instead (its keepalive, TEST_LINK, unanswered:
// the QP's retry_cnt 7 retries for ever), the close is a reset and end() fails ECONNABORTED.
// Its own file: the keepalive is shortened for the whole process (SOFTRDMA_SMCR_TESTLINK_MS),
// which the outage tests beside it must not have. One process, no namespaces
// (smcr-relay-harness.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

testRuntimeDir('smcr-close-reset');
process.env.SOFTRDMA_SMC_LEARN = '0';
process.env.SOFTRDMA_SMCR_TESTLINK_MS = '500';
const { setup, settled, until } = await import('./smcr-relay-harness.js');
const { rxeOf } = await import('../../src/index.js');

test("the server's end() with its RoCE path cut for good: the closing CDC never completes, so the close is a reset: the server's end fails ECONNABORTED and the client gets a reset, never a clean end short of the reply", async (t) => {
  const env: { b?: Awaited<ReturnType<typeof setup>>['b'] } = {};
  const reply = Buffer.alloc(1 << 20, 0x62);
  let serverError: NodeJS.ErrnoException | undefined, serverFinished = false;
  const e = await setup(t, (s) => {
    s.on('error', (err: NodeJS.ErrnoException) => { serverError ??= err; });
    s.on('finish', () => { serverFinished = true; });
    s.once('data', () => {
      // Every RoCE packet the server's device sends is lost from now on (TCP goes on): its
      // reply, closing CDC, ACKs and TEST_LINKs never arrive.
      rxeOf(env.b!).faults = { drop: 1 };
      s.end(reply);
    });
  });
  env.b = e.b;
  t.after(() => { rxeOf(env.b!).faults = undefined; });
  const c = e.connect();
  assert.equal((await settled(c, 'the client settles')).mode, 'SMCR');
  let got = 0, ended = false, error: NodeJS.ErrnoException | undefined;
  c.on('data', (d: Buffer) => { got += d.length; });
  c.on('end', () => { ended = true; });
  c.on('error', (err: NodeJS.ErrnoException) => { error = err; });
  c.write('request');
  await until(() => serverError !== undefined && (error !== undefined || ended), 20_000, "the server's error and the client's end or error");
  assert.equal(serverError!.code, 'ECONNABORTED', String(serverError));
  assert.equal(serverFinished, false, "no 'finish': the end did not complete");
  assert.equal(ended, false, `the client took the close for a clean end after ${got} of ${reply.length} bytes`);
  assert.ok(error !== undefined && ['ECONNRESET', 'ECONNABORTED'].includes(error.code ?? ''), String(error));
});
