/**
 * What a daemon checks and holds on its host before it serves anything: its directories (the
 * data directory and the mount point exist and are apart; the state directory is its own), the
 * data directory's lock, the mount point (a stale mount of a killed daemon is cleaned up, a live
 * one refused), and `daemon.json`, which tells offline tools what the last daemon served.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { sys } from '../native'
import { ReplError } from '../errors'
import type { Logger } from './lifecycle'

function requireDir (dir: string, what: string): string {
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (err) {
    // A mount point whose FUSE server was killed answers ENOTCONN: it exists; the caller cleans it up.
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN') return path.join(fs.realpathSync(path.dirname(path.resolve(dir))), path.basename(dir))
    if (code === 'ENOENT') throw new ReplError('DIR_MISSING', `${what} ${dir} does not exist`)
    throw new ReplError('DIR_MISSING', `${what} ${dir} cannot be used: ${(err as Error).message}`)
  }
  if (!st.isDirectory()) throw new ReplError('DIR_MISSING', `${what} ${dir} is not a directory`)
  return fs.realpathSync(dir)
}


/** Unescapes the octal escapes /proc/mounts uses for spaces, tabs, newlines and backslashes. */
function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

export function mountEntry (mnt: string): { source: string, type: string } | null {
  // The last entry for a path is the mount on top (what a process there sees).
  let found: { source: string, type: string } | null = null
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [source, target, type] = line.split(' ')
    if (target !== undefined && unescapeMount(target) === mnt) found = { source, type }
  }
  return found
}

/** Whether a FUSE mount's server is gone (the kernel answers ENOTCONN). Never blocks on a live one for long. */
async function isStale (mnt: string): Promise<boolean> {
  const probe = fs.promises.stat(mnt).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN')
  const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000).unref())
  return Promise.race([probe, timeout])
}

/** Makes sure the mount point is usable: cleans a stale replicafs mount, refuses a live one. */
export async function prepareMountPoint (mnt: string, log: Logger): Promise<void> {
  const entry = mountEntry(mnt)
  if (entry) {
    if (entry.type.startsWith('fuse') && await isStale(mnt)) {
      log(`cleaning up the stale mount at ${mnt} left by a daemon that did not stop cleanly`)
      sys.umount2(mnt, sys.MNT_DETACH)
    } else {
      throw new ReplError('MOUNT_BUSY', `mount point ${mnt} is already mounted (${entry.type})`)
    }
  }
  if (fs.readdirSync(mnt).length > 0) throw new ReplError('DIR_NOT_EMPTY', `mount point ${mnt} is not empty`)
}

function lockDir (): string {
  for (const dir of ['/run/replicafs', path.join(os.tmpdir(), 'replicafs-locks')]) {
    try { fs.mkdirSync(dir, { recursive: true, mode: 0o700 }); fs.accessSync(dir, fs.constants.W_OK); return dir } catch {}
  }
  throw new ReplError('DATA_LOCKED', 'no writable directory for data-directory locks (/run/replicafs)')
}

/** Whether a process is alive. A zombie (killed, not yet reaped by its parent) is not. */
export function alive (pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/**
 * A data directory is served by at most one daemon. The lock is a pid file named by the data
 * directory's real path; a dead pid's file is taken over (kill -9 leaves one behind).
 */
export function lockDataDir (data: string): () => void {
  const file = path.join(lockDir(), crypto.createHash('sha256').update(data).digest('hex').slice(0, 32) + '.pid')
  // The pid is written to a private file that link() then puts in place atomically, so no other
  // daemon ever reads a half-written lock.
  const tmp = `${file}.${process.pid}`
  fs.writeFileSync(tmp, `${process.pid}\n${data}\n`, { mode: 0o600 })
  try {
    for (let tries = 0; tries < 3; tries++) {
      try {
        fs.linkSync(tmp, file)
        return () => { try { if (fs.readFileSync(file, 'utf8').startsWith(`${process.pid}\n`)) fs.unlinkSync(file) } catch {} }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        let pid = NaN
        try { pid = parseInt(fs.readFileSync(file, 'utf8'), 10) } catch { continue } // removed meanwhile: retry
        if (pid > 0 && pid !== process.pid && alive(pid)) throw new ReplError('DATA_LOCKED', `data directory ${data} is in use by another replicafs daemon (pid ${pid})`)
        fs.rmSync(file, { force: true })
      }
    }
  } finally {
    fs.rmSync(tmp, { force: true })
  }
  throw new ReplError('DATA_LOCKED', `cannot lock data directory ${data}`)
}

/** What the last daemon on a state directory served: offline tools (snapshot restore) read it. */
export interface DaemonInfo { role: 'primary' | 'secondary', data: string, mount: string }

export function writeDaemonInfo (state: string, info: DaemonInfo): void {
  const file = path.join(state, 'daemon.json')
  fs.writeFileSync(file + '.tmp', JSON.stringify(info) + '\n', { mode: 0o600 })
  fs.renameSync(file + '.tmp', file)
}

export function readDaemonInfo (state: string): DaemonInfo | null {
  try { return JSON.parse(fs.readFileSync(path.join(state, 'daemon.json'), 'utf8')) as DaemonInfo } catch { return null }
}

/** The checks both roles start with: the data directory and the mount point exist and are apart. */
export function checkDirs (cfg: { data: string, mount: string }): { data: string, mount: string } {
  const data = requireDir(cfg.data, 'data directory')
  const mount = requireDir(cfg.mount, 'mount point')
  if (data === mount) throw new ReplError('USAGE', 'the data directory and the mount point must differ')
  if (mount.startsWith(data + '/') || data.startsWith(mount + '/')) throw new ReplError('USAGE', `the data directory ${data} and the mount point ${mount} must not contain each other`)
  return { data, mount }
}

/**
 * Creates the state directory, the daemon's alone: it and everything in it owner-only. The data
 * path runs with umask 0 (set here: modes arrive already masked by the caller's umask, and are
 * applied exactly), so what the daemon writes under STATE carries an explicit 0600/0700, and what
 * it does not create itself (LevelDB's files, 0644 whatever we ask) is masked by a default ACL
 * of owner-only on STATE and every directory in it: a default ACL replaces the umask for what is
 * created below it (acl(5)). Where the filesystem has no ACLs the 0700 directories still close it.
 * A state directory an older replicafs left (daemon.pid 0666, srl/state 0777) is tightened once
 * here: every entry outside snapshots/ (whose store writes 0600/0700 itself, and whose keep/
 * entries are hard links of data files, whose modes are not ours to change).
 */
export function prepareState (dir: string): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const state = fs.realpathSync(dir)
  fs.chmodSync(state, 0o700)
  process.umask(0)
  const acl = setOwnerOnlyDefaultAcl(state)
  for (const e of fs.readdirSync(state, { withFileTypes: true })) {
    if (e.name !== 'snapshots') tighten(path.join(state, e.name), e, acl)
  }
  return state
}

/**
 * system.posix_acl_default with owner rwx and nothing for the group and others (the xattr's
 * layout: version 2, then {tag u16, perm u16, id u32} little-endian; acl(5), linux/posix_acl_xattr.h).
 */
const OWNER_ONLY_DEFAULT_ACL = (() => {
  const entries: Array<[number, number]> = [[0x01 /* USER_OBJ */, 7], [0x04 /* GROUP_OBJ */, 0], [0x20 /* OTHER */, 0]]
  const b = Buffer.alloc(4 + entries.length * 8)
  b.writeUInt32LE(2, 0)
  entries.forEach(([tag, perm], i) => {
    b.writeUInt16LE(tag, 4 + i * 8)
    b.writeUInt16LE(perm, 6 + i * 8)
    b.writeUInt32LE(0xffffffff, 8 + i * 8)
  })
  return b
})()

/** Gives `dir` the owner-only default ACL; false where the filesystem has no ACLs. */
function setOwnerOnlyDefaultAcl (dir: string): boolean {
  try {
    sys.lsetxattr(dir, 'system.posix_acl_default', OWNER_ONLY_DEFAULT_ACL, 0)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') return false
    throw err
  }
}

/** Drops the group and other bits of `p` and below (directories also get the default ACL). */
function tighten (p: string, e: fs.Dirent, acl: boolean): void {
  if (e.isSymbolicLink()) return
  const st = fs.lstatSync(p)
  if ((st.mode & 0o077) !== 0 && (e.isDirectory() || st.nlink === 1)) fs.chmodSync(p, st.mode & 0o7700)
  if (!e.isDirectory()) return
  if (acl) setOwnerOnlyDefaultAcl(p)
  for (const c of fs.readdirSync(p, { withFileTypes: true })) tighten(path.join(p, c.name), c, acl)
}
