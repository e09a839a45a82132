/**
 * `replicafs ibc run TASK`: VVR's `vradmin ibc` flow, driven by the Primary's daemon.
 *
 *   Secondary  check that onfreeze is there       (before anything else happens)
 *   Secondary  prefreeze                         (optional script)
 *   both       register TASK as the IBC application name
 *   Primary    quiesce                           (optional script)
 *   Primary    send the IBC message (flushed, as ibc-send)
 *   Primary    unquiesce                         (optional script; run whenever quiesce succeeded)
 *   Secondary  wait until frozen at that message, then onfreeze (required script)
 *   Secondary  unfreeze
 *   Secondary  postfreeze                        (optional script)
 *   both       unregister
 *
 * Each host runs only scripts from its own task directory (`STATE/tasks/TASK/` unless --task-dir):
 * the wire carries the task's name and the step's name, never a path or a command. Scripts must be
 * regular executable files (not symlinks). A failing script stops the flow with its exit code and
 * output; whatever happened, the flow ends with the Secondary unfrozen and both names unregistered.
 */
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { constants as osConstants } from 'node:os'
import { IbcError } from '../errors'
import { checkName } from './registry'
import type { IbcPrimary } from './primary'
import type { IbcSecondary } from './secondary'
import { IBC_SCRIPT_TIMEOUT_MS, IBC_SCRIPT_OUTPUT_BYTES_MAX } from '../limits'

export const PRIMARY_SCRIPTS = ['quiesce', 'unquiesce'] as const
export const SECONDARY_STEPS = ['check', 'prefreeze', 'register', 'onfreeze', 'unfreeze', 'postfreeze', 'unregister', 'abort'] as const
export type SecondaryStep = (typeof SECONDARY_STEPS)[number]

export interface StepResult { host: string, step: string, code: number | null, output: string }

export interface TaskEnv { role: 'primary' | 'secondary', state: string, data: string, mount: string, taskDir: string }

/** Checks a task name (it names a directory and an IBC application). */
export function checkTask (task: string): void {
  checkName(task)
}

/**
 * Runs `<taskDir>/<task>/<step>` if present. Returns null if there is no such script (and it is not
 * required); throws EIBC_TASK_FAILED if it is required and missing, or is not a plain executable.
 */
export async function runScript (env: TaskEnv, task: string, step: string, required: boolean, extra: Record<string, string> = {}): Promise<{ code: number, output: string } | null> {
  checkTask(task)
  const dir = path.join(env.taskDir, task)
  const file = path.join(dir, step)
  let st: fs.Stats
  try {
    st = fs.lstatSync(file)
  } catch {
    if (required) throw new IbcError('EIBC_TASK_FAILED', `task ${task}: the ${env.role} has no ${step} script (${file}), which is required`)
    return null
  }
  if (!st.isFile()) throw new IbcError('EIBC_TASK_FAILED', `task ${task}: ${file} is not a regular file (symlinks are not run)`)
  if ((st.mode & 0o111) === 0) throw new IbcError('EIBC_TASK_FAILED', `task ${task}: ${file} is not executable`)
  return new Promise((resolve) => {
    // spawn, not execFile: a script's output is not bounded, so keep only its last bytes.
    const child = spawn(file, [], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        REPLICAFS_TASK: task,
        REPLICAFS_STEP: step,
        REPLICAFS_ROLE: env.role,
        REPLICAFS_STATE: env.state,
        REPLICAFS_DATA: env.data,
        REPLICAFS_MOUNT: env.mount,
        ...extra
      }
    })
    let out = Buffer.alloc(0)
    const keep = (chunk: Buffer): void => {
      out = Buffer.concat([out, chunk])
      if (out.length > IBC_SCRIPT_OUTPUT_BYTES_MAX) out = out.subarray(out.length - IBC_SCRIPT_OUTPUT_BYTES_MAX)
    }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    let killed = false
    const timer = setTimeout(() => { killed = true; child.kill('SIGKILL') }, IBC_SCRIPT_TIMEOUT_MS)
    child.on('error', (err) => { clearTimeout(timer); resolve({ code: 126, output: `${out.toString('utf8')}\n(${err.message})` }) })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const output = out.toString('utf8') + (killed ? `\n(killed after ${IBC_SCRIPT_TIMEOUT_MS / 1000} s)` : '')
      // A script killed by a signal has no exit code: report 128 + the signal, as a shell would.
      resolve({ code: code ?? 128 + (signal !== null ? (osConstants.signals[signal] ?? 9) : 9), output })
    })
  })
}

/** The Secondary's side: one step, as asked by the Primary over the RLINK. */
export async function secondaryStep (env: TaskEnv, ibc: IbcSecondary, task: string, step: string, timeoutS: number): Promise<{ code: number | null, output: string, ibcId?: string }> {
  checkTask(task)
  switch (step as SecondaryStep) {
    case 'check': {
      // Before anything happens: the required script is there and runnable.
      const file = path.join(env.taskDir, task, 'onfreeze')
      let st: fs.Stats
      try { st = fs.lstatSync(file) } catch { throw new IbcError('EIBC_TASK_FAILED', `task ${task}: the secondary has no onfreeze script (${file}), which is required`) }
      if (!st.isFile() || (st.mode & 0o111) === 0) throw new IbcError('EIBC_TASK_FAILED', `task ${task}: the secondary's onfreeze script ${file} is not executable (or not a regular file)`)
      return { code: null, output: '' }
    }
    case 'prefreeze':
    case 'postfreeze': {
      const r = await runScript(env, task, step, false)
      return r ?? { code: null, output: '' }
    }
    case 'register':
      await ibc.registry.register(task, undefined, { task: true })
      await ibc.registered(task)
      return { code: null, output: '' }
    case 'onfreeze': {
      // Required: check before waiting, so a missing script fails at once.
      const file = path.join(env.taskDir, task, 'onfreeze')
      if (!fs.existsSync(file)) throw new IbcError('EIBC_TASK_FAILED', `task ${task}: the secondary has no onfreeze script (${file}), which is required`)
      const m = await ibc.receive(task, undefined, timeoutS)
      const r = await runScript(env, task, 'onfreeze', true, { REPLICAFS_IBC_ID: m.id, REPLICAFS_IBC_SEQ: String(m.seq), REPLICAFS_IBC_MESSAGE: m.message.toString('utf8') })
      return { ...r!, ibcId: m.id }
    }
    case 'unfreeze':
      await ibc.unfreeze(task, undefined)
      return { code: null, output: '' }
    case 'unregister':
      await ibc.unregister(task, undefined)
      return { code: null, output: '' }
    case 'abort': {
      // Never leave the Secondary frozen by a failed flow, nor the name registered.
      if (ibc.registry.get(task) !== undefined) {
        try { await ibc.unfreeze(task, undefined) } catch {}
        try { await ibc.unregister(task, undefined) } catch {}
      }
      return { code: null, output: '' }
    }
    default:
      throw new IbcError('EIBC_INVALID_ARGUMENT', `unknown task step ${step}`)
  }
}

export interface SecondaryLink {
  address: string
  step (task: string, step: string, timeoutS: number): Promise<{ code: number | null, output: string, error: string | null, ibcId?: string }>
}

/** The Primary's side: runs the whole flow over every RLINK. */
export async function runTask (env: TaskEnv, ibc: IbcPrimary, links: SecondaryLink[], task: string, timeoutS: number, log: (l: string) => void): Promise<{ steps: StepResult[] }> {
  checkTask(task)
  if (links.length === 0) throw new IbcError('EIBC_TASK_FAILED', 'this Primary has no Secondary to run a task with')
  const steps: StepResult[] = []
  const fail = (s: StepResult, why: string): never => {
    // One line of error; the script's output goes along as detail (the CLI prints it after the
    // line). The CLI exits with the failing script's exit code (1 when the step was not a script).
    throw Object.assign(new IbcError('EIBC_TASK_FAILED', `task ${task}: ${why}`), { steps, detail: s.output, exitCode: s.code !== null && s.code > 0 ? s.code : 1 })
  }
  const remote = async (step: string): Promise<void> => {
    for (const l of links) await remoteOne(l, step)
  }
  const remoteOne = async (l: SecondaryLink, step: string): Promise<void> => {
    {
      let r: Awaited<ReturnType<SecondaryLink['step']>>
      try {
        r = await l.step(task, step, timeoutS)
      } catch (err) {
        // The link went down (or never was up): the flow fails; cleanup happens on both sides.
        const s: StepResult = { host: `secondary ${l.address}`, step, code: null, output: '' }
        steps.push(s)
        fail(s, `${step} on the Secondary ${l.address} could not complete: ${(err as Error).message}`)
        return
      }
      const s: StepResult = { host: `secondary ${l.address}`, step, code: r.code, output: r.output }
      steps.push(s)
      if (r.error !== null) fail(s, `${step} on the Secondary ${l.address} failed: ${r.error}`)
      if (r.code !== null && r.code !== 0) fail(s, `${step} on the Secondary ${l.address} exited with code ${r.code}`)
    }
  }
  const local = async (step: string): Promise<void> => {
    const r = await runScript(env, task, step, false)
    const s: StepResult = { host: 'primary', step, code: r?.code ?? null, output: r?.output ?? '' }
    steps.push(s)
    if (r !== null && r.code !== 0) fail(s, `${step} on the Primary exited with code ${r.code}`)
  }
  let registeredHere = false
  const registeredThere = new Set<SecondaryLink>()
  try {
    log(`ibc run ${task}: starting`)
    await remote('check')
    await remote('prefreeze')
    for (const l of links) {
      registeredThere.add(l) // before the answer: a register that fails half-way is aborted too
      await remoteOne(l, 'register')
    }
    await ibc.registry.register(task, undefined, { task: true })
    registeredHere = true
    steps.push({ host: 'both', step: 'register', code: null, output: '' })
    await local('quiesce')
    let sent: { id: string, seq: number }
    try {
      // A freeze timeout, so a Secondary is never frozen for good if both the flow and its
      // cleanup are lost (the Primary killed mid-flow, say): the flow's waits plus a script's run.
      const freezeTimeoutS = timeoutS + IBC_SCRIPT_TIMEOUT_MS / 1000 + 60
      sent = await ibc.send(task, undefined, Buffer.from(`ibc run ${task}`), { flush: true, freezeTimeoutS })
      steps.push({ host: 'primary', step: 'send', code: null, output: `message ${sent.id} at sequence number ${sent.seq}\n` })
    } finally {
      await local('unquiesce')
    }
    await remote('onfreeze')
    await remote('unfreeze')
    await remote('postfreeze')
    await remote('unregister')
    registeredThere.clear()
    await ibc.unregister(task, undefined)
    registeredHere = false
    steps.push({ host: 'both', step: 'unregister', code: null, output: '' })
    log(`ibc run ${task}: done`)
    return { steps }
  } catch (err) {
    log(`ibc run ${task}: ${(err as Error).message.split('\n')[0]}; cleaning up`)
    for (const l of registeredThere) await l.step(task, 'abort', timeoutS).catch(() => {})
    if (registeredHere) await ibc.unregister(task, undefined).catch(() => {})
    throw err
  }
}
