/**
 * The Primary's write path at the RVG level (no FUSE): a write is answered once it is in the SRL
 * and applied after, from the ring. What must hold: an answered write is "pending" on its inode
 * (hard links included) until applied, so the adapter's stats and reads wait for it; writes land
 * in log order even to one inode under two names; on a full data filesystem a write is refused
 * with ENOSPC before it is logged; a queued write that cannot be applied makes the RVG fatal and
 * stays in the SRL, and the next start replays it (a queued write reserved its blocks when it was
 * answered, so only an I/O error can fail it). Nothing is ever skipped.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { Srl } from '../src/srl'
import { PrimaryRvg, type Replication } from '../src/rvg/primary'
import { State } from '../src/format/state'
import { RecordType } from '../src/format/record'
import { APPLY_BEFORE_REPLY_BYTES_MAX } from '../src/limits'
import { ReplError } from '../src/errors'
import { timed, waitFor, cleanupAll, assertCleanSlate, registerTmpRoot, registerMount, installExitHandlers } from './helpers'
import { mountLoopFs, mountLoopImage, assertNoLoopDevices } from './helpers/loopfs'

/** A temporary directory in the cleanup registry (the suite's /tmp/replicafs-e2e-* prefix). */
function tmpDir (): string {
  installExitHandlers()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-e2e-writepath-'))
  registerTmpRoot(dir)
  return dir
}
test.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`write-path.test: cleanup had to force: ${forced.join('; ')}`)
})

async function open (dir: string): Promise<PrimaryRvg> {
  const srl = await Srl.open(path.join(dir, 'state', 'srl'), { ringBytes: 64 * 1024 * 1024, role: 'primary' })
  const rvg = new PrimaryRvg(path.join(dir, 'data'), srl)
  await rvg.recover()
  return rvg
}

/** A fresh data directory and its RVG, with /a and its hard link /b created through the log. */
async function withLinkedPair (): Promise<{ dir: string, rvg: PrimaryRvg }> {
  const dir = tmpDir()
  fs.mkdirSync(path.join(dir, 'data'))
  const rvg = await open(dir)
  await rvg.mutate(RecordType.CREATE, { p: '/a', m: 0o644, t: [1700000000, 0] })
  await rvg.mutate(RecordType.LINK, { p: '/a', d: '/b', t: [1700000001, 0] })
  return { dir, rvg }
}

test('an answered write is pending on its inode, under every name, until applied', timed(60_000, async () => {
  const { dir, rvg } = await withLinkedPair()
  try {
    await rvg.mutate(RecordType.CREATE, { p: '/other', m: 0o644, t: [1700000002, 0] })
    const ino = fs.statSync(path.join(dir, 'data', 'b')).ino
    const other = fs.statSync(path.join(dir, 'data', 'other')).ino
    // Bigger than APPLY_BEFORE_REPLY_BYTES_MAX, so it is queued (a small one is applied at once).
    const data = Buffer.alloc(APPLY_BEFORE_REPLY_BYTES_MAX + 1, 'h')
    const n = await rvg.write('/a', data, 0)
    assert.is(n, data.length)
    // Answered, and applied only after the replies of this turn of the event loop.
    assert.ok(rvg.writesPending(ino), 'the write is pending on the inode /b also names')
    assert.not.ok(rvg.writesPending(other), 'no write is pending on another file')
    assert.is(fs.statSync(path.join(dir, 'data', 'b')).size, 0, 'not applied yet')
    await rvg.barrier()
    assert.not.ok(rvg.writesPending(ino))
    assert.ok(fs.readFileSync(path.join(dir, 'data', 'b')).equals(data))
  } finally {
    await rvg.close()
  }
}))

test('writes land in log order, also through two names of one inode and across batches', timed(60_000, async () => {
  const { dir, rvg } = await withLinkedPair()
  try {
    // Far more than one batch (1 MiB) and than the queue (4 MiB): writers wait for room.
    const chunk = 128 * 1024
    const writes: Array<Promise<number>> = []
    for (let i = 0; i < 64; i++) {
      const name = i % 2 === 0 ? '/a' : '/b'
      writes.push(rvg.write(name, Buffer.alloc(chunk, i), 0)) // all to the same range
      writes.push(rvg.write(name, Buffer.alloc(chunk, i), chunk * (i + 1)))
    }
    await Promise.all(writes)
    await rvg.barrier()
    const got = fs.readFileSync(path.join(dir, 'data', 'a'))
    assert.is(got.length, chunk * 65)
    assert.ok(got.subarray(0, chunk).equals(Buffer.alloc(chunk, 63)), 'the last write to the shared range wins')
    for (let i = 0; i < 64; i++) assert.ok(got.subarray(chunk * (i + 1), chunk * (i + 2)).equals(Buffer.alloc(chunk, i)), `chunk ${i}`)
    // Each write's record carries the resulting mtime: the file has the last one's.
    const st = fs.statSync(path.join(dir, 'data', 'a'), { bigint: true })
    const last = [...rvg.srl!.records()].filter((r) => r.record.type === RecordType.WRITE).pop()!
    const t = last.record.meta.t!
    assert.is(st.mtimeNs, BigInt(t[0]) * 1000000000n + BigInt(t[1]))
  } finally {
    await rvg.close()
  }
}))

test('a small write with nothing queued ahead is applied before its reply; behind a queued write it waits its turn', timed(60_000, async () => {
  const { dir, rvg } = await withLinkedPair()
  try {
    const ino = fs.statSync(path.join(dir, 'data', 'a')).ino
    assert.is(await rvg.write('/a', Buffer.from('hello'), 0), 5)
    assert.not.ok(rvg.writesPending(ino), 'nothing pending: applied before the reply')
    assert.is(fs.readFileSync(path.join(dir, 'data', 'b'), 'utf8'), 'hello', 'in the data directory, under both names')
    const st = fs.statSync(path.join(dir, 'data', 'a'), { bigint: true })
    const t = [...rvg.srl!.records()].pop()!.record.meta.t!
    assert.is(st.mtimeNs, BigInt(t[0]) * 1000000000n + BigInt(t[1]), 'with the mtime its record carries')
    assert.is(rvg.appliedSeq, rvg.srl!.lastSeq, 'the applied position covers it')
    // A big write is queued; a small one after it (same range, through the other name) must land
    // after it, so it is queued too.
    const big = rvg.write('/a', Buffer.alloc(APPLY_BEFORE_REPLY_BYTES_MAX + 1, 'x'), 0)
    const small = rvg.write('/b', Buffer.from('small'), 0)
    await Promise.all([big, small])
    assert.ok(rvg.writesPending(ino), 'queued behind the big write')
    await rvg.barrier()
    const got = fs.readFileSync(path.join(dir, 'data', 'a'))
    assert.is(got.subarray(0, 5).toString(), 'small', 'the later write wins')
    assert.is(got.length, APPLY_BEFORE_REPLY_BYTES_MAX + 1)
  } finally {
    await rvg.close()
  }
}))

/** Rejects if `p` has not settled within `ms` (a deadline for a liveness condition, not a timing). */
function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms) })
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer))
}

test('a steady writer holds up neither a barrier nor another change', timed(60_000, async () => {
  const dir = tmpDir()
  fs.mkdirSync(path.join(dir, 'data'))
  const rvg = await open(dir)
  let stop = false
  let writes = 0
  let writer: Promise<void> | null = null
  try {
    await rvg.mutate(RecordType.CREATE, { p: '/a', m: 0o644, t: [1700000000, 0] })
    const chunk = Buffer.alloc(128 * 1024, 1)
    // Answered before applied, each write is followed at once by the next: the in-flight list
    // only empties when the writer stops.
    writer = (async () => { while (!stop) await rvg.write('/a', chunk, (writes++ % 256) * chunk.length) })()
    await waitFor(() => writes >= 100, { timeoutMs: 30_000, what: '100 writes from the steady writer', intervalMs: 1 })
    const before = writes
    await within(rvg.barrier(), 30_000, 'barrier() during a steady writer')
    await within(rvg.mutate(RecordType.MKDIR, { p: '/d', m: 0o755, t: [1700000001, 0] }), 30_000, 'mkdir during a steady writer')
    assert.ok(fs.statSync(path.join(dir, 'data', 'd')).isDirectory())
    await waitFor(() => writes >= before + 100, { timeoutMs: 30_000, what: 'the writer to go on after the mkdir', intervalMs: 1 })
  } finally {
    stop = true
    await writer
    await rvg.close()
  }
}))

/** The WRITE records the SRL holds for `p` that no VOID follows, as [offset, length]. */
function loggedWrites (rvg: PrimaryRvg, p: string): Array<[number, number]> {
  const recs = [...rvg.srl!.records()].map((r) => r.record)
  const res: Array<[number, number]> = []
  recs.forEach((r, i) => {
    const next = recs[i + 1]
    const voided = next !== undefined && next.type === RecordType.VOID && next.meta.v === r.seq
    if (r.type === RecordType.WRITE && r.meta.p === p && !voided) res.push([r.meta.o!, r.data.length])
  })
  return res
}

test('a full data filesystem answers ENOSPC to the writer and logs nothing for it; the RVG goes on, and writes succeed once there is room', timed(60_000, async () => {
  const dir = tmpDir()
  const data = path.join(dir, 'data')
  fs.mkdirSync(data)
  // A 1 MiB data filesystem (tmpfs), far below DATA_SPACE_RESERVE_BYTES: every write reserves its
  // range before it is logged.
  registerMount(data)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', data])
  let rvg = await open(dir)
  try {
    await rvg.mutate(RecordType.CREATE, { p: '/big', m: 0o644, t: [1700000000, 0] })
    const payload = Buffer.alloc(2 * 1024 * 1024)
    for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE(i, i)
    const chunk = 128 * 1024
    let answered = 0
    let refused: NodeJS.ErrnoException | null = null
    for (let off = 0; off < payload.length; off += chunk) {
      try {
        assert.is(await rvg.write('/big', payload.subarray(off, off + chunk), off), chunk)
        answered++
      } catch (err) {
        refused = err as NodeJS.ErrnoException
        break
      }
    }
    assert.ok(refused !== null, 'a write past the 1 MiB of room is refused')
    assert.is(refused.code, 'ENOSPC', `refused with ENOSPC: ${refused.message}`)
    assert.ok(answered >= 4 && answered <= 8, `the writes that fit were answered (${answered} of 128 KiB)`)
    assert.is(rvg.fatalError, null, 'the RVG is not fatal')
    const onDisk = fs.readFileSync(path.join(data, 'big'))
    assert.ok(onDisk.equals(payload.subarray(0, answered * chunk)), 'the file holds exactly the answered writes')
    assert.equal(loggedWrites(rvg, '/big'), Array.from({ length: answered }, (_, i) => [i * chunk, chunk]), 'the SRL holds exactly the answered writes: nothing for the refused one')
    // A small write (applied before its reply on a roomy disk) is refused the same way.
    let small: NodeJS.ErrnoException | null = null
    try { await rvg.write('/big', Buffer.alloc(100, 1), answered * chunk + chunk) } catch (err) { small = err as NodeJS.ErrnoException }
    assert.is(small?.code, 'ENOSPC', 'a 100-byte write past the end is refused with ENOSPC')
    // Other changes and reads go on.
    await rvg.mutate(RecordType.MKDIR, { p: '/d', m: 0o755, t: [1700000001, 0] })
    assert.ok(fs.statSync(path.join(data, 'd')).isDirectory(), 'a mkdir still works')
    // Room again: the refused writes succeed.
    execFileSync('mount', ['-o', 'remount,size=8m', data])
    for (let off = answered * chunk; off < payload.length; off += chunk) {
      assert.is(await rvg.write('/big', payload.subarray(off, off + chunk), off), chunk)
    }
    await rvg.barrier()
    assert.ok(fs.readFileSync(path.join(data, 'big')).equals(payload), 'with room, every byte is written')
    await rvg.close()
    // Replay after a restart changes nothing.
    rvg = await open(dir)
    assert.ok(fs.readFileSync(path.join(data, 'big')).equals(payload), 'and stays so after a restart')
  } finally {
    await rvg.close()
    execFileSync('umount', [data])
  }
}))

test('a queued write the data directory fails (an I/O error) makes the RVG fatal, stays in the SRL and is replayed at the next start', timed(90_000, async () => {
  const dir = tmpDir()
  const lfs = await mountLoopFs(path.join(dir, 'data.img'), path.join(dir, 'data'), 32)
  const data = lfs.mountPoint
  let rvg = await open(dir)
  let fatal: Error | null = null
  rvg.onFatal = (err) => { fatal = err }
  try {
    await rvg.mutate(RecordType.CREATE, { p: '/big', m: 0o644, t: [1700000000, 0] })
    const payload = Buffer.alloc(128 * 1024, 7)
    assert.is(await rvg.write('/big', payload, 0), payload.length)
    assert.ok(rvg.writesPending(fs.statSync(path.join(data, 'big')).ino), 'answered, not yet applied')
    // The disk fails before the apply runs (it runs after this turn): every later I/O gets EIO.
    execFileSync('sync', ['-f', data])
    execFileSync('xfs_io', ['-x', '-c', 'shutdown', data])
    try {
      await rvg.barrier()
      assert.unreachable('the barrier must report the failed apply')
    } catch (err) {
      assert.match((err as Error).message, /cannot apply SRL record with sequence number \d+ \(WRITE \/big\) to the data directory: EIO/, (err as Error).message)
    }
    assert.ok(fatal !== null, 'onFatal was called')
    let refused: Error | null = null
    try { await rvg.mutate(RecordType.MKDIR, { p: '/d', m: 0o755, t: [1700000001, 0] }) } catch (err) { refused = err as Error }
    assert.match(refused?.message ?? 'not refused', /cannot apply SRL record/, 'every later change is refused')
    assert.equal(loggedWrites(rvg, '/big'), [[0, payload.length]], 'the answered write stays in the SRL')
    await rvg.close()
    // The disk back (unmounted, mounted again), the next start replays the logged write.
    await lfs.unmount()
    await mountLoopImage(lfs.image, lfs.mountPoint)
    rvg = await open(dir)
    assert.ok(fs.readFileSync(path.join(data, 'big')).equals(payload), 'the replayed write has every byte')
  } finally {
    await rvg.close()
    await lfs.unmount()
  }
}))

test('after a reboot, replay starts at the last checkpoint, not at the tail a Secondary holds back: changes already on disk are not replayed', timed(60_000, async () => {
  const dir = tmpDir()
  const data = path.join(dir, 'data')
  fs.mkdirSync(data)
  // A Secondary that has acknowledged nothing: every record stays in the SRL.
  const held: Replication = {
    admit () {},
    appended () {},
    synced () {},
    acked: () => null,
    retainFrom: () => ({ seq: 0, offset: 0 }),
    persist: async () => {},
    overflow: async () => { throw new ReplError('SRL_FULL', 'SRL is full: a Secondary holds every record (srlprot=fail)') },
    foldMaps: async () => {},
    describeLag: () => 'a Secondary holds every record'
  }
  const srlDir = path.join(dir, 'state', 'srl')
  const openHeld = async (): Promise<PrimaryRvg> => {
    const srl = await Srl.open(srlDir, { ringBytes: 64 * 1024 * 1024, role: 'primary' })
    const r = new PrimaryRvg(data, srl, { replication: held })
    await r.recover()
    return r
  }
  let rvg = await openHeld()
  const T = (k: number): [number, number] => [1700000000 + k, 0]
  try {
    // Replayed over the tree they made, these go wrong: the link would point at a new inode, and
    // the file created in the first /d would land in the second.
    await rvg.mutate(RecordType.CREATE, { p: '/a', m: 0o644, t: T(1) })
    await rvg.write('/a', Buffer.from('the first a'), 0)
    await rvg.mutate(RecordType.RENAME, { p: '/a', d: '/b', t: T(2) })
    await rvg.mutate(RecordType.LINK, { p: '/b', d: '/c', t: T(3) })
    await rvg.mutate(RecordType.MKDIR, { p: '/d', m: 0o755, t: T(4) })
    await rvg.mutate(RecordType.CREATE, { p: '/d/f', m: 0o644, t: T(5) })
    await rvg.mutate(RecordType.RENAME, { p: '/d', d: '/e', t: T(6) })
    await rvg.mutate(RecordType.MKDIR, { p: '/d', m: 0o755, t: T(7) })
    await rvg.checkpoint()
    assert.is(rvg.srl!.tailSeq, 0, 'the Secondary holds every record in the SRL')
    await rvg.close()
    // Another boot id than the one the last recovery recorded: the machine rebooted.
    const srl = await Srl.open(srlDir, { ringBytes: 64 * 1024 * 1024, role: 'primary' })
    await srl.store.put(State.boot, 'another boot')
    await srl.close()
    rvg = await openHeld()
    assert.is(fs.readFileSync(path.join(data, 'b'), 'utf8'), 'the first a')
    assert.is(fs.statSync(path.join(data, 'c')).ino, fs.statSync(path.join(data, 'b')).ino, '/c is still a hard link of /b')
    assert.equal(fs.readdirSync(path.join(data, 'd')), [], 'the second /d is empty')
    assert.equal(fs.readdirSync(path.join(data, 'e')), ['f'], '/e holds f')
    assert.not.ok(fs.existsSync(path.join(data, 'a')), 'no /a')
  } finally {
    await rvg.close()
  }
}))

test('leaves no mounts or loop devices behind', timed(60_000, async () => {
  await assertCleanSlate()
  assertNoLoopDevices()
}))

test.run()
