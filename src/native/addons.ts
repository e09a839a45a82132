/**
 * Loading the project's native addons (replicafs_sys, replicafs_fuse, replicafs_ll) and finding libfuse; see the
 * loading order in src/native/fuse.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import type { SysAddon, SysError, LlAddon, LlChange, LlRequest, LlSession } from './types';


let rootCache: string | undefined;

/** Directory containing the package.json named "replicafs" (walks up from __dirname). */
export function repoRoot(): string {
  if (rootCache !== undefined) return rootCache;
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(pj, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'replicafs') {
        rootCache = dir;
        return dir;
      }
    } catch {
      // no or unreadable package.json here; keep walking
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`replicafs: cannot find the replicafs package.json above ${__dirname}`);
    dir = up;
  }
}

type AddonKind = 'sys' | 'fuse' | 'll';
const ADDON_FILE: Record<AddonKind, string> = { sys: 'replicafs_sys.node', fuse: 'replicafs_fuse.node', ll: 'replicafs_ll.node' };

export function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split('\n').find((l) => l.trim() !== '') ?? msg).trim();
}

interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

export function nodeGypBuildFrom(dir: string): NodeGypBuild {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require(require.resolve('node-gyp-build', { paths: [dir] })) as NodeGypBuild;
}

// ---------------------------------------------------------------------------
// Build from source (fallback)

/** Locate node-gyp's CLI script (see the header comment for the search order). */
export function findNodeGyp(): string | undefined {
  const rel = path.join('node-gyp', 'bin', 'node-gyp.js');
  const candidates: string[] = [];
  const env = process.env;
  if (env.npm_config_node_gyp) candidates.push(env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [repoRoot()] }));
  } catch {
    // not installed locally
  }
  if (env.npm_execpath) {
    // <npm>/bin/npm-cli.js -> <npm>/node_modules/node-gyp
    candidates.push(path.resolve(path.dirname(env.npm_execpath), '..', 'node_modules', rel));
  }
  const binDir = path.dirname(fs.realpathSync(process.execPath));
  candidates.push(path.resolve(binDir, '..', 'lib', 'node_modules', 'npm', 'node_modules', rel));
  candidates.push(path.resolve(binDir, 'node_modules', 'npm', 'node_modules', rel));
  for (const c of candidates) if (fs.existsSync(c)) return c;
  try {
    const globalRoot = execFileSync('npm', ['root', '-g'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const c = path.join(globalRoot, 'npm', 'node_modules', rel);
    if (fs.existsSync(c)) return c;
  } catch {
    // npm not on PATH
  }
  return undefined;
}

function nodedirArgs(): string[] {
  if (process.env.npm_config_nodedir) return [`--nodedir=${process.env.npm_config_nodedir}`];
  const prefix = path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
    return [`--nodedir=${prefix}`];
  }
  return [];
}

let sourceBuild: { ok: true } | { ok: false; error: Error } | undefined;

function buildFromSource(reason: string): void {
  if (sourceBuild !== undefined) {
    if (sourceBuild.ok) return;
    throw sourceBuild.error;
  }
  const srcDir = path.join(repoRoot(), 'src', 'native');
  const nodeGyp = findNodeGyp();
  if (nodeGyp === undefined) {
    const error = new Error('no usable prebuild and node-gyp not found (looked at $npm_config_node_gyp, the repo, next to npm and node, npm root -g)');
    sourceBuild = { ok: false, error };
    throw error;
  }
  try {
    execFileSync(process.execPath, [nodeGyp, 'rebuild', '--release', ...nodedirArgs()], {
      cwd: srcDir,
      env: { ...process.env, REPLICAFS_NATIVE_TARGET: 'all' },
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const ex = e as { stdout?: Buffer; stderr?: Buffer };
    const output = `${ex.stdout?.toString() ?? ''}${ex.stderr?.toString() ?? ''}`;
    const lines = output.split('\n').filter((l) => !/^gyp info/.test(l));
    const errLine =
      lines.find((l) => /error:/i.test(l)) ?? lines.find((l) => /^gyp ERR!/.test(l)) ?? firstLine(e);
    const error = new Error(`building from source with node-gyp (${nodeGyp}) in ${srcDir} failed: ${errLine.trim()}`);
    (error as Error & { output?: string }).output = output;
    sourceBuild = { ok: false, error };
    throw error;
  }
  sourceBuild = { ok: true };
  process.stderr.write(`replicafs: no usable native prebuild (${reason}); built the addons from source into ${path.join(srcDir, 'build')}\n`);
}

export function loadAddon(kind: AddonKind): unknown {
  const root = repoRoot();
  const attempts: string[] = [];
  const prebuildDir = path.join(root, 'native-prebuilds', kind);
  try {
    return nodeGypBuildFrom(root)(prebuildDir);
  } catch (e) {
    attempts.push(`prebuild in ${prebuildDir}: ${firstLine(e)}`);
  }
  const built = path.join(root, 'src', 'native', 'build', 'Release', ADDON_FILE[kind]);
  if (fs.existsSync(built)) {
    try {
      return require(built) as unknown;
    } catch (e) {
      attempts.push(`existing source build ${built}: ${firstLine(e)}`);
    }
  }
  try {
    if (sourceBuild === undefined || !fs.existsSync(built)) buildFromSource(attempts[0] ?? 'none');
    return require(built) as unknown;
  } catch (e) {
    attempts.push(firstLine(e));
    const error = new Error(`replicafs: cannot load native addon ${ADDON_FILE[kind]}: ${attempts[attempts.length - 1]}`);
    (error as Error & { attempts?: string[] }).attempts = attempts;
    const output = (e as { output?: unknown }).output;
    if (typeof output === 'string') (error as Error & { output?: string }).output = output;
    throw error;
  }
}



export const sys: SysAddon = loadAddon('sys') as SysAddon;

let llAddon: LlAddon | undefined;

/** The change numbers' names in the order ll.c passes them (its num_names, exported as `nums`). */
const LL_NUMS = ['mode', 'rdev', 'uid', 'gid', 'valid', 'atime', 'atimeNs', 'mtime', 'mtimeNs', 'datasync', 'toUid', 'toGid'];

type LlHandlerArgs = [op: number, id: number, node: number, name: string | undefined, size: number, offset: number, fh: number, flags: number,
  path?: string, path2?: string, data?: Buffer, mode?: number, rdev?: number, uid?: number, gid?: number, valid?: number,
  atime?: number, atimeNs?: number, mtime?: number, mtimeNs?: number, datasync?: number, toUid?: number, toGid?: number];

/**
 * The addon hands a request to its handler as arguments (ll.c call_js: setting properties from C
 * costs a string-table lookup and a map transition each); this builds the LlRequest (an LlChange
 * for a change: 11 arguments and more) with object literals, whose shapes V8 makes once.
 */
function requestBuilder(ops: readonly string[], handler: (req: LlRequest) => void): (...args: LlHandlerArgs) => void {
  return (op, id, node, name, size, offset, fh, flags, path, path2, data, mode, rdev, uid, gid, valid, atime, atimeNs, mtime, mtimeNs, datasync, toUid, toGid) => {
    if (mode === undefined) { // (a change has its numbers, even one with no path: a hidden file's wrelease)
      handler({ op: ops[op] as LlRequest['op'], id, node, name, size, offset, fh, flags });
      return;
    }
    const change: LlChange = {
      op: ops[op] as LlChange['op'], id, node, name, size, offset, fh, flags, path: path!, path2, data,
      mode: mode!, rdev: rdev!, uid: uid!, gid: gid!, valid: valid!, atime: atime!, atimeNs: atimeNs!, mtime: mtime!, mtimeNs: mtimeNs!,
      datasync: datasync!, toUid: toUid!, toGid: toGid!,
    };
    handler(change);
  };
}

/** The libfuse 3 low-level transport (src/native/ll.c), loaded when first asked for. */
export function loadLl(): LlAddon {
  if (llAddon !== undefined) return llAddon;
  const raw = loadAddon('ll') as LlAddon & { ops: string[], nums: string[], mount: (...args: unknown[]) => LlSession };
  if (!Array.isArray(raw.ops) || raw.nums?.join(',') !== LL_NUMS.join(',')) {
    throw new Error('replicafs: native addon replicafs_ll.node does not match this build (its request arguments differ): rebuild it');
  }
  const ops = raw.ops;
  const mount = raw.mount;
  llAddon = {
    ...raw,
    mount: (root: string, mountpoint: string, options: string, timeoutSeconds: number, flags: number, forwardName?: string, handler?: (req: LlRequest) => void): LlSession =>
      handler === undefined ? mount(root, mountpoint, options, timeoutSeconds, flags) : mount(root, mountpoint, options, timeoutSeconds, flags, forwardName, requestBuilder(ops, handler)),
  } as LlAddon;
  return llAddon;
}

/** True when `e` is an Error carrying a string `code` (Node fs / sys errors). */
export function isErrnoError(e: unknown): e is SysError {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string';
}



/** Candidate libfuse.so (SONAME libfuse.so.2) paths, ours first. */
export function libfuseCandidates(): string[] {
  const root = repoRoot();
  const tuple = `${process.platform}-${process.arch}`;
  const out = [path.join(root, 'native-prebuilds', 'fuse', 'prebuilds', tuple, 'libfuse.so')];
  try {
    const fuseDir = path.dirname(require.resolve('fuse-native/package.json', { paths: [root] }));
    out.push(path.join(fuseDir, 'prebuilds', tuple, 'libfuse.so'));
    try {
      const shared = path.dirname(require.resolve('fuse-shared-library-linux/package.json', { paths: [fuseDir] }));
      out.push(path.join(shared, 'libfuse', 'lib', 'libfuse.so'));
    } catch {
      // not installed
    }
  } catch {
    // fuse-native not installed; loadFuse reports that
  }
  return out;
}
