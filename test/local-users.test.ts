/**
 * What any local user, and the tools of every day, can do to a mount (issue 18): the mount is
 * allow_other, so no caller-controlled size may crash the daemon, no permission may be stale
 * through another hard link, a plain `umount` stops the daemon as `replicafs stop` would, and the
 * smaller POSIX promises (d_ino, seekdir, fstat of a directory renamed over, ctime >= mtime, times
 * before 1970, `-o` mount options) hold. Single system calls with exact sizes come from
 * test/fixtures/fsprobe.c, run as nobody where the promise is about other users.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as fs from 'fs'
import * as path from 'path'
import {
  startPrimary, startPair, startSecondary, tmpdirs, cli, exec, execOk, helperScript, timed, waitFor, cleanupAll, assertCleanSlate,
  processAlive, isMounted, fuseMountAt, mounts, primaryArgs, daemonLog, status, registerMount, registerState, secretFile, type Primary, type Dirs
} from './helpers'
import { buildProbe, probe } from './helpers/probe'

const t = suite('local-users')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`local-users.test: cleanup had to force: ${forced.join('; ')}`)
})

async function setXattr (file: string, name: string, value: Buffer): Promise<void> {
  const r = await execOk(process.execPath, [helperScript('xattr-tool'), 'set', file, name, value.toString('hex')], { timeoutMs: 30_000 })
  assert.equal(JSON.parse(r.stdout), { ok: true }, `setxattr ${name} on ${file}`)
}

/** A Primary whose tmp root other users can traverse, and fsprobe built in that root. */
async function open (label: string): Promise<{ primary: Primary, bin: string }> {
  const dirs = await tmpdirs(label)
  await fsp.chmod(dirs.root, 0o711)
  const bin = await buildProbe(dirs.root)
  return { primary: await startPrimary({ dirs }), bin }
}

const NAMES = Array.from({ length: 20 }, (_, i) => `user.attribute_name_number_${i + 1}`)
const LIST_BYTES = NAMES.reduce((n, name) => n + Buffer.byteLength(name) + 1, 0)
const VALUE = Buffer.alloc(300, 'v')
const TARGET = 't'.repeat(200)

/** The files the buffer-size checks read: 20 xattr names, a 300-byte value, a 200-byte symlink target, 1000 bytes. */
async function makeBufferFixtures (mount: string): Promise<void> {
  await fsp.writeFile(path.join(mount, 'f'), Buffer.alloc(1000, 'd'))
  for (const name of NAMES) await setXattr(path.join(mount, 'f'), name, Buffer.from('x'))
  await fsp.writeFile(path.join(mount, 'v'), '')
  await setXattr(path.join(mount, 'v'), 'user.big', VALUE)
  await fsp.symlink(TARGET, path.join(mount, 'lnk'))
}

/**
 * Every handler that fills a caller's buffer, as nobody, with sizes 0, 1, exact-1, exact and large:
 * the kernel's contract (size 0 asks for the size, too small is ERANGE for xattrs; readlink and
 * read truncate), and the daemon still serves afterwards.
 */
async function checkBufferSizes (bin: string, root: string, what: string): Promise<void> {
  const run = async (args: Array<string | number>): Promise<string> => (await probe(bin, args, { nobody: true }))[0]
  const f = path.join(root, 'f')
  const cases: Array<[Array<string | number>, string]> = [
    [['listxattr', f, 0], `ok ${LIST_BYTES}`],
    [['listxattr', f, 1], 'err ERANGE'],
    [['listxattr', f, 16], 'err ERANGE'], // the size that killed the daemon
    [['listxattr', f, LIST_BYTES - 1], 'err ERANGE'],
    [['listxattr', f, LIST_BYTES], `ok ${LIST_BYTES}`],
    [['listxattr', f, 65536], `ok ${LIST_BYTES}`],
    [['getxattr', path.join(root, 'v'), 'user.big', 0], `ok ${VALUE.length}`],
    [['getxattr', path.join(root, 'v'), 'user.big', 1], 'err ERANGE'],
    [['getxattr', path.join(root, 'v'), 'user.big', VALUE.length - 1], 'err ERANGE'],
    [['getxattr', path.join(root, 'v'), 'user.big', VALUE.length], `ok ${VALUE.length}`],
    [['getxattr', path.join(root, 'v'), 'user.big', 65536], `ok ${VALUE.length}`],
    [['getxattr', f, 'user.none', 0], 'err ENODATA'],
    [['readlink', path.join(root, 'lnk'), 0], 'err EINVAL'],
    [['readlink', path.join(root, 'lnk'), 1], 'ok 1'],
    [['readlink', path.join(root, 'lnk'), TARGET.length - 1], `ok ${TARGET.length - 1}`],
    [['readlink', path.join(root, 'lnk'), TARGET.length], `ok ${TARGET.length}`],
    [['readlink', path.join(root, 'lnk'), 65536], `ok ${TARGET.length}`],
    [['read', f, 0], 'ok 0'],
    [['read', f, 1], 'ok 1'],
    [['read', f, 999], 'ok 999'],
    [['read', f, 1000], 'ok 1000'],
    [['read', f, 1 << 20], 'ok 1000'],
    [['getdents', root, 0], 'err EINVAL'],
    [['getdents', root, 1], 'err EINVAL']
  ]
  for (const [args, want] of cases) assert.is(await run(args), want, `${what}: fsprobe ${args.join(' ')}`)
  // getdents: the first entry ('.') is 24 bytes; one byte less fits nothing.
  assert.is(await run(['getdents', root, 23]), 'err EINVAL', `${what}: getdents 23`)
  assert.is(await run(['getdents', root, 24]), 'ok 24', `${what}: getdents 24`)
  const all = Number((await run(['getdents', root, 65536])).split(' ')[1])
  assert.ok(all > 24 * 4, `${what}: getdents 65536 returns every entry (${all} bytes)`)
}

t('any user: short buffers for xattrs, readlink, read and getdents get the kernel\'s answers, and the daemon lives', timed(180_000, async () => {
  const { primary, bin } = await open('bufs')
  await makeBufferFixtures(primary.mount)
  await checkBufferSizes(bin, primary.mount, 'primary')
  // The same through a snapshot's view.
  await execOk(process.execPath, [path.join(__dirname, '..', '..', 'bin', 'replicafs'), 'snapshot', 'create', '--state', primary.state, 's1'], { timeoutMs: 60_000 })
  const view = path.join(primary.mount, '.snapshots', 's1')
  assert.equal((await fsp.readdir(view)).sort(), ['f', 'lnk', 'v'], 'a snapshot\'s directory opens and lists')
  assert.equal((await probe(bin, ['dents', view], { nobody: true })).map((l) => l.split(' ')[0]).sort(), ['.', '..', 'f', 'lnk', 'v'])
  for (const [args, want] of [[['listxattr', path.join(view, 'f'), 16], 'err ERANGE'], [['listxattr', path.join(view, 'f'), 0], `ok ${LIST_BYTES}`],
    [['getxattr', path.join(view, 'v'), 'user.big', 1], 'err ERANGE'], [['getxattr', path.join(view, 'v'), 'user.big', 300], 'ok 300']] as Array<[string[], string]>) {
    assert.is((await probe(bin, args, { nobody: true }))[0], want, `snapshot view: fsprobe ${args.join(' ')}`)
  }
  assert.ok(processAlive(primary.pid), 'the daemon is alive')
  assert.equal((await fsp.readFile(path.join(primary.mount, 'f'))).length, 1000, 'and serves')
  assert.is((await primary.status()).pid, primary.pid)
  await primary.stop()
}))

t('a Secondary\'s read-only mount answers short buffers alike', timed(180_000, async () => {
  const pair = await startPair()
  try {
    await fsp.chmod(pair.secondary.root, 0o711)
    const bin = await buildProbe(pair.secondary.root)
    await makeBufferFixtures(pair.primary.mount)
    await pair.caughtUp()
    await checkBufferSizes(bin, pair.secondary.mount, 'secondary')
    assert.ok(processAlive(pair.secondary.pid), 'the Secondary is alive')
  } finally {
    await pair.stop()
  }
}))

t('hard links: a chmod, chown, link or write through one name shows at once through the other, to every user', timed(120_000, async () => {
  const { primary, bin } = await open('links')
  const a = path.join(primary.mount, 'a')
  const b = path.join(primary.mount, 'b')
  await fsp.writeFile(a, 'secret\n', { mode: 0o644 })
  await probe(bin, ['read', a, 100], { nobody: true }) // the kernel caches a's attributes now
  await fsp.stat(a)
  await fsp.link(a, b)
  assert.is((await fsp.stat(a)).nlink, 2, 'link: the other name\'s link count at once')
  assert.equal(await probe(bin, ['read', b, 100], { nobody: true }), ['ok 7'], 'nobody reads b while it is 0644')
  await fsp.chmod(a, 0o000)
  assert.equal(await probe(bin, ['read', b, 100], { nobody: true }), ['err EACCES'], 'chmod 000 through a: nobody cannot open b at once')
  assert.is((await fsp.stat(b)).mode & 0o777, 0, 'and b shows mode 000')
  await fsp.chmod(b, 0o640)
  await fsp.chown(b, 65534, 0)
  const sa = await fsp.stat(a)
  assert.equal([sa.mode & 0o777, sa.uid], [0o640, 65534], 'chmod and chown through b show through a')
  assert.equal(await probe(bin, ['read', a, 100], { nobody: true }), ['ok 7'], 'nobody (now the owner) reads a')
  const data = Buffer.alloc(100_000, 'w')
  await fsp.appendFile(b, data)
  assert.is((await fsp.stat(a)).size, 7 + data.length, 'a write through b: a\'s size at once')
  assert.is((await fsp.readFile(a)).length, 7 + data.length, 'and reading a returns every byte')
  await fsp.unlink(b)
  assert.is((await fsp.stat(a)).nlink, 1, 'unlink b: a\'s link count at once')
  await primary.stop()
}))

t('readdir: d_ino and d_type are the entries\' own, as stat gives them', timed(120_000, async () => {
  const { primary, bin } = await open('dents')
  const m = primary.mount
  await fsp.mkdir(path.join(m, 'dir'))
  await fsp.writeFile(path.join(m, 'dir', 'file'), 'x')
  await fsp.mkdir(path.join(m, 'dir', 'sub'))
  await fsp.symlink('file', path.join(m, 'dir', 'sym'))
  await execOk('mkfifo', [path.join(m, 'dir', 'fifo')])
  const DT: Record<string, number> = { file: 8, sub: 4, sym: 10, fifo: 1, '.': 4, '..': 4 }
  const lines = await probe(bin, ['dents', path.join(m, 'dir')])
  assert.equal(lines.map((l) => l.split(' ')[0]).sort(), ['.', '..', 'fifo', 'file', 'sub', 'sym'])
  for (const line of lines) {
    const [name, ino, type] = line.split(' ')
    const st = await fsp.lstat(path.join(m, 'dir', name))
    assert.is(Number(ino), st.ino, `d_ino of ${name} is stat's ${st.ino}`)
    assert.is(Number(type), DT[name], `d_type of ${name}`)
  }
  await primary.stop()
}))

t('seekdir/telldir: reading again from any position returns every entry after it', timed(120_000, async () => {
  const { primary, bin } = await open('seek')
  const dir = path.join(primary.mount, 'big')
  await fsp.mkdir(dir)
  for (let i = 0; i < 3000; i++) await fsp.writeFile(path.join(dir, `entry_with_a_longer_name_${i}`), '')
  assert.equal(await probe(bin, ['seek', dir]), ['ok 3002'])
  assert.equal(await probe(bin, ['seek', primary.mount]), [`ok ${(await fsp.readdir(primary.mount)).length + 2}`])
  await primary.stop()
}))

t('a directory held open keeps answering fstat after it is renamed over or removed, as on ext4', timed(120_000, async () => {
  const { primary, bin } = await open('orphan')
  const m = primary.mount
  await fsp.mkdir(path.join(m, 'x'))
  await fsp.mkdir(path.join(m, 'y'))
  const y = await fsp.stat(path.join(m, 'y'))
  assert.equal(await probe(bin, ['renameover', path.join(m, 'x'), path.join(m, 'y')]), [`ok 0 ${y.ino}`], 'fstat of y after x was renamed over it')
  await fsp.mkdir(path.join(m, 'z'))
  const z = await fsp.stat(path.join(m, 'z'))
  assert.equal(await probe(bin, ['rmdiropen', path.join(m, 'z')]), [`ok 0 ${z.ino}`], 'fstat of z after rmdir')
  await primary.stop()
}))

t('ctime is never before mtime on new or changed entries', timed(120_000, async () => {
  const primary = await startPrimary()
  const sh = 'for i in 1 2 3 4 5 6 7 8; do echo x > f$i; echo y >> f$i; truncate -s 100 f$i; mkdir d$i; ln -s f$i s$i; touch t$i; done'
  await execOk('sh', ['-c', sh], { cwd: primary.mount, timeoutMs: 60_000 })
  for (const name of await fsp.readdir(primary.mount)) {
    const st = await fsp.lstat(path.join(primary.mount, name), { bigint: true })
    assert.ok(st.ctimeNs >= st.mtimeNs, `${name}: ctime ${st.ctimeNs} >= mtime ${st.mtimeNs}`)
  }
  await primary.stop()
}))

t('times before 1970 round-trip, through the mount, in the data directory and on the Secondary', timed(120_000, async () => {
  const pair = await startPair()
  try {
    const m = (n: string): string => path.join(pair.primary.mount, n)
    await fsp.writeFile(m('old'), 'x')
    await fsp.mkdir(m('olddir'))
    const UTC = { ...process.env, TZ: 'UTC' }
    await execOk('touch', ['-d', '1960-01-01 00:00:00.5', m('old')], { env: UTC })
    await execOk('touch', ['-m', '-d', '1969-12-31 23:59:59.25', m('olddir')], { env: UTC })
    const want = [Date.UTC(1960, 0, 1, 0, 0, 0, 500), Date.UTC(1969, 11, 31, 23, 59, 59, 250)]
    await pair.caughtUp()
    for (const root of [pair.primary.mount, pair.primary.data, pair.secondary.mount, pair.secondary.data]) {
      assert.is((await fsp.stat(path.join(root, 'old'))).mtimeMs, want[0], `old in ${root}`)
      assert.is((await fsp.stat(path.join(root, 'old'))).atimeMs, want[0], `old's atime in ${root}`)
      assert.is((await fsp.stat(path.join(root, 'olddir'))).mtimeMs, want[1], `olddir in ${root}`)
    }
  } finally {
    await pair.stop()
  }
}))

t('-o: per-mount options are applied, others refused by name with one line', timed(120_000, async () => {
  const primary = await startPrimary({ extraArgs: ['-o', 'noexec,noatime', '-o', 'nodiratime'] })
  const flags = await mountFlags(primary.mount)
  for (const f of ['rw', 'nosuid', 'nodev', 'noexec', 'noatime', 'nodiratime']) assert.ok(flags.includes(f), `${f} in ${flags.join(',')}`)
  await fsp.writeFile(path.join(primary.mount, 'x.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
  const ran = await exec('sh', ['-c', './x.sh'], { cwd: primary.mount, timeoutMs: 10_000 })
  assert.ok(ran.code !== 0 && /permission denied/i.test(ran.stderr), `noexec: ${ran.stderr}`)
  await primary.stop()

  const ro = await startPrimary({ extraArgs: ['-o', 'ro,strictatime'] })
  const roFlags = await mountFlags(ro.mount)
  assert.ok(roFlags.includes('ro') && !roFlags.includes('relatime') && !roFlags.includes('noatime'), `ro,strictatime: ${roFlags.join(',')}`)
  const w = await exec('sh', ['-c', 'echo x > new'], { cwd: ro.mount, timeoutMs: 10_000 })
  assert.match(w.stderr, /Read-only file system/)
  await ro.stop()

  const dirs = await tmpdirs('opts')
  for (const [opt, name] of [['sync', 'sync'], ['uid=0', 'uid'], ['kernel_cache', 'kernel_cache'], ['bogus', 'bogus'], ['noatime,allow_root', 'allow_root']]) {
    const r = await cli([...primaryArgs(dirs), '-o', opt], { timeoutMs: 30_000 })
    assert.is(r.code, 1, `-o ${opt} exits 1`)
    assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`)
    assert.match(r.stderr, new RegExp(`^replicafs primary: mount option ${name} is not supported`), `-o ${opt}: ${r.stderr}`)
    assert.not.ok(await isMounted(dirs.mount), 'nothing mounted')
  }
  const sec = await cli(['secondary', '--data', dirs.data, '--mount', dirs.mount, '--state', dirs.state, '--listen', '127.0.0.1:0',
    '--secret-file', await secretFile(dirs.root), '-o', 'nodev,rw'], { timeoutMs: 30_000 })
  assert.is(sec.code, 1)
  assert.is(sec.stderr, 'replicafs secondary: mount option rw is not supported (a Secondary\'s mount is read-only)\n')
}))

/** The per-mount flags /proc/mounts shows for `mount`. */
async function mountFlags (mount: string): Promise<string[]> {
  const line = (await fsp.readFile('/proc/mounts', 'utf8')).split('\n').find((l) => l.split(' ')[1] === mount)
  if (line === undefined) throw new Error(`${mount} is not mounted`)
  return line.split(' ')[3].split(',')
}

/** Starts `replicafs primary` in the foreground (so its exit code can be read) and waits for its mount. */
async function foregroundPrimary (dirs: Dirs): Promise<{ done: ReturnType<typeof exec> }> {
  registerMount(dirs.mount)
  registerState(dirs.state)
  const args = primaryArgs(dirs).filter((a) => a !== '--daemon')
  const done = exec(process.execPath, [path.join(__dirname, '..', '..', 'bin', 'replicafs'), ...args], { timeoutMs: 90_000 })
  await waitFor(async () => (await fuseMountAt(dirs.mount)) !== undefined && fs.existsSync(path.join(dirs.state, 'control.sock')), { timeoutMs: 60_000, what: 'the foreground Primary to mount' })
  return { done }
}

t('a plain umount of the Primary\'s mount stops the daemon as replicafs stop would: SRL checkpointed, locks released, exit 0', timed(180_000, async () => {
  const dirs = await tmpdirs('umount')
  const { done } = await foregroundPrimary(dirs)
  await fsp.writeFile(path.join(dirs.mount, 'kept'), 'data written before the umount')
  const before = await status(dirs.state)
  await execOk('umount', [dirs.mount])
  const r = await done
  assert.is(r.code, 0, `exit code (stderr: ${r.stderr})`)
  assert.match(r.stderr, new RegExp(`the mount ${dirs.mount} was unmounted; stopping`))
  assert.match(r.stderr, /stopped\n$/)
  assert.not.ok(await isMounted(dirs.mount))
  assert.is(await fsp.readFile(path.join(dirs.data, 'kept'), 'utf8'), 'data written before the umount', 'applied')
  // The state directory is free again, and the next start has nothing to replay.
  const again = await startPrimary({ dirs })
  const log = await daemonLog(dirs.state)
  assert.not.match(log.slice(log.lastIndexOf('ready')), /recovered: replayed/)
  assert.ok((await again.status()).srl.appliedSeq >= before.srl.appliedSeq)
  await again.stop()
}))

t('a plain umount of a Secondary\'s mount stops it too, and the Primary keeps its records for it', timed(180_000, async () => {
  const pair = await startPair()
  const { secondary, primary } = pair
  await fsp.writeFile(path.join(primary.mount, 'one'), '1')
  await pair.caughtUp()
  await execOk('umount', [secondary.mount])
  await waitFor(() => !processAlive(secondary.pid), { timeoutMs: 30_000, what: 'the Secondary to exit after umount' })
  assert.match(await secondary.log(), /was unmounted; stopping as replicafs stop would[\s\S]*stopped/)
  await fsp.writeFile(path.join(primary.mount, 'two'), '2')
  const restarted = await startSecondary({ dirs: secondary, secretFile: secondary.secretFile, listen: secondary.address })
  await pair.caughtUp()
  assert.is(await fsp.readFile(path.join(restarted.mount, 'two'), 'utf8'), '2', 'it catches up after a restart')
  await primary.stop()
  await restarted.stop()
  assert.not.ok((await mounts()).some((x) => x.target === secondary.mount))
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
}))

t.run()
