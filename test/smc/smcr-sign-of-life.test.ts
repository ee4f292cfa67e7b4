// Discovery's orderly-close sign of life (smcr/discovery.ts yesHolds) is dated by the client's
// last write of new bytes: a failover's resend of bytes the peer may have read long ago must not
// date it anew. Unit level: an SmcrConnection over stand-in links and link group.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { recordingLink, standInConnection } from '../helpers/smcr-standins.js';

test('a failover resend leaves the write time of the sign of life alone; new bytes move it', async () => {
  const { link: l1 } = recordingLink(), { link: l2 } = recordingLink();
  const { conn } = standInConnection(4096, l1);
  conn.service = '10.0.0.1:7202';
  const at = () => (conn as unknown as { lastWriteAt: number }).lastWriteAt;
  conn.write(Buffer.from('hello'));
  await Promise.resolve(); // the flush microtask: the WRITE and its CDC
  const first = at();
  assert.ok(Number.isFinite(first), 'the write is dated');
  const until = performance.now() + 20;
  while (performance.now() < until) { /* time passes */ }
  // The link fails before our CDC was confirmed: the same five bytes go again on the other link.
  conn.setPeerKey(l2 as never, { rkey: 4, addr: 0 } as never);
  assert.equal(conn.switchLink(l2 as never), true);
  assert.equal(at(), first, 'the resend is not a new write');
  conn.write(Buffer.from('more'));
  await Promise.resolve();
  assert.ok(at() > first, 'new bytes are');
});
