/*
 * replicafs_ll: a FUSE transport on libfuse 3's low-level, inode-based API (issue 14), linked
 * statically with the vendored libfuse (src/native/libfuse/, LGPL-2.1).
 *
 * This first part serves a directory read-only, entirely in C, on libfuse's own threads: an inode
 * table keyed by (st_dev, st_ino) holding an O_PATH descriptor per inode the kernel knows, every
 * operation done with the *at() calls relative to it, lookup counts and FORGET honoured,
 * READDIRPLUS. No JavaScript runs per request. It is what a Secondary's mount needs (read-only,
 * the daemon changes the tree itself), and the base the journaled Primary transport grows from.
 *
 *   mount(root, mountpoint, options) -> handle   mounts (mount(2) as root: no fusermount) and
 *                                                starts the multi-threaded loop
 *   unmount(handle)                              unmounts, waits for the loop, frees everything
 *   stats(handle)                                whether FUSE passthrough was granted; READs served
 *   hold(handle), release(handle)                requests that read the tree wait in between
 *                                                (the daemon changes it: write-order fidelity)
 *
 * Errors are thrown as Node-fs-shaped errors (code, errno, syscall, path).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 317
#endif
#define NAPI_VERSION 6
#include <node_api.h>
#include <uv.h>
#include <poll.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fuse_lowlevel.h"
#include "fuse_kernel.h"
#include "fuse_log.h"
#include "napi_errors.h"

/* ---------- the inode table ---------- */

typedef struct inode {
  int fd;                 /* O_PATH | O_NOFOLLOW */
  dev_t dev;
  ino_t ino;
  uint64_t nlookup;       /* the kernel's references (LOOKUP, READDIRPLUS), less FORGET */
  struct inode *next;     /* hash chain */
  int backing_id;         /* FUSE passthrough: the kernel's id of the backing file, while open */
  uint32_t opens;         /* opens that use it */
  uint64_t attr_gen;      /* a volatile tree's: the generation its attributes were last handed out in (fs_t.given) */
} inode_t;

#define BUCKETS 65536
#define PEND_BUCKETS 1024
/* = LL_WRITE_BYTES_MAX in src/limits.ts (ll-adapter.ts checks they agree): 256 pages. */
#define JOURNALED_WRITE_BYTES_MAX (1024 * 1024)
/* Descriptors kept for the daemon itself when the inode table would take them (fs_t.inode_fds). */
#define LL_FD_RESERVE 4096
/* How long the JavaScript loop polls for the next forwarded request (fs_t.spin; REPLICAFS_LL_SPIN_US). */
#define LL_SPIN_US_DEFAULT 200

typedef struct pend { ino_t ino; struct pend *next; } pend_t;

typedef struct fs_s {
  inode_t root;
  inode_t *table[BUCKETS];
  pthread_mutex_t lock;
  double timeout;         /* entry and attribute timeout, seconds */
  bool want_passthrough;  /* asked for (mount flag 1) */
  bool passthrough;       /* and granted by the kernel (INIT) */
  bool volatile_tree;     /* the tree changes under the mount (mount flag 2): nothing cached across opens */
  bool epoch;             /* the kernel has FUSE_NOTIFY_INC_EPOCH (7.44, Linux 6.16): changed() invalidates every name */
  uint64_t reads;         /* READ requests answered here (not by the kernel from a backing file) */
  bool inited;            /* INIT answered: the mount serves (mount() waits for it) */
  pthread_cond_t init_cond;
  /*
   * Requests that read the tree hold this shared; hold() takes it exclusive (writers first), so
   * that a change the daemon makes to the tree between hold() and release() (a Secondary's apply
   * slice) is never seen half made: every request sees the tree between two of them, as the
   * fuse-native mount's handlers do by sharing the event loop with the apply.
   */
  pthread_rwlock_t apply;
  bool held;
  uint64_t waiting;       /* requests waiting for it now */
  uint64_t opens;         /* files and directories open through the mount now */
  /*
   * The forwarded subtree: the root's entry `fwd_name` and everything under it are served by
   * JavaScript (a Secondary's /.snapshots: views the daemon keeps in memory). Its nodes have odd
   * node ids (2 * the JavaScript id + 1, ids from 1: never the root's 1; the table's nodes are
   * pointers, even). Requests on them are queued to the handler through `tsfn` and answered by the
   * reply functions, from the JavaScript thread, by request id; `fwds` holds those not answered yet.
   */
  struct fuse_session *se; /* for what outlives a request (closing a backing id after a failed reply) */
  char *fwd_name;
  napi_threadsafe_function tsfn;
  bool tsfn_dead;         /* finalized by Node (the environment torn down while mounted): queue nothing more */
  pthread_mutex_t fwd_lock;
  struct fwd *fwds;
  uint32_t fwd_next;
  /*
   * A journaled mount (flag 4, a Primary's): every change is forwarded to the handler with the
   * paths it names under the root (node_path), which journals it, applies it and answers; reads stay
   * here. Writes are answered before they are applied (the Primary's apply queue): the handler
   * names the inodes with writes in flight (pending()), and a stat, lookup or read of one waits
   * until they are applied (wait_applied), as the compat transport's handlers wait for the barrier.
   */
  bool journaled;
  char *root_path;        /* the root's path as the kernel names it (readlink of its descriptor) */
  size_t root_len;
  pthread_mutex_t pend_lock;
  pthread_cond_t pend_cond;
  struct pend *pend[PEND_BUCKETS];
  uint64_t npending;      /* entries in pend (read without the lock: 0, nothing to wait for) */
  bool pend_off;          /* unmounting: nobody waits any more */
  /*
   * A change's paths are resolved on a worker and journaled later, on the JavaScript thread. The
   * kernel keeps them true meanwhile (it holds the inode and parent locks the change needs) except
   * against the rename of a directory above them: so changes count themselves in use from their
   * resolution to their answer, and the rename of a directory waits for none to be in use and
   * keeps new ones from resolving until it is answered (libfuse 2's path locks, coarsely).
   */
  pthread_mutex_t gate_lock;
  pthread_cond_t gate_cond;
  uint64_t inuse;
  uint64_t gate_waiting;  /* requests waiting at the gate now (stats) */
  bool dir_renaming;
  bool gate_off;          /* unmounting: nobody waits any more */
  /*
   * Where a forwarded request's time goes (stats: forwarded, resolveNs, queueNs, handleNs; under
   * fwd_lock): resolving its paths on the worker, waiting for the JavaScript thread to take it,
   * and the handler's work until its answer. The rest of an operation's latency is the kernel's
   * and the caller's (an operation answered in C shows it: docs/PERFORMANCE.md).
   */
  uint64_t lat_n, lat_resolve, lat_queue, lat_handle;
  /*
   * Busy-polling the JavaScript thread's loop (journaled mounts): for `spin_ns` after a forwarded
   * request was delivered, the loop's prepare phase polls its own event sources without blocking
   * instead of sleeping in epoll_wait, so the next request of a burst (a create, its write, its
   * close, the next file's create...) is taken without the thread being woken from sleep, which
   * on a virtual machine costs an inter-processor interrupt: measured ~29 us of a ~106 us chmod.
   * It ends at the first event of any kind, so nothing else waits longer. 0: never (sleep at once).
   */
  uv_prepare_t *spin;
  uint64_t spin_ns;
  uint64_t last_taken_ns; /* when call_js last ran (JavaScript thread only) */
  uint64_t spins, spin_hits; /* polls begun, and those that ended with an event (stats) */
  /*
   * A request answered here that waits for the disk (an fsync: sync_here) ends the poll at once
   * (`spin_yield`): on a machine with few CPUs the poll would take one the sync's completion needs,
   * and what comes next is the caller's, after the sync. Measured on 2 vCPUs, 4 KiB write + fsync:
   * the fsync took 335 us with the poll going on, 270 us without.
   */
  bool spin_yield;
  uint64_t spin_yields;   /* polls ended so (stats) */
  /*
   * A volatile tree's attributes (a Secondary's): kept `timeout` seconds by the kernel, and
   * invalidated exactly when the daemon changes the tree. Every inode whose attributes are handed
   * out (LOOKUP, READDIRPLUS, GETATTR, under the apply lock) is listed once per generation
   * (`given`, under `lock`); the daemon's invalAttrs() after each apply slice, while it holds the
   * readers off, takes the list, starts the next generation and tells the kernel to drop those
   * inodes' attributes (fuse_lowlevel_notify_inval_inode, attributes only: no page is touched, so
   * no request it waits for can be one held off). A reply the kernel gets after that for a request
   * sent before is not cached (its attr_version is older). `given_all`: the list could not grow,
   * so the next invalidation covers every inode of the table.
   */
  uint64_t attr_gen;
  fuse_ino_t *given;
  size_t ngiven, cgiven;
  bool given_all;
  uint64_t invalidated;   /* inodes invalidated so far (stats) */
  /*
   * Every inode the kernel holds has an O_PATH descriptor here until the kernel forgets it, and
   * the kernel keeps inodes while it has memory: a listing of a big tree holds one per entry. So
   * the mount raises the process's descriptor limit as far as it may (fs.nr_open, as root), and
   * a LOOKUP that would leave fewer than LL_FD_RESERVE descriptors for the rest of the daemon
   * (its SRL, LevelDB, sockets, the apply's files) answers EMFILE instead (`inode_fds` of
   * `inode_fd_max`): a caller sees "Too many open files", the daemon goes on; READDIRPLUS lists
   * such names without a node. The entry a change made is looked up for its answer all the same
   * (from the reserve): the change is journaled by then.
   */
  uint64_t inode_fds, inode_fd_max;
  uint64_t refused_emfile; /* lookups refused so (stats) */
  /*
   * fsync and fsyncdir on a journaled mount, answered here (logSync): every write and change is
   * in the SRL's ring (the page cache) before it is answered, so an fdatasync of the ring, on the
   * worker that took the request, makes durable everything answered before it: no trip to the
   * JavaScript thread and back, then to its threadpool and back (see docs/ARCHITECTURE.md).
   * `log_fd` is the addon's own open of the ring (its own open file description: the kernel
   * reports a write-back error once per open file, so the daemon's syncs and these each hear of
   * it), copied under `log_lock` for each fdatasync, so an unregistration meanwhile never has
   * another file synced in its place. The fdatasyncs here run one at a time (`sync_lock`: of two
   * at once only one would hear of an error), and one that began after a caller read the figures
   * answers that caller too (`log_head`: a group commit). `log_pub` is the SRL's [last sequence
   * number, head, closed] (src/srl/index.ts `published`), written by the JavaScript thread after
   * each append's pwrite returned (any value read names bytes in the page cache already: each
   * figure a lower bound of its own); read before the fdatasync, they are what it covers. The handler
   * learns of syncs through one F_SYNCED notice at a time (logSynced() takes the figures). A failed
   * fdatasync answers EIO, and so does every fsync after it (the kernel reports a write-back error
   * once: a later sync would falsely succeed) until the handler registers again. Closed
   * (`log_pub[2]` set), or no log registered (a bare mount, a Secondary's): forwarded, as before.
   */
  pthread_mutex_t log_lock;
  pthread_mutex_t sync_lock; /* held across each fdatasync here (taken before log_lock) */
  int log_fd;
  double *log_pub;
  napi_ref log_ref;
  uint64_t log_gen;       /* registrations so far: a sync begun under an older one reports nothing */
  double log_seq, log_head; /* the newest successful sync's figures (read before it began: what it covered), for logSynced() */
  int log_errno;          /* a failed fdatasync's errno (sticky) */
  bool log_noticed;       /* an F_SYNCED notice is queued and not taken yet */
  uint64_t log_syncs;     /* fsyncs answered here (stats) */
} fs_t;

#define IS_JS(ino) ((ino) != FUSE_ROOT_ID && ((ino) & 1) != 0)

/*
 * Timeouts. A volatile tree (a Secondary's) keeps its inodes' attributes `timeout` seconds and
 * drops exactly those handed out before each change the daemon makes (fs_t.given; the forwarded
 * nodes' are never kept), and names only where the kernel can be told to drop them all at once: a LOOKUP's
 * entry is kept `timeout` seconds when the kernel has epochs (changed() bumps the epoch after
 * every apply slice that changed names; a lookup that began before the bump is invalid after it),
 * else not at all. Entries from READDIRPLUS, which the kernel stamps with the epoch when it links
 * them (after the reply, maybe after a bump), and the forwarded nodes, are never kept.
 */
#define ATTR_TIMEOUT(fs) ((fs)->volatile_tree ? 0.0 : (fs)->timeout)
/* The tree's own inodes' attributes (not the forwarded nodes'): kept on a volatile tree too, which invalidates them (fs_t.given). */
#define TREE_ATTR_TIMEOUT(fs) ((fs)->timeout)
#define LOOKUP_TIMEOUT(fs) (!(fs)->volatile_tree ? (fs)->timeout : (fs)->epoch ? (fs)->timeout : 0.0)
#define LISTED_TIMEOUT(fs) ((fs)->volatile_tree ? 0.0 : (fs)->timeout)
#define JS_ID(ino) ((double) ((ino) >> 1))

/* `in`'s attributes are handed out now (fs->lock held): listed for the next invalidation, once per generation. */
static void given_locked(fs_t *fs, inode_t *in) {
  if (!fs->volatile_tree || in->attr_gen == fs->attr_gen) return;
  in->attr_gen = fs->attr_gen;
  if (fs->ngiven == fs->cgiven) {
    size_t c = fs->cgiven == 0 ? 1024 : fs->cgiven * 2;
    fuse_ino_t *g = realloc(fs->given, c * sizeof(*g));
    if (g == NULL) { fs->given_all = true; return; }
    fs->given = g;
    fs->cgiven = c;
  }
  fs->given[fs->ngiven++] = in == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t) (uintptr_t) in;
}

static size_t bucket_of(dev_t dev, ino_t ino) {
  uint64_t h = (uint64_t) ino * 0x9E3779B97F4A7C15ull ^ (uint64_t) dev;
  return (size_t) (h >> 48) % BUCKETS;
}

static fs_t *fs_of(fuse_req_t req) { return fuse_req_userdata(req); }

static inode_t *inode_of(fuse_req_t req, fuse_ino_t ino) {
  fs_t *fs = fs_of(req);
  return ino == FUSE_ROOT_ID ? &fs->root : (inode_t *) (uintptr_t) ino;
}

/* ---------- requests forwarded to JavaScript ---------- */

enum { F_LOOKUP, F_GETATTR, F_READLINK, F_OPENDIR, F_READDIR, F_RELEASEDIR, F_OPEN, F_READ, F_RELEASE, F_GETXATTR, F_LISTXATTR, F_GONE, F_FORGET,
  /* a journaled mount's changes, on the data directory's nodes (paths, not node ids) */
  F_SETATTR, F_MKNOD, F_MKDIR, F_SYMLINK, F_UNLINK, F_RMDIR, F_RENAME, F_LINK, F_CREATE, F_WOPEN, F_WRITE, F_WREAD, F_WRELEASE,
  F_FSYNC, F_FSYNCDIR, F_SETXATTR, F_REMOVEXATTR, F_FALLOCATE,
  /* notices of the journaled mount's own work */
  F_SYNCED };
static const char *const fwd_ops[] = { "lookup", "getattr", "readlink", "opendir", "readdir", "releasedir", "open", "read", "release", "getxattr", "listxattr", "gone", "forget",
  "setattr", "mknod", "mkdir", "symlink", "unlink", "rmdir", "rename", "link", "create", "wopen", "write", "wread", "wrelease",
  "fsync", "fsyncdir", "setxattr", "removexattr", "fallocate", "synced" };
/* The numbers a change carries besides size/offset/fh/flags (fwd_t.num), by these names. */
enum { N_MODE, N_RDEV, N_UID, N_GID, N_VALID, N_ATIME, N_ATIME_NS, N_MTIME, N_MTIME_NS, N_DATASYNC, N_TO_UID, N_TO_GID, NUMS };
static const char *const num_names[] = { "mode", "rdev", "uid", "gid", "valid", "atime", "atimeNs", "mtime", "mtimeNs", "datasync", "toUid", "toGid" };
/* Notices: no request to answer (not kept in fs_t.fwds), freed by their delivery. */
#define IS_NOTICE(op) ((op) == F_GONE || (op) == F_FORGET || (op) == F_SYNCED)
enum { QUEUED, DELIVERED, ABANDONED };

typedef struct fwd {
  uint32_t id;
  int op;
  int state;              /* QUEUED until the handler has it; ABANDONED: the mount ended first */
  fuse_req_t req;
  double node;            /* the JavaScript id (0: the root, for the lookup of fwd_name) */
  char *name;
  uint64_t size;
  int64_t off;
  uint64_t fh;
  int flags;
  struct fwd *next;
  /* a change's: its paths, data (write, setxattr), numbers; the entry its answer looks up (lparent, lname); create's file info */
  char *path, *path2;
  void *data;
  size_t len;
  double num[NUMS];
  fuse_ino_t lparent;
  char *lname;
  struct fuse_file_info fi;
  struct fs_s *fs;        /* for the gate: */
  bool gated;             /* counted in use (fs_t.inuse) until answered */
  bool dir_rename;        /* the rename of a directory: holds the gate until answered */
  uint64_t t_made, t_sent, t_taken; /* CLOCK_MONOTONIC ns: made on the worker, queued, delivered to the handler */
} fwd_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void gate_leave(fwd_t *f);
static void free_fwd(fwd_t *f) { gate_leave(f); free(f->name); free(f->path); free(f->path2); free(f->data); free(f->lname); free(f); }

/*
 * Queues `f` to the handler (fwd_lock held: the thread-safe function is not finalized meanwhile;
 * Node takes an item off its queue before call_js runs, without this lock, so the order of the
 * two locks never inverts). False: nothing queued.
 */
static bool queue_locked(fs_t *fs, fwd_t *f) {
  return !fs->tsfn_dead && napi_call_threadsafe_function(fs->tsfn, f, napi_tsfn_nonblocking) == napi_ok;
}

/* Queues `f` (its request's answer) to the handler; it answers by id (reply*), or it is answered EIO here if it cannot be queued. */
static void send_fwd(fs_t *fs, fwd_t *f) {
  fuse_req_t req = f->req;
  f->t_sent = now_ns();
  if (f->t_made == 0) f->t_made = f->t_sent;
  pthread_mutex_lock(&fs->fwd_lock);
  do f->id = ++fs->fwd_next; while (f->id == 0);
  bool queued = queue_locked(fs, f);
  if (queued) { f->next = fs->fwds; fs->fwds = f; }
  pthread_mutex_unlock(&fs->fwd_lock);
  if (!queued) { free_fwd(f); fuse_reply_err(req, EIO); }
}

static void forward(fuse_req_t req, int op, fuse_ino_t ino, const char *name, uint64_t size, int64_t off, uint64_t fh, int flags) {
  fwd_t *f = calloc(1, sizeof(*f));
  if (f == NULL || (name != NULL && (f->name = strdup(name)) == NULL)) { free(f); fuse_reply_err(req, ENOMEM); return; }
  f->op = op; f->req = req; f->node = ino == FUSE_ROOT_ID ? 0 : JS_ID(ino);
  f->size = size; f->off = off; f->fh = fh; f->flags = flags;
  send_fwd(fs_of(req), f);
}

/* Queues a notice (F_GONE, F_FORGET, F_SYNCED): nothing to answer; dropped if it cannot be queued (false). */
static bool notice(fs_t *fs, int op, double node, uint64_t n) {
  fwd_t *f = calloc(1, sizeof(*f));
  if (f == NULL) return false;
  f->op = op; f->node = node; f->size = n;
  pthread_mutex_lock(&fs->fwd_lock);
  bool queued = queue_locked(fs, f);
  pthread_mutex_unlock(&fs->fwd_lock);
  if (!queued) free(f);
  return queued;
}

/* Takes request `id`, delivered to the handler and not answered yet (NULL: answered already, not delivered yet, or the mount ended). */
static fwd_t *take_fwd(fs_t *fs, uint32_t id) {
  pthread_mutex_lock(&fs->fwd_lock);
  fwd_t **p = &fs->fwds;
  while (*p != NULL && (*p)->id != id) p = &(*p)->next;
  fwd_t *f = *p;
  if (f != NULL && f->state == DELIVERED) {
    *p = f->next;
    fs->lat_n++;
    fs->lat_resolve += f->t_sent - f->t_made;
    fs->lat_queue += f->t_taken - f->t_sent;
    fs->lat_handle += now_ns() - f->t_taken;
  } else {
    f = NULL;
  }
  pthread_mutex_unlock(&fs->fwd_lock);
  return f;
}

static void free_data(napi_env env, void *data, void *hint) { (void) env; (void) hint; free(data); }


/* On the JavaScript thread: hands a queued request to the handler as { op, id, node, name?, size?, offset?, fh?, flags? }. */
static void call_js(napi_env env, napi_value handler, void *context, void *data) {
  fs_t *fs = context;
  fwd_t *f = data;
  if (!IS_NOTICE(f->op)) {
    f->t_taken = fs->last_taken_ns = now_ns();
    pthread_mutex_lock(&fs->fwd_lock);
    bool abandoned = f->state == ABANDONED;
    if (!abandoned) f->state = DELIVERED;
    pthread_mutex_unlock(&fs->fwd_lock);
    if (abandoned) { free_fwd(f); return; }
  }
  if (env == NULL) { if (IS_NOTICE(f->op)) free_fwd(f); return; } /* torn down: unmount answered it */
  /*
   * The request goes as arguments, not as an object built here: a property set from C costs a
   * lookup of its name in V8's string table and a map transition each, ~15% of the JavaScript
   * thread's time under a write load (perf); the wrapper in src/native/addons.ts builds the
   * LlRequest in JavaScript, where the object literal's shape is made once. The order:
   * op (index into `ops`), id, node, name, size, offset, fh, flags, then a change's path, path2,
   * data and its numbers (num_names).
   */
  napi_value argv[11 + NUMS], undef;
  napi_get_undefined(env, &undef);
  size_t argc = 8;
  napi_create_uint32(env, (uint32_t) f->op, &argv[0]);
  napi_create_uint32(env, f->id, &argv[1]);
  napi_create_double(env, f->node, &argv[2]);
  if (f->name != NULL) napi_create_string_utf8(env, f->name, NAPI_AUTO_LENGTH, &argv[3]); else argv[3] = undef;
  napi_create_double(env, (double) f->size, &argv[4]);
  napi_create_double(env, (double) f->off, &argv[5]);
  napi_create_double(env, (double) f->fh, &argv[6]);
  napi_create_int32(env, f->flags, &argv[7]);
  if (f->op >= F_SETATTR && f->op <= F_FALLOCATE) {
    argc = 11 + NUMS;
    if (f->path != NULL) napi_create_string_utf8(env, f->path, NAPI_AUTO_LENGTH, &argv[8]); else argv[8] = undef;
    if (f->path2 != NULL) napi_create_string_utf8(env, f->path2, NAPI_AUTO_LENGTH, &argv[9]); else argv[9] = undef;
    argv[10] = undef;
    if (f->data != NULL || f->op == F_WRITE || f->op == F_SETXATTR) {
      /* The bytes go to JavaScript without a copy: the buffer owns them now. */
      void *d = f->data;
      if (d == NULL) napi_create_buffer(env, 0, NULL, &argv[10]);
      else if (napi_create_external_buffer(env, f->len, d, free_data, NULL, &argv[10]) == napi_ok) f->data = NULL;
      else napi_create_buffer_copy(env, f->len, d, NULL, &argv[10]); /* external buffers refused (a sandboxed build): copied, freed with f */
    }
    for (int i = 0; i < NUMS; i++) napi_create_double(env, f->num[i], &argv[11 + i]);
  }
  uint32_t id = f->id;
  bool request = !IS_NOTICE(f->op);
  if (!request) free_fwd(f);
  napi_call_function(env, undef, handler, argc, argv, NULL);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending && request) {
    /* The handler threw before answering: the request is answered EIO (never left hanging, holding
       the kernel's directory lock), and the exception goes on, uncaught, to the process. */
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    fwd_t *g = take_fwd(fs, id);
    if (g != NULL) { fuse_reply_err(g->req, EIO); free_fwd(g); }
    napi_fatal_exception(env, err);
  }
}

/* The loop's prepare phase (see fs_t.spin): poll, without sleeping, until an event or the window's end. */
static void spin_cb(uv_prepare_t *h) {
  fs_t *fs = h->data;
  if (fs == NULL || fs->spin_ns == 0) return;
  uint64_t until = fs->last_taken_ns + fs->spin_ns;
  uint64_t t0 = now_ns();
  if (t0 >= until) return;
  /* Not when the loop has work due now (setImmediate, a timer), nor past its next timer. */
  int due = uv_backend_timeout(h->loop);
  if (due == 0) return;
  if (due > 0 && t0 + (uint64_t) due * 1000000u < until) until = t0 + (uint64_t) due * 1000000u;
  struct pollfd p = { .fd = uv_backend_fd(h->loop), .events = POLLIN };
  fs->spins++;
  __atomic_store_n(&fs->spin_yield, false, __ATOMIC_RELAXED);
  for (;;) {
    if (poll(&p, 1, 0) != 0) { fs->spin_hits++; return; }
    if (now_ns() >= until) return;
    if (__atomic_load_n(&fs->spin_yield, __ATOMIC_RELAXED)) { fs->spin_yields++; return; }
  }
}

static void spin_closed(uv_handle_t *h) { free(h); }

static void spin_stop(fs_t *fs) {
  if (fs->spin == NULL) return;
  fs->spin->data = NULL;
  uv_prepare_stop(fs->spin);
  uv_close((uv_handle_t *) fs->spin, spin_closed);
  fs->spin = NULL;
}

/* The attributes a handler gives: a Float64Array of 14 (mode, uid, gid, size, nlink, ino, rdev, blocks, atime s, ns, mtime s, ns, ctime s, ns). */
#define STAT_FIELDS 14
static void stat_from(const double *a, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_mode = (mode_t) a[0]; st->st_uid = (uid_t) a[1]; st->st_gid = (gid_t) a[2]; st->st_size = (off_t) a[3];
  st->st_nlink = (nlink_t) a[4]; st->st_ino = (ino_t) a[5]; st->st_rdev = (dev_t) a[6]; st->st_blocks = (blkcnt_t) a[7];
  st->st_blksize = 4096;
  st->st_atim.tv_sec = (time_t) a[8]; st->st_atim.tv_nsec = (long) a[9];
  st->st_mtim.tv_sec = (time_t) a[10]; st->st_mtim.tv_nsec = (long) a[11];
  st->st_ctim.tv_sec = (time_t) a[12]; st->st_ctim.tv_nsec = (long) a[13];
}


static bool wait_applied(fs_t *fs, dev_t dev, ino_t ino);
static bool pend_has(fs_t *fs, dev_t dev, ino_t ino);

/* Whether descriptor `fd`'s dentry was removed (the kernel names it "PATH (deleted)"). */
static bool kept_name_gone(int fd) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof(path));
  static const char gone[] = " (deleted)";
  return n >= (ssize_t) sizeof(gone) - 1 && n < (ssize_t) sizeof(path) && memcmp(path + n - (sizeof(gone) - 1), gone, sizeof(gone) - 1) == 0;
}

/*
 * Looks `name` up in `parent`: fills `e`, takes a lookup reference. Returns 0 or an errno. On a
 * worker (`may_wait`), an inode with writes in flight is waited for; on the JavaScript thread (a
 * change's answer) it must not be (only that thread applies them): its attributes then go
 * uncached.
 */
static int do_lookup_at(fuse_req_t req, fuse_ino_t parent, const char *name, struct fuse_entry_param *e, bool may_wait) {
  fs_t *fs = fs_of(req);
  memset(e, 0, sizeof(*e));
  e->attr_timeout = TREE_ATTR_TIMEOUT(fs);
  e->entry_timeout = LOOKUP_TIMEOUT(fs);
  int fd = openat(inode_of(req, parent)->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) { int err = errno; close(fd); return err; }
  if (!may_wait) { if (pend_has(fs, e->attr.st_dev, e->attr.st_ino)) e->attr_timeout = 0; }
  else if (wait_applied(fs, e->attr.st_dev, e->attr.st_ino) && fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) { int err = errno; close(fd); return err; }
  pthread_mutex_lock(&fs->lock);
  inode_t *in;
  if (e->attr.st_dev == fs->root.dev && e->attr.st_ino == fs->root.ino) in = &fs->root;
  else {
    size_t b = bucket_of(e->attr.st_dev, e->attr.st_ino);
    for (in = fs->table[b]; in != NULL; in = in->next) if (in->dev == e->attr.st_dev && in->ino == e->attr.st_ino) break;
    if (in == NULL) {
      /* (Not the answer of a change the daemon made, on the JavaScript thread: that one is done
         and journaled already, and takes from the reserve.) */
      if (may_wait && fs->inode_fds >= fs->inode_fd_max) { fs->refused_emfile++; pthread_mutex_unlock(&fs->lock); close(fd); return EMFILE; }
      in = calloc(1, sizeof(*in));
      if (in == NULL) { pthread_mutex_unlock(&fs->lock); close(fd); return ENOMEM; }
      fs->inode_fds++;
      in->fd = fd;
      fd = -1;
      in->dev = e->attr.st_dev;
      in->ino = e->attr.st_ino;
      in->next = fs->table[b];
      fs->table[b] = in;
    }
  }
  /* A volatile tree: an inode the kernel has no reference to gets its first attributes uncached.
     The kernel makes its inode after this reply, and an invalidation sent before that (an apply
     slice right after) finds none to drop: cached, they could outlive the change. Once it has
     the inode, attr_version makes a late reply uncached, and invalidations reach it. */
  if (fs->volatile_tree && in->nlookup == 0) e->attr_timeout = 0;
  else given_locked(fs, in);
  in->nlookup++;
  pthread_mutex_unlock(&fs->lock);
  if (fd >= 0) {
    /* Known already. A journaled mount names a node by its descriptor's dentry (node_path): where
       that name is gone (a hard link's other name removed), the name just looked up replaces it.
       dup3 swaps it atomically: a worker using the number meanwhile reaches the same inode either
       way. (The reference just taken keeps `in` alive.) */
    if (fs->journaled && kept_name_gone(in->fd)) dup3(fd, in->fd, O_CLOEXEC);
    close(fd);
  }
  e->ino = in == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t) (uintptr_t) in;
  return 0;
}

static int do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name, struct fuse_entry_param *e) { return do_lookup_at(req, parent, name, e, true); }

static void forget_in(fs_t *fs, fuse_ino_t ino, uint64_t n) {
  if (IS_JS(ino)) { notice(fs, F_FORGET, JS_ID(ino), n); return; } /* the handler counts its nodes' lookups */
  if (ino == FUSE_ROOT_ID) return;
  inode_t *in = (inode_t *) (uintptr_t) ino;
  pthread_mutex_lock(&fs->lock);
  in->nlookup = n >= in->nlookup ? 0 : in->nlookup - n;
  if (in->nlookup == 0) {
    inode_t **p = &fs->table[bucket_of(in->dev, in->ino)];
    while (*p != NULL && *p != in) p = &(*p)->next;
    if (*p == in) *p = in->next;
    close(in->fd);
    free(in);
    fs->inode_fds--;
  }
  pthread_mutex_unlock(&fs->lock);
}

static void forget_one(fuse_req_t req, fuse_ino_t ino, uint64_t n) { forget_in(fs_of(req), ino, n); }

/* ---------- a journaled mount: writes in flight, paths ---------- */

static bool pend_has_locked(fs_t *fs, ino_t ino) {
  for (pend_t *e = fs->pend[ino % PEND_BUCKETS]; e != NULL; e = e->next) if (e->ino == ino) return true;
  return false;
}

/*
 * Waits while inode `ino` of the root's filesystem has writes answered and not applied yet; true
 * if it waited (what the caller read of it before is stale). Holds no lock the apply needs: the
 * handler applies on its own thread and then calls pending(ino, false).
 */
static bool wait_applied(fs_t *fs, dev_t dev, ino_t ino) {
  if (dev != fs->root.dev || __atomic_load_n(&fs->npending, __ATOMIC_ACQUIRE) == 0) return false; /* (the set names the data directory's filesystem's inodes) */
  bool waited = false;
  pthread_mutex_lock(&fs->pend_lock);
  while (!fs->pend_off && pend_has_locked(fs, ino)) {
    waited = true;
    __atomic_add_fetch(&fs->waiting, 1, __ATOMIC_RELAXED);
    pthread_cond_wait(&fs->pend_cond, &fs->pend_lock);
    __atomic_sub_fetch(&fs->waiting, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&fs->pend_lock);
  return waited;
}

/* Whether inode (dev, ino) has writes in flight now (no wait). */
static bool pend_has(fs_t *fs, dev_t dev, ino_t ino) {
  if (dev != fs->root.dev || __atomic_load_n(&fs->npending, __ATOMIC_ACQUIRE) == 0) return false;
  pthread_mutex_lock(&fs->pend_lock);
  bool has = !fs->pend_off && pend_has_locked(fs, ino);
  pthread_mutex_unlock(&fs->pend_lock);
  return has;
}

static void pend_clear(fs_t *fs) {
  pthread_mutex_lock(&fs->pend_lock);
  for (size_t b = 0; b < PEND_BUCKETS; b++) {
    for (pend_t *e = fs->pend[b]; e != NULL;) { pend_t *next = e->next; free(e); e = next; }
    fs->pend[b] = NULL;
  }
  __atomic_store_n(&fs->npending, 0, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&fs->pend_cond);
  pthread_mutex_unlock(&fs->pend_lock);
}

/* A change resolves its paths: waits while a directory's rename is in flight. False: unmounting. */
static void gate_wait(fs_t *fs) {
  fs->gate_waiting++;
  pthread_cond_wait(&fs->gate_cond, &fs->gate_lock);
  fs->gate_waiting--;
}

static bool gate_enter(fs_t *fs) {
  pthread_mutex_lock(&fs->gate_lock);
  while (fs->dir_renaming && !fs->gate_off) gate_wait(fs);
  bool ok = !fs->gate_off;
  if (ok) fs->inuse++;
  pthread_mutex_unlock(&fs->gate_lock);
  return ok;
}

/* The rename of a directory: waits for the changes in use, keeps new ones out. False: unmounting. */
static bool gate_enter_exclusive(fs_t *fs) {
  pthread_mutex_lock(&fs->gate_lock);
  while (fs->dir_renaming && !fs->gate_off) gate_wait(fs);
  if (!fs->gate_off) fs->dir_renaming = true;
  while (fs->inuse > 0 && !fs->gate_off) gate_wait(fs);
  bool ok = !fs->gate_off;
  if (!ok) fs->dir_renaming = false;
  pthread_mutex_unlock(&fs->gate_lock);
  return ok;
}

/* A change is answered (or dropped): what it held of the gate goes. */
static void gate_leave(fwd_t *f) {
  if (!f->gated && !f->dir_rename) return;
  fs_t *fs = f->fs;
  pthread_mutex_lock(&fs->gate_lock);
  if (f->gated && fs->inuse > 0) fs->inuse--;
  if (f->dir_rename) fs->dir_renaming = false;
  pthread_cond_broadcast(&fs->gate_cond);
  pthread_mutex_unlock(&fs->gate_lock);
  f->gated = f->dir_rename = false;
}

/* Whether `s` is UTF-8 (names go to JavaScript as strings, and to the SRL: anything else would be replicated changed). */
static bool valid_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *) s;
  while (*p != 0) {
    unsigned c = *p++;
    int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    if (n < 0 || (n == 1 && c < 0xC2) || (c == 0xF4 && p[0] > 0x8F) || c > 0xF4) return false;
    if (n == 2 && ((c == 0xE0 && p[0] < 0xA0) || (c == 0xED && p[0] > 0x9F))) return false;
    if (n == 3 && c == 0xF0 && p[0] < 0x90) return false;
    for (int i = 0; i < n; i++) if ((*p++ & 0xC0) != 0x80) return false;
  }
  return true;
}

/*
 * The path of node `ino` under the root: "/" for the root, else "/a/b", the name the kernel's
 * dentry of its descriptor has now (renames follow it), checked to name that very inode. 0 or an
 * errno: ESTALE when it has no name any more (a hard link's other name removed: the inode is
 * reached by another name only after a new lookup).
 */
static int node_path(fs_t *fs, fuse_ino_t ino, char *out, size_t cap) {
  if (ino == FUSE_ROOT_ID) { snprintf(out, cap, "/"); return 0; }
  if (IS_JS(ino)) return EROFS;
  inode_t *in = (inode_t *) (uintptr_t) ino;
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", in->fd);
  ssize_t n = readlink(link, out, cap);
  if (n < 0) return errno;
  if ((size_t) n >= cap) return ENAMETOOLONG;
  out[n] = '\0';
  if ((size_t) n <= fs->root_len || memcmp(out, fs->root_path, fs->root_len) != 0 || out[fs->root_len] != '/') return ESTALE;
  struct stat st;
  if (fstatat(fs->root.fd, out + fs->root_len + 1, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != in->dev || st.st_ino != in->ino) return ESTALE;
  memmove(out, out + fs->root_len, (size_t) n - fs->root_len + 1);
  return 0;
}

/* `parent`'s path joined with `name`. */
static int child_path(fs_t *fs, fuse_ino_t parent, const char *name, char *out, size_t cap) {
  int err = node_path(fs, parent, out, cap);
  if (err != 0) return err;
  size_t n = strlen(out);
  if (n == 1) n = 0; /* the root: "/" + name */
  if (n + 1 + strlen(name) + 1 > cap) return ENAMETOOLONG;
  out[n] = '/';
  strcpy(out + n + 1, name);
  return 0;
}

/*
 * A change on the data directory's nodes, to forward: `path` is node `ino`'s (joined with `name`
 * if given), the caller's ids in num[N_UID/N_GID]; in use (the gate) until answered (F_RENAME:
 * pass it only for a directory's rename, which takes the gate whole). NULL: answered here already
 * (EROFS: not a journaled mount, or a forwarded node; or why the path cannot be had).
 */
static fwd_t *change(fuse_req_t req, int op, fuse_ino_t ino, const char *name) {
  fs_t *fs = fs_of(req);
  if (!fs->journaled || IS_JS(ino) || (ino == FUSE_ROOT_ID && name != NULL && fs->fwd_name != NULL && strcmp(name, fs->fwd_name) == 0)) {
    fuse_reply_err(req, EROFS);
    return NULL;
  }
  fwd_t *f = calloc(1, sizeof(*f));
  if (f == NULL) { fuse_reply_err(req, ENOMEM); return NULL; }
  f->op = op; f->req = req; f->fs = fs; f->t_made = now_ns();
  if (!(op == F_RENAME ? gate_enter_exclusive(fs) : gate_enter(fs))) { free_fwd(f); fuse_reply_err(req, ENOTCONN); return NULL; }
  if (op == F_RENAME) f->dir_rename = true; else f->gated = true;
  char path[PATH_MAX];
  int err = name != NULL ? child_path(fs, ino, name, path, sizeof(path)) : node_path(fs, ino, path, sizeof(path));
  if (err == 0 && !valid_utf8(path)) err = EILSEQ;
  if (err == 0 && (f->path = strdup(path)) == NULL) err = ENOMEM;
  if (err != 0) { free_fwd(f); fuse_reply_err(req, err); return NULL; }
  const struct fuse_ctx *ctx = fuse_req_ctx(req);
  f->num[N_UID] = ctx->uid;
  f->num[N_GID] = ctx->gid;
  return f;
}

/* The second path of a rename or link: `newparent`/`newname` (never the forwarded name). */
static int change_target(fuse_req_t req, fuse_ino_t newparent, const char *newname, char *out, size_t cap) {
  fs_t *fs = fs_of(req);
  if (IS_JS(newparent) || (newparent == FUSE_ROOT_ID && fs->fwd_name != NULL && strcmp(newname, fs->fwd_name) == 0)) return EROFS;
  int err = child_path(fs, newparent, newname, out, cap);
  return err == 0 && !valid_utf8(out) ? EILSEQ : err;
}

/* The entry a change's answer looks up (replyLookup, replyCreate). False: out of memory (f freed, answered). */
static bool entry_of(fwd_t *f, fuse_ino_t parent, const char *name) {
  f->lparent = parent;
  if ((f->lname = strdup(name)) == NULL) { fuse_reply_err(f->req, ENOMEM); free_fwd(f); return false; }
  return true;
}

/* Bytes a change carries (copied: the request's buffer is libfuse's again once the op returns). False: out of memory (f freed, answered). */
static bool data_of(fwd_t *f, const void *data, size_t len) {
  f->len = len;
  if ((f->data = malloc(len > 0 ? len : 1)) == NULL) { fuse_reply_err(f->req, ENOMEM); free_fwd(f); return false; }
  memcpy(f->data, data, len);
  return true;
}

/* The handler's handles are odd (2h + 1), ours (pointers) even. */
#define IS_JS_FH(fh) (((fh) & 1) != 0)


/* ---------- operations ---------- */

static void op_init(void *userdata, struct fuse_conn_info *conn) {
  fs_t *fs = userdata;
  /* FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN): the kernel reads an open file's backing file
     itself, no request reaches us. Refused: every read is served here, as without it. */
  if (fs->want_passthrough) fs->passthrough = fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH);
  fs->epoch = conn->proto_major > 7 || (conn->proto_major == 7 && conn->proto_minor >= 44);
  pthread_mutex_lock(&fs->lock);
  fs->inited = true;
  pthread_cond_broadcast(&fs->init_cond);
  pthread_mutex_unlock(&fs->lock);
  if (fs->journaled) {
    /* Every change reaches the handler as the caller made it, in order: O_TRUNC as its own
       SETATTR, suid/sgid cleared by the kernel's SETATTR, the umask applied by the kernel, no
       write cached and handed over later. */
    fuse_unset_feature_flag(conn, FUSE_CAP_ATOMIC_O_TRUNC);
    fuse_unset_feature_flag(conn, FUSE_CAP_DONT_MASK);
    fuse_unset_feature_flag(conn, FUSE_CAP_HANDLE_KILLPRIV);
    fuse_unset_feature_flag(conn, FUSE_CAP_HANDLE_KILLPRIV_V2);
    fuse_unset_feature_flag(conn, FUSE_CAP_WRITEBACK_CACHE);
    fuse_unset_feature_flag(conn, FUSE_CAP_POSIX_ACL);
    /* A write is one record: at most LL_WRITE_BYTES_MAX (src/limits.ts), the SRL record format's
       bound (version 3); libfuse asks for max_pages to match. */
    conn->max_write = JOURNALED_WRITE_BYTES_MAX;
  }
  /* No locks to forward (the kernel keeps them locally); directory listings with attributes in one request. */
  fuse_set_feature_flag(conn, FUSE_CAP_READDIRPLUS);
  fuse_unset_feature_flag(conn, FUSE_CAP_READDIRPLUS_AUTO);
}

static bool forwarded_name(fuse_req_t req, fuse_ino_t parent, const char *name) {
  fs_t *fs = fs_of(req);
  return IS_JS(parent) || (parent == FUSE_ROOT_ID && fs->fwd_name != NULL && strcmp(name, fs->fwd_name) == 0);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (forwarded_name(req, parent, name)) { forward(req, F_LOOKUP, parent, name, 0, 0, 0, 0); return; }
  struct fuse_entry_param e;
  int err = do_lookup(req, parent, name, &e);
  if (err != 0) fuse_reply_err(req, err);
  else fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  forget_one(req, ino, nlookup);
  fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  for (size_t i = 0; i < count; i++) forget_one(req, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) fi;
  if (IS_JS(ino)) { forward(req, F_GETATTR, ino, NULL, 0, 0, 0, 0); return; }
  struct stat st;
  fs_t *fs = fs_of(req);
  inode_t *in = inode_of(req, ino);
  int fd = in->fd;
  if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ||
      (wait_applied(fs, st.st_dev, st.st_ino) && fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)) { fuse_reply_err(req, errno); return; }
  if (fs->volatile_tree) { pthread_mutex_lock(&fs->lock); given_locked(fs, in); pthread_mutex_unlock(&fs->lock); }
  fuse_reply_attr(req, &st, TREE_ATTR_TIMEOUT(fs));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  if (IS_JS(ino)) { forward(req, F_READLINK, ino, NULL, 0, 0, 0, 0); return; }
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(inode_of(req, ino)->fd, "", buf, sizeof(buf));
  if (n < 0) { fuse_reply_err(req, errno); return; }
  if (n >= (ssize_t) sizeof(buf)) { fuse_reply_err(req, ENAMETOOLONG); return; }
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

/* Opens inode `ino` with `flags` through its O_PATH descriptor. */
static int reopen(fuse_req_t req, fuse_ino_t ino, int flags) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_of(req, ino)->fd);
  return open(path, (flags & ~O_NOFOLLOW) | O_CLOEXEC);
}

typedef struct { DIR *dp; off_t offset; struct dirent *entry; } dir_t;

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (IS_JS(ino)) { forward(req, F_OPENDIR, ino, NULL, 0, 0, 0, fi->flags); return; }
  dir_t *d = calloc(1, sizeof(*d));
  if (d == NULL) { fuse_reply_err(req, ENOMEM); return; }
  int fd = reopen(req, ino, O_RDONLY | O_DIRECTORY);
  if (fd < 0 || (d->dp = fdopendir(fd)) == NULL) { int err = errno; if (fd >= 0) close(fd); free(d); fuse_reply_err(req, err); return; }
  fi->fh = (uint64_t) (uintptr_t) d;
  /* Listings kept only where nothing changes the tree behind the kernel: not a Secondary's (the
     apply), not a Primary's (the daemon hides and unlinks files open to write by itself). */
  if (!fs_of(req)->volatile_tree && !fs_of(req)->journaled) { fi->keep_cache = 1; fi->cache_readdir = 1; }
  __atomic_add_fetch(&fs_of(req)->opens, 1, __ATOMIC_RELAXED);
  if (fuse_reply_open(req, fi) != 0) { /* interrupted: no RELEASEDIR will come */
    __atomic_sub_fetch(&fs_of(req)->opens, 1, __ATOMIC_RELAXED);
    closedir(d->dp);
    free(d);
  }
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  if (IS_JS(ino)) { forward(req, F_READDIR, ino, NULL, size, offset, fi->fh, 0); return; }
  fs_t *fs = fs_of(req);
  dir_t *d = (dir_t *) (uintptr_t) fi->fh;
  char *buf = malloc(size);
  if (buf == NULL) { fuse_reply_err(req, ENOMEM); return; }
  if (offset != d->offset) { seekdir(d->dp, offset); d->entry = NULL; d->offset = offset; }
  size_t used = 0;
  int err = 0;
  for (;;) {
    if (d->entry == NULL) {
      errno = 0;
      d->entry = readdir(d->dp);
      if (d->entry == NULL) { err = errno; break; }
    }
    const char *name = d->entry->d_name;
    off_t next = d->entry->d_off;
    struct fuse_entry_param e;
    size_t n;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
      /* No lookup reference for these: the kernel does not take one. */
      memset(&e, 0, sizeof(e));
      e.attr.st_ino = d->entry->d_ino;
      e.attr.st_mode = (mode_t) d->entry->d_type << 12;
      n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, next);
      if (n > size - used) break;
    } else if (ino == FUSE_ROOT_ID && fs->fwd_name != NULL && strcmp(name, fs->fwd_name) == 0) {
      d->entry = NULL; d->offset = next; continue; /* the forwarded name is not listed (snapdir=hidden) */
    } else {
      int lerr = do_lookup(req, ino, name, &e);
      if (lerr == ENOENT) { d->entry = NULL; d->offset = next; continue; } /* gone meanwhile */
      if (lerr == EMFILE) {
        /* No descriptor left for another inode (fs_t.inode_fds): the name is listed without
           attributes or a node (node id 0: the kernel makes no entry), as "." is; a stat of it
           looks it up, and may get EMFILE then. */
        memset(&e, 0, sizeof(e));
        e.attr.st_ino = d->entry->d_ino;
        e.attr.st_mode = (mode_t) d->entry->d_type << 12;
        n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, next);
        if (n > size - used) break;
        used += n; d->entry = NULL; d->offset = next;
        continue;
      }
      if (lerr != 0) { err = lerr; break; }
      e.entry_timeout = LISTED_TIMEOUT(fs);
      n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, next);
      if (n > size - used) { forget_one(req, e.ino, 1); break; } /* did not fit: not passed, so not referenced */
    }
    used += n;
    d->entry = NULL;
    d->offset = next;
  }
  if (err != 0 && used == 0) fuse_reply_err(req, err);
  else fuse_reply_buf(req, buf, used);
  free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  __atomic_sub_fetch(&fs_of(req)->opens, 1, __ATOMIC_RELAXED);
  if (IS_JS(ino)) { forward(req, F_RELEASEDIR, ino, NULL, 0, 0, fi->fh, 0); return; }
  dir_t *d = (dir_t *) (uintptr_t) fi->fh;
  closedir(d->dp);
  free(d);
  fuse_reply_err(req, 0);
}

/* An open file: its descriptor, and the inode whose backing file it reads through (passthrough) or NULL. */
typedef struct { int fd; inode_t *pt; } open_t;

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
    /* To write: the handler's (a journaled mount's), answered with its handle (replyOpen). */
    fwd_t *f = change(req, F_WOPEN, ino, NULL);
    if (f == NULL) return;
    f->flags = fi->flags;
    send_fwd(fs_of(req), f);
    return;
  }
  if (IS_JS(ino)) { forward(req, F_OPEN, ino, NULL, 0, 0, 0, fi->flags); return; }
  open_t *o = calloc(1, sizeof(*o));
  if (o == NULL) { fuse_reply_err(req, ENOMEM); return; }
  o->fd = reopen(req, ino, fi->flags & ~(O_CREAT | O_TRUNC | O_APPEND));
  if (o->fd < 0) { int err = errno; free(o); fuse_reply_err(req, err); return; }
  fs_t *fs = fs_of(req);
  inode_t *in = inode_of(req, ino);
  if (fs->passthrough && in != &fs->root) {
    /* One backing id per inode (the kernel's rule), shared by its opens, closed by the last release. */
    pthread_mutex_lock(&fs->lock);
    if (in->opens == 0) in->backing_id = fuse_passthrough_open(req, o->fd);
    if (in->backing_id > 0) { in->opens++; fi->backing_id = in->backing_id; o->pt = in; }
    pthread_mutex_unlock(&fs->lock);
  }
  fi->fh = (uint64_t) (uintptr_t) o;
  /* Read-only: what the page cache holds stays true until the daemon invalidates it. (Not with
     passthrough: the kernel takes only FOPEN_PASSTHROUGH_MASK flags with it, else EIO; its pages
     are the backing file's anyway.) */
  if (o->pt == NULL && !fs->volatile_tree) fi->keep_cache = 1;
  /* A changing tree without a backing file: no page cache at all, so a file kept open reads what is
     applied now (as the compat transport's direct_io). */
  if (o->pt == NULL && fs->volatile_tree) fi->direct_io = 1;
  __atomic_add_fetch(&fs->opens, 1, __ATOMIC_RELAXED);
  if (fuse_reply_open(req, fi) != 0) { /* interrupted: no RELEASE will come */
    __atomic_sub_fetch(&fs->opens, 1, __ATOMIC_RELAXED);
    if (o->pt != NULL) {
      pthread_mutex_lock(&fs->lock);
      /* (req is gone with its reply: the backing id is closed on the session's device.) */
      if (--o->pt->opens == 0) { int id = o->pt->backing_id; ioctl(fuse_session_fd(fs->se), FUSE_DEV_IOC_BACKING_CLOSE, &id); o->pt->backing_id = 0; }
      pthread_mutex_unlock(&fs->lock);
    }
    close(o->fd);
    free(o);
  }
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  if (IS_JS(ino)) { forward(req, F_READ, ino, NULL, size, off, fi->fh, 0); return; }
  if (IS_JS_FH(fi->fh)) { forward(req, F_WREAD, ino, NULL, size, off, fi->fh >> 1, 0); return; } /* opened to write: the handler's */
  wait_applied(fs_of(req), inode_of(req, ino)->dev, inode_of(req, ino)->ino);
  __atomic_add_fetch(&fs_of(req)->reads, 1, __ATOMIC_RELAXED);
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  buf.buf[0].fd = ((open_t *) (uintptr_t) fi->fh)->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  __atomic_sub_fetch(&fs_of(req)->opens, 1, __ATOMIC_RELAXED);
  if (IS_JS(ino)) { forward(req, F_RELEASE, ino, NULL, 0, 0, fi->fh, 0); return; }
  if (IS_JS_FH(fi->fh)) {
    /* With the node's path now, where it has one (a hidden file's last close unlinks it there). */
    fwd_t *f = calloc(1, sizeof(*f));
    if (f == NULL) { fuse_reply_err(req, 0); return; }
    f->op = F_WRELEASE; f->req = req; f->fh = fi->fh >> 1; f->fs = fs_of(req);
    /* In use like a change: a directory's rename waits until the handler has the path (it unlinks a hidden file there). */
    f->gated = gate_enter(fs_of(req));
    char path[PATH_MAX];
    if (node_path(fs_of(req), ino, path, sizeof(path)) == 0 && valid_utf8(path)) f->path = strdup(path);
    send_fwd(fs_of(req), f);
    return;
  }
  open_t *o = (open_t *) (uintptr_t) fi->fh;
  if (o->pt != NULL) {
    fs_t *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    if (--o->pt->opens == 0) { fuse_passthrough_close(req, o->pt->backing_id); o->pt->backing_id = 0; }
    pthread_mutex_unlock(&fs->lock);
  }
  close(o->fd);
  free(o);
  fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  struct statvfs sv;
  if (fstatvfs(IS_JS(ino) ? fs_of(req)->root.fd : inode_of(req, ino)->fd, &sv) < 0) fuse_reply_err(req, errno);
  else fuse_reply_statfs(req, &sv);
}

/* xattrs through the O_PATH descriptor's magic link (f*xattr do not take O_PATH descriptors): it resolves to that very inode, a symlink included. */
/* replicafs's own attribute (the data cursor, src/format/data-cursor.ts): never shown, set or removed through a mount. */
static bool internal_xattr(const char *name) {
  return strcmp(name, "trusted.replicafs.applied") == 0 || strcmp(name, "user.replicafs.applied") == 0;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  if (IS_JS(ino)) { forward(req, F_GETXATTR, ino, name, size, 0, 0, 0); return; }
  if (internal_xattr(name)) { fuse_reply_err(req, ENODATA); return; }
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_of(req, ino)->fd);
  char *value = size > 0 ? malloc(size) : NULL;
  if (size > 0 && value == NULL) { fuse_reply_err(req, ENOMEM); return; }
  ssize_t n = getxattr(path, name, value, size);
  if (n < 0) fuse_reply_err(req, errno == ENOTSUP ? ENODATA : errno);
  else if (size == 0) fuse_reply_xattr(req, (size_t) n);
  else fuse_reply_buf(req, value, (size_t) n);
  free(value);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  if (IS_JS(ino)) { forward(req, F_LISTXATTR, ino, NULL, size, 0, 0, 0); return; }
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_of(req, ino)->fd);
  char *value = size > 0 ? malloc(size) : NULL;
  if (size > 0 && value == NULL) { fuse_reply_err(req, ENOMEM); return; }
  ssize_t n = listxattr(path, value, size);
  if (n > 0 && value != NULL) {
    /* Without the internal names (a size query counts them: an upper bound, as the call allows). */
    size_t w = 0;
    for (size_t r = 0; r < (size_t) n;) {
      size_t l = strnlen(value + r, (size_t) n - r) + 1;
      if (!internal_xattr(value + r)) { memmove(value + w, value + r, l); w += l; }
      r += l;
    }
    n = (ssize_t) w;
  }
  if (n < 0) fuse_reply_err(req, errno);
  else if (size == 0) fuse_reply_xattr(req, (size_t) n);
  else fuse_reply_buf(req, value, (size_t) n);
  free(value);
}

/* ---------- changes (a journaled mount's; EROFS elsewhere): forwarded with their paths ---------- */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  (void) fi;
  fwd_t *f = change(req, F_SETATTR, ino, NULL);
  if (f == NULL) return;
  f->num[N_VALID] = to_set;
  f->num[N_MODE] = attr->st_mode;
  f->num[N_RDEV] = 0;
  f->size = (uint64_t) attr->st_size;
  f->num[N_ATIME] = (double) attr->st_atim.tv_sec; f->num[N_ATIME_NS] = (double) attr->st_atim.tv_nsec;
  f->num[N_MTIME] = (double) attr->st_mtim.tv_sec; f->num[N_MTIME_NS] = (double) attr->st_mtim.tv_nsec;
  f->num[N_TO_UID] = attr->st_uid;
  f->num[N_TO_GID] = attr->st_gid;
  f->lparent = ino; /* answered with its attributes (replyLookup) */
  send_fwd(fs_of(req), f);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  fwd_t *f = change(req, F_MKNOD, parent, name);
  if (f == NULL || !entry_of(f, parent, name)) return;
  f->num[N_MODE] = mode;
  f->num[N_RDEV] = (double) rdev;
  send_fwd(fs_of(req), f);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  fwd_t *f = change(req, F_MKDIR, parent, name);
  if (f == NULL || !entry_of(f, parent, name)) return;
  f->num[N_MODE] = mode;
  send_fwd(fs_of(req), f);
}

static void op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
  fwd_t *f = change(req, F_SYMLINK, parent, name);
  if (f == NULL || !entry_of(f, parent, name)) return;
  if (!valid_utf8(target)) { free_fwd(f); fuse_reply_err(req, EILSEQ); return; }
  if ((f->name = strdup(target)) == NULL) { free_fwd(f); fuse_reply_err(req, ENOMEM); return; }
  send_fwd(fs_of(req), f);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  fwd_t *f = change(req, F_UNLINK, parent, name);
  if (f != NULL) send_fwd(fs_of(req), f);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  fwd_t *f = change(req, F_RMDIR, parent, name);
  if (f != NULL) send_fwd(fs_of(req), f);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  /* RENAME_NOREPLACE / EXCHANGE / WHITEOUT have no record: refused as by a filesystem without them. */
  if (flags != 0) { fuse_reply_err(req, EINVAL); return; }
  /* A directory's rename changes the paths of everything under it: it takes the gate whole. */
  struct stat st;
  bool dir = fs_of(req)->journaled && !IS_JS(parent) && fstatat(inode_of(req, parent)->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
  fwd_t *f = change(req, dir ? F_RENAME : F_UNLINK, parent, name);
  if (f == NULL) return;
  f->op = F_RENAME;
  char path2[PATH_MAX];
  int err = change_target(req, newparent, newname, path2, sizeof(path2));
  if (err != 0 || (f->path2 = strdup(path2)) == NULL) { fuse_reply_err(req, err != 0 ? err : ENOMEM); free_fwd(f); return; }
  send_fwd(fs_of(req), f);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  fwd_t *f = change(req, F_LINK, ino, NULL);
  if (f == NULL) return;
  char path2[PATH_MAX];
  int err = change_target(req, newparent, newname, path2, sizeof(path2));
  if (err != 0 || (f->path2 = strdup(path2)) == NULL) { fuse_reply_err(req, err != 0 ? err : ENOMEM); free_fwd(f); return; }
  if (!entry_of(f, newparent, newname)) return;
  send_fwd(fs_of(req), f);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  fwd_t *f = change(req, F_CREATE, parent, name);
  if (f == NULL || !entry_of(f, parent, name)) return;
  f->num[N_MODE] = mode;
  f->flags = fi->flags;
  f->fi = *fi;
  send_fwd(fs_of(req), f);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  fwd_t *f = change(req, F_WRITE, ino, NULL);
  if (f == NULL || !data_of(f, buf, size)) return;
  f->size = size;
  f->off = off;
  f->fh = IS_JS_FH(fi->fh) ? fi->fh >> 1 : 0;
  send_fwd(fs_of(req), f);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) ino; (void) fi;
  fuse_reply_err(req, 0); /* every write is in the log when it is answered: nothing to flush */
}

/* The SRL's ring made durable here, on the worker (fs_t.log_fd): false when it is the handler's to do (none registered, closed, no descriptor to spare). */
static bool sync_here(fs_t *fs, fuse_req_t req) {
  double closed = 1, head = 0;
  pthread_mutex_lock(&fs->log_lock);
  if (fs->log_pub != NULL) {
    __atomic_load(&fs->log_pub[2], &closed, __ATOMIC_ACQUIRE);
    __atomic_load(&fs->log_pub[1], &head, __ATOMIC_ACQUIRE);
  }
  bool here = fs->log_fd >= 0 && closed == 0;
  pthread_mutex_unlock(&fs->log_lock);
  if (!here) return false;
  __atomic_store_n(&fs->spin_yield, true, __ATOMIC_RELAXED); /* the JavaScript thread's poll gives its CPU up (fs_t.spin_yield) */
  /* One fdatasync at a time (fs_t.sync_lock): of two at once, only one would hear of an error. */
  pthread_mutex_lock(&fs->sync_lock);
  pthread_mutex_lock(&fs->log_lock);
  if (fs->log_fd < 0 || fs->log_pub == NULL) { /* unregistered meanwhile: the handler's */
    pthread_mutex_unlock(&fs->log_lock);
    pthread_mutex_unlock(&fs->sync_lock);
    return false;
  }
  uint64_t gen = fs->log_gen;
  int failed = fs->log_errno;
  bool covered = failed == 0 && fs->log_head >= head; /* a sync that began after our figures were read covers us (a group commit) */
  if (failed != 0 || covered) fs->log_syncs++;
  double seq = 0;
  int fd = -1;
  if (failed == 0 && !covered) {
    /* What this sync covers: everything published by now (read again: it can only be more). */
    __atomic_load(&fs->log_pub[0], &seq, __ATOMIC_ACQUIRE);
    __atomic_load(&fs->log_pub[1], &head, __ATOMIC_ACQUIRE);
    fd = fcntl(fs->log_fd, F_DUPFD_CLOEXEC, 0);
  }
  pthread_mutex_unlock(&fs->log_lock);
  if (failed != 0 || covered) {
    pthread_mutex_unlock(&fs->sync_lock);
    fuse_reply_err(req, failed != 0 ? EIO : 0);
    return true;
  }
  if (fd < 0) { pthread_mutex_unlock(&fs->sync_lock); return false; } /* no descriptor to spare: the handler's */
  int err = fdatasync(fd) == 0 ? 0 : errno;
  close(fd);
  pthread_mutex_lock(&fs->log_lock);
  bool notify = false;
  if (gen == fs->log_gen) {
    if (err == 0) {
      if (seq > fs->log_seq) fs->log_seq = seq;
      if (head > fs->log_head) fs->log_head = head;
    } else if (fs->log_errno == 0) {
      fs->log_errno = err;
    }
    notify = !fs->log_noticed;
    fs->log_noticed = true;
    fs->log_syncs++;
  }
  pthread_mutex_unlock(&fs->log_lock);
  pthread_mutex_unlock(&fs->sync_lock);
  fuse_reply_err(req, err == 0 ? 0 : EIO);
  if (notify && !notice(fs, F_SYNCED, 0, 0)) {
    /* Not queued (the mount ending): the next sync tries again. */
    pthread_mutex_lock(&fs->log_lock);
    fs->log_noticed = false;
    pthread_mutex_unlock(&fs->log_lock);
  }
  return true;
}

/* fsync, fsyncdir: the journal made durable (no path: the SRL's ring, here or by the handler). Nothing to do on a read-only mount. */
static void sync_fwd(fuse_req_t req, int op, fuse_ino_t ino, int datasync, uint64_t fh) {
  fs_t *fs = fs_of(req);
  if (!fs->journaled || IS_JS(ino)) { fuse_reply_err(req, 0); return; }
  if (sync_here(fs, req)) return;
  fwd_t *f = calloc(1, sizeof(*f));
  if (f == NULL || (f->path = strdup("")) == NULL) { free(f); fuse_reply_err(req, ENOMEM); return; }
  f->op = op; f->req = req; f->fs = fs;
  f->num[N_DATASYNC] = datasync;
  f->fh = fh;
  send_fwd(fs, f);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  sync_fwd(req, F_FSYNC, ino, datasync, IS_JS_FH(fi->fh) ? fi->fh >> 1 : 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  (void) fi;
  sync_fwd(req, F_FSYNCDIR, ino, datasync, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  if (internal_xattr(name)) { fuse_reply_err(req, EPERM); return; }
  fwd_t *f = change(req, F_SETXATTR, ino, NULL);
  if (f == NULL) return;
  if (!valid_utf8(name)) { free_fwd(f); fuse_reply_err(req, EILSEQ); return; }
  if ((f->name = strdup(name)) == NULL) { free_fwd(f); fuse_reply_err(req, ENOMEM); return; }
  if (!data_of(f, value, size)) return;
  f->flags = flags;
  send_fwd(fs_of(req), f);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  if (internal_xattr(name)) { fuse_reply_err(req, EPERM); return; }
  fwd_t *f = change(req, F_REMOVEXATTR, ino, NULL);
  if (f == NULL) return;
  if (!valid_utf8(name)) { free_fwd(f); fuse_reply_err(req, EILSEQ); return; }
  if ((f->name = strdup(name)) == NULL) { fuse_reply_err(req, ENOMEM); free_fwd(f); return; }
  send_fwd(fs_of(req), f);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  (void) fi;
  fwd_t *f = change(req, F_FALLOCATE, ino, NULL);
  if (f == NULL) return;
  f->flags = mode;
  f->off = offset;
  f->size = (uint64_t) length;
  send_fwd(fs_of(req), f);
}

/* Every request that reads the tree holds the apply lock shared (see fs_t.apply). */
static void reader_enter(fs_t *fs) {
  if (pthread_rwlock_tryrdlock(&fs->apply) == 0) return;
  __atomic_add_fetch(&fs->waiting, 1, __ATOMIC_RELAXED);
  pthread_rwlock_rdlock(&fs->apply);
  __atomic_sub_fetch(&fs->waiting, 1, __ATOMIC_RELAXED);
}

#define READER(op, params, args) \
  static void locked_##op params { fs_t *fs = fs_of(req); reader_enter(fs); op_##op args; pthread_rwlock_unlock(&fs->apply); }
READER(lookup, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
READER(getattr, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
READER(readlink, (fuse_req_t req, fuse_ino_t ino), (req, ino))
READER(opendir, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
READER(readdirplus, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi), (req, ino, size, offset, fi))
READER(open, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
READER(read, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi), (req, ino, size, off, fi))
READER(statfs, (fuse_req_t req, fuse_ino_t ino), (req, ino))
READER(getxattr, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size), (req, ino, name, size))
READER(listxattr, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))

static const struct fuse_lowlevel_ops ops = {
  .init = op_init,
  .lookup = locked_lookup,
  .forget = op_forget,
  .forget_multi = op_forget_multi,
  .getattr = locked_getattr,
  .readlink = locked_readlink,
  .opendir = locked_opendir,
  .readdirplus = locked_readdirplus,
  .releasedir = op_releasedir,
  .open = locked_open,
  .read = locked_read,
  .release = op_release,
  .statfs = locked_statfs,
  .getxattr = locked_getxattr,
  .listxattr = locked_listxattr,
  .setattr = op_setattr,
  .mknod = op_mknod,
  .mkdir = op_mkdir,
  .symlink = op_symlink,
  .unlink = op_unlink,
  .rmdir = op_rmdir,
  .rename = op_rename,
  .link = op_link,
  .create = op_create,
  .write = op_write,
  .flush = op_flush,
  .fsync = op_fsync,
  .fsyncdir = op_fsyncdir,
  .setxattr = op_setxattr,
  .removexattr = op_removexattr,
  .fallocate = op_fallocate,
};

/* libfuse's CUSE entry points, referenced by its opcode tables; CUSE is not built (cuse_lowlevel.c). */
void cuse_lowlevel_init(fuse_req_t req, fuse_ino_t nodeid, const void *inarg);
void _cuse_lowlevel_init(fuse_req_t req, const fuse_ino_t nodeid, const void *req_header, const void *req_payload);
void cuse_lowlevel_init(fuse_req_t req, fuse_ino_t nodeid, const void *inarg) {
  (void) nodeid; (void) inarg;
  fuse_reply_err(req, ENOSYS);
}
void _cuse_lowlevel_init(fuse_req_t req, const fuse_ino_t nodeid, const void *req_header, const void *req_payload) {
  (void) nodeid; (void) req_header; (void) req_payload;
  fuse_reply_err(req, ENOSYS);
}

/* ---------- sessions ---------- */

typedef struct {
  fs_t fs;
  struct fuse_session *se;
  pthread_t thread;
  int loop_result;
  char *mountpoint;
  bool running;
  int refs;               /* the JavaScript object, and the handler's thread-safe function if any */
} session_t;

static void *loop_thread(void *arg) {
  session_t *s = arg;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  s->loop_result = fuse_session_loop_mt(s->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  /* Ended by the kernel (a plain umount), not by unmount(): the handler hears { op: 'gone' }. */
  if (__atomic_load_n(&s->running, __ATOMIC_ACQUIRE) && s->fs.tsfn != NULL) notice(&s->fs, F_GONE, 0, 0);
  return NULL;
}

static void free_session(session_t *s) {
  pthread_mutex_destroy(&s->fs.lock);
  pthread_cond_destroy(&s->fs.init_cond);
  pthread_rwlock_destroy(&s->fs.apply);
  pthread_mutex_destroy(&s->fs.fwd_lock);
  pthread_mutex_destroy(&s->fs.pend_lock);
  pthread_cond_destroy(&s->fs.pend_cond);
  pthread_mutex_destroy(&s->fs.gate_lock);
  pthread_cond_destroy(&s->fs.gate_cond);
  pthread_mutex_destroy(&s->fs.log_lock);
  pthread_mutex_destroy(&s->fs.sync_lock);
  free(s->fs.fwd_name);
  free(s->fs.root_path);
  free(s->fs.given);
  free(s);
}

/* One of the session's owners lets go (on the JavaScript thread); the last frees it once unmounted. */
static void unref_session(session_t *s) {
  if (--s->refs == 0 && !s->running) free_session(s);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void) env; (void) hint;
  session_t *s = data;
  pthread_mutex_lock(&s->fs.fwd_lock);
  s->fs.tsfn_dead = true;
  pthread_mutex_unlock(&s->fs.fwd_lock);
  unref_session(s);
}

static void free_table(fs_t *fs) {
  for (size_t b = 0; b < BUCKETS; b++) {
    for (inode_t *in = fs->table[b]; in != NULL;) { inode_t *next = in->next; close(in->fd); free(in); in = next; }
    fs->table[b] = NULL;
  }
  fs->inode_fds = 0;
  if (fs->root.fd >= 0) close(fs->root.fd);
  fs->root.fd = -1;
}

/*
 * libfuse's messages (fuse_log): kept, the last one per thread, instead of written to stderr; a
 * mount that fails says it in its error. Messages while mounted are dropped for now (the daemon's
 * log takes them when this transport serves a daemon).
 */
static __thread char last_log[512];

static void ll_log(enum fuse_log_level level, const char *fmt, va_list ap) {
  (void) level;
  vsnprintf(last_log, sizeof(last_log), fmt, ap);
  size_t n = strlen(last_log);
  while (n > 0 && last_log[n - 1] == '\n') last_log[--n] = '\0';
}

static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  napi_value err = errno_error(env, e, syscall, path);
  if (last_log[0] != '\0') {
    /* libfuse said why: its words after the message. */
    napi_value m;
    char msg[PATH_MAX + 1024];
    size_t len = 0;
    napi_get_named_property(env, err, "message", &m);
    napi_get_value_string_utf8(env, m, msg, sizeof(msg) - sizeof(last_log) - 4, &len);
    snprintf(msg + len, sizeof(msg) - len, " (%s)", last_log);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_set_named_property(env, err, "message", m);
  }
  last_log[0] = '\0';
  napi_throw(env, err);
  return NULL;
}

static char *get_str(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) { napi_throw_type_error(env, NULL, "expected a string"); return NULL; }
  char *s = malloc(len + 1);
  if (s == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) { free(s); napi_throw_type_error(env, NULL, "a string with a NUL byte"); return NULL; }
  return s;
}

/* The session object is collected: its memory goes if it was unmounted (a mounted one stays up). */
static void finalize(napi_env env, void *data, void *hint) {
  (void) env; (void) hint;
  unref_session(data);
}

/*
 * mount(root, mountpoint, options: string, timeoutSeconds: number, flags: number[, forwardName: string,
 * handler: function]) -> session (external); flags: 1 passthrough. With a handler, the root's entry
 * `forwardName` and all under it are served by the handler (see fs_t.fwd_name), which also hears
 * { op: 'gone' } when the kernel ends the mount by itself.
 */
static napi_value m_mount(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) { napi_throw_type_error(env, NULL, "mount(root, mountpoint, options, timeoutSeconds, flags[, forwardName, handler])"); return NULL; }
  napi_valuetype ht = napi_undefined;
  if (argc >= 7) napi_typeof(env, argv[6], &ht);
  if (argc >= 7 && ht != napi_function && ht != napi_undefined) { napi_throw_type_error(env, NULL, "handler must be a function"); return NULL; }
  char *fwd_name = NULL;
  if (ht == napi_function && (fwd_name = get_str(env, argv[5])) == NULL) return NULL;
  if (fwd_name != NULL && (fwd_name[0] == '\0' || strchr(fwd_name, '/') != NULL)) { free(fwd_name); napi_throw_type_error(env, NULL, "forwardName must be one name"); return NULL; }
  double timeout;
  if (napi_get_value_double(env, argv[3], &timeout) != napi_ok || !(timeout >= 0)) { free(fwd_name); napi_throw_type_error(env, NULL, "timeoutSeconds must be a number >= 0"); return NULL; }
  uint32_t flags;
  if (napi_get_value_uint32(env, argv[4], &flags) != napi_ok || (flags & ~7u) != 0) { free(fwd_name); napi_throw_type_error(env, NULL, "flags: 1 passthrough, 2 volatile, 4 journaled"); return NULL; }
  if ((flags & 4) != 0 && (ht != napi_function || (flags & 2) != 0)) { free(fwd_name); napi_throw_type_error(env, NULL, "a journaled mount needs a handler, and is not volatile"); return NULL; }
  char *root = get_str(env, argv[0]);
  if (root == NULL) { free(fwd_name); return NULL; }
  char *mnt = get_str(env, argv[1]);
  if (mnt == NULL) { free(fwd_name); free(root); return NULL; }
  char *opts = get_str(env, argv[2]);
  if (opts == NULL) { free(fwd_name); free(root); free(mnt); return NULL; }
  session_t *s = calloc(1, sizeof(*s));
  if (s == NULL) { free(fwd_name); free(root); free(mnt); free(opts); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  last_log[0] = '\0';
  s->refs = 1;
  s->fs.fwd_name = fwd_name;
  pthread_mutex_init(&s->fs.fwd_lock, NULL);
  s->fs.timeout = timeout;
  s->fs.attr_gen = 1; /* an inode's starts at 0: not listed yet */
  {
    /* As many descriptors as the kernel allows a process (root may raise the hard limit up to
       fs.nr_open; otherwise the soft limit goes to the hard one); the inode table leaves a reserve. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
      FILE *f = fopen("/proc/sys/fs/nr_open", "r");
      unsigned long long nr = 0;
      if (f != NULL) { if (fscanf(f, "%llu", &nr) != 1) nr = 0; fclose(f); }
      if (nr > lim.rlim_max) { struct rlimit up = { nr, nr }; if (setrlimit(RLIMIT_NOFILE, &up) == 0) lim = up; }
      if (lim.rlim_cur < lim.rlim_max) { struct rlimit up = { lim.rlim_max, lim.rlim_max }; if (setrlimit(RLIMIT_NOFILE, &up) == 0) lim = up; }
      s->fs.inode_fd_max = lim.rlim_cur == RLIM_INFINITY ? UINT64_MAX : lim.rlim_cur > 2 * LL_FD_RESERVE ? lim.rlim_cur - LL_FD_RESERVE : lim.rlim_cur / 2;
    } else {
      s->fs.inode_fd_max = 1024;
    }
  }
  s->fs.want_passthrough = (flags & 1) != 0;
  s->fs.volatile_tree = (flags & 2) != 0;
  s->fs.journaled = (flags & 4) != 0;
  pthread_mutex_init(&s->fs.pend_lock, NULL);
  pthread_cond_init(&s->fs.pend_cond, NULL);
  pthread_mutex_init(&s->fs.log_lock, NULL);
  pthread_mutex_init(&s->fs.sync_lock, NULL);
  s->fs.log_fd = -1;
  pthread_mutex_init(&s->fs.gate_lock, NULL);
  pthread_cond_init(&s->fs.gate_cond, NULL);
  s->fs.root.fd = -1;
  pthread_mutex_init(&s->fs.lock, NULL);
  pthread_cond_init(&s->fs.init_cond, NULL);
  pthread_rwlockattr_t rwa;
  pthread_rwlockattr_init(&rwa);
  pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&s->fs.apply, &rwa);
  pthread_rwlockattr_destroy(&rwa);
  napi_value result = NULL;
  s->fs.root.fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  if (s->fs.root.fd < 0 || fstat(s->fs.root.fd, &st) < 0) { throw_errno(env, errno, "open", root); goto fail; }
  s->fs.root.dev = st.st_dev;
  s->fs.root.ino = st.st_ino;
  s->fs.root.nlookup = 2;
  {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", s->fs.root.fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) { throw_errno(env, n < 0 ? errno : EINVAL, "readlink", link); goto fail; }
    path[n] = '\0';
    if ((s->fs.root_path = strdup(path)) == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); goto fail; }
    s->fs.root_len = (size_t) n;
  }
  if (fwd_name != NULL) {
    napi_value rname;
    napi_create_string_utf8(env, "replicafs_ll forwarded request", NAPI_AUTO_LENGTH, &rname);
    if (napi_create_threadsafe_function(env, argv[6], NULL, rname, 0, 1, s, tsfn_finalize, &s->fs, call_js, &s->fs.tsfn) != napi_ok) {
      s->fs.tsfn = NULL; napi_throw_error(env, "EINVAL", "cannot create the handler's thread-safe function"); goto fail;
    }
    s->refs++;
    napi_unref_threadsafe_function(env, s->fs.tsfn); /* a mount does not keep the process alive by itself */
  }
  if (s->fs.journaled) {
    const char *us = getenv("REPLICAFS_LL_SPIN_US");
    long v = us != NULL && *us != '\0' ? strtol(us, NULL, 10) : LL_SPIN_US_DEFAULT;
    s->fs.spin_ns = v > 0 ? (uint64_t) v * 1000u : 0;
    uv_loop_t *loop = NULL;
    if (s->fs.spin_ns > 0 && napi_get_uv_event_loop(env, &loop) == napi_ok && loop != NULL && (s->fs.spin = malloc(sizeof(uv_prepare_t))) != NULL) {
      uv_prepare_init(loop, s->fs.spin);
      s->fs.spin->data = &s->fs;
      uv_prepare_start(s->fs.spin, spin_cb);
      uv_unref((uv_handle_t *) s->fs.spin); /* it does not keep the process alive */
    }
  }
  char *args_v[] = { "replicafs", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
  s->se = fuse_session_new(&args, &ops, sizeof(ops), &s->fs);
  if (s->se == NULL) { napi_throw_error(env, "EINVAL", "libfuse refused the session (see the options in the daemon log)"); goto fail; }
  s->fs.se = s->se;
  if (fuse_session_mount(s->se, mnt) != 0) { throw_errno(env, errno != 0 ? errno : EIO, "mount", mnt); fuse_session_destroy(s->se); s->se = NULL; goto fail; }
  s->mountpoint = mnt;
  mnt = NULL;
  if (pthread_create(&s->thread, NULL, loop_thread, s) != 0) {
    int e = errno;
    fuse_session_unmount(s->se); fuse_session_destroy(s->se); s->se = NULL;
    throw_errno(env, e, "pthread_create", s->mountpoint); free(s->mountpoint); s->mountpoint = NULL;
    goto fail;
  }
  __atomic_store_n(&s->running, true, __ATOMIC_RELEASE);
  /* Ready when the kernel's INIT is answered (what was granted is known then), 10 s at most. */
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&s->fs.lock);
  while (!s->fs.inited && pthread_cond_timedwait(&s->fs.init_cond, &s->fs.lock, &until) == 0) {}
  bool inited = s->fs.inited;
  pthread_mutex_unlock(&s->fs.lock);
  if (!inited) {
    __atomic_store_n(&s->running, false, __ATOMIC_RELEASE);
    fuse_session_exit(s->se);
    pthread_join(s->thread, NULL);
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    s->se = NULL;
    throw_errno(env, ETIMEDOUT, "mount (no INIT from the kernel within 10 s)", s->mountpoint);
    free(s->mountpoint); s->mountpoint = NULL;
    goto fail;
  }
  napi_create_external(env, s, finalize, NULL, &result);
  free(root); free(opts);
  return result;
fail:
  spin_stop(&s->fs);
  free_table(&s->fs);
  free(root); free(mnt); free(opts);
  if (s->fs.tsfn != NULL) { napi_release_threadsafe_function(s->fs.tsfn, napi_tsfn_abort); s->refs--; } /* its finalizer frees the session */
  else free_session(s);
  return NULL;
}

/* The session argument (the only one); unless `unmounted_too`, it must still be mounted. */
static session_t *session_arg_of(napi_env env, napi_callback_info info, const char *usage, bool unmounted_too) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  session_t *s = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok || s == NULL) { napi_throw_type_error(env, NULL, usage); return NULL; }
  if (!unmounted_too && !s->running) { napi_throw_error(env, "EINVAL", "this session is unmounted already"); return NULL; }
  return s;
}

static session_t *session_arg(napi_env env, napi_callback_info info, const char *usage) { return session_arg_of(env, info, usage, false); }

/* unmount(session): unmounts (lazily: a busy mount goes once its last user does), ends the loop, frees. */
static napi_value m_unmount(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "unmount(session)");
  if (s == NULL) return NULL;
  if (s->fs.held) { s->fs.held = false; pthread_rwlock_unlock(&s->fs.apply); } /* requests in the loop finish, the loop ends */
  __atomic_store_n(&s->running, false, __ATOMIC_RELEASE);
  spin_stop(&s->fs);
  /* No worker waits for writes in flight any more (the handler applies nothing after this). */
  pthread_mutex_lock(&s->fs.pend_lock);
  s->fs.pend_off = true;
  pthread_mutex_unlock(&s->fs.pend_lock);
  pend_clear(&s->fs);
  pthread_mutex_lock(&s->fs.gate_lock);
  s->fs.gate_off = true;
  pthread_cond_broadcast(&s->fs.gate_cond);
  pthread_mutex_unlock(&s->fs.gate_lock);
  /* The workers end first (libfuse cancels those waiting for a request; one serving finishes), with
     the device still open: nothing is ever written to a closed (maybe reused) descriptor number. */
  fuse_session_exit(s->se);
  pthread_join(s->thread, NULL);
  /* Forwarded requests not answered yet are answered now, on the live device; a late reply finds nothing. */
  pthread_mutex_lock(&s->fs.fwd_lock);
  fwd_t *f = s->fs.fwds;
  s->fs.fwds = NULL;
  pthread_mutex_unlock(&s->fs.fwd_lock);
  while (f != NULL) {
    fwd_t *next = f->next;
    fuse_reply_err(f->req, ENOTCONN);
    pthread_mutex_lock(&s->fs.fwd_lock);
    bool queued = f->state == QUEUED;
    if (queued) f->state = ABANDONED; /* call_js frees it */
    pthread_mutex_unlock(&s->fs.fwd_lock);
    if (!queued) free_fwd(f);
    f = next;
  }
  fuse_session_unmount(s->se); /* detaches the mount, closes the device: what the kernel still has in flight ends */
  fuse_session_destroy(s->se);
  s->se = NULL;
  free_table(&s->fs);
  free(s->mountpoint);
  s->mountpoint = NULL;
  /* No worker syncs any more: the ring's copy and the SRL's figures go. */
  if (s->fs.log_fd >= 0) { close(s->fs.log_fd); s->fs.log_fd = -1; }
  s->fs.log_pub = NULL;
  if (s->fs.log_ref != NULL) { napi_delete_reference(env, s->fs.log_ref); s->fs.log_ref = NULL; }
  if (s->fs.tsfn != NULL) { napi_release_threadsafe_function(s->fs.tsfn, napi_tsfn_release); s->fs.tsfn = NULL; }
  napi_value r;
  napi_create_int32(env, s->loop_result, &r);
  return r;
}


/*
 * hold(session): waits for the requests reading the tree to finish and keeps new ones waiting,
 * until release(session). The caller must not touch the mount in between (its own request would
 * wait for itself).
 */
static napi_value m_hold(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "hold(session)");
  if (s == NULL) return NULL;
  if (s->fs.held) { napi_throw_error(env, "EINVAL", "this session is held already"); return NULL; }
  pthread_rwlock_wrlock(&s->fs.apply);
  s->fs.held = true;
  return NULL;
}

static napi_value m_release(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "release(session)");
  if (s == NULL) return NULL;
  if (!s->fs.held) { napi_throw_error(env, "EINVAL", "this session is not held"); return NULL; }
  s->fs.held = false;
  pthread_rwlock_unlock(&s->fs.apply);
  return NULL;
}

/*
 * changed(session) -> boolean: the daemon changed names in the tree (an apply slice, a
 * synchronization's batch): every name the kernel keeps is dropped (the epoch goes up; a lookup
 * that began before is invalid after). Call it before release(), so no reader sees a kept name in
 * between. False: the kernel has no epochs (names were never kept), or the notice failed, after
 * which no name is kept any more.
 */
/*
 * The daemon changed the tree (a volatile one's: fs_t.given): the kernel drops the attributes of
 * every inode it got them for since the last call. On the JavaScript thread, with the readers held
 * off (an apply slice) or not (a synchronization's frame). Returns how many.
 */
static size_t inval_given(session_t *s) {
  fs_t *fs = &s->fs;
  if (!fs->volatile_tree) return 0;
  pthread_mutex_lock(&fs->lock);
  fuse_ino_t *list = fs->given;
  size_t n = fs->ngiven;
  bool all = fs->given_all;
  fs->given = NULL;
  fs->ngiven = fs->cgiven = 0;
  fs->given_all = false;
  fs->attr_gen++;
  if (all) {
    /* The list could not grow: every inode of the table (and the root). */
    size_t count = 1;
    for (size_t b = 0; b < BUCKETS; b++) for (inode_t *in = fs->table[b]; in != NULL; in = in->next) count++;
    fuse_ino_t *every = malloc(count * sizeof(*every));
    if (every != NULL) {
      free(list);
      list = every;
      n = 0;
      list[n++] = FUSE_ROOT_ID;
      for (size_t b = 0; b < BUCKETS; b++) for (inode_t *in = fs->table[b]; in != NULL; in = in->next) list[n++] = (fuse_ino_t) (uintptr_t) in;
    } else {
      fs->given_all = true; /* still: the next call tries again; what is listed goes now */
    }
  }
  pthread_mutex_unlock(&fs->lock);
  /* Attributes only (offset -1): the kernel takes no lock a held-off request could hold. An inode
     the kernel forgot meanwhile answers ENOENT: nothing to drop. */
  for (size_t i = 0; i < n; i++) fuse_lowlevel_notify_inval_inode(s->se, list[i], -1, 0);
  free(list);
  fs->invalidated += n;
  return n;
}

/* invalAttrs(session) -> count: see inval_given (a slice that changed only files' contents and times). */
static napi_value m_inval_attrs(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "invalAttrs(session)");
  if (s == NULL) return NULL;
  napi_value v;
  napi_create_double(env, (double) inval_given(s), &v);
  return v;
}

static napi_value m_changed(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "changed(session)");
  if (s == NULL) return NULL;
  inval_given(s);
  bool ok = false;
  if (s->fs.epoch) {
    ok = fuse_lowlevel_notify_increment_epoch(s->se) == 0;
    if (!ok) s->fs.epoch = false;
  }
  napi_value v;
  napi_get_boolean(env, ok, &v);
  return v;
}

/*
 * pending(session, ino, busy): inode `ino` of the root's filesystem has writes answered and not
 * applied yet (busy), or no more (a stat, lookup or read of it waits meanwhile); pending(session, -1,
 * false): none has (the handler stopped applying: nobody may wait for it).
 */
static napi_value m_pending(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  session_t *s = NULL;
  double ino = 0;
  bool busy = false;
  if (argc < 3 || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok || s == NULL ||
      napi_get_value_double(env, argv[1], &ino) != napi_ok || napi_get_value_bool(env, argv[2], &busy) != napi_ok) {
    napi_throw_type_error(env, NULL, "pending(session, ino, busy)");
    return NULL;
  }
  fs_t *fs = &s->fs;
  if (ino < 0) { pend_clear(fs); return NULL; }
  ino_t i = (ino_t) ino;
  pthread_mutex_lock(&fs->pend_lock);
  pend_t **p = &fs->pend[i % PEND_BUCKETS];
  while (*p != NULL && (*p)->ino != i) p = &(*p)->next;
  if (busy && *p == NULL && !fs->pend_off) {
    pend_t *e = calloc(1, sizeof(*e));
    if (e != NULL) { e->ino = i; *p = e; __atomic_add_fetch(&fs->npending, 1, __ATOMIC_RELEASE); }
  } else if (!busy && *p != NULL) {
    pend_t *e = *p;
    *p = e->next;
    free(e);
    __atomic_sub_fetch(&fs->npending, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&fs->pend_cond);
  }
  pthread_mutex_unlock(&fs->pend_lock);
  return NULL;
}

/* stats(session) -> { passthrough, reads, waiting }: whether the kernel granted passthrough, READ requests served here, requests waiting for hold() to end. */
static napi_value m_stats(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "stats(session)");
  if (s == NULL) return NULL;
  napi_value r, v;
  napi_create_object(env, &r);
  napi_get_boolean(env, s->fs.passthrough, &v);
  napi_set_named_property(env, r, "passthrough", v);
  napi_create_double(env, (double) __atomic_load_n(&s->fs.reads, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, r, "reads", v);
  napi_create_double(env, (double) __atomic_load_n(&s->fs.waiting, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, r, "waiting", v);
  napi_create_double(env, (double) __atomic_load_n(&s->fs.opens, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, r, "opens", v);
  napi_get_boolean(env, s->fs.epoch, &v);
  napi_set_named_property(env, r, "epoch", v);
  napi_create_double(env, JOURNALED_WRITE_BYTES_MAX, &v);
  napi_set_named_property(env, r, "maxWrite", v);
  pthread_mutex_lock(&s->fs.gate_lock);
  napi_create_double(env, (double) s->fs.gate_waiting, &v);
  pthread_mutex_unlock(&s->fs.gate_lock);
  napi_set_named_property(env, r, "gateWaiting", v);
  pthread_mutex_lock(&s->fs.fwd_lock);
  double lat[4] = { (double) s->fs.lat_n, (double) s->fs.lat_resolve, (double) s->fs.lat_queue, (double) s->fs.lat_handle };
  pthread_mutex_unlock(&s->fs.fwd_lock);
  static const char *const lat_names[4] = { "forwarded", "resolveNs", "queueNs", "handleNs" };
  for (int i = 0; i < 4; i++) { napi_create_double(env, lat[i], &v); napi_set_named_property(env, r, lat_names[i], v); }
  napi_create_double(env, (double) s->fs.spins, &v);
  napi_set_named_property(env, r, "spins", v);
  napi_create_double(env, (double) s->fs.spin_hits, &v);
  napi_set_named_property(env, r, "spinHits", v);
  napi_create_double(env, (double) s->fs.spin_yields, &v);
  napi_set_named_property(env, r, "spinYields", v);
  napi_create_double(env, (double) s->fs.spin_ns / 1000.0, &v);
  napi_set_named_property(env, r, "spinUs", v);
  napi_create_double(env, (double) s->fs.invalidated, &v);
  napi_set_named_property(env, r, "invalidated", v);
  pthread_mutex_lock(&s->fs.log_lock);
  double log_syncs = (double) s->fs.log_syncs;
  pthread_mutex_unlock(&s->fs.log_lock);
  napi_create_double(env, log_syncs, &v);
  napi_set_named_property(env, r, "logSyncs", v);
  pthread_mutex_lock(&s->fs.lock);
  double fds[3] = { (double) s->fs.inode_fds, (double) s->fs.inode_fd_max, (double) s->fs.refused_emfile };
  pthread_mutex_unlock(&s->fs.lock);
  static const char *const fd_names[3] = { "inodeFds", "inodeFdMax", "refusedEmfile" };
  for (int i = 0; i < 3; i++) { napi_create_double(env, fds[i], &v); napi_set_named_property(env, r, fd_names[i], v); }
  return r;
}

/* ---------- the handler's answers (reply*(session, id, ...)): false when the request is answered already or the mount ended ---------- */

/* Reads (session, id) and takes the request; NULL with *ok false when there is nothing to answer, NULL and an exception on a usage error. */
static fwd_t *reply_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, fs_t **fsp, const char *usage) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  session_t *s = NULL;
  uint32_t id;
  if (argc < want || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok || s == NULL || napi_get_value_uint32(env, argv[1], &id) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  *fsp = &s->fs;
  return s->running ? take_fwd(&s->fs, id) : NULL;
}

static napi_value answered(napi_env env, bool yes) {
  napi_value v;
  napi_get_boolean(env, yes, &v);
  return v;
}

static bool get_stat(napi_env env, napi_value v, struct stat *st) {
  napi_typedarray_type t;
  size_t n;
  void *data;
  if (napi_get_typedarray_info(env, v, &t, &n, &data, NULL, NULL) != napi_ok || t != napi_float64_array || n < STAT_FIELDS) {
    napi_throw_type_error(env, NULL, "attributes must be a Float64Array of 14");
    return false;
  }
  stat_from(data, st);
  return true;
}

/* replyErr(session, id, errno) */
static napi_value m_reply_err(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyErr(session, id, errno)");
  if (f == NULL) return answered(env, false);
  int32_t e = EIO;
  napi_get_value_int32(env, argv[2], &e);
  /* A release cannot fail (the kernel has forgotten the handle): 0 whatever the handler says. */
  fuse_reply_err(f->req, f->op == F_RELEASE || f->op == F_RELEASEDIR || f->op == F_WRELEASE ? 0 : e >= 0 ? e : EIO); /* 0: done */
  free_fwd(f);
  return answered(env, true);
}

/* replyEntry(session, id, node, attributes): a lookup's answer, `node` the handler's id (>= 1) for it. */
static napi_value m_reply_entry(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 4, argv, &fs, "replyEntry(session, id, node, attributes)");
  if (f == NULL) return answered(env, false);
  double node = 0;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  if (napi_get_value_double(env, argv[2], &node) != napi_ok || !(node >= 1 && node < 9007199254740992.0 && node == (double) (uint64_t) node) || !get_stat(env, argv[3], &e.attr)) {
    fuse_reply_err(f->req, EIO); free_fwd(f);
    bool pending = false; napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, NULL, "node must be an integer >= 1");
    return NULL;
  }
  e.ino = ((fuse_ino_t) node << 1) | 1;
  e.attr_timeout = ATTR_TIMEOUT(fs);
  e.entry_timeout = LISTED_TIMEOUT(fs);
  fuse_reply_entry(f->req, &e);
  free_fwd(f);
  return answered(env, true);
}

/* replyAttr(session, id, attributes) */
static napi_value m_reply_attr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyAttr(session, id, attributes)");
  if (f == NULL) return answered(env, false);
  struct stat st;
  if (!get_stat(env, argv[2], &st)) { fuse_reply_err(f->req, EIO); free_fwd(f); return NULL; }
  fuse_reply_attr(f->req, &st, ATTR_TIMEOUT(fs));
  free_fwd(f);
  return answered(env, true);
}

/* replyOpen(session, id, fh): an open's or opendir's answer; the handler's handle comes back with read, readdir and release. */
static napi_value m_reply_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyOpen(session, id, fh)");
  if (f == NULL) return answered(env, false);
  double fh = 0;
  napi_get_value_double(env, argv[2], &fh);
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof(fi));
  fi.fh = f->op == F_WOPEN ? ((uint64_t) fh << 1) | 1 : (uint64_t) fh; /* a data-directory file's: marked the handler's */
  fi.flags = f->flags;
  __atomic_add_fetch(&fs->opens, 1, __ATOMIC_RELAXED);
  /* Nothing kept from an earlier open: a name may stand for another snapshot by now. */
  bool ok = fuse_reply_open(f->req, &fi) == 0;
  if (!ok) __atomic_sub_fetch(&fs->opens, 1, __ATOMIC_RELAXED); /* interrupted: no release will come, the handler frees its handle */
  free_fwd(f);
  return answered(env, ok);
}

/* replyBuf(session, id, buffer): a read's, getxattr's or listxattr's bytes (the handler fits them to the size asked). */
static napi_value m_reply_buf(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyBuf(session, id, buffer)");
  if (f == NULL) return answered(env, false);
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) { fuse_reply_err(f->req, EIO); free_fwd(f); napi_throw_type_error(env, NULL, "expected a Buffer"); return NULL; }
  if (f->op == F_READLINK) {
    char *t = malloc(len + 1);
    if (t == NULL) fuse_reply_err(f->req, ENOMEM);
    else { memcpy(t, data, len); t[len] = '\0'; fuse_reply_readlink(f->req, t); free(t); }
  } else if ((f->op == F_GETXATTR || f->op == F_LISTXATTR) && f->size == 0) {
    fuse_reply_xattr(f->req, len); /* the size asked for */
  } else if ((f->op == F_GETXATTR || f->op == F_LISTXATTR) && len > f->size) {
    fuse_reply_err(f->req, ERANGE);
  } else {
    fuse_reply_buf(f->req, data, len > f->size && (f->op == F_READ || f->op == F_WREAD) ? f->size : len);
  }
  free_fwd(f);
  return answered(env, true);
}

/*
 * replyDir(session, id, names: string[], nodes: number[], offsets: number[], attributes: Float64Array(14 * n)):
 * entries from the offset asked, each with the offset after it (increasing, above the one asked),
 * as many as fit; returns how many were sent (each but '.' and '..' is a lookup of its node), or
 * false when there was nothing to answer.
 */
static napi_value m_reply_dir(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 6, argv, &fs, "replyDir(session, id, names, nodes, offsets, attributes)");
  if (f == NULL) return answered(env, false);
  uint32_t n = 0, m = 0, k = 0;
  napi_typedarray_type t;
  size_t alen = 0;
  double *attrs = NULL;
  if (napi_get_array_length(env, argv[2], &n) != napi_ok || napi_get_array_length(env, argv[3], &m) != napi_ok || m != n ||
      napi_get_array_length(env, argv[4], &k) != napi_ok || k != n ||
      napi_get_typedarray_info(env, argv[5], &t, &alen, (void **) &attrs, NULL, NULL) != napi_ok || t != napi_float64_array || alen < (size_t) n * STAT_FIELDS) {
    fuse_reply_err(f->req, EIO); free_fwd(f);
    napi_throw_type_error(env, NULL, "replyDir(session, id, names: string[], nodes: number[], offsets: number[], attributes: Float64Array(14 * n))");
    return NULL;
  }
  char *buf = malloc(f->size);
  if (buf == NULL) { fuse_reply_err(f->req, ENOMEM); free_fwd(f); return answered(env, true); }
  size_t used = 0;
  uint32_t sent = 0;
  double last = (double) f->off;
  const char *bad = NULL;
  char name[NAME_MAX + 1];
  for (uint32_t i = 0; i < n; i++) {
    napi_value nv, iv, ov;
    double node = 0, next = 0;
    size_t nl = 0;
    napi_get_element(env, argv[2], i, &nv);
    napi_get_element(env, argv[3], i, &iv);
    napi_get_element(env, argv[4], i, &ov);
    if (napi_get_value_string_utf8(env, nv, name, sizeof(name), &nl) != napi_ok || nl == 0 || nl >= NAME_MAX || strlen(name) != nl || strchr(name, '/') != NULL) { bad = "a name"; break; }
    bool dot = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    if (napi_get_value_double(env, iv, &node) != napi_ok || !(dot || (node >= 1 && node < 9007199254740992.0 && node == (double) (uint64_t) node))) { bad = "a node (an integer >= 1; 0 for . and ..)"; break; }
    if (napi_get_value_double(env, ov, &next) != napi_ok || !(next > last && next < 9007199254740992.0)) { bad = "an offset (increasing, above the one asked)"; break; }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    stat_from(attrs + (size_t) i * STAT_FIELDS, &e.attr);
    if (!dot) { e.ino = ((fuse_ino_t) node << 1) | 1; e.attr_timeout = ATTR_TIMEOUT(fs); e.entry_timeout = LISTED_TIMEOUT(fs); }
    size_t need = fuse_add_direntry_plus(f->req, buf + used, f->size - used, name, &e, (off_t) next);
    if (need > f->size - used) break;
    used += need;
    last = next;
    sent++;
  }
  if (bad != NULL) {
    fuse_reply_err(f->req, EIO); free(buf); free_fwd(f);
    char msg[128];
    snprintf(msg, sizeof(msg), "replyDir: entry %u is not %s", sent, bad);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  fuse_reply_buf(f->req, buf, used);
  free(buf);
  free_fwd(f);
  napi_value v;
  napi_create_uint32(env, sent, &v);
  return v;
}

/*
 * replyLookup(session, id): a change is made; its answer is the entry it made (mknod, mkdir,
 * symlink, link: looked up here, one lookup the kernel holds) or the node's attributes (setattr).
 */
static napi_value m_reply_lookup(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 2, argv, &fs, "replyLookup(session, id)");
  if (f == NULL) return answered(env, false);
  if (f->op == F_SETATTR) {
    struct stat st;
    int fd = inode_of(f->req, f->lparent)->fd;
    if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) fuse_reply_err(f->req, errno);
    else fuse_reply_attr(f->req, &st, ATTR_TIMEOUT(fs));
  } else if (f->lname != NULL) {
    struct fuse_entry_param e;
    int err = do_lookup_at(f->req, f->lparent, f->lname, &e, false);
    if (err != 0) fuse_reply_err(f->req, err);
    else if (fuse_reply_entry(f->req, &e) != 0) forget_in(fs, e.ino, 1); /* (the request is gone with its reply) */
  } else {
    fuse_reply_err(f->req, EIO);
  }
  free_fwd(f);
  return answered(env, true);
}

/* replyCreate(session, id, fh): a create is made and opened as the handler's handle `fh`. False: not answered (the handler closes `fh`). */
static napi_value m_reply_create(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyCreate(session, id, fh)");
  if (f == NULL || f->op != F_CREATE) { if (f != NULL) { fuse_reply_err(f->req, EIO); free_fwd(f); } return answered(env, false); }
  double fh = 0;
  napi_get_value_double(env, argv[2], &fh);
  struct fuse_entry_param e;
  int err = do_lookup_at(f->req, f->lparent, f->lname, &e, false);
  bool ok = false;
  if (err != 0) fuse_reply_err(f->req, err);
  else {
    struct fuse_file_info fi = f->fi;
    fi.fh = ((uint64_t) fh << 1) | 1;
    __atomic_add_fetch(&fs->opens, 1, __ATOMIC_RELAXED);
    ok = fuse_reply_create(f->req, &e, &fi) == 0;
    if (!ok) { __atomic_sub_fetch(&fs->opens, 1, __ATOMIC_RELAXED); forget_in(fs, e.ino, 1); }
  }
  free_fwd(f);
  return answered(env, ok);
}

/* replyWrite(session, id, bytes): a write's answer, the bytes it wrote. */
static napi_value m_reply_write(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  fs_t *fs;
  fwd_t *f = reply_args(env, info, 3, argv, &fs, "replyWrite(session, id, bytes)");
  if (f == NULL) return answered(env, false);
  double n = 0;
  napi_get_value_double(env, argv[2], &n);
  if (f->op != F_WRITE || !(n >= 0 && n <= (double) f->size)) fuse_reply_err(f->req, EIO);
  else fuse_reply_write(f->req, (size_t) n);
  free_fwd(f);
  return answered(env, true);
}

/*
 * logSync(session, fd, published): fsync on this journaled mount makes the SRL's ring durable here
 * (fs_t.log_fd): `fd` the ring's descriptor (copied: the daemon may close its own), `published`
 * the SRL's Float64Array [last sequence number, head, closed] (kept alive until the next call).
 * logSync(session, -1, null): the handler's again (before the SRL it named goes, or another's comes).
 */
static napi_value m_log_sync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  session_t *s = NULL;
  int32_t fd = -1;
  const char *usage = "logSync(session, fd, Float64Array [seq, head, closed]) or logSync(session, -1, null)";
  if (argc < 3 || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok || s == NULL || napi_get_value_int32(env, argv[1], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  double *pub = NULL;
  if (fd >= 0) {
    napi_typedarray_type type;
    size_t length = 0;
    void *data = NULL;
    bool is = false;
    napi_is_typedarray(env, argv[2], &is);
    if (!is || napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array || length < 3) {
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
    pub = data;
  }
  if (!__atomic_load_n(&s->running, __ATOMIC_ACQUIRE)) return NULL; /* unmounted: nothing to sync */
  /* The addon's own open of the ring (not a dup: see fs_t.log_fd). */
  int mine = -1;
  if (fd >= 0) {
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if ((mine = open(link, O_RDONLY | O_CLOEXEC)) < 0) { throw_errno(env, errno, "open", link); return NULL; }
  }
  napi_ref ref = NULL;
  if (pub != NULL && napi_create_reference(env, argv[2], 1, &ref) != napi_ok) { close(mine); napi_throw_error(env, NULL, "cannot keep the SRL's figures"); return NULL; }
  pthread_mutex_lock(&s->fs.log_lock);
  int old_fd = s->fs.log_fd;
  napi_ref old_ref = s->fs.log_ref;
  s->fs.log_fd = mine;
  s->fs.log_pub = pub;
  s->fs.log_ref = ref;
  s->fs.log_gen++;
  s->fs.log_seq = 0;
  s->fs.log_head = 0;
  s->fs.log_errno = 0;
  pthread_mutex_unlock(&s->fs.log_lock);
  if (old_fd >= 0) close(old_fd);
  if (old_ref != NULL) napi_delete_reference(env, old_ref);
  return NULL;
}

/* logSynced(session) -> { seq, head, errno }: the newest sync done here (after an F_SYNCED notice; errno non-zero: one failed, and every fsync since answers EIO). */
static napi_value m_log_synced(napi_env env, napi_callback_info info) {
  /* (After unmount too: what the last syncs found is still the handler's to hear.) */
  session_t *s = session_arg_of(env, info, "logSynced(session)", true);
  if (s == NULL) return NULL;
  pthread_mutex_lock(&s->fs.log_lock);
  s->fs.log_noticed = false;
  double seq = s->fs.log_seq, head = s->fs.log_head;
  int err = s->fs.log_errno;
  pthread_mutex_unlock(&s->fs.log_lock);
  napi_value r, v;
  napi_create_object(env, &r);
  napi_create_double(env, seq, &v);
  napi_set_named_property(env, r, "seq", v);
  napi_create_double(env, head, &v);
  napi_set_named_property(env, r, "head", v);
  napi_create_int32(env, err, &v);
  napi_set_named_property(env, r, "errno", v);
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  fuse_set_log_func(ll_log);
  napi_value f;
  napi_create_function(env, "mount", NAPI_AUTO_LENGTH, m_mount, NULL, &f);
  napi_set_named_property(env, exports, "mount", f);
  napi_create_function(env, "unmount", NAPI_AUTO_LENGTH, m_unmount, NULL, &f);
  napi_set_named_property(env, exports, "unmount", f);
  napi_create_function(env, "stats", NAPI_AUTO_LENGTH, m_stats, NULL, &f);
  napi_set_named_property(env, exports, "stats", f);
  napi_create_function(env, "hold", NAPI_AUTO_LENGTH, m_hold, NULL, &f);
  napi_set_named_property(env, exports, "hold", f);
  napi_create_function(env, "release", NAPI_AUTO_LENGTH, m_release, NULL, &f);
  napi_set_named_property(env, exports, "release", f);
  static const struct { const char *name; napi_callback fn; } more[] = {
    { "replyErr", m_reply_err }, { "replyEntry", m_reply_entry }, { "replyAttr", m_reply_attr },
    { "replyOpen", m_reply_open }, { "replyBuf", m_reply_buf }, { "replyDir", m_reply_dir },
    { "changed", m_changed }, { "pending", m_pending }, { "invalAttrs", m_inval_attrs },
    { "replyLookup", m_reply_lookup }, { "replyCreate", m_reply_create }, { "replyWrite", m_reply_write },
    { "logSync", m_log_sync }, { "logSynced", m_log_synced },
  };
  for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
    napi_create_function(env, more[i].name, NAPI_AUTO_LENGTH, more[i].fn, NULL, &f);
    napi_set_named_property(env, exports, more[i].name, f);
  }
  /* The names of the handler's first and last arguments (call_js): op by index, a change's numbers in order. */
  napi_value names, v;
  napi_create_array_with_length(env, sizeof(fwd_ops) / sizeof(fwd_ops[0]), &names);
  for (uint32_t i = 0; i < sizeof(fwd_ops) / sizeof(fwd_ops[0]); i++) { napi_create_string_utf8(env, fwd_ops[i], NAPI_AUTO_LENGTH, &v); napi_set_element(env, names, i, v); }
  napi_set_named_property(env, exports, "ops", names);
  napi_create_array_with_length(env, NUMS, &names);
  for (uint32_t i = 0; i < NUMS; i++) { napi_create_string_utf8(env, num_names[i], NAPI_AUTO_LENGTH, &v); napi_set_element(env, names, i, v); }
  napi_set_named_property(env, exports, "nums", names);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
