/**
 * Write-order fidelity: whatever anyone can observe on a Secondary is the Primary's tree after a
 * prefix of its updates, and that prefix only grows, through delays, stalls and connections cut
 * mid-frame.
 *
 * The workload runs on the Primary's mount; every step is exactly one SRL record (create an empty
 * file, one small pwrite, rename, unlink, mkdir, rmdir, symlink, truncate, chmod), so the
 * Secondary having applied records up to seq base+k means it must show model[k], the test's model
 * of the Primary's tree after k steps. The Primary and Secondary talk through a proxy the test
 * controls (test/helpers/proxy.ts). The workload is drawn from a seeded PRNG: the seed is printed,
 * and WOF_SEED=<seed> replays the same steps.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { request } from '../src/control'
import * as fsp from 'fs/promises'
import * as net from 'net'
import * as path from 'path'
import {
  startPair, assertCleanSlate, cleanupAll, isolated, timed, waitFor, withDeadline, daemonLog, type Pair, type SecondaryStatus
} from './helpers'
import { startProxy, closeAllProxies, liveProxies, type Proxy } from './helpers/proxy'

const t = suite('wof')

t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`wof.test: cleanup had to force: ${forced.join('; ')}`)
})

// ---------------------------------------------------------------------------------------------
// seeded PRNG

function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

class Rng {
  private readonly next: () => number
  constructor (seed: number) { this.next = mulberry32(seed) }
  float (): number { return this.next() }
  int (lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo + 1)) }
  pick<T> (xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from an empty list')
    return xs[Math.floor(this.next() * xs.length)]
  }
  chance (p: number): boolean { return this.next() < p }
  shuffle<T> (xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j], xs[i]]
    }
    return xs
  }
}

// ---------------------------------------------------------------------------------------------
// the model: relative path -> entry; entries are never mutated, so snapshots can share them

interface Ent {
  type: 'file' | 'dir' | 'symlink'
  /** permission bits (not for symlinks) */
  mode: number
  content?: Buffer
  target?: string
}
type Tree = Map<string, Ent>

function children (tree: Tree, dir: string): string[] {
  const pre = dir === '' ? '' : dir + '/'
  return [...tree.keys()].filter((p) => p.startsWith(pre) && !p.slice(pre.length).includes('/'))
}

/** One line per entry, sorted: equal strings mean equal trees. */
function describeTree (tree: Tree): string[] {
  return [...tree.keys()].sort().map((p) => {
    const e = tree.get(p)!
    if (e.type === 'symlink') return `${p} -> ${e.target ?? '?'}`
    if (e.type === 'dir') return `${p}/ ${e.mode.toString(8)}`
    return `${p} ${e.mode.toString(8)} ${e.content!.length}B ${digest(e.content!)}`
  })
}

function digest (b: Buffer): string {
  let h = 2166136261
  for (const x of b) h = Math.imul(h ^ x, 16777619) >>> 0
  return h.toString(16).padStart(8, '0')
}

function sameTree (a: Tree, b: Tree): boolean {
  if (a.size !== b.size) return false
  for (const [p, ea] of a) {
    const eb = b.get(p)
    if (eb === undefined || ea.type !== eb.type) return false
    if (ea.type !== 'symlink' && ea.mode !== eb.mode) return false
    if (ea.type === 'symlink' && ea.target !== eb.target) return false
    if (ea.type === 'file' && !ea.content!.equals(eb.content!)) return false
  }
  return true
}

function diffTree (got: Tree, want: Tree): string[] {
  const out: string[] = []
  for (const p of [...new Set([...got.keys(), ...want.keys()])].sort()) {
    const g = got.get(p)
    const w = want.get(p)
    if (g === undefined) { out.push(`${p}: missing (model has ${w!.type})`); continue }
    if (w === undefined) { out.push(`${p}: unexpected ${g.type}`); continue }
    if (g.type !== w.type) { out.push(`${p}: is a ${g.type}, model has a ${w.type}`); continue }
    if (g.type !== 'symlink' && g.mode !== w.mode) out.push(`${p}: mode ${g.mode.toString(8)}, model ${w.mode.toString(8)}`)
    if (g.type === 'symlink' && g.target !== w.target) out.push(`${p}: target ${String(g.target)}, model ${String(w.target)}`)
    if (g.type === 'file' && !g.content!.equals(w.content!)) {
      const a = g.content!
      const b = w.content!
      let i = 0
      while (i < a.length && i < b.length && a[i] === b[i]) i++
      out.push(`${p}: ${a.length} bytes, model ${b.length}; first difference at byte ${i}: ${JSON.stringify(a.subarray(i, i + 24).toString('latin1'))} vs ${JSON.stringify(b.subarray(i, i + 24).toString('latin1'))}`)
    }
  }
  return out
}

/** Reads a whole tree through a mount (not atomic: only call it on a quiescent Secondary). */
async function readTree (root: string): Promise<Tree> {
  const tree: Tree = new Map()
  async function rec (rel: string): Promise<void> {
    for (const name of await fsp.readdir(path.join(root, rel))) {
      const r = rel === '' ? name : `${rel}/${name}`
      const full = path.join(root, r)
      const st = await fsp.lstat(full)
      if (st.isSymbolicLink()) tree.set(r, { type: 'symlink', mode: 0, target: await fsp.readlink(full) })
      else if (st.isDirectory()) {
        tree.set(r, { type: 'dir', mode: st.mode & 0o7777 })
        await rec(r)
      } else if (st.isFile()) tree.set(r, { type: 'file', mode: st.mode & 0o7777, content: await fsp.readFile(full) })
      else throw new Error(`${full}: unexpected file type (mode ${st.mode.toString(8)})`)
    }
  }
  await rec('')
  return tree
}

// ---------------------------------------------------------------------------------------------
// the workload: each step is one FUSE operation that the Primary logs as exactly one record

interface Workload {
  /** models[k]: the tree after k steps. */
  models: Tree[]
  /** what step k (1-based) did, for messages */
  steps: string[]
  /** steps issued so far (the last may still be in flight) */
  started: number
}

/** A recognisable block: "<step i>" repeated. */
function block (i: number, len: number): Buffer {
  const unit = Buffer.from(`<step ${i}>`)
  const b = Buffer.alloc(len)
  for (let o = 0; o < len; o += unit.length) unit.copy(b, o, 0, Math.min(unit.length, len - o))
  return b
}

const FILE_MODES = [0o600, 0o640, 0o644, 0o664, 0o400, 0o755]
const DIR_MODES = [0o700, 0o750, 0o755, 0o711]

/** Performs step number `i` (1-based) on `root` (the Primary's workload dir) and returns the new model. */
async function step (rng: Rng, root: string, tree: Tree, i: number, released: () => Promise<void>): Promise<{ tree: Tree, what: string }> {
  const next: Tree = new Map(tree)
  const files = [...tree.entries()].filter(([, e]) => e.type === 'file').map(([p]) => p)
  const links = [...tree.entries()].filter(([, e]) => e.type === 'symlink').map(([p]) => p)
  const dirs = [...tree.entries()].filter(([, e]) => e.type === 'dir').map(([p]) => p)
  const parents = ['', '', '', ...dirs.filter((d) => d.split('/').length < 3)]
  const emptyDirs = dirs.filter((d) => children(tree, d).length === 0)
  const full = (p: string): string => path.join(root, p)
  const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`)
  const crowded = tree.size > 70

  const ops: Array<[string, number]> = [
    ['create', crowded ? 4 : 20],
    ['write', files.length > 0 ? 26 : 0],
    ['rename', files.length > 0 ? 10 : 0],
    ['unlink', files.length + links.length > 0 ? (crowded ? 30 : 7) : 0],
    ['mkdir', crowded ? 0 : 5],
    ['rmdir', emptyDirs.length > 0 ? 3 : 0],
    ['symlink', crowded ? 1 : 6],
    ['truncate', files.length > 0 ? 8 : 0],
    ['chmod', files.length + dirs.length > 0 ? 8 : 0]
  ]
  let r = rng.float() * ops.reduce((s, [, w]) => s + w, 0)
  let op = ops[0][0]
  for (const [name, w] of ops) {
    if (r < w) { op = name; break }
    r -= w
  }

  switch (op) {
    case 'create': {
      const p = join(rng.pick(parents), `f${i}`)
      const fh = await fsp.open(full(p), 'wx') // O_CREAT|O_EXCL|O_WRONLY: one CREATE, no write
      await fh.close()
      await released()
      const st = await fsp.lstat(full(p))
      next.set(p, { type: 'file', mode: st.mode & 0o7777, content: Buffer.alloc(0) })
      return { tree: next, what: `create ${p}` }
    }
    case 'write': {
      const p = rng.pick(files)
      const old = tree.get(p)!
      const at = old.content!.length > 0 && rng.chance(0.4) ? 0 : old.content!.length
      // within one 4 KiB page: the kernel splits a write at page boundaries (two WRITE records)
      const len = rng.int(1, Math.min(3000, 4096 - (at % 4096)))
      const data = block(i, len)
      const fh = await fsp.open(full(p), 'r+') // no O_TRUNC: the open logs nothing
      try {
        const { bytesWritten } = await fh.write(data, 0, len, at)
        assert.is(bytesWritten, len, `step ${i}: pwrite of ${len} bytes to ${p}`)
      } finally {
        await fh.close()
      }
      await released()
      const content = Buffer.alloc(Math.max(old.content!.length, at + len))
      old.content!.copy(content)
      data.copy(content, at)
      next.set(p, { ...old, content })
      return { tree: next, what: `write ${p} @${at}+${len}` }
    }
    case 'rename': {
      const from = rng.pick(files)
      const others = files.filter((f) => f !== from)
      const over = others.length > 0 && rng.chance(0.7)
      const to = over ? rng.pick(others) : join(rng.pick(parents), `r${i}`)
      await fsp.rename(full(from), full(to))
      next.set(to, tree.get(from)!)
      next.delete(from)
      return { tree: next, what: `rename ${from} -> ${to}${over ? ' (over an existing file)' : ''}` }
    }
    case 'unlink': {
      const p = rng.pick([...files, ...links])
      await fsp.unlink(full(p))
      next.delete(p)
      return { tree: next, what: `unlink ${p}` }
    }
    case 'mkdir': {
      const p = join(rng.pick(parents), `d${i}`)
      await fsp.mkdir(full(p))
      const st = await fsp.lstat(full(p))
      next.set(p, { type: 'dir', mode: st.mode & 0o7777 })
      return { tree: next, what: `mkdir ${p}` }
    }
    case 'rmdir': {
      const p = rng.pick(emptyDirs)
      await fsp.rmdir(full(p))
      next.delete(p)
      return { tree: next, what: `rmdir ${p}` }
    }
    case 'symlink': {
      const p = join(rng.pick(parents), `l${i}`)
      const target = rng.chance(0.5) && files.length > 0 ? `../${rng.pick(files)}` : `nowhere-${i}-${rng.int(0, 999)}`
      await fsp.symlink(target, full(p))
      next.set(p, { type: 'symlink', mode: 0, target })
      return { tree: next, what: `symlink ${p} -> ${target}` }
    }
    case 'truncate': {
      const p = rng.pick(files)
      const old = tree.get(p)!
      const size = rng.int(0, old.content!.length + 200)
      await fsp.truncate(full(p), size)
      const content = Buffer.alloc(size)
      old.content!.copy(content, 0, 0, Math.min(size, old.content!.length))
      next.set(p, { ...old, content })
      return { tree: next, what: `truncate ${p} to ${size}` }
    }
    case 'chmod': {
      const p = rng.pick([...files, ...dirs])
      const old = tree.get(p)!
      const mode = rng.pick(old.type === 'dir' ? DIR_MODES : FILE_MODES)
      await fsp.chmod(full(p), mode)
      next.set(p, { ...old, mode })
      return { tree: next, what: `chmod ${p} ${mode.toString(8)}` }
    }
  }
  throw new Error(`unknown op ${op}`)
}

// ---------------------------------------------------------------------------------------------

t('the test proxy forwards in order, delays, stalls, tears a chunk on cut, refuses', timed(30_000, async () => {
  const received: Buffer[] = []
  let serverClosed = 0
  const echo = net.createServer((s) => {
    s.on('data', (b: Buffer) => { received.push(b); s.write(b) })
    s.on('error', () => {})
    s.on('close', () => { serverClosed++ })
  })
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
  const proxy = await startProxy(`127.0.0.1:${(echo.address() as net.AddressInfo).port}`)
  const clients: net.Socket[] = []
  try {
    const connect = async (): Promise<{ s: net.Socket, got: () => string, closed: () => boolean }> => {
      const [host, port] = proxy.address.split(':')
      const s = net.connect({ host, port: Number(port) })
      clients.push(s)
      let data = ''
      let closed = false
      s.on('data', (b: Buffer) => { data += b.toString('latin1') })
      s.on('error', () => {})
      s.on('close', () => { closed = true })
      await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
      return { s, got: () => data, closed: () => closed }
    }
    const c = await connect()
    const order = Array.from({ length: 200 }, (_, i) => `<${i}>`).join('')
    for (let i = 0; i < 200; i++) c.s.write(`<${i}>`)
    await waitFor(() => c.got() === order, { timeoutMs: 5000, what: 'the echo of 200 writes, in order' })
    assert.is(proxy.bytes.up, order.length)
    assert.is(proxy.bytes.down, order.length)

    proxy.delay(150)
    const t0 = Date.now()
    c.s.write('D')
    await waitFor(() => c.got().endsWith('D'), { timeoutMs: 5000, what: 'the delayed echo' })
    assert.ok(Date.now() - t0 >= 280, `a 150 ms delay each way holds a round trip >= 300 ms (took ${Date.now() - t0} ms)`)
    proxy.delay(0)

    proxy.stall()
    const before = proxy.bytes
    c.s.write('STALLED')
    await waitFor(() => proxy.bytes.upReceived >= before.upReceived + 7, { timeoutMs: 5000, what: 'the proxy to receive the stalled bytes' })
    assert.is(proxy.bytes.up, before.up, 'nothing forwarded while stalled')
    proxy.unstall()
    await waitFor(() => c.got().endsWith('STALLED'), { timeoutMs: 5000, what: 'the echo after unstall' })

    proxy.delay(10_000)
    const n = received.reduce((s, b) => s + b.length, 0)
    c.s.write('0123456789AB')
    await waitFor(() => proxy.bytes.upReceived >= before.upReceived + 19, { timeoutMs: 5000, what: 'the proxy to hold the chunk to tear' })
    assert.is(proxy.cut(), 1, 'cut() reports the one connection')
    await waitFor(() => c.closed(), { timeoutMs: 5000, what: 'the client to see the cut' })
    await waitFor(() => serverClosed === 1, { timeoutMs: 5000, what: 'the server to see the cut' })
    assert.is(Buffer.concat(received).subarray(n).toString(), '012345', 'the server got the first half of the torn chunk, then the cut')
    assert.equal(proxy.cuts, { total: 1, torn: 1 })
    proxy.delay(0)

    proxy.refuse(true)
    const r = await connect()
    await waitFor(() => r.closed(), { timeoutMs: 5000, what: 'a refused connection to be closed' })
    assert.is(proxy.forwarded, 1, 'the refused connection was not forwarded')
    proxy.refuse(false)
    const c2 = await connect()
    c2.s.write('again')
    await waitFor(() => c2.got() === 'again', { timeoutMs: 5000, what: 'the echo on a new connection' })
    assert.is(proxy.open, 1)

    await proxy.close()
    await waitFor(() => c2.closed(), { timeoutMs: 5000, what: 'close() to end open connections' })
    const [host, port] = proxy.address.split(':')
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect({ host, port: Number(port) })
      s.on('connect', () => { s.destroy(); resolve('connected') })
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    })
    assert.is(refused, 'ECONNREFUSED', 'a closed proxy no longer listens')
  } finally {
    for (const s of clients) s.destroy()
    await proxy.close()
    await new Promise<void>((resolve) => echo.close(() => resolve()))
  }
}))

t('the Secondary only ever shows a growing prefix of the Primary\'s updates (delays, stalls, mid-frame cuts)', isolated(120_000, async () => {
  const seed = process.env.WOF_SEED !== undefined ? Number(process.env.WOF_SEED) : (Date.now() ^ (process.pid << 8)) >>> 0
  console.log(`wof: seed ${seed} (replay with WOF_SEED=${seed})`)
  const wrng = new Rng(seed)          // the workload: reproducible from the seed alone
  const arng = new Rng(seed ^ 0x5bd1e995) // the disturbances
  let proxy: Proxy | undefined
  let pair: Pair | undefined
  const ctx = (): string => `(seed ${seed})`
  try {
    pair = await startPair({ via: async (addr) => { proxy = await startProxy(addr); return proxy.address } })
    const px = proxy!
    const pr = pair
    const proot = path.join(pr.primary.mount, 'w')
    const sroot = path.join(pr.secondary.mount, 'w')
    await fsp.mkdir(proot)
    await pr.caughtUp(30_000)
    const ps0 = await pr.primaryStatus()
    const base = Math.max(ps0.srl.newestSeq ?? 0, ps0.srl.appliedSeq) // the mkdir's seq: step k is seq base + k
    assert.ok(base >= 1, `the mkdir of the workload dir was logged (newestSeq ${String(ps0.srl.newestSeq)}, appliedSeq ${ps0.srl.appliedSeq})`)
    await waitFor(async () => (await fsp.readdir(pr.secondary.mount)).includes('w'), { timeoutMs: 10_000, what: 'the workload dir on the Secondary' })

    // The kernel sends RELEASE after close() returns, and libfuse turns an unlink or a rename
    // over a file it still counts open into a RENAME to .fuse_hidden and a later UNLINK: two
    // records for one step. So each step that opened a file waits until the Primary's daemon has
    // released it (status openFiles, on the control socket).
    const released = async (): Promise<void> => {
      await waitFor(async () => (await request(pr.primary.state, { cmd: 'status' }, 5000) as { openFiles: number }).openFiles === 0,
        { timeoutMs: 10_000, what: 'the Primary to release the file the step closed (status openFiles 0)', intervalMs: 2 })
    }
    const wl: Workload = { models: [new Map()], steps: [''], started: 0 }
    /** the least prefix length any observation so far allows */
    let floor = 0
    const observations: string[] = []
    const stats = { readdirs: 0, walks: 0, cuts: 0, connectionsCut: 0, walkRetries: 0 }
    const topNames = (tree: Tree): string => children(tree, '').sort().join('/')
    const topKeys: string[] = [topNames(wl.models[0])]

    const explain = (k: number): string => {
      const lo = Math.max(1, k - 3)
      return wl.steps.slice(lo, Math.min(wl.steps.length, k + 4)).map((s, j) => `  step ${lo + j} (seq ${base + lo + j}): ${s}`).join('\n')
    }

    const runSteps = async (n: number): Promise<void> => {
      for (let j = 0; j < n; j++) {
        const i = wl.models.length
        wl.started = i
        const { tree, what } = await step(wrng, proot, wl.models[i - 1], i, released)
        wl.models.push(tree)
        wl.steps.push(what)
        topKeys.push(topNames(tree))
      }
    }

    /** (a) one readdir of the workload dir on the Secondary: the names after some prefix k >= floor. */
    const sampleNames = async (): Promise<void> => {
      const names = (await fsp.readdir(sroot)).sort().join('/')
      const limit = wl.started // read after the readdir: no step issued later can show in it
      // the last step issued may still be in flight (and already replicated): wait for its model
      await waitFor(() => wl.models.length > limit, { timeoutMs: 30_000, what: `step ${limit} to complete on the Primary`, intervalMs: 1 })
      stats.readdirs++
      let k = floor
      while (k <= limit && topKeys[k] !== names) k++
      if (k > limit) {
        const any = topKeys.findIndex((key) => key === names)
        assert.unreachable(`readdir of the Secondary's workload dir matches no prefix >= ${floor} (steps issued: ${limit}) ${ctx()}\n` +
          `got: ${names}\nmodel[${floor}]: ${topKeys[floor]}\n` +
          (any < 0 ? 'it matches no prefix at all\n' : any < floor ? `it matches only the older prefix ${any}: the Secondary went back in time\n` : `it matches prefix ${any}, beyond the steps issued\n`) +
          `steps after the floor:\n${explain(floor + 1)}\nobservations so far:\n${observations.slice(-8).join('\n')}`)
      }
      if (k !== floor) observations.push(`readdir: prefix >= ${k}`)
      floor = k
    }

    const secStatus = async (): Promise<SecondaryStatus> => await pr.secondary.status()

    /** (b) stall the link, wait until the Secondary is quiescent, walk its whole tree: model[applied - base]. */
    const stallAndWalk = async (alsoCut: boolean): Promise<void> => {
      px.stall()
      try {
        if (alsoCut) {
          stats.cuts++
          stats.connectionsCut += px.cut()
        }
        for (let attempt = 0; ; attempt++) {
          let prev: SecondaryStatus | undefined
          const st = await waitFor(async () => {
            const s = await secStatus()
            const settled = s.receivedSeq === s.appliedSeq && prev !== undefined && prev.appliedSeq === s.appliedSeq && prev.receivedSeq === s.receivedSeq
            prev = s
            return settled ? s : undefined
          }, { timeoutMs: 20_000, what: 'the stalled Secondary to apply all it received (appliedSeq == receivedSeq, twice in a row)', intervalMs: 20 })
          const tree = await readTree(sroot)
          const after = await secStatus()
          if (after.appliedSeq !== st.appliedSeq || after.receivedSeq !== st.receivedSeq) {
            // bytes that were already in its socket arrived during the walk: the walk is not a snapshot
            stats.walkRetries++
            assert.ok(attempt < 5, `the stalled Secondary kept receiving (appliedSeq ${st.appliedSeq} -> ${after.appliedSeq}) ${ctx()}`)
            continue
          }
          stats.walks++
          const k = st.appliedSeq - base
          if (k <= wl.started) await waitFor(() => wl.models.length > k, { timeoutMs: 30_000, what: `step ${k} to complete on the Primary`, intervalMs: 1 })
          assert.ok(st.consistent, `a quiescent Secondary (appliedSeq ${st.appliedSeq}) reports consistent ${ctx()}`)
          assert.ok(k >= floor, `the Secondary applied up to seq ${st.appliedSeq} (step ${k}), but an earlier observation saw step >= ${floor}: it went back ${ctx()}\n${observations.slice(-8).join('\n')}`)
          assert.ok(k <= wl.started, `the Secondary applied seq ${st.appliedSeq} (step ${k}) but only ${wl.started} steps were issued after seq ${base} ${ctx()}`)
          if (!sameTree(tree, wl.models[k])) {
            const matches = wl.models.map((m, j) => (sameTree(tree, m) ? j : -1)).filter((j) => j >= 0)
            const pnow = await pr.primaryStatus()
            assert.unreachable(`the quiescent Secondary (appliedSeq ${st.appliedSeq} = step ${k}) is not the Primary's tree after step ${k} ${ctx()}\n` +
              `(steps issued ${wl.started}; Primary newestSeq ${String(pnow.srl.newestSeq)}, i.e. step ${(pnow.srl.newestSeq ?? 0) - base})\n` +
              `differences from model[${k}]:\n  ${diffTree(tree, wl.models[k]).slice(0, 20).join('\n  ')}\n` +
              `prefixes it does equal: ${matches.length > 0 ? matches.join(', ') : 'none'}\nsteps around ${k}:\n${explain(k)}\n` +
              `--- secondary daemon.log ---\n${await daemonLog(pr.secondary.state)}`)
          }
          observations.push(`walk: step ${k} (seq ${st.appliedSeq}, received ${st.receivedSeq}, ${st.connected ? 'connected' : 'not connected'}, ${wl.started} issued)`)
          floor = k
          return
        }
      } finally {
        px.unstall()
      }
    }

    /** (c) cut the link while bytes are held in the proxy, so some frame is torn. */
    const cutMidFrame = async (workloadDone: () => boolean): Promise<void> => {
      px.delay(arng.int(20, 60))
      const b = px.bytes
      // a moment when the proxy holds bytes it has not forwarded yet (or the round's steps are over)
      await waitFor(() => {
        const now = px.bytes
        return (now.upReceived > now.up && now.upReceived > b.upReceived) || workloadDone()
      }, { timeoutMs: 20_000, what: 'the proxy to hold some unforwarded bytes to tear, or the round to end' })
      stats.cuts++
      stats.connectionsCut += px.cut()
      observations.push(`cut (torn so far: ${px.cuts.torn})`)
    }

    // the plan: which disturbance each round gets, at least 10 walks and 3 cuts
    const plan = arng.shuffle([
      ...Array<string>(10).fill('walk'), 'walk+cut', 'walk+cut',
      ...Array<string>(4).fill('cut'), ...Array<string>(4).fill('names')
    ])
    const TOTAL = 320
    // split TOTAL steps into one run per round, each at least one step
    const cutsAt = new Set<number>()
    while (cutsAt.size < plan.length - 1) cutsAt.add(arng.int(1, TOTAL - 1))
    const bounds = [0, ...[...cutsAt].sort((a, b) => a - b), TOTAL]
    for (let round = 0; round < plan.length; round++) {
      const n = bounds[round + 1] - bounds[round]
      const kind = plan[round]
      if (kind === 'walk' || kind === 'walk+cut') {
        // let the link catch up first, so that each walk catches it somewhere new, mid-stream
        await waitFor(async () => {
          const s = await secStatus()
          return s.connected && s.appliedSeq >= base + wl.started
        }, { timeoutMs: 30_000, what: `the Secondary to be connected and apply step ${wl.started} (seq ${base + wl.started}) before round ${round}`, intervalMs: 50 })
          .catch(async (err: Error) => {
            throw new Error(`${err.message} ${ctx()}\n--- primary daemon.log ---\n${await daemonLog(pr.primary.state)}\n` +
              `--- secondary daemon.log ---\n${await daemonLog(pr.secondary.state)}\n--- proxy ---\n${px.events.slice(-30).join('\n')}`)
          })
      }
      px.delay(arng.pick([0, 0, 2, 5, 20, 50]))
      const startAt = wl.models.length - 1
      const stallAfter = startAt + arng.int(0, n)
      let stepsDone = false
      const steps = runSteps(n).finally(() => { stepsDone = true })
      const action = (async () => {
        switch (kind) {
          case 'walk':
          case 'walk+cut':
            await waitFor(() => wl.started >= stallAfter || stepsDone, { timeoutMs: 30_000, what: `step ${stallAfter} to be issued`, intervalMs: 1 })
            return await stallAndWalk(kind === 'walk+cut')
          case 'cut': return await cutMidFrame(() => stepsDone)
          case 'names': return undefined
        }
      })()
      let actionDone = false
      const act = action.finally(() => { actionDone = true })
      const sampler = (async () => {
        do {
          await sampleNames()
          // pacing only (not synchronisation): leave the daemons some CPU on a 2-core machine
          await new Promise((resolve) => setTimeout(resolve, 3))
        } while (!(stepsDone && actionDone))
      })()
      await Promise.all([steps, act, sampler])
    }
    const N = wl.models.length - 1
    assert.is(N, TOTAL, 'the workload ran every step')

    // the model itself: the Primary shows the final model, and logged exactly one record per step
    px.delay(0)
    const ptree = await readTree(proot)
    assert.equal(diffTree(ptree, wl.models[N]), [], `the Primary's tree is the model's ${ctx()}`)
    await pr.primary.quiesce(30_000)
    const psEnd = await pr.primaryStatus()
    const newest = Math.max(psEnd.srl.newestSeq ?? 0, psEnd.srl.appliedSeq)
    assert.is(newest - base, N, `test premise: each step is exactly one SRL record (seq ${base} + ${N} steps) ${ctx()}`)

    // and in the end the Secondary has it all
    await pr.caughtUp(60_000).catch(async (err: Error) => {
      throw new Error(`${err.message} ${ctx()}\nprimary status: ${JSON.stringify((await pr.primaryStatus()).rlinks)}\n` +
        `secondary status: ${JSON.stringify(await secStatus())}\n--- primary daemon.log ---\n${await daemonLog(pr.primary.state)}\n` +
        `--- secondary daemon.log ---\n${await daemonLog(pr.secondary.state)}`)
    })
    await sampleNames()
    assert.is((await fsp.readdir(sroot)).sort().join('/'), topKeys[N], 'a readdir of the caught-up Secondary shows the final names')
    const st = await secStatus()
    assert.is(st.appliedSeq, base + N, 'the Secondary applied every update')
    assert.is(st.receivedSeq, base + N, 'and received every update')
    assert.ok(st.consistent, 'the caught-up Secondary is consistent')
    assert.is(st.primary.srlId, psEnd.srlId, 'the Secondary follows this Primary')
    const stree = await readTree(sroot)
    assert.equal(diffTree(stree, wl.models[N]), [], `the caught-up Secondary is the final model ${ctx()}`)
    assert.equal(describeTree(stree), describeTree(wl.models[N]))

    const seen = new Set(observations.filter((o) => o.startsWith('readdir')).map((o) => o.split(' ')[3]))
    console.log(`wof: readdirs saw ${seen.size} distinct prefixes; walks:\n  ${observations.filter((o) => o.startsWith('walk') || o.startsWith('cut')).join('\n  ')}`)
    console.log(`wof: ${N} steps, ${stats.readdirs} readdir samples, ${stats.walks} quiescent walks (${stats.walkRetries} retried), ` +
      `${stats.cuts} cuts of ${stats.connectionsCut} connections (${px.cuts.torn} tore a chunk), ${px.forwarded} connections through the proxy`)
    assert.ok(stats.walks >= 10, `at least 10 quiescent walks (${stats.walks})`)
    assert.ok(stats.cuts >= 3 && stats.connectionsCut >= 3, `at least 3 cuts of a live link (${stats.connectionsCut} of ${stats.cuts})`)
    assert.ok(px.cuts.torn >= 1, `at least one cut tore a chunk in flight (${px.cuts.torn})`)
    assert.ok(px.forwarded >= 1 + stats.connectionsCut, `the Primary reconnected after every cut (${px.forwarded} connections, ${stats.connectionsCut} cut)`)

    if (process.env.WOF_VERBOSE !== undefined) {
      console.log(`--- primary daemon.log ---\n${await fsp.readFile(path.join(pr.primary.state, 'daemon.log'), 'utf8')}`)
      console.log(`--- secondary daemon.log ---\n${await fsp.readFile(path.join(pr.secondary.state, 'daemon.log'), 'utf8')}`)
      console.log(`--- proxy ---\n${px.events.join('\n')}`)
    }
    await withDeadline(pr.stop(), 90_000, 'the pair to stop')
    pair = undefined
  } finally {
    await closeAllProxies()
  }
}))

t('leaves no FUSE mounts, daemons or proxies behind', timed(60_000, async () => {
  const open = liveProxies().map((p) => `${p.address} -> ${p.target}`)
  await closeAllProxies()
  assert.equal(open, [], 'every proxy was closed by the test that started it')
  await assertCleanSlate()
}))

t.run()

// for replaying a workload by hand (WOF_SEED) without the pair
export { Rng, step, readTree, diffTree, type Tree }
