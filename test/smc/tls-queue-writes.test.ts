// queueWrites (src/smc/tls.ts) on Node's own JSStreamSocket, with a stand-in for TLSWrap (the
// JS stream's handle): the order of writes and shutdowns that a real TLS session produces only
// with the right timing. Run in a child with --expose-internals (internal/js_stream_socket).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { runNode } from '../helpers/procs.js';

const TLS = pathToFileURL(path.resolve(import.meta.dirname, '../../src/smc/tls.js')).href;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-queue-writes-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The script's log lines, run on a JSStreamSocket over a PassThrough with queueWrites applied. */
async function run(body: string): Promise<string[]> {
  const file = path.join(dir, `s${Math.random().toString(36).slice(2)}.mjs`);
  fs.writeFileSync(file, `
    import { createRequire } from 'node:module';
    import { PassThrough } from 'node:stream';
    import { queueWrites } from ${JSON.stringify(TLS)};
    const require = createRequire(import.meta.url);
    const JSStreamSocket = require('internal/js_stream_socket');
    const stream = new PassThrough();
    const log = [];
    stream.on('data', (d) => log.push('wire ' + d));
    stream.on('finish', () => log.push('wire end'));
    const js = new JSStreamSocket(stream);
    queueWrites(js);
    // TLSWrap's side (the JS stream handle's completions), as the body defines it.
    let tlsWrap = {};
    js._handle.finishWrite = (req, st) => tlsWrap.finishWrite(req, st);
    js._handle.finishShutdown = (req, st) => tlsWrap.finishShutdown(req, st);
    process.on('uncaughtException', (e) => { log.push('uncaught ' + e.code); });
    ${body}
    setTimeout(() => console.log(JSON.stringify(log)), 50);
  `);
  const p = runNode(file, [], { execArgv: ['--expose-internals'] });
  assert.equal(await p.exit(10_000), 0, p.stderr);
  return JSON.parse(p.stdout.trim().split('\n').at(-1)!) as string[];
}

describe('JSStreamSocket writes queued for TLSWrap (queueWrites)', () => {
  it('a write while one is under way waits its turn, in order', async () => {
    const log = await run(`
      tlsWrap = { finishWrite(req, st) { log.push('done ' + req.name + ' ' + st); } };
      js.doWrite({ name: 'a' }, [Buffer.from('a')]);
      js.doWrite({ name: 'b' }, [Buffer.from('b')]);
      js.doWrite({ name: 'c' }, [Buffer.from('c')]);
    `);
    assert.deepEqual(log.filter((l) => !l.startsWith('wire')), ['done a 0', 'done b 0', 'done c 0']);
    assert.deepEqual(log.filter((l) => l.startsWith('wire')), ['wire a', 'wire b', 'wire c']);
  });

  it('a shutdown made inside a write\'s completion, with writes queued, goes after them (was: the assertion of the next write)', async () => {
    // TLSWrap's DoShutdown runs from the empty write's completion (the TLS socket's end() was
    // waiting for it) while its record write waits in the queue.
    const log = await run(`
      const E = { name: 'empty' }, R = { name: 'record' }, S = { name: 'shutdown' };
      tlsWrap = {
        finishWrite(req, st) { log.push('done ' + req.name + ' ' + st); if (req === E) js.doShutdown(S); },
        finishShutdown(req, st) { log.push('shut ' + req.name + ' ' + st); },
      };
      js.doWrite(E, [Buffer.alloc(0)]);
      js.doWrite(R, [Buffer.from('rec')]);
    `);
    assert.ok(!log.some((l) => l.startsWith('uncaught')), log.join(', '));
    assert.deepEqual(log.filter((l) => !l.startsWith('wire')), ['done empty 0', 'done record 0', 'shut shutdown 0']);
    assert.ok(log.indexOf('wire rec') < log.indexOf('wire end'), log.join(', '));
  });
});
