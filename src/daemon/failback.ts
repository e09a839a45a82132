/**
 * `replicafs failback`'s change of a state directory (docs/ARCHITECTURE.md "Roles and generations"):
 * a Primary another host took over from becomes that host's Secondary. The running daemon does the
 * first half (src/daemon/primary.ts: a snapshot of its tree, then the intent, STATE/failback.json);
 * this file does the rest, and does it again at the next start after a crash at any step:
 *
 *   failback.json written      the old SRL (a Primary's) is moved aside to STATE/<old>, kept
 *   no STATE/srl               a new Secondary SRL is made in STATE/srl.new (it starts after record
 *                              `at`, follows the generation that took over, dials `peer` as JOIN
 *                              <our generation>, and holds the failback record), then renamed
 *   STATE/srl a Secondary's    failback.json is removed: done
 *
 * Every step is a rename or a write of a file that is only read after its rename, so a kill -9
 * anywhere leaves one of these states.
 */
import fs from 'node:fs'
import path from 'node:path'
import { Srl } from '../srl'
import { LogStore } from '../srl/state'
import { State, type Key, type Failback, type TookOver, type Dial, type Demoted } from '../format/state'
import { ReplError } from '../errors'
import type { Logger } from './lifecycle'

const INTENT = 'failback.json'

/** What failback.json holds: the record, and the size of the new SRL's ring. */
export interface FailbackIntent { record: Failback, ringBytes: number }

function fsyncDir (dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

/** Writes the intent durably (write, fsync, rename, fsync the directory). */
export function writeIntent (state: string, intent: FailbackIntent): void {
  const tmp = path.join(state, INTENT + '.tmp')
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    fs.writeSync(fd, JSON.stringify(intent) + '\n')
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, path.join(state, INTENT))
  fsyncDir(state)
}

function readIntent (state: string): FailbackIntent | null {
  let text: string
  try { text = fs.readFileSync(path.join(state, INTENT), 'utf8') } catch { return null }
  try {
    const v = JSON.parse(text) as FailbackIntent
    if (typeof v.record?.from !== 'string' || typeof v.record?.old !== 'string' || !Number.isSafeInteger(v.ringBytes)) throw new Error('fields missing')
    return v
  } catch (err) {
    throw new ReplError('LOG_CORRUPT', `${path.join(state, INTENT)} is damaged (${(err as Error).message}): the failback it records cannot be finished`)
  }
}

/**
 * Finishes a failback begun in `state` (see the top of this file); nothing if none was. Returns
 * the failback record when it finished one now.
 */
export async function finishFailback (state: string, log: Logger): Promise<Failback | null> {
  const intent = readIntent(state)
  if (intent === null) return null
  const { record } = intent
  const srlDir = path.join(state, 'srl')
  const fresh = path.join(state, 'srl.new')
  const role = (await roleState(state))?.role ?? null
  if (role === 'primary') {
    fs.renameSync(srlDir, path.join(state, record.old))
    fsyncDir(state)
    log(record.migrated === true
      ? `migrate: the Primary's SRL is kept in ${path.join(state, record.old)}`
      : `failback: the old SRL (the Primary's, with its ${record.paths === null ? 'many' : record.paths.length} changed paths after sequence number ${record.at}) is kept in ${path.join(state, record.old)}`)
  }
  if (role !== 'secondary') {
    fs.rmSync(fresh, { recursive: true, force: true })
    const srl = await Srl.open(fresh, { ringBytes: intent.ringBytes, role: 'secondary' })
    try {
      // Its tree is the new Primary's after record `at`, plus what it changed since (the
      // resynchronization by difference undoes that): its log starts there.
      await srl.restartAt(record.at)
      const puts: Array<[Key<unknown>, unknown]> = [
        [State.generation, record.by],
        [State.demoted, { how: record.migrated === true ? 'migrate' : 'failback', from: record.from, by: record.by.id, at: record.at, snapshot: record.snapshot, time: record.time }]
      ]
      // It dials the new Primary where it reached it; one that heard of it on its own listener
      // listens there (the new Primary dials it).
      if (record.peer !== null) puts.push([State.dial, { address: record.peer, name: record.from }])
      // A failback resynchronizes; a migrate has nothing to (every update was data-acked).
      if (record.migrated !== true) puts.push([State.failback, record])
      await srl.store.batch(puts)
      await copyRegistrations(path.join(state, record.old), srl, state)
    } finally {
      await srl.close()
    }
    fs.renameSync(fresh, srlDir)
    fsyncDir(state)
  }
  fs.rmSync(path.join(state, INTENT), { force: true })
  fsyncDir(state)
  return record
}

/** IBC registrations on this host stay registered (those of a cut `ibc run` flow do not). */
async function copyRegistrations (oldSrl: string, srl: Srl, state: string): Promise<void> {
  const dir = path.join(oldSrl, 'state')
  if (!fs.existsSync(dir)) return
  const store = await LogStore.open(dir, state)
  try {
    const regs = (await store.entries(State.ibcRegistered)).filter(([, v]) => v.task !== true)
    if (regs.length > 0) await srl.store.batch(regs.map(([k, v]) => [k, v]))
  } finally {
    await store.close()
  }
}

/**
 * What a state directory is, read before a daemon starts (its role may have changed since its
 * usual command was written): its role, the takeover that made it a Primary, the failback or
 * migrate that made it a Secondary, and where such a Secondary dials. Null when there is no state yet.
 */
export async function roleState (state: string): Promise<{ role: 'primary' | 'secondary' | null, tookOver: TookOver | null, dial: Dial | null, demoted: Demoted | null } | null> {
  const dir = path.join(state, 'srl', 'state')
  if (!fs.existsSync(dir)) return null
  const store = await LogStore.open(dir, state)
  try {
    const role = (await store.get(State.format))?.role ?? null
    return {
      role,
      tookOver: role === 'primary' ? (await store.get(State.tookOver)) ?? null : null,
      dial: role === 'secondary' ? (await store.get(State.dial)) ?? null : null,
      demoted: role === 'secondary' ? (await store.get(State.demoted)) ?? null : null
    }
  } finally {
    await store.close()
  }
}
