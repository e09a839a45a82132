import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFile } from 'child_process';
import { promisify } from 'util';
import { crc32c as portableCrc32c } from '@node-rs/crc32';
import { crc32c, crc32cAccelerated } from '../src/format/crc';
import { sys, loadFuse, unmountFuse, callerContext, CallerContext, UTIME_NOW_US, UTIME_OMIT_US, isErrnoError, FuseCb, FuseStat, FuseInstance, FuseOperations } from '../src/native';
import { timed, cleanupAll, assertCleanSlate, registerTmpRoot, registerMount, installExitHandlers } from './helpers';

const execFileP = promisify(execFile);
installExitHandlers();
/**
 * This file's temporary root (the suite's /tmp/replicafs-e2e-* prefix); in-process mounts live
 * under it. Registered for cleanup when this file's tests start: the runner loads every file
 * before it runs any, and an earlier file's cleanup removes every registered root.
 */
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-e2e-native-'));
test.before(() => registerTmpRoot(tmp));

function catchErr(fn: () => unknown): Error & { code?: string; errno?: number; syscall?: string; path?: string } {
  try {
    fn();
  } catch (e) {
    if (e instanceof Error) return e;
    throw new Error(`non-Error thrown: ${String(e)}`);
  }
  throw new Error('expected an exception');
}

function devFuseFds(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === '/dev/fuse') n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

test.after(async () => {
  const forced = await cleanupAll();
  if (forced.length > 0) console.error(`native.test: cleanup had to force: ${forced.join('; ')}`);
});

test('the flag constants do what the kernel does with them', () => {
  const p = path.join(tmp, 'flags');
  fs.writeFileSync(p, 'x');
  sys.lsetxattr(p, 'user.k', Buffer.from('1'), 0);
  assert.is(catchErr(() => sys.lsetxattr(p, 'user.k', Buffer.from('2'), sys.XATTR_CREATE)).code, 'EEXIST', 'XATTR_CREATE on an existing name');
  assert.is(catchErr(() => sys.lsetxattr(p, 'user.none', Buffer.from('2'), sys.XATTR_REPLACE)).code, 'ENODATA', 'XATTR_REPLACE on a missing name');
  sys.lsetxattr(p, 'user.k', Buffer.from('3'), sys.XATTR_REPLACE);
  assert.is(sys.lgetxattr(p, 'user.k').toString(), '3');
  const fd = fs.openSync(p, 'r+');
  try {
    fs.writeSync(fd, Buffer.alloc(16384, 'y'), 0, 16384, 0);
    sys.fallocate(fd, sys.FALLOC_FL_ZERO_RANGE, 4096, 4096);
    const back = Buffer.alloc(16384);
    fs.readSync(fd, back, 0, 16384, 0);
    assert.ok(back.subarray(4096, 8192).equals(Buffer.alloc(4096)) && back[4095] === 0x79 && back[8192] === 0x79, 'ZERO_RANGE zeroes exactly the range');
  } finally {
    fs.closeSync(fd);
  }
  // UTIME_NOW and UTIME_OMIT as utimensat(2) takes them
  sys.utimensat(p, 10, 0, 20, 0, false);
  sys.utimensat(p, 0, sys.UTIME_OMIT, 0, sys.UTIME_NOW, false);
  const st = fs.statSync(p);
  assert.is(st.atimeMs, 10_000, 'UTIME_OMIT left atime alone');
  assert.ok(Math.abs(st.mtimeMs - Date.now()) < 60_000, 'UTIME_NOW set mtime to now');
  // the µs sentinels stay distinct from every real time a double can carry exactly
  assert.ok(Number.isSafeInteger(UTIME_NOW_US) && Number.isSafeInteger(UTIME_OMIT_US) && UTIME_NOW_US !== UTIME_OMIT_US);
  assert.ok(UTIME_OMIT_US > Date.UTC(2200, 0) * 1000, 'both are far beyond any time set in practice');
});

test('xattr round trip (path and fd variants)', () => {
  const p = path.join(tmp, 'x');
  fs.writeFileSync(p, 'hello');
  const val = Buffer.from([0, 1, 2, 255, 0x41]);
  sys.lsetxattr(p, 'user.a', val, 0);
  assert.equal(sys.lgetxattr(p, 'user.a'), val);
  sys.lsetxattr(p, 'user.empty', Buffer.alloc(0), sys.XATTR_CREATE);
  assert.is(sys.lgetxattr(p, 'user.empty').length, 0);
  assert.equal(sys.llistxattr(p).filter((n) => n.startsWith('user.')).sort(), ['user.a', 'user.empty']);
  const big = Buffer.alloc(3000, 7);
  sys.lsetxattr(p, 'user.a', big, sys.XATTR_REPLACE);
  assert.equal(sys.lgetxattr(p, 'user.a'), big);
  const eexist = catchErr(() => sys.lsetxattr(p, 'user.a', val, sys.XATTR_CREATE));
  assert.is(eexist.code, 'EEXIST');

  const fd = fs.openSync(p, 'r+');
  try {
    sys.fsetxattr(fd, 'user.b', Buffer.from('bee'), 0);
    assert.is(sys.fgetxattr(fd, 'user.b').toString(), 'bee');
    assert.ok(sys.flistxattr(fd).includes('user.b'));
    sys.fremovexattr(fd, 'user.b');
    assert.is(catchErr(() => sys.fgetxattr(fd, 'user.b')).code, 'ENODATA');
    const e = catchErr(() => sys.fgetxattr(fd, 'user.b'));
    assert.is(e.syscall, 'fgetxattr');
  } finally {
    fs.closeSync(fd);
  }
  sys.lremovexattr(p, 'user.a');
  sys.lremovexattr(p, 'user.empty');
  assert.equal(sys.llistxattr(p).filter((n) => n.startsWith('user.')), []);
});

test('ENODATA / ENOENT error shape', () => {
  const p = path.join(tmp, 'x');
  const e = catchErr(() => sys.lgetxattr(p, 'user.missing'));
  assert.ok(e instanceof Error);
  assert.is(e.code, 'ENODATA');
  assert.is(e.errno, -61);
  assert.is(e.syscall, 'lgetxattr');
  assert.is(e.path, p);
  assert.is(e.message, `ENODATA: no data available, lgetxattr '${p}'`);
  assert.ok(isErrnoError(e));

  const missing = path.join(tmp, 'nope');
  const e2 = catchErr(() => sys.lgetxattr(missing, 'user.a'));
  assert.is(e2.code, 'ENOENT');
  assert.is(e2.errno, -2);
  assert.is(e2.message, `ENOENT: no such file or directory, lgetxattr '${missing}'`);

  const e3 = catchErr(() => sys.umount2(tmp, sys.MNT_DETACH));
  assert.is(e3.code, 'EINVAL');
  assert.is(e3.syscall, 'umount2');

  const e4 = catchErr(() => sys.fallocate(987654, 0, 0, 10));
  assert.is(e4.code, 'EBADF');
  assert.is(e4.errno, -9);
  assert.is(e4.message, 'EBADF: bad file descriptor, fallocate');
});

test('mknod FIFO', () => {
  const p = path.join(tmp, 'fifo');
  sys.mknod(p, fs.constants.S_IFIFO | 0o640, 0);
  const st = fs.lstatSync(p);
  assert.ok(st.isFIFO());
  assert.is(st.mode & 0o777, 0o640 & ~process.umask());
  assert.is(catchErr(() => sys.mknod(p, fs.constants.S_IFIFO | 0o644, 0)).code, 'EEXIST');
});

test('utimensat with nanoseconds on a symlink (nofollow), lstatNs', () => {
  const target = path.join(tmp, 'target');
  const link = path.join(tmp, 'link');
  fs.writeFileSync(target, 't');
  fs.symlinkSync(target, link);
  const targetBefore = fs.statSync(target, { bigint: true }).mtimeNs;
  sys.utimensat(link, 1_000_000_000, 5, 1_234_567_890, 123_456_789, true);
  const st = fs.lstatSync(link, { bigint: true });
  assert.is(st.mtimeNs, 1_234_567_890_123_456_789n);
  assert.is(st.atimeNs, 1_000_000_000_000_000_005n);
  assert.is(fs.statSync(target, { bigint: true }).mtimeNs, targetBefore);
  const ns = sys.lstatNs(link);
  assert.equal(ns.slice(0, 4), [1_000_000_000, 5, 1_234_567_890, 123_456_789]);
  assert.is(BigInt(ns[4]) * 1_000_000_000n + BigInt(ns[5]), st.ctimeNs);
});

test('UTIME_OMIT leaves mtime alone; UTIME_NOW sets now; futimens', () => {
  const p = path.join(tmp, 'omit');
  fs.writeFileSync(p, 'o');
  sys.utimensat(p, 10, 0, 20, 999_999_999, false);
  sys.utimensat(p, 30, 1, 0, sys.UTIME_OMIT, false);
  let st = fs.lstatSync(p, { bigint: true });
  assert.is(st.mtimeNs, 20_999_999_999n);
  assert.is(st.atimeNs, 30_000_000_001n);
  const before = BigInt(Date.now() - 5000) * 1_000_000n;
  sys.utimensat(p, 0, sys.UTIME_OMIT, 0, sys.UTIME_NOW, false);
  st = fs.lstatSync(p, { bigint: true });
  assert.ok(st.mtimeNs > before);
  assert.is(st.atimeNs, 30_000_000_001n);

  const fd = fs.openSync(p, 'r');
  try {
    sys.futimens(fd, 40, 2, 50, 3);
  } finally {
    fs.closeSync(fd);
  }
  st = fs.lstatSync(p, { bigint: true });
  assert.is(st.atimeNs, 40_000_000_002n);
  assert.is(st.mtimeNs, 50_000_000_003n);
});

test('fallocate extends (mode 0) and KEEP_SIZE', () => {
  const p = path.join(tmp, 'falloc');
  const fd = fs.openSync(p, 'w+');
  try {
    sys.fallocate(fd, 0, 0, 1 << 20);
    assert.is(fs.fstatSync(fd).size, 1 << 20);
    const blocksBefore = fs.fstatSync(fd).blocks;
    sys.fallocate(fd, sys.FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20);
    const st = fs.fstatSync(fd);
    assert.is(st.size, 1 << 20);
    assert.ok(st.blocks > blocksBefore, `blocks ${st.blocks} > ${blocksBefore}`);
    // offsets beyond 2^32 are passed through exactly (KEEP_SIZE: no size change)
    sys.fallocate(fd, sys.FALLOC_FL_KEEP_SIZE, 2 ** 33 + 4096, 4096);
    assert.is(fs.fstatSync(fd).size, 1 << 20);
    sys.fallocate(fd, sys.FALLOC_FL_PUNCH_HOLE | sys.FALLOC_FL_KEEP_SIZE, 0, 4096);
    assert.is(fs.fstatSync(fd).size, 1 << 20);
  } finally {
    fs.closeSync(fd);
  }
});

test('ficlone / ficlonerange share extents on a filesystem that has reflinks (XFS), and fail with EOPNOTSUPP/EXDEV/EINVAL where not', timed(120_000, async () => {
  // Where they cannot work: ext4 (no reflinks) and across filesystems.
  const src = path.join(tmp, 'clone-src');
  fs.writeFileSync(src, Buffer.alloc(8192, 3));
  const onExt = (fn: (dfd: number, sfd: number) => void): string => {
    const sfd = fs.openSync(src, 'r');
    const dfd = fs.openSync(path.join(tmp, 'clone-dst'), 'w+');
    try { fn(dfd, sfd); return 'succeeded'; } catch (e) { return isErrnoError(e) ? `${e.code} ${e.syscall}` : String(e); } finally { fs.closeSync(sfd); fs.closeSync(dfd); }
  };
  const here = (await execFileP('stat', ['-f', '-c', '%T', tmp])).stdout.trim();
  if (here === 'ext2/ext3') {
    assert.match(onExt((d, s) => sys.ficlone(d, s)), /^(EOPNOTSUPP|EINVAL) ioctl\(FICLONE\)$/, 'ext4 has no reflinks');
    assert.match(onExt((d, s) => sys.ficlonerange(d, s, 0, 4096, 0)), /^(EOPNOTSUPP|EINVAL) /);
  }
  // On XFS (reflink=1, the default): a loop-mounted image under this file's root.
  const mkfs = await execFileP('sh', ['-c', 'command -v mkfs.xfs']).catch(() => null);
  if (mkfs === null) throw new Error('mkfs.xfs is missing: install xfsprogs (.ci/run does) for the reflink test');
  const img = path.join(tmp, 'xfs.img');
  const mnt = path.join(tmp, 'xfs');
  fs.mkdirSync(mnt);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 320 * 1024 * 1024);
  await execFileP('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
  registerMount(mnt);
  await execFileP('mount', ['-o', 'loop', img, mnt]);
  try {
    const a = path.join(mnt, 'a');
    const b = path.join(mnt, 'b');
    const c = path.join(mnt, 'c');
    const data = Buffer.alloc(256 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 131) & 0xff;
    fs.writeFileSync(a, data);
    fs.writeFileSync(c, Buffer.alloc(128 * 1024, 0x55));
    const afd = fs.openSync(a, 'r');
    const bfd = fs.openSync(b, 'w+');
    const cfd = fs.openSync(c, 'r+');
    try {
      sys.ficlone(bfd, afd);
      // c's second 64 KiB become a's bytes 64..128 KiB
      sys.ficlonerange(cfd, afd, 64 * 1024, 64 * 1024, 64 * 1024);
      // a cross-filesystem clone is refused
      assert.is(catchErr(() => sys.ficlone(fs.openSync(path.join(tmp, 'clone-x'), 'w+'), afd)).code, 'EXDEV');
    } finally {
      fs.closeSync(afd); fs.closeSync(bfd); fs.closeSync(cfd);
    }
    assert.ok(fs.readFileSync(b).equals(data), 'FICLONE: b has a\'s bytes');
    const got = fs.readFileSync(c);
    assert.ok(got.subarray(0, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x55)), 'FICLONERANGE left c before the range alone');
    assert.ok(got.subarray(64 * 1024, 128 * 1024).equals(data.subarray(64 * 1024, 128 * 1024)), 'FICLONERANGE: the range has a\'s bytes');
    await execFileP('sync', ['-f', mnt]);
    // The extents are shared, not copied: filefrag marks them "shared".
    const frag = async (f: string): Promise<string> => (await execFileP('filefrag', ['-v', f])).stdout;
    assert.match(await frag(b), /shared/, 'b\'s extents are shared with a');
    assert.match(await frag(c), /shared/, 'c\'s cloned range is shared with a');
    const df = (await execFileP('df', ['--output=used', '-B1', mnt])).stdout.trim().split('\n')[1];
    assert.ok(Number(df) > 0);
  } finally {
    await execFileP('umount', [mnt]);
  }
}));

test('syncfs on an fd', () => {
  const fd = fs.openSync(tmp, 'r');
  try {
    sys.syncfs(fd);
  } finally {
    fs.closeSync(fd);
  }
  assert.is(catchErr(() => sys.syncfs(987654)).code, 'EBADF');
});

test('mapShared: stores reach the file and survive the process; unmapShared detaches at once', timed(60_000, async () => {
  const file = path.join(tmp, 'mapped');
  fs.writeFileSync(file, Buffer.alloc(64 * 1024));
  // A child maps the file, stores into it and is killed with SIGKILL before it could do anything
  // else: the stores must be in the file (they are in the page cache, like a pwrite).
  const native = path.join(__dirname, '..', 'src', 'native');
  const child = `const { sys } = require(${JSON.stringify(native)}); const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(file)}, 'r+'); const m = sys.mapShared(fd, 65536);
    Buffer.from('stored through the mapping').copy(m, 4096); process.kill(process.pid, 'SIGKILL')`;
  const r = await promisify(execFile)(process.execPath, ['-e', child]).then(() => null, (err: NodeJS.ErrnoException & { signal?: string }) => err.signal);
  assert.is(r, 'SIGKILL');
  const fd = fs.openSync(file, 'r+');
  try {
    const seen = Buffer.alloc(26);
    fs.readSync(fd, seen, 0, 26, 4096);
    assert.is(seen.toString(), 'stored through the mapping');
    const m = sys.mapShared(fd, 65536);
    assert.is(m.length, 65536);
    assert.is(m.subarray(4096, 4096 + 26).toString(), 'stored through the mapping');
    fs.writeSync(fd, Buffer.from('by pwrite'), 0, 9, 100);
    assert.is(m.subarray(100, 109).toString(), 'by pwrite', 'a pwrite is seen through the mapping (one page cache)');
    sys.unmapShared(m);
    m.write('after unmap', 200);
    const after = Buffer.alloc(11);
    fs.readSync(fd, after, 0, 11, 200);
    assert.equal(after, Buffer.alloc(11), 'a store after unmapShared does not reach the file');
    assert.throws(() => sys.mapShared(fd, 0), /length/);
    assert.throws(() => sys.unmapShared(Buffer.alloc(10)), /mapShared/);
    assert.throws(() => sys.mapShared(-1, 4096), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  } finally {
    fs.closeSync(fd);
  }
}));

test('dlopenGlobal failure carries dlerror text', () => {
  const e = catchErr(() => sys.dlopenGlobal(path.join(tmp, 'missing.so')));
  assert.match(e.message, /missing\.so/);
  assert.match(e.message, /cannot open shared object file/);
});

test('callerContext() is null before loadFuse()', () => {
  // Registered before the first loadFuse() call in this file.
  assert.is(callerContext(), null);
});

test('loadFuse returns the fuse-native class, idempotently', () => {
  const Fuse = loadFuse();
  assert.type(Fuse, 'function');
  assert.match(Function.prototype.toString.call(Fuse), /^class\s/);
  assert.is(loadFuse(), Fuse);
  assert.is(Fuse.ENOENT, -2);
});

test('real FUSE mount: utimens gets µs mtime and the UTIME_NOW/OMIT sentinels', timed(60_000, async () => {
  const Fuse = loadFuse();
  const mnt = path.join(tmp, 'mnt');
  fs.mkdirSync(mnt);
  registerMount(mnt);
  // touch in the child runs with TZ=UTC
  const expectedUs = Date.UTC(2001, 1, 3, 4, 5, 6) * 1000 + 123456;
  const nowUs = (): number => Date.now() * 1000;
  const files = new Map<string, FuseStat>();
  const root: FuseStat = { mode: fs.constants.S_IFDIR | 0o755, nlink: 2, size: 4096, atime: nowUs(), mtime: nowUs(), ctime: nowUs() };
  const calls: Array<{ path: string; atime: number; mtime: number }> = [];
  const ENOENT = Fuse.ENOENT as number;

  const fuse: FuseInstance = new Fuse(
    mnt,
    {
      getattr(p, cb) {
        if (p === '/') return cb(0, root);
        const st = files.get(p);
        if (st === undefined) return cb(ENOENT);
        cb(0, st);
      },
      readdir(p, cb) {
        if (p !== '/') return cb(ENOENT);
        cb(0, [...files.keys()].map((k) => k.slice(1)));
      },
      create(p, mode, cb) {
        const t = nowUs();
        files.set(p, { mode: fs.constants.S_IFREG | (mode & 0o7777), nlink: 1, size: 0, atime: t, mtime: t, ctime: t });
        cb(0, 42);
      },
      open(p, _flags, cb) {
        if (!files.has(p)) return cb(ENOENT);
        cb(0, 42);
      },
      release(_p, _fd, cb) {
        cb(0);
      },
      truncate(_p, _size, cb) {
        cb(0);
      },
      ftruncate(_p, _fd, _size, cb) {
        cb(0);
      },
      utimens(p, atime, mtime, cb) {
        calls.push({ path: p, atime, mtime });
        const st = files.get(p);
        if (st === undefined) return cb(ENOENT);
        const t = nowUs();
        if (atime !== UTIME_OMIT_US) st.atime = atime === UTIME_NOW_US ? t : atime;
        if (mtime !== UTIME_OMIT_US) st.mtime = mtime === UTIME_NOW_US ? t : mtime;
        st.ctime = t;
        cb(0);
      },
    },
    { force: false, mkdir: false },
  );

  const fdsBefore = devFuseFds();
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    assert.ok(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mnt} `), 'mounted');
    assert.is(devFuseFds(), fdsBefore + 1);

    const file = path.join(mnt, 'file');
    const env = { ...process.env, TZ: 'UTC' };
    await execFileP('touch', [file], { env }); // creates it
    calls.length = 0;
    await execFileP('touch', ['-m', '-d', '2001-02-03 04:05:06.123456', file], { env });
    assert.equal(calls, [{ path: '/file', atime: UTIME_OMIT_US, mtime: expectedUs }]);

    // stat arrays go back to the kernel in µs as well
    const { stdout } = await execFileP('stat', ['-c', '%.6Y', file], { env });
    assert.is(stdout.trim(), '981173106.123456');

    calls.length = 0;
    await execFileP('touch', [file], { env }); // UTIME_NOW for both
    assert.equal(calls, [{ path: '/file', atime: UTIME_NOW_US, mtime: UTIME_NOW_US }]);
    const st = files.get('/file');
    assert.ok(st !== undefined && Math.abs(st.mtime - nowUs()) < 60e6, 'mtime set to now');
  } finally {
    await unmountFuse(fuse, mnt);
  }
  assert.not.ok(fs.readFileSync('/proc/mounts', 'utf8').includes(mnt), 'unmounted');
  // the FUSE thread exited and closed /dev/fuse
  assert.is(devFuseFds(), fdsBefore);
  fs.rmdirSync(mnt);
}));

test('loadFuse adds op 35 (fallocate) to the implemented array only when ops.fallocate exists', () => {
  const Fuse = loadFuse();
  type Internals = { _getImplementedArray(): Uint32Array; _handlers: unknown[] };
  const withOp = new Fuse(path.join(tmp, 'unused'), { fallocate(_p, _m, _o, _l, _fd, cb) { cb(0); } }) as unknown as Internals;
  const without = new Fuse(path.join(tmp, 'unused'), {}) as unknown as Internals;
  assert.is(withOp._getImplementedArray().length, 38);
  assert.is(withOp._getImplementedArray()[35], 1);
  assert.is(withOp._getImplementedArray()[5], 1); // getattr is always on
  assert.is(without._getImplementedArray()[35], 0);
  assert.type(withOp._handlers[35], 'function');
  assert.type(without._handlers[35], 'function');
});

/** A tiny in-memory FS (root + regular files) for the fallocate mount tests. */
function memOps(ENOENT: number, extra: FuseOperations): { ops: FuseOperations; files: Map<string, FuseStat> } {
  const nowUs = (): number => Date.now() * 1000;
  const files = new Map<string, FuseStat>();
  const root: FuseStat = { mode: fs.constants.S_IFDIR | 0o755, nlink: 2, size: 4096, atime: nowUs(), mtime: nowUs(), ctime: nowUs() };
  const ops: FuseOperations = {
    getattr(p, cb) {
      if (p === '/') return cb(0, root);
      const st = files.get(p);
      if (st === undefined) return cb(ENOENT);
      cb(0, st);
    },
    readdir(p, cb) {
      if (p !== '/') return cb(ENOENT);
      cb(0, [...files.keys()].map((k) => k.slice(1)));
    },
    create(p, mode, cb) {
      const t = nowUs();
      files.set(p, { mode: fs.constants.S_IFREG | (mode & 0o7777), nlink: 1, size: 0, atime: t, mtime: t, ctime: t });
      cb(0, 42);
    },
    open(p, _flags, cb) {
      if (!files.has(p)) return cb(ENOENT);
      cb(0, 43);
    },
    release(_p, _fd, cb) {
      cb(0);
    },
    ...extra,
  };
  return { ops, files };
}

async function withMount(name: string, ops: FuseOperations, body: (mnt: string) => Promise<void>): Promise<void> {
  const Fuse = loadFuse();
  const mnt = path.join(tmp, name);
  fs.mkdirSync(mnt);
  registerMount(mnt);
  const fuse: FuseInstance = new Fuse(mnt, ops, { force: false, mkdir: false });
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    await body(mnt);
  } finally {
    await unmountFuse(fuse, mnt);
  }
  assert.not.ok(fs.readFileSync('/proc/mounts', 'utf8').includes(` ${mnt} `), 'unmounted');
  fs.rmdirSync(mnt);
}

test('real FUSE mount: fallocate(1) reaches ops.fallocate with mode/offset/length/fd', timed(60_000, async () => {
  const Fuse = loadFuse();
  const ENOENT = Fuse.ENOENT as number;
  const ENOSPC = Fuse.ENOSPC as number;
  const calls: Array<{ path: string; mode: number; offset: number; length: number; fd: number }> = [];
  const { ops, files } = memOps(ENOENT, {
    fallocate(p, mode, offset, length, fd, cb) {
      calls.push({ path: p, mode, offset, length, fd });
      const st = files.get(p);
      if (st === undefined) return cb(ENOENT);
      if (p === '/full') return cb(ENOSPC);
      if ((mode & sys.FALLOC_FL_KEEP_SIZE) === 0 && offset + length > (st.size ?? 0)) st.size = offset + length;
      cb(0);
    },
  });
  await withMount('mnt-falloc', ops, async (mnt) => {
    const file = path.join(mnt, 'f');
    // util-linux fallocate: open(O_RDWR|O_CREAT) then fallocate(2); creates the file -> fh 42
    await execFileP('fallocate', ['-o', '4096', '-l', '1M', file]);
    assert.equal(calls, [{ path: '/f', mode: 0, offset: 4096, length: 1 << 20, fd: 42 }]);
    const { stdout } = await execFileP('stat', ['-c', '%s', file]);
    assert.is(stdout.trim(), String(4096 + (1 << 20)));

    // existing file -> open -> fh 43; KEEP_SIZE, offset above 2^32 (high word)
    calls.length = 0;
    await execFileP('fallocate', ['--keep-size', '-o', String(2 ** 33 + 4096), '-l', '65536', file]);
    assert.equal(calls, [{ path: '/f', mode: sys.FALLOC_FL_KEEP_SIZE, offset: 2 ** 33 + 4096, length: 65536, fd: 43 }]);
    assert.is(files.get('/f')?.size, 4096 + (1 << 20));

    // punch hole: the kernel passes PUNCH_HOLE|KEEP_SIZE
    calls.length = 0;
    await execFileP('fallocate', ['-p', '-o', '0', '-l', '8192', file]);
    assert.equal(calls, [{ path: '/f', mode: sys.FALLOC_FL_PUNCH_HOLE | sys.FALLOC_FL_KEEP_SIZE, offset: 0, length: 8192, fd: 43 }]);

    // a negative errno from the op reaches the caller
    calls.length = 0;
    const err = await execFileP('fallocate', ['-l', '4096', path.join(mnt, 'full')]).then(
      () => undefined,
      (e: Error & { stderr?: string }) => e,
    );
    assert.ok(err !== undefined, 'fallocate on /full failed');
    assert.match(String(err.stderr), /No space left on device/);
    assert.equal(calls, [{ path: '/full', mode: 0, offset: 0, length: 4096, fd: 42 }]);
  });
}));

test('real FUSE mount: without ops.fallocate, fallocate(1) gets EOPNOTSUPP', timed(60_000, async () => {
  const Fuse = loadFuse();
  const { ops } = memOps(Fuse.ENOENT as number, {});
  await withMount('mnt-nofalloc', ops, async (mnt) => {
    const err = await execFileP('fallocate', ['-l', '4096', path.join(mnt, 'g')]).then(
      () => undefined,
      (e: Error & { stderr?: string }) => e,
    );
    assert.ok(err !== undefined, 'fallocate failed');
    assert.match(String(err.stderr), /Operation not supported/);
  });
}));

test('real FUSE mount: callerContext() gives the caller uid/gid/pid in create, mkdir and fallocate', timed(60_000, async () => {
  const Fuse = loadFuse();
  const ENOENT = Fuse.ENOENT as number;
  const EEXIST = Fuse.EEXIST as number;
  assert.is(callerContext(), null, 'null outside an op');

  const UID = 1234;
  const GID = 5678;
  const nowUs = (): number => Date.now() * 1000;
  const entry = (mode: number, uid: number, gid: number): FuseStat => {
    const t = nowUs();
    return { mode, uid, gid, nlink: mode & fs.constants.S_IFDIR ? 2 : 1, size: mode & fs.constants.S_IFDIR ? 4096 : 0, atime: t, mtime: t, ctime: t };
  };
  // root 0755 root:root, /pub world-writable (sticky) root:root
  const nodes = new Map<string, FuseStat>([
    ['/', entry(fs.constants.S_IFDIR | 0o755, 0, 0)],
    ['/pub', entry(fs.constants.S_IFDIR | 0o1777, 0, 0)],
  ]);
  type Seen = { op: string; path: string; sync: CallerContext | null; tick?: CallerContext | null; micro?: CallerContext | null; immediate?: CallerContext | null };
  const seen: Seen[] = [];
  // Like a passthrough would: take the caller synchronously, chown the new entry to it,
  // and check that the context is gone once the handler has returned.
  const record = (op: string, p: string): CallerContext | null => {
    const s: Seen = { op, path: p, sync: callerContext() };
    seen.push(s);
    process.nextTick(() => (s.tick = callerContext()));
    void Promise.resolve().then(() => (s.micro = callerContext()));
    setImmediate(() => (s.immediate = callerContext()));
    return s.sync;
  };
  const ops: FuseOperations = {
    getattr(p, cb) {
      const st = nodes.get(p);
      if (st === undefined) return cb(ENOENT);
      cb(0, st);
    },
    readdir(p, cb) {
      const prefix = p === '/' ? '/' : `${p}/`;
      cb(0, [...nodes.keys()].filter((k) => k !== p && k.startsWith(prefix) && !k.slice(prefix.length).includes('/')).map((k) => k.slice(prefix.length)));
    },
    create(p, mode, cb) {
      const c = record('create', p);
      if (nodes.has(p)) return cb(EEXIST);
      nodes.set(p, entry(fs.constants.S_IFREG | (mode & 0o7777), c?.uid ?? 0, c?.gid ?? 0));
      cb(0, 42);
    },
    open(p, _flags, cb) {
      if (!nodes.has(p)) return cb(ENOENT);
      cb(0, 43);
    },
    release(_p, _fd, cb) {
      cb(0);
    },
    mkdir(p: string, mode: number, cb: FuseCb) {
      const c = record('mkdir', p);
      if (nodes.has(p)) return cb(EEXIST);
      nodes.set(p, entry(fs.constants.S_IFDIR | (mode & 0o7777), c?.uid ?? 0, c?.gid ?? 0));
      cb(0);
    },
    fallocate(p, _mode, offset, length, _fd, cb) {
      record('fallocate', p);
      const st = nodes.get(p);
      if (st === undefined) return cb(ENOENT);
      st.size = Math.max(st.size ?? 0, offset + length);
      // reply asynchronously: the context is not needed (nor available) here
      setImmediate(cb, 0);
    },
  };

  // mkdtemp made tmp 0700; the other user must be able to reach the mount point.
  fs.chmodSync(tmp, 0o711);
  const mnt = path.join(tmp, 'mnt-ctx');
  fs.mkdirSync(mnt);
  registerMount(mnt);
  const fuse: FuseInstance = new Fuse(mnt, ops, { force: false, mkdir: false, allowOther: true, defaultPermissions: true });
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    assert.is(callerContext(), null, 'null after mount, outside an op');
    const pub = path.join(mnt, 'pub');
    const asOther = ['--reuid=' + UID, '--regid=' + GID, '--clear-groups', '--'];

    // One process (setpriv and sh exec, so the pid stays the same): the shell
    // itself creates the file, then execs mkdir.
    const script = 'echo $$; : > "$1"; exec mkdir "$2"';
    const run1 = execFileP('setpriv', [...asOther, 'sh', '-c', script, 'sh', path.join(pub, 'file'), path.join(pub, 'dir')]);
    const pid1 = run1.child.pid;
    const { stdout } = await run1;
    assert.is(Number(stdout.trim()), pid1);

    const run2 = execFileP('setpriv', [...asOther, 'fallocate', '-l', '8192', path.join(pub, 'file')]);
    const pid2 = run2.child.pid;
    await run2;
    await new Promise((r) => setImmediate(r));

    const want = (pid: number | undefined): Omit<CallerContext, 'nodeid'> => ({ uid: UID, gid: GID, pid: pid ?? -1 });
    // The node of the request: create and mkdir name entries in /pub (their parent's node), and
    // fallocate is on the file's own node; the root is node 1.
    const nodes = seen.map((s) => s.sync?.nodeid ?? -1);
    assert.ok(nodes.every((n) => n > 1), `node ids ${nodes.join(', ')}`);
    assert.is(nodes[0], nodes[1], 'create and mkdir in /pub: the node of /pub');
    assert.is.not(nodes[2], nodes[0], 'fallocate: the file\'s own node');
    assert.equal(
      seen.map((s) => ({ op: s.op, path: s.path, sync: s.sync && { uid: s.sync.uid, gid: s.sync.gid, pid: s.sync.pid } })),
      [
        { op: 'create', path: '/pub/file', sync: want(pid1) },
        { op: 'mkdir', path: '/pub/dir', sync: want(pid1) },
        { op: 'fallocate', path: '/pub/file', sync: want(pid2) },
      ],
    );
    for (const s of seen) {
      assert.is(s.tick, null, `${s.op}: null in process.nextTick`);
      assert.is(s.micro, null, `${s.op}: null after await`);
      assert.is(s.immediate, null, `${s.op}: null in setImmediate`);
    }
    assert.is(callerContext(), null, 'null between ops');

    // the entries the ops chowned to the caller show up as owned by it
    const { stdout: owners } = await execFileP('stat', ['-c', '%n %u:%g %s', path.join(pub, 'file'), path.join(pub, 'dir')]);
    assert.equal(owners.trim().split('\n'), [`${path.join(pub, 'file')} ${UID}:${GID} 8192`, `${path.join(pub, 'dir')} ${UID}:${GID} 4096`]);
  } finally {
    await unmountFuse(fuse, mnt);
  }
  assert.not.ok(fs.readFileSync('/proc/mounts', 'utf8').includes(` ${mnt} `), 'unmounted');
  fs.rmdirSync(mnt);
  assert.is(callerContext(), null, 'null after unmount');
}));

test('unmountFuse is safe on a never-mounted instance: nothing is unmounted, no descriptor or thread appears', timed(30_000, async () => {
  const Fuse = loadFuse();
  const mnt = path.join(tmp, 'never');
  fs.mkdirSync(mnt);
  fs.writeFileSync(path.join(mnt, 'inside'), 'the directory is not a mount');
  const fdsBefore = devFuseFds();
  const fuse = new Fuse(mnt, {});
  await unmountFuse(fuse, mnt);
  await unmountFuse(fuse, mnt); // twice, as a finally block after a failed start may
  assert.not.ok(fs.readFileSync('/proc/mounts', 'utf8').includes(` ${mnt} `), 'not a mount point');
  assert.is(fs.readFileSync(path.join(mnt, 'inside'), 'utf8'), 'the directory is not a mount', 'the directory itself is untouched');
  assert.is(devFuseFds(), fdsBefore, 'no /dev/fuse descriptor was opened');
  assert.is(fuse.opened, false);
  fs.rmSync(mnt, { recursive: true });
}));

test('crc32c: the three-stream version equals @node-rs/crc32 on every length, alignment and chain', () => {
  // On x86-64 (this project's prebuilt platform) the accelerated version must be the one in use.
  if (process.arch === 'x64') assert.ok(crc32cAccelerated, 'sys.crc32c is exported on x86-64 with SSE4.2');
  assert.is(crc32c(Buffer.from('123456789')), 0xe3069283, 'the CRC-32C check value');
  assert.is(crc32c(Buffer.alloc(0)), 0);
  const buf = Buffer.alloc(200_000 + 16);
  let x = 12345;
  for (let i = 0; i < buf.length; i++) { x = (x * 1103515245 + 12345) >>> 0; buf[i] = x >>> 24; }
  // Every length up to past two short blocks (3 x 256), then lengths across the long blocks (3 x 8192).
  const lengths = [...Array.from({ length: 800 }, (_, i) => i), 24575, 24576, 24577, 49152, 131072, 131072 + 7, 200_000];
  for (const len of lengths) {
    for (const off of [0, 1, 3, 7]) {
      const part = buf.subarray(off, off + len);
      const prev = len % 2 === 0 ? 0 : 0xdeadbeef;
      const want = portableCrc32c(part, prev) >>> 0;
      if (crc32c(part, prev) !== want) assert.unreachable(`crc32c differs at length ${len}, offset ${off}`);
    }
  }
  // Chaining: crc(a ++ b) = crc(b, crc(a)).
  assert.is(crc32c(buf.subarray(5000, 140000), crc32c(buf.subarray(0, 5000))), crc32c(buf.subarray(0, 140000)));
});

test('leaves no mounts behind', timed(60_000, assertCleanSlate));

test.run();
