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
 *
 * Failback runs the other way (src/daemon/primary.ts, failback.ts): a Primary taken over becomes
 * a Secondary here, handed the mount (runSecondary's handover); it dials its Primary (state `dial`)
 * instead of listening. startPrimary, what `replicafs primary` runs, starts such a state directory
 * as that Secondary.
 */
import path from 'node:path'
import { Srl, isEmptyTree } from '../srl'
import { LogStore } from '../srl/state'
import { SyncReceiver, VerifyResponder } from '../sync'
import { SecondaryRvg } from '../rvg/secondary'
import { FuseAdapter, DEFAULT_SECONDARY_TRANSPORT, type AdapterRvg, type MountAdapter, type FuseTransport } from '../fuse/adapter'
import { LlAdapter, llUnavailable } from '../fuse/ll-adapter'
import type { MountOptions } from '../fuse/mount-options'
import { RlinkReceiver, type MigrateAnswer } from '../rlink/receiver'
import { readSecret, parseAddress, formatAddress, type Address } from '../rlink/common'
import { loadTls, type TlsFiles } from '../rlink/tls'
import { ibcId } from '../ibc/primary'
import { IbcSecondary } from '../ibc/secondary'
import { handleIbc, type IbcRequest } from '../ibc/control'
import { secondaryStep, type TaskEnv } from '../ibc/task'
import { SnapshotSet } from '../snapshot'
import { serve, type ControlRequest } from '../control'
import { JOIN_PREFIX } from '../rlink/link'
import { State, type Key, type Generation, type Follow, type TookOver, type Failback, type Dial, type Demoted } from '../format/state'
import { takeoverGeneration, shortGeneration, takenOverAt } from '../format/generation'
import { sys } from '../native'
import { ReplError, IbcError, errnoError, errorCounts } from '../errors'
import { checkDirs, prepareState, lockDataDir, writeDaemonInfo, prepareMountPoint } from './host'
import { runSteps, type Step, closeControl, stopper, mountWatch, stopCommand, crashPoint, RoleDaemon, routed, serveMetricsOnce, type Logger, type RunningDaemon, type ControlRoute, type Handover } from './lifecycle'
import { runPrimary, type PrimaryConfig } from './primary'
import { finishFailback, roleState } from './failback'
import { snapshotSource, secondarySnapshotCommand, dropVerifySnapshots, type SnapshotRequest } from './snapshots'

export interface SecondaryConfig {
  data: string
  mount: string
  state: string
  srlBytes: number
  /** Where the Primary dials this Secondary (absent: a failed-back host, which dials its Primary: state `dial`). */
  listen?: Address
  secretFile: string
  rds: string
  /** --metrics: where to serve Prometheus text at /metrics (src/metrics). */
  metrics?: Address
  /** How long an IBC message for a name not registered here holds replication before it is discarded. */
  ibcUnregisteredTimeoutS?: number
  /** Where `ibc run` finds this host's scripts (default STATE/tasks). */
  taskDir?: string
  /** `-o` mount options, checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /** --fuse: the mount's transport (default `ll`: libfuse 3's low-level API in replicafs_ll; `compat`: fuse-native). */
  fuse?: FuseTransport
  /** --sync-existing: data here that never replicated from the Primary is made its by difference. */
  syncExisting?: boolean
  /** A Secondary that was a Primary (failback, migrate): its Primary options, should it become one again. */
  asPrimary?: PrimaryConfig
  /** --tls-cert, --tls-key, --tls-ca (and a pinned fingerprint): TLS on the RLINK; absent: plain TCP. */
  tls?: TlsFiles | null
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
  /** A failed-back host not yet resynchronized, or null. */
  failback: () => Failback | null
  /** Where it dials its Primary (a failed-back host), or null: it listens. */
  dial: Dial | null
  /** It was the Primary until failback or migrate made it this Secondary, or null. */
  demoted: Demoted | null
  adapter: MountAdapter
}

/** What the read-only mount serves from: the data directory, every change refused. */
function readOnlyView (data: string): AdapterRvg {
  const refuse = (): Promise<never> => Promise.reject(errnoError('EROFS', 'a Secondary\'s mount is read-only'))
  return { root: data, barrier: () => Promise.resolve(), writesPending: () => false, write: refuse, mutate: refuse, sync: () => Promise.resolve() }
}

/** The Primary a Secondary becomes by takeover: the same directories, secret and RDS, listening where it listened, no Secondaries yet. */
export function primaryConfigOf (cfg: SecondaryConfig, listen: Address | undefined, secondaries: string[] = []): PrimaryConfig {
  return {
    data: cfg.data,
    mount: cfg.mount,
    state: cfg.state,
    srlBytes: cfg.srlBytes,
    journal: true,
    retain: false,
    secondaries,
    secretFile: cfg.secretFile,
    synchronous: 'off',
    rds: cfg.rds,
    taskDir: cfg.taskDir,
    mountOptions: cfg.mountOptions,
    listen,
    metrics: cfg.metrics,
    tls: cfg.tls ?? null,
    compress: cfg.asPrimary?.compress,
    bandwidthLimit: cfg.asPrimary?.bandwidthLimit
  }
}

/** The Secondary a Primary becomes by failback: the same directories, secret and RDS; it dials or listens as its state says. */
function secondaryConfigOf (cfg: PrimaryConfig): SecondaryConfig {
  return {
    data: cfg.data,
    mount: cfg.mount,
    state: cfg.state,
    srlBytes: cfg.srlBytes,
    listen: cfg.listen,
    secretFile: cfg.secretFile ?? '',
    rds: cfg.rds,
    taskDir: cfg.taskDir,
    mountOptions: cfg.mountOptions,
    metrics: cfg.metrics,
    asPrimary: cfg,
    tls: cfg.tls ?? null
  }
}

/**
 * `replicafs primary`: the Primary, unless its state directory was failed back (it starts as the
 * Secondary it became, finishing a failback a crash cut short first: src/daemon/failback.ts).
 */
export async function startPrimary (cfg: PrimaryConfig, log: Logger): Promise<RunningDaemon> {
  const state = prepareState(cfg.state)
  if (cfg.journal) {
    const done = await finishFailback(state, log)
    if (done !== null) log(`failback: finished the change of this state directory begun ${done.time}`)
    // A Primary that failback or migrate made a Secondary: its usual command starts that Secondary
    // (it dials its Primary, or listens at this Primary's --listen address).
    const rs = await roleState(state)
    if (rs?.role === 'secondary' && rs.demoted !== null) {
      log(`this state directory became a Secondary by ${rs.demoted.how}: starting it as the Secondary ${rs.dial !== null ? `of ${rs.dial.address}` : 'listening for its Primary'}`)
      return await runSecondary(secondaryConfigOf(cfg), log)
    }
  }
  return await runPrimary(cfg, log, undefined, async (h) => await runSecondary(secondaryConfigOf(cfg), log, h))
}

export async function runSecondary (cfg: SecondaryConfig, log: Logger, handover?: Handover): Promise<RunningDaemon> {
  const { data, mount } = handover ?? checkDirs(cfg)
  const secret = readSecret(cfg.secretFile)
  const tls = cfg.tls != null ? loadTls(cfg.tls) : null
  const state = prepareState(cfg.state)
  if (handover === undefined) {
    const done = await finishFailback(state, log)
    if (done !== null) log(`failback: finished the change of this state directory begun ${done.time}`)
  }
  const roles = await roleState(state)
  const took = roles?.tookOver ?? null
  const dial = roles?.dial ?? null
  if (took !== null) {
    log(`this state directory became a Primary by takeover (${took.time}: generation ${shortGeneration(took.generation)} after sequence number ${took.at}); starting it as the Primary`)
    return await runPrimary(primaryConfigOf(cfg, cfg.listen), log, undefined, async (h) => await runSecondary(cfg, log, h))
  }
  if (dial === null && cfg.listen === undefined) throw new ReplError('USAGE', `the Secondary of state directory ${state} has no --listen address`)
  if (dial !== null && cfg.listen !== undefined && handover === undefined) log(`this Secondary dials its Primary at ${dial.address} (it was made so by failback); --listen ${formatAddress(cfg.listen)} is not used`)
  const taskEnv: TaskEnv = { role: 'secondary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }

  let srl: Srl | null = null
  let unlockData: (() => void) | null = handover?.unlockData ?? null
  let rvg: SecondaryRvg | null = null
  let adapter: MountAdapter | null = handover?.adapter ?? null
  const control: ControlRoute = handover?.control ?? { server: null, route: () => Promise.reject(new ReplError('BUSY', 'the daemon is starting')) }
  let receiver: RlinkReceiver | null = null
  let sync: SyncReceiver | null = null
  let verify: VerifyResponder | null = null
  let ibc: IbcSecondary | null = null
  let snaps: SnapshotSet | null = null
  /** A failed-back host not yet resynchronized (state `failback`). */
  let failback: Failback | null = null
  const watch = handover?.watch ?? mountWatch(mount, log)

  const stopListening: Step = ['RLINK listener', async () => { await receiver?.close() }]
  const stopIbc: Step = ['IBC', () => { ibc?.close() }]
  const closeSrl: Step = ['SRL', async () => { if (rvg) await rvg.close(); else if (srl) await srl.close() }]
  const closeSnapshots: Step = ['snapshots', async () => { if (snaps) { await snaps.sync(); snaps.close() } }]
  const release = (): Promise<void> => runSteps([
    stopListening,
    stopIbc,
    ['unmount', async () => { await adapter?.unmount() }],
    closeControl(state, control),
    closeSrl,
    closeSnapshots,
    ['data directory lock', () => { unlockData?.() }]
  ], log)

  try {
    srl = await Srl.open(path.join(state, 'srl'), { ringBytes: cfg.srlBytes, role: 'secondary', dataDir: data })
    if (srl.format.ringBytes !== cfg.srlBytes) log(`SRL size stays ${srl.format.ringBytes} bytes (set when the state directory was created)`)
    if (handover === undefined) unlockData = lockDataDir(data)
    writeDaemonInfo(state, { role: 'secondary', data, mount })
    let followed: Follow | null = (await srl.store.get(State.follow)) ?? null
    failback = (await srl.store.get(State.failback)) ?? null
    if (followed === null && srl.lastSeq === 0 && cfg.syncExisting !== true && failback === null && !isEmptyTree(data) && (await srl.store.get(State.sync)) === undefined) {
      throw new ReplError('DIR_NOT_EMPTY', `data directory ${data} is not empty, and this Secondary has never replicated: start it on an empty data directory, or with --sync-existing to have this data made the Primary's by difference`)
    }
    if (handover === undefined) await prepareMountPoint(mount, log)
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
    // A Primary's journaled ll mount keeps names, attributes and pages the apply would change
    // under it: a demoted Primary's is replaced by a Secondary's (its open files end, ENOTCONN).
    const remount = handover !== undefined && handover.adapter.transport === 'll' && handover.adapter.writable
    if (handover !== undefined && !remount) {
      handover.adapter.snapshots = snapshotSource(snaps)
      handover.adapter.serve(readOnlyView(data), true)
    } else {
      if (handover !== undefined) {
        log(`remounting ${mount} read-only (the Primary's ${handover.adapter.openHandles} open files through it are closed)`)
        await handover.adapter.unmount()
      }
      const options = { readOnly: true, mountOptions: cfg.mountOptions, onGone: watch.onGone }
      let transport = cfg.fuse ?? DEFAULT_SECONDARY_TRANSPORT
      const why = cfg.fuse === undefined && transport === 'll' ? llUnavailable() : null
      if (why !== null) {
        log(`the low-level FUSE transport cannot serve here (${why}); mounting with --fuse compat`)
        transport = 'compat'
      }
      adapter = transport === 'll' ? new LlAdapter(data, mount, options) : new FuseAdapter(readOnlyView(data), mount, options)
      adapter.snapshots = snapshotSource(snaps)
      await adapter.mount()
    }
    // A transport whose readers do not share the event loop with the apply (replicafs_ll) holds them off each slice.
    const a = adapter!
    if (a.hold !== undefined && a.release !== undefined) rvg.readers = { hold: () => a.hold!(), release: () => a.release!(), changed: () => a.changed?.(), attrsChanged: () => a.attrsChanged?.() }
    sys.cloexecFrom(3)
    const tasksIbc = ibc
    const applier = rvg
    const theSrl = srl
    const theSnaps = snaps
    sync = await SyncReceiver.open(data, srl.store, cfg.syncExisting === true, !srl.cacheKept, async (seq) => {
      await applier.restartAt(seq)
      // A failed-back host is resynchronized: what it changed is the new Primary's now.
      if (failback !== null) {
        const f = failback
        await theSrl.store.del(State.failback)
        failback = null
        log(`failback: resynchronized from the Primary (generation ${shortGeneration(f.by)}); this host's tree as it was stays in snapshot ${f.snapshot}`)
      }
    }, async () => {
      if (applier.appliedSeq >= theSrl.lastSeq) return
      log(`applying the ${theSrl.lastSeq - applier.appliedSeq} logged updates before the synchronization`)
      // Resolves once they are applied; rejects if the apply loop stopped or is frozen at an IBC message before them.
      await applier.at(theSrl.lastSeq, async () => {})
    }, log, {
      // A failed-back host's tree holds its orphaned writes: already kept in its failback snapshot.
      consistent: () => theSrl.lastSeq > 0 && failback === null,
      take: async (name) => { await applier.exclusive(async (seq) => theSnaps.create(name, seq)) },
      drop: (name) => theSnaps.delete(name),
      names: () => theSnaps.names(),
      preserver: { get active () { return theSnaps.latest !== null }, beforeApply: (rec) => theSnaps.beforeApply(rec) }
    })
    sync.onChanged = () => adapter?.changed?.()
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
      listen: dial === null ? cfg.listen : undefined,
      dial: dial === null ? undefined : { address: parseAddress(dial.address, 'secondary'), name: dial.name },
      failback: () => failback === null ? null : { gen: failback.from, at: failback.at, paths: failback.paths },
      migrate: async (gen, at) => await migrateHere(gen, at),
      secret,
      tls,
      rds: cfg.rds,
      rvg,
      store: srl.store,
      log,
      task: (task, step, timeoutS) => secondaryStep(taskEnv, tasksIbc, task, step, timeoutS)
    })
    await receiver.start()
    log(dial === null ? `listening for the Primary on ${receiver.address} (RDS ${cfg.rds})` : `dialling the Primary at ${dial.address} (RDS ${cfg.rds}, joining as ${shortGeneration(dial.name)})`)
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
  let migrateHere: (gen: Generation, at: number) => Promise<MigrateAnswer> = async () => ({ ok: false, error: 'this Secondary is starting' })
  const theSrl = srl
  const theRvg = rvg
  const theReceiver = receiver
  const theIbc = ibc
  const theSync = sync
  const theAdapter = adapter!
  const theUnlock = unlockData!
  const takeover = async (): Promise<unknown> => {
    if (taking) throw new ReplError('BUSY', 'a takeover is already under way')
    if (theReceiver.connected) {
      throw new ReplError('PRIMARY_CONNECTED', `the Primary at ${theReceiver.primaryAddress ?? '?'} is connected: takeover is for a Primary that is lost (stop it first, on its host, to move the Primary role here)`)
    }
    if (theReceiver.follow === null && theSrl.lastSeq === 0) throw new ReplError('NOT_REPLICATED', 'this Secondary has never replicated from a Primary: there is nothing to take over')
    if (theSync?.syncing != null) throw new ReplError('INCONSISTENT', `this Secondary is being synchronized (${theSync.syncing}): its tree is not a consistent copy of the Primary's, so it cannot take over`)
    if (failback !== null) throw new ReplError('INCONSISTENT', `this host was failed back and is not resynchronized yet (its tree holds its own writes after sequence number ${failback.at}), so it cannot take over`)
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
    const head = { seq: at, offset: theSrl.headOffset }
    // The Secondary's parts stop (the apply loop checkpoints: a crash from here on replays nothing
    // it applied); the mount, the data-directory lock and the control socket stay.
    await runSteps([stopIbc, closeSrl, closeSnapshots], log)
    const gen = takeoverGeneration(prev, at)
    const record: TookOver = { at, applied, from: prev?.id ?? null, generation: gen.id, time: new Date().toISOString() }
    // The host it took over from is this Primary's Secondary-to-be (failback): an RLINK in DCM
    // mode from `at` on keeps the paths changed here meanwhile, so that its resynchronization is
    // of those (and its own) alone. It dials this Primary's listener (`join:<its generation>`),
    // or, if this host dialled it, this Primary goes on dialling it.
    const rlink = dial !== null ? dial.address : prev !== null ? JOIN_PREFIX + prev.id : null
    await recordPrimary(gen, record, rlink === null ? [] : [[State.rlink.key(rlink), { ...head, paused: false, dcm: true }]])
    crashPoint('takeover-recorded')
    log(`takeover: this host is now the Primary, generation ${shortGeneration(gen)}${prev === null ? '' : ` (continuing generation ${shortGeneration(prev)} after sequence number ${at})`}`)
    await startPrimaryHere(gen)
    return { role: 'primary', generation: gen.id, previous: prev?.id ?? null, seq: at, applied, discarded: 0 }
  }

  /** One batch: a crash leaves this state a Secondary's (re-run the command) or the new Primary's. */
  const recordPrimary = async (gen: Generation, record: TookOver, puts: Array<[Key<unknown>, unknown]>): Promise<void> => {
    const store = await LogStore.open(path.join(state, 'srl', 'state'), state)
    try {
      const format = await store.get(State.format)
      if (format === undefined) throw new ReplError('LOG_CORRUPT', `the SRL state in ${state} has no format record`)
      await store.batch([[State.format, { ...format, role: 'primary' }], [State.generation, gen], [State.tookOver, record], [State.baseline, 'data'], ...puts],
        [State.follow, State.sync, State.dial, State.failback, State.demoted])
    } finally {
      await store.close()
    }
  }

  /** The Primary starts in this process over the mount (runPrimary's handover), listening where this Secondary listened, or dialling where it dialled. */
  const startPrimaryHere = async (gen: Generation): Promise<void> => {
    let primary: RunningDaemon
    try {
      const listen = dial === null ? parseAddress(theReceiver.address, 'listen', true) : undefined
      await theReceiver.close()
      const pc = cfg.asPrimary !== undefined ? { ...cfg.asPrimary, listen: listen ?? cfg.asPrimary.listen } : primaryConfigOf(cfg, listen, dial === null ? [] : [dial.address])
      primary = await runPrimary(pc, log, { data, mount, adapter: theAdapter, unlockData: theUnlock, watch, control }, async (h) => await runSecondary({ ...cfg, listen: listen ?? cfg.listen }, log, h))
    } catch (err) {
      // The state says Primary: the next start of this state directory starts it. This process ends.
      log(`the Primary (generation ${shortGeneration(gen)}) did not start: ${(err as Error).message}; stopping`)
      stop(1).catch(() => {})
      throw err
    }
    daemon.set(primary)
  }

  /**
   * MIGRATE from the Primary (`replicafs migrate` there): every update up to `at` is data-acked
   * and the Primary takes no more. Everything is applied; one LevelDB batch makes this the Primary of
   * `gen` (with the RLINK to the old Primary, positioned after `at`); MIGRATED goes back, and then
   * the Primary starts in this process (the handover, as for a takeover).
   */
  migrateHere = async (gen, at) => {
    if (taking) return { ok: false, error: 'a takeover is under way here' }
    if (failback !== null) return { ok: false, error: 'this Secondary is being resynchronized after a failback' }
    if (theSync?.syncing != null || !theRvg.consistent) return { ok: false, error: 'this Secondary is not consistent' }
    if (theIbc.frozen) return { ok: false, error: 'this Secondary is frozen by an IBC message (ibc unfreeze it first)' }
    if (theSrl.lastSeq !== at) return { ok: false, error: `this Secondary has logged up to sequence number ${theSrl.lastSeq}, not ${at}` }
    const prev = theReceiver.generation
    if (prev === null || takenOverAt(gen, prev) !== at) return { ok: false, error: 'the new generation does not continue the one this Secondary follows' }
    taking = true
    try {
      await theRvg.at(at, async () => {})
    } catch (err) {
      taking = false
      return { ok: false, error: `cannot apply up to sequence number ${at}: ${(err as Error).message}` }
    }
    const head = { seq: at, offset: theSrl.headOffset }
    await runSteps([stopIbc, closeSrl, closeSnapshots], log)
    const record: TookOver = { at, applied: 0, from: prev.id, generation: gen.id, time: new Date().toISOString(), migrated: true }
    // The old Primary becomes this Primary's Secondary: it dials this host's listener as
    // `join:<its generation>`, or, if this host dialled it, this Primary dials it.
    const rlink = dial !== null ? dial.address : JOIN_PREFIX + prev.id
    try {
      await recordPrimary(gen, record, [[State.rlink.key(rlink), { ...head, paused: false }]])
    } catch (err) {
      // Its SRL is closed: this daemon cannot go on as a Secondary; its next start is one (the batch did not happen).
      log(`migrate: cannot record the Primary role (${(err as Error).message}); stopping`)
      stop(1).catch(() => {})
      return { ok: false, error: `the Secondary could not record the Primary role: ${(err as Error).message}` }
    }
    crashPoint('migrate-recorded-secondary')
    log(`migrate: this host is the Primary now, generation ${shortGeneration(gen)} (continuing generation ${shortGeneration(prev)} after sequence number ${at}); the old Primary becomes its Secondary`)
    return {
      ok: true,
      after: () => {
        startPrimaryHere(gen).catch(() => {})
      }
    }
  }

  const secondary: Secondary = { cfg, data, mount, state, srl, rvg, receiver, ibc, snaps, sync, verify: verify!, stop, log, takeover, failback: () => failback, dial, demoted: (await theSrl.store.get(State.demoted)) ?? null, adapter: theAdapter }
  control.route = routed(control, async (req, signal) => await secondaryCommand(secondary, req, signal))
  if (handover !== undefined) return daemon
  try {
    control.server = await serve(state, async (req, signal) => await control.route(req, signal))
    await serveMetricsOnce(control, cfg.metrics, log)
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

/** A failed-back host not yet resynchronized (status): from which generation, after which record, how many paths, where its tree as it was is kept. */
function failbackStatus (f: Failback | null): unknown {
  return f === null ? null : { from: f.from, by: f.by.id, at: f.at, peer: f.peer, paths: f.paths?.length ?? null, snapshot: f.snapshot, oldSrl: f.old, since: f.time }
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
        lastError: s.receiver.lastError,
        errors: Object.fromEntries(errorCounts),
        transport: s.receiver.transport,
        fuse: { transport: s.adapter.transport, passthrough: s.adapter.passthrough, openFiles: s.adapter.openHandles, ...(s.adapter.forwarded !== undefined ? { forwarded: s.adapter.forwarded } : {}) },
        generation: s.receiver.generation === null ? null : { id: s.receiver.generation.id, since: s.receiver.generation.since },
        dial: s.dial,
        failback: failbackStatus(s.failback()),
        stalled: s.rvg.stalledOn,
        checkpointError: s.rvg.checkpointError,
        fatal: s.rvg.fatalError?.message ?? null
      }
    case 'takeover':
      return await s.takeover()
    case 'failback':
    case 'migrate': {
      // Re-run after it was done (or the next start finished it): say so.
      const d = s.demoted
      if (d !== null) {
        const f = s.failback()
        return {
          role: 'secondary', primary: s.dial?.address ?? s.receiver.primaryAddress ?? '(it dials this host)', generation: d.by, previous: d.from, seq: d.at,
          orphaned: null, paths: f === null ? null : f.paths?.length ?? null, snapshot: d.snapshot, already: `${d.how} ${d.time}`, resynchronized: f === null
        }
      }
      throw req.cmd === 'failback'
        ? new ReplError('NOT_TAKEN_OVER', 'failback runs on a Primary another host took over from; this daemon is a Secondary: nothing changed')
        : new ReplError('WRONG_ROLE', 'migrate runs on the Primary (it moves the Primary role to its Secondary); this daemon is a Secondary: nothing changed')
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
