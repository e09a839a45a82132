/**
 * Full synchronization, the Secondary's side (docs/ARCHITECTURE.md "Full synchronization"): makes
 * the data directory what the Primary's SYNC_* frames describe (src/format/wire.ts), one frame at
 * a time, in order, straight into the data directory (not through the SRL: nothing here is a
 * record). Until SYNC_DONE the tree is a mix of the Primary's states (inconsistent, as a VVR
 * Secondary during autosync); from SYNC_DONE {seq} on it is the Primary's after record `seq`.
 *
 * Every frame is idempotent (an entry is made so, whatever was there), so a synchronization that
 * is interrupted and begun again converges.
 */
import fs from 'node:fs'
import path from 'node:path'
import { sys } from '../native'
import { isInternalXattr } from '../format/data-cursor'
import { MsgType, type SyncMessage, type SyncEntry, type SyncTime } from '../format/wire'
import { ReplError } from '../errors'

const S_IFMT = 0o170000
const S_IFDIR = 0o040000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000

/** The file type bits an entry's kind stands for ('n': those in its mode). */
function typeOf (e: SyncEntry): number {
  return e.k === 'd' ? S_IFDIR : e.k === 'f' ? S_IFREG : e.k === 'l' ? S_IFLNK : e.m & S_IFMT
}

export class SyncTarget {
  /** The file SYNC_DATA frames write to: the last SYNC_ENTRY of a file. */
  private file: { p: string, fd: number, a: SyncTime, mt: SyncTime } | null = null

  constructor (readonly root: string) {}

  /** Applies one frame (SYNC_BEGIN and SYNC_DONE are the caller's). Throws what the data directory refuses. */
  apply (m: SyncMessage): void {
    switch (m.t) {
      case MsgType.SYNC_ENTRY: this.entry(m); return
      case MsgType.SYNC_DATA: this.data(m.p, m.o, m.d); return
      case MsgType.SYNC_DIR: this.dir(m.p, m.names, m.a, m.mt); return
      case MsgType.SYNC_REMOVE: { this.closeFile(); const full = this.full(m.p); keepParentTimes(full, () => removeTree(full)); return }
      default:
    }
  }

  /** Closes the file SYNC_DATA wrote to (at the next frame of another kind, SYNC_DONE, or when the link goes), with its times. */
  closeFile (): void {
    const f = this.file
    if (f === null) return
    this.file = null
    try { sys.futimens(f.fd, f.a[0], f.a[1], f.mt[0], f.mt[1]) } finally { fs.closeSync(f.fd) }
  }

  private full (p: string): string {
    if (typeof p !== 'string' || !p.startsWith('/') || p.split('/').some((c) => c === '..' || c === '.') || p.includes('\0')) {
      throw new ReplError('PROTOCOL', `the Primary sent a path outside the data directory: ${JSON.stringify(p)}`)
    }
    return p === '/' ? this.root : this.root + p
  }

  private entry (e: SyncEntry): void {
    this.closeFile()
    const full = this.full(e.p)
    if (e.p !== '/') keepParentTimes(full, () => this.makeAnyway(e, full))
    else this.make(e, full)
  }

  private makeAnyway (e: SyncEntry, full: string): void {
    try {
      this.make(e, full)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || e.p === '/') throw err
      // Its directory is not here yet: the map sends a path before its parent (the parent's
      // times come after what changes them), and a directory made during the walk was not in its
      // parent's list. The parent's own mark gives it its mode, owner and times later.
      fs.mkdirSync(path.dirname(full), { recursive: true, mode: 0o700 })
      this.make(e, full)
    }
  }

  private make (e: SyncEntry, full: string): void {
    const want = typeOf(e)
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    if (st !== undefined && e.p !== '/') {
      // Another kind, a hard link to be made, or a file that shares its inode with other names
      // here while the Primary's has one name (writing it would change those too): start from
      // nothing. A file with several names on both sides is written in place, for all of them.
      if ((st.mode & S_IFMT) !== want || e.h !== undefined || (want === S_IFREG && st.nlink > 1 && (e.c ?? 1) <= 1) || e.k === 'l' || e.k === 'n') removeTree(full)
    }
    switch (e.k) {
      case 'd':
        if (e.p !== '/' && !fs.existsSync(full)) fs.mkdirSync(full, { mode: 0o700 })
        break
      case 'f':
        if (e.h !== undefined) {
          fs.linkSync(this.full(e.h), full)
          return // the link shares the inode: its attributes came with the first name
        }
        this.file = { p: e.p, fd: fs.openSync(full, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600), a: e.a, mt: e.mt }
        fs.ftruncateSync(this.file.fd, e.s ?? 0)
        break
      case 'l':
        fs.symlinkSync(e.l ?? '', full)
        break
      case 'n':
        sys.mknod(full, e.m, e.r ?? 0)
        break
      default:
        throw new ReplError('PROTOCOL', `the Primary sent an entry of unknown kind ${String((e as { k: unknown }).k)} for ${e.p}`)
    }
    fs.lchownSync(full, e.u, e.g)
    if (e.k !== 'l') fs.chmodSync(full, e.m & 0o7777) // after chown, which clears set-user-ID
    this.xattrs(full, e.x)
    // A directory's times are set by its SYNC_DIR, after its entries (which change them).
    if (e.k !== 'd') sys.utimensat(full, e.a[0], e.a[1], e.mt[0], e.mt[1], true)
  }

  /** Extended attributes: exactly `x` (replicafs's own aside). */
  private xattrs (full: string, x: Array<[string, Uint8Array]>): void {
    const want = new Set(x.map(([n]) => n))
    for (const n of sys.llistxattr(full)) if (!want.has(n) && !isInternalXattr(n)) sys.lremovexattr(full, n)
    for (const [n, v] of x) if (!isInternalXattr(n)) sys.lsetxattr(full, n, Buffer.from(v), 0)
  }

  private data (p: string, o: number, d: Uint8Array): void {
    const f = this.file
    if (f === null || f.p !== p) throw new ReplError('PROTOCOL', `the Primary sent bytes of ${p} without its entry`)
    let done = 0
    while (done < d.length) done += fs.writeSync(f.fd, d, done, d.length - done, o + done)
  }

  private dir (p: string, names: string[], a: SyncTime, mt: SyncTime): void {
    this.closeFile()
    const full = this.full(p)
    const keep = new Set(names)
    for (const n of fs.readdirSync(full)) {
      if (!keep.has(n) && !(p === '/' && n === 'lost+found')) removeTree(path.join(full, n))
    }
    sys.utimensat(full, a[0], a[1], mt[0], mt[1], true)
  }
}

/**
 * Runs `fn`, which makes or removes `full`, and gives its directory back the times it had: a
 * directory's times come from the Primary (SYNC_DIR), read after every change the Primary made in
 * it so far, and a path the map sends after its directory (its last change came later, a write)
 * must not move them. A later namespace change in the directory marks it, so it is sent again.
 */
function keepParentTimes (full: string, fn: () => void): void {
  const dir = path.dirname(full)
  let t: number[] | null = null
  try { t = sys.lstatNs(dir) } catch { /* not there yet: made by fn, sent later */ }
  fn()
  if (t !== null) sys.utimensat(dir, t[0], t[1], t[2], t[3], true)
}

/** Removes `full`, a directory with everything below it; nothing there is not an error. */
function removeTree (full: string): void {
  fs.rmSync(full, { recursive: true, force: true })
}
