// The statistics every benchmark table rests on (bench/stats.ts): the median of an even count,
// a target's verdict when one side measured nothing, and the median's confidence interval.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { median, medianCi, verdict } from '../../bench/stats.js';

test('median: the middle value, or the mean of the two middle ones; NaN for none; the input untouched', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([0.9, 1.1]), 1);
  assert.ok(Number.isNaN(median([])));
  const xs = [3, 1, 2];
  median(xs);
  assert.deepEqual(xs, [3, 1, 2]);
});

test('verdict: the direction of the target, and no target met by a side that measured nothing', () => {
  assert.deepEqual(verdict(1.2, true, 1.0), { target: '>= 1', met: true });
  assert.deepEqual(verdict(0.9, true, 1.0), { target: '>= 1', met: false });
  assert.deepEqual(verdict(0.7, false, 0.8), { target: '<= 0.8', met: true });
  assert.deepEqual(verdict(0.9, false, 0.8), { target: '<= 0.8', met: false });
  assert.deepEqual(verdict(1.5, true, undefined), { target: '-', met: undefined });
  // A baseline of 0 (a sink that counted nothing) makes the ratio Infinity; a softrdma side of 0, 0; neither is met.
  assert.equal(verdict(Infinity, true, 1.0).met, false);
  assert.equal(verdict(0, false, 0.8).met, false);
  assert.equal(verdict(NaN, true, 1.0).met, false);
});

test('medianCi: order statistics with at least 95% coverage, and none claimed from fewer than 6 values', () => {
  // n = 6: P(X <= 0) = 1/64 <= 2.5%, so [x(1), x(6)].
  assert.deepEqual(medianCi([6, 5, 4, 3, 2, 1]), [1, 6]);
  // n = 18 (the fallback table's 6 x 3 pairs): k = 5 (P(X <= 4) = 1.54%, P(X <= 5) = 4.81%).
  const xs = Array.from({ length: 18 }, (_, i) => i + 1);
  assert.deepEqual(medianCi(xs), [5, 14]);
  assert.throws(() => medianCi([1, 2, 3, 4, 5]), RangeError);
});
