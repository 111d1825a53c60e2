// The size of the filesystem on a block device, read from its superblock, so that a
// resize never cuts a filesystem short without saying so. Knows ext2/3/4 and XFS, the
// filesystems people grow and shrink under loop devices; null for anything else.
import { closeSync, openSync, readSync } from 'node:fs';

export interface FilesystemSize {
  type: 'ext4' | 'xfs';
  bytes: number;
}

export function filesystemSize(device: string): FilesystemSize | null {
  const head = Buffer.alloc(4096);
  const fd = openSync(device, 'r');
  try {
    readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  // XFS: "XFSB", sb_blocksize (be32) at 4, sb_dblocks (be64) at 8.
  if (head.toString('latin1', 0, 4) === 'XFSB') {
    return { type: 'xfs', bytes: Number(head.readBigUInt64BE(8)) * head.readUInt32BE(4) };
  }
  // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, s_blocks_count_lo at +4,
  // s_log_block_size at +24, s_blocks_count_hi at +0x150 with INCOMPAT_64BIT (0x80) at +0x60.
  const sb = head.subarray(1024);
  if (sb.readUInt16LE(56) === 0xef53) {
    const blockSize = 1024 << sb.readUInt32LE(24);
    const hi = sb.readUInt32LE(0x60) & 0x80 ? sb.readUInt32LE(0x150) : 0;
    return { type: 'ext4', bytes: (hi * 2 ** 32 + sb.readUInt32LE(4)) * blockSize };
  }
  return null;
}
