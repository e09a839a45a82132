/**
 * fuse-native with our bridge: loadFuse(), callerContext(), unmountFuse().
 */
import * as fs from 'fs';
import * as path from 'path';
import Module = require('module');
import { patchFuseNative, type FuseBridge } from './fuse-handlers';
import { sys, isErrnoError, repoRoot, loadAddon, firstLine, nodeGypBuildFrom, libfuseCandidates } from './addons';
import type { CallerContext, FuseInstance, FuseNativeModule } from './types';

export { FUSE_OP_FALLOCATE, FUSE_OP_GETATTR_NODE, FUSE_OP_SESSION_END, statArray } from './fuse-handlers';

/** Sentinel mtime/atime (µs) passed to ops.utimens for UTIME_NOW: 2^53-1. */
export const UTIME_NOW_US = Number.MAX_SAFE_INTEGER; // 0x001FFFFF_FFFFFFFF
/** Sentinel mtime/atime (µs) passed to ops.utimens for UTIME_OMIT: 2^53-2. */
export const UTIME_OMIT_US = Number.MAX_SAFE_INTEGER - 1; // 0x001FFFFF_FFFFFFFE


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

