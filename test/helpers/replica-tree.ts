/**
 * Helpers for the replication tests (test/replication*.test.ts, test/sync-modes.test.ts):
 *
 *  - snapshotTree(): every path below a root with its type, mode, owner, size, nlink, inode,
 *    mtime/ctime in ns, content hash, link target and xattrs, taken in a child process (this file
 *    run as a script), so the test runner never makes a blocking call on a FUSE mount;
 *  - diffSnapshots(): what differs between two trees (the comparison rules are documented there);
 *  - a replication workload run as a child process (appends, fsyncs, creates, renames, unlinks);
 *  - a TCP proxy that delays the Secondary -> Primary direction, which makes "the write waited for
 *    the network ack" observable as write latency.
 *
 * Script use (compiled to dist/test/helpers/replica-tree.js):
 *   node replica-tree.js snapshot ROOT
 *       -> one JSON object {REL: Entry} ('.' is the root itself)
 *   node replica-tree.js workload NFILES CHUNK_BYTES FSYNC_EVERY STOPFILE [MAX_CHUNKS [PAUSE_MS]]
 *       cwd = a directory on a mount. Appends chunk j to file j % NFILES (chunkBytes() contents, one
 *       pwrite each; fsync every FSYNC_EVERY chunks of a file, printing "fsynced F I"); every 7th
 *       chunk also creates c/tmp-J, writes it, renames it to c/n-(J % 40) (over an existing one
 *       after the first 40), every 11th unlinks an older c/n-*, every 29th makes d/J; prints
 *       "wrote J" every 25 chunks, "done" when STOPFILE exists (checked before each chunk) or
 *       MAX_CHUNKS is reached, or "error CODE" and exit 1 on the first failure. PAUSE_MS (default 0)
 *       pauses after each chunk, to bound the rate (a throttle, not a synchronisation).
 */
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as net from 'net'
import * as path from 'path'
import { spawn } from 'child_process'
import { execOk, helperScript } from './util'
import { chunkBytes, chunkFileName } from './chunks'

export interface Entry {
  type: string
  /** st_mode & 07777, octal. */
  mode: string
  uid: number
  gid: number
  size: number
  nlink: number
  ino: string
  mtimeNs: string
  ctimeNs: string
  sha256?: string
  target?: string
  /** name -> value (hex), sorted by name. */
  xattrs: Record<string, string>
}

export type Snapshot = Record<string, Entry>

/** Snapshot of the tree below `root`, taken by a child process (see the header). */
export async function snapshotTree (root: string, timeoutMs = 120_000): Promise<Snapshot> {
  const r = await execOk(process.execPath, [helperScript('replica-tree'), 'snapshot', root], { timeoutMs })
  return JSON.parse(r.stdout) as Snapshot
}

export interface DiffOptions {
  /** Names of the two trees in messages. */
  a: string
  b: string
  /**
   * 'ns': mtimes must be equal to the nanosecond (two data directories);
   * 'us': equal after truncation to microseconds (a FUSE mount carries µs).
   */
  mtime: 'ns' | 'us'
  /** Relative paths (and everything below them) left out of the comparison. */
  ignore?: string[]
}

/**
 * Differences between two snapshots; empty when the trees are the same. Compared: the set of
 * paths; per path type, mode (07777), uid, gid, nlink, size (not for directories: a directory's
 * st_size is the filesystem's record of its entries' history, not content), sha256 of regular
 * files, symlink targets, xattr names and values, and mtime (files, directories, symlinks, FIFOs).
 * atime and ctime are NOT compared: atime changes on every read and is not replicated, and ctime
 * cannot be set by any system call, so a replica necessarily has its own.
 * Hard-link structure: within each tree, the groups of non-directory paths sharing an inode
 * must be the same groups of paths.
 */
export function diffSnapshots (sa: Snapshot, sb: Snapshot, opts: DiffOptions): string[] {
  const ign = opts.ignore ?? []
  const skip = (p: string): boolean => ign.some((i) => p === i || p.startsWith(i + '/'))
  const ka = Object.keys(sa).filter((p) => !skip(p))
  const kb = Object.keys(sb).filter((p) => !skip(p))
  const setB = new Set(kb)
  const setA = new Set(ka)
  const diffs: string[] = []
  for (const p of ka) if (!setB.has(p)) diffs.push(`${p}: only in ${opts.a} (${sa[p].type})`)
  for (const p of kb) if (!setA.has(p)) diffs.push(`${p}: only in ${opts.b} (${sb[p].type})`)
  for (const p of ka.sort()) {
    if (!setB.has(p)) continue
    const x = sa[p]
    const y = sb[p]
    const fields: Array<keyof Entry> = ['type', 'mode', 'uid', 'gid', 'nlink']
    if (x.type !== 'dir') fields.push('size')
    for (const f of fields) {
      if (x[f] !== y[f]) diffs.push(`${p}: ${f} ${String(x[f])} (${opts.a}) != ${String(y[f])} (${opts.b})`)
    }
    if (x.sha256 !== y.sha256) diffs.push(`${p}: content differs (sha256 ${String(x.sha256).slice(0, 12)} in ${opts.a}, ${String(y.sha256).slice(0, 12)} in ${opts.b})`)
    if (x.target !== y.target) diffs.push(`${p}: symlink target ${String(x.target)} (${opts.a}) != ${String(y.target)} (${opts.b})`)
    const xa = JSON.stringify(x.xattrs)
    const ya = JSON.stringify(y.xattrs)
    if (xa !== ya) diffs.push(`${p}: xattrs ${xa} (${opts.a}) != ${ya} (${opts.b})`)
    const mx = BigInt(x.mtimeNs)
    const my = BigInt(y.mtimeNs)
    const same = opts.mtime === 'ns' ? mx === my : mx / 1000n === my / 1000n
    if (!same) diffs.push(`${p}: mtime ${fmtNs(mx)} (${opts.a}) != ${fmtNs(my)} (${opts.b})`)
  }
  const ga = linkGroups(sa, skip)
  const gb = linkGroups(sb, skip)
  for (const g of ga) if (!gb.has(g)) diffs.push(`hard-link group [${g}] in ${opts.a} is not a group in ${opts.b}`)
  for (const g of gb) if (!ga.has(g)) diffs.push(`hard-link group [${g}] in ${opts.b} is not a group in ${opts.a}`)
  return diffs
}

function fmtNs (ns: bigint): string {
  const s = ns / 1_000_000_000n
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0')
  return `${new Date(Number(s) * 1000).toISOString().replace('.000Z', '')}.${frac}Z`
}

/** Groups (of two or more paths) of non-directories sharing an inode, each as "p1, p2, ...". */
export function linkGroups (s: Snapshot, skip: (p: string) => boolean = () => false): Set<string> {
  const byIno = new Map<string, string[]>()
  for (const [p, e] of Object.entries(s)) {
    if (e.type === 'dir' || skip(p)) continue
    const g = byIno.get(e.ino) ?? []
    g.push(p)
    byIno.set(e.ino, g)
  }
  const res = new Set<string>()
  for (const g of byIno.values()) if (g.length > 1) res.add(g.sort().join(', '))
  return res
}

/** Throws with the first differences (and their count) unless `diffs` is empty. */
export function assertNoDiffs (diffs: string[], what: string): void {
  if (diffs.length === 0) return
  const shown = diffs.slice(0, 40).join('\n  ')
  throw new Error(`${what}: ${diffs.length} difference(s):\n  ${shown}${diffs.length > 40 ? '\n  ...' : ''}`)
}

/** Snapshot entries whose ctime changed between two snapshots of the same tree (paths in both). */
export function ctimeChanges (before: Snapshot, after: Snapshot): string[] {
  const res: string[] = []
  for (const [p, e] of Object.entries(before)) {
    const f = after[p]
    if (f !== undefined && f.ctimeNs !== e.ctimeNs) res.push(`${p}: ctime ${fmtNs(BigInt(e.ctimeNs))} -> ${fmtNs(BigInt(f.ctimeNs))}`)
  }
  return res
}

// ---------------------------------------------------------------------------------------------
// The workload child process, from the test's side.

export interface Workload {
  lines: string[]
  exited: Promise<number | null>
  /** Whether the process has exited. */
  done(): boolean
  /** Highest J of "wrote J" so far (-1 before the first). */
  progress(): number
  kill(): void
  /** Asks it to stop (creates the stop file) and waits for its exit code. */
  stop(timeoutMs?: number): Promise<number | null>
}

export function startWorkload (cwd: string, stopFile: string, o: { nfiles?: number, chunk?: number, fsyncEvery?: number, maxChunks?: number, pauseMs?: number } = {}): Workload {
  const args = [helperScript('replica-tree'), 'workload', String(o.nfiles ?? 3), String(o.chunk ?? 4096), String(o.fsyncEvery ?? 4), stopFile, String(o.maxChunks ?? 1_000_000), String(o.pauseMs ?? 0)]
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let partial = ''
  let exitedFlag = false
  let wrote = -1
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString()
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const l of parts) {
      lines.push(l)
      const m = /^wrote (\d+)$/.exec(l)
      if (m !== null) wrote = Number(m[1])
    }
  })
  child.stderr.on('data', (b: Buffer) => lines.push(`stderr: ${b.toString().trim()}`))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    exitedFlag = true
    if (partial !== '') lines.push(partial)
    resolve(code)
  }))
  return {
    lines,
    exited,
    done: () => exitedFlag,
    progress: () => wrote,
    kill: () => { if (!exitedFlag) child.kill('SIGKILL') },
    async stop (timeoutMs = 60_000) {
      fs.writeFileSync(stopFile, 'stop')
      let timer: NodeJS.Timeout | undefined
      const t = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`workload did not stop within ${timeoutMs} ms; last lines: ${lines.slice(-5).join(' | ')}`)), timeoutMs)
      })
      try {
        return await Promise.race([exited, t])
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

/** Number of whole chunks in each workload file under `dir`; throws if a file is not an exact prefix. */
export function checkChunkPrefixes (dir: string, nfiles: number, chunk: number): number[] {
  const counts: number[] = []
  for (let f = 0; f < nfiles; f++) {
    const buf = fs.readFileSync(path.join(dir, chunkFileName(f)))
    if (buf.length % chunk !== 0) throw new Error(`${dir}/${chunkFileName(f)} is ${buf.length} bytes: not a whole number of ${chunk}-byte chunks`)
    const k = buf.length / chunk
    for (let i = 0; i < k; i++) {
      if (!buf.subarray(i * chunk, (i + 1) * chunk).equals(chunkBytes(f, i, chunk))) {
        throw new Error(`${dir}/${chunkFileName(f)} chunk ${i} of ${k} is wrong (a hole or a misplaced write)`)
      }
    }
    counts.push(k)
  }
  return counts
}

// ---------------------------------------------------------------------------------------------
// A delaying TCP proxy (in the test process: never make blocking calls on a mount while one runs).

export interface DelayProxy {
  /** HOST:PORT to give the Primary. */
  address: string
  /** Connections accepted so far. */
  accepted(): number
  close(): Promise<void>
}

const liveProxies = new Set<DelayProxy>()

/**
 * Listens on 127.0.0.1:0 and forwards each connection to `target`; bytes from the target back to
 * the client are delayed by `delayMs`, bytes from the client to the target by `forwardDelayMs`
 * (default 0: at once); order is kept. When either side closes, bytes still being delayed are
 * dropped (in flight on a network that went away).
 */
export async function startDelayProxy (target: string, delayMs: number, forwardDelayMs = 0): Promise<DelayProxy> {
  const i = target.lastIndexOf(':')
  const host = target.slice(0, i)
  const port = Number(target.slice(i + 1))
  const sockets = new Set<net.Socket>()
  let accepted = 0
  const server = net.createServer((client) => {
    accepted++
    sockets.add(client)
    const up = net.connect({ host, port })
    sockets.add(up)
    let closed = false
    const closeBoth = (): void => {
      if (closed) return
      closed = true
      client.destroy()
      up.destroy()
      sockets.delete(client)
      sockets.delete(up)
    }
    let gotData = false
    client.on('data', (b) => {
      if (forwardDelayMs === 0) { if (!closed) up.write(b) } else setTimeout(() => { if (!closed) up.write(b) }, forwardDelayMs)
    })
    up.on('data', (b) => {
      gotData = true
      setTimeout(() => { if (!closed) client.write(b) }, delayMs)
    })
    // A close from the Secondary's side reaches the Primary after the data before it; a target
    // that refused the connection (nothing received) is passed on at once.
    const upGone = (): void => { if (gotData) setTimeout(closeBoth, delayMs); else closeBoth() }
    up.on('close', upGone)
    up.on('error', upGone)
    client.on('close', closeBoth)
    client.on('error', closeBoth)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const addr = server.address() as net.AddressInfo
  const proxy: DelayProxy = {
    address: `127.0.0.1:${addr.port}`,
    accepted: () => accepted,
    async close () {
      liveProxies.delete(proxy)
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  liveProxies.add(proxy)
  return proxy
}

/** Closes every proxy still open (for after hooks). */
export async function closeProxies (): Promise<void> {
  for (const p of [...liveProxies]) await p.close()
}

// ---------------------------------------------------------------------------------------------
// The varied workload of test/replication.test.ts, run from the test process (async calls only).

export const UID = 1234
export const GID = 5678
/** 2001-02-03T04:05:06.123456789Z; through FUSE (µs) it lands as ...06.123456000 */
export const T1 = '@981173106.123456789'
export const T1_NS = 981173106123456000n
export const T2 = '@1286705410.987654321'
export const T3 = '@946684799.5'

async function xattrTool (...args: string[]): Promise<void> {
  const r = await execOk(process.execPath, [helperScript('xattr-tool'), ...args], { timeoutMs: 30_000 })
  const res = JSON.parse(r.stdout) as { ok?: boolean, error?: string }
  if (res.ok !== true) throw new Error(`xattr-tool ${args.join(' ')}: ${r.stdout}`)
}

/**
 * On `mount` (a Primary's): untar /usr/include/linux into tree/ (a tarball made in `scratch`),
 * then renames over existing files and directories, deletes, truncates (grow, shrink, to zero,
 * sparse), a write in the middle, hard links (made, moved, broken by rename over), symlinks
 * (relative, absolute, dangling, to a directory, lchown'd), FIFOs, xattrs (binary, empty,
 * replaced, removed, on a directory), chmod (setuid, setgid, sticky), chown to other ids, a
 * sqlite3 database with `sqlTxns` transactions, and utimes (touch -d, touch -m, touch -h) last.
 * Returns the tarball's top-level files and directories (as paths relative to `mount`), sorted.
 */
export async function variedWorkload (mount: string, scratch: string, sqlTxns: number): Promise<{ files: string[], dirs: string[] }> {
  const pm = (rel: string): string => path.join(mount, rel)
  const fsp = fs.promises
  const tarball = path.join(scratch, 'tree.tar')
  await execOk('tar', ['-cf', tarball, '-C', '/usr/include', 'linux'], { timeoutMs: 60_000 })
  await fsp.mkdir(pm('tree'))
  await execOk('tar', ['-xf', tarball, '-C', pm('tree')], { timeoutMs: 120_000 })
  const L = 'tree/linux'
  const ents = await fsp.readdir(pm(L), { withFileTypes: true })
  const files = ents.filter((e) => e.isFile()).map((e) => `${L}/${e.name}`).sort()
  const dirs = ents.filter((e) => e.isDirectory()).map((e) => `${L}/${e.name}`).sort()
  if (files.length < 300 || dirs.length < 6) throw new Error(`/usr/include/linux is too small for this workload: ${files.length} files, ${dirs.length} directories`)

  // renames: file over an existing file, directory over an existing empty directory, across parents
  await fsp.mkdir(pm('other'))
  await fsp.writeFile(pm('other/x'), 'to be replaced\n')
  await fsp.rename(pm(files[0]), pm(files[1]))
  await fsp.mkdir(pm('empty-target'))
  await fsp.rename(pm(dirs[0]), pm('empty-target'))
  await fsp.rename(pm(dirs[1]), pm('moved-dir'))
  await fsp.rename(pm(files[2]), pm('other/x'))
  // deletes
  await fsp.rm(pm(dirs[2]), { recursive: true })
  await fsp.unlink(pm(files[3]))
  await fsp.unlink(pm(files[4]))
  // truncates: grow (a sparse tail), shrink, to zero; a grown fresh file written in the middle
  const s5 = (await fsp.stat(pm(files[5]))).size
  await fsp.truncate(pm(files[5]), s5 + 10_000)
  await fsp.truncate(pm(files[6]), 100)
  await fsp.truncate(pm(files[7]), 0)
  await fsp.writeFile(pm('sparse.bin'), '')
  await fsp.truncate(pm('sparse.bin'), 1 << 20)
  for (const [rel, pos, text] of [['sparse.bin', 500_000, 'in the middle'], [files[8], 10, 'PATCHED']] as const) {
    const fh = await fsp.open(pm(rel), 'r+')
    try {
      await fh.write(Buffer.from(text), 0, text.length, pos)
    } finally {
      await fh.close()
    }
  }
  // hard links
  await fsp.mkdir(pm('hl'))
  await fsp.writeFile(pm('hl/orig'), 'hard link content\n')
  await fsp.link(pm('hl/orig'), pm('hl/two'))
  await fsp.link(pm('hl/orig'), pm('other/three'))
  await fsp.writeFile(pm('hl/a'), 'a')
  await fsp.link(pm('hl/a'), pm('hl/a2'))
  await fsp.unlink(pm('hl/a'))
  await fsp.writeFile(pm('hl/b'), 'b')
  await fsp.link(pm('hl/b'), pm('hl/b2'))
  await fsp.rename(pm('hl/b2'), pm('hl/b3'))
  await fsp.writeFile(pm('hl/c'), 'c')
  await fsp.link(pm('hl/c'), pm('hl/c2'))
  await fsp.writeFile(pm('hl/repl'), 'replacement')
  await fsp.rename(pm('hl/repl'), pm('hl/c2'))
  await fsp.link(pm(files[9]), pm('hl/from-tar'))
  // symlinks
  await fsp.symlink(`linux/${path.basename(files[10])}`, pm('tree/rel-link'))
  await fsp.symlink('/etc/hostname', pm('abs-link'))
  await fsp.symlink('does/not/exist', pm('dangling'))
  await fsp.symlink('tree/linux', pm('dir-link'))
  await fsp.lchown(pm('dangling'), 4321, 8765)
  // FIFOs
  await execOk('mkfifo', ['-m', '0640', pm('fifo1'), pm('tree/fifo2')])
  await fsp.chown(pm('fifo1'), UID, GID)
  // xattrs (binary values, an empty one, a replaced one, a removed one, on a directory)
  await xattrTool('set', pm('hl/orig'), 'user.one', '00ff10')
  await xattrTool('set', pm('hl/orig'), 'user.one', 'cafe', 'replace')
  await xattrTool('set', pm('tree'), 'user.dir', '616263')
  await xattrTool('set', pm(files[11]), 'user.gone', '41')
  await xattrTool('set', pm(files[11]), 'user.kept', '')
  await xattrTool('remove', pm(files[11]), 'user.gone')
  // chmod, chown (setuid after chown, which clears it), setgid and sticky directories
  await fsp.chmod(pm(files[12]), 0o600)
  await fsp.writeFile(pm('suid'), '#!/bin/sh\n')
  await fsp.chown(pm('suid'), UID, GID)
  await fsp.chmod(pm('suid'), 0o4755)
  await fsp.mkdir(pm('sticky'))
  await fsp.chmod(pm('sticky'), 0o1777)
  await fsp.mkdir(pm('private'))
  await fsp.chmod(pm('private'), 0o700)
  await fsp.mkdir(pm('sgid'))
  await fsp.chown(pm('sgid'), 0, 4321)
  await fsp.chmod(pm('sgid'), 0o2775)
  await fsp.writeFile(pm('sgid/inherits'), 'group from the directory')
  await fsp.chown(pm(files[13]), UID, GID)
  await fsp.chown(pm(dirs[3]), 4321, 4321)
  // sqlite3: transactions (a journal file created and deleted each time)
  await fsp.mkdir(pm('db'))
  const lines = ['CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);']
  for (let i = 0; i < sqlTxns; i++) lines.push(`BEGIN; INSERT INTO t(v) VALUES('row ${i} ${'x'.repeat(i % 300)}'); COMMIT;`)
  lines.push('BEGIN; DELETE FROM t WHERE id % 10 = 0; COMMIT;', 'PRAGMA integrity_check;')
  const sq = await execOk('sqlite3', ['-bail', pm('db/test.db')], { input: lines.join('\n') + '\n', timeoutMs: 120_000 })
  if (sq.stdout.trim() !== 'ok') throw new Error(`sqlite3 on the Primary mount: integrity_check said ${sq.stdout}`)
  // utimes last, so nothing after them moves these mtimes
  await execOk('touch', ['-d', T1, pm(files[14])])
  await execOk('touch', ['-m', '-d', T2, pm(files[15])])
  await execOk('touch', ['-h', '-d', T3, pm('dir-link')])
  await execOk('touch', ['-h', '-m', '-d', T2, pm('fifo1')])
  await execOk('touch', ['-m', '-d', T1, pm(dirs[4])])
  await execOk('touch', ['-d', T3, pm('hl')])
  return { files, dirs }
}

// ---------------------------------------------------------------------------------------------
// Script side.

function typeOf (st: fs.BigIntStats): string {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  if (st.isCharacterDevice()) return 'chardev'
  if (st.isBlockDevice()) return 'blockdev'
  return 'unknown'
}

function snapshotMain (root: string): void {
  // Loaded here only: the test runner imports this module and must not load the addon.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { sys } = require('../../src/native') as typeof import('../../src/native')
  const { isInternalXattr } = require('../../src/format/data-cursor') as typeof import('../../src/format/data-cursor')
  const out: Snapshot = {}
  const visit = (rel: string): void => {
    const full = rel === '.' ? root : path.join(root, rel)
    const st = fs.lstatSync(full, { bigint: true })
    const type = typeOf(st)
    const xattrs: Record<string, string> = {}
    // replicafs's own (the data cursor on a data directory's root) is not part of the tree
    for (const n of sys.llistxattr(full).filter((x) => !isInternalXattr(x)).sort()) xattrs[n] = sys.lgetxattr(full, n).toString('hex')
    const e: Entry = {
      type,
      mode: (Number(st.mode) & 0o7777).toString(8),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      nlink: Number(st.nlink),
      ino: st.ino.toString(),
      mtimeNs: st.mtimeNs.toString(),
      ctimeNs: st.ctimeNs.toString(),
      xattrs
    }
    if (type === 'file') e.sha256 = crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex')
    if (type === 'symlink') e.target = fs.readlinkSync(full)
    out[rel] = e
    if (type === 'dir') {
      for (const name of fs.readdirSync(full).sort()) visit(rel === '.' ? name : `${rel}/${name}`)
    }
  }
  visit('.')
  process.stdout.write(JSON.stringify(out))
}

function workloadMain (argv: string[]): void {
  const [nfiles, chunk, fsyncEvery] = argv.slice(0, 3).map(Number)
  const stopFile = argv[3]
  const maxChunks = Number(argv[4] ?? 1_000_000)
  const pauseMs = Number(argv[5] ?? 0)
  const pause = new Int32Array(new SharedArrayBuffer(4))
  const fds: number[] = []
  try {
    fs.mkdirSync('c', { recursive: true })
    fs.mkdirSync('d', { recursive: true })
    for (let f = 0; f < nfiles; f++) fds.push(fs.openSync(chunkFileName(f), 'w', 0o644))
    for (let j = 0; j < maxChunks; j++) {
      if (fs.existsSync(stopFile)) break
      const f = j % nfiles
      const i = Math.floor(j / nfiles)
      const buf = chunkBytes(f, i, chunk)
      const n = fs.writeSync(fds[f], buf, 0, buf.length, i * chunk)
      if (n !== buf.length) throw Object.assign(new Error('short write'), { code: 'SHORT_WRITE' })
      if ((i + 1) % fsyncEvery === 0) {
        fs.fsyncSync(fds[f])
        process.stdout.write(`fsynced ${f} ${i}\n`)
      }
      if (j % 7 === 0) {
        const tmp = `c/tmp-${j}`
        fs.writeFileSync(tmp, `entry ${j}\n`.repeat(1 + (j % 13)))
        fs.renameSync(tmp, `c/n-${j % 40}`)
      }
      if (j % 11 === 0 && j > 0) {
        try { fs.unlinkSync(`c/n-${(j * 3) % 40}`) } catch (err) { if ((err as { code?: string }).code !== 'ENOENT') throw err }
      }
      if (j % 29 === 0) fs.mkdirSync(`d/${j}`)
      if (j % 25 === 0) process.stdout.write(`wrote ${j}\n`)
      if (pauseMs > 0) Atomics.wait(pause, 0, 0, pauseMs)
    }
    for (const fd of fds) fs.closeSync(fd)
    process.stdout.write('done\n')
  } catch (err) {
    process.stdout.write(`error ${(err as { code?: string }).code ?? String(err)}\n`)
    process.exitCode = 1
  }
}

if (require.main === module) {
  const [cmd, ...rest] = process.argv.slice(2)
  if (cmd === 'snapshot') snapshotMain(path.resolve(rest[0]))
  else if (cmd === 'workload') workloadMain(rest)
  else {
    console.error(`usage: replica-tree.js snapshot ROOT | workload NFILES CHUNK FSYNC_EVERY STOPFILE [MAX]`)
    process.exit(2)
  }
}
