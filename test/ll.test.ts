/**
 * The libfuse 3 low-level transport (src/native/ll.c, issue 14), as far as it goes: a directory
 * served read-only on libfuse's own threads, by inode. A real mount (mount(2) as root), real
 * programs on it (ls, tar, python's os.getxattr), and what the path-based fuse-native layer gets
 * wrong: one node per inode (hard links), paths as long as the mount allows whatever the data
 * directory's own path, getxattr with a small buffer answered ERANGE.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { execFileSync, spawn } from 'node:child_process'
import { loadLl, sys, LL_PASSTHROUGH, LL_VOLATILE, LL_JOURNALED, type LlSession, type LlRequest, type LlChange } from '../src/native'

const ll = loadLl()

const mounted = (dir: string): boolean => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir)

/** A source tree under a long directory name (the data directory's own path counts for nothing now), a mount point, and the session, all gone after `fn`. */
async function withMount (fill: (src: string) => void, fn: (src: string, mnt: string, s: LlSession) => Promise<void> | void, flags = 0, timeoutS = 1): Promise<void> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-ll-'))
  const src = path.join(base, 'd'.repeat(200), 'e'.repeat(200))
  const mnt = path.join(base, 'm')
  fs.mkdirSync(src, { recursive: true })
  fs.mkdirSync(mnt)
  let s: LlSession | null = null
  try {
    fill(src)
    try {
      s = ll.mount(src, mnt, 'ro,default_permissions,allow_other,fsname=replicafs-ll,subtype=replicafs', timeoutS, flags)
    } catch (err) {
      throw new Error(`cannot mount a FUSE file system with replicafs_ll at ${mnt} (needs root and /dev/fuse): ${(err as Error).message}`)
    }
    assert.ok(mounted(mnt), 'mounted')
    await fn(src, mnt, s)
  } finally {
    if (s !== null) ll.unmount(s)
    if (mounted(mnt)) { try { execFileSync('umount', ['-l', mnt]) } catch { /* reported below */ } }
    const left = mounted(mnt)
    execFileSync('rm', ['-rf', base]) // (a tree deeper than PATH_MAX: fs.rmSync cannot)
    assert.not.ok(left, `no mount left at ${mnt}`)
  }
}

test('a directory served read-only by inode: contents, attributes, links, xattrs and tar through the mount', async () => {
  const big = crypto.randomBytes(3 * 1024 * 1024 + 17)
  await withMount((src) => {
    fs.writeFileSync(path.join(src, 'a'), 'hello\n')
    fs.writeFileSync(path.join(src, 'big'), big)
    fs.mkdirSync(path.join(src, 'sub'))
    fs.linkSync(path.join(src, 'a'), path.join(src, 'sub', 'hard'))
    fs.symlinkSync('a', path.join(src, 'sym'))
    fs.mkdirSync(path.join(src, 'many'))
    for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(src, 'many', `file-${String(i).padStart(5, '0')}`), String(i))
    fs.chmodSync(path.join(src, 'sub'), 0o750)
    fs.utimesSync(path.join(src, 'a'), new Date(-86_400_000), new Date(-86_400_000)) // before 1970
    sys.lsetxattr(path.join(src, 'big'), 'user.long', Buffer.alloc(300, 'x'), 0)
    execFileSync('mkfifo', [path.join(src, 'fifo')])
  }, (src, mnt) => {
    assert.is(fs.readFileSync(path.join(mnt, 'a'), 'utf8'), 'hello\n')
    assert.ok(fs.readFileSync(path.join(mnt, 'big')).equals(big), 'a 3 MiB file reads back whole')
    assert.is(fs.readlinkSync(path.join(mnt, 'sym')), 'a')
    // One node per inode: both names, one inode, two links, the same bytes.
    const a = fs.statSync(path.join(mnt, 'a'))
    const h = fs.statSync(path.join(mnt, 'sub', 'hard'))
    assert.is(a.ino, h.ino)
    assert.is(a.nlink, 2)
    assert.is(a.mtimeMs, -86_400_000, 'a time before 1970 as it is')
    assert.is(fs.statSync(path.join(mnt, 'sub')).mode & 0o7777, 0o750)
    assert.ok(fs.statSync(path.join(mnt, 'fifo')).isFIFO())
    // READDIRPLUS over several requests: every name, once.
    const names = fs.readdirSync(path.join(mnt, 'many'))
    assert.is(names.length, 3000)
    assert.is(new Set(names).size, 3000)
    assert.is(fs.readFileSync(path.join(mnt, 'many', 'file-02999'), 'utf8'), '2999')
    // xattrs: python reads a 300-byte value (it first asks with a small buffer: ERANGE, not EIO).
    const py = execFileSync('python3', ['-c', `import os; print(len(os.getxattr(${JSON.stringify(path.join(mnt, 'big'))}, 'user.long')))`], { encoding: 'utf8' }).trim()
    assert.is(py, '300')
    // Read-only: writes are refused with EROFS, and the source is untouched.
    assert.throws(() => fs.writeFileSync(path.join(mnt, 'new'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS')
    assert.throws(() => fs.appendFileSync(path.join(mnt, 'a'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS')
    assert.is(fs.readFileSync(path.join(src, 'a'), 'utf8'), 'hello\n')
    // Real programs: ls -lR and tar of the mount list the same as of the source.
    const listing = (dir: string): string => execFileSync('sh', ['-c', `cd ${JSON.stringify(dir)} && ls -lRn --time-style=+%s . | sed 's/^total .*//'`], { encoding: 'utf8' })
    assert.is(listing(mnt), listing(src))
    const tarOf = (dir: string): string => execFileSync('sh', ['-c', `tar cf - -C ${JSON.stringify(dir)} --sort=name . | tar tvf - --numeric-owner`], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    assert.is(tarOf(mnt), tarOf(src))
  })
})

test('a path as long as the mount allows, whatever the length of the source directory\'s own path', async () => {
  // 15 levels of 250-byte names: 3,765 bytes below the root, under a source directory of 400+
  // bytes (fuse-native's DATA + path would pass PATH_MAX; here each lookup is relative).
  const levels = Array.from({ length: 15 }, (_, i) => String.fromCharCode(97 + i).repeat(250))
  await withMount((src) => {
    const cwd = process.cwd()
    try {
      process.chdir(src)
      for (const l of levels) { fs.mkdirSync(l); process.chdir(l) }
      fs.writeFileSync('deep', 'at the bottom')
    } finally {
      process.chdir(cwd)
    }
  }, (src, mnt) => {
    const rel = levels.join('/') + '/deep'
    assert.ok(src.length + 1 + rel.length >= 4096, `the source's path is over PATH_MAX (${src.length + 1 + rel.length})`)
    assert.ok(mnt.length + 1 + rel.length < 4096, 'the mount\'s is not')
    assert.is(fs.readFileSync(path.join(mnt, rel), 'utf8'), 'at the bottom')
  })
})

test('FUSE passthrough: the kernel reads open files from their backing files, no READ reaches the daemon; without it, every read does', async () => {
  const big = crypto.randomBytes(4 * 1024 * 1024 + 3)
  const fill = (src: string): void => { fs.writeFileSync(path.join(src, 'big'), big); fs.linkSync(path.join(src, 'big'), path.join(src, 'also')) }
  await withMount(fill, (src, mnt, s) => {
    assert.is(ll.stats(s).passthrough, true, 'granted (Linux 6.9+, as root)')
    // Two opens of one inode at once, through two names: one backing file, shared.
    const a = fs.openSync(path.join(mnt, 'big'), 'r')
    const b = fs.openSync(path.join(mnt, 'also'), 'r')
    try {
      const buf = Buffer.alloc(big.length)
      assert.is(fs.readSync(a, buf, 0, buf.length, 0), big.length)
      assert.ok(buf.equals(big), 'the bytes, through the backing file')
      assert.is(fs.readSync(b, buf, 0, 100, big.length - 100), 100)
      assert.ok(buf.subarray(0, 100).equals(big.subarray(big.length - 100)))
    } finally {
      fs.closeSync(a)
      fs.closeSync(b)
    }
    assert.ok(fs.readFileSync(path.join(mnt, 'big')).equals(big), 'opened again after the last release')
    assert.is(ll.stats(s).reads, 0, 'no READ request reached the daemon')
  }, LL_PASSTHROUGH)
  await withMount(fill, (src, mnt, s) => {
    assert.is(ll.stats(s).passthrough, false, 'not asked for')
    assert.ok(fs.readFileSync(path.join(mnt, 'big')).equals(big))
    assert.ok(ll.stats(s).reads > 0, 'reads served by the daemon')
  })
})

test('hold: a request that reads the tree waits until release, and sees the tree as the change left it, never half made', async () => {
  await withMount((src) => { fs.writeFileSync(path.join(src, 'f'), 'before') }, async (src, mnt, s) => {
    ll.hold(s)
    let out: Promise<string>
    try {
      assert.throws(() => ll.hold(s), /held already/)
      // Another process reads f through the mount: its LOOKUP waits for the hold.
      const cat = spawn('cat', [path.join(mnt, 'f')], { stdio: ['ignore', 'pipe', 'inherit'] })
      out = new Promise((resolve, reject) => {
        let text = ''
        cat.stdout.on('data', (d: Buffer) => { text += d.toString() })
        cat.once('error', reject)
        cat.once('close', (code) => code === 0 ? resolve(text) : reject(new Error(`cat exited ${String(code)}`)))
      })
      const deadline = Date.now() + 10_000
      while (ll.stats(s).waiting === 0) {
        if (Date.now() > deadline) throw new Error('the reader never reached the mount')
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      // The daemon's change, in two steps, as an apply slice of two records would make it.
      fs.writeFileSync(path.join(src, 'f.new'), 'after')
      fs.renameSync(path.join(src, 'f.new'), path.join(src, 'f'))
    } finally {
      ll.release(s)
    }
    assert.is(await out, 'after')
    assert.is(ll.stats(s).waiting, 0)
    assert.throws(() => ll.release(s), /not held/)
    // Unmounting a held session does not hang: the hold ends with it.
    ll.hold(s)
  })
})

/** Runs `cmd` in a child process (the handler answers on this process's event loop, so the mount is not touched from here). */
function inChild (cmd: string, timeoutMs = 20_000): Promise<{ code: number | null, out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    const timer = setTimeout(() => { c.kill('SIGKILL'); reject(new Error(`\`${cmd}\` did not end within ${timeoutMs} ms (a request left unanswered?): ${out}`)) }, timeoutMs)
    c.stdout.on('data', (d: Buffer) => { out += d.toString() })
    c.stderr.on('data', (d: Buffer) => { out += d.toString() })
    c.once('error', (err) => { clearTimeout(timer); reject(err) })
    c.once('close', (code) => { clearTimeout(timer); resolve({ code, out }) })
  })
}

test('a forwarded subtree: answered by the handler, late or at once, with errors; not listed; unanswered requests end with the mount; a plain umount is heard', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-ll-'))
  const src = path.join(base, 'src')
  const mnt = path.join(base, 'mnt')
  fs.mkdirSync(src)
  fs.mkdirSync(mnt)
  fs.writeFileSync(path.join(src, 'live'), 'live\n')
  fs.mkdirSync(path.join(src, 'fwd')) // shadowed by the forwarded name
  const now = Math.floor(Date.now() / 1000)
  const attrs = (mode: number, size: number, ino: number): Float64Array => Float64Array.from([mode, 0, 0, size, 1, ino, 0, 0, now, 0, now, 0, now, 0])
  const seen: string[] = []
  const many = Array.from({ length: 600 }, (_, i) => `entry-with-a-longish-name-${String(i).padStart(4, '0')}`)
  let forgotten = 0
  let s: LlSession | null = null
  let parked: number | null = null
  let gone = 0
  const handler = (req: LlRequest): void => {
    seen.push(req.op)
    if (req.op === 'gone') { gone++; return }
    if (req.op === 'forget') { forgotten += req.size; return }
    const sess = s!
    if (req.op === 'lookup' && req.name === 'boom') throw new Error('the handler fails')
    if (req.op === 'lookup' && req.node === 0) { ll.replyEntry(sess, req.id, 1, attrs(0o40555, 0, 1001)); return }
    if (req.op === 'lookup' && req.name === 'late') { setTimeout(() => ll.replyEntry(sess, req.id, 2, attrs(0o100444, 5, 1002)), 50); return }
    if (req.op === 'lookup' && req.name === 'never') { parked = req.id; return }
    if (req.op === 'lookup' && req.node === 1 && many.includes(req.name ?? '')) { ll.replyEntry(sess, req.id, 10 + many.indexOf(req.name ?? ''), attrs(0o100444, 0, 2000)); return }
    if (req.op === 'lookup') { ll.replyErr(sess, req.id, os.constants.errno.ENOENT); return }
    if (req.op === 'getattr') { ll.replyAttr(sess, req.id, req.node === 1 ? attrs(0o40555, 0, 1001) : attrs(0o100444, req.node >= 10 ? 0 : 5, req.node >= 10 ? 2000 + req.node : 1002)); return }
    if (req.op === 'open') { ll.replyOpen(sess, req.id, 77); return }
    if (req.op === 'read') { assert.is(req.fh, 77); ll.replyBuf(sess, req.id, Buffer.from('late\n').subarray(req.offset, req.offset + req.size)); return }
    if (req.op === 'opendir') { ll.replyOpen(sess, req.id, 0); return }
    if (req.op === 'readdir') {
      const all = ['.', '..', 'late', ...many]
      const names = all.slice(req.offset)
      const a = new Float64Array(names.length * 14)
      names.forEach((n, i) => a.set(n === '.' || n === '..' ? attrs(0o40555, 0, 1001) : n === 'late' ? attrs(0o100444, 5, 1002) : attrs(0o100444, 0, 2010 + many.indexOf(n)), i * 14))
      const sent = ll.replyDir(sess, req.id, names, names.map((n) => n === '.' || n === '..' ? 0 : n === 'late' ? 2 : 10 + many.indexOf(n)), names.map((_, i) => req.offset + i + 1), a)
      if (sent === false || sent < Math.min(1, names.length) || sent > names.length) throw new Error(`replyDir sent ${String(sent)} of ${names.length}`)
      return
    }
    if (req.op === 'release' || req.op === 'releasedir') { ll.replyErr(sess, req.id, 0); return }
    ll.replyErr(sess, req.id, os.constants.errno.ENOTSUP)
  }
  try {
    s = ll.mount(src, mnt, 'ro,default_permissions,allow_other,fsname=replicafs-ll', 0, 0, 'fwd', handler)
    assert.equal((await inChild(`ls -a ${mnt}`)).out.split('\n').filter(Boolean).sort(), ['.', '..', 'live'])
    assert.is((await inChild(`cat ${mnt}/live`)).out, 'live\n', 'the rest is served in C')
    const late = await inChild(`cat ${mnt}/fwd/late`)
    assert.is(late.out, 'late\n', 'answered 50 ms later, from a timer')
    const listed = (await inChild(`ls -f ${mnt}/fwd`)).out.split('\n').filter(Boolean)
    assert.equal(listed, ['.', '..', 'late', ...many], 'a listing over many READDIRPLUS requests, each entry once, in order')
    assert.ok(seen.filter((o) => o === 'readdir').length >= 3, 'it took several requests')
    // The kernel forgets what it no longer caches: the handler hears it (its node ids can go).
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2')
    const forgetBy = Date.now() + 10_000
    while (forgotten === 0) {
      if (Date.now() > forgetBy) throw new Error('no forget of a forwarded node after drop_caches')
      await new Promise((resolve) => setTimeout(resolve, 10))
      fs.writeFileSync('/proc/sys/vm/drop_caches', '2')
    }
    // A handler that throws: the request is answered EIO (never left waiting) and the error reaches the process.
    let uncaught: Error | null = null
    const onUncaught = (err: Error): void => { uncaught = err }
    process.on('uncaughtException', onUncaught)
    try {
      const boom = await inChild(`stat ${mnt}/fwd/boom`)
      assert.is(boom.code, 1)
      assert.match(boom.out, /Input\/output error/)
      const until = Date.now() + 5000
      while (uncaught === null && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 5))
    } finally {
      process.off('uncaughtException', onUncaught)
    }
    assert.match(String(uncaught), /the handler fails/)
    const missing = await inChild(`stat ${mnt}/fwd/nope`)
    assert.is(missing.code, 1)
    assert.match(missing.out, /No such file or directory/)
    const ro = await inChild(`echo x > ${mnt}/fwd/late`)
    assert.match(ro.out, /Read-only file system/)
    assert.ok(seen.includes('read') && seen.includes('readdir') && seen.includes('release'))
    // A request left unanswered: the reader waits; unmount answers it, and a late answer finds nothing.
    const waiting = inChild(`stat ${mnt}/fwd/never`)
    const deadline = Date.now() + 10_000
    while (parked === null) {
      if (Date.now() > deadline) throw new Error('the lookup of "never" did not reach the handler')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    assert.is(ll.unmount(s), 0)
    const r = await waiting
    assert.is(r.code, 1, r.out)
    assert.is(ll.replyErr(s, parked, os.constants.errno.ENOENT), false, 'answered already (by unmount)')
    assert.is(gone, 0, 'unmount() is not "gone"')
    // A plain umount ends the loop: the handler hears it.
    s = ll.mount(src, mnt, 'ro,default_permissions,allow_other,fsname=replicafs-ll', 0, 0, 'fwd', handler)
    execFileSync('umount', [mnt])
    const until = Date.now() + 10_000
    while (gone === 0) {
      if (Date.now() > until) throw new Error('the handler never heard "gone"')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    ll.unmount(s)
    s = null
  } finally {
    if (s !== null) { try { ll.unmount(s) } catch {} }
    if (mounted(mnt)) { try { execFileSync('umount', ['-l', mnt]) } catch {} }
    const left = mounted(mnt)
    fs.rmSync(base, { recursive: true, force: true })
    assert.not.ok(left, `no mount left at ${mnt}`)
  }
})

test('a volatile mount: attributes kept until invalAttrs() or changed(), names until changed() (the kernel\'s epoch), nothing of a listing kept', async () => {
  await withMount((src) => {
    fs.mkdirSync(path.join(src, 'd'))
    fs.writeFileSync(path.join(src, 'd', 'old'), 'x')
  }, async (src, mnt, s) => {
    assert.ok(ll.stats(s).epoch, 'Linux 6.18 has FUSE epochs (7.44)')
    const old = path.join(mnt, 'd', 'old')
    assert.is(fs.statSync(old).size, 1)
    // (The first LOOKUP of an inode gives its attributes uncached: the kernel makes its inode only
    // after the reply, and an invalidation could come before. The GETATTR that follows caches.)
    assert.is(fs.statSync(old).size, 1)
    // An attribute changed behind the mount without invalAttrs(): the kernel keeps what it had
    // (the timeout, 60 s here) ...
    ll.hold(s)
    fs.writeFileSync(path.join(src, 'd', 'old'), 'xy')
    ll.release(s)
    assert.is(fs.statSync(old).size, 1, 'the kernel kept the attributes: this is what invalAttrs() is for')
    // ... and after invalAttrs(), made under hold() as an apply slice does, the new ones are seen
    // (the inodes whose attributes were handed out: here the file, its directory and the root).
    ll.hold(s)
    fs.writeFileSync(path.join(src, 'd', 'old'), 'xyz')
    assert.ok(ll.invalAttrs(s) >= 1)
    ll.release(s)
    assert.is(fs.statSync(old).size, 3)
    const since = ll.invalAttrs(s)
    assert.ok(since >= 1 && since <= 3, `only what was handed out since, each once (the file; the directory and the root for the permission checks): ${since}`)
    assert.is(ll.invalAttrs(s), 0, 'nothing handed out since')
    // A name removed behind the mount without changed(): the kernel still has it (kept 60 s) ...
    ll.hold(s)
    fs.renameSync(path.join(src, 'd', 'old'), path.join(src, 'd', 'new'))
    ll.release(s)
    assert.ok(fs.existsSync(old), 'the kernel kept the name: this is what changed() is for')
    // ... and after changed(), made under hold() as an apply slice does, it is gone.
    ll.hold(s)
    fs.renameSync(path.join(src, 'd', 'new'), path.join(src, 'd', 'newer'))
    assert.ok(ll.changed(s))
    ll.release(s)
    assert.not.ok(fs.existsSync(old), 'the renamed name is gone')
    assert.not.ok(fs.existsSync(path.join(mnt, 'd', 'new')))
    assert.is(fs.readFileSync(path.join(mnt, 'd', 'newer'), 'utf8'), 'xyz')
    // A listing is never kept: a name added behind the mount shows at the next readdir.
    fs.writeFileSync(path.join(src, 'd', 'added'), '')
    assert.equal(fs.readdirSync(path.join(mnt, 'd')).sort(), ['added', 'newer'])
  }, LL_PASSTHROUGH | LL_VOLATILE, 60)
})

test('mount refuses a missing source or mount point with its errno; unmount twice is refused', () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-ll-'))
  try {
    fs.mkdirSync(path.join(base, 'mnt'))
    assert.throws(() => ll.mount(path.join(base, 'missing'), path.join(base, 'mnt'), 'ro', 1, 0), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.syscall === 'open')
    assert.throws(() => ll.mount(base, path.join(base, 'no-mount-point'), 'ro', 1, 0), (e: NodeJS.ErrnoException) => e.syscall === 'mount' && /no-mount-point/.test(e.message))
    assert.not.ok(mounted(path.join(base, 'no-mount-point')))
    assert.throws(() => ll.mount(base, path.join(base, 'mnt'), 'ro', 1, 8), /flags/)
    assert.throws(() => ll.mount(base, path.join(base, 'mnt'), 'ro', 1, 4), /journaled mount needs a handler/)
    assert.throws(() => ll.mount(base, path.join(base, 'mnt'), 'ro', 1, 4 | 2, 'x', () => {}), /not volatile/)
    const s = ll.mount(base, path.join(base, 'mnt'), 'ro', 1, 0)
    assert.is(ll.unmount(s), 0)
    assert.throws(() => ll.unmount(s), /unmounted already/)
    assert.not.ok(mounted(path.join(base, 'mnt')))
  } finally {
    fs.rmSync(base, { recursive: true, force: true })
  }
})


test('a journaled mount: changes forwarded with their paths and the caller, answered by id; a stat of an inode with writes in flight waits for them', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-ll-'))
  const src = path.join(base, 'src')
  const mnt = path.join(base, 'mnt')
  fs.mkdirSync(path.join(src, 'dir'), { recursive: true })
  fs.mkdirSync(mnt)
  fs.writeFileSync(path.join(src, 'dir', 'busy'), 'four')
  const seen: string[] = []
  let s: LlSession | null = null
  let held: (() => void) | null = null
  // The handler: a tiny journal-less daemon that makes each change in the source itself.
  const handler = (req: LlRequest): void => {
    const r = req as LlChange
    if (s === null || req.op === 'gone' || req.op === 'forget') return
    seen.push(`${r.op} ${r.path ?? ''}${r.path2 !== undefined ? ' ' + r.path2 : ''}${r.op === 'write' ? ` @${r.offset} ${String(r.data)}` : ''} uid=${r.uid}`)
    try {
      switch (r.op) {
        case 'mkdir': fs.mkdirSync(src + r.path, r.mode & 0o7777); ll.replyLookup(s, r.id); return
        case 'create': { fs.writeFileSync(src + r.path, '', { mode: r.mode & 0o7777 }); ll.replyCreate(s, r.id, 7); return }
        case 'write': {
          const fd = fs.openSync(src + r.path, 'r+'); fs.writeSync(fd, r.data!, 0, r.data!.length, r.offset); fs.closeSync(fd)
          if (r.path === '/dir/slow') { held = () => ll.replyWrite(s!, r.id, r.data!.length); return } // answered later
          ll.replyWrite(s, r.id, r.data!.length)
          return
        }
        case 'rename': fs.renameSync(src + r.path, src + r.path2!); ll.replyErr(s, r.id, 0); return
        case 'setattr': ll.replyErr(s, r.id, 1); return // EPERM: refused by the daemon
        case 'wrelease': ll.replyErr(s, r.id, 0); return
        default: ll.replyErr(s, r.id, 38) // ENOSYS
      }
    } catch (err) { ll.replyErr(s, r.id, -((err as { errno?: number }).errno ?? -5)) }
  }
  try {
    s = ll.mount(src, mnt, 'default_permissions,allow_other,fsname=replicafs-ll', 1, LL_JOURNALED, '.snapshots', handler)
    const m = (p: string): string => path.join(mnt, p)
    const r = await inChild(`mkdir ${m('dir/new')} && printf hello > ${m('dir/new/f')} && mv ${m('dir/new/f')} ${m('dir/g')} && cat ${m('dir/g')} && ! chmod 600 ${m('dir/g')} 2>/dev/null && echo refused`)
    assert.is(r.code, 0, r.out)
    assert.is(r.out, 'hellorefused\n')
    assert.equal(seen.filter((x) => !x.startsWith('wrelease')), [
      'mkdir /dir/new uid=0',
      'create /dir/new/f uid=0',
      'write /dir/new/f @0 hello uid=0',
      'rename /dir/new/f /dir/g uid=0',
      'setattr /dir/g uid=0'
    ])
    assert.is(fs.readFileSync(path.join(src, 'dir', 'g'), 'utf8'), 'hello')
    assert.equal(ll.stats(s).maxWrite, 1024 * 1024)
    // Every answered change is counted, with where its time went (status fuse.forwarded, metrics).
    const counted = ll.stats(s)
    assert.ok(counted.forwarded >= 5, `the five changes above were counted: ${JSON.stringify(counted)}`)
    assert.ok(counted.resolveNs > 0 && counted.queueNs > 0 && counted.handleNs > 0, JSON.stringify(counted))
    assert.is(counted.spinUs, 200, 'the loop polls 200 us for the next request by default (REPLICAFS_LL_SPIN_US)')

    // Writes in flight to `busy` (the daemon says so): a stat through the mount waits (the session
    // counts it waiting) until they are applied, and then sees them.
    const ino = fs.statSync(path.join(src, 'dir', 'busy')).ino
    ll.pending(s, ino, true)
    const child = inChild(`stat -c %s ${m('dir/busy')}`)
    const deadline = Date.now() + 10_000
    while (ll.stats(s).waiting === 0) {
      if (Date.now() > deadline) throw new Error('the stat of an inode with writes in flight did not wait')
      await new Promise((resolve) => setImmediate(resolve))
    }
    fs.writeFileSync(path.join(src, 'dir', 'busy'), 'applied: eighteen') // the apply
    ll.pending(s, ino, false)
    const st = await child
    assert.is(st.out, '17\n', 'the stat saw the applied writes')
    assert.is(ll.stats(s).waiting, 0)

    // A directory's rename waits for the changes in flight whose paths it would change (here a
    // write to dir/slow the daemon has not answered), and is forwarded only after.
    seen.length = 0
    const writer = inChild(`printf x > ${m('dir/slow')}`)
    const until = Date.now() + 10_000
    while (held === null) {
      if (Date.now() > until) throw new Error('the write to dir/slow never reached the handler')
      await new Promise((resolve) => setImmediate(resolve))
    }
    const mover = inChild(`mv ${m('dir')} ${m('moved')}`)
    while (ll.stats(s).gateWaiting === 0) {
      if (Date.now() > until) throw new Error('the directory\'s rename did not wait for the write in flight')
      await new Promise((resolve) => setImmediate(resolve))
    }
    assert.not.ok(seen.some((x) => x.startsWith('rename')), 'the rename is not forwarded while the write is in flight')
    const answer: () => void = held
    answer()
    assert.is((await writer).code, 0)
    const mv = await mover
    assert.is(mv.code, 0, mv.out)
    assert.equal(seen.filter((x) => x.startsWith('write') || x.startsWith('rename')), ['write /dir/slow @0 x uid=0', 'rename /dir /moved uid=0'])
    assert.is(fs.readFileSync(path.join(src, 'moved', 'slow'), 'utf8'), 'x')
  } finally {
    if (s !== null) ll.unmount(s)
    if (mounted(mnt)) { try { execFileSync('umount', ['-l', mnt]) } catch { /* reported below */ } }
    const left = mounted(mnt)
    fs.rmSync(base, { recursive: true, force: true })
    assert.not.ok(left, `no mount left at ${mnt}`)
  }
})

// Last in this file: it lowers this process's descriptor limit, which it may not raise again.
test('the inode table keeps descriptors for the daemon: past its share a lookup answers EMFILE, a listing still names every entry, the mount goes on', async () => {
  // A hard limit of 2,000: the mount raises it as far as the kernel lets it (fs.nr_open, with
  // CAP_SYS_RESOURCE); without that, 1,000 inodes may hold a descriptor (the limit less 4,096
  // kept for the daemon, or half of a limit as small as this one).
  execFileSync('prlimit', ['--nofile=2000:2000', '--pid', String(process.pid)])
  const files = 1500
  await withMount((src) => {
    fs.mkdirSync(path.join(src, 'many'))
    for (let i = 0; i < files; i++) fs.writeFileSync(path.join(src, 'many', `f${i}`), '')
  }, async (src, mnt, s) => {
    const max = ll.stats(s).inodeFdMax
    assert.ok(max > 0, JSON.stringify(ll.stats(s)))
    const names = fs.readdirSync(path.join(mnt, 'many'))
    assert.is(names.length, files, 'every name is listed')
    let emfile = 0
    for (const n of names) {
      try { fs.lstatSync(path.join(mnt, 'many', n)) } catch (err) { if ((err as NodeJS.ErrnoException).code === 'EMFILE') emfile++; else throw err }
    }
    const st = ll.stats(s)
    if (max >= files + 10) {
      // The limit was raised (CAP_SYS_RESOURCE): every entry has its node.
      assert.is(emfile, 0, JSON.stringify(st))
      assert.ok(max > 2000, `the limit was raised past 2,000: ${JSON.stringify(st)}`)
    } else {
      assert.is(max, 1000, 'the share: half of so small a limit')
      assert.ok(emfile > 0 && st.refusedEmfile >= emfile, `stats past the share answer EMFILE: ${emfile}, ${JSON.stringify(st)}`)
      assert.ok(st.inodeFds <= max, JSON.stringify(st))
    }
    // The mount goes on: a name already known, and the root, still answer.
    assert.ok(fs.statSync(path.join(mnt, 'many')).isDirectory())
    assert.is(fs.readdirSync(mnt).length, 1)
  }, LL_PASSTHROUGH | LL_VOLATILE, 60)
})

test.run()
