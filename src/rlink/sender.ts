/**
 * The Primary's end of the RLINKs: the RlinkSet the Primary RVG talks to (synchronous modes, what
 * the SRL must retain, status, pause/resume), over one Rlink per Secondary (src/rlink/link.ts).
 * Each RLINK's data-acked position is persisted under `rlink/<address>` at every checkpoint
 * before a release.
 */
import type { Srl } from '../srl'
import { LogStore } from '../srl/state'
import { State, type Position } from '../format/state'
import { ReplError } from '../errors'
import { RLINK_DEAD_AFTER_MS } from '../limits'
import { Rlink, AppendClock, type Context, type SynchronousMode, type RlinkStatus, type SyncSession, type SyncMode } from './link'

export { Rlink, AppendClock, type SynchronousMode, type RlinkState, type RlinkStatus, type RlinkRecord, type SyncSession, type SyncStatus, type SyncMode } from './link'

/** The Primary's RLINKs, as the RVG sees them. */
export class RlinkSet {
  readonly links: Rlink[]
  readonly clock = new AppendClock()
  private pumpScheduled = false
  private progressWaiters: Array<() => void> = []

  private constructor (readonly srl: Srl, readonly mode: SynchronousMode, links: Rlink[]) {
    this.links = links
  }

  /** Loads each RLINK's stored position; a new one starts at the SRL's tail. */
  static async open (srl: Srl, cfg: { secondaries: string[], mode: SynchronousMode, rds: string, secret: Buffer | null, log: (l: string) => void, sync?: (address: string, mode: SyncMode) => SyncSession }): Promise<RlinkSet> {
    const stored = new Map((await srl.store.entries(State.rlink)).map(([k, v]) => [LogStore.idOf(State.rlink, k), v]))
    const set: RlinkSet = new RlinkSet(srl, cfg.mode, [])
    // An SRL of state format 3 or older was created over an empty data directory (it had to be).
    const baseline = (await srl.store.get(State.baseline)) ?? 'empty'
    const ctx: Context = { srl, rds: cfg.rds, secret: cfg.secret ?? Buffer.alloc(0), log: cfg.log, clock: set.clock, changed: () => set.changed(), fatal: (err) => set.onFatal?.(err), baseline, sync: cfg.sync }
    for (const a of cfg.secondaries) {
      let rec = stored.get(a)
      if (rec === undefined || rec.seq < srl.tailSeq) {
        if (rec !== undefined) cfg.log(`RLINK to ${a}: its stored position ${rec.seq} is older than the SRL's tail ${srl.tailSeq}; it will need a full synchronization`)
        rec = { ...srl.tailPosition, paused: rec?.paused ?? false }
        await srl.store.put(State.rlink.key(a), rec)
      }
      stored.delete(a)
      set.links.push(new Rlink(a, rec, ctx))
    }
    for (const a of stored.keys()) {
      cfg.log(`RLINK ${a} is no longer configured; the SRL no longer keeps records for it`)
      await srl.store.del(State.rlink.key(a))
    }
    return set
  }

  start (): void {
    for (const l of this.links) l.start()
  }

  find (address: string | undefined): Rlink[] {
    if (address === undefined) return this.links
    const l = this.links.find((x) => x.address === address)
    if (l === undefined) throw new ReplError('NOT_FOUND', `no RLINK to ${address} (this Primary replicates to ${this.links.map((x) => x.address).join(', ') || 'no Secondary'})`)
    return [l]
  }

  async setPaused (address: string | undefined, paused: boolean): Promise<string[]> {
    const links = this.find(address)
    for (const l of links) {
      if (paused) l.pause(); else l.resume()
      await this.srl.store.put(State.rlink.key(l.address), { ...l.dackPos, paused })
    }
    return links.map((l) => l.address)
  }

  /**
   * Called synchronously after every SRL append. Only records durable in the SRL are sent (a
   * Secondary must never hold a record a power cut takes from the Primary), so an append starts a
   * group commit (Srl.sync coalesces), and synced() sends.
   */
  appended (seq: number): void {
    this.clock.note(seq)
    if (this.pumpScheduled || this.links.length === 0) return
    this.pumpScheduled = true
    setImmediate(() => {
      this.pumpScheduled = false
      this.srl.sync().catch((err: Error) => this.onFatal?.(err))
      this.pumpAll()
    })
  }

  /**
   * After each fdatasync of the SRL. The pump runs on the next turn, never inside the caller: a
   * sync forced before a record is applied (the data cursor's full tail) must not send that record
   * before the VOID a failed apply appends after it.
   */
  synced (_seq: number): void {
    if (this.syncPumpScheduled) return
    this.syncPumpScheduled = true
    setImmediate(() => {
      this.syncPumpScheduled = false
      this.pumpAll()
    })
  }

  private syncPumpScheduled = false

  /** Sends on every link (a damaged SRL record is fatal for the daemon, never an uncaught throw). */
  pumpAll (): void {
    for (const l of this.links) l.pump()
  }

  onFatal?: (err: Error) => void

  /** Before an append: synchronous=fail refuses updates while an RLINK is not connected. */
  admit (): void {
    if (this.mode !== 'fail') return
    for (const l of this.links) {
      if (!l.connected) throw new ReplError('NOT_CONNECTED', `RLINK to ${l.address} is ${l.state} and synchronous=fail`)
    }
  }

  /** After applying `seq`: waits as the synchronous mode says. */
  acked (seq: number): Promise<void> | null {
    if (this.mode === 'off' || this.links.length === 0) return null
    // The pump runs on setImmediate; send now so the ack is not a turn late.
    this.pumpAll()
    return Promise.all(this.links.map((l) => l.waitNetworkAck(seq))).then(() => {})
  }

  /** The oldest position any RLINK still needs (records after it are retained), or null. */
  retainFrom (): Position | null {
    let min: Position | null = null
    for (const l of this.links) if (min === null || l.dackPos.seq < min.seq) min = l.dackPos
    return min
  }

  /** Whether waiting can free SRL space (some link is connected and behind). */
  get canProgress (): boolean {
    // Only the links holding the SRL's tail matter, and only while they are acking: a connected
    // Secondary that applies nothing (frozen by IBC, stalled) frees nothing.
    const holders = this.links.filter((l) => l.dackPos.seq <= this.srl.tailSeq)
    return holders.length > 0 && holders.every((l) => l.connected && l.dackSeq < this.srl.lastSeq && Date.now() - l.lastDackAt < RLINK_DEAD_AFTER_MS)
  }

  /** Resolves at the next ack or state change. */
  progress (): Promise<void> {
    return new Promise((resolve) => this.progressWaiters.push(resolve))
  }

  private changed (): void {
    let min = Infinity
    for (const l of this.links) min = Math.min(min, l.dackSeq)
    if (min !== Infinity) this.clock.trim(min)
    const w = this.progressWaiters.splice(0)
    for (const f of w) f()
  }

  /** Persists every link's data-acked position (before the SRL releases anything). */
  async persist (): Promise<void> {
    for (const l of this.links) await this.srl.store.put(State.rlink.key(l.address), { ...l.dackPos, paused: l.paused })
  }

  status (): RlinkStatus[] {
    return this.links.map((l) => l.status())
  }

  /** Which Secondaries hold the SRL's tail, for the SRL-full error. */
  describeLag (): string {
    const tail = this.srl.tailSeq
    const holders = this.links.filter((l) => l.dackPos.seq <= tail).map((l) => `${l.address} (${l.state}, data-acked ${l.dackSeq})`)
    return `it keeps the updates not yet data-acked by ${holders.join(', ') || 'a Secondary'}`
  }

  close (): void {
    for (const l of this.links) l.close()
    const w = this.progressWaiters.splice(0)
    for (const f of w) f()
  }
}

