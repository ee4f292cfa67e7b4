// A runtime directory of the test file's own (listeners, ism devices, status sockets), so
// concurrent test files do not see each other's entries; removed when the file's tests end.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

/** Makes the directory, points SOFTRDMA_RUNTIME_DIR of this process (and its children) at it. */
export function testRuntimeDir(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `softrdma-${name}-`));
  process.env.SOFTRDMA_RUNTIME_DIR = dir;
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
