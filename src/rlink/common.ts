/** What both ends of an RLINK share: addresses, the secret file, and a framed socket. */
import fs from 'node:fs'
import net from 'node:net'
import { ReplError, countError } from '../errors'
import { decodeBody, encodeFrame, encodeFrameParts, FrameDecoder, MsgType, type Message, type RefuseCode } from '../format/wire'
import { SECRET_BYTES_MAX, RLINK_HANDSHAKES_MAX, RLINK_HANDSHAKE_TIMEOUT_MS, RLINK_LIMIT_LOG_INTERVAL_MS, RLINK_OUTBOX_BYTES } from '../limits'
import { acceptor, channelBinding, describeTlsError, type RlinkTls } from './tls'
import { COMPRESS_MIN_BYTES, compressBody, inflateBody } from './compress'
import type { RateLimiter } from './rate'

export interface Address { host: string, port: number }

/** Parses HOST:PORT (IPv6 as [addr]:port). `allowZero` for --listen (port 0 picks a free one). */
export function parseAddress (text: string, flag: string, allowZero = false): Address {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([^:\s]+):(\d+)$/.exec(text)
  if (!m) throw new ReplError('USAGE', `--${flag} ${text} is not HOST:PORT`)
  const port = Number(m[2])
  if (!Number.isInteger(port) || port > 65535 || (port === 0 && !allowZero)) throw new ReplError('USAGE', `--${flag} ${text}: port ${m[2]} is out of range (1-65535${allowZero ? ', or 0 for any free port' : ''})`)
  return { host: m[1], port }
}

export function formatAddress (a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}

/**
 * Listens on `at` for RLINK peers (a Secondary for its Primary, a Primary for peers that dial it);
 * a clear error if the address is taken or not local. Resolves with the real address (port 0 resolved).
 * With `tls`, a connection reaches `onSocket` once its TLS handshake is done and the peer's
 * certificate checked; a plaintext peer is told why in a plaintext REFUSE. `failed` hears why a
 * connection did not get that far (logged, and the status's last error). `admit` sees each new
 * connection first, with how many others are still before `onSocket` (their first bytes, their
 * TLS handshake): false closes it (HandshakeLimit).
 */
export async function listen (at: Address, onSocket: (sock: net.Socket) => void, log: (line: string) => void,
  tls: RlinkTls | null = null, failed: (why: string) => void = log,
  admit?: (raw: net.Socket, pending: number) => boolean): Promise<{ server: net.Server, address: string }> {
  const server = net.createServer(acceptor(tls, onSocket, (sock, message) => {
    // A refused peer speaks frames (in plaintext, or inside TLS): it is told why in one.
    try { sock.end(encodeFrame({ t: MsgType.REFUSE, code: 'AUTH', message })) } catch {}
    setTimeout(() => sock.destroy(), 1000).unref()
  }, failed, RLINK_HANDSHAKE_TIMEOUT_MS, admit))
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = formatAddress(at)
      reject(new ReplError(err.code === 'EADDRINUSE' ? 'ADDRESS_IN_USE' : 'USAGE', err.code === 'EADDRINUSE' ? `cannot listen on ${where}: the address is already in use`
        : err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' ? `cannot listen on ${where}: no such local address`
          : `cannot listen on ${where}: ${err.message}`))
    })
    server.listen(at.port, at.host, () => { server.removeAllListeners('error'); resolve() })
  })
  server.on('error', (err) => log(`listener: ${err.message}`))
  const a = server.address() as net.AddressInfo
  return { server, address: formatAddress({ host: a.address, port: a.port }) }
}

/**
 * A listener's per-peer limit: at most RLINK_HANDSHAKES_MAX connections in their handshake at once
 * (each ends at its deadline); another is closed at once, and the log says so at most once per
 * RLINK_LIMIT_LOG_INTERVAL_MS, with how many, so that a flood fills neither the sockets nor the log.
 */
export class HandshakeLimit {
  private closed = 0
  private lastLog = 0
  constructor (private readonly log: (line: string) => void) {}

  /** Whether `sock` may begin its handshake, with `inHandshake` others in theirs; if not, it is closed. */
  admit (sock: net.Socket, inHandshake: number): boolean {
    if (inHandshake < RLINK_HANDSHAKES_MAX) return true
    sock.destroy()
    this.closed++
    const now = Date.now()
    if (now - this.lastLog >= RLINK_LIMIT_LOG_INTERVAL_MS) {
      this.log(`closed ${this.closed === 1 ? 'a connection' : `${this.closed} connections`} at once (the last from ${String(sock.remoteAddress)}:${String(sock.remotePort)}): ` +
        `${RLINK_HANDSHAKES_MAX} connections are in their handshake already (each for at most ${RLINK_HANDSHAKE_TIMEOUT_MS / 1000} s)`)
      this.lastLog = now
      this.closed = 0
    }
    return false
  }
}

/** Reads the shared secret: the file's bytes without trailing whitespace. Never logged. */
export function readSecret (file: string): Buffer {
  let raw: Buffer
  try {
    const st = fs.statSync(file)
    if (!st.isFile()) throw new ReplError('SECRET', `secret file ${file} is not a regular file`)
    if (st.size > SECRET_BYTES_MAX) throw new ReplError('SECRET', `secret file ${file} is larger than ${SECRET_BYTES_MAX} bytes`)
    // As ssh does with a private key: a secret others can read is no secret.
    if ((st.mode & 0o077) !== 0) throw new ReplError('SECRET', `secret file ${file} is accessible by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): chmod 600 ${file}`)
    raw = fs.readFileSync(file)
  } catch (err) {
    if (err instanceof ReplError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw new ReplError('SECRET', code === 'ENOENT' ? `secret file ${file} does not exist` : `cannot read secret file ${file}: ${(err as Error).message}`)
  }
  let end = raw.length
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d || raw[end - 1] === 0x20 || raw[end - 1] === 0x09)) end--
  if (end === 0) throw new ReplError('SECRET', `secret file ${file} is empty`)
  return raw.subarray(0, end)
}

/** One frame on its way out: its bytes, or the compression that makes them. */
interface Outgoing { frame: Buffer | null, bytes: number }

/**
 * A socket speaking frames. Decoding errors and socket errors end it once, with a reason;
 * `send` reports whether to go on sending (false: wait for `onDrain`).
 *
 * Outgoing frames go straight to the socket unless compression (`compressing`) or a bandwidth
 * limit (`limiter`) is on: then they queue here, in order, each compressed in the thread pool
 * and released by the limiter, and `send` says false once RLINK_OUTBOX_BYTES are queued.
 * Incoming ZSTD frames (accepted only once `inflating` is set, after the handshake) are
 * decompressed in the thread pool and delivered in the order the frames came.
 */
export class FramedSocket {
  private readonly decoder = new FrameDecoder()
  private ended = false
  lastReceived = Date.now()
  lastSent = Date.now()
  private knownPeer: string | null = null
  /** Compress bulk frames (UPDATES, SYNC_DATA): the peer accepted zstd in the handshake. */
  compressing = false
  /** Accept ZSTD frames: this end agreed to zstd in the handshake. */
  inflating = false
  /** The bandwidth limit of the RLINK this connection carries, or null. */
  limiter: RateLimiter | null = null
  /** Called once the queue and the socket can take more after `send` said false. */
  onDrain: () => void = () => {}
  /** Bytes written to the socket (frames, after compression) and the frames' bytes before it. */
  bytesOut = 0
  bytesRaw = 0
  /** Bytes read from the socket. */
  bytesIn = 0
  private readonly outbox: Outgoing[] = []
  private queued = 0
  private socketFull = false
  private wantDrain = false
  private waitTimer: NodeJS.Timeout | null = null
  /** The tail of incoming frames being decompressed, to deliver in order; null: none. */
  private inflight: Promise<void> | null = null
  private backlog = 0
  private cachedBinding: Buffer | null = null

  /** This connection's channel binding for the handshake's proofs (src/rlink/tls.ts). */
  get binding (): Buffer {
    this.cachedBinding ??= channelBinding(this.sock)
    return this.cachedBinding
  }

  /** Who holds reading paused (the receiver's window, the decompression backlog): read while none does. */
  private readonly holds = new Set<string>()

  /** Stops reading from the socket until every `hold` is released (flow control of each owner). */
  hold (who: string): void {
    this.holds.add(who)
    this.sock.pause()
  }

  release (who: string): void {
    if (!this.holds.delete(who) || this.holds.size > 0 || this.ended) return
    this.sock.resume()
  }

  /** Whether the connection is TLS. */
  get secure (): boolean { return this.binding.length > 0 }

  /** The peer's address (known once connected; a dialled socket's only after that). */
  get peer (): string {
    if (this.knownPeer !== null) return this.knownPeer
    const host = this.sock.remoteAddress
    if (host === undefined) return '?'
    this.knownPeer = formatAddress({ host, port: this.sock.remotePort ?? 0 })
    return this.knownPeer
  }

  constructor (readonly sock: net.Socket, private onMessage: (m: Message) => void, private onEnd: (reason: string) => void) {
    // Kept once known: a closed socket forgets it.
    if (this.peer === '?') sock.once('connect', () => { this.knownPeer = null; void this.peer })
    sock.setNoDelay(true)
    sock.setKeepAlive(true, 5000)
    sock.on('data', (chunk: Buffer) => {
      if (this.ended) return
      this.lastReceived = Date.now()
      this.bytesIn += chunk.length
      let msgs: Message[]
      try { msgs = this.decoder.push(chunk) } catch (err) { this.refuse('PROTOCOL', (err as Error).message); return }
      for (const m of msgs) {
        if (this.ended) return
        if (m.t === MsgType.ZSTD || this.inflight !== null) { this.deliverLater(m); continue }
        this.deliver(m)
      }
    })
    sock.on('error', (err: NodeJS.ErrnoException) => this.end(isTlsSocket(sock) ? describeTlsError(err) : err.message))
    sock.on('close', () => this.end(isTlsSocket(sock) && this.bytesIn === 0
      // A TLS 1.3 server checks the client's certificate after the client's side of the
      // handshake is done, and node closes without an alert: so a refusal looks like this.
      ? 'the peer closed the connection after the TLS handshake, before any frame: it refused this end\'s certificate? (signed by the peer\'s --tls-ca? expired? see the peer\'s log)'
      : 'connection closed'))
    sock.on('drain', () => { this.socketFull = false; this.flush() })
  }

  private deliver (m: Message): void {
    try { this.onMessage(m) } catch (err) { this.end(`internal error handling a ${MsgType[m.t] ?? m.t} frame: ${(err as Error).message}`) }
  }

  /** A compressed frame, or any frame behind one: decompressed (in parallel) and delivered in order. */
  private deliverLater (m: Message): void {
    let got: Promise<Message>
    if (m.t !== MsgType.ZSTD) got = Promise.resolve(m)
    else if (!this.inflating) { this.refuse('PROTOCOL', 'peer sent a compressed frame, and compression was not agreed'); return } else {
      got = inflateBody(m.n, m.z).then((body) => {
        const inner = decodeBody(body)
        if (inner.t === MsgType.ZSTD) throw new ReplError('PROTOCOL', 'peer sent a compressed frame inside a compressed frame')
        return inner
      })
      got.catch(() => {})
    }
    if (++this.backlog > 32) this.hold('inflate')
    const p: Promise<void> = (this.inflight ?? Promise.resolve()).then(async () => {
      let msg: Message
      try { msg = await got } catch (err) { this.refuse('PROTOCOL', (err as Error).message); return }
      if (!this.ended) this.deliver(msg)
    }).finally(() => {
      this.backlog--
      if (this.inflight === p) this.inflight = null
      if (this.backlog <= 8) this.release('inflate')
    })
    this.inflight = p
  }

  get isEnded (): boolean { return this.ended }

  /**
   * Another owner takes the connection from the next frame on (a Primary's listener hands a
   * dialling Secondary's connection to its RLINK, src/rlink/gate.ts).
   */
  rebind (onMessage: (m: Message) => void, onEnd: (reason: string) => void): void {
    this.onMessage = onMessage
    this.onEnd = onEnd
  }

  send (m: Message): boolean {
    if (this.ended) return false
    this.lastSent = Date.now()
    // A SYNC_DATA frame's data is written as it is, after its header (one writev, no copy).
    const parts = encodeFrameParts(m)
    const length = parts.length === 1 ? parts[0].length : parts[0].length + parts[1].length
    this.bytesRaw += length
    if (!this.compressing && this.limiter === null && this.outbox.length === 0 && !this.socketFull) {
      this.bytesOut += length
      let room: boolean
      if (parts.length === 1) room = this.sock.write(parts[0])
      else {
        this.sock.cork()
        this.sock.write(parts[0])
        room = this.sock.write(parts[1])
        this.sock.uncork()
      }
      if (room) return true
      this.socketFull = this.wantDrain = true
      return false
    }
    const frame = parts.length === 1 ? parts[0] : Buffer.concat(parts, length)
    const out: Outgoing = { frame, bytes: frame.length }
    if (this.compressing && (m.t === MsgType.UPDATES || m.t === MsgType.SYNC_DATA) && frame.length - 4 >= COMPRESS_MIN_BYTES) {
      out.frame = null
      const body = frame.subarray(4)
      compressBody(body).then((z) => {
        // Kept only where it pays: random data goes as it is.
        out.frame = z.length + 16 < body.length ? encodeFrame({ t: MsgType.ZSTD, n: body.length, z }) : frame
      }, () => { out.frame = frame }).finally(() => this.flush())
    }
    this.outbox.push(out)
    this.queued += out.bytes
    this.flush()
    if (this.queued < RLINK_OUTBOX_BYTES && !this.socketFull) return true
    this.wantDrain = true
    return false
  }

  /** Frames not yet written to the socket (queued for compression or the bandwidth limit). */
  get pendingBytes (): number { return this.queued }

  /** Writes what is ready, in order, as the limit and the socket allow; then `onDrain` if owed. */
  private flush (): void {
    while (this.outbox.length > 0 && !this.ended && !this.socketFull && this.waitTimer === null) {
      const head = this.outbox[0]
      if (head.frame === null) return // its compression calls flush when done
      if (this.limiter !== null) {
        const wait = this.limiter.take(head.frame.length)
        if (wait > 0) {
          this.waitTimer = setTimeout(() => { this.waitTimer = null; this.flush() }, wait)
          return
        }
      }
      this.outbox.shift()
      this.queued -= head.bytes
      this.bytesOut += head.frame.length
      if (!this.sock.write(head.frame)) this.socketFull = true
    }
    if (this.wantDrain && !this.ended && !this.socketFull && this.queued < RLINK_OUTBOX_BYTES / 2) {
      this.wantDrain = false
      this.onDrain()
    }
  }

  /** Tells the peer why, then closes. */
  refuse (code: RefuseCode, message: string): void {
    if (this.ended) return
    countError(`REFUSED_${code}`)
    try { this.sock.end(encodeFrame({ t: MsgType.REFUSE, code, message })) } catch {}
    this.end(message)
  }

  end (reason: string): void {
    if (this.ended) return
    this.ended = true
    if (this.waitTimer !== null) { clearTimeout(this.waitTimer); this.waitTimer = null }
    this.outbox.length = 0
    this.queued = 0
    if (!this.sock.destroyed) {
      // Let a REFUSE frame written just before go out, then make sure the socket is gone.
      this.sock.end()
      setTimeout(() => this.sock.destroy(), 1000).unref()
    }
    this.onEnd(reason)
  }
}

function isTlsSocket (sock: net.Socket): boolean {
  return (sock as { encrypted?: boolean }).encrypted === true
}
