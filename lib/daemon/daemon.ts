// `ubloop daemon`: owns every device, serves the root-only admin socket and, per
// instance, a directory with its control.sock, loop-control char device (CUSE) and
// loopN nodes; keeps the state file; restores it on start; stops everything on SIGTERM.
import { chownSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UbloopError, isSystemError } from '../errors.js';
import { processCaller } from '../instance/caller.js';
import type { DeviceFactory } from '../instance/device-factory.js';
import type { Instance } from '../instance/instance.js';
import type { GlobalCaps } from '../instance/limits.js';
import { InstanceManager } from '../instance/manager.js';
import type { Request } from '../protocol/request.js';
import { openBacking } from '../state/open-backing.js';
import { restore, type OrphanAbandoner, type RestoreReport } from '../state/restore.js';
import { snapshot } from '../state/snapshot.js';
import { STATE_VERSION } from '../state/schema.js';
import { readState } from '../state/state-file.js';
import { StateWriter } from '../state/state-writer.js';
import { Connection, type RequestContext, type Scope } from './connection.js';
import { dispatch } from './dispatch.js';
import { log } from './log.js';
import { ipc, type CuseDevice, type UnixConnection, type UnixServer } from './native-ipc.js';
import { makeInstanceDir, makeNode, makePartitionNodes, removeInstanceDir, removeNode, removePartitionNodes } from './nodes.js';
import { INSTANCE_SOCKET_NAME, LOOP_CONTROL_NAME, instancesDir } from './paths.js';

export interface DaemonOptions {
  /** Admin socket (root only). */
  socket: string;
  /** State file. */
  state: string;
  /** Directory holding instances/NAME/. */
  root: string;
  /** How long an autoclear device must stay idle after its client left (ms). */
  autoclearGraceMs: number;
  /** How often autoclear / lazy detach is checked (ms). */
  sweepMs: number;
  /** How often the devices a mount set up (clearOnUnmount) are probed for their filesystem (ms; default 200). */
  claimPollMs?: number;
  /** Device factory (default: real ublk devices). */
  factory: DeviceFactory;
  /** Daemon-wide caps on devices, queue depth and memory (default: none). */
  caps?: Partial<GlobalCaps>;
  /** Deletes a device the previous run left waiting for recovery when its binding cannot be restored. */
  abandon?: OrphanAbandoner;
}

interface InstanceIo {
  server: UnixServer | null;
  cuse: CuseDevice | null;
}

function peerAllowed(inst: Instance, uid: number, gid: number): boolean {
  if (uid === 0 || uid === inst.uid) return true;
  return gid === inst.gid && (inst.mode & 0o060) === 0o060;
}

export class Daemon {
  readonly options: DaemonOptions;
  readonly manager: InstanceManager;
  readonly #io = new Map<string, InstanceIo>();
  readonly #connections = new Set<Connection>();
  #admin: UnixServer | null = null;
  #sweeper: NodeJS.Timeout | null = null;
  #sweeping = false;
  #claimPoller: NodeJS.Timeout | null = null;
  #polling = false;
  /** ublk ids whose failure the log has told already. */
  readonly #failuresSaid = new Set<number>();
  #restoring = false;
  #cuseMissingSaid = false;
  #stopping: Promise<void> | null = null;
  readonly #state: StateWriter;
  restoreReport: RestoreReport | null = null;

  constructor(options: DaemonOptions) {
    this.options = options;
    this.#state = new StateWriter({
      path: options.state,
      take: () => snapshot(this.manager),
      failed: (err) => log(`cannot write state file ${options.state}: ${err.message}`),
    });
    this.manager = new InstanceManager({
      factory: options.factory,
      root: options.root,
      ...(options.caps ? { caps: options.caps } : {}),
      hooks: {
        created: (inst) => this.#instanceCreated(inst),
        removed: (inst) => this.#instanceRemoved(inst),
        bound: (inst, index, dev) => {
          makeNode(inst.nodePath(index), 'b', dev.major, dev.minor, inst.uid, inst.gid, inst.mode);
          makePartitionNodes(inst.nodePath(index), dev.ublkId, inst.uid, inst.gid, inst.mode);
        },
        unbound: (inst, index) => {
          removePartitionNodes(inst.nodePath(index));
          removeNode(inst.nodePath(index));
        },
        changed: () => {
          if (!this.#restoring) this.#state.changed();
        },
      },
    });
  }

  async start(): Promise<void> {
    if (process.getuid?.() !== 0) throw new UbloopError('EPERM', 'the daemon must run as root (it creates ublk devices and device nodes)');
    if (!ipc().cuseAvailable) {
      log('CUSE loop-control unavailable: ubloop was built without libfuse3; instances get control.sock only, no loop-control char device');
      this.#cuseMissingSaid = true;
    }
    const o = this.options;
    mkdirSync(instancesDir(o.root), { recursive: true, mode: 0o755 });
    const saved = readState(o.state);
    if (saved.kind === 'newer') {
      // Moving it aside would lose every instance it holds: leave it to the newer ubloop.
      throw new UbloopError('EPROTONOSUPPORT', `refusing to start: ${saved.problem}`);
    }
    if (saved.kind === 'corrupt') {
      log(`${saved.problem}; ${saved.movedTo ? `kept it as ${saved.movedTo}` : 'could not move it aside'}; starting with no instances`);
      if (!saved.movedTo) throw new UbloopError('EIO', `refusing to overwrite the unusable state file ${o.state}`);
    } else if (saved.kind === 'ok') {
      this.#restoring = true;
      try {
        this.restoreReport = await restore(this.manager, saved.state, openBacking, o.abandon);
      } finally {
        this.#restoring = false;
      }
      this.manager.clientGone('restore');
      const r = this.restoreReport;
      const recovered = r.rebound.filter((b) => b.recovered).length;
      log(`restored ${r.instances.length} instance(s) and ${r.rebound.length} device(s) from ${o.state}${recovered > 0 ? ` (${recovered} recovered from the previous run)` : ''}`);
      if (saved.from !== STATE_VERSION) log(`${o.state} had state version ${saved.from}; it is rewritten as version ${STATE_VERSION}`);
      for (const f of r.failed) log(`not restored: ${f.instance}${f.index === undefined ? '' : `/loop${f.index}`}: ${f.reason}`);
    }
    this.#state.changed();
    await this.#state.flush();
    mkdirSync(join(o.socket, '..'), { recursive: true, mode: 0o755 });
    this.#admin = ipc().listenUnix(o.socket, 0o600, (conn) => this.#accept(conn, { kind: 'admin' }), this.#handlers());
    chownSync(o.socket, 0, 0);
    this.#sweeper = setInterval(() => void this.#sweep(), o.sweepMs);
    this.#claimPoller = setInterval(() => void this.#pollClaims(), o.claimPollMs ?? 200);
    log(`listening on ${o.socket}; instances under ${instancesDir(o.root)}; state in ${o.state}`);
  }

  /** Stops accepting, stops every device (bindings stay in the state for the next start). */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (this.#sweeper) clearInterval(this.#sweeper);
    if (this.#claimPoller) clearInterval(this.#claimPoller);
    this.#admin?.close();
    this.#admin = null;
    // what changed until now is written; the stopping of the devices is not (their
    // bindings stay in the state for the next start)
    await this.#state.close();
    await this.manager.shutdown();
    for (const inst of this.manager.instances()) await this.#closeIo(inst);
    log('stopped every device');
  }

  /**
   * Live upgrade: stops accepting, writes the state (every binding with its ublk id) and
   * leaves every device QUIESCED, holding its I/O, for the next daemon to take over.
   * Refused (nothing changes) while some device cannot be handed over (a kernel without
   * UBLK_F_QUIESCE, a device binding or unbinding). Resolves when the process may exit.
   */
  async handOver(): Promise<void> {
    if (this.#stopping) throw new UbloopError('ECANCELED', 'the daemon is stopping already');
    const problems = this.manager.handOverProblems();
    if (problems.length > 0) throw new UbloopError('EOPNOTSUPP', `cannot hand the devices over: ${problems.join('; ')}`);
    this.#stopping = (async () => {
      if (this.#sweeper) clearInterval(this.#sweeper);
      this.#admin?.close();
      this.#admin = null;
      this.#state.changed();
      await this.#state.close();
      const t0 = Date.now();
      await this.manager.handOver();
      for (const inst of this.manager.instances()) await this.#closeIo(inst);
      log(`handed every device over in ${Date.now() - t0} ms; the next daemon takes them over`);
    })();
    return this.#stopping;
  }

  // ---------------------------------------------------------------- connections

  #handlers() {
    return {
      data: (conn: UnixConnection, data: Buffer, fds: number[]) => this.#connectionOf(conn)?.data(data, fds),
      close: (conn: UnixConnection) => {
        const c = this.#connectionOf(conn);
        if (!c) return;
        c.closedByPeer();
        this.#connections.delete(c);
        this.#byNative.delete(conn);
        this.manager.clientGone(c.caller.key);
      },
    };
  }

  readonly #byNative = new Map<UnixConnection, Connection>();

  #connectionOf(conn: UnixConnection): Connection | undefined {
    return this.#byNative.get(conn);
  }

  #accept(conn: UnixConnection, scope: Scope): void {
    const c = new Connection(conn, scope, (req, ctx) => this.#handle(req, ctx));
    this.#byNative.set(conn, c);
    this.#connections.add(c);
    const { uid, gid } = conn.peer;
    if (scope.kind === 'admin' && uid !== 0) {
      c.refuse(new UbloopError('EACCES', 'the admin socket is for root only; use your instance\'s control.sock'));
    } else if (scope.kind === 'instance') {
      const inst = this.manager.has(scope.name) ? this.manager.get(scope.name) : null;
      if (!inst || !peerAllowed(inst, uid, gid)) {
        c.refuse(new UbloopError('EACCES', `uid ${uid} may not use instance ${scope.name}`));
      }
    }
  }

  async #handle(req: Request, ctx: RequestContext): Promise<object> {
    if (this.#stopping) throw new UbloopError('ECANCELED', 'the daemon is stopping');
    // the reply waits until the request's changes are on disk (one write, see StateWriter)
    return this.#state.during(() => dispatch(this.manager, req, ctx));
  }

  // ---------------------------------------------------------------- instance resources

  async #instanceCreated(inst: Instance): Promise<void> {
    makeInstanceDir(inst.dir);
    for (const name of readdirSync(inst.dir)) {
      if (/^loop\d+(p\d+)?$/.test(name) || name === LOOP_CONTROL_NAME || name === INSTANCE_SOCKET_NAME) removeNode(join(inst.dir, name));
    }
    const io: InstanceIo = { server: null, cuse: null };
    this.#io.set(inst.name, io);
    try {
      const sock = join(inst.dir, INSTANCE_SOCKET_NAME);
      io.server = ipc().listenUnix(sock, inst.mode, (conn) => this.#accept(conn, { kind: 'instance', name: inst.name }), this.#handlers());
      chownSync(sock, inst.uid, inst.gid);
      io.cuse = await this.#loopControl(inst);
    } catch (err) {
      await this.#closeIo(inst);
      throw err;
    }
  }

  async #loopControl(inst: Instance): Promise<CuseDevice | null> {
    if (this.#cuseMissingSaid) return null;
    let cuse: CuseDevice;
    try {
      cuse = await ipc().createCuseDevice(`ubloop-${inst.name}-loop-control`, (req) =>
        inst.ioctl(req.cmd, req.arg, processCaller(req.uid, req.gid, req.pid)),
      );
    } catch (err) {
      if (isSystemError(err) && (err.code === 'ENOENT' || err.code === 'ENODEV')) {
        log(`no CUSE (/dev/cuse: ${err.code}): instances get control.sock only, no loop-control char device`);
        this.#cuseMissingSaid = true;
        return null;
      }
      throw err;
    }
    const path = join(inst.dir, LOOP_CONTROL_NAME);
    try {
      makeNode(path, 'c', cuse.major, cuse.minor, inst.uid, inst.gid, inst.mode);
    } catch (err) {
      await cuse.close();
      throw err;
    }
    inst.loopControlPath = path;
    return cuse;
  }

  async #closeIo(inst: Instance): Promise<void> {
    const io = this.#io.get(inst.name);
    this.#io.delete(inst.name);
    io?.server?.close();
    if (io?.cuse) await io.cuse.close();
    removeNode(join(inst.dir, LOOP_CONTROL_NAME));
    removeNode(join(inst.dir, INSTANCE_SOCKET_NAME));
    inst.loopControlPath = null;
  }

  async #instanceRemoved(inst: Instance): Promise<void> {
    await this.#closeIo(inst);
    for (const index of inst.indices()) {
      removePartitionNodes(inst.nodePath(index));
      removeNode(inst.nodePath(index));
    }
    removeInstanceDir(inst.dir);
  }

  // ---------------------------------------------------------------- upkeep

  /** The autoclear of mounts: one exclusive-open probe per mounted clearOnUnmount device. */
  async #pollClaims(): Promise<void> {
    if (this.#polling || this.#stopping) return;
    this.#polling = true;
    try {
      for (const d of await this.manager.sweepUnmounted(this.options.sweepMs)) {
        log(`auto-detached ${d.instance}/loop${d.index} (its filesystem was unmounted)`);
      }
    } catch (err) {
      log(`unmount autoclear failed: ${(err as Error).message}`);
    } finally {
      this.#polling = false;
    }
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || this.#stopping) return;
    this.#sweeping = true;
    try {
      for (const e of this.manager.instances().flatMap((i) => i.entries())) {
        if (e.failure === null || e.ublkId === null || this.#failuresSaid.has(e.ublkId)) continue;
        this.#failuresSaid.add(e.ublkId);
        log(`${e.instance}/loop${e.index} (${e.ublkPath ?? ''}) failed: ${e.failure}; its I/O fails with EIO until it is detached`);
      }
      for (const d of await this.manager.sweep(this.options.autoclearGraceMs)) {
        log(`auto-detached ${d.instance}/loop${d.index}`);
      }
    } catch (err) {
      log(`autoclear sweep failed: ${(err as Error).message}`);
    } finally {
      this.#sweeping = false;
    }
  }
}
