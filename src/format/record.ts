/**
 * SRL record format, version 3 (docs/FORMAT.md is the contract; change it only with a version bump).
 *
 * A record is self-describing so the log can be scanned without an index:
 *
 *   offset size  field
 *   0      4     magic 0x4C525352 ("RSRL" little-endian) - tells a record from zero-fill or garbage
 *   4      2     format version (3 written; 1, 2 and 3 read)
 *   6      2     record type (RecordType)
 *   8      8     sequence number, u64 - strictly increasing, no gaps; WRAP repeats the next one
 *   16     4     meta length - bytes of msgpack metadata that follow the header
 *   20     4     data length - bytes of raw payload that follow the metadata (WRITE only)
 *   24     4     CRC-32C of header bytes 0..24, then meta, then data
 *   28     4     reserved, zero
 *
 * Metadata is a msgpack map with short keys, encoded by one Packr whose options are all written out
 * below, so a changed library default cannot change bytes on disk.
 *
 * Version 2 differs from version 1 only in metadata: CREATE, MKDIR, MKNOD, SYMLINK, LINK, UNLINK,
 * RMDIR, RENAME and FALLOCATE carry `t`, the resulting timestamp (the new entry's atime and mtime,
 * the changed parent directories' mtime, the fallocated file's mtime), so applying the same records
 * on two hosts gives the same times. The header is unchanged. A version-1 record is read as it
 * always was: it simply lacks `t` on those types, and applies without setting those times.
 *
 * Version 3 differs from version 2 only in a bound: a WRITE's data may be up to
 * RECORD_DATA_BYTES_MAX (1 MiB, the libfuse 3 transport's largest write) instead of
 * FUSE_WRITE_BYTES_MAX (128 KiB). A header of version 1 or 2 with more data than that is still
 * not a record; a build that reads only versions 1 and 2 refuses a version-3 log or link by name.
 */
import assert from 'node:assert'
import { crc32c } from './crc'
import { sys } from '../native'
import { RECORD_HEADER_BYTES, RECORD_META_BYTES_MAX, FUSE_WRITE_BYTES_MAX, RECORD_DATA_BYTES_MAX } from '../limits'
import { ReplError } from '../errors'

export const RECORD_MAGIC = 0x4c525352
/** The version this build writes. */
export const RECORD_FORMAT_VERSION = 3
/** The versions this build reads; any other throws FORMAT_VERSION. */
export const RECORD_FORMAT_VERSIONS_READ: readonly number[] = [1, 2, 3]

/** A record's largest data in format `version` (see the top of this file). */
export function recordDataBytesMax (version: number): number {
  return version >= 3 ? RECORD_DATA_BYTES_MAX : FUSE_WRITE_BYTES_MAX
}

/** One table of record types; numbers are on disk and on the wire: never reuse one. */
export enum RecordType {
  WRITE = 1,
  TRUNCATE = 2,
  CREATE = 3,
  MKDIR = 4,
  MKNOD = 5,
  SYMLINK = 6,
  LINK = 7,
  UNLINK = 8,
  RMDIR = 9,
  RENAME = 10,
  CHMOD = 11,
  CHOWN = 12,
  UTIMENS = 13,
  SETXATTR = 14,
  REMOVEXATTR = 15,
  FALLOCATE = 16,
  /** Ring marker: the rest of the ring's lap is unused; the record with this sequence starts the next lap. */
  WRAP = 17,
  /** The record with sequence `v` failed to apply with errno `e` and had no effect; replay expects the same. */
  VOID = 18,
  /**
   * An IBC message (In-Band Control, issue 4): `n` application name, `x` message bytes, `f` flags
   * (1: do not freeze), `s` freeze timeout in seconds (0: none), `t` send time. Changes nothing in
   * the data directory; a Secondary's apply loop delivers it (src/ibc/secondary.ts).
   */
  IBC = 19
}

/** `IBC` record flags (`f`): the message does not freeze the Secondary (`ibc send --no-freeze`). */
export const IBC_FLAG_NOFREEZE = 1

/** A timestamp as [seconds, nanoseconds]: exact, unlike a double of nanoseconds. */
export type Timespec = [number, number]

/** Metadata of each record type. Keys are short because they are stored per record. */
export interface RecordMeta {
  p?: string       // path, relative to the data directory root, starting with '/'
  d?: string       // second path: rename/link destination, symlink target
  o?: number       // offset
  s?: number       // size
  l?: number       // length
  m?: number       // mode
  u?: number       // uid
  g?: number       // gid
  r?: number       // rdev
  f?: number       // flags
  n?: string       // xattr name
  x?: Uint8Array   // xattr value
  a?: Timespec | null // atime (null: leave as is)
  t?: Timespec | null // time resulting from the operation (null: leave as is); see docs/FORMAT.md for each type
  k?: number       // (the data cursor's tail only, format/data-cursor.ts: a run of WRITEs ends at record k)
  h?: number       // (the data cursor's tail only: 1 = a queued WRITE named before its reservation and its append)
  v?: number       // VOID: the sequence number that failed
  e?: number       // VOID: its negative errno
  // (IBC uses n, x, f, t, and s as its freeze timeout in seconds)
}

export interface Record {
  type: RecordType
  seq: number
  meta: RecordMeta
  /** WRITE payload; a view into the record's buffer. */
  data: Buffer
}

// msgpackr's build that decodes strings in JavaScript: its default one hands them to
// msgpackr-extract's native scanner, which misreads a str32, bin32 or ext32 length near 2^32 (an
// out-of-bounds read that can crash the process, or a loop that never ends: docs/FUZZING.md). Its
// encoder is the same code, so the bytes are the same.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { Packr } = require('msgpackr/index-no-eval') as typeof import('msgpackr')

// Every option spelled out: these bytes are a contract.
const packr = new Packr({
  useRecords: false,
  structures: undefined,
  moreTypes: false,
  bundleStrings: false,
  int64AsType: 'number',
  mapsAsObjects: true,
  variableMapSize: true,
  copyBuffers: true,
  useFloat32: 0,
  encodeUndefinedAsNil: false
} as ConstructorParameters<typeof Packr>[0])

const EMPTY = Buffer.alloc(0)

/** Records start at multiples of this, so a recovery scan can search for stray records. */
export const RECORD_ALIGN_BYTES = 8

/** The bytes a record with this metadata and data length takes, before alignment. */
export function recordBytes (type: RecordType, meta: RecordMeta, dataLength: number): number {
  return RECORD_HEADER_BYTES + (type === RecordType.WRAP ? 0 : packr.pack(meta).length) + dataLength
}

/**
 * A record's metadata as its bytes in the record (a copy: the encoder reuses its buffer), so a
 * change encodes them once for its size, its record and the data cursor's tail.
 */
export function packMeta (type: RecordType, meta: RecordMeta): Buffer {
  return type === RecordType.WRAP ? EMPTY : Buffer.from(packr.pack(meta))
}

/** Encodes a record into one buffer (header, meta, data). */
export function encodeRecord (type: RecordType, seq: number, meta: RecordMeta, data?: Uint8Array): Buffer {
  const head = encodeRecordHead(type, seq, meta, data)
  return data && data.length > 0 ? Buffer.concat([head, data]) : head
}

/**
 * Encodes a record's header and metadata, with the checksum covering `data` too, without copying
 * `data`: the SRL writes both parts with one pwritev, straight from the FUSE buffer. `packed`:
 * the metadata's bytes from packMeta(), if the caller has them.
 */
export function encodeRecordHead (type: RecordType, seq: number, meta: RecordMeta, data?: Uint8Array, packed?: Buffer): Buffer {
  assert(Number.isSafeInteger(seq) && seq >= 1)
  const metaBytes = packed ?? (type === RecordType.WRAP ? EMPTY : packr.pack(meta))
  // Paths are at most PATH_MAX, xattr values and IBC messages at most 64 KiB (checked where they
  // come in): more is a bug.
  assert(metaBytes.length <= RECORD_META_BYTES_MAX, `record metadata too large (${metaBytes.length} bytes)`)
  const dataLength = data ? data.length : 0
  assert(dataLength <= RECORD_DATA_BYTES_MAX)
  const buf = Buffer.allocUnsafe(RECORD_HEADER_BYTES + metaBytes.length)
  buf.writeUInt32LE(RECORD_MAGIC, 0)
  buf.writeUInt16LE(RECORD_FORMAT_VERSION, 4)
  buf.writeUInt16LE(type, 6)
  buf.writeBigUInt64LE(BigInt(seq), 8)
  buf.writeUInt32LE(metaBytes.length, 16)
  buf.writeUInt32LE(dataLength, 20)
  buf.writeUInt32LE(0, 28)
  metaBytes.copy(buf, RECORD_HEADER_BYTES)
  let c = crc32c(buf.subarray(0, 24))
  c = crc32c(buf.subarray(RECORD_HEADER_BYTES), c)
  if (dataLength > 0) c = crc32c(data as Buffer, c)
  buf.writeUInt32LE(c >>> 0, 24)
  return buf
}

function checksum (buf: Buffer): number {
  const c = crc32c(buf.subarray(0, 24))
  return crc32c(buf.subarray(RECORD_HEADER_BYTES), c) >>> 0
}

export interface HeaderView {
  /** The record format version in the header (one of RECORD_FORMAT_VERSIONS_READ). */
  version: number
  type: RecordType
  seq: number
  metaLength: number
  dataLength: number
  totalLength: number
}

/** Reads a header, or returns null if these bytes are not one (zero-fill, stale garbage). */
export function readHeader (buf: Buffer): HeaderView | null {
  if (buf.length < RECORD_HEADER_BYTES) return null
  if (buf.readUInt32LE(0) !== RECORD_MAGIC) return null
  const version = buf.readUInt16LE(4)
  if (!RECORD_FORMAT_VERSIONS_READ.includes(version)) {
    throw new ReplError('FORMAT_VERSION', `SRL record format version ${version} is not supported (this build reads versions ${RECORD_FORMAT_VERSIONS_READ.join(', ')}${version > RECORD_FORMAT_VERSION ? '; it was written by a newer replicafs: run that one' : ''})`)
  }
  const metaLength = buf.readUInt32LE(16)
  const dataLength = buf.readUInt32LE(20)
  if (metaLength > RECORD_META_BYTES_MAX || dataLength > recordDataBytesMax(version)) return null
  // A sequence number is at least 1 and a safe integer (the encoder asserts both): another one is
  // not a record, rather than a number rounded to a neighbour's (2^53 + 1 would read as 2^53).
  const seqHigh = buf.readUInt32LE(12)
  const seq = seqHigh * 0x1_0000_0000 + buf.readUInt32LE(8)
  if (seq < 1 || seqHigh > 0x1f_ffff) return null
  return { version, type: buf.readUInt16LE(6), seq, metaLength, dataLength, totalLength: RECORD_HEADER_BYTES + metaLength + dataLength }
}

/** Verifies the checksum of a whole record buffer (as returned by readHeader's totalLength). */
export function checksumOk (buf: Buffer): boolean {
  return buf.readUInt32LE(24) === checksum(buf)
}

/** The sequence number in a record header (bytes 8..15), without checking anything else. */
export function headerSeq (buf: Buffer): number {
  return Number(buf.readBigUInt64LE(8))
}

/** The CRC-32C in a record header (bytes 24..27): what identifies a record's bytes (handshake, `last`). */
export function headerCrc (buf: Buffer): number {
  return buf.readUInt32LE(24)
}

/**
 * Decodes a verified record buffer. The data is a view into `buf`. Metadata that is not a map of
 * the types RecordMeta declares (or whose paths could leave the data directory) throws LOG_CORRUPT:
 * its checksum held, so the writer wrote it so, and nothing may apply it.
 */
export function decodeRecord (buf: Buffer): Record {
  const h = readHeader(buf)
  assert(h !== null && buf.length === h.totalLength)
  // WRAP has no metadata and must not be unpacked (docs/FORMAT.md).
  let meta: unknown = {}
  if (h.type !== RecordType.WRAP) {
    try {
      meta = packr.unpack(buf.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + h.metaLength))
    } catch (err) {
      throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${h.seq} has undecodable metadata: ${(err as Error).message}`)
    }
  }
  const bad = metaProblem(h.type, meta)
  if (bad !== null) throw new ReplError('LOG_CORRUPT', `SRL record with sequence number ${h.seq} has malformed metadata: ${bad}`)
  const data = buf.subarray(RECORD_HEADER_BYTES + h.metaLength)
  return { type: h.type, seq: h.seq, meta: meta as RecordMeta, data }
}

const META_STRINGS = ['p', 'd', 'n'] as const
const META_NUMBERS = ['o', 's', 'l', 'm', 'u', 'g', 'r', 'f', 'k', 'h', 'v', 'e'] as const
/** A path component '.' or '..', or a NUL: libfuse never passes one, and it could name something outside the data directory. */
const UNSAFE_PATH = /(^|\/)\.\.?(\/|$)|\0/

function isPath (p: string): boolean {
  return p.startsWith('/') && !UNSAFE_PATH.test(p)
}

function isTimespec (t: unknown): boolean {
  return t === null || (Array.isArray(t) && t.length === 2 && typeof t[0] === 'number' && typeof t[1] === 'number')
}

/** Why decoded metadata is not a RecordMeta (keys of the wrong type, unsafe paths), or null. Other keys are left alone. */
function metaProblem (type: RecordType, meta: unknown): string | null {
  if (typeof meta !== 'object' || meta === null || Object.getPrototypeOf(meta) !== Object.prototype) return 'not a map'
  const m = meta as { [k: string]: unknown }
  for (const k of META_STRINGS) if (m[k] !== undefined && typeof m[k] !== 'string') return `${k} is not a string`
  for (const k of META_NUMBERS) if (m[k] !== undefined && typeof m[k] !== 'number') return `${k} is not a number`
  if (m.x !== undefined && !(m.x instanceof Uint8Array)) return 'x is not bytes'
  if ((m.a !== undefined && !isTimespec(m.a)) || (m.t !== undefined && !isTimespec(m.t))) return 'a time is not [seconds, nanoseconds]'
  if (m.p !== undefined && !isPath(m.p as string)) return `path ${JSON.stringify(m.p).slice(0, 200)} is not a path below the data directory`
  // d is a second path for these; a symlink's target is text, verbatim.
  if (m.d !== undefined && (type === RecordType.RENAME || type === RecordType.LINK) && !isPath(m.d as string)) return `path ${JSON.stringify(m.d).slice(0, 200)} is not a path below the data directory`
  return null
}

/**
 * Current time as a Timespec; the resulting timestamp a record carries. From CLOCK_REALTIME_COARSE,
 * the clock the kernel stamps inode times from: taken before the change is applied, it is never
 * later than the ctime the change gives the file, so mtime <= ctime, as on a local filesystem
 * (usually equal, as there). It used to be Date.now()'s milliseconds plus sub-millisecond digits
 * of the monotonic clock, which could put a file's mtime up to 1 ms after its ctime.
 *
 * Never earlier than a time noteTimespec() was told of: the Primary stamps a new entry with the
 * kernel's own "now" (UTIME_NOW), which on a multigrain-timestamp kernel (Linux 6.13+) can be a
 * fine-grained time ahead of the coarse clock; a write to the new file must not then set its mtime
 * back before its creation (a full synchronization cut short found the Secondary's copy of such a
 * file with the creation's time and the Primary's with the write's, earlier one).
 */
export function nowTimespec (): Timespec {
  const t = sys.clockRealtimeCoarse()
  if (t[0] > floor[0] || (t[0] === floor[0] && t[1] >= floor[1])) return t
  // More than a second behind: the clock was set back; the floor goes with it.
  if (floor[0] - t[0] > 1) { floor = [0, 0]; return t }
  return [floor[0], floor[1]]
}

let floor: Timespec = [0, 0]

/** A time the Primary gave an entry from the kernel's clock: nowTimespec() never goes back before it. */
export function noteTimespec (t: Timespec): void {
  if (t[0] > floor[0] || (t[0] === floor[0] && t[1] > floor[1])) floor = [t[0], t[1]]
}

/** A value (not a record) in this module's msgpack contract: for the data cursor (format/data-cursor.ts). */
export function packValue (v: unknown): Buffer { return packr.pack(v) }
export function unpackValue (buf: Buffer): unknown { return packr.unpack(buf) }
