// Debug output, one way for every layer: an event is published on a node:diagnostics_channel
// channel named `softrdma:<section>:<event>` (for tools and tests to subscribe to, with the
// event's fields as an object) and printed by util.debuglog(<section>) when NODE_DEBUG names
// the section (NODE_DEBUG=rxe, NODE_DEBUG=smc, NODE_DEBUG=cm). With neither, a trace call
// costs two reads, so trace points may sit on per-packet paths.

import dc from 'node:diagnostics_channel';
import util from 'node:util';

export type TraceSection = 'rxe' | 'smc' | 'cm';

export interface Trace<F extends object = Record<string, unknown>> {
  (fields: F): void;
  /** Whether anything listens (so a caller can skip building costly fields). */
  readonly active: boolean;
  readonly channel: dc.Channel;
}

/**
 * A trace point for one kind of event. `format` makes the NODE_DEBUG line (default: the event
 * name and the fields).
 */
export function tracer<F extends object = Record<string, unknown>>(section: TraceSection, event: string, format?: (fields: F) => string): Trace<F> {
  const channel = dc.channel(`softrdma:${section}:${event}`);
  const log = util.debuglog(section);
  // NODE_DEBUG is read once, at startup; debuglog's `enabled` getter costs ~1 us a call.
  const logOn = log.enabled;
  const emit = (fields: F) => {
    if (channel.hasSubscribers) channel.publish(fields);
    if (logOn) {
      if (format) log('%s', format(fields));
      else log('%s %o', event, fields);
    }
  };
  return Object.defineProperties(emit, {
    active: { get: () => logOn || channel.hasSubscribers },
    channel: { value: channel },
  }) as Trace<F>;
}
