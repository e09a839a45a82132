/**
 * `replicafs failback` (issue 13; README "Role transfer"): the old Primary, taken over, becomes the
 * new Primary's Secondary in place. Its updates that never reached the new Primary are kept in the
 * snapshot failback-<generation>; it dials the new Primary's listener (the TCP direction stays: the
 * new Primary listens where its Secondary listened), and is resynchronized by difference of only
 * the paths either side changed since the takeover — the bytes sent are checked against the tree
 * size. Then ordered replication goes on the other way. Bad input (failback on a Primary that was
 * not taken over, on the new Primary) is one line, a non-zero exit and nothing changed; a kill -9
 * at each step of a failback leaves a state its usual command completes.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startPrimary, cli, status, waitFor, timed, cleanupAll, assertCleanSlate, assertOneLineError,
  describeFailure, daemonLog, processAlive, processGone, diffTrees, exec, secondaryArgs, registerMount, registerState,
  type Pair, type Primary, type Status
} from './helpers'
import { startProxy, closeAllProxies, type Proxy } from './helpers/proxy'

const t = suite('failback')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`failback.test: cleanup had to force: ${forced.join('; ')}`)
})

interface SyncFigures { bytes: number, entries: number, differing: number, mode: string }
interface Link { secondary: string, state: string, consistent: boolean, dataAckedSeq: number, dcm: { paths: number } | null, sync: SyncFigures | null, lastSync: SyncFigures | null, splitBrain: SplitBrain | null }
interface SplitBrain { at: number, conflicting: string[], conflicts: number | null, ours: number | null, theirs: number | null }
interface RoleStatus extends Status {
  generation: { id: string, since: number } | null
  takenOver: { by: string, at: number, peer: string, orphaned: number, splitBrain: SplitBrain | null } | null
  tookOver: { at: number, generation: string } | null
  refusing: string | null
  listen: string | null
  connected?: boolean
  consistent?: boolean
  rlinks?: Link[]
  dial?: { address: string, name: string } | null
  failback?: { from: string, by: string, at: number, paths: number | null, snapshot: string } | null
}

async function roleStatus (state: string): Promise<RoleStatus> { return await status(state) as RoleStatus }

interface FailbackResult { role: string, primary: string, generation: string, previous: string, seq: number, orphaned: number, paths: number | null, snapshot: string, already?: string }

async function sh (cwd: string, script: string): Promise<{ code: number | null, stderr: string }> {
  const r = await exec('sh', ['-c', script], { cwd, timeoutMs: 60_000 })
  return { code: r.code, stderr: r.stderr }
}

const FILES = 60
const FILE_BYTES = 256 * 1024

/** A pair with a tree of FILES files (15 MiB), replicated (the Primary dialling through `via`, if given). */
async function pairWithTree (via?: (address: string) => Promise<string>): Promise<Pair> {
  const p = await startPair(via !== undefined ? { via } : {})
  await fsp.mkdir(path.join(p.primary.mount, 'tree'))
  for (let i = 0; i < FILES; i++) await fsp.writeFile(path.join(p.primary.mount, 'tree', `f${i}.bin`), Buffer.alloc(FILE_BYTES, i))
  await fsp.writeFile(path.join(p.primary.mount, 'shared.txt'), 'before the takeover\n')
  await p.caughtUp()
  return p
}

/**
 * The Primary logs updates that never reach the Secondary (replication paused), is killed, and the
 * Secondary takes over; the new Primary changes a few paths; the old Primary, back with its usual
 * command, learns it was taken over. `env`: the old Primary's environment (crash points).
 */
async function takenOverPair (p: Pair, env?: NodeJS.ProcessEnv): Promise<{ old: Primary, orphaned: number, at: number }> {
  const pause = await cli(['pause', '--state', p.primary.state])
  assert.is(pause.code, 0, describeFailure(pause))
  const m = p.primary.mount
  // Orphans: a new file and directory, a changed file, a removed one, a rename, and the file the
  // new Primary changes too (a conflict: the new Primary's version wins, the old one is kept in the snapshot).
  const w = await sh(m, 'echo orphan > orphan.txt && mkdir orphan-dir && echo inner > orphan-dir/x && ' +
    'printf OLD | dd of=tree/f1.bin bs=1 seek=1000 conv=notrunc 2>/dev/null && rm tree/f2.bin && mv tree/f3.bin tree/f3-moved.bin && ' +
    'echo "old Primary after the cut" > shared.txt')
  assert.is(w.code, 0, w.stderr)
  const before = await roleStatus(p.primary.state)
  const acked = before.rlinks![0].dataAckedSeq
  const orphaned = before.srl!.newestSeq! - acked
  assert.ok(orphaned >= 6, `updates logged on the old Primary that never reached the Secondary: ${orphaned}`)
  await p.primary.kill9()
  await exec('umount', ['-l', p.primary.mount])
  await waitFor(async () => (await roleStatus(p.secondary.state)).connected === false, { timeoutMs: 60_000, what: 'the Secondary to see its Primary gone' })
  const tk = await cli(['takeover', '--state', p.secondary.state, '--json'], { timeoutMs: 120_000 })
  assert.is(tk.code, 0, `${describeFailure(tk)}\n${await daemonLog(p.secondary.state)}`)
  const at = (JSON.parse(tk.stdout) as { seq: number }).seq
  assert.is(at, acked, 'the new Primary has what the old one sent')
  const nw = p.secondary.mount
  const w2 = await sh(nw, 'echo "new Primary" > new-on-new.txt && rm tree/f10.bin && printf NEW | dd of=tree/f11.bin bs=1 seek=5000 conv=notrunc 2>/dev/null && ' +
    'echo "new Primary after the takeover" > shared.txt')
  assert.is(w2.code, 0, w2.stderr)
  const ns = await roleStatus(p.secondary.state)
  const join = ns.rlinks!.find((l) => l.secondary.startsWith('join:'))
  assert.ok(join !== undefined && join.dcm !== null, `the new Primary keeps a change map for the host it took over from: ${JSON.stringify(ns.rlinks)}`)
  // The old Primary, back with its usual command (its RLINK paused: resumed by hand), learns it.
  const old = await startPrimary({ dirs: p.primary, extraArgs: ['--secondary', p.target, '--secret-file', p.secondary.secretFile], env })
  p.primary = old
  const resume = await cli(['resume', '--state', old.state])
  assert.is(resume.code, 0, describeFailure(resume))
  await waitFor(async () => (await roleStatus(old.state)).takenOver !== null, { timeoutMs: 60_000, what: 'the old Primary to learn it was taken over' })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- old ---\n${await daemonLog(old.state)}\n--- new ---\n${await daemonLog(p.secondary.state)}`) })
  return { old, orphaned, at }
}

/** Waits until the failed-back host is resynchronized and has every update of the new Primary. */
async function resynchronized (p: Pair): Promise<RoleStatus> {
  return await waitFor(async () => {
    const ns = await roleStatus(p.secondary.state)
    const os = await roleStatus(p.primary.state)
    const l = ns.rlinks!.find((x) => x.secondary.startsWith('join:'))
    if (os.role !== 'secondary' || os.failback !== null || os.consistent !== true || l === undefined || !l.consistent) return null
    return l.dataAckedSeq >= ns.srl!.newestSeq! ? ns : null
  }, { timeoutMs: 120_000, what: 'the failed-back host to be resynchronized and caught up' })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- old ---\n${await daemonLog(p.primary.state)}\n--- new ---\n${await daemonLog(p.secondary.state)}`) })
}

async function stopBoth (p: Pair): Promise<void> {
  for (const state of [p.primary.state, p.secondary.state]) {
    const st = await roleStatus(state)
    const q = await cli(['stop', '--state', state], { timeoutMs: 60_000 })
    assert.is(q.code, 0, describeFailure(q))
    await waitFor(() => !processAlive(st.pid), { timeoutMs: 30_000, what: `pid ${st.pid} to exit` })
  }
}

let pair: Pair | null = null

t('failback: the old Primary becomes the new Primary\'s Secondary; orphans kept in a snapshot; only the changed paths travel', timed(300_000, async () => {
  pair = await pairWithTree()
  const p = pair
  const onPrimary = await cli(['failback', '--state', p.primary.state])
  assertOneLineError(onPrimary, [/failback runs on a Primary another host took over from/, /nothing changed/])
  const onSecondary = await cli(['failback', '--state', p.secondary.state])
  assertOneLineError(onSecondary, [/failback runs on a Primary another host took over from/])
  assert.is((await roleStatus(p.primary.state)).role, 'primary', 'nothing changed')

  const { old, orphaned, at } = await takenOverPair(p)
  const oldGen = (await roleStatus(old.state)).generation!.id
  const onNew = await cli(['failback', '--state', p.secondary.state])
  assertOneLineError(onNew, [/no host has taken over from it/])

  // Split-brain: shared.txt changed on both sides since the takeover. Both say so; failback needs
  // the explicit --discard-local (nothing is merged).
  const sb = (await roleStatus(old.state)).takenOver!.splitBrain
  assert.ok(sb !== null && sb.conflicts === 1 && sb.conflicting.length === 1 && /shared\.txt$/.test(sb.conflicting[0]), `the old Primary lists the conflicts: ${JSON.stringify(sb)}`)
  assert.ok(sb.ours !== null && sb.ours >= 6 && sb.theirs !== null && sb.theirs >= 3, JSON.stringify(sb))
  const nsb = (await roleStatus(p.secondary.state)).rlinks!.find((x) => x.secondary.startsWith('join:'))!.splitBrain
  assert.ok(nsb !== null && nsb.conflicts === 1 && /shared\.txt$/.test(nsb.conflicting[0]), `the new Primary lists them too: ${JSON.stringify(nsb)}`)
  assert.match((await cli(['status', '--state', old.state])).stdout, /SPLIT-BRAIN: +1 paths changed on both sides/)
  assert.match((await cli(['status', '--state', p.secondary.state])).stdout, /SPLIT-BRAIN with the host taken over/)
  const plain = await cli(['failback', '--state', old.state])
  assertOneLineError(plain, [/split-brain/, /shared\.txt/, /--discard-local/, /nothing changed/])
  assert.is((await roleStatus(old.state)).role, 'primary', 'nothing changed')

  const r = await cli(['failback', '--state', old.state, '--discard-local', '--json'], { timeoutMs: 120_000 })
  assert.is(r.code, 0, `${describeFailure(r)}\n${await daemonLog(old.state)}`)
  const res = JSON.parse(r.stdout) as FailbackResult
  assert.is(res.role, 'secondary')
  assert.is(res.seq, at)
  assert.is(res.orphaned, orphaned, 'it reports the updates that never reached the new Primary')
  assert.is(res.previous, oldGen)
  assert.is(res.snapshot, `failback-${oldGen.slice(0, 8)}`)
  assert.ok(res.paths !== null && res.paths >= 6 && res.paths < 20, `the paths it changed: ${String(res.paths)}`)

  const ns = await resynchronized(p)
  const os = await roleStatus(old.state)
  assert.is(os.pid, old.pid, 'the same daemon: it did not restart')
  assert.is(os.generation!.id, ns.generation!.id, 'it follows the new generation')
  assert.equal(os.dial, { address: p.secondary.address, name: oldGen })
  const diffs = await diffTrees(p.secondary.data, old.data)
  assert.equal(diffs, [], `the trees are identical: ${diffs.join('; ')}`)
  assert.is(await fsp.readFile(path.join(old.mount, 'shared.txt'), 'utf8'), 'new Primary after the takeover\n', 'the new Primary\'s version wins')
  assert.not.ok(fs.existsSync(path.join(old.data, 'orphan.txt')))

  // Proportional: what the resynchronization sent is a small part of the tree.
  const l = ns.rlinks!.find((x) => x.secondary.startsWith('join:'))!
  const tree = FILES * FILE_BYTES
  assert.ok(l.lastSync !== null && l.lastSync.bytes < tree / 10, `bytes sent ${l.lastSync?.bytes ?? '?'} against a tree of ${tree}`)
  assert.match(await daemonLog(p.secondary.state), /failed-back Secondary changed \d+ paths/)
  assert.is(l.splitBrain, null, 'resolved')

  // The orphans, kept and readable, in the snapshot named after the generation.
  const snap = path.join(old.mount, '.snapshots', res.snapshot)
  assert.is(await fsp.readFile(path.join(snap, 'orphan.txt'), 'utf8'), 'orphan\n')
  assert.is(await fsp.readFile(path.join(snap, 'orphan-dir', 'x'), 'utf8'), 'inner\n')
  assert.is(await fsp.readFile(path.join(snap, 'shared.txt'), 'utf8'), 'old Primary after the cut\n')
  assert.ok(fs.existsSync(path.join(snap, 'tree', 'f3-moved.bin')) && !fs.existsSync(path.join(snap, 'tree', 'f2.bin')))
  assert.ok(fs.existsSync(path.join(old.state, `srl.failback-${oldGen.slice(0, 8)}`)), 'its old SRL is kept')

  // Its mount is read-only; the new Primary's writes reach it, in order.
  const w = await sh(old.mount, 'echo x > nope.txt')
  assert.ok(w.code !== 0 && /Read-only file system/.test(w.stderr), `a write on the failed-back host: ${w.stderr}`)
  const w2 = await sh(p.secondary.mount, 'echo after > after-failback.txt && mkdir -p later && mv after-failback.txt later/')
  assert.is(w2.code, 0, w2.stderr)
  await resynchronized(p)
  assert.is(await fsp.readFile(path.join(old.mount, 'later', 'after-failback.txt'), 'utf8'), 'after\n')

  // Re-run: done already. Its usual command starts it as that Secondary.
  const again = await cli(['failback', '--state', old.state, '--json'])
  assert.is(again.code, 0, describeFailure(again))
  assert.ok((JSON.parse(again.stdout) as FailbackResult).already !== undefined, again.stdout)
  await old.stop()
  const back = await startPrimary({ dirs: p.primary, extraArgs: ['--secondary', p.target, '--secret-file', p.secondary.secretFile] })
  p.primary = back
  assert.is((await roleStatus(back.state)).role, 'secondary')
  assert.match(await daemonLog(back.state), /became a Secondary by failback/)
  await sh(p.secondary.mount, 'echo restarted > restarted.txt')
  await resynchronized(p)
  assert.is(await fsp.readFile(path.join(back.mount, 'restarted.txt'), 'utf8'), 'restarted\n')
  assert.equal(await diffTrees(p.secondary.data, back.data), [])
  await stopBoth(p)
  pair = null
  await assertCleanSlate()
}))

/**
 * kill -9 at each step of a failback (REPLICAFS_CRASH_AT): the daemon dies mid-request; its usual
 * command starts it again as the taken-over Primary (before the intent was written: failback
 * re-run completes) or finishes the change and starts it as the Secondary.
 */
async function crashDuringFailback (point: 'failback-snapshot' | 'failback-recorded' | 'failback-converted'): Promise<void> {
  const p = await pairWithTree()
  pair = p
  const { old } = await takenOverPair(p, { ...process.env, REPLICAFS_CRASH_AT: point })
  const crashed = await cli(['failback', '--state', old.state, '--discard-local'], { timeoutMs: 60_000 })
  assert.ok(crashed.code !== 0, `the failback did not complete (killed at ${point}): ${describeFailure(crashed)}`)
  await waitFor(() => processGone(old.pid), { timeoutMs: 30_000, what: `the daemon to die at ${point}` })
  await exec('umount', ['-l', old.mount])
  const again = await startPrimary({ dirs: p.primary, extraArgs: ['--secondary', p.target, '--secret-file', p.secondary.secretFile] })
  p.primary = again
  const s = await roleStatus(again.state)
  assert.is(s.role, point === 'failback-snapshot' ? 'primary' : 'secondary', `after a kill -9 at ${point}`)
  const r = await cli(['failback', '--state', again.state, '--discard-local', '--json'], { timeoutMs: 120_000 })
  assert.is(r.code, 0, `${describeFailure(r)}\n${await daemonLog(again.state)}`)
  assert.is((JSON.parse(r.stdout) as FailbackResult).already !== undefined, point !== 'failback-snapshot', r.stdout)
  await resynchronized(p)
  assert.equal(await diffTrees(p.secondary.data, again.data), [])
  const snap = (JSON.parse(r.stdout) as FailbackResult).snapshot
  assert.is(await fsp.readFile(path.join(again.mount, '.snapshots', snap, 'orphan.txt'), 'utf8'), 'orphan\n')
  await stopBoth(p)
  pair = null
}

/**
 * kill -9 of each side while the resynchronization runs: the pair dials through a proxy that
 * stalls once 2 MiB of it went down (the new Primary changed 10 MiB since the takeover). The
 * failed-back host is killed, started again with its usual command; the resynchronization goes on
 * and stalls again; then the new Primary is killed and started again with its usual command. It
 * goes on and ends identical.
 */
t('kill -9 of either side during the resynchronization: their usual commands go on with it', timed(300_000, async () => {
  let proxy: Proxy | null = null
  const p = await pairWithTree(async (addr) => { proxy = await startProxy(addr); return proxy.address })
  pair = p
  const px = proxy!
  const { old } = await takenOverPair(p)
  // 10 MiB changed on the new Primary since the takeover: what the resynchronization sends.
  for (let i = 20; i < 60; i++) await fsp.writeFile(path.join(p.secondary.mount, 'tree', `f${i}.bin`), Buffer.alloc(FILE_BYTES, 200 + (i % 50)))
  px.stallAfterDown(2 * 1024 * 1024)
  const r = await cli(['failback', '--state', old.state, '--discard-local', '--json'], { timeoutMs: 120_000 })
  assert.is(r.code, 0, `${describeFailure(r)}\n${await daemonLog(old.state)}`)
  const stalled = async (): Promise<void> => {
    await waitFor(() => px.stalled, { timeoutMs: 60_000, what: '2 MiB of the resynchronization to pass the proxy, and the proxy to stall', intervalMs: 5 })
    const mid = (await roleStatus(p.secondary.state)).rlinks!.find((x) => x.secondary.startsWith('join:'))!
    assert.ok(mid.sync !== null, `the resynchronization is running: ${JSON.stringify(mid)}`)
  }
  await stalled()
  // The failed-back host dies mid-way; its usual `replicafs primary` starts the Secondary it became.
  await old.kill9()
  await exec('umount', ['-l', old.mount])
  px.stallAfterDown(2 * 1024 * 1024)
  px.unstall()
  p.primary = await startPrimary({ dirs: p.primary, extraArgs: ['--secondary', p.target, '--secret-file', p.secondary.secretFile] })
  assert.is((await roleStatus(p.primary.state)).role, 'secondary')
  await stalled()
  // Then the new Primary; its usual `replicafs secondary` starts the Primary it became.
  const sec = p.secondary
  const pid = (await roleStatus(sec.state)).pid
  process.kill(pid, 'SIGKILL')
  await waitFor(() => processGone(pid), { timeoutMs: 30_000, what: 'the new Primary to die' })
  await exec('umount', ['-l', sec.mount])
  px.unstall()
  registerMount(sec.mount)
  registerState(sec.state)
  const st = await cli(secondaryArgs(sec, sec.secretFile, { listen: sec.address }), { timeoutMs: 90_000 })
  assert.is(st.code, 0, `${describeFailure(st)}\n${await daemonLog(sec.state)}`)
  assert.is((await roleStatus(sec.state)).role, 'primary')
  await resynchronized(p)
  assert.equal(await diffTrees(p.secondary.data, p.primary.data), [], 'identical after the resynchronization was cut twice by a kill -9')
  const snap = (JSON.parse(r.stdout) as FailbackResult).snapshot
  assert.is(await fsp.readFile(path.join(p.primary.mount, '.snapshots', snap, 'orphan.txt'), 'utf8'), 'orphan\n')
  await stopBoth(p)
  pair = null
  await assertCleanSlate()
}))

t('kill -9 after the snapshot, before the intent: restarted, still taken over; failback re-run completes', timed(300_000, async () => {
  await crashDuringFailback('failback-snapshot')
  await assertCleanSlate()
}))

t('kill -9 after the intent, before the SRL moved: its usual command finishes the change and starts the Secondary', timed(300_000, async () => {
  await crashDuringFailback('failback-recorded')
  await assertCleanSlate()
}))

t.run()
