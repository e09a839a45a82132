/**
 * `replicafs takeover` (issue 13; README "Role transfer"): a Secondary whose Primary is lost
 * becomes the Primary in place — every update logged in its SRL applied first (also those held
 * behind a frozen IBC message), a new data generation recorded, its mount read-write, listening
 * where it listened. The old Primary, started again with its usual command, hears from the new
 * one that it was taken over: it refuses every change (EROFS), says so in status and its log, and
 * keeps refusing after a restart. The taken-over state directory starts as the Primary from its
 * usual `replicafs secondary` command. Bad input (takeover on a Primary, while the Primary is
 * connected) is one line, a non-zero exit and nothing changed.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startPrimary, cli, secondaryArgs, status, waitFor, timed, cleanupAll, assertCleanSlate, assertOneLineError,
  describeFailure, daemonLog, processAlive, processGone, registerMount, registerState, fuseMountAt, exec, tmpdirs, secretFile,
  type Pair, type Primary, type Status
} from './helpers'
import { register, send, secStatus } from './helpers/ibc'

const t = suite('takeover')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`takeover.test: cleanup had to force: ${forced.join('; ')}`)
})

interface RoleStatus extends Status {
  generation: { id: string, since: number } | null
  takenOver: { by: string, at: number, peer: string, seen: string, orphaned: number } | null
  tookOver: { at: number, applied: number, from: string | null, generation: string, time: string } | null
  refusing: string | null
  listen: string | null
  connected?: boolean
}

async function roleStatus (state: string): Promise<RoleStatus> { return await status(state) as RoleStatus }

interface TakeoverResult { role: string, generation: string, previous: string | null, seq: number, applied: number, discarded: number }

async function takeover (state: string): Promise<TakeoverResult> {
  const r = await cli(['takeover', '--state', state, '--json'], { timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`takeover failed: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(state)}`)
  return JSON.parse(r.stdout) as TakeoverResult
}

/** Whether the mount at `dir` is mounted read-only (its per-mount flags in /proc/self/mountinfo). */
async function mountedReadOnly (dir: string): Promise<boolean> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8')
  const line = info.split('\n').find((l) => l.split(' ')[4] === dir)
  if (line === undefined) throw new Error(`${dir} is not in /proc/self/mountinfo`)
  return line.split(' ')[5].split(',').includes('ro')
}

/** A shell command on a mount: its exit code and stderr. */
async function sh (cwd: string, script: string): Promise<{ code: number | null, stderr: string }> {
  const r = await exec('sh', ['-c', script], { cwd, timeoutMs: 60_000 })
  return { code: r.code, stderr: r.stderr }
}

/** Starts the old Primary again with its usual command (the RLINK to the old Secondary's address). */
async function restartOldPrimary (pair: Pair): Promise<Primary> {
  return await startPrimary({ dirs: pair.primary, extraArgs: ['--secondary', pair.target, '--secret-file', pair.secondary.secretFile] })
}

let pair: Pair | null = null

t('takeover: refused on a Primary and while the Primary is connected; nothing changes', timed(120_000, async () => {
  pair = await startPair()
  const p = pair
  await fsp.writeFile(path.join(p.primary.mount, 'a.txt'), 'first\n')
  await fsp.mkdir(path.join(p.primary.mount, 'dir'))
  await fsp.writeFile(path.join(p.primary.mount, 'dir', 'b.bin'), Buffer.alloc(100_000, 7))
  await p.caughtUp()
  await waitFor(async () => (await roleStatus(p.secondary.state)).connected === true, { timeoutMs: 30_000, what: 'the Secondary to report its Primary connected' })

  const onPrimary = await cli(['takeover', '--state', p.primary.state])
  assertOneLineError(onPrimary, [/takeover runs on a Secondary/, /Primary/])
  const whileConnected = await cli(['takeover', '--state', p.secondary.state])
  assertOneLineError(whileConnected, [/connected/, /lost/])

  const s = await roleStatus(p.secondary.state)
  assert.is(s.role, 'secondary', 'still a Secondary after a refused takeover')
  assert.is(await mountedReadOnly(p.secondary.mount), true, 'its mount is still read-only')
  const pr = await roleStatus(p.primary.state)
  assert.is(pr.role, 'primary')
  assert.ok(pr.generation !== null && s.generation !== null && pr.generation.id === s.generation.id, `the Secondary follows the Primary's generation: ${JSON.stringify(pr.generation)} / ${JSON.stringify(s.generation)}`)
  assert.is(pr.takenOver, null)
  // Replication goes on.
  await fsp.writeFile(path.join(p.primary.mount, 'after-refusals.txt'), 'still replicating\n')
  await p.caughtUp()
  assert.is(await fsp.readFile(path.join(p.secondary.mount, 'after-refusals.txt'), 'utf8'), 'still replicating\n')
}))

t('takeover after kill -9 of the Primary: updates held behind a frozen IBC message are applied first; the mount turns read-write', timed(180_000, async () => {
  const p = pair!
  // Freeze the Secondary at an IBC message: what follows it is logged there but not applied.
  await register(p.secondary.state, 'backup')
  await register(p.primary.state, 'backup')
  await send(p.primary.state, 'backup', 'checkpoint')
  await waitFor(async () => (await secStatus(p.secondary.state)).frozen, { timeoutMs: 30_000, what: 'the Secondary to freeze at the IBC message' })
  for (let i = 0; i < 5; i++) await fsp.writeFile(path.join(p.primary.mount, `held-${i}.txt`), `held ${i}\n`)
  await fsp.rm(path.join(p.primary.mount, 'a.txt'))
  const pst = await roleStatus(p.primary.state)
  const last = pst.srl!.newestSeq!
  await waitFor(async () => (await roleStatus(p.secondary.state)).srl!.newestSeq === last, { timeoutMs: 30_000, what: `the Secondary to log everything up to ${last}` })
  const before = await roleStatus(p.secondary.state)
  assert.ok(before.srl!.appliedSeq < last, `frozen: applied ${before.srl!.appliedSeq} < logged ${last}`)
  assert.not.ok(fs.existsSync(path.join(p.secondary.data, 'held-0.txt')), 'the held updates are not applied yet')
  const oldGeneration = before.generation!.id

  await p.primary.kill9()
  await waitFor(async () => (await roleStatus(p.secondary.state)).connected === false, { timeoutMs: 60_000, what: 'the Secondary to see its Primary gone' })

  const r = await takeover(p.secondary.state)
  assert.is(r.role, 'primary')
  assert.is(r.seq, last, 'the data is as of the last logged update')
  assert.is(r.applied, last - before.srl!.appliedSeq, 'it reports how many logged updates it applied first')
  assert.is(r.discarded, 0)
  assert.is(r.previous, oldGeneration)
  assert.ok(r.generation !== oldGeneration, 'a new generation')

  const s = await roleStatus(p.secondary.state)
  assert.is(s.role, 'primary', 'status shows the new role')
  assert.is(s.pid, before.pid, 'the same daemon: it did not restart')
  assert.equal(s.generation, { id: r.generation, since: last })
  assert.ok(s.tookOver !== null && s.tookOver.at === last && s.tookOver.from === oldGeneration, JSON.stringify(s.tookOver))
  assert.is(s.listen, p.secondary.address, 'it listens where the Secondary listened')
  for (let i = 0; i < 5; i++) assert.is(await fsp.readFile(path.join(p.secondary.mount, `held-${i}.txt`), 'utf8'), `held ${i}\n`)
  assert.not.ok(fs.existsSync(path.join(p.secondary.mount, 'a.txt')), 'the logged delete was applied too')

  // The mount is read-write now, and journals.
  assert.is(await mountedReadOnly(p.secondary.mount), false, 'the mount is read-write after the takeover')
  const w = await sh(p.secondary.mount, 'echo "written on the new Primary" > new.txt && mkdir newdir && mv new.txt newdir/ && sync')
  assert.is(w.code, 0, `a write through the new Primary's mount: ${w.stderr}`)
  assert.is(await fsp.readFile(path.join(p.secondary.data, 'newdir', 'new.txt'), 'utf8'), 'written on the new Primary\n')
  const after = await roleStatus(p.secondary.state)
  assert.ok(after.srl!.newestSeq! >= last + 3, `the new Primary journals its changes after ${last}: ${JSON.stringify(after.srl)}`)
  const log = await daemonLog(p.secondary.state)
  assert.match(log, /takeover: this host is now the Primary/)
  assert.match(log, /IBC message .* a takeover applies every logged update/)
}))

t('the old Primary, started again with its usual command, learns it was taken over and refuses every change (EROFS), also after a restart', timed(180_000, async () => {
  const p = pair!
  const newPrimary = await roleStatus(p.secondary.state)
  const oldPrimary = await restartOldPrimary(p)
  p.primary = oldPrimary
  const s = await waitFor(async () => { const st = await roleStatus(oldPrimary.state); return st.takenOver !== null ? st : null },
    { timeoutMs: 60_000, what: 'the old Primary to learn it was taken over' })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- old Primary ---\n${await daemonLog(oldPrimary.state)}\n--- new Primary ---\n${await daemonLog(p.secondary.state)}`) })
  assert.is(s.takenOver!.by, newPrimary.generation!.id)
  assert.is(s.takenOver!.at, newPrimary.tookOver!.at)
  assert.match(s.refusing ?? '', /taken over/)
  const w = await sh(oldPrimary.mount, 'echo orphan > orphan.txt')
  assert.ok(w.code !== 0, 'a write through the taken-over Primary\'s mount fails')
  assert.match(w.stderr, /Read-only file system/)
  assert.is((await sh(oldPrimary.mount, 'mkdir d2')).code !== 0, true, 'mkdir fails too')
  assert.is((await sh(oldPrimary.mount, 'cat dir/b.bin > /dev/null')).code, 0, 'reads go on')
  assert.not.ok(fs.existsSync(path.join(oldPrimary.data, 'orphan.txt')))
  assert.match(await daemonLog(oldPrimary.state), /taken over: generation/)
  const text = await cli(['status', '--state', oldPrimary.state])
  assert.match(text.stdout, /TAKEN OVER:/)
  // The new Primary logged the refusal it sent.
  assert.match(await daemonLog(p.secondary.state), /took over from its generation/)

  // A restart keeps refusing, from the first instant (the takeover is in its LevelDB state).
  await oldPrimary.stop()
  const again = await startPrimary({ dirs: p.primary, extraArgs: ['--secret-file', p.secondary.secretFile] })
  p.primary = again
  const s2 = await roleStatus(again.state)
  assert.ok(s2.takenOver !== null, 'still taken over after a restart')
  const w2 = await sh(again.mount, 'echo orphan > orphan.txt')
  assert.match(w2.stderr, /Read-only file system/)
  const again2 = await cli(['takeover', '--state', again.state])
  assertOneLineError(again2, [/takeover runs on a Secondary/, /took over from/])
}))

t('the taken-over state directory starts as the Primary from its usual `replicafs secondary` command, also after a kill -9', timed(120_000, async () => {
  const p = pair!
  const sec = p.secondary
  const before = await roleStatus(sec.state)
  // kill -9 right after writes: the start replays the SRL of a former Secondary, now the Primary's.
  const w0 = await sh(sec.mount, 'for i in 1 2 3 4 5; do echo "burst $i" > burst-$i.txt; done; mv burst-1.txt burst-one.txt')
  assert.is(w0.code, 0, w0.stderr)
  process.kill(before.pid, 'SIGKILL')
  await waitFor(() => processGone(before.pid), { timeoutMs: 30_000, what: 'the new Primary to die' })
  registerMount(sec.mount)
  registerState(sec.state)
  const start = await cli(secondaryArgs(sec, sec.secretFile, { listen: sec.address }), { timeoutMs: 90_000 })
  assert.is(start.code, 0, `${describeFailure(start)}\n${await daemonLog(sec.state)}`)
  assert.ok(await fuseMountAt(sec.mount) !== undefined)
  const s = await roleStatus(sec.state)
  assert.is(s.role, 'primary')
  assert.is(s.generation!.id, before.generation!.id, 'the same generation')
  assert.is(await mountedReadOnly(sec.mount), false)
  assert.is(await fsp.readFile(path.join(sec.mount, 'newdir', 'new.txt'), 'utf8'), 'written on the new Primary\n')
  assert.is(await fsp.readFile(path.join(sec.mount, 'burst-one.txt'), 'utf8'), 'burst 1\n')
  assert.is(await fsp.readFile(path.join(sec.mount, 'burst-5.txt'), 'utf8'), 'burst 5\n')
  assert.not.ok(fs.existsSync(path.join(sec.mount, 'burst-1.txt')))
  const w = await sh(sec.mount, 'echo again > again.txt')
  assert.is(w.code, 0, w.stderr)
  assert.match(await daemonLog(sec.state), /became a Primary by takeover/)
  sec.pid = s.pid
  // Stop both by hand: the Secondary fixture's stop() is role-blind (replicafs stop).
  for (const state of [sec.state, p.primary.state]) {
    const st = await roleStatus(state)
    const q = await cli(['stop', '--state', state], { timeoutMs: 60_000 })
    assert.is(q.code, 0, describeFailure(q))
    await waitFor(() => !processAlive(st.pid), { timeoutMs: 30_000, what: `pid ${st.pid} to exit` })
  }
  pair = null
  await assertCleanSlate()
}))

/**
 * kill -9 at each step of a takeover (REPLICAFS_CRASH_AT, src/daemon/lifecycle.ts crashPoint): the
 * daemon dies mid-request; started again with its usual command it is the Secondary (before the
 * state batch) or the Primary (after it), and the same `takeover`, re-run, completes.
 */
async function crashDuringTakeover (point: 'takeover-applied' | 'takeover-recorded'): Promise<void> {
  const dirs = await tmpdirs('sec')
  registerMount(dirs.mount)
  registerState(dirs.state)
  const secret = await secretFile(dirs.root)
  const started = await cli(secondaryArgs(dirs, secret), { env: { ...process.env, REPLICAFS_CRASH_AT: point }, timeoutMs: 90_000 })
  assert.is(started.code, 0, describeFailure(started))
  const first = await roleStatus(dirs.state)
  const address = first.listen!
  const primary = await startPrimary({ extraArgs: ['--secondary', address, '--secret-file', secret] })
  for (let i = 0; i < 10; i++) await fsp.writeFile(path.join(primary.mount, `f${i}`), `file ${i}\n`)
  await fsp.rename(path.join(primary.mount, 'f0'), path.join(primary.mount, 'renamed'))
  const last = (await primary.status()).srl!.newestSeq!
  await waitFor(async () => (await roleStatus(dirs.state)).srl!.appliedSeq >= last, { timeoutMs: 30_000, what: `the Secondary to apply ${last}` })
  await primary.kill9()
  await exec('umount', ['-l', primary.mount])
  await waitFor(async () => (await roleStatus(dirs.state)).connected === false, { timeoutMs: 60_000, what: 'the Secondary to see its Primary gone' })

  const crashed = await cli(['takeover', '--state', dirs.state], { timeoutMs: 60_000 })
  assert.ok(crashed.code !== 0, `the takeover did not complete (the daemon was killed at ${point}): ${describeFailure(crashed)}`)
  await waitFor(() => processGone(first.pid), { timeoutMs: 30_000, what: `the daemon to die at ${point}` })
  assert.match(await daemonLog(dirs.state), /takeover: applied every logged update/)

  // Its usual command: a stale mount to clean, then a Secondary or the Primary.
  const again = await cli(secondaryArgs(dirs, secret, { listen: address }), { timeoutMs: 90_000 })
  assert.is(again.code, 0, `${describeFailure(again)}\n${await daemonLog(dirs.state)}`)
  const s = await roleStatus(dirs.state)
  assert.is(s.role, point === 'takeover-applied' ? 'secondary' : 'primary', `after a kill -9 at ${point}`)
  const r = await cli(['takeover', '--state', dirs.state, '--json'], { timeoutMs: 60_000 })
  assert.is(r.code, 0, `${describeFailure(r)}\n${await daemonLog(dirs.state)}`)
  const res = JSON.parse(r.stdout) as TakeoverResult & { already?: string }
  assert.is(res.seq, last, 'the data is as of the last logged update')
  assert.is(point === 'takeover-recorded', res.already !== undefined, `re-run after ${point}: ${r.stdout}`)
  const done = await roleStatus(dirs.state)
  assert.is(done.role, 'primary')
  assert.is(done.generation!.id, res.generation)
  assert.is(await mountedReadOnly(dirs.mount), false)
  assert.is(await fsp.readFile(path.join(dirs.mount, 'renamed'), 'utf8'), 'file 0\n')
  assert.is(await fsp.readFile(path.join(dirs.mount, 'f9'), 'utf8'), 'file 9\n')
  const w = await sh(dirs.mount, 'echo after > after.txt')
  assert.is(w.code, 0, w.stderr)
  const q = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
  assert.is(q.code, 0, describeFailure(q))
  await waitFor(() => !processAlive(done.pid), { timeoutMs: 30_000, what: 'the new Primary to exit' })
}

t('kill -9 after the takeover applied the log, before the state changed: restarted, a Secondary; takeover re-run completes', timed(180_000, async () => {
  await crashDuringTakeover('takeover-applied')
  await assertCleanSlate()
}))

t('kill -9 after the state says Primary, before it serves: restarted, the Primary; takeover re-run reports it done', timed(180_000, async () => {
  await crashDuringTakeover('takeover-recorded')
  await assertCleanSlate()
}))

t.run()
