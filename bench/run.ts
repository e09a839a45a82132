/**
 * replicafs benchmark harness: `npm run bench [-- options]`.
 *
 * Three columns, measured in the same run on one fresh journaled ext4 image:
 *   raw      the data directory itself (no FUSE)
 *   bare     `replicafs passthrough --fuse compat`: the same FUSE adapter, no journal
 *   primary  `replicafs primary --fuse compat`: FUSE + SRL journal
 * and, asked for with --columns (issue 14), the same two on libfuse 3's low-level transport:
 *   bare-ll     `replicafs passthrough --fuse ll`
 *   primary-ll  `replicafs primary --fuse ll`
 * The workloads (see workloads.ts), each repeated --reps times (median
 * reported); within a repetition the column order rotates, and every
 * (workload, repetition, column) gets fresh directories and a freshly
 * started daemon. See --help and docs/PERFORMANCE.md.
 *
 * Must run as root (loop mount, FUSE).
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { createImage, Image, syncfs } from './image'
import { checkCli, Daemon, startDaemon } from './daemon'
import { runOk } from './proc'
import { fmt, fmtRatio, machineInfo, median, ratio, table } from './report'
import { replicationSectionForMainDoc, spliceSection, spliceNamed } from './replication-doc'
import { SYNC_HEADING, CLI_HEADING, LL_HEADING } from './sync-doc'
import { buildHash, snapshotPackage } from './snapshot'
import { buildTarball, Ctx, Metric, Sample, Sizes, Tarball, Workload, WORKLOADS } from './workloads'
import { SRL_BYTES_DEFAULT } from '../src/limits'

const COLUMNS = ['raw', 'bare', 'primary', 'bare-ll', 'primary-ll'] as const
type Column = (typeof COLUMNS)[number]
/** Without --columns. */
const DEFAULT_COLUMNS: Column[] = ['raw', 'bare', 'primary']
const LL_COLUMNS: Column[] = ['bare-ll', 'primary-ll']

const GiB = 1024 * 1024 * 1024
const MiB = 1024 * 1024

interface Options {
  quick: boolean
  only: string[] | null
  columns: Column[]
  reps: number
  imageBytes: number
  warmupMiB: number
  warmupPasses: number
  prewarm: boolean
  snapshot: boolean
  srlSizeBytes: number | undefined
  sizes: Sizes
  writeDoc: boolean | undefined
  docPath: string
}

const HELP = `usage: npm run bench -- [options]

  --quick            smoke run: small sizes, 1 repetition, docs not written
  --only NAME[,NAME] run only these workloads: ${WORKLOADS.map((w) => w.name).join(', ')}
  --columns LIST     subset of raw,bare,primary,bare-ll,primary-ll (default raw,bare,primary;
                     the -ll ones run the daemon with --fuse ll)
  --reps N           repetitions per measurement (default 3; --quick 1)
  --srl-size BYTES   pass --srl-size to the Primary (default: the daemon's default, ${SRL_BYTES_DEFAULT / MiB} MiB)
  --image-gib N      size of the ext4 image (default 4)
  --no-snapshot      run daemons from the working tree instead of a copy taken at start
  --no-prewarm       skip the page-cache pre-warm before each timed phase (see docs/PERFORMANCE.md)
  --write-doc        write docs/PERFORMANCE.md even for partial/quick runs or with errors
  --no-doc           never write docs/PERFORMANCE.md
  --doc PATH         write the report here instead of docs/PERFORMANCE.md

The full run (no --quick/--only/--columns, no errors) rewrites docs/PERFORMANCE.md.
Must run as root. Needs: mkfs.ext4, losetup, mount, dd, tar, sync (coreutils >= 8.24).`

function parseArgs(repo: string, argv: string[]): Options {
  let quick = false
  let only: string[] | null = null
  let columns: Column[] = [...DEFAULT_COLUMNS]
  let reps: number | undefined
  let imageGiB = 4
  let srlSizeBytes: number | undefined
  let writeDoc: boolean | undefined
  let prewarm = true
  let snapshot = true
  let docPath = path.join(repo, 'docs', 'PERFORMANCE.md')
  const need = (i: number, name: string): string => {
    const v = argv[i + 1]
    if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`)
    return v
  }
  const posInt = (s: string, name: string): number => {
    const n = Number(s)
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name}: expected a positive integer, got ${s}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    switch (a) {
      case '--quick': quick = true; break
      case '--only': {
        only = need(i++, a).split(',').map((s) => s.trim()).filter(Boolean)
        for (const n of only) {
          if (!WORKLOADS.some((w) => w.name === n)) throw new Error(`--only: unknown workload ${n} (know ${WORKLOADS.map((w) => w.name).join(', ')})`)
        }
        break
      }
      case '--columns': {
        const cs = need(i++, a).split(',').map((s) => s.trim()).filter(Boolean)
        for (const c of cs) if (!(COLUMNS as readonly string[]).includes(c)) throw new Error(`--columns: unknown column ${c}`)
        columns = COLUMNS.filter((c) => cs.includes(c))
        break
      }
      case '--reps': reps = posInt(need(i++, a), a); break
      case '--image-gib': imageGiB = posInt(need(i++, a), a); break
      case '--srl-size': srlSizeBytes = posInt(need(i++, a), a); break
      case '--no-prewarm': prewarm = false; break
      case '--no-snapshot': snapshot = false; break
      case '--write-doc': writeDoc = true; break
      case '--no-doc': writeDoc = false; break
      case '--doc': docPath = path.resolve(need(i++, a)); break
      case '-h': case '--help': {
        process.stdout.write(HELP + '\n')
        return process.exit(0)
      }
      default: throw new Error(`unknown option ${a} (see --help)`)
    }
  }
  const sizes: Sizes = quick
    ? { seqMiB: 128, randFileMiB: 16, randOps: 300, files: 1000, filesPerDir: 100, fileBytes: 1024 }
    : { seqMiB: 1024, randFileMiB: 64, randOps: 3000, files: 10_000, filesPerDir: 100, fileBytes: 1024 }
  return {
    quick, only, columns, reps: reps ?? (quick ? 1 : 3), imageBytes: imageGiB * GiB,
    warmupMiB: quick ? 256 : 1024, warmupPasses: quick ? 1 : 2, prewarm,
    srlSizeBytes, sizes, writeDoc, docPath, snapshot,
  }
}

// ---------------------------------------------------------------------------
// Cleanup on every exit path (normal, error, SIGINT/SIGTERM).

const cleanups: Array<() => Promise<void>> = []

async function runCleanups(log: (s: string) => void): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!
    try {
      await fn()
    } catch (e) {
      log(`cleanup: ${(e as Error).message}`)
    }
  }
}

// ---------------------------------------------------------------------------

interface Cell {
  samples: Sample[]
  errors: string[]
}

interface Results {
  /** metric -> column -> cell */
  cells: Map<string, Map<Column, Cell>>
  startSeconds: Map<Column, number[]>
  digests: Map<string, Set<string>>
  errors: string[]
  /** `${metric}/${column}` whose numbers are not comparable (e.g. a sync that never reached the disk). */
  invalid: Set<string>
  /** Problems that do not invalidate the numbers (e.g. a daemon that needed a forced stop). */
  warnings: string[]
  /** 1-minute load average at the start of the run, then before each timed phase. */
  loads: number[]
}

function cellMedian(res: Results, metric: string, col: Column, withSync = false): number | undefined {
  const cell = res.cells.get(metric)?.get(col)
  if (!cell || cell.samples.length === 0) return undefined
  return median(cell.samples.map((s) => (withSync ? s.amount / (s.seconds + (s.syncSeconds ?? 0)) : s.value)))
}

function metricsOf(workloads: Workload[]): Metric[] {
  return workloads.flatMap((w) => w.metrics)
}

function summaryTable(res: Results, workloads: Workload[], columns: Column[], withSync: boolean): { text: string; md: string } {
  const rows: string[][] = []
  const withLl = LL_COLUMNS.some((c) => columns.includes(c))
  for (const m of metricsOf(workloads)) {
    if (withSync && !m.hasSync) continue
    const v = (c: Column): number | undefined => (columns.includes(c) ? cellMedian(res, m.name, c, withSync) : undefined)
    const [raw, bare, primary] = [v('raw'), v('bare'), v('primary')]
    const pb = ratio(primary, bare)
    const bad = (c: Column): boolean => res.invalid.has(`${m.name}/${c}`)
    const star = (c: Column, x: number | undefined): string => fmt(x) + (bad(c) ? ' (!)' : '')
    const verdict = withSync || m.target === null ? '' : pb === undefined ? '—' : bad('bare') || bad('primary') ? 'n/a (!)' : pb >= m.target ? 'PASS' : 'FAIL'
    const row = [`${m.title} (${m.unit})`, star('raw', raw), star('bare', bare), star('primary', primary), fmtRatio(ratio(bare, raw)), fmtRatio(ratio(primary, raw)), fmtRatio(pb)]
    if (withLl) {
      const [bl, pl] = [v('bare-ll'), v('primary-ll')]
      row.push(star('bare-ll', bl), star('primary-ll', pl), fmtRatio(ratio(pl, raw)), fmtRatio(ratio(pl, bl)), fmtRatio(ratio(pl, primary)))
    }
    if (!withSync) row.push(m.target === null ? 'none' : `≥ ${m.target.toFixed(2)}x`, verdict)
    rows.push(row)
  }
  const headers = ['Workload', 'raw', 'bare', 'primary', 'bare/raw', 'primary/raw', 'primary/bare']
  const align: ('l' | 'r')[] = ['l', 'r', 'r', 'r', 'r', 'r', 'r']
  if (withLl) {
    headers.push('bare ll', 'primary ll', 'primary ll/raw', 'primary ll/bare ll', 'primary ll/primary')
    align.push('r', 'r', 'r', 'r', 'r')
  }
  if (!withSync) {
    headers.push('target', 'result')
    align.push('r', 'l')
  }
  return table(headers, rows, align)
}

function samplesTable(res: Results, workloads: Workload[], columns: Column[]): string {
  const rows: string[][] = []
  for (const m of metricsOf(workloads)) {
    for (const c of columns) {
      const cell = res.cells.get(m.name)?.get(c)
      if (!cell) continue
      const vals = cell.samples.map((s) => fmt(s.value)).join(', ') || '—'
      const secs = cell.samples.map((s) => s.seconds.toFixed(2) + (s.syncSeconds !== undefined ? ` + ${s.syncSeconds.toFixed(2)}` : '')).join(', ')
      // One note per sample, in order; identical ones (e.g. the same device counts every time) once.
      const sampleNotes = [...new Set(cell.samples.map((s) => s.note).filter((n): n is string => Boolean(n)))]
      const notes = [...sampleNotes, ...cell.errors.map((e) => `ERROR: ${e.split('\n')[0]}`)].join('; ')
      rows.push([m.name, c, `${vals} ${m.unit}`, secs || '—', notes.replace(/\|/g, '\\|')])
    }
  }
  return table(['metric', 'column', 'samples', 'seconds (+ syncfs after)', 'notes'], rows, ['l', 'l', 'r', 'r', 'l']).md
}

function renderDoc(o: {
  opts: Options; res: Results; workloads: Workload[]; image: { directIo: boolean; mountOptions: string; features: string; sizeBytes: number };
  tarball: Tarball | undefined; started: Date; elapsedSeconds: number; argv: string[]; repo: string; pkg: string; build: string
}): string {
  const { opts, res, workloads, tarball } = o
  const m = machineInfo(o.repo)
  const s = opts.sizes
  const startMed = (c: Column): string => {
    const xs = res.startSeconds.get(c)
    return xs && xs.length ? `${median(xs).toFixed(2)} s` : '—'
  }
  const cmd = ['npm run bench', ...(o.argv.length ? ['--', ...o.argv] : [])].join(' ')
  const lines: string[] = []
  lines.push('# Performance', '')
  lines.push(`Generated by \`${cmd}\` (bench/run.ts) on ${o.started.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}; the run took ${Math.round(o.elapsedSeconds)} s.`)
  lines.push('Do not edit by hand: rerun the benchmark instead.', '')
  lines.push('Columns:', '')
  lines.push('- **raw**: the data directory itself, no FUSE.')
  lines.push('- **bare**: `replicafs passthrough --fuse compat`, the same fuse-native adapter (big_writes) with no journal.')
  lines.push(`- **primary**: \`replicafs primary --fuse compat\`, every change journaled in the SRL (${opts.srlSizeBytes === undefined ? `default size, ${SRL_BYTES_DEFAULT / MiB} MiB` : `--srl-size ${opts.srlSizeBytes}`}) before it is acknowledged.`)
  if (opts.columns.some((c) => LL_COLUMNS.includes(c))) lines.push('- **bare ll**, **primary ll**: the same two with `--fuse ll` (libfuse 3\'s low-level transport, the default).')
  lines.push('')
  lines.push('Every number is a throughput (higher is better), the median of ' + `${opts.reps} run${opts.reps > 1 ? 's' : ''}` + '. Ratios compare medians. **primary/bare** is the')
  lines.push('cost of the journal alone and is what the targets apply to.', '')
  lines.push('## Results', '')
  lines.push(summaryTable(res, workloads, opts.columns, false).md, '')
  if (res.invalid.size) lines.push('(!) not comparable: see the warnings below.', '')
  if (metricsOf(workloads).some((x) => x.hasSync)) {
    lines.push('Same metadata-heavy workloads with the `syncfs` that follows each timed phase counted in the time', '(what it costs to make the result durable on the data filesystem):', '')
    lines.push(summaryTable(res, workloads, opts.columns, true).md, '')
  }
  if (res.errors.length) {
    lines.push('**Errors in this run:**', '')
    for (const e of res.errors) lines.push('```', e, '```')
    lines.push('')
  }
  if (res.warnings.length) {
    lines.push('Warnings:', '')
    for (const w of res.warnings) lines.push(`- ${w.replace(/\|/g, '\\|')}`)
    lines.push('')
  }
  lines.push('## Machine', '')
  for (const [k, v] of Object.entries(m)) lines.push(`- ${k}: ${v}`)
  lines.push(`- replicafs build: ${o.build} (sha256 prefix of dist/src and dist/bench)${opts.snapshot ? ', run from a copy taken at the start' : ', run from the working tree'}`)
  const maxLoad = Math.max(...res.loads)
  lines.push(`- 1-minute load average: ${res.loads[0].toFixed(2)} at the start, at most ${maxLoad.toFixed(2)} before a timed phase` +
    (maxLoad > os.availableParallelism() / 2 ? ` — **other work was running on this ${os.availableParallelism()}-CPU machine during the run; expect noise**` : ''))
  lines.push(`- benchmark filesystem: fresh ${o.image.sizeBytes / GiB} GiB ext4 image (features: ${o.image.features}), mounted ${o.image.mountOptions}, loop device ${o.image.directIo ? 'with direct I/O' : 'buffered (direct I/O unavailable)'}`)
  lines.push('')
  lines.push('## Reproduce', '', '```sh', 'npm ci', cmd, '```', '')
  lines.push('As root (loop mount and FUSE). `npm run bench -- --quick` is a smoke run (small sizes, one repetition, does not touch this file);')
  lines.push('`--only seq,randsync,randdatasync,smallfiles,untar` and `--columns raw,bare,primary` select subsets; `--help` lists the rest.', '')
  lines.push('## Method', '')
  lines.push(`- **Fresh filesystem.** Each run creates a ${o.image.sizeBytes / GiB} GiB image file under /tmp (\`fallocate\`), formats it with \`mkfs.ext4\``)
  lines.push('  (journal on; inode tables and journal initialised up front so no lazy-init thread runs during timing), attaches it to a loop device')
  lines.push('  (direct I/O, so the image is not cached twice) and mounts it. Everything lives on it: raw data directories, bare and primary')
  lines.push('  data directories, mountpoints, SRL state directories, the tarball. It is unmounted, detached and deleted at the end, pass or fail.')
  lines.push('  (The host root filesystem is ext4 without a journal and gets slower after many deletes, so it is not used directly.)')
  lines.push(`- **Warm-up.** Before anything is timed, ${opts.warmupPasses} × ${opts.warmupMiB} MiB is written with \`dd conv=fsync\` and deleted: the VM hands freed`)
  lines.push('  memory back to the host, so first touches of memory (and of the image\'s blocks) are slow.')
  lines.push('- **Order and isolation.** For each workload, each repetition runs the three columns in a rotated order (raw→bare→primary,')
  lines.push('  bare→primary→raw, primary→raw→bare) so drift does not favour one column. Every (workload, repetition, column) gets fresh')
  lines.push('  directories and, for bare and primary, a freshly started daemon (`replicafs … --daemon`, stopped with `replicafs stop`')
  lines.push(`  afterwards; median start-up: bare ${startMed('bare')}, primary ${startMed('primary')}, not counted). The image is synced (\`syncfs\`)`)
  lines.push('  before each timed phase, and directories are deleted and synced between runs, outside timing.')
  if (opts.snapshot) {
    lines.push('- **One build.** At the start the built package (bin/, dist/, native-prebuilds/, node_modules/) is copied next to the image;')
    lines.push('  daemons and helpers run from the copy, so a rebuild or `npm ci` in the working tree during the run cannot change them.')
  }
  if (opts.prewarm) {
    lines.push('- **Pre-warm before every timed phase.** This VM hands memory that stays free for about 2 s back to the host, and')
    lines.push('  touching it again costs about 2 s per GiB (a 1 GiB `dd` runs at ~450 MiB/s instead of ~2 GiB/s after 5 s idle). Daemon')
    lines.push('  start-up and the other columns take longer than that, so immediately before each timed phase (after the syncfs) the')
    lines.push('  harness writes and deletes as much page cache as the phase needs on the image (`dd conv=fsync`, `rm`, `syncfs`:')
    lines.push(`  ${Math.round(s.seqMiB * 1.5)} MiB before seq, twice the tarball before untar, 256 MiB otherwise), identically for every column.`)
    lines.push('  Without it (`--no-prewarm`) the seq numbers mostly measure the hypervisor and vary by 2x between repetitions.')
  } else {
    lines.push('- **No pre-warm** (`--no-prewarm`): timed phases may run on memory the VM has returned to the host; expect noise.')
  }
  lines.push('- **Durability check.** The loop device\'s counters (/sys/block/loopN/stat) are read around each timed phase. For seq,')
  lines.push('  at least 90% of the file must have reached the device when `dd conv=fsync` exits; for randsync and randdatasync, device cache flushes per')
  lines.push('  sync are compared with raw (1.00 there). A column whose sync does not reach the device is marked (!) and its target is')
  lines.push('  not judged: it would look fast for the wrong reason.')
  lines.push(`- **Medians** of ${opts.reps} repetition${opts.reps > 1 ? 's' : ''}; all samples are listed below.`)
  lines.push('')
  lines.push('Workloads:', '')
  const ran = (name: string): boolean => workloads.some((w) => w.name === name)
  if (ran('seq')) {
    lines.push(`1. **seq**: \`dd if=/dev/zero of=TARGET/seq.bin bs=1M count=${s.seqMiB} conv=fsync\`, timed from spawn to exit, so the final fsync is`)
    lines.push('   included. MiB/s = MiB written / seconds. Through FUSE each 1 MiB write reaches the daemon as 128 KiB writes (big_writes).')
  }
  const rands = ['randsync', 'randdatasync'].filter(ran)
  if (rands.length) {
    lines.push(`2. **${rands.join('**, **')}**: a child process (bench/fsync-writer.ts) prepares a ${s.randFileMiB} MiB file of random data (written and`)
    lines.push(`   fsynced, then the filesystem is synced; not timed), then does ${s.randOps} × { pwrite 4 KiB at a random 4 KiB-aligned offset; sync },`)
    lines.push('   where sync is `fsync` for randsync (the issue\'s workload and target) and `fdatasync` for randdatasync (reported, no target).')
    lines.push('   On raw the sync goes to ext4; on bare it is the passthrough\'s fsync handler, which calls fsync or fdatasync on the data file as')
    lines.push('   asked (ext4\'s fsync also commits the inode\'s new mtime to its journal when the timestamp changed; fdatasync does not); on')
    lines.push('   primary it is the Primary\'s fsync handler, which makes the SRL durable (fdatasync of the preallocated ring, the same for both:')
    lines.push('   the record carries the mtime, and the data file is written after the reply and replayed after a crash). Offsets and data come')
    lines.push('   from a fixed seed, so the final file must be identical in every column; its sha256 is')
    lines.push(`   compared (${[...res.digests.values()].every((d) => d.size <= 1) ? 'it was identical' : 'IT DIFFERED — see errors'}).`)
  }
  if (ran('smallfiles')) {
    lines.push(`3. **create / delete**: a child process (bench/small-files.ts) creates ${s.files.toLocaleString('en-US')} files of ${s.fileBytes} B in ${Math.ceil(s.files / s.filesPerDir)}`)
    lines.push(`   directories of ${s.filesPerDir} (mkdir; open O_CREAT|O_TRUNC, write, close), then, in a second process, unlinks them and removes the`)
    lines.push('   directories. Each phase is timed inside the process (Node start-up not counted); no fsync. The `syncfs` of the data')
    lines.push('   filesystem right after each phase is timed separately and reported in the second table.')
  }
  if (tarball) {
    lines.push(`4. **untar**: \`tar -xf\` of a ${(tarball.bytes / MiB).toFixed(1)} MiB tarball with ${tarball.entries.toLocaleString('en-US')} entries, built once per run from`)
    lines.push(`   ${tarball.sources.map((x) => `\`${path.relative(o.pkg, x).startsWith('..') ? x : path.relative(o.pkg, x)}\``).join(' and ')} (as root, so tar also restores owners, modes and mtimes). Timed from spawn`)
    lines.push('   until tar exits (MiB/s of tarball); the `syncfs` afterwards is timed separately (second table).')
  }
  lines.push('')
  lines.push('Fairness notes: `seq` writes zeros, which keeps `dd` from being CPU-bound on random data; a journal that compressed or')
  lines.push('skipped zero blocks would look better than it is, and replicafs did neither when this harness was written (re-check if that')
  lines.push('changes). `randsync` and `randdatasync` write random data. FUSE mounts do not forward `syncfs`, so the "incl. sync" numbers sync the underlying')
  lines.push('ext4 image for every column.')
  lines.push('')
  lines.push('## All samples', '')
  lines.push(samplesTable(res, workloads, opts.columns), '')
  return lines.join('\n')
}

async function main(): Promise<number> {
  const repo = path.resolve(__dirname, '..', '..')
  const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }
  const argv = process.argv.slice(2)
  const opts = parseArgs(repo, argv)
  const started = new Date()
  const t0 = Date.now()
  const elapsed = (): string => `${((Date.now() - t0) / 1000).toFixed(0)}s`

  if (process.getuid?.() !== 0) throw new Error('the benchmark must run as root (it loop-mounts an ext4 image and mounts FUSE)')
  const workloads = WORKLOADS.filter((w) => !opts.only || opts.only.includes(w.name))
  const fuseColumns = opts.columns.filter((c) => c !== 'raw')
  const deadColumns = new Map<Column, string>()
  if (fuseColumns.length) {
    try {
      checkCli(repo)
    } catch (e) {
      for (const c of fuseColumns) deadColumns.set(c, (e as Error).message)
      log(`${(e as Error).message}; only the raw column will be measured`)
    }
  }

  const res: Results = { cells: new Map(), startSeconds: new Map(), digests: new Map(), errors: [], warnings: [], invalid: new Set(), loads: [os.loadavg()[0]] }
  if (deadColumns.size) res.errors.push(deadColumns.values().next().value as string)
  if (res.loads[0] > 0.5) log(`warning: load average is ${res.loads[0].toFixed(2)} before starting: other work on this machine will add noise`)
  let image: Image | undefined
  let tarball: Tarball | undefined
  const buildAtStart = buildHash(repo)
  /** Package root the daemons and helpers run from: a snapshot copy (default) or the working tree. */
  let pkg = repo
  let pkgBuild = buildAtStart

  let aborting = false
  const onSignal = (sig: NodeJS.Signals): void => {
    if (aborting) return
    aborting = true
    log(`${sig}: cleaning up`)
    void runCleanups(log).finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('SIGHUP', onSignal)

  try {
    log(`creating a ${opts.imageBytes / GiB} GiB ext4 image`)
    image = await createImage(opts.imageBytes, log)
    const img = image
    cleanups.push(() => img.destroy())
    log(`image on ${img.loopDevice} (direct I/O ${img.directIo ? 'on' : 'off'}) mounted at ${img.mountpoint} (${img.mountOptions})`)

    if (opts.snapshot) {
      // On the host filesystem next to the image file, not on the image; deleted with it.
      pkg = path.join(img.work, 'pkg')
      pkgBuild = await snapshotPackage(repo, pkg, log)
      log(`running replicafs from a snapshot of the build (${pkgBuild}) in ${pkg}`)
    }
    for (const helper of ['fsync-writer.js', 'small-files.js']) {
      const p = path.join(pkg, 'dist', 'bench', helper)
      if (!fs.existsSync(p)) throw new Error(`${p} missing: run \`npm run bench\` (it compiles first)`)
    }
    if (fuseColumns.length && !deadColumns.size) {
      const main = path.join(pkg, 'dist', 'src', 'cli', 'main.js')
      if (!fs.existsSync(main)) {
        const msg = `${main} does not exist: replicafs is not built (npm run build)`
        for (const c of fuseColumns) deadColumns.set(c, msg)
        res.errors.push(msg)
        log(`${msg}; only the raw column will be measured`)
      }
    }

    log(`warm-up: ${opts.warmupPasses} × ${opts.warmupMiB} MiB`)
    for (let i = 0; i < opts.warmupPasses; i++) {
      const f = path.join(img.mountpoint, 'warmup.bin')
      const r = await runOk(['dd', 'if=/dev/zero', `of=${f}`, 'bs=1M', `count=${opts.warmupMiB}`, 'conv=fsync', 'status=none'], { timeoutMs: 600_000 })
      fs.rmSync(f)
      await syncfs(img.mountpoint)
      log(`  warm-up pass ${i + 1}: ${(opts.warmupMiB / r.seconds).toFixed(0)} MiB/s`)
    }

    if (workloads.some((w) => w.name === 'untar')) {
      tarball = await buildTarball(pkg, path.join(img.mountpoint, 'cache'), opts.quick)
      log(`tarball: ${(tarball.bytes / MiB).toFixed(1)} MiB, ${tarball.entries} entries`)
      // Read it once so every column finds it in the page cache.
      await runOk(['dd', `if=${tarball.file}`, 'of=/dev/null', 'bs=1M', 'status=none'], { timeoutMs: 300_000 })
    }
    const settle = (): Promise<number> => syncfs(img.mountpoint)
    // The VM returns memory freed for ~2 s to the host, and touching it again costs ~2 s per GiB
    // (measured: 1 GiB dd at ~450 MiB/s instead of ~2 GiB/s after 5 s idle). Daemon start-up and
    // other columns take longer than that, so just before each timed phase we write and delete
    // as much page cache as the phase will need: the phase then reuses pages the guest still has.
    const prewarmFile = path.join(img.mountpoint, 'prewarm.bin')
    const beforeTiming = async (mib: number): Promise<void> => {
      res.loads.push(os.loadavg()[0])
      await settle()
      if (opts.prewarm && mib > 0) {
        await runOk(['dd', 'if=/dev/zero', `of=${prewarmFile}`, 'bs=1M', `count=${mib}`, 'conv=fsync', 'status=none'], { timeoutMs: 600_000 })
        fs.rmSync(prewarmFile)
        await settle()
      }
    }

    for (const w of workloads) {
      log(`== ${w.name}: ${w.title(opts.sizes)}  [${elapsed()}]`)
      for (const m of w.metrics) res.cells.set(m.name, new Map(opts.columns.map((c) => [c, { samples: [], errors: [] }])))
      for (let rep = 0; rep < opts.reps; rep++) {
        const order = opts.columns.map((_c, i) => opts.columns[(i + rep) % opts.columns.length])
        for (const col of order) {
          // Interrupted: park here; the signal handler cleans up and exits the process.
          if (aborting) await new Promise<never>(() => undefined)
          const cellsOf = (): Cell[] => w.metrics.map((m) => res.cells.get(m.name)!.get(col)!)
          if (deadColumns.has(col)) {
            if (rep === 0) for (const c of cellsOf()) c.errors.push(`skipped: ${deadColumns.get(col)!.split('\n')[0]}`)
            continue
          }
          const dir = path.join(img.mountpoint, `${w.name}-${rep + 1}-${col}`)
          fs.mkdirSync(dir)
          let daemon: Daemon | undefined
          let stopCleanup: (() => Promise<void>) | undefined
          try {
            let target: string
            if (col === 'raw') {
              target = path.join(dir, 'data')
              fs.mkdirSync(target)
            } else {
              const dirs = { data: path.join(dir, 'data'), mount: path.join(dir, 'mnt'), state: path.join(dir, 'state') }
              try {
                daemon = await startDaemon(pkg, col.startsWith('bare') ? 'passthrough' : 'primary', dirs, {
                  srlSizeBytes: opts.srlSizeBytes, log, warn: (w) => res.warnings.push(w), extraArgs: ['--fuse', LL_COLUMNS.includes(col) ? 'll' : 'compat']
                })
              } catch (e) {
                const msg = (e as Error).message
                deadColumns.set(col, msg)
                res.errors.push(msg)
                for (const c of cellsOf()) c.errors.push(msg)
                log(`${msg}\n[bench] the ${col} column is skipped for the rest of this run`)
                continue
              }
              stopCleanup = daemon.stop
              cleanups.push(stopCleanup)
              if (!res.startSeconds.has(col)) res.startSeconds.set(col, [])
              res.startSeconds.get(col)!.push(daemon.startSeconds)
              target = dirs.mount
            }
            const ctx: Ctx = { repo: pkg, target, sizes: opts.sizes, tarball: tarball!, settle, beforeTiming, deviceStats: img.deviceStats }
            const samples = await w.run(ctx)
            for (const s of samples) {
              res.cells.get(s.metric)!.get(col)!.samples.push(s)
              if (s.digest) {
                if (!res.digests.has(s.metric)) res.digests.set(s.metric, new Set())
                res.digests.get(s.metric)!.add(s.digest)
              }
              const m = w.metrics.find((x) => x.name === s.metric)!
              log(`  rep ${rep + 1} ${col.padEnd(7)} ${s.metric.padEnd(8)} ${fmt(s.value).padStart(8)} ${m.unit}  (${s.seconds.toFixed(2)} s${s.syncSeconds !== undefined ? ` + sync ${s.syncSeconds.toFixed(2)} s` : ''}${s.note ? `; ${s.note}` : ''})`)
            }
          } catch (e) {
            if (aborting) continue
            const msg = `${w.name} on ${col} (rep ${rep + 1}): ${(e as Error).message}`
            res.errors.push(msg)
            for (const c of cellsOf()) c.errors.push(msg)
            log(`ERROR ${msg}`)
          } finally {
            if (daemon) await daemon.stop()
            if (stopCleanup) {
              const i = cleanups.lastIndexOf(stopCleanup)
              if (i >= 0) cleanups.splice(i, 1)
            }
            try {
              fs.rmSync(dir, { recursive: true, force: true })
            } catch (e) {
              log(`warning: could not remove ${dir}: ${(e as Error).message}`)
            }
            await settle()
          }
        }
      }
      // A sync that never reaches the disk makes a column look fast for the wrong reason (e.g. a
      // passthrough whose fsync handler does nothing). Raw shows what a real sync costs in flushes.
      for (const m of w.metrics) {
        for (const c of opts.columns) {
          const nd = res.cells.get(m.name)?.get(c)?.samples.find((x) => x.notDurable)?.notDurable
          if (nd && !res.invalid.has(`${m.name}/${c}`)) {
            const msg = `${m.name} on ${c}: ${nd} — its fsync does not make data durable, so its number is not comparable`
            res.warnings.push(msg)
            res.invalid.add(`${m.name}/${c}`)
            log(`WARNING ${msg}`)
          }
        }
        const fpo = (c: Column): number | undefined => {
          const xs = res.cells.get(m.name)?.get(c)?.samples.map((x) => x.flushesPerOp).filter((x): x is number => x !== undefined) ?? []
          return xs.length ? median(xs) : undefined
        }
        const raw = fpo('raw')
        for (const c of opts.columns) {
          const v = fpo(c)
          if (v === undefined) continue
          if (v < 0.5 && (raw === undefined || raw >= 0.9) && !res.invalid.has(`${m.name}/${c}`)) {
            const msg = `${m.name} on ${c}: only ${v.toFixed(2)} device flushes per sync (raw: ${raw === undefined ? 'not measured' : raw.toFixed(2)}) — ` +
              `its sync does not reach the disk, so its number is not comparable`
            res.warnings.push(msg)
            res.invalid.add(`${m.name}/${c}`)
            log(`WARNING ${msg}`)
          }
        }
      }
      for (const [metric, digests] of res.digests) {
        if (digests.size > 1) {
          const msg = `${metric}: the final file differs between runs/columns (sha256 ${[...digests].map((d) => d.slice(0, 12)).join(', ')})`
          if (!res.errors.includes(msg)) res.errors.push(msg)
          log(`ERROR ${msg}`)
        }
      }
    }
  } finally {
    await runCleanups(log)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.off('SIGHUP', onSignal)
  }

  const elapsedSeconds = (Date.now() - t0) / 1000
  if (fuseColumns.length && buildHash(repo) !== buildAtStart) {
    res.warnings.push(opts.snapshot
      ? `the working tree's build changed during the run; this run used the snapshot taken at the start (build ${pkgBuild})`
      : 'dist/ changed during the run (someone rebuilt replicafs) and --no-snapshot was given: the bare/primary samples may mix daemon versions')
  }
  process.stdout.write(`\nreplicafs benchmark, ${started.toISOString()}, ${opts.reps} rep(s), median; ${Math.round(elapsedSeconds)} s; ` +
    `load average ${res.loads[0].toFixed(2)} at start, max ${Math.max(...res.loads).toFixed(2)}\n\n`)
  process.stdout.write(summaryTable(res, workloads, opts.columns, false).text + '\n')
  if (res.invalid.size) process.stdout.write('(!) not comparable: see the warnings below\n')
  if (metricsOf(workloads).some((x) => x.hasSync)) {
    process.stdout.write('\nincluding the syncfs after each phase:\n\n' + summaryTable(res, workloads, opts.columns, true).text + '\n')
  }
  if (res.warnings.length) process.stdout.write(`\n${res.warnings.length} warning(s):\n${res.warnings.map((e) => `  - ${e}`).join('\n')}\n`)
  if (res.errors.length) process.stdout.write(`\n${res.errors.length} error(s):\n${res.errors.map((e) => `  - ${e}`).join('\n')}\n`)

  const fullRun = !opts.quick && !opts.only && DEFAULT_COLUMNS.every((c) => opts.columns.includes(c))
  const write = opts.writeDoc ?? (fullRun && res.errors.length === 0)
  const resultJson = path.join(__dirname, 'last-result.json')
  fs.writeFileSync(resultJson, JSON.stringify({
    started, elapsedSeconds, argv, opts, errors: res.errors, warnings: res.warnings, loads: res.loads,
    cells: Object.fromEntries([...res.cells].map(([k, v]) => [k, Object.fromEntries(v)])),
    startSeconds: Object.fromEntries(res.startSeconds),
  }, null, 2))
  if (write && image) {
    let doc = renderDoc({ opts, res, workloads, image, tarball, started, elapsedSeconds, argv, repo, pkg, build: pkgBuild })
    // The "## Replication" section comes from a separate run (`npm run bench:replication`): render it
    // from the JSON that run leaves in bench/results/, so rewriting this file never loses it
    // (see replication-doc.ts).
    const replSection = replicationSectionForMainDoc(repo, fs.existsSync(opts.docPath) ? fs.readFileSync(opts.docPath, 'utf8') : null)
    if (replSection) doc = spliceSection(doc, replSection)
    // The same for the synchronization bench (bench/sync.ts leaves its section in bench/results/).
    const syncSection = path.join(repo, 'bench', 'results', 'sync.md')
    if (fs.existsSync(syncSection)) doc = spliceNamed(doc, SYNC_HEADING, fs.readFileSync(syncSection, 'utf8'))
    // And for the CLI start-up bench (bench/cli-startup.ts).
    const cliSection = path.join(repo, 'bench', 'results', 'cli-startup.md')
    if (fs.existsSync(cliSection)) doc = spliceNamed(doc, CLI_HEADING, fs.readFileSync(cliSection, 'utf8'))
    // And for the libfuse 3 low-level transport's (bench/ll.ts).
    const llSection = path.join(repo, 'bench', 'results', 'll.md')
    if (fs.existsSync(llSection)) doc = spliceNamed(doc, LL_HEADING, fs.readFileSync(llSection, 'utf8'))
    fs.mkdirSync(path.dirname(opts.docPath), { recursive: true })
    fs.writeFileSync(opts.docPath, doc)
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), opts.docPath) || opts.docPath}\n`)
  } else {
    process.stdout.write(`\n${path.relative(repo, opts.docPath)} not written (${opts.writeDoc === false ? '--no-doc' : !fullRun ? 'partial or --quick run; --write-doc to force' : 'errors; --write-doc to force'}); samples in ${path.relative(process.cwd(), resultJson)}\n`)
  }
  return res.errors.length ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    await runCleanups((s) => process.stderr.write(`[bench] ${s}\n`))
    process.stderr.write(`bench: ${(e as Error).message ?? String(e)}\n`)
    process.exit(2)
  },
)
