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
