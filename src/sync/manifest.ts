/**
 * Online verify's tree walk (docs/ARCHITECTURE.md "Online verify"): the entries of a tree as
 * VerifyEntry (src/format/wire.ts), each file with its chunk hashes, and the tree's Merkle root.
 * Both ends walk their snapshot at the same sequence number with this same code, so two trees
 * are equal exactly when their entry lists are (and their roots).
 *
 * Order: depth first, a directory before its entries, names sorted as JavaScript sorts strings
 * (UTF-16 code units), so a path's place is the order of its components (compareOrder below):
 * two walks of different trees can be merged like two sorted lists.
 *
 * What is compared: kind, mode, owner, mtime (atime changes with reads and ctime cannot be set,
 * as rsync -a), a file's size and bytes, extended attributes, a symlink's target, a device's
 * number, and which names are one file (hard links). The walk is synchronous, one entry or one
 * chunk per step(), so the caller interleaves it with everything else (src/sync/verify.ts).
 */
import fs from 'node:fs'
import type { VerifyEntry } from '../format/wire'
import { SYNC_CHUNK_BYTES, VERIFY_CHUNKS_MAX } from '../limits'
import { chunkHash } from './hash'
import { child } from './paths'

/** A tree to walk: a snapshot's view (src/snapshot View), or any tree with these calls. */
export interface TreeReader {
  lstat (p: string): { mode: number, uid: number, gid: number, size: number, nlink: number, ino: number, rdev: number, mtimeNs: bigint }
  readdir (p: string): string[]
  readlink (p: string): string
  listxattr (p: string): string[]
  getxattr (p: string, name: string): Buffer
  open (p: string): number
  read (h: number, buf: Buffer, len: number, pos: number): number
  close (h: number): void
  /** A hint (nothing fails): the walk reads the first `bytes` of these names of directory `p` next. */
  willNeed? (p: string, names: string[], bytes: number): void
}

/** The walk hints the next files of a directory this many names at a time, when fewer than half are ahead. */
const HINT_NAMES = 64

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK } = fs.constants

/** The bytes each chunk hash of a file of `size` bytes covers: SYNC_CHUNK_BYTES, doubled until there are at most VERIFY_CHUNKS_MAX. */
export function verifyChunkBytes (size: number): number {
  let c = SYNC_CHUNK_BYTES
  while (Math.ceil(size / c) > VERIFY_CHUNKS_MAX) c *= 2
  return c
}

/** Path order of the walk: component by component, a directory before what is below it. */
export function compareOrder (a: string, b: string): number {
  if (a === b) return 0
  const x = a === '/' ? [] : a.slice(1).split('/')
  const y = b === '/' ? [] : b.slice(1).split('/')
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1
  }
  return x.length - y.length
}

/** An entry's digest in the Merkle tree: everything compared about it but its path. */
export function entryDigest (e: VerifyEntry, below: Buffer | null = null): Buffer {
  const meta = Buffer.from(JSON.stringify([e.k, e.m, e.u, e.g, e.mt, e.s ?? null, e.l ?? null, e.r ?? null, e.h ?? null]))
  const parts: Buffer[] = [meta, Buffer.from(e.x ?? []), Buffer.from(e.c ?? [])]
  if (below !== null) parts.push(below)
  return chunkHash(Buffer.concat(parts))
}

interface Level { p: string, names: string[], i: number, e: VerifyEntry, digests: Buffer[], ahead: number }

interface OpenFile { e: VerifyEntry, h: number, size: number, o: number, unit: number, sub: Buffer[], hashes: Buffer[] }

export class TreeWalk {
  private readonly stack: Level[] = []
  private file: OpenFile | null = null
  private readonly linked = new Map<number, string>()
  private readonly buf = Buffer.allocUnsafe(SYNC_CHUNK_BYTES)
  private began = false
  private rootHash: Buffer | null = null
  /** Entries walked and file bytes read so far. */
  entries = 0
  bytes = 0

  constructor (private readonly tree: TreeReader) {}

  /** The walk is over: every entry returned. */
  get done (): boolean { return this.rootHash !== null }

  /** The tree's Merkle root, once done. */
  get root (): Buffer | null { return this.rootHash }

  /** Gives back an open file (the walk is abandoned). */
  close (): void {
    if (this.file !== null) this.tree.close(this.file.h)
    this.file = null
  }

  /**
   * One unit of work: a chunk of a file, an entry, or a directory closed. Returns the entry it
   * completed, or null (more to do: call again while !done).
   */
  step (): VerifyEntry | null {
    if (!this.began) { this.began = true; return this.visit('/') }
    if (this.file !== null) return this.readChunk(this.file)
    const top = this.stack[this.stack.length - 1]
    if (top === undefined) return null
    if (top.i < top.names.length) {
      if (this.tree.willNeed !== undefined && top.ahead - top.i < HINT_NAMES / 2 && top.ahead < top.names.length) {
        const from = Math.max(top.ahead, top.i)
        top.ahead = Math.min(top.names.length, from + HINT_NAMES)
        this.tree.willNeed(top.p, top.names.slice(from, top.ahead), 2 * SYNC_CHUNK_BYTES)
      }
      return this.visit(child(top.p, top.names[top.i++]))
    }
    this.stack.pop()
    this.finished(top.e, chunkHash(Buffer.concat(top.digests)))
    return null
  }

  /** `e` is complete (its digest over `below` for a directory): into its directory's Merkle node. */
  private finished (e: VerifyEntry, below: Buffer | null): void {
    const d = entryDigest(e, below)
    const parent = this.stack[this.stack.length - 1]
    if (parent === undefined) { this.rootHash = d; return }
    const name = e.p.slice(e.p.lastIndexOf('/') + 1)
    parent.digests.push(Buffer.from(name + '\0'), d)
  }

  private visit (p: string): VerifyEntry | null {
    const t = this.tree
    const st = t.lstat(p)
    const type = st.mode & S_IFMT
    const mt = st.mtimeNs
    const e: VerifyEntry = {
      p,
      k: type === S_IFDIR ? 'd' : type === S_IFREG ? 'f' : type === S_IFLNK ? 'l' : 'n',
      m: st.mode,
      u: st.uid,
      g: st.gid,
      mt: [Number(mt / 1_000_000_000n), Number(mt % 1_000_000_000n)]
    }
    this.entries++
    const x = this.xattrs(p)
    if (x !== null) e.x = x
    if (e.k === 'l') e.l = t.readlink(p)
    if (e.k === 'n') e.r = st.rdev
    if (e.k === 'd') {
      const names = t.readdir(p).filter((n) => !(p === '/' && n === 'lost+found')).sort()
      this.stack.push({ p, names, i: 0, e, digests: [], ahead: 0 })
      return e
    }
    if (e.k === 'f') {
      e.s = st.size
      if (st.nlink > 1) {
        const first = this.linked.get(st.ino)
        if (first !== undefined) { e.h = first; this.finished(e, null); return e }
        this.linked.set(st.ino, p)
      }
      if (st.size > 0) {
        this.file = { e, h: t.open(p), size: st.size, o: 0, unit: verifyChunkBytes(st.size), sub: [], hashes: [] }
        return null
      }
      e.c = new Uint8Array(0)
    }
    this.finished(e, null)
    return e
  }

  /** Extended attributes, hashed: names sorted, each name, NUL, value length (u32 LE), value. */
  private xattrs (p: string): Buffer | null {
    const names = this.tree.listxattr(p).sort()
    if (names.length === 0) return null
    const parts: Buffer[] = []
    for (const n of names) {
      const v = this.tree.getxattr(p, n)
      const len = Buffer.allocUnsafe(4)
      len.writeUInt32LE(v.length, 0)
      parts.push(Buffer.from(n + '\0'), len, v)
    }
    return chunkHash(Buffer.concat(parts))
  }

  /**
   * The next SYNC_CHUNK_BYTES of the open file. A chunk hash over more than that (a big file) is
   * the hash of its pieces' hashes.
   */
  private readChunk (f: OpenFile): VerifyEntry | null {
    const n = Math.min(this.buf.length, f.size - f.o)
    const got = this.tree.read(f.h, this.buf, n, f.o)
    if (got < n) this.buf.fill(0, got, n) // shorter than its size said: what is not there reads as zeros (and the size differs)
    f.sub.push(chunkHash(this.buf.subarray(0, n)))
    f.o += n
    this.bytes += n
    if (f.o % f.unit === 0 || f.o >= f.size) {
      f.hashes.push(f.unit === SYNC_CHUNK_BYTES ? f.sub[0] : chunkHash(Buffer.concat(f.sub)))
      f.sub = []
    }
    if (f.o < f.size) return null
    this.tree.close(f.h)
    this.file = null
    f.e.c = Buffer.concat(f.hashes)
    this.finished(f.e, null)
    return f.e
  }
}
