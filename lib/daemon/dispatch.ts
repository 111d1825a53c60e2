// What each request does, and who may do it: only root (on the admin socket) manages
// instances; an instance socket only ever reaches its own instance.
import { UbloopError } from '../errors.js';
import { closeImage, imagePath, inspectImage, openImage, type Image } from '../image.js';
import type { Instance } from '../instance/instance.js';
import type { InstanceManager } from '../instance/manager.js';
import {
  BIND, INFO, LIST, LOOP_ADD, LOOP_GET_FREE, LOOP_IOCTL, LOOP_REMOVE, RESIZE, UNBIND, type BindRequest,
} from '../protocol/device-requests.js';
import { INSTANCE_CREATE, INSTANCE_LIST, INSTANCE_REMOVE, INSTANCE_SET, PING } from '../protocol/instance-requests.js';
import type { Request } from '../protocol/request.js';
import type { RequestContext } from './connection.js';

function target(manager: InstanceManager, name: string | undefined, ctx: RequestContext): Instance {
  if (ctx.scope.kind === 'instance') {
    if (name !== undefined && name !== ctx.scope.name) {
      throw new UbloopError('ENOENT', `no instance ${JSON.stringify(name)} on this socket`);
    }
    return manager.get(ctx.scope.name);
  }
  if (name === undefined) throw new UbloopError('EINVAL', 'name the instance ("instance") on the admin socket');
  return manager.get(name);
}

async function bind(manager: InstanceManager, req: BindRequest, ctx: RequestContext): Promise<object> {
  const inst = target(manager, req.instance, ctx);
  let image: Image;
  if (req.path !== undefined) {
    if (ctx.caller.uid !== 0) {
      throw new UbloopError('EPERM', 'only root may bind by path; pass the image as a descriptor (ubloop attach does)');
    }
    if (ctx.fds.length > 0) throw new UbloopError('EINVAL', 'pass either a path or a descriptor, not both');
    image = openImage(req.path, req.options);
  } else {
    if (ctx.fds.length === 0) {
      throw new UbloopError('EBADF', 'bind needs the image as a descriptor passed with the request (SCM_RIGHTS)');
    }
    if (ctx.fds.length > 1) throw new UbloopError('EINVAL', `bind takes one image descriptor, got ${ctx.fds.length}`);
    image = inspectImage(ctx.fds[0] as number, req.options);
  }
  try {
    const device = await inst.bind({
      fd: image.fd,
      image,
      backing: { path: imagePath(image), dev: image.dev, ino: image.ino },
      options: req.options,
      caller: ctx.caller,
      ...(req.index === undefined ? {} : { index: req.index }),
    });
    return { device };
  } finally {
    closeImage(image);
  }
}

export async function dispatch(manager: InstanceManager, req: Request, ctx: RequestContext): Promise<object> {
  if (req.op !== BIND && ctx.fds.length > 0) throw new UbloopError('EINVAL', `"${req.op}" takes no descriptor`);
  switch (req.op) {
    case PING:
      return { pid: process.pid };
    case INSTANCE_CREATE:
    case INSTANCE_SET:
    case INSTANCE_LIST:
    case INSTANCE_REMOVE:
      if (ctx.scope.kind !== 'admin' || ctx.caller.uid !== 0) {
        throw new UbloopError('EPERM', 'only root manages instances, on the admin socket');
      }
      switch (req.op) {
        case INSTANCE_CREATE: {
          const inst = await manager.create({
            name: req.name,
            ...(req.max === undefined ? {} : { max: req.max }),
            ...(req.uid === undefined ? {} : { uid: req.uid }),
            ...(req.gid === undefined ? {} : { gid: req.gid }),
            ...(req.mode === undefined ? {} : { mode: req.mode }),
            ...(req.ownerMax === undefined ? {} : { ownerMax: req.ownerMax }),
            ...(req.maxDepth === undefined ? {} : { maxDepth: req.maxDepth }),
            ...(req.maxMemory === undefined ? {} : { maxMemory: req.maxMemory }),
          });
          return { instance: manager.info(inst) };
        }
        case INSTANCE_SET: {
          const inst = manager.set(req.name, {
            ...(req.max === undefined ? {} : { max: req.max }),
            ...(req.ownerMax === undefined ? {} : { ownerMax: req.ownerMax }),
            ...(req.maxDepth === undefined ? {} : { maxDepth: req.maxDepth }),
            ...(req.maxMemory === undefined ? {} : { maxMemory: req.maxMemory }),
          });
          return { instance: manager.info(inst) };
        }
        case INSTANCE_LIST:
          return { instances: manager.instances().map((i) => manager.info(i)) };
        case INSTANCE_REMOVE:
          await manager.remove(req.name, req.force);
          return {};
      }
      break;
    case LOOP_ADD:
      return { index: target(manager, req.instance, ctx).add(req.index) };
    case LOOP_REMOVE:
      target(manager, req.instance, ctx).remove(req.index, ctx.caller);
      return {};
    case LOOP_GET_FREE:
      return { index: target(manager, req.instance, ctx).getFree(ctx.caller) };
    case LOOP_IOCTL:
      return { result: target(manager, req.instance, ctx).control(req.cmd, req.arg, ctx.caller) };
    case BIND:
      return bind(manager, req, ctx);
    case UNBIND:
      return target(manager, req.instance, ctx).unbind(req.index, req.busy);
    case RESIZE:
      return { device: await target(manager, req.instance, ctx).resize(req.index, req.size) };
    case LIST:
      if (ctx.scope.kind === 'admin' && req.instance === undefined) {
        return { devices: manager.instances().flatMap((i) => i.entries()) };
      }
      return { devices: target(manager, req.instance, ctx).entries() };
    case INFO: {
      const inst = target(manager, req.instance, ctx);
      const device = inst.entry(req.index);
      if (!device) throw new UbloopError('ENODEV', `loop${req.index} does not exist in instance ${inst.name}`);
      return { device };
    }
  }
  throw new UbloopError('ENOSYS', 'unhandled request');
}
