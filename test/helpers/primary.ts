/**
 * Temp dirs, the replicafs CLI, and a running Primary daemon as test fixtures.
 */
import * as fsp from 'fs/promises'
import * as os from 'os'
import * as path from 'path'
import { exec, execOk, describeFailure, repoRoot, waitFor, assertLive, type ExecOptions, type ExecResult } from './util'
import { request } from '../../src/control'
import {
  registerTmpRoot, registerMount, registerState, installExitHandlers, fuseMountAt, isMounted,
  pidsWithArg, processAlive, processGone
} from './cleanup'

export interface Dirs {
  /** The temp root holding everything below. */
  root: string
  data: string
  mount: string
  /** Not created: the daemon must create it. */
  state: string
}

/** Creates /tmp/replicafs-e2e-XXXX/{data,mnt} (state path inside, not created); registered for cleanup. */
export async function tmpdirs (label = 'fs'): Promise<Dirs> {
  assertLive(`tmpdirs ${label}`)
  installExitHandlers()
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), `replicafs-e2e-${label}-`))
  registerTmpRoot(root)
  const dirs = { root, data: path.join(root, 'data'), mount: path.join(root, 'mnt'), state: path.join(root, 'state') }
  await fsp.mkdir(dirs.data)
  await fsp.mkdir(dirs.mount)
  registerMount(dirs.mount)
  registerState(dirs.state)
  return dirs
}

/** Runs `node bin/replicafs ...args` from the repo root. */
export function cli (args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return exec(process.execPath, [path.join(repoRoot(), 'bin', 'replicafs'), ...args], { cwd: repoRoot(), timeoutMs: 90_000, ...opts })
}

/** Fails loudly (never skips) if this machine cannot do FUSE at all. */
export async function assertFuseAvailable (): Promise<void> {
  const problems: string[] = []
  try {
    const fh = await fsp.open('/dev/fuse', 'r+')
    await fh.close()
  } catch (err) {
    problems.push(`cannot open /dev/fuse: ${(err as Error).message}`)
  }
  try {
    const fss = await fsp.readFile('/proc/filesystems', 'utf8')
    if (!/\bfuse\b/.test(fss)) problems.push('the kernel does not list "fuse" in /proc/filesystems')
  } catch (err) {
    problems.push(`cannot read /proc/filesystems: ${(err as Error).message}`)
  }
  if (problems.length > 0) {
    throw new Error(`FUSE is not available on this machine, so the end-to-end tests cannot run: ${problems.join('; ')}`)
  }
}

export interface SrlStatus {
  records: number
  bytes: number
  oldestSeq: number | null
  newestSeq: number | null
  appliedSeq: number
  capacityBytes: number
}

export interface Status {
  role: string
  pid: number
  mount: string
  data: string
  srl: SrlStatus
  /** The error that stopped the RVG, or null. */
  fatal: string | null
}

export interface DumpRecord {
  seq: number
  type: string
  path?: string
  offset?: number
  length?: number
  [k: string]: unknown
}

export interface StartOptions {
  dirs?: Dirs
  srlSize?: string
  retain?: boolean
  extraArgs?: string[]
  /** How long `primary --daemon` may take to report ready. */
  timeoutMs?: number
  /** The daemon's environment (crash points: REPLICAFS_CRASH_AT). */
  env?: NodeJS.ProcessEnv
}

export interface Primary extends Dirs {
  pid: number
  /** `replicafs stop`, then checks that the daemon is gone and the mount point unmounted. */
  stop(): Promise<void>
  /** SIGKILL the daemon and wait until it is gone (the mount is left stale). */
  kill9(): Promise<void>
  /** Runs a command with cwd = the mount point. */
  run(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>
  status(): Promise<Status>
  /** Waits until every logged record has been applied to the data directory. */
  quiesce(timeoutMs?: number): Promise<void>
  /** Tail of daemon.log, for failure messages. */
  log(): Promise<string>
}

export function primaryArgs (dirs: Dirs, opts: StartOptions = {}): string[] {
  const args = ['primary', '--data', dirs.data, '--mount', dirs.mount, '--state', dirs.state, '--srl-size', opts.srlSize ?? '16M', '--daemon']
  if (opts.retain === true) args.push('--retain')
  // REPLICAFS_TEST_PRIMARY_FUSE=ll|compat: run a suite's Primaries on that transport (unless the test names one).
  const fuse = process.env.REPLICAFS_TEST_PRIMARY_FUSE
  if (fuse !== undefined && fuse !== '' && !(opts.extraArgs ?? []).includes('--fuse')) args.push('--fuse', fuse)
  return args.concat(opts.extraArgs ?? [])
}

export async function daemonLog (state: string): Promise<string> {
  try {
    const text = await fsp.readFile(path.join(state, 'daemon.log'), 'utf8')
    return text.length > 3000 ? '...' + text.slice(-3000) : text
  } catch (err) {
    return `(no daemon.log: ${(err as Error).message})`
  }
}

export async function status (state: string): Promise<Status> {
  const r = await cli(['status', '--state', state, '--json'], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  try {
    return JSON.parse(r.stdout) as Status
  } catch {
    throw new Error(`replicafs status --json printed something that is not JSON: ${r.stdout}`)
  }
}

/**
 * The same status straight from the control socket, for polls (waitFor loops): starting a CLI
 * process ten times a second costs a core of this two-core machine, which the daemons under test
 * then lack. Assertions on the CLI's contract use status().
 */
export async function statusFast<T = Status> (state: string): Promise<T> {
  return await request(state, { cmd: 'status' }, 20_000) as T
}

/** `replicafs srl-dump --state DIR --json`, parsed (one JSON object per line). */
export async function srlDump (state: string): Promise<DumpRecord[]> {
  const r = await cli(['srl-dump', '--state', state, '--json'], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  const lines = r.stdout.split('\n').filter((l) => l.trim() !== '')
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as DumpRecord
    } catch {
      throw new Error(`srl-dump line ${i + 1} is not JSON: ${l}`)
    }
  })
}

/** Starts a Primary with --daemon and returns once the mount is live. */
export async function startPrimary (opts: StartOptions = {}): Promise<Primary> {
  await assertFuseAvailable()
  const dirs = opts.dirs ?? await tmpdirs()
  registerMount(dirs.mount)
  registerState(dirs.state)
  const r = await cli(primaryArgs(dirs, opts), { timeoutMs: opts.timeoutMs ?? 90_000, ...(opts.env !== undefined ? { env: opts.env } : {}) })
  if (r.code !== 0) {
    throw new Error(`primary did not start: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
  }
  if ((await fuseMountAt(dirs.mount)) === undefined) {
    throw new Error(`primary --daemon exited 0 but ${dirs.mount} is not a FUSE mount\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
  }
  const st = await status(dirs.state)
  if (!Number.isInteger(st.pid) || !processAlive(st.pid)) throw new Error(`status reports pid ${String(st.pid)}, which is not a live process`)
  return makePrimary(dirs, st.pid)
}

function makePrimary (dirs: Dirs, pid: number): Primary {
  const p: Primary = {
    ...dirs,
    pid,
    async stop () {
      const r = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
      if (r.code !== 0) throw new Error(`stop failed: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
      await waitFor(() => !processAlive(pid), { timeoutMs: 30_000, what: `daemon pid ${pid} to exit after stop` })
      if (await isMounted(dirs.mount)) throw new Error(`after stop, ${dirs.mount} is still mounted`)
    },
    async kill9 () {
      try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
      await waitFor(() => !processAlive(pid), { timeoutMs: 30_000, what: `daemon pid ${pid} to die after SIGKILL` })
      // and to be reaped: a zombie still answers kill(pid, 0), which pid-file locks rely on
      await waitFor(() => processGone(pid), { timeoutMs: 30_000, what: `killed daemon pid ${pid} to be reaped by its parent (still a zombie)` })
      // a daemon may have helper processes; none may survive holding the state dir
      await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 30_000, what: `every process holding ${dirs.state} to die` })
    },
    run (cmd, args, opts = {}) {
      return exec(cmd, args, { cwd: dirs.mount, timeoutMs: 120_000, ...opts })
    },
    status () { return status(dirs.state) },
    async quiesce (timeoutMs = 30_000) {
      await waitFor(async () => {
        const s = (await statusFast(dirs.state)).srl
        return s.newestSeq === null || s.appliedSeq >= s.newestSeq
      }, { timeoutMs, what: 'the daemon to apply every logged record (appliedSeq >= newestSeq)', intervalMs: 100 })
    },
    log () { return daemonLog(dirs.state) }
  }
  return p
}

/** Runs `replicafs primary` with the given args (no fixture); for negative tests. */
export function startRaw (args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return cli(args, { timeoutMs: 90_000, ...opts })
}

/** Starts a Primary on existing dirs (a restart). */
export async function restartPrimary (dirs: Dirs, opts: StartOptions = {}): Promise<Primary> {
  return startPrimary({ ...opts, dirs })
}

export { execOk }
