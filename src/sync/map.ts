/**
 * The change map (docs/ARCHITECTURE.md "SRL overflow protection"): which paths a record changes,
 * and the Primary's persisted maps of the RLINKs that SRL overflow protection took off the SRL
 * (VVR's DCM, data change map: by path and byte span here, not by block).
 *
 * A record marks its path (and destination); a namespace change also its parent directory (whose
 * mtime and names change); a rename both sides as whole trees, since everything below them moved.
 * A record that changes only a file's bytes or attributes marks its parts instead: the span it
 * writes, the size it cuts the file to (partOf). A synchronization sends a marked path again as it
 * is, or a file's marked parts as they are (src/sync/source.ts drain), so a map stands for any
 * number of records.
 *
 * A map is folded from the SRL, not written on the write path: before every release of the SRL
 * (a checkpoint), the records an RLINK in DCM mode has not had are read back from the ring and
 * their paths written to LevelDB in one durable batch, then its position moves past them. A
 * record is released only after its paths are in the map, so a crash of the Primary loses
 * nothing: the records not yet folded are still in the SRL, and the next checkpoint folds them.
 */
import { RecordType, type Record } from '../format/record'
import { State, type Position, type DcmMark, type ChangeMark } from '../format/state'
import { SYNC_CHUNK_BYTES } from '../limits'
import type { LogStore } from '../srl/state'
import type { Srl } from '../srl'
import { parentOf } from './paths'


/**
 * A file's changes since it was sent: per SYNC_CHUNK_BYTES chunk (by index) the spans written,
 * [lo, hi) in order, apart (at most PART_SPANS_PER_CHUNK: past that the two closest are joined),
 * and `cut` the smallest size it was truncated to (Infinity: none).
 */
export interface Parts { cut: number, spans: Map<number, Array<[number, number]>> }

/** A write or fallocate spanning more chunks than this is sent whole (the map stays small). */
const PART_CHUNKS_MAX = 65536

/**
 * Spans kept per chunk: random writes of a database or an image far apart in one chunk stay
 * apart (a pass sends what was written, so the drain converges), and a chunk's list stays short.
 */
const PART_SPANS_PER_CHUNK = 16

/** Adds [lo, hi) to `list` (in order, apart): joins what it touches, then the closest two if too many. */
function addSpan (list: Array<[number, number]>, lo: number, hi: number): void {
  let i = 0
  while (i < list.length && list[i][1] < lo) i++
  let j = i
  while (j < list.length && list[j][0] <= hi) { lo = Math.min(lo, list[j][0]); hi = Math.max(hi, list[j][1]); j++ }
  list.splice(i, j - i, [lo, hi])
  if (list.length <= PART_SPANS_PER_CHUNK) return
  let k = 0
  for (let x = 1; x < list.length - 1; x++) if (list[x + 1][0] - list[x][1] < list[k + 1][0] - list[k][1]) k = x
  list.splice(k, 2, [list[k][0], list[k + 1][1]])
}

export function newParts (): Parts { return { cut: Infinity, spans: new Map() } }

/**
 * Adds a record's part (bytes [o, e) written, size cut to `cut`) to `parts`; false: too many
 * chunks to keep (the file goes whole).
 */
export function addPart (parts: Parts, part: { o: number, e: number, cut: number }): boolean {
  parts.cut = Math.min(parts.cut, part.cut)
  if (part.e <= part.o) return true
  const first = Math.floor(part.o / SYNC_CHUNK_BYTES)
  const last = Math.floor((part.e - 1) / SYNC_CHUNK_BYTES)
  if (last - first >= PART_CHUNKS_MAX || parts.spans.size >= PART_CHUNKS_MAX) return false
  for (let i = first; i <= last; i++) {
    const lo = Math.max(part.o, i * SYNC_CHUNK_BYTES)
    const hi = Math.min(part.e, (i + 1) * SYNC_CHUNK_BYTES)
    const had = parts.spans.get(i)
    if (had === undefined) parts.spans.set(i, [[lo, hi]])
    else addSpan(had, lo, hi)
  }
  return true
}

/** The spans of `parts`, in order. */
export function spansOf (parts: Parts): Array<[number, number]> {
  return [...parts.spans].sort((a, b) => a[0] - b[0]).flatMap(([, list]) => list)
}

/** Parts holding `f`'s spans and cut. */
export function partsFrom (f: { cut: number, spans: Array<[number, number]> }): Parts {
  const parts = newParts()
  parts.cut = f.cut
  for (const [lo, hi] of f.spans) addPart(parts, { o: lo, e: hi, cut: Infinity })
  return parts
}

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
 * The paths record `rec` changes itself, without the parent directories whose names change with
 * them (pathsOf): what a split-brain compares, so that two files made in one directory on both
 * sides do not make the directory a conflict.
 */
export function ownPathsOf (rec: Pick<Record, 'type' | 'meta'>): Array<[string, boolean]> {
  const m = rec.meta
  switch (rec.type) {
    case RecordType.RENAME: return [[m.p!, true], [m.d!, true]]
    case RecordType.LINK: return [[m.p!, false], [m.d!, false]]
    default: return pathsOf(rec).slice(0, 1)
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

/** A path in a change map: everything below it too, or only a file's parts (null: the path whole). */
interface Entry { tree: boolean, parts: Parts | null }

/**
 * Spans kept per path in a persisted map: more are written as the path whole (compared by
 * difference when it is sent), so that a map entry stays a small LevelDB value.
 */
const MAP_SPANS_MAX = 4096

/** Marks `p` whole in `map` (a tree mark covers a plain one); whether that changed the map. */
function mark (map: Map<string, Entry>, p: string, tree: boolean): boolean {
  const had = map.get(p)
  if (had !== undefined && had.parts === null && (had.tree || !tree)) return false
  map.set(p, { tree: tree || (had?.tree ?? false), parts: null })
  return true
}

/** Marks what record `rec` changes in `map`; the paths whose entry changed. */
function markRecord (map: Map<string, Entry>, rec: Pick<Record, 'type' | 'meta' | 'data'>, changed: Set<string>): void {
  const part = partOf(rec)
  if (part === null) {
    for (const [p, tree] of pathsOf(rec)) if (mark(map, p, tree)) changed.add(p)
    return
  }
  const had = map.get(part.p)
  if (had !== undefined && had.parts === null) return
  const e = had ?? { tree: false, parts: newParts() }
  map.set(part.p, e)
  if (!addPart(e.parts!, part)) e.parts = null
  changed.add(part.p)
}

/** An entry as LevelDB keeps it (one with more spans than MAP_SPANS_MAX is made whole, here too). */
function toDcm (e: Entry, c: boolean): DcmMark {
  const v: DcmMark = { t: e.tree ? 1 : 0 }
  if (c) v.c = 1
  if (e.parts === null) return v
  const spans = spansOf(e.parts)
  if (spans.length > MAP_SPANS_MAX) { e.parts = null; return v }
  v.f = 1
  v.s = spans.flat()
  if (e.parts.cut !== Infinity) v.z = e.parts.cut
  return v
}

function fromDcm (v: DcmMark): Entry {
  if (v.f !== 1) return { tree: v.t === 1, parts: null }
  const spans: Array<[number, number]> = []
  const s = v.s ?? []
  for (let i = 0; i + 1 < s.length; i += 2) spans.push([s[i], s[i + 1]])
  return { tree: false, parts: partsFrom({ cut: v.z ?? Infinity, spans }) }
}

/** A copy of `e` as a resynchronization takes it. */
function toChangeMark (e: Entry): ChangeMark {
  return { tree: e.tree, parts: e.parts === null ? null : { cut: e.parts.cut, spans: spansOf(e.parts) } }
}

/** The Primary's change maps, one per RLINK in DCM mode, kept in memory and in LevelDB. */
export class ChangeMaps {
  private readonly maps = new Map<string, Map<string, Entry>>()
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
      const m = new Map<string, Entry>()
      for (const [k, v] of await store.entries(fam)) {
        m.set(k.name.slice(fam.prefix.length), fromDcm(v))
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
      puts.push([fam.key(p), toDcm(map.get(p)!, true)])
    }
    await this.store.batch(puts)
    this.compare.add(address)
  }

  /** Paths in the map of `address` (0: none, or not in DCM mode). */
  size (address: string): number { return this.maps.get(address)?.size ?? 0 }

  /**
   * What a resynchronization of `address` sends: its map plus what the SRL's records after `since`
   * (not folded yet) mark, a copy.
   */
  marks (address: string, since: Position): Map<string, ChangeMark> {
    const m = new Map<string, Entry>()
    for (const [p, e] of this.maps.get(address) ?? []) m.set(p, { tree: e.tree, parts: e.parts === null ? null : partsFrom(toChangeMark(e).parts!) })
    const changed = new Set<string>()
    for (const r of this.srl.recordsAfter(since)) {
      this.lostIbc(address, r.record)
      markRecord(m, r.record, changed)
    }
    return new Map([...m].map(([p, e]) => [p, toChangeMark(e)]))
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
    const changed = new Set<string>()
    let at = from
    for (const r of this.srl.recordsAfter(from, upto)) {
      this.lostIbc(address, r.record)
      markRecord(map, r.record, changed)
      at = { seq: r.record.seq, offset: r.end }
    }
    const c = this.compare.has(address)
    await this.store.batch([...changed].map((p) => [fam.key(p), toDcm(map.get(p)!, c)]))
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
