// Polling a CQ in place for a few microseconds before giving the event loop a turn, as a C
// program spins on a hardware CQ. rxe reads its socket when an empty CQ is polled (busy
// polling, providers/rxe/link.ts), so each poll here can bring the answer in, while a turn of
// the loop costs several microseconds more than a poll: measured, perftest send_lat's typical
// round trip was 35 us with one poll a turn and 26 us spinning like this. Only while spinning
// can help (CQ.canSpin): not without busy polling, nor while rxe has work waiting for the turn.

import { performance } from 'node:perf_hooks';
import type { CQ, WorkCompletion } from '../index.js';

/** How long one spin lasts before the caller should yield to the event loop (ms). */
export const SPIN_TURN_MS = Number(process.env.SOFTRDMA_SPIN_TURN_US ?? 20) / 1000;

/**
 * Up to `max` completions of `cq`, polling it again for up to `ms` while it has none and
 * spinning can help (CQ.canSpin). In `into` (emptied first) when given: a spin then allocates
 * nothing per poll, which matters to a latency loop's tail (each young-generation collection
 * is a slow round).
 */
export function spinPoll(cq: CQ, max: number, ms = SPIN_TURN_MS, into: WorkCompletion[] = []): WorkCompletion[] {
  spinUntil(() => cq.poll(max, into).length > 0, () => cq.canSpin, ms);
  return into;
}

/** Run `step` (a poll that reports whether it got what it waited for) again for up to `ms` while `canSpin()` says it can help. */
export function spinUntil(step: () => boolean, canSpin: () => boolean, ms = SPIN_TURN_MS): boolean {
  if (step()) return true;
  if (ms <= 0 || !canSpin()) return false;
  const until = performance.now() + ms;
  do if (step()) return true; while (canSpin() && performance.now() < until);
  return false;
}
