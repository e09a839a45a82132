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
export * from './types';
export { sys, loadLl, isErrnoError, repoRoot, findNodeGyp, libfuseCandidates } from './addons';
export { loadFuse, callerContext, unmountFuse, UTIME_NOW_US, UTIME_OMIT_US, FUSE_OP_FALLOCATE, FUSE_OP_GETATTR_NODE, FUSE_OP_SESSION_END, statArray } from './fuse';
