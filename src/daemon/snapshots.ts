/**
 * Snapshots as the daemons serve them: `replicafs snapshot create|list|delete|restore` over the
 * control socket, and the views under MOUNT/.snapshots/. The store itself is src/snapshot/.
 *
 * - create: between two records (PrimaryRvg/SecondaryRvg.exclusive), so a snapshot is exactly the
 *   tree after record `seq`; on a frozen Secondary that is the IBC message's point.
 * - restore on a Primary: the records that turn the tree back into the snapshot are journaled and
 *   applied like any change (inside exclusive()), so Secondaries follow and stay consistent.
 * - restore on a Secondary: refused while it runs (replication must be stopped); offline, see
 *   restore.ts.
 *
 * The Primary mount keeps libfuse's default 1 s attribute and entry caches, which only changes
 * made through the kernel invalidate. Changes the daemon makes by itself (a restore; a snapshot
 * deleted and re-created under the same name) would show old sizes, and short reads, for up to that
 * second: so the daemon waits it out (KERNEL_ATTR_CACHE_WAIT_MS) before it answers.
 */
import type { SnapshotSet, SnapshotInfo } from '../snapshot'
import type { SnapshotSource } from '../fuse/snapshots'
import type { PrimaryRvg } from '../rvg/primary'
import type { SecondaryRvg } from '../rvg/secondary'
import { RecordType } from '../format/record'
import { ReplError } from '../errors'
import { KERNEL_ATTR_CACHE_WAIT_MS } from '../limits'
import { VERIFY_SNAPSHOT_PREFIX } from '../sync'
import type { Logger } from './lifecycle'

export interface SnapshotRequest { cmd: string, op?: unknown, name?: unknown }

/** The views the mount shows under MOUNT/.snapshots/. */
export function snapshotSource (set: SnapshotSet): SnapshotSource {
  return {
    names: () => set.names(),
    view: (name) => set.view(name)
  }
}

/** A verify's snapshot outlives it only by a crash or a stop mid-verify: deleted at start. */
export function dropVerifySnapshots (set: SnapshotSet, log: Logger): void {
  for (const n of set.names()) {
    if (!n.startsWith(VERIFY_SNAPSHOT_PREFIX)) continue
    set.delete(n)
    log(`snapshot ${n} deleted: its verify did not finish before the last stop`)
  }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function nameOf (req: SnapshotRequest): string {
  if (typeof req.name !== 'string' || req.name === '') throw new ReplError('USAGE', 'a snapshot name is required')
  return req.name
}

/** The `snapshot` control command of one Primary daemon. */
export class PrimarySnapshots {
  /** When each name was last deleted: re-creating it waits out the kernel's attribute cache. */
  private readonly deletedAt = new Map<string, number>()

  constructor (private readonly set: SnapshotSet, private readonly rvg: PrimaryRvg, private readonly log: Logger) {}

  async command (req: SnapshotRequest): Promise<unknown> {
    switch (req.op) {
      case 'create': return await this.create(nameOf(req))
      case 'list': return this.set.list()
      case 'delete': {
        const name = nameOf(req)
        this.set.delete(name)
        this.deletedAt.set(name, Date.now())
        this.log(`snapshot ${name} deleted`)
        return { deleted: name }
      }
      case 'restore': return await this.restore(nameOf(req))
      default:
        throw new ReplError('PROTOCOL', `unknown snapshot operation ${String(req.op)}`)
    }
  }

  private async create (name: string): Promise<SnapshotInfo> {
    const at = this.deletedAt.get(name)
    if (at !== undefined && Date.now() - at < KERNEL_ATTR_CACHE_WAIT_MS) await pause(KERNEL_ATTR_CACHE_WAIT_MS - (Date.now() - at))
    this.deletedAt.delete(name)
    const info = await this.rvg.exclusive(async (seq) => this.set.create(name, seq))
    this.log(`snapshot ${name} created at sequence number ${info.seq}`)
    return info
  }

  /** Journaled: each record goes through the SRL (and to the Secondaries), then is applied. */
  private async restore (name: string): Promise<{ data: string, seq: number, records: number, note: null }> {
    const { set, rvg } = this
    const info = set.list().find((s) => s.name === name)
    if (info === undefined) throw new ReplError('NOT_FOUND', `no snapshot named ${name}`)
    const n = await rvg.exclusive(async (_seq, token) => {
      let count = 0
      for (const r of set.restoreRecords(name)) {
        // The generator compares the data directory with the snapshot as it goes: let each
        // write land before it looks again (writes are answered before they are applied).
        if (r.type === RecordType.WRITE) { await rvg.write(r.meta.p!, r.data, r.meta.o!, token); await rvg.barrier() } else await rvg.mutate(r.type, r.meta, token)
        count++
      }
      return count
    })
    this.log(`restored the data directory to snapshot ${name} (sequence number ${info.seq}) with ${n} journaled changes`)
    if (n > 0) await pause(KERNEL_ATTR_CACHE_WAIT_MS)
    return { data: rvg.root, seq: info.seq, records: n, note: null }
  }
}

/** The `snapshot` control command of a Secondary daemon (its mount caches nothing: no waits). */
export async function secondarySnapshotCommand (set: SnapshotSet, rvg: SecondaryRvg, req: SnapshotRequest, log: Logger): Promise<unknown> {
  switch (req.op) {
    case 'create': {
      const name = nameOf(req)
      const info: SnapshotInfo = await rvg.exclusive(async (seq) => set.create(name, seq))
      log(`snapshot ${name} created at sequence number ${info.seq}${rvg.held ? ' (frozen at an IBC message)' : ''}`)
      return info
    }
    case 'list': return set.list()
    case 'delete': {
      const name = nameOf(req)
      set.delete(name)
      log(`snapshot ${name} deleted`)
      return { deleted: name }
    }
    case 'restore':
      throw new ReplError('BUSY', 'a Secondary restores a snapshot only while replication is stopped: stop it first (replicafs stop --state DIR), then run snapshot restore again')
    default:
      throw new ReplError('PROTOCOL', `unknown snapshot operation ${String(req.op)}`)
  }
}
