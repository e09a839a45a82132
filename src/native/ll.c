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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fuse_lowlevel.h"
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
} inode_t;

#define BUCKETS 65536

typedef struct {
  inode_t root;
  inode_t *table[BUCKETS];
  pthread_mutex_t lock;
  double timeout;         /* entry and attribute timeout, seconds */
  bool want_passthrough;  /* asked for (mount flag 1) */
  bool passthrough;       /* and granted by the kernel (INIT) */
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
} fs_t;

static size_t bucket_of(dev_t dev, ino_t ino) {
  uint64_t h = (uint64_t) ino * 0x9E3779B97F4A7C15ull ^ (uint64_t) dev;
  return (size_t) (h >> 48) % BUCKETS;
}

static fs_t *fs_of(fuse_req_t req) { return fuse_req_userdata(req); }

static inode_t *inode_of(fuse_req_t req, fuse_ino_t ino) {
  fs_t *fs = fs_of(req);
  return ino == FUSE_ROOT_ID ? &fs->root : (inode_t *) (uintptr_t) ino;
}

/* Looks `name` up in `parent`: fills `e`, takes a lookup reference. Returns 0 or an errno. */
static int do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name, struct fuse_entry_param *e) {
  fs_t *fs = fs_of(req);
  memset(e, 0, sizeof(*e));
  e->attr_timeout = fs->timeout;
  e->entry_timeout = fs->timeout;
  int fd = openat(inode_of(req, parent)->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) { int err = errno; close(fd); return err; }
  pthread_mutex_lock(&fs->lock);
  inode_t *in;
  if (e->attr.st_dev == fs->root.dev && e->attr.st_ino == fs->root.ino) in = &fs->root;
  else {
    size_t b = bucket_of(e->attr.st_dev, e->attr.st_ino);
    for (in = fs->table[b]; in != NULL; in = in->next) if (in->dev == e->attr.st_dev && in->ino == e->attr.st_ino) break;
    if (in == NULL) {
      in = calloc(1, sizeof(*in));
      if (in == NULL) { pthread_mutex_unlock(&fs->lock); close(fd); return ENOMEM; }
      in->fd = fd;
      fd = -1;
      in->dev = e->attr.st_dev;
      in->ino = e->attr.st_ino;
      in->next = fs->table[b];
      fs->table[b] = in;
    }
  }
  in->nlookup++;
  pthread_mutex_unlock(&fs->lock);
  if (fd >= 0) close(fd); /* known already: its own descriptor is kept */
  e->ino = in == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t) (uintptr_t) in;
  return 0;
}

static void forget_one(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  fs_t *fs = fs_of(req);
  inode_t *in = inode_of(req, ino);
  if (in == &fs->root) return;
  pthread_mutex_lock(&fs->lock);
  in->nlookup = n >= in->nlookup ? 0 : in->nlookup - n;
  if (in->nlookup == 0) {
    inode_t **p = &fs->table[bucket_of(in->dev, in->ino)];
    while (*p != NULL && *p != in) p = &(*p)->next;
    if (*p == in) *p = in->next;
    close(in->fd);
    free(in);
  }
  pthread_mutex_unlock(&fs->lock);
}

/* ---------- operations ---------- */

static void op_init(void *userdata, struct fuse_conn_info *conn) {
  fs_t *fs = userdata;
  /* FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN): the kernel reads an open file's backing file
     itself, no request reaches us. Refused: every read is served here, as without it. */
  if (fs->want_passthrough) fs->passthrough = fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH);
  pthread_mutex_lock(&fs->lock);
  fs->inited = true;
  pthread_cond_broadcast(&fs->init_cond);
  pthread_mutex_unlock(&fs->lock);
  /* Read-only, no locks to forward; directory listings with attributes in one request. */
  fuse_set_feature_flag(conn, FUSE_CAP_READDIRPLUS);
  fuse_unset_feature_flag(conn, FUSE_CAP_READDIRPLUS_AUTO);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
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
  struct stat st;
  if (fstatat(inode_of(req, ino)->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) { fuse_reply_err(req, errno); return; }
  fuse_reply_attr(req, &st, fs_of(req)->timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
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
  dir_t *d = calloc(1, sizeof(*d));
  if (d == NULL) { fuse_reply_err(req, ENOMEM); return; }
  int fd = reopen(req, ino, O_RDONLY | O_DIRECTORY);
  if (fd < 0 || (d->dp = fdopendir(fd)) == NULL) { int err = errno; if (fd >= 0) close(fd); free(d); fuse_reply_err(req, err); return; }
  fi->fh = (uint64_t) (uintptr_t) d;
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  fuse_reply_open(req, fi);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
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
    } else {
      int lerr = do_lookup(req, ino, name, &e);
      if (lerr == ENOENT) { d->entry = NULL; d->offset = next; continue; } /* gone meanwhile */
      if (lerr != 0) { err = lerr; break; }
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
  (void) ino;
  dir_t *d = (dir_t *) (uintptr_t) fi->fh;
  closedir(d->dp);
  free(d);
  fuse_reply_err(req, 0);
}

/* An open file: its descriptor, and the inode whose backing file it reads through (passthrough) or NULL. */
typedef struct { int fd; inode_t *pt; } open_t;

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) { fuse_reply_err(req, EROFS); return; }
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
  if (o->pt == NULL) fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void) ino;
  __atomic_add_fetch(&fs_of(req)->reads, 1, __ATOMIC_RELAXED);
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  buf.buf[0].fd = ((open_t *) (uintptr_t) fi->fh)->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) ino;
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
  if (fstatvfs(inode_of(req, ino)->fd, &sv) < 0) fuse_reply_err(req, errno);
  else fuse_reply_statfs(req, &sv);
}

/* xattrs through the O_PATH descriptor's magic link (f*xattr do not take O_PATH descriptors): it resolves to that very inode, a symlink included. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
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
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_of(req, ino)->fd);
  char *value = size > 0 ? malloc(size) : NULL;
  if (size > 0 && value == NULL) { fuse_reply_err(req, ENOMEM); return; }
  ssize_t n = listxattr(path, value, size);
  if (n < 0) fuse_reply_err(req, errno);
  else if (size == 0) fuse_reply_xattr(req, (size_t) n);
  else fuse_reply_buf(req, value, (size_t) n);
  free(value);
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
} session_t;

static void *loop_thread(void *arg) {
  session_t *s = arg;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  s->loop_result = fuse_session_loop_mt(s->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  return NULL;
}

static void free_table(fs_t *fs) {
  for (size_t b = 0; b < BUCKETS; b++) {
    for (inode_t *in = fs->table[b]; in != NULL;) { inode_t *next = in->next; close(in->fd); free(in); in = next; }
    fs->table[b] = NULL;
  }
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
  session_t *s = data;
  if (!s->running) { pthread_mutex_destroy(&s->fs.lock); pthread_cond_destroy(&s->fs.init_cond); pthread_rwlock_destroy(&s->fs.apply); free(s); }
}

/* mount(root, mountpoint, options: string, timeoutSeconds: number, flags: number) -> session (external); flags: 1 passthrough */
static napi_value m_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) { napi_throw_type_error(env, NULL, "mount(root, mountpoint, options, timeoutSeconds, flags)"); return NULL; }
  double timeout;
  if (napi_get_value_double(env, argv[3], &timeout) != napi_ok || !(timeout >= 0)) { napi_throw_type_error(env, NULL, "timeoutSeconds must be a number >= 0"); return NULL; }
  uint32_t flags;
  if (napi_get_value_uint32(env, argv[4], &flags) != napi_ok || (flags & ~1u) != 0) { napi_throw_type_error(env, NULL, "flags must be 0 or 1 (passthrough)"); return NULL; }
  char *root = get_str(env, argv[0]);
  if (root == NULL) return NULL;
  char *mnt = get_str(env, argv[1]);
  if (mnt == NULL) { free(root); return NULL; }
  char *opts = get_str(env, argv[2]);
  if (opts == NULL) { free(root); free(mnt); return NULL; }
  session_t *s = calloc(1, sizeof(*s));
  if (s == NULL) { free(root); free(mnt); free(opts); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  last_log[0] = '\0';
  s->fs.timeout = timeout;
  s->fs.want_passthrough = (flags & 1) != 0;
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
  char *args_v[] = { "replicafs", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
  s->se = fuse_session_new(&args, &ops, sizeof(ops), &s->fs);
  if (s->se == NULL) { napi_throw_error(env, "EINVAL", "libfuse refused the session (see the options in the daemon log)"); goto fail; }
  if (fuse_session_mount(s->se, mnt) != 0) { throw_errno(env, errno != 0 ? errno : EIO, "mount", mnt); fuse_session_destroy(s->se); s->se = NULL; goto fail; }
  s->mountpoint = mnt;
  mnt = NULL;
  if (pthread_create(&s->thread, NULL, loop_thread, s) != 0) {
    int e = errno;
    fuse_session_unmount(s->se); fuse_session_destroy(s->se); s->se = NULL;
    throw_errno(env, e, "pthread_create", s->mountpoint); free(s->mountpoint); s->mountpoint = NULL;
    goto fail;
  }
  s->running = true;
  /* Ready when the kernel's INIT is answered (what was granted is known then), 10 s at most. */
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&s->fs.lock);
  while (!s->fs.inited && pthread_cond_timedwait(&s->fs.init_cond, &s->fs.lock, &until) == 0) {}
  bool inited = s->fs.inited;
  pthread_mutex_unlock(&s->fs.lock);
  if (!inited) {
    s->running = false;
    fuse_session_exit(s->se);
    fuse_session_unmount(s->se);
    pthread_join(s->thread, NULL);
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
  free_table(&s->fs);
  pthread_mutex_destroy(&s->fs.lock);
  pthread_cond_destroy(&s->fs.init_cond);
  pthread_rwlock_destroy(&s->fs.apply);
  free(s); free(root); free(mnt); free(opts);
  return NULL;
}

static session_t *session_arg(napi_env env, napi_callback_info info, const char *usage) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  session_t *s = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok || s == NULL) { napi_throw_type_error(env, NULL, usage); return NULL; }
  if (!s->running) { napi_throw_error(env, "EINVAL", "this session is unmounted already"); return NULL; }
  return s;
}

/* unmount(session): unmounts (lazily: a busy mount goes once its last user does), ends the loop, frees. */
static napi_value m_unmount(napi_env env, napi_callback_info info) {
  session_t *s = session_arg(env, info, "unmount(session)");
  if (s == NULL) return NULL;
  if (s->fs.held) { s->fs.held = false; pthread_rwlock_unlock(&s->fs.apply); } /* requests in the loop finish, the loop ends */
  s->running = false;
  fuse_session_exit(s->se);
  fuse_session_unmount(s->se);
  pthread_join(s->thread, NULL);
  fuse_session_destroy(s->se);
  s->se = NULL;
  free_table(&s->fs);
  free(s->mountpoint);
  s->mountpoint = NULL;
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
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
