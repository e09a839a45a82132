/**
 * A Primary replicating to one or more Secondaries, each reached directly or through a test proxy
 * (test/helpers/proxy.ts), as a fixture for the tests of the SRL-full and several-Secondaries rules
 * (README.md "Replication"; docs/ARCHITECTURE.md "Release rules with RLINKs", "When the SRL is
 * full", "Pause and resume"). Also: `dd` writes through a mount run as child processes, so a write
 * that blocks (flow control) or fails (ENOSPC) never blocks the test runner, and what `dd` reports
 * says exactly which write(2) failed.
 */
import { exec, execOk, describeFailure, waitFor, type ExecResult } from './util'
import { cli, daemonLog, startPrimary, type Dirs, type Primary } from './primary'
import { startSecondary, primaryStatus, type PrimaryStatus, type RlinkStatus, type Secondary } from './secondary'
import { startProxy, type Proxy } from './proxy'

export interface MultiOptions {
  /** How many Secondaries (default 2). */
  count?: number
  /** Per Secondary: reach it through a proxy (default: directly). */
  via?: boolean[]
  /** The Primary's --srl-size (default 16M). */
  srlSize?: string
  /** The Secondaries' --srl-size (default 16M). */
  secondarySrlSize?: string
  primaryExtraArgs?: string[]
}

export interface Multi {
  /** The running Primary (replaced by restartPrimary()). */
  primary: Primary
  secondaries: Secondary[]
  /** Per Secondary, the proxy in front of it, or undefined. */
  proxies: Array<Proxy | undefined>
  /** The --secondary values given to the Primary, in order (rlinks[i].secondary). */
  targets: string[]
  srlSize: string
  status(): Promise<PrimaryStatus>
  /** Waits until the RLINKs `which` (default all) have data-acked everything the Primary logged. */
  caughtUp(which?: number[], timeoutMs?: number): Promise<PrimaryStatus>
  /** Starts the Primary again on its directories with the same flags (after primary.stop()). */
  restartPrimary(): Promise<Primary>
  /** Starts Secondary `i` again on its directories, address and secret (after its stop()). */
  restartSecondary(i: number): Promise<Secondary>
  /** Every daemon's daemon.log, for failure messages. */
  logs(): Promise<string>
  /** Stops the Primary, then every Secondary; closes the proxies. */
  stop(): Promise<void>
}

export function newestSeq (s: PrimaryStatus): number {
  return s.srl.newestSeq ?? s.srl.appliedSeq
}

function dirsOf (d: Dirs): Dirs {
  return { root: d.root, data: d.data, mount: d.mount, state: d.state }
}

/** Starts the Secondaries (sharing one secret), their proxies, then a Primary replicating to all. */
export async function startMulti (opts: MultiOptions = {}): Promise<Multi> {
  const count = opts.count ?? 2
  const srlSize = opts.srlSize ?? '16M'
  const secondaries: Secondary[] = []
  const proxies: Array<Proxy | undefined> = []
  const targets: string[] = []
  let primary: Primary
  try {
    for (let i = 0; i < count; i++) {
      const s = await startSecondary({ srlSize: opts.secondarySrlSize, secretFile: secondaries[0]?.secretFile })
      secondaries.push(s)
      const p = opts.via?.[i] === true ? await startProxy(s.address) : undefined
      proxies.push(p)
      targets.push(p?.address ?? s.address)
    }
    primary = await startPrimary({ srlSize, extraArgs: extraArgs() })
  } catch (err) {
    // stop what did start; the start's own error is the one reported
    for (const s of secondaries) await s.stop().catch(() => undefined)
    for (const p of proxies) await p?.close()
    throw err
  }
  function extraArgs (): string[] {
    return targets.flatMap((t) => ['--secondary', t]).concat(['--secret-file', secondaries[0].secretFile], opts.primaryExtraArgs ?? [])
  }
  const m: Multi = {
    primary,
    secondaries,
    proxies,
    targets,
    srlSize,
    status: async () => await primaryStatus(m.primary.state),
    async caughtUp (which, timeoutMs = 60_000) {
      const idx = which ?? targets.map((_t, i) => i)
      let last: PrimaryStatus | undefined
      try {
        return await waitFor(async () => {
          const st = last = await primaryStatus(m.primary.state)
          const newest = newestSeq(st)
          return idx.every((i) => st.rlinks[i].dataAckedSeq >= newest) ? st : undefined
        }, { timeoutMs, what: `RLINKs ${idx.join(', ')} to data-ack everything the Primary logged`, intervalMs: 100 })
      } catch (err) {
        throw new Error(`${(err as Error).message}\nlast status: ${JSON.stringify(last)}${await m.logs()}`)
      }
    },
    async restartPrimary () {
      m.primary = await startPrimary({ dirs: dirsOf(m.primary), srlSize, extraArgs: extraArgs() })
      return m.primary
    },
    async restartSecondary (i) {
      const old = secondaries[i]
      const s = await startSecondary({ dirs: dirsOf(old), listen: old.address, secretFile: old.secretFile, srlSize: opts.secondarySrlSize })
      if (s.address !== old.address) throw new Error(`Secondary ${i} came back on ${s.address}, not ${old.address}`)
      secondaries[i] = s
      return s
    },
    async logs () {
      const parts = [`\n--- primary daemon.log ---\n${await daemonLog(m.primary.state)}`]
      for (const [i, s] of secondaries.entries()) parts.push(`--- secondary ${i} (${targets[i]}) daemon.log ---\n${await daemonLog(s.state)}`)
      return parts.join('\n')
    },
    async stop () {
      const errors: string[] = []
      await m.primary.stop().catch((err: Error) => errors.push(err.message))
      for (const s of secondaries) await s.stop().catch((err: Error) => errors.push(err.message))
      for (const p of proxies) await p?.close()
      if (errors.length > 0) throw new Error(errors.join('\n'))
    }
  }
  return m
}

/**
 * Runs `fn` on a fresh startMulti(opts) and stops everything it started afterwards, pass or fail
 * (a failure of `fn` is the error reported; a failed stop after a passing body is one too). `fn`
 * may replace members of the Multi (a restarted Primary or Secondary): those are what is stopped.
 */
export async function withMulti (opts: MultiOptions, fn: (m: Multi) => Promise<void>): Promise<void> {
  const m = await startMulti(opts)
  let failed = true
  try {
    await fn(m)
    failed = false
  } finally {
    const stopped = m.stop()
    if (failed) await stopped.catch(() => undefined)
    else await stopped
  }
}

/** Waits until rlinks[i] satisfies `ok`; returns that status. The logs are in the timeout error. */
export async function waitRlink (m: Multi, i: number, ok: (l: RlinkStatus, st: PrimaryStatus) => boolean, what: string, timeoutMs = 30_000): Promise<PrimaryStatus> {
  let last: PrimaryStatus | undefined
  try {
    return await waitFor(async () => {
      const st = last = await m.status()
      return ok(st.rlinks[i], st) ? st : undefined
    }, { timeoutMs, what: `the RLINK to ${m.targets[i]} to be ${what}`, intervalMs: 100 })
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast status: ${JSON.stringify(last)}${await m.logs()}`)
  }
}

/** `replicafs pause|resume --state STATE [--secondary ADDR]`, which must exit 0. */
export async function pauseOrResume (verb: 'pause' | 'resume', state: string, secondary?: string): Promise<void> {
  const args = [verb, '--state', state]
  if (secondary !== undefined) args.push('--secondary', secondary)
  const r = await cli(args, { timeoutMs: 30_000 })
  if (r.code !== 0) throw new Error(describeFailure(r))
}

export interface DdResult {
  /** dd exited 0. */
  ok: boolean
  /** dd reported "No space left on device". */
  enospc: boolean
  /** Bytes dd reports it wrote (every write(2) that succeeded). */
  bytes: number
  /** Wall time of the dd run, in ms. */
  ms: number
  r: ExecResult
}

/**
 * Copies `src` to `dst` with dd, one write(2) of `bs` bytes per block (128 KiB: one maximal FUSE
 * write, so one SRL record each), in place (conv=notrunc) from block `seek` on. Never throws for
 * dd's exit status; throws if dd's report cannot be read.
 */
export async function ddWrite (src: string, dst: string, o: { bs?: number, count?: number, seek?: number, timeoutMs?: number } = {}): Promise<DdResult> {
  const args = [`if=${src}`, `of=${dst}`, `bs=${o.bs ?? 128 * 1024}`, 'conv=notrunc', 'iflag=fullblock']
  if (o.count !== undefined) args.push(`count=${o.count}`)
  if (o.seek !== undefined) args.push(`seek=${o.seek}`)
  const t0 = Date.now()
  const r = await exec('dd', args, { timeoutMs: o.timeoutMs ?? 60_000 })
  const ms = Date.now() - t0
  const m = /^(\d+) bytes/m.exec(r.stderr)
  if (m === null) throw new Error(`cannot read what dd wrote: ${describeFailure(r)}`)
  return { ok: r.code === 0, enospc: /No space left on device/.test(r.stderr), bytes: Number(m[1]), ms, r }
}

/** sha256 of a file, computed by a child process (it may be on a FUSE mount). */
export async function sha256Of (file: string): Promise<string> {
  const r = await execOk('sha256sum', [file], { timeoutMs: 60_000 })
  return r.stdout.split(' ')[0]
}
