/**
 * Fuzz target `record`: the SRL record decoder (src/format/record.ts readHeader, checksumOk,
 * decodeRecord) and the recovery scan that reads records back from the ring (src/srl/ring.ts
 * Ring.scan, readAt, locate, laterRecordExists), over a real 1 MiB ring file.
 *
 * Input: byte 0 is a mode: bit 0 sets the first record's CRC right (so the metadata decoder is
 * reached by mutated records too), bit 1 also lays the bytes into the ring and scans it as
 * recovery does, bits 2-4 choose where in the ring they start (some near its end, so the scan
 * crosses a lap). The rest is one record, or a ring image of several.
 *
 * Every input is a record, not one (null), or refused with FORMAT_VERSION or LOG_CORRUPT; and:
 * - a header read has a readable version, lengths within their bounds, a sequence number that is a
 *   safe integer of at least 1;
 * - a decoded record agrees with its header, and its metadata is a map of the types RecordMeta
 *   declares, with paths below the data directory;
 * - the scan yields consecutive sequence numbers at growing offsets, never more records than the bytes hold;
 * - a good record decodes right after it (msgpackr's module state).
 */
import fc from 'fast-check'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import util from 'node:util'
import {
  readHeader, checksumOk, decodeRecord, encodeRecord, RecordType, RECORD_MAGIC, RECORD_ALIGN_BYTES, type HeaderView, type Record as SrlRecord
} from '../../src/format/record'
import { crc32c } from '../../src/format/crc'
import { Ring } from '../../src/srl/ring'
import { RECORD_HEADER_BYTES, RECORD_META_BYTES_MAX, FUSE_WRITE_BYTES_MAX, RECORD_DATA_BYTES_MAX, SRL_PREALLOCATE_CHUNK_BYTES } from '../../src/limits'
import { isReplError } from '../../src/errors'
import { Finding, INPUT_BYTES_MAX, type Target } from './engine'
import { FUZZ_TMP_ENV } from './supervisor'
import { packr, value, number, string, bytes, rawMsgpack } from './values'

const RING_BYTES = SRL_PREALLOCATE_CHUNK_BYTES
const CODES = ['FORMAT_VERSION', 'LOG_CORRUPT'] as const

/** A record's bytes with any version, type, sequence number and metadata bytes, its CRC right (as encodeRecordHead makes it). */
export function rawRecord (version: number, type: number, seq: bigint, meta: Buffer, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(RECORD_HEADER_BYTES + meta.length + data.length)
  buf.writeUInt32LE(RECORD_MAGIC, 0)
  buf.writeUInt16LE(version, 4)
  buf.writeUInt16LE(type, 6)
  buf.writeBigUInt64LE(seq, 8)
  buf.writeUInt32LE(meta.length, 16)
  buf.writeUInt32LE(data.length, 20)
  meta.copy(buf, RECORD_HEADER_BYTES)
  data.copy(buf, RECORD_HEADER_BYTES + meta.length)
  fixCrc(buf)
  return buf
}

/** Sets the CRC of the record at the start of `buf` (as far as `buf` holds it). */
function fixCrc (buf: Buffer): void {
  if (buf.length < 28) return
  const c = crc32c(buf.subarray(0, 24))
  buf.writeUInt32LE(crc32c(buf.subarray(RECORD_HEADER_BYTES), c) >>> 0, 24)
}

const T = [1700000000, 123456789] as [number, number]

/** One record of every type, as the Primary makes them. */
export function sampleRecords (seq0 = 1): Buffer[] {
  const x = Buffer.from('value')
  const metas: Array<[RecordType, object, Buffer?]> = [
    [RecordType.WRITE, { p: '/dir/fïle', o: 2 ** 40, t: T }, Buffer.from('hello world')],
    [RecordType.TRUNCATE, { p: '/f', s: 0, t: T }],
    [RecordType.CREATE, { p: '/f', m: 0o100644, u: 1000, g: 1000, f: 0, t: T }],
    [RecordType.MKDIR, { p: '/d', m: 0o40755, u: 0, g: 0, t: T }],
    [RecordType.MKNOD, { p: '/n', m: 0o10644, u: 0, g: 0, r: 0x0801, t: T }],
    [RecordType.SYMLINK, { p: '/l', d: '../target', u: 0, g: 0, t: T }],
    [RecordType.LINK, { p: '/f', d: '/g', t: T }],
    [RecordType.UNLINK, { p: '/g', t: T }],
    [RecordType.RMDIR, { p: '/d', t: T }],
    [RecordType.RENAME, { p: '/a', d: '/b', f: 0, t: T }],
    [RecordType.CHMOD, { p: '/f', m: 0o100600 }],
    [RecordType.CHOWN, { p: '/f', u: 1, g: 2 }],
    [RecordType.UTIMENS, { p: '/f', a: [-2, 500000000], t: null }],
    [RecordType.SETXATTR, { p: '/f', n: 'user.a', x, f: 0 }],
    [RecordType.REMOVEXATTR, { p: '/f', n: 'user.a' }],
    [RecordType.FALLOCATE, { p: '/f', f: 1, o: 0, l: 4096, t: T }],
    [RecordType.VOID, { v: 3, e: -28 }],
    [RecordType.IBC, { n: 'app', x, f: 1, s: 30, t: T }]
  ]
  return metas.map(([type, meta, data], i) => encodeRecord(type, seq0 + i, meta, data))
}

/** Records laid out as the ring does (8-byte aligned, consecutive sequence numbers). */
function image (recs: Buffer[]): Buffer {
  const parts: Buffer[] = []
  for (const r of recs) {
    parts.push(r)
    const pad = (RECORD_ALIGN_BYTES - (r.length % RECORD_ALIGN_BYTES)) % RECORD_ALIGN_BYTES
    if (pad > 0) parts.push(Buffer.alloc(pad))
  }
  return Buffer.concat(parts)
}

function seeds (): Buffer[] {
  const recs = sampleRecords()
  const out = recs.map((r, i) => Buffer.concat([Buffer.from([i & 1]), r]))
  const v1 = Buffer.from(recs[1]); v1.writeUInt16LE(1, 4); fixCrc(v1)
  out.push(Buffer.concat([Buffer.from([0]), v1]))
  out.push(Buffer.concat([Buffer.from([2]), image(recs)]))
  out.push(Buffer.concat([Buffer.from([2 | (1 << 2)]), image(sampleRecords(41).slice(0, 4))]))
  out.push(Buffer.concat([Buffer.from([2 | (6 << 2)]), image([...sampleRecords(7).slice(0, 2), encodeRecord(RecordType.WRAP, 9, {}), ...sampleRecords(9).slice(0, 2)])]))
  return out
}

const RECORD_TYPES = Object.values(RecordType).filter((v): v is number => typeof v === 'number')
const META_KEYS = ['p', 'd', 'o', 's', 'l', 'm', 'u', 'g', 'r', 'f', 'n', 'x', 'a', 't', 'k', 'h', 'v', 'e']

/** Metadata of the right shape mostly, any value sometimes. */
const metaValue: fc.Arbitrary<unknown> = fc.oneof(number, string, bytes, fc.constant(null),
  fc.tuple(number, number), fc.constantFrom('/a', '/../x', '/a/..', '//b', '/.', '/a\0'), value)
const meta = fc.dictionary(fc.constantFrom(...META_KEYS), metaValue, { maxKeys: 6 })

function structured (): fc.Arbitrary<Buffer> {
  const type = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...RECORD_TYPES) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) })
  const seq = fc.oneof(fc.bigInt({ min: 1n, max: 2n ** 53n - 1n }), fc.constantFrom(0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n))
  const version = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(1, 2, 3) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) })
  const metaBytes = fc.oneof(
    { weight: 4, arbitrary: meta.map((m) => Buffer.from(packr.pack(m))) },
    { weight: 2, arbitrary: rawMsgpack },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) }
  )
  const data = fc.oneof({ weight: 4, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)) })
  const one = fc.tuple(version, type, seq, metaBytes, data).map(([v, t, s, m, d]) => rawRecord(v, t, s, m, d))
  // a ring image: records of consecutive sequence numbers, one perhaps damaged, WRAP markers, zero gaps
  const ringImage = fc.tuple(fc.bigInt({ min: 1n, max: 2n ** 40n }), fc.array(fc.tuple(fc.oneof(one, fc.constantFrom(...sampleRecords(1))), fc.nat({ max: 9 })), { minLength: 1, maxLength: 6 }),
    fc.option(fc.tuple(fc.nat(), fc.nat({ max: 7 }))))
    .map(([s0, items, damage]) => {
      const recs: Buffer[] = []
      let s = s0
      for (const [r, how] of items) {
        const b = Buffer.from(r)
        if (how === 0) { recs.push(rawRecord(2, RecordType.WRAP, s, Buffer.alloc(0))); continue } // WRAP repeats the next one's number
        if (b.length >= RECORD_HEADER_BYTES) { b.writeBigUInt64LE(s, 8); fixCrc(b) }
        recs.push(how === 1 ? Buffer.alloc(b.length) : b)
        s++
      }
      const img = image(recs)
      if (damage !== null && img.length > 0) img[damage[0] % img.length] ^= 1 << damage[1]
      return img
    })
  return fc.tuple(fc.nat({ max: 255 }), fc.oneof(one, ringImage)).map(([mode, b]) => Buffer.concat([Buffer.from([mode]), b]).subarray(0, INPUT_BYTES_MAX))
}

// ---- invariants ------------------------------------------------------------------------------

function checkHeader (h: HeaderView, buf: Buffer): void {
  const problems: string[] = []
  if (h.version !== 1 && h.version !== 2 && h.version !== 3) problems.push(`version ${h.version}`)
  if (h.metaLength > RECORD_META_BYTES_MAX || h.dataLength > (h.version === 3 ? RECORD_DATA_BYTES_MAX : FUSE_WRITE_BYTES_MAX)) problems.push('lengths over their bounds')
  if (h.totalLength !== RECORD_HEADER_BYTES + h.metaLength + h.dataLength) problems.push('totalLength')
  if (!Number.isSafeInteger(h.seq) || h.seq < 1 || BigInt(h.seq) !== buf.readBigUInt64LE(8)) problems.push(`sequence number ${h.seq} is not the header's ${buf.readBigUInt64LE(8)}, or not a safe integer of at least 1`)
  if (h.type !== buf.readUInt16LE(6)) problems.push('type')
  if (problems.length > 0) throw new Finding('header', `readHeader returned ${util.inspect(h)}: ${problems.join('; ')}`)
}

const STRINGS = ['p', 'd', 'n']
const NUMBERS = ['o', 's', 'l', 'm', 'u', 'g', 'r', 'f', 'k', 'h', 'v', 'e']
const pathOk = (p: unknown): boolean => typeof p === 'string' && p.startsWith('/') && !p.split('/').some((c) => c === '.' || c === '..') && !p.includes('\0')
const timeOk = (t: unknown): boolean => t === null || (Array.isArray(t) && t.length === 2 && typeof t[0] === 'number' && typeof t[1] === 'number')

function checkRecord (r: SrlRecord, h: HeaderView, buf: Buffer): void {
  if (r.type !== h.type || r.seq !== h.seq || r.data.length !== h.dataLength) throw new Finding('record', 'decodeRecord disagrees with the header')
  if (!r.data.equals(buf.subarray(RECORD_HEADER_BYTES + h.metaLength))) throw new Finding('record', 'the data is not the record\'s last bytes')
  const m = r.meta as unknown as { [k: string]: unknown }
  const problems: string[] = []
  if (typeof m !== 'object' || m === null || Object.getPrototypeOf(m) !== Object.prototype) problems.push('not a map')
  else {
    for (const k of STRINGS) if (m[k] !== undefined && typeof m[k] !== 'string') problems.push(`${k} not a string`)
    for (const k of NUMBERS) if (m[k] !== undefined && typeof m[k] !== 'number') problems.push(`${k} not a number`)
    if (m.x !== undefined && !(m.x instanceof Uint8Array)) problems.push('x not bytes')
    if ((m.a !== undefined && !timeOk(m.a)) || (m.t !== undefined && !timeOk(m.t))) problems.push('a time not [s, ns]')
    if (m.p !== undefined && !pathOk(m.p)) problems.push(`p ${util.inspect(m.p).slice(0, 60)}`)
    if (m.d !== undefined && (r.type === RecordType.RENAME || r.type === RecordType.LINK) && !pathOk(m.d)) problems.push(`d ${util.inspect(m.d).slice(0, 60)}`)
  }
  if (problems.length > 0) throw new Finding('meta', `decodeRecord returned metadata ${util.inspect(r.meta, { depth: 2 }).slice(0, 200)}: ${problems.join('; ')}`)
}

// ---- the ring --------------------------------------------------------------------------------

let ringDir: string | null = null
let ring: Ring | null = null
let dirty: Array<[number, number]> = []
const ZEROS = Buffer.alloc(RING_BYTES)

function theRing (): Ring {
  if (ring !== null) return ring
  // Under the supervisor's directory when supervised: a child killed by a signal cannot remove it.
  ringDir = fs.mkdtempSync(path.join(process.env[FUZZ_TMP_ENV] ?? os.tmpdir(), 'replicafs-fuzz-'))
  ring = Ring.open(path.join(ringDir, 'ring'), RING_BYTES)
  process.once('exit', close)
  return ring
}

function close (): void {
  if (ring !== null) { ring.close(); ring = null }
  if (ringDir !== null) { fs.rmSync(ringDir, { recursive: true, force: true }); ringDir = null }
}

const PLACEMENT = [0, RING_BYTES - 8, RING_BYTES - 24, RING_BYTES - 32, RING_BYTES - 40, RING_BYTES - 64, RING_BYTES - 200, RING_BYTES - 4096]

/** Lays `img` into the ring at the place `mode` names (wrapping at its end) and scans it as recovery does. */
function scanRing (img: Buffer, mode: number): string {
  const r = theRing()
  for (const [off, len] of dirty) fs.writeSync(r.fd, ZEROS, 0, len, off)
  dirty = []
  const start = PLACEMENT[(mode >> 2) & 7]
  const body = img.subarray(0, RING_BYTES)
  const first = Math.min(body.length, RING_BYTES - start)
  if (first > 0) { fs.writeSync(r.fd, body, 0, first, start); dirty.push([start, first]) }
  if (body.length > first) { fs.writeSync(r.fd, body, first, body.length - first, 0); dirty.push([0, body.length - first]) }
  let seq0 = 1
  try { seq0 = readHeader(img)?.seq ?? 1 } catch {}
  let expect = seq0
  let off = start
  let n = 0
  for (const s of r.scan({ seq: seq0 - 1, offset: start })) {
    if (s.record.seq !== expect) throw new Finding('scan', `the scan yielded record ${s.record.seq} where ${expect} was due`)
    if (s.offset < off || s.end <= s.offset || s.end % RECORD_ALIGN_BYTES !== 0) throw new Finding('scan', `the scan yielded a record at ${s.offset}..${s.end} after ${off}`)
    expect++
    off = s.end
    if (++n > img.length / RECORD_HEADER_BYTES + 1) throw new Finding('scan', `the scan yielded ${n} records from ${img.length} bytes`)
  }
  const later = r.laterRecordExists(off, expect - 1)
  return `scanned ${Math.min(n, 3)}${n > 3 ? '+' : ''}${later ? ', later record' : ''}`
}

// ---- the target ------------------------------------------------------------------------------

const CANARY_BYTES = sampleRecords(5)[13]
const CANARY = decodeRecord(CANARY_BYTES)

function check (b: Buffer): string {
  const mode = b.length > 0 ? b[0] : 0
  const img = Buffer.from(b.subarray(1))
  const labels: string[] = []
  const errors: unknown[] = []
  const stage = (fn: () => void): void => {
    try { fn() } catch (err) { if (err instanceof Finding) throw err; errors.push(err) }
  }
  stage(() => {
    const h = readHeader(img)
    if (h === null) { labels.push('not a record'); return }
    checkHeader(h, img)
    if (img.length < h.totalLength) { labels.push('short'); return }
    const rec = img.subarray(0, h.totalLength)
    if ((mode & 1) !== 0) fixCrc(rec)
    if (!checksumOk(rec)) { labels.push('bad checksum'); return }
    checkRecord(decodeRecord(rec), h, rec)
    labels.push('decoded')
  })
  if ((mode & 2) !== 0) stage(() => { labels.push(scanRing(img, mode)) })
  const again = decodeRecord(CANARY_BYTES)
  if (!util.isDeepStrictEqual(again, CANARY)) throw new Finding('state', 'a good record decodes wrong after this input')
  if (errors.length > 0) throw errors.find((e) => !isReplError(e) || !(CODES as readonly string[]).includes(e.code)) ?? errors[0]
  return labels.join(', ')
}

export const record: Target = {
  name: 'record',
  description: 'SRL records: readHeader, checksumOk, decodeRecord, and Ring.scan / laterRecordExists over a 1 MiB ring file',
  codes: CODES,
  seeds,
  structured,
  check,
  close
}

export const RECORD_U32S = [RECORD_META_BYTES_MAX, FUSE_WRITE_BYTES_MAX, RECORD_DATA_BYTES_MAX, RECORD_MAGIC, 0x1fffff, 0x200000]
