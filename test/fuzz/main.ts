/**
 * The fuzzers' command line (docs/FUZZING.md): `npm run fuzz -- TARGET [SECONDS] [options]`.
 *
 *   node dist/test/fuzz/main.js wire|record|control|all [SECONDS]   fuzz for SECONDS (default 60) each
 *     --seed N            fast-check's seed (default: random; printed, so a run can be repeated)
 *     --runs N            stop after N inputs
 *     --findings DIR      where finding files go (default fuzz-findings/, git-ignored)
 *     --timeout S         one input running longer is a finding (default 10; the watchdog kills the process)
 *     --rss-limit-mb N    resident memory over N MiB is a finding (default 2048)
 *     --malloc-limit-mb N one Buffer allocation over N MiB is a finding (default 2)
 *     --minimize-seconds S  time to shrink a finding (default 30)
 *     --strict            also check what waits on an open finding (docs/FUZZING.md, "Open findings")
 *     --check NAME,...    only those (names as in open.ts AWAITING_FIX)
 *   node dist/test/fuzz/main.js TARGET --replay FILE...   run these inputs, say what each does (exit 1 on a finding)
 *   node dist/test/fuzz/main.js TARGET --minimize FILE    shrink a finding's input, keeping its kind
 *   node dist/test/fuzz/main.js TARGET --seeds DIR        write the seed corpus to DIR (one file each)
 *
 * Exit 0: no finding; 1: a finding (its files are named in the output); 2: bad arguments.
 */
import { AWAITING_FIX } from './open' // first: it sets the environment msgpackr reads as it loads
import fs from 'node:fs'
import path from 'node:path'
import util from 'node:util'
import crypto from 'node:crypto'
import { fuzz, minimize, runOne, guardAllocations, findingName, signature, setSlowInputMs, Finding, type Target } from './engine'
import { Recorder, supervise } from './supervisor'
import { TARGETS, U32S } from './targets'

function usage (why: string): never {
  process.stderr.write(`fuzz: ${why}\nusage: npm run fuzz -- ${Object.keys(TARGETS).join('|')}|all [SECONDS] [--seed N] [--runs N] [--findings DIR] [--strict]\n` +
    '       npm run fuzz -- TARGET --replay FILE... | --minimize FILE | --seeds DIR   (docs/FUZZING.md)\n')
  process.exit(2)
}

interface Args { targets: Target[], seconds: number, flags: Map<string, string>, files: string[] }

function parseArgs (argv: string[]): Args {
  const flags = new Map<string, string>()
  const rest: string[] = []
  const valued = new Set(['--check', '--seed', '--runs', '--findings', '--timeout', '--rss-limit-mb', '--malloc-limit-mb', '--minimize-seconds', '--minimize', '--seeds', '--child'])
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--replay' || a === '--strict') flags.set(a, '')
    else if (valued.has(a)) { if (argv[i + 1] === undefined) usage(`${a} needs a value`); flags.set(a, argv[++i]) } else if (a.startsWith('--')) usage(`unknown option ${a}`)
    else rest.push(a)
  }
  const name = rest.shift()
  if (name === undefined) usage('which target?')
  const targets = name === 'all' ? Object.values(TARGETS) : [TARGETS[name] ?? usage(`no target ${name}`)]
  let seconds = 60
  if (!flags.has('--replay') && rest.length > 0) {
    seconds = Number(rest.shift())
    if (!(seconds > 0)) usage('SECONDS must be a positive number')
  }
  if (!flags.has('--replay') && rest.length > 0) usage(`unexpected ${rest[0]}`)
  return { targets, seconds, flags, files: rest }
}

function num (flags: Map<string, string>, name: string, dflt: number): number {
  const v = flags.get(name)
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) usage(`${name} ${v} is not a number`)
  return n
}

function describe (err: unknown): string {
  if (err instanceof Finding) {
    const cause = (err as { cause?: unknown }).cause
    return `${err.message}${cause instanceof Error && cause.stack !== undefined ? `\n  thrown at: ${cause.stack.split('\n').slice(0, 6).join('\n  ')}` : ''}`
  }
  return util.inspect(err)
}

async function main (): Promise<void> {
  const { targets, seconds, flags, files } = parseArgs(process.argv.slice(2))
  const unknown = (flags.get('--check') ?? '').split(',').filter((n) => n !== '' && !(n in AWAITING_FIX))
  if (unknown.length > 0) usage(`--check: no open finding ${unknown.join(', ')} (there are ${Object.keys(AWAITING_FIX).join(', ')})`)
  guardAllocations(num(flags, '--malloc-limit-mb', 2) * 1024 * 1024)
  setSlowInputMs(num(flags, '--timeout', 10) * 1000 / 5)
  const findings = path.resolve(flags.get('--findings') ?? 'fuzz-findings')

  if (flags.has('--seeds')) {
    const dir = path.resolve(flags.get('--seeds') as string)
    for (const t of targets) {
      const out = targets.length > 1 ? path.join(dir, t.name) : dir
      fs.mkdirSync(out, { recursive: true })
      for (const s of t.seeds()) fs.writeFileSync(path.join(out, findingName('seed', s)), s)
      console.log(`fuzz ${t.name}: ${t.seeds().length} seeds written to ${out}`)
    }
    return
  }

  if (flags.has('--replay') || flags.has('--minimize')) {
    if (targets.length !== 1) usage('--replay and --minimize take one target')
    const t = targets[0]
    if (flags.has('--minimize')) {
      const file = flags.get('--minimize') as string
      const input = fs.readFileSync(file)
      let kind: string | null = null
      try { runOne(t, input) } catch (err) { kind = signature(err) }
      if (kind === null) { console.log(`fuzz ${t.name}: ${file} is no finding (nothing to minimize)`); return }
      const small = minimize(t, input, kind, num(flags, '--minimize-seconds', 30))
      const out = path.join(path.dirname(file), findingName('minimized', small))
      fs.writeFileSync(out, small)
      console.log(`fuzz ${t.name}: ${kind}: ${input.length} bytes minimized to ${small.length}: ${out}\n  hex: ${small.toString('hex')}`)
      t.close?.()
      return
    }
    if (files.length === 0) usage('--replay needs files')
    let failed = 0
    for (const file of files) {
      const input = fs.readFileSync(file)
      try {
        console.log(`${file}: ${runOne(t, input)}`)
      } catch (err) {
        failed++
        console.log(`${file}: FINDING ${describe(err)}`)
      }
    }
    t.close?.()
    process.exitCode = failed > 0 ? 1 : 0
    return
  }

  const seed = flags.has('--seed') ? num(flags, '--seed', 0) : crypto.randomInt(2 ** 31)
  const runs = flags.has('--runs') ? num(flags, '--runs', 0) : undefined
  const child = flags.get('--child')
  if (child === undefined) {
    // The parent: one child per target, watched (supervisor.ts).
    const awaiting = Object.entries(AWAITING_FIX).filter(([, v]) => v).map(([k]) => k)
    if (awaiting.length > 0) console.log(`fuzz: checks awaiting a fix outside test/fuzz, off (docs/FUZZING.md "Open findings"; --strict turns them on): ${awaiting.join(', ')}`)
    let found = 0
    for (const t of targets) {
      const args = [process.argv[1], t.name, String(seconds), '--seed', String(seed)]
      for (const [k, v] of flags) if (k !== '--seed') args.push(...(v === '' ? [k] : [k, v]))
      const code = await supervise({
        args,
        target: t.name,
        dir: path.join(findings, t.name),
        timeoutMs: num(flags, '--timeout', 10) * 1000,
        rssLimitBytes: num(flags, '--rss-limit-mb', 2048) * 1024 * 1024
      })
      if (code !== 0) found++
    }
    process.exitCode = found > 0 ? 1 : 0
    return
  }

  // The child: fuzzes one target, recording each input for its parent.
  const t = targets[0]
  const rec = new Recorder(child)
  const watched: Target = { ...t, check: (input) => { rec.enter(input); try { return t.check(input) } finally { rec.leave() } } }
  console.log(`fuzz ${t.name}: ${t.description}; ${seconds} s, seed ${seed}${runs !== undefined ? `, at most ${runs} inputs` : ''}${flags.has('--strict') ? ', strict' : ''}`)
  const r = fuzz(watched, {
    seconds,
    seed,
    runs,
    u32s: U32S[t.name],
    progress: (n, s) => console.log(`fuzz ${t.name}: ${n} inputs in ${s.toFixed(0)} s (${Math.round(n / s)}/s)`)
  })
  const top = [...r.outcomes].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v}`).join('; ')
  console.log(`fuzz ${t.name}: ${r.runs} inputs in ${r.seconds.toFixed(1)} s (${Math.round(r.runs / r.seconds)}/s); outcomes: ${top}`)
  if (r.finding === null) {
    console.log(`fuzz ${t.name}: no finding`)
  } else {
    const kind = signature(r.finding.error)
    const dir = path.join(findings, t.name)
    fs.mkdirSync(dir, { recursive: true })
    const crash = path.join(dir, findingName('crash', r.finding.input))
    fs.writeFileSync(crash, r.finding.input)
    console.log(`fuzz ${t.name}: FINDING ${describe(r.finding.error)}\n  input (${r.finding.input.length} bytes): ${crash}`)
    const small = minimize(watched, r.finding.input, kind, num(flags, '--minimize-seconds', 30), { seed: r.finding.seed, path: r.finding.path, u32s: U32S[t.name] })
    const min = path.join(dir, findingName('minimized', small))
    fs.writeFileSync(min, small)
    console.log(`  minimized (${small.length} bytes): ${min}\n  hex: ${small.toString('hex').slice(0, 2048)}\n` +
      `  replay: npm run fuzz -- ${t.name} --replay ${path.relative(process.cwd(), min)}` +
      `${r.finding.path !== '' ? `\n  the run again: npm run fuzz -- ${t.name} ${seconds} --seed ${r.finding.seed}` : ''}`)
  }
  rec.close()
  t.close?.()
  process.exitCode = r.finding === null ? 0 : 1
}

void main()
