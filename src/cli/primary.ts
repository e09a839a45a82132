/**
 * `replicafs primary`: the Primary daemon (and `replicafs passthrough`, the benchmark baseline).
 * Foreground by default; `--daemon` starts the same daemon detached and returns once it reports
 * the mount ready (or fails with its reason).
 */
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { parse, required, parseSize, helpText, type FlagSpec, type FlagValues } from './args'
import { startPrimary, type Logger, type RunningDaemon } from '../daemon'
import { parseAddress, formatAddress, readSecret } from '../rlink/common'
import { loadTls, parseFingerprint, type TlsFiles } from '../rlink/tls'
import { COMPRESSIONS, type Compression } from '../rlink/compress'
import { parseRate } from '../rlink/rate'
import { SRLPROT_VALUES, type SynchronousMode, type SrlProt } from '../rlink/sender'
import { ReplError } from '../errors'
import { parseMountOptions } from '../fuse/mount-options'
import { FUSE_TRANSPORTS, type FuseTransport } from '../fuse/adapter'
import { SRL_BYTES_DEFAULT, SRL_BYTES_MIN, SRL_BYTES_MAX, SRL_PREALLOCATE_CHUNK_BYTES, DAEMON_READY_TIMEOUT_MS } from '../limits'

export const RDS_DEFAULT = 'replicafs'

export const PRIMARY_FLAGS: FlagSpec = {
  data: { type: 'string', arg: 'DIR', help: 'the data directory: the replicated tree, written only through the mount' },
  mount: { type: 'string', arg: 'DIR', help: 'where to mount it (an empty directory)' },
  state: { type: 'string', arg: 'DIR', help: 'the state directory: SRL, LevelDB state, control socket, daemon.log' },
  'srl-size': { type: 'string', arg: 'BYTES', help: `SRL capacity, set when the state is created (default ${SRL_BYTES_DEFAULT / 1024 / 1024}M; K/M/G suffixes)` },
  retain: { type: 'boolean', help: 'keep every record in the SRL, never release (testing, debugging; a full SRL then fails writes with ENOSPC)' },
  secondary: { type: 'string', multiple: true, arg: 'HOST:PORT', help: 'replicate to the Secondary listening there (repeat for several; one RLINK each)' },
  'secret-file': { type: 'string', arg: 'FILE', help: 'the secret shared with the Secondaries (required with --secondary; never sent)' },
  listen: { type: 'string', arg: 'HOST:PORT', help: 'a Primary that took over (replicafs takeover): go on answering at this address, its\n--listen as a Secondary, so that the old Primary, back, learns it was taken over' },
  synchronous: { type: 'string', arg: 'MODE', help: 'off (default): a write completes once in the SRL; override: also waits for the network ack of every connected Secondary; fail: as override, and fails writes with EIO while an RLINK is down' },
  srlprot: { type: 'string', arg: 'MODE', help: 'SRL overflow protection, as VVR\'s: when the SRL would overflow because a Secondary\nis behind or away: autodcm (default): that Secondary leaves the SRL for a change map of\nthe paths changed and is resynchronized from it when back; dcm: the same if it is down,\nwriters wait while it is connected; fail: writers wait while it is connected, writes fail\nwith ENOSPC while it is down; override: the same, but instead of failing the Secondary is\ndetached (STALE: back, it is synchronized by difference, its whole tree compared);\noff: it is always detached' },
  'max-lag': { type: 'string', arg: 'SECONDS', help: 'latency protection (VVR\'s latencyprot, in seconds): while a connected Secondary that is\napplying is more than SECONDS behind, writers wait for it before their reply (default 0: off)' },
  rds: { type: 'string', arg: 'NAME', help: `the RDS name both ends must agree on (default ${RDS_DEFAULT})` },
  'task-dir': { type: 'string', arg: 'DIR', help: 'where `ibc run TASK` finds this host\'s scripts, in DIR/TASK/ (default STATE/tasks)' },
  fuse: { type: 'string', arg: 'TRANSPORT', help: 'the mount\'s FUSE transport: ll (libfuse 3\'s low-level API in replicafs\'s addon: reads\nserved in C by inode, every change journaled; the default) or compat (fuse-native,\nlibfuse 2: the fallback, also taken when the ll addon cannot load here)' },
  'mount-options': { type: 'string', short: 'o', multiple: true, arg: 'OPTS', help: 'mount options: ro, nosuid/suid, nodev/dev, noexec/exec, noatime, relatime, strictatime, nodiratime (default nosuid,nodev,relatime)' },
  'tls-cert': { type: 'string', arg: 'FILE', help: 'TLS on the RLINK (TLS 1.3, mutual): this host\'s certificate (PEM), signed by --tls-ca;\nwith --tls-key and --tls-ca, on both ends (the secret stays a second factor)' },
  'tls-key': { type: 'string', arg: 'FILE', help: 'the private key of --tls-cert (PEM, unencrypted, mode 0600)' },
  'tls-ca': { type: 'string', arg: 'FILE', help: 'the CA certificate(s) (PEM) the peer\'s certificate must be signed by' },
  'tls-peer-fingerprint': { type: 'string', arg: 'SHA256', help: 'also require the peer\'s certificate to be this one (its SHA-256 fingerprint,\nas openssl x509 -noout -fingerprint -sha256 prints it)' },
  compress: { type: 'string', arg: 'zstd|off', help: 'compress the updates and synchronization data sent to the Secondaries with zstd\n(negotiated: a Secondary that has it agrees); default off (docs/PERFORMANCE.md)' },
  'bandwidth-limit': { type: 'string', arg: 'RATE', help: 'at most RATE bytes per second on each RLINK (VVR\'s bandwidth_limit): 512K, 10M, 1G,\nor bits: 100mbit; none (default): no limit. `replicafs set` changes it at run time' },
  'log-format': { type: 'string', arg: 'FORMAT', help: 'text (default): TIME replicafs[PID]: LINE; json: one object per line,\n{time, level, pid, command, msg}' },
  metrics: { type: 'string', arg: 'HOST:PORT', help: 'serve Prometheus metrics at http://HOST:PORT/metrics (replicafs_* names: see the README;\nport 0: any free port, status shows it)' },
  daemon: { type: 'boolean', help: 'run in the background; return once the mount is ready' },
  config: { type: 'string', arg: 'FILE', help: 'read flags from this TOML file first, one key per flag, named as the flag\n(srl-size = "256M", secondary = ["b:7400"], daemon = true); flags given here\noverride it; relative paths are from the file\'s directory (examples/primary.toml)' },
  help: { type: 'boolean', help: 'show this help' }
}

export const PASSTHROUGH_FLAGS: FlagSpec = {
  data: PRIMARY_FLAGS.data,
  mount: PRIMARY_FLAGS.mount,
  state: { type: 'string', arg: 'DIR', help: 'the state directory: control socket, daemon.log' },
  'mount-options': PRIMARY_FLAGS['mount-options'],
  fuse: PRIMARY_FLAGS.fuse,
  daemon: PRIMARY_FLAGS.daemon,
  help: PRIMARY_FLAGS.help
}

export const PRIMARY_HELP = helpText('replicafs primary [--config FILE] --data DIR --mount DIR --state DIR [--srl-size BYTES] [--fuse ll|compat] [--daemon] [-o OPT,...]\n         [--secondary HOST:PORT ...] [--secret-file FILE] [--synchronous off|override|fail] [--srlprot MODE] [--max-lag SECONDS] [--rds NAME]\n         [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--compress zstd|off] [--bandwidth-limit RATE]',
  'Mounts a FUSE filesystem at --mount that passes through to --data and journals every change, in\norder, into the SRL before acknowledging it, and replicates the SRL to each --secondary.\nStop it with `replicafs stop --state DIR`, SIGINT or SIGTERM.',
  PRIMARY_FLAGS)

export const PASSTHROUGH_HELP = helpText('replicafs passthrough --data DIR --mount DIR --state DIR [--fuse ll|compat] [--daemon] [-o OPT,...]',
  'A bare FUSE passthrough with no SRL: the same adapter as the Primary without the journal.\nIt exists as the benchmark baseline (bench/).',
  PASSTHROUGH_FLAGS)

export const LOG_FORMATS = ['text', 'json'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

/** The --log-format flag's value, checked. */
export function logFormatOf (command: string, values: Record<string, unknown>): LogFormat {
  const f = values['log-format'] ?? 'text'
  if (!LOG_FORMATS.includes(f as LogFormat)) throw new ReplError('USAGE', `replicafs ${command}: --log-format must be text or json (not ${String(f)})`)
  return f as LogFormat
}

/**
 * The daemon's log, on stderr (STATE/daemon.log under --daemon): `TIME replicafs[PID]: LINE`, or
 * with --log-format json one object per line, {time, level, pid, command, msg}, as pino writes them
 * (a level is inferred from the line: "fatal: ..." is error, a line naming a warning is warn).
 * JSON.stringify does it in one line each; a logging library (pino) would add a dependency for
 * nothing the daemon's lines need: they are sentences, with no fields of their own yet.
 */
function makeLogger (format: LogFormat, command: string): Logger {
  if (format === 'json') {
    return (line: string) => {
      const level = /^fatal\b/.test(line) ? 'error' : /\bwarning\b/i.test(line) ? 'warn' : 'info'
      process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, command, msg: line }) + '\n')
    }
  }
  return (line: string) => {
    process.stderr.write(`${new Date().toISOString()} replicafs[${process.pid}]: ${line}\n`)
  }
}

/** Parses --srl-size (shared by primary and secondary). */
export function srlSizeOf (command: string, values: Record<string, unknown>): number {
  let srlBytes = SRL_BYTES_DEFAULT
  if (typeof values['srl-size'] === 'string') {
    srlBytes = parseSize(command, 'srl-size', values['srl-size'])
    if (srlBytes < SRL_BYTES_MIN || srlBytes > SRL_BYTES_MAX) throw new ReplError('USAGE', `replicafs ${command}: --srl-size must be between ${SRL_BYTES_MIN / 1024 / 1024}M and ${SRL_BYTES_MAX / 1024 ** 3}G`)
    srlBytes = Math.ceil(srlBytes / SRL_PREALLOCATE_CHUNK_BYTES) * SRL_PREALLOCATE_CHUNK_BYTES
  }
  return srlBytes
}

/** Checks an RDS name: it goes into logs and the handshake. */
export function rdsOf (command: string, values: Record<string, unknown>): string {
  const rds = typeof values.rds === 'string' ? values.rds : RDS_DEFAULT
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(rds)) throw new ReplError('USAGE', `replicafs ${command}: --rds ${rds} must be 1-64 letters, digits, '.', '_' or '-'`)
  return rds
}

/** --fuse TRANSPORT, checked (undefined: the default). */
export function fuseTransportOf (command: string, value: unknown): FuseTransport | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'string' && (FUSE_TRANSPORTS as readonly string[]).includes(value)) return value as FuseTransport
  throw new ReplError('USAGE', `replicafs ${command}: --fuse ${String(value)} is not a transport (${FUSE_TRANSPORTS.join(' or ')})`)
}

export async function primaryCommand (argv: string[], journal: boolean): Promise<number> {
  const command = journal ? 'primary' : 'passthrough'
  const flags = journal ? PRIMARY_FLAGS : PASSTHROUGH_FLAGS
  const { values } = parse(command, argv, flags)
  if (values.help) { process.stdout.write(journal ? PRIMARY_HELP : PASSTHROUGH_HELP); return 0 }
  const data = required(command, values, 'data')
  const mount = required(command, values, 'mount')
  const state = required(command, values, 'state')
  const srlBytes = srlSizeOf(command, values)
  const secondaries = ((values.secondary as string[] | undefined) ?? []).map((a) => formatAddress(parseAddress(a, 'secondary')))
  if (new Set(secondaries).size !== secondaries.length) throw new ReplError('USAGE', `replicafs ${command}: the same --secondary is given twice`)
  const secretFile = typeof values['secret-file'] === 'string' ? values['secret-file'] : null
  if (secondaries.length > 0 && secretFile === null) throw new ReplError('USAGE', `replicafs ${command}: --secondary needs --secret-file (the secret shared with the Secondary)`)
  if (secretFile !== null) readSecret(secretFile) // a missing or empty file is reported now, not by the daemon
  const synchronous = (values.synchronous ?? 'off') as SynchronousMode
  if (!['off', 'override', 'fail'].includes(synchronous)) throw new ReplError('USAGE', `replicafs ${command}: --synchronous must be off, override or fail (not ${String(values.synchronous)})`)
  if (synchronous !== 'off' && secondaries.length === 0) throw new ReplError('USAGE', `replicafs ${command}: --synchronous ${synchronous} needs at least one --secondary`)
  const srlprot = (values.srlprot ?? 'autodcm') as SrlProt
  if (!SRLPROT_VALUES.includes(srlprot)) throw new ReplError('USAGE', `replicafs ${command}: --srlprot must be ${SRLPROT_VALUES.join(', ')} (not ${String(values.srlprot)})`)
  if (values.srlprot !== undefined && secondaries.length === 0) throw new ReplError('USAGE', `replicafs ${command}: --srlprot ${srlprot} needs at least one --secondary`)
  const maxLag = values['max-lag'] === undefined ? 0 : Number(values['max-lag'])
  if (!Number.isFinite(maxLag) || maxLag < 0 || !/^\d+(\.\d+)?$/.test(String(values['max-lag'] ?? '0'))) throw new ReplError('USAGE', `replicafs ${command}: --max-lag must be a number of seconds, 0 or more (not ${String(values['max-lag'])})`)
  if (maxLag > 0 && secondaries.length === 0) throw new ReplError('USAGE', `replicafs ${command}: --max-lag needs at least one --secondary`)
  const rds = rdsOf(command, values)
  const listen = typeof values.listen === 'string' ? parseAddress(values.listen, 'listen') : undefined
  if (listen !== undefined && secretFile === null) throw new ReplError('USAGE', `replicafs ${command}: --listen needs --secret-file (peers are authenticated with it)`)
  const mountOptions = parseMountOptions(command, (values['mount-options'] as string[] | undefined) ?? [], false)
  const fuse = fuseTransportOf(command, values.fuse)
  const metrics = typeof values.metrics === 'string' ? parseAddress(values.metrics, 'metrics', true) : undefined
  const logFormat = logFormatOf(command, values)
  const tls = journal ? tlsOf(command, values) : null
  if (tls !== null && secretFile === null) throw new ReplError('USAGE', `replicafs ${command}: --tls-cert is for the RLINK: it needs --secondary or --listen (and --secret-file)`)
  const compress = (values.compress ?? 'off') as Compression
  if (!COMPRESSIONS.includes(compress)) throw new ReplError('USAGE', `replicafs ${command}: --compress must be zstd or off (not ${String(values.compress)})`)
  const bandwidthLimit = typeof values['bandwidth-limit'] === 'string' ? parseRate(values['bandwidth-limit'], `replicafs ${command}: --bandwidth-limit`) : null
  if ((bandwidthLimit !== null || compress !== 'off') && secondaries.length === 0 && listen === undefined) throw new ReplError('USAGE', `replicafs ${command}: --${bandwidthLimit !== null ? 'bandwidth-limit' : 'compress'} needs at least one --secondary`)

  if (values.daemon === true && !isDaemonChild()) return detach(command, argv.filter((a) => a !== '--daemon'), state)
  return runForeground(command, state, (log) => startPrimary({
    data, mount, state, srlBytes, journal, retain: values.retain === true, secondaries, secretFile, synchronous, srlprot, maxLag, rds,
    taskDir: typeof values['task-dir'] === 'string' ? path.resolve(values['task-dir']) : undefined,
    mountOptions,
    fuse,
    listen,
    metrics,
    tls,
    compress,
    bandwidthLimit
  }, log), `${path.resolve(data)} mounted at ${path.resolve(mount)} (${mountOptions.text})`, logFormat)
}

/**
 * --tls-cert, --tls-key, --tls-ca (all three or none) and --tls-peer-fingerprint, checked now
 * (a missing file, a key that is not the certificate's, an expired certificate) so that the
 * command, not the daemon's log, says what is wrong.
 */
export function tlsOf (command: string, values: FlagValues): TlsFiles | null {
  const [cert, key, ca] = (['tls-cert', 'tls-key', 'tls-ca'] as const).map((f) => typeof values[f] === 'string' ? values[f] : undefined)
  const pin = typeof values['tls-peer-fingerprint'] === 'string' ? values['tls-peer-fingerprint'] : null
  if (cert === undefined && key === undefined && ca === undefined) {
    if (pin !== null) throw new ReplError('USAGE', `replicafs ${command}: --tls-peer-fingerprint needs --tls-cert, --tls-key and --tls-ca`)
    return null
  }
  const missing = (['tls-cert', 'tls-key', 'tls-ca'] as const).filter((f, i) => [cert, key, ca][i] === undefined)
  if (missing.length > 0) throw new ReplError('USAGE', `replicafs ${command}: TLS needs --tls-cert, --tls-key and --tls-ca together (missing ${missing.map((f) => `--${f}`).join(', ')})`)
  const files: TlsFiles = { cert: path.resolve(cert!), key: path.resolve(key!), ca: path.resolve(ca!), peerFingerprint: pin === null ? null : parseFingerprint(pin) }
  loadTls(files)
  return files
}

/**
 * Whether this process is the daemon `--daemon` started (it runs in the foreground, whatever
 * `daemon = true` its --config file says). Its own children (task scripts) do not inherit that.
 */
const daemonChild = process.env.REPLICAFS_DAEMON_CHILD === '1' && typeof process.send === 'function'
delete process.env.REPLICAFS_DAEMON_CHILD
export function isDaemonChild (): boolean { return daemonChild }

/** Runs a daemon in this process until it stops; reports ready to a detaching parent. */
export async function runForeground (command: string, state: string, start: (log: Logger) => Promise<RunningDaemon>, what: string, logFormat: LogFormat = 'text'): Promise<number> {
  const notify = daemonChild
  const log = makeLogger(logFormat, command)
  let daemon: RunningDaemon
  try {
    daemon = await start(log)
  } catch (err) {
    if (notify) { process.send!({ error: (err as Error).message }); process.disconnect?.() }
    throw err
  }
  log(`${command} ready: ${what}`)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { daemon.stop(0).catch(() => {}) })
  process.on('SIGHUP', () => {})
  fs.writeFileSync(path.join(state, 'daemon.pid'), `${process.pid}\n`, { mode: 0o600 })
  if (notify) { process.send!({ ready: true, pid: process.pid }); process.disconnect?.() }
  const code = await daemon.stopped
  try { fs.unlinkSync(path.join(state, 'daemon.pid')) } catch {}
  return code
}

/** Starts the daemon detached, with its output in STATE/daemon.log, and waits for ready. */
export async function detach (command: string, argv: string[], state: string): Promise<number> {
  fs.mkdirSync(state, { recursive: true, mode: 0o700 })
  const logFile = path.join(state, 'daemon.log')
  const out = fs.openSync(logFile, 'a', 0o600)
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
