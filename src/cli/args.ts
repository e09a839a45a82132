/** Argument parsing shared by the subcommands: strict flags, one-line errors, size suffixes. */
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ReplError } from '../errors'

export type FlagSpec = Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string, help: string, arg?: string }>

export type FlagValues = Record<string, string | boolean | string[] | undefined>

/**
 * Parses `argv` against `flags`. A command whose flags include `config` reads that TOML file
 * first (see loadConfig): its keys are the flags' names, and a flag given on the command line
 * overrides the file's value (a repeated flag's list replaces the file's list).
 */
export function parse (command: string, argv: string[], flags: FlagSpec, positionals = 0): { values: FlagValues, positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string }> = {}
  for (const [name, spec] of Object.entries(flags)) {
    options[name] = { type: spec.type, ...(spec.multiple === true ? { multiple: true } : {}), ...(spec.short !== undefined ? { short: spec.short } : {}) }
  }
  let res: { values: FlagValues, positionals: string[] }
  try {
    res = parseArgs({ args: argv, options, strict: true, allowPositionals: positionals > 0 }) as { values: FlagValues, positionals: string[] }
    if (res.positionals.length > positionals) throw new ReplError('USAGE', `replicafs ${command}: unexpected argument ${res.positionals[positionals]}`)
  } catch (err) {
    if (err instanceof ReplError) throw err
    const e = err as NodeJS.ErrnoException
    const m = /'(-[^']+)'/.exec(e.message)
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new ReplError('USAGE', `replicafs ${command}: unknown flag ${m ? m[1] : ''} (see replicafs ${command} --help)`)
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new ReplError('USAGE', `replicafs ${command}: ${e.message.split('\n')[0]}`)
    throw new ReplError('USAGE', `replicafs ${command}: ${e.message.split('\n')[0]}`)
  }
  const file = res.values.config
  if (flags.config === undefined || typeof file !== 'string' || res.values.help === true) return res
  const fromFile = loadConfig(command, file, flags)
  const values: FlagValues = { ...fromFile }
  for (const [k, v] of Object.entries(res.values)) if (v !== undefined) values[k] = v
  return { values, positionals: res.positionals }
}

/** Flags that name files or directories: relative paths in a config file are taken from its directory. */
const PATH_FLAGS = new Set(['data', 'mount', 'state', 'secret-file', 'task-dir', 'tls-cert', 'tls-key', 'tls-ca'])

/**
 * Reads a `--config` file: TOML (smol-toml; TOML because a daemon's settings are a flat table of
 * typed keys, with comments, and no indentation to get wrong), one key per flag of the command,
 * named as the flag (`srl-size = "256M"`, `secondary = ["b:7400", "c:7400"]`, `daemon = true`).
 * An unknown key, a value of the wrong type, `config` or `help` in the file: one line naming the
 * key and the file.
 */
export function loadConfig (command: string, file: string, flags: FlagSpec): FlagValues {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ReplError('USAGE', `replicafs ${command}: config file ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read: ${(err as Error).message}`}`)
  }
  let doc: Record<string, unknown>
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    doc = (require('smol-toml') as typeof import('smol-toml')).parse(text) as Record<string, unknown>
  } catch (err) {
    const e = err as Error & { line?: number, column?: number }
    const where = typeof e.line === 'number' ? ` line ${e.line}${typeof e.column === 'number' ? `, column ${e.column}` : ''}` : ''
    throw new ReplError('USAGE', `replicafs ${command}: config file ${file}${where}: ${e.message.split('\n')[0].replace(/^Invalid TOML document: /, '')}`)
  }
  const dir = path.dirname(path.resolve(file))
  const values: FlagValues = {}
  for (const [key, v] of Object.entries(doc)) {
    const spec = flags[key]
    const bad = (what: string): ReplError => new ReplError('USAGE', `replicafs ${command}: config file ${file}: ${key} must be ${what}`)
    if (spec === undefined || key === 'config' || key === 'help') {
      throw new ReplError('USAGE', `replicafs ${command}: config file ${file}: unknown key ${JSON.stringify(key)} (the keys are ${command}'s flags: see replicafs ${command} --help)`)
    }
    const str = (x: unknown): string => {
      if (typeof x === 'string') return PATH_FLAGS.has(key) && x !== '' ? path.resolve(dir, x) : x
      if (typeof x === 'number' && Number.isFinite(x)) return String(x)
      throw bad(spec.multiple === true ? 'a string or a list of strings' : 'a string')
    }
    if (spec.type === 'boolean') {
      if (typeof v !== 'boolean') throw bad('true or false')
      if (v) values[key] = true
    } else if (spec.multiple === true) {
      values[key] = Array.isArray(v) ? v.map(str) : [str(v)]
    } else {
      values[key] = str(v)
    }
  }
  return values
}

/** `--interval SECONDS` (default 1): a number of seconds above 0. */
export function intervalOf (command: string, values: Record<string, unknown>): number {
  const text = String(values.interval ?? '1')
  const interval = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text) || interval <= 0) throw new ReplError('USAGE', `replicafs ${command}: --interval must be a number of seconds above 0 (not ${text})`)
  return interval
}

export function required (command: string, values: Record<string, unknown>, name: string): string {
  const v = values[name]
  if (typeof v !== 'string' || v === '') throw new ReplError('USAGE', `replicafs ${command}: --${name} is required (see replicafs ${command} --help)`)
  return v
}

/** Parses sizes like 16M, 1G, 4096. */
export function parseSize (command: string, flag: string, text: string): number {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(text.trim())
  if (!m) throw new ReplError('USAGE', `replicafs ${command}: --${flag} ${text} is not a size (use e.g. 256M or 1G)`)
  const unit = (m[2] ?? '').toUpperCase()[0]
  const mult = unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : unit === 'T' ? 1024 ** 4 : 1
  return parseInt(m[1], 10) * mult
}

export function helpText (usage: string, summary: string, flags: FlagSpec): string {
  const rows = Object.entries(flags).map(([name, f]) => {
    const left = `  ${f.short !== undefined ? `-${f.short}, ` : ''}--${name}${f.type === 'string' ? ' ' + (f.arg ?? 'VALUE') : ''}`
    // A help text's own line breaks continue under its first line; a flag too long for the
    // column has its help start on the next line.
    const head = left.length < 30 ? left.padEnd(30) : left + '\n' + ' '.repeat(30)
    return head + f.help.split('\n').join('\n' + ' '.repeat(30))
  })
  return `usage: ${usage}\n\n${summary}\n\nflags:\n${rows.join('\n')}\n`
}
