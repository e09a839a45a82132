/**
 * LogStore: the SRL's small, indexed state in LevelDB (classic-level). The log's bytes live in the
 * ring (src/srl/ring.ts); LevelDB keeps where things are: the format, the boot id, the durable checkpoint
 * that bounds the ring's tail. LevelDB's lock on the directory is what makes one daemon the
 * only owner of a state directory.
 *
 * Keys (strings; values JSON, see docs/FORMAT.md):
 *   format      {version, ringBytes, role, createdAt}
 *   boot        "<boot id>"             the kernel boot id of the last completed recovery (tells a
 *                                        kill -9 from a reboot at the next open)
 *   durable     {seq, offset}           last record whose effect the data directory has synced; the ring's tail
 *   rlink/<HOST:PORT>  {seq, offset, paused}   Primary: what that Secondary has data-acked (records after
 *                                        it are retained for it), and whether replication to it is paused
 *   follow      {srlId, rds}            Secondary: the Primary SRL it follows (set by its first Primary)
 *
 * Every key is written with sync:true. None is written on the write path: where replay starts after
 * a kill -9 follows from the log itself (src/srl/index.ts).
 */
import { ClassicLevel } from 'classic-level'
import { ReplError } from '../errors'

export interface FormatState {
  version: number
  ringBytes: number
  role: 'primary' | 'secondary'
  createdAt: string
  /** Random identity of this SRL (state version 2). A Secondary follows exactly one Primary SRL. */
  srlId?: string
}
export interface Position { seq: number, offset: number }

export const STATE_FORMAT_VERSION = 2
/** Older state versions this build opens, upgrading them in place (1 -> 2: adds format.srlId). */
export const STATE_FORMAT_VERSIONS_READ = [1, 2]

export class LogStore {
  private constructor (private readonly db: ClassicLevel<string, unknown>) {}

  static async open (dir: string, owner: string = dir): Promise<LogStore> {
    const db = new ClassicLevel<string, unknown>(dir, { valueEncoding: 'json' })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new ReplError('STATE_LOCKED', `state directory ${owner} is locked by another running replicafs daemon`, { cause: err })
      }
      throw new ReplError('LOG_CORRUPT', `cannot open the SRL state database ${dir}: ${(cause as Error | undefined)?.message ?? (err as Error).message}`, { cause: err })
    }
    return new LogStore(db)
  }

  async get<T> (key: string): Promise<T | undefined> {
    return (await this.db.get(key)) as T | undefined
  }

  async put (key: string, value: unknown, sync: boolean): Promise<void> {
    await this.db.put(key, value, { sync })
  }

  async del (key: string, sync: boolean): Promise<void> {
    await this.db.del(key, { sync })
  }

  /** Every key with this prefix and its value. */
  async entries<T> (prefix: string): Promise<Array<[string, T]>> {
    const out: Array<[string, T]> = []
    for await (const [k, v] of this.db.iterator({ gte: prefix, lt: prefix + '\xff' })) out.push([k, v as T])
    return out
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
