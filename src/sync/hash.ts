/**
 * The chunk hash of synchronization by difference (docs/FORMAT.md "SYNC_SUMS"): XXH3, 128 bits,
 * seed 0, as 16 bytes (low 64 bits little-endian, then high 64 bits). @node-rs/xxhash is native
 * (N-API, prebuilt): 2.7 GB/s here, against 1.9 GB/s for SHA-256 with SHA-NI. It is not a
 * cryptographic hash: both ends of an RLINK are authenticated, and a collision between a
 * Secondary's chunk and the Primary's by chance is 2^-128.
 */
import { sys } from '../native'
import { xxh3 } from '@node-rs/xxhash'
import { SYNC_CHUNK_BYTES } from '../limits'

export const HASH_BYTES = 16

const MASK64 = (1n << 64n) - 1n

export function chunkHash (b: Uint8Array): Buffer {
  const h = xxh3.xxh128(b)
  const out = Buffer.allocUnsafe(HASH_BYTES)
  out.writeBigUInt64LE(h & MASK64, 0)
  out.writeBigUInt64LE(h >> 64n, 8)
  return out
}

/** What a file was when it was read: its hashes describe exactly that file (ctime -1: it changed while read). */
export interface FileIdentity { ino: bigint, size: bigint, mtimeNs: bigint, ctimeNs: bigint }

/** Whether `st` is still the file `id` describes. */
export function sameFile (id: FileIdentity, st: { ino: bigint, size: bigint, mtimeNs: bigint, ctimeNs: bigint }): boolean {
  return st.ino === id.ino && st.size === id.size && st.mtimeNs === id.mtimeNs && st.ctimeNs === id.ctimeNs
}

/**
 * The chunk hashes of the file at `full` (one per SYNC_CHUNK_BYTES, the last one of what is
 * left) and what the file was meanwhile: the same before and after the read, or ctime -1 (the
 * hashes describe no one state of it). Read and hashed on libuv's pool by the native addon
 * (sys.hashFile, the same XXH3-128 as chunkHash): nothing of it on the event loop.
 */
export async function fileHashes (full: string): Promise<{ id: FileIdentity, h: Buffer }> {
  return await new Promise((resolve, reject) => {
    sys.hashFile(full, SYNC_CHUNK_BYTES, (err, h, id) => {
      if (err !== null || h === null || id === null) reject(err ?? new Error(`hashFile ${full}: no result`))
      else resolve({ id: { ino: id[0], size: id[1], mtimeNs: id[2], ctimeNs: id[3] }, h })
    })
  })
}
