// Spin-then-arm: while a connection has traffic, poll its CDC from setImmediate (bounded
// slices, so other I/O still runs); once it has been quiet for a while, arm its DMB so the
// peer rings the doorbell, re-check once (a write may have raced the arming), and stop
// polling it. An idle connection costs no system calls: a look at its CDC every RECHECK_MS.

import { performance } from 'node:perf_hooks';
import { schedYield } from '../ism/libc.js';
import type { SmcdConnection } from './smcd-connection.js';

function envMicros(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v >= 0 ? v / 1000 : dflt / 1000;
}

/** How long one poll slice may hold the event loop. */
const SLICE_MS = envMicros('SOFTRDMA_SMC_SLICE_US', 20);
/** How long a quiet connection is still polled before it is armed. */
const IDLE_MS = envMicros('SOFTRDMA_SMC_SPIN_US', 300);
/** Whether a poll that found nothing yields the CPU (SOFTRDMA_SMC_YIELD=0 turns it off). */
const YIELD = process.env.SOFTRDMA_SMC_YIELD !== '0';
/** How long a handshake step keeps the event loop from sleeping while it awaits the reply. */
const HANDSHAKE_MS = envMicros('SOFTRDMA_SMC_HANDSHAKE_SPIN_US', 1000);

/**
 * A yield after which the next poll still found nothing, and which took this long, gave the
 * CPU to someone other than the peer we wait for: the CPUs are busy (ms).
 */
const LONG_YIELD_MS = envMicros('SOFTRDMA_SMC_LONG_YIELD_US', 200);
/**
 * A yield this long was a scheduler slice given to some other process: the peer answering us
 * takes microseconds, so whatever the next poll finds, the CPUs are busy (ms).
 */
const SLICE_YIELD_MS = envMicros('SOFTRDMA_SMC_SLICE_YIELD_US', 1000);
/**
 * How long a sign of busy CPUs keeps the poller from spinning (ms): MIN for a first sign,
 * doubled each time the CPUs turn out busy again within MAX of the last period's end, up to MAX
 * (SOFTRDMA_SMC_CONTENDED_US). A host that stays busy is re-tested rarely (each test costs a
 * scheduler slice or so: a yield that hands the CPU to a busy process); a single long yield
 * on a host that is busy only for a moment (V8's compiler threads at a process's start, a
 * neighbour's burst) costs a short period of doorbells instead of a long one.
 */
const CONTENDED_MAX_MS = envMicros('SOFTRDMA_SMC_CONTENDED_US', 400_000);
const CONTENDED_MIN_MS = Math.min(CONTENDED_MAX_MS, envMicros('SOFTRDMA_SMC_CONTENDED_MIN_US', 10_000));

const hot = new Set<SmcdConnection>();
let scheduled = false;
/**
 * Until when the CPUs count as busy. Spinning then takes the CPU from the processes that
 * are running anyway, the peer among them, and a yield hands it to a busy loop for a whole
 * scheduler slice: so connections arm their doorbells as soon as a poll finds nothing, and
 * the process sleeps in epoll as a TCP reader would (the kernel favours a woken sleeper).
 */
let contendedUntil = 0;
let contendedCount = 0;
/** The length of the current (or last) busy-CPU period (ms). */
let contendedMs = CONTENDED_MIN_MS;
/**
 * Long yields in a row after which the next poll found nothing. One is not enough: on a host
 * with as many busy processes as CPUs the peer itself is one of them, and a yield that let it
 * run something else (another connection's close) is no sign of a busy host.
 */
let longYields = 0;
const LONG_YIELDS = 3;

/** Whether the poller is in its busy-CPU mode, and how often it entered it (for tests, status). */
export function pollerContention(): { contended: boolean; entered: number } {
  return { contended: performance.now() < contendedUntil, entered: contendedCount };
}

/**
 * What a yield from y0 to now gave to other processes (ms): its length less the CPU time this
 * process's own threads used meanwhile (`cu0`: process.cpuUsage() just before it). A late yield
 * that let only V8's GC or compiler threads, or libuv's pool, run on this CPU is no sign of a
 * busy host; counted as one, it sent an idle 2-CPU host's SMC-R ping-pong into the busy-CPU mode
 * several times a run (2026-12-05: of ~40 late yields per process in a run with the two
 * processes pinned to different CPUs, about two thirds were the process's own threads, CPU time
 * equal to the yield's length).
 */
function lostToOthers(y0: number, now: number, cu0: NodeJS.CpuUsage): number {
  const cu = process.cpuUsage(cu0);
  return Math.max(0, now - y0 - (cu.user + cu.system) / 1000);
}

function markContended(now: number): void {
  if (now >= contendedUntil) {
    contendedCount++;
    // Busy again soon after the last period ended (within the longest period; finding out can
    // take a while where polls often find something, as with many connections): the host
    // stays busy.
    contendedMs = contendedCount > 1 && now - contendedUntil < CONTENDED_MAX_MS ? Math.min(CONTENDED_MAX_MS, contendedMs * 2) : CONTENDED_MIN_MS;
  }
  contendedUntil = now + contendedMs;
}

/** Activity on conn: poll it from now on, until it has been quiet for IDLE_MS. */
export function kick(conn: SmcdConnection): void {
  conn.lastActive = performance.now();
  if (!hot.has(conn)) {
    hot.add(conn);
    wake(conn);
    conn.rx.disarm();
  }
  if (!scheduled) {
    scheduled = true;
    setImmediate(spin);
  }
}

export function forget(conn: SmcdConnection): void {
  hot.delete(conn);
  wake(conn);
}

function spin(): void {
  scheduled = false;
  const t0 = performance.now();
  let now = t0;
  let any = false;
  const busy = now < contendedUntil;
  let longYield = false;
  for (;;) {
    for (const c of hot) {
      if (processSafely(c)) { any = true; c.lastActive = performance.now(); }
    }
    if (any) { longYields = 0; break; }
    if (busy) break;
    if (longYield) {
      if (++longYields >= LONG_YIELDS) {
        longYields = 0;
        markContended(now);
      }
      break;
    }
    if (now - t0 >= SLICE_MS) break;
    // The peer we wait for may be runnable on this very CPU: the doorbell's wakeup tends to
    // place the woken process next to the waker. Spinning would then keep it off the CPU until
    // we give up and arm, and the two sides end up taking turns; yielding lets it run. If the
    // yield took long and the next poll still finds nothing, it was not the peer that ran.
    if (YIELD) {
      const y0 = performance.now();
      const cu0 = process.cpuUsage();
      schedYield();
      now = performance.now();
      const lost = now - y0 > LONG_YIELD_MS ? lostToOthers(y0, now, cu0) : 0;
      longYield = lost > LONG_YIELD_MS;
      if (lost > SLICE_YIELD_MS) {
        longYields = 0;
        markContended(now);
        break;
      }
    } else {
      now = performance.now();
    }
  }
  now = performance.now();
  const idle = now < contendedUntil ? 0 : IDLE_MS;
  for (const c of hot) {
    if (c.released) { hot.delete(c); continue; }
    if (now - c.lastActive < idle) continue;
    c.rx.arm();
    if (processSafely(c)) {
      c.rx.disarm();
      c.lastActive = now;
    } else {
      hot.delete(c);
      sleep(c);
    }
  }
  if (hot.size > 0 && !scheduled) {
    scheduled = true;
    setImmediate(spin);
  }
}

/**
 * Poll one connection. Its processing runs application callbacks ('data', 'drain', write
 * callbacks); one that throws must not stop the poller (every hot connection would stay
 * disarmed, unpolled): the exception is thrown again on its own tick, as an uncaught exception
 * from a 'data' handler is, and the connection counts as active.
 */
function processSafely(c: SmcdConnection): boolean {
  try {
    return c.process();
  } catch (err) {
    rethrowLater(err);
    return true;
  }
}

/**
 * An exception from an application callback ('data', 'drain', a write callback) caught where
 * it must not unwind (a poll loop, a batch of completions): thrown again on its own tick, so it
 * reaches 'uncaughtException' (or ends the process) as one from a node:net 'data' handler
 * does, while the loop that caught it goes on. SMC-R's link (smcr/link.ts) and link group
 * (smcr/lgr.ts) use it for their CDC and completion handling.
 */
export function rethrowLater(err: unknown): void {
  process.nextTick(() => { throw err; });
}

export function hotCount(): number {
  return hot.size;
}

// Asleep: armed, waiting for the doorbell. Two things a doorbell alone cannot do:
// - A ring can be lost: the writer clears our armed flag before it rings, and the ring goes
//   nowhere if the doorbell's file was removed (a tmp cleaner), its connect failed or the
//   connection was refused; the writer's later writes then see us disarmed and ring no more.
//   So every RECHECK_MS the sleepers' CDCs are looked at (four word loads each; the timer is
//   unref'd, and exists only while something sleeps). A sleeper that finds a change wakes as
//   a ring would wake it, and its device checks that its doorbell is still there.
// - The doorbell socket is unref'd, so a writer waiting for room in the peer's ring keeps
//   nothing alive once it sleeps: where the peer finished writing (its end read, libuv stops
//   reading TCP) the process would exit mid-write. Such a writer holds the event loop
//   (writeWaits). Its peer's process is looked for then too: a peer that died after its end
//   (TCP tells us nothing more) would never make room, and the write would wait forever.
/** How often sleeping connections are looked at (ms). */
const RECHECK_MS = 500;
const asleep = new Set<SmcdConnection>();
/** The sleepers whose writer waits for room in the peer's ring (a subset of asleep), each holding the loop. */
const waiting = new Set<SmcdConnection>();
let recheckTimer: NodeJS.Timeout | undefined;

function sleep(c: SmcdConnection): void {
  asleep.add(c);
  if (c.writerWaits && !waiting.has(c)) {
    waiting.add(c);
    writeWaits();
  }
  if (!recheckTimer) {
    recheckTimer = setInterval(recheck, RECHECK_MS);
    recheckTimer.unref();
  }
}

function wake(c: SmcdConnection): void {
  if (!asleep.delete(c)) return;
  if (waiting.delete(c)) writeWaitEnded();
}

function recheck(): void {
  for (const c of asleep) {
    if (c.released) { forget(c); continue; }
    if (processSafely(c)) {
      c.rx.ringMissed();
      kick(c);
      continue;
    }
    // Only a waiting writer asks after its peer's process: a /proc read, where the rest is none.
    if (!waiting.has(c)) continue;
    // Its write may have ended meanwhile (the socket dropped it, the peer closed) without a wake.
    if (!c.writerWaits) {
      waiting.delete(c);
      writeWaitEnded();
      continue;
    }
    try {
      c.checkPeer();
    } catch (err) {
      rethrowLater(err);
    }
  }
  if (asleep.size === 0 && recheckTimer) {
    clearInterval(recheckTimer);
    recheckTimer = undefined;
  }
}

// A write waiting for room in the peer's buffer (SMC-D's ring, SMC-R's RMB) keeps the event loop
// alive, as a pending TCP write does (libuv counts a write request as active whatever the
// handle's ref). Nothing else would: the doorbells and the rxe device are unref'd, the wait has
// no request outstanding, and once the peer's end was read libuv reads TCP no further, so a
// process uploading to a peer that half-closed and reads slowly exited mid-write. One handle for
// all waiting writers: a timer made once, ref'd only while some write waits (it does nothing).
let waitingWrites = 0;
let writeHold: NodeJS.Timeout | undefined;

/** A write waits for the peer (call writeWaitEnded once when it no longer does). */
export function writeWaits(): void {
  if (waitingWrites++ > 0) return;
  writeHold ??= setInterval(() => {}, 2 ** 30); // under setInterval's limit: it only needs to exist
  writeHold.ref();
}

export function writeWaitEnded(): void {
  if (--waitingWrites === 0) writeHold!.unref();
}

// Waiting for a reply that comes within a few hundred microseconds (a CLC message; an SMC-R
// connection's CDC after it sent data): keep the event loop polling (setImmediate makes libuv
// poll with a zero timeout) instead of letting the process sleep, so the reply's arrival costs
// neither a wakeup here nor a cross-CPU wakeup for the sender's write. SMC-R has no shared
// memory to poll: its data arrive as UDP datagrams, so staying awake is its polling. Bounded,
// so a slow or silent peer costs at most HANDSHAKE_MS (a handshake) or IDLE_MS (a connection
// gone quiet) of CPU; and given up on busy CPUs, told as spin() tells them.
const waiters = new Map<() => boolean, number>();
let waitScheduled = false;
/** Until when SMC-R traffic keeps the event loop awake (performance.now() ms). */
let activeUntil = 0;
/**
 * How often the awake loop yields while only SMC-R traffic keeps it awake (ms): a yield per turn
 * costs a system call and, where another task is runnable, its slice; handshakes yield every turn.
 */
const AWAKE_YIELD_MS = envMicros('SOFTRDMA_SMC_AWAKE_YIELD_US', 1000);
/** The window over which the awake loop weighs what its yields lost to other tasks (ms). */
const AWAKE_WINDOW_MS = 20;
/**
 * Busy CPUs, for the awake loop: its late yields (over LONG_YIELD_MS) lost more than this share
 * of a window's time to other tasks. A single late yield says little here: with both ends of a
 * connection spinning on a 2-CPU host, a GC or compiler thread of either process, or a kernel
 * thread, takes a yield's CPU now and then; a busy loop takes it at every yield.
 */
const AWAKE_LOST_SHARE = 0.25;
let lastAwakeYield = 0;
let windowStart = 0;
let windowLost = 0;

/** Keep the event loop awake until settled() returns true, for at most the handshake bound. */
export function stayAwakeUntil(settled: () => boolean): void {
  if (HANDSHAKE_MS <= 0) return;
  waiters.set(settled, performance.now() + HANDSHAKE_MS);
  scheduleAwake();
}

/**
 * SMC-R traffic (a CDC sent with data, or one received): keep the event loop awake until the
 * connections have been quiet for IDLE_MS, as spin() polls an SMC-D connection that long.
 */
export function smcrActivity(): void {
  if (IDLE_MS <= 0) return;
  activeUntil = performance.now() + IDLE_MS;
  scheduleAwake();
}

/** Whether the event loop is being kept awake (handshake waiters or SMC-R traffic), for tests and status. */
export function pollerAwake(): boolean {
  return waitScheduled;
}

function scheduleAwake(): void {
  if (!waitScheduled) {
    waitScheduled = true;
    setImmediate(awake);
  }
}

function awake(): void {
  waitScheduled = false;
  let now = performance.now();
  // On busy CPUs staying awake only delays the peer: sleep until the reply wakes us.
  const give = now < contendedUntil;
  for (const [settled, deadline] of waiters) if (give || now > deadline || settled()) waiters.delete(settled);
  if (waiters.size > 0 || (!give && now < activeUntil)) {
    waitScheduled = true;
    setImmediate(awake);
    // As in spin(): the peer that is to answer may be waiting for this CPU.
    // A handshake's wait yields every turn and judges nothing (as before SMC-R used this loop:
    // SMC-D's short connections were tuned with it); SMC-R traffic alone yields once in a while
    // and weighs what its yields lost.
    if (YIELD && waiters.size > 0) schedYield();
    else if (YIELD && now - lastAwakeYield >= AWAKE_YIELD_MS) {
      const y0 = now;
      const cu0 = process.cpuUsage();
      schedYield();
      now = performance.now();
      lastAwakeYield = now;
      if (now - y0 > LONG_YIELD_MS) windowLost += lostToOthers(y0, now, cu0);
      if (now - windowStart >= AWAKE_WINDOW_MS) {
        if (windowLost > (now - windowStart) * AWAKE_LOST_SHARE) markContended(now);
        windowStart = now;
        windowLost = 0;
      }
    }
  }
}
