/**
 * `MOUNT/.snapshots/NAME/...`: each snapshot of this host, read-only, beside the live tree (like
 * ZFS's `.zfs/snapshot` with snapdir=hidden: reachable by name, not listed in the root, so a walk or
 * a tar of the mount does not descend into every snapshot).
 *
 * This wraps the live op table: paths under /.snapshots go to the snapshot views, every change
 * there answers EROFS, everything else goes to the live ops unchanged. Views are read synchronously
 * on the event loop, so a reader never sees a copy-on-write half done.
 */
import { constants as osc } from 'node:os'
import { errnoFor, errnoError } from '../errors'
import type { FuseStat } from '../native'

const E = osc.errno
export const SNAPDIR = '/.snapshots'

/** What a snapshot view offers (src/snapshot). Paths are snapshot-relative, '/' is its root. */
export interface SnapshotView {
  lstat (p: string): { mode: number, uid: number, gid: number, size: number, nlink: number, ino: number, rdev: number, blocks: number, atimeNs: bigint, mtimeNs: bigint, ctimeNs: bigint }
  readdir (p: string): string[]
  readlink (p: string): string
  getxattr (p: string, name: string): Buffer
  listxattr (p: string): string[]
  open (p: string): number
  read (h: number, buf: Buffer, len: number, pos: number): number
  close (h: number): void
}

export interface SnapshotSource {
  names (): string[]
  view (name: string): SnapshotView | null
}

type Cb = (err: number, ...rest: unknown[]) => void
type Op = (...args: any[]) => void

const MUTATING: Record<string, number[]> = {
  create: [0], write: [0], truncate: [0], ftruncate: [0], utimens: [0], chmod: [0], chown: [0], mknod: [0], mkdir: [0],
  rmdir: [0], unlink: [0], rename: [0, 1], link: [0, 1], symlink: [1], setxattr: [0], removexattr: [0], fallocate: [0]
}

function S_ISDIR (mode: number): boolean { return (mode & 0o170000) === 0o040000 }

function isSnap (p: unknown): boolean {
  return typeof p === 'string' && (p === SNAPDIR || p.startsWith(SNAPDIR + '/'))
}

function statOfView (st: ReturnType<SnapshotView['lstat']>): FuseStat {
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    dev: 0,
    nlink: st.nlink,
    ino: st.ino,
    rdev: st.rdev,
    blksize: 4096,
    blocks: st.blocks,
    atime: Number(st.atimeNs / 1000n),
    mtime: Number(st.mtimeNs / 1000n),
    ctime: Number(st.ctimeNs / 1000n)
  }
}

function enoent (): Error { return errnoError('ENOENT', 'no such snapshot') }

/** A view's attributes, or the snapshot directory's own. */
export type SnapshotStat = ReturnType<SnapshotView['lstat']>

/**
 * The tree under /.snapshots by mount path (`/.snapshots`, `/.snapshots/NAME/...`), read-only and
 * synchronous: what both transports serve there (fuse-native's op table below, replicafs_ll's
 * forwarded requests in src/fuse/ll-adapter.ts). Errors are fs-style (errnoFor). Handles of open
 * files are numbered above 0x80000000, so fuse-native's table can tell them from the live ones.
 */
export class SnapshotTree {
  private readonly handles = new Map<number, { view: SnapshotView, h: number }>()
  private next = 0x80000000

  constructor (private readonly source: () => SnapshotSource | null) {}

  private split (p: string): { view: SnapshotView, rest: string } | null {
    if (p === SNAPDIR) return null
    const tail = p.slice(SNAPDIR.length + 1)
    const slash = tail.indexOf('/')
    const name = slash < 0 ? tail : tail.slice(0, slash)
    const view = this.source()?.view(name) ?? null
    if (view === null) throw enoent()
    return { view, rest: slash < 0 ? '/' : tail.slice(slash) }
  }

  lstat (p: string): SnapshotStat {
    const s = this.split(p)
    if (s !== null) return s.view.lstat(s.rest)
    const now = BigInt(Date.now()) * 1_000_000n
    return { mode: 0o40555, uid: 0, gid: 0, size: 0, nlink: 2, ino: 1, rdev: 0, blocks: 0, atimeNs: now, mtimeNs: now, ctimeNs: now }
  }

  /** Checks that `p` can be listed (ENOTDIR). */
  opendir (p: string): void {
    const s = this.split(p)
    if (s !== null && !S_ISDIR(s.view.lstat(s.rest).mode)) throw errnoError('ENOTDIR', 'not a directory')
  }

  /** The names in `p`, without '.' and '..'. */
  readdir (p: string): string[] {
    const s = this.split(p)
    return s === null ? this.source()?.names() ?? [] : s.view.readdir(s.rest)
  }

  readlink (p: string): string {
    const s = this.split(p)
    if (s === null) throw errnoError('EINVAL', 'not a symlink')
    return s.view.readlink(s.rest)
  }

  getxattr (p: string, name: string): Buffer {
    const s = this.split(p)
    if (s === null) throw errnoError('ENODATA', 'no such attribute')
    return s.view.getxattr(s.rest, name)
  }

  listxattr (p: string): string[] {
    const s = this.split(p)
    return s === null ? [] : s.view.listxattr(s.rest)
  }

  /** Opens a file for reading (EROFS for writing); returns its handle. */
  open (p: string, flags: number): number {
    if ((flags & 3) !== 0) throw errnoError('EROFS', 'snapshots are read-only')
    const s = this.split(p)
    if (s === null) throw errnoError('EISDIR', 'is a directory')
    const h = s.view.open(s.rest)
    do { this.next = this.next >= 0xfffffff0 ? 0x80000000 : this.next + 1 } while (this.handles.has(this.next))
    this.handles.set(this.next, { view: s.view, h })
    return this.next
  }

  has (fh: number): boolean { return this.handles.has(fh) }

  read (fh: number, buf: Buffer, len: number, pos: number): number {
    const sh = this.handles.get(fh)
    if (sh === undefined) throw errnoError('EBADF', 'no such snapshot handle')
    return sh.view.read(sh.h, buf, len, pos)
  }

  close (fh: number): void {
    const sh = this.handles.get(fh)
    if (sh === undefined) return
    this.handles.delete(fh)
    try { sh.view.close(sh.h) } catch {}
  }
}

/**
 * Wraps `live`. `source()` gives the current snapshots (null: none on this host).
 */
export function withSnapshots (live: Record<string, Op>, source: () => SnapshotSource | null): Record<string, Op> {
  const tree = new SnapshotTree(source)
  const answer = (cb: Cb, fn: () => unknown[]): void => {
    let res: unknown[]
    try { res = fn() } catch (err) { cb(errnoFor(err)); return }
    cb(0, ...res)
  }

  const out: Record<string, Op> = { ...live }
  for (const [name, idx] of Object.entries(MUTATING)) {
    const op = live[name]
    if (op === undefined) continue
    out[name] = (...args: unknown[]) => {
      if (idx.some((i) => isSnap(args[i]))) { (args[args.length - 1] as Cb)(-E.EROFS); return }
      op(...args)
    }
  }
  const route = (name: string, snap: (...args: any[]) => void): void => {
    const op = live[name]
    out[name] = (...args: unknown[]) => { if (isSnap(args[0])) snap(...args); else op(...args) }
  }
  route('getattr', (p: string, cb: Cb) => answer(cb, () => [statOfView(tree.lstat(p))]))
  route('fgetattr', (p: string, _fd: number, cb: Cb) => out.getattr(p, cb))
  route('access', (p: string, mode: number, cb: Cb) => answer(cb, () => {
    if ((mode & 2) !== 0) throw errnoError('EROFS', 'snapshots are read-only')
    tree.lstat(p)
    return []
  }))
  // Views need no directory handle: they are read by path, between records.
  route('opendir', (p: string, _flags: number, cb: Cb) => answer(cb, () => { tree.opendir(p); return [0] }))
  route('readdir', (p: string, cb: Cb) => answer(cb, () => [['.', '..', ...tree.readdir(p)]]))
  route('readlink', (p: string, cb: Cb) => answer(cb, () => [tree.readlink(p)]))
  route('open', (p: string, flags: number, cb: Cb) => answer(cb, () => [tree.open(p, flags)]))
  const liveRead = live.read
  out.read = (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
    if (!tree.has(fd)) { liveRead(p, fd, buf, len, pos, cb); return }
    try { cb(tree.read(fd, buf, len, pos)) } catch (err) { cb(errnoFor(err)) }
  }
  const liveRelease = live.release
  out.release = (p: string, fd: number, cb: Cb) => {
    if (!tree.has(fd)) { liveRelease(p, fd, cb); return }
    tree.close(fd)
    cb(0)
  }
  const liveFsync = live.fsync
  out.fsync = (p: string, datasync: number, fd: number, cb: Cb) => { if (tree.has(fd)) cb(0); else liveFsync(p, datasync, fd, cb) }
  route('getxattr', (p: string, name: string, _position: number, cb: Cb) => answer(cb, () => [tree.getxattr(p, name)]))
  route('listxattr', (p: string, cb: Cb) => answer(cb, () => [tree.listxattr(p)]))
  return out
}
