/**
 * Helpers for test/snapshots.test.ts (issue 5: `replicafs snapshot create|list|delete|restore`,
 * MOUNT/.snapshots/NAME/):
 *
 *  - the `replicafs snapshot ...` CLI, parsed, and the one-line-error check;
 *  - buildTree() and mutate(): a varied tree made through a mount (files of one to many 64 KiB
 *    chunks, a sparse file, nested directories, symlinks, hard links, FIFOs, xattrs, chmod/chown,
 *    utimes, a sqlite3 database), then rounds of heavy changes to it (partial overwrites, appends,
 *    truncates both ways, renames of files and directories over existing ones, deletes, rm -rf of
 *    a subtree, chmod/chown/touch, setxattr/removexattr, new files, links broken and made);
 *  - child processes that work on a mount: an overwriter (partial overwrites of a given list of
 *    files, to be killed -9 with its daemon) and a fast creator of many empty files.
 *
 * Trees are captured and compared with test/helpers/replica-tree.ts (snapshotTree in a child
 * process: type, mode, owner, size, nlink, sha256, mtime in ns, symlink target, xattrs, hard-link
 * groups; diffSnapshots with mtime 'us' through FUSE).
 *
 * Script use (compiled to dist/test/helpers/snapshots.js):
 *   node snapshots.js overwrite ROOT LISTFILE STOPFILE
 *       LISTFILE: JSON array of file paths relative to ROOT. Step j: pwrite 4 KiB of fresh bytes
 *       into file j % N at a chunk-sized stride (so successive writes to a file hit new 64 KiB
 *       chunks), every 9th step also appends, every 13th truncates a file to half and grows it
 *       back. Prints "wrote J" after every step, exits 0 ("done") when STOPFILE exists, "error
 *       CODE" and exit 1 on a failure (ENOTCONN once its daemon is killed).
 *   node snapshots.js mkmany DIR FIRST END PER_DIR
 *       Creates directories DIR/dFIRST .. DIR/d(END-1), each with PER_DIR empty files f0.., with
 *       open(O_CREAT)+close; prints "done N".
 */
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { spawn } from 'child_process'
import * as assert from 'uvu/assert'
import { cli, daemonLog } from './primary'
import { execOk, helperScript, describeFailure, type ExecResult } from './util'
import { chunkBytes, chunkFileName } from './chunks'

// ---------------------------------------------------------------------------------------------
// CLI

export interface SnapInfo { name: string, id?: string, createdAt: string, seq: number, bytes: number, valid: boolean, error: string | null }

/** `replicafs snapshot OP ...args --state STATE` (never throws for a non-zero exit). */
export function snap (state: string, op: string, args: string[] = [], timeoutMs = 120_000): Promise<ExecResult> {
  return cli(['snapshot', op, ...args, '--state', state], { timeoutMs })
}

async function snapOk (state: string, op: string, args: string[] = [], timeoutMs = 120_000): Promise<ExecResult> {
  const r = await snap(state, op, args, timeoutMs)
  if (r.code !== 0) throw new Error(`${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(state)}`)
  return r
}

/** `snapshot create NAME --json`, parsed, with the command's wall time in ms. */
export async function snapCreate (state: string, name: string): Promise<SnapInfo & { ms: number }> {
  const t0 = process.hrtime.bigint()
  const r = await snapOk(state, 'create', [name, '--json'])
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  let info: SnapInfo
  try { info = JSON.parse(r.stdout) as SnapInfo } catch { throw new Error(`snapshot create --json printed something that is not JSON: ${r.stdout}`) }
  assert.is(info.name, name, `create --json names the snapshot: ${r.stdout}`)
  assert.ok(Number.isSafeInteger(info.seq) && info.seq >= 0, `create --json has a sequence number: ${r.stdout}`)
  return { ...info, ms }
}

/** `snapshot list --json`, parsed and checked for the documented fields. */
export async function snapList (state: string): Promise<SnapInfo[]> {
  const r = await snapOk(state, 'list', ['--json'])
  let list: SnapInfo[]
  try { list = JSON.parse(r.stdout) as SnapInfo[] } catch { throw new Error(`snapshot list --json printed something that is not JSON: ${r.stdout}`) }
  assert.ok(Array.isArray(list), `snapshot list --json is an array: ${r.stdout}`)
  for (const s of list) {
    assert.type(s.name, 'string', `list entry has a name: ${JSON.stringify(s)}`)
    assert.ok(!Number.isNaN(Date.parse(s.createdAt)), `list entry has an ISO createdAt: ${JSON.stringify(s)}`)
    assert.ok(Number.isSafeInteger(s.seq), `list entry has a seq: ${JSON.stringify(s)}`)
    assert.ok(Number.isSafeInteger(s.bytes) && s.bytes >= 0, `list entry has bytes: ${JSON.stringify(s)}`)
    assert.type(s.valid, 'boolean', `list entry has valid: ${JSON.stringify(s)}`)
    assert.ok(s.error === null || typeof s.error === 'string', `list entry has error: ${JSON.stringify(s)}`)
  }
  return list
}

export async function snapDelete (state: string, name: string): Promise<void> {
  await snapOk(state, 'delete', [name])
}

export { assertOneLineError } from './util'

// ---------------------------------------------------------------------------------------------
// the varied tree and its changes (run from the test process: async calls only)

export const UID = 1234
export const GID = 5678
/** Through FUSE (µs) these land as ...123456000 etc. */
export const T1 = '@981173106.123456789'
export const T2 = '@1286705410.987654321'
export const T3 = '@946684799.5'

const KiB = 1024
const MiB = 1024 * 1024

async function xattr (...args: string[]): Promise<{ ok?: boolean, value?: string, names?: string[], error?: string }> {
  const r = await execOk(process.execPath, [helperScript('xattr-tool'), ...args], { timeoutMs: 30_000 })
  return JSON.parse(r.stdout)
}

async function setx (p: string, name: string, hex: string): Promise<void> {
  const r = await xattr('set', p, name, hex)
  if (r.ok !== true) throw new Error(`setxattr ${p} ${name}: ${JSON.stringify(r)}`)
}

async function rmx (p: string, name: string): Promise<void> {
  const r = await xattr('remove', p, name)
  if (r.ok !== true) throw new Error(`removexattr ${p} ${name}: ${JSON.stringify(r)}`)
}

/** setxattr expected to fail: returns the error code (or 'succeeded'). */
export async function trySetXattr (p: string, name: string, hex: string): Promise<string> {
  const r = await xattr('set', p, name, hex)
  return r.ok === true ? 'succeeded' : String(r.error)
}

async function pwrite (p: string, pos: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(p, 'r+')
  try {
    await fh.write(data, 0, data.length, pos)
  } finally {
    await fh.close()
  }
}

function content (i: number, bytes: number): Buffer {
  const line = Buffer.from(`line of file ${i}: ${'abcdefghij'.repeat(i % 7)}\n`)
  const out = Buffer.alloc(bytes)
  for (let off = 0; off < bytes; off += line.length) line.copy(out, off)
  return out
}

async function sqlite (db: string, first: number, txns: number): Promise<void> {
  const lines: string[] = []
  if (first === 0) lines.push('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);')
  for (let i = first; i < first + txns; i++) lines.push(`BEGIN; INSERT INTO t(v) VALUES('row ${i} ${'x'.repeat(i % 200)}'); COMMIT;`)
  lines.push(`BEGIN; DELETE FROM t WHERE id % 7 = ${first % 7}; COMMIT;`, 'PRAGMA integrity_check;')
  const r = await execOk('sqlite3', ['-bail', db], { input: lines.join('\n') + '\n', timeoutMs: 120_000 })
  if (r.stdout.trim() !== 'ok') throw new Error(`sqlite3 ${db}: integrity_check said ${r.stdout}`)
}

/** Sizes of the small files: 0 bytes to a few chunks, some at chunk boundaries. */
function sizeOf (i: number): number {
  const sizes = [0, 1, 100, 4 * KiB, 64 * KiB, 64 * KiB + 1, 130 * KiB, 7 * KiB, 200 * KiB, 33]
  return sizes[(i + Math.floor(i / 10)) % sizes.length]
}

const DIRS = ['src', 'src/a', 'src/a/b', 'src/a/b/c', 'src/x', 'src/y', 'src/z', 'src/z/deep', 'docs', 'empty-dir', 'victim', 'victim/v1', 'victim/v1/v2', 'links', 'db']

/**
 * Builds the varied tree under `m` (a Primary's mount). Returns the names of the regular files
 * it wrote, relative to `m`.
 */
export async function buildTree (m: string): Promise<string[]> {
  const pm = (rel: string): string => path.join(m, rel)
  const files: string[] = []
  for (const d of DIRS) await fsp.mkdir(pm(d))
  const homes = ['src/a', 'src/a/b', 'src/a/b/c', 'src/x', 'src/y', 'src/z/deep', 'docs', 'victim', 'victim/v1', 'victim/v1/v2']
  for (let i = 0; i < 60; i++) {
    const rel = `${homes[i % homes.length]}/file${i}.txt`
    await fsp.writeFile(pm(rel), content(i, sizeOf(i)))
    files.push(rel)
  }
  // a few MiB of random data (many chunks), a medium one, a sparse one written in the middle
  await fsp.writeFile(pm('big.bin'), crypto.randomBytes(5 * MiB + 12345))
  await fsp.writeFile(pm('medium.bin'), crypto.randomBytes(300 * KiB))
  await fsp.writeFile(pm('sparse.bin'), '')
  await fsp.truncate(pm('sparse.bin'), 2 * MiB)
  await pwrite(pm('sparse.bin'), 1 * MiB + 100, Buffer.from('in the middle of a hole'))
  await fsp.writeFile(pm('empty.txt'), '')
  files.push('big.bin', 'medium.bin', 'sparse.bin', 'empty.txt')
  // hard links: a group of three across directories, a pair
  await fsp.writeFile(pm('links/orig'), 'hard link content\n'.repeat(100))
  await fsp.link(pm('links/orig'), pm('links/two'))
  await fsp.link(pm('links/orig'), pm('src/x/three'))
  await fsp.writeFile(pm('links/pair1'), 'pair\n')
  await fsp.link(pm('links/pair1'), pm('links/pair2'))
  await fsp.link(pm('src/a/file0.txt'), pm('docs/file0-link'))
  // symlinks: relative, absolute, dangling (lchown'd), to a directory
  await fsp.symlink('../src/a/file10.txt', pm('links/rel'))
  await fsp.symlink('/etc/hostname', pm('links/abs'))
  await fsp.symlink('does/not/exist', pm('links/dangling'))
  await fsp.symlink('../src', pm('links/dir'))
  await fsp.lchown(pm('links/dangling'), 4321, 8765)
  // FIFOs
  await execOk('mkfifo', ['-m', '0640', pm('fifo'), pm('src/y/fifo2')])
  await fsp.chown(pm('fifo'), UID, GID)
  // xattrs: binary, empty, on a directory, on a hard-linked inode, replaced
  await setx(pm('src/a/file10.txt'), 'user.one', '00ff10')
  await setx(pm('src/a/file20.txt'), 'user.empty', '')
  await setx(pm('src'), 'user.dir', '616263')
  await setx(pm('links/orig'), 'user.hl', 'cafe')
  await setx(pm('big.bin'), 'user.big', Buffer.from('a'.repeat(300)).toString('hex'))
  await setx(pm('big.bin'), 'user.big2', '01')
  // chmod, chown, setuid, sticky, private and setgid directories
  await fsp.chmod(pm('src/a/file30.txt'), 0o600)
  await fsp.writeFile(pm('suid'), '#!/bin/sh\n')
  await fsp.chown(pm('suid'), UID, GID)
  await fsp.chmod(pm('suid'), 0o4755)
  await fsp.mkdir(pm('sticky'))
  await fsp.chmod(pm('sticky'), 0o1777)
  await fsp.mkdir(pm('private'))
  await fsp.chmod(pm('private'), 0o700)
  await fsp.writeFile(pm('private/secret'), 'secret')
  await fsp.chmod(pm('private/secret'), 0o400)
  await fsp.mkdir(pm('sgid'))
  await fsp.chown(pm('sgid'), 0, 4321)
  await fsp.chmod(pm('sgid'), 0o2775)
  await fsp.writeFile(pm('sgid/inherits'), 'group from the directory')
  await fsp.chown(pm('src/a/file40.txt'), UID, GID)
  await fsp.chown(pm('src/y'), 4321, 4321)
  files.push('links/orig', 'links/pair1', 'suid', 'private/secret', 'sgid/inherits')
  // sqlite3: transactions (a journal created and deleted each time)
  await sqlite(pm('db/test.db'), 0, 60)
  files.push('db/test.db')
  // utimes last
  await execOk('touch', ['-d', T1, pm('src/a/file50.txt')])
  await execOk('touch', ['-m', '-d', T2, pm('big.bin')])
  await execOk('touch', ['-h', '-d', T3, pm('links/rel')])
  await execOk('touch', ['-h', '-m', '-d', T2, pm('fifo')])
  await execOk('touch', ['-m', '-d', T1, pm('src/x')])
  await execOk('touch', ['-d', T3, pm('links')])
  return files
}

/**
 * Heavy changes to the tree buildTree made (round 1), or to the tree after round 1 (round 2).
 */
export async function mutate (m: string, round: 1 | 2): Promise<void> {
  const pm = (rel: string): string => path.join(m, rel)
  if (round === 1) {
    // partial overwrites, appends (one through a hard link: every name of the inode changes)
    await pwrite(pm('big.bin'), 1.5 * MiB, crypto.randomBytes(1000))
    await pwrite(pm('big.bin'), 64 * KiB - 10, crypto.randomBytes(20)) // across a chunk boundary
    await pwrite(pm('medium.bin'), 0, crypto.randomBytes(5000))
    await pwrite(pm('src/a/file40.txt'), 30 * KiB, Buffer.from('PATCHED in the middle'))
    await fsp.appendFile(pm('src/x/file3.txt'), 'appended\n')
    await fsp.appendFile(pm('links/two'), 'appended through a link\n')
    await pwrite(pm('sparse.bin'), 1 * MiB + 100, Buffer.from('overwritten in the hole'))
    // truncates: shrink, grow (a hole), to zero
    await fsp.truncate(pm('medium.bin'), 70_000)
    await fsp.truncate(pm('src/a/b/file1.txt'), 300 * KiB)
    await fsp.truncate(pm('src/x/file13.txt'), 0)
    // renames: file over an existing file, across directories, a directory over an empty one, a directory elsewhere
    await fsp.rename(pm('src/a/file10.txt'), pm('src/a/file20.txt'))
    await fsp.rename(pm('src/x/file23.txt'), pm('docs/moved.txt'))
    await fsp.rename(pm('src/z'), pm('empty-dir'))
    await fsp.rename(pm('src/y'), pm('docs/y-moved'))
    // deletes: files (one breaking a hard-link pair, one name of the group of three), a subtree
    await fsp.unlink(pm('src/a/file30.txt'))
    await fsp.unlink(pm('links/pair1'))
    await fsp.unlink(pm('links/two'))
    await fsp.rm(pm('victim'), { recursive: true })
    await fsp.unlink(pm('fifo'))
    // chmod, chown, utimes
    await fsp.chmod(pm('src/a/file0.txt'), 0o640)
    await fsp.chmod(pm('src'), 0o750)
    await fsp.chown(pm('src/a/file40.txt'), 999, 999)
    await fsp.chown(pm('suid'), 0, 0) // clears setuid
    await execOk('touch', ['-d', T2, pm('src/a/file50.txt')])
    await execOk('touch', ['-h', '-d', T1, pm('links/abs')])
    // xattrs: replaced, added, removed
    await setx(pm('src/a/file20.txt'), 'user.one', 'beef')
    await setx(pm('docs/moved.txt'), 'user.new', '1234')
    await rmx(pm('src'), 'user.dir')
    await rmx(pm('big.bin'), 'user.big2')
    // new things: files, a directory, a link, a FIFO, a symlink replaced
    await fsp.mkdir(pm('new'))
    for (let i = 0; i < 5; i++) await fsp.writeFile(pm(`new/n${i}`), content(100 + i, sizeOf(i + 3)))
    await fsp.writeFile(pm('src/a/fresh.txt'), 'fresh')
    await fsp.link(pm('src/a/file0.txt'), pm('new/link-to-0'))
    await execOk('mkfifo', [pm('fifo3')])
    await fsp.unlink(pm('links/rel'))
    await fsp.symlink('../new/n1', pm('links/rel'))
    await sqlite(pm('db/test.db'), 60, 30)
  } else {
    await pwrite(pm('big.bin'), 3 * MiB, crypto.randomBytes(4096))
    await pwrite(pm('big.bin'), 0, crypto.randomBytes(100))
    await fsp.truncate(pm('big.bin'), 2.5 * MiB) // shrink: chunks past it go
    await fsp.truncate(pm('big.bin'), 6 * MiB) // grow: a hole where they were
    await fsp.appendFile(pm('src/a/file20.txt'), 'appended in round 2\n')
    await fsp.appendFile(pm('links/orig'), 'again\n')
    await fsp.rename(pm('docs'), pm('docs2'))
    await fsp.rename(pm('docs2/moved.txt'), pm('src/a/file0.txt')) // over a hard-linked name
    await fsp.rm(pm('src/a/b'), { recursive: true })
    await fsp.mkdir(pm('dest'))
    await fsp.rename(pm('empty-dir'), pm('dest'))
    await fsp.unlink(pm('sparse.bin'))
    await fsp.writeFile(pm('sparse2.bin'), '')
    await fsp.truncate(pm('sparse2.bin'), 3 * MiB)
    await fsp.unlink(pm('links/orig'))
    await fsp.chmod(pm('sticky'), 0o755)
    await fsp.chown(pm('sgid/inherits'), UID, GID)
    await execOk('touch', ['-m', '-d', T3, pm('src/a/file20.txt')])
    await rmx(pm('big.bin'), 'user.big')
    await setx(pm('src/x/three'), 'user.hl', 'd00d')
    await fsp.rm(pm('new'), { recursive: true })
    await fsp.writeFile(pm('round2.txt'), 'round 2')
    await sqlite(pm('db/test.db'), 90, 20)
  }
}

/**
 * For a directory written by replica-tree.js's workload (chunk j appended to file j % nfiles, d/j
 * made at every 29th j): checks that it is the result of a prefix of that (sequential) workload,
 * i.e. of the update stream, and returns J, the number of chunks in it. Throws on a torn or
 * misplaced chunk, or on counts no prefix gives.
 */
export async function workloadPrefix (dir: string, nfiles: number, chunk: number): Promise<number> {
  const counts: number[] = []
  for (let f = 0; f < nfiles; f++) {
    const buf = await fsp.readFile(path.join(dir, chunkFileName(f)))
    if (buf.length % chunk !== 0) throw new Error(`${dir}/${chunkFileName(f)} is ${buf.length} bytes: not whole ${chunk}-byte chunks`)
    const k = buf.length / chunk
    for (let i = 0; i < k; i++) {
      if (!buf.subarray(i * chunk, (i + 1) * chunk).equals(chunkBytes(f, i, chunk))) throw new Error(`${dir}/${chunkFileName(f)} chunk ${i} of ${k} is wrong`)
    }
    counts.push(k)
  }
  const J = counts.reduce((a, b) => a + b, 0)
  const want = counts.map((_c, f) => Math.max(0, Math.ceil((J - f) / nfiles)))
  if (counts.join() !== want.join()) throw new Error(`${dir}: chunk counts ${counts.join('/')} are no prefix of the workload (a prefix of ${J} chunks has ${want.join('/')})`)
  const ds = (await fsp.readdir(path.join(dir, 'd'))).map(Number).sort((a, b) => a - b)
  for (const m of ds) if (m % 29 !== 0 || m >= J) throw new Error(`${dir}: d/${m} does not belong in a prefix of ${J} chunks`)
  for (let m = 0; m < J - 1; m += 29) if (!ds.includes(m)) throw new Error(`${dir}: d/${m} is missing from a prefix of ${J} chunks`)
  return J
}

// ---------------------------------------------------------------------------------------------
// child processes on a mount

export interface Child {
  lines: string[]
  progress(): number
  done(): boolean
  exited: Promise<number | null>
  kill(): void
}

const liveChildren = new Set<Child>()

/** SIGKILLs every helper child still running (after hooks, finally blocks). */
export function killChildren (): void {
  for (const c of liveChildren) c.kill()
  liveChildren.clear()
}

function startChild (args: string[]): Child {
  const child = spawn(process.execPath, [helperScript('snapshots'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let partial = ''
  let progress = -1
  let exitedFlag = false
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString()
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const l of parts) {
      const mm = /^wrote (\d+)$/.exec(l)
      if (mm !== null) progress = Number(mm[1])
      else lines.push(l)
    }
  })
  child.stderr.on('data', (b: Buffer) => lines.push(`stderr: ${b.toString().trim()}`))
  const c: Child = {
    lines,
    progress: () => progress,
    done: () => exitedFlag,
    exited: new Promise((resolve) => child.on('close', (code) => {
      exitedFlag = true
      liveChildren.delete(c)
      resolve(code)
    })),
    kill: () => { if (!exitedFlag) child.kill('SIGKILL') }
  }
  liveChildren.add(c)
  return c
}

export function startOverwriter (root: string, files: string[], listFile: string, stopFile: string): Child {
  fs.writeFileSync(listFile, JSON.stringify(files))
  return startChild(['overwrite', root, listFile, stopFile])
}

/** Creates `ndirs` x `perDir` empty files under `dir` with `workers` processes; resolves when all are done. */
export async function makeManyFiles (dir: string, ndirs: number, perDir: number, workers: number): Promise<void> {
  const kids: Child[] = []
  const per = Math.ceil(ndirs / workers)
  for (let w = 0; w < workers; w++) {
    const first = w * per
    const end = Math.min(ndirs, first + per)
    if (first < end) kids.push(startChild(['mkmany', dir, String(first), String(end), String(perDir)]))
  }
  const codes = await Promise.all(kids.map((k) => k.exited))
  codes.forEach((code, i) => {
    if (code !== 0) throw new Error(`mkmany worker ${i} exited ${String(code)}: ${kids[i].lines.slice(-3).join(' | ')}`)
  })
}

// ---------------------------------------------------------------------------------------------
// script side

function overwriteMain (root: string, listFile: string, stopFile: string): void {
  const files = JSON.parse(fs.readFileSync(listFile, 'utf8')) as string[]
  const chunk = 64 * KiB
  try {
    for (let j = 0; ; j++) {
      if (fs.existsSync(stopFile)) { process.stdout.write('done\n'); return }
      const rel = files[j % files.length]
      const p = path.join(root, rel)
      const fd = fs.openSync(p, 'r+')
      try {
        const size = fs.fstatSync(fd).size
        const round = Math.floor(j / files.length)
        const pos = size === 0 ? 0 : (round * chunk + (j % 7) * 512) % Math.max(size, 1)
        const buf = crypto.randomBytes(4096)
        fs.writeSync(fd, buf, 0, buf.length, pos)
        if (j % 9 === 0) fs.writeSync(fd, Buffer.from(`appended ${j}\n`), 0, undefined, Math.max(size, pos + 4096))
        if (j % 13 === 0) {
          const s2 = fs.fstatSync(fd).size
          fs.ftruncateSync(fd, Math.floor(s2 / 2))
          fs.ftruncateSync(fd, s2)
        }
      } finally {
        fs.closeSync(fd)
      }
      process.stdout.write(`wrote ${j}\n`)
    }
  } catch (err) {
    process.stdout.write(`error ${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}\n`)
    process.exitCode = 1
  }
}

function mkmanyMain (dir: string, first: number, end: number, perDir: number): void {
  let n = 0
  for (let d = first; d < end; d++) {
    const sub = path.join(dir, `d${d}`)
    fs.mkdirSync(sub)
    for (let i = 0; i < perDir; i++) { fs.closeSync(fs.openSync(path.join(sub, `f${i}`), 'w')); n++ }
  }
  process.stdout.write(`done ${n}\n`)
}

if (require.main === module) {
  const [cmd, ...args] = process.argv.slice(2)
  if (cmd === 'overwrite') overwriteMain(args[0], args[1], args[2])
  else if (cmd === 'mkmany') mkmanyMain(args[0], Number(args[1]), Number(args[2]), Number(args[3]))
  else {
    process.stderr.write('usage: node snapshots.js overwrite ROOT LISTFILE STOPFILE | mkmany DIR FIRST END PER_DIR\n')
    process.exitCode = 2
  }
}
