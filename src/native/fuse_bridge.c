/*
 * replicafs_fuse: a patched copy of fuse-native 2.2.6's C bridge
 * (node_modules/fuse-native/fuse-native.c, https://github.com/fuse-friends/fuse-native).
 *
 * fuse-native is MIT licensed (c) Mathias Buus and the fuse-native
 * contributors; see LICENSE.fuse-native next to this file.
 * Modifications for replicafs are likewise MIT licensed.
 *
 * It exports exactly the same N-API surface as fuse-native's binding
 * (same names, same op numbering, same fuse_native_signal_* functions) and is
 * injected into require.cache in place of fuse-native's own binding by
 * src/native/fuse.ts (loadFuse).
 *
 * Changes (each is also marked "REPLICAFS (change N)" at the spot):
 *  1. Timestamps are microseconds since the epoch in both directions
 *     (uint32s_to_timespec, timespec_to_uint64), not milliseconds: the JS side
 *     hands us µs numbers in stat arrays and receives µs in utimens. µs since
 *     the epoch fits exactly in a JS double (< 2^53) for dates until ~2255.
 *  2. utimens: fuse-native passed l->atime twice (argv 3/4 and 5/6), so the
 *     mtime never reached JS. argv 5/6 now carry l->mtime.
 *  3. UTIME_NOW / UTIME_OMIT in utimens are encoded as distinct sentinels that
 *     survive fuse-native's `low + high * 4294967296` double conversion:
 *       UTIME_NOW  -> high 0x001FFFFF, low 0xFFFFFFFF (2^53-1, Number.MAX_SAFE_INTEGER)
 *       UTIME_OMIT -> high 0x001FFFFF, low 0xFFFFFFFE (2^53-2)
 *     (Before, tv_nsec = (1<<30)-1 / (1<<30)-2 was folded into a garbage
 *     millisecond value, so `touch f` set the time to ~1970.)
 *     Exported to TS as UTIME_NOW_US / UTIME_OMIT_US by src/native/fuse.ts.
 *  4. The l->atime / l->mtime fields are uint64_t instead of size_t (same size
 *     on 64-bit; size_t would truncate on 32-bit builds).
 *  5. fuse_native_mount: if fuse_new() failed, the already-mounted channel was
 *     leaked (left mounted, nobody serving it -> ENOTCONN for every access) and
 *     a ref'd uv_async handle was initialised that kept the event loop alive.
 *     Now the channel is unmounted and the error thrown before any async init.
 *     If fuse_mount() fails, the napi references created for ctx/malloc/handlers
 *     are released (previously leaked).
 *  6. fuse_native_unmount: pthread_detach()es the FUSE thread (once) so its
 *     resources are reclaimed when it exits; it was never joined or detached.
 *     The thread exits by itself once the kernel mount is gone (umount2 with
 *     MNT_DETACH, see unmountFuse in index.ts): the kernel aborts the
 *     connection, reads on /dev/fuse return ENODEV, fuse_loop_mt returns, and
 *     fuse_unmount() sees POLLERR on the fd and skips its own umount.
 *     Also guards against being called with a NULL/never-mounted thread buffer
 *     (it used to uv_unref an uninitialised handle).
 *  7. NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr) and
 *     NAPI_EXPORT_UINT32(op_getattr) were listed twice; harmless, left as is.
 *  8. fuse_native_mount sets ops.flag_utime_omit_ok when utimens is
 *     implemented. Without it libfuse 2.9 calls utimens only when both atime
 *     and mtime change and silently drops mtime-only / atime-only updates
 *     (touch -m, touch -a, utimensat with one UTIME_OMIT) while returning
 *     success; with it the UTIME_NOW/UTIME_OMIT values of change 3 reach JS.
 *  9. New op fallocate (libfuse 2.9 `fallocate(path, mode, offset, length, fi)`),
 *     op number op_fallocate = 35 (exported; 34 stays unused, as in fuse-native),
 *     exported fuse_native_signal_fallocate, ops.fallocate set when
 *     implemented[op_fallocate]. JS gets (path, mode, offsetLow, offsetHigh,
 *     lengthLow, lengthHigh, fh) and signals (nativeHandler, res). The handler
 *     table grew from 35 to 36 entries (REPLICAFS_OP_COUNT). fuse-native's JS
 *     still passes a 35-entry `implemented` array and 34 handlers unless
 *     loadFuse() (src/native/fuse.ts) has patched it, so the implemented
 *     buffer's length is checked before reading index 35, and handlers beyond
 *     REPLICAFS_OP_COUNT are ignored (the original code would have overflowed
 *     ft->handlers for a longer array).
 * 10. Caller context: the uid, gid and pid from fuse_get_context() (the
 *     calling process's fsuid/fsgid and thread id, as the kernel put them in
 *     the request header) are captured on the libfuse worker thread in
 *     FUSE_NATIVE_HANDLER (every FUSE_METHOD op, fallocate included) and in
 *     fuse_native_init, into l->ctx_uid/ctx_gid/ctx_pid. On the JS thread,
 *     replicafs_invoke_handler() publishes them in a static "current op
 *     context" only for the duration of the synchronous JS handler call and
 *     invalidates it as soon as the call returns. The new export
 *     fuse_native_context() returns {uid, gid, pid} while an op's handler is
 *     being dispatched and null otherwise (src/native/fuse.ts: callerContext()).
 *     To make "after the handler returns" exact, the handler is now called
 *     with napi_call_function inside an explicit callback scope (async context
 *     created per mount, resource name "replicafs:fuse-op") instead of
 *     napi_make_callback: the context is cleared BEFORE the scope is closed,
 *     i.e. before process.nextTick callbacks and promise jobs queued by the
 *     handler run, so code after an `await` (or in a nextTick) always sees
 *     null instead of the context of whatever op happens to be dispatched.
 *     An exception thrown by the handler is still routed to
 *     napi_fatal_exception ('uncaughtException'), as NAPI_MAKE_CALLBACK did.
 * 11. A signal never leaves the FUSE thread waiting, and never answers more than was asked:
 *     every fuse_native_signal_* checks its arguments itself (replicafs_signal_begin,
 *     replicafs_arg_words) where napi-macros' NAPI_ARGV_* threw and returned before
 *     uv_sem_post, hanging the calling thread (and with it the caller, for ever) on any
 *     malformed answer from JavaScript; a malformed answer is now -EIO. read and write
 *     answers larger than the request are -EIO, getxattr and listxattr answers larger than the
 *     caller's non-zero buffer -ERANGE (libfuse sent them and the kernel failed the caller with
 *     EIO), readlink targets that do not fit -ENAMETOOLONG, readdir names that do not fit the
 *     1024-byte buffer -EIO (they were silently truncated). The detach of the ArrayBuffers
 *     handed back is no longer an assert.
 * 12. Times are signed: the pair of uint32 holds a two's complement int64 of microseconds in
 *     both directions (utimens to JS as low uint32 + high int32), so times before 1970
 *     round-trip; they became 2446 (ext4's maximum) before.
 * 13. The request's node id (the header's nodeid) is part of the caller context
 *     (fuse_native_context().nodeid), from a thread-local the channel below fills per request.
 * 14. libfuse talks to /dev/fuse through our channel (replicafs_chan_*; see its comment): replies
 *     carrying the attributes of a non-directory with more than one link get a zero attribute
 *     timeout, and a successful LINK first invalidates the source node, so no name of a
 *     hard-linked file shows stale permissions, owners, sizes or link counts.
 * 15. New op getattr_node (36): a GETATTR that libfuse answers ENOENT because the node has no
 *     path any more (a directory held open after it was removed or renamed over) is answered
 *     with the attributes JS gives for that node id, as ext4 answers fstat() of it.
 * 16. New op session_end (37), called on the JS thread once the FUSE thread's loop has returned:
 *     the kernel ended the connection (an unmount, ours or anyone's), so the daemon can stop
 *     instead of running on without a mount. start_fuse_thread also no longer touches the
 *     channel it has just freed.
 *
 * Known, intentionally unchanged (documented only):
 *  - The strong napi references to the Fuse instance (ft->ctx) and the handler
 *    functions are never deleted, so a Fuse instance is never garbage
 *    collected. This is what keeps the Buffers that hold fuse_thread_t and the
 *    per-thread fuse_thread_locals_t (including their uv_async_t handles, which
 *    are never uv_close()d) alive; deleting them would be a use-after-free.
 *  - Inode numbers (st_ino, d_ino) and statfs counts cross as 32-bit words (fuse-native's stat
 *    array layout): an inode number of 2^32 or more is shown modulo 2^32.
 *  - Paths, names, link targets and xattr names cross as UTF-8 strings: bytes that are not
 *    UTF-8 are replaced (the inode-based transport of issue 14 carries raw bytes).
 */

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 29
#endif

#include <uv.h>
#include <node_api.h>
#include <napi-macros.h>

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <errno.h>
#include <assert.h>

#include <fuse.h>
#include <fuse_opt.h>
#include <fuse_common.h>
#include <fuse_lowlevel.h>
#include <fuse_kernel.h>

#include <unistd.h>
#include <sys/wait.h>
#include <pthread.h>

static int IS_ARRAY_BUFFER_DETACH_SUPPORTED = 0;

napi_status napi_detach_arraybuffer(napi_env env, napi_value buf);

#define FUSE_NATIVE_CALLBACK(fn, blk)\
  napi_env env = ft->env;\
  napi_handle_scope scope;\
  napi_open_handle_scope(env, &scope);\
  napi_value ctx;\
  napi_get_reference_value(env, ft->ctx, &ctx);\
  napi_value callback;\
  napi_get_reference_value(env, fn, &callback);\
  blk\
  napi_close_handle_scope(env, scope);

#define FUSE_NATIVE_HANDLER(name, blk)\
  fuse_thread_locals_t *l = get_thread_locals();\
  replicafs_capture_context(l);\
  l->op = op_##name;\
  l->op_fn = fuse_native_dispatch_##name;\
  blk\
  uv_async_send(&(l->async));\
  uv_sem_wait(&(l->sem));\
  return l->res;

#define FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, signalBlk)\
  static void fuse_native_dispatch_##name (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
    uint32_t op = op_##name;\
    FUSE_NATIVE_CALLBACK(ft->handlers[op], {\
      napi_value argv[callbackArgs + 2];\
      napi_get_reference_value(env, l->self, &(argv[0]));\
      napi_create_uint32(env, l->op, &(argv[1]));\
      callbackBlk\
      replicafs_invoke_handler(env, ft, l, ctx, callback, callbackArgs + 2, argv);\
    })\
  }\
  NAPI_METHOD(fuse_native_signal_##name) {\
    napi_value argv[signalArgs + 2];\
    int32_t res;\
    fuse_thread_locals_t *l = replicafs_signal_begin(env, info, signalArgs + 2, argv, &res);\
    if (l == NULL) return NULL;\
    signalBlk\
    goto signal_done;\
  signal_done:\
    l->res = res;\
    uv_sem_post(&(l->sem));\
    return NULL;\
  }\
  static int fuse_native_##name signature {\
    FUSE_NATIVE_HANDLER(name, callBlk)\
  }

#define FUSE_METHOD_VOID(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk)\
  FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, {})

// REPLICAFS (change 12): a signed value as (low uint32, high int32): JS's low + high * 2^32 is
// then the signed number (times before 1970 are negative).
#define REPLICAFS_INT64_TO_INTS_ARGV(n, pos)\
  napi_create_uint32(env, (uint32_t) ((uint64_t) (n) & 0xFFFFFFFFu), &(argv[pos]));\
  napi_create_int32(env, (int32_t) ((n) >> 32), &(argv[pos + 1]));

#define FUSE_UINT64_TO_INTS_ARGV(n, pos)\
  uint32_t low##pos = n % 4294967296;\
  uint32_t high##pos = (n - low##pos) / 4294967296;\
  napi_create_uint32(env, low##pos, &(argv[pos]));\
  napi_create_uint32(env, high##pos, &(argv[pos + 1]));


// Opcodes

static const uint32_t op_init = 0;
static const uint32_t op_error = 1;
static const uint32_t op_access = 2;
static const uint32_t op_statfs = 3;
static const uint32_t op_fgetattr = 4;
static const uint32_t op_getattr = 5;
static const uint32_t op_flush = 6;
static const uint32_t op_fsync = 7;
static const uint32_t op_fsyncdir = 8;
static const uint32_t op_readdir = 9;
static const uint32_t op_truncate = 10;
static const uint32_t op_ftruncate = 11;
static const uint32_t op_utimens = 12;
static const uint32_t op_readlink = 13;
static const uint32_t op_chown = 14;
static const uint32_t op_chmod = 15;
static const uint32_t op_mknod = 16;
static const uint32_t op_setxattr = 17;
static const uint32_t op_getxattr = 18;
static const uint32_t op_listxattr = 19;
static const uint32_t op_removexattr = 20;
static const uint32_t op_open = 21;
static const uint32_t op_opendir = 22;
static const uint32_t op_read = 23;
static const uint32_t op_write = 24;
static const uint32_t op_release = 25;
static const uint32_t op_releasedir = 26;
static const uint32_t op_create = 27;
static const uint32_t op_unlink = 28;
static const uint32_t op_rename = 29;
static const uint32_t op_link = 30;
static const uint32_t op_symlink = 31;
static const uint32_t op_mkdir = 32;
static const uint32_t op_rmdir = 33;
// REPLICAFS (change 9): new op. 34 is unused (fuse-native never had an op 34).
static const uint32_t op_fallocate = 35;
// REPLICAFS (change 15): the attributes of a node libfuse can no longer name (a directory held
// open after it was removed or renamed over); called only for such a GETATTR, never by libfuse.
static const uint32_t op_getattr_node = 36;
// REPLICAFS (change 16): the FUSE session has ended (the mount is gone); no FUSE thread waits.
static const uint32_t op_session_end = 37;

// REPLICAFS (changes 9, 15, 16): size of ft->handlers / the implemented array (was 35).
#define REPLICAFS_OP_COUNT 38

// Data structures

typedef struct {
  napi_env env;
  pthread_t thread;
  pthread_attr_t attr;
  napi_ref ctx;
  napi_ref malloc;

  // Operation handlers
  // REPLICAFS (change 9): REPLICAFS_OP_COUNT (36), was 35.
  napi_ref handlers[REPLICAFS_OP_COUNT];

  struct fuse *fuse;
  struct fuse_chan *ch;
  char mnt[1024];
  char mntopts[1024];
  int mounted;

  uv_async_t async;
  uv_mutex_t mut;
  uv_sem_t sem;

  // REPLICAFS (change 10): async context for the callback scope in which the
  // JS op handlers are called (never destroyed, like the other references).
  napi_async_context op_async_ctx;

  // REPLICAFS (change 14): libfuse's session reads and answers through `ch`, our channel;
  // `kernel_ch` is the channel on /dev/fuse that fuse_mount made, kept in a session of its own
  // (`kernel_se`) that only forwards "exit" and "exited" to libfuse's session.
  struct fuse_chan *kernel_ch;
  struct fuse_session *kernel_se;
  // REPLICAFS (change 15): op_getattr_node is implemented.
  int getattr_node_enabled;
  // REPLICAFS (change 16): sent by the FUSE thread when its loop has ended.
  uv_async_t end_async;
} fuse_thread_t;

typedef struct {
  napi_ref self;

  // Opcode
  uint32_t op;
  void *op_fn;

  // Payloads
  const char *path;
  const char *dest;
  char *linkname;
  struct fuse_file_info *info;
  const void *buf;
  off_t offset;
  size_t len;
  mode_t mode;
  dev_t dev;
  uid_t uid;
  gid_t gid;
  // REPLICAFS (changes 4 and 12): signed 64 bits, was size_t.
  int64_t atime;
  int64_t mtime;
  int32_t res;

  // REPLICAFS (change 10): fuse_get_context() of the current op, captured on
  // the libfuse worker thread (uid/gid above are chown's arguments).
  uid_t ctx_uid;
  gid_t ctx_gid;
  pid_t ctx_pid;
  // REPLICAFS (change 13): the request's node (the header's nodeid).
  uint64_t ctx_nodeid;
  // REPLICAFS (change 15): op_getattr_node's argument.
  uint64_t nodeid_arg;

  // Extended attributes
  const char *name;
  const char *value;
  char *list;
  size_t size;
  uint32_t position;
  int flags;

  // Stat + Statfs
  struct stat *stat;
  struct statvfs *statvfs;

  // Readdir
  fuse_fill_dir_t readdir_filler;

  // Internal bookkeeping
  fuse_thread_t *fuse;
  uv_sem_t sem;
  uv_async_t async;

} fuse_thread_locals_t;

static pthread_key_t thread_locals_key;
static fuse_thread_locals_t* get_thread_locals();

// REPLICAFS (change 13): the request this libfuse worker thread is serving, read from its header
// as it arrives (replicafs_chan_receive). A worker receives one request and serves it to the end,
// its reply included, before it receives the next (fuse_loop_mt, and libfuse's high-level ops are
// synchronous), so this describes the request whose handler or reply runs on this thread.
typedef struct {
  uint64_t unique;
  uint64_t nodeid;
  // FUSE_LINK: the node of the existing name.
  uint64_t link_source;
  uint32_t opcode;
} replicafs_request_t;

static __thread replicafs_request_t replicafs_request;

// REPLICAFS (change 10): caller context.

// Worker thread: called at the start of every op, where fuse_get_context()
// describes the request being served.
static void replicafs_capture_context (fuse_thread_locals_t *l) {
  struct fuse_context *fc = fuse_get_context();
  l->ctx_uid = fc->uid;
  l->ctx_gid = fc->gid;
  l->ctx_pid = fc->pid;
  // REPLICAFS (change 13)
  l->ctx_nodeid = replicafs_request.nodeid;
}

// JS thread only (ops are dispatched on uv_default_loop()). Valid only while
// replicafs_invoke_handler is inside the synchronous handler call; saved and
// restored rather than cleared in case a dispatch ever nests.
typedef struct {
  int valid;
  napi_env env;
  uint32_t uid;
  uint32_t gid;
  uint32_t pid;
  uint64_t nodeid;
} replicafs_op_context_t;

static replicafs_op_context_t replicafs_current_ctx = { 0, NULL, 0, 0, 0, 0 };

// Call the JS handler for one op with the op's caller context published.
// Replaces NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, argc, argv, NULL).
static void replicafs_invoke_handler (napi_env env, fuse_thread_t *ft, fuse_thread_locals_t *l, napi_value recv, napi_value callback, size_t argc, napi_value *argv) {
  napi_callback_scope scope;
  int scoped = ft->op_async_ctx != NULL && napi_open_callback_scope(env, recv, ft->op_async_ctx, &scope) == napi_ok;

  replicafs_op_context_t saved = replicafs_current_ctx;
  replicafs_current_ctx.valid = 1;
  replicafs_current_ctx.env = env;
  replicafs_current_ctx.uid = (uint32_t) l->ctx_uid;
  replicafs_current_ctx.gid = (uint32_t) l->ctx_gid;
  replicafs_current_ctx.pid = (uint32_t) l->ctx_pid;
  replicafs_current_ctx.nodeid = l->ctx_nodeid;

  napi_status status;
  if (scoped) {
    status = napi_call_function(env, recv, callback, argc, argv, NULL);
  } else {
    // No async context (napi_async_init failed): napi_make_callback drains
    // the nextTick/microtask queues before returning, so those would still
    // see this op's context. Correct values, just a wider window.
    status = napi_make_callback(env, NULL, recv, callback, argc, argv, NULL);
  }

  replicafs_current_ctx = saved;

  if (status == napi_pending_exception) {
    napi_value fatal_exception;
    napi_get_and_clear_last_exception(env, &fatal_exception);
    napi_fatal_exception(env, fatal_exception);
  }

  // Runs process.nextTick callbacks and promise jobs (context already cleared).
  if (scoped) napi_close_callback_scope(env, scope);
}

// fuse_native_context(): {uid, gid, pid} of the process that issued the FUSE
// request whose JS handler is currently running (synchronously), else null.
NAPI_METHOD(fuse_native_context) {
  napi_value result;
  if (!replicafs_current_ctx.valid || replicafs_current_ctx.env != env) {
    napi_get_null(env, &result);
    return result;
  }
  napi_value v;
  napi_create_object(env, &result);
  napi_create_uint32(env, replicafs_current_ctx.uid, &v);
  napi_set_named_property(env, result, "uid", v);
  napi_create_uint32(env, replicafs_current_ctx.gid, &v);
  napi_set_named_property(env, result, "gid", v);
  napi_create_uint32(env, replicafs_current_ctx.pid, &v);
  napi_set_named_property(env, result, "pid", v);
  // REPLICAFS (change 13): libfuse's node ids are a counter; exact as a double.
  napi_create_double(env, (double) replicafs_current_ctx.nodeid, &v);
  napi_set_named_property(env, result, "nodeid", v);
  return result;
}

// Helpers
// TODO: Extract into a separate file.

static uint64_t uint32s_to_uint64 (uint32_t **ints) {
  uint64_t low = *((*ints)++);
  uint64_t high = *((*ints)++);
  return high * 4294967296 + low;
}

// REPLICAFS (changes 1 and 12): microseconds instead of milliseconds, signed: the pair holds
// a two's complement int64 (fuse-native's setDoubleInt writes a negative number that way), so
// times before 1970 round-trip. tv_nsec stays in [0, 1e9) as POSIX requires.
static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {
  int64_t us = (int64_t) uint32s_to_uint64(ints);
  int64_t sec = us / 1000000;
  int64_t rem = us % 1000000;
  if (rem < 0) {
    rem += 1000000;
    sec -= 1;
  }
  ts->tv_sec = (time_t) sec;
  ts->tv_nsec = (long) (rem * 1000);
}

// REPLICAFS (change 3): sentinels that stay distinct as JS doubles.
#define REPLICAFS_UTIME_NOW_US  ((((uint64_t) 0x001FFFFF) << 32) | 0xFFFFFFFFu) /* 2^53-1 */
#define REPLICAFS_UTIME_OMIT_US ((((uint64_t) 0x001FFFFF) << 32) | 0xFFFFFFFEu) /* 2^53-2 */

// REPLICAFS (changes 1, 3 and 12): signed microseconds instead of milliseconds (rounded toward
// minus infinity, so -0.5 us is -1 us); UTIME_NOW/UTIME_OMIT map to the sentinels above.
static int64_t timespec_to_us (const struct timespec* ts) {
#ifdef UTIME_NOW
  if (ts->tv_nsec == UTIME_NOW) return (int64_t) REPLICAFS_UTIME_NOW_US;
  if (ts->tv_nsec == UTIME_OMIT) return (int64_t) REPLICAFS_UTIME_OMIT_US;
#endif
  return ((int64_t) ts->tv_sec * 1000000) + ((int64_t) ts->tv_nsec / 1000);
}

// REPLICAFS (change 11): the words a stat array holds (fuse-native's getStatArray layout).
#define REPLICAFS_STAT_WORDS 18

// REPLICAFS (change 11): a typed-array (or Buffer) argument of at least `count` 32-bit words,
// else NULL. Signals check their arguments with it instead of NAPI_ARGV_BUFFER_CAST, which threw
// and left the FUSE thread waiting for an answer that never came.
static uint32_t *replicafs_arg_words (napi_env env, napi_value value, size_t count) {
  void *data = NULL;
  size_t length = 0;
  if (napi_get_buffer_info(env, value, &data, &length) != napi_ok || data == NULL || length < count * sizeof(uint32_t)) return NULL;
  return (uint32_t *) data;
}

// REPLICAFS (change 11): detaches the ArrayBuffer over libfuse's memory that a signal hands back
// (read, write and the xattr ops), so no JavaScript reference outlives the reply. Was an assert,
// which killed the daemon if the handler passed anything else.
static void replicafs_detach (napi_env env, napi_value value) {
  bool is_arraybuffer = false;
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED != 1) return;
  if (napi_is_arraybuffer(env, value, &is_arraybuffer) != napi_ok || !is_arraybuffer) return;
  napi_detach_arraybuffer(env, value);
}

// REPLICAFS (change 11): the start of every fuse_native_signal_*: the FUSE thread's handle
// (argv[0]) and the result (argv[1]). A result that is not a number answers -EIO, so a malformed
// answer from JavaScript still releases the FUSE thread. Returns NULL, with a JavaScript exception
// pending, only when argv[0] is not a handle: then there is no thread to release, and the bug is
// in our own JavaScript.
static fuse_thread_locals_t *replicafs_signal_begin (napi_env env, napi_callback_info info, size_t count, napi_value *argv, int32_t *res) {
  size_t argc = count;
  fuse_thread_locals_t *l = NULL;
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_buffer_info(env, argv[0], (void **) &l, &length) != napi_ok ||
      l == NULL || length < sizeof(fuse_thread_locals_t)) {
    napi_throw_error(env, NULL, "replicafs fuse bridge: a signal without its FUSE thread handle");
    return NULL;
  }
  if (argc < 2 || napi_get_value_int32(env, argv[1], res) != napi_ok) *res = -EIO;
  return l;
}

static void populate_stat (uint32_t *ints, struct stat* stat) {
  stat->st_mode = *ints++;
  stat->st_uid = *ints++;
  stat->st_gid = *ints++;
  stat->st_size = uint32s_to_uint64(&ints);
  stat->st_dev = *ints++;
  stat->st_nlink = *ints++;
  stat->st_ino = *ints++;
  stat->st_rdev = *ints++;
  stat->st_blksize = *ints++;
  stat->st_blocks = uint32s_to_uint64(&ints);
#ifdef __APPLE__
  uint32s_to_timespec(&stat->st_atimespec, &ints);
  uint32s_to_timespec(&stat->st_mtimespec, &ints);
  uint32s_to_timespec(&stat->st_ctimespec, &ints);
#else
  uint32s_to_timespec(&stat->st_atim, &ints);
  uint32s_to_timespec(&stat->st_mtim, &ints);
  uint32s_to_timespec(&stat->st_ctim, &ints);
#endif
}

static void populate_statvfs (uint32_t *ints, struct statvfs* statvfs) {
  statvfs->f_bsize = *ints++;
  statvfs->f_frsize = *ints++;
  statvfs->f_blocks = *ints++;
  statvfs->f_bfree = *ints++;
  statvfs->f_bavail = *ints++;
  statvfs->f_files = *ints++;
  statvfs->f_ffree = *ints++;
  statvfs->f_favail = *ints++;
  statvfs->f_fsid = *ints++;
  statvfs->f_flag = *ints++;
  statvfs->f_namemax = *ints++;
}

// Methods

FUSE_METHOD(statfs, 1, 1, (const char * path, struct statvfs *statvfs), {
  l->path = path;
  l->statvfs = statvfs;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  if (res == 0) {
    uint32_t *ints = replicafs_arg_words(env, argv[2], 11);
    if (ints == NULL) { res = -EIO; goto signal_done; }
    populate_statvfs(ints, l->statvfs);
  }
})

FUSE_METHOD(getattr, 1, 1, (const char *path, struct stat *stat), {
  l->path = path;
  l->stat = stat;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  if (res == 0) {
    uint32_t *ints = replicafs_arg_words(env, argv[2], REPLICAFS_STAT_WORDS);
    if (ints == NULL) { res = -EIO; goto signal_done; }
    populate_stat(ints, l->stat);
  }
})

FUSE_METHOD(fgetattr, 2, 1, (const char *path, struct stat *stat, struct fuse_file_info *info), {
  l->path = path;
  l->stat = stat;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  if (res == 0) {
    uint32_t *ints = replicafs_arg_words(env, argv[2], REPLICAFS_STAT_WORDS);
    if (ints == NULL) { res = -EIO; goto signal_done; }
    populate_stat(ints, l->stat);
  }
})

FUSE_METHOD_VOID(access, 2, 0, (const char *path, int mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD(open, 2, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->flags, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  int32_t fd = 0;
  if (res == 0 && napi_get_value_int32(env, argv[2], &fd) == napi_ok && fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(opendir, 3, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
    napi_create_uint32(env, l->info->flags, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
    napi_create_uint32(env, 0, &(argv[4]));
  }
}, {
  int32_t fd = 0;
  if (res == 0 && napi_get_value_int32(env, argv[2], &fd) == napi_ok && fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(create, 2, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
}, {
  int32_t fd = 0;
  if (res == 0 && napi_get_value_int32(env, argv[2], &fd) == napi_ok && fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  l->atime = timespec_to_us(&tv[0]);
  l->mtime = timespec_to_us(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  REPLICAFS_INT64_TO_INTS_ARGV(l->atime, 3)
  // REPLICAFS (change 2): was FUSE_UINT64_TO_INTS_ARGV(l->atime, 5), losing mtime.
  REPLICAFS_INT64_TO_INTS_ARGV(l->mtime, 5)
})

FUSE_METHOD_VOID(release, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(releasedir, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD(read, 6, 2, (const char *path, char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  replicafs_detach(env, argv[3]);
  // REPLICAFS (change 11): never more than the kernel asked for.
  if (res > 0 && (size_t) res > l->len) res = -EIO;
})

FUSE_METHOD(write, 6, 2, (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  replicafs_detach(env, argv[3]);
  // REPLICAFS (change 11): never more than the kernel asked for.
  if (res > 0 && (size_t) res > l->len) res = -EIO;
})

FUSE_METHOD(readdir, 1, 2, (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *info), {
  l->buf = buf;
  l->path = path;
  l->offset = offset;
  l->info = info;
  l->readdir_filler = filler;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  // REPLICAFS (change 11): each name and stat is checked; anything malformed answers -EIO
  // instead of throwing (which left the FUSE thread waiting forever). A name that does not fit
  // the 1024-byte buffer is an error, not a silently truncated name.
  if (res != 0) goto signal_done;
  napi_value raw_names = argv[2];
  napi_value raw_stats = argv[3];
  bool is_array = false;
  uint32_t names_length = 0;
  uint32_t stats_length = 0;
  if (napi_is_array(env, raw_names, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, raw_names, &names_length) != napi_ok) {
    res = -EIO;
    goto signal_done;
  }
  if (napi_is_array(env, raw_stats, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, raw_stats, &stats_length) != napi_ok) {
    stats_length = 0;
  }
  for (uint32_t i = 0; i < names_length; i++) {
    char name[1024];
    size_t name_len = 0;
    napi_value raw_name;
    if (napi_get_element(env, raw_names, i, &raw_name) != napi_ok ||
        napi_get_value_string_utf8(env, raw_name, name, sizeof(name), &name_len) != napi_ok ||
        name_len >= sizeof(name) - 1) {
      res = -EIO;
      goto signal_done;
    }
    struct stat st;
    struct stat *stp = NULL;
    if (stats_length == names_length) {
      napi_value raw_stat;
      uint32_t *ints = napi_get_element(env, raw_stats, i, &raw_stat) == napi_ok ? replicafs_arg_words(env, raw_stat, REPLICAFS_STAT_WORDS) : NULL;
      if (ints == NULL) { res = -EIO; goto signal_done; }
      memset(&st, 0, sizeof(st));
      populate_stat(ints, &st);
      stp = &st;
    }
    if (l->readdir_filler((char *) l->buf, name, stp, 0) == 1) break;
  }
})

#ifdef __APPLE__

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  replicafs_detach(env, argv[2]);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
}, {
  replicafs_detach(env, argv[2]);
})

#else

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5])); // normalize apis between mac and linux
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  replicafs_detach(env, argv[2]);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5]));
}, {
  replicafs_detach(env, argv[2]);
  // REPLICAFS (change 11): a value larger than the caller's buffer is ERANGE (the kernel's
  // contract); libfuse would send it anyway and the kernel would answer the caller EIO.
  if (res > 0 && l->size > 0 && (size_t) res > l->size) res = -ERANGE;
})

#endif

FUSE_METHOD(listxattr, 2, 1, (const char *path, char *list, size_t size), {
  l->path = path;
  l->list = list;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_external_buffer(env, l->size, l->list, NULL, NULL, &(argv[3]));
}, {
  replicafs_detach(env, argv[2]);
  // REPLICAFS (change 11): as getxattr.
  if (res > 0 && l->size > 0 && (size_t) res > l->size) res = -ERANGE;
})

FUSE_METHOD_VOID(removexattr, 2, 0, (const char *path, const char *name), {
  l->path = path;
  l->name = name;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(flush, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(fsync, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})

FUSE_METHOD_VOID(fsyncdir, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})


FUSE_METHOD_VOID(truncate, 3, 0, (const char *path, off_t size), {
  l->path = path;
  l->offset = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 3)
})

FUSE_METHOD_VOID(ftruncate, 4, 0, (const char *path, off_t size, struct fuse_file_info *info), {
  l->path = path;
  l->offset = size;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 4)
})

// REPLICAFS (change 9): fallocate. offset/length go out as low/high uint32 pairs
// (JS: low + high * 4294967296); l->len is size_t = 64 bits on the 64-bit
// targets we build, and libfuse passes non-negative values (the kernel
// rejects negative offset/len with EINVAL before FUSE sees them).
FUSE_METHOD_VOID(fallocate, 7, 0, (const char *path, int mode, off_t offset, off_t len, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->offset = offset;
  l->len = len;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  FUSE_UINT64_TO_INTS_ARGV((uint64_t) l->offset, 4)
  FUSE_UINT64_TO_INTS_ARGV((uint64_t) l->len, 6)
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[8]));
  } else {
    napi_create_uint32(env, 0, &(argv[8]));
  }
})

// REPLICAFS (change 15): JS gets (nodeLow, nodeHigh) and signals (nativeHandler, res, statArray).
FUSE_METHOD(getattr_node, 2, 1, (uint64_t nodeid, struct stat *stat), {
  l->nodeid_arg = nodeid;
  l->stat = stat;
}, {
  FUSE_UINT64_TO_INTS_ARGV(l->nodeid_arg, 2)
}, {
  if (res == 0) {
    uint32_t *ints = replicafs_arg_words(env, argv[2], REPLICAFS_STAT_WORDS);
    if (ints == NULL) { res = -EIO; goto signal_done; }
    populate_stat(ints, l->stat);
  }
})

FUSE_METHOD(readlink, 1, 1, (const char *path, char *linkname, size_t len), {
  l->path = path;
  l->linkname = linkname;
  l->len = len;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  // REPLICAFS (change 11): a target that is not a string is EIO, one that does not fit libfuse's
  // buffer (PATH_MAX + 1) ENAMETOOLONG; was a throw that left the FUSE thread waiting.
  if (res == 0) {
    size_t target_len = 0;
    if (napi_get_value_string_utf8(env, argv[2], NULL, 0, &target_len) != napi_ok) { res = -EIO; goto signal_done; }
    if (l->len == 0 || target_len >= l->len) { res = -ENAMETOOLONG; goto signal_done; }
    napi_get_value_string_utf8(env, argv[2], l->linkname, l->len, &target_len);
  }
})

FUSE_METHOD_VOID(chown, 3, 0, (const char *path, uid_t uid, gid_t gid), {
  l->path = path;
  l->uid = uid;
  l->gid = gid;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->uid, &(argv[3]));
  napi_create_uint32(env, l->gid, &(argv[4]));
})

FUSE_METHOD_VOID(chmod, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(mknod, 3, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
})

FUSE_METHOD_VOID(unlink, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

FUSE_METHOD_VOID(rename, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(link, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(symlink, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(mkdir, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(rmdir, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

static void fuse_native_dispatch_init (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
  FUSE_NATIVE_CALLBACK(ft->handlers[op_init], {
    napi_value argv[2];

    napi_get_reference_value(env, l->self, &(argv[0]));
    napi_create_uint32(env, l->op, &(argv[1]));

    // REPLICAFS (change 10): was NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, 2, argv, NULL).
    replicafs_invoke_handler(env, ft, l, ctx, callback, 2, argv);
  })
}

NAPI_METHOD(fuse_native_signal_init) {
  napi_value argv[2];
  int32_t res;
  // REPLICAFS (change 11)
  fuse_thread_locals_t *l = replicafs_signal_begin(env, info, 2, argv, &res);
  if (l == NULL) return NULL;
  l->res = res;
  uv_sem_post(&(l->sem));
  return NULL;
}

static void * fuse_native_init (struct fuse_conn_info *conn) {
  fuse_thread_locals_t *l = get_thread_locals();
  // REPLICAFS (change 10)
  replicafs_capture_context(l);

  l->op = op_init;
  l->op_fn = fuse_native_dispatch_init;

  uv_async_send(&(l->async));
  uv_sem_wait(&(l->sem));

  return l->fuse;
}

// REPLICAFS (change 14): our channel between libfuse's session and /dev/fuse.
//
// libfuse 2's high-level API answers every request itself from the path-based ops, so two
// things the kernel needs cannot be said through those ops; they are said here, where every
// request and reply passes:
//  - Attribute timeouts per reply. The high-level API keeps one node per path, so the kernel
//    holds one inode per *name* of a hard-linked file and caches each one's attributes for
//    attr_timeout: after a chmod, chown, write or link through one name, another name would show
//    the old mode, owner, size or link count, and the kernel would grant an open on a stale mode.
//    A reply that carries the attributes of a non-directory with more than one link gets a zero
//    attribute timeout, so every use of such a name asks the daemon. A file reaches a second link
//    only by FUSE_LINK, whose reply is preceded by an invalidation of the source node (its cached
//    link count was 1, with the full timeout).
//  - Nodes libfuse can no longer name. A directory held open after it was removed, or renamed
//    over, has no path in libfuse's tree, and libfuse answers its GETATTR ENOENT (ext4 answers
//    fstat() of such a descriptor). That answer is replaced by the daemon's (op_getattr_node),
//    which still holds the directory open.
// Everything else passes through unchanged. The request a reply answers is this thread's
// (replicafs_request): libfuse answers a request on the thread that received it.

static int replicafs_kernel_exited (void *data) {
  fuse_thread_t *ft = (fuse_thread_t *) data;
  return ft->fuse == NULL ? 0 : fuse_session_exited(fuse_get_session(ft->fuse));
}

static void replicafs_kernel_exit (void *data, int val) {
  fuse_thread_t *ft = (fuse_thread_t *) data;
  if (ft->fuse == NULL) return;
  if (val) fuse_session_exit(fuse_get_session(ft->fuse));
  else fuse_session_reset(fuse_get_session(ft->fuse));
}

static void replicafs_kernel_process (void *data, const char *buf, size_t len, struct fuse_chan *ch) {
  // Never called: nothing processes requests through the kernel channel's own session.
}

static int replicafs_chan_receive (struct fuse_chan **chp, char *buf, size_t size) {
  fuse_thread_t *ft = (fuse_thread_t *) fuse_chan_data(*chp);
  struct fuse_chan *kernel = ft->kernel_ch;
  int res = fuse_chan_recv(&kernel, buf, size);
  memset(&replicafs_request, 0, sizeof(replicafs_request));
  if (res >= (int) sizeof(struct fuse_in_header)) {
    const struct fuse_in_header *in = (const struct fuse_in_header *) buf;
    replicafs_request.unique = in->unique;
    replicafs_request.nodeid = in->nodeid;
    replicafs_request.opcode = in->opcode;
    if (in->opcode == FUSE_LINK && (size_t) res >= sizeof(*in) + sizeof(struct fuse_link_in)) {
      replicafs_request.link_source = ((const struct fuse_link_in *) (in + 1))->oldnodeid;
    }
  }
  return res;
}

static void replicafs_fill_attr (struct fuse_attr *attr, const struct stat *st) {
  memset(attr, 0, sizeof(*attr));
  attr->ino = st->st_ino;
  attr->size = st->st_size;
  attr->blocks = st->st_blocks;
  attr->atime = st->st_atim.tv_sec;
  attr->mtime = st->st_mtim.tv_sec;
  attr->ctime = st->st_ctim.tv_sec;
  attr->atimensec = st->st_atim.tv_nsec;
  attr->mtimensec = st->st_mtim.tv_nsec;
  attr->ctimensec = st->st_ctim.tv_nsec;
  attr->mode = st->st_mode;
  attr->nlink = st->st_nlink;
  attr->uid = st->st_uid;
  attr->gid = st->st_gid;
  attr->rdev = st->st_rdev;
  attr->blksize = st->st_blksize;
}

// A zero attribute timeout for a file that has other names (see above).
static void replicafs_limit_attr (uint64_t *valid, uint32_t *valid_nsec, const struct fuse_attr *attr) {
  if (attr->nlink > 1 && !S_ISDIR(attr->mode)) {
    *valid = 0;
    *valid_nsec = 0;
  }
}

static int replicafs_chan_send (struct fuse_chan *ch, const struct iovec iov[], size_t count) {
  fuse_thread_t *ft = (fuse_thread_t *) fuse_chan_data(ch);
  if (iov == NULL || count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header)) return fuse_chan_send(ft->kernel_ch, iov, count);
  struct fuse_out_header *out = (struct fuse_out_header *) iov[0].iov_base;
  if (out->unique == 0 || out->unique != replicafs_request.unique) return fuse_chan_send(ft->kernel_ch, iov, count);
  size_t arg_len = count >= 2 ? iov[1].iov_len : 0;
  switch (replicafs_request.opcode) {
    case FUSE_GETATTR:
    case FUSE_SETATTR:
      if (out->error == 0 && arg_len >= sizeof(struct fuse_attr_out)) {
        struct fuse_attr_out *a = (struct fuse_attr_out *) iov[1].iov_base;
        replicafs_limit_attr(&a->attr_valid, &a->attr_valid_nsec, &a->attr);
      } else if (out->error == -ENOENT && replicafs_request.opcode == FUSE_GETATTR && ft->getattr_node_enabled && ft->handlers[op_getattr_node] != NULL) {
        struct stat st;
        memset(&st, 0, sizeof(st));
        if (fuse_native_getattr_node(replicafs_request.nodeid, &st) == 0) {
          struct fuse_attr_out a;
          memset(&a, 0, sizeof(a));
          replicafs_fill_attr(&a.attr, &st);
          struct fuse_out_header h = { .len = sizeof(h) + sizeof(a), .error = 0, .unique = out->unique };
          struct iovec v[2] = { { &h, sizeof(h) }, { &a, sizeof(a) } };
          return fuse_chan_send(ft->kernel_ch, v, 2);
        }
      }
      break;
    case FUSE_LINK:
      // Before the reply, so that no stat of the source after link() returns sees its old count.
      if (out->error == 0 && replicafs_request.link_source != 0) {
        fuse_lowlevel_notify_inval_inode(ch, replicafs_request.link_source, -1, 0);
      }
      // The reply is an entry, like the ones below.
      __attribute__((fallthrough));
    case FUSE_LOOKUP:
    case FUSE_MKNOD:
    case FUSE_MKDIR:
    case FUSE_SYMLINK:
    case FUSE_CREATE:
      if (out->error == 0 && arg_len >= sizeof(struct fuse_entry_out)) {
        struct fuse_entry_out *e = (struct fuse_entry_out *) iov[1].iov_base;
        replicafs_limit_attr(&e->attr_valid, &e->attr_valid_nsec, &e->attr);
      }
      break;
    default:
      break;
  }
  return fuse_chan_send(ft->kernel_ch, iov, count);
}

// Puts our channel between libfuse and the kernel channel fuse_mount made. Returns our channel,
// or NULL (nothing allocated then).
static struct fuse_chan *replicafs_chan_wrap (fuse_thread_t *ft, struct fuse_chan *kernel) {
  struct fuse_session_ops kernel_ops = {
    .process = replicafs_kernel_process,
    .exit = replicafs_kernel_exit,
    .exited = replicafs_kernel_exited,
  };
  struct fuse_chan_ops ops = {
    .receive = replicafs_chan_receive,
    .send = replicafs_chan_send,
    .destroy = NULL, // the descriptor is the kernel channel's
  };
  struct fuse_session *se = fuse_session_new(&kernel_ops, ft);
  if (se == NULL) return NULL;
  struct fuse_chan *ch = fuse_chan_new(&ops, fuse_chan_fd(kernel), fuse_chan_bufsize(kernel), ft);
  if (ch == NULL) {
    fuse_session_destroy(se);
    return NULL;
  }
  // fuse_kern_chan_receive asks its channel's session whether the loop has exited.
  fuse_session_add_chan(se, kernel);
  ft->kernel_ch = kernel;
  ft->kernel_se = se;
  return ch;
}

// REPLICAFS (change 16): on the JS thread once the FUSE thread's loop has returned: the kernel
// ended the connection (an unmount by anyone, or our own). Calls handler op_session_end, if any.
static void replicafs_session_end (uv_async_t *handle) {
  fuse_thread_t *ft = (fuse_thread_t *) handle->data;
  if (ft->handlers[op_session_end] == NULL) return;
  FUSE_NATIVE_CALLBACK(ft->handlers[op_session_end], {
    napi_value argv[2];
    napi_get_null(env, &(argv[0]));
    napi_create_uint32(env, op_session_end, &(argv[1]));
    if (napi_make_callback(env, ft->op_async_ctx, ctx, callback, 2, argv, NULL) == napi_pending_exception) {
      napi_value fatal_exception;
      napi_get_and_clear_last_exception(env, &fatal_exception);
      napi_fatal_exception(env, fatal_exception);
    }
  })
}

// Top-level dispatcher

static void fuse_native_dispatch (uv_async_t* handle) {
  fuse_thread_locals_t *l = (fuse_thread_locals_t *) handle->data;
  fuse_thread_t *ft = l->fuse;
  void (*fn)(uv_async_t *, fuse_thread_locals_t *, fuse_thread_t *) = l->op_fn;

  fn(handle, l, ft);
}

static void fuse_native_async_init (uv_async_t* handle) {
  fuse_thread_t *ft = (fuse_thread_t *) handle->data;
  fuse_thread_locals_t *l;

  FUSE_NATIVE_CALLBACK(ft->malloc, {
    napi_value argv[1];
    napi_create_uint32(ft->env, (uint32_t) sizeof(fuse_thread_locals_t), &(argv[0]));

    napi_value buf;
    NAPI_MAKE_CALLBACK(ft->env, NULL, ctx, callback, 1, argv, &buf);

    size_t l_len;

    napi_get_buffer_info(env, buf, (void **) &l, &l_len);
    napi_create_reference(env, buf, 1, &(l->self));
  })


  int err = uv_async_init(uv_default_loop(), &(l->async), (uv_async_cb) fuse_native_dispatch);
  assert(err >= 0);

  uv_unref((uv_handle_t *) &(l->async));

  uv_sem_init(&(l->sem), 0);
  l->async.data = l;
  ft->async.data = l;
  l->fuse = ft;

  uv_sem_post(&(ft->sem));
}

static fuse_thread_locals_t* get_thread_locals () {
  struct fuse_context *ctx = fuse_get_context();
  fuse_thread_t *ft = (fuse_thread_t *) ctx->private_data;

  void *data = pthread_getspecific(thread_locals_key);

  if (data != NULL) {
    return (fuse_thread_locals_t *) data;
  }

  // Need to lock the mutation of l->async.
  uv_mutex_lock(&(ft->mut));
  ft->async.data = ft;

  // Notify the main thread to uv_async_init l->async.
  uv_async_send(&(ft->async));
  uv_sem_wait(&(ft->sem));

  fuse_thread_locals_t *l = (fuse_thread_locals_t*) ft->async.data;

  pthread_setspecific(thread_locals_key, (void *) l);
  uv_mutex_unlock(&(ft->mut));

  return l;
}

static void* start_fuse_thread (void *data) {
  fuse_thread_t *ft = (fuse_thread_t *) data;
  fuse_loop_mt(ft->fuse);

  // REPLICAFS (changes 14, 16): fuse-native unmounted ft->ch and then removed it from the
  // session it had just freed. Now: close the kernel channel (fuse_unmount skips the umount when
  // the kernel already ended the connection), free our channel, libfuse and the kernel channel's
  // session, then tell the JS thread.
  fuse_unmount(ft->mnt, ft->kernel_ch);
  ft->kernel_ch = NULL;
  fuse_chan_destroy(ft->ch);
  ft->ch = NULL;
  fuse_destroy(ft->fuse);
  fuse_session_destroy(ft->kernel_se);
  ft->kernel_se = NULL;
  uv_async_send(&(ft->end_async));

  return NULL;
}

NAPI_METHOD(fuse_native_mount) {
  NAPI_ARGV(7)

  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_UTF8(mntopts, 1024, 1);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 2);
  napi_create_reference(env, argv[3], 1, &(ft->ctx));
  napi_create_reference(env, argv[4], 1, &(ft->malloc));
  napi_value handlers = argv[5];
  NAPI_ARGV_BUFFER_CAST(uint32_t *, implemented, 6)

  // REPLICAFS (change 9): REPLICAFS_OP_COUNT, was 35; extra handlers ignored.
  for (int i = 0; i < REPLICAFS_OP_COUNT; i++) {
    ft->handlers[i] = NULL;
  }

  NAPI_FOR_EACH(handlers, handler) {
    if (i >= REPLICAFS_OP_COUNT) break;
    napi_create_reference(env, handler, 1, &ft->handlers[i]);
  }

  ft->env = env;

  struct fuse_operations ops = { };
  if (implemented[op_access]) ops.access = fuse_native_access;
  if (implemented[op_truncate]) ops.truncate = fuse_native_truncate;
  if (implemented[op_ftruncate]) ops.ftruncate = fuse_native_ftruncate;
  if (implemented[op_getattr]) ops.getattr = fuse_native_getattr;
  if (implemented[op_fgetattr]) ops.fgetattr = fuse_native_fgetattr;
  if (implemented[op_flush]) ops.flush = fuse_native_flush;
  if (implemented[op_fsync]) ops.fsync = fuse_native_fsync;
  if (implemented[op_fsyncdir]) ops.fsyncdir = fuse_native_fsyncdir;
  if (implemented[op_readdir]) ops.readdir = fuse_native_readdir;
  if (implemented[op_readlink]) ops.readlink = fuse_native_readlink;
  if (implemented[op_chown]) ops.chown = fuse_native_chown;
  if (implemented[op_chmod]) ops.chmod = fuse_native_chmod;
  if (implemented[op_mknod]) ops.mknod = fuse_native_mknod;
  if (implemented[op_setxattr]) ops.setxattr = fuse_native_setxattr;
  if (implemented[op_getxattr]) ops.getxattr = fuse_native_getxattr;
  if (implemented[op_listxattr]) ops.listxattr = fuse_native_listxattr;
  if (implemented[op_removexattr]) ops.removexattr = fuse_native_removexattr;
  if (implemented[op_statfs]) ops.statfs = fuse_native_statfs;
  if (implemented[op_open]) ops.open = fuse_native_open;
  if (implemented[op_opendir]) ops.opendir = fuse_native_opendir;
  if (implemented[op_read]) ops.read = fuse_native_read;
  if (implemented[op_write]) ops.write = fuse_native_write;
  if (implemented[op_release]) ops.release = fuse_native_release;
  if (implemented[op_releasedir]) ops.releasedir = fuse_native_releasedir;
  if (implemented[op_create]) ops.create = fuse_native_create;
  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;
  // REPLICAFS (change 8): tell libfuse we understand UTIME_NOW/UTIME_OMIT.
  // Without this flag libfuse 2.9 only calls utimens when BOTH atime and
  // mtime are set, silently dropping mtime-only/atime-only updates
  // (touch -m, touch -a, utimensat with one UTIME_OMIT) while reporting success.
  if (implemented[op_utimens]) ops.flag_utime_omit_ok = 1;
  if (implemented[op_unlink]) ops.unlink = fuse_native_unlink;
  if (implemented[op_rename]) ops.rename = fuse_native_rename;
  if (implemented[op_link]) ops.link = fuse_native_link;
  if (implemented[op_symlink]) ops.symlink = fuse_native_symlink;
  if (implemented[op_mkdir]) ops.mkdir = fuse_native_mkdir;
  if (implemented[op_rmdir]) ops.rmdir = fuse_native_rmdir;
  if (implemented[op_init]) ops.init = fuse_native_init;
  // REPLICAFS (change 9): unpatched fuse-native passes only 35 entries.
  if (implemented_len / sizeof(uint32_t) > op_fallocate && implemented[op_fallocate]) ops.fallocate = fuse_native_fallocate;
  // REPLICAFS (change 15)
  ft->getattr_node_enabled = implemented_len / sizeof(uint32_t) > op_getattr_node && implemented[op_getattr_node];

  int _argc = (strcmp(mntopts, "-o") <= 0) ? 1 : 2;
  char *_argv[] = {
    (char *) "fuse_bindings_dummy",
    (char *) mntopts
  };

  struct fuse_args args = FUSE_ARGS_INIT(_argc, _argv);
  struct fuse_chan *kernel = fuse_mount(mnt, &args);
  // REPLICAFS (change 14): libfuse talks to the kernel through our channel.
  struct fuse_chan *ch = kernel == NULL ? NULL : replicafs_chan_wrap(ft, kernel);

  if (ch == NULL) {
    if (kernel != NULL) fuse_unmount(mnt, kernel);
    // REPLICAFS (change 5): release the references taken above (were leaked).
    napi_delete_reference(env, ft->ctx);
    napi_delete_reference(env, ft->malloc);
    for (int i = 0; i < REPLICAFS_OP_COUNT; i++) {
      if (ft->handlers[i] != NULL) napi_delete_reference(env, ft->handlers[i]);
      ft->handlers[i] = NULL;
    }
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  struct fuse *fuse = fuse_new(ch, &args, &ops, sizeof(struct fuse_operations), ft);

  // REPLICAFS (change 5): fuse_new failed -> unmount the channel we mounted and
  // bail out before initialising (and ref'ing) ft->async.
  if (fuse == NULL) {
    fuse_chan_destroy(ch);
    fuse_unmount(mnt, ft->kernel_ch);
    fuse_session_destroy(ft->kernel_se);
    ft->kernel_ch = NULL;
    ft->kernel_se = NULL;
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  uv_mutex_init(&(ft->mut));
  uv_sem_init(&(ft->sem), 0);

  // REPLICAFS (change 10): async context for the op handlers' callback scope.
  // On failure replicafs_invoke_handler falls back to napi_make_callback.
  {
    napi_value resource_name;
    ft->op_async_ctx = NULL;
    if (napi_create_string_utf8(env, "replicafs:fuse-op", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
        napi_async_init(env, NULL, resource_name, &(ft->op_async_ctx)) != napi_ok) {
      ft->op_async_ctx = NULL;
    }
  }

  strncpy(ft->mnt, mnt, 1024);
  strncpy(ft->mntopts, mntopts, 1024);
  ft->fuse = fuse;
  ft->ch = ch;
  ft->mounted++;

  int err = uv_async_init(uv_default_loop(), &(ft->async), (uv_async_cb) fuse_native_async_init);

  // REPLICAFS (change 16): unref'd, like the op handles: it must not keep the loop alive.
  if (err >= 0) {
    err = uv_async_init(uv_default_loop(), &(ft->end_async), (uv_async_cb) replicafs_session_end);
    if (err >= 0) {
      ft->end_async.data = ft;
      uv_unref((uv_handle_t *) &(ft->end_async));
    }
  }

  if (fuse == NULL || err < 0) {
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  pthread_attr_init(&(ft->attr));
  pthread_create(&(ft->thread), &(ft->attr), start_fuse_thread, ft);

  return NULL;
}

NAPI_METHOD(fuse_native_unmount) {
  NAPI_ARGV(2)
  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 1);

  // REPLICAFS (change 6): guard against a never-mounted thread buffer.
  if (ft == NULL || ft->mounted <= 0) return NULL;

  // TODO: Investigate why the FUSE thread is not always killed after fusermount.
  // pthread_join(ft->thread, NULL);
  // REPLICAFS (change 6): joining here could deadlock (the FUSE thread may be
  // blocked waiting on this JS thread); detach instead so the thread's
  // resources are freed when it exits after the kernel mount went away.
  pthread_detach(ft->thread);

  // TODO: fix the async holding the loop
  uv_unref((uv_handle_t *) &(ft->async));
  ft->mounted--;

  return NULL;
}

NAPI_INIT() {
  const napi_node_version* version;
  assert(napi_get_node_version(env, &version) == napi_ok);

  if (version->major > 12 || (version->major == 12 && version->minor >= 16)) {
    IS_ARRAY_BUFFER_DETACH_SUPPORTED = 1;
  }

  pthread_key_create(&(thread_locals_key), NULL); // TODO: add destructor

  NAPI_EXPORT_SIZEOF(fuse_thread_t)

  NAPI_EXPORT_FUNCTION(fuse_native_mount)
  NAPI_EXPORT_FUNCTION(fuse_native_unmount)

  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_init)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_access)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_statfs)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fgetattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_flush)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsync)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsyncdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_truncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_ftruncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_utimens)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chown)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chmod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mknod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_setxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_listxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_removexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_open)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_opendir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_read)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_write)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_release)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_releasedir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_create)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_unlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rename)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_link)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_symlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mkdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rmdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fallocate)
  // REPLICAFS (change 15)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr_node)
  // REPLICAFS (change 10)
  NAPI_EXPORT_FUNCTION(fuse_native_context)

  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_init)
  NAPI_EXPORT_UINT32(op_error)
  NAPI_EXPORT_UINT32(op_access)
  NAPI_EXPORT_UINT32(op_statfs)
  NAPI_EXPORT_UINT32(op_fgetattr)
  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_flush)
  NAPI_EXPORT_UINT32(op_fsync)
  NAPI_EXPORT_UINT32(op_fsyncdir)
  NAPI_EXPORT_UINT32(op_readdir)
  NAPI_EXPORT_UINT32(op_truncate)
  NAPI_EXPORT_UINT32(op_ftruncate)
  NAPI_EXPORT_UINT32(op_utimens)
  NAPI_EXPORT_UINT32(op_readlink)
  NAPI_EXPORT_UINT32(op_chown)
  NAPI_EXPORT_UINT32(op_chmod)
  NAPI_EXPORT_UINT32(op_mknod)
  NAPI_EXPORT_UINT32(op_setxattr)
  NAPI_EXPORT_UINT32(op_getxattr)
  NAPI_EXPORT_UINT32(op_listxattr)
  NAPI_EXPORT_UINT32(op_removexattr)
  NAPI_EXPORT_UINT32(op_open)
  NAPI_EXPORT_UINT32(op_opendir)
  NAPI_EXPORT_UINT32(op_read)
  NAPI_EXPORT_UINT32(op_write)
  NAPI_EXPORT_UINT32(op_release)
  NAPI_EXPORT_UINT32(op_releasedir)
  NAPI_EXPORT_UINT32(op_create)
  NAPI_EXPORT_UINT32(op_unlink)
  NAPI_EXPORT_UINT32(op_rename)
  NAPI_EXPORT_UINT32(op_link)
  NAPI_EXPORT_UINT32(op_symlink)
  NAPI_EXPORT_UINT32(op_mkdir)
  NAPI_EXPORT_UINT32(op_rmdir)
  NAPI_EXPORT_UINT32(op_fallocate)
  NAPI_EXPORT_UINT32(op_getattr_node)
  NAPI_EXPORT_UINT32(op_session_end)
}
