/**
 * The daemon's control socket: `STATE/control.sock`, newline-delimited JSON, one request and one
 * response per connection. Every CLI command except `primary`/`secondary` is a client of it, so
 * nothing but the daemon ever opens the SRL.
 *
 *   request  {"cmd": "status"} | {"cmd": "sync"} | {"cmd": "stop"}
 *   response {"ok": true, "result": ...} | {"ok": false, "error": "one line", "code": "..."}
 */
import net from 'node:net'
import fs from 'node:fs'
import path from 'node:path'
import { CONTROL_REQUEST_BYTES_MAX } from '../limits'
import { ReplError, countError } from '../errors'

/** `signal` aborts when the client goes away before the answer (a long `ibc receive`, say). */
/** A request on the control socket: a command name and its arguments (docs/FORMAT.md, "Control-socket protocol"). */
export interface ControlRequest { cmd: string, [k: string]: unknown }

export type Handler = (req: ControlRequest, signal: AbortSignal) => Promise<unknown>

/** An error the daemon answered with: its one-line message and its code (a ReplErrorCode, EIBC_*, an errno name). */
export class RemoteError extends Error {
  /** The exit code the CLI should end with (`ibc run`: the failing script's), if the daemon gave one. */
  exitCode?: number
  /** More than the one line, e.g. a failing script's output, printed after it. */
  detail?: string
  constructor (readonly code: string, message: string) {
    super(message)
    this.name = 'RemoteError'
  }
}

export function socketPath (stateDir: string): string {
  return path.join(stateDir, 'control.sock')
}

/**
 * Reads one request from the bytes a client sends: a line of at most CONTROL_REQUEST_BYTES_MAX
 * bytes (UTF-8) holding a JSON object with a string `cmd`. push() returns null until the line is
 * complete, then the request; a line too long, not JSON or not such an object throws USAGE. Once
 * it has returned a request or thrown, later bytes are ignored (null). It keeps at most
 * CONTROL_REQUEST_BYTES_MAX bytes: an oversized request is read to its end and discarded, then
 * refused, since closing on a client still writing would reset the connection before it could
 * read why.
 */
export class RequestReader {
  private parts: Buffer[] = []
  private bytes = 0
  private tooLarge = false
  private done = false

  /** Bytes held of an unfinished line. */
  get buffered (): number { return this.bytes }

  push (chunk: Buffer): ControlRequest | null {
    if (this.done) return null
    const nl = chunk.indexOf(0x0a)
    const take = nl < 0 ? chunk.length : nl
    if (!this.tooLarge && this.bytes + take > CONTROL_REQUEST_BYTES_MAX) {
      this.tooLarge = true
      this.parts = []
      this.bytes = 0
    }
    if (!this.tooLarge && take > 0) {
      this.parts.push(chunk.subarray(0, take))
      this.bytes += take
    }
    if (nl < 0) return null
    this.done = true
    const line = Buffer.concat(this.parts, this.bytes)
    this.parts = []
    this.bytes = 0
    if (this.tooLarge) throw new ReplError('USAGE', `the request is larger than ${CONTROL_REQUEST_BYTES_MAX} bytes`)
    return parseRequest(line.toString('utf8'))
  }
}

/** One request line as a ControlRequest: a JSON object whose `cmd` is a string; USAGE if it is not. */
export function parseRequest (line: string): ControlRequest {
  let req: unknown
  try { req = JSON.parse(line) } catch { throw new ReplError('USAGE', 'malformed request') }
  if (typeof req !== 'object' || req === null || Array.isArray(req) || typeof (req as { cmd?: unknown }).cmd !== 'string') {
    throw new ReplError('USAGE', 'malformed request: not a JSON object with a string "cmd"')
  }
  return req as ControlRequest
}

export async function serve (stateDir: string, handler: Handler): Promise<net.Server> {
  const file = socketPath(stateDir)
  // We hold the state directory's lock, so a socket file here is a dead daemon's leftover.
  try { fs.unlinkSync(file) } catch {}
  const conns = new Set<net.Socket>()
  const server = net.createServer((sock) => {
    conns.add(sock)
    sock.on('close', () => conns.delete(sock))
    const reader = new RequestReader()
    let handled = false
    const gone = new AbortController()
    sock.on('close', () => gone.abort())
    sock.on('error', () => {})
    sock.on('data', (chunk: Buffer) => {
      if (handled) return
      let req: ControlRequest | null
      try {
        req = reader.push(chunk)
      } catch (err) {
        handled = true
        const e = err as ReplError
        sock.end(JSON.stringify({ ok: false, error: e.message, code: e.code }) + '\n')
        return
      }
      if (req === null) return
      handled = true
      handler(req, gone.signal).then(
        (result) => sock.end(JSON.stringify({ ok: true, result }) + '\n'),
        (err: Error & { code?: string, exitCode?: number, detail?: string }) => {
          countError(err.code ?? 'UNEXPECTED')
          sock.end(JSON.stringify({ ok: false, error: err.message, code: err.code, exitCode: err.exitCode, detail: err.detail }) + '\n')
        })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(file, () => { server.off('error', reject); resolve() })
  })
  fs.chmodSync(file, 0o600)
  // close() also drops connections still open (a client that never read its answer, or one
  // blocked before it could close its end), so a stopping daemon never waits on a client.
  const close = server.close.bind(server)
  server.close = ((cb?: (err?: Error) => void) => {
    const r = close(cb)
    for (const c of conns) c.destroy()
    return r
  }) as typeof server.close
  return server
}

/** Sends one request to the daemon owning `stateDir`. NOT_RUNNING if nobody answers. */
export function request (stateDir: string, req: { cmd: string, [k: string]: unknown }, timeoutMs = 10_000): Promise<unknown> {
  const file = socketPath(stateDir)
  return new Promise((resolve, reject) => {
    const sock = net.connect(file)
    let buf = ''
    const timer = setTimeout(() => { sock.destroy(); reject(new ReplError('NOT_RUNNING', `the replicafs daemon for ${stateDir} did not answer within ${timeoutMs} ms`)) }, timeoutMs)
    sock.setEncoding('utf8')
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'))
    sock.on('data', (c: string) => { buf += c })
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new ReplError('NOT_RUNNING', `no replicafs daemon is running for state directory ${stateDir}`))
      else if (err.code === 'EACCES' || err.code === 'EPERM') reject(new ReplError('PERMISSION', `permission denied: ${file} (run as the daemon's user)`))
      else reject(err)
    })
    sock.on('end', () => {
      clearTimeout(timer)
      sock.destroy()
      let res: { ok: boolean, result?: unknown, error?: string, code?: string, exitCode?: number, detail?: string }
      try { res = JSON.parse(buf) } catch { reject(new ReplError('NOT_RUNNING', `the replicafs daemon for ${stateDir} closed the connection`)); return }
      if (res.ok) resolve(res.result)
      else reject(Object.assign(new RemoteError(res.code ?? 'UNKNOWN', res.error ?? 'request failed'), typeof res.exitCode === 'number' ? { exitCode: res.exitCode } : {}, typeof res.detail === 'string' && res.detail !== '' ? { detail: res.detail } : {}))
    })
  })
}
