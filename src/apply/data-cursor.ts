/**
 * DataCursor: the data cursor of one data directory (src/format/data-cursor.ts; docs/ARCHITECTURE.md,
 * "Recovery after a power cut"). Before a record is applied, `intend()` writes, with one fsetxattr,
 * the last non-WRITE record already applied and the tail of records the SRL has not yet made
 * durable, this one included. A journaling filesystem (ext4, XFS) commits metadata changes in the
 * order they were made, so after a power cut the values on disk cover every change that is: replay
 * knows what is applied (replay-plan.ts), and the records whose changes reached the data directory
 * but not the SRL are in the tail (replay.ts puts them back).
 *
 * Room: ext4 keeps an inode's xattrs within one block, so one slot holds about 3 KiB of tail (50 to
 * 100 namespace records). The root is slot 0. Where the SRL's directory is on the data directory's
 * filesystem (one journal: the same ordering), DATA_CURSOR_SLOTS files there are more slots, used
 * in turn, so the tail can span the SRL's sync interval at any rate without a sync of its own; a
 * slot is reused only once the SRL has made its entries durable (else the SRL is synced first).
 * With the root alone, a full slot syncs the SRL (a group commit starts at half).
 */
import fs from 'node:fs'
import path from 'node:path'
import { sys } from '../native'
import { DATA_CURSOR_XATTRS, DATA_CURSOR_HEAD_BYTES, DATA_CURSOR_PAD_HEAD_BYTES, encodeDataCursor, decodeDataCursor, encodeTailEntry, writeDataCursorHead, padDataCursor, type DataCursorValue, type TailEntry } from '../format/data-cursor'
import { DATA_CURSOR_TAIL_BYTES_MAX, DATA_CURSOR_SLOTS } from '../limits'
import { RecordType, type RecordMeta } from '../format/record'

const WRITE = RecordType.WRITE

/**
 * One slot: its descriptor, its entries, and its value laid out in `buf` (the head, then each
 * entry's bytes, `lens` of them, `bytes` in all), so a write encodes only the new entry.
 */
interface Slot { fd: number, entries: TailEntry[], lens: number[], buf: Buffer, bytes: number, maxSeq: number }

const last = (e: TailEntry): number => e[2].k ?? e[0]

/** How far ahead a slot that would need a sync of the SRL starts one (see full()). */
const SYNC_AHEAD_SLOTS = 4

export class DataCursor {
  private failed = false
  private cur = 0
  private gen = 0
  private synced = 0
  /** The tail's bound per slot: DATA_CURSOR_TAIL_BYTES_MAX, less where the filesystem takes less. */
  private maxBytes = DATA_CURSOR_TAIL_BYTES_MAX
  /** Makes every record appended so far durable, synchronously (the SRL's fdatasync); set by the RVG. */
  syncLog: (() => number) | null = null
  /** Starts that fdatasync without waiting (a group commit); set by the RVG. */
  syncSoon: (() => void) | null = null

  private constructor (private readonly slots: Slot[], readonly name: string | null, private readonly log?: (line: string) => void, private created = false) {}

  /**
   * Opens the cursor of `root`. The name is the one already there, else the first the filesystem
   * takes; null (no cursor: replay falls back to the idempotent tolerances) where it takes none.
   * `tailDir`: where the overflow slots go if it is on root's filesystem (the Primary's SRL dir).
   */
  static open (root: string, log?: (line: string) => void, tailDir?: string): DataCursor {
    const rootFd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    const slot = (fd: number): Slot => ({ fd, entries: [], lens: [], buf: Buffer.alloc(DATA_CURSOR_HEAD_BYTES + DATA_CURSOR_TAIL_BYTES_MAX + DATA_CURSOR_PAD_HEAD_BYTES), bytes: 0, maxSeq: 0 })
    let name: string | null = null
    let created = false
    for (const n of DATA_CURSOR_XATTRS) {
      try { sys.fgetxattr(rootFd, n); name = n; break } catch { /* not this one */ }
    }
    if (name === null) {
      const refused: string[] = []
      for (const n of DATA_CURSOR_XATTRS) {
        try {
          sys.fsetxattr(rootFd, n, encodeDataCursor(0, 0, [], 0), 0)
          name = n
          created = true
          break
        } catch (err) { refused.push(`${n}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`) }
      }
      if (name === null) log?.(`the data directory ${root} takes no extended attribute for the data cursor (${refused.join(', ')}): after a power cut, replay relies on the records' idempotency alone`)
    }
    const slots = [slot(rootFd)]
    if (name !== null && tailDir !== undefined && fs.statSync(path.dirname(tailDir), { throwIfNoEntry: false })?.dev === fs.fstatSync(rootFd).dev) {
      fs.mkdirSync(tailDir, { recursive: true, mode: 0o700 })
      for (let i = 0; i < DATA_CURSOR_SLOTS; i++) {
        slots.push(slot(fs.openSync(path.join(tailDir, String(i).padStart(3, '0')), fs.constants.O_RDONLY | fs.constants.O_CREAT, 0o600)))
      }
    }
    const dc = new DataCursor(slots, name, log, created)
    // Continue after the newest slot on disk.
    let g = -1
    slots.forEach((s, i) => { const v = dc.readSlot(s); if (v !== null && v.g > g) { g = v.g; dc.cur = i } })
    dc.gen = Math.max(0, g)
    return dc
  }

  private readSlot (s: Slot): DataCursorValue | null {
    try { return decodeDataCursor(sys.fgetxattr(s.fd, this.name!)) } catch { return null }
  }

  /**
   * What the data directory says: `c` from the newest slot, the entries of every slot in sequence
   * order; or null: no cursor, unreadable, or one this process created (it knows nothing of what
   * was applied before: a new data directory, or one whose cursor was removed after a failure).
   */
  read (): DataCursorValue | null {
    if (this.name === null || this.created) return null
    let newest: DataCursorValue | null = null
    const t: TailEntry[] = []
    for (const s of this.slots) {
      const v = this.readSlot(s)
      if (v === null) { if (s === this.slots[0]) return null; continue }
      if (newest === null || v.g > newest.g) newest = v
      t.push(...v.t)
    }
    if (newest === null) return null
    t.sort((a, b) => a[0] - b[0])
    return { c: newest.c, g: newest.g, t }
  }

  /**
   * Before record `seq` is applied: `c` is the last non-WRITE record applied. A WRITE's entry
   * carries {p, o, l}, not its bytes. `packed`: `meta` as encoded (packMeta), if the caller has it.
   */
  intend (c: number, seq: number, type: RecordType, meta: RecordMeta, packed?: Buffer): void {
    if (this.name === null || this.failed) return
    let s = this.slots[this.cur]
    this.trim(s)
    let top = s.entries[s.entries.length - 1]
    if (top !== undefined && top[0] === seq && ((top[2].h === 1 && meta.h !== 1) || (type !== WRITE && top[1] === type))) {
      // This record's own entry from before its reservation (h: 1), or a new entry's from before
      // it was made (its times now: PrimaryRvg.appendNewEntry): the later one replaces it.
      s.entries.pop()
      s.bytes -= s.lens.pop()!
      top = s.entries[s.entries.length - 1]
    }
    if (type === WRITE && meta.h !== 1 && top !== undefined && top[1] === WRITE && top[2].h !== 1 && last(top) === seq - 1 && top[2].p === meta.p &&
        meta.o! >= top[2].o! && meta.o! <= top[2].o! + top[2].l!) {
      // The next write of a run (sequential, or over what the run wrote): one entry for the run,
      // records top[0]..seq, so a streaming writer does not fill the tail.
      top[2] = { p: meta.p, o: top[2].o, l: Math.max(top[2].o! + top[2].l!, meta.o! + meta.l!) - top[2].o!, k: seq }
      s.entries.pop()
      s.bytes -= s.lens.pop()!
      if (!this.add(s, top)) s = this.fresh(s, top)
    } else {
      const e: TailEntry = [seq, type, meta]
      if (!this.add(s, e, packed)) s = this.fresh(s, e, packed)
    }
    s.maxSeq = seq
    if (this.slots.length === 1 && s.bytes > this.maxBytes / 2) this.syncSoon?.()
    writeDataCursorHead(s.buf, c, this.gen, s.entries.length)
    const value = padDataCursor(s.buf, s.bytes, this.size)
    try {
      sys.fsetxattr(s.fd, this.name, value, 0)
    } catch (err) {
      // Too large for this filesystem (ext4 keeps an xattr within one block: about 1,000 bytes on
      // a 1 KiB-block filesystem): keep slots smaller from now on, and start a fresh one now.
      const code = (err as NodeJS.ErrnoException).code
      if (!(code === 'ENOSPC' || code === 'E2BIG' || code === 'ERANGE') || s.entries.length <= 1) return this.failedWith(err as Error, seq)
      this.maxBytes = Math.max(64, Math.floor(s.bytes / 2))
      const e = s.entries.pop()!
      s.bytes -= s.lens.pop()!
      const n = this.fresh(s, e)
      n.maxSeq = seq
      writeDataCursorHead(n.buf, c, this.gen, n.entries.length)
      this.write(n, padDataCursor(n.buf, n.bytes, this.size), seq)
    }
  }

  /**
   * Whether a record like this one gets an entry in the tail (a cursor in use, and room for its
   * entry in an empty slot, with a margin for a changed time): a change made before its record is
   * appended (PrimaryRvg.appendNewEntry) relies on it to be put back after a crash.
   */
  holds (type: RecordType, meta: RecordMeta, packed?: Buffer): boolean {
    if (this.name === null || this.failed) return false
    return encodeTailEntry([Number.MAX_SAFE_INTEGER, type, meta], packed).length + 16 <= this.maxBytes
  }

  /** Every value's size (see padDataCursor): the head, room for maxBytes of entries, the padding. */
  private get size (): number { return DATA_CURSOR_HEAD_BYTES + this.maxBytes + DATA_CURSOR_PAD_HEAD_BYTES }

  /** Appends entry `e` to slot `s` if it has room. */
  private add (s: Slot, e: TailEntry, packed?: Buffer): boolean {
    const b = encodeTailEntry(e, packed)
    if (s.bytes + b.length > this.maxBytes) return false
    b.copy(s.buf, DATA_CURSOR_HEAD_BYTES + s.bytes)
    s.entries.push(e)
    s.lens.push(b.length)
    s.bytes += b.length
    return true
  }

  /**
   * Entry `e` does not fit in slot `s`: continue in another (full()); if it does not fit even in
   * an empty slot (a SETXATTR with a large value), the SRL is synced first, so the record is
   * durable and needs no entry (the slot keeps none).
   */
  private fresh (s: Slot, e: TailEntry, packed?: Buffer): Slot {
    const n = this.full(s)
    if (!this.add(n, e, packed) && this.syncLog !== null) this.durable(this.syncLog())
    return n
  }

  /**
   * Slot `s` has no room for another entry: continue in the next slot (the root alone: in the same
   * one, after a sync of the SRL empties it). A slot is reused only once the SRL has made its
   * entries durable; if it has not yet, it is synced now (the writer waits).
   */
  private full (s: Slot): Slot {
    this.cur = (this.cur + 1) % this.slots.length
    this.gen++
    const n = this.slots[this.cur]
    if (n.maxSeq > this.synced && this.syncLog !== null) this.durable(this.syncLog())
    // A few slots ahead still holds what the SRL has not made durable: start a group commit now,
    // so it is done before this writer gets there (none while the SRL's own sync every second keeps
    // a lap ahead, as it does below about 3,000 records a second).
    if (this.slots.length > 1 && this.slots[(this.cur + SYNC_AHEAD_SLOTS) % this.slots.length].maxSeq > this.synced) this.syncSoon?.()
    this.trim(n)
    if (n !== s) { n.entries = []; n.lens = []; n.bytes = 0 }
    return n
  }

  /** Drops the entries of `s` the SRL has made durable. */
  private trim (s: Slot): void {
    let i = 0
    let gone = 0
    while (i < s.entries.length && last(s.entries[i]) <= this.synced) gone += s.lens[i++]
    if (i === 0) return
    s.buf.copy(s.buf, DATA_CURSOR_HEAD_BYTES, DATA_CURSOR_HEAD_BYTES + gone, DATA_CURSOR_HEAD_BYTES + s.bytes)
    s.entries = s.entries.slice(i)
    s.lens = s.lens.slice(i)
    s.bytes -= gone
  }

  /** The SRL is durable through record `seq`. */
  durable (seq: number): void {
    if (seq > this.synced) this.synced = seq
  }

  /**
   * At the end of a recovery, with every record up to `seq` applied and durable: a slot that names
   * a record past it (left by another log) or is unreadable is set to `{c: seq}` with no entries;
   * one that does not is left alone, a change of nothing (setting the root's would touch its ctime
   * on every start).
   */
  settle (seq: number): void {
    if (this.name === null) return
    this.synced = Math.max(this.synced, seq)
    // Each slot rewritten gets its own generation, so no two values are alike (ext4 shares an
    // xattr block between inodes whose values are equal, and a shared block is copied, so
    // allocated again, when it next changes).
    let g = this.gen
    let newest = -1
    this.slots.forEach((s, i) => {
      s.entries = []; s.lens = []; s.bytes = 0; s.maxSeq = 0
      const now = this.created ? null : this.readSlot(s)
      // Every slot gets its full-size value now (its xattr block allocated while there is room),
      // unless it has one that needs no change.
      const full = now !== null && sys.fgetxattr(s.fd, this.name!).length === this.size
      if (now === null || !full || now.c > seq || now.t.some((e) => last(e) > seq)) {
        this.write(s, encodeDataCursor(seq, ++g, [], this.size), seq)
        newest = i
      }
    })
    if (newest >= 0) { this.gen = g; this.cur = newest }
    this.created = false
  }

  private write (s: Slot, buf: Buffer, seq: number): void {
    try {
      sys.fsetxattr(s.fd, this.name!, buf, 0)
    } catch (err) {
      this.failedWith(err as Error, seq)
    }
  }

  /** Never fails a change: the next start replays as without a cursor, and says so. */
  private failedWith (err: Error, seq: number): void {
    this.failed = true
    this.log?.(`cannot set the data cursor (${this.name!}) before sequence number ${seq}: ${err.message}; a replay after a power cut relies on the records' idempotency alone`)
    try { sys.fremovexattr(this.slots[0].fd, this.name!) } catch { /* the next start reads a stale cursor: see replay-plan.ts */ }
  }

  close (): void {
    for (const s of this.slots) if (s.fd >= 0) fs.closeSync(s.fd)
    for (const s of this.slots) s.fd = -1
  }
}
