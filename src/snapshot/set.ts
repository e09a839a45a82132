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
import assert from 'node:assert'
import fs from 'node:fs'
import path from 'node:path'
import { sys } from '../native'
import { ReplError } from '../errors'
import { RecordType, type Record } from '../format/record'
import { applyRecordSync, FdCache, syncfs } from '../apply'
import {
  Snap, STORE_FORMAT, JSON_CACHE_WEIGHT_MAX, type SnapshotMeta,
  validateName, idString, readdirQuiet, ItemCache, spaceOf, fsyncPath
} from './store'
import { View, type ViewHost } from './view'
import { CopyOnWrite, BORN_ENTRY_BYTES } from './cow'
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

  /** The latest snapshot's copy-on-write (src/snapshot/cow.ts). */
  private readonly cow: CopyOnWrite
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
      throw new ReplError('UNSUPPORTED', `snapshots need a data directory on a filesystem with file handles (ext4, xfs, btrfs, tmpfs): ${(err as Error).message}`, { cause: err })
    }
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.mountFd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    this.cow = new CopyOnWrite(this, this.durable, this.log)
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
    this.cow.reset()
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  /** Snapshot names, oldest first. */
  names (): string[] { return this.snaps.map((s) => s.name) }

  private find (name: string): Snap {
    const s = this.snaps.find((x) => x.name === name)
    if (s === undefined) throw new ReplError('NOT_FOUND', `no snapshot named ${name}`)
    return s
  }

  get latest (): Snap | null { return this.snaps.length > 0 ? this.snaps[this.snaps.length - 1] : null }

  /**
   * Takes a snapshot now. Instant: writes one directory and meta.json, never walks the tree. The
   * caller calls it between two records (no write in flight); `seq` is the last record applied.
   */
  create (name: string, seq: number): SnapshotInfo {
    this.assertOpen()
    validateName(name)
    if (this.snaps.some((s) => s.name === name)) throw new ReplError('EXISTS', `a snapshot named ${name} exists already`)
    assert(Number.isSafeInteger(seq) && seq >= 0, `bad sequence number ${seq}`)
    this.cow.resolvePending()
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
    this.cow.reset()
    return this.info(this.latest!, false)
  }

  /** Every snapshot, oldest first, with the space each one's items take. */
  list (): SnapshotInfo[] {
    this.assertOpen()
    this.cow.resolvePending()
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
    this.cow.resolvePending()
    const idx = this.snaps.indexOf(s)
    const deleting = `${s.dir}.deleting`
    fs.renameSync(s.dir, deleting)
    s.deleted = true
    this.snaps.splice(idx, 1)
    const v = this.views.get(s.id)
    if (v !== undefined) { v.closeAll(); this.views.delete(s.id) }
    this.merge(deleting, idx > 0 ? this.snaps[idx - 1] : null)
    this.cow.reset()
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
    this.cow.resolvePending()
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
    if (s.invalid !== null) throw new ReplError('SNAPSHOT_INVALID', `snapshot ${name} is invalid and cannot be restored: ${s.invalid}`)
    return restoreRecords(this.view(name)!, this.root)
  }

  /** Makes everything preserved so far durable: syncfs of the store's filesystem (in a child, off the event loop). */
  sync (): Promise<void> {
    return syncfs(this.dir)
  }

  close (): void {
    if (this.closed) return
    try { this.cow.resolvePending() } catch { /* closing anyway */ }
    this.closed = true
    for (const v of this.views.values()) v.closeAll()
    this.views.clear()
    this.cow.close()
    fs.closeSync(this.mountFd)
  }

  private assertOpen (): void {
    assert(!this.closed, 'the snapshot set is closed')
  }

  // ---------------------------------------------------------------------------------------------
  // ViewHost

  /** Snapshots from `s` to the latest: where a view of `s` looks items up, in order. */
  chainFrom (s: Snap): Snap[] {
    const i = this.snaps.indexOf(s)
    return i < 0 ? [] : this.snaps.slice(i)
  }

  allSnaps (): readonly Snap[] { return this.snaps }

  /** Keep links to `ino` in the store (they count in its nlink on the same filesystem). */
  keepLinks (ino: number): number { return this.cow.keepLinks(ino) }

  // ---------------------------------------------------------------------------------------------
  // Copy-on-write

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
      this.cow.resolvePending()
      if (L.invalid !== null) return
      this.cow.preserve(L, rec)
    } catch (err) {
      this.invalidateAll(`copy-on-write before record ${rec.seq} (${RecordType[rec.type] ?? rec.type} ${rec.meta.p ?? ''}) failed: ${(err as Error).message}`)
    }
  }

  private invalidateAll (reason: string): void {
    this.log(`snapshots: ${reason}; every snapshot is now invalid`)
    for (const s of this.snaps) if (s.invalid === null) this.markInvalid(s, reason)
    this.cow.dropPending()
  }

  private markInvalid (s: Snap, reason: string): void {
    s.invalid = reason
    try { fs.writeFileSync(`${s.dir}/invalid`, reason + '\n', { mode: 0o600 }) } catch { /* the flag in memory still holds */ }
  }

}
