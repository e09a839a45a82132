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
import type { SyncMessage } from '../format/wire'
import type { LogStore } from '../srl/state'
import { isEmptyTree } from '../srl'
import { SyncSource } from './source'
import { SyncTarget } from './target'

export { SyncSource, type SyncProgress } from './source'
export { SyncTarget } from './target'

/**
 * The Primary's synchronizations in progress. `beforeApply` is the RVG's hook before every record
 * it applies (with the snapshots': src/rvg/interfaces.ts Preserver).
 */
export class SyncSources {
  private readonly active = new Set<SyncSource>()

  constructor (private readonly root: string, private readonly applied: () => number, private readonly log: (line: string) => void) {}

  /** A new synchronization of the Secondary at `address`. */
  start (address: string): SyncSource {
    const s = new SyncSource(this.root, crypto.randomUUID().slice(0, 8), this.applied)
    const close = s.close.bind(s)
    s.close = () => { this.active.delete(s); close() }
    this.active.add(s)
    this.log(`full synchronization ${s.id} of ${address}: walking ${this.root}`)
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
    private readonly restartAt: (seq: number) => Promise<void>, private readonly log: (line: string) => void) {
    this.target = new SyncTarget(root)
    this.current = current
  }

  /**
   * `restartAt(seq)`: the Secondary RVG starts its SRL and applying after record `seq`
   * (src/rvg/secondary.ts restartAt).
   */
  static async open (root: string, store: LogStore, restartAt: (seq: number) => Promise<void>, log: (line: string) => void): Promise<SyncReceiver> {
    const s = await store.get(State.sync)
    if (s !== undefined) log(`a full synchronization (${s.id}) began ${s.startedAt} and did not finish: the data directory is inconsistent until the Primary synchronizes it again`)
    return new SyncReceiver(root, store, s?.id ?? null, restartAt, log)
  }

  /** The synchronization in progress (the data directory is a mix), or null. */
  get syncing (): string | null { return this.current }

  empty (): boolean { return isEmptyTree(this.root) }

  async begin (id: string, srlId: string): Promise<void> {
    await this.store.put(State.sync, { id, srlId, startedAt: new Date().toISOString() })
    this.current = id
    this.log(`full synchronization ${id} from the Primary begins: the data directory is inconsistent until it ends`)
  }

  apply (m: SyncMessage): void {
    this.target.apply(m)
  }

  async finish (seq: number): Promise<void> {
    this.target.closeFile()
    // What was written is durable before the SRL says the tree is the one after `seq`.
    const fd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    try { sys.syncfs(fd) } finally { fs.closeSync(fd) }
    await this.restartAt(seq)
    await this.store.del(State.sync)
    this.log(`full synchronization ${this.current ?? ''} done: the data directory is the Primary's after sequence number ${seq}; ordered replication follows`)
    this.current = null
  }

  interrupted (): void {
    this.target.closeFile()
  }
}
