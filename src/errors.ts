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
  | 'FORMAT_VERSION'   // an SRL or state written by another format version
  | 'LOG_CORRUPT'      // a record failed its checksum where no torn tail can be
  | 'SRL_FULL'         // the SRL cannot take a record even after releasing all it may
  | 'FUSE_UNAVAILABLE' // FUSE cannot be loaded or mounted
  | 'APPLY_FAILED'     // a logged record could not be applied to the data directory
  | 'PROTOCOL'         // a peer sent something the RLINK protocol does not allow
  | 'REFUSED'          // a peer refused the RLINK (version, RDS name, secret, divergence)
  | 'SECRET'           // the secret file is missing, unreadable or empty
  | 'NOT_CONNECTED'    // synchronous=fail and an RLINK is not connected

export class ReplError extends Error {
  readonly code: ReplErrorCode
  constructor (code: ReplErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'ReplError'
  }
}

export function isReplError (err: unknown, code?: ReplErrorCode): err is ReplError {
  return err instanceof ReplError && (code === undefined || err.code === code)
}

const ERRNO_FOR_CODE: Partial<Record<ReplErrorCode, number>> = {
  SRL_FULL: os.errno.ENOSPC,
  LOG_CORRUPT: os.errno.EIO,
  APPLY_FAILED: os.errno.EIO,
  FORMAT_VERSION: os.errno.EIO
}

/** The negative errno a FUSE reply carries for an error thrown by the RVG or by Node's fs. */
export function errnoFor (err: unknown): number {
  if (err instanceof ReplError) return -(ERRNO_FOR_CODE[err.code] ?? os.errno.EIO)
  const e = err as NodeJS.ErrnoException
  if (e && typeof e.errno === 'number' && e.errno < 0) return e.errno
  if (e && typeof e.code === 'string' && e.code in os.errno) {
    return -(os.errno as Record<string, number>)[e.code]
  }
  return -os.errno.EIO
}
