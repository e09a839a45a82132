/**
 * The daemons (one per role per host): src/daemon/primary.ts and src/daemon/secondary.ts, with
 * what they share in lifecycle.ts (start, stop, the mount watch) and host.ts (directories, locks,
 * the mount point), their snapshot commands (snapshots.ts) and the offline restore of a stopped
 * Secondary (restore.ts). The CLI starts them and reaches them here; its short commands (stop,
 * snapshot) take host.ts and restore.ts directly, so that they do not load the daemons.
 */
export { runPrimary, type PrimaryConfig } from './primary'
export { runSecondary, startPrimary, type SecondaryConfig } from './secondary'
export type { Logger, RunningDaemon } from './lifecycle'
export { alive, readDaemonInfo, mountEntry, type DaemonInfo } from './host'
export { restoreOffline, type OfflineRestoreResult } from './restore'
