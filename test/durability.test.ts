/**
 * Daemon-level durability points and fatal errors (issue 17, "Promises with no test", item 4).
 *
 *  - (4a) `replicafs sync --state DIR` "make[s] every change so far durable in the SRL" (README.md,
 *    "Commands"; ARCHITECTURE.md, "Known limitations": `fsync`/`fdatasync` of a file "and so does
 *    `replicafs sync --state DIR` (a control-socket request)").
 *  - (4b) "the SRL is also group-committed every second" (README.md, "How it works");
 *    ARCHITECTURE.md, "Known limitations": "The daemon also group-commits the SRL every
 *    `SRL_SYNC_INTERVAL_MS` (1 s) while it has unsynced records, which bounds what a power loss can
 *    take from writers that never sync"; src/limits.ts SRL_SYNC_INTERVAL_MS: "The SRL is
 *    fdatasync'd at least this often while records are unsynced".
 *  - (4c) A write the data directory cannot take: test/full-disk.test.ts (issue 16 made a full
 *    disk answer ENOSPC to the writer and a failing one keep the daemon up).
 *  - (4d) `replicafs passthrough --data DIR --mount DIR --state DIR [--daemon]`, "benchmark
 *    baseline, no SRL" (README.md, "Commands"; status `role`: "`primary` (or `passthrough`)").
 *
 * How durability is observed. A `kill -9` proves nothing here: the ring is written into the page
 * cache (ARCHITECTURE.md, "Ordering and durability points": an append "survives `kill -9` (it is in
 * the page cache)"), so a record survives a kill -9 whether or not anything synced it. What `sync`
 * and the group commit add is that the record reaches the disk. So the SRL directory (STATE/srl:
 * the ring and its LevelDB state) is given a disk of its own, a small ext4 filesystem on a loop
 * device (test/helpers/loopfs.ts), and the test reads that disk: the image file holds exactly what
 * the kernel has written to the loop device, not what is only dirty in the page cache above it.
 * A copy of the image taken at some instant is what a power cut at that instant would leave; mounted
 * (its journal replayed) it is read with `replicafs srl-dump`.
 *
 * Telling a sync apart from the kernel's own writeback and from the group commit: the kernel writes
 * back dirty pages only once they are dirty_expire_centisecs old (checked below to be at least 10 s),
 * so a record that reaches the disk within a second or two was synced by the daemon. The group
 * commit runs on a 1 s timer, so its moment is found by writing a marker and watching for it on
 * the disk; right after that, the next group commit is about a second away, and a record that is on
 * the disk when `replicafs sync` returns a few hundred milliseconds later was put there by the sync.
 * (A sync observed too late after the group commit to tell is retried, up to five times.) --retain
 * keeps checkpoints from writing LevelDB on that disk, and the data directory and the snapshot store
 * are on other filesystems, so nothing else syncs it.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, withDeadline, cli, execOk, tmpdirs,
  status, srlDump, daemonLog, isMounted, fuseMountAt, pidsWithArg, processAlive, describeFailure,
  type Dirs, type Primary, type DumpRecord, type ExecResult
} from './helpers'
import { mountLoopFs, mountLoopImage, withLoopFs, assertNoLoopDevices, type LoopFs } from './helpers/loopfs'
import { request } from '../src/control'
import { SRL_SYNC_INTERVAL_MS } from '../src/limits'

const t = suite('durability')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`durability.test: cleanup had to force: ${forced.join('; ')}`)
})

// ---------------------------------------------------------------------------------------------
// the SRL on a disk of its own

/** A unique byte string, to find a record's data on the disk. */
function marker (label: string): Buffer {
  return Buffer.from(`<durability-${label}-${crypto.randomBytes(12).toString('hex')}>`)
}

/** A write's data: the marker, padded to `bytes` (over 2 KiB: stored by pwritev; up to 2 KiB: through the ring's mapping). */
function payload (m: Buffer, bytes: number): Buffer {
  return Buffer.concat([m, Buffer.alloc(Math.max(0, bytes - m.length), 0x2e)])
}

interface SrlDisk {
  lfs: LoopFs
  /** The ring file's extents on the device, in file order: [device offset, length] in bytes. */
  extents: Array<[number, number]>
  /** Whether `m` is in the ring's bytes on the device now. */
  has(m: Buffer): boolean
  /** Copies the whole device (the image) now: what a power cut now would leave. */
  snapshot(name: string): Promise<string>
}

/** Mounts a fresh loop-backed ext4 filesystem at STATE/srl (before the daemon creates the SRL there). */
async function srlDisk (dirs: Dirs): Promise<LoopFs> {
  await fsp.mkdir(dirs.state, { mode: 0o700 })
  return await mountLoopFs(path.join(dirs.root, 'srl.img'), path.join(dirs.state, 'srl'), 48)
}

/** Where the ring lives on the device (filefrag), once the daemon has created and synced it. */
async function ringOnDisk (lfs: LoopFs): Promise<SrlDisk> {
  const ring = path.join(lfs.mountPoint, 'ring')
  const size = (await fsp.stat(ring)).size
  const extents = await waitFor(async () => {
    const r = await execOk('filefrag', ['-v', ring], { timeoutMs: 20_000 })
    const bs = Number(/blocks of (\d+) bytes/.exec(r.stdout)?.[1])
    const ext: Array<[number, number]> = []
    for (const line of r.stdout.split('\n')) {
      const m = /^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+):/.exec(line)
      if (m === null) continue
      if (/unknown|delalloc/.test(line)) return null
      ext.push([Number(m[1]) * bs, Number(m[2]) * bs])
    }
    const total = ext.reduce((n, [, len]) => n + len, 0)
    return bs > 0 && total >= size ? ext : null
  }, { timeoutMs: 20_000, what: `filefrag to show where every block of ${ring} is on the device`, intervalMs: 100 })
  const read = (): Buffer => {
    const fd = fs.openSync(lfs.image, 'r')
    try {
      return Buffer.concat(extents.map(([off, len]) => {
        const b = Buffer.alloc(len)
        fs.readSync(fd, b, 0, len, off)
        return b
      }))
    } finally {
      fs.closeSync(fd)
    }
  }
  return {
    lfs,
    extents,
    has: (m) => read().includes(m),
    async snapshot (name) {
      const copy = path.join(path.dirname(lfs.image), `${name}.img`)
      await fsp.copyFile(lfs.image, copy)
      return copy
    }
  }
}

/** srl-dump of a copy of the SRL's disk, mounted (journal replayed) under DIRS.root/NAME/srl. */
async function dumpImage (root: string, image: string, name: string): Promise<DumpRecord[]> {
  const state = path.join(root, name)
  await fsp.mkdir(state, { mode: 0o700 })
  const lfs = await mountLoopImage(image, path.join(state, 'srl'))
  return await withLoopFs(lfs, async () => await srlDump(state))
}

function paths (recs: DumpRecord[]): string[] {
  return recs.map((r) => `${r.type} ${r.path ?? ''}${typeof r.dest === 'string' ? ' -> ' + r.dest : ''}`)
}

/** Writeback by the kernel must be slow enough to tell from a sync by the daemon. */
async function assertSlowWriteback (): Promise<void> {
  const expire = Number((await fsp.readFile('/proc/sys/vm/dirty_expire_centisecs', 'utf8')).trim())
  if (!(expire >= 1000)) throw new Error(`vm.dirty_expire_centisecs is ${expire}: the kernel writes dirty pages back within ${expire / 100} s by itself, so these tests cannot tell a sync by the daemon from the kernel's writeback (they need at least 10 s)`)
}

/**
 * Writes a fresh marker file through the mount and waits for the group commit to put it on the
 * disk; returns when it was seen there (the group commit happened just before).
 */
async function groupCommitSeen (p: Primary, disk: SrlDisk, name: string): Promise<number> {
  const m = marker(name)
  const t0 = Date.now()
  await fsp.writeFile(path.join(p.mount, name), payload(m, 3000))
  const seen = await waitFor(() => disk.has(m) ? Date.now() : 0, { timeoutMs: 10_000, what: `the group commit to put ${name} on the SRL's disk`, intervalMs: 5 })
  assert.ok(seen - t0 <= SRL_SYNC_INTERVAL_MS + 3000, `${name}: reached the disk ${seen - t0} ms after the write; the group commit runs every ${SRL_SYNC_INTERVAL_MS} ms`)
  return seen
}

/** Runs `body`; if it leaves the Primary running (it failed), stops it, so that its disk can be unmounted. */
async function stopping<T> (p: Primary, body: () => Promise<T>): Promise<T> {
  try {
    return await body()
  } finally {
    if (await isMounted(p.mount)) await p.stop().catch(() => {})
  }
}

/** A Primary (--retain, 4 MiB SRL) whose STATE/srl is a disk of its own. */
async function primaryOnSrlDisk (label: string, extraArgs?: string[]): Promise<{ p: Primary, disk: SrlDisk, lfs: LoopFs }> {
  const dirs = await tmpdirs(label)
  const lfs = await srlDisk(dirs)
  const p = await startPrimary({ dirs, srlSize: '4M', retain: true, extraArgs })
  return { p, lfs, disk: await ringOnDisk(lfs) }
}

// ---------------------------------------------------------------------------------------------
// 4b: the group commit

t('the 1 s group commit: a write nobody syncs is not on the SRL\'s disk at first, and is there within a second (a power cut before would lose it, after would not)', isolated(120_000, async () => {
  await assertSlowWriteback()
  const { p, disk, lfs } = await primaryOnSrlDisk('dur')
  let atWrite = ''
  let afterCommit = ''
  let latency = -1
  let name = ''
  await withLoopFs(lfs, async () => stopping(p, async () => {
    let ok = false
    const tries: string[] = []
    for (let i = 0; i < 5 && !ok; i++) {
      const tick = await groupCommitSeen(p, disk, `tick-${i}`)
      const m = marker(`c${i}`)
      const t0 = Date.now()
      await fsp.writeFile(path.join(p.mount, `c-${i}`), payload(m, 3000))
      const copy = await disk.snapshot(`at-write-${i}`)
      const absent = !disk.has(m)
      const checkedAt = Date.now() - tick
      tries.push(`try ${i}: the write and the copy ${checkedAt} ms after a group commit, on disk at once: ${String(!absent)}`)
      // Only conclusive well before the next group commit (about a second after the last one).
      if (checkedAt > 600) continue
      assert.ok(absent, `a write nobody synced is not on the SRL's disk right after it returns (${tries.join('; ')})`)
      const seen = await waitFor(() => disk.has(m) ? Date.now() : 0, { timeoutMs: 10_000, what: 'the group commit to put the unsynced write on the disk', intervalMs: 5 })
      latency = seen - t0
      afterCommit = await disk.snapshot('after-commit')
      atWrite = copy
      name = `c-${i}`
      ok = true
    }
    assert.ok(ok, `no write was checked early enough after a group commit to tell: ${tries.join('; ')}`)
    // "at least this often while records are unsynced": 1 s, plus the fdatasync itself on a busy host
    assert.ok(latency <= SRL_SYNC_INTERVAL_MS + 3000, `the unsynced write reached the disk ${latency} ms after it returned; the group commit runs every ${SRL_SYNC_INTERVAL_MS} ms`)
    await p.stop()
  }))
  const before = paths(await dumpImage(p.root, atWrite, 'pc-at-write'))
  const after = paths(await dumpImage(p.root, afterCommit, 'pc-after-commit'))
  assert.ok(before.includes('WRITE /tick-0'), `the copy taken at the write holds the SRL up to the earlier, committed records: ${before.join(', ')}`)
  assert.not.ok(before.includes(`CREATE /${name}`) || before.includes(`WRITE /${name}`), `a power cut right after the write would have lost it (not yet synced): ${before.join(', ')}`)
  assert.ok(after.includes(`CREATE /${name}`) && after.includes(`WRITE /${name}`), `after the group commit the record is in the SRL as srl-dump reads it from the disk alone: ${after.join(', ')}`)
}))

// ---------------------------------------------------------------------------------------------
// 4a: replicafs sync

t('replicafs sync: every change made before it is on the SRL\'s disk when it returns, long before the next group commit', isolated(120_000, async () => {
  await assertSlowWriteback()
  const { p, disk, lfs } = await primaryOnSrlDisk('dur')
  let afterSync = ''
  let names: string[] = []
  await withLoopFs(lfs, async () => stopping(p, async () => {
    let ok = false
    const tries: string[] = []
    for (let i = 0; i < 5 && !ok; i++) {
      const tick = await groupCommitSeen(p, disk, `tick-${i}`)
      // several kinds of change: a write stored by pwritev, a small one stored through the ring's
      // mapping, a directory, a rename
      const big = marker(`big${i}`)
      const small = marker(`small${i}`)
      const n = [`big-${i}`, `small-${i}`, `dir-${i}`]
      await fsp.writeFile(path.join(p.mount, n[0]), payload(big, 3000))
      await fsp.writeFile(path.join(p.mount, n[1]), small)
      await fsp.mkdir(path.join(p.mount, n[2]))
      await fsp.rename(path.join(p.mount, n[1]), path.join(p.mount, n[2], n[1]))
      const notYet = !disk.has(big) && !disk.has(small)
      const r: ExecResult = await cli(['sync', '--state', p.state], { timeoutMs: 60_000 })
      if (r.code !== 0) throw new Error(`replicafs sync failed: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(p.state)}`)
      const copy = await disk.snapshot(`after-sync-${i}`)
      const onDisk = disk.has(big) && disk.has(small)
      const doneAt = Date.now() - tick
      tries.push(`try ${i}: on disk before the sync: ${String(!notYet)}; sync returned and the disk was read ${doneAt} ms after a group commit; on disk then: ${String(onDisk)}`)
      // Only conclusive if nothing was on the disk before the sync and the next group commit
      // (about a second after the last one) cannot have come yet.
      if (!notYet || doneAt > 700) continue
      assert.ok(onDisk, `when replicafs sync returns, the changes made before it are on the SRL's disk (${tries.join('; ')})`)
      afterSync = copy
      names = n
      ok = true
    }
    assert.ok(ok, `no sync was observed early enough after a group commit to tell: ${tries.join('; ')}`)
    await p.stop()
  }))
  const recs = paths(await dumpImage(p.root, afterSync, 'pc-after-sync'))
  const [big, small, dir] = names
  for (const want of [`CREATE /${big}`, `WRITE /${big}`, `CREATE /${small}`, `WRITE /${small}`, `MKDIR /${dir}`, `RENAME /${small} -> /${dir}/${small}`]) {
    assert.ok(recs.includes(want), `the SRL on the disk as it was when sync returned (a power cut then) holds "${want}": ${recs.join(', ')}`)
  }
}))

// ---------------------------------------------------------------------------------------------
// fsync through the mount (answered by the ll mount itself: src/native/ll.c logSync)

interface LogSyncStatus { fatal: string | null, fuse?: { transport: string, logSyncs?: number } }

t('fsync through the mount: the file\'s changes are on the SRL\'s disk when it returns, answered by the mount itself; on a disk that fails, fsync answers EIO, again after, and the Primary stops taking changes', isolated(120_000, async () => {
  await assertSlowWriteback()
  const { p, disk, lfs } = await primaryOnSrlDisk('dur', ['--fuse', 'll']) // (the ll addon's fsync, whatever the suite's transport)
  await withLoopFs(lfs, async () => stopping(p, async () => {
    const st0 = await p.status() as unknown as LogSyncStatus
    assert.is(st0.fuse?.transport, 'll', 'the test Primary is on the ll transport')
    const syncs0 = st0.fuse?.logSyncs ?? -1
    assert.ok(syncs0 >= 0, `status --json reports fuse.logSyncs: ${JSON.stringify(st0.fuse)}`)
    let ok = false
    const tries: string[] = []
    for (let i = 0; i < 5 && !ok; i++) {
      const tick = await groupCommitSeen(p, disk, `tick-${i}`)
      const m = marker(`fsync${i}`)
      const fd = fs.openSync(path.join(p.mount, `f-${i}`), 'w')
      try {
        fs.writeSync(fd, payload(m, 3000))
        const notYet = !disk.has(m)
        fs.fsyncSync(fd)
        const onDisk = disk.has(m)
        const doneAt = Date.now() - tick
        tries.push(`try ${i}: on disk before the fsync: ${String(!notYet)}; fsync returned and the disk was read ${doneAt} ms after a group commit; on disk then: ${String(onDisk)}`)
        if (!notYet || doneAt > 700) continue
        assert.ok(onDisk, `when fsync returns, the write is on the SRL's disk (${tries.join('; ')})`)
        ok = true
      } finally {
        fs.closeSync(fd)
      }
    }
    assert.ok(ok, `no fsync was observed early enough after a group commit to tell: ${tries.join('; ')}`)
    const syncs1 = await waitFor(async () => {
      const n = ((await p.status()) as unknown as LogSyncStatus).fuse?.logSyncs ?? 0
      return n > syncs0 ? n : 0
    }, { timeoutMs: 10_000, what: 'status to count the fsync the mount answered itself' })
    assert.ok(syncs1 > syncs0)

    // The SRL's disk fails (ext4's shutdown ioctl: every later write and sync on it is EIO) with
    // a write appended and not yet synced (right after a group commit): the fsync after it must
    // not say it is durable. (An fsync with nothing new since the last sync may answer 0: what it
    // vouches for is on the disk.)
    const fd = fs.openSync(path.join(p.mount, 'f-0'), 'r+')
    try {
      await groupCommitSeen(p, disk, 'tick-last')
      fs.writeSync(fd, payload(marker('late'), 3000), 0, 3000, 0)
      await execOk('xfs_io', ['-x', '-c', 'shutdown', lfs.mountPoint], { timeoutMs: 20_000 })
      const fsyncErr = (): string => { try { fs.fsyncSync(fd); return 'succeeded' } catch (err) { return (err as NodeJS.ErrnoException).code ?? String(err) } }
      assert.is(fsyncErr(), 'EIO', 'fsync on a log that cannot be synced')
      const fatal = await waitFor(async () => ((await p.status()) as unknown as LogSyncStatus).fatal, { timeoutMs: 10_000, what: 'the Primary to report the failed sync' })
      assert.match(fatal, /fdatasync/)
      assert.is(fsyncErr(), 'EIO', 'the next fsync too (the kernel reports a write-back error once)')
      let writeErr = 'succeeded'
      try { fs.writeSync(fd, 'more') } catch (err) { writeErr = (err as NodeJS.ErrnoException).code ?? String(err) }
      assert.is.not(writeErr, 'succeeded', 'a change after it is refused')
    } finally {
      fs.closeSync(fd)
    }
    await p.stop()
  }))
}))

t('a small record made durable writes a page of the SRL\'s disk, not a large folio: 200 writes of 100 bytes, each fsynced, write under 64 KiB each to the device', isolated(120_000, async () => {
  const { p, lfs } = await primaryOnSrlDisk('dur')
  await withLoopFs(lfs, async () => stopping(p, async () => {
    const dev = path.basename(lfs.device)
    // /sys/block/loopN/stat: field 7 is sectors written (512 bytes), field 16 flushes
    const stat = async (): Promise<{ bytes: number, flushes: number }> => {
      const f = (await fsp.readFile(`/sys/block/${dev}/stat`, 'utf8')).trim().split(/\s+/).map(Number)
      return { bytes: f[6] * 512, flushes: f[15] }
    }
    const fd = fs.openSync(path.join(p.mount, 'small'), 'w')
    try {
      fs.writeSync(fd, 'x')
      fs.fsyncSync(fd)
      const before = await stat()
      const n = 200
      for (let i = 0; i < n; i++) {
        fs.writeSync(fd, Buffer.alloc(100, 0x61 + (i % 26)), 0, 100, i * 100)
        fs.fsyncSync(fd)
      }
      const after = await stat()
      const perSync = (after.bytes - before.bytes) / n
      // A ring cached in 1 MiB folios (zero-filled in 1 MiB writes, as before) wrote 1 MiB here.
      assert.ok(perSync < 64 * 1024, `${Math.round(perSync / 1024)} KiB written to the SRL's disk per fsync of a 100-byte write (${after.flushes - before.flushes} flushes for ${n} fsyncs)`)
      assert.ok(after.flushes - before.flushes >= n / 2, `the fsyncs reached the disk: ${after.flushes - before.flushes} flushes for ${n}`)
    } finally {
      fs.closeSync(fd)
    }
    await p.stop()
  }))
}))

// ---------------------------------------------------------------------------------------------
// 4d: the passthrough

t('replicafs passthrough: mounts, passes changes straight to the data directory, has no SRL (role passthrough), stops cleanly with exit 0', isolated(120_000, async () => {
  const dirs = await tmpdirs('pt')
  const args = ['passthrough', '--data', dirs.data, '--mount', dirs.mount, '--state', dirs.state]
  let run: Promise<ExecResult> | undefined
  try {
    run = cli(args, { timeoutMs: 120_000 })
    await waitFor(async () => (await fuseMountAt(dirs.mount)) !== undefined && (await request(dirs.state, { cmd: 'status' }, 2000) as { pid?: number }).pid !== undefined,
      { timeoutMs: 60_000, what: 'the foreground passthrough to mount and answer status', intervalMs: 100 })
    const st = await status(dirs.state) as unknown as { role: string, srl: unknown, pid: number, data: string, mount: string, fatal: unknown }
    assert.is(st.role, 'passthrough', `status role: ${JSON.stringify(st)}`)
    assert.is(st.srl, null, `no SRL in status: ${JSON.stringify(st)}`)
    assert.is(st.data, dirs.data)
    assert.is(st.mount, dirs.mount)
    assert.is(st.fatal, null)
    assert.ok(processAlive(st.pid), 'status names a live process')

    // every change is in the data directory when the call returns (nothing applied later)
    const big = crypto.randomBytes(1024 * 1024 + 123)
    await fsp.writeFile(path.join(dirs.mount, 'big'), big)
    assert.ok((await fsp.readFile(path.join(dirs.data, 'big'))).equals(big), 'a 1 MiB write is in the data directory at once')
    const fh = await fsp.open(path.join(dirs.mount, 'small'), 'w')
    await fh.write('abc', 0)
    assert.is(await fsp.readFile(path.join(dirs.data, 'small'), 'utf8'), 'abc', 'a small write on an open file is in the data directory at once')
    await fh.close()
    await fsp.mkdir(path.join(dirs.mount, 'd'))
    await fsp.rename(path.join(dirs.mount, 'small'), path.join(dirs.mount, 'd', 'moved'))
    await fsp.symlink('moved', path.join(dirs.mount, 'd', 'link'))
    await fsp.chmod(path.join(dirs.mount, 'd', 'moved'), 0o640)
    await fsp.truncate(path.join(dirs.mount, 'big'), 1000)
    await fsp.writeFile(path.join(dirs.mount, 'gone'), 'x')
    await fsp.unlink(path.join(dirs.mount, 'gone'))
    assert.equal((await fsp.readdir(dirs.data)).sort(), ['big', 'd'])
    assert.equal((await fsp.readdir(path.join(dirs.data, 'd'))).sort(), ['link', 'moved'])
    assert.is(await fsp.readFile(path.join(dirs.data, 'd', 'moved'), 'utf8'), 'abc')
    assert.is((await fsp.stat(path.join(dirs.data, 'd', 'moved'))).mode & 0o7777, 0o640)
    assert.is(await fsp.readlink(path.join(dirs.data, 'd', 'link')), 'moved')
    assert.ok((await fsp.readFile(path.join(dirs.data, 'big'))).equals(big.subarray(0, 1000)), 'the truncate is in the data directory')
    assert.ok((await fsp.readFile(path.join(dirs.mount, 'big'))).equals(big.subarray(0, 1000)), 'and reads back through the mount')

    // no SRL anywhere
    assert.not.ok(fs.existsSync(path.join(dirs.state, 'srl')), `the state directory has no SRL: ${JSON.stringify(await fsp.readdir(dirs.state))}`)
    const dump = await cli(['srl-dump', '--state', dirs.state], { timeoutMs: 60_000 })
    assert.ok(dump.code !== 0, `srl-dump finds no SRL to dump: ${describeFailure(dump)}`)

    const stop = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
    assert.is(stop.code, 0, describeFailure(stop))
    const r = await withDeadline(run, 60_000, 'the passthrough to exit after stop')
    run = undefined
    assert.is(r.code, 0, `the passthrough exits 0 after stop: ${describeFailure(r)}`)
    assert.not.ok(await isMounted(dirs.mount), 'unmounted')
    await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 20_000, what: 'no process to hold the state directory' })
    assert.equal((await fsp.readdir(dirs.data)).sort(), ['big', 'd'], 'the data directory keeps everything')

    // and as a daemon
    const d = await cli([...args, '--daemon'], { timeoutMs: 90_000 })
    assert.is(d.code, 0, `passthrough --daemon starts: ${describeFailure(d)}\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
    const st2 = await status(dirs.state) as unknown as { role: string, pid: number }
    assert.is(st2.role, 'passthrough')
    assert.is(await fsp.readFile(path.join(dirs.mount, 'd', 'moved'), 'utf8'), 'abc', 'the daemon serves the same data directory')
    const stop2 = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
    assert.is(stop2.code, 0, describeFailure(stop2))
    await waitFor(() => !processAlive(st2.pid), { timeoutMs: 30_000, what: 'the passthrough daemon to exit after stop' })
    assert.not.ok(await isMounted(dirs.mount), 'unmounted')
  } finally {
    if (run !== undefined) {
      if (await isMounted(dirs.mount)) await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 }).catch(() => undefined)
      await run.catch(() => undefined)
    }
  }
}))

t('leaves no FUSE mounts, loop devices or daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
  assertNoLoopDevices()
}))

t.run()
