/**
 * A fresh, journaled ext4 filesystem on a loop device for one benchmark run.
 *
 *   <work>/ext4.img   preallocated with fallocate (so the backing file's blocks
 *                     exist), formatted with mkfs.ext4 (journal on; inode tables
 *                     and journal initialised now, not lazily in the background
 *                     while we measure)
 *   /dev/loopN        attached with --direct-io=on when the kernel allows it, so
 *                     the image is not cached twice (once in the image's page
 *                     cache, once in the backing file's)
 *   <work>/fs         the mountpoint
 *
 * `destroy()` unmounts, detaches and deletes everything; it is safe to call on
 * a half-built image and more than once.
 */
import * as fs from 'fs'
import * as path from 'path'
import { run, runOk } from './proc'

export interface Image {
  /** Temporary directory holding the image file and the mountpoint. */
  work: string
  imageFile: string
  /** The mounted ext4 filesystem. */
  mountpoint: string
  loopDevice: string
  directIo: boolean
  /** Mount options as shown in /proc/mounts. */
  mountOptions: string
  /** Feature line from dumpe2fs (must include has_journal). */
  features: string
  sizeBytes: number
  /** I/O counters of the loop device (what reached the "disk"). */
  deviceStats(): DeviceStats
  destroy(): Promise<void>
}

export interface DeviceStats {
  writeRequests: number
  writeBytes: number
  /** Cache flushes (REQ_PREFLUSH/fsync barriers); 0 on kernels without the field. */
  flushes: number
}

/** /sys/block/<dev>/stat: field 5 writes completed, 7 sectors written, 16 flushes completed (Linux >= 5.5). */
export function readDeviceStats(dev: string): DeviceStats {
  const f = fs.readFileSync(`/sys/block/${path.basename(dev)}/stat`, 'utf8').trim().split(/\s+/).map(Number)
  return { writeRequests: f[4] ?? 0, writeBytes: (f[6] ?? 0) * 512, flushes: f[15] ?? 0 }
}

/** Mountpoints currently mounted (from /proc/self/mountinfo), with fstype. */
export function mounts(): Map<string, string> {
  const m = new Map<string, string>()
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue
    const [pre, post] = line.split(' - ')
    const fields = pre.split(' ')
    const mp = fields[4].replace(/\\(\d{3})/g, (_s, o: string) => String.fromCharCode(parseInt(o, 8)))
    m.set(mp, (post ?? '').split(' ')[0] ?? '')
  }
  return m
}

export function isMounted(dir: string): boolean {
  return mounts().has(path.resolve(dir))
}

export async function createImage(sizeBytes: number, log: (s: string) => void): Promise<Image> {
  const work = fs.mkdtempSync('/tmp/replicafs-bench-')
  const imageFile = path.join(work, 'ext4.img')
  const mountpoint = path.join(work, 'fs')
  let loopDevice = ''
  let mounted = false
  let destroyed = false

  const destroy = async (): Promise<void> => {
    if (destroyed) return
    destroyed = true
    const problems: string[] = []
    if (mounted || isMounted(mountpoint)) {
      let r = await run(['umount', mountpoint], { timeoutMs: 60_000 })
      if (r.code !== 0) {
        // Something still holds it (a daemon we failed to stop?): detach lazily.
        r = await run(['umount', '-l', mountpoint], { timeoutMs: 60_000 })
        if (r.code !== 0) problems.push(`umount ${mountpoint}: ${r.stderr.trim()}`)
      }
    }
    if (loopDevice) {
      const r = await run(['losetup', '-d', loopDevice], { timeoutMs: 60_000 })
      if (r.code !== 0) problems.push(`losetup -d ${loopDevice}: ${r.stderr.trim()}`)
    }
    try {
      fs.rmSync(work, { recursive: true, force: true })
    } catch (e) {
      problems.push(`rm -rf ${work}: ${(e as Error).message}`)
    }
    if (problems.length) throw new Error(`image cleanup incomplete:\n  ${problems.join('\n  ')}`)
  }

  try {
    await runOk(['fallocate', '-l', String(sizeBytes), imageFile])
    await runOk(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0,nodiscard', imageFile], {
      timeoutMs: 300_000,
    })
    let directIo = true
    let r = await run(['losetup', '--find', '--show', '--direct-io=on', imageFile])
    if (r.code !== 0) {
      log(`losetup --direct-io=on failed (${r.stderr.trim()}); using a buffered loop device`)
      directIo = false
      r = await runOk(['losetup', '--find', '--show', imageFile])
    }
    loopDevice = r.stdout.trim()
    // losetup may fall back to buffered I/O silently; ask the kernel.
    try {
      directIo = fs.readFileSync(`/sys/block/${path.basename(loopDevice)}/loop/dio`, 'utf8').trim() === '1'
    } catch {
      /* older kernels: keep what losetup said */
    }
    const features = (await runOk(['dumpe2fs', '-h', loopDevice])).stdout
      .split('\n').find((l) => l.startsWith('Filesystem features:'))?.replace(/^Filesystem features:\s*/, '') ?? ''
    if (!/\bhas_journal\b/.test(features)) throw new Error(`mkfs.ext4 made a filesystem without a journal (features: ${features})`)
    fs.mkdirSync(mountpoint)
    await runOk(['mount', '-t', 'ext4', loopDevice, mountpoint])
    mounted = true
    const line = fs.readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mountpoint)
    const mountOptions = line?.split(' ')[3] ?? '?'
    const deviceStats = (): DeviceStats => readDeviceStats(loopDevice)
    return { work, imageFile, mountpoint, loopDevice, directIo, mountOptions, features, sizeBytes, deviceStats, destroy }
  } catch (e) {
    try {
      await destroy()
    } catch (e2) {
      log((e2 as Error).message)
    }
    throw e
  }
}

/** syncfs(2) of the filesystem holding `dir` (coreutils `sync -f`); returns seconds taken. */
export async function syncfs(dir: string): Promise<number> {
  const r = await runOk(['sync', '-f', dir], { timeoutMs: 300_000 })
  return r.seconds
}
