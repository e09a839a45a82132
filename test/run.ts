/**
 * The suite's runner: every dist/test/*.test.js in its own uvu process, two (or
 * REPLICAFS_TEST_JOBS) at a time, longest first.
 *
 * Why not `uvu dist/test` alone: it runs the 40-odd files one after another in one process, and
 * most of their time is waiting (fsync on loop devices, heartbeats, daemons starting), so one run
 * kept one of two cores busy and took 13-14 minutes of CI's 15. Files are independent: each makes
 * its own temporary roots, listens on port 0 and ends with its clean-slate check. Each worker gets
 * its own TMPDIR, so a file's clean-slate check (mounts left under os.tmpdir()/replicafs-e2e-*)
 * sees only its worker's mounts.
 *
 * Output: a file's output is printed whole when it ends (never interleaved), with its time; the end
 * prints the totals, the slowest files, and every failed file again. Exit 1 if any file failed.
 *
 *   node dist/test/run.js [PATTERN]     PATTERN: a regular expression on file names (default all)
 *   REPLICAFS_TEST_JOBS=1               one file at a time
 *   REPLICAFS_TEST_FILE_TIMEOUT=SECONDS a file still running then is stopped (SIGTERM: its exit
 *                                       handler unmounts; SIGKILL 15 s later) and fails (default 600)
 */
import { spawn, type ChildProcess } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

/**
 * Seconds each file took alone (a CI run, 2 cores). Only the order uses them: longest first keeps
 * one long file from starting last. A file not listed counts as 20.
 */
const KNOWN_SECONDS: Record<string, number> = {
  'full-sync': 90,
  snapshots: 68,
  failback: 47,
  powercut: 46,
  ibc: 45,
  'sync-modes': 43,
  limits: 42,
  examples: 30,
  programs: 30,
  'local-users': 29,
  'replication-crash': 26,
  takeover: 26,
  srlprot: 23
}

interface Result { file: string, code: number, seconds: number, output: string, tests: number, passed: number, skipped: number }

const ANSI = /\x1b\[[0-9;]*m/g

function summaryField (text: string, name: string): number {
  const m = new RegExp(`${name}:\\s+(\\d+)`).exec(text.replace(ANSI, ''))
  return m === null ? 0 : Number(m[1])
}

function main (): void {
  const testDir = __dirname
  const pattern = process.argv[2] === undefined ? null : new RegExp(process.argv[2])
  const files = fs.readdirSync(testDir)
    .filter((f) => f.endsWith('.test.js'))
    .filter((f) => pattern === null || pattern.test(f))
    .sort((a, b) => weight(b) - weight(a) || a.localeCompare(b))
  if (files.length === 0) {
    console.error(`test runner: no test file in ${testDir} matches ${String(process.argv[2])}`)
    process.exit(2)
  }
  const jobs = Math.max(1, Math.min(files.length, Number(process.env.REPLICAFS_TEST_JOBS ?? Math.min(2, os.cpus().length)) || 1))
  const fileTimeoutS = Number(process.env.REPLICAFS_TEST_FILE_TIMEOUT ?? 600) || 600
  // uvu's package exports no bin path; dist/test/ is two levels under the repository.
  const uvu = path.resolve(testDir, '..', '..', 'node_modules', 'uvu', 'bin.js')
  const started = Date.now()
  const queue = [...files]
  const results: Result[] = []
  const running = new Set<ChildProcess>()
  let stopping = false

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      stopping = true
      for (const child of running) child.kill(sig)
    })
  }

  console.log(`test runner: ${files.length} files, ${jobs} at a time (REPLICAFS_TEST_JOBS), each in its own uvu process`)

  const worker = async (slot: number): Promise<void> => {
    // Short: the state directories' control sockets live under it (108-byte socket paths).
    // 0755: tests run commands as other users (setpriv) inside their roots, which they open up.
    const tmp = path.join(os.tmpdir(), `rfs-w${slot}`)
    fs.mkdirSync(tmp, { recursive: true })
    fs.chmodSync(tmp, 0o755)
    for (;;) {
      const file = queue.shift()
      if (file === undefined || stopping) {
        try { fs.rmdirSync(tmp) } catch { /* not empty: a file left something; its check says what */ }
        return
      }
      results.push(await runFile(uvu, testDir, file, tmp, fileTimeoutS, running))
      const r = results[results.length - 1]
      process.stdout.write(`\n=== ${r.file} (${r.seconds.toFixed(1)} s, ${r.code === 0 ? 'passed' : 'FAILED'}; ${results.length}/${files.length} done, ${((Date.now() - started) / 1000).toFixed(0)} s since start)\n`)
      process.stdout.write(r.output)
    }
  }

  void Promise.all(Array.from({ length: jobs }, async (_x, i) => await worker(i + 1))).then(() => {
    const failed = results.filter((r) => r.code !== 0)
    const total = results.reduce((n, r) => n + r.tests, 0)
    const passed = results.reduce((n, r) => n + r.passed, 0)
    const skipped = results.reduce((n, r) => n + r.skipped, 0)
    const slowest = [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 8)
    console.log(`\n=== slowest: ${slowest.map((r) => `${r.file.replace(/\.test\.js$/, '')} ${r.seconds.toFixed(0)} s`).join(', ')}`)
    if (failed.length > 0) {
      console.log(`\n=== FAILED files (${failed.length}), their output again:`)
      for (const r of failed) process.stdout.write(`\n--- ${r.file} (exit ${r.code})\n${r.output}`)
    }
    const notRun = files.length - results.length
    console.log(`\n=== ${results.length - failed.length}/${files.length} files passed${notRun > 0 ? ` (${notRun} not run: stopped)` : ''}; tests: ${total} total, ${passed} passed, ${total - passed - skipped} failed, ${skipped} skipped; ${((Date.now() - started) / 1000).toFixed(0)} s`)
    process.exitCode = failed.length > 0 || notRun > 0 ? 1 : 0
  })
}

function weight (file: string): number {
  return KNOWN_SECONDS[file.replace(/\.test\.js$/, '')] ?? 20
}

async function runFile (uvu: string, testDir: string, file: string, tmp: string, timeoutS: number, running: Set<ChildProcess>): Promise<Result> {
  const t0 = Date.now()
  const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const child = spawn(process.execPath, [uvu, testDir, `^${escaped}$`], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  running.add(child)
  const chunks: Buffer[] = []
  child.stdout.on('data', (b: Buffer) => chunks.push(b))
  child.stderr.on('data', (b: Buffer) => chunks.push(b))
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.kill('SIGTERM')
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref()
  }, timeoutS * 1000)
  const code = await new Promise<number>((resolve) => {
    child.on('close', (c, sig) => resolve(c ?? (sig !== null ? 128 : 1)))
  })
  clearTimeout(timer)
  running.delete(child)
  let output = Buffer.concat(chunks).toString('utf8')
  if (timedOut) output += `\ntest runner: ${file} still running after ${timeoutS} s (REPLICAFS_TEST_FILE_TIMEOUT): stopped, counted as failed\n`
  const tests = summaryField(output, 'Total')
  const passed = summaryField(output, 'Passed')
  const skipped = summaryField(output, 'Skipped')
  // A file that exits 0 without a summary (or with no test) ran nothing, and a skipped test passes
  // nothing: both fail the file.
  const ok = code === 0 && !timedOut && tests > 0 && passed === tests && skipped === 0
  return { file, code: ok ? 0 : (code === 0 ? 1 : code), seconds: (Date.now() - t0) / 1000, output, tests, passed, skipped }
}

main()
