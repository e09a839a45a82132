/**
 * TLS on the RLINK (issue 15, "Security"): `--tls-cert FILE --tls-key FILE --tls-ca FILE` on both
 * ends, mutual authentication against the CA, TLS 1.3 only, an optional pinned fingerprint; with
 * TLS configured, a plaintext peer, a certificate from another CA and an expired certificate are
 * refused with a clear log line and the status's last error; the shared secret stays a second
 * factor (its proofs are bound to the TLS session: test/wire.test.ts). Certificates are made by
 * the machine's openssl (test/helpers/tls.ts).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import * as tls from 'tls'
import {
  assertOneLineError, startPrimary, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, cli, tmpdirs, primaryArgs,
  secretFile, statusFast, daemonLog, type Primary, type Secondary, type PrimaryStatus, type SecondaryStatus
} from './helpers'
import { startProxy, closeAllProxies } from './helpers/proxy'
import { makeCerts, tlsArgs, fingerprintOf, type Certs } from './helpers/tls'

const t = suite('tls')

t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`tls.test: cleanup had to force: ${forced.join('; ')}`)
})

/** A fresh PKI for each test (each test's temporary directories are removed after it). */
async function certs (): Promise<Certs> {
  return await makeCerts(path.join((await tmpdirs('certs')).root, 'pki'))
}

type Rlink = PrimaryStatus['rlinks'][number] & { transport?: { tls: boolean, compress: string } | null }

async function rlinkOf (p: Primary): Promise<Rlink> {
  return (await statusFast<PrimaryStatus>(p.state)).rlinks[0] as Rlink
}

async function waitLastError (p: Primary, pattern: RegExp, what: string): Promise<string> {
  try {
    return await waitFor(async () => { const e = (await rlinkOf(p)).lastError; return e !== null && pattern.test(e) ? e : undefined }, { timeoutMs: 20_000, what, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- rlink ---\n${JSON.stringify(await rlinkOf(p))}\n--- primary daemon.log ---\n${(await daemonLog(p.state)).slice(-2000)}`)
  }
}

async function waitLog (state: string, pattern: RegExp, what: string): Promise<string> {
  try {
    return await waitFor(async () => (await daemonLog(state)).split('\n').find((l) => pattern.test(l)), { timeoutMs: 20_000, what, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- ${state}/daemon.log ---\n${(await daemonLog(state)).slice(-3000)}`)
  }
}

async function secondaryLastError (s: Secondary, pattern: RegExp, what: string): Promise<string> {
  return await waitFor(async () => { const e = (await statusFast<SecondaryStatus & { lastError?: string | null }>(s.state)).lastError; return e != null && pattern.test(e) ? e : undefined }, { timeoutMs: 20_000, what, intervalMs: 100 })
}

/** A Primary replicating to `target` with `extra` flags, and a file written through it. */
async function primaryTo (target: string, secret: string, extra: string[]): Promise<Primary> {
  const p = await startPrimary({ extraArgs: ['--secondary', target, '--secret-file', secret, ...extra] })
  await fsp.writeFile(path.join(p.mount, 'hello.txt'), 'hello\n')
  return p
}

t('TLS on both ends: replicates, both statuses say TLS, and a wiretap sees neither file contents nor names', isolated(150_000, async () => {
  const c = await certs()
  const s = await startSecondary({ extraArgs: tlsArgs(c.secondary, c.ca) })
  const proxy = await startProxy(s.address)
  const p = await startPrimary({ extraArgs: ['--secondary', proxy.address, '--secret-file', s.secretFile, ...tlsArgs(c.primary, c.ca)] })
  const marker = 'ZEBRA-MARKER-' + 'q'.repeat(40)
  await fsp.writeFile(path.join(p.mount, 'secret-plans-file-name.txt'), Buffer.from(`${marker}\n`.repeat(2000)))
  await waitFor(async () => { const l = await rlinkOf(p); return l.dataAckedSeq >= ((await statusFast<PrimaryStatus>(p.state)).srl.newestSeq ?? 1) && l.dataAckedSeq > 0 }, { timeoutMs: 30_000, what: 'the Secondary to apply the file', intervalMs: 100 })
  assert.equal(await fsp.readFile(path.join(s.mount, 'secret-plans-file-name.txt')), await fsp.readFile(path.join(p.mount, 'secret-plans-file-name.txt')), 'the file arrived whole')
  const l = await rlinkOf(p)
  assert.equal(l.transport?.tls, true, `the Primary's status says TLS: ${JSON.stringify(l.transport)}`)
  const ss = await statusFast<SecondaryStatus & { transport?: { tls: boolean } | null }>(s.state)
  assert.equal(ss.transport?.tls, true, `the Secondary's status says TLS: ${JSON.stringify(ss.transport)}`)
  const text = await cli(['status', '--state', p.state])
  assert.match(text.stdout, /TLS 1\.3/, 'status (text) says TLS 1.3')
  const wire = proxy.upBytes()
  assert.ok(wire.length > 64 * 1024, `the wiretap saw the traffic (${wire.length} bytes)`)
  assert.is(wire[0], 0x16, 'the first byte on the wire is a TLS handshake record')
  assert.is(wire.indexOf('ZEBRA-MARKER'), -1, 'the file\'s contents never cross the wire in clear')
  assert.is(wire.indexOf('secret-plans-file-name'), -1, 'nor its name')
  assert.match(await daemonLog(s.state), /Primary .* connected \(TLS\)/, 'the Secondary logs a TLS connection')
  await p.stop()
  await s.stop()
}))

t('refused with a clear log line and last error: a plaintext Primary, a plaintext Secondary, another CA, an expired certificate, a wrong pin; then the right one replicates', isolated(240_000, async () => {
  const c = await certs()
  const s = await startSecondary({ extraArgs: tlsArgs(c.secondary, c.ca) })

  // A Primary without TLS: the Secondary answers in plaintext why.
  let p = await primaryTo(s.address, s.secretFile, [])
  await waitLastError(p, /requires TLS/, 'the plaintext Primary\'s last error to say the Secondary requires TLS')
  await waitLog(s.state, /refused a plaintext connection from .*requires TLS/, 'the Secondary to log the plaintext peer')
  await secondaryLastError(s, /plaintext/, 'the Secondary\'s status lastError to name the plaintext peer')
  await p.stop()

  // A Primary whose certificate another CA signed.
  p = await primaryTo(s.address, s.secretFile, tlsArgs(c.stranger, c.ca))
  await waitLastError(p, /refused this end's certificate/, 'the Primary with a stranger\'s certificate to learn it was refused')
  await waitLog(s.state, /refused .*: the peer's certificate is not signed by this end's --tls-ca/, 'the Secondary to log the certificate of another CA')
  await p.stop()

  // A Primary that pins another certificate than the Secondary's.
  p = await primaryTo(s.address, s.secretFile, [...tlsArgs(c.primary, c.ca), '--tls-peer-fingerprint', await fingerprintOf(c.stranger.cert)])
  await waitLastError(p, /pinned by --tls-peer-fingerprint/, 'a wrong pin to be the Primary\'s last error')
  await p.stop()

  // A peer presenting an expired certificate (a daemon refuses to start with one: below), by hand.
  const [host, port] = [s.address.slice(0, s.address.lastIndexOf(':')), Number(s.address.slice(s.address.lastIndexOf(':') + 1))]
  const sock = tls.connect({ host, port, cert: fs.readFileSync(c.expired.cert), key: fs.readFileSync(c.expired.key), ca: fs.readFileSync(c.ca), minVersion: 'TLSv1.3', checkServerIdentity: () => undefined })
  const told: Buffer[] = []
  sock.on('data', (d: Buffer) => told.push(d))
  const clientSaw = await new Promise<string>((resolve) => {
    sock.on('error', (err) => resolve(String((err as NodeJS.ErrnoException).code ?? err.message)))
    sock.on('close', () => resolve('closed'))
    setTimeout(() => resolve('nothing within 15 s'), 15_000).unref()
  })
  sock.destroy()
  assert.ok(/EXPIRED|closed|ECONNRESET/i.test(clientSaw), `the client with an expired certificate was refused (${clientSaw})`)
  assert.match(Buffer.concat(told).toString('latin1'), /refused this end's certificate: it has expired/, 'and told why, in a REFUSE frame inside TLS')
  await waitLog(s.state, /refused .*: the peer's certificate has expired/, 'the Secondary to log the expired certificate')
  await secondaryLastError(s, /expired/, 'the Secondary\'s status lastError to name the expired certificate')
  assert.is((await statusFast<SecondaryStatus>(s.state)).receivedSeq, 0, 'nothing was replicated over any refused connection')

  // A Secondary without TLS, dialled with TLS.
  const plain = await startSecondary()
  p = await primaryTo(plain.address, plain.secretFile, tlsArgs(c.primary, c.ca))
  await waitLastError(p, /does not (use|speak) TLS/, 'the TLS Primary\'s last error to say the peer does not use TLS')
  await waitLog(plain.state, /refused a TLS connection from .*no --tls-cert/, 'the plaintext Secondary to log the TLS peer')
  await p.stop()
  await plain.stop()

  // And the right certificate, pinned: the Secondary kept serving.
  p = await primaryTo(s.address, s.secretFile, [...tlsArgs(c.primary, c.ca), '--tls-peer-fingerprint', await fingerprintOf(c.secondary.cert)])
  // (Every record of the file data-acked, not only its CREATE: the file is read right after.)
  await waitFor(async () => { const l = await rlinkOf(p); return l.state === 'connected' && l.dataAckedSeq > 0 && l.dataAckedSeq >= ((await statusFast<PrimaryStatus>(p.state)).srl.newestSeq ?? 1) }, { timeoutMs: 30_000, what: 'the right Primary to connect and replicate', intervalMs: 100 })
  assert.is(await fsp.readFile(path.join(s.mount, 'hello.txt'), 'utf8'), 'hello\n')
  assert.is((await statusFast<SecondaryStatus & { lastError?: string | null }>(s.state)).lastError, null, 'a good connection clears the Secondary\'s last error')
  await p.stop()
  await s.stop()
}))

t('TLS flags: each mistake is one line naming the file or flag, exit non-zero, nothing started', timed(120_000, async () => {
  const c = await certs()
  const d = await tmpdirs('tlsflags')
  const secret = await secretFile(d.root)
  const base = primaryArgs(d, { extraArgs: ['--secondary', '127.0.0.1:9', '--secret-file', secret] })
  const loose = path.join(c.dir, 'loose.key')
  fs.copyFileSync(c.primary.key, loose)
  fs.chmodSync(loose, 0o644)
  const cases: Array<[string[], Array<RegExp | string>]> = [
    [['--tls-cert', c.primary.cert, '--tls-ca', c.ca], ['--tls-key', 'together']],
    [['--tls-peer-fingerprint', 'AB:CD'], ['--tls-peer-fingerprint']],
    [[...tlsArgs(c.primary, c.ca), '--tls-peer-fingerprint', 'not-hex'], ['--tls-peer-fingerprint', 'not-hex']],
    [['--tls-cert', path.join(c.dir, 'missing.pem'), '--tls-key', c.primary.key, '--tls-ca', c.ca], ['missing.pem', 'does not exist']],
    [['--tls-cert', c.primary.cert, '--tls-key', c.secondary.key, '--tls-ca', c.ca], ['secondary.key', 'not the key of']],
    [['--tls-cert', c.primary.cert, '--tls-key', loose, '--tls-ca', c.ca], ['loose.key', 'chmod 600']],
    [['--tls-cert', c.primary.cert, '--tls-key', c.primary.key, '--tls-ca', c.primary.key], ['--tls-ca', 'no PEM certificate']],
    [tlsArgs(c.expired, c.ca), ['expired.pem', 'expired']],
    [['--compress', 'lz4'], ['--compress', 'lz4']],
    [['--bandwidth-limit', 'fast'], ['--bandwidth-limit', 'fast']],
    [['--bandwidth-limit', '10'], ['--bandwidth-limit', 'below 1K']]
  ]
  for (const [args, mentions] of cases) {
    const r = await cli([...base.filter((a) => a !== '--daemon'), ...args], { timeoutMs: 30_000 })
    assertOneLineError(r, mentions)
  }
  assert.not.ok(fs.existsSync(path.join(d.state, 'control.sock')), 'no daemon was started')
  const help = await cli(['secondary', '--help'])
  for (const f of ['--tls-cert', '--tls-key', '--tls-ca', '--tls-peer-fingerprint']) assert.ok(help.stdout.includes(f), `secondary --help documents ${f}`)
  const phelp = await cli(['primary', '--help'])
  for (const f of ['--tls-cert', '--compress', '--bandwidth-limit']) assert.ok(phelp.stdout.includes(f), `primary --help documents ${f}`)
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
}))

t.run()
