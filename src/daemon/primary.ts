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
import { Srl } from '../srl'
import { SyncSources, ChangeMaps } from '../sync'
import { PrimaryRvg } from '../rvg/primary'
import { FuseAdapter, DEFAULT_PRIMARY_TRANSPORT, type MountAdapter, type FuseTransport } from '../fuse/adapter'
import { LlAdapter, llUnavailable } from '../fuse/ll-adapter'
import type { MountOptions } from '../fuse/mount-options'
import { RlinkSet, type Rlink, type SynchronousMode, type SrlProt } from '../rlink/sender'
import { readSecret, formatAddress, type Address } from '../rlink/common'
import { loadTls, type TlsFiles } from '../rlink/tls'
import type { Compression } from '../rlink/compress'
import { PrimaryGate } from '../rlink/gate'
import { State, type Generation, type TakenOver, type TookOver, type Failback } from '../format/state'
import { firstGeneration, shortGeneration, takeoverGeneration, pathList, type SplitBrain } from '../format/generation'
import { IbcPrimary } from '../ibc/primary'
import { handleIbc, type IbcRequest } from '../ibc/control'
import { runTask, type TaskEnv } from '../ibc/task'
import { SnapshotSet } from '../snapshot'
import { serve, type ControlRequest } from '../control'
import { sys } from '../native'
import { ReplError, IbcError, errorCounts } from '../errors'
import { IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S } from '../limits'
import { checkDirs, prepareState, lockDataDir, writeDaemonInfo, prepareMountPoint } from './host'
import { runSteps, closeControl, stopper, mountWatch, stopCommand, crashPoint, RoleDaemon, routed, serveMetricsOnce, type Logger, type RunningDaemon, type Handover, type ControlRoute } from './lifecycle'
import { writeIntent, finishFailback } from './failback'
import { pathsOf, ownPathsOf } from '../sync/map'
import { JOIN_PREFIX } from '../rlink/link'
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
  /** --metrics: where to serve Prometheus text at /metrics (src/metrics). */
  metrics?: Address
  /** Where `ibc run` finds this host's scripts (default STATE/tasks). */
  taskDir?: string
  /** `-o` mount options, checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /** --fuse: the mount's transport (default ll, compat where its addon cannot load; src/fuse/adapter.ts). */
  fuse?: FuseTransport
  /** Where peers reach this Primary (one that was a Secondary keeps its --listen address; src/rlink/gate.ts). */
  listen?: Address
  /** --tls-cert, --tls-key, --tls-ca (and a pinned fingerprint): TLS on every RLINK; absent: plain TCP. */
  tls?: TlsFiles | null
  /** --compress: offer zstd for bulk frames to every Secondary (default off). */
  compress?: Compression
  /** --bandwidth-limit per RLINK, bytes per second (absent, null: none; `replicafs set` changes it). */
  bandwidthLimit?: number | null
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
  adapter: MountAdapter
  gate: PrimaryGate | null
  generation: Generation | null
  /** Another host took over from this generation (state `takenOver`): every change is refused. */
  takenOver: () => TakenOver | null
  /** This Primary was a Secondary until a takeover (state `tookOver`). */
  tookOver: TookOver | null
  /** `replicafs failback`: this Primary, taken over, becomes the Secondary of the host that took over. */
  failback: (discardLocal?: boolean) => Promise<unknown>
  /** `replicafs migrate`: the Secondary becomes the Primary and this Primary its Secondary. */
  migrate: () => Promise<unknown>
  stop: RunningDaemon['stop']
  log: Logger
}

/**
 * `handover`: a Secondary of this host becomes this Primary in the same process (a takeover,
 * src/daemon/secondary.ts): its data-directory lock, mount, mount watch and control socket are
 * handed over, and only the Primary's own parts are started here.
 */
export async function runPrimary (cfg: PrimaryConfig, log: Logger, handover?: Handover, becomeSecondary?: BecomeSecondary): Promise<RunningDaemon> {
  const { data, mount } = handover ?? checkDirs(cfg)
  const state = prepareState(cfg.state)

  // Acquired in order; on a failed start, released in reverse.
  let srl: Srl | null = null
  let unlockData: (() => void) | null = handover?.unlockData ?? null
  let rvg: PrimaryRvg | null = null
  let adapter: MountAdapter | null = handover?.adapter ?? null
  const control: ControlRoute = handover?.control ?? { server: null, route: () => Promise.reject(new ReplError('BUSY', 'the daemon is starting')) }
  let rlinks: RlinkSet | null = null
  let gate: PrimaryGate | null = null
  let ibc: IbcPrimary | null = null
  let snaps: SnapshotSet | null = null
  let generation: Generation | null = null
  let takenOver: TakenOver | null = null
  let tookOver: TookOver | null = null
  /** A peer that proved it knows the secret says `by` took over from this generation after record `at`. */
  let learnTakenOver: (by: Generation, at: number, peer: string, listener: boolean, split: SplitBrain | null) => void = () => {}
  const secret = cfg.secondaries.length > 0 || cfg.listen !== undefined ? readSecret(cfg.secretFile!) : null
  const tls = cfg.tls != null && secret !== null ? loadTls(cfg.tls) : null
  const watch = handover?.watch ?? mountWatch(mount, log)

  /** Shutdown order: unmount (no new ops), stop control, drain + checkpoint + close the SRL, unlock. */
  const release = (): Promise<void> => runSteps([
    ['unmount', async () => { await adapter?.unmount() }],
    ['RLINKs', async () => { rlinks?.close(); await gate?.close() }],
    closeControl(state, control),
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
    // A Primary with a listener may be joined by a Secondary that dials it (a failed-back host).
    if (srl !== null && (cfg.secondaries.length > 0 || cfg.listen !== undefined)) {
      const theSrl = srl
      rlinks = await RlinkSet.open(srl, {
        secondaries: cfg.secondaries,
        mode: cfg.synchronous,
        srlprot: cfg.srlprot,
        maxLagS: cfg.maxLag,
        rds: cfg.rds,
        secret,
        tls,
        compress: cfg.compress === 'zstd',
        bandwidthLimit: cfg.bandwidthLimit ?? null,
        log,
        sync: (address, mode) => syncs.start(address, mode),
        maps: async (dcm) => await ChangeMaps.open(theSrl.store, theSrl, dcm, log),
        generation: generation!,
        ownPathsOf
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
    if (srl !== null && generation !== null) {
      // Armed before the RLINKs connect: the first refusal may come at once.
      const ours = generation
      const theSrl = srl
      const theRvg = rvg
      learnTakenOver = (by, at, peer, listener, split) => {
        if (takenOver !== null) return
        const t: TakenOver = takenOver = { by, at, peer, seen: new Date().toISOString(), ...(listener ? { listener: true } : {}), ...(split !== null ? { split } : {}) }
        theRvg.refusing = takenOverReason(t, ours)
        log(`${theRvg.refusing}; ${Math.max(0, theSrl.lastSeq - at)} updates logged here after it never reached it (${FAILBACK_HINT})`)
        if (split !== null && split.conflicts !== 0) log(`SPLIT-BRAIN: ${splitText(split)}; replicafs failback --discard-local on this host sets its changes aside (in a snapshot) and takes the new Primary's`)
        theSrl.store.put(State.takenOver, t).catch((err: Error) => log(`cannot record the takeover in the SRL state: ${err.message}`))
      }
      if (rlinks !== null) rlinks.onTakenOver = (by, at, peer, split) => learnTakenOver(by, at, peer, false, split)
      // A migrate whose answer was lost: no change until the Secondary says which host is the Primary.
      const doubt = await srl.store.get(State.migrating)
      if (doubt !== undefined && takenOver === null) {
        rvg.refusing = migrateDoubt(doubt.to)
        log(rvg.refusing)
      }
    }
    rlinks?.start()
    if (srl !== null) ibc = await openIbc(srl, rvg, log)

    if (handover !== undefined && handover.adapter.writable) {
      if (snaps !== null) handover.adapter.snapshots = snapshotSource(snaps)
      handover.adapter.serve(rvg, false)
    } else {
      if (handover !== undefined) {
        // A Secondary's mount on replicafs_ll is volatile and read-only: its open files end
        // (ENOTCONN) and the Primary's journaled mount on the same transport takes the mount
        // point (the addon is loaded already: it served the Secondary's).
        log(`remounting ${mount} read-write (the Secondary's ${handover.adapter.openHandles} open files through it are closed)`)
        await handover.adapter.unmount()
      }
      const options = { mountOptions: cfg.mountOptions, onGone: watch.onGone }
      let transport: FuseTransport = handover !== undefined ? handover.adapter.transport : cfg.fuse ?? DEFAULT_PRIMARY_TRANSPORT
      const why = cfg.fuse === undefined && handover === undefined && transport === 'll' ? llUnavailable() : null
      if (why !== null) {
        log(`the low-level FUSE transport cannot serve here (${why}); mounting with --fuse compat`)
        transport = 'compat'
      }
      adapter = transport === 'll' ? new LlAdapter(data, mount, options, rvg) : new FuseAdapter(rvg, mount, options)
      if (snaps !== null) adapter.snapshots = snapshotSource(snaps)
      try {
        await adapter.mount()
      } catch (err) {
        // A takeover has unmounted the Secondary's mount already: the mount point is not left empty.
        if (handover === undefined || transport !== 'll') throw err
        log(`cannot mount ${mount} journaled on the low-level transport (${(err as Error).message}); mounting with --fuse compat`)
        adapter = new FuseAdapter(rvg, mount, options)
        if (snaps !== null) adapter.snapshots = snapshotSource(snaps)
        await adapter.mount()
      }
    }
    if (cfg.listen !== undefined && srl !== null) {
      const theRvg = rvg
      const gen = generation!
      const theRlinks = rlinks
      gate = new PrimaryGate({
        listen: cfg.listen,
        secret: secret!,
        tls,
        rds: cfg.rds,
        generation: () => gen,
        lastSeq: () => theRvg.appliedSeq,
        log,
        join: (name) => theRlinks?.joining(name) ?? null,
        takenOver: (by, at, peer) => learnTakenOver(by, at, peer, true, null),
        changedSince: (from, at) => theRlinks === null ? null : pathList(theRlinks.changedAfter(JOIN_PREFIX + from, at, ownPathsOf)),
        split: (from, sb) => {
          const l = theRlinks?.joining(from) ?? null
          if (l !== null) l.splitBrain = sb
          if (sb.conflicts !== 0) log(`SPLIT-BRAIN with the Primary this host took over from (generation ${shortGeneration(from)}, at ${sb.peer}): ${splitText(sb)}; it refuses writes, and replicafs failback --discard-local there sets its changes aside`)
          else log(`the Primary this host took over from (generation ${shortGeneration(from)}, at ${sb.peer}) is back: ${sb.theirs ?? 'many'} paths changed there after sequence number ${sb.at}, none that changed here too`)
        }
      })
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
  const daemon = new RoleDaemon({ stopped, stop })
  watch.arm(stop)
  // A record the data directory cannot take (a failing disk) or an SRL that cannot be synced: the
  // daemon stays up, so that status says what failed, reads go on, and the RLINKs still send what
  // is logged; every change through the mount is refused with EIO until it is stopped. The next
  // start replays what was logged (src/rvg/primary.ts).
  live.onFatal = (err) => log(`fatal: ${err.message}; the mount refuses changes (EIO) until the daemon is stopped (replicafs stop --state ${state}); reads and status go on, and the next start replays the SRL`)
  if (rlinks !== null) rlinks.onFatal = (err: Error): void => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }

  // `replicafs failback` (this Primary was taken over): see the top of src/daemon/failback.ts.
  let failing = false
  const theSrl = srl
  const theRlinks = rlinks
  const theGate = gate
  const theSnaps = snaps
  const theAdapter = adapter!
  const theUnlock = unlockData!
  const failback = async (discardLocal = false): Promise<unknown> => {
    const t = takenOver
    const gen = generation
    if (theSrl === null || gen === null) throw new ReplError('WRONG_ROLE', 'a passthrough has no SRL, so no role to transfer')
    if (t === null) {
      throw new ReplError('NOT_TAKEN_OVER', tookOver !== null && tookOver.generation === gen.id
        ? `failback runs on a Primary another host took over from; this one took over itself (generation ${shortGeneration(gen)}) and no host has taken over from it: nothing changed`
        : `failback runs on a Primary another host took over from (its writes refused with EROFS); no host has taken over from this one (generation ${shortGeneration(gen)}): nothing changed`)
    }
    if (failing) throw new ReplError('BUSY', 'a failback is already under way')
    // Split-brain: both sides changed the same paths since the takeover. Never merged; which side
    // gives up is the operator's explicit choice (DRBD's discard-my-data).
    if (t.split !== undefined && t.split.conflicts !== 0 && !discardLocal) {
      throw new ReplError('SPLIT_BRAIN', `split-brain: ${splitText(t.split)}; replicafs failback --discard-local sets this host's changes aside (kept in a snapshot) and takes the new Primary's: nothing changed`)
    }
    if (becomeSecondary === undefined || theSnaps === null || theRlinks === null || cfg.secretFile === null) throw new ReplError('WRONG_ROLE', 'this daemon cannot become a Secondary')
    failing = true
    // Nothing new is applied here (every change is refused since the takeover was learned).
    const orphaned = Math.max(0, theSrl.lastSeq - t.at)
    const paths = pathList(theRlinks.changedAfter(t.peer, t.at, pathsOf))
    const name = `failback-${shortGeneration(gen)}`
    try {
      await live.sync()
      if (!theSnaps.names().includes(name)) theSnaps.create(name, live.appliedSeq)
      await theSnaps.sync()
    } catch (err) {
      failing = false
      throw new ReplError('APPLY_FAILED', `failback: cannot take snapshot ${name} of this host's tree (${(err as Error).message}): nothing changed`)
    }
    log(`failback: snapshot ${name} keeps this host's tree as it is, with its ${orphaned} updates after sequence number ${t.at} that never reached ${t.peer} (${paths === null ? 'too many paths to list: every file is compared' : `${paths.length} paths`})`)
    crashPoint('failback-snapshot')
    // It dials the new Primary where it reached it; one that heard of the takeover on its own
    // listener (the new Primary dials it) listens there.
    const peer = t.listener === true ? null : t.peer
    const record: Failback = { from: gen.id, by: t.by, at: t.at, peer, paths, snapshot: name, old: `srl.failback-${shortGeneration(gen)}`, time: new Date().toISOString() }
    await toSecondary(record, 'failback', `this host is now a Secondary of generation ${shortGeneration(t.by)}; it ${peer !== null ? `dials it at ${peer}` : `listens at ${cfg.listen !== undefined ? formatAddress(cfg.listen) : '?'} for it`}, and is resynchronized by difference of what either side changed after sequence number ${t.at}`)
    return { role: 'secondary', primary: peer ?? t.peer, generation: t.by.id, previous: gen.id, seq: t.at, orphaned, paths: paths?.length ?? null, snapshot: name }
  }

  /**
   * The Primary's parts stop (the SRL is checkpointed and closed; the mount, the data-directory
   * lock and the control socket stay), the state directory becomes a Secondary's as `record` says
   * (src/daemon/failback.ts), and the Secondary starts in this process.
   */
  const toSecondary = async (record: Failback, what: 'failback' | 'migrate', done: string): Promise<void> => {
    await runSteps([
      ['RLINKs', async () => { theRlinks?.close(); await theGate?.close() }],
      ['SRL', async () => { await live.close() }],
      ['snapshots', async () => { if (theSnaps !== null) { await theSnaps.sync(); theSnaps.close() } }]
    ], log)
    writeIntent(state, { record, ringBytes: theSrl!.format.ringBytes })
    crashPoint(`${what}-recorded`)
    await finishFailback(state, log)
    crashPoint(`${what}-converted`)
    log(`${what}: ${done}`)
    let secondary: RunningDaemon
    try {
      secondary = await becomeSecondary!({ data, mount, adapter: theAdapter, unlockData: theUnlock, watch, control })
    } catch (err) {
      // The state says Secondary: the next start of this state directory starts it. This process ends.
      log(`${what}: the Secondary did not start: ${(err as Error).message}; stopping`)
      stop(1).catch(() => {})
      throw err
    }
    daemon.set(secondary)
  }

  // `replicafs migrate` (VVR's vradmin migrate): see docs/ARCHITECTURE.md "Migrate".
  let migrating = false
  const migrate = async (): Promise<unknown> => {
    const gen = generation
    if (theSrl === null || gen === null) throw new ReplError('WRONG_ROLE', 'a passthrough has no SRL, so no role to transfer')
    const t = takenOver
    if (t !== null) {
      // A migrate whose answer was lost, and the Secondary did become the Primary (this host
      // learned it when its RLINK connected again): the re-run finishes it, as a failback.
      const doubt = await theSrl.store.get(State.migrating)
      if (doubt !== undefined && doubt.gen === t.by.id) return { ...(await failback(true) as object), migrated: true }
      throw new ReplError('WRONG_ROLE', `migrate runs on the Primary; generation ${shortGeneration(t.by)} took over from this one: replicafs failback makes it its Secondary`)
    }
    if (migrating || failing) throw new ReplError('BUSY', 'a migrate or failback is already under way')
    if (becomeSecondary === undefined) throw new ReplError('WRONG_ROLE', 'this daemon cannot become a Secondary')
    const links = theRlinks?.links ?? []
    if (links.length !== 1) {
      throw new ReplError('USAGE', links.length === 0
        ? 'migrate moves the Primary role to this Primary\'s Secondary, and it has none (no --secondary): nothing changed'
        : `migrate moves the Primary role to one Secondary; this Primary has ${links.length} (${links.map((l) => l.address).join(', ')}): nothing changed`)
    }
    const l = links[0]
    const lag = (): string => { const st = l.status(); return `${st.lagUpdates} updates (${st.lagBytes} bytes, ${st.lagSeconds.toFixed(1)} s) behind` }
    if (!l.connected || !l.status().consistent) {
      throw new ReplError('NOT_CONNECTED', `the Secondary at ${l.address} is ${l.connected ? 'connected but not consistent (being synchronized)' : l.state}, ${lag()}: migrate needs it connected and consistent (for a lost Primary, run takeover on the Secondary); nothing changed`)
    }
    migrating = true
    live.refusing = `migrating the Primary role to ${l.address}: every change is refused (EROFS) from now on`
    log(`migrate: ${live.refusing}`)
    let at = 0
    try {
      await live.exclusive(async () => {})
      // Drain: every update data-acked (the Secondary applied it), within the deadline.
      const deadline = Date.now() + MIGRATE_DRAIN_MS
      for (;;) {
        at = theSrl.lastSeq
        if (l.dackSeq >= at) break
        if (!l.connected) throw new ReplError('NOT_CONNECTED', `the RLINK to ${l.address} went down while draining (${lag()}): nothing changed`)
        if (Date.now() > deadline) throw new ReplError('NOT_CONNECTED', `the Secondary at ${l.address} is still ${lag()} after ${MIGRATE_DRAIN_MS / 1000} s of draining: nothing changed`)
        await theRlinks!.progressOrSecond()
      }
    } catch (err) {
      live.refusing = null
      migrating = false
      log(`migrate: ${(err as Error).message}; this host stays the Primary and takes changes again`)
      throw err
    }
    const next = takeoverGeneration(gen, at)
    await theSrl.store.put(State.migrating, { to: l.address, gen: next.id, at, time: new Date().toISOString() })
    crashPoint('migrate-asked')
    let answer: { ok: boolean, error?: string }
    try {
      answer = await l.migrate(next, at)
    } catch (err) {
      // Whether the Secondary became the Primary is known only when it is heard again: until
      // then nothing changes here (the next connection says TAKEN_OVER, or that it is not).
      live.refusing = migrateDoubt(l.address)
      migrating = false
      log(`migrate: ${(err as Error).message}; ${live.refusing}`)
      watchDoubt(l)
      throw new ReplError('NOT_CONNECTED', `${(err as Error).message}: whether it became the Primary is known when it connects again; until then this host refuses changes (re-run migrate then)`)
    }
    if (!answer.ok) {
      await theSrl.store.del(State.migrating)
      live.refusing = null
      migrating = false
      const msg = `the Secondary at ${l.address} refused to become the Primary: ${answer.error ?? '?'}; nothing changed`
      log(`migrate: ${msg}; this host stays the Primary and takes changes again`)
      throw new ReplError('REFUSED', msg)
    }
    crashPoint('migrate-answered')
    const dial = l.addr !== null ? l.address : null
    const record: Failback = { from: gen.id, by: next, at, peer: dial, paths: [], snapshot: null, old: `srl.migrated-${shortGeneration(gen)}`, time: new Date().toISOString(), migrated: true }
    await toSecondary(record, 'migrate', `this host is now the Secondary of ${l.address} (generation ${shortGeneration(next)}, from sequence number ${at}); it ${dial !== null ? 'dials it' : `listens at ${cfg.listen !== undefined ? formatAddress(cfg.listen) : '?'} for it`}`)
    return { role: 'secondary', primary: l.address, generation: next.id, previous: gen.id, seq: at }
  }

  /** After a migrate whose answer was lost: once the RLINK completes a handshake, the Secondary is still one (it did not become the Primary). */
  const watchDoubt = (l: Rlink): void => {
    const timer = setInterval(() => {
      if (takenOver !== null || stopped0) { clearInterval(timer); return }
      if (!l.connected) return
      clearInterval(timer)
      theSrl!.store.del(State.migrating).then(() => {
        live.refusing = null
        log(`migrate: ${l.address} connected again as a Secondary of this generation: it did not become the Primary; this host takes changes again`)
      }, (err: Error) => log(`migrate: ${err.message}`))
    }, 500)
    timer.unref()
  }
  let stopped0 = false
  stopped.then(() => { stopped0 = true }, () => { stopped0 = true })
  if (live.refusing !== null && takenOver === null && theRlinks !== null && theRlinks.links.length === 1) {
    // Restarted in doubt (a migrate's answer lost): the first handshake settles it.
    theSrl?.store.get(State.migrating).then((d) => { if (d !== undefined) watchDoubt(theRlinks.links[0]) }, () => {})
  }

  const primary: Primary = {
    cfg, data, mount, state, srl, rvg: live, rlinks, ibc, log, stop, adapter: adapter!, gate, generation, takenOver: () => takenOver, tookOver, failback, migrate,
    snapshots: snaps === null ? null : new PrimarySnapshots(snaps, live, log),
    verifier: new PrimaryVerifier(live, rlinks, snaps, log)
  }
  control.route = routed(control, async (req: ControlRequest, signal: AbortSignal): Promise<unknown> => await primaryCommand(primary, req, signal))
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

/** A Primary another host took over from becomes that host's Secondary in this process (failback; src/daemon/secondary.ts). */
export type BecomeSecondary = (handover: Handover) => Promise<RunningDaemon>

/** How long migrate waits for the Secondary to data-ack every update. */
const MIGRATE_DRAIN_MS = 120_000

/** Why a Primary whose migrate lost its answer refuses every change (logs, status). */
function migrateDoubt (to: string): string {
  return `a migrate asked ${to} to become the Primary and its answer was lost: every change is refused (EROFS) until it is heard again (then it is either the Primary, and replicafs migrate re-run finishes, or still the Secondary)`
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
    case 'set': {
      if (p.rlinks === null) throw new ReplError('NOT_FOUND', 'this Primary has no RLINK (start it with --secondary HOST:PORT)')
      if (req.attr !== 'bandwidth-limit' || !(req.value === null || (typeof req.value === 'number' && Number.isFinite(req.value) && req.value >= 1024))) throw new ReplError('USAGE', 'set: bandwidth-limit takes a rate of at least 1024 bytes per second, or none')
      const which = typeof req.secondary === 'string' ? req.secondary : undefined
      return { set: p.rlinks.setBandwidthLimit(which, req.value) }
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
    case 'failback':
      return await p.failback(req.discardLocal === true)
    case 'migrate':
      return await p.migrate()
    case 'stop':
      return stopCommand(p.stop)
    default:
      throw new ReplError('PROTOCOL', `unknown control command ${String(req.cmd)}`)
  }
}

/** What a taken-over Primary's operator does next (logs). */
const FAILBACK_HINT = 'replicafs failback --state STATE makes this host the new Primary\'s Secondary, keeping its tree as it is in a snapshot'

/** Why a Primary another host took over from refuses every change (logs, status, the EROFS error's text). */
function takenOverReason (t: TakenOver, ours: Generation): string {
  return `taken over: generation ${shortGeneration(t.by)} (at ${t.peer}) took over from this Primary's generation ${shortGeneration(ours)} after sequence number ${t.at}; every change through the mount is refused (EROFS)`
}

function takenOverStatus (p: Primary): unknown {
  const t = p.takenOver()
  return t === null ? null : { by: t.by.id, at: t.at, peer: t.peer, seen: t.seen, orphaned: Math.max(0, (p.srl?.lastSeq ?? 0) - t.at), splitBrain: t.split !== undefined && t.split.conflicts !== 0 ? t.split : null }
}

/** A split-brain in one line: how many paths changed on both sides, the first of them. */
function splitText (sb: SplitBrain): string {
  if (sb.conflicts === null) return `both sides changed paths after sequence number ${sb.at}, too many to compare (${sb.ours ?? 'many'} here, ${sb.theirs ?? 'many'} there)`
  const first = sb.conflicting.slice(0, 5).join(', ')
  return `${sb.conflicts} paths changed on both sides after sequence number ${sb.at}: ${first}${sb.conflicts > 5 ? ', ...' : ''}`
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
    fuse: { transport: p.adapter.transport, passthrough: p.adapter.passthrough, openFiles: p.adapter.openHandles, ...(p.adapter.forwarded !== undefined ? { forwarded: p.adapter.forwarded } : {}), ...(p.adapter.logSyncs !== undefined ? { logSyncs: p.adapter.logSyncs } : {}) },
    checkpointError: p.rvg.checkpointError,
    fatal: p.rvg.fatalError?.message ?? null,
    errors: Object.fromEntries(errorCounts)
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
