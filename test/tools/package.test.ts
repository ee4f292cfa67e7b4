// What `npm pack` ships and what a project that installs it gets: the library and the command
// (no tests, benchmarks or examples; no source maps pointing at files the tarball lacks; no
// @internal declarations), package.json's platform and Node range, the command's --version,
// import and require() from JavaScript, and the types under every TypeScript moduleResolution.
// Then the README's "Use it in a project", as written: a scratch project installs softrdma
// with npm from a git URL (npm builds it with the `prepare` script) and from a tarball, runs
// `npx softrdma`, and type-checks and runs every example in examples/ against what it installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuFoldBits, haveCc } from '../helpers/native-build.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

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
    import { createRxeDevice, connectQp, Mtu, QpType, type MtuValue, type CQ, type WorkCompletion, type QpCreateAttr, type SendWr, type AH } from 'softrdma';
    import { createEventChannel, createId, type RdmaCmEvent } from 'softrdma/cm';
    import * as ism from 'softrdma/ism';
    type IsAny<T> = 0 extends 1 & T ? true : false;
    export function cm(): void {
      const ch = createEventChannel();
      const id = createId(ch, 'tcp');
      ch.on('event', (e: RdmaCmEvent) => { void e.event; });
      id.destroyId();
      void ism;
    }
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
      const ah = undefined as unknown as AH;
      const udSend: SendWr = { wrId: 1, opcode: 0, ud: { ah, remoteQpn: 2, remoteQkey: 3 } };
      // @ts-expect-error a UD send names an AH this API made, not its attributes
      const udBad: SendWr = { wrId: 1, opcode: 0, ud: { ah: { portNum: 1 }, remoteQpn: 2, remoteQkey: 3 } };
      void udSend; void udBad;
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

/** A command's outcome; never throws, so a test can tell a cache miss from a failure. */
function sh(cmd: string, args: string[], opts: { cwd?: string; timeout?: number; env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeout ?? 120_000, env: { ...process.env, ...opts.env }, maxBuffer: 16 << 20, signal: opts.signal }, (err, stdout, stderr) => {
      resolve({ code: err ? (child.exitCode ?? -1) : 0, stdout, stderr });
    });
  });
}

/** What each example prints when it works (examples.test.ts checks every line; here, that it ran at all). */
const EXAMPLE_SAYS: Record<string, RegExp> = { 'verbs-tour': /^hello over RoCEv2$/m, smc: /^SMCD$/m };

test('a scratch project installs softrdma from a git URL and from a tarball, runs npx softrdma and every example', async (t) => {
  const head = await sh('git', ['-C', root, 'rev-parse', 'HEAD']);
  if (head.code !== 0) return t.skip(`not a git checkout (${head.stderr.trim() || 'git failed'}): no git URL to install from`);
  const runtime = testRuntimeDir('package');
  const stop = new AbortController(); // a failure while the git URL's install still runs ends it
  t.after(() => stop.abort());
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-install-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const examples = fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3)).sort();
  assert.deepEqual(examples, Object.keys(EXAMPLE_SAYS).sort(), 'every example has its line here');

  // A clean clone at HEAD: what a git URL gives is what is committed, never this checkout's dist/.
  const clone = path.join(tmp, 'softrdma');
  for (const args of [['clone', '-q', '--no-checkout', root, clone], ['-C', clone, 'checkout', '-q', '--detach', head.stdout.trim()]]) {
    const r = await sh('git', args);
    assert.equal(r.code, 0, r.stderr);
  }
  const [packed] = JSON.parse(pack(['--pack-destination', tmp])) as Array<{ filename: string }>;

  // The README's two ways. --offline: tests do not reach the registry; everything comes from
  // npm's cache (koffi, and for the git URL the devDependencies `prepare` needs, which npm
  // installs in its copy of the clone with the same flag). Cache misses skip, saying so.
  // The git URL's install (a dependency install and a build) takes most of the time: the
  // tarball's project is checked while it runs.
  const install = (kind: string, spec: string) => {
    const app = path.join(tmp, kind === 'git URL' ? 'from-git' : 'from-tarball');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    return { kind, spec, app, done: sh('npm', ['install', '--offline', '--no-audit', '--no-fund', spec], { cwd: app, timeout: 180_000, signal: stop.signal }) };
  };
  const fromGit = install('git URL', `git+file://${clone}`);
  const fromTarball = install('tarball', path.join(tmp, packed!.filename));
  for (const { kind, spec, app, done } of [fromTarball, fromGit]) {
    const inst = await done;
    if (inst.code !== 0 && /ENOTCACHED/.test(inst.stdout + inst.stderr)) {
      return t.skip(`npm install from a ${kind} needs packages that are not in npm's cache, and this test works offline (run npm ci once):\n${inst.stderr}`);
    }
    assert.equal(inst.code, 0, `npm install ${spec}:\n${inst.stdout}${inst.stderr}`);
    const installed = path.join(app, 'node_modules', 'softrdma');
    assert.equal((JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')) as { version: string }).version, pkg.version);
    assert.ok(fs.existsSync(path.join(installed, 'dist', 'src', 'smc', 'index.js')), `${kind}: built`);
    assert.ok(!fs.existsSync(path.join(installed, 'src')) && !fs.existsSync(path.join(installed, 'examples')), `${kind}: only what the package's files list`);
    // npm ran the install script: with a C compiler here, the ICRC's native CRC was built and is used.
    if (haveCc && cpuFoldBits > 0) {
      const impl = await sh(process.execPath, ['--input-type=module', '-e', "import('./node_modules/softrdma/dist/src/sys/crc32.js').then((m) => console.log(m.crc32Implementation.impl))"], { cwd: app });
      assert.equal(impl.stdout.trim(), 'pclmul', `${kind}: the native CRC (native/build/crc32.node)\n${impl.stderr}`);
    }

    const version = await sh('npx', ['softrdma', '--version'], { cwd: app });
    assert.equal(version.stdout.trim(), pkg.version, `${kind}: npx softrdma --version\n${version.stderr}`);
    const help = await sh('npx', ['softrdma', '--help'], { cwd: app });
    assert.match(help.stdout, /^usage: softrdma <command>/, `${kind}: npx softrdma --help\n${help.stderr}`);

    // The examples as a user would copy them: type-checked against the installed declarations
    // (node's types from this checkout), then run, importing 'softrdma' from node_modules.
    fs.mkdirSync(path.join(app, 'examples'));
    for (const e of examples) fs.copyFileSync(path.join(root, 'examples', `${e}.ts`), path.join(app, 'examples', `${e}.ts`));
    fs.mkdirSync(path.join(app, 'node_modules', '@types'), { recursive: true });
    fs.symlinkSync(path.join(root, 'node_modules', '@types', 'node'), path.join(app, 'node_modules', '@types', 'node'));
    const tsc = await sh(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--strict', '--target', 'es2022', '--module', 'nodenext',
      '--moduleResolution', 'nodenext', '--types', 'node', '--skipLibCheck', '--outDir', 'out', ...examples.map((e) => `examples/${e}.ts`)], { cwd: app });
    assert.equal(tsc.code, 0, `${kind}: tsc examples/*.ts\n${tsc.stdout}${tsc.stderr}`);
    for (const e of examples) {
      const runIt = () => sh(process.execPath, [path.join('out', `${e}.js`)], { cwd: app, timeout: 20_000, env: { SOFTRDMA_RUNTIME_DIR: runtime } });
      let r = await runIt();
      // smc.ts listens on port 7000, as written; examples.test.ts may hold it for a moment.
      for (let i = 0; i < 5 && r.code !== 0 && /EADDRINUSE/.test(r.stderr); i++) {
        await new Promise((res) => setTimeout(res, 500));
        r = await runIt();
      }
      assert.equal(r.code, 0, `${kind}: examples/${e}.ts\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout, EXAMPLE_SAYS[e]!, `${kind}: examples/${e}.ts`);
    }
  }
});
