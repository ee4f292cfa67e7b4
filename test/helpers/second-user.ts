// A second Unix user for isolation tests: made with useradd when the file's tests start,
// removed with userdel when they end. Its processes run with that uid and gid only (libuv
// drops the supplementary groups), from /, with nothing of ours imported: what any other
// user of the host could run.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { after } from 'node:test';

export interface UserProc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  /** The first JSON line printed whose object passes test (default: any), within ms. */
  line<T = Record<string, unknown>>(test?: (o: T) => boolean, ms?: number): Promise<T>;
  /** The exit code; kills the process after ms. */
  exit(ms?: number): Promise<number | null>;
}

export interface SecondUser {
  name: string;
  uid: number;
  gid: number;
  /** Run node -e <code> (CommonJS) as this user, with args in process.argv.slice(1). */
  node(code: string, args?: string[]): UserProc;
}

/** Why a second user cannot be had here, or undefined if it can. */
export function secondUserUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (useradd, and running a process as another user)';
  try {
    execFileSync('useradd', ['--help'], { stdio: 'ignore' });
  } catch {
    return 'useradd is not available';
  }
  return undefined;
}

export function secondUser(tag: string): SecondUser {
  const name = `srdma-${tag}-${process.pid}`.slice(0, 31);
  execFileSync('useradd', ['--no-create-home', '--system', '--shell', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  after(() => { try { execFileSync('userdel', [name], { stdio: 'ignore' }); } catch { /* already gone */ } });
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  return {
    name, uid, gid,
    node(code, args = []) {
      const child = spawn(process.execPath, ['-e', code, ...args], { uid, gid, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
      const closed = new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
      const p: UserProc = {
        child, stdout: '', stderr: '',
        line<T>(test: (o: T) => boolean = () => true, ms = 20_000): Promise<T> {
          return new Promise((resolve, reject) => {
            const check = () => {
              for (const l of p.stdout.split('\n')) {
                if (!l.startsWith('{')) continue;
                const o = JSON.parse(l) as T;
                if (test(o)) { done(); resolve(o); return; }
              }
            };
            const onExit = () => { check(); done(); reject(new Error(`${name}'s process exited first\n${p.stdout}${p.stderr}`)); };
            const timer = setTimeout(() => { done(); reject(new Error(`no such line from ${name}'s process in ${ms} ms\n${p.stdout}${p.stderr}`)); }, ms);
            const done = () => { clearTimeout(timer); child.stdout!.off('data', check); child.off('exit', onExit); };
            child.stdout!.on('data', check);
            child.once('exit', onExit);
            check();
          });
        },
        exit(ms = 20_000) {
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<number | null>((_, reject) => {
            timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${name}'s process still running after ${ms} ms\n${p.stdout}${p.stderr}`)); }, ms);
          });
          return Promise.race([closed, late]).finally(() => clearTimeout(timer));
        },
      };
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { p.stdout += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { p.stderr += d; });
      return p;
    },
  };
}
