/**
 * Replication end to end on loopback: a Primary and a Secondary (real daemons, real FUSE mounts).
 * A varied workload on the Primary's mount (a source tree from tar, renames over files and
 * directories, deletes, truncates, hard links, symlinks, FIFOs, xattrs, chmod/chown, utimes,
 * sqlite3) must come out identical in the Secondary's data directory and through its read-only
 * mount; that mount never serves stale data; status reports the link; pause/resume hold back and
 * release updates. The contract is README.md ("Commands", "`status --json` fields").
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  assertOneLineError,
  startPair, assertCleanSlate, cleanupAll, timed, waitFor, execOk, exec, cli, helperScript, describeFailure,
  type Pair
} from './helpers'
import { snapshotTree, diffSnapshots, assertNoDiffs, linkGroups, variedWorkload, UID, T1_NS, type Snapshot } from './helpers/replica-tree'

const t = suite('replication')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`replication.test: cleanup had to force: ${forced.join('; ')}`)
})

let pair: Pair | undefined
function P (): Pair {
  if (pair === undefined) throw new Error('no pair running (the "pair starts" test failed)')
  return pair
}
const pm = (rel: string): string => path.join(P().primary.mount, rel)
const sm = (rel: string): string => path.join(P().secondary.mount, rel)
const sd = (rel: string): string => path.join(P().secondary.data, rel)

const SQL_TXNS = 300

/** Last sequence number the Primary has logged (its SRL may have released everything). */
function lastSeq (s: { srl: { newestSeq: number | null, appliedSeq: number } }): number {
  return s.srl.newestSeq ?? s.srl.appliedSeq
}

async function logs (): Promise<string> {
  const p = P()
  return `\n--- primary daemon.log ---\n${await p.primary.log()}\n--- secondary daemon.log ---\n${await p.secondary.log()}`
}

async function xattr (...args: string[]): Promise<{ ok?: boolean, value?: string, names?: string[], error?: string }> {
  const r = await execOk(process.execPath, [helperScript('xattr-tool'), ...args], { timeoutMs: 30_000 })
  return JSON.parse(r.stdout)
}

async function errCode (p: Promise<unknown>): Promise<string> {
  return p.then(() => 'succeeded', (e: { code?: string }) => e.code ?? String(e))
}

t('pair starts and the RLINK connects', timed(120_000, async () => {
  pair = await startPair()
  await waitFor(async () => (await P().primaryStatus()).rlinks[0]?.state === 'connected', {
    timeoutMs: 30_000, what: 'the Primary\'s RLINK to report state connected', intervalMs: 100
  }).catch(async (err: Error) => { throw new Error(err.message + await logs()) })
  const p = await P().primaryStatus()
  assert.is(p.role, 'primary')
  assert.is(p.rlinks.length, 1, 'one rlink per --secondary')
  assert.is(p.rlinks[0].secondary, P().target, 'rlinks[0].secondary is HOST:PORT as given')
  const s = await P().secondary.status()
  assert.is(s.role, 'secondary')
  assert.is(s.listen, P().secondary.address)
  assert.is(s.rds, p.rds, 'both ends agree on the RDS name')
  assert.is(p.rds, 'replicafs', 'default RDS name')
}))

t('a varied workload comes out identical in the Secondary\'s data directory and mount', timed(150_000, async () => {
  const { files, dirs } = await variedWorkload(P().primary.mount, P().primary.root, SQL_TXNS)

  await P().caughtUp(90_000).catch(async (err: Error) => { throw new Error(err.message + await logs()) })
  const [pri, sec, secMount] = await Promise.all([
    snapshotTree(P().primary.data), snapshotTree(P().secondary.data), snapshotTree(P().secondary.mount)
  ])

  // the workload did what we think (so an empty or trivial comparison cannot pass)
  const n = Object.keys(pri).length
  assert.ok(n > 500, `the Primary's data directory holds ${n} paths`)
  const types = new Set(Object.values(pri).map((e) => e.type))
  for (const ty of ['file', 'dir', 'symlink', 'fifo']) assert.ok(types.has(ty), `the Primary's tree has a ${ty}`)
  assert.ok(linkGroups(pri).has('hl/orig, hl/two, other/three'), `hard-link groups: ${[...linkGroups(pri)].join(' | ')}`)
  assert.equal(pri['hl/orig'].xattrs, { 'user.one': 'cafe' })
  assert.equal(pri[files[11]].xattrs, { 'user.kept': '' })
  assert.is(pri[files[13]].uid, UID)
  assert.is(pri.suid.mode, '4755')
  assert.is(BigInt(pri[files[14]].mtimeNs) / 1000n, T1_NS / 1000n, 'touch -d through the mount set the mtime (to the µs with compat, exactly with --fuse ll)')
  assert.is(pri['sparse.bin'].size, 1 << 20)
  assert.is(pri[dirs[0]], undefined, 'a directory renamed over an empty one is gone from its old place')
  assert.is(pri[dirs[2]], undefined, 'a deleted directory is gone')
  assert.is(pri[dirs[3]].uid, 4321, 'a chowned directory')
  assert.is(BigInt(pri[dirs[4]].mtimeNs) / 1000n, T1_NS / 1000n, 'touch -m on a directory')
  assert.is(pri[files[3]], undefined, 'an unlinked file is gone')

  // atime and ctime are not compared (see diffSnapshots): atime moves on reads, ctime cannot be set.
  assertNoDiffs(diffSnapshots(pri, sec, { a: 'primary data', b: 'secondary data', mtime: 'ns' }),
    'the Secondary\'s data directory differs from the Primary\'s')
  assertNoDiffs(diffSnapshots(pri, secMount, { a: 'primary data', b: 'secondary mount', mtime: 'us' }),
    'the Secondary\'s mount differs from the Primary\'s data directory')
}))

t('sqlite3 on the Secondary mount: integrity_check ok, every row there', timed(60_000, async () => {
  const r = await execOk('sqlite3', ['-readonly', sm('db/test.db'), 'PRAGMA integrity_check; SELECT count(*) FROM t;'], { timeoutMs: 60_000 })
  assert.equal(r.stdout.trim().split('\n'), ['ok', String(SQL_TXNS - SQL_TXNS / 10)])
}))

t('status after caughtUp: connected, no lag, both ends agree on sequence numbers and SRL', timed(60_000, async () => {
  await P().caughtUp()
  const p = await P().primaryStatus()
  const s = await P().secondary.status()
  const p2 = await P().primaryStatus()
  assert.is(lastSeq(p2), lastSeq(p), 'nothing was logged while reading status')
  const last = lastSeq(p)
  assert.ok(last > 1000, `the workload made more than 1000 records (last ${last})`)
  const l = p.rlinks[0]
  const ctx = JSON.stringify({ primary: p, secondary: s })
  assert.is(l.state, 'connected', ctx)
  assert.is(l.lagUpdates, 0, ctx)
  assert.is(l.lagBytes, 0, ctx)
  assert.is(l.lagSeconds, 0, ctx)
  assert.is(l.dataAckedSeq, last, ctx)
  assert.ok(l.networkAckedSeq >= l.dataAckedSeq, `networkAckedSeq >= dataAckedSeq: ${ctx}`)
  assert.ok(l.sentSeq >= l.networkAckedSeq, `sentSeq >= networkAckedSeq: ${ctx}`)
  assert.is(s.consistent, true, ctx)
  assert.is(s.connected, true, ctx)
  assert.is(s.receivedSeq, last, ctx)
  assert.is(s.appliedSeq, last, ctx)
  assert.ok(typeof p.srlId === 'string' && p.srlId.length > 0, `the Primary has an srlId: ${ctx}`)
  assert.is(s.primary.srlId, p.srlId, ctx)
  assert.ok(typeof s.primary.address === 'string' && s.primary.address !== '', `the Secondary names the connected Primary: ${ctx}`)
}))

t('the Secondary mount is read-only: every change fails with EROFS', timed(60_000, async () => {
  const before = (await fsp.readFile(sd('hl/orig'))).toString()
  const got: Record<string, string> = {
    'open r+': await errCode(fsp.open(sm('hl/orig'), 'r+').then(async (h) => { await h.close() })),
    'write existing (O_TRUNC)': await errCode(fsp.writeFile(sm('hl/orig'), 'x')),
    'append existing': await errCode(fsp.appendFile(sm('hl/orig'), 'x')),
    create: await errCode(fsp.writeFile(sm('new-file'), 'x')),
    mkdir: await errCode(fsp.mkdir(sm('new-dir'))),
    unlink: await errCode(fsp.unlink(sm('hl/orig'))),
    rmdir: await errCode(fsp.rmdir(sm('private'))),
    rename: await errCode(fsp.rename(sm('hl/orig'), sm('hl/renamed'))),
    chmod: await errCode(fsp.chmod(sm('hl/orig'), 0o777)),
    chown: await errCode(fsp.chown(sm('hl/orig'), 1, 1)),
    utimes: await errCode(fsp.utimes(sm('hl/orig'), 1, 1)),
    truncate: await errCode(fsp.truncate(sm('hl/orig'), 1)),
    symlink: await errCode(fsp.symlink('x', sm('new-link'))),
    link: await errCode(fsp.link(sm('hl/orig'), sm('new-hardlink')))
  }
  const xa = await xattr('set', sm('hl/orig'), 'user.new', '41')
  got.setxattr = xa.error ?? 'succeeded'
  const fifo = await exec('mkfifo', [sm('new-fifo')])
  got.mkfifo = fifo.code !== 0 && /read-only/i.test(fifo.stderr) ? 'EROFS' : `${describeFailure(fifo)}`
  const wrong = Object.entries(got).filter(([, c]) => c !== 'EROFS')
  assert.equal(wrong, [], `these did not fail with EROFS: ${JSON.stringify(wrong)}`)
  assert.is((await fsp.readFile(sd('hl/orig'))).toString(), before, 'the Secondary\'s data is unchanged')
  for (const rel of ['new-file', 'new-dir', 'new-link', 'new-hardlink', 'new-fifo', 'hl/renamed']) {
    assert.is(await errCode(fsp.lstat(sd(rel))), 'ENOENT', `${rel} was not created in the Secondary's data directory`)
  }
}))

t('the Secondary mount is never stale: an open descriptor, stat and lookups see each change', timed(90_000, async () => {
  const rel = 'live.txt'
  assert.is(await errCode(fsp.stat(sm('appear.txt'))), 'ENOENT', 'appear.txt does not exist yet (a negative lookup the kernel may cache)')
  await fsp.writeFile(pm(rel), 'A'.repeat(5000))
  await P().caughtUp()
  const fh = await fsp.open(sm(rel), 'r')
  const readAll = async (): Promise<string> => {
    const buf = Buffer.alloc(65536)
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
    return buf.subarray(0, bytesRead).toString()
  }
  const check = async (want: string, step: string): Promise<void> => {
    assert.is(await readAll(), want, `${step}: pread at 0 through the descriptor opened before the change`)
    assert.is((await fh.stat()).size, want.length, `${step}: fstat size through the same descriptor`)
    assert.is((await fsp.stat(sm(rel))).size, want.length, `${step}: stat size by path`)
    assert.is((await fsp.readFile(sm(rel))).toString(), want, `${step}: content read by path`)
    const [a, b] = await Promise.all([fsp.stat(pm(rel), { bigint: true }), fsp.stat(sm(rel), { bigint: true })])
    assert.is(b.mtimeNs / 1000n, a.mtimeNs / 1000n, `${step}: mtime by path on the Secondary is the Primary's`)
  }
  try {
    assert.is(await readAll(), 'A'.repeat(5000), 'initial content')
    // same size, new content in place: only the page cache can make this stale
    const w = await fsp.open(pm(rel), 'r+')
    try {
      await w.write(Buffer.from('B'.repeat(5000)), 0, 5000, 0)
    } finally {
      await w.close()
    }
    await P().caughtUp()
    await check('B'.repeat(5000), 'overwritten in place, same size')
    await fsp.appendFile(pm(rel), 'C'.repeat(3000))
    await P().caughtUp()
    await check('B'.repeat(5000) + 'C'.repeat(3000), 'grown')
    await fsp.truncate(pm(rel), 1234)
    await P().caughtUp()
    await check('B'.repeat(1234), 'truncated')
  } finally {
    await fh.close()
  }
  // replaced by rename: lookups by path see the new file
  await fsp.writeFile(pm('live.tmp'), 'D'.repeat(100))
  await fsp.rename(pm('live.tmp'), pm(rel))
  await fsp.writeFile(pm('appear.txt'), 'here now')
  await P().caughtUp()
  assert.is((await fsp.readFile(sm(rel))).toString(), 'D'.repeat(100), 'after rename over it, the path reads the new file')
  assert.is((await fsp.stat(sm(rel))).size, 100)
  assert.is((await fsp.readFile(sm('appear.txt'))).toString(), 'here now', 'a file created after a failed lookup is found')
  assert.ok((await fsp.readdir(sm('.'))).includes('appear.txt'), 'readdir lists it')
  await fsp.unlink(pm('appear.txt'))
  await P().caughtUp()
  assert.is(await errCode(fsp.stat(sm('appear.txt'))), 'ENOENT', 'an unlinked file is gone on the Secondary mount')
  assert.not.ok((await fsp.readdir(sm('.'))).includes('appear.txt'), 'readdir no longer lists it')
}))


t('pause holds updates back on the Primary; resume delivers them', timed(90_000, async () => {
  const state = P().primary.state
  await P().caughtUp()
  const s0 = await P().secondary.status()
  const before = lastSeq(await P().primaryStatus())
  const r = await cli(['pause', '--state', state], { timeoutMs: 30_000 })
  assert.is(r.code, 0, describeFailure(r))
  const paused = await P().primaryStatus()
  assert.is(paused.rlinks[0].state, 'paused', 'pause returned, so the rlink reports paused')

  await fsp.writeFile(pm('paused.txt'), 'written while paused')
  await fsp.mkdir(pm('paused-dir'))
  await fsp.appendFile(pm('paused.txt'), ', more')
  // proof the Primary logged and applied them (no sleeping): its SRL's newest record moved on
  const logged = await waitFor(async () => {
    const p = await P().primaryStatus()
    return p.srl.newestSeq !== null && p.srl.newestSeq >= before + 4 && p.srl.appliedSeq >= p.srl.newestSeq ? p : undefined
  }, { timeoutMs: 20_000, what: 'the Primary to log and apply the updates made while paused', intervalMs: 100 })
  const s1 = await P().secondary.status()
  const p1 = await P().primaryStatus()
  assert.is(p1.rlinks[0].state, 'paused', 'still paused')
  assert.is(s1.appliedSeq, s0.appliedSeq, `the Secondary applied nothing while paused (Primary logged up to ${String(logged.srl.newestSeq)})`)
  assert.is(s1.receivedSeq, s0.receivedSeq, 'the Secondary received nothing while paused')
  assert.ok(p1.rlinks[0].lagUpdates >= 4, `lagUpdates counts what is held back: ${JSON.stringify(p1.rlinks[0])}`)
  assert.is(await errCode(fsp.stat(sm('paused.txt'))), 'ENOENT', 'not on the Secondary mount')
  assert.is(await errCode(fsp.stat(sd('paused.txt'))), 'ENOENT', 'not in the Secondary\'s data directory')

  const r2 = await cli(['resume', '--state', state], { timeoutMs: 30_000 })
  assert.is(r2.code, 0, describeFailure(r2))
  await waitFor(async () => (await P().primaryStatus()).rlinks[0].state === 'connected', { timeoutMs: 30_000, what: 'the rlink to be connected after resume', intervalMs: 100 })
  await P().caughtUp()
  assert.is((await fsp.readFile(sm('paused.txt'))).toString(), 'written while paused, more')
  assert.ok((await fsp.stat(sm('paused-dir'))).isDirectory())
  const s2 = await P().secondary.status()
  assert.is(s2.appliedSeq, lastSeq(await P().primaryStatus()))

  // by name: --secondary naming the RLINK as given
  const r3 = await cli(['pause', '--state', state, '--secondary', P().target], { timeoutMs: 30_000 })
  assert.is(r3.code, 0, describeFailure(r3))
  assert.is((await P().primaryStatus()).rlinks[0].state, 'paused')
  const r4 = await cli(['resume', '--state', state, '--secondary', P().target], { timeoutMs: 30_000 })
  assert.is(r4.code, 0, describeFailure(r4))
  await waitFor(async () => (await P().primaryStatus()).rlinks[0].state === 'connected', { timeoutMs: 30_000, what: 'the rlink to be connected after resume --secondary', intervalMs: 100 })
}))

t('pause/resume --secondary naming an unknown address: one-line error, non-zero exit, nothing paused', timed(60_000, async () => {
  const state = P().primary.state
  const unknown = '127.0.0.1:1'
  assertOneLineError(await cli(['pause', '--state', state, '--secondary', unknown], { timeoutMs: 30_000 }), [unknown])
  assertOneLineError(await cli(['resume', '--state', state, '--secondary', unknown], { timeoutMs: 30_000 }), [unknown])
  assert.is((await P().primaryStatus()).rlinks[0].state, 'connected', 'the real rlink was not paused')
}))

t('the pair stops cleanly', timed(90_000, async () => {
  const p = P()
  pair = undefined
  await p.stop()
  // once both have stopped, the data directories are still identical
  const [a, b]: Snapshot[] = await Promise.all([snapshotTree(p.primary.data), snapshotTree(p.secondary.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after stop')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
