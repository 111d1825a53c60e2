// LineReader's descriptor rule: the descriptors of a chunk belong to the line holding
// the chunk's last byte (see lib/protocol/line-reader.ts for why).
import t from 'tap';
import { LineReader, type Line } from '../../lib/protocol/line-reader.js';

function reader(max?: number) {
  const lines: Line[] = [];
  const overlong: number[][] = [];
  const dropped: number[][] = [];
  const r = new LineReader({ line: (l) => lines.push(l), overlong: (fds) => overlong.push(fds), drop: (fds) => dropped.push(fds) }, max);
  return { r, lines, overlong, dropped };
}

t.test('fds with a chunk ending in a newline go to the last line, not the first', async (t) => {
  const { r, lines } = reader();
  r.push(Buffer.from('{"op":"list"}\n{"op":"bind"}\n'), [5]);
  t.same(lines, [
    { text: '{"op":"list"}', fds: [] },
    { text: '{"op":"bind"}', fds: [5] },
  ]);
});

t.test('two binds back to back keep their own fds', async (t) => {
  const { r, lines } = reader();
  r.push(Buffer.from('bind1\n'), [5]);
  r.push(Buffer.from('bind2\n'), [6]);
  t.same(lines, [
    { text: 'bind1', fds: [5] },
    { text: 'bind2', fds: [6] },
  ]);
  // earlier fd-less writes glued in front of an fd-carrying one
  r.push(Buffer.from('a\nb\nbind3\n'), [7, 8]);
  t.same(lines.slice(2), [
    { text: 'a', fds: [] },
    { text: 'b', fds: [] },
    { text: 'bind3', fds: [7, 8] },
  ]);
});

t.test('a line split over chunks gets the fds that came with its first part', async (t) => {
  const { r, lines } = reader();
  // the fd write was cut short by a full receive buffer: its fds come with its first bytes
  r.push(Buffer.from('list\n{"op":"bi'), [5]);
  t.same(lines, [{ text: 'list', fds: [] }], 'the completed line has none');
  r.push(Buffer.from('nd"}\nping\n'));
  t.same(lines.slice(1), [
    { text: '{"op":"bind"}', fds: [5] },
    { text: 'ping', fds: [] },
  ]);
  // a chunk with no newline at all, then its end with the next request's fds
  r.push(Buffer.from('bi'), [6]);
  r.push(Buffer.from('nd\nbind\n'), [7]);
  t.same(lines.slice(3), [
    { text: 'bind', fds: [6] },
    { text: 'bind', fds: [7] },
  ]);
});

t.test('fds of an overlong line are handed back to be closed, never to another line', async (t) => {
  const { r, lines, overlong, dropped } = reader(100);
  // overlong line ends in the chunk that carries its fds
  r.push(Buffer.from(`ok1\n${'a'.repeat(200)}\n`), [5]);
  t.same(overlong, [[5]], 'reported with its fds');
  // overlong line still open at the end of the chunk: its fds wait, then go with the report
  r.push(Buffer.from(`ok2\n${'a'.repeat(60)}`), [6]);
  r.push(Buffer.from('a'.repeat(60)));
  t.same(overlong.slice(1), [[6]]);
  // the rest of a skipped line arrives with fds: dropped
  r.push(Buffer.from('a'.repeat(60)), [7]);
  t.same(dropped, [[7]]);
  r.push(Buffer.from('aaa\nok3\n'), [8]);
  t.same(lines, [
    { text: 'ok1', fds: [] },
    { text: 'ok2', fds: [] },
    { text: 'ok3', fds: [8] },
  ]);
  t.same(dropped, [[7]], 'nothing else dropped');
});
