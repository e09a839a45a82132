/**
 * Fuzz target `wire`: the RLINK wire decoder (src/format/wire.ts FrameDecoder) and the checks the
 * receivers make of a decoded message with the format's own validators (src/format/generation.ts
 * checkGeneration and checkPathList; an UPDATES frame's records through readHeader, checksumOk and
 * decodeRecord, as a Secondary logs and applies them).
 *
 * Input: byte 0 chooses how the stream is split into push() calls; the rest is the byte stream a
 * peer sent. Every stream must decode into messages or be refused with PROTOCOL (FORMAT_VERSION
 * or LOG_CORRUPT for an UPDATES record), and:
 * - pushed whole or in pieces, it decodes the same (or is refused the same);
 * - every message is an object with a numeric `t`; what the validators accept has the types they promise;
 * - the decoder holds no more than one frame's bytes;
 * - a good frame decodes right after it (msgpackr keeps state in its module: a bad input must not leave any).
 */
import fc from 'fast-check'
import util from 'node:util'
import { FrameDecoder, MsgType, PROTOCOL_VERSION, encodeFrame, updatesRecords, type Message } from '../../src/format/wire'
import { checkGeneration, checkPathList, GENERATION_HISTORY_MAX } from '../../src/format/generation'
import { readHeader, checksumOk, decodeRecord, encodeRecord, RecordType } from '../../src/format/record'
import { WIRE_FRAME_BYTES_MAX, RECORD_META_BYTES_MAX, FUSE_WRITE_BYTES_MAX } from '../../src/limits'
import { Finding, chunking, split, digest, type Target } from './engine'
import { AWAITING_FIX } from './open'
import { packr, value, objectOf, rawMsgpack, KEYS } from './values'

const bin = (n: number, seed: number): Buffer => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31) & 0xff
  return b
}
const GEN = { id: '9f1c2e4a-0000-4000-8000-00000000abcd', since: 7, history: [{ id: 'ab', end: 7 }] }

function records (): Buffer[] {
  return [
    encodeRecord(RecordType.WRITE, 41, { p: '/a', o: 0, t: [1700000000, 1] }, bin(100, 1)),
    encodeRecord(RecordType.RENAME, 42, { p: '/a', d: '/b', t: [1700000000, 2] }),
    encodeRecord(RecordType.IBC, 43, { n: 'app', x: bin(10, 2), f: 0, s: 0, t: [1700000000, 3] })
  ]
}

/** One message of every type (as the project sends them). */
export function sampleMessages (): Message[] {
  return [
    { t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: 'rds', srlId: '0123456789abcdef', nonce: bin(32, 1), rf: 2, gen: GEN },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'rds', nonce: bin(32, 2), proof: bin(32, 3), next: 43, last: { seq: 42, crc: 0xfedcba98 }, applied: 40, fresh: false, empty: false, syncing: null, adopt: false, failback: { gen: 'ab', at: 42, paths: [['/d', true], ['/f', false]] } },
    { t: MsgType.AUTH, proof: bin(32, 6) },
    { t: MsgType.READY },
    { t: MsgType.UPDATES, recs: records() },
    { t: MsgType.ACK, n: 2 ** 40, d: 2 ** 40 - 1 },
    { t: MsgType.RESEND, from: 42, why: 'gap' },
    { t: MsgType.PING, ts: 1_700_000_000_123 },
    { t: MsgType.PONG, ts: 1_700_000_000_123 },
    { t: MsgType.REFUSE, code: 'TAKEN_OVER', message: 'taken over', gen: GEN },
    { t: MsgType.TASK, id: 1, task: 'backup', step: 'onfreeze', app: 'backup', timeoutS: 120 },
    { t: MsgType.TASK_RESULT, id: 1, code: 3, output: 'out\n', error: null, ibcId: 'x-1' },
    { t: MsgType.SYNC_BEGIN, id: '0a1b2c3d', d: 1, c: 1 },
    { t: MsgType.SYNC_ENTRY, p: '/f', k: 'f', m: 0o100644, u: 1000, g: 1000, a: [1, 5], mt: [2 ** 33, 999999999], x: [['user.a', bin(3, 10)]], s: 2 ** 40, w: 'r', z: 7 },
    { t: MsgType.SYNC_DATA, p: '/f', o: 4096, d: bin(300, 11) },
    { t: MsgType.SYNC_DIR, p: '/d', names: ['a', 'b'], a: [1, 2], mt: [3, 4], m: 1 },
    { t: MsgType.SYNC_REMOVE, p: '/gone' },
    { t: MsgType.SYNC_DONE, seq: 2 ** 40 + 3 },
    { t: MsgType.SYNC_ACK, n: 12345 },
    { t: MsgType.SYNC_SUMS, p: '/f', s: 2 ** 40 + 1, i: 0, h: bin(48, 12), e: 1 },
    { t: MsgType.VERIFY_BEGIN, id: 'a1b2c3d4', seq: 9 },
    { t: MsgType.VERIFY_ENTRIES, id: 'a1b2c3d4', i: 0, e: [{ p: '/', k: 'd', m: 0o40755, u: 0, g: 0, mt: [1, 1] }, { p: '/f', k: 'f', m: 0o100644, u: 0, g: 0, mt: [1, 2], s: 3, c: bin(16, 1) }], end: 1, r: bin(16, 15) },
    { t: MsgType.VERIFY_ACK, id: 'a1b2c3d4', n: 8 },
    { t: MsgType.VERIFY_END, id: 'a1b2c3d4' },
    { t: MsgType.JOIN, v: PROTOCOL_VERSION, rds: 'rds', name: 'n' },
    { t: MsgType.MIGRATE, gen: GEN, at: 7 },
    { t: MsgType.MIGRATED, ok: false, error: 'no' },
    { t: MsgType.SPLIT, gen: GEN, at: 7, paths: [['/s', false], ['/d', true]] }
  ]
}

/** A stream of frames, as an input: selector byte 0, then the frames. */
function input (selector: number, ...frames: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([selector]), ...frames])
}

/** A frame around any body (its length prefix true to the body). */
export function frame (body: Buffer): Buffer {
  const head = Buffer.alloc(4)
  head.writeUInt32LE(body.length)
  return Buffer.concat([head, body])
}

function seeds (): Buffer[] {
  const msgs = sampleMessages()
  const out = msgs.map((m, i) => input(i % 8, encodeFrame(m)))
  out.push(input(0, ...msgs.map((m) => encodeFrame(m))))
  out.push(input(3, encodeFrame(msgs[0]), encodeFrame(msgs[4]), encodeFrame(msgs[5])))
  return out
}

const MSG_TYPES = Object.values(MsgType).filter((v): v is number => typeof v === 'number')

/** Frames of a message type with fields of any kind (the right names, any values), raw msgpack bodies, lying length prefixes. */
function structured (): fc.Arbitrary<Buffer> {
  const t = fc.oneof(fc.constantFrom(...MSG_TYPES), fc.constantFrom(0, -1, 30, 255, 2 ** 32, 1.5, NaN))
  const message = fc.tuple(t, objectOf(KEYS)).map(([tt, fields]) => Buffer.from(packr.pack({ ...fields, t: tt })))
  // a known message with one field replaced by a value of any kind
  const altered = fc.tuple(fc.nat(), fc.constantFrom(...KEYS.filter((k) => k !== '__proto__')), value).map(([i, k, v]) => {
    const msgs = sampleMessages()
    const m = { ...msgs[i % msgs.length] } as Record<string, unknown>
    m[k] = v
    return Buffer.from(packr.pack(m))
  })
  // a message whose nested validators get values of any kind
  const nested = fc.tuple(fc.constantFrom(MsgType.HELLO, MsgType.MIGRATE, MsgType.REFUSE, MsgType.SPLIT, MsgType.CHALLENGE, MsgType.UPDATES),
    fc.record({
      gen: fc.oneof(value, fc.record({ id: value, since: value, history: fc.array(fc.oneof(value, fc.record({ id: value, end: value })), { maxLength: GENERATION_HISTORY_MAX + 2 }) })),
      paths: fc.oneof(value, fc.array(fc.tuple(value, value), { maxLength: 6 })),
      recs: fc.oneof(value, fc.array(fc.oneof(value, fc.constantFrom(...records())), { maxLength: 4 }))
    })).map(([tt, f]) => Buffer.from(packr.pack({ t: tt, ...f, failback: { gen: 'g', at: 1, paths: f.paths } })))
  // a raw msgpack body: maps whose values are raw msgpack of any shape
  const raw = fc.tuple(fc.constantFrom(...MSG_TYPES), fc.array(fc.tuple(fc.constantFrom(...KEYS), rawMsgpack), { maxLength: 3 }))
    .map(([tt, entries]) => Buffer.concat([Buffer.from([0x80 + entries.length + 1, 0xa1, 0x74, tt]), ...entries.map(([k, v]) => Buffer.concat([Buffer.from(packr.pack(k)), v]))]))
  const body = fc.oneof(message, altered, nested, raw, rawMsgpack)
  // length prefixes: true, or any boundary value
  const prefixed = fc.tuple(body, fc.oneof(
    { weight: 6, arbitrary: fc.constant(-1) },
    { weight: 1, arbitrary: fc.constantFrom(0, 1, 3, WIRE_FRAME_BYTES_MAX, WIRE_FRAME_BYTES_MAX + 1, 0x7fffffff, 0xffffffff) }
  )).map(([b, n]) => {
    const f = frame(b)
    if (n >= 0) f.writeUInt32LE(n >>> 0, 0)
    return f
  })
  return fc.tuple(fc.nat({ max: 255 }), fc.array(prefixed, { minLength: 1, maxLength: 3 }), fc.nat({ max: 8 }))
    .map(([sel, frames, cut]) => {
      const b = input(sel, ...frames)
      return cut === 0 ? b.subarray(0, b.length - 1) : b // sometimes a stream cut short
    })
}

interface Decoded { msgs: Message[], error: unknown, buffered: number }

function decode (stream: Buffer, sizes: number[]): Decoded {
  const d = new FrameDecoder()
  const msgs: Message[] = []
  for (const chunk of split(stream, sizes)) {
    try { msgs.push(...d.push(chunk)) } catch (error) { return { msgs, error, buffered: d.buffered } }
    if (d.buffered > 4 + WIRE_FRAME_BYTES_MAX) throw new Finding('buffered', `the decoder holds ${d.buffered} bytes, more than one frame`)
  }
  return { msgs, error: null, buffered: d.buffered }
}

/** Whether `v` holds only what msgpack itself carries, as plain data (no extension objects, no shared references). */
export function plainValue (v: unknown, seen = new Set<object>(), depth = 0): boolean {
  if (v === null || v === undefined || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return true
  if (typeof v !== 'object' || depth > 64) return false
  if (seen.has(v)) return false
  seen.add(v)
  if (v instanceof Uint8Array) return Object.getPrototypeOf(v) === Buffer.prototype || Object.getPrototypeOf(v) === Uint8Array.prototype
  if (Array.isArray(v)) return v.every((x) => plainValue(x, seen, depth + 1))
  if (Object.getPrototypeOf(v) !== Object.prototype) return false
  return Object.values(v).every((x) => plainValue(x, seen, depth + 1))
}

function checkValidators (m: Message): string[] {
  const what: string[] = []
  const f = m as unknown as Record<string, unknown>
  if ('gen' in f) {
    const g = checkGeneration(f.gen)
    if (g !== null) {
      if (typeof g.id !== 'string' || g.id.length === 0 || g.id.length > 64 || !Number.isSafeInteger(g.since) || g.since < 0 ||
        !Array.isArray(g.history) || g.history.length > GENERATION_HISTORY_MAX ||
        g.history.some((h) => typeof h.id !== 'string' || !Number.isSafeInteger(h.end) || h.end < 0)) {
        throw new Finding('checkGeneration', `accepted a generation of the wrong shape: ${util.inspect(g, { depth: 3 }).slice(0, 300)}`)
      }
      what.push('gen')
    }
  }
  const lists = [f.paths, (f.failback as { paths?: unknown } | null | undefined)?.paths]
  for (const l of lists) {
    if (l === undefined) continue
    const p = checkPathList(l)
    if (p !== undefined && p !== null) {
      if (!Array.isArray(p) || p.some((e) => !Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'boolean')) {
        throw new Finding('checkPathList', `accepted a path list of the wrong shape: ${util.inspect(p, { depth: 3 }).slice(0, 300)}`)
      }
      what.push('paths')
    }
  }
  // The receiver refuses (PROTOCOL) an UPDATES that updatesRecords refuses (src/rlink/receiver.ts).
  if (m.t === MsgType.UPDATES && Array.isArray(f.recs) && (AWAITING_FIX.updatesRecs || updatesRecords(f) !== null)) {
    for (const r of f.recs as unknown[]) {
      if (!(r instanceof Uint8Array)) {
        if (!AWAITING_FIX.updatesRecs) throw new Finding('updates-recs', `UPDATES.recs holds ${util.inspect(r, { depth: 1 }).slice(0, 100)}, not bytes, and updatesRecords let it through: the receiver reads r.buffer of it (src/rlink/receiver.ts)`)
        continue
      }
      // As the Secondary takes a record (src/rlink/receiver.ts onUpdates), then reads it back to apply it.
      const buf = Buffer.from(r.buffer, r.byteOffset, r.byteLength)
      const h = readHeader(buf)
      if (h === null || h.totalLength !== buf.length || !checksumOk(buf)) continue
      const rec = decodeRecord(buf)
      if (rec.seq !== h.seq || rec.type !== h.type || rec.data.length !== h.dataLength) throw new Finding('record', 'decodeRecord disagrees with the header')
      what.push('record')
    }
  }
  return what
}

const CANARY = sampleMessages()[1]
const CANARY_FRAME = encodeFrame(CANARY)

function same (a: Decoded, b: Decoded): boolean {
  if ((a.error === null) !== (b.error === null)) return false
  if (a.error !== null) return (a.error as Error).message === (b.error as Error).message
  return a.buffered === b.buffered && digest(a.msgs) === digest(b.msgs)
}

function show (d: Decoded): string {
  return d.error === null ? `decodes to ${util.inspect(d.msgs, { depth: 3 }).slice(0, 300)}` : `is refused (${String(d.error)})`
}

/**
 * Whether msgpackr's key cache could make these frames decode one way, then another: it serves map
 * keys of bodies under 180 bytes, and a key ending in a cut UTF-8 sequence (a byte 0xc0..0xf7 near
 * its end) is read past its end when it is not cached yet (AWAITING_FIX.keyCache).
 */
function keyCacheMayDiffer (stream: Buffer): boolean {
  for (let at = 0; at + 4 <= stream.length;) {
    const n = stream.readUInt32LE(at)
    if (n < 180 && stream.subarray(at + 4, at + 4 + n).some((x) => x >= 0xc0 && x <= 0xf7)) return true
    at += 4 + n
  }
  return false
}

function check (b: Buffer): string {
  const sel = b.length > 0 ? b[0] : 0
  const stream = b.subarray(1)
  const whole = decode(stream, [stream.length])
  const pieces = decode(stream, chunking(sel, stream.length))
  const stable = same(whole, pieces)
  if (!stable && (!AWAITING_FIX.keyCache || !keyCacheMayDiffer(stream))) {
    throw new Finding(keyCacheMayDiffer(stream) ? 'key-cache' : 'chunking', `pushed whole the stream ${show(whole)}; in pieces it ${show(pieces)}`)
  }
  const seen: string[] = []
  let refused: unknown = whole.error
  for (const m of pieces.msgs) {
    if (m === null || typeof m !== 'object' || typeof m.t !== 'number') throw new Finding('message', `decoded a message without a numeric t: ${util.inspect(m).slice(0, 200)}`)
    if (!AWAITING_FIX.plainValues && !plainValue(m)) throw new Finding('plain-values', `decoded a message holding values msgpack maps do not carry: ${util.inspect(m, { depth: 4 }).slice(0, 300)}`)
    try { seen.push(...checkValidators(m)) } catch (err) {
      if (err instanceof Finding) throw err
      refused ??= err
    }
  }
  // msgpackr's module state after this input: a good frame must still decode to itself.
  const again = new FrameDecoder().push(CANARY_FRAME)
  if (again.length !== 1 || !util.isDeepStrictEqual({ ...again[0] }, { ...CANARY })) throw new Finding('state', 'a good frame decodes wrong after this input')
  if (refused !== null) throw refused
  if (!stable) return 'unstable (msgpackr key cache)'
  return `decoded ${Math.min(pieces.msgs.length, 3)}${pieces.msgs.length > 3 ? '+' : ''}${seen.length > 0 ? ' (validated)' : ''}`
}

export const wire: Target = {
  name: 'wire',
  description: 'RLINK frames: FrameDecoder.push, then checkGeneration, checkPathList and the SRL record path of UPDATES',
  codes: ['PROTOCOL', 'FORMAT_VERSION', 'LOG_CORRUPT'],
  seeds,
  structured,
  check
}

/** Boundary values for the lengths this target reads. */
export const WIRE_U32S = [WIRE_FRAME_BYTES_MAX, RECORD_META_BYTES_MAX, FUSE_WRITE_BYTES_MAX]
