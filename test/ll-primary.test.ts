/**
 * The Primary's mount on the libfuse 3 low-level transport (`replicafs primary --fuse ll`, issue
 * 14): real daemons, real TCP, real mounts. Reads are served in C by inode; every change goes to
 * the daemon's journal with the path its node has now. What issue 14 lists against path-based
 * mounts, pinned here: a hard link's names are one inode (a write or chmod through one is seen
 * through the other at once), times before 1970, xattr values asked for with a small buffer. What
 * it must keep: every change replicated in order (a file written after its unlink included), real
 * programs on the mount, clear errors.
 * (The whole suite also runs with REPLICAFS_TEST_PRIMARY_FUSE=ll: test/helpers/primary.ts.)
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as path from 'path'
import {
  startPair, startPrimary, assertOneLineError, cleanupAll, isolated, cli, execOk, diffTrees, tmpdirs, waitFor, srlDump
} from './helpers'
import * as crypto from 'crypto'

const t = suite('ll-primary')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`ll-primary.test: cleanup had to force: ${forced.join('; ')}`)
})

interface FuseStatus { fuse: { transport: string, passthrough: boolean, openFiles: number } }

t('--fuse ll: hard links are one inode (no stale name), times before 1970, xattrs by size, the data cursor hidden', isolated(120_000, async () => {
  const p = await startPrimary({ extraArgs: ['--fuse', 'll'] })
  try {
    const st = await p.status() as unknown as FuseStatus
    assert.is(st.fuse.transport, 'll')
    const m = (rel: string): string => path.join(p.mount, rel)

    // A hard link: what one name changes, the other shows at once (one node, one set of attributes).
    fs.writeFileSync(m('a'), '')
    fs.statSync(m('a')) // the kernel now has a's attributes
    fs.linkSync(m('a'), m('b'))
    const data = Buffer.alloc(100_000, 7)
    fs.writeFileSync(m('b'), data)
    assert.is(fs.statSync(m('a')).size, 100_000, 'the other name\'s size at once')
    assert.ok(fs.readFileSync(m('a')).equals(data), 'the other name reads every byte at once')
    fs.chmodSync(m('b'), 0o600)
    assert.is(fs.statSync(m('a')).mode & 0o777, 0o600, 'the other name\'s mode at once')
    assert.is(fs.statSync(m('a')).nlink, 2)
    assert.is(fs.statSync(m('a')).ino, fs.statSync(m('b')).ino, 'one inode')

    // Times before 1970 round-trip.
    fs.utimesSync(m('a'), new Date(-1000), new Date(-86400 * 365 * 1000)) // (a negative number means now to Node)
    const t1 = fs.statSync(m('a'), { bigint: true })
    assert.is(t1.atimeNs, -1_000_000_000n)
    assert.is(t1.mtimeNs, -86400n * 365n * 1_000_000_000n)
    assert.is(fs.statSync(path.join(p.data, 'a'), { bigint: true }).mtimeNs, t1.mtimeNs, 'in the data directory too')

    // An xattr asked for with a buffer too small gets ERANGE, its size with none.
    await execOk('python3', ['-c', `
import os, errno
os.setxattr('${m('a')}', 'user.big', b'v' * 300)
assert os.getxattr('${m('a')}', 'user.big') == b'v' * 300
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(16)
n = libc.getxattr(b'${m('a')}', b'user.big', buf, 16)
assert n == -1 and ctypes.get_errno() == errno.ERANGE, (n, ctypes.get_errno())
assert libc.getxattr(b'${m('a')}', b'user.big', None, 0) == 300
`], { timeoutMs: 20_000 })

    // replicafs's own attribute on the data directory's root: neither shown nor settable.
    const cursor = await execOk('python3', ['-c', `
import os
print(os.listxattr('${p.mount}'))
for name in ('trusted.replicafs.applied', 'user.replicafs.applied'):
    try:
        os.getxattr('${p.mount}', name); print('shown', name)
    except OSError as e: print(e.errno)
    try:
        os.setxattr('${p.mount}', name, b'x'); print('set', name)
    except OSError as e: print(e.errno)
`], { timeoutMs: 20_000 })
    assert.is(cursor.stdout.trim(), '[]\n61\n1\n61\n1', 'ENODATA to read, EPERM to set, never listed')
  } finally {
    await p.stop()
  }
}))

t('--fuse ll replicates in order: programs, a file written after its unlink (hidden until its last close), renames over open files', isolated(240_000, async () => {
  const pair = await startPair({ primaryExtraArgs: ['--fuse', 'll'] })
  try {
    const pm = pair.primary.mount
    const m = (rel: string): string => path.join(pm, rel)
    // Real programs.
    await execOk('git', ['init', '-q', m('repo')], { timeoutMs: 30_000 })
    fs.writeFileSync(m('repo/README'), 'hello\n')
    const git = (...args: string[]): Promise<unknown> => execOk('git', ['-C', m('repo'), '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { timeoutMs: 30_000 })
    await git('add', '.')
    await git('commit', '-qm', 'one')
    await git('fsck', '--full')
    await execOk('sqlite3', [m('db.sqlite'), 'create table t(x); ' + Array.from({ length: 200 }, (_, i) => `insert into t values(${i});`).join(' ')], { timeoutMs: 30_000 })
    assert.is((await execOk('sqlite3', [m('db.sqlite'), 'pragma integrity_check; select count(*) from t'], { timeoutMs: 30_000 })).stdout, 'ok\n200\n')

    // Written after its last name is gone: the writes still reach the Secondary (through the
    // hidden name), which goes with the last close, on both sides.
    const fd = fs.openSync(m('tmpfile'), 'w+')
    fs.writeSync(fd, 'before unlink\n')
    fs.unlinkSync(m('tmpfile'))
    fs.writeSync(fd, 'after unlink\n')
    assert.ok(!fs.readdirSync(pm).includes('tmpfile'))
    const hidden = fs.readdirSync(pm).filter((n) => n.startsWith('.fuse_hidden'))
    assert.is(hidden.length, 1, 'the open file has a hidden name meanwhile')
    const back = Buffer.alloc(64)
    assert.is(back.subarray(0, fs.readSync(fd, back, 0, 64, 0)).toString(), 'before unlink\nafter unlink\n')
    fs.closeSync(fd) // the kernel sends the release after close() returns
    await waitFor(() => fs.readdirSync(pm).filter((n) => n.startsWith('.fuse_hidden')).length === 0, { timeoutMs: 15_000, what: 'the hidden name to go with the last close' })

    // A rename over a file open to write: the open file keeps its writes, the name is the new file's.
    fs.writeFileSync(m('target'), 'old\n')
    const fd2 = fs.openSync(m('target'), 'r+')
    fs.writeFileSync(m('new'), 'new\n')
    fs.renameSync(m('new'), m('target'))
    fs.writeSync(fd2, 'OLD\n', 0)
    fs.closeSync(fd2)
    assert.is(fs.readFileSync(m('target'), 'utf8'), 'new\n')

    // Written through a name that is then removed while another stays: the other name has it.
    fs.writeFileSync(m('l1'), '')
    fs.linkSync(m('l1'), m('l2'))
    const fd3 = fs.openSync(m('l1'), 'a')
    fs.unlinkSync(m('l1'))
    fs.writeSync(fd3, 'through a removed name\n')
    fs.closeSync(fd3)
    assert.is(fs.readFileSync(m('l2'), 'utf8'), 'through a removed name\n')
    // Both names removed while it is open to write: both hidden, both gone with the last close.
    fs.writeFileSync(m('l3'), '')
    fs.linkSync(m('l3'), m('l4'))
    const fd4 = fs.openSync(m('l3'), 'a')
    fs.unlinkSync(m('l4'))
    fs.unlinkSync(m('l3'))
    fs.writeSync(fd4, 'nameless\n')
    assert.is(fs.readdirSync(pm).filter((n) => n.startsWith('.fuse_hidden')).length, 2)
    fs.closeSync(fd4)

    // A big file: 1 MiB writes (record format version 3) cross the link as they are.
    fs.writeFileSync(m('big'), crypto.randomBytes(5 * 1024 * 1024 + 7))

    // The usual temporary file: written, closed, removed at once (its release may come after the unlink).
    for (let i = 0; i < 20; i++) {
      fs.writeFileSync(m(`tmp-${i}`), 'x'.repeat(1000))
      fs.unlinkSync(m(`tmp-${i}`))
    }
    await waitFor(() => fs.readdirSync(pm).filter((n) => n.startsWith('.fuse_hidden') || n.startsWith('tmp-')).length === 0, { timeoutMs: 15_000, what: 'no hidden or temporary name left' })

    // A name that is not UTF-8 is refused (it could not be journaled as it is): EILSEQ, nothing made.
    const bad = await execOk('python3', ['-c', `
import os
try:
    os.mkdir(os.path.join(b'${pm}', b'caf\\xe9')); print('made')
except OSError as e: print(e.errno)
`], { timeoutMs: 20_000 })
    assert.is(bad.stdout.trim(), '84', 'EILSEQ')

    await pair.caughtUp()
    await pair.primary.quiesce()
    const diff = await diffTrees(pair.primary.data, pair.secondary.data)
    assert.equal(diff, [], 'the Secondary\'s tree is the Primary\'s')
    assert.equal(fs.readdirSync(pair.secondary.data).filter((n) => n.startsWith('.fuse_hidden')), [])
  } finally {
    await pair.stop()
  }
}))

t('--fuse ll: a write() of 3 MiB is three 1 MiB records (record format version 3), and reads back whole', isolated(120_000, async () => {
  const p = await startPrimary({ extraArgs: ['--fuse', 'll'], retain: true })
  let stopped = false
  try {
    const data = crypto.randomBytes(3 * 1024 * 1024 + 100)
    const fd = fs.openSync(path.join(p.mount, 'big'), 'w')
    try {
      assert.is(fs.writeSync(fd, data, 0, data.length, 0), data.length, 'one write() call takes it all')
    } finally {
      fs.closeSync(fd)
    }
    assert.ok(fs.readFileSync(path.join(p.mount, 'big')).equals(data), 'the mount reads it back')
    await p.stop()
    stopped = true
    assert.ok(fs.readFileSync(path.join(p.data, 'big')).equals(data), 'the data directory holds it')
    const writes = (await srlDump(p.state)).filter((r) => r.type === 'WRITE' && r.path === '/big')
    assert.equal(writes.map((r) => [r.offset, r.length]), [[0, 1 << 20], [1 << 20, 1 << 20], [2 << 20, 1 << 20], [3 << 20, 100]],
      'the kernel hands the daemon 1 MiB writes (max_write), each one record')
  } finally {
    if (!stopped) await p.stop()
  }
}))

t('--fuse: a transport that is not one is refused in one line', isolated(60_000, async () => {
  const d = await tmpdirs('ll-primary-bad')
  const r = await cli(['primary', '--data', d.data, '--mount', d.mount, '--state', d.state, '--fuse', 'fast'])
  assertOneLineError(r, ['--fuse fast', 'll', 'compat'])
  assert.not.ok(fs.existsSync(path.join(d.state, 'srl')), 'nothing created')
}))

t.run()
