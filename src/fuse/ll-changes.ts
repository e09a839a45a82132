/**
 * A journaled ll mount's changes (src/native/ll.c with LL_JOURNALED: a Primary's mount on libfuse
 * 3's low-level transport). The C side serves every read itself and forwards each change with the
 * paths it names under the data directory (the names the kernel's dentries of its nodes have now);
 * here it is made through the same FuseHandlers as the compat transport's (one journal, the same
 * checks before anything is logged, the same records) and answered by request id.
 *
 * Files unlinked while open to write: a record names its file by path, and a write through a file
 * that has no name any more would have none. So the last name of a file open to write through
 * this mount is not unlinked (or renamed over): the file is renamed to a hidden name in its
 * directory (journaled, so the Secondaries do the same), the writes that follow name it there,
 * and its last close unlinks it: libfuse's high-level API's hide, with its names
 * (`.fuse_hidden` + the inode and a counter in hex), which the compat transport makes too and
 * tools know to skip. A crash in between leaves the hidden name behind, on both sides.
 */
import fs from 'node:fs'
import type { LlAddon, LlSession, LlChange } from '../native'
import { FuseHandlers, type AdapterRvg, type Cb } from './handlers'
import { RecordType, nowTimespec, type Timespec } from '../format/record'

// FUSE_SET_ATTR_* (fuse_lowlevel.h)
const SET_MODE = 1 << 0
const SET_UID = 1 << 1
const SET_GID = 1 << 2
const SET_SIZE = 1 << 3
const SET_ATIME = 1 << 4
const SET_MTIME = 1 << 5
const SET_ATIME_NOW = 1 << 7
const SET_MTIME_NOW = 1 << 8
const ID_UNCHANGED = 0xffffffff

const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0')

export class LlChanges {
  readonly handlers: FuseHandlers
  /** Handles open to write (wopen, create) -> their data-directory inode. */
  private readonly writers = new Map<number, number>()
  /** Inode -> its handles open to write. */
  private readonly writing = new Map<number, number>()
  /** Inodes open to write whose names were taken (unlinked, renamed over) -> their hidden paths. */
  private readonly hidden = new Map<number, string[]>()
  private hides = 0

  /** Called after a change made here, not asked for by the kernel (a hide, a hidden file's unlink): names it keeps may be wrong. */
  onOwnChange: () => void = () => {}

  constructor (private rvg: AdapterRvg, readOnly: boolean) {
    this.handlers = new FuseHandlers(rvg, readOnly)
  }

  serve (rvg: AdapterRvg, readOnly: boolean): void {
    this.rvg = rvg
    this.handlers.serve(rvg, readOnly)
  }

  /** Files and directories open to write through the mount (status). */
  get openHandles (): number { return this.handlers.openHandles }

  closeAll (): void {
    this.handlers.closeAll()
    this.writers.clear()
    this.writing.clear()
  }

  /** Makes change `req` and answers it (now or later). */
  handle (ll: LlAddon, s: LlSession, req: LlChange): void {
    const h = this.handlers
    const p = req.path
    const id = req.id
    const fail = (err: number): void => { ll.replyErr(s, id, err < 0 ? -err : err) }
    /** Answers 0, or the entry or attributes the change made (replyLookup). */
    const ok = (answer: 'zero' | 'lookup'): Cb => (err) => {
      if (err < 0) fail(err)
      else if (answer === 'lookup') ll.replyLookup(s, id)
      else ll.replyErr(s, id, 0)
    }
    const who = { uid: req.uid, gid: req.gid }
    switch (req.op) {
      case 'setattr': { this.setattr(req, ok('lookup')); return }
      case 'mknod': h.as(who, () => h.mknod(p, req.mode, req.rdev, ok('lookup'))); return
      case 'mkdir': h.as(who, () => h.mkdir(p, req.mode, ok('lookup'))); return
      case 'symlink': h.as(who, () => h.symlink(req.name ?? '', p, ok('lookup'))); return
      case 'link': h.link(p, req.path2 ?? '', ok('lookup')); return
      case 'rmdir': h.rmdir(p, ok('zero')); return
      case 'unlink': {
        const ino = this.openToWrite(p)
        if (ino === null) { h.unlink(p, ok('zero')); return }
        this.hide(p, ino, ok('zero'))
        return
      }
      case 'rename': {
        const dest = req.path2 ?? ''
        const ino = this.openToWrite(dest)
        // (Two names of one inode: rename(2) does nothing, and nothing is hidden.)
        if (ino === null || this.inoAt(p) === ino) { h.rename(p, dest, ok('zero')); return }
        this.hide(dest, ino, (err) => { if (err < 0) fail(err); else h.rename(p, dest, ok('zero')) })
        return
      }
      case 'create':
        h.as(who, () => h.create(p, req.mode, (err, fh) => {
          if (err < 0) { fail(err); return }
          const handle = fh as number
          this.track(handle)
          if (!ll.replyCreate(s, id, handle)) this.close(handle)
        }))
        return
      case 'wopen':
        h.open(p, req.flags, (err, fh) => {
          if (err < 0) { fail(err); return }
          const handle = fh as number
          this.track(handle)
          if (!ll.replyOpen(s, id, handle)) this.close(handle)
        })
        return
      case 'write': {
        const data = req.data ?? Buffer.alloc(0)
        h.write(p, req.fh, data, data.length, req.offset, (n) => { if (n < 0) fail(n); else ll.replyWrite(s, id, n) })
        return
      }
      case 'wread': {
        const buf = Buffer.allocUnsafe(req.size)
        h.read(p, req.fh, buf, req.size, req.offset, (n) => { if (n < 0) fail(n); else ll.replyBuf(s, id, buf.subarray(0, n)) })
        return
      }
      case 'wrelease': this.close(req.fh, req.path); ll.replyErr(s, id, 0); return // (the unlink of a hidden file starts before the transport lets a directory rename by)
      case 'fsync': h.fsync(p, req.datasync, req.fh, ok('zero')); return
      case 'fsyncdir': h.fsyncdir(p, req.datasync, 0, ok('zero')); return
      case 'setxattr': h.setxattr(p, req.name ?? '', req.data ?? Buffer.alloc(0), 0, req.flags, ok('zero')); return
      case 'removexattr': h.removexattr(p, req.name ?? '', ok('zero')); return
      case 'fallocate': h.fallocate(p, req.flags, req.offset, req.size, req.fh, ok('zero')); return
    }
  }

  /** A SETATTR: each attribute it sets is one record, in the order chmod, chown, truncate, times. */
  private setattr (req: LlChange, cb: Cb): void {
    const h = this.handlers
    const p = req.path
    const v = req.valid
    const steps: Array<(next: Cb) => void> = []
    if (v & SET_MODE) steps.push((next) => h.chmod(p, req.mode, next))
    if (v & (SET_UID | SET_GID)) steps.push((next) => h.chown(p, (v & SET_UID) ? req.toUid : ID_UNCHANGED, (v & SET_GID) ? req.toGid : ID_UNCHANGED, next))
    if (v & SET_SIZE) steps.push((next) => h.truncate(p, req.size, next))
    if (v & (SET_ATIME | SET_MTIME)) {
      const time = (set: number, now: number, s: number, ns: number): Timespec | null => (v & now) ? nowTimespec() : (v & set) ? [s, ns] : null
      const a = time(SET_ATIME, SET_ATIME_NOW, req.atime, req.atimeNs)
      const m = time(SET_MTIME, SET_MTIME_NOW, req.mtime, req.mtimeNs)
      steps.push((next) => h.journalRecord(RecordType.UTIMENS, { p, a, t: m }, next))
    }
    const run = (i: number): void => {
      if (i === steps.length) { cb(0); return }
      steps[i]((err) => { if (err < 0) cb(err); else run(i + 1) })
    }
    run(0)
  }

  /**
   * The inode `p` names if that is a file open to write here, else null. Any of its names, not
   * only the last: the transport names the file by the name its node was looked up by, which may
   * be this one.
   */
  private openToWrite (p: string): number | null {
    if (this.writing.size === 0) return null
    let st: fs.Stats
    try { st = fs.lstatSync(this.rvg.root + p) } catch { return null }
    return !st.isDirectory() && this.writing.has(st.ino) ? st.ino : null
  }

  private inoAt (p: string): number | null {
    try { return fs.lstatSync(this.rvg.root + p).ino } catch { return null }
  }

  /** Renames `p`, a name of inode `ino` (open to write), to a hidden name (journaled). */
  private hide (p: string, ino: number, cb: Cb): void {
    const to = `${p.slice(0, p.lastIndexOf('/'))}/.fuse_hidden${hex8(ino)}${hex8(++this.hides)}`
    this.handlers.rename(p, to, (err) => {
      // Its last close may have come while the rename waited for the writes in flight.
      if (err >= 0 && this.writing.has(ino)) this.hidden.set(ino, [...(this.hidden.get(ino) ?? []), to])
      else if (err >= 0) this.handlers.unlink(to, () => this.onOwnChange())
      if (err >= 0) this.onOwnChange()
      cb(err)
    })
  }

  private track (fh: number): void {
    const ino = this.handlers.inoOf(fh)
    if (ino === null) return
    this.writers.set(fh, ino)
    this.writing.set(ino, (this.writing.get(ino) ?? 0) + 1)
  }

  /**
   * Closes a handle open to write; the last one of a hidden file unlinks it (journaled), where its
   * node is now (`at`: its directory may have been renamed since), else where it was hidden.
   */
  private close (fh: number, at?: string): void {
    const ino = this.writers.get(fh)
    this.handlers.release('', fh, () => {})
    if (ino === undefined) return
    this.writers.delete(fh)
    const k = (this.writing.get(ino) ?? 1) - 1
    if (k > 0) { this.writing.set(ino, k); return }
    this.writing.delete(ino)
    const hid = this.hidden.get(ino)
    if (hid === undefined) return
    this.hidden.delete(ino)
    // Each hidden name (two names of one file may have been taken); the node's own where it is now
    // (its directory may have been renamed since it was hidden).
    const base = (p: string): string => p.slice(p.lastIndexOf('/') + 1)
    for (const h of hid) this.handlers.unlink(at !== undefined && base(at) === base(h) ? at : h, () => this.onOwnChange())
  }
}
