/** `replicafs status`: the daemon's role, mount and SRL figures. Field names are documented in the README. */
import { formatRate } from '../rlink/rate'
import { parse, required, helpText, intervalOf, type FlagSpec } from './args'
import { request } from '../control'
import { ReplError } from '../errors'
import { syncLine, type SyncFigures } from './sync-figures'

export const STATUS_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the daemon' },
  json: { type: 'boolean', help: 'print JSON (field names in the README)' },
  watch: { type: 'boolean', help: 'follow the synchronizations running until none is left: a progress bar per Secondary with\nrate and ETA on a terminal, a line per Secondary every --interval otherwise; exit 0 then' },
  interval: { type: 'string', arg: 'SECONDS', help: 'with --watch: how often to look (default 1)' },
  help: { type: 'boolean', help: 'show this help' }
}
export const STATUS_HELP = helpText('replicafs status --state DIR [--json | --watch [--interval SECONDS]]', 'Shows the role, the mount, and the SRL: records and bytes retained, oldest and newest\nsequence number, last applied sequence number.', STATUS_FLAGS)

/** A split-brain as status carries it (src/format/state.ts SplitBrain). */
interface SplitLine { at: number, conflicting: string[], conflicts: number | null, ours: number | null, theirs: number | null, peer: string }

function splitLine (sb: SplitLine): string {
  if (sb.conflicts === null) return `both sides changed paths after sequence number ${sb.at}, too many to compare`
  return `${sb.conflicts} paths changed on both sides after sequence number ${sb.at}: ${sb.conflicting.slice(0, 10).join(', ')}${sb.conflicts > 10 ? ', ...' : ''}`
}

interface Status {
  fuse?: { transport: string, passthrough: boolean, openFiles: number, forwarded?: { count: number, resolveSeconds: number, queueSeconds: number, handleSeconds: number }, logSyncs?: number } | null
  role: string, pid: number, data: string, mount: string, state: string, fatal: string | null
  rds?: string, synchronous?: string, listen?: string | null
  generation?: { id: string, since: number } | null
  takenOver?: { by: string, at: number, peer: string, seen: string, orphaned: number, splitBrain?: SplitLine | null } | null
  dial?: { address: string, name: string } | null
  failback?: { from: string, by: string, at: number, peer: string, paths: number | null, snapshot: string, oldSrl: string, since: string } | null
  tookOver?: { at: number, applied: number, from: string | null, generation: string, time: string } | null
  refusing?: string | null
  rlinks?: Array<{ secondary: string, state: string, sentSeq: number, networkAckedSeq: number, dataAckedSeq: number, lagUpdates: number, lagBytes: number, lagSeconds: number, lastError: string | null, sync?: SyncFigures | null, dcm?: { paths: number, since: string } | null, splitBrain?: SplitLine | null, transport?: Transport | null, bandwidthLimit?: number | null }>
  receivedSeq?: number, appliedSeq?: number, consistent?: boolean, syncing?: string | null, connected?: boolean, primary?: { address: string | null, srlId: string | null }
  lastError?: string | null, transport?: Transport | null
  srl: { records: number, bytes: number, oldestSeq: number | null, newestSeq: number | null, appliedSeq: number, capacityBytes: number } | null
  verify?: Array<{ id: string, secondary: string, phase: string, seq: number, entries: number, bytes: number, theirEntries: number, differing: number }> | { id: string, entries: number, bytes: number } | null
}

/** An RLINK connection's transport, as both daemons report it. */
interface Transport { tls: boolean, compress: 'zstd' | 'off', bytesOut?: number, bytesRaw?: number, bytesIn?: number }

function transportText (t: Transport | null | undefined, limit?: number | null): string {
  const parts: string[] = []
  if (t != null) {
    parts.push(t.tls ? 'TLS 1.3' : 'plain TCP')
    if (t.compress !== 'off') parts.push(`${t.compress}${t.bytesOut !== undefined && t.bytesRaw !== undefined && t.bytesOut > 0 ? ` (${(t.bytesRaw / t.bytesOut).toFixed(2)}:1)` : ''}`)
  }
  if (limit != null) parts.push(`bandwidth limit ${formatRate(limit)}`)
  return parts.length === 0 ? '' : `; ${parts.join(', ')}`
}

export async function statusCommand (argv: string[]): Promise<number> {
  const { values } = parse('status', argv, STATUS_FLAGS)
  if (values.help) { process.stdout.write(STATUS_HELP); return 0 }
  const state = required('status', values, 'state')
  if (values.watch === true) {
    if (values.json === true) throw new ReplError('USAGE', 'replicafs status: --watch and --json do not go together (poll status --json instead)')
    const interval = intervalOf('status', values)
    return await (await import('./watch')).watchStatus(state, interval)
  }
  if (values.interval !== undefined) throw new ReplError('USAGE', 'replicafs status: --interval goes with --watch')
  const s = await request(state, { cmd: 'status' }) as Status
  if (values.json) { process.stdout.write(JSON.stringify(s, null, 2) + '\n'); return 0 }
  const lines = [
    `role:          ${s.role} (pid ${s.pid})`,
    `data:          ${s.data}`,
    `mount:         ${s.mount}${s.fuse != null ? ` (FUSE ${s.fuse.transport}${s.fuse.passthrough ? ', passthrough' : ''}, ${s.fuse.openFiles} open)` : ''}`
  ]
  if (s.srl) {
    const pct = (100 * s.srl.bytes / s.srl.capacityBytes).toFixed(1)
    lines.push(
      `SRL records:   ${s.srl.records} (${s.srl.bytes} bytes, ${pct}% of ${s.srl.capacityBytes})`,
      `SRL sequence:  oldest ${s.srl.oldestSeq ?? '-'}, newest ${s.srl.newestSeq ?? '-'}`,
      `applied:       ${s.srl.appliedSeq}`)
  }
  if (s.generation != null) lines.push(`generation:    ${s.generation.id}${s.generation.since > 0 ? ` (since sequence number ${s.generation.since})` : ''}`)
  if (s.tookOver != null) lines.push(`took over:     ${s.tookOver.time}, after sequence number ${s.tookOver.at} (${s.tookOver.applied} logged updates applied first)${s.tookOver.from !== null ? ` from generation ${s.tookOver.from}` : ''}`)
  if (s.takenOver != null) {
    lines.push(`TAKEN OVER:    by generation ${s.takenOver.by} (at ${s.takenOver.peer}, seen ${s.takenOver.seen}) after sequence number ${s.takenOver.at}; ` +
      `${s.takenOver.orphaned} updates logged here since never reached it; every change through the mount is refused (EROFS) until it is failed back`)
    const sb = s.takenOver.splitBrain
    if (sb != null) lines.push(`SPLIT-BRAIN:   ${splitLine(sb)}; replicafs failback --discard-local here gives up this host's changes (kept in a snapshot)`)
  }
  if (s.role === 'primary' && s.rlinks !== undefined) {
    lines.push(`RDS:           ${s.rds ?? ''}, synchronous=${s.synchronous ?? 'off'}${s.listen != null ? `, listening on ${s.listen}` : ''}`)
    if (s.rlinks.length === 0) lines.push('RLINKs:        none (no --secondary)')
    for (const l of s.rlinks) {
      lines.push(`RLINK ${l.secondary}: ${l.state}; sent ${l.sentSeq}, network-acked ${l.networkAckedSeq}, data-acked ${l.dataAckedSeq}; ` +
        `lag ${l.lagUpdates} updates, ${l.lagBytes} bytes, ${l.lagSeconds.toFixed(1)} s${transportText(l.transport, l.bandwidthLimit)}${l.lastError ? `; last error: ${l.lastError}` : ''}`)
      if (l.dcm && l.secondary.startsWith('join:') && !l.sync) lines.push(`  change map since the takeover: ${l.dcm.paths} paths (and the SRL's records not folded yet); the host taken over is resynchronized from it, and from what it changed, once replicafs failback makes it a Secondary and it dials in`)
      else if (l.dcm) lines.push(`  SRL overflow protection: off the SRL since ${l.dcm.since}; its change map names ${l.dcm.paths} paths, resent when it connects; the Secondary is NOT consistent until then`)
      if (l.sync) lines.push(`  ${syncLine(l.sync)}; the Secondary is NOT consistent until it ends`)
      if (l.splitBrain != null && l.splitBrain.conflicts !== 0) lines.push(`  SPLIT-BRAIN with the host taken over (at ${l.splitBrain.peer}): ${splitLine(l.splitBrain)}; replicafs failback --discard-local there resolves it`)
    }
  }
  if (s.role === 'secondary') {
    lines.push(
      `RDS:           ${s.rds ?? ''}, ${s.dial != null ? `dialling its Primary at ${s.dial.address}` : `listening on ${s.listen ?? '?'}`}`,
      `primary:       ${s.connected ? `connected from ${s.primary?.address ?? '?'}${transportText(s.transport)}` : 'not connected'}; follows SRL ${s.primary?.srlId ?? '(none yet)'}${!s.connected && s.lastError != null ? `; last error: ${s.lastError}` : ''}`,
      `received:      ${s.receivedSeq ?? 0}, applied ${s.appliedSeq ?? 0}, ${s.consistent ? 'consistent' : 'NOT consistent'}${s.syncing ? ` (full synchronization ${s.syncing} in progress)` : ''}`)
    if (s.failback != null) {
      lines.push(`FAILED BACK:   ${s.failback.since}: was the Primary of generation ${s.failback.from}, taken over by ${s.failback.by} after sequence number ${s.failback.at}; ` +
        `being resynchronized (${s.failback.paths ?? 'every'} paths changed here); its tree as it was is in snapshot ${s.failback.snapshot}, its old SRL in ${s.failback.oldSrl}`)
    }
  }
  if (Array.isArray(s.verify)) {
    for (const v of s.verify) lines.push(`verify ${v.id} of ${v.secondary} at sequence number ${v.seq}: ${v.phase}; ${v.entries} entries (${v.bytes} bytes) walked here, ${v.theirEntries} there; ${v.differing} paths differ so far`)
  } else if (s.verify != null) lines.push(`verify ${s.verify.id}: ${s.verify.entries} entries (${s.verify.bytes} bytes) of this Secondary's snapshot walked for the Primary`)
  if (s.fatal) lines.push(`FATAL:         ${s.fatal}`)
  process.stdout.write(lines.join('\n') + '\n')
  return 0
}
