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
import { SyncSource, SyncTarget } from '../src/sync'
import { encodeFrame, FrameDecoder, MsgType, type SyncMessage } from '../src/format/wire'
import { RecordType } from '../src/format/record'
import { snapshotTree, diffSnapshots, assertNoDiffs } from './helpers/replica-tree'

function tmp (): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-sync-'))
}

/** Runs `src` to completion (or until it waits for `applied`), each frame encoded and decoded on the way. */
function pump (src: SyncSource, dst: SyncTarget, max = 100_000): number {
  let n = 0
  for (let m = src.next(); m !== null; m = src.next()) {
    const [back] = new FrameDecoder().push(encodeFrame(m))
    if (back.t !== MsgType.SYNC_BEGIN) dst.apply(back as SyncMessage)
    if (++n > max) throw new Error('the source never ends')
  }
  if (src.complete) dst.closeFile() // what SYNC_DONE does
  return n
}

function tree (root: string): void {
  fs.mkdirSync(path.join(root, 'a/b'), { recursive: true })
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(root, `a/f${i}`), Buffer.alloc(i * 1000, i))
  fs.writeFileSync(path.join(root, 'a/b/big'), Buffer.alloc(1 << 20, 7))
  fs.linkSync(path.join(root, 'a/f3'), path.join(root, 'link3'))
  fs.symlinkSync('a/f1', path.join(root, 'sym'))
  fs.utimesSync(path.join(root, 'a'), new Date(1e12), new Date(1e12))
}

/** A source directory holding tree(), an empty target, and a source over it with `applied()`; both removed after `fn`. */
async function withPair (applied: () => number, fn: (a: string, b: string, src: SyncSource, dst: SyncTarget) => Promise<void> | void): Promise<void> {
  const a = tmp()
  const b = tmp()
  try {
    tree(a)
    await fn(a, b, new SyncSource(a, 'unit', applied), new SyncTarget(b))
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
    for (let i = 0; i < 20; i++) { const m = src.next(); if (m !== null && m.t !== MsgType.SYNC_BEGIN) dst.apply(m) }
    fs.renameSync(path.join(a, 'a/b'), path.join(a, 'moved'))
    src.mark({ type: RecordType.RENAME, seq: 1, meta: { p: '/a/b', d: '/moved' }, data: Buffer.alloc(0) })
    fs.rmSync(path.join(a, 'a/f40'))
    src.mark({ type: RecordType.UNLINK, seq: 2, meta: { p: '/a/f40' }, data: Buffer.alloc(0) })
    fs.mkdirSync(path.join(a, 'new/deep'), { recursive: true })
    src.mark({ type: RecordType.MKDIR, seq: 3, meta: { p: '/new' }, data: Buffer.alloc(0) })
    src.mark({ type: RecordType.MKDIR, seq: 4, meta: { p: '/new/deep' }, data: Buffer.alloc(0) })
    fs.writeFileSync(path.join(a, 'new/deep/x'), 'x')
    src.mark({ type: RecordType.CREATE, seq: 5, meta: { p: '/new/deep/x' }, data: Buffer.alloc(0) })
    pump(src, dst)
    assert.is(src.complete, false, 'marks of records not yet applied are held back')
    applied = 5
    pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  })
})

test('a file sent after its directory (its last change, a write, applied later) leaves the directory\'s times as sent', async () => {
  let applied = 0
  await withPair(() => applied, async (a, b, src, dst) => {
    pump(src, dst) // the whole walk
    fs.writeFileSync(path.join(a, 'a/new'), '')
    src.mark({ type: RecordType.CREATE, seq: 1, meta: { p: '/a/new' }, data: Buffer.alloc(0) })
    fs.writeFileSync(path.join(a, 'a/new'), 'bytes')
    src.mark({ type: RecordType.WRITE, seq: 2, meta: { p: '/a/new', o: 0 }, data: Buffer.alloc(0) })
    applied = 1
    pump(src, dst) // '/a' goes now: its mark is applied; '/a/new' waits for its write
    assert.is(fs.existsSync(path.join(b, 'a/new')), false)
    applied = 2
    pump(src, dst)
    assert.is(src.complete, true)
    await assertSame(a, b)
  })
})

test('a path gone between the listing and its visit is skipped, not an error; a target path outside the root is refused', async () => {
  await withPair(() => 0, (a, b, src, dst) => {
    src.next() // SYNC_BEGIN: the root is listed
    fs.rmSync(path.join(a, 'a'), { recursive: true })
    pump(src, dst)
    assert.is(fs.existsSync(path.join(b, 'a')), false)
    assert.is(fs.readlinkSync(path.join(b, 'sym')), 'a/f1')
    assert.throws(() => dst.apply({ t: MsgType.SYNC_REMOVE, p: '/../etc' }), /outside the data directory/)
  })
})

test.run()
