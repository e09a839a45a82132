/**
 * The Secondary's apply cursor, `srl/cursor` (docs/FORMAT.md, "LevelDB state" and "Recovery"):
 * 24 bytes, the last applied record's sequence number (u64 LE) and the ring offset after it
 * (u64 LE), then the CRC-32C of those 16 bytes (u32 LE), then 4 zero bytes. Rewritten in place
 * with one pwrite; a torn or zeroed cursor fails its checksum and is ignored.
 */
import { crc32c } from './crc'
import type { Position } from './state'

export const CURSOR_BYTES = 24

export function encodeCursor (pos: Position): Buffer {
  const buf = Buffer.alloc(CURSOR_BYTES)
  buf.writeBigUInt64LE(BigInt(pos.seq), 0)
  buf.writeBigUInt64LE(BigInt(pos.offset), 8)
  buf.writeUInt32LE(crc32c(buf.subarray(0, 16)) >>> 0, 16)
  return buf
}

/** The position in a cursor, or null if its checksum fails. */
export function decodeCursor (buf: Buffer): Position | null {
  if (buf.length < CURSOR_BYTES || (crc32c(buf.subarray(0, 16)) >>> 0) !== buf.readUInt32LE(16)) return null
  return { seq: Number(buf.readBigUInt64LE(0)), offset: Number(buf.readBigUInt64LE(8)) }
}
