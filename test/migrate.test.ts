/**
 * `replicafs migrate` (issue 13; README "Role transfer"): a planned switch with no data loss, run on
 * the Primary. Its mount refuses changes (EROFS) from the start, the Secondary data-acks every
 * update, then becomes the Primary of a new generation (its mount read-write) and the old Primary
 * its Secondary (read-only), both daemons in place; the side that dialled keeps dialling. Writes on
 * the new Primary reach the new Secondary in order; IBC messages and snapshots work the other way;
 * migrate again returns to the original roles with identical trees. Bad input (on a Secondary, with
 * the Secondary paused and behind) is one line, a non-zero exit and nothing changed. A kill -9 of
 * either daemon at the two moments that matter leaves a state from which migrate, re-run, completes.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startPrimary, cli, status, waitFor, timed, cleanupAll, assertCleanSlate, assertOneLineError,
  describeFailure, daemonLog, processAlive, processGone, diffTrees, exec, secondaryArgs, registerMount, registerState,
  type Pair, type Status
} from './helpers'
import { register, send, receive } from './helpers/ibc'

const t = suite('migrate')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`migrate.test: cleanup had to force: ${forced.join('; ')}`)
})

interface Link { secondary: string, state: string, consistent: boolean, dataAckedSeq: number }
interface RoleStatus extends Status {
  generation: { id: string, since: number } | null
  takenOver: { by: string, at: number } | null
  tookOver: { at: number, generation: string, migrated?: boolean } | null
  refusing: string | null
  listen: string | null
  connected?: boolean
  consistent?: boolean
  frozen?: boolean
  rlinks?: Link[]
  dial?: { address: string, name: string } | null
}

async function roleStatus (state: string): Promise<RoleStatus> { return await status(state) as RoleStatus }

interface MigrateResult { role: string, primary: string, generation: string, previous: string, seq: number, already?: string, migrated?: boolean }

async function migrate (state: string): Promise<MigrateResult> {
  const r = await cli(['migrate', '--state', state, '--json'], { timeoutMs: 180_000 })
  if (r.code !== 0) throw new Error(`migrate failed: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(state)}`)
  return JSON.parse(r.stdout) as MigrateResult
}

async function sh (cwd: string, script: string): Promise<{ code: number | null, stderr: string }> {
  const r = await exec('sh', ['-c', script], { cwd, timeoutMs: 60_000 })
  return { code: r.code, stderr: r.stderr }
}

/** Waits until the Primary at `primary` has every update data-acked by its one Secondary. */
async function caughtUp (primary: string, secondary: string): Promise<void> {
  await waitFor(async () => {
    const p = await roleStatus(primary)
    const l = p.rlinks?.[0]
    return p.role === 'primary' && l !== undefined && l.state === 'connected' && l.consistent && l.dataAckedSeq >= (p.srl!.newestSeq ?? p.srl!.appliedSeq)
  }, { timeoutMs: 60_000, what: 'the Secondary to data-ack every update' })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- Primary ---\n${await daemonLog(primary)}\n--- Secondary ---\n${await daemonLog(secondary)}`) })
}

async function stopBoth (a: string, b: string): Promise<void> {
  for (const state of [a, b]) {
    const st = await roleStatus(state)
    const q = await cli(['stop', '--state', state], { timeoutMs: 60_000 })
    assert.is(q.code, 0, describeFailure(q))
    await waitFor(() => !processAlive(st.pid), { timeoutMs: 30_000, what: `pid ${st.pid} to exit` })
  }
}

async function writeTree (mount: string): Promise<void> {
  await fsp.mkdir(path.join(mount, 'tree'), { recursive: true })
  for (let i = 0; i < 20; i++) await fsp.writeFile(path.join(mount, 'tree', `f${i}.txt`), `file ${i}\n`.repeat(100))
}

let pair: Pair | null = null

t('migrate: refused on a Secondary and with the Secondary paused and behind; nothing changes', timed(120_000, async () => {
  pair = await startPair()
  const p = pair
  await writeTree(p.primary.mount)
  await p.caughtUp()
  const onSecondary = await cli(['migrate', '--state', p.secondary.state])
  assertOneLineError(onSecondary, [/migrate runs on the Primary/, /nothing changed/])
  const pause = await cli(['pause', '--state', p.primary.state])
  assert.is(pause.code, 0, describeFailure(pause))
  await fsp.writeFile(path.join(p.primary.mount, 'while-paused.txt'), 'paused\n')
  const behind = await cli(['migrate', '--state', p.primary.state])
  assertOneLineError(behind, [/paused/, /[1-9]\d* updates .* behind/, /nothing changed/])
  const s = await roleStatus(p.primary.state)
  assert.is(s.role, 'primary')
  assert.is(s.refusing, null, 'it still takes changes')
  await fsp.writeFile(path.join(p.primary.mount, 'after-refusal.txt'), 'still the Primary\n')
  assert.is((await cli(['resume', '--state', p.primary.state])).code, 0)
  await p.caughtUp()
}))

t('migrate swaps the roles in place; writes, IBC and snapshots go the other way; migrate again returns with identical trees', timed(240_000, async () => {
  const p = pair!
  const A = p.primary
  const B = p.secondary
  const before = { a: await roleStatus(A.state), b: await roleStatus(B.state) }
  const r = await migrate(A.state)
  assert.is(r.role, 'secondary')
  assert.is(r.primary, p.target)
  assert.is(r.previous, before.a.generation!.id)
  const a = await roleStatus(A.state)
  const b = await roleStatus(B.state)
  assert.is(a.role, 'secondary', 'the old Primary is the Secondary')
  assert.is(b.role, 'primary', 'the old Secondary is the Primary')
  assert.is(a.pid, before.a.pid, 'neither daemon restarted')
  assert.is(b.pid, before.b.pid, 'neither daemon restarted')
  assert.is(b.generation!.id, r.generation)
  assert.is(b.generation!.since, r.seq)
  assert.ok(b.tookOver?.migrated === true, JSON.stringify(b.tookOver))
  assert.equal(a.dial, { address: p.target, name: before.a.generation!.id }, 'the side that dialled keeps dialling')
  assert.is(b.listen, B.address, 'the new Primary listens where it listened')
  assert.equal(await diffTrees(A.data, B.data), [], 'nothing lost')

  // The old Primary's mount refuses changes; the new one's takes them, and they reach the old one.
  const w = await sh(A.mount, 'echo x > refused.txt')
  assert.ok(w.code !== 0 && /Read-only file system/.test(w.stderr), `a write on the new Secondary: ${w.stderr}`)
  const w2 = await sh(B.mount, 'echo "on the new Primary" > new.txt && mkdir d && mv new.txt d/ && rm tree/f0.txt')
  assert.is(w2.code, 0, w2.stderr)
  await caughtUp(B.state, A.state)
  assert.is(await fsp.readFile(path.join(A.mount, 'd', 'new.txt'), 'utf8'), 'on the new Primary\n')
  assert.equal(await diffTrees(A.data, B.data), [])

  // IBC the other way: the new Secondary freezes at the message, and a snapshot of it is taken there.
  await register(A.state, 'backup')
  await register(B.state, 'backup')
  const sent = await send(B.state, 'backup', 'after migrate')
  const got = await receive(A.state, 'backup', 60)
  assert.is(got.id, sent.id)
  assert.is(got.message, 'after migrate')
  const snap = await cli(['snapshot', 'create', '--state', A.state, 'frozen-copy'])
  assert.is(snap.code, 0, describeFailure(snap))
  assert.is((await cli(['ibc', 'unfreeze', '--state', A.state, 'backup'])).code, 0)
  assert.is(await fsp.readFile(path.join(A.mount, '.snapshots', 'frozen-copy', 'd', 'new.txt'), 'utf8'), 'on the new Primary\n')
  await fsp.writeFile(path.join(B.mount, 'after-ibc.txt'), 'after\n')
  await caughtUp(B.state, A.state)

  // Migrate again, on the new Primary: the original roles, over the original TCP direction.
  const back = await migrate(B.state)
  assert.is(back.previous, r.generation)
  const a2 = await roleStatus(A.state)
  const b2 = await roleStatus(B.state)
  assert.is(a2.role, 'primary')
  assert.is(b2.role, 'secondary')
  assert.is(a2.pid, before.a.pid)
  assert.is(b2.pid, before.b.pid)
  assert.is(b2.dial ?? null, null, 'the original Secondary listens again')
  assert.is(a2.rlinks![0].secondary, p.target, 'the original Primary dials it again')
  const w3 = await sh(A.mount, 'echo back > back.txt')
  assert.is(w3.code, 0, w3.stderr)
  await caughtUp(A.state, B.state)
  assert.is(await fsp.readFile(path.join(B.mount, 'back.txt'), 'utf8'), 'back\n')
  assert.equal(await diffTrees(A.data, B.data), [], 'migrate twice: identical trees')
  assert.ok((await sh(B.mount, 'echo x > no.txt')).code !== 0, 'the Secondary is read-only again')
  const again = await cli(['migrate', '--state', B.state, '--json'])
  assert.is(again.code, 0, describeFailure(again))
  assert.ok((JSON.parse(again.stdout) as MigrateResult).already !== undefined, again.stdout)

  // Their usual commands start them in their new roles.
  await stopBoth(A.state, B.state)
  pair = null
  await assertCleanSlate()
}))

/**
 * kill -9 mid-migrate: of the old Primary once the Secondary answered (it is the Primary), or of
 * the Secondary once it recorded its new role (the answer is lost). The old Primary, started again
 * with its usual command (or still running, in doubt), refuses changes until it hears the new
 * Primary; migrate re-run then completes (as a failback, with nothing to set aside).
 */
async function crashDuringMigrate (who: 'primary' | 'secondary'): Promise<void> {
  const env = { ...process.env, REPLICAFS_CRASH_AT: who === 'primary' ? 'migrate-answered' : 'migrate-recorded-secondary' }
  const p = await startPair(who === 'secondary' ? {} : {})
  pair = p
  let A = p.primary
  const B = p.secondary
  if (who === 'primary') {
    await A.stop()
    A = await startPrimary({ dirs: A, extraArgs: ['--secondary', p.target, '--secret-file', B.secretFile], env })
    p.primary = A
  } else {
    await cli(['stop', '--state', B.state], { timeoutMs: 60_000 })
    await waitFor(() => !processAlive(B.pid), { timeoutMs: 30_000, what: 'the Secondary to stop' })
    registerMount(B.mount)
    registerState(B.state)
    const st = await cli(secondaryArgs(B, B.secretFile, { listen: B.address }), { env, timeoutMs: 90_000 })
    assert.is(st.code, 0, describeFailure(st))
    B.pid = (await roleStatus(B.state)).pid
  }
  await writeTree(A.mount)
  await p.caughtUp()
  const victim = who === 'primary' ? A : B
  const crashed = await cli(['migrate', '--state', A.state], { timeoutMs: 120_000 })
  assert.ok(crashed.code !== 0, `migrate did not complete: ${describeFailure(crashed)}`)
  const vpid = who === 'primary' ? A.pid : B.pid
  await waitFor(() => processGone(vpid), { timeoutMs: 30_000, what: `the ${who} to die` })
  await exec('umount', ['-l', victim.mount])
  if (who === 'primary') {
    // The Secondary became the Primary; the old one, back with its usual command, learns it.
    A = await startPrimary({ dirs: A, extraArgs: ['--secondary', p.target, '--secret-file', B.secretFile] })
    p.primary = A
  } else {
    // The old Primary is in doubt: it refuses changes. The Secondary, back with its usual command, is the Primary.
    const s = await roleStatus(A.state)
    assert.match(s.refusing ?? '', /answer was lost/)
    assert.ok((await sh(A.mount, 'echo x > doubt.txt')).code !== 0, 'no change while in doubt')
    const st = await cli(secondaryArgs(B, B.secretFile, { listen: B.address }), { timeoutMs: 90_000 })
    assert.is(st.code, 0, `${describeFailure(st)}\n${await daemonLog(B.state)}`)
    assert.is((await roleStatus(B.state)).role, 'primary')
  }
  await waitFor(async () => (await roleStatus(A.state)).takenOver !== null, { timeoutMs: 60_000, what: 'the old Primary to hear that the other is the Primary' })
    .catch(async (err: Error) => { throw new Error(`${err.message}\n--- A ---\n${await daemonLog(A.state)}\n--- B ---\n${await daemonLog(B.state)}`) })
  const r = await migrate(A.state)
  assert.is(r.role, 'secondary')
  assert.ok(r.migrated === true, JSON.stringify(r))
  await caughtUp(B.state, A.state)
  await waitFor(async () => (await roleStatus(A.state)).consistent === true, { timeoutMs: 60_000, what: 'the old Primary to be consistent' })
  assert.equal(await diffTrees(A.data, B.data), [])
  const w = await sh(B.mount, 'echo after > after.txt')
  assert.is(w.code, 0, w.stderr)
  await caughtUp(B.state, A.state)
  assert.is(await fsp.readFile(path.join(A.mount, 'after.txt'), 'utf8'), 'after\n')
  await stopBoth(A.state, B.state)
  pair = null
}

t('kill -9 of the old Primary once the Secondary answered: its usual command, then migrate re-run, completes', timed(240_000, async () => {
  await crashDuringMigrate('primary')
  await assertCleanSlate()
}))

t('kill -9 of the Secondary once it recorded its new role: the Primary refuses changes in doubt; migrate re-run completes', timed(240_000, async () => {
  await crashDuringMigrate('secondary')
  await assertCleanSlate()
}))

t.run()
