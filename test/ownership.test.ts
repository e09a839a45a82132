/**
 * Entries a non-root user creates through the mount belong to that user, with the group the
 * kernel would give (the parent's when it is setgid), in the data directory and through the mount.
 * The daemon runs as root; the caller's ids come from the FUSE request (src/native, bridge change 10).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { startPrimary, tmpdirs, assertCleanSlate, cleanupAll, timed, execOk } from './helpers'

const t = suite('ownership')
const UID = 1234
const GID = 5678
const SGID_GROUP = 4321

t.after(async () => { await cleanupAll() })

t('entries created by another user are owned by that user', timed(120_000, async () => {
  const dirs = await tmpdirs('own')
  await fsp.chmod(dirs.root, 0o711) // the other user must reach the mount point
  const primary = await startPrimary({ dirs, srlSize: '8M' })
  await fsp.chmod(primary.mount, 0o1777)
  await fsp.mkdir(path.join(primary.mount, 'sg'))
  await fsp.chown(path.join(primary.mount, 'sg'), 0, SGID_GROUP)
  await fsp.chmod(path.join(primary.mount, 'sg'), 0o2777)
  await execOk('setpriv', [`--reuid=${UID}`, `--regid=${GID}`, '--clear-groups', '--', 'sh', '-c',
    'echo hi > f && mkdir d && ln -s f l && mkfifo p && echo x > sg/in && mkdir sg/sub'], { cwd: primary.mount, timeoutMs: 30_000 })
  const want: Array<[string, number, number]> = [
    ['f', UID, GID], ['d', UID, GID], ['l', UID, GID], ['p', UID, GID],
    ['sg/in', UID, SGID_GROUP], ['sg/sub', UID, SGID_GROUP]
  ]
  for (const root of [primary.mount, primary.data]) {
    for (const [rel, uid, gid] of want) {
      const st = await fsp.lstat(path.join(root, rel))
      assert.equal([st.uid, st.gid], [uid, gid], `${rel} in ${root === primary.mount ? 'the mount' : 'the data directory'}`)
    }
  }
  const sub = await fsp.stat(path.join(primary.data, 'sg/sub'))
  assert.ok((sub.mode & 0o2000) !== 0, 'a directory made in a setgid directory is setgid too')
  await primary.stop()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
