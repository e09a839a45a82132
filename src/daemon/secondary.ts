/**
 * The Secondary daemon: its SRL, the apply loop that keeps its data directory (SecondaryRvg), a
 * read-only mount, the RLINK listener, IBC, snapshots and the control socket.
 *
 * Start: directories -> SRL (its lock) -> data-directory lock -> a data directory that is not
 * empty while this Secondary never followed a Primary is refused -> stale mount -> IBC -> apply
 * what is logged -> mount -> listen -> control.
 * Stop: stop listening -> IBC timers -> unmount -> control socket -> finish applying, checkpoint,
 * close the SRL -> snapshots -> unlock.
 *
 * Takeover (`replicafs takeover`, the Primary lost): stop listening -> apply every logged update
 * (IBC messages among them are not delivered) -> checkpoint, close the SRL -> state: role primary,
 * a new generation (one LevelDB batch) -> the Primary starts in this process over the same mount,
 * data-directory lock and control socket (runPrimary's handover), its mount read-write, listening
 * where this Secondary listened. A state directory taken over starts as the Primary from then on,
 * also from its usual `replicafs secondary` command.
 */
import fs from 'node:fs'
import path from 'node:path'
import { Srl, isEmptyTree } from '../srl'
import { LogStore } from '../srl/state'
import { SyncReceiver, VerifyResponder } from '../sync'
import { SecondaryRvg } from '../rvg/secondary'
import { FuseAdapter, type AdapterRvg } from '../fuse/adapter'
import type { MountOptions } from '../fuse/mount-options'
import { RlinkReceiver } from '../rlink/receiver'
import { readSecret, parseAddress, type Address } from '../rlink/common'
import { ibcId } from '../ibc/primary'
import { IbcSecondary } from '../ibc/secondary'
import { handleIbc, type IbcRequest } from '../ibc/control'
import { secondaryStep, type TaskEnv } from '../ibc/task'
import { SnapshotSet } from '../snapshot'
import { serve, type ControlRequest } from '../control'
import { State, type Follow, type TookOver } from '../format/state'
import { takeoverGeneration, shortGeneration } from '../format/generation'
import { sys } from '../native'
import { ReplError, IbcError, errnoError } from '../errors'
import { checkDirs, prepareState, lockDataDir, writeDaemonInfo, prepareMountPoint } from './host'
import { runSteps, type Step, closeControl, stopper, mountWatch, stopCommand, crashPoint, RoleDaemon, type Logger, type RunningDaemon, type ControlRoute } from './lifecycle'
import { runPrimary, type PrimaryConfig } from './primary'
import { snapshotSource, secondarySnapshotCommand, dropVerifySnapshots, type SnapshotRequest } from './snapshots'

export interface SecondaryConfig {
  data: string
  mount: string
  state: string
  srlBytes: number
  listen: Address
  secretFile: string
  rds: string
  /** How long an IBC message for a name not registered here holds replication before it is discarded. */
  ibcUnregisteredTimeoutS?: number
  /** Where `ibc run` finds this host's scripts (default STATE/tasks). */
  taskDir?: string
  /** `-o` mount options, checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /** --sync-existing: data here that never replicated from the Primary is made its by difference. */
  syncExisting?: boolean
}

/** What a started Secondary is made of: what its control commands work on. */
interface Secondary {
  cfg: SecondaryConfig
  data: string
  mount: string
  state: string
  srl: Srl
  rvg: SecondaryRvg
  receiver: RlinkReceiver
  ibc: IbcSecondary
  snaps: SnapshotSet
  /** Full synchronization from the Primary (src/sync/). */
  sync: SyncReceiver | null
  verify: VerifyResponder
  stop: RunningDaemon['stop']
  log: Logger
  /** `replicafs takeover`: this Secondary becomes the Primary (see the top of this file). */
  takeover: () => Promise<unknown>
}

/** What the read-only mount serves from: the data directory, every change refused. */
function readOnlyView (data: string): AdapterRvg {
  const refuse = (): Promise<never> => Promise.reject(errnoError('EROFS', 'a Secondary\'s mount is read-only'))
  return { root: data, barrier: () => Promise.resolve(), writesPending: () => false, write: refuse, mutate: refuse, sync: () => Promise.resolve() }
}

/** The Primary a Secondary becomes by takeover: the same directories, secret and RDS, listening where it listened, no Secondaries yet. */
export function primaryConfigOf (cfg: SecondaryConfig, listen: Address): PrimaryConfig {
  return {
    data: cfg.data,
    mount: cfg.mount,
    state: cfg.state,
    srlBytes: cfg.srlBytes,
    journal: true,
    retain: false,
    secondaries: [],
    secretFile: cfg.secretFile,
    synchronous: 'off',
    rds: cfg.rds,
    taskDir: cfg.taskDir,
    mountOptions: cfg.mountOptions,
    listen
  }
}

/** A state directory that became a Primary's by takeover: its TookOver record; else null (also when there is no state yet). */
async function tookOverState (state: string): Promise<TookOver | null> {
  const dir = path.join(state, 'srl', 'state')
  if (!fs.existsSync(dir)) return null
  const store = await LogStore.open(dir, state)
  try {
    const format = await store.get(State.format)
    if (format?.role !== 'primary') return null
    return (await store.get(State.tookOver)) ?? null
  } finally {
    await store.close()
  }
}

export async function runSecondary (cfg: SecondaryConfig, log: Logger): Promise<RunningDaemon> {
  const { data, mount } = checkDirs(cfg)
  const secret = readSecret(cfg.secretFile)
  const state = prepareState(cfg.state)
  const took = await tookOverState(state)
  if (took !== null) {
    log(`this state directory became a Primary by takeover (${took.time}: generation ${shortGeneration(took.generation)} after sequence number ${took.at}); starting it as the Primary`)
    return await runPrimary(primaryConfigOf(cfg, cfg.listen), log)
  }
  const taskEnv: TaskEnv = { role: 'secondary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }

  let srl: Srl | null = null
  let unlockData: (() => void) | null = null
  let rvg: SecondaryRvg | null = null
  let adapter: FuseAdapter | null = null
  const control: ControlRoute = { server: null, route: () => Promise.reject(new ReplError('BUSY', 'the daemon is starting')) }
  let receiver: RlinkReceiver | null = null
  let sync: SyncReceiver | null = null
  let verify: VerifyResponder | null = null
  let ibc: IbcSecondary | null = null
  let snaps: SnapshotSet | null = null
  const watch = mountWatch(mount, log)

  const stopListening: Step = ['RLINK listener', async () => { await receiver?.close() }]
  const stopIbc: Step = ['IBC', () => { ibc?.close() }]
  const closeSrl: Step = ['SRL', async () => { if (rvg) await rvg.close(); else if (srl) await srl.close() }]
  const closeSnapshots: Step = ['snapshots', async () => { if (snaps) { await snaps.sync(); snaps.close() } }]
  const release = (): Promise<void> => runSteps([
    stopListening,
    stopIbc,
    ['unmount', async () => { await adapter?.unmount() }],
    closeControl(state, () => control.server),
    closeSrl,
    closeSnapshots,
    ['data directory lock', () => { unlockData?.() }]
  ], log)

  try {
    srl = await Srl.open(path.join(state, 'srl'), { ringBytes: cfg.srlBytes, role: 'secondary', dataDir: data })
    if (srl.format.ringBytes !== cfg.srlBytes) log(`SRL size stays ${srl.format.ringBytes} bytes (set when the state directory was created)`)
    unlockData = lockDataDir(data)
    writeDaemonInfo(state, { role: 'secondary', data, mount })
    let followed: Follow | null = (await srl.store.get(State.follow)) ?? null
    if (followed === null && srl.lastSeq === 0 && cfg.syncExisting !== true && !isEmptyTree(data) && (await srl.store.get(State.sync)) === undefined) {
      throw new ReplError('DIR_NOT_EMPTY', `data directory ${data} is not empty, and this Secondary has never replicated: start it on an empty data directory, or with --sync-existing to have this data made the Primary's by difference`)
    }
    await prepareMountPoint(mount, log)
    ibc = await IbcSecondary.open(srl.store, { unregisteredTimeoutS: cfg.ibcUnregisteredTimeoutS })
    ibc.log = log
    rvg = new SecondaryRvg(data, srl, {
      log,
      ibc,
      ibcId: (seq) => {
        followed = receiver?.follow ?? followed
        return ibcId(followed?.srlId ?? '', seq)
      }
    })
    snaps = SnapshotSet.open(state, data, { log })
    dropVerifySnapshots(snaps, log)
    rvg.snapshots = snaps
    for (const w of srl.warnings) log(w)
    await abortCutTasks(ibc, taskEnv, log)
    await rvg.recover()
    if (rvg.appliedSeq > 0) log(`applied everything logged, up to sequence number ${rvg.appliedSeq}`)
    rvg.start()
    adapter = new FuseAdapter(readOnlyView(data), mount, { readOnly: true, mountOptions: cfg.mountOptions, onGone: watch.onGone })
    adapter.snapshots = snapshotSource(snaps)
    await adapter.mount()
    sys.cloexecFrom(3)
    const tasksIbc = ibc
    const applier = rvg
    const theSrl = srl
    const theSnaps = snaps
    sync = await SyncReceiver.open(data, srl.store, cfg.syncExisting === true, !srl.cacheKept, (seq) => applier.restartAt(seq), async () => {
      if (applier.appliedSeq >= theSrl.lastSeq) return
      log(`applying the ${theSrl.lastSeq - applier.appliedSeq} logged updates before the synchronization`)
      // Resolves once they are applied; rejects if the apply loop stopped or is frozen at an IBC message before them.
      await applier.at(theSrl.lastSeq, async () => {})
    }, log, {
      consistent: () => theSrl.lastSeq > 0,
      take: async (name) => { await applier.exclusive(async (seq) => theSnaps.create(name, seq)) },
      drop: (name) => theSnaps.delete(name),
      names: () => theSnaps.names(),
      preserver: { get active () { return theSnaps.latest !== null }, beforeApply: (rec) => theSnaps.beforeApply(rec) }
    })
    // Online verify: its snapshot is taken between the records it names (SecondaryRvg.at).
    verify = new VerifyResponder({
      takeAt: async (seq, name) => {
        await applier.at(seq, async (at) => { theSnaps.create(name, at) })
        const view = theSnaps.view(name)
        if (view === null) throw new ReplError('NOT_FOUND', `snapshot ${name} vanished`)
        return view
      },
      drop: (name) => theSnaps.delete(name)
    }, log)
    receiver = new RlinkReceiver({
      sync,
      verify,
      listen: cfg.listen,
      secret,
      rds: cfg.rds,
      rvg,
      store: srl.store,
      log,
      task: (task, step, timeoutS) => secondaryStep(taskEnv, tasksIbc, task, step, timeoutS)
    })
    await receiver.start()
    log(`listening for the Primary on ${receiver.address} (RDS ${cfg.rds})`)
  } catch (err) {
    await release()
    throw err
  }

  const self = stopper(release, log, 'closing the RLINK, unmounting, applying and checkpointing the SRL')
  const { stop } = self
  const daemon = new RoleDaemon(self)
  watch.arm(stop)
  rvg.onFatal = (err) => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }

  let taking = false
  const theSrl = srl
  const theRvg = rvg
  const theReceiver = receiver
  const theIbc = ibc
  const theSync = sync
  const theAdapter = adapter
  const theUnlock = unlockData!
  const takeover = async (): Promise<unknown> => {
    if (taking) throw new ReplError('BUSY', 'a takeover is already under way')
    if (theReceiver.connected) {
      throw new ReplError('PRIMARY_CONNECTED', `the Primary at ${theReceiver.primaryAddress ?? '?'} is connected: takeover is for a Primary that is lost (stop it first, on its host, to move the Primary role here)`)
    }
    if (theReceiver.follow === null && theSrl.lastSeq === 0) throw new ReplError('NOT_REPLICATED', 'this Secondary has never replicated from a Primary: there is nothing to take over')
    if (theSync?.syncing != null) throw new ReplError('INCONSISTENT', `this Secondary is being synchronized (${theSync.syncing}): its tree is not a consistent copy of the Primary's, so it cannot take over`)
    if (!theRvg.consistent) throw new ReplError('INCONSISTENT', `this Secondary is inconsistent (${theRvg.fatalError?.message ?? theRvg.stalledOn ?? 'its tree diverged from the Primary\'s'}), so it cannot take over`)
    // Once begun it goes on to the end (a second request is refused BUSY), unless applying fails:
    // then this host stays a Secondary and listens again.
    taking = true
    const appliedBefore = theRvg.appliedSeq
    const prev = theReceiver.generation
    // Nothing more arrives; everything logged is applied, IBC messages among it passed over.
    await theReceiver.close()
    try {
      await theIbc.passThrough('a takeover applies every logged update')
      await theRvg.at(theSrl.lastSeq, async () => {})
    } catch (err) {
      await theIbc.passThrough(null)
      await theReceiver.start()
      taking = false
      throw new ReplError('APPLY_FAILED', `takeover: cannot apply the logged updates (${(err as Error).message}); this host stays a Secondary`)
    }
    const at = theSrl.lastSeq
    const applied = at - appliedBefore
    log(`takeover: applied every logged update, up to sequence number ${at} (${applied} of them were not applied yet)`)
    crashPoint('takeover-applied')
    // The Secondary's parts stop (the apply loop checkpoints: a crash from here on replays nothing
    // it applied); the mount, the data-directory lock and the control socket stay.
    await runSteps([stopIbc, closeSrl, closeSnapshots], log)
    const gen = takeoverGeneration(prev, at)
    const record: TookOver = { at, applied, from: prev?.id ?? null, generation: gen.id, time: new Date().toISOString() }
    const store = await LogStore.open(path.join(state, 'srl', 'state'), state)
    try {
      const format = await store.get(State.format)
      if (format === undefined) throw new ReplError('LOG_CORRUPT', `the SRL state in ${state} has no format record`)
      // One batch: a crash leaves this state a Secondary's (re-run takeover) or the new Primary's.
      await store.batch([[State.format, { ...format, role: 'primary' }], [State.generation, gen], [State.tookOver, record], [State.baseline, 'data']], [State.follow, State.sync])
    } finally {
      await store.close()
    }
    crashPoint('takeover-recorded')
    log(`takeover: this host is now the Primary, generation ${shortGeneration(gen)}${prev === null ? '' : ` (continuing generation ${shortGeneration(prev)} after sequence number ${at})`}`)
    let primary: RunningDaemon
    try {
      primary = await runPrimary(primaryConfigOf(cfg, parseAddress(theReceiver.address, 'listen', true)), log, { data, mount, adapter: theAdapter, unlockData: theUnlock, watch, control })
    } catch (err) {
      // The state says Primary: the next start of this state directory starts it. This process ends.
      log(`takeover: the Primary did not start: ${(err as Error).message}; stopping`)
      stop(1).catch(() => {})
      throw err
    }
    daemon.set(primary)
    return { role: 'primary', generation: gen.id, previous: prev?.id ?? null, seq: at, applied, discarded: 0 }
  }

  const secondary: Secondary = { cfg, data, mount, state, srl, rvg, receiver, ibc, snaps, sync, verify: verify!, stop, log, takeover }
  control.route = async (req, signal) => await secondaryCommand(secondary, req, signal)
  try {
    control.server = await serve(state, async (req, signal) => await control.route(req, signal))
  } catch (err) {
    await stop(1)
    throw err
  }
  return daemon
}

/**
 * An `ibc run` cut short by a restart of this Secondary is aborted (unfrozen, unregistered): never
 * stay frozen for a lost flow. After the apply loop exists, which an unfreeze releases.
 */
async function abortCutTasks (ibc: IbcSecondary, taskEnv: TaskEnv, log: Logger): Promise<void> {
  for (const reg of ibc.registry.list().filter((r) => r.task === true)) {
    log(`ibc run ${reg.name} did not finish before the last stop; unfreezing and unregistering it`)
    await secondaryStep(taskEnv, ibc, reg.name, 'abort', 0).catch((err: Error) => log(`ibc run ${reg.name}: ${err.message}`))
  }
}

/** The Secondary's control commands (src/control; the CLI's clients). */
async function secondaryCommand (s: Secondary, req: ControlRequest, signal: AbortSignal): Promise<unknown> {
  switch (req.cmd) {
    case 'ibc':
      return await handleIbc({ secondary: s.ibc }, req as IbcRequest, signal)
    case 'ibc-run':
      throw new IbcError('EIBC_WRONG_ROLE', 'ibc run runs on the Primary; this daemon is a Secondary')
    case 'verify':
      throw new ReplError('WRONG_ROLE', 'verify runs on the Primary (it compares its tree with a Secondary\'s); this daemon is a Secondary')
    case 'snapshot':
      return await secondarySnapshotCommand(s.snaps, s.rvg, req as SnapshotRequest, s.log)
    case 'status':
      return {
        role: 'secondary',
        pid: process.pid,
        data: s.data,
        mount: s.mount,
        state: s.state,
        rds: s.cfg.rds,
        listen: s.receiver.address,
        srl: s.srl.stats(s.rvg.appliedSeq),
        receivedSeq: s.rvg.receivedSeq,
        appliedSeq: s.rvg.appliedSeq,
        consistent: s.rvg.consistent && s.sync?.syncing == null,
        syncing: s.sync?.syncing ?? null,
        syncSnapshot: s.sync?.snapshot ?? null,
        sync: s.sync?.progress ?? null,
        verify: s.verify.progress,
        frozen: s.ibc.frozen,
        ibc: s.ibc.status(),
        connected: s.receiver.connected,
        primary: { address: s.receiver.primaryAddress, srlId: s.receiver.follow?.srlId ?? null },
        generation: s.receiver.generation === null ? null : { id: s.receiver.generation.id, since: s.receiver.generation.since },
        stalled: s.rvg.stalledOn,
        checkpointError: s.rvg.checkpointError,
        fatal: s.rvg.fatalError?.message ?? null
      }
    case 'takeover':
      return await s.takeover()
    case 'sync':
      await s.srl.sync()
      return { synced: s.srl.lastSeq }
    case 'pause':
    case 'resume':
      throw new ReplError('WRONG_ROLE', `${req.cmd} runs on the Primary (VVR's pauserep/resumerep); this daemon is a Secondary`)
    case 'stop':
      return stopCommand(s.stop)
    default:
      throw new ReplError('PROTOCOL', `unknown control command ${String(req.cmd)}`)
  }
}
