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
 * Given the RVG it serves (a Primary's), the mount is *journaled* (LL_JOURNALED): reads are
 * served in C as above (waiting for writes in flight to their inode: the RVG tells the transport
 * which, watchPending), every change is forwarded to src/fuse/ll-changes.ts, which journals it
 * through the same handlers as the compat transport. Names and attributes are kept 1 s by the
 * kernel (every change goes through the mount, and the kernel updates what it keeps from the
 * answers), files opened read-only keep their page cache; no FUSE passthrough yet (a write
 * answered before it is applied would not be seen through the backing file).
 */
import { loadLl, LL_PASSTHROUGH, LL_VOLATILE, LL_JOURNALED, type LlSession, type LlRequest, type LlChange } from '../native'
import { LlChanges } from './ll-changes'
import { constants as osc } from 'node:os'
import { SnapshotTree, SNAPDIR, type SnapshotSource, type SnapshotStat } from './snapshots'
import { applyRemountFlags, type AdapterOptions, type AdapterRvg, type ForwardedStats, type MountAdapter } from './adapter'
import type { LogSyncTarget } from './handlers'
import { errnoFor, ReplError } from '../errors'
import { LL_WRITE_BYTES_MAX } from '../limits'

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
/**
 * How long the kernel keeps a name it looked up (where it has epochs: changed() drops them all
 * whenever the daemon changes names). Short on purpose: were a change of names ever made without
 * changed(), a stale name would last this long at most.
 */
const NAME_TIMEOUT_S = 1
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

const CHANGE_OPS = new Set<string>(['setattr', 'mknod', 'mkdir', 'symlink', 'unlink', 'rmdir', 'rename', 'link', 'create', 'wopen', 'write', 'wread', 'wrelease', 'fsync', 'fsyncdir', 'setxattr', 'removexattr', 'fallocate'])
const EROFS = osc.errno.EROFS

/** Bytes a READDIRPLUS entry takes in the kernel's buffer (fuse_entry_out 128 + fuse_dirent 24 + the name, 8-aligned). */
const direntBytes = (name: string): number => (152 + Buffer.byteLength(name) + 7) & ~7

export class LlAdapter implements MountAdapter {
  snapshots: SnapshotSource | null = null
  private session: LlSession | null = null
  private readonly tree = new SnapshotTree(() => this.snapshots)
  /**
   * The forwarded nodes the kernel knows: id -> mount path and lookups it holds (the mount's root
   * is 0, never counted), and path -> id. A node goes when the kernel forgets its last lookup.
   */
  private readonly nodes = new Map<number, { path: string, lookups: number }>([[0, { path: '', lookups: 1 }]])
  private readonly ids = new Map<string, number>()
  private nextId = 1
  /** Listings of open forwarded directories, taken at opendir (offsets index them). */
  private readonly listings = new Map<number, string[]>()
  private nextDir = 1
  private readonly handlesOpen = new Set<number>()
  private unmounting = false
  /** A journaled mount's changes (a Primary's), or null: read-only. */
  private readonly changes: LlChanges | null
  private rvg: AdapterRvg | null

  /** `rvg`: serve a Primary's RVG, journaled; without it the mount is a Secondary's, read-only and volatile. */
  constructor (private readonly data: string, private readonly mnt: string, private readonly options: AdapterOptions = {}, rvg?: AdapterRvg) {
    this.rvg = rvg ?? null
    this.changes = rvg === undefined ? null : new LlChanges(rvg, false)
    if (this.changes !== null) this.changes.onOwnChange = () => this.changed()
  }

  get writable (): boolean { return this.changes !== null }
  readonly transport = 'll'

  get openHandles (): number { return this.session === null ? 0 : loadLl().stats(this.session).opens }

  get forwarded (): ForwardedStats | undefined {
    if (this.session === null) return undefined
    const s = loadLl().stats(this.session)
    return { count: s.forwarded, resolveSeconds: s.resolveNs / 1e9, queueSeconds: s.queueNs / 1e9, handleSeconds: s.handleNs / 1e9 }
  }

  get logSyncs (): number | undefined {
    return this.session === null || this.changes === null ? undefined : loadLl().stats(this.session).logSyncs
  }

  /** Whether the kernel granted FUSE passthrough (status, bench). */
  get passthrough (): boolean { return this.session !== null && loadLl().stats(this.session).passthrough }

  /** Forwarded nodes the kernel holds now (a test's view of the bookkeeping). */
  get forwardedNodes (): number { return this.nodes.size - 1 }

  async mount (): Promise<void> {
    const ll = loadLl()
    const user = this.options.mountOptions
    const journaled = this.changes !== null
    const opts = [...(journaled ? [] : ['ro']), 'default_permissions', 'allow_other', 'fsname=replicafs', 'subtype=replicafs', ...(user?.libfuse ?? [])].join(',')
    try {
      this.session = ll.mount(this.data, this.mnt, opts, NAME_TIMEOUT_S, journaled ? LL_JOURNALED : LL_PASSTHROUGH | LL_VOLATILE, SNAPDIR.slice(1), (req) => this.handle(req))
    } catch (err) {
      throw new ReplError('FUSE_UNAVAILABLE', `cannot mount FUSE at ${this.mnt}: ${(err as Error).message}`, { cause: err })
    }
    // A journaled write is one record: the addon asks the kernel for at most LL_WRITE_BYTES_MAX (the SRL format's bound).
    if (journaled && ll.stats(this.session).maxWrite !== LL_WRITE_BYTES_MAX) {
      await this.unmount()
      throw new ReplError('FUSE_UNAVAILABLE', `replicafs_ll's largest write is not the SRL's (${LL_WRITE_BYTES_MAX}): rebuild the addon`)
    }
    this.watch(this.rvg)
    await applyRemountFlags(this, this.mnt, user)
  }

  /** Requests that read the tree wait from here to release(): the apply slice runs in between. */
  hold (): void { if (this.session !== null) loadLl().hold(this.session) }
  /** Names changed (an apply slice with other records than writes, a synchronization's batch): the kernel drops every name it keeps. */
  changed (): void { if (this.session !== null) loadLl().changed(this.session) }
  release (): void { if (this.session !== null) loadLl().release(this.session) }
  /** Files changed, no name (an apply slice of writes, truncates, attribute changes): the kernel drops the attributes it keeps. */
  attrsChanged (): void { if (this.session !== null) loadLl().invalAttrs(this.session) }

  /**
   * The C side's reads wait for the writes in flight `rvg` names, and fsync makes its SRL durable
   * there, on the worker (logSync; `log` null: the handler's, through `rvg.sync()`).
   */
  private watch (rvg: AdapterRvg | null, log = rvg?.log ?? null): void {
    const s = this.session
    if (s === null || rvg === null || this.changes === null) return
    const ll = loadLl()
    rvg.watchPending?.((ino, busy) => { if (this.session === s) ll.pending(s, ino, busy) })
    this.log = log
    if (log !== null) ll.logSync(s, log.fd, log.published)
  }

  /** The SRL the addon makes durable on fsync (watch()), or null: fsync is the handler's. */
  private log: LogSyncTarget | null = null

  /** The addon synced the SRL's ring (logSync): the SRL hears what that made durable, or that it failed. */
  private takeSynced (s: LlSession): void {
    if (this.log === null) return
    const r = loadLl().logSynced(s)
    if (r.errno !== 0) this.log.failed(r.errno)
    else if (r.seq > 0) this.log.synced(r.seq, r.head)
  }

  /**
   * A journaled mount serves another RVG (a role transfer); a read-only one cannot become
   * writable (the daemon remounts with a journaled one).
   */
  serve (rvg: AdapterRvg, readOnly: boolean): void {
    if (this.changes === null) {
      if (!readOnly) throw new ReplError('UNSUPPORTED', 'this mount is read-only: remount it journaled')
      return
    }
    this.rvg?.watchPending?.(null)
    if (this.session !== null) {
      loadLl().pending(this.session, -1, false) // the old RVG's writes in flight are its own
      this.takeSynced(this.session) // and so is its SRL, and what the addon's syncs of it found
      loadLl().logSync(this.session, -1, null)
    }
    this.log = null
    this.rvg = rvg
    this.changes.serve(rvg, readOnly)
    this.watch(rvg, readOnly ? null : undefined)
  }

  async unmount (): Promise<void> {
    const s = this.session
    this.session = null
    this.unmounting = true
    this.rvg?.watchPending?.(null)
    if (s !== null) {
      loadLl().unmount(s) // (after it, no worker syncs any more)
      this.takeSynced(s) // a failed sync the notice of which came too late still fails the RVG
    }
    this.changes?.closeAll()
    for (const fh of this.handlesOpen) this.tree.close(fh)
    this.handlesOpen.clear()
    this.listings.clear()
  }

  /** The id of `p`, with one more lookup the kernel holds (`n` 0: an id only, for '.'-like uses). */
  private looked (p: string, n = 1): number {
    let id = this.ids.get(p)
    if (id === undefined) {
      id = this.nextId++
      this.ids.set(p, id)
      this.nodes.set(id, { path: p, lookups: 0 })
    }
    this.nodes.get(id)!.lookups += n
    return id
  }

  private forget (id: number, n: number): void {
    const node = this.nodes.get(id)
    if (node === undefined || id === 0) return
    node.lookups -= n
    if (node.lookups > 0) return
    this.nodes.delete(id)
    if (this.ids.get(node.path) === id) this.ids.delete(node.path)
  }

  /** A forwarded request, answered before it returns (the views are synchronous). */
  private handle (req: LlRequest): void {
    const ll = loadLl()
    const s = this.session
    if (req.op === 'gone') {
      if (!this.unmounting) this.options.onGone?.()
      return
    }
    if (req.op === 'forget') { this.forget(req.node, req.size); return }
    if (s === null) return // unmounted: the transport answered it
    if (req.op === 'synced') { this.takeSynced(s); return }
    if (CHANGE_OPS.has(req.op)) {
      try {
        if (this.changes !== null) this.changes.handle(ll, s, req as LlChange)
        else ll.replyErr(s, req.id, EROFS)
      } catch (err) {
        ll.replyErr(s, req.id, -errnoFor(err)) // (a no-op if it was answered before the throw)
      }
      return
    }
    const p = this.nodes.get(req.node)?.path
    try {
      if (p === undefined) throw Object.assign(new Error('no such node'), { code: 'ESTALE' })
      switch (req.op) {
        case 'lookup': {
          const q = `${p}/${req.name ?? ''}`
          const st = statArray(this.tree.lstat(q))
          const id = this.looked(q, 0)
          if (ll.replyEntry(s, req.id, id, st)) this.looked(q)
          else this.forget(id, 0)
          return
        }
        case 'getattr': ll.replyAttr(s, req.id, statArray(this.tree.lstat(p))); return
        case 'readlink': ll.replyBuf(s, req.id, Buffer.from(this.tree.readlink(p))); return
        case 'opendir': {
          this.tree.opendir(p)
          const fh = this.nextDir++
          this.listings.set(fh, ['.', '..', ...this.tree.readdir(p)])
          if (!ll.replyOpen(s, req.id, fh)) this.listings.delete(fh)
          return
        }
        case 'readdir': {
          const all = this.listings.get(req.fh) ?? []
          const names: string[] = []
          const nodes: number[] = []
          const offsets: number[] = []
          const stats: SnapshotStat[] = []
          let bytes = 0
          for (let i = req.offset; i < all.length && bytes < req.size; i++) {
            const name = all[i]
            let st: SnapshotStat
            let node = 0
            if (name === '.' || name === '..') {
              st = name === '.' || p === SNAPDIR ? this.tree.lstat(p) : this.tree.lstat(p.slice(0, p.lastIndexOf('/')))
            } else {
              const q = `${p}/${name}`
              try { st = this.tree.lstat(q) } catch { continue } // gone meanwhile (a snapshot deleted)
              node = this.looked(q, 0)
            }
            bytes += direntBytes(name)
            names.push(name)
            nodes.push(node)
            offsets.push(i + 1)
            stats.push(st)
          }
          const attrs = new Float64Array(names.length * STAT_FIELDS)
          stats.forEach((st, i) => putStat(attrs, i * STAT_FIELDS, st))
          const sent = ll.replyDir(s, req.id, names, nodes, offsets, attrs)
          // Each entry sent is a lookup the kernel holds; the ids of those not sent go if nothing else holds them.
          nodes.forEach((id, i) => { if (id !== 0) { if (sent !== false && i < sent) this.looked(this.nodes.get(id)!.path); else this.forget(id, 0) } })
          return
        }
        case 'releasedir': this.listings.delete(req.fh); ll.replyErr(s, req.id, 0); return
        case 'open': {
          const fh = this.tree.open(p, req.flags)
          this.handlesOpen.add(fh)
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
