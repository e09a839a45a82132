/**
 * Online verify (docs/ARCHITECTURE.md "Online verify"), VVR's `verifydata` and DRBD's online
 * verify: the Primary's tree and a Secondary's compared at one sequence number while replication
 * goes on.
 *
 *   Primary    takes snapshot verify-<id> after record S (between two records), sends VERIFY_BEGIN
 *              {id, seq: S} on the RLINK before any record after S, and walks its snapshot.
 *   Secondary  takes its own snapshot verify-<id> once it has applied S (before S + 1), walks it
 *              and streams its entries (VERIFY_ENTRIES, at most VERIFY_WINDOW_FRAMES ahead of the
 *              Primary's VERIFY_ACK).
 *   Primary    merges the two walks as they come (src/sync/compare.ts), then VERIFY_END; both
 *              delete their snapshot.
 *
 * Both walks read their snapshot, not the live tree, so writes and updates go on meanwhile and cost
 * only their copy-on-write. A walk runs VERIFY_SLICE_MS at a time, then lets the event loop serve
 * FUSE and the RLINK.
 */
import type { VerifyBegin, VerifyEntries, VerifyEntry, Message } from '../format/wire'
import { MsgType } from '../format/wire'
import { VERIFY_FRAME_ENTRIES, VERIFY_FRAME_HASH_BYTES, VERIFY_SLICE_MS, VERIFY_WINDOW_FRAMES } from '../limits'
import { ReplError } from '../errors'
import { TreeWalk, type TreeReader } from './manifest'
import { TreeCompare, type Difference } from './compare'
import { countTree, type TreeSize } from './count'

/** The snapshot name of verify `id` on both sides. */
export const VERIFY_SNAPSHOT_PREFIX = 'verify-'

export interface VerifyProgress {
  id: string
  secondary: string
  /** 'waiting' (for the Secondary to reach the sequence number), 'compare', 'repair'. */
  phase: string
  seq: number
  /** Entries and file bytes walked on each side. */
  entries: number
  bytes: number
  theirEntries: number
  theirBytes: number
  /** The Primary's tree, counted in the background (null until counted). */
  totalEntries: number | null
  totalBytes: number | null
  differing: number
  startedAt: string
  rateBytes: number
  etaSeconds: number | null
}

export interface VerifyResult {
  secondary: string
  /** The sequence number both trees were compared at. */
  seq: number
  identical: boolean
  /** Paths that differ (every one); `differences` lists the first DIFFERENCES_LISTED. */
  differing: number
  differences: Difference[]
  entries: { primary: number, secondary: number }
  bytes: { primary: number, secondary: number }
  /** The trees' Merkle roots (hex). */
  root: { primary: string, secondary: string }
  seconds: number
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Whether a peer's verify entry has the fields the comparison reads, of their types. */
function wellFormed (e: unknown): boolean {
  if (e === null || typeof e !== 'object') return false
  const v = e as Record<string, unknown>
  const num = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x)
  const opt = (x: unknown, ok: (y: unknown) => boolean): boolean => x === undefined || ok(x)
  return typeof v.p === 'string' && v.p.startsWith('/') && ['f', 'd', 'l', 'n'].includes(v.k as string) && num(v.m) && num(v.u) && num(v.g) &&
    Array.isArray(v.mt) && v.mt.length === 2 && num(v.mt[0]) && num(v.mt[1]) && opt(v.s, num) && opt(v.r, num) &&
    opt(v.l, (x) => typeof x === 'string') && opt(v.h, (x) => typeof x === 'string') &&
    opt(v.x, (x) => x instanceof Uint8Array) && opt(v.c, (x) => x instanceof Uint8Array && x.length % 16 === 0)
}

/** The Primary's side of one verify over one RLINK. */
export class VerifySession {
  private readonly walk: TreeWalk
  private readonly cmp = new TreeCompare()
  private theirFrames = 0
  private acked = 0
  private theirRoot: Buffer | null = null
  private theirEntries = 0
  private theirBytes = 0
  private failed: Error | null = null
  private wake: (() => void) | null = null
  private phase = 'waiting'
  private readonly startedAt = Date.now()
  private total: TreeSize | null = null
  private stopped = false

  /**
   * `tree`: the Primary's snapshot at `seq`; `send`: a frame on the RLINK (false: the link is
   * down); `root`: the live data directory, counted for the progress figures.
   */
  constructor (readonly id: string, readonly secondary: string, readonly seq: number, tree: TreeReader,
    private readonly send: (m: Message) => boolean, root: string) {
    this.walk = new TreeWalk(tree)
    countTree(root, () => this.stopped).then((t) => { if (t !== null) this.total = t }, () => {})
  }

  get progress (): VerifyProgress {
    const s = Math.max(0.001, (Date.now() - this.startedAt) / 1000)
    const rate = this.walk.bytes / s
    const t = this.total
    return {
      id: this.id,
      secondary: this.secondary,
      phase: this.phase,
      seq: this.seq,
      entries: this.walk.entries,
      bytes: this.walk.bytes,
      theirEntries: this.theirEntries,
      theirBytes: this.theirBytes,
      totalEntries: t?.entries ?? null,
      totalBytes: t === null || t.bytes < 0 ? null : t.bytes,
      differing: this.cmp.count,
      startedAt: new Date(this.startedAt).toISOString(),
      rateBytes: Math.round(rate),
      etaSeconds: t !== null && t.bytes >= 0 && rate > 0 ? Math.round(Math.max(0, t.bytes - this.walk.bytes) / rate * 10) / 10 : null
    }
  }

  /** A VERIFY_ENTRIES frame from the Secondary. */
  entries (m: VerifyEntries): void {
    if (this.stopped) return
    if (m.i !== this.theirFrames || !Array.isArray(m.e)) { this.fail(new ReplError('PROTOCOL', `the Secondary sent VERIFY_ENTRIES frame ${String(m.i)} where ${this.theirFrames} was due`)); return }
    this.theirFrames++
    if (typeof m.err === 'string') { this.fail(new ReplError('VERIFY_FAILED', `the Secondary could not verify: ${m.err}`)); return }
    this.phase = 'compare'
    const bad = (m.e as unknown[]).find((e) => !wellFormed(e))
    if (bad !== undefined) { this.fail(new ReplError('PROTOCOL', `the Secondary sent a malformed verify entry: ${JSON.stringify(bad).slice(0, 200)}`)); return }
    for (const e of m.e as VerifyEntry[]) { this.theirEntries++; this.theirBytes += e.s !== undefined && e.h === undefined ? e.s : 0 }
    this.cmp.pushTheirs(m.e)
    if (m.end === 1) { this.theirRoot = Buffer.from(m.r ?? []); this.cmp.endTheirs() }
    this.ackIfRoom()
    this.poke()
  }

  /** The RLINK went down (or the daemon is stopping): the verify cannot finish. */
  lost (why: string): void {
    this.fail(new ReplError('NOT_CONNECTED', `the RLINK to ${this.secondary} went down during the verify: ${why}`))
  }

  private fail (err: Error): void {
    if (this.failed === null) this.failed = err
    this.poke()
  }

  private poke (): void {
    const w = this.wake
    this.wake = null
    w?.()
  }

  /** Acknowledges the Secondary's frames while the comparison is not behind on them. */
  private ackIfRoom (): void {
    if (this.acked < this.theirFrames && this.cmp.theirsQueued < 2 * VERIFY_FRAME_ENTRIES) {
      this.acked = this.theirFrames
      this.send({ t: MsgType.VERIFY_ACK, id: this.id, n: this.acked })
    }
  }

  /** Runs the comparison to its end; `signal` gives up (the client went away). */
  async run (signal?: AbortSignal): Promise<VerifyResult> {
    const onAbort = (): void => this.fail(new ReplError('VERIFY_FAILED', 'the verify was interrupted'))
    signal?.addEventListener('abort', onAbort)
    try {
      while (!this.cmp.done) {
        if (this.failed !== null) throw this.failed
        // Walk while the Secondary's entries are not far behind ours.
        if (!this.walk.done && this.cmp.mineQueued < 4 * VERIFY_FRAME_ENTRIES) {
          const until = Date.now() + VERIFY_SLICE_MS
          while (!this.walk.done && Date.now() < until && this.cmp.mineQueued < 4 * VERIFY_FRAME_ENTRIES) {
            const e = this.walk.step()
            if (e !== null) this.cmp.pushMine(e)
          }
          if (this.walk.done) this.cmp.endMine()
          this.ackIfRoom()
          await tick()
          continue
        }
        this.ackIfRoom()
        await new Promise<void>((resolve) => { this.wake = resolve })
      }
      if (this.failed !== null) throw this.failed
      const mine = this.walk.root!
      const theirs = this.theirRoot ?? Buffer.alloc(0)
      // Equal entry lists give equal roots: a difference in the roots alone is one in the tree itself.
      if (this.cmp.count === 0 && !mine.equals(theirs)) { this.cmp.differences.push({ p: '/', what: ['tree'] }); this.cmp.paths.set('/', true) }
      return {
        secondary: this.secondary,
        seq: this.seq,
        identical: this.cmp.differences.length === 0,
        differing: this.cmp.count,
        differences: this.cmp.differences,
        entries: { primary: this.walk.entries, secondary: this.theirEntries },
        bytes: { primary: this.walk.bytes, secondary: this.theirBytes },
        root: { primary: mine.toString('hex'), secondary: theirs.toString('hex') },
        seconds: Math.round((Date.now() - this.startedAt) / 100) / 10
      }
    } finally {
      signal?.removeEventListener('abort', onAbort)
      this.stopped = true
      this.walk.close()
      this.send({ t: MsgType.VERIFY_END, id: this.id })
    }
  }

  /** Every path that differs, with whether everything below it goes too (for --repair). */
  get paths (): Map<string, boolean> { return this.cmp.paths }

  set repairing (on: boolean) { this.phase = on ? 'repair' : 'compare' }
}

/** What the Secondary's verify needs of its snapshots (composed by the daemon). */
export interface VerifySnapshots {
  /** Takes snapshot `name` once record `seq` is applied, before the next one; its view. */
  takeAt (seq: number, name: string): Promise<TreeReader>
  drop (name: string): void
}

/** The Secondary's side: answers VERIFY_BEGIN on the RLINK it arrived on. */
export class VerifyResponder {
  private current: { id: string, walk: TreeWalk | null, acked: number, sent: number, ended: boolean, wake: (() => void) | null, name: string } | null = null

  constructor (private readonly snaps: VerifySnapshots, private readonly log: (line: string) => void) {}

  /** The verify running here, as status shows it. */
  get progress (): { id: string, entries: number, bytes: number } | null {
    const c = this.current
    return c === null ? null : { id: c.id, entries: c.walk?.entries ?? 0, bytes: c.walk?.bytes ?? 0 }
  }

  /** VERIFY_BEGIN: runs in the background, sending with `send`, until done, VERIFY_END or end(). */
  begin (m: VerifyBegin, send: (m: Message) => boolean): void {
    if (typeof m.id !== 'string' || !/^[0-9a-z-]{1,40}$/.test(m.id) || !Number.isSafeInteger(m.seq) || m.seq < 0) throw new ReplError('PROTOCOL', 'malformed VERIFY_BEGIN')
    this.end() // one at a time: a newer Primary request replaces one it gave up on
    const c = { id: m.id, walk: null as TreeWalk | null, acked: 0, sent: 0, ended: false, wake: null as (() => void) | null, name: VERIFY_SNAPSHOT_PREFIX + m.id }
    this.current = c
    this.respond(c, m.seq, send).catch((err: Error) => {
      if (!c.ended) send({ t: MsgType.VERIFY_ENTRIES, id: c.id, i: c.sent, e: [], err: err.message })
      this.log(`verify ${c.id}: ${err.message}`)
    }).finally(() => {
      c.walk?.close()
      if (c.walk !== null) { try { this.snaps.drop(c.name) } catch (err) { this.log(`verify ${c.id}: cannot delete snapshot ${c.name}: ${(err as Error).message}`) } }
      if (this.current === c) this.current = null
    })
  }

  ack (id: string, n: number): void {
    const c = this.current
    if (c === null || c.id !== id || !Number.isSafeInteger(n)) return
    c.acked = Math.max(c.acked, n)
    const w = c.wake
    c.wake = null
    w?.()
  }

  /** VERIFY_END, the link lost or replaced: the walk stops and its snapshot goes. */
  end (id?: string): void {
    const c = this.current
    if (c === null || (id !== undefined && c.id !== id)) return
    c.ended = true
    const w = c.wake
    c.wake = null
    w?.()
  }

  private async respond (c: NonNullable<VerifyResponder['current']>, seq: number, send: (m: Message) => boolean): Promise<void> {
    this.log(`verify ${c.id}: the Primary compares its tree with this one after sequence number ${seq}`)
    const tree = await this.snaps.takeAt(seq, c.name)
    const walk = c.walk = new TreeWalk(tree)
    if (c.ended) return
    let batch: VerifyEntry[] = []
    let hashBytes = 0
    const flush = async (end: boolean): Promise<void> => {
      while (!c.ended && c.sent - c.acked >= VERIFY_WINDOW_FRAMES) await new Promise<void>((resolve) => { c.wake = resolve })
      if (c.ended) return
      send(end ? { t: MsgType.VERIFY_ENTRIES, id: c.id, i: c.sent++, e: batch, end: 1, r: walk.root! } : { t: MsgType.VERIFY_ENTRIES, id: c.id, i: c.sent++, e: batch })
      batch = []
      hashBytes = 0
    }
    while (!walk.done && !c.ended) {
      const until = Date.now() + VERIFY_SLICE_MS
      while (!walk.done && Date.now() < until) {
        const e = walk.step()
        if (e === null) continue
        batch.push(e)
        hashBytes += e.c?.length ?? 0
        if (batch.length >= VERIFY_FRAME_ENTRIES || hashBytes >= VERIFY_FRAME_HASH_BYTES) break
      }
      if (batch.length >= VERIFY_FRAME_ENTRIES || hashBytes >= VERIFY_FRAME_HASH_BYTES) await flush(false)
      await tick()
    }
    if (c.ended) return
    await flush(true)
    this.log(`verify ${c.id}: sent ${walk.entries} entries (${walk.bytes} bytes read) after sequence number ${seq}`)
  }
}
