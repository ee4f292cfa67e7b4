// What every core object's methods share: the per-context state they work on, and the
// wording of their errors.

import type { ProviderContext, ProviderDevice } from '../provider.js';
import type { MethodContext } from '../spec.js';

/** Per-context state the core methods need. */
export interface CoreContext {
  device: ProviderDevice;
  provider: ProviderContext;
  maxPort: number;
}

/** What a core method's handler is given. */
export type CoreMethodContext = MethodContext<CoreContext>;

/**
 * The message for a size above the device's maximum: the value, and the device attribute by
 * its verbs name (the error's site names the attribute given, so the message does not).
 */
export const overMax = (v: number, limit: string, max: number) => `${v} exceeds the device's ${limit} (${max})`;

/**
 * Error messages name attributes once (in the error's site), in one style: the verbs names
 * of libibverbs' structs and uapi attributes (snake_case: cap.max_send_wr, path_mtu, sg_list),
 * whatever the JavaScript field is called (cap.maxSendWr, pathMtu, sgList).
 */
export const verbsName = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
