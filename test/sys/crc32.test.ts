// The ICRC's CRC-32: native/crc32.c's PCLMULQDQ fold must return what zlib.crc32 returns for
// every length, alignment and starting value; the build must be the one in use where it can
// be (a C compiler and the CPU flag); and without it softrdma falls back to node:zlib.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { crc32 as zlibCrc32 } from 'node:zlib';
import fc from 'fast-check';
import { ADDON_PATH, crc32, crc32Implementation, type Crc32 } from '../../src/sys/crc32.js';
import { cpuFoldBits, haveCc } from '../helpers/native-build.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const addonFile = fileURLToPath(ADDON_PATH);
/** zlib.crc32, except that nothing appended leaves the CRC as it was (zlib returns 0 for no bytes). */
const ref = (v: Uint8Array, start = 0): number => (v.length === 0 ? start >>> 0 : zlibCrc32(v, start));
const addon = fs.existsSync(addonFile) ? createRequire(import.meta.url)(addonFile) as { crc32: Crc32; accelerated: boolean; foldBits: number } : undefined;

describe('crc32 (the ICRC)', () => {
  it('is the native fold on a machine that can build and run it', { skip: haveCc && cpuFoldBits > 0 && process.env.SOFTRDMA_NATIVE !== '0' ? false : 'no C compiler, no PCLMULQDQ, or SOFTRDMA_NATIVE=0: node:zlib is used' }, () => {
    assert.ok(addon, `${addonFile} was not built (npm install runs scripts/build-native.mjs)`);
    assert.equal(addon.accelerated, true);
    assert.equal(crc32Implementation.impl, 'pclmul');
    assert.equal(crc32Implementation.foldBits, addon.foldBits);
    assert.equal(crc32, addon.crc32);
  });

  describe('the native addon against zlib', { skip: addon?.accelerated ? false : 'the addon is not built or not accelerated here' }, () => {
    const native = addon!.crc32;

    it('the check value and the edges of the fold: every length 0..300, each at 16 alignments', () => {
      assert.equal(native(Buffer.from('123456789')), 0xcbf43926); // CRC-32's published check value
      const big = Buffer.alloc(320);
      for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 7) & 0xff;
      for (let off = 0; off < 16; off++) {
        for (let len = 0; off + len <= 300; len++) {
          const v = big.subarray(off, off + len);
          assert.equal(native(v, 0x12345678), ref(v, 0x12345678), `offset ${off} length ${len}`);
        }
      }
    });

    it('random data, lengths, offsets and starting values (property)', () => {
      fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 9000 }), fc.nat(15), fc.integer({ min: 0, max: 0xffffffff }), (bytes, off, start) => {
        const v = bytes.subarray(Math.min(off, bytes.length));
        return native(v, start) === ref(v, start);
      }), { numRuns: 2000 });
    });

    it('chains as zlib does: crc32(b, crc32(a)) is the CRC of a then b', () => {
      const a = Buffer.alloc(5000, 0xa5);
      const b = Buffer.alloc(777, 0x3c);
      assert.equal(native(b, native(a)), zlibCrc32(Buffer.concat([a, b])));
    });

    it('a 64 MiB buffer, and all-zero and all-ones ones', () => {
      const huge = Buffer.alloc(64 << 20);
      for (let i = 0; i < huge.length; i += 4096) huge[i] = i >>> 12;
      assert.equal(native(huge), zlibCrc32(huge));
      for (const fill of [0, 0xff]) {
        const b = Buffer.alloc(4096 + 13, fill);
        assert.equal(native(b, 0xffffffff), zlibCrc32(b, 0xffffffff));
      }
    });

    it('bad arguments throw a TypeError with a code, never crash', () => {
      for (const bad of [undefined, null, 'abc', 42, {}, [1, 2]]) {
        assert.throws(() => native(bad as unknown as Uint8Array), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
      }
      assert.throws(() => native(Buffer.alloc(1), 'x' as unknown as number), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
      // Any typed array view is bytes, as for zlib.crc32.
      const u16 = new Uint16Array([0x0201, 0x0403]);
      assert.equal(native(u16 as unknown as Uint8Array), zlibCrc32(Buffer.from([1, 2, 3, 4])));
    });
  });

  // Each process picks its fold once (at the addon's first load), so each path runs in its own.
  it('every fold the addon has (256-bit, 128-bit, bytes only) gives zlib\'s results', { skip: addon ? false : 'the addon is not built here' }, () => {
    const script = `
      const { crc32: z } = require('node:zlib');
      const a = require(${JSON.stringify(addonFile)});
      let bad = 0, seed = 12345;
      const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0);
      const big = Buffer.alloc(70000);
      for (let i = 0; i < big.length; i++) big[i] = rnd() >>> 24;
      const ref = (v, s) => (v.length === 0 ? s >>> 0 : z(v, s));
      for (let off = 0; off < 16; off++) for (let len = 0; len <= 600; len++) if (a.crc32(big.subarray(off, off + len), 7) !== ref(big.subarray(off, off + len), 7)) bad++;
      for (let i = 0; i < 3000; i++) {
        const off = rnd() % 64, len = rnd() % 66000, s = rnd();
        if (a.crc32(big.subarray(off, off + len), s) !== ref(big.subarray(off, off + len), s)) bad++;
      }
      console.log(JSON.stringify({ foldBits: a.foldBits, bad }));`;
    for (const cap of [256, 128, 0]) {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, SOFTRDMA_CRC_FOLD: String(cap) }, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { foldBits: Math.min(cap, cpuFoldBits), bad: 0 }, `SOFTRDMA_CRC_FOLD=${cap}`);
    }
  });

  it('empty data leaves the CRC as it was, in whichever implementation is in use', () => {
    assert.equal(crc32(new Uint8Array(0), 0xdeadbeef), 0xdeadbeef);
    assert.equal(crc32(Buffer.alloc(0)), 0);
  });

  it('the build script takes a CC with arguments, and a package directory it cannot write is no failed install', { skip: haveCc ? false : 'no C compiler' }, () => {
    const tmp = fs.mkdtempSync('/tmp/softrdma-native-');
    try {
      fs.mkdirSync(path.join(tmp, 'scripts'));
      fs.mkdirSync(path.join(tmp, 'native'));
      fs.copyFileSync(path.join(root, 'scripts', 'build-native.mjs'), path.join(tmp, 'scripts', 'build-native.mjs'));
      fs.copyFileSync(path.join(root, 'native', 'crc32.c'), path.join(tmp, 'native', 'crc32.c'));
      const build = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], { env: { ...process.env, SOFTRDMA_NATIVE: '', ...env }, encoding: 'utf8' });
      // "env cc": a program and its arguments, as CC="ccache gcc" is.
      const r = build({ CC: `env ${process.env.CC || 'cc'}` });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.ok(fs.existsSync(path.join(tmp, 'native', 'build', 'crc32.node')));
      // A file where the build directory would go: mkdir fails as it would in a read-only tree.
      fs.rmSync(path.join(tmp, 'native', 'build'), { recursive: true });
      fs.writeFileSync(path.join(tmp, 'native', 'build'), '');
      const ro = build({});
      assert.equal(ro.status, 0, ro.stderr);
      assert.match(ro.stderr, /cannot build the native CRC here: .*node:zlib's CRC/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('SOFTRDMA_NATIVE=0 makes softrdma use node:zlib', () => {
    const mod = fileURLToPath(new URL('../../src/sys/crc32.js', import.meta.url));
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(mod)}).then((m) => console.log(JSON.stringify({ ...m.crc32Implementation, empty: m.crc32(new Uint8Array(0), 7), check: m.crc32(Buffer.from('123456789')) })))`], { env: { ...process.env, SOFTRDMA_NATIVE: '0' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { impl: 'zlib', why: 'SOFTRDMA_NATIVE=0', empty: 7, check: 0xcbf43926 });
  });

  it('the build script, given a compiler that fails, installs anyway and leaves the built addon as it was', () => {
    const before = fs.existsSync(addonFile) ? fs.readFileSync(addonFile) : undefined;
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { env: { ...process.env, CC: '/bin/false', SOFTRDMA_NATIVE: '' }, encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stderr, before ? /failed .*the addon built before .* stays/ : /failed .*node:zlib's CRC/);
    const after = fs.existsSync(addonFile) ? fs.readFileSync(addonFile) : undefined;
    assert.deepEqual(after, before);
    assert.deepEqual(fs.readdirSync(path.dirname(addonFile)).filter((f) => f.endsWith('.tmp')), []);
  });
});
