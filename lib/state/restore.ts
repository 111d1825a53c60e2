// Brings a saved state back: instances, limits, owners and indices, and rebinds each
// device whose backing file is still the same file (device and inode); the others are
// reported, not guessed at.
import { closeSync } from 'node:fs';
import type { Caller } from '../instance/caller.js';
import { RESTORE_KEY } from '../instance/instance.js';
import type { InstanceManager } from '../instance/manager.js';
import { checkBindOptions, type BindOptions } from '../device-options.js';
import type { Image } from '../image.js';
import type { SavedBinding, SavedState } from './state-data.js';

export interface OpenedBacking {
  fd: number;
  dev: number;
  ino: number;
  /** The image as opened and inspected, handed on so that the bind does not inspect it again. */
  image?: Image;
}

/** Opens a saved binding's backing file for whoever bound it; throws with the reason it cannot. */
export type BackingOpener = (binding: SavedBinding, principal: { uid: number; gid: number }) => OpenedBacking;

/**
 * Deletes a binding's device left waiting for recovery by the daemon's previous run,
 * when the binding cannot be restored: its held I/O fails rather than waits forever.
 * Resolves with whether there was such a device.
 */
export type OrphanAbandoner = (ublkId: number) => Promise<boolean>;

export interface RestoreReport {
  instances: string[];
  /** recovered: the device of the previous run was taken over (the daemon had died), not created. */
  rebound: { instance: string; index: number; path: string; recovered: boolean }[];
  failed: { instance: string; index?: number; reason: string }[];
}

// RESTORE_KEY: restored bindings come back whatever the limits say now
const RESTORER: Caller = { uid: 0, gid: 0, pid: process.pid, key: RESTORE_KEY };

export async function restore(manager: InstanceManager, state: SavedState, open: BackingOpener, abandon?: OrphanAbandoner): Promise<RestoreReport> {
  const report: RestoreReport = { instances: [], rebound: [], failed: [] };
  // A binding not restored may leave its old device holding I/O: delete it.
  const fail = async (instance: string, b: SavedBinding, reason: string) => {
    let deleted = false;
    if (b.ublkId !== undefined && abandon) {
      try {
        deleted = await abandon(b.ublkId);
      } catch (err) {
        reason += `; deleting /dev/ublkb${b.ublkId} failed: ${(err as Error).message}`;
      }
    }
    report.failed.push({ instance, index: b.index, reason: deleted ? `${reason}; /dev/ublkb${b.ublkId ?? ''} was deleted, its held I/O failed with EIO` : reason });
  };
  for (const o of state.owners) manager.setOwnerMax(o.uid, o.max);
  for (const saved of state.instances) {
    let inst;
    try {
      inst = await manager.create({
        name: saved.name, max: saved.max, uid: saved.uid, gid: saved.gid, mode: saved.mode,
        ...(saved.maxDepth === undefined ? {} : { maxDepth: saved.maxDepth }),
        ...(saved.maxMemory === undefined ? {} : { maxMemory: saved.maxMemory }),
      });
    } catch (err) {
      report.failed.push({ instance: saved.name, reason: `instance not restored: ${(err as Error).message}` });
      for (const b of saved.bindings) if (b.ublkId !== undefined && abandon) await abandon(b.ublkId).catch(() => false);
      continue;
    }
    report.instances.push(saved.name);
    for (const index of saved.indices) inst.restoreIndex(index);
    for (const b of saved.bindings) {
      const boundBy = b.boundBy;
      let options: BindOptions;
      let opened: OpenedBacking;
      try {
        options = checkBindOptions(b.options);
        opened = open(b, boundBy);
      } catch (err) {
        await fail(saved.name, b, (err as Error).message);
        continue;
      }
      try {
        if (opened.dev !== b.backing.dev || opened.ino !== b.backing.ino) {
          await fail(
            saved.name,
            b,
            `${b.backing.path} is no longer the file that was bound (device/inode ${opened.dev}/${opened.ino}, was ${b.backing.dev}/${b.backing.ino})`,
          );
          continue;
        }
        const entry = await inst.bind({
          index: b.index,
          fd: opened.fd,
          ...(opened.image ? { image: opened.image } : {}),
          backing: b.backing,
          options,
          caller: RESTORER,
          boundBy,
          ...(b.ublkId === undefined ? {} : { recover: b.ublkId }),
        });
        report.rebound.push({ instance: saved.name, index: b.index, path: b.backing.path, recovered: entry.ublkId === b.ublkId && inst.recovered(b.index) });
      } catch (err) {
        report.failed.push({ instance: saved.name, index: b.index, reason: (err as Error).message });
      } finally {
        closeSync(opened.fd);
      }
    }
  }
  return report;
}
