/* Hand-written for replicafs (what meson's configure_file would make on Linux x86-64, glibc). */
#ifndef REPLICAFS_FUSE_CONFIG_H
#define REPLICAFS_FUSE_CONFIG_H
#define PACKAGE_VERSION "3.18.2"
#define HAVE_PIPE2 1
#define HAVE_SPLICE 1
#define HAVE_VMSPLICE 1
#define HAVE_UTIMENSAT 1
#define HAVE_STATX 1
#define HAVE_STRUCT_STAT_ST_ATIM 1
#define HAVE_PTHREAD_SETNAME_NP 1
#define HAVE_SETXATTR 1
#define HAVE_SYS_XATTR_H 1
#define HAVE_LINUX_LIMITS_H 1
#endif
