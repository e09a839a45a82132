/**
 * Small async utilities for the end-to-end tests: condition waits with deadlines, per-test
 * timeouts, and child-process execution with timeouts. Nothing here sleeps in place of a
 * condition: every wait names what it waits for and fails with that name at its deadline.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'child_process'
import { AsyncLocalStorage } from 'async_hooks'
import * as fs from 'fs'
import * as path from 'path'
import * as assert from 'uvu/assert'

/**
 * One test body, as timed() runs it. When its deadline passes the scope is ended: the commands it
 * is running are killed, and whatever the body does after that (it is not cancelled by the
 * rejection) fails at its next exec, waitFor or tmpdirs instead of starting daemons after the
 * cleanup. Continuations of the body keep their own scope (AsyncLocalStorage), so a late body
 * never borrows the next test's.
 */
interface TestScope { deadlineMs: number, ended: boolean, children: Set<ChildProcess> }
const scopes = new AsyncLocalStorage<TestScope>()

/** Throws if the test body calling it has outlived its deadline. */
export function assertLive (what: string): void {
  const scope = scopes.getStore()
  if (scope?.ended === true) throw new Error(`${what}: refused, the test body went on after its ${scope.deadlineMs} ms deadline`)
}

export interface WaitForOptions {
  /** Deadline for the whole wait. */
  timeoutMs: number
  /** What is being waited for; it is named in the timeout error. */
  what: string
  /** Pause between polls (default 50 ms). */
  intervalMs?: number
}

/**
 * Polls `fn` until it returns a truthy value (which is returned) or the deadline passes. A throw
 * from `fn` counts as "not yet"; the last one is quoted in the timeout error.
 */
export async function waitFor<T> (fn: () => T | Promise<T>, opts: WaitForOptions): Promise<NonNullable<T>> {
  const deadline = Date.now() + opts.timeoutMs
  const interval = opts.intervalMs ?? 50
  let last: unknown
  let lastValue: unknown
  for (;;) {
    assertLive(`waiting for ${opts.what}`)
    try {
      const v = await fn()
      if (v) return v as NonNullable<T>
      lastValue = v
    } catch (err) {
      last = err
    }
    if (Date.now() >= deadline) {
      const detail = last !== undefined ? `; last error: ${errText(last)}` : `; last value: ${String(lastValue)}`
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${detail}`)
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

export function errText (err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}

/**
 * Wraps a test body so that it fails (instead of hanging the runner) after `ms`, and ends its
 * scope then (see TestScope): the commands it runs are killed and it cannot start new ones.
 */
export function timed (ms: number, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const scope: TestScope = { deadlineMs: ms, ended: false, children: new Set() }
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        scope.ended = true
        for (const child of scope.children) child.kill('SIGKILL')
        reject(new Error(`test timed out after ${ms} ms`))
      }, ms)
    })
    try {
      await Promise.race([scopes.run(scope, fn), timeout])
    } finally {
      clearTimeout(timer)
    }
  }
}

export interface ExecResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** True if the command was killed for exceeding its timeout. */
  timedOut: boolean
  /** The command line, for messages. */
  cmdline: string
}

export interface ExecOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  timeoutMs?: number
  input?: string | Buffer
  /**
   * Stop waiting for the stdio pipes this long after the process exited (a daemonising command
   * whose detached child kept our pipes open must not hang the test).
   */
  stdioGraceMs?: number
}

/**
 * Runs a command without a shell; never rejects for a non-zero exit (see execOk). On timeout the
 * command is killed with SIGKILL and `timedOut` is set.
 */
export function exec (cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000
  const cmdline = [cmd, ...args].map((a) => (/[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(' ')
  const scope = scopes.getStore()
  return new Promise((resolve, reject) => {
    assertLive(`cannot run ${cmdline}`)
    const spawnOpts: SpawnOptions = { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] }
    const child = spawn(cmd, args, spawnOpts)
    scope?.children.add(child)
    child.on('close', () => scope?.children.delete(child))
    const out: Buffer[] = []
    const err: Buffer[] = []
    let timedOut = false
    let exited: { code: number | null, signal: NodeJS.Signals | null } | undefined
    let settled = false
    let graceTimer: NodeJS.Timeout | undefined
    const finish = (): void => {
      if (settled || exited === undefined) return
      settled = true
      clearTimeout(timer)
      clearTimeout(graceTimer)
      resolve({
        code: exited.code,
        signal: exited.signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        cmdline
      })
    }
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.stdout?.on('data', (b: Buffer) => out.push(b))
    child.stderr?.on('data', (b: Buffer) => err.push(b))
    child.on('error', (e) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(new Error(`cannot run ${cmdline}: ${e.message}`))
    })
    child.on('exit', (code, signal) => {
      exited = { code, signal }
      graceTimer = setTimeout(() => {
        child.stdout?.destroy()
        child.stderr?.destroy()
        finish()
      }, opts.stdioGraceMs ?? 2000)
    })
    child.on('close', () => finish())
    if (opts.input !== undefined) child.stdin?.end(opts.input)
    else child.stdin?.end()
  })
}

/** Like exec, but throws (with the command's output) unless it exits 0. */
export async function execOk (cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await exec(cmd, args, opts)
  if (r.code !== 0) throw new Error(describeFailure(r))
  return r
}

export function describeFailure (r: ExecResult): string {
  const how = r.timedOut ? 'timed out' : r.signal !== null ? `was killed by ${r.signal}` : `exited ${String(r.code)}`
  return `${r.cmdline} ${how}\n--- stdout ---\n${tail(r.stdout)}\n--- stderr ---\n${tail(r.stderr)}`
}

function tail (s: string, n = 4000): string {
  return s.length > n ? '...' + s.slice(-n) : s
}

let rootCache: string | undefined

/** The repository root: the directory above us holding the package.json named "replicafs". */
export function repoRoot (): string {
  if (rootCache !== undefined) return rootCache
  let dir = __dirname
  for (;;) {
    try {
      const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown }
      if (pj.name === 'replicafs') {
        rootCache = dir
        return dir
      }
    } catch {
      // keep walking up
    }
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`cannot find the replicafs package.json above ${__dirname}`)
    dir = up
  }
}

/** Path of a compiled helper script (test/helpers/NAME.ts -> dist/test/helpers/NAME.js). */
export function helperScript (name: string): string {
  return path.join(__dirname, `${name}.js`)
}

/** Resolves with `p`, or rejects naming `what` if `p` has not settled within `ms`. */
export async function withDeadline<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * A failed command as a user sees one: non-zero exit, exactly one line on stderr, no stack trace,
 * not an unexpected (unhandled) error, and the line contains each string and matches each pattern
 * of `mentions`. Returns the line.
 */
export function assertOneLineError (r: ExecResult, mentions: Array<RegExp | string> = []): string {
  const ctx = `${r.cmdline}\nexit ${String(r.code)}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`
  assert.not.ok(r.timedOut, `timed out: ${ctx}`)
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '')
  assert.is(lines.length, 1, `exactly one line on stderr: ${ctx}`)
  assert.not.match(r.stderr, /^\s+at /m, `no stack trace: ${ctx}`)
  assert.not.match(r.stderr, /unexpected error/i, `not an unexpected (unhandled) error: ${ctx}`)
  for (const m of mentions) assert.ok(typeof m === 'string' ? lines[0].includes(m) : m.test(lines[0]), `the line says ${String(m)}: ${ctx}`)
  return lines[0]
}
