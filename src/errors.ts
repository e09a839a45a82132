/**
 * Operating errors: expected conditions of the world, each with a stable code. Assertions
 * (node:assert) are for bugs and must crash; these are for users, disks and peers.
 * `errnoFor` is the one place a code becomes an errno, used only at the FUSE edge.
 */
import { constants as os } from 'node:os'

export type ReplErrorCode =
  | 'USAGE'            // a wrong flag or argument
  | 'DIR_MISSING'      // a directory that must exist does not
  | 'DIR_NOT_EMPTY'    // a mount point that must be empty is not
  | 'MOUNT_BUSY'       // the mount point is already a live mount
  | 'STATE_LOCKED'     // another daemon owns the state directory
  | 'DATA_LOCKED'      // another daemon serves the data directory
  | 'NOT_RUNNING'      // no daemon answers on the state directory's control socket
  | 'PERMISSION'       // the state directory or its control socket belongs to another user (the daemon's)
  | 'FORMAT_VERSION'   // an SRL or state written by another format version
  | 'LOG_CORRUPT'      // a record failed its checksum where no torn tail can be
  | 'SRL_FULL'         // the SRL cannot take a record even after releasing all it may
  | 'FUSE_UNAVAILABLE' // FUSE cannot be loaded or mounted
  | 'APPLY_FAILED'     // a logged record could not be applied to the data directory
  | 'PROTOCOL'         // a peer sent something the RLINK protocol does not allow
  | 'REFUSED'          // a peer refused the RLINK (version, RDS name, secret, divergence)
  | 'SECRET'           // the secret file is missing, unreadable or empty
  | 'TLS'              // a --tls-* file is missing, unreadable, mismatched or expired
  | 'NOT_CONNECTED'    // synchronous=fail and an RLINK is not connected
  | 'WRONG_ROLE'       // a command for another role (or a passthrough, which has no SRL)
  | 'NOT_FOUND'        // no snapshot or RLINK of that name
  | 'EXISTS'           // a snapshot of that name exists already
  | 'BUSY'             // refused while the daemon serves (a Secondary's restore while it replicates)
  | 'ADDRESS_IN_USE'   // the address to listen on is taken
  | 'UNSUPPORTED'      // the filesystem lacks what the feature needs (file handles)
  | 'SNAPSHOT_INVALID' // a snapshot whose store was damaged: it can be deleted, not used
  | 'VERIFY_FAILED'    // an online verify could not run to its end (the Secondary could not, or it was interrupted)
  | 'PRIMARY_CONNECTED' // takeover while the Primary is connected (a takeover is for a lost Primary)
  | 'NOT_REPLICATED'   // takeover on a Secondary that never replicated from a Primary
  | 'NOT_TAKEN_OVER'   // failback on a Primary no host took over from
  | 'SPLIT_BRAIN'      // failback without --discard-local while both sides changed the same paths
  | 'INCONSISTENT'     // takeover on a Secondary whose tree is not a consistent copy (synchronizing, diverged)

/** IBC errors, named after VVR's (the CLI prints the name first; the control socket carries it). */
export type IbcErrorCode =
  | 'EIBC_NO_APPLICATION'    // the name is not registered on this host (or the key is wrong)
  | 'EIBC_IBC_PENDING'       // a delivery or an unfreeze is pending for the name
  | 'EIBC_DUP_APPLICATION'   // the name is already registered
  | 'EIBC_MAX_REGISTRATIONS' // the RVG has the most registrations it may have
  | 'EIBC_INVALID_NAME'      // empty, too long, or characters outside [A-Za-z0-9._-]
  | 'EIBC_INVALID_ARGUMENT'  // a bad timeout or flag
  | 'EIBC_MSG_LENGTH'        // the message is longer than IBC_MESSAGE_BYTES_MAX
  | 'EIBC_NO_MESSAGE'        // receive timed out with no message
  | 'EIBC_NOT_FROZEN'        // unfreeze when the name has not frozen the Secondary
  | 'EIBC_WRONG_ROLE'        // send on a Secondary, receive/unfreeze on a Primary
  | 'EIBC_TASK_FAILED'       // a script of `ibc run` failed

/** Every code an operating error can carry: the one family. */
export type ErrorCode = ReplErrorCode | IbcErrorCode

export class ReplError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'ReplError'
  }
}

/** An IBC error: a ReplError whose code is one of VVR's EIBC_* names. */
export class IbcError extends ReplError {
  declare readonly code: IbcErrorCode
  constructor (code: IbcErrorCode, message: string) {
    super(code, message)
    this.name = 'IbcError'
  }
}

/**
 * An error the FUSE edge answers with errno `code` (ENOTEMPTY, EROFS, ...): a refusal found before
 * anything is journaled, shaped like Node's fs errors, so errnoFor() maps it like theirs.
 */
export function errnoError (code: keyof typeof os.errno, message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: ${message}`)
  err.code = code
  err.errno = -os.errno[code]
  return err
}

export function isReplError (err: unknown, code?: ErrorCode): err is ReplError {
  return err instanceof ReplError && (code === undefined || err.code === code)
}

const ERRNO_FOR_CODE: Partial<Record<ErrorCode, number>> = {
  SRL_FULL: os.errno.ENOSPC,
  LOG_CORRUPT: os.errno.EIO,
  APPLY_FAILED: os.errno.EIO,
  FORMAT_VERSION: os.errno.EIO
}

/** The negative errno a FUSE reply carries for an error thrown by the RVG or by Node's fs. */
/**
 * Errors by code since the daemon started (`replicafs_errors_total{code}`): operating errors
 * answered through the mount or the control socket, RLINK refusals sent, and the filesystem's
 * own failures of the kind an administrator acts on (EIO, ENOSPC, EDQUOT, EROFS). The ordinary
 * answers of POSIX (ENOENT, EEXIST, ENOTEMPTY, ...) are not errors of the daemon and are not counted.
 */
export const errorCounts = new Map<string, number>()
const COUNTED_ERRNOS = new Set(['EIO', 'ENOSPC', 'EDQUOT', 'EROFS'])
export function countError (code: string): void {
  errorCounts.set(code, (errorCounts.get(code) ?? 0) + 1)
}

export function errnoFor (err: unknown): number {
  if (err instanceof ReplError) {
    countError(err.code)
    return -(ERRNO_FOR_CODE[err.code] ?? os.errno.EIO)
  }
  const code = (err as NodeJS.ErrnoException | null)?.code
  if (typeof code === 'string' && COUNTED_ERRNOS.has(code)) countError(code)
  const e = err as NodeJS.ErrnoException
  if (e && typeof e.errno === 'number' && e.errno < 0) return e.errno
  if (e && typeof e.code === 'string' && e.code in os.errno) {
    return -(os.errno as Record<string, number>)[e.code]
  }
  return -os.errno.EIO
}
