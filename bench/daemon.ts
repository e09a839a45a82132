/**
 * Start and stop replicafs daemons through the public CLI (bin/replicafs), the
 * way a user would:
 *
 *   node bin/replicafs passthrough|primary|secondary --data D --mount M --state S [--srl-size N] [EXTRA...] --daemon
 *   node bin/replicafs stop --state S
 *
 * (EXTRA: e.g. `--secondary HOST:PORT --secret-file F --synchronous MODE` for a
 * replicating Primary, `--listen 127.0.0.1:0 --secret-file F` for a Secondary.)
 *
 * `--daemon` must return only once the filesystem is mounted; we check that
 * the mountpoint really is a FUSE mount before handing it to a workload.
 * `stop()` never throws until it has done everything it can: if the CLI
 * cannot stop the daemon, the mount is detached (umount -l) and any process
 * whose command line names this daemon's (unique) state directory is killed
 * by pid. Only processes we started can match: the state directory is a fresh
 * temporary path.
 */
import * as fs from 'fs'
import * as path from 'path'
import { describe, run } from './proc'
import { isMounted, mounts } from './image'

export type DaemonMode = 'passthrough' | 'primary' | 'secondary'

export interface DaemonDirs {
  data: string
  mount: string
  state: string
}

export interface Daemon {
  mode: DaemonMode
  dirs: DaemonDirs
  /** Seconds `--daemon` took to return (start-up, including SRL preallocation for a Primary). */
  startSeconds: number
  stop(): Promise<void>
}

const START_TIMEOUT_MS = 120_000
const STOP_TIMEOUT_MS = 90_000

export function cliPath(repo: string): string {
  return path.join(repo, 'bin', 'replicafs')
}

/** Throws a clear error if the CLI is not there at all. */
export function checkCli(repo: string): void {
  const cli = cliPath(repo)
  if (!fs.existsSync(cli)) throw new Error(`${cli} does not exist yet: the bare and primary columns need the replicafs CLI`)
}

function pidsMentioning(needle: string): number[] {
  const pids: number[] = []
  for (const ent of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue
    const pid = Number(ent)
    if (pid === process.pid) continue
    try {
      const cmd = fs.readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0').join(' ')
      if (cmd.includes(needle)) pids.push(pid)
    } catch {
      /* exited */
    }
  }
  return pids
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms))
}

export async function startDaemon(
  repo: string,
  mode: DaemonMode,
  dirs: DaemonDirs,
  opts: {
    srlSizeBytes?: number
    /** More flags for the daemon (before --daemon). */
    extraArgs?: string[]
    /** Node options for the CLI; `--daemon` passes them on to the daemon it detaches (e.g. --cpu-prof). */
    nodeArgs?: string[]
    log: (s: string) => void
    warn?: (s: string) => void
  },
): Promise<Daemon> {
  checkCli(repo)
  for (const d of [dirs.data, dirs.mount, dirs.state]) fs.mkdirSync(d, { recursive: true })
  const argv = [process.execPath, ...(opts.nodeArgs ?? []), cliPath(repo), mode, '--data', dirs.data, '--mount', dirs.mount, '--state', dirs.state]
  if (mode !== 'passthrough' && opts.srlSizeBytes !== undefined) argv.push('--srl-size', String(opts.srlSizeBytes))
  argv.push(...(opts.extraArgs ?? []), '--daemon')

  let stopped = false
  let started = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    const problems: string[] = []
    const stopArgv = [process.execPath, cliPath(repo), 'stop', '--state', dirs.state]
    const r = await run(stopArgv, { cwd: repo, timeoutMs: STOP_TIMEOUT_MS })
    // After a failed start there may be nothing to stop; only complain about a daemon that was up.
    if ((r.code !== 0 || r.timedOut) && (started || isMounted(dirs.mount))) {
      problems.push(`\`${describe(stopArgv)}\` ${r.timedOut ? 'timed out' : `exited ${r.code}`}: ${(r.stderr || r.stdout).trim().split('\n').slice(-8).join(' | ')}`)
    }
    // Give the daemon a moment to finish unmounting after `stop` returns.
    for (let i = 0; i < 50 && isMounted(dirs.mount); i++) await sleep(100)
    if (isMounted(dirs.mount)) {
      problems.push(`${dirs.mount} still mounted after stop; detaching it`)
      await run(['umount', '-l', dirs.mount], { timeoutMs: 30_000 })
    }
    let pids = pidsMentioning(dirs.state)
    for (let i = 0; i < 30 && pids.length; i++) {
      await sleep(100)
      pids = pidsMentioning(dirs.state)
    }
    if (pids.length) {
      problems.push(`daemon process(es) ${pids.join(', ')} still running after stop; killing them`)
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          /* gone */
        }
      }
    }
    if (problems.length) {
      const msg = `stopping ${mode} (${dirs.state}): ${problems.join('; ')}`
      opts.log(`warning: ${msg}`)
      if (started) opts.warn?.(msg)
    }
  }

  const r = await run(argv, { cwd: repo, timeoutMs: START_TIMEOUT_MS })
  const ok = r.code === 0 && !r.timedOut
  const fstype = mounts().get(path.resolve(dirs.mount))
  if (!ok || !fstype || !fstype.startsWith('fuse')) {
    const why = r.timedOut
      ? `did not return within ${START_TIMEOUT_MS / 1000} s`
      : r.code !== 0
        ? `exited ${r.code ?? r.signal}`
        : fstype
          ? `returned 0 but ${dirs.mount} is a ${fstype} mount, not FUSE`
          : `returned 0 but ${dirs.mount} is not mounted`
    const out = (r.stderr + r.stdout).trim().split('\n').slice(-12).join('\n').replace(/^/gm, '    ')
    await stop()
    throw new Error(`replicafs ${mode} failed to start: \`${describe(argv)}\` ${why}${out.trim() ? `:\n${out}` : ''}`)
  }
  started = true
  return { mode, dirs, startSeconds: r.seconds, stop }
}
