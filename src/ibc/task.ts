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
import { execFile } from 'node:child_process'
import { IbcError } from './errors'
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
    execFile(file, [], {
      cwd: dir,
      timeout: IBC_SCRIPT_TIMEOUT_MS,
      maxBuffer: IBC_SCRIPT_OUTPUT_BYTES_MAX,
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
    }, (err, stdout, stderr) => {
      const output = (stdout + stderr).slice(-IBC_SCRIPT_OUTPUT_BYTES_MAX)
      if (err === null) { resolve({ code: 0, output }); return }
      const e = err as unknown as { code?: number | string | null, killed?: boolean, signal?: string | null, message: string }
      // A script killed by a signal has no exit code: report 128 + 9 (killed) like a shell would.
      const code = typeof e.code === 'number' ? e.code : e.signal ? 137 : 126
      resolve({ code, output: output + (e.killed ? `\n(killed after ${IBC_SCRIPT_TIMEOUT_MS / 1000} s)` : typeof e.code === 'string' ? `\n(${e.message})` : '') })
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
      await ibc.registry.register(task)
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
    // The CLI exits with the failing script's exit code (1 when the step was not a script).
    throw Object.assign(new IbcError('EIBC_TASK_FAILED', `task ${task}: ${why}`), { steps, exitCode: s.code !== null && s.code > 0 ? s.code : 1 })
  }
  const remote = async (step: string): Promise<void> => {
    for (const l of links) {
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
      if (r.error !== null) fail(s, `${step} on the Secondary ${l.address} failed: ${r.error}${r.output ? `\n${r.output}` : ''}`)
      if (r.code !== null && r.code !== 0) fail(s, `${step} on the Secondary ${l.address} exited with code ${r.code}${r.output ? `\n${r.output}` : ''}`)
    }
  }
  const local = async (step: string): Promise<void> => {
    const r = await runScript(env, task, step, false)
    const s: StepResult = { host: 'primary', step, code: r?.code ?? null, output: r?.output ?? '' }
    steps.push(s)
    if (r !== null && r.code !== 0) fail(s, `${step} on the Primary exited with code ${r.code}${r.output ? `\n${r.output}` : ''}`)
  }
  let registeredHere = false
  let registeredThere = false
  try {
    log(`ibc run ${task}: starting`)
    await remote('check')
    await remote('prefreeze')
    await remote('register')
    registeredThere = true
    await ibc.registry.register(task)
    registeredHere = true
    steps.push({ host: 'both', step: 'register', code: null, output: '' })
    await local('quiesce')
    let sent: { id: string, seq: number }
    try {
      sent = await ibc.send(task, undefined, Buffer.from(`ibc run ${task}`), { flush: true })
      steps.push({ host: 'primary', step: 'send', code: null, output: `message ${sent.id} at sequence number ${sent.seq}\n` })
    } finally {
      await local('unquiesce')
    }
    await remote('onfreeze')
    await remote('unfreeze')
    await remote('postfreeze')
    await remote('unregister')
    registeredThere = false
    await ibc.unregister(task, undefined)
    registeredHere = false
    steps.push({ host: 'both', step: 'unregister', code: null, output: '' })
    log(`ibc run ${task}: done`)
    return { steps }
  } catch (err) {
    log(`ibc run ${task}: ${(err as Error).message.split('\n')[0]}; cleaning up`)
    if (registeredThere) for (const l of links) await l.step(task, 'abort', timeoutS).catch(() => {})
    if (registeredHere) await ibc.unregister(task, undefined).catch(() => {})
    throw err
  }
}
