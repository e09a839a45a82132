/**
 * replicafs native layer.
 *
 *  - `sys`: synchronous syscall wrappers (addon replicafs_sys, no libfuse).
 *  - `loadFuse()`: fuse-native with its C binding replaced by our patched
 *    bridge (addon replicafs_fuse, see fuse_bridge.c for the list of fixes).
 *  - `unmountFuse()`: unmount without fusermount (umount2 MNT_DETACH).
 *  - `callerContext()`: uid/gid/pid of the process whose request the current
 *    FUSE op handler is serving (synchronous part of the handler only).
 *
 * Loading order for each addon:
 *  1. the committed prebuild, via node-gyp-build pointed at
 *     <repo>/native-prebuilds/<sys|fuse> (files in prebuilds/<platform>-<arch>/);
 *  2. an existing source build in <repo>/src/native/build/Release/;
 *  3. otherwise node-gyp is run once (per process) in <repo>/src/native and the
 *     result is loaded; one line is printed to stderr saying so.
 * If all fail, an Error with a one-line message is thrown (the details of
 * every attempt are in `err.attempts`, node-gyp's output in `err.output`).
 *
 * node-gyp is looked up (first hit wins) at: $npm_config_node_gyp (set by npm
 * for scripts); require.resolve('node-gyp/bin/node-gyp.js') from the repo;
 * next to $npm_execpath (<npm>/bin/npm-cli.js -> <npm>/node_modules/node-gyp);
 * next to process.execPath (<prefix>/bin/node -> <prefix>/lib/node_modules/npm/
 * node_modules/node-gyp); `npm root -g`/npm/node_modules/node-gyp. It is run with
 * process.execPath. Headers: $npm_config_nodedir if set, else <prefix> when
 * <prefix>/include/node/node_api.h exists (distro/tarball installs), else
 * node-gyp's own cache.
 */
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import Module = require('module');
import { patchFuseNative, type FuseBridge } from './fuse-handlers';

// ---------------------------------------------------------------------------
// Types

/** Node-fs-shaped error thrown by every `sys` function. */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

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
  /** CRC-32C of buf chained from prev (0 to start), three streams at once; absent without SSE4.2. */
  crc32c?: (buf: Uint8Array, prev?: number) => number;
  /** dlopen(path, RTLD_NOW | RTLD_GLOBAL); never closed. Throws with dlerror() text. */
  dlopenGlobal(path: string): void;
  umount2(path: string, flags: number): void;
  /** mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags): sets the mount's per-mount flags to exactly `flags`. */
  remountBind(path: string, flags: number): void;
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

// ---------------------------------------------------------------------------
// Constants

export { FUSE_OP_FALLOCATE, FUSE_OP_GETATTR_NODE, FUSE_OP_SESSION_END, statArray } from './fuse-handlers';

/** Sentinel mtime/atime (µs) passed to ops.utimens for UTIME_NOW: 2^53-1. */
export const UTIME_NOW_US = Number.MAX_SAFE_INTEGER; // 0x001FFFFF_FFFFFFFF
/** Sentinel mtime/atime (µs) passed to ops.utimens for UTIME_OMIT: 2^53-2. */
export const UTIME_OMIT_US = Number.MAX_SAFE_INTEGER - 1; // 0x001FFFFF_FFFFFFFE

// ---------------------------------------------------------------------------
// Repo root / paths

let rootCache: string | undefined;

/** Directory containing the package.json named "replicafs" (walks up from __dirname). */
export function repoRoot(): string {
  if (rootCache !== undefined) return rootCache;
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(pj, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'replicafs') {
        rootCache = dir;
        return dir;
      }
    } catch {
      // no or unreadable package.json here; keep walking
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`replicafs: cannot find the replicafs package.json above ${__dirname}`);
    dir = up;
  }
}

type AddonKind = 'sys' | 'fuse';
const ADDON_FILE: Record<AddonKind, string> = { sys: 'replicafs_sys.node', fuse: 'replicafs_fuse.node' };

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split('\n').find((l) => l.trim() !== '') ?? msg).trim();
}

interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

function nodeGypBuildFrom(dir: string): NodeGypBuild {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require(require.resolve('node-gyp-build', { paths: [dir] })) as NodeGypBuild;
}

// ---------------------------------------------------------------------------
// Build from source (fallback)

/** Locate node-gyp's CLI script (see the header comment for the search order). */
export function findNodeGyp(): string | undefined {
  const rel = path.join('node-gyp', 'bin', 'node-gyp.js');
  const candidates: string[] = [];
  const env = process.env;
  if (env.npm_config_node_gyp) candidates.push(env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [repoRoot()] }));
  } catch {
    // not installed locally
  }
  if (env.npm_execpath) {
    // <npm>/bin/npm-cli.js -> <npm>/node_modules/node-gyp
    candidates.push(path.resolve(path.dirname(env.npm_execpath), '..', 'node_modules', rel));
  }
  const binDir = path.dirname(fs.realpathSync(process.execPath));
  candidates.push(path.resolve(binDir, '..', 'lib', 'node_modules', 'npm', 'node_modules', rel));
  candidates.push(path.resolve(binDir, 'node_modules', 'npm', 'node_modules', rel));
  for (const c of candidates) if (fs.existsSync(c)) return c;
  try {
    const globalRoot = execFileSync('npm', ['root', '-g'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const c = path.join(globalRoot, 'npm', 'node_modules', rel);
    if (fs.existsSync(c)) return c;
  } catch {
    // npm not on PATH
  }
  return undefined;
}

function nodedirArgs(): string[] {
  if (process.env.npm_config_nodedir) return [`--nodedir=${process.env.npm_config_nodedir}`];
  const prefix = path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
    return [`--nodedir=${prefix}`];
  }
  return [];
}

let sourceBuild: { ok: true } | { ok: false; error: Error } | undefined;

function buildFromSource(reason: string): void {
  if (sourceBuild !== undefined) {
    if (sourceBuild.ok) return;
    throw sourceBuild.error;
  }
  const srcDir = path.join(repoRoot(), 'src', 'native');
  const nodeGyp = findNodeGyp();
  if (nodeGyp === undefined) {
    const error = new Error('no usable prebuild and node-gyp not found (looked at $npm_config_node_gyp, the repo, next to npm and node, npm root -g)');
    sourceBuild = { ok: false, error };
    throw error;
  }
  try {
    execFileSync(process.execPath, [nodeGyp, 'rebuild', '--release', ...nodedirArgs()], {
      cwd: srcDir,
      env: { ...process.env, REPLICAFS_NATIVE_TARGET: 'all' },
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const ex = e as { stdout?: Buffer; stderr?: Buffer };
    const output = `${ex.stdout?.toString() ?? ''}${ex.stderr?.toString() ?? ''}`;
    const lines = output.split('\n').filter((l) => !/^gyp info/.test(l));
    const errLine =
      lines.find((l) => /error:/i.test(l)) ?? lines.find((l) => /^gyp ERR!/.test(l)) ?? firstLine(e);
    const error = new Error(`building from source with node-gyp (${nodeGyp}) in ${srcDir} failed: ${errLine.trim()}`);
    (error as Error & { output?: string }).output = output;
    sourceBuild = { ok: false, error };
    throw error;
  }
  sourceBuild = { ok: true };
  process.stderr.write(`replicafs: no usable native prebuild (${reason}); built the addons from source into ${path.join(srcDir, 'build')}\n`);
}

function loadAddon(kind: AddonKind): unknown {
  const root = repoRoot();
  const attempts: string[] = [];
  const prebuildDir = path.join(root, 'native-prebuilds', kind);
  try {
    return nodeGypBuildFrom(root)(prebuildDir);
  } catch (e) {
    attempts.push(`prebuild in ${prebuildDir}: ${firstLine(e)}`);
  }
  const built = path.join(root, 'src', 'native', 'build', 'Release', ADDON_FILE[kind]);
  if (fs.existsSync(built)) {
    try {
      return require(built) as unknown;
    } catch (e) {
      attempts.push(`existing source build ${built}: ${firstLine(e)}`);
    }
  }
  try {
    if (sourceBuild === undefined || !fs.existsSync(built)) buildFromSource(attempts[0] ?? 'none');
    return require(built) as unknown;
  } catch (e) {
    attempts.push(firstLine(e));
    const error = new Error(`replicafs: cannot load native addon ${ADDON_FILE[kind]}: ${attempts[attempts.length - 1]}`);
    (error as Error & { attempts?: string[] }).attempts = attempts;
    const output = (e as { output?: unknown }).output;
    if (typeof output === 'string') (error as Error & { output?: string }).output = output;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// sys

export const sys: SysAddon = loadAddon('sys') as SysAddon;

/** True when `e` is an Error carrying a string `code` (Node fs / sys errors). */
export function isErrnoError(e: unknown): e is SysError {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string';
}

// ---------------------------------------------------------------------------
// fuse

/** Candidate libfuse.so (SONAME libfuse.so.2) paths, ours first. */
export function libfuseCandidates(): string[] {
  const root = repoRoot();
  const tuple = `${process.platform}-${process.arch}`;
  const out = [path.join(root, 'native-prebuilds', 'fuse', 'prebuilds', tuple, 'libfuse.so')];
  try {
    const fuseDir = path.dirname(require.resolve('fuse-native/package.json', { paths: [root] }));
    out.push(path.join(fuseDir, 'prebuilds', tuple, 'libfuse.so'));
    try {
      const shared = path.dirname(require.resolve('fuse-shared-library-linux/package.json', { paths: [fuseDir] }));
      out.push(path.join(shared, 'libfuse', 'lib', 'libfuse.so'));
    } catch {
      // not installed
    }
  } catch {
    // fuse-native not installed; loadFuse reports that
  }
  return out;
}

let fuseModule: FuseNativeModule | undefined;

/** Mount points unmountFuse(..., { detach: false }) is closing: the patched Fuse.unmount leaves them alone. */
const notDetached = new Set<string>();

/**
 * dlopen libfuse (RTLD_GLOBAL), load the patched bridge, inject it into
 * require.cache where fuse-native's `require('node-gyp-build')(__dirname)`
 * will look, require fuse-native, patch its static `Fuse.unmount` to use
 * umount2(MNT_DETACH) (there is no fusermount), and replace or add the
 * handlers we own (src/native/fuse-handlers.ts). Idempotent.
 */
export function loadFuse(): FuseNativeModule {
  if (fuseModule !== undefined) return fuseModule;
  const root = repoRoot();

  // 1. libfuse, so that the bridge's DT_NEEDED libfuse.so.2 is satisfied by SONAME.
  const libs = libfuseCandidates();
  const existing = libs.filter((p) => fs.existsSync(p));
  if (existing.length === 0) throw new Error(`cannot load libfuse: none of ${libs.join(', ')} exists`);
  let libErr = '';
  let loadedLib: string | undefined;
  for (const lib of existing) {
    try {
      sys.dlopenGlobal(lib);
      loadedLib = lib;
      break;
    } catch (e) {
      libErr += `${libErr ? '; ' : ''}${firstLine(e)}`;
    }
  }
  if (loadedLib === undefined) throw new Error(`cannot load libfuse from ${existing[0]}: ${libErr}`);

  // 2. Our bridge.
  const bridge = loadAddon('fuse'); // throws "replicafs: cannot load native addon replicafs_fuse.node: ..."

  // 3. Inject in place of fuse-native's binding.
  let fuseDir: string;
  let fuseIndex: string;
  try {
    fuseIndex = require.resolve('fuse-native', { paths: [root] });
    fuseDir = path.dirname(require.resolve('fuse-native/package.json', { paths: [root] }));
  } catch (e) {
    throw new Error(`cannot resolve fuse-native from ${root}: ${firstLine(e)}`);
  }
  let bindingPath: string;
  try {
    bindingPath = nodeGypBuildFrom(fuseDir).resolve(fuseDir);
  } catch (e) {
    throw new Error(`cannot resolve fuse-native's binding path in ${fuseDir}: ${firstLine(e)}`);
  }
  const keys = new Set([bindingPath]);
  try {
    keys.add(fs.realpathSync(bindingPath));
  } catch {
    // resolve() only returns existing files; ignore
  }
  const cachedIndex = require.cache[fuseIndex] ?? require.cache[safeRealpath(fuseIndex)];
  if (cachedIndex !== undefined) {
    const cachedBinding = [...keys].map((k) => require.cache[k]).find((m) => m !== undefined);
    if (cachedBinding === undefined || cachedBinding.exports !== bridge) {
      throw new Error('cannot inject the replicafs fuse bridge: fuse-native was already required with its own binding');
    }
  }
  for (const key of keys) {
    const m = new Module(key, module);
    m.filename = key;
    m.loaded = true;
    m.exports = bridge;
    require.cache[key] = m;
  }

  // 4. fuse-native itself.
  let Fuse: FuseNativeModule;
  try {
    Fuse = require(fuseIndex) as FuseNativeModule;
  } catch (e) {
    throw new Error(`cannot load fuse-native from ${fuseIndex}: ${firstLine(e)}`);
  }
  if (typeof Fuse !== 'function') throw new Error(`cannot load fuse-native from ${fuseIndex}: export is not a class`);

  // 5. No fusermount here: unmount with umount2(MNT_DETACH). "Not mounted"
  //    (EINVAL) and a vanished mountpoint (ENOENT) count as success so that
  //    fuse-native's _close still reaches binding.fuse_native_unmount.
  (Fuse as { unmount: FuseNativeModule['unmount'] }).unmount = (mnt, cb) => {
    let err: Error | null = null;
    try {
      if (!notDetached.has(path.resolve(mnt))) detach(mnt);
    } catch (e) {
      err = e instanceof Error ? e : new Error(String(e));
    }
    process.nextTick(cb, err);
  };

  // 6. The handlers we own (src/native/fuse-handlers.ts): the bridge's ops 35-37 (fallocate,
  //    getattr of an unnamed node, session end) and the buffer-filling xattr handlers.
  patchFuseNative(Fuse as unknown as { prototype: object }, bridge as FuseBridge);

  // 7. Caller context (fuse_bridge.c change 10), for callerContext().
  const contextFn = (bridge as { fuse_native_context?: () => CallerContext | null }).fuse_native_context;
  if (typeof contextFn !== 'function') {
    throw new Error('replicafs fuse bridge has no fuse_native_context (caller uid/gid/pid); rebuild it with npm run prebuild-native');
  }
  bridgeContextFn = contextFn;

  fuseModule = Fuse;
  return Fuse;
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

let bridgeContextFn: (() => CallerContext | null) | undefined;

/**
 * The uid, gid and pid of the process whose request the FUSE op handler that
 * is running right now is serving (fuse_bridge.c change 10), or null when no
 * op handler is being dispatched or loadFuse() has not been called.
 *
 * CONSTRAINT: the value is only available during the SYNCHRONOUS part of an
 * op handler (any `ops.*` function passed to the Fuse constructor, fallocate
 * included). Call it at the very start of the handler, before any `await`,
 * callback or timer, and carry the result along:
 *
 *     create(path, mode, cb) {
 *       const caller = callerContext(); // here, not after an await
 *       void doCreate(path, mode, caller).then(...);
 *     }
 *
 * After the handler returns, in process.nextTick callbacks, promise
 * continuations, or timers, it returns null (never another op's context),
 * because the bridge clears it before the handler's ticks/microtasks run.
 *
 * The values are what the kernel put in the request header: for requests the
 * kernel issues on its own behalf (e.g. some release/flush on close from
 * another context, forget, writeback) uid/gid/pid can be 0 or belong to an
 * unrelated process, so only rely on it for ops that a process issues
 * directly (create, mknod, mkdir, symlink, link, open, setattr...). Main JS
 * thread only (where fuse-native dispatches its ops).
 */
export function callerContext(): CallerContext | null {
  if (bridgeContextFn === undefined) return null;
  return bridgeContextFn();
}

function safeRealpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

/** umount2(mnt, MNT_DETACH); EINVAL (not a mount point) and ENOENT are ignored. */
function detach(mnt: string): void {
  try {
    sys.umount2(mnt, sys.MNT_DETACH);
  } catch (e) {
    if (isErrnoError(e) && (e.code === 'EINVAL' || e.code === 'ENOENT')) return;
    throw e;
  }
}

function countDevFuseFds(): number {
  let n = 0;
  let fds: string[];
  try {
    fds = fs.readdirSync('/proc/self/fd');
  } catch {
    return 0;
  }
  for (const fd of fds) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === '/dev/fuse') n++;
    } catch {
      // fd closed meanwhile
    }
  }
  return n;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Unmount a fuse-native instance without fusermount:
 *  1. umount2(mnt, MNT_DETACH): the kernel detaches the mount at once and, once
 *     no file on it is in use, destroys the superblock and aborts the FUSE
 *     connection; the FUSE thread's reads on /dev/fuse then fail with ENODEV,
 *     fuse_loop_mt returns, fuse_unmount sees POLLERR (skips its own umount),
 *     the thread closes /dev/fuse and exits.
 *  2. instance.unmount() (nanoresource close -> fuse-native _close -> our
 *     patched Fuse.unmount (umount2 again, EINVAL ignored) ->
 *     binding.fuse_native_unmount, which detaches the thread and unrefs the
 *     uv_async so the event loop can exit).
 *  3. Best effort: wait up to 2 s for the FUSE thread to close its /dev/fuse fd.
 * Safe to call in a finally (not mounted / never opened is fine). Never do
 * synchronous fs calls on a mount from the process serving it.
 *
 * `detach: false` skips both umount2 calls: for a session that has already
 * ended (fuse.onSessionEnd), whose mount point may hold another mount by now.
 */
export async function unmountFuse(fuse: FuseInstance, mnt: string, opts: { detach?: boolean; timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const before = countDevFuseFds();
  const keep = opts.detach === false ? [path.resolve(mnt), path.resolve(fuse.mnt)] : [];
  if (keep.length === 0) {
    detach(mnt);
    if (path.resolve(fuse.mnt) !== path.resolve(mnt)) detach(fuse.mnt);
  }
  for (const k of keep) notDetached.add(k);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`unmount of ${mnt} timed out after ${timeoutMs} ms waiting for fuse-native to close`)), timeoutMs);
      fuse.unmount((err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  } finally {
    for (const k of keep) notDetached.delete(k);
  }
  if (before > 0) {
    const deadline = Date.now() + 2000;
    while (countDevFuseFds() >= before && Date.now() < deadline) await sleep(10);
  }
}
