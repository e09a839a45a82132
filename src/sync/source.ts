/**
 * Full synchronization, the Primary's side (docs/ARCHITECTURE.md "Full synchronization"): brings a
 * Secondary the SRL cannot bring up to date (a new one, while the data directory holds a tree no
 * record describes) to the Primary's tree while the Primary keeps taking writes, as VVR's autosync
 * and DRBD's initial sync do.
 *
 *   walk   every entry of the data directory, depth first in name order, as SYNC_ENTRY frames (a
 *          file's bytes as SYNC_DATA, holes left out; a hard link as a link to the name sent
 *          first; each directory closed by SYNC_DIR: its names, then its times)
 *   map    meanwhile every record the Primary applies marks the paths it changes (the change map:
 *          its path, its parent for a namespace change, both sides of a rename as whole trees)
 *   drain  then each marked path whose last change is applied is sent again as it is now (gone:
 *          SYNC_REMOVE), deepest first, so a directory's times are set after its entries
 *   done   walk over and map empty: every record appended so far is applied and every path it
 *          touched was sent after that, so the Secondary holds the tree after the last record.
 *          SYNC_DONE carries its sequence number; ordered replication continues after it.
 *
 * Reads happen on the event loop between FUSE requests, a frame at a time, so a walk never holds
 * the mount. A file read while a write to it is in flight is read again from the map.
 */
import fs from 'node:fs'
import { sys } from '../native'
import { RecordType, type Record } from '../format/record'
import { isInternalXattr } from '../format/data-cursor'
import { MsgType, type SyncMessage, type SyncEntry, type SyncTime } from '../format/wire'
import { SYNC_CHUNK_BYTES } from '../limits'

/** A path to send again: the last record that changed it, and whether everything below it too. */
interface Mark { seq: number, tree: boolean }

/** A directory being walked: its path, its names (sorted), the next one to send. */
interface Level { p: string, names: string[], i: number }

export type SyncPhase = 'walk' | 'drain'

export interface SyncProgress {
  id: string
  phase: SyncPhase
  /** Entries and bytes sent so far (a path sent again counts again). */
  entries: number
  bytes: number
  /** Paths in the change map. */
  marked: number
}

const parentOf = (p: string): string => { const i = p.lastIndexOf('/'); return i <= 0 ? '/' : p.slice(0, i) }
const join = (dir: string, name: string): string => dir === '/' ? '/' + name : dir + '/' + name

const ZEROS = Buffer.alloc(SYNC_CHUNK_BYTES)

/** An all-zero chunk (a hole, or zeros: the Secondary's file reads the same either way). */
const isZero = (b: Buffer): boolean => b.equals(ZEROS.subarray(0, b.length))

export class SyncSource {
  private readonly marks = new Map<string, Mark>()
  /** Marked paths ready to drain, in the order they are taken (deepest and last-sorted first). */
  private ready: string[] = []
  private readonly stack: Level[] = []
  private readonly out: SyncMessage[] = []
  /** The file whose bytes are being sent. */
  private file: { p: string, fd: number, size: number, o: number } | null = null
  /** Files with more than one link, by inode: the name sent (the Secondary links later names to it). */
  private readonly linked = new Map<number, string>()
  private begun = false
  private walking = true
  private readonly chunk = Buffer.allocUnsafe(SYNC_CHUNK_BYTES)
  entries = 0
  bytes = 0

  /**
   * `root`: the data directory; `applied()`: the last record the Primary has applied to it (a path
   * is drained only once every change to it is applied).
   */
  constructor (private readonly root: string, readonly id: string, private readonly applied: () => number) {}

  get progress (): SyncProgress {
    return { id: this.id, phase: this.walking ? 'walk' : 'drain', entries: this.entries, bytes: this.bytes, marked: this.marks.size }
  }

  /** Walk over, map empty, nothing half sent: the Secondary has the tree after every applied record. */
  get complete (): boolean {
    return this.begun && !this.walking && this.stack.length === 0 && this.file === null && this.out.length === 0 && this.marks.size === 0
  }

  /** Told of every record just before the Primary applies it. */
  mark (rec: Record): void {
    const m = rec.meta
    const seq = rec.seq
    switch (rec.type) {
      case RecordType.WRITE: case RecordType.TRUNCATE: case RecordType.FALLOCATE:
      case RecordType.CHMOD: case RecordType.CHOWN: case RecordType.UTIMENS:
      case RecordType.SETXATTR: case RecordType.REMOVEXATTR:
        this.add(m.p!, seq, false)
        return
      case RecordType.CREATE: case RecordType.MKDIR: case RecordType.MKNOD: case RecordType.SYMLINK:
      case RecordType.UNLINK: case RecordType.RMDIR:
        this.add(m.p!, seq, false)
        this.add(parentOf(m.p!), seq, false)
        return
      case RecordType.LINK:
        this.add(m.p!, seq, false)
        this.add(m.d!, seq, false)
        this.add(parentOf(m.d!), seq, false)
        return
      case RecordType.RENAME:
        this.add(m.p!, seq, true)
        this.add(m.d!, seq, true)
        this.add(parentOf(m.p!), seq, false)
        this.add(parentOf(m.d!), seq, false)
        return
      default: // VOID, IBC, WRAP change no path
    }
  }

  private add (p: string, seq: number, tree: boolean): void {
    const had = this.marks.get(p)
    if (had === undefined) this.marks.set(p, { seq, tree })
    else { had.seq = Math.max(had.seq, seq); had.tree ||= tree }
  }

  /** The next frame to send, or null: nothing to send now (changes not yet applied), or complete. */
  next (): SyncMessage | null {
    if (!this.begun) {
      this.begun = true
      this.visit('/', true)
      return { t: MsgType.SYNC_BEGIN, id: this.id }
    }
    while (this.out.length === 0) if (!this.step()) return null
    return this.out.shift()!
  }

  /** Gives back what is open (the link went down: a new SyncSource begins again). */
  close (): void {
    if (this.file !== null) fs.closeSync(this.file.fd)
    this.file = null
  }

  /** One unit of work: a chunk of a file, an entry, a directory closed, or a marked path. */
  private step (): boolean {
    if (this.file !== null) { this.sendChunk(this.file); return true }
    const top = this.stack[this.stack.length - 1]
    if (top !== undefined) {
      if (top.i < top.names.length) this.visitLive(join(top.p, top.names[top.i++]), true)
      else { this.stack.pop(); this.closeDir(top.p, top.names) }
      return true
    }
    this.walking = false
    const p = this.takeMarked()
    if (p === null) return false
    const m = this.marks.get(p)!
    this.marks.delete(p)
    this.visitLive(p, m.tree)
    return true
  }

  /**
   * visit(), for a tree that changes meanwhile: a path removed or renamed between two reads of it
   * (ENOENT, ENOTDIR) was changed by a record, which marked it: it is sent again from the map.
   */
  private visitLive (p: string, deep: boolean): void {
    try {
      this.visit(p, deep)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err
    }
  }

  /** The next marked path whose changes are all applied, deepest (last in name order) first. */
  private takeMarked (): string | null {
    const applied = this.applied()
    for (;;) {
      if (this.ready.length === 0) {
        this.ready = [...this.marks.keys()].filter((p) => this.marks.get(p)!.seq <= applied).sort().reverse()
        if (this.ready.length === 0) return null
      }
      const p = this.ready.shift()!
      const m = this.marks.get(p)
      if (m !== undefined && m.seq <= applied) return p
    }
  }

  /** Sends path `p` as it is now (and, for a directory with `deep`, everything below it). */
  private visit (p: string, deep: boolean): void {
    const full = p === '/' ? this.root : this.root + p
    let st: fs.Stats
    try {
      st = fs.lstatSync(full)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err
      this.out.push({ t: MsgType.SYNC_REMOVE, p })
      // Names sent as link targets at or below `p` are gone on the Secondary now.
      for (const [ino, name] of this.linked) if (name === p || name.startsWith(p === '/' ? '/' : p + '/')) this.linked.delete(ino)
      return
    }
    const t = sys.lstatNs(full)
    const e: SyncEntry = {
      t: MsgType.SYNC_ENTRY,
      p,
      k: st.isDirectory() ? 'd' : st.isFile() ? 'f' : st.isSymbolicLink() ? 'l' : 'n',
      m: st.mode,
      u: st.uid,
      g: st.gid,
      a: [t[0], t[1]],
      mt: [t[2], t[3]],
      x: this.xattrs(full)
    }
    this.entries++
    if (e.k === 'f') {
      if (st.nlink > 1) {
        const first = this.linked.get(st.ino)
        // The first name sent is still this file here, so the Secondary's is this file's copy
        // (if its bytes changed since, that name is marked and sent again: in place, for all).
        if (first !== undefined && first !== p && fs.lstatSync(this.root + first, { throwIfNoEntry: false })?.ino === st.ino) {
          this.out.push({ ...e, h: first })
          return
        }
        this.linked.set(st.ino, p)
      }
      e.s = st.size
      e.c = st.nlink
      this.out.push(e)
      if (st.size > 0) this.file = { p, fd: fs.openSync(full, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW), size: st.size, o: 0 }
      return
    }
    if (e.k === 'l') e.l = fs.readlinkSync(full)
    if (e.k === 'n') e.r = st.rdev
    this.out.push(e)
    if (e.k !== 'd') return
    const names = fs.readdirSync(full).sort()
    if (deep) this.stack.push({ p, names, i: 0 })
    else this.closeDir(p, names)
  }

  /** After a directory's entries: its names (the Secondary removes others) and its times now. */
  private closeDir (p: string, names: string[]): void {
    let t: number[]
    try { t = sys.lstatNs(p === '/' ? this.root : this.root + p) } catch { return } // gone: its mark removes it
    this.out.push({ t: MsgType.SYNC_DIR, p, names, a: [t[0], t[1]] as SyncTime, mt: [t[2], t[3]] as SyncTime })
  }

  private xattrs (full: string): Array<[string, Uint8Array]> {
    const x: Array<[string, Uint8Array]> = []
    for (const n of sys.llistxattr(full)) {
      if (isInternalXattr(n)) continue
      try { x.push([n, sys.lgetxattr(full, n)]) } catch { /* removed meanwhile: its record marks the path */ }
    }
    return x
  }

  /** The next chunk of the file being sent; all-zero chunks are skipped (holes on the Secondary). */
  private sendChunk (f: { p: string, fd: number, size: number, o: number }): void {
    for (let skipped = 0; f.o < f.size && skipped < 64; skipped++) {
      const n = fs.readSync(f.fd, this.chunk, 0, Math.min(this.chunk.length, f.size - f.o), f.o)
      if (n === 0) { f.o = f.size; break } // shorter now: a truncate, which marked the path
      const b = this.chunk.subarray(0, n)
      const o = f.o
      f.o += n
      if (!isZero(b)) {
        this.out.push({ t: MsgType.SYNC_DATA, p: f.p, o, d: Buffer.from(b) })
        this.bytes += n
        break
      }
    }
    if (f.o >= f.size) { fs.closeSync(f.fd); this.file = null }
  }
}
