// The loop-control index table on its own: indices, GET_FREE with its reservations,
// and a limit that changes under it, without any device or binding.
import t from 'tap';
import { UbloopError } from '../../lib/errors.js';
import { IndexTable, LOOP_CTL_GET_FREE, type Caller } from '../../lib/instance/index.js';

function caller(n: number, pid = 1000 + n): Caller {
  return { uid: 0, gid: 0, pid, key: `conn:${n}` };
}

function table(max = 4) {
  const s = { now: 1000, max, changes: 0 };
  const tbl: IndexTable<string> = new IndexTable<string>({
    name: 'it',
    now: () => s.now,
    reservationMs: 10_000,
    roomCheck: () => (tbl.count >= s.max ? new UbloopError('ENOSPC', `holds ${tbl.count}, max ${s.max}`) : null),
    changed: () => s.changes++,
  });
  return { tbl, s };
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

t.test('GET_FREE hands out the lowest existing free index, reserved for its caller, else a new one', async (t) => {
  const { tbl, s } = table();
  const a = caller(1);
  const b = caller(2);
  t.equal(tbl.getFree(a), 0, 'an empty table grows by one');
  t.equal(tbl.getFree(a), 0, 'the holder is answered its own index again');
  t.equal(tbl.getFree(b), 1, 'another caller does not get a reserved index');
  t.same(tbl.indices(), [0, 1]);
  t.equal(s.changes, 2, 'each new index is a change to save; a reservation is not');
  tbl.add(3);
  t.equal(tbl.getFree(caller(3)), 3, 'an existing free index wins over the hole at 2');
  t.equal(code(() => tbl.take(b, 0)), 'EBUSY', 'a reserved index cannot be taken by another');
  t.equal(code(() => tbl.remove(0, b)), 'EBUSY', 'nor removed by another');
  const { slot } = tbl.take(a, 0);
  t.equal(slot.state, 'binding', 'taken by its holder');
  t.equal(slot.reservation, null, 'which ends the reservation');
  t.equal(tbl.getFree(b), 1, 'a taken index is not free');
});

t.test('reservations expire, follow the process across connections, and end with their holder', async (t) => {
  const { tbl, s } = table(8);
  const a = caller(1);
  const b = caller(2);
  t.equal(tbl.getFree(a), 0);
  s.now += 9_999;
  t.equal(tbl.getFree(b), 1, 'still reserved just before the end');
  s.now += 1;
  t.equal(tbl.getFree(b), 0, 'expired after reservationMs');
  const cuse: Caller = { uid: 0, gid: 0, pid: 4242, key: 'pid:4242' };
  t.equal(tbl.getFree(cuse), 2);
  t.ok(tbl.take({ uid: 0, gid: 0, pid: 4242, key: 'conn:99' }, 2), 'the char device caller\'s process may take it on a socket');
  tbl.endReservations('conn:2');
  t.equal(tbl.getFree(a), 0, 'the index of a gone holder is free again');
});

t.test('the limit: ENOSPC when full, checked after EEXIST and EINVAL; lowering it keeps every index', async (t) => {
  const { tbl, s } = table(2);
  const a = caller(1);
  tbl.add(-1);
  tbl.add(-1);
  t.equal(code(() => tbl.add(5)), 'ENOSPC');
  t.equal(code(() => tbl.add(1)), 'EEXIST', 'EEXIST before ENOSPC');
  t.equal(code(() => tbl.add(1 << 20)), 'EINVAL', 'beyond the last minor before ENOSPC');
  t.equal(tbl.control(LOOP_CTL_GET_FREE, 0, a), 0, 'a free existing index is handed out even when full');
  tbl.take(a, 0);
  t.equal(tbl.control(LOOP_CTL_GET_FREE, 0, caller(2)), 1);
  tbl.take(caller(2), 1);
  t.equal(code(() => tbl.getFree(caller(3))), 'ENOSPC', 'all taken and full');
  s.max = 4;
  t.equal(tbl.getFree(caller(3)), 2, 'a raised limit allows more at once');
  s.max = 1;
  t.same(tbl.indices(), [0, 1, 2], 'lowering the limit removes nothing');
  t.equal(code(() => tbl.add(-1)), 'ENOSPC', 'it only refuses new indices');
});

t.test('a failed bind gives back the index GET_FREE made for it, and only that one', async (t) => {
  const { tbl, s } = table();
  const a = caller(1);
  tbl.add(0);
  const existing = tbl.take(a, 0);
  t.equal(existing.created, false);
  tbl.release(existing.slot, existing.created);
  t.same(tbl.indices(), [0], 'an index that was there stays');
  t.equal(existing.slot.state, 'unbound');
  existing.slot.state = 'bound';
  const made = tbl.take(a);
  t.equal(made.created, true);
  t.same(tbl.indices(), [0, 1]);
  const before = s.changes;
  tbl.release(made.slot, made.created);
  t.same(tbl.indices(), [0], 'the index made for the bind is gone again');
  t.equal(s.changes, before + 1, 'and that is saved');
  t.equal(code(() => tbl.remove(0, a)), 'EBUSY', 'a bound index cannot be removed');
  t.equal(code(() => tbl.take(a, 7)), 'ENODEV');
  t.equal(code(() => tbl.take(a, -1)), 'EINVAL');
});
