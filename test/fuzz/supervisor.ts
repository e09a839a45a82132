/**
 * A fuzzing run happens in a child process, watched by its parent (libFuzzer's fork mode, with one
 * child): a native fault (SIGSEGV, SIGABRT), a hang, or runaway memory stops the child's own
 * thread, so it could not save the input that did it. Before each input the child copies it into
 * a file it has mapped shared (src/native sys.mapShared: a store into the page cache, which
 * outlives the process) and bumps a counter there. The parent polls: the counter stuck for
 * `timeoutMs` while an input runs (libFuzzer's -timeout), or the child's resident memory over
 * `rssLimitBytes` (-rss_limit_mb), and it kills the child; the child killed by a signal, or
 * exiting otherwise than 0 or 1, and it saves the input then running as `timeout-`, `oom-` or
 * `crash-<sha1>` in `dir`, and prints it.
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sys } from '../../src/native'

/** Where a supervised child makes its temporary files (the parent removes the directory). */
export const FUZZ_TMP_ENV = 'REPLICAFS_FUZZ_TMP'

/** Inputs longer than this are recorded cut to it (none are generated longer: engine.ts INPUT_BYTES_MAX). */
const RECORDED_BYTES_MAX = 1024 * 1024
/** counter u32, busy u32, length u32, reserved u32, then the input. */
const HEADER_BYTES = 16
const FILE_BYTES = HEADER_BYTES + RECORDED_BYTES_MAX

/** The child's side: records each input before it runs. */
export class Recorder {
  private readonly fd: number
  private readonly map: Buffer
  private counter = 0

  constructor (file: string) {
    this.fd = fs.openSync(file, 'r+')
    this.map = sys.mapShared(this.fd, FILE_BYTES)
  }

  enter (input: Buffer): void {
    const n = Math.min(input.length, RECORDED_BYTES_MAX)
    input.copy(this.map, HEADER_BYTES, 0, n)
    this.map.writeUInt32LE(n, 8)
    this.map.writeUInt32LE(1, 4)
    this.map.writeUInt32LE(++this.counter >>> 0, 0)
  }

  leave (): void {
    this.map.writeUInt32LE(0, 4)
  }

  close (): void {
    sys.unmapShared(this.map)
    fs.closeSync(this.fd)
  }
}

export interface SuperviseOptions {
  /** The child's command line (after node): main.js and its arguments; `--child FILE` is added. */
  args: string[]
  target: string
  /** Where finding files go. */
  dir: string
  timeoutMs: number
  rssLimitBytes: number
}

function rssOf (pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? 0 : Number(m[1]) * 1024
  } catch { return 0 }
}

/** Runs the child; resolves with its exit code (0: no finding, 1: a finding, saved by whoever found it). */
export async function supervise (opts: SuperviseOptions): Promise<number> {
  // The child's temporary files (the recorded input, the record target's ring) go in a directory
  // removed at the end, however the child ended.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `replicafs-fuzz-${opts.target}-`))
  const file = path.join(tmp, 'input')
  fs.writeFileSync(file, '')
  fs.truncateSync(file, FILE_BYTES)
  const fd = fs.openSync(file, 'r')
  const head = Buffer.alloc(HEADER_BYTES)
  const child = spawn(process.execPath, [...opts.args, '--child', file], { stdio: 'inherit', env: { ...process.env, [FUZZ_TMP_ENV]: tmp } })
  const forward = (sig: NodeJS.Signals): void => { child.kill(sig) }
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  let seen = -1
  let since = Date.now()
  let reason: [string, string] | null = null
  const timer = setInterval(() => {
    fs.readSync(fd, head, 0, HEADER_BYTES, 0)
    const counter = head.readUInt32LE(0)
    const busy = head.readUInt32LE(4) === 1
    const now = Date.now()
    if (counter !== seen) { seen = counter; since = now } else if (busy && now - since > opts.timeoutMs) reason = ['timeout', `one input ran for more than ${opts.timeoutMs} ms`]
    const rss = child.pid === undefined ? 0 : rssOf(child.pid)
    if (busy && rss > opts.rssLimitBytes) reason = ['oom', `resident memory of ${Math.round(rss / 1048576)} MiB is over the limit of ${Math.round(opts.rssLimitBytes / 1048576)} MiB`]
    if (reason !== null) child.kill('SIGKILL')
  }, 100)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])))
  clearInterval(timer)
  process.off('SIGINT', forward)
  process.off('SIGTERM', forward)
  try {
    if (reason === null && (code === 0 || code === 1)) return code
    if (signal === 'SIGINT' || signal === 'SIGTERM') return 1
    reason ??= ['crash', signal !== null ? `the fuzzing process was killed by ${signal}` : `the fuzzing process exited with ${String(code)}`]
    fs.readSync(fd, head, 0, HEADER_BYTES, 0)
    const n = Math.min(head.readUInt32LE(8), RECORDED_BYTES_MAX)
    const input = Buffer.alloc(n)
    fs.readSync(fd, input, 0, n, HEADER_BYTES)
    const name = `${reason[0]}-${crypto.createHash('sha1').update(input).digest('hex')}`
    fs.mkdirSync(opts.dir, { recursive: true })
    const out = path.join(opts.dir, name)
    fs.writeFileSync(out, input)
    process.stdout.write(`fuzz ${opts.target}: FINDING ${reason[0]}: ${reason[1]}\n  input (${n} bytes): ${out}\n  hex: ${input.toString('hex').slice(0, 2048)}\n` +
      `  replay: npm run fuzz -- ${opts.target} --replay ${path.relative(process.cwd(), out)}${reason[0] === 'crash' ? ' (it crashes the replaying process too)' : ''}\n`)
    return 1
  } finally {
    fs.closeSync(fd)
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
