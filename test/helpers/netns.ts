// Two network namespaces joined by a veth pair, for the tests and benchmarks that run each
// side in its own namespace (rxe under kernel impairments, SMC-R, its discovery). Root only;
// where this machine cannot make them, the caller gets the reason to skip with.

import { execFileSync } from 'node:child_process';

/** Run `ip` with these arguments; its stderr is in the error when it fails. */
export function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Delete the namespaces (what is in them goes too); ones already gone are fine. */
export function deleteNamespaces(...names: string[]): void {
  for (const ns of names) try { ip('netns', 'del', ns); } catch { /* already gone */ }
}

export interface VethPairSpec {
  /** Prefix of the veth names (`<tag>va` in nsA, `<tag>vb` in nsB): unique per process. */
  tag: string;
  nsA: string;
  nsB: string;
  /** Each end's address, with a /24. */
  addrA: string;
  addrB: string;
  /** Commands besides `ip` that must exist (e.g. `tc`). */
  tools?: string[];
  /** More setup (addresses, routes, qdiscs) once the pair is up; a throw undoes everything. */
  extra?: () => void;
}

/**
 * Make the namespaces and the pair, each end up with its address, lo up. Returns undefined
 * when done (the namespaces are deleted when the process exits, if not before; a signal that
 * kills it leaves them), else why not
 * (not root, a tool missing, the machine refusing), with nothing left.
 */
export function setUpVethPair(s: VethPairSpec): string | undefined {
  return makeNamespaces([s.nsA, s.nsB], s.tools ?? [], () => {
    ip('netns', 'add', s.nsA);
    ip('netns', 'add', s.nsB);
    ip('link', 'add', `${s.tag}va`, 'type', 'veth', 'peer', 'name', `${s.tag}vb`);
    ip('link', 'set', `${s.tag}va`, 'netns', s.nsA);
    ip('link', 'set', `${s.tag}vb`, 'netns', s.nsB);
    for (const [ns, dev, addr] of [[s.nsA, `${s.tag}va`, s.addrA], [s.nsB, `${s.tag}vb`, s.addrB]] as const) {
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    s.extra?.();
  });
}

/**
 * Make one namespace whose loopback (up) carries these addresses, each with a /24. Returns
 * undefined when done (deleted when the process exits, if not before), else why not, with
 * nothing left; as setUpVethPair.
 */
export function setUpLoopbackNamespace(ns: string, addrs: readonly string[]): string | undefined {
  return makeNamespaces([ns], [], () => {
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    for (const a of addrs) ip('-n', ns, 'addr', 'add', `${a}/24`, 'dev', 'lo');
  });
}

/**
 * Check root and the tools (`ip` and these), then run `make`; a throw deletes `names` again.
 * Undefined when done, else why not.
 */
function makeNamespaces(names: string[], tools: string[], make: () => void): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  for (const tool of ['ip', ...tools]) {
    try {
      execFileSync(tool, ['-V'], { stdio: 'ignore' });
    } catch {
      return `iproute2 (${tool}) is not installed`;
    }
  }
  try {
    make();
    // Whatever the test does with them, they go when the process exits (not when a signal
    // kills it: 'exit' does not run then): a file run with
    // --test-name-pattern skips the test whose after-hook deletes them, and a failed
    // setup in the test may throw before it registers one.
    process.once('exit', () => deleteNamespaces(...names));
    return undefined;
  } catch (err) {
    deleteNamespaces(...names);
    const msg = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    return `this machine forbids the namespace setup: ${msg}`;
  }
}
