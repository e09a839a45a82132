/** The heading of docs/PERFORMANCE.md's section written by bench/sync.ts (bench/results/sync.md). */
export const SYNC_HEADING = '## Synchronization and verify'
