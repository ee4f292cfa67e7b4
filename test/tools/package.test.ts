// What `npm pack` ships and what a project that installs it gets: the library and the command
// (no tests, benchmarks or examples; no source maps pointing at files the tarball lacks; no
// @internal declarations), package.json's platform and Node range, the command's --version,
// import and require() from JavaScript, and the types under every TypeScript moduleResolution.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown> & { version: string };
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** `npm pack` without the prepare script: packs the dist/ this test run was built into. */
function pack(args: string[]): string {
  return execFileSync(npm, ['pack', '--ignore-scripts', '--json', ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('package.json: license, platform, Node range, entry points, prepare', () => {
  assert.equal(pkg.license, 'MIT');
  assert.match(fs.readFileSync(path.join(root, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) \d{4} the softrdma authors\n/);
  assert.deepEqual(pkg.os, ['linux']);
  assert.deepEqual(pkg.engines, { node: '>=20.19' });
  assert.match((pkg.scripts as Record<string, string>).prepare!, /tsc -p tsconfig\.build\.json/);
  assert.equal(pkg.types, './dist/src/index.d.ts');
  const exp = pkg.exports as Record<string, { types?: string; default?: string } | string>;
  for (const sub of ['.', './smc', './smc/auto', './ism']) {
    const e = exp[sub] as { types: string; default: string };
    assert.ok(e.types.endsWith('.d.ts') && e.default.endsWith('.js'), sub);
  }
});

test('npm pack: the library, the command, README, LICENSE and docs; no tests, benchmarks, examples or dangling maps', () => {
  const [info] = JSON.parse(pack(['--dry-run'])) as Array<{ files: Array<{ path: string }> }>;
  const files = new Set(info!.files.map((f) => f.path));
  for (const f of ['package.json', 'README.md', 'LICENSE', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/smc/index.js', 'dist/src/smc/index.d.ts',
    'dist/src/smc/auto.js', 'dist/src/smc/socket-events.d.ts', 'dist/src/ism/index.js', 'dist/src/cli/main.js',
    // The README links these; they must be there when it is read from node_modules.
    ...fs.readdirSync(path.join(root, 'docs')).map((d) => `docs/${d}`)]) {
    assert.ok(files.has(f), `${f} is packed`);
  }
  const stray = [...files].filter((f) => /^(dist\/(test|bench|examples)|test|bench|examples|src)\//.test(f) || /\.tsbuildinfo$/.test(f));
  assert.deepEqual(stray, [], 'tests, benchmarks, examples and sources stay out');
  for (const f of files) {
    if (!f.endsWith('.map')) continue;
    const map = JSON.parse(fs.readFileSync(path.join(root, f), 'utf8')) as { sources: string[] };
    for (const s of map.sources) assert.ok(files.has(path.posix.join(path.posix.dirname(f), s)), `${f} points at ${s}, which is not packed`);
  }
  // The declarations carry no @internal members.
  const socketDts = fs.readFileSync(path.join(root, 'dist/src/smc/socket.d.ts'), 'utf8');
  assert.doesNotMatch(socketDts, /\badopt(Client)?\(/);
  assert.doesNotMatch(fs.readFileSync(path.join(root, 'dist/src/smc/index.d.ts'), 'utf8'), /_createServerHandle|BoundSocket/);
});

test('a project that installs the tarball: npx softrdma --version, import, require(), and the types', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-package-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const [packed] = JSON.parse(pack(['--pack-destination', tmp])) as Array<{ filename: string }>;
  const app = path.join(tmp, 'app');
  const mod = path.join(app, 'node_modules');
  fs.mkdirSync(path.join(mod, 'softrdma'), { recursive: true });
  execFileSync('tar', ['-xzf', path.join(tmp, packed!.filename), '-C', path.join(mod, 'softrdma'), '--strip-components=1']);
  // Its dependency and the type packages from this checkout (the test does not reach the registry).
  fs.symlinkSync(path.join(root, 'node_modules', 'koffi'), path.join(mod, 'koffi'));
  fs.symlinkSync(path.join(root, 'node_modules', '@types'), path.join(mod, '@types'));
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));

  const cli = path.join(mod, 'softrdma', 'dist', 'src', 'cli', 'main.js');
  assert.equal(execFileSync(process.execPath, [cli, '--version'], { encoding: 'utf8' }).trim(), pkg.version);
  assert.match(execFileSync(process.execPath, [cli, '--help'], { encoding: 'utf8' }), /^usage: softrdma <command>/);

  fs.writeFileSync(path.join(app, 'run.mjs'), `
    import net from 'softrdma/smc';
    import * as verbs from 'softrdma';
    import { createRequire } from 'node:module';
    const require = createRequire(import.meta.url);
    const viaRequire = require('softrdma/smc');
    console.log(JSON.stringify({ connect: typeof net.connect, getSmcInfo: typeof net.getSmcInfo, createRxeDevice: typeof verbs.createRxeDevice,
      required: typeof viaRequire.createServer, same: viaRequire.default === net }));
  `);
  const out = JSON.parse(execFileSync(process.execPath, [path.join(app, 'run.mjs')], { cwd: app, encoding: 'utf8' })) as Record<string, unknown>;
  assert.deepEqual(out, { connect: 'function', getSmcInfo: 'function', createRxeDevice: 'function', required: 'function', same: true });

  // The types, under each moduleResolution a project may use; the .d.ts files themselves are checked too (no skipLibCheck).
  fs.writeFileSync(path.join(app, 'consumer.ts'), `
    import net from 'softrdma/smc';
    import { connect, getSmcInfo, type SmcInfo } from 'softrdma/smc';
    import { createRxeDevice, connectQp, Mtu, QpType, type MtuValue, type CQ, type WorkCompletion, type QpCreateAttr } from 'softrdma';
    type IsAny<T> = 0 extends 1 & T ? true : false;
    export function typed(cq: CQ): Promise<WorkCompletion> {
      const sock = net.connect(7000, '127.0.0.1');
      sock.on('smc', (info) => { const notAny: IsAny<typeof info> = false; const i: SmcInfo = info; void notAny; void i.mode; });
      sock.on('data', (data) => { const b: Buffer = data; void b; });
      const s2 = connect({ port: 1 });
      void getSmcInfo(s2).pending;
      const mtu: MtuValue = Mtu.MTU_1024;
      void createRxeDevice; void connectQp;
      // @ts-expect-error pathMtu is an Mtu value, not a byte count
      const bad: MtuValue = 1024;
      void mtu; void bad;
      const attr = { qpType: QpType.RC, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1 } };
      // @ts-expect-error without an SRQ, cap.maxRecvWr is required
      const noRecv: QpCreateAttr = attr;
      void noRecv;
      return cq.next();
    }
  `);
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  // node10 ("node"): through typesVersions, with esModuleInterop (tsc --init's default), as the
  // declarations import node's modules by default import.
  for (const [module, resolution] of [['nodenext', 'nodenext'], ['node16', 'node16'], ['esnext', 'bundler'], ['commonjs', 'node10']] as const) {
    const args = [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', module, '--moduleResolution', resolution, '--types', 'node', '--skipLibCheck', 'false',
      ...(resolution === 'node10' ? ['--esModuleInterop'] : []), 'consumer.ts'];
    try {
      execFileSync(process.execPath, args, { cwd: app, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      assert.fail(`tsc --module ${module} --moduleResolution ${resolution}:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
  }
});
