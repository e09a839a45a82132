/**
 * The SRL holds every change, in the order the application made it: with --retain nothing is
 * released, so after a stop srl-dump must show exactly the operations issued, with sequence
 * numbers increasing by one.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, assertCleanSlate, cleanupAll, isolated, timed, execOk, srlDump, cli, helperScript, type Primary, type DumpRecord
} from './helpers'

const t = suite('srl-order')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`srl-order.test: cleanup had to force: ${forced.join('; ')}`)
})

/** The write's file offset: the contract says `offset`; the dump names it `fileOffset` (its `offset` is the ring position). */
const fileOffset = (r: DumpRecord): unknown => (r.fileOffset !== undefined ? r.fileOffset : r.offset)

const norm = (p: unknown): string => (typeof p === 'string' ? '/' + p.replace(/^\/+/, '') : `<${String(p)}>`)

interface Expected { type: string, path: string, offset?: number, length?: number }

function describe (recs: DumpRecord[]): string {
  return recs.map((r) => `${r.seq} ${r.type} ${norm(r.path)}${r.type === 'WRITE' ? ` @${String(fileOffset(r))}+${String(r.length)}` : ''}`).join('\n')
}

function assertConsecutive (recs: DumpRecord[]): void {
  assert.ok(recs.length > 0, 'the SRL holds records')
  for (const r of recs) assert.ok(Number.isSafeInteger(r.seq) && r.seq >= 1, `seq ${String(r.seq)} is a positive integer`)
  for (let i = 1; i < recs.length; i++) {
    assert.is(recs[i].seq, recs[i - 1].seq + 1, `seq after ${recs[i - 1].seq} is ${recs[i - 1].seq + 1} (no gaps, no reordering)\n${describe(recs)}`)
  }
}

async function stopped (p: Primary): Promise<DumpRecord[]> {
  await p.stop()
  return (await srlDump(p.state)).filter((r) => r.type !== 'WRAP')
}

t('a recognisable sequence of operations is logged exactly, in order', isolated(120_000, async () => {
  const p = await startPrimary({ retain: true })
  const m = (rel: string): string => path.join(p.mount, rel)
  const fh = await fsp.open(m('f1'), 'wx', 0o644)
  try {
    await fh.write(Buffer.from('hello'), 0, 5, 0)
    await fh.write(Buffer.from('abc'), 0, 3, 100)
  } finally {
    await fh.close()
  }
  await fsp.mkdir(m('dir'))
  await fsp.rename(m('f1'), m('dir/f2'))
  await fsp.symlink('f2', m('dir/link'))
  await fsp.link(m('dir/f2'), m('hard'))
  await fsp.chmod(m('hard'), 0o600)
  await fsp.chown(m('hard'), 1, 2)
  await fsp.truncate(m('hard'), 2)
  await fsp.utimes(m('hard'), 1_000_000, 2_000_000)
  await execOk('mkfifo', [m('fifo')], { timeoutMs: 20_000 })
  await execOk(process.execPath, [helperScript('xattr-tool'), 'set', m('hard'), 'user.k', '6869'], { timeoutMs: 20_000 })
  await execOk(process.execPath, [helperScript('xattr-tool'), 'remove', m('hard'), 'user.k'], { timeoutMs: 20_000 })
  await execOk('fallocate', ['-l', '64K', m('dir/f2')], { timeoutMs: 20_000 })
  await fsp.unlink(m('dir/link'))
  await fsp.mkdir(m('empty'))
  await fsp.rmdir(m('empty'))
  await fsp.unlink(m('fifo'))

  const locked = await cli(['srl-dump', '--state', p.state, '--json'], { timeoutMs: 30_000 })
  assert.is.not(locked.code, 0, 'srl-dump refuses a running daemon\'s state dir')
  assert.match(locked.stderr, /locked/i)

  const st = await p.status()
  const recs = await stopped(p)
  const expected: Expected[] = [
    { type: 'CREATE', path: '/f1' },
    { type: 'WRITE', path: '/f1', offset: 0, length: 5 },
    { type: 'WRITE', path: '/f1', offset: 100, length: 3 },
    { type: 'MKDIR', path: '/dir' },
    { type: 'RENAME', path: '/f1' },
    { type: 'SYMLINK', path: '/dir/link' },
    { type: 'LINK', path: '/dir/f2' },
    { type: 'CHMOD', path: '/hard' },
    { type: 'CHOWN', path: '/hard' },
    { type: 'TRUNCATE', path: '/hard' },
    { type: 'UTIMENS', path: '/hard' },
    { type: 'MKNOD', path: '/fifo' },
    { type: 'SETXATTR', path: '/hard' },
    { type: 'REMOVEXATTR', path: '/hard' },
    { type: 'FALLOCATE', path: '/dir/f2' },
    { type: 'UNLINK', path: '/dir/link' },
    { type: 'MKDIR', path: '/empty' },
    { type: 'RMDIR', path: '/empty' },
    { type: 'UNLINK', path: '/fifo' }
  ]
  // A record about an inode (not a name) names it by one of its names: the compat transport by the
  // one the caller used (/hard), the ll transport by the one its node was looked up by (/dir/f2);
  // the Secondary reaches the same inode either way.
  const INODE_RECORDS = new Set(['CHMOD', 'CHOWN', 'TRUNCATE', 'UTIMENS', 'SETXATTR', 'REMOVEXATTR', 'FALLOCATE'])
  const either = (e: Expected): Expected => INODE_RECORDS.has(e.type) && (e.path === '/hard' || e.path === '/dir/f2') ? { ...e, path: '/hard or /dir/f2' } : e
  expected.splice(0, expected.length, ...expected.map(either))
  const got: Expected[] = recs.map((r) => {
    const e: Expected = either({ type: r.type, path: norm(r.path) })
    if (r.type === 'WRITE') { e.offset = fileOffset(r) as number; e.length = r.length }
    return e
  })
  assert.equal(got, expected, `SRL contents:\n${describe(recs)}`)
  assertConsecutive(recs)
  assert.is(st.srl.records, expected.length, 'status counted the same records while running')
  assert.is(st.srl.oldestSeq, recs[0].seq)
  assert.is(st.srl.newestSeq, recs[recs.length - 1].seq)
}))

t('interleaved writes to several files are logged in issue order', isolated(180_000, async () => {
  const p = await startPrimary({ retain: true })
  const n = 600
  const files = 3
  const fhs = await Promise.all(Array.from({ length: files }, async (_, f) => await fsp.open(path.join(p.mount, `w${f}`), 'w')))
  try {
    for (let j = 0; j < n; j++) {
      const f = j % files
      const i = Math.floor(j / files)
      const buf = Buffer.alloc(4096, j & 0xff)
      const { bytesWritten } = await fhs[f].write(buf, 0, buf.length, i * 4096)
      assert.is(bytesWritten, 4096)
    }
  } finally {
    await Promise.all(fhs.map(async (fh) => await fh.close()))
  }
  const recs = await stopped(p)
  assertConsecutive(recs)
  const writes = recs.filter((r) => r.type === 'WRITE')
  const creates = recs.filter((r) => r.type === 'CREATE')
  assert.is(creates.length, files, `one CREATE per file:\n${describe(recs.slice(0, 10))}`)
  assert.is(recs.length, files + n, 'nothing but the creates and the writes was logged')
  assert.is(writes.length, n)
  for (let j = 0; j < n; j++) {
    const want = { path: `/w${j % files}`, offset: Math.floor(j / files) * 4096, length: 4096 }
    const got = { path: norm(writes[j].path), offset: fileOffset(writes[j]), length: writes[j].length }
    assert.equal(got, want, `write #${j} (seq ${writes[j].seq}) is in issue order`)
  }
  // the data itself matches what was written
  for (let f = 0; f < files; f++) {
    const buf = await fsp.readFile(path.join(p.data, `w${f}`))
    assert.is(buf.length, (n / files) * 4096)
    for (let i = 0; i < n / files; i++) assert.is(buf[i * 4096], (i * files + f) & 0xff, `w${f} chunk ${i}`)
  }
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
