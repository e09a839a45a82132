/**
 * The Secondary's mount on libfuse 3's low-level transport (src/native/ll.c, issue 14): the data
 * directory served read-only by inode on libfuse's own threads, no JavaScript per request, FUSE
 * passthrough for every open where the kernel grants it (Linux 6.9+), and `/.snapshots` forwarded
 * to this host's snapshot views (SnapshotTree, src/fuse/snapshots.ts) on the event loop.
 *
 * Write-order fidelity: the apply loop changes the data directory between hold() and release();
 * every request that reads the tree holds the transport's lock shared meanwhile, so it sees the
 * tree between two records, as fuse-native's handlers did by sharing the event loop with the apply.
 * Reads through passthrough go to the backing file directly, as a local file's reads would.
 *
 * Caching: the tree changes under the mount, so the mount is volatile (LL_VOLATILE): zero entry
 * and attribute timeouts (every stat and lookup asks), no page cache kept across opens, direct I/O
 * where the kernel has no backing file, no cached listings.
 *
 * Serving read-write is not this transport's yet (the journaled Primary is the plan in
 * docs/ARCHITECTURE.md): a takeover unmounts it and mounts the compat transport (src/daemon/primary.ts).
 */
import { loadLl, sys, LL_PASSTHROUGH, LL_VOLATILE, type LlSession, type LlRequest } from '../native'
import { SnapshotTree, SNAPDIR, type SnapshotSource, type SnapshotStat } from './snapshots'
import type { AdapterOptions, AdapterRvg, MountAdapter } from './adapter'
import { errnoFor, ReplError } from '../errors'

/**
 * Why replicafs_ll cannot serve on this machine (its addon neither prebuilt for it nor buildable
 * here), or null when it can. A daemon told no --fuse then serves with the compat transport.
 */
export function llUnavailable (): string | null {
  try {
    loadLl()
    return null
  } catch (err) {
    return (err as Error).message
  }
}

const STAT_FIELDS = 14
const NS = 1_000_000_000n

function putTime (a: Float64Array, i: number, ns: bigint): void {
  let s = ns / NS
  let r = ns % NS
  if (r < 0n) { s -= 1n; r += NS }
  a[i] = Number(s)
  a[i + 1] = Number(r)
}

function putStat (a: Float64Array, at: number, st: SnapshotStat): void {
  a[at] = st.mode; a[at + 1] = st.uid; a[at + 2] = st.gid; a[at + 3] = st.size; a[at + 4] = st.nlink
  a[at + 5] = st.ino; a[at + 6] = st.rdev; a[at + 7] = st.blocks
  putTime(a, at + 8, st.atimeNs); putTime(a, at + 10, st.mtimeNs); putTime(a, at + 12, st.ctimeNs)
}

function statArray (st: SnapshotStat): Float64Array {
  const a = new Float64Array(STAT_FIELDS)
  putStat(a, 0, st)
  return a
}

/** Entries a readdir answer offers at most (the kernel's buffer takes what fits; it asks again from there). */
const DIR_BATCH = 256

export class LlAdapter implements MountAdapter {
  snapshots: SnapshotSource | null = null
  private session: LlSession | null = null
  private readonly tree = new SnapshotTree(() => this.snapshots)
  /** The forwarded nodes: id -> mount path (id 0: the mount's root), and back. Kept for the mount's life. */
  private readonly paths: string[] = ['']
  private readonly ids = new Map<string, number>()
  private unmounting = false

  constructor (private readonly data: string, private readonly mnt: string, private readonly options: AdapterOptions = {}) {}

  readonly writable = false
  readonly transport = 'll'

  get openHandles (): number { return this.session === null ? 0 : loadLl().stats(this.session).opens }

  /** Whether the kernel granted FUSE passthrough (status, bench). */
  get passthrough (): boolean { return this.session !== null && loadLl().stats(this.session).passthrough }

  async mount (): Promise<void> {
    const ll = loadLl()
    const user = this.options.mountOptions
    const opts = ['ro', 'default_permissions', 'allow_other', 'fsname=replicafs', 'subtype=replicafs', ...(user?.libfuse ?? [])].join(',')
    try {
      this.session = ll.mount(this.data, this.mnt, opts, 0, LL_PASSTHROUGH | LL_VOLATILE, SNAPDIR.slice(1), (req) => this.handle(req))
    } catch (err) {
      throw new ReplError('FUSE_UNAVAILABLE', `cannot mount FUSE at ${this.mnt}: ${(err as Error).message}`, { cause: err })
    }
    if (user?.remountFlags !== undefined) {
      try {
        sys.remountBind(this.mnt, user.remountFlags)
      } catch (err) {
        await this.unmount()
        throw new ReplError('FUSE_UNAVAILABLE', `cannot set the mount options of ${this.mnt}: ${(err as Error).message}`, { cause: err })
      }
    }
  }

  /** Requests that read the tree wait from here to release(): the apply slice runs in between. */
  hold (): void { if (this.session !== null) loadLl().hold(this.session) }
  release (): void { if (this.session !== null) loadLl().release(this.session) }

  serve (_rvg: AdapterRvg, readOnly: boolean): void {
    if (!readOnly) throw new ReplError('UNSUPPORTED', 'the low-level transport serves read-only mounts only: remount with the compat transport')
  }

  async unmount (): Promise<void> {
    const s = this.session
    this.session = null
    this.unmounting = true
    if (s !== null) loadLl().unmount(s)
    for (const [fh] of this.handlesOpen) this.tree.close(fh)
    this.handlesOpen.clear()
  }

  private readonly handlesOpen = new Map<number, true>()

  private idOf (p: string): number {
    let id = this.ids.get(p)
    if (id === undefined) {
      id = this.paths.length
      this.paths.push(p)
      this.ids.set(p, id)
    }
    return id
  }

  /** A forwarded request, answered before it returns (the views are synchronous). */
  private handle (req: LlRequest): void {
    const ll = loadLl()
    const s = this.session
    if (req.op === 'gone') {
      if (!this.unmounting) this.options.onGone?.()
      return
    }
    if (s === null) return // unmounted: the transport answered it
    const p = this.paths[req.node]
    try {
      if (p === undefined) throw Object.assign(new Error('no such node'), { code: 'ESTALE' })
      switch (req.op) {
        case 'lookup': {
          const q = `${p}/${req.name ?? ''}`
          const st = this.tree.lstat(q)
          ll.replyEntry(s, req.id, this.idOf(q), statArray(st))
          return
        }
        case 'getattr': ll.replyAttr(s, req.id, statArray(this.tree.lstat(p))); return
        case 'readlink': ll.replyBuf(s, req.id, Buffer.from(this.tree.readlink(p))); return
        case 'opendir': this.tree.opendir(p); ll.replyOpen(s, req.id, 0); return
        case 'readdir': {
          const all = ['.', '..', ...this.tree.readdir(p)]
          const names: string[] = []
          const nodes: number[] = []
          const offsets: number[] = []
          const attrs = new Float64Array(Math.min(DIR_BATCH, Math.max(0, all.length - req.offset)) * STAT_FIELDS)
          for (let i = req.offset; i < all.length && names.length < DIR_BATCH; i++) {
            const name = all[i]
            let st: SnapshotStat
            let node = 0
            if (name === '.' || name === '..') {
              st = name === '.' || p === SNAPDIR ? this.tree.lstat(p) : this.tree.lstat(p.slice(0, p.lastIndexOf('/')))
            } else {
              const q = `${p}/${name}`
              try { st = this.tree.lstat(q) } catch { continue } // gone meanwhile (a snapshot deleted)
              node = this.idOf(q)
            }
            putStat(attrs, names.length * STAT_FIELDS, st)
            names.push(name)
            nodes.push(node)
            offsets.push(i + 1)
          }
          ll.replyDir(s, req.id, names, nodes, offsets, attrs)
          return
        }
        case 'releasedir': ll.replyErr(s, req.id, 0); return
        case 'open': {
          const fh = this.tree.open(p, req.flags)
          this.handlesOpen.set(fh, true)
          if (!ll.replyOpen(s, req.id, fh)) { this.tree.close(fh); this.handlesOpen.delete(fh) }
          return
        }
        case 'read': {
          const buf = Buffer.allocUnsafe(req.size)
          const n = this.tree.read(req.fh, buf, req.size, req.offset)
          ll.replyBuf(s, req.id, buf.subarray(0, n))
          return
        }
        case 'release': this.tree.close(req.fh); this.handlesOpen.delete(req.fh); ll.replyErr(s, req.id, 0); return
        case 'getxattr': ll.replyBuf(s, req.id, this.tree.getxattr(p, req.name ?? '')); return
        case 'listxattr': ll.replyBuf(s, req.id, Buffer.from(this.tree.listxattr(p).map((n) => n + '\0').join(''))); return
      }
    } catch (err) {
      ll.replyErr(s, req.id, -errnoFor(err))
    }
  }
}
