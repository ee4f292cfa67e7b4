// The one base of softrdma's errors. Every layer throws a subclass (VerbsError from the verbs
// control path, IsmError and SystemError from the shared-memory device, ClcError from SMC's
// handshake, RuntimeDirError from the runtime directory's checks) and each carries a `code`
// in node's style: an errno name where a C programmer would see an errno (EINVAL, EBUSY,
// ENOMEM...), an ERR_SOFTRDMA_* name otherwise. So `err.code === 'EINVAL'` and
// `err instanceof SoftrdmaError` work the same whichever layer failed.

import { constants } from 'node:os';

const ERRNO = constants.errno as Record<string, number>;

export class SoftrdmaError extends Error {
  readonly code: string;
  /** The errno number of an errno-style code (EINVAL: 22); undefined for ERR_SOFTRDMA_* codes. */
  readonly errno: number | undefined;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SoftrdmaError';
    this.code = code;
    this.errno = ERRNO[code];
  }
}

/**
 * Teardown that must go on past a failing step (uverbs' cleanup does: one object whose destroy
 * fails does not keep the others alive): run() every step, then rethrow() the first failure.
 */
export class FirstError {
  private failed = false;
  private error: unknown;

  run(step: () => void): void {
    try {
      step();
    } catch (err) {
      if (!this.failed) {
        this.failed = true;
        this.error = err;
      }
    }
  }

  rethrow(): void {
    if (this.failed) throw this.error;
  }
}

/** A value as an error message shows it: strings quoted (so that '16' is not taken for 16), bigints with n. */
export function shown(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'function') return `function ${v.name || '(anonymous)'}`;
  if (typeof v === 'object' && v !== null) {
    // What it is, not String()'s "[object Object]".
    const name = Array.isArray(v) ? 'array' : (Object.getPrototypeOf(v) as { constructor?: { name?: string } } | null)?.constructor?.name;
    return !name || name === 'Object' ? 'an object' : `${/^[aeiouAEIOU]/.test(name) ? 'an' : 'a'} ${name}`;
  }
  return String(v);
}
