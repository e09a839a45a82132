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
 */
import { SnapshotSet, type SnapshotInfo } from '../snapshot'
import type { SnapshotSource } from '../fuse/snapshots'
import type { PrimaryRvg } from './primary'
import type { SecondaryRvg } from './secondary'
import { RecordType } from '../format/record'
import { ReplError } from '../errors'

export function snapshotSource (set: SnapshotSet): SnapshotSource {
  return {
    names: () => set.names(),
    view: (name) => set.view(name)
  }
}

export interface SnapshotRequest { cmd: string, op?: unknown, name?: unknown }

/**
 * The Primary mount keeps libfuse's default 1 s attribute and entry caches, which only changes
 * made through the kernel invalidate. Changes the daemon makes by itself (a restore; a snapshot
 * deleted and re-created under the same name) would show old sizes, and short reads, for up to that
 * second: so the daemon waits it out before it answers.
 */
const KERNEL_ATTR_CACHE_MS = 1100
const deletedAt = new Map<string, number>()
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
async function waitOutDeletion (name: string): Promise<void> {
  const at = deletedAt.get(name)
  if (at !== undefined && Date.now() - at < KERNEL_ATTR_CACHE_MS) await pause(KERNEL_ATTR_CACHE_MS - (Date.now() - at))
  deletedAt.delete(name)
}

function nameOf (req: SnapshotRequest): string {
  if (typeof req.name !== 'string' || req.name === '') throw new ReplError('USAGE', 'a snapshot name is required')
  return req.name
}

export async function primarySnapshotOp (set: SnapshotSet, rvg: PrimaryRvg, req: SnapshotRequest, log: (l: string) => void): Promise<unknown> {
  switch (req.op) {
    case 'create': {
      const name = nameOf(req)
      await waitOutDeletion(name)
      const info = await rvg.exclusive(async (seq) => set.create(name, seq))
      log(`snapshot ${name} created at sequence number ${info.seq}`)
      return info
    }
    case 'list': return set.list()
    case 'delete': {
      const name = nameOf(req)
      set.delete(name)
      deletedAt.set(name, Date.now())
      log(`snapshot ${name} deleted`)
      return { deleted: name }
    }
    case 'restore': {
      const name = nameOf(req)
      const info = set.list().find((s) => s.name === name)
      if (info === undefined) throw new ReplError('USAGE', `no snapshot named ${name}`)
      // Journaled: each record goes through the SRL (and to the Secondaries), then is applied.
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
      log(`restored the data directory to snapshot ${name} (sequence number ${info.seq}) with ${n} journaled changes`)
      if (n > 0) await pause(KERNEL_ATTR_CACHE_MS)
      return { data: rvg.root, seq: info.seq, records: n, note: null }
    }
    default:
      throw new ReplError('USAGE', `unknown snapshot operation ${String(req.op)}`)
  }
}

export async function secondarySnapshotOp (set: SnapshotSet, rvg: SecondaryRvg, req: SnapshotRequest, log: (l: string) => void): Promise<unknown> {
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
      throw new ReplError('USAGE', 'a Secondary restores a snapshot only while replication is stopped: stop it first (replicafs stop --state DIR), then run snapshot restore again')
    default:
      throw new ReplError('USAGE', `unknown snapshot operation ${String(req.op)}`)
  }
}
