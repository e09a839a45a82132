/**
 * applyRecordSync and times (record format version 2): the same records applied to two data
 * directories, at different moments, give identical atimes and mtimes for every entry, directories
 * and symlinks included, each exactly the `t` of the record that last changed it. This is what
 * replication relies on for a Secondary's data directory to equal the Primary's. No FUSE, no daemon.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { applyRecordSync, FdCache } from '../src/apply'
import { RecordType, type Record, type RecordMeta, type Timespec } from '../src/format/record'

const tmpDirs: string[] = []
function tmpDir (): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-apply-'))
  tmpDirs.push(dir)
  return dir
}
test.after(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true })
})

const U = process.getuid?.() ?? 0
const G = process.getgid?.() ?? 0
const S_IFIFO = 0o010000

/** t_k: distinct times in the past, none of them "now", with nanoseconds a clock would not give. */
const T = (k: number): Timespec => [1600000000 + k * 1000, 100000000 + k * 1111111]

function rec (seq: number, type: RecordType, meta: RecordMeta, data?: string): Record {
  return { type, seq, meta, data: data === undefined ? Buffer.alloc(0) : Buffer.from(data) }
}

/** Every record type that touches times, as the Primary's adapter makes them (version 2). */
const RECORDS: Record[] = [
  rec(1, RecordType.MKDIR, { p: '/d', m: 0o755, u: U, g: G, t: T(1) }),
  rec(2, RecordType.CREATE, { p: '/d/f', m: 0o644, u: U, g: G, t: T(2) }),
  rec(3, RecordType.WRITE, { p: '/d/f', o: 0, t: T(3) }, 'hello'),
  rec(4, RecordType.SYMLINK, { p: '/d/s', d: 'f', u: U, g: G, t: T(4) }),
  rec(5, RecordType.MKNOD, { p: '/fifo', m: S_IFIFO | 0o644, r: 0, u: U, g: G, t: T(5) }),
  rec(6, RecordType.MKDIR, { p: '/d/sub', m: 0o700, u: U, g: G, t: T(6) }),
  rec(7, RecordType.MKDIR, { p: '/e', m: 0o755, u: U, g: G, t: T(7) }),
  rec(8, RecordType.LINK, { p: '/d/f', d: '/e/h', t: T(8) }),
  rec(9, RecordType.RENAME, { p: '/d/sub', d: '/e/sub2', t: T(9) }),
  rec(10, RecordType.CREATE, { p: '/e/g', m: 0o600, u: U, g: G, t: T(10) }),
  rec(11, RecordType.UNLINK, { p: '/e/g', t: T(11) }),
  rec(12, RecordType.MKDIR, { p: '/gone', m: 0o755, u: U, g: G, t: T(12) }),
  rec(13, RecordType.RMDIR, { p: '/gone', t: T(13) }),
  rec(14, RecordType.RENAME, { p: '/d/s', d: '/d/s2', t: T(14) }),
  rec(15, RecordType.FALLOCATE, { p: '/d/f', f: 0, o: 0, l: 8192, t: T(15) }),
  rec(16, RecordType.CREATE, { p: '/x', m: 0o644, u: U, g: G, t: T(16) }),
  rec(17, RecordType.FALLOCATE, { p: '/x', f: 1 /* KEEP_SIZE */, o: 0, l: 4096, t: T(17) }),
  rec(18, RecordType.CREATE, { p: '/e/sub2/y', m: 0o644, u: U, g: G, t: T(18) }),
  rec(19, RecordType.TRUNCATE, { p: '/e/sub2/y', s: 10, t: T(19) }),
  rec(20, RecordType.SYMLINK, { p: '/dangling', d: '/no/such/target', u: U, g: G, t: T(20) }),
  rec(21, RecordType.UTIMENS, { p: '/e/sub2', a: null, t: T(21) }),
  // A dangling symlink moved to another directory (its replay must not take it for missing).
  rec(22, RecordType.RENAME, { p: '/dangling', d: '/d/dangling', t: T(22) })
]

/** What each entry's [atime, mtime] must be after RECORDS: the t of the records that set them. */
const EXPECTED: { [rel: string]: [Timespec, Timespec] } = {
  '': [[0, 0], T(22)], // the root's atime is whatever it was (nothing here sets it): not compared
  '/d': [T(1), T(22)],
  '/d/dangling': [T(20), T(20)],
  '/d/f': [T(2), T(15)],
  '/d/s2': [T(4), T(4)],
  '/e': [T(7), T(11)],
  '/e/h': [T(2), T(15)],
  '/e/sub2': [T(6), T(21)],
  '/e/sub2/y': [T(18), T(19)],
  '/fifo': [T(5), T(5)],
  '/x': [T(16), T(17)]
}

interface Times { type: string, atimeNs: bigint, mtimeNs: bigint }

function typeOf (st: fs.BigIntStats): string {
  return st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isFile() ? 'file' : 'other'
}

/**
 * lstat of every entry under root, by relative path ('' is root itself). A directory is stat'ed
 * before it is read, since reading it may update its atime.
 */
function times (root: string): Map<string, Times> {
  const out = new Map<string, Times>()
  const walk = (rel: string): void => {
    const st = fs.lstatSync(root + rel, { bigint: true })
    out.set(rel, { type: typeOf(st), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs })
    if (st.isDirectory()) for (const name of fs.readdirSync(root + rel).sort()) walk(`${rel}/${name}`)
  }
  walk('')
  return out
}

const ns = (t: Timespec): bigint => BigInt(t[0]) * 1000000000n + BigInt(t[1])

function applyAll (root: string, records: Record[], replayEach = false): void {
  const fds = new FdCache(root)
  try {
    for (const r of records) {
      applyRecordSync(root, r, fds, false)
      // As a recovery after a kill -9 would: the record again, already applied.
      if (replayEach) applyRecordSync(root, r, fds, true)
    }
  } finally {
    fds.clear()
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function show (m: Map<string, Times>): string {
  return [...m].map(([rel, t]) => `${rel || '/'} ${t.type} a=${t.atimeNs} m=${t.mtimeNs}`).join('\n')
}

test('the same records applied to two empty directories give identical atimes and mtimes everywhere', async () => {
  const a = tmpDir()
  const b = tmpDir()
  applyAll(a, RECORDS)
  await sleep(50) // another "now": anything the kernel set from its clock would differ
  applyAll(b, RECORDS)
  const ta = times(a)
  const tb = times(b)
  assert.equal([...ta.keys()], Object.keys(EXPECTED).sort(), `the tree has the expected entries:\n${show(ta)}`)
  assert.equal([...tb.keys()], [...ta.keys()])
  for (const [rel, x] of ta) {
    const y = tb.get(rel)!
    assert.is(y.type, x.type, `${rel || '/'}: type`)
    assert.is(y.mtimeNs, x.mtimeNs, `${rel || '/'}: mtime identical in both trees`)
    if (rel !== '') assert.is(y.atimeNs, x.atimeNs, `${rel}: atime identical in both trees`)
  }
  // And each is exactly the record's t (nanoseconds included), not the kernel's clock.
  for (const [rel, [at, mt]] of Object.entries(EXPECTED)) {
    const x = ta.get(rel)!
    assert.is(x.mtimeNs, ns(mt), `${rel || '/'}: mtime is the t of the last record that changed it`)
    if (rel !== '') assert.is(x.atimeNs, ns(at), `${rel}: atime is the t of the record that made it`)
  }
  assert.is(fs.readlinkSync(path.join(a, 'd/s2')), 'f')
  assert.is(fs.statSync(path.join(a, 'd/f')).size, 8192)
  assert.is(fs.statSync(path.join(a, 'x')).size, 0, 'KEEP_SIZE kept the size')
})

test('replaying each record right after applying it (replay=true) changes no time', async () => {
  const a = tmpDir()
  const b = tmpDir()
  applyAll(a, RECORDS)
  await sleep(50)
  applyAll(b, RECORDS, true)
  const ta = times(a)
  const tb = times(b)
  assert.equal([...tb.keys()], [...ta.keys()])
  for (const [rel, x] of ta) {
    const y = tb.get(rel)!
    assert.is(y.mtimeNs, x.mtimeNs, `${rel || '/'}: mtime after a replay`)
    if (rel !== '') assert.is(y.atimeNs, x.atimeNs, `${rel}: atime after a replay`)
  }
})

test('replay tolerates a parent directory removed by a later record; a first application does not need to', () => {
  const root = tmpDir()
  const rename = rec(4, RecordType.RENAME, { p: '/a/f', d: '/b/f', t: T(4) })
  const unlink = rec(6, RecordType.UNLINK, { p: '/b/f', t: T(6) })
  applyAll(root, [
    rec(1, RecordType.MKDIR, { p: '/a', m: 0o755, u: U, g: G, t: T(1) }),
    rec(2, RecordType.MKDIR, { p: '/b', m: 0o755, u: U, g: G, t: T(2) }),
    rec(3, RecordType.CREATE, { p: '/a/f', m: 0o644, u: U, g: G, t: T(3) }),
    rename,
    rec(5, RecordType.RMDIR, { p: '/a', t: T(5) })
  ])
  const fds = new FdCache(root)
  try {
    // The source's directory /a is gone: its mtime cannot be set, and need not be.
    applyRecordSync(root, rename, fds, true)
    assert.is(fs.lstatSync(path.join(root, 'b'), { bigint: true }).mtimeNs, ns(T(4)), '/b gets the rename\'s t again')
    applyAll(root, [unlink, rec(7, RecordType.RMDIR, { p: '/b', t: T(7) })])
    applyRecordSync(root, unlink, fds, true) // both the name and its directory are gone
    assert.throws(() => applyRecordSync(root, unlink, fds, false), /ENOENT/, 'without replay, ENOENT is an error')
  } finally {
    fds.clear()
  }
  assert.is(fs.lstatSync(root, { bigint: true }).mtimeNs, ns(T(7)))
})

test('version-1 records (no t) leave times to the kernel, as before', () => {
  const root = tmpDir()
  fs.utimesSync(root, 1000, 1000)
  const before = BigInt(Date.now() - 5000) * 1000000n
  applyAll(root, [
    rec(1, RecordType.MKDIR, { p: '/d', m: 0o755 }),
    rec(2, RecordType.CREATE, { p: '/d/f', m: 0o644 }),
    rec(3, RecordType.SYMLINK, { p: '/d/s', d: 'f' }),
    rec(4, RecordType.FALLOCATE, { p: '/d/f', f: 0, o: 0, l: 4096 })
  ])
  for (const rel of ['', '/d', '/d/f', '/d/s']) {
    const st = fs.lstatSync(root + rel, { bigint: true })
    assert.ok(st.mtimeNs >= before, `${rel || '/'}: mtime is the kernel's now (${st.mtimeNs})`)
  }
})

test('a symlink\'s times are its own: its target is not touched', () => {
  const root = tmpDir()
  applyAll(root, [
    rec(1, RecordType.CREATE, { p: '/target', m: 0o644, u: U, g: G, t: T(1) }),
    rec(2, RecordType.SYMLINK, { p: '/link', d: 'target', u: U, g: G, t: T(2) })
  ])
  const target = fs.lstatSync(path.join(root, 'target'), { bigint: true })
  const link = fs.lstatSync(path.join(root, 'link'), { bigint: true })
  assert.equal([target.atimeNs, target.mtimeNs], [ns(T(1)), ns(T(1))])
  assert.equal([link.atimeNs, link.mtimeNs], [ns(T(2)), ns(T(2))])
})

test.run()
