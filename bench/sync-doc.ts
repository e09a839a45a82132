/** The heading of docs/PERFORMANCE.md's section written by bench/sync.ts (bench/results/sync.md). */
export const SYNC_HEADING = '## Synchronization and verify'
/** The heading of the CLI start-up bench's section (bench/cli-startup.ts, bench/results/cli-startup.md). */
export const CLI_HEADING = '## CLI start-up'
/** The heading of the libfuse 3 low-level transport bench's section (bench/ll.ts, bench/results/ll.md). */
export const LL_HEADING = '## libfuse 3 low-level transport (issue 14): reads'
