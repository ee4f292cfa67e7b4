// Errno-style errors: every failure in softrdma's control path is a VerbsError whose `code`
// is the errno name a C verbs user would see, and whose message names the object, the
// method and the attribute at fault.

import { SoftrdmaError } from '../abi/errors.js';

export type ErrnoName =
  | 'EPERM' | 'ENOENT' | 'EIO' | 'E2BIG' | 'EBADF' | 'EAGAIN' | 'ENOMEM' | 'EACCES' | 'EFAULT'
  | 'EBUSY' | 'EEXIST' | 'ENODEV' | 'EINVAL' | 'ENOSPC' | 'ERANGE' | 'ENOSYS' | 'EPROTONOSUPPORT'
  | 'EOPNOTSUPP' | 'EADDRINUSE' | 'EADDRNOTAVAIL' | 'ECONNRESET' | 'ETIMEDOUT' | 'ECANCELED'
  | 'ENOTCONN' | 'EPROTO';

export interface ErrorSite {
  object?: string;
  method?: string;
  attr?: string;
}

export class VerbsError extends SoftrdmaError {
  declare readonly code: ErrnoName;
  /** Every ErrnoName is an errno of this platform, so the base always finds its number. */
  declare readonly errno: number;
  readonly object: string | undefined;
  readonly method: string | undefined;
  readonly attr: string | undefined;
  /** The message without the code and site prefix (what went wrong, as given to fail()). */
  readonly detail: string;

  constructor(code: ErrnoName, message: string, site: ErrorSite = {}) {
    const where = [site.object, site.method].filter(Boolean).join('.');
    const attr = site.attr ? `${where ? ' ' : ''}attribute '${site.attr}'` : '';
    super(code, `${code}: ${where}${attr}${where || attr ? ': ' : ''}${message}`);
    this.name = 'VerbsError';
    this.object = site.object;
    this.method = site.method;
    this.attr = site.attr;
    this.detail = message;
  }
}

export function fail(code: ErrnoName, message: string, site?: ErrorSite): never {
  throw new VerbsError(code, message, site);
}

/**
 * A bug in softrdma itself, not a caller's mistake: a method breaking its own declaration
 * (setting or reading an attribute it does not declare). Never an errno: nothing a caller
 * does can cause it, so nothing a caller does should handle it.
 */
export class UapiInternalError extends Error {
  override readonly name = 'UapiInternalError';
}

export function internal(message: string): never {
  throw new UapiInternalError(`softrdma internal error: ${message}`);
}
