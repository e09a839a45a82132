/**
 * Full synchronization and synchronization by difference against rsync:
 * `node dist/bench/sync.js [--files N] [--big-mib M] [--reps R] [--only full|existing]`.
 *
 * One fresh journaled ext4 image (bench/image.ts). A tree of N files of 64 KiB in 100 directories
 * and four files of M MiB. Measured, each repetition, page cache dropped before each:
 *   full   rsync -a SRC/ DST/ (local: rsync's copy without a network, its best case) and
 *          rsync -a SRC/ rsync://127.0.0.1/... (an rsync daemon on loopback TCP: the issue's
 *          anchor, "over loopback", with no ssh cipher in the way), against a Secondary on an
 *          empty directory, then a Primary over SRC replicating to it on loopback: from the
 *          Primary's start to its RLINK reporting the Secondary consistent. `--only full`: these
 *          rows alone, printed, no document rewritten (to iterate on the full synchronization)
 *   verify after the full synchronization, the identical trees compared: rsync -a -n --checksum
 *          (a dry run reading both trees) against `replicafs verify` with replication running
 *   DCM    then, the RLINK paused, 1% of the small files rewritten through the Primary's mount
 *          (new bytes, new mtime) and the 4 MiB SRL overflowed: timed from resume to the Secondary
 *          consistent again (resynchronized from the change map); the rsync copies brought up to
 *          date with rsync -a --checksum (every file's bytes compared, locally and over the
 *          loopback daemon) and rsync -a (size and mtime)
 *   1%     another 1% rewritten in SRC behind replicafs's back, rsync -a --checksum (both ways), and a new
 *          Primary over SRC with a Secondary started --sync-existing over its old copy (every
 *          chunk compared: it knows nothing of its copy)
 * Reports seconds, MiB/s of the tree and CPU seconds (user + system, from /proc/stat's
 * whole-machine counters: the machine runs nothing else), in all and per GiB of the tree. SYNC_BENCH_TRACE=1
 * logs each synchronization's progress every half second. Not part of `npm run bench`; the issue's
 * targets: full synchronization at least as fast as rsync, resync of 1% changed in at most half
 * rsync's time. Must run as root; needs rsync. SYNC_BENCH_NODE_ARGS: node flags for both daemons
 * (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to see where their time goes).
 */
import * as fs from 'fs'
import * as net from 'net'
import * as path from 'path'
import { spawn } from 'child_process'
import { createImage } from './image'
import { startDaemon } from './daemon'
import { runOk } from './proc'
import { request } from '../src/control'
import { sys } from '../src/native'
import { isInternalXattr } from '../src/format/data-cursor'
import { spliceNamed } from './replication-doc'
import { SYNC_HEADING } from './sync-doc'

const MiB = 1024 * 1024

function arg (name: string, dflt: number): number {
  const i = process.argv.indexOf(name)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

function cpuTicks (): number {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number)
  return f[0] + f[1] + f[2] + f[5] + f[6] // user nice system irq softirq
}

async function dropCaches (dir: string): Promise<void> {
  await runOk(['sync', '-f', dir])
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
}

function makeTree (root: string, files: number, bigMiB: number): number {
  let bytes = 0
  const buf = Buffer.alloc(64 * 1024)
  for (let d = 0; d < 100; d++) fs.mkdirSync(path.join(root, `d${d}`), { recursive: true })
  for (let i = 0; i < files; i++) {
    buf.writeUInt32LE(i, 0)
    for (let o = 4; o < buf.length; o += 4096) buf.writeUInt32LE(i * 7919 + o, o)
    fs.writeFileSync(path.join(root, `d${i % 100}`, `f${i}`), buf)
    bytes += buf.length
  }
  const big = Buffer.alloc(MiB)
  for (let b = 0; b < 4; b++) {
    const fd = fs.openSync(path.join(root, `big${b}`), 'w')
    for (let m = 0; m < bigMiB; m++) { big.writeUInt32LE(b * 100000 + m, 0); big.fill(m & 0xff, 4); fs.writeSync(fd, big) }
    fs.closeSync(fd)
    bytes += bigMiB * MiB
  }
  return bytes
}

/** Rewrites every 100th small file with other bytes (a new mtime): 1% of the files. */
function changeOnePercent (root: string, files: number, round: number): number {
  const buf = Buffer.alloc(64 * 1024, 0x5a)
  let n = 0
  for (let i = 0; i < files; i += 100) {
    buf.writeUInt32LE(i, 0)
    buf.writeUInt32LE(round, 4)
    fs.writeFileSync(path.join(root, `d${i % 100}`, `f${i}`), buf)
    n++
  }
  return n
}

/** replicafs's own extended attributes off a directory's root (the data cursor of an SRL that is gone). */
function forgetSrl (dir: string): void {
  for (const n of sys.llistxattr(dir)) if (isInternalXattr(n)) sys.lremovexattr(dir, n)
}

/**
 * An rsync daemon on loopback, serving `root` as module `tree`: rsync's own protocol over TCP,
 * unencrypted and unauthenticated (no ssh), the way the anchor runs it ("rsync over
 * loopback") and the way replicafs's RLINK runs here (plain TCP).
 */
async function rsyncDaemon (root: string): Promise<{ url: (rel: string) => string, stop: () => Promise<void> }> {
  const conf = path.join(root, 'rsyncd.conf')
  fs.writeFileSync(conf, `uid = root\ngid = root\nuse chroot = no\npid file = ${path.join(root, 'rsyncd.pid')}\n[tree]\npath = ${root}\nread only = false\n`)
  const port = await new Promise<number>((resolve, reject) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => { const a = srv.address() as net.AddressInfo; srv.close(() => resolve(a.port)) }).on('error', reject)
  })
  const child = spawn('rsync', ['--daemon', '--no-detach', `--config=${conf}`, `--port=${port}`, '--address=127.0.0.1'], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 10_000
  for (;;) {
    const up = await new Promise<boolean>((resolve) => { const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true) }).on('error', () => resolve(false)) })
    if (up) break
    if (Date.now() > deadline || child.exitCode !== null) { child.kill(); throw new Error(`rsync --daemon did not listen on 127.0.0.1:${port}`) }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return { url: (rel) => `rsync://127.0.0.1:${port}/tree/${rel}`, stop: async () => { child.kill(); await exited } }
}

/** Seconds and machine CPU seconds of `fn`, the page cache dropped first. */
async function timed (root: string, fn: () => Promise<void>): Promise<{ s: number, cpu: number }> {
  await dropCaches(root)
  const c0 = cpuTicks()
  const t0 = process.hrtime.bigint()
  await fn()
  await runOk(['sync', '-f', root])
  return { s: Number(process.hrtime.bigint() - t0) / 1e9, cpu: (cpuTicks() - c0) / 100 }
}

/** A Secondary, then a Primary replicating to it, timed from the Primary's start to a consistent RLINK. */
async function replicate (repo: string, root: string, pd: { data: string, mount: string, state: string }, sd: { data: string, mount: string, state: string },
  secret: string, secArgs: string[], log: (s: string) => void, whileUp?: () => Promise<void>, priArgs: string[] = []): Promise<{ s: number, cpu: number, start: number }> {
  const nodeArgs = (process.env.SYNC_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  const sec = await startDaemon(repo, 'secondary', sd, { log, nodeArgs, extraArgs: ['--listen', '127.0.0.1:0', '--secret-file', secret, ...secArgs] })
  let pri: Awaited<ReturnType<typeof startDaemon>> | null = null
  try {
    const listen = ((await request(sd.state, { cmd: 'status' })) as { listen: string }).listen
    // SYNC_BENCH_TRACE=1: the synchronization's progress every half second, to see where its time goes.
    const trace = process.env.SYNC_BENCH_TRACE !== undefined
    let traced = 0
    const t0 = Date.now()
    const t = await timed(root, async () => {
      pri = await startDaemon(repo, 'primary', pd, { log, nodeArgs, extraArgs: ['--secondary', listen, '--secret-file', secret, ...priArgs] })
      for (;;) {
        const st = await request(pd.state, { cmd: 'status' }) as { rlinks: Array<{ consistent: boolean, state: string, sync: { walked: number, entries: number, bytes: number, differing: number, phase: string } | null }> }
        const y = st.rlinks[0].sync
        if (trace && y != null && Date.now() - traced >= 500) {
          traced = Date.now()
          log(`${((traced - t0) / 1000).toFixed(2)} s: ${y.phase}, walked ${y.walked}, entries sent ${y.entries}, differing ${y.differing}, bytes ${y.bytes}`)
        }
        if (st.rlinks[0].state === 'connected' && st.rlinks[0].consistent) break
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })
    await whileUp?.()
    return { ...t, start: (pri as unknown as { startSeconds: number }).startSeconds }
  } finally {
    await (pri as Awaited<ReturnType<typeof startDaemon>> | null)?.stop()
    await sec.stop()
  }
}

async function main (): Promise<void> {
  const files = arg('--files', 4000)
  const bigMiB = arg('--big-mib', 128)
  const reps = arg('--reps', 3)
  // --only full: the full synchronization rows alone (rsync -a and replicafs); --only existing:
  // those and the last step's (1% changed, --sync-existing), without verify and DCM: to iterate.
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null
  if (only !== null && only !== 'full' && only !== 'existing') throw new Error(`--only ${only}: expected full or existing`)
  const onlyFull = only === 'full'
  const repo = path.resolve(__dirname, '..', '..')
  const log = (s: string): void => { process.stderr.write(`[sync-bench] ${s}\n`) }
  const img = await createImage(8 * 1024 * MiB, log)
  let rsyncd: Awaited<ReturnType<typeof rsyncDaemon>> | null = null
  try {
    const src = path.join(img.mountpoint, 'src')
    fs.mkdirSync(src)
    const bytes = makeTree(src, files, bigMiB)
    log(`tree: ${files} files of 64 KiB and 4 of ${bigMiB} MiB: ${(bytes / MiB).toFixed(0)} MiB`)
    const rows: string[] = []
    const secret = path.join(img.mountpoint, 'secret')
    fs.writeFileSync(secret, 'a sync benchmark secret', { mode: 0o600 })
    const row = (r: number, what: string, t: { s: number, cpu: number }): void => {
      rows.push(`| ${r} | ${what} | ${t.s.toFixed(2)} | ${(bytes / MiB / t.s).toFixed(0)} | ${t.cpu.toFixed(2)} | ${(t.cpu / (bytes / (1024 * MiB))).toFixed(2)} |`)
      log(rows[rows.length - 1])
    }
    const daemon = rsyncd = await rsyncDaemon(img.mountpoint)
    for (let r = 1; r <= reps; r++) {
      const work = path.join(img.mountpoint, `rep-${r}`)
      fs.mkdirSync(work)
      const dirs = (name: string): { data: string, mount: string, state: string } =>
        ({ data: path.join(work, name, 'data'), mount: path.join(work, name, 'mnt'), state: path.join(work, name, 'state') })
      // Full: rsync, then replicafs onto an empty Secondary (a Primary with a 4 MiB SRL, for the DCM step).
      const copyA = path.join(work, 'rsync-a')
      row(r, 'full: rsync -a', await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', src + '/', copyA + '/'], { timeoutMs: 3_600_000 }) }))
      // The same over loopback TCP (an rsync daemon), into its own copy kept up to date below.
      const copyC = `rep-${r}/rsync-c/`
      row(r, 'full: rsync -a over loopback (rsync daemon, TCP)', await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', src + '/', daemon.url(copyC)], { timeoutMs: 3_600_000 }) }))
      const copyB = path.join(work, 'rsync-b')
      await runOk(['cp', '-a', copyA, copyB], { timeoutMs: 3_600_000 })
      const sd = dirs('sec')
      const pd = { ...dirs('pri'), data: src }
      forgetSrl(src)
      let verify: { s: number, cpu: number } | null = null
      let dcm: { s: number, cpu: number } | null = null
      let changed = 0
      const cmd = async (...a: string[]): Promise<void> => { await runOk([process.execPath, path.join(repo, 'bin', 'replicafs'), ...a], { timeoutMs: 3_600_000 }) }
      const rlink = async (): Promise<{ consistent: boolean, state: string, dcm: unknown }> => ((await request(pd.state, { cmd: 'status' })) as { rlinks: Array<{ consistent: boolean, state: string, dcm: unknown }> }).rlinks[0]
      const full = await replicate(repo, img.mountpoint, pd, sd, secret, [], log, only !== null ? undefined : async () => {
        verify = await timed(img.mountpoint, async () => { await cmd('verify', '--state', pd.state) })
        // The Secondary away (paused) while 1% of the files change through the mount and the SRL
        // overflows (an 8 MiB file written and removed): the RLINK goes to its change map. Timed:
        // from resume to the Secondary consistent again, resynchronized from the map.
        await cmd('pause', '--state', pd.state)
        changed = changeOnePercent(pd.mount, files, r)
        fs.writeFileSync(path.join(pd.mount, 'filler'), Buffer.alloc(8 * MiB, 1))
        fs.rmSync(path.join(pd.mount, 'filler'))
        while ((await rlink()).dcm === null) await new Promise((resolve) => setTimeout(resolve, 20))
        dcm = await timed(img.mountpoint, async () => {
          await cmd('resume', '--state', pd.state)
          for (;;) {
            const l = await rlink()
            if (l.state === 'connected' && l.consistent && l.dcm === null) break
            await new Promise((resolve) => setTimeout(resolve, 20))
          }
        })
      }, ['--srl-size', '4M'])
      row(r, `full: replicafs (of which the Primary's start ${full.start.toFixed(2)} s)`, full)
      if (onlyFull) { fs.rmSync(work, { recursive: true }); continue }
      if (only === null) {
        // Verify of identical trees: rsync's dry run comparing every file's checksum, and replicafs verify (online, both snapshots).
        row(r, 'verify: rsync -a -n --checksum (dry run, identical trees)', await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', '-n', '--checksum', src + '/', copyB + '/'], { timeoutMs: 3_600_000 }) }))
        row(r, 'verify: replicafs verify (identical trees, replication running)', verify!)
        // 1% of the files changed (through the Primary's mount, above): each copy brought up to date.
        row(r, `${changed} files changed: rsync -a --checksum`, await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', '--checksum', src + '/', copyA + '/'], { timeoutMs: 3_600_000 }) }))
        row(r, `${changed} files changed: rsync -a --checksum over loopback (rsync daemon, TCP)`, await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', '--checksum', src + '/', daemon.url(copyC)], { timeoutMs: 3_600_000 }) }))
        row(r, `${changed} files changed: rsync -a (size and mtime)`, await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', src + '/', copyB + '/'], { timeoutMs: 3_600_000 }) }))
        row(r, `${changed} files changed while the Secondary was away and the SRL overflowed: replicafs resync from the change map (DCM)`, dcm!)
      }
      // Another 1%, behind replicafs's back, onto a Secondary that knows nothing of its copy.
      changed = changeOnePercent(src, files, r + 1000)
      row(r, `${changed} more files changed: rsync -a --checksum`, await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', '--checksum', src + '/', copyA + '/'], { timeoutMs: 3_600_000 }) }))
      row(r, `${changed} more files changed: rsync -a --checksum over loopback (rsync daemon, TCP)`, await timed(img.mountpoint, async () => { await runOk(['rsync', '-a', '--checksum', src + '/', daemon.url(copyC)], { timeoutMs: 3_600_000 }) }))
      forgetSrl(src)
      forgetSrl(sd.data)
      const diff = await replicate(repo, img.mountpoint, { ...dirs('pri2'), data: src }, { ...sd, state: path.join(work, 'sec', 'state2') }, secret, ['--sync-existing'], log)
      row(r, `${changed} more files changed: replicafs --sync-existing, every chunk compared (of which the Primary's start ${diff.start.toFixed(2)} s)`, diff)
      fs.rmSync(work, { recursive: true })
    }
    const table = `tree: ${files} files of 64 KiB + 4 of ${bigMiB} MiB (${(bytes / MiB).toFixed(0)} MiB), page cache dropped before each\n\n| rep | what | seconds | MiB/s of the tree | CPU s (machine) | CPU s per GiB of the tree |\n|---|---|---|---|---|---|\n${rows.join('\n')}\n`
    process.stdout.write(table)
    if (only !== null) return // a partial table: docs/PERFORMANCE.md keeps the whole one
    // The latest table goes into docs/PERFORMANCE.md (and bench/results/sync.md, which a full
    // `npm run bench` splices back when it rewrites that file).
    const section = `${SYNC_HEADING}\n\nGenerated by \`node dist/bench/sync.js ${process.argv.slice(2).join(' ')}\` (bench/sync.ts) on ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC, ` +
      `run alone on this machine. Targets (issue 12): a full synchronization at least as fast as \`rsync -a\`; a resynchronization of a tree with 1% of its files changed ` +
      `in at most half the time of \`rsync -a --checksum\`. What each row measures is in the header of bench/sync.ts; docs/ARCHITECTURE.md ("Full synchronization", ` +
      `"SRL overflow protection", "Online verify") discusses the figures.\n\n${table}\nReproduce (as root, rsync installed): \`npm ci && npm run build && node dist/bench/sync.js --reps 2\`.\n`
    fs.mkdirSync(path.join(repo, 'bench', 'results'), { recursive: true })
    fs.writeFileSync(path.join(repo, 'bench', 'results', 'sync.md'), section)
    const docPath = path.join(repo, 'docs', 'PERFORMANCE.md')
    fs.writeFileSync(docPath, spliceNamed(fs.readFileSync(docPath, 'utf8'), SYNC_HEADING, section))
  } finally {
    await rsyncd?.stop()
    await img.destroy()
  }
}

main().catch((err: Error) => { process.stderr.write(`sync bench: ${err.stack ?? err.message}\n`); process.exit(1) })
