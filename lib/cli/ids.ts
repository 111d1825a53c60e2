// User and group ids as people type them: numbers or names from /etc/passwd and /etc/group.
import { readFileSync } from 'node:fs';
import { invalid } from '../errors.js';

function lookup(file: string, name: string, what: string): { id: number; gid: number } {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // no database: only numbers work
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined) return { id: Number(f[2]), gid: Number(f[3] ?? f[2]) };
  }
  throw invalid(`no ${what} named ${JSON.stringify(name)}`);
}

/** "UID[:GID]": without a GID, the user's primary group (or the same number). */
export function parseOwner(text: string): { uid: number; gid: number } {
  const [u, g, extra] = text.split(':');
  if (extra !== undefined || !u) throw invalid(`owner must be UID[:GID], got ${JSON.stringify(text)}`);
  let uid: number;
  let gid: number;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gid = uid;
  } else {
    const p = lookup('/etc/passwd', u, 'user');
    uid = p.id;
    gid = p.gid;
  }
  if (g !== undefined && g !== '') gid = /^\d+$/.test(g) ? Number(g) : lookup('/etc/group', g, 'group').id;
  if (uid > 2 ** 32 - 2 || gid > 2 ** 32 - 2) throw invalid(`owner ${text} is out of range`);
  return { uid, gid };
}

/** An octal mode like 0660 or 660. */
export function parseMode(text: string): number {
  if (!/^0?[0-7]{1,3}$/.test(text)) throw invalid(`mode must be octal like 0660, got ${JSON.stringify(text)}`);
  return parseInt(text, 8);
}
