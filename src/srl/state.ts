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
 *
 * Every key is written with sync:true. None is written on the write path: where replay starts after
 * a kill -9 follows from the log itself (src/srl/index.ts).
 */
import { ClassicLevel } from 'classic-level'
import { ReplError } from '../errors'

export interface FormatState { version: number, ringBytes: number, role: 'primary' | 'secondary', createdAt: string }
export interface Position { seq: number, offset: number }

export const STATE_FORMAT_VERSION = 1

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

  async close (): Promise<void> {
    await this.db.close()
  }
}
