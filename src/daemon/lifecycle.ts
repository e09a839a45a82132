/**
 * What both daemons share from start to stop: the logger and the running-daemon handle, the stop
 * latch (stop() runs the shutdown steps once, whoever asks), the steps themselves (each attempted
 * even if an earlier one failed), the control socket's removal, the stop command, and the watch
 * on the mount (a plain `umount MOUNT` stops the daemon as `replicafs stop` would).
 */
import fs from 'node:fs'
import path from 'node:path'
import type net from 'node:net'
import type http from 'node:http'
import type { MountAdapter } from '../fuse/adapter'
import type { ControlRequest } from '../control'
import { Metrics, serveMetrics } from '../metrics'
import { formatAddress, type Address } from '../rlink/common'
import { ReplError } from '../errors'

export type Logger = (line: string) => void

export interface RunningDaemon {
  stopped: Promise<number>
  stop (code?: number): Promise<void>
}

export type Step = [string, () => Promise<void> | void]

/** Answers one control request (src/control). */
export type ControlHandler = (req: ControlRequest, signal: AbortSignal) => Promise<unknown>

/** The control socket (and `--metrics`' HTTP server), served by whichever role this daemon has now. */
export interface ControlRoute { server: net.Server | null, route: ControlHandler, metrics?: { server: http.Server, address: string } | null }

/** A role's control handler, with `metrics` (where `--metrics` serves, or null) in its status. */
export function routed (control: ControlRoute, handler: ControlHandler): ControlHandler {
  return async (req, signal) => {
    const result = await handler(req, signal)
    if (req.cmd !== 'status' || typeof result !== 'object' || result === null) return result
    return { ...result, metrics: control.metrics?.address ?? null }
  }
}

/**
 * Starts `--metrics` once per process (a role transfer keeps it: each scrape reads the status of
 * the role the daemon has then, through `control.route`).
 */
export async function serveMetricsOnce (control: ControlRoute, at: Address | undefined, log: Logger): Promise<void> {
  if (at === undefined || (control.metrics ?? null) !== null) return
  const metrics = new Metrics(async () => await control.route({ cmd: 'status' }, new AbortController().signal),
    async () => await control.route({ cmd: 'snapshot', op: 'list' }, new AbortController().signal) as Array<{ name: string, bytes: number, valid: boolean }>)
  try {
    control.metrics = await serveMetrics(at.host, at.port, metrics, log)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ReplError(code === 'EADDRINUSE' ? 'ADDRESS_IN_USE' : 'USAGE', `cannot serve metrics on ${formatAddress(at)}: ${code === 'EADDRINUSE' ? 'the address is already in use' : (err as Error).message}`)
  }
  log(`metrics at http://${control.metrics.address}/metrics`)
}

/** What a role transfer hands from the role that ends to the one that begins, in one process. */
export interface Handover {
  /** The data directory and the mount point, resolved: never stat()ed again (the mount is this process's own, served by the thread that would wait). */
  data: string
  mount: string
  adapter: MountAdapter
  unlockData: () => void
  watch: MountWatch
  control: ControlRoute
}

/**
 * The running daemon as its owner (the CLI) sees it across role transfers: stop() stops the role
 * running now, `stopped` resolves when that one has stopped.
 */
export class RoleDaemon implements RunningDaemon {
  readonly stopped: Promise<number>
  private resolve!: (code: number) => void
  private current: RunningDaemon

  constructor (first: RunningDaemon) {
    this.stopped = new Promise<number>((resolve) => { this.resolve = resolve })
    this.current = first
    this.follow(first)
  }

  /** The role `next` runs from now on. */
  set (next: RunningDaemon): void {
    this.current = next
    this.follow(next)
  }

  stop (code?: number): Promise<void> { return this.current.stop(code) }

  private follow (d: RunningDaemon): void {
    d.stopped.then((code) => { if (d === this.current) this.resolve(code) }, () => {})
  }
}

/**
 * A crash point for tests (kill -9 at an exact step of a multi-step change, as test/takeover.test.ts
 * does): with REPLICAFS_CRASH_AT=<name> in its environment the daemon kills itself there. Every
 * crash point is listed in docs/ARCHITECTURE.md with what a restart finds.
 */
export function crashPoint (name: string): void {
  if (process.env.REPLICAFS_CRASH_AT === name) process.kill(process.pid, 'SIGKILL')
}

/** Runs shutdown steps in order; a failing or slow step is logged and the next one still runs. */
export async function runSteps (steps: Step[], log: Logger): Promise<void> {
  for (const [what, step] of steps) {
    const t0 = Date.now()
    try { await step() } catch (err) { log(`stop: ${what}: ${(err as Error).message}`) }
    if (Date.now() - t0 > 2000) log(`stop: ${what} took ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  }
}

/** The control socket's shutdown step: only ours to remove if we served it (a refused start must not delete a running daemon's socket). */
export function closeControl (state: string, control: ControlRoute): Step {
  return ['control socket', async () => {
    const s = control.server
    if (s) {
      await new Promise<void>((resolve) => s.close(() => resolve()))
      try { fs.unlinkSync(path.join(state, 'control.sock')) } catch {}
    }
    const m = control.metrics ?? null
    if (m !== null) {
      control.metrics = null
      m.server.closeAllConnections()
      await new Promise<void>((resolve) => m.server.close(() => resolve()))
    }
  }]
}

/** stop() runs `release` once, however often it is called; `stopped` resolves with the exit code. */
export function stopper (release: () => Promise<void>, log: Logger, what: string): RunningDaemon {
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
export interface MountWatch { onGone: () => void, arm: (stop: RunningDaemon['stop']) => void }

export function mountWatch (mount: string, log: Logger): MountWatch {
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
export function stopCommand (stop: RunningDaemon['stop']): { stopping: true } {
  setImmediate(() => { stop(0).catch(() => {}) })
  return { stopping: true }
}
