// A process whose DEVICE_REMOVAL handler throws (test/cm/review-fixes.test.ts runs it): three
// listeners on one device, the device closed. Prints one JSON line: how many times the handler
// heard DEVICE_REMOVAL, the ids' states, what device.close() threw, and the exceptions that
// came out as uncaught (the process handles them, so it lives to tell).

import { writeSync } from 'node:fs';
import { createRxeDevice } from '../../src/index.js';
import { createEventChannel, createId } from '../../src/cm/index.js';

const uncaught: string[] = [];
process.on('uncaughtException', (e) => { uncaught.push(e.message); });

const dev = await createRxeDevice({ address: '127.0.0.3', port: 0 });
const ch = createEventChannel();
const ids = [1, 2, 3].map(() => {
  const id = createId(ch, 'tcp');
  id.bindAddr('127.0.0.3', 0);
  id.listen();
  return id;
});
let heard = 0;
ch.on('DEVICE_REMOVAL', () => {
  heard++;
  throw new Error(`handler bug ${heard}`);
});
let closeError: string | undefined;
try {
  await dev.close();
} catch (err) {
  closeError = (err as Error).message;
}
// Rethrown exceptions come on the ticks after the removal: let them through first.
await new Promise((resolve) => setImmediate(resolve));
writeSync(1, JSON.stringify({ heard, states: ids.map((id) => id.state), closeError, uncaught }) + '\n');
ch.close();
