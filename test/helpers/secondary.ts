/**
 * A running Secondary daemon, and a Primary/Secondary pair on loopback, as test fixtures.
 * The CLI and the status fields used here are the contract in README.md ("Commands", "status --json fields").
 */
import * as fsp from 'fs/promises'
import * as path from 'path'
import { exec, describeFailure, waitFor, type ExecOptions, type ExecResult } from './util'
import { registerMount, registerState, fuseMountAt, isMounted, pidsWithArg, processAlive, processGone } from './cleanup'
import { tmpdirs, cli, daemonLog, startPrimary, assertFuseAvailable, statusFast, type Dirs, type Primary, type Status } from './primary'

export interface RlinkStatus {
  secondary: string
  state: 'connecting' | 'connected' | 'disconnected' | 'paused'
  sentSeq: number
  networkAckedSeq: number
  dataAckedSeq: number
  lagUpdates: number
  lagBytes: number
  lagSeconds: number
  lastError: string | null
}

export interface PrimaryStatus extends Status {
  rds: string
  synchronous: 'off' | 'override' | 'fail'
  srlId: string
  rlinks: RlinkStatus[]
}

export interface SecondaryStatus extends Status {
  rds: string
  listen: string
  receivedSeq: number
  appliedSeq: number
  consistent: boolean
  /** The synchronization in progress, or null. */
  syncing: string | null
  /** The snapshot of its last consistent state kept while a synchronization runs, or null. */
  syncSnapshot: string | null
  /** Why applying is held (a full data directory), or null. */
  stalled: string | null
  connected: boolean
  primary: { address: string | null, srlId: string | null }
}

/** Writes a secret file (mode 0600) under `dir` and returns its path. */
export async function secretFile (dir: string, secret = 'correct horse battery staple', name = 'secret'): Promise<string> {
  const file = path.join(dir, name)
  await fsp.writeFile(file, secret + '\n', { mode: 0o600 })
  return file
}

export async function secondaryStatus (state: string): Promise<SecondaryStatus> {
  const r = await cli(['status', '--state', state, '--json'], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  return JSON.parse(r.stdout) as SecondaryStatus
}

export async function primaryStatus (state: string): Promise<PrimaryStatus> {
  const r = await cli(['status', '--state', state, '--json'], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  return JSON.parse(r.stdout) as PrimaryStatus
}

export interface SecondaryOptions {
  dirs?: Dirs
  secret?: string
  /** Path of an existing secret file (overrides `secret`). */
  secretFile?: string
  /** Default 127.0.0.1:0 (a free port; read it back from `listen`). */
  listen?: string
  rds?: string
  srlSize?: string
  extraArgs?: string[]
}

export interface Secondary extends Dirs {
  pid: number
  /** The real HOST:PORT it listens on. */
  address: string
  secretFile: string
  stop(): Promise<void>
  kill9(): Promise<void>
  status(): Promise<SecondaryStatus>
  log(): Promise<string>
}

export function secondaryArgs (dirs: Dirs, secret: string, opts: SecondaryOptions = {}): string[] {
  const args = ['secondary', '--data', dirs.data, '--mount', dirs.mount, '--state', dirs.state,
    '--listen', opts.listen ?? '127.0.0.1:0', '--secret-file', secret, '--srl-size', opts.srlSize ?? '16M', '--daemon']
  if (opts.rds !== undefined) args.push('--rds', opts.rds)
  return args.concat(opts.extraArgs ?? [])
}

/** Starts a Secondary with --daemon and returns once its read-only mount is live. */
export async function startSecondary (opts: SecondaryOptions = {}): Promise<Secondary> {
  await assertFuseAvailable()
  const dirs = opts.dirs ?? await tmpdirs('sec')
  registerMount(dirs.mount)
  registerState(dirs.state)
  const secret = opts.secretFile ?? await secretFile(dirs.root, opts.secret)
  const r = await cli(secondaryArgs(dirs, secret, opts), { timeoutMs: 90_000 })
  if (r.code !== 0) throw new Error(`secondary did not start: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
  if ((await fuseMountAt(dirs.mount)) === undefined) throw new Error(`secondary --daemon exited 0 but ${dirs.mount} is not a FUSE mount`)
  const st = await secondaryStatus(dirs.state)
  if (!processAlive(st.pid)) throw new Error(`status reports pid ${st.pid}, which is not a live process`)
  const pid = st.pid
  return {
    ...dirs,
    pid,
    address: st.listen,
    secretFile: secret,
    async stop () {
      const r = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
      if (r.code !== 0) throw new Error(`stop failed: ${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(dirs.state)}`)
      await waitFor(() => !processAlive(pid), { timeoutMs: 30_000, what: `secondary pid ${pid} to exit after stop` })
      if (await isMounted(dirs.mount)) throw new Error(`after stop, ${dirs.mount} is still mounted`)
    },
    async kill9 () {
      try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
      await waitFor(() => processGone(pid), { timeoutMs: 30_000, what: `secondary pid ${pid} to die and be reaped` })
      await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 30_000, what: `every process holding ${dirs.state} to die` })
    },
    status () { return secondaryStatus(dirs.state) },
    log () { return daemonLog(dirs.state) }
  }
}

export interface PairOptions {
  synchronous?: 'off' | 'override' | 'fail'
  rds?: string
  srlSize?: string
  /** Connect the Primary to this address instead of the Secondary's (a proxy in front of it). */
  via?: (secondaryAddress: string) => Promise<string> | string
  primaryExtraArgs?: string[]
  secondaryExtraArgs?: string[]
}

export interface Pair {
  primary: Primary
  secondary: Secondary
  /** The address the Primary was given with --secondary. */
  target: string
  primaryStatus(): Promise<PrimaryStatus>
  /** Waits until the Secondary has applied everything the Primary has logged (data-acked). */
  caughtUp(timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

/** Starts a Secondary, then a Primary replicating to it (optionally through `via`). */
export async function startPair (opts: PairOptions = {}): Promise<Pair> {
  const secondary = await startSecondary({ rds: opts.rds, srlSize: opts.srlSize, extraArgs: opts.secondaryExtraArgs })
  const target = opts.via ? await opts.via(secondary.address) : secondary.address
  const pdirs = await tmpdirs('pri')
  const extra = ['--secondary', target, '--secret-file', secondary.secretFile]
  if (opts.synchronous) extra.push('--synchronous', opts.synchronous)
  if (opts.rds) extra.push('--rds', opts.rds)
  const primary = await startPrimary({ dirs: pdirs, srlSize: opts.srlSize, extraArgs: extra.concat(opts.primaryExtraArgs ?? []) })
  return {
    primary,
    secondary,
    target,
    primaryStatus: () => primaryStatus(primary.state),
    async caughtUp (timeoutMs = 60_000) {
      await waitFor(async () => {
        const p = await statusFast<PrimaryStatus>(primary.state)
        const newest = p.srl.newestSeq ?? p.srl.appliedSeq
        return p.rlinks.every((l) => l.dataAckedSeq >= newest && l.dataAckedSeq >= p.srl.appliedSeq)
      }, { timeoutMs, what: 'every RLINK to data-ack everything the Primary logged', intervalMs: 100 })
    },
    async stop () {
      const errors: string[] = []
      await primary.stop().catch((err: Error) => errors.push(err.message))
      await secondary.stop().catch((err: Error) => errors.push(err.message))
      if (errors.length > 0) throw new Error(errors.join('\n'))
    }
  }
}

/** Runs a command on the Secondary's mount (read-only). */
export function runOn (dir: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return exec(cmd, args, { cwd: dir, timeoutMs: 120_000, ...opts })
}
