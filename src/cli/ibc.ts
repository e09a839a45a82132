/**
 * `replicafs ibc register|send|receive|unfreeze|unregister|status|run` and `replicafs ibc-send`
 * (also bin/ibc-send): VVR's vxibc / vradmin ibc over the daemon's control socket. Failures print
 * their VVR error name first (EIBC_NO_APPLICATION, EIBC_IBC_PENDING, ...) and exit 1.
 */
import fs from 'node:fs'
import { parse, required, helpText, type FlagSpec } from './args'
import { request, RemoteError } from '../control'
import { ReplError, IbcError } from '../errors'
import { IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S, IBC_MESSAGE_BYTES_MAX } from '../limits'

const STATE = { type: 'string', arg: 'DIR', help: 'the state directory of the daemon' } as const
const KEY = { type: 'string', arg: 'KEY', help: 'the key `ibc register` printed (optional: checked when given)' } as const
const JSON_FLAG = { type: 'boolean', help: 'print JSON' } as const
const HELP_FLAG = { type: 'boolean', help: 'show this help' } as const

const FLAGS: Record<string, FlagSpec> = {
  register: { state: STATE, 'deliver-timeout': { type: 'string', arg: 'SECONDS', help: 'on a Secondary: discard a message nobody receives within this (default 600; 0: never)' }, json: JSON_FLAG, help: HELP_FLAG },
  send: {
    state: STATE,
    key: KEY,
    file: { type: 'string', arg: 'FILE', help: 'take the message from this file' },
    'no-freeze': { type: 'boolean', help: 'deliver without freezing the Secondary' },
    'freeze-timeout': { type: 'string', arg: 'SECONDS', help: 'unfreeze the Secondary by itself after this long (default: only on unfreeze)' },
    json: JSON_FLAG,
    help: HELP_FLAG
  },
  receive: { state: STATE, key: KEY, timeout: { type: 'string', arg: 'SECONDS', help: 'give up (EIBC_NO_MESSAGE) after this long (default: wait forever)' }, json: JSON_FLAG, help: HELP_FLAG },
  unfreeze: { state: STATE, key: KEY, help: HELP_FLAG },
  unregister: { state: STATE, key: KEY, help: HELP_FLAG },
  status: { state: STATE, json: JSON_FLAG, help: HELP_FLAG },
  run: { state: STATE, timeout: { type: 'string', arg: 'SECONDS', help: `fail if the Secondary is not frozen at the message within this (default ${IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S})` }, json: JSON_FLAG, help: HELP_FLAG }
}

const USAGE: Record<string, [string, string]> = {
  register: ['replicafs ibc register --state DIR APP [--deliver-timeout SECONDS] [--json]', 'Registers an IBC application name on this host (Primary: to send; Secondary: to receive) and prints its key.'],
  send: ['replicafs ibc send --state DIR APP [MESSAGE] [--file FILE] [--no-freeze | --freeze-timeout SECONDS] [--key KEY] [--json]', 'Primary: puts MESSAGE into the update stream after every update already acknowledged; returns once it is\ncommitted to the SRL (and network-acked in the synchronous modes). Prints its id.'],
  receive: ['replicafs ibc receive --state DIR APP [--timeout SECONDS] [--key KEY] [--json]', 'Secondary: waits for a message for APP, delivered once every update before it is applied, and prints it.\nUnless it was sent with --no-freeze, the Secondary is then frozen: updates are logged but not applied\nuntil `ibc unfreeze`. --json adds its id (the same on a repeated delivery) and sequence number.'],
  unfreeze: ['replicafs ibc unfreeze --state DIR APP [--key KEY]', 'Secondary: applies the updates logged while frozen and goes on replicating.'],
  unregister: ['replicafs ibc unregister --state DIR APP [--key KEY]', 'Removes a registration (EIBC_IBC_PENDING while a delivery or unfreeze is pending). On a Secondary,\nlater messages for APP are discarded on arrival.'],
  status: ['replicafs ibc status --state DIR [--json]', 'Registrations, and on a Secondary whether it is frozen and by which message.'],
  run: ['replicafs ibc run --state DIR TASK [--timeout SECONDS] [--json]', 'Primary: runs the task TASK as `vradmin ibc` does: prefreeze (Secondary), register, quiesce and\nunquiesce around the send (Primary), onfreeze once frozen, unfreeze, postfreeze (Secondary), unregister.\nEach host runs only the scripts in its own task directory (STATE/tasks/TASK/).']
}

export const IBC_HELP = `usage: replicafs ibc OPERATION --state DIR APP ...

In-Band Control messages, as VVR's IBC: a script on the Primary marks a point in the update stream,
and the Secondary stops exactly there.

${Object.entries(USAGE).map(([op, [u]]) => `  ${u}`).join('\n')}

Run \`replicafs ibc OPERATION --help\` for details.
`

function seconds (op: string, flag: string, v: unknown): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new ReplError('USAGE', `replicafs ibc ${op}: --${flag} ${String(v)} is not a whole number of seconds`)
  return n
}

async function ibc (state: string, req: Record<string, unknown>, timeoutMs = 30_000): Promise<any> {
  return request(state, { cmd: 'ibc', ...req }, timeoutMs)
}

function printMessage (m: { app: string, id: string, seq: number, message: string, frozen: boolean }, json: boolean): void {
  const bytes = Buffer.from(m.message, 'base64')
  if (json) process.stdout.write(JSON.stringify({ app: m.app, id: m.id, seq: m.seq, message: bytes.toString('utf8'), messageBase64: m.message, frozen: m.frozen }) + '\n')
  else process.stdout.write(bytes)
}

export async function ibcCommand (argv: string[]): Promise<number> {
  const [op, ...rest] = argv
  if (op === undefined || op === '--help' || op === '-h') { process.stdout.write(IBC_HELP); return op === undefined ? 2 : 0 }
  const flags = FLAGS[op]
  if (flags === undefined) throw new ReplError('USAGE', `replicafs ibc: unknown operation ${op} (see replicafs ibc --help)`)
  const { values, positionals } = parse(`ibc ${op}`, rest, flags, op === 'send' ? 2 : op === 'status' ? 0 : 1)
  if (values.help) { process.stdout.write(helpText(USAGE[op][0], USAGE[op][1], flags)); return 0 }
  const state = required(`ibc ${op}`, values, 'state')
  const app = positionals[0]
  if (op !== 'status' && (app === undefined || app === '')) throw new ReplError('USAGE', `replicafs ibc ${op}: the ${op === 'run' ? 'TASK' : 'APP'} name is required (see replicafs ibc ${op} --help)`)
  const key = typeof values.key === 'string' ? values.key : undefined
  const json = values.json === true
  switch (op) {
    case 'register': {
      const r = await ibc(state, { op, app, deliverTimeoutS: seconds(op, 'deliver-timeout', values['deliver-timeout']) })
      process.stdout.write(json ? JSON.stringify(r) + '\n' : `${r.key}\n`)
      return 0
    }
    case 'send': return sendCommand(state, app, key, positionals[1], values, false, json)
    case 'receive': {
      const timeoutS = seconds(op, 'timeout', values.timeout) ?? 0
      const m = await ibc(state, { op, app, key, timeoutS }, timeoutS > 0 ? timeoutS * 1000 + 30_000 : 2 ** 31 - 1)
      printMessage(m, json)
      return 0
    }
    case 'unfreeze':
    case 'unregister':
      await ibc(state, { op, app, key })
      return 0
    case 'status': {
      const r = await ibc(state, { op })
      if (json) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return 0 }
      const lines = [`registrations: ${r.registrations.length === 0 ? 'none' : r.registrations.map((x: { name: string }) => x.name).join(', ')}`]
      if ('frozen' in r) {
        lines.push(`frozen:        ${r.frozen ? `yes, by ${r.held.app} (message ${r.held.id}, ${r.held.phase})` : 'no'}`)
        if (r.held && !r.frozen) lines.push(`held:          message ${r.held.id} for ${r.held.app} (${r.held.phase})`)
        if (r.queued.length > 0) lines.push(`queued:        ${r.queued.map((q: { id: string, app: string }) => `${q.id} for ${q.app}`).join(', ')}`)
      }
      process.stdout.write(lines.join('\n') + '\n')
      return 0
    }
    case 'run': {
      const timeoutS = seconds(op, 'timeout', values.timeout) ?? IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S
      const r = await request(state, { cmd: 'ibc-run', task: app, timeoutS }, 2 ** 31 - 1) as { steps: Array<{ host: string, step: string, code: number | null, output: string }> }
      if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      else for (const s of r.steps) process.stdout.write(`${s.host} ${s.step}: ${s.code === null ? 'done' : `exit ${s.code}`}${s.output ? '\n' + s.output.replace(/\n$/, '').replace(/^/gm, '  ') : ''}\n`)
      return 0
    }
  }
  return 0
}

async function sendCommand (state: string, app: string, key: string | undefined, text: string | undefined, values: Record<string, unknown>, flush: boolean, json: boolean): Promise<number> {
  if (text !== undefined && typeof values.file === 'string') throw new ReplError('USAGE', 'replicafs ibc send: give the message as an argument or with --file, not both')
  let message = Buffer.from(text ?? '', 'utf8')
  if (typeof values.file === 'string') {
    try { message = fs.readFileSync(values.file) } catch (err) { throw new ReplError('USAGE', `replicafs ibc send: cannot read ${values.file}: ${(err as Error).message}`) }
  }
  // The daemon checks too; checking here names the limit before a large message is shipped.
  if (message.length > IBC_MESSAGE_BYTES_MAX) throw new IbcError('EIBC_MSG_LENGTH', `the IBC message is ${message.length} bytes; the most is ${IBC_MESSAGE_BYTES_MAX}`)
  const freezeTimeoutS = seconds('send', 'freeze-timeout', values['freeze-timeout'])
  if (values['no-freeze'] === true && freezeTimeoutS !== undefined) throw new ReplError('USAGE', 'replicafs ibc send: --no-freeze and --freeze-timeout exclude each other')
  const req = { op: 'send', app, key, message: message.toString('base64'), noFreeze: values['no-freeze'] === true, freezeTimeoutS: freezeTimeoutS ?? 0, flush }
  let registered = false
  let r: { id: string, seq: number }
  try {
    r = await ibc(state, req, 120_000)
  } catch (err) {
    // ibc-send, like vxibc regsend: register the name for this one send if it is not registered.
    if (!(flush && err instanceof RemoteError && err.code === 'EIBC_NO_APPLICATION' && key === undefined)) throw err
    await ibc(state, { op: 'register', app })
    registered = true
    try { r = await ibc(state, req, 120_000) } finally { await ibc(state, { op: 'unregister', app }).catch(() => {}) }
  }
  process.stdout.write(json ? JSON.stringify({ ...r, app, registeredForThisSend: registered }) + '\n' : `${r.id}\n`)
  return 0
}

export const IBC_SEND_FLAGS: FlagSpec = { state: STATE, key: KEY, file: FLAGS.send.file, 'no-freeze': FLAGS.send['no-freeze'], 'freeze-timeout': FLAGS.send['freeze-timeout'], json: JSON_FLAG, help: HELP_FLAG }
export const IBC_SEND_HELP = helpText('ibc-send --state DIR APP [MESSAGE] [--file FILE] [--no-freeze | --freeze-timeout SECONDS] [--json]',
  'Flushes the Primary (every write made through the mount is applied and its SRL synced), then sends an IBC\nmessage for APP, registering APP for this send if it is not registered. So `sync && ibc-send --state DIR APP`\nin a backup script marks a point at which everything written before it is in the stream. Prints the message id.',
  IBC_SEND_FLAGS)

export async function ibcSendCommand (argv: string[]): Promise<number> {
  const { values, positionals } = parse('ibc-send', argv, IBC_SEND_FLAGS, 2)
  if (values.help) { process.stdout.write(IBC_SEND_HELP); return 0 }
  const state = required('ibc-send', values, 'state')
  const app = positionals[0]
  if (app === undefined || app === '') throw new ReplError('USAGE', 'ibc-send: the APP name is required (see ibc-send --help)')
  return sendCommand(state, app, typeof values.key === 'string' ? values.key : undefined, positionals[1], values, true, values.json === true)
}
