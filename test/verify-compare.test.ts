/**
 * Online verify's pure parts (src/sync/manifest.ts, src/sync/compare.ts): the walk order, the
 * byte ranges of differing chunks, and the merge of two walks into differences.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { compareOrder, verifyChunkBytes, TreeWalk, type TreeReader } from '../src/sync/manifest'
import { TreeCompare, differingRanges } from '../src/sync/compare'
import { MsgType, type VerifyEntry, type Message } from '../src/format/wire'
import { VerifySession } from '../src/sync/verify'

const t = suite('verify-compare')
const K = 256 * 1024

const h = (...bytes: number[]): Uint8Array => Buffer.concat(bytes.map((b) => Buffer.alloc(16, b)))

t('walk order: a directory before what is below it, components compared one by one', () => {
  const paths = ['/a/b', '/', '/a-b', '/a', '/a/b/c', '/b', '/a/a']
  assert.equal([...paths].sort(compareOrder), ['/', '/a', '/a/a', '/a/b', '/a/b/c', '/a-b', '/b'])
})

t('chunk size doubles past VERIFY_CHUNKS_MAX chunks', () => {
  assert.is(verifyChunkBytes(0), K)
  assert.is(verifyChunkBytes(64 * 1024 * K), K) // 65536 chunks exactly: 16 GiB
  assert.is(verifyChunkBytes(64 * 1024 * K + 1), 2 * K)
})

t('differing ranges: chunks whose hashes differ, merged; a tail past the shorter file', () => {
  assert.equal(differingRanges(3 * K, h(1, 2, 3), 3 * K, h(1, 2, 3)), [])
  assert.equal(differingRanges(3 * K, h(1, 2, 3), 3 * K, h(1, 9, 3)), [[K, K]])
  assert.equal(differingRanges(3 * K, h(1, 2, 3), 3 * K, h(9, 9, 3)), [[0, 2 * K]])
  // Longer on one side: the last common chunk is shorter on one side (differs), and the rest.
  assert.equal(differingRanges(2 * K + 10, h(1, 2, 3), 2 * K, h(1, 2)), [[K * 2, 10]])
  assert.equal(differingRanges(K + 10, h(1, 2), 2 * K, h(1, 2)), [[K, K]])
  assert.equal(differingRanges(0, h(), 5, h(1)), [[0, 5]])
})

const e = (p: string, k: VerifyEntry['k'] = 'f', more: Partial<VerifyEntry> = {}): VerifyEntry =>
  ({ p, k, m: (k === 'd' ? 0o040755 : 0o100644), u: 0, g: 0, mt: [1, 2], ...(k === 'f' ? { s: 1, c: h(1) } : {}), ...more })

t('merge: one side only (a directory counted as one), what differs, in either arrival order', () => {
  const mine = [e('/', 'd'), e('/a', 'd'), e('/a/x'), e('/a/y'), e('/b'), e('/c', 'd'), e('/d', 'f', { m: 0o100600 })]
  const theirs = [e('/', 'd'), e('/b', 'f', { c: h(2) }), e('/c'), e('/c0'), e('/d', 'f', { mt: [1, 3], u: 5 })]
  for (const order of ['mine-first', 'theirs-first', 'interleaved']) {
    const c = new TreeCompare()
    if (order === 'mine-first') { for (const x of mine) c.pushMine(x); c.endMine(); c.pushTheirs(theirs); c.endTheirs() }
    if (order === 'theirs-first') { c.pushTheirs(theirs); c.endTheirs(); for (const x of mine) c.pushMine(x); c.endMine() }
    if (order === 'interleaved') {
      for (let i = 0; i < Math.max(mine.length, theirs.length); i++) { if (mine[i]) c.pushMine(mine[i]); if (theirs[i]) c.pushTheirs([theirs[i]]) }
      c.endMine(); c.endTheirs()
    }
    assert.ok(c.done, order)
    assert.equal(c.differences, [
      { p: '/a', what: ['missing'], below: 2 },
      { p: '/b', what: ['content'], ranges: [[0, 1]] },
      { p: '/c', what: ['type'] },
      { p: '/c0', what: ['extra'] },
      { p: '/d', what: ['mode', 'owner', 'mtime'] }
    ], order)
    assert.equal([...c.paths], [['/a', true], ['/b', false], ['/c', true], ['/c0', false], ['/d', false]], order)
  }
})

/** A tree in memory, for the walk. */
function memTree (files: Record<string, string | null>, links: Record<string, string> = {}): TreeReader {
  const ino = new Map<string, number>()
  let n = 1
  const node = (p: string): number => { const q = links[p] ?? p; if (!ino.has(q)) ino.set(q, n++); return ino.get(q)! }
  const isDir = (p: string): boolean => p === '/' || files[p] === null
  const handles = new Map<number, string>()
  return {
    lstat: (p) => {
      const q = links[p] ?? p
      const nlink = 1 + Object.values(links).filter((x) => x === q).length
      return { mode: isDir(p) ? 0o040755 : 0o100644, uid: 0, gid: 0, size: isDir(p) ? 0 : Buffer.byteLength(files[q]!), nlink, ino: node(p), rdev: 0, mtimeNs: 5n }
    },
    readdir: (p) => Object.keys(files).concat(Object.keys(links)).filter((x) => x !== p && x.slice(0, x.lastIndexOf('/') || 1) === p).map((x) => x.slice(x.lastIndexOf('/') + 1)),
    readlink: () => '',
    listxattr: () => [],
    getxattr: () => Buffer.alloc(0),
    open: (p) => { handles.set(handles.size + 1, links[p] ?? p); return handles.size },
    read: (hd, buf, len, pos) => Buffer.from(files[handles.get(hd)!]!).copy(buf, 0, pos, pos + len),
    close: () => {}
  }
}

function walkAll (tree: TreeReader): { entries: VerifyEntry[], root: Buffer } {
  const w = new TreeWalk(tree)
  const entries: VerifyEntry[] = []
  while (!w.done) { const x = w.step(); if (x !== null) entries.push(x) }
  return { entries, root: w.root! }
}

t('walk: the tree is told which names of a directory are read next, 64 at a time, each name once, before it is read; the same entries either way', () => {
  const files: Record<string, string | null> = { '/d': null }
  for (let i = 0; i < 150; i++) files[`/d/f${String(i).padStart(3, '0')}`] = `file ${i}`
  const hints: Array<{ p: string, names: string[] }> = []
  const plain = memTree(files)
  const hinted: TreeReader = { ...plain, willNeed: (p, names) => { hints.push({ p, names: [...names] }) } }
  const read: string[] = []
  const open = hinted.open
  hinted.open = (p) => {
    const name = p.slice(p.lastIndexOf('/') + 1)
    assert.ok(hints.some((h) => h.p === '/d' && h.names.includes(name)), `${p} was hinted before it was read`)
    read.push(p)
    return open(p)
  }
  const a = walkAll(hinted)
  assert.is(read.length, 150)
  const inD = hints.filter((h) => h.p === '/d')
  assert.ok(inD.every((h) => h.names.length <= 64), 'at most 64 names a time')
  const all = inD.flatMap((h) => h.names)
  assert.is(all.length, 150, 'each name once')
  assert.is(new Set(all).size, 150)
  assert.ok(walkAll(plain).root.equals(a.root), 'the hint changes nothing walked')
})

t('walk: entries in order, hard links as the first name, equal trees give equal Merkle roots and a byte changes the root', () => {
  const a = walkAll(memTree({ '/d': null, '/d/x': 'hello', '/e': 'world' }, { '/d/y': '/e' }))
  assert.equal(a.entries.map((x) => x.p), ['/', '/d', '/d/x', '/d/y', '/e'])
  assert.is(a.entries[4].h, '/d/y', 'the later name of a file is a link to the first one walked')
  assert.is(a.entries[3].c?.length, 16)
  const b = walkAll(memTree({ '/d': null, '/d/x': 'hello', '/e': 'world' }, { '/d/y': '/e' }))
  assert.ok(a.root.equals(b.root))
  const c = walkAll(memTree({ '/d': null, '/d/x': 'hellp', '/e': 'world' }, { '/d/y': '/e' }))
  assert.not.ok(a.root.equals(c.root))
})

t('a session: the Secondary\'s entries as frames give identical (root equal); a malformed entry fails it with PROTOCOL; VERIFY_END is sent either way', async () => {
  const files = { '/d': null, '/d/x': 'hello', '/e': 'world' }
  const theirs = walkAll(memTree(files))
  const sent: Message[] = []
  const s = new VerifySession('abcd', 'sec:1', 7, memTree(files), (m) => { sent.push(m); return true }, '/nonexistent-replicafs-root')
  s.entries({ t: MsgType.VERIFY_ENTRIES, id: 'abcd', i: 0, e: theirs.entries.slice(0, 2) })
  s.entries({ t: MsgType.VERIFY_ENTRIES, id: 'abcd', i: 1, e: theirs.entries.slice(2), end: 1, r: theirs.root })
  const r = await s.run()
  assert.ok(r.identical, JSON.stringify(r))
  assert.is(r.root.primary, r.root.secondary)
  assert.is(r.entries.secondary, 4)
  assert.ok(sent.some((m) => m.t === MsgType.VERIFY_ACK), 'frames acknowledged')
  assert.is(sent[sent.length - 1].t, MsgType.VERIFY_END)

  const bad = new VerifySession('abce', 'sec:1', 7, memTree(files), (m) => { sent.push(m); return true }, '/nonexistent-replicafs-root')
  bad.entries({ t: MsgType.VERIFY_ENTRIES, id: 'abce', i: 0, e: [{ p: 5 } as unknown as VerifyEntry] })
  let err: Error | null = null
  try { await bad.run() } catch (e) { err = e as Error }
  assert.match(String(err?.message), /malformed verify entry/)
  assert.is((err as { code?: string }).code, 'PROTOCOL')
  assert.is(sent[sent.length - 1].t, MsgType.VERIFY_END)
})

t.run()
