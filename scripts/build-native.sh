#!/bin/sh
# Rebuild the committed native prebuilds (npm run prebuild-native).
#
#   native-prebuilds/sys/prebuilds/<platform>-<arch>/node.napi.node   replicafs_sys
#   native-prebuilds/fuse/prebuilds/<platform>-<arch>/node.napi.node  replicafs_fuse
#   native-prebuilds/fuse/prebuilds/<platform>-<arch>/libfuse.so      libfuse 2.9.9 (LGPL-2.1)
#   native-prebuilds/ll/prebuilds/<platform>-<arch>/node.napi.node   replicafs_ll (libfuse 3.18.2 compiled in, LGPL-2.1)
#
# prebuildify only picks up the first .node in build/Release, so each addon is
# built in its own run; src/native/binding.gyp selects the target from
# REPLICAFS_NATIVE_TARGET.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# node-gyp: npm sets npm_config_node_gyp for scripts; otherwise use npm's bundled copy.
NODE_GYP=${npm_config_node_gyp:-}
if [ -z "$NODE_GYP" ] || [ ! -f "$NODE_GYP" ]; then
  NODE_BIN=$(node -p 'require("fs").realpathSync(process.execPath)')
  for c in \
    "$(dirname "$NODE_BIN")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js" \
    "$(npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js"; do
    if [ -f "$c" ]; then NODE_GYP=$c; break; fi
  done
fi
[ -n "$NODE_GYP" ] && [ -f "$NODE_GYP" ] || { echo "build-native: node-gyp not found" >&2; exit 1; }

# Headers: npm passes npm_config_nodedir from .npmrc to scripts; when run by
# hand, use <prefix>/include/node if it exists so node-gyp needs no download.
if [ -z "${npm_config_nodedir:-}" ]; then
  PREFIX=$(node -p 'require("path").resolve(require("fs").realpathSync(process.execPath), "../..")')
  if [ -f "$PREFIX/include/node/node_api.h" ]; then export npm_config_nodedir="$PREFIX"; fi
fi

TUPLE=$(node -p 'process.platform + "-" + process.arch')
for t in sys fuse ll; do
  rm -rf src/native/build "native-prebuilds/$t/prebuilds/$TUPLE"
  REPLICAFS_NATIVE_TARGET=$t "$ROOT/node_modules/.bin/prebuildify" --napi --strip \
    --cwd src/native --out "native-prebuilds/$t" --node-gyp "$NODE_GYP"
done
rm -rf src/native/build

# libfuse (SONAME libfuse.so.2), dlopen()ed by src/native/index.ts before the bridge.
LIBFUSE_SRC=$(node -p 'require("path").join(require("path").dirname(require.resolve("fuse-native/package.json")), "prebuilds", process.platform + "-" + process.arch, "libfuse.so")')
if [ -f "$LIBFUSE_SRC" ]; then
  cp "$LIBFUSE_SRC" "native-prebuilds/fuse/prebuilds/$TUPLE/libfuse.so"
else
  echo "build-native: warning: $LIBFUSE_SRC not found; no libfuse.so copied" >&2
fi
ls -l native-prebuilds/*/prebuilds/"$TUPLE"
