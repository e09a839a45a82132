/**
 * Restore as records: the changes that turn the live data directory into a snapshot's tree,
 * expressed as ordinary SRL records (CREATE, WRITE, LINK, UNLINK, CHMOD, ...). Applied through the
 * usual path (beforeApply, then applyRecordSync), a restore is copy-on-write preserved like any
 * change, so every snapshot stays valid, and if the caller journals the records, Secondaries
 * follow it and stay identical.
 *
 * Three passes, each computing the next record from the data directory as the previous records
 * left it (so the caller must apply each record before asking for the next):
 *  1. namespace and content, depth first over the snapshot's tree: make each entry exist with the
 *     right type; a file that is the snapshot's inode (same inode number) gets only the chunks the
 *     store holds for it, and only where they differ; a file whose inode is still live elsewhere in
 *     the data directory (moved, or renamed over) is hard-linked back, then diffed the same way;
 *     otherwise it is created and written whole (all-zero chunks left as holes). Hard links are
 *     restored as links.
 *  2. removal of every live entry the snapshot does not have (deferred, so that pass 1 can link
 *     files back from where they moved).
 *  3. attributes, children before their directory: owner, xattrs, mode, then times last.
 */
import fs from 'node:fs'
import { sys } from '../native'
import { isInternalXattr } from '../format/data-cursor'
import { RecordType, type RecordMeta, type Timespec } from '../format/record'
import { CHUNK_BYTES, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, lstatQuiet, openRead, preadFull, isZero, tsOf } from './store'
import type { View, ViewStat } from './view'

export interface RestoreRecord { type: RecordType, meta: RecordMeta, data: Buffer }

const EMPTY = Buffer.alloc(0)

function rec (type: RecordType, meta: RecordMeta, data: Buffer = EMPTY): RestoreRecord { return { type, meta, data } }

function join (dir: string, name: string): string { return dir === '/' ? `/${name}` : `${dir}/${name}` }

function ts (ns: bigint): Timespec { return tsOf(ns) }

export function restoreRecords (view: View, root: string): Generator<RestoreRecord, void, void> {
  return new Restorer(view, root).run()
}

type Records = Generator<RestoreRecord, void, void>
type Live = ReturnType<typeof lstatQuiet>

/** One restore run: what it has restored so far, so hard links come back as links. */
class Restorer {
  /** Snapshot inode -> data-directory path restored for it in this run (hard links). */
  private readonly restored = new Map<number, string>()
  /** Live entries the snapshot does not have, removed in pass 2. */
  private readonly extras: string[] = []
  /** Live inode -> the snapshot inode it was given to in this run (never give one inode to two). */
  private readonly claimed = new Map<number, number>()
  /** Inodes whose attributes pass 3 has set (once per inode, not per name). */
  private readonly attrsDone = new Set<number>()

  constructor (private readonly view: View, private readonly root: string) {}

  * run (): Records {
    yield * this.syncDir('/')
    for (const p of this.extras) yield * this.removeTree(p)
    yield * this.syncAttrs('/')
  }

  private * removeTree (p: string): Records {
    const st = lstatQuiet(this.root + p)
    if (st === null) return
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(this.root + p)) yield * this.removeTree(join(p, name))
      yield rec(RecordType.RMDIR, { p })
    } else {
      yield rec(RecordType.UNLINK, { p })
    }
  }

  /**
   * Chunks of the file at `p` that differ from the view. The file is the snapshot's inode (or a
   * link to it): then only chunks the store holds can differ; or, with `all`, another inode.
   */
  private * syncContent (p: string, v: ViewStat, all: boolean): Records {
    const { view, root } = this
    const t = ts(v.mtimeNs)
    const cur = fs.lstatSync(root + p)
    if (cur.size > v.size) yield rec(RecordType.TRUNCATE, { p, s: v.size, t })
    const h = view.open(p)
    try {
      const vbuf = Buffer.allocUnsafe(CHUNK_BYTES)
      const lbuf = Buffer.allocUnsafe(CHUNK_BYTES)
      for (let i = 0; i * CHUNK_BYTES < v.size; i++) {
        if (!all && !view.chunkPreserved(h, i)) continue // the live inode's own bytes: unchanged
        const n = view.read(h, vbuf, CHUNK_BYTES, i * CHUNK_BYTES)
        const fd = openRead(root + p, fs.constants.O_NOFOLLOW)
        let got: number
        try { got = preadFull(fd, lbuf, 0, n, i * CHUNK_BYTES) } finally { fs.closeSync(fd) }
        if (got === n && vbuf.compare(lbuf, 0, n, 0, n) === 0) continue
        yield rec(RecordType.WRITE, { p, o: i * CHUNK_BYTES, t }, Buffer.from(vbuf.subarray(0, n)))
      }
    } finally {
      view.close(h)
    }
    if (fs.lstatSync(root + p).size !== v.size) yield rec(RecordType.TRUNCATE, { p, s: v.size, t })
  }

  /** A just-created empty file at `p` gets the view's whole content. */
  private * writeAll (p: string, v: ViewStat): Records {
    const { view, root } = this
    const t = ts(v.mtimeNs)
    const h = view.open(p)
    try {
      const buf = Buffer.allocUnsafe(CHUNK_BYTES)
      for (let off = 0; off < v.size; off += CHUNK_BYTES) {
        const n = view.read(h, buf, CHUNK_BYTES, off)
        if (n === 0) break
        if (isZero(buf, n)) continue
        yield rec(RecordType.WRITE, { p, o: off, t }, Buffer.from(buf.subarray(0, n)))
      }
    } finally {
      view.close(h)
    }
    if (fs.lstatSync(root + p).size !== v.size) yield rec(RecordType.TRUNCATE, { p, s: v.size, t })
  }

  /** Pass 1 for one entry of the snapshot: make it exist at `p` with the right type and content. */
  private * syncEntry (p: string, v: ViewStat): Records {
    const vt = v.mode & S_IFMT
    const cur = lstatQuiet(this.root + p)
    if (vt === S_IFDIR) {
      if (cur === null || !cur.isDirectory()) {
        if (cur !== null) yield * this.removeTree(p)
        yield rec(RecordType.MKDIR, { p, m: v.mode & 0o7777, u: v.uid, g: v.gid, t: ts(v.mtimeNs) })
      }
      yield * this.syncDir(p)
      return
    }
    // A hard link to an inode restored already in this run.
    const prev = this.restored.get(v.ino)
    if (prev !== undefined) {
      const pst = lstatQuiet(this.root + prev)
      if (pst !== null && cur !== null && cur.ino === pst.ino) return
      if (pst !== null) {
        if (cur !== null) yield * this.removeTree(p)
        yield rec(RecordType.LINK, { p: prev, d: p })
        return
      }
    }
    if (vt === S_IFREG) yield * this.syncFile(p, v, cur)
    else if (vt === S_IFLNK) yield * this.syncSymlink(p, v, cur)
    else yield * this.syncSpecial(p, v)
    this.restored.set(v.ino, p)
  }

  private * syncFile (p: string, v: ViewStat, cur: Live): Records {
    const { root, claimed } = this
    const free = (ino: number): boolean => { const c = claimed.get(ino); return c === undefined || c === v.ino }
    const same = cur !== null && cur.isFile() && Number(cur.ino) === v.ino && free(v.ino)
    let src = same ? p : this.view.liveDataPath(p)
    if (src !== null && cur !== null && src.startsWith(p + '/')) {
      // It lives inside the directory that is in the way: that goes first (and the inode with it,
      // into keep/), then the file is written whole.
      yield * this.removeTree(p)
      cur = null
      src = null
    }
    if (same) {
      // The snapshot's own inode: only the chunks the store holds for it can differ.
      claimed.set(v.ino, v.ino)
      yield * this.syncContent(p, v, false)
    } else if (src !== null && src !== p && free(Number(fs.lstatSync(root + src).ino))) {
      // Still live elsewhere (moved, renamed over, linked): link it back.
      claimed.set(Number(fs.lstatSync(root + src).ino), v.ino)
      if (cur !== null) yield * this.removeTree(p)
      yield rec(RecordType.LINK, { p: src, d: p })
      yield * this.syncContent(p, v, false)
    } else if (cur !== null && cur.isFile() && free(Number(cur.ino))) {
      // Another inode (the file was replaced, or restored before): rewrite what differs,
      // comparing every chunk. Its other names, if any, are all visited too (each either is a
      // name of the same snapshot inode, or gets another inode, or is removed in pass 2).
      claimed.set(Number(cur.ino), v.ino)
      yield * this.syncContent(p, v, true)
    } else {
      if (cur !== null) yield * this.removeTree(p)
      yield rec(RecordType.CREATE, { p, m: v.mode & 0o7777, u: v.uid, g: v.gid, t: ts(v.mtimeNs) })
      yield * this.writeAll(p, v)
    }
  }

  private * syncSymlink (p: string, v: ViewStat, cur: Live): Records {
    const target = this.view.readlink(p)
    if (cur !== null && cur.isSymbolicLink() && fs.readlinkSync(this.root + p) === target) return
    if (cur !== null) yield * this.removeTree(p)
    yield rec(RecordType.SYMLINK, { p, d: target, u: v.uid, g: v.gid, t: ts(v.mtimeNs) })
  }

  /** Devices, FIFOs and sockets. */
  private * syncSpecial (p: string, v: ViewStat): Records {
    const cur = lstatQuiet(this.root + p)
    if (cur !== null && (Number(cur.mode) & S_IFMT) === (v.mode & S_IFMT) && Number(cur.rdev) === v.rdev) return
    if (cur !== null) yield * this.removeTree(p)
    yield rec(RecordType.MKNOD, { p, m: v.mode, r: v.rdev, u: v.uid, g: v.gid, t: ts(v.mtimeNs) })
  }

  private * syncDir (dir: string): Records {
    const names = this.view.readdir(dir)
    const want = new Set(names)
    for (const name of fs.readdirSync(this.root + dir)) if (!want.has(name)) this.extras.push(join(dir, name))
    for (const name of names) {
      const p = join(dir, name)
      yield * this.syncEntry(p, this.view.lstat(p))
    }
  }

  /** Pass 3: owner, xattrs, mode, then times, children before their directory. */
  private * syncAttrs (p: string): Records {
    const { view } = this
    const v = view.lstat(p)
    const vt = v.mode & S_IFMT
    if (vt === S_IFDIR) {
      for (const name of view.readdir(p)) yield * this.syncAttrs(join(p, name))
    } else {
      if (this.attrsDone.has(v.ino)) return
      this.attrsDone.add(v.ino)
    }
    const full = this.root + p
    let chowned = false
    const cur = fs.lstatSync(full, { bigint: true })
    if (Number(cur.uid) !== v.uid || Number(cur.gid) !== v.gid) {
      yield rec(RecordType.CHOWN, { p, u: v.uid, g: v.gid })
      chowned = true
    }
    yield * this.syncXattrs(p)
    const now = fs.lstatSync(full, { bigint: true })
    if (vt !== S_IFLNK && ((Number(now.mode) & 0o7777) !== (v.mode & 0o7777) || (chowned && (v.mode & 0o6000) !== 0))) {
      yield rec(RecordType.CHMOD, { p, m: v.mode & 0o7777 })
    }
    const last = fs.lstatSync(full, { bigint: true })
    if (last.atimeNs !== v.atimeNs || last.mtimeNs !== v.mtimeNs) yield rec(RecordType.UTIMENS, { p, a: ts(v.atimeNs), t: ts(v.mtimeNs) })
  }

  private * syncXattrs (p: string): Records {
    const full = this.root + p
    const want = new Map<string, Buffer>()
    for (const n of this.view.listxattr(p)) want.set(n, this.view.getxattr(p, n))
    let have: string[] = []
    try { have = sys.llistxattr(full).filter((n) => !isInternalXattr(n)) } catch { /* no xattrs here */ }
    for (const n of have) if (!want.has(n)) yield rec(RecordType.REMOVEXATTR, { p, n })
    for (const [n, x] of want) {
      let now: Buffer | null = null
      try { now = sys.lgetxattr(full, n) } catch { /* absent */ }
      if (now === null || !now.equals(x)) yield rec(RecordType.SETXATTR, { p, n, x, f: 0 })
    }
  }
}
