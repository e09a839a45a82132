/**
 * Copy-on-write snapshots of a data directory (issue 5): see set.ts for the design, the store
 * layout in store.ts, views in view.ts, restore in restore.ts.
 */
export { SnapshotSet, type SnapshotSetOptions, type SnapshotInfo, type RestoreResult } from './set'
export { View as SnapshotView, type ViewStat } from './view'
export { type RestoreRecord } from './restore'
export { CHUNK_BYTES, SNAPSHOT_NAME_MAX, validateName as validateSnapshotName } from './store'
