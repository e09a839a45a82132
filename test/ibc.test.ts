/**
 * IBC messaging and freeze (issue 4), end to end on loopback pairs: `replicafs ibc
 * register|send|receive|unfreeze|unregister|status` and `ibc-send` (README.md, `replicafs ibc
 * --help`; docs/FORMAT.md record type 19).
 *
 * Pair A (Primary -> controllable proxy -> Secondary, default --ibc-hold):
 *  - causal order: with a writer running on the Primary's mount before and after the send, the
 *    Secondary's mount when `receive` returns is the Primary's tree at the send, although the
 *    Secondary had a backlog to apply first;
 *  - frozen: later updates keep arriving, are logged and network-acked, but are not applied or
 *    visible until `unfreeze`; then the trees converge;
 *  - at least once: kill -9 of the frozen Secondary, restart: still frozen, same id again;
 *  - a link cut while the message is in flight: it is still delivered (same id);
 *  - a name unregistered on the Secondary: its message is discarded on arrival.
 * Pair B (synchronous=override through a proxy, Secondary with --ibc-hold 2):
 *  - in a synchronous mode, send returns once its message is network-acked;
 *  - error names (EIBC_...) on stderr, one line, non-zero exit;
 *  - --freeze-timeout unfreezes by itself; --no-freeze never stops replication;
 *  - a name never registered on the Secondary holds replication for --ibc-hold, then its message
 *    is discarded; registering within the hold delivers it.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startSecondary, assertCleanSlate, cleanupAll, timed, waitFor, withDeadline, exec, repoRoot, describeFailure,
  type Pair, type Secondary, type Dirs
} from './helpers'
import { startProxy, closeAllProxies, type Proxy } from './helpers/proxy'
import { snapshotTree, diffSnapshots, assertNoDiffs, type Snapshot } from './helpers/replica-tree'
import {
  ibc, ibcOk, ibcSend, send, receive, register, assertIbcError, secStatus, secStatusFast, priStatus, priStatusFast, lastSeq,
  startWriter, killWriters, type Writer, type Sent, type Received
} from './helpers/ibc'

const t = suite('ibc')

t.after(async () => {
  killWriters()
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`ibc.test: cleanup had to force: ${forced.join('; ')}`)
})

// ---------------------------------------------------------------------------------------------
// shared state of the pair-A tests

interface PairA { pair: Pair, proxy: Proxy, sec: Secondary, writer?: Writer, sent?: Sent, atSend?: Snapshot }
let A: PairA | undefined
function pa (): PairA {
  if (A === undefined) throw new Error('pair A is not running (an earlier test failed)')
  return A
}

async function logsOf (pair: { primary: { log(): Promise<string> } }, sec: Secondary): Promise<string> {
  return `\n--- primary daemon.log ---\n${await pair.primary.log()}\n--- secondary daemon.log ---\n${await sec.log()}`
}

function dirsOf (d: Dirs): Dirs {
  return { root: d.root, data: d.data, mount: d.mount, state: d.state }
}

/** Waits until the Secondary has applied everything the Primary has logged. */
async function caughtUp (primaryState: string, secState: string, timeoutMs = 60_000): Promise<number> {
  return await waitFor(async () => {
    const p = await priStatus(primaryState)
    const s = await secStatus(secState)
    const last = lastSeq(p)
    return s.appliedSeq >= last && p.rlinks.every((l) => l.dataAckedSeq >= last) ? last : 0
  }, { timeoutMs, what: 'the Secondary to apply everything the Primary logged', intervalMs: 100 })
}

/** Primary data == Secondary data (ns) == Secondary mount (µs). */
async function assertConverged (primaryData: string, sec: Secondary, what: string): Promise<void> {
  const [a, b, c] = await Promise.all([snapshotTree(primaryData), snapshotTree(sec.data), snapshotTree(sec.mount)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), `${what}: Secondary data vs Primary data`)
  assertNoDiffs(diffSnapshots(a, c, { a: 'primary data', b: 'secondary mount', mtime: 'us' }), `${what}: Secondary mount vs Primary data`)
}

/** The tree at the send (Primary data) equals the Secondary's mount and data directory now. */
async function assertSecondaryIs (atSend: Snapshot, sec: Secondary, what: string): Promise<void> {
  const [m, d] = await Promise.all([snapshotTree(sec.mount), snapshotTree(sec.data)])
  assertNoDiffs(diffSnapshots(atSend, m, { a: 'primary at the send', b: 'secondary mount', mtime: 'us' }), `${what} (mount)`)
  assertNoDiffs(diffSnapshots(atSend, d, { a: 'primary at the send', b: 'secondary data', mtime: 'ns' }), `${what} (data)`)
}

/**
 * Quiesces the writer around a send: pause it, send (flushed), record the Primary's tree, resume.
 * Returns what was sent and the tree at the send.
 */
async function sendQuiesced (w: Writer, primaryData: string, doSend: () => Promise<Sent>): Promise<{ sent: Sent, atSend: Snapshot, stepsAtSend: number }> {
  const stepsAtSend = await w.pause()
  try {
    const sent = await doSend()
    const atSend = await snapshotTree(primaryData)
    return { sent, atSend, stepsAtSend }
  } finally {
    await w.resume()
  }
}

// ---------------------------------------------------------------------------------------------
// pair A

t('pair A starts: Primary -> proxy -> Secondary; status has frozen and ibc fields', timed(90_000, async () => {
  let proxy: Proxy | undefined
  const pair = await startPair({ via: async (addr) => (proxy = await startProxy(addr)).address })
  A = { pair, proxy: proxy!, sec: pair.secondary }
  await waitFor(async () => (await pair.primaryStatus()).rlinks[0]?.state === 'connected', {
    timeoutMs: 30_000, what: 'the RLINK to connect through the proxy', intervalMs: 100
  }).catch(async (err: Error) => { throw new Error(err.message + await logsOf(pair, pair.secondary)) })
  const s = await secStatus(pair.secondary.state)
  assert.is(s.frozen, false, 'a new Secondary is not frozen')
  assert.ok(s.ibc !== null && typeof s.ibc === 'object', `status --json has an ibc object: ${JSON.stringify(s)}`)
  assert.equal(s.ibc.registrations, [], 'no registrations yet')
  assert.is(s.ibc.held, null)
  const p = await priStatus(pair.primary.state)
  assert.equal(p.ibc?.registrations, [], 'the Primary has no registrations')
}))

t('causal order: the Secondary at delivery is the Primary at the send, though it had a backlog to apply first', timed(90_000, async () => {
  const a = pa()
  const { primary } = a.pair
  const key = await register(a.sec.state, 'snap')
  assert.is((await secStatus(a.sec.state)).ibc.registrations.map((r) => r.name).join(','), 'snap')
  const w = a.writer = startWriter(path.join(primary.mount, 'w'), path.join(primary.root, 'ctl'))
  await w.advance(40)
  // The message must travel behind a backlog: hold the link, let updates pile up, then send.
  a.proxy.stall()
  let q: Awaited<ReturnType<typeof sendQuiesced>>
  let atSendStatus
  try {
    await w.advance(30)
    q = await sendQuiesced(w, primary.data, async () => {
      // bin/ibc-send itself (the documented entry point for `sync && ibc-send`)
      const r = await exec(process.execPath, [path.join(repoRoot(), 'bin', 'ibc-send'), '--state', primary.state, 'snap', 'causal order', '--json'], { cwd: repoRoot(), timeoutMs: 120_000 })
      assert.is(r.code, 0, describeFailure(r))
      const s = JSON.parse(r.stdout) as Sent
      assert.match(s.id, /\S/, 'ibc-send printed an id')
      assert.is(s.registeredForThisSend, true, 'ibc-send registered snap on the Primary for this send')
      atSendStatus = await secStatus(a.sec.state)
      return s
    })
    // updates keep flowing after the send (into the held link, then onwards)
    await w.advance(30)
  } finally {
    a.proxy.unstall()
  }
  const { sent, atSend, stepsAtSend } = q
  a.sent = sent
  a.atSend = atSend
  assert.ok(stepsAtSend >= 70, `the writer ran before the send (${stepsAtSend} steps)`)
  assert.ok(atSendStatus!.appliedSeq < sent.seq - 1, `at the send the Secondary had not applied everything before it (applied ${atSendStatus!.appliedSeq}, message at ${sent.seq}): the delivery had to wait for a backlog`)
  const pst = await priStatus(primary.state)
  assert.not.ok(pst.ibc?.registrations.some((r) => r.name === 'snap'), `ibc-send unregistered snap on the Primary after the send: ${JSON.stringify(pst.ibc)}`)
  assert.ok(lastSeq(pst) > sent.seq, 'the Primary logged updates after the message')

  const m: Received = await receive(a.sec.state, 'snap', 60, ['--key', key]).catch(async (err: Error) => { throw new Error(err.message + await logsOf(a.pair, a.sec)) })
  // walk the Secondary right away, while frozen at the message
  const [atDeliveryMount, atDeliveryData] = await Promise.all([snapshotTree(a.sec.mount), snapshotTree(a.sec.data)])
  assert.equal(Object.keys(m).sort(), ['app', 'frozen', 'id', 'message', 'messageBase64', 'seq'], 'receive --json fields')
  assert.equal({ app: m.app, id: m.id, seq: m.seq, message: m.message, frozen: m.frozen }, { app: 'snap', id: sent.id, seq: sent.seq, message: 'causal order', frozen: true })
  assert.is(Buffer.from(m.messageBase64, 'base64').toString(), 'causal order')
  assert.ok(Object.keys(atSend).length > 20, `the Primary's tree at the send has the writer's files (${Object.keys(atSend).length} paths)`)
  assertNoDiffs(diffSnapshots(atSend, atDeliveryMount, { a: 'primary at the send', b: 'secondary mount at delivery', mtime: 'us' }), 'the Secondary mount at delivery')
  assertNoDiffs(diffSnapshots(atSend, atDeliveryData, { a: 'primary at the send', b: 'secondary data at delivery', mtime: 'ns' }), 'the Secondary data directory at delivery')
  const s = await secStatus(a.sec.state)
  assert.is(s.frozen, true, 'frozen after receive')
  assert.is(s.appliedSeq, sent.seq - 1, 'applied exactly up to the record before the message')
  assert.is(s.ibc.held?.id, sent.id)
}))

t('frozen: later updates are logged and network-acked but not applied, not visible; unregister is EIBC_IBC_PENDING', timed(60_000, async () => {
  const a = pa()
  const sent = a.sent!
  const w = a.writer!
  await w.advance(30)
  const target = lastSeq(await priStatus(a.pair.primary.state))
  assert.ok(target > sent.seq + 50, `the Primary logged well past the message (${target} > ${sent.seq} + 50)`)
  const [p, s] = await waitFor(async () => {
    const pp = await priStatus(a.pair.primary.state)
    const ss = await secStatus(a.sec.state)
    return pp.rlinks[0].networkAckedSeq >= target && ss.receivedSeq >= target ? [pp, ss] as const : undefined
  }, { timeoutMs: 30_000, what: `the Secondary to log and network-ack up to ${target} while frozen`, intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(err.message + await logsOf(a.pair, a.sec)) })
  assert.is(s.frozen, true)
  assert.is(s.appliedSeq, sent.seq - 1, 'nothing after the message is applied')
  assert.ok(p.rlinks[0].dataAckedSeq < sent.seq, `the Primary's data ack stays before the message (${p.rlinks[0].dataAckedSeq})`)
  assert.ok(p.rlinks[0].lagUpdates >= target - sent.seq, `the lag counts what waits: ${JSON.stringify(p.rlinks[0])}`)
  await assertSecondaryIs(a.atSend!, a.sec, 'while frozen, the Secondary still shows the tree at the send')
  const st = JSON.parse((await ibcOk(a.sec.state, 'status', ['--json'])).stdout) as { frozen: boolean, held: { id: string, phase: string } | null }
  assert.equal({ frozen: st.frozen, id: st.held?.id, phase: st.held?.phase }, { frozen: true, id: sent.id, phase: 'frozen' }, 'ibc status --json')
  assert.match((await ibcOk(a.sec.state, 'status')).stdout, /frozen:\s+yes, by snap/, 'ibc status says who froze it')
  assertIbcError(await ibc(a.sec.state, 'unregister', ['snap']), 'EIBC_IBC_PENDING', /snap/)
  assert.ok((await secStatus(a.sec.state)).ibc.registrations.some((r) => r.name === 'snap'), 'still registered after the refused unregister')
}))

t('at least once: kill -9 of the frozen Secondary; restarted, it is still frozen and receive gets the same id', timed(90_000, async () => {
  const a = pa()
  const sent = a.sent!
  const listen = (await secStatus(a.sec.state)).listen
  const logged = (await secStatus(a.sec.state)).receivedSeq
  await a.sec.kill9()
  const sec2 = await startSecondary({ dirs: dirsOf(a.sec), listen, secretFile: a.sec.secretFile })
  a.sec = sec2
  assert.is(sec2.address, listen)
  const s0 = await secStatus(sec2.state)
  assert.is(s0.frozen, true, `still frozen after the restart: ${JSON.stringify(s0.ibc)}`)
  assert.is(s0.appliedSeq, sent.seq - 1, 'the restart applied nothing past the message')
  assert.ok(s0.receivedSeq >= logged, 'what was logged before the kill is still logged')
  await waitFor(async () => (await priStatus(a.pair.primary.state)).rlinks[0].state === 'connected', {
    timeoutMs: 30_000, what: 'the Primary to reconnect to the restarted Secondary', intervalMs: 100
  }).catch(async (err: Error) => { throw new Error(err.message + await logsOf(a.pair, sec2)) })
  const m = await receive(sec2.state, 'snap', 30)
  assert.equal({ id: m.id, seq: m.seq, message: m.message, frozen: m.frozen }, { id: sent.id, seq: sent.seq, message: 'causal order', frozen: true }, 'the same message again')
  // updates still arrive while frozen, and still are not applied
  const target = lastSeq(await priStatus(a.pair.primary.state))
  await waitFor(async () => (await secStatus(sec2.state)).receivedSeq >= target, { timeoutMs: 30_000, what: `the restarted Secondary to log up to ${target}`, intervalMs: 100 })
  await assertSecondaryIs(a.atSend!, sec2, 'after the restart, still the tree at the send')
  assert.is((await secStatus(sec2.state)).appliedSeq, sent.seq - 1)

  // unfreeze: everything logged meanwhile is applied, and the trees converge
  await ibcOk(sec2.state, 'unfreeze', ['snap'])
  await waitFor(async () => (await secStatus(sec2.state)).appliedSeq > target, { timeoutMs: 30_000, what: 'the Secondary to apply past the message once unfrozen', intervalMs: 100 })
  const code = await a.writer!.stop()
  assert.is(code, 0, `the writer ran without an error: ${a.writer!.lines.slice(-3).join(' | ')}`)
  a.writer = undefined
  await caughtUp(a.pair.primary.state, sec2.state)
  const s1 = await secStatus(sec2.state)
  assert.is(s1.frozen, false)
  assert.is(s1.ibc.held, null)
  await assertConverged(a.pair.primary.data, sec2, 'after unfreeze')
  await ibcOk(sec2.state, 'unregister', ['snap'])
  assert.equal((await secStatus(sec2.state)).ibc.registrations, [])
}))

t('a link cut while the message is in flight: it is delivered after the reconnect, with its id, at the right point', timed(90_000, async () => {
  const a = pa()
  const { primary } = a.pair
  await register(a.sec.state, 'cut')
  const w = a.writer = startWriter(path.join(primary.mount, 'w2'), path.join(primary.root, 'ctl2'))
  // receive waits from before the send
  const rx = receive(a.sec.state, 'cut', 90)
  rx.catch(() => {})
  await w.advance(20)
  const acceptedBefore = a.proxy.accepted
  a.proxy.stall()
  let q: Awaited<ReturnType<typeof sendQuiesced>>
  try {
    await w.advance(10)
    q = await sendQuiesced(w, primary.data, () => ibcSend(primary.state, 'cut', 'through a cut'))
    await w.advance(10)
    // the message has left the Primary (into the held link) before the cut
    await waitFor(async () => (await priStatus(primary.state)).rlinks[0].sentSeq >= q.sent.seq, { timeoutMs: 20_000, what: 'the Primary to send the IBC record', intervalMs: 50 })
    assert.ok(a.proxy.cut() >= 1, 'a connection was cut')
  } finally {
    a.proxy.unstall()
  }
  const m = await rx.catch(async (err: Error) => { throw new Error(err.message + await logsOf(a.pair, a.sec)) })
  const [atDelivery] = await Promise.all([snapshotTree(a.sec.mount)])
  assert.ok(a.proxy.accepted > acceptedBefore, 'the Primary reconnected through the proxy')
  assert.equal({ id: m.id, seq: m.seq, message: m.message, frozen: m.frozen }, { id: q.sent.id, seq: q.sent.seq, message: 'through a cut', frozen: true })
  assertNoDiffs(diffSnapshots(q.atSend, atDelivery, { a: 'primary at the send', b: 'secondary mount at delivery', mtime: 'us' }), 'the Secondary at delivery after a cut')
  assert.is((await secStatus(a.sec.state)).appliedSeq, q.sent.seq - 1)
  await ibcOk(a.sec.state, 'unfreeze', ['cut'])
  assert.is(await w.stop(), 0)
  a.writer = undefined
  await caughtUp(primary.state, a.sec.state)
  await assertConverged(primary.data, a.sec, 'after the cut and unfreeze')
  await ibcOk(a.sec.state, 'unregister', ['cut'])
}))

t('a name unregistered on the Secondary: its message is discarded on arrival and replication goes on (no hold)', timed(60_000, async () => {
  const a = pa()
  const { primary } = a.pair
  await register(a.sec.state, 'gone')
  await ibcOk(a.sec.state, 'unregister', ['gone'])
  const sent = await ibcSend(primary.state, 'gone', 'to nobody')
  await fsp.writeFile(path.join(primary.mount, 'after-gone'), 'after the discarded message')
  // this Secondary holds a never-registered name's message for 600 s (the default): catching up
  // within the test's deadline means the message was discarded on arrival, not held
  const last = await caughtUp(primary.state, a.sec.state, 20_000).catch(async (err: Error) => { throw new Error(err.message + await logsOf(a.pair, a.sec)) })
  assert.ok(last > sent.seq)
  const s = await secStatus(a.sec.state)
  assert.is(s.frozen, false)
  assert.is(s.ibc.held, null)
  assert.equal(s.ibc.queued, [])
  assert.is(await fsp.readFile(path.join(a.sec.mount, 'after-gone'), 'utf8'), 'after the discarded message')
  // registering again later does not bring the discarded message back
  await register(a.sec.state, 'gone')
  assertIbcError(await ibc(a.sec.state, 'receive', ['gone', '--timeout', '1']), 'EIBC_NO_MESSAGE')
  await ibcOk(a.sec.state, 'unregister', ['gone'])
}))

t('pair A stops cleanly', timed(60_000, async () => {
  const a = pa()
  A = undefined
  killWriters()
  await a.pair.primary.stop()
  await a.sec.stop()
  await a.proxy.close()
}))

// ---------------------------------------------------------------------------------------------
// pair B: direct, --ibc-hold 2 on the Secondary

let B: Pair | undefined
let proxyB: Proxy | undefined
function pb (): Pair {
  if (B === undefined) throw new Error('pair B is not running (an earlier test failed)')
  return B
}

t('pair B starts (synchronous=override, through a proxy; Secondary with --ibc-hold 2)', timed(90_000, async () => {
  B = await startPair({ synchronous: 'override', secondaryExtraArgs: ['--ibc-hold', '2'], via: async (addr) => (proxyB = await startProxy(addr)).address })
  await waitFor(async () => (await pb().primaryStatus()).rlinks[0]?.state === 'connected', { timeoutMs: 30_000, what: 'pair B to connect', intervalMs: 100 })
}))

t('synchronous=override: ibc send returns only once the message is network-acked', timed(60_000, async () => {
  const { primary, secondary } = pb()
  const proxy = proxyB!
  await register(secondary.state, 'sync')
  await register(primary.state, 'sync')
  const before = lastSeq(await priStatus(primary.state))
  let settled = false
  let failed: Error | undefined
  proxy.stall()
  let pending: Promise<Sent> | undefined
  try {
    pending = send(primary.state, 'sync', 'acked first', ['--no-freeze'])
    pending.then(() => { settled = true }, (err: Error) => { settled = true; failed = err })
    // the message is logged and on its way, held by the stalled link
    const s = await waitFor(async () => {
      if (failed !== undefined) throw new Error(`ibc send failed: ${failed.message}`)
      const st = await priStatus(primary.state)
      return lastSeq(st) > before && st.rlinks[0].sentSeq > before ? st : undefined
    }, { timeoutMs: 20_000, what: 'the Primary to log and send the message', intervalMs: 50 })
    assert.ok(s.rlinks[0].networkAckedSeq <= before, 'not network-acked while the link is held')
    await priStatus(primary.state) // one more round trip to the daemon: a send that did not wait has answered by now
    assert.not.ok(settled, 'ibc send has not returned while its message is not network-acked')
    // a send in progress is pending on the Primary: its name cannot be unregistered now
    assertIbcError(await ibc(primary.state, 'unregister', ['sync']), 'EIBC_IBC_PENDING', /sync/)
    assert.not.ok(settled, 'still waiting for the network ack')
  } finally {
    proxy.unstall()
  }
  const sent = await pending!
  const s = await priStatus(primary.state)
  assert.ok(s.rlinks[0].networkAckedSeq >= sent.seq, `network-acked when send returned (${s.rlinks[0].networkAckedSeq} >= ${sent.seq})`)
  const m = await receive(secondary.state, 'sync', 10)
  assert.equal({ id: m.id, frozen: m.frozen }, { id: sent.id, frozen: false })
  await ibcOk(secondary.state, 'unregister', ['sync'])
  await ibcOk(primary.state, 'unregister', ['sync'])
}))

t('errors: VVR error names first on stderr, one line, non-zero exit', timed(60_000, async () => {
  const pri = pb().primary.state
  const sec = pb().secondary.state
  // unknown names
  assertIbcError(await ibc(sec, 'receive', ['nope', '--timeout', '1']), 'EIBC_NO_APPLICATION', /nope/)
  assertIbcError(await ibc(sec, 'unfreeze', ['nope']), 'EIBC_NO_APPLICATION', /nope/)
  assertIbcError(await ibc(sec, 'unregister', ['nope']), 'EIBC_NO_APPLICATION', /nope/)
  assertIbcError(await ibc(pri, 'unregister', ['nope']), 'EIBC_NO_APPLICATION', /nope/)
  assertIbcError(await ibc(pri, 'send', ['nope', 'hello']), 'EIBC_NO_APPLICATION', /nope/)
  // duplicates
  const key = await register(sec, 'dup')
  assertIbcError(await ibc(sec, 'register', ['dup']), 'EIBC_DUP_APPLICATION', /dup/)
  await register(pri, 'dup')
  assertIbcError(await ibc(pri, 'register', ['dup']), 'EIBC_DUP_APPLICATION', /dup/)
  // names: 31 bytes is the most; 32 and more are refused
  const n31 = 'a'.repeat(31)
  await register(sec, n31)
  await ibcOk(sec, 'unregister', [n31])
  assertIbcError(await ibc(sec, 'register', ['b'.repeat(32)]), 'EIBC_INVALID_NAME')
  assertIbcError(await ibc(pri, 'register', ['c'.repeat(40)]), 'EIBC_INVALID_NAME')
  // wrong role
  assertIbcError(await ibc(pri, 'receive', ['dup', '--timeout', '1']), 'EIBC_WRONG_ROLE')
  assertIbcError(await ibc(pri, 'unfreeze', ['dup']), 'EIBC_WRONG_ROLE')
  assertIbcError(await ibc(sec, 'send', ['dup', 'hello']), 'EIBC_WRONG_ROLE')
  const r = await exec(process.execPath, [path.join(repoRoot(), 'bin', 'ibc-send'), '--state', sec, 'dup', 'hello'], { cwd: repoRoot(), timeoutMs: 60_000 })
  assertIbcError(r, 'EIBC_WRONG_ROLE')
  // nothing to receive
  const t0 = Date.now()
  assertIbcError(await ibc(sec, 'receive', ['dup', '--timeout', '1']), 'EIBC_NO_MESSAGE', /dup/)
  assert.ok(Date.now() - t0 >= 1000, 'receive --timeout 1 waited its second')
  // a wrong key; unfreeze when not frozen
  assertIbcError(await ibc(sec, 'receive', ['dup', '--timeout', '1', '--key', key + 'x']), 'EIBC_NO_APPLICATION')
  assertIbcError(await ibc(sec, 'unfreeze', ['dup']), 'EIBC_NOT_FROZEN')
  // nothing failed changed anything
  await ibcOk(sec, 'unregister', ['dup', '--key', key])
  await ibcOk(pri, 'unregister', ['dup'])
  assert.equal((await secStatus(sec)).ibc.registrations, [])
  assert.equal((await priStatus(pri)).ibc?.registrations, [])
  assert.is((await secStatus(sec)).frozen, false)
}))

t('--freeze-timeout 2: the Secondary unfreezes by itself about 2 s after delivery', timed(60_000, async () => {
  const { primary, secondary } = pb()
  await register(secondary.state, 'ft')
  await register(primary.state, 'ft')
  const sent = await send(primary.state, 'ft', 'thaw by yourself', ['--freeze-timeout', '2'])
  await fsp.writeFile(path.join(primary.mount, 'after-ft'), 'written after the message')
  const m = await receive(secondary.state, 'ft', 30)
  const delivered = Date.now()
  assert.equal({ id: m.id, frozen: m.frozen }, { id: sent.id, frozen: true })
  const s0 = await secStatus(secondary.state)
  assert.is(s0.frozen, true, 'frozen right after delivery')
  assert.is(s0.appliedSeq, sent.seq - 1)
  await waitFor(async () => {
    const s = await secStatus(secondary.state)
    return !s.frozen && s.appliedSeq > sent.seq
  }, { timeoutMs: 20_000, what: 'the freeze timeout to unfreeze the Secondary', intervalMs: 100 })
  const elapsed = Date.now() - delivered
  assert.ok(elapsed >= 1000, `it stayed frozen for a good part of the 2 s (${elapsed} ms after receive returned)`)
  await caughtUp(primary.state, secondary.state)
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-ft'), 'utf8'), 'written after the message')
  await ibcOk(secondary.state, 'unregister', ['ft'])
  await ibcOk(primary.state, 'unregister', ['ft'])
}))

t('--no-freeze: the message waits for receive (frozen false) and replication never stops', timed(60_000, async () => {
  const { primary, secondary } = pb()
  await register(secondary.state, 'nf')
  const sent = await ibcSend(primary.state, 'nf', 'no freeze', ['--no-freeze'])
  await fsp.writeFile(path.join(primary.mount, 'after-nf'), 'one')
  // nobody has received it yet, and still everything after it is applied
  const last = await caughtUp(primary.state, secondary.state, 20_000)
  assert.ok(last > sent.seq)
  const s = await secStatus(secondary.state)
  assert.is(s.frozen, false)
  assert.equal(s.ibc.queued.map((q) => q.id), [sent.id], 'the message is queued for receive')
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-nf'), 'utf8'), 'one')
  assertIbcError(await ibc(secondary.state, 'unregister', ['nf']), 'EIBC_IBC_PENDING')
  const m = await receive(secondary.state, 'nf', 10)
  assert.equal({ id: m.id, seq: m.seq, message: m.message, frozen: m.frozen }, { id: sent.id, seq: sent.seq, message: 'no freeze', frozen: false })
  await fsp.writeFile(path.join(primary.mount, 'after-nf'), 'two')
  await caughtUp(primary.state, secondary.state, 20_000)
  assert.is((await secStatus(secondary.state)).frozen, false)
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-nf'), 'utf8'), 'two')
  assertIbcError(await ibc(secondary.state, 'unfreeze', ['nf']), 'EIBC_NOT_FROZEN')
  // messages are bytes: from a file (not UTF-8) and printed as they are without --json
  const bin = Buffer.from([0x00, 0xff, 0x0a, 0x01, 0xc3])
  const file = path.join(primary.root, 'message.bin')
  await fsp.writeFile(file, bin)
  const sentBin = await ibcSend(primary.state, 'nf', undefined, ['--no-freeze', '--file', file])
  const mb = await receive(secondary.state, 'nf', 10)
  assert.is(mb.id, sentBin.id)
  assert.ok(Buffer.from(mb.messageBase64, 'base64').equals(bin), `messageBase64 is the file's bytes: ${mb.messageBase64}`)
  await ibcSend(primary.state, 'nf', 'second\nline', ['--no-freeze'])
  const plain = await ibcOk(secondary.state, 'receive', ['nf', '--timeout', '10'])
  assert.is(plain.stdout, 'second\nline', 'receive without --json prints the message itself')
  await ibcOk(secondary.state, 'unregister', ['nf'])
}))

t('two messages in a row: each freezes the Secondary at its own point, in order', timed(60_000, async () => {
  const { primary, secondary } = pb()
  await register(secondary.state, 'seq2')
  const s1 = await ibcSend(primary.state, 'seq2', 'first')
  await fsp.writeFile(path.join(primary.mount, 'between'), 'between the two')
  const s2 = await ibcSend(primary.state, 'seq2', 'second')
  await fsp.writeFile(path.join(primary.mount, 'after-both'), 'after both')
  assert.ok(s2.seq > s1.seq && s2.id !== s1.id, `two messages, two ids (${s1.id}, ${s2.id})`)
  const m1 = await receive(secondary.state, 'seq2', 10)
  assert.equal({ id: m1.id, message: m1.message }, { id: s1.id, message: 'first' })
  assert.is((await secStatus(secondary.state)).appliedSeq, s1.seq - 1)
  assert.not.ok(await fsp.access(path.join(secondary.mount, 'between')).then(() => true, () => false), 'nothing after the first message is visible')
  await ibcOk(secondary.state, 'unfreeze', ['seq2'])
  const m2 = await receive(secondary.state, 'seq2', 10)
  assert.equal({ id: m2.id, message: m2.message, frozen: m2.frozen }, { id: s2.id, message: 'second', frozen: true })
  const st = await secStatus(secondary.state)
  assert.is(st.appliedSeq, s2.seq - 1, 'frozen again, at the second message')
  assert.is(await fsp.readFile(path.join(secondary.mount, 'between'), 'utf8'), 'between the two', 'what came between the two messages is applied')
  assert.not.ok(await fsp.access(path.join(secondary.mount, 'after-both')).then(() => true, () => false), 'what came after the second is not')
  await ibcOk(secondary.state, 'unfreeze', ['seq2'])
  await caughtUp(primary.state, secondary.state, 20_000)
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-both'), 'utf8'), 'after both')
  await ibcOk(secondary.state, 'unregister', ['seq2'])
}))

t('register --deliver-timeout 2: a message nobody receives is discarded after 2 s and replication goes on', timed(60_000, async () => {
  const { primary, secondary } = pb()
  await register(secondary.state, 'dt', ['--deliver-timeout', '2'])
  const t0 = Date.now()
  const sent = await ibcSend(primary.state, 'dt', 'nobody receives this')
  await fsp.writeFile(path.join(primary.mount, 'after-dt'), 'after the undelivered message')
  const markerSeq = lastSeq(await priStatusFast(primary.state))
  const held = await waitFor(async () => {
    const s = await secStatusFast(secondary.state)
    return s.receivedSeq >= markerSeq ? s : undefined
  }, { timeoutMs: 10_000, what: 'the marker to be logged', intervalMs: 20 })
  const seenAt = Date.now() - t0
  assert.equal({ frozen: held.frozen, applied: held.appliedSeq, phase: held.ibc.held?.phase }, { frozen: true, applied: sent.seq - 1, phase: 'delivering' }, `frozen at the message, waiting for receive (observed ${seenAt} ms after the send began; the deliver timeout is 2 s)`)
  await waitFor(async () => {
    const s = await secStatusFast(secondary.state)
    return !s.frozen && s.appliedSeq >= markerSeq
  }, { timeoutMs: 20_000, what: 'the undelivered message to be discarded and replication to go on', intervalMs: 50 })
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-dt'), 'utf8'), 'after the undelivered message')
  assert.is((await secStatus(secondary.state)).ibc.held, null)
  assertIbcError(await ibc(secondary.state, 'receive', ['dt', '--timeout', '1']), 'EIBC_NO_MESSAGE')
  await ibcOk(secondary.state, 'unregister', ['dt'])
}))

t('a name never registered on the Secondary holds replication for --ibc-hold 2 s, then the message is discarded', timed(60_000, async () => {
  const { primary, secondary } = pb()
  // The hold's start is observed while the send runs (a poll of the control socket every 10 ms), so
  // its length is measured from within a few ms of its start, not from before the CLI started.
  let heldFrom = 0
  let polling = true
  const observe = (async () => {
    while (polling && heldFrom === 0) {
      if ((await secStatusFast(secondary.state)).ibc.held?.app === 'never') heldFrom = Date.now()
      else await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })()
  const sent = await ibcSend(primary.state, 'never', 'nobody listens')
  await fsp.writeFile(path.join(primary.mount, 'after-never'), 'behind the held message')
  const markerSeq = lastSeq(await priStatusFast(primary.state))
  // observed while the hold lasts: the marker is logged, not applied
  const held = await waitFor(async () => {
    const s = await secStatusFast(secondary.state)
    return s.receivedSeq >= markerSeq ? s : undefined
  }, { timeoutMs: 10_000, what: 'the Secondary to log the update after the message', intervalMs: 20 })
  await withDeadline(observe, 10_000, 'the hold to be observed')
  polling = false
  assert.ok(heldFrom > 0, 'the hold was observed')
  assert.is(held.appliedSeq, sent.seq - 1, `replication is held at the message (the hold is 2 s): ${JSON.stringify({ applied: held.appliedSeq, ibc: held.ibc })}`)
  assert.equal({ app: held.ibc.held?.app, id: held.ibc.held?.id, phase: held.ibc.held?.phase }, { app: 'never', id: sent.id, phase: 'unregistered' })
  await waitFor(async () => (await secStatusFast(secondary.state)).appliedSeq >= markerSeq, { timeoutMs: 20_000, what: 'replication to go on after the hold', intervalMs: 20 })
  const released = Date.now() - heldFrom
  assert.ok(released >= 1900 && released < 6000, `the hold lasted about 2 s (replication went on ${released} ms after the hold was first seen)`)
  const s = await secStatus(secondary.state)
  assert.is(s.ibc.held, null)
  assert.is(s.frozen, false)
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-never'), 'utf8'), 'behind the held message')
  // the message was discarded: registering now does not deliver it
  await register(secondary.state, 'never')
  assertIbcError(await ibc(secondary.state, 'receive', ['never', '--timeout', '1']), 'EIBC_NO_MESSAGE')
  await ibcOk(secondary.state, 'unregister', ['never'])
}))

t('registering within the hold delivers the held message (frozen at it)', timed(60_000, async () => {
  const { primary, secondary } = pb()
  const sent = await ibcSend(primary.state, 'late', 'registered late')
  await fsp.writeFile(path.join(primary.mount, 'after-late'), 'behind the late message')
  const markerSeq = lastSeq(await priStatusFast(primary.state))
  await waitFor(async () => {
    const s = await secStatusFast(secondary.state)
    return s.ibc.held?.app === 'late' && s.ibc.held.phase === 'unregistered'
  }, { timeoutMs: 10_000, what: 'the message for late to be held as unregistered (within the 2 s hold)', intervalMs: 10 })
  await register(secondary.state, 'late')
  assertIbcError(await ibc(secondary.state, 'unregister', ['late']), 'EIBC_IBC_PENDING')
  const m = await receive(secondary.state, 'late', 10)
  assert.equal({ id: m.id, seq: m.seq, message: m.message, frozen: m.frozen }, { id: sent.id, seq: sent.seq, message: 'registered late', frozen: true })
  await waitFor(async () => (await secStatus(secondary.state)).receivedSeq >= markerSeq, { timeoutMs: 10_000, what: 'the marker to be logged', intervalMs: 50 })
  const s = await secStatus(secondary.state)
  assert.is(s.frozen, true)
  assert.is(s.appliedSeq, sent.seq - 1, 'frozen at the message (the 2 s hold no longer applies once registered)')
  await ibcOk(secondary.state, 'unfreeze', ['late'])
  await caughtUp(primary.state, secondary.state, 20_000)
  assert.is(await fsp.readFile(path.join(secondary.mount, 'after-late'), 'utf8'), 'behind the late message')
  await ibcOk(secondary.state, 'unregister', ['late'])
}))

t('pair B stops cleanly', timed(60_000, async () => {
  const b = pb()
  B = undefined
  await b.stop()
  await proxyB?.close()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
