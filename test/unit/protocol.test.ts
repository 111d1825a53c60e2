import t from 'tap';
import {
  LineReader, MAX_LINE_BYTES, parseRequest, checkBind, checkLoopAdd, guard, isInstanceCreateRequest,
  isErrorReply, isOkReply, errorBody, OPS,
} from '../../lib/protocol/index.js';
import { UbloopError } from '../../lib/errors.js';

t.test('every op parses to its typed request with defaults filled in', async (t) => {
  const bind = parseRequest('{"op":"bind","id":7,"index":3,"readOnly":true,"queues":2}');
  t.equal(bind.id, 7);
  t.same(bind.request, {
    op: 'bind',
    index: 3,
    options: { offset: 0, sizeLimit: 0, readOnly: true, directIo: false, blockSize: 512, queues: 2, depth: 128, autoclear: false },
  });
  t.same(parseRequest('{"op":"loop.add","index":-1}').request, { op: 'loop.add', index: -1 });
  t.same(parseRequest('{"op":"loop.get_free","instance":"a"}').request, { op: 'loop.get_free', instance: 'a' });
  t.same(parseRequest('{"op":"instance.create","name":"a","max":4,"uid":1001,"gid":1001,"mode":432,"ownerMax":6}').request, {
    op: 'instance.create', name: 'a', max: 4, uid: 1001, gid: 1001, mode: 0o660, ownerMax: 6,
  });
  t.same(parseRequest('{"op":"instance.remove","name":"a"}').request, { op: 'instance.remove', name: 'a', force: false });
  t.ok(OPS.includes('loop.ioctl'));
});

t.test('bad requests get an error naming the problem', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['{"op":', 'EINVAL', /malformed JSON/],
    ['[1,2]', 'EINVAL', /JSON object/],
    ['{"index":1}', 'EINVAL', /no "op"/],
    ['{"op":"frobnicate"}', 'ENOSYS', /unknown op "frobnicate"/],
    ['{"op":"loop.add"}', 'EINVAL', /"index" must be an integer, got nothing/],
    ['{"op":"loop.add","index":"3"}', 'EINVAL', /"index" must be an integer, got "3"/],
    ['{"op":"loop.add","index":1.5}', 'EINVAL', /"index" must be an integer/],
    ['{"op":"bind","queues":0}', 'EINVAL', /queues must be an integer from 1 to 64, got 0/],
    ['{"op":"bind","blockSize":1000}', 'EINVAL', /block size 1000 is not one of 512, 1024, 2048, 4096/],
    ['{"op":"bind","pollUs":-1}', 'EINVAL', /poll time \(µs\) must be an integer from 0 to 1000000, got -1/],
    ['{"op":"bind","copy":"fast"}', 'EINVAL', /copy mode must be one of auto, kernel, user, zero, auto-buf, got "fast"/],
    ['{"op":"bind","maxIoBytes":6000}', 'EINVAL', /max I\/O size 6000 is not a multiple of 4096/],
    ['{"op":"bind","discard":"yes"}', 'EINVAL', /discard must be true or false, got "yes"/],
    ['{"op":"bind","scheduler":"cfq"}', 'EINVAL', /scheduler must be one of none, mq-deadline, kyber, bfq, kernel, got "cfq"/],
    ['{"op":"bind","autoclear":1}', 'EINVAL', /autoclear must be true or false, got 1/],
    ['{"op":"bind","directIo":true,"offset":100}', 'EINVAL', /offset 100 must be a multiple of the block size 512 with direct I\/O/],
    ['{"op":"bind","id":5,"maxIo":4096}', 'EINVAL', /"bind" has no field "maxIo"/],
    ['{"op":"bind","readonly":true}', 'EINVAL', /"bind" has no field "readonly"/],
    ['{"op":"instance.create","name":"../etc"}', 'EINVAL', /instance name "..\/etc" is not valid/],
    ['{"op":"instance.create","name":"a","max":-1}', 'EINVAL', /"max" must be from 0 to 1048576, got -1/],
    ['{"op":"bind","path":"/tmp/a\\u0000b"}', 'EINVAL', /"path" must not contain a NUL character/],
    ['{"op":"instance.set","name":"a"}', 'EINVAL', /needs "max", "ownerMax", "maxDepth" or "maxMemory"/],
    ['{"op":"list","id":{}}', 'EINVAL', /"id" must be a number or a string/],
  ];
  for (const [line, code, message] of cases) {
    const p = parseRequest(line);
    t.equal(p.request, undefined, line);
    t.equal(p.error?.code, code, line);
    t.match(p.error?.message, message, line);
  }
  t.equal(parseRequest('{"op":"nope","id":"x1"}').id, 'x1', 'the id is echoed even for a bad request');
});

t.test('type guards accept exactly the valid messages', async (t) => {
  const isLoopAddRequest = guard(checkLoopAdd);
  const isBindRequest = guard(checkBind);
  t.ok(isLoopAddRequest({ op: 'loop.add', index: 4 }));
  t.notOk(isLoopAddRequest({ op: 'loop.add', index: 'x' }));
  t.notOk(isLoopAddRequest(null));
  t.ok(isBindRequest({ op: 'bind' }));
  t.notOk(isBindRequest({ op: 'bind', depth: 0 }));
  t.ok(isInstanceCreateRequest({ op: 'instance.create', name: 'ci-1' }));
  t.notOk(isInstanceCreateRequest({ op: 'instance.create', name: '' }));
  t.ok(isOkReply({ ok: true, index: 3 }));
  t.notOk(isOkReply({ error: { code: 'EIO', errno: 5, message: 'x' } }));
  t.ok(isErrorReply({ error: { code: 'ENOSPC', errno: 28, message: 'full' } }));
  t.notOk(isErrorReply({ error: { code: 'ENOSPC' } }));
});

t.test('errorBody carries code, errno and message', async (t) => {
  t.same(errorBody(new UbloopError('ENOSPC', 'instance a is full')), { code: 'ENOSPC', errno: 28, message: 'instance a is full' });
  t.equal(errorBody(new Error('boom')).code, 'EIO');
  const nodeError = Object.assign(new TypeError('bad argument'), { code: 'ERR_INVALID_ARG_VALUE' });
  t.same(errorBody(nodeError), { code: 'EIO', errno: 5, message: 'internal error (ERR_INVALID_ARG_VALUE): bad argument' }, 'a code that is no errno never goes out as one');
});

t.test('LineReader splits lines and gives each its descriptors', async (t) => {
  const lines: { text: string; fds: number[] }[] = [];
  const r = new LineReader({ line: (l) => lines.push(l), overlong: () => t.fail('no overlong'), drop: () => t.fail('no drop') });
  r.push(Buffer.from('{"a":1}\n'), [5]);
  r.push(Buffer.from('{"b"'), []);
  r.push(Buffer.from(':2}\n\n'), []);
  r.push(Buffer.from('{"c":3}\n'), [6, 7]);
  t.same(lines, [
    { text: '{"a":1}', fds: [5] },
    { text: '{"b":2}', fds: [] },
    { text: '{"c":3}', fds: [6, 7] },
  ]);
});

t.test('an overlong line is reported once, skipped, and the next line still works', async (t) => {
  const lines: string[] = [];
  const overlong: number[][] = [];
  const dropped: number[][] = [];
  const r = new LineReader({ line: (l) => lines.push(l.text), overlong: (fds) => overlong.push(fds), drop: (fds) => dropped.push(fds) }, 100);
  r.push(Buffer.alloc(80, 0x61), [9]);
  r.push(Buffer.alloc(80, 0x61));
  t.same(overlong, [[9]], 'reported as soon as the limit is passed, with its fds');
  r.push(Buffer.alloc(5000, 0x61), [10]);
  t.same(dropped, [[10]], 'fds arriving with the rest of the skipped line are dropped');
  r.push(Buffer.from('aaaa\n{"ok":1}\n'));
  t.same(lines, ['{"ok":1}']);
  t.equal(overlong.length, 1);
  t.equal(MAX_LINE_BYTES, 65536);
});
