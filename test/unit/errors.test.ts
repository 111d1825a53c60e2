import t from 'tap';
import { constants } from 'node:os';
import { readFileSync } from 'node:fs';
import { UbloopError, invalid, isSystemError } from '../../lib/errors.js';

t.test('UbloopError carries a code and a negative errno like system errors', async (t) => {
  const e = new UbloopError('EBUSY', 'device 3 is busy');
  t.type(e, Error);
  t.equal(e.name, 'UbloopError');
  t.equal(e.code, 'EBUSY');
  t.equal(e.errno, -constants.errno.EBUSY);
  t.equal(e.message, 'device 3 is busy');
  t.match(String(e), /^UbloopError: device 3 is busy$/);
});

t.test('invalid() is an EINVAL UbloopError', async (t) => {
  const e = invalid('queues must be an integer from 1 to 64, got 0');
  t.type(e, UbloopError);
  t.equal(e.code, 'EINVAL');
  t.equal(e.errno, -constants.errno.EINVAL);
  t.equal(e.message, 'queues must be an integer from 1 to 64, got 0');
});

t.test('isSystemError recognises node:fs errors and ours, not other values', async (t) => {
  let fsErr: unknown;
  try {
    readFileSync('/nonexistent/ubloop-test');
  } catch (err) {
    fsErr = err;
  }
  t.ok(isSystemError(fsErr), 'an ENOENT from node:fs');
  t.ok(isSystemError(new UbloopError('ENOENT', 'x')), 'a UbloopError');
  t.notOk(isSystemError(new Error('plain')), 'a plain Error has no code');
  t.notOk(isSystemError({ code: 'EIO', message: 'not an Error' }), 'an object that is not an Error');
  t.notOk(isSystemError('EIO'), 'a string');
  t.notOk(isSystemError(null), 'null');
  const numeric = Object.assign(new Error('x'), { code: 5 });
  t.notOk(isSystemError(numeric), 'a numeric code is not an errno code');
});
