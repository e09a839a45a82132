/**
 * `replicafs ibc run --state PRIMARY_STATE TASK` (issue 4): VVR's `vradmin ibc` flow driven by the
 * Primary's daemon, with real scripts in STATE/tasks/TASK/ on each host of a loopback pair:
 * Primary quiesce/unquiesce, Secondary prefreeze/onfreeze/postfreeze.
 *
 *  - a successful run: each script runs once, in order, on its own host, with the documented
 *    environment; onfreeze sees the Secondary frozen exactly at the send (its mount is the
 *    Primary's tree at quiesce, while the writer's later updates arrive and wait); afterwards the
 *    Secondary is not frozen, no registration is left, and the trees converge; a script present
 *    only on the other host is not run;
 *  - onfreeze failing with exit 3: the CLI exits 3 and shows EIBC_TASK_FAILED and the script's
 *    output; the flow stops (no postfreeze); the Secondary is not frozen, nothing is registered;
 *  - no onfreeze on the Secondary (only on the Primary): EIBC_TASK_FAILED naming it, same cleanup;
 *  - a failing prefreeze or quiesce stops the flow with its exit code before any message is sent
 *    (and unquiesce runs only after a successful quiesce); a non-executable onfreeze is refused.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, assertCleanSlate, cleanupAll, timed, waitFor, cli, helperScript, repoRoot, describeFailure, type Pair, type Dirs
} from './helpers'
import { snapshotTree, diffSnapshots, assertNoDiffs, type Snapshot } from './helpers/replica-tree'
import { secStatus, priStatus, lastSeq, startWriter, killWriters, type Writer, type SecondaryIbcStatus } from './helpers/ibc'
import { startProxy, closeAllProxies, type Proxy } from './helpers/proxy'

const t = suite('ibc-run')

t.after(async () => {
  killWriters()
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`ibc-run.test: cleanup had to force: ${forced.join('; ')}`)
})

let pair: Pair | undefined
let proxy: Proxy | undefined
function P (): Pair {
  if (pair === undefined) throw new Error('no pair running (the "pair starts" test failed)')
  return pair
}

async function logs (): Promise<string> {
  return `\n--- primary daemon.log ---\n${await P().primary.log()}\n--- secondary daemon.log ---\n${await P().secondary.log()}`
}

const NODE = process.execPath
const BIN = path.join(repoRoot(), 'bin', 'replicafs')
const sh = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

/** Where a host's scripts for TASK live (the default: STATE/tasks/TASK/). */
function taskDir (state: string, task: string): string {
  return path.join(state, 'tasks', task)
}

/**
 * Writes an executable script `dir/step`. Every script appends "ROLE STEP" (or "DECOY ROLE STEP")
 * to OUT/steps.log and its REPLICAFS_* environment to OUT/env-ROLE-STEP, then runs `body`.
 */
async function script (dir: string, step: string, out: string, body = '', decoy = false): Promise<void> {
  await fsp.mkdir(dir, { recursive: true })
  const text = [
    '#!/bin/sh',
    `echo "${decoy ? 'DECOY ' : ''}$REPLICAFS_ROLE $REPLICAFS_STEP" >> ${sh(path.join(out, 'steps.log'))}`,
    decoy ? '' : `env | grep '^REPLICAFS_' | sort > ${sh(out)}/env-"$REPLICAFS_ROLE-$REPLICAFS_STEP"`,
    body,
    ''
  ].join('\n')
  await fsp.writeFile(path.join(dir, step), text, { mode: 0o755 })
}

/** Primary quiesce: pause the writer (through its control files) and snapshot the data directory. */
function quiesceBody (ctl: string, out: string): string {
  return [
    `touch ${sh(path.join(ctl, 'pause'))}`,
    'i=0',
    `while [ ! -e ${sh(path.join(ctl, 'paused'))} ]; do`,
    '  i=$((i+1)); if [ $i -gt 600 ]; then echo "the writer did not pause" >&2; exit 9; fi',
    '  sleep 0.05',
    'done',
    `${sh(NODE)} ${sh(helperScript('replica-tree'))} snapshot "$REPLICAFS_DATA" > ${sh(path.join(out, 'quiesce.json'))} || exit 8`,
    `echo "quiesced at writer step $(cat ${sh(path.join(ctl, 'paused'))})"`
  ].join('\n')
}

function unquiesceBody (ctl: string): string {
  return `rm -f ${sh(path.join(ctl, 'pause'))}\necho unquiesced`
}

function readLines (file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')
  } catch {
    return []
  }
}

function readEnv (out: string, role: string, step: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const l of readLines(path.join(out, `env-${role}-${step}`))) {
    const i = l.indexOf('=')
    env[l.slice(0, i)] = l.slice(i + 1)
  }
  return env
}

async function outDir (name: string): Promise<string> {
  const dir = path.join(P().primary.root, name)
  await fsp.mkdir(dir, { recursive: true })
  return dir
}

/** After a run, failed or not: nothing frozen, nothing registered anywhere, replication goes on. */
async function assertReleased (marker: string, what: string): Promise<void> {
  const { primary, secondary } = P()
  const s = await secStatus(secondary.state)
  assert.is(s.frozen, false, `${what}: the Secondary is not frozen: ${JSON.stringify(s.ibc)}`)
  assert.equal(s.ibc.registrations, [], `${what}: no registration left on the Secondary`)
  assert.equal((await priStatus(primary.state)).ibc?.registrations, [], `${what}: no registration left on the Primary`)
  await fsp.writeFile(path.join(primary.mount, marker), what)
  await caughtUp(what)
  const s2 = await secStatus(secondary.state)
  assert.is(s2.frozen, false, `${what}: still not frozen once caught up: ${JSON.stringify(s2.ibc)}`)
  assert.is(await fsp.readFile(path.join(secondary.mount, marker), 'utf8'), what, `${what}: an update after the run reaches the Secondary`)
}

async function caughtUp (what: string): Promise<void> {
  const { primary, secondary } = P()
  await waitFor(async () => {
    const p = await priStatus(primary.state)
    const s = await secStatus(secondary.state)
    return s.appliedSeq >= lastSeq(p) && p.rlinks.every((l) => l.dataAckedSeq >= lastSeq(p))
  }, { timeoutMs: 30_000, what: `${what}: the Secondary to apply everything the Primary logged`, intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(err.message + await logs()) })
}

t('pair starts (through a proxy)', timed(90_000, async () => {
  pair = await startPair({ via: async (addr) => (proxy = await startProxy(addr)).address })
  await waitFor(async () => (await P().primaryStatus()).rlinks[0]?.state === 'connected', { timeoutMs: 30_000, what: 'the RLINK to connect', intervalMs: 100 })
}))

t('ibc run on a Secondary: EIBC_WRONG_ROLE, one line', timed(30_000, async () => {
  const r = await cli(['ibc', 'run', '--state', P().secondary.state, 'backup'], { timeoutMs: 30_000 })
  const ctx = `${r.cmdline}\nexit ${String(r.code)}\n--- stderr ---\n${r.stderr}`
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  assert.is(r.stderr.split('\n').filter((l) => l !== '').length, 1, `one line: ${ctx}`)
  assert.ok(r.stderr.startsWith('replicafs: EIBC_WRONG_ROLE: '), `stderr leads with EIBC_WRONG_ROLE (ibc run runs on the Primary): ${ctx}`)
}))

t('ibc run: every script once, in order, on its own host; onfreeze sees the Secondary frozen exactly at the send', timed(120_000, async () => {
  const { primary, secondary } = P()
  const task = 'backup'
  const out = await outDir('out-ok')
  const ctl = path.join(out, 'ctl')
  const pdir = taskDir(primary.state, task)
  const sdir = taskDir(secondary.state, task)
  await script(pdir, 'quiesce', out, quiesceBody(ctl, out))
  await script(pdir, 'unquiesce', out, unquiesceBody(ctl))
  await script(sdir, 'prefreeze', out, 'echo prefreeze done')
  await script(sdir, 'onfreeze', out, `exec ${sh(NODE)} ${sh(helperScript('ibc'))} onfreeze-probe ${sh(out)} 20`)
  await script(sdir, 'postfreeze', out, `${sh(NODE)} ${sh(BIN)} status --state "$REPLICAFS_STATE" --json > ${sh(path.join(out, 'postfreeze-status.json'))} || exit 8`)
  // scripts present only on the other host: never run here
  for (const step of ['prefreeze', 'onfreeze', 'postfreeze']) await script(pdir, step, out, '', true)
  for (const step of ['quiesce', 'unquiesce']) await script(sdir, step, out, '', true)

  let w: Writer | undefined
  try {
    w = startWriter(path.join(primary.mount, 'w'), ctl)
    await w.advance(40)
    const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '60', '--json'], { timeoutMs: 120_000 })
    if (r.code !== 0) throw new Error(describeFailure(r) + await logs())
    const res = JSON.parse(r.stdout) as { steps: Array<{ host: string, step: string, code: number | null, output: string }> }
    assert.ok(w.steps() > 40, 'the writer ran through the flow')

    // the flow, as the daemon reports it
    assert.equal(res.steps.map((s) => `${s.host.split(' ')[0]} ${s.step}`), [
      'secondary check', 'secondary prefreeze', 'secondary register', 'both register', 'primary quiesce', 'primary send', 'primary unquiesce',
      'secondary onfreeze', 'secondary unfreeze', 'secondary postfreeze', 'secondary unregister', 'both unregister'
    ], `steps: ${JSON.stringify(res.steps)}`)
    const byStep = (host: string, step: string) => res.steps.find((s) => s.host.startsWith(host) && s.step === step)!
    for (const [h, s] of [['secondary', 'prefreeze'], ['primary', 'quiesce'], ['primary', 'unquiesce'], ['secondary', 'onfreeze'], ['secondary', 'postfreeze']]) {
      assert.is(byStep(h, s).code, 0, `${h} ${s} ran and exited 0`)
    }
    assert.match(byStep('primary', 'quiesce').output, /quiesced at writer step \d+/, 'a script\'s output is reported')
    const sendOut = /message (\S+) at sequence number (\d+)/.exec(byStep('primary', 'send').output)
    assert.ok(sendOut !== null, `the send step names the message: ${byStep('primary', 'send').output}`)
    const [, id, seqText] = sendOut
    const seq = Number(seqText)

    // what the scripts saw: each ran once, in order, on its own host
    assert.equal(readLines(path.join(out, 'steps.log')), [
      'secondary prefreeze', 'primary quiesce', 'primary unquiesce', 'secondary onfreeze', 'secondary postfreeze'
    ], 'scripts ran once each, in order, on their own host (no DECOY line: a script only on the other host is not run)')
    const envs: Array<[string, string, Dirs]> = [
      ['secondary', 'prefreeze', secondary], ['primary', 'quiesce', primary], ['primary', 'unquiesce', primary],
      ['secondary', 'onfreeze', secondary], ['secondary', 'postfreeze', secondary]
    ]
    for (const [role, step, host] of envs) {
      const env = readEnv(out, role, step)
      assert.equal({ task: env.REPLICAFS_TASK, step: env.REPLICAFS_STEP, role: env.REPLICAFS_ROLE, state: env.REPLICAFS_STATE, data: env.REPLICAFS_DATA, mount: env.REPLICAFS_MOUNT },
        { task, step, role, state: host.state, data: host.data, mount: host.mount }, `the environment of ${role} ${step}`)
    }
    const fenv = readEnv(out, 'secondary', 'onfreeze')
    assert.is(fenv.REPLICAFS_IBC_ID, id, 'onfreeze gets the message id')
    assert.is(fenv.REPLICAFS_IBC_SEQ, String(seq), 'onfreeze gets its sequence number')
    assert.is(fenv.REPLICAFS_IBC_MESSAGE, `ibc run ${task}`, 'onfreeze gets the message the flow sent (README: "send (the message is `ibc run TASK`)")')
    assert.not.ok('REPLICAFS_IBC_ID' in readEnv(out, 'secondary', 'prefreeze'), 'only onfreeze gets the IBC variables')

    // onfreeze: the Secondary frozen exactly at the send, with later updates logged and waiting
    const atQuiesce = JSON.parse(fs.readFileSync(path.join(out, 'quiesce.json'), 'utf8')) as Snapshot
    const atOnfreeze = JSON.parse(fs.readFileSync(path.join(out, 'onfreeze.json'), 'utf8')) as Snapshot
    const st = JSON.parse(fs.readFileSync(path.join(out, 'onfreeze-status.json'), 'utf8')) as { before: SecondaryIbcStatus, after: SecondaryIbcStatus }
    assert.ok(Object.keys(atQuiesce).length > 20, `the Primary's tree at quiesce has the writer's files (${Object.keys(atQuiesce).length} paths)`)
    for (const s of [st.before, st.after]) {
      assert.is(s.frozen, true, `frozen during onfreeze: ${JSON.stringify(s.ibc)}`)
      assert.is(s.appliedSeq, seq - 1, 'applied exactly up to the message')
    }
    assert.ok(st.before.receivedSeq >= seq + 20, `updates after the send had arrived (received ${st.before.receivedSeq}, message ${seq})`)
    assertNoDiffs(diffSnapshots(atQuiesce, atOnfreeze, { a: 'primary data at quiesce', b: 'secondary mount in onfreeze', mtime: 'us' }), 'onfreeze saw the Primary\'s tree at quiesce')
    const post = JSON.parse(fs.readFileSync(path.join(out, 'postfreeze-status.json'), 'utf8')) as SecondaryIbcStatus
    assert.is(post.frozen, false, 'postfreeze runs after unfreeze')

    assert.is(await w.stop(), 0, `the writer ran without an error: ${w.lines.slice(-3).join(' | ')}`)
    await assertReleased('after-ok', 'after a successful run')
    const [a, b] = await Promise.all([snapshotTree(primary.data), snapshotTree(secondary.mount)])
    assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary mount', mtime: 'us' }), 'after the run, the trees converge')
  } finally {
    w?.kill()
  }
}))

t('ibc run: onfreeze exits 3: the CLI exits 3 with EIBC_TASK_FAILED and the output; the flow stops; nothing left frozen or registered', timed(90_000, async () => {
  const { primary, secondary } = P()
  const task = 'failing'
  const out = await outDir('out-fail')
  const pdir = taskDir(primary.state, task)
  const sdir = taskDir(secondary.state, task)
  await script(pdir, 'quiesce', out, 'echo quiesce ok')
  await script(pdir, 'unquiesce', out, 'echo unquiesce ok')
  await script(sdir, 'prefreeze', out)
  await script(sdir, 'onfreeze', out, 'echo "onfreeze: the snapshot tool broke"\necho "onfreeze: stderr line" >&2\nexit 3')
  await script(sdir, 'postfreeze', out)
  await fsp.writeFile(path.join(primary.mount, 'before-fail'), 'x')
  const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.is(r.code, 3, `the CLI exits with the script's exit code: ${ctx}`)
  assert.ok(r.stderr.startsWith('replicafs: EIBC_TASK_FAILED: '), `stderr leads with EIBC_TASK_FAILED: ${ctx}`)
  assert.match(r.stderr, /onfreeze/, `stderr names the step: ${ctx}`)
  assert.match(r.stderr, /onfreeze: the snapshot tool broke/, `stderr shows the script's stdout: ${ctx}`)
  assert.match(r.stderr, /onfreeze: stderr line/, `stderr shows the script's stderr: ${ctx}`)
  assert.not.match(r.stderr, /^\s+at /m, `no stack trace: ${ctx}`)
  assert.equal(readLines(path.join(out, 'steps.log')), ['secondary prefreeze', 'primary quiesce', 'primary unquiesce', 'secondary onfreeze'],
    'the flow stopped at the failing onfreeze (no postfreeze)')
  await assertReleased('after-fail', 'after a failed onfreeze')
}))

t('ibc run: no onfreeze on the Secondary (only on the Primary): EIBC_TASK_FAILED naming it; the Primary\'s copy is not run', timed(90_000, async () => {
  const { primary, secondary } = P()
  const task = 'missing'
  const out = await outDir('out-missing')
  const pdir = taskDir(primary.state, task)
  const sdir = taskDir(secondary.state, task)
  await script(pdir, 'quiesce', out)
  await script(pdir, 'onfreeze', out, '', true)
  await script(sdir, 'prefreeze', out)
  const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  const first = r.stderr.split('\n')[0]
  assert.ok(first.startsWith('replicafs: EIBC_TASK_FAILED: '), `stderr leads with EIBC_TASK_FAILED: ${ctx}`)
  assert.match(first, /onfreeze/, `it names the missing script: ${ctx}`)
  assert.match(first, /secondary/i, `it says which host lacks it: ${ctx}`)
  assert.not.match(r.stderr, /^\s+at /m, `no stack trace: ${ctx}`)
  const steps = readLines(path.join(out, 'steps.log'))
  assert.not.ok(steps.some((l) => l.startsWith('DECOY')), `the Primary's onfreeze was not run: ${JSON.stringify(steps)}`)
  assert.equal(steps, [], 'the flow checks for onfreeze before any script runs or anything is frozen')
  await assertReleased('after-missing', 'after a missing onfreeze')
}))

t('ibc run: a failing prefreeze (exit 4) stops the flow before anything is registered or sent', timed(60_000, async () => {
  const { primary, secondary } = P()
  const task = 'prefail'
  const out = await outDir('out-prefail')
  await script(taskDir(primary.state, task), 'quiesce', out)
  await script(taskDir(secondary.state, task), 'prefreeze', out, 'echo "prefreeze: no space for the snapshot"\nexit 4')
  await script(taskDir(secondary.state, task), 'onfreeze', out)
  const before = lastSeq(await priStatus(primary.state))
  const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.is(r.code, 4, `the CLI exits with the script's exit code: ${ctx}`)
  assert.ok(r.stderr.startsWith('replicafs: EIBC_TASK_FAILED: '), ctx)
  assert.match(r.stderr, /prefreeze: no space for the snapshot/, `the script's output is shown: ${ctx}`)
  assert.equal(readLines(path.join(out, 'steps.log')), ['secondary prefreeze'], 'nothing ran after the failing prefreeze')
  assert.is(lastSeq(await priStatus(primary.state)), before, 'no IBC message was sent (nothing was logged)')
  await assertReleased('after-prefail', 'after a failed prefreeze')
}))

t('ibc run: a failing quiesce (exit 5): no message is sent, unquiesce is not run, nothing left registered', timed(60_000, async () => {
  const { primary, secondary } = P()
  const task = 'quiescefail'
  const out = await outDir('out-quiescefail')
  await script(taskDir(primary.state, task), 'quiesce', out, 'echo "quiesce: the database refused"\nexit 5')
  await script(taskDir(primary.state, task), 'unquiesce', out)
  await script(taskDir(secondary.state, task), 'prefreeze', out)
  await script(taskDir(secondary.state, task), 'onfreeze', out)
  await script(taskDir(secondary.state, task), 'postfreeze', out)
  const before = lastSeq(await priStatus(primary.state))
  const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.is(r.code, 5, `the CLI exits with the script's exit code: ${ctx}`)
  assert.ok(r.stderr.startsWith('replicafs: EIBC_TASK_FAILED: '), ctx)
  assert.match(r.stderr, /quiesce: the database refused/, `the script's output is shown: ${ctx}`)
  assert.equal(readLines(path.join(out, 'steps.log')), ['secondary prefreeze', 'primary quiesce'], 'the flow stopped at quiesce (no unquiesce, no onfreeze)')
  assert.is(lastSeq(await priStatus(primary.state)), before, 'no IBC message was sent (nothing was logged)')
  await assertReleased('after-quiescefail', 'after a failed quiesce')
}))

t('ibc run: an onfreeze that is not executable: EIBC_TASK_FAILED saying so, and the Secondary is released', timed(60_000, async () => {
  const { primary, secondary } = P()
  const task = 'noexec'
  const out = await outDir('out-noexec')
  await script(taskDir(secondary.state, task), 'onfreeze', out)
  await fsp.chmod(path.join(taskDir(secondary.state, task), 'onfreeze'), 0o644)
  const r = await cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  assert.ok(r.stderr.startsWith('replicafs: EIBC_TASK_FAILED: '), ctx)
  assert.match(r.stderr.split('\n')[0], /onfreeze.*not executable|not executable.*onfreeze/, `it says the onfreeze script is not executable: ${ctx}`)
  assert.equal(readLines(path.join(out, 'steps.log')), [], 'the script did not run')
  await assertReleased('after-noexec', 'after a non-executable onfreeze')
}))

t('ibc run: the link cut while onfreeze runs: the run fails with EIBC_TASK_FAILED and the Secondary is released', timed(90_000, async () => {
  const { primary, secondary } = P()
  const task = 'linkdown'
  const out = await outDir('out-linkdown')
  const go = path.join(out, 'go')
  await script(taskDir(secondary.state, task), 'onfreeze', out, [
    'i=0',
    `while [ ! -e ${sh(go)} ]; do i=$((i+1)); if [ $i -gt 1200 ]; then exit 9; fi; sleep 0.05; done`,
    'echo onfreeze released'
  ].join('\n'))
  await script(taskDir(secondary.state, task), 'postfreeze', out)
  const accepted = proxy!.accepted
  const run = cli(['ibc', 'run', '--state', primary.state, task, '--timeout', '30'], { timeoutMs: 90_000 })
  let r: Awaited<typeof run>
  try {
    await waitFor(() => readLines(path.join(out, 'steps.log')).includes('secondary onfreeze'), { timeoutMs: 30_000, what: 'onfreeze to start', intervalMs: 20 })
    assert.is((await secStatus(secondary.state)).frozen, true, 'frozen while onfreeze runs')
    assert.ok(proxy!.cut() >= 1, 'the link was cut')
    r = await run
  } finally {
    fs.writeFileSync(go, '')
    await run
  }
  const ctx = `${describeFailure(r)}${await logs()}`
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  assert.not.match(r.stderr, /^\s+at /m, `no stack trace: ${ctx}`)
  await waitFor(async () => (await priStatus(primary.state)).rlinks[0].state === 'connected' && proxy!.accepted > accepted, { timeoutMs: 30_000, what: 'the RLINK to reconnect', intervalMs: 100 })
  await waitFor(async () => {
    const s = await secStatus(secondary.state)
    return !s.frozen && s.ibc.registrations.length === 0
  }, { timeoutMs: 30_000, what: 'the Secondary to be released (unfrozen, unregistered) after the link went down', intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(err.message + await logs()) })
  assert.not.ok(readLines(path.join(out, 'steps.log')).includes('secondary postfreeze'), 'the flow did not go on after the link went down')
  await assertReleased('after-linkdown', 'after the link went down mid-flow')
  // last, so the checks above run whatever the message says: an ibc run failure leads with a VVR name
  assert.ok(r.stderr.startsWith('replicafs: EIBC_TASK_FAILED: '), `stderr leads with EIBC_TASK_FAILED: ${ctx}`)
}))

t('the pair stops cleanly', timed(60_000, async () => {
  const p = P()
  pair = undefined
  killWriters()
  await p.stop()
  await proxy?.close()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
