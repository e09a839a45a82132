/**
 * One daemon per role per host. It owns its state directory (LevelDB's lock makes that exclusive),
 * its data directory (a pid lock under /run/replicafs), its FUSE mount and its control socket.
 *
 * Start: check directories -> open the SRL (lock) -> lock the data directory -> clean a stale mount
 * left by a killed daemon -> replay the SRL -> mount -> serve control -> report ready.
 * Stop (control `stop`, SIGINT, SIGTERM): unmount -> drain and checkpoint -> close -> exit 0.
 * A fatal error (a record that cannot be applied, a corrupt log) unmounts and exits non-zero:
 * never a hung mount, never a skipped update.
 */
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import type net from 'node:net'
import { Srl } from './srl'
import { PrimaryRvg } from './rvg/primary'
import { SecondaryRvg } from './rvg/secondary'
import { FuseAdapter, type AdapterRvg } from './fuse/adapter'
import type { MountOptions } from './fuse/mount-options'
import { RlinkSet, type SynchronousMode } from './rlink/sender'
import { RlinkReceiver } from './rlink/receiver'
import { readSecret, type Address } from './rlink/common'
import { IbcPrimary, ibcId } from './ibc/primary'
import { IbcSecondary } from './ibc/secondary'
import { handleIbc, type IbcRequest } from './ibc/control'
import { runTask, secondaryStep, type TaskEnv } from './ibc/task'
import { IbcError } from './ibc/errors'
import type { Follow } from './rlink/receiver'
import { SnapshotSet } from './snapshot'
import { snapshotSource, primarySnapshotOp, secondarySnapshotOp, type SnapshotRequest } from './rvg/snapshots'
import { serve } from './control'
import { sys } from './native'
import { ReplError } from './errors'

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
  rds: string
  /** Where `ibc run` finds this host's scripts (default STATE/tasks). */
  taskDir?: string
  /** `-o` mount options, checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
}

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
}

export type Logger = (line: string) => void

function requireDir (dir: string, what: string): string {
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (err) {
    // A mount point whose FUSE server was killed answers ENOTCONN: it exists; the caller cleans it up.
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN') return path.join(fs.realpathSync(path.dirname(path.resolve(dir))), path.basename(dir))
    if (code === 'ENOENT') throw new ReplError('DIR_MISSING', `${what} ${dir} does not exist`)
    throw new ReplError('DIR_MISSING', `${what} ${dir} cannot be used: ${(err as Error).message}`)
  }
  if (!st.isDirectory()) throw new ReplError('DIR_MISSING', `${what} ${dir} is not a directory`)
  return fs.realpathSync(dir)
}

/** Unescapes the octal escapes /proc/mounts uses for spaces, tabs, newlines and backslashes. */
function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

export function mountEntry (mnt: string): { source: string, type: string } | null {
  // The last entry for a path is the mount on top (what a process there sees).
  let found: { source: string, type: string } | null = null
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [source, target, type] = line.split(' ')
    if (target !== undefined && unescapeMount(target) === mnt) found = { source, type }
  }
  return found
}

/** Whether a FUSE mount's server is gone (the kernel answers ENOTCONN). Never blocks on a live one for long. */
async function isStale (mnt: string): Promise<boolean> {
  const probe = fs.promises.stat(mnt).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN')
  const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000).unref())
  return Promise.race([probe, timeout])
}

/** Makes sure the mount point is usable: cleans a stale replicafs mount, refuses a live one. */
async function prepareMountPoint (mnt: string, log: Logger): Promise<void> {
  const entry = mountEntry(mnt)
  if (entry) {
    if (entry.type.startsWith('fuse') && await isStale(mnt)) {
      log(`cleaning up the stale mount at ${mnt} left by a daemon that did not stop cleanly`)
      sys.umount2(mnt, sys.MNT_DETACH)
    } else {
      throw new ReplError('MOUNT_BUSY', `mount point ${mnt} is already mounted (${entry.type})`)
    }
  }
  if (fs.readdirSync(mnt).length > 0) throw new ReplError('DIR_NOT_EMPTY', `mount point ${mnt} is not empty`)
}

function lockDir (): string {
  for (const dir of ['/run/replicafs', path.join(require('node:os').tmpdir(), 'replicafs-locks')]) {
    try { fs.mkdirSync(dir, { recursive: true, mode: 0o700 }); fs.accessSync(dir, fs.constants.W_OK); return dir } catch {}
  }
  throw new ReplError('DATA_LOCKED', 'no writable directory for data-directory locks (/run/replicafs)')
}

/** Whether a process is alive. A zombie (killed, not yet reaped by its parent) is not. */
export function alive (pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/**
 * A data directory is served by at most one daemon. The lock is a pid file named by the data
 * directory's real path; a dead pid's file is taken over (kill -9 leaves one behind).
 */
function lockDataDir (data: string): () => void {
  const file = path.join(lockDir(), crypto.createHash('sha256').update(data).digest('hex').slice(0, 32) + '.pid')
  // The pid is written to a private file that link() then puts in place atomically, so no other
  // daemon ever reads a half-written lock.
  const tmp = `${file}.${process.pid}`
  fs.writeFileSync(tmp, `${process.pid}\n${data}\n`)
  try {
    for (let tries = 0; tries < 3; tries++) {
      try {
        fs.linkSync(tmp, file)
        return () => { try { if (fs.readFileSync(file, 'utf8').startsWith(`${process.pid}\n`)) fs.unlinkSync(file) } catch {} }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        let pid = NaN
        try { pid = parseInt(fs.readFileSync(file, 'utf8'), 10) } catch { continue } // removed meanwhile: retry
        if (pid > 0 && pid !== process.pid && alive(pid)) throw new ReplError('DATA_LOCKED', `data directory ${data} is in use by another replicafs daemon (pid ${pid})`)
        fs.rmSync(file, { force: true })
      }
    }
  } finally {
    fs.rmSync(tmp, { force: true })
  }
  throw new ReplError('DATA_LOCKED', `cannot lock data directory ${data}`)
}

/** What the last daemon on a state directory served: offline tools (snapshot restore) read it. */
export interface DaemonInfo { role: 'primary' | 'secondary', data: string, mount: string }

function writeDaemonInfo (state: string, info: DaemonInfo): void {
  const file = path.join(state, 'daemon.json')
  fs.writeFileSync(file + '.tmp', JSON.stringify(info) + '\n', { mode: 0o600 })
  fs.renameSync(file + '.tmp', file)
}

export function readDaemonInfo (state: string): DaemonInfo | null {
  try { return JSON.parse(fs.readFileSync(path.join(state, 'daemon.json'), 'utf8')) as DaemonInfo } catch { return null }
}

export interface RunningDaemon {
  stopped: Promise<number>
  stop (code?: number): Promise<void>
}

/** The checks both roles start with: the data directory and the mount point exist and are apart. */
function checkDirs (cfg: { data: string, mount: string }): { data: string, mount: string } {
  const data = requireDir(cfg.data, 'data directory')
  const mount = requireDir(cfg.mount, 'mount point')
  if (data === mount) throw new ReplError('USAGE', 'the data directory and the mount point must differ')
  if (mount.startsWith(data + '/') || data.startsWith(mount + '/')) throw new ReplError('USAGE', `the data directory ${data} and the mount point ${mount} must not contain each other`)
  return { data, mount }
}

/**
 * Creates the state directory, the daemon's alone: 0700, because the data path runs with umask 0
 * (set here: modes arrive already masked by the caller's umask, and are applied exactly).
 */
function prepareState (dir: string): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const state = fs.realpathSync(dir)
  fs.chmodSync(state, 0o700)
  process.umask(0)
  return state
}

type Step = [string, () => Promise<void> | void]

/** Runs shutdown steps in order; a failing or slow step is logged and the next one still runs. */
async function runSteps (steps: Step[], log: Logger): Promise<void> {
  for (const [what, step] of steps) {
    const t0 = Date.now()
    try { await step() } catch (err) { log(`stop: ${what}: ${(err as Error).message}`) }
    if (Date.now() - t0 > 2000) log(`stop: ${what} took ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  }
}

/** The control socket's shutdown step: only ours to remove if we served it (a refused start must not delete a running daemon's socket). */
function closeControl (state: string, server: () => net.Server | null): Step {
  return ['control socket', async () => {
    const s = server()
    if (s) {
      await new Promise<void>((resolve) => s.close(() => resolve()))
      try { fs.unlinkSync(path.join(state, 'control.sock')) } catch {}
    }
  }]
}

/** stop() runs `release` once, however often it is called; `stopped` resolves with the exit code. */
function stopper (release: () => Promise<void>, log: Logger, what: string): RunningDaemon {
  let stopping: Promise<void> | null = null
  let resolveStopped!: (code: number) => void
  const stopped = new Promise<number>((resolve) => { resolveStopped = resolve })
  const stop = (code = 0): Promise<void> => {
    if (!stopping) {
      stopping = (async () => {
        log(`stopping: ${what}`)
        await release()
        log('stopped')
        resolveStopped(code)
      })()
    }
    return stopping
  }
  return { stopped, stop }
}

/**
 * A plain `umount MOUNT` (or anyone's) ends the FUSE session under the daemon: it then stops as
 * `replicafs stop` would (finish the SRL work, checkpoint, release the locks, exit 0). `onGone`
 * goes to the adapter before the daemon can stop; `arm` connects it once it can.
 */
function mountWatch (mount: string, log: Logger): { onGone: () => void, arm: (stop: RunningDaemon['stop']) => void } {
  let stopNow: (() => void) | null = null
  let gone = false
  return {
    onGone: () => { gone = true; stopNow?.() },
    arm: (stop) => {
      stopNow = () => { log(`the mount ${mount} was unmounted; stopping as replicafs stop would`); stop(0).catch(() => {}) }
      if (gone) stopNow()
    }
  }
}

/** The control command every role answers alike: stop, after the reply is sent. */
function stopCommand (stop: RunningDaemon['stop']): { stopping: true } {
  setImmediate(() => { stop(0).catch(() => {}) })
  return { stopping: true }
}

export async function runPrimary (cfg: PrimaryConfig, log: Logger): Promise<RunningDaemon> {
  const { data, mount } = checkDirs(cfg)
  const state = prepareState(cfg.state)

  // Acquired in order; on a failed start, released in reverse.
  let srl: Srl | null = null
  let unlockData: (() => void) | null = null
  let rvg: PrimaryRvg | null = null
  let adapter: FuseAdapter | null = null
  let server: net.Server | null = null
  let rlinks: RlinkSet | null = null
  let ibc: IbcPrimary | null = null
  let snaps: SnapshotSet | null = null
  const secret = cfg.secondaries.length > 0 ? readSecret(cfg.secretFile!) : null
  const watch = mountWatch(mount, log)

  /** Shutdown order: unmount (no new ops), stop control, drain + checkpoint + close the SRL, unlock. */
  const release = (): Promise<void> => runSteps([
    ['unmount', async () => { await adapter?.unmount() }],
    ['RLINKs', () => { rlinks?.close() }],
    closeControl(state, () => server),
    ['SRL', async () => { if (rvg) await rvg.close(); else if (srl) await srl.close() }],
    ['snapshots', async () => { if (snaps) { await snaps.sync(); snaps.close() } }],
    ['data directory lock', () => { unlockData?.() }]
  ], log)

  try {
    if (cfg.journal) {
      srl = await Srl.open(path.join(state, 'srl'), { ringBytes: cfg.srlBytes, role: 'primary' })
      if (srl.format.ringBytes !== cfg.srlBytes) log(`SRL size stays ${srl.format.ringBytes} bytes (set when the state directory was created)`)
    }
    unlockData = lockDataDir(data)
    if (cfg.journal) writeDaemonInfo(state, { role: 'primary', data, mount })
    await prepareMountPoint(mount, log)

    if (srl !== null && cfg.secondaries.length > 0) {
      rlinks = await RlinkSet.open(srl, { secondaries: cfg.secondaries, mode: cfg.synchronous, rds: cfg.rds, secret, log })
    }
    rvg = new PrimaryRvg(data, srl, { retain: cfg.retain, log, replication: rlinks ?? undefined })
    if (srl !== null) {
      snaps = SnapshotSet.open(state, data, { log })
      rvg.snapshots = snaps
    }
    for (const w of srl?.warnings ?? []) log(w)
    const replayed = await rvg.recover()
    if (replayed > 0) log(`recovered: replayed ${replayed} SRL records up to sequence number ${rvg.appliedSeq}`)
    rvg.start()
    rlinks?.start()
    if (srl !== null) {
      ibc = await IbcPrimary.open(srl, rvg)
      // An `ibc run` cut short by a stop or crash of this daemon: its flow is gone.
      for (const reg of ibc.registry.list().filter((r) => r.task === true)) {
        log(`ibc run ${reg.name} did not finish before the last stop; unregistering it`)
        await ibc.unregister(reg.name, undefined).catch((err: Error) => log(`ibc run ${reg.name}: ${err.message}`))
      }
    }

    adapter = new FuseAdapter(rvg, mount, { mountOptions: cfg.mountOptions, onGone: watch.onGone })
    if (snaps !== null) adapter.snapshots = snapshotSource(snaps)
    await adapter.mount()
    // Children (ibc run scripts, sync -f) must not inherit /dev/fuse: a script outliving a killed
    // daemon would keep its dead mount busy.
    sys.cloexecFrom(3)
  } catch (err) {
    await release()
    throw err
  }

  const { stopped, stop } = stopper(release, log, 'unmounting, applying and checkpointing the SRL')
  watch.arm(stop)
  const live = rvg
  live.onFatal = (err) => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }
  if (rlinks !== null) rlinks.onFatal = (err) => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }

  try {
    server = await serve(state, async (req, signal) => {
      switch (req.cmd) {
        case 'status':
          return {
            role: cfg.journal ? 'primary' : 'passthrough',
            pid: process.pid,
            data,
            mount,
            state,
            rds: cfg.rds,
            srlId: srl?.srlId ?? null,
            synchronous: cfg.synchronous,
            srl: srl ? srl.stats(live.appliedSeq) : null,
            rlinks: rlinks?.status() ?? [],
            ibc: ibc?.status() ?? null,
            fatal: live.fatalError?.message ?? null
          }
        case 'ibc':
          if (ibc === null) throw new ReplError('USAGE', 'a passthrough has no SRL, so no IBC')
          return handleIbc({ primary: ibc }, req as IbcRequest, signal)
        case 'snapshot':
          if (snaps === null) throw new ReplError('USAGE', 'a passthrough keeps no snapshots')
          return primarySnapshotOp(snaps, live, req as SnapshotRequest, log)
        case 'ibc-run': {
          if (ibc === null) throw new ReplError('USAGE', 'a passthrough has no SRL, so no IBC')
          const links = rlinks?.links ?? []
          const down = links.filter((l) => !l.connected)
          if (down.length > 0) throw new IbcError('EIBC_TASK_FAILED', `the RLINK to ${down.map((l) => `${l.address} (${l.state})`).join(', ')} is not connected`)
          const env: TaskEnv = { role: 'primary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }
          const timeoutS = typeof req.timeoutS === 'number' ? req.timeoutS : 120
          return runTask(env, ibc, links.map((l) => ({
            address: l.address,
            step: async (task: string, step: string, t: number) => {
              const r = await l.task(task, step, task, t)
              return { code: r.code, output: r.output, error: r.error, ibcId: r.ibcId }
            }
          })), String(req.task ?? ''), timeoutS, log)
        }
        case 'pause':
        case 'resume': {
          if (rlinks === null) throw new ReplError('USAGE', 'this Primary has no RLINK (start it with --secondary HOST:PORT)')
          const which = typeof req.secondary === 'string' ? req.secondary : undefined
          return { [req.cmd === 'pause' ? 'paused' : 'resumed']: await rlinks.setPaused(which, req.cmd === 'pause') }
        }
        case 'sync':
          await live.sync()
          return { synced: srl ? srl.lastSeq : null }
        case 'stop':
          return stopCommand(stop)
        default:
          throw new ReplError('USAGE', `unknown control command ${req.cmd}`)
      }
    })
  } catch (err) {
    await stop(1)
    throw err
  }
  return { stopped, stop }
}

/**
 * The Secondary daemon: its SRL, its data directory kept by the apply loop, a read-only mount,
 * the RLINK listener, the control socket.
 * Start: directories -> SRL (lock) -> data-directory lock -> stale mount -> apply what is logged
 * -> mount -> listen -> control. Stop: stop listening -> unmount -> finish applying, checkpoint ->
 * close -> unlock.
 */
export async function runSecondary (cfg: SecondaryConfig, log: Logger): Promise<RunningDaemon> {
  const { data, mount } = checkDirs(cfg)
  const secret = readSecret(cfg.secretFile)
  const state = prepareState(cfg.state)

  let srl: Srl | null = null
  let unlockData: (() => void) | null = null
  let rvg: SecondaryRvg | null = null
  let adapter: FuseAdapter | null = null
  let server: net.Server | null = null
  let receiver: RlinkReceiver | null = null
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
    srl = await Srl.open(path.join(state, 'srl'), { ringBytes: cfg.srlBytes, role: 'secondary' })
    if (srl.format.ringBytes !== cfg.srlBytes) log(`SRL size stays ${srl.format.ringBytes} bytes (set when the state directory was created)`)
    unlockData = lockDataDir(data)
    writeDaemonInfo(state, { role: 'secondary', data, mount })
    let followed: Follow | null = (await srl.store.get<Follow>('follow')) ?? null
    if (followed === null && srl.lastSeq === 0 && fs.readdirSync(data).length > 0) {
      throw new ReplError('DIR_NOT_EMPTY', `data directory ${data} is not empty, and this Secondary has never replicated: start a new Secondary on an empty data directory`)
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
    rvg.snapshots = snaps
    for (const w of srl.warnings) log(w)
    // An `ibc run` cut short by a restart of this Secondary: never stay frozen for a lost flow.
    const taskEnvEarly: TaskEnv = { role: 'secondary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }
    for (const reg of ibc.registry.list().filter((r) => r.task === true)) {
      log(`ibc run ${reg.name} did not finish before the last stop; unfreezing and unregistering it`)
      await secondaryStep(taskEnvEarly, ibc, reg.name, 'abort', 0).catch((err: Error) => log(`ibc run ${reg.name}: ${err.message}`))
    }
    await rvg.recover()
    if (rvg.appliedSeq > 0) log(`applied everything logged, up to sequence number ${rvg.appliedSeq}`)
    rvg.start()
    const view: AdapterRvg = {
      root: data,
      barrier: () => Promise.resolve(),
      writesPending: () => false,
      write: () => Promise.reject(Object.assign(new Error('read-only Secondary'), { code: 'EROFS' })),
      mutate: () => Promise.reject(Object.assign(new Error('read-only Secondary'), { code: 'EROFS' })),
      sync: () => Promise.resolve()
    }
    adapter = new FuseAdapter(view as unknown as PrimaryRvg, mount, { readOnly: true, mountOptions: cfg.mountOptions, onGone: watch.onGone })
    adapter.snapshots = snapshotSource(snaps)
    await adapter.mount()
    sys.cloexecFrom(3)
    const taskEnv: TaskEnv = { role: 'secondary', state, data, mount, taskDir: cfg.taskDir ?? path.join(state, 'tasks') }
    const liveIbcForTasks = ibc
    receiver = new RlinkReceiver({
      listen: cfg.listen,
      secret,
      rds: cfg.rds,
      rvg,
      store: srl.store,
      log,
      task: (task, step, timeoutS) => secondaryStep(taskEnv, liveIbcForTasks, task, step, timeoutS)
    })
    await receiver.start()
    log(`listening for the Primary on ${receiver.address} (RDS ${cfg.rds})`)
  } catch (err) {
    await release()
    throw err
  }

  const { stopped, stop } = stopper(release, log, 'closing the RLINK, unmounting, applying and checkpointing the SRL')
  watch.arm(stop)
  const live = rvg
  const rx = receiver
  const liveSrl = srl
  const liveIbc = ibc!
  const liveSnaps = snaps!
  live.onFatal = (err) => { log(`stopping after a fatal error: ${err.message}`); stop(1).catch(() => {}) }

  try {
    server = await serve(state, async (req, signal) => {
      switch (req.cmd) {
        case 'ibc':
          return handleIbc({ secondary: liveIbc }, req as IbcRequest, signal)
        case 'ibc-run':
          throw new IbcError('EIBC_WRONG_ROLE', 'ibc run runs on the Primary; this daemon is a Secondary')
        case 'snapshot':
          return secondarySnapshotOp(liveSnaps, live, req as SnapshotRequest, log)
        case 'status':
          return {
            role: 'secondary',
            pid: process.pid,
            data,
            mount,
            state,
            rds: cfg.rds,
            listen: rx.address,
            srl: liveSrl.stats(live.appliedSeq),
            receivedSeq: live.receivedSeq,
            appliedSeq: live.appliedSeq,
            consistent: live.consistent,
            frozen: liveIbc.frozen,
            ibc: liveIbc.status(),
            connected: rx.connected,
            primary: { address: rx.primaryAddress, srlId: rx.follow?.srlId ?? null },
            fatal: live.fatalError?.message ?? null
          }
        case 'sync':
          await liveSrl.sync()
          return { synced: liveSrl.lastSeq }
        case 'pause':
        case 'resume':
          throw new ReplError('USAGE', `${req.cmd} runs on the Primary (VVR's pauserep/resumerep); this daemon is a Secondary`)
        case 'stop':
          return stopCommand(stop)
        default:
          throw new ReplError('USAGE', `unknown control command ${req.cmd}`)
      }
    })
  } catch (err) {
    await stop(1)
    throw err
  }
  return { stopped, stop }
}
