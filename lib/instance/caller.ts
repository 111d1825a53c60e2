// Who is asking: peer credentials (SO_PEERCRED, or the CUSE request context) plus a key
// naming the connection or process, which GET_FREE reservations are held by.

export interface Caller {
  uid: number;
  gid: number;
  pid: number;
  /** "conn:N" for a socket connection, "pid:N" for a loop-control char device caller. */
  key: string;
}

export function processCaller(uid: number, gid: number, pid: number): Caller {
  return { uid, gid, pid, key: `pid:${pid}` };
}

/**
 * Whether a reservation held under `holder` belongs to this caller: the same
 * connection, or the same process when it reserved through the char device.
 */
export function holds(caller: Caller, holder: string): boolean {
  return holder === caller.key || holder === `pid:${caller.pid}`;
}
