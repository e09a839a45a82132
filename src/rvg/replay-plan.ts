/**
 * Exact replay after a power cut (issue 16; docs/ARCHITECTURE.md, "Recovery after a power cut").
 * Pure: it decides, from the records since the last checkpoint and the data cursor read from the
 * data directory, what each record's replay does; the caller applies the result.
 *
 * What can be on disk. The last checkpoint synced the data directory (syncfs) with every record up
 * to it applied. After it, the data directory's filesystem journals each metadata change (a name,
 * a link, a mode, an owner, an xattr, a size, a time) in the order it was made, and commits them in
 * that order; file contents are written back in any order, any part of them. The data cursor is a
 * metadata change made before each record is applied, naming C, the last non-WRITE record applied
 * (src/apply/data-cursor.ts). So if the cursor on disk names C, every metadata change of every
 * record up to C is on disk; of the records after C, only the first non-WRITE one (R) can have
 * any metadata change on disk (the cursor written before R+1 is not). R's first change is its
 * namespace change: whether it is on disk is seen from the names (done()). B, the boundary, is R
 * if so, else C. (Records the SRL lost are put back before planning: replay.ts, restoreTail.)
 *
 * The plan, record by record:
 * - up to B, a namespace record (CREATE ... RENAME) is not applied again: the names are as it left
 *   them. Its one side effect that a replayed content record can undo, the mtime of the
 *   directories whose entries it changed, is set again ('times'). R itself, when it is B, is
 *   applied again with the replay tolerances (its namespace change is a no-op; its owner and times
 *   may not have been on disk).
 * - up to B, every other record (content: WRITE, TRUNCATE, FALLOCATE; attributes: CHMOD, CHOWN,
 *   UTIMENS, SETXATTR, REMOVEXATTR) is applied again, in order, to the object it named, found by
 *   a model of the namespace through the records up to B (Namespace: a rename of it or of a
 *   directory above it, a link, an unlink of one of its names). Each sets an absolute state,
 *   so applying the whole run again, in order, from any mix of its effects on disk, ends in the
 *   state after B. An object none of whose names is left is gone: its record is skipped.
 * - after B, every record is applied as it was the first time: the data directory is exactly in
 *   the state after B.
 *
 * Without a cursor (a filesystem without xattrs, a data directory last used by a version without
 * one), or with one past the end of the SRL, every record is applied with the replay tolerances,
 * as before: exact after a kill -9, not always after a power cut.
 */
import { RecordType, type Record } from '../format/record'

export const NAMESPACE_TYPES: ReadonlySet<RecordType> = new Set([RecordType.CREATE, RecordType.MKDIR, RecordType.MKNOD,
  RecordType.SYMLINK, RecordType.LINK, RecordType.UNLINK, RecordType.RMDIR, RecordType.RENAME])

/** Records after whose apply the data cursor is set: every record that changes the data directory, but WRITE. */
export function setsDataCursor (type: RecordType): boolean {
  return type !== RecordType.WRITE && type !== RecordType.VOID && type !== RecordType.WRAP && type !== RecordType.IBC
}

export interface PlanRecord { record: Record, end: number }

export type StepKind =
  /** applied again with the replay tolerances, as named */
  | 'apply'
  /** not applied: voided, done (namespace, up to B), gone, or a marker */
  | 'skip'
  /** a namespace record up to B: only the mtime of its directories (`dirs`, carried forward) */
  | 'times'

export interface Step { kind: StepKind, record: Record, end: number, dirs?: string[] }

export interface Plan {
  steps: Step[]
  /** The data cursor's record (C), the boundary (B), or null without a usable cursor. */
  cursor: number | null
  boundary: number | null
  /** The cursor names a record past the last one in the SRL: the data directory is ahead of the log. */
  ahead: boolean
}

const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/'

/**
 * The namespace as the records since the checkpoint change it: each name the records mention is
 * bound to an object (a number), so a link, a rename of a directory above it, a rename over it or
 * an unlink is followed to the objects themselves. A name is bound when first mentioned (its object
 * existed at the checkpoint), or by the record that creates it.
 */
export class Namespace {
  private readonly names = new Map<string, number>()
  private next = 0

  /** The object `p` names now (binding it if first mentioned). */
  idOf (p: string): number {
    let id = this.names.get(p)
    if (id === undefined) { id = this.next++; this.names.set(p, id) }
    return id
  }

  /** Applies namespace record `r` (a record of another type changes no name). */
  apply (r: Record): void {
    const m = r.meta
    switch (r.type) {
      case RecordType.CREATE: case RecordType.MKDIR: case RecordType.MKNOD: case RecordType.SYMLINK:
        this.names.set(m.p!, this.next++)
        break
      case RecordType.LINK:
        this.names.set(m.d!, this.idOf(m.p!))
        break
      case RecordType.UNLINK: case RecordType.RMDIR:
        this.names.delete(m.p!)
        break
      case RecordType.RENAME: {
        const from = m.p!
        const to = m.d!
        const id = this.idOf(from)
        if (this.names.get(to) === id) break // two names of one object: rename changes nothing
        for (const n of [...this.names.keys()]) if (n === to || n.startsWith(to + '/')) this.names.delete(n)
        const moved: Array<[string, number]> = []
        for (const [n, x] of this.names) if (n === from || n.startsWith(from + '/')) moved.push([n, x])
        for (const [n] of moved) this.names.delete(n)
        for (const [n, x] of moved) this.names.set(to + n.slice(from.length), x)
        this.names.set(to, id)
        break
      }
      default:
        break
    }
  }

  /** A name object `id` has now, preferring `p`; null if it has none (gone). */
  nameOf (id: number, p?: string): string | null {
    if (p !== undefined && this.names.get(p) === id) return p
    for (const [n, x] of this.names) if (x === id) return n
    return null
  }
}

/**
 * The plan for `records` (in sequence order, from the last checkpoint to `logEnd`, the SRL's last
 * sequence number), given the data cursor `cursor` read from the data directory, and `done(r)`:
 * whether namespace record r's change is in the data directory now (called at most once, for R,
 * before anything is applied).
 */
export function planReplay (records: PlanRecord[], cursor: number | null, logEnd: number, done: (r: Record) => boolean): Plan {
  const voided = new Set<number>()
  for (const { record } of records) if (record.type === RecordType.VOID) voided.add(record.meta.v!)
  const live = (r: Record): boolean => !voided.has(r.seq) && r.type !== RecordType.VOID && r.type !== RecordType.WRAP && r.type !== RecordType.IBC
  const ahead = cursor !== null && cursor > logEnd
  // A cursor before the run is usable too: every record up to the checkpoint is on disk, and it
  // is set at every start (recovery ends with it), so it never names a record of another log.
  if (cursor === null || ahead || records.length === 0) {
    return {
      steps: records.map(({ record, end }) => ({ kind: live(record) ? 'apply' : 'skip', record, end })),
      cursor,
      boundary: null,
      ahead
    }
  }
  const c = cursor
  const r = records.find(({ record }) => record.seq > c && live(record) && setsDataCursor(record.type))?.record
  const b = r !== undefined && NAMESPACE_TYPES.has(r.type) && done(r) ? r.seq : c
  // Follow the names through the records up to B: which object each record up to B named, and
  // a name that object has in the state after B (the data directory's now).
  const ns = new Namespace()
  const targets = new Map<number, number[]>() // seq -> object ids (the record's object, or its directories)
  for (const { record } of records) {
    if (record.seq > b) break
    if (!live(record)) continue
    const m = record.meta
    if (NAMESPACE_TYPES.has(record.type)) {
      const dirs = [parentOf(m.p!)]
      if ((record.type === RecordType.RENAME || record.type === RecordType.LINK) && parentOf(m.d!) !== dirs[0]) dirs.push(parentOf(m.d!))
      targets.set(record.seq, dirs.map((d) => ns.idOf(d)))
      ns.apply(record)
    } else {
      targets.set(record.seq, [ns.idOf(m.p!)])
    }
  }
  const steps: Step[] = []
  for (const { record, end } of records) {
    if (!live(record)) { steps.push({ kind: 'skip', record, end }); continue }
    if (record.seq > b) { steps.push({ kind: 'apply', record, end }); continue }
    if (record.seq === b && b !== c) { steps.push({ kind: 'apply', record, end }); continue }
    const m = record.meta
    const ids = targets.get(record.seq)!
    if (NAMESPACE_TYPES.has(record.type)) {
      if (m.t === undefined || m.t === null) { steps.push({ kind: 'skip', record, end }); continue }
      const dirs = ids.map((id) => ns.nameOf(id)).filter((d): d is string => d !== null)
      steps.push({ kind: dirs.length > 0 ? 'times' : 'skip', record, end, dirs })
      continue
    }
    const now = ns.nameOf(ids[0], m.p)
    if (now === null) { steps.push({ kind: 'skip', record, end }); continue }
    steps.push({ kind: 'apply', record: now === m.p ? record : { ...record, meta: { ...m, p: now } }, end })
  }
  return { steps, cursor: c, boundary: b, ahead: false }
}
