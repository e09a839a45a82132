/**
 * The SRL's LevelDB state (docs/FORMAT.md, "LevelDB state"): every key, and the JSON value each
 * holds. This is the one place a key is spelled; LogStore (src/srl/state.ts) stores them and takes
 * only these Key and Family objects, so a value always has its key's type.
 *
 *   format              FormatState     created with the SRL; `version` is the state format version
 *   boot                string          kernel boot id of the last completed recovery (kill -9 vs reboot)
 *   mounts              Mounts          the SRL's and data directory's mounts then (state format 3): kill -9 vs a lost page cache
 *   durable             Position        the ring's tail: records up to it are released (synced, and data-acked by every Secondary)
 *   synced              Position        last record whose effect the data directory has synced, the ring synced first (state format 3)
 *   last                LastRecord      the newest record's checksum, kept when a release empties the log
 *   rlink/<HOST:PORT>   RlinkPosition   Primary: what that Secondary data-acked, and whether it is paused
 *   dcm|<HOST:PORT>|<path> DcmMark     Primary: that RLINK's change map, while SRL overflow protection keeps one (state format 5)
 *   follow              Follow          Secondary: the Primary SRL it follows (set by its first Primary)
 *   generation          Generation      the data generation this host writes (Primary) or follows (Secondary), with its ancestors (state format 8)
 *   takenOver           TakenOver       an old Primary that learned another host took over from its generation: it refuses writes (state format 8)
 *   tookOver            TookOver        a Primary that was a Secondary until `replicafs takeover` (state format 8)
 *   dial                Dial            Secondary: it dials its Primary's listener, as JOIN `name` (made by `replicafs failback`; state format 9)
 *   demoted             Demoted         Secondary: it was the Primary until failback or migrate made it a Secondary (state format 9)
 *   migrating           Migrating       Primary: a migrate asked its Secondary to become the Primary and has not heard the answer (state format 9)
 *   failback            Failback        a failed-back host: in the old SRL (moved aside) from the start of `failback`; in the new one until its resynchronization ends (state format 9)
 *   baseline            Baseline        Primary: whether its data directory held a tree when the SRL was created (state format 4)
 *   sync                SyncState       Secondary: a full synchronization begun and not finished (state format 4)
 *   syncDone            SyncDone        Secondary: the last synchronization that finished here (state format 6)
 *   ibc/reg/<APP>       Registration    IBC registrations on this host
 *   ibc/unreg/<APP>     Unregistered    Secondary: names unregistered here (their messages are discarded)
 *   ibc/held            HeldMessage     Secondary: the IBC message the apply loop holds at, and its phase
 *   ibc/queue/<seq>     QueuedMessage   Secondary: --no-freeze messages waiting for `ibc receive`
 *
 * Every key is written with sync:true; none on the write path.
 */

/** A key and the type of its value. */
export interface Key<T> { readonly name: string, readonly valueType?: T }

/** Keys sharing a prefix, each named by an id after it. */
export interface Family<T> {
  readonly prefix: string
  key (id: string): Key<T>
}

function key<T> (name: string): Key<T> { return { name } }
function family<T> (prefix: string, idOf: (id: string) => string = (id) => id): Family<T> {
  return { prefix, key: (id) => ({ name: prefix + idOf(id) }) }
}

export const STATE_FORMAT_VERSION = 10
/**
 * Older state versions this build opens, upgrading them in place (1 -> 2: adds format.srlId;
 * 2 -> 3: the `synced` key, written from the next checkpoint on; 3 -> 4: the `baseline` and `sync`
 * keys, written when they first apply: an SRL of format 3 or older counts as created over an empty
 * data directory, as it had to be; 4 -> 5: `sync.c`, absent in a synchronization begun by
 * format 4, which was full: false; 7 -> 8: `generation`, made when a Primary first starts or a
 * Secondary first hears its Primary's; 8 -> 9: `dial`, `failback` and `rlink/join:<name>`, made
 * by failback and takeover; 9 -> 10: `clean`, written at the next clean stop).
 */
export const STATE_FORMAT_VERSIONS_READ = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]

/**
 * The unique mount ids (statx STATX_MNT_ID_UNIQUE; null before Linux 6.8) of the filesystems of the
 * SRL and of the data directory, when the last recovery completed. Another id means the filesystem
 * was unmounted since (ext4's shutdown ioctl and a remount, a detached disk): what its page cache
 * held is gone, as after a reboot.
 */
export interface Mounts { srl: string | null, data: string | null }

export interface FormatState {
  version: number
  ringBytes: number
  role: 'primary' | 'secondary'
  createdAt: string
  /** Random identity of this SRL (state version 2). A Secondary follows exactly one Primary SRL. */
  srlId?: string
}

/** A record's sequence number and the ring offset just after it. */
export interface Position { seq: number, offset: number }

export interface LastRecord { seq: number, crc: number }

/**
 * dcm (state format 5; missing: false): SRL overflow protection switched this RLINK to its change
 * map (`dcm|<HOST:PORT>|<path>`): the SRL keeps nothing for it, the map names every path changed
 * after `seq`, and the Secondary is resynchronized from the map when it is back.
 */
export interface RlinkPosition { seq: number, offset: number, paused: boolean, dcm?: boolean }

/**
 * A path in an RLINK's change map: t, everything below it too (a rename); c (state format 6;
 * absent: 0): put there by `verify --repair`, its chunks are compared even where its size and
 * mtime are the Primary's; f (state format 7; absent: 0): only a file's bytes and attributes
 * changed (no name), `s` the spans written as [start, end, start, end, ...] in order and apart,
 * `z` the smallest size it was truncated to (absent: none); it is sent as its changed parts.
 */
export interface DcmMark { t: 0 | 1, c?: 1, f?: 1, s?: number[], z?: number }

/**
 * A change-map entry as a resynchronization takes it (src/sync): everything below the path too
 * (`tree`), or, `parts` not null, only a file's changes: its spans written [start, end) in order
 * and apart, and the smallest size it was cut to (Infinity: none).
 */
export interface ChangeMark { tree: boolean, parts: { cut: number, spans: Array<[number, number]> } | null }

export interface Follow { srlId: string, rds: string }

/**
 * A data generation (state format 8; docs/ARCHITECTURE.md "Roles and generations"): the history
 * of writes one Primary at a time made. A Primary's first start makes one (`since` 0); a takeover
 * makes a new one that continues the old one's sequence numbers after `since`, the last record the
 * taking-over Secondary had (its parent, with that end, goes last in `history`). A Secondary keeps
 * its Primary's. `history`: every earlier generation of this line, oldest first, each with the
 * last sequence number it contributed.
 */
export interface Generation { id: string, since: number, history: Array<{ id: string, end: number }> }

/**
 * An old Primary told, by a peer that proved it knows the secret, that `by` took over from its
 * generation after sequence number `at`: from then on it refuses every change (EROFS) until
 * `replicafs failback` makes it that Primary's Secondary. `peer`: where it heard it; `seen`: when.
 */
/**
 * Both sides of a takeover changed paths after record `at`: `conflicting` (sorted, at most
 * SPLIT_LISTED of them; `conflicts` in all; null: a side's list was too long to compare, so they
 * may), and how many paths each side changed (null: too many to list). A split-brain when
 * `conflicts` is not 0.
 */
export interface SplitBrain { at: number, conflicting: string[], conflicts: number | null, ours: number | null, theirs: number | null, peer: string, seen: string }

export interface TakenOver {
  by: Generation
  at: number
  peer: string
  seen: string
  /** Heard on its own listener (the new Primary dials it): failed back, it listens. */
  listener?: boolean
  /** What both sides changed after `at`, as the new Primary and this host told each other (SPLIT, wire 7). */
  split?: SplitBrain
}

/**
 * `replicafs migrate` on a Primary, from the moment it asks its Secondary (`to`) to become the
 * Primary of generation `gen` after record `at` until it knows the answer (state format 9): while
 * it is there, every change is refused; a re-run of migrate finishes it.
 */
export interface Migrating { to: string, gen: string, at: number, time: string }

/**
 * A Secondary that became a Primary by `replicafs takeover`: written with format.role 'primary' and
 * the new generation in one batch. `at`: its last record then; `applied`: of those, how many were
 * logged but not yet applied when the takeover began (it applied them first); `from`: the generation
 * it followed (null if it never heard one); `time`: when. Its usual `replicafs secondary` command
 * starts it as the Primary from then on.
 */
export interface TookOver { at: number, applied: number, from: string | null, generation: string, time: string, migrated?: boolean }

/** A Secondary that was the Primary of generation `from` until failback or migrate (`how`) made it the Secondary of `by` after record `at` (state format 9). */
export interface Demoted { how: 'failback' | 'migrate', from: string, by: string, at: number, snapshot: string | null, time: string }

/** A Secondary that dials its Primary (state format 9): `address` HOST:PORT, JOIN `name`. */
export interface Dial { address: string, name: string }

/**
 * `replicafs failback` on a Primary another host took over from (state format 9): `from` its
 * generation (also the JOIN name), `by` the one that took over after record `at`, at `peer` (which
 * it dials; null: it listens, at its --listen address, for the new Primary to dial it);
 * `paths` it changed after `at` (path -> everything below it too; null: too many to list);
 * `snapshot` the snapshot keeping its tree as it was (its orphaned writes); `old`: where its old SRL
 * was moved (STATE/<old>); `time`: when it began. `migrated`: made by `replicafs migrate` (nothing
 * to resynchronize: no `failback` key in the new SRL, no snapshot).
 */
export interface Failback { from: string, by: Generation, at: number, peer: string | null, paths: Array<[string, boolean]> | null, snapshot: string | null, old: string, time: string, migrated?: boolean }

/**
 * What the Primary's data directory held when its SRL was created: 'data' (a tree the SRL does not
 * describe, so a new Secondary is synchronized in full) or 'empty'.
 */
export type Baseline = 'empty' | 'data'

/** A full synchronization in progress on a Secondary: its id, and the Primary's SRL id. */
/** c: every file's chunks are compared (state format 5; absent: false). */
/** snap (state format 5): the snapshot of the Secondary taken before it, deleted when it is done. */
export interface SyncState { id: string, srlId: string, startedAt: string, c?: boolean, snap?: string }

/**
 * The last synchronization that finished on a Secondary: its id, the sequence number its tree is
 * the Primary's after, and when. A Secondary synchronized at sequence number 0 (a Primary over a
 * tree, before its first record) has an SRL like a new one's; this says it is not new.
 */
export interface SyncDone { id: string, seq: number, at: string }

export interface StoredRegistration {
  key: string
  deliverTimeoutS: number
  registeredAt: string
  /** Made by `ibc run` for its flow: a daemon restart aborts it (the flow is gone). */
  task?: boolean
}

export interface Unregistered { at: string }

export type HeldPhase = 'unregistered' | 'delivering' | 'frozen'

export interface HeldMessage {
  seq: number
  app: string
  id: string
  /** The message, base64. */
  message: string
  noFreeze: boolean
  freezeTimeoutS: number
  phase: HeldPhase
  /** Absolute ms: when the current phase gives up (0: never). */
  deadline: number
}

export interface QueuedMessage {
  app: string
  id: string
  seq: number
  /** The message, base64. */
  message: string
  /** Absolute ms: when it is discarded unless received. */
  deadline: number
}

export const State = {
  format: key<FormatState>('format'),
  boot: key<string>('boot'),
  mounts: key<Mounts>('mounts'),
  durable: key<Position>('durable'),
  synced: key<Position>('synced'),
  last: key<LastRecord>('last'),
  /** Where the log ended at the last clean stop (state format 10); deleted by the next open. */
  clean: key<Position>('clean'),
  rlink: family<RlinkPosition>('rlink/'),
  /** One RLINK's change map (DCM), by path. */
  dcm: (address: string) => family<DcmMark>(`dcm|${address}|`),
  follow: key<Follow>('follow'),
  generation: key<Generation>('generation'),
  takenOver: key<TakenOver>('takenOver'),
  tookOver: key<TookOver>('tookOver'),
  dial: key<Dial>('dial'),
  failback: key<Failback>('failback'),
  migrating: key<Migrating>('migrating'),
  demoted: key<Demoted>('demoted'),
  baseline: key<Baseline>('baseline'),
  sync: key<SyncState>('sync'),
  syncDone: key<SyncDone>('syncDone'),
  ibcRegistered: family<StoredRegistration>('ibc/reg/'),
  ibcUnregistered: family<Unregistered>('ibc/unreg/'),
  ibcHeld: key<HeldMessage>('ibc/held'),
  /** Ids are sequence numbers, zero-padded to 16 digits so the keys sort in sequence order. */
  ibcQueue: family<QueuedMessage>('ibc/queue/', (seq) => seq.padStart(16, '0'))
} as const
