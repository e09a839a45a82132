/**
 * Data generations (docs/ARCHITECTURE.md "Roles and generations"; the Generation key of
 * state.ts, HELLO.gen on the wire): made, checked when they arrive from a peer, and compared.
 */
import crypto from 'node:crypto'
import type { Generation, SplitBrain } from './state'

/** Generations kept in a history: older ones are dropped (a line of takeovers this long is not a history anyone compares against). */
export const GENERATION_HISTORY_MAX = 64

/** The first generation of a Primary: its history is empty and it begins before record 1. */
export function firstGeneration (): Generation {
  return { id: crypto.randomUUID(), since: 0, history: [] }
}

/** The generation a takeover makes: it continues `prev` after record `at`, the last one the new Primary has. */
export function takeoverGeneration (prev: Generation | null, at: number): Generation {
  const history = prev === null ? [] : [...prev.history, { id: prev.id, end: at }]
  return { id: crypto.randomUUID(), since: at, history: history.slice(-GENERATION_HISTORY_MAX) }
}

/** A generation from a peer, checked field by field; null if malformed. */
export function checkGeneration (g: unknown): Generation | null {
  if (typeof g !== 'object' || g === null) return null
  const { id, since, history } = g as Record<string, unknown>
  if (typeof id !== 'string' || id.length === 0 || id.length > 64) return null
  if (!Number.isSafeInteger(since) || (since as number) < 0) return null
  if (!Array.isArray(history) || history.length > GENERATION_HISTORY_MAX) return null
  const out: Generation['history'] = []
  for (const h of history) {
    if (typeof h !== 'object' || h === null) return null
    const e = h as Record<string, unknown>
    if (typeof e.id !== 'string' || e.id.length === 0 || e.id.length > 64 || !Number.isSafeInteger(e.end) || (e.end as number) < 0) return null
    out.push({ id: e.id, end: e.end as number })
  }
  return { id, since: since as number, history: out }
}

/**
 * Where `later` left the line of `earlier`: the last sequence number `earlier`'s generation
 * contributed before a takeover, if `earlier` is an ancestor of `later`; else null.
 */
export function takenOverAt (later: Generation, earlier: Generation): number | null {
  const h = later.history.find((e) => e.id === earlier.id)
  return h === undefined ? null : h.end
}

/** A short name for logs: the first 8 characters of its id. */
export function shortGeneration (g: Generation | string): string {
  return (typeof g === 'string' ? g : g.id).slice(0, 8)
}

/**
 * The paths changed on both sides of a divergence: `a` and `b` map a path to whether everything
 * below it changed too. A path conflicts when the other side changed it, or a directory above it
 * whole (a rename, a removal of a tree). Sorted.
 */
export function conflictingPaths (a: Array<[string, boolean]>, b: Array<[string, boolean]>): string[] {
  const out = new Set<string>()
  const within = (p: string, trees: string[]): boolean => trees.some((t) => t === '/' || p === t || p.startsWith(t + '/'))
  const bSet = new Set(b.map(([p]) => p))
  const aTrees = a.filter(([, t]) => t).map(([p]) => p)
  const bTrees = b.filter(([, t]) => t).map(([p]) => p)
  for (const [p] of a) if (bSet.has(p) || within(p, bTrees)) out.add(p)
  for (const [p] of b) if (within(p, aTrees)) out.add(p)
  return [...out].sort()
}

/** A path list sent on the wire (SPLIT, CHALLENGE.failback): at most this many bytes of paths, else null (too many to list). */
export const PATH_LIST_BYTES_MAX = 4 * 1024 * 1024

/** `paths` as a wire list, or null when it is too long (or unknown). */
export function pathList (paths: Map<string, boolean> | null): Array<[string, boolean]> | null {
  if (paths === null) return null
  let bytes = 0
  for (const p of paths.keys()) { bytes += Buffer.byteLength(p) + 8; if (bytes > PATH_LIST_BYTES_MAX) return null }
  return [...paths]
}

export type { SplitBrain }

/** Conflicting paths kept in status and logs (the count is exact). */
export const SPLIT_LISTED = 1000

export function splitBrain (at: number, ours: Array<[string, boolean]> | null, theirs: Array<[string, boolean]> | null, peer: string): SplitBrain {
  const both = ours !== null && theirs !== null ? conflictingPaths(ours, theirs) : null
  const unknown = (ours === null && (theirs === null || theirs.length > 0)) || (theirs === null && (ours === null || ours.length > 0))
  return {
    at,
    conflicting: both === null ? [] : both.slice(0, SPLIT_LISTED),
    conflicts: both !== null ? both.length : unknown ? null : 0,
    ours: ours?.length ?? null,
    theirs: theirs?.length ?? null,
    peer,
    seen: new Date().toISOString()
  }
}

/** A path list from a peer: [[path, tree], ...] or null; undefined if malformed. */
export function checkPathList (v: unknown): Array<[string, boolean]> | null | undefined {
  if (v === null) return null
  if (!Array.isArray(v)) return undefined
  for (const p of v) if (!Array.isArray(p) || typeof p[0] !== 'string' || typeof p[1] !== 'boolean') return undefined
  return v as Array<[string, boolean]>
}
