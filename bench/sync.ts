/**
 * Full synchronization against rsync: `node dist/bench/sync.js [--files N] [--big-mib M] [--reps R]`.
 *
 * One fresh journaled ext4 image (bench/image.ts). A tree of N files of 64 KiB in 100 directories
 * and four files of M MiB. Measured, each repetition, page cache dropped before each:
 *   rsync     `rsync -a SRC/ DST/` (local: rsync's copy without a network, its best case)
 *   replicafs a Secondary on an empty directory, then a Primary over SRC replicating to it on
 *             loopback: from the Primary's start to its RLINK reporting the Secondary consistent
 * Reports MiB/s and CPU seconds (user + system of the processes involved, from /proc/stat's
 * whole-machine counters: the machine runs nothing else). Not part of `npm run bench`; the issue's
 * target is full synchronization at least as fast as rsync's. Must run as root; needs rsync.
 */
import * as fs from 'fs'
import * as path from 'path'
import { createImage } from './image'
import { startDaemon } from './daemon'
import { runOk } from './proc'
import { request } from '../src/control'

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

async function main (): Promise<void> {
  const files = arg('--files', 4000)
  const bigMiB = arg('--big-mib', 128)
  const reps = arg('--reps', 3)
  const repo = path.resolve(__dirname, '..', '..')
  const log = (s: string): void => { process.stderr.write(`[sync-bench] ${s}\n`) }
  const img = await createImage(8 * 1024 * MiB, log)
  try {
    const src = path.join(img.mountpoint, 'src')
    fs.mkdirSync(src)
    const bytes = makeTree(src, files, bigMiB)
    log(`tree: ${files} files of 64 KiB and 4 of ${bigMiB} MiB: ${(bytes / MiB).toFixed(0)} MiB`)
    const rows: string[] = []
    for (let r = 1; r <= reps; r++) {
      // rsync
      const dst = path.join(img.mountpoint, `rsync-${r}`)
      await dropCaches(img.mountpoint)
      let c0 = cpuTicks()
      let t0 = process.hrtime.bigint()
      await runOk(['rsync', '-a', src + '/', dst + '/'], { timeoutMs: 3_600_000 })
      await runOk(['sync', '-f', dst])
      let s = Number(process.hrtime.bigint() - t0) / 1e9
      rows.push(`| ${r} | rsync -a | ${s.toFixed(2)} | ${(bytes / MiB / s).toFixed(0)} | ${((cpuTicks() - c0) / 100).toFixed(2)} |`)
      log(rows[rows.length - 1])
      fs.rmSync(dst, { recursive: true })

      // replicafs
      const sd = { data: path.join(img.mountpoint, `sec-${r}/data`), mount: path.join(img.mountpoint, `sec-${r}/mnt`), state: path.join(img.mountpoint, `sec-${r}/state`) }
      const pd = { data: src, mount: path.join(img.mountpoint, `pri-${r}/mnt`), state: path.join(img.mountpoint, `pri-${r}/state`) }
      fs.mkdirSync(path.join(img.mountpoint, `sec-${r}`), { recursive: true })
      const secret = path.join(img.mountpoint, 'secret')
      fs.writeFileSync(secret, 'a sync benchmark secret', { mode: 0o600 })
      const sec = await startDaemon(repo, 'secondary', sd, { log, extraArgs: ['--listen', '127.0.0.1:0', '--secret-file', secret] })
      let pri: Awaited<ReturnType<typeof startDaemon>> | null = null
      try {
        const listen = ((await request(sd.state, { cmd: 'status' })) as { listen: string }).listen
        await dropCaches(img.mountpoint)
        c0 = cpuTicks()
        t0 = process.hrtime.bigint()
        pri = await startDaemon(repo, 'primary', pd, { log, extraArgs: ['--secondary', listen, '--secret-file', secret] })
        for (;;) {
          const st = await request(pd.state, { cmd: 'status' }) as { rlinks: Array<{ consistent: boolean, state: string }> }
          if (st.rlinks[0].state === 'connected' && st.rlinks[0].consistent) break
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        await runOk(['sync', '-f', sd.data])
        s = Number(process.hrtime.bigint() - t0) / 1e9
        rows.push(`| ${r} | replicafs full sync (of which the Primary's start ${pri.startSeconds.toFixed(2)} s) | ${s.toFixed(2)} | ${(bytes / MiB / s).toFixed(0)} | ${((cpuTicks() - c0) / 100).toFixed(2)} |`)
        log(rows[rows.length - 1])
      } finally {
        await pri?.stop()
        await sec.stop()
      }
      fs.rmSync(path.join(img.mountpoint, `sec-${r}`), { recursive: true })
      fs.rmSync(path.join(img.mountpoint, `pri-${r}`), { recursive: true })
    }
    process.stdout.write(`tree: ${files} files of 64 KiB + 4 of ${bigMiB} MiB (${(bytes / MiB).toFixed(0)} MiB), page cache dropped before each\n\n| rep | what | seconds | MiB/s | CPU s (machine) |\n|---|---|---|---|---|\n${rows.join('\n')}\n`)
  } finally {
    await img.destroy()
  }
}

main().catch((err: Error) => { process.stderr.write(`sync bench: ${err.stack ?? err.message}\n`); process.exit(1) })
