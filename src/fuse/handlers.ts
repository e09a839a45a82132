/**
 * The FUSE operations, one named method each: a reader can start at the FUSE edge and follow a
 * write (`write` -> AdapterRvg.write) or a rename (`rename` -> AdapterRvg.mutate(RENAME)) by name.
 * Each method normalises its arguments, calls the RVG (changes) or reads the data directory
 * (reads), and answers; errors become negative errnos with errnoFor(), the only place that
 * happens.
 *
 * The Primary answers a write before applying it (src/rvg/primary.ts), and only a write changes a
 * file behind the log's back: so a stat or read of a file with writes in flight waits for the
 * RVG's barrier; names, links, modes, owners and xattrs are changed only by records applied before
 * they are answered, and their reads never wait (the kernel asks for security.capability before
 * every write: getxattr must never wait).
 *
 * fuse-native specifics: times cross the bridge in signed microseconds (src/native/fuse_bridge.c);
 * the write buffer is valid only until the reply, so the SRL record is written from it before we
 * answer and the data-directory write copies the record's data from the ring afterwards; handles
 * are 32-bit numbers we allocate, each owning one data-directory descriptor. Never touch the mount
 * synchronously from this process: the event loop serves it.
 */
import fs from 'node:fs'
import { constants as osc } from 'node:os'
import { sys, callerContext, UTIME_NOW_US, UTIME_OMIT_US, type FuseStat } from '../native'
import { RecordType, nowTimespec, type RecordMeta, type Timespec } from '../format/record'
import { errnoFor, errnoError } from '../errors'
import { isInternalXattr } from '../format/data-cursor'

const E = osc.errno

/**
 * What the FUSE edge needs from the RVG behind the mount (src/rvg/primary.ts, or the Secondary's
 * read-only view in src/daemon): its data directory, the journal every change goes through, and
 * the barrier that reads of a file with writes in flight wait for.
 */
export interface AdapterRvg {
  /** The data directory. */
  readonly root: string
  /** Resolves once every record journaled so far is applied to the data directory. */
  barrier (): Promise<void>
  /** Whether the data-directory inode `ino` has answered writes not applied yet. */
  writesPending (ino: number): boolean
  /** Journals a write; resolves with the bytes written once it is in the SRL. */
  write (p: string, buf: Buffer, offset: number): Promise<number>
  /** Journals and applies any other change; resolves with its sequence number. */
  mutate (type: RecordType, meta: RecordMeta): Promise<number>
  /** fsync/fdatasync from the application: makes the SRL durable. */
  sync (fd?: number, datasync?: boolean): Promise<void>
  /** Why every change is refused (EROFS), if it is: a Primary another host took over from. */
  readonly refusing?: string | null
  /** Hears which inodes have writes in flight (a transport whose reads wait in C: src/fuse/ll-adapter.ts). */
  watchPending?: (fn: ((ino: number, busy: boolean) => void) | null) => void
  /** The SRL, for a transport that makes it durable itself on fsync (src/native/ll.c logSync); null: none (journal-less). */
  readonly log?: LogSyncTarget | null
}

/** What a transport needs to answer fsync with an fdatasync of the SRL's ring itself. */
export interface LogSyncTarget {
  /** The ring's descriptor. */
  readonly fd: number
  /** [last sequence number, head, handsOff] (src/srl/index.ts Srl.published). */
  readonly published: Float64Array
  /** The transport's fdatasync made records up to `seq` (ending at `head`) durable. */
  synced (seq: number, head: number): void
  /** The transport's fdatasync failed with `errno`: the RVG is failed (the SRL's durability is unknown). */
  failed (errno: number): void
}

export type Cb = (err: number, ...rest: unknown[]) => void
type ByteCb = (bytesOrErr: number) => void

function statOf (st: fs.BigIntStats): FuseStat {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    dev: Number(st.dev),
    nlink: Number(st.nlink),
    ino: Number(st.ino),
    rdev: Number(st.rdev),
    blksize: Number(st.blksize),
    blocks: Number(st.blocks),
    atime: Number(st.atimeNs / 1000n),
    mtime: Number(st.mtimeNs / 1000n),
    ctime: Number(st.ctimeNs / 1000n)
  }
}

/** A time from the bridge (signed microseconds since the epoch, or a sentinel) as a record's Timespec. */
export function timespecOf (us: number): Timespec | null {
  if (us === UTIME_OMIT_US) return null
  if (us === UTIME_NOW_US) return nowTimespec()
  const s = Math.floor(us / 1e6)
  return [s, (us - s * 1e6) * 1000] // nanoseconds in [0, 1e9), also before 1970
}

/**
 * A directory's entries with their inode numbers and types (d_ino, d_type), as getdents gives
 * them: without these libfuse answers d_ino 0xffffffff and DT_UNKNOWN. `.` and `..` are the
 * directory and its parent; at the mount's root `..` is the root itself, as on a filesystem's root.
 */
function listing (dir: string, isRoot: boolean): [string[], FuseStat[]] {
  const raw = sys.readdirEntries(dir)
  const names = ['.', '..']
  const self = fs.lstatSync(dir)
  const up = isRoot ? self : fs.lstatSync(dir + '/..')
  const stats: FuseStat[] = [entryStat(self.mode, self.ino), entryStat(up.mode, up.ino)]
  for (let i = 0; i < raw.length; i += 4) {
    names.push(raw[i] as string)
    stats.push(entryStat((raw[i + 2] as number) << 12, raw[i + 1] as number))
  }
  return [names, stats]
}

/** What libfuse takes from a directory entry's stat: the inode number, and the type bits of the mode. */
function entryStat (mode: number, ino: number): FuseStat {
  return { mode: mode & 0o170000, ino, atime: 0, mtime: 0, ctime: 0 }
}

/**
 * The owner a new entry gets, as the kernel would give it: the caller's fsuid, and its fsgid unless
 * the parent directory is setgid (then the parent's group). `who` is FuseHandlers.caller(), taken
 * synchronously at the start of the op's handler (fuse-native's context is only valid then).
 */
function newOwner (root: string, p: string, who: { uid: number, gid: number } | null): { u: number, g: number } | Record<string, never> {
  if (who === null) return {}
  let g = who.gid
  try {
    const parent = fs.statSync(root + p.slice(0, p.lastIndexOf('/')))
    if (parent.mode & 0o2000) g = parent.gid // S_ISGID
  } catch {}
  return { u: who.uid, g }
}

/** An open file or directory: our descriptor in the data directory; a directory's libfuse node. */
interface Handle { fd: number, ino?: number, node?: number }

/** (uid_t)-1 / (gid_t)-1 in chown: leave as is. */
const ID_UNCHANGED = 0xffffffff

export class FuseHandlers {
  private readonly handles = new Map<number, Handle>()
  private nextHandle = 1

  /** The caller of the op being started, when the transport says it (replicafs_ll); else fuse-native's context. */
  private asCaller: { uid: number, gid: number } | null = null

  /** Runs `fn` (which starts an op) as the request of `who`: new entries get its owner. */
  as (who: { uid: number, gid: number }, fn: () => void): void {
    this.asCaller = who
    try { fn() } finally { this.asCaller = null }
  }

  private caller (): { uid: number, gid: number } | null { return this.asCaller ?? callerContext() }

  /** `readOnly`: the Secondary's mount; every change answers EROFS. */
  constructor (private rvg: AdapterRvg, private readOnly: boolean) {}

  /**
   * Serves from another RVG from the next operation on: a role transfer (src/daemon) keeps the
   * mount and its open files. Operations already running finish on the one they began on.
   */
  serve (rvg: AdapterRvg, readOnly: boolean): void {
    this.rvg = rvg
    this.readOnly = readOnly
  }

  /** The operations fuse-native calls, by name. */
  table (): Record<string, (...args: any[]) => void> {
    const names = ['getattr', 'fgetattr', 'access', 'statfs', 'readdir', 'readlink', 'open', 'opendir', 'releasedir', 'getattrNode',
      'create', 'read', 'write', 'release', 'flush', 'fsync', 'fsyncdir', 'truncate', 'ftruncate', 'utimens', 'chmod', 'chown',
      'mknod', 'mkdir', 'rmdir', 'unlink', 'rename', 'link', 'symlink', 'setxattr', 'getxattr', 'listxattr', 'removexattr', 'fallocate'] as const
    const ops: Record<string, (...args: any[]) => void> = {}
    for (const name of names) ops[name] = (this[name] as (...args: any[]) => void).bind(this)
    return ops
  }

  /** Files and directories open through the mount now (released ones excluded). */
  get openHandles (): number { return this.handles.size }

  /** The data-directory inode handle `fh` has open, or null (no such handle). */
  inoOf (fh: number): number | null {
    const h = this.handles.get(fh)
    if (h === undefined) return null
    try { return h.ino ??= fs.fstatSync(h.fd).ino } catch { return null }
  }

  /** Journals one record of `type` (applied before the answer) and calls back 0 or -errno (a transport that builds records itself). */
  journalRecord (type: RecordType, meta: RecordMeta, cb: Cb): void { this.journal(cb, type, meta) }

  /** Closes every handle's descriptor (the mount is gone). */
  closeAll (): void {
    for (const h of this.handles.values()) { try { fs.closeSync(h.fd) } catch {} }
    this.handles.clear()
  }

  // --- reads -----------------------------------------------------------------------------------

  /** lstat of `p`, after the writes in flight to its inode (if any) are applied. */
  getattr (p: string, cb: Cb): void {
    let st: fs.BigIntStats
    try { st = fs.lstatSync(this.full(p), { bigint: true }) } catch (err) { cb(errnoFor(err)); return }
    if (!this.rvg.writesPending(Number(st.ino))) { cb(0, statOf(st)); return }
    this.afterBarrier(cb, () => [statOf(fs.lstatSync(this.full(p), { bigint: true }))])
  }

  /** fuse-native passes no handle: the same as getattr. */
  fgetattr (p: string, _fd: number, cb: Cb): void { this.getattr(p, cb) }

  /**
   * The attributes of a directory libfuse can no longer name (removed, or renamed over, while a
   * process holds it open), from the descriptor opendir kept, as ext4 answers fstat() of it.
   */
  getattrNode (node: number, cb: Cb): void {
    for (const h of this.handles.values()) {
      if (h.node === node) { this.now(cb, () => [statOf(fs.fstatSync(h.fd, { bigint: true }))]); return }
    }
    cb(-E.ENOENT)
  }

  access (p: string, mode: number, cb: Cb): void {
    this.now(cb, () => { fs.accessSync(this.full(p), mode); return [] })
  }

  statfs (_p: string, cb: Cb): void {
    this.afterBarrier(cb, () => {
      const s = fs.statfsSync(this.rvg.root)
      return [{ bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 }]
    })
  }

  readdir (p: string, cb: Cb): void { this.now(cb, () => listing(this.full(p), p === '/')) }

  readlink (p: string, cb: Cb): void { this.now(cb, () => [fs.readlinkSync(this.full(p))]) }

  // The data cursor (an xattr of the data directory's root, src/format/data-cursor.ts) is never
  // shown, set or removed through the mount.
  getxattr (p: string, name: string, _position: number, cb: Cb): void {
    this.now(cb, () => {
      if (isInternalXattr(name)) throw errnoError('ENODATA', 'no such attribute')
      return [sys.lgetxattr(this.full(p), name)]
    })
  }

  listxattr (p: string, cb: Cb): void { this.now(cb, () => [sys.llistxattr(this.full(p)).filter((n) => !isInternalXattr(n))]) }

  // --- handles ---------------------------------------------------------------------------------

  open (p: string, flags: number, cb: Cb): void {
    if ((this.readOnly || this.rvg.refusing != null) && (flags & 3) !== fs.constants.O_RDONLY) { cb(-E.EROFS); return }
    this.now(cb, () => [this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW))])
  }

  /**
   * A directory is held open while a process has it open, with the libfuse node it was opened on
   * (see getattrNode).
   */
  opendir (p: string, _flags: number, cb: Cb): void {
    const node = callerContext()?.nodeid
    this.now(cb, () => [this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW), node)])
  }

  release (_p: string, fd: number, cb: Cb): void { this.closeHandle(fd, cb) }

  releasedir (_p: string, fd: number, cb: Cb): void { this.closeHandle(fd, cb) }

  flush (_p: string, _fd: number, cb: Cb): void { cb(0) }

  read (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: ByteCb): void {
    const h = this.handles.get(fd)
    if (!h) { cb(-E.EBADF); return }
    if (this.readOnly) {
      // On the Secondary, read on the event loop, as the apply loop writes: a read sees the
      // file between two records, never inside one (write-order fidelity for readers).
      let n: number
      try { n = fs.readSync(h.fd, buf, 0, len, pos) } catch (err) { cb(errnoFor(err)); return }
      cb(n)
      return
    }
    const done = (err: Error | null, n: number): void => cb(err ? errnoFor(err) : n)
    let pending: boolean
    try { pending = this.rvg.writesPending(h.ino ??= fs.fstatSync(h.fd).ino) } catch (err) { cb(errnoFor(err)); return }
    if (!pending) { fs.read(h.fd, buf, 0, len, pos, done); return }
    this.rvg.barrier().then(() => fs.read(h.fd, buf, 0, len, pos, done), (err) => cb(errnoFor(err)))
  }

  // --- changes: each is one record, journaled before it is answered ----------------------------

  write (p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: ByteCb): void {
    if (this.readOnly) { cb(-E.EROFS); return }
    this.rvg.write(p, len === buf.length ? buf : buf.subarray(0, len), pos).then(cb, (err) => cb(errnoFor(err)))
  }

  /** CREATE, then a read handle (create gets no open flags from fuse-native). */
  create (p: string, mode: number, cb: Cb): void {
    if (this.readOnly) { cb(-E.EROFS); return }
    this.rvg.mutate(RecordType.CREATE, { p, m: mode & 0o7777, ...newOwner(this.rvg.root, p, this.caller()), t: nowTimespec() })
      .then(() => this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)))
      .then((h) => cb(0, h), (err) => cb(errnoFor(err)))
  }

  fsync (_p: string, datasync: number, fd: number, cb: Cb): void {
    this.rvg.sync(this.handles.get(fd)?.fd, datasync !== 0).then(() => cb(0), (err) => cb(errnoFor(err)))
  }

  fsyncdir (_p: string, _datasync: number, _fd: number, cb: Cb): void {
    this.rvg.sync().then(() => cb(0), (err) => cb(errnoFor(err)))
  }

  truncate (p: string, size: number, cb: Cb): void { this.journal(cb, RecordType.TRUNCATE, { p, s: size, t: nowTimespec() }) }

  ftruncate (p: string, _fd: number, size: number, cb: Cb): void { this.truncate(p, size, cb) }

  utimens (p: string, atime: number, mtime: number, cb: Cb): void {
    this.journal(cb, RecordType.UTIMENS, { p, a: timespecOf(atime), t: timespecOf(mtime) })
  }

  chmod (p: string, mode: number, cb: Cb): void { this.journal(cb, RecordType.CHMOD, { p, m: mode & 0o7777 }) }

  /** The record carries the resulting owner (a -1 id is read from the file). */
  chown (p: string, uid: number, gid: number, cb: Cb): void {
    this.change(cb, async () => {
      await this.rvg.barrier()
      const st = uid === ID_UNCHANGED || gid === ID_UNCHANGED ? fs.lstatSync(this.full(p)) : null
      await this.rvg.mutate(RecordType.CHOWN, { p, u: uid === ID_UNCHANGED ? st!.uid : uid, g: gid === ID_UNCHANGED ? st!.gid : gid })
    })
  }

  mknod (p: string, mode: number, dev: number, cb: Cb): void {
    this.journal(cb, RecordType.MKNOD, { p, m: mode, r: dev, ...newOwner(this.rvg.root, p, this.caller()), t: nowTimespec() })
  }

  mkdir (p: string, mode: number, cb: Cb): void {
    this.journal(cb, RecordType.MKDIR, { p, m: mode & 0o7777, ...newOwner(this.rvg.root, p, this.caller()), t: nowTimespec() })
  }

  symlink (target: string, p: string, cb: Cb): void {
    this.journal(cb, RecordType.SYMLINK, { p, d: target, ...newOwner(this.rvg.root, p, this.caller()), t: nowTimespec() })
  }

  unlink (p: string, cb: Cb): void { this.journal(cb, RecordType.UNLINK, { p, t: nowTimespec() }) }

  link (src: string, dest: string, cb: Cb): void { this.journal(cb, RecordType.LINK, { p: src, d: dest, t: nowTimespec() }) }

  fallocate (p: string, mode: number, offset: number, length: number, _fd: number, cb: Cb): void {
    this.journal(cb, RecordType.FALLOCATE, { p, f: mode, o: offset, l: length, t: nowTimespec() })
  }

  // Errors the kernel cannot know about are found against the data directory, after the barrier,
  // before anything is logged: the record itself then always succeeds.

  rmdir (p: string, cb: Cb): void {
    this.change(cb, async () => {
      await this.rvg.barrier()
      if (fs.readdirSync(this.full(p)).length > 0) throw errnoError('ENOTEMPTY', 'directory not empty')
      await this.rvg.mutate(RecordType.RMDIR, { p, t: nowTimespec() })
    })
  }

  rename (src: string, dest: string, cb: Cb): void {
    this.change(cb, async () => {
      await this.rvg.barrier()
      let dst: fs.Stats | null = null
      try { dst = fs.lstatSync(this.full(dest)) } catch { dst = null }
      if (dst?.isDirectory() && fs.readdirSync(this.full(dest)).length > 0) throw errnoError('ENOTEMPTY', 'directory not empty')
      await this.rvg.mutate(RecordType.RENAME, { p: src, d: dest, t: nowTimespec() })
    })
  }

  setxattr (p: string, name: string, value: Buffer, _position: number, flags: number, cb: Cb): void {
    this.change(cb, async () => {
      if (isInternalXattr(name)) throw errnoError('EPERM', 'the attribute is replicafs\'s own')
      await this.rvg.barrier()
      let exists = true
      try { sys.lgetxattr(this.full(p), name) } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENODATA') throw err; exists = false }
      if ((flags & sys.XATTR_CREATE) && exists) throw errnoError('EEXIST', 'the attribute exists')
      if ((flags & sys.XATTR_REPLACE) && !exists) throw errnoError('ENODATA', 'no such attribute')
      await this.rvg.mutate(RecordType.SETXATTR, { p, n: name, x: Buffer.from(value), f: 0 })
    })
  }

  removexattr (p: string, name: string, cb: Cb): void {
    this.change(cb, async () => {
      if (isInternalXattr(name)) throw errnoError('EPERM', 'the attribute is replicafs\'s own')
      await this.rvg.barrier()
      sys.lgetxattr(this.full(p), name) // ENODATA before anything is logged
      await this.rvg.mutate(RecordType.REMOVEXATTR, { p, n: name })
    })
  }

  // --- helpers ---------------------------------------------------------------------------------

  private full (p: string): string { return this.rvg.root + p }

  private allocHandle (fd: number, node?: number): number {
    // Handles are 32-bit in fuse-native; wrap around, skipping ones still open.
    do { this.nextHandle = (this.nextHandle % 0xfffffff0) + 1 } while (this.handles.has(this.nextHandle))
    this.handles.set(this.nextHandle, node === undefined ? { fd } : { fd, node })
    return this.nextHandle
  }

  private closeHandle (fd: number, cb: Cb): void {
    const h = this.handles.get(fd)
    if (h) { this.handles.delete(fd); fs.close(h.fd, () => cb(0)) } else cb(0)
  }

  /** Runs `fn` after the barrier (reads a write in flight could change) and replies with its result or errno. */
  private afterBarrier<T extends unknown[]> (cb: Cb, fn: () => T | Promise<T>): void {
    this.rvg.barrier().then(fn).then((res) => cb(0, ...res), (err) => cb(errnoFor(err)))
  }

  /** Runs `fn` at once (reads no write in flight can change) and replies with its result or errno. */
  private now<T extends unknown[]> (cb: Cb, fn: () => T): void {
    let res: T
    try { res = fn() } catch (err) { cb(errnoFor(err)); return }
    cb(0, ...res)
  }

  /** Runs a change and replies 0 or errno. */
  private change (cb: Cb, fn: () => Promise<unknown>): void {
    if (this.readOnly) { cb(-E.EROFS); return }
    fn().then(() => cb(0), (err) => cb(errnoFor(err)))
  }

  /** Journals one record (applied before the answer) and replies 0 or errno. */
  private journal (cb: Cb, type: RecordType, meta: RecordMeta): void {
    this.change(cb, () => this.rvg.mutate(type, meta))
  }
}
