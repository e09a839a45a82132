/**
 * DataCursor: the data cursor of one data directory (src/format/data-cursor.ts; docs/ARCHITECTURE.md,
 * "Recovery after a power cut"). Before a record is applied, `intend()` writes, with one fsetxattr
 * on the root's descriptor, the last non-WRITE record already applied and the tail of records the
 * SRL has not yet made durable, this one included. A journaling filesystem (ext4, XFS) commits
 * metadata changes in the order they were made, so after a power cut the value on disk covers every
 * change that is: replay knows what is applied (replay-plan.ts), and the records whose changes
 * reached the data directory but not the SRL are in the tail (replay.ts puts them back).
 */
import fs from 'node:fs'
import { sys } from '../native'
import { DATA_CURSOR_XATTRS, encodeDataCursor, decodeDataCursor, type DataCursorValue, type TailEntry } from '../format/data-cursor'
import { DATA_CURSOR_TAIL_BYTES_MAX } from '../limits'
import type { RecordType, RecordMeta } from '../format/record'

export class DataCursor {
  private failed = false
  private tail: TailEntry[] = []
  /** Makes every record appended so far durable, synchronously (the SRL's fdatasync); set by the RVG. */
  syncLog: (() => number) | null = null
  /** Starts that fdatasync without waiting (a group commit); set by the RVG. */
  syncSoon: (() => void) | null = null

  private constructor (private fd: number, readonly name: string | null, private readonly log?: (line: string) => void, private created = false) {}

  /**
   * Opens the cursor of `root`. The name is the one already there, else the first the filesystem
   * takes; null (no cursor: replay falls back to the idempotent tolerances) where it takes none.
   */
  static open (root: string, log?: (line: string) => void): DataCursor {
    const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    for (const name of DATA_CURSOR_XATTRS) {
      try { sys.fgetxattr(fd, name); return new DataCursor(fd, name, log) } catch { /* not this one */ }
    }
    const refused: string[] = []
    for (const name of DATA_CURSOR_XATTRS) {
      try {
        sys.fsetxattr(fd, name, encodeDataCursor({ c: 0, t: [] }), 0)
        return new DataCursor(fd, name, log, true)
      } catch (err) { refused.push(`${name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`) }
    }
    log?.(`the data directory ${root} takes no extended attribute for the data cursor (${refused.join(', ')}): after a power cut, replay relies on the records' idempotency alone`)
    return new DataCursor(fd, null, log)
  }

  /**
   * The value on the data directory, or null: none, unreadable, no cursor, or one this process
   * created (it knows nothing of what was applied before: a new data directory, or one whose
   * cursor was removed after a failure).
   */
  read (): DataCursorValue | null {
    if (this.name === null || this.created) return null
    try { return decodeDataCursor(sys.fgetxattr(this.fd, this.name)) } catch { return null }
  }

  /**
   * Before record `seq` is applied: `c` is the last non-WRITE record applied. A WRITE's entry
   * carries {p, o, l}, not its bytes. If the tail grows past DATA_CURSOR_TAIL_BYTES_MAX, the SRL
   * is synced first (everything appended, this record included, is then durable: no tail).
   */
  intend (c: number, seq: number, type: RecordType, meta: RecordMeta): void {
    if (this.name === null || this.failed || this.fd < 0) return
    this.tail.push([seq, type, meta])
    let buf = encodeDataCursor({ c, t: this.tail })
    // Half full: start a sync that empties the tail before it fills (a writer never waits for it).
    if (buf.length > this.maxBytes / 2) this.syncSoon?.()
    if (buf.length > this.maxBytes && this.syncLog !== null) {
      this.durable(this.syncLog())
      buf = encodeDataCursor({ c, t: this.tail })
    }
    try {
      sys.fsetxattr(this.fd, this.name, buf, 0)
      return
    } catch (err) {
      // Too large for this filesystem (ext4 keeps an xattr within one block: about 1,000 bytes
      // on a 1 KiB-block filesystem): keep the tail smaller from now on, and empty it now.
      const code = (err as NodeJS.ErrnoException).code
      if (!(code === 'ENOSPC' || code === 'E2BIG' || code === 'ERANGE') || this.syncLog === null || this.tail.length <= 1) return this.failedWith(err as Error, seq)
      this.maxBytes = Math.max(64, Math.floor(buf.length / 2))
    }
    this.durable(this.syncLog())
    this.write(encodeDataCursor({ c, t: this.tail }), seq)
  }

  /** The tail's bound: DATA_CURSOR_TAIL_BYTES_MAX, less where the filesystem takes less. */
  private maxBytes = DATA_CURSOR_TAIL_BYTES_MAX

  /** The SRL is durable through record `seq`: the tail drops it and everything before it. */
  durable (seq: number): void {
    if (this.tail.length > 0 && this.tail[0][0] <= seq) this.tail = this.tail.filter(([s]) => s > seq)
  }

  /**
   * At the end of a recovery, with every record up to `seq` applied and durable: a cursor that
   * names a record past it (left by another log) or is unreadable is set to `seq`; one that does
   * not is left alone, a change of nothing (setting it would touch the root's ctime on every start).
   */
  settle (seq: number): void {
    if (this.name === null) return
    this.tail = []
    const now = this.read()
    if (now === null || now.c > seq || now.t.some(([s]) => s > seq)) this.write(encodeDataCursor({ c: seq, t: [] }), seq)
    this.created = false
  }

  private write (buf: Buffer, seq: number): void {
    try {
      sys.fsetxattr(this.fd, this.name!, buf, 0)
    } catch (err) {
      this.failedWith(err as Error, seq)
    }
  }

  /** Never fails a change: the next start replays as without a cursor, and says so. */
  private failedWith (err: Error, seq: number): void {
    this.failed = true
    this.log?.(`cannot set the data cursor (${this.name!}) before sequence number ${seq}: ${err.message}; a replay after a power cut relies on the records' idempotency alone`)
    try { sys.fremovexattr(this.fd, this.name!) } catch { /* the next start reads a stale cursor: see replay-plan.ts */ }
  }

  close (): void {
    if (this.fd >= 0) fs.closeSync(this.fd)
    this.fd = -1
  }
}
