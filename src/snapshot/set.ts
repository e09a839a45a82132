/**
 * Instant, space-optimised, copy-on-write snapshots of a data directory (VVR's "instant
 * space-optimized snapshots"), as a library: `SnapshotSet` is told about every record just before
 * it is applied (`beforeApply`) and preserves what the record is about to change.
 *
 * Creating a snapshot writes one small directory: it never walks the tree. From then on, the FIRST
 * change to each piece of data preserves the old state into the LATEST snapshot:
 *
 *  - attrs/<ino>.json: an inode's attributes (mode, owner, size, times, xattrs, symlink target)
 *    before its first attribute or size change;
 *  - dirs/<ino>.json: a directory's listing (name -> inode, type, file handle) before its first
 *    namespace change;
 *  - chunks/<ino>/<i>: the 64 KiB chunk i of a file before the first write/truncate/punch into it;
 *  - keep/<ino>: a hard link to an inode whose last name is about to go (unlink, rename over it),
 *    or keep/<ino>.copy, a frozen copy, when link() is impossible (EXDEV: the state directory is
 *    on another filesystem; EMLINK).
 *
 * Chain sharing. Snapshots are ordered by creation; a change preserves only into the latest one,
 * and only an item it lacks. A view of snapshot k looks an item up in k, k+1, ..., latest, then in
 * the live data directory: the first change after k to an item happened while some j >= k was the
 * latest, and was preserved into j; k..j-1 cannot hold it (they would have had to see an earlier
 * first change). So N snapshots of a slowly changing tree cost what changed, once.
 *
 * Only inodes that existed when the latest snapshot was taken are preserved: an inode created
 * after it ("born") is in no snapshot, so rewriting or deleting it costs nothing (temporary files
 * do not leak into snapshot space). The born set is learned from CREATE/MKDIR/MKNOD/SYMLINK (the
 * inode number is read just before the next record) and appended to `born`; a lost entry only makes
 * an inode count as old, which is safe.
 *
 * Inode numbers and reuse. Items are keyed by inode number. A removed non-directory is kept alive
 * by keep/ (same filesystem), so its number cannot be reused while a snapshot needs it. A removed
 * directory, and a frozen copy, leave the inode free for reuse; but then its complete state (attrs
 * and listing; attrs and copy) is in the snapshot where it was removed, and a view stops there: a
 * directory's items are found before any later one under the same number, and the chain walk for
 * a file stops at a frozen copy (`Snap.copies`); when a snapshot is deleted, items it would merge
 * into a predecessor that holds a frozen copy of that number are dropped, not merged.
 *
 * Deleting snapshot k merges its items into k-1 where k-1 lacks them (rename) and drops the rest;
 * deleting the oldest removes it. Restoring produces ordinary records (see restore.ts), which go
 * through `beforeApply` like any change: every snapshot, older or newer, stays valid.
 *
 * Crash safety.
 *  - kill -9: everything survives. Each item is written under tmp/ and renamed into place, and an
 *    item that exists is never rewritten; so if the daemon dies after preserving and before (or
 *    while) applying, the replayed record finds the item and keeps the OLD content, never the new.
 *    An interrupted preservation leaves only a tmp/ file (emptied at open) and items holding the
 *    state before the change, which is what they must hold. A snapshot is created as <id>.tmp and
 *    renamed; a deletion renames <id> to <id>.deleting first and `open` finishes the merge (it is
 *    idempotent: move-if-absent, and keep/ last so a frozen copy never hides items it came with).
 *  - power loss: by default items are not fsynced one by one (the cost would land on the first
 *    write to every chunk). Data written to the data directory may then reach the disk before the
 *    item that preserves its old content, so after a power loss a snapshot may show new data, or
 *    zeros, in chunks preserved since the last `sync()`, and the SRL replay after a reboot (which
 *    is not exact, see docs/ARCHITECTURE.md) may preserve a state newer than the snapshot.
 *    `sync()` (syncfs of the store's filesystem) makes everything preserved so far durable: the
 *    daemon calls it at each checkpoint, before the data directory's syncfs. With
 *    `{durable: true}` every item and its directory are fsynced before the change is applied,
 *    which closes that window at a cost per first write to each chunk.
 *
 * If copy-on-write fails (ENOSPC, EIO in the store), the change must still be applied (the
 * filesystem does not fail writes for a snapshot's sake, as VVR's space-optimized snapshots): every
 * existing snapshot is marked invalid (`invalid` file, `list()` shows it, views answer EIO), since
 * through chain sharing any of them may have needed the lost item. Snapshots created later are
 * valid.
 *
 * Concurrency: everything here is synchronous. The caller creates and deletes snapshots between
 * records (no write in flight); `beforeApply` is complete before the record's apply starts, so a
 * view read while a WRITE is still in flight (on another file, or past the preserved size) sees
 * only old data, and views need no barrier of their own.
 *
 * Requirements: the data directory is one filesystem (no mounts inside it) that supports file
 * handles (ext4, xfs, btrfs, tmpfs), and the process has CAP_DAC_READ_SEARCH (root) for
 * open_by_handle_at.
 */
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { sys } from '../native'
import { ReplError } from '../errors'
import { RecordType, type Record } from '../format/record'
import { applyRecordSync, FdCache } from '../rvg/apply'
import {
  Snap, CHUNK_BYTES, STORE_FORMAT, BORN_MAX, HAS_CACHE_MAX, JSON_CACHE_WEIGHT_MAX, S_IFMT,
  type SnapshotMeta, type AttrsItem, type ListingItem,
  validateName, idString, tsOf, lstatQuiet, readdirQuiet, openRead, preadFull, isZero, xattrsOf, writeItem,
  copySparse, ItemCache, spaceOf
} from './store'
import { View, type ViewHost } from './view'
import { restoreRecords, type RestoreRecord } from './restore'

export interface SnapshotSetOptions {
  /** fsync every preserved item and its directory before the change is applied (power-loss safe). */
  durable?: boolean
  /** One line per notable event (invalidation, resumed deletion). */
  log?: (line: string) => void
}

export interface SnapshotInfo {
  name: string
  id: string
  /** ISO 8601 creation time. */
  createdAt: string
  seq: number
  /** Space the snapshot's own items take (allocated bytes; a kept inode's blocks shared by its links). */
  bytes: number
  valid: boolean
  /** Why the snapshot is invalid, or null. */
  error: string | null
}

export interface RestoreResult {
  /** Records applied to the data directory. */
  records: number
  /** Snapshots deleted afterwards (with `deleteNewer`). */
  deleted: string[]
}

const BORN_ENTRY_BYTES = 16
const BORN_CHECK = 0x5bd1e995a5a5a5a5n

const DIR_RE = /^(\d{8})(\.tmp|\.deleting)?$/

export class SnapshotSet implements ViewHost {
  /** STATE/snapshots */
  readonly dir: string
  /** The data directory. */
  readonly root: string
  /** Live snapshots, oldest first. */
  private snaps: Snap[] = []
  private readonly durable: boolean
  private readonly log: (line: string) => void
  /** fd on the data directory for open_by_handle_at. */
  readonly mountFd: number
  /** Bumped whenever items move (delete): caches keyed by it. */
  generation = 0
  readonly items = new ItemCache<unknown>(JSON_CACHE_WEIGHT_MAX)

  // State of the latest snapshot's copy-on-write.
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
  private readonly views = new Map<string, View>()
  private closed = false

  private constructor (stateDir: string, dataDir: string, opts: SnapshotSetOptions) {
    this.dir = path.join(path.resolve(stateDir), 'snapshots')
    this.root = path.resolve(dataDir)
    this.durable = opts.durable === true
    this.log = opts.log ?? (() => {})
    const rootSt = fs.statSync(this.root)
    if (!rootSt.isDirectory()) throw new ReplError('DIR_MISSING', `data directory ${this.root} is not a directory`)
    try {
      sys.nameToHandle(this.root)
    } catch (err) {
      throw new ReplError('USAGE', `snapshots need a data directory on a filesystem with file handles (ext4, xfs, btrfs, tmpfs): ${(err as Error).message}`, { cause: err })
    }
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.mountFd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  }

  /**
   * Opens (creating if needed) STATE/snapshots for the data directory `dataDir`: removes
   * half-created snapshots, finishes interrupted deletions, empties every tmp/. Synchronous.
   */
  static open (stateDir: string, dataDir: string, opts: SnapshotSetOptions = {}): SnapshotSet {
    const set = new SnapshotSet(stateDir, dataDir, opts)
    try {
      set.load()
    } catch (err) {
      set.close()
      throw err
    }
    return set
  }

  private load (): void {
    const names = fs.readdirSync(this.dir).filter((n) => DIR_RE.test(n)).sort()
    const rootIno = Number(fs.lstatSync(this.root, { bigint: true }).ino)
    const deleting: string[] = []
    for (const n of names) {
      const m = DIR_RE.exec(n)!
      const full = `${this.dir}/${n}`
      if (m[2] === '.tmp') { fs.rmSync(full, { recursive: true, force: true }); continue }
      if (m[2] === '.deleting') { deleting.push(n); continue }
      let meta: SnapshotMeta
      try {
        meta = JSON.parse(fs.readFileSync(`${full}/meta.json`, 'utf8')) as SnapshotMeta
      } catch (err) {
        throw new ReplError('FORMAT_VERSION', `snapshot directory ${full} has no readable meta.json: ${(err as Error).message}`)
      }
      if (meta.format !== STORE_FORMAT) throw new ReplError('FORMAT_VERSION', `snapshot ${meta.name} (${full}) has store format ${meta.format}; this build reads ${STORE_FORMAT}`)
      const snap = new Snap(full, meta)
      snap.load()
      if (snap.invalid === null && meta.rootIno !== rootIno) this.markInvalid(snap, `the data directory ${this.root} is not the one this snapshot was taken of (root inode ${rootIno}, was ${meta.rootIno})`)
      this.snaps.push(snap)
    }
    // Finish deletions a crash interrupted, each into the snapshot before it.
    for (const n of deleting) {
      const id = n.slice(0, 8)
      const prev = [...this.snaps].reverse().find((s) => s.id < id) ?? null
      this.log(`snapshots: finishing the deletion of ${id} interrupted by a crash`)
      this.merge(`${this.dir}/${n}`, prev)
    }
    this.resetLatest()
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  /** Snapshot names, oldest first. */
  names (): string[] { return this.snaps.map((s) => s.name) }

  private find (name: string): Snap {
    const s = this.snaps.find((x) => x.name === name)
    if (s === undefined) throw new ReplError('USAGE', `no snapshot named ${name}`)
    return s
  }

  private get latest (): Snap | null { return this.snaps.length > 0 ? this.snaps[this.snaps.length - 1] : null }

  /**
   * Takes a snapshot now. Instant: writes one directory and meta.json, never walks the tree. The
   * caller calls it between two records (no write in flight); `seq` is the last record applied.
   */
  create (name: string, seq: number): SnapshotInfo {
    this.assertOpen()
    validateName(name)
    if (this.snaps.some((s) => s.name === name)) throw new ReplError('USAGE', `a snapshot named ${name} exists already`)
    if (!Number.isSafeInteger(seq) || seq < 0) throw new ReplError('USAGE', `bad sequence number ${seq}`)
    this.resolvePending()
    let max = 0
    for (const n of fs.readdirSync(this.dir)) { const m = DIR_RE.exec(n); if (m) max = Math.max(max, Number(m[1])) }
    const id = idString(max + 1)
    const meta: SnapshotMeta = {
      format: STORE_FORMAT, name, id, createdAt: new Date().toISOString(), seq, rootIno: Number(fs.lstatSync(this.root, { bigint: true }).ino)
    }
    const tmp = `${this.dir}/${id}.tmp`
    fs.mkdirSync(tmp, { mode: 0o700 })
    const metaFd = fs.openSync(`${tmp}/meta.json`, 'w', 0o600)
    try {
      fs.writeSync(metaFd, JSON.stringify(meta) + '\n')
      if (this.durable) fs.fsyncSync(metaFd)
    } finally {
      fs.closeSync(metaFd)
    }
    const final = `${this.dir}/${id}`
    fs.renameSync(tmp, final)
    if (this.durable) { fsyncPath(final); fsyncPath(this.dir) }
    this.snaps.push(new Snap(final, meta))
    this.resetLatest()
    return this.info(this.latest!, false)
  }

  /** Every snapshot, oldest first, with the space each one's items take. */
  list (): SnapshotInfo[] {
    this.assertOpen()
    this.resolvePending()
    return this.snaps.map((s) => this.info(s, true))
  }

  private info (s: Snap, measure: boolean): SnapshotInfo {
    return { name: s.name, id: s.id, createdAt: s.meta.createdAt, seq: s.meta.seq, bytes: measure ? spaceOf(s.dir) : 0, valid: s.invalid === null, error: s.invalid }
  }

  /** A read-only view of the snapshot, or null if there is none by that name. */
  view (name: string): View | null {
    this.assertOpen()
    const s = this.snaps.find((x) => x.name === name)
    if (s === undefined) return null
    let v = this.views.get(s.id)
    if (v === undefined || v.snap !== s) {
      v = new View(this, s)
      this.views.set(s.id, v)
    }
    return v
  }

  /**
   * Deletes a snapshot and frees the space only it holds: its items move into the snapshot before
   * it where that one lacks them (they are what its views need), the rest are removed.
   */
  delete (name: string): void {
    this.assertOpen()
    const s = this.find(name)
    this.resolvePending()
    const idx = this.snaps.indexOf(s)
    const deleting = `${s.dir}.deleting`
    fs.renameSync(s.dir, deleting)
    s.deleted = true
    this.snaps.splice(idx, 1)
    const v = this.views.get(s.id)
    if (v !== undefined) { v.closeAll(); this.views.delete(s.id) }
    this.merge(deleting, idx > 0 ? this.snaps[idx - 1] : null)
    this.resetLatest()
  }

  /** Merges a deleted snapshot's items into `prev` (where it lacks them) and removes the rest. */
  private merge (from: string, prev: Snap | null): void {
    this.generation++
    this.items.clear()
    if (prev !== null) {
      // Numbers with a frozen copy in prev BEFORE this merge: whatever we hold under them belongs
      // to a later inode (or to a time prev's views never look at). keep/ goes last so that a
      // crash in the middle, resumed with prev.copies read from disk, sees the same set.
      const stop = new Set(prev.copies)
      const moveIfAbsent = (src: string, dst: string): boolean => {
        if (fs.existsSync(dst)) return false
        fs.renameSync(src, dst)
        return true
      }
      for (const kind of ['attrs', 'dirs']) {
        const files = readdirQuiet(`${from}/${kind}`)
        if (files.length > 0) prev.sub(kind)
        for (const f of files) {
          if (stop.has(parseInt(f, 10))) continue
          moveIfAbsent(`${from}/${kind}/${f}`, `${prev.dir}/${kind}/${f}`)
        }
      }
      const inos = readdirQuiet(`${from}/chunks`)
      if (inos.length > 0) prev.sub('chunks')
      // A number that was a directory in prev's time: file items under it are a later inode's.
      const wasDir = (ino: number): boolean => fs.existsSync(prev.listingPath(ino))
      for (const d of inos) {
        if (stop.has(Number(d)) || wasDir(Number(d))) continue
        if (moveIfAbsent(`${from}/chunks/${d}`, `${prev.dir}/chunks/${d}`)) continue
        for (const c of readdirQuiet(`${from}/chunks/${d}`)) moveIfAbsent(`${from}/chunks/${d}/${c}`, `${prev.dir}/chunks/${d}/${c}`)
      }
      // Inodes born after `from` was taken were born after prev was taken too.
      try {
        const born = fs.readFileSync(`${from}/born`)
        if (born.length >= BORN_ENTRY_BYTES) fs.appendFileSync(prev.bornPath(), born.subarray(0, born.length - born.length % BORN_ENTRY_BYTES))
      } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err }
      const keeps = readdirQuiet(`${from}/keep`)
      if (keeps.length > 0) prev.sub('keep')
      for (const f of keeps) {
        const ino = parseInt(f, 10)
        if (stop.has(ino) || wasDir(ino)) continue
        if (moveIfAbsent(`${from}/keep/${f}`, `${prev.dir}/keep/${f}`) && f.endsWith('.copy')) prev.copies.add(ino)
      }
      if (this.durable) fsyncPath(prev.dir)
    }
    fs.rmSync(from, { recursive: true, force: true })
  }

  /**
   * Rolls the data directory back to the snapshot: applies, through `beforeApply` and
   * applyRecordSync, the records `restoreRecords` yields. Only what differs is rewritten. The
   * caller guarantees nothing else changes the data directory meanwhile. Every snapshot stays
   * valid (the restore's own changes are copy-on-write preserved into the latest one); with
   * `deleteNewer` the snapshots newer than `name` are deleted afterwards.
   */
  restore (name: string, opts: { deleteNewer?: boolean } = {}): RestoreResult {
    this.assertOpen()
    const s = this.find(name)
    const fds = new FdCache(this.root)
    let n = 0
    try {
      for (const r of this.restoreRecords(name)) {
        const rec: Record = { type: r.type, seq: 0, meta: r.meta, data: r.data }
        this.beforeApply(rec)
        applyRecordSync(this.root, rec, fds, false)
        n++
      }
    } finally {
      fds.clear()
    }
    this.resolvePending()
    const deleted: string[] = []
    if (opts.deleteNewer === true) {
      for (const x of this.snaps.slice(this.snaps.indexOf(s) + 1).reverse()) { this.delete(x.name); deleted.push(x.name) }
    }
    return { records: n, deleted }
  }

  /**
   * The records that turn the data directory into the snapshot's tree, for a caller that journals
   * them (so Secondaries follow). Lazy: apply each one (beforeApply, then apply) before asking for
   * the next, since each is computed from the data directory as the previous ones left it.
   * Records carry no sequence number.
   */
  restoreRecords (name: string): Generator<RestoreRecord, void, void> {
    this.assertOpen()
    const s = this.find(name)
    if (s.invalid !== null) throw new ReplError('USAGE', `snapshot ${name} is invalid and cannot be restored: ${s.invalid}`)
    return restoreRecords(this.view(name)!, this.root)
  }

  /** Makes everything preserved so far durable: syncfs of the store's filesystem (in a child, off the event loop). */
  sync (): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile('sync', ['-f', this.dir], (err) => err ? reject(new ReplError('APPLY_FAILED', `syncfs of ${this.dir} failed: ${err.message}`, { cause: err })) : resolve())
    })
  }

  close (): void {
    if (this.closed) return
    try { this.resolvePending() } catch { /* closing anyway */ }
    this.closed = true
    for (const v of this.views.values()) v.closeAll()
    this.views.clear()
    if (this.bornFd !== null) { fs.closeSync(this.bornFd); this.bornFd = null }
    fs.closeSync(this.mountFd)
  }

  private assertOpen (): void {
    if (this.closed) throw new ReplError('USAGE', 'the snapshot set is closed')
  }

  // ---------------------------------------------------------------------------------------------
  // ViewHost

  /** Snapshots from `s` to the latest: where a view of `s` looks items up, in order. */
  chainFrom (s: Snap): Snap[] {
    const i = this.snaps.indexOf(s)
    return i < 0 ? [] : this.snaps.slice(i)
  }

  allSnaps (): readonly Snap[] { return this.snaps }

  // ---------------------------------------------------------------------------------------------
  // Copy-on-write

  /** The latest snapshot changed (create, delete, open): reset what we know about it. */
  private resetLatest (): void {
    this.has = new Set()
    this.sizes = new Map()
    this.born = new Set()
    this.pending = null
    if (this.bornFd !== null) { fs.closeSync(this.bornFd); this.bornFd = null }
    const L = this.latest
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

  private resolvePending (): void {
    if (this.pendingKeep !== null) this.undoFailedKeep()
    if (this.pending === null) return
    const full = this.pending
    this.pending = null
    const L = this.latest
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

  /**
   * Called just before `rec` is applied to the data directory (writes, replays and a Secondary's
   * apply loop included). Preserves into the latest snapshot what the record is about to change and
   * the snapshot lacks. Never throws: a path that does not exist has nothing to preserve (the record
   * will fail or create it); a failure in the store invalidates the snapshots (see the header).
   * With no snapshot it returns at once.
   */
  beforeApply (rec: Record): void {
    const L = this.latest
    if (L === null || this.closed) return
    try {
      this.resolvePending()
      if (L.invalid !== null) return
      this.preserve(L, rec)
    } catch (err) {
      this.invalidateAll(`copy-on-write before record ${rec.seq} (${RecordType[rec.type] ?? rec.type} ${rec.meta.p ?? ''}) failed: ${(err as Error).message}`)
    }
  }

  private invalidateAll (reason: string): void {
    this.log(`snapshots: ${reason}; every snapshot is now invalid`)
    for (const s of this.snaps) if (s.invalid === null) this.markInvalid(s, reason)
    this.pending = null
  }

  private markInvalid (s: Snap, reason: string): void {
    s.invalid = reason
    try { fs.writeFileSync(`${s.dir}/invalid`, reason + '\n') } catch { /* the flag in memory still holds */ }
  }

  private preserve (L: Snap, rec: Record): void {
    const m = rec.meta
    const full = (p: string): string => this.root + p
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
    const st = lstatQuiet(this.root + p)
    if (st === null || !st.isFile() || this.born.has(Number(st.ino))) return null
    return st
  }

  /** Resolves `p` following a final symlink, inside the data directory only. */
  private follow (p: string): { full: string, st: fs.BigIntStats } | null {
    const full = this.root + p
    const st = lstatQuiet(full)
    if (st === null) return null
    if (!st.isSymbolicLink()) return { full, st }
    let real: string
    try { real = fs.realpathSync.native(full) } catch { return null }
    if (!real.startsWith(this.root + '/')) return null
    const rst = lstatQuiet(real)
    return rst === null ? null : { full: real, st: rst }
  }

  /** The directory holding `p`: its attrs (mtime) and, for namespace changes, its listing. */
  private ensureParent (L: Snap, p: string, listing: boolean): void {
    const pfull = this.root + p.slice(0, p.lastIndexOf('/'))
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
    for (const s of this.snaps) {
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

function fsyncPath (p: string): void {
  const fd = fs.openSync(p, fs.constants.O_RDONLY)
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}
