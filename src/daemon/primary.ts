/**
 * The Primary daemon (and, with `journal: false`, the bare passthrough the benchmarks compare
 * against): its SRL, the RVG that journals and applies every change, the RLINKs to its
 * Secondaries, IBC, snapshots, the FUSE mount and the control socket.
 *
 * Start: check directories -> open the SRL (its lock) -> lock the data directory -> clean a stale
 * mount left by a killed daemon -> load the RLINKs' positions, replay the SRL -> IBC -> mount ->
 * serve control. A failed start releases what it took, in reverse.
 * Stop (control `stop`, SIGINT, SIGTERM, or the mount going away): unmount -> RLINKs -> control
 * socket -> drain and checkpoint, close the SRL -> snapshots -> unlock; exit 0. After a fatal error
 * of the RVG (a record the data directory cannot take, an SRL that cannot be synced) the daemon
 * stays up with the mount refusing changes (EIO) and status naming the error, and its stop exits 1;
 * an RLINK's fatal error (a corrupt log) stops it with exit code 1. Never a hung mount, never a
 * skipped update.
 */
import path from 'node:path'
import type net from 'node:net'
import { Srl } from '../srl'
import { SyncSources, ChangeMaps } from '../sync'
import { PrimaryRvg } from '../rvg/primary'
import { FuseAdapter } from '../fuse/adapter'
import type { MountOptions } from '../fuse/mount-options'
import { RlinkSet, type SynchronousMode, type SrlProt } from '../rlink/sender'
import { readSecret, type Address } from '../rlink/common'
import { PrimaryGate } from '../rlink/gate'
import { State, type Generation, type TakenOver, type TookOver } from '../format/state'
import { firstGeneration, shortGeneration } from '../format/generation'
import { IbcPrimary } from '../ibc/primary'
import { handleIbc, type IbcRequest } from '../ibc/control'
import { runTask, type TaskEnv } from '../ibc/task'
import { SnapshotSet } from '../snapshot'
import { serve, type ControlRequest } from '../control'
import { sys } from '../native'
import { ReplError, IbcError } from '../errors'
import { IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S } from '../limits'
import { checkDirs, prepareState, lockDataDir, writeDaemonInfo, prepareMountPoint } from './host'
import { runSteps, closeControl, stopper, mountWatch, stopCommand, type Logger, type RunningDaemon, type Handover } from './lifecycle'
import { snapshotSource, PrimarySnapshots, dropVerifySnapshots, type SnapshotRequest } from './snapshots'
import { PrimaryVerifier } from './verify'

export interface PrimaryConfig {
  data: string
  mount: string
  state: string
  srlBytes: number
  /** false: the bare passthrough baseline, no SRL at all. */
  journal: boolean
  retain: boolean
  /** RLINKs: HOST:PORT of each Secondary, as given. */
  secondaries: string[]
  secretFile: string | null
  synchronous: SynchronousMode
  /** SRL overflow protection (default autodcm). */
  srlprot?: SrlProt
  /** Latency protection: writers wait while a connected Secondary is more than this many seconds behind (0, absent: off). */
  maxLag?: number
  rds: string
  /** Where `ibc run` finds this host's scripts (default STATE/tasks). */
  taskDir?: string
  /** `-o` mount options, checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /** Where peers reach this Primary (one that was a Secondary keeps its --listen address; src/rlink/gate.ts). */
  listen?: Address
}

/** What a started Primary is made of: what its control commands work on. */
interface Primary {
  cfg: PrimaryConfig
  data: string
  mount: string
  state: string
  srl: Srl | null
  rvg: PrimaryRvg
  rlinks: RlinkSet | null
  ibc: IbcPrimary | null
  snapshots: PrimarySnapshots | null
  verifier: PrimaryVerifier
  adapter: FuseAdapter
  gate: PrimaryGate | null
  generation: Generation | null
  /** Another host took over from this generation (state `takenOver`): every change is refused. */
  takenOver: () => TakenOver | null
  /** This Primary was a Secondary until a takeover (state `tookOver`). */
  tookOver: TookOver | null
  stop: RunningDaemon['stop']
  log: Logger
}

/**
 * `handover`: a Secondary of this host becomes this Primary in the same process (a takeover,
 * src/daemon/secondary.ts): its data-directory lock, mount, mount watch and control socket are
 * handed over, and only the Primary's own parts are started here.
 */
export async function runPrimary (cfg: PrimaryConfig, log: Logger, handover?: Handover): Promise<RunningDaemon> {
  const { data, mount } = handover ?? checkDirs(cfg)
  const state = prepareState(cfg.state)

  // Acquired in order; on a failed start, released in reverse.
  let srl: Srl | null = null
  let unlockData: (() => void) | null = handover?.unlockData ?? null
  let rvg: PrimaryRvg | null = null
  let adapter: FuseAdapter | null = handover?.adapter ?? null
  let server: net.Server | null = handover?.control.server ?? null
  let rlinks: RlinkSet | null = null
  let gate: PrimaryGate | null = null
  let ibc: IbcPrimary | null = null
  let snaps: SnapshotSet | null = null
  let generation: Generation | null = null
  let takenOver: TakenOver | null = null
  let tookOver: TookOver | null = null
  const secret = cfg.secondaries.length > 0 || cfg.listen !== undefined ? readSecret(cfg.secretFile!) : null
  const watch = handover?.watch ?? mountWatch(mount, log)

  /** Shutdown order: unmount (no new ops), stop control, drain + checkpoint + close the SRL, unlock. */
  const release = (): Promise<void> => runSteps([
    ['unmount', async () => { await adapter?.unmount() }],
    ['RLINKs', async () => { rlinks?.close(); await gate?.close() }],
    closeControl(state, () => server),
    ['SRL', async () => { if (rvg) await rvg.close(); else if (srl) await srl.close() }],
    ['snapshots', async () => { if (snaps) { await snaps.sync(); snaps.close() } }],
    ['data directory lock', () => { unlockData?.() }]
  ], log)

  try {
    if (cfg.journal) {
      srl = await Srl.open(path.join(state, 'srl'), { ringBytes: cfg.srlBytes, role: 'primary', dataDir: data })
      if (srl.format.ringBytes !== cfg.srlBytes) log(`SRL size stays ${srl.format.ringBytes} bytes (set when the state directory was created)`)
    }
    if (handover === undefined) unlockData = lockDataDir(data)
    if (cfg.journal) writeDaemonInfo(state, { role: 'primary', data, mount })
    if (handover === undefined) await prepareMountPoint(mount, log)
    if (srl !== null) {
      generation = (await srl.store.get(State.generation)) ?? null
      if (generation === null) {
        generation = firstGeneration()
        await srl.store.put(State.generation, generation)
      }
      takenOver = (await srl.store.get(State.takenOver)) ?? null
      tookOver = (await srl.store.get(State.tookOver)) ?? null
    }

    // Full synchronizations of Secondaries the SRL cannot bring up to date (src/sync/): each is
    // told of every record the RVG applies, after the snapshots' copy-on-write.
    const syncs = new SyncSources(data, () => rvg?.appliedSeq ?? 0, log)
    if (srl !== null && cfg.secondaries.length > 0) {
      const theSrl = srl
      rlinks = await RlinkSet.open(srl, {
        secondaries: cfg.secondaries,
        mode: cfg.synchronous,
        srlprot: cfg.srlprot,
        maxLagS: cfg.maxLag,
        rds: cfg.rds,
        secret,
        log,
        sync: (address, mode) => syncs.start(address, mode),
        maps: async (dcm) => await ChangeMaps.open(theSrl.store, theSrl, dcm, log),
        generation: generation!
      })
    }
    rvg = new PrimaryRvg(data, srl, { retain: cfg.retain, log, replication: rlinks ?? undefined })
    if (takenOver !== null) {
      rvg.refusing = takenOverReason(takenOver, generation!)
      log(`${rvg.refusing} (${FAILBACK_HINT})`)
    }
    if (srl !== null) {
      const s = snaps = SnapshotSet.open(state, data, { log })
      dropVerifySnapshots(s, log)
      rvg.snapshots = { beforeApply: (rec) => { s.beforeApply(rec); syncs.beforeApply(rec) }, sync: async () => { await s.sync() } }
    }
    for (const w of srl?.warnings ?? []) log(w)
    const replayed = await rvg.recover()
    if (replayed > 0) log(`recovered: replayed ${replayed} SRL records up to sequence number ${rvg.appliedSeq}`)
    rvg.start()
    if (rlinks !== null && srl !== null && generation !== null) {
      // Armed before the RLINKs connect: the first refusal may come at once.
      const ours = generation
      const theSrl = srl
      const theRvg = rvg
      rlinks.onTakenOver = (by, at, peer) => {
        if (takenOver !== null) return
        const t: TakenOver = takenOver = { by, at, peer, seen: new Date().toISOString() }
        theRvg.refusing = takenOverReason(t, ours)
        log(`${theRvg.refusing}; ${Math.max(0, theSrl.lastSeq - at)} updates logged here after it never reached it (${FAILBACK_HINT})`)
        theSrl.store.put(State.takenOver, t).catch((err: Error) => log(`cannot record the takeover in the SRL state: ${err.message}`))
      }
    }
    rlinks?.start()
    if (srl !== null) ibc = await openIbc(srl, rvg, log)

    if (handover !== undefined) {
      if (snaps !== null) handover.adapter.snapshots = snapshotSource(snaps)
      handover.adapter.serve(rvg, false)
    } else {
      adapter = new FuseAdapter(rvg, mount, { mountOptions: cfg.mountOptions, onGone: watch.onGone })
      if (snaps !== null) adapter.snapshots = snapshotSource(snaps)
      await adapter.mount()
    }
    if (cfg.listen !== undefined && srl !== null) {
      const theRvg = rvg
      const gen = generation!
      gate = new PrimaryGate({ listen: cfg.listen, secret: secret!, rds: cfg.rds, generation: () => gen, lastSeq: () => theRvg.appliedSeq, log })
      await gate.start()
      log(`listening for peers on ${gate.address} (RDS ${cfg.rds})`)
    }
    // Children (ibc run scripts, sync -f) must not inherit /dev/fuse: a script outliving a killed
    // daemon would keep its dead mount busy.
    sys.cloexecFrom(3)
  } catch (err) {
    await release()
    throw err
  }

  const live = rvg
  const stopper0 = stopper(release, log, 'unmounting, applying and checkpointing the SRL')
  const stopped = stopper0.stopped
  // After a fatal error every stop exits 1: the service manager must see that it failed.
  const stop = (code = 0): Promise<void> => stopper0.stop(live.fatalError !== null ? 1 : code)
  watch.arm(stop)
  // A record the data directory cannot take (a failing disk) or an SRL that cannot be synced: the
  // daemon stays up, so that status says what failed, reads go on, and the RLINKs still send what
  // is logged; every change through the mount is refused with EIO until it is stopped. The next
  // start replays what was logged (src/rvg/primary.ts).
  live.onFatal = (err) => log(`fatal: ${err.message}; the mount refuses changes (EIO) until the daemon is stopped (replicafs stop --state ${state}); reads and status go on, and the next start replays the SRL`)
  if (rlinks !== null) rlinks.onFatal = (err: Error): void => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }
  const primary: Primary = {
    cfg, data, mount, state, srl, rvg: live, rlinks, ibc, log, stop, adapter: adapter!, gate, generation, takenOver: () => takenOver, tookOver,
    snapshots: snaps === null ? null : new PrimarySnapshots(snaps, live, log),
    verifier: new PrimaryVerifier(live, rlinks, snaps, log)
  }
  const handler = async (req: ControlRequest, signal: AbortSignal): Promise<unknown> => await primaryCommand(primary, req, signal)
  if (handover !== undefined) {
    handover.control.route = handler
    return { stopped, stop }
  }
  try {
    server = await serve(state, async (req, signal) => await handler(req, signal))
  } catch (err) {
    await stop(1)
    throw err
  }
  return { stopped, stop }
}

/** IBC on the Primary; an `ibc run` cut short by a stop or crash of this daemon is unregistered (its flow is gone). */
async function openIbc (srl: Srl, rvg: PrimaryRvg, log: Logger): Promise<IbcPrimary> {
  const ibc = await IbcPrimary.open(srl, rvg)
  for (const reg of ibc.registry.list().filter((r) => r.task === true)) {
    log(`ibc run ${reg.name} did not finish before the last stop; unregistering it`)
    await ibc.unregister(reg.name, undefined).catch((err: Error) => log(`ibc run ${reg.name}: ${err.message}`))
  }
  return ibc
}

/** The Primary's control commands (src/control; the CLI's clients). */
async function primaryCommand (p: Primary, req: ControlRequest, signal: AbortSignal): Promise<unknown> {
  const noSrl = (what: string): ReplError => new ReplError('WRONG_ROLE', `a passthrough has no SRL, so no ${what}`)
  switch (req.cmd) {
    case 'status':
      return primaryStatus(p)
    case 'ibc':
      if (p.ibc === null) throw noSrl('IBC')
      return await handleIbc({ primary: p.ibc }, req as IbcRequest, signal)
    case 'snapshot':
      if (p.snapshots === null) throw noSrl('snapshots')
      return await p.snapshots.command(req as SnapshotRequest)
    case 'ibc-run':
      if (p.ibc === null) throw noSrl('IBC')
      return await ibcRun(p, p.ibc, req)
    case 'pause':
    case 'resume': {
      if (p.rlinks === null) throw new ReplError('NOT_FOUND', 'this Primary has no RLINK (start it with --secondary HOST:PORT)')
      const which = typeof req.secondary === 'string' ? req.secondary : undefined
      return { [req.cmd === 'pause' ? 'paused' : 'resumed']: await p.rlinks.setPaused(which, req.cmd === 'pause') }
    }
    case 'verify':
      return await p.verifier.command(req as { secondary?: unknown, repair?: unknown }, signal)
    case 'sync':
      await p.rvg.sync()
      return { synced: p.srl ? p.srl.lastSeq : null }
    case 'takeover': {
      const t = p.takenOver()
      // A takeover re-run (after a kill -9 once the state said Primary, or twice by a script):
      // it is done; say so, with what it reported.
      if (p.tookOver !== null && t === null) {
        const r = p.tookOver
        return { role: 'primary', generation: r.generation, previous: r.from, seq: r.at, applied: r.applied, discarded: 0, already: r.time }
      }
      throw new ReplError('WRONG_ROLE', t !== null
        ? `takeover runs on a Secondary; this daemon is a Primary that generation ${shortGeneration(t.by)} (at ${t.peer}) took over from`
        : 'takeover runs on a Secondary whose Primary is lost; this daemon is the Primary')
    }
    case 'stop':
      return stopCommand(p.stop)
    default:
      throw new ReplError('PROTOCOL', `unknown control command ${String(req.cmd)}`)
  }
}

/** What a taken-over Primary's operator does next (logs). */
const FAILBACK_HINT = 'replicafs failback, which will make this host the new Primary\'s Secondary, is not built yet: see docs/ARCHITECTURE.md "Roles and generations" for rejoining it by hand'

/** Why a Primary another host took over from refuses every change (logs, status, the EROFS error's text). */
function takenOverReason (t: TakenOver, ours: Generation): string {
  return `taken over: generation ${shortGeneration(t.by)} (at ${t.peer}) took over from this Primary's generation ${shortGeneration(ours)} after sequence number ${t.at}; every change through the mount is refused (EROFS)`
}

function takenOverStatus (p: Primary): unknown {
  const t = p.takenOver()
  return t === null ? null : { by: t.by.id, at: t.at, peer: t.peer, seen: t.seen, orphaned: Math.max(0, (p.srl?.lastSeq ?? 0) - t.at) }
}

function primaryStatus (p: Primary): unknown {
  return {
    role: p.cfg.journal ? 'primary' : 'passthrough',
    generation: p.generation === null ? null : { id: p.generation.id, since: p.generation.since },
    takenOver: takenOverStatus(p),
    tookOver: p.tookOver,
    refusing: p.rvg.refusing,
    listen: p.gate?.address ?? null,
    pid: process.pid,
    data: p.data,
    mount: p.mount,
    state: p.state,
    rds: p.cfg.rds,
    srlId: p.srl?.srlId ?? null,
    synchronous: p.cfg.synchronous,
    srlprot: p.rlinks?.srlprot ?? null,
    maxLag: p.cfg.maxLag ?? 0,
    throttled: p.rlinks === null ? null : { by: p.rlinks.throttled, writes: p.rlinks.throttledWrites, ms: p.rlinks.throttledMs },
    srl: p.srl ? p.srl.stats(p.rvg.appliedSeq) : null,
    rlinks: p.rlinks?.status() ?? [],
    verify: p.verifier.progress,
    ibc: p.ibc?.status() ?? null,
    openFiles: p.adapter.openHandles,
    checkpointError: p.rvg.checkpointError,
    fatal: p.rvg.fatalError?.message ?? null
  }
}

/** `ibc run TASK`: VVR's vradmin ibc flow over every RLINK, all of which must be connected. */
async function ibcRun (p: Primary, ibc: IbcPrimary, req: ControlRequest): Promise<unknown> {
  const links = p.rlinks?.links ?? []
  const down = links.filter((l) => !l.connected)
  if (down.length > 0) throw new IbcError('EIBC_TASK_FAILED', `the RLINK to ${down.map((l) => `${l.address} (${l.state})`).join(', ')} is not connected`)
  const env: TaskEnv = { role: 'primary', state: p.state, data: p.data, mount: p.mount, taskDir: p.cfg.taskDir ?? path.join(p.state, 'tasks') }
  const timeoutS = typeof req.timeoutS === 'number' ? req.timeoutS : IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S
  return await runTask(env, ibc, links.map((l) => ({
    address: l.address,
    step: async (task: string, step: string, t: number) => {
      const r = await l.task(task, step, task, t)
      return { code: r.code, output: r.output, error: r.error, ibcId: r.ibcId }
    }
  })), String(req.task ?? ''), timeoutS, p.log)
}
