/**
 * The Secondary daemon: its SRL, the apply loop that keeps its data directory (SecondaryRvg), a
 * read-only mount, the RLINK listener, IBC, snapshots and the control socket.
 *
 * Start: directories -> SRL (its lock) -> data-directory lock -> a data directory that is not
 * empty while this Secondary never followed a Primary is refused -> stale mount -> IBC -> apply
 * what is logged -> mount -> listen -> control.
 * Stop: stop listening -> IBC timers -> unmount -> control socket -> finish applying, checkpoint,
 * close the SRL -> snapshots -> unlock.
 */
import path from 'node:path'
import type net from 'node:net'
import { Srl, isEmptyTree } from '../srl'
import { SyncReceiver, VerifyResponder } from '../sync'
import { SecondaryRvg } from '../rvg/secondary'
import { FuseAdapter, type AdapterRvg } from '../fuse/adapter'
import type { MountOptions } from '../fuse/mount-options'
import { RlinkReceiver } from '../rlink/receiver'
import { readSecret, type Address } from '../rlink/common'
import { ibcId } from '../ibc/primary'
import { IbcSecondary } from '../ibc/secondary'
import { handleIbc, type IbcRequest } from '../ibc/control'
import { secondaryStep, type TaskEnv } from '../ibc/task'
import { SnapshotSet } from '../snapshot'
import { serve, type ControlRequest } from '../control'
import { State, type Follow } from '../format/state'
import { sys } from '../native'
import { ReplError, IbcError, errnoError } from '../errors'
import { checkDirs, prepareState, lockDataDir, writeDaemonInfo, prepareMountPoint } from './host'
import { runSteps, closeControl, stopper, mountWatch, stopCommand, type Logger, type RunningDaemon } from './lifecycle'
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
}

/** What the read-only mount serves from: the data directory, every change refused. */
function readOnlyView (data: string): AdapterRvg {
  const refuse = (): Promise<never> => Promise.reject(errnoError('EROFS', 'a Secondary\'s mount is read-only'))
  return { root: data, barrier: () => Promise.resolve(), writesPending: () => false, write: refuse, mutate: refuse, sync: () => Promise.resolve() }
}

export async function runSecondary (cfg: SecondaryConfig, log: Logger): Promise<RunningDaemon> {
  const { data, mount } = checkDirs(cfg)
  const secret = readSecret(cfg.secretFile)
  const state = prepareState(cfg.state)
  const taskEnv: TaskEnv = { role: 'secondary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }

  let srl: Srl | null = null
  let unlockData: (() => void) | null = null
  let rvg: SecondaryRvg | null = null
  let adapter: FuseAdapter | null = null
  let server: net.Server | null = null
  let receiver: RlinkReceiver | null = null
  let sync: SyncReceiver | null = null
  let verify: VerifyResponder | null = null
  let ibc: IbcSecondary | null = null
  let snaps: SnapshotSet | null = null
  const watch = mountWatch(mount, log)

  const release = (): Promise<void> => runSteps([
    ['RLINK listener', async () => { await receiver?.close() }],
    ['IBC', () => { ibc?.close() }],
    ['unmount', async () => { await adapter?.unmount() }],
    closeControl(state, () => server),
    ['SRL', async () => { if (rvg) await rvg.close(); else if (srl) await srl.close() }],
    ['snapshots', async () => { if (snaps) { await snaps.sync(); snaps.close() } }],
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

  const { stopped, stop } = stopper(release, log, 'closing the RLINK, unmounting, applying and checkpointing the SRL')
  watch.arm(stop)
  rvg.onFatal = (err) => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }
  const secondary: Secondary = { cfg, data, mount, state, srl, rvg, receiver, ibc, snaps, sync, verify: verify!, stop, log }
  try {
    server = await serve(state, async (req, signal) => await secondaryCommand(secondary, req, signal))
  } catch (err) {
    await stop(1)
    throw err
  }
  return { stopped, stop }
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
        stalled: s.rvg.stalledOn,
        checkpointError: s.rvg.checkpointError,
        fatal: s.rvg.fatalError?.message ?? null
      }
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
