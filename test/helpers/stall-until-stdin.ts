// For helper processes that must stall their event loop on cue: block in a read of stdin
// until a line (or the end) comes, then exit when stdin ends.

import fs from 'node:fs';

export function stallUntilStdin(): void {
  const b = Buffer.alloc(64);
  for (;;) {
    try {
      fs.readSync(0, b);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); // a non-blocking stdin: poll it
    }
  }
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}
