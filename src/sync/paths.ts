/** Paths inside a data directory, from its root (`/`), as records and frames carry them. */

/** The path of `name` in directory `dir`. */
export const child = (dir: string, name: string): string => dir === '/' ? '/' + name : dir + '/' + name

/** The directory holding `p` (`/` for the root's entries). */
export const parentOf = (p: string): string => { const i = p.lastIndexOf('/'); return i <= 0 ? '/' : p.slice(0, i) }
