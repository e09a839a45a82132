/**
 * Replication through crashes and restarts: kill -9 of the Primary or of the Secondary in the middle
 * of a workload (a child process appending numbered, fsync'd chunks to several files, with creates,
 * renames over existing files, unlinks and mkdirs), restart with the same arguments, and the two data
 * directories (and the Secondary's mount) converge. A clean stop and restart of both re-applies
 * nothing and loses nothing. The contract is README.md ("Commands", "`status --json` fields").
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startPrimary, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, withDeadline, fuseMountAt, tmpdirs, pidsWithArg,
  type Pair, type Primary, type Secondary, type PrimaryStatus, type Dirs
} from './helpers'
import {
  snapshotTree, diffSnapshots, assertNoDiffs, ctimeChanges, startWorkload, checkChunkPrefixes, startDelayProxy, closeProxies,
  type Workload
} from './helpers/replica-tree'

const t = suite('replication-crash')

t.after(async () => {
  await closeProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`replication-crash.test: cleanup had to force: ${forced.join('; ')}`)
})

const NFILES = 3
const CHUNK = 4096
/** Room for a few seconds of the workload while the Secondary is down. */
const SRL = '64M'
/** Bounds the workload's rate (~300 chunks/s), so the SRL cannot fill while the Secondary is down. */
const PAUSE_MS = 2

function lastSeq (s: PrimaryStatus): number {
  return s.srl.newestSeq ?? s.srl.appliedSeq
}

/** The Primary's extra arguments exactly as startPair gave them (for a restart with the same args). */
function primaryExtra (pair: Pair): string[] {
  return ['--secondary', pair.target, '--secret-file', pair.secondary.secretFile]
}

async function logs (p: Primary, s: Secondary): Promise<string> {
  return `\n--- primary daemon.log ---\n${await p.log()}\n--- secondary daemon.log ---\n${await s.log()}`
}

async function caughtUp (p: Primary, s: Secondary, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => {
    const st = await p.status() as PrimaryStatus
    return st.rlinks.every((l) => l.dataAckedSeq >= lastSeq(st) && l.dataAckedSeq >= st.srl.appliedSeq)
  }, { timeoutMs, what: 'the Secondary to data-ack everything the Primary logged', intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(err.message + await logs(p, s)) })
}

/** Primary data == Secondary data (ns mtimes) == Secondary mount (µs); the workload files are chunk prefixes. */
async function assertConverged (p: Primary, s: Secondary, what: string): Promise<void> {
  const [a, b, c] = await Promise.all([snapshotTree(p.data), snapshotTree(s.data), snapshotTree(s.mount)])
  assert.ok(Object.keys(a).length > 20, `${what}: the Primary's tree has the workload's files (${Object.keys(a).length} paths)`)
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), `${what}: Secondary data vs Primary data`)
  assertNoDiffs(diffSnapshots(a, c, { a: 'primary data', b: 'secondary mount', mtime: 'us' }), `${what}: Secondary mount vs Primary data`)
  const counts = checkChunkPrefixes(path.join(s.data, 'w'), NFILES, CHUNK)
  assert.ok(counts.every((k) => k > 0), `${what}: every workload file has chunks on the Secondary (${JSON.stringify(counts)})`)
}

async function secondaryApplied (s: Secondary): Promise<number> {
  return (await s.status()).appliedSeq
}

function dirsOf (d: Dirs): Dirs {
  return { root: d.root, data: d.data, mount: d.mount, state: d.state }
}

function killWorkload (wl: Workload | undefined): void {
  wl?.kill()
}

t('kill -9 of the Primary mid-workload; restarted with the same arguments, the trees converge', isolated(120_000, async () => {
  let wl: Workload | undefined
  try {
    // Through a proxy delaying both directions: at the kill, updates are in flight to the Secondary
    // (lost with the connection) and the Secondary has applied more than the Primary has heard.
    const pair = await startPair({ srlSize: SRL, via: async (addr) => (await startDelayProxy(addr, 300, 300)).address })
    const sec = pair.secondary
    await fsp.mkdir(path.join(pair.primary.mount, 'w'))
    wl = startWorkload(path.join(pair.primary.mount, 'w'), path.join(pair.primary.root, 'stop-1'), { nfiles: NFILES, chunk: CHUNK, pauseMs: PAUSE_MS })
    const w = wl
    // mid-workload: it has written a good amount and the Secondary has applied part of it
    await waitFor(async () => w.progress() >= 300 && await secondaryApplied(sec) > 200, {
      timeoutMs: 60_000, what: 'the workload to pass chunk 300 and the Secondary to apply 200+ updates', intervalMs: 50
    }).catch(async (err: Error) => { throw new Error(`${err.message}; workload: ${w.lines.slice(-3).join(' | ')}${await logs(pair.primary, sec)}`) })
    assert.not.ok(w.done(), `the workload is still running when the Primary is killed (${w.lines.slice(-2).join(' | ')})`)
    // The premise, checked just before the kill: updates are in flight (sent, not yet received),
    // and the Secondary has applied more than the Primary has heard of (its acks are 300 ms away).
    let premise = ''
    await waitFor(async () => {
      // Both sampled at once: one status command takes a good part of the 300 ms an ack travels,
      // so read one after the other the Primary has heard what the Secondary said it applied.
      const [s, p] = await Promise.all([sec.status(), pair.primaryStatus()])
      const l = p.rlinks[0]
      premise = `Secondary received ${s.receivedSeq}, applied ${s.appliedSeq}; Primary sent ${l.sentSeq}, heard data-acked ${l.dataAckedSeq}`
      return l.sentSeq > s.receivedSeq && s.appliedSeq > l.dataAckedSeq
    }, { timeoutMs: 30_000, what: 'updates in flight and the Secondary ahead of what the Primary heard', intervalMs: 20 })
      .catch((err: Error) => { throw new Error(`${err.message} (${premise})`) })
    const srlId = (await pair.primaryStatus()).srlId
    await pair.primary.kill9()
    const code = await withDeadline(w.exited, 30_000, 'the workload to fail after the Primary died')
    assert.is.not(code, 0, `the workload failed once the Primary was gone: ${w.lines.slice(-2).join(' | ')}`)

    const p2 = await startPrimary({ dirs: dirsOf(pair.primary), srlSize: SRL, extraArgs: primaryExtra(pair) })
    assert.ok(await fuseMountAt(p2.mount), 'the Primary is mounted again')
    const st = await p2.status() as PrimaryStatus
    assert.is(st.srlId, srlId, 'the restarted Primary has the same SRL identity')
    await waitFor(async () => ((await p2.status()) as PrimaryStatus).rlinks[0].state === 'connected', {
      timeoutMs: 30_000, what: 'the restarted Primary to reconnect to the Secondary', intervalMs: 100
    }).catch(async (err: Error) => { throw new Error(err.message + await logs(p2, sec)) })
    // a little more work after the restart replicates too
    await fsp.writeFile(path.join(p2.mount, 'w', 'after-restart'), 'alive')
    await caughtUp(p2, sec)
    await assertConverged(p2, sec, 'after the Primary\'s kill -9 and restart')
    const s = await sec.status()
    assert.is(s.consistent, true)
    assert.is(s.primary.srlId, srlId)
    assert.is(s.appliedSeq, lastSeq(await p2.status() as PrimaryStatus))
    await p2.stop()
    await sec.stop()
  } finally {
    killWorkload(wl)
    await closeProxies()
  }
}))

t('kill -9 of the Secondary mid-workload; restarted on the same --listen while the Primary keeps writing, it catches up and the trees converge', isolated(150_000, async () => {
  let wl: Workload | undefined
  try {
    const pair = await startPair({ srlSize: SRL })
    const p = pair.primary
    const sec = pair.secondary
    await fsp.mkdir(path.join(p.mount, 'w'))
    wl = startWorkload(path.join(p.mount, 'w'), path.join(p.root, 'stop-2'), { nfiles: NFILES, chunk: CHUNK, pauseMs: PAUSE_MS })
    const w = wl
    await waitFor(async () => w.progress() >= 200 && await secondaryApplied(sec) > 200, {
      timeoutMs: 60_000, what: 'the workload to pass chunk 200 and the Secondary to apply 200+ updates', intervalMs: 50
    }).catch(async (err: Error) => { throw new Error(`${err.message}; workload: ${w.lines.slice(-3).join(' | ')}${await logs(p, sec)}`) })
    const listen = (await sec.status()).listen
    assert.match(listen, /^127\.0\.0\.1:\d+$/)
    await sec.kill9()
    await waitFor(async () => ((await p.status()) as PrimaryStatus).rlinks[0].state !== 'connected', {
      timeoutMs: 30_000, what: 'the Primary to notice the Secondary is gone', intervalMs: 100
    })
    // the Primary keeps taking writes while the Secondary is down
    const atKill = w.progress()
    await waitFor(() => w.progress() >= atKill + 100 || w.done(), { timeoutMs: 60_000, what: 'the workload to write 100 more chunks with the Secondary down', intervalMs: 50 })
    assert.not.ok(w.done(), `the workload goes on with the Secondary down: ${w.lines.slice(-3).join(' | ')}`)

    const sec2 = await startSecondary({ dirs: dirsOf(sec), srlSize: SRL, listen, secretFile: sec.secretFile })
    assert.is(sec2.address, listen, 'the restarted Secondary listens where it did')
    await waitFor(async () => ((await p.status()) as PrimaryStatus).rlinks[0].state === 'connected', {
      timeoutMs: 30_000, what: 'the Primary to reconnect to the restarted Secondary', intervalMs: 100
    }).catch(async (err: Error) => { throw new Error(err.message + await logs(p, sec2)) })
    // catching up while the Primary keeps writing: what was logged when it came back gets applied
    const target = lastSeq(await p.status() as PrimaryStatus)
    await waitFor(async () => (await sec2.status()).appliedSeq >= target, {
      timeoutMs: 60_000, what: `the restarted Secondary to apply up to ${target} while the workload runs`, intervalMs: 100
    }).catch(async (err: Error) => { throw new Error(err.message + await logs(p, sec2)) })
    assert.not.ok(w.done(), `the workload was still writing while the Secondary caught up: ${w.lines.slice(-3).join(' | ')}`)
    const code = await w.stop()
    assert.is(code, 0, `the workload ran to its stop without an error: ${w.lines.slice(-3).join(' | ')}`)
    await caughtUp(p, sec2)
    await assertConverged(p, sec2, 'after the Secondary\'s kill -9 and restart')
    const s = await sec2.status()
    assert.is(s.consistent, true)
    assert.is(s.appliedSeq, lastSeq(await p.status() as PrimaryStatus))
    await p.stop()
    await sec2.stop()
  } finally {
    killWorkload(wl)
  }
}))

t('stop both cleanly, restart both: nothing re-applied, nothing lost, sequence numbers continue', isolated(120_000, async () => {
  const pair = await startPair({ srlSize: SRL })
  const p = pair.primary
  const sec = pair.secondary
  await fsp.mkdir(path.join(p.mount, 'w'))
  const wl = startWorkload(path.join(p.mount, 'w'), path.join(p.root, 'stop-3'), { nfiles: NFILES, chunk: CHUNK, maxChunks: 150 })
  const code = await withDeadline(wl.exited, 60_000, 'the workload to finish 150 chunks')
  assert.is(code, 0, wl.lines.slice(-3).join(' | '))
  await caughtUp(p, sec)
  const srlId = ((await p.status()) as PrimaryStatus).srlId
  const s0 = await sec.status()
  const listen = s0.listen
  const last0 = lastSeq(await p.status() as PrimaryStatus)
  assert.is(s0.appliedSeq, last0)
  const secBefore = await snapshotTree(sec.data)
  await pair.stop()

  const sec2 = await startSecondary({ dirs: dirsOf(sec), srlSize: SRL, listen, secretFile: sec.secretFile })
  const p2 = await startPrimary({ dirs: dirsOf(p), srlSize: SRL, extraArgs: primaryExtra(pair) })
  await waitFor(async () => ((await p2.status()) as PrimaryStatus).rlinks[0].state === 'connected', {
    timeoutMs: 30_000, what: 'the restarted pair to connect', intervalMs: 100
  }).catch(async (err: Error) => { throw new Error(err.message + await logs(p2, sec2)) })
  await caughtUp(p2, sec2)
  const ps = await p2.status() as PrimaryStatus
  const s1 = await sec2.status()
  assert.is(ps.srlId, srlId, 'same SRL identity after a clean restart')
  assert.is(s1.primary.srlId, srlId)
  assert.is(lastSeq(ps), last0, 'the restarted Primary logged nothing by itself')
  assert.is(s1.appliedSeq, s0.appliedSeq, 'the Secondary\'s appliedSeq is where it stopped (nothing lost, nothing re-counted)')
  assert.is(s1.receivedSeq, s0.receivedSeq)
  assert.is(s1.consistent, true)
  // Nothing was re-applied: applying anything changes an inode's ctime, which nothing can set back.
  const secAfter = await snapshotTree(sec2.data)
  assert.equal(ctimeChanges(secBefore, secAfter), [], 'no path in the Secondary\'s data directory was touched by the restart')
  assertNoDiffs(diffSnapshots(secBefore, secAfter, { a: 'before the restart', b: 'after the restart', mtime: 'ns' }), 'the Secondary\'s tree across a clean restart')

  // new updates continue the sequence and replicate
  await fsp.writeFile(path.join(p2.mount, 'w', 'after-restart'), 'next')
  await fsp.rename(path.join(p2.mount, 'w', 'c'), path.join(p2.mount, 'w', 'c-renamed'))
  await caughtUp(p2, sec2)
  const s2 = await sec2.status()
  const last2 = lastSeq(await p2.status() as PrimaryStatus)
  assert.ok(last2 > last0, `the Primary's sequence continues (${last0} -> ${last2})`)
  assert.is(s2.appliedSeq, last2, 'the Secondary applied the new updates')
  await assertConverged(p2, sec2, 'after a clean restart of both and more updates')
  await p2.stop()
  await sec2.stop()
}))

t('kill -9 between a queued write\'s reservation (which moves the file\'s mtime) and its append: the restart logs that mtime; the trees converge, mtimes too', isolated(120_000, async () => {
  const sec = await startSecondary({ srlSize: SRL })
  const pdirs = await tmpdirs('pri')
  const extra = ['--secondary', sec.address, '--secret-file', sec.secretFile]
  const p = await startPrimary({ dirs: pdirs, srlSize: SRL, extraArgs: extra, env: { ...process.env, REPLICAFS_CRASH_AT: 'write-reserved' } })
  await fsp.mkdir(path.join(p.mount, 'w'))
  for (let i = 0; i < 25; i++) await fsp.writeFile(path.join(p.mount, 'w', `f${i}`), `small ${i}\n`) // applied before the reply: no reservation
  await caughtUp(p, sec)
  // A 64 KiB write is queued: named in the data cursor's tail, reserved (fallocate: the mtime
  // moves), and the daemon dies before the append.
  const fh = await fsp.open(path.join(p.mount, 'w', 'f0'), 'r+')
  const failed = await fh.write(Buffer.alloc(64 * 1024, 7), 0, 64 * 1024, 0).then(() => null, (err: Error) => err)
  await fh.close().catch(() => {})
  assert.ok(failed !== null, 'the write failed: its daemon died before the reply')
  await waitFor(() => pidsWithArg(p.state).length === 0, { timeoutMs: 20_000, what: 'the Primary to be gone (REPLICAFS_CRASH_AT=write-reserved)' })
  const [pm, sm] = await Promise.all([fsp.stat(path.join(p.data, 'w', 'f0'), { bigint: true }), fsp.stat(path.join(sec.data, 'w', 'f0'), { bigint: true })])
  assert.is((await fsp.readFile(path.join(p.data, 'w', 'f0'))).toString(), 'small 0\n', 'the write\'s bytes never reached the file')
  assert.ok(pm.mtimeNs !== sm.mtimeNs, `the premise: the reservation moved the Primary's mtime (${pm.mtimeNs} vs the Secondary's ${sm.mtimeNs})`)

  const p2 = await startPrimary({ dirs: pdirs, srlSize: SRL, extraArgs: extra })
  await caughtUp(p2, sec)
  const [a, b] = await Promise.all([snapshotTree(p2.data), snapshotTree(sec.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after the restart')
  assert.match(await p2.log(), /stopped between its reservation and its append: logged the mtime/)
  await p2.stop()
  await sec.stop()
}))

t('kill -9 between a new entry\'s making (the Primary makes it before it logs it, to give it ctime = mtime) and its append: the restart puts it back from the data cursor; the trees converge, mtimes too', isolated(120_000, async () => {
  const sec = await startSecondary({ srlSize: SRL })
  const pdirs = await tmpdirs('pri')
  const extra = ['--secondary', sec.address, '--secret-file', sec.secretFile]
  const p = await startPrimary({ dirs: pdirs, srlSize: SRL, extraArgs: extra, env: { ...process.env, REPLICAFS_CRASH_AT: 'new-entry-made' } })
  const failed = await fsp.mkdir(path.join(p.mount, 'made')).then(() => null, (err: Error) => err)
  assert.ok(failed !== null, 'the mkdir failed: its daemon died before the reply')
  await waitFor(() => pidsWithArg(p.state).length === 0, { timeoutMs: 20_000, what: 'the Primary to be gone (REPLICAFS_CRASH_AT=new-entry-made)' })
  const made = await fsp.stat(path.join(p.data, 'made'), { bigint: true })
  assert.is(made.ctimeNs, made.mtimeNs, 'the premise: the directory was made, with ctime = mtime, and not logged')

  const p2 = await startPrimary({ dirs: pdirs, srlSize: SRL, extraArgs: extra })
  assert.match(await p2.log(), /put back 1 records/)
  await caughtUp(p2, sec)
  const [a, b] = await Promise.all([snapshotTree(p2.data), snapshotTree(sec.data)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after the restart: the record put back carries the times the directory got')
  await fsp.writeFile(path.join(p2.mount, 'made', 'after'), 'next') // the directory is usable, and what follows replicates
  await caughtUp(p2, sec)
  assert.is((await fsp.readFile(path.join(sec.data, 'made', 'after'))).toString(), 'next')
  await p2.stop()
  await sec.stop()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
