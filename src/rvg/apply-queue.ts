/**
 * The Primary's queue of writes answered but not yet applied (src/rvg/primary.ts): applied in
 * sequence order, one batch at a time (so writes land in log order, even to one inode under two
 * names), each copied from the SRL ring into its file (copy_file_range, sys.applyWrites) and given
 * the mtime its record carries. A batch runs after the current replies are sent (setImmediate). A
 * small one is applied right there on the event loop: a threadpool round trip costs more than
 * copying a few pages. A large one goes to the threadpool, so the next writes are journaled while
 * it copies. Writers wait while more than APPLY_QUEUE_BYTES_MAX bytes are queued.
 *
 * The queue knows nothing of sequence numbers or positions: it tells its owner when a batch is
 * done (`onBatch`), and its owner advances the applied position.
 */
import { sys } from '../native'
import { APPLY_QUEUE_BYTES_MAX, APPLY_BATCH_BYTES_MAX, APPLY_INLINE_BYTES_MAX } from '../limits'

/**
 * A write waiting to be applied: its owner's handle on it, its path (for messages), and the
 * arguments of sys.applyWrites for it (srcOffset, destFd, destOffset, length, mtime s, mtime ns).
 */
export interface QueuedWrite<T> { item: T, path: string, jobs: [number, number, number, number, number, number] }
const JOB_LENGTH = 3

export class ApplyQueue<T> {
  private readonly queue: Array<QueuedWrite<T>> = []
  /** Bytes queued and not yet applied. */
  bytes = 0
  private applying = false
  /** The scheduled apply (see kick), or null. */
  private timer: NodeJS.Immediate | null = null
  /** The batch running on the threadpool, if any: close() waits for it, even after a fatal error. */
  private asyncBatch: Promise<void> | null = null
  /** Writers waiting for the queue to shrink below APPLY_QUEUE_BYTES_MAX. */
  private roomWaiters: Array<() => void> = []

  /**
   * `ringFd`: the SRL ring the data is copied from; `copyMode`: whether copy_file_range may share
   * blocks (reflink); `onBatch(batch, failed, errno)`: a batch is done (`failed` is the index of
   * the write that failed, with its errno, or -1); `stopped()`: the owner is fatal, apply nothing.
   */
  constructor (
    private readonly ringFd: number,
    private readonly copyMode: number,
    private readonly onBatch: (batch: Array<QueuedWrite<T>>, failed: number, errno: number) => void,
    private readonly stopped: () => boolean
  ) {}

  /** Queues a write and schedules the apply; then wait for room (waitRoom) before answering. */
  push (w: QueuedWrite<T>): void {
    this.queue.push(w)
    this.bytes += w.jobs[JOB_LENGTH]
    this.kick()
  }

  /** Resolves once no more than APPLY_QUEUE_BYTES_MAX bytes are queued (or the owner is stopped). */
  async waitRoom (): Promise<void> {
    while (this.bytes > APPLY_QUEUE_BYTES_MAX && !this.stopped()) await new Promise<void>((resolve) => this.roomWaiters.push(resolve))
  }

  /** Wakes every writer waiting for room (the owner became fatal). */
  wakeAll (): void {
    for (const f of this.roomWaiters.splice(0)) f()
  }

  /**
   * Applies the queued writes at once if their apply is only scheduled (not running on the
   * threadpool): whoever needs the barrier then need not wait a turn of the event loop (the next
   * create after a small file's write, a stat of a file just written).
   */
  now (): void {
    while (this.timer !== null && !this.stopped()) {
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
    if (this.applying || this.queue.length === 0 || this.stopped()) return
    this.applying = true
    this.timer = setImmediate(() => {
      this.timer = null
      this.run()
    })
  }

  private run (): void {
    if (this.stopped()) return
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

  private done (batch: Array<QueuedWrite<T>>, failed: number, errno: number): void {
    this.applying = false
    if (failed < 0) for (const w of batch) this.bytes -= w.jobs[JOB_LENGTH]
    this.onBatch(batch, failed, errno)
    if (failed >= 0) return
    if (this.bytes <= APPLY_QUEUE_BYTES_MAX) this.wakeAll()
    this.kick()
  }
}
