/**
 * Identity of the replicated data set (issue 17, "Promises with no test", item 2): which Primary a
 * Secondary accepts, which Secondary a Primary accepts, and what a new Secondary starts on.
 *
 *  - (2b) A Secondary follows exactly one Primary SRL, set by the first Primary that connects, and
 *    refuses others (`PRIMARY`). README.md, "Replication": "A Secondary follows exactly one Primary
 *    SRL (set by the first Primary that connects) and refuses others ... a refusal is logged on both
 *    sides and shows in `status` as `lastError`". docs/ARCHITECTURE.md, "Handshake and divergence
 *    checks": "The Secondary refuses (`PRIMARY`) a Primary whose `srlId` is not the one it follows
 *    (LevelDB `follow`, set by the first Primary that completes a handshake)". Two cases: a Secondary
 *    that follows Primary A but holds none of its records yet (the srlId is the only difference),
 *    and one that holds A's records, where Primary B's own checks come first in the handshake (the
 *    CHALLENGE carries the Secondary's position, and B checks it before it sends AUTH) and report
 *    DIVERGED instead of PRIMARY: that test asserts the documented reason and fails today.
 *  - (2a) A Primary refuses a Secondary whose log has diverged from its own (`DIVERGED`). README.md:
 *    "a Primary refuses a Secondary whose log has diverged from its own". ARCHITECTURE.md, same
 *    section: "`DIVERGED` if the Secondary has records beyond the Primary's newest, or if its newest
 *    record has another CRC than the Primary's record with that number (a Primary that lost
 *    unsynced records in a power failure and reused their numbers)". Both cases are produced the
 *    way they happen: the Primary's state and data directories are put back to an older copy (a
 *    Primary that lost its newest records) after the Secondary logged more; then that Primary writes
 *    new, different records under the numbers the Secondary already holds.
 *  - (2c) "a Secondary that has never followed one refuses to start on a non-empty data directory"
 *    (ARCHITECTURE.md, "Handshake and divergence checks"; "Process model": `DIR_NOT_EMPTY`), with
 *    README.md's rule for bad input: "prints one line naming the problem and exits non-zero"; and a
 *    Secondary that has followed a Primary restarts on its (non-empty) data directory (end of the
 *    DIVERGED test).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as net from 'net'
import * as path from 'path'
import {
  assertOneLineError,
  startPrimary, startSecondary, restartPrimary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, cli, execOk, tmpdirs,
  secondaryArgs, secretFile, primaryStatus, daemonLog, isMounted, fuseMountAt, pidsWithArg, describeFailure,
  type Dirs, type Primary, type Secondary, type RlinkStatus
} from './helpers'
import { encodeFrame, FrameDecoder, MsgType, PROTOCOL_VERSION, nonce, proof, type Message } from '../src/format/wire'
import { RECORD_FORMAT_VERSION } from '../src/format/record'

const t = suite('identity')

const sockets = new Set<net.Socket>()

t.after(async () => {
  for (const s of sockets) s.destroy()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`identity.test: cleanup had to force: ${forced.join('; ')}`)
})

// ---------------------------------------------------------------------------------------------
// helpers

function dirsOf (d: Dirs): Dirs {
  return { root: d.root, data: d.data, mount: d.mount, state: d.state }
}

/** Size of daemon.log now, so later checks look only at what was logged after this point. */
function logMark (state: string): number {
  try { return fs.statSync(path.join(state, 'daemon.log')).size } catch { return 0 }
}

async function logSince (state: string, mark: number): Promise<string> {
  try { return (await fsp.readFile(path.join(state, 'daemon.log'))).subarray(mark).toString('utf8') } catch { return '' }
}

/** Waits until daemon.log, after `mark`, has a line containing every pattern; returns it. */
async function waitLogLine (state: string, mark: number, patterns: Array<RegExp | string>, what: string): Promise<string> {
  const ok = (l: string): boolean => patterns.every((p) => (typeof p === 'string' ? l.includes(p) : p.test(l)))
  try {
    return await waitFor(async () => (await logSince(state, mark)).split('\n').find(ok), { timeoutMs: 30_000, what, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- ${state}/daemon.log since the mark ---\n${(await logSince(state, mark)).slice(-3000)}`)
  }
}

async function rlink (p: Primary): Promise<RlinkStatus> {
  const st = await primaryStatus(p.state)
  assert.is(st.rlinks.length, 1, `one RLINK in status: ${JSON.stringify(st.rlinks)}`)
  return st.rlinks[0]
}

async function logs (...who: Array<{ state: string, label: string }>): Promise<string> {
  const parts = await Promise.all(who.map(async (w) => `--- ${w.label} daemon.log ---\n${await daemonLog(w.state)}`))
  return '\n' + parts.join('\n')
}

/** Waits until the Primary's only RLINK has data-acked everything it logged (and something at all). */
async function caughtUp (p: Primary, s: Secondary, what: string): Promise<number> {
  try {
    return await waitFor(async () => {
      const ps = await primaryStatus(p.state)
      const newest = ps.srl.newestSeq ?? ps.srl.appliedSeq
      return newest > 0 && ps.rlinks[0].state === 'connected' && ps.rlinks[0].dataAckedSeq >= newest ? newest : 0
    }, { timeoutMs: 60_000, what, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\nrlinks: ${JSON.stringify((await primaryStatus(p.state).catch(() => null))?.rlinks)}${await logs({ state: p.state, label: 'primary' }, { state: s.state, label: 'secondary' })}`)
  }
}

/** Waits until the Primary's RLINK reports a refusal whose lastError has every pattern; returns it. */
async function waitRefused (p: Primary, s: Secondary, patterns: Array<RegExp | string>, what: string): Promise<string> {
  let last: RlinkStatus | undefined
  try {
    return await waitFor(async () => {
      last = await rlink(p)
      const e = last.lastError
      return last.state !== 'connected' && e !== null && patterns.every((pt) => (typeof pt === 'string' ? e.includes(pt) : pt.test(e))) ? e : undefined
    }, { timeoutMs: 30_000, what, intervalMs: 200 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast rlinks[0]: ${JSON.stringify(last)}${await logs({ state: p.state, label: 'primary' }, { state: s.state, label: 'secondary' })}`)
  }
}


/** Every regular file under `dir` (relative paths), sorted. */
async function filesUnder (dir: string): Promise<string[]> {
  const out: string[] = []
  async function rec (d: string, rel: string): Promise<void> {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await rec(path.join(d, e.name), path.join(rel, e.name))
      else out.push(path.join(rel, e.name))
    }
  }
  await rec(dir, '')
  return out.sort()
}

/**
 * A fake Primary on one connection: sends HELLO with `srlId`, answers the CHALLENGE with a correct
 * AUTH (it knows the secret), and returns what the Secondary answered to that AUTH.
 */
async function fakePrimaryHandshake (address: string, secret: Buffer, srlId: string): Promise<Message> {
  const i = address.lastIndexOf(':')
  const sock = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) })
  sockets.add(sock)
  try {
    await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
    const d = new FrameDecoder()
    const msgs: Message[] = []
    let closed = false
    sock.on('data', (b: Buffer) => { msgs.push(...d.push(Buffer.from(b))) })
    sock.on('error', () => {})
    sock.on('close', () => { closed = true })
    const ours = nonce()
    sock.write(encodeFrame({ t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: 'replicafs', srlId, nonce: ours, rf: RECORD_FORMAT_VERSION, gen: { id: 'fake-generation', since: 0, history: [] } } as unknown as Message))
    const ch = await waitFor(() => msgs.find((m) => m.t === MsgType.CHALLENGE) ?? (closed ? 'closed' : undefined), { timeoutMs: 10_000, what: 'a CHALLENGE for the fake HELLO', intervalMs: 10 })
    if (ch === 'closed' || ch.t !== MsgType.CHALLENGE) throw new Error(`the Secondary closed before a CHALLENGE: ${JSON.stringify(msgs.map((m) => MsgType[m.t]))}`)
    sock.write(encodeFrame({ t: MsgType.AUTH, proof: proof(secret, 'primary', Buffer.from(ch.nonce), ours, 'replicafs', Buffer.alloc(0)) }))
    return await waitFor(() => msgs.find((m) => m.t === MsgType.REFUSE || m.t === MsgType.READY), { timeoutMs: 10_000, what: `READY or REFUSE after the AUTH of a fake Primary with srlId ${srlId}`, intervalMs: 10 })
  } finally {
    sock.destroy()
    sockets.delete(sock)
  }
}

// ---------------------------------------------------------------------------------------------
// 2b: a Secondary follows its first Primary and refuses any other

t('a Secondary that follows Primary A refuses Primary B (PRIMARY): on the wire, in lastError and in both logs; A is accepted again', isolated(180_000, async () => {
  const s = await startSecondary()
  const aExtra = ['--secondary', s.address, '--secret-file', s.secretFile]
  const a = await startPrimary({ extraArgs: aExtra })
  const aDirs = dirsOf(a)
  const aId = (await primaryStatus(a.state)).srlId
  // A connects before anything is written: the Secondary follows it and holds no record yet, so
  // Primary B's own checks (DIVERGED, STALE) have nothing to object to and the srlId decides.
  await waitFor(async () => (await s.status()).primary.srlId === aId, { timeoutMs: 30_000, what: 'the Secondary to follow Primary A, the first to connect' })
  await a.stop()

  const smark = logMark(s.state)
  const b = await startPrimary({ extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile] })
  const bId = (await primaryStatus(b.state)).srlId
  assert.is.not(bId, aId, 'two state directories, two SRL ids')
  await fsp.writeFile(path.join(b.mount, 'from-b'), 'must never reach the Secondary')
  const err = await waitRefused(b, s, [aId, bId], 'Primary B\'s rlinks[0].lastError to report the refusal, naming the SRL id followed and its own')
  assert.match(err, /refused/i, `lastError says the Secondary refused the link: ${err}`)
  await waitLogLine(b.state, 0, [s.address, aId, bId], 'a line in Primary B\'s daemon.log about the refusal, naming the link and both SRL ids')
  await waitLogLine(s.state, smark, [aId, bId], 'a line in the Secondary\'s daemon.log refusing Primary B, naming both SRL ids')
  const l = await rlink(b)
  assert.is(l.sentSeq, 0, `Primary B sent nothing: ${JSON.stringify(l)}`)
  assert.is(l.dataAckedSeq, 0, `nothing of Primary B's was applied: ${JSON.stringify(l)}`)
  const ss = await s.status()
  assert.is(ss.primary.srlId, aId, `a refused Primary does not become the one followed: ${JSON.stringify(ss.primary)}`)
  assert.is(ss.receivedSeq, 0, `the Secondary received nothing from Primary B: ${JSON.stringify(ss)}`)
  assert.is(ss.connected, false, `no Primary connected: ${JSON.stringify(ss)}`)
  assert.equal(await fsp.readdir(s.data), [], 'the Secondary\'s data directory is still empty')
  await b.stop()

  // The refusal on the wire carries the documented code PRIMARY; the followed srlId is accepted.
  const secret = Buffer.from((await fsp.readFile(s.secretFile, 'utf8')).trimEnd())
  const other = await fakePrimaryHandshake(s.address, secret, 'a-third-srl-id')
  assert.is(other.t, MsgType.REFUSE, `a fake Primary with another srlId that knows the secret is refused after AUTH: ${JSON.stringify(other)}`)
  if (other.t === MsgType.REFUSE) assert.is(other.code, 'PRIMARY', `the REFUSE code is PRIMARY: ${JSON.stringify(other)}`)
  const same = await fakePrimaryHandshake(s.address, secret, aId)
  assert.is(same.t, MsgType.READY, `the same fake handshake with the followed srlId is accepted (so the refusal above is about the srlId): ${JSON.stringify(same)}`)
  await waitFor(async () => !(await s.status()).connected, { timeoutMs: 20_000, what: 'the Secondary to notice that the fake Primary went away' })

  // Primary A comes back and is accepted.
  const a2 = await restartPrimary(aDirs, { extraArgs: aExtra })
  await fsp.writeFile(path.join(a2.mount, 'from-a'), 'Primary A again')
  await caughtUp(a2, s, 'the Secondary to accept Primary A again and apply its update')
  assert.is(await fsp.readFile(path.join(s.mount, 'from-a'), 'utf8'), 'Primary A again')
  assert.equal(await filesUnder(s.data), ['from-a'], 'only Primary A\'s file is on the Secondary')
  await a2.stop()
  await s.stop()
}))

t('a Secondary holding Primary A\'s updates refuses Primary B, and the refusal names the reason: PRIMARY, not DIVERGED', isolated(180_000, async () => {
  const s = await startSecondary()
  const a = await startPrimary({ extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile] })
  const aId = (await primaryStatus(a.state)).srlId
  await fsp.writeFile(path.join(a.mount, 'from-a'), 'written on Primary A')
  const seenA = await caughtUp(a, s, 'the Secondary to apply Primary A\'s updates')
  await a.stop()

  const smark = logMark(s.state)
  const b = await startPrimary({ extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile] })
  const bId = (await primaryStatus(b.state)).srlId
  for (let i = 0; i < 3; i++) await fsp.writeFile(path.join(b.mount, `from-b-${i}`), 'must never reach the Secondary')
  // refused, whoever refuses: the link does not come up and nothing crosses
  const err = await waitRefused(b, s, [/./], 'Primary B\'s link to be refused (rlinks[0].lastError set, not connected)')
  await waitLogLine(s.state, smark, [/refused/i], 'a line in the Secondary\'s daemon.log about the refusal')
  const l = await rlink(b)
  assert.is(l.sentSeq, 0, `Primary B sent nothing: ${JSON.stringify(l)}`)
  const ss = await s.status()
  assert.is(ss.primary.srlId, aId, `the Secondary still follows Primary A: ${JSON.stringify(ss.primary)}`)
  assert.is(ss.receivedSeq, seenA, `the Secondary received nothing from Primary B: ${JSON.stringify(ss)}`)
  assert.equal(await filesUnder(s.data), ['from-a'], 'the Secondary\'s data directory holds only Primary A\'s file')
  const slog = await logSince(s.state, smark)
  const blog = await daemonLog(b.state)
  await b.stop()
  await s.stop()
  // The reason. ARCHITECTURE.md: "The Secondary refuses (`PRIMARY`) a Primary whose `srlId` is not
  // the one it follows"; DIVERGED is for a Primary that lost records of the same history. Told
  // DIVERGED ("a full synchronization is needed"), an operator who pointed a Primary at the wrong
  // Secondary is sent after the wrong problem.
  assert.ok(err.includes(aId) && err.includes(bId) && !/DIVERGED|STALE/.test(err),
    `Primary B's lastError should give the srlId mismatch (PRIMARY: naming ${aId} and ${bId}), not a divergence of one history; it is: ${err}\n--- Secondary daemon.log since B started ---\n${slog.slice(-1500)}\n--- Primary B daemon.log ---\n${blog.slice(-1500)}`)
}))

// ---------------------------------------------------------------------------------------------
// 2a: a Primary refuses a Secondary whose log has diverged

t('a Primary whose SRL lost its newest records refuses the Secondary that holds them (DIVERGED), then also when it reuses their numbers', isolated(240_000, async () => {
  const s = await startSecondary()
  const pdirs = await tmpdirs('pri')
  const opts = { dirs: pdirs, srlSize: '4M', retain: true, extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile] }
  const p1 = await startPrimary(opts)
  await fsp.writeFile(path.join(p1.mount, 'early-1'), 'early one')
  await fsp.writeFile(path.join(p1.mount, 'early-2'), 'early two')
  const early = await caughtUp(p1, s, 'the Secondary to apply the early updates')
  await p1.stop()

  // The Primary's directories as they are now: what it will be put back to.
  const backup = path.join(pdirs.root, 'backup')
  await fsp.mkdir(backup)
  await execOk('cp', ['-a', pdirs.data, path.join(backup, 'data')])
  await execOk('cp', ['-a', pdirs.state, path.join(backup, 'state')])

  const p2 = await restartPrimary(pdirs, opts)
  for (let i = 1; i <= 3; i++) await fsp.writeFile(path.join(p2.mount, `later-${i}`), `later ${i}`)
  const later = await caughtUp(p2, s, 'the Secondary to apply the later updates')
  assert.ok(later > early, `the later updates have higher sequence numbers (${later} > ${early})`)
  await p2.stop()
  const before = await s.status()
  assert.is(before.receivedSeq, later, `the Secondary logged everything up to ${later}: ${JSON.stringify(before)}`)

  // Put the Primary back: its SRL ends at `early`, the Secondary's at `later`.
  await fsp.rm(pdirs.data, { recursive: true, force: true })
  await fsp.rm(pdirs.state, { recursive: true, force: true })
  await execOk('cp', ['-a', path.join(backup, 'data'), pdirs.data])
  await execOk('cp', ['-a', path.join(backup, 'state'), pdirs.state])
  const smark = logMark(s.state)
  const pmark = logMark(pdirs.state)
  const p3 = await restartPrimary(pdirs, opts)
  const st3 = await primaryStatus(p3.state)
  assert.is(st3.srl.newestSeq, early, `the restored Primary's SRL ends at ${early}: ${JSON.stringify(st3.srl)}`)
  assert.is(st3.srlId, (await s.status()).primary.srlId, 'it is the Primary the Secondary follows (same srlId), so PRIMARY is not the reason')
  const err = await waitRefused(p3, s, ['DIVERGED'], 'the restored Primary to refuse the Secondary as DIVERGED (records beyond its newest)')
  await waitLogLine(p3.state, pmark, [s.address, 'DIVERGED'], 'a line in the Primary\'s daemon.log refusing the Secondary as DIVERGED')
  await waitLogLine(s.state, smark, ['DIVERGED'], 'a line in the Secondary\'s daemon.log saying the Primary refused it as DIVERGED')
  assert.not.match(err, /STALE/, `not reported as STALE: ${err}`)

  // The same Primary now writes different updates under the numbers the Secondary already holds:
  // the Secondary's newest record has another CRC than the Primary's record with that number.
  let n = 0
  await waitFor(async () => {
    await fsp.writeFile(path.join(p3.mount, `other-${n}`), `a different history ${n}`)
    n++
    return ((await primaryStatus(p3.state)).srl.newestSeq ?? 0) >= later
  }, { timeoutMs: 30_000, what: `the restored Primary's SRL to reach sequence number ${later} again`, intervalMs: 10 })
  const reached = (await primaryStatus(p3.state)).srl.newestSeq ?? 0
  assert.ok(reached >= later, `the Primary's newest record (${reached}) is at or past the Secondary's (${later})`)
  // the next handshake attempt (every 2 s) is checked against the new records
  const smark2 = logMark(s.state)
  await waitLogLine(s.state, smark2, ['DIVERGED'], 'a new refusal (DIVERGED) of the Secondary once the Primary holds a record with its newest number')
  const l = await rlink(p3)
  assert.is.not(l.state, 'connected', `the link stays down: ${JSON.stringify(l)}`)
  assert.match(l.lastError ?? '', /DIVERGED/, `lastError still says DIVERGED: ${JSON.stringify(l)}`)
  assert.ok(l.sentSeq <= early, `nothing of the new history was sent: ${JSON.stringify(l)}`)

  const after = await s.status()
  assert.is(after.receivedSeq, later, `the Secondary received nothing more: ${JSON.stringify(after)}`)
  assert.is(after.appliedSeq, later, `and applied nothing more: ${JSON.stringify(after)}`)
  assert.equal(await filesUnder(s.data), ['early-1', 'early-2', 'later-1', 'later-2', 'later-3'], 'the Secondary keeps its own history and none of the new one')
  assert.is(await fsp.readFile(path.join(s.mount, 'later-3'), 'utf8'), 'later 3', 'its mount still shows it')
  await p3.stop()
  await s.stop()

  // 2c, the other side: a Secondary that has followed a Primary restarts on its non-empty data directory.
  const s2 = await startSecondary({ dirs: dirsOf(s), secretFile: s.secretFile })
  const ss2 = await s2.status()
  assert.is(ss2.receivedSeq, later, `restarted on its non-empty data directory, with its log: ${JSON.stringify(ss2)}`)
  assert.is(await fsp.readFile(path.join(s2.mount, 'early-1'), 'utf8'), 'early one')
  await s2.stop()
}))

// ---------------------------------------------------------------------------------------------
// 2c: a new Secondary refuses a non-empty data directory

t('a new Secondary refuses to start on a non-empty data directory: one line, non-zero exit, nothing mounted or left running', isolated(120_000, async () => {
  for (const [label, entry] of [['a file', 'precious.txt'], ['only a dot file', '.keep']] as const) {
    const dirs = await tmpdirs('sec')
    const secret = await secretFile(dirs.root)
    await fsp.writeFile(path.join(dirs.data, entry), 'not the Primary\'s data')
    for (const daemon of [true, false]) {
      const args = secondaryArgs(dirs, secret)
      if (!daemon) args.splice(args.indexOf('--daemon'), 1)
      const r = await cli(args, { timeoutMs: 60_000 })
      const line = assertOneLineError(r, [dirs.data, /not empty|non-empty/i])
      const what = `${label}, ${daemon ? '--daemon' : 'foreground'} (${line})`
      assert.not.ok(await isMounted(dirs.mount), `${what}: nothing mounted at ${dirs.mount}`)
      assert.is(await fuseMountAt(dirs.mount), undefined, what)
      await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 20_000, what: `${what}: no process to hold ${dirs.state}` })
      assert.not.ok(fs.existsSync(path.join(dirs.state, 'control.sock')), `${what}: no control socket left`)
      assert.equal(await fsp.readdir(dirs.data), [entry], `${what}: the data directory is untouched`)
      assert.is(await fsp.readFile(path.join(dirs.data, entry), 'utf8'), 'not the Primary\'s data', what)
      const st = await cli(['status', '--state', dirs.state, '--json'], { timeoutMs: 20_000 })
      assert.ok(st.code !== 0, `${what}: no daemon answers status: ${describeFailure(st)}`)
    }
  }
  // the control case: the same command on an empty data directory starts
  const dirs = await tmpdirs('sec')
  const s = await startSecondary({ dirs, secretFile: await secretFile(dirs.root) })
  assert.equal((await s.status()).primary, { address: null, srlId: null }, 'a new Secondary follows nobody')
  await s.stop()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, async () => {
  for (const s of sockets) s.destroy()
  await assertCleanSlate()
}))

t.run()
