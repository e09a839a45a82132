/**
 * RLINK wire protocol, version 8 (docs/FORMAT.md "Wire protocol" is the contract; change it only
 * with a version bump).
 *
 * A connection is a sequence of frames in each direction:
 *
 *   offset size  field
 *   0      4     body length, u32 little-endian (at most WIRE_FRAME_BYTES_MAX)
 *   4      n     body: one msgpack map {t: MsgType, ...fields}
 *
 * Updates travel as the SRL records' own bytes (header with its CRC-32C, metadata, data), so the
 * Secondary verifies each one exactly as the SRL does and logs it unchanged.
 *
 * Handshake (the Primary speaks first, whichever side connected):
 *   P -> S  HELLO      {v, rds, srlId, nonce, rf, gen}
 *   S -> P  CHALLENGE  {v, rds, nonce, proof, next, last, applied}    or REFUSE
 *   P -> S  AUTH       {proof}                                         or REFUSE
 *   S -> P  READY      {}                                              or REFUSE
 * then P -> S UPDATES / PING / TASK, S -> P ACK / RESEND / PONG / TASK_RESULT, either side REFUSE then close.
 *
 * Full synchronization (version 2; src/sync/): a Secondary that the SRL cannot bring up to date
 * (new, while the Primary's tree has data the SRL does not hold) gets, instead of UPDATES,
 *   P -> S  SYNC_BEGIN, then SYNC_ENTRY / SYNC_DATA / SYNC_DIR / SYNC_REMOVE, then SYNC_DONE {seq}
 *   S -> P  SYNC_ACK {n} (frames applied), after SYNC_DONE the usual ACK
 * and UPDATES from seq + 1 on.
 *
 * Synchronization by difference (version 3): SYNC_BEGIN {d: 1} sends each file's entry without its
 * bytes (w: 'c'); the Secondary answers SYNC_SUMS (its file's size and per-chunk hashes) where its
 * file may differ, before that frame's SYNC_ACK, and the Primary sends the entry again (w: 'i')
 * with the chunks whose hashes differ.
 *
 * Changed parts of a file (version 5): during a synchronization's drain a file whose only changes
 * since it was sent are writes, truncates and attribute changes goes as SYNC_ENTRY {w: 'r', z}
 * and SYNC_DATA for the spans written; the Secondary keeps its bytes (or answers SYNC_SUMS with
 * s: -1, and the file comes whole).
 *
 * Data generations (version 6): HELLO carries the Primary's generation (`gen`, state format 8).
 * Version 7: before that REFUSE, the listener sends SPLIT {gen, at, paths} (what it changed since)
 * and the Primary answers SPLIT {paths} (what it changed after `at`): both list the conflicts.
 * A peer that knows a later generation of the same line (another host took over after record
 * `since`) answers the Primary's AUTH with REFUSE {code: 'TAKEN_OVER', gen}: the Primary's own
 * proof was checked first, so only a peer that knows the secret can make a Primary stop writing.
 *
 * A Secondary that dials (version 7): a Secondary made so by `replicafs failback` connects to its
 * Primary's listener (src/rlink/gate.ts) and sends JOIN {v, rds, name} first; the Primary then
 * speaks first as above (HELLO ...) over that connection, as the RLINK named `join:<name>`. The TCP
 * direction is independent of the role. CHALLENGE.failback: the Secondary was the Primary of
 * generation `gen` until another host took over after record `at`; `paths` (null: too many to
 * list, compare everything) are the paths it changed after that: they are resynchronized, with
 * the Primary's own changes since the takeover, by difference, every chunk compared.
 *
 * Version 8: the proofs carry the connection's TLS channel binding (empty on plain TCP; TLS
 * itself is a transport below the frames: src/rlink/tls.ts), and HELLO.z / CHALLENGE.z negotiate
 * compression: the Primary may then send a bulk frame (UPDATES, SYNC_DATA) as
 * ZSTD {n, z}, the zstd of that frame's body, decompressed by the Secondary before it is decoded.
 *
 * Migrate (version 7): once every update is data-acked and the Primary takes no more writes,
 *   P -> S  MIGRATE {gen, at}     S -> P  MIGRATED {ok, error?}
 * the Secondary becomes the Primary of `gen` and the Primary its Secondary, over the same TCP
 * direction as before (the one that dialled dials; src/daemon/migrate.ts).
 *
 * Online verify (version 4; src/sync/verify.ts): the Primary takes a snapshot of its tree after
 * record `seq` and asks the Secondary for its own at the same point,
 *   P -> S  VERIFY_BEGIN {id, seq}, VERIFY_ACK {id, n} (frames compared), VERIFY_END {id}
 *   S -> P  VERIFY_ENTRIES {id, i, e, end?, err?}: its snapshot's entries, walked in order
 * while UPDATES go on both ways as usual.
 */
import crypto from 'node:crypto'
// msgpackr's build without its native extractor and without eval: msgpackr-extract 3.0.3 reads
// out of bounds on a str32 length near 2^32 and never returns on such a bin32 or ext32 length
// (found by test/fuzz; a peer could send it before the handshake). The bytes are the same.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { Packr } = require('msgpackr/index-no-eval') as typeof import('msgpackr')
import { ReplError } from '../errors'
import { WIRE_FRAME_BYTES_MAX } from '../limits'

export const PROTOCOL_VERSION = 8

/** One table of message types; numbers are on the wire: never reuse one. */
export enum MsgType {
  HELLO = 1,
  CHALLENGE = 2,
  AUTH = 3,
  READY = 4,
  UPDATES = 5,
  ACK = 6,
  RESEND = 7,
  PING = 8,
  PONG = 9,
  REFUSE = 10,
  /** `ibc run`: the Primary asks the Secondary to run one step of a task. */
  TASK = 11,
  TASK_RESULT = 12,
  /** Full synchronization (src/sync/): the Primary's tree, entry by entry, then the switch to UPDATES. */
  SYNC_BEGIN = 13,
  SYNC_ENTRY = 14,
  SYNC_DATA = 15,
  SYNC_DIR = 16,
  SYNC_REMOVE = 17,
  SYNC_DONE = 18,
  SYNC_ACK = 19,
  SYNC_SUMS = 20,
  /** Online verify (src/sync/verify.ts). */
  VERIFY_BEGIN = 21,
  VERIFY_ENTRIES = 22,
  VERIFY_ACK = 23,
  VERIFY_END = 24,
  /** A dialling Secondary's first frame (version 7): the Primary speaks first from there. */
  JOIN = 25,
  /** `replicafs migrate` (version 7): the Primary asks its Secondary to become the Primary; the answer. */
  MIGRATE = 26,
  MIGRATED = 27,
  /** Before TAKEN_OVER (version 7): each side's paths changed since the takeover, to list a split-brain's conflicts. */
  SPLIT = 28,
  /** A compressed frame (version 8, negotiated): `z` the zstd of another frame's body, `n` its length. */
  ZSTD = 29
}

/** Why a peer was refused; `REFUSE.code`. */
export type RefuseCode = 'VERSION' | 'RDS' | 'AUTH' | 'PRIMARY' | 'BUSY' | 'DIVERGED' | 'STALE' | 'NOT_EMPTY' | 'PROTOCOL' | 'TAKEN_OVER'

/** A data generation on the wire (version 6): state.ts Generation. */
export interface WireGeneration { id: string, since: number, history: Array<{ id: string, end: number }> }
/** `z` (version 8): the compression the Primary would use for its bulk frames (`["zstd"]`), absent: none. */
export interface Hello { t: MsgType.HELLO, v: number, rds: string, srlId: string, nonce: Uint8Array, rf: number, gen: WireGeneration, z?: string[] }
export interface Challenge {
  t: MsgType.CHALLENGE
  v: number
  rds: string
  nonce: Uint8Array
  proof: Uint8Array
  /** The sequence number the Secondary wants next (its last logged + 1). */
  next: number
  /** Its last logged record, to check the Primary has the very same one (null: none). */
  last: { seq: number, crc: number } | null
  /** Its last applied sequence number (its data ack). */
  applied: number
  /** Whether it has never replicated (no Primary followed, nothing logged). */
  fresh: boolean
  /** Whether its data directory is empty (`lost+found` aside). */
  empty: boolean
  /** The id of a full synchronization it began and did not finish, or null. */
  syncing: string | null
  /** Started with --sync-existing: its data (never replicated from this Primary) may be made the Primary's by difference. */
  adopt: boolean
  /** A Secondary made so by `replicafs failback` and not yet resynchronized (version 7); absent: none. */
  failback?: FailbackClaim | null
  /** The compression of HELLO.z it accepts (version 8), absent: none (frames go uncompressed). */
  z?: string
}

/**
 * What a failed-back Secondary says of its tree (version 7): it was the Primary of generation
 * `gen` until the Primary it now follows took over after record `at`, and changed `paths` (path ->
 * everything below it too) after that; null: more than could be listed, compare every file.
 */
export interface FailbackClaim { gen: string, at: number, paths: Array<[string, boolean]> | null }

/**
 * `replicafs migrate` (version 7): every update up to `at` is data-acked and the Primary takes no
 * more; the Secondary becomes the Primary of generation `gen` (which continues the Primary's after
 * `at`) and answers MIGRATED before it serves as one. ok false: it refused (`error`), nothing changed.
 */
export interface Migrate { t: MsgType.MIGRATE, gen: WireGeneration, at: number }
export interface Migrated { t: MsgType.MIGRATED, ok: boolean, error?: string }

/**
 * A Primary's listener about to refuse a Primary it took over from (TAKEN_OVER) first sends its
 * generation, `at` (the peer's last record it has) and the paths it changed since (`paths`, null:
 * too many to list); the peer answers with the paths it changed after `at` (no gen, no at). Each
 * side then knows the paths changed on both: a split-brain's conflicts (version 7).
 */
export interface Split { t: MsgType.SPLIT, gen?: WireGeneration, at?: number, paths: Array<[string, boolean]> | null }

/** A dialling Secondary's first frame (version 7): `name` is the RLINK it is, `join:<name>` on the Primary. */
export interface Join { t: MsgType.JOIN, v: number, rds: string, name: string }
export interface Auth { t: MsgType.AUTH, proof: Uint8Array }
export interface Ready { t: MsgType.READY }
/** Consecutive records, each as its SRL bytes. */
export interface Updates { t: MsgType.UPDATES, recs: Uint8Array[] }
/** n: last sequence number logged (network ack); d: last applied (data ack). */
export interface Ack { t: MsgType.ACK, n: number, d: number }
/** Send again from sequence number `from` (a gap or a bad checksum). */
export interface Resend { t: MsgType.RESEND, from: number, why: string }
export interface Ping { t: MsgType.PING, ts: number }
export interface Pong { t: MsgType.PONG, ts: number }
/** gen (version 6): with TAKEN_OVER, the generation that took over. */
export interface Refuse { t: MsgType.REFUSE, code: RefuseCode, message: string, gen?: WireGeneration }
/** One step of an `ibc run` task on the Secondary (names only: the Secondary runs its own scripts). */
export interface Task { t: MsgType.TASK, id: number, task: string, step: string, app: string, timeoutS: number }
/** code: the script's exit code (null: no script ran, or the step is not a script); error: why the step failed. */
export interface TaskResult { t: MsgType.TASK_RESULT, id: number, code: number | null, output: string, error: string | null, ibcId?: string }

/**
 * Begins a full synchronization of the Secondary's data directory (`id` names it in logs and
 * status). d: by difference (files' entries come with w: 'c', the Secondary keeps what matches);
 * c: with d, every file's chunks are compared (else only a file whose size or mtime differs).
 */
export interface SyncBegin { t: MsgType.SYNC_BEGIN, id: string, d?: 0 | 1, c?: 0 | 1 }
/** A timespec: [seconds, nanoseconds]. */
export type SyncTime = [number, number]
/**
 * One entry of the Primary's tree, made so at `p` on the Secondary (what was there of another kind
 * is removed first). k: 'f' file, 'd' directory, 'l' symlink, 'n' other node (FIFO, socket,
 * device: `m` has its type bits, `r` its device number). m: st_mode; u, g: owner; a, mt: atime and
 * mtime (a directory's are set by its SYNC_DIR, after its entries); x: extended attributes;
 * s: a file's size (its bytes follow as SYNC_DATA, holes left out); c: a file's link count (a
 * file with several names on both sides is written in place); l: a symlink's target; h: another
 * path of the same file already sent: a hard link to it. w (a file; absent: its bytes all follow,
 * holes left out): 'c' compare: no bytes follow; the Secondary keeps its file if it has the same
 * size and mtime (unless SYNC_BEGIN said c: 1), else answers SYNC_SUMS; 'i' in place: the file's
 * bytes are kept and the chunks that differ follow; 'r' (version 5) changed parts: the file's
 * bytes are kept, cut to `z` first if given and longer (a truncate since it was sent), then set to
 * size `s`; the spans written since follow (a Secondary without a regular file there, or whose
 * file has other names while the Primary's has one, answers SYNC_SUMS with s: -1 and drops them).
 */
export interface SyncEntry {
  t: MsgType.SYNC_ENTRY
  p: string
  k: 'f' | 'd' | 'l' | 'n'
  m: number
  u: number
  g: number
  a: SyncTime
  mt: SyncTime
  x: Array<[string, Uint8Array]>
  s?: number
  c?: number
  l?: string
  r?: number
  h?: string
  w?: 'c' | 'i' | 'r'
  z?: number
}
/** Bytes of the file last sent by SYNC_ENTRY at `p`, at offset `o`. */
export interface SyncData { t: MsgType.SYNC_DATA, p: string, o: number, d: Uint8Array }
/**
 * After a directory's entries: removes every name not in `names`, then sets its times. m: 1
 * (version 4): more of its names follow in the next SYNC_DIR of the same `p` (a directory with
 * more than SYNC_DIR_NAMES_MAX names); only the last one removes and sets the times.
 */
export interface SyncDir { t: MsgType.SYNC_DIR, p: string, names: string[], a: SyncTime, mt: SyncTime, m?: 1 }
/** Nothing at `p` any more (whatever is there goes, a directory with all below it). */
export interface SyncRemove { t: MsgType.SYNC_REMOVE, p: string }
/** The Secondary's tree is now the Primary's after record `seq`: UPDATES follow from seq + 1. */
export interface SyncDone { t: MsgType.SYNC_DONE, seq: number }
/** The Secondary has applied the first `n` frames of this synchronization. */
export interface SyncAck { t: MsgType.SYNC_ACK, n: number }
/**
 * The Secondary's file at `p`, answering an entry with w: 'c' (or w: 'i' onto a file that changed
 * since its hashes were sent): its size (-1: none, or not a regular file) and, for each
 * SYNC_CHUNK_BYTES chunk from chunk `i` on, its 128-bit XXH3 hash (16 bytes each, in order; the
 * last chunk as long as the file). A file of more than SYNC_SUMS_PER_FRAME chunks takes several
 * frames; e: 1 on the last.
 */
export interface SyncSums { t: MsgType.SYNC_SUMS, p: string, s: number, i: number, h: Uint8Array, e?: 1 }

/**
 * Online verify: the Secondary takes snapshot `verify-<id>` of its data directory once it has
 * applied record `seq` (before it applies seq + 1), and sends its entries (VERIFY_ENTRIES); the
 * Primary has taken its own after the same record.
 */
export interface VerifyBegin { t: MsgType.VERIFY_BEGIN, id: string, seq: number }
/**
 * One entry of a tree being verified, in walk order (depth first, names sorted as JavaScript sorts
 * strings; a directory before its entries). k, m, u, g, l, r as SyncEntry; mt: mtime; s: a file's
 * size; x: XXH3-128 of its extended attributes (names sorted, each name NUL value-length value;
 * absent: none); h: with several links, the first path of the walk that is this file; c: a file's
 * chunk hashes (as SYNC_SUMS).
 */
export interface VerifyEntry {
  p: string
  k: 'f' | 'd' | 'l' | 'n'
  m: number
  u: number
  g: number
  mt: SyncTime
  s?: number
  x?: Uint8Array
  l?: string
  r?: number
  h?: string
  c?: Uint8Array
}
/**
 * Frame `i` (from 0) of the Secondary's entries; end: 1 on the last (r: the Merkle root of its
 * tree); err: the Secondary could not verify (why), the last frame.
 */
export interface VerifyEntries { t: MsgType.VERIFY_ENTRIES, id: string, i: number, e: VerifyEntry[], end?: 1, r?: Uint8Array, err?: string }
/** The Primary has compared the first `n` frames (the Secondary sends up to VERIFY_WINDOW_FRAMES more). */
export interface VerifyAck { t: MsgType.VERIFY_ACK, id: string, n: number }
/** The verify is over (done or given up): the Secondary stops and deletes its snapshot. */
export interface VerifyEnd { t: MsgType.VERIFY_END, id: string }

export type SyncMessage = SyncBegin | SyncEntry | SyncData | SyncDir | SyncRemove | SyncDone

/** A compressed frame (version 8): `z` zstd of the body of one other frame (never itself ZSTD), `n` that body's length. */
export interface Zstd { t: MsgType.ZSTD, n: number, z: Uint8Array }

export type Message = Hello | Join | Migrate | Migrated | Split | Challenge | Auth | Ready | Updates | Ack | Resend | Ping | Pong | Refuse | Task | TaskResult | SyncMessage | SyncAck | SyncSums | VerifyBegin | VerifyEntries | VerifyAck | VerifyEnd | Zstd

// Every option spelled out: these bytes are a contract.
const packr = new Packr({
  useRecords: false,
  structures: undefined,
  moreTypes: false,
  bundleStrings: false,
  int64AsType: 'number',
  mapsAsObjects: true,
  variableMapSize: true,
  copyBuffers: false,
  useFloat32: 0,
  encodeUndefinedAsNil: false,
  structuredClone: false
} as ConstructorParameters<typeof Packr>[0])

/** Encodes one frame: length prefix and msgpack body. */
export function encodeFrame (msg: Message): Buffer {
  const body = packr.pack(msg)
  if (body.length > WIRE_FRAME_BYTES_MAX) throw new ReplError('PROTOCOL', `frame of ${body.length} bytes exceeds ${WIRE_FRAME_BYTES_MAX}`)
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32LE(body.length, 0)
  body.copy(out, 4)
  return out
}

const EMPTY_BYTES = new Uint8Array(0)

/**
 * The same bytes as encodeFrame(msg), in two parts for a SYNC_DATA frame: everything up to its
 * data, and the data itself (not copied; the caller writes both, cork()ed, as one writev). A
 * SYNC_DATA is packed with its fields in the order t, p, o, d, so `d`, a msgpack bin, ends the
 * body: packed with no data, the body ends in bin 8 of length 0 (c4 00), which is replaced by
 * the bin header of the data's length (c4/c5/c6, msgpack's shortest, as msgpackr writes it).
 * Other frames: one part, encodeFrame's.
 */
export function encodeFrameParts (msg: Message): Buffer[] {
  if (msg.t !== MsgType.SYNC_DATA || !(msg.d instanceof Uint8Array) || msg.d.length === 0) return [encodeFrame(msg)]
  const d = msg.d
  const empty = packr.pack({ t: msg.t, p: msg.p, o: msg.o, d: EMPTY_BYTES })
  const keep = empty.length - 2
  const binHead = d.length < 0x100 ? 2 : d.length < 0x10000 ? 3 : 5
  const bodyLength = keep + binHead + d.length
  if (bodyLength > WIRE_FRAME_BYTES_MAX) throw new ReplError('PROTOCOL', `frame of ${bodyLength} bytes exceeds ${WIRE_FRAME_BYTES_MAX}`)
  const head = Buffer.allocUnsafe(4 + keep + binHead)
  head.writeUInt32LE(bodyLength, 0)
  empty.copy(head, 4, 0, keep)
  const at = 4 + keep
  if (binHead === 2) { head[at] = 0xc4; head[at + 1] = d.length } else if (binHead === 3) { head[at] = 0xc5; head.writeUInt16BE(d.length, at + 1) } else { head[at] = 0xc6; head.writeUInt32BE(d.length, at + 1) }
  return [head, Buffer.from(d.buffer, d.byteOffset, d.length)]
}

/** One frame's body (msgpack) as a message; PROTOCOL if it is not one. */
export function decodeBody (body: Buffer): Message {
  let msg: unknown
  try { msg = packr.unpack(body) } catch (err) { throw new ReplError('PROTOCOL', `peer sent an undecodable frame: ${(err as Error).message}`) }
  if (msg === null || typeof msg !== 'object' || typeof (msg as { t?: unknown }).t !== 'number') throw new ReplError('PROTOCOL', 'peer sent a frame that is not a message')
  if (!plainValue(msg, 0)) throw new ReplError('PROTOCOL', 'peer sent a frame holding values no message carries (an extension type, or nesting deeper than 64)')
  return msg as Message
}

/** An UPDATES frame's records, each its bytes; null if `recs` is not a list of byte strings (PROTOCOL). */
export function updatesRecords (m: { recs?: unknown }): Uint8Array[] | null {
  const recs = m.recs
  if (!Array.isArray(recs)) return null
  for (const r of recs) if (!(r instanceof Uint8Array)) return null
  return recs as Uint8Array[]
}

/**
 * Whether a decoded value is what messages are made of: null (and undefined), booleans, numbers,
 * strings, bytes, arrays and plain maps, at most 64 deep. msgpackr decodes its extension types (Error, Date, Set,
 * typed arrays, references) too; none of them is part of this protocol (found by test/fuzz).
 */
function plainValue (v: unknown, depth: number): boolean {
  // undefined: msgpackr's encoding of a field left undefined (a field absent, to the validators).
  if (v === null || v === undefined || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return true
  if (typeof v !== 'object' || depth > 64) return false
  if (v instanceof Uint8Array) return Object.getPrototypeOf(v) === Buffer.prototype || Object.getPrototypeOf(v) === Uint8Array.prototype
  if (Array.isArray(v)) {
    for (const x of v) if (!plainValue(x, depth + 1)) return false
    return true
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return false
  for (const k in v) if (!plainValue((v as Record<string, unknown>)[k], depth + 1)) return false
  return true
}

/**
 * Splits a byte stream into messages. push() returns the complete messages so far; a frame over
 * the size bound or a body that is not a message map throws PROTOCOL (the caller closes the link).
 * Buffers in decoded messages may be views into received chunks; consumers copy what they keep.
 */
export class FrameDecoder {
  private chunks: Buffer[] = []
  private length = 0

  push (chunk: Buffer): Message[] {
    this.chunks.push(chunk)
    this.length += chunk.length
    const out: Message[] = []
    for (;;) {
      if (this.length < 4) break
      const head = this.peek(4)
      const n = head.readUInt32LE(0)
      if (n > WIRE_FRAME_BYTES_MAX) throw new ReplError('PROTOCOL', `peer sent a frame of ${n} bytes (the limit is ${WIRE_FRAME_BYTES_MAX})`)
      if (this.length < 4 + n) break
      const frame = this.take(4 + n)
      out.push(decodeBody(frame.subarray(4)))
    }
    return out
  }

  /** Bytes buffered but not yet a whole frame. */
  get buffered (): number { return this.length }

  private peek (n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n)
    const all = Buffer.concat(this.chunks)
    this.chunks = [all]
    return all.subarray(0, n)
  }

  private take (n: number): Buffer {
    let first = this.chunks[0]
    if (first.length < n) {
      first = Buffer.concat(this.chunks)
      this.chunks = [first]
    }
    const out = first.subarray(0, n)
    if (first.length === n) this.chunks.shift()
    else this.chunks[0] = first.subarray(n)
    this.length -= n
    return out
  }
}

/** A fresh random nonce for the challenge-response. */
export function nonce (): Buffer {
  return crypto.randomBytes(32)
}

/**
 * The proof one side gives that it knows the secret: HMAC-SHA256 keyed by the secret over a
 * direction label, both nonces (own peer's first), the RDS name and (version 8) the connection's
 * channel binding: over TLS, 32 bytes of the session's exporter (label EXPORTER-replicafs-rlink,
 * an empty context; src/rlink/tls.ts), else nothing. The secret never crosses the wire, a proof is
 * useless in the other direction or on another connection, and one made over a TLS session
 * cannot be relayed into another (a party with a certificate of the CA but not the secret).
 */
export function proof (secret: Buffer, role: 'primary' | 'secondary', theirNonce: Uint8Array, ourNonce: Uint8Array, rds: string, binding: Uint8Array): Buffer {
  return crypto.createHmac('sha256', secret)
    .update(`replicafs-rlink-v${PROTOCOL_VERSION}-${role}\0`)
    .update(theirNonce)
    .update(ourNonce)
    .update(rds)
    .update(binding)
    .digest()
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofOk (got: unknown, want: Buffer): boolean {
  if (!(got instanceof Uint8Array) || got.length !== want.length) return false
  return crypto.timingSafeEqual(got, want)
}
