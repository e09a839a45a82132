/**
 * Replay at start, on both sides. The Primary replays `srl.pending` (from the last non-WRITE record
 * after a kill -9, from the last checkpoint after a reboot or a remount; src/srl/index.ts); the
 * Secondary, after a reboot, the records from its checkpoint up to the boundary (then its apply
 * loop goes on). What each record's replay does is planned from the data cursor (replay-plan.ts):
 * records whose changes the data directory has are not applied again, content records are applied
 * again to the object they named, and records after the boundary are applied as the first time.
 * A record whose VOID follows it is skipped.
 *
 * On the Primary, first: records whose changes reached the data directory while the SRL lost them
 * with its unsynced tail (a power cut between the data filesystem's journal commit and the SRL's
 * fdatasync) are put back into the SRL from the data cursor's tail (restoreTail).
 */
import fs from 'node:fs'
import type { Srl } from '../srl'
import { RecordType, type Record, type RecordMeta, type Timespec } from '../format/record'
import type { Position } from '../format/state'
import type { DataCursorValue } from '../format/data-cursor'
import { applyRecordSync, setDirMtime, type DataCursor, type FdCache } from '../apply'
import { ReplError, errnoFor } from '../errors'
import { FUSE_WRITE_BYTES_MAX } from '../limits'
import type { Preserver } from './interfaces'
import { planReplay, setsDataCursor, Namespace, NAMESPACE_TYPES, type Plan, type PlanRecord } from './replay-plan'

const EMPTY = Buffer.alloc(0)

/** Whether namespace record `r`'s change is in the data directory `root` (replay-plan.ts, done()). */
export function namespaceDone (root: string, r: Record): boolean {
  const exists = (p: string): boolean => fs.lstatSync(root + p, { throwIfNoEntry: false }) !== undefined
  switch (r.type) {
    case RecordType.CREATE: case RecordType.MKDIR: case RecordType.MKNOD: case RecordType.SYMLINK: return exists(r.meta.p!)
    case RecordType.LINK: return exists(r.meta.d!)
    case RecordType.UNLINK: case RecordType.RMDIR: case RecordType.RENAME: return !exists(r.meta.p!)
    default: return false
  }
}

/**
 * Puts back into the SRL the records of the data cursor's tail that the SRL lost (sequence numbers
 * past its end) and whose changes the data directory has: every non-WRITE record as it was (the
 * last one only if its change is there), and, for the files the lost WRITEs changed, a WRITE of
 * what the data directory holds now over the ranges they covered, appended last. Then the SRL is
 * synced. Returns the records put back (applied already) and the data cursor's `c` to plan the
 * replay with: every record in the SRL if the tail went past its end.
 */
export function restoreTail (srl: Srl, root: string, value: DataCursorValue | null, log?: (line: string) => void): { restored: PlanRecord[], c: number | null } {
  if (value === null) return { restored: [], c: null }
  const end = srl.lastSeq
  // (a run of WRITEs, seq..k, is lost if k is)
  const lost = value.t.filter(([s, , m]) => (m.k ?? s) > end).sort((a, b) => a[0] - b[0])
  if (lost.length === 0) return { restored: [], c: value.c }
  // Only a queued write named before its reservation and never appended (h: 1; a kill -9 between
  // the two, when the SRL lost nothing): its bytes never reached the file, but the reservation may
  // have set the file's mtime. Log that mtime (a UTIMENS, after every record replay applies), so
  // the SRL describes the data directory exactly; the rest replays as planned from the cursor.
  if (lost.every(([, type, m]) => type === RecordType.WRITE && m.h === 1)) {
    const restored: PlanRecord[] = []
    for (const p of new Set(lost.map(([, , m]) => m.p!))) {
      const st = fs.lstatSync(root + p, { throwIfNoEntry: false, bigint: true })
      if (st === undefined || !st.isFile()) continue
      const meta: RecordMeta = { p, a: null, t: [Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n)] }
      const r = srl.append(RecordType.UTIMENS, meta)
      restored.push({ record: { type: RecordType.UTIMENS, seq: r.seq, meta, data: EMPTY }, end: r.end })
    }
    if (restored.length > 0) {
      srl.syncNow()
      log?.(`a write (record ${lost[0][0]}) was stopped between its reservation and its append: logged the mtime the reservation may have given ${lost[0][2].p!} (record ${restored[0].record.seq})`)
    }
    return { restored, c: value.c }
  }
  if (lost[0][0] > end + 1) {
    log?.(`the data directory's data cursor lists SRL records from sequence number ${lost[0][0]}, but the SRL ends at ${end}: records ${end + 1}..${lost[0][0] - 1} are lost and cannot be put back; the data directory may hold changes no Secondary will receive`)
    return { restored: [], c: value.c }
  }
  const voided = new Set(lost.filter(([, t]) => t === RecordType.VOID).map(([, , m]) => m.v!))
  let keep = lost.filter(([s, t]) => t !== RecordType.VOID && !voided.has(s))
  // The last non-WRITE record's change may not be there (the cursor is written before it); if
  // not, nothing after it happened (a change waits for every write before it; writes after it
  // were appended after its reply).
  let last = -1
  for (let i = keep.length - 1; i >= 0; i--) if (keep[i][1] !== RecordType.WRITE) { last = i; break }
  if (last >= 0) {
    const [s, type, meta] = keep[last]
    if (NAMESPACE_TYPES.has(type) && !namespaceDone(root, { type, seq: s, meta, data: EMPTY })) keep = keep.slice(0, last)
  }
  const ns = new Namespace()
  const written = new Map<number, Array<[number, number]>>()
  const restored: PlanRecord[] = []
  for (const [, type, meta] of keep) {
    if (type === RecordType.WRITE) {
      const id = ns.idOf(meta.p!)
      const ranges = written.get(id) ?? []
      ranges.push([meta.o!, meta.o! + meta.l!])
      written.set(id, ranges)
      continue
    }
    const m = { ...meta } as RecordMeta
    const r = srl.append(type, m)
    const record: Record = { type, seq: r.seq, meta: m, data: EMPTY }
    ns.apply(record)
    restored.push({ record, end: r.end })
  }
  for (const [id, ranges] of written) {
    const p = ns.nameOf(id)
    if (p === null) continue
    const st = fs.lstatSync(root + p, { throwIfNoEntry: false, bigint: true })
    if (st === undefined || !st.isFile()) continue
    const size = Number(st.size)
    const t: Timespec = [Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n)]
    const fd = fs.openSync(root + p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
    try {
      for (const [from, to] of merge(ranges)) {
        for (let o = from; o < Math.min(to, size); o += FUSE_WRITE_BYTES_MAX) {
          const data = Buffer.alloc(Math.min(FUSE_WRITE_BYTES_MAX, Math.min(to, size) - o))
          const n = fs.readSync(fd, data, 0, data.length, o)
          const meta: RecordMeta = { p, o, t }
          const r = srl.append(RecordType.WRITE, meta, data.subarray(0, n))
          restored.push({ record: { type: RecordType.WRITE, seq: r.seq, meta, data: data.subarray(0, n) }, end: r.end })
        }
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  srl.syncNow()
  const top = lost[lost.length - 1]
  log?.(`the SRL had lost records ${end + 1}..${top[2].k ?? top[0]} with its unsynced tail while the data directory kept their changes: put back ${restored.length} records (${end + 1}..${srl.lastSeq}) from the data cursor`)
  // Record end + 1 was in the tail: every record before it was applied, and so is each put back.
  return { restored, c: srl.lastSeq }
}

/** Sorted, merged [from, to) ranges. */
function merge (ranges: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const [a, b] of [...ranges].sort((x, y) => x[0] - y[0])) {
    const top = out[out.length - 1]
    if (top !== undefined && a <= top[1]) top[1] = Math.max(top[1], b)
    else out.push([a, b])
  }
  return out
}

/** The plan for `records`, with the data cursor's `c` (null: none); says what it found. */
export function plan (records: PlanRecord[], root: string, cursor: number | null, logEnd: number, log?: (line: string) => void): Plan {
  const p = planReplay(records, cursor, logEnd, (r) => namespaceDone(root, r))
  if (p.ahead) {
    log?.(`the data directory's data cursor names SRL record ${p.cursor ?? 0}, past the end of the SRL (${logEnd}): the data directory holds changes whose records were lost with the SRL's unsynced tail; Secondaries will not receive them (docs/ARCHITECTURE.md, "Known limitations")`)
  } else if (p.boundary !== null && records.length > 0) {
    log?.(`replaying ${records.length} SRL records from sequence number ${records[0].record.seq}: the data directory has every change through ${p.boundary} (data cursor ${p.cursor ?? 0})`)
  }
  return p
}

/**
 * Carries out `p` (up to sequence number `upTo`, if given) in `root`; returns the position after
 * the last record it covered, or null if none. The records replayed must be durable in the SRL:
 * the data cursor names each record applied after the boundary before it is applied, as in normal
 * operation, so a power cut during replay leaves it true.
 */
export function runPlan (p: Plan, srl: Srl, root: string, fds: FdCache, cursor: DataCursor, snapshots: Preserver | null, log?: (line: string) => void, upTo = Infinity): Position | null {
  let applied: Position | null = null
  let last = p.boundary ?? p.cursor ?? 0
  const steps = p.steps
  for (let i = 0; i < steps.length && steps[i].record.seq <= upTo; i++) {
    const { kind, record, end, dirs } = steps[i]
    if (kind === 'times') {
      for (const d of dirs ?? []) setDirMtime(root, d, record.meta.t!)
    } else if (kind === 'apply') {
      const tracked = setsDataCursor(record.type) && record.seq > last
      try {
        snapshots?.beforeApply(record)
        if (tracked) cursor.intend(last, record.seq, record.type, record.meta)
        applyRecordSync(root, record, fds, true)
        if (tracked) { cursor.durable(record.seq); last = record.seq }
        fds.trim()
      } catch (err) {
        // The last record may have failed before a kill -9 could append its VOID: it had no
        // effect then, and has none now; record that, as the running daemon would have.
        if (i === steps.length - 1 && record.type !== RecordType.WRITE && upTo === Infinity) {
          const v = srl.append(RecordType.VOID, { v: record.seq, e: errnoFor(err) })
          log?.(`SRL record with sequence number ${record.seq} (${RecordType[record.type]} ${record.meta.p ?? ''}) fails to apply (${(err as Error).message}); voided it`)
          return { seq: v.seq, offset: v.end }
        }
        throw new ReplError('APPLY_FAILED', `cannot replay SRL record with sequence number ${record.seq} (${RecordType[record.type]} ${record.meta.p ?? ''}): ${(err as Error).message}`, { cause: err })
      }
    }
    applied = { seq: record.seq, offset: end }
  }
  return applied
}

/** The Primary's replay: the lost tail put back, then `srl.pending` as planned. */
export function replayPending (srl: Srl, root: string, fds: FdCache, cursor: DataCursor, snapshots: Preserver | null, log?: (line: string) => void): Position | null {
  srl.syncNow() // what replay applies must be durable first (the data cursor's tail is empty during replay)
  const { restored, c } = restoreTail(srl, root, cursor.read(), log)
  const records = [...srl.pending, ...restored]
  return runPlan(plan(records, root, c, srl.lastSeq, log), srl, root, fds, cursor, snapshots, log)
}
