// The object/method registry. Core objects are defined once; a provider adds methods and
// objects only in its driver namespace, so core ids can never be shadowed by a driver.

import { fail } from './errors.js';
import { DRIVER_NS } from '../abi/ids.js';
import type { MethodSpec, ObjectSpec } from './spec.js';

export interface RegisteredObject extends ObjectSpec {
  methods: Map<number, MethodSpec>;
  /** Optional check before destroy: a reason the object is still in use, or undefined. */
  busy?: (impl: any) => string | undefined;
  /** The errno of a `busy` refusal, where the kernel's is not EBUSY (rxe_dereg_mr: EINVAL). */
  busyErrno?: 'EBUSY' | 'EINVAL';
}

export class UapiRegistry {
  readonly objects = new Map<number, RegisteredObject>();

  defineObject(spec: ObjectSpec & Pick<RegisteredObject, 'busy' | 'busyErrno'>, namespace: 'core' | 'driver' = 'core'): void {
    checkNamespace(spec.id, namespace, `object ${spec.name}`);
    if (this.objects.has(spec.id)) fail('EEXIST', `object id ${spec.id} (${spec.name}) is already defined`);
    this.objects.set(spec.id, { ...spec, methods: new Map() });
  }

  defineMethod<Impl = any>(objectId: number, spec: MethodSpec<Impl>, namespace: 'core' | 'driver' = 'core'): void {
    const obj = this.objects.get(objectId);
    if (!obj) fail('ENOENT', `no object ${objectId} for method ${spec.name}`);
    checkNamespace(spec.id, namespace, `method ${obj.name}.${spec.name}`);
    if (obj.methods.has(spec.id)) fail('EEXIST', `method ${obj.name}.${spec.name} (id ${spec.id}) is already defined`);
    const seen = new Set<number>();
    for (const a of spec.attrs) {
      // A driver method on a core object may reuse core attribute ids; its extra attributes are driver ids.
      if (seen.has(a.id)) fail('EEXIST', `attribute id ${a.id} appears twice in ${obj.name}.${spec.name}`);
      seen.add(a.id);
    }
    obj.methods.set(spec.id, spec);
  }

  /** A view for one provider: everything it defines lands in the driver namespace. */
  driver(): DriverRegistrar {
    return {
      defineObject: (spec) => this.defineObject(spec, 'driver'),
      defineMethod: (objectId, spec) => this.defineMethod(objectId, spec, 'driver'),
    };
  }
}

export interface DriverRegistrar {
  defineObject(spec: ObjectSpec & Pick<RegisteredObject, 'busy' | 'busyErrno'>): void;
  defineMethod(objectId: number, spec: MethodSpec): void;
}

function checkNamespace(id: number, namespace: 'core' | 'driver', what: string) {
  const isDriver = (id & DRIVER_NS) !== 0;
  if (namespace === 'driver' && !isDriver) fail('EINVAL', `${what}: a provider may only define ids in the driver namespace (id | 0x${DRIVER_NS.toString(16)})`);
  if (namespace === 'core' && isDriver) fail('EINVAL', `${what}: core ids may not use the driver namespace`);
}
