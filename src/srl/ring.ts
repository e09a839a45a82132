/**
 * The SRL's bytes: one preallocated, zero-filled file used as a ring of records.
 *
 * Why this layout (measured, see docs/PERFORMANCE.md and the figures): a LevelDB put per
 * FUSE write costs 2-3x the FUSE write itself; growing append-only files make every fdatasync
 * commit the filesystem journal; a preallocated file written with one pwrite per record and synced
 * with fdatasync commits no metadata, so the log adds almost nothing to the write path.
 *
 * Positions are linear 64-bit byte offsets that only grow; the physical place is offset % size.
 * A record never straddles the end of the file: when it does not fit, a WRAP header (or, with fewer
 * than a header's bytes left, nothing) fills the rest of the lap and the record starts the next.
 * Records start at 8-byte-aligned offsets, so recovery can search for stray records.
 *
 * Invariants: tail <= head; head - tail <= size; every byte in [tail, head) belongs to a record the
 * RVG still needs.
 */
import assert from 'node:assert'
import fs from 'node:fs'
import { RECORD_HEADER_BYTES, RING_MAPPED_RECORD_BYTES_MAX, SRL_PREALLOCATE_CHUNK_BYTES } from '../limits'
import { sys } from '../native'
import { constants as bufferConstants } from 'node:buffer'
import { RECORD_ALIGN_BYTES, RECORD_MAGIC, RecordType, encodeRecord, readHeader, checksumOk, decodeRecord, type Record, type HeaderView } from '../format/record'
import { ReplError } from '../errors'

export function alignUp (n: number): number {
  return Math.ceil(n / RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

export interface ScannedRecord { record: Record, offset: number, end: number }

/** How far ahead reads of the ring ask for its pages (Ring.prefetch). */
const PREFETCH_BYTES = 1024 * 1024

/** Page-sized writes make page-sized folios (see Ring.open). */
const FILL_WRITE_BYTES = 4096
const FILL_ZEROS = Buffer.alloc(FILL_WRITE_BYTES)

/** Writes zeros over [offset, offset + length) of `fd`, a page at a time (see Ring.open). */
function zeroFill (fd: number, offset: number, length: number): void {
  for (let off = offset, end = offset + length; off < end;) {
    const n = Math.min(FILL_WRITE_BYTES - (off % FILL_WRITE_BYTES), end - off)
    fs.writeSync(fd, FILL_ZEROS, 0, n, off)
    off += n
  }
}

export class Ring {
  readonly fd: number
  readonly size: number
  /**
   * The ring file mapped shared, for small records (see write()); null where it cannot be mapped
   * (a ring larger than a Buffer can span, or a filesystem without shared mappings).
   */
  private map: Buffer | null

  private constructor (fd: number, size: number) {
    this.fd = fd
    this.size = size
    this.map = null
    if (size <= bufferConstants.MAX_LENGTH) {
      try { this.map = sys.mapShared(fd, size) } catch { this.map = null }
    }
  }

  /**
   * Opens the ring file, creating and zero-filling it if absent (write-temp-then-rename).
   *
   * The ring's page cache is kept in page-sized folios. The kernel (6.x) caches a file in large
   * folios after large writes or readahead, and a record stored into one has the next fdatasync
   * write the whole folio back: zero-filled in 1 MiB writes, every sync of a small record wrote
   * 1 MiB (10,000 small files created with a Secondary attached wrote 5 to 9 GiB to the device;
   * measured on a loop ext4, 1 KiB pwrite + fdatasync: 1,024 KiB written each, 4 KiB with
   * page-sized folios). So the ring is zero-filled (and erased) in page-sized writes, its reads do
   * no readahead (`fadvise random`: a read brings in page-sized folios; the shared mapping is
   * `MADV_RANDOM` too; the ring's own reads ask for a window ahead instead: prefetch()), and an
   * existing ring's cached pages are dropped once at open (a ring an older build filled, still
   * cached). Another program reading the ring with readahead (a backup) while the daemon runs can
   * still bring large folios in, until they leave the cache.
   */
  static open (file: string, size: number): Ring {
    assert(size % SRL_PREALLOCATE_CHUNK_BYTES === 0)
    let created = false
    if (!fs.existsSync(file)) {
      const tmp = file + '.tmp'
      const fd = fs.openSync(tmp, 'w', 0o600)
      try {
        zeroFill(fd, 0, size)
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, file)
      created = true
    }
    const st = fs.statSync(file)
    if (st.size !== size) {
      throw new ReplError('FORMAT_VERSION', `SRL ring ${file} is ${st.size} bytes but its state says ${size}`)
    }
    const fd = fs.openSync(file, 'r+')
    try {
      sys.fadvise(fd, 0, 0, 'random')
      if (!created) sys.fadvise(fd, 0, 0, 'dontneed') // (clean pages only: nothing unwritten is dropped)
    } catch { /* advice only: a filesystem that takes none works as before */ }
    return new Ring(fd, size)
  }

  close (): void {
    if (this.map !== null) {
      sys.unmapShared(this.map)
      this.map = null
    }
    fs.closeSync(this.fd)
  }

  /**
   * Where a record of `length` bytes appended at linear offset `head` would start, and the offset
   * after it. A record that does not fit before the end of the lap starts the next lap.
   */
  place (head: number, length: number): { start: number, end: number } {
    const phys = head % this.size
    const start = phys + length > this.size ? head + (this.size - phys) : head
    return { start, end: start + alignUp(length) }
  }

  /**
   * Writes a record given as its encoded head and its data at linear offset `head`, in one store
   * (see store(); plus a WRAP marker if it wraps).
   */
  write (head: number, seq: number, buf: Buffer, data?: Uint8Array): { start: number, end: number } {
    const length = buf.length + (data ? data.length : 0)
    const { start, end } = this.place(head, length)
    if (start !== head) {
      const left = this.size - (head % this.size)
      if (left >= RECORD_HEADER_BYTES) {
        const wrap = encodeRecord(RecordType.WRAP, seq, {})
        this.store(head % this.size, wrap)
      }
    }
    this.store(start % this.size, buf, data)
    return { start, end }
  }

  /**
   * Writes `head` and then `data` at physical offset `phys`. A small record is stored into the
   * mapping: a store into the page cache, as durable as a pwrite (it survives a kill -9, and
   * fdatasync writes it back), without a system call. A larger one takes one pwritev.
   */
  private store (phys: number, head: Buffer, data?: Uint8Array): void {
    const length = head.length + (data ? data.length : 0)
    if (this.map !== null && length <= RING_MAPPED_RECORD_BYTES_MAX) {
      head.copy(this.map, phys)
      if (data && data.length > 0) this.map.set(data, phys + head.length)
      return
    }
    const n = data && data.length > 0
      ? fs.writevSync(this.fd, [head, data], phys)
      : fs.writeSync(this.fd, head, 0, head.length, phys)
    assert(n === length)
  }

  /** Reads `length` bytes at linear offset `offset` (which must not straddle the lap). */
  read (offset: number, length: number): Buffer {
    const phys = offset % this.size
    assert(phys + length <= this.size)
    this.prefetch(phys)
    const buf = Buffer.allocUnsafe(length)
    const n = fs.readSync(this.fd, buf, 0, length, phys)
    return n === length ? buf : buf.subarray(0, n)
  }

  /** The window of the ring readahead was last asked for (prefetch()). */
  private prefetched = -1

  /**
   * The ring is read without the kernel's readahead (Ring.open), so reads of records not in the
   * page cache (a Secondary caught up after a restart, the recovery scan) would each wait for the
   * disk: a read entering a new PREFETCH_BYTES window asks for it and the next one at once
   * (posix_fadvise WILLNEED, which brings them in as page-sized folios). One call per window.
   */
  private prefetch (phys: number): void {
    const w = Math.floor(phys / PREFETCH_BYTES)
    if (w === this.prefetched) return
    this.prefetched = w
    try { sys.fadvise(this.fd, w * PREFETCH_BYTES, 2 * PREFETCH_BYTES, 'willneed') } catch { /* advice only */ }
  }

  /**
   * Reads the record expected at `offset` with sequence `seq`. Returns null at the end of the log
   * (zero-fill, an older lap's record, or a torn record at the tail); throws LOG_CORRUPT when a
   * record fails its checksum yet a later record proves it is not the tail.
   */
  readAt (offset: number, seq: number): ScannedRecord | null {
    const at = this.locate(offset, seq, true)
    if (at === null) return null
    const { off, h } = at
    if ((off % this.size) + h.totalLength > this.size) return null
    const buf = this.read(off, h.totalLength)
    if (buf.length !== h.totalLength) return null
    if (!checksumOk(buf)) {
      if (this.laterRecordExists(off + alignUp(h.totalLength), seq)) {
        throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq} at offset ${off} fails its checksum and later records exist; refusing to skip it`)
      }
      return null // a torn tail: the last append was cut short by a crash
    }
    return { record: decodeRecord(buf), offset: off, end: off + alignUp(h.totalLength) }
  }

  /**
   * Like readAt, but returns the record's bytes undecoded (for RLINK senders), skipping a WRAP.
   * Null if there is no intact record `seq` at `offset`.
   */
  readRawAt (offset: number, seq: number): { buf: Buffer, type: RecordType, end: number } | null {
    const at = this.locate(offset, seq, false)
    if (at === null) return null
    const { off, h } = at
    if ((off % this.size) + h.totalLength > this.size) return null
    const buf = this.read(off, h.totalLength)
    if (buf.length !== h.totalLength || !checksumOk(buf)) return null
    return { buf, type: h.type, end: off + alignUp(h.totalLength) }
  }

  /** Where the record `seq` at `offset` ends, from its header alone (no checksum), or null. */
  /** The type of record `seq` at `offset` from its header alone (checksum not verified), or null. */
  typeAt (offset: number, seq: number): RecordType | null {
    return this.locate(offset, seq, false)?.h.type ?? null
  }

  endOf (offset: number, seq: number): number | null {
    const at = this.locate(offset, seq, false)
    return at === null ? null : at.off + alignUp(at.h.totalLength)
  }

  /**
   * The header of record `seq` as expected at `offset`: there, or at the ring's start after a gap
   * too small for a header or after a WRAP marker (`checkWrap`: only one whose checksum holds).
   * Null when no header of record `seq` is there.
   */
  private locate (offset: number, seq: number, checkWrap: boolean): { off: number, h: HeaderView } | null {
    let off = offset
    for (let hops = 0; hops < 2; hops++) {
      const left = this.size - (off % this.size)
      if (left < RECORD_HEADER_BYTES) { off += left; continue }
      const head = this.read(off, RECORD_HEADER_BYTES)
      const h = readHeader(head)
      if (h === null || h.seq !== seq) return null
      if (h.type === RecordType.WRAP) {
        if (checkWrap && !checksumOk(head.subarray(0, RECORD_HEADER_BYTES))) return null
        off += left
        continue
      }
      return { off, h }
    }
    return null
  }

  /**
   * The records after `from`, in order, as long as they read back intact (stops at the end of the
   * log, and after record `last`).
   */
  * scan (from: { seq: number, offset: number }, last = Infinity): Generator<ScannedRecord> {
    let off = from.offset
    for (let seq = from.seq + 1; seq <= last; seq++) {
      const r = this.readAt(off, seq)
      if (r === null) return
      yield r
      off = r.end
    }
  }

  /** Zero-fills linear range [from, to) (wrapping) and syncs it: erases records the log dropped. */
  erase (from: number, to: number): void {
    assert(to >= from && to - from <= this.size)
    for (let off = from; off < to;) {
      const phys = off % this.size
      const len = Math.min(to - off, this.size - phys)
      zeroFill(this.fd, phys, len)
      off += len
    }
    fs.fdatasyncSync(this.fd)
  }

  /**
   * Searches the rest of the ring after the end of the log for any intact record with a sequence
   * number above `seq`. Finding one means the log did not end here: a record in between is damaged.
   */
  laterRecordExists (from: number, seq: number): boolean {
    // Candidates are found with a native search for the magic bytes, so scanning a large ring
    // costs about one read of it; only aligned hits are parsed.
    const chunk = 4 * 1024 * 1024
    let scanned = 0
    let off = from
    while (scanned < this.size) {
      const phys = off % this.size
      const len = Math.min(chunk, this.size - phys)
      // Read a header's length past the chunk (within the lap) so a header across the boundary is seen.
      const buf = this.read(off, Math.min(len + RECORD_HEADER_BYTES, this.size - phys))
      for (let i = buf.indexOf(MAGIC_BYTES); i >= 0 && i < len && i + RECORD_HEADER_BYTES <= buf.length; i = buf.indexOf(MAGIC_BYTES, i + 1)) {
        if ((phys + i) % RECORD_ALIGN_BYTES !== 0) continue
        const h = safeHeader(buf.subarray(i, i + RECORD_HEADER_BYTES))
        if (h === null || h.seq <= seq || h.type === RecordType.WRAP) continue
        if (phys + i + h.totalLength > this.size) continue
        const rec = i + h.totalLength <= buf.length ? buf.subarray(i, i + h.totalLength) : this.read(off + i, h.totalLength)
        if (checksumOk(rec)) return true
      }
      scanned += len
      off += len
    }
    return false
  }
}

const MAGIC_BYTES = (() => { const b = Buffer.alloc(4); b.writeUInt32LE(RECORD_MAGIC, 0); return b })()

function safeHeader (buf: Buffer): ReturnType<typeof readHeader> {
  try { return readHeader(buf) } catch { return null }
}
