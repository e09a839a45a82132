/**
 * The FUSE mount: fuse-native with our bridge (src/native), serving the operations of
 * src/fuse/handlers.ts over an RVG, with this host's snapshots under MOUNT/.snapshots/
 * (src/fuse/snapshots.ts). It mounts, notices when the mount goes away by itself (a plain
 * `umount`), and unmounts.
 *
 * Mount options are built only from constants: fuse-native joins option values unescaped into
 * libfuse's `-o` string, so no user-supplied text (paths) ever goes into it. `big_writes` (128 KiB
 * writes instead of 4 KiB) and `use_ino` have no fuse-native option; a subclass appends them to
 * the option string fuse-native builds (ReplicafsFuse._fuseOptions), with the fixed names of the
 * `-o` options the user asked for (src/fuse/mount-options.ts).
 */
import { loadFuse, unmountFuse, sys, type FuseInstance } from '../native'
import { withSnapshots, type SnapshotSource } from './snapshots'
import { FuseHandlers, type AdapterRvg } from './handlers'
import type { MountOptions } from './mount-options'
import { ReplError } from '../errors'

export type { AdapterRvg } from './handlers'

/** Constant mount options (see the header comment on why nothing user-supplied goes here). */
const EXTRA_MOUNT_OPTIONS = 'big_writes,use_ino'
/**
 * The Secondary's mount changes under its readers (the apply loop), so the kernel must cache
 * nothing: direct_io (no page cache, even for files kept open), zero attribute, entry and negative
 * timeouts (every stat and lookup asks us), and `ro` so the kernel itself refuses writes.
 */
const READ_ONLY_MOUNT_OPTIONS = 'use_ino,ro,direct_io,attr_timeout=0,entry_timeout=0,negative_timeout=0'

export interface AdapterOptions {
  /** Serve the Secondary's mount (issue 3): every change answers EROFS. */
  readOnly?: boolean
  /** The mount options the user asked for (`-o`), already checked (src/fuse/mount-options.ts). */
  mountOptions?: MountOptions
  /**
   * Called once when the mount went away without unmount() (a plain `umount MOUNT`): the kernel
   * ended the FUSE session, so no op can arrive any more.
   */
  onGone?: () => void
}

/** The per-mount flags of a mount-options text (src/fuse/mount-options.ts), read-write. */
function perMountFlags (text: string): number {
  const bits: Record<string, number> = {
    nosuid: sys.MS_NOSUID, nodev: sys.MS_NODEV, noexec: sys.MS_NOEXEC, nodiratime: sys.MS_NODIRATIME,
    noatime: sys.MS_NOATIME, relatime: sys.MS_RELATIME, strictatime: sys.MS_STRICTATIME
  }
  return text.split(',').reduce((flags, opt) => flags | (bits[opt] ?? 0), 0)
}

/** The FUSE transports: `ll` (libfuse 3's low-level API, src/native/ll.c) and `compat` (fuse-native, libfuse 2). */
export type FuseTransport = 'll' | 'compat'
export const FUSE_TRANSPORTS: readonly FuseTransport[] = ['ll', 'compat']
/** A Secondary's mount without --fuse. */
export const DEFAULT_SECONDARY_TRANSPORT: FuseTransport = 'll'
/** A Primary's (and `replicafs passthrough`'s) mount without --fuse. */
export const DEFAULT_PRIMARY_TRANSPORT: FuseTransport = 'll'

/**
 * Requests the ll transport handed to the JavaScript thread since the mount, and the seconds they
 * spent in each step, summed: resolving their paths on a libfuse worker (and waiting at the
 * directory-rename gate), waiting for the JavaScript thread to take them, and the handler's work
 * until the answer. What an operation costs beyond these is the kernel's and the caller's.
 */
export interface ForwardedStats { count: number, resolveSeconds: number, queueSeconds: number, handleSeconds: number }

/** A transport's mount as the daemons use it (this fuse-native one, replicafs_ll's in ll-adapter.ts). */
export interface MountAdapter {
  /** This host's snapshots, shown read-only under MOUNT/.snapshots/ (set by the daemon). */
  snapshots: SnapshotSource | null
  /** Files and directories open through the mount now (status `openFiles`). */
  readonly openHandles: number
  /** Whether serve() can make it writable (else a role transfer to the Primary remounts). */
  readonly writable: boolean
  readonly transport: FuseTransport
  /** Whether the kernel reads files opened through it from their backing files itself (FUSE passthrough). */
  readonly passthrough: boolean
  /** Requests handed to the daemon's JavaScript thread so far and where their time went (ll only; status `fuse.forwarded`). */
  readonly forwarded?: ForwardedStats
  /** fsyncs the mount answered itself, with an fdatasync of the SRL's ring on a libfuse worker (ll only; status `fuse.logSyncs`). */
  readonly logSyncs?: number
  mount (): Promise<void>
  unmount (): Promise<void>
  serve (rvg: AdapterRvg, readOnly: boolean): void
  /** Readers of the tree wait from hold() to release() (a Secondary's apply slice); absent: they share the event loop with it. */
  hold?: () => void
  release?: () => void
  /** The daemon changed names in the tree (before release()): names and attributes the kernel keeps are dropped. */
  changed?: () => void
  /** The daemon changed files, no name (before release()): attributes the kernel keeps are dropped. */
  attrsChanged?: () => void
}

/**
 * Per-mount flags libfuse cannot set at mount (strictatime, nodiratime): all of them at once, on
 * the mount just made; if the kernel refuses, the mount goes and the error says why.
 */
export async function applyRemountFlags (adapter: MountAdapter, mnt: string, user: MountOptions | undefined): Promise<void> {
  if (user?.remountFlags === undefined) return
  try {
    sys.remountBind(mnt, user.remountFlags)
  } catch (err) {
    await adapter.unmount()
    throw new ReplError('FUSE_UNAVAILABLE', `cannot set the mount options of ${mnt}: ${(err as Error).message}`, { cause: err })
  }
}

export class FuseAdapter implements MountAdapter {
  readonly writable = true
  readonly transport = 'compat'
  readonly passthrough = false
  private fuse: FuseInstance | null = null
  private readonly handlers: FuseHandlers
  private readOnly: boolean
  /** unmount() was called: the end of the session is ours. */
  private unmounting = false
  /** The kernel ended the FUSE session: the mount is gone (by our unmount or anyone's). */
  private sessionEnded = false

  constructor (rvg: AdapterRvg, private readonly mnt: string, private readonly options: AdapterOptions = {}) {
    this.readOnly = options.readOnly === true
    this.handlers = new FuseHandlers(rvg, this.readOnly)
  }

  /** Files and directories open through the mount now (status `openFiles`). */
  get openHandles (): number { return this.handlers.openHandles }

  /** This host's snapshots, shown read-only under MOUNT/.snapshots/ (set by the daemon). */
  snapshots: SnapshotSource | null = null

  /** Mounts; resolves once the kernel has the filesystem. */
  async mount (): Promise<void> {
    const Fuse = loadFuse()
    const user = this.options.mountOptions
    const extra = [this.readOnly ? READ_ONLY_MOUNT_OPTIONS : EXTRA_MOUNT_OPTIONS, ...(user?.libfuse ?? [])].join(',')
    class ReplicafsFuse extends (Fuse as unknown as new (...args: unknown[]) => { _fuseOptions(): string }) {
      override _fuseOptions (): string {
        const base = super._fuseOptions()
        return base === '' ? '-o' + extra : base + ',' + extra
      }
    }
    const fuse = new ReplicafsFuse(this.mnt, withSnapshots(this.handlers.table(), () => this.snapshots), {
      fsname: 'replicafs',
      subtype: 'replicafs',
      allowOther: true,
      defaultPermissions: true,
      // No fuse-native timeouts. A mutation must not answer ETIMEDOUT and then happen anyway; and
      // since ops may wait for writes in flight, a timed-out open would leak its descriptor and a
      // timed-out read would later fill a buffer libfuse has taken back. Ops are bounded by the
      // data directory's disk, as on a local filesystem.
      timeout: false
    }) as unknown as FuseInstance
    fuse.onSessionEnd = () => {
      this.sessionEnded = true
      if (!this.unmounting) this.options.onGone?.()
    }
    await new Promise<void>((resolve, reject) => fuse.mount((err) => err ? reject(new ReplError('FUSE_UNAVAILABLE', `cannot mount FUSE at ${this.mnt}: ${err.message}`, { cause: err })) : resolve()))
    this.fuse = fuse
    await applyRemountFlags(this, this.mnt, user)
  }

  /**
   * Serves from another RVG, keeping the mount, its open files and the kernel's view (a role
   * transfer: src/daemon). Becoming writable remounts the filesystem read-write (its superblock,
   * then its per-mount flags, which keep nosuid/nodev and the user's -o flags); becoming read-only
   * needs no remount: every change is refused here with EROFS. The caching options stay those it
   * was mounted with (a former Secondary's: nothing cached, direct_io) until the next start.
   */
  serve (rvg: AdapterRvg, readOnly: boolean): void {
    if (this.readOnly && !readOnly && this.fuse !== null) {
      sys.remount(this.mnt, 0)
      sys.remountBind(this.mnt, perMountFlags(this.options.mountOptions?.text ?? 'nosuid,nodev,relatime'))
    }
    this.handlers.serve(rvg, readOnly)
    this.readOnly = readOnly
  }

  async unmount (): Promise<void> {
    const fuse = this.fuse
    this.fuse = null
    this.unmounting = true
    // After a plain `umount`, the mount point may hold someone else's mount by now: only a
    // session that is still ours is detached.
    if (fuse) await unmountFuse(fuse, this.mnt, { detach: !this.sessionEnded })
    this.handlers.closeAll()
  }
}
