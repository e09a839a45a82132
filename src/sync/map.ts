/**
 * The change map (docs/ARCHITECTURE.md "SRL overflow protection"): which paths a record changes,
 * and the Primary's persisted maps of the RLINKs that SRL overflow protection took off the SRL
 * (VVR's DCM, data change map: by path here, not by block).
 *
 * A record marks its path (and destination); a namespace change also its parent directory (whose
 * mtime and names change); a rename both sides as whole trees, since everything below them moved.
 * A synchronization sends a marked path again as it is (src/sync/source.ts drain), so a map of
 * paths stands for any number of records.
 *
 * A map is folded from the SRL, not written on the write path: before every release of the SRL
 * (a checkpoint), the records an RLINK in DCM mode has not had are read back from the ring and
 * their paths written to LevelDB in one durable batch, then its position moves past them. A
 * record is released only after its paths are in the map, so a crash of the Primary loses
 * nothing: the records not yet folded are still in the SRL, and the next checkpoint folds them.
 */
import { RecordType, type Record } from '../format/record'
import { State, type Position, type DcmMark } from '../format/state'
import type { LogStore } from '../srl/state'
import type { Srl } from '../srl'
import { parentOf } from './paths'


/** The paths record `rec` changes: [path, whether everything below it too]. */
export function pathsOf (rec: Pick<Record, 'type' | 'meta'>): Array<[string, boolean]> {
  const m = rec.meta
  switch (rec.type) {
    case RecordType.WRITE: case RecordType.TRUNCATE: case RecordType.FALLOCATE:
    case RecordType.CHMOD: case RecordType.CHOWN: case RecordType.UTIMENS:
    case RecordType.SETXATTR: case RecordType.REMOVEXATTR:
      return [[m.p!, false]]
    case RecordType.CREATE: case RecordType.MKDIR: case RecordType.MKNOD: case RecordType.SYMLINK:
    case RecordType.UNLINK: case RecordType.RMDIR:
      return [[m.p!, false], [parentOf(m.p!), false]]
    case RecordType.LINK:
      return [[m.p!, false], [m.d!, false], [parentOf(m.d!), false]]
    case RecordType.RENAME:
      return [[m.p!, true], [m.d!, true], [parentOf(m.p!), false], [parentOf(m.d!), false]]
    default: // VOID, IBC, WRAP change no path
      return []
  }
}

/**
 * What record `rec` changes when that is only a file's bytes or attributes, not a name: its path,
 * the span of bytes it writes [o, e) (e = o: none), and the size it cuts the file to (a truncate;
 * else Infinity). null: it changes more (a name, a directory), or nothing.
 */
export function partOf (rec: Pick<Record, 'type' | 'meta' | 'data'>): { p: string, o: number, e: number, cut: number } | null {
  const m = rec.meta
  switch (rec.type) {
    case RecordType.WRITE: return { p: m.p!, o: m.o!, e: m.o! + rec.data.length, cut: Infinity }
    case RecordType.FALLOCATE: return { p: m.p!, o: m.o!, e: m.o! + m.l!, cut: Infinity }
    case RecordType.TRUNCATE: return { p: m.p!, o: 0, e: 0, cut: m.s! }
    case RecordType.CHMOD: case RecordType.CHOWN: case RecordType.UTIMENS:
    case RecordType.SETXATTR: case RecordType.REMOVEXATTR:
      return { p: m.p!, o: 0, e: 0, cut: Infinity }
    default:
      return null
  }
}

/** Marks `p` in `map` (a tree mark covers a plain one); whether that changed the map. */
function mark (map: Map<string, boolean>, p: string, tree: boolean): boolean {
  const had = map.get(p)
  if (had === true || (had === false && !tree)) return false
  map.set(p, tree)
  return true
}

/** The Primary's change maps, one per RLINK in DCM mode, kept in memory and in LevelDB. */
export class ChangeMaps {
  private readonly maps = new Map<string, Map<string, boolean>>()
  /** RLINKs whose map has a path to compare chunk by chunk (verify --repair: its size and mtime may be the Primary's). */
  private readonly compare = new Set<string>()
  /** IBC messages said to be lost (address and sequence number), said once. */
  private readonly lost = new Set<string>()

  private constructor (private readonly store: LogStore, private readonly srl: Srl, private readonly log: (line: string) => void) {}

  /** Loads the maps of `addresses` (the RLINKs in DCM mode). */
  static async open (store: LogStore, srl: Srl, addresses: string[], log: (line: string) => void = () => {}): Promise<ChangeMaps> {
    const c = new ChangeMaps(store, srl, log)
    for (const a of addresses) {
      const fam = State.dcm(a)
      const m = new Map<string, boolean>()
      for (const [k, v] of await store.entries(fam)) {
        m.set(k.name.slice(fam.prefix.length), v.t === 1)
        if (v.c === 1) c.compare.add(a)
      }
      c.maps.set(a, m)
    }
    return c
  }

  /** Whether a resynchronization of `address` compares every chunk (a path in its map came from verify --repair). */
  compareAll (address: string): boolean { return this.compare.has(address) }

  /**
   * Adds `paths` (path -> everything below it too), found to differ by a verify, to the map of
   * `address`, durably, each to be compared chunk by chunk.
   */
  async add (address: string, paths: Map<string, boolean>): Promise<void> {
    let map = this.maps.get(address)
    if (map === undefined) { map = new Map(); this.maps.set(address, map) }
    const fam = State.dcm(address)
    const puts: Array<[ReturnType<typeof fam.key>, DcmMark]> = []
    for (const [p, tree] of paths) {
      mark(map, p, tree)
      puts.push([fam.key(p), { t: map.get(p) === true ? 1 : 0, c: 1 }])
    }
    await this.store.batch(puts)
    this.compare.add(address)
  }

  /** Paths in the map of `address` (0: none, or not in DCM mode). */
  size (address: string): number { return this.maps.get(address)?.size ?? 0 }

  /**
   * What a resynchronization of `address` sends: its map plus the paths of the SRL's records after
   * `since` (not folded yet), as path -> whether everything below it too.
   */
  marks (address: string, since: Position): Map<string, boolean> {
    const m = new Map(this.maps.get(address) ?? [])
    for (const r of this.srl.recordsAfter(since)) {
      this.lostIbc(address, r.record)
      for (const [p, tree] of pathsOf(r.record)) mark(m, p, tree)
    }
    return m
  }

  /**
   * Adds the paths of every record after `from` up to sequence number `upto` in the SRL to the map
   * of `address`, durably, and returns the position after the last of them (where the RLINK's
   * position moves).
   */
  async fold (address: string, from: Position, upto: number): Promise<Position> {
    let map = this.maps.get(address)
    if (map === undefined) { map = new Map(); this.maps.set(address, map) }
    const fam = State.dcm(address)
    const puts: Array<[ReturnType<typeof fam.key>, { t: 0 | 1 }]> = []
    let at = from
    for (const r of this.srl.recordsAfter(from, upto)) {
      this.lostIbc(address, r.record)
      for (const [p, tree] of pathsOf(r.record)) if (mark(map, p, tree)) puts.push([fam.key(p), { t: tree ? 1 : 0 }])
      at = { seq: r.record.seq, offset: r.end }
    }
    await this.store.batch(puts)
    return at
  }

  /**
   * A record the map takes is an IBC message: a map of paths cannot carry it, so that Secondary
   * never gets it; said, not skipped silently. (VVR's DCM carries no IBC message either.)
   */
  private lostIbc (address: string, rec: Record): void {
    if (rec.type !== RecordType.IBC) return
    const key = `${address} ${rec.seq}`
    if (this.lost.has(key)) return // read again: a resynchronization's start, then its fold
    this.lost.add(key)
    this.log(`RLINK to ${address}: the IBC message for ${rec.meta.n ?? '?'} (sequence number ${rec.seq}) is not delivered to this Secondary: its RLINK is in DCM mode, and a change map carries no IBC message`)
  }

  /** The map of `address` is no longer needed (its Secondary was resynchronized from it). */
  async clear (address: string): Promise<void> {
    this.maps.delete(address)
    this.compare.delete(address)
    await this.store.clear(State.dcm(address))
  }
}
