/**
 * Small ext4 filesystems on loop devices, for tests that need a real disk they control: one that
 * fills up (a data directory or snapshot store with no room left), or one whose writes they can
 * watch (the image file is the device: what the kernel has written to the loop device can be read
 * back from it, and what is still only in the page cache of the filesystem on top cannot).
 *
 * mountLoopFs() makes a sparse image with mkfs.ext4 (4 KiB blocks, no reserved blocks, inode tables
 * and journal initialised at once so that nothing writes in the background after the mount) and
 * mounts it with `mount -o loop`, which attaches the loop device with autoclear: any unmount, ours,
 * cleanupAll()'s `umount -l` or the exit handler's, also detaches it. The mount point is registered
 * with the cleanup registry before the mount, and every image with this module, so that
 * assertNoLoopDevices() (each file's clean-slate test) can check that no loop device still holds
 * one of them. Nothing here skips: a missing mkfs.ext4, mount or /dev/loop-control is a failure
 * with a message saying so.
 */
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { exec, execOk, waitFor, assertLive } from './util'
import { registerMount, mounts, isMounted } from './cleanup'

export interface LoopFs {
  /** The image file (the loop device's backing file). */
  image: string
  mountPoint: string
  /** /dev/loopN */
  device: string
  sizeBytes: number
  /** Free bytes for root now (statfs). */
  freeBytes(): number
  /**
   * Fills the filesystem: writes zeros to `file` (relative to the mount point) until ENOSPC, syncs,
   * and checks that the filesystem has fewer than `slackBytes` free afterwards. Returns the bytes written.
   */
  fill(file?: string, slackBytes?: number): Promise<number>
  /** Unmounts (which detaches the loop device) and waits until no loop device holds the image. */
  unmount(): Promise<void>
}

/** Every image made here, for assertNoLoopDevices(). */
const images = new Set<string>()

/** Fails (never skips) if this machine cannot make and mount a loop-backed ext4 filesystem. */
export async function assertLoopAvailable (): Promise<void> {
  const problems: string[] = []
  for (const [cmd, args] of [['mkfs.ext4', ['-V']], ['mount', ['--version']], ['umount', ['--version']]] as const) {
    const r = await exec(cmd, [...args], { timeoutMs: 20_000 }).catch((err: Error) => err)
    if (r instanceof Error) problems.push(`${cmd} cannot run (${r.message})`)
  }
  if (!fs.existsSync('/dev/loop-control')) problems.push('/dev/loop-control does not exist (no loop device support)')
  try {
    if (!/\bext4\b/.test(fs.readFileSync('/proc/filesystems', 'utf8'))) problems.push('the kernel does not list ext4 in /proc/filesystems')
  } catch (err) {
    problems.push(`cannot read /proc/filesystems: ${(err as Error).message}`)
  }
  if (problems.length > 0) throw new Error(`these tests need a loop-mounted ext4 filesystem, and this machine cannot make one: ${problems.join('; ')}`)
}

/** Loop devices (/dev/loopN) whose backing file is `image` now. */
export function loopDevicesOf (image: string): string[] {
  const res: string[] = []
  let entries: string[]
  try { entries = fs.readdirSync('/sys/block') } catch { return res }
  for (const e of entries) {
    if (!/^loop\d+$/.test(e)) continue
    let backing: string
    try { backing = fs.readFileSync(`/sys/block/${e}/loop/backing_file`, 'utf8').trim() } catch { continue }
    // a deleted backing file shows as "PATH (deleted)"
    if (backing === image || backing === `${image} (deleted)`) res.push(`/dev/${e}`)
  }
  return res
}

/** Throws if a loop device still holds any image this module made (the clean-slate check). */
export function assertNoLoopDevices (): void {
  const left = [...images].flatMap((img) => loopDevicesOf(img).map((d) => `${d} (${img})`))
  if (left.length > 0) throw new Error(`loop devices left attached: ${left.join(', ')}`)
}

/**
 * Makes an ext4 image of `sizeMiB` MiB at `image` (a path inside a registered temp root) and mounts
 * it at `mountPoint` (created if missing). The caller unmounts it in a finally block.
 */
export async function mountLoopFs (image: string, mountPoint: string, sizeMiB: number): Promise<LoopFs> {
  assertLive(`mountLoopFs ${image}`)
  await assertLoopAvailable()
  const fh = await fsp.open(image, 'w')
  try { await fh.truncate(sizeMiB * 1024 * 1024) } finally { await fh.close() }
  images.add(image)
  await execOk('mkfs.ext4', ['-F', '-q', '-m', '0', '-b', '4096', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', image], { timeoutMs: 60_000 })
  return await mountLoopImage(image, mountPoint)
}

/**
 * Mounts an existing ext4 image (say, a copy of another one's image taken at some instant: what
 * that disk held then, as after a power cut; the mount replays its journal) at `mountPoint`.
 */
export async function mountLoopImage (image: string, mountPoint: string): Promise<LoopFs> {
  assertLive(`mountLoopImage ${image}`)
  await assertLoopAvailable()
  images.add(image)
  const sizeBytes = (await fsp.stat(image)).size
  await fsp.mkdir(mountPoint, { recursive: true })
  registerMount(mountPoint)
  await execOk('mount', ['-t', 'ext4', '-o', 'loop', image, mountPoint], { timeoutMs: 60_000 })
  const entry = (await mounts()).find((m) => m.target === path.resolve(mountPoint))
  if (entry === undefined || !entry.source.startsWith('/dev/loop')) {
    throw new Error(`mount -o loop ${image} ${mountPoint} exited 0 but /proc/mounts shows ${JSON.stringify(entry)}`)
  }
  const device = entry.source
  const lfs: LoopFs = {
    image,
    mountPoint,
    device,
    sizeBytes,
    freeBytes () {
      const st = fs.statfsSync(mountPoint)
      return st.bavail * st.bsize
    },
    async fill (file = 'filler', slackBytes = 64 * 1024) {
      const target = path.join(mountPoint, file)
      const chunk = Buffer.alloc(1024 * 1024)
      let written = 0
      const out = await fsp.open(target, 'a')
      try {
        // large writes first, then single blocks, until the filesystem refuses
        for (const size of [chunk.length, 4096]) {
          for (;;) {
            try {
              written += (await out.write(chunk, 0, size)).bytesWritten
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
              throw err
            }
          }
        }
        await out.sync()
      } finally {
        await out.close()
      }
      const free = lfs.freeBytes()
      if (free >= slackBytes) throw new Error(`filling ${mountPoint} left ${free} bytes free (wanted fewer than ${slackBytes})`)
      return written
    },
    async unmount () {
      if (await isMounted(mountPoint)) {
        const r = await exec('umount', [mountPoint], { timeoutMs: 60_000 })
        if (r.code !== 0) throw new Error(`umount ${mountPoint} failed (exit ${String(r.code)}): ${r.stderr.trim()}`)
      }
      await waitFor(() => loopDevicesOf(image).length === 0, { timeoutMs: 20_000, what: `the loop device of ${image} (${device}) to be detached after the unmount` })
    }
  }
  return lfs
}

/**
 * Runs `body`, then unmounts `lfs` whatever happened (the caller's finally). An unmount that fails
 * after a failed body is appended to the body's error instead of hiding it.
 */
export async function withLoopFs<T> (lfs: LoopFs, body: () => Promise<T>): Promise<T> {
  let result: T
  try {
    result = await body()
  } catch (err) {
    await lfs.unmount().catch((e: Error) => {
      if (err instanceof Error) err.message += `\n(then unmounting ${lfs.mountPoint} failed too: ${e.message})`
    })
    throw err
  }
  await lfs.unmount()
  return result
}
