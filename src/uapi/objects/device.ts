// DEVICE: the queries. There is no DEVICE handle; the context is the device (as in uverbs).

import { Attr, M, Obj } from '../../abi/ids.js';
import type { DeviceAttr, GidEntry, PortAttr } from '../../abi/types.js';
import { mandatory, out, uint } from '../attrs.js';
import { fail } from '../errors.js';
import type { UapiRegistry } from '../registry.js';
import type { CoreContext, CoreMethodContext } from './core.js';

const portNum = (id: number) => mandatory(uint(id, 'port_num', { min: 1, max: 255 }));

const QUERY = { deviceAttr: out<DeviceAttr>(Attr.DEVICE.QUERY.RESP_DEVICE_ATTR, 'device_attr') };
const QUERY_PORT = {
  port: portNum(Attr.DEVICE.QUERY_PORT.PORT_NUM),
  portAttr: out<PortAttr>(Attr.DEVICE.QUERY_PORT.RESP_PORT_ATTR, 'port_attr'),
};
const QUERY_GID_TABLE = {
  port: portNum(Attr.DEVICE.QUERY_GID_TABLE.PORT_NUM),
  entries: out<GidEntry[]>(Attr.DEVICE.QUERY_GID_TABLE.RESP_ENTRIES, 'entries'),
};
const QUERY_PKEY = {
  port: portNum(Attr.DEVICE.QUERY_PKEY.PORT_NUM),
  index: mandatory(uint(Attr.DEVICE.QUERY_PKEY.INDEX, 'index', { max: 0xffff })),
  pkey: out<number>(Attr.DEVICE.QUERY_PKEY.RESP_PKEY, 'pkey'),
};

/** The port number given, if the device has that port. */
function checkPort(ctx: CoreMethodContext, port: number): number {
  if (port > ctx.context.maxPort) fail('EINVAL', `port ${port} does not exist (ports 1..${ctx.context.maxPort})`, { attr: 'port_num' });
  return port;
}

export function defineDevice(r: UapiRegistry): void {
  r.defineObject({ id: Obj.DEVICE, name: 'DEVICE', destroy: () => {} });
  r.defineMethod<CoreContext>(Obj.DEVICE, {
    id: M.DEVICE.QUERY, name: 'QUERY', attrs: Object.values(QUERY),
    // A copy: a provider may hand every caller the same (frozen) attributes.
    handler: (ctx) => ctx.set(QUERY.deviceAttr, { ...ctx.context.device.queryDevice() }),
  });
  r.defineMethod<CoreContext>(Obj.DEVICE, {
    id: M.DEVICE.QUERY_PORT, name: 'QUERY_PORT', attrs: Object.values(QUERY_PORT),
    handler: (ctx) => ctx.set(QUERY_PORT.portAttr, ctx.context.device.queryPort(checkPort(ctx, ctx.get(QUERY_PORT.port)))),
  });
  r.defineMethod<CoreContext>(Obj.DEVICE, {
    id: M.DEVICE.QUERY_GID_TABLE, name: 'QUERY_GID_TABLE', attrs: Object.values(QUERY_GID_TABLE),
    handler: (ctx) => ctx.set(QUERY_GID_TABLE.entries, ctx.context.device.gidTable(checkPort(ctx, ctx.get(QUERY_GID_TABLE.port)))),
  });
  r.defineMethod<CoreContext>(Obj.DEVICE, {
    id: M.DEVICE.QUERY_PKEY, name: 'QUERY_PKEY', attrs: Object.values(QUERY_PKEY),
    handler: (ctx) => {
      const port = checkPort(ctx, ctx.get(QUERY_PKEY.port));
      const index = ctx.get(QUERY_PKEY.index);
      const len = ctx.context.device.queryPort(port).pkeyTblLen;
      if (index >= len) fail('EINVAL', `P_Key index ${index} is beyond the table (${len} entries)`, { attr: 'index' });
      ctx.set(QUERY_PKEY.pkey, ctx.context.device.queryPkey(port, index));
    },
  });
}
