/**
 * Power-cut soak (issue 16): `npm run build && node dist/bench/powercut.js [--rounds N] [--seed S]
 * [--commit SECONDS] [--one-fs] [--fsync-every N] [--secondary] [--reboot] [--keep] [--dir DIR]`. test/powercut.test.ts runs a few
 * rounds of it in `npm test`. Run as root, alone (it mounts loop devices and FUSE). A measurement
 * of where recovery stands, not a test: it prints what each round found and a summary, and exits 0
 * whatever it found (1 only if it could not run).
 *
 * Each round: two fresh ext4 images (loop devices, mounted with commit=SECONDS, default 30) hold a
 * Primary's state directory (so the SRL) and its data directory (--one-fs: one image holds both);
 * a random workload of one-record steps runs through the mount (create, write within a page,
 * rename, rename over a file, unlink, hard link, mkdir, rmdir, rename of a directory with files in
 * it, truncate, chmod; names from a pool of ten per directory, so they are reused), with an fsync
 * through the mount every 9 steps (--fsync-every), after half of which the data directory is fsynced as well (its
 * filesystem commits its journal then, as its commit timer would). At a random instant (100 to
 * 2,600 ms in, during a step) power is cut with ext4's shutdown ioctl on both filesystems
 * (`xfs_io -x -c shutdown`, EXT4_GOING_FLAGS_NOLOGFLUSH: nothing not yet durable reaches the
 * disk), the daemon is killed (kill -9), the mounts are dropped, the images mounted again (their
 * journals replayed) and the Primary started on them. The round then says whether the Primary
 * started, and whether its data directory equals the tree after some prefix of the steps that
 * includes every step acknowledged before a completed fsync; if not, the nearest prefix and how it
 * differs. --keep keeps the images (and the SRL: without a Secondary the Primary runs with --retain)
 * to look into. --secondary: a Secondary on its own images (and loopback TCP) receives the updates;
 * its power is cut too, at another random instant (up to 300 ms after the Primary's); both are
 * restarted, and the round also says whether the Secondary caught up and ended with the Primary's
 * tree.
 *
 * The remount counts as a reboot (another mount id), so the restart replays from the last
 * checkpoint, planned from the data cursor (src/rvg/replay-plan.ts). `--reboot` also changes the
 * recorded boot id. With --one-fs, or a short --commit, the data filesystem can commit changes
 * whose SRL records are not yet durable (the SRL's own fdatasync commits the shared journal; the
 * commit timer runs on its own): docs/ARCHITECTURE.md, "Known limitations", says what that leaves.
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as crypto from 'crypto'
import * as net from 'net'
import { execFile, execFileSync, spawnSync } from 'child_process'
import { request } from '../src/control'
import { Srl } from '../src/srl'
import { State } from '../src/format/state'
import { applyRecordSync, FdCache } from '../src/apply'

/** The model: names to objects (so hard links share one), and each object's content and mode. */
interface Obj { content: Buffer, mode: number }
interface Tree { names: Map<string, number | 'dir'>, objs: Map<number, Obj>, dirModes: Map<string, number>, next: number }
/** What a tree looks like on disk: path -> type, mode, content. */
type Flat = Map<string, { type: 'file' | 'dir', mode: number, content?: Buffer }>

const repo = path.resolve(__dirname, '..', '..')
const cli = path.join(repo, 'bin', 'replicafs')

interface Options { rounds: number, seed: number, reboot: boolean, dir: string | null, commit: number, keep: boolean, oneFs: boolean, fsyncEvery: number, secondary: boolean }

function args (): Options {
  const a = process.argv.slice(2)
  const o: Options = { rounds: 10, seed: crypto.randomInt(1, 2 ** 31), reboot: false, dir: null, commit: 30, keep: false, oneFs: false, fsyncEvery: 9, secondary: false }
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--rounds') o.rounds = Number(a[++i])
    else if (a[i] === '--seed') o.seed = Number(a[++i])
    else if (a[i] === '--reboot') o.reboot = true
    else if (a[i] === '--dir') o.dir = a[++i]
    else if (a[i] === '--commit') o.commit = Number(a[++i])
    else if (a[i] === '--keep') o.keep = true
    else if (a[i] === '--one-fs') o.oneFs = true
    else if (a[i] === '--secondary') o.secondary = true
    else if (a[i] === '--fsync-every') o.fsyncEvery = Number(a[++i])
    else { console.error(`powercut: unknown argument ${a[i]} (--rounds N, --seed S, --reboot, --dir DIR, --commit SECONDS, --one-fs, --fsync-every N, --secondary, --keep)`); process.exit(1) }
  }
  return o
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

function readTree (root: string): Flat {
  const tree: Flat = new Map()
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

function flat (t: Tree): Flat {
  const out: Flat = new Map()
  for (const [p, id] of t.names) {
    if (id === 'dir') out.set(p, { type: 'dir', mode: t.dirModes.get(p)! })
    else out.set(p, { type: 'file', mode: t.objs.get(id)!.mode, content: t.objs.get(id)!.content })
  }
  return out
}

/** The paths where two trees differ. */
function differ (a: Flat, b: Flat): string[] {
  const out: string[] = []
  for (const p of new Set([...a.keys(), ...b.keys()])) {
    const e = a.get(p)
    const f = b.get(p)
    if (e === undefined || f === undefined) out.push(`${p}: ${e === undefined ? 'absent' : e.type} vs ${f === undefined ? 'absent' : f.type}`)
    else if (e.type !== f.type || e.mode !== f.mode) out.push(`${p}: ${e.type} ${e.mode.toString(8)} vs ${f.type} ${f.mode.toString(8)}`)
    else if (e.type === 'file' && !e.content!.equals(f.content!)) out.push(`${p}: ${e.content!.length} bytes vs ${f.content!.length}`)
  }
  return out
}

function same (a: Flat, b: Flat): boolean {
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

/**
 * One step through the mount (one SRL record), returning the model after it. Names come from a
 * small pool, so they are reused: a file created where another was renamed away or unlinked, a
 * rename over a file, a hard link, a directory renamed with files in it.
 */
function step (r: () => number, mnt: string, state: string, tree: Tree, i: number): { next: Tree, act: (() => Promise<void>) | null } {
  const next: Tree = { names: new Map(tree.names), objs: new Map(tree.objs), dirModes: new Map(tree.dirModes), next: tree.next }
  const files = [...tree.names].filter(([, id]) => id !== 'dir').map(([p]) => p)
  const dirs = [...tree.names].filter(([, id]) => id === 'dir').map(([p]) => p)
  const empty = dirs.filter((d) => ![...tree.names.keys()].some((p) => p.startsWith(d + '/')))
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]
  const parent = (): string => pick(['', '', ...dirs.filter((d) => !d.includes('/'))])
  const join = (d: string, n: string): string => d === '' ? n : `${d}/${n}`
  const free = (): string | null => { for (let k = 0; k < 8; k++) { const p = join(parent(), `n${Math.floor(r() * 10)}`); if (!tree.names.has(p)) return p } return null }
  const full = (p: string): string => path.join(mnt, p)
  const released = async (): Promise<void> => { for (let k = 0; k < 2000 && await openFiles(state) > 0; k++) await new Promise((resolve) => setTimeout(resolve, 2)) }
  const obj = (p: string): Obj => tree.objs.get(tree.names.get(p) as number)!
  const setObj = (p: string, o: Obj): void => { next.objs.set(tree.names.get(p) as number, o) }
  const ops: Array<[string, number]> = [['create', 18], ['write', files.length > 0 ? 28 : 0], ['rename', files.length > 0 ? 12 : 0],
    ['unlink', files.length > 0 ? 8 : 0], ['link', files.length > 0 ? 4 : 0], ['mkdir', 5], ['rmdir', empty.length > 0 ? 3 : 0],
    ['mvdir', dirs.length > 0 ? 2 : 0], ['truncate', files.length > 0 ? 6 : 0], ['chmod', files.length > 0 ? 4 : 0]]
  let x = r() * ops.reduce((n, [, w]) => n + w, 0)
  let op = ops[0][0]
  for (const [name, w] of ops) { if (x < w) { op = name; break } x -= w }
  // The model is decided first, then the change is made: a step cut short by the power cut still
  // has its model (the tree may or may not include it).
  let act: (() => Promise<void>) | null = null
  switch (op) {
    case 'create': {
      const p = free()
      if (p === null) break
      act = async () => { await (await fs.promises.open(full(p), 'wx', 0o644)).close().catch(() => {}); await released() }
      next.names.set(p, next.next)
      next.objs.set(next.next++, { content: Buffer.alloc(0), mode: 0o644 })
      break
    }
    case 'write': {
      const p = pick(files)
      const old = obj(p).content
      const at = old.length > 0 && r() < 0.4 ? 0 : old.length
      const len = 1 + Math.floor(r() * Math.min(3000, 4096 - (at % 4096) - 1))
      const data = Buffer.alloc(len, 97 + (i % 26))
      act = async () => {
        const fh = await fs.promises.open(full(p), 'r+')
        try { await fh.write(data, 0, len, at) } finally { await fh.close().catch(() => {}) }
        await released()
      }
      const c = Buffer.alloc(Math.max(old.length, at + len))
      old.copy(c)
      data.copy(c, at)
      setObj(p, { ...obj(p), content: c })
      break
    }
    case 'rename': {
      const from = pick(files)
      const over = files.filter((f) => f !== from && tree.names.get(f) !== tree.names.get(from))
      const to = over.length > 0 && r() < 0.5 ? pick(over) : free()
      if (to === null) break
      act = async () => { await fs.promises.rename(full(from), full(to)) }
      next.names.set(to, tree.names.get(from)!)
      next.names.delete(from)
      break
    }
    case 'unlink': { const p = pick(files); act = async () => { await fs.promises.unlink(full(p)); await released() }; next.names.delete(p); break }
    case 'link': {
      const p = pick(files)
      const to = free()
      if (to === null) break
      act = async () => { await fs.promises.link(full(p), full(to)) }
      next.names.set(to, tree.names.get(p)!)
      break
    }
    case 'mkdir': { const p = free(); if (p === null) break; act = async () => { await fs.promises.mkdir(full(p), 0o755) }; next.names.set(p, 'dir'); next.dirModes.set(p, 0o755); break }
    case 'rmdir': { const p = pick(empty); act = async () => { await fs.promises.rmdir(full(p)) }; next.names.delete(p); next.dirModes.delete(p); break }
    case 'mvdir': {
      const d = pick(dirs.filter((x) => !x.includes('/')))
      if (d === undefined) break
      const to = `n${Math.floor(r() * 10)}`
      if (tree.names.has(to)) break
      act = async () => { await fs.promises.rename(full(d), full(to)) }
      for (const [p, id] of tree.names) {
        if (p === d || p.startsWith(d + '/')) { next.names.delete(p); next.names.set(to + p.slice(d.length), id) }
      }
      for (const [p, m] of tree.dirModes) {
        if (p === d || p.startsWith(d + '/')) { next.dirModes.delete(p); next.dirModes.set(to + p.slice(d.length), m) }
      }
      break
    }
    case 'truncate': {
      const p = pick(files)
      const size = Math.floor(r() * 2000)
      act = async () => { await fs.promises.truncate(full(p), size) }
      const c = Buffer.alloc(size)
      obj(p).content.copy(c, 0, 0, size)
      setObj(p, { ...obj(p), content: c })
      break
    }
    case 'chmod': { const p = pick(files); const mode = pick([0o600, 0o640, 0o644, 0o664]); act = async () => { await fs.promises.chmod(full(p), mode) }; setObj(p, { ...obj(p), mode }); break }
  }
  return { next, act }
}

interface Outcome { kind: 'exact' | 'exact-log' | 'lost-fsynced' | 'not-a-prefix' | 'refused' | 'secondary-behind' | 'secondary-differs', detail: string }

/**
 * The tree the SRL describes: every record it retains (the Primary runs with --retain, so from the
 * first), applied to an empty directory. The Primary must be stopped.
 */
async function logTree (state: string, scratch: string): Promise<Flat> {
  fs.mkdirSync(scratch)
  const srl = await Srl.open(path.join(state, 'srl'), { ringBytes: 32 * 1024 * 1024, role: 'primary' })
  const fds = new FdCache(scratch)
  try {
    const recs = [...srl.ring.scan(srl.tailPosition, srl.lastSeq)].map((x) => x.record)
    const voided = new Set(recs.filter((x) => x.type === 18).map((x) => x.meta.v))
    for (const rec of recs) if (!voided.has(rec.seq)) applyRecordSync(scratch, rec, fds, false)
  } finally {
    fds.clear()
    await srl.close()
  }
  return readTree(scratch)
}

/** One host's filesystems (loop-mounted ext4 images), its state and data directories, its mount. */
interface Host { images: string[], disks: string[], data: string, state: string, mnt: string, mountAll: () => void, cut: () => Promise<void>, umountAll: () => void }

function host (root: string, tag: string, o: Options): Host {
  // The SRL's filesystem and the data directory's: two images, as VVR puts the SRL on its own
  // volume (--one-fs: one image for both).
  const names = o.oneFs ? [`${tag}disk`] : [`${tag}srl`, `${tag}data`]
  const images = names.map((x) => path.join(root, `${x}.img`))
  const disks = names.map((x) => path.join(root, x))
  const mnt = path.join(root, `${tag}mnt`)
  fs.mkdirSync(mnt)
  for (let k = 0; k < disks.length; k++) {
    fs.mkdirSync(disks[k])
    fs.writeFileSync(images[k], '')
    fs.truncateSync(images[k], 128 * 1024 * 1024)
    sh('mkfs.ext4', ['-F', '-q', '-b', '4096', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', images[k]])
  }
  const h: Host = {
    images,
    disks,
    mnt,
    data: path.join(disks[disks.length - 1], 'data'),
    state: path.join(disks[0], 'state'),
    mountAll: () => { for (let k = 0; k < disks.length; k++) sh('mount', ['-o', `loop,commit=${o.commit}`, images[k], disks[k]]) },
    // All its filesystems at once, in one child process (the data filesystem first: nothing of it
    // commits in between unless asked).
    cut: () => new Promise((resolve, reject) => execFile('sh', ['-c', disks.slice().reverse().map((d) => `xfs_io -x -c shutdown '${d}'`).join(' && ')], (err) => err ? reject(err) : resolve())),
    umountAll: () => { spawnSync('umount', ['-l', mnt]); for (const d of disks) spawnSync('umount', [d]) }
  }
  h.mountAll()
  fs.mkdirSync(h.data)
  for (const d of disks) sh('sync', ['-f', d]) // the setup is on disk before anything is measured
  return h
}

async function daemonPid (state: string): Promise<number> {
  return (await request(state, { cmd: 'status' }, 5000) as { pid: number }).pid
}

async function killHard (pid: number): Promise<void> {
  try { process.kill(pid, 'SIGKILL') } catch { return }
  for (let k = 0; k < 500; k++) { try { process.kill(pid, 0) } catch { return } await new Promise((resolve) => setTimeout(resolve, 10)) }
}

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, '127.0.0.1', () => { const port = (srv.address() as net.AddressInfo).port; srv.close(() => resolve(port)) })
    srv.on('error', reject)
  })
}

function said (state: string): string {
  try { return fs.readFileSync(path.join(state, 'daemon.log'), 'utf8').split('\n').filter((l) => /replay|data cursor|past the end|discarded|put back|DIVERGED|STALE|fatal|cannot/.test(l)).slice(-4).join(' / ') } catch { return '' }
}

async function round (n: number, seed: number, root: string, o: Options): Promise<Outcome> {
  const r = rng(seed)
  const dir = path.join(root, `round${n}`)
  fs.mkdirSync(dir)
  const P = host(dir, 'p', o)
  const S = o.secondary ? host(dir, 's', o) : null
  const secret = path.join(dir, 'secret')
  fs.writeFileSync(secret, crypto.randomBytes(32).toString('hex'), { mode: 0o600 })
  const port = S !== null ? await freePort() : 0
  const run = (args: string[]): { ok: boolean, msg: string } => {
    const x = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
    return { ok: x.status === 0, msg: (x.stderr || x.stdout).trim().split('\n').pop() ?? '' }
  }
  const startP = (): { ok: boolean, msg: string } => run(['primary', '--data', P.data, '--mount', P.mnt, '--state', P.state, '--srl-size', '32M', '--daemon',
    ...(S !== null ? ['--secondary', `127.0.0.1:${port}`, '--secret-file', secret] : ['--retain'])])
  const startS = (): { ok: boolean, msg: string } => run(['secondary', '--data', S!.data, '--mount', S!.mnt, '--state', S!.state, '--listen', `127.0.0.1:${port}`, '--secret-file', secret, '--srl-size', '32M', '--daemon'])
  const stopAll = (): void => { for (const h of [P, S]) if (h !== null) spawnSync(process.execPath, [cli, 'stop', '--state', h.state]) }
  try {
    if (S !== null) { const s0 = startS(); if (!s0.ok) throw new Error(`the Secondary did not start: ${s0.msg}`) }
    const first = startP()
    if (!first.ok) throw new Error(`the Primary did not start: ${first.msg}`)
    const pids = [await daemonPid(P.state), ...(S !== null ? [await daemonPid(S.state)] : [])]
    const models: Tree[] = [{ names: new Map(), objs: new Map(), dirModes: new Map(), next: 1 }]
    let durable = 0
    // Power is cut at a random instant while the steps run (not between two of them): from a timer,
    // with the ioctl in a child process, while a step may be anywhere in its FUSE request. The
    // Secondary's, if any, at another random instant (before or after the Primary's).
    let cutting = false
    const cuts: Array<Promise<void>> = []
    const cutAt = 100 + Math.floor(r() * 2500)
    const sCutAt = 50 + Math.floor(r() * (cutAt + 300))
    const timer = setTimeout(() => { cutting = true; cuts.push(P.cut()) }, cutAt)
    let sCut: Promise<void> | null = null
    const sTimer = S !== null ? setTimeout(() => { sCut = S.cut() }, sCutAt) : null
    let started = 0
    try {
      for (let i = 1; !cutting; i++) {
        started = i
        const { next, act } = step(r, P.mnt, P.state, models[i - 1], i)
        models.push(next)
        if (act !== null) await act()
        if (i % o.fsyncEvery === 0 && !cutting) { // fsync through the mount: every record so far is durable in the SRL
          const fh = await fs.promises.open(P.mnt, 'r')
          try { await fh.sync() } finally { await fh.close().catch(() => {}) }
          if (!cutting) durable = i // completed before the cut began
          // Now and then the data filesystem commits its journal right after the SRL's sync (an
          // fsync of the data directory itself; what its commit timer does every --commit seconds):
          // its names then run ahead of the last checkpoint, the case exact replay is about.
          if (r() < 0.5 && !cutting) {
            const dh = await fs.promises.open(P.data, 'r')
            try { await dh.sync() } finally { await dh.close() }
          }
        }
      }
    } catch (err) {
      if (!cutting) throw err // a step failed before the cut: a bug, not a finding
    } finally {
      clearTimeout(timer)
    }
    if (cuts.length === 0) { cutting = true; cuts.push(P.cut()) }
    if (S !== null) {
      // the Secondary's cut comes when its timer says (within 300 ms of the Primary's)
      while (sCut === null) await new Promise((resolve) => setTimeout(resolve, 10))
      clearTimeout(sTimer!)
      cuts.push(sCut)
    }
    await Promise.all(cuts)
    for (const pid of pids) await killHard(pid)
    for (const h of [P, S]) if (h !== null) { h.umountAll(); h.mountAll() }
    if (o.reboot) {
      // As after a reboot: another boot id than the one the last recovery recorded.
      const srl = await Srl.open(path.join(P.state, 'srl'), { ringBytes: 32 * 1024 * 1024, role: 'primary' })
      await srl.store.put(State.boot, 'powercut: another boot')
      await srl.close()
    }
    const when = `cut at ${cutAt} ms${S !== null ? ` (the Secondary's at ${sCutAt} ms)` : ''}, in step ${started}`
    if (S !== null) { const s1 = startS(); if (!s1.ok) return { kind: 'refused', detail: `${when}: the Secondary: ${s1.msg} (${said(S.state)})` } }
    const again = startP()
    if (!again.ok) return { kind: 'refused', detail: `${when}: ${again.msg} (${said(P.state)})` }
    const tree = readTree(P.data)
    const ks = models.map((m, k) => same(tree, flat(m)) ? k : -1).filter((k) => k >= 0)
    const putBack = /put back (\d+) records/.exec(said(P.state))
    if (ks.length === 0 && putBack !== null && S === null) {
      // Records put back from the data cursor carry what the data directory holds; writes whose
      // bytes the power cut took are then logged as the disk has them. What must hold: the data
      // directory is exactly what its SRL describes.
      spawnSync(process.execPath, [cli, 'stop', '--state', P.state])
      const fromLog = await logTree(P.state, path.join(dir, 'fromlog'))
      const d = differ(tree, fromLog)
      if (d.length === 0) return { kind: 'exact-log', detail: `${when}: ${putBack[1]} records put back from the data cursor; the data directory is exactly what its SRL describes (the bytes of writes never synced are as the power cut left them)` }
      return { kind: 'not-a-prefix', detail: `${when}: ${putBack[1]} records put back, and the data directory differs from what its SRL describes: ${d.slice(0, 4).join('; ')}` }
    }
    if (ks.length === 0) {
      let best = durable
      let fewest = Infinity
      for (let k = durable; k < models.length; k++) { const d = differ(tree, flat(models[k])).length; if (d < fewest) { fewest = d; best = k } }
      return { kind: 'not-a-prefix', detail: `${when}, fsynced through ${durable}; the tree equals no prefix; nearest ${best}: ${differ(tree, flat(models[best])).slice(0, 4).join('; ')} (${said(P.state)})` }
    }
    const k = ks[ks.length - 1]
    if (k < durable) return { kind: 'lost-fsynced', detail: `${when}: prefix ${k}, but steps through ${durable} were fsynced` }
    let detail = `${when}: prefix ${k} (fsynced through ${durable})${putBack !== null ? `; ${putBack[1]} records the SRL lost put back from the data cursor` : ''}`
    if (S !== null) {
      // The Secondary catches up with the restarted Primary and ends with its tree.
      const newest = (await request(P.state, { cmd: 'status' }, 5000) as { srl: { newestSeq: number | null, appliedSeq: number } }).srl
      const last = newest.newestSeq ?? newest.appliedSeq
      let sst: { appliedSeq: number, consistent: boolean } = { appliedSeq: -1, consistent: false }
      for (let t = 0; t < 600; t++) {
        sst = await request(S.state, { cmd: 'status' }, 5000) as typeof sst
        if (sst.appliedSeq >= last) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      if (sst.appliedSeq < last || !sst.consistent) return { kind: 'secondary-behind', detail: `${detail}; the Secondary applied ${sst.appliedSeq} of ${last} in 30 s, consistent ${String(sst.consistent)} (${said(S.state)} | ${said(P.state)})` }
      const stree = readTree(S.data)
      const d = differ(stree, tree)
      if (d.length > 0) return { kind: 'secondary-differs', detail: `${detail}; the Secondary's tree differs: ${d.slice(0, 4).join('; ')} (${said(S.state)})` }
      detail += `; the Secondary converged (${last} records)`
    }
    return { kind: 'exact', detail }
  } finally {
    stopAll()
    for (const h of [P, S]) if (h !== null) h.umountAll()
    if (!o.keep) fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main (): Promise<void> {
  const o = args()
  const { rounds, seed, reboot, dir } = o
  // --dir: an existing directory to work in (the test suite's registered temp root); else a new one.
  const root = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-powercut-'))
  console.log(`powercut: ${rounds} rounds, seed ${seed} (replay with --seed ${seed}), ${o.oneFs ? 'SRL and data on one ext4' : 'SRL and data on two ext4'} (commit=${o.commit})${o.secondary ? ', with a Secondary (its own two ext4, cut too)' : ''}${reboot ? ", restarts as after a reboot" : ", restarts on the same boot"}`)
  const counts: Record<string, number> = {}
  try {
    for (let n = 0; n < rounds; n++) {
      const s = (seed + n * 7919) >>> 0
      const out = await round(n, s, root, o)
      counts[out.kind] = (counts[out.kind] ?? 0) + 1
      console.log(`  round ${n + 1} (seed ${s}): ${out.kind}: ${out.detail}`)
    }
  } finally {
    if (dir === null) fs.rmSync(root, { recursive: true, force: true })
  }
  console.log(`powercut: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')} (of ${rounds})`)
}

main().catch((err: Error) => { console.error(`powercut: ${err.message}`); process.exit(1) })
