/**
 * Cleanup registry. Everything a test creates (temp roots, mount points, daemons by state dir)
 * is registered here before it is created, so that:
 *  - `cleanupAll()` (called from each file's after hook, after each `isolated()` test, and by the
 *    last test of each file) stops daemons, unmounts and removes temp dirs, and reports what it
 *    had to force; a test or file that needed forcing fails;
 *  - if the runner exits early (uvu -b calls process.exit(1), Ctrl-C), a synchronous exit
 *    handler still kill -9s our daemons and lazily unmounts our mount points.
 */
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as os from 'os'
import * as path from 'path'
import { exec, repoRoot, timed } from './util'

const tmpRoots = new Set<string>()
const mountPoints = new Set<string>()
const stateDirs = new Set<string>()

/**
 * The prefix of every temporary root this test process makes (and so of every mount it makes).
 * Under os.tmpdir(): the runner (test/run.ts) gives each of its parallel workers its own TMPDIR,
 * so this process's checks see its own mounts, not a neighbour's.
 */
const SUITE_PREFIX = path.join(os.tmpdir(), 'replicafs-e2e-')

/**
 * Mounts under the suite's prefix that existed before this test process loaded this module: left
 * by an earlier run that was killed (SIGKILL leaves no exit handler to unmount a tmpfs or a loop
 * device). They are not this run's doing, so the clean-slate check does not count them; it names
 * them once instead. `.ci/run` unmounts such leftovers before the suite starts.
 */
const preexisting = new Set(parseMounts(fs.readFileSync('/proc/mounts', 'utf8'))
  .filter((m) => m.target.startsWith(SUITE_PREFIX)).map((m) => m.target))
let preexistingReported = false

export function registerTmpRoot (dir: string): void { tmpRoots.add(dir) }
export function registerMount (dir: string): void { mountPoints.add(dir) }
export function registerState (dir: string): void { stateDirs.add(dir) }

/** Decodes the octal escapes (\040 etc.) /proc/mounts uses in paths. */
function unescapeMountPath (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

export interface MountEntry { source: string, target: string, fstype: string }

export function parseMounts (text: string): MountEntry[] {
  const res: MountEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 3) continue
    res.push({ source: unescapeMountPath(f[0]), target: unescapeMountPath(f[1]), fstype: f[2] })
  }
  return res
}

export async function mounts (): Promise<MountEntry[]> {
  return parseMounts(await fsp.readFile('/proc/mounts', 'utf8'))
}

export async function isMounted (dir: string): Promise<boolean> {
  const abs = path.resolve(dir)
  return (await mounts()).some((m) => m.target === abs)
}

export async function fuseMountAt (dir: string): Promise<MountEntry | undefined> {
  const abs = path.resolve(dir)
  return (await mounts()).find((m) => m.target === abs && m.fstype.startsWith('fuse'))
}

/** Pids of processes (other than us) whose argv contains `dir` as a whole argument. */
export function pidsWithArg (dir: string): number[] {
  const res: number[] = []
  let entries: string[]
  try {
    entries = fs.readdirSync('/proc')
  } catch {
    return res
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue
    const pid = Number(e)
    if (pid === process.pid) continue
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')
      if (argv.includes(dir) || argv.some((a) => a.startsWith(dir + '/') && a.endsWith('daemon.log'))) {
        const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8')
        // skip zombies: they hold nothing
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
        if (state !== 'Z') res.push(pid)
      }
    } catch {
      // exited meanwhile
    }
  }
  return res
}

/** True once the pid no longer exists at all (not even as a zombie awaiting its reaper). */
export function processGone (pid: number): boolean {
  return !fs.existsSync(`/proc/${pid}`)
}

export function processAlive (pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z'
  } catch {
    return false
  }
}

/**
 * Stops everything registered. Returns a list of the things it had to force (empty when every
 * test cleaned up after itself). Never throws.
 */
export async function cleanupAll (): Promise<string[]> {
  const forced: string[] = []
  for (const state of [...stateDirs]) {
    if (pidsWithArg(state).length > 0) {
      const r = await exec(process.execPath, [path.join(repoRoot(), 'bin', 'replicafs'), 'stop', '--state', state], { cwd: repoRoot(), timeoutMs: 30_000 }).catch(() => undefined)
      if (r === undefined || r.code !== 0) forced.push(`replicafs stop --state ${state} failed`)
    }
    const left = pidsWithArg(state)
    for (const pid of left) {
      forced.push(`kill -9 ${pid} (daemon for ${state})`)
      try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
    stateDirs.delete(state)
  }
  for (const mnt of [...mountPoints]) {
    try {
      if (await isMounted(mnt)) {
        forced.push(`umount -l ${mnt}`)
        await exec('umount', ['-l', mnt], { timeoutMs: 10_000 })
      }
    } catch { /* reported below if still mounted */ }
    mountPoints.delete(mnt)
  }
  for (const root of [...tmpRoots]) {
    const stillMounted = (await mounts()).filter((m) => m.target === root || m.target.startsWith(root + '/'))
    if (stillMounted.length > 0) {
      forced.push(`cannot remove ${root}: ${stillMounted.map((m) => m.target).join(', ')} still mounted`)
      continue
    }
    try {
      await fsp.rm(root, { recursive: true, force: true })
    } catch (err) {
      forced.push(`rm -rf ${root}: ${(err as Error).message}`)
    }
    tmpRoots.delete(root)
  }
  return forced
}

/**
 * A test that starts and stops its own daemons and mounts: `timed`, then cleanup of everything
 * registered. A body that passed but left something cleanup had to force fails (it broke the rule
 * that every test stops what it started); a body that failed keeps its own error, with what had to
 * be forced appended. For files whose tests share a daemon across tests, use timed() and the
 * file's last test (assertCleanSlate).
 */
export function isolated (ms: number, fn: () => Promise<void>): () => Promise<void> {
  const body = timed(ms, fn)
  return async () => {
    let failure: unknown = null
    try { await body() } catch (err) { failure = err }
    const forced = await cleanupAll()
    if (failure !== null) {
      if (forced.length > 0 && failure instanceof Error) failure.message += `\n(cleanup then had to force: ${forced.join('; ')})`
      throw failure
    }
    if (forced.length > 0) throw new Error(`the test passed but left things running; cleanup had to force: ${forced.join('; ')}`)
  }
}

/** Throws if any mount of ours under a registered or given root is still there. */
export async function assertNoMountsUnder (prefix: string): Promise<void> {
  const left = (await mounts()).filter((m) => m.target.startsWith(prefix))
  if (left.length > 0) throw new Error(`mounts left behind: ${left.map((m) => `${m.target} (${m.fstype})`).join(', ')}`)
}

function emergencyCleanup (): void {
  for (const state of stateDirs) {
    for (const pid of pidsWithArg(state)) {
      try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
  }
  let text = ''
  try { text = fs.readFileSync('/proc/mounts', 'utf8') } catch { /* nothing to do */ }
  const live = parseMounts(text)
  for (const mnt of mountPoints) {
    if (!live.some((m) => m.target === path.resolve(mnt))) continue
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      require('child_process').execFileSync('umount', ['-l', mnt], { timeout: 10_000, stdio: 'ignore' })
    } catch { /* best effort */ }
  }
  for (const root of tmpRoots) {
    const nowMounted = (() => {
      try { return parseMounts(fs.readFileSync('/proc/mounts', 'utf8')) } catch { return [] }
    })()
    if (nowMounted.some((m) => m.target.startsWith(root))) continue
    try { fs.rmSync(root, { recursive: true, force: true }) } catch { /* best effort */ }
  }
}

let installed = false
export function installExitHandlers (): void {
  if (installed) return
  installed = true
  process.on('exit', emergencyCleanup)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      emergencyCleanup()
      process.exit(sig === 'SIGINT' ? 130 : 143)
    })
  }
}

/**
 * The last test of each file: cleans up and asserts that nothing had to be forced and that no
 * FUSE mount of this suite (/tmp/replicafs-e2e-*) is left.
 */
export async function assertCleanSlate (): Promise<void> {
  const forced = await cleanupAll()
  if (forced.length > 0) throw new Error(`cleanup had to force: ${forced.join('; ')}`)
  const all = (await mounts()).filter((m) => m.target.startsWith(SUITE_PREFIX))
  const stale = all.filter((m) => preexisting.has(m.target))
  if (stale.length > 0 && !preexistingReported) {
    preexistingReported = true
    console.error(`note: mounts left by an earlier, killed test run (not counted here; umount -l them): ${stale.map((m) => m.target).join(', ')}`)
  }
  const left = all.filter((m) => !preexisting.has(m.target))
  if (left.length > 0) throw new Error(`mounts left behind: ${left.map((m) => m.target).join(', ')}`)
}
