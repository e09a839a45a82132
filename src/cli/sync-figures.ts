/** A synchronization's progress as `status` and `status --watch` print it. */
import { syncKind } from '../format/sync-kind'

/** A synchronization's figures, as the Primary's status gives them (src/sync/source.ts SyncProgress). */
export interface SyncFigures {
  id: string, phase: string, mode?: string, entries: number, bytes: number, marked: number
  walked?: number, totalEntries?: number | null, totalBytes?: number | null, rateBytes?: number, etaSeconds?: number | null
}

const mib = (n: number): string => (n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)

/** One line: what kind, how far (of the tree's size once counted), rate and time left. */
export function syncLine (s: SyncFigures): string {
  const parts = [`${syncKind(s.mode)} ${s.id}: ${s.phase}`]
  if (s.mode === 'full' && s.totalBytes != null) parts.push(`${mib(s.bytes)} of ${mib(s.totalBytes)} MiB sent (${Math.min(100, Math.floor(100 * s.bytes / Math.max(1, s.totalBytes)))}%)`)
  else parts.push(`${mib(s.bytes)} MiB sent`)
  if (s.mode !== 'map' && s.totalEntries != null && s.walked !== undefined) parts.push(`${s.walked} of ${s.totalEntries} entries walked`)
  else parts.push(`${s.entries} entries sent`)
  if (s.rateBytes !== undefined) parts.push(`${mib(s.rateBytes)} MiB/s`)
  if (s.etaSeconds != null) parts.push(`ETA ${Math.ceil(s.etaSeconds)} s`)
  parts.push(`${s.marked} paths changed meanwhile`)
  return parts.join(', ')
}
