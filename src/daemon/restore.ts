/**
 * `replicafs snapshot restore NAME --state DIR`.
 *
 * - A running Primary restores online: the daemon journals the changes (src/daemon/snapshots.ts),
 *   so its Secondaries follow and stay consistent.
 * - A running Secondary refuses: replication must be stopped first.
 * - A stopped Secondary restores here, offline: its data directory is rolled back to the snapshot,
 *   and its SRL is reset to the snapshot's sequence number (everything after it is discarded, the
 *   apply cursor and any IBC hold too), so when it starts again it asks its Primary for the
 *   updates after the snapshot. If the Primary no longer holds them, it refuses the Secondary as
 *   STALE (a full synchronization is needed, which replicafs does not do yet).
 * - A stopped Primary is refused: start it, so the restore is journaled.
 *
 * The stopped daemon's state is opened with the classes the daemon itself uses (Srl, SnapshotSet,
 * IbcSecondary, SecondaryRvg), never by its raw keys or files.
 */
import path from 'node:path'
import { request, RemoteError } from '../control'
import { ReplError, isReplError } from '../errors'
import { Srl } from '../srl'
import { SnapshotSet } from '../snapshot'
import { IbcSecondary } from '../ibc/secondary'
import { SecondaryRvg } from '../rvg/secondary'
import { readDaemonInfo } from './host'

export interface OfflineRestoreResult { data: string, seq: number, note: string | null }

export async function restoreOffline (state: string, name: string): Promise<OfflineRestoreResult> {
  try {
    return await request(state, { cmd: 'snapshot', op: 'restore', name }, 24 * 3600 * 1000) as OfflineRestoreResult
  } catch (err) {
    if (err instanceof RemoteError || !isReplError(err, 'NOT_RUNNING')) throw err
  }
  const info = readDaemonInfo(state)
  if (info === null) throw new ReplError('DIR_MISSING', `no replicafs daemon has run with state directory ${state}`)
  if (info.role === 'primary') {
    throw new ReplError('NOT_RUNNING', `the Primary for ${state} is not running: start it and restore again (on a Primary the restore is journaled, so its Secondaries follow)`)
  }
  const srl = await Srl.open(path.join(state, 'srl'), { ringBytes: 0, role: 'secondary' })
  let set: SnapshotSet | null = null
  try {
    set = SnapshotSet.open(state, info.data)
    const snap = set.list().find((s) => s.name === name)
    if (snap === undefined) throw new ReplError('NOT_FOUND', `no snapshot named ${name} in ${state}`)
    const r = set.restore(name, { deleteNewer: true })
    // The data directory is now the Primary's tree after record snap.seq: the log says so too.
    await srl.resetTo(snap.seq)
    await IbcSecondary.forgetAfter(srl.store, snap.seq)
    SecondaryRvg.discardCursor(srl)
    const newer = r.deleted.length > 0 ? `; deleted the newer snapshots ${r.deleted.join(', ')}` : ''
    return {
      data: info.data,
      seq: snap.seq,
      note: `the Secondary will ask its Primary for the updates after sequence number ${snap.seq}${newer}`
    }
  } finally {
    set?.close()
    await srl.close()
  }
}
