// COMP_CHANNEL: a completion channel is a core object, a queue of CQ events with no provider
// part. CQs created on it hold it.

import { EventEmitter } from 'node:events';
import { Attr, M, Obj } from '../../abi/ids.js';
import { handle, mandatory, newHandle } from '../attrs.js';
import type { ProviderCq } from '../provider.js';
import type { UapiRegistry } from '../registry.js';

export class CompChannelImpl extends EventEmitter {
  readonly pending: ProviderCq[] = [];
  closed = false;
  notify(cq: ProviderCq) {
    if (this.closed) return;
    this.pending.push(cq);
    this.emit('event', cq);
  }

  /** Drop the queued events of a CQ being destroyed, as ib_uverbs_release_ucq does. */
  forget(cq: ProviderCq): void {
    for (let i = this.pending.length - 1; i >= 0; i--) if (this.pending[i] === cq) this.pending.splice(i, 1);
  }
}

const CREATE = { handle: newHandle(Attr.COMP_CHANNEL.CREATE.HANDLE, 'channel_handle', Obj.COMP_CHANNEL) };
const DESTROY = { handle: mandatory(handle<CompChannelImpl>(Attr.COMP_CHANNEL.DESTROY.HANDLE, 'channel_handle', Obj.COMP_CHANNEL, 'destroy')) };

export function defineCompChannel(r: UapiRegistry): void {
  r.defineObject({
    id: Obj.COMP_CHANNEL, name: 'COMP_CHANNEL',
    destroy: (ch: CompChannelImpl) => { ch.closed = true; ch.emit('close'); },
  });
  r.defineMethod(Obj.COMP_CHANNEL, { id: M.COMP_CHANNEL.CREATE, name: 'CREATE', attrs: Object.values(CREATE), handler: () => ({ created: new CompChannelImpl() }) });
  r.defineMethod(Obj.COMP_CHANNEL, { id: M.COMP_CHANNEL.DESTROY, name: 'DESTROY', attrs: Object.values(DESTROY), handler: () => {} });
}
