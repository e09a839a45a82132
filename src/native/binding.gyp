# replicafs native addons.
#
# Three targets:
#   replicafs_sys  - syscall wrappers (no libfuse dependency)      sys.c
#   replicafs_fuse - patched fuse-native bridge (links libfuse 2.9) fuse_bridge.c
#   replicafs_ll   - libfuse 3's low-level API (issue 14), with     ll.c + libfuse/lib/*.c
#                    libfuse 3.18.2 compiled in (src/native/libfuse/README.md)
#
# prebuildify only copies the first .node it finds in build/Release, so
# scripts/build-native.sh selects one target per run with the environment
# variable REPLICAFS_NATIVE_TARGET=sys|fuse|ll (unset or "all" builds all, which
# is what the build-from-source fallback in index.ts does).
{
  "variables": {
    "rfs_target%": "<!(node -p \"process.env.REPLICAFS_NATIVE_TARGET || 'all'\")",
    # fuse-native builds against fuse-shared-library (which resolves to
    # fuse-shared-library-linux on Linux); resolve it from fuse-native's own
    # location so nested/hoisted installs both work.
    "fuse_include": "<!(node -p \"require('path').join(require('path').dirname(require.resolve('fuse-shared-library-linux/package.json', {paths: [require('path').dirname(require.resolve('fuse-native/package.json'))]})), 'libfuse', 'include')\")",
    "fuse_libdir": "<!(node -p \"require('path').join(require('path').dirname(require.resolve('fuse-shared-library-linux/package.json', {paths: [require('path').dirname(require.resolve('fuse-native/package.json'))]})), 'libfuse', 'lib')\")",
    "napi_macros": "<!(node -p \"require('path').dirname(require.resolve('napi-macros/package.json', {paths: [require('path').dirname(require.resolve('fuse-native/package.json'))]}))\")"
  },
  "conditions": [
    ["rfs_target=='all' or rfs_target=='sys'", {
      "targets": [{
        "target_name": "replicafs_sys",
        "sources": ["sys.c"],
        "defines": ["_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
        "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        "libraries": ["-ldl"]
      }]
    }],
    ["rfs_target=='all' or rfs_target=='ll'", {
      "targets": [{
        "target_name": "replicafs_ll",
        "sources": ["ll.c", "libfuse/lib/buffer.c", "libfuse/lib/fuse_log.c", "libfuse/lib/fuse_loop.c",
                    "libfuse/lib/fuse_loop_mt.c", "libfuse/lib/fuse_lowlevel.c", "libfuse/lib/fuse_opt.c",
                    "libfuse/lib/fuse_signals.c", "libfuse/lib/mount.c", "libfuse/lib/mount_util.c",
                    "libfuse/lib/util.c"],
        "include_dirs": ["libfuse/include", "libfuse/lib"],
        # As libfuse's meson build: gnu11, its private config header, FUSE_USE_VERSION 317.
        # FUSERMOUNT_DIR: where libfuse would look for fusermount3 when mount(2) is refused; the
        # daemon runs as root and mounts directly, so none is shipped.
        "defines": ["_FILE_OFFSET_BITS=64", "FUSE_USE_VERSION=317", "HAVE_LIBFUSE_PRIVATE_CONFIG_H",
                    "FUSERMOUNT_DIR=\"/usr/bin\""],
        "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wno-unused-parameter", "-Wno-sign-compare", "-fvisibility=hidden"],
        "libraries": ["-lpthread"]
      }]
    }],
    ["rfs_target=='all' or rfs_target=='fuse'", {
      "targets": [{
        "target_name": "replicafs_fuse",
        "sources": ["fuse_bridge.c"],
        "include_dirs": ["<(napi_macros)", "<(fuse_include)"],
        # Mirrors fuse-native's binding.gyp (-g -O3 -Wall); FUSE_USE_VERSION is
        # also #defined in the source, _FILE_OFFSET_BITS=64 is required by fuse.h.
        "defines": ["_FILE_OFFSET_BITS=64", "FUSE_USE_VERSION=29"],
        "cflags": ["-g", "-O3", "-Wall"],
        # DT_NEEDED libfuse.so.2 (its SONAME); index.ts dlopen()s our copy of
        # libfuse.so with RTLD_GLOBAL before loading this addon.
        "libraries": ["-L<(fuse_libdir)", "-lfuse", "-lpthread"]
      }]
    }]
  ]
}
