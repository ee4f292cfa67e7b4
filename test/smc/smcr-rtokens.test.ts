// The peer's rtoken table of an SMC-R link group (src/smc/smcr/rtokens.ts) against Linux's
// lgr->rtokens (smc_core.c 6.12: smc_rtoken_add 2652-2673, smc_rtoken_delete 2676-2694,
// smc_rtoken_set/set2 2618-2649, smcr_rtoken_clear_link 1320-1329): no network, no root. The
// link group's use of it, on the wire, is in smcr-hostile.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SmcrLink } from '../../src/smc/smcr/link.js';
import { RTOKENS_MAX, RtokenTable } from '../../src/smc/smcr/rtokens.js';

const link = (id: number) => ({ id }) as unknown as SmcrLink;

test('an rtoken with the same rkey and address on the same link is the same entry', () => {
  const t = new RtokenTable();
  const l1 = link(1), l2 = link(2);
  assert.equal(t.add(l1, { rkey: 7, addr: 0x1000n }), 0);
  assert.equal(t.add(l1, { rkey: 7, addr: 0x1000n }), 0, 'reused, not added twice');
  assert.equal(t.size, 1);
  assert.equal(t.add(l1, { rkey: 7, addr: 0x2000n }), 1, 'same rkey, another address: another entry');
  assert.equal(t.add(l2, { rkey: 7, addr: 0x1000n }), 2, 'same rtoken on another link: another entry');
  assert.equal(t.size, 3);
});

test('DELETE_RKEY frees the first entry with the rkey on the link it came on, with its rtokens on every link', () => {
  const t = new RtokenTable();
  const l1 = link(1), l2 = link(2);
  const i = t.add(l1, { rkey: 7, addr: 0x1000n })!;
  t.set(i, l2, { rkey: 70, addr: 0x7000n });
  t.add(l1, { rkey: 7, addr: 0x2000n });
  assert.equal(t.delete(l2, 7), false, 'rkey 7 is not on link 2');
  assert.equal(t.delete(l2, 70), true, 'the first entry, by its rkey on link 2');
  assert.equal(t.size, 1);
  assert.equal(t.delete(l1, 7), true, 'the second entry');
  assert.equal(t.delete(l1, 7), false, 'none left: -ENOENT');
  assert.equal(t.size, 0);
  // The lowest free slot is taken again (smc_rmb_reserve_rtoken_idx).
  assert.equal(t.add(l1, { rkey: 9, addr: 0n }), 0);
});

test('255 entries at most: a full table refuses a new rtoken, takes one it holds, and has room after a delete', () => {
  const t = new RtokenTable();
  const l1 = link(1);
  for (let k = 0; k < RTOKENS_MAX; k++) assert.equal(t.add(l1, { rkey: 0x100 + k, addr: BigInt(k) << 20n }), k);
  assert.equal(t.full, true);
  assert.equal(t.add(l1, { rkey: 0xffff, addr: 0n }), undefined, '-ENOSPC');
  assert.equal(t.add(l1, { rkey: 0x100 + 17, addr: 17n << 20n }), 17, 'one it holds');
  assert.equal(t.delete(l1, 0x100 + 40), true);
  assert.equal(t.full, false);
  assert.equal(t.add(l1, { rkey: 0xffff, addr: 0n }), 40);
  assert.equal(t.size, RTOKENS_MAX);
});

test('ADD_LINK\'s rkey pairs (smc_rtoken_set) and a link leaving (smcr_rtoken_clear_link)', () => {
  const t = new RtokenTable();
  const l1 = link(1), l2 = link(2);
  const i = t.add(l1, { rkey: 7, addr: 0x1000n })!;
  t.setByKnown(l1, 7, l2, { rkey: 70, addr: 0x7000n });
  t.setByKnown(l1, 8, l2, { rkey: 80, addr: 0x8000n }); // no entry with rkey 8 on link 1: nothing
  assert.deepEqual([...t.entry(i)!.entries()].map(([l, r]) => [(l as unknown as { id: number }).id, r]), [[1, { rkey: 7, addr: 0x1000n }], [2, { rkey: 70, addr: 0x7000n }]]);
  assert.equal(t.size, 1);
  t.clearLink(l1);
  assert.equal(t.size, 1, 'the entry stays, without its rtoken on the link that went');
  assert.equal(t.delete(l1, 7), false);
  assert.equal(t.delete(l2, 70), true);
});

test('a flood of CONFIRM_RKEY / DELETE_RKEY keeps the table within its bound', () => {
  const t = new RtokenTable();
  const l1 = link(1);
  let refused = 0;
  for (let k = 0; k < 100_000; k++) {
    if (t.add(l1, { rkey: k, addr: BigInt(k) }) === undefined) refused++;
    if (k % 3 === 0) t.delete(l1, k - 300);
    assert.ok(t.size <= RTOKENS_MAX);
  }
  assert.ok(refused > 0);
  const inner = t as unknown as { slots: unknown[]; byKey: Map<SmcrLink, Map<number, Set<number>>> };
  assert.ok(inner.slots.length <= RTOKENS_MAX);
  assert.equal([...inner.byKey.get(l1)!.values()].reduce((n, s) => n + s.size, 0), t.size, 'the index holds the entries and no more');
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(inner.byKey.size, 0);
});
