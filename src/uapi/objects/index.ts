// The core objects and their methods, each in its own file (as Linux's
// uverbs_std_types_*.c), registered here in one registry. A provider's driver-namespace
// methods are added to it afterwards (ProviderDevice.registerDriverMethods).

import { UapiRegistry } from '../registry.js';
import { defineAh } from './ah.js';
import { defineCompChannel } from './comp-channel.js';
import { defineCq } from './cq.js';
import { defineDevice } from './device.js';
import { defineMr } from './mr.js';
import { defineMw } from './mw.js';
import { definePd } from './pd.js';
import { defineQp } from './qp.js';
import { defineSrq } from './srq.js';

export { CompChannelImpl } from './comp-channel.js';
export type { CoreContext } from './core.js';

export function createRegistry(): UapiRegistry {
  const r = new UapiRegistry();
  defineDevice(r);
  definePd(r);
  defineMr(r);
  defineMw(r);
  defineAh(r);
  defineCompChannel(r);
  defineCq(r);
  defineSrq(r);
  defineQp(r);
  return r;
}
