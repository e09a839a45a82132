/* Hand-written for replicafs (what meson's configure_file would make). */
#ifndef REPLICAFS_LIBFUSE_CONFIG_H
#define REPLICAFS_LIBFUSE_CONFIG_H
#define FUSE_MAJOR_VERSION 3
#define FUSE_MINOR_VERSION 18
#define FUSE_HOTFIX_VERSION 2
#define FUSE_RC_VERSION
#endif
