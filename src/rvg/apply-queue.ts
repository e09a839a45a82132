/**
 * The Primary's writes in flight (src/rvg/primary.ts): answered, logged, not yet applied. A write
 * is tracked from its append (track()) until its apply completes; they are kept in sequence order,
 * and the applied position only advances over a completed prefix (`onApplied`). They are applied
 * in sequence order, one batch at a time (so writes land in log order, even to one inode under
 * two names), each copied from the SRL ring into its file (copy_file_range, sys.applyWrites) and
 * given the mtime its record carries. A batch runs after the current replies are sent
 * (setImmediate). A small one is applied right there on the event loop: a threadpool round trip
 * costs more than copying a few pages. A large one goes to the threadpool, so the next writes are
 * journaled while it copies. Writers wait while more than APPLY_QUEUE_BYTES_MAX bytes are queued.
 *
 * The barrier: reads that could see a file behind the log (a stat or read of an inode with writes
 * in flight) and every other change wait until the writes appended before them are applied.
 */
import { sys } from '../native'
import type { Position } from '../format/state'
import { APPLY_QUEUE_BYTES_MAX, APPLY_BATCH_BYTES_MAX, APPLY_INLINE_BYTES_MAX } from '../limits'

/** A write appended to the SRL whose data-directory write is in flight. */
export interface InflightWrite { seq: number, end: number, done: boolean, ino: number }

/**
 * A write waiting to be applied: its in-flight entry, its path (for messages), and the arguments
 * of sys.applyWrites for it (srcOffset, destFd, destOffset, length, mtime s, mtime ns).
 */
export interface QueuedWrite { item: InflightWrite, path: string, jobs: [number, number, number, number, number, number] }
const JOB_LENGTH = 3

export class ApplyQueue {
  /** In sequence order; the head is the oldest write not yet known applied. */
  private readonly inflight: InflightWrite[] = []
  /** Data-directory inodes with answered writes not yet applied, and how many each. */
  private readonly pendingInodes = new Map<number, number>()
  private readonly queue: QueuedWrite[] = []
  /** Bytes queued and not yet applied. */
  bytes = 0
  /**
   * Told when an inode gets its first write in flight (busy) and when its last is applied: a
   * transport whose reads do not run on the event loop (src/fuse/ll-adapter.ts) makes them wait.
   */
  onPending: ((ino: number, busy: boolean) => void) | null = null
  private applying = false
  /** The scheduled apply (see kick), or null. */
  private timer: NodeJS.Immediate | null = null
  /** The batch running on the threadpool, if any: close() waits for it, even after a fatal error. */
  private asyncBatch: Promise<void> | null = null
  /** Writers waiting for the queue to shrink below APPLY_QUEUE_BYTES_MAX. */
  private roomWaiters: Array<() => void> = []
  /** barrier() callers: each waits until write `seq` is applied (or a fatal error). */
  private drainWaiters: Array<{ seq: number, wake: () => void }> = []

  /**
   * `ringFd`: the SRL ring the data is copied from; `copyMode`: whether copy_file_range may share
   * blocks (reflink); `onApplied(pos)`: every write up to `pos` is applied; `onFailed(seq, path,
   * errno)`: a write cannot be applied (the owner becomes fatal); `fatal()`: the owner's fatal
   * error, if any (nothing more is applied, and every waiter is released with it).
   */
  constructor (
    private readonly ringFd: number,
    private readonly copyMode: number,
    private readonly onApplied: (pos: Position) => void,
    private readonly onFailed: (seq: number, path: string, errno: number) => void,
    private readonly fatal: () => Error | null
  ) {}

  /** How many writes are in flight. */
  get inFlight (): number { return this.inflight.length }

  /** Starts tracking the write appended as record `seq` (ending at `end`), in the same step as its append. */
  track (seq: number, end: number): InflightWrite {
    const item: InflightWrite = { seq, end, done: false, ino: -1 }
    this.inflight.push(item)
    return item
  }

  /** The tracked write goes to the data-directory inode `ino`: reads of it wait (writesPending). */
  pending (item: InflightWrite, ino: number): void {
    item.ino = ino
    const k = this.pendingInodes.get(ino) ?? 0
    this.pendingInodes.set(ino, k + 1)
    if (k === 0) this.onPending?.(ino, true)
  }

  /** Whether inode `ino` has writes in flight (a stat or read of it must wait for the barrier). */
  writesPending (ino: number): boolean {
    return this.inflight.length > 0 && this.pendingInodes.has(ino)
  }

  /** The inodes with writes in flight now (for an onPending set later). */
  pendingNow (): number[] { return [...this.pendingInodes.keys()] }

  /** For the fd cache's trim: a descriptor on an inode with queued writes stays open. */
  readonly busy = (ino: number): boolean => this.pendingInodes.has(ino)

  /** Queues a tracked write and schedules the apply; then wait for room (waitRoom) before answering. */
  push (w: QueuedWrite): void {
    this.queue.push(w)
    this.bytes += w.jobs[JOB_LENGTH]
    this.kick()
  }

  /** Resolves once no more than APPLY_QUEUE_BYTES_MAX bytes are queued (or the owner is fatal). */
  async waitRoom (): Promise<void> {
    while (this.bytes > APPLY_QUEUE_BYTES_MAX && this.fatal() === null) await new Promise<void>((resolve) => this.roomWaiters.push(resolve))
  }

  /**
   * Resolves once every write tracked before the call is applied (writes tracked later do not
   * hold it up); rejects with the owner's fatal error if there is one.
   */
  barrier (): Promise<void> {
    const check = (): Promise<void> | null => {
      const f = this.fatal()
      if (f !== null) return Promise.reject(f)
      return this.inflight.length === 0 ? Promise.resolve() : null
    }
    let ready = check()
    if (ready === null) {
      this.now()
      ready = check()
    }
    if (ready !== null) return ready
    const seq = this.inflight[this.inflight.length - 1].seq
    return new Promise((resolve, reject) => this.drainWaiters.push({ seq, wake: () => { const f = this.fatal(); if (f !== null) reject(f); else resolve() } }))
  }

  /** The owner became fatal: releases every writer waiting for room and every barrier. */
  wakeAll (): void {
    this.onPending?.(-1, false) // nothing more is applied: nobody waits for it
    for (const f of this.roomWaiters.splice(0)) f()
    this.wakeDrained()
  }

  /**
   * Applies the queued writes at once if their apply is only scheduled (not running on the
   * threadpool): whoever needs the barrier then need not wait a turn of the event loop (the next
   * create after a small file's write, a stat of a file just written).
   */
  now (): void {
    while (this.timer !== null && this.fatal() === null) {
      clearImmediate(this.timer)
      this.timer = null
      this.run() // inline for a small batch, which may schedule the next; else on the threadpool
    }
  }

  /** Waits for the batch on the threadpool, if any (it uses the ring and the data descriptors). */
  async settled (): Promise<void> {
    while (this.asyncBatch !== null) await this.asyncBatch
  }

  private kick (): void {
    if (this.applying || this.queue.length === 0 || this.fatal() !== null) return
    this.applying = true
    this.timer = setImmediate(() => {
      this.timer = null
      this.run()
    })
  }

  private run (): void {
    if (this.fatal() !== null) return
    let n = 0
    let bytes = 0
    while (n < this.queue.length && (n === 0 || bytes < APPLY_BATCH_BYTES_MAX)) bytes += this.queue[n++].jobs[JOB_LENGTH]
    const batch = this.queue.splice(0, n)
    const jobs = new Float64Array(batch.length * 6)
    for (let i = 0; i < batch.length; i++) jobs.set(batch[i].jobs, i * 6)
    if (bytes <= APPLY_INLINE_BYTES_MAX) {
      const r = sys.applyWrites(this.ringFd, jobs, this.copyMode)
      this.done(batch, r < 0 ? -1 : Math.floor(r / 65536), r < 0 ? 0 : r % 65536)
    } else {
      this.asyncBatch = new Promise<void>((resolve) => sys.applyWrites(this.ringFd, jobs, this.copyMode, (failed, errno) => {
        this.asyncBatch = null
        resolve()
        this.done(batch, failed, errno)
      }))
    }
  }

  private done (batch: QueuedWrite[], failed: number, errno: number): void {
    this.applying = false
    if (failed >= 0) {
      const { item, path } = batch[failed]
      this.onFailed(item.seq, path, errno)
      return
    }
    for (const { item, jobs } of batch) {
      item.done = true
      this.bytes -= jobs[JOB_LENGTH]
      const k = this.pendingInodes.get(item.ino)! - 1
      if (k === 0) { this.pendingInodes.delete(item.ino); this.onPending?.(item.ino, false) } else this.pendingInodes.set(item.ino, k)
    }
    let head: InflightWrite | undefined
    while (this.inflight.length > 0 && this.inflight[0].done) head = this.inflight.shift()
    if (head !== undefined) this.onApplied({ seq: head.seq, offset: head.end })
    this.wakeDrained()
    if (this.bytes <= APPLY_QUEUE_BYTES_MAX) for (const f of this.roomWaiters.splice(0)) f()
    this.kick()
  }

  /** Wakes the barrier() callers whose writes are all applied (all of them after a fatal error). */
  private wakeDrained (): void {
    if (this.drainWaiters.length === 0) return
    const seq = this.fatal() !== null || this.inflight.length === 0 ? Infinity : this.inflight[0].seq - 1
    const ready = this.drainWaiters.filter((w) => w.seq <= seq)
    if (ready.length === 0) return
    this.drainWaiters = this.drainWaiters.filter((w) => w.seq > seq)
    for (const w of ready) w.wake()
  }
}
