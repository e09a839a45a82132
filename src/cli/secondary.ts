/**
 * `replicafs secondary`: the Secondary daemon. It listens for its Primary's RLINK, logs and applies
 * the updates in order, and shows the replicated tree through a read-only mount.
 */
import path from 'node:path'
import { parse, required, helpText, type FlagSpec } from './args'
import { detach, runForeground, srlSizeOf, rdsOf, isDaemonChild, logFormatOf, tlsOf, fuseTransportOf, RDS_DEFAULT, PRIMARY_FLAGS } from './primary'
import { runSecondary } from '../daemon'
import { parseAddress, readSecret } from '../rlink/common'
import { ReplError } from '../errors'
import { parseMountOptions } from '../fuse/mount-options'

export const SECONDARY_FLAGS: FlagSpec = {
  data: { type: 'string', arg: 'DIR', help: 'the replicated data directory (empty for a new Secondary; written only by replication)' },
  mount: { type: 'string', arg: 'DIR', help: 'where to mount it read-only (an empty directory)' },
  state: { type: 'string', arg: 'DIR', help: 'the state directory: SRL, LevelDB state, control socket, daemon.log' },
  listen: { type: 'string', arg: 'HOST:PORT', help: 'where to accept the Primary (port 0: any free port; status shows it)' },
  'secret-file': { type: 'string', arg: 'FILE', help: 'the secret shared with the Primary (never sent)' },
  rds: { type: 'string', arg: 'NAME', help: `the RDS name both ends must agree on (default ${RDS_DEFAULT})` },
  'srl-size': PRIMARY_FLAGS['srl-size'],
  'task-dir': PRIMARY_FLAGS['task-dir'],
  'mount-options': { type: 'string', short: 'o', multiple: true, arg: 'OPTS', help: 'mount options: nosuid/suid, nodev/dev, noexec/exec, noatime, relatime, strictatime, nodiratime (always ro; default nosuid,nodev,relatime)' },
  fuse: { type: 'string', arg: 'TRANSPORT', help: 'the mount\'s FUSE transport: ll (libfuse 3\'s low-level API in replicafs\'s addon, FUSE\npassthrough where the kernel has it; the default) or compat (fuse-native, libfuse 2)' },
  'ibc-hold': { type: 'string', arg: 'SECONDS', help: 'how long an IBC message for an application not registered here holds replication before it is discarded (default 600, as VVR)' },
  'sync-existing': { type: 'boolean', help: 'the data directory holds data that never replicated from this Primary (an old\nreplica, a restored backup): have it made the Primary\'s by difference, every file\'s\nchunks compared and only those that differ sent; what the Primary lacks is deleted.\nWithout it such a Secondary is refused' },
  'tls-cert': PRIMARY_FLAGS['tls-cert'],
  'tls-key': PRIMARY_FLAGS['tls-key'],
  'tls-ca': PRIMARY_FLAGS['tls-ca'],
  'tls-peer-fingerprint': PRIMARY_FLAGS['tls-peer-fingerprint'],
  'log-format': PRIMARY_FLAGS['log-format'],
  metrics: PRIMARY_FLAGS.metrics,
  daemon: { type: 'boolean', help: 'run in the background; return once the mount is ready and listening' },
  config: { type: 'string', arg: 'FILE', help: 'read flags from this TOML file first, one key per flag, named as the flag\n(listen = "0.0.0.0:7400", daemon = true); flags given here override it;\nrelative paths are from the file\'s directory (examples/secondary.toml)' },
  help: { type: 'boolean', help: 'show this help' }
}

export const SECONDARY_HELP = helpText('replicafs secondary [--config FILE] --data DIR --mount DIR --state DIR --listen HOST:PORT --secret-file FILE [--rds NAME] [--srl-size BYTES] [--sync-existing] [--fuse ll|compat] [--daemon] [-o OPT,...]\n         [--tls-cert FILE --tls-key FILE --tls-ca FILE [--tls-peer-fingerprint SHA256]]',
  'Receives the Primary\'s updates over the RLINK, logs them in its own SRL (network ack), applies\nthem strictly in order to --data (data ack) and shows the tree read-only at --mount.\nStop it with `replicafs stop --state DIR`, SIGINT or SIGTERM.',
  SECONDARY_FLAGS)

export async function secondaryCommand (argv: string[]): Promise<number> {
  const command = 'secondary'
  const { values } = parse(command, argv, SECONDARY_FLAGS)
  if (values.help) { process.stdout.write(SECONDARY_HELP); return 0 }
  const data = required(command, values, 'data')
  const mount = required(command, values, 'mount')
  const state = required(command, values, 'state')
  const listen = parseAddress(required(command, values, 'listen'), 'listen', true)
  const secretFile = required(command, values, 'secret-file')
  const fuse = fuseTransportOf(command, values.fuse)
  readSecret(secretFile)
  const srlBytes = srlSizeOf(command, values)
  const rds = rdsOf(command, values)
  let ibcUnregisteredTimeoutS: number | undefined
  if (typeof values['ibc-hold'] === 'string') {
    if (!/^\d+$/.test(values['ibc-hold'])) throw new ReplError('USAGE', `replicafs secondary: --ibc-hold ${values['ibc-hold']} is not a whole number of seconds`)
    ibcUnregisteredTimeoutS = Number(values['ibc-hold'])
  }
  const taskDir = typeof values['task-dir'] === 'string' ? path.resolve(values['task-dir']) : undefined
  const mountOptions = parseMountOptions(command, (values['mount-options'] as string[] | undefined) ?? [], true)
  const metrics = typeof values.metrics === 'string' ? parseAddress(values.metrics, 'metrics', true) : undefined
  const logFormat = logFormatOf(command, values)
  const tls = tlsOf(command, values)
  if (values.daemon === true && !isDaemonChild()) return detach(command, argv.filter((a) => a !== '--daemon'), state)
  return runForeground(command, state, (log) => runSecondary({ data, mount, state, srlBytes, listen, secretFile, rds, ibcUnregisteredTimeoutS, taskDir, mountOptions, fuse, syncExisting: values['sync-existing'] === true, metrics, tls }, log),
    `${path.resolve(data)} mounted read-only at ${path.resolve(mount)}`, logFormat)
}
