/**
 * Child-process helpers for the benchmark harness: run a command with a
 * deadline, capture its output, time it from spawn to exit.
 */
import { spawn } from 'child_process'

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Wall time from spawn to exit, in seconds. */
  seconds: number
  timedOut: boolean
}

export interface RunOptions {
  cwd?: string
  /** Kill the child (SIGKILL) after this many milliseconds. */
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  /** Keep at most this many trailing characters of stdout and of stderr (default 64 KiB). */
  keepChars?: number
}

const OUTPUT_KEEP_CHARS = 64 * 1024

function keepTail(s: string, more: string, keep: number): string {
  const t = s + more
  return t.length > keep ? t.slice(t.length - keep) : t
}

/** Run argv[0] with argv[1..]; never rejects for a non-zero exit (see `check`). */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint()
    const child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    const keep = opts.keepChars ?? OUTPUT_KEEP_CHARS
    child.stdout.on('data', (d: string) => { stdout = keepTail(stdout, d, keep) })
    child.stderr.on('data', (d: string) => { stderr = keepTail(stderr, d, keep) })
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, opts.timeoutMs)
    child.on('error', (err) => {
      if (timer) clearTimeout(timer)
      reject(new Error(`cannot run ${argv[0]}: ${err.message}`))
    })
    child.on('close', (code, signal) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9
      if (timer) clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, seconds, timedOut })
    })
  })
}

export function describe(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')
}

function lastLines(s: string, n: number): string {
  const lines = s.trim().split('\n')
  return lines.slice(Math.max(0, lines.length - n)).join('\n')
}

/** Throw a one-paragraph error unless the child exited 0. */
export function check(argv: string[], r: RunResult): RunResult {
  if (r.code === 0 && !r.timedOut) return r
  const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exited ${r.code}`
  const out = lastLines(r.stderr || r.stdout, 12)
  throw new Error(`\`${describe(argv)}\` ${why}${out ? `:\n${out.replace(/^/gm, '    ')}` : ''}`)
}

/** run + check. */
export async function runOk(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return check(argv, await run(argv, opts))
}
