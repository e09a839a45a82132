/**
 * Replication benchmark: `npm run bench:replication [-- options]`.
 *
 * Four columns, measured in the same run on one fresh journaled ext4 image
 * (the same image, warm-up, pre-warm and build snapshot as run.ts):
 *   raw       the data directory itself (no FUSE)
 *   primary   `replicafs primary` with no Secondary
 *   off       Primary --secondary 127.0.0.1:PORT --synchronous off, and a Secondary
 *   override  the same with --synchronous override
 *   tls       sync=off with TLS 1.3 on the RLINK (--tls-cert/--tls-key/--tls-ca; certificates made
 *             by openssl at start)
 *   zstd      sync=off with --compress zstd (seq writes zeros: zstd's best case; randsync random
 *             bytes: its worst)
 * Three workloads: a sustained sequential write (1 MiB writes, final fsync),
 * 4 KiB random write + fdatasync, and small-file creation. For the replicated
 * columns it also measures the drain (writer exit until the Primary shows
 * everything data-acked) and samples the RLINK lag from the Primary's status
 * every 200 ms while the writer runs.
 *
 * A full run writes bench/results/replication.json and the "## Replication"
 * section of docs/PERFORMANCE.md (see replication-doc.ts for why the JSON).
 * Must run as root (loop mount, FUSE).
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as crypto from 'crypto'
import { createImage, Image, syncfs } from './image'
import { checkCli, Daemon, startDaemon } from './daemon'
import { runOk } from './proc'
import { makeCerts, cpuSecondsOf } from './certs'
import { buildHash, snapshotPackage } from './snapshot'
import { fmt, machineInfo, table } from './report'
import {
  COLUMN_TITLES, cpuCount, formatResult, LagPoint, lagRows, REPL_COLUMNS, REPL_WORKLOADS, REPLICATED, renderReplicationSection, ReplColumn,
  replicationJsonPath, ReplResult, ReplSample, ReplSizes, ReplWorkload, samplesRows, spliceSection, summaryRows,
} from './replication-doc'
import { request } from '../src/control'
import { SRL_BYTES_DEFAULT } from '../src/limits'

const GiB = 1024 * 1024 * 1024
const MiB = 1024 * 1024
const SAMPLE_PERIOD_MS = 200
const DRAIN_POLL_MS = 10
const DRAIN_TIMEOUT_MS = 600_000
const CONNECT_TIMEOUT_MS = 30_000
const PHASE_TIMEOUT_MS = 900_000
const PREWARM_SMALL_MIB = 256

interface Options {
  quick: boolean
  only: ReplWorkload[] | null
  columns: ReplColumn[]
  reps: number
  imageBytes: number
  warmupMiB: number
  warmupPasses: number
  prewarm: boolean
  snapshot: boolean
  srlSizeBytes: number | undefined
  sizes: ReplSizes
  writeDoc: boolean | undefined
  docPath: string
  jsonPath: string | undefined
  cpuProfDir: string | undefined
  /** --seq-mib or --files given: not the standard sizes. */
  customSizes: boolean
}

const HELP = `usage: npm run bench:replication -- [options]

  --quick            smoke run: small sizes, 1 repetition; writes neither the doc nor bench/results/replication.json
  --only NAME[,NAME] run only these workloads: ${REPL_WORKLOADS.join(', ')}
  --columns LIST     subset of ${REPL_COLUMNS.join(',')} (default all six)
  --reps N           repetitions per measurement (default 3; --quick 1)
  --seq-mib N        size of the sequential write (default 1024; --quick 128)
  --files N          files for the create workload (default 10000; --quick 1000)
  --srl-size BYTES   --srl-size for both daemons (default: the daemons' default, ${SRL_BYTES_DEFAULT / MiB} MiB)
  --image-gib N      size of the ext4 image (default 4)
  --cpu-prof DIR     run every daemon under node --cpu-prof --cpu-prof-dir=DIR (profiles written when it stops)
  --no-snapshot      run daemons from the working tree instead of a copy taken at start
  --no-prewarm       skip the page-cache pre-warm before each timed phase
  --write-doc        write the JSON and the doc section even for partial/quick runs or with errors
  --no-doc           never write them
  --doc PATH         splice the section into this file instead of docs/PERFORMANCE.md
  --json PATH        write the result here instead of bench/results/replication.json

The full run (no --quick/--only/--columns/--seq-mib/--files, no errors) writes bench/results/replication.json
and replaces the "## Replication" section of docs/PERFORMANCE.md (appends it if missing). Must run as root.`

function parseArgs(repo: string, argv: string[]): Options {
  let quick = false
  let only: ReplWorkload[] | null = null
  let columns: ReplColumn[] = [...REPL_COLUMNS]
  let reps: number | undefined
  let imageGiB = 4
  let seqMiB: number | undefined
  let files: number | undefined
  let srlSizeBytes: number | undefined
  let writeDoc: boolean | undefined
  let prewarm = true
  let snapshot = true
  let docPath = path.join(repo, 'docs', 'PERFORMANCE.md')
  let jsonPath: string | undefined
  let cpuProfDir: string | undefined
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
        const ws = need(i++, a).split(',').map((s) => s.trim()).filter(Boolean)
        for (const n of ws) if (!(REPL_WORKLOADS as readonly string[]).includes(n)) throw new Error(`--only: unknown workload ${n} (know ${REPL_WORKLOADS.join(', ')})`)
        only = REPL_WORKLOADS.filter((w) => ws.includes(w))
        break
      }
      case '--columns': {
        const cs = need(i++, a).split(',').map((s) => s.trim()).filter(Boolean)
        for (const c of cs) if (!(REPL_COLUMNS as readonly string[]).includes(c)) throw new Error(`--columns: unknown column ${c} (know ${REPL_COLUMNS.join(', ')})`)
        columns = REPL_COLUMNS.filter((c) => cs.includes(c))
        break
      }
      case '--reps': reps = posInt(need(i++, a), a); break
      case '--seq-mib': seqMiB = posInt(need(i++, a), a); break
      case '--files': files = posInt(need(i++, a), a); break
      case '--image-gib': imageGiB = posInt(need(i++, a), a); break
      case '--srl-size': srlSizeBytes = posInt(need(i++, a), a); break
      case '--cpu-prof': cpuProfDir = path.resolve(need(i++, a)); break
      case '--no-prewarm': prewarm = false; break
      case '--no-snapshot': snapshot = false; break
      case '--write-doc': writeDoc = true; break
      case '--no-doc': writeDoc = false; break
      case '--doc': docPath = path.resolve(need(i++, a)); break
      case '--json': jsonPath = path.resolve(need(i++, a)); break
      case '-h': case '--help': {
        process.stdout.write(HELP + '\n')
        return process.exit(0)
      }
      default: throw new Error(`unknown option ${a} (see --help)`)
    }
  }
  const sizes: ReplSizes = quick
    ? { seqMiB: seqMiB ?? 128, randFileMiB: 16, randOps: 300, files: files ?? 1000, filesPerDir: 100, fileBytes: 1024 }
    : { seqMiB: seqMiB ?? 1024, randFileMiB: 64, randOps: 3000, files: files ?? 10_000, filesPerDir: 100, fileBytes: 1024 }
  return {
    quick, only, columns, reps: reps ?? (quick ? 1 : 3), imageBytes: imageGiB * GiB,
    warmupMiB: quick ? 256 : 1024, warmupPasses: quick ? 1 : 2, prewarm, snapshot, srlSizeBytes, sizes,
    writeDoc, docPath, jsonPath, cpuProfDir, customSizes: seqMiB !== undefined || files !== undefined,
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

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms))
}

function now(): number {
  return Number(process.hrtime.bigint()) / 1e9
}

// ---------------------------------------------------------------------------
// Talking to the daemons: their control socket, in process (spawning `replicafs status`
// every 200 ms would cost a Node start-up each time on a 2-CPU machine).

interface RlinkStatus {
  secondary: string; state: string; sentSeq: number; networkAckedSeq: number; dataAckedSeq: number
  lagUpdates: number; lagBytes: number; lagSeconds: number; lastError: string | null
}
interface Status {
  role: string; pid: number; fatal: string | null; listen?: string
  srl: { newestSeq: number | null; appliedSeq: number } | null
  rlinks?: RlinkStatus[]
  receivedSeq?: number; appliedSeq?: number; consistent?: boolean
}

async function status(state: string): Promise<Status> {
  return (await request(state, { cmd: 'status' }, 10_000)) as Status
}

function link(s: Status): RlinkStatus {
  const l = s.rlinks?.[0]
  if (!l) throw new Error('the Primary reports no RLINK')
  return l
}

async function waitConnected(state: string): Promise<void> {
  const deadline = Date.now() + CONNECT_TIMEOUT_MS
  for (;;) {
    const s = await status(state)
    const l = link(s)
    if (l.state === 'connected') return
    if (s.fatal) throw new Error(`Primary fatal: ${s.fatal}`)
    if (Date.now() > deadline) throw new Error(`the RLINK did not connect within ${CONNECT_TIMEOUT_MS / 1000} s (state ${l.state}, last error ${l.lastError ?? 'none'})`)
    await sleep(50)
  }
}

/** Polls until the Primary shows every update data-acked; returns seconds since `since` (a now() value). */
async function waitDrained(state: string, since: number): Promise<{ seconds: number; dacked: number }> {
  for (;;) {
    const s = await status(state)
    const l = link(s)
    if (l.lagUpdates === 0 && l.state === 'connected') return { seconds: now() - since, dacked: l.dataAckedSeq }
    if (s.fatal) throw new Error(`Primary fatal: ${s.fatal}`)
    if (now() - since > DRAIN_TIMEOUT_MS / 1000) throw new Error(`not drained after ${DRAIN_TIMEOUT_MS / 1000} s: ${JSON.stringify(l)}`)
    await sleep(DRAIN_POLL_MS)
  }
}

function lagSampler(state: string): { stop(): LagPoint[] } {
  const pts: LagPoint[] = []
  const t0 = now()
  let busy = false
  let stopped = false
  const tick = (): void => {
    if (busy || stopped) return
    busy = true
    status(state).then((s) => {
      if (stopped) return
      const l = link(s)
      pts.push({
        t: Math.round((now() - t0) * 1000) / 1000, newest: l.dataAckedSeq + l.lagUpdates, sent: l.sentSeq, nacked: l.networkAckedSeq, dacked: l.dataAckedSeq,
        lagUpdates: l.lagUpdates, lagBytes: l.lagBytes, lagSeconds: l.lagSeconds,
      })
    }, () => undefined).finally(() => { busy = false })
  }
  const timer = setInterval(tick, SAMPLE_PERIOD_MS)
  return { stop: () => { stopped = true; clearInterval(timer); return pts } }
}

function sha256File(file: string): string {
  const h = crypto.createHash('sha256')
  const fd = fs.openSync(file, 'r')
  try {
    const buf = Buffer.alloc(MiB)
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      h.update(buf.subarray(0, n))
    }
  } finally {
    fs.closeSync(fd)
  }
  return h.digest('hex')
}

function countEntries(root: string): number {
  let n = 0
  const walk = (dir: string): void => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      n++
      if (ent.isDirectory()) walk(path.join(dir, ent.name))
    }
  }
  walk(root)
  return n
}

function parseJson<T>(stdout: string, who: string): T {
  const line = stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as T
  } catch {
    throw new Error(`${who} printed no JSON result: ${stdout.slice(0, 200)}`)
  }
}

// ---------------------------------------------------------------------------

/** One (workload, repetition, column): where to write and what runs. */
interface Setup {
  column: ReplColumn
  /** Where the workload writes: the raw directory or the Primary's mount. */
  target: string
  primaryState?: string
  primaryPid?: number
  secondaryPid?: number
  /** The Primary's data directory (FUSE columns). */
  primaryData?: string
  /** The Secondary's data directory (replicated columns): the replica of the Primary's. */
  secondaryData?: string
}

interface Ctx {
  pkg: string
  sizes: ReplSizes
  beforeTiming(mib: number): Promise<void>
  deviceStats(): { writeBytes: number; flushes: number }
}

/** Around a timed phase: CPU and device counters, lag readings, then the drain. */
async function timed<T>(ctx: Ctx, st: Setup, body: () => Promise<T>): Promise<{
  result: T; drainSeconds?: number; lag?: LagPoint[]; records?: number; cpuSeconds?: ReplSample['cpuSeconds']; device: ReplSample['device']
}> {
  const replicated = REPLICATED.includes(st.column)
  const seq0 = replicated ? link(await status(st.primaryState!)).dataAckedSeq : 0
  const cpu = (): { primary: number; secondary?: number } | undefined => st.primaryPid === undefined ? undefined : {
    primary: cpuSecondsOf(st.primaryPid), secondary: st.secondaryPid === undefined ? undefined : cpuSecondsOf(st.secondaryPid),
  }
  const c0 = cpu()
  const d0 = ctx.deviceStats()
  const sampler = replicated ? lagSampler(st.primaryState!) : undefined
  let result: T
  let lag: LagPoint[] | undefined
  try {
    result = await body()
  } finally {
    lag = sampler?.stop()
  }
  const end = now()
  let drainSeconds: number | undefined
  let records: number | undefined
  if (replicated) {
    const d = await waitDrained(st.primaryState!, end)
    drainSeconds = d.seconds
    records = d.dacked - seq0
  }
  const c1 = cpu()
  const d1 = ctx.deviceStats()
  const cpuSeconds = c0 && c1 ? {
    primary: c1.primary - c0.primary,
    secondary: c0.secondary !== undefined && c1.secondary !== undefined ? c1.secondary - c0.secondary : undefined,
  } : undefined
  return { result, drainSeconds, lag, records, cpuSeconds, device: { writtenMiB: (d1.writeBytes - d0.writeBytes) / MiB, flushes: d1.flushes - d0.flushes } }
}

async function drainedBeforeTiming(st: Setup): Promise<void> {
  if (REPLICATED.includes(st.column)) await waitDrained(st.primaryState!, now())
}

const RUNNERS: Record<ReplWorkload, (ctx: Ctx, st: Setup) => Promise<Omit<ReplSample, 'workload' | 'column' | 'rep'> & { digest?: string }>> = {
  async seq(ctx, st) {
    const mib = ctx.sizes.seqMiB
    const file = path.join(st.target, 'seq.bin')
    await drainedBeforeTiming(st)
    // Page cache the phase dirties: data file and SRL on the Primary, twice that with a Secondary.
    await ctx.beforeTiming(2 * mib)
    const t = await timed(ctx, st, () => runOk(['dd', 'if=/dev/zero', `of=${file}`, 'bs=1M', `count=${mib}`, 'conv=fsync', 'status=none'], { timeoutMs: PHASE_TIMEOUT_MS }))
    const size = fs.statSync(file).size
    if (size !== mib * MiB) throw new Error(`dd wrote ${size} bytes, expected ${mib * MiB}`)
    if (st.secondaryData) {
      const copy = path.join(st.secondaryData, 'seq.bin')
      await runOk(['cmp', path.join(st.primaryData!, 'seq.bin'), copy], { timeoutMs: PHASE_TIMEOUT_MS })
    }
    return {
      value: mib / t.result.seconds, seconds: t.result.seconds, amount: mib, drainSeconds: t.drainSeconds, lag: t.lag,
      records: t.records, cpuSeconds: t.cpuSeconds, device: t.device, note: t.records !== undefined ? `${t.records} SRL records` : undefined,
    }
  },
  async randsync(ctx, st) {
    const file = path.join(st.target, 'rand.bin')
    const bytes = ctx.sizes.randFileMiB * MiB
    const writer = path.join(ctx.pkg, 'dist', 'bench', 'fsync-writer.js')
    await runOk([process.execPath, writer, 'prep', file, String(bytes)], { timeoutMs: PHASE_TIMEOUT_MS })
    await drainedBeforeTiming(st)
    await ctx.beforeTiming(PREWARM_SMALL_MIB)
    const t = await timed(ctx, st, () => runOk([process.execPath, writer, 'run', file, String(bytes), String(ctx.sizes.randOps), 'fdatasync', '1'], { timeoutMs: PHASE_TIMEOUT_MS }))
    const j = parseJson<{ ops: number; seconds: number; opsPerSec: number; p50Ms: number; p99Ms: number; maxMs: number; sha256: string }>(t.result.stdout, 'fsync-writer')
    if (st.secondaryData) {
      const copy = sha256File(path.join(st.secondaryData, 'rand.bin'))
      if (copy !== j.sha256) throw new Error(`the Secondary's rand.bin (sha256 ${copy.slice(0, 12)}) differs from the Primary's (${j.sha256.slice(0, 12)})`)
    }
    return {
      value: j.opsPerSec, seconds: j.seconds, amount: j.ops, drainSeconds: t.drainSeconds, lag: t.lag, records: t.records,
      cpuSeconds: t.cpuSeconds, device: t.device, digest: j.sha256, latency: { p50Ms: j.p50Ms, p99Ms: j.p99Ms, maxMs: j.maxMs },
      note: `p50 ${j.p50Ms.toFixed(2)} ms, p99 ${j.p99Ms.toFixed(2)} ms`,
    }
  },
  async create(ctx, st) {
    const tool = path.join(ctx.pkg, 'dist', 'bench', 'small-files.js')
    const root = path.join(st.target, 'tree')
    fs.mkdirSync(root)
    const { files, filesPerDir, fileBytes } = ctx.sizes
    await drainedBeforeTiming(st)
    await ctx.beforeTiming(PREWARM_SMALL_MIB)
    const t = await timed(ctx, st, () => runOk([process.execPath, tool, 'create', root, String(files), String(filesPerDir), String(fileBytes)], { timeoutMs: PHASE_TIMEOUT_MS }))
    const j = parseJson<{ seconds: number; filesPerSec: number }>(t.result.stdout, 'small-files')
    const expect = files + Math.ceil(files / filesPerDir)
    const n = countEntries(root)
    if (n !== expect) throw new Error(`after create: ${n} entries under ${root}, expected ${expect}`)
    if (st.secondaryData) {
      const m = countEntries(path.join(st.secondaryData, 'tree'))
      if (m !== expect) throw new Error(`after the drain the Secondary has ${m} entries under tree/, expected ${expect}`)
    }
    return {
      value: j.filesPerSec, seconds: j.seconds, amount: files, drainSeconds: t.drainSeconds, lag: t.lag, records: t.records,
      cpuSeconds: t.cpuSeconds, device: t.device, note: t.records !== undefined ? `${t.records} SRL records` : undefined,
    }
  },
}

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  const repo = path.resolve(__dirname, '..', '..')
  const log = (s: string): void => { process.stderr.write(`[bench:replication] ${s}\n`) }
  const argv = process.argv.slice(2)
  const opts = parseArgs(repo, argv)
  const started = new Date()
  const t0 = Date.now()
  const elapsed = (): string => `${((Date.now() - t0) / 1000).toFixed(0)}s`
  if (process.getuid?.() !== 0) throw new Error('the benchmark must run as root (it loop-mounts an ext4 image and mounts FUSE)')
  const workloads = REPL_WORKLOADS.filter((w) => !opts.only || opts.only.includes(w))
  checkCli(repo)

  const samples: ReplSample[] = []
  const errors: string[] = []
  const warnings: string[] = []
  const loads = [os.loadavg()[0]]
  const loadsAfter: number[] = []
  const startSeconds: Record<string, number[]> = { primary: [], secondary: [] }
  const digests = new Set<string>()
  if (loads[0] > 0.5) log(`warning: load average is ${loads[0].toFixed(2)} before starting: other work on this machine will add noise`)
  const buildAtStart = buildHash(repo)
  let pkg = repo
  let pkgBuild = buildAtStart
  let image: Image | undefined
  // Not NODE_OPTIONS (Node refuses --cpu-prof there): `replicafs --daemon` passes its own execArgv on to the daemon.
  const nodeArgs = opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : undefined
  if (opts.cpuProfDir) fs.mkdirSync(opts.cpuProfDir, { recursive: true })

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
      pkg = path.join(img.work, 'pkg')
      pkgBuild = await snapshotPackage(repo, pkg, log)
      log(`running replicafs from a snapshot of the build (${pkgBuild}) in ${pkg}`)
    }
    for (const f of ['dist/bench/fsync-writer.js', 'dist/bench/small-files.js', 'dist/src/cli/main.js', 'dist/src/cli/secondary.js']) {
      if (!fs.existsSync(path.join(pkg, f))) throw new Error(`${path.join(pkg, f)} missing: run \`npm run bench:replication\` (it compiles first)`)
    }
    const secret = path.join(img.work, 'secret')
    fs.writeFileSync(secret, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
    const tlsFor = opts.columns.includes('tls') ? await makeCerts(path.join(img.work, 'pki')) : null

    log(`warm-up: ${opts.warmupPasses} × ${opts.warmupMiB} MiB`)
    for (let i = 0; i < opts.warmupPasses; i++) {
      const f = path.join(img.mountpoint, 'warmup.bin')
      const r = await runOk(['dd', 'if=/dev/zero', `of=${f}`, 'bs=1M', `count=${opts.warmupMiB}`, 'conv=fsync', 'status=none'], { timeoutMs: 600_000 })
      fs.rmSync(f)
      await syncfs(img.mountpoint)
      log(`  warm-up pass ${i + 1}: ${(opts.warmupMiB / r.seconds).toFixed(0)} MiB/s`)
    }
    const settle = (): Promise<number> => syncfs(img.mountpoint)
    const prewarmFile = path.join(img.mountpoint, 'prewarm.bin')
    const ctx: Ctx = {
      pkg, sizes: opts.sizes, deviceStats: img.deviceStats,
      async beforeTiming(mib) {
        loads.push(os.loadavg()[0])
        await settle()
        if (opts.prewarm && mib > 0) {
          await runOk(['dd', 'if=/dev/zero', `of=${prewarmFile}`, 'bs=1M', `count=${mib}`, 'conv=fsync', 'status=none'], { timeoutMs: 600_000 })
          fs.rmSync(prewarmFile)
          await settle()
        }
      },
    }
    const deadColumns = new Map<ReplColumn, string>()

    for (const w of workloads) {
      log(`== ${w}  [${elapsed()}]`)
      for (let rep = 0; rep < opts.reps; rep++) {
        const order = opts.columns.map((_c, i) => opts.columns[(i + rep) % opts.columns.length])
        for (const col of order) {
          if (aborting) await new Promise<never>(() => undefined)
          if (deadColumns.has(col)) continue
          const dir = path.join(img.mountpoint, `${w}-${rep + 1}-${col}`)
          fs.mkdirSync(dir)
          const daemons: Daemon[] = []
          const stopAll = async (): Promise<void> => {
            // Primary first: a Secondary stopped first would leave the Primary reconnecting.
            while (daemons.length) await daemons.pop()!.stop()
          }
          cleanups.push(stopAll)
          try {
            let st: Setup
            if (col === 'raw') {
              st = { column: col, target: path.join(dir, 'data') }
              fs.mkdirSync(st.target)
            } else {
              const extra: string[] = []
              let secondaryData: string | undefined
              let secondaryPid: number | undefined
              if (REPLICATED.includes(col)) {
                const sdirs = { data: path.join(dir, 's', 'data'), mount: path.join(dir, 's', 'mnt'), state: path.join(dir, 's', 'state') }
                const sd = await startDaemon(pkg, 'secondary', sdirs, {
                  srlSizeBytes: opts.srlSizeBytes, extraArgs: ['--listen', '127.0.0.1:0', '--secret-file', secret, ...(col === 'tls' ? tlsFor!.secondary : [])], nodeArgs, log, warn: (x) => warnings.push(x),
                })
                daemons.push(sd)
                startSeconds.secondary.push(sd.startSeconds)
                const ss = await status(sdirs.state)
                if (!ss.listen) throw new Error('the Secondary\'s status has no listen address')
                secondaryData = sdirs.data
                secondaryPid = ss.pid
                extra.push('--secondary', ss.listen, '--secret-file', secret, '--synchronous', col === 'override' ? 'override' : 'off')
                if (col === 'tls') extra.push(...tlsFor!.primary)
                if (col === 'zstd') extra.push('--compress', 'zstd')
              }
              const pdirs = { data: path.join(dir, 'p', 'data'), mount: path.join(dir, 'p', 'mnt'), state: path.join(dir, 'p', 'state') }
              const pd = await startDaemon(pkg, 'primary', pdirs, { srlSizeBytes: opts.srlSizeBytes, extraArgs: extra, nodeArgs, log, warn: (x) => warnings.push(x) })
              daemons.push(pd)
              startSeconds.primary.push(pd.startSeconds)
              const ps = await status(pdirs.state)
              if (REPLICATED.includes(col)) await waitConnected(pdirs.state)
              st = { column: col, target: pdirs.mount, primaryData: pdirs.data, primaryState: pdirs.state, primaryPid: ps.pid, secondaryPid, secondaryData }
            }
            const { digest, ...r } = await RUNNERS[w](ctx, st)
            loadsAfter.push(os.loadavg()[0])
            if (digest) digests.add(digest)
            samples.push({ workload: w, column: col, rep: rep + 1, ...r })
            const lagMax = r.lag?.length ? Math.max(...r.lag.map((p) => p.lagBytes)) / MiB : undefined
            log(`  rep ${rep + 1} ${COLUMN_TITLES[col].padEnd(13)} ${fmt(r.value).padStart(8)} ${w === 'seq' ? 'MiB/s' : w === 'randsync' ? 'ops/s' : 'files/s'}  (${r.seconds.toFixed(2)} s` +
              `${r.drainSeconds !== undefined ? ` + drain ${r.drainSeconds.toFixed(2)} s` : ''}${lagMax !== undefined ? `; max lag ${lagMax.toFixed(1)} MiB` : ''}` +
              `${r.cpuSeconds ? `; CPU ${r.cpuSeconds.primary.toFixed(1)}${r.cpuSeconds.secondary !== undefined ? ` + ${r.cpuSeconds.secondary.toFixed(1)}` : ''} s` : ''}${r.note ? `; ${r.note}` : ''})`)
          } catch (e) {
            if (aborting) continue
            const msg = `${w} on ${col} (rep ${rep + 1}): ${(e as Error).message}`
            errors.push(msg)
            log(`ERROR ${msg}`)
            if (/failed to start/.test((e as Error).message)) {
              deadColumns.set(col, msg)
              log(`the ${col} column is skipped for the rest of this run`)
            }
          } finally {
            await stopAll()
            const i = cleanups.lastIndexOf(stopAll)
            if (i >= 0) cleanups.splice(i, 1)
            try {
              fs.rmSync(dir, { recursive: true, force: true })
            } catch (e) {
              log(`warning: could not remove ${dir}: ${(e as Error).message}`)
            }
            await settle()
          }
        }
      }
    }
    if (digests.size > 1) errors.push(`randsync: the final file differs between runs/columns (sha256 ${[...digests].map((d) => d.slice(0, 12)).join(', ')})`)
  } finally {
    await runCleanups(log)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.off('SIGHUP', onSignal)
  }

  const elapsedSeconds = (Date.now() - t0) / 1000
  if (buildHash(repo) !== buildAtStart) {
    warnings.push(opts.snapshot
      ? `the working tree's build changed during the run; this run used the snapshot taken at the start (build ${pkgBuild})`
      : 'dist/ changed during the run (someone rebuilt replicafs) and --no-snapshot was given: samples may mix daemon versions')
  }
  const result: ReplResult = {
    version: 1, started: started.toISOString(), elapsedSeconds,
    command: ['npm run bench:replication', ...(argv.length ? ['--', ...argv] : [])].join(' '),
    reps: opts.reps, sizes: opts.sizes, srlSizeBytes: opts.srlSizeBytes ?? null, srlSizeDefaultBytes: SRL_BYTES_DEFAULT,
    columns: opts.columns, workloads, samplePeriodMs: SAMPLE_PERIOD_MS, machine: machineInfo(repo), build: pkgBuild,
    snapshot: opts.snapshot, prewarm: opts.prewarm, warmup: { passes: opts.warmupPasses, mib: opts.warmupMiB },
    loads, loadsAfter, cpus: cpuCount(),
    image: image ? { sizeBytes: image.sizeBytes, features: image.features, mountOptions: image.mountOptions, directIo: image.directIo } : { sizeBytes: opts.imageBytes, features: '?', mountOptions: '?', directIo: false },
    startSeconds, samples, errors, warnings,
  }

  process.stdout.write(`\nreplicafs replication benchmark, ${result.started}, ${opts.reps} rep(s), median; ${Math.round(elapsedSeconds)} s; ` +
    `load average ${loads[0].toFixed(2)} at start, max ${Math.max(...loads, ...loadsAfter).toFixed(2)}\n\n`)
  const s = summaryRows(result)
  process.stdout.write(table(s.headers, s.rows, s.align).text + '\n')
  const l = lagRows(result)
  if (l.rows.length) process.stdout.write('\nlag while writing:\n\n' + table(l.headers, l.rows, l.align).text + '\n')
  const a = samplesRows(result)
  process.stdout.write('\nall samples:\n\n' + table(a.headers, a.rows, a.align).text + '\n')
  if (warnings.length) process.stdout.write(`\n${warnings.length} warning(s):\n${warnings.map((e) => `  - ${e}`).join('\n')}\n`)
  if (errors.length) process.stdout.write(`\n${errors.length} error(s):\n${errors.map((e) => `  - ${e}`).join('\n')}\n`)

  const lastJson = path.join(__dirname, 'last-replication.json')
  fs.writeFileSync(lastJson, formatResult(result))
  const fullRun = !opts.quick && !opts.only && !opts.customSizes && opts.columns.length === REPL_COLUMNS.length
  const write = opts.writeDoc ?? (fullRun && errors.length === 0)
  if (write) {
    const jsonPath = opts.jsonPath ?? replicationJsonPath(repo)
    fs.mkdirSync(path.dirname(jsonPath), { recursive: true })
    fs.writeFileSync(jsonPath, formatResult(result))
    const doc = fs.existsSync(opts.docPath) ? fs.readFileSync(opts.docPath, 'utf8') : '# Performance\n'
    fs.mkdirSync(path.dirname(opts.docPath), { recursive: true })
    fs.writeFileSync(opts.docPath, spliceSection(doc, renderReplicationSection(result, { from: 'replication' })))
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), jsonPath) || jsonPath} and the "## Replication" section of ${path.relative(process.cwd(), opts.docPath) || opts.docPath}\n`)
  } else {
    process.stdout.write(`\nneither the JSON nor the doc written (${opts.writeDoc === false ? '--no-doc' : !fullRun ? 'partial or --quick run; --write-doc to force' : 'errors; --write-doc to force'}); samples in ${path.relative(process.cwd(), lastJson)}\n`)
  }
  return errors.length ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    await runCleanups((s) => process.stderr.write(`[bench:replication] ${s}\n`))
    process.stderr.write(`bench:replication: ${(e as Error).message ?? String(e)}\n`)
    process.exit(2)
  },
)
