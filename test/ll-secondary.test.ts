/**
 * A Secondary's mount on the libfuse 3 low-level transport (`--fuse ll`, issue 14): real daemons,
 * real TCP, real mounts. What it must keep from the compat transport: the replicated tree, the
 * snapshots under MOUNT/.snapshots (forwarded to the daemon's views), nothing listed at the root
 * for them, EROFS, a takeover that leaves a writable mount. What it adds: FUSE passthrough for
 * opens (status says whether the kernel granted it), one node per inode (hard links), requests
 * answered on libfuse's threads while the daemon's event loop is busy elsewhere.
 * The compat transport (`--fuse compat`) keeps its own smaller check here.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, assertCleanSlate, assertOneLineError, cleanupAll, isolated, waitFor, cli, exec, type SecondaryStatus
} from './helpers'
import { snapCreate } from './helpers/snapshots'

const t = suite('ll-secondary')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`ll-secondary.test: cleanup had to force: ${forced.join('; ')}`)
})

interface FuseStatus { fuse: { transport: string, passthrough: boolean, openFiles: number } }

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t('--fuse ll: the tree, passthrough reads, hard links as one inode, snapshots under .snapshots, EROFS', isolated(240_000, async () => {
  const pair = await startPair({ secondaryExtraArgs: ['--fuse', 'll'] })
  try {
    const pm = pair.primary.mount
    const sm = pair.secondary.mount
    const big = crypto.randomBytes(4 * 1024 * 1024 + 5)
    await fsp.writeFile(path.join(pm, 'big'), big)
    await fsp.writeFile(path.join(pm, 'a'), 'first\n')
    await fsp.mkdir(path.join(pm, 'dir'))
    await fsp.link(path.join(pm, 'a'), path.join(pm, 'dir', 'b'))
    await fsp.symlink('../a', path.join(pm, 'dir', 'sym'))
    await pair.caughtUp()

    const st = await pair.secondary.status() as SecondaryStatus & FuseStatus
    assert.is(st.fuse.transport, 'll')
    assert.ok(st.fuse.passthrough, 'Linux 6.18 grants FUSE passthrough to a root daemon')
    assert.is(sha(await fsp.readFile(path.join(sm, 'big'))), sha(big))
    assert.is(await fsp.readFile(path.join(sm, 'dir', 'sym'), 'utf8'), 'first\n')
    const [a, b] = [fs.statSync(path.join(sm, 'a')), fs.statSync(path.join(sm, 'dir', 'b'))]
    assert.is(a.ino, b.ino, 'hard links: one inode through the mount')
    assert.is(a.nlink, 2)
    assert.not.ok(fs.readdirSync(sm).includes('.snapshots'), 'the snapshot directory is reachable by name, not listed')
    try { fs.writeFileSync(path.join(sm, 'new'), 'x'); assert.unreachable('a write through the Secondary\'s mount') } catch (err) { assert.is((err as NodeJS.ErrnoException).code, 'EROFS') }

    // A file kept open sees what is applied (no page cache kept on a volatile mount).
    const fd = fs.openSync(path.join(sm, 'a'), 'r')
    try {
      await snapCreate(pair.secondary.state, 'before')
      await fsp.writeFile(path.join(pm, 'dir', 'b'), 'second, longer\n') // through the other name
      await pair.caughtUp()
      const buf = Buffer.alloc(64)
      const n = fs.readSync(fd, buf, 0, 64, 0)
      assert.is(buf.subarray(0, n).toString(), 'second, longer\n', 'the open file reads the applied bytes')
      assert.is(fs.statSync(path.join(sm, 'a')).size, 15, 'the other name sees the new size at once')
    } finally {
      fs.closeSync(fd)
    }

    // The snapshot: its own tree, read through the daemon's views.
    const snap = path.join(sm, '.snapshots', 'before')
    assert.equal(fs.readdirSync(path.join(sm, '.snapshots')), ['before'])
    assert.equal(fs.readdirSync(snap).sort(), ['a', 'big', 'dir'])
    assert.is(await fsp.readFile(path.join(snap, 'a'), 'utf8'), 'first\n')
    assert.is(await fsp.readFile(path.join(snap, 'dir', 'sym'), 'utf8'), 'first\n')
    assert.is(sha(await fsp.readFile(path.join(snap, 'big'))), sha(big))
    assert.is(fs.statSync(path.join(snap, 'big')).size, big.length)
    const ls = await exec('ls', ['-la', snap], { timeoutMs: 20_000 })
    assert.is(ls.code, 0, ls.stderr)
    assert.match(ls.stdout, / \.\n/)
    assert.match(ls.stdout, / \.\.\n/)
    const tar = await exec('tar', ['-cf', '/dev/null', '-C', snap, '.'], { timeoutMs: 60_000 })
    assert.is(tar.code, 0, tar.stderr)
    try { fs.writeFileSync(path.join(snap, 'a'), 'x'); assert.unreachable('a write into a snapshot') } catch (err) { assert.is((err as NodeJS.ErrnoException).code, 'EROFS') }
    try { fs.statSync(path.join(sm, '.snapshots', 'nope')); assert.unreachable('no such snapshot') } catch (err) { assert.is((err as NodeJS.ErrnoException).code, 'ENOENT') }
    // A name the kernel keeps (looked up just now) is dropped by the slice that renames it: the
    // apply bumps the kernel's epoch. Kept names last 1 s, so only a round (lookup, rename,
    // replicated, check) done within that proves anything: a slower round is tried again.
    let proved = false
    for (let round = 0; round < 5 && !proved; round++) {
      const [from, to] = [`moving-${round}`, `moved-${round}`]
      await fsp.writeFile(path.join(pm, from), 'm')
      await pair.caughtUp()
      const looked = Date.now()
      assert.ok(fs.existsSync(path.join(sm, from)))
      await fsp.rename(path.join(pm, from), path.join(pm, to))
      await pair.caughtUp()
      const gone = !fs.existsSync(path.join(sm, from))
      const elapsed = Date.now() - looked
      if (elapsed >= 1000) continue
      assert.ok(gone, `the renamed name is gone from the Secondary's mount ${elapsed} ms after it was looked up`)
      assert.ok(fs.existsSync(path.join(sm, to)))
      proved = true
    }
    assert.ok(proved, 'no round replicated a rename within the 1 s a name is kept: the check proved nothing')

    await waitFor(async () => ((await pair.secondary.status()) as SecondaryStatus & FuseStatus).fuse.openFiles === 0, { timeoutMs: 10_000, what: 'every handle released' })
  } finally {
    await pair.stop()
  }
  await assertCleanSlate()
}))

t('--fuse ll: the Secondary\'s mount keeps attributes and drops them at each apply (a write, a chmod, a rename): a stat right after sees what was applied', isolated(120_000, async () => {
  const pair = await startPair({ secondaryExtraArgs: ['--fuse', 'll'] })
  try {
    const pm = (rel: string): string => path.join(pair.primary.mount, rel)
    const sm = (rel: string): string => path.join(pair.secondary.mount, rel)
    await fsp.writeFile(pm('grow'), 'x')
    await pair.caughtUp()
    const stale: string[] = []
    // Writes only (no name changes: the kernel's names stay, only the attributes are dropped).
    for (let i = 1; i <= 20; i++) {
      fs.statSync(sm('grow')) // the kernel keeps these attributes (1 s) from here
      await fsp.appendFile(pm('grow'), 'y'.repeat(i))
      await pair.caughtUp()
      const st = fs.statSync(sm('grow'))
      const want = 1 + (i * (i + 1)) / 2
      if (st.size !== want) stale.push(`round ${i}: size ${st.size} (want ${want})`)
    }
    assert.equal(stale, [], 'every stat after an apply of writes sees them')
    fs.statSync(sm('grow'))
    await fsp.chmod(pm('grow'), 0o600)
    await pair.caughtUp()
    assert.is(fs.statSync(sm('grow')).mode & 0o777, 0o600, 'and of a chmod')
    // A rename: the old name's inode keeps its attributes, under the new name.
    fs.statSync(sm('grow'))
    await fsp.rename(pm('grow'), pm('grown'))
    await pair.caughtUp()
    assert.not.ok(fs.existsSync(sm('grow')))
    assert.is(fs.statSync(sm('grown')).size, 1 + 210)
    const st = await pair.secondary.status() as unknown as { fuse: { transport: string } }
    assert.is(st.fuse.transport, 'll')
  } finally {
    await pair.stop()
  }
}))

t('--fuse ll: a takeover remounts the mount point read-write; --fuse compat still serves; a wrong --fuse is refused', isolated(240_000, async () => {
  const bad = await cli(['secondary', '--fuse', 'fast', '--data', '/nonexistent', '--mount', '/nonexistent', '--state', '/nonexistent', '--listen', '127.0.0.1:0', '--secret-file', '/nonexistent'], { timeoutMs: 20_000 })
  assertOneLineError(bad, [/--fuse fast is not a transport \(ll or compat\)/])

  const compat = await startPair({ secondaryExtraArgs: ['--fuse', 'compat'] })
  try {
    await fsp.writeFile(path.join(compat.primary.mount, 'c'), 'compat\n')
    await compat.caughtUp()
    assert.is(await fsp.readFile(path.join(compat.secondary.mount, 'c'), 'utf8'), 'compat\n')
    assert.is(((await compat.secondary.status()) as SecondaryStatus & FuseStatus).fuse.transport, 'compat')
  } finally {
    await compat.stop()
  }

  const pair = await startPair({ secondaryExtraArgs: ['--fuse', 'll'] })
  try {
    await fsp.writeFile(path.join(pair.primary.mount, 'f'), 'one\n')
    await pair.caughtUp()
    await pair.primary.stop()
    const r = await cli(['takeover', '--state', pair.secondary.state], { timeoutMs: 60_000 })
    assert.is(r.code, 0, r.stderr)
    await waitFor(async () => {
      const s = await cli(['status', '--state', pair.secondary.state, '--json'], { timeoutMs: 20_000 })
      return s.code === 0 && JSON.parse(s.stdout).role === 'primary'
    }, { timeoutMs: 30_000, what: 'the Secondary to be the Primary' })
    await fsp.writeFile(path.join(pair.secondary.mount, 'g'), 'two\n')
    assert.is(await fsp.readFile(path.join(pair.secondary.mount, 'f'), 'utf8'), 'one\n')
    assert.is(await fsp.readFile(path.join(pair.secondary.data, 'g'), 'utf8'), 'two\n')
    assert.match(await pair.secondary.log(), /remounting .* read-write/)
    const now = JSON.parse((await cli(['status', '--state', pair.secondary.state, '--json'], { timeoutMs: 20_000 })).stdout) as FuseStatus
    assert.is(now.fuse.transport, 'll', 'the Primary\'s mount: journaled, on the transport the Secondary\'s was')
    // Journaled: a change through it is logged and applied (a hard link is one inode there, as on any ll Primary).
    await fsp.link(path.join(pair.secondary.mount, 'g'), path.join(pair.secondary.mount, 'g2'))
    await fsp.appendFile(path.join(pair.secondary.mount, 'g2'), 'three\n')
    assert.is(await fsp.readFile(path.join(pair.secondary.mount, 'g'), 'utf8'), 'two\nthree\n')
  } finally {
    await pair.secondary.stop()
  }
  await assertCleanSlate()
}))

t.run()
