#!/usr/bin/env node
// Builds native/crc32.c into native/build/crc32.node with the system's C compiler: npm runs
// this at install (package.json "install") and `npm run build` does. A machine without a
// compiler, or a package directory it cannot write, still installs: softrdma then uses
// node:zlib's CRC (src/sys/crc32.ts), slower, the same results. Plain JavaScript, so it runs
// before anything is compiled; SOFTRDMA_NATIVE=0 skips the build. CC may carry arguments
// ("ccache gcc"), as make's does.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'native', 'crc32.c');
const outDir = path.join(root, 'native', 'build');
const out = path.join(outDir, 'crc32.node');

function note(msg) {
  // A failed rebuild leaves an addon built before in place, and that one is what loads.
  const then = fs.existsSync(out) ? `the addon built before (${path.relative(root, out)}) stays` : "the RoCEv2 ICRC will use node:zlib's CRC (slower, same results)";
  process.stderr.write(`softrdma: ${msg}; ${then}\n`);
}

if (process.env.SOFTRDMA_NATIVE === '0') process.exit(0);
if (process.platform !== 'linux' || process.arch !== 'x64') {
  note(`no native CRC for ${process.platform}/${process.arch} yet`);
  process.exit(0);
}
const [cc, ...ccArgs] = (process.env.CC || 'cc').trim().split(/\s+/);
const tmp = `${out}.${process.pid}.tmp`;
try {
  fs.mkdirSync(outDir, { recursive: true });
  const r = spawnSync(cc, [...ccArgs, '-O2', '-Wall', '-shared', '-fPIC', '-fvisibility=hidden', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error || r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    note(`building ${path.relative(root, src)} with ${process.env.CC || 'cc'} failed (${r.error ? r.error.message : `exit ${r.status}`})`);
    process.exit(0);
  }
  // Renamed into place: a process loading the addon never sees half a file.
  fs.renameSync(tmp, out);
} catch (err) {
  try { fs.rmSync(tmp, { force: true }); } catch { /* nothing was written there */ }
  note(`cannot build the native CRC here: ${err.message}`);
}
