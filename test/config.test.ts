/**
 * `--config FILE` (TOML) for `primary` and `secondary`, and the systemd units in examples/systemd/:
 *  - the sample files in examples/ load with every key a flag of their command;
 *  - a Primary and a Secondary started from config files (relative paths from the file's
 *    directory, `daemon = true`) replicate; a flag on the command line overrides the file;
 *  - an unknown key, a value of the wrong type, a TOML syntax error, a missing file: one line
 *    naming the file and the key (or line), non-zero exit, nothing started;
 *  - each unit's ExecStart/ExecStop run commands that exist with those flags, and its PIDFile is
 *    the daemon.pid of the --state it passes.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  assertCleanSlate, cleanupAll, isolated, timed, cli, tmpdirs, repoRoot, assertOneLineError, status, waitFor, registerMount, registerState,
  isMounted, pidsWithArg, describeFailure
} from './helpers'
import { loadConfig } from '../src/cli/args'
import { PRIMARY_FLAGS } from '../src/cli/primary'
import { SECONDARY_FLAGS } from '../src/cli/secondary'

const t = suite('config')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`config.test: cleanup had to force: ${forced.join('; ')}`)
})

t('the sample config files load, every key a flag of their command', () => {
  const p = loadConfig('primary', path.join(repoRoot(), 'examples', 'primary.toml'), PRIMARY_FLAGS)
  assert.is(p.data, '/srv/data')
  assert.equal(p.secondary, ['replica.example:7400'])
  assert.is(p['srl-size'], '1G')
  const s = loadConfig('secondary', path.join(repoRoot(), 'examples', 'secondary.toml'), SECONDARY_FLAGS)
  assert.is(s.listen, '0.0.0.0:7400')
  assert.is(s['secret-file'], '/etc/replicafs/secret')
})

t('a Primary and a Secondary from config files replicate; a flag on the command line overrides the file', isolated(120_000, async () => {
  const dirs = await tmpdirs('config')
  const root = dirs.root
  for (const d of ['p/data', 'p/mnt', 's/data', 's/mnt']) await fsp.mkdir(path.join(root, d), { recursive: true })
  for (const d of ['p/mnt', 's/mnt']) registerMount(path.join(root, d))
  for (const d of ['p/state', 's/state']) registerState(path.join(root, d))
  await fsp.writeFile(path.join(root, 'secret'), 'a config test secret\n', { mode: 0o600 })
  // Relative paths: from the file's directory, whatever the working directory.
  await fsp.writeFile(path.join(root, 's.toml'), [
    'data = "s/data"', 'mount = "s/mnt"', 'state = "s/state"', 'listen = "127.0.0.1:0"', 'secret-file = "secret"',
    'srl-size = "16M"', 'rds = "from-file"', 'daemon = true', 'log-format = "json"', ''
  ].join('\n'))
  const s = await cli(['secondary', '--config', path.join(root, 's.toml'), '--rds', 'cfgtest'], { cwd: '/' })
  assert.is(s.code, 0, describeFailure(s))
  const ss = await status(path.join(root, 's', 'state')) as unknown as { rds: string, listen: string, srl: { capacityBytes: number } }
  assert.is(ss.rds, 'cfgtest', 'the command line\'s --rds overrides the file\'s')
  assert.is(ss.srl.capacityBytes, 16 * 1024 * 1024, 'srl-size from the file')
  await fsp.writeFile(path.join(root, 'p.toml'), [
    '# a Primary', 'data = "p/data"', 'mount = "p/mnt"', 'state = "p/state"', `secondary = ["${ss.listen}"]`, 'secret-file = "secret"',
    'srl-size = 16777216', 'rds = "cfgtest"', 'daemon = true', ''
  ].join('\n'))
  const p = await cli(['primary', '--config', path.join(root, 'p.toml')], { cwd: '/' })
  assert.is(p.code, 0, describeFailure(p))
  await fsp.writeFile(path.join(root, 'p', 'mnt', 'hello'), 'from a configured Primary\n')
  await waitFor(() => fs.existsSync(path.join(root, 's', 'data', 'hello')) && fs.readFileSync(path.join(root, 's', 'data', 'hello'), 'utf8') === 'from a configured Primary\n',
    { timeoutMs: 30_000, what: 'the write to reach the Secondary' })
  // log-format = "json": every line of the Secondary's daemon.log is one object.
  const logLines = fs.readFileSync(path.join(root, 's', 'state', 'daemon.log'), 'utf8').split('\n').filter((l) => l !== '')
  const objects = logLines.map((l) => JSON.parse(l) as { time: string, level: string, pid: number, command: string, msg: string })
  assert.ok(objects.length > 0 && objects.every((o) => typeof o.time === 'string' && typeof o.msg === 'string' && o.command === 'secondary' && ['info', 'warn', 'error'].includes(o.level)), logLines.join('\n'))
  assert.ok(objects.some((o) => o.msg.startsWith('secondary ready:')), logLines.join('\n'))
  assert.match(fs.readFileSync(path.join(root, 'p', 'state', 'daemon.log'), 'utf8'), /^\d{4}-\d\d-\d\dT[^ ]+ replicafs\[\d+\]: /m, 'the Primary, without it, logs text')
  for (const side of ['p', 's']) {
    const r = await cli(['stop', '--state', path.join(root, side, 'state')])
    assert.is(r.code, 0, describeFailure(r))
    assert.not.ok(await isMounted(path.join(root, side, 'mnt')), `${side}/mnt unmounted`)
  }
}))

t('bad config files: one line naming the file and the key or line; nothing started', isolated(60_000, async () => {
  const dirs = await tmpdirs('config-bad')
  const file = path.join(dirs.root, 'bad.toml')
  const base = [`data = "${dirs.data}"`, `mount = "${dirs.mount}"`, `state = "${dirs.state}"`]
  const cases: Array<[string[], Array<string | RegExp>]> = [
    [[...base, 'secondaries = ["b:7400"]'], [file, '"secondaries"', /unknown key/]],
    [[...base, 'daemon = "yes"'], [file, 'daemon must be true or false']],
    [[...base, 'secondary = [1, {}]'], [file, 'secondary must be a string or a list of strings']],
    [[...base, 'srl-size = '], [file, /line 4/]],
    [[...base, 'config = "other.toml"'], [file, '"config"', /unknown key/]]
  ]
  for (const [lines, mentions] of cases) {
    await fsp.writeFile(file, lines.join('\n') + '\n')
    assertOneLineError(await cli(['primary', '--config', file]), mentions)
  }
  assertOneLineError(await cli(['secondary', '--config', path.join(dirs.root, 'missing.toml')]), [path.join(dirs.root, 'missing.toml'), 'does not exist'])
  assert.not.ok(await isMounted(dirs.mount), 'nothing mounted')
  assert.is(pidsWithArg(dirs.state).length, 0, 'no daemon started')
}))

/** `Key=value` lines of a unit file's [Service] section. */
function serviceKeys (file: string): Map<string, string> {
  const keys = new Map<string, string>()
  let section = ''
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^\[(.+)\]$/.exec(line)
    if (m !== null) { section = m[1]; continue }
    const eq = line.indexOf('=')
    if (section === 'Service' && eq > 0) keys.set(line.slice(0, eq), line.slice(eq + 1))
  }
  return keys
}

t('systemd units: ExecStart and ExecStop run replicafs commands with flags they have; PIDFile is the daemon.pid of their --state', timed(60_000, async () => {
  const dir = path.join(repoRoot(), 'examples', 'systemd')
  const units = fs.readdirSync(dir).filter((f) => f.endsWith('.service')).sort()
  assert.equal(units, ['replicafs-primary@.service', 'replicafs-secondary@.service'])
  for (const unit of units) {
    const keys = serviceKeys(path.join(dir, unit))
    assert.is(keys.get('Type'), 'forking', `${unit}: Type=forking (readiness is --daemon returning)`)
    const role = unit.includes('primary') ? 'primary' : 'secondary'
    for (const key of ['ExecStart', 'ExecStop']) {
      const argv = (keys.get(key) ?? '').split(/\s+/)
      assert.is(argv[0], '/usr/bin/replicafs', `${unit}: ${key} runs replicafs`)
      const sub = argv[1]
      assert.is(sub, key === 'ExecStart' ? role : 'stop', `${unit}: ${key} runs replicafs ${String(sub)}`)
      const help = await cli([sub, '--help'])
      assert.is(help.code, 0, describeFailure(help))
      for (const flag of argv.filter((a) => a.startsWith('--'))) assert.ok(help.stdout.includes(flag), `${unit}: replicafs ${sub} has ${flag}:\n${help.stdout}`)
      const state = argv[argv.indexOf('--state') + 1]
      assert.is(state, '/var/lib/replicafs/%i', `${unit}: ${key} names the instance's state directory`)
      if (key === 'ExecStart') {
        assert.ok(argv.includes('--daemon'), `${unit}: ExecStart returns once ready (--daemon)`)
        assert.is(keys.get('PIDFile'), `${state}/daemon.pid`, `${unit}: PIDFile is the daemon's pid file`)
        assert.ok(argv.includes('--config'), `${unit}: ExecStart reads its config file`)
      }
    }
    assert.ok(/^on-(failure|abnormal)$|^always$/.test(keys.get('Restart') ?? ''), `${unit}: a restart policy`)
  }
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
