/*
 * dedup_index.c
 *     Exact deduplication of ad events: a shared-memory index of the event
 *     ids seen within the dedup horizon, made durable by adstream.dedup_log.
 *
 * Each entry maps (source, event id) to the transaction that claimed it and
 * the event-time hour of the claim.  A batch claims its candidate ids under
 * the index lock and judges what it finds the way a unique index judges a
 * heap tuple:
 *   - no entry, or one whose transaction aborted: the id is new; claim it;
 *   - an entry whose transaction committed (or is frozen): a duplicate;
 *   - an entry whose transaction is still running (another worker's batch
 *     holds the same id): a duplicate provided that transaction commits.
 *     The batch goes on without waiting and remembers the transaction;
 *     ads_dedup_confirm(), before the batch writes what other batches also
 *     write (and so before it commits), waits for each such transaction to
 *     end and fails the batch (to be retried) if one did not commit.  So a
 *     batch commits a duplicate only once the claim it is a duplicate of
 *     has committed: the outcome is the one
 *     waiting at the claim would give, but a worker no longer stops in the
 *     middle of its batch for another's (issue #12: with 4 workers 25-30%
 *     of their time went to those waits).  By the time a batch confirms,
 *     the batch it depends on, which claimed earlier, has usually committed.
 * A batch claims all its ids in one go under the index lock, without
 * waiting, so a batch only ever depends on batches that claimed before it:
 * the confirm waits cannot form a cycle among themselves (a cycle through
 * row locks as well is broken by the deadlock detector, and the batch is
 * retried).
 *
 * Durability: the same transaction appends the claimed ids, one row per
 * event-time hour, to adstream.dedup_log (partitioned by that hour).  The
 * index is in shared memory, so after a crash restart it is empty; the first
 * ad-events worker to start rebuilds it from dedup_log before any id is
 * judged (every batch checks), and every other worker waits for that.
 *
 * Settling: the backend remembers the entries its batch claimed.  When the
 * transaction has ended it freezes them (committed) or removes them
 * (aborted), and a worker that exits in the middle of a batch does the same
 * on its way out.  So no entry outlives its claimer unsettled, and an
 * entry's transaction status is only ever asked while clog surely holds it
 * (clog may be truncated long before the hour expires; an abandoned claim
 * judged then would count as committed and lose the event).
 *
 * Expiry is per source and follows the table: adstream.expire_dedup_state()
 * removes a source's dedup_log rows of the hours behind its slowest
 * partition minus dedup_horizon, records up to where (sources.
 * dedup_expired_before, which batches judge too_late against) and forgets
 * the same hours here (adstream._dedup_forget), under the lock that batches
 * hold shared (ads_lock "adstream.dedup_expiry").
 *
 * The index has a fixed capacity (adstream.dedup_index_size entries).  When
 * it is full a batch fails with an error naming the setting, and is retried:
 * ingestion stops rather than forgets an id it should remember.
 */
#include "dedup_index.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
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
#include "utils/timestamp.h"

#include "event_time.h"
#include "guc.h"
#include "txn.h"

typedef struct DedupKey
{
	int32		source_id;
	uint8		id[16];
} DedupKey;

typedef struct DedupEntry
{
	DedupKey	key;
	TransactionId xid;			/* claimer; FrozenTransactionId once committed */
	int32		hour;			/* event-time hour of the claim, since the epoch */
} DedupEntry;

typedef struct DedupIndexState
{
	LWLock	   *lock;			/* protects everything below and the hash */
	Oid			database;		/* whose adstream.dedup_log the index mirrors */
	Oid			relid;			/* that dedup_log, to notice a re-created extension */
	bool		ready;			/* rebuilt from it since the server started */
} DedupIndexState;

static DedupIndexState *state = NULL;
static HTAB *index_hash = NULL;

#define REBUILD_FETCH 64

Size
ads_dedup_index_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(DedupIndexState)),
					hash_estimate_size(adstream_dedup_index_size, sizeof(DedupEntry)));
}

void
ads_dedup_index_shmem_request(void)
{
	RequestAddinShmemSpace(ads_dedup_index_shmem_size());
	RequestNamedLWLockTranche("adstream dedup index", 1);
}

/* Called with AddinShmemInitLock held. */
void
ads_dedup_index_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	state = ShmemInitStruct("adstream dedup index state", sizeof(DedupIndexState), &found);
	if (!found)
	{
		memset(state, 0, sizeof(DedupIndexState));
		state->lock = &(GetNamedLWLockTranche("adstream dedup index"))->lock;
	}
	info.keysize = sizeof(DedupKey);
	info.entrysize = sizeof(DedupEntry);
	index_hash = ShmemInitHash("adstream dedup index", adstream_dedup_index_size,
							   adstream_dedup_index_size, &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
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
	return relid;
}

/* Removes every entry; the caller holds the lock exclusively. */
static void
clear_all(void)
{
	HASH_SEQ_STATUS seq;
	DedupEntry *e;

	hash_seq_init(&seq, index_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		hash_search(index_hash, &e->key, HASH_REMOVE, NULL);
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

/*
 * Rebuild the index from adstream.dedup_log if it does not mirror it yet.
 * Workers call this when they start and before every batch; after a start or
 * a crash restart the first caller does the work while the others wait on
 * its lock and then find the index ready.
 */
void
ads_dedup_index_prepare(void)
{
	Oid			relid;
	bool		ready;
	Portal		portal;
	uint64		loaded = 0;

	check_loaded();
	relid = dedup_log_relid();

	LWLockAcquire(state->lock, LW_SHARED);
	ready = state->ready && state->database == MyDatabaseId && state->relid == relid;
	LWLockRelease(state->lock);
	if (ready)
		return;

	(void) ads_lock("adstream.dedup_index", 0, true, false, true);

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	ready = state->ready && state->database == MyDatabaseId && state->relid == relid;
	if (!ready)
	{
		clear_all();
		state->ready = false;
		state->database = MyDatabaseId;
		state->relid = relid;
	}
	LWLockRelease(state->lock);
	if (ready)
		return;

	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT source_id, (extract(epoch FROM hour) / 3600)::int4, ids "
									   "FROM adstream.dedup_log",
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, REBUILD_FETCH);
		if (SPI_processed == 0)
			break;
		LWLockAcquire(state->lock, LW_EXCLUSIVE);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			DedupKey	key;
			int32		hour;
			bytea	   *ids;
			int			n;

			memset(&key, 0, sizeof(key));
			key.source_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			hour = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			ids = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
			n = VARSIZE_ANY_EXHDR(ids) / 16;
			for (int i = 0; i < n; i++)
			{
				bool		found;
				DedupEntry *e;

				memcpy(key.id, VARDATA_ANY(ids) + 16 * i, 16);
				e = hash_search(index_hash, &key, HASH_ENTER_NULL, &found);
				if (e == NULL)
				{
					LWLockRelease(state->lock);
					full_error();
				}
				e->xid = FrozenTransactionId;
				e->hour = hour;
				loaded++;
			}
		}
		LWLockRelease(state->lock);
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->ready = true;
	LWLockRelease(state->lock);
	ereport(LOG,
			(errmsg("adstream: dedup index rebuilt from adstream.dedup_log: %llu event ids",
					(unsigned long long) loaded)));
}

/*
 * Claims of this backend's current batch transaction that are not settled
 * yet: every entry whose xid is not frozen belongs to one of these lists,
 * in a backend that is alive.  That is what makes an entry's xid safe to
 * judge by its transaction's status: it is in progress, or has just ended
 * and is about to be settled here, so clog always knows it.
 */
typedef struct PendingClaim
{
	DedupEntry *entry;
	DedupKey	key;
} PendingClaim;

static PendingClaim *pending = NULL;
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

static void
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
		pending_cap = cap;
	}
	Assert(npending == 0 || pending_xid == xid);
	pending_xid = xid;
	pending[npending].entry = e;
	pending[npending].key = e->key;
	npending++;
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
	if (TransactionIdDidCommit(e->xid))
	{
		e->xid = FrozenTransactionId;
		return true;
	}
	return false;
}

/*
 * Claim ids (sorted, distinct) for the current transaction.  is_new[i] says
 * whether ids[i] is new, which also means it is now claimed.  The claims are
 * settled by ads_dedup_settle() after the transaction ends, or when the
 * process exits.
 */
void
ads_dedup_claim(int32 source_id, int n, const uint8 *const *ids, const int32 *hours,
				bool *is_new)
{
	TransactionId xid = GetTopTransactionId();
	DedupKey	key;

	memset(&key, 0, sizeof(key));
	key.source_id = source_id;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		DedupEntry *e;
		bool		found;

		memcpy(key.id, ids[i], 16);
		e = hash_search(index_hash, &key, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			LWLockRelease(state->lock);
			full_error();
		}
		if (found && e->xid != FrozenTransactionId &&
			!TransactionIdIsCurrentTransactionId(e->xid) &&
			TransactionIdIsInProgress(e->xid))
		{
			/*
			 * Another batch holds this id: a duplicate if that batch
			 * commits, which ads_dedup_confirm() makes sure of before this
			 * one commits.
			 */
			is_new[i] = false;
			remember_dependency(e->xid);
			continue;
		}
		if (found && (TransactionIdIsCurrentTransactionId(e->xid) || claimer_committed(e)))
		{
			is_new[i] = false;
			continue;
		}
		e->xid = xid;
		e->hour = hours[i];
		is_new[i] = true;
		remember_claim(e, xid);
	}
	LWLockRelease(state->lock);
}

/*
 * Freeze the pending claims if their transaction committed, remove them if
 * not.  An entry expired since (its element possibly reused for another id)
 * or taken over by another transaction no longer has this key and xid, and
 * is left alone; a freed element that still has them may be frozen
 * harmlessly, since it is overwritten when reused.
 */
static void
settle_pending(bool committed)
{
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < npending; i++)
	{
		DedupEntry *e = pending[i].entry;

		if (e->xid != pending_xid ||
			memcmp(&e->key, &pending[i].key, sizeof(DedupKey)) != 0)
			continue;
		if (committed)
			e->xid = FrozenTransactionId;
		else
			hash_search(index_hash, &pending[i].key, HASH_REMOVE, NULL);
	}
	LWLockRelease(state->lock);
	npending = 0;
	pending_xid = InvalidTransactionId;
}

/*
 * Before the batch writes shared keys and commits: every batch whose
 * in-progress claim this one took as a duplicate must have committed.  Waits
 * for each to end;
 * if one rolled back, its id is new after all, so this batch fails and is
 * retried from its committed offsets (the id is then claimed by whichever
 * batch reads it first).
 */
void
ads_dedup_confirm(void)
{
	for (int i = 0; i < ndepends; i++)
	{
		TransactionId other = depends[i];

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
}

void
ads_dedup_settle(bool committed)
{
	ndepends = 0;
	if (npending > 0)
		settle_pending(committed);
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

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->database == MyDatabaseId)
	{
		hash_seq_init(&seq, index_hash);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			Cutoff	   *c = hash_search(cutoffs, &e->key.source_id, HASH_FIND, NULL);

			if (c == NULL || (int64) e->hour + 1 <= c->upto_hour)
			{
				hash_search(index_hash, &e->key, HASH_REMOVE, NULL);
				forgotten++;
			}
		}
	}
	LWLockRelease(state->lock);
	hash_destroy(cutoffs);
	PG_RETURN_INT64(forgotten);
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
PG_FUNCTION_INFO_V1(adstream_dedup_index_status);
Datum
adstream_dedup_index_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int64		entries;
	bool		ready;

	check_loaded();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "adstream: return type must be a row type");

	LWLockAcquire(state->lock, LW_SHARED);
	entries = hash_get_num_entries(index_hash);
	ready = state->ready && state->database == MyDatabaseId;
	LWLockRelease(state->lock);

	values[0] = Int64GetDatum(adstream_dedup_index_size);
	values[1] = Int64GetDatum(entries);
	values[2] = Int64GetDatum((int64) ads_dedup_index_shmem_size());
	values[3] = BoolGetDatum(ready);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
