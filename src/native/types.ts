/**
 * The shapes of the native layer: the syscall addon (replicafs_sys), and fuse-native as our bridge
 * and handlers (src/native/fuse.ts, fuse-handlers.ts) present it.
 */

/** Node-fs-shaped error thrown by every `sys` function. */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

/** A mount served by replicafs_ll (opaque). */
export type LlSession = object & { readonly __llSession: unique symbol };

/**
 * replicafs_ll (src/native/ll.c): a FUSE file system on libfuse 3's low-level API, compiled in.
 * For now it serves a directory read-only, every request answered in C on libfuse's threads.
 */
export interface LlAddon {
  /**
   * Mounts `root` read-only at `mountpoint` (mount(2): root only) with libfuse `options` (-o, comma
   * separated) and entry/attribute timeouts of `timeoutSeconds`, and starts its multi-threaded loop.
   * `flags`: LL_PASSTHROUGH asks for FUSE passthrough (Linux 6.9+: the kernel reads open files from
   * their backing files itself; refused, reads are served as without it). Throws a Node-fs-shaped
   * error (ENOENT: no root; EPERM; ENODEV: no /dev/fuse).
   */
  mount(root: string, mountpoint: string, options: string, timeoutSeconds: number, flags: number): LlSession;
  /**
   * The same, with the root's entry `forwardName` and everything under it served by `handler` on
   * the JavaScript thread (a Secondary's `/.snapshots`): each request comes as an LlRequest and is
   * answered by one reply*() call with its id (a late answer, after unmount, returns false). The
   * handler also hears `{ op: 'gone' }` when the kernel ends the mount by itself (a plain umount).
   */
  mount(root: string, mountpoint: string, options: string, timeoutSeconds: number, flags: number, forwardName: string, handler: (req: LlRequest) => void): LlSession;
  /** Unmounts (lazily: a busy mount goes with its last user), waits for the loop to end, frees its inodes. Returns the loop's result (0). */
  unmount(session: LlSession): number;
  /**
   * Whether the kernel granted FUSE passthrough; READ requests served (not read by the kernel from a
   * backing file); requests waiting for hold() or writes in flight; files and directories open; whether
   * the kernel has epochs; the largest write a journaled mount takes; changes waiting at the gate a
   * directory's rename holds (a journaled mount).
   */
  stats(session: LlSession): { passthrough: boolean, reads: number, waiting: number, opens: number, epoch: boolean, maxWrite: number, gateWaiting: number, forwarded: number, resolveNs: number, queueNs: number, handleNs: number, spins: number, spinHits: number, spinYields: number, spinUs: number, invalidated: number, inodeFds: number, inodeFdMax: number, refusedEmfile: number, logSyncs: number };
  /**
   * The daemon changed names in the tree: on a volatile mount every name the kernel keeps is
   * dropped (FUSE_NOTIFY_INC_EPOCH, Linux 6.16+; a lookup begun before is invalid after), and the
   * attributes invalAttrs() drops. Call it before release(). False: the kernel has no epochs (a
   * volatile mount then keeps no name at all).
   */
  changed(session: LlSession): boolean;
  /**
   * The daemon changed the tree (a volatile mount's): the kernel drops the attributes of every
   * inode it was given them for since the last call (it keeps them 1 s otherwise). Call it before
   * release(). Returns how many inodes.
   */
  invalAttrs(session: LlSession): number;
  /**
   * Waits for the requests reading the tree to finish and keeps new ones waiting (`waiting` in
   * stats) until release(): a change made in between (a Secondary's apply slice) is never seen half
   * made. Reads through FUSE passthrough do not wait (the kernel serves them). Never touch the
   * mount from this process in between: its request would wait for itself.
   */
  hold(session: LlSession): void;
  release(session: LlSession): void;
  /** Answers a forwarded request with an errno, or 0: done (release and releasedir: always 0). */
  replyErr(session: LlSession, id: number, errno: number): boolean;
  /** Answers a lookup: `node` is the handler's id for the entry (an integer >= 1), `attributes` as LL_STAT_FIELDS. */
  replyEntry(session: LlSession, id: number, node: number, attributes: Float64Array): boolean;
  /** Answers a getattr. */
  replyAttr(session: LlSession, id: number, attributes: Float64Array): boolean;
  /** Answers an open or opendir with the handler's handle (`fh` of the later requests). */
  replyOpen(session: LlSession, id: number, fh: number): boolean;
  /** Answers a read, readlink, getxattr or listxattr with bytes (an xattr request of size 0 gets their length; more than its size: ERANGE). */
  replyBuf(session: LlSession, id: number, data: Buffer): boolean;
  /**
   * Answers a readdir with entries from its offset, each with the offset that follows it (the next
   * readdir's; increasing), as many as fit; '.' and '..' with node 0. Returns how many were sent:
   * each sent entry but '.' and '..' is a lookup of its node (the kernel forgets it later).
   */
  replyDir(session: LlSession, id: number, names: string[], nodes: number[], offsets: number[], attributes: Float64Array): number | false;
  /** A change is made: its answer is the entry it made (mknod, mkdir, symlink, link), looked up in C, or the node's attributes (setattr). */
  replyLookup(session: LlSession, id: number): boolean;
  /** A create is made and opened as handle `fh`. False: not answered (close `fh`). */
  replyCreate(session: LlSession, id: number, fh: number): boolean;
  /** A write's answer: the bytes written. */
  replyWrite(session: LlSession, id: number, bytes: number): boolean;
  /**
   * Inode `ino` of the data directory has writes answered and not applied (busy) or no more: a stat,
   * lookup or read of it waits meanwhile. pending(session, -1, false): none has (nothing will be applied).
   */
  pending(session: LlSession, ino: number, busy: boolean): void;
  /**
   * fsync and fsyncdir on this journaled mount make the SRL durable in the addon (an fdatasync of
   * the ring `fd`, which it copies, on the worker that took the request): `published` is the SRL's
   * [last sequence number, head, closed] (Srl.published), read before each fdatasync as what it
   * covers. The handler hears { op: 'synced' } after such syncs and takes the figures with
   * logSynced(). logSync(session, -1, null): fsync goes to the handler again (do it before the SRL
   * closes or another RVG is served).
   */
  logSync(session: LlSession, fd: number, published: Float64Array | null): void;
  /** The newest sync the addon made (seq, head), and the errno of one that failed (0: none; every fsync since answers EIO). */
  logSynced(session: LlSession): { seq: number, head: number, errno: number };
}

/**
 * A request on the forwarded subtree (replicafs_ll). `node`: the handler's id of the inode it is
 * about (0: the mount's root, for the lookup of the forwarded name); `name` for lookup and
 * getxattr; `size` for read, readdir and the xattr calls (0: the length is asked); `offset` for
 * read and readdir; `fh` the handle replyOpen gave; `flags` the open flags. Notices, answered by
 * nothing: 'forget' (the kernel drops `size` lookups of `node`: a successful replyEntry counts
 * one, replyDir one per entry sent), 'gone', and 'synced' (logSync).
 */
export interface LlRequest {
  op: 'lookup' | 'getattr' | 'readlink' | 'opendir' | 'readdir' | 'releasedir' | 'open' | 'read' | 'release' | 'getxattr' | 'listxattr' | 'gone' | 'forget' | 'synced' | LlChangeOp
  id: number
  node: number
  name?: string
  size: number
  offset: number
  fh: number
  flags: number
}

/**
 * A journaled mount's changes (LL_JOURNALED), on the data directory's nodes, named by path
 * ("/" the root, "/a/b"): setattr (`valid` the FUSE_SET_ATTR_* bits; `mode`, `size`, `toUid`,
 * `toGid`, `atime`/`atimeNs`, `mtime`/`mtimeNs`), mknod (`mode`, `rdev`), mkdir (`mode`), symlink
 * (`name` the target), unlink, rmdir, rename (to `path2`), link (`path` the node, `path2` the new
 * name), create (`mode`, `flags`), wopen (`flags`: an open to write), write (`data` at `offset`,
 * `fh`), wread/wrelease (`fh`: a handle of wopen or create), fsync/fsyncdir (`datasync`; `fh` or
 * 0), setxattr (`name`, `data`, `flags`), removexattr (`name`), fallocate (`flags` the mode,
 * `offset`, `size` the length). `uid`/`gid`: the caller's.
 */
export type LlChangeOp = 'setattr' | 'mknod' | 'mkdir' | 'symlink' | 'unlink' | 'rmdir' | 'rename' | 'link' | 'create' | 'wopen' | 'write' | 'wread' | 'wrelease' |
  'fsync' | 'fsyncdir' | 'setxattr' | 'removexattr' | 'fallocate'

export interface LlChange extends LlRequest {
  op: LlChangeOp
  path: string
  path2?: string
  data?: Buffer
  mode: number
  rdev: number
  uid: number
  gid: number
  valid: number
  atime: number
  atimeNs: number
  mtime: number
  mtimeNs: number
  datasync: number
  toUid: number
  toGid: number
}

/**
 * replicafs_ll mount flag: a journaled mount (a Primary's): every change is forwarded to the
 * handler (LlChange), which journals and applies it and answers; reads stay in C, waiting for the
 * writes in flight the handler names (pending()). Needs a handler; not with LL_VOLATILE.
 */
export const LL_JOURNALED = 4

/** replicafs_ll mount flag: FUSE passthrough for opens. */
export const LL_PASSTHROUGH = 1
/**
 * replicafs_ll mount flag: the tree changes under the mount (a Secondary's apply): no attributes
 * cached, names from LOOKUP kept `timeoutSeconds` only where the kernel has epochs (changed()),
 * none from READDIRPLUS, no page cache kept across opens, direct I/O without passthrough, no
 * cached listings.
 */
export const LL_VOLATILE = 2

export interface SysAddon {
  lgetxattr(path: string, name: string): Buffer;
  lsetxattr(path: string, name: string, value: Buffer, flags: number): void;
  llistxattr(path: string): string[];
  lremovexattr(path: string, name: string): void;
  fgetxattr(fd: number, name: string): Buffer;
  fsetxattr(fd: number, name: string, value: Buffer, flags: number): void;
  flistxattr(fd: number): string[];
  fremovexattr(fd: number, name: string): void;
  /** mode includes the file type bits (S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK); dev is a makedev() value. */
  mknod(path: string, mode: number, dev: number): void;
  /** nsec may be UTIME_NOW / UTIME_OMIT. */
  utimensat(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, nofollow: boolean): void;
  futimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** lstat times: [atimeSec, atimeNsec, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec]. */
  lstatNs(path: string): [number, number, number, number, number, number];
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  ficlone(destFd: number, srcFd: number): void;
  ficlonerange(destFd: number, srcFd: number, srcOffset: number, length: number, destOffset: number): void;
  syncfs(fd: number): void;
  /** The unique id of the mount `path` is on (statx STATX_MNT_ID_UNIQUE), or null before Linux 6.8. */
  mountId(path: string): string | null;
  /**
   * Asynchronous (libuv threadpool): for each write in `jobs` (6 numbers each: srcOffset, destFd,
   * destOffset, length, mtimeSec, mtimeNsec), in order, copies `length` bytes from srcFd to destFd
   * and sets destFd's mtime. Mode 0: copy_file_range (pread/pwrite where it cannot); mode 1:
   * pread/pwrite always. Calls back (-1, 0) when all are done, or (index, errno) of the first that
   * failed.
   */
  applyWrites(srcFd: number, jobs: Float64Array, mode: number, callback: (failedIndex: number, errno: number) => void): void;
  /** The same on the calling thread: -1, or failedIndex * 65536 + errno. */
  applyWrites(srcFd: number, jobs: Float64Array, mode: number): number;
  /**
   * A Buffer over a shared read-write mapping of the file's first `length` bytes: stores into it
   * are stores into the page cache (they survive the process; fdatasync(fd) writes them back).
   * The file must stay at least `length` long while mapped.
   */
  mapShared(fd: number, length: number): Buffer;
  /** Detaches a mapShared() buffer from its file now (private zero pages replace it until it is collected). */
  unmapShared(buf: Buffer): void;
  /**
   * posix_fadvise: 'random' (no readahead on this open file: reads bring in page-sized folios),
   * 'dontneed' (drop the range's clean pages), 'willneed' (read the range in now, page-sized
   * folios), 'normal'. length 0: to the end of the file.
   */
  fadvise(fd: number, offset: number, length: number, advice: 'random' | 'dontneed' | 'willneed' | 'normal'): void;
  /** CRC-32C of buf chained from prev (0 to start), three streams at once; absent without SSE4.2. */
  crc32c?: (buf: Uint8Array, prev?: number) => number;
  /** dlopen(path, RTLD_NOW | RTLD_GLOBAL); never closed. Throws with dlerror() text. */
  dlopenGlobal(path: string): void;
  umount2(path: string, flags: number): void;
  /** mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags): sets the mount's per-mount flags to exactly `flags`. */
  remountBind(path: string, flags: number): void;
  /** mount(NULL, path, NULL, MS_REMOUNT | flags): the filesystem's own flags (MS_RDONLY or not). */
  remount(path: string, flags: number): void;
  /** CLOCK_REALTIME_COARSE as [seconds, nanoseconds]: the clock inode times are stamped from. */
  clockRealtimeCoarse(): [number, number];
  /**
   * name_to_handle_at(path, 0): the file handle of the inode `path` names (not
   * following a final symlink), as struct file_handle laid out by the kernel: u32 handle_bytes,
   * i32 handle_type, then the opaque bytes. Stable across renames; used by src/snapshot.
   */
  nameToHandle(path: string): Buffer;
  /**
   * open_by_handle_at: opens the inode a handle from nameToHandle names, with `flags` (O_CLOEXEC
   * is added). `mount` is an fd on, or a path in, the handle's filesystem (opened O_RDONLY and
   * closed here when a path). Needs CAP_DAC_READ_SEARCH. ESTALE when the inode is gone.
   */
  openByHandle(mount: number | string, handle: Buffer, flags: number): number;
  /**
   * Lists a directory (opened with O_NOATIME where allowed) as a flat array
   * [name, ino, d_type, handle | null, ...], without . and ..; handles only with `withHandles`.
   */
  readdirEntries(path: string, withHandles?: boolean): Array<string | number | Buffer | null>;
  /** Starts the kernel's read-ahead of the first `bytes` of each regular file `names` of `dir`; returns how many it started. */
  willNeed(dir: string, names: string[], bytes: number): number;
  /**
   * On libuv's pool: the XXH3-128 hash of each `chunkBytes` of the regular file at `path` (16 bytes
   * each, as src/sync/hash.ts chunkHash), and [ino, size, mtimeNs, ctimeNs] when the read began
   * (ctimeNs -1n: it changed while read). err: a Node-fs-shaped error (ENOENT, EINVAL: not a regular file).
   */
  hashFile(path: string, chunkBytes: number, callback: (err: NodeJS.ErrnoException | null, hashes: Buffer | null, identity: [bigint, bigint, bigint, bigint] | null) => void): void;
  /** readlinkat(fd, ""): the target of the symlink an O_PATH | O_NOFOLLOW fd names. */
  readlinkFd(fd: number): string;
  /** Sets FD_CLOEXEC on every descriptor >= fd (close_range, or fcntl over /proc/self/fd). */
  cloexecFrom(fd: number): void;
  readonly UTIME_NOW: number;
  readonly UTIME_OMIT: number;
  readonly XATTR_CREATE: number;
  readonly XATTR_REPLACE: number;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly FALLOC_FL_ZERO_RANGE: number;
  readonly MNT_FORCE: number;
  readonly MNT_DETACH: number;
  readonly MS_RDONLY: number;
  readonly MS_NOSUID: number;
  readonly MS_NODEV: number;
  readonly MS_NOEXEC: number;
  readonly MS_NOATIME: number;
  readonly MS_NODIRATIME: number;
  readonly MS_RELATIME: number;
  readonly MS_STRICTATIME: number;
  readonly O_PATH: number;
}

/**
 * Stat as returned to fuse-native ops callbacks. With our bridge, times are
 * NUMBERS IN MICROSECONDS since the epoch (not Dates, not ms: a Date would be
 * read as µs, i.e. 1000x too early).
 */
export interface FuseStat {
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  dev?: number;
  nlink?: number;
  ino?: number;
  rdev?: number;
  blksize?: number;
  blocks?: number;
  atime: number;
  mtime: number;
  ctime: number;
}

/** fuse-native callbacks: first argument is 0 or a negative errno. */
export type FuseCb<T extends unknown[] = []> = (err: number, ...result: T) => void;

/**
 * fuse-native operations (subset typed; see fuse-native's README for the rest).
 * utimens receives µs numbers, or UTIME_NOW_US / UTIME_OMIT_US.
 */
export interface FuseOperations {
  init?(cb: FuseCb): void;
  getattr?(path: string, cb: FuseCb<[FuseStat?]>): void;
  fgetattr?(path: string, fd: number, cb: FuseCb<[FuseStat?]>): void;
  readdir?(path: string, cb: FuseCb<[string[]?, FuseStat[]?]>): void;
  open?(path: string, flags: number, cb: FuseCb<[number?]>): void;
  create?(path: string, mode: number, cb: FuseCb<[number?]>): void;
  release?(path: string, fd: number, cb: FuseCb): void;
  read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void;
  write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void;
  truncate?(path: string, size: number, cb: FuseCb): void;
  ftruncate?(path: string, fd: number, size: number, cb: FuseCb): void;
  utimens?(path: string, atimeUs: number, mtimeUs: number, cb: FuseCb): void;
  /**
   * fallocate(2) on an open file (added by loadFuse(), not in fuse-native).
   * mode: FALLOC_FL_* bits as given to fallocate(2) (0, KEEP_SIZE=1,
   * PUNCH_HOLE=2 (always with KEEP_SIZE), ZERO_RANGE=0x10, ...); offset and
   * length in bytes (exact up to 2^53); fd: the fh returned by open/create
   * (0 if none). cb(0) or cb(-errno); cb() counts as 0, a non-integer truthy
   * value as -EIO. Subject to the same opts.timeout as the other ops
   * (key 'fallocate' in a per-op timeout object): on expiry the kernel gets
   * -ETIMEDOUT and a later cb is ignored. Not implemented -> fallocate(2) on
   * the mount fails with EOPNOTSUPP (libfuse answers ENOSYS, which the kernel
   * maps to EOPNOTSUPP and remembers for the connection).
   */
  fallocate?(path: string, mode: number, offset: number, length: number, fd: number, cb: FuseCb): void;
  /**
   * The attributes of the node `nodeid` (callerContext().nodeid of an earlier op), asked only when
   * libfuse has no path for it: a directory held open after it was removed or renamed over
   * (added by loadFuse(), fuse_bridge.c change 15). cb(-ENOENT) when it is not known.
   */
  getattrNode?(nodeid: number, cb: FuseCb<[FuseStat?]>): void;
  [op: string]: ((...args: never[]) => void) | undefined;
}

export interface FuseOptions {
  force?: boolean;
  mkdir?: boolean;
  debug?: boolean;
  timeout?: number | false | Record<string, number | false>;
  [opt: string]: unknown;
}

export interface FuseInstance {
  readonly mnt: string;
  readonly opened: boolean;
  readonly opening: boolean;
  readonly closed: boolean;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  errno(code: string): number;
  /**
   * Called once on the event loop when the FUSE session has ended: the kernel ended the
   * connection because the mount is gone, by anyone's unmount, ours included (fuse_bridge.c
   * change 16).
   */
  onSessionEnd?: () => void;
}

export interface FuseNativeModule {
  new (mnt: string, ops: FuseOperations, opts?: FuseOptions): FuseInstance;
  /** Patched by loadFuse(): umount2(mnt, MNT_DETACH) instead of `fusermount -uz`. */
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  readonly [errnoName: string]: unknown;
}


/** Credentials of the process that issued a FUSE request (from libfuse's fuse_get_context()). */
export interface CallerContext {
  /** fsuid of the calling process (normally its euid), in the daemon's user namespace. */
  uid: number;
  /** fsgid of the calling process (normally its egid); supplementary groups are not included. */
  gid: number;
  /**
   * Kernel thread id of the calling thread (equal to the process id for a
   * single-threaded caller or the main thread), in the daemon's pid
   * namespace; 0 if not visible there.
   */
  pid: number;
  /**
   * libfuse's node id of the request (fuse_bridge.c change 13): the node the op is on (getattr,
   * open, opendir, ...) or, for ops that name a new entry (create, mkdir, ...), its parent.
   * What `getattrNode` is later asked about.
   */
  nodeid: number;
}

