/**
 * `replicafs status --watch`: follows the synchronizations running now (full, by difference, from
 * a change map) until none is left: a progress bar per RLINK with rate and ETA on a terminal
 * (cli-progress), a plain line per RLINK every interval otherwise (logs, scripts). On a Secondary,
 * what it has applied of the synchronization. Exit 0 once nothing synchronizes.
 */
import cliProgress from 'cli-progress'
import { request } from '../control'
import { syncLine, type SyncFigures } from './sync-figures'

interface WatchStatus {
  role: string
  rlinks?: Array<{ secondary: string, state: string, consistent: boolean, sync?: SyncFigures | null }>
  syncing?: string | null
  sync?: { id: string, entries: number, bytes: number, compared: number, differing: number, rateBytes: number } | null
}

const mib = (n: number): string => (n / (1024 * 1024)).toFixed(1)

/** The bar's value and total for a synchronization: bytes in full, entries walked by difference, paths from a map. */
function measure (s: SyncFigures): { value: number, total: number, unit: string } {
  if (s.mode === 'full' && s.totalBytes != null) return { value: Math.min(s.bytes, s.totalBytes), total: s.totalBytes, unit: 'MiB' }
  if (s.mode === 'map' && s.totalEntries != null) return { value: Math.max(0, s.totalEntries - s.marked), total: s.totalEntries, unit: 'paths' }
  const total = s.totalEntries ?? 0
  return { value: Math.min(s.walked ?? 0, total), total, unit: 'entries' }
}

export async function watchStatus (state: string, intervalS: number, out: NodeJS.WriteStream = process.stdout): Promise<number> {
  const tty = out.isTTY === true
  const multi = tty
    ? new cliProgress.MultiBar({
      stream: out,
      hideCursor: true,
      clearOnComplete: false,
      format: '{name} [{bar}] {percentage}% | {done} of {all} {unit} | {rate} MiB/s | ETA {left}'
    }, cliProgress.Presets.shades_classic)
    : null
  const bars = new Map<string, cliProgress.SingleBar>()
  let printed = false
  /** A Secondary's line is rewritten in place on a terminal: ended by a newline at the end. */
  let inline = false
  try {
    for (;;) {
      const s = await request(state, { cmd: 'status' }) as WatchStatus
      let running = 0
      if (s.role === 'primary') {
        for (const l of s.rlinks ?? []) {
          const sy = l.sync ?? null
          const key = l.secondary
          if (sy === null) {
            const b = bars.get(key)
            if (b !== undefined) { b.update(b.getTotal(), { done: 'all', left: '0 s (done)' }); bars.delete(key) }
            continue
          }
          running++
          if (multi === null) { out.write(`RLINK ${l.secondary}: ${syncLine(sy)}\n`); printed = true; continue }
          const m = measure(sy)
          const fmt = (n: number): string => m.unit === 'MiB' ? mib(n) : String(n)
          const payload = { name: `${l.secondary} ${sy.mode ?? ''}`, done: fmt(m.value), all: m.total > 0 ? fmt(m.total) : '? (counting)', unit: m.unit, rate: mib(sy.rateBytes ?? 0), left: sy.etaSeconds != null ? `${Math.ceil(sy.etaSeconds)} s` : '?' }
          const b = bars.get(key)
          if (b === undefined) bars.set(key, multi.create(Math.max(1, m.total), m.value, payload))
          else { b.setTotal(Math.max(1, m.total)); b.update(m.value, payload) }
        }
      } else if (s.syncing != null) {
        running++
        const p = s.sync
        const line = p != null
          ? `synchronization ${p.id}: ${p.entries} entries and ${mib(p.bytes)} MiB applied (${mib(p.rateBytes)} MiB/s)${p.compared > 0 ? `, ${p.differing} of ${p.compared} files compared differed` : ''}; NOT consistent until it ends`
          : `synchronization ${s.syncing} begun and not finished; waiting for the Primary`
        out.write(tty ? `\r${line}\x1b[K` : line + '\n')
        printed = true
        inline = tty
      }
      if (running === 0) {
        if (!printed && bars.size === 0 && multi === null) out.write('no synchronization running\n')
        return 0
      }
      await new Promise((resolve) => setTimeout(resolve, intervalS * 1000))
    }
  } finally {
    multi?.stop()
    if (inline) out.write('\n')
  }
}
