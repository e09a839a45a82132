/** Argument parsing shared by the subcommands: strict flags, one-line errors, size suffixes. */
import { parseArgs } from 'node:util'
import { ReplError } from '../errors'

export type FlagSpec = Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string, help: string, arg?: string }>

export function parse (command: string, argv: string[], flags: FlagSpec, positionals = 0): { values: Record<string, string | boolean | string[] | undefined>, positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string }> = {}
  for (const [name, spec] of Object.entries(flags)) {
    options[name] = { type: spec.type, ...(spec.multiple === true ? { multiple: true } : {}), ...(spec.short !== undefined ? { short: spec.short } : {}) }
  }
  try {
    const res = parseArgs({ args: argv, options, strict: true, allowPositionals: positionals > 0 })
    if (res.positionals.length > positionals) throw new ReplError('USAGE', `replicafs ${command}: unexpected argument ${res.positionals[positionals]}`)
    return { values: res.values as Record<string, string | boolean | string[] | undefined>, positionals: res.positionals }
  } catch (err) {
    if (err instanceof ReplError) throw err
    const e = err as NodeJS.ErrnoException
    const m = /'(-[^']+)'/.exec(e.message)
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new ReplError('USAGE', `replicafs ${command}: unknown flag ${m ? m[1] : ''} (see replicafs ${command} --help)`)
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new ReplError('USAGE', `replicafs ${command}: ${e.message.split('\n')[0]}`)
    throw new ReplError('USAGE', `replicafs ${command}: ${e.message.split('\n')[0]}`)
  }
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
    // A help text's own line breaks continue under its first line.
    return left.padEnd(30) + f.help.split('\n').join('\n' + ' '.repeat(30))
  })
  return `usage: ${usage}\n\n${summary}\n\nflags:\n${rows.join('\n')}\n`
}
