/**
 * The CLI's contract for bad input (one line on stderr naming the problem, non-zero exit, no stack
 * trace), its help, signals, and recovery after kill -9.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { spawn } from 'child_process'
import {
  assertOneLineError,
  startPrimary, assertCleanSlate, restartPrimary, cleanupAll, isolated, timed, waitFor, withDeadline, cli, tmpdirs, primaryArgs,
  fuseMountAt, isMounted, pidsWithArg, processAlive, status, daemonLog, exec, repoRoot, type ExecResult, type Dirs, type Primary
} from './helpers'

const t = suite('cli-errors')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`cli-errors.test: cleanup had to force: ${forced.join('; ')}`)
})

/** Non-zero exit, exactly one line on stderr that contains every `names` and matches `what`, no stack. */
const assertOneLine = (r: ExecResult, names: string[], what: RegExp): string => assertOneLineError(r, [...names, what])

async function assertServing (p: Primary, label: string): Promise<void> {
  const f = path.join(p.mount, `alive-${label}`)
  await fsp.writeFile(f, label)
  assert.is((await fsp.readFile(f)).toString(), label, `${p.mount} still serves after ${label}`)
  const st = await status(p.state).catch((err: Error) => { throw new Error(`after the refused start (${label}), the running daemon no longer answers status: ${err.message}`) })
  assert.is(st.pid, p.pid, `after ${label}, status still reports the running daemon`)
}

async function assertLeftNothing (dirs: Dirs, mountIsOurs = true): Promise<void> {
  if (mountIsOurs) assert.not.ok(await isMounted(dirs.mount), `${dirs.mount} was left mounted`)
  await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 20_000, what: `no process to hold ${dirs.state} after the failed start` })
}

t('--help for the tool and every command', timed(60_000, async () => {
  const top = await cli(['--help'])
  assert.is(top.code, 0, top.stderr)
  for (const c of ['primary', 'stop', 'status', 'srl-dump', 'takeover', 'failback', 'migrate']) assert.ok(top.stdout.includes(c), `replicafs --help lists ${c}`)
  const want: Record<string, string[]> = {
    primary: ['--data', '--mount', '--state', '--srl-size', '--daemon', '--retain'],
    stop: ['--state'],
    status: ['--state', '--json'],
    'srl-dump': ['--state', '--json'],
    takeover: ['--state', '--json'],
    failback: ['--state', '--json'],
    migrate: ['--state', '--json']
  }
  for (const [cmd, flags] of Object.entries(want)) {
    const r = await cli([cmd, '--help'])
    assert.is(r.code, 0, `${cmd} --help exits 0: ${r.stderr}`)
    for (const f of flags) assert.ok(r.stdout.includes(f), `${cmd} --help describes ${f}:\n${r.stdout}`)
  }
}))

t('unknown command and unknown flag', timed(60_000, async () => {
  assertOneLine(await cli(['frobnicate']), ['frobnicate'], /unknown|command/i)
  const dirs = await tmpdirs('cli')
  assertOneLine(await cli([...primaryArgs(dirs), '--bogus-flag']), ['--bogus-flag'], /unknown|flag|option/i)
  assertOneLine(await cli(['status', '--state', dirs.state, '--frob']), ['--frob'], /unknown|flag|option/i)
  await assertLeftNothing(dirs)
}))

t('missing required flag; stop and status with no daemon running', timed(60_000, async () => {
  const dirs = await tmpdirs('cli')
  assertOneLine(await cli(['primary', '--mount', dirs.mount, '--state', dirs.state, '--daemon']), ['--data'], /required|missing/i)
  assertOneLine(await cli(['stop']), ['--state'], /required|missing/i)
  assertOneLine(await cli(['stop', '--state', dirs.state]), [dirs.state], /not running|no .*daemon/i)
  assertOneLine(await cli(['status', '--state', dirs.state, '--json']), [dirs.state], /not running|no .*daemon/i)
  assertOneLine(await cli(['status', '--state', dirs.state, '--watch']), [dirs.state], /not running|no .*daemon/i)
  assertOneLine(await cli(['status', '--state', dirs.state, '--watch', '--json']), ['--watch', '--json'], /do not go together/)
  assertOneLine(await cli(['status', '--state', dirs.state, '--watch', '--interval', '0']), ['--interval'], /seconds above 0/)
  assertOneLine(await cli(['status', '--state', dirs.state, '--interval', '2']), ['--interval'], /goes with --watch/)
  assertOneLine(await cli(['takeover']), ['--state'], /required|missing/i)
  assertOneLine(await cli(['takeover', '--state', dirs.state]), [dirs.state], /not running|no .*daemon/i)
  for (const cmd of ['failback', 'migrate']) {
    assertOneLine(await cli([cmd]), ['--state'], /required|missing/i)
    assertOneLine(await cli([cmd, '--state', dirs.state]), [dirs.state], /not running|no .*daemon/i)
    assertOneLine(await cli([cmd, '--state', dirs.state, '--discard']), ['--discard'], /unknown|flag|option/i)
  }
  assertOneLine(await cli([...primaryArgs(dirs), '--listen', '127.0.0.1:7400']), ['--listen', '--secret-file'], /needs/)
  assertOneLine(await cli([...primaryArgs(dirs), '--listen', 'nowhere']), ['--listen', 'nowhere'], /HOST:PORT/)
  await assertLeftNothing(dirs)
}))

t('bad --srl-size', timed(60_000, async () => {
  const dirs = await tmpdirs('cli')
  assertOneLine(await cli(primaryArgs(dirs, { srlSize: 'banana' })), ['banana'], /srl-size|size/i)
  await assertLeftNothing(dirs)
}))

t('missing data dir, missing mount point, non-empty mount point', timed(60_000, async () => {
  const dirs = await tmpdirs('cli')
  const noData = { ...dirs, data: path.join(dirs.root, 'no-such-data') }
  assertOneLine(await cli(primaryArgs(noData)), [noData.data], /exist|missing|no such|not found/i)
  await assertLeftNothing(noData)

  const noMount = { ...dirs, mount: path.join(dirs.root, 'no-such-mnt') }
  assertOneLine(await cli(primaryArgs(noMount)), [noMount.mount], /exist|missing|no such|not found/i)
  await assertLeftNothing(noMount, false)

  await fsp.writeFile(path.join(dirs.mount, 'stray'), 'x')
  assertOneLine(await cli(primaryArgs(dirs)), [dirs.mount], /not empty|non-empty|empty/i)
  await assertLeftNothing(dirs)
  assert.equal(await fsp.readdir(dirs.mount), ['stray'], 'the non-empty mount point was not touched')
}))

t('a second daemon: mounted mount point, locked state dir, data dir in use', isolated(180_000, async () => {
  const a = await startPrimary()
  // A's data dir is empty, so its mount point looks empty: only "already mounted" can stop B
  const b = await tmpdirs('cli-b')
  const onMounted = { ...b, mount: a.mount }
  assertOneLine(await cli(primaryArgs(onMounted)), [a.mount], /mounted|busy|in use/i)
  await assertLeftNothing(onMounted, false)
  await assertServing(a, 'mounted')

  const sameState = { ...b, state: a.state }
  assertOneLine(await cli(primaryArgs(sameState)), [a.state], /lock|in use|another|running/i)
  assert.not.ok(await isMounted(b.mount), `${b.mount} was left mounted`)
  await assertServing(a, 'state')

  const sameData = { ...b, data: a.data }
  assertOneLine(await cli(primaryArgs(sameData)), [a.data], /lock|in use|another|serv/i)
  await assertLeftNothing(sameData)
  await assertServing(a, 'data')

  const st = await status(a.state)
  assert.is(st.pid, a.pid, 'A is still the same daemon')
  await a.stop()
}))

t('SIGTERM to the daemon unmounts cleanly and ends it', isolated(120_000, async () => {
  const p = await startPrimary()
  await fsp.writeFile(path.join(p.mount, 'f'), 'kept')
  process.kill(p.pid, 'SIGTERM')
  await waitFor(() => !processAlive(p.pid), { timeoutMs: 30_000, what: 'the daemon to exit on SIGTERM' })
  assert.not.ok(await isMounted(p.mount), 'unmounted on SIGTERM')
  assert.is((await fsp.readFile(path.join(p.data, 'f'))).toString(), 'kept')
  assert.not.match(await daemonLog(p.state), /^\s+at /m, 'no stack trace in daemon.log')
}))

t('foreground primary: ready mount, SIGINT unmounts and exits 0', isolated(120_000, async () => {
  const dirs = await tmpdirs('fg')
  const args = primaryArgs(dirs).filter((a) => a !== '--daemon')
  const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'bin', 'replicafs'), ...args], { cwd: path.join(__dirname, '..', '..'), stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
  child.stdout.resume()
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  try {
    await waitFor(async () => (await fuseMountAt(dirs.mount)) !== undefined, { timeoutMs: 60_000, what: 'the foreground primary to mount' })
    await waitFor(async () => (await status(dirs.state)).pid === child.pid, { timeoutMs: 30_000, what: 'status to report the foreground pid' })
    await fsp.writeFile(path.join(dirs.mount, 'fg'), 'fg')
    child.kill('SIGINT')
    const code = await withDeadline(exited, 30_000, 'the foreground primary to exit on SIGINT')
    assert.is(code, 0, `exit code after SIGINT; stderr: ${stderr}`)
    assert.not.ok(await isMounted(dirs.mount), 'unmounted on SIGINT')
    assert.is((await fsp.readFile(path.join(dirs.data, 'fg'))).toString(), 'fg')
  } finally {
    child.kill('SIGKILL')
  }
}))

t('after kill -9, a restart on the same dirs cleans the stale mount and recovers', isolated(180_000, async () => {
  const p = await startPrimary()
  const payload = Buffer.alloc(300_000)
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff
  const fh = await fsp.open(path.join(p.mount, 'durable.bin'), 'w')
  try {
    await fh.write(payload, 0, payload.length, 0)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fsp.mkdir(path.join(p.mount, 'dir'))
  await fsp.symlink('../durable.bin', path.join(p.mount, 'dir', 'link'))
  await p.kill9()
  assert.ok(await fuseMountAt(p.mount), 'kill -9 leaves a stale mount behind')

  const p2 = await restartPrimary(p)
  assert.ok(await fuseMountAt(p.mount), 'mounted again')
  assert.ok((await fsp.readFile(path.join(p2.mount, 'durable.bin'))).equals(payload), 'fsynced file intact through the mount')
  assert.is(await fsp.readlink(path.join(p2.mount, 'dir', 'link')), '../durable.bin')
  await fsp.writeFile(path.join(p2.mount, 'new'), 'after restart')
  assert.is((await fsp.readFile(path.join(p2.mount, 'new'))).toString(), 'after restart')
  await p2.stop()
  assert.ok((await fsp.readFile(path.join(p.data, 'durable.bin'))).equals(payload), 'fsynced file intact in the data dir')
  assert.is((await fsp.readFile(path.join(p.data, 'new'))).toString(), 'after restart')
  const mounts = (await fsp.readFile('/proc/mounts', 'utf8')).split('\n').filter((l) => l.includes(p.mount))
  assert.equal(mounts, [], 'no stale mount entries remain')
}))

/** Every entry under `state` (outside snapshots/) whose mode gives the group or others anything. */
async function openEntries (state: string): Promise<string[]> {
  const open: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name)
      if (e.isSymbolicLink() || p === path.join(state, 'snapshots')) continue
      const st = await fsp.lstat(p)
      if ((st.mode & 0o077) !== 0) open.push(`${path.relative(state, p)} ${(st.mode & 0o7777).toString(8)}`)
      if (e.isDirectory()) await walk(p)
    }
  }
  const st = await fsp.stat(state)
  if ((st.mode & 0o077) !== 0) open.push(`. ${(st.mode & 0o7777).toString(8)}`)
  await walk(state)
  return open
}

t('the state directory is owner-only, an older one is tightened at start; another user is told whose it is; a secret others can read is refused', isolated(120_000, async () => {
  const p = await startPrimary()
  const names = (await fsp.readdir(p.state)).join(' ')
  for (const f of ['daemon.pid', 'daemon.log', 'control.sock', 'srl']) assert.ok(names.includes(f), `${f} in the state directory: ${names}`)
  assert.equal(await openEntries(p.state), [], 'nothing in the state directory is open to the group or others')

  // Another user: one line naming the control socket and whose it is, not "unexpected error".
  const other = await exec('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, path.join(repoRoot(), 'bin', 'replicafs'), 'status', '--state', p.state], { cwd: '/' })
  assertOneLine(other, [path.join(p.state, 'control.sock')], /permission denied: .* \(run as the daemon's user\)/)

  // A state directory as an older replicafs left it (daemon.pid 0666, srl/state 0777, files 0644).
  await p.stop()
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const q = path.join(dir, e.name)
      if (e.isDirectory()) { await fsp.chmod(q, 0o777); await walk(q) } else if (e.isFile()) await fsp.chmod(q, 0o666)
    }
  }
  await walk(path.join(p.state, 'srl'))
  await fsp.writeFile(path.join(p.state, 'daemon.pid'), 'old\n', { mode: 0o666 })
  await fsp.chmod(path.join(p.state, 'daemon.pid'), 0o666)
  assert.ok((await openEntries(p.state)).length > 2, 'the old modes are in place before the restart')
  const p2 = await restartPrimary(p)
  assert.equal(await openEntries(p2.state), [], 'tightened at start')
  await fsp.writeFile(path.join(p2.mount, 'after'), 'x')
  await p2.stop()

  // A secret file the group or others can read: refused before anything starts, as ssh refuses a key.
  const sec = await tmpdirs('secret-mode')
  const secret = path.join(sec.root, 'secret')
  await fsp.writeFile(secret, 'a shared secret\n', { mode: 0o644 })
  await fsp.chmod(secret, 0o644)
  assertOneLine(await cli(['secondary', '--data', sec.data, '--mount', sec.mount, '--state', sec.state, '--listen', '127.0.0.1:0', '--secret-file', secret, '--daemon']),
    [secret, '0644', `chmod 600 ${secret}`], /secret file .* group or others/)
  await assertLeftNothing(sec)
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
