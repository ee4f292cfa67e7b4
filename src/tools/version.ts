// The version of the installed package, for --version: its package.json, two levels above
// dist/src/tools (and dist/src/cli, which imports this).

import fs from 'node:fs';

export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
