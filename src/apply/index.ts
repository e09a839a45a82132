/**
 * Applying SRL records to a data directory. One home for "what a record does", used by the
 * Primary after journaling, by crash recovery, and by the Secondary's apply loop.
 *
 * Replay rules: after a kill -9 recovery replays the last non-WRITE record and the writes after
 * it, any of which may already be applied.
 * Content records are idempotent as a run. Namespace records (create, mkdir, rename, ...) are
 * idempotent on their own: with `replay` set, the errors a second application produces
 * (EEXIST for a made entry, ENOENT for a removed or moved one) mean "already done".
 * Recovery after a kill -9 replays the last non-WRITE record and the writes after it (see
 * src/srl/index.ts), so a replay never crosses a namespace record that was already applied.
 *
 * Times: applying a record never reads a clock. A record's `t` is the time the operation results
 * in, and every time the operation changes is set from it (record format version 2): a new
 * entry's atime and mtime, the mtime of each parent directory whose entries changed, a written,
 * truncated or fallocated file's mtime. So the same records applied on two hosts give the same
 * mtimes. Version-1 namespace and FALLOCATE records have no `t`: they leave the kernel's times.
 */
import fs from 'node:fs'
import util from 'node:util'
import { execFile } from 'node:child_process'
import { sys } from '../native'
import { RecordType, noteTimespec, type Record, type Timespec } from '../format/record'
import { ReplError, errnoError } from '../errors'
import { APPLY_FD_CACHE_MAX } from '../limits'
export { DataCursor } from './data-cursor'

/** Namespace records after which cached descriptors may name other files. */
const INVALIDATING_TYPES: ReadonlySet<RecordType> = new Set([
  RecordType.UNLINK, RecordType.RMDIR, RecordType.RENAME
])

const FD_CACHE_MAX = APPLY_FD_CACHE_MAX

/**
 * Descriptors for writing, by data-directory path; dropped whenever a path may change meaning.
 * get() never closes anything: a write in flight may be using any cached descriptor, and a closed
 * number is reused by the next open, so its data would land in another file. The owner calls
 * trim() only when no write is in flight.
 */
export class FdCache {
  private readonly fds = new Map<string, number>()
  /** Inode numbers of cached descriptors, filled in on first ask (inoOf). */
  private readonly inos = new Map<string, number>()
  constructor (private readonly root: string) {}

  /**
   * Past FD_CACHE_MAX cached descriptors, closes them: all of them, or, given `busy`, every one
   * whose inode it does not claim (the Primary's queued writes still use theirs; each asked
   * inoOf first). Without `busy`, only with no write in flight.
   */
  trim (busy?: (ino: number) => boolean): void {
    if (this.fds.size <= FD_CACHE_MAX) return
    if (busy === undefined) { this.clear(); return }
    for (const [p, fd] of this.fds) {
      const ino = this.inos.get(p)
      if (ino !== undefined && busy(ino)) continue
      fs.closeSync(fd)
      this.fds.delete(p)
      this.inos.delete(p)
    }
  }

  get (p: string): number {
    let fd = this.fds.get(p)
    if (fd === undefined) {
      fd = fs.openSync(this.root + p, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW)
      this.fds.set(p, fd)
    }
    return fd
  }

  /** The inode number of the file `get(p)` opened (one fstat per cached descriptor). */
  inoOf (p: string): number {
    let ino = this.inos.get(p)
    if (ino === undefined) {
      ino = fs.fstatSync(this.get(p)).ino
      this.inos.set(p, ino)
    }
    return ino
  }

  /** Takes over a descriptor already open on `p` for writing (a just-created file). */
  adopt (p: string, fd: number): void {
    const old = this.fds.get(p)
    if (old !== undefined) fs.closeSync(old)
    this.fds.set(p, fd)
    this.inos.delete(p)
  }

  clear (): void {
    for (const fd of this.fds.values()) fs.closeSync(fd)
    this.fds.clear()
    this.inos.clear()
  }
}

function setTimes (full: string, a: Timespec | null | undefined, m: Timespec | null | undefined): void {
  sys.utimensat(full, a ? a[0] : 0, a ? a[1] : sys.UTIME_OMIT, m ? m[0] : 0, m ? m[1] : sys.UTIME_OMIT, true)
}

/** The directory whose entries `p` names: '/a/b' -> root + '/a', '/x' -> root itself. */
function parentOf (root: string, p: string): string {
  return root + p.slice(0, p.lastIndexOf('/'))
}

/**
 * Sets the mtime (only) of the directory holding `p`, as the namespace change made it. On replay a
 * later record may have removed that directory already: then there is nothing to set.
 */
function setParentMtime (root: string, p: string, t: Timespec, replay: boolean): void {
  try { setTimes(parentOf(root, p), null, t) } catch (err) { if (!replay) throw err; tolerate(err, ['ENOENT']) }
}

/**
 * The mtime of directory `dir` (a path like a record's) := t, as a namespace record left it; for
 * replay after a power cut (src/rvg/replay-plan.ts), so nothing there is an error but ENOENT.
 */
export function setDirMtime (root: string, dir: string, t: Timespec): void {
  try { setTimes(dir === '/' ? root : root + dir, null, t) } catch (err) { tolerate(err, ['ENOENT']) }
}

/** A new entry's times (atime = mtime = t, not following a symlink) and its parent's mtime. */
function setNewEntryTimes (root: string, p: string, t: Timespec | null | undefined, replay: boolean): void {
  if (!t) return
  setTimes(root + p, t, t)
  setParentMtime(root, p, t, replay)
}

/**
 * The Primary's new entry (`Apply.stamp`): its atime and mtime := the kernel's now (UTIME_NOW, which
 * sets the ctime to the same instant: a new entry on a local filesystem has ctime = mtime), and
 * the record takes those times (m.t), as does its parent's mtime. Last: nothing after it may
 * change the entry (its owner is set already). `fd`: the entry's descriptor (a created file).
 */
function stampNewEntry (a: Apply, fd?: number): void {
  let st: fs.BigIntStats
  if (fd !== undefined) {
    sys.futimens(fd, 0, sys.UTIME_NOW, 0, sys.UTIME_NOW)
    st = fs.fstatSync(fd, { bigint: true })
  } else {
    sys.utimensat(a.full, 0, sys.UTIME_NOW, 0, sys.UTIME_NOW, true)
    st = fs.lstatSync(a.full, { bigint: true })
  }
  const t: Timespec = [Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n)]
  a.m.t = t
  noteTimespec(t) // the next record's time is not before it (format/record.ts)
  setParentMtime(a.root, a.m.p!, t, false)
}

/** Gives a new entry the owner its record carries (the caller's, when the daemon runs as root). */
function own (full: string, m: { u?: number, g?: number, m?: number }, setidToo = false): void {
  if (m.u === undefined || m.g === undefined) return
  fs.lchownSync(full, m.u, m.g)
  // chown clears set-user-ID and set-group-ID on a file; give back the ones it was created with.
  if (setidToo && m.m !== undefined && (m.m & 0o6000) !== 0) fs.chmodSync(full, m.m & 0o7777)
}

function tolerate (err: unknown, codes: string[]): void {
  if (!codes.includes((err as NodeJS.ErrnoException).code ?? '')) throw err
}

/** What applying one record works on. */
interface Apply {
  root: string
  rec: Record
  /** The record's metadata. */
  m: Record['meta']
  /** root + p */
  full: string
  fds: FdCache
  /** Tolerate the errors of a namespace record that was applied already (replay after a crash). */
  replay: boolean
  /** A new entry on the Primary: its times are the kernel's now, written into the record's `t` (stampNewEntry). */
  stamp: boolean
}

/** Runs `fn`; on replay, an error with one of `codes` means "done already". */
function idempotent (a: Apply, codes: string[], fn: () => void): void {
  try { fn() } catch (err) { if (!a.replay) throw err; tolerate(err, codes) }
}

function applyWrite (a: Apply): void {
  const fd = a.fds.get(a.m.p!)
  const data = a.rec.data
  // A short write (a filesystem that ran out of room part way) is continued, so the rest either
  // lands or fails with the errno; the error says how many bytes did land (`partial`).
  let done = 0
  while (done < data.length) {
    let n: number
    try {
      n = fs.writeSync(fd, data, done, data.length - done, a.m.o! + done)
    } catch (err) {
      if (done > 0) (err as PartialWriteError).partial = done
      throw err
    }
    if (n === 0) throw Object.assign(errnoError('EIO', `write of ${a.m.p!} wrote nothing at offset ${a.m.o! + done}`), { partial: done })
    done += n
  }
  if (a.m.t) sys.futimens(fd, 0, sys.UTIME_OMIT, a.m.t[0], a.m.t[1])
}

/** An error applying a WRITE after some of its bytes reached the file (`partial` of them). */
export interface PartialWriteError extends NodeJS.ErrnoException { partial?: number }

function applyTruncate (a: Apply): void {
  fs.truncateSync(a.full, a.m.s!)
  if (a.m.t) setTimes(a.full, null, a.m.t)
}

function applyCreate (a: Apply): void {
  const { m } = a
  // O_TRUNC makes a second application harmless: any writes after it are replayed too.
  // The descriptor serves the file's first writes (a created file is about to be written).
  const fd = fs.openSync(a.full, fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, m.m!)
  a.fds.adopt(m.p!, fd)
  own(a.full, m, true)
  // After own(): nothing after this may change the times.
  if (a.stamp) stampNewEntry(a, fd)
  else if (m.t) {
    sys.futimens(fd, m.t[0], m.t[1], m.t[0], m.t[1])
    setParentMtime(a.root, m.p!, m.t, a.replay)
  }
}

function applyMkdir (a: Apply): void {
  idempotent(a, ['EEXIST'], () => fs.mkdirSync(a.full, a.m.m!))
  own(a.full, a.m)
  if (a.stamp) stampNewEntry(a)
  else setNewEntryTimes(a.root, a.m.p!, a.m.t, a.replay)
}

function applyMknod (a: Apply): void {
  idempotent(a, ['EEXIST'], () => sys.mknod(a.full, a.m.m!, a.m.r ?? 0))
  own(a.full, a.m)
  if (a.stamp) stampNewEntry(a)
  else setNewEntryTimes(a.root, a.m.p!, a.m.t, a.replay)
}

function applySymlink (a: Apply): void {
  idempotent(a, ['EEXIST'], () => fs.symlinkSync(a.m.d!, a.full))
  own(a.full, a.m)
  if (a.stamp) stampNewEntry(a) // the link's own times: utimensat does not follow it
  else setNewEntryTimes(a.root, a.m.p!, a.m.t, a.replay) // the link's own times: setTimes does not follow it
}

function applyLink (a: Apply): void {
  idempotent(a, ['EEXIST'], () => fs.linkSync(a.full, a.root + a.m.d!))
  // The linked inode's mtime is unchanged (only its ctime); the new name's directory changed.
  if (a.m.t) setParentMtime(a.root, a.m.d!, a.m.t, a.replay)
}

function applyUnlink (a: Apply): void {
  idempotent(a, ['ENOENT'], () => fs.unlinkSync(a.full))
  if (a.m.t) setParentMtime(a.root, a.m.p!, a.m.t, a.replay)
}

function applyRmdir (a: Apply): void {
  idempotent(a, ['ENOENT'], () => fs.rmdirSync(a.full))
  if (a.m.t) setParentMtime(a.root, a.m.p!, a.m.t, a.replay)
}

function applyRename (a: Apply): void {
  const { root, m } = a
  try {
    fs.renameSync(a.full, root + m.d!)
  } catch (err) {
    if (!a.replay) throw err
    // Already moved: the source is gone and the destination exists.
    tolerate(err, ['ENOENT'])
    // lstat, not existsSync: a dangling symlink exists too, and following one would set its atime.
    if (fs.lstatSync(root + m.d!, { throwIfNoEntry: false }) === undefined) throw err
  }
  // Both directories changed (one, if the same); the moved entry keeps its mtime.
  if (m.t) {
    setParentMtime(root, m.p!, m.t, a.replay)
    if (parentOf(root, m.d!) !== parentOf(root, m.p!)) setParentMtime(root, m.d!, m.t, a.replay)
  }
}

function applySetxattr (a: Apply): void {
  // Flags (XATTR_CREATE/REPLACE) were checked when the record was made; replay just sets.
  sys.lsetxattr(a.full, a.m.n!, Buffer.from(a.m.x!), a.replay ? 0 : (a.m.f ?? 0))
}

function applyFallocate (a: Apply): void {
  const fd = a.fds.get(a.m.p!)
  sys.fallocate(fd, a.m.f ?? 0, a.m.o!, a.m.l!)
  // Linux (ext4 and tmpfs, measured on 6.18) sets mtime on every successful fallocate, whatever
  // the mode, KEEP_SIZE and punch-hole included; older kernels may not. So always mtime := t,
  // which also keeps hosts with different kernels identical. atime unchanged.
  if (a.m.t) sys.futimens(fd, 0, sys.UTIME_OMIT, a.m.t[0], a.m.t[1])
}

const nothing = (): void => {}

/** What each record type does to the data directory (docs/FORMAT.md, "Record types"). */
const APPLY: { [T in RecordType]?: (a: Apply) => void } = {
  [RecordType.WRITE]: applyWrite,
  [RecordType.TRUNCATE]: applyTruncate,
  [RecordType.CREATE]: applyCreate,
  [RecordType.MKDIR]: applyMkdir,
  [RecordType.MKNOD]: applyMknod,
  [RecordType.SYMLINK]: applySymlink,
  [RecordType.LINK]: applyLink,
  [RecordType.UNLINK]: applyUnlink,
  [RecordType.RMDIR]: applyRmdir,
  [RecordType.RENAME]: applyRename,
  [RecordType.CHMOD]: (a) => fs.chmodSync(a.full, a.m.m!),
  [RecordType.CHOWN]: (a) => fs.lchownSync(a.full, a.m.u!, a.m.g!),
  [RecordType.UTIMENS]: (a) => setTimes(a.full, a.m.a, a.m.t),
  [RecordType.SETXATTR]: applySetxattr,
  [RecordType.REMOVEXATTR]: (a) => idempotent(a, ['ENODATA'], () => sys.lremovexattr(a.full, a.m.n!)),
  [RecordType.FALLOCATE]: applyFallocate,
  [RecordType.VOID]: nothing,
  [RecordType.WRAP]: nothing,
  [RecordType.IBC]: nothing // the Secondary's apply loop delivers it before it gets here
}

/** The records that make a new entry: the Primary stamps their times (applyRecordSync's `stamp`). */
export const NEW_ENTRY_TYPES: ReadonlySet<RecordType> = new Set([RecordType.CREATE, RecordType.MKDIR, RecordType.MKNOD, RecordType.SYMLINK])

/**
 * Applies one record synchronously (writes included). Throws the fs error if the record cannot be
 * applied; with `replay`, tolerates the errors of an already-applied namespace record. `stamp` (the
 * Primary, a NEW_ENTRY_TYPES record applied before it is logged): the entry's times are the
 * kernel's now, and rec.meta.t becomes them.
 */
export function applyRecordSync (root: string, rec: Record, fds: FdCache, replay: boolean, stamp = false): void {
  const fn = APPLY[rec.type]
  if (fn === undefined) throw new ReplError('APPLY_FAILED', `SRL record with sequence number ${rec.seq} has unknown type ${rec.type as number}`)
  if (INVALIDATING_TYPES.has(rec.type)) fds.clear()
  fn({ root, rec, m: rec.meta, full: root + (rec.meta.p ?? ''), fds, replay, stamp: stamp && NEW_ENTRY_TYPES.has(rec.type) })
}

/**
 * syncfs(2) of the filesystem holding `dir` (a data directory, a snapshot store), off the event
 * loop: `sync -f` from coreutils runs it in a child process, so a slow disk never stalls FUSE
 * replies. The durability point of every checkpoint.
 */
export function syncfs (dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sync', ['-f', dir], (err) => err ? reject(new ReplError('APPLY_FAILED', `syncfs of ${dir} failed: ${err.message}`, { cause: err })) : resolve())
  })
}

/** 'ENOSPC: no space left on device' for an errno number. */
export function errnoName (errno: number): string {
  const [name, message] = util.getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error']
  return `${name}: ${message}`
}

/**
 * How sys.applyWrites copies a record's data from the ring: 0, copy_file_range (one copy inside the
 * kernel), where the ring's filesystem cannot share blocks between files (ext2/3/4, tmpfs); 1,
 * pread/pwrite elsewhere, since on XFS or btrfs copy_file_range may clone the ring's blocks into
 * the data file, and the ring's next lap would then allocate (copy-on-write) where it must not.
 */
export function applyCopyMode (dir: string): number {
  const EXT_SUPER_MAGIC = 0xef53
  const TMPFS_MAGIC = 0x01021994
  try {
    const type = fs.statfsSync(dir).type
    return type === EXT_SUPER_MAGIC || type === TMPFS_MAGIC ? 0 : 1
  } catch {
    return 1
  }
}

export function writeAt (fd: number, buf: Buffer, offset: number): Promise<void> {
  return new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, offset, (err) => err ? reject(err) : resolve()))
}

