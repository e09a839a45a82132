/**
 * The data cursor (docs/FORMAT.md, "The data cursor"; issue 16): an extended attribute of the data
 * directory's root (and, where the SRL's directory is on the same filesystem, of the files in
 * `SRL/cursor-tail/`, its overflow slots), written before each record is applied, by the thread
 * that applies it. Its value is a msgpack array (format/record.ts's options):
 * `[2, c, g, ...entries]`:
 *
 * - `2`: this format's version (1 is read too: it has no `h` entries); a value with another is
 *   ignored (as no cursor);
 * - `c`: the sequence number of the last record other than a WRITE whose changes are all made
 *   (every earlier record's too), as of when this slot was written;
 * - `g`: the slot's generation: the slot written last has the highest (its `c` is the one to use);
 * - entries, the tail: records appended since the SRL's last fdatasync, up to and including the
 *   one about to be applied, each `[seq, type, meta]`; a WRITE's meta is `{p, o, l}` (path,
 *   offset, length: its bytes stay in the data file), and a run of WRITEs to one file, each
 *   starting within or right after what the run covers, is one entry `{p, o, l, k}` for records
 *   seq..k. The last entry written may or may not be applied. Slots other than the newest hold
 *   older entries. A queued WRITE is first named `{p, o, l, h: 1}` (version 2), before its range
 *   is reserved (fallocate, which sets the file's mtime) and before it is appended; once appended,
 *   its ordinary entry replaces that one. An `h` entry left past the SRL's end is a write that
 *   never reached the SRL or the file's bytes, only possibly its mtime;
 * - last, padding: a bin of zeros that keeps every value of a slot the same size, so the filesystem
 *   allocates the slot's xattr block once and rewrites it in place (a value that shrank into the
 *   inode and grew again would need a new block, which a full disk refuses).
 *
 * A journaling filesystem commits metadata in the order it was changed, so after a power cut the
 * values on disk tell which records' changes can be there: those up to `c` are, at most the next
 * non-WRITE one also is, and every record whose change is there and that the SRL lost with its
 * unsynced tail is in the entries (src/rvg/replay-plan.ts, src/rvg/replay.ts).
 *
 * The name is `trusted.replicafs.applied`, or `user.replicafs.applied` where the filesystem
 * refuses the trusted namespace. Neither is ever shown through a mount, saved into a snapshot or
 * restored from one (isInternalXattr).
 */
import { packValue, unpackValue, type RecordType, type RecordMeta } from './record'

export const DATA_CURSOR_XATTRS = ['trusted.replicafs.applied', 'user.replicafs.applied'] as const
export const DATA_CURSOR_VERSION = 2
/** Versions read: 1 (before `h` entries) and 2. */
export const DATA_CURSOR_VERSIONS_READ: readonly number[] = [1, 2]

export type TailEntry = [seq: number, type: RecordType, meta: RecordMeta]

export interface DataCursorValue { c: number, g: number, t: TailEntry[] }

/** Whether an extended attribute is replicafs's own (never shown, copied or replicated). */
export function isInternalXattr (name: string): boolean {
  return name === DATA_CURSOR_XATTRS[0] || name === DATA_CURSOR_XATTRS[1]
}

/**
 * One entry's bytes (cached by the writer: a value is its slot's entries, encoded once each).
 * `packed`: the entry's meta already encoded (the record's own metadata bytes, packMeta): the
 * entry is then laid out around them, as msgpack (array of 3, the sequence number, the type).
 */
export function encodeTailEntry (e: TailEntry, packed?: Buffer): Buffer {
  if (packed === undefined) return packValue(e)
  const [seq, type] = e
  const n = seq < 0x80 ? 1 : seq <= 0xff ? 2 : seq <= 0xffff ? 3 : seq <= 0xffffffff ? 5 : 9
  const b = Buffer.allocUnsafe(2 + n + packed.length)
  b[0] = 0x93
  if (n === 1) b[1] = seq
  else if (n === 2) { b[1] = 0xcc; b[2] = seq }
  else if (n === 3) { b[1] = 0xcd; b.writeUInt16BE(seq, 2) }
  else if (n === 5) { b[1] = 0xce; b.writeUInt32BE(seq, 2) }
  else { b[1] = 0xcf; b.writeBigUInt64BE(BigInt(seq), 2) }
  b[1 + n] = type // a positive fixint: record types are below 128
  packed.copy(b, 2 + n)
  return b
}

/**
 * Bytes before the entries in a value as the writer lays it out: array 32 header (5), the version
 * (a positive fixint, 1), `c` as uint 64 (9), `g` as uint 32 (5). Readers take any msgpack.
 */
export const DATA_CURSOR_HEAD_BYTES = 20
/** The padding's header (bin 32). */
export const DATA_CURSOR_PAD_HEAD_BYTES = 5

/** Writes the head of a value with `entries` entries (and the padding) into `buf` (DATA_CURSOR_HEAD_BYTES bytes). */
export function writeDataCursorHead (buf: Buffer, c: number, g: number, entries: number): void {
  buf[0] = 0xdd
  buf.writeUInt32BE(3 + entries + 1, 1)
  buf[5] = DATA_CURSOR_VERSION
  buf[6] = 0xcf
  buf.writeBigUInt64BE(BigInt(c), 7)
  buf[15] = 0xce
  buf.writeUInt32BE(g >>> 0, 16)
}

/**
 * Writes the padding after `used` bytes of entries in `buf`, so the value is `size` bytes; returns
 * the value (a view of `buf`).
 */
export function padDataCursor (buf: Buffer, used: number, size: number): Buffer {
  const at = DATA_CURSOR_HEAD_BYTES + used
  const n = size - at - DATA_CURSOR_PAD_HEAD_BYTES
  buf[at] = 0xc6
  buf.writeUInt32BE(n, at + 1)
  buf.fill(0, at + DATA_CURSOR_PAD_HEAD_BYTES, size)
  return buf.subarray(0, size)
}

/** A slot's value from its `c`, `g` and encoded entries, padded to `size` bytes. */
export function encodeDataCursor (c: number, g: number, entries: Buffer[], size: number): Buffer {
  const used = entries.reduce((n, b) => n + b.length, 0)
  const buf = Buffer.alloc(Math.max(size, DATA_CURSOR_HEAD_BYTES + used + DATA_CURSOR_PAD_HEAD_BYTES))
  writeDataCursorHead(buf, c, g, entries.length)
  let at = DATA_CURSOR_HEAD_BYTES
  for (const b of entries) { b.copy(buf, at); at += b.length }
  return padDataCursor(buf, used, buf.length)
}

/** A slot's value, or null if it is not one this version reads. */
export function decodeDataCursor (buf: Buffer): DataCursorValue | null {
  let v: unknown
  try { v = unpackValue(buf) } catch { return null }
  if (!Array.isArray(v) || v.length < 3 || !DATA_CURSOR_VERSIONS_READ.includes(v[0] as number) || typeof v[1] !== 'number' || typeof v[2] !== 'number') return null
  // the padding, last (a value without one is read too)
  const t = v.length > 3 && v[v.length - 1] instanceof Uint8Array ? v.slice(3, -1) : v.slice(3)
  for (const e of t) {
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'number' || typeof e[1] !== 'number' || e[2] === null || typeof e[2] !== 'object') return null
  }
  return { c: v[1], g: v[2], t: t as TailEntry[] }
}
