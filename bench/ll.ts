/**
 * The libfuse 3 low-level transport (src/native/ll.c, issue 14) against the raw directory and the
 * fuse-native passthrough, on what it serves so far (a directory, read-only):
 * `node dist/bench/ll.js [--reps N] [--big-mib M]` (as root; run alone).
 *
 * One fresh journaled ext4 image (bench/image.ts) holding 10 directories of 1,100 files of 1 KiB
 * and one file of M MiB (default 1024). Columns, each repetition in a rotated order:
 *   raw   the directory itself
 *   bare  `replicafs passthrough --fuse compat` (fuse-native, libfuse 2's path-based API, one JavaScript
 *         callback per request), as the main bench's bare column
 *   ll    replicafs_ll mounted read-only over it (every request answered in C, by inode,
 *         READDIRPLUS, splice reads, keep_cache, 1 s entry and attribute timeouts)
 *   ll+pt the same with FUSE passthrough (the kernel reads open files from their backing files)
 *   sec compat  a Secondary daemon's mount over the directory, `--fuse compat` (fuse-native:
 *         direct_io, zero timeouts: what a Secondary mount was before issue 14)
 *   sec ll  a Secondary daemon's mount, `--fuse ll` (the default: volatile, so no attributes kept,
 *         looked-up names kept until the apply changes names, nothing cached across opens; FUSE
 *         passthrough for opens)
 *   pri compat  a Primary daemon's mount over the directory (`replicafs primary --fuse compat`)
 *   pri ll  the same with `--fuse ll` (the journaled low-level mount: reads in C, 1 s entry and
 *         attribute timeouts, page cache kept across read-only opens, no passthrough yet)
 * (The Secondaries are started with `--sync-existing` over the directory and no Primary, so they
 * serve it as it is; the Primaries take it as their baseline.)
 * Workloads: `ls -lR` (entries per second), `cat` of the big file with the page cache dropped
 * (MiB/s), and again without dropping it (a re-read: the mount's page cache). Medians; ratios
 * against raw. Writes bench/results/ll.md and its section of docs/PERFORMANCE.md.
 */
import * as fs from 'fs'
import * as path from 'path'
import { execFileSync } from 'child_process'
import { createImage } from './image'
import { startDaemon } from './daemon'
import { loadLl, LL_PASSTHROUGH, type LlSession } from '../src/native'
import { spliceNamed } from './replication-doc'
import { LL_HEADING } from './sync-doc'

const MiB = 1024 * 1024

function arg (name: string, dflt: number): number {
  const i = process.argv.indexOf(name)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

function dropCaches (dir: string): void {
  execFileSync('sync', ['-f', dir])
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
}

function seconds (fn: () => void): number {
  const t = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - t) / 1e9
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }

async function main (): Promise<void> {
  const reps = arg('--reps', 5)
  const bigMiB = arg('--big-mib', 1024)
  const repo = path.resolve(__dirname, '..', '..')
  const log = (s: string): void => { process.stderr.write(`[ll-bench] ${s}\n`) }
  const img = await createImage(8 * 1024 * MiB, log)
  const ll = loadLl()
  const columns = ['raw', 'bare', 'll', 'll+pt', 'sec compat', 'sec ll', 'pri compat', 'pri ll'] as const
  const secret = path.join(img.mountpoint, 'secret')
  fs.writeFileSync(secret, 'a bench secret, never sent\n', { mode: 0o600 })
  const results: Record<string, Record<string, number[]>> = {}
  const add = (w: string, c: string, v: number): void => { ((results[w] ??= {})[c] ??= []).push(v) }
  try {
    const data = path.join(img.mountpoint, 'data')
    fs.mkdirSync(data)
    const small = Buffer.alloc(1024, 7)
    for (let d = 0; d < 10; d++) {
      fs.mkdirSync(path.join(data, `d${d}`))
      for (let f = 0; f < 1100; f++) fs.writeFileSync(path.join(data, `d${d}`, `f${f}`), small)
    }
    const fd = fs.openSync(path.join(data, 'big'), 'w')
    const chunk = Buffer.alloc(MiB)
    for (let m = 0; m < bigMiB; m++) { chunk.fill(m & 0xff); fs.writeSync(fd, chunk) }
    fs.closeSync(fd)
    const entries = 10 * 1100 + 10 + 1
    for (let r = 0; r < reps; r++) {
      const order = [...columns.slice(r % columns.length), ...columns.slice(0, r % columns.length)]
      for (const col of order) {
        const mnt = path.join(img.mountpoint, `mnt-${col.replace(/[^a-z]/g, "-")}-${r}`)
        let dir = data
        let session: LlSession | null = null
        let daemon: Awaited<ReturnType<typeof startDaemon>> | null = null
        if (col === 'bare') {
          fs.mkdirSync(mnt)
          daemon = await startDaemon(repo, 'passthrough', { data, mount: mnt, state: path.join(img.mountpoint, `state-${r}`) }, { log, extraArgs: ['--fuse', 'compat'] })
          dir = mnt
        } else if (col === 'sec compat' || col === 'sec ll') {
          fs.mkdirSync(mnt)
          const extraArgs = ['--listen', '127.0.0.1:0', '--secret-file', secret, '--sync-existing', '--fuse', col === 'sec ll' ? 'll' : 'compat']
          daemon = await startDaemon(repo, 'secondary', { data, mount: mnt, state: path.join(img.mountpoint, `state-${col.replace(' ', '-')}-${r}`) }, { log, srlSizeBytes: 16 * MiB, extraArgs })
          dir = mnt
        } else if (col === 'pri compat' || col === 'pri ll') {
          fs.mkdirSync(mnt)
          daemon = await startDaemon(repo, 'primary', { data, mount: mnt, state: path.join(img.mountpoint, `state-${col.replace(' ', '-')}-${r}`) }, { log, srlSizeBytes: 64 * MiB, extraArgs: ['--fuse', col === 'pri ll' ? 'll' : 'compat'] })
          dir = mnt
        } else if (col === 'll' || col === 'll+pt') {
          fs.mkdirSync(mnt)
          session = ll.mount(data, mnt, 'ro,default_permissions,allow_other,fsname=replicafs-ll', 1, col === 'll+pt' ? LL_PASSTHROUGH : 0)
          dir = mnt
        }
        try {
          dropCaches(img.mountpoint)
          add('ls', col, entries / seconds(() => execFileSync('sh', ['-c', `ls -lR ${dir} > /dev/null`])))
          dropCaches(img.mountpoint)
          add('cold', col, bigMiB / seconds(() => execFileSync('sh', ['-c', `cat ${dir}/big > /dev/null`])))
          add('warm', col, bigMiB / seconds(() => execFileSync('sh', ['-c', `cat ${dir}/big > /dev/null`])))
        } finally {
          if (session !== null) ll.unmount(session)
          await daemon?.stop()
        }
        log(`rep ${r + 1} ${col}: ls ${results.ls[col].at(-1)!.toFixed(0)} entries/s, cold ${results.cold[col].at(-1)!.toFixed(0)} MiB/s, re-read ${results.warm[col].at(-1)!.toFixed(0)} MiB/s`)
      }
    }
    const titles: Record<string, string> = {
      ls: `\`ls -lR\` of ${entries.toLocaleString('en-US')} entries, cold, entries/s`,
      cold: `read ${bigMiB} MiB cold (\`cat\`), MiB/s`,
      warm: `read it again (page cache kept), MiB/s`
    }
    const fmt = (n: number): string => n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1)
    const rows = Object.keys(titles).map((w) => {
      const m = Object.fromEntries(columns.map((c) => [c, median(results[w][c])]))
      const cell = (c: typeof columns[number]): string => `${fmt(m[c])} (${(m[c] / m.raw).toFixed(2)}×)`
      return `| ${titles[w]} | ${fmt(m.raw)} | ${cell('bare')} | ${cell('ll')} | ${cell('ll+pt')} | ${cell('sec compat')} | ${cell('sec ll')} | ${cell('pri compat')} | ${cell('pri ll')} |`
    })
    const table = `| workload (median of ${reps}) | raw | bare fuse-native | replicafs_ll (read-only) | replicafs_ll, FUSE passthrough | Secondary mount, --fuse compat | Secondary mount, --fuse ll | Primary mount, --fuse compat | Primary mount, --fuse ll |\n|---|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`
    process.stdout.write(table)
    const doc = `${LL_HEADING}\n\nGenerated by \`node dist/bench/ll.js ${process.argv.slice(2).join(' ')}\` (bench/ll.ts) on ` +
      `${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC, run alone. What each column and row is: the header of bench/ll.ts.\n\n${table}`
    fs.mkdirSync(path.join(repo, 'bench', 'results'), { recursive: true })
    fs.writeFileSync(path.join(repo, 'bench', 'results', 'll.md'), doc)
    // docs/PERFORMANCE.md keeps the latest (a full `npm run bench` splices it back from bench/results/).
    const docPath = path.join(repo, 'docs', 'PERFORMANCE.md')
    fs.writeFileSync(docPath, spliceNamed(fs.readFileSync(docPath, 'utf8'), LL_HEADING, doc))
  } finally {
    await img.destroy()
  }
}

main().catch((err) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
