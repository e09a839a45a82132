/**
 * The Primary's end of the RLINKs: the RlinkSet the Primary RVG talks to (synchronous modes, what
 * the SRL must retain, status, pause/resume), over one Rlink per Secondary (src/rlink/link.ts).
 * Each RLINK's data-acked position is persisted under `rlink/<address>` at every checkpoint
 * before a release.
 */
import type { RlinkTls } from './tls'
import type { Srl } from '../srl'
import { LogStore } from '../srl/state'
import { State, type Position, type RlinkPosition, type Generation } from '../format/state'
import { ReplError } from '../errors'
import type { Record } from '../format/record'
import { pathList, type SplitBrain } from '../format/generation'
import { RLINK_DEAD_AFTER_MS } from '../limits'
import { Rlink, AppendClock, JOIN_PREFIX, isJoinName, type Context, type SynchronousMode, type RlinkStatus, type SyncSession, type SyncMode, type ChangeMapsView } from './link'

/**
 * SRL overflow protection, VVR's `srlprot`: what happens when the SRL would overflow because an
 * RLINK holds its tail (docs/ARCHITECTURE.md "SRL overflow protection").
 *
 *             RLINK connected and acking        otherwise (down, paused, stalled)
 *   autodcm   DCM                               DCM
 *   dcm       writers wait (flow control)       DCM
 *   fail      writers wait                      writes fail (ENOSPC)
 *   override  writers wait                      the RLINK is detached (STALE: synchronized by difference when back)
 *   off       the RLINK is detached             the RLINK is detached
 */
export type SrlProt = 'autodcm' | 'dcm' | 'fail' | 'override' | 'off'
export const SRLPROT_VALUES: SrlProt[] = ['autodcm', 'dcm', 'fail', 'override', 'off']

/** The change maps of RLINKs in DCM mode (src/sync/map.ts ChangeMaps). */
export interface ChangeMapsControl extends ChangeMapsView {
  /** Adds the paths of the SRL's records after `from` up to `upto` to the map of `address`; the position after them. */
  fold (address: string, from: Position, upto: number): Promise<Position>
  /** Adds paths a verify found different, durably, to be compared chunk by chunk. */
  add (address: string, paths: Map<string, boolean>): Promise<void>
}

/** What is stored for `l` (LevelDB `rlink/<address>`): in DCM mode how far its map goes, else what it data-acked. */
function stored (l: Rlink): RlinkPosition {
  return l.dcmPos !== null ? { ...l.dcmPos, paused: l.paused, dcm: true } : { ...l.dackPos, paused: l.paused }
}

export { Rlink, AppendClock, syncKind, type SynchronousMode, type RlinkState, type RlinkStatus, type RlinkRecord, type SyncSession, type SyncStatus, type SyncMode } from './link'

/** The Primary's RLINKs, as the RVG sees them. */
export class RlinkSet {
  readonly links: Rlink[]
  readonly clock = new AppendClock()
  private pumpScheduled = false
  private progressWaiters: Array<() => void> = []

  private constructor (readonly srl: Srl, readonly mode: SynchronousMode, links: Rlink[],
    readonly srlprot: SrlProt, private readonly maps: ChangeMapsControl | undefined, private readonly log: (l: string) => void,
    readonly maxLagS: number) {
    this.links = links
  }

  /** Latency protection (--max-lag): the RLINK writers wait for, or null. */
  private throttledBy: Rlink | null = null
  /** Writers that waited for latency protection, and how long in all (status). */
  throttledWrites = 0
  throttledMs = 0

  /** Loads each RLINK's stored position; a new one starts at the SRL's tail. */
  static async open (srl: Srl, cfg: {
    secondaries: string[]
    mode: SynchronousMode
    rds: string
    secret: Buffer | null
    /** TLS on every RLINK, or null (plain TCP). */
    tls?: RlinkTls | null
    /** --compress zstd: offer it to every Secondary. */
    compress?: boolean
    /** --bandwidth-limit per RLINK, bytes per second (null: none). */
    bandwidthLimit?: number | null
    log: (l: string) => void
    sync?: (address: string, mode: SyncMode) => SyncSession
    /** Default autodcm (with `sync` and `maps`), else fail. */
    srlprot?: SrlProt
    /** Opens the change maps of the RLINKs (addresses) stored in DCM mode. */
    maps?: (dcm: string[]) => Promise<ChangeMapsControl>
    /** Latency protection: writers wait while a connected Secondary is more than this many seconds behind (0: off). */
    maxLagS?: number
    /** This Primary's data generation (HELLO.gen). */
    generation: Generation
    /** The paths a record changes itself (src/sync/map.ts ownPathsOf), for SPLIT; absent: none listed. */
    ownPathsOf?: (rec: Record) => Array<[string, boolean]>
  }): Promise<RlinkSet> {
    const stored = new Map((await srl.store.entries(State.rlink)).map(([k, v]) => [LogStore.idOf(State.rlink, k), v]))
    const canDcm = cfg.sync !== undefined && cfg.maps !== undefined
    const srlprot = cfg.srlprot ?? (canDcm ? 'autodcm' : 'fail')
    if ((srlprot === 'autodcm' || srlprot === 'dcm') && !canDcm) throw new ReplError('USAGE', `--srlprot ${srlprot} needs the change map of full synchronization`)
    // Secondaries that dial this Primary (a failed-back host: `join:<name>`) are not configured by
    // --secondary: their RLINKs are made by a takeover (src/daemon/secondary.ts) and kept.
    const joins = [...stored.keys()].filter(isJoinName)
    const maps = canDcm ? await cfg.maps!([...cfg.secondaries, ...joins].filter((a) => stored.get(a)?.dcm === true)) : undefined
    const set: RlinkSet = new RlinkSet(srl, cfg.mode, [], srlprot, maps, cfg.log, cfg.maxLagS ?? 0)
    // An SRL of state format 3 or older was created over an empty data directory (it had to be).
    const baseline = (await srl.store.get(State.baseline)) ?? 'empty'
    const ctx: Context = { srl, rds: cfg.rds, secret: cfg.secret ?? Buffer.alloc(0), tls: cfg.tls ?? null, compress: cfg.compress === true, bandwidthLimit: cfg.bandwidthLimit ?? null, log: cfg.log, clock: set.clock, changed: () => set.changed(), fatal: (err) => set.onFatal?.(err), baseline, sync: cfg.sync, dcm: maps, generation: cfg.generation, takenOver: (by, at, peer, split) => set.onTakenOver?.(by, at, peer, split),
      changedAfter: cfg.ownPathsOf === undefined ? undefined : (address, at) => pathList(set.changedAfter(address, at, cfg.ownPathsOf!)) }
    for (const a of [...cfg.secondaries, ...joins]) {
      let rec = stored.get(a)
      if (rec === undefined || (rec.seq < srl.tailSeq && rec.dcm !== true)) {
        if (rec !== undefined) cfg.log(`RLINK to ${a}: its stored position ${rec.seq} is older than the SRL's tail ${srl.tailSeq}; it is synchronized by difference when it connects (STALE)`)
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

  /** The RLINK of a Secondary that dials this Primary as `name` (JOIN), or null. */
  joining (name: string): Rlink | null {
    return this.links.find((l) => l.address === JOIN_PREFIX + name) ?? null
  }

  find (address: string | undefined): Rlink[] {
    if (address === undefined) return this.links
    const l = this.links.find((x) => x.address === address)
    if (l === undefined) throw new ReplError('NOT_FOUND', `no RLINK to ${address} (this Primary replicates to ${this.links.map((x) => x.address).join(', ') || 'no Secondary'})`)
    return [l]
  }

  /** `replicafs set bandwidth-limit` (until the daemon stops); returns the RLINKs changed. */
  setBandwidthLimit (address: string | undefined, rate: number | null): string[] {
    const links = this.find(address)
    for (const l of links) {
      l.setBandwidthLimit(rate)
      this.log(`RLINK to ${l.address}: bandwidth limit ${rate === null ? 'none' : `${rate} bytes per second`} (replicafs set)`)
    }
    return links.map((l) => l.address)
  }

  async setPaused (address: string | undefined, paused: boolean): Promise<string[]> {
    const links = this.find(address)
    for (const l of links) {
      if (paused) l.pause(); else l.resume()
      await this.srl.store.put(State.rlink.key(l.address), stored(l))
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

  /** A peer that knows the secret says another host took over from this Primary's generation after record `at` (src/daemon). */
  onTakenOver?: (by: Generation, at: number, peer: string, split: SplitBrain | null) => void

  /** Before an append: synchronous=fail refuses updates while an RLINK is not connected. */
  admit (): void {
    if (this.mode !== 'fail') return
    for (const l of this.links) {
      if (!l.connected) throw new ReplError('NOT_CONNECTED', `RLINK to ${l.address} is ${l.state} and synchronous=fail`)
    }
  }

  /** After applying `seq`: waits as the synchronous mode says. */
  acked (seq: number): Promise<void> | null {
    const lagging = this.maxLagS > 0 && this.lagging() !== null
    if ((this.mode === 'off' || this.links.length === 0) && !lagging) return null
    // The pump runs on setImmediate; send now so the ack is not a turn late.
    this.pumpAll()
    const acks = this.mode === 'off' ? Promise.resolve() : Promise.all(this.links.map((l) => l.waitNetworkAck(seq))).then(() => {})
    return lagging ? acks.then(async () => await this.throttle()) : acks
  }

  /**
   * Latency protection (--max-lag, VVR's latencyprot in seconds): a connected Secondary that is
   * acking and more than maxLagS behind, or null. One that is down, paused, frozen or stalled
   * (not acking) does not hold writers (VVR's latencyprot=override): the SRL and srlprot take over.
   */
  private lagging (): Rlink | null {
    for (const l of this.links) if (this.live(l) && !l.dcm && l.lagSeconds > this.maxLagS) return l
    return null
  }

  /** Waits while a Secondary lags (re-checked at every ack, and every second). */
  private async throttle (): Promise<void> {
    const t0 = Date.now()
    let l = this.lagging()
    if (l === null) return
    this.throttledWrites++
    if (this.throttledBy === null) this.log(`RLINK to ${l.address} is ${l.lagSeconds.toFixed(1)} s behind (--max-lag ${this.maxLagS}): writers wait for it`)
    this.throttledBy = l
    while (l !== null) {
      await this.progressOrSecond()
      l = this.lagging()
    }
    this.throttledMs += Date.now() - t0
    if (this.throttledBy !== null) {
      this.log(`RLINK to ${this.throttledBy.address} is within --max-lag ${this.maxLagS} s again: writers go on`)
      this.throttledBy = null
    }
  }

  /** Latency protection, for status: the Secondary writers wait for now, or null. */
  get throttled (): string | null { return this.throttledBy?.address ?? null }

  /** The oldest position any RLINK still needs (records after it are retained), or null. */
  retainFrom (): Position | null {
    let min: Position | null = null
    for (const l of this.links) { const h = l.holdPos; if (min === null || h.seq < min.seq) min = h }
    return min
  }

  /** Whether a connected RLINK is acking: waiting for it frees SRL space. */
  private live (l: Rlink): boolean {
    // A connected Secondary that applies nothing (frozen by IBC, stalled) frees nothing.
    return l.connected && l.dackSeq < this.srl.lastSeq && Date.now() - l.lastDackAt < RLINK_DEAD_AFTER_MS
  }

  /**
   * The SRL is full and RLINKs hold its tail: applies --srlprot to each (the table above). Returns
   * once the caller may try again (a link left the SRL, or an ack came, or a second passed);
   * throws SRL_FULL where srlprot=fail refuses the write.
   */
  async overflow (): Promise<void> {
    const holders = this.links.filter((l) => l.holdPos.seq <= this.srl.tailSeq)
    let wait = false
    for (const l of holders) {
      const live = this.live(l)
      const p = this.srlprot
      if (l.dcm) { wait = true; continue } // a resynchronization's last records: acked soon
      if (p === 'autodcm' || (p === 'dcm' && !live)) { await this.toDcm(l, live ? 'connected but behind, srlprot=autodcm' : `${l.state}, srlprot=${p}`); continue }
      if (live && p !== 'off') { wait = true; continue }
      if (p === 'fail') throw new ReplError('SRL_FULL', `SRL is full (${this.srl.usedBytes} of ${this.srl.capacityBytes} bytes): ${this.describeLag()} (srlprot=fail)`)
      await this.detach(l, `${l.state}, srlprot=${p}`)
    }
    if (!wait) return
    await this.progressOrSecond()
  }

  /** Takes `l` off the SRL onto its change map: every record it has not data-acked is folded first. */
  private async toDcm (l: Rlink, why: string, repair = false): Promise<void> {
    // Only what the SRL holds durably: a crash may lose the rest, which must not be counted.
    const at = await this.maps!.fold(l.address, l.dackPos, this.srl.syncedSeq)
    await this.srl.store.put(State.rlink.key(l.address), { ...at, paused: l.paused, dcm: true })
    l.enterDcm(at, why, repair)
    this.changed()
  }

  /**
   * verify --repair: the paths a verify found different on the Secondary at `address` go to its
   * change map (durably, each compared chunk by chunk), and the RLINK leaves the SRL for the map,
   * as DCM does: the Secondary is resynchronized from it by difference (keeping a snapshot of
   * itself meanwhile), then ordered replication goes on. DRBD's online verify marks its
   * out-of-sync blocks the same way and resynchronizes them at the next connect.
   */
  async repair (address: string, paths: Map<string, boolean>): Promise<void> {
    const [l] = this.find(address)
    if (this.maps === undefined) throw new ReplError('USAGE', 'this Primary keeps no change maps')
    await this.maps.add(address, paths)
    if (!l.dcm) await this.toDcm(l, `verify --repair: ${paths.size} paths differ`, true)
  }

  /** srlprot override, off: the SRL overflows `l`; it is STALE from now on (synchronized by difference, every chunk compared, when it connects). */
  private async detach (l: Rlink, why: string): Promise<void> {
    const head = { seq: this.srl.lastSeq, offset: this.srl.headOffset }
    await this.srl.store.put(State.rlink.key(l.address), { ...head, paused: l.paused })
    l.detach(head)
    this.log(`RLINK to ${l.address}: the SRL overflowed (${why}): the RLINK is detached; its Secondary is STALE: when it connects it is synchronized by difference, every file's chunks compared`)
    this.changed()
  }

  /** Resolves at the next ack or state change. */
  progress (): Promise<void> {
    return new Promise((resolve) => this.progressWaiters.push(resolve))
  }

  /** The next ack or state change, or a second: bounded, since a Secondary may stop acking. */
  async progressOrSecond (): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.progress(), new Promise<void>((resolve) => { timer = setTimeout(resolve, 1000) })])
    clearTimeout(timer)
  }

  private changed (): void {
    let min = Infinity
    for (const l of this.links) min = Math.min(min, l.dackSeq)
    if (min !== Infinity) this.clock.trim(min)
    const w = this.progressWaiters.splice(0)
    for (const f of w) f()
  }

  /**
   * Before a release: the records up to `upto` that RLINKs in DCM mode have not had are folded
   * into their maps (durably), and their positions move past them, so that retainFrom() no longer
   * holds them.
   */
  async foldMaps (upto: number): Promise<void> {
    for (const l of this.links) {
      if (l.dcmPos === null || l.dcmPos.seq >= upto) continue
      l.dcmPos = await this.maps!.fold(l.address, l.dcmPos, upto)
      await this.srl.store.put(State.rlink.key(l.address), stored(l))
    }
  }

  /**
   * The paths this Primary changed after record `at` that the RLINK to `address` never had (a
   * failback: what the host that took over from it lacks): its change map, if it has one, and the
   * SRL's records after `at` (`pathsOf`: src/sync/map.ts). Null when the SRL no longer holds them all and no map does.
   */
  changedAfter (address: string, at: number, pathsOf: (rec: Record) => Array<[string, boolean]>): Map<string, boolean> | null {
    const out = new Map<string, boolean>()
    const l = this.links.find((x) => x.address === address)
    const add = (p: string, tree: boolean): void => { out.set(p, tree || out.get(p) === true) }
    let from: Position
    if (l !== undefined && l.dcmPos !== null && this.maps !== undefined) {
      for (const [p, m] of this.maps.marks(l.address, l.dcmPos)) add(p, m.tree)
      return out
    }
    if (l !== undefined && l.dackPos.seq <= at && l.dackPos.seq >= this.srl.tailSeq) from = l.dackPos
    else if (this.srl.tailSeq <= at) from = this.srl.tailPosition
    else return null
    for (const r of this.srl.recordsAfter(from)) {
      if (r.record.seq <= at) continue
      for (const [p, tree] of pathsOf(r.record)) add(p, tree)
    }
    return out
  }

  /** Persists every link's position (before the SRL releases anything). */
  async persist (): Promise<void> {
    for (const l of this.links) await this.srl.store.put(State.rlink.key(l.address), stored(l))
  }

  status (): RlinkStatus[] {
    return this.links.map((l) => l.status())
  }

  /** Which Secondaries hold the SRL's tail, for the SRL-full error. */
  describeLag (): string {
    const tail = this.srl.tailSeq
    const holders = this.links.filter((l) => l.holdPos.seq <= tail).map((l) => `${l.address} (${l.state}, data-acked ${l.dackSeq})`)
    return `it keeps the updates not yet data-acked by ${holders.join(', ') || 'a Secondary'}`
  }

  close (): void {
    for (const l of this.links) l.close()
    const w = this.progressWaiters.splice(0)
    for (const f of w) f()
  }
}

