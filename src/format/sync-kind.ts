/**
 * What a synchronization of each mode ('full', 'diff', 'map': src/sync/source.ts SyncProgress.mode)
 * is called in logs and status: one home for the words the Primary's log, `status` and
 * `status --watch` share (the CLI takes it from here without loading the RLINK).
 */
export function syncKind (mode: string | undefined): string {
  return mode === 'map' ? 'resynchronization from the change map' : mode === 'diff' ? 'synchronization by difference' : 'full synchronization'
}
