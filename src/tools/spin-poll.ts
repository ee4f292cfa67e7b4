// Polling a CQ in place for a few microseconds before giving the event loop a turn, as a C
// program spins on a hardware CQ. rxe reads its socket when an empty CQ is polled (busy
// polling, providers/rxe/link.ts), so each poll here can bring the answer in, while a turn of
// the loop costs several microseconds more than a poll: measured, perftest send_lat's typical
// round trip was 35 us with one poll a turn and 26 us spinning like this.

import { performance } from 'node:perf_hooks';
import type { CQ, WorkCompletion } from '../index.js';

/** How long one spin lasts before the caller should yield to the event loop (ms). */
export const SPIN_TURN_MS = Number(process.env.SOFTRDMA_SPIN_TURN_US ?? 20) / 1000;

/** Up to `max` completions of `cq`, polling it again and again for up to `ms` while it has none. */
export function spinPoll(cq: CQ, max: number, ms = SPIN_TURN_MS): WorkCompletion[] {
  let wcs = cq.poll(max);
  if (wcs.length > 0 || ms <= 0) return wcs;
  const until = performance.now() + ms;
  do wcs = cq.poll(max); while (wcs.length === 0 && performance.now() < until);
  return wcs;
}

/** Run `step` (a poll that reports whether it got what it waited for) again and again for up to `ms`. */
export function spinUntil(step: () => boolean, ms = SPIN_TURN_MS): boolean {
  if (step()) return true;
  const until = performance.now() + ms;
  do if (step()) return true; while (performance.now() < until);
  return false;
}
