/**
 * Full synchronization's two halves without a network (src/sync/source.ts, target.ts): every frame
 * a SyncSource produces, through the wire codec, applied by a SyncTarget in order. Real
 * directories; the Primary's records are stood in for by marks on the source.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { SyncSource, SyncTarget, type SyncMode } from '../src/sync'
import { differing } from '../src/sync/source'
import { HASH_BYTES } from '../src/sync/hash'
import { encodeFrame, FrameDecoder, MsgType, type Message, type SyncMessage, type SyncSums } from '../src/format/wire'
import { RecordType } from '../src/format/record'
import { sys } from '../src/native'
import { SYNC_DIR_NAMES_MAX, SYNC_CHUNK_BYTES } from '../src/limits'
import { snapshotTree, diffSnapshots, assertNoDiffs } from './helpers/replica-tree'

function tmp (): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-sync-'))
}

/** A message through the wire codec and back. */
function wire<T extends Message> (m: T): T {
  return new FrameDecoder().push(encodeFrame(m))[0] as T
}

/**
 * Runs `src` to completion (or until it waits for `applied`), each frame encoded and decoded on
 * the way, the target's answers (SYNC_SUMS) given to the source before its next frame (as they
 * arrive before the frame's SYNC_ACK). Returns the frames sent and the file bytes among them.
 */
async function pump (src: SyncSource, dst: SyncTarget, max = 100_000): Promise<{ frames: number, bytes: number }> {
  let frames = 0
  let bytes = 0
  for (let m = await nextOf(src); m !== null; m = await nextOf(src)) {
    const back = wire(m) as SyncMessage
    if (back.t === MsgType.SYNC_BEGIN) dst.checksum = back.c === 1
    else for (const r of await dst.apply(back)) src.want(wire(r))
    if (back.t === MsgType.SYNC_DATA) bytes += back.d.length
    if (++frames > max) throw new Error('the source never ends')
  }
  if (src.complete) dst.closeFile() // what SYNC_DONE does
  return { frames, bytes }
}

/**
 * src.next(), and while it has SYNC_SUMS to answer and nothing to send (every chunk compared: it
 * waits for its own hashes of those files, read on libuv's pool), again when it wakes, as the
 * RLINK does. Fails after a deadline instead of hanging.
 */
async function nextOf (src: SyncSource): Promise<SyncMessage | null> {
  const deadline = Date.now() + 10_000
  for (;;) {
    let timer: NodeJS.Timeout | undefined
    const woken = new Promise<void>((resolve, reject) => {
      src.wake = resolve
      timer = setTimeout(() => reject(new Error('the source waited 10 s for its hashes and never woke')), Math.max(0, deadline - Date.now()))
    })
    woken.catch(() => {})
    const m = src.next()
    if (m !== null || !src.answering) { clearTimeout(timer); src.wake = null; return m }
    try { await woken } finally { clearTimeout(timer); src.wake = null }
  }
}

/**
 * The frames of `src` applied, their answers given back, up to the entry of `p`: its answers are
 * returned, not given back yet. Fails if the source ends first.
 */
async function untilEntry (src: SyncSource, dst: SyncTarget, p: string): Promise<SyncSums[]> {
  for (let m = await nextOf(src); m !== null; m = await nextOf(src)) {
    const back = wire(m) as SyncMessage
    if (back.t === MsgType.SYNC_BEGIN) { dst.checksum = back.c === 1; continue }
    const answers = await dst.apply(back)
    if (back.t === MsgType.SYNC_ENTRY && back.p === p) return answers
    for (const r of answers) src.want(wire(r))
  }
  throw new Error(`the source ended before the entry of ${p}`)
}

/** The first `n` frames of `src` applied (their answers given back). */
async function some (src: SyncSource, dst: SyncTarget, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const m = await nextOf(src)
    if (m === null) return
    if (m.t === MsgType.SYNC_BEGIN) dst.checksum = m.c === 1
    else for (const r of await dst.apply(wire(m))) src.want(wire(r))
  }
}

function tree (root: string): void {
  fs.mkdirSync(path.join(root, 'a/b'), { recursive: true })
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(root, `a/f${i}`), Buffer.alloc(i * 1000, i))
  fs.writeFileSync(path.join(root, 'a/b/big'), Buffer.alloc(1 << 20, 7))
  fs.linkSync(path.join(root, 'a/f3'), path.join(root, 'link3'))
  fs.symlinkSync('a/f1', path.join(root, 'sym'))
  fs.utimesSync(path.join(root, 'a'), new Date(1e12), new Date(1e12))
}

/**
 * A source directory holding tree(), a target (empty, or as `prepare` makes it from a copy of the
 * source), and a source over it with `applied()` in `mode`; both removed after `fn`.
 */
async function withPair (applied: () => number, fn: (a: string, b: string, src: SyncSource, dst: SyncTarget) => Promise<void> | void,
  mode: SyncMode = { diff: false, checksum: false }, prepare?: (a: string, b: string) => void): Promise<void> {
  const a = tmp()
  const b = tmp()
  try {
    tree(a)
    if (prepare !== undefined) {
      fs.cpSync(a, b, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true })
      prepare(a, b)
    }
    await fn(a, b, new SyncSource(a, 'unit', applied, mode), new SyncTarget(b))
  } finally {
    fs.rmSync(a, { recursive: true, force: true })
    fs.rmSync(b, { recursive: true, force: true })
  }
}

async function assertSame (a: string, b: string): Promise<void> {
  const [sa, sb] = await Promise.all([snapshotTree(a), snapshotTree(b)])
  assertNoDiffs(diffSnapshots(sa, sb, { a: 'source', b: 'target', mtime: 'ns' }), 'the target differs from the source')
}

test('a walk, then marked changes drained once applied: the target ends with the source tree', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    // Part of the walk, then changes, as records the Primary applies would mark them.
    await some(src, dst, 20)
    fs.renameSync(path.join(a, 'a/b'), path.join(a, 'moved'))
    src.mark({ type: RecordType.RENAME, seq: 1, meta: { p: '/a/b', d: '/moved' }, data: Buffer.alloc(0) })
    fs.rmSync(path.join(a, 'a/f40'))
    src.mark({ type: RecordType.UNLINK, seq: 2, meta: { p: '/a/f40' }, data: Buffer.alloc(0) })
    fs.mkdirSync(path.join(a, 'new/deep'), { recursive: true })
    src.mark({ type: RecordType.MKDIR, seq: 3, meta: { p: '/new' }, data: Buffer.alloc(0) })
    src.mark({ type: RecordType.MKDIR, seq: 4, meta: { p: '/new/deep' }, data: Buffer.alloc(0) })
    fs.writeFileSync(path.join(a, 'new/deep/x'), 'x')
    src.mark({ type: RecordType.CREATE, seq: 5, meta: { p: '/new/deep/x' }, data: Buffer.alloc(0) })
    await pump(src, dst)
    assert.is(src.complete, false, 'marks of records not yet applied are held back')
    applied = 5
    await pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  })
})

test('a file sent after its directory (its last change, a write, applied later) leaves the directory\'s times as sent', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    await pump(src, dst) // the whole walk
    fs.writeFileSync(path.join(a, 'a/new'), '')
    src.mark({ type: RecordType.CREATE, seq: 1, meta: { p: '/a/new' }, data: Buffer.alloc(0) })
    fs.writeFileSync(path.join(a, 'a/new'), 'bytes')
    src.mark({ type: RecordType.WRITE, seq: 2, meta: { p: '/a/new', o: 0 }, data: Buffer.alloc(0) })
    applied = 1
    await pump(src, dst) // '/a' goes now: its mark is applied; '/a/new' waits for its write
    assert.is(fs.existsSync(path.join(b, 'a/new')), false)
    applied = 2
    await pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  })
})

test('a path gone between the listing and its visit is skipped, not an error; a target path outside the root is refused', async () => {
  await withPair(() => 0, async (a, b, src, dst) => {
    src.next() // SYNC_BEGIN: the root is listed
    fs.rmSync(path.join(a, 'a'), { recursive: true })
    await pump(src, dst)
    assert.is(fs.existsSync(path.join(b, 'a')), false)
    assert.is(fs.readlinkSync(path.join(b, 'sym')), 'a/f1')
    let refused: unknown = null
    try { await dst.apply({ t: MsgType.SYNC_REMOVE, p: '/../etc' }) } catch (err) { refused = err }
    assert.match(String(refused), /outside the data directory/)
  })
})

/**
 * What an old replica looks like: one chunk of the big file changed, a file shorter, one longer,
 * one gone, one extra, a file where the source has a directory, another mode and extended
 * attribute, and a file with the source's size and mtime but other bytes.
 */
function drift (a: string, b: string): void {
  const big = path.join(b, 'a/b/big')
  const t = fs.statSync(big)
  const fd = fs.openSync(big, 'r+')
  fs.writeSync(fd, Buffer.from('changed'), 0, 7, 300_000) // chunk 1 of 4
  fs.closeSync(fd)
  fs.utimesSync(big, t.atime, new Date(t.mtimeMs + 5000))
  fs.truncateSync(path.join(b, 'a/f10'), 100)
  fs.appendFileSync(path.join(b, 'a/f11'), 'more')
  fs.rmSync(path.join(b, 'a/f12'))
  fs.writeFileSync(path.join(b, 'a/extra'), 'not on the source')
  fs.rmSync(path.join(b, 'a/b'), { recursive: true })
  fs.writeFileSync(path.join(b, 'a/b'), 'a file where a directory is')
  fs.chmodSync(path.join(b, 'a/f13'), 0o600)
  // Same bytes, other attributes: an owner, an extra xattr, an xattr with another value, and one
  // the same on both (left alone).
  fs.chownSync(path.join(b, 'a/f15'), 1234, 5678)
  sys.lsetxattr(path.join(b, 'a/f16'), 'user.only-here', Buffer.from('x'), 0)
  sys.lsetxattr(path.join(a, 'a/f17'), 'user.v', Buffer.from('source'), 0)
  sys.lsetxattr(path.join(b, 'a/f17'), 'user.v', Buffer.from('target'), 0)
  for (const r of [a, b]) sys.lsetxattr(path.join(r, 'a/f18'), 'user.same', Buffer.from('same'), 0)
  fs.writeFileSync(path.join(a, 'a/f14'), Buffer.alloc(14000, 1))
  fs.writeFileSync(path.join(b, 'a/f14'), Buffer.alloc(14000, 2))
  for (const r of [a, b]) fs.utimesSync(path.join(r, 'a/f14'), new Date(1.5e12), new Date(1.5e12))
  fs.utimesSync(path.join(a, 'a'), new Date(1e12), new Date(1e12))
  fs.utimesSync(path.join(b, 'a'), new Date(2e12), new Date(2e12))
}

test('a full walk\'s SYNC_DATA frames each keep their own bytes until written (no shared read buffer), across read-ahead batches and a FIFO', async () => {
  await withPair(() => 0, async (a, b, src, dst) => {
    // More files than one read-ahead batch (sys.willNeed), and a FIFO among them that its
    // non-blocking open passes over.
    fs.mkdirSync(path.join(a, 'many'))
    for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(a, `many/m${String(i).padStart(3, '0')}`), Buffer.alloc(100 + i * 3, i))
    execFileSync('mkfifo', [path.join(a, 'many/m150-fifo')])
    // Every frame taken before any is applied or encoded, as frames wait in a socket's queue.
    const frames: Message[] = []
    for (let m = src.next(); m !== null; m = src.next()) frames.push(m)
    assert.is(src.complete, true)
    let data = 0
    for (const m of frames) {
      if (m.t !== MsgType.SYNC_DATA) continue
      data++
      const want = Buffer.alloc(m.d.length)
      const fd = fs.openSync(path.join(a, m.p), 'r')
      try { fs.readSync(fd, want, 0, want.length, m.o) } finally { fs.closeSync(fd) }
      assert.ok(Buffer.from(m.d).equals(want), `${m.p} at ${m.o}: the frame holds the file's bytes, not a later read's`)
    }
    assert.ok(data >= 300 + 4, `data frames: ${data}`)
    for (const m of frames) {
      const back = wire(m) as SyncMessage
      if (back.t === MsgType.SYNC_BEGIN) dst.checksum = back.c === 1
      else await dst.apply(back)
    }
    dst.closeFile()
    await assertSame(a, b)
  })
})

test('by difference, every chunk compared: an old replica ends as the source, with only the differing chunks sent', async () => {
  await withPair(() => 0, async (a, b, src, dst) => {
    const { bytes } = await pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
    // Sent: the big file's changed chunk (it is under a/b, a file on the target: all of it, 1 MiB),
    // f10's and f11's one chunk, f12, f14: far less than the tree.
    const total = 50 * 49 * 1000 / 2 + (1 << 20)
    assert.ok(bytes < (1 << 20) + 50_000, `sent ${bytes} bytes of a ${total}-byte tree`)
    assert.ok(src.progress.differing >= 4, `files sent in place or whole: ${src.progress.differing}`)
    // Only those: the files that match (most of the 50, compared by the Primary's own hashes) are not counted.
    assert.ok(src.progress.differing <= 10, `files counted as differing: ${src.progress.differing}`)
  }, { diff: true, checksum: true }, drift)
})

test('by difference, by size and mtime: a changed chunk of a large file is all that is sent; a file with the same size and mtime is kept', async () => {
  await withPair(() => 0, async (a, b, src, dst) => {
    const big = path.join(b, 'a/b/big')
    const fd = fs.openSync(big, 'r+')
    fs.writeSync(fd, Buffer.from('changed'), 0, 7, 600_000) // chunk 2 of 4
    fs.closeSync(fd)
    fs.utimesSync(big, new Date(0), new Date(0))
    const { bytes } = await pump(src, dst)
    assert.is(src.complete, true)
    assert.is(bytes, 256 * 1024, 'one chunk of the big file')
    assert.equal(fs.readFileSync(big), fs.readFileSync(path.join(a, 'a/b/big')))
    // f14 differs only in bytes: kept, as rsync -a keeps it (every chunk compared finds it: above)
    assert.equal(fs.readFileSync(path.join(b, 'a/f14'))[0], 2)
  }, { diff: true, checksum: false }, (a, b) => {
    fs.writeFileSync(path.join(a, 'a/f14'), Buffer.alloc(14000, 1))
    fs.writeFileSync(path.join(b, 'a/f14'), Buffer.alloc(14000, 2))
    for (const r of [a, b]) fs.utimesSync(path.join(r, 'a/f14'), new Date(1.5e12), new Date(1.5e12))
  })
})

test('by difference: hashes taken of a file that a later frame made anew are not used; the file is asked for again', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    // The walk up to the big file's compare entry, answered with its hashes (kept by the source).
    const answers = await untilEntry(src, dst, '/a/b/big')
    assert.is(answers.length, 1, 'the big file differs: its hashes go back')
    // Before the source answers, the target's file changes (as a full entry of it would make
    // it): its first chunk, which matched when hashed, no longer does.
    pwrite(path.join(b, 'a/b/big'), Buffer.alloc(1000, 9), 0)
    for (const r of answers) src.want(wire(r))
    await pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  }, { diff: true, checksum: true }, (a, b) => {
    pwrite(path.join(b, 'a/b/big'), Buffer.alloc(1000, 8), 900_000) // chunk 3 differs, the rest matches
  })
})

test('every chunk compared: the Primary\'s own hashes, read ahead, are used only for the file they were taken of', async () => {
  await withPair(() => 0, async (a, b, src, dst) => {
    const answers = await untilEntry(src, dst, '/a/b/big')
    // The source's hashes of its big file, read on the pool (white box: until they are in),
    const ours = (src as unknown as { ours: Map<string, { done: boolean }> }).ours
    while (ours.get('/a/b/big')?.done === false) await new Promise<void>((resolve) => { src.wake = resolve })
    // then its first chunk changes behind its back (no record marks it): those hashes say
    // chunk 0 matches the target's; the file they were taken of is gone, so they are not used.
    pwrite(path.join(a, 'a/b/big'), Buffer.alloc(1000, 5), 10)
    for (const r of answers) src.want(wire(r))
    await pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  }, { diff: true, checksum: true }, (a, b) => {
    pwrite(path.join(b, 'a/b/big'), Buffer.alloc(1000, 8), 900_000) // chunk 3 differs, the rest matches
  })
})

test('differing: the chunks whose hash or length differ, and every chunk past the end of theirs', () => {
  const C = SYNC_CHUNK_BYTES
  const h = (...xs: number[]): Buffer => Buffer.concat(xs.map((x) => Buffer.alloc(HASH_BYTES, x)))
  // Equal: nothing.
  assert.equal(differing(h(1, 2, 3), { s: 3 * C, h: h(1, 2, 3) }, 3 * C), [])
  // One chunk differs.
  assert.equal(differing(h(1, 2, 3), { s: 3 * C, h: h(1, 9, 3) }, 3 * C), [[C, 2 * C]])
  // Theirs shorter by a chunk and a half: their partial chunk (another length) and ours past it.
  assert.equal(differing(h(1, 2, 3, 4), { s: 2 * C - 10, h: h(1, 2) }, 3 * C + 7), [[C, 2 * C], [2 * C, 3 * C], [3 * C, 3 * C + 7]])
  // Theirs longer: our last chunk is shorter than theirs, so it goes even if hashes matched (the target cuts to our size first).
  assert.equal(differing(h(1, 2), { s: 2 * C, h: h(1, 2) }, C + 5), [[C, C + 5]])
  // Theirs empty, or none (s -1): all of ours.
  assert.equal(differing(h(1, 2), { s: 0, h: h() }, 2 * C), [[0, C], [C, 2 * C]])
  assert.equal(differing(h(1), { s: -1, h: h() }, 100), [[0, 100]])
})

test('a directory with more names than one SYNC_DIR carries is closed by several; only the last removes what none listed and sets its times', async () => {
  const n = SYNC_DIR_NAMES_MAX * 2 + 5
  await withPair(() => 0, async (a, b, src, dst) => {
    fs.mkdirSync(path.join(a, 'many'))
    for (let i = 0; i < n; i++) fs.writeFileSync(path.join(a, 'many', `name-${String(i).padStart(6, '0')}`), '')
    fs.utimesSync(path.join(a, 'many'), new Date(2e12), new Date(2e12))
    // The target has extra names in it, sorted among the source's: the first frames must not remove them.
    fs.mkdirSync(path.join(b, 'many'))
    for (const x of ['name-000000a', 'name-032000x', 'zzz']) fs.writeFileSync(path.join(b, 'many', x), 'extra')
    const dirs: Array<{ names: number, more: boolean }> = []
    for (let m = src.next(); m !== null; m = src.next()) {
      const back = wire(m) as SyncMessage
      if (back.t === MsgType.SYNC_DIR && back.p === '/many') dirs.push({ names: back.names.length, more: back.m === 1 })
      if (back.t !== MsgType.SYNC_BEGIN) for (const r of await dst.apply(back)) src.want(wire(r))
    }
    dst.closeFile()
    assert.equal(dirs, [{ names: SYNC_DIR_NAMES_MAX, more: true }, { names: SYNC_DIR_NAMES_MAX, more: true }, { names: 5, more: false }])
    assert.is(fs.readdirSync(path.join(b, 'many')).length, n, 'every name, and only those')
    await assertSame(a, b)
  })
})

/** Writes `data` at `o` of `file`, behind everyone's back. */
function pwrite (file: string, data: Buffer, o: number): void {
  const fd = fs.openSync(file, 'r+')
  try { fs.writeSync(fd, data, 0, data.length, o) } finally { fs.closeSync(fd) }
}

/** Writes `data` at `o` of file `f` under `root`, and marks it on `src` as the WRITE record `seq` would. */
function writeAt (root: string, src: SyncSource, seq: number, p: string, o: number, data: Buffer): void {
  pwrite(path.join(root, p), data, o)
  src.mark({ type: RecordType.WRITE, seq, meta: { p, o }, data })
}

function truncateTo (root: string, src: SyncSource, seq: number, p: string, s: number): void {
  fs.truncateSync(path.join(root, p), s)
  src.mark({ type: RecordType.TRUNCATE, seq, meta: { p, s }, data: Buffer.alloc(0) })
}

test('a file changed by writes, truncates and attribute changes after it was sent goes as its changed parts, not whole', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    await pump(src, dst) // the whole walk
    assert.is(src.complete, true)
    writeAt(a, src, 1, '/a/b/big', 700_000, Buffer.from('X')) // one byte of a 1 MiB file
    writeAt(a, src, 2, '/a/b/big', 300_000, Buffer.from('Y'))
    writeAt(a, src, 3, '/a/f40', 0, Buffer.alloc(4)) // zeros over bytes that were not: they go
    truncateTo(a, src, 4, '/a/f30', 100) // cut, then a write past the end: a hole between
    writeAt(a, src, 5, '/a/f30', 5000, Buffer.from('tail'))
    truncateTo(a, src, 6, '/a/f31', 0) // emptied, made 1 MiB of zeros, three bytes in the middle
    truncateTo(a, src, 7, '/a/f31', 1 << 20)
    writeAt(a, src, 8, '/a/f31', 200_000, Buffer.from('abc'))
    fs.chmodSync(path.join(a, 'a/f5'), 0o640)
    src.mark({ type: RecordType.CHMOD, seq: 9, meta: { p: '/a/f5', m: 0o640 }, data: Buffer.alloc(0) })
    writeAt(a, src, 10, '/a/b/big', 10, Buffer.from('Z')) // far from 300,000 in the same chunk: apart
    // 20 writes far apart in one chunk: 16 spans (the closest joined), and 3 bytes that touch: one
    for (let i = 0; i < 20; i++) writeAt(a, src, 11 + i, '/a/f45', i * 2000 + (i > 10 ? 7 : 0), Buffer.from([i]))
    for (let i = 0; i < 3; i++) writeAt(a, src, 31 + i, '/a/f46', 100 + i, Buffer.from([i + 1]))
    applied = 33
    const frames: SyncMessage[] = []
    for (let m = src.next(); m !== null; m = src.next()) {
      const back = wire(m) as SyncMessage
      frames.push(back)
      for (const r of await dst.apply(back)) src.want(wire(r))
    }
    dst.closeFile()
    assert.is(src.complete, true)
    await assertSame(a, b)
    const entries = frames.filter((f) => f.t === MsgType.SYNC_ENTRY)
    assert.equal(entries.map((e) => e.t === MsgType.SYNC_ENTRY && [e.p, e.w, e.z]).sort(),
      [['/a/b/big', 'r', undefined], ['/a/f30', 'r', 100], ['/a/f31', 'r', 0], ['/a/f40', 'r', undefined], ['/a/f45', 'r', undefined], ['/a/f46', 'r', undefined], ['/a/f5', 'r', undefined]])
    const data = frames.filter((f) => f.t === MsgType.SYNC_DATA).map((f) => f.t === MsgType.SYNC_DATA && [f.p, f.o, f.d.length])
    assert.equal(data.filter((d) => d !== false && d[0] !== '/a/f45').sort(),
      [['/a/b/big', 10, 1], ['/a/b/big', 300_000, 1], ['/a/b/big', 700_000, 1], ['/a/f30', 5000, 4], ['/a/f31', 200_000, 3], ['/a/f40', 0, 4], ['/a/f46', 100, 3]])
    const f45 = data.filter((d) => d !== false && d[0] === '/a/f45')
    assert.is(f45.length, 16, `spans of /a/f45: ${JSON.stringify(f45)}`)
    assert.ok(f45.reduce((n, d) => n + (d as [string, number, number])[2], 0) < 20_000, 'the closest joined, not all of them')
  })
})

test('changed parts of a file the target has not as that regular file are asked for whole', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    await pump(src, dst)
    fs.rmSync(path.join(b, 'a/f20')) // gone on the target
    fs.rmSync(path.join(b, 'a/f21'))
    fs.mkdirSync(path.join(b, 'a/f21')) // a directory there
    fs.linkSync(path.join(b, 'a/f23'), path.join(b, 'a/other')) // another name there only
    const times = fs.statSync(path.join(a, 'a'))
    fs.utimesSync(path.join(b, 'a'), times.atime, times.mtime) // as it was before these changes
    writeAt(a, src, 1, '/a/f20', 10, Buffer.from('x'))
    writeAt(a, src, 2, '/a/f21', 10, Buffer.from('y'))
    writeAt(a, src, 3, '/a/f23', 10, Buffer.from('z'))
    applied = 3
    await pump(src, dst)
    assert.is(src.complete, true)
    fs.rmSync(path.join(b, 'a/other')) // not the source's: its SYNC_DIR would remove it, none was sent
    fs.utimesSync(path.join(b, 'a'), times.atime, times.mtime)
    await assertSame(a, b)
    assert.is(fs.statSync(path.join(b, 'a/f23')).nlink, 1, 'written as a file of its own, not through the other name')
    assert.is(src.progress.differing, 3, 'each asked for whole')
  })
})

test('a large file written all the time during the drain converges: each pass sends what was written, not the file', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    await pump(src, dst)
    let seq = 0
    let x = 1
    const write = (): void => {
      x = (x * 1103515245 + 12345) % 2 ** 31
      seq++
      writeAt(a, src, seq, '/a/b/big', x % ((1 << 20) - 4096), Buffer.alloc(4096, seq))
      applied = seq
    }
    write()
    // A write every 4 frames, as long as the source has something to send: the file is 4 chunks
    // (an entry and 4 SYNC_DATA sent whole), so only its changed parts let the map empty.
    let frames = 0
    for (let m = src.next(); m !== null; m = src.next()) {
      for (const r of await dst.apply(wire(m) as SyncMessage)) src.want(wire(r))
      if (++frames % 4 === 0) write()
      if (frames > 10_000) break
    }
    dst.closeFile()
    assert.ok(frames <= 10_000, 'the drain never emptied the map')
    assert.is(src.complete, true)
    await assertSame(a, b)
  })
})

test.run()
