/**
 * SRL (Storage Replicator Log): every change made through the Primary mount, in order.
 *
 * - append() assigns the next sequence number and writes the record with one pwrite, before the
 *   FUSE reply. Without fsync an appended record survives kill -9 (it is in the page cache).
 * - sync() is the durability point: fdatasync of the ring, coalesced across concurrent callers.
 *   Once it resolves, every record appended before the call survives a power loss.
 * - release() moves the tail past records nobody needs (applied and synced to the data directory,
 *   and, later, data-acked by every RLINK). The tail is persisted in LevelDB with sync:true.
 * - open() recovers: it scans from the durable checkpoint (the tail) to the end of the log, works
 *   out which records may not be applied (see "Where replay starts" below), cuts a torn tail
 *   and refuses (LOG_CORRUPT) a damaged record that is not the tail.
 *
 * Invariants (asserted): sequence numbers increase by exactly one; released and checkpointed
 * positions never pass the head.
 */
import assert from 'node:assert'
import fs from 'node:fs'
import path from 'node:path'
import { Ring, type ScannedRecord } from './ring'
import crypto from 'node:crypto'
import { LogStore } from './state'
import { State, STATE_FORMAT_VERSION, STATE_FORMAT_VERSIONS_READ, type FormatState, type Mounts, type Position } from '../format/state'
import { sys } from '../native'
import { encodeRecordHead, readHeader, headerCrc, RecordType, type RecordMeta } from '../format/record'
import { ReplError } from '../errors'
import { RECORD_BYTES_MAX } from '../limits'

export interface SrlStats {
  records: number
  bytes: number
  oldestSeq: number | null
  newestSeq: number | null
  appliedSeq: number
  capacityBytes: number
}

/** The mounts a restart compares (format/state.ts Mounts): null where the kernel gives no unique id. */
function mountsNow (srlDir: string, dataDir: string | undefined): Mounts {
  const id = (p: string | undefined): string | null => { try { return p === undefined ? null : sys.mountId(p) } catch { return null } }
  return { srl: id(srlDir), data: id(dataDir) }
}

/** Whether the mounts recorded at the last recovery are the ones now (an unknown id matches anything). */
function sameMounts (then: Mounts | undefined, now: Mounts): boolean {
  if (then === undefined) return true
  const same = (a: string | null, b: string | null): boolean => a === null || b === null || a === b
  return same(then.srl, now.srl) && same(then.data, now.data)
}

/** Whether directory `dir` holds nothing (an ext4 root's empty `lost+found` aside). */
export function isEmptyTree (dir: string): boolean {
  for (const name of fs.readdirSync(dir)) {
    if (name !== 'lost+found') return false
    try { if (fs.readdirSync(path.join(dir, name)).length > 0) return false } catch { return false }
  }
  return true
}

export function bootId (): string {
  try { return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() } catch { return 'unknown' }
}

export class Srl {
  /** Linear offset where the next record goes. */
  private head: number
  /** Sequence number the next record gets. */
  private nextSeq: number
  /** Oldest retained record (the durable checkpoint). */
  private tail: Position
  /** Records known to be durable in the ring up to this offset. */
  private syncedOffset: number
  /** The last sequence number an fdatasync of the ring made durable (0 until the first). */
  syncedSeq = 0
  /** Called after each fdatasync of the ring with the last sequence number it made durable. */
  onSynced: ((seq: number) => void) | null = null
  private syncing: Promise<void> | null = null
  /** The first failed fdatasync's error: sticky (see sync()). */
  private syncFailed: Error | null = null
  /**
   * [last sequence number, head, handsOff] for a FUSE transport that makes the ring durable itself
   * (src/native/ll.c logSync): updated after every append, so what an fdatasync begun after
   * reading them covers; handsOff 1 (closed, or its RVG failed): it must not (the daemon answers).
   * On an ArrayBuffer of its own (never on V8's heap, where it could move).
   */
  readonly published = new Float64Array(new ArrayBuffer(3 * 8))
  /** Things recovery did that the daemon should log. */
  warnings: string[] = []
  private bootRecorded = false
  /** The mounts now, recorded with the boot id once recovery completes. */
  private mounts: Mounts = { srl: null, data: null }
  /**
   * Whether the page cache of the last run can have survived: same boot, same mounts of the SRL's
   * and the data directory's filesystems. If not (a reboot, or a filesystem unmounted and mounted
   * again, as after a power cut simulated with ext4's shutdown ioctl), only what was synced counts.
   */
  cacheKept = true
  private syncAgain: Promise<void> | null = null
  /** The newest record's checksum, kept across a release of everything (key `last`). */
  private lastCrc: number | null = null

  private constructor (
    readonly dir: string,
    readonly store: LogStore,
    readonly ring: Ring,
    readonly format: FormatState,
    tail: Position,
    /** Records logged but not yet applied when the SRL was opened, in order. */
    readonly pending: ScannedRecord[],
    /** Where applying resumes. */
    readonly checkpoint: Position,
    head: number,
    nextSeq: number
  ) {
    this.tail = tail
    this.head = head
    this.nextSeq = nextSeq
    this.publish()
    this.syncedOffset = head
  }

  /**
   * Opens (creating on first use, unless `role` is 'any') the SRL in `dir`. `ringBytes` applies only at creation.
   * After a kill -9 replay starts at the last non-WRITE record; after a reboot (another boot id
   * than the one recorded by the last completed recovery) or a remount of the SRL's or the data
   * directory's filesystem (another unique mount id: `dataDir` names the data directory), only
   * what was synced is trusted: replay starts at the last checkpoint.
   */
  static async open (dir: string, opts: { ringBytes: number, role: 'primary' | 'secondary' | 'any', dataDir?: string }): Promise<Srl> {
    if (opts.role === 'any' && !fs.existsSync(path.join(dir, 'state'))) throw new ReplError('DIR_MISSING', `no SRL in ${path.dirname(dir)}`)
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const store = await LogStore.open(path.join(dir, 'state'), path.dirname(dir))
    let ring: Ring | null = null
    try {
      let format = await store.get(State.format)
      // A ring made by this open is zero-fill, synced: no record anywhere, nothing to search for.
      const created = format === undefined
      if (format === undefined) {
        if (opts.role === 'any') throw new ReplError('DIR_MISSING', `no SRL in ${dir}`)
        format = { version: STATE_FORMAT_VERSION, ringBytes: opts.ringBytes, role: opts.role, createdAt: new Date().toISOString(), srlId: crypto.randomUUID() }
        Ring.open(path.join(dir, 'ring'), format.ringBytes).close()
        await store.put(State.durable, { seq: 0, offset: 0 })
        // What the data directory holds now is the baseline no record describes: a new Secondary
        // gets it by full synchronization (src/sync/). The format key, written last, commits both.
        if (opts.role === 'primary' && opts.dataDir !== undefined) await store.put(State.baseline, isEmptyTree(opts.dataDir) ? 'empty' : 'data')
        await store.put(State.format, format)
      }
      if (!STATE_FORMAT_VERSIONS_READ.includes(format.version)) {
        throw new ReplError('FORMAT_VERSION', `SRL state in ${dir} has format version ${format.version}; this build reads ${STATE_FORMAT_VERSIONS_READ.join(' and ')}`)
      }
      if (format.version < STATE_FORMAT_VERSION && opts.role !== 'any') {
        // 1 -> 2: an SRL identity, so Secondaries can tell one Primary's log from another's.
        // 2 -> 3: the `synced` key, written at the next checkpoint (until then: the tail).
        format = { ...format, version: STATE_FORMAT_VERSION, srlId: format.srlId ?? crypto.randomUUID() }
        await store.put(State.format, format)
      }
      if (opts.role !== 'any' && format.role !== opts.role) {
        throw new ReplError('WRONG_ROLE', `state directory ${path.dirname(dir)} belongs to a ${format.role}, not a ${opts.role}`)
      }
      ring = Ring.open(path.join(dir, 'ring'), format.ringBytes)
      const durable = (await store.get(State.durable)) ?? { seq: 0, offset: 0 }
      const lastBoot = await store.get(State.boot)
      const mounts = mountsNow(dir, opts.dataDir)
      const lastMounts = await store.get(State.mounts)
      const sameBoot = lastBoot === undefined || (lastBoot === bootId() && sameMounts(lastMounts, mounts))
      const warnings: string[] = []
      // Where the log ended at the last clean stop (every record appended then synced, nothing
      // appended since: each open deletes it before anything can be appended).
      const clean = created ? undefined : await store.get(State.clean)

      // Scan from the tail (everything retained) to the end of the log, keeping only where the
      // last non-WRITE record is: the records themselves may add up to the ring's size.
      let lastBarrier: Position | null = null // the position before the last non-WRITE record
      let lastStart = -1
      let off = durable.offset // where the next record is expected (a WRAP may come first)
      let seq = durable.seq + 1
      for (const r of ring.scan(durable)) {
        assert(r.record.seq === seq)
        if (r.record.type !== RecordType.WRITE) lastBarrier = { seq: seq - 1, offset: off }
        lastStart = off
        off = r.end
        seq++
      }
      // Where replay starts. Every record but a WRITE is appended only after every earlier record
      // is applied (the RVG's barrier), and is applied before the next record is appended. So on
      // the same boot (a kill -9: the page cache kept everything) the records before the last
      // non-WRITE record are applied: replay that record (idempotent on its own) and the writes
      // after it (an idempotent run). After a reboot only the durable position is known applied.
      // (A Secondary appends records while it applies older ones, so the rule does not hold there:
      // it keeps its own apply cursor, src/rvg/secondary.ts, and gets no pending list.)
      // After a reboot: from the last checkpoint (`synced`, state format 3), which may be past the
      // tail when a Secondary holds records the data directory has long had on disk.
      const synced = await store.get(State.synced)
      let afterReboot: Position = durable
      if (synced !== undefined && synced.seq > durable.seq) {
        if (synced.seq <= seq - 1) afterReboot = synced
        else warnings.push(`the last checkpoint (sequence number ${synced.seq}) is past the end of the SRL (${seq - 1}); replaying from its tail`)
      }
      const checkpoint: Position = sameBoot && lastBarrier !== null && format.role === 'primary'
        ? (lastBarrier.seq >= afterReboot.seq ? lastBarrier : afterReboot)
        : afterReboot
      const pending: ScannedRecord[] = format.role === 'primary' ? [...ring.scan(checkpoint, seq - 1)] : []
      assert(format.role !== 'primary' || pending.length === seq - 1 - checkpoint.seq)
      // The scan ended where the last clean stop left the log: nothing was appended after it, so
      // there is nothing past it to search for (the search reads the whole ring).
      const cleanEnd = clean !== undefined && clean.seq === seq - 1 && clean.offset === off
      if (cleanEnd) {
        // (nothing to search)
      } else if (!sameBoot) {
        // After a reboot, records appended after the last fdatasync may have reached the disk in
        // any order: an intact later record behind a torn one was never synced, so it is not a
        // lost update. (On the same boot the page cache holds every appended record in order.)
        // They are erased, or a later scan could accept one where a new record of the same length
        // and sequence number ends up.
        if (!created && ring.laterRecordExists(off, seq - 1)) {
          ring.erase(off, durable.offset + ring.size)
          warnings.push(`after a reboot or a remount, discarded and erased unsynced SRL records after sequence number ${seq - 1}`)
        }
      } else if (!created && ring.laterRecordExists(off, seq - 1)) {
        throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq} at offset ${off} is damaged and later records exist; refusing to skip it`)
      }
      if (clean !== undefined) await store.del(State.clean)
      const srl = new Srl(dir, store, ring, format, durable, pending, checkpoint, off, seq)
      srl.mounts = mounts
      srl.cacheKept = sameBoot
      srl.bootRecorded = sameBoot && lastBoot !== undefined && lastMounts !== undefined && lastMounts.srl === mounts.srl && lastMounts.data === mounts.data
      if (seq - 1 > durable.seq) srl.lastCrc = srl.crcOf(seq - 1, lastStart)
      else {
        const last = await store.get(State.last)
        srl.lastCrc = last !== undefined && last.seq === seq - 1 ? last.crc : null
      }
      srl.warnings = warnings
      return srl
    } catch (err) {
      ring?.close()
      await store.close().catch(() => {})
      throw err
    }
  }

  get capacityBytes (): number { return this.ring.size }
  get usedBytes (): number { return this.head - this.tail.offset }
  get lastSeq (): number { return this.nextSeq - 1 }
  /** The last released record: everything up to it is durable elsewhere. */
  get tailSeq (): number { return this.tail.seq }
  get tailPosition (): Position { return { ...this.tail } }
  /** Where the next record goes. */
  get headOffset (): number { return this.head }
  get srlId (): string { return this.format.srlId ?? '' }

  /** Whether a record of `length` bytes fits without overwriting retained records. */
  fits (length: number): boolean {
    const { end } = this.ring.place(this.head, length)
    return end - this.tail.offset <= this.ring.size
  }

  /**
   * Appends one record: assigns its sequence number, writes it with one pwrite. Throws SRL_FULL
   * if it does not fit; the caller releases space (checkpoint) and retries.
   */
  append (type: RecordType, meta: RecordMeta, data?: Uint8Array, packed?: Buffer): { seq: number, end: number } {
    const r = this.tryAppend(type, meta, data, packed)
    if (r === null) throw new ReplError('SRL_FULL', `SRL is full (${this.usedBytes} of ${this.ring.size} bytes retained)`)
    return r
  }

  /**
   * append(), but null instead of SRL_FULL: the write path's way to encode a record only once.
   * `dataAt` is where the record's data lies in the ring file (a physical offset): the Primary
   * applies a WRITE by copying it from there. `packed`: the metadata's bytes (packMeta), if known.
   */
  tryAppend (type: RecordType, meta: RecordMeta, data?: Uint8Array, packed?: Buffer): { seq: number, end: number, dataAt: number } | null {
    const seq = this.nextSeq
    const head = encodeRecordHead(type, seq, meta, data, packed)
    const length = head.length + (data ? data.length : 0)
    assert(length <= RECORD_BYTES_MAX)
    if (!this.fits(length)) return null
    const { start, end } = this.ring.write(this.head, seq, head, data)
    this.lastCrc = headerCrc(head)
    this.head = end
    this.nextSeq = seq + 1
    this.publish()
    return { seq, end, dataAt: (start % this.ring.size) + head.length }
  }

  /**
   * Appends a record received from the Primary, as its exact bytes (a Secondary's SRL holds the
   * Primary's records unchanged, sequence numbers included). The caller has verified the checksum.
   * Returns null if it does not fit (the caller applies and releases, then retries).
   */
  tryAppendRaw (buf: Buffer): { seq: number, end: number } | null {
    const h = readHeader(buf)
    assert(h !== null && h.totalLength === buf.length)
    assert(h.seq === this.nextSeq, `record ${h.seq} appended where ${this.nextSeq} belongs`)
    if (!this.fits(buf.length)) return null
    const { end } = this.ring.write(this.head, h.seq, buf)
    this.lastCrc = headerCrc(buf)
    this.head = end
    this.nextSeq = h.seq + 1
    this.publish()
    return { seq: h.seq, end }
  }

  /**
   * Reads the record `seq` at `offset` as its raw bytes (checksum verified), or null past the end
   * of the log. For RLINK senders; `end` is where the next record starts.
   */
  readRaw (offset: number, seq: number): { buf: Buffer, type: RecordType, end: number } | null {
    if (seq > this.lastSeq) return null
    const r = this.ring.readRawAt(offset, seq)
    if (r === null) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq} is missing or damaged at offset ${offset}`)
    return r
  }

  /**
   * The offset where record `seq` starts (`seq` may be lastSeq + 1: the head), walking headers
   * forward from `from` (a known position at or before it; default the tail).
   */
  positionOf (seq: number, from: Position = this.tail): number {
    assert(seq > this.tail.seq && seq <= this.nextSeq && from.seq < seq)
    let off = from.offset
    for (let s = from.seq + 1; s < seq; s++) {
      const end = this.ring.endOf(off, s)
      if (end === null) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${s} is missing or damaged at offset ${off}`)
      off = end
    }
    return off
  }

  /** The newest retained record's sequence number and checksum, or null when none is retained. */
  /**
   * For a stopped Secondary rolled back offline to record `seq` (src/daemon/restore.ts): the log
   * becomes empty after `seq`, so the next start asks its Primary for `seq + 1` on. Erases the
   * ring; the durable position becomes `seq`.
   */
  /**
   * A log that has never held a record starts after record `seq` instead (a Secondary whose data
   * directory a full synchronization brought to the Primary's after `seq`): the next record
   * appended is seq + 1, at the start of the ring.
   */
  async restartAt (seq: number): Promise<void> {
    if (this.lastSeq !== this.tail.seq) throw new ReplError('LOG_CORRUPT', `cannot start the SRL after sequence number ${seq}: it holds records up to ${this.lastSeq}`)
    // Where the released log ended: what lies after it is older than any record to come.
    const offset = this.tail.offset
    await this.store.put(State.durable, { seq, offset })
    await this.store.del(State.synced)
    await this.store.del(State.last)
    this.tail = { seq, offset }
    this.head = offset
    this.syncedOffset = offset
    this.nextSeq = seq + 1
    this.publish()
    this.syncedSeq = seq
    this.lastCrc = null
  }

  async resetTo (seq: number): Promise<void> {
    this.ring.erase(0, this.ring.size)
    await this.store.put(State.durable, { seq, offset: 0 })
    await this.store.del(State.synced)
    await this.store.del(State.last)
  }

  lastRecord (): { seq: number, crc: number } | null {
    return this.lastSeq > 0 && this.lastCrc !== null ? { seq: this.lastSeq, crc: this.lastCrc } : null
  }

  /** Checksum of record `seq` (from its header), to compare logs across hosts; null if not retained. */
  crcOf (seq: number, offset: number): number | null {
    if (seq <= this.tail.seq || seq > this.lastSeq) return null
    const r = this.ring.readRawAt(offset, seq)
    return r === null ? null : headerCrc(r.buf)
  }

  /** Whether records were appended since the last completed sync. */
  get dirty (): boolean { return this.syncedOffset < this.head }

  /**
   * Makes every record appended before this call durable (fdatasync), coalescing callers. Once an
   * fdatasync failed, every later sync of records not synced before fails with its error: the
   * kernel reports a write-back error once, so a later fdatasync would succeed over pages it lost.
   */
  sync (): Promise<void> {
    const target = this.head
    if (this.syncedOffset >= target) return Promise.resolve()
    if (this.syncFailed !== null) return Promise.reject(this.syncFailed)
    if (this.syncing === null) {
      this.syncing = this.fdatasync().finally(() => { this.syncing = null })
      return this.syncing
    }
    // A sync is in flight but may have started before our records: queue one more behind it.
    if (this.syncAgain === null) {
      // Runs after the sync in flight whether it failed or not: its failure is its callers' to see.
      this.syncAgain = this.syncing.catch(() => {}).then(() => {
        this.syncAgain = null
        return this.sync()
      })
    }
    return this.syncAgain
  }

  private fdatasync (): Promise<void> {
    const target = this.head
    const seq = this.lastSeq
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.ring.fd, (err) => {
        if (err) { this.syncFailed ??= err; return reject(err) }
        if (target > this.syncedOffset) this.syncedOffset = target
        if (seq > this.syncedSeq) this.syncedSeq = seq
        this.onSynced?.(seq)
        resolve()
      })
    })
  }

  /** The figures published (see `published`): after each change of the head. */
  private publish (): void {
    this.published[1] = this.head
    this.published[0] = this.nextSeq - 1
  }

  /** A transport's fdatasync of the ring failed: so does every later sync (see sync()). */
  noteSyncFailed (err: Error): void { this.syncFailed ??= err }

  /** The ring must not be synced by anyone but this SRL any more (closing, or its RVG failed). */
  handsOff (): void { this.published[2] = 1 }

  /**
   * A transport synced the ring (src/native/ll.c logSync): every record up to `seq`, ending at
   * `head`, is durable. Figures beyond what this SRL holds (not its own) are ignored.
   */
  noteSynced (seq: number, head: number): void {
    if (seq > this.lastSeq || head > this.head) return
    if (head > this.syncedOffset) this.syncedOffset = head
    if (seq > this.syncedSeq) {
      this.syncedSeq = seq
      this.onSynced?.(seq)
    }
  }

  /**
   * Makes every record appended so far durable now, on the calling thread (for the data cursor's
   * tail, src/apply/data-cursor.ts); returns the last sequence number it covers.
   */
  syncNow (): number {
    const target = this.head
    const seq = this.lastSeq
    if (this.syncFailed !== null) throw this.syncFailed
    try {
      fs.fdatasyncSync(this.ring.fd)
    } catch (err) {
      this.syncFailed ??= err as Error
      throw err
    }
    if (target > this.syncedOffset) this.syncedOffset = target
    if (seq > this.syncedSeq) this.syncedSeq = seq
    this.onSynced?.(seq)
    return seq
  }

  /**
   * Records that the data directory has synced the effects of every record up to `pos` (a
   * checkpoint): after a reboot, replay starts there. The ring is synced first, so no record the
   * data directory has is missing from the durable log.
   */
  async markSynced (pos: Position): Promise<void> {
    await this.sync()
    await this.store.put(State.synced, { seq: pos.seq, offset: pos.offset })
  }

  /**
   * Releases records up to and including `pos.seq`, whose effects are durable elsewhere.
   * Durable (sync:true) because the ring will overwrite them.
   */
  async release (pos: Position): Promise<void> {
    assert(pos.seq <= this.lastSeq && pos.offset <= this.head)
    if (pos.seq <= this.tail.seq) return
    assert(pos.offset >= this.tail.offset)
    // Releasing the newest record too: keep its checksum, so a Secondary can still prove which
    // history it has (the handshake's `last`).
    if (pos.seq === this.lastSeq && this.lastCrc !== null) await this.store.put(State.last, { seq: pos.seq, crc: this.lastCrc })
    await this.store.put(State.durable, { seq: pos.seq, offset: pos.offset })
    this.tail = { seq: pos.seq, offset: pos.offset }
  }

  /**
   * Records this boot's id, once the pending records are applied. Not earlier: if a start after a
   * reboot fails before replay completes, the next start must still replay from the durable position.
   */
  async recordBoot (): Promise<void> {
    if (this.bootRecorded) return
    await this.store.put(State.mounts, this.mounts)
    await this.store.put(State.boot, bootId())
    this.bootRecorded = true
  }

  stats (appliedSeq: number): SrlStats {
    const records = this.lastSeq - this.tail.seq
    return {
      records,
      bytes: this.usedBytes,
      oldestSeq: records > 0 ? this.tail.seq + 1 : null,
      newestSeq: records > 0 ? this.lastSeq : null,
      appliedSeq,
      capacityBytes: this.ring.size
    }
  }

  /** Iterates the retained records after `pos` (a record boundary at or after the tail) up to sequence number `upto`. */
  * recordsAfter (pos: Position, upto = this.lastSeq): Generator<ScannedRecord> {
    let seq = pos.seq
    const last = Math.min(upto, this.lastSeq)
    for (const r of this.ring.scan(pos, last)) { seq = r.record.seq; yield r }
    if (seq < last) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq + 1} is missing or damaged`)
  }

  /** Iterates retained records from the tail (for srl-dump and, later, RLINK senders). */
  * records (): Generator<ScannedRecord> {
    let seq = this.tail.seq
    for (const r of this.ring.scan(this.tail, this.lastSeq)) { seq = r.record.seq; yield r }
    if (seq < this.lastSeq) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq + 1} is missing or damaged`)
  }

  async close (): Promise<void> {
    this.handsOff()
    // Every record appended is synced: the next open need not search the ring past the log's
    // end for stray ones (Recovery, step 3). Not if the sync failed.
    const synced = await this.sync().then(() => true, () => false)
    if (synced && this.syncedSeq === this.lastSeq) await this.store.put(State.clean, { seq: this.lastSeq, offset: this.head }).catch(() => {})
    this.ring.close()
    await this.store.close()
  }
}
