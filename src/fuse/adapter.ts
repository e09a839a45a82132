/**
 * The FUSE edge: fuse-native's op table over a PrimaryRvg. Handlers are thin: they normalise
 * arguments, call the RVG (mutations) or read the data directory (reads), and turn errors into
 * negative errnos with errnoFor(), the only place that happens. The Primary answers a write before
 * applying it (src/rvg/primary.ts), and only a write changes a file behind the log's back: so a
 * stat or read of a file with writes in flight waits for the RVG's barrier; names, links, modes,
 * owners and xattrs are changed only by records applied before they are answered, and their
 * reads never wait.
 *
 * fuse-native specifics handled here:
 * - Mount options are built only from constants: fuse-native joins option values unescaped into
 *   libfuse's `-o` string, so no user-supplied text (paths) ever goes into it. `big_writes` (128 KiB
 *   writes instead of 4 KiB) and `use_ino` have no fuse-native option; a subclass appends them to
 *   the option string fuse-native builds (see ReplicafsFuse._fuseOptions).
 * - Times cross the bridge in microseconds (our patched bridge, src/native/fuse_bridge.c).
 * - The write buffer is only valid until the reply: the SRL record is written from it before we
 *   answer; the data-directory write copies the record's data from the SRL ring afterwards.
 * - Handles are 32-bit numbers we allocate; each read handle owns one data-directory descriptor.
 * - Never touch the mount synchronously from this process: the event loop serves it.
 */
import fs from 'node:fs'
import { constants as osc } from 'node:os'
import { loadFuse, unmountFuse, sys, callerContext, UTIME_NOW_US, UTIME_OMIT_US, type FuseInstance, type FuseStat } from '../native'
import type { PrimaryRvg } from '../rvg/primary'
import { withSnapshots, type SnapshotSource } from './snapshots'
import type { MountOptions } from './mount-options'

/** What the adapter needs from an RVG: the Primary's, or the Secondary's read-only view. */
export type AdapterRvg = Pick<PrimaryRvg, 'root' | 'barrier' | 'writesPending' | 'write' | 'mutate' | 'sync'>
import { RecordType, nowTimespec, type Timespec } from '../format/record'
import { errnoFor, ReplError } from '../errors'

const E = osc.errno

/** Constant mount options (see the header comment on why nothing user-supplied goes here). */
const EXTRA_MOUNT_OPTIONS = 'big_writes,use_ino'
/**
 * The Secondary's mount changes under its readers (the apply loop), so the kernel must cache
 * nothing: direct_io (no page cache, even for files kept open), zero attribute, entry and negative
 * timeouts (every stat and lookup asks us), and `ro` so the kernel itself refuses writes.
 */
const READ_ONLY_MOUNT_OPTIONS = 'use_ino,ro,direct_io,attr_timeout=0,entry_timeout=0,negative_timeout=0'

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

type Cb = (err: number, ...rest: unknown[]) => void

/**
 * The owner a new entry gets, as the kernel would give it: the caller's fsuid, and its fsgid unless
 * the parent directory is setgid (then the parent's group). Must be called synchronously at the
 * start of the op's handler: the caller context is only valid then (src/native/index.ts).
 */
function newOwner (root: string, p: string): { u: number, g: number } | Record<string, never> {
  const who = callerContext()
  if (who === null) return {}
  let g = who.gid
  try {
    const parent = fs.statSync(root + p.slice(0, p.lastIndexOf('/')))
    if (parent.mode & 0o2000) g = parent.gid // S_ISGID
  } catch {}
  return { u: who.uid, g }
}

export interface AdapterOptions {
  /** Serve the Secondary's mount (issue 3): every change answers EROFS. */
  readOnly?: boolean
  /** The mount options the user asked for (`-o`), already checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /**
   * Called once when the mount went away without unmount() (a plain `umount MOUNT`): the kernel
   * ended the FUSE session, so no op can arrive any more.
   */
  onGone?: () => void
}

export class FuseAdapter {
  private fuse: FuseInstance | null = null
  /** Open files and directories: our descriptor in the data directory; a directory's libfuse node. */
  private readonly handles = new Map<number, { fd: number, ino?: number, node?: number }>()
  private nextHandle = 1
  private readonly readOnly: boolean
  /** unmount() was called: the end of the session is ours. */
  private unmounting = false
  /** The kernel ended the FUSE session: the mount is gone (by our unmount or anyone's). */
  private sessionEnded = false

  constructor (private readonly rvg: AdapterRvg, private readonly mnt: string, private readonly options: AdapterOptions = {}) {
    this.readOnly = options.readOnly === true
  }

  /** This host's snapshots, shown read-only under MOUNT/.snapshots/ (set by the daemon). */
  snapshots: SnapshotSource | null = null

  private full (p: string): string { return this.rvg.root + p }

  private allocHandle (fd: number, node?: number): number {
    // Handles are 32-bit in fuse-native; wrap around, skipping ones still open.
    do { this.nextHandle = (this.nextHandle % 0xfffffff0) + 1 } while (this.handles.has(this.nextHandle))
    this.handles.set(this.nextHandle, node === undefined ? { fd } : { fd, node })
    return this.nextHandle
  }

  /**
   * A directory is held open while a process has it open, with the libfuse node it was opened on:
   * once it is removed or renamed over, libfuse has no path for that node any more, and its
   * attributes come from this descriptor (getattrNode), as ext4 answers fstat() of it.
   */
  private opendir (p: string, cb: Cb): void {
    const node = callerContext()?.nodeid
    this.peek(cb, () => [this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW), node)])
  }

  private getattrNode (node: number, cb: Cb): void {
    for (const h of this.handles.values()) {
      if (h.node === node) { this.peek(cb, () => [statOf(fs.fstatSync(h.fd, { bigint: true }))]); return }
    }
    cb(-E.ENOENT)
  }

  /** Runs `fn` after the barrier (reads) and replies with its result or errno. */
  private read<T extends unknown[]> (cb: Cb, fn: () => T | Promise<T>): void {
    this.rvg.barrier().then(fn).then((res) => cb(0, ...res), (err) => cb(errnoFor(err)))
  }

  /** Runs `fn` at once (reads that no write in flight can change) and replies with its result or errno. */
  private peek<T extends unknown[]> (cb: Cb, fn: () => T): void {
    let res: T
    try { res = fn() } catch (err) { cb(errnoFor(err)); return }
    cb(0, ...res)
  }

  /** lstat of `p`, after the writes in flight to its inode (if any) are applied. */
  private getattr (p: string, cb: Cb): void {
    let st: fs.BigIntStats
    try { st = fs.lstatSync(this.full(p), { bigint: true }) } catch (err) { cb(errnoFor(err)); return }
    if (!this.rvg.writesPending(Number(st.ino))) { cb(0, statOf(st)); return }
    this.read(cb, () => [statOf(fs.lstatSync(this.full(p), { bigint: true }))])
  }

  /** Runs a mutation and replies 0 or errno. */
  private change (cb: Cb, fn: () => Promise<unknown>): void {
    if (this.readOnly) { cb(-E.EROFS); return }
    fn().then(() => cb(0), (err) => cb(errnoFor(err)))
  }

  private ops (): Record<string, (...args: any[]) => void> {
    const rvg = this.rvg
    return {
      getattr: (p: string, cb: Cb) => this.getattr(p, cb),
      fgetattr: (p: string, _fd: number, cb: Cb) => this.getattr(p, cb),
      access: (p: string, mode: number, cb: Cb) => this.peek(cb, () => { fs.accessSync(this.full(p), mode); return [] }),
      statfs: (_p: string, cb: Cb) => this.read(cb, () => {
        const s = fs.statfsSync(this.rvg.root)
        return [{ bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 }]
      }),
      readdir: (p: string, cb: Cb) => this.peek(cb, () => listing(this.full(p), p === '/')),
      readlink: (p: string, cb: Cb) => this.peek(cb, () => [fs.readlinkSync(this.full(p))]),
      open: (p: string, flags: number, cb: Cb) => {
        if (this.readOnly && (flags & 3) !== fs.constants.O_RDONLY) { cb(-E.EROFS); return }
        this.peek(cb, () => [this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW))])
      },
      opendir: (p: string, _flags: number, cb: Cb) => this.opendir(p, cb),
      releasedir: (_p: string, fd: number, cb: Cb) => {
        const h = this.handles.get(fd)
        if (h) { this.handles.delete(fd); fs.close(h.fd, () => cb(0)) } else cb(0)
      },
      getattrNode: (node: number, cb: Cb) => this.getattrNode(node, cb),
      create: (p: string, mode: number, cb: Cb) => {
        if (this.readOnly) { cb(-E.EROFS); return }
        rvg.mutate(RecordType.CREATE, { p, m: mode & 0o7777, ...newOwner(this.rvg.root, p), t: nowTimespec() })
          .then(() => this.allocHandle(fs.openSync(this.full(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)))
          .then((h) => cb(0, h), (err) => cb(errnoFor(err)))
      },
      read: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
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
        try { pending = rvg.writesPending(h.ino ??= fs.fstatSync(h.fd).ino) } catch (err) { cb(errnoFor(err)); return }
        if (!pending) { fs.read(h.fd, buf, 0, len, pos, done); return }
        rvg.barrier().then(() => fs.read(h.fd, buf, 0, len, pos, done), (err) => cb(errnoFor(err)))
      },
      write: (p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        if (this.readOnly) { cb(-E.EROFS); return }
        rvg.write(p, len === buf.length ? buf : buf.subarray(0, len), pos).then(cb, (err) => cb(errnoFor(err)))
      },
      release: (_p: string, fd: number, cb: Cb) => {
        const h = this.handles.get(fd)
        if (h) { this.handles.delete(fd); fs.close(h.fd, () => cb(0)) } else cb(0)
      },
      flush: (_p: string, _fd: number, cb: Cb) => cb(0),
      fsync: (_p: string, datasync: number, fd: number, cb: Cb) => { rvg.sync(this.handles.get(fd)?.fd, datasync !== 0).then(() => cb(0), (err) => cb(errnoFor(err))) },
      fsyncdir: (_p: string, _datasync: number, _fd: number, cb: Cb) => { rvg.sync().then(() => cb(0), (err) => cb(errnoFor(err))) },
      truncate: (p: string, size: number, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.TRUNCATE, { p, s: size, t: nowTimespec() })),
      ftruncate: (p: string, _fd: number, size: number, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.TRUNCATE, { p, s: size, t: nowTimespec() })),
      utimens: (p: string, atime: number, mtime: number, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.UTIMENS, { p, a: timespecOf(atime), t: timespecOf(mtime) })),
      chmod: (p: string, mode: number, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.CHMOD, { p, m: mode & 0o7777 })),
      chown: (p: string, uid: number, gid: number, cb: Cb) => this.change(cb, async () => {
        // (uid_t)-1 / (gid_t)-1 mean "leave as is"; the record carries the resulting owner.
        await rvg.barrier()
        const st = uid === 0xffffffff || gid === 0xffffffff ? fs.lstatSync(this.full(p)) : null
        await rvg.mutate(RecordType.CHOWN, { p, u: uid === 0xffffffff ? st!.uid : uid, g: gid === 0xffffffff ? st!.gid : gid })
      }),
      mknod: (p: string, mode: number, dev: number, cb: Cb) => { const o = newOwner(this.rvg.root, p); this.change(cb, () => rvg.mutate(RecordType.MKNOD, { p, m: mode, r: dev, ...o, t: nowTimespec() })) },
      mkdir: (p: string, mode: number, cb: Cb) => { const o = newOwner(this.rvg.root, p); this.change(cb, () => rvg.mutate(RecordType.MKDIR, { p, m: mode & 0o7777, ...o, t: nowTimespec() })) },
      rmdir: (p: string, cb: Cb) => this.change(cb, async () => {
        await rvg.barrier()
        if (fs.readdirSync(this.full(p)).length > 0) throw Object.assign(new Error('directory not empty'), { code: 'ENOTEMPTY' })
        await rvg.mutate(RecordType.RMDIR, { p, t: nowTimespec() })
      }),
      unlink: (p: string, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.UNLINK, { p, t: nowTimespec() })),
      rename: (src: string, dest: string, cb: Cb) => this.change(cb, async () => {
        await rvg.barrier()
        // Errors the kernel cannot know about, found before anything is logged.
        let dst: fs.Stats | null = null
        try { dst = fs.lstatSync(this.full(dest)) } catch { dst = null }
        if (dst?.isDirectory() && fs.readdirSync(this.full(dest)).length > 0) throw Object.assign(new Error('directory not empty'), { code: 'ENOTEMPTY' })
        await rvg.mutate(RecordType.RENAME, { p: src, d: dest, t: nowTimespec() })
      }),
      link: (src: string, dest: string, cb: Cb) => this.change(cb, () => rvg.mutate(RecordType.LINK, { p: src, d: dest, t: nowTimespec() })),
      symlink: (target: string, p: string, cb: Cb) => { const o = newOwner(this.rvg.root, p); this.change(cb, () => rvg.mutate(RecordType.SYMLINK, { p, d: target, ...o, t: nowTimespec() })) },
      setxattr: (p: string, name: string, value: Buffer, _position: number, flags: number, cb: Cb) => this.change(cb, async () => {
        await rvg.barrier()
        // XATTR_CREATE / XATTR_REPLACE are checked here so the record itself always succeeds.
        let exists = true
        try { sys.lgetxattr(this.full(p), name) } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENODATA') throw err; exists = false }
        if ((flags & sys.XATTR_CREATE) && exists) throw Object.assign(new Error('exists'), { code: 'EEXIST' })
        if ((flags & sys.XATTR_REPLACE) && !exists) throw Object.assign(new Error('no attribute'), { code: 'ENODATA' })
        await rvg.mutate(RecordType.SETXATTR, { p, n: name, x: Buffer.from(value), f: 0 })
      }),
      fallocate: (p: string, mode: number, offset: number, length: number, _fd: number, cb: Cb) =>
        this.change(cb, () => rvg.mutate(RecordType.FALLOCATE, { p, f: mode, o: offset, l: length, t: nowTimespec() })),
      // (The kernel asks for security.capability before every write: never wait here.)
      getxattr: (p: string, name: string, _position: number, cb: Cb) => this.peek(cb, () => [sys.lgetxattr(this.full(p), name)]),
      listxattr: (p: string, cb: Cb) => this.peek(cb, () => [sys.llistxattr(this.full(p))]),
      removexattr: (p: string, name: string, cb: Cb) => this.change(cb, async () => {
        await rvg.barrier()
        sys.lgetxattr(this.full(p), name) // ENODATA before anything is logged
        await rvg.mutate(RecordType.REMOVEXATTR, { p, n: name })
      })
    }
  }

  /** Mounts; resolves once the kernel has the filesystem. */
  async mount (): Promise<void> {
    const Fuse = loadFuse()
    const user = this.options.mountOptions
    const extra = [this.readOnly ? READ_ONLY_MOUNT_OPTIONS : EXTRA_MOUNT_OPTIONS, ...(user?.libfuse ?? [])].join(',')
    class ReplicafsFuse extends (Fuse as unknown as new (...args: unknown[]) => { _fuseOptions(): string }) {
      override _fuseOptions (): string {
        const base = super._fuseOptions()
        return base === '' ? '-o' + extra : base + ',' + extra
      }
    }
    const fuse = new ReplicafsFuse(this.mnt, withSnapshots(this.ops(), () => this.snapshots), {
      fsname: 'replicafs',
      subtype: 'replicafs',
      allowOther: true,
      defaultPermissions: true,
      // No fuse-native timeouts. A mutation must not answer ETIMEDOUT and then happen anyway; and
      // since ops may wait for writes in flight, a timed-out open would leak its descriptor and a
      // timed-out read would later fill a buffer libfuse has taken back. Ops are bounded by the
      // data directory's disk, as on a local filesystem.
      timeout: false
    }) as unknown as FuseInstance
    fuse.onSessionEnd = () => {
      this.sessionEnded = true
      if (!this.unmounting) this.options.onGone?.()
    }
    await new Promise<void>((resolve, reject) => fuse.mount((err) => err ? reject(new ReplError('FUSE_UNAVAILABLE', `cannot mount FUSE at ${this.mnt}: ${err.message}`, { cause: err })) : resolve()))
    this.fuse = fuse
    // Per-mount flags libfuse 2 cannot set (strictatime, nodiratime): all of them at once, now.
    if (user?.remountFlags !== undefined) {
      try {
        sys.remountBind(this.mnt, user.remountFlags)
      } catch (err) {
        await this.unmount()
        throw new ReplError('FUSE_UNAVAILABLE', `cannot set the mount options of ${this.mnt}: ${(err as Error).message}`, { cause: err })
      }
    }
  }

  async unmount (): Promise<void> {
    const fuse = this.fuse
    this.fuse = null
    this.unmounting = true
    // After a plain `umount`, the mount point may hold someone else's mount by now: only a
    // session that is still ours is detached.
    if (fuse) await unmountFuse(fuse, this.mnt, { detach: !this.sessionEnded })
    for (const h of this.handles.values()) { try { fs.closeSync(h.fd) } catch {} }
    this.handles.clear()
  }
}
