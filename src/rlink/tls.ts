/**
 * TLS on the RLINK (node:tls): both ends present a certificate signed by the CA they are given and
 * verify the other's against it (mutual authentication), TLS 1.3 only, optionally pinned to the
 * peer certificate's SHA-256 fingerprint. The shared secret stays a second factor, and the
 * handshake's proofs are bound to the TLS session (its exporter, src/format/wire.ts `proof`), so a
 * party holding a certificate of the CA but not the secret cannot relay one.
 *
 * A listener with TLS reads a connection's first bytes before it wraps it: a plaintext peer is
 * answered with a plaintext REFUSE that says why, not with TLS noise. A listener without TLS
 * recognizes a TLS ClientHello the same way and says so in its log.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import { ReplError } from '../errors'

/** The files of `--tls-cert`, `--tls-key`, `--tls-ca` and the optional `--tls-peer-fingerprint`. */
export interface TlsFiles { cert: string, key: string, ca: string, peerFingerprint: string | null }

/** Loaded, checked TLS settings of one daemon. */
export interface RlinkTls {
  files: TlsFiles
  context: tls.SecureContext
  /** The PEM bytes (a tls.Server takes these, not a context). */
  pem: { cert: Buffer, key: Buffer, ca: Buffer }
  /** The pinned peer fingerprint, "AA:BB:..." as node:tls writes `fingerprint256`, or null. */
  pin: string | null
  /** This end's own certificate's notAfter (a warning when it is near). */
  notAfter: Date
  subject: string
}

/** What the exporter is labelled for the handshake's proofs (RFC 5705 / 8446 §7.5). */
export const TLS_EXPORTER_LABEL = 'EXPORTER-replicafs-rlink'
export const TLS_EXPORTER_BYTES = 32

/** Parses a fingerprint as openssl and node print it (hex, colons optional, "sha256:" prefix allowed). */
export function parseFingerprint (text: string, flag = 'tls-peer-fingerprint'): string {
  const hex = text.trim().replace(/^sha256[:=]/i, '').replace(/:/g, '')
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new ReplError('USAGE', `--${flag} ${text} is not a SHA-256 fingerprint (64 hex digits, colons allowed: openssl x509 -noout -fingerprint -sha256 -in CERT)`)
  return hex.toUpperCase().match(/../g)!.join(':')
}

/** Reads and checks the three files (and the pin): a clear one-line error naming the file. */
export function loadTls (files: TlsFiles): RlinkTls {
  const read = (flag: string, file: string): Buffer => {
    try {
      const st = fs.statSync(file)
      if (!st.isFile()) throw new ReplError('TLS', `--${flag} ${file} is not a regular file`)
      if (flag === 'tls-key' && (st.mode & 0o077) !== 0) throw new ReplError('TLS', `--tls-key ${file} is accessible by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): chmod 600 ${file}`)
      return fs.readFileSync(file)
    } catch (err) {
      if (err instanceof ReplError) throw err
      const code = (err as NodeJS.ErrnoException).code
      throw new ReplError('TLS', code === 'ENOENT' ? `--${flag} ${file} does not exist` : `cannot read --${flag} ${file}: ${(err as Error).message}`)
    }
  }
  const cert = read('tls-cert', files.cert)
  const key = read('tls-key', files.key)
  const ca = read('tls-ca', files.ca)
  let x509: crypto.X509Certificate
  try { x509 = new crypto.X509Certificate(cert) } catch { throw new ReplError('TLS', `--tls-cert ${files.cert} holds no PEM certificate`) }
  try { crypto.createPrivateKey(key) } catch { throw new ReplError('TLS', `--tls-key ${files.key} holds no PEM private key (an encrypted key is not supported: the daemon starts unattended)`) }
  if (!x509.checkPrivateKey(crypto.createPrivateKey(key))) throw new ReplError('TLS', `--tls-key ${files.key} is not the key of --tls-cert ${files.cert}`)
  // (This end's certificate need not be signed by --tls-ca: that CA is the one the peer's is checked against.)
  let caCerts: crypto.X509Certificate[]
  try {
    caCerts = (ca.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new crypto.X509Certificate(p))
  } catch { caCerts = [] }
  if (caCerts.length === 0) throw new ReplError('TLS', `--tls-ca ${files.ca} holds no PEM certificate`)
  const notAfter = new Date(x509.validTo)
  const now = Date.now()
  if (notAfter.getTime() < now) throw new ReplError('TLS', `--tls-cert ${files.cert} expired on ${notAfter.toISOString()}: peers refuse it`)
  if (new Date(x509.validFrom).getTime() > now) throw new ReplError('TLS', `--tls-cert ${files.cert} is not valid before ${new Date(x509.validFrom).toISOString()}`)
  let context: tls.SecureContext
  try {
    context = tls.createSecureContext({ cert, key, ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })
  } catch (err) {
    throw new ReplError('TLS', `cannot use --tls-cert ${files.cert}, --tls-key ${files.key}, --tls-ca ${files.ca}: ${(err as Error).message}`)
  }
  return { files, context, pem: { cert, key, ca }, pin: files.peerFingerprint === null ? null : parseFingerprint(files.peerFingerprint), notAfter, subject: x509.subject.replace(/\n/g, ', ') }
}

/** Whether a connection's first bytes are a TLS handshake record (content type 22, version 3.x). */
export function looksLikeTls (head: Buffer): boolean {
  return head.length >= 2 && head[0] === 0x16 && head[1] === 0x03
}

/** The peer certificate's refusal by the pin, or null. */
function pinRefusal (sock: tls.TLSSocket, t: RlinkTls): string | null {
  if (t.pin === null) return null
  const got = sock.getPeerCertificate().fingerprint256
  return got === t.pin ? null : `the peer's certificate (SHA-256 ${String(got)}) is not the one pinned by --tls-peer-fingerprint (${t.pin})`
}

/**
 * Dials `addr`: plain TCP, or TLS verifying the peer's certificate against the CA (and the pin).
 * `ready` is called once the connection can carry frames (after the TLS handshake).
 * Host names are not checked against the certificate: peers are often named by address, and the
 * private CA, the pin and the secret identify them (docs/ARCHITECTURE.md "TLS").
 */
export function dial (addr: { host: string, port: number }, t: RlinkTls | null, ready: () => void): net.Socket {
  if (t === null) {
    const sock = net.connect({ host: addr.host, port: addr.port })
    sock.once('connect', ready)
    return sock
  }
  const sock = tls.connect({
    host: addr.host,
    port: addr.port,
    secureContext: t.context,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    rejectUnauthorized: true,
    ...(net.isIP(addr.host) === 0 ? { servername: addr.host } : {}),
    checkServerIdentity: (_host, cert) => {
      if (t.pin === null || cert.fingerprint256 === t.pin) return undefined
      return new Error(`the peer's certificate (SHA-256 ${cert.fingerprint256}) is not the one pinned by --tls-peer-fingerprint (${t.pin})`)
    }
  })
  sock.once('secureConnect', ready)
  return sock
}

/**
 * A listener's side of its new connections: with TLS, the first bytes decide (a plaintext peer is
 * refused in plaintext; a TLS one has its handshake completed and its certificate checked against
 * the CA and the pin before `onSocket`, and is refused, inside TLS, with a REFUSE frame naming
 * the reason if it fails: a TLS 1.3 client has finished its side of the handshake by then, and an
 * alert would tell it less); without TLS, a TLS ClientHello is named in the log and answered
 * with a plaintext REFUSE, which the peer's TLS reports as a peer that does not speak TLS.
 * Either way `failed(why)` says why a connection did not make it (for the log and the status);
 * one that says nothing, or does not finish its TLS handshake, is closed at `deadlineMs`.
 */
export function acceptor (t: RlinkTls | null, onSocket: (sock: net.Socket) => void,
  refuse: (sock: net.Socket, message: string) => void, failed: (why: string) => void, deadlineMs: number,
  admit: (raw: net.Socket, pending: number) => boolean = () => true): (raw: net.Socket) => void {
  /** Connections not yet handed on (their first bytes, their TLS handshake): they count against the listener's limit. */
  let pending = 0
  // rejectUnauthorized off: the server verifies, and we enforce in the connection listener, so
  // that a refused peer is told why (below) rather than cut off.
  /** The connections in their TLS handshake, by peer address, and how to stop counting them. */
  const pendingTls = new Map<string, () => void>()
  const server = t === null ? null : tls.createServer({ ...t.pem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', handshakeTimeout: deadlineMs }, (sock) => {
    const peer = `${String(sock.remoteAddress)}:${String(sock.remotePort)}`
    pendingTls.get(peer)?.()
    // Why, for this end's log, and for the peer's (its REFUSE), each from its own side.
    let why: [string, string] | null = null
    if (!sock.authorized) {
      const cert = sock.getPeerCertificate()
      const e = sock.authorizationError as unknown
      const code = typeof e === 'string' ? e : String((e as NodeJS.ErrnoException | null)?.code ?? '')
      if (cert === null || Object.keys(cert).length === 0) why = ['the peer sent no certificate (it needs --tls-cert and --tls-key)', 'this end sent no certificate (configure --tls-cert and --tls-key)']
      else if (code === 'CERT_HAS_EXPIRED') why = ['the peer\'s certificate has expired', 'the peer refused this end\'s certificate: it has expired']
      else if (code === 'CERT_NOT_YET_VALID') why = ['the peer\'s certificate is not valid yet', 'the peer refused this end\'s certificate: it is not valid yet']
      else why = [`the peer's certificate is not signed by this end's --tls-ca (${code})`, `the peer refused this end's certificate: it is not signed by the peer's --tls-ca (${code})`]
    } else {
      const pin = pinRefusal(sock, t)
      if (pin !== null) why = [pin, 'the peer refused this end\'s certificate: it is not the one the peer pins (--tls-peer-fingerprint)']
    }
    if (why !== null) {
      failed(`refused ${peer}: ${why[0]}`)
      refuse(sock, why[1])
      return
    }
    onSocket(sock)
  })
  server?.on('tlsClientError', (err: NodeJS.ErrnoException, sock: tls.TLSSocket) => {
    failed(`TLS handshake with ${sock.remoteAddress !== undefined ? `${sock.remoteAddress}:${String(sock.remotePort)}` : 'a peer'} failed: ${err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? `not completed within ${deadlineMs / 1000} s` : describeTlsError(err)}`)
    sock.destroy()
  })
  return (raw) => {
    if (!admit(raw, pending)) return
    pending++
    let counted = true
    const peer = `${String(raw.remoteAddress)}:${String(raw.remotePort)}`
    const settle = (): void => { if (counted) { counted = false; pending--; pendingTls.delete(peer) } }
    raw.once('close', settle)
    // Until its first bytes; a TLS handshake then has the server's handshakeTimeout.
    const timer = setTimeout(() => { failed(`nothing from ${peer} within ${deadlineMs / 1000} s`); raw.destroy() }, deadlineMs)
    timer.unref()
    raw.on('error', () => {})
    raw.once('close', () => clearTimeout(timer))
    let head = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk])
      if (head.length < 2) return
      clearTimeout(timer)
      if (t === null) settle()
      raw.off('data', onData)
      raw.pause()
      raw.unshift(head)
      if (t === null) {
        if (looksLikeTls(head)) {
          failed(`refused a TLS connection from ${peer}: this end has no --tls-cert (configure TLS on both ends, or on neither)`)
          // Answered in plaintext: the peer's TLS reads it as a bad record ("does not speak TLS").
          refuse(raw, 'this end does not use TLS: configure --tls-cert, --tls-key and --tls-ca on both ends, or on neither')
          return
        }
        onSocket(raw)
        raw.resume()
        return
      }
      if (!looksLikeTls(head)) {
        failed(`refused a plaintext connection from ${peer}: this end requires TLS (--tls-cert); configure TLS on both ends`)
        refuse(raw, 'this end requires TLS: configure --tls-cert, --tls-key and --tls-ca on both ends')
        return
      }
      // Still pending (counted) until its TLS handshake ends: the socket closes, or it is handed on.
      pendingTls.set(peer, settle)
      server!.emit('connection', raw)
    }
    raw.on('data', onData)
  }
}

/** This connection's TLS exporter value for the handshake's proofs; empty on plain TCP. */
export function channelBinding (sock: net.Socket): Buffer {
  if (!(sock instanceof tls.TLSSocket) || !sock.encrypted) return Buffer.alloc(0)
  return sock.exportKeyingMaterial(TLS_EXPORTER_BYTES, TLS_EXPORTER_LABEL, Buffer.alloc(0))
}

/** A TLS failure in one line that says what to check (OpenSSL's codes as node reports them). */
export function describeTlsError (err: NodeJS.ErrnoException): string {
  const code = String(err.code ?? '')
  switch (code) {
    case 'CERT_HAS_EXPIRED': return 'the peer\'s certificate has expired'
    case 'CERT_NOT_YET_VALID': return 'the peer\'s certificate is not valid yet'
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE': case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY': case 'SELF_SIGNED_CERT_IN_CHAIN': case 'DEPTH_ZERO_SELF_SIGNED_CERT': case 'CERT_SIGNATURE_FAILURE':
      return `the peer's certificate is not signed by this end's --tls-ca (${err.message})`
    case 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED': return 'the peer refused this end\'s certificate: it has expired'
    case 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA': case 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE': case 'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR': case 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE':
      return 'the peer refused this end\'s certificate (is it signed by the peer\'s --tls-ca?)'
    case 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED': case 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE':
      return 'the peer sent no certificate (it needs --tls-cert and --tls-key)'
    case 'ERR_SSL_WRONG_VERSION_NUMBER': case 'ERR_SSL_PACKET_LENGTH_TOO_LONG': case 'ERR_SSL_HTTP_REQUEST':
      return 'the peer does not speak TLS (configure TLS on both ends, or on neither)'
    case 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION': case 'ERR_SSL_UNSUPPORTED_PROTOCOL': case 'ERR_SSL_NO_PROTOCOLS_AVAILABLE':
      return 'the peer does not speak TLS 1.3'
    case 'ECONNRESET':
      return 'the peer closed the connection during the TLS handshake (does it use TLS? see its log)'
    default:
      if (/before secure TLS connection was established/.test(err.message)) return 'the peer closed the connection during the TLS handshake (does it use TLS? see its log)'
      // OpenSSL's "8011...:error:0A000410:SSL routines:fn:reason:file:line" down to its reason.
      return (/:SSL routines:[^:]*:([^:]+):/.exec(err.message)?.[1] ?? err.message.split('\n')[0]).trim()
  }
}
