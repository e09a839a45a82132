/**
 * The snapshot store's on-disk layout and its primitives: one `Snap` per snapshot directory, the
 * item formats, the write-once item rule, and the bounded caches. See src/snapshot/set.ts for the
 * design and the crash-safety argument.
 *
 *   STATE/snapshots/
 *     <id>/                   one snapshot; id = 8-digit creation counter (00000001, ...)
 *       meta.json             SnapshotMeta (written before the directory gets its final name)
 *       attrs/<ino>.json      AttrsItem: preserved attributes of an inode (any type)
 *       dirs/<ino>.json       ListingItem: preserved listing of a directory
 *       chunks/<ino>/<index>  preserved bytes of one 64 KiB chunk (shorter at EOF; sparse if all zero)
 *       keep/<ino>            a hard link keeping a removed inode alive (same filesystem)
 *       keep/<ino>.copy       a frozen copy of a removed inode (link() failed: EXDEV, EMLINK, ...)
 *       born                  inodes created after this snapshot (16-byte entries; see BORN_ENTRY_BYTES)
 *       invalid               present when copy-on-write into this snapshot failed: the reason
 *       tmp/                  items being written; emptied at open
 *     <id>.tmp/               a snapshot being created (removed at open)
 *     <id>.deleting/          a snapshot being deleted (its items are merged at open)
 */
import fs from 'node:fs'
import { sys } from '../native'
import { ReplError } from '../errors'
import { isInternalXattr } from '../format/data-cursor'
import { SNAPSHOT_CHUNK_BYTES, SNAPSHOT_NAME_BYTES_MAX, SNAPSHOT_BORN_INODES_MAX, SNAPSHOT_HAS_CACHE_ENTRIES_MAX, SNAPSHOT_VIEW_CACHE_ENTRIES_MAX } from '../limits'

/** Copy-on-write granularity and name length (src/limits.ts). Names are never '.' or '..'. */
export const CHUNK_BYTES = SNAPSHOT_CHUNK_BYTES
export const SNAPSHOT_NAME_MAX = SNAPSHOT_NAME_BYTES_MAX
const NAME_RE = /^[A-Za-z0-9._-]+$/
/** The store format this build writes and reads (meta.json `format`). */
export const STORE_FORMAT = 1
export const BORN_MAX = SNAPSHOT_BORN_INODES_MAX
export const HAS_CACHE_MAX = SNAPSHOT_HAS_CACHE_ENTRIES_MAX
export const JSON_CACHE_WEIGHT_MAX = SNAPSHOT_VIEW_CACHE_ENTRIES_MAX

export const S_IFMT = 0o170000
export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000

export type Ts = [number, number]

export interface SnapshotMeta {
  format: number
  name: string
  id: string
  createdAt: string
  /** The SRL sequence number this snapshot represents (given by the caller). */
  seq: number
  /** Inode number of the data directory's root when the snapshot was taken. */
  rootIno: number
}

/** Preserved attributes of one inode. `nlink` excludes the store's own keep links. */
export interface AttrsItem {
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  rdev: number
  blocks: number
  atime: Ts
  mtime: Ts
  ctime: Ts
  /** [name, base64 value], in llistxattr order. */
  xattrs: Array<[string, string]>
  /** Symlinks only: the target. */
  target?: string
}

/** A preserved directory listing: [name, ino, S_IFMT type bits, file handle (base64) or null]. */
export interface ListingItem {
  entries: Array<[string, number, number, string | null]>
}

export interface Entry { ino: number, type: number, handle: Buffer | null }

export function validateName (name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > SNAPSHOT_NAME_MAX || !NAME_RE.test(name) || name === '.' || name === '..') {
    throw new ReplError('USAGE', `invalid snapshot name ${JSON.stringify(name)}: use 1 to ${SNAPSHOT_NAME_MAX} of A-Z a-z 0-9 . _ - (not . or ..)`)
  }
}

export function idString (n: number): string { return String(n).padStart(8, '0') }

/** [seconds, nanoseconds] with nanoseconds in [0, 1e9), also before 1970 (seconds rounded down). */
export function tsOf (ns: bigint): Ts {
  let s = ns / 1_000_000_000n
  if (ns % 1_000_000_000n < 0n) s -= 1n
  return [Number(s), Number(ns - s * 1_000_000_000n)]
}
export function nsOf (t: Ts): bigint { return BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]) }

export function errnoError (code: string, message: string, path?: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: ${message}${path !== undefined ? `, '${path}'` : ''}`)
  err.code = code
  if (path !== undefined) err.path = path
  return err
}

function codeOf (err: unknown): string { return (err as NodeJS.ErrnoException)?.code ?? '' }

/** lstat that answers null for a path that does not name anything (ENOENT, ENOTDIR, ELOOP, ...). */
export function lstatQuiet (p: string): fs.BigIntStats | null {
  try {
    return fs.lstatSync(p, { bigint: true, throwIfNoEntry: false }) ?? null
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG', 'ESTALE'].includes(codeOf(err))) return null
    throw err
  }
}

export function readdirQuiet (p: string): string[] {
  try { return fs.readdirSync(p) } catch (err) { if (codeOf(err) === 'ENOENT') return []; throw err }
}

export const O_NOATIME: number = fs.constants.O_NOATIME ?? 0

/** Opens for reading without touching the atime where allowed (owner or CAP_FOWNER). */
export function openRead (p: string, extra = 0): number {
  try {
    return fs.openSync(p, fs.constants.O_RDONLY | O_NOATIME | extra)
  } catch (err) {
    if (codeOf(err) !== 'EPERM' || O_NOATIME === 0) throw err
    return fs.openSync(p, fs.constants.O_RDONLY | extra)
  }
}

/** Reads up to `len` bytes at `pos` (loops over short reads); returns how many. */
export function preadFull (fd: number, buf: Buffer, off: number, len: number, pos: number): number {
  let got = 0
  while (got < len) {
    const n = fs.readSync(fd, buf, off + got, len - got, pos + got)
    if (n === 0) break
    got += n
  }
  return got
}

const ZERO = Buffer.alloc(CHUNK_BYTES)
export function isZero (buf: Buffer, len: number): boolean {
  for (let off = 0; off < len; off += CHUNK_BYTES) {
    const n = Math.min(CHUNK_BYTES, len - off)
    if (buf.compare(ZERO, 0, n, off, off + n) !== 0) return false
  }
  return true
}

/** xattrs of a path (not following a symlink), as [name, base64]; none where unsupported. */
export function xattrsOf (p: string): Array<[string, string]> {
  let names: string[]
  try { names = sys.llistxattr(p) } catch (err) {
    if (['ENOTSUP', 'EOPNOTSUPP'].includes(codeOf(err))) return []
    throw err
  }
  const out: Array<[string, string]> = []
  for (const n of names) {
    if (isInternalXattr(n)) continue // the data cursor is the data directory's, not the snapshot's
    try { out.push([n, sys.lgetxattr(p, n).toString('base64')]) } catch (err) { if (codeOf(err) !== 'ENODATA') throw err }
  }
  return out
}

/** One snapshot directory. Paths only; the SnapshotSet decides what goes where. */
export class Snap {
  /** Inodes with a frozen copy (keep/<ino>.copy): the chain walk for them stops here. */
  readonly copies = new Set<number>()
  /** Subdirectories known to exist. */
  private readonly subs = new Set<string>()
  invalid: string | null = null
  deleted = false

  constructor (public dir: string, readonly meta: SnapshotMeta) {}

  get id (): string { return this.meta.id }
  get name (): string { return this.meta.name }

  attrsPath (ino: number): string { return `${this.dir}/attrs/${ino}.json` }
  listingPath (ino: number): string { return `${this.dir}/dirs/${ino}.json` }
  chunkDir (ino: number): string { return `${this.dir}/chunks/${ino}` }
  chunkPath (ino: number, i: number): string { return `${this.dir}/chunks/${ino}/${i}` }
  keepPath (ino: number): string { return `${this.dir}/keep/${ino}` }
  copyPath (ino: number): string { return `${this.dir}/keep/${ino}.copy` }
  tmpPath (name: string): string { return `${this.dir}/tmp/${name}` }
  bornPath (): string { return `${this.dir}/born` }

  /** mkdir of a subdirectory (relative to the snapshot directory), once. */
  sub (rel: string): void {
    if (this.subs.has(rel)) return
    try { fs.mkdirSync(`${this.dir}/${rel}`, { mode: 0o700 }) } catch (err) { if (codeOf(err) !== 'EEXIST') throw err }
    if (this.subs.size > 10_000) this.subs.clear()
    this.subs.add(rel)
  }

  forgetSubs (): void { this.subs.clear() }

  /** Loads the copies set and the invalid marker; empties tmp/. */
  load (): void {
    this.copies.clear()
    for (const f of readdirQuiet(`${this.dir}/keep`)) if (f.endsWith('.copy')) this.copies.add(Number(f.slice(0, -5)))
    try { this.invalid = fs.readFileSync(`${this.dir}/invalid`, 'utf8') } catch { this.invalid = null }
    for (const f of readdirQuiet(`${this.dir}/tmp`)) fs.rmSync(`${this.dir}/tmp/${f}`, { recursive: true, force: true })
  }
}

/**
 * Writes an item: to tmp/, then renamed to its final name, so the final name only ever holds a
 * complete item. With `durable`, the file and then its directory are fsynced.
 * `data` null writes a sparse file of `sparseLength` bytes (a chunk of zeros).
 */
export function writeItem (snap: Snap, tmpName: string, finalPath: string, data: Buffer | string | null, durable: boolean, sparseLength = 0): void {
  snap.sub('tmp')
  const tmp = snap.tmpPath(tmpName)
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    if (data === null) fs.ftruncateSync(fd, sparseLength)
    else if (typeof data === 'string') fs.writeSync(fd, data)
    else {
      let off = 0
      while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off)
    }
    if (durable) fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, finalPath)
  if (durable) fsyncDir(finalPath.slice(0, finalPath.lastIndexOf('/')))
}

export function fsyncDir (dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

/**
 * Copies a regular file, leaving all-zero chunks as holes; tries a reflink first. Used for frozen
 * copies (keep/<ino>.copy) when a hard link is impossible.
 */
export function copySparse (src: string, dst: string): void {
  const inFd = openRead(src, fs.constants.O_NOFOLLOW)
  try {
    const outFd = fs.openSync(dst, 'w', 0o600)
    try {
      try { sys.ficlone(outFd, inFd); return } catch { /* no reflink here: copy */ }
      const size = fs.fstatSync(inFd).size
      const buf = Buffer.allocUnsafe(CHUNK_BYTES * 16)
      for (let pos = 0; pos < size;) {
        const n = preadFull(inFd, buf, 0, Math.min(buf.length, size - pos), pos)
        if (n === 0) break
        for (let off = 0; off < n; off += CHUNK_BYTES) {
          const len = Math.min(CHUNK_BYTES, n - off)
          const piece = buf.subarray(off, off + len)
          if (!isZero(piece, len)) {
            let w = 0
            while (w < len) w += fs.writeSync(outFd, piece, w, len - w, pos + off + w)
          }
        }
        pos += n
      }
      fs.ftruncateSync(outFd, size)
    } finally {
      fs.closeSync(outFd)
    }
  } finally {
    fs.closeSync(inFd)
  }
}

/** A bounded cache of parsed items, weighted (a listing weighs its entry count). */
export class ItemCache<T> {
  private readonly map = new Map<string, { v: T, w: number }>()
  private weight = 0
  constructor (private readonly max: number) {}
  get (k: string): T | undefined {
    const e = this.map.get(k)
    return e === undefined ? undefined : e.v
  }

  set (k: string, v: T, w = 1): void {
    if (this.map.has(k)) return
    this.map.set(k, { v, w })
    this.weight += w
    if (this.weight > this.max) {
      // Drop the oldest half.
      for (const [key, e] of this.map) {
        this.map.delete(key)
        this.weight -= e.w
        if (this.weight <= this.max / 2) break
      }
    }
  }

  clear (): void { this.map.clear(); this.weight = 0 }
}

/** Space a directory tree takes (allocated blocks); a file with n links counts 1/n. */
export function spaceOf (dir: string): number {
  let bytes = 0
  const walk = (p: string): void => {
    const st = lstatQuiet(p)
    if (st === null) return
    if (st.isDirectory()) {
      bytes += Number(st.blocks) * 512
      for (const f of readdirQuiet(p)) walk(`${p}/${f}`)
    } else {
      bytes += Number(st.blocks) * 512 / Math.max(1, Number(st.nlink))
    }
  }
  walk(dir)
  return Math.round(bytes)
}

/** fsync of a file or directory by path: what makes a new item or a rename durable. */
export function fsyncPath (p: string): void {
  const fd = fs.openSync(p, fs.constants.O_RDONLY)
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}
