/**
 * POSIX operations through a running Primary's FUSE mount, each checked through the mount and
 * then in the data directory once the daemon has applied everything it logged.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import { constants as C } from 'fs'
import * as path from 'path'
import { decodeDataCursor } from '../src/format/data-cursor'
import {
  startPrimary, assertCleanSlate, cleanupAll, timed, exec, execOk, sha256File, summary, diffTrees, helperScript,
  fuseMountAt, cli, srlDump, type Primary, type DumpRecord
} from './helpers'

const t = suite('posix')
let primary: Primary | undefined

function P (): Primary {
  if (primary === undefined) throw new Error('no primary running (the "primary starts" test failed)')
  return primary
}
const m = (rel: string): string => path.join(P().mount, rel)
const d = (rel: string): string => path.join(P().data, rel)
const UTC = { ...process.env, TZ: 'UTC' }

async function errCode (p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
  return 'no error'
}

async function bothRead (rel: string): Promise<[Buffer, Buffer]> {
  const viaMount = await fsp.readFile(m(rel))
  await P().quiesce()
  return [viaMount, await fsp.readFile(d(rel))]
}

async function assertSameStat (rel: string): Promise<void> {
  await P().quiesce()
  const [a, b] = await Promise.all([summary(m(rel)), summary(d(rel))])
  assert.equal(a, b, `stat of ${rel} through the mount equals the data dir's`)
}

async function xattr (...args: string[]): Promise<{ ok?: boolean, value?: string, names?: string[], error?: string }> {
  const r = await execOk(process.execPath, [helperScript('xattr-tool'), ...args], { timeoutMs: 30_000 })
  return JSON.parse(r.stdout) as { ok?: boolean, value?: string, names?: string[], error?: string }
}

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`posix.test: cleanup had to force: ${forced.join('; ')}`)
})

t('primary starts and mounts', timed(120_000, async () => {
  primary = await startPrimary()
  assert.ok(await fuseMountAt(primary.mount), 'mount point is a FUSE mount')
  const st = await primary.status()
  assert.is(st.role, 'primary')
  assert.is(path.resolve(st.mount), primary.mount)
  assert.is(path.resolve(st.data), primary.data)
  assert.is(st.srl.capacityBytes, 16 * 1024 * 1024)
  assert.is(st.pid, primary.pid)
  const human = await cli(['status', '--state', primary.state], { timeoutMs: 20_000 })
  assert.is(human.code, 0, human.stderr)
  assert.ok(human.stdout.includes(String(st.pid)) && human.stdout.includes(primary.mount), `human status names the pid and mount:\n${human.stdout}`)
}))

t('create, write, read back', timed(30_000, async () => {
  await fsp.writeFile(m('a.txt'), 'hello world')
  const [viaMount, inData] = await bothRead('a.txt')
  assert.is(viaMount.toString(), 'hello world')
  assert.is(inData.toString(), 'hello world')
}))

t('append', timed(30_000, async () => {
  await fsp.appendFile(m('a.txt'), ' and more')
  const fh = await fsp.open(m('a.txt'), 'a')
  try {
    await fh.write('!')
  } finally {
    await fh.close()
  }
  const [viaMount, inData] = await bothRead('a.txt')
  assert.is(viaMount.toString(), 'hello world and more!')
  assert.is(inData.toString(), 'hello world and more!')
}))

t('overwrite in the middle', timed(30_000, async () => {
  const fh = await fsp.open(m('a.txt'), 'r+')
  try {
    const { bytesWritten } = await fh.write(Buffer.from('XYZ'), 0, 3, 6)
    assert.is(bytesWritten, 3)
  } finally {
    await fh.close()
  }
  const [viaMount, inData] = await bothRead('a.txt')
  assert.is(viaMount.toString(), 'hello XYZld and more!')
  assert.is(inData.toString(), 'hello XYZld and more!')
}))

t('truncate and ftruncate, shrink and grow', timed(30_000, async () => {
  await fsp.writeFile(m('t.bin'), 'abcdefghij')
  await fsp.truncate(m('t.bin'), 4)
  let [a, b] = await bothRead('t.bin')
  assert.is(a.toString(), 'abcd')
  assert.equal(b, a)
  await fsp.truncate(m('t.bin'), 8)
  ;[a, b] = await bothRead('t.bin')
  assert.equal(a, Buffer.concat([Buffer.from('abcd'), Buffer.alloc(4)]))
  assert.equal(b, a)

  const fh = await fsp.open(m('t.bin'), 'r+')
  try {
    await fh.truncate(2)
    assert.is((await fh.stat()).size, 2)
    await fh.truncate(70_000)
    assert.is((await fh.stat()).size, 70_000)
    await fh.write(Buffer.from('Z'), 0, 1, 69_999)
  } finally {
    await fh.close()
  }
  ;[a, b] = await bothRead('t.bin')
  const want = Buffer.alloc(70_000)
  want.write('ab', 0)
  want.write('Z', 69_999)
  assert.ok(a.equals(want), 'ftruncate grow/shrink content through the mount')
  assert.ok(b.equals(want), 'ftruncate grow/shrink content in the data dir')
  await assertSameStat('t.bin')
}))

t('mkdir, rmdir, ENOTEMPTY', timed(30_000, async () => {
  await fsp.mkdir(m('d1'))
  await fsp.mkdir(m('d1/sub'), { mode: 0o750 })
  await fsp.writeFile(m('d1/f'), 'x')
  assert.ok((await fsp.stat(m('d1'))).isDirectory())
  assert.is(await errCode(fsp.rmdir(m('d1'))), 'ENOTEMPTY')
  await fsp.rmdir(m('d1/sub'))
  await fsp.unlink(m('d1/f'))
  assert.equal(await fsp.readdir(m('d1')), [])
  await fsp.rmdir(m('d1'))
  assert.is(await errCode(fsp.stat(m('d1'))), 'ENOENT')
  await P().quiesce()
  assert.is(await errCode(fsp.stat(d('d1'))), 'ENOENT')
  await fsp.mkdir(m('d2'), { mode: 0o750 })
  await assertSameStat('d2')
  assert.is((await fsp.stat(d('d2'))).mode & 0o777, 0o750 & ~process.umask())
}))

t('unlink', timed(30_000, async () => {
  await fsp.writeFile(m('gone'), 'bye')
  await P().quiesce()
  assert.is((await fsp.readFile(d('gone'))).toString(), 'bye')
  await fsp.unlink(m('gone'))
  assert.is(await errCode(fsp.stat(m('gone'))), 'ENOENT')
  assert.is(await errCode(fsp.unlink(m('gone'))), 'ENOENT')
  await P().quiesce()
  assert.is(await errCode(fsp.stat(d('gone'))), 'ENOENT')
}))

t('rename: plain, over an existing file, dir over an empty dir, dir over a non-empty dir', timed(30_000, async () => {
  await fsp.writeFile(m('r1'), 'one')
  await fsp.rename(m('r1'), m('r2'))
  assert.is(await errCode(fsp.stat(m('r1'))), 'ENOENT')
  assert.is((await fsp.readFile(m('r2'))).toString(), 'one')

  await fsp.writeFile(m('victim'), 'old content that is longer')
  await fsp.rename(m('r2'), m('victim'))
  assert.is(await errCode(fsp.stat(m('r2'))), 'ENOENT')
  assert.is((await fsp.readFile(m('victim'))).toString(), 'one')

  await fsp.mkdir(m('srcdir'))
  await fsp.writeFile(m('srcdir/inner'), 'inside')
  await fsp.mkdir(m('emptydir'))
  await fsp.rename(m('srcdir'), m('emptydir'))
  assert.is(await errCode(fsp.stat(m('srcdir'))), 'ENOENT')
  assert.is((await fsp.readFile(m('emptydir/inner'))).toString(), 'inside')

  await fsp.mkdir(m('full'))
  await fsp.writeFile(m('full/x'), 'x')
  await fsp.mkdir(m('mover'))
  const code = await errCode(fsp.rename(m('mover'), m('full')))
  assert.ok(code === 'ENOTEMPTY' || code === 'EEXIST', `rename over a non-empty dir fails with ENOTEMPTY/EEXIST, got ${code}`)
  assert.ok((await fsp.stat(m('mover'))).isDirectory(), 'source dir still there after the failed rename')

  await P().quiesce()
  assert.is(await errCode(fsp.stat(d('r1'))), 'ENOENT')
  assert.is(await errCode(fsp.stat(d('r2'))), 'ENOENT')
  assert.is(await errCode(fsp.stat(d('srcdir'))), 'ENOENT')
  assert.is((await fsp.readFile(d('victim'))).toString(), 'one')
  assert.is((await fsp.readFile(d('emptydir/inner'))).toString(), 'inside')
  assert.is((await fsp.readFile(d('full/x'))).toString(), 'x')
  assert.ok((await fsp.stat(d('mover'))).isDirectory())
}))

t('hard link: nlink 2, shared content', timed(30_000, async () => {
  await fsp.writeFile(m('h1'), 'shared')
  await fsp.link(m('h1'), m('h2'))
  assert.is((await fsp.stat(m('h1'))).nlink, 2)
  assert.is((await fsp.stat(m('h2'))).nlink, 2)
  const fh = await fsp.open(m('h2'), 'r+')
  try {
    await fh.write(Buffer.from('S'), 0, 1, 0)
  } finally {
    await fh.close()
  }
  assert.is((await fsp.readFile(m('h1'))).toString(), 'Shared')
  await P().quiesce()
  const [s1, s2] = await Promise.all([fsp.stat(d('h1')), fsp.stat(d('h2'))])
  assert.is(s1.nlink, 2)
  assert.is(s1.ino, s2.ino, 'data dir names are one inode')
  assert.is((await fsp.readFile(d('h1'))).toString(), 'Shared')
  await assertSameStat('h1')
}))

t('symlink and readlink', timed(30_000, async () => {
  await fsp.symlink('a.txt', m('sl'))
  await fsp.symlink('/no/such/target', m('dangling'))
  assert.is(await fsp.readlink(m('sl')), 'a.txt')
  assert.is(await fsp.readlink(m('dangling')), '/no/such/target')
  assert.ok((await fsp.lstat(m('sl'))).isSymbolicLink())
  assert.is((await fsp.readFile(m('sl'))).toString(), 'hello XYZld and more!')
  await P().quiesce()
  assert.is(await fsp.readlink(d('sl')), 'a.txt')
  assert.is(await fsp.readlink(d('dangling')), '/no/such/target')
  await assertSameStat('sl')
}))

t('a new entry\'s atime, mtime and ctime are one instant (file, directory, symlink, FIFO), as the record says', timed(60_000, async () => {
  // Issue 14's fifth defect: times were set from the record after the entry was made, so its
  // ctime came after its mtime (and at second resolution differed now and then). 40 of each.
  await fsp.mkdir(m('instants'))
  const made: string[] = []
  for (let i = 0; i < 40; i++) {
    await fsp.writeFile(m(`instants/f${i}`), '')
    await fsp.mkdir(m(`instants/d${i}`))
    await fsp.symlink('f0', m(`instants/s${i}`))
    made.push(`instants/f${i}`, `instants/d${i}`, `instants/s${i}`)
  }
  await execOk('mkfifo', [m('instants/fifo')])
  made.push('instants/fifo')
  const differ: string[] = []
  for (const rel of made) {
    const st = await fsp.lstat(m(rel), { bigint: true })
    if (st.ctimeNs !== st.mtimeNs || st.atimeNs !== st.mtimeNs) differ.push(`${rel}: atime ${st.atimeNs} mtime ${st.mtimeNs} ctime ${st.ctimeNs}`)
  }
  assert.equal(differ, [], `through the mount, a new entry has atime = mtime = ctime: ${differ.slice(0, 5).join('; ')}`)
  await P().quiesce()
  // In the data directory, to the nanosecond (the compat transport shows microseconds).
  for (const rel of made) {
    const st = await fsp.lstat(d(rel), { bigint: true })
    if (st.ctimeNs !== st.mtimeNs || st.atimeNs !== st.mtimeNs) differ.push(`${rel}: atime ${st.atimeNs} mtime ${st.mtimeNs} ctime ${st.ctimeNs}`)
  }
  assert.equal(differ, [], `in the data directory, a new entry has atime = mtime = ctime: ${differ.slice(0, 5).join('; ')}`)
  // Times never go back: a write right after the create leaves an mtime no earlier than the
  // creation's (the kernel's stamp may be ahead of the coarse clock writes are stamped from).
  const back: string[] = []
  for (let i = 0; i < 40; i++) {
    const fh = await fsp.open(m(`instants/w${i}`), 'w')
    const made = await fh.stat({ bigint: true })
    await fh.write(Buffer.alloc(4099, 1), 0, 4099, 0) // queued (applied after the reply)
    await fh.close()
    const st = await fsp.stat(m(`instants/w${i}`), { bigint: true })
    if (st.mtimeNs < made.mtimeNs || st.ctimeNs < st.mtimeNs) back.push(`w${i}: made ${made.mtimeNs}, written ${st.mtimeNs}, ctime ${st.ctimeNs}`)
  }
  assert.equal(back, [], `a write's mtime is not before the file's creation: ${back.slice(0, 5).join('; ')}`)
}))

t('chmod', timed(30_000, async () => {
  await fsp.writeFile(m('perm'), 'p')
  await fsp.chmod(m('perm'), 0o4751)
  assert.is((await fsp.stat(m('perm'))).mode & 0o7777, 0o4751)
  await fsp.chmod(m('perm'), 0o600)
  assert.is((await fsp.stat(m('perm'))).mode & 0o7777, 0o600)
  await P().quiesce()
  assert.is((await fsp.stat(d('perm'))).mode & 0o7777, 0o600)
  await assertSameStat('perm')
}))

t('chown to 1234:5678', timed(30_000, async () => {
  await fsp.writeFile(m('owned'), 'o')
  await fsp.chown(m('owned'), 1234, 5678)
  const st = await fsp.stat(m('owned'))
  assert.is(st.uid, 1234)
  assert.is(st.gid, 5678)
  await fsp.lchown(m('sl'), 4321, 8765)
  await P().quiesce()
  const sd = await fsp.stat(d('owned'))
  assert.is(sd.uid, 1234)
  assert.is(sd.gid, 5678)
  const sl = await fsp.lstat(d('sl'))
  assert.is(sl.uid, 4321, 'lchown changed the symlink, not its target')
  assert.is(sl.gid, 8765)
  assert.is((await fsp.stat(d('a.txt'))).uid, 0, 'symlink target untouched')
  await assertSameStat('owned')
}))

t('utimes with sub-second precision (touch -d with ns)', timed(30_000, async () => {
  await fsp.writeFile(m('timed'), 't')
  await execOk('touch', ['-d', '2001-02-03 04:05:06.123456789', m('timed')], { env: UTC, timeoutMs: 20_000 })
  const wantUs = 981173106123456n
  const viaMount = await fsp.stat(m('timed'), { bigint: true })
  assert.is(viaMount.mtimeNs / 1000n, wantUs, 'mtime µs through the mount')
  assert.is(viaMount.atimeNs / 1000n, wantUs, 'atime µs through the mount')
  await P().quiesce()
  const inData = await fsp.stat(d('timed'), { bigint: true })
  assert.is(inData.mtimeNs / 1000n, wantUs, 'mtime µs in the data dir')
  assert.is(inData.atimeNs / 1000n, wantUs, 'atime µs in the data dir')
}))

t('touch -m leaves atime alone; touch sets now', timed(30_000, async () => {
  const atimeUs = 981173106123456n
  await execOk('touch', ['-m', '-d', '2011-12-13 14:15:16.5', m('timed')], { env: UTC, timeoutMs: 20_000 })
  let st = await fsp.stat(m('timed'), { bigint: true })
  assert.is(st.mtimeNs / 1000n, 1323785716500000n)
  assert.is(st.atimeNs / 1000n, atimeUs, 'atime unchanged by touch -m')
  await P().quiesce()
  st = await fsp.stat(d('timed'), { bigint: true })
  assert.is(st.mtimeNs / 1000n, 1323785716500000n)
  assert.is(st.atimeNs / 1000n, atimeUs)

  const before = BigInt(Date.now() - 2000) * 1000n
  await execOk('touch', [m('timed')], { timeoutMs: 20_000 })
  const after = BigInt(Date.now() + 2000) * 1000n
  st = await fsp.stat(m('timed'), { bigint: true })
  const mt = st.mtimeNs / 1000n
  assert.ok(mt >= before && mt <= after, `touch set mtime to now (${mt} within [${before}, ${after}])`)
  await assertSameStat('timed')
}))

t('mkfifo', timed(30_000, async () => {
  await execOk('mkfifo', ['-m', '0640', m('pipe')], { timeoutMs: 20_000 })
  const st = await fsp.lstat(m('pipe'))
  assert.ok(st.isFIFO(), 'a FIFO through the mount')
  assert.is(st.mode & 0o777, 0o640)
  await P().quiesce()
  assert.ok((await fsp.lstat(d('pipe'))).isFIFO(), 'a FIFO in the data dir')
  await assertSameStat('pipe')
}))

t('xattrs: set, get, list, create/replace flags, remove', timed(60_000, async () => {
  await fsp.writeFile(m('xa'), 'x')
  const val = '00010203ff41'
  assert.equal(await xattr('set', m('xa'), 'user.test', val), { ok: true })
  assert.equal(await xattr('get', m('xa'), 'user.test'), { value: val })
  assert.ok((await xattr('list', m('xa'))).names?.includes('user.test'), 'listxattr through the mount names it')
  assert.equal(await xattr('set', m('xa'), 'user.test', '41', 'create'), { error: 'EEXIST' })
  assert.equal(await xattr('set', m('xa'), 'user.new', '41', 'replace'), { error: 'ENODATA' })
  assert.equal(await xattr('set', m('xa'), 'user.empty', '', 'create'), { ok: true })
  await P().quiesce()
  assert.equal(await xattr('get', d('xa'), 'user.test'), { value: val })
  assert.equal(await xattr('get', d('xa'), 'user.empty'), { value: '' })
  assert.equal(await xattr('remove', m('xa'), 'user.test'), { ok: true })
  assert.equal(await xattr('get', m('xa'), 'user.test'), { error: 'ENODATA' })
  await P().quiesce()
  assert.equal(await xattr('get', d('xa'), 'user.test'), { error: 'ENODATA' })
  assert.equal(await xattr('get', d('xa'), 'user.empty'), { value: '' })
}))

t('the data cursor (an xattr of the data directory\'s root) is neither shown nor changeable through the mount', timed(60_000, async () => {
  await fsp.mkdir(m('cursor-probe'))
  await P().quiesce()
  const onData = await xattr('get', d(''), 'trusted.replicafs.applied')
  const value = onData.value !== undefined ? decodeDataCursor(Buffer.from(onData.value, 'hex')) : null
  assert.ok(value !== null, `the data directory's root has a data cursor: ${JSON.stringify(onData)}`)
  assert.ok(value.c >= 0 && value.g >= 0, `a data cursor value: ${JSON.stringify(value)}`)
  assert.equal(await xattr('get', m(''), 'trusted.replicafs.applied'), { error: 'ENODATA' })
  assert.not.ok((await xattr('list', m(''))).names?.includes('trusted.replicafs.applied'), 'listxattr of the mount root does not name it')
  assert.equal(await xattr('set', m(''), 'trusted.replicafs.applied', '0000000000000000'), { error: 'EPERM' })
  assert.equal(await xattr('remove', m(''), 'trusted.replicafs.applied'), { error: 'EPERM' })
  assert.equal(await xattr('get', d(''), 'trusted.replicafs.applied'), onData, 'unchanged')
}))

t('fallocate -l 1M', timed(30_000, async () => {
  await execOk('fallocate', ['-l', '1M', m('falloc')], { timeoutMs: 20_000 })
  assert.is((await fsp.stat(m('falloc'))).size, 1 << 20)
  const zeros = Buffer.alloc(1 << 20)
  const [a, b] = await bothRead('falloc')
  assert.ok(a.equals(zeros), 'reads back as zeros through the mount')
  assert.ok(b.equals(zeros), 'is 1 MiB of zeros in the data dir')
  assert.ok((await fsp.stat(d('falloc'))).blocks >= 2048, 'space is allocated in the data dir')
}))

t('namespace operations: entries and their directories get the records\' t as mtime, in the data dir and through the mount', timed(120_000, async () => {
  // Its own Primary with --retain, so that after a stop srl-dump still has every record.
  const p = await startPrimary({ retain: true })
  const pm = (rel: string): string => path.join(p.mount, rel)
  const pd = (rel: string): string => path.join(p.data, rel)
  let running = true
  try {
    await fsp.mkdir(pm('top'))                          // MKDIR /top
    await fsp.writeFile(pm('top/f'), 'x')               // CREATE /top/f, WRITE
    await execOk('mkfifo', [pm('top/pipe')], { timeoutMs: 20_000 }) // MKNOD /top/pipe
    await fsp.symlink('f', pm('top/sl'))                // SYMLINK /top/sl
    await fsp.mkdir(pm('other'))                        // MKDIR /other
    await fsp.link(pm('top/f'), pm('other/hard'))       // LINK -> /other/hard
    await fsp.mkdir(pm('top/gone'))                     // MKDIR /top/gone
    await fsp.rmdir(pm('top/gone'))                     // RMDIR /top/gone
    await fsp.writeFile(pm('other/tmp'), '')            // CREATE /other/tmp
    await fsp.unlink(pm('other/tmp'))                   // UNLINK /other/tmp
    await fsp.mkdir(pm('top/sub'))                      // MKDIR /top/sub
    await fsp.rename(pm('top/pipe'), pm('other/pipe'))  // RENAME across directories
    await fsp.rename(pm('top/sub'), pm('top/sub2'))     // RENAME within /top
    await execOk('fallocate', ['-l', '64K', pm('top/f')], { timeoutMs: 20_000 }) // FALLOCATE /top/f

    // Through the mount (µs) and in the data dir (ns): the same times, parents included.
    await p.quiesce()
    // (Not other/hard through the mount: libfuse gives each name of a hard link its own node, so the
    // kernel may show that name's cached attributes, from before the fallocate, for up to a second.)
    const rels = ['', 'top', 'top/f', 'top/sl', 'top/sub2', 'other', 'other/pipe']
    const inData = new Map<string, { atimeNs: bigint, mtimeNs: bigint }>()
    for (const rel of [...rels, 'other/hard']) {
      const b = await fsp.lstat(pd(rel), { bigint: true })
      if (rels.includes(rel)) {
        const a = await fsp.lstat(pm(rel), { bigint: true })
        assert.is(a.mtimeNs / 1000n, b.mtimeNs / 1000n, `${rel || '/'}: mtime through the mount is the data dir's`)
        if (rel.startsWith('top/') || rel.startsWith('other/')) assert.is(a.atimeNs / 1000n, b.atimeNs / 1000n, `${rel}: atime through the mount is the data dir's`)
      }
      inData.set(rel, { atimeNs: b.atimeNs, mtimeNs: b.mtimeNs })
    }

    await p.stop()
    running = false
    const recs = (await srlDump(p.state)).filter((r) => r.type !== 'WRAP')
    const one = (type: string, rel: string): DumpRecord => {
      const found = recs.filter((r) => r.type === type && r.path === rel)
      assert.is(found.length, 1, `one ${type} ${rel} in the SRL`)
      return found[0]
    }
    const tOf = (r: DumpRecord): bigint => {
      const t = r.t as [number, number] | undefined
      assert.ok(Array.isArray(t) && t.length === 2, `${r.type} ${String(r.path)} carries t: ${JSON.stringify(r)}`)
      return BigInt(t[0]) * 1_000_000_000n + BigInt(t[1])
    }
    for (const type of ['CREATE', 'MKDIR', 'MKNOD', 'SYMLINK', 'LINK', 'UNLINK', 'RMDIR', 'RENAME', 'FALLOCATE']) {
      for (const r of recs.filter((r) => r.type === type)) tOf(r)
    }
    const expect = (rel: string, what: 'atimeNs' | 'mtimeNs', r: DumpRecord): void => {
      assert.is(inData.get(rel)![what], tOf(r), `${rel || '/'}: ${what === 'atimeNs' ? 'atime' : 'mtime'} is the t of ${r.type} ${String(r.path)} (seq ${r.seq})`)
    }
    const renameAcross = one('RENAME', '/top/pipe')
    const renameWithin = one('RENAME', '/top/sub')
    // The data dir's times are exactly (to the nanosecond) the t of the last record that changed them.
    expect('', 'mtimeNs', one('MKDIR', '/other'))
    expect('top', 'mtimeNs', renameWithin)
    expect('other', 'mtimeNs', renameAcross)
    expect('top/f', 'atimeNs', one('CREATE', '/top/f'))
    expect('top/f', 'mtimeNs', one('FALLOCATE', '/top/f'))
    expect('other/hard', 'mtimeNs', one('FALLOCATE', '/top/f'))
    expect('top/sl', 'atimeNs', one('SYMLINK', '/top/sl'))
    expect('top/sl', 'mtimeNs', one('SYMLINK', '/top/sl'))
    expect('top/sub2', 'atimeNs', one('MKDIR', '/top/sub'))
    expect('top/sub2', 'mtimeNs', one('MKDIR', '/top/sub'))
    expect('other/pipe', 'atimeNs', one('MKNOD', '/top/pipe'))
    expect('other/pipe', 'mtimeNs', one('MKNOD', '/top/pipe'))
  } finally {
    if (running) await p.stop().catch(() => undefined)
  }
}))

t('statfs (df) reports the data directory\'s filesystem', timed(30_000, async () => {
  const [a, b] = await Promise.all([fsp.statfs(P().mount), fsp.statfs(P().data)])
  assert.is(a.blocks * a.bsize, b.blocks * b.bsize, 'total size')
  assert.ok(a.bavail > 0, 'free space reported')
  const r = await execOk('df', ['-P', P().mount], { timeoutMs: 20_000 })
  assert.ok(r.stdout.includes(P().mount), `df lists the mount:\n${r.stdout}`)
}))

t('access', timed(30_000, async () => {
  await fsp.writeFile(m('acc'), 'a', { mode: 0o644 })
  await fsp.chmod(m('acc'), 0o644)
  await fsp.access(m('acc'), C.R_OK | C.W_OK)
  assert.is(await errCode(fsp.access(m('acc'), C.X_OK)), 'EACCES')
  await fsp.chmod(m('acc'), 0o755)
  await fsp.access(m('acc'), C.X_OK)
  assert.is(await errCode(fsp.access(m('no-such-file'), C.F_OK)), 'ENOENT')
}))

t('20 MiB file written with dd: sha256 equal through the mount and in the data dir', timed(120_000, async () => {
  const src = path.join(P().root, 'random.src')
  await execOk('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', 'count=20', 'status=none'], { timeoutMs: 60_000 })
  await execOk('dd', [`if=${src}`, `of=${m('big')}`, 'bs=1M', 'conv=fsync', 'status=none'], { timeoutMs: 90_000 })
  const want = await sha256File(src)
  assert.is((await fsp.stat(m('big'))).size, 20 << 20)
  assert.is(await sha256File(m('big')), want, 'through the mount')
  await P().quiesce(60_000)
  assert.is(await sha256File(d('big')), want, 'in the data dir')
  await fsp.unlink(src)
}))

t('every entry\'s stat (type, mode, uid, gid, size, nlink, mtime) and content agree between mount and data dir', timed(60_000, async () => {
  await P().quiesce()
  const diffs = await diffTrees(P().mount, P().data)
  assert.equal(diffs, [], `differences:\n${diffs.join('\n')}`)
}))

t('stop unmounts and leaves the data dir intact', timed(90_000, async () => {
  const p = P()
  const want = await sha256File(m('big'))
  await p.stop()
  primary = undefined
  assert.not.ok(await fuseMountAt(p.mount), 'unmounted')
  assert.equal(await fsp.readdir(p.mount), [], 'mount point is empty again')
  assert.is(await sha256File(path.join(p.data, 'big')), want)
  assert.is((await fsp.readFile(path.join(p.data, 'a.txt'))).toString(), 'hello XYZld and more!')
  const forced = await cleanupAll()
  assert.equal(forced, [], 'nothing left to force')
  const r = await exec('grep', ['-c', p.root, '/proc/mounts'], { timeoutMs: 10_000 })
  assert.is(r.stdout.trim(), '0', 'no mounts left under the temp root')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
