/**
 * One RLINK, the Primary's end of the link to one Secondary (src/rlink/sender.ts holds them all).
 *
 * An Rlink connects (and reconnects, with backoff), runs the handshake, then sends the SRL's
 * records in order from where the Secondary asked to resume, as their own bytes, in batches of at
 * most RLINK_BATCH_BYTES_MAX, with up to RLINK_WINDOW_UPDATES / RLINK_WINDOW_BYTES sent but not
 * network-acked (the pipeline). ACK frames move the network-acked and data-acked positions; the
 * data-acked position is what the SRL keeps records for.
 */
import { MsgType, PROTOCOL_VERSION, nonce, proof, proofOk, type Challenge, type Message, type TaskResult, type SyncSums, type VerifyEntries } from '../format/wire'
import { RECORD_FORMAT_VERSION, RecordType } from '../format/record'
import { FramedSocket, parseAddress, type Address } from './common'
import { dial, type RlinkTls } from './tls'
import { RateLimiter } from './rate'
import type { Srl } from '../srl'
import { State, type Baseline, type Position, type RlinkPosition, type ChangeMark, type Generation } from '../format/state'
import { syncKind } from '../format/sync-kind'
import { checkGeneration, takenOverAt, splitBrain, checkPathList, type SplitBrain } from '../format/generation'
import { ReplError } from '../errors'
import {
  RLINK_BATCH_BYTES_MAX, RLINK_WINDOW_BYTES, RLINK_WINDOW_UPDATES, RLINK_PING_INTERVAL_MS, RLINK_DEAD_AFTER_MS,
  RLINK_HANDSHAKE_TIMEOUT_MS, RLINK_RECONNECT_MIN_MS, RLINK_RECONNECT_MAX_MS, SYNC_WINDOW_FRAMES
} from '../limits'

export type SynchronousMode = 'off' | 'override' | 'fail'
export type RlinkState = 'connecting' | 'connected' | 'disconnected' | 'paused'

export interface RlinkStatus {
  secondary: string
  state: RlinkState
  sentSeq: number
  networkAckedSeq: number
  dataAckedSeq: number
  lagUpdates: number
  lagBytes: number
  lagSeconds: number
  lastError: string | null
  /** False while a full synchronization runs (the Secondary's tree is a mix until it ends). */
  consistent: boolean
  /** The full synchronization running, if any. */
  sync: SyncStatus | null
  /**
   * SRL overflow protection took this RLINK off the SRL (srlprot dcm, autodcm): its changes are in
   * its change map (`dcmPaths` paths) until it is resynchronized from it; null: not in DCM mode.
   */
  dcm: { paths: number, since: string } | null
  /** The last synchronization this RLINK completed since the daemon started (its figures then), or null. */
  lastSync: SyncStatus | null
  /** The host this Primary took over from came back and was told so: the paths both changed since (`conflicts` 0: none), until it is failed back. */
  splitBrain: SplitBrain | null
  /** The connection's transport: TLS or not, compression agreed, and the bytes it wrote (`raw`: before compression). */
  transport: { tls: boolean, compress: 'zstd' | 'off', bytesOut: number, bytesRaw: number } | null
  /** --bandwidth-limit in bytes per second, or null: none. */
  bandwidthLimit: number | null
}

export interface Context {
  srl: Srl
  rds: string
  secret: Buffer
  /** TLS on the RLINK (src/rlink/tls.ts), or null: plain TCP. */
  tls: RlinkTls | null
  /** Offer zstd for bulk frames (--compress zstd). */
  compress: boolean
  /** --bandwidth-limit, bytes per second, or null: none. */
  bandwidthLimit: number | null
  log: (line: string) => void
  clock: AppendClock
  changed: () => void
  /** A damaged SRL record: the daemon stops (src/daemon/). */
  fatal: (err: Error) => void
  /** Whether the data directory held a tree no record describes when the SRL was created. */
  baseline: Baseline
  /** Starts a full synchronization of the Secondary at `address` (src/sync/source.ts); absent: none. */
  sync?: (address: string, mode: SyncMode) => SyncSession
  /** The change maps of RLINKs in DCM mode (src/sync/map.ts ChangeMaps); absent: none. */
  dcm?: ChangeMapsView
  /** This Primary's data generation, sent in HELLO. */
  generation: Generation
  /** A peer that proved it knows the secret took over from this generation after record `at` (`split`: what both sides changed since, if it said). */
  takenOver: (by: Generation, at: number, peer: string, split: SplitBrain | null) => void
  /** The paths this Primary changed after record `at` that the Secondary at `address` never had (SPLIT), or null: too many, or unknown. */
  changedAfter?: (address: string, at: number) => Array<[string, boolean]> | null
}

/** What an RLINK needs of the change maps (src/sync/map.ts ChangeMaps). */
export interface ChangeMapsView {
  size (address: string): number
  marks (address: string, since: Position): Map<string, ChangeMark>
  /** Whether its resynchronization compares every chunk (paths from verify --repair). */
  compareAll (address: string): boolean
  clear (address: string): Promise<void>
}

/** How a Secondary is synchronized (src/sync/source.ts SyncMode). */
export interface SyncMode { diff: boolean, checksum: boolean, from?: Map<string, ChangeMark> }

/** A full synchronization of one Secondary, as the RLINK drives it (src/sync/source.ts). */
export interface SyncSession {
  readonly id: string
  /** The next SYNC_* frame, or null: nothing to send now, or complete. */
  next (): Message | null
  /** The Secondary's SYNC_SUMS (throws PROTOCOL on a malformed one). */
  want (m: SyncSums): void
  /** Everything sent: the Secondary has the tree after every record applied so far. */
  readonly complete: boolean
  /** While set, next() sends nothing (changes are still marked): the synchronization is cut, to end if its frames need no answer. */
  held: boolean
  /** SYNC_SUMS received and not yet answered: a file still to send. */
  readonly answering: boolean
  readonly progress: SyncStatus
  /** Set by the RLINK: called when next() has something again that it had to wait for (not a record, not an ack). */
  wake: (() => void) | null
  close (): void
}

export interface SyncStatus {
  id: string, phase: string, mode: string, entries: number, bytes: number, marked: number, differing: number
  startedAt: string, walked: number, totalEntries: number | null, totalBytes: number | null, rateBytes: number, rateEntries: number, etaSeconds: number | null
}

export { syncKind }

/** 'full synchronization ID' or 'synchronization by difference ID', for logs. */
function syncName (s: SyncSession): string {
  return `${syncKind(s.progress.mode)} ${s.id}`
}

/** What a synchronization sent so far, for logs. */
function syncFigures (s: SyncSession): string {
  const p = s.progress
  return `${p.entries} entries, ${p.bytes} bytes${p.mode !== 'full' ? `, ${p.differing} files differed` : ''}`
}

/** The RLINK of a Secondary that dials this Primary (JOIN `name`): its address, and its key in LevelDB. */
export const JOIN_PREFIX = 'join:'
export function isJoinName (address: string): boolean { return address.startsWith(JOIN_PREFIX) }

/** Stored per RLINK in LevelDB. */
export type RlinkRecord = RlinkPosition

/** When records were appended, sampled, for lag in seconds. */
export class AppendClock {
  private readonly samples: Array<[number, number]> = []
  private readonly since = Date.now()

  note (seq: number): void {
    const now = Date.now()
    const last = this.samples[this.samples.length - 1]
    if (last === undefined || now - last[1] >= 20) this.samples.push([seq, now])
  }

  /** A lower bound of when record `seq` was appended (within ~20 ms). */
  appendedAt (seq: number): number {
    let t = this.since
    for (const [s, at] of this.samples) { if (s <= seq) t = at; else break }
    return t
  }

  /** Forgets samples no longer needed once every link has data-acked `seq`. */
  trim (seq: number): void {
    while (this.samples.length > 1 && this.samples[1][0] <= seq + 1) this.samples.shift()
  }
}

/** An online verify over this RLINK (src/sync/verify.ts VerifySession). */
export interface VerifyOver {
  readonly id: string
  entries (m: VerifyEntries): void
  lost (why: string): void
}

interface Waiter { seq: number, resolve: () => void, reject: (err: Error) => void }
interface TaskWaiter { resolve: (r: TaskResult) => void, reject: (err: Error) => void }

export class Rlink {
  state: RlinkState = 'connecting'
  lastError: string | null = null
  sentSeq = 0
  nackSeq = 0
  dackSeq: number
  /** The position after the last data-acked record we know the offset of (what the SRL retains from). */
  dackPos: Position
  private sendPos: Position = { seq: 0, offset: 0 }
  /** Sent batches not yet data-acked: their last record and the offset after it. */
  private batches: Array<{ seq: number, end: number, bytes: number }> = []
  private conn: FramedSocket | null = null
  private draining = false
  /** --bandwidth-limit (src/rlink/rate.ts), or null. */
  private limiter: RateLimiter | null = null
  private waiters: Waiter[] = []
  private tasks = new Map<number, TaskWaiter>()
  private nextTaskId = 1
  private reconnectTimer: NodeJS.Timeout | null = null
  private heartbeat: NodeJS.Timeout | null = null
  private backoff = RLINK_RECONNECT_MIN_MS
  private closed = false
  /** The peer took over from this Primary's generation: no more connecting (until failback). */
  private takenOver = false
  /** The full synchronization running over this connection, and its frames sent and applied. */
  private syncing: SyncSession | null = null
  private syncSent = 0
  private syncAcked = 0
  /**
   * Where the synchronization ends if its last frames need no answer: every record up to `seq` is
   * in the frames sent up to frame `frames`, and this RLINK's positions stay there (records after
   * it are kept in the SRL, to go as UPDATES after SYNC_DONE).
   */
  private syncCut: { seq: number, frames: number } | null = null
  /** SYNC_DONE sent with this sequence number, and not yet acked by the Secondary (it is applying the last frames). */
  private syncDoneAt: number | null = null
  /** The online verify running over this connection, if any. */
  verifying: VerifyOver | null = null
  /** The last synchronization completed (status). */
  private lastSync: SyncStatus | null = null
  /** The host this Primary took over from, back and told so: what both changed since (status; its failback clears it). */
  splitBrain: SplitBrain | null = null

  /** When the data-acked / network-acked positions last moved (or the link came up). */
  lastDackAt = 0
  private lastNackAt = 0
  /** Where this Primary dials its Secondary; null: the Secondary dials (`join:<name>`, offer()). */
  readonly addr: Address | null

  constructor (readonly address: string, stored: RlinkRecord, private readonly ctx: Context) {
    this.addr = isJoinName(address) ? null : parseAddress(address, 'secondary')
    this.dackSeq = stored.seq
    this.dackPos = { seq: stored.seq, offset: stored.offset }
    if (stored.paused) this.state = 'paused'
    if (stored.dcm === true) { this.dcmPos = { seq: stored.seq, offset: stored.offset }; this.dcmSince = 'before this start' }
    if (ctx.bandwidthLimit !== null) this.limiter = new RateLimiter(ctx.bandwidthLimit)
  }

  /**
   * In DCM mode (SRL overflow protection, src/rlink/sender.ts overflow): how far the SRL's records
   * are folded into this RLINK's change map (records after it are still needed), else null.
   */
  dcmPos: Position | null = null
  private dcmSince = ''

  get dcm (): boolean { return this.dcmPos !== null }

  /**
   * Where the SRL must keep records from for this RLINK: what it data-acked; in DCM mode what is
   * not yet folded into its map (and, once its resynchronization sent SYNC_DONE, what follows it).
   */
  get holdPos (): Position {
    if (this.dcmPos === null) return this.dackPos
    if (this.syncDoneAt !== null && this.dackPos.seq < this.dcmPos.seq) return this.dackPos
    return this.dcmPos
  }

  /**
   * SRL overflow protection: this RLINK leaves the SRL for its change map, which now holds every
   * record up to `at`; ordered replication ends (the link is dropped if up) until it is
   * resynchronized from the map at the next handshake.
   */
  enterDcm (at: Position, why: string, repair = false): void {
    this.dcmPos = at
    this.dcmSince = new Date().toISOString()
    this.batches = []
    this.followHead()
    this.wakeWaiters()
    this.ctx.log(repair
      ? `RLINK to ${this.address}: ${why}: they go to its change map, and the Secondary is resynchronized from it by difference (every chunk compared), then ordered replication goes on`
      : `RLINK to ${this.address}: the SRL would overflow (${why}): its changes go to its change map (DCM) instead; it is resynchronized from the map when it connects`)
    if (this.conn !== null) this.conn.end(repair ? 'verify --repair: resynchronizing what differs' : 'the SRL overflowed: resynchronizing from the change map')
  }

  start (): void {
    if (this.state !== 'paused') this.connect()
  }

  get paused (): boolean { return this.state === 'paused' }
  get connected (): boolean { return this.state === 'connected' }

  private connect (): void {
    if (this.closed || this.state === 'paused') return
    if (this.addr === null) {
      // A Secondary that dials (a failed-back host): the listener hands its connection over (offer).
      this.state = 'disconnected'
      this.lastError ??= 'waiting for the Secondary to connect: it dials this Primary\'s listener'
      this.ctx.changed()
      return
    }
    this.state = 'connecting'
    const sock = dial(this.addr, this.ctx.tls, () => this.hello(conn))
    const conn = this.attach((onMessage, onEnd) => new FramedSocket(sock, onMessage, onEnd))
  }

  /**
   * A dialling Secondary's connection (JOIN `name` of this RLINK, `join:<name>`), from this
   * Primary's listener (src/rlink/gate.ts): the handshake runs over it as over one this Primary
   * dialled. A newer connection replaces one still in its handshake, never a connected one.
   */
  offer (conn: FramedSocket): void {
    if (this.closed) { conn.end('the Primary is stopping'); return }
    if (this.state === 'paused') { conn.refuse('PROTOCOL', 'replication paused by the administrator on the Primary'); return }
    // An authenticated connection stays: a JOIN is not authenticated yet, so it must not be able
    // to push out the live one (a dead one is dropped by the heartbeat within RLINK_DEAD_AFTER_MS).
    if (this.conn !== null && this.state === 'connected') { conn.refuse('BUSY', `the Secondary ${this.address} is connected already`); return }
    if (this.conn !== null) this.conn.end(`replaced by a new connection from ${conn.peer}`)
    if (this.reconnectTimer) { clearTimeout(this.reconnectTimer); this.reconnectTimer = null }
    this.state = 'connecting'
    const c = this.attach((onMessage, onEnd) => { conn.rebind(onMessage, onEnd); return conn })
    this.hello(c)
  }

  private hello (conn: FramedSocket): void {
    conn.send({ t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: this.ctx.rds, srlId: this.ctx.srl.srlId, nonce: this.ourNonce, rf: RECORD_FORMAT_VERSION, gen: this.ctx.generation, ...(this.ctx.compress ? { z: ['zstd'] } : {}) })
  }

  /** This connection's nonce (HELLO), made by attach(). */
  private ourNonce: Buffer = Buffer.alloc(0)

  /** Runs the handshake, then replication, over the connection `make` returns with our handlers. */
  private attach (make: (onMessage: (m: Message) => void, onEnd: (reason: string) => void) => FramedSocket): FramedSocket {
    const ourNonce = this.ourNonce = nonce()
    let phase: 'hello' | 'auth' | 'ready' = 'hello'
    let challenge: Challenge | null = null
    let split: SplitBrain | null = null
    const handshakeTimer = setTimeout(() => conn.end(`no handshake from the Secondary within ${RLINK_HANDSHAKE_TIMEOUT_MS / 1000} s`), RLINK_HANDSHAKE_TIMEOUT_MS)
    handshakeTimer.unref()
    const conn: FramedSocket = make((m: Message) => {
      if (m.t === MsgType.REFUSE) {
        clearTimeout(handshakeTimer)
        // Believed only from a peer whose proof we checked (its CHALLENGE), and only if it names
        // a generation that continues ours.
        const by = m.code === 'TAKEN_OVER' && phase === 'auth' ? checkGeneration(m.gen) : null
        const at = by === null ? null : takenOverAt(by, this.ctx.generation)
        if (by !== null && at !== null) {
          this.takenOver = true
          conn.end(`refused: ${String(m.message)}`)
          this.ctx.takenOver(by, at, this.address, split !== null && split.at === at ? split : null)
          return
        }
        conn.end(`refused by the Secondary: ${String(m.message)}`)
        return
      }
      if (phase === 'hello') {
        if (m.t !== MsgType.CHALLENGE) { conn.refuse('PROTOCOL', `expected CHALLENGE, got message type ${m.t}`); return }
        const why = this.checkPeer(m, ourNonce, conn.binding)
        if (why !== null) { clearTimeout(handshakeTimer); conn.refuse(why[0], why[1]); return }
        challenge = m
        conn.send({ t: MsgType.AUTH, proof: proof(this.ctx.secret, 'primary', m.nonce, ourNonce, this.ctx.rds, conn.binding) })
        phase = 'auth'
      } else if (phase === 'auth' && m.t === MsgType.SPLIT) {
        // The peer took over from this generation and is about to say so (TAKEN_OVER): first
        // what each side changed since, so that both can list a split-brain's conflicts.
        const by = checkGeneration(m.gen)
        const at = by === null ? null : takenOverAt(by, this.ctx.generation)
        const theirs = checkPathList(m.paths)
        if (by === null || at === null || at !== m.at || theirs === undefined) { clearTimeout(handshakeTimer); conn.refuse('PROTOCOL', 'malformed SPLIT'); return }
        const mine = this.ctx.changedAfter?.(this.address, at) ?? null
        split = splitBrain(at, mine, theirs, this.address)
        conn.send({ t: MsgType.SPLIT, paths: mine })
      } else if (phase === 'auth') {
        if (m.t !== MsgType.READY) { conn.refuse('PROTOCOL', `expected READY, got message type ${m.t}`); return }
        clearTimeout(handshakeTimer)
        // Whether this SRL can continue the Secondary's log is checked only now, after the
        // Secondary has accepted our identity: one that follows another Primary says so
        // (PRIMARY) rather than being told its history diverged from a Primary it never followed.
        const why = this.checkPosition(challenge!)
        if (why !== null) { conn.refuse(why[0], why[1]); return }
        phase = 'ready'
        this.state = 'connected'
        conn.compressing = this.ctx.compress && challenge!.z === 'zstd'
        conn.limiter = this.limiter
        this.lastDackAt = this.lastNackAt = Date.now()
        this.backoff = RLINK_RECONNECT_MIN_MS
        this.ctx.log(this.syncing !== null
          ? `RLINK to ${this.address} connected; ${syncName(this.syncing)} of the Secondary's data directory begins (${challenge!.failback != null ? 'it was failed back: the paths either side changed since the takeover, every chunk compared' : 'the SRL cannot bring it up to date'})`
          : `RLINK to ${this.address} connected; sending from sequence number ${this.sentSeq + 1}`)
        this.heartbeat = setInterval(() => this.tick(), RLINK_PING_INTERVAL_MS / 2)
        this.heartbeat.unref()
        this.ctx.changed()
        this.pump()
      } else {
        this.onMessage(m)
      }
    }, (reason) => {
      clearTimeout(handshakeTimer)
      this.lost(conn, reason)
    })
    this.conn = conn
    conn.onDrain = () => { if (this.conn === conn) { this.draining = false; this.pump() } }
    return conn
  }

  /** Null if the Secondary's CHALLENGE shows a peer of this RDS that knows the secret, else why not. */
  private checkPeer (m: Challenge, ourNonce: Buffer, binding: Buffer): [ 'VERSION' | 'RDS' | 'AUTH' | 'PROTOCOL', string ] | null {
    if (m.v !== PROTOCOL_VERSION) return ['VERSION', `the Secondary speaks RLINK protocol version ${String(m.v)}; this Primary speaks version ${PROTOCOL_VERSION}`]
    if (m.rds !== this.ctx.rds) return ['RDS', `the Secondary's RDS name "${String(m.rds)}" does not match this Primary's "${this.ctx.rds}"`]
    if (!proofOk(m.proof, proof(this.ctx.secret, 'secondary', ourNonce, m.nonce, this.ctx.rds, binding))) {
      return ['AUTH', 'authentication failed: the Secondary does not know the shared secret (check --secret-file on both hosts)']
    }
    if (!Number.isSafeInteger(m.next) || m.next < 1 || !Number.isSafeInteger(m.applied)) return ['PROTOCOL', 'malformed CHALLENGE']
    return null
  }

  /** Null if this SRL continues the Secondary's log as the CHALLENGE describes it (and sets where to send from), else why not. */
  private checkPosition (m: Challenge): [ 'DIVERGED' | 'STALE' | 'NOT_EMPTY' | 'PROTOCOL', string ] | null {
    const srl = this.ctx.srl
    if (m.failback != null) { this.splitBrain = null; return this.failback(m.failback, m.empty) }
    // In DCM mode a Secondary that has its data gets the paths of the map (and what changes
    // meanwhile), by difference; a new or emptied one goes on below (the map covers the tree it
    // had, not an empty one) and the map is dropped when that synchronization is done.
    if (this.dcm && this.ctx.sync !== undefined && this.ctx.dcm !== undefined && !m.fresh && !m.empty) {
      this.startSync({ diff: true, checksum: m.adopt === true || this.ctx.dcm.compareAll(this.address), from: this.ctx.dcm.marks(this.address, this.dcmPos!) })
      return null
    }
    // A Secondary that has never held a record: from record 1 if this SRL has every record since
    // an empty data directory (and the Secondary's is empty); else (a baseline tree, records
    // released, data there) a full synchronization: into an empty data directory in full, onto
    // data only if the Secondary says so (--sync-existing), by difference, comparing every file.
    // One begun and not finished goes on by difference (what it sent is kept).
    if (m.syncing !== null || (m.fresh && (srl.tailSeq > 0 || this.ctx.baseline === 'data' || !m.empty))) {
      if (m.syncing === null && !m.empty && m.adopt !== true) return ['NOT_EMPTY', 'the Secondary\'s data directory is not empty and has never replicated from this Primary: empty it, or start the Secondary with --sync-existing to have its data made this Primary\'s by difference']
      if (this.ctx.sync === undefined) return ['STALE', `the Secondary needs records from sequence number ${m.next} but this Primary's SRL starts at ${srl.tailSeq + 1}: it needs a full synchronization (STALE)`]
      this.startSync({ diff: m.syncing !== null || !m.empty, checksum: m.adopt === true })
      return null
    }
    const last = m.next - 1
    if (last > srl.lastSeq) return ['DIVERGED', `the Secondary has records up to sequence number ${last} but this Primary's SRL ends at ${srl.lastSeq}: their histories differ (DIVERGED: a full synchronization is needed)`]
    if (last < srl.tailSeq) {
      const why = `the Secondary needs records from sequence number ${m.next} but this Primary's SRL starts at ${srl.tailSeq + 1}`
      if (this.ctx.sync === undefined) return ['STALE', `${why}: it needs a full synchronization (STALE)`]
      // Its data is this Primary's tree after record `last` (a prefix of this SRL's history: the
      // Secondary follows this SRL, and records go out only once durable here), but the records
      // after it are gone: synchronized by difference, every file's chunks compared (what it has
      // is trusted no further than that), while it keeps a snapshot of itself.
      this.ctx.log(`RLINK to ${this.address}: ${why} (STALE): it is synchronized by difference instead, every file's chunks compared`)
      this.startSync({ diff: true, checksum: true })
      return null
    }
    const from = this.dackPos.seq <= last && this.dackPos.seq >= srl.tailSeq ? this.dackPos : srl.tailPosition
    const nextOffset = srl.positionOf(m.next, from)
    if (m.last !== null && m.last.seq === last && last > srl.tailSeq) {
      const at = srl.positionOf(last, from.seq < last ? from : srl.tailPosition)
      if (srl.crcOf(last, at) !== m.last.crc) return ['DIVERGED', `the Secondary's record ${last} differs from this Primary's: their histories differ (DIVERGED: a full synchronization is needed)`]
    } else if (m.last !== null && m.last.seq === last && last === srl.lastSeq && srl.lastRecord() !== null && srl.lastRecord()!.crc !== m.last.crc) {
      return ['DIVERGED', `the Secondary's record ${last} differs from this Primary's: their histories differ (DIVERGED: a full synchronization is needed)`]
    }
    this.sendPos = { seq: last, offset: nextOffset }
    this.sentSeq = last
    this.nackSeq = last
    this.batches = []
    // What the Secondary has applied it reports itself; records before our tail are gone anyway.
    if (m.applied >= srl.tailSeq && m.applied <= last) {
      const base = this.dackPos.seq <= m.applied && this.dackPos.seq >= srl.tailSeq ? this.dackPos : srl.tailPosition
      this.dackPos = { seq: m.applied, offset: srl.positionOf(m.applied + 1, base) }
      this.dackSeq = m.applied
    } else {
      this.dackSeq = Math.max(this.dackSeq, Math.min(m.applied, last))
    }
    return null
  }

  /**
   * A failed-back Secondary (CHALLENGE.failback: it was the Primary of generation `gen`, taken over
   * after record `at`, and changed `paths` since): resynchronized by difference, every chunk
   * compared, of the paths either side changed since the takeover (this RLINK's change map, kept
   * in DCM mode since the takeover, and its `paths`); of every path if it could not list them, or
   * this RLINK keeps no map for it, or its data directory is empty.
   */
  private failback (claim: unknown, empty: boolean): [ 'PROTOCOL', string ] | null {
    const c = claim as { gen?: unknown, at?: unknown, paths?: unknown }
    const paths = checkPathList(c.paths)
    if (typeof c.gen !== 'string' || !Number.isSafeInteger(c.at) || paths === undefined) return ['PROTOCOL', 'malformed CHALLENGE (failback)']
    if (this.ctx.sync === undefined) return ['PROTOCOL', 'this Primary cannot synchronize a Secondary']
    const dcm = this.ctx.dcm
    const at = c.at as number
    const srl = this.ctx.srl
    // What this Primary changed since: its change map (kept since the takeover), else the SRL's
    // records after `at` if it still holds them all (a migrate whose answer was lost).
    const since: Position | null = this.dcm ? this.dcmPos : srl.tailSeq <= at && at <= srl.lastSeq ? { seq: at, offset: srl.positionOf(at + 1, srl.tailPosition) } : null
    if (paths === null || empty || since === null || dcm === undefined) {
      this.ctx.log(`RLINK to ${this.address}: a failed-back Secondary (generation ${c.gen.slice(0, 8)}) ${paths === null ? 'changed too many paths to list' : empty ? 'has an empty data directory' : 'has no change map here'}: it is synchronized by difference, every file's chunks compared`)
      this.startSync({ diff: true, checksum: true })
      return null
    }
    const from = dcm.marks(this.address, since)
    const ours = from.size
    for (const [p, tree] of paths) from.set(p, { tree: tree || from.get(p)?.tree === true, parts: null })
    this.ctx.log(`RLINK to ${this.address}: the failed-back Secondary changed ${paths.length} paths after sequence number ${at}, this Primary ${ours} since: those are resynchronized by difference, every chunk compared`)
    this.startSync({ diff: true, checksum: true, from })
    return null
  }

  /** Begins a full synchronization: the Secondary gets the tree, then records after it. */
  private startSync (mode: SyncMode): void {
    this.syncing?.close()
    this.syncing = this.ctx.sync!(this.address, mode)
    this.syncing.wake = () => this.pump()
    this.syncSent = this.syncAcked = 0
    this.syncCut = null
    this.syncDoneAt = null
    this.batches = []
    this.followHead()
  }

  /** While a synchronization runs the link holds nothing in the SRL and no writer waits for it. */
  private followHead (): void {
    const srl = this.ctx.srl
    this.sendPos = { seq: srl.lastSeq, offset: srl.headOffset }
    this.sentSeq = this.nackSeq = this.dackSeq = srl.lastSeq
    this.dackPos = { ...this.sendPos }
  }

  /**
   * Sends SYNC_* frames while the window allows; at the end, SYNC_DONE and ordered replication.
   *
   * The end is a cut, so that writes going on all the time cannot keep a synchronization from
   * ending: the first time everything is sent (walk over, map empty), the tree sent is the one
   * after the newest record, `seq`. The source then holds (changes after `seq` are still marked,
   * not sent) and the RLINK stops following the SRL's head, so records after `seq` stay in the
   * SRL. Once every frame up to the cut is applied with no SYNC_SUMS among the answers, and `seq`
   * is durable, SYNC_DONE {seq} goes and those records follow as UPDATES; the marks made meanwhile
   * are dropped (the records carry those changes). A SYNC_SUMS among the answers (a file the
   * Secondary lacks, asked for whole) calls the cut off: the file and the marks go as before.
   */
  private pumpSync (c: FramedSocket, s: SyncSession): void {
    const srl = this.ctx.srl
    if (this.syncCut === null) this.followHead()
    else this.nackSeq = Math.max(this.nackSeq, srl.lastSeq) // held: no writer waits for this RLINK, as during the synchronization
    this.wakeWaiters()
    while (this.syncCut === null && !this.draining && this.syncSent - this.syncAcked < SYNC_WINDOW_FRAMES) {
      let m: Message | null
      try {
        m = s.next()
      } catch (err) {
        // The data directory refused a read (EIO, EACCES): not this Primary's end. The link ends,
        // and the synchronization begins again when it is back.
        c.end(`full synchronization ${s.id} cannot read the data directory: ${(err as Error).message}`)
        return
      }
      if (m === null) break
      this.syncSent++
      if (!c.send(m)) this.draining = true
    }
    if (this.syncCut === null) {
      if (!s.complete) return
      // followHead() above, and nothing appended since: the positions are those after lastSeq.
      this.syncCut = { seq: srl.lastSeq, frames: this.syncSent }
      s.held = true
    }
    const cut = this.syncCut
    // Every frame up to the cut applied: their SYNC_SUMS, if any, came before that SYNC_ACK.
    if (this.syncAcked < cut.frames) return
    if (s.answering) {
      this.syncCut = null
      s.held = false
      this.pumpSync(c, s)
      return
    }
    // That record must be durable here first (a Secondary never holds what a power cut can take
    // from the Primary). An append starts the fdatasync; its end pumps again.
    if (srl.syncedSeq < cut.seq) { srl.sync().catch((err: Error) => this.ctx.fatal(err)); return }
    const seq = cut.seq
    this.syncCut = null
    c.send({ t: MsgType.SYNC_DONE, seq })
    this.ctx.log(`RLINK to ${this.address}: ${syncName(s)} sent (${syncFigures(s)}); the Secondary has the tree after sequence number ${seq}, ordered replication follows`)
    this.lastSync = { ...s.progress }
    s.close()
    this.syncing = null
    // Acked only when the Secondary says so (it applies the frames before SYNC_DONE first).
    this.nackSeq = this.dackSeq = Math.max(0, seq - 1)
    this.syncDoneAt = seq
    this.ctx.changed()
  }

  /** srlprot override, off: the SRL stops keeping records for this RLINK (its Secondary is STALE once they are released). */
  detach (head: Position): void {
    this.dackPos = { ...head }
    this.batches = []
    this.wakeWaiters()
    if (this.conn !== null) this.conn.end('the SRL overflowed: this Secondary is detached (STALE) and will be synchronized by difference')
  }

  /** Resynchronized from the change map: back on the SRL, the map dropped (the position first). */
  private leaveDcm (): void {
    this.dcmPos = null
    const srl = this.ctx.srl
    srl.store.put(State.rlink.key(this.address), { ...this.dackPos, paused: this.paused })
      .then(async () => await this.ctx.dcm?.clear(this.address))
      .then(() => this.ctx.log(`RLINK to ${this.address}: resynchronized from its change map; back on the SRL`), (err: Error) => this.ctx.fatal(err))
  }

  private onMessage (m: Message): void {
    switch (m.t) {
      case MsgType.SYNC_ACK:
        if (typeof m.n === 'number' && m.n > this.syncAcked) this.syncAcked = m.n
        this.pump()
        return
      case MsgType.SYNC_SUMS:
        if (this.syncing === null) return // a synchronization that ended meanwhile (the link went)
        try { this.syncing.want(m) } catch (err) { this.conn?.end(`the Secondary sent ${(err as Error).message}`); return }
        this.pump()
        return
      case MsgType.ACK: {
        // (A string or NaN would poison the positions the SRL's release is computed from.)
        if (!Number.isSafeInteger(m.n) || !Number.isSafeInteger(m.d)) { this.conn?.refuse('PROTOCOL', 'malformed ACK (n and d must be sequence numbers)'); return }
        if (this.syncDoneAt !== null && m.d >= this.syncDoneAt) {
          this.syncDoneAt = null
          if (this.dcm) this.leaveDcm()
        }
        if (m.n > this.nackSeq) { this.nackSeq = Math.min(m.n, this.sentSeq); this.lastNackAt = Date.now() }
        if (m.d > this.dackSeq) {
          this.dackSeq = Math.min(m.d, this.nackSeq)
          this.lastDackAt = Date.now()
          while (this.batches.length > 0 && this.batches[0].seq <= this.dackSeq) {
            const b = this.batches.shift()!
            this.dackPos = { seq: b.seq, offset: b.end }
          }
          // Records logged there before this connection belong to no batch: walk to the position.
          if (this.dackSeq > this.dackPos.seq && (this.batches.length === 0 || this.batches[0].seq > this.dackSeq)) {
            const before = this.batches.length > 0 ? null : this.sendPos
            this.dackPos = before !== null && before.seq === this.dackSeq ? { ...before } : { seq: this.dackSeq, offset: this.ctx.srl.positionOf(this.dackSeq + 1, this.dackPos) }
          }
        }
        this.wakeWaiters()
        this.ctx.changed()
        this.pump()
        return
      }
      case MsgType.RESEND: {
        const from = m.from
        if (!Number.isSafeInteger(from) || from <= this.dackSeq || from > this.sentSeq + 1) { this.conn?.refuse('PROTOCOL', `RESEND from ${String(from)} is outside what was sent`); return }
        this.ctx.log(`RLINK to ${this.address}: the Secondary asks for records again from sequence number ${from} (${String(m.why)})`)
        this.batches = this.batches.filter((b) => b.seq < from)
        const base = this.batches.length > 0 ? { seq: this.batches[this.batches.length - 1].seq, offset: this.batches[this.batches.length - 1].end } : this.dackPos
        this.sendPos = { seq: from - 1, offset: this.ctx.srl.positionOf(from, base) }
        this.sentSeq = from - 1
        if (this.nackSeq > this.sentSeq) this.nackSeq = this.sentSeq
        this.pump()
        return
      }
      case MsgType.PONG:
        return
      case MsgType.VERIFY_ENTRIES:
        if (this.verifying !== null && this.verifying.id === m.id) this.verifying.entries(m)
        return
      case MsgType.MIGRATED: {
        const w = this.migrating
        this.migrating = null
        w?.resolve({ ok: m.ok === true, error: typeof m.error === 'string' ? m.error : undefined })
        return
      }
      case MsgType.TASK_RESULT: {
        const w = this.tasks.get(m.id)
        if (w === undefined) return
        this.tasks.delete(m.id)
        w.resolve(m)
        return
      }
      default:
        this.conn?.refuse('PROTOCOL', `unexpected message type ${m.t}`)
    }
  }

  /** Sends a frame of an online verify; false if the link is not up. */
  sendVerify (m: Message): boolean {
    const c = this.conn
    if (c === null || this.state !== 'connected') return false
    c.send(m)
    return true
  }

  /** `replicafs migrate`'s answer awaited (src/daemon/primary.ts). */
  private migrating: { resolve: (r: { ok: boolean, error?: string }) => void, reject: (err: Error) => void } | null = null

  /**
   * `replicafs migrate`: asks the Secondary, which has data-acked everything up to `at`, to become
   * the Primary of generation `gen`; its answer. Rejects if the link is or goes down before it.
   */
  migrate (gen: Generation, at: number): Promise<{ ok: boolean, error?: string }> {
    const c = this.conn
    if (c === null || this.state !== 'connected') return Promise.reject(new ReplError('NOT_CONNECTED', `RLINK to ${this.address} is ${this.state}`))
    return new Promise((resolve, reject) => {
      this.migrating = { resolve, reject }
      c.send({ t: MsgType.MIGRATE, gen, at })
    })
  }

  /** `ibc run`: asks the Secondary to run one step of a task; rejects if the link is or goes down. */
  task (task: string, step: string, app: string, timeoutS: number): Promise<TaskResult> {
    const c = this.conn
    if (c === null || this.state !== 'connected') return Promise.reject(new ReplError('NOT_CONNECTED', `RLINK to ${this.address} is ${this.state}`))
    const id = this.nextTaskId++
    return new Promise((resolve, reject) => {
      this.tasks.set(id, { resolve, reject })
      c.send({ t: MsgType.TASK, id, task, step, app, timeoutS })
    })
  }

  private tick (): void {
    const c = this.conn
    if (c === null || this.state !== 'connected') return
    if (Date.now() - c.lastReceived > RLINK_DEAD_AFTER_MS) { c.end(`no answer from the Secondary for ${RLINK_DEAD_AFTER_MS / 1000} s`); return }
    // A Secondary that answers pings but logs nothing (its SRL full, say) must not hold writers
    // waiting for its network ack forever: drop the link; synchronous=override then goes on
    // asynchronously, as VVR's RLINK does when it times out.
    if (this.sentSeq > this.nackSeq && Date.now() - this.lastNackAt > RLINK_DEAD_AFTER_MS) {
      c.end(`the Secondary has not network-acked anything for ${RLINK_DEAD_AFTER_MS / 1000} s`)
      return
    }
    if (Date.now() - c.lastSent >= RLINK_PING_INTERVAL_MS) c.send({ t: MsgType.PING, ts: Date.now() })
  }

  /** Sends what the window allows. Called after appends, acks and drains. Never throws. */
  pump (): void {
    try {
      this.pumpUnsafe()
    } catch (err) {
      this.ctx.fatal(err as Error)
    }
  }

  private pumpUnsafe (): void {
    const c = this.conn
    if (c === null || this.state !== 'connected' || this.draining) return
    if (this.syncing !== null) { this.pumpSync(c, this.syncing); return }
    // In DCM mode nothing goes from the SRL, until the resynchronization's SYNC_DONE: then
    // UPDATES follow it as usual.
    if (this.dcm && this.syncDoneAt === null) { this.followHead(); this.wakeWaiters(); return }
    const srl = this.ctx.srl
    // Only what the SRL has made durable (RlinkSet.appended starts the fdatasync).
    const limit = srl.syncedSeq
    while (this.sentSeq < limit) {
      const unacked = this.sentSeq - this.nackSeq
      let inflight = 0
      for (const b of this.batches) if (b.seq > this.nackSeq) inflight += b.bytes
      if (unacked >= RLINK_WINDOW_UPDATES || inflight >= RLINK_WINDOW_BYTES) return
      const recs: Buffer[] = []
      const starts: number[] = [] // each record's offset
      let bytes = 0
      let { seq, offset } = this.sendPos
      const batchMax = this.limiter === null ? RLINK_BATCH_BYTES_MAX : Math.min(RLINK_BATCH_BYTES_MAX, Math.max(16 * 1024, this.limiter.rate / 20))
      while (seq < limit && bytes < batchMax && unacked + recs.length < RLINK_WINDOW_UPDATES) {
        const r = srl.readRaw(offset, seq + 1)
        if (r === null) break
        recs.push(r.buf)
        starts.push(offset)
        bytes += r.buf.length
        seq++
        offset = r.end
      }
      if (recs.length === 0) return
      // A record the Primary failed to apply is followed by its VOID (appended in the same turn):
      // they travel in one frame, so a Secondary never holds the record without knowing its fate.
      // A VOID not yet durable holds its record back until it is.
      const after = seq < srl.lastSeq ? srl.readRaw(offset, seq + 1) : null
      if (after !== null && after.type === RecordType.VOID) {
        if (seq + 1 > limit) {
          if (recs.length === 1) return
          const held = recs.pop()!
          bytes -= held.length
          seq--
          offset = starts.pop()!
        } else {
          recs.push(after.buf)
          bytes += after.buf.length
          seq++
          offset = after.end
        }
      }
      // The 10 s without an ack count from the oldest unacked record's sending, not from the last
      // ack: after an idle spell the first update gets its full 10 s (network and data ack alike).
      if (this.sentSeq === this.nackSeq) this.lastNackAt = Date.now()
      if (this.sentSeq === this.dackSeq) this.lastDackAt = Date.now()
      this.sendPos = { seq, offset }
      this.sentSeq = seq
      this.batches.push({ seq, end: offset, bytes })
      if (!c.send({ t: MsgType.UPDATES, recs })) { this.draining = true; return }
    }
  }

  /**
   * Resolves once `seq` is network-acked, or when the link is (or goes) down: the update is already
   * in the SRL and applied here, so failing it now would report EIO for a change that was made.
   * synchronous=fail refuses updates before they are appended instead (RlinkSet.admit).
   */
  waitNetworkAck (seq: number): Promise<void> {
    if (this.nackSeq >= seq || this.closed || this.state !== 'connected' || (this.dcm && this.syncDoneAt === null)) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ seq, resolve, reject: () => resolve() }))
  }

  private notConnected (): ReplError {
    return new ReplError('NOT_CONNECTED', `RLINK to ${this.address} is ${this.state} and synchronous=fail`)
  }

  private wakeWaiters (): void {
    if (this.waiters.length === 0) return
    const keep: Waiter[] = []
    for (const w of this.waiters) { if (w.seq <= this.nackSeq) w.resolve(); else keep.push(w) }
    this.waiters = keep
  }

  private lost (conn: FramedSocket, reason: string): void {
    if (this.conn !== conn) return
    this.conn = null
    this.draining = false
    this.syncDoneAt = null // the next handshake says whether the Secondary finished it
    this.syncCut = null
    if (this.syncing !== null) {
      this.ctx.log(`RLINK to ${this.address}: ${syncName(this.syncing)} cut short (${reason}) after ${syncFigures(this.syncing)}; it goes on by difference when the link is back`)
      this.syncing.close()
      this.syncing = null
    }
    if (this.heartbeat) { clearInterval(this.heartbeat); this.heartbeat = null }
    const w = this.waiters.splice(0)
    for (const x of w) x.reject(this.notConnected())
    for (const t of this.tasks.values()) t.reject(new ReplError('NOT_CONNECTED', `RLINK to ${this.address} went down: ${reason}`))
    this.migrating?.reject(new ReplError('NOT_CONNECTED', `RLINK to ${this.address} went down before the Secondary answered: ${reason}`))
    this.migrating = null
    this.verifying?.lost(reason)
    this.tasks.clear()
    if (this.closed) return
    if (this.state !== 'paused') {
      if (reason !== this.lastError || this.state === 'connected') this.ctx.log(`RLINK to ${this.address} ${this.state === 'connected' ? 'lost' : 'failed'}: ${reason}`)
      this.lastError = reason
      this.state = 'disconnected'
      if (this.takenOver) { this.ctx.changed(); return }
      if (this.addr === null) { this.ctx.changed(); return } // it dials again
      // A refusal needs an operator; retry slowly. A lost link is retried at once, then backs off.
      if (reason.startsWith('refused')) this.backoff = RLINK_RECONNECT_MAX_MS
      this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; this.connect() }, this.backoff)
      this.reconnectTimer.unref()
      this.backoff = Math.min(this.backoff * 2, RLINK_RECONNECT_MAX_MS)
    }
    this.ctx.changed()
  }

  pause (): void {
    if (this.state === 'paused') return
    this.state = 'paused'
    if (this.reconnectTimer) { clearTimeout(this.reconnectTimer); this.reconnectTimer = null }
    this.conn?.refuse('PROTOCOL', 'replication paused by the administrator on the Primary')
    this.ctx.log(`RLINK to ${this.address} paused`)
  }

  resume (): void {
    if (this.state !== 'paused') return
    this.state = 'disconnected'
    this.backoff = RLINK_RECONNECT_MIN_MS
    this.ctx.log(`RLINK to ${this.address} resumed`)
    this.connect()
  }

  /** Seconds since the oldest update this Secondary has not data-acked was appended (0: none). */
  get lagSeconds (): number {
    if (this.dackSeq >= this.ctx.srl.lastSeq) return 0
    return Math.max(0, (Date.now() - this.ctx.clock.appendedAt(this.dackSeq + 1)) / 1000)
  }

  status (): RlinkStatus {
    const srl = this.ctx.srl
    const caughtUp = this.dackSeq >= srl.lastSeq
    return {
      secondary: this.address,
      state: this.state,
      sentSeq: this.sentSeq,
      networkAckedSeq: this.nackSeq,
      dataAckedSeq: this.dackSeq,
      lagUpdates: Math.max(0, srl.lastSeq - this.dackSeq),
      lagBytes: caughtUp ? 0 : Math.max(0, srl.headOffset - Math.max(this.dackPos.offset, srl.tailPosition.offset)),
      lagSeconds: this.lagSeconds,
      lastError: this.lastError,
      consistent: this.syncing === null && this.syncDoneAt === null && !this.dcm,
      sync: this.syncing?.progress ?? null,
      dcm: this.dcm ? { paths: this.ctx.dcm?.size(this.address) ?? 0, since: this.dcmSince } : null,
      lastSync: this.lastSync,
      splitBrain: this.splitBrain,
      transport: this.conn === null || this.state !== 'connected' ? null : { tls: this.conn.secure, compress: this.conn.compressing ? 'zstd' : 'off', bytesOut: this.conn.bytesOut, bytesRaw: this.conn.bytesRaw },
      bandwidthLimit: this.limiter?.rate ?? null
    }
  }

  /** --bandwidth-limit at run time (`replicafs set`): bytes per second, or null for none. */
  setBandwidthLimit (rate: number | null): void {
    if (rate === null) this.limiter = null
    else if (this.limiter !== null) this.limiter.rate = rate
    else this.limiter = new RateLimiter(rate)
    if (this.conn !== null && this.state === 'connected') this.conn.limiter = this.limiter
  }

  close (): void {
    this.closed = true
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.heartbeat) clearInterval(this.heartbeat)
    const w = this.waiters.splice(0)
    for (const x of w) x.resolve()
    this.verifying?.lost('the Primary is stopping')
    this.conn?.end('the Primary is stopping')
    this.conn = null
  }
}
