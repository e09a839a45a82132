/**
 * Exact replay after a power cut (issue 16), as pure logic: src/rvg/replay-plan.ts against a model
 * of a journaling filesystem. The model applies records to an in-memory tree of objects (names ->
 * object ids, so a rename moves an object and a re-created name is another object); a power cut
 * keeps every metadata change up to some point (the journal's order) and, of the file contents
 * written since the checkpoint, an arbitrary subset. For every cut point and several content
 * subsets, the plan's replay must end in exactly the tree after the whole log.
 * No FUSE, no daemon: the daemon-level check is test/powercut.test.ts.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { RecordType, packMeta, unpackValue, type Record, type RecordMeta } from '../src/format/record'
import { encodeTailEntry } from '../src/format/data-cursor'
import { planReplay, Namespace, setsDataCursor, type PlanRecord } from '../src/rvg/replay-plan'
import { restoreTail } from '../src/rvg/replay'
import { Srl } from '../src/srl'
import { applyRecordSync, FdCache, DataCursor } from '../src/apply'
import { SRL_BYTES_MIN } from '../src/limits'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

interface Obj { dir: boolean, data: string, mode: number, mtime: number }
interface Fs { names: Map<string, number>, objs: Map<number, Obj>, next: number }

const clone = (f: Fs): Fs => ({ names: new Map(f.names), objs: new Map([...f.objs].map(([k, o]) => [k, { ...o }])), next: f.next })
const parent = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/'

function touchDir (f: Fs, dir: string, t: number): void {
  const id = f.names.get(dir)
  if (id !== undefined) f.objs.get(id)!.mtime = t
}

/** One record applied to the model; `tolerant`: the replay tolerances of src/apply. */
function apply (f: Fs, r: Record, tolerant: boolean): void {
  const m = r.meta
  const t = m.t?.[0] ?? 0
  const obj = (): Obj => {
    const id = f.names.get(m.p!)
    if (id === undefined) throw new Error(`ENOENT ${m.p!} (${RecordType[r.type]} ${r.seq})`)
    return f.objs.get(id)!
  }
  switch (r.type) {
    case RecordType.CREATE: case RecordType.MKDIR: {
      if (f.names.has(m.p!)) { if (!tolerant) throw new Error(`EEXIST ${m.p!}`); if (r.type === RecordType.CREATE) obj().data = ''; obj().mode = m.m!; obj().mtime = t; touchDir(f, parent(m.p!), t); break }
      const id = f.next++
      f.objs.set(id, { dir: r.type === RecordType.MKDIR, data: '', mode: m.m!, mtime: t })
      f.names.set(m.p!, id)
      touchDir(f, parent(m.p!), t)
      break
    }
    case RecordType.LINK:
      if (f.names.has(m.d!)) { if (!tolerant) throw new Error('EEXIST'); touchDir(f, parent(m.d!), t); break }
      f.names.set(m.d!, f.names.get(m.p!)!)
      touchDir(f, parent(m.d!), t)
      break
    case RecordType.UNLINK: case RecordType.RMDIR:
      if (!f.names.has(m.p!)) { if (!tolerant) throw new Error('ENOENT'); touchDir(f, parent(m.p!), t); break }
      f.names.delete(m.p!)
      touchDir(f, parent(m.p!), t)
      break
    case RecordType.RENAME: {
      // as src/apply: an already-done rename still sets its directories' mtime
      if (!f.names.has(m.p!)) { if (!tolerant || !f.names.has(m.d!)) throw new Error(`ENOENT rename ${m.p!}`); touchDir(f, parent(m.p!), t); touchDir(f, parent(m.d!), t); break }
      const from = m.p!; const to = m.d!
      if (f.names.get(from) === f.names.get(to)) break
      for (const n of [...f.names.keys()]) if (n === to || n.startsWith(to + '/')) f.names.delete(n)
      for (const [n, id] of [...f.names]) {
        if (n === from || n.startsWith(from + '/')) { f.names.delete(n); f.names.set(to + n.slice(from.length), id) }
      }
      touchDir(f, parent(from), t); touchDir(f, parent(to), t)
      break
    }
    case RecordType.WRITE: { const o = obj(); const d = o.data.padEnd(m.o!, '\0'); o.data = d.slice(0, m.o!) + r.data.toString() + d.slice(m.o! + r.data.length); o.mtime = t; break }
    case RecordType.TRUNCATE: { const o = obj(); o.data = o.data.slice(0, m.s!).padEnd(m.s!, '\0'); o.mtime = t; break }
    case RecordType.CHMOD: obj().mode = m.m!; break
    case RecordType.UTIMENS: obj().mtime = t; break
    default: break
  }
}

const show = (f: Fs): string => [...f.names].sort(([a], [b]) => a < b ? -1 : 1).map(([n, id]) => { const o = f.objs.get(id)!; return `${n}:${o.dir ? 'd' : 'f'}:${o.mode}:${o.mtime}:${JSON.stringify(o.data)}` }).join(' | ')

let seq = 0
function rec (type: RecordType, meta: RecordMeta, data = ''): Record {
  seq++
  return { type, seq, meta: { ...meta, t: [seq * 10, 0] }, data: Buffer.from(data) }
}

/**
 * Applies `log` to `base` the way a journaling filesystem would keep it after a power cut: every
 * metadata change (each record but WRITE's content, and the data cursor after each non-WRITE
 * record) up to the `cut`-th, and the contents of the writes in `kept` (by sequence number).
 * Returns the state on disk and the cursor on it.
 */
function afterCut (base: Fs, log: Record[], cut: number, kept: (seq: number) => boolean): { disk: Fs, cursor: number } {
  // The metadata stream: [record, 'meta'] for each record, [record, 'cursor'] after each non-WRITE one.
  const stream: Array<[Record, 'meta' | 'cursor']> = []
  for (const r of log) { stream.push([r, 'meta']); if (setsDataCursor(r.type)) stream.push([r, 'cursor']) }
  const disk = clone(base)
  let cursor = 0
  // Contents: a WRITE's bytes reach the disk or not independently of the journal; model a lost
  // write as the file keeping its old bytes (size is metadata: it follows the journal).
  const shadow = clone(base) // the page cache: every record applied
  for (let i = 0; i < stream.length; i++) {
    const [r, what] = stream[i]
    if (what === 'cursor') { if (i < cut) cursor = r.seq; continue }
    const beforeIds = new Map(shadow.names)
    apply(shadow, r, false)
    if (i >= cut) continue
    if (r.type === RecordType.WRITE) {
      const id = beforeIds.get(r.meta.p!)!
      const o = disk.objs.get(id)!
      const newLen = Math.max(o.data.length, r.meta.o! + r.data.length)
      o.mtime = shadow.objs.get(id)!.mtime
      // lost: the write's own range holds anything (here '?'); a gap before it is a hole (zeros)
      const old = o.data.padEnd(r.meta.o!, '\0')
      o.data = kept(r.seq) ? shadow.objs.get(id)!.data.slice(0, newLen) : (old.slice(0, r.meta.o!) + '?'.repeat(r.data.length) + old.slice(r.meta.o! + r.data.length)).slice(0, newLen)
    } else {
      // metadata: the same change on the disk's objects
      apply(disk, r, false)
    }
  }
  // Writes after the cut whose content reached the disk anyway (the size did not: metadata).
  return { disk, cursor }
}

function replay (disk: Fs, log: Record[], cursor: number | null): Fs {
  const f = clone(disk)
  const records: PlanRecord[] = log.map((record) => ({ record, end: 0 }))
  const p = planReplay(records, cursor, log[log.length - 1].seq, (r) => {
    switch (r.type) {
      case RecordType.CREATE: case RecordType.MKDIR: return f.names.has(r.meta.p!)
      case RecordType.LINK: return f.names.has(r.meta.d!)
      default: return !f.names.has(r.meta.p!)
    }
  })
  for (const s of p.steps) {
    if (s.kind === 'times') for (const d of s.dirs!) touchDir(f, d, s.record.meta.t![0])
    else if (s.kind === 'apply') {
      apply(f, s.record, true)
    }
  }
  return f
}

/** A log that reuses names: the RENAME a->b; CREATE a; WRITE a, and more. */
function nameReuseLog (): Record[] {
  seq = 0
  return [
    rec(RecordType.MKDIR, { p: '/d', m: 0o755 }),
    rec(RecordType.CREATE, { p: '/a', m: 0o644 }),
    rec(RecordType.WRITE, { p: '/a', o: 0 }, 'first'),
    rec(RecordType.RENAME, { p: '/a', d: '/b' }),
    rec(RecordType.CREATE, { p: '/a', m: 0o600 }),
    rec(RecordType.WRITE, { p: '/a', o: 0 }, 'second-longer'),
    rec(RecordType.WRITE, { p: '/b', o: 2 }, 'XY'),
    rec(RecordType.LINK, { p: '/b', d: '/d/hard' }),
    rec(RecordType.UNLINK, { p: '/b' }),
    rec(RecordType.WRITE, { p: '/d/hard', o: 0 }, 'H'),
    rec(RecordType.RENAME, { p: '/a', d: '/d/hard' }), // over the other object
    rec(RecordType.CREATE, { p: '/b', m: 0o644 }),
    rec(RecordType.WRITE, { p: '/b', o: 0 }, 'third'),
    rec(RecordType.TRUNCATE, { p: '/b', s: 2 }),
    rec(RecordType.CHMOD, { p: '/d/hard', m: 0o640 }),
    rec(RecordType.RENAME, { p: '/d', d: '/e' }),
    rec(RecordType.WRITE, { p: '/e/hard', o: 20 }, 'tail'),
    rec(RecordType.UTIMENS, { p: '/b' }),
    rec(RecordType.CREATE, { p: '/d', m: 0o644 }),
    rec(RecordType.WRITE, { p: '/d', o: 0 }, 'a file where the directory was'),
    // a link made before the records that name the other name, which is then unlinked
    rec(RecordType.LINK, { p: '/d', d: '/e/l' }),
    rec(RecordType.CHMOD, { p: '/d', m: 0o600 }),
    rec(RecordType.WRITE, { p: '/d', o: 2 }, 'FILE'),
    rec(RecordType.UNLINK, { p: '/d' })
  ]
}

/** The name-reuse log, an empty tree, the tree after the whole log, and how many metadata changes it makes. */
function scenario (): { log: Record[], base: Fs, want: Fs, stream: number } {
  const log = nameReuseLog()
  const base: Fs = { names: new Map([['/', 0]]), objs: new Map([[0, { dir: true, data: '', mode: 0o755, mtime: 0 }]]), next: 1 }
  const want = clone(base)
  for (const r of log) apply(want, r, false)
  return { log, base, want, stream: log.length + log.filter((r) => setsDataCursor(r.type)).length }
}

test('every power cut, every mix of contents: replay ends in the tree after the whole log', () => {
  const { log, base, want, stream } = scenario()
  let cases = 0
  for (let cut = 0; cut <= stream; cut++) {
    for (const mix of [() => true, () => false, (s: number) => s % 2 === 0, (s: number) => s % 3 !== 0]) {
      const { disk, cursor } = afterCut(base, log, cut, mix)
      const got = replay(disk, log, cursor)
      assert.is(show(got), show(want), `cut after ${cut} of ${stream} metadata changes (cursor ${cursor}), contents ${mix.toString()}`)
      cases++
    }
  }
  assert.ok(cases > 100)
})

test('the old replay (no cursor) is not exact on the same log: the premise of the cursor', () => {
  const { log, base, want, stream } = scenario()
  let inexact = 0
  for (let cut = 0; cut <= stream; cut++) {
    const { disk } = afterCut(base, log, cut, () => true)
    let got: string
    try { got = show(replay(disk, log, null)) } catch (err) { got = (err as Error).message }
    if (got !== show(want)) inexact++
  }
  assert.ok(inexact > 0, 'some cut makes the replay without a cursor end elsewhere (or fail)')
})

test('Namespace: renames of the name or a directory above, links made before, unlinks, replacement', () => {
  seq = 0
  const r = (type: RecordType, p: string, d?: string): Record => rec(type, d === undefined ? { p } : { p, d })
  const follow = (p: string, later: Record[], before: Record[] = []): string | null => {
    const ns = new Namespace()
    for (const x of before) ns.apply(x)
    const id = ns.idOf(p)
    for (const x of later) ns.apply(x)
    return ns.nameOf(id, p)
  }
  assert.is(follow('/a', [r(RecordType.RENAME, '/a', '/b')]), '/b')
  assert.is(follow('/d/x', [r(RecordType.RENAME, '/d', '/e')]), '/e/x')
  assert.is(follow('/dx', [r(RecordType.RENAME, '/d', '/e')]), '/dx')
  assert.is(follow('/a', [r(RecordType.LINK, '/a', '/l'), r(RecordType.UNLINK, '/a')]), '/l')
  // the link was made before the record that names /a; /a is then unlinked: the object is /l
  assert.is(follow('/a', [r(RecordType.UNLINK, '/a')], [r(RecordType.LINK, '/a', '/l')]), '/l')
  assert.is(follow('/a', [r(RecordType.RENAME, '/b', '/a')]), null)
  assert.is(follow('/a', [r(RecordType.UNLINK, '/a'), r(RecordType.CREATE, '/a')]), null)
  assert.is(follow('/a', [r(RecordType.LINK, '/a', '/l'), r(RecordType.RENAME, '/a', '/l')]), '/a')
  assert.is(follow('/d/x', [r(RecordType.RENAME, '/d', '/e'), r(RecordType.RENAME, '/e/x', '/y'), r(RecordType.RMDIR, '/e')]), '/y')
})

test('a cursor past the end of the log is reported (the data directory ahead of it), not used', () => {
  const log = nameReuseLog()
  const p = planReplay(log.map((record) => ({ record, end: 0 })), 999, log.length, () => { throw new Error('not asked') })
  assert.ok(p.ahead)
  assert.is(p.boundary, null)
})

test('restoreTail: records the SRL lost but the data directory kept are put back; the last one only if it happened', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-restore-'))
  try {
    const root = path.join(dir, 'data')
    const again = path.join(dir, 'again')
    fs.mkdirSync(root)
    fs.mkdirSync(again)
    const srl = await Srl.open(path.join(dir, 'srl'), { ringBytes: SRL_BYTES_MIN, role: 'primary' })
    const fds = new FdCache(root)
    const t: [number, number] = [1_700_000_000, 5]
    const logged = (type: RecordType, meta: RecordMeta, data = ''): void => {
      const r = srl.append(type, meta, Buffer.from(data))
      applyRecordSync(root, { type, seq: r.seq, meta, data: Buffer.from(data) }, fds, false)
    }
    logged(RecordType.MKDIR, { p: '/d', m: 0o755, t })
    logged(RecordType.CREATE, { p: '/d/f', m: 0o644, t })
    logged(RecordType.WRITE, { p: '/d/f', o: 0, t }, 'hello')
    // Applied to the data directory, but lost from the SRL: only the data cursor's tail has them.
    const lost: Array<[number, RecordType, RecordMeta, string?]> = [
      [4, RecordType.RENAME, { p: '/d/f', d: '/g', t }],
      [5, RecordType.CREATE, { p: '/d/f', m: 0o600, t }],
      [6, RecordType.WRITE, { p: '/d/f', o: 0, l: 9, t }, 'new bytes'],
      [7, RecordType.CHMOD, { p: '/g', m: 0o640 }],
      [8, RecordType.WRITE, { p: '/g', o: 5, l: 6, t }, ' world']
    ]
    for (const [seq, type, meta, data] of lost) applyRecordSync(root, { type, seq, meta, data: Buffer.from(data ?? '') }, fds, false)
    fds.clear()
    // ... and the intent of a ninth, which never happened.
    const tail: Array<[number, RecordType, RecordMeta]> = [...lost.map(([s, y, m]) => [s, y, y === RecordType.WRITE ? { p: m.p, o: m.o, l: m.l } : m] as [number, RecordType, RecordMeta]), [9, RecordType.MKDIR, { p: '/never', m: 0o755, t }]]
    const { restored, c } = restoreTail(srl, root, { c: 3, g: 0, t: tail })
    assert.equal(restored.map((r) => RecordType[r.record.type]), ['RENAME', 'CREATE', 'CHMOD', 'WRITE', 'WRITE'], 'the namespace records as they were, then the written ranges as the data directory has them')
    assert.is(c, srl.lastSeq)
    assert.is(srl.lastSeq, 8)
    // The data directory is exactly what its log describes: apply the whole SRL to an empty directory.
    const fds2 = new FdCache(again)
    for (const { record } of srl.ring.scan({ seq: 0, offset: 0 }, srl.lastSeq)) applyRecordSync(again, record, fds2, false)
    fds2.clear()
    const look = (r: string): string => ['/d', '/d/f', '/g', '/never'].map((p) => {
      const st = fs.lstatSync(r + p, { throwIfNoEntry: false })
      return st === undefined ? `${p}: none` : `${p}: ${(st.mode & 0o7777).toString(8)} ${st.isFile() ? fs.readFileSync(r + p, 'utf8') : 'dir'}`
    }).join(', ')
    assert.is(look(again), look(root))
    assert.is(look(root), '/d: 755 dir, /d/f: 600 new bytes, /g: 640 hello world, /never: none')
    await srl.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a tail entry laid out around the record\'s own metadata bytes decodes as the entry', () => {
  // Every width of a msgpack unsigned integer for the sequence number.
  for (const seq of [1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40]) {
    for (const [type, meta] of [[RecordType.UNLINK, { p: '/d/f' + seq, t: [1700000000, 123] }], [RecordType.RENAME, { p: '/a', d: '/b/c', f: 1, t: [1, 2] }]] as Array<[RecordType, RecordMeta]>) {
      const made = encodeTailEntry([seq, type, meta], packMeta(type, meta))
      assert.equal(unpackValue(made), [seq, type, meta], `sequence number ${seq}`)
      // (msgpackr writes a number past 32 bits as a float 64, this as a uint 64: both read back.)
      if (seq < 2 ** 32) assert.equal(made, encodeTailEntry([seq, type, meta]), `sequence number ${seq}: the same bytes as msgpackr's`)
    }
  }
})

test('DataCursor: a run of writes to one file is one tail entry; a sync drops what it covers; the value reads back', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-cursor-'))
  try {
    const dc = DataCursor.open(dir)
    assert.ok(dc.name !== null, 'this filesystem takes the data cursor')
    assert.is(dc.read(), null, 'a cursor this process created says nothing about what was applied before')
    dc.settle(0)
    let synced = 0
    dc.syncLog = () => synced
    dc.intend(0, 1, RecordType.CREATE, { p: '/f', m: 0o644 })
    for (let seq = 2; seq <= 6; seq++) dc.intend(1, seq, RecordType.WRITE, { p: '/f', o: (seq - 2) * 100, l: 100 })
    dc.intend(1, 7, RecordType.WRITE, { p: '/f', o: 50, l: 10 }) // over the run: still the run
    dc.intend(1, 8, RecordType.WRITE, { p: '/g', o: 0, l: 10 }) // another file: another entry
    dc.intend(1, 9, RecordType.WRITE, { p: '/f', o: 0, l: 10 }) // the run was broken: another entry
    let v = dc.read()!
    assert.equal(v.t.map(([s, t, m]) => [s, RecordType[t], m.p, m.o, m.l, m.k]), [
      [1, 'CREATE', '/f', undefined, undefined, undefined],
      [2, 'WRITE', '/f', 0, 500, 7],
      [8, 'WRITE', '/g', 0, 10, undefined],
      [9, 'WRITE', '/f', 0, 10, undefined]
    ])
    assert.is(v.c, 1)
    dc.durable(6) // the run 2..7 is not covered whole: it stays
    dc.intend(1, 10, RecordType.CHMOD, { p: '/f', m: 0o600 })
    v = dc.read()!
    assert.equal(v.t.map(([s]) => s), [2, 8, 9, 10])
    dc.durable(9)
    synced = 10
    dc.intend(10, 11, RecordType.UNLINK, { p: '/g' })
    assert.equal(dc.read()!.t.map(([s]) => s), [10, 11])
    dc.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('DataCursor with overflow slots (the SRL\'s directory on the data filesystem): a tail of many records, read back whole', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-cursor-'))
  try {
    const data = path.join(dir, 'data')
    fs.mkdirSync(data)
    fs.mkdirSync(path.join(dir, 'srl'))
    const dc = DataCursor.open(data, undefined, path.join(dir, 'srl', 'cursor-tail'))
    dc.settle(0)
    let syncs = 0
    dc.syncLog = () => { syncs++; return 0 }
    const meta = (i: number): RecordMeta => ({ p: `/some/directory/name-${i}`, m: 0o644, u: 0, g: 0, t: [1_700_000_000, i] })
    for (let seq = 1; seq <= 400; seq++) dc.intend(seq - 1, seq, RecordType.CREATE, meta(seq))
    const v = dc.read()!
    assert.equal(v.t.map(([s]) => s), Array.from({ length: 400 }, (_, i) => i + 1), 'every record since the last sync, in order, across slots')
    assert.is(v.c, 399, 'c from the newest slot')
    assert.is(syncs, 0, 'no sync of the SRL: the slots had room')
    assert.ok(fs.readdirSync(path.join(dir, 'srl', 'cursor-tail')).length > 1)
    // Once the SRL has made them durable, they are dropped as their slots are reused.
    dc.durable(400)
    for (let seq = 401; seq <= 800; seq++) dc.intend(seq - 1, seq, RecordType.CREATE, meta(seq))
    assert.is(syncs, 0)
    const w = dc.read()!
    assert.ok(w.t.filter(([s]) => s > 400).length === 400, 'the new records are all there')
    dc.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test.run()
