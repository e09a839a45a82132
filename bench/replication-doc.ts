/**
 * The "## Replication" section of docs/PERFORMANCE.md, rendered from the JSON
 * file a full `npm run bench:replication` run writes (bench/results/replication.json).
 *
 * Why a JSON file: the replication benchmark (bench/replication.ts) is a
 * separate run from the main harness (bench/run.ts), which rewrites the whole
 * of docs/PERFORMANCE.md. Both render this section with the same function from
 * the same committed JSON, so whichever of the two ran last, the section shows
 * the latest replication results, and a full `npm run bench` never deletes it.
 * (Folding the replication workloads into run.ts would have meant bending its
 * raw/bare/primary columns and primary/bare targets around four other columns,
 * drain times and lag, and making every main run minutes longer.)
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { fmt, fmtRatio, median, ratio, table } from './report'

export const REPL_COLUMNS = ['raw', 'primary', 'off', 'override', 'tls', 'zstd'] as const
export type ReplColumn = (typeof REPL_COLUMNS)[number]
export const COLUMN_TITLES: Record<ReplColumn, string> = { raw: 'raw', primary: 'primary', off: 'sync=off', override: 'sync=override', tls: 'sync=off+TLS', zstd: 'sync=off+zstd' }
export const REPLICATED: readonly ReplColumn[] = ['off', 'override', 'tls', 'zstd']

export const REPL_WORKLOADS = ['seq', 'randsync', 'create'] as const
export type ReplWorkload = (typeof REPL_WORKLOADS)[number]

export interface ReplSizes {
  seqMiB: number
  randFileMiB: number
  randOps: number
  files: number
  filesPerDir: number
  fileBytes: number
}

/** One reading of the Primary's `status --json` rlinks[0], taken while the timed phase ran. */
export interface LagPoint {
  /** Seconds since the timed phase started. */
  t: number
  /** The Primary's last sequence number (dataAckedSeq + lagUpdates). */
  newest: number
  sent: number
  nacked: number
  dacked: number
  lagUpdates: number
  lagBytes: number
  lagSeconds: number
}

export interface ReplSample {
  workload: ReplWorkload
  column: ReplColumn
  rep: number
  /** Throughput of the timed phase (MiB/s, ops/s or files/s): higher is better. */
  value: number
  /** Seconds on the clock (the writer, from spawn to exit, or as timed inside the helper). */
  seconds: number
  /** MiB, ops or files. */
  amount: number
  /** Replicated columns: seconds from the writer's exit until the Primary shows lagUpdates 0 (all data-acked). */
  drainSeconds?: number
  /** SRL records the timed phase produced (replicated columns). */
  records?: number
  /** Status samples every ~200 ms during the timed phase (replicated columns). */
  lag?: LagPoint[]
  /** CPU seconds (user + system) of the daemons from the start of the timed phase to the end of the drain. */
  cpuSeconds?: { primary: number; secondary?: number }
  /** Loop device counters over the same interval. */
  device: { writtenMiB: number; flushes: number }
  latency?: { p50Ms: number; p99Ms: number; maxMs: number }
  note?: string
}

export interface ReplResult {
  version: 1
  started: string
  elapsedSeconds: number
  command: string
  reps: number
  sizes: ReplSizes
  /** --srl-size given to both daemons, or null for the default. */
  srlSizeBytes: number | null
  srlSizeDefaultBytes: number
  columns: ReplColumn[]
  workloads: ReplWorkload[]
  samplePeriodMs: number
  machine: Record<string, string>
  build: string
  snapshot: boolean
  prewarm: boolean
  warmup: { passes: number; mib: number }
  /** 1-minute load average at the start, then before each timed phase. */
  loads: number[]
  /** 1-minute load average right after each timed phase (and drain). */
  loadsAfter: number[]
  cpus: number
  image: { sizeBytes: number; features: string; mountOptions: string; directIo: boolean }
  /** Seconds `--daemon` took to return, per role. */
  startSeconds: Record<string, number[]>
  samples: ReplSample[]
  errors: string[]
  warnings: string[]
}

const MiB = 1024 * 1024
const GiB = 1024 * MiB

export function replicationJsonPath(repo: string): string {
  return path.join(repo, 'bench', 'results', 'replication.json')
}

export function readReplicationResult(file: string): ReplResult | null {
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as ReplResult
    return j.version === 1 ? j : null
  } catch {
    return null
  }
}

/** The result file's text: indented, but one line per sample (the lag readings make it long otherwise). */
export function formatResult(r: ReplResult): string {
  const { samples, ...rest } = r
  const head = JSON.stringify(rest, null, 1).replace(/\n}$/, '')
  return `${head},\n "samples": [\n${samples.map((x) => `  ${JSON.stringify(x)}`).join(',\n')}\n ]\n}\n`
}

const HEADING = '## Replication'

/** [start, end) line indexes of the section `heading` (default "## Replication") in `doc`, or null. */
function sectionBounds(lines: string[], heading = HEADING): [number, number] | null {
  const start = lines.findIndex((l) => l.trimEnd() === heading)
  if (start < 0) return null
  let end = start + 1
  while (end < lines.length && !/^## /.test(lines[end])) end++
  return [start, end]
}

/** The "## Replication" section of a document (without trailing blank lines), or null. */
export function extractSection(doc: string): string | null {
  const lines = doc.split('\n')
  const b = sectionBounds(lines)
  if (!b) return null
  const sec = lines.slice(b[0], b[1])
  while (sec.length && sec[sec.length - 1].trim() === '') sec.pop()
  return sec.join('\n')
}

/** Replaces the "## Replication" section of `doc` with `section`, or appends it at the end. */
export function spliceSection(doc: string, section: string): string {
  return spliceNamed(doc, HEADING, section)
}

/** Replaces the section `heading` (a "## " line) of `doc` with `section`, or appends it at the end. */
export function spliceNamed(doc: string, heading: string, section: string): string {
  const lines = doc.split('\n')
  const b = sectionBounds(lines, heading)
  const body = section.trimEnd().split('\n')
  if (!b) {
    while (lines.length && lines[lines.length - 1].trim() === '') lines.pop()
    return [...lines, '', ...body, ''].join('\n')
  }
  const after = lines.slice(b[1])
  return [...lines.slice(0, b[0]), ...body, ...(after.length ? ['', ...after] : [''])].join('\n')
}

function samplesOf(r: ReplResult, w: ReplWorkload, c: ReplColumn): ReplSample[] {
  return r.samples.filter((s) => s.workload === w && s.column === c)
}

function med(xs: (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x))
  return v.length ? median(v) : undefined
}

/** Nearest-rank percentile. */
function pct(xs: number[], p: number): number | undefined {
  if (!xs.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

const TITLES: Record<ReplWorkload, { title: (z: ReplSizes) => string; unit: string; drainTitle: string; e2e: boolean }> = {
  seq: {
    title: (z) => `Sequential write, ${z.seqMiB >= 1024 ? `${z.seqMiB / 1024} GiB` : `${z.seqMiB} MiB`} in 1 MiB writes, incl. final fsync`,
    unit: 'MiB/s', drainTitle: 'drain: writer exit → all data-acked', e2e: true,
  },
  randsync: {
    title: (z) => `4 KiB random write + fdatasync (${z.randOps.toLocaleString('en-US')} ops)`,
    unit: 'ops/s', drainTitle: 'drain after the last fdatasync', e2e: false,
  },
  create: {
    title: (z) => `Create ${z.files.toLocaleString('en-US')} small files (${z.fileBytes} B), no fsync`,
    unit: 'files/s', drainTitle: 'drain: writer exit → all data-acked', e2e: true,
  },
}

export function summaryRows(r: ReplResult): { headers: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const cols = r.columns
  const headers = ['Workload', ...cols.map((c) => COLUMN_TITLES[c])]
  const ratioCols = cols.includes('primary') ? cols.filter((c) => REPLICATED.includes(c)) : []
  for (const c of ratioCols) headers.push(`${COLUMN_TITLES[c]}/primary`)
  const rows: string[][] = []
  const errorsOf = (w: ReplWorkload, c: ReplColumn): boolean =>
    r.errors.some((e) => e.startsWith(`${w} on ${c} `)) && samplesOf(r, w, c).length < r.reps
  for (const w of r.workloads) {
    const t = TITLES[w]
    const val = (c: ReplColumn): number | undefined => med(samplesOf(r, w, c).map((s) => s.value))
    const mark = (c: ReplColumn, s: string): string => (errorsOf(w, c) ? `${s} (!)` : s)
    rows.push([`${t.title(r.sizes)} (${t.unit})`, ...cols.map((c) => mark(c, fmt(val(c)))), ...ratioCols.map((c) => fmtRatio(ratio(val(c), val('primary'))))])
    const only = (f: (c: ReplColumn) => string): string[] => cols.map((c) => (REPLICATED.includes(c) ? f(c) : '—'))
    const blanks = ratioCols.map(() => '')
    rows.push([`  ${t.drainTitle} (s)`, ...only((c) => fmt(med(samplesOf(r, w, c).map((s) => s.drainSeconds)))), ...blanks])
    if (t.e2e) {
      const e2e = (c: ReplColumn): number | undefined =>
        med(samplesOf(r, w, c).map((s) => (s.drainSeconds === undefined ? undefined : s.amount / (s.seconds + s.drainSeconds))))
      rows.push([`  end-to-end: replicated ${t.unit.split('/')[0]} / (write + drain) (${t.unit})`, ...only((c) => fmt(e2e(c))),
        ...ratioCols.map((c) => fmtRatio(ratio(e2e(c), val('primary'))))])
    }
  }
  return { headers, rows, align: ['l', ...cols.map(() => 'r' as const), ...ratioCols.map(() => 'r' as const)] }
}

export function lagRows(r: ReplResult): { headers: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const headers = ['Workload', 'column', 'readings', 'lagUpdates median / max', 'lagBytes (MiB) median / max', 'lagSeconds median / max',
    'median split: unsent / sent, not logged / logged, not applied (updates)']
  const rows: string[][] = []
  for (const w of r.workloads) {
    for (const c of r.columns.filter((x) => REPLICATED.includes(x))) {
      const pts = samplesOf(r, w, c).flatMap((s) => s.lag ?? [])
      if (!pts.length) continue
      const int = (x: number | undefined): string => (x === undefined ? '—' : Math.round(x).toLocaleString('en-US'))
      const mm = (f: (p: LagPoint) => number, show: (x: number | undefined) => string): string =>
        `${show(pct(pts.map(f), 50))} / ${show(Math.max(...pts.map(f)))}`
      const split = [(p: LagPoint) => p.newest - p.sent, (p: LagPoint) => p.sent - p.nacked, (p: LagPoint) => p.nacked - p.dacked]
        .map((f) => int(pct(pts.map(f), 50))).join(' / ')
      const mib = (x: number | undefined): string => (x === undefined ? '—' : (x / MiB).toFixed(x >= 10 * MiB ? 0 : 1))
      const secs = (x: number | undefined): string => (x === undefined ? '—' : x.toFixed(2))
      rows.push([w, COLUMN_TITLES[c], String(pts.length), mm((p) => p.lagUpdates, int), mm((p) => p.lagBytes, mib), mm((p) => p.lagSeconds, secs), split])
    }
  }
  return { headers, rows, align: ['l', 'l', 'r', 'r', 'r', 'r', 'r'] }
}

export function samplesRows(r: ReplResult): { headers: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const rows: string[][] = []
  for (const w of r.workloads) {
    for (const c of r.columns) {
      const ss = samplesOf(r, w, c).sort((a, b) => a.rep - b.rep)
      const errs = r.errors.filter((e) => e.startsWith(`${w} on ${c} `))
      if (!ss.length && !errs.length) continue
      const unit = TITLES[w].unit
      const secs = ss.map((s) => s.seconds.toFixed(2) + (s.drainSeconds !== undefined ? ` + ${s.drainSeconds.toFixed(2)}` : '')).join(', ')
      const cpu = ss.map((s) => (s.cpuSeconds ? `${s.cpuSeconds.primary.toFixed(1)}${s.cpuSeconds.secondary !== undefined ? ` + ${s.cpuSeconds.secondary.toFixed(1)}` : ''}` : '—')).join(', ')
      const dev = ss.map((s) => `${s.device.writtenMiB.toFixed(0)} MiB, ${s.device.flushes} fl`).join('; ')
      const notes = [...new Set(ss.map((s) => s.note).filter((n): n is string => Boolean(n))), ...errs.map((e) => `ERROR: ${e.split('\n')[0]}`)].join('; ')
      rows.push([w, COLUMN_TITLES[c], `${ss.map((s) => fmt(s.value)).join(', ') || '—'} ${unit}`, secs || '—', cpu || '—', dev || '—', notes.replace(/\|/g, '\\|')])
    }
  }
  return {
    headers: ['workload', 'column', 'samples', 'seconds (+ drain)', 'CPU s: primary (+ secondary)', 'device writes, flushes', 'notes'],
    rows, align: ['l', 'l', 'r', 'r', 'r', 'r', 'l'],
  }
}

export function loadLine(r: ReplResult): string {
  const max = Math.max(...r.loads, ...r.loadsAfter)
  return `1-minute load average: ${r.loads[0].toFixed(2)} at the start, at most ${max.toFixed(2)} before or after a timed phase` +
    (max > r.cpus / 2 ? ` — **other work was running on this ${r.cpus}-CPU machine during the run; expect noise**` : '')
}

/** The whole "## Replication" section, from a result file. */
export function renderReplicationSection(r: ReplResult, opts: { from?: 'replication' | 'main' } = {}): string {
  const z = r.sizes
  const L: string[] = []
  const when = r.started.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  const srl = r.srlSizeBytes === null ? `${r.srlSizeDefaultBytes / MiB} MiB, the default` : `--srl-size ${r.srlSizeBytes}`
  L.push(HEADING, '')
  L.push(`Generated by \`${r.command}\` (bench/replication.ts) on ${when}; the run took ${Math.round(r.elapsedSeconds)} s.`)
  const by = opts.from === 'main' ? ' by `npm run bench` (the main run above does not measure replication; it copies this section)' : ''
  L.push(`Rendered from bench/results/replication.json${by}: rerun \`npm run bench:replication\` to refresh it.`, '')
  L.push('Primary and Secondary on this one machine, the RLINK over TCP on 127.0.0.1, with both data directories, both SRLs')
  L.push(`(${srl}, each) and both mounts on the same fresh ext4 image, so the Secondary's log and apply compete with the Primary for the`)
  L.push('same disk and the same 2 CPUs (a real Secondary has its own). Columns:', '')
  L.push('- **raw**: the data directory itself, no FUSE.')
  L.push('- **primary**: `replicafs primary` with no `--secondary` (the Primary-only figure).')
  L.push('- **sync=off**: `replicafs primary --secondary HOST:PORT --synchronous off` (the default: a write completes once it is in the Primary\'s SRL)')
  L.push('  and a `replicafs secondary` listening on 127.0.0.1.')
  L.push('- **sync=override**: the same with `--synchronous override`: every write also waits for the Secondary\'s network ack (logged')
  L.push('  and fdatasynced in the Secondary\'s SRL), so each `fdatasync` costs a round trip and a Secondary fdatasync more.')
  L.push('- **sync=off+TLS**: sync=off with TLS 1.3 on the RLINK (`--tls-cert`, `--tls-key`, `--tls-ca` on both ends; P-256 certificates).')
  L.push('- **sync=off+zstd**: sync=off with `--compress zstd`. The sequential write writes zeros (zstd\'s best case: the wire carries')
  L.push('  almost nothing) and the random writes random bytes (its worst: everything is compressed for nothing and sent as it is);')
  L.push('  the CPU rows say what it costs.', '')
  L.push(`Throughputs are medians of ${r.reps} run${r.reps > 1 ? 's' : ''} (higher is better); drain times are medians too (lower is better). **Drain** is the time from`)
  L.push('the writer\'s exit until the Primary\'s status shows `lagUpdates` 0, i.e. the Secondary has applied (data-acked) every update;')
  L.push('**end-to-end** is the amount written divided by (write time + drain): the rate at which data reaches the Secondary\'s data')
  L.push('directory. Data-acked means applied to the Secondary\'s data directory; the Secondary makes that durable at its next checkpoint.', '')
  L.push('### Throughput', '')
  const s = summaryRows(r)
  L.push(table(s.headers, s.rows, s.align).md, '')
  const errCount = r.errors.length
  if (errCount) L.push(`(!) some samples failed: see the errors below (${errCount}).`, '')
  const lr = lagRows(r)
  if (lr.rows.length) {
    L.push('### Lag under load', '')
    L.push(`The Primary's \`status --json\` \`rlinks[0]\`, read every ${r.samplePeriodMs} ms while the timed phase ran (the drain is not included); median and`)
    L.push('maximum over the readings of all repetitions. The split shows where the median lag sits: records in the Primary\'s SRL not yet')
    L.push('sent (`newest - sentSeq`), sent but not yet network-acked (`sentSeq - networkAckedSeq`: on the wire or being logged and')
    L.push('fdatasynced by the Secondary), and logged but not yet applied (`networkAckedSeq - dataAckedSeq`: the Secondary\'s apply).', '')
    L.push(table(lr.headers, lr.rows, lr.align).md, '')
    // A Primary keeps every record not yet data-acked: once the lag fills its SRL, writers wait for the link.
    const cap = r.srlSizeBytes ?? r.srlSizeDefaultBytes
    for (const w of r.workloads) {
      for (const c of r.columns.filter((x) => REPLICATED.includes(x))) {
        const pts = samplesOf(r, w, c).flatMap((s) => s.lag ?? [])
        if (!pts.length) continue
        const max = Math.max(...pts.map((p) => p.lagBytes))
        if (max < 0.85 * cap) continue
        const full = samplesOf(r, w, c).filter((s) => (s.lag ?? []).some((p) => p.lagBytes >= 0.85 * cap)).length
        L.push(`In ${w} with ${COLUMN_TITLES[c]} the lag reached ${(max / MiB).toFixed(0)} MiB of the ${(cap / MiB).toFixed(0)} MiB SRL (in ${full} of ${samplesOf(r, w, c).length} runs). The`)
        L.push('Primary keeps every update until the Secondary data-acks it, so once its SRL was full its writers waited for the RLINK:')
        L.push('in those runs the write throughput of that column is the replication rate, not the Primary\'s.', '')
      }
    }
  }
  if (r.errors.length) {
    L.push('**Errors in this run:**', '')
    for (const e of r.errors) L.push('```', e, '```')
    L.push('')
  }
  if (r.warnings.length) {
    L.push('Warnings:', '')
    for (const w of r.warnings) L.push(`- ${w.replace(/\|/g, '\\|')}`)
    L.push('')
  }
  L.push('### Replication: machine', '')
  for (const [k, v] of Object.entries(r.machine)) L.push(`- ${k}: ${v}`)
  L.push(`- replicafs build: ${r.build} (sha256 prefix of dist/src and dist/bench)${r.snapshot ? ', run from a copy taken at the start' : ', run from the working tree'}`)
  L.push(`- ${loadLine(r)}`)
  L.push(`- benchmark filesystem: fresh ${r.image.sizeBytes / GiB} GiB ext4 image (features: ${r.image.features}), mounted ${r.image.mountOptions}, loop device ${r.image.directIo ? 'with direct I/O' : 'buffered (direct I/O unavailable)'}`)
  const st = (k: string): string => (r.startSeconds[k]?.length ? `${median(r.startSeconds[k]).toFixed(2)} s` : '—')
  L.push(`- daemon start-up (not counted): Secondary ${st('secondary')}, Primary ${st('primary')} (median, \`--daemon\` until it returns)`)
  L.push('')
  L.push('### Replication: reproduce', '', '```sh', 'npm ci', r.command, '```', '')
  L.push('As root. `npm run bench:replication -- --quick` is a smoke run (small sizes, one repetition; writes neither this section nor')
  L.push('the JSON file). `--only seq,randsync,create`, `--columns raw,primary,off,override`, `--reps N` select subsets; `--cpu-prof DIR`')
  L.push('writes a V8 CPU profile of every daemon into DIR; `--help` lists the rest. A full run rewrites bench/results/replication.json and')
  L.push('this section in place; `npm run bench` keeps the section (it renders it from that file).', '')
  L.push('### Replication: method', '')
  L.push('- The image, warm-up, page-cache pre-warm before each timed phase, the copy of the build the daemons run from and the')
  L.push(`  rotated column order are those of the main harness (see "Method" above)${r.prewarm ? `; the pre-warm before the sequential write is ${2 * z.seqMiB} MiB` : '; this run had no pre-warm (`--no-prewarm`)'}.`)
  L.push(`  Warm-up: ${r.warmup.passes} × ${r.warmup.mib} MiB.`)
  L.push('- Every (workload, repetition, column) gets fresh directories and freshly started daemons: for the replicated columns a')
  L.push('  Secondary (`--listen 127.0.0.1:0`, its real port read from its status) and then a Primary pointing at it, with a shared')
  L.push('  secret file; the timed phase starts once the RLINK is `connected` and everything written while preparing is data-acked.')
  L.push('  Primary stopped first, then the Secondary, with `replicafs stop`.')
  L.push(`- **seq**: \`dd if=/dev/zero of=MOUNT/seq.bin bs=1M count=${z.seqMiB} conv=fsync\`, timed from spawn to exit. Then the drain.`)
  L.push(`- **randsync**: bench/fsync-writer.ts as in the main harness (${z.randOps.toLocaleString('en-US')} × { pwrite 4 KiB at a random offset of a ${z.randFileMiB} MiB file; fdatasync }),`)
  L.push('  after the file is prepared and fully replicated (not timed).')
  L.push(`- **create**: bench/small-files.ts create (${z.files.toLocaleString('en-US')} files of ${z.fileBytes} B, ${z.filesPerDir} per directory; mkdir, open O_CREAT, write, close;`)
  L.push('  no fsync), timed inside the process. Then the drain.')
  L.push(`- **Lag** readings: an in-process client of the Primary's control socket (the protocol \`replicafs status\` uses) every ${r.samplePeriodMs} ms,`)
  L.push('  skipped while one is outstanding; the drain is timed by the same client polling every 10 ms.')
  L.push('- **Checks** (outside timing): after the drain the Secondary\'s copy is compared with the Primary\'s: `cmp` of seq.bin, the sha256 of')
  L.push('  the randsync file (also identical across columns), the number of entries of the created tree. A mismatch is an error.')
  L.push('- **CPU** seconds (user + system, /proc/PID/stat) of each daemon and loop device counters are taken from the start of the')
  L.push('  timed phase to the end of the drain (all samples table).', '')
  L.push('### Replication: all samples', '')
  const sr = samplesRows(r)
  L.push(table(sr.headers, sr.rows, sr.align).md, '')
  return L.join('\n')
}

/**
 * For run.ts: the section to end docs/PERFORMANCE.md with. From the JSON file if there is one;
 * otherwise whatever section the current document has (kept verbatim); otherwise nothing.
 */
export function replicationSectionForMainDoc(repo: string, currentDoc: string | null): string | null {
  const r = readReplicationResult(replicationJsonPath(repo))
  if (r) return renderReplicationSection(r, { from: 'main' })
  return currentDoc === null ? null : extractSection(currentDoc)
}

export function cpuCount(): number {
  return os.availableParallelism()
}
