// ubloop list's ERRORS column: what a user reads after a backing fault.
import t from 'tap';
import { errorsCell } from '../../lib/cli/commands/list.js';

const none = { readErrors: 0, writeErrors: 0, flushErrors: 0, discardErrors: 0, lastError: null };

t.test('the ERRORS column', async (t) => {
  t.equal(errorsCell(null), '-', 'an unbound index has no counters');
  t.equal(errorsCell(none), '0', 'a device without failures shows 0');
  t.equal(
    errorsCell({ ...none, readErrors: 3, writeErrors: 1, lastError: { errno: 5, code: 'EIO', op: 'write', at: '2026-01-01T00:00:00.000Z' } }),
    'read:3,write:1 last:EIO',
    'the ops that failed, with their counts, then the last errno',
  );
  t.equal(
    errorsCell({ ...none, flushErrors: 2, discardErrors: 7, lastError: { errno: 28, code: 'ENOSPC', op: 'discard', at: '2026-01-01T00:00:00.000Z' } }),
    'flush:2,discard:7 last:ENOSPC',
    'flushes and discards too',
  );
});
