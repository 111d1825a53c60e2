// Sizes as util-linux's losetup reads them (strtosize): a C integer (decimal, 0x hex,
// leading-0 octal) with an optional suffix: K, M, G, T, P, E (either case) or KiB, MiB,
// ... for powers of 1024, KB, MB, ... for powers of 1000; a fraction only with a suffix
// (1.5M). Negative numbers and anything else are refused.

const SUFFIXES = 'KMGTPEZY';

/** The bytes, or null when the text is not a size (the caller words the error). */
export function parseLosetupSize(text: string): bigint | null {
  const m = /^\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)(?:\.([0-9]+))?(?:([KMGTPEZYkmgtpezy])(iB|ib|B|b)?)?$/.exec(text);
  if (!m) return null;
  const [, intPart = '', fracPart, suffix, unit] = m;
  if (fracPart !== undefined && suffix === undefined) return null;
  if (unit !== undefined && unit.length === 2 && unit[0] !== 'i') return null;
  let value: bigint;
  if (/^0[xX]/.test(intPart)) value = BigInt(intPart);
  else if (intPart.length > 1 && intPart.startsWith('0')) value = BigInt(`0o${intPart.slice(1)}`);
  else value = BigInt(intPart);
  if (suffix === undefined) return value;
  const base = unit === 'B' || unit === 'b' ? 1000n : 1024n;
  const scale = base ** BigInt(SUFFIXES.indexOf(suffix.toUpperCase()) + 1);
  let bytes = value * scale;
  if (fracPart !== undefined) bytes += (BigInt(fracPart) * scale) / 10n ** BigInt(fracPart.length);
  if (bytes >= 2n ** 64n) return null;
  return bytes;
}
