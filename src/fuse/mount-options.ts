/**
 * `-o` mount options, as other FUSE filesystems take them (sshfs, bindfs): comma-separated, the
 * flag repeatable, later options overriding earlier ones. Accepted are the per-mount flags a local
 * mount has (read-only, setuid, devices, exec, the atime policy); options replicafs always sets are
 * accepted as no-ops; everything else is refused by name, because it would change what the mount
 * promises (caching, ownership, synchronous writes). Nothing the user typed goes into libfuse's
 * option string: only the fixed names of the LIBFUSE table.
 *
 * libfuse 2.9 knows ro, nosuid/suid, nodev/dev, noexec/exec and noatime, and mounts as root with
 * nosuid,nodev unless told otherwise. The atime policies it does not know (strictatime,
 * nodiratime) are set right after mounting, by a bind remount that sets every per-mount flag at
 * once (FuseAdapter.mount).
 */
import { sys } from '../native'
import { ReplError } from '../errors'

export interface MountOptions {
  /** Tokens for libfuse's `-o` string, each a fixed name. */
  libfuse: string[]
  /** All per-mount flags for a bind remount after mounting; only when an option needs one. */
  remountFlags?: number
  /** The effective options, normalised (for the log). */
  text: string
}

type Atime = 'relatime' | 'noatime' | 'strictatime'

interface Wanted { ro: boolean, nosuid: boolean, nodev: boolean, noexec: boolean, atime: Atime, nodiratime: boolean }

/** Each accepted option and what it sets. */
const ACCEPTED: Record<string, (w: Wanted) => void> = {
  ro: (w) => { w.ro = true },
  rw: (w) => { w.ro = false },
  nosuid: (w) => { w.nosuid = true },
  suid: (w) => { w.nosuid = false },
  nodev: (w) => { w.nodev = true },
  dev: (w) => { w.nodev = false },
  noexec: (w) => { w.noexec = true },
  exec: (w) => { w.noexec = false },
  noatime: (w) => { w.atime = 'noatime' },
  atime: (w) => { w.atime = 'relatime' },
  relatime: (w) => { w.atime = 'relatime' },
  norelatime: (w) => { w.atime = 'strictatime' },
  strictatime: (w) => { w.atime = 'strictatime' },
  nodiratime: (w) => { w.nodiratime = true },
  diratime: (w) => { w.nodiratime = false },
  // Always in effect.
  defaults: () => {},
  allow_other: () => {},
  default_permissions: () => {}
}

/** Refused with a reason of their own; any other name is refused as unknown. */
const REFUSED: Record<string, string> = {
  sync: 'a write is acknowledged once it is in the SRL; an application that needs it on disk calls fsync (or run with --synchronous)',
  dirsync: 'a change is acknowledged once it is in the SRL; an application that needs it on disk calls fsync',
  allow_root: 'the mount is always allow_other, with the kernel checking permissions',
  kernel_cache: 'replicafs chooses its caching itself',
  auto_cache: 'replicafs chooses its caching itself',
  direct_io: 'replicafs chooses its caching itself',
  uid: 'the mount shows the data directory\'s owners',
  gid: 'the mount shows the data directory\'s owners',
  umask: 'the mount shows the data directory\'s modes'
}

/**
 * Parses the `-o` values of `command` (`readOnly`: the Secondary, whose mount is always read-only).
 * Throws USAGE naming the first option it refuses.
 */
export function parseMountOptions (command: string, values: string[], readOnly: boolean): MountOptions {
  const w: Wanted = { ro: readOnly, nosuid: true, nodev: true, noexec: false, atime: 'relatime', nodiratime: false }
  for (const raw of values.flatMap((v) => v.split(','))) {
    const opt = raw.trim()
    if (opt === '') continue
    const name = opt.includes('=') ? opt.slice(0, opt.indexOf('=')) : opt
    const set = Object.prototype.hasOwnProperty.call(ACCEPTED, opt) ? ACCEPTED[opt] : undefined
    if (set === undefined) {
      const why = Object.prototype.hasOwnProperty.call(REFUSED, name) ? REFUSED[name] : `supported: ${Object.keys(ACCEPTED).join(', ')}`
      throw new ReplError('USAGE', `replicafs ${command}: mount option ${name} is not supported (${why})`)
    }
    set(w)
    if (readOnly && !w.ro) throw new ReplError('USAGE', `replicafs ${command}: mount option rw is not supported (a Secondary's mount is read-only)`)
  }
  const libfuse: string[] = []
  if (w.ro && !readOnly) libfuse.push('ro') // the Secondary's constant options already have ro
  if (!w.nosuid) libfuse.push('suid')
  if (!w.nodev) libfuse.push('dev')
  if (w.noexec) libfuse.push('noexec')
  if (w.atime === 'noatime') libfuse.push('noatime')
  const text = [w.ro ? 'ro' : 'rw', w.nosuid ? 'nosuid' : 'suid', w.nodev ? 'nodev' : 'dev', w.noexec ? 'noexec' : 'exec', w.atime, ...(w.nodiratime ? ['nodiratime'] : [])].join(',')
  if (w.atime !== 'strictatime' && !w.nodiratime) return { libfuse, text }
  const remountFlags = (w.ro ? sys.MS_RDONLY : 0) | (w.nosuid ? sys.MS_NOSUID : 0) | (w.nodev ? sys.MS_NODEV : 0) |
    (w.noexec ? sys.MS_NOEXEC : 0) | (w.nodiratime ? sys.MS_NODIRATIME : 0) |
    (w.atime === 'noatime' ? sys.MS_NOATIME : w.atime === 'strictatime' ? sys.MS_STRICTATIME : sys.MS_RELATIME)
  return { libfuse, remountFlags, text }
}
