// Object-count limits are per device, not per context: the kernel counts max_pd, max_qp, ...
// per ib_device, whichever open file made the objects. Every context opened on one device
// shares one ObjectCounts.

export class ObjectCounts {
  private readonly live = new Map<number, number>();
  get(type: number): number { return this.live.get(type) ?? 0; }
  add(type: number, n: number): void { this.live.set(type, Math.max(0, this.get(type) + n)); }
}

const countsByDevice = new WeakMap<object, ObjectCounts>();

/** The object counts of a device (any object identifying it, e.g. its provider device). */
export function deviceCounts(device: object): ObjectCounts {
  let c = countsByDevice.get(device);
  if (!c) countsByDevice.set(device, (c = new ObjectCounts()));
  return c;
}
