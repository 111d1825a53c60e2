// The addon's CUSE and unix-socket pieces (native/cuse_loop_control.cc,
// native/unix_socket.cc), under the names the daemon and client use.
import { native, type NativeBinding } from '../native.js';

export type {
  NativeCuseDevice as CuseDevice,
  NativeIoctlRequest as IoctlRequest,
  NativePeer as Peer,
  NativeUnixConnection as UnixConnection,
  NativeUnixHandlers as UnixHandlers,
  NativeUnixServer as UnixServer,
} from '../native.js';

export function ipc(): NativeBinding {
  return native();
}
