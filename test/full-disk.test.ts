/**
 * Full and failing data disks (issue 16: "ENOSPC answered, not fatal", "A failing data disk"),
 * each data directory on a small ext4 filesystem of its own (a loop device, test/helpers/loopfs.ts),
 * filled by a file beside the data directory, as another program would fill it.
 *
 *  - Primary, full: a writer gets ENOSPC through the mount, as from a local filesystem, and the SRL
 *    keeps nothing it refused (src/rvg/primary.ts: below DATA_SPACE_RESERVE_BYTES of room a write
 *    reserves its range before it is logged); reads and other changes go on; once space is freed,
 *    writes succeed; the Secondary ends with the Primary's tree.
 *  - Secondary, full: it stops applying (status.stalled names the record), holds the updates in its
 *    SRL, keeps serving its mount and the RLINK, and resumes by itself when space is freed.
 *  - Primary, failing (ext4's shutdown ioctl through `xfs_io -x -c shutdown`: every later I/O of
 *    that filesystem fails with EIO): the write gets EIO, status.fatal names the record, the daemon
 *    stays up with the mount answering (EIO, not ENOTCONN), `replicafs stop` exits 1, and the next
 *    start on the repaired disk replays the record.
 *  - The SRL's filesystem full: records are still logged (the ring is preallocated), checkpoints
 *    cannot be recorded (LevelDB cannot write; status.checkpointError), so the ring fills and then
 *    writers get ENOSPC; once there is room, checkpoints and writes resume.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, withDeadline, cli, execOk, tmpdirs,
  primaryArgs, status, srlDump, isMounted, fuseMountAt, pidsWithArg, diffTrees, secondaryStatus, primaryStatus, daemonLog,
  type Dirs, type ExecResult, type Primary, type Secondary
} from './helpers'
import { mountLoopFs, mountLoopImage, withLoopFs, assertNoLoopDevices, type LoopFs } from './helpers/loopfs'
import { request } from '../src/control'

const t = suite('full-disk')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`full-disk.test: cleanup had to force: ${forced.join('; ')}`)
})

/** Puts `dirs.data` on a fresh ext4 filesystem of `mib` MiB (DIRS.root/datafs/data; the filesystem's root keeps the filler). */
async function dataOnLoop (dirs: Dirs, mib: number): Promise<LoopFs> {
  await fsp.rmdir(dirs.data)
  const lfs = await mountLoopFs(path.join(dirs.root, 'data.img'), path.join(dirs.root, 'datafs'), mib)
  dirs.data = path.join(lfs.mountPoint, 'data')
  await fsp.mkdir(dirs.data)
  return lfs
}

function pattern (bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes)
  for (let i = 0; i + 4 <= bytes; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i)
  return b
}

async function errCode (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'no error'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}

async function stopAll (...daemons: Array<Primary | Secondary | undefined>): Promise<void> {
  const errors: string[] = []
  for (const d of daemons) {
    if (d !== undefined && await isMounted(d.mount)) await d.stop().catch((err: Error) => errors.push(err.message))
  }
  if (errors.length > 0) throw new Error(errors.join('\n'))
}

t('a full data disk on the Primary: writers get ENOSPC and the SRL keeps nothing refused; reads and other changes go on; with space freed writes succeed and the Secondary ends with the same tree', isolated(180_000, async () => {
  const S = await startSecondary()
  const dirs = await tmpdirs('fullp')
  const lfs = await dataOnLoop(dirs, 32)
  let P: Primary | undefined
  await withLoopFs(lfs, async () => {
    try {
      P = await startPrimary({ dirs, retain: true, extraArgs: ['--secondary', S.address, '--secret-file', S.secretFile] })
      const m = (name: string): string => path.join(dirs.mount, name)
      await fsp.writeFile(m('before'), 'fits')
      await lfs.fill('filler')

      const big = pattern(1024 * 1024, 1)
      assert.is(await errCode(fsp.writeFile(m('big'), big)), 'ENOSPC', 'a 1 MiB write on the full disk fails with ENOSPC')
      assert.is(await errCode(fsp.writeFile(m('small'), 'x'.repeat(100))), 'ENOSPC', 'a 100-byte write into a new file fails with ENOSPC')
      const st = await status(dirs.state)
      assert.is(st.fatal, null, 'the Primary is not fatal')
      assert.ok(await fuseMountAt(dirs.mount) !== undefined, 'the mount is still there')
      assert.is(await fsp.readFile(m('before'), 'utf8'), 'fits', 'reads go on')
      await fsp.rename(m('before'), m('renamed'))
      assert.is(await fsp.readFile(m('renamed'), 'utf8'), 'fits', 'a rename (no new blocks) goes on')

      await fsp.rm(path.join(lfs.mountPoint, 'filler'))
      await fsp.writeFile(m('big'), big)
      await fsp.writeFile(m('small'), 'x'.repeat(100))
      assert.ok((await fsp.readFile(m('big'))).equals(big), 'with space freed the write succeeds')
      assert.ok((await fsp.readFile(path.join(dirs.data, 'big'))).equals(big), 'and reaches the data directory')

      await waitFor(async () => {
        const p = await primaryStatus(dirs.state)
        const newest = p.srl.newestSeq ?? p.srl.appliedSeq
        return p.rlinks[0].dataAckedSeq >= newest
      }, { timeoutMs: 60_000, what: 'the Secondary to data-ack everything', intervalMs: 100 })
      const diffs = await diffTrees(S.data, dirs.data)
      assert.equal(diffs, [], `the Secondary's tree equals the Primary's: ${diffs.join('; ')}`)
      const sst = await secondaryStatus(S.state)
      assert.ok(sst.consistent, `the Secondary is consistent: ${JSON.stringify(sst)}\n${await daemonLog(S.state)}`)
      await P.stop()

      // The SRL (--retain kept every record): every update the data directory refused is either
      // absent (a write refused before it was logged) or voided (a change refused as it was
      // applied, before its reply: a VOID follows it, and nobody applies the pair).
      const recs = await srlDump(dirs.state)
      const voided = new Set(recs.filter((r) => r.type === 'VOID').map((r) => Number(r.voids)))
      const kept = recs.filter((r) => r.type === 'WRITE' && !voided.has(r.seq))
      const bytesOf = (p: string): number => kept.filter((r) => r.path === p).reduce((n, r) => n + (r.length ?? 0), 0)
      assert.is(bytesOf('/big'), big.length, 'the SRL keeps /big\'s bytes once: nothing of the refused write')
      assert.is(bytesOf('/small'), 100, 'and /small\'s once')
      for (const r of recs.filter((x) => x.type === 'VOID')) {
        const target = recs.find((x) => x.seq === r.seq - 1)
        assert.ok(target !== undefined && Number(r.voids) === target.seq && Number(r.errno) === -28, `a VOID follows the record it voids, for ENOSPC: ${JSON.stringify(r)} after ${JSON.stringify(target)}`)
      }
    } finally {
      await stopAll(P, S)
    }
  })
}))

t('a full data disk on a Secondary: it stops applying (status.stalled names the record), holds the updates, and resumes by itself once space is freed', isolated(180_000, async () => {
  const sdirs = await tmpdirs('fulls')
  const lfs = await dataOnLoop(sdirs, 32)
  let S: Secondary | undefined
  let P: Primary | undefined
  await withLoopFs(lfs, async () => {
    try {
      S = await startSecondary({ dirs: sdirs })
      P = await startPrimary({ extraArgs: ['--secondary', S.address, '--secret-file', S.secretFile] })
      const p = P
      const m = (name: string): string => path.join(p.mount, name)
      const caughtUp = async (): Promise<void> => {
        await waitFor(async () => {
          const st = await primaryStatus(p.state)
          return st.rlinks[0].dataAckedSeq >= (st.srl.newestSeq ?? st.srl.appliedSeq)
        }, { timeoutMs: 60_000, what: 'the Secondary to data-ack everything', intervalMs: 100 })
      }
      await fsp.writeFile(m('a'), 'first')
      await caughtUp()
      await lfs.fill('filler')

      const big = pattern(4 * 1024 * 1024, 2)
      await fsp.writeFile(m('big'), big)
      await fsp.writeFile(m('after'), 'later')
      const stalled = await waitFor(async () => (await secondaryStatus(sdirs.state)).stalled,
        { timeoutMs: 30_000, what: 'the Secondary to report that it is stalled on a full data disk', intervalMs: 100 })
      assert.match(stalled, /sequence number \d+ \(WRITE \/big\)/, `status.stalled names the record: ${stalled}`)
      assert.match(stalled, /ENOSPC|no space/i, `and why: ${stalled}`)
      const ss = await secondaryStatus(sdirs.state)
      assert.is(ss.fatal, null, 'the Secondary is not fatal')
      assert.ok(ss.consistent, 'its tree is still the Primary\'s after a prefix of the updates')
      assert.ok(ss.receivedSeq > ss.appliedSeq, `it holds updates it has not applied (received ${ss.receivedSeq}, applied ${ss.appliedSeq})`)
      assert.is(await fsp.readFile(path.join(sdirs.mount, 'a'), 'utf8'), 'first', 'its mount still serves reads')
      const ps = await primaryStatus(p.state)
      assert.is(ps.rlinks[0].state, 'connected', 'the RLINK stays up')
      assert.ok(ps.rlinks[0].dataAckedSeq < (ps.srl.newestSeq ?? 0), 'and shows the Secondary behind')
      assert.match(await daemonLog(sdirs.state), /data directory is full/, 'the Secondary logged it')

      await fsp.rm(path.join(lfs.mountPoint, 'filler'))
      await caughtUp()
      assert.is((await secondaryStatus(sdirs.state)).stalled, null, 'status.stalled is null again')
      const diffs = await diffTrees(sdirs.data, p.data)
      assert.equal(diffs, [], `the Secondary's tree equals the Primary's: ${diffs.join('; ')}`)
      assert.ok((await fsp.readFile(path.join(sdirs.mount, 'big'))).equals(big), 'the held write arrived whole')
    } finally {
      await stopAll(P, S)
    }
  })
}))

t('a failing data disk on the Primary (EIO): the write gets EIO, status.fatal names the record, the daemon stays up refusing changes; stop exits 1; the next start replays the record', isolated(180_000, async () => {
  const dirs = await tmpdirs('eio')
  let lfs = await dataOnLoop(dirs, 32)
  const args = primaryArgs(dirs).filter((a) => a !== '--daemon')
  let run: Promise<ExecResult> | undefined
  try {
    // in the foreground, to read its exit code
    run = cli(args, { timeoutMs: 150_000 })
    await waitFor(async () => (await fuseMountAt(dirs.mount)) !== undefined && (await request(dirs.state, { cmd: 'status' }, 2000) as { pid?: number }).pid !== undefined,
      { timeoutMs: 60_000, what: 'the foreground Primary to mount and answer status', intervalMs: 100 })
    const x = path.join(dirs.mount, 'x')
    await fsp.writeFile(x, 'hello world\n')
    await execOk('sync', ['-f', path.join(dirs.data, 'x')], { timeoutMs: 60_000 })
    // Opened before the disk fails (its lookup would fail after). A plain fd, not a FileHandle:
    // its close fails (EIO) once the disk is gone, and a FileHandle whose close failed is closed
    // again when garbage-collected, after the mount is gone: ENOTCONN, thrown in the test process.
    const fd = fs.openSync(x, 'r+')
    // Every later I/O on the data disk fails with EIO.
    await execOk('xfs_io', ['-x', '-c', 'shutdown', lfs.mountPoint], { timeoutMs: 60_000 })

    const code = await errCode(new Promise((resolve, reject) => fs.write(fd, 'HELLO', 0, (err) => err !== null ? reject(err) : resolve(undefined))))
    try { fs.closeSync(fd) } catch { /* EIO: the disk is gone */ }
    assert.is(code, 'EIO', 'the write gets EIO')
    const st = await request(dirs.state, { cmd: 'status' }, 5000) as { fatal: string | null }
    assert.ok(st.fatal !== null, 'status.fatal is set')
    assert.match(st.fatal, /sequence number \d+ \(WRITE \/x\)/, `status.fatal names the record: ${st.fatal}`)
    assert.match(st.fatal, /EIO|input\/output/i, `and why: ${st.fatal}`)
    assert.ok(await fuseMountAt(dirs.mount) !== undefined, 'the daemon is up and its mount is there')
    assert.is(await errCode(fsp.mkdir(path.join(dirs.mount, 'd'))), 'EIO', 'a later change is refused with EIO')
    assert.is(await errCode(fsp.writeFile(path.join(dirs.mount, 'y'), 'y')), 'EIO', 'so is a later write')
    const again = await request(dirs.state, { cmd: 'status' }, 5000) as { fatal: string | null }
    assert.is(again.fatal, st.fatal, 'status keeps naming the first failure')

    const stop = await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 })
    assert.is(stop.code, 0, `replicafs stop works: ${stop.stderr}`)
    const r = await withDeadline(run, 60_000, 'the Primary to exit after stop')
    run = undefined
    assert.is(r.code, 1, `after a fatal error the daemon exits 1 (exit ${String(r.code)})\n${r.stderr.slice(-2000)}`)
    assert.not.ok(await isMounted(dirs.mount), 'and unmounts')
    await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 20_000, what: 'no process to hold the state directory' })

    // The disk repaired (unmounted and mounted again: its journal replayed), the next start
    // replays the record the failing disk refused.
    await lfs.unmount()
    lfs = await mountLoopImage(lfs.image, lfs.mountPoint)
    const P = await startPrimary({ dirs })
    try {
      assert.is((await status(dirs.state)).fatal, null, 'status.fatal is null after the start')
      assert.is(await fsp.readFile(x, 'utf8'), 'HELLO world\n', 'the refused write was replayed: nothing lost')
    } finally {
      await P.stop()
    }
  } finally {
    if (await isMounted(dirs.mount)) await cli(['stop', '--state', dirs.state], { timeoutMs: 60_000 }).catch(() => undefined)
    await run?.catch(() => undefined)
    await waitFor(() => pidsWithArg(dirs.state).length === 0, { timeoutMs: 30_000, what: 'every daemon on the failing disk to exit' }).catch(() => undefined)
    await lfs.unmount()
  }
}))

t('a full SRL filesystem: records are still logged (the ring is preallocated), checkpoints cannot be recorded (status.checkpointError), a full ring gives writers ENOSPC; with room again everything resumes', isolated(180_000, async () => {
  const dirs = await tmpdirs('fullsrl')
  await fsp.mkdir(dirs.state, { mode: 0o700 })
  const lfs = await mountLoopFs(path.join(dirs.root, 'srl.img'), path.join(dirs.state, 'srl'), 48)
  let P: Primary | undefined
  await withLoopFs(lfs, async () => {
    try {
      // A 4 MiB ring: a checkpoint every 2 MiB or so. After the fill, LevelDB can still append to
      // the last block of its log (a checkpoint writes about 120 bytes), so it takes a few dozen
      // checkpoints before one cannot be recorded.
      P = await startPrimary({ dirs, srlSize: '4M' })
      await lfs.fill('filler')
      const files: Array<[string, Buffer]> = []
      let refused = 'no error'
      for (let i = 0; i < 400 && refused === 'no error'; i++) {
        const f: [string, Buffer] = [`f${i}`, pattern(1024 * 1024, 10 + i)]
        refused = await errCode(fsp.writeFile(path.join(dirs.mount, f[0]), f[1]))
        if (refused === 'no error') files.push(f)
      }
      console.log(`  full SRL filesystem: ${files.length} MiB written before the ring filled and a writer got ${refused}`)
      assert.is(refused, 'ENOSPC', 'once the ring is full, a writer gets ENOSPC')
      assert.ok(files.length >= 4, `the writes before that succeeded (${files.length} MiB)`)
      const st = await status(dirs.state) as unknown as { fatal: string | null, checkpointError: string | null }
      assert.is(st.fatal, null, 'the Primary is not fatal')
      assert.match(String(st.checkpointError), /No space left on device/, `status.checkpointError says why: ${String(st.checkpointError)}`)
      assert.match(await daemonLog(dirs.state), /SRL's filesystem is full/, 'the daemon logged it')
      assert.ok((await fsp.readFile(path.join(dirs.mount, files[0][0]))).equals(files[0][1]), 'reads go on')

      await fsp.rm(path.join(lfs.mountPoint, 'filler'))
      for (let i = files.length; i < files.length + 4; i++) {
        const f: [string, Buffer] = [`f${i}`, pattern(1024 * 1024, 10 + i)]
        await fsp.writeFile(path.join(dirs.mount, f[0]), f[1])
      }
      const after = await status(dirs.state) as unknown as { checkpointError: string | null }
      assert.is(after.checkpointError, null, 'with room, checkpoints are recorded again')
      for (let i = 0; i < files.length + 4; i++) {
        const want = i < files.length ? files[i][1] : pattern(1024 * 1024, 10 + i)
        assert.ok((await fsp.readFile(path.join(dirs.data, `f${i}`))).equals(want), `f${i} is whole in the data directory`)
      }
      await P.stop()
    } finally {
      await stopAll(P)
    }
  })
}))

t('leaves no FUSE mounts, loop devices or daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
  assertNoLoopDevices()
}))

t.run()
