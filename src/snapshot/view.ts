/**
 * A read-only view of one snapshot, by snapshot-relative path ('/' is the data directory's root as
 * it was). Every operation is synchronous and resolves the path from the root:
 *
 *  - a directory's listing is its dirs/ item from the chain (this snapshot, then each newer one),
 *    else its live listing (unchanged since the snapshot);
 *  - an inode's attributes are its attrs/ item from the chain, else its live attributes;
 *  - a file's chunk i is chunks/<ino>/i from the chain (stopping at a frozen copy), else the live
 *    inode's bytes.
 *
 * The live inode of an entry is found, in order, at its parent's live path plus its name (valid
 * while the inode number there matches), through a keep/ link, or by its file handle
 * (open_by_handle_at; `/proc/self/fd/N` then serves as its path). Errors are fs-style, with `code`
 * ENOENT, ENOTDIR, EISDIR, EINVAL, ENODATA, EBADF or EIO (something the store should hold is
 * missing, or the snapshot is invalid), for the FUSE layer's errnoFor.
 *
 * Reads use O_NOATIME and the addon's readdir opens directories with O_NOATIME, so looking at a
 * snapshot does not change the live tree's atimes (readlink of a live symlink still does: the
 * kernel has no flag for it).
 */
import fs from 'node:fs'
import { sys } from '../native'
import { isInternalXattr } from '../format/data-cursor'
import {
  Snap, CHUNK_BYTES, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, type AttrsItem, type ListingItem, type Entry, type ItemCache,
  lstatQuiet, openRead, preadFull, nsOf, errnoError
} from './store'

export interface ViewHost {
  readonly root: string
  readonly mountFd: number
  readonly generation: number
  readonly items: ItemCache<unknown>
  chainFrom (s: Snap): Snap[]
  allSnaps (): readonly Snap[]
  keepLinks (ino: number): number
}

/** What lstat returns: times in nanoseconds since the epoch. */
export interface ViewStat {
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  ino: number
  rdev: number
  blocks: number
  atimeNs: bigint
  mtimeNs: bigint
  ctimeNs: bigint
}

/** Where a live inode is: `path` for lookups below it and path-based calls; `fd` when found by handle. */
interface LiveRef { path: string, fd: number | null }

interface Node {
  ino: number
  type: number
  name: string
  parent: Node | null
  handle: Buffer | null
  /** undefined: not looked for yet; null: not in the live tree. */
  live?: LiveRef | null
  /** Live stat found on the way (same operation). */
  st?: fs.BigIntStats
}

interface OpenFile { ino: number, size: number, fd: number | null }

/** Where chunk i of a file comes from. */
export type ChunkSource = { kind: 'chunk' | 'copy', path: string } | null

class Scope {
  readonly fds: number[] = []
  close (): void { for (const fd of this.fds) { try { fs.closeSync(fd) } catch { /* already closed */ } } }
  release (fd: number): void { const i = this.fds.indexOf(fd); if (i >= 0) this.fds.splice(i, 1) }
}

export class View {
  private readonly open_ = new Map<number, OpenFile>()
  private nextHandle = 1

  constructor (private readonly host: ViewHost, readonly snap: Snap) {}

  get name (): string { return this.snap.name }

  private check (): void {
    if (this.snap.deleted) throw errnoError('ENOENT', `snapshot ${this.snap.name} was deleted`)
    if (this.snap.invalid !== null) throw errnoError('EIO', `snapshot ${this.snap.name} is invalid: ${this.snap.invalid}`)
  }

  private op<T> (fn: (scope: Scope, chain: Snap[]) => T): T {
    this.check()
    const scope = new Scope()
    try {
      return fn(scope, this.host.chainFrom(this.snap))
    } finally {
      scope.close()
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Item lookups along the chain

  private cached<T> (s: Snap, kind: string, ino: number, file: string, parse: (raw: string) => T, weight: (v: T) => number): T | null {
    const key = `${this.host.generation}:${s.id}:${kind}:${ino}`
    const hit = this.host.items.get(key) as T | undefined
    if (hit !== undefined) return hit
    // Most lookups find no item (nothing changed since the snapshot): ask without an exception,
    // whose making cost more than the lookup itself (a tree walk does several per entry).
    if (!fs.existsSync(file)) return null
    let raw: string
    try { raw = fs.readFileSync(file, 'utf8') } catch (err) { if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null; throw err }
    const v = parse(raw)
    this.host.items.set(key, v, weight(v))
    return v
  }

  /** The attrs item of `ino` for this snapshot, or null (use the live inode's). */
  attrsOf (chain: Snap[], ino: number): AttrsItem | null {
    for (const s of chain) {
      const a = this.cached(s, 'a', ino, s.attrsPath(ino), (r) => JSON.parse(r) as AttrsItem, () => 1)
      if (a !== null) return a
      if (s.copies.has(ino)) throw errnoError('EIO', `snapshot store: a frozen copy of inode ${ino} in ${s.dir} has no attrs`)
    }
    return null
  }

  /** The listing of directory `ino` for this snapshot, or null (use the live listing). */
  listingOf (chain: Snap[], ino: number): Map<string, Entry> | null {
    for (const s of chain) {
      const l = this.cached(s, 'd', ino, s.listingPath(ino), (r) => {
        const m = new Map<string, Entry>()
        for (const [name, i, type, h] of (JSON.parse(r) as ListingItem).entries) m.set(name, { ino: i, type, handle: h === null ? null : Buffer.from(h, 'base64') })
        return m
      }, (m) => m.size + 1)
      if (l !== null) return l
    }
    return null
  }

  chunkSource (chain: Snap[], ino: number, i: number): ChunkSource {
    for (const s of chain) {
      const p = s.chunkPath(ino, i)
      if (fs.existsSync(p)) return { kind: 'chunk', path: p }
      if (s.copies.has(ino)) return { kind: 'copy', path: s.copyPath(ino) }
    }
    return null
  }

  // ---------------------------------------------------------------------------------------------
  // Resolution

  private resolve (p: string, scope: Scope, chain: Snap[]): Node {
    const root: Node = { ino: this.snap.meta.rootIno, type: S_IFDIR, name: '', parent: null, handle: null, live: { path: this.host.root, fd: null } }
    if (typeof p !== 'string' || !p.startsWith('/')) throw errnoError('ENOENT', 'no such file or directory', String(p))
    let node = root
    for (const comp of p.split('/')) {
      if (comp === '' || comp === '.') continue
      if (node.type !== S_IFDIR) throw errnoError('ENOTDIR', 'not a directory', p)
      if (comp === '..') throw errnoError('ENOENT', 'no such file or directory', p)
      const listing = this.listingOf(chain, node.ino)
      if (listing !== null) {
        const e = listing.get(comp)
        if (e === undefined) throw errnoError('ENOENT', 'no such file or directory', p)
        node = { ino: e.ino, type: e.type, name: comp, parent: node, handle: e.handle }
      } else {
        const pl = this.liveOf(node, scope)
        if (pl === null) throw errnoError('EIO', `snapshot ${this.snap.name}: directory inode ${node.ino} is neither preserved nor live`, p)
        const lp = `${pl.path}/${comp}`
        const st = lstatQuiet(lp)
        if (st === null) throw errnoError('ENOENT', 'no such file or directory', p)
        node = { ino: Number(st.ino), type: Number(st.mode) & S_IFMT, name: comp, parent: node, handle: null, live: { path: lp, fd: null }, st }
      }
    }
    return node
  }

  /** Finds the live inode of `node`, or null if it is not in the live tree any more. */
  private liveOf (node: Node, scope: Scope): LiveRef | null {
    if (node.live !== undefined) return node.live
    let ref: LiveRef | null = null
    const matches = (st: fs.BigIntStats | null): boolean => st !== null && Number(st.ino) === node.ino && (Number(st.mode) & S_IFMT) === node.type
    if (node.parent !== null) {
      const pl = this.liveOf(node.parent, scope)
      if (pl !== null) {
        const lp = `${pl.path}/${node.name}`
        const st = lstatQuiet(lp)
        if (matches(st)) { ref = { path: lp, fd: null }; node.st = st! }
      }
    }
    if (ref === null && node.type !== S_IFDIR) {
      for (const s of this.host.allSnaps()) {
        const kp = s.keepPath(node.ino)
        const st = lstatQuiet(kp)
        if (matches(st)) { ref = { path: kp, fd: null }; node.st = st!; break }
      }
    }
    if (ref === null && node.handle !== null) {
      const flags = node.type === S_IFDIR
        ? fs.constants.O_RDONLY | fs.constants.O_DIRECTORY
        : node.type === S_IFREG ? fs.constants.O_RDONLY | (fs.constants.O_NOATIME ?? 0) : sys.O_PATH | fs.constants.O_NOFOLLOW
      let fd = -1
      try { fd = sys.openByHandle(this.host.mountFd, node.handle, flags) } catch { /* ESTALE: gone */ }
      if (fd >= 0) {
        scope.fds.push(fd)
        const st = fs.fstatSync(fd, { bigint: true })
        if (matches(st)) { ref = { path: `/proc/self/fd/${fd}`, fd }; node.st = st }
      }
    }
    node.live = ref
    return ref
  }

  private liveStat (node: Node, ref: LiveRef): fs.BigIntStats {
    if (node.st !== undefined) return node.st
    const st = ref.fd !== null ? fs.fstatSync(ref.fd, { bigint: true }) : fs.lstatSync(ref.path, { bigint: true })
    node.st = st
    return st
  }

  private mustLive (node: Node, scope: Scope, p: string): LiveRef {
    const ref = this.liveOf(node, scope)
    if (ref === null) throw errnoError('EIO', `snapshot ${this.snap.name}: inode ${node.ino} is neither preserved nor live`, p)
    return ref
  }

  // ---------------------------------------------------------------------------------------------
  // Operations

  lstat (p: string): ViewStat {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      const a = this.attrsOf(chain, node.ino)
      if (a !== null) {
        return { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, nlink: a.nlink, ino: node.ino, rdev: a.rdev, blocks: a.blocks, atimeNs: nsOf(a.atime), mtimeNs: nsOf(a.mtime), ctimeNs: nsOf(a.ctime) }
      }
      const st = this.liveStat(node, this.mustLive(node, scope, p))
      let nlink = Number(st.nlink)
      if (node.type !== S_IFDIR && nlink > 1) nlink = Math.max(1, nlink - this.host.keepLinks(node.ino))
      return {
        mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size), nlink, ino: node.ino, rdev: Number(st.rdev), blocks: Number(st.blocks), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs
      }
    })
  }

  readdir (p: string): string[] {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      if (node.type !== S_IFDIR) throw errnoError('ENOTDIR', 'not a directory', p)
      const listing = this.listingOf(chain, node.ino)
      if (listing !== null) return [...listing.keys()]
      const raw = sys.readdirEntries(this.mustLive(node, scope, p).path, false)
      const names: string[] = []
      for (let i = 0; i < raw.length; i += 4) names.push(raw[i] as string)
      return names
    })
  }

  /**
   * A hint, as sys.willNeed: starts the kernel's read-ahead of the first `bytes` of these names of
   * directory `p`, where that directory is live (a walk of an unchanged tree reads its files from
   * the data directory). Nothing fails.
   */
  willNeed (p: string, names: string[], bytes: number): void {
    try {
      this.op((scope, chain) => {
        const node = this.resolve(p, scope, chain)
        if (node.type !== S_IFDIR) return
        const ref = this.liveOf(node, scope)
        if (ref !== null && ref.fd === null) sys.willNeed(ref.path, names, bytes)
      })
    } catch { /* a hint */ }
  }

  readlink (p: string): string {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      if (node.type !== S_IFLNK) throw errnoError('EINVAL', 'invalid argument', p)
      const a = this.attrsOf(chain, node.ino)
      if (a !== null) {
        if (a.target === undefined) throw errnoError('EIO', 'preserved symlink has no target', p)
        return a.target
      }
      const ref = this.mustLive(node, scope, p)
      return ref.fd !== null ? sys.readlinkFd(ref.fd) : fs.readlinkSync(ref.path)
    })
  }

  listxattr (p: string): string[] {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      const a = this.attrsOf(chain, node.ino)
      if (a !== null) return a.xattrs.map(([n]) => n)
      const ref = this.mustLive(node, scope, p)
      try {
        return (ref.fd !== null ? this.fdXattr(node, p, () => sys.flistxattr(ref.fd!)) : sys.llistxattr(ref.path)).filter((n) => !isInternalXattr(n))
      } catch (err) {
        if (['ENOTSUP', 'EOPNOTSUPP'].includes((err as NodeJS.ErrnoException).code ?? '')) return []
        throw err
      }
    })
  }

  getxattr (p: string, name: string): Buffer {
    return this.op((scope, chain) => {
      if (isInternalXattr(name)) throw errnoError('ENODATA', 'no data available', p)
      const node = this.resolve(p, scope, chain)
      const a = this.attrsOf(chain, node.ino)
      if (a !== null) {
        const x = a.xattrs.find(([n]) => n === name)
        if (x === undefined) throw errnoError('ENODATA', 'no data available', p)
        return Buffer.from(x[1], 'base64')
      }
      const ref = this.mustLive(node, scope, p)
      return ref.fd !== null ? this.fdXattr(node, p, () => sys.fgetxattr(ref.fd!, name)) : sys.lgetxattr(ref.path, name)
    })
  }

  private fdXattr<T> (node: Node, p: string, fn: () => T): T {
    // An O_PATH descriptor (symlink, device) cannot read xattrs; their attrs are preserved whenever
    // they move, so this is not reached.
    if (node.type !== S_IFDIR && node.type !== S_IFREG) throw errnoError('EIO', 'cannot read the xattrs of a moved special file', p)
    return fn()
  }

  /** Opens a regular file for reading; returns a handle for read/close. */
  open (p: string): number {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      if (node.type === S_IFDIR) throw errnoError('EISDIR', 'is a directory', p)
      if (node.type === S_IFLNK) throw errnoError('ELOOP', 'too many symbolic links encountered', p)
      if (node.type !== S_IFREG) throw errnoError('EINVAL', 'not a regular file', p)
      const a = this.attrsOf(chain, node.ino)
      const ref = this.liveOf(node, scope)
      let fd: number | null = null
      if (ref !== null) {
        if (ref.fd !== null) { fd = ref.fd; scope.release(fd) } else fd = openRead(ref.path, fs.constants.O_NOFOLLOW)
      }
      let size: number
      if (a !== null) size = a.size
      else if (fd !== null) size = Number(fs.fstatSync(fd, { bigint: true }).size)
      else throw errnoError('EIO', `snapshot ${this.snap.name}: inode ${node.ino} is neither preserved nor live`, p)
      const h = this.nextHandle++
      this.open_.set(h, { ino: node.ino, size, fd })
      return h
    })
  }

  /** Reads up to `len` bytes at `pos` into `buf` (from offset 0); returns how many (0 at EOF). */
  read (h: number, buf: Buffer, len: number, pos: number): number {
    const f = this.open_.get(h)
    if (f === undefined) throw errnoError('EBADF', 'bad file descriptor')
    this.check()
    const chain = this.host.chainFrom(this.snap)
    const end = Math.min(pos + Math.min(len, buf.length), f.size)
    let done = 0
    for (let off = pos; off < end;) {
      const i = Math.floor(off / CHUNK_BYTES)
      const n = Math.min((i + 1) * CHUNK_BYTES, end) - off
      const src = this.chunkSource(chain, f.ino, i)
      let got: number
      if (src !== null) {
        const fd = openRead(src.path)
        try { got = preadFull(fd, buf, done, n, src.kind === 'chunk' ? off - i * CHUNK_BYTES : off) } finally { fs.closeSync(fd) }
      } else {
        if (f.fd === null) throw errnoError('EIO', `snapshot ${this.snap.name}: chunk ${i} of inode ${f.ino} is neither preserved nor live`)
        got = preadFull(f.fd, buf, done, n, off)
      }
      if (got < n) buf.fill(0, done + got, done + n) // a hole or bytes past a shorter end: zeros
      done += n
      off += n
    }
    return done
  }

  close (h: number): void {
    const f = this.open_.get(h)
    if (f === undefined) return
    this.open_.delete(h)
    if (f.fd !== null) fs.closeSync(f.fd)
  }

  /** Closes every open handle (the snapshot is going away). */
  closeAll (): void {
    for (const h of [...this.open_.keys()]) this.close(h)
  }

  // ---------------------------------------------------------------------------------------------
  // For restore

  /** Whether chunk i of an open file comes from the store (else it is the live inode's, unchanged). */
  chunkPreserved (h: number, i: number): boolean {
    const f = this.open_.get(h)
    if (f === undefined) throw errnoError('EBADF', 'bad file descriptor')
    return this.chunkSource(this.host.chainFrom(this.snap), f.ino, i) !== null
  }

  /**
   * A path inside the data directory (relative, starting with '/') where the inode the view shows
   * at `p` is live now, verified by inode number, or null.
   */
  liveDataPath (p: string): string | null {
    return this.op((scope, chain) => {
      const node = this.resolve(p, scope, chain)
      const ref = this.liveOf(node, scope)
      if (ref === null) return null
      let real: string
      try {
        if (ref.fd !== null) real = fs.readlinkSync(`/proc/self/fd/${ref.fd}`)
        else {
          const slash = ref.path.lastIndexOf('/')
          real = fs.realpathSync.native(ref.path.slice(0, slash) || '/') + ref.path.slice(slash)
        }
      } catch { return null }
      const root = this.host.root
      if (!real.startsWith(root + '/')) return null
      const st = lstatQuiet(real)
      if (st === null || Number(st.ino) !== node.ino || (Number(st.mode) & S_IFMT) !== node.type) return null
      return real.slice(root.length)
    })
  }
}
