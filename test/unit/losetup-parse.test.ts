// losetup's command line, read as util-linux 2.38 reads it: getopt bundling and
// permutation, long-option prefixes, the exclusive groups, the action the options make,
// and its words for every refusal.
import t from 'tap';
import { LosetupError, parseLosetupArgs, type LosetupCommand } from '../../lib/cli/losetup/parse.js';
import { parseLosetupSize } from '../../lib/cli/losetup/size.js';
import { DEFAULT_LIST_COLUMNS } from '../../lib/cli/losetup/columns.js';

function refused(argv: string[]): { lines: string[]; tryHelp: boolean } {
  try {
    parseLosetupArgs(argv);
  } catch (err) {
    if (err instanceof LosetupError) return { lines: err.lines, tryHelp: err.tryHelp };
    throw err;
  }
  throw new Error(`${argv.join(' ')} was accepted`);
}

function as<A extends LosetupCommand['action']>(cmd: LosetupCommand, action: A): Extract<LosetupCommand, { action: A }> {
  if (cmd.action !== action) throw new Error(`expected ${action}, got ${cmd.action}`);
  return cmd as Extract<LosetupCommand, { action: A }>;
}

t.test('sizes: suffixes, bases and fractions as strtosize reads them', async (t) => {
  t.equal(parseLosetupSize('4096'), 4096n);
  t.equal(parseLosetupSize('1K'), 1024n);
  t.equal(parseLosetupSize('1k'), 1024n);
  t.equal(parseLosetupSize('1KiB'), 1024n);
  t.equal(parseLosetupSize('1KB'), 1000n, 'KB is a power of 1000');
  t.equal(parseLosetupSize('2MiB'), 2n * 2n ** 20n);
  t.equal(parseLosetupSize('1M'), 2n ** 20n);
  t.equal(parseLosetupSize('3G'), 3n * 2n ** 30n);
  t.equal(parseLosetupSize('1T'), 2n ** 40n);
  t.equal(parseLosetupSize('1.5M'), 1572864n);
  t.equal(parseLosetupSize('0x200'), 512n, 'hexadecimal, as strtoumax base 0');
  t.equal(parseLosetupSize('010'), 8n, 'a leading 0 is octal');
  for (const bad of ['', 'abc', '-1', '1x', '1.5', '1KiBx', '1Mb2', '08', '1 M']) t.equal(parseLosetupSize(bad), null, JSON.stringify(bad));
});

t.test('no arguments lists every device as a table, like losetup', async (t) => {
  const cmd = as(parseLosetupArgs([]), 'show');
  t.same(cmd.output, { list: true, json: false, raw: false, noHeadings: false, columns: DEFAULT_LIST_COLUMNS });
  t.equal(cmd.file, null);
  t.equal(as(parseLosetupArgs(['--instance', 'ci']), 'show').ubloop.instance, 'ci', 'ubloop options do not count as arguments');
  t.equal(as(parseLosetupArgs(['-J']), 'show').output.json, true, '-J alone lists');
  t.equal(as(parseLosetupArgs(['--raw']), 'show').output.raw, true, '--raw alone lists');
  t.equal(as(parseLosetupArgs(['-a']), 'show').output.list, false, '-a: the plain lines');
  t.equal(as(parseLosetupArgs(['-l', '-a']), 'show').output.list, true);
});

t.test('-f FILE attaches; bundled short options and --show', async (t) => {
  const c1 = as(parseLosetupArgs(['-fP', '--show', 'disk.img']), 'create');
  t.equal(c1.file, 'disk.img');
  t.equal(c1.show, true);
  t.equal(c1.setup.partscan, true);
  t.equal(c1.device, null);
  const c2 = as(parseLosetupArgs(['-rf', 'disk.img']), 'create');
  t.equal(c2.setup.readOnly, true);
  const c3 = as(parseLosetupArgs(['disk.img', '-f', '-o', '1M', '--sizelimit=2MiB', '-b', '4096', '--direct-io', '--sh', '-L']), 'create');
  t.same(c3.setup, { offset: 2n ** 20n, sizeLimit: 2n * 2n ** 20n, sectorSize: 4096n, readOnly: false, partscan: false, directIo: true, noOverlap: true });
  t.equal(c3.show, true, 'an unambiguous prefix of --show');
  t.equal(as(parseLosetupArgs(['-fo512', 'x']), 'create').setup.offset, 512n, 'an argument glued to its option');
  t.equal(as(parseLosetupArgs(['-f', '--direct-io=off', 'x']), 'create').setup.directIo, false);
  const named = as(parseLosetupArgs(['/run/ubloop/instances/default/loop3', 'disk.img']), 'create');
  t.equal(named.device, '/run/ubloop/instances/default/loop3', 'losetup DEV FILE');
  t.equal(named.file, 'disk.img');
  t.equal(as(parseLosetupArgs(['-f', '--', '-odd.img']), 'create').file, '-odd.img', '"--" ends the options');
});

t.test('-f alone, -d, -D, -c, --remove, -j and one device', async (t) => {
  t.equal(parseLosetupArgs(['-f']).action, 'find-free');
  t.same(as(parseLosetupArgs(['-d', 'a', 'b']), 'detach').devices, ['a', 'b']);
  t.same(as(parseLosetupArgs(['b', '-d', 'a']), 'detach').devices, ['a', 'b'], '-d takes its device; operands anywhere follow (GNU permutation)');
  t.equal(parseLosetupArgs(['-D']).action, 'detach-all');
  t.equal(as(parseLosetupArgs(['-c', 'a']), 'set-capacity').device, 'a');
  t.same(as(parseLosetupArgs(['--remove', 'a']), 'remove').devices, ['a']);
  const j = as(parseLosetupArgs(['-j', 'disk.img', '-o', '1M']), 'show');
  t.equal(j.file, 'disk.img');
  t.equal(j.offset, 2n ** 20n);
  t.equal(as(parseLosetupArgs(['dev']), 'show-one').output.list, false);
  t.equal(as(parseLosetupArgs(['-l', 'dev']), 'show-one').output.list, true);
  t.equal(as(parseLosetupArgs(['--direct-io=on', 'dev']), 'set-dio').on, true, 'a device and --direct-io: set it');
  t.equal(as(parseLosetupArgs(['-b', '4096', 'dev']), 'set-blocksize').size, 4096n);
  t.equal(parseLosetupArgs(['-h']).action, 'help');
  t.equal(parseLosetupArgs(['-V']).action, 'version');
});

t.test('columns: -O replaces the defaults, --output-all has them all, names any case', async (t) => {
  t.same(as(parseLosetupArgs(['-O', 'name,ro']), 'show').output.columns, ['NAME', 'RO']);
  t.same(as(parseLosetupArgs(['-l', '-O', 'NAME,BACK-MAJ:MIN']), 'show').output.columns, ['NAME', 'BACK-MAJ:MIN']);
  t.same(as(parseLosetupArgs(['--output-all']), 'show').output.columns, [
    'NAME', 'AUTOCLEAR', 'BACK-FILE', 'BACK-INO', 'BACK-MAJ:MIN', 'MAJ:MIN', 'OFFSET', 'PARTSCAN', 'REF', 'RO', 'SIZELIMIT', 'DIO', 'LOG-SEC',
  ]);
  t.same(refused(['-O', 'NAME,FOO']), { lines: ['unknown column: FOO'], tryHelp: false });
});

t.test('refusals in util-linux words (getopt\'s, then losetup\'s), each exit status 1', async (t) => {
  t.same(refused(['-x']), { lines: ["invalid option -- 'x'"], tryHelp: true });
  t.same(refused(['--bogus']), { lines: ["unrecognized option '--bogus'"], tryHelp: true });
  t.same(refused(['-o']), { lines: ["option requires an argument -- 'o'"], tryHelp: true });
  t.same(refused(['--offset']), { lines: ["option '--offset' requires an argument"], tryHelp: true });
  t.same(refused(['--show=1']), { lines: ["option '--show' doesn't allow an argument"], tryHelp: true });
  t.same(refused(['--se']), { lines: ["option '--se' is ambiguous; possibilities: '--set-capacity' '--sector-size'"], tryHelp: true });
  // 2.38 names the whole group
  t.same(refused(['-a', '-d', 'x']), { lines: ['mutually exclusive arguments: --detach-all --all --set-capacity --detach --find --associated'], tryHelp: false });
  t.same(refused(['-J', '--raw']), { lines: ['mutually exclusive arguments: --json --raw'], tryHelp: false });
  t.same(refused(['-D', '--remove']).lines, ['mutually exclusive arguments: --detach-all --all --set-capacity --detach --find --associated --remove']);
  t.equal(as(parseLosetupArgs(['-O', 'NAME', '-c', 'dev']), 'set-capacity').device, 'dev', '2.38 never checks -O against -c (its group is out of ASCII order)');
  t.same(refused(['-d']), { lines: ["option requires an argument -- 'd'"], tryHelp: true });
  t.same(refused(['--remove']), { lines: ['no loop device specified'], tryHelp: false });
  t.same(refused(['--direct-io=maybe', '-f', 'x']).lines, ["argument error: 'maybe'"]);
  t.same(refused(['-f', 'a', 'b']), { lines: ['unexpected arguments'], tryHelp: false });
  t.same(refused(['-r', 'dev']), { lines: ['the options --{sizelimit,partscan,read-only,show} are allowed during loop device setup only'], tryHelp: false });
  t.same(refused(['--show', 'dev']).lines, ['the options --{sizelimit,partscan,read-only,show} are allowed during loop device setup only']);
  t.same(refused(['-o', '1', 'dev']), { lines: ['the option --offset is not allowed in this context'], tryHelp: false });
  t.same(refused(['-f', '-o', 'abc', 'x']), { lines: ["failed to parse offset: 'abc': Invalid argument"], tryHelp: false });
  t.same(refused(['-f', '--sizelimit', '1x', 'x']).lines, ["failed to parse size: '1x': Invalid argument"]);
  t.same(refused(['-f', '-b', 'q', 'x']).lines, ["failed to parse logical block size: 'q': Invalid argument"]);
});
