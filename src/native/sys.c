/*
 * replicafs_sys: thin N-API wrappers around Linux syscalls that
 * Node's fs module does not expose (xattrs, mknod, utimensat with ns and
 * UTIME_NOW/UTIME_OMIT, fallocate, FICLONE, syncfs, umount2, dlopen, and for
 * snapshots (src/snapshot): file handles (name_to_handle_at/open_by_handle_at),
 * a readdir giving inode numbers, d_type and handles, and readlink of an fd), and one
 * asynchronous call: applyWrites, the Primary's apply of WRITE records from the SRL ring.
 *
 * Every failure throws an Error shaped like Node's fs errors:
 *   err.code = 'ENOENT', err.errno = -2, err.syscall = 'lgetxattr',
 *   err.path = '/p' (when there is a path),
 *   message "ENOENT: no such file or directory, lgetxattr '/p'".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define NAPI_VERSION 6
#include <node_api.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif
#ifndef FICLONERANGE
struct file_clone_range {
  int64_t src_fd;
  uint64_t src_offset;
  uint64_t src_length;
  uint64_t dest_offset;
};
#define FICLONERANGE _IOW(0x94, 13, struct file_clone_range)
#endif

#define MAX_ARGS 6

#include "napi_errors.h"

/* Throws a Node-fs-shaped error. path may be NULL. Always returns NULL. */
static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, e, syscall, path));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* ---------- argument helpers (return 0 on success, -1 after throwing) ---------- */

typedef struct {
  size_t argc;
  napi_value argv[MAX_ARGS];
} args_t;

static int get_args(napi_env env, napi_callback_info info, args_t *a, size_t want) {
  a->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &a->argc, a->argv, NULL, NULL) != napi_ok) return -1;
  if (a->argc < want) {
    char msg[96];
    snprintf(msg, sizeof(msg), "expected %zu arguments, got %zu", want, a->argc);
    throw_type(env, msg);
    return -1;
  }
  return 0;
}

/* Heap-allocated string; caller frees. */
static char *get_str(napi_env env, napi_value v, const char *what) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof(msg), "%s must be a string", what);
    throw_type(env, msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    char msg[96];
    snprintf(msg, sizeof(msg), "%s must not contain NUL bytes", what);
    throw_type(env, msg);
    return NULL;
  }
  return s;
}

static int get_i64(napi_env env, napi_value v, const char *what, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !isfinite(d) || d != floor(d)) {
    char msg[96];
    snprintf(msg, sizeof(msg), "%s must be an integer", what);
    throw_type(env, msg);
    return -1;
  }
  *out = (int64_t) d;
  return 0;
}

static int get_i32(napi_env env, napi_value v, const char *what, int32_t *out) {
  int64_t x;
  if (get_i64(env, v, what, &x) < 0) return -1;
  *out = (int32_t) x;
  return 0;
}

static int get_bool(napi_env env, napi_value v, bool *out) {
  napi_value b;
  if (napi_coerce_to_bool(env, v, &b) != napi_ok) return -1;
  napi_get_value_bool(env, b, out);
  return 0;
}

/* A typed array of `want` elements' type: its data and element count. */
static int get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *msg, void **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  napi_is_typedarray(env, v, &is_ta);
  if (is_ta) napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL);
  if (!is_ta || type != want) { throw_type(env, msg); return -1; }
  return 0;
}

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value make_buffer(napi_env env, const char *data, size_t len) {
  napi_value buf;
  void *dst;
  napi_create_buffer_copy(env, len, len ? data : "", &dst, &buf);
  return buf;
}

/* xattr name list "a\0b\0" -> string[] */
static napi_value make_name_list(napi_env env, const char *list, ssize_t len) {
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t idx = 0;
  ssize_t i = 0;
  while (i < len) {
    size_t n = strnlen(list + i, (size_t) (len - i));
    if (n > 0) {
      napi_value s;
      napi_create_string_utf8(env, list + i, n, &s);
      napi_set_element(env, arr, idx++, s);
    }
    i += (ssize_t) n + 1;
  }
  return arr;
}

/* ---------- xattrs ---------- */

/* Generic size-probing loop: size 0 to learn the size, allocate, retry on ERANGE
 * (the value may grow between the two calls). */
typedef ssize_t (*getter_fn)(const void *target, const char *name, void *buf, size_t size);

static ssize_t g_lget(const void *t, const char *n, void *b, size_t s) { return lgetxattr((const char *) t, n, b, s); }
static ssize_t g_fget(const void *t, const char *n, void *b, size_t s) { return fgetxattr(*(const int *) t, n, b, s); }
static ssize_t g_llist(const void *t, const char *n, void *b, size_t s) { (void) n; return llistxattr((const char *) t, b, s); }
static ssize_t g_flist(const void *t, const char *n, void *b, size_t s) { (void) n; return flistxattr(*(const int *) t, b, s); }

/* Returns malloc'd buffer (may be NULL when *len == 0) or sets *err. */
static char *probe(getter_fn fn, const void *target, const char *name, ssize_t *len, int *err) {
  for (int attempt = 0; attempt < 64; attempt++) {
    ssize_t n = fn(target, name, NULL, 0);
    if (n < 0) { *err = errno; return NULL; }
    if (n == 0) { *len = 0; return NULL; }
    char *buf = malloc((size_t) n);
    if (buf == NULL) { *err = ENOMEM; return NULL; }
    ssize_t m = fn(target, name, buf, (size_t) n);
    if (m >= 0) { *len = m; return buf; }
    int e = errno;
    free(buf);
    if (e != ERANGE) { *err = e; return NULL; }
  }
  *err = ERANGE;
  return NULL;
}

static napi_value do_getxattr(napi_env env, napi_callback_info info, int byfd) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  char *path = NULL, *name = NULL;
  int fd = -1;
  napi_value ret = NULL;
  if (byfd) { if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL; }
  else if ((path = get_str(env, a.argv[0], "path")) == NULL) return NULL;
  if ((name = get_str(env, a.argv[1], "name")) == NULL) goto out;
  ssize_t len = 0;
  int err = 0;
  char *buf = byfd ? probe(g_fget, &fd, name, &len, &err) : probe(g_lget, path, name, &len, &err);
  if (err) { throw_errno(env, err, byfd ? "fgetxattr" : "lgetxattr", path); goto out; }
  ret = make_buffer(env, buf, (size_t) len);
  free(buf);
out:
  free(path);
  free(name);
  return ret;
}

static napi_value do_setxattr(napi_env env, napi_callback_info info, int byfd) {
  args_t a;
  if (get_args(env, info, &a, 3) < 0) return NULL;
  char *path = NULL, *name = NULL;
  int fd = -1;
  int32_t flags = 0;
  napi_value ret = NULL;
  if (byfd) { if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL; }
  else if ((path = get_str(env, a.argv[0], "path")) == NULL) return NULL;
  if ((name = get_str(env, a.argv[1], "name")) == NULL) goto out;
  bool isbuf = false;
  napi_is_buffer(env, a.argv[2], &isbuf);
  if (!isbuf) { throw_type(env, "value must be a Buffer"); goto out; }
  void *data;
  size_t len;
  napi_get_buffer_info(env, a.argv[2], &data, &len);
  if (a.argc > 3 && get_i32(env, a.argv[3], "flags", &flags) < 0) goto out;
  int r = byfd ? fsetxattr(fd, name, data, len, flags) : lsetxattr(path, name, data, len, flags);
  if (r < 0) { throw_errno(env, errno, byfd ? "fsetxattr" : "lsetxattr", path); goto out; }
  ret = undef(env);
out:
  free(path);
  free(name);
  return ret;
}

static napi_value do_listxattr(napi_env env, napi_callback_info info, int byfd) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  char *path = NULL;
  int fd = -1;
  if (byfd) { if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL; }
  else if ((path = get_str(env, a.argv[0], "path")) == NULL) return NULL;
  ssize_t len = 0;
  int err = 0;
  char *buf = byfd ? probe(g_flist, &fd, NULL, &len, &err) : probe(g_llist, path, NULL, &len, &err);
  napi_value ret = NULL;
  if (err) throw_errno(env, err, byfd ? "flistxattr" : "llistxattr", path);
  else ret = make_name_list(env, buf, len);
  free(buf);
  free(path);
  return ret;
}

static napi_value do_removexattr(napi_env env, napi_callback_info info, int byfd) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  char *path = NULL, *name = NULL;
  int fd = -1;
  napi_value ret = NULL;
  if (byfd) { if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL; }
  else if ((path = get_str(env, a.argv[0], "path")) == NULL) return NULL;
  if ((name = get_str(env, a.argv[1], "name")) == NULL) goto out;
  int r = byfd ? fremovexattr(fd, name) : lremovexattr(path, name);
  if (r < 0) { throw_errno(env, errno, byfd ? "fremovexattr" : "lremovexattr", path); goto out; }
  ret = undef(env);
out:
  free(path);
  free(name);
  return ret;
}

static napi_value m_lgetxattr(napi_env env, napi_callback_info info) { return do_getxattr(env, info, 0); }
static napi_value m_fgetxattr(napi_env env, napi_callback_info info) { return do_getxattr(env, info, 1); }
static napi_value m_lsetxattr(napi_env env, napi_callback_info info) { return do_setxattr(env, info, 0); }
static napi_value m_fsetxattr(napi_env env, napi_callback_info info) { return do_setxattr(env, info, 1); }
static napi_value m_llistxattr(napi_env env, napi_callback_info info) { return do_listxattr(env, info, 0); }
static napi_value m_flistxattr(napi_env env, napi_callback_info info) { return do_listxattr(env, info, 1); }
static napi_value m_lremovexattr(napi_env env, napi_callback_info info) { return do_removexattr(env, info, 0); }
static napi_value m_fremovexattr(napi_env env, napi_callback_info info) { return do_removexattr(env, info, 1); }

/* ---------- mknod ---------- */

static napi_value m_mknod(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  int64_t mode, dev = 0;
  if (get_i64(env, a.argv[1], "mode", &mode) < 0) return NULL;
  if (a.argc > 2 && get_i64(env, a.argv[2], "dev", &dev) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  napi_value ret = NULL;
  if (mknod(path, (mode_t) mode, (dev_t) dev) < 0) throw_errno(env, errno, "mknod", path);
  else ret = undef(env);
  free(path);
  return ret;
}

/* ---------- times ---------- */

static int get_ts(napi_env env, napi_value s, napi_value ns, struct timespec *ts) {
  int64_t sec, nsec;
  if (get_i64(env, s, "sec", &sec) < 0) return -1;
  if (get_i64(env, ns, "nsec", &nsec) < 0) return -1;
  ts->tv_sec = (time_t) sec;
  ts->tv_nsec = (long) nsec;
  return 0;
}

static napi_value m_utimensat(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 5) < 0) return NULL;
  struct timespec ts[2];
  bool nofollow = false;
  if (get_ts(env, a.argv[1], a.argv[2], &ts[0]) < 0) return NULL;
  if (get_ts(env, a.argv[3], a.argv[4], &ts[1]) < 0) return NULL;
  if (a.argc > 5 && get_bool(env, a.argv[5], &nofollow) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  napi_value ret = NULL;
  if (utimensat(AT_FDCWD, path, ts, nofollow ? AT_SYMLINK_NOFOLLOW : 0) < 0) throw_errno(env, errno, "utimensat", path);
  else ret = undef(env);
  free(path);
  return ret;
}

static napi_value m_futimens(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 5) < 0) return NULL;
  int32_t fd;
  struct timespec ts[2];
  if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL;
  if (get_ts(env, a.argv[1], a.argv[2], &ts[0]) < 0) return NULL;
  if (get_ts(env, a.argv[3], a.argv[4], &ts[1]) < 0) return NULL;
  if (futimens(fd, ts) < 0) return throw_errno(env, errno, "futimens", NULL);
  return undef(env);
}

static napi_value m_lstatNs(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  struct stat st;
  int r = lstat(path, &st);
  if (r < 0) { throw_errno(env, errno, "lstat", path); free(path); return NULL; }
  free(path);
  double vals[6] = {
    (double) st.st_atim.tv_sec, (double) st.st_atim.tv_nsec,
    (double) st.st_mtim.tv_sec, (double) st.st_mtim.tv_nsec,
    (double) st.st_ctim.tv_sec, (double) st.st_ctim.tv_nsec,
  };
  napi_value arr;
  napi_create_array_with_length(env, 6, &arr);
  for (uint32_t i = 0; i < 6; i++) {
    napi_value v;
    napi_create_double(env, vals[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

/* ---------- fallocate / clone / syncfs ---------- */

static napi_value m_fallocate(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 4) < 0) return NULL;
  int32_t fd, mode;
  int64_t off, len;
  if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL;
  if (get_i32(env, a.argv[1], "mode", &mode) < 0) return NULL;
  if (get_i64(env, a.argv[2], "offset", &off) < 0) return NULL;
  if (get_i64(env, a.argv[3], "length", &len) < 0) return NULL;
  if (fallocate(fd, mode, (off_t) off, (off_t) len) < 0) return throw_errno(env, errno, "fallocate", NULL);
  return undef(env);
}

static napi_value m_ficlone(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  int32_t dst, src;
  if (get_i32(env, a.argv[0], "destFd", &dst) < 0) return NULL;
  if (get_i32(env, a.argv[1], "srcFd", &src) < 0) return NULL;
  if (ioctl(dst, FICLONE, src) < 0) return throw_errno(env, errno, "ioctl(FICLONE)", NULL);
  return undef(env);
}

static napi_value m_ficlonerange(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 5) < 0) return NULL;
  int32_t dst, src;
  int64_t soff, len, doff;
  if (get_i32(env, a.argv[0], "destFd", &dst) < 0) return NULL;
  if (get_i32(env, a.argv[1], "srcFd", &src) < 0) return NULL;
  if (get_i64(env, a.argv[2], "srcOffset", &soff) < 0) return NULL;
  if (get_i64(env, a.argv[3], "length", &len) < 0) return NULL;
  if (get_i64(env, a.argv[4], "destOffset", &doff) < 0) return NULL;
  struct file_clone_range r = { .src_fd = src, .src_offset = (uint64_t) soff, .src_length = (uint64_t) len, .dest_offset = (uint64_t) doff };
  if (ioctl(dst, FICLONERANGE, &r) < 0) return throw_errno(env, errno, "ioctl(FICLONERANGE)", NULL);
  return undef(env);
}

static napi_value m_syncfs(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  int32_t fd;
  if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL;
  if (syncfs(fd) < 0) return throw_errno(env, errno, "syncfs", NULL);
  return undef(env);
}

#ifndef STATX_MNT_ID_UNIQUE
#define STATX_MNT_ID_UNIQUE 0x4000U /* Linux 6.8: a mount id never reused while the system runs */
#endif

/* mountId(path): the unique id of the mount `path` is on (statx STATX_MNT_ID_UNIQUE), as a decimal
   string, or null when the kernel gives none (before Linux 6.8). A filesystem unmounted and mounted
   again gets a new one: what its page cache held is gone. */
static napi_value m_mountId(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  struct statx st;
  napi_value ret = NULL;
  if (statx(AT_FDCWD, path, 0, STATX_MNT_ID_UNIQUE, &st) < 0) {
    throw_errno(env, errno, "statx", path);
  } else if ((st.stx_mask & STATX_MNT_ID_UNIQUE) == 0) {
    napi_get_null(env, &ret);
  } else {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long) st.stx_mnt_id);
    napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &ret);
  }
  free(path);
  return ret;
}

/* ---------- applyWrites: the Primary's write apply, off the event loop ---------- */

/*
 * applyWrites(srcFd, jobs: Float64Array, mode, callback(index, errno))
 * applyWrites(srcFd, jobs: Float64Array, mode) -> -1 | index * 65536 + errno  (the same, synchronously)
 *
 * jobs holds 6 numbers per write: srcOffset, destFd, destOffset, length, mtimeSec, mtimeNsec.
 * On a libuv threadpool thread, in order, each job copies `length` bytes from srcFd (the SRL
 * ring, where the record's data already is) to destFd, then sets destFd's mtime (atime
 * untouched). Mode 0 copies with copy_file_range(2) (one in-kernel copy, page cache to page
 * cache; pread/pwrite where the two files cannot copy between them); mode 1 always with
 * pread/pwrite (filesystems where copy_file_range may share blocks instead of copying). The
 * callback gets (-1, 0) when every job is done, or the index of the job that failed and its errno
 * (the jobs after it are not run).
 */
typedef struct {
  napi_async_work work;
  napi_ref cb;
  int src;
  int mode;
  size_t n;
  double *jobs;
  int fail_index;
  int fail_errno;
} apply_work_t;

static int copy_range(int src, off_t soff, int dst, off_t doff, size_t len, int mode) {
  int use_crf = mode == 0;
  char *buf = NULL;
  while (len > 0) {
    ssize_t n = -1;
    if (use_crf) {
      loff_t si = soff, di = doff;
      n = copy_file_range(src, &si, dst, &di, len, 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        use_crf = 0;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { free(buf); return errno; }
      if (n == 0) { free(buf); return EIO; } /* the source ends early: the ring is shorter than the record */
    } else {
      size_t chunk = len < (1u << 20) ? len : (1u << 20);
      if (buf == NULL && (buf = malloc(1u << 20)) == NULL) return ENOMEM;
      ssize_t r = pread(src, buf, chunk, soff);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) { free(buf); return errno; }
      if (r == 0) { free(buf); return EIO; }
      size_t done = 0;
      while (done < (size_t) r) {
        ssize_t w = pwrite(dst, buf + done, (size_t) r - done, doff + (off_t) done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) { free(buf); return errno; }
        if (w == 0) { free(buf); return EIO; }
        done += (size_t) w;
      }
      n = r;
    }
    soff += n;
    doff += n;
    len -= (size_t) n;
  }
  free(buf);
  return 0;
}

static void apply_execute(napi_env env, void *data) {
  (void) env;
  apply_work_t *w = data;
  for (size_t i = 0; i < w->n; i++) {
    double *j = w->jobs + i * 6;
    int dst = (int) j[1];
    int e = copy_range(w->src, (off_t) j[0], dst, (off_t) j[2], (size_t) j[3], w->mode);
    if (e == 0) {
      struct timespec ts[2] = { { 0, UTIME_OMIT }, { (time_t) j[4], (long) j[5] } };
      if (futimens(dst, ts) < 0) e = errno;
    }
    if (e != 0) { w->fail_index = (int) i; w->fail_errno = e; return; }
  }
}

static void apply_complete(napi_env env, napi_status status, void *data) {
  apply_work_t *w = data;
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_global(env, &global);
  if (status != napi_ok && w->fail_index < 0) { w->fail_index = 0; w->fail_errno = ECANCELED; }
  napi_create_int32(env, w->fail_index, &argv[0]);
  napi_create_int32(env, w->fail_errno, &argv[1]);
  napi_delete_reference(env, w->cb);
  napi_delete_async_work(env, w->work);
  free(w->jobs);
  free(w);
  napi_call_function(env, global, cb, 2, argv, NULL);
}

static napi_value m_applyWrites(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 3) < 0) return NULL;
  int32_t src, mode;
  if (get_i32(env, a.argv[0], "srcFd", &src) < 0) return NULL;
  if (get_i32(env, a.argv[2], "mode", &mode) < 0) return NULL;
  if (mode != 0 && mode != 1) return throw_type(env, "mode must be 0 or 1");
  size_t len;
  void *data;
  if (get_typed(env, a.argv[1], napi_float64_array, "jobs must be a Float64Array", &data, &len) < 0) return NULL;
  if (len % 6 != 0) return throw_type(env, "jobs must be a Float64Array of 6 numbers per write");
  napi_valuetype t = napi_undefined;
  if (a.argc > 3) napi_typeof(env, a.argv[3], &t);
  if (t != napi_function && t != napi_undefined) return throw_type(env, "callback must be a function");
  if (t == napi_undefined) {
    /* Synchronous: on the calling thread; returns -1, or index * 65536 + errno of the failed job. */
    apply_work_t w = { .src = src, .mode = mode, .n = len / 6, .jobs = data, .fail_index = -1 };
    apply_execute(env, &w);
    napi_value r;
    napi_create_double(env, w.fail_index < 0 ? -1 : (double) w.fail_index * 65536 + w.fail_errno, &r);
    return r;
  }
  apply_work_t *w = calloc(1, sizeof(*w));
  double *jobs = malloc(len ? len * sizeof(double) : 1);
  if (w == NULL || jobs == NULL) { free(w); free(jobs); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  memcpy(jobs, data, len * sizeof(double));
  w->src = src;
  w->mode = mode;
  w->n = len / 6;
  w->jobs = jobs;
  w->fail_index = -1;
  napi_value name;
  napi_create_string_utf8(env, "replicafs:applyWrites", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, a.argv[3], 1, &w->cb) != napi_ok) { free(jobs); free(w); napi_throw_error(env, "EIO", "applyWrites: cannot reference the callback"); return NULL; }
  if (napi_create_async_work(env, NULL, name, apply_execute, apply_complete, w, &w->work) != napi_ok) {
    napi_delete_reference(env, w->cb); free(jobs); free(w);
    napi_throw_error(env, "EIO", "applyWrites: cannot create the async work");
    return NULL;
  }
  if (napi_queue_async_work(env, w->work) != napi_ok) {
    napi_delete_async_work(env, w->work); napi_delete_reference(env, w->cb); free(jobs); free(w);
    napi_throw_error(env, "EIO", "applyWrites: cannot queue the async work");
    return NULL;
  }
  return undef(env);
}

/* ---------- crc32c: CRC-32C (Castagnoli), three streams at once ---------- */

/*
 * The SRL checksums every record, data included, before the FUSE reply, so the CRC is on every
 * writer's path (128 KiB per big write). The SSE4.2 crc32 instruction has a latency of about three
 * cycles and a throughput of one per cycle: one stream of it runs at a third of what the core can
 * do. So the buffer is cut into three blocks checksummed together, and the three registers are
 * combined: for the raw (uninverted) register r, raw(r, A||B) = Z_|B|(r) ^ raw(0, B), where
 * Z_n appends n zero bytes, a linear map precomputed as four 256-entry tables per block length.
 * Same result as any CRC-32C: crc32c(buf, prev) = ~raw(~prev, buf). Exported only where the CPU
 * has SSE4.2 (x86-64); elsewhere the JS side keeps using @node-rs/crc32.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define CRC32C_HW 1
#define CRC32C_POLY 0x82f63b78u
#define CRC_LONG 8192
#define CRC_SHORT 256

static uint32_t crc_long_tab[4][256];
static uint32_t crc_short_tab[4][256];
static int crc_hw_ok = 0;

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
  uint32_t sum = 0;
  for (; vec; vec >>= 1, mat++) if (vec & 1) sum ^= *mat;
  return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat) {
  for (int n = 0; n < 32; n++) sq[n] = gf2_times(mat, mat[n]);
}

/* The raw register `crc` after `len` more zero bytes (len > 0). */
static uint32_t crc32c_zeros(uint32_t crc, size_t len) {
  uint32_t odd[32], even[32];
  odd[0] = CRC32C_POLY; /* one zero bit, reflected: bit 0 shifts out and brings the polynomial */
  for (int n = 1; n < 32; n++) odd[n] = 1u << (n - 1);
  gf2_square(even, odd); /* two zero bits */
  gf2_square(odd, even); /* four */
  for (;;) {
    gf2_square(even, odd); /* eight: a byte, then 2, 4, ... bytes */
    if (len & 1) crc = gf2_times(even, crc);
    len >>= 1;
    if (len == 0) break;
    gf2_square(odd, even);
    if (len & 1) crc = gf2_times(odd, crc);
    len >>= 1;
    if (len == 0) break;
  }
  return crc;
}

static void crc32c_shift_table(uint32_t tab[4][256], size_t len) {
  uint32_t col[32];
  for (int i = 0; i < 32; i++) col[i] = crc32c_zeros(1u << i, len);
  for (int k = 0; k < 4; k++) {
    for (int v = 0; v < 256; v++) {
      uint32_t x = 0;
      for (int b = 0; b < 8; b++) if (v & (1 << b)) x ^= col[8 * k + b];
      tab[k][v] = x;
    }
  }
}

static inline uint32_t crc32c_shift(uint32_t tab[4][256], uint32_t crc) {
  return tab[0][crc & 0xff] ^ tab[1][(crc >> 8) & 0xff] ^ tab[2][(crc >> 16) & 0xff] ^ tab[3][crc >> 24];
}

/* Consumes whole runs of three `blk`-byte blocks from *buf: three registers, then combined. */
__attribute__((target("sse4.2")))
static inline uint64_t crc32c_3way(uint64_t c0, const unsigned char **buf, size_t *len, size_t blk, uint32_t tab[4][256]) {
  const unsigned char *p = *buf;
  size_t n = *len;
  uint64_t a, b, c;
  while (n >= 3 * blk) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = p + blk;
    do {
      memcpy(&a, p, 8); memcpy(&b, p + blk, 8); memcpy(&c, p + 2 * blk, 8);
      c0 = _mm_crc32_u64(c0, a); c1 = _mm_crc32_u64(c1, b); c2 = _mm_crc32_u64(c2, c);
      p += 8;
    } while (p < end);
    c0 = crc32c_shift(tab, (uint32_t) c0) ^ (uint32_t) c1;
    c0 = crc32c_shift(tab, (uint32_t) c0) ^ (uint32_t) c2;
    p += 2 * blk;
    n -= 3 * blk;
  }
  *buf = p;
  *len = n;
  return c0;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t prev, const unsigned char *buf, size_t len) {
  uint64_t c0 = prev ^ 0xffffffffu;
  while (len > 0 && ((uintptr_t) buf & 7) != 0) { c0 = _mm_crc32_u8((uint32_t) c0, *buf++); len--; }
  c0 = crc32c_3way(c0, &buf, &len, CRC_LONG, crc_long_tab);
  c0 = crc32c_3way(c0, &buf, &len, CRC_SHORT, crc_short_tab);
  uint64_t a;
  while (len >= 8) { memcpy(&a, buf, 8); c0 = _mm_crc32_u64(c0, a); buf += 8; len -= 8; }
  while (len > 0) { c0 = _mm_crc32_u8((uint32_t) c0, *buf++); len--; }
  return (uint32_t) c0 ^ 0xffffffffu;
}

static void crc32c_init(void) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("sse4.2")) return;
  crc32c_shift_table(crc_long_tab, CRC_LONG);
  crc32c_shift_table(crc_short_tab, CRC_SHORT);
  crc_hw_ok = 1;
}

/* crc32c(buf: Uint8Array, prev?: number): number */
static napi_value m_crc32c(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  size_t len;
  void *data;
  if (get_typed(env, a.argv[0], napi_uint8_array, "buf must be a Uint8Array", &data, &len) < 0) return NULL;
  uint32_t prev = 0;
  if (a.argc > 1) {
    napi_valuetype t;
    napi_typeof(env, a.argv[1], &t);
    if (t != napi_undefined && napi_get_value_uint32(env, a.argv[1], &prev) != napi_ok) return throw_type(env, "prev must be a number");
  }
  napi_value r;
  napi_create_uint32(env, crc32c_hw(prev, data, len), &r);
  return r;
}
#endif

/* ---------- mapShared / unmapShared: the SRL ring as shared memory ---------- */

/* Live mappings, so unmapShared() touches only addresses mapShared() returned. Guarded by a
 * mutex: the addon may be loaded by worker threads too. */
typedef struct mapping { void *addr; size_t len; struct mapping *next; } mapping_t;
static mapping_t *mappings = NULL;
static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;

static void mapping_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)data;
  mapping_t *m = hint;
  pthread_mutex_lock(&mappings_lock);
  for (mapping_t **p = &mappings; *p != NULL; p = &(*p)->next) {
    if (*p == m) { *p = m->next; break; }
  }
  pthread_mutex_unlock(&mappings_lock);
  munmap(m->addr, m->len);
  free(m);
}

/*
 * mapShared(fd, length) -> Buffer over a MAP_SHARED, read-write mapping of the file's first
 * `length` bytes. A store into it is a store into the page cache: it survives the process, and
 * fdatasync(fd) writes it back like a pwrite would. The file must be at least `length` long and
 * must never shrink while mapped (an access past EOF is SIGBUS).
 */
static napi_value m_mapShared(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  int32_t fd;
  int64_t len;
  if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL;
  if (napi_get_value_int64(env, a.argv[1], &len) != napi_ok || len <= 0) return throw_type(env, "length must be a positive number");
  void *addr = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return throw_errno(env, errno, "mmap", NULL);
  /* A fault reads its own page only, into a page-sized folio: read-around would bring in large
     folios, and a store into one then has fdatasync write all of it back (see fadvise). */
  (void) madvise(addr, (size_t)len, MADV_RANDOM);
  mapping_t *m = malloc(sizeof *m);
  if (m == NULL) { munmap(addr, (size_t)len); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  m->addr = addr;
  m->len = (size_t)len;
  napi_value buf;
  if (napi_create_external_buffer(env, (size_t)len, addr, mapping_finalize, m, &buf) != napi_ok) {
    munmap(addr, (size_t)len);
    free(m);
    napi_throw_error(env, "EIO", "mapShared: cannot create a buffer over the mapping");
    return NULL;
  }
  pthread_mutex_lock(&mappings_lock);
  m->next = mappings;
  mappings = m;
  pthread_mutex_unlock(&mappings_lock);
  return buf;
}

/*
 * fadvise(fd, offset, length, advice): posix_fadvise with advice 'random' (no readahead for this
 * open file: reads bring in page-sized folios), 'dontneed' (drop the range's clean pages from the
 * page cache), 'willneed' (read the range in now, in page-sized folios: the kernel's forced
 * readahead) or 'normal'. Why the SRL's ring wants them: the kernel (6.x) caches a file
 * in large folios after large writes or readahead, and a small store into one makes fdatasync
 * write the whole folio back: a 1 KiB record appended to a ring zero-filled in 1 MiB writes cost
 * 1 MiB of device writes at each sync (measured: 1,024 KiB per fdatasync, 4 KiB with page-sized
 * folios).
 */
static napi_value m_fadvise(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 4) < 0) return NULL;
  int32_t fd;
  int64_t off, len;
  if (get_i32(env, a.argv[0], "fd", &fd) < 0 || get_i64(env, a.argv[1], "offset", &off) < 0 || get_i64(env, a.argv[2], "length", &len) < 0) return NULL;
  char *what = get_str(env, a.argv[3], "advice");
  if (what == NULL) return NULL;
  int advice = strcmp(what, "random") == 0 ? POSIX_FADV_RANDOM : strcmp(what, "dontneed") == 0 ? POSIX_FADV_DONTNEED :
    strcmp(what, "willneed") == 0 ? POSIX_FADV_WILLNEED : strcmp(what, "normal") == 0 ? POSIX_FADV_NORMAL : -1;
  free(what);
  if (advice < 0) return throw_type(env, "advice must be 'random', 'dontneed', 'willneed' or 'normal'");
  int err = posix_fadvise(fd, (off_t) off, (off_t) len, advice);
  if (err != 0) return throw_errno(env, err, "posix_fadvise", NULL);
  return NULL;
}

/*
 * unmapShared(buf): detaches a mapShared() buffer from its file at once (the file's pages are no
 * longer referenced) by mapping private zero pages over the same addresses; the finalizer unmaps
 * those when the buffer is collected. A stray access afterwards reads zeros and writes nowhere.
 */
static napi_value m_unmapShared(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  void *addr;
  size_t len;
  bool isbuf = false;
  napi_is_buffer(env, a.argv[0], &isbuf);
  if (!isbuf || napi_get_buffer_info(env, a.argv[0], &addr, &len) != napi_ok) return throw_type(env, "buf must be a Buffer from mapShared");
  bool known = false;
  pthread_mutex_lock(&mappings_lock);
  for (mapping_t *m = mappings; m != NULL; m = m->next) {
    if (m->addr == addr && m->len == len) { known = true; break; }
  }
  pthread_mutex_unlock(&mappings_lock);
  if (!known) return throw_type(env, "buf must be a whole Buffer from mapShared");
  /* Idempotent: mapping zero pages over zero pages again is harmless. */
  if (mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
    return throw_errno(env, errno, "mmap", NULL);
  }
  return undef(env);
}

/* ---------- dlopen / umount2 ---------- */

static napi_value m_dlopenGlobal(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL); /* never dlclose'd on purpose */
  if (h == NULL) {
    const char *e = dlerror();
    char msg[PATH_MAX + 512];
    snprintf(msg, sizeof(msg), "dlopen '%s' failed: %s", path, e ? e : "unknown error");
    napi_throw_error(env, "ERR_DLOPEN_FAILED", msg);
    free(path);
    return NULL;
  }
  free(path);
  return undef(env);
}

static napi_value m_umount2(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  int32_t flags = 0;
  if (a.argc > 1 && get_i32(env, a.argv[1], "flags", &flags) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  napi_value ret = NULL;
  if (umount2(path, flags) < 0) throw_errno(env, errno, "umount2", path);
  else ret = undef(env);
  free(path);
  return ret;
}

/*
 * remountBind(path, flags): mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags, NULL), which
 * sets the per-mount flags of the mount at `path` (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC and
 * the atime flags) to exactly `flags`, leaving the filesystem alone. For the mount options
 * libfuse 2 does not know (strictatime, nodiratime).
 */
static napi_value m_remountBind(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  int32_t flags = 0;
  if (get_i32(env, a.argv[1], "flags", &flags) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  napi_value ret = NULL;
  if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | (unsigned long) (uint32_t) flags, NULL) < 0) throw_errno(env, errno, "mount", path);
  else ret = undef(env);
  free(path);
  return ret;
}

/*
 * remount(path, flags): mount(NULL, path, NULL, MS_REMOUNT | flags, NULL), which changes the flags
 * of the filesystem (the superblock) mounted at `path`: MS_RDONLY or not. A Secondary's read-only
 * FUSE mount becomes writable in place when it takes over (src/fuse/adapter.ts), with remountBind
 * for the per-mount flag.
 */
static napi_value m_remount(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 2) < 0) return NULL;
  int32_t flags = 0;
  if (get_i32(env, a.argv[1], "flags", &flags) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  napi_value ret = NULL;
  if (mount(NULL, path, NULL, MS_REMOUNT | (unsigned long) (uint32_t) flags, NULL) < 0) throw_errno(env, errno, "mount", path);
  else ret = undef(env);
  free(path);
  return ret;
}

/* ---------- clock ---------- */

/*
 * clockRealtimeCoarse(): [seconds, nanoseconds] of CLOCK_REALTIME_COARSE, the clock the kernel
 * stamps inode times from. A time taken from it before a change is never later than the ctime
 * the change gets, so a record's mtime never passes its file's ctime.
 */
static napi_value m_clockRealtimeCoarse(napi_env env, napi_callback_info info) {
  (void) info;
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME_COARSE, &ts) < 0) return throw_errno(env, errno, "clock_gettime", NULL);
  napi_value arr, v;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_int64(env, (int64_t) ts.tv_sec, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_int64(env, (int64_t) ts.tv_nsec, &v);
  napi_set_element(env, arr, 1, v);
  return arr;
}

/* ---------- file handles, readdir with inode numbers (snapshots) ---------- */

/*
 * A handle as a Buffer is struct file_handle as the kernel lays it out:
 * u32 handle_bytes, i32 handle_type, then handle_bytes opaque bytes
 * (native byte order). Returns NULL and sets errno on failure.
 */
static napi_value handle_at(napi_env env, int dirfd, const char *name, int *err) {
  unsigned int size = 64;
  for (int attempt = 0; attempt < 4; attempt++) {
    struct file_handle *fh = malloc(sizeof(*fh) + size);
    if (fh == NULL) { *err = ENOMEM; return NULL; }
    fh->handle_bytes = size;
    int mount_id;
    /* flags 0: a final symlink is not followed (AT_SYMLINK_FOLLOW would). */
    if (name_to_handle_at(dirfd, name, fh, &mount_id, 0) == 0) {
      napi_value buf = make_buffer(env, (const char *) fh, sizeof(*fh) + fh->handle_bytes);
      free(fh);
      return buf;
    }
    int e = errno;
    unsigned int want = fh->handle_bytes;
    free(fh);
    if (e != EOVERFLOW || want <= size) { *err = e; return NULL; }
    size = want;
  }
  *err = EOVERFLOW;
  return NULL;
}

static napi_value m_nameToHandle(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  int err = 0;
  napi_value ret = handle_at(env, AT_FDCWD, path, &err);
  if (ret == NULL) throw_errno(env, err, "name_to_handle_at", path);
  free(path);
  return ret;
}

static napi_value m_openByHandle(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 3) < 0) return NULL;
  napi_valuetype t;
  napi_typeof(env, a.argv[0], &t);
  int mount_fd = -1, own = 0;
  char *mpath = NULL;
  if (t == napi_string) {
    if ((mpath = get_str(env, a.argv[0], "mount")) == NULL) return NULL;
    /* Not O_PATH: open_by_handle_at takes the mount from an fd that fdget() accepts. */
    mount_fd = open(mpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mount_fd < 0) { throw_errno(env, errno, "open", mpath); free(mpath); return NULL; }
    own = 1;
  } else if (get_i32(env, a.argv[0], "mountFd", &mount_fd) < 0) {
    return NULL;
  }
  napi_value ret = NULL;
  bool isbuf = false;
  napi_is_buffer(env, a.argv[1], &isbuf);
  void *data = NULL;
  size_t len = 0;
  int32_t flags = 0;
  if (!isbuf) { throw_type(env, "handle must be a Buffer"); goto out; }
  napi_get_buffer_info(env, a.argv[1], &data, &len);
  if (get_i32(env, a.argv[2], "flags", &flags) < 0) goto out;
  if (len < sizeof(struct file_handle) || len > sizeof(struct file_handle) + MAX_HANDLE_SZ) { throw_type(env, "handle has a bad length"); goto out; }
  {
    struct file_handle *fh = malloc(len);
    if (fh == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); goto out; }
    memcpy(fh, data, len);
    if (sizeof(*fh) + fh->handle_bytes != len) { free(fh); throw_type(env, "handle has a bad length"); goto out; }
    int fd = open_by_handle_at(mount_fd, fh, flags | O_CLOEXEC);
    int e = errno;
    free(fh);
    if (fd < 0) { throw_errno(env, e, "open_by_handle_at", mpath); goto out; }
    napi_create_int32(env, fd, &ret);
  }
out:
  if (own) close(mount_fd);
  free(mpath);
  return ret;
}

/*
 * readdirEntries(path, withHandles): every entry but . and .., as a flat array
 * [name, ino, d_type, handle|null, name, ino, ...]. The directory is opened
 * with O_NOATIME where allowed, so listing it leaves its atime alone. A handle
 * is null when the filesystem cannot make one for that entry (EOPNOTSUPP) or
 * the entry went away meanwhile.
 */
static napi_value m_readdirEntries(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  bool with_handles = false;
  if (a.argc > 1 && get_bool(env, a.argv[1], &with_handles) < 0) return NULL;
  char *path = get_str(env, a.argv[0], "path");
  if (path == NULL) return NULL;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) { throw_errno(env, errno, "opendir", path); free(path); return NULL; }
  DIR *d = fdopendir(fd);
  if (d == NULL) { int e = errno; close(fd); throw_errno(env, e, "fdopendir", path); free(path); return NULL; }
  napi_value arr, v, nul;
  napi_create_array(env, &arr);
  napi_get_null(env, &nul);
  uint32_t idx = 0;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (de == NULL) {
      if (errno != 0) { int e = errno; closedir(d); throw_errno(env, e, "readdir", path); free(path); return NULL; }
      break;
    }
    if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0))) continue;
    napi_create_string_utf8(env, de->d_name, NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, arr, idx++, v);
    napi_create_double(env, (double) de->d_ino, &v);
    napi_set_element(env, arr, idx++, v);
    napi_create_int32(env, de->d_type, &v);
    napi_set_element(env, arr, idx++, v);
    v = nul;
    if (with_handles) {
      int err = 0;
      napi_value h = handle_at(env, dirfd(d), de->d_name, &err);
      if (h != NULL) v = h;
      else if (err != EOPNOTSUPP && err != ENOENT && err != ESTALE) { closedir(d); throw_errno(env, err, "name_to_handle_at", path); free(path); return NULL; }
    }
    napi_set_element(env, arr, idx++, v);
  }
  closedir(d);
  free(path);
  return arr;
}

/*
 * hashFile(path, chunkBytes, callback(err, hashes, identity)): on a libuv threadpool thread, the
 * XXH3-128 hash (seed 0; low 64 bits little-endian, then high 64 bits, as src/sync/hash.ts
 * chunkHash) of each `chunkBytes` of the regular file at `path` (the last one of what is left),
 * as one Buffer of 16 bytes per chunk, and the file's identity [ino, size, mtimeNs, ctimeNs]
 * (BigInts) when the read began: ctimeNs -1n if the file changed while it was read (those hashes
 * describe no one state of it). A file shorter than its size when read has its last chunk's hash
 * over what was there. Opened O_NOFOLLOW|O_NONBLOCK (a FIFO put there does not block: EINVAL for
 * anything but a regular file). The reads, the hashing and the stats cost the event loop nothing.
 */
typedef struct {
  napi_async_work work;
  napi_ref cb;
  char *path;
  size_t chunk;
  int err;
  const char *syscall;
  unsigned char *hashes;
  size_t n;
  struct stat st;
  int changed;
} hash_work_t;

static void hash_execute(napi_env env, void *data) {
  (void) env;
  hash_work_t *w = data;
  int fd = open(w->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(w->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) { w->err = errno; w->syscall = "open"; return; }
  unsigned char *buf = NULL;
  if (fstat(fd, &w->st) < 0) { w->err = errno; w->syscall = "fstat"; goto out; }
  if (!S_ISREG(w->st.st_mode)) { w->err = EINVAL; w->syscall = "open"; goto out; }
  size_t size = (size_t) w->st.st_size;
  w->n = (size + w->chunk - 1) / w->chunk;
  w->hashes = malloc(w->n ? w->n * 16 : 1);
  buf = malloc(size < w->chunk ? (size ? size : 1) : w->chunk);
  if (w->hashes == NULL || buf == NULL) { w->err = ENOMEM; w->syscall = "malloc"; goto out; }
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  for (size_t i = 0; i < w->n; i++) {
    off_t off = (off_t) (i * w->chunk);
    size_t len = size - (size_t) off < w->chunk ? size - (size_t) off : w->chunk;
    size_t got = 0;
    while (got < len) {
      ssize_t r = pread(fd, buf + got, len - got, off + (off_t) got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) { w->err = errno; w->syscall = "read"; goto out; }
      if (r == 0) break;
      got += (size_t) r;
    }
    XXH128_hash_t h = XXH3_128bits(buf, got);
    unsigned char *o = w->hashes + i * 16;
    for (int b = 0; b < 8; b++) { o[b] = (unsigned char) (h.low64 >> (8 * b)); o[8 + b] = (unsigned char) (h.high64 >> (8 * b)); }
  }
  struct stat after;
  if (fstat(fd, &after) < 0) { w->err = errno; w->syscall = "fstat"; goto out; }
  w->changed = after.st_ino != w->st.st_ino || after.st_size != w->st.st_size ||
    after.st_mtim.tv_sec != w->st.st_mtim.tv_sec || after.st_mtim.tv_nsec != w->st.st_mtim.tv_nsec ||
    after.st_ctim.tv_sec != w->st.st_ctim.tv_sec || after.st_ctim.tv_nsec != w->st.st_ctim.tv_nsec;
out:
  free(buf);
  close(fd);
}

static void hash_complete(napi_env env, napi_status status, void *data) {
  hash_work_t *w = data;
  napi_value cb, global, argv[3];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_global(env, &global);
  if (status != napi_ok && w->err == 0) { w->err = ECANCELED; w->syscall = "hashFile"; }
  if (w->err != 0) {
    argv[0] = errno_error(env, w->err, w->syscall, w->path);
    napi_get_null(env, &argv[1]);
    napi_get_null(env, &argv[2]);
  } else {
    napi_get_null(env, &argv[0]);
    void *copy;
    napi_create_buffer_copy(env, w->n * 16, w->hashes, &copy, &argv[1]);
    napi_create_array_with_length(env, 4, &argv[2]);
    int64_t id[4] = {
      (int64_t) w->st.st_ino, (int64_t) w->st.st_size,
      (int64_t) w->st.st_mtim.tv_sec * 1000000000 + w->st.st_mtim.tv_nsec,
      w->changed ? -1 : (int64_t) w->st.st_ctim.tv_sec * 1000000000 + w->st.st_ctim.tv_nsec
    };
    for (uint32_t i = 0; i < 4; i++) {
      napi_value v;
      napi_create_bigint_int64(env, id[i], &v);
      napi_set_element(env, argv[2], i, v);
    }
  }
  napi_delete_reference(env, w->cb);
  napi_delete_async_work(env, w->work);
  free(w->hashes);
  free(w->path);
  free(w);
  napi_call_function(env, global, cb, 3, argv, NULL);
}

static napi_value m_hashFile(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 3) < 0) return NULL;
  int64_t chunk;
  if (get_i64(env, a.argv[1], "chunkBytes", &chunk) < 0) return NULL;
  if (chunk <= 0 || chunk > (1 << 30)) return throw_type(env, "chunkBytes must be between 1 and 2^30");
  napi_valuetype t = napi_undefined;
  napi_typeof(env, a.argv[2], &t);
  if (t != napi_function) return throw_type(env, "callback must be a function");
  hash_work_t *w = calloc(1, sizeof(*w));
  if (w == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  w->path = get_str(env, a.argv[0], "path");
  if (w->path == NULL) { free(w); return NULL; }
  w->chunk = (size_t) chunk;
  napi_value name;
  napi_create_string_utf8(env, "replicafs:hashFile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, a.argv[2], 1, &w->cb) != napi_ok) { free(w->path); free(w); napi_throw_error(env, "EIO", "hashFile: cannot reference the callback"); return NULL; }
  if (napi_create_async_work(env, NULL, name, hash_execute, hash_complete, w, &w->work) != napi_ok) {
    napi_delete_reference(env, w->cb); free(w->path); free(w);
    napi_throw_error(env, "EIO", "hashFile: cannot create the async work");
    return NULL;
  }
  if (napi_queue_async_work(env, w->work) != napi_ok) {
    napi_delete_async_work(env, w->work); napi_delete_reference(env, w->cb); free(w->path); free(w);
    napi_throw_error(env, "EIO", "hashFile: cannot queue the async work");
    return NULL;
  }
  return undef(env);
}

/*
 * willNeed(dir, names, bytes): starts the kernel's read-ahead of the first `bytes` of each
 * regular file `names` of directory `dir` (posix_fadvise WILLNEED: the reads are issued, not
 * waited for), so that a walk reading them one by one later finds them in the page cache. Names
 * that are gone or not regular files are passed over; nothing is thrown for them. The opens are
 * O_NONBLOCK|O_NOFOLLOW (a FIFO put there meanwhile does not block; a symlink is not followed).
 * Returns how many files it started.
 */
static napi_value m_willNeed(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 3) < 0) return NULL;
  int64_t bytes;
  if (get_i64(env, a.argv[2], "bytes", &bytes) < 0) return NULL;
  bool is_arr = false;
  napi_is_array(env, a.argv[1], &is_arr);
  if (!is_arr) return throw_type(env, "names must be an array");
  char *path = get_str(env, a.argv[0], "dir");
  if (path == NULL) return NULL;
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(path);
  int started = 0;
  if (dfd >= 0) {
    uint32_t n = 0;
    napi_get_array_length(env, a.argv[1], &n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value v;
      char name[NAME_MAX + 1];
      size_t len = 0;
      if (napi_get_element(env, a.argv[1], i, &v) != napi_ok) continue;
      if (napi_get_value_string_utf8(env, v, name, sizeof(name), &len) != napi_ok || len == 0 || len >= NAME_MAX + 1 || strlen(name) != len) continue;
      int fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NOATIME);
      if (fd < 0 && errno == EPERM) fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
      if (fd < 0) continue;
      struct stat st;
      if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && posix_fadvise(fd, 0, (off_t) bytes, POSIX_FADV_WILLNEED) == 0) started++;
      close(fd);
    }
    close(dfd);
  }
  napi_value r;
  napi_create_int32(env, started, &r);
  return r;
}

/* readlinkFd(fd): the target of the symlink an O_PATH|O_NOFOLLOW fd (e.g. from openByHandle) names. */
static napi_value m_readlinkFd(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  int32_t fd;
  if (get_i32(env, a.argv[0], "fd", &fd) < 0) return NULL;
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(fd, "", buf, sizeof(buf));
  if (n < 0) return throw_errno(env, errno, "readlinkat", NULL);
  if ((size_t) n >= sizeof(buf)) return throw_errno(env, ENAMETOOLONG, "readlinkat", NULL);
  napi_value s;
  napi_create_string_utf8(env, buf, (size_t) n, &s);
  return s;
}

/*
 * cloexecFrom(fd): sets FD_CLOEXEC on every descriptor >= fd, so child processes (ibc run scripts,
 * sync -f) never inherit /dev/fuse or the SRL. close_range(CLOSE_RANGE_CLOEXEC) where the kernel
 * has it (5.11+), else fcntl on each descriptor listed in /proc/self/fd.
 */
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
static napi_value m_cloexecFrom(napi_env env, napi_callback_info info) {
  args_t a;
  if (get_args(env, info, &a, 1) < 0) return NULL;
  int32_t from;
  if (get_i32(env, a.argv[0], "fd", &from) < 0) return NULL;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned) from, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return NULL;
#endif
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return throw_errno(env, errno, "opendir", "/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd < from || fd == dirfd(d)) continue;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(d);
  return NULL;
}

/* ---------- init ---------- */

static void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static void export_int(napi_env env, napi_value exports, const char *name, int64_t v) {
  napi_value n;
  napi_create_int64(env, v, &n);
  napi_set_named_property(env, exports, name, n);
}

static napi_value init(napi_env env, napi_value exports) {
  export_fn(env, exports, "lgetxattr", m_lgetxattr);
  export_fn(env, exports, "lsetxattr", m_lsetxattr);
  export_fn(env, exports, "llistxattr", m_llistxattr);
  export_fn(env, exports, "lremovexattr", m_lremovexattr);
  export_fn(env, exports, "fgetxattr", m_fgetxattr);
  export_fn(env, exports, "fsetxattr", m_fsetxattr);
  export_fn(env, exports, "flistxattr", m_flistxattr);
  export_fn(env, exports, "fremovexattr", m_fremovexattr);
  export_fn(env, exports, "mknod", m_mknod);
  export_fn(env, exports, "utimensat", m_utimensat);
  export_fn(env, exports, "futimens", m_futimens);
  export_fn(env, exports, "lstatNs", m_lstatNs);
  export_fn(env, exports, "fallocate", m_fallocate);
  export_fn(env, exports, "ficlone", m_ficlone);
  export_fn(env, exports, "ficlonerange", m_ficlonerange);
  export_fn(env, exports, "syncfs", m_syncfs);
  export_fn(env, exports, "mountId", m_mountId);
  export_fn(env, exports, "applyWrites", m_applyWrites);
  export_fn(env, exports, "mapShared", m_mapShared);
  export_fn(env, exports, "unmapShared", m_unmapShared);
  export_fn(env, exports, "fadvise", m_fadvise);
#ifdef CRC32C_HW
  crc32c_init();
  if (crc_hw_ok) export_fn(env, exports, "crc32c", m_crc32c);
#endif
  export_fn(env, exports, "dlopenGlobal", m_dlopenGlobal);
  export_fn(env, exports, "umount2", m_umount2);
  export_fn(env, exports, "remountBind", m_remountBind);
  export_fn(env, exports, "remount", m_remount);
  export_fn(env, exports, "clockRealtimeCoarse", m_clockRealtimeCoarse);
  export_fn(env, exports, "nameToHandle", m_nameToHandle);
  export_fn(env, exports, "openByHandle", m_openByHandle);
  export_fn(env, exports, "readdirEntries", m_readdirEntries);
  export_fn(env, exports, "willNeed", m_willNeed);
  export_fn(env, exports, "hashFile", m_hashFile);
  export_fn(env, exports, "readlinkFd", m_readlinkFd);
  export_fn(env, exports, "cloexecFrom", m_cloexecFrom);

  export_int(env, exports, "UTIME_NOW", UTIME_NOW);
  export_int(env, exports, "UTIME_OMIT", UTIME_OMIT);
  export_int(env, exports, "XATTR_CREATE", XATTR_CREATE);
  export_int(env, exports, "XATTR_REPLACE", XATTR_REPLACE);
  export_int(env, exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  export_int(env, exports, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  export_int(env, exports, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  export_int(env, exports, "MNT_FORCE", MNT_FORCE);
  export_int(env, exports, "MNT_DETACH", MNT_DETACH);
  export_int(env, exports, "MS_RDONLY", MS_RDONLY);
  export_int(env, exports, "MS_NOSUID", MS_NOSUID);
  export_int(env, exports, "MS_NODEV", MS_NODEV);
  export_int(env, exports, "MS_NOEXEC", MS_NOEXEC);
  export_int(env, exports, "MS_NOATIME", MS_NOATIME);
  export_int(env, exports, "MS_NODIRATIME", MS_NODIRATIME);
  export_int(env, exports, "MS_RELATIME", MS_RELATIME);
  export_int(env, exports, "MS_STRICTATIME", MS_STRICTATIME);
  export_int(env, exports, "O_PATH", O_PATH);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
