// The control socket of a `ubloop serve` process, /run/ubloop/serve/ublkbN.sock for
// root (serveRoot() for a user's unprivileged device), open to its own user and root:
// it answers the same newline-delimited JSON as the daemon, for the requests that make
// sense for one device: `resize` (ubloop resize /dev/ublkbN) and `info` (with the
// device's failed requests, for ubloop list).
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Device } from './device.js';
import { UbloopError } from './errors.js';
import { Connection } from './daemon/connection.js';
import { ipc, type UnixConnection } from './daemon/native-ipc.js';
import { serveSocket } from './daemon/paths.js';
import { INFO, RESIZE } from './protocol/device-requests.js';

/** Listens for the device's control requests; returns a function that closes the socket. */
export function listenServeControl(device: Device, root: string): () => void {
  const path = serveSocket(root, device.id);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // A user's directory may be in /tmp, where anyone could have made it first.
  const dir = statSync(dirname(path));
  if (dir.uid !== (process.getuid?.() ?? 0) || (dir.mode & 0o022) !== 0) {
    throw new UbloopError('EPERM', `${dirname(path)} is not this user's own private directory`);
  }
  rmSync(path, { force: true }); // a socket left by a server that died
  const connections = new Map<UnixConnection, Connection>();
  const server = ipc().listenUnix(
    path,
    0o600,
    (conn) => {
      const c = new Connection(conn, { kind: 'admin' }, async (req) => {
        if (req.op === RESIZE) return { size: await device.resize(req.size) };
        if (req.op === INFO) return { device: device.info(), ioErrors: device.ioErrors() };
        throw new UbloopError('ENOSYS', `"${req.op}" is for the daemon; a serve process answers resize and info`);
      });
      if (conn.peer.uid !== 0 && conn.peer.uid !== process.getuid?.()) c.refuse(new UbloopError('EACCES', 'not your device'));
      connections.set(conn, c);
    },
    {
      data: (conn, data, fds) => connections.get(conn)?.data(data, fds),
      close: (conn) => {
        connections.get(conn)?.closedByPeer();
        connections.delete(conn);
      },
    },
  );
  return () => {
    server.close();
    rmSync(path, { force: true });
  };
}
