// Two rxe devices (127.0.0.2, 127.0.0.3) and an rdma_cm event channel for each side, for the
// rdma_cm tests; everything is closed whatever the test body does.

import type { Device } from '../../src/index.js';
import { createEventChannel, type EventChannel } from '../../src/cm/index.js';
import { twoDevices } from './pair.js';

export async function onTwoDevices(body: (t: { a: Device; b: Device; sch: EventChannel; cch: EventChannel }) => Promise<void>): Promise<void> {
  const { a, b, close } = await twoDevices();
  const sch = createEventChannel(), cch = createEventChannel();
  try {
    await body({ a, b, sch, cch });
  } finally {
    sch.close();
    cch.close();
    await close();
  }
}
