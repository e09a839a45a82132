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
import { SyncTarget } from './target'

export { SyncSource, type SyncProgress, type SyncMode } from './source'
export { SyncTarget } from './target'

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
    this.log(mode.diff
      ? `synchronization by difference ${s.id} of ${address}: walking ${this.root}, comparing ${mode.checksum ? 'every file\'s chunks' : 'the chunks of files whose size or mtime differ'}`
      : `full synchronization ${s.id} of ${address}: walking ${this.root}`)
    return s
  }

  beforeApply (rec: Record): void {
    for (const s of this.active) s.mark(rec)
  }
}

/** The Secondary's side of a full synchronization, as its RLINK receiver drives it. */
export class SyncReceiver {
  private readonly target: SyncTarget
  private current: string | null

  private constructor (private readonly root: string, private readonly store: LogStore, current: string | null,
    private checksumAll: boolean, readonly existing: boolean,
    private readonly restartAt: (seq: number) => Promise<void>, private readonly log: (line: string) => void) {
    this.target = new SyncTarget(root)
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
  static async open (root: string, store: LogStore, existing: boolean, cacheLost: boolean, restartAt: (seq: number) => Promise<void>, log: (line: string) => void): Promise<SyncReceiver> {
    const s = await store.get(State.sync)
    if (s !== undefined) log(`a synchronization (${s.id}) began ${s.startedAt} and did not finish: the data directory is inconsistent until the Primary synchronizes it again (by difference: what it sent is kept${cacheLost ? '; every file compared, as the filesystem lost its cache' : ''})`)
    return new SyncReceiver(root, store, s?.id ?? null, s !== undefined && (s.c === true || cacheLost), existing, restartAt, log)
  }

  /** The synchronization in progress (the data directory is a mix), or null. */
  get syncing (): string | null { return this.current }

  /**
   * Whether the Primary is to compare every file's chunks: this Secondary's data is its own
   * (--sync-existing), or a synchronization that compared every file did not finish.
   */
  get adopt (): boolean { return this.existing || this.checksumAll }

  /** Files compared by difference so far, and those that differed. */
  get compared (): { files: number, differing: number } { return { files: this.target.compared, differing: this.target.differing } }

  empty (): boolean { return isEmptyTree(this.root) }

  /** SYNC_BEGIN: `diff`, by difference; `checksum`, comparing every file's chunks. */
  async begin (id: string, srlId: string, diff: boolean, checksum: boolean): Promise<void> {
    await this.store.put(State.sync, { id, srlId, startedAt: new Date().toISOString(), c: checksum || this.checksumAll })
    this.checksumAll ||= checksum
    this.target.checksum = checksum
    this.target.compared = this.target.differing = 0
    this.current = id
    this.log(`${diff ? 'synchronization by difference' : 'full synchronization'} ${id} from the Primary begins: the data directory is inconsistent until it ends`)
  }

  async apply (m: SyncMessage): Promise<SyncSums[]> {
    return await this.target.apply(m)
  }

  async finish (seq: number): Promise<void> {
    this.target.closeFile()
    // What was written is durable before the SRL says the tree is the one after `seq`.
    const fd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    try { sys.syncfs(fd) } finally { fs.closeSync(fd) }
    await this.restartAt(seq)
    await this.store.del(State.sync)
    const diff = this.target.compared > 0 ? ` (${this.target.differing} of ${this.target.compared} files compared differed)` : ''
    this.log(`synchronization ${this.current ?? ''} done${diff}: the data directory is the Primary's after sequence number ${seq}; ordered replication follows`)
    this.current = null
    this.checksumAll = false
  }

  interrupted (): void {
    this.target.abandonFile()
  }
}
