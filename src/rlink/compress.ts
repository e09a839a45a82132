/**
 * Compression of RLINK frames (wire version 8, negotiated in the handshake): the Primary's bulk
 * frames (UPDATES, SYNC_DATA) may travel as ZSTD {n, z}, the zstd of the frame's body. zstd runs
 * in libuv's thread pool (@mongodb-js/zstd), off the event loop.
 *
 * A peer's compressed frame is checked before it is decompressed: it must be exactly one zstd
 * frame (whose content size, if it declares one, is `n`, at most WIRE_FRAME_BYTES_MAX), and whose
 * blocks cannot regenerate more than twice `n` (a block header says how much each raw or RLE
 * block makes, and a compressed block makes at most 128 KiB), so a small frame cannot expand into
 * an unbounded allocation.
 */
import { ReplError } from '../errors'
import { WIRE_FRAME_BYTES_MAX } from '../limits'

/** What `--compress` accepts; `zstd` is the only codec on the wire. */
export type Compression = 'zstd' | 'off'
export const COMPRESSIONS: Compression[] = ['zstd', 'off']

/** zstd level for RLINK frames: 1, the fastest of the regular levels (docs/PERFORMANCE.md). */
export const ZSTD_LEVEL = 1
/** Bodies shorter than this go uncompressed (the frame header and the thread hop cost more). */
export const COMPRESS_MIN_BYTES = 1024

type Zstd = typeof import('@mongodb-js/zstd')
let zstd: Zstd | null = null
function codec (): Zstd {
  // Loaded on first use: a daemon without --compress, and every other command, never loads it.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  zstd ??= require('@mongodb-js/zstd') as Zstd
  return zstd
}

export function compressBody (body: Buffer): Promise<Buffer> {
  return codec().compress(body, ZSTD_LEVEL)
}

const ZSTD_MAGIC = 0xfd2fb528
const BLOCK_MAX = 128 * 1024

/**
 * The most bytes one zstd frame `z` can regenerate, checked as the format says (RFC 8878 §3.1.1),
 * and its declared content size (null: none); PROTOCOL if it is not exactly one frame.
 */
export function zstdBound (z: Uint8Array): { size: number | null, bound: number } {
  const bad = (why: string): ReplError => new ReplError('PROTOCOL', `peer sent a malformed compressed frame: ${why}`)
  const b = Buffer.from(z.buffer, z.byteOffset, z.byteLength)
  if (b.length < 6 || b.readUInt32LE(0) !== ZSTD_MAGIC) throw bad('not a zstd frame')
  const fhd = b[4]
  const fcsFlag = fhd >> 6
  const single = (fhd & 0x20) !== 0
  const checksum = (fhd & 0x04) !== 0
  if ((fhd & 0x08) !== 0) throw bad('reserved bit set')
  const dictBytes = [0, 1, 2, 4][fhd & 0x03]
  const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag]
  let at = 5 + (single ? 0 : 1) + dictBytes
  if (at + fcsBytes > b.length) throw bad('truncated header')
  let size: number | null = null
  if (fcsBytes === 0) size = null
  else if (fcsBytes === 1) size = b[at]
  else if (fcsBytes === 2) size = b.readUInt16LE(at) + 256
  else if (fcsBytes === 4) size = b.readUInt32LE(at)
  else { const hi = b.readUInt32LE(at + 4); if (hi !== 0) throw bad('content size too large'); size = b.readUInt32LE(at) }
  at += fcsBytes
  let bound = 0
  for (;;) {
    if (at + 3 > b.length) throw bad('truncated block')
    const h = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)
    at += 3
    const last = (h & 1) !== 0
    const type = (h >> 1) & 3
    const n = h >>> 3
    if (type === 3) throw bad('reserved block type')
    if (type === 1) { bound += n; at += 1 } else if (type === 0) { bound += n; at += n } else { if (n > BLOCK_MAX) throw bad('block too large'); bound += BLOCK_MAX; at += n }
    if (at > b.length) throw bad('truncated block')
    if (bound > 2 * WIRE_FRAME_BYTES_MAX + BLOCK_MAX) throw bad('it would expand past the frame limit')
    if (last) break
  }
  if (checksum) at += 4
  if (at !== b.length) throw bad('bytes after the frame')
  return { size, bound }
}

/** A ZSTD frame's body, decompressed, after the checks above; PROTOCOL if anything is off. */
export async function inflateBody (n: unknown, z: unknown): Promise<Buffer> {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > WIRE_FRAME_BYTES_MAX || !(z instanceof Uint8Array)) throw new ReplError('PROTOCOL', 'peer sent a malformed compressed frame')
  const { size, bound } = zstdBound(z)
  if (size !== null && size !== n) throw new ReplError('PROTOCOL', `peer sent a compressed frame of ${size} bytes that says ${n}`)
  if (bound > 2 * n + BLOCK_MAX) throw new ReplError('PROTOCOL', 'peer sent a compressed frame that would expand past its size')
  let out: Buffer
  try {
    out = await codec().decompress(Buffer.from(z.buffer, z.byteOffset, z.byteLength))
  } catch (err) {
    throw new ReplError('PROTOCOL', `peer sent a compressed frame that does not decompress: ${(err as Error).message}`)
  }
  if (out.length !== n) throw new ReplError('PROTOCOL', `peer sent a compressed frame of ${out.length} bytes that says ${n}`)
  return out
}
