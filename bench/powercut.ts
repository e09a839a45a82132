/**
 * Power-cut soak (issue 16): `npm run build && node dist/bench/powercut.js [--rounds N] [--seed S]
 * [--reboot] [--dir DIR]`. test/powercut.test.ts runs a few rounds of it in `npm test`.
 * Run as root, alone (it mounts loop devices and FUSE). A measurement of where recovery stands, not
 * a test: it prints what each round found and a summary, and exits 0 whatever it found (1 only if
 * it could not run).
 *
 * Each round: a fresh ext4 image (loop device) holds the data directory and the state directory (so
 * the SRL) of a Primary; a random workload of one-record steps runs through the mount (create,
 * write within a page, rename, rename over a file, unlink, mkdir, rmdir, truncate, chmod, and an
 * fsync every few steps); after a random number of steps, power is cut with ext4's shutdown ioctl
 * (`xfs_io -x -c shutdown`, EXT4_GOING_FLAGS_NOLOGFLUSH: nothing not yet durable reaches the disk),
 * the daemon is killed (kill -9), the mounts are dropped, the image is mounted again (its journal
 * replayed) and the Primary started on it. The round then says whether the Primary started, and
 * whether its data directory equals the tree after some prefix of the steps that includes every step
 * acknowledged before a completed fsync. Names are never reused (f<step>, r<step>, d<step>), so the
 * replays that are not idempotent (a RENAME whose source name was created again since) do not
 * arise here.
 *
 * The cut keeps the boot id (no reboot), so the restart replays as after a kill -9: from the last
 * non-WRITE record (src/srl/index.ts). `--reboot` changes the recorded boot id before the restart,
 * so it replays as after a reboot: from the last checkpoint (`synced`). Issue 16 tracks making every
 * round exact either way; this counts how far that is.
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as crypto from 'crypto'
import { execFileSync, spawnSync } from 'child_process'
import { request } from '../src/control'
import { Srl } from '../src/srl'
import { State } from '../src/format/state'

interface Entry { type: 'file' | 'dir', mode: number, content?: Buffer }
type Tree = Map<string, Entry>

const repo = path.resolve(__dirname, '..', '..')
const cli = path.join(repo, 'bin', 'replicafs')

function args (): { rounds: number, seed: number, reboot: boolean, dir: string | null } {
  const a = process.argv.slice(2)
  let rounds = 10
  let seed = crypto.randomInt(1, 2 ** 31)
  let reboot = false
  let dir: string | null = null
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--rounds') rounds = Number(a[++i])
    else if (a[i] === '--seed') seed = Number(a[++i])
    else if (a[i] === '--reboot') reboot = true
    else if (a[i] === '--dir') dir = a[++i]
    else { console.error(`powercut: unknown argument ${a[i]} (--rounds N, --seed S, --reboot, --dir DIR)`); process.exit(1) }
  }
  return { rounds, seed, reboot, dir }
}

/** A small deterministic generator (mulberry32). */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function sh (cmd: string, argv: string[]): string {
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

function readTree (root: string): Tree {
  const tree: Tree = new Map()
  const rec = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`
      const st = fs.lstatSync(path.join(root, r))
      if (st.isDirectory()) { tree.set(r, { type: 'dir', mode: st.mode & 0o7777 }); rec(r) } else tree.set(r, { type: 'file', mode: st.mode & 0o7777, content: fs.readFileSync(path.join(root, r)) })
    }
  }
  rec('')
  return tree
}

function same (a: Tree, b: Tree): boolean {
  if (a.size !== b.size) return false
  for (const [p, e] of a) {
    const f = b.get(p)
    if (f === undefined || f.type !== e.type || f.mode !== e.mode) return false
    if (e.type === 'file' && !e.content!.equals(f.content!)) return false
  }
  return true
}

async function openFiles (state: string): Promise<number> {
  return (await request(state, { cmd: 'status' }, 5000) as { openFiles: number }).openFiles
}

/** One step through the mount (one SRL record), returning the model after it. */
async function step (r: () => number, mnt: string, state: string, tree: Tree, i: number): Promise<Tree> {
  const next: Tree = new Map(tree)
  const files = [...tree].filter(([, e]) => e.type === 'file').map(([p]) => p)
  const dirs = [...tree].filter(([, e]) => e.type === 'dir').map(([p]) => p)
  const empty = dirs.filter((d) => ![...tree.keys()].some((p) => p.startsWith(d + '/')))
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]
  const parent = (): string => pick(['', '', ...dirs.filter((d) => !d.includes('/'))])
  const join = (d: string, n: string): string => d === '' ? n : `${d}/${n}`
  const full = (p: string): string => path.join(mnt, p)
  const released = async (): Promise<void> => { for (let k = 0; k < 2000 && await openFiles(state) > 0; k++) await new Promise((resolve) => setTimeout(resolve, 2)) }
  const ops: Array<[string, number]> = [['create', 20], ['write', files.length > 0 ? 30 : 0], ['rename', files.length > 1 ? 12 : 0],
    ['unlink', files.length > 0 ? 8 : 0], ['mkdir', 5], ['rmdir', empty.length > 0 ? 3 : 0], ['truncate', files.length > 0 ? 6 : 0], ['chmod', files.length > 0 ? 4 : 0]]
  let x = r() * ops.reduce((n, [, w]) => n + w, 0)
  let op = ops[0][0]
  for (const [name, w] of ops) { if (x < w) { op = name; break } x -= w }
  switch (op) {
    case 'create': {
      const p = join(parent(), `f${i}`)
      const fh = await fs.promises.open(full(p), 'wx', 0o644)
      await fh.close()
      await released()
      next.set(p, { type: 'file', mode: 0o644, content: Buffer.alloc(0) })
      break
    }
    case 'write': {
      const p = pick(files)
      const old = tree.get(p)!.content!
      const at = old.length > 0 && r() < 0.4 ? 0 : old.length
      const len = 1 + Math.floor(r() * Math.min(3000, 4096 - (at % 4096) - 1))
      const data = Buffer.alloc(len, 97 + (i % 26))
      const fh = await fs.promises.open(full(p), 'r+')
      await fh.write(data, 0, len, at)
      await fh.close()
      await released()
      const c = Buffer.alloc(Math.max(old.length, at + len))
      old.copy(c)
      data.copy(c, at)
      next.set(p, { ...tree.get(p)!, content: c })
      break
    }
    case 'rename': {
      const from = pick(files)
      const to = r() < 0.6 ? pick(files.filter((f) => f !== from)) : join(parent(), `r${i}`)
      await fs.promises.rename(full(from), full(to))
      next.set(to, tree.get(from)!)
      next.delete(from)
      break
    }
    case 'unlink': { const p = pick(files); await fs.promises.unlink(full(p)); next.delete(p); break }
    case 'mkdir': { const p = join(parent(), `d${i}`); await fs.promises.mkdir(full(p), 0o755); next.set(p, { type: 'dir', mode: 0o755 }); break }
    case 'rmdir': { const p = pick(empty); await fs.promises.rmdir(full(p)); next.delete(p); break }
    case 'truncate': {
      const p = pick(files)
      const size = Math.floor(r() * 2000)
      await fs.promises.truncate(full(p), size)
      const c = Buffer.alloc(size)
      tree.get(p)!.content!.copy(c, 0, 0, size)
      next.set(p, { ...tree.get(p)!, content: c })
      break
    }
    case 'chmod': { const p = pick(files); const mode = pick([0o600, 0o640, 0o644, 0o664]); await fs.promises.chmod(full(p), mode); next.set(p, { ...tree.get(p)!, mode }); break }
  }
  return next
}

interface Outcome { kind: 'exact' | 'lost-fsynced' | 'not-a-prefix' | 'refused', detail: string }

async function round (n: number, seed: number, root: string, reboot: boolean): Promise<Outcome> {
  const r = rng(seed)
  const image = path.join(root, `disk${n}.img`)
  const disk = path.join(root, `disk${n}`)
  const mnt = path.join(root, `mnt${n}`)
  fs.mkdirSync(disk)
  fs.mkdirSync(mnt)
  fs.writeFileSync(image, '')
  fs.truncateSync(image, 256 * 1024 * 1024)
  sh('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', image])
  sh('mount', ['-o', 'loop', image, disk])
  const data = path.join(disk, 'data')
  const state = path.join(disk, 'state')
  fs.mkdirSync(data)
  const start = (): { ok: boolean, msg: string } => {
    const s = spawnSync(process.execPath, [cli, 'primary', '--data', data, '--mount', mnt, '--state', state, '--srl-size', '16M', '--daemon'], { encoding: 'utf8' })
    return { ok: s.status === 0, msg: (s.stderr || s.stdout).trim().split('\n').pop() ?? '' }
  }
  try {
    const first = start()
    if (!first.ok) throw new Error(`the Primary did not start: ${first.msg}`)
    const models: Tree[] = [new Map()]
    let durable = 0
    const steps = 20 + Math.floor(r() * 180)
    for (let i = 1; i <= steps; i++) {
      models.push(await step(r, mnt, state, models[i - 1], i))
      if (i % 9 === 0) { // fsync of a file through the mount: every record so far is durable in the SRL
        const fh = await fs.promises.open(mnt, 'r')
        await fh.sync()
        await fh.close()
        durable = i
      }
    }
    const pid = (await request(state, { cmd: 'status' }, 5000) as { pid: number }).pid
    sh('xfs_io', ['-x', '-c', 'shutdown', disk])
    process.kill(pid, 'SIGKILL')
    for (let k = 0; k < 500; k++) { try { process.kill(pid, 0) } catch { break } await new Promise((resolve) => setTimeout(resolve, 10)) }
    spawnSync('umount', ['-l', mnt])
    sh('umount', [disk])
    sh('mount', ['-o', 'loop', image, disk])
    if (reboot) {
      // As after a reboot: another boot id than the one the last recovery recorded.
      const srl = await Srl.open(path.join(state, 'srl'), { ringBytes: 16 * 1024 * 1024, role: 'primary' })
      await srl.store.put(State.boot, 'powercut: another boot')
      await srl.close()
    }
    const again = start()
    if (!again.ok) return { kind: 'refused', detail: again.msg }
    const tree = readTree(data)
    spawnSync(process.execPath, [cli, 'stop', '--state', state])
    const ks = models.map((m, k) => same(tree, m) ? k : -1).filter((k) => k >= 0)
    if (ks.length === 0) return { kind: 'not-a-prefix', detail: `${steps} steps, fsynced through ${durable}; the tree equals no prefix` }
    const k = ks[ks.length - 1]
    if (k < durable) return { kind: 'lost-fsynced', detail: `prefix ${k} of ${steps}, but steps through ${durable} were fsynced` }
    return { kind: 'exact', detail: `prefix ${k} of ${steps} (fsynced through ${durable})` }
  } finally {
    spawnSync(process.execPath, [cli, 'stop', '--state', state])
    spawnSync('umount', ['-l', mnt])
    spawnSync('umount', [disk])
    fs.rmSync(image, { force: true })
  }
}

async function main (): Promise<void> {
  const { rounds, seed, reboot, dir } = args()
  // --dir: an existing directory to work in (the test suite's registered temp root); else a new one.
  const root = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-powercut-'))
  console.log(`powercut: ${rounds} rounds, seed ${seed} (replay with --seed ${seed})${reboot ? ', restarts as after a reboot' : ', restarts on the same boot'}`)
  const counts: Record<string, number> = {}
  try {
    for (let n = 0; n < rounds; n++) {
      const s = (seed + n * 7919) >>> 0
      const o = await round(n, s, root, reboot)
      counts[o.kind] = (counts[o.kind] ?? 0) + 1
      console.log(`  round ${n + 1} (seed ${s}): ${o.kind}: ${o.detail}`)
    }
  } finally {
    if (dir === null) fs.rmSync(root, { recursive: true, force: true })
  }
  console.log(`powercut: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')} (of ${rounds})`)
}

main().catch((err: Error) => { console.error(`powercut: ${err.message}`); process.exit(1) })
