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
import { MsgType, type SyncMessage, type SyncEntry, type SyncTime, type SyncSums } from '../format/wire'
import { ReplError } from '../errors'
import { SYNC_CHUNK_BYTES, SYNC_SUMS_PER_FRAME, SYNC_HASH_AHEAD } from '../limits'
import { RecordType, type Record, type RecordMeta } from '../format/record'
import { fileHashes, sameFile, HASH_BYTES, type FileIdentity } from './hash'
import { child } from './paths'

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK } = fs.constants

/** The file type bits an entry's kind stands for ('n': those in its mode). */
function typeOf (e: SyncEntry): number {
  return e.k === 'd' ? S_IFDIR : e.k === 'f' ? S_IFREG : e.k === 'l' ? S_IFLNK : e.m & S_IFMT
}

/**
 * The Secondary's copy-on-write snapshots (src/snapshot SnapshotSet): told before every change a
 * frame makes, as a record that makes the same change would be, so that a snapshot taken before
 * (the consistent copy kept through a resynchronization, a backup's) keeps what the
 * synchronization overwrites or removes. `active`: there is a snapshot to preserve into.
 */
export interface SyncPreserver {
  readonly active: boolean
  beforeApply (rec: Record): void
}

const NO_DATA = Buffer.alloc(0)

export class SyncTarget {
  /**
   * The file SYNC_DATA frames write to: the last SYNC_ENTRY of a file (fd -1: the bytes are
   * dropped, the entry could not be applied in place and was asked for again).
   */
  private file: { p: string, fd: number, a: SyncTime, mt: SyncTime } | null = null
  /** Files whose SYNC_SUMS were sent, as they were then (by path). */
  private readonly summed = new Map<string, FileIdentity>()
  /** With a synchronization by difference: compare every file's chunks (SYNC_BEGIN c: 1). */
  checksum = false
  /** Files compared, and those found to differ (status). */
  compared = 0
  differing = 0
  /** Entries made or compared, and bytes written (status). */
  entries = 0
  bytes = 0

  /**
   * Hashes read ahead (every chunk compared): started when an entry to compare arrives, while the
   * frames before it are still being applied, so that several files are read at once; used only if
   * the file is still the one read (inode, size, mtime, ctime) when the entry is applied.
   */
  private readonly ahead = new Map<string, Promise<{ id: FileIdentity, sums: SyncSums[] } | null>>()

  /** Snapshots to preserve into before each change (null: none). */
  preserver: SyncPreserver | null = null

  constructor (readonly root: string) {}

  /** Tells the snapshots of a change about to be made, as a record that makes it. */
  private preserve (type: RecordType, meta: RecordMeta, data: Buffer = NO_DATA): void {
    if (this.preserver?.active === true) this.preserver.beforeApply({ type, seq: 0, meta, data })
  }

  /**
   * Removes `p` and everything below it. With a snapshot, one entry at a time, deepest first, each
   * preserved before it goes (as UNLINK and RMDIR records would be: a file's last name keeps its
   * inode); else at once.
   */
  private removeTree (p: string): void {
    const full = this.full(p)
    if (this.preserver?.active !== true) { removeTree(full); return }
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    if (st === undefined) return
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(full)) this.removeTree(child(p, n))
      this.preserve(RecordType.RMDIR, { p })
      fs.rmdirSync(full)
    } else {
      this.preserve(RecordType.UNLINK, { p })
      fs.unlinkSync(full)
    }
  }

  /**
   * Applies one frame (SYNC_BEGIN and SYNC_DONE are the caller's) and returns what to answer
   * before its SYNC_ACK (SYNC_SUMS). Throws what the data directory refuses.
   */
  async apply (m: SyncMessage): Promise<SyncSums[]> {
    switch (m.t) {
      case MsgType.SYNC_ENTRY:
        this.entries++
        if (m.w === 'c') return await this.compare(m)
        if (m.w === 'i') return await this.inPlace(m)
        if (m.w === 'r') return this.changedParts(m)
        if (m.w !== undefined) throw new ReplError('PROTOCOL', `the Primary sent an entry for ${String(m.p)} with an unknown w: ${JSON.stringify(m.w)}`)
        this.entry(m)
        return []
      case MsgType.SYNC_DATA: this.data(m.p, m.o, m.d); return []
      case MsgType.SYNC_DIR: this.dir(m.p, m.names, m.a, m.mt, m.m === 1); return []
      case MsgType.SYNC_REMOVE: { this.closeFile(); const full = this.full(m.p); keepParentTimes(full, () => this.removeTree(m.p)); return [] }
      default: return []
    }
  }

  /**
   * A frame has arrived and waits for those before it: an entry whose chunks will all be compared
   * is hashed now, up to SYNC_HASH_AHEAD files at once.
   */
  received (m: SyncMessage): void {
    if (!this.checksum || m.t !== MsgType.SYNC_ENTRY || m.w !== 'c') return
    let full: string
    try { full = this.full(m.p) } catch { return } // refused when it is applied
    sys.willNeed(path.dirname(full), [path.basename(full)], 2 * SYNC_CHUNK_BYTES)
    if (this.ahead.size >= SYNC_HASH_AHEAD || this.ahead.has(m.p)) return
    this.ahead.set(m.p, this.hash(m.p, full).catch(() => null))
  }

  /** Closes the file SYNC_DATA wrote to (at the next frame of another kind, SYNC_DONE), with its times. */
  closeFile (): void {
    const f = this.file
    if (f === null) return
    this.file = null
    if (f.fd < 0) return
    try { sys.futimens(f.fd, f.a[0], f.a[1], f.mt[0], f.mt[1]) } finally { fs.closeSync(f.fd) }
  }

  /**
   * The link went down: the file being written is closed without its times, so that a
   * synchronization by difference (the next one) does not take it for the Primary's.
   */
  abandonFile (): void {
    const f = this.file
    this.file = null
    if (f !== null && f.fd >= 0) fs.closeSync(f.fd)
    this.summed.clear()
    this.ahead.clear()
  }

  /**
   * An entry to compare (w: 'c'): the file here is kept if it has the Primary's size and mtime
   * (unless every file is compared), else its chunks' hashes go back (SYNC_SUMS) and the Primary
   * sends the chunks that differ. Its owner, mode and extended attributes are set now.
   */
  private async compare (e: SyncEntry): Promise<SyncSums[]> {
    this.closeFile()
    const full = this.full(e.p)
    this.compared++
    const ahead = this.ahead.get(e.p)
    this.ahead.delete(e.p)
    const st = fs.lstatSync(full, { bigint: true, throwIfNoEntry: false })
    if (st?.isFile() === true && !(st.nlink > 1n && (e.c ?? 1) <= 1)) {
      this.preserve(RecordType.CHOWN, { p: e.p })
      this.owner(full, st, e)
      this.xattrs(full, e.x)
      const mt = BigInt(e.mt[0]) * 1_000_000_000n + BigInt(e.mt[1])
      if (!this.checksum && st.size === BigInt(e.s ?? -1) && st.mtimeNs === mt) {
        sys.utimensat(full, e.a[0], e.a[1], e.mt[0], e.mt[1], true)
        return []
      }
      this.differing++
      const got = ahead !== undefined ? await ahead : null
      if (got !== null && sameFile(got.id, st)) {
        // Read ahead, of this very file; its owner, mode and xattrs set since change no byte.
        const now = fs.lstatSync(full, { bigint: true })
        this.summed.set(e.p, { ino: now.ino, size: now.size, mtimeNs: now.mtimeNs, ctimeNs: now.ctimeNs })
        return got.sums
      }
      return await this.sums(e.p, full)
    }
    this.differing++
    if (st !== undefined) keepParentTimes(full, () => this.removeTree(e.p))
    return [{ t: MsgType.SYNC_SUMS, p: e.p, s: -1, i: 0, h: new Uint8Array(0), e: 1 }]
  }

  /** The hashes of the file at `full`, as SYNC_SUMS frames; remembers what it was. */
  private async sums (p: string, full: string): Promise<SyncSums[]> {
    const r = await this.hash(p, full)
    this.summed.set(p, r.id)
    return r.sums
  }

  /**
   * The hashes of the file at `full`, as SYNC_SUMS frames, and what it was when they were taken
   * (ctime -1 if it changed while read: a frame applied meanwhile; those hashes describe no one state).
   */
  private async hash (p: string, full: string): Promise<{ id: FileIdentity, sums: SyncSums[] }> {
    const { id, h } = await fileHashes(full)
    const size = Number(id.size)
    const out: SyncSums[] = []
    const per = SYNC_SUMS_PER_FRAME * HASH_BYTES
    for (let o = 0; o + per < h.length; o += per) out.push({ t: MsgType.SYNC_SUMS, p, s: size, i: o / HASH_BYTES, h: h.subarray(o, o + per) })
    const last = Math.max(0, Math.ceil(h.length / per) - 1) * per
    out.push({ t: MsgType.SYNC_SUMS, p, s: size, i: last / HASH_BYTES, h: h.subarray(last), e: 1 })
    return { id, sums: out }
  }

  /**
   * An entry in place (w: 'i'): the Primary compared its file with the hashes this Secondary sent
   * and the chunks that differ follow. Only onto the very file those hashes were taken of: if it
   * changed since (a later frame made it anew), the bytes that follow are dropped and its hashes
   * go again.
   */
  private async inPlace (e: SyncEntry): Promise<SyncSums[]> {
    this.closeFile()
    const full = this.full(e.p)
    const was = this.summed.get(e.p)
    this.summed.delete(e.p)
    const st = fs.lstatSync(full, { bigint: true, throwIfNoEntry: false })
    if (was === undefined || st === undefined || !st.isFile() || !sameFile(was, st)) {
      this.file = { p: e.p, fd: -1, a: e.a, mt: e.mt }
      if (st?.isFile() !== true) {
        if (st !== undefined) keepParentTimes(full, () => this.removeTree(e.p))
        return [{ t: MsgType.SYNC_SUMS, p: e.p, s: -1, i: 0, h: new Uint8Array(0), e: 1 }]
      }
      return await this.sums(e.p, full)
    }
    const fd = fs.openSync(full, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW)
    this.file = { p: e.p, fd, a: e.a, mt: e.mt }
    // Only what differs is changed (compare() set the owner and mode already: a file that matches,
    // the common case, is not written to at all but for its times at the end).
    if (st.size !== BigInt(e.s ?? 0)) {
      this.preserve(RecordType.TRUNCATE, { p: e.p, s: e.s ?? 0 })
      fs.ftruncateSync(fd, e.s ?? 0)
    }
    this.preserve(RecordType.CHOWN, { p: e.p })
    this.owner(full, st, e, fd)
    this.xattrs(full, e.x)
    return []
  }

  /**
   * Sets the owner and mode of `full` (through `fd` if given) to the entry's, where they differ
   * from `st`'s. (The caller preserves the attributes first: CHOWN.)
   */
  private owner (full: string, st: { uid: number | bigint, gid: number | bigint, mode: number | bigint }, e: SyncEntry, fd: number | null = null): void {
    const ownerDiffers = Number(st.uid) !== e.u || Number(st.gid) !== e.g
    const modeDiffers = (Number(st.mode) & 0o7777) !== (e.m & 0o7777)
    if (!ownerDiffers && !modeDiffers) return
    // chown clears setuid and setgid bits: the mode goes after it.
    if (ownerDiffers) { if (fd !== null) fs.fchownSync(fd, e.u, e.g); else fs.lchownSync(full, e.u, e.g) }
    if (fd !== null) fs.fchmodSync(fd, e.m & 0o7777); else fs.chmodSync(full, e.m & 0o7777)
  }

  /**
   * Changed parts (w: 'r'): this file is the Primary's but for a cut and the spans that follow.
   * It keeps its bytes, is cut to `z` if longer, set to size `s`, and takes the entry's owner, mode
   * and xattrs now (its times after the last span). No regular file here, or one with other names
   * while the Primary's has one: it goes, the spans are dropped, and SYNC_SUMS {s: -1} asks for it whole.
   */
  private changedParts (e: SyncEntry): SyncSums[] {
    this.closeFile()
    const full = this.full(e.p)
    const size = e.s ?? 0
    if (!Number.isSafeInteger(size) || size < 0 || (e.z !== undefined && (!Number.isSafeInteger(e.z) || e.z < 0))) {
      throw new ReplError('PROTOCOL', `the Primary sent changed parts of ${e.p} with a bad size`)
    }
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    if (st?.isFile() !== true || (st.nlink > 1 && (e.c ?? 1) <= 1)) {
      this.file = { p: e.p, fd: -1, a: e.a, mt: e.mt }
      if (st !== undefined) keepParentTimes(full, () => this.removeTree(e.p))
      return [{ t: MsgType.SYNC_SUMS, p: e.p, s: -1, i: 0, h: new Uint8Array(0), e: 1 }]
    }
    const cut = e.z !== undefined && e.z < st.size ? e.z : st.size
    if (cut !== st.size) this.preserve(RecordType.TRUNCATE, { p: e.p, s: cut })
    if (size !== cut) this.preserve(RecordType.TRUNCATE, { p: e.p, s: size })
    this.preserve(RecordType.CHOWN, { p: e.p })
    const fd = fs.openSync(full, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW)
    this.file = { p: e.p, fd, a: e.a, mt: e.mt }
    if (cut !== st.size) fs.ftruncateSync(fd, cut)
    if (size !== cut) fs.ftruncateSync(fd, size)
    this.owner(full, st, e, fd)
    this.xattrs(full, e.x)
    return []
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
      this.makeParents(e.p)
      this.make(e, full)
    }
  }

  /** Makes the missing directories above `p`, outermost first (mode 0700: their entries come later). */
  private makeParents (p: string): void {
    const parts = p.split('/').slice(1, -1)
    for (let i = 1; i <= parts.length; i++) {
      const d = '/' + parts.slice(0, i).join('/')
      if (fs.existsSync(this.full(d))) continue
      this.preserve(RecordType.MKDIR, { p: d })
      fs.mkdirSync(this.full(d), { mode: 0o700 })
    }
  }

  private make (e: SyncEntry, full: string): void {
    const want = typeOf(e)
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    if (st !== undefined && e.p !== '/') {
      // Another kind, a hard link to be made, or a file that shares its inode with other names
      // here while the Primary's has one name (writing it would change those too): start from
      // nothing. A file with several names on both sides is written in place, for all of them.
      if ((st.mode & S_IFMT) !== want || e.h !== undefined || (want === S_IFREG && st.nlink > 1 && (e.c ?? 1) <= 1) || e.k === 'l' || e.k === 'n') this.removeTree(e.p)
    }
    const there = fs.existsSync(full)
    switch (e.k) {
      case 'd':
        if (e.p !== '/' && !there) { this.preserve(RecordType.MKDIR, { p: e.p }); fs.mkdirSync(full, { mode: 0o700 }) }
        break
      case 'f':
        if (e.h !== undefined) {
          this.preserve(RecordType.LINK, { p: e.h, d: e.p })
          fs.linkSync(this.full(e.h), full)
          return // the link shares the inode: its attributes came with the first name
        }
        // A file made anew, or every byte of the one here replaced.
        this.preserve(there ? RecordType.TRUNCATE : RecordType.CREATE, { p: e.p, s: 0 })
        this.file = { p: e.p, fd: fs.openSync(full, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600), a: e.a, mt: e.mt }
        // Every byte that is not a hole follows: what an earlier attempt wrote here goes first.
        // (Not for a file made now: ext4 takes a truncate to 0 for a file being replaced and
        // allocates its blocks at close, auto_da_alloc, which made closes a tenth of the time.)
        if (there) fs.ftruncateSync(this.file.fd, 0)
        fs.ftruncateSync(this.file.fd, e.s ?? 0)
        break
      case 'l':
        this.preserve(RecordType.SYMLINK, { p: e.p })
        fs.symlinkSync(e.l ?? '', full)
        break
      case 'n':
        this.preserve(RecordType.MKNOD, { p: e.p })
        sys.mknod(full, e.m, e.r ?? 0)
        break
      default:
        throw new ReplError('PROTOCOL', `the Primary sent an entry of unknown kind ${String((e as { k: unknown }).k)} for ${e.p}`)
    }
    if (e.k === 'd' && there) this.preserve(RecordType.CHOWN, { p: e.p }) // a file's or a new entry's attributes are preserved above
    fs.lchownSync(full, e.u, e.g)
    if (e.k !== 'l') fs.chmodSync(full, e.m & 0o7777) // after chown, which clears set-user-ID
    this.xattrs(full, e.x)
    // A directory's times are set by its SYNC_DIR, after its entries (which change them).
    if (e.k !== 'd') sys.utimensat(full, e.a[0], e.a[1], e.mt[0], e.mt[1], true)
  }

  /** Extended attributes: exactly `x` (replicafs's own aside). */
  private xattrs (full: string, x: Array<[string, Uint8Array]>): void {
    const want = new Set(x.map(([n]) => n))
    const have = sys.llistxattr(full)
    for (const n of have) if (!want.has(n) && !isInternalXattr(n)) sys.lremovexattr(full, n)
    const had = new Set(have)
    for (const [n, v] of x) {
      if (isInternalXattr(n)) continue
      // Set only where it differs (a set changes the ctime and goes through the journal).
      if (had.has(n)) { try { if (sys.lgetxattr(full, n).equals(Buffer.from(v))) continue } catch { /* removed meanwhile: set it */ } }
      sys.lsetxattr(full, n, Buffer.from(v), 0)
    }
  }

  private data (p: string, o: number, d: Uint8Array): void {
    const f = this.file
    if (f === null || f.p !== p) throw new ReplError('PROTOCOL', `the Primary sent bytes of ${p} without its entry`)
    if (f.fd < 0) return
    this.bytes += d.length
    this.preserve(RecordType.WRITE, { p, o }, Buffer.from(d.buffer, d.byteOffset, d.byteLength))
    let done = 0
    while (done < d.length) done += fs.writeSync(f.fd, d, done, d.length - done, o + done)
  }

  /** A big directory's names so far (SYNC_DIR with m: 1), until its last SYNC_DIR. */
  private dirNames: { p: string, names: string[] } | null = null

  private dir (p: string, names: string[], a: SyncTime, mt: SyncTime, more: boolean): void {
    this.closeFile()
    const full = this.full(p)
    if (!Array.isArray(names)) throw new ReplError('PROTOCOL', `the Primary sent SYNC_DIR of ${p} without its names`)
    const before = this.dirNames !== null && this.dirNames.p === p ? this.dirNames.names : []
    this.dirNames = null
    if (more) { this.dirNames = { p, names: before.concat(names) }; return }
    const keep = new Set(before.length > 0 ? before.concat(names) : names)
    for (const n of fs.readdirSync(full)) {
      if (!keep.has(n) && !(p === '/' && n === 'lost+found')) this.removeTree(child(p, n))
    }
    this.preserve(RecordType.UTIMENS, { p })
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
