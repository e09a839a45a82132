/**
 * Copy-on-write into the latest snapshot (see the design and the crash-safety argument in the
 * header of src/snapshot/set.ts): what a record is about to change is preserved into the latest
 * snapshot, once, just before the record is applied. This class holds what is known about the
 * latest snapshot to make that cheap: the items it holds, the preserved size per inode, the inodes
 * born after it (so nothing of theirs is preserved), and the record in progress.
 */
import fs from 'node:fs'
import { sys } from '../native'
import { RecordType, type Record } from '../format/record'
import {
  Snap, CHUNK_BYTES, BORN_MAX, HAS_CACHE_MAX, S_IFMT,
  type AttrsItem, type ListingItem,
  tsOf, lstatQuiet, openRead, preadFull, isZero, xattrsOf, writeItem, copySparse, fsyncPath
} from './store'

/** Born-inode entries in born.bin: the inode number and a check of it (a torn entry fails it). */
export const BORN_ENTRY_BYTES = 16
const BORN_CHECK = 0x5bd1e995a5a5a5a5n

/** What copy-on-write needs from the set: the data directory, the snapshots. */
export interface CowHost {
  /** The data directory. */
  readonly root: string
  /** The newest snapshot, the only one that receives items; null when there is none. */
  readonly latest: Snap | null
  allSnaps (): readonly Snap[]
}

export class CopyOnWrite {
  /** Item keys the latest snapshot is known to hold ('d' + ino, 'k' + ino, 'c' + ino + ':' + i). */
  private has = new Set<string>()
  /** Preserved size per inode in the latest snapshot (its attrs item exists). */
  private sizes = new Map<number, number>()
  private born = new Set<number>()
  private bornFd: number | null = null
  /** A path a CREATE/MKDIR/MKNOD/SYMLINK is about to create: its inode is born. */
  private pending: string | null = null
  /** An inode just kept because its last name was about to go: undone if the record failed. */
  private pendingKeep: { full: string, ino: number, snap: Snap, copy: boolean } | null = null

  constructor (private readonly host: CowHost, private readonly durable: boolean, private readonly log: (line: string) => void) {}

  /** Forgets the record in progress (the snapshots were invalidated). */
  dropPending (): void { this.pending = null }

  close (): void {
    if (this.bornFd !== null) { fs.closeSync(this.bornFd); this.bornFd = null }
  }

  /** The latest snapshot changed (create, delete, open): forget what was known about the one before. */
  reset (): void {
    this.has = new Set()
    this.sizes = new Map()
    this.born = new Set()
    this.pending = null
    if (this.bornFd !== null) { fs.closeSync(this.bornFd); this.bornFd = null }
    const L = this.host.latest
    if (L === null) return
    let buf: Buffer
    try { buf = fs.readFileSync(L.bornPath()) } catch { return }
    for (let off = 0; off + BORN_ENTRY_BYTES <= buf.length && this.born.size < BORN_MAX; off += BORN_ENTRY_BYTES) {
      const ino = buf.readBigUInt64LE(off)
      // A torn or zero-filled entry (power loss) fails the check and is ignored: safe, the inode counts as old.
      if ((ino ^ BORN_CHECK) === buf.readBigUInt64LE(off + 8) && ino !== 0n) this.born.add(Number(ino))
    }
  }

  private remember (key: string): void {
    if (this.has.size >= HAS_CACHE_MAX) this.has.clear()
    this.has.add(key)
  }

  /** The record before the one about to be applied is done: record what it created, undo a keep it did not need. */
  resolvePending (): void {
    if (this.pendingKeep !== null) this.undoFailedKeep()
    if (this.pending === null) return
    const full = this.pending
    this.pending = null
    const L = this.host.latest
    if (L === null || L.invalid !== null) return
    const st = lstatQuiet(full)
    if (st === null) return
    try { this.addBorn(L, Number(st.ino)) } catch (err) { this.log(`snapshots: cannot record a new inode in ${L.bornPath()} (it will count as old): ${(err as Error).message}`) }
  }

  /**
   * The record that made the last keep/ item did not remove the name (it failed: a rename of a
   * directory over a file, EBUSY, ...): the inode is live, so drop the item, or the live file would
   * show one link too many for as long as the snapshot lives. (A kill -9 right there leaves it; then
   * only the live nlink is off by one.)
   */
  private undoFailedKeep (): void {
    const k = this.pendingKeep!
    this.pendingKeep = null
    const st = lstatQuiet(k.full)
    if (st === null || Number(st.ino) !== k.ino || k.snap.deleted) return
    try {
      if (k.copy) {
        fs.unlinkSync(k.snap.copyPath(k.ino))
        k.snap.copies.delete(k.ino)
      } else {
        const kst = lstatQuiet(k.snap.keepPath(k.ino))
        if (kst !== null && Number(kst.ino) === k.ino) fs.unlinkSync(k.snap.keepPath(k.ino))
      }
      this.has.delete('k' + k.ino)
    } catch (err) {
      this.log(`snapshots: cannot drop the keep/ item of inode ${k.ino}, whose removal failed: ${(err as Error).message}`)
    }
  }

  private addBorn (L: Snap, ino: number): void {
    if (this.born.size >= BORN_MAX || this.born.has(ino)) return
    this.born.add(ino)
    if (this.bornFd === null) this.bornFd = fs.openSync(L.bornPath(), 'a', 0o600)
    const e = Buffer.allocUnsafe(BORN_ENTRY_BYTES)
    e.writeBigUInt64LE(BigInt(ino), 0)
    e.writeBigUInt64LE(BigInt(ino) ^ BORN_CHECK, 8)
    fs.writeSync(this.bornFd, e)
  }


  /** Preserves into `L`, the latest snapshot, what `rec` is about to change and `L` lacks. */
  preserve (L: Snap, rec: Record): void {
    const m = rec.meta
    const full = (p: string): string => this.host.root + p
    switch (rec.type) {
      case RecordType.WRITE: {
        const st = this.oldFile(m.p!)
        if (st === null) return
        this.preserveRange(L, full(m.p!), st, m.o!, m.o! + rec.data.length)
        return
      }
      case RecordType.TRUNCATE: {
        // truncate(2) follows a symlink.
        const f = this.follow(m.p!)
        if (f === null) return
        const st = f.st
        if (!st.isFile() || this.born.has(Number(st.ino))) return
        this.preserveRange(L, f.full, st, m.s!, Infinity)
        return
      }
      case RecordType.FALLOCATE: {
        const st = this.oldFile(m.p!)
        if (st === null) return
        const mode = m.f ?? 0
        const KEEP = sys.FALLOC_FL_KEEP_SIZE
        if ((mode & ~KEEP) === 0) this.ensureAttrs(L, full(m.p!), st) // allocation: content unchanged
        else if ((mode & ~(KEEP | sys.FALLOC_FL_PUNCH_HOLE | sys.FALLOC_FL_ZERO_RANGE)) === 0) this.preserveRange(L, full(m.p!), st, m.o!, m.o! + m.l!)
        else this.preserveRange(L, full(m.p!), st, m.o!, Infinity) // collapse/insert range shift everything after
        return
      }
      case RecordType.CREATE: {
        const st = lstatQuiet(full(m.p!))
        if (st === null) { this.ensureParent(L, m.p!, true); this.pending = full(m.p!); return }
        // O_TRUNC on an existing file: a truncate to 0 (plus owner and times).
        this.ensureParent(L, m.p!, false)
        if (this.born.has(Number(st.ino))) return
        if (st.isFile()) this.preserveRange(L, full(m.p!), st, 0, Infinity)
        else this.ensureAttrs(L, full(m.p!), st)
        return
      }
      case RecordType.MKDIR:
      case RecordType.MKNOD:
      case RecordType.SYMLINK: {
        const st = lstatQuiet(full(m.p!))
        this.ensureParent(L, m.p!, st === null)
        if (st === null) { this.pending = full(m.p!); return }
        // Exists: a replay sets its owner and times again.
        if (!this.born.has(Number(st.ino))) this.ensureAttrs(L, full(m.p!), st)
        return
      }
      case RecordType.LINK: {
        const st = lstatQuiet(full(m.p!))
        if (st !== null && !this.born.has(Number(st.ino))) this.ensureAttrs(L, full(m.p!), st) // nlink
        this.ensureParent(L, m.d!, true)
        return
      }
      case RecordType.UNLINK:
        this.ensureParent(L, m.p!, true)
        this.preserveRemoved(L, full(m.p!), 'unlink', null)
        return
      case RecordType.RMDIR:
        this.ensureParent(L, m.p!, true)
        this.preserveRemoved(L, full(m.p!), 'rmdir', null)
        return
      case RecordType.RENAME: {
        this.ensureParent(L, m.p!, true)
        this.ensureParent(L, m.d!, true)
        const st = lstatQuiet(full(m.p!))
        if (st === null) return
        // The moved inode: its ctime, a directory's '..'; and a moved symlink or device then needs
        // no live lookup by handle.
        if (!this.born.has(Number(st.ino))) this.ensureAttrs(L, full(m.p!), st)
        this.preserveRemoved(L, full(m.d!), 'rename', st)
        return
      }
      case RecordType.CHMOD: {
        const f = this.follow(m.p!) // chmod(2) follows a symlink
        if (f !== null && !this.born.has(Number(f.st.ino))) this.ensureAttrs(L, f.full, f.st)
        return
      }
      case RecordType.CHOWN:
      case RecordType.UTIMENS:
      case RecordType.SETXATTR:
      case RecordType.REMOVEXATTR: {
        const st = lstatQuiet(full(m.p!))
        if (st !== null && !this.born.has(Number(st.ino))) this.ensureAttrs(L, full(m.p!), st)
        return
      }
      default:
        // VOID, WRAP, IBC, and anything that changes nothing in the data directory.
    }
  }

  /** The regular file at `p` if it existed when the latest snapshot was taken. */
  private oldFile (p: string): fs.BigIntStats | null {
    const st = lstatQuiet(this.host.root + p)
    if (st === null || !st.isFile() || this.born.has(Number(st.ino))) return null
    return st
  }

  /** Resolves `p` following a final symlink, inside the data directory only. */
  private follow (p: string): { full: string, st: fs.BigIntStats } | null {
    const full = this.host.root + p
    const st = lstatQuiet(full)
    if (st === null) return null
    if (!st.isSymbolicLink()) return { full, st }
    let real: string
    try { real = fs.realpathSync.native(full) } catch { return null }
    if (!real.startsWith(this.host.root + '/')) return null
    const rst = lstatQuiet(real)
    return rst === null ? null : { full: real, st: rst }
  }

  /** The directory holding `p`: its attrs (mtime) and, for namespace changes, its listing. */
  private ensureParent (L: Snap, p: string, listing: boolean): void {
    const pfull = this.host.root + p.slice(0, p.lastIndexOf('/'))
    const st = lstatQuiet(pfull)
    if (st === null || !st.isDirectory() || this.born.has(Number(st.ino))) return
    this.ensureAttrs(L, pfull, st)
    if (listing) this.ensureListing(L, pfull, Number(st.ino))
  }

  /**
   * `full` is about to lose a name (unlink, rmdir, or be renamed over by `mover`): a directory's
   * attrs and listing; a file's attrs and, if this is its last name, the inode itself (keep/).
   */
  private preserveRemoved (L: Snap, full: string, kind: 'unlink' | 'rmdir' | 'rename', mover: fs.BigIntStats | null): void {
    const st = lstatQuiet(full)
    if (st === null) return
    const ino = Number(st.ino)
    if (mover !== null && Number(mover.ino) === ino) return // rename between two links of one inode: no-op
    if (this.born.has(ino)) {
      if (st.isDirectory() || Number(st.nlink) === 1) this.born.delete(ino) // the number is about to be free
      return
    }
    // Records that will fail for the types involved change nothing here.
    if (kind === 'unlink' && st.isDirectory()) return
    if (kind === 'rmdir' && !st.isDirectory()) return
    if (mover !== null && mover.isDirectory() !== st.isDirectory()) return
    this.ensureAttrs(L, full, st)
    if (st.isDirectory()) { this.ensureListing(L, full, ino); return }
    this.ensureKeep(L, full, st)
  }

  /**
   * Attrs of the inode at `full` into L unless L has them; returns the size L holds for it (the
   * size when L was taken: chunks beyond it are never needed).
   */
  private ensureAttrs (L: Snap, full: string, st: fs.BigIntStats): number {
    const ino = Number(st.ino)
    const known = this.sizes.get(ino)
    if (known !== undefined) return known
    const p = L.attrsPath(ino)
    let size: number
    if (fs.existsSync(p)) {
      size = (JSON.parse(fs.readFileSync(p, 'utf8')) as AttrsItem).size
    } else {
      const item = this.captureAttrs(full, st)
      L.sub('attrs')
      writeItem(L, `a-${ino}`, p, JSON.stringify(item), this.durable)
      size = item.size
    }
    if (this.sizes.size >= HAS_CACHE_MAX) this.sizes.clear()
    this.sizes.set(ino, size)
    return size
  }

  /** Keep links to `ino` in the store (they count in its nlink on the same filesystem). */
  keepLinks (ino: number): number {
    let n = 0
    for (const s of this.host.allSnaps()) {
      const st = lstatQuiet(s.keepPath(ino))
      if (st !== null && Number(st.ino) === ino) n++
    }
    return n
  }

  captureAttrs (full: string, st: fs.BigIntStats): AttrsItem {
    const ino = Number(st.ino)
    let nlink = Number(st.nlink)
    if (!st.isDirectory() && nlink > 1) nlink = Math.max(1, nlink - this.keepLinks(ino))
    const item: AttrsItem = {
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      nlink,
      rdev: Number(st.rdev),
      blocks: Number(st.blocks),
      atime: tsOf(st.atimeNs),
      mtime: tsOf(st.mtimeNs),
      ctime: tsOf(st.ctimeNs),
      xattrs: xattrsOf(full)
    }
    if (st.isSymbolicLink()) item.target = fs.readlinkSync(full)
    return item
  }

  private ensureListing (L: Snap, full: string, ino: number): void {
    const key = 'd' + ino
    if (this.has.has(key)) return
    const p = L.listingPath(ino)
    if (!fs.existsSync(p)) {
      const raw = sys.readdirEntries(full, true)
      const entries: ListingItem['entries'] = []
      for (let i = 0; i < raw.length; i += 4) {
        const name = raw[i] as string
        let type = (raw[i + 2] as number) << 12
        if (type === 0) { // DT_UNKNOWN
          const est = lstatQuiet(`${full}/${name}`)
          if (est === null) continue
          type = Number(est.mode) & S_IFMT
        }
        const h = raw[i + 3] as Buffer | null
        entries.push([name, raw[i + 1] as number, type, h === null ? null : h.toString('base64')])
      }
      L.sub('dirs')
      writeItem(L, `d-${ino}`, p, JSON.stringify({ entries } satisfies ListingItem), this.durable)
    }
    this.remember(key)
  }

  /** Keeps the inode of `full` (about to lose its last name) alive in L: a hard link, else a frozen copy. */
  private ensureKeep (L: Snap, full: string, st: fs.BigIntStats): void {
    const ino = Number(st.ino)
    const key = 'k' + ino
    if (this.has.has(key)) return
    // Other names remain: the inode stays live (found by handle); the last one to go keeps it.
    if (Number(st.nlink) > 1 && Number(st.nlink) - this.keepLinks(ino) > 1) return
    if (!L.copies.has(ino) && lstatQuiet(L.keepPath(ino)) === null) {
      L.sub('keep')
      try {
        fs.linkSync(full, L.keepPath(ino))
        if (this.durable) fsyncPath(`${L.dir}/keep`)
        this.pendingKeep = { full, ino, snap: L, copy: false }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? ''
        if (code !== 'EEXIST') {
          if (!['EXDEV', 'EMLINK', 'EPERM', 'EOPNOTSUPP', 'ENOTSUP'].includes(code)) throw err
          this.copyKeep(L, full, st)
          this.pendingKeep = { full, ino, snap: L, copy: true }
        }
      }
    }
    this.remember(key)
  }

  private copyKeep (L: Snap, full: string, st: fs.BigIntStats): void {
    const ino = Number(st.ino)
    L.sub('tmp')
    const tmp = L.tmpPath(`k-${ino}`)
    fs.rmSync(tmp, { force: true })
    if (st.isFile()) copySparse(full, tmp)
    else if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(full), tmp)
    else fs.writeFileSync(tmp, '', { mode: 0o600 }) // a device, fifo or socket: its attrs are all there is
    if (this.durable && st.isFile()) { const fd = fs.openSync(tmp, 'r'); try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) } }
    fs.renameSync(tmp, L.copyPath(ino))
    if (this.durable) fsyncPath(`${L.dir}/keep`)
    L.copies.add(ino)
  }

  /**
   * Attrs of the file, and its chunks overlapping [from, to) below the size L holds for it and its
   * current size (bytes beyond either are in no view of it).
   */
  private preserveRange (L: Snap, full: string, st: fs.BigIntStats, from: number, to: number): void {
    const ino = Number(st.ino)
    const held = this.ensureAttrs(L, full, st)
    const limit = Math.min(held, Number(st.size))
    const end = Math.min(to, limit)
    if (from >= end) return
    const first = Math.floor(from / CHUNK_BYTES)
    const last = Math.ceil(end / CHUNK_BYTES) // exclusive
    let fd: number | null = null
    let buf: Buffer | null = null
    try {
      for (let i = first; i < last; i++) {
        const key = `c${ino}:${i}`
        if (this.has.has(key)) continue
        const p = L.chunkPath(ino, i)
        if (!fs.existsSync(p)) {
          if (fd === null) { fd = openRead(full, fs.constants.O_NOFOLLOW); buf = Buffer.allocUnsafe(CHUNK_BYTES) }
          const len = Math.min(CHUNK_BYTES, limit - i * CHUNK_BYTES)
          const n = preadFull(fd, buf!, 0, len, i * CHUNK_BYTES)
          L.sub('chunks')
          L.sub(`chunks/${ino}`)
          if (isZero(buf!, n)) writeItem(L, `c-${ino}-${i}`, p, null, this.durable, n)
          else writeItem(L, `c-${ino}-${i}`, p, buf!.subarray(0, n), this.durable)
        }
        this.remember(key)
      }
    } finally {
      if (fd !== null) fs.closeSync(fd)
    }
  }
}
