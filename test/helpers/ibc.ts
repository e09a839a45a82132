/**
 * Helpers for the IBC tests (test/ibc.test.ts, test/ibc-run.test.ts):
 *
 *  - the `replicafs ibc ...` / `ibc-send` CLI, with parsed results and a check that a failure is
 *    one line on stderr led by its VVR error name (`replicafs: EIBC_...: ...`);
 *  - IBC status of either daemon (`status --json`'s `frozen` and `ibc` fields);
 *  - a writer child process on a Primary mount that a test (or a quiesce script) can pause and
 *    resume through files, so "the Primary's tree at the send" is well defined while updates flow
 *    before and after it.
 *
 * Script use (compiled to dist/test/helpers/ibc.js):
 *   node ibc.js writer DIR CTL PAUSE_MS
 *       Loops over steps j = 0, 1, ... in DIR (a directory on a Primary mount); each step is a few
 *       records: write f<j%8> (create/truncate + write), append a line to log, every 5th mkdir
 *       d<j>, every 7th rename f<j%8> over r<j%13>, every 11th unlink an r-file if present.
 *       Before each step: if CTL/stop exists, prints "done" and exits 0; if CTL/pause exists,
 *       writes CTL/paused (holding the number of steps done) and waits until CTL/pause is gone,
 *       then removes CTL/paused. Prints "wrote J" after every step, "error ..." and exits 1 on a
 *       failure. PAUSE_MS pauses after each step (a throttle, not a synchronisation).
 *   node ibc.js onfreeze-probe OUT AHEAD
 *       For an `ibc run` onfreeze script on a Secondary (reads REPLICAFS_STATE, REPLICAFS_MOUNT,
 *       REPLICAFS_IBC_SEQ): waits (up to 30 s) until the Secondary has logged AHEAD updates past
 *       the message, then writes OUT/onfreeze.json (a snapshot of the mount, as replica-tree.js
 *       snapshot) and OUT/onfreeze-status.json ({before, after}: `status --json` before and after
 *       the snapshot). Exits 9 if the updates do not arrive, 8 if a command fails.
 */
import * as fs from 'fs'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import * as assert from 'uvu/assert'
import { cli, daemonLog } from './primary'
import { request } from '../../src/control'
import { helperScript, repoRoot, waitFor, describeFailure, type ExecResult } from './util'
import type { PrimaryStatus, SecondaryStatus } from './secondary'

// ---------------------------------------------------------------------------------------------
// CLI

/** `replicafs ibc OP --state STATE ...args` (never throws for a non-zero exit). */
export function ibc (state: string, op: string, args: string[] = [], timeoutMs = 60_000): Promise<ExecResult> {
  return cli(['ibc', op, '--state', state, ...args], { timeoutMs })
}

/** Like ibc(), but throws (with the output and the daemon log) unless it exits 0. */
export async function ibcOk (state: string, op: string, args: string[] = [], timeoutMs = 60_000): Promise<ExecResult> {
  const r = await ibc(state, op, args, timeoutMs)
  if (r.code !== 0) throw new Error(`${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(state)}`)
  return r
}

export interface Received { app: string, id: string, seq: number, message: string, messageBase64: string, frozen: boolean }

/** `ibc receive --json` (waits up to timeoutS), parsed; throws unless it exits 0. */
export async function receive (state: string, app: string, timeoutS = 60, extra: string[] = []): Promise<Received> {
  const r = await ibcOk(state, 'receive', [app, '--json', '--timeout', String(timeoutS), ...extra], timeoutS * 1000 + 30_000)
  try {
    return JSON.parse(r.stdout) as Received
  } catch {
    throw new Error(`ibc receive --json printed something that is not JSON: ${r.stdout}`)
  }
}

export interface Sent { id: string, seq: number, app: string, registeredForThisSend?: boolean }

/** `ibc send --json` (Primary), parsed; throws unless it exits 0. */
export async function send (state: string, app: string, message: string, extra: string[] = []): Promise<Sent> {
  const r = await ibcOk(state, 'send', [app, message, '--json', ...extra], 120_000)
  return JSON.parse(r.stdout) as Sent
}

/** `replicafs ibc-send --state STATE APP [MESSAGE] --json`, parsed; throws unless it exits 0. */
export async function ibcSend (state: string, app: string, message: string | undefined, extra: string[] = []): Promise<Sent> {
  const r = await cli(['ibc-send', '--state', state, app, ...(message === undefined ? [] : [message]), '--json', ...extra], { timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`${describeFailure(r)}\n--- daemon.log ---\n${await daemonLog(state)}`)
  return JSON.parse(r.stdout) as Sent
}

/** Registers APP and returns the printed key. */
export async function register (state: string, app: string, extra: string[] = []): Promise<string> {
  const r = await ibcOk(state, 'register', [app, ...extra])
  const key = r.stdout.trim()
  assert.match(key, /^\S+$/, `ibc register prints a key: ${JSON.stringify(r.stdout)}`)
  return key
}

/**
 * A failed IBC command: non-zero exit, exactly one line on stderr, beginning
 * `replicafs: NAME: `, no stack trace, nothing on stdout.
 */
export function assertIbcError (r: ExecResult, name: string, mention?: RegExp): void {
  const ctx = `${r.cmdline}\nexit ${String(r.code)}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`
  assert.ok(r.code !== 0 && r.code !== null, `exits non-zero: ${ctx}`)
  assert.not.ok(r.timedOut, `did not time out: ${ctx}`)
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '')
  assert.is(lines.length, 1, `exactly one line on stderr: ${ctx}`)
  assert.ok(lines[0].startsWith(`replicafs: ${name}: `), `stderr starts with "replicafs: ${name}: ": ${ctx}`)
  assert.not.match(r.stderr, /^\s+at /m, `no stack trace: ${ctx}`)
  assert.is(r.stdout, '', `nothing on stdout: ${ctx}`)
  if (mention) assert.match(lines[0], mention, `the message says ${String(mention)}: ${ctx}`)
}

// ---------------------------------------------------------------------------------------------
// status

export interface Registration { name: string, deliverTimeoutS: number, registeredAt: string }

export interface SecondaryIbc {
  frozen: boolean
  registrations: Registration[]
  held: { app: string, id: string, seq: number, phase: 'unregistered' | 'delivering' | 'frozen', noFreeze: boolean, freezeTimeoutS: number, deadline: string | null } | null
  queued: Array<{ app: string, id: string, seq: number }>
}

export interface SecondaryIbcStatus extends SecondaryStatus {
  frozen: boolean
  ibc: SecondaryIbc
}

export interface PrimaryIbcStatus extends PrimaryStatus {
  ibc: { registrations: Registration[] } | null
}

export async function secStatus (state: string): Promise<SecondaryIbcStatus> {
  const r = await cli(['status', '--state', state, '--json'], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  return JSON.parse(r.stdout) as SecondaryIbcStatus
}

export async function priStatus (state: string): Promise<PrimaryIbcStatus> {
  const r = await cli(['status', '--state', state, '--json'], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
  return JSON.parse(r.stdout) as PrimaryIbcStatus
}

/**
 * The same status straight from the control socket (no CLI process to start): for polls whose
 * timing matters (a 2 s hold observed while it lasts). Assertions on the contract use the CLI.
 */
export async function secStatusFast (state: string): Promise<SecondaryIbcStatus> {
  return await request(state, { cmd: 'status' }, 10_000) as SecondaryIbcStatus
}

export async function priStatusFast (state: string): Promise<PrimaryIbcStatus> {
  return await request(state, { cmd: 'status' }, 10_000) as PrimaryIbcStatus
}

/** The last sequence number the Primary has logged. */
export function lastSeq (s: { srl: { newestSeq: number | null, appliedSeq: number } }): number {
  return s.srl.newestSeq ?? s.srl.appliedSeq
}

// ---------------------------------------------------------------------------------------------
// the writer, from the test's side

export interface Writer {
  /** Steps completed so far (from its "wrote J" lines). */
  steps(): number
  lines: string[]
  done(): boolean
  exited: Promise<number | null>
  /** Asks it to pause before its next step and waits until it has; returns the steps done. */
  pause(timeoutMs?: number): Promise<number>
  /** Lets it go on, and waits until it has. */
  resume(timeoutMs?: number): Promise<void>
  /** Waits until it has done `n` more steps than now. */
  advance(n: number, timeoutMs?: number): Promise<void>
  /** Asks it to stop and waits for its exit code. */
  stop(timeoutMs?: number): Promise<number | null>
  kill(): void
  /** The control directory (CTL/pause, CTL/paused, CTL/stop). */
  ctl: string
}

const liveWriters = new Set<Writer>()

/** Kills every writer still running (each file's after hook and finally blocks). */
export function killWriters (): void {
  for (const w of liveWriters) w.kill()
  liveWriters.clear()
}

/** Starts a writer in `dir` (created if missing) with its control files in `ctl` (created). */
export function startWriter (dir: string, ctl: string, pauseMs = 3): Writer {
  fs.mkdirSync(dir, { recursive: true })
  fs.mkdirSync(ctl, { recursive: true })
  const child = spawn(process.execPath, [helperScript('ibc'), 'writer', dir, ctl, String(pauseMs)], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let partial = ''
  let steps = 0
  let exitedFlag = false
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString()
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const l of parts) {
      const m = /^wrote (\d+)$/.exec(l)
      if (m !== null) steps = Number(m[1]) + 1
      else lines.push(l)
    }
  })
  child.stderr.on('data', (b: Buffer) => lines.push(`stderr: ${b.toString().trim()}`))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    exitedFlag = true
    liveWriters.delete(w)
    resolve(code)
  }))
  const alive = (): void => { if (exitedFlag) throw new Error(`the writer exited: ${lines.slice(-3).join(' | ')}`) }
  const w: Writer = {
    ctl,
    lines,
    steps: () => steps,
    done: () => exitedFlag,
    exited,
    async pause (timeoutMs = 30_000) {
      fs.writeFileSync(path.join(ctl, 'pause'), '')
      await waitFor(() => { alive(); return fs.existsSync(path.join(ctl, 'paused')) }, { timeoutMs, what: 'the writer to pause', intervalMs: 10 })
      return Number(fs.readFileSync(path.join(ctl, 'paused'), 'utf8'))
    },
    async resume (timeoutMs = 30_000) {
      fs.rmSync(path.join(ctl, 'pause'), { force: true })
      await waitFor(() => { alive(); return !fs.existsSync(path.join(ctl, 'paused')) }, { timeoutMs, what: 'the writer to resume', intervalMs: 10 })
    },
    async advance (n: number, timeoutMs = 30_000) {
      const target = steps + n
      await waitFor(() => { alive(); return steps >= target }, { timeoutMs, what: `the writer to reach step ${target} (at ${steps})`, intervalMs: 20 })
    },
    async stop (timeoutMs = 30_000) {
      fs.writeFileSync(path.join(ctl, 'stop'), '')
      fs.rmSync(path.join(ctl, 'pause'), { force: true })
      let timer: NodeJS.Timeout | undefined
      const t = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`the writer did not stop within ${timeoutMs} ms: ${lines.slice(-3).join(' | ')}`)), timeoutMs)
      })
      try {
        return await Promise.race([exited, t])
      } finally {
        clearTimeout(timer)
      }
    },
    kill () { if (!exitedFlag) child.kill('SIGKILL') }
  }
  liveWriters.add(w)
  return w
}

// ---------------------------------------------------------------------------------------------
// the writer, as a script

function sleepSync (ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

function writerMain (dir: string, ctl: string, pauseMs: number): void {
  const exists = (f: string): boolean => fs.existsSync(path.join(ctl, f))
  try {
    for (let j = 0; ; j++) {
      if (exists('stop')) { process.stdout.write('done\n'); return }
      if (exists('pause')) {
        fs.writeFileSync(path.join(ctl, 'paused.tmp'), String(j))
        fs.renameSync(path.join(ctl, 'paused.tmp'), path.join(ctl, 'paused'))
        // waiting for the test (or a script) to take the pause file away: a condition, polled
        while (exists('pause') && !exists('stop')) sleepSync(5)
        fs.rmSync(path.join(ctl, 'paused'), { force: true })
      }
      const f = path.join(dir, `f${j % 8}`)
      fs.writeFileSync(f, `step ${j}\n`.repeat(1 + (j % 50)))
      fs.appendFileSync(path.join(dir, 'log'), `${j}\n`)
      if (j % 5 === 0) fs.mkdirSync(path.join(dir, `d${j}`))
      if (j % 7 === 0) fs.renameSync(f, path.join(dir, `r${j % 13}`))
      if (j % 11 === 0) {
        const victim = path.join(dir, `r${(j * 3) % 13}`)
        if (fs.existsSync(victim)) fs.unlinkSync(victim)
      }
      process.stdout.write(`wrote ${j}\n`)
      if (pauseMs > 0) sleepSync(pauseMs)
    }
  } catch (err) {
    process.stdout.write(`error ${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}\n`)
    process.exitCode = 1
  }
}

function onfreezeProbe (out: string, ahead: number): void {
  const env = process.env
  const bin = path.join(repoRoot(), 'bin', 'replicafs')
  const status = (): { receivedSeq: number } => {
    const r = spawnSync(process.execPath, [bin, 'status', '--state', env.REPLICAFS_STATE ?? '', '--json'], { encoding: 'utf8', timeout: 20_000 })
    if (r.status !== 0) { process.stderr.write(`status failed: ${r.stderr}\n`); process.exit(8) }
    return JSON.parse(r.stdout) as { receivedSeq: number }
  }
  const seq = Number(env.REPLICAFS_IBC_SEQ)
  const deadline = Date.now() + 30_000
  let before = status()
  while (before.receivedSeq < seq + ahead) {
    if (Date.now() > deadline) { process.stderr.write(`no ${ahead} updates arrived past ${seq} while frozen\n`); process.exit(9) }
    sleepSync(50)
    before = status()
  }
  const snap = spawnSync(process.execPath, [helperScript('replica-tree'), 'snapshot', env.REPLICAFS_MOUNT ?? ''], { encoding: 'utf8', maxBuffer: 256 << 20, timeout: 60_000 })
  if (snap.status !== 0) { process.stderr.write(`snapshot failed: ${snap.stderr}\n`); process.exit(8) }
  fs.writeFileSync(path.join(out, 'onfreeze.json'), snap.stdout)
  fs.writeFileSync(path.join(out, 'onfreeze-status.json'), JSON.stringify({ before, after: status() }))
  process.stdout.write(`onfreeze saw ${env.REPLICAFS_IBC_ID ?? '?'} at ${seq}\n`)
}

if (require.main === module) {
  const [cmd, ...args] = process.argv.slice(2)
  if (cmd === 'writer') writerMain(args[0], args[1], Number(args[2] ?? '3'))
  else if (cmd === 'onfreeze-probe') onfreezeProbe(args[0], Number(args[1] ?? '20'))
  else {
    process.stderr.write('usage: node ibc.js writer DIR CTL PAUSE_MS | onfreeze-probe OUT AHEAD\n')
    process.exitCode = 2
  }
}
