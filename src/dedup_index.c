/*
 * dedup_index.c
 *     Exact deduplication of ad events: a two-tier shared-memory index of the
 *     event ids seen within the dedup horizon, made durable by, and checked
 *     against, adstream.dedup_log.
 *
 * The hot tier is a hash of whole ids (source, 16-byte event id), each with
 * the transaction that claimed it, its event-time hour and its segment (see
 * below).  It holds every claim that is not settled yet and the most
 * recently committed ids.  A batch claims its candidate ids under the lock
 * of their part (below) and judges what it finds there the way a unique
 * index judges a heap tuple:
 *   - an entry whose transaction committed (or is frozen): a duplicate;
 *   - an entry whose transaction is still running (another worker's batch
 *     holds the same id): a duplicate provided that transaction commits.
 *     The batch goes on without waiting and remembers the transaction
 *     (held_by); ads_dedup_confirm(), before the batch writes what other
 *     batches also write (and so before it commits), fails the batch (to be
 *     retried) if one of them rolled back, and for each still running
 *     either waits for it to end (a re-drive, a rewind's replay) or hands
 *     it back to the batch, which sets aside the events whose ids it holds
 *     (adstream.set_aside: judged again by a later batch).  So a batch
 *     commits a duplicate only once the claim it is a duplicate of has
 *     committed: the outcome is the one waiting at the claim would give,
 *     but a worker does not stop for another's batch (issue #12: with 4
 *     workers 25-30% of their time went to waits at the claim, and 5% still
 *     to waits at the confirm).  A claim withdrawn because its id was found
 *     on disk (below) leaves the same verdict: its batch commits the id as a
 *     duplicate, and so does this one;
 *   - no entry, or one whose transaction aborted: not in the hot tier; the
 *     filter tier decides (below), and meanwhile the batch claims the id.
 * A batch claims without waiting, but no longer in one step: part by part
 * (below), so two batches may each find an id the other holds.  An ordinary
 * batch never waits at its confirm (it sets the events aside), so it is in
 * no cycle.  A re-drive or a rewind's replay waits there in
 * XactLockTableWait, a wait for the other's transaction lock in the lock
 * manager, so a cycle among those (or through row locks) is a lock-manager
 * cycle: the deadlock detector ends it after deadlock_timeout with an error
 * in one batch, which is retried (a re-drive is tried again within a
 * second), and the others go on.
 *
 * Parts.  The index is split by id into NPARTS (64) parts, each with its own
 * LWLock (one tranche, "adstream dedup index", so one wait event), its hot
 * entries (one dynahash table partitioned the way the lock manager's is:
 * each part's buckets and free lists, the elements shared), its ring of
 * settled entries and its share of the filter's buckets.  An id's part is
 * the low 6 bits of its 64-bit hash; within the part the filter bucket is
 * taken from bits 6..44, and the fingerprint from the top 19 bits, so
 * neither is constant within a part.  A batch hashes its ids, groups them
 * by part, chooses the segment of each of its hours under the index-wide
 * lock (which guards the segments and the index's identity and readiness,
 * nothing per id), then claims part by part, taking each part's lock in
 * part order from a first part drawn per walk (wrapping around, so that two
 * workers claiming at once do not follow each other from part to part) and
 * never two at once; it withdraws and settles part by part the same way.  An id's hot entry and its slot are in the same part, so
 * every statement below that says "under the lock" holds for the id's
 * part.  What takes every lock (index-wide, then the parts in order) is
 * rare: a rebuild, expiry's forget, a rewind's forget.  Why 64: one lock
 * is held about 0.2-0.3 us per id, so it saturates at 3-5 M ids/s; 64
 * cores' workers (about 0.5 M events/s each) would claim some 27 M ids/s,
 * 0.4 M/s a part with 64 parts (8-14% of one lock's time) against 1.7 M/s
 * with 16 (34-56%: queues).  A part costs a padded struct, a lock and, for
 * small settings, a few spare buckets; a batch of 500 ids touches most
 * parts once each at claim and at settle.
 *
 * The filter tier holds every other remembered id as a 32-bit slot of one
 * cuckoo filter (two candidate buckets of four slots per id): a fingerprint
 * of the id (19 bits) and a segment tag (13 bits).  A segment is a numbered
 * part of one source's event-time hour, at most about SEGMENT_IDS ids; its
 * number is written with the ids in every dedup_log row (dedup_log.seg).
 * The filter never forgets a remembered id (no false negative), but may say
 * "maybe" for an id it has never seen (a false positive, about 1 in 70,000
 * lookups at full load).  An id the filter says nothing about is new.  For
 * a "maybe", the claim stands provisionally, and once the index lock is
 * released the batch reads the dedup_log rows of each segment named by the
 * matching slots (one source, one hour, one segment: at most a few rows, the
 * ids of each in id order) in a snapshot taken after it saw the slot, and
 * binary-searches them.  An id found there is a duplicate, and its claim is
 * withdrawn.  The disk is the truth: a slot is only a hint of where to look.
 *
 * An id moves from the hot tier to the filter only once its claim is settled
 * as committed: then its dedup_log row is durable and visible to every later
 * snapshot.  Moving happens under the lock of the id's part, which every
 * claim of the id takes, so an id committed is at every moment in one tier
 * or the other.  Settled entries are recorded in
 * the order they were settled (a ring); while the hot tier holds more than
 * half its capacity, the settling backend moves the oldest to the filter,
 * about as many as it settled, so the newest half stays whole (recent
 * duplicates, the common ones, never reach the disk).  Each part has its
 * own ring and does this against its share of the hot tier.
 *
 * Durability: the batch transaction appends the claimed ids, one row per
 * event-time hour (and segment), to adstream.dedup_log (partitioned by that
 * hour).  The index is in shared memory, so after a crash restart it is
 * empty; the first ad-events worker to start rebuilds it from dedup_log
 * (every committed id goes to the filter) before any id is judged (every
 * batch checks), and every other worker waits for that.
 *
 * Settling: the backend remembers the entries its batch claimed.  When the
 * transaction has ended it freezes them (committed) or removes them
 * (aborted), and a worker that exits in the middle of a batch does the same
 * on its way out.  So no entry outlives its claimer unsettled, and an
 * entry's transaction status is only ever asked while clog surely holds it
 * (clog may be truncated long before the hour expires; an abandoned claim
 * judged then would count as committed and lose the event).  The filter
 * holds only settled, committed ids: it has no transaction to judge.
 *
 * Expiry is per source and follows the table: adstream.expire_dedup_state()
 * removes a source's dedup_log rows of the hours behind its slowest
 * partition minus dedup_horizon, records up to where (sources.
 * dedup_expired_before, which batches judge too_late against) and forgets
 * the same hours here (adstream._dedup_forget): their hot entries, and their
 * segments, whose slots are cleared from the filter before a tag is reused.
 * All under the lock that batches hold shared (ads_lock
 * "adstream.dedup_expiry"), so no batch judges while it runs, and with every
 * lock of the index held.  That is also why a claim reads a segment's
 * source, hour and number without the index-wide lock: a tag a slot names
 * is live and unchanged until expiry forgets it.
 *
 * The index has a fixed capacity (adstream.dedup_index_size ids, about 4.2
 * bytes of shared memory each in the filter, plus adstream.dedup_hot_size
 * ids of about 89 bytes in the hot tier).  The parts share both settings:
 * the hot tier's elements are common to all parts, and each part's filter
 * has 1/64 of the buckets plus three standard deviations of how ids fall on
 * parts (0.17% more at 200 M ids).  The capacity is one count of all
 * parts' entries (an atomic that a claim takes room from, a part's ids at
 * once, before it adds them), so it holds exactly.  When it is full a batch
 * fails with an error naming the setting, and is retried: ingestion stops
 * rather than forgets an id it should remember.  A segment's claimed count
 * (to close it) is reserved for a batch's ids of the hour before its claims
 * and trued up after them; a batch that fails in between leaves it a little
 * high, and the segment closes a little early.
 */
#include "dedup_index.h"

#include <math.h>

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_time.h"
#include "guc.h"
#include "txn.h"

typedef struct DedupKey
{
	int32		source_id;
	uint8		id[16];
} DedupKey;

/* A hot-tier entry. */
typedef struct DedupEntry
{
	DedupKey	key;
	TransactionId xid;			/* claimer; FrozenTransactionId once committed */
	int32		hour;			/* event-time hour of the claim, since the epoch */
	int32		tag;			/* its segment (an index into state->segs) */
	uint64		seq;			/* order of settling (0 before), for moving the oldest out */
	uint64		h;				/* key_hash64() of the key */
} DedupEntry;

/*
 * The committed hot entries in the order they were settled: the oldest are
 * moved to the filter first.  A record whose entry has been removed since
 * (expired, or its element reused) no longer matches the entry's seq.
 */
typedef struct RingRecord
{
	DedupEntry *entry;
	uint64		seq;
} RingRecord;

/*
 * Filter slots: fingerprint << TAG_BITS | tag; 0 is an empty slot (a
 * fingerprint is never 0).
 */
#define TAG_BITS		13
#define MAX_SEGMENTS	(1 << TAG_BITS)
#define FP_MAX_BITS		(32 - TAG_BITS)
#define BUCKET_SLOTS	4
#define MAX_LOAD		0.95
#define MAX_KICKS		500

/* A segment closes for new claims once it holds this many. */
#define SEGMENT_IDS		(256 * 1024)

typedef struct DedupSegment
{
	bool		live;
	bool		unsorted;		/* a row not in id order: search it linearly */
	int32		source_id;
	int32		hour;
	int32		seg;			/* dedup_log.seg */
	int64		claimed;		/* ids claimed into it (to close it) */
} DedupSegment;

/*
 * The index is split by id into NPARTS parts, each with its own lock, its
 * share of the filter's buckets, its entries of the hot tier and its ring
 * of settled entries.  An id's part is the low PART_BITS bits of its 64-bit
 * hash: the bits dynahash's partitioned hot tier also takes its partition
 * from (so each hot-tier bucket chain lies in one part); within a part the
 * filter bucket comes from bits PART_BITS..44, the fingerprint from the top
 * 19 bits, neither of them the part's bits.
 */
#define PART_BITS		6
#define NPARTS			(1 << PART_BITS)
#define PART_OF(h)		((int) ((uint32) (h) & (NPARTS - 1)))

typedef struct DedupPart
{
	LWLock	   *lock;			/* protects the fields below, its slots, its ring
								 * and its hot entries */
	int64		nhot;			/* its hot entries */
	int64		in_filter;		/* its occupied slots */
	uint64		settle_seq;
	uint64		moved;			/* ids moved from its hot entries to its filter */
	uint64		ring_head;		/* index of the oldest record */
	uint64		ring_len;
} DedupPart;

/* Parts on separate cache lines: each is written under its own lock. */
typedef union DedupPartPadded
{
	DedupPart	part;
	char		pad[2 * PG_CACHE_LINE_SIZE];
} DedupPartPadded;

typedef struct DedupIndexState
{
	LWLock	   *lock;			/* the index-wide lock: protects the fields
								 * below up to parts, and segs */
	Oid			database;		/* whose adstream.dedup_log the index mirrors */
	Oid			relid;			/* that dedup_log, to notice a re-created extension */
	bool		ready;			/* rebuilt from it since the server started */
	int64		rebuild_ms;
	uint32		part_buckets;	/* filter buckets of each part */
	int32		hot_capacity;	/* of the whole hot tier, which parts share */
	int32		part_hot;		/* a part's share of it */
	int32		ring_capacity;	/* records in each part's ring */
	pg_atomic_uint64 entries;	/* hot and filter entries of every part: what
								 * the capacity bounds; taken before they are
								 * added, given back when removed */
	pg_atomic_uint64 disk_lookups;	/* ids looked up in dedup_log after a filter "maybe" */
	pg_atomic_uint64 disk_found;	/* ... and found there: duplicates */
	pg_atomic_uint64 disk_us;	/* time spent reading dedup_log for them */
	DedupPartPadded parts[NPARTS];
	DedupSegment segs[MAX_SEGMENTS];
} DedupIndexState;

static DedupIndexState *state = NULL;
static uint32 *slots = NULL;	/* every part's, one after another */
static RingRecord *ring = NULL; /* likewise */
static HTAB *index_hash = NULL; /* partitioned: each part locks its own */

#define PART(p)			(&state->parts[p].part)
#define PART_SLOTS(p)	(&slots[(Size) (p) * state->part_buckets * BUCKET_SLOTS])
#define PART_RING(p)	(&ring[(Size) (p) * state->ring_capacity])

#define REBUILD_FETCH 64

/*
 * One 64-bit hash of a key serves both tiers: its low 32 bits are the hot
 * tier's hash value (the low PART_BITS of them its part), bits PART_BITS
 * to 44 pick the filter bucket within the part and its top 19 bits are the
 * fingerprint.  Batches compute it before taking a lock.
 */
static inline uint64
key_hash64(const DedupKey *key)
{
	return hash_bytes_extended((const unsigned char *) key, sizeof(DedupKey), 0);
}

static uint32
key_hash32(const void *key, Size keysize)
{
	Assert(keysize == sizeof(DedupKey));
	return (uint32) key_hash64((const DedupKey *) key);
}

/* ---- sizing ---- */

static int32
hot_capacity(void)
{
	return Min(adstream_dedup_hot_size, adstream_dedup_index_size);
}

/*
 * What one part must hold of total: its share, plus three standard
 * deviations of how ids fall on parts by their hash (0.17% more at 200 M
 * ids; tiny settings get proportionally more).
 */
static double
part_share(double total)
{
	double		share = total / NPARTS;

	return share + 3 * sqrt(share) + 4;
}

static uint32
part_buckets(void)
{
	double		n = ceil(part_share(adstream_dedup_index_size) / MAX_LOAD / BUCKET_SLOTS);

	return (uint32) Max(n, 1.0);
}

static int32
ring_capacity(void)
{
	return (int32) ceil(part_share(hot_capacity()));
}

Size
ads_dedup_index_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(DedupIndexState));

	size = add_size(size, MAXALIGN(mul_size(mul_size(part_buckets(), NPARTS), BUCKET_SLOTS * sizeof(uint32))));
	size = add_size(size, MAXALIGN(mul_size(mul_size(ring_capacity(), NPARTS), sizeof(RingRecord))));
	return add_size(size, hash_estimate_size(hot_capacity(), sizeof(DedupEntry)));
}

void
ads_dedup_index_shmem_request(void)
{
	RequestAddinShmemSpace(ads_dedup_index_shmem_size());
	/* the index-wide lock, then one per part: one tranche, one wait event */
	RequestNamedLWLockTranche("adstream dedup index", 1 + NPARTS);
}

/* Called with AddinShmemInitLock held. */
void
ads_dedup_index_shmem_init(void)
{
	bool		found;
	HASHCTL		info;
	Size		slot_bytes = mul_size(mul_size(part_buckets(), NPARTS), BUCKET_SLOTS * sizeof(uint32));

	state = ShmemInitStruct("adstream dedup index state", sizeof(DedupIndexState), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("adstream dedup index");

		memset(state, 0, sizeof(DedupIndexState));
		state->lock = &locks[0].lock;
		state->part_buckets = part_buckets();
		state->hot_capacity = hot_capacity();
		state->part_hot = (int32) ((hot_capacity() + NPARTS - 1) / NPARTS);
		state->ring_capacity = ring_capacity();
		pg_atomic_init_u64(&state->entries, 0);
		pg_atomic_init_u64(&state->disk_lookups, 0);
		pg_atomic_init_u64(&state->disk_found, 0);
		pg_atomic_init_u64(&state->disk_us, 0);
		for (int p = 0; p < NPARTS; p++)
			PART(p)->lock = &locks[1 + p].lock;
	}
	slots = ShmemInitStruct("adstream dedup filter", slot_bytes, &found);
	if (!found)
		memset(slots, 0, slot_bytes);
	ring = ShmemInitStruct("adstream dedup settle ring",
						   mul_size(mul_size(ring_capacity(), NPARTS), sizeof(RingRecord)), &found);
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(DedupKey);
	info.entrysize = sizeof(DedupEntry);
	info.hash = key_hash32;
	info.num_partitions = NPARTS;
	index_hash = ShmemInitHash("adstream dedup index", hot_capacity(), hot_capacity(),
							   &info, HASH_ELEM | HASH_FUNCTION | HASH_FIXED_SIZE | HASH_PARTITION);
}

static void
check_loaded(void)
{
	if (state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("adstream's dedup index is not in shared memory"),
				 errhint("Add adstream to shared_preload_libraries and restart the server.")));
}

static Oid
dedup_log_relid(void)
{
	Oid			nsp = get_namespace_oid("adstream", false);
	Oid			relid = get_relname_relid("dedup_log", nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table adstream.dedup_log does not exist"),
				 errhint("The installed library is newer than the extension's SQL objects: run ALTER EXTENSION adstream UPDATE.")));
	if (get_attnum(relid, "seg") == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table adstream.dedup_log has no column seg"),
				 errdetail("The dedup index of this library keeps its ids in segments since 0.6."),
				 errhint("The installed library is newer than the extension's SQL objects: run ALTER EXTENSION adstream UPDATE.")));
	return relid;
}

/*
 * Takes room for n more entries (hot or filter) if the index has it: the
 * count every part adds to before it adds entries, so that all parts
 * together never hold more than adstream.dedup_index_size.
 */
static bool
entries_take(int64 n)
{
	uint64		cur = pg_atomic_read_u64(&state->entries);

	while (cur + (uint64) n <= (uint64) adstream_dedup_index_size)
		if (pg_atomic_compare_exchange_u64(&state->entries, &cur, cur + (uint64) n))
			return true;
	return false;
}

static inline void
entries_give(int64 n)
{
	uint64		cur;

	if (n <= 0)
		return;
	/* never below zero, even if a rebuild cleared the count meanwhile */
	cur = pg_atomic_read_u64(&state->entries);
	while (!pg_atomic_compare_exchange_u64(&state->entries, &cur, cur > (uint64) n ? cur - (uint64) n : 0))
		;
}

static void
full_error(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("adstream's dedup index is full (%d event ids)", adstream_dedup_index_size),
			 errdetail("Every event id is remembered until maintenance (adstream.drop_expired_partitions()) gives up its hour, adstream.dedup_horizon behind its source's slowest partition that still has messages to read; a backfill or a stalled partition keeps more."),
			 errhint("Expiry runs by itself whenever the index is 80%% full, unless adstream.auto_maintenance is off (see adstream.maintenance_status); lower adstream.dedup_horizon, or raise adstream.dedup_index_size and restart. Ingestion resumes where it stopped.")));
}

static void
hot_full_error(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("adstream's dedup index has no room for more claims in flight (%d)", state->hot_capacity),
			 errdetail("The hot tier holds the claims of every batch in flight, about adstream.batch_max_messages per worker."),
			 errhint("Raise adstream.dedup_hot_size (or adstream.dedup_index_size) and restart, or lower adstream.batch_max_messages. Ingestion resumes where it stopped.")));
}

static void
segments_full_error(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("adstream's dedup index has no free segment (%d in use)", MAX_SEGMENTS),
			 errdetail("Each source's event-time hour within the dedup horizon takes at least one segment, and one more per %d event ids.", SEGMENT_IDS),
			 errhint("Lower adstream.dedup_horizon, or let expiry give up old hours (adstream.expire_dedup_state()). Ingestion resumes where it stopped.")));
}

/* ---- the filter ---- */

typedef struct IdHash
{
	uint32		fp;				/* fingerprint, never 0 */
	uint32		bucket;			/* first candidate bucket */
} IdHash;

static inline IdHash
id_hash(uint64 h)
{
	int			bits = Min(adstream_dedup_fingerprint_bits, FP_MAX_BITS);
	IdHash		r;

	r.bucket = (uint32) (((h & ((UINT64CONST(1) << 45) - 1)) >> PART_BITS) % state->part_buckets);
	r.fp = (uint32) (h >> 45) & ((1U << bits) - 1);
	if (r.fp == 0)
		r.fp = 1;
	return r;
}

/* The other bucket of a fingerprint: an involution, so either leads to the other. */
static inline uint32
alt_bucket(uint32 bucket, uint32 fp)
{
	uint32		n = state->part_buckets;
	uint32		h = murmurhash32(fp) % n;

	return (uint32) (((uint64) h + n - bucket) % n);
}

static inline bool
bucket_put(uint32 *ps, uint32 bucket, uint32 item)
{
	uint32	   *b = &ps[(Size) bucket * BUCKET_SLOTS];

	for (int j = 0; j < BUCKET_SLOTS; j++)
		if (b[j] == 0)
		{
			b[j] = item;
			return true;
		}
	return false;
}

static uint64 kick_rng = 0;

/*
 * Puts a slot into one of its two buckets, moving others to their other
 * bucket as cuckoo hashing does.  If no room is found within MAX_KICKS moves
 * every move is undone and false is returned: the filter is unchanged.
 * Into part p's buckets; its lock held exclusively.
 */
static bool
filter_insert(int p, IdHash ih, int32 tag)
{
	uint32	   *ps = PART_SLOTS(p);
	uint32		item = (ih.fp << TAG_BITS) | (uint32) tag;
	uint32		b1 = ih.bucket;
	uint32		b2 = alt_bucket(b1, ih.fp);
	static uint32 undo_bucket[MAX_KICKS];
	static uint8 undo_slot[MAX_KICKS];
	uint32		cur;
	uint32		b;
	int			k;

	if (bucket_put(ps, b1, item) || bucket_put(ps, b2, item))
		return true;
	if (kick_rng == 0)
		kick_rng = ((uint64) MyProcPid << 32) ^ (uint64) GetCurrentTimestamp() ^ 0x9E3779B97F4A7C15ULL;
	cur = item;
	b = (kick_rng & 1) ? b1 : b2;
	for (k = 0; k < MAX_KICKS; k++)
	{
		uint32	   *s;
		uint32		victim;
		int			j;

		kick_rng ^= kick_rng << 13;
		kick_rng ^= kick_rng >> 7;
		kick_rng ^= kick_rng << 17;
		j = (int) (kick_rng % BUCKET_SLOTS);
		s = &ps[(Size) b * BUCKET_SLOTS + j];
		victim = *s;
		*s = cur;
		undo_bucket[k] = b;
		undo_slot[k] = (uint8) j;
		cur = victim;
		b = alt_bucket(b, cur >> TAG_BITS);
		if (bucket_put(ps, b, cur))
			return true;
	}
	for (k = MAX_KICKS - 1; k >= 0; k--)
	{
		uint32	   *s = &ps[(Size) undo_bucket[k] * BUCKET_SLOTS + undo_slot[k]];
		uint32		t = *s;

		*s = cur;
		cur = t;
	}
	Assert(cur == item);
	return false;
}

#define MAX_MATCHES (2 * BUCKET_SLOTS)

/*
 * The segments of this source whose slots match the id's fingerprint: where
 * the id may have been committed.  Returns how many (distinct), in tags.
 * In part p, its lock held.  A tag that names a slot is live, and its
 * source and hour stay as they are until expiry forgets it (with every lock
 * held, while no batch claims): they are read without the index-wide lock.
 */
static int
filter_find(int p, int32 source_id, IdHash ih, int32 *tags)
{
	uint32	   *ps = PART_SLOTS(p);
	uint32		buckets[2] = {ih.bucket, alt_bucket(ih.bucket, ih.fp)};
	int			n = 0;

	for (int b = 0; b < 2; b++)
	{
		uint32	   *s = &ps[(Size) buckets[b] * BUCKET_SLOTS];

		if (b == 1 && buckets[1] == buckets[0])
			break;
		for (int j = 0; j < BUCKET_SLOTS; j++)
		{
			int32		tag;
			bool		dup = false;

			if (s[j] == 0 || (s[j] >> TAG_BITS) != ih.fp)
				continue;
			tag = (int32) (s[j] & (MAX_SEGMENTS - 1));
			if (!state->segs[tag].live || state->segs[tag].source_id != source_id)
				continue;
			for (int k = 0; k < n; k++)
				dup |= (tags[k] == tag);
			if (!dup)
				tags[n++] = tag;
		}
	}
	return n;
}

/* ---- segments ---- */

static int32
segment_alloc(int32 source_id, int32 hour, int32 seg)
{
	for (int32 t = 0; t < MAX_SEGMENTS; t++)
		if (!state->segs[t].live)
		{
			DedupSegment *s = &state->segs[t];

			memset(s, 0, sizeof(DedupSegment));
			s->live = true;
			s->source_id = source_id;
			s->hour = hour;
			s->seg = seg;
			return t;
		}
	return -1;
}

/* The segment new claims of (source, hour) go to; -1 when none is free. */
static int32
segment_for_claims(int32 source_id, int32 hour)
{
	int32		best = -1;

	for (int32 t = 0; t < MAX_SEGMENTS; t++)
	{
		DedupSegment *s = &state->segs[t];

		if (s->live && s->source_id == source_id && s->hour == hour &&
			(best < 0 || s->seg > state->segs[best].seg))
			best = t;
	}
	if (best >= 0 && state->segs[best].claimed < SEGMENT_IDS)
		return best;
	return segment_alloc(source_id, hour, best >= 0 ? state->segs[best].seg + 1 : 0);
}

/*
 * Where a batch starts its walk over the parts (claim, withdraw, settle):
 * it goes on in part order from there, wrapping around, one lock at a time.
 * Different starts keep two workers that claim at once from following each
 * other from part to part.
 */
static int
first_part(void)
{
	static uint32 rotor = 0;

	if (rotor == 0)
		rotor = (uint32) MyProcPid * 2654435761U | 1;
	rotor = rotor * 1103515245U + 12345U;
	return (int) ((rotor >> 16) % NPARTS);
}

/* Every lock of the index, exclusively: the index-wide one, then the parts in order. */
static void
lock_all(void)
{
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (int p = 0; p < NPARTS; p++)
		LWLockAcquire(PART(p)->lock, LW_EXCLUSIVE);
}

static void
unlock_all(void)
{
	for (int p = NPARTS - 1; p >= 0; p--)
		LWLockRelease(PART(p)->lock);
	LWLockRelease(state->lock);
}

/* Removes every entry, slot and segment; the caller holds every lock (lock_all). */
static void
clear_all(void)
{
	HASH_SEQ_STATUS seq;
	DedupEntry *e;

	hash_seq_init(&seq, index_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		hash_search_with_hash_value(index_hash, &e->key, (uint32) e->h, HASH_REMOVE, NULL);
	memset(slots, 0, (Size) state->part_buckets * NPARTS * BUCKET_SLOTS * sizeof(uint32));
	memset(state->segs, 0, sizeof(state->segs));
	for (int p = 0; p < NPARTS; p++)
	{
		DedupPart  *part = PART(p);

		part->nhot = 0;
		part->in_filter = 0;
		part->ring_head = 0;
		part->ring_len = 0;
	}
	pg_atomic_write_u64(&state->entries, 0);
}

/*
 * Moves part p's oldest committed hot entry into its filter.  Returns false
 * when there is none left, or when it does not fit in the filter (it then
 * stays in the hot tier for good: rare).  The part's lock held exclusively.
 */
static bool
move_oldest(int p)
{
	DedupPart  *part = PART(p);
	RingRecord *pring = PART_RING(p);
	RingRecord *r;
	DedupEntry *e;
	DedupSegment *s;

	while (part->ring_len > 0)
	{
		r = &pring[part->ring_head];
		part->ring_head = (part->ring_head + 1) % state->ring_capacity;
		part->ring_len--;
		e = r->entry;
		/*
		 * Removed since, its element maybe reused, possibly by another part
		 * (the elements are common to all parts): a settle number names one
		 * part's entry (see ring_push), so another part's never matches.
		 */
		if (e->seq != r->seq || e->xid != FrozenTransactionId)
			continue;
		Assert(PART_OF(e->h) == p);
		s = &state->segs[e->tag];
		if (!s->live || s->source_id != e->key.source_id || s->hour != e->hour)
			continue;			/* cannot happen: forgotten together */
		e->seq = 0;
		if (!filter_insert(p, id_hash(e->h), e->tag))
			return false;
		part->in_filter++;
		part->moved++;
		hash_search_with_hash_value(index_hash, &e->key, (uint32) e->h, HASH_REMOVE, NULL);
		part->nhot--;
		return true;
	}
	return false;
}

/* Records a committed hot entry of part p as its newest; its lock held exclusively. */
static void
ring_push(int p, DedupEntry *e)
{
	DedupPart  *part = PART(p);
	RingRecord *pring = PART_RING(p);
	uint64		cap = (uint64) state->ring_capacity;

	if (part->ring_len == cap)
		(void) move_oldest(p);
	if (part->ring_len == cap)
		return;					/* the oldest did not fit: it stays hot */
	/*
	 * Unique across parts, not only within this one: a record left behind by
	 * an entry that expiry forgot names an element that a claim in another
	 * part may reuse, and that part's entry must not match it (it would be
	 * moved to this part's filter, where no claim of its id looks).
	 */
	e->seq = (++part->settle_seq << PART_BITS) | (uint64) p;
	pring[(part->ring_head + part->ring_len) % cap].entry = e;
	pring[(part->ring_head + part->ring_len) % cap].seq = e->seq;
	part->ring_len++;
}

/* ---- rebuild ---- */

/*
 * Rebuild the index from adstream.dedup_log if it does not mirror it yet.
 * Workers call this when they start and before every batch; after a start or
 * a crash restart the first caller does the work while the others wait on
 * its lock and then find the index ready.  Every id goes to the filter
 * (those that do not fit there, to the hot tier, frozen: they committed).
 */
void
ads_dedup_index_prepare(void)
{
	Oid			relid;
	bool		ready;
	Portal		portal;
	uint64		loaded = 0;
	instr_time	start,
				elapsed;
	int32		last_src = 0,
				last_hour = 0,
				last_seg = 0,
				last_tag = -1;

	check_loaded();
	relid = dedup_log_relid();

	LWLockAcquire(state->lock, LW_SHARED);
	ready = state->ready && state->database == MyDatabaseId && state->relid == relid;
	LWLockRelease(state->lock);
	if (ready)
		return;

	(void) ads_lock("adstream.dedup_index", 0, true, false, true);

	lock_all();
	ready = state->ready && state->database == MyDatabaseId && state->relid == relid;
	if (!ready)
	{
		clear_all();
		state->ready = false;
		state->database = MyDatabaseId;
		state->relid = relid;
	}
	unlock_all();
	if (ready)
		return;

	INSTR_TIME_SET_CURRENT(start);
	/* In each hour's partition, a segment's rows mostly come one after another. */
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT source_id, (extract(epoch FROM hour) / 3600)::int4, seg, ids "
									   "FROM adstream.dedup_log",
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, REBUILD_FETCH);
		if (SPI_processed == 0)
			break;
		/* every part's ids come in every row: all the locks, per fetch */
		lock_all();
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			DedupKey	key;
			int32		hour,
						seg;
			bytea	   *ids;
			int			n;
			const uint8 *p;

			memset(&key, 0, sizeof(key));
			key.source_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			hour = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			seg = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			ids = DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull));
			n = VARSIZE_ANY_EXHDR(ids) / 16;
			p = (const uint8 *) VARDATA_ANY(ids);

			if (last_tag < 0 || key.source_id != last_src || hour != last_hour || seg != last_seg)
			{
				last_tag = -1;
				for (int32 t = 0; t < MAX_SEGMENTS && last_tag < 0; t++)
				{
					DedupSegment *s = &state->segs[t];

					if (s->live && s->source_id == key.source_id && s->hour == hour && s->seg == seg)
						last_tag = t;
				}
				if (last_tag < 0)
					last_tag = segment_alloc(key.source_id, hour, seg);
				if (last_tag < 0)
				{
					unlock_all();
					segments_full_error();
				}
				last_src = key.source_id;
				last_hour = hour;
				last_seg = seg;
			}
			state->segs[last_tag].claimed += n;
			for (int i = 0; i < n; i++)
			{
				uint64		h;
				int			part_no;
				DedupPart  *part;

				memcpy(key.id, p + 16 * i, 16);
				if (i > 0 && memcmp(p + 16 * (i - 1), p + 16 * i, 16) > 0)
					state->segs[last_tag].unsorted = true;
				if (!entries_take(1))
				{
					unlock_all();
					full_error();
				}
				h = key_hash64(&key);
				part_no = PART_OF(h);
				part = PART(part_no);
				if (filter_insert(part_no, id_hash(h), last_tag))
					part->in_filter++;
				else
				{
					bool		found;
					DedupEntry *e = hash_search_with_hash_value(index_hash, &key, (uint32) h,
																HASH_ENTER_NULL, &found);

					if (e == NULL)
					{
						unlock_all();
						full_error();
					}
					if (!found)
					{
						e->xid = FrozenTransactionId;
						e->hour = hour;
						e->tag = last_tag;
						e->seq = 0;
						e->h = h;
						part->nhot++;
					}
					else
						entries_give(1);
				}
				loaded++;
			}
		}
		unlock_all();
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);

	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->ready = true;
	state->rebuild_ms = (int64) INSTR_TIME_GET_MILLISEC(elapsed);
	LWLockRelease(state->lock);
	ereport(LOG,
			(errmsg("adstream: dedup index rebuilt from adstream.dedup_log: %llu event ids in %lld ms",
					(unsigned long long) loaded, (long long) INSTR_TIME_GET_MILLISEC(elapsed))));
}

/*
 * Claims of this backend's current batch transaction that are not settled
 * yet: every hot entry whose xid is not frozen belongs to one of these
 * lists, in a backend that is alive.  That is what makes an entry's xid safe
 * to judge by its transaction's status: it is in progress, or has just ended
 * and is about to be settled here, so clog always knows it.  A claim
 * withdrawn during the batch (found on disk) has entry NULL.
 */
typedef struct PendingClaim
{
	DedupEntry *entry;
	DedupKey	key;
	uint64		h;				/* key_hash64(key): its part */
} PendingClaim;

static PendingClaim *pending = NULL;
static int *pending_order = NULL;	/* for settling them part by part */
static int	npending = 0;
static int	pending_cap = 0;
static TransactionId pending_xid = InvalidTransactionId;
static bool exit_hook_installed = false;

/*
 * Transactions (other workers' batches) whose claims this batch took as
 * duplicates while they were in progress: ads_dedup_confirm() waits for
 * them.  A few per batch; kept distinct.
 */
static TransactionId *depends = NULL;
static int	ndepends = 0;
static int	depends_cap = 0;

static void
remember_dependency(TransactionId xid)
{
	for (int i = ndepends - 1; i >= 0; i--)
		if (depends[i] == xid)
			return;
	if (ndepends == depends_cap)
	{
		int			cap = Max(16, depends_cap * 2);

		depends = depends == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * cap)
			: repalloc(depends, sizeof(TransactionId) * cap);
		depends_cap = cap;
	}
	depends[ndepends++] = xid;
}

static void settle_pending(bool committed);

/*
 * A worker ended by FATAL in the middle of a batch (pause_source under load
 * sends SIGTERM) exits without returning to its loop: settle its claims on
 * the way out.  Its transaction has not been aborted yet when this runs
 * (before_shmem_exit callbacks run newest first), but it can no longer
 * commit, so the claims are withdrawn unless clog already says committed.
 */
static void
settle_at_exit(int code, Datum arg)
{
	if (npending > 0)
		settle_pending(TransactionIdDidCommit(pending_xid));
}

static int
remember_claim(DedupEntry *e, TransactionId xid)
{
	if (!exit_hook_installed)
	{
		before_shmem_exit(settle_at_exit, (Datum) 0);
		exit_hook_installed = true;
	}
	if (npending == pending_cap)
	{
		int			cap = Max(1024, pending_cap * 2);

		pending = pending == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(PendingClaim) * cap)
			: repalloc(pending, sizeof(PendingClaim) * cap);
		pending_order = pending_order == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(int) * cap)
			: repalloc(pending_order, sizeof(int) * cap);
		pending_cap = cap;
	}
	Assert(npending == 0 || pending_xid == xid);
	pending_xid = xid;
	pending[npending].entry = e;
	pending[npending].key = e->key;
	pending[npending].h = e->h;
	return npending++;
}

/*
 * Has the transaction that claimed this entry committed?  Only called for
 * an entry that is not frozen and whose transaction is not in progress: the
 * claim of a transaction that just ended and whose backend has not settled
 * it yet (see PendingClaim), so its status is in clog.
 */
static bool
claimer_committed(DedupEntry *e)
{
	if (e->xid == FrozenTransactionId)
		return true;

	/*
	 * Older than clog: its claimer can only have ended without settling,
	 * which a live backend never does and a crash restart clears.  A
	 * committed claim is settled (frozen) before its backend can go, so
	 * this one was abandoned: the id is new.
	 */
	if (TransactionIdPrecedes(e->xid, ShmemVariableCache->oldestClogXid))
	{
		ereport(WARNING,
				(errmsg("adstream: dedup claim of transaction %u was never settled; taking it as withdrawn",
						e->xid)));
		return false;
	}
	/*
	 * Not frozen here: its claimer freezes it when it settles, and records
	 * it as the newest committed entry, to move to the filter in its turn.
	 */
	return TransactionIdDidCommit(e->xid);
}

/* ---- looking up on disk ---- */

typedef struct MaybeId
{
	int32		tag;
	int32		idx;			/* into the claim's ids */
} MaybeId;

static int
cmp_maybe(const void *a, const void *b)
{
	const MaybeId *x = a;
	const MaybeId *y = b;

	if (x->tag != y->tag)
		return x->tag < y->tag ? -1 : 1;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

static SPIPlanPtr segment_plan = NULL;

static bool
row_has(const uint8 *p, int n, const uint8 *id, bool sorted)
{
	if (sorted)
	{
		int			lo = 0,
					hi = n - 1;

		while (lo <= hi)
		{
			int			mid = lo + (hi - lo) / 2;
			int			c = memcmp(p + 16 * mid, id, 16);

			if (c == 0)
				return true;
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		return false;
	}
	for (int i = 0; i < n; i++)
		if (memcmp(p + 16 * i, id, 16) == 0)
			return true;
	return false;
}

/*
 * For each id the filter said "maybe" about (maybe[], sorted by segment),
 * is it in its segment's dedup_log rows?  Sets found[idx].  Read in a
 * snapshot taken now: after the slot was seen, so after the commit of the
 * batch that wrote the id (it was moved to the filter only once settled as
 * committed).  The rows cannot go away meanwhile: this batch holds the
 * expiry lock shared.
 */
static void
look_up_on_disk(int32 source_id, const uint8 *const *ids, MaybeId *maybe, int nmaybe,
				const DedupSegment *segs, bool *found)
{
	Snapshot	snap;

	if (segment_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("SELECT ids FROM adstream.dedup_log "
									   "WHERE source_id = $1 AND hour = $2 AND seg = $3",
									   3, (Oid[]) {INT4OID, TIMESTAMPTZOID, INT4OID});

		if (plan == NULL)
			elog(ERROR, "adstream: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		segment_plan = plan;
	}
	snap = RegisterSnapshot(GetLatestSnapshot());
	for (int i = 0; i < nmaybe;)
	{
		int			j = i;
		const DedupSegment *s = &segs[i];
		Datum		args[3];
		int			rc;

		while (j < nmaybe && maybe[j].tag == maybe[i].tag)
			j++;
		args[0] = Int32GetDatum(source_id);
		args[1] = TimestampTzGetDatum(ads_unix_us_to_timestamptz((int64) s->hour * USECS_PER_HOUR));
		args[2] = Int32GetDatum(s->seg);
		rc = SPI_execute_snapshot(segment_plan, args, NULL, snap, InvalidSnapshot, true, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "adstream: reading dedup_log failed: %s", SPI_result_code_string(rc));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			bytea	   *row = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[r],
															SPI_tuptable->tupdesc, 1, &isnull));
			const uint8 *p = (const uint8 *) VARDATA_ANY(row);
			int			n = VARSIZE_ANY_EXHDR(row) / 16;

			for (int k = i; k < j; k++)
				if (!found[maybe[k].idx])
					found[maybe[k].idx] = row_has(p, n, ids[maybe[k].idx], !s->unsorted);
		}
		SPI_freetuptable(SPI_tuptable);
		i = j;
	}
	UnregisterSnapshot(snap);
}

/* ---- claims ---- */

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void) 0)
#endif
#define PREFETCH_AHEAD 8

static inline void
prefetch_buckets(uint32 *ps, uint64 h)
{
	IdHash		ih = id_hash(h);

	PREFETCH(&ps[(Size) ih.bucket * BUCKET_SLOTS]);
	PREFETCH(&ps[(Size) alt_bucket(ih.bucket, ih.fp) * BUCKET_SLOTS]);
}

/*
 * Claim ids (sorted, distinct) for the current transaction.  is_new[i] says
 * whether ids[i] is new, which also means it is now claimed, in segment
 * segs[i] of its hour (the same for every id of one hour in one call).  An
 * id found claimed by another transaction still running is not new, and
 * held_by[i] is that transaction (InvalidTransactionId for every other id).
 * The claims are settled by ads_dedup_settle() after the transaction ends,
 * or when the process exits.
 *
 * The segments of the call's hours are chosen first, under the index-wide
 * lock, each with a reservation of as many claims as the call has ids of
 * that hour; then the ids are claimed part by part, under one part's lock
 * at a time, in part order; the ids found on disk are withdrawn part by
 * part; and last the reservations are trued up to what was claimed.
 */
void
ads_dedup_claim(int32 source_id, int n, const uint8 *const *ids, const int32 *hours,
				bool *is_new, int32 *segs, TransactionId *held_by)
{
	TransactionId xid = GetTopTransactionId();
	DedupKey	key;
	uint64	   *hv = palloc(sizeof(uint64) * Max(n, 1));
	int		   *hour_of = palloc(sizeof(int) * Max(n, 1));	/* into the call's hours */
	int		   *order = palloc(sizeof(int) * Max(n, 1));	/* ids by part, in id order */
	int		   *claim_of = palloc(sizeof(int) * Max(n, 1));
	int			part_start[NPARTS + 1];
	int			part_fill[NPARTS];
	MaybeId    *maybe = NULL;
	DedupSegment *maybe_seg = NULL;
	int			nmaybe = 0,
				maybe_cap = 0;
	/* the call's distinct hours: their segment, and ids reserved and claimed there */
	int32	   *h_hour = palloc(sizeof(int32) * Max(n, 1));
	int32	   *h_tag = palloc(sizeof(int32) * Max(n, 1));
	int32	   *h_seg = palloc(sizeof(int32) * Max(n, 1));
	int64	   *h_reserved = palloc0(sizeof(int64) * Max(n, 1));
	int64	   *h_claimed = palloc0(sizeof(int64) * Max(n, 1));
	int			nh = 0,
				last_h = -1;

	memset(&key, 0, sizeof(key));
	key.source_id = source_id;
	memset(part_start, 0, sizeof(part_start));

	/* Hashing, and grouping by part and by hour, need no lock. */
	for (int i = 0; i < n; i++)
	{
		memcpy(key.id, ids[i], 16);
		hv[i] = key_hash64(&key);
		held_by[i] = InvalidTransactionId;
		part_start[PART_OF(hv[i]) + 1]++;
		if (last_h < 0 || h_hour[last_h] != hours[i])
		{
			for (last_h = 0; last_h < nh; last_h++)
				if (h_hour[last_h] == hours[i])
					break;
			if (last_h == nh)
				h_hour[nh++] = hours[i];
		}
		hour_of[i] = last_h;
		h_reserved[last_h]++;
	}
	for (int p = 0; p < NPARTS; p++)
	{
		part_start[p + 1] += part_start[p];
		part_fill[p] = part_start[p];
	}
	for (int i = 0; i < n; i++)
		order[part_fill[PART_OF(hv[i])]++] = i;

	/* One segment per hour: the ids of one hour go to one dedup_log row. */
	if (nh > 0)
	{
		LWLockAcquire(state->lock, LW_EXCLUSIVE);
		for (int h = 0; h < nh; h++)
		{
			h_tag[h] = segment_for_claims(source_id, h_hour[h]);
			if (h_tag[h] < 0)
			{
				/* the hours before keep their reservations: closed a little early */
				LWLockRelease(state->lock);
				segments_full_error();
			}
			h_seg[h] = state->segs[h_tag[h]].seg;
			state->segs[h_tag[h]].claimed += h_reserved[h];
		}
		LWLockRelease(state->lock);
	}

	for (int pi = 0, p = first_part(); pi < NPARTS; pi++, p = (p + 1) % NPARTS)
	{
		DedupPart  *part = PART(p);
		uint32	   *ps = PART_SLOTS(p);
		int64		nids = part_start[p + 1] - part_start[p];
		bool		bulk;
		int64		taken;		/* room taken in the capacity count */
		int64		added = 0;	/* entries added */

		if (nids == 0)
			continue;
		/* room for every id of the part at once, or else id by id */
		bulk = entries_take(nids);
		taken = bulk ? nids : 0;
		LWLockAcquire(part->lock, LW_EXCLUSIVE);
		for (int k = part_start[p]; k < part_start[p + 1]; k++)
		{
			int			i = order[k];
			DedupEntry *e;
			bool		found;
			int32		tag;
			int32		match[MAX_MATCHES];
			int			nmatch;

			if (k + PREFETCH_AHEAD < part_start[p + 1])
				prefetch_buckets(ps, hv[order[k + PREFETCH_AHEAD]]);
			memcpy(key.id, ids[i], 16);
			if (!bulk && taken == added && !entries_take(1))
			{
				/* Full: only ids already in the hot tier can be judged. */
				e = hash_search_with_hash_value(index_hash, &key, (uint32) hv[i], HASH_FIND, &found);
				if (e == NULL)
				{
					LWLockRelease(part->lock);
					full_error();
				}
			}
			else
			{
				if (!bulk && taken == added)
					taken++;	/* the one entries_take(1) above */
				e = hash_search_with_hash_value(index_hash, &key, (uint32) hv[i], HASH_ENTER_NULL, &found);
				while (e == NULL && move_oldest(p))
					e = hash_search_with_hash_value(index_hash, &key, (uint32) hv[i], HASH_ENTER_NULL, &found);
				if (e == NULL)
				{
					entries_give(taken - added);
					LWLockRelease(part->lock);
					hot_full_error();
				}
				if (!found)
				{
					part->nhot++;
					added++;
				}
			}
			if (found && e->xid != FrozenTransactionId &&
				!TransactionIdIsCurrentTransactionId(e->xid) &&
				TransactionIdIsInProgress(e->xid))
			{
				/*
				 * Another batch holds this id: a duplicate if that batch
				 * commits, which ads_dedup_confirm() makes sure of before
				 * this one commits.
				 */
				is_new[i] = false;
				held_by[i] = e->xid;
				remember_dependency(e->xid);
				continue;
			}
			if (found && (TransactionIdIsCurrentTransactionId(e->xid) || claimer_committed(e)))
			{
				is_new[i] = false;
				claim_of[i] = -1;
				continue;
			}

			/*
			 * Not in the hot tier (a new entry), or withdrawn there
			 * (aborted): claimed now, and new unless the filter's "maybe" is
			 * found on disk.
			 */
			tag = h_tag[hour_of[i]];
			e->xid = xid;
			e->hour = hours[i];
			e->tag = tag;
			e->seq = 0;
			e->h = hv[i];
			h_claimed[hour_of[i]]++;
			is_new[i] = true;
			segs[i] = h_seg[hour_of[i]];
			claim_of[i] = remember_claim(e, xid);

			nmatch = filter_find(p, source_id, id_hash(hv[i]), match);
			for (int m = 0; m < nmatch; m++)
			{
				if (nmaybe == maybe_cap)
				{
					maybe_cap = Max(64, maybe_cap * 2);
					maybe = maybe == NULL ? palloc(sizeof(MaybeId) * maybe_cap)
						: repalloc(maybe, sizeof(MaybeId) * maybe_cap);
				}
				maybe[nmaybe].tag = match[m];
				maybe[nmaybe].idx = i;
				nmaybe++;
			}
		}
		LWLockRelease(part->lock);
		entries_give(taken - added);	/* the room of ids that added no entry */
	}

	/*
	 * What the disk lookups need of the segments: a tag a slot names stays
	 * live and the same while this batch holds the expiry lock (shared), so
	 * no lock is needed to read it.
	 */
	if (nmaybe > 0)
	{
		qsort(maybe, nmaybe, sizeof(MaybeId), cmp_maybe);
		maybe_seg = palloc(sizeof(DedupSegment) * nmaybe);
		for (int m = 0; m < nmaybe; m++)
			maybe_seg[m] = state->segs[maybe[m].tag];
	}

	if (nmaybe > 0)
	{
		bool	   *on_disk = palloc0(sizeof(bool) * n);
		bool	   *looked = palloc0(sizeof(bool) * n);
		int			ndistinct = 0,
					nfound = 0;
		instr_time	t0,
					t1;

		INSTR_TIME_SET_CURRENT(t0);
		look_up_on_disk(source_id, ids, maybe, nmaybe, maybe_seg, on_disk);
		INSTR_TIME_SET_CURRENT(t1);
		INSTR_TIME_SUBTRACT(t1, t0);
		for (int m = 0; m < nmaybe; m++)
			looked[maybe[m].idx] = true;
		for (int i = 0; i < n; i++)
			ndistinct += looked[i];

		/* Withdraw the claims of ids found on disk, part by part: they are duplicates. */
		for (int pi = 0, p = first_part(); pi < NPARTS; pi++, p = (p + 1) % NPARTS)
		{
			DedupPart  *part = PART(p);
			bool		locked = false;

			for (int k = part_start[p]; k < part_start[p + 1]; k++)
			{
				int			i = order[k];
				DedupEntry *e;

				if (!on_disk[i])
					continue;
				if (!locked)
				{
					LWLockAcquire(part->lock, LW_EXCLUSIVE);
					locked = true;
				}
				nfound++;
				memcpy(key.id, ids[i], 16);
				e = hash_search_with_hash_value(index_hash, &key, (uint32) hv[i], HASH_FIND, NULL);
				if (e != NULL && e->xid == xid)
				{
					hash_search_with_hash_value(index_hash, &key, (uint32) hv[i], HASH_REMOVE, NULL);
					part->nhot--;
					entries_give(1);
				}
				pending[claim_of[i]].entry = NULL;
				h_claimed[hour_of[i]]--;
				is_new[i] = false;
			}
			if (locked)
			{
				LWLockRelease(part->lock);
			}
		}
		pg_atomic_fetch_add_u64(&state->disk_lookups, ndistinct);
		pg_atomic_fetch_add_u64(&state->disk_found, nfound);
		pg_atomic_fetch_add_u64(&state->disk_us, INSTR_TIME_GET_MICROSEC(t1));
	}

	/* The reservations, trued up to the claims that stand. */
	if (nh > 0)
	{
		LWLockAcquire(state->lock, LW_EXCLUSIVE);
		for (int h = 0; h < nh; h++)
			state->segs[h_tag[h]].claimed -= h_reserved[h] - h_claimed[h];
		LWLockRelease(state->lock);
	}
}

/*
 * Freeze the pending claims if their transaction committed, remove them if
 * not.  An entry expired since, or taken over by another transaction, is
 * left alone: each claim is looked up by its key, and only an entry of this
 * transaction is settled (a freed element keeps its key and xid, so the
 * element remembered is not trusted).  Then, while the hot tier
 * holds more than half its capacity, its oldest committed ids move to the
 * filter: each batch moves about as many as it settled, and the newest half
 * stays (recent duplicates are the common ones).
 */
static void
settle_pending(bool committed)
{
	int			part_start[NPARTS + 1];
	int			part_fill[NPARTS];
	int		   *order = pending_order;

	/* Part by part: the claims of one call come in part order, of several not. */
	memset(part_start, 0, sizeof(part_start));
	for (int i = 0; i < npending; i++)
		part_start[PART_OF(pending[i].h) + 1]++;
	for (int p = 0; p < NPARTS; p++)
	{
		part_start[p + 1] += part_start[p];
		part_fill[p] = part_start[p];
	}
	for (int i = 0; i < npending; i++)
		order[part_fill[PART_OF(pending[i].h)]++] = i;

	for (int pi = 0, p = first_part(); pi < NPARTS; pi++, p = (p + 1) % NPARTS)
	{
		DedupPart  *part = PART(p);
		int64		removed = 0;

		if (part_start[p] == part_start[p + 1])
			continue;
		LWLockAcquire(part->lock, LW_EXCLUSIVE);
		for (int k = part_start[p]; k < part_start[p + 1]; k++)
		{
			PendingClaim *c = &pending[order[k]];
			DedupEntry *e;

			if (c->entry == NULL)
				continue;		/* withdrawn: found on disk */

			/*
			 * The entry the table holds for the key now, not the element
			 * remembered: expiry or a rewind may have forgotten the claim
			 * between the end of the transaction and now (it no longer
			 * holds the lock they take), and a freed element keeps its key
			 * and xid.  Freezing it would leave a ring record that moves
			 * the key's next entry (another batch's claim) to the filter;
			 * removing it by key would remove that entry.  The key's entry
			 * with this transaction's xid is this claim.
			 */
			e = hash_search_with_hash_value(index_hash, &c->key, (uint32) c->h, HASH_FIND, NULL);
			if (e == NULL || e->xid != pending_xid)
				continue;
			if (committed)
			{
				e->xid = FrozenTransactionId;
				ring_push(p, e);
			}
			else
			{
				hash_search_with_hash_value(index_hash, &c->key, (uint32) c->h, HASH_REMOVE, NULL);
				part->nhot--;
				removed++;
			}
		}
		if (committed)
			while (part->nhot > state->part_hot / 2 && move_oldest(p))
				;
		LWLockRelease(part->lock);
		entries_give(removed);
	}
	npending = 0;
	pending_xid = InvalidTransactionId;
}

/*
 * Before the batch writes shared keys and commits: every batch whose
 * in-progress claim this one took as a duplicate must have committed, or be
 * still running and returned to the caller (may_set_aside), which then
 * commits none of the events whose ids it holds: they are set aside, and
 * judged again once it has ended.  Otherwise this waits for each to end.
 * If one rolled back, its id is new after all, so this batch fails and is
 * retried from its committed offsets (the id is then claimed by whichever
 * batch reads it first).  Returns how many are in *running.
 */
int
ads_dedup_confirm(bool may_set_aside, TransactionId **running)
{
	int			nrunning = 0;

	*running = NULL;
	for (int i = 0; i < ndepends; i++)
	{
		TransactionId other = depends[i];

		if (may_set_aside && TransactionIdIsInProgress(other))
		{
			if (*running == NULL)
				*running = palloc(sizeof(TransactionId) * ndepends);
			(*running)[nrunning++] = other;
			continue;
		}
		XactLockTableWait(other, NULL, NULL, XLTW_None);
		CHECK_FOR_INTERRUPTS();
		if (!TransactionIdDidCommit(other))
		{
			ndepends = 0;
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("a batch that held some of this batch's event ids rolled back"),
					 errdetail("Transaction %u claimed ids that this batch took as duplicates, and did not commit.",
							   other),
					 errhint("The batch is retried; those ids count once, in whichever batch reads them first.")));
		}
	}
	ndepends = 0;
	return nrunning;
}

void
ads_dedup_settle(bool committed)
{
	ndepends = 0;
	if (npending > 0)
		settle_pending(committed);
}

/*
 * Ids a partition handoff brings (adstream.import_partitions, src/handoff.c):
 * committed ids of another node's dedup_log, each row one event-time hour of
 * the source.  They go straight into the filter, as a rebuild puts them,
 * each row into the segment new claims of its hour would take; the caller
 * writes the rows to dedup_log with those segments in the same transaction
 * (segs[i] is row i's dedup_log.seg).  The caller holds the expiry lock
 * exclusively, so no batch judges meanwhile, and the index is rebuilt first
 * if it has not been (in this transaction's snapshot, which the caller took
 * after that lock).
 *
 * Slots of a transaction that then rolls back stay in the filter: they name
 * rows that do not exist, so a "maybe" from them reads the disk, finds
 * nothing and changes nothing, as any false positive.  For that reason an
 * id that does not fit in the filter is an error here, never a frozen hot
 * entry (which would be taken as committed without a look at the disk).
 */
void
ads_dedup_import(int32 source_id, int nrows, const int32 *hours,
				 const uint8 *const *ids, const int *nids, int32 *segs)
{
	DedupKey	key;
	Oid			database;
	bool		ready;

	/*
	 * The index mirrors one database's dedup_log, that of the workers
	 * (adstream.database): an import elsewhere must not rebuild it for
	 * another while they use it.
	 */
	check_loaded();
	LWLockAcquire(state->lock, LW_SHARED);
	database = state->database;
	ready = state->ready;
	LWLockRelease(state->lock);
	if (ready && database != MyDatabaseId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("adstream's dedup index holds the event ids of another database"),
				 errdetail("The workers of this server run in database \"%s\".",
						   get_database_name(database) ? get_database_name(database) : "?"),
				 errhint("Import the handoff in the database that adstream.database names.")));
	ads_dedup_index_prepare();
	memset(&key, 0, sizeof(key));
	key.source_id = source_id;
	for (int r = 0; r < nrows; r++)
	{
		int32		tag;
		bool		unsorted = false;
		uint64	   *hv = palloc(sizeof(uint64) * Max(nids[r], 1));

		for (int i = 0; i < nids[r]; i++)
		{
			const uint8 *id = ids[r] + 16 * i;

			if (i > 0 && memcmp(id - 16, id, 16) > 0)
				unsorted = true;
			memcpy(key.id, id, 16);
			hv[i] = key_hash64(&key);
		}
		LWLockAcquire(state->lock, LW_EXCLUSIVE);
		tag = segment_for_claims(source_id, hours[r]);
		if (tag < 0)
		{
			LWLockRelease(state->lock);
			segments_full_error();
		}
		segs[r] = state->segs[tag].seg;
		state->segs[tag].claimed += nids[r];
		state->segs[tag].unsorted |= unsorted;
		LWLockRelease(state->lock);

		/* Part by part, as a batch claims. */
		for (int p = 0; p < NPARTS; p++)
		{
			DedupPart  *part = PART(p);

			LWLockAcquire(part->lock, LW_EXCLUSIVE);
			for (int i = 0; i < nids[r]; i++)
			{
				if (PART_OF(hv[i]) != p)
					continue;
				if (!entries_take(1))
				{
					LWLockRelease(part->lock);
					full_error();
				}
				if (!filter_insert(p, id_hash(hv[i]), tag))
				{
					entries_give(1);
					LWLockRelease(part->lock);
					full_error();
				}
				part->in_filter++;
			}
			LWLockRelease(part->lock);
		}
		pfree(hv);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * A forget changes shared memory, which does not roll back, while the
 * dedup_log rows it mirrors are deleted in the caller's transaction, which
 * may: rewind_source() raises errors after its forget, and any caller may
 * roll back.  A transaction that forgot and then ends without committing
 * (or commits after a subtransaction rolled back, which may have held the
 * forget) marks the index not ready, so the next batch rebuilds it from
 * dedup_log before judging an id; this runs before the transaction's locks
 * are released, so no batch (each holds the expiry lock shared) judges
 * against the forgotten index meanwhile.  A rebuild reads only committed
 * rows, so it is the right answer whether the deletes stood or not.  A
 * transaction that forgot cannot be prepared (two-phase): until it is
 * resolved neither answer is known.
 */
static bool forgot_in_xact = false;
static bool forgot_sub_aborted = false;
static bool forget_callbacks = false;

static void
invalidate_index(void)
{
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->ready = false;
	LWLockRelease(state->lock);
	ereport(LOG,
			(errmsg("adstream: a transaction that made the dedup index forget ids did not commit them; the index is rebuilt from adstream.dedup_log")));
}

static void
forget_xact_callback(XactEvent event, void *arg)
{
	if (!forgot_in_xact)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that made adstream's dedup index forget ids"),
					 errhint("Run adstream.rewind_source() and adstream.expire_dedup_state() outside two-phase transactions.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			invalidate_index();
			forgot_in_xact = forgot_sub_aborted = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (forgot_sub_aborted)
				invalidate_index();
			forgot_in_xact = forgot_sub_aborted = false;
			break;
		default:
			break;
	}
}

static void
forget_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (forgot_in_xact && event == SUBXACT_EVENT_ABORT_SUB)
		forgot_sub_aborted = true;
}

/* Called by a forget before it changes anything. */
static void
forget_in_this_xact(void)
{
	if (!forget_callbacks)
	{
		RegisterXactCallback(forget_xact_callback, NULL);
		RegisterSubXactCallback(forget_subxact_callback, NULL);
		forget_callbacks = true;
	}
	forgot_in_xact = true;
}

/*
 * With every lock held (lock_all): empties every filter slot of the
 * segments marked dying, and the segments themselves.  Returns how many ids
 * were forgotten.
 */
static int64
forget_segments(const bool *dying)
{
	Size		nslots = (Size) state->part_buckets * BUCKET_SLOTS;
	int64		forgotten = 0;

	for (int p = 0; p < NPARTS; p++)
	{
		uint32	   *ps = PART_SLOTS(p);
		DedupPart  *part = PART(p);

		for (Size k = 0; k < nslots; k++)
			if (ps[k] != 0 && dying[ps[k] & (MAX_SEGMENTS - 1)])
			{
				ps[k] = 0;
				part->in_filter--;
				forgotten++;
			}
	}
	entries_give(forgotten);
	for (int32 t = 0; t < MAX_SEGMENTS; t++)
		if (dying[t])
			memset(&state->segs[t], 0, sizeof(DedupSegment));
	return forgotten;
}

/* Removes a hot entry; every lock held (lock_all). */
static void
forget_entry(DedupEntry *e)
{
	DedupPart  *part = PART(PART_OF(e->h));

	e->seq = 0;					/* its record in the ring is void */
	hash_search_with_hash_value(index_hash, &e->key, (uint32) e->h, HASH_REMOVE, NULL);
	part->nhot--;
	entries_give(1);
}

/*
 * adstream._dedup_forget(sources int4[], before timestamptz[]): forget, for
 * each listed source, the ids of the hours that end at or before its
 * `before` (NULL: none), and every id of a source not listed (dropped).  The
 * caller lists every ad-events source, holds the expiry lock exclusively and
 * has just deleted the same hours from dedup_log.  Returns how many ids were
 * forgotten.
 */
PG_FUNCTION_INFO_V1(adstream_dedup_forget_sources);
Datum
adstream_dedup_forget_sources(PG_FUNCTION_ARGS)
{
	ArrayType  *src_arr = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *before_arr = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *src_d,
			   *before_d;
	bool	   *src_null,
			   *before_null;
	int			nsrc,
				nbefore;
	HTAB	   *cutoffs;
	HASHCTL		info;
	HASH_SEQ_STATUS seq;
	DedupEntry *e;
	int64		forgotten = 0;
	bool	   *dying;
	bool		any_dying = false;
	typedef struct Cutoff
	{
		int32		source_id;
		int64		upto_hour;	/* hours below this are forgotten */
	} Cutoff;

	if (state == NULL)
		PG_RETURN_INT64(0);
	deconstruct_array(src_arr, INT4OID, 4, true, TYPALIGN_INT, &src_d, &src_null, &nsrc);
	deconstruct_array(before_arr, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &before_d, &before_null, &nbefore);
	if (nsrc != nbefore)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("adstream._dedup_forget needs one cutoff per source")));

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(int32);
	info.entrysize = sizeof(Cutoff);
	info.hcxt = CurrentMemoryContext;
	cutoffs = hash_create("adstream dedup cutoffs", Max(nsrc, 1), &info,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < nsrc; i++)
	{
		int32		id;
		Cutoff	   *c;

		if (src_null[i])
			continue;
		id = DatumGetInt32(src_d[i]);
		c = hash_search(cutoffs, &id, HASH_ENTER, NULL);
		c->upto_hour = PG_INT64_MIN;
		if (!before_null[i] && !TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(before_d[i])))
			/* hour h ends at (h + 1) h: it ends at or before `before` when h + 1 <= this */
			c->upto_hour = ads_hour_number(ads_timestamptz_to_unix_us(DatumGetTimestampTz(before_d[i])));
	}
	dying = palloc0(sizeof(bool) * MAX_SEGMENTS);

	forget_in_this_xact();
	lock_all();
	if (state->database == MyDatabaseId)
	{
		hash_seq_init(&seq, index_hash);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			Cutoff	   *c = hash_search(cutoffs, &e->key.source_id, HASH_FIND, NULL);

			if (c == NULL || (int64) e->hour + 1 <= c->upto_hour)
			{
				forget_entry(e);
				forgotten++;
			}
		}

		/* The same hours' segments: clear their slots, then free their tags. */
		for (int32 t = 0; t < MAX_SEGMENTS; t++)
		{
			DedupSegment *s = &state->segs[t];
			Cutoff	   *c;

			if (!s->live)
				continue;
			c = hash_search(cutoffs, &s->source_id, HASH_FIND, NULL);
			if (c == NULL || (int64) s->hour + 1 <= c->upto_hour)
			{
				dying[t] = true;
				any_dying = true;
			}
		}
		if (any_dying)
			forgotten += forget_segments(dying);
	}
	unlock_all();
	hash_destroy(cutoffs);
	PG_RETURN_INT64(forgotten);
}

/*
 * Forget one source's ids of the event-time hours [from_hour, to_hour):
 * their hot entries, and their segments, whose slots are cleared from the
 * filter before their tags are freed.  For a rewind that replaces a window
 * (src/rewind.c): the caller holds the expiry lock exclusively, so no batch
 * has a claim in flight, and has deleted the same hours' dedup_log rows of
 * the source in its transaction.  Returns how many ids were forgotten, or -1
 * when the index is not ready even after a rebuild attempt.
 *
 * An index of this database that is not ready (a forget that did not
 * commit, see forget_in_this_xact) is rebuilt here first, as an import does
 * (one never built since the start, or another database's, is left to the
 * workers, which rebuild it for their database): under
 * the rebuild's lock, which waits for a rebuild under way (one from a
 * snapshot before the caller's delete is then forgotten below like any
 * ready index), in a snapshot taken now, which sees the caller's delete.
 */
int64
ads_dedup_forget_hours(int32 source_id, int32 from_hour, int32 to_hour)
{
	HASH_SEQ_STATUS seq;
	DedupEntry *e;
	int64		forgotten = 0;
	bool	   *dying;
	bool		any_dying = false;
	bool		ready;
	bool		mine;

	if (state == NULL)
		return -1;
	LWLockAcquire(state->lock, LW_SHARED);
	ready = state->ready && state->database == MyDatabaseId;
	mine = state->database == MyDatabaseId;
	LWLockRelease(state->lock);
	if (!ready && mine)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "adstream: SPI_connect failed");
		ads_dedup_index_prepare();
		SPI_finish();
	}
	dying = palloc0(sizeof(bool) * MAX_SEGMENTS);
	forget_in_this_xact();
	lock_all();
	if (!state->ready || state->database != MyDatabaseId)
		forgotten = -1;
	else
	{
		hash_seq_init(&seq, index_hash);
		while ((e = hash_seq_search(&seq)) != NULL)
			if (e->key.source_id == source_id && e->hour >= from_hour && e->hour < to_hour)
			{
				forget_entry(e);
				forgotten++;
			}
		for (int32 t = 0; t < MAX_SEGMENTS; t++)
		{
			DedupSegment *s = &state->segs[t];

			if (s->live && s->source_id == source_id && s->hour >= from_hour && s->hour < to_hour)
			{
				dying[t] = true;
				any_dying = true;
			}
		}
		if (any_dying)
			forgotten += forget_segments(dying);
	}
	unlock_all();
	pfree(dying);
	return forgotten;
}

/*
 * The 0.4 signature, _dedup_forget(timestamptz): a 0.4 schema running this
 * library must not have its argument read as arrays.
 */
PG_FUNCTION_INFO_V1(adstream_dedup_forget);
Datum
adstream_dedup_forget(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the adstream library is newer than the extension's SQL objects"),
			 errdetail("Dedup expiry is per source since 0.5."),
			 errhint("Run ALTER EXTENSION adstream UPDATE.")));
	PG_RETURN_NULL();
}

/* adstream.dedup_index_status(): capacity and use of the index. */
#define STATUS_COLS 12
PG_FUNCTION_INFO_V1(adstream_dedup_index_status);
Datum
adstream_dedup_index_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[STATUS_COLS];
	bool		nulls[STATUS_COLS];
	int64		hot,
				in_filter,
				lookups,
				found,
				moved,
				disk_us,
				rebuild_ms;
	int32		nsegs = 0;
	bool		ready;

	check_loaded();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "adstream: return type must be a row type");
	memset(nulls, 0, sizeof(nulls));

	LWLockAcquire(state->lock, LW_SHARED);
	rebuild_ms = state->rebuild_ms;
	for (int32 t = 0; t < MAX_SEGMENTS; t++)
		nsegs += state->segs[t].live;
	ready = state->ready && state->database == MyDatabaseId;
	LWLockRelease(state->lock);
	/* each part's counts under its lock, one part at a time */
	hot = in_filter = moved = 0;
	for (int p = 0; p < NPARTS; p++)
	{
		LWLockAcquire(PART(p)->lock, LW_SHARED);
		hot += PART(p)->nhot;
		in_filter += PART(p)->in_filter;
		moved += (int64) PART(p)->moved;
		LWLockRelease(PART(p)->lock);
	}
	lookups = (int64) pg_atomic_read_u64(&state->disk_lookups);
	found = (int64) pg_atomic_read_u64(&state->disk_found);
	disk_us = (int64) pg_atomic_read_u64(&state->disk_us);

	values[0] = Int64GetDatum(adstream_dedup_index_size);
	values[1] = Int64GetDatum(hot + in_filter);
	values[2] = Int64GetDatum((int64) ads_dedup_index_shmem_size());
	values[3] = BoolGetDatum(ready);
	values[4] = Int64GetDatum(hot);
	values[5] = Int64GetDatum(in_filter);
	values[6] = Int32GetDatum(nsegs);
	values[7] = Int64GetDatum(moved);
	values[8] = Int64GetDatum(lookups);
	values[9] = Int64GetDatum(found);
	values[10] = Int64GetDatum(disk_us / 1000);
	values[11] = Int64GetDatum(rebuild_ms);
	if (desc->natts < STATUS_COLS)
		elog(ERROR, "adstream: dedup_index_status() has %d columns; run ALTER EXTENSION adstream UPDATE", desc->natts);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
