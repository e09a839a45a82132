/**
 * The npm package as a user gets it: `npm pack`, then `npm install` of the tarball into an empty
 * directory and `npm install -g` into a private prefix, and the installed `replicafs` answers with
 * no build step (the compiled code and the prebuilt addons are in the tarball; tests, benches and
 * source maps are not).
 *
 * The pack runs with --ignore-scripts: `prepack` (npm run build) would delete and rewrite dist/
 * while the runner's other worker runs tests from it; `npm test` has just built it. That prepack is
 * there is checked below.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as os from 'os'
import * as path from 'path'
import { assertCleanSlate, cleanupAll, exec, repoRoot, timed, registerTmpRoot, describeFailure } from './helpers'

const t = suite('package')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`package.test: cleanup had to force: ${forced.join('; ')}`)
})

const npm = (args: string[], cwd: string): ReturnType<typeof exec> =>
  exec('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline'], { cwd, timeoutMs: 240_000 })

t('npm pack carries what runs and not the tests; installed locally and with -g, replicafs answers with no build step', timed(300_000, async () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { scripts: Record<string, string>, version: string, allowScripts?: Record<string, boolean> }
  assert.match(pkg.scripts.prepack ?? '', /npm run build/, 'prepack builds what the tarball carries')
  for (const dep of ['classic-level', 'fuse-native', 'msgpackr-extract']) assert.is(pkg.allowScripts?.[dep], true, `allowScripts lists ${dep}, whose install script builds or finds its addon`)

  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'replicafs-e2e-pack-'))
  registerTmpRoot(root)
  const packed = await npm(['pack', '--ignore-scripts', '--pack-destination', root], repoRoot())
  assert.is(packed.code, 0, describeFailure(packed))
  const tgz = path.join(root, `replicafs-${pkg.version}.tgz`)
  assert.ok(fs.existsSync(tgz), `${tgz} written:\n${packed.stdout}`)

  const list = await exec('tar', ['-tzf', tgz])
  assert.is(list.code, 0, describeFailure(list))
  const files = new Set(list.stdout.split('\n').filter((l) => l !== ''))
  for (const f of ['bin/replicafs', 'bin/ibc-send', 'dist/src/cli/main.js', 'dist/src/daemon/primary.js', 'native-prebuilds/sys/prebuilds/linux-x64/node.node',
    'native-prebuilds/fuse/prebuilds/linux-x64/node.node', 'native-prebuilds/ll/prebuilds/linux-x64/node.node', 'src/native/sys.c',
    'src/native/ll.c', 'src/native/napi_errors.h', 'src/native/xxhash/xxhash.h', 'src/native/libfuse/lib/fuse_lowlevel.c', 'src/native/libfuse/LGPL2.txt', 'src/native/binding.gyp', 'docs/FORMAT.md', 'README.md', 'LICENSE']) {
    assert.ok(files.has(`package/${f}`), `the tarball carries ${f}`)
  }
  const stray = [...files].filter((f) => /^package\/(test|bench|dist\/test|dist\/bench|scripts)\//.test(f) || f.endsWith('.map') || f.endsWith('.ts'))
  assert.equal(stray, [], 'no tests, benches, fixtures, sources or source maps in the tarball')

  // Locally, into an empty directory.
  const local = path.join(root, 'local')
  await fsp.mkdir(local)
  const installed = await npm(['install', tgz], local)
  assert.is(installed.code, 0, describeFailure(installed))
  const help = await exec(path.join(local, 'node_modules', '.bin', 'replicafs'), ['--help'], { cwd: local })
  assert.is(help.code, 0, describeFailure(help))
  assert.match(help.stdout, /usage: replicafs COMMAND/)
  // A command that loads the native addon and LevelDB from the installed package.
  const dump = await exec(path.join(local, 'node_modules', '.bin', 'replicafs'), ['srl-dump', '--state', path.join(root, 'no-state')], { cwd: local })
  assert.not.match(dump.stderr, /not built yet|unexpected error|Cannot find module/, describeFailure(dump))

  // Globally, into a private prefix (never the machine's).
  const prefix = path.join(root, 'global')
  const global = await npm(['install', '-g', '--prefix', prefix, tgz], root)
  assert.is(global.code, 0, describeFailure(global))
  const ghelp = await exec(path.join(prefix, 'bin', 'replicafs'), ['--help'], { cwd: root })
  assert.is(ghelp.code, 0, describeFailure(ghelp))
  assert.match(ghelp.stdout, /usage: replicafs COMMAND/)
  const gsend = await exec(path.join(prefix, 'bin', 'ibc-send'), ['--help'], { cwd: root })
  assert.is(gsend.code, 0, describeFailure(gsend))
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
