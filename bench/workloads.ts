/**
 * The workloads. Each runs once against one target directory (the raw
 * data directory, or a FUSE mount) and returns one or more samples. Every
 * sample's `value` is a throughput: higher is better, so a ratio > 1 means
 * "faster than the reference column".
 *
 * The caller gives each run a fresh, empty target directory and syncs the
 * image filesystem before and after. Right before each timed phase a workload
 * calls `ctx.beforeTiming(mib)`: syncfs of the image (so dirty data from the
 * untimed preparation is not flushed on the clock), then a page-cache
 * pre-warm (see run.ts: write `mib` MiB to the image with dd conv=fsync,
 * delete it, syncfs), so the phase runs on memory the VM has not handed back
 * to the host.
 */
import * as fs from 'fs'
import * as path from 'path'
import { runOk } from './proc'
import type { DeviceStats } from './image'

export interface Sizes {
  seqMiB: number
  randFileMiB: number
  randOps: number
  files: number
  filesPerDir: number
  fileBytes: number
}

export interface Tarball {
  file: string
  bytes: number
  /** Entries listed by `tar -tf` (files, directories, symlinks). */
  entries: number
  sources: string[]
}

export interface Ctx {
  repo: string
  target: string
  sizes: Sizes
  tarball: Tarball
  /** syncfs of the image filesystem (outside timing); returns seconds. */
  settle(): Promise<number>
  /** settle + page-cache pre-warm of `mib` MiB; call immediately before the clock starts. */
  beforeTiming(mib: number): Promise<void>
  /** Counters of the block device under the image (all columns end up there). */
  deviceStats(): DeviceStats
}

export interface Sample {
  metric: string
  /** Throughput, higher is better. */
  value: number
  /** Seconds on the clock. */
  seconds: number
  /** Seconds the syncfs right after the timed part took (not in `value`), if measured. */
  syncSeconds?: number
  /** Amount of work (bytes, ops, files) so value-including-sync can be recomputed. */
  amount: number
  /** Content fingerprint for cross-column checks. */
  digest?: string
  note?: string
  /** Device cache flushes per operation during the timed phase (randsync): shows whether a sync reached the disk. */
  flushesPerOp?: number
  /** Set when the workload can tell that data it synced did not reach the device (the number is then not comparable). */
  notDurable?: string
}

export interface Metric {
  name: string
  title: string
  unit: string
  /** Target for primary/bare from the issue; null: reported without a target. */
  target: number | null
  /** Whether `syncSeconds` is measured (then an "including sync" figure is reported too). */
  hasSync: boolean
}

export interface Workload {
  name: string
  title(s: Sizes): string
  metrics: Metric[]
  timeoutMs: number
  run(ctx: Ctx): Promise<Sample[]>
}

const MiB = 1024 * 1024
/** Pre-warm for workloads that dirty little page cache in their timed phase. */
const PREWARM_SMALL_MIB = 256

function distBench(repo: string, file: string): string {
  return path.join(repo, 'dist', 'bench', file)
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

/**
 * 4 KiB random writes into a preallocated file, each followed by `sync`. The issue's target is
 * on fsync (which also writes the inode's new mtime on ext4); fdatasync (data only) is reported
 * beside it without a target.
 */
function randWorkload(name: string, sync: 'fsync' | 'fdatasync', target: number | null): Workload {
  return {
    name,
    title: (s) => `4 KiB random writes, each followed by ${sync}: ${s.randOps} ops in a ${s.randFileMiB} MiB file`,
    metrics: [{ name, title: `4 KiB random write + ${sync}`, unit: 'ops/s', target, hasSync: false }],
    timeoutMs: 600_000,
    async run(ctx) {
      const file = path.join(ctx.target, 'rand.bin')
      const bytes = ctx.sizes.randFileMiB * MiB
      const writer = distBench(ctx.repo, 'fsync-writer.js')
      await runOk([process.execPath, writer, 'prep', file, String(bytes)], { timeoutMs: this.timeoutMs })
      await ctx.beforeTiming(PREWARM_SMALL_MIB)
      const d0 = ctx.deviceStats()
      const r = await runOk([process.execPath, writer, 'run', file, String(bytes), String(ctx.sizes.randOps), sync, '1'], {
        timeoutMs: this.timeoutMs,
      })
      const d1 = ctx.deviceStats()
      const j = parseJson<{ ops: number; seconds: number; opsPerSec: number; p50Ms: number; p99Ms: number; maxMs: number; sha256: string }>(
        r.stdout, 'fsync-writer',
      )
      // Includes the (untimed) sha256 read-back, which writes nothing.
      const flushesPerOp = (d1.flushes - d0.flushes) / j.ops
      const kibPerOp = (d1.writeBytes - d0.writeBytes) / 1024 / j.ops
      return [{
        metric: name, value: j.opsPerSec, seconds: j.seconds, amount: j.ops, digest: j.sha256, flushesPerOp,
        note: `p50 ${j.p50Ms.toFixed(2)} ms, p99 ${j.p99Ms.toFixed(2)} ms, max ${j.maxMs.toFixed(1)} ms; ` +
          `device: ${flushesPerOp.toFixed(2)} flushes and ${kibPerOp.toFixed(1)} KiB written per op`,
      }]
    },
  }
}

export const WORKLOADS: Workload[] = [
  {
    name: 'seq',
    title: (s) => `Sequential 1 MiB writes: ${s.seqMiB >= 1024 ? `${s.seqMiB / 1024} GiB` : `${s.seqMiB} MiB`} file, dd conv=fsync`,
    metrics: [{ name: 'seq', title: 'Sequential write (1 MiB, incl. final fsync)', unit: 'MiB/s', target: 0.85, hasSync: false }],
    timeoutMs: 600_000,
    async run(ctx) {
      const file = path.join(ctx.target, 'seq.bin')
      // The timed phase dirties seqMiB of page cache (twice over for the Primary: data file and SRL).
      await ctx.beforeTiming(Math.round(ctx.sizes.seqMiB * 1.5))
      const d0 = ctx.deviceStats()
      const r = await runOk(['dd', 'if=/dev/zero', `of=${file}`, 'bs=1M', `count=${ctx.sizes.seqMiB}`, 'conv=fsync', 'status=none'], {
        timeoutMs: this.timeoutMs,
      })
      const d1 = ctx.deviceStats()
      const size = fs.statSync(file).size
      if (size !== ctx.sizes.seqMiB * MiB) throw new Error(`dd wrote ${size} bytes, expected ${ctx.sizes.seqMiB * MiB}`)
      // conv=fsync returned, so the file's data must have reached the device while dd ran.
      const writtenMiB = (d1.writeBytes - d0.writeBytes) / MiB
      const sample: Sample = {
        metric: 'seq', value: ctx.sizes.seqMiB / r.seconds, seconds: r.seconds, amount: ctx.sizes.seqMiB,
        note: `device: ${writtenMiB.toFixed(0)} MiB written, ${d1.flushes - d0.flushes} flushes`,
      }
      if (writtenMiB < 0.9 * ctx.sizes.seqMiB) {
        sample.notDurable = `only ${writtenMiB.toFixed(0)} of ${ctx.sizes.seqMiB} MiB reached the device before dd's final fsync returned`
      }
      return [sample]
    },
  },
  randWorkload('randsync', 'fsync', 1.0),
  randWorkload('randdatasync', 'fdatasync', null),
  {
    name: 'smallfiles',
    title: (s) => `Create, then delete, ${s.files.toLocaleString('en-US')} files of ${s.fileBytes} B (${s.filesPerDir} per directory)`,
    metrics: [
      { name: 'create', title: 'Create small files', unit: 'files/s', target: 0.9, hasSync: true },
      { name: 'delete', title: 'Delete small files', unit: 'files/s', target: 0.9, hasSync: true },
    ],
    timeoutMs: 600_000,
    async run(ctx) {
      const tool = distBench(ctx.repo, 'small-files.js')
      const root = path.join(ctx.target, 'tree')
      fs.mkdirSync(root)
      const { files, filesPerDir, fileBytes } = ctx.sizes
      const out: Sample[] = []
      for (const phase of ['create', 'delete'] as const) {
        await ctx.beforeTiming(PREWARM_SMALL_MIB)
        const argv = [process.execPath, tool, phase, root, String(files), String(filesPerDir)]
        if (phase === 'create') argv.push(String(fileBytes))
        const r = await runOk(argv, { timeoutMs: this.timeoutMs })
        const j = parseJson<{ seconds: number; filesPerSec: number }>(r.stdout, 'small-files')
        const syncSeconds = await ctx.settle()
        if (phase === 'create') {
          const n = countEntries(root)
          const expect = files + Math.ceil(files / filesPerDir)
          if (n !== expect) throw new Error(`after create: ${n} entries under ${root}, expected ${expect}`)
        } else if (fs.readdirSync(root).length !== 0) {
          throw new Error(`after delete: ${root} is not empty`)
        }
        out.push({ metric: phase, value: j.filesPerSec, seconds: j.seconds, syncSeconds, amount: files })
      }
      return out
    },
  },
  {
    name: 'untar',
    title: () => 'Untar a source tree (`tar -xf`)',
    metrics: [{ name: 'untar', title: 'Untar source tree', unit: 'MiB/s', target: 0.9, hasSync: true }],
    timeoutMs: 600_000,
    async run(ctx) {
      const dest = path.join(ctx.target, 'src')
      fs.mkdirSync(dest)
      await ctx.beforeTiming(Math.max(PREWARM_SMALL_MIB, Math.round((2 * ctx.tarball.bytes) / MiB)))
      const r = await runOk(['tar', '-xf', ctx.tarball.file, '-C', dest], { timeoutMs: this.timeoutMs })
      const syncSeconds = await ctx.settle()
      const n = countEntries(dest)
      if (n !== ctx.tarball.entries) throw new Error(`tar extracted ${n} entries, the tarball has ${ctx.tarball.entries}`)
      const mib = ctx.tarball.bytes / MiB
      return [{ metric: 'untar', value: mib / r.seconds, seconds: r.seconds, syncSeconds, amount: mib }]
    },
  },
]

/**
 * The cost of issue 18's hard-link mitigation: the same files stat'ed with one link (attributes
 * cached by the kernel for 1 s through the mount) and with two (never cached, so no name shows
 * another's stale mode). Reported without a target: raw and bare show what it costs.
 */
WORKLOADS.push({
  name: 'linkstat',
  title: (s) => `lstat ${s.files.toLocaleString('en-US')} files 3 times, with one link and then with two`,
  metrics: [
    { name: 'stat1', title: 'lstat, files with one link', unit: 'stats/s', target: null, hasSync: false },
    { name: 'stat2', title: 'lstat, files with two links', unit: 'stats/s', target: null, hasSync: false },
  ],
  timeoutMs: 600_000,
  async run(ctx) {
    const tool = distBench(ctx.repo, 'stat-walk.js')
    const root = path.join(ctx.target, 'links')
    fs.mkdirSync(root)
    const { files, filesPerDir } = ctx.sizes
    const common = [root, String(files), String(filesPerDir)]
    await runOk([process.execPath, tool, 'prep', ...common], { timeoutMs: this.timeoutMs })
    const out: Sample[] = []
    for (const nlink of [1, 2]) {
      if (nlink === 2) await runOk([process.execPath, tool, 'link', ...common], { timeoutMs: this.timeoutMs })
      await ctx.beforeTiming(PREWARM_SMALL_MIB)
      const r = await runOk([process.execPath, tool, 'stat', ...common, '3', String(nlink)], { timeoutMs: this.timeoutMs })
      const j = parseJson<{ stats: number; seconds: number; statsPerSec: number }>(r.stdout, 'stat-walk')
      out.push({ metric: `stat${nlink}`, value: j.statsPerSec, seconds: j.seconds, amount: j.stats })
    }
    return out
  },
})

/** Build the untar workload's tarball once per run, on the image (outside any timing). */
export async function buildTarball(repo: string, outDir: string, quick: boolean): Promise<Tarball> {
  fs.mkdirSync(outDir, { recursive: true })
  const file = path.join(outDir, 'source-tree.tar')
  const argv = ['tar', '-cf', file]
  const sources: string[] = []
  if (quick) {
    argv.push('-C', repo, 'node_modules/typescript', 'node_modules/classic-level')
    sources.push(path.join(repo, 'node_modules/typescript'), path.join(repo, 'node_modules/classic-level'))
  } else {
    argv.push('-C', repo, 'node_modules')
    sources.push(path.join(repo, 'node_modules'))
    // npm's own tree adds a couple of thousand small files, closer to a real source checkout.
    const npmDir = path.resolve(fs.realpathSync(process.execPath), '..', '..', 'lib', 'node_modules', 'npm')
    if (fs.existsSync(path.join(npmDir, 'package.json'))) {
      argv.push('-C', path.dirname(npmDir), 'npm')
      sources.push(npmDir)
    }
  }
  await runOk(argv, { timeoutMs: 300_000 })
  const list = await runOk(['tar', '-tf', file], { timeoutMs: 300_000, keepChars: 1 << 30 })
  // `tar -tf` lists directories too; the top-level member paths (node_modules/, npm/) are extracted as entries as well.
  const names = new Set(list.stdout.split('\n').filter(Boolean).map((l) => l.replace(/\/$/, '')))
  // Parent directories that tar creates implicitly (e.g. "node_modules" when only node_modules/typescript is archived).
  for (const n of [...names]) {
    const parts = n.split('/')
    for (let i = 1; i < parts.length; i++) names.add(parts.slice(0, i).join('/'))
  }
  return { file, bytes: fs.statSync(file).size, entries: names.size, sources }
}
