/**
 * Snapshots (issue 5), end to end with real daemons and FUSE mounts: `replicafs snapshot
 * create|list|delete|restore` and MOUNT/.snapshots/NAME/ (src/cli/snapshot.ts, src/daemon/snapshots.ts,
 * src/daemon/restore.ts, src/fuse/snapshots.ts).
 *
 * A pair (Primary with --retain, so its SRL keeps every update, -> Secondary):
 *  - s1 and s2 on the Primary, each after a varied tree and heavy changes, read through FUSE exactly
 *    as the data directory was when taken (type, mode, owner, size, content, mtime to the µs,
 *    symlink targets, xattrs, hard-link groups); tar of a snapshot; EROFS for every change inside
 *    .snapshots; .snapshots reachable by name, not listed in the root;
 *  - a snapshot on a Secondary frozen at an IBC message is the Primary's tree at the send, while
 *    the live Secondary moves on;
 *  - kill -9 of both daemons in the middle of overwrites of snapshotted files: after restarts every
 *    snapshot lists and reads as before (an interrupted copy-on-write never shows new data);
 *  - restore: online on the Primary (journaled, so the Secondary follows), refused on a running
 *    Secondary, offline on a stopped Secondary (its SRL reset to the snapshot's sequence number;
 *    at restart it asks the Primary, which still holds the updates, and converges), refused on a
 *    stopped Primary;
 *  - snapshots taken while a sequential workload writes are exact prefixes of it, on the Primary
 *    and on the replicating (not frozen) Secondary; deleting them leaves the older ones intact;
 *  - bad input: one line, non-zero exit, no stack trace.
 * A Primary without --retain: a Secondary restored offline to a snapshot older than the Primary's
 * SRL tail is STALE: the Primary synchronizes it by difference, and the snapshot stays as it was.
 * A standalone Primary:
 *  - what the kernel shows through the Primary's mount right after an online restore, and right
 *    after a snapshot name is deleted and re-created (the mount keeps the kernel's default 1 s
 *    attribute and entry caches, and the daemon changes the data directory behind the kernel's back);
 *  - space: a 128 MiB file, 4 KiB overwritten after a snapshot costs about one 64 KiB chunk;
 *    deletes (middle, oldest, last) free the space and leave the others reading correctly;
 *  - creation is instant: 10,000 files vs 10 (100,000 measured once: docs/ARCHITECTURE.md) (both timings printed).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, startSecondary, startPair, assertCleanSlate, cleanupAll, timed, waitFor, withDeadline, execOk, exec, cli,
  primaryStatus, secondaryStatus, type Primary, type Secondary, type Dirs
} from './helpers'
import { snapshotTree, diffSnapshots, assertNoDiffs, linkGroups, startWorkload, type Snapshot } from './helpers/replica-tree'
import { ibcOk, ibcSend, receive, register, secStatus, lastSeq, startWriter, killWriters, type Sent } from './helpers/ibc'
import {
  snap, snapCreate, snapList, snapDelete, assertOneLineError, buildTree, mutate, trySetXattr, startOverwriter,
  makeManyFiles, killChildren, workloadPrefix, type SnapInfo
} from './helpers/snapshots'
import { request } from '../src/control'

const t = suite('snapshots')

t.after(async () => {
  killWriters()
  killChildren()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`snapshots.test: cleanup had to force: ${forced.join('; ')}`)
})

const SRL = '256M'
const KiB = 1024
const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------
// the pair, restartable

interface PairState {
  P: Primary
  S: Secondary
  /** What the Primary was started with beyond primaryArgs (for a restart). */
  pExtra: string[]
}
let H: PairState | undefined
function h (): PairState {
  if (H === undefined) throw new Error('the pair is not running (an earlier test failed)')
  return H
}

/** Captures (Primary data directory, ns) and what the snapshots said when taken. */
const C: Record<string, Snapshot> = {}
const INFO: Record<string, SnapInfo> = {}
let sent: Sent | undefined
const APP = 'snapapp'

function dirsOf (d: Dirs): Dirs { return { root: d.root, data: d.data, mount: d.mount, state: d.state } }

async function logs (): Promise<string> {
  if (H === undefined) return ''
  return `\n--- primary daemon.log ---\n${await H.P.log()}\n--- secondary daemon.log ---\n${await H.S.log()}`
}

async function withLogs<T> (p: Promise<T>): Promise<T> {
  try { return await p } catch (err) { throw new Error(`${(err as Error).message}${await logs()}`) }
}

async function restartSecondary (S: Secondary): Promise<Secondary> {
  return await startSecondary({ dirs: dirsOf(S), secretFile: S.secretFile, listen: S.address, srlSize: SRL })
}

async function restartPrimary (P: Primary, extra: string[]): Promise<Primary> {
  return await startPrimary({ dirs: dirsOf(P), srlSize: SRL, extraArgs: extra })
}

/** Waits until the Secondary has applied everything the Primary logged; returns that sequence number. */
async function caughtUp (timeoutMs = 90_000): Promise<number> {
  const { P, S } = h()
  return await withLogs(waitFor(async () => {
    const p = await primaryStatus(P.state)
    const s = await secondaryStatus(S.state)
    const last = lastSeq(p)
    return s.appliedSeq >= last && p.rlinks.length === 1 && p.rlinks[0].dataAckedSeq >= last ? Math.max(last, 1) : 0
  }, { timeoutMs, what: 'the Secondary to apply everything the Primary logged', intervalMs: 100 }))
}

/** The tree below `root` (a snapshot through FUSE, or a live mount) equals `capture` (a data directory). */
async function assertTree (root: string, capture: Snapshot, what: string, mtime: 'us' | 'ns' = 'us'): Promise<void> {
  const got = await snapshotTree(root)
  assertNoDiffs(diffSnapshots(capture, got, { a: 'capture', b: what, mtime }), `${what} vs its capture`)
}

/**
 * Like assertTree, for the Primary's live mount: the kernel caches its attributes and entries for
 * 1 s (libfuse's defaults; docs/ARCHITECTURE.md), so a change the kernel did not make itself (an
 * online restore, a write through another hard link's name) may show late. Compares again until
 * equal, for at most `ms`, then fails with the differences.
 */
/**
 * The live tree through a mount equals its capture, at once: changes made through the mount
 * invalidate the kernel's caches, and a restore answers only after the Primary mount's 1 s
 * attribute cache has passed (src/daemon/snapshots.ts), so there is nothing to wait for.
 */
async function assertLiveTree (root: string, capture: Snapshot, what: string): Promise<void> {
  assertNoDiffs(diffSnapshots(capture, await snapshotTree(root), { a: 'capture', b: what, mtime: 'us' }), `${what} vs its capture`)
}

async function errCode (p: Promise<unknown>): Promise<string> {
  return p.then(() => 'succeeded', (e: { code?: string }) => e.code ?? String(e))
}

async function sha256Of (file: string): Promise<string> {
  const r = await execOk('sha256sum', [file], { timeoutMs: 120_000 })
  return r.stdout.split(' ')[0]
}

async function readAt (file: string, pos: number, len: number): Promise<Buffer> {
  const fh = await fsp.open(file, 'r')
  try {
    const buf = Buffer.alloc(len)
    const { bytesRead } = await fh.read(buf, 0, len, pos)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

async function writeAt (file: string, pos: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(file, 'r+')
  try {
    await fh.write(data, 0, data.length, pos)
  } finally {
    await fh.close()
  }
}

/** Snapshot directories (<id>, <id>.tmp, <id>.deleting) under STATE/snapshots. */
function snapDirs (state: string): string[] {
  let names: string[] = []
  try { names = fs.readdirSync(path.join(state, 'snapshots')) } catch { return [] }
  return names.filter((n) => /^\d{8}(\.tmp|\.deleting)?$/.test(n)).sort()
}

function summary (list: SnapInfo[]): Array<{ name: string, seq: number, createdAt: string, valid: boolean }> {
  return list.map((s) => ({ name: s.name, seq: s.seq, createdAt: s.createdAt, valid: s.valid }))
}

// ---------------------------------------------------------------------------------------------
// the pair

t('a Primary (--retain) and a Secondary start; neither has snapshots', timed(120_000, async () => {
  const S = await startSecondary({ srlSize: SRL })
  const pExtra = ['--secondary', S.address, '--secret-file', S.secretFile, '--retain']
  const P = await startPrimary({ srlSize: SRL, extraArgs: pExtra })
  H = { P, S, pExtra }
  await withLogs(waitFor(async () => (await primaryStatus(P.state)).rlinks[0]?.state === 'connected', {
    timeoutMs: 30_000, what: 'the RLINK to connect', intervalMs: 100
  }))
  assert.equal(await snapList(P.state), [], 'a new Primary has no snapshots')
  assert.equal(await snapList(S.state), [], 'a new Secondary has no snapshots')
  assert.equal(await fsp.readdir(path.join(P.mount, '.snapshots')), [], '.snapshots is empty')
  const r = await snap(P.state, 'list')
  assert.is(r.code, 0)
  assert.match(r.stdout, /no snapshots/, 'list without --json says there are none')
}))

t('Primary: s1 and s2 read through FUSE exactly as the tree was when each was taken, after heavy changes', timed(150_000, async () => {
  const { P } = h()
  await buildTree(P.mount)
  await P.quiesce()
  C.s1 = await snapshotTree(P.data)
  // the capture holds what the test is about, so a trivial comparison cannot pass
  const types = new Set(Object.values(C.s1).map((e) => e.type))
  for (const ty of ['file', 'dir', 'symlink', 'fifo']) assert.ok(types.has(ty), `the tree has a ${ty}`)
  assert.ok(linkGroups(C.s1).size >= 3, `the tree has hard-link groups: ${[...linkGroups(C.s1)].join(' / ')}`)
  assert.ok(Object.values(C.s1).some((e) => Object.keys(e.xattrs).length > 0), 'the tree has xattrs')
  assert.ok(C.s1['big.bin'].size > 5 * MiB, 'the tree has a file of a few MiB')

  const before = lastSeq(await primaryStatus(P.state))
  INFO.s1 = await snapCreate(P.state, 's1')
  assert.is(INFO.s1.seq, before, 'a snapshot of a quiet Primary is at its last sequence number')
  assert.is(INFO.s1.valid, true)

  await mutate(P.mount, 1)
  await P.quiesce()
  C.s2 = await snapshotTree(P.data)
  const d12 = diffSnapshots(C.s1, C.s2, { a: 's1', b: 's2', mtime: 'ns' })
  assert.ok(d12.length >= 30, `round 1 changed the tree a lot (${d12.length} differences)`)
  INFO.s2 = await snapCreate(P.state, 's2')
  assert.ok(INFO.s2.seq > INFO.s1.seq, `s2 is later than s1 (${INFO.s2.seq} > ${INFO.s1.seq})`)

  await mutate(P.mount, 2)
  await P.quiesce()
  const live = await snapshotTree(P.data)
  assert.ok(diffSnapshots(C.s2, live, { a: 's2', b: 'live', mtime: 'ns' }).length >= 20, 'round 2 changed the tree a lot')

  await withLogs(assertTree(path.join(P.mount, '.snapshots', 's1'), C.s1, '.snapshots/s1'))
  await withLogs(assertTree(path.join(P.mount, '.snapshots', 's2'), C.s2, '.snapshots/s2'))
  // and the live mount is the live tree (the snapshots take nothing from it)
  await assertLiveTree(P.mount, live, 'the live mount')

  assert.equal((await fsp.readdir(path.join(P.mount, '.snapshots'))).sort(), ['s1', 's2'], 'ls MOUNT/.snapshots lists the snapshots')
  const list = await snapList(P.state)
  assert.equal(list.map((s) => s.name), ['s1', 's2'], 'list: oldest first')
  assert.equal(list.map((s) => s.seq), [INFO.s1.seq, INFO.s2.seq], 'list: the sequence numbers create printed')
  assert.ok(list.every((s) => s.valid && s.error === null), `both valid: ${JSON.stringify(list)}`)
  assert.ok(list[0].bytes > 0 && list[1].bytes > 0, `both hold what changed after them: ${JSON.stringify(list)}`)
  const text = await snap(P.state, 'list')
  assert.is(text.code, 0)
  assert.match(text.stdout, /^NAME\s+CREATED\s+SEQ\s+BYTES$/m, `list has a header: ${text.stdout}`)
  assert.match(text.stdout, new RegExp(`^s1\\s+\\S+\\s+${INFO.s1.seq}\\s+\\d+$`, 'm'), `list shows s1: ${text.stdout}`)
}))

t('tar of MOUNT/.snapshots/s1 archives the s1 tree', timed(90_000, async () => {
  const { P } = h()
  const tarball = path.join(P.root, 's1.tar')
  const out = path.join(P.root, 's1-untarred')
  const x = ['--xattrs', '--xattrs-include=*', '--numeric-owner']
  const c = await exec('tar', ['-C', path.join(P.mount, '.snapshots', 's1'), '--format=posix', ...x, '-cf', tarball, '.'], { timeoutMs: 60_000 })
  assert.is(c.code, 0, `tar -c of the snapshot succeeds without "file changed as we read it": ${c.stderr}`)
  assert.is(c.stderr, '', 'tar -c has nothing to complain about')
  await fsp.mkdir(out)
  await execOk('tar', ['-C', out, ...x, '-xpf', tarball], { timeoutMs: 60_000 })
  const got = await snapshotTree(out)
  // GNU tar restores everything compared here, mtimes of symlinks included (pax headers: µs and beyond)
  assertNoDiffs(diffSnapshots(C.s1, got, { a: 's1 capture', b: 'untarred .snapshots/s1', mtime: 'us' }), 'tar of .snapshots/s1')
  await fsp.rm(out, { recursive: true })
  await fsp.rm(tarball)
}))

t('inside .snapshots every change answers EROFS; .snapshots is reachable by name but not listed', timed(60_000, async () => {
  const { P } = h()
  const s1 = (rel: string): string => path.join(P.mount, '.snapshots', 's1', rel)
  const live = (rel: string): string => path.join(P.mount, rel)
  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['create a file', () => fsp.writeFile(s1('new-file'), 'x')],
    ['open an existing file for writing', () => fsp.open(s1('big.bin'), 'r+')],
    ['append', () => fsp.appendFile(s1('src/a/file20.txt'), 'x')],
    ['truncate', () => fsp.truncate(s1('medium.bin'), 0)],
    ['unlink', () => fsp.unlink(s1('empty.txt'))],
    ['rmdir', () => fsp.rmdir(s1('empty-dir'))],
    ['mkdir', () => fsp.mkdir(s1('new-dir'))],
    ['chmod', () => fsp.chmod(s1('big.bin'), 0o777)],
    ['chown', () => fsp.chown(s1('big.bin'), 1, 1)],
    ['utimes', () => fsp.utimes(s1('big.bin'), 1, 1)],
    ['rename inside', () => fsp.rename(s1('empty.txt'), s1('renamed'))],
    ['rename out of it', () => fsp.rename(s1('empty.txt'), live('stolen'))],
    ['rename into it', () => fsp.rename(live('round2.txt'), s1('planted'))],
    ['link out of it', () => fsp.link(s1('suid'), live('linked-out'))],
    ['symlink', () => fsp.symlink('x', s1('new-link'))],
    ['mkdir in .snapshots', () => fsp.mkdir(path.join(P.mount, '.snapshots', 'made-up'))],
    ['rmdir a snapshot', () => fsp.rmdir(path.join(P.mount, '.snapshots', 's1'))]
  ]
  for (const [what, fn] of attempts) assert.is(await errCode(fn()), 'EROFS', `${what} inside .snapshots`)
  assert.is(await trySetXattr(s1('big.bin'), 'user.x', '01'), 'EROFS', 'setxattr inside .snapshots')
  const mk = await exec('mkfifo', [s1('new-fifo')])
  assert.ok(mk.code !== 0 && /Read-only file system/.test(mk.stderr), `mkfifo inside .snapshots: ${mk.stderr}`)
  // nothing moved: the live file is still there, nothing appeared
  assert.ok((await fsp.stat(live('round2.txt'))).isFile(), 'the file a rename tried to move in is still live')
  for (const n of ['stolen', 'linked-out']) assert.is(await errCode(fsp.lstat(live(n))), 'ENOENT', `${n} was not made`)
  await assertTree(path.join(P.mount, '.snapshots', 's1'), C.s1, '.snapshots/s1 after the refused changes')

  const root = await fsp.readdir(P.mount)
  assert.not.ok(root.includes('.snapshots'), `readdir(MOUNT) does not list .snapshots: ${root.join(' ')}`)
  assert.ok(root.includes('big.bin'), 'readdir(MOUNT) lists the live tree')
  const st = await fsp.stat(path.join(P.mount, '.snapshots'))
  assert.ok(st.isDirectory(), 'MOUNT/.snapshots is a directory')
  assert.is(st.mode & 0o222, 0, 'MOUNT/.snapshots is read-only')
  assert.is(await errCode(fsp.stat(path.join(P.mount, '.snapshots', 'no-such'))), 'ENOENT', 'an unknown snapshot name is ENOENT')
  // a Secondary's mount has no Primary snapshot
  assert.equal(await fsp.readdir(path.join(h().S.mount, '.snapshots')), [], 'snapshots are per host: none on the Secondary')
}))

t('frozen Secondary: a snapshot taken at the IBC message is the Primary\'s tree at the send while the live Secondary moves on', timed(150_000, async () => {
  const { P, S } = h()
  await register(S.state, APP)
  const w = startWriter(path.join(P.mount, 'w'), path.join(P.root, 'ctl'), 3)
  try {
    await w.advance(30)
    const rcv = receive(S.state, APP, 90)
    await w.pause()
    try {
      await P.quiesce()
      sent = await ibcSend(P.state, APP, 'snapshot here')
      C.atSend = await snapshotTree(P.data)
    } finally {
      await w.resume()
    }
    const got = await withLogs(rcv)
    assert.is(got.id, sent.id, 'receive delivers the message sent')
    // updates after the message keep arriving while frozen (logged, not applied)
    await withLogs(waitFor(async () => (await secStatus(S.state)).receivedSeq > sent!.seq + 20, {
      timeoutMs: 30_000, what: 'updates after the message to arrive at the frozen Secondary', intervalMs: 50
    }))
    const fz = await secStatus(S.state)
    assert.ok(fz.frozen, 'the Secondary is frozen')
    INFO.atMark = await snapCreate(S.state, 'at-mark')
    const fz2 = await secStatus(S.state)
    assert.ok(fz2.frozen, 'still frozen after the snapshot')
    assert.is(INFO.atMark.seq, fz.appliedSeq, 'the snapshot is at the frozen Secondary\'s applied sequence number')
    assert.is(INFO.atMark.seq, sent.seq - 1, 'that is: right before the IBC message, everything before it applied')

    await ibcOk(S.state, 'unfreeze', [APP])
    // the writer goes on; the Secondary catches up to a point well after the message
    await w.advance(30)
    const mark = lastSeq(await primaryStatus(P.state))
    assert.ok(mark > sent.seq + 20, 'the Primary logged more after the message')
    await withLogs(waitFor(async () => (await secondaryStatus(S.state)).appliedSeq >= mark, {
      timeoutMs: 60_000, what: `the Secondary to apply up to ${mark} after unfreeze`, intervalMs: 100
    }))
    // read the snapshot while the writer still runs (copy-on-write on the Secondary meanwhile)
    await withLogs(assertTree(path.join(S.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark'))
    assert.is(await w.stop(), 0, `the writer ran without errors: ${w.lines.slice(-3).join(' | ')}`)
  } finally {
    w.kill()
  }
  // Walk the live Secondary's data directory only once nothing changes it (it races its apply loop).
  await caughtUp()
  const liveS = await snapshotTree(S.data)
  const moved = diffSnapshots(C.atSend, liveS, { a: 'at the send', b: 'live Secondary', mtime: 'ns' })
  assert.ok(moved.length > 0, 'the live Secondary has moved on past the send')
  assert.ok(liveS['w/log'].size > C.atSend['w/log'].size, 'the writer\'s log on the live Secondary has grown since the send')
  assert.equal(await fsp.readdir(path.join(S.mount, '.snapshots')), ['at-mark'])
  assert.not.ok((await fsp.readdir(path.join(P.mount, '.snapshots'))).includes('at-mark'), 'a Secondary snapshot is not on the Primary')
  const [a, b] = await Promise.all([snapshotTree(P.data), snapshotTree(S.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after the writer stopped')
  // Unregistered, so that the message is discarded when the Primary resends it after the offline
  // restore to at-mark below (a registered name would freeze the Secondary there again).
  await ibcOk(S.state, 'unregister', [APP])
  await withLogs(assertTree(path.join(S.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark after catching up'))
}))

t('kill -9 of both daemons in the middle of overwrites of snapshotted files: after restarts every snapshot lists and reads as before', timed(180_000, async () => {
  const { P, S, pExtra } = h()
  await P.quiesce()
  C.s3 = await snapshotTree(P.data)
  INFO.s3 = await snapCreate(P.state, 's3')
  await caughtUp()
  const listP = await snapList(P.state)
  const listS = await snapList(S.state)
  assert.equal(listP.map((s) => s.name), ['s1', 's2', 's3'])

  const files = Object.entries(C.s3).filter(([, e]) => e.type === 'file' && e.size > 0).map(([p]) => p).sort()
  assert.ok(files.length >= 40, `enough files to overwrite (${files.length})`)
  const ow = startOverwriter(P.mount, files, path.join(P.root, 'ow-list.json'), path.join(P.root, 'ow-stop'))
  try {
    await waitFor(() => { if (ow.done()) throw new Error(`overwriter exited: ${ow.lines.join(' | ')}`); return ow.progress() >= 200 }, { timeoutMs: 60_000, what: 'the overwriter to do 200 writes', intervalMs: 20 })
    // the Secondary is applying those overwrites (copy-on-write into at-mark) when it dies
    await withLogs(waitFor(async () => (await secondaryStatus(S.state)).appliedSeq > INFO.s3.seq + 50, { timeoutMs: 30_000, what: 'the Secondary to apply overwrites', intervalMs: 20 }))
    await S.kill9()
    const at = ow.progress()
    await waitFor(() => { if (ow.done()) throw new Error(`overwriter exited: ${ow.lines.join(' | ')}`); return ow.progress() >= at + 300 }, { timeoutMs: 60_000, what: 'the overwriter to do 300 more writes', intervalMs: 20 })
    await P.kill9() // in the middle: the overwriter is still writing
    const code = await withDeadline(ow.exited, 30_000, 'the overwriter to notice its mount is gone')
    assert.is(code, 1, `the overwriter failed when its daemon died: ${ow.lines.slice(-2).join(' | ')}`)
  } finally {
    ow.kill()
  }
  const S2 = await restartSecondary(S)
  H = { P, S: S2, pExtra }
  const P2 = await restartPrimary(P, pExtra)
  H = { P: P2, S: S2, pExtra }

  assert.equal(summary(await snapList(P2.state)), summary(listP), 'the Primary lists the same snapshots after kill -9 and restart')
  assert.equal(summary(await snapList(S2.state)), summary(listS), 'the Secondary lists the same snapshots after kill -9 and restart')
  for (const n of ['s1', 's2', 's3']) await withLogs(assertTree(path.join(P2.mount, '.snapshots', n), C[n], `Primary .snapshots/${n} after kill -9`))
  await withLogs(assertTree(path.join(S2.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark after kill -9'))
  const s3 = (await snapList(P2.state)).find((s) => s.name === 's3')!
  assert.ok(s3.bytes >= 64 * KiB, `s3 holds the chunks the overwrites preserved (${s3.bytes} bytes)`)

  // and replication resumes: the two data directories converge
  await caughtUp()
  const [a, b] = await Promise.all([snapshotTree(P2.data), snapshotTree(S2.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after both restarted')
}))

t('snapshots taken while updates flow are exact prefixes of the update stream, on the Primary and on the replicating Secondary; deleting them keeps the older ones intact', timed(150_000, async () => {
  const { P, S } = h()
  const dir = path.join(P.mount, 'flow')
  await fsp.mkdir(dir)
  const wl = startWorkload(dir, path.join(P.root, 'flow-stop'), { nfiles: 3, chunk: 4096, fsyncEvery: 4, pauseMs: 1 })
  const ROUNDS = 4
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const at = wl.progress()
      await waitFor(() => { if (wl.done()) throw new Error(`workload exited: ${wl.lines.slice(-3).join(' | ')}`); return wl.progress() >= at + 50 }, { timeoutMs: 60_000, what: 'the workload to write 50 more chunks', intervalMs: 10 })
      await snapCreate(P.state, `flow-p${i}`)
      await snapCreate(S.state, `flow-s${i}`)
    }
    assert.is(await wl.stop(), 0, `the workload ran without errors: ${wl.lines.slice(-3).join(' | ')}`)
  } finally {
    wl.kill()
  }
  const seen: Record<'P' | 'S', number[]> = { P: [], S: [] }
  for (let i = 0; i < ROUNDS; i++) {
    seen.P.push(await withLogs(workloadPrefix(path.join(P.mount, '.snapshots', `flow-p${i}`, 'flow'), 3, 4096)))
    seen.S.push(await withLogs(workloadPrefix(path.join(S.mount, '.snapshots', `flow-s${i}`, 'flow'), 3, 4096)))
  }
  console.log(`  prefixes (chunks) in the Primary's snapshots ${seen.P.join(' ')}, the Secondary's ${seen.S.join(' ')}`)
  for (let i = 1; i < ROUNDS; i++) {
    assert.ok(seen.P[i] > seen.P[i - 1], `Primary: each snapshot is a longer prefix (${seen.P.join(' ')})`)
    assert.ok(seen.S[i] >= seen.S[i - 1], `Secondary: no snapshot is a shorter prefix than the one before (${seen.S.join(' ')})`)
  }
  assert.ok(seen.S[ROUNDS - 1] > seen.S[0], `the Secondary applied more between its first and last snapshot (${seen.S.join(' ')})`)
  assert.ok(seen.P[0] >= 50, 'the first Primary snapshot came after 50 chunks')
  // delete them (newest last, then a middle one first): the older snapshots keep what they need
  for (const i of [1, 3, 0, 2]) {
    await snapDelete(P.state, `flow-p${i}`)
    await snapDelete(S.state, `flow-s${i}`)
  }
  assert.equal((await snapList(P.state)).map((s) => s.name), ['s1', 's2', 's3'])
  assert.equal((await snapList(S.state)).map((s) => s.name), ['at-mark'])
  for (const n of ['s1', 's2', 's3']) await withLogs(assertTree(path.join(P.mount, '.snapshots', n), C[n], `.snapshots/${n} after deleting newer ones`))
  await withLogs(assertTree(path.join(S.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark after deleting newer ones'))
  await caughtUp()
}))

t('restore on a running Primary: journaled, so the Secondary follows; the other snapshots stay as they were', timed(120_000, async () => {
  const { P, S } = h()
  const seq0 = lastSeq(await primaryStatus(P.state))
  const r = await snap(P.state, 'restore', ['s1', '--json'])
  assert.is(r.code, 0, `${r.stderr}${await logs()}`)
  const res = JSON.parse(r.stdout) as { data: string, seq: number, records: number }
  assert.is(res.seq, INFO.s1.seq, `restore --json names s1's sequence number: ${r.stdout}`)
  assert.ok(res.records > 20, `the restore took many changes: ${r.stdout}`)
  await P.quiesce()
  const seq1 = lastSeq(await primaryStatus(P.state))
  assert.is(seq1 - seq0, res.records, 'every change of the restore went through the SRL (journaled)')
  assertNoDiffs(diffSnapshots(C.s1, await snapshotTree(P.data), { a: 's1 capture', b: 'primary data after restore', mtime: 'ns' }), 'the Primary\'s data directory after restore s1')
  await assertLiveTree(P.mount, C.s1, 'the Primary\'s live mount after restore s1')
  await caughtUp()
  const [a, b] = await Promise.all([snapshotTree(P.data), snapshotTree(S.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'the restore replicated')
  await assertTree(S.mount, a, 'the Secondary\'s mount after the restore')
  for (const n of ['s1', 's2', 's3']) await withLogs(assertTree(path.join(P.mount, '.snapshots', n), C[n], `.snapshots/${n} after restore s1`))
  const list = await snapList(P.state)
  assert.equal(list.map((s) => s.name), ['s1', 's2', 's3'], 'an online restore keeps every snapshot')
  assert.ok(list.every((s) => s.valid), `all still valid: ${JSON.stringify(list)}`)
  await withLogs(assertTree(path.join(S.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark after the replicated restore'))
}))

t('restore on a Secondary: refused while it runs; offline once stopped; at restart it converges with the Primary', timed(150_000, async () => {
  const { P, S, pExtra } = h()
  const refused = await snap(S.state, 'restore', ['at-mark'])
  const line = assertOneLineError(refused, [/stop/i])
  console.log(`  running Secondary, restore refused: ${line}`)
  assert.is(refused.stdout, '', 'nothing on stdout')
  // nothing happened to it
  await caughtUp()
  const pri = await snapshotTree(P.data)
  assertNoDiffs(diffSnapshots(pri, await snapshotTree(S.data), { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after the refused restore')

  INFO.later = await snapCreate(S.state, 'later')
  await S.stop()
  assertOneLineError(await snap(S.state, 'restore', ['nosuch']), [/nosuch/])
  const r = await snap(S.state, 'restore', ['at-mark'])
  assert.is(r.code, 0, `offline restore of a stopped Secondary: ${r.stderr}\n--- daemon.log ---\n${await S.log()}`)
  assert.match(r.stdout, new RegExp(`sequence number ${INFO.atMark.seq}`), `it names the snapshot's sequence number: ${r.stdout}`)
  assert.match(r.stdout, /later/, `it says the newer snapshot was deleted: ${r.stdout}`)
  assertNoDiffs(diffSnapshots(C.atSend, await snapshotTree(S.data), { a: 'primary at the send', b: 'stopped secondary data after restore', mtime: 'ns' }), 'offline restore to at-mark')

  // At restart the Secondary asks its Primary for the updates after at-mark's sequence number.
  // This Primary runs with --retain, so it still holds them: it resends them (the IBC message
  // first, discarded since the name was unregistered) and the Secondary converges. (A Primary that
  // had released them synchronizes it by difference: the STALE test below.)
  const S2 = await restartSecondary(S)
  H = { P, S: S2, pExtra }
  await caughtUp()
  const p = await primaryStatus(P.state)
  assert.is(p.rlinks[0].state, 'connected', `the RLINK is up again: ${JSON.stringify(p.rlinks[0])}`)
  // lastError keeps why the link last went down (the Secondary was stopped): no refusal in it
  assert.not.match(String(p.rlinks[0].lastError), /full synchronization|diverged|differ/i, `the Primary did not refuse the restored Secondary: ${String(p.rlinks[0].lastError)}`)
  const [a, b] = await Promise.all([snapshotTree(P.data), snapshotTree(S2.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'the restored Secondary converged')
  await assertTree(S2.mount, a, 'the restored Secondary\'s mount')
  assert.equal((await snapList(S2.state)).map((s) => s.name), ['at-mark'], 'the snapshot newer than at-mark was deleted')
  await withLogs(assertTree(path.join(S2.mount, '.snapshots', 'at-mark'), C.atSend, 'Secondary .snapshots/at-mark after the offline restore and catch-up'))
  assert.not.ok((await secStatus(S2.state)).frozen, 'not frozen again (the resent message was discarded)')
}))

t('bad input: one line, non-zero exit, no stack trace; nothing changes', timed(90_000, async () => {
  const { P } = h()
  const before = summary(await snapList(P.state))
  const cases: Array<[string[], RegExp[]]> = [
    [['create', 'bad/name'], [/bad\/name/]],
    [['create', '..'], [/name/i]],
    [['create', 'has space'], [/has space/]],
    [['create', 'x'.repeat(65)], [/name/i]],
    [['create', 's1'], [/s1/, /exist/i]],
    [['delete', 'nosuch'], [/nosuch/]],
    [['restore', 'nosuch'], [/nosuch/]],
    [['create'], [/name/i]],
    [['delete'], [/name/i]]
  ]
  for (const [args, mentions] of cases) assertOneLineError(await snap(P.state, args[0], args.slice(1)), mentions)
  assertOneLineError(await cli(['snapshot', 'frob', '--state', P.state]), [/frob/])
  assertOneLineError(await cli(['snapshot', 'create', 'x']), [/--state/])
  assertOneLineError(await cli(['snapshot', 'list', '--state', path.join(P.root, 'no-such-state')]), [])
  assert.equal(summary(await snapList(P.state)), before, 'the snapshots are as they were')
  assert.equal((await fsp.readdir(path.join(P.mount, '.snapshots'))).sort(), ['s1', 's2', 's3'])
}))

t('the pair stops; a stopped Primary refuses restore (start it)', timed(90_000, async () => {
  const { P, S } = h()
  H = undefined
  await P.stop()
  await S.stop()
  const [a, b] = await Promise.all([snapshotTree(P.data), snapshotTree(S.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after stop')
  const r = await snap(P.state, 'restore', ['s2'])
  assertOneLineError(r, [/start/i])
  assertNoDiffs(diffSnapshots(a, await snapshotTree(P.data), { a: 'before', b: 'after', mtime: 'ns' }), 'the refused restore changed nothing')
}))

t('an offline-restored Secondary whose Primary has released the updates after the snapshot is STALE: synchronized by difference, its snapshot kept', timed(120_000, async () => {
  const pair = await startPair()
  const pExtra = ['--secondary', pair.target, '--secret-file', pair.secondary.secretFile]
  let P = pair.primary
  let S = pair.secondary
  try {
    await waitFor(async () => (await primaryStatus(P.state)).rlinks[0]?.state === 'connected', { timeoutMs: 30_000, what: 'the RLINK to connect', intervalMs: 100 })
    for (let i = 0; i < 5; i++) await fsp.writeFile(path.join(P.mount, `before${i}`), `before ${i}\n`)
    await pair.caughtUp()
    const old = await snapCreate(S.state, 'old')
    const atOld = await snapshotTree(S.data)
    for (let i = 0; i < 5; i++) await fsp.writeFile(path.join(P.mount, `after${i}`), `after ${i}\n`)
    await pair.caughtUp()
    // a stop checkpoints, releasing everything every Secondary has applied
    await P.stop()
    P = await startPrimary({ dirs: dirsOf(P), extraArgs: pExtra })
    const released = (await primaryStatus(P.state)).srl
    assert.ok(released.oldestSeq === null || released.oldestSeq > old.seq + 1, `the Primary released the updates after ${old.seq}: ${JSON.stringify(released)}`)
    await S.stop()
    const r = await snap(S.state, 'restore', ['old'])
    assert.is(r.code, 0, r.stderr)
    S = await startSecondary({ dirs: dirsOf(S), secretFile: S.secretFile, listen: S.address })
    // STALE: the Primary synchronizes it by difference (every chunk compared) instead; the restored
    // snapshot stays as it was (the synchronization's changes are copy-on-write preserved).
    await waitFor(async () => {
      const st = await primaryStatus(P.state)
      const l = st.rlinks[0] as unknown as { state: string, consistent: boolean, dataAckedSeq: number }
      return l.state === 'connected' && l.consistent && l.dataAckedSeq >= (st.srl.newestSeq ?? 0)
    }, { timeoutMs: 60_000, what: 'the Primary to synchronize the restored Secondary by difference', intervalMs: 100 })
    const log = await P.log()
    const why = new RegExp(`needs records from sequence number ${old.seq + 1} but this Primary's SRL starts at \\d+ \\(STALE\\): it is synchronized by difference instead`)
    assert.match(log, why, 'the Primary says why (STALE) and what it does')
    await waitFor(async () => /synchronization \S+ done/.test(await S.log()), { timeoutMs: 10_000, what: 'the Secondary to log the synchronization done', intervalMs: 50 })
    await P.quiesce()
    assertNoDiffs(diffSnapshots(await snapshotTree(P.data), await snapshotTree(S.data), { a: 'primary', b: 'secondary', mtime: 'ns' }), 'the Secondary is the Primary\'s again')
    const kept = await snapshotTree(path.join(S.mount, '.snapshots', 'old'))
    assertNoDiffs(diffSnapshots(atOld, kept, { a: 'secondary at old', b: 'snapshot old now', mtime: 'us' }), 'the snapshot it was restored to is kept as it was')
    const left = await snapList(S.state)
    assert.equal(left.map((x) => x.name), ['old'], 'the synchronization\'s own snapshot is gone, old stays')
  } finally {
    const errors: string[] = []
    await P.stop().catch((err: Error) => errors.push(err.message))
    await S.stop().catch((err: Error) => errors.push(err.message))
    if (errors.length > 0) throw new Error(errors.join('\n'))
  }
}))

// ---------------------------------------------------------------------------------------------
// a standalone Primary: space and creation time

let Q: Primary | undefined
function q (): Primary {
  if (Q === undefined) throw new Error('the standalone Primary is not running')
  return Q
}

/** sha256 of `file` with `patches` ([pos, bytes]) applied, streamed. */
async function sha256Patched (file: string, patches: Array<[number, Buffer]>): Promise<string> {
  const hash = crypto.createHash('sha256')
  let off = 0
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * MiB })) {
    const b = Buffer.from(chunk as Buffer)
    for (const [pos, data] of patches) {
      const s = Math.max(pos, off)
      const e = Math.min(pos + data.length, off + b.length)
      if (s < e) data.copy(b, s - off, s - pos, e - pos)
    }
    hash.update(b)
    off += b.length
  }
  return hash.digest('hex')
}

t('a standalone Primary starts', timed(90_000, async () => {
  Q = await startPrimary({ srlSize: '64M' })
  assert.equal(await snapList(Q.state), [])
}))

/** stat through a mount: size, mode and whether it exists (ENOENT). */
async function statOf (p: string): Promise<string> {
  try {
    const st = await fsp.stat(p)
    return `size ${st.size} mode ${(st.mode & 0o7777).toString(8)}`
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
}

t('after an online restore, stat through the Primary\'s mount shows the restored tree (within the 1 s attribute cache)', timed(60_000, async () => {
  const Qp = q()
  const m = (rel: string): string => path.join(Qp.mount, rel)
  try {
    await fsp.mkdir(m('rd'))
    await fsp.writeFile(m('rd/f'), 'aaaa')
    await fsp.mkdir(m('rd/d'))
    await snapCreate(Qp.state, 'pre')
    await fsp.writeFile(m('rd/f'), 'b'.repeat(1000))
    await fsp.writeFile(m('rd/new-after'), 'y')
    await fsp.chmod(m('rd/d'), 0o700)
    const paths = ['rd/f', 'rd/new-after', 'rd/d']
    const truth = async (): Promise<string[]> => await Promise.all(paths.map((p) => statOf(path.join(Qp.data, p))))
    const seen = async (): Promise<string[]> => await Promise.all(paths.map((p) => statOf(m(p))))
    const before = await seen()
    assert.equal(before, await truth(), 'before the restore the mount shows the data directory')
    const r = await snap(Qp.state, 'restore', ['pre'])
    assert.is(r.code, 0, r.stderr)
    // The restore's changes are made by the daemon, not through the kernel, so the Primary mount's
    // attribute and entry caches (libfuse's default 1 s timeouts) could show the old attributes for
    // up to 1 s; the daemon answers the restore only once that second has passed, so the mount
    // shows the restored tree as soon as the command returns.
    const names = (await fsp.readdir(m('rd'))).sort()
    const want = await truth()
    assert.equal(names, ['d', 'f'], 'readdir shows the restored directory')
    assert.not.equal(want, before, 'the restore changed the data directory')
    assert.equal(await seen(), want, 'stat through the mount shows the restored tree when restore returns')
  } finally {
    await snapDelete(Qp.state, 'pre').catch(() => {})
    await fsp.rm(m('rd'), { recursive: true, force: true })
  }
}))

t('a snapshot deleted and re-created under the same name reads its new content (within the 1 s attribute cache)', timed(60_000, async () => {
  const Qp = q()
  const g = path.join(Qp.mount, 'g')
  const viewG = path.join(Qp.mount, '.snapshots', 'x', 'g')
  try {
    await fsp.writeFile(g, 'short')
    await snapCreate(Qp.state, 'x')
    assert.is(await fsp.readFile(viewG, 'utf8'), 'short')
    assert.is(await statOf(viewG), 'size 5 mode 644', 'stat of x/g (as ls -l or tar would)')
    await snapDelete(Qp.state, 'x')
    await fsp.writeFile(g, 'much longer content now')
    await snapCreate(Qp.state, 'x')
    // The kernel may keep x/g's old attributes for up to 1 s (libfuse's attribute timeout): the
    // daemon waits that second out before it re-creates a just-deleted name, so the new x/g shows
    // as soon as create returns.
    assert.is(await statOf(viewG), 'size 23 mode 644', 'stat of the new x/g when create returns')
    assert.is(await fsp.readFile(viewG, 'utf8'), 'much longer content now', 'content of the new x/g')
  } finally {
    await snapDelete(Qp.state, 'x').catch(() => {})
    await fsp.rm(g, { force: true })
  }
}))

t('space: 4 KiB overwritten in a 128 MiB file costs one chunk, not the file; deletes free it and the others still read', timed(150_000, async () => {
  const Q = q()
  const huge = path.join(Q.mount, 'huge.bin')
  const hugeData = path.join(Q.data, 'huge.bin')
  const dd = await exec('dd', ['if=/dev/urandom', `of=${huge}`, 'bs=1M', 'count=128', 'status=none'], { timeoutMs: 120_000 })
  assert.is(dd.code, 0, dd.stderr)
  for (let i = 0; i < 9; i++) await fsp.writeFile(path.join(Q.mount, `small${i}`), `small ${i}\n`)
  await Q.quiesce()
  assert.is((await fsp.stat(hugeData)).size, 128 * MiB)
  const h0 = await sha256Of(hugeData)

  const MID = 96 * MiB + 8192 // inside one 64 KiB chunk
  const MID2 = 64 * MiB + 100 // across no boundary either
  const orig = await readAt(hugeData, MID, 4096)
  const orig2 = await readAt(hugeData, MID2, 4096)
  const X1 = crypto.randomBytes(4096)
  const X2 = crypto.randomBytes(4096)
  const X3 = crypto.randomBytes(4096)
  const bytesOf = async (name: string): Promise<number> => (await snapList(q().state)).find((s) => s.name === name)!.bytes
  const view = (name: string): string => path.join(q().mount, '.snapshots', name, 'huge.bin')

  const A = await snapCreate(Q.state, 'sp-a')
  const a0 = await bytesOf('sp-a')
  assert.ok(a0 < 64 * KiB, `a new snapshot holds next to nothing (${a0} bytes)`)
  await writeAt(huge, MID, X1)
  const a1 = await bytesOf('sp-a')
  console.log(`  space: snapshot of a 128 MiB file after a 4 KiB overwrite: ${a1} bytes`)
  assert.ok(a1 >= 4096, `the overwritten chunk is preserved (${a1} bytes)`)
  assert.ok(a1 < 1 * MiB, `about one 64 KiB chunk plus metadata, not the file (${a1} bytes)`)
  assert.ok((await readAt(view('sp-a'), MID, 4096)).equals(orig), 'the snapshot reads the old 4 KiB')
  assert.ok((await readAt(huge, MID, 4096)).equals(X1), 'the live file reads the new 4 KiB')

  const B = await snapCreate(Q.state, 'sp-b')
  await writeAt(huge, MID2, X2)
  const Cs = await snapCreate(Q.state, 'sp-c')
  await writeAt(huge, MID, X3)
  await Q.quiesce()
  const list = await snapList(Q.state)
  assert.equal(list.map((s) => s.name), ['sp-a', 'sp-b', 'sp-c'])
  for (const s of list) assert.ok(s.bytes < 1 * MiB, `${s.name} holds little (${s.bytes} bytes)`)
  const expect: Record<string, [Buffer, Buffer]> = { 'sp-a': [orig, orig2], 'sp-b': [X1, orig2], 'sp-c': [X1, X2] }
  const checkRegions = async (names: string[], when: string): Promise<void> => {
    for (const n of names) {
      assert.ok((await readAt(view(n), MID, 4096)).equals(expect[n][0]), `${n} at ${MID} ${when}`)
      assert.ok((await readAt(view(n), MID2, 4096)).equals(expect[n][1]), `${n} at ${MID2} ${when}`)
    }
    assert.ok((await readAt(huge, MID, 4096)).equals(X3), `live at ${MID} ${when}`)
    assert.ok((await readAt(huge, MID2, 4096)).equals(X2), `live at ${MID2} ${when}`)
  }
  await checkRegions(['sp-a', 'sp-b', 'sp-c'], 'with three snapshots')

  const idOf = (info: SnapInfo): string => { assert.ok(info.id !== undefined, 'create --json gives the id'); return info.id! }
  assert.equal(snapDirs(Q.state), [idOf(A), idOf(B), idOf(Cs)].sort(), 'one directory per snapshot under STATE/snapshots')

  // delete the middle one: what only it held (sp-a needs the old MID2 chunk) moves into sp-a
  await snapDelete(Q.state, 'sp-b')
  assert.not.ok(snapDirs(Q.state).some((d) => d.startsWith(idOf(B))), `sp-b's directory is gone: ${snapDirs(Q.state).join(' ')}`)
  await checkRegions(['sp-a', 'sp-c'], 'after deleting sp-b')
  assert.is(await sha256Of(view('sp-a')), h0, 'sp-a reads the whole original file after sp-b was deleted')

  // delete the oldest: its space goes
  await snapDelete(Q.state, 'sp-a')
  assert.equal(snapDirs(Q.state), [idOf(Cs)], 'only sp-c is left under STATE/snapshots')
  await checkRegions(['sp-c'], 'after deleting sp-a')
  assert.is(await sha256Of(view('sp-c')), await sha256Patched(hugeData, [[MID, X1]]), 'sp-c reads the whole file as it was')
  assert.equal(await fsp.readdir(path.join(Q.mount, '.snapshots')), ['sp-c'])

  await snapDelete(Q.state, 'sp-c')
  assert.equal(snapDirs(Q.state), [], 'no snapshot directory is left')
  assert.equal(await snapList(Q.state), [])
  assert.equal(await fsp.readdir(path.join(Q.mount, '.snapshots')), [])
  const du = await execOk('du', ['-sb', path.join(Q.state, 'snapshots')])
  const left = Number(du.stdout.split(/\s/)[0])
  assert.ok(left < 256 * KiB, `STATE/snapshots holds almost nothing now (${left} bytes)`)
  assert.is(await sha256Of(huge), await sha256Patched(hugeData, []), 'the live file reads what its data directory holds')
  assert.ok((await readAt(huge, MID, 4096)).equals(X3), 'the live file keeps the newest write')
}))

const NDIRS = 10
const PER_DIR = 1000

t(`creation is instant: a snapshot of ${NDIRS * PER_DIR} files takes about what one of 10 files does`, timed(180_000, async () => {
  const Qp = q()
  const time = async (prefix: string): Promise<{ cli: number[], daemon: number[] }> => {
    const res = { cli: [] as number[], daemon: [] as number[] }
    for (let i = 0; i < 3; i++) {
      res.cli.push((await snapCreate(Qp.state, `${prefix}-cli-${i}`)).ms)
      const t0 = process.hrtime.bigint()
      await request(Qp.state, { cmd: 'snapshot', op: 'create', name: `${prefix}-sock-${i}` }, 120_000)
      res.daemon.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
    return res
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join('/')
  const live = await fsp.readdir(Qp.mount)
  assert.is(live.length, 10, `a 10-file tree: ${live.join(' ')}`)
  const small = await time('ten')
  for (const s of await snapList(Qp.state)) await snapDelete(Qp.state, s.name)

  const t0 = Date.now()
  await fsp.mkdir(path.join(Qp.mount, 'many'))
  await makeManyFiles(path.join(Qp.mount, 'many'), NDIRS, PER_DIR, 4)
  const made = Date.now() - t0
  await Qp.quiesce(60_000)
  const big = await time('many')
  console.log(`  creation: ${NDIRS * PER_DIR} empty files through FUSE in ${(made / 1000).toFixed(1)} s (4 processes)`)
  console.log(`  snapshot create, 10 files:      CLI ${fmt(small.cli)} ms, control socket ${fmt(small.daemon)} ms`)
  console.log(`  snapshot create, ${NDIRS * PER_DIR} files: CLI ${fmt(big.cli)} ms, control socket ${fmt(big.daemon)} ms`)
  assert.ok(median(big.cli) < 5 * median(small.cli) + 1000, `CLI: ${fmt(big.cli)} ms vs ${fmt(small.cli)} ms: does not walk the tree`)
  assert.ok(median(big.daemon) < 5 * median(small.daemon) + 1000, `daemon: ${fmt(big.daemon)} ms vs ${fmt(small.daemon)} ms`)

  // and it is a real snapshot of the big tree
  const snapMany = path.join(Qp.mount, '.snapshots', 'many-cli-0', 'many')
  assert.is((await fsp.readdir(snapMany)).length, NDIRS, 'the snapshot has every directory')
  await fsp.rm(path.join(Qp.mount, 'many', 'd0'), { recursive: true })
  await fsp.writeFile(path.join(Qp.mount, 'many', 'd1', 'f1'), 'now with content')
  assert.is((await fsp.readdir(path.join(snapMany, 'd0'))).length, PER_DIR, 'a directory removed after the snapshot is whole in it')
  assert.is((await fsp.stat(path.join(snapMany, 'd1', 'f1'))).size, 0, 'a file written after the snapshot is empty in it')
}))

t('the standalone Primary stops', timed(90_000, async () => {
  const Qp = q()
  Q = undefined
  await Qp.stop()
  assert.ok(snapDirs(Qp.state).length > 0, 'its snapshots stay in its state directory')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
