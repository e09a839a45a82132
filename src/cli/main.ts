/**
 * The replicafs command line. One file per subcommand; every user mistake is one line on stderr
 * and a non-zero exit, never a stack trace (unexpected failures print one too, plus where to look).
 */
// Each command's module is loaded when it runs: `status`, `ibc` and `stop`, which scripts call
// often, do not load the daemon, FUSE, LevelDB and the native addon (a third of their time).
import { ReplError } from '../errors'
import { RemoteError } from '../control'

const HELP = `usage: replicafs COMMAND [flags]

Filesystem-level replication in the manner of Veritas Volume Replicator.

commands:
  primary       run the Primary: a FUSE mount that journals every change into the SRL and replicates it
  secondary     run a Secondary: receive the Primary's updates, apply them in order, mount read-only
  pause         pause replication to a Secondary (run on the Primary)
  resume        resume paused replication
  set           change an RLINK attribute of the running Primary: bandwidth-limit
  ibc           In-Band Control messages: register, send, receive, unfreeze, unregister, status, run
  ibc-send      flush the Primary and send an IBC message (also bin/ibc-send)
  snapshot      copy-on-write snapshots: create, list, delete, restore (MOUNT/.snapshots/NAME)
  stop          unmount cleanly and end a daemon
  sync          make every change so far durable in the SRL (syncfs on a FUSE mount cannot)
  verify        compare the Primary's tree with a Secondary's, online (--repair resends what differs)
  migrate       move the Primary role to the Secondary, losing nothing (run on the Primary)
  takeover      make a Secondary the Primary when its Primary is lost
  failback      make a Primary that was taken over a Secondary of the host that took over
  status        role, mount, SRL and RLINK figures of a running daemon
  stats         live rates and lag every interval, as VVR's vrstat
  srl-dump      print the records retained in a stopped daemon's SRL
  demo          a local Primary, a workload, a crash and its recovery, step by step
  passthrough   a bare FUSE passthrough with no SRL (the benchmark baseline)

Run \`replicafs COMMAND --help\` for a command's flags.
`

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP)
      return command === undefined ? 2 : 0
    case 'primary': return (await import('./primary')).primaryCommand(rest, true)
    case 'passthrough': return (await import('./primary')).primaryCommand(rest, false)
    case 'secondary': return (await import('./secondary')).secondaryCommand(rest)
    case 'ibc': return (await import('./ibc')).ibcCommand(rest)
    case 'snapshot': return (await import('./snapshot')).snapshotCommand(rest)
    case 'ibc-send': return (await import('./ibc')).ibcSendCommand(rest)
    case 'pause': return (await import('./pause')).pauseCommand('pause', rest)
    case 'resume': return (await import('./pause')).pauseCommand('resume', rest)
    case 'set': return (await import('./set')).setCommand(rest)
    case 'stop': return (await import('./stop')).stopCommand(rest)
    case 'status': return (await import('./status')).statusCommand(rest)
    case 'stats': return (await import('./stats')).statsCommand(rest)
    case 'srl-dump': return (await import('./srl-dump')).dumpCommand(rest)
    case 'demo': return (await import('./demo')).demoCommand(rest)
    case 'sync': return (await import('./sync')).syncCommand(rest)
    case 'verify': return (await import('./verify')).verifyCommand(rest)
    case 'takeover': return (await import('./takeover')).takeoverCommand(rest)
    case 'failback': return (await import('./failback')).failbackCommand(rest)
    case 'migrate': return (await import('./migrate')).migrateCommand(rest)
    default:
      throw new ReplError('USAGE', `replicafs: unknown command ${command} (see replicafs --help)`)
  }
}

export function run (argv: string[] = process.argv.slice(2)): void {
  main(argv).then((code) => { process.exitCode = code }, (err: Error) => {
    if (err instanceof ReplError) {
      const msg = err.message.startsWith('replicafs') ? err.message : `replicafs: ${err.code.startsWith('EIBC_') ? `${err.code}: ` : ''}${err.message}`
      process.stderr.write(msg + '\n')
    } else if (err instanceof RemoteError) {
      // The daemon's answer: already one line. IBC failures lead with their VVR error name.
      process.stderr.write(`replicafs: ${err.code.startsWith('EIBC_') ? `${err.code}: ` : ''}${err.message}\n`)
      if (err.detail !== undefined) process.stderr.write(`--- output ---\n${err.detail.replace(/\n?$/, '\n')}`)
      if (err.exitCode !== undefined && err.exitCode > 0 && err.exitCode < 256) { process.exitCode = err.exitCode; return }
    } else if (isPermissionError(err)) {
      // A file of another user's (root's) state, read before any control request (the control
      // socket's own refusal is PERMISSION, from src/control): one line naming it.
      process.stderr.write(`replicafs: permission denied: ${err.path ?? err.message}\n`)
    } else {
      process.stderr.write(`replicafs: unexpected error: ${err.message}\n`)
      if (process.env.REPLICAFS_DEBUG) process.stderr.write(String(err.stack) + '\n')
    }
    process.exitCode = 1
  })
}

function isPermissionError (err: Error): err is NodeJS.ErrnoException {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'EACCES' || code === 'EPERM'
}
