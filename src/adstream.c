/*
 * adstream.c
 *     Module entry: GUCs, shared memory for the worker registry, and the
 *     commit hook that wakes the launcher after sources change.
 */
#include "adstream.h"

#include <unistd.h>

#include "access/xact.h"
#include "utils/memutils.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/snapmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "common/hashfn.h"

#include "dedup_index.h"

PG_MODULE_MAGIC;

char	   *adstream_database = NULL;
char	   *adstream_node_name = NULL;
int			adstream_max_workers = 16;
int			adstream_batch_max_messages = 50000;
int			adstream_batch_max_ms = 100;
int			adstream_max_message_bytes = 1024 * 1024;
int			adstream_max_future_skew_s = 300;
int			adstream_dedup_horizon_s = 3600;
int			adstream_launcher_naptime_ms = 1000;
int			adstream_discovery_interval_s = 30;
int			adstream_attribution_window_s = 86400;
int			adstream_view_through_window_s = 0;
int			adstream_attribution_max_wait_s = 600;
int			adstream_minute_retention_s = 7 * 86400;
int			adstream_rejected_retention_s = 7 * 86400;

AdsShared  *ads_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_launcher_at_commit = false;

void		_PG_init(void);

static Size
ads_shmem_size(void)
{
	return add_size(offsetof(AdsShared, slots),
					mul_size(sizeof(AdsWorkerSlot), adstream_max_workers));
}

static void
ads_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ads_shmem_size());
	ads_dedup_index_shmem_request();
}

static void
ads_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ads_shared = ShmemInitStruct("adstream", ads_shmem_size(), &found);
	if (!found)
	{
		memset(ads_shared, 0, ads_shmem_size());
		SpinLockInit(&ads_shared->mutex);
		ads_shared->nslots = adstream_max_workers;
		for (int i = 0; i < adstream_max_workers; i++)
			SpinLockInit(&ads_shared->slots[i].mutex);
	}
	ads_dedup_index_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Sources are read by the launcher, so it must look only after the change
 * is committed; waking it earlier would make it see the old state and then
 * sleep for a whole naptime.
 */
static void
ads_xact_callback(XactEvent event, void *arg)
{
	if (!wake_launcher_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		ads_wake_launcher_now();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_launcher_at_commit = false;
}

void
ads_wake_launcher_now(void)
{
	Latch	   *latch = NULL;

	if (ads_shared == NULL)
		return;
	SpinLockAcquire(&ads_shared->mutex);
	if (ads_shared->launcher_pid != 0)
		latch = ads_shared->launcher_latch;
	SpinLockRelease(&ads_shared->mutex);
	if (latch)
		SetLatch(latch);
}

PG_FUNCTION_INFO_V1(adstream_wake_launcher);
Datum
adstream_wake_launcher(PG_FUNCTION_ARGS)
{
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * The SPI bracket every worker transaction uses: a short transaction with a
 * snapshot, reported in pg_stat_activity while it runs.
 */
void
ads_begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
ads_end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * adstream's own locks (expiry against batches, the dedup index rebuild, one
 * publisher per sink): advisory lock tags in a space that SQL's
 * pg_advisory_* functions cannot reach (they use field4 1 and 2), so that no
 * role without EXECUTE on adstream._lock() can take them and stall the
 * workers.  Returns whether the lock was taken (always, when waiting).
 */
#define ADS_LOCK_SPACE 0xAD5

bool
ads_lock(const char *name, int32 key, bool exclusive, bool session, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
						 hash_bytes((const unsigned char *) name, strlen(name)),
						 (uint32) key, ADS_LOCK_SPACE);
	return LockAcquire(&tag, exclusive ? ExclusiveLock : ShareLock, session, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/* adstream._lock(name, key, exclusive): ads_lock for the current transaction, waiting. */
PG_FUNCTION_INFO_V1(adstream_lock);
Datum
adstream_lock(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) ads_lock(name, PG_GETARG_INT32(1), PG_GETARG_BOOL(2), false, true);
	PG_RETURN_VOID();
}

void
ads_slot_set_state(AdsWorkerSlot *slot, const char *state)
{
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->state, state, ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
}

void
ads_slot_set_error(AdsWorkerSlot *slot, const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->last_error, msg, ADS_ERROR_LEN);
	slot->last_error_at = now;
	SpinLockRelease(&slot->mutex);
}

void
_PG_init(void)
{
	DefineCustomIntVariable("adstream.batch_max_messages",
							"Commit a batch once it holds this many messages.",
							NULL, &adstream_batch_max_messages, 50000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.batch_max_ms",
							"Commit a batch at the latest this long after its first message.",
							NULL, &adstream_batch_max_ms, 100, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_message_bytes",
							"Messages larger than this are dead-lettered as oversized.",
							NULL, &adstream_max_message_bytes, 1024 * 1024, 64, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_future_skew",
							"Events whose time is further ahead of the wall clock are dead-lettered.",
							NULL, &adstream_max_future_skew_s, 300, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dedup_horizon",
							"How far behind a source's event-time watermark an event id is remembered; older events are dead-lettered as too_late.",
							NULL, &adstream_dedup_horizon_s, 3600, 60, 30 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.launcher_naptime",
							"How often the launcher rechecks sources when nothing wakes it.",
							NULL, &adstream_launcher_naptime_ms, 1000, 100, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.partition_discovery_interval",
							"How often consumer workers look for new partitions of their topic.",
							NULL, &adstream_discovery_interval_s, 30, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.attribution_window",
							"An order is credited to the last click at most this long before it.",
							NULL, &adstream_attribution_window_s, 86400, 1, 90 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.view_through_window",
							"Without a matching click, credit the last impression this long before the order; 0 turns view-through off.",
							NULL, &adstream_view_through_window_s, 0, 0, 90 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.attribution_max_wait",
							"An order waits at most this long for the ad-events watermark to pass its time.",
							NULL, &adstream_attribution_max_wait_s, 600, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.minute_retention",
							"Minute aggregates older than this are dropped by adstream.drop_expired_partitions().",
							NULL, &adstream_minute_retention_s, 7 * 86400, 3600, 3650 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.rejected_retention",
							"Dead letters older than this are deleted by adstream.drop_expired_partitions().",
							NULL, &adstream_rejected_retention_s, 7 * 86400, 60, 3650 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
	{
		/* Loaded into a backend for its SQL functions only. */
		MarkGUCPrefixReserved("adstream");
		RegisterXactCallback(ads_xact_callback, NULL);
		return;
	}

	{
		/* Each installation's rows are its own in Pinot: the host name by default. */
		char		host[256];

		if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
			strlcpy(host, "adstream", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		DefineCustomStringVariable("adstream.node_name",
								   "Name of this adstream installation in published records (part of Pinot's primary key).",
								   "Give every node that feeds the same Pinot table its own name.",
								   &adstream_node_name, MemoryContextStrdup(TopMemoryContext, host),
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomStringVariable("adstream.database",
							   "Database in which the adstream workers run.",
							   NULL, &adstream_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_workers",
							"Maximum number of consumer workers (shared-memory slots).",
							"Each also needs a max_worker_processes slot.",
							&adstream_max_workers, 16, 1, 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	ads_dedup_index_define_guc();
	MarkGUCPrefixReserved("adstream");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ads_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ads_shmem_startup;

	RegisterXactCallback(ads_xact_callback, NULL);
	ads_register_launcher();
}
