/**
 * Full synchronization (issue 12, docs/ARCHITECTURE.md "Full synchronization"): a Primary started
 * over a directory that already holds a tree brings a new, empty Secondary to that tree while
 * writes go on through its mount, then replicates in order; a synchronization cut short (the link
 * cut, the Secondary killed) begins again and ends identical. Real daemons, real FUSE mounts, real
 * TCP on loopback, real programs (git, sqlite3) on the trees.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startSecondary, startPrimary, tmpdirs, cli, primaryStatus, assertCleanSlate, cleanupAll, timed, waitFor, execOk, helperScript,
  type Primary, type Secondary
} from './helpers'
import { startProxy, closeAllProxies, type Proxy } from './helpers/proxy'
import { snapshotTree, diffSnapshots, assertNoDiffs, linkGroups } from './helpers/replica-tree'

const t = suite('full-sync')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`full-sync.test: cleanup had to force: ${forced.join('; ')}`)
})

/** A tree of every kind of entry, made directly in `dir` (the Primary's data directory, before it starts). */
async function existingTree (dir: string, bigMiB: number): Promise<void> {
  const script = `
set -e
cd "$1"
mkdir -p src/a/b src/c empty
for i in $(seq 1 300); do head -c $((i * 37)) /dev/urandom > src/a/f$i; done
for i in $(seq 1 200); do echo "file $i" > src/a/b/g$i; done
head -c ${bigMiB}M /dev/urandom > big.bin
truncate -s 16M sparse.bin
printf 'middle' | dd of=sparse.bin bs=1 seek=$((8 << 20)) conv=notrunc status=none
ln src/a/f1 hard1
ln src/a/f1 src/c/hard2
ln -s src/a/f2 link
ln -s /nonexistent/target dangling
mkfifo fifo
chmod 4755 src/a/f3
chown 4321:4322 src/a/f4
chown 777:778 src/c
git init -q repo
cd repo
echo hello > x
git add x
git -c user.email=t@example.com -c user.name=t commit -qm x
cd ..
sqlite3 db.sqlite 'CREATE TABLE t(a); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) INSERT INTO t SELECT x FROM c;'
touch -h -d '2001-02-03 04:05:06.123456789' link
touch -d '2002-01-01 00:00:00.5' src/a/f5
touch -d '2003-03-03 03:03:03' src/c empty
`
  await execOk('bash', ['-c', script, 'tree', dir], { timeoutMs: 120_000 })
  await execOk(process.execPath, [helperScript('xattr-tool'), 'set', path.join(dir, 'src/a/f6'), 'user.color', Buffer.from('blue').toString('hex')], { timeoutMs: 30_000 })
  await execOk(process.execPath, [helperScript('xattr-tool'), 'set', path.join(dir, 'src/c'), 'user.dir', 'cafe'], { timeoutMs: 30_000 })
}

/** Changes through the Primary's mount while the synchronization runs: new, renamed, removed, rewritten entries. */
async function liveChanges (mount: string, rounds: number): Promise<void> {
  await fsp.mkdir(path.join(mount, 'live'), { recursive: true })
  for (let i = 0; i < rounds; i++) {
    await fsp.writeFile(path.join(mount, `live/n${i}`), Buffer.alloc(4096 + i, i & 0xff))
    if (i % 5 === 0) await fsp.rename(path.join(mount, `live/n${i}`), path.join(mount, `live/r${i}`))
    if (i % 7 === 0) await fsp.rm(path.join(mount, `src/a/f${100 + i}`), { force: true })
    if (i % 11 === 0) await fsp.mkdir(path.join(mount, `live/d${i}`))
    if (i % 13 === 0) {
      const fh = await fsp.open(path.join(mount, 'big.bin'), 'r+')
      try { await fh.write(Buffer.alloc(65536, 0xab), 0, 65536, i * 65536) } finally { await fh.close() }
    }
    if (i === Math.floor(rounds / 2)) await fsp.rename(path.join(mount, 'src/a/b'), path.join(mount, 'moved-b'))
  }
  await fsp.appendFile(path.join(mount, 'src/a/f2'), 'appended while synchronizing\n')
}

async function rlinkOf (p: Primary): Promise<{ state: string, consistent?: boolean, dataAckedSeq: number, sync?: unknown }> {
  return (await primaryStatus(p.state)).rlinks[0] as unknown as { state: string, consistent?: boolean, dataAckedSeq: number }
}

/** Waits until the RLINK is consistent and the Secondary has applied everything the Primary logged. */
async function synchronized (p: Primary, s: Secondary, timeoutMs = 120_000): Promise<void> {
  await waitFor(async () => {
    const ps = await primaryStatus(p.state)
    const l = ps.rlinks[0] as unknown as { state: string, consistent: boolean, dataAckedSeq: number }
    const newest = ps.srl.newestSeq ?? ps.srl.appliedSeq
    return l.state === 'connected' && l.consistent && l.dataAckedSeq >= newest
  }, { timeoutMs, what: 'the Secondary to be synchronized and caught up', intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- primary ---\n${await p.log()}\n--- secondary ---\n${await s.log()}`) })
}

async function assertSameTrees (p: Primary, s: Secondary, what: string): Promise<void> {
  const [pri, sec] = await Promise.all([snapshotTree(p.data), snapshotTree(s.data)])
  assertNoDiffs(diffSnapshots(pri, sec, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), what)
  assert.ok(Object.keys(pri).length > 500, `the Primary's tree has ${Object.keys(pri).length} paths`)
}

interface SyncPair { p: Primary, s: Secondary, proxy: Proxy }

/**
 * A Secondary, a proxy in front of it, and a Primary started over an existing tree (a `bigMiB`
 * file in it) replicating through the proxy, which stalls by itself after `stallAfter` bytes of
 * it (exactly there: polling for a byte count would let a fast synchronization finish first);
 * both are stopped after `fn`, pass or fail (`fn` may replace `s` with a restarted Secondary).
 * `existing`: the Secondary starts with --sync-existing over what `existing` makes of a copy of
 * the Primary's tree, after a start without it that must be refused.
 */
async function withSyncPair (bigMiB: number, stallAfter: number, fn: (x: SyncPair) => Promise<void>,
  existing?: (secData: string) => Promise<void>): Promise<void> {
  const x: Partial<SyncPair> = {}
  try {
    const dirs = await tmpdirs('pri')
    await existingTree(dirs.data, bigMiB)
    if (existing === undefined) x.s = await startSecondary()
    else {
      const sec = await tmpdirs('sec')
      await execOk('cp', ['-a', '--sparse=always', dirs.data + '/.', sec.data], { timeoutMs: 60_000 })
      await existing(sec.data)
      let refused: Error | null = null
      try { x.s = await startSecondary({ dirs: sec }) } catch (err) { refused = err as Error }
      assert.ok(refused !== null, 'a Secondary over data that never replicated does not start without --sync-existing')
      assert.match(refused.message, /is not empty, and this Secondary has never replicated: .*--sync-existing/)
      x.s = await startSecondary({ dirs: sec, extraArgs: ['--sync-existing'] })
    }
    x.proxy = await startProxy(x.s.address)
    x.proxy.stallAfterUp(stallAfter)
    x.p = await startPrimary({ dirs, extraArgs: ['--secondary', x.proxy.address, '--secret-file', x.s.secretFile] })
    await fn(x as SyncPair)
  } finally {
    await x.p?.stop().catch(() => {})
    await x.s?.stop().catch(() => {})
    await closeAllProxies()
  }
}

/** File bytes in a tree (a hard-linked file once; holes of sparse.bin not counted). */
async function treeBytes (dir: string): Promise<number> {
  const snap = await snapshotTree(dir)
  const seen = new Set<string>()
  let n = 0
  for (const [p, e] of Object.entries(snap)) {
    if (e.type !== 'file' || p === 'sparse.bin') continue
    const id = e.ino
    if (seen.has(id)) continue
    seen.add(id)
    n += e.size ?? 0
  }
  return n
}

/** The figures of every synchronization the Primary's log reports, cut short or sent, in order. */
function syncReports (log: string): Array<{ mode: 'full' | 'diff', outcome: 'cut' | 'sent', entries: number, bytes: number, differed: number | null }> {
  const re = /(full synchronization|synchronization by difference) \S+ (?:cut short \(.*?\) after |sent \()(\d+) entries, (\d+) bytes(?:, (\d+) files differed)?/g
  return [...log.matchAll(re)].map((m) => ({
    mode: m[1] === 'full synchronization' ? 'full' : 'diff',
    outcome: m[0].includes('cut short') ? 'cut' : 'sent',
    entries: Number(m[2]),
    bytes: Number(m[3]),
    differed: m[4] === undefined ? null : Number(m[4])
  }))
}

interface SyncFiguresJson { phase: string, bytes: number, walked: number, totalEntries: number | null, totalBytes: number | null, rateBytes: number, etaSeconds: number | null }

t('a Primary over an existing 1 GiB tree: a new Secondary is synchronized in full while writes go on, with progress figures, then replicates in order', timed(300_000, async () => {
  await withSyncPair(1000, 2 << 20, async (x) => {
    const { p: pri, s, proxy } = x
    // Hold the synchronization part way through its walk (the window fills, the walk waits), change
    // the tree meanwhile, then let it go on: every change must reach the Secondary through the map.
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '2 MiB of the synchronization to pass the proxy, and the proxy to stall', intervalMs: 5 })
    const during = (await primaryStatus(pri.state)).rlinks[0] as unknown as { consistent: boolean, sync: SyncFiguresJson | null }
    assert.is(during.consistent, false, 'the RLINK is not consistent during the synchronization')
    assert.is(during.sync?.phase, 'walk')
    // Progress: the tree is counted in the background (totals), a rate, and an ETA from them.
    const figures = await waitFor(async () => {
      const f = ((await primaryStatus(pri.state)).rlinks[0] as unknown as { sync: SyncFiguresJson | null }).sync
      return f !== null && f.totalBytes !== null ? f : null
    }, { timeoutMs: 30_000, what: 'the Primary to count the tree for the progress figures', intervalMs: 50 })
    assert.ok(figures.totalBytes! > 1000 << 20 && figures.totalBytes! < 1100 << 20, `the tree's bytes to send, holes left out: ${figures.totalBytes}`)
    assert.ok(figures.totalEntries! > 500, `its entries: ${figures.totalEntries}`)
    assert.ok(figures.bytes > 0 && figures.bytes < figures.totalBytes! && figures.rateBytes > 0 && figures.etaSeconds !== null && figures.etaSeconds > 0, `sent so far, a rate and an ETA: ${JSON.stringify(figures)}`)
    const sp = (await s.status() as unknown as { sync: { entries: number, bytes: number } | null }).sync
    assert.ok(sp !== null && sp.entries > 0 && sp.bytes > 0, `the Secondary's status shows what it applied: ${JSON.stringify(sp)}`)
    // status --watch, not on a terminal: a line per look, and exit 0 once the synchronization is done.
    const watch = cli(['status', '--state', pri.state, '--watch', '--interval', '0.2'], { timeoutMs: 120_000 })
    await liveChanges(pri.mount, 120)
    await pri.quiesce()
    const changedUpTo = (await primaryStatus(pri.state)).srl.newestSeq ?? 0
    assert.ok(changedUpTo > 300, `the changes during the synchronization made ${changedUpTo} records`)
    proxy.unstall()
    const w = await watch
    assert.is(w.code, 0, `status --watch exits 0 once the synchronization is done: ${w.stderr}`)
    assert.match(w.stdout, /^RLINK \S+: full synchronization \S+: walk, [\d.]+ of [\d.]+ MiB sent \(\d+%\), \d+ of \d+ entries walked, [\d.]+ MiB\/s, ETA \d+ s, \d+ paths changed meanwhile$/m)
    await synchronized(pri, s)
    const done = /full synchronization \S+ sent \((\d+) entries, \d+ bytes\); the Secondary has the tree after sequence number (\d+)/.exec(await pri.log())
    assert.ok(done !== null, 'the Primary says the synchronization ended, and after which record')
    assert.ok(Number(done[2]) >= changedUpTo, `the synchronization ended after record ${done[2]}, so it carried every change made while it ran (up to ${changedUpTo})`)
    await pri.quiesce()
    await assertSameTrees(pri, s, 'after the full synchronization, the Secondary\'s data directory differs from the Primary\'s')
    const sec = await snapshotTree(s.data)
    assert.ok(linkGroups(sec).has('hard1, src/a/f1, src/c/hard2'), `hard links on the Secondary: ${[...linkGroups(sec)].join(' | ')}`)
    assert.is(sec['sparse.bin'].size, 16 << 20)
    assert.is(sec['src/a/f3'].mode, '4755')
    assert.is(sec['src/a/f4'].uid, 4321)
    assert.equal(sec['src/a/f6'].xattrs, { 'user.color': '626c7565' })
    assert.is(sec.dangling.type, 'symlink')
    assert.is(sec.fifo.type, 'fifo')
    assert.is(sec['moved-b/g7'].type, 'file', 'a directory renamed during the synchronization is there under its new name')
    assert.is(sec['src/a/b'], undefined, 'and not under its old one')
    const du = (await execOk('du', ['-k', path.join(s.data, 'sparse.bin')], { timeoutMs: 30_000 })).stdout
    assert.ok(Number(du.split(/\s/)[0]) < 1024, `the sparse file's holes stay holes on the Secondary (du: ${du.trim()})`)
    const ss = await s.status() as unknown as { consistent: boolean, syncing: string | null }
    assert.is(ss.consistent, true, 'the Secondary reports itself consistent')
    assert.is(ss.syncing, null)

    // Real programs on the Secondary's copy.
    const g = await execOk('git', ['-C', path.join(s.mount, 'repo'), 'log', '--oneline'], { timeoutMs: 30_000 })
    assert.match(g.stdout, / x\n?$/)
    const q = await execOk('sqlite3', ['-readonly', path.join(s.mount, 'db.sqlite'), 'PRAGMA integrity_check; SELECT count(*) FROM t;'], { timeoutMs: 30_000 })
    assert.equal(q.stdout.trim().split('\n'), ['ok', '1000'])

    // From here on, ordered replication.
    const before = (await rlinkOf(pri)).dataAckedSeq
    await fsp.writeFile(path.join(pri.mount, 'after.txt'), 'ordered replication\n')
    await fsp.rename(path.join(pri.mount, 'src/c'), path.join(pri.mount, 'c-renamed'))
    await synchronized(pri, s)
    assert.ok((await rlinkOf(pri)).dataAckedSeq > before, 'records were sent after the synchronization')
    await assertSameTrees(pri, s, 'after ordered replication, the Secondary\'s data directory differs from the Primary\'s')
  })
}))

t('a file written all the time through the mount during the synchronization: it ends while the writes go on, sending what was written, not the file again', timed(300_000, async () => {
  await withSyncPair(64, 1 << 20, async (x) => {
    const { p: pri, s, proxy } = x
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '1 MiB of the synchronization to pass the proxy, and the proxy to stall', intervalMs: 5 })
    // Writers that never pause, as a database's do: four, each writing 4 KiB at pseudo-random
    // offsets of the 64 MiB file, each write awaited and the next one issued at once, so that some
    // write is always in flight.
    let stop = false
    let writes = 0
    const writer = Promise.all([1, 2, 3, 4].map(async (seed) => {
      const fh = await fsp.open(path.join(pri.mount, 'big.bin'), 'r+')
      try {
        let r = seed
        while (!stop) {
          r = (r * 1103515245 + 12345) % 2 ** 31
          await fh.write(Buffer.alloc(4096, writes & 0xff), 0, 4096, (r % 16383) * 4096)
          writes++
        }
      } finally { await fh.close() }
    }))
    try {
      // 2 ms each way: the last frames' acks take 4 ms to come back, and a write is in flight
      // all that time, so the end cannot wait for a quiet spell (it cuts: src/rlink/link.ts pumpSync).
      proxy.delay(2)
      proxy.unstall()
      await waitFor(async () => (await rlinkOf(pri)).consistent === true || stop, { timeoutMs: 120_000, what: 'the synchronization to end while the writer goes on', intervalMs: 50 })
        .catch(async (err: Error) => { throw new Error(`${err.message} (${writes} writes so far)\n--- primary ---\n${await pri.log()}`) })
      const atEnd = writes
      assert.ok(atEnd > 100, `the writers wrote ${atEnd} times before the end`)
      await waitFor(() => writes > atEnd + 200, { timeoutMs: 60_000, what: 'the writer to go on after the end (ordered replication)', intervalMs: 20 })
    } finally {
      stop = true
      await writer
    }
    await synchronized(pri, s)
    await pri.quiesce()
    await assertSameTrees(pri, s, 'after a synchronization with a writer that never paused, the Secondary\'s data directory differs from the Primary\'s')
    const reports = syncReports(await pri.log())
    assert.equal(reports.map((r) => `${r.mode} ${r.outcome}`), ['full sent'], JSON.stringify(reports))
    const tree = await treeBytes(pri.data)
    assert.ok(reports[0].bytes < tree * 1.5, `the synchronization sent ${reports[0].bytes} bytes for a tree of ${tree}: the big file went again by its changed parts, not whole`)
  })
}))

t('a synchronization cut short (the link cut, then the Secondary killed) begins again and ends identical', timed(300_000, async () => {
  await withSyncPair(96, 8 << 20, async (x) => {
    const { p: pri, s: sec0, proxy } = x

    // 1. The link cut part way.
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '8 MiB of the synchronization to pass the proxy, and the proxy to stall', intervalMs: 10 })
    proxy.cut()
    await waitFor(async () => /full synchronization \S+ cut short/.test(await pri.log()), { timeoutMs: 30_000, what: 'the Primary to log the cut', intervalMs: 100 })

    // 2. The Secondary killed part way through the next attempt, then started again.
    proxy.stallAfterUp(8 << 20)
    proxy.unstall()
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '8 MiB more of the next attempt to pass the proxy, and the proxy to stall', intervalMs: 10 })
    const st = await sec0.status() as unknown as { syncing: string | null, consistent: boolean }
    assert.ok(st.syncing !== null, `the Secondary reports a synchronization in progress: ${JSON.stringify(st)}`)
    assert.is(st.consistent, false, 'and itself not consistent')
    await sec0.kill9()
    const s = x.s = await startSecondary({ dirs: sec0, secretFile: sec0.secretFile, listen: sec0.address })
    proxy.unstall()
    await liveChanges(pri.mount, 30)
    await synchronized(pri, s)
    await pri.quiesce()
    assert.match(await s.log(), /did not finish/, 'the restarted Secondary says a synchronization was cut short')
    await assertSameTrees(pri, s, 'after a cut and a kill -9, the Secondary\'s data directory differs from the Primary\'s')

    // Each attempt went on from what the one before had delivered (by difference), not from
    // nothing: the last sent the tree less the 2 x 8 MiB that passed the proxy before (what an
    // attempt counts as sent includes what was in flight when it was cut).
    const reports = syncReports(await pri.log())
    assert.equal(reports.map((r) => `${r.mode} ${r.outcome}`), ['full cut', 'diff cut', 'diff sent'], JSON.stringify(reports))
    const tree = await treeBytes(pri.data)
    assert.ok(reports[2].bytes < tree - (12 << 20), `the last attempt sent ${reports[2].bytes} bytes for a tree of ${tree}: ${JSON.stringify(reports)}`)
  })
}))

t('a Secondary synchronized before the Primary\'s first record (at sequence number 0) is not new when it comes back: restarted, it replicates on, not refused NOT_EMPTY nor synchronized again', timed(300_000, async () => {
  await withSyncPair(1, 2 ** 40, async (x) => {
    const { p: pri } = x
    await synchronized(pri, x.s)
    assert.is((await primaryStatus(pri.state)).srl.newestSeq ?? 0, 0, 'no record yet: the tree the Secondary has is the one after sequence number 0')
    await x.s.stop()
    const s = x.s = await startSecondary({ dirs: x.s, secretFile: x.s.secretFile, listen: x.s.address })
    await fsp.writeFile(path.join(pri.mount, 'after-restart'), 'replicated in order\n')
    await synchronized(pri, s)
    assert.not.match(await pri.log(), /not empty and has never replicated/, 'not refused as a Secondary with data of its own')
    assert.is(syncReports(await pri.log()).length, 1, 'synchronized once, not again')
    await pri.quiesce()
    await assertSameTrees(pri, s, 'after the Secondary\'s restart')
  })
}))

t('a Secondary with data of its own (an old copy) and --sync-existing is made the Primary\'s by difference, every file compared, while writes go on', timed(300_000, async () => {
  await withSyncPair(24, 16 << 10, async (x) => {
    const { p: pri, s, proxy } = x
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '16 KiB of the synchronization to pass the proxy, and the proxy to stall', intervalMs: 5 })
    const during = await rlinkOf(pri) as unknown as { consistent: boolean, sync: { mode: string } | null }
    assert.is(during.consistent, false)
    assert.is(during.sync?.mode, 'diff', 'the RLINK status says it synchronizes by difference')
    await liveChanges(pri.mount, 40)
    proxy.unstall()
    await synchronized(pri, s)
    await pri.quiesce()
    await assertSameTrees(pri, s, 'after a synchronization by difference, the Secondary\'s data directory differs from the Primary\'s')
    const sec = await snapshotTree(s.data)
    assert.is(sec['src/a/extra'], undefined, 'a file only the Secondary had is gone')
    assert.ok(linkGroups(sec).has('hard1, src/a/f1, src/c/hard2'), `hard links on the Secondary: ${[...linkGroups(sec)].join(' | ')}`)
    const [r] = syncReports(await pri.log())
    assert.is(r.mode, 'diff')
    const tree = await treeBytes(pri.data)
    assert.ok(r.bytes < (3 << 20), `sent ${r.bytes} bytes of a ${tree}-byte tree: the chunks that differ and the writes made meanwhile`)
    assert.ok(r.differed !== null && r.differed >= 4, `files sent: ${String(r.differed)}`)
    assert.match(await s.log(), /of \d+ files compared differed/)
    // From here on, ordered replication.
    await fsp.writeFile(path.join(pri.mount, 'after.txt'), 'ordered replication\n')
    await synchronized(pri, s)
    await assertSameTrees(pri, s, 'after ordered replication, the Secondary\'s data directory differs from the Primary\'s')
  }, async (data) => {
    // Bytes changed in the big file with its size and mtime kept: only comparing every chunk finds them.
    await execOk('bash', ['-c', `set -e
cd "$1"
t=$(stat -c %y big.bin)
printf 'CHANGED' | dd of=big.bin bs=1 seek=$((5 << 20)) conv=notrunc status=none
touch -d "$t" big.bin
rm src/a/f10
echo extra > src/a/extra
echo more >> src/a/f20
chmod 600 src/a/f30
ln -sfn elsewhere link
rm -r src/a/b
echo file > src/a/b
mkdir src/a/f40.d`, 'drift', data], { timeoutMs: 30_000 })
  })
}))

t.run()
