// smc-run at a terminal, as a shell's job: the program runs in a session of its own
// (forward-signals.ts), so a terminal's Ctrl-C and Ctrl-Z, which go to the terminal's foreground
// process group (smc-run's), reach it only as smc-run passes them on, once; Ctrl-Z leaves
// smc-run stopped too, so the shell sees the job stopped, and its SIGCONT (fg) resumes both.
// A real pseudo-terminal (python3's pty.fork: the child is a session leader with the pty as its
// controlling terminal) with the terminal's own signal keys, not a kill() standing in for them.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('smc-run-tty');
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

// The program counts its SIGINTs (a second would be a double delivery) and says when it continues.
const APP = "let n = 0; process.on('SIGINT', () => { console.log('got SIGINT ' + (++n)); setTimeout(() => process.exit(7), 300); });" +
  " process.on('SIGCONT', () => console.log('continued')); console.log('ready'); setInterval(() => {}, 1000);";

const DRIVER = `
import os, pty, sys, time, select, json, signal
node, cli, app = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.execv(node, [node, cli, 'smc-run', '--', node, '-e', app])
out = b''
def read_until(pat, t=20):
    global out
    end = time.time() + t
    while pat.encode() not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: out += os.read(fd, 4096)
            except OSError: break
    return pat.encode() in out
res = {'ready': read_until('ready')}
os.write(fd, b'\\x1a')
_, st = os.waitpid(pid, os.WUNTRACED)
res['stopped'] = os.WIFSTOPPED(st)
os.kill(pid, signal.SIGCONT)
res['continued'] = read_until('continued')
os.write(fd, b'\\x03')
res['gotInt'] = read_until('got SIGINT 1')
_, st = os.waitpid(pid, 0)
read_until('(the rest)', 0.3)
res['exit'] = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -os.WTERMSIG(st)
res['out'] = out.decode(errors='replace')
print(json.dumps(res))
`;

// A machine without pseudo-terminals (no /dev/ptmx in a container) cannot run it: skipped, saying so.
const python = spawnSync('python3', ['-c', 'import pty; pty.openpty()'], { encoding: 'utf8' });
const skip = python.status === 0 ? false : `needs python3 and a pseudo-terminal (${python.error?.message ?? python.stderr.trim().split('\n').at(-1)})`;

test('smc-run at a terminal: Ctrl-Z stops the program and smc-run (the job), SIGCONT resumes both, Ctrl-C reaches the program once and smc-run exits with its status', { skip, timeout: 60_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smc-run-tty-'));
  try {
    const driver = path.join(dir, 'driver.py');
    fs.writeFileSync(driver, DRIVER);
    const r = spawnSync('python3', [driver, process.execPath, CLI, APP], { encoding: 'utf8', timeout: 50_000, env: { ...process.env, SOFTRDMA_RUNTIME_DIR: runtime } });
    assert.equal(r.status, 0, `driver: ${r.stderr}`);
    const res = JSON.parse(r.stdout) as { ready: boolean; stopped: boolean; continued: boolean; gotInt: boolean; exit: number; out: string };
    assert.ok(res.ready, res.out);
    assert.ok(res.stopped, 'smc-run stopped itself after Ctrl-Z, as the exec\'d program would have been');
    assert.ok(res.continued, `the program continued after SIGCONT: ${res.out}`);
    assert.ok(res.gotInt, res.out);
    assert.equal(res.out.split('got SIGINT').length - 1, 1, `Ctrl-C reached the program once: ${res.out}`);
    assert.equal(res.exit, 7, `smc-run exits with the program's status: ${res.out}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
