/**
 * Every bound in replicafs, with its unit last in the name and the reason it exists.
 * Relationships between limits are asserted when this module loads, so a bad edit
 * fails at startup instead of deep in the write path.
 */
import assert from 'node:assert'

/**
 * The largest write the kernel hands a libfuse 2 server with big_writes (32 pages): the compat
 * transport's (fuse-native), and the largest WRITE record of SRL record format versions 1 and 2.
 */
export const FUSE_WRITE_BYTES_MAX = 128 * 1024

/**
 * The largest write the journaled libfuse 3 transport asks the kernel for (max_write, max_pages
 * 256): a WRITE record's data bound in record format version 3. One record per FUSE write, so 8x
 * fewer requests, records and apply jobs per byte than at 128 KiB (docs/PERFORMANCE.md).
 */
export const LL_WRITE_BYTES_MAX = 1024 * 1024

/** The largest WRITE record's data (record format version 3; versions 1 and 2: FUSE_WRITE_BYTES_MAX). */
export const RECORD_DATA_BYTES_MAX = LL_WRITE_BYTES_MAX

/** Fixed SRL record header: magic, version, type, sequence, lengths, checksum. See docs/FORMAT.md. */
export const RECORD_HEADER_BYTES = 32

/** Upper bound on a record's msgpack metadata (paths are at most PATH_MAX, xattr values at most 64 KiB). */
export const RECORD_META_BYTES_MAX = 4096 + 4096 + 64 * 1024 + 512

/** The largest record the SRL accepts: one maximal write plus the largest metadata. */
export const RECORD_BYTES_MAX = RECORD_HEADER_BYTES + RECORD_META_BYTES_MAX + RECORD_DATA_BYTES_MAX

/** Default SRL size. VVR sizes the SRL for the write burst a Secondary outage must absorb. */
export const SRL_BYTES_DEFAULT = 256 * 1024 * 1024

/**
 * The smallest SRL accepted: room for a few maximal records and many ordinary ones (a 4 KiB write
 * takes 4.1 KiB), so a full log is a policy event, not a fragment.
 */
export const SRL_BYTES_MIN = 4 * 1024 * 1024

/** The largest SRL accepted (the ring is one preallocated file). */
export const SRL_BYTES_MAX = 64 * 1024 * 1024 * 1024

/** Bytes of the ring zero-filled per write call while preallocating. */
export const SRL_PREALLOCATE_CHUNK_BYTES = 1024 * 1024

/**
 * Records up to this size are stored into a shared mapping of the ring (a memcpy), larger ones
 * with pwritev. Measured on journaled ext4 after an fdatasync (so every page takes its write
 * fault, as it does after each group commit): 1,100-byte records cost 0.9 us mapped against
 * 1.8 us by pwrite; at 4,200 bytes the two are even (2.8 us); at 10 KiB the mapping costs 6.6 us
 * against 4.0, because each page's first store after a sync is a write fault (about 2.7 us).
 */
export const RING_MAPPED_RECORD_BYTES_MAX = 2048

/**
 * How often the Primary syncs the data directory and releases applied records from the SRL when
 * the ring is not filling. With no Secondary, a checkpoint only frees ring space (the fill trigger
 * below covers a busy log), and each one forces a journal commit of the data filesystem, so it is
 * rare. It also bounds how far back replay starts after a reboot.
 */
export const CHECKPOINT_INTERVAL_MS = 30_000

/**
 * The SRL is fdatasync'd at least this often while records are unsynced. fsync on a file syncs at
 * once; this bounds what a power loss can take from writers that never fsync, and covers
 * `sync`/`syncfs` on the mount, which the kernel does not forward to a libfuse 2 server.
 */
export const SRL_SYNC_INTERVAL_MS = 1000

/** Ring fill fraction (in percent) past which a checkpoint runs at once to free space. */
export const CHECKPOINT_FILL_PERCENT = 50

/** How long `--daemon` waits for the daemon to report ready before giving up. */
export const DAEMON_READY_TIMEOUT_MS = 60_000

/** How long `stop` waits for the daemon to exit after asking it to. */
export const STOP_TIMEOUT_MS = 30_000


/** Largest RLINK frame body: one batch of updates (several maximal records) plus framing. */
export const WIRE_FRAME_BYTES_MAX = 8 * 1024 * 1024

/** A batch of updates is cut at this many bytes of records, so acks and pings are never stuck behind a huge frame. */
export const RLINK_BATCH_BYTES_MAX = 1024 * 1024

/**
 * Frames an RLINK queues in its own outbox (being compressed, or held by --bandwidth-limit)
 * before `send` says wait: enough for the thread pool to compress several batches at once.
 */
export const RLINK_OUTBOX_BYTES = 4 * 1024 * 1024

/** Full synchronization (src/sync/): bytes of a file per SYNC_DATA frame. */
export const SYNC_CHUNK_BYTES = 256 * 1024

/**
 * A Secondary comparing every file's chunks (--sync-existing) hashes up to this many files ahead of
 * the frame being applied, so that its disk has several reads to do at once.
 */
export const SYNC_HASH_AHEAD = 8

/**
 * The Primary of such a synchronization hashes its own copy of the files whose entries went, this
 * many at once on libuv's pool (while the Secondary hashes its copy; the pool's other threads stay
 * for the SRL's fdatasync): a file that matches is then never read on the event loop.
 */
export const SYNC_PRIMARY_HASHING = 2

/** Synchronization by difference: chunk hashes per SYNC_SUMS frame (1 MiB of hashes, 16 GiB of file). */
export const SYNC_SUMS_PER_FRAME = 65536

/**
 * Names per SYNC_DIR frame: a directory with more is closed by several (wire version 4). At most
 * 255 bytes a name, 4 MiB of names: half of WIRE_FRAME_BYTES_MAX.
 */
export const SYNC_DIR_NAMES_MAX = 16384

/** Full synchronization: SYNC_* frames sent and not yet applied by the Secondary (SYNC_ACK). */
export const SYNC_WINDOW_FRAMES = 32

/**
 * Online verify (src/sync/verify.ts): a file's chunk hashes cover SYNC_CHUNK_BYTES each, doubled
 * until a file has at most this many (1 MiB of hashes: a file of up to 16 GiB at 256 KiB chunks).
 */
export const VERIFY_CHUNKS_MAX = 65536
/** Entries per VERIFY_ENTRIES frame, and the hash bytes that end one early. */
export const VERIFY_FRAME_ENTRIES = 2048
export const VERIFY_FRAME_HASH_BYTES = 2 * 1024 * 1024
/** VERIFY_ENTRIES frames the Secondary sends ahead of the Primary's comparison (VERIFY_ACK). */
export const VERIFY_WINDOW_FRAMES = 8
/** A tree walk of verify reads and hashes for this long, then lets the event loop (FUSE, the RLINK) run. */
export const VERIFY_SLICE_MS = 10

/** Updates sent but not yet network-acked, per RLINK: the pipeline depth (VVR's send window). */
export const RLINK_WINDOW_BYTES = 8 * 1024 * 1024
export const RLINK_WINDOW_UPDATES = 16384

/** Ping interval on an idle RLINK, and how long without any frame before the link is declared dead. */
export const RLINK_PING_INTERVAL_MS = 1000
export const RLINK_DEAD_AFTER_MS = 10_000

/** Handshake deadline: a peer that does not complete it in time is dropped. */
export const RLINK_HANDSHAKE_TIMEOUT_MS = 10_000

/**
 * Connections a listener holds in their handshake at once (not yet authenticated); another is
 * closed at once, so a port scanner or a slow-loris client cannot pile up sockets. Each holds its
 * place at most RLINK_HANDSHAKE_TIMEOUT_MS. A Secondary has one Primary, a Primary's listener a
 * few returning hosts: 8 is room for retries.
 */
export const RLINK_HANDSHAKES_MAX = 8
/** How often a listener says how many connections it closed for RLINK_HANDSHAKES_MAX. */
export const RLINK_LIMIT_LOG_INTERVAL_MS = 10_000

/** Reconnect backoff after a failed or lost RLINK: doubles from MIN up to MAX. */
export const RLINK_RECONNECT_MIN_MS = 100
export const RLINK_RECONNECT_MAX_MS = 2000

/** The Secondary applies at most this long per turn before letting FUSE readers in. */
export const SECONDARY_APPLY_SLICE_MS = 10

/**
 * A Secondary whose data directory has no room for the next record (ENOSPC, EDQUOT) stops applying,
 * holds the updates in its SRL and tries that record again this often, until space is freed.
 */
export const SECONDARY_FULL_RETRY_MS = 1000

/** Longest secret file accepted (it is a shared passphrase, not data). */
export const SECRET_BYTES_MAX = 4096

/** IBC application names: at most 31 bytes (VVR's NAME_SZ is 32 with the terminating NUL). */
export const IBC_NAME_BYTES_MAX = 31

/** IBC registrations per RVG (VVR's limit). */
export const IBC_REGISTRATIONS_MAX = 32

/** Largest IBC message: it travels in one SRL record's metadata. */
export const IBC_MESSAGE_BYTES_MAX = 64 * 1024

/**
 * Control-socket request size bound: commands are small JSON objects, the largest an `ibc send`
 * carrying a whole IBC message in base64 (4 bytes per 3) with room for the rest of the request.
 */
export const CONTROL_REQUEST_BYTES_MAX = Math.ceil(IBC_MESSAGE_BYTES_MAX / 3) * 4 + 16 * 1024

/**
 * Default deliver timeout, in seconds (VVR's vxibc default): how long a Secondary holds a message
 * for a registered name before discarding it if nobody receives it. Also how long it holds one
 * for a name that is not registered at all (then replication goes on without it).
 */
export const IBC_DELIVER_TIMEOUT_DEFAULT_S = 600

/** An `ibc run` script that runs longer than this is killed and fails the flow. */
export const IBC_SCRIPT_TIMEOUT_MS = 10 * 60 * 1000

/** Output kept from an `ibc run` script (stdout and stderr), the last bytes. */
export const IBC_SCRIPT_OUTPUT_BYTES_MAX = 64 * 1024

/** How long `ibc receive` waits by default (0: forever). */
export const IBC_RECEIVE_TIMEOUT_DEFAULT_S = 0

assert(WIRE_FRAME_BYTES_MAX >= RLINK_BATCH_BYTES_MAX + 2 * RECORD_BYTES_MAX + 1024, 'a batch cut after one record past its bound, plus one more, fits a frame')
assert(SRL_BYTES_MIN >= 3 * RECORD_BYTES_MAX, 'the smallest SRL must hold several maximal records')
assert(RECORD_DATA_BYTES_MAX >= FUSE_WRITE_BYTES_MAX && LL_WRITE_BYTES_MAX <= RECORD_DATA_BYTES_MAX, 'a FUSE write on either transport is one record')
assert(SRL_BYTES_DEFAULT >= SRL_BYTES_MIN && SRL_BYTES_DEFAULT <= SRL_BYTES_MAX)
assert(SRL_BYTES_MIN % SRL_PREALLOCATE_CHUNK_BYTES === 0)
assert(CHECKPOINT_FILL_PERCENT > 0 && CHECKPOINT_FILL_PERCENT < 100)

/**
 * The Primary answers a write once it is in the SRL and applies it to the data directory after
 * (src/rvg/primary.ts). Past this many answered-but-unapplied bytes, writers wait: it bounds how
 * far the data directory is behind, and so how long a stat or read of a file just written, or a
 * namespace change (new writes wait behind it), waits for the queue to drain.
 */
export const APPLY_QUEUE_BYTES_MAX = 4 * 1024 * 1024

/**
 * A write of at most this many bytes, with no write queued ahead of it, is applied before its reply
 * (one pwrite from the FUSE buffer, as a bare passthrough does) instead of queued: queuing costs
 * more than the copy (an fstat for the inode, the apply queue, a copy_file_range, a barrier for
 * the next change). Small files are written this way (create, untar), big writes are not.
 */
export const APPLY_BEFORE_REPLY_BYTES_MAX = 2048

/**
 * Free space on the data directory's filesystem (as root sees it: the daemon applies as root) below
 * which the Primary applies every write before its reply, small ones too, after reserving its range
 * (src/rvg/primary.ts writeReserved): a write cut short by a full disk would leave bytes no record
 * describes. Above it, small writes are applied directly (a full disk then fails them whole, and
 * they are voided) and larger ones reserve their range when they are answered.
 */
export const DATA_SPACE_RESERVE_BYTES = 16 * 1024 * 1024

/**
 * How old a measurement of the data filesystem's free space may be while the space is above
 * DATA_SPACE_RESERVE_BYTES: the Primary's own writes are counted as they come, so this only bounds
 * how long it takes to notice space taken or freed by others. Below the reserve it measures at
 * every write.
 */
export const DATA_SPACE_CHECK_MS = 100

/** Writes applied per threadpool round trip, at most (in bytes; a batch holds at least one write). */
export const APPLY_BATCH_BYTES_MAX = 1024 * 1024

/**
 * A batch of writes this small is applied on the event loop rather than the threadpool: a round
 * trip to the threadpool costs more than copying a few pages. (It blocks the loop for as long as
 * the copy takes, as any synchronous write would, on a data disk that throttles dirty pages.)
 */
export const APPLY_INLINE_BYTES_MAX = 64 * 1024

/**
 * libfuse 2's default attribute and entry timeout on the Primary's mount is 1 s: a change the daemon
 * makes without the kernel (a snapshot restore; a snapshot deleted and re-created under its name)
 * could show old attributes through the mount for that long, so the daemon waits this long after
 * one before it answers (src/daemon/snapshots.ts).
 */
export const KERNEL_ATTR_CACHE_WAIT_MS = 1100

/**
 * `ibc run`: how long the Primary waits, by default, for each Secondary to be frozen at the
 * message before the flow fails (`--timeout`; also what a Secondary assumes when a TASK step does
 * not say).
 */
export const IBC_RUN_FREEZE_TIMEOUT_DEFAULT_S = 120

/** Snapshots (src/snapshot): copy-on-write granularity; the first change to any byte of a chunk preserves the whole chunk. */
export const SNAPSHOT_CHUNK_BYTES = 64 * 1024

/** Snapshot names: as IBC names, plus length (a directory name in the store). */
export const SNAPSHOT_NAME_BYTES_MAX = 64

/** Most inodes remembered as created after the latest snapshot; beyond it they count as old (safe, wasteful). */
export const SNAPSHOT_BORN_INODES_MAX = 1_000_000

/** Positive "the latest snapshot has this item" cache entries before the cache is dropped. */
export const SNAPSHOT_HAS_CACHE_ENTRIES_MAX = 1_000_000

/** Parsed items (attributes, listing entries) kept in memory for views, counted in entries. */
export const SNAPSHOT_VIEW_CACHE_ENTRIES_MAX = 500_000

/** Cached O_WRONLY descriptors of the apply (src/apply): one per recently written file. */
export const APPLY_FD_CACHE_MAX = 64

assert(SNAPSHOT_CHUNK_BYTES % 4096 === 0, 'a snapshot chunk is whole pages')
assert(SNAPSHOT_NAME_BYTES_MAX < 255, 'a snapshot name is a directory name')
assert(KERNEL_ATTR_CACHE_WAIT_MS > 1000, 'longer than libfuse\'s 1 s attribute timeout')
assert(DATA_SPACE_RESERVE_BYTES > APPLY_BEFORE_REPLY_BYTES_MAX * 64, 'the reserve covers many small writes between two measurements')
assert(DATA_SPACE_CHECK_MS > 0 && DATA_SPACE_CHECK_MS < 1000)
assert(SECONDARY_FULL_RETRY_MS >= 100, 'a full Secondary retries, it does not spin')

/**
 * The data cursor's tail (src/format/data-cursor.ts) is kept under this many bytes: past it, the
 * SRL is fdatasync'd at once (which empties the tail). One ext4 xattr block holds about 4,000
 * bytes of value; a namespace record is 50 to 300 bytes.
 */
export const DATA_CURSOR_TAIL_BYTES_MAX = 3072

/**
 * Overflow slots of the data cursor's tail (src/apply/data-cursor.ts): files in the SRL's directory
 * when it is on the data directory's filesystem, each open while the daemon runs. 128 slots of
 * 3 KiB hold 6,000 to 12,000 records: twice what untar appends in SRL_SYNC_INTERVAL_MS, so the
 * SRL's own sync keeps ahead and the tail forces none.
 */
export const DATA_CURSOR_SLOTS = 128
