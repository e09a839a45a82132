/*
 * Node-fs-shaped errors for the project's addons (sys.c, ll.c): an Error with code ("ENOENT"),
 * errno (negative), syscall and path, its message as Node's own fs errors word theirs.
 */
#ifndef REPLICAFS_NAPI_ERRORS_H
#define REPLICAFS_NAPI_ERRORS_H

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>

static const char *errno_name(int e) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC)
    E(EBADF) E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(ENOTBLK)
    E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL)
    E(ENFILE) E(EMFILE) E(ENOTTY) E(ETXTBSY) E(EFBIG) E(ENOSPC) E(ESPIPE)
    E(EROFS) E(EMLINK) E(EPIPE) E(EDOM) E(ERANGE) E(EDEADLK) E(ENAMETOOLONG)
    E(ENOLCK) E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(ENOMSG) E(EIDRM) E(ENODATA)
    E(ENOSTR) E(ETIME) E(ENOSR) E(EOVERFLOW) E(EBADFD) E(EILSEQ) E(EUSERS)
    E(ENOTSOCK) E(EOPNOTSUPP) E(EADDRINUSE) E(ENETDOWN) E(ECONNRESET)
    E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EALREADY)
    E(EINPROGRESS) E(ESTALE) E(EDQUOT) E(ECANCELED) E(EKEYEXPIRED)
    E(EUCLEAN) E(EREMOTEIO) E(ENOMEDIUM) E(EMEDIUMTYPE)
#undef E
    default: return "UNKNOWN";
  }
}

/* A Node-fs-shaped error. path may be NULL. */
static napi_value errno_error(napi_env env, int e, const char *syscall, const char *path) {
  const char *code = errno_name(e);
  char msg[PATH_MAX + 256];
  if (path != NULL)
    snprintf(msg, sizeof(msg), "%s: %s, %s '%s'", code, strerror(e), syscall, path);
  else
    snprintf(msg, sizeof(msg), "%s: %s, %s", code, strerror(e), syscall);
  /* Node's own fs messages use lower case strerror text ("no such file or directory"). */
  {
    char *p = strchr(msg, ':');
    if (p != NULL && p[1] == ' ' && p[2] >= 'A' && p[2] <= 'Z' && !(p[3] >= 'A' && p[3] <= 'Z')) p[2] = (char) (p[2] - 'A' + 'a');
  }
  napi_value jmsg, jcode, err, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_error(env, jcode, jmsg, &err);
  napi_set_named_property(env, err, "code", jcode);
  napi_create_int32(env, -e, &v);
  napi_set_named_property(env, err, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  if (path != NULL) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, err, "path", v);
  }
  return err;
}

#endif
