/**
 * RVG, Primary side: one data directory and its SRL. The write path (VVR's):
 *
 *   FUSE write -> reserve its blocks in the file (fallocate KEEP_SIZE; no room: ENOSPC, nothing logged)
 *     -> SRL append (one pwritev straight from the FUSE buffer) -> reply
 *     -> later, in sequence order: copy the record's data from the ring into the file
 *   small FUSE write (APPLY_BEFORE_REPLY_BYTES_MAX), none in flight -> SRL append -> apply -> reply
 *   any other op -> wait until no write is in flight (the barrier) -> SRL append -> apply -> reply
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
import { Srl } from '../srl'
import { RecordType, RECORD_ALIGN_BYTES, nowTimespec, recordBytes, type RecordMeta } from '../format/record'
import { sys } from '../native'
import { applyRecordSync, FdCache, errnoName, applyCopyMode, writeAt, type PartialWriteError } from '../apply'
import { Checkpoints } from './checkpoint'
import { ExclusiveGate } from './gate'
import type { Replication, ExclusiveToken, Preserver } from './interfaces'
import type { Position } from '../format/state'

export type { Replication, ExclusiveToken, Preserver } from './interfaces'
import { ReplError, errnoFor } from '../errors'
import { CHECKPOINT_INTERVAL_MS, CHECKPOINT_FILL_PERCENT, SRL_SYNC_INTERVAL_MS, APPLY_QUEUE_BYTES_MAX, APPLY_BATCH_BYTES_MAX, APPLY_INLINE_BYTES_MAX, APPLY_BEFORE_REPLY_BYTES_MAX, DATA_SPACE_RESERVE_BYTES, DATA_SPACE_CHECK_MS } from '../limits'

/** A write appended to the SRL whose data-directory write is in flight. */
interface InflightWrite { seq: number, end: number, done: boolean, ino: number }

/** A write waiting to be applied: the arguments of sys.applyWrites for it (srcOffset, destFd, destOffset, length, mtime). */
interface QueuedWrite { item: InflightWrite, path: string, jobs: [number, number, number, number, number, number] }
const JOB_LENGTH = 3

export interface PrimaryOptions {
  /** Keep every record in the SRL (tests, debugging): never release. */
  retain?: boolean
  log?: (line: string) => void
  replication?: Replication
}

export class PrimaryRvg {
  readonly root: string
  private readonly fds: FdCache
  /** In sequence order; the head is the oldest write not yet known applied. */
  private readonly inflight: InflightWrite[] = []
  /** Bare passthrough writes in flight (no SRL, so no in-flight list). */
  private bareWrites = 0
  /** barrier() callers: each waits until record `seq` is applied (or a fatal error). */
  private drainWaiters: Array<{ seq: number, wake: () => void }> = []
  /**
   * Changes other than writes waiting for the writes in flight to drain. New writes wait while
   * any is held, so a steady writer cannot keep the in-flight list from ever emptying.
   */
  private writeHolds = 0
  private holdWaiters: Array<() => void> = []
  /** The batch running on the threadpool, if any: close() waits for it, even after a fatal error. */
  private asyncBatch: Promise<void> | null = null
  /** Whether copy_file_range may share blocks (reflink) between the ring and a data file. */
  private readonly copyMode: number
  /** Writes answered but not yet applied, oldest first, and their bytes. */
  private readonly applyQueue: QueuedWrite[] = []
  private queuedBytes = 0
  private applying = false
  /** The scheduled apply of small queued writes (see kickApply), or null. */
  private applyTimer: NodeJS.Immediate | null = null
  /** Writers waiting for the apply queue to shrink below APPLY_QUEUE_BYTES_MAX. */
  private roomWaiters: Array<() => void> = []
  /** Data-directory inodes with answered writes not yet applied, and how many each. */
  private readonly pendingInodes = new Map<number, number>()
  /**
   * The data filesystem's free space (bytes root may still allocate) when last measured, when, and
   * the bytes of writes answered since (src/limits.ts DATA_SPACE_RESERVE_BYTES).
   */
  private readonly space = { free: Infinity, at: 0, since: 0 }
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
    this.applied = srl ? { ...srl.checkpoint } : { seq: 0, offset: 0 }
    this.checkpoints = srl ? new Checkpoints(this.root, srl, this) : null
    this.copyMode = srl ? applyCopyMode(srl.dir) : 0
  }

  /** Replays records logged but not applied before the last stop or crash. Returns how many. */
  async recover (): Promise<number> {
    if (!this.srl) return 0
    const pending = this.srl.pending
    for (let i = 0; i < pending.length; i++) {
      const { record, end } = pending[i]
      const next = pending[i + 1]?.record
      const voided = next !== undefined && next.type === RecordType.VOID && next.meta.v === record.seq
      if (!voided) {
        try {
          this.snapshots?.beforeApply(record)
          applyRecordSync(this.root, record, this.fds, true)
          this.fds.trim()
        } catch (err) {
          // The last record may have failed before a kill -9 could append its VOID: it had no
          // effect then, and has none now; record that, as the running daemon would have.
          if (i === pending.length - 1 && record.type !== RecordType.WRITE) {
            const v = this.srl.append(RecordType.VOID, { v: record.seq, e: errnoFor(err) })
            this.applied = { seq: v.seq, offset: v.end }
            this.opts.log?.(`SRL record with sequence number ${record.seq} (${RecordType[record.type]} ${record.meta.p ?? ''}) fails to apply (${(err as Error).message}); voided it`)
            break
          }
          throw new ReplError('APPLY_FAILED', `cannot replay SRL record with sequence number ${record.seq} (${RecordType[record.type]} ${record.meta.p ?? ''}): ${(err as Error).message}`, { cause: err })
        }
      }
      this.applied = { seq: record.seq, offset: end }
    }
    this.fds.clear()
    await this.srl.sync()
    await this.srl.recordBoot()
    return pending.length
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
    return await this.gate.run(async () => { while (this.inflight.length > 0) await this.barrier() }, async (token) => await fn(this.applied.seq, token))
  }

  /**
   * Whether writes to inode `ino` of the data directory are answered but not yet applied. Only a
   * write changes a file behind the log's back (content, size, mtime, blocks), so a stat or read of
   * any other file needs no barrier; everything else is applied before it is answered.
   */
  writesPending (ino: number): boolean {
    return this.inflight.length > 0 && this.pendingInodes.has(ino)
  }

  /**
   * Resolves once every record appended before the call is applied to the data directory (writes
   * appended later do not hold it up); rejects with the fatal error if there is one.
   */
  barrier (): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal)
    if (this.inflight.length === 0) return Promise.resolve()
    this.applyNow()
    if (this.fatal) return Promise.reject(this.fatal)
    if (this.inflight.length === 0) return Promise.resolve()
    const seq = this.inflight[this.inflight.length - 1].seq
    return new Promise((resolve, reject) => this.drainWaiters.push({ seq, wake: () => this.fatal ? reject(this.fatal) : resolve() }))
  }

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
    if (this.gate.closed !== null || this.writeHolds > 0) await this.writeTurn(token)
    if (!this.srl) {
      // Bare passthrough: write through a cached descriptor, before the reply.
      if (this.bareWrites === 0) this.fds.trim()
      this.bareWrites++
      try { await writeAt(this.fds.get(p), buf, offset) } finally { this.bareWrites-- }
      return buf.length
    }
    if (this.spaceLow(buf.length)) return await this.writeReserved(p, buf, offset, token)
    const srl = this.srl
    const t = nowTimespec()
    const meta: RecordMeta = { p, o: offset, t }
    // The append and the in-flight entry happen in one synchronous step, so no other record can
    // be appended between them (recovery relies on every WRITE being tracked from its append on).
    const repl = this.opts.replication
    repl?.admit()
    this.fds.trim(this.inodeBusy)
    // A write to be queued: copy-on-write first (fallocate sets the file's mtime, and a snapshot
    // may share its inode), then its blocks are reserved, before it is logged.
    let preserved = false
    const prepare = (): void => {
      if (preserved || this.appliesNow(buf.length)) return
      this.snapshots?.beforeApply({ type: RecordType.WRITE, seq: srl.lastSeq + 1, meta, data: buf })
      preserved = true
      this.reserve(p, offset, buf.length)
    }
    prepare()
    let appended = srl.tryAppend(RecordType.WRITE, meta, buf)
    while (appended === null) {
      await this.makeRoom()
      if (this.gate.closed !== null || this.writeHolds > 0) await this.writeTurn(token)
      if (this.fatal) throw this.fatal
      repl?.admit()
      this.fds.trim(this.inodeBusy)
      preserved = false // a snapshot may have been taken while we waited: copy-on-write again
      prepare()
      appended = srl.tryAppend(RecordType.WRITE, meta, buf)
    }
    const { seq, end, dataAt } = appended
    this.space.since += buf.length
    if (this.appliesNow(buf.length)) {
      // Small, and nothing queued ahead: apply it now, like any other change.
      repl?.appended(seq)
      this.afterAppend()
      try {
        const record = { type: RecordType.WRITE, seq, meta, data: buf }
        this.snapshots?.beforeApply(record)
        applyRecordSync(this.root, record, this.fds, false)
        this.applied = { seq, offset: end }
      } catch (err) {
        // Applied before the reply, so the writer can be told: a VOID record says the write had
        // no effect (every reader of the SRL skips the pair) and the writer gets the errno.
        this.voidFailed(seq, p, err)
        throw this.fatal ?? err
      }
      const waiting = repl?.acked(seq)
      if (waiting) await waiting
      return buf.length
    }
    const item: InflightWrite = { seq, end, done: false, ino: -1 }
    this.inflight.push(item)
    repl?.appended(seq)
    this.afterAppend()
    let fd: number
    try {
      // Copy-on-write first, while the FUSE buffer is valid (done above unless the write was to
      // be applied at once when it was prepared). Any chunk this write is the first to touch since
      // the newest snapshot is untouched by the writes still queued ahead of it.
      if (!preserved) this.snapshots?.beforeApply({ type: RecordType.WRITE, seq, meta, data: buf })
      fd = this.fds.get(p)
      item.ino = this.fds.inoOf(p)
      this.pendingInodes.set(item.ino, (this.pendingInodes.get(item.ino) ?? 0) + 1)
    } catch (err) {
      this.writeFailed(seq, p, (err as Error).message, err)
      throw this.fatal
    }
    // The record is in the SRL: answer now, and apply it from the ring (src/rvg/primary.ts top).
    this.applyQueue.push({ item, path: p, jobs: [dataAt, fd, offset, buf.length, t[0], t[1]] })
    this.queuedBytes += buf.length
    this.kickApply()
    while (this.queuedBytes > APPLY_QUEUE_BYTES_MAX && !this.fatal) await new Promise<void>((resolve) => this.roomWaiters.push(resolve))
    if (this.fatal) throw this.fatal
    const waiting = repl?.acked(seq)
    if (waiting) await waiting
    return buf.length
  }

  /**
   * Whether a write of `n` bytes must be applied before its reply because the data filesystem is
   * close to full: its free space, less what was answered since it was measured and what is
   * queued, would fall below DATA_SPACE_RESERVE_BYTES. Measured at most every DATA_SPACE_CHECK_MS
   * while there is room, at every write when there is not.
   */
  private spaceLow (n: number): boolean {
    const room = (): number => this.space.free - this.space.since - this.queuedBytes - n
    if (room() >= DATA_SPACE_RESERVE_BYTES && Date.now() - this.space.at < DATA_SPACE_CHECK_MS) return false
    try {
      const st = fs.statfsSync(this.root)
      this.space.free = st.bfree * st.bsize
    } catch {
      this.space.free = 0 // cannot tell: take the careful path, which reports any error itself
    }
    this.space.at = Date.now()
    this.space.since = 0
    return room() < DATA_SPACE_RESERVE_BYTES
  }

  /** Whether a write of `n` bytes is applied before its reply (small, nothing queued ahead). */
  private appliesNow (n: number): boolean {
    return n <= APPLY_BEFORE_REPLY_BYTES_MAX && this.inflight.length === 0
  }

  /** The data filesystem has no fallocate (EOPNOTSUPP): writes are queued unreserved. */
  private noFallocate = false

  /**
   * Reserves the blocks a write to be answered before it is applied will need (fallocate with
   * KEEP_SIZE: the file's size and bytes do not change), so that the apply cannot meet a full
   * disk: no room answers the writer ENOSPC (EDQUOT, EFBIG) before anything is logged. Other
   * errors are left to the apply, which reports them.
   */
  private reserve (p: string, offset: number, n: number): void {
    if (this.noFallocate || n === 0) return
    try {
      sys.fallocate(this.fds.get(p), sys.FALLOC_FL_KEEP_SIZE, offset, n)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') throw err
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') this.noFallocate = true
    }
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
      for (;;) {
        if (this.gate.shut(token)) await this.gate.pass(token)
        else if (this.inflight.length > 0) await this.barrier()
        else if (!srl.fits(room)) await this.makeRoom()
        else break
      }
      if (this.fatal) throw this.fatal
      const t = nowTimespec()
      const meta: RecordMeta = { p, o: offset, t }
      this.fds.trim()
      seq = srl.lastSeq + 1
      const record = { type: RecordType.WRITE, seq, meta, data: buf }
      // Copy-on-write first (a snapshot may share this file's inode), then the reservation.
      this.snapshots?.beforeApply(record)
      this.reserve(p, offset, buf.length)
      const repl = this.opts.replication
      repl?.admit()
      // From here to the apply nothing awaits, so no other record can slip in between.
      const rec = srl.append(RecordType.WRITE, meta, buf)
      assert(rec.seq === seq)
      repl?.appended(seq)
      this.afterAppend()
      try {
        applyRecordSync(this.root, record, this.fds, false)
        this.applied = { seq, offset: rec.end }
      } catch (err) {
        this.voidFailed(seq, p, err)
        throw this.fatal ?? err
      }
    } finally {
      if (--this.writeHolds === 0) this.wake(this.holdWaiters)
    }
    const waiting = this.opts.replication?.acked(seq)
    if (waiting) await waiting
    return buf.length
  }

  /**
   * A WRITE applied before its reply failed: a VOID record after it says it had no effect (the
   * Secondaries and replay skip both) and the writer gets the errno. Fatal only if the SRL has no
   * room left for the VOID, or the error leaves the file in a state the record does not describe
   * (an I/O error: what reached the disk is unknown).
   */
  private voidFailed (seq: number, p: string, err: unknown): void {
    const srl = this.srl!
    const { code, partial } = err as PartialWriteError
    // Only errors that leave the file as it was: a write cut short changed some of its bytes.
    const clean = (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') && (partial ?? 0) === 0
    const v = clean ? srl.tryAppend(RecordType.VOID, { v: seq, e: errnoFor(err) }) : null
    if (v === null) {
      this.writeFailed(seq, p, (err as Error).message, err)
      return
    }
    this.opts.replication?.appended(v.seq)
    this.applied = { seq: v.seq, offset: v.end }
  }

  /**
   * Applies the queued writes, in sequence order, one batch at a time (so writes land in log order,
   * even to one inode under two names): each is copied from the SRL ring into its file
   * (copy_file_range) and given the mtime its record carries. It runs after the current replies
   * are sent (setImmediate). A small batch is applied right there on the event loop: a threadpool
   * round trip costs more than copying a few pages. A large one goes to the threadpool, so the
   * next writes are journaled while it copies.
   */
  private kickApply (): void {
    if (this.applying || this.applyQueue.length === 0 || this.fatal) return
    this.applying = true
    this.applyTimer = setImmediate(() => {
      this.applyTimer = null
      this.runApply()
    })
  }

  /**
   * Applies the queued writes at once if their apply is only scheduled (not running on the
   * threadpool): whoever needs the barrier then need not wait a turn of the event loop (the next
   * create after a small file's write, a stat of a file just written).
   */
  private applyNow (): void {
    while (this.applyTimer !== null && !this.fatal) {
      clearImmediate(this.applyTimer)
      this.applyTimer = null
      this.runApply() // inline for a small batch, which may schedule the next; else on the threadpool
    }
  }

  private runApply (): void {
    if (this.fatal) return
    let n = 0
    let bytes = 0
    while (n < this.applyQueue.length && (n === 0 || bytes < APPLY_BATCH_BYTES_MAX)) bytes += this.applyQueue[n++].jobs[JOB_LENGTH]
    const batch = this.applyQueue.splice(0, n)
    const jobs = new Float64Array(batch.length * 6)
    for (let i = 0; i < batch.length; i++) jobs.set(batch[i].jobs, i * 6)
    const fd = this.srl!.ring.fd
    if (bytes <= APPLY_INLINE_BYTES_MAX) {
      const r = sys.applyWrites(fd, jobs, this.copyMode)
      this.applyDone(batch, r < 0 ? -1 : Math.floor(r / 65536), r < 0 ? 0 : r % 65536)
    } else {
      this.asyncBatch = new Promise<void>((resolve) => sys.applyWrites(fd, jobs, this.copyMode, (failed, errno) => {
        this.asyncBatch = null
        resolve()
        this.applyDone(batch, failed, errno)
      }))
    }
  }

  private applyDone (batch: QueuedWrite[], failed: number, errno: number): void {
    this.applying = false
    if (failed >= 0) {
      const { item, path: p } = batch[failed]
      this.writeFailed(item.seq, p, errnoName(errno))
      return
    }
    for (const { item, jobs } of batch) {
      item.done = true
      this.queuedBytes -= jobs[JOB_LENGTH]
      const k = this.pendingInodes.get(item.ino)! - 1
      if (k === 0) this.pendingInodes.delete(item.ino)
      else this.pendingInodes.set(item.ino, k)
    }
    while (this.inflight.length > 0 && this.inflight[0].done) {
      const head = this.inflight.shift()!
      this.applied = { seq: head.seq, offset: head.end }
    }
    this.wakeDrained()
    if (this.queuedBytes <= APPLY_QUEUE_BYTES_MAX) this.wake(this.roomWaiters)
    this.kickApply()
  }

  /**
   * Any other change: wait until the data directory has every earlier record, append, apply
   * synchronously. If applying fails, a VOID record says so, and the caller's FUSE reply carries
   * the errno.
   */
  async mutate (type: RecordType, meta: RecordMeta, token?: ExclusiveToken): Promise<number> {
    if (this.fatal) throw this.fatal
    if (this.gate.closed !== null) await this.gate.pass(token)
    if (!this.srl) {
      while (this.bareWrites > 0) await new Promise((resolve) => setImmediate(resolve))
      this.fds.trim()
      applyRecordSync(this.root, { type, seq: 0, meta, data: EMPTY }, this.fds, false)
      return 0
    }
    const srl = this.srl
    // Room for the record and a VOID after it, so a failure can always be recorded.
    const room = recordBytes(type, meta, 0) + VOID_ROOM
    // New writes wait from here until this record is appended (writeTurn): otherwise a steady
    // writer, answered before its writes are applied, could keep the in-flight list from emptying.
    this.writeHolds++
    let rec: { seq: number, end: number }
    try {
      for (;;) {
        // Recovery relies on this: a non-WRITE record is appended only when every earlier one is
        // applied. And not inside another caller's exclusive().
        if (this.gate.shut(token)) await this.gate.pass(token)
        else if (this.inflight.length > 0) await this.barrier()
        else if (!srl.fits(room)) await this.makeRoom()
        else break
      }
      if (this.fatal) throw this.fatal
      const repl = this.opts.replication
      repl?.admit()
      // From here to the apply nothing awaits, so no other record can slip in between.
      this.fds.trim()
      rec = srl.append(type, meta)
      repl?.appended(rec.seq)
      this.afterAppend()
      try {
        const record = { type, seq: rec.seq, meta, data: EMPTY }
        this.snapshots?.beforeApply(record)
        applyRecordSync(this.root, record, this.fds, false)
        this.applied = { seq: rec.seq, offset: rec.end }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EIO' || code === 'EROFS') {
          // A failing disk: what the change did is unknown, so it is not voided. The record stays
          // and is replayed at the next start; until then every change is refused.
          this.fail(new ReplError('APPLY_FAILED', `cannot apply SRL record with sequence number ${rec.seq} (${RecordType[type]} ${meta.p ?? ''}) to the data directory: ${(err as Error).message}`, { cause: err }))
          throw this.fatal
        }
        const v = srl.append(RecordType.VOID, { v: rec.seq, e: errnoFor(err) })
        repl?.appended(v.seq)
        this.applied = { seq: v.seq, offset: v.end }
        throw err
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
    if (srl.tailSeq !== before || this.inflight.length > 0) return
    const repl = this.opts.replication
    if (this.applied.seq === srl.tailSeq) {
      throw new ReplError('SRL_FULL', `SRL is full (${srl.usedBytes} of ${srl.capacityBytes} bytes) and nothing more can be released`)
    }
    if (repl !== undefined) {
      // The Secondaries hold the tail. A connected one that is behind frees space as it acks
      // (writers wait: flow control); with none, writes fail (VVR's srlprot=fail).
      if (repl.canProgress) {
        // Bounded: a Secondary that stops acking stops counting as progress (canProgress).
        let timer: NodeJS.Timeout | undefined
        await Promise.race([repl.progress(), new Promise<void>((resolve) => { timer = setTimeout(resolve, 1000) })])
        clearTimeout(timer)
        return
      }
      throw new ReplError('SRL_FULL', `SRL is full (${srl.usedBytes} of ${srl.capacityBytes} bytes): ${repl.describeLag()}`)
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

  /** Wakes the barrier() callers whose records are all applied (all of them after a fatal error). */
  private wakeDrained (): void {
    if (this.drainWaiters.length === 0) return
    const seq = this.fatal ? Infinity : this.inflight.length === 0 ? this.applied.seq : this.inflight[0].seq - 1
    const ready = this.drainWaiters.filter((w) => w.seq <= seq)
    if (ready.length === 0) return
    this.drainWaiters = this.drainWaiters.filter((w) => w.seq > seq)
    for (const w of ready) w.wake()
  }

  /** For the fd cache's trim: a descriptor on an inode with queued writes stays open. */
  private readonly inodeBusy = (ino: number): boolean => this.pendingInodes.has(ino)

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
    this.opts.log?.(`fatal: ${err.message}`)
    this.wakeDrained()
    this.wake(this.roomWaiters)
    this.wake(this.holdWaiters)
    this.onFatal?.(err)
  }

  onFatal?: (err: Error) => void

  get fatalError (): Error | null { return this.fatal }

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
      while (this.asyncBatch !== null) await this.asyncBatch
      this.fds.clear()
      if (this.srl) await this.srl.close()
    }
  }
}

const EMPTY = Buffer.alloc(0)
/** Room kept for a VOID record after any change (the largest VOID there can be), aligned. */
const VOID_ROOM = recordBytes(RecordType.VOID, { v: Number.MAX_SAFE_INTEGER, e: -4095 }, 0) + 2 * RECORD_ALIGN_BYTES
