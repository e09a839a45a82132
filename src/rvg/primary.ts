/**
 * RVG, Primary side: one data directory and its SRL. The write path (VVR's):
 *
 *   FUSE write -> reserve its blocks in the file (fallocate KEEP_SIZE; no room: ENOSPC, nothing logged)
 *     -> SRL append (one pwritev straight from the FUSE buffer) -> reply
 *     -> later, in sequence order: copy the record's data from the ring into the file
 *   small FUSE write (APPLY_BEFORE_REPLY_BYTES_MAX), none in flight -> SRL append -> apply -> reply
 *   any other op -> wait until no write is in flight (the barrier) -> SRL append -> apply -> reply
 *     (a new entry: apply, with the kernel's now as its times -> SRL append with them -> reply:
 *     appendNewEntry)
 *   any write while the data filesystem is nearly full (DATA_SPACE_RESERVE_BYTES) -> the barrier
 *     -> reserve the range in the file (fallocate): ENOSPC to the writer, nothing logged
 *     -> else SRL append -> apply -> reply
 *
 * A change applied before its reply that fails leaves the data directory as it was (ENOSPC,
 * ENOENT, ...): a VOID record after it says so and the writer gets the errno. One that may have
 * done part of its work (EIO, EROFS, a write cut short), or a queued write that fails, makes the
 * RVG fatal: its record stays and is replayed at the next start, and every change is refused.
 *
 * Only the SRL write is in a writer's path. Answered writes wait in the apply queue (bounded by
 * APPLY_QUEUE_BYTES_MAX) and are applied one batch at a time by sys.applyWrites: copy_file_range
 * from the ring's page cache into the file (no second pass through JavaScript, no copy of the FUSE
 * buffer), then the mtime the record carries. A write is "in flight" from its append until its
 * apply completes; they are tracked in sequence order, and the applied position only advances
 * over a completed prefix. Reads that could see a file behind the log (stat, read of an inode with
 * writes in flight) wait for the barrier (src/fuse/handlers.ts); nothing else can be behind.
 *
 * Recovery needs no per-record bookkeeping: every record but a WRITE is appended only when no
 * write is in flight, and applied before anything else is appended, so after a kill -9 the SRL
 * itself says where replay starts (src/srl/index.ts). Every CHECKPOINT_INTERVAL_MS, or when the
 * ring is past CHECKPOINT_FILL_PERCENT, the data directory is synced (syncfs) and the applied
 * records are released from the SRL (with no Secondary, nothing else needs them).
 *
 * Journal-less mode (`srl === null`) is the bare passthrough used as the benchmark baseline: it
 * writes through a cached descriptor on the threadpool and answers when the write lands.
 */
import assert from 'node:assert'
import fs from 'node:fs'
import path from 'node:path'
import { Srl } from '../srl'
import { RecordType, RECORD_ALIGN_BYTES, nowTimespec, recordBytes, packMeta, type Record, type RecordMeta } from '../format/record'
import { applyRecordSync, DataCursor, FdCache, errnoName, applyCopyMode, writeAt, NEW_ENTRY_TYPES, type PartialWriteError } from '../apply'
import { Checkpoints } from './checkpoint'
import { ApplyQueue } from './apply-queue'
import { DataSpace } from './space'
import { replayPending } from './replay'
import { ExclusiveGate } from './gate'
import type { Replication, ExclusiveToken, Preserver } from './interfaces'
import type { Position } from '../format/state'

export type { Replication, ExclusiveToken, Preserver } from './interfaces'
import { ReplError, errnoFor, errnoError } from '../errors'
import { CHECKPOINT_INTERVAL_MS, CHECKPOINT_FILL_PERCENT, SRL_SYNC_INTERVAL_MS, APPLY_BEFORE_REPLY_BYTES_MAX, RECORD_HEADER_BYTES } from '../limits'

export interface PrimaryOptions {
  /** Keep every record in the SRL (tests, debugging): never release. */
  retain?: boolean
  log?: (line: string) => void
  replication?: Replication
}

export class PrimaryRvg {
  readonly root: string
  private readonly fds: FdCache
  /** The data cursor on the data directory (src/apply/data-cursor.ts); null without an SRL. */
  private readonly cursor: DataCursor | null
  /** The last record other than a WRITE applied to the data directory (the data cursor's `c`). */
  private lastChange = 0
  /** Bare passthrough writes in flight (no SRL, so no in-flight list). */
  private bareWrites = 0
  /**
   * Changes other than writes waiting for the writes in flight to drain. New writes wait while
   * any is held, so a steady writer cannot keep the in-flight list from ever emptying.
   */
  private writeHolds = 0
  private holdWaiters: Array<() => void> = []
  /** Writes answered but not yet applied, in sequence order (src/rvg/apply-queue.ts); null without an SRL. */
  private readonly queue: ApplyQueue | null
  /** Room on the data filesystem: reservations, and whether it is nearly full (src/rvg/space.ts). */
  private readonly space: DataSpace
  /** Last record applied to the data directory, and the ring offset after it. */
  private applied: Position
  private readonly checkpoints: Checkpoints | null
  private timer: NodeJS.Timeout | null = null
  private syncTimer: NodeJS.Timeout | null = null
  private fatal: Error | null = null
  private closed = false
  /** This host's snapshots, if any (set by the daemon before recover()). */
  snapshots: Preserver | null = null

  constructor (dataDir: string, readonly srl: Srl | null, private readonly opts: PrimaryOptions = {}) {
    this.root = dataDir
    this.fds = new FdCache(dataDir)
    this.cursor = srl ? DataCursor.open(dataDir, opts.log, path.join(srl.dir, 'cursor-tail')) : null
    if (srl && this.cursor) {
      const cursor = this.cursor
      cursor.syncLog = () => srl.syncNow()
      cursor.syncSoon = () => { srl.sync().catch((err: Error) => this.fail(new ReplError('LOG_CORRUPT', `fdatasync of the SRL failed: ${err.message}`, { cause: err }))) }
      srl.onSynced = (seq) => { cursor.durable(seq); opts.replication?.synced(seq) }
    }
    this.space = new DataSpace(dataDir)
    this.applied = srl ? { ...srl.checkpoint } : { seq: 0, offset: 0 }
    this.checkpoints = srl ? new Checkpoints(this.root, srl, this, opts.log) : null
    this.queue = srl
      ? new ApplyQueue(srl.ring.fd, applyCopyMode(srl.dir), (pos) => { this.applied = pos }, (seq, p, errno) => this.writeFailed(seq, p, errnoName(errno)), () => this.fatal)
      : null
  }

  /** Replays records logged but not applied before the last stop or crash. Returns how many. */
  async recover (): Promise<number> {
    if (!this.srl) return 0
    const pending = this.srl.pending.length
    const replayed = replayPending(this.srl, this.root, this.fds, this.cursor!, this.snapshots, this.opts.log)
    if (replayed !== null) this.applied = replayed
    // From here the cursor names a record of this log (see replay-plan.ts), whatever it said.
    this.cursor!.settle(this.applied.seq)
    this.lastChange = this.applied.seq
    this.fds.clear()
    await this.srl.sync()
    await this.srl.recordBoot()
    return pending
  }

  start (): void {
    if (this.srl && !this.timer) {
      this.timer = setInterval(() => { this.checkpoint().catch((err) => this.fail(err)) }, CHECKPOINT_INTERVAL_MS)
      this.timer.unref()
      this.syncTimer = setInterval(() => { if (this.srl!.dirty) this.srl!.sync().catch((err) => this.fail(err)) }, SRL_SYNC_INTERVAL_MS)
      this.syncTimer.unref()
    }
  }

  get appliedSeq (): number { return this.applied.seq }

  /** exclusive(): while it runs, new changes wait before they are appended. */
  private readonly gate = new ExclusiveGate()

  /**
   * Runs `fn` at a record boundary with nothing in flight and no change starting until it is done:
   * a snapshot is taken there, exactly after the record `appliedSeq`.
   */
  async exclusive<T> (fn: (appliedSeq: number, own: ExclusiveToken) => Promise<T>): Promise<T> {
    return await this.gate.run(async () => { while (this.inFlight > 0) await this.barrier() }, async (token) => await fn(this.applied.seq, token))
  }

  /**
   * Whether writes to inode `ino` of the data directory are answered but not yet applied. Only a
   * write changes a file behind the log's back (content, size, mtime, blocks), so a stat or read of
   * any other file needs no barrier; everything else is applied before it is answered.
   */
  writesPending (ino: number): boolean {
    return this.queue?.writesPending(ino) ?? false
  }

  /**
   * `fn` hears when an inode gets writes in flight (busy) and when they are all applied (ino -1:
   * nothing more will be: none is busy), starting with those busy now; null: nobody listens.
   */
  watchPending (fn: ((ino: number, busy: boolean) => void) | null): void {
    if (this.queue === null) return
    this.queue.onPending = fn
    if (fn !== null) for (const ino of this.queue.pendingNow()) fn(ino, true)
  }

  /**
   * Resolves once every record appended before the call is applied to the data directory (writes
   * appended later do not hold it up); rejects with the fatal error if there is one.
   */
  barrier (): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal)
    return this.queue?.barrier() ?? Promise.resolve()
  }

  /** Writes in flight (answered, not yet applied). */
  private get inFlight (): number { return this.queue?.inFlight ?? 0 }

  /** Waits while exclusive() runs (unless `token` holds it) and while a change drains the writes. */
  private async writeTurn (token?: ExclusiveToken): Promise<void> {
    for (;;) {
      if (this.gate.shut(token)) await this.gate.closed
      else if (this.writeHolds > 0 && !this.gate.isOwner(token)) await new Promise<void>((resolve) => this.holdWaiters.push(resolve))
      else return
    }
  }

  /** A write: appended to the SRL, applied to the data directory, then answered. */
  async write (p: string, buf: Buffer, offset: number, token?: ExclusiveToken): Promise<number> {
    if (this.fatal) throw this.fatal
    if (this.refusing !== null) throw errnoError('EROFS', this.refusing)
    if (this.gate.closed !== null || this.writeHolds > 0) await this.writeTurn(token)
    if (!this.srl) {
      // Bare passthrough: write through a cached descriptor, before the reply.
      if (this.bareWrites === 0) this.fds.trim()
      this.bareWrites++
      try { await writeAt(this.fds.get(p), buf, offset) } finally { this.bareWrites-- }
      return buf.length
    }
    if (this.space.low(buf.length, this.queue!.bytes)) return await this.writeReserved(p, buf, offset, token)
    const srl = this.srl
    const t = nowTimespec()
    const meta: RecordMeta = { p, o: offset, t }
    // The append and the in-flight entry happen in one synchronous step, so no other record can
    // be appended between them (recovery relies on every WRITE being tracked from its append on).
    const repl = this.opts.replication
    repl?.admit()
    this.fds.trim(this.queue!.busy)
    // A write to be queued: copy-on-write first, while the FUSE buffer is valid (fallocate sets
    // the file's mtime, and a snapshot may share its inode; any chunk this write is the first to
    // touch since the newest snapshot is untouched by the writes still queued ahead of it), then
    // its blocks are reserved, before it is logged. Again after each wait for room: a snapshot may
    // have been taken meanwhile. (Nothing awaits between this and the append.)
    //
    // The data cursor's tail names the write first (h: 1), before anything touches its file: the
    // reservation sets the file's mtime (ext4 does, even over blocks already allocated), and a
    // kill -9 between it and the append left an mtime no record carries (the Secondaries kept an
    // older one). With the entry there, the next start logs the file's mtime as it is
    // (src/rvg/replay.ts, restoreTail). After the append, the ordinary entry replaces it.
    let intended = -1
    const prepare = (): void => {
      if (this.appliesNow(buf.length)) return
      intended = srl.lastSeq + 1
      this.intendReservation(intended, p, offset, buf.length)
      this.snapshots?.beforeApply({ type: RecordType.WRITE, seq: intended, meta, data: buf })
      this.space.reserve(this.fds.get(p), offset, buf.length)
      if (CRASH_AFTER_RESERVE) process.kill(process.pid, 'SIGKILL')
    }
    // The reservation sets the file's mtime, so it is made only when the append follows at once,
    // never before a wait for room (a kill -9 then would leave an mtime no record carries): the
    // room is checked first, against a bound on the record's size (the metadata is {p, o, t}).
    const bound = RECORD_HEADER_BYTES + Buffer.byteLength(p) + 64 + buf.length
    let appended: ReturnType<Srl['tryAppend']> = null
    if (srl.fits(bound)) {
      prepare()
      appended = srl.tryAppend(RecordType.WRITE, meta, buf)
      // bound >= the record's size: what fits(bound) has room for, tryAppend takes (an h entry for
      // a sequence number another record then took would mislead the next start).
      assert(appended !== null, `a write of ${buf.length} bytes that fit its bound did not fit`)
    }
    while (appended === null) {
      await this.makeRoom()
      if (this.gate.closed !== null || this.writeHolds > 0) await this.writeTurn(token)
      if (this.fatal) throw this.fatal
      repl?.admit()
      this.fds.trim(this.queue!.busy)
      if (srl.fits(bound)) {
        prepare()
        appended = srl.tryAppend(RecordType.WRITE, meta, buf)
        assert(appended !== null, `a write of ${buf.length} bytes that fit its bound did not fit`)
      }
    }
    const { seq, end, dataAt } = appended
    this.space.answered(buf.length)
    if (this.appliesNow(buf.length)) {
      // Small, and nothing queued ahead: apply it now, like any other change.
      repl?.appended(seq)
      this.afterAppend()
      this.applyBeforeReply({ type: RecordType.WRITE, seq, meta, data: buf }, end)
      const waiting = repl?.acked(seq)
      if (waiting) await waiting
      return buf.length
    }
    const item = this.queue!.track(seq, end)
    repl?.appended(seq)
    this.afterAppend()
    let fd: number
    try {
      fd = this.fds.get(p)
      this.queue!.pending(item, this.fds.inoOf(p))
    } catch (err) {
      this.writeFailed(seq, p, (err as Error).message, err)
      throw this.fatal
    }
    // The record is in the SRL: answer now, and apply it from the ring (src/rvg/primary.ts top).
    assert(intended === seq, `write ${seq} was named in the data cursor's tail as ${intended}`)
    try {
      this.intend(seq, RecordType.WRITE, meta, buf.length)
    } catch (err) { // the SRL's fdatasync failed (the data cursor's tail was full)
      this.fail(new ReplError('LOG_CORRUPT', `fdatasync of the SRL failed: ${(err as Error).message}`, { cause: err }))
      throw this.fatal
    }
    this.queue!.push({ item, path: p, jobs: [dataAt, fd, offset, buf.length, t[0], t[1]] })
    await this.queue!.waitRoom()
    if (this.fatal) throw this.fatal
    const waiting = repl?.acked(seq)
    if (waiting) await waiting
    return buf.length
  }

  /**
   * The data cursor before record `seq` reaches the data directory (src/apply/data-cursor.ts): the
   * last change applied, and this record in the tail (a WRITE as {p, o, l}).
   */
  private intend (seq: number, type: RecordType, meta: RecordMeta, length: number, packed?: Buffer): void {
    this.cursor!.intend(this.lastChange, seq, type, type === RecordType.WRITE ? { p: meta.p, o: meta.o, l: length } : meta, type === RecordType.WRITE ? undefined : packed)
  }

  /**
   * Names write `seq` in the data cursor's tail before its reservation and its append (h: 1; see
   * write()). A failure (the SRL's fdatasync, when the tail was full) makes the RVG fatal.
   */
  private intendReservation (seq: number, p: string, offset: number, length: number): void {
    try {
      this.cursor!.intend(this.lastChange, seq, RecordType.WRITE, { p, o: offset, l: length, h: 1 })
    } catch (err) {
      this.fail(new ReplError('LOG_CORRUPT', `fdatasync of the SRL failed: ${(err as Error).message}`, { cause: err }))
      throw this.fatal!
    }
  }

  /** Whether a write of `n` bytes is applied before its reply (small, nothing queued ahead). */
  private appliesNow (n: number): boolean {
    return n <= APPLY_BEFORE_REPLY_BYTES_MAX && this.inFlight === 0
  }

  /**
   * Waits until a change may be appended and applied before its reply: nothing in flight (recovery
   * relies on it: a non-WRITE record is appended only when every earlier one is applied), not
   * inside another caller's exclusive(), and room in the SRL for `room` bytes. The caller holds
   * writeHolds, so new writes cannot keep the in-flight list from emptying.
   */
  private async quiesced (room: number, token?: ExclusiveToken): Promise<void> {
    while (!this.isQuiet(room, token)) {
      if (this.gate.shut(token)) await this.gate.pass(token)
      else if (this.inFlight > 0) await this.barrier()
      else await this.makeRoom()
    }
    if (this.fatal) throw this.fatal
  }

  /** Whether quiesced() would return at once (the common case: no turn of the event loop then). */
  private isQuiet (room: number, token?: ExclusiveToken): boolean {
    return !this.gate.shut(token) && this.inFlight === 0 && this.srl!.fits(room)
  }

  /**
   * A write on a nearly full data filesystem: waits until nothing is queued, reserves the range in
   * the file (fallocate with KEEP_SIZE: the size and bytes do not change), and only then logs and
   * applies it, before the reply. A filesystem that cannot take it answers ENOSPC (or EDQUOT) to
   * the writer and nothing is logged. If the apply still fails (an I/O error), a VOID record says
   * so and the writer gets the errno.
   */
  private async writeReserved (p: string, buf: Buffer, offset: number, token?: ExclusiveToken): Promise<number> {
    const srl = this.srl!
    const room = recordBytes(RecordType.WRITE, { p, o: offset, t: [0, 0] }, buf.length) + VOID_ROOM
    this.writeHolds++
    let seq: number
    try {
      await this.quiesced(room, token)
      const t = nowTimespec()
      const meta: RecordMeta = { p, o: offset, t }
      this.fds.trim()
      seq = srl.lastSeq + 1
      const record = { type: RecordType.WRITE, seq, meta, data: buf }
      // The data cursor's tail first (h: 1: the reservation sets the file's mtime; see write()),
      // then copy-on-write (a snapshot may share this file's inode), then the reservation.
      this.intendReservation(seq, p, offset, buf.length)
      this.snapshots?.beforeApply(record)
      this.space.reserve(this.fds.get(p), offset, buf.length)
      const repl = this.opts.replication
      repl?.admit()
      // From here to the apply nothing awaits, so no other record can slip in between.
      const rec = srl.append(RecordType.WRITE, meta, buf)
      assert(rec.seq === seq)
      repl?.appended(seq)
      this.afterAppend()
      this.applyBeforeReply(record, rec.end, true)
    } finally {
      if (--this.writeHolds === 0) this.wake(this.holdWaiters)
    }
    const waiting = this.opts.replication?.acked(seq)
    if (waiting) await waiting
    return buf.length
  }

  /**
   * Applies the record just appended, before its reply (every change but a queued write). If the
   * data directory refuses it and is left as it was (ENOENT, ENOTEMPTY, a full disk that took no
   * byte, ...), a VOID record after it says it had no effect (every reader of the SRL skips the
   * pair) and the caller gets the errno. If it may have done part of its work (EIO, EROFS, a write
   * cut short), or the SRL has no room for the VOID, the RVG is fatal: the record stays and is
   * replayed at the next start. `preserved`: the snapshots' copy-on-write is done already.
   * `packed`: the record's metadata as encoded (packMeta), for the data cursor's tail.
   */
  private applyBeforeReply (record: Record, end: number, preserved = false, packed?: Buffer): void {
    try {
      if (!preserved) this.snapshots?.beforeApply(record)
      this.intend(record.seq, record.type, record.meta, record.data.length, packed)
      applyRecordSync(this.root, record, this.fds, false)
      this.applied = { seq: record.seq, offset: end }
      if (record.type !== RecordType.WRITE) this.lastChange = record.seq
    } catch (err) {
      this.applyFailed(record, err)
    }
  }

  /**
   * Record `record`, appended, failed to apply with `err`: a VOID after it if the data directory
   * was left as it was (the caller gets the errno: rethrown), else the RVG is fatal.
   */
  private applyFailed (record: Record, err: unknown): never {
    const v = leftAsItWas(record.type, err) ? this.srl!.tryAppend(RecordType.VOID, { v: record.seq, e: errnoFor(err) }) : null
    if (v !== null) this.intend(v.seq, RecordType.VOID, { v: record.seq, e: errnoFor(err) }, 0)
    if (v === null) {
      this.fail(new ReplError('APPLY_FAILED', `cannot apply SRL record with sequence number ${record.seq} (${RecordType[record.type]} ${record.meta.p ?? ''}) to the data directory: ${(err as Error).message}`, { cause: err }))
      throw this.fatal!
    }
    this.opts.replication?.appended(v.seq)
    this.applied = { seq: v.seq, offset: v.end }
    throw err
  }

  /**
   * A new entry (CREATE, MKDIR, MKNOD, SYMLINK): made first, then logged with the times it got.
   * Logged first, its times were set from the record after it was made, so its ctime came after
   * its mtime (a defect issue 14 lists: tools comparing the two saw them differ); a local
   * filesystem gives a new entry one instant for all three. So the entry is made, owned, given the
   * kernel's now as atime and mtime (UTIME_NOW: the ctime is the same instant), and the record
   * carries those times (`t`, also its directory's mtime), as the Secondaries apply them.
   *
   * The data cursor's tail names the record before anything touches the data directory, as for
   * every change (with the time it was asked at), and again with the entry's times once it is
   * made: a power cut that takes the record with the SRL's unsynced tail puts it back from there
   * (src/rvg/replay.ts restoreTail), times included. (A kill -9 between the two entries puts it
   * back with the time it was asked at: its mtime on the Secondaries then differs by that much.)
   * Taken only where the tail holds such an entry (DataCursor.holds: a cursor in use, and an entry
   * that fits a slot; a symlink with a target of kilobytes may not): else logged first, as any
   * change. If it cannot be logged once made, the RVG is fatal (the tail has it for the next start).
   * If making it fails, it is logged as asked and voided, or the RVG is fatal, as any change
   * (applyFailed). Nothing awaits in here: no other record can take its sequence number.
   */
  private appendNewEntry (type: RecordType, meta: RecordMeta, packed: Buffer): { seq: number, end: number } {
    const srl = this.srl!
    const repl = this.opts.replication
    const seq = srl.lastSeq + 1
    const asked = meta.t
    const record: Record = { type, seq, meta, data: EMPTY }
    try {
      this.snapshots?.beforeApply(record)
      this.intend(seq, type, meta, 0, packed)
      applyRecordSync(this.root, record, this.fds, false, true)
    } catch (err) {
      meta.t = asked
      const rec = srl.append(type, meta, undefined, packed)
      assert(rec.seq === seq)
      repl?.appended(seq)
      this.afterAppend()
      this.applyFailed(record, err)
    }
    const stamped = packMeta(type, meta)
    let rec: { seq: number, end: number }
    try {
      this.intend(seq, type, meta, 0, stamped)
      if (CRASH_AFTER_NEW_ENTRY) process.kill(process.pid, 'SIGKILL')
      rec = srl.append(type, meta, undefined, stamped)
    } catch (err) {
      // Made, and not logged: the RVG stops; the next start puts the record back from the tail.
      this.fail(new ReplError('LOG_CORRUPT', `cannot log SRL record with sequence number ${seq} (${RecordType[type]} ${meta.p ?? ''}) after making it: ${(err as Error).message}`, { cause: err }))
      throw this.fatal!
    }
    assert(rec.seq === seq, `new entry ${seq} was logged as ${rec.seq}`)
    repl?.appended(seq)
    this.afterAppend()
    this.applied = { seq, offset: rec.end }
    this.lastChange = seq
    return rec
  }

  /**
   * Any other change: wait until the data directory has every earlier record, append, apply
   * synchronously. If applying fails, a VOID record says so, and the caller's FUSE reply carries
   * the errno.
   */
  async mutate (type: RecordType, meta: RecordMeta, token?: ExclusiveToken): Promise<number> {
    if (this.fatal) throw this.fatal
    if (this.refusing !== null) throw errnoError('EROFS', this.refusing)
    if (this.gate.closed !== null) await this.gate.pass(token)
    if (!this.srl) {
      while (this.bareWrites > 0) await new Promise((resolve) => setImmediate(resolve))
      this.fds.trim()
      applyRecordSync(this.root, { type, seq: 0, meta, data: EMPTY }, this.fds, false)
      return 0
    }
    const srl = this.srl
    // The metadata encoded once: for the room it needs, the record and the data cursor's tail.
    const packed = packMeta(type, meta)
    // Room for the record and a VOID after it, so a failure can always be recorded.
    const room = RECORD_HEADER_BYTES + packed.length + VOID_ROOM
    // New writes wait from here until this record is appended (writeTurn): otherwise a steady
    // writer, answered before its writes are applied, could keep the in-flight list from emptying.
    this.writeHolds++
    let rec: { seq: number, end: number }
    try {
      if (!this.isQuiet(room, token)) await this.quiesced(room, token)
      else if (this.fatal) throw this.fatal
      const repl = this.opts.replication
      repl?.admit()
      // From here to the apply nothing awaits, so no other record can slip in between.
      this.fds.trim()
      if (NEW_ENTRY_TYPES.has(type) && this.cursor!.holds(type, meta, packed)) {
        rec = this.appendNewEntry(type, meta, packed)
      } else {
        rec = srl.append(type, meta, undefined, packed)
        repl?.appended(rec.seq)
        this.afterAppend()
        this.applyBeforeReply({ type, seq: rec.seq, meta, data: EMPTY }, rec.end, false, packed)
      }
    } finally {
      if (--this.writeHolds === 0) this.wake(this.holdWaiters)
    }
    const waiting = this.opts.replication?.acked(rec.seq)
    if (waiting) await waiting
    return rec.seq
  }

  /**
   * fsync/fdatasync on a file through the mount, or `replicafs sync`: every record so far becomes
   * durable. (syncfs on the mount never reaches us: the kernel does not forward it to libfuse 2.)
   * A failed sync of the SRL is fatal: the kernel forgets a write-back error once reported, so a
   * later sync would falsely succeed.
   */
  async sync (fd?: number, datasync = true): Promise<void> {
    if (this.fatal) throw this.fatal
    if (this.srl) {
      return this.srl.sync().catch((err) => {
        this.fail(new ReplError('LOG_CORRUPT', `fdatasync of the SRL failed: ${(err as Error).message}`, { cause: err }))
        throw this.fatal
      })
    }
    // Bare passthrough: sync the file itself as the caller asked (fsync also writes the inode's
    // timestamps; fdatasync does not), as any passthrough would.
    const call = datasync ? fs.fdatasync : fs.fsync
    if (fd !== undefined) await new Promise<void>((resolve, reject) => call(fd, (err) => err ? reject(err) : resolve()))
  }

  /** Frees SRL space: waits for writes in flight, then checkpoints. SRL_FULL if that cannot help. */
  private async makeRoom (): Promise<void> {
    const srl = this.srl!
    if (this.opts.retain) throw new ReplError('SRL_FULL', `SRL is full (${srl.usedBytes} of ${srl.capacityBytes} bytes retained, and --retain keeps them)`)
    const before = srl.tailSeq
    await this.barrier()
    await this.checkpoint()
    if (srl.tailSeq !== before || this.inFlight > 0) return
    const blocked = this.checkpoints!.blocked
    if (blocked !== null) throw new ReplError('SRL_FULL', `SRL is full (${srl.usedBytes} of ${srl.capacityBytes} bytes) and cannot release records: its filesystem is full (${blocked})`)
    const repl = this.opts.replication
    if (this.applied.seq === srl.tailSeq) {
      throw new ReplError('SRL_FULL', `SRL is full (${srl.usedBytes} of ${srl.capacityBytes} bytes) and nothing more can be released`)
    }
    if (repl !== undefined) {
      // The Secondaries hold the tail: SRL overflow protection (--srlprot) says, per Secondary,
      // whether writers wait for it (flow control), it leaves the SRL (DCM: its changes go to a
      // change map; detached), or writes fail.
      await repl.overflow()
    }
  }

  /** Starts a checkpoint in the background once the ring is past CHECKPOINT_FILL_PERCENT. */
  private afterAppend (): void {
    const srl = this.srl!
    if (this.opts.retain || srl.usedBytes * 100 <= srl.capacityBytes * CHECKPOINT_FILL_PERCENT || this.checkpoints?.busy === true) return
    // Only when a good part of the ring can be released: Secondaries behind may hold the tail.
    const bound = this.opts.replication?.retainFrom() ?? null
    const releasable = Math.min(this.applied.offset, bound?.offset ?? Infinity) - srl.tailPosition.offset
    if (releasable * 8 >= srl.capacityBytes) this.checkpoint().catch((err) => this.fail(err))
  }

  /** A WRITE record could not be applied to the data directory: the RVG stops (APPLY_FAILED). */
  private writeFailed (seq: number, p: string, why: string, cause?: unknown): void {
    this.fail(new ReplError('APPLY_FAILED', `cannot apply SRL record with sequence number ${seq} (WRITE ${p}) to the data directory: ${why}`, cause === undefined ? undefined : { cause }))
  }

  private wake (waiters: Array<() => void>): void {
    const w = waiters.splice(0)
    for (const f of w) f()
  }

  /**
   * Makes the applied records durable in the data directory (syncfs) and releases them from the
   * SRL. Concurrent calls share one run.
   */
  checkpoint (): Promise<void> {
    if (!this.srl || !this.checkpoints) return Promise.resolve()
    const srl = this.srl
    return this.checkpoints.run({ ...this.applied }, async (applied) => {
      if (this.opts.retain) return null
      // Release what is applied and synced here and data-acked by every Secondary.
      const repl = this.opts.replication
      // Only records durable in the SRL go into change maps: a crash may lose the others.
      await repl?.foldMaps(Math.min(applied.seq, srl.syncedSeq))
      const bound = repl?.retainFrom() ?? null
      const pos = bound !== null && bound.seq < applied.seq ? bound : applied
      if (pos.seq <= srl.tailSeq) return null // idle
      await repl?.persist()
      return pos
    })
  }

  private fail (err: Error): void {
    if (this.fatal) return
    this.fatal = err
    this.srl?.handsOff() // fsync is answered by sync() again, which says so
    this.opts.log?.(`fatal: ${err.message}`)
    this.queue?.wakeAll()
    this.wake(this.holdWaiters)
    this.onFatal?.(err)
  }

  onFatal?: (err: Error) => void

  /** The SRL, for a transport that answers fsync with an fdatasync of the ring itself (src/native/ll.c logSync). */
  get log (): { fd: number, published: Float64Array, synced: (seq: number, head: number) => void, failed: (errno: number) => void } | null {
    const srl = this.srl
    if (srl === null) return null
    return {
      fd: srl.ring.fd,
      published: srl.published,
      synced: (seq, head) => srl.noteSynced(seq, head),
      failed: (errno) => {
        const err = new ReplError('LOG_CORRUPT', `fdatasync of the SRL failed: ${errnoName(errno)}`)
        srl.noteSyncFailed(err)
        this.fail(err)
      }
    }
  }

  /**
   * Why this Primary refuses every change (EROFS), or null: another host took over from its
   * generation (src/daemon/primary.ts). Changes already logged are applied and kept.
   */
  refusing: string | null = null

  get fatalError (): Error | null { return this.fatal }

  /** Why the last checkpoint could not be recorded (the SRL's filesystem is full), or null. */
  get checkpointError (): string | null { return this.checkpoints?.blocked ?? null }

  /** Waits for writes in flight, checkpoints, closes the SRL. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    if (this.syncTimer) clearInterval(this.syncTimer)
    try {
      if (!this.fatal) {
        await this.barrier()
        if (this.srl) await this.checkpoint()
      }
    } finally {
      // A batch on the threadpool still uses the ring and the data descriptors, fatal or not:
      // closing them under it could send its bytes into whatever file reuses the numbers.
      await this.queue?.settled()
      this.fds.clear()
      this.cursor?.close()
      if (this.srl) await this.srl.close()
    }
  }
}

const EMPTY = Buffer.alloc(0)

/**
 * A crash point for tests (docs/ARCHITECTURE.md lists them; src/daemon/lifecycle.ts's crashPoint,
 * which this layer cannot import): REPLICAFS_CRASH_AT=write-reserved kills the daemon right after
 * a queued write's reservation, before its append; =new-entry-made, right after a new entry is made
 * (and named with its times in the data cursor's tail), before its append.
 */
const CRASH_AFTER_RESERVE = process.env.REPLICAFS_CRASH_AT === 'write-reserved'
const CRASH_AFTER_NEW_ENTRY = process.env.REPLICAFS_CRASH_AT === 'new-entry-made'

/** Room kept for a VOID record after any change (the largest VOID there can be), aligned. */
const VOID_ROOM = recordBytes(RecordType.VOID, { v: Number.MAX_SAFE_INTEGER, e: -4095 }, 0) + 2 * RECORD_ALIGN_BYTES

/** Whether a change that failed with `err` left the data directory as it was (so it can be voided). */
function leftAsItWas (type: RecordType, err: unknown): boolean {
  const { code, partial } = err as PartialWriteError
  if (code === 'EIO' || code === 'EROFS') return false
  // A write: only a refusal for room (a write cut short changed some of the file's bytes).
  if (type === RecordType.WRITE) return (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') && (partial ?? 0) === 0
  return true
}
