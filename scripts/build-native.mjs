#!/usr/bin/env node
// Builds native/crc32.c into native/build/crc32.node with the system's C compiler: npm runs
// this at install (package.json "install"). A machine without a compiler still installs:
// softrdma then uses node:zlib's CRC (src/sys/crc32.ts), slower, the same results. Plain
// JavaScript, so it runs before anything is compiled; SOFTRDMA_NATIVE=0 skips the build.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'native', 'crc32.c');
const outDir = path.join(root, 'native', 'build');
const out = path.join(outDir, 'crc32.node');

function note(msg) {
  process.stderr.write(`softrdma: ${msg}; the RoCEv2 ICRC will use node:zlib's CRC (slower, same results)\n`);
}

if (process.env.SOFTRDMA_NATIVE === '0') process.exit(0);
if (process.platform !== 'linux' || process.arch !== 'x64') {
  note(`no native CRC for ${process.platform}/${process.arch} yet`);
  process.exit(0);
}
fs.mkdirSync(outDir, { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
const cc = process.env.CC || 'cc';
const r = spawnSync(cc, ['-O2', '-Wall', '-shared', '-fPIC', '-fvisibility=hidden', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error || r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  note(`building ${path.relative(root, src)} with ${cc} failed (${r.error ? r.error.message : `exit ${r.status}`})`);
  process.exit(0);
}
// Renamed into place: a process loading the addon never sees half a file.
fs.renameSync(tmp, out);
