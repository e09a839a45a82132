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
 *          SYNC_REMOVE), deepest first, so a directory's times are set after its entries; a file
 *          changed only by writes, truncates and attribute changes since it was sent goes as its
 *          entry and the spans written (SYNC_ENTRY w: 'r'), not whole, so that a big file written
 *          all the time converges as long as its writes are slower than the link
 *   done   walk over and map empty: every record appended so far is applied and every path it
 *          touched was sent after that, so the Secondary holds the tree after the last record.
 *          The RLINK cuts there (held); SYNC_DONE carries that record's sequence number, and
 *          ordered replication continues after it.
 *
 * Reads happen on the event loop between FUSE requests, a frame at a time, so a walk never holds
 * the mount. A file read while a write to it is in flight is read again from the map.
 */
import fs from 'node:fs'
import { sys } from '../native'
import type { Record } from '../format/record'
import type { ChangeMark } from '../format/state'
import { isInternalXattr } from '../format/data-cursor'
import { MsgType, type SyncMessage, type SyncEntry, type SyncTime, type SyncSums } from '../format/wire'
import { SYNC_CHUNK_BYTES, SYNC_DIR_NAMES_MAX, SYNC_PRIMARY_HASHING } from '../limits'
import { ReplError } from '../errors'
import { chunkHash, fileHashes, sameFile, HASH_BYTES, type FileIdentity } from './hash'
import { pathsOf, partOf, newParts, addPart, spansOf, partsFrom, type Parts } from './map'
import { child } from './paths'
import { countTree, type TreeSize } from './count'

/**
 * A path to send again: the last record that changed it, whether everything below it too, and
 * `parts`: what changed in a file whose name did not (null: send it whole).
 */
interface Mark { seq: number, tree: boolean, parts: Parts | null }

/**
 * The file whose bytes are being sent: from offset `o` on, or (`spans`) only those spans, from
 * span `si` on; with `theirs`, only the chunks that differ from those; `z` (spans only): spans
 * at or past it that are all zero are left out (zeros the Secondary's cut and extension made).
 */
interface Sending { p: string, fd: number, size: number, o: number, theirs: Want | null, spans: Array<[number, number]> | null, si: number, z: number }

/** A directory being walked: its path, its names (sorted), the next one to send. */
interface Level {
  p: string, names: string[], i: number
  /** A full synchronization: which names are regular files (d_type), and up to where their read-ahead was started. */
  regular: boolean[] | null
  ahead: number
}

/** A full synchronization starts the kernel's read-ahead of the next files of a directory (sys.willNeed) this many names at a time, */
const WILL_NEED_NAMES = 64
/** when fewer than this many are ahead of the walk, */
const WILL_NEED_LOW = 32
/** for the first bytes of each. */
const WILL_NEED_BYTES = 2 * SYNC_CHUNK_BYTES
/** DT_REG (readdir's type of a regular file). */
const DT_REG = 8

export type SyncPhase = 'walk' | 'drain'

/**
 * full: every file's bytes are sent (an empty Secondary); diff: by difference, the Secondary keeps
 * what matches (a Secondary with data, or a synchronization begun again); checksum: with diff,
 * every file's chunks are compared, not only those of files whose size or mtime differ.
 */
export interface SyncMode {
  diff: boolean
  checksum: boolean
  /**
   * A resynchronization from a change map (SRL overflow protection): no walk, only these paths
   * (whole, with everything below them too, or a file's changed parts), then the drain as usual.
   */
  from?: Map<string, ChangeMark>
}

export interface SyncProgress {
  id: string
  phase: SyncPhase
  /** 'full', 'diff' (by difference) or 'map' (by difference, the paths of a change map), as SyncMode. */
  mode: 'full' | 'diff' | 'map'
  /** Entries and bytes sent so far (a path sent again counts again). */
  entries: number
  bytes: number
  /** Paths in the change map. */
  marked: number
  /** By difference: files the Secondary found different (SYNC_SUMS answered). */
  differing: number
  /** When it began (ISO 8601). */
  startedAt: string
  /** Entries the walk has visited. */
  walked: number
  /**
   * The tree's entries and the bytes a full synchronization sends, counted in the background
   * (null until counted); a resynchronization from a change map: its paths, bytes null.
   */
  totalEntries: number | null
  totalBytes: number | null
  /** Bytes and entries sent per second since it began. */
  rateBytes: number
  rateEntries: number
  /** Seconds left at that rate (full: by bytes; by difference: by entries walked), or null: unknown (not counted yet, or the drain). */
  etaSeconds: number | null
}

/** A Secondary's file to bring to the Primary's in place: its size (-1: none) and chunk hashes. */
interface Want { p: string, s: number, h: Buffer }

/**
 * Every chunk compared: the Primary's own hashes of a file whose entry went (w: 'c'), read on
 * libuv's pool while the Secondary reads its copy (r null: not read, or it could not be).
 */
interface Ours { r: { id: FileIdentity, h: Buffer } | null, done: boolean }


const ZEROS = Buffer.alloc(SYNC_CHUNK_BYTES)

/**
 * The chunks of our file of `size` bytes, whose hashes are `ours`, that the Secondary's (`theirs`)
 * lacks: each chunk whose hash or length differs, and every chunk past the end of theirs (sendSpan
 * leaves out those all zero: its cut and extension made them so), as spans.
 */
export function differing (ours: Buffer, theirs: { s: number, h: Buffer }, size: number): Array<[number, number]> {
  const spans: Array<[number, number]> = []
  for (let i = 0, o = 0; o < size; i++, o += SYNC_CHUNK_BYTES) {
    const len = Math.min(SYNC_CHUNK_BYTES, size - o)
    const a = i * HASH_BYTES
    const same = o < theirs.s && Math.min(SYNC_CHUNK_BYTES, theirs.s - o) === len && theirs.h.length >= a + HASH_BYTES &&
      ours.compare(theirs.h, a, a + HASH_BYTES, a, a + HASH_BYTES) === 0
    if (!same) spans.push([o, o + len])
  }
  return spans
}

/** An all-zero chunk (a hole, or zeros: the Secondary's file reads the same either way). */
const isZero = (b: Buffer): boolean => b.equals(ZEROS.subarray(0, b.length))

export class SyncSource {
  private readonly marks = new Map<string, Mark>()
  /** Marked paths ready to drain, in the order they are taken (deepest and last-sorted first). */
  private ready: string[] = []
  private readonly stack: Level[] = []
  private readonly out: SyncMessage[] = []
  private file: Sending | null = null
  /** SYNC_SUMS answered, to send in place (before the walk goes on), and those still in parts. */
  private readonly wants: Want[] = []
  private readonly parts = new Map<string, { s: number, h: Buffer[], n: number }>()
  /** Our hashes of files sent to compare (every chunk compared), by path, and those not begun yet. */
  private readonly ours = new Map<string, Ours>()
  private readonly toHash: Array<[string, Ours]> = []
  private hashing = 0
  /** Set by the RLINK: called when what next() waited for is ready (our hashes of a file). */
  wake: (() => void) | null = null
  /** Files with more than one link, by inode: the name sent (the Secondary links later names to it). */
  private readonly linked = new Map<number, string>()
  private begun = false
  private walking = true
  /**
   * The buffer the last read went to if no frame took it (a chunk skipped), for the next read.
   * A chunk sent is its frame's own buffer, written to the socket as it is (encodeFrameParts).
   */
  private spare: Buffer | null = null

  private buffer (n: number): Buffer {
    if (this.spare === null || this.spare.length < n) this.spare = Buffer.allocUnsafe(Math.max(n, 1))
    return this.spare
  }
  entries = 0
  bytes = 0
  differing = 0

  /**
   * `root`: the data directory; `applied()`: the last record the Primary has applied to it (a path
   * is drained only once every change to it is applied).
   */
  constructor (private readonly root: string, readonly id: string, private readonly applied: () => number,
    readonly mode: SyncMode = { diff: false, checksum: false }) {
    if (mode.from !== undefined) {
      for (const [p, m] of mode.from) {
        if (m.parts !== null) this.marks.set(p, { seq: 0, tree: false, parts: partsFrom(m.parts) })
        else this.add(p, 0, m.tree)
      }
      this.total = { entries: mode.from.size, bytes: -1 }
    } else {
      countTree(root, () => this.closed).then((t) => { if (t !== null) this.total = t }, () => {})
    }
  }

  private readonly startedAt = Date.now()
  private walked = 0
  private total: TreeSize | null = null
  private closed = false

  get progress (): SyncProgress {
    const s = Math.max(0.001, (Date.now() - this.startedAt) / 1000)
    const t = this.total
    const rateBytes = this.bytes / s
    let eta: number | null = null
    if (t !== null && this.walking && this.mode.from === undefined) {
      if (!this.mode.diff && this.bytes > 0) eta = Math.max(0, t.bytes - this.bytes) / rateBytes
      else if (this.mode.diff && this.walked > 0) eta = Math.max(0, t.entries - this.walked) / (this.walked / s)
    }
    return {
      id: this.id,
      phase: this.walking ? 'walk' : 'drain',
      mode: this.mode.from !== undefined ? 'map' : this.mode.diff ? 'diff' : 'full',
      entries: this.entries,
      bytes: this.bytes,
      marked: this.marks.size,
      differing: this.differing,
      startedAt: new Date(this.startedAt).toISOString(),
      walked: this.walked,
      totalEntries: t?.entries ?? null,
      totalBytes: t === null || t.bytes < 0 ? null : t.bytes,
      rateBytes: Math.round(rateBytes),
      rateEntries: Math.round(this.entries / s),
      etaSeconds: eta === null ? null : Math.round(eta * 10) / 10
    }
  }

  /**
   * Walk over, map empty, nothing half sent, no SYNC_SUMS to answer: the Secondary has the tree
   * after every applied record once it has applied every frame sent (and answered none: the
   * caller waits for the acks of every frame).
   */
  get complete (): boolean {
    return this.begun && !this.walking && this.stack.length === 0 && this.file === null && this.out.length === 0 &&
      this.marks.size === 0 && this.wants.length === 0 && this.parts.size === 0
  }

  /**
   * Set by the RLINK at its cut (src/rlink/link.ts pumpSync): nothing is sent while it holds;
   * records are still marked (if the cut is called off they are sent; else their records carry them).
   */
  held = false

  /** SYNC_SUMS received and not answered yet: a file still to send. */
  get answering (): boolean { return this.wants.length > 0 || this.parts.size > 0 }

  /** A SYNC_SUMS frame from the Secondary: that file is sent in place once its last part is here. */
  want (m: SyncSums): void {
    if (typeof m.p !== 'string' || !Number.isSafeInteger(m.s) || m.s < -1 || !Number.isSafeInteger(m.i) || m.i < 0 ||
      !(m.h instanceof Uint8Array) || m.h.length % HASH_BYTES !== 0) throw new ReplError('PROTOCOL', 'malformed SYNC_SUMS')
    const had = this.parts.get(m.p)
    const part = { s: m.s, h: had?.h ?? [], n: had?.n ?? 0 }
    if (m.i !== part.n || (had !== undefined && had.s !== m.s)) throw new ReplError('PROTOCOL', `SYNC_SUMS of ${m.p} out of order`)
    part.h.push(Buffer.from(m.h))
    part.n += m.h.length / HASH_BYTES
    if (m.e !== 1) { this.parts.set(m.p, part); return }
    this.parts.delete(m.p)
    this.wants.push({ p: m.p, s: m.s, h: Buffer.concat(part.h) })
  }

  /** Told of every record just before the Primary applies it. */
  mark (rec: Record): void {
    const part = partOf(rec)
    if (part !== null) { this.addPart(part.p, rec.seq, part); return }
    for (const [p, tree] of pathsOf(rec)) this.add(p, rec.seq, tree)
  }

  /** Marks `p` to be sent whole (and with `tree`, everything below it). */
  private add (p: string, seq: number, tree: boolean): void {
    const had = this.marks.get(p)
    if (had === undefined) this.marks.set(p, { seq, tree, parts: null })
    else { had.seq = Math.max(had.seq, seq); had.tree ||= tree; had.parts = null }
  }

  /** Marks bytes [o, e) of `p` written, and its size cut to `cut` (a path marked whole stays so). */
  private addPart (p: string, seq: number, part: { o: number, e: number, cut: number }): void {
    let m = this.marks.get(p)
    if (m === undefined) { m = { seq, tree: false, parts: newParts() }; this.marks.set(p, m) }
    m.seq = Math.max(m.seq, seq)
    if (m.parts !== null && !addPart(m.parts, part)) m.parts = null
  }

  /** The next frame to send, or null: nothing to send now (changes not yet applied), or complete. */
  next (): SyncMessage | null {
    if (!this.begun) {
      this.begun = true
      if (this.mode.from === undefined) this.visit('/', true)
      return this.mode.diff ? { t: MsgType.SYNC_BEGIN, id: this.id, d: 1, c: this.mode.checksum ? 1 : 0 } : { t: MsgType.SYNC_BEGIN, id: this.id }
    }
    if (this.held) return null
    while (this.out.length === 0) if (!this.step()) return null
    return this.out.shift()!
  }

  /** Gives back what is open (the link went down: a new SyncSource begins again). */
  close (): void {
    if (this.file !== null) fs.closeSync(this.file.fd)
    this.file = null
    this.closed = true
  }

  /** One unit of work: a chunk of a file, an entry, a directory closed, or a marked path. */
  private step (): boolean {
    if (this.file !== null) { this.sendChunk(this.file); return true }
    const w = this.takeWant()
    if (w !== undefined) { this.sendInPlace(w); return true }
    const top = this.stack[this.stack.length - 1]
    if (top !== undefined) {
      if (top.i < top.names.length) {
        if (top.regular !== null && top.ahead - top.i < WILL_NEED_LOW) this.willNeed(top)
        this.walked++
        this.visitLive(child(top.p, top.names[top.i++]), true)
      }
      else { this.stack.pop(); this.closeDir(top.p, top.names) }
      return true
    }
    this.walking = false
    // Answers still waiting for our hashes go before any marked path (which may be one of them).
    if (this.wants.length > 0) return false
    const p = this.takeMarked()
    if (p === null) return false
    const m = this.marks.get(p)!
    this.marks.delete(p)
    if (m.parts !== null) this.visitParts(p, m.parts)
    else this.visitLive(p, m.tree)
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

  /** The first SYNC_SUMS to answer that does not wait for our hashes of its file. */
  private takeWant (): Want | undefined {
    const i = this.wants.findIndex((w) => w.s < 0 || this.ours.get(w.p)?.done !== false)
    return i < 0 ? undefined : this.wants.splice(i, 1)[0]
  }

  /** Reads our hashes of file `p` (its entry just went to be compared) when the pool has room. */
  private hashAhead (p: string): void {
    const o: Ours = { r: null, done: false }
    this.ours.set(p, o)
    this.toHash.push([p, o])
    this.startHashing()
  }

  private startHashing (): void {
    while (this.hashing < SYNC_PRIMARY_HASHING && this.toHash.length > 0) {
      const [p, o] = this.toHash.shift()!
      if (this.closed || this.ours.get(p) !== o) continue // answered already, or sent again since
      this.hashing++
      fileHashes(this.root + p).then((r) => { o.r = r }, () => { /* gone or unreadable: read as it is sent */ }).finally(() => {
        o.done = true
        this.hashing--
        if (this.closed) return
        this.startHashing()
        this.wake?.()
      }).catch(() => {})
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

  /**
   * Sends file `p`'s entry and the spans of `parts` as they are now (SYNC_ENTRY w: 'r'), the
   * Secondary keeping the rest of its bytes. Not a regular file now: sent as visit() does (the
   * change that made it so marked it whole as well).
   */
  private visitParts (p: string, parts: Parts): void {
    const full = this.root + p
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    let fd = -1
    if (st?.isFile() === true) {
      try { fd = fs.openSync(full, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW) } catch { /* gone since: as visit() finds it */ }
    }
    if (fd < 0) { this.visitLive(p, false); return }
    const t = sys.lstatNs(full)
    const e: SyncEntry = {
      t: MsgType.SYNC_ENTRY, p, k: 'f', m: st!.mode, u: st!.uid, g: st!.gid, a: [t[0], t[1]], mt: [t[2], t[3]], x: this.xattrs(full), s: st!.size, c: st!.nlink, w: 'r'
    }
    if (parts.cut < st!.size) e.z = parts.cut
    this.entries++
    this.out.push(e)
    const spans = spansOf(parts)
    if (spans.length > 0 && st!.size > 0) this.file = { p, fd, size: st!.size, o: 0, theirs: null, spans, si: 0, z: parts.cut }
    else fs.closeSync(fd)
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
      if (this.mode.diff && st.size > 0) { // its bytes if the Secondary asks
        e.w = 'c'
        this.out.push(e)
        if (this.mode.checksum) this.hashAhead(p) // the Secondary answers for every file
        return
      }
      this.out.push(e)
      if (st.size > 0) this.file = { p, fd: fs.openSync(full, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW), size: st.size, o: 0, theirs: null, spans: null, si: 0, z: 0 }
      return
    }
    if (e.k === 'l') e.l = fs.readlinkSync(full)
    if (e.k === 'n') e.r = st.rdev
    this.out.push(e)
    if (e.k !== 'd') return
    if (deep && (!this.mode.diff || this.mode.checksum)) {
      // A full synchronization reads every file, and so does one comparing every chunk (both
      // sides hash every file): the kernel is asked to read the next ones ahead of the walk
      // (small files are otherwise one cold read, waited for, after another).
      const list = sys.readdirEntries(full)
      const pairs: Array<[string, boolean]> = []
      for (let i = 0; i < list.length; i += 4) pairs.push([list[i] as string, list[i + 2] === DT_REG])
      pairs.sort((x, y) => x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)
      this.stack.push({ p, names: pairs.map((x) => x[0]), i: 0, regular: pairs.map((x) => x[1]), ahead: 0 })
      return
    }
    const names = fs.readdirSync(full).sort()
    if (deep) this.stack.push({ p, names, i: 0, regular: null, ahead: 0 })
    else this.closeDir(p, names)
  }

  /** Starts the read-ahead of the next WILL_NEED_NAMES regular files of `l` (a hint: nothing fails). */
  private willNeed (l: Level): void {
    const from = Math.max(l.ahead, l.i)
    const to = Math.min(l.names.length, from + WILL_NEED_NAMES)
    const names: string[] = []
    for (let i = from; i < to; i++) if (l.regular![i]) names.push(l.names[i])
    l.ahead = to
    if (names.length > 0) sys.willNeed(l.p === '/' ? this.root : this.root + l.p, names, WILL_NEED_BYTES)
  }

  /** After a directory's entries: its names (the Secondary removes others) and its times now. */
  private closeDir (p: string, names: string[]): void {
    let t: number[]
    try { t = sys.lstatNs(p === '/' ? this.root : this.root + p) } catch { return } // gone: its mark removes it
    // A big directory's names over several frames (each under the frame size); the last closes it.
    for (let i = SYNC_DIR_NAMES_MAX; i < names.length; i += SYNC_DIR_NAMES_MAX) {
      this.out.push({ t: MsgType.SYNC_DIR, p, names: names.slice(i - SYNC_DIR_NAMES_MAX, i), a: [t[0], t[1]] as SyncTime, mt: [t[2], t[3]] as SyncTime, m: 1 })
    }
    const last = names.length <= SYNC_DIR_NAMES_MAX ? names : names.slice(Math.floor((names.length - 1) / SYNC_DIR_NAMES_MAX) * SYNC_DIR_NAMES_MAX)
    this.out.push({ t: MsgType.SYNC_DIR, p, names: last, a: [t[0], t[1]] as SyncTime, mt: [t[2], t[3]] as SyncTime })
  }

  /**
   * Answers SYNC_SUMS: the file as it is now, in place (w: 'i') with the chunks whose hashes
   * differ from the Secondary's; in full (its bytes all) if the Secondary has none. Not a file any
   * more: nothing (the change that made it so marked it).
   */
  private sendInPlace (w: Want): void {
    const full = this.root + w.p
    const ours = this.ours.get(w.p)
    this.ours.delete(w.p)
    const st = fs.lstatSync(full, { throwIfNoEntry: false })
    if (st === undefined || !st.isFile()) return
    let fd: number
    try { fd = fs.openSync(full, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW) } catch { return } // gone since: marked
    const t = sys.lstatNs(full)
    const e: SyncEntry = {
      t: MsgType.SYNC_ENTRY, p: w.p, k: 'f', m: st.mode, u: st.uid, g: st.gid, a: [t[0], t[1]], mt: [t[2], t[3]], x: this.xattrs(full), s: st.size, c: st.nlink
    }
    if (w.s >= 0) e.w = 'i'
    this.entries++
    this.out.push(e)
    if (st.size === 0) { this.differing++; fs.closeSync(fd); return }
    if (w.s >= 0 && ours?.r != null && sameFile(ours.r.id, fs.fstatSync(fd, { bigint: true })) && Number(ours.r.id.size) === st.size) {
      // Our hashes read ahead are of this very file: only the chunks that differ are read (a
      // write since is marked, and its spans go again from the map). The entry goes anyway: its
      // times (the Secondary set only its owner, mode and xattrs when it compared).
      const spans = differing(ours.r.h, w, st.size)
      if (spans.length > 0 || w.s !== st.size) this.differing++
      if (spans.length > 0) this.file = { p: w.p, fd, size: st.size, o: 0, theirs: null, spans, si: 0, z: w.s }
      else fs.closeSync(fd)
      return
    }
    this.differing++
    this.file = { p: w.p, fd, size: st.size, o: 0, theirs: w.s >= 0 ? w : null, spans: null, si: 0, z: 0 }
  }

  private xattrs (full: string): Array<[string, Uint8Array]> {
    const x: Array<[string, Uint8Array]> = []
    for (const n of sys.llistxattr(full)) {
      if (isInternalXattr(n)) continue
      try { x.push([n, sys.lgetxattr(full, n)]) } catch { /* removed meanwhile: its record marks the path */ }
    }
    return x
  }

  /**
   * The next chunk of the file being sent that the Secondary lacks: all-zero chunks are skipped
   * (holes on the Secondary, or zeros past the end of its file in place), and in place the chunks
   * whose hashes match its own.
   */
  private sendChunk (f: Sending): void {
    if (f.spans !== null) { this.sendSpan(f, f.spans); return }
    for (let skipped = 0; f.o < f.size && skipped < 64; skipped++) {
      const want = Math.min(SYNC_CHUNK_BYTES, f.size - f.o)
      const buf = this.buffer(want)
      const n = fs.readSync(f.fd, buf, 0, want, f.o)
      if (n === 0) { f.o = f.size; break } // shorter now: a truncate, which marked the path
      const b = buf.subarray(0, n)
      const o = f.o
      f.o += n
      const theirs = f.theirs
      let same: boolean
      if (theirs === null || o >= theirs.s) same = isZero(b)
      else {
        const i = o / SYNC_CHUNK_BYTES
        same = Math.min(SYNC_CHUNK_BYTES, theirs.s - o) === n && chunkHash(b).equals(theirs.h.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES))
      }
      if (!same) {
        this.spare = null // the frame owns it now
        this.out.push({ t: MsgType.SYNC_DATA, p: f.p, o, d: b })
        this.bytes += n
        break
      }
    }
    if (f.o >= f.size) { fs.closeSync(f.fd); this.file = null }
  }

  /**
   * The next span of a file sent in changed parts: as it reads now (clipped to the size), all-zero
   * spans at or past the cut left out (the Secondary's cut and extension made them zeros).
   */
  private sendSpan (f: Sending, spans: Array<[number, number]>): void {
    for (let skipped = 0; f.si < spans.length && skipped < 64; skipped++) {
      const [lo, hi] = spans[f.si++]
      if (lo >= f.size) { f.si = spans.length; break } // in order: the rest is past the end too
      const want = Math.min(hi, f.size) - lo
      const buf = this.buffer(want)
      const n = fs.readSync(f.fd, buf, 0, want, lo)
      if (n === 0) { f.si = spans.length; break } // shorter now: a truncate, which marked it again
      const b = buf.subarray(0, n)
      if (lo >= f.z && isZero(b)) continue
      this.spare = null // the frame owns it now
      this.out.push({ t: MsgType.SYNC_DATA, p: f.p, o: lo, d: b })
      this.bytes += n
      break
    }
    if (f.si >= spans.length) { fs.closeSync(f.fd); this.file = null }
  }
}
