/** What both ends of an RLINK share: addresses, the secret file, and a framed socket. */
import fs from 'node:fs'
import net from 'node:net'
import { ReplError } from '../errors'
import { encodeFrame, FrameDecoder, MsgType, type Message, type RefuseCode } from '../format/wire'
import { SECRET_BYTES_MAX, RLINK_HANDSHAKES_MAX, RLINK_HANDSHAKE_TIMEOUT_MS, RLINK_LIMIT_LOG_INTERVAL_MS } from '../limits'

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
 */
export async function listen (at: Address, onSocket: (sock: net.Socket) => void, log: (line: string) => void): Promise<{ server: net.Server, address: string }> {
  const server = net.createServer(onSocket)
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

/**
 * A socket speaking frames. Decoding errors and socket errors end it once, with a reason;
 * `send` reports whether the kernel buffer has room (false: wait for 'drain').
 */
export class FramedSocket {
  private readonly decoder = new FrameDecoder()
  private ended = false
  lastReceived = Date.now()
  lastSent = Date.now()
  private knownPeer: string | null = null

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
      let msgs: Message[]
      try { msgs = this.decoder.push(chunk) } catch (err) { this.refuse('PROTOCOL', (err as Error).message); return }
      for (const m of msgs) {
        if (this.ended) return
        try { this.onMessage(m) } catch (err) { this.end(`internal error handling a ${MsgType[m.t] ?? m.t} frame: ${(err as Error).message}`); return }
      }
    })
    sock.on('error', (err) => this.end(err.message))
    sock.on('close', () => this.end('connection closed'))
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
    return this.sock.write(encodeFrame(m))
  }

  /** Tells the peer why, then closes. */
  refuse (code: RefuseCode, message: string): void {
    if (this.ended) return
    try { this.sock.end(encodeFrame({ t: MsgType.REFUSE, code, message })) } catch {}
    this.end(message)
  }

  end (reason: string): void {
    if (this.ended) return
    this.ended = true
    if (!this.sock.destroyed) {
      // Let a REFUSE frame written just before go out, then make sure the socket is gone.
      this.sock.end()
      setTimeout(() => this.sock.destroy(), 1000).unref()
    }
    this.onEnd(reason)
  }
}
