/**
 * Fuzz target `control`: the control socket's request reader (src/control/index.ts RequestReader
 * and parseRequest, what serve() runs on the bytes a client sends).
 *
 * Input: byte 0 chooses how the bytes are split into push() calls (as the socket's 'data' events
 * would cut them); the rest is what the client sent. Every input is a request, an unfinished line
 * (no newline yet), or refused with USAGE; and:
 * - pushed whole or in pieces, the bytes give the same request (or the same refusal);
 * - a request is a plain object whose `cmd` is a string: what JSON.parse makes of the first line;
 * - the reader never holds more than CONTROL_REQUEST_BYTES_MAX bytes.
 */
import fc from 'fast-check'
import util from 'node:util'
import { RequestReader, type ControlRequest } from '../../src/control'
import { CONTROL_REQUEST_BYTES_MAX, IBC_MESSAGE_BYTES_MAX } from '../../src/limits'
import { Finding, chunking, split, digest, type Target } from './engine'
import { KEYS } from './values'

interface Read { req: ControlRequest | null, error: unknown, pushes: number }

function read (bytes: Buffer, sizes: number[]): Read {
  const r = new RequestReader()
  let pushes = 0
  for (const chunk of split(bytes, sizes)) {
    pushes++
    let got: ControlRequest | null
    try { got = r.push(chunk) } catch (error) { return { req: null, error, pushes } }
    if (r.buffered > CONTROL_REQUEST_BYTES_MAX) throw new Finding('buffered', `the reader holds ${r.buffered} bytes`)
    if (got !== null) {
      // Once answered, the rest is ignored.
      if (r.push(Buffer.from('{"cmd":"stop"}\n')) !== null) throw new Finding('after', 'the reader took a second request')
      return { req: got, error: null, pushes }
    }
  }
  return { req: null, error: null, pushes }
}

function check (b: Buffer): string {
  const sel = b.length > 0 ? b[0] : 0
  const bytes = b.subarray(1)
  const whole = read(bytes, [bytes.length])
  const pieces = read(bytes, chunking(sel, bytes.length))
  const show = (x: Read): string => x.error !== null ? `refused (${String(x.error)})` : x.req === null ? 'unfinished' : `request ${util.inspect(x.req).slice(0, 100)}`
  if (show(whole) !== show(pieces) || digest(whole.req) !== digest(pieces.req)) throw new Finding('chunking', `whole: ${show(whole)}; in pieces: ${show(pieces)}`)
  const nl = bytes.indexOf(0x0a)
  if (whole.error !== null) throw whole.error
  if (whole.req === null) {
    if (nl >= 0) throw new Finding('unfinished', 'a line with its newline gave no request and no refusal')
    return 'unfinished'
  }
  const req = whole.req as unknown
  if (typeof req !== 'object' || req === null || Array.isArray(req) || Object.getPrototypeOf(req) !== Object.prototype || typeof (req as { cmd?: unknown }).cmd !== 'string') {
    throw new Finding('request', `the reader returned ${util.inspect(req).slice(0, 200)}, not an object with a string cmd`)
  }
  if (nl < 0 || nl > CONTROL_REQUEST_BYTES_MAX) throw new Finding('line', 'a request without a newline within the limit')
  const reference: unknown = JSON.parse(bytes.subarray(0, nl).toString('utf8'))
  if (digest(reference) !== digest(req)) throw new Finding('request', 'the request is not the JSON of its line')
  return `request ${(req as ControlRequest).cmd.length < 12 ? (req as ControlRequest).cmd : 'long'}`
}

const CMDS = ['status', 'sync', 'stop', 'pause', 'resume', 'ibc', 'ibc-run', 'snapshot', 'verify', 'takeover', 'failback', 'migrate', 'stats', '', 'x'.repeat(40)]

/** Requests the CLI sends. */
function requests (): object[] {
  return [
    { cmd: 'status' },
    { cmd: 'sync' },
    { cmd: 'stop' },
    { cmd: 'pause', secondary: '127.0.0.1:7001' },
    { cmd: 'ibc', op: 'send', app: 'backup', message: Buffer.from('snapshot now').toString('base64'), flush: true, freezeTimeoutS: 30 },
    { cmd: 'snapshot', op: 'create', name: 'before-upgrade' },
    { cmd: 'verify', secondary: null, repair: false },
    { cmd: 'takeover' }
  ]
}

function seeds (): Buffer[] {
  const out = requests().map((r, i) => Buffer.concat([Buffer.from([i]), Buffer.from(JSON.stringify(r) + '\n')]))
  out.push(Buffer.from('\x03{"cmd":"status"}\n{"cmd":"stop"}\n'))
  out.push(Buffer.from('\x05 {"cmd" : "ibc", "message": "ü€𝄞"}\r\n'))
  return out
}

function structured (): fc.Arbitrary<Buffer> {
  const cmd = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...CMDS) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) })
  const obj = fc.tuple(cmd, fc.dictionary(fc.constantFrom(...KEYS, 'secondary', 'op', 'app'), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }), fc.boolean())
    .map(([c, rest, withCmd]) => JSON.stringify(withCmd ? { ...rest, cmd: c } : rest))
  const anyJson = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v))
  const text = fc.oneof(
    { weight: 4, arbitrary: obj },
    { weight: 2, arbitrary: anyJson },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.constantFrom('{', '}', '{"cmd":', '"cmd"', 'null', '[]', '{"cmd":1}', '{"cmd":null}', '{"cmd":"status"', '\ufeff{"cmd":"status"}', '{"__proto__":{"cmd":"x"},"cmd":"status"}') }
  )
  // around the size limit: a long value (one byte or three per character)
  const long = fc.tuple(fc.constantFrom(-2, -1, 0, 1, 2, 100), fc.constantFrom('a', 'é', '€'), fc.boolean()).map(([d, ch, wrap]) => {
    const head = '{"cmd":"ibc","message":"'
    const tail = '"}'
    const n = Math.max(0, Math.floor((CONTROL_REQUEST_BYTES_MAX + d - head.length - tail.length) / Buffer.byteLength(ch)))
    return wrap ? head + ch.repeat(n) + tail : ch.repeat(n + head.length + tail.length)
  })
  const line = fc.tuple(fc.oneof({ weight: 6, arbitrary: text }, { weight: 1, arbitrary: long }), fc.constantFrom('\n', '\r\n', '', '\n\n', '\n{"cmd":"stop"}\n'))
    .map(([t, end]) => Buffer.from(t + end))
  // bytes that are not UTF-8, cut multibyte characters
  const raw = fc.tuple(fc.uint8Array({ maxLength: 40 }), fc.boolean()).map(([u, nl]) => Buffer.concat([Buffer.from(u), nl ? Buffer.from('\n') : Buffer.alloc(0)]))
  return fc.tuple(fc.nat({ max: 255 }), fc.oneof({ weight: 8, arbitrary: line }, { weight: 1, arbitrary: raw }))
    .map(([sel, body]) => Buffer.concat([Buffer.from([sel]), body]))
}

export const control: Target = {
  name: 'control',
  description: 'control-socket requests: RequestReader.push (newline framing, the size limit) and parseRequest',
  codes: ['USAGE'],
  seeds,
  structured,
  check
}

export const CONTROL_U32S = [CONTROL_REQUEST_BYTES_MAX, IBC_MESSAGE_BYTES_MAX]
