/**
 * IBC on the Secondary: what happens when the apply loop reaches an IBC record.
 *
 * The apply loop has applied every record before it (causal order), then asks `arrive()`:
 * - a name unregistered here earlier: the message is discarded, replication goes on;
 * - a name never registered: the record is held (nothing after it is applied) until the name is
 *   registered or the deliver timeout passes (then discarded, replication goes on);
 * - a registered name, "do not freeze": the message is queued for `receive` (until its deliver
 *   timeout) and replication goes on;
 * - a registered name: the record is held, the Secondary is frozen at the exact point of the send,
 *   and the message waits for `receive` (deliver timeout). Once received, the Secondary stays frozen
 *   until `unfreeze` or the message's freeze timeout; then the record is consumed and the apply loop
 *   goes on with the updates logged meanwhile (they keep arriving and are network-acked).
 *
 * The held message and its phase are in LevelDB (`ibc/held`), so a frozen Secondary is frozen
 * again at the same record after a restart. Delivery is at least once: a message received before a
 * restart is delivered again after it (same id), before any newer message.
 */
import type { LogStore } from '../srl/state'
import { State, type Key, type HeldMessage, type QueuedMessage } from '../format/state'
import { IbcRegistry } from './registry'
import { IbcError } from '../errors'
import { IBC_DELIVER_TIMEOUT_DEFAULT_S } from '../limits'
import { IBC_FLAG_NOFREEZE } from '../format/record'


export interface IbcMessage {
  app: string
  /** Stable across redeliveries: the Primary's SRL id and the record's sequence number. */
  id: string
  seq: number
  message: Buffer
  /** Whether the Secondary is frozen at this message. */
  frozen: boolean
}

type Held = HeldMessage

interface Waiter { app: string, resolve: (m: IbcMessage) => void, reject: (e: Error) => void, timer: NodeJS.Timeout | null }

export class IbcSecondary {
  private held: Held | null = null
  private deliveredThisRun = false
  private queue: Array<{ msg: IbcMessage, deadline: number }> = []
  private waiters: Waiter[] = []
  private timer: NodeJS.Timeout | null = null
  /** Whether the apply loop has reached the held record in this run (its deadlines run only then). */
  private attached = false
  /** LevelDB writes of `ibc/held`, in order (classic-level does not order concurrent operations). */
  private heldWrites: Promise<void> = Promise.resolve()
  /** Called when a held record may now be consumed (the apply loop goes on). */
  onRelease?: (seq: number) => void
  log: (line: string) => void = () => {}

  private constructor (readonly registry: IbcRegistry, private readonly store: LogStore, private readonly unregisteredTimeoutS: number) {}

  /**
   * For a stopped Secondary rolled back offline to record `seq` (src/daemon/restore.ts): the held
   * message and the queued ones after `seq` are gone with the records that carried them.
   */
  static async forgetAfter (store: LogStore, seq: number): Promise<void> {
    await store.del(State.ibcHeld)
    for (const [k, q] of await store.entries(State.ibcQueue)) if (q.seq > seq) await store.del(k)
  }

  static async open (store: LogStore, opts: { unregisteredTimeoutS?: number } = {}): Promise<IbcSecondary> {
    const s = new IbcSecondary(await IbcRegistry.open(store), store, opts.unregisteredTimeoutS ?? IBC_DELIVER_TIMEOUT_DEFAULT_S)
    s.held = (await store.get(State.ibcHeld)) ?? null
    for (const [, q] of await store.entries(State.ibcQueue)) {
      s.queue.push({ msg: { app: q.app, id: q.id, seq: q.seq, message: Buffer.from(q.message, 'base64'), frozen: false }, deadline: q.deadline })
    }
    s.arm()
    return s
  }

  get frozen (): boolean { return this.held !== null && !this.held.noFreeze && (this.held.phase === 'delivering' || this.held.phase === 'frozen') }
  /** The sequence number of the record holding the apply loop, or null. */
  get holdingSeq (): number | null { return this.held?.seq ?? null }

  /**
   * The apply loop reached IBC record `seq` (everything before it applied). Returns true if it
   * may be consumed now; false holds the apply loop until onRelease(seq).
   */
  async arrive (seq: number, app: string, id: string, message: Buffer, flags: number, freezeTimeoutS: number): Promise<boolean> {
    if (this.bypass !== null) {
      this.log(`IBC message ${id} for ${app} (sequence number ${seq}) not delivered: ${this.bypass}`)
      return true
    }
    if (this.held !== null) {
      if (this.held.seq === seq) {
        // The same record again (a restart): keep its state; its deadlines run from now on.
        this.attached = true
        this.arm()
        this.deliver()
        return false
      }
      // A held record is consumed before the next is reached; a stale one is left from before a crash.
      await this.setHeld(null)
    }
    const noFreeze = (flags & IBC_FLAG_NOFREEZE) !== 0
    if (this.registry.wasUnregistered(app) && this.registry.get(app) === undefined) {
      this.log(`IBC message ${id} for ${app} discarded: the name was unregistered on this Secondary`)
      return true
    }
    const reg = this.registry.get(app)
    if (reg === undefined) {
      await this.setHeld({ seq, app, id, message: message.toString('base64'), noFreeze, freezeTimeoutS, phase: 'unregistered', deadline: deadlineOf(this.unregisteredTimeoutS) })
      this.log(`IBC message ${id} for ${app}, which is not registered here: holding replication for up to ${this.unregisteredTimeoutS} s for it to register`)
      return false
    }
    if (noFreeze) {
      await this.enqueue({ app, id, seq, message, frozen: false }, reg.deliverTimeoutS)
      return true
    }
    await this.setHeld({ seq, app, id, message: message.toString('base64'), noFreeze, freezeTimeoutS, phase: 'delivering', deadline: deadlineOf(reg.deliverTimeoutS) })
    this.log(`IBC message ${id} for ${app} arrived: the Secondary is frozen at sequence number ${seq - 1}`)
    this.deliver()
    return false
  }

  /**
   * A takeover applies every logged update (VVR): IBC messages still in the log are not delivered
   * (their receivers were on the lost Primary's side of the flow), and a held one is released.
   * null: a takeover that could not complete, messages are delivered again.
   */
  async passThrough (why: string | null): Promise<void> {
    this.bypass = why
    if (why !== null) await this.release(why)
  }

  private bypass: string | null = null

  /** After a restart: a held record the apply loop had already consumed (the cursor is past it) is stale. */
  async dropStale (appliedSeq: number): Promise<void> {
    if (this.held !== null && this.held.seq <= appliedSeq) {
      this.log(`IBC message ${this.held.id} was consumed before the restart; forgetting its held state`)
      await this.setHeld(null)
    }
  }

  /** A name was registered: a held message for it becomes deliverable. */
  async registered (app: string): Promise<void> {
    const h = this.held
    if (h === null || h.app !== app || h.phase !== 'unregistered') return
    const reg = this.registry.get(app)!
    if (h.noFreeze) {
      await this.enqueue({ app, id: h.id, seq: h.seq, message: Buffer.from(h.message, 'base64'), frozen: false }, reg.deliverTimeoutS)
      await this.release('delivered without freezing')
      return
    }
    await this.setHeld({ ...h, phase: 'delivering', deadline: deadlineOf(reg.deliverTimeoutS) })
    this.log(`IBC application ${app} registered: the Secondary is frozen at sequence number ${h.seq - 1}, message ${h.id} awaits receive`)
    this.deliver()
  }

  /** `ibc receive`: the next message for `app`, waiting up to timeoutS (0: forever). */
  receive (app: string, key: string | undefined, timeoutS: number, signal?: AbortSignal): Promise<IbcMessage> {
    this.registry.require(app, key)
    return new Promise((resolve, reject) => {
      const w: Waiter = { app, resolve, reject, timer: null }
      // A receiver that went away (Ctrl-C) must not swallow a delivery.
      signal?.addEventListener('abort', () => {
        if (!this.waiters.includes(w)) return
        this.take(w)
        reject(new IbcError('EIBC_NO_MESSAGE', 'the receiver went away'))
      })
      if (timeoutS > 0) {
        w.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w)
          reject(new IbcError('EIBC_NO_MESSAGE', `no IBC message for ${app} arrived within ${timeoutS} s`))
        }, timeoutS * 1000)
      }
      this.waiters.push(w)
      this.deliver()
    })
  }

  /** `ibc unfreeze`: consumes the held message of `app`; the apply loop goes on. */
  async unfreeze (app: string, key: string | undefined): Promise<{ seq: number, id: string }> {
    this.registry.require(app, key)
    const h = this.held
    if (h === null || h.app !== app || h.phase === 'unregistered') throw new IbcError('EIBC_NOT_FROZEN', `the Secondary is not frozen by IBC application ${app}`)
    await this.release('unfrozen')
    return { seq: h.seq, id: h.id }
  }

  /** Whether a delivery or an unfreeze is pending for `app` (unregister refuses then). */
  pending (app: string): boolean {
    return (this.held !== null && this.held.app === app && this.held.phase !== 'unregistered') || this.queue.some((q) => q.msg.app === app)
  }

  async unregister (app: string, key: string | undefined): Promise<void> {
    await this.registry.unregister(app, key, this.pending(app), true)
    for (const w of this.waiters.filter((x) => x.app === app)) {
      if (w.timer) clearTimeout(w.timer)
      w.reject(new IbcError('EIBC_NO_APPLICATION', `IBC application ${app} was unregistered`))
    }
    this.waiters = this.waiters.filter((x) => x.app !== app)
  }

  status (): unknown {
    const h = this.held
    return {
      frozen: this.frozen,
      registrations: this.registry.list().map((r) => ({ name: r.name, deliverTimeoutS: r.deliverTimeoutS, registeredAt: r.registeredAt })),
      held: h === null ? null : { app: h.app, id: h.id, seq: h.seq, phase: h.phase, noFreeze: h.noFreeze, freezeTimeoutS: h.freezeTimeoutS, deadline: h.deadline === 0 ? null : new Date(h.deadline).toISOString() },
      queued: this.queue.map((q) => ({ app: q.msg.app, id: q.msg.id, seq: q.msg.seq })),
      /** Applications with an `ibc receive` waiting (one entry per receiver). */
      receiving: this.waiters.map((w) => w.app)
    }
  }

  close (): void {
    if (this.timer) clearTimeout(this.timer)
    for (const w of this.waiters) {
      if (w.timer) clearTimeout(w.timer)
      w.reject(new IbcError('EIBC_NO_MESSAGE', 'the Secondary is stopping'))
    }
    this.waiters = []
  }

  /** Queues a do-not-freeze message for receive, in LevelDB first (at least once across restarts). */
  private async enqueue (msg: IbcMessage, deliverTimeoutS: number): Promise<void> {
    const deadline = deadlineOf(deliverTimeoutS)
    await this.store.put(queueKey(msg.seq), { app: msg.app, id: msg.id, seq: msg.seq, message: msg.message.toString('base64'), deadline })
    this.queue.push({ msg, deadline })
    this.log(`IBC message ${msg.id} for ${msg.app} (do not freeze) queued for receive; replication goes on`)
    this.deliver()
    this.arm()
  }

  /** Hands deliverable messages to waiting receivers. */
  private deliver (): void {
    const h = this.held
    if (h !== null && h.phase !== 'unregistered' && !(h.phase === 'frozen' && this.deliveredThisRun)) {
      const w = this.waiters.find((x) => x.app === h.app)
      if (w !== undefined) {
        this.take(w)
        this.deliveredThisRun = true
        if (h.phase === 'delivering') {
          const freezeDeadline = deadlineOf(h.freezeTimeoutS)
          this.setHeld({ ...h, phase: 'frozen', deadline: freezeDeadline }).catch((err) => this.log(`IBC: cannot record the freeze: ${(err as Error).message}`))
          this.log(`IBC message ${h.id} delivered to ${h.app}; frozen until unfreeze${h.freezeTimeoutS > 0 ? ` or ${h.freezeTimeoutS} s` : ''}`)
        } else {
          this.log(`IBC message ${h.id} delivered again to ${h.app} (after a restart)`)
        }
        w.resolve({ app: h.app, id: h.id, seq: h.seq, message: Buffer.from(h.message, 'base64'), frozen: true })
      }
    }
    for (let i = 0; i < this.queue.length;) {
      const q = this.queue[i]
      const w = this.waiters.find((x) => x.app === q.msg.app)
      if (w === undefined) { i++; continue }
      this.take(w)
      this.queue.splice(i, 1)
      w.resolve(q.msg)
      // Forgotten once handed over; a crash before this redelivers it (at least once).
      this.store.del(queueKey(q.msg.seq)).catch((err) => this.log(`IBC: ${(err as Error).message}`))
    }
  }

  private take (w: Waiter): void {
    if (w.timer) clearTimeout(w.timer)
    this.waiters = this.waiters.filter((x) => x !== w)
  }

  private setHeld (h: Held | null): Promise<void> {
    this.held = h
    this.attached = h !== null
    this.arm()
    const write = this.heldWrites.then(() => h === null ? this.store.del(State.ibcHeld) : this.store.put(State.ibcHeld, h))
    this.heldWrites = write.catch(() => {})
    return write
  }

  private async release (why: string): Promise<void> {
    const h = this.held
    if (h === null) return
    this.deliveredThisRun = false
    this.held = null
    this.log(`IBC message ${h.id} for ${h.app}: ${why}; replication goes on after sequence number ${h.seq}`)
    // The apply loop consumes the record (and writes its cursor) before the held state is deleted:
    // a crash in between finds the cursor past the record and drops the stale state (dropStale).
    this.onRelease?.(h.seq)
    await this.setHeld(null)
  }

  /** One timer for the nearest deadline (held phase or queued message). */
  private arm (): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null }
    let next = Infinity
    if (this.held !== null && this.attached && this.held.deadline > 0) next = this.held.deadline
    for (const q of this.queue) if (q.deadline > 0) next = Math.min(next, q.deadline)
    if (next === Infinity) return
    this.timer = setTimeout(() => { this.expire().catch((err) => this.log(`IBC: ${(err as Error).message}`)) }, Math.max(0, next - Date.now()))
    this.timer.unref()
  }

  private async expire (): Promise<void> {
    const now = Date.now()
    const dropped = this.queue.filter((q) => q.deadline > 0 && q.deadline <= now)
    if (dropped.length > 0) {
      this.queue = this.queue.filter((q) => !dropped.includes(q))
      for (const q of dropped) await this.store.del(queueKey(q.msg.seq))
      for (const q of dropped) this.log(`IBC message ${q.msg.id} for ${q.msg.app} discarded: not received within its deliver timeout`)
    }
    const h = this.held
    if (h !== null && this.attached && h.deadline > 0 && h.deadline <= now) {
      const why = h.phase === 'unregistered' ? `discarded: ${h.app} did not register within ${this.unregisteredTimeoutS} s`
        : h.phase === 'delivering' ? 'discarded: not received within the deliver timeout'
          : `freeze timeout of ${h.freezeTimeoutS} s passed`
      await this.release(why)
    } else {
      this.arm()
    }
  }
}

function queueKey (seq: number): Key<QueuedMessage> {
  return State.ibcQueue.key(String(seq))
}

function deadlineOf (seconds: number): number {
  return seconds > 0 ? Date.now() + seconds * 1000 : 0
}
