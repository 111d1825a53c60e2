// The manager's persistent part as state data.
import type { InstanceManager } from '../instance/manager.js';
import type { StateData } from './state-data.js';

export function snapshot(manager: InstanceManager): StateData {
  return {
    owners: manager.ownerLimits(),
    instances: manager.instances().map((inst) => ({
      name: inst.name,
      max: inst.max,
      uid: inst.uid,
      gid: inst.gid,
      mode: inst.mode,
      ...(inst.maxDepth === null ? {} : { maxDepth: inst.maxDepth }),
      ...(inst.maxMemory === null ? {} : { maxMemory: inst.maxMemory }),
      indices: inst.indices(),
      bindings: inst.bindings(),
    })),
  };
}
