/**
 * Full synchronization (docs/ARCHITECTURE.md "Full synchronization"): the Primary's SyncSources
 * (one SyncSource per Secondary being synchronized, each told of every record applied) and the
 * Secondary's SyncReceiver (a SyncTarget, and what it records in the SRL's LevelDB state).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import { sys } from '../native'
import { State } from '../format/state'
import type { Record } from '../format/record'
import type { SyncMessage, SyncSums } from '../format/wire'
import type { LogStore } from '../srl/state'
import { isEmptyTree } from '../srl'
import { SyncSource, type SyncMode } from './source'
import { SyncTarget, type SyncPreserver } from './target'

export { SyncSource, type SyncProgress, type SyncMode } from './source'
export { SyncTarget } from './target'
export { ChangeMaps, pathsOf } from './map'
export { VerifySession, VerifyResponder, VERIFY_SNAPSHOT_PREFIX, type VerifyResult, type VerifyProgress, type VerifySnapshots } from './verify'
export type { Difference } from './compare'

/**
 * The Primary's synchronizations in progress. `beforeApply` is the RVG's hook before every record
 * it applies (with the snapshots': src/rvg/interfaces.ts Preserver).
 */
export class SyncSources {
  private readonly active = new Set<SyncSource>()

  constructor (private readonly root: string, private readonly applied: () => number, private readonly log: (line: string) => void) {}

  /** A new synchronization of the Secondary at `address`. */
  start (address: string, mode: SyncMode): SyncSource {
    const s = new SyncSource(this.root, crypto.randomUUID().slice(0, 8), this.applied, mode)
    const close = s.close.bind(s)
    s.close = () => { this.active.delete(s); close() }
    this.active.add(s)
    const compare = mode.checksum ? 'every file\'s chunks' : 'the chunks of files whose size or mtime differ'
    this.log(mode.from !== undefined
      ? `resynchronization from the change map ${s.id} of ${address}: ${mode.from.size} paths changed while it was off the SRL, comparing ${compare}`
      : mode.diff
      ? `synchronization by difference ${s.id} of ${address}: walking ${this.root}, comparing ${compare}`
      : `full synchronization ${s.id} of ${address}: walking ${this.root}`)
    return s
  }

  beforeApply (rec: Record): void {
    for (const s of this.active) s.mark(rec)
  }
}

/** The Secondary's snapshots, as a synchronization needs them (src/snapshot SnapshotSet). */
export interface SyncSnapshots {
  /** Whether this Secondary's data directory is the Primary's after some record (it replicated, and no synchronization is unfinished). */
  consistent (): boolean
  /** Takes snapshot `name` of the data directory now (every logged record applied). */
  take (name: string): Promise<void>
  drop (name: string): void
  names (): string[]
  /** Told before every change a frame makes (copy-on-write). */
  preserver: SyncPreserver
}

/** The snapshot a Secondary keeps of itself while a synchronization makes it inconsistent. */
const SNAP_PREFIX = 'resync-'

/** The Secondary's side of a full synchronization, as its RLINK receiver drives it. */
export class SyncReceiver {
  private readonly target: SyncTarget
  private current: string | null

  private constructor (private readonly root: string, private readonly store: LogStore, current: string | null,
    private checksumAll: boolean, readonly existing: boolean,
    private readonly restartAt: (seq: number) => Promise<void>, private readonly drained: () => Promise<void>, private readonly log: (line: string) => void,
    private readonly snaps: SyncSnapshots | null, private snap: string | null) {
    this.target = new SyncTarget(root)
    this.target.preserver = snaps?.preserver ?? null
    this.current = current
  }

  /**
   * `restartAt(seq)`: the Secondary RVG starts its SRL and applying after record `seq`
   * (src/rvg/secondary.ts restartAt).
   */
  /**
   * `existing`: started with --sync-existing (its data, never replicated from this Primary, may be
   * made the Primary's by difference).
   */
  /**
   * `cacheLost`: the data directory's filesystem lost its page cache since the last run (a power
   * cut, a remount: src/srl Srl.cacheKept false): a file's times may have reached its disk before
   * its bytes, so a synchronization that did not finish compares every file's chunks.
   */
  /**
   * `snaps`: the Secondary's snapshots. A Secondary that was consistent takes one of itself before
   * a synchronization changes anything (`resync-<id>`, VVR's Secondary checkpoint before a DCM
   * resynchronization), so a consistent copy exists until it is done; then it is deleted.
   */
  static async open (root: string, store: LogStore, existing: boolean, cacheLost: boolean, restartAt: (seq: number) => Promise<void>,
    drained: () => Promise<void>, log: (line: string) => void, snaps: SyncSnapshots | null = null): Promise<SyncReceiver> {
    const s = await store.get(State.sync)
    if (s !== undefined) log(`a synchronization (${s.id}) began ${s.startedAt} and did not finish: the data directory is inconsistent until the Primary synchronizes it again (by difference: what it sent is kept${cacheLost ? '; every file compared, as the filesystem lost its cache' : ''})${s.snap !== undefined ? `; snapshot ${s.snap} holds it as it was before` : ''}`)
    // A synchronization's snapshot outlives it only by a crash between its end and the delete.
    for (const n of snaps?.names() ?? []) {
      if (n.startsWith(SNAP_PREFIX) && n !== s?.snap) { snaps!.drop(n); log(`snapshot ${n} deleted: its synchronization is done`) }
    }
    const r = new SyncReceiver(root, store, s?.id ?? null, s !== undefined && (s.c === true || cacheLost), existing, restartAt, drained, log, snaps, s?.snap ?? null)
    r.finishedOne = (await store.get(State.syncDone)) !== undefined
    return r
  }

  /** Whether a synchronization has finished here (its tree was made the Primary's, if at sequence number 0). */
  finishedOne = false

  /** Whether this Secondary ever held the Primary's tree: a synchronization finished here. */
  get finished (): boolean { return this.finishedOne }

  /** The snapshot holding this Secondary's last consistent state while a synchronization runs, or null. */
  get snapshot (): string | null { return this.snap }

  /** The synchronization in progress (the data directory is a mix), or null. */
  get syncing (): string | null { return this.current }

  /**
   * Whether the Primary is to compare every file's chunks: this Secondary's data is its own
   * (--sync-existing), or a synchronization that compared every file did not finish.
   */
  get adopt (): boolean { return this.existing || this.checksumAll }

  private startedAt = 0

  /** The synchronization in progress here, as `status` shows it, or null. */
  get progress (): { id: string, entries: number, bytes: number, compared: number, differing: number, startedAt: string | null, rateBytes: number } | null {
    if (this.current === null) return null
    const t = this.target
    const s = this.startedAt > 0 ? Math.max(0.001, (Date.now() - this.startedAt) / 1000) : 0
    return { id: this.current, entries: t.entries, bytes: t.bytes, compared: t.compared, differing: t.differing, startedAt: this.startedAt > 0 ? new Date(this.startedAt).toISOString() : null, rateBytes: s > 0 ? Math.round(t.bytes / s) : 0 }
  }

  /** Files compared by difference so far, and those that differed. */
  get compared (): { files: number, differing: number } { return { files: this.target.compared, differing: this.target.differing } }

  empty (): boolean { return isEmptyTree(this.root) }

  /** SYNC_BEGIN: `diff`, by difference; `checksum`, comparing every file's chunks. */
  async begin (id: string, srlId: string, diff: boolean, checksum: boolean): Promise<void> {
    // What this Secondary logged is applied first (a resynchronization from a change map: the
    // records it has are a prefix of the Primary's; the synchronization starts after them).
    await this.drained()
    if (this.current === null && this.snaps !== null && this.snaps.consistent()) {
      // Consistent until now: keep that (a synchronization that goes on keeps the first one's).
      const name = SNAP_PREFIX + id
      await this.snaps.take(name)
      this.snap = name
      this.log(`snapshot ${name} taken: the data directory as it is now (consistent), kept until the synchronization is done`)
    }
    await this.store.put(State.sync, { id, srlId, startedAt: new Date().toISOString(), c: checksum || this.checksumAll, ...(this.snap !== null ? { snap: this.snap } : {}) })
    this.checksumAll ||= checksum
    this.target.checksum = checksum
    this.target.compared = this.target.differing = this.target.entries = this.target.bytes = 0
    this.startedAt = Date.now()
    this.current = id
    this.log(`${diff ? 'synchronization by difference' : 'full synchronization'} ${id} from the Primary begins: the data directory is inconsistent until it ends`)
  }

  /** A frame has arrived (it is applied after those before it): read ahead for it. */
  received (m: SyncMessage): void { this.target.received(m) }

  /** The mount is told after each frame applied (names the kernel keeps are dropped: src/fuse/ll-adapter.ts). */
  onChanged: (() => void) | null = null

  async apply (m: SyncMessage): Promise<SyncSums[]> {
    try {
      return await this.target.apply(m)
    } finally {
      this.onChanged?.()
    }
  }

  async finish (seq: number): Promise<void> {
    this.target.closeFile()
    // What was written is durable before the SRL says the tree is the one after `seq`.
    const fd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    try { sys.syncfs(fd) } finally { fs.closeSync(fd) }
    await this.restartAt(seq)
    await this.store.put(State.syncDone, { id: this.current ?? '', seq, at: new Date().toISOString() })
    this.finishedOne = true
    await this.store.del(State.sync)
    if (this.snap !== null) {
      this.snaps?.drop(this.snap)
      this.log(`snapshot ${this.snap} deleted: the synchronization is done`)
      this.snap = null
    }
    const diff = this.target.compared > 0 ? ` (${this.target.differing} of ${this.target.compared} files compared differed)` : ''
    this.log(`synchronization ${this.current ?? ''} done${diff}: the data directory is the Primary's after sequence number ${seq}; ordered replication follows`)
    this.current = null
    this.checksumAll = false
  }

  interrupted (): void {
    this.target.abandonFile()
  }
}
