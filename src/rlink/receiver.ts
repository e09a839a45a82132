/**
 * The Secondary's end of the RLINK: a TCP listener that accepts one authenticated Primary at a
 * time (or, on a failed-back host, a dialler: it connects to its Primary's listener, says JOIN,
 * and the same handshake follows, the Primary speaking first), logs the updates it sends in the Secondary's SRL, and acknowledges them twice (network ack
 * once logged and synced, data ack once applied; one ACK frame carries both positions).
 *
 * Handshake order (docs/FORMAT.md "Wire protocol"): version and RDS name are checked on HELLO,
 * the Primary's proof on AUTH, then which Primary this Secondary follows. Nothing is logged or
 * applied before READY. A newer authenticated connection replaces an older one (a Primary that
 * restarted before its old connection timed out here).
 *
 * Received records are checked in order: a bad checksum or a gap asks the Primary to send again
 * from the first record missing (RESEND) and drops what follows until that record arrives;
 * records already logged (a resend overlap) are skipped.
 */
import type net from 'node:net'
import { readHeader, checksumOk, RECORD_FORMAT_VERSION } from '../format/record'
import { MsgType, PROTOCOL_VERSION, nonce, proof, proofOk, updatesRecords, type Hello, type Join, type FailbackClaim, type Message, type SyncMessage, type SyncSums, type VerifyBegin } from '../format/wire'
import { FramedSocket, HandshakeLimit, listen, formatAddress, type Address } from './common'
import { dial, type RlinkTls } from './tls'
import type { Srl } from '../srl'
import type { LogStore } from '../srl/state'
import { State, type Follow, type Generation } from '../format/state'
import { checkGeneration, takenOverAt, shortGeneration } from '../format/generation'
import { RLINK_DEAD_AFTER_MS, RLINK_HANDSHAKE_TIMEOUT_MS, RLINK_RECONNECT_MIN_MS, RLINK_RECONNECT_MAX_MS, RLINK_WINDOW_BYTES, IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S } from '../limits'

export type { Follow }

/** What the receiver needs from the Secondary's RVG (src/rvg/secondary.ts). */
export interface ReceivingRvg {
  /** Its SRL: the receiver reads where it is and syncs it before each network ack. */
  readonly srl: Srl
  /** The last record applied (the data ack). */
  readonly appliedSeq: number
  /** Logs records, in order, while `stillActive()` (this connection is the active one). */
  append (recs: Buffer[], stillActive?: () => boolean): Promise<void>
  /** Called when the applied position moves. */
  onApplied?: (seq: number) => void
}

/** Full synchronization on this Secondary (src/sync/index.ts SyncReceiver, composed by the daemon). */
export interface SyncReceiving {
  /** Whether the data directory is empty. */
  empty (): boolean
  /** The id of a full synchronization begun here and not finished, or null. */
  readonly syncing: string | null
  /** Whether a synchronization finished here (its SRL may still be empty: one that ended at sequence number 0). */
  readonly finished: boolean
  /** Whether its data may be made the Primary's by difference, every file compared (CHALLENGE adopt). */
  readonly adopt: boolean
  /** SYNC_BEGIN from the Primary whose SRL id is `srlId`: recorded before anything changes. */
  begin (id: string, srlId: string, diff: boolean, checksum: boolean): Promise<void>
  /** A frame has arrived and waits for those before it to be applied (it may read ahead for it). */
  received (m: SyncMessage): void
  /** One SYNC_ENTRY, SYNC_DATA, SYNC_DIR or SYNC_REMOVE frame; what to answer before its SYNC_ACK. */
  apply (m: SyncMessage): Promise<SyncSums[]>
  /** SYNC_DONE: the data directory is the Primary's after record `seq`. */
  finish (seq: number): Promise<void>
  /** The link went down before SYNC_DONE. */
  interrupted (): void
}

/** Online verify on this Secondary (src/sync/verify.ts VerifyResponder, composed by the daemon). */
export interface VerifyReceiving {
  /** VERIFY_BEGIN: answered with `send` in the background; throws PROTOCOL on a malformed one. */
  begin (m: VerifyBegin, send: (m: Message) => boolean): void
  ack (id: string, n: number): void
  /** VERIFY_END (`id`), or the link it runs over went down (no id). */
  end (id?: string): void
}

/** The answer to MIGRATE; `after` runs once it is sent (the role change itself). */
export interface MigrateAnswer { ok: boolean, error?: string, after?: () => void }

export interface ReceiverConfig {
  /** Online verify; without it VERIFY_BEGIN is answered with an error. */
  verify?: VerifyReceiving
  /** Full synchronization; without it a Secondary the SRL cannot bring up to date is refused. */
  sync?: SyncReceiving
  /** Runs one step of an `ibc run` task here. */
  task?: (task: string, step: string, timeoutS: number) => Promise<{ code: number | null, output: string, ibcId?: string }>
  /** Where the Primary dials this Secondary; absent: this Secondary dials (`dial`). */
  listen?: Address
  /**
   * A Secondary that dials its Primary's listener (made so by `replicafs failback`): it connects to
   * `address` and says JOIN `name` first; the Primary then speaks first, as usual.
   */
  dial?: { address: Address, name: string }
  /**
   * MIGRATE (after every update received before it is logged): whether this Secondary becomes the
   * Primary of `gen`; `after`, called once MIGRATED {ok: true} is sent, makes it so.
   */
  migrate?: (gen: Generation, at: number) => Promise<MigrateAnswer>
  /** CHALLENGE.failback: a failed-back Secondary not yet resynchronized says what it changed. */
  failback?: () => FailbackClaim | null
  secret: Buffer
  /** TLS on the RLINK (src/rlink/tls.ts), or null: plain TCP. */
  tls?: RlinkTls | null
  rds: string
  rvg: ReceivingRvg
  store: LogStore
  log: (line: string) => void
}

class Connection {
  private phase: 'hello' | 'auth' | 'ready' = 'hello'
  /** Whether the Primary has sent anything since READY (a REFUSE before that refuses the handshake). */
  private heard = false
  private hello: Hello | null = null
  private readonly ourNonce = nonce()
  private chain: Promise<void> = Promise.resolve()
  private queuedBytes = 0
  /** After a RESEND: the record we wait for; records after it are dropped until it comes. */
  private resendFrom: number | null = null
  private timer: NodeJS.Timeout
  readonly fs: FramedSocket

  /** SYNC_* frames of a full synchronization applied over this connection (SYNC_ACK). */
  private syncFrames = 0
  private syncOpen = false

  /** A verify was begun over this connection (it ends with it). */
  private verifying = false

  /** `ibc run` tasks registered over this connection and not yet unregistered. */
  private readonly openTasks = new Set<string>()

  constructor (sock: net.Socket, private readonly rx: RlinkReceiver, join?: Join) {
    this.fs = new FramedSocket(sock, (m) => this.onMessage(m), (reason) => {
      rx.ended(this, reason)
      if (this.verifying) rx.cfg.verify?.end()
      if (this.syncOpen) {
        rx.cfg.log(`full synchronization cut short: ${reason}; it begins again when the Primary is back`)
        this.chain = this.chain.then(() => rx.cfg.sync?.interrupted())
      }
      // A flow cut off by a lost link must not leave this Secondary frozen or the name registered.
      for (const task of this.openTasks) {
        rx.cfg.log(`ibc run ${task}: the link to the Primary went down mid-flow; unfreezing and unregistering`)
        rx.cfg.task?.(task, 'abort', 0).catch(() => {})
      }
      this.openTasks.clear()
    })
    this.timer = setTimeout(() => this.fs.refuse('PROTOCOL', `handshake not completed within ${RLINK_HANDSHAKE_TIMEOUT_MS / 1000} s`), RLINK_HANDSHAKE_TIMEOUT_MS)
    this.timer.unref()
    if (join !== undefined) this.fs.send(join)
  }

  get ready (): boolean { return this.phase === 'ready' && !this.fs.isEnded }
  /** Whether the handshake completed (even if the connection has ended since). */
  get wasReady (): boolean { return this.phase === 'ready' }
  get srlId (): string | null { return this.hello?.srlId ?? null }

  close (reason: string): void {
    clearTimeout(this.timer)
    this.fs.end(reason)
  }

  private refuse (code: Parameters<FramedSocket['refuse']>[0], message: string): void {
    this.rx.cfg.log(`refused the connection from ${this.fs.peer}: ${message}`)
    this.rx.lastError = `refused ${this.fs.peer}: ${message}`
    clearTimeout(this.timer)
    this.fs.refuse(code, message)
  }

  private onMessage (m: Message): void {
    const cfg = this.rx.cfg
    switch (this.phase) {
      case 'hello': {
        // A dialling Secondary's JOIN refused by the Primary's listener (no RLINK for it, BUSY, VERSION).
        if (m.t === MsgType.REFUSE) { cfg.log(`the Primary at ${this.fs.peer} refused this Secondary: ${String(m.message)}`); this.close('refused by the Primary'); return }
        if (m.t !== MsgType.HELLO) { this.refuse('PROTOCOL', `expected HELLO, got message type ${m.t}`); return }
        if (m.v !== PROTOCOL_VERSION) { this.refuse('VERSION', `protocol version ${String(m.v)} is not supported: this Secondary speaks RLINK protocol version ${PROTOCOL_VERSION}`); return }
        if (typeof m.rds !== 'string' || m.rds !== cfg.rds) { this.refuse('RDS', `RDS name "${String(m.rds)}" does not match this Secondary's RDS name "${cfg.rds}"`); return }
        if (typeof m.rf !== 'number' || m.rf < 1 || m.rf > RECORD_FORMAT_VERSION) { this.refuse('VERSION', `SRL record format version ${String(m.rf)} is not supported: this Secondary reads versions up to ${RECORD_FORMAT_VERSION}`); return }
        if (!(m.nonce instanceof Uint8Array) || m.nonce.length !== 32 || typeof m.srlId !== 'string') { this.refuse('PROTOCOL', 'malformed HELLO'); return }
        const gen = checkGeneration(m.gen)
        if (gen === null) { this.refuse('PROTOCOL', 'malformed HELLO (its data generation)'); return }
        this.hello = { ...m, gen }
        // Compression (version 8): whatever the Primary offers that this end has, it takes.
        const z = Array.isArray(m.z) && m.z.includes('zstd') ? 'zstd' : undefined
        this.fs.inflating = z !== undefined
        const srl = cfg.rvg.srl
        this.fs.send({
          t: MsgType.CHALLENGE,
          v: PROTOCOL_VERSION,
          rds: cfg.rds,
          nonce: this.ourNonce,
          proof: proof(cfg.secret, 'secondary', m.nonce, this.ourNonce, cfg.rds, this.fs.binding),
          next: srl.lastSeq + 1,
          last: srl.lastRecord(),
          applied: cfg.rvg.appliedSeq,
          fresh: srl.lastSeq === 0 && srl.tailSeq === 0 && cfg.sync?.finished !== true,
          empty: cfg.sync?.empty() ?? false,
          syncing: cfg.sync?.syncing ?? null,
          adopt: cfg.sync?.adopt ?? false,
          ...this.failbackClaim(),
          ...(z !== undefined ? { z } : {})
        })
        this.phase = 'auth'
        return
      }
      case 'auth': {
        if (m.t === MsgType.REFUSE) { this.rx.cfg.log(`the Primary at ${this.fs.peer} refused this Secondary: ${String(m.message)}`); this.close('refused by the Primary'); return }
        if (m.t !== MsgType.AUTH) { this.refuse('PROTOCOL', `expected AUTH, got message type ${m.t}`); return }
        const hello = this.hello!
        if (!proofOk(m.proof, proof(cfg.secret, 'primary', this.ourNonce, hello.nonce, cfg.rds, this.fs.binding))) {
          this.refuse('AUTH', 'authentication failed: the Primary does not know the shared secret (check --secret-file on both hosts)')
          return
        }
        // A Primary of a generation this host's line has left behind (another host took over
        // from it) is told so: it stops taking writes (src/rlink/link.ts).
        const ours = this.rx.generation
        const at = ours === null ? null : takenOverAt(ours, hello.gen)
        if (ours !== null && at !== null) {
          this.rx.cfg.log(`refused the Primary at ${this.fs.peer}: generation ${shortGeneration(ours)} took over from its generation ${shortGeneration(hello.gen)} after sequence number ${at}`)
          clearTimeout(this.timer)
          this.fs.send({ t: MsgType.REFUSE, code: 'TAKEN_OVER', message: `generation ${shortGeneration(ours)} took over from this Primary's generation ${shortGeneration(hello.gen)} after sequence number ${at}`, gen: ours })
          this.close('taken over')
          return
        }
        const follow = this.rx.follow
        if (follow !== null && follow.srlId !== hello.srlId) {
          this.refuse('PRIMARY', `this Secondary follows the Primary whose SRL id is ${follow.srlId}, not ${hello.srlId}`)
          return
        }
        clearTimeout(this.timer)
        this.rx.activate(this, hello).then(() => {
          if (this.fs.isEnded) return
          this.phase = 'ready'
          this.fs.send({ t: MsgType.READY })
          this.timer = setInterval(() => {
            // (Not while we hold the socket paused ourselves: that silence is ours.)
            if (this.fs.sock.isPaused()) this.fs.lastReceived = Date.now()
            else if (Date.now() - this.fs.lastReceived > RLINK_DEAD_AFTER_MS) this.close(`nothing heard from the Primary for ${RLINK_DEAD_AFTER_MS / 1000} s`)
          }, 1000)
          this.timer.unref()
        }, (err: Error) => this.refuse('PROTOCOL', err.message))
        return
      }
      case 'ready':
        if (m.t !== MsgType.REFUSE) this.heard = true
        switch (m.t) {
          case MsgType.UPDATES: {
            if (updatesRecords(m) === null) { this.refuse('PROTOCOL', 'malformed UPDATES (recs must be a list of records\' bytes)'); return }
            const bytes = m.recs.reduce((n, r) => n + (r as Uint8Array).length, 0)
            this.queuedBytes += bytes
            if (this.queuedBytes > RLINK_WINDOW_BYTES) this.fs.hold('window')
            this.chain = this.chain.then(() => this.onUpdates(m.recs as Uint8Array[])).finally(() => {
              this.queuedBytes -= bytes
              if (this.queuedBytes <= RLINK_WINDOW_BYTES) this.fs.release('window')
            }).catch((err: Error) => { this.close(`cannot log updates: ${err.message}`) })
            return
          }
          case MsgType.SYNC_BEGIN: case MsgType.SYNC_ENTRY: case MsgType.SYNC_DATA: case MsgType.SYNC_DIR:
          case MsgType.SYNC_REMOVE: case MsgType.SYNC_DONE:
            this.onSync(m)
            return
          case MsgType.PING:
            this.fs.send({ t: MsgType.PONG, ts: m.ts })
            return
          case MsgType.MIGRATE: {
            const gen = checkGeneration(m.gen)
            if (gen === null || !Number.isSafeInteger(m.at)) { this.refuse('PROTOCOL', 'malformed MIGRATE'); return }
            const migrate = cfg.migrate
            this.chain = this.chain.then(async () => {
              const r: MigrateAnswer = migrate === undefined ? { ok: false, error: 'this Secondary cannot become a Primary' } : await migrate(gen, m.at).catch((err: Error) => ({ ok: false, error: err.message }))
              if (this.fs.isEnded) return
              this.fs.send({ t: MsgType.MIGRATED, ok: r.ok, ...(r.error !== undefined ? { error: r.error } : {}) })
              if (r.ok && r.after !== undefined) setImmediate(r.after)
            })
            return
          }
          case MsgType.VERIFY_BEGIN: {
            // At once, not after the updates queued before it: its sequence number is reached by
            // applying them, and none after it can be applied before this frame is handled.
            const v = this.rx.cfg.verify
            if (v === undefined) { this.fs.send({ t: MsgType.VERIFY_ENTRIES, id: String(m.id), i: 0, e: [], err: 'this Secondary does not verify' }); return }
            try { v.begin(m, (r) => this.fs.isEnded ? false : this.fs.send(r)) } catch (err) { this.refuse('PROTOCOL', (err as Error).message); return }
            this.verifying = true
            return
          }
          case MsgType.VERIFY_ACK:
            this.rx.cfg.verify?.ack(String(m.id), m.n)
            return
          case MsgType.VERIFY_END:
            this.rx.cfg.verify?.end(String(m.id))
            return
          case MsgType.TASK: {
            const run = this.rx.cfg.task
            const id = m.id
            const done = (r: { code: number | null, output: string, error: string | null, ibcId?: string }): void => {
              if (!this.fs.isEnded) this.fs.send({ t: MsgType.TASK_RESULT, id, ...r })
            }
            if (run === undefined) { done({ code: null, output: '', error: 'this Secondary runs no tasks' }); return }
            const task = String(m.task)
            const step = String(m.step)
            run(task, step, typeof m.timeoutS === 'number' ? m.timeoutS : IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S)
              .then((r) => {
                if (step === 'register') this.openTasks.add(task)
                if (step === 'unregister' || step === 'abort') this.openTasks.delete(task)
                done({ ...r, error: null })
              }, (err: Error & { code?: string }) => done({ code: null, output: '', error: `${err.code?.startsWith('EIBC_') ? err.code + ': ' : ''}${err.message}` }))
            return
          }
          case MsgType.REFUSE:
            // The Primary checks the Secondary's position when READY arrives (docs/FORMAT.md,
            // handshake step 4): a REFUSE before anything else is that refusal (STALE, DIVERGED).
            this.rx.cfg.log(this.heard
              ? `the Primary at ${this.fs.peer} ended the link: ${String(m.message)}`
              : `the Primary at ${this.fs.peer} refused this Secondary: ${String(m.message)}`)
            this.close('refused by the Primary')
            return
          default:
            this.refuse('PROTOCOL', `unexpected message type ${m.t}`)
        }
    }
  }

  /** CHALLENGE.failback, only when there is one (version 6's fields stay as they were). */
  private failbackClaim (): { failback?: FailbackClaim } {
    const f = this.rx.cfg.failback?.() ?? null
    return f === null ? {} : { failback: f }
  }

  private async onUpdates (recs: Uint8Array[]): Promise<void> {
    if (this.fs.isEnded) return
    const rvg = this.rx.cfg.rvg
    let expected = rvg.srl.lastSeq + 1
    const ok: Buffer[] = []
    for (const r of recs) {
      const buf = Buffer.from(r.buffer, r.byteOffset, r.byteLength)
      let h: ReturnType<typeof readHeader>
      try { h = readHeader(buf) } catch (err) { this.refuse('VERSION', (err as Error).message); return }
      if (h !== null && h.seq < expected && h.seq !== this.resendFrom) continue // already logged (a resend overlaps)
      if (this.resendFrom !== null && (h === null || h.seq !== this.resendFrom)) continue // in flight before our RESEND
      if (h === null || h.totalLength !== buf.length || !checksumOk(buf)) {
        this.resend(expected, `record ${h?.seq ?? '?'} failed its checksum`)
        break
      }
      if (h.seq > expected) {
        this.resend(expected, `gap: received record ${h.seq} where ${expected} was due`)
        break
      }
      this.resendFrom = null
      ok.push(buf)
      expected++
    }
    if (ok.length > 0) await rvg.append(ok, () => this.rx.isActive(this))
    if (this.fs.isEnded) return
    // The network ack waits for the fdatasync, which is shared by every frame logged meanwhile:
    // the next frame is logged while this sync runs (one sync per burst, not per frame).
    const logged = rvg.srl.lastSeq
    rvg.srl.sync().then(() => this.rx.ack(logged), (err: Error) => this.close(`cannot sync the SRL: ${err.message}`))
  }

  /** A frame of a full synchronization: applied in order with everything else received, then acked. */
  private onSync (m: SyncMessage): void {
    const sync = this.rx.cfg.sync
    if (sync === undefined) { this.refuse('PROTOCOL', 'this Secondary takes no full synchronization'); return }
    const bytes = m.t === MsgType.SYNC_DATA && m.d instanceof Uint8Array ? m.d.length : 0
    if (this.syncOpen && this.rx.isActive(this)) sync.received(m)
    this.queuedBytes += bytes
    if (this.queuedBytes > RLINK_WINDOW_BYTES) this.fs.hold('window')
    this.chain = this.chain.then(async () => {
      if (!this.rx.isActive(this)) return
      if (m.t === MsgType.SYNC_BEGIN) {
        this.syncOpen = true
        await sync.begin(String(m.id), this.hello!.srlId, m.d === 1, m.c === 1)
      } else if (m.t === MsgType.SYNC_DONE) {
        if (!Number.isSafeInteger(m.seq) || m.seq < 0) { this.refuse('PROTOCOL', 'malformed SYNC_DONE'); return }
        await sync.finish(m.seq)
        this.syncOpen = false
        this.rx.ack(m.seq)
        return
      } else {
        if (!this.syncOpen) { this.refuse('PROTOCOL', `SYNC frame (type ${m.t}) outside a full synchronization`); return }
        for (const r of await sync.apply(m)) if (!this.fs.isEnded) this.fs.send(r)
      }
      this.fs.send({ t: MsgType.SYNC_ACK, n: ++this.syncFrames })
    }).finally(() => {
      this.queuedBytes -= bytes
      if (this.queuedBytes <= RLINK_WINDOW_BYTES) this.fs.release('window')
    }).catch((err: Error) => { this.close(`full synchronization failed: ${err.message}`) })
  }

  private resend (from: number, why: string): void {
    if (this.resendFrom === from) return
    this.resendFrom = from
    this.rx.cfg.log(`asking the Primary to send again from sequence number ${from}: ${why}`)
    this.fs.send({ t: MsgType.RESEND, from, why })
  }
}

export class RlinkReceiver {
  private server: net.Server | null = null
  private active: Connection | null = null
  private readonly all = new Set<Connection>()
  follow: Follow | null = null
  /** The data generation of the Primary followed (HELLO.gen), kept in LevelDB. */
  generation: Generation | null = null
  /** The real listening address (port 0 resolved). */
  address = ''
  private nacked = 0

  constructor (readonly cfg: ReceiverConfig) {}

  async start (): Promise<void> {
    this.follow = (await this.cfg.store.get(State.follow)) ?? null
    this.generation = (await this.cfg.store.get(State.generation)) ?? null
    this.nacked = this.cfg.rvg.srl.lastSeq // everything logged before a restart was synced (close) or is re-synced below
    await this.cfg.rvg.srl.sync()
    this.cfg.rvg.onApplied = () => this.ack()
    this.closing = false
    if (this.cfg.dial !== undefined) {
      this.address = `dialling ${formatAddress(this.cfg.dial.address)}`
      this.dial()
      return
    }
    const limit = new HandshakeLimit(this.cfg.log)
    const { server, address } = await listen(this.cfg.listen!, (sock) => {
      const c = new Connection(sock, this)
      this.all.add(c)
    }, this.cfg.log, this.cfg.tls ?? null, (why) => { this.cfg.log(why); this.lastError = why }, (raw, pending) => {
      let inHandshake = pending
      for (const c of this.all) if (!c.wasReady) inHandshake++
      return limit.admit(raw, inHandshake)
    })
    this.server = server
    this.address = address
  }

  private closing = false
  /** Why the last connection that did not become the active one failed (status); cleared by the next that does. */
  lastError: string | null = null
  private dialling: Connection | null = null
  private dialTimer: NodeJS.Timeout | null = null
  private backoff = RLINK_RECONNECT_MIN_MS
  private dialError = ''

  /** A Secondary that dials: connects, says JOIN, and dials again (with backoff) whenever the connection ends. */
  private dial (): void {
    if (this.closing) return
    const d = this.cfg.dial!
    const sock = dial(d.address, this.cfg.tls ?? null, () => {})
    const c = new Connection(sock, this, { t: MsgType.JOIN, v: PROTOCOL_VERSION, rds: this.cfg.rds, name: d.name })
    this.dialling = c
    this.all.add(c)
  }

  private redial (c: Connection, reason: string): void {
    if (this.dialling !== c) return
    this.dialling = null
    if (this.closing) return
    if (c.wasReady) this.backoff = RLINK_RECONNECT_MIN_MS
    else if (reason !== this.dialError) this.cfg.log(`cannot reach the Primary at ${formatAddress(this.cfg.dial!.address)}: ${reason}; dialling again`)
    if (!c.wasReady) this.lastError = `cannot reach the Primary at ${formatAddress(this.cfg.dial!.address)}: ${reason}`
    this.dialError = reason
    this.dialTimer = setTimeout(() => { this.dialTimer = null; this.dial() }, this.backoff)
    this.dialTimer.unref()
    this.backoff = Math.min(this.backoff * 2, RLINK_RECONNECT_MAX_MS)
  }

  get connected (): boolean { return this.active?.ready ?? false }
  get primaryAddress (): string | null { return this.connected ? this.active!.fs.peer : null }

  /** Makes an authenticated connection the one that feeds the SRL. */
  isActive (c: Connection): boolean { return this.active === c && !c.fs.isEnded }

  private activations: Promise<void> = Promise.resolve()

  /** One activation at a time, so the follow check and its write cannot interleave. */
  activate (c: Connection, hello: Hello): Promise<void> {
    const run = this.activations.then(() => this.activateNow(c, hello))
    this.activations = run.catch(() => {})
    return run
  }

  private async activateNow (c: Connection, hello: Hello): Promise<void> {
    if (c.fs.isEnded) return
    // Checked again here: two new Primaries may have passed AUTH before either got this far.
    if (this.follow !== null && this.follow.srlId !== hello.srlId) throw new Error(`this Secondary follows the Primary whose SRL id is ${this.follow.srlId}, not ${hello.srlId}`)
    if (this.follow === null) {
      this.follow = { srlId: hello.srlId, rds: hello.rds }
      await this.cfg.store.put(State.follow, this.follow)
      this.cfg.log(`following the Primary whose SRL id is ${hello.srlId} (RDS ${hello.rds})`)
    }
    if (this.generation === null || this.generation.id !== hello.gen.id) {
      this.generation = hello.gen
      await this.cfg.store.put(State.generation, hello.gen)
    }
    const old = this.active
    this.active = c
    if (old !== null && old !== c) old.close(`replaced by a new connection from ${c.fs.peer}`)
    this.lastError = null
    this.cfg.log(`Primary ${c.fs.peer} connected${c.fs.secure ? ' (TLS)' : ''}${c.fs.inflating ? ' (zstd)' : ''}; next sequence number wanted ${this.cfg.rvg.srl.lastSeq + 1}`)
  }

  /** The connection to the active Primary: TLS or not, compression (status). */
  get transport (): { tls: boolean, compress: 'zstd' | 'off', bytesIn: number } | null {
    const c = this.active
    if (c === null || c.fs.isEnded) return null
    return { tls: c.fs.secure, compress: c.fs.inflating ? 'zstd' : 'off', bytesIn: c.fs.bytesIn }
  }

  ended (c: Connection, reason: string): void {
    this.all.delete(c)
    this.redial(c, reason)
    if (this.active === c) {
      this.active = null
      this.cfg.log(`Primary ${c.fs.peer} disconnected: ${reason}`)
    }
  }

  /** Sends the current network and data ack on the active link (`logged`: newly synced records). */
  ack (logged?: number): void {
    if (logged !== undefined && logged > this.nacked) this.nacked = logged
    const c = this.active
    if (c === null || !c.ready) return
    c.fs.send({ t: MsgType.ACK, n: this.nacked, d: this.cfg.rvg.appliedSeq })
  }

  async close (): Promise<void> {
    this.closing = true
    if (this.dialTimer !== null) { clearTimeout(this.dialTimer); this.dialTimer = null }
    for (const c of this.all) c.close('the Secondary is stopping')
    this.all.clear()
    this.active = null
    const server = this.server
    this.server = null
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
