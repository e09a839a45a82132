/**
 * Data generations (docs/ARCHITECTURE.md "Roles and generations"; the Generation key of
 * state.ts, HELLO.gen on the wire): made, checked when they arrive from a peer, and compared.
 */
import crypto from 'node:crypto'
import type { Generation } from './state'

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
