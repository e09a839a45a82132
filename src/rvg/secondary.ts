/**
 * RVG, Secondary side: a data directory kept equal to the Primary's after some prefix of its
 * updates, and the SRL that holds the updates received but not yet released.
 *
 *   RLINK receiver -> append(records) -> SRL (fdatasync) -> network ack
 *   apply loop     -> records in sequence order -> data directory -> data ack
 *
 * Write-order fidelity: records are applied strictly in sequence order, one at a time, on the
 * event loop, and the read-only FUSE mount reads the data directory synchronously on the same
 * loop, so a reader sees the tree between two records, never inside one.
 *
 * The apply cursor: unlike the Primary, a Secondary appends while it applies older records, so
 * the log alone does not say where applying stopped. After every non-WRITE record (and at the end
 * of each slice) the cursor file `srl/cursor` gets the last applied position with one small pwrite
 * (it survives a kill -9 in the page cache). On restart, the records after the cursor are a run
 * of writes, at most one non-WRITE record and more writes, any of them possibly applied already;
 * they are replayed with the replay tolerances of applyRecordSync (see src/apply/index.ts). After a
 * reboot the cursor is not trusted: replay starts from the durable checkpoint, as on the Primary.
 *
 * A voided record (the Primary failed to apply it and logged a VOID after it) is skipped without
 * being tried, as on the Primary's replay: the RLINK sends a record and its VOID in one frame, and
 * the newest record is not applied while a frame is still being logged. If applying a record fails
 * here and no record follows yet, the loop waits for the next one and skips the failed one only if
 * that is its VOID. A record that meets a full data directory (ENOSPC, EDQUOT) and that the Primary
 * applied holds the loop until there is room (stalled).
 */
import fs from 'node:fs'
import path from 'node:path'
import { Srl } from '../srl'
import { RecordType, headerSeq, type Record } from '../format/record'
import { CURSOR_BYTES, encodeCursor, decodeCursor } from '../format/cursor'
import { applyRecordSync, DataCursor, FdCache } from '../apply'
import { plan, runPlan } from './replay'
import { Checkpoints } from './checkpoint'
import { ReplError } from '../errors'
import type { Preserver } from './interfaces'
import { CHECKPOINT_INTERVAL_MS, CHECKPOINT_FILL_PERCENT, SECONDARY_APPLY_SLICE_MS, SECONDARY_FULL_RETRY_MS } from '../limits'
import type { Position } from '../format/state'

/** The apply cursor's file in the SRL's directory (its layout: src/format/cursor.ts). */
const CURSOR_FILE = 'cursor'

/**
 * What the apply loop needs from IBC (src/ibc/secondary.ts): told of each IBC record it reaches,
 * it answers whether the record may be consumed at once; a record it holds is consumed when it
 * calls `onRelease`.
 */
export interface IbcHolds {
  arrive (seq: number, app: string, id: string, message: Buffer, flags: number, freezeTimeoutS: number): Promise<boolean>
  onRelease?: (seq: number) => void
  /** At start: a held record at or before `appliedSeq` was consumed before a restart; forget it. */
  dropStale (appliedSeq: number): Promise<void>
}

export interface SecondaryOptions {
  log?: (line: string) => void
  /** IBC: the apply loop stops at an IBC record until this says it may be consumed. */
  ibc?: IbcHolds
  /** The stable id of the IBC message in record `seq` (the followed Primary's SRL id and seq). */
  ibcId?: (seq: number) => string
}

export class SecondaryRvg {
  readonly root: string
  private readonly fds: FdCache
  private applied: Position
  private cursorFd: number
  /** The data cursor on the data directory (src/apply/data-cursor.ts): what a power cut leaves applied. */
  private readonly dataCursor: DataCursor
  /** The last record other than a WRITE applied (the data cursor's `c`). */
  private lastChange = 0
  /** Replay tolerances stay on until the first non-WRITE record after the cursor is applied. */
  private replaying = true
  private scheduled = false
  private readonly checkpoints: Checkpoints
  private timer: NodeJS.Timeout | null = null
  private fatal: Error | null = null
  private closed = false

  /** Whether the apply loop has stopped for good (closed, or a fatal error). */
  get stopped (): boolean { return this.closed || this.fatal !== null }
  /** A record that failed to apply, waiting to see whether the next record voids it. */
  private failed: { seq: number, err: Error } | null = null
  /**
   * A record the data directory has no room for (ENOSPC, EDQUOT) and the Primary applied: the loop
   * stops there, updates are held in the SRL, and it is retried every SECONDARY_FULL_RETRY_MS
   * (`due` once the retry timer fired) until the space is freed.
   */
  private stalled: { seq: number, why: string, due: boolean, timer: NodeJS.Timeout | null } | null = null
  /** This host's snapshots, if any (set by the daemon before recover()). */
  snapshots: Preserver | null = null
  /** Records applied here that the Primary later voided: the trees may differ. */
  diverged: string | null = null
  private roomWaiters: Array<() => void> = []
  /** The IBC record the apply loop is stopped at, and the offset after it. */
  private ibcHeld: { seq: number, end: number } | null = null
  /**
   * The mount's readers, when they do not share the event loop with the apply (replicafs_ll serves
   * requests on its own threads): each slice holds them off while it changes the data directory,
   * so a reader sees the tree between two records (write-order fidelity), never inside one.
   */
  readers: { hold: () => void, release: () => void, changed: () => void, attrsChanged: () => void } | null = null
  /** The slice applied a record other than a write (names may have changed: readers.changed()). */
  private namesChanged = false
  /** Called after each apply slice that moved the applied position (the data ack). */
  onApplied?: (seq: number) => void
  onFatal?: (err: Error) => void

  constructor (dataDir: string, readonly srl: Srl, private readonly opts: SecondaryOptions = {}) {
    this.root = dataDir
    this.fds = new FdCache(dataDir)
    const file = path.join(srl.dir, CURSOR_FILE)
    this.cursorFd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600)
    this.dataCursor = DataCursor.open(dataDir, opts.log)
    this.applied = srl.tailPosition
    this.checkpoints = new Checkpoints(this.root, srl, this, opts.log)
    if (opts.ibc) opts.ibc.onRelease = (seq) => this.consumeIbc(seq)
  }

  /** True while an IBC record holds the apply loop (frozen, or waiting for a registration). */
  get held (): boolean { return this.ibcHeld !== null }

  /**
   * Where applying resumes: the cursor on the same boot; after a reboot, the durable checkpoint,
   * and from there the records whose changes the data directory has are replayed as planned from
   * the data cursor (replay.ts), up to the boundary, where the apply loop goes on.
   */
  async recover (): Promise<void> {
    this.srl.syncNow() // only durable records are applied (see step())
    const durable = this.srl.tailPosition
    const cursor = this.readCursor()
    const sameBoot = this.srl.cacheKept
    if (sameBoot && cursor !== null && cursor.seq >= durable.seq && cursor.seq <= this.srl.lastSeq) {
      this.applied = cursor
    } else {
      this.applied = durable
      if (!sameBoot) {
        this.opts.log?.(`after a reboot (or a remount of the SRL's or the data directory's filesystem), replaying from the durable checkpoint at sequence number ${durable.seq}`)
        const p = plan([...this.srl.ring.scan(durable, this.srl.lastSeq)], this.root, this.dataCursor.read()?.c ?? null, this.srl.lastSeq, this.opts.log)
        if (p.boundary !== null) {
          this.applied = runPlan(p, this.srl, this.root, this.fds, this.dataCursor, this.snapshots, this.opts.log, p.boundary) ?? durable
          this.replaying = false
        }
      }
    }
    this.dataCursor.settle(this.applied.seq)
    this.lastChange = this.applied.seq
    this.writeCursor()
    await this.opts.ibc?.dropStale(this.applied.seq)
    // Apply what is logged before anything else happens (the mount is not up yet).
    while (this.applied.seq < this.srl.lastSeq && this.failed === null) {
      if (!this.step()) break
    }
    if (this.fatal) throw this.fatal
    this.fds.clear()
    await this.srl.recordBoot()
  }

  start (): void {
    if (this.timer) return
    this.timer = setInterval(() => { this.checkpoint().catch((err) => this.fail(err)) }, CHECKPOINT_INTERVAL_MS)
    this.timer.unref()
  }

  get appliedSeq (): number { return this.applied.seq }
  get receivedSeq (): number { return this.srl.lastSeq }
  get fatalError (): Error | null { return this.fatal }
  /** Why the last checkpoint could not be recorded (the SRL's filesystem is full), or null. */
  get checkpointError (): string | null { return this.checkpoints.blocked }
  /** True while the data directory is the Primary's after a prefix of its updates. */
  get consistent (): boolean { return this.fatal === null && this.diverged === null && this.failed === null }

  /**
   * Logs records received from the Primary (consecutive, checksums verified by the caller),
   * waiting for room in the SRL if needed. The caller makes them durable (srl.sync(), coalesced
   * across frames) before it network-acks them.
   */
  async append (recs: Buffer[], stillActive: () => boolean = () => true): Promise<void> {
    this.appending++
    try {
      await this.appendAll(recs, stillActive)
    } finally {
      this.appending--
    }
    this.kick()
  }

  /**
   * Frames being logged (append() may wait for room between two records of one frame). While one
   * is, the newest record is not applied: the VOID that may follow it is in the same frame
   * (src/rlink/link.ts sends them together).
   */
  private appending = 0

  private async appendAll (recs: Buffer[], stillActive: () => boolean): Promise<void> {
    for (const buf of recs) {
      for (;;) {
        if (this.fatal) throw this.fatal
        // A connection replaced while it waited for room must not log what it still holds.
        if (!stillActive()) throw new ReplError('PROTOCOL', 'the connection was replaced by a newer one')
        // Checked at each try: while we waited for room, a newer connection may have logged it.
        const seq = headerSeq(buf)
        if (seq <= this.srl.lastSeq) break
        if (seq !== this.srl.lastSeq + 1) throw new ReplError('PROTOCOL', `record ${seq} arrived where ${this.srl.lastSeq + 1} is due`)
        if (this.srl.tryAppendRaw(buf) !== null) break
        await this.makeRoom()
      }
    }
  }

  private async makeRoom (): Promise<void> {
    const before = this.srl.tailSeq
    await this.checkpoint()
    if (this.srl.tailSeq > before) return
    if (this.checkpoints.blocked !== null) {
      // The SRL's filesystem is full: try again in a while (the append loop comes back here).
      await new Promise<void>((resolve) => setTimeout(resolve, SECONDARY_FULL_RETRY_MS).unref())
      return
    }
    // Nothing to release until more is applied: wait for the apply loop.
    await new Promise<void>((resolve) => { this.roomWaiters.push(resolve); this.kick() })
  }

  /** Schedules an apply slice. */
  private kick (): void {
    if (this.scheduled || this.fatal || this.closed) return
    this.scheduled = true
    setImmediate(() => this.slice())
  }

  /** While set, the apply loop does not run (a snapshot is being taken between two records). */
  private paused = 0

  /** Runs `fn` between two records with the apply loop stopped; returns what it returns. */
  async exclusive<T> (fn: (appliedSeq: number) => Promise<T>): Promise<T> {
    this.paused++
    try {
      return await fn(this.applied.seq)
    } finally {
      this.paused--
      this.kick()
    }
  }

  /** Runs between two records at a given point (at()), in sequence order. */
  private stops: Array<{ seq: number, run: () => void, fail: (err: Error) => void }> = []

  /**
   * Runs `fn` between records `seq` and `seq + 1`, once the apply loop gets there (with it stopped,
   * as exclusive()). Rejects if it is past `seq` already, or cannot get there: stopped, or held
   * at an IBC message before it (frozen).
   */
  at<T> (seq: number, fn: (appliedSeq: number) => Promise<T>): Promise<T> {
    if (this.applied.seq > seq) return Promise.reject(new ReplError('BUSY', `this Secondary has applied up to sequence number ${this.applied.seq}, past ${seq}`))
    const held = this.cannotReach(seq)
    if (held !== null) return Promise.reject(held)
    return new Promise<T>((resolve, reject) => {
      this.stops.push({ seq, run: () => { this.exclusive(fn).then(resolve, reject) }, fail: reject })
      this.stops.sort((a, b) => a.seq - b.seq)
      this.kick()
    })
  }

  /**
   * Why the apply loop cannot get to `seq` now, or null. `held`: a hold at an IBC record before it
   * counts (asked when the stop is registered; later holds are often brief, a message sent with
   * --no-freeze or for a name not registered here, so a stop waits through them).
   */
  private cannotReach (seq: number, held = true): Error | null {
    if (this.stopped) return new ReplError('APPLY_FAILED', 'the apply loop of this Secondary has stopped')
    if (held && this.ibcHeld !== null && this.ibcHeld.seq <= seq) return new ReplError('BUSY', `this Secondary is frozen at the IBC message of sequence number ${this.ibcHeld.seq} (unfreeze it first)`)
    return null
  }

  /** Starts the stop due here, if any (the apply loop is then paused); whether it did. */
  private runStop (): boolean {
    const s = this.stops[0]
    if (s === undefined || this.applied.seq < s.seq) return false
    this.stops.shift()
    s.run()
    return true
  }

  /** Rejects the stops the apply loop can no longer get to (it stopped). */
  private failStops (): void {
    this.stops = this.stops.filter((s) => {
      const why = this.cannotReach(s.seq, false)
      if (why !== null) s.fail(why)
      return why === null
    })
  }

  private slice (): void {
    this.scheduled = false
    if (this.fatal || this.closed || this.paused > 0) return
    if (this.runStop()) return
    if (this.stalled !== null && !this.stalled.due) return
    const before = this.applied.seq
    const deadline = Date.now() + SECONDARY_APPLY_SLICE_MS
    const readers = this.applied.seq < this.srl.lastSeq ? this.readers : null
    let held = false
    try {
      readers?.hold()
      held = readers !== null
      while (this.applied.seq < this.srl.lastSeq && Date.now() < deadline) {
        if (this.stops.length > 0 && this.applied.seq >= this.stops[0].seq) break
        if (!this.step()) break
      }
      this.fds.trim()
      if (this.applied.seq !== before) this.writeCursor()
    } catch (err) {
      this.fail(err as Error)
      return
    } finally {
      if (held) {
        // Before the readers go on: names and attributes the kernel keeps of what changed are dropped.
        if (this.namesChanged) readers!.changed()
        else if (this.applied.seq !== before) readers!.attrsChanged()
        readers!.release()
      }
      this.namesChanged = false
    }
    if (this.applied.seq !== before) {
      this.onApplied?.(this.applied.seq)
      const w = this.roomWaiters.splice(0)
      for (const f of w) f()
      if (this.srl.usedBytes * 100 > this.srl.capacityBytes * CHECKPOINT_FILL_PERCENT) this.checkpoint().catch((err) => this.fail(err))
    }
    if (this.stops.length > 0) { this.failStops(); if (this.stops.length > 0 && this.applied.seq >= this.stops[0].seq) { this.kick(); return } }
    // (Not while the newest record waits for the rest of its frame: append() kicks when done.)
    const waitsForFrame = this.appending > 0 && this.applied.seq + 1 === this.srl.lastSeq
    if (this.applied.seq < this.srl.lastSeq && this.failed === null && this.ibcHeld === null && !waitsForFrame) this.kick()
  }

  /** Applies the next record. False if it must wait for more records (a failed one, not yet voided). */
  private step (): boolean {
    const seq = this.applied.seq + 1
    if (seq === this.srl.lastSeq && this.appending > 0) return false
    // Only records durable in this SRL are applied (VVR's rule): a power cut can then never leave
    // the data directory with a change the SRL has lost (and the Primary may have released).
    if (seq > this.srl.syncedSeq) {
      this.srl.sync().then(() => this.kick(), (err: Error) => this.fail(err))
      return false
    }
    const r = this.srl.ring.readAt(this.applied.offset, seq)
    if (r === null) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq} is missing or damaged at offset ${this.applied.offset}`)
    const { record, end } = r
    if (record.type === RecordType.VOID) {
      this.voided(record)
      this.applied = { seq, offset: end }
      return true
    }
    if (record.type === RecordType.IBC && this.opts.ibc !== undefined) {
      // Everything before it is applied (causal order). IBC decides when it is consumed.
      if (this.ibcHeld !== null) return false
      this.ibcHeld = { seq, end }
      const m = record.meta
      const id = this.opts.ibcId?.(seq) ?? String(seq)
      this.opts.ibc.arrive(seq, m.n ?? '', id, Buffer.from(m.x ?? new Uint8Array(0)), m.f ?? 0, m.s ?? 0)
        .then((consume) => { if (consume) this.consumeIbc(seq) }, (err: Error) => this.fail(err))
      return false
    }
    // A record the Primary failed to apply (its VOID follows: they arrive in one frame) is
    // skipped without being tried: here it might succeed (a full disk there, room here).
    if (seq < this.srl.lastSeq && this.srl.ring.typeAt(end, seq + 1) === RecordType.VOID) {
      const v = this.srl.ring.readAt(end, seq + 1)
      if (v !== null && v.record.meta.v === seq) {
        this.applied = { seq: seq + 1, offset: v.end }
        this.writeCursor()
        return true
      }
    }
    // The cursor goes BEFORE a non-WRITE record too: after a kill -9 in between, replay starts at
    // this record (idempotent on its own) and the writes after it, never at writes before it,
    // which a later rename or unlink would make unsafe to repeat.
    if (record.type !== RecordType.WRITE) {
      this.namesChanged = true
      this.writeCursor()
      this.dataCursor.intend(this.lastChange, seq, record.type, record.meta)
    }
    try {
      this.snapshots?.beforeApply(record)
      applyRecordSync(this.root, record, this.fds, this.replaying)
    } catch (err) {
      // (A VOID after it was seen above: the next record, if any, is not one.)
      const next = seq < this.srl.lastSeq ? this.srl.ring.readAt(end, seq + 1) : null
      if (next !== null && isFull(err)) {
        // The Primary applied it: this host must too, once there is room.
        this.stall(seq, record, err as Error)
        return false
      }
      if (next !== null) throw new ReplError('APPLY_FAILED', `cannot apply SRL record with sequence number ${seq} (${RecordType[record.type]} ${record.meta.p ?? ''}): ${(err as Error).message}`, { cause: err })
      this.failed = { seq, err: err as Error }
      this.opts.log?.(`SRL record with sequence number ${seq} (${RecordType[record.type]} ${record.meta.p ?? ''}) fails to apply (${(err as Error).message}); waiting for the next record to see whether the Primary voided it`)
      this.retryFailedOnArrival(seq, end)
      return false
    }
    if (this.stalled !== null) {
      clearTimeout(this.stalled.timer ?? undefined)
      this.opts.log?.(`the data directory took SRL record with sequence number ${seq}; applying again`)
      this.stalled = null
    }
    this.applied = { seq, offset: end }
    if (record.type !== RecordType.WRITE) {
      this.replaying = false
      this.writeCursor()
      this.dataCursor.durable(seq)
      this.lastChange = seq
    }
    return true
  }

  /**
   * Stops the apply loop at record `seq`, which the data directory has no room for: logged once,
   * shown by `status` (stalled), retried every SECONDARY_FULL_RETRY_MS. Updates keep arriving into
   * the SRL until it is full, then the RLINK's flow control holds the Primary's writers.
   */
  private stall (seq: number, record: Record, err: Error): void {
    const why = `cannot apply SRL record with sequence number ${seq} (${RecordType[record.type]} ${record.meta.p ?? ''}): ${err.message}`
    if (this.stalled === null || this.stalled.seq !== seq) {
      this.opts.log?.(`the data directory is full: ${why}; holding updates in the SRL and retrying every ${SECONDARY_FULL_RETRY_MS / 1000} s`)
    }
    if (this.stalled?.timer) clearTimeout(this.stalled.timer)
    const stalled: { seq: number, why: string, due: boolean, timer: NodeJS.Timeout | null } = { seq, why, due: false, timer: null }
    stalled.timer = setTimeout(() => { stalled.due = true; stalled.timer = null; this.kick() }, SECONDARY_FULL_RETRY_MS)
    stalled.timer.unref()
    this.stalled = stalled
  }

  /** Why the apply loop is stopped at a record the data directory has no room for, or null. */
  get stalledOn (): string | null { return this.stalled?.why ?? null }

  /** The IBC record the loop stopped at may go: it counts as applied, and applying goes on. */
  private consumeIbc (seq: number): void {
    const h = this.ibcHeld
    if (h === null || h.seq !== seq || this.closed || this.fatal) return
    this.ibcHeld = null
    this.applied = { seq, offset: h.end }
    this.replaying = false
    try { this.writeCursor() } catch (err) { this.fail(err as Error); return }
    this.onApplied?.(seq)
    this.kick()
  }

  /** Once the record after a failed one arrives: skip both if it voids it, else stop. */
  private retryFailedOnArrival (seq: number, end: number): void {
    const check = (): void => {
      if (this.closed || this.fatal) return
      if (this.srl.lastSeq <= seq) { setTimeout(check, 20); return }
      const next = this.srl.ring.readAt(end, seq + 1)
      const f = this.failed!
      this.failed = null
      if (next !== null && next.record.type === RecordType.VOID && next.record.meta.v === seq) {
        this.opts.log?.(`SRL record with sequence number ${seq} was voided by the Primary too; skipped`)
        this.applied = { seq: seq + 1, offset: next.end }
        this.replaying = false
        this.writeCursor()
        this.kick()
      } else if (next !== null && isFull(f.err)) {
        // The Primary applied it (no VOID): wait for room here, then apply it.
        const r = this.srl.ring.readAt(this.applied.offset, seq)
        if (r !== null) this.stall(seq, r.record, f.err)
        else this.fail(new ReplError('LOG_CORRUPT', `SRL record with sequence number ${seq} is missing or damaged at offset ${this.applied.offset}`))
      } else {
        this.fail(new ReplError('APPLY_FAILED', `cannot apply SRL record with sequence number ${seq}: ${f.err.message}`, { cause: f.err }))
      }
    }
    setTimeout(check, 0)
  }

  private voided (rec: Record): void {
    // A VOID whose record applied fine here: the Primary had an error (a full disk, say) that
    // this host did not. Say so; status reports the Secondary inconsistent.
    if (this.applied.seq === rec.meta.v) {
      this.diverged = `record ${rec.meta.v} failed on the Primary (errno ${-(rec.meta.e ?? 0)}) but applied on this Secondary`
      this.opts.log?.(`warning: ${this.diverged}; the trees may differ`)
    }
  }

  private readCursor (): Position | null {
    const buf = Buffer.alloc(CURSOR_BYTES)
    if (fs.readSync(this.cursorFd, buf, 0, CURSOR_BYTES, 0) !== CURSOR_BYTES) return null
    return decodeCursor(buf)
  }

  private writeCursor (): void {
    fs.writeSync(this.cursorFd, encodeCursor(this.applied), 0, CURSOR_BYTES, 0)
  }

  /** For a stopped Secondary rolled back offline (src/daemon/restore.ts): forget where applying was. */
  static discardCursor (srl: Srl): void {
    fs.rmSync(path.join(srl.dir, CURSOR_FILE), { force: true })
  }

  /**
   * A full synchronization (src/sync/) made the data directory the Primary's after record `seq`
   * (the caller synced it): the SRL, which has never held a record, starts there, and so does
   * applying.
   */
  async restartAt (seq: number): Promise<void> {
    // A Secondary resynchronized from a change map has a log, all applied: released first.
    if (this.srl.lastSeq !== this.srl.tailSeq) await this.checkpoint()
    await this.srl.restartAt(seq)
    // The tree is now another one: no earlier point can be had.
    for (const st of this.stops.splice(0)) st.fail(new ReplError('BUSY', 'this Secondary was synchronized meanwhile'))
    this.applied = this.srl.tailPosition
    this.lastChange = seq
    this.replaying = false
    this.dataCursor.settle(seq)
    this.writeCursor()
    this.onApplied?.(seq)
  }

  /** Syncs the data directory and releases applied records from the SRL. */
  checkpoint (): Promise<void> {
    return this.checkpoints.run({ ...this.applied }, async (applied) => applied)
  }

  private fail (err: Error): void {
    if (this.fatal) return
    if (this.stalled?.timer) clearTimeout(this.stalled.timer)
    this.fatal = err
    this.failStops()
    this.opts.log?.(`fatal: ${err.message}`)
    const w = this.roomWaiters.splice(0)
    for (const f of w) f()
    this.onFatal?.(err)
  }

  async close (): Promise<void> {
    if (this.closed) return
    if (this.timer) clearInterval(this.timer)
    if (this.stalled?.timer) clearTimeout(this.stalled.timer)
    // Finish applying what is logged, so a clean stop leaves nothing to replay (it must be durable
    // first: see step()).
    if (!this.fatal) { try { this.srl.syncNow() } catch (err) { this.fail(err as Error) } }
    while (!this.fatal && this.failed === null && this.applied.seq < this.srl.lastSeq) {
      try { if (!this.step()) break } catch (err) { this.fail(err as Error) }
    }
    this.closed = true
    this.failStops()
    if (!this.fatal) {
      this.writeCursor()
      await this.checkpoint().catch((err) => this.opts.log?.(`stop: checkpoint: ${(err as Error).message}`))
    }
    this.fds.clear()
    fs.closeSync(this.cursorFd)
    this.dataCursor.close()
    await this.srl.close()
  }
}

/** A data directory with no room for a record: the Secondary waits for space instead of failing. */
function isFull (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOSPC' || code === 'EDQUOT'
}
