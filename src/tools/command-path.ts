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
 * Why `name` does not run, as a shell says it: a directory or a file without the execute bit
 * (the first one execvp would have tried) is "Is a directory" / "Permission denied", status
 * 126; nothing at all is "command not found", 127.
 */
export function whyNotRunnable(name: string, env: NodeJS.ProcessEnv = process.env): { code: 126 | 127; why: string } {
  const candidates = name.includes('/') ? [name] : (env.PATH ?? '').split(':').map((dir) => path.join(dir || '.', name));
  for (const f of candidates) {
    let st: fs.Stats;
    try { st = fs.statSync(f); } catch { continue; }
    return { code: 126, why: st.isDirectory() ? 'Is a directory' : 'Permission denied' };
  }
  return { code: 127, why: `command not found${name.includes('/') ? '' : ' on PATH'}` };
}
