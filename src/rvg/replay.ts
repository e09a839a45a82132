/**
 * The Primary's replay at start (src/rvg/primary.ts recover()): the records the SRL says may not
 * be applied (Srl.pending: from the last non-WRITE record after a kill -9, from the last
 * checkpoint after a reboot; src/srl/index.ts) are applied in order with the replay tolerances
 * (src/apply), skipping a record whose VOID follows it.
 */
import type { Srl } from '../srl'
import { RecordType } from '../format/record'
import type { Position } from '../format/state'
import { applyRecordSync, type FdCache } from '../apply'
import { ReplError, errnoFor } from '../errors'
import type { Preserver } from './interfaces'

/** Replays `srl.pending` into `root`; returns the position after the last record (or VOID) it covered, or null if none. */
export function replayPending (srl: Srl, root: string, fds: FdCache, snapshots: Preserver | null, log?: (line: string) => void): Position | null {
  const pending = srl.pending
  let applied: Position | null = null
  for (let i = 0; i < pending.length; i++) {
    const { record, end } = pending[i]
    const next = pending[i + 1]?.record
    const voided = next !== undefined && next.type === RecordType.VOID && next.meta.v === record.seq
    if (!voided) {
      try {
        snapshots?.beforeApply(record)
        applyRecordSync(root, record, fds, true)
        fds.trim()
      } catch (err) {
        // The last record may have failed before a kill -9 could append its VOID: it had no
        // effect then, and has none now; record that, as the running daemon would have.
        if (i === pending.length - 1 && record.type !== RecordType.WRITE) {
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
