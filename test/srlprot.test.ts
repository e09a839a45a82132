/**
 * SRL overflow protection (issue 12, docs/ARCHITECTURE.md "SRL overflow protection"): with the
 * default --srlprot autodcm, a Secondary that is away while the Primary writes more than its SRL
 * holds does not make writes fail: it leaves the SRL for a change map (DCM) of the paths changed,
 * kept across a kill -9 of the Primary, and when it is back it is resynchronized from the map (by
 * difference: only those paths) and goes back to ordered replication. --srlprot override detaches
 * it instead (STALE: back, it is synchronized by difference, the whole tree compared). (--srlprot fail, writes fail with ENOSPC: test/srl-full.test.ts.) Real
 * daemons, FUSE mounts, TCP on loopback; the Primary's SRL is the smallest accepted, 4 MiB.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { assertCleanSlate, cleanupAll, isolated, waitFor, type PrimaryStatus } from './helpers'
import { closeAllProxies } from './helpers/proxy'
import { ibcSend } from './helpers/ibc'
import { withMulti, waitRlink, ddWrite, type Multi } from './helpers/multi'
import { snapshotTree, diffSnapshots, assertNoDiffs } from './helpers/replica-tree'
import { SRL_BYTES_MIN } from '../src/limits'

const t = suite('srlprot')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`srlprot.test: cleanup had to force: ${forced.join('; ')}`)
})

const SRL = `${SRL_BYTES_MIN / (1024 * 1024)}M`

interface DcmStatus { dcm: { paths: number, since: string } | null, consistent: boolean, state: string, dataAckedSeq: number, lastError: string | null }
const rlink = (st: PrimaryStatus): DcmStatus => st.rlinks[0] as unknown as DcmStatus

/** A tree of `n` small files in 10 directories, through the Primary's mount. */
async function smallTree (mount: string, n: number): Promise<void> {
  for (let d = 0; d < 10; d++) await fsp.mkdir(path.join(mount, `t/d${d}`), { recursive: true })
  for (let i = 0; i < n; i++) await fsp.writeFile(path.join(mount, `t/d${i % 10}/f${i}`), `file ${i}\n`.repeat(20))
}

/** More than the SRL holds, and changes of every kind: a big file, renames, removals, new directories (with `db`: pages of the file db). */
async function manyChanges (mount: string, round: number, db = false): Promise<void> {
  await fsp.writeFile(path.join(mount, `big${round}`), crypto.randomBytes(3 * SRL_BYTES_MIN))
  await fsp.rename(path.join(mount, `t/d${round}`), path.join(mount, `t/moved${round}`))
  await fsp.rm(path.join(mount, `t/d${round + 5}/f${round + 5}`))
  await fsp.mkdir(path.join(mount, `new${round}/deep`), { recursive: true })
  await fsp.writeFile(path.join(mount, `new${round}/deep/x`), `round ${round}\n`)
  await fsp.appendFile(path.join(mount, 't/d9/f9'), `appended in round ${round}\n`)
  await fsp.chmod(path.join(mount, 't/d8/f8'), 0o600 + round)
  if (!db) return
  // A database's pages: two 4 KiB writes far apart in a 16 MiB file (the map keeps the spans).
  const fh = await fsp.open(path.join(mount, 'db'), 'r+')
  try {
    await fh.write(Buffer.alloc(4096, round), 0, 4096, round * (1 << 20))
    await fh.write(Buffer.alloc(4096, round + 100), 0, 4096, (8 + round) * (1 << 20) + 100)
  } finally { await fh.close() }
}

async function assertSame (m: Multi, what: string): Promise<void> {
  await m.primary.quiesce()
  const [a, b] = await Promise.all([snapshotTree(m.primary.data), snapshotTree(m.secondaries[0].data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), what)
}

t('autodcm: a Secondary away while the SRL overflows leaves it for a change map (writes go on, a kill -9 keeps the map), then is resynchronized from the map, a snapshot of it as it was existing throughout', isolated(240_000, async () => {
  await withMulti({ count: 1, srlSize: SRL, via: [true] }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await smallTree(m.primary.mount, 400)
    await m.caughtUp()
    await fsp.writeFile(path.join(m.primary.mount, 'db'), crypto.randomBytes(16 << 20))
    await m.caughtUp()
    const consistent = await snapshotTree(m.secondaries[0].data)
    await m.secondaries[0].stop()
    await waitRlink(m, 0, (l) => l.state !== 'connected', 'down after the Secondary stopped')

    // Three times the SRL: every write succeeds; the RLINK goes to its change map.
    await manyChanges(m.primary.mount, 1, true)
    let st = await waitRlink(m, 0, (l) => (l as unknown as DcmStatus).dcm !== null, 'in DCM mode')
    assert.ok(rlink(st).dcm!.paths > 0, `the map has paths: ${JSON.stringify(rlink(st))}`)
    assert.is(rlink(st).consistent, false, 'an RLINK in DCM mode is not consistent')
    // The RLINK is down and retrying: 'disconnected' or, between attempts, 'connecting'.
    assert.match(await m.primary.log(), /the SRL would overflow \((?:disconnected|connecting), srlprot=autodcm\): its changes go to its change map/)

    // An IBC message cannot go through a map of paths: the Primary says so when it folds it.
    const ibcSent = await ibcSend(m.primary.state, 'backup', 'while in DCM mode')

    // The map is in LevelDB: a kill -9 of the Primary keeps it; more changes after the restart.
    await m.primary.kill9()
    await m.restartPrimary()
    st = await waitRlink(m, 0, (l) => (l as unknown as DcmStatus).dcm !== null, 'still in DCM mode after a kill -9 and restart')
    await manyChanges(m.primary.mount, 2, true)
    assert.match(await m.primary.log(), new RegExp(`the IBC message for backup \\(sequence number ${ibcSent.seq}\\) is not delivered to this Secondary: its RLINK is in DCM mode`),
      'the Primary says the IBC message sent in DCM mode is not delivered (folded at a checkpoint)')

    // Back: resynchronized from the map, then ordered replication. The proxy stalls 4 MiB into
    // the resynchronization: the Secondary is inconsistent, and a snapshot of it keeps the tree it
    // had (VVR's Secondary checkpoint before a DCM resynchronization).
    const proxy = m.proxies[0]!
    proxy.stallAfterUp(4 << 20)
    await m.restartSecondary(0)
    await waitFor(() => proxy.stalled, { timeoutMs: 60_000, what: '4 MiB of the resynchronization to pass the proxy, and the proxy to stall', intervalMs: 5 })
    const during = await m.secondaries[0].status()
    assert.is(during.consistent, false, 'the Secondary is inconsistent during the resynchronization')
    assert.match(String(during.syncSnapshot), /^resync-/, `the Secondary keeps a snapshot of itself: ${JSON.stringify(during)}`)
    const kept = await snapshotTree(path.join(m.secondaries[0].mount, '.snapshots', during.syncSnapshot!))
    assertNoDiffs(diffSnapshots(consistent, kept, { a: 'the Secondary before', b: 'its snapshot during the resynchronization', mtime: 'us' }), 'the snapshot is the Secondary as it was')
    proxy.unstall()
    st = await waitRlink(m, 0, (l, s) => l.state === 'connected' && (l as unknown as DcmStatus).dcm === null && (l as unknown as DcmStatus).consistent && l.dataAckedSeq >= (s.srl.newestSeq ?? 0), 'resynchronized and caught up', 120_000)
    await assertSame(m, 'after the resynchronization from the change map')
    const after = await m.secondaries[0].status()
    assert.is(after.syncSnapshot, null, 'the snapshot is deleted once the resynchronization is done')
    assert.equal(await fsp.readdir(path.join(m.secondaries[0].mount, '.snapshots')), [], 'no snapshot is left')
    const log = await m.primary.log()
    assert.match(log, /resynchronized from its change map; back on the SRL/)
    const sent = /resynchronization from the change map \S+ sent \((\d+) entries, (\d+) bytes, (\d+) files differed\)/.exec(log)
    assert.ok(sent !== null, `the Primary reports the resynchronization: ${log.split('\n').filter((l) => /synchroniz/.test(l)).join('\n')}`)
    // What changed: two renamed directories of 40 files (a rename resends the moved tree: the
    // map is by path), two big files, a few more; the other ~320 files of the tree are not sent.
    const files = Object.keys(await snapshotTree(m.primary.data)).length
    assert.ok(Number(sent[3]) <= 100, `only the changed paths were sent: ${sent[3]} files differed of ${files} paths\n${log}`)
    // Bytes: the two new big files whole, and of the 16 MiB database its four 4 KiB pages written,
    // not its chunks (256 KiB each) nor the file; the rest is small.
    const bigs = 2 * 3 * SRL_BYTES_MIN
    assert.ok(Number(sent[2]) - bigs < 200 << 10, `sent ${sent[2]} bytes: ${Number(sent[2]) - bigs} besides the two new big files`)
    await fsp.writeFile(path.join(m.primary.mount, 'after.txt'), 'ordered replication again\n')
    await m.caughtUp()
    await assertSame(m, 'after ordered replication resumed')
  })
}))

t('override: a Secondary away while the SRL overflows is detached (writes go on); back, it is STALE and synchronized by difference, every chunk compared', isolated(120_000, async () => {
  await withMulti({ count: 1, srlSize: SRL, primaryExtraArgs: ['--srlprot', 'override'] }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await smallTree(m.primary.mount, 20)
    await m.caughtUp()
    await m.secondaries[0].stop()
    await waitRlink(m, 0, (l) => l.state !== 'connected', 'down after the Secondary stopped')
    await manyChanges(m.primary.mount, 1)
    await waitFor(async () => /the RLINK is detached; its Secondary is STALE/.test(await m.primary.log()), { timeoutMs: 30_000, what: 'the Primary to detach the RLINK', intervalMs: 100 })
    assert.is(rlink(await m.status()).dcm, null, 'override keeps no change map')
    await m.restartSecondary(0)
    await waitRlink(m, 0, (l, st) => l.state === 'connected' && (l as unknown as DcmStatus).consistent && l.dataAckedSeq >= (st.srl.newestSeq ?? 0), 'synchronized and caught up', 60_000)
    const log = await m.primary.log()
    assert.match(log, /needs records from sequence number \d+ but this Primary's SRL starts at \d+ \(STALE\): it is synchronized by difference instead, every file's chunks compared/)
    assert.match(log, /synchronization by difference \S+ sent \(\d+ entries, \d+ bytes, \d+ files differed\)/)
    await assertSame(m, 'after the synchronization by difference')
  })
}))

t('--max-lag: while a connected Secondary that is applying lags more than the limit, writers wait for it; once it catches up they go on', isolated(120_000, async () => {
  await withMulti({ count: 1, via: [true], primaryExtraArgs: ['--max-lag', '1'] }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await fsp.writeFile(path.join(m.primary.mount, 'a'), 'a\n')
    await m.caughtUp()
    // The proxy holds what the Primary sends: the Secondary falls behind. Within RLINK_DEAD_AFTER_MS
    // (10 s) it still counts as applying (a Secondary that stopped acking holds nobody: srlprot's).
    const proxy = m.proxies[0]!
    proxy.stall()
    await fsp.writeFile(path.join(m.primary.mount, 'b'), 'b\n') // not throttled: the lag was 0
    await waitRlink(m, 0, (l) => l.lagSeconds > 1, 'the Secondary to be more than 1 s behind', 8000)
    const src = path.join(m.primary.root, 'src')
    await fsp.writeFile(src, crypto.randomBytes(128 * 1024))
    let done = false
    const dd = ddWrite(src, path.join(m.primary.mount, 'c'), { count: 1 }).finally(() => { done = true })
    const st = await waitFor(async () => {
      const s = await m.status() as unknown as { throttled: { by: string | null, writes: number } }
      return s.throttled.by !== null ? s : null
    }, { timeoutMs: 5000, what: 'the write to wait for the lagging Secondary', intervalMs: 20 })
    assert.is(st.throttled.by, m.targets[0], 'status names the Secondary writers wait for')
    assert.is(done, false, 'the write has not completed while the Secondary lags')
    proxy.unstall()
    const r = await dd
    assert.ok(r.ok, `the write completes once the Secondary caught up: ${r.r.stderr}`)
    const after = await m.status() as unknown as { throttled: { by: string | null, writes: number, ms: number } }
    assert.is(after.throttled.by, null, 'no longer throttled')
    assert.ok(after.throttled.writes >= 1 && after.throttled.ms > 0, `status counts the throttled writes: ${JSON.stringify(after.throttled)}`)
    const log = await m.primary.log()
    assert.match(log, /is \d+\.\d s behind \(--max-lag 1\): writers wait for it/)
    assert.match(log, /within --max-lag 1 s again: writers go on/)
    await m.caughtUp()
    assert.is(await fsp.readFile(path.join(m.secondaries[0].data, 'b'), 'utf8'), 'b\n')
  })
}))

t.run()
