// Where a command name leads: the file execvp would run.

import fs from 'node:fs';
import path from 'node:path';

/** The file a command name runs: as given if it has a slash, else the first match on PATH. */
export function resolveCommand(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const executable = (f: string) => {
    try { fs.accessSync(f, fs.constants.X_OK); return fs.statSync(f).isFile(); } catch { return false; }
  };
  if (name.includes('/')) return executable(name) ? path.resolve(name) : undefined;
  for (const dir of (env.PATH ?? '').split(':')) {
    const f = path.join(dir || '.', name);
    if (executable(f)) return path.resolve(f);
  }
  return undefined;
}

/**
 * Why `name` does not run, as bash says it (smc_run is a bash script that execs the command): a
 * path to a directory is "Is a directory" and to a file without the execute bit "Permission
 * denied", status 126; a PATH search skips directories and reports a non-executable file found
 * on it as "Permission denied", 126; nothing at all is "command not found", 127.
 */
export function whyNotRunnable(name: string, env: NodeJS.ProcessEnv = process.env): { code: 126 | 127; why: string } {
  const stat = (f: string) => { try { return fs.statSync(f); } catch { return undefined; } };
  if (name.includes('/')) {
    const st = stat(name);
    if (st) return { code: 126, why: st.isDirectory() ? 'Is a directory' : 'Permission denied' };
    return { code: 127, why: 'command not found' };
  }
  for (const dir of (env.PATH ?? '').split(':')) {
    if (stat(path.join(dir || '.', name))?.isFile()) return { code: 126, why: 'Permission denied' };
  }
  return { code: 127, why: 'command not found on PATH' };
}
