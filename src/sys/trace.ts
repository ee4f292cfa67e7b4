// Debug output, one way for every layer: an event is published on a node:diagnostics_channel
// channel named `softrdma:<section>:<event>` (for tools and tests to subscribe to, with the
// event's fields as an object) and printed by util.debuglog(<section>) when NODE_DEBUG names
// the section (NODE_DEBUG=rxe, NODE_DEBUG=smc, NODE_DEBUG=cm). With neither, a trace call
// costs two property reads.

import dc from 'node:diagnostics_channel';
import util from 'node:util';

export type TraceSection = 'rxe' | 'smc' | 'cm';

export interface Trace {
  (fields: Record<string, unknown>): void;
  /** Whether anything listens (so a caller can skip building costly fields). */
  readonly active: boolean;
  readonly channel: dc.Channel;
}

/** A trace point for one kind of event. */
export function tracer(section: TraceSection, event: string): Trace {
  const channel = dc.channel(`softrdma:${section}:${event}`);
  const log = util.debuglog(section);
  const emit = (fields: Record<string, unknown>) => {
    if (channel.hasSubscribers) channel.publish(fields);
    if (log.enabled) log('%s %o', event, fields);
  };
  return Object.defineProperties(emit, {
    active: { get: () => channel.hasSubscribers || log.enabled },
    channel: { value: channel },
  }) as Trace;
}
