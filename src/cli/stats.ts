/**
 * `replicafs stats`: live replication figures, as VVR's `vrstat`: every --interval, the rates
 * since the last look (updates logged, sent and applied per second) and the lag of each RLINK
 * (updates, bytes, seconds), with the SRL's fill. A line per RLINK (a Secondary: one line) per
 * interval, a header every 20 intervals (as vmstat); --json: one JSON object per interval (NDJSON).
 * It reads `status` from the control socket: nothing here loads the daemon.
 */
import { parse, required, helpText, intervalOf, type FlagSpec } from './args'
import { request } from '../control'
import { ReplError } from '../errors'

export const STATS_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the daemon (a Primary or a Secondary)' },
  interval: { type: 'string', arg: 'SECONDS', help: 'how often to look (default 1)' },
  count: { type: 'string', arg: 'N', help: 'stop after N intervals (default: until interrupted)' },
  json: { type: 'boolean', help: 'one JSON object per interval (NDJSON) instead of the table' },
  help: { type: 'boolean', help: 'show this help' }
}
export const STATS_HELP = helpText('replicafs stats --state DIR [--interval SECONDS] [--count N] [--json]',
  'Live replication figures, as VVR\'s vrstat: every interval, the updates per second the Primary\nlogged and each RLINK sent and had applied, each RLINK\'s lag (updates, bytes, seconds) and the\nSRL\'s fill; on a Secondary, the updates per second received and applied and the lag between them.',
  STATS_FLAGS)

interface Sample {
  role: string
  srl: { bytes: number, capacityBytes: number, newestSeq: number | null, appliedSeq: number } | null
  rlinks?: Array<{ secondary: string, state: string, sentSeq: number, dataAckedSeq: number, lagUpdates: number, lagBytes: number, lagSeconds: number }>
  receivedSeq?: number
  appliedSeq?: number
  connected?: boolean
}

export interface StatsLine {
  time: string
  role: string
  /** The SRL's fill, percent of its capacity. */
  srlFillPercent: number | null
  /** Primary: updates logged per second. */
  loggedPerS?: number
  rlinks?: Array<{ secondary: string, state: string, sentPerS: number, appliedPerS: number, lagUpdates: number, lagBytes: number, lagSeconds: number }>
  /** Secondary: updates received and applied per second, and received not yet applied. */
  receivedPerS?: number
  appliedPerS?: number
  lagUpdates?: number
  connected?: boolean
}

function rate (now: number, before: number, seconds: number): number {
  return Math.max(0, Math.round((now - before) / seconds * 10) / 10)
}

/** The figures between two samples `seconds` apart. */
export function statsLine (prev: Sample, cur: Sample, seconds: number, time: Date): StatsLine {
  const fill = cur.srl === null ? null : Math.round(1000 * cur.srl.bytes / cur.srl.capacityBytes) / 10
  const line: StatsLine = { time: time.toISOString(), role: cur.role, srlFillPercent: fill }
  if (cur.rlinks !== undefined) {
    const newest = (s: Sample): number => s.srl?.newestSeq ?? s.srl?.appliedSeq ?? 0
    line.loggedPerS = rate(newest(cur), newest(prev), seconds)
    line.rlinks = cur.rlinks.map((l) => {
      const p = prev.rlinks?.find((x) => x.secondary === l.secondary) ?? l
      return { secondary: l.secondary, state: l.state, sentPerS: rate(l.sentSeq, p.sentSeq, seconds), appliedPerS: rate(l.dataAckedSeq, p.dataAckedSeq, seconds), lagUpdates: l.lagUpdates, lagBytes: l.lagBytes, lagSeconds: l.lagSeconds }
    })
  } else {
    line.receivedPerS = rate(cur.receivedSeq ?? 0, prev.receivedSeq ?? 0, seconds)
    line.appliedPerS = rate(cur.appliedSeq ?? 0, prev.appliedSeq ?? 0, seconds)
    line.lagUpdates = Math.max(0, (cur.receivedSeq ?? 0) - (cur.appliedSeq ?? 0))
    line.connected = cur.connected === true
  }
  return line
}

function bytes (n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)}G` : n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)}M` : n >= 1024 ? `${(n / 1024).toFixed(1)}K` : `${n}`
}

const PRIMARY_HEADER = `${'time'.padEnd(8)} ${'SRL%'.padStart(5)} ${'logged/s'.padStart(9)}  ${'rlink'.padEnd(22)} ${'state'.padEnd(12)} ${'sent/s'.padStart(8)} ${'applied/s'.padStart(9)} ${'lag upd'.padStart(8)} ${'lag bytes'.padStart(9)} ${'lag s'.padStart(6)}`
const SECONDARY_HEADER = `${'time'.padEnd(8)} ${'SRL%'.padStart(5)} ${'received/s'.padStart(10)} ${'applied/s'.padStart(9)} ${'lag upd'.padStart(8)}  connected`

/** The table's lines for one interval. */
export function tableLines (l: StatsLine): string[] {
  const t = l.time.slice(11, 19)
  const fill = l.srlFillPercent === null ? '-' : l.srlFillPercent.toFixed(1)
  if (l.rlinks !== undefined) {
    if (l.rlinks.length === 0) return [`${t} ${fill.padStart(5)} ${String(l.loggedPerS).padStart(9)}  (no RLINK)`]
    return l.rlinks.map((r) => `${t} ${fill.padStart(5)} ${String(l.loggedPerS).padStart(9)}  ${r.secondary.slice(0, 22).padEnd(22)} ${r.state.padEnd(12)} ${String(r.sentPerS).padStart(8)} ${String(r.appliedPerS).padStart(9)} ${String(r.lagUpdates).padStart(8)} ${bytes(r.lagBytes).padStart(9)} ${r.lagSeconds.toFixed(1).padStart(6)}`)
  }
  return [`${t} ${fill.padStart(5)} ${String(l.receivedPerS).padStart(10)} ${String(l.appliedPerS).padStart(9)} ${String(l.lagUpdates).padStart(8)}  ${l.connected === true ? 'yes' : 'no'}`]
}

export async function statsCommand (argv: string[]): Promise<number> {
  const { values } = parse('stats', argv, STATS_FLAGS)
  if (values.help) { process.stdout.write(STATS_HELP); return 0 }
  const state = required('stats', values, 'state')
  const interval = intervalOf('stats', values)
  const count = values.count === undefined ? Infinity : Number(values.count)
  if (values.count !== undefined && (!/^\d+$/.test(String(values.count)) || count < 1)) throw new ReplError('USAGE', `replicafs stats: --count must be a whole number above 0 (not ${String(values.count)})`)
  let stopped = false
  process.once('SIGINT', () => { stopped = true })
  const look = async (): Promise<[Sample, number]> => [await request(state, { cmd: 'status' }) as Sample, performance.now()]
  let [prev, at] = await look()
  for (let i = 0; i < count && !stopped; i++) {
    await new Promise((resolve) => setTimeout(resolve, interval * 1000))
    if (stopped) break
    const [cur, now] = await look()
    const line = statsLine(prev, cur, (now - at) / 1000, new Date())
    if (values.json === true) process.stdout.write(JSON.stringify(line) + '\n')
    else {
      if (i % 20 === 0) process.stdout.write((line.rlinks !== undefined ? PRIMARY_HEADER : SECONDARY_HEADER) + '\n')
      process.stdout.write(tableLines(line).join('\n') + '\n')
    }
    prev = cur
    at = now
  }
  return 0
}
