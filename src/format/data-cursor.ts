/**
 * The data cursor (docs/FORMAT.md, "The data cursor"; issue 16): an extended attribute of the data
 * directory's root, written before each record is applied, by the thread that applies it. Its value
 * is msgpack (format/record.ts's options): `{ v: 1, c, t }`:
 *
 * - `c`: the sequence number of the last record other than a WRITE whose changes are all made
 *   (every earlier record's too);
 * - `t`, the tail: the records appended since the SRL's last fdatasync, up to and including the one
 *   about to be applied, each as `[seq, type, meta]`; a WRITE's meta is `{p, o, l}` (path, offset,
 *   length: its bytes stay in the data file). The last entry of the tail may or may not be applied.
 *
 * A journaling filesystem commits metadata in the order it was changed, so after a power cut the
 * value on disk tells which records' changes can be there: those up to `c` are, at most the next
 * non-WRITE one also is, and every record whose change is there and that the SRL lost with its
 * unsynced tail is in `t` (src/rvg/replay-plan.ts, src/rvg/replay.ts).
 *
 * The name is `trusted.replicafs.applied`, or `user.replicafs.applied` where the filesystem
 * refuses the trusted namespace. Neither is ever shown through a mount, saved into a snapshot or
 * restored from one (isInternalXattr).
 */
import { packValue, unpackValue, type RecordType, type RecordMeta } from './record'

export const DATA_CURSOR_XATTRS = ['trusted.replicafs.applied', 'user.replicafs.applied'] as const
export const DATA_CURSOR_VERSION = 1

export type TailEntry = [seq: number, type: RecordType, meta: RecordMeta]

export interface DataCursorValue { c: number, t: TailEntry[] }

/** Whether an extended attribute is replicafs's own (never shown, copied or replicated). */
export function isInternalXattr (name: string): boolean {
  return name === DATA_CURSOR_XATTRS[0] || name === DATA_CURSOR_XATTRS[1]
}

export function encodeDataCursor (v: DataCursorValue): Buffer {
  return packValue({ v: DATA_CURSOR_VERSION, c: v.c, t: v.t })
}

/** The value, or null if it is not one this version reads. */
export function decodeDataCursor (buf: Buffer): DataCursorValue | null {
  let v: unknown
  try { v = unpackValue(buf) } catch { return null }
  const o = v as { v?: unknown, c?: unknown, t?: unknown }
  if (o === null || typeof o !== 'object' || o.v !== DATA_CURSOR_VERSION || typeof o.c !== 'number' || !Array.isArray(o.t)) return null
  for (const e of o.t) {
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'number' || typeof e[1] !== 'number' || e[2] === null || typeof e[2] !== 'object') return null
  }
  return { c: o.c, t: o.t as TailEntry[] }
}
