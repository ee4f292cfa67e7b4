// Who decides whether a connection tries SMC: per socket (`smc: false`), per process
// (setSmcPolicy, like the eBPF update_socket_protocol hook), per connection (smcPolicy).

import { invalidArgType } from './options.js';

export interface SmcPolicyInfo {
  role: 'client' | 'server';
  localAddress: string | undefined;
  localPort: number | undefined;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
}

export type SmcPolicy = (info: SmcPolicyInfo) => boolean;

let processPolicy: SmcPolicy | undefined;

export function setSmcPolicy(policy: SmcPolicy | undefined): void {
  if (policy !== undefined && typeof policy !== 'function') throw invalidArgType('policy', 'of type function or undefined', policy);
  processPolicy = policy;
}

/** Is there a policy to ask (the socket's or the process's)? Callers then make `info`. */
export function anyPolicy(own: SmcPolicy | undefined): boolean {
  return own !== undefined || processPolicy !== undefined;
}

/** `info` is built only when some policy wants it: the addresses cost system calls. */
export function policyAllows(own: SmcPolicy | undefined, info: () => SmcPolicyInfo): boolean {
  if (!own && !processPolicy) return true;
  try {
    const i = info();
    if (own && !own(i)) return false;
    if (processPolicy && !processPolicy(i)) return false;
  } catch {
    return false; // a throwing policy must not break the connection: stay TCP
  }
  return true;
}
