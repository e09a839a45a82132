/**
 * LogStore: the SRL's small, indexed state in LevelDB (classic-level). The log's bytes live in the
 * ring (src/srl/ring.ts); LevelDB keeps where things are. LevelDB's lock on the directory is what
 * makes one daemon the only owner of a state directory. The keys and their values are in
 * src/format/state.ts; this class takes only those Key and Family objects.
 */
import { ClassicLevel } from 'classic-level'
import { ReplError } from '../errors'
import type { Key, Family } from '../format/state'
export { STATE_FORMAT_VERSION, STATE_FORMAT_VERSIONS_READ, type FormatState, type Position } from '../format/state'

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

  async get<T> (key: Key<T>): Promise<T | undefined> {
    return (await this.db.get(key.name)) as T | undefined
  }

  /** Every write is durable (sync) unless `sync` is false. */
  async put<T> (key: Key<T>, value: T, sync = true): Promise<void> {
    await this.db.put(key.name, value, { sync })
  }

  async del<T> (key: Key<T>, sync = true): Promise<void> {
    await this.db.del(key.name, { sync })
  }

  /** Every key of the family, as [the key, its value], in key order. */
  async entries<T> (family: Family<T>): Promise<Array<[Key<T>, T]>> {
    const out: Array<[Key<T>, T]> = []
    for await (const [k, v] of this.db.iterator({ gte: family.prefix, lt: family.prefix + '\xff' })) out.push([{ name: k }, v as T])
    return out
  }

  /** Puts and deletes in one atomic, durable LevelDB batch. */
  async batch (puts: Array<[Key<unknown>, unknown]>, dels: Array<Key<unknown>> = []): Promise<void> {
    if (puts.length === 0 && dels.length === 0) return
    await this.db.batch([
      ...puts.map(([k, v]) => ({ type: 'put' as const, key: k.name, value: v })),
      ...dels.map((k) => ({ type: 'del' as const, key: k.name }))
    ], { sync: true })
  }

  /** Deletes every key of the family (durably). */
  async clear<T> (family: Family<T>): Promise<void> {
    await this.db.clear({ gte: family.prefix, lt: family.prefix + '\xff' })
    await this.db.put('clear-barrier', 0, { sync: true })
    await this.db.del('clear-barrier', { sync: true })
  }

  /** The id part of a family member's key. */
  static idOf<T> (family: Family<T>, key: Key<T>): string {
    return key.name.slice(family.prefix.length)
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
