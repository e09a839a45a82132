/**
 * `replicafs primary`: the Primary daemon (and `replicafs passthrough`, the benchmark baseline).
 * Foreground by default; `--daemon` starts the same daemon detached and returns once it reports
 * the mount ready (or fails with its reason).
 */
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { parse, required, parseSize, helpText, type FlagSpec } from './args'
import { runPrimary, type Logger } from '../daemon'
import { ReplError } from '../errors'
import { SRL_BYTES_DEFAULT, SRL_BYTES_MIN, SRL_BYTES_MAX, SRL_PREALLOCATE_CHUNK_BYTES, DAEMON_READY_TIMEOUT_MS } from '../limits'

export const PRIMARY_FLAGS: FlagSpec = {
  data: { type: 'string', arg: 'DIR', help: 'the data directory: the replicated tree, written only through the mount' },
  mount: { type: 'string', arg: 'DIR', help: 'where to mount it (an empty directory)' },
  state: { type: 'string', arg: 'DIR', help: 'the state directory: SRL, LevelDB state, control socket, daemon.log' },
  'srl-size': { type: 'string', arg: 'BYTES', help: `SRL capacity, set when the state is created (default ${SRL_BYTES_DEFAULT / 1024 / 1024}M; K/M/G suffixes)` },
  retain: { type: 'boolean', help: 'keep every record in the SRL, never release (testing, debugging; a full SRL then fails writes with ENOSPC)' },
  daemon: { type: 'boolean', help: 'run in the background; return once the mount is ready' },
  help: { type: 'boolean', help: 'show this help' }
}

export const PASSTHROUGH_FLAGS: FlagSpec = {
  data: PRIMARY_FLAGS.data,
  mount: PRIMARY_FLAGS.mount,
  state: { type: 'string', arg: 'DIR', help: 'the state directory: control socket, daemon.log' },
  daemon: PRIMARY_FLAGS.daemon,
  help: PRIMARY_FLAGS.help
}

export const PRIMARY_HELP = helpText('replicafs primary --data DIR --mount DIR --state DIR [--srl-size BYTES] [--daemon]',
  'Mounts a FUSE filesystem at --mount that passes through to --data and journals every change, in\norder, into the SRL before acknowledging it. Stop it with `replicafs stop --state DIR`, SIGINT or SIGTERM.',
  PRIMARY_FLAGS)

export const PASSTHROUGH_HELP = helpText('replicafs passthrough --data DIR --mount DIR --state DIR [--daemon]',
  'A bare FUSE passthrough with no SRL: the same adapter as the Primary without the journal.\nIt exists as the benchmark baseline (bench/).',
  PASSTHROUGH_FLAGS)

function makeLogger (): Logger {
  return (line: string) => {
    process.stderr.write(`${new Date().toISOString()} replicafs[${process.pid}]: ${line}\n`)
  }
}

export async function primaryCommand (argv: string[], journal: boolean): Promise<number> {
  const command = journal ? 'primary' : 'passthrough'
  const flags = journal ? PRIMARY_FLAGS : PASSTHROUGH_FLAGS
  const { values } = parse(command, argv, flags)
  if (values.help) { process.stdout.write(journal ? PRIMARY_HELP : PASSTHROUGH_HELP); return 0 }
  const data = required(command, values, 'data')
  const mount = required(command, values, 'mount')
  const state = required(command, values, 'state')
  let srlBytes = SRL_BYTES_DEFAULT
  if (typeof values['srl-size'] === 'string') {
    srlBytes = parseSize(command, 'srl-size', values['srl-size'])
    if (srlBytes < SRL_BYTES_MIN || srlBytes > SRL_BYTES_MAX) throw new ReplError('USAGE', `replicafs ${command}: --srl-size must be between ${SRL_BYTES_MIN / 1024 / 1024}M and ${SRL_BYTES_MAX / 1024 ** 3}G`)
    srlBytes = Math.ceil(srlBytes / SRL_PREALLOCATE_CHUNK_BYTES) * SRL_PREALLOCATE_CHUNK_BYTES
  }

  if (values.daemon) return detach(command, argv.filter((a) => a !== '--daemon'), state)

  const notify = typeof process.send === 'function' && process.env.REPLICAFS_DAEMON_CHILD === '1'
  const log = makeLogger()
  let daemon
  try {
    daemon = await runPrimary({ data, mount, state, srlBytes, journal, retain: values.retain === true }, log)
  } catch (err) {
    if (notify) { process.send!({ error: (err as Error).message }); process.disconnect?.() }
    throw err
  }
  log(`${command} ready: ${path.resolve(data)} mounted at ${path.resolve(mount)}`)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { daemon.stop(0).catch(() => {}) })
  process.on('SIGHUP', () => {})
  fs.writeFileSync(path.join(state, 'daemon.pid'), `${process.pid}\n`)
  if (notify) { process.send!({ ready: true, pid: process.pid }); process.disconnect?.() }
  const code = await daemon.stopped
  try { fs.unlinkSync(path.join(state, 'daemon.pid')) } catch {}
  return code
}

/** Starts the daemon detached, with its output in STATE/daemon.log, and waits for ready. */
async function detach (command: string, argv: string[], state: string): Promise<number> {
  fs.mkdirSync(state, { recursive: true, mode: 0o700 })
  const logFile = path.join(state, 'daemon.log')
  const out = fs.openSync(logFile, 'a')
  const child = spawn(process.execPath, [...process.execArgv, require.main!.filename, command, ...argv], {
    detached: true,
    stdio: ['ignore', out, out, 'ipc'],
    env: { ...process.env, REPLICAFS_DAEMON_CHILD: '1' }
  })
  fs.closeSync(out)
  const result = await new Promise<{ ready?: boolean, pid?: number, error?: string }>((resolve) => {
    const timer = setTimeout(() => resolve({ error: `the daemon did not report ready within ${DAEMON_READY_TIMEOUT_MS / 1000} s (see ${logFile})` }), DAEMON_READY_TIMEOUT_MS)
    child.once('message', (m) => { clearTimeout(timer); resolve(m as { ready?: boolean, error?: string }) })
    child.once('exit', (code) => { clearTimeout(timer); resolve({ error: `the daemon exited with code ${code} before it was ready (see ${logFile})` }) })
  })
  child.removeAllListeners()
  if (child.connected) child.disconnect()
  child.unref()
  if (result.ready) {
    process.stdout.write(`replicafs ${command}: running as pid ${result.pid}, log in ${logFile}\n`)
    return 0
  }
  try { child.kill('SIGKILL') } catch {}
  throw new ReplError('USAGE', result.error ?? 'the daemon failed to start')
}
