/**
 * RLINK refusals and bad input. Each refusal (wrong secret, another RDS name, another protocol
 * version) must be visible on both sides (the Primary's `status` rlinks[0].lastError and its
 * daemon.log, the Secondary's daemon.log) with a message naming the problem, and no update may be
 * sent or applied. A peer sending garbage is disconnected and the Secondary keeps serving. Bad
 * command lines print one line and exit non-zero. Fake peers speak src/format/wire.ts directly.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as net from 'net'
import * as path from 'path'
import {
  assertOneLineError,
  startPrimary, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, cli, tmpdirs, primaryArgs, secondaryArgs,
  secretFile, primaryStatus, daemonLog, isMounted, pidsWithArg, processAlive,
  type ExecResult, type Dirs, type Primary, type Secondary, type PrimaryStatus, type RlinkStatus
} from './helpers'
import { encodeFrame, FrameDecoder, MsgType, PROTOCOL_VERSION, nonce, proof, type Message } from '../src/format/wire'
import { RECORD_FORMAT_VERSION } from '../src/format/record'
import { WIRE_FRAME_BYTES_MAX, RLINK_HANDSHAKES_MAX } from '../src/limits'

const t = suite('rlink-errors')

const servers = new Set<net.Server>()
const sockets = new Set<net.Socket>()

async function closeFakes (): Promise<void> {
  for (const s of sockets) s.destroy()
  sockets.clear()
  await Promise.all([...servers].map(async (s) => await new Promise<void>((resolve) => s.close(() => resolve()))))
  servers.clear()
}

t.after(async () => {
  await closeFakes()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`rlink-errors.test: cleanup had to force: ${forced.join('; ')}`)
})

// ---------------------------------------------------------------------------------------------
// helpers

/** Size of daemon.log now, so later checks look only at what was logged after this point. */
function logMark (state: string): number {
  try { return fs.statSync(path.join(state, 'daemon.log')).size } catch { return 0 }
}

async function logSince (state: string, mark: number): Promise<string> {
  try { return (await fsp.readFile(path.join(state, 'daemon.log'))).subarray(mark).toString('utf8') } catch { return '' }
}

/** Waits until the daemon.log written after `mark` has a line matching every pattern; returns it. */
async function waitLogLine (state: string, mark: number, patterns: Array<RegExp | string>, what: string, exclude?: string): Promise<string> {
  const ok = (l: string): boolean => patterns.every((p) => (typeof p === 'string' ? l.includes(p) : p.test(l))) && (exclude === undefined || !l.includes(exclude))
  try {
    return await waitFor(async () => (await logSince(state, mark)).split('\n').find(ok), { timeoutMs: 20_000, what, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- ${state}/daemon.log since the mark ---\n${(await logSince(state, mark)).slice(-3000)}`)
  }
}

async function rlink (p: Primary): Promise<RlinkStatus> {
  const st: PrimaryStatus = await primaryStatus(p.state)
  assert.is(st.rlinks.length, 1, `one RLINK in status: ${JSON.stringify(st.rlinks)}`)
  return st.rlinks[0]
}

/** Waits for rlinks[0].lastError to match every pattern; returns it. */
async function waitLastError (p: Primary, patterns: Array<RegExp | string>, what: string, others: Array<{ state: string, label: string }> = []): Promise<string> {
  let last: RlinkStatus | undefined
  try {
    return await waitFor(async () => {
      last = await rlink(p)
      const e = last.lastError
      return e !== null && patterns.every((pt) => (typeof pt === 'string' ? e.includes(pt) : pt.test(e))) ? e : undefined
    }, { timeoutMs: 30_000, what, intervalMs: 200 })
  } catch (err) {
    const logs = await Promise.all([{ state: p.state, label: 'primary' }, ...others].map(async (o) => `--- ${o.label} daemon.log ---\n${await daemonLog(o.state)}`))
    throw new Error(`${(err as Error).message}\nlast rlinks[0]: ${JSON.stringify(last)}\n${logs.join('\n')}`)
  }
}

/** Makes a few changes on the Primary (so there is something it must not send). */
async function writeSome (p: Primary): Promise<void> {
  await fsp.writeFile(path.join(p.mount, 'a'), 'must not reach the secondary')
  await fsp.mkdir(path.join(p.mount, 'dir'))
  await fsp.writeFile(path.join(p.mount, 'dir', 'b'), Buffer.alloc(10_000, 7))
}

/** Nothing crossed: the Primary logged its writes and sent none; the Secondary received and applied none. */
async function assertNothingReplicated (p: Primary, s: Secondary): Promise<void> {
  await p.quiesce()
  assert.ok((await fsp.readdir(p.data)).includes('a'), 'the Primary applied its own writes')
  const ps = await primaryStatus(p.state)
  const l = ps.rlinks[0]
  const ctx = `primary rlinks[0] ${JSON.stringify(l)}, srl ${JSON.stringify(ps.srl)}`
  assert.ok((ps.srl.newestSeq ?? 0) >= 4, `the Primary logged its writes: ${ctx}`)
  assert.is.not(l.state, 'connected', `a refused link is not connected: ${ctx}`)
  assert.is(l.sentSeq, 0, `no update was sent: ${ctx}`)
  assert.is(l.networkAckedSeq, 0, `nothing was network-acked: ${ctx}`)
  assert.is(l.dataAckedSeq, 0, `nothing was data-acked: ${ctx}`)
  assert.ok(l.lagUpdates > 0, `the lag counts the unsent updates: ${ctx}`)
  assert.ok(l.lastError !== null, ctx)
  const ss = await s.status()
  const sctx = `secondary status ${JSON.stringify(ss)}`
  assert.is(ss.receivedSeq, 0, `the Secondary received nothing: ${sctx}`)
  assert.is(ss.appliedSeq, 0, `the Secondary applied nothing: ${sctx}`)
  assert.is(ss.connected, false, `no Primary is connected: ${sctx}`)
  assert.is(ss.primary.srlId, null, `a refused Primary is not the one the Secondary follows: ${sctx}`)
  assert.equal(await fsp.readdir(s.data), [], 'the Secondary\'s data directory is still empty')
  assert.equal(await fsp.readdir(s.mount), [], 'the Secondary\'s mount shows nothing')
}

/** A test-driven peer on one TCP connection, speaking frames. */
interface FakePeer {
  sock: net.Socket
  msgs: Message[]
  /** raw bytes received */
  raw: number
  decodeError: string | undefined
  closed: boolean
  send(m: Message): void
  waitMsg(type: MsgType, what: string, ms?: number): Promise<Message>
  waitClosed(what: string, ms?: number): Promise<void>
}

function fakePeer (sock: net.Socket): FakePeer {
  sockets.add(sock)
  const d = new FrameDecoder()
  const peer: FakePeer = {
    sock,
    msgs: [],
    raw: 0,
    decodeError: undefined,
    closed: false,
    send (m) { sock.write(encodeFrame(m)) },
    async waitMsg (type, what, ms = 10_000) {
      return await waitFor(() => peer.msgs.find((m) => m.t === type), { timeoutMs: ms, what: `${what} (got so far: ${peer.msgs.map((m) => MsgType[m.t]).join(', ') || 'nothing'}${peer.closed ? ', then close' : ''})`, intervalMs: 10 })
    },
    async waitClosed (what, ms = 10_000) {
      await waitFor(() => peer.closed, { timeoutMs: ms, what, intervalMs: 10 })
    }
  }
  sock.on('data', (b: Buffer) => {
    peer.raw += b.length
    if (peer.decodeError !== undefined) return
    try { peer.msgs.push(...d.push(Buffer.from(b))) } catch (err) { peer.decodeError = (err as Error).message }
  })
  sock.on('error', () => {})
  sock.on('close', () => { peer.closed = true; sockets.delete(sock) })
  return peer
}

async function connectFake (address: string): Promise<FakePeer> {
  const i = address.lastIndexOf(':')
  const sock = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) })
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
  return fakePeer(sock)
}

/** A fake Secondary: a listener whose connections the test answers. */
async function fakeSecondary (onConn: (peer: FakePeer) => void): Promise<{ address: string, peers: FakePeer[] }> {
  const peers: FakePeer[] = []
  const server = net.createServer((sock) => {
    const p = fakePeer(sock)
    peers.push(p)
    onConn(p)
  })
  servers.add(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, peers }
}

function hello (over: Partial<Record<string, unknown>> = {}): Message {
  return { t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: 'replicafs', srlId: 'fake-primary-srl', nonce: nonce(), rf: RECORD_FORMAT_VERSION, gen: { id: 'fake-generation', since: 0, history: [] }, ...over } as unknown as Message
}

/** Non-zero exit, exactly one line on stderr naming every `names` and matching `what`, no stack. */
const assertOneLine = (r: ExecResult, names: string[], what: RegExp): string => assertOneLineError(r, [...names, what])

async function assertLeftNothing (dirs: Dirs): Promise<void> {
  assert.not.ok(await isMounted(dirs.mount), `${dirs.mount} was left mounted`)
  await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 20_000, what: `no process to hold ${dirs.state} after the failed start` })
}

// ---------------------------------------------------------------------------------------------
// refusals between real daemons

t('wrong secret: refused on both sides, nothing sent', isolated(120_000, async () => {
  const s = await startSecondary({ secret: 'the secret the secondary knows' })
  const smark = logMark(s.state)
  const pdirs = await tmpdirs('pri')
  const wrong = await secretFile(pdirs.root, 'a different secret', 'wrong-secret')
  const p = await startPrimary({ dirs: pdirs, extraArgs: ['--secondary', s.address, '--secret-file', wrong] })
  await writeSome(p)
  const err = await waitLastError(p, [/secret|authenticat/i], 'the Primary to report the secret mismatch in rlinks[0].lastError', [{ state: s.state, label: 'secondary' }])
  await waitLogLine(p.state, 0, [/secret|authenticat/i, s.address], `a line in the Primary's daemon.log naming the link (${s.address}) and the secret problem`, wrong)
  await waitLogLine(s.state, smark, [/secret|authenticat/i], 'a line in the Secondary\'s daemon.log saying a Primary failed authentication')
  await assertNothingReplicated(p, s)
  assert.not.match(err, /a different secret|the secret the secondary knows/, 'the message does not show a secret')
  assert.not.match(await daemonLog(s.state) + await daemonLog(p.state), /a different secret|the secret the secondary knows/, 'no log shows a secret')
  await p.stop()
  await s.stop()
}))

t('different RDS names: refused on both sides, each message naming both', isolated(120_000, async () => {
  const s = await startSecondary({ rds: 'alpha-rds' })
  const smark = logMark(s.state)
  const p = await startPrimary({ extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile, '--rds', 'beta-rds'] })
  const ps = await primaryStatus(p.state)
  assert.is(ps.rds, 'beta-rds', 'the Primary\'s status shows its --rds')
  assert.is((await s.status()).rds, 'alpha-rds', 'the Secondary\'s status shows its --rds')
  await writeSome(p)
  await waitLastError(p, ['alpha-rds', 'beta-rds'], 'rlinks[0].lastError to name both RDS names', [{ state: s.state, label: 'secondary' }])
  await waitLogLine(p.state, 0, ['alpha-rds', 'beta-rds'], 'a line in the Primary\'s daemon.log naming both RDS names')
  await waitLogLine(s.state, smark, ['alpha-rds', 'beta-rds'], 'a line in the Secondary\'s daemon.log naming both RDS names')
  await assertNothingReplicated(p, s)
  await p.stop()
  await s.stop()
}))

// ---------------------------------------------------------------------------------------------
// another protocol version, with fake peers

t('a Primary speaking protocol version 99 gets REFUSE naming the version; the Secondary logs it', isolated(120_000, async () => {
  try {
    const s = await startSecondary()
    const cases: Array<{ over: Record<string, unknown>, names: string, what: string }> = [
      { over: { v: 99 }, names: 'protocol version 99 ', what: 'protocol version 99' },
      { over: { v: 7 }, names: 'protocol version 7 ', what: 'protocol version 7 (the version before TLS binding and compression)' },
      { over: { v: 0 }, names: 'protocol version 0 ', what: 'protocol version 0' },
      { over: { rf: 99 }, names: 'record format version 99 ', what: 'SRL record format version 99' }
    ]
    for (const c of cases) {
      const smark = logMark(s.state)
      const peer = await connectFake(s.address)
      peer.send(hello(c.over))
      const r = await peer.waitMsg(MsgType.REFUSE, `a REFUSE for a HELLO with ${c.what}`)
      if (r.t !== MsgType.REFUSE) throw new Error('unreachable')
      assert.is(r.code, 'VERSION', `REFUSE code for ${c.what}: ${JSON.stringify(r)}`)
      assert.match(r.message, /version/i, `the REFUSE message mentions the version: ${r.message}`)
      assert.ok(r.message.includes(c.names), `the REFUSE message names the version offered (${c.names}): ${r.message}`)
      assert.not.ok(peer.msgs.some((m) => m.t === MsgType.CHALLENGE), 'no CHALLENGE for a version it does not speak')
      assert.is(peer.decodeError, undefined, 'the Secondary\'s frames decode')
      await peer.waitClosed(`the Secondary to close the connection after refusing ${c.what}`, 5000)
      await waitLogLine(s.state, smark, [/version/i, c.names], `a line in the Secondary's daemon.log about ${c.what}`)
    }
    // A malformed data generation (wire 6) is a protocol error, named.
    for (const gen of [undefined, 'not-a-generation', { id: '', since: 0, history: [] }, { id: 'g', since: -1, history: [] }, { id: 'g', since: 0, history: [{ id: 'h' }] }]) {
      const peer = await connectFake(s.address)
      peer.send(hello({ gen }))
      const r = await peer.waitMsg(MsgType.REFUSE, `a REFUSE for a HELLO with gen ${JSON.stringify(gen)}`)
      if (r.t !== MsgType.REFUSE) throw new Error('unreachable')
      assert.is(r.code, 'PROTOCOL', `REFUSE code for gen ${JSON.stringify(gen)}: ${JSON.stringify(r)}`)
      assert.match(r.message, /generation/, r.message)
      await peer.waitClosed('the Secondary to close the connection after a malformed generation', 5000)
    }
    const ss = await s.status()
    assert.ok(processAlive(s.pid), 'the Secondary is still running')
    assert.is(ss.receivedSeq, 0)
    assert.is(ss.connected, false, `nothing is connected after the refusals: ${JSON.stringify(ss)}`)
    assert.is(ss.primary.srlId, null, `a refused Primary is not followed: ${JSON.stringify(ss)}`)
    assert.equal(await fsp.readdir(s.data), [])
    await s.stop()
  } finally {
    await closeFakes()
  }
}))

t('a Secondary speaking protocol version 99 (CHALLENGE, then REFUSE) makes the Primary report the version', isolated(120_000, async () => {
  try {
    const dirs = await tmpdirs('pri')
    const secret = await secretFile(dirs.root)
    const secretBytes = Buffer.from('correct horse battery staple')
    let mode: 'challenge' | 'refuse' = 'challenge'
    const fake = await fakeSecondary((peer) => {
      const poll = setInterval(() => {
        const h = peer.msgs.find((m) => m.t === MsgType.HELLO)
        if (h === undefined || h.t !== MsgType.HELLO) { if (peer.closed) clearInterval(poll); return }
        clearInterval(poll)
        if (mode === 'challenge') {
          // a well-formed challenge with a valid proof: only the version is wrong
          const ours = nonce()
          peer.send({ t: MsgType.CHALLENGE, v: 99, rds: h.rds, nonce: ours, proof: proof(secretBytes, 'secondary', h.nonce, ours, h.rds, Buffer.alloc(0)), next: 1, last: null, applied: 0, fresh: true, empty: true, syncing: null, adopt: false })
        } else {
          peer.send({ t: MsgType.REFUSE, code: 'VERSION', message: 'fake-secondary: this secondary speaks protocol version 99 only' })
          peer.sock.end()
        }
      }, 5)
      peer.sock.on('close', () => clearInterval(poll))
    })
    const p = await startPrimary({ dirs, extraArgs: ['--secondary', fake.address, '--secret-file', secret] })
    await writeSome(p)
    const err = await waitLastError(p, [/version/i, '99'], 'rlinks[0].lastError to report the Secondary\'s protocol version 99')
    await waitLogLine(p.state, 0, [/version/i, '99'], 'a line in the Primary\'s daemon.log about protocol version 99')

    // what the real Primary said: a proper HELLO, and after the bad CHALLENGE neither AUTH nor updates
    const first = fake.peers[0]
    const h = first.msgs[0]
    assert.ok(h !== undefined && h.t === MsgType.HELLO, `the Primary opens with HELLO: ${JSON.stringify(first.msgs.map((m) => MsgType[m.t]))}`)
    if (h.t === MsgType.HELLO) {
      const ps = await primaryStatus(p.state)
      assert.is(h.v, PROTOCOL_VERSION, 'HELLO carries this protocol version')
      assert.is(h.rds, 'replicafs', 'HELLO carries the default RDS name')
      assert.is(h.srlId, ps.srlId, 'HELLO carries the Primary\'s srlId, as status shows it')
      assert.instance(h.nonce, Uint8Array)
      assert.is(h.nonce.length, 32, 'a 32-byte nonce')
    }
    for (const peer of fake.peers) {
      assert.is(peer.decodeError, undefined, 'the Primary\'s frames decode')
      const types = peer.msgs.map((m) => MsgType[m.t])
      assert.ok(peer.msgs.every((m) => m.t === MsgType.HELLO || m.t === MsgType.REFUSE), `after a CHALLENGE of version 99 the Primary sent only ${types.join(', ')} (no AUTH, no UPDATES)`)
    }
    const l = await rlink(p)
    assert.is(l.sentSeq, 0, `nothing sent: ${JSON.stringify(l)}`)
    assert.is.not(l.state, 'connected')
    assert.not.ok(err.includes('fake-secondary'), 'this error is the Primary\'s own finding, not a relayed REFUSE')

    // now the fake refuses outright: the Primary relays the Secondary's REFUSE message
    mode = 'refuse'
    await waitLastError(p, ['fake-secondary', /version/i], 'rlinks[0].lastError to carry the Secondary\'s REFUSE message')
    const l2 = await rlink(p)
    assert.is(l2.sentSeq, 0)
    await p.stop()
  } finally {
    await closeFakes()
  }
}))

t('an authenticated Secondary whose ACK is not sequence numbers is refused PROTOCOL; nothing it acked counts', isolated(120_000, async () => {
  try {
    const dirs = await tmpdirs('pri')
    const secret = await secretFile(dirs.root)
    const secretBytes = Buffer.from('correct horse battery staple')
    const fake = await fakeSecondary((peer) => {
      let phase = 'hello'
      let ours = nonce()
      const poll = setInterval(() => {
        if (peer.closed) { clearInterval(poll); return }
        const h = peer.msgs.find((m) => m.t === MsgType.HELLO)
        if (phase === 'hello' && h !== undefined && h.t === MsgType.HELLO) {
          ours = nonce()
          peer.send({ t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: h.rds, nonce: ours, proof: proof(secretBytes, 'secondary', h.nonce, ours, h.rds, Buffer.alloc(0)), next: 1, last: null, applied: 0, fresh: true, empty: true, syncing: null, adopt: false })
          phase = 'auth'
        } else if (phase === 'auth' && peer.msgs.some((m) => m.t === MsgType.AUTH)) {
          peer.send({ t: MsgType.READY })
          phase = 'ready'
        } else if (phase === 'ready' && peer.msgs.some((m) => m.t === MsgType.UPDATES)) {
          peer.send({ t: MsgType.ACK, n: 'all of them', d: Number.NaN } as unknown as Message)
          phase = 'acked'
        }
      }, 5)
      peer.sock.on('close', () => clearInterval(poll))
    })
    const p = await startPrimary({ dirs, extraArgs: ['--secondary', fake.address, '--secret-file', secret] })
    await writeSome(p)
    await waitLastError(p, [/malformed ACK/], 'rlinks[0].lastError to say the ACK was malformed')
    const l = await rlink(p)
    assert.is(l.networkAckedSeq, 0, `a malformed ACK acks nothing: ${JSON.stringify(l)}`)
    assert.is(l.dataAckedSeq, 0)
    assert.ok(fake.peers.some((peer) => peer.msgs.some((m) => m.t === MsgType.REFUSE && m.code === 'PROTOCOL')), 'the Primary told the peer why (REFUSE PROTOCOL)')
    await p.stop()
  } finally {
    await closeFakes()
  }
}))

// ---------------------------------------------------------------------------------------------
// garbage on the wire

t('a peer sending garbage is disconnected; connections beyond RLINK_HANDSHAKES_MAX in their handshake are closed at once; the Secondary keeps serving and a real Primary then replicates', isolated(150_000, async () => {
  try {
    const s = await startSecondary()
    const smark = logMark(s.state)
    const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(n, 0); return b }
    const frame = (body: Buffer): Buffer => Buffer.concat([u32(body.length), body])
    let x = 12345
    const noise = Buffer.alloc(64 * 1024)
    for (let i = 0; i < noise.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; noise[i] = x >>> 24 }
    const cases: Array<{ what: string, send: (p: FakePeer) => Promise<void> | void }> = [
      { what: 'a length prefix of 0xffffffff', send: (p) => { p.sock.write(Buffer.concat([u32(0xffffffff), Buffer.alloc(100, 0x41)])) } },
      { what: `a length prefix of WIRE_FRAME_BYTES_MAX + 1 (${WIRE_FRAME_BYTES_MAX + 1})`, send: (p) => { p.sock.write(u32(WIRE_FRAME_BYTES_MAX + 1)) } },
      { what: 'an HTTP request', send: (p) => { p.sock.write('GET / HTTP/1.1\r\nHost: replicafs\r\n\r\n') } },
      { what: '64 KiB of random bytes', send: (p) => { p.sock.write(noise) } },
      { what: 'a frame whose body is not msgpack (0xc1)', send: (p) => { p.sock.write(frame(Buffer.from([0xc1, 0xc1, 0xc1]))) } },
      { what: 'a frame whose body is a string, not a message', send: (p) => { p.sock.write(frame(Buffer.from([0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]))) } },
      { what: 'UPDATES before any handshake', send: (p) => { p.send({ t: MsgType.UPDATES, recs: [Buffer.alloc(64, 0xee)] }) } },
      { what: 'an ACK before any handshake', send: (p) => { p.send({ t: MsgType.ACK, n: 5, d: 5 }) } },
      { what: 'a message type that does not exist (t: 77)', send: (p) => { p.send({ t: 77 } as unknown as Message) } },
      { what: 'a HELLO with fields of the wrong types', send: (p) => { p.send(hello({ v: '1', rds: 5, srlId: null, nonce: 'not bytes', rf: 'x' })) } },
      { what: 'a HELLO missing every field but t', send: (p) => { p.send({ t: MsgType.HELLO } as unknown as Message) } },
      {
        what: 'a HELLO, then an AUTH whose proof is a string',
        send: async (p) => {
          p.send(hello())
          await p.waitMsg(MsgType.CHALLENGE, 'the CHALLENGE for a proper HELLO')
          p.send({ t: MsgType.AUTH, proof: 'not a proof' } as unknown as Message)
        }
      },
      {
        what: 'a HELLO, then an AUTH with a wrong 32-byte proof',
        send: async (p) => {
          p.send(hello())
          await p.waitMsg(MsgType.CHALLENGE, 'the CHALLENGE for a proper HELLO')
          p.send({ t: MsgType.AUTH, proof: Buffer.alloc(32, 1) })
        }
      },
      {
        what: 'a HELLO, then UPDATES instead of AUTH',
        send: async (p) => {
          p.send(hello())
          await p.waitMsg(MsgType.CHALLENGE, 'the CHALLENGE for a proper HELLO')
          p.send({ t: MsgType.UPDATES, recs: [Buffer.alloc(64, 0xee)] })
        }
      }
    ]
    for (const c of cases) {
      const peer = await connectFake(s.address)
      await c.send(peer)
      // promptly: well before the handshake timeout would end it anyway
      await peer.waitClosed(`the Secondary to disconnect a peer that sent ${c.what}`, 5000)
      assert.is(peer.decodeError, undefined, `after ${c.what}, whatever the Secondary sent back is well-formed frames`)
      const refuse = peer.msgs.find((m) => m.t === MsgType.REFUSE)
      assert.ok(peer.msgs.every((m) => m.t === MsgType.REFUSE || m.t === MsgType.CHALLENGE), `after ${c.what} the Secondary sent only ${peer.msgs.map((m) => MsgType[m.t]).join(', ')}`)
      if (refuse !== undefined && refuse.t === MsgType.REFUSE) assert.ok(typeof refuse.message === 'string' && refuse.message.length > 0, `a REFUSE says why: ${JSON.stringify(refuse)}`)
      assert.ok(processAlive(s.pid), `the Secondary is still running after ${c.what}\n--- secondary daemon.log ---\n${await daemonLog(s.state)}`)
    }
    // a peer that sends half a frame and hangs up
    const half = await connectFake(s.address)
    half.sock.end(encodeFrame(hello()).subarray(0, 10))
    await half.waitClosed('the half-frame connection to close', 5000)

    const ss = await s.status()
    assert.is(ss.pid, s.pid, 'status still answers, from the same daemon')
    assert.is(ss.receivedSeq, 0, 'nothing received from garbage')
    assert.is(ss.connected, false, `no Primary connected: ${JSON.stringify(ss)}`)
    assert.is(ss.primary.srlId, null, `no garbage peer became the Primary it follows: ${JSON.stringify(ss)}`)
    assert.equal(await fsp.readdir(s.data), [], 'nothing applied from garbage')
    await waitLogLine(s.state, smark, [/protocol|frame|unexpected|invalid|malformed/i], 'a line in the Secondary\'s daemon.log about a protocol violation')
    assert.not.match(await logSince(s.state, smark), /^\s+at .*\(/m, 'no stack trace in the Secondary\'s daemon.log')

    // Per-peer limits: RLINK_HANDSHAKES_MAX silent connections hold their places (each until its
    // handshake deadline); one more is closed at once, and the log says so.
    const silent: FakePeer[] = []
    for (let i = 0; i < RLINK_HANDSHAKES_MAX; i++) silent.push(await connectFake(s.address))
    const extra = await connectFake(s.address)
    await extra.waitClosed(`the Secondary to close at once a connection beyond ${RLINK_HANDSHAKES_MAX} in their handshake`, 5000)
    assert.is(extra.raw, 0, 'nothing was sent to it')
    assert.ok(silent.every((x) => !x.closed), 'the silent connections still hold their places (their handshake deadline has not passed)')
    await waitLogLine(s.state, smark, [new RegExp(`closed a connection at once .*: ${RLINK_HANDSHAKES_MAX} connections are in their handshake already`)], 'the Secondary saying it closed one')
    for (const x of silent) x.sock.destroy()
    await Promise.all(silent.map(async (x) => await x.waitClosed('our silent connections to close')))

    // and a real Primary is accepted and replicates
    const p = await startPrimary({ extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile] })
    await fsp.writeFile(path.join(p.mount, 'after-garbage'), 'replicated')
    await waitFor(async () => {
      const ps = await primaryStatus(p.state)
      const newest = ps.srl.newestSeq ?? ps.srl.appliedSeq
      return ps.rlinks[0].dataAckedSeq >= newest && newest > 0
    }, { timeoutMs: 60_000, what: 'the real Primary to be data-acked', intervalMs: 100 }).catch(async (err: Error) => {
      throw new Error(`${err.message}\nrlinks: ${JSON.stringify((await primaryStatus(p.state)).rlinks)}\n--- primary daemon.log ---\n${await daemonLog(p.state)}\n--- secondary daemon.log ---\n${await daemonLog(s.state)}`)
    })
    assert.is(await fsp.readFile(path.join(s.mount, 'after-garbage'), 'utf8'), 'replicated', 'the file is on the Secondary\'s mount')
    const ss2 = await s.status()
    assert.ok(ss2.connected, 'the real Primary is connected')
    assert.is(ss2.primary.srlId, (await primaryStatus(p.state)).srlId, 'the Secondary follows the real Primary')
    await p.stop()
    await s.stop()
  } finally {
    await closeFakes()
  }
}))

// ---------------------------------------------------------------------------------------------
// command lines

t('secondary and primary command-line errors: one line, non-zero exit, nothing left behind', timed(120_000, async () => {
  const help = await cli(['secondary', '--help'])
  assert.is(help.code, 0, `secondary --help exits 0: ${help.stderr}`)
  for (const f of ['--data', '--mount', '--state', '--listen', '--secret-file', '--rds']) assert.ok(help.stdout.includes(f), `secondary --help describes ${f}:\n${help.stdout}`)
  const phelp = await cli(['primary', '--help'])
  for (const f of ['--secondary', '--secret-file', '--synchronous', '--srlprot', '--max-lag', '--rds']) assert.ok(phelp.stdout.includes(f), `primary --help describes ${f}:\n${phelp.stdout}`)

  const dirs = await tmpdirs('cli')
  const secret = await secretFile(dirs.root)
  const noListen = secondaryArgs(dirs, secret)
  noListen.splice(noListen.indexOf('--listen'), 2)
  assertOneLine(await cli(noListen), ['--listen'], /required|missing/i)
  await assertLeftNothing(dirs)

  for (const bad of ['nohost', '127.0.0.1:99999', '127.0.0.1:', ':7000x']) {
    assertOneLine(await cli(secondaryArgs(dirs, secret, { listen: bad })), [bad], /listen|address|port|HOST:PORT/i)
    await assertLeftNothing(dirs)
  }

  const missing = path.join(dirs.root, 'no-such-secret')
  assertOneLine(await cli(secondaryArgs(dirs, missing)), [missing], /secret|exist|no such|missing|not found/i)
  await assertLeftNothing(dirs)
  const empty = path.join(dirs.root, 'empty-secret')
  await fsp.writeFile(empty, '', { mode: 0o600 })
  assertOneLine(await cli(secondaryArgs(dirs, empty)), [empty], /empty/i)
  await assertLeftNothing(dirs)
  const noSecret = secondaryArgs(dirs, secret)
  noSecret.splice(noSecret.indexOf('--secret-file'), 2)
  assertOneLine(await cli(noSecret), ['--secret-file'], /required|missing/i)
  await assertLeftNothing(dirs)

  // a port already in use
  const holder = net.createServer()
  servers.add(holder)
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  const busy = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`
  try {
    assertOneLine(await cli(secondaryArgs(dirs, secret, { listen: busy })), [busy], /in use|EADDRINUSE|busy|listen/i)
    await assertLeftNothing(dirs)
  } finally {
    await closeFakes()
  }

  // primary: --secondary needs a secret; a bad --synchronous; a bad --secondary address
  const pd = await tmpdirs('cli')
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', '127.0.0.1:7000'] })), ['--secret-file'], /required|missing|needs|requires/i)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', '127.0.0.1:7000', '--secret-file', secret, '--synchronous', 'bogus'] })), ['bogus'], /synchronous|off|override|fail/i)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', '127.0.0.1:7000', '--secret-file', secret, '--srlprot', 'bogus'] })), ['bogus'], /srlprot.*autodcm, dcm, fail, override, off/)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', '127.0.0.1:7000', '--secret-file', secret, '--max-lag', 'soon'] })), ['soon'], /max-lag.*seconds/)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--srlprot', 'dcm'] })), ['--srlprot'], /needs at least one --secondary/)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', 'nohost', '--secret-file', secret] })), ['nohost'], /secondary|address|port|HOST:PORT/i)
  await assertLeftNothing(pd)
  assertOneLine(await cli(primaryArgs(pd, { extraArgs: ['--secondary', '127.0.0.1:7000', '--secret-file', empty] })), [empty], /empty/i)
  await assertLeftNothing(pd)
  assert.not.ok(fs.existsSync(path.join(pd.state, 'control.sock')), 'no daemon socket left')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, async () => {
  await closeFakes()
  await assertCleanSlate()
}))

t.run()
