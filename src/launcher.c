/*
 * launcher.c
 *     The static background worker that keeps the workers running: one
 *     consumer per (enabled source, worker index) and one publisher per
 *     enabled sink.
 *
 * States of a worker (kind, source or sink, index), as the launcher sees them:
 *   missing  -> start a dynamic worker (after its backoff, if it crashed)
 *   running  -> nothing, unless its source or sink was paused, dropped or
 *               changed generation: then it is asked to stop (SIGTERM)
 *   stopped  -> if we asked for it, the slot is freed; otherwise the worker
 *               failed, and it is restarted after 1 s, 2 s, 4 s ... 60 s.
 * Status (issue #14): a failed worker keeps its slot while it waits for its
 * restart ("restarting", with the error that ended it), and so does one
 * for which the postmaster has no background worker slot ("no worker
 * slot"), so that source_status and sink_status show why nothing runs.
 * src/status.c records the slots' changes in adstream.status_history.
 * The launcher is woken by a latch when a source changes (commit hook in
 * adstream.c) and when a worker starts or stops (bgw_notify_pid), and
 * otherwise polls every adstream.launcher_naptime.
 */
#include "launcher.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "guc.h"
#include "maintenance.h"
#include "registry.h"
#include "status.h"
#include "txn.h"
#include "worker.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define HEALTHY_AFTER_MS 60000

typedef struct DesiredWorker
{
	AdsWorkerKind kind;
	int32		owner_id;		/* the source's id, or the sink's */
	int32		nworkers;
	int64		generation;
	char		name[NAMEDATALEN];
	bool		enabled;		/* false: paused, read only to say so to its workers */
} DesiredWorker;

/* Launcher-local bookkeeping parallel to the shared slots. */
typedef struct LocalSlot
{
	BackgroundWorkerHandle *handle;
	bool		stop_requested;
	TimestampTz started_at;
	TimestampTz stop_requested_at;	/* SIGTERM; SIGUSR2 (die) after ADS_STOP_GRACE_MS */
	bool		stop_forced;
	bool		reserved;		/* status (issue #14): no process, kept for its restart */
} LocalSlot;

/*
 * How long a worker asked to stop may take to reach a safe point (a batch
 * written, a Kafka transaction committed: COMMIT_TIMEOUT_MS in publisher.c)
 * before it is terminated at once (worker.c, "Stopping cleanly").
 */
#define ADS_STOP_GRACE_MS 15000

/*
 * The partition count of a source's topic, as its consumers last saw it
 * (AdsWorkerSlot.topic_partitions): the launcher starts no worker with an
 * index at or above it (issue #14, workers capped).
 */
typedef struct TopicSize
{
	int32		owner_id;
	int32		partitions;
} TopicSize;

/* Restart backoff per (kind, owner, index), kept across slot reuse. */
typedef struct Backoff
{
	AdsWorkerKind kind;
	int32		owner_id;
	int32		worker_index;
	int32		failures;		/* since it last ran for HEALTHY_AFTER_MS */
	int32		restarts;		/* all unexpected exits */
	TimestampTz not_before;
} Backoff;

static LocalSlot *local_slots;
static Backoff *backoffs;
static int	nbackoffs;
static TopicSize *topic_sizes;
static int	ntopic_sizes;
static TimestampTz last_no_slot_warning;

static long reconcile(DesiredWorker *desired, int ndesired);

/* What the launcher knows of a source's partition count: 0 unknown. */
static int32
known_partitions(int32 owner_id)
{
	for (int i = 0; i < ntopic_sizes; i++)
		if (topic_sizes[i].owner_id == owner_id)
			return topic_sizes[i].partitions;
	return 0;
}

static void
note_partitions(int32 owner_id, int32 partitions)
{
	if (partitions <= 0)
		return;
	for (int i = 0; i < ntopic_sizes; i++)
		if (topic_sizes[i].owner_id == owner_id)
		{
			topic_sizes[i].partitions = partitions;
			return;
		}
	if (ntopic_sizes >= ads_registry->nslots * 2)
		ntopic_sizes = 0;		/* forget stale entries rather than grow */
	topic_sizes[ntopic_sizes].owner_id = owner_id;
	topic_sizes[ntopic_sizes++].partitions = partitions;
}

/*
 * The launcher starts in two steps (issue #14, section 3).  The static
 * worker registered here connects to no database, only to see whether
 * adstream.database exists: connecting to one that does not is a FATAL,
 * which the postmaster would repeat every few seconds until someone created
 * it.  While it does not exist, it waits quietly and says once why.  Once it
 * exists, it registers the launcher proper as a dynamic worker in that
 * database and exits with 0, which unregisters it: the launcher takes over
 * its worker slot.  The launcher proper has a restart time, so the
 * postmaster restarts it after a failure or a crash-restart, as it restarted
 * the static launcher before 0.6.
 */
/* Both launchers' registration: only the entry point differs. */
static void
launcher_bgw(BackgroundWorker *bgw, const char *function)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Never on a standby: the postmaster starts it when recovery ends, at a promotion too. */
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = 5;
	strlcpy(bgw->bgw_library_name, "adstream", BGW_MAXLEN);
	strlcpy(bgw->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(bgw->bgw_name, "adstream launcher", BGW_MAXLEN);
	strlcpy(bgw->bgw_type, "adstream launcher", BGW_MAXLEN);
}

void
ads_register_launcher(void)
{
	BackgroundWorker bgw;

	launcher_bgw(&bgw, "adstream_launcher_main");
	RegisterBackgroundWorker(&bgw);
}

/* The launcher proper, in adstream.database; false when no slot is free. */
static bool
register_database_launcher(void)
{
	BackgroundWorker bgw;

	launcher_bgw(&bgw, "adstream_launcher_db_main");
	if (!RegisterDynamicBackgroundWorker(&bgw, NULL))
		return false;
	SpinLockAcquire(&ads_registry->mutex);
	ads_registry->launcher_registered = true;
	SpinLockRelease(&ads_registry->mutex);
	return true;
}

/*
 * Whether the database exists, read as the autovacuum launcher reads
 * pg_database without a database: a heap scan (an index would need pg_class).
 */
static bool
database_exists(const char *name)
{
	bool		exists = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
		exists = (strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), name) == 0);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return exists;
}

/* The static worker: waits for adstream.database, then hands over. */
void
adstream_launcher_main(Datum arg)
{
	bool		said_missing = false;
	bool		said_no_slot = false;
	bool		registered;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* Restarted after it had handed over (it failed on its way out): done. */
	SpinLockAcquire(&ads_registry->mutex);
	registered = ads_registry->launcher_registered;
	SpinLockRelease(&ads_registry->mutex);
	if (registered)
		proc_exit(0);

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	ads_worker_set_application_name("adstream launcher");

	while (!ShutdownRequestPending)
	{
		CHECK_FOR_INTERRUPTS();
		ads_worker_reload_config();
		if (database_exists(adstream_database))
		{
			if (register_database_launcher())
			{
				if (said_missing)
					ereport(LOG,
							(errmsg("adstream: database \"%s\" exists now; the launcher starts in it",
									adstream_database)));
				proc_exit(0);	/* unregisters this static worker */
			}
			if (!said_no_slot)
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("adstream could not start its launcher: no background worker slot is free"),
						 errhint("Raise max_worker_processes and restart the server; the launcher tries again every 5 s.")));
			said_no_slot = true;
		}
		else if (!said_missing)
		{
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_DATABASE),
					 errmsg("adstream.database names database \"%s\", which does not exist; adstream waits for it",
							adstream_database),
					 errhint("Create it (CREATE DATABASE %s) and run CREATE EXTENSION adstream in it; no restart is needed. Or set adstream.database to an existing database and restart the server.",
							 quote_identifier(adstream_database))));
			said_missing = true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 5000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	proc_exit(0);
}

static void
launcher_detach(int code, Datum arg)
{
	ads_registry_clear_launcher();
}

static Backoff *
get_backoff(AdsWorkerKind kind, int32 owner_id, int32 worker_index)
{
	for (int i = 0; i < nbackoffs; i++)
		if (backoffs[i].kind == kind && backoffs[i].owner_id == owner_id &&
			backoffs[i].worker_index == worker_index)
			return &backoffs[i];
	if (nbackoffs >= ads_registry->nslots * 2)
		nbackoffs = 0;			/* forget stale entries rather than grow */
	memset(&backoffs[nbackoffs], 0, sizeof(Backoff));
	backoffs[nbackoffs].kind = kind;
	backoffs[nbackoffs].owner_id = owner_id;
	backoffs[nbackoffs].worker_index = worker_index;
	return &backoffs[nbackoffs++];
}

/*
 * Reads the sources to run, in a short transaction.  Returns -1 when the
 * extension is not installed in this database (yet).
 *
 * Only the enabled sources and sinks of this installation run (the paused
 * ones are read too, so that their workers are told why they stop): a row whose
 * origin is another's came from a dump and is held until
 * adstream.adopt_restored() (pg_restore loads the sources before their
 * offsets, each table in its own transaction).  A schema older than 0.5 has
 * no origins; its workers start and ask for ALTER EXTENSION ... UPDATE.
 */
static int
read_desired(DesiredWorker **out)
{
	int			n = -1;
	const char *mine = NULL;

	ads_begin_tx("adstream launcher: reading sources");

	if (SPI_execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute "
					"WHERE attrelid = pg_catalog.to_regclass('adstream.sinks') "
					"AND attname = 'origin' AND NOT attisdropped) "
					"FROM pg_catalog.pg_extension WHERE extname = 'adstream'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;

		mine = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) ?
			" AND origin = $1" : "";
	}
	if (mine != NULL &&
		SPI_execute_with_args(psprintf("SELECT id, workers, generation, name, false, enabled FROM adstream.sources "
									   "WHERE true%s UNION ALL "
									   "SELECT id, 1, generation, name, true, enabled FROM adstream.sinks "
									   "WHERE true%s ORDER BY 5, 1", mine, mine),
							  1, (Oid[]) {TEXTOID},
							  (Datum[]) {CStringGetTextDatum(ads_catalog_origin())},
							  NULL, true, 0) == SPI_OK_SELECT)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		n = (int) SPI_processed;
		*out = palloc0(sizeof(DesiredWorker) * Max(n, 1));
		MemoryContextSwitchTo(old);
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *name;

			(*out)[i].owner_id = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
			(*out)[i].nworkers = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
			(*out)[i].generation = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
			name = SPI_getvalue(tup, td, 4);
			strlcpy((*out)[i].name, name, NAMEDATALEN);
			(*out)[i].kind = DatumGetBool(SPI_getbinval(tup, td, 5, &isnull)) ?
				ADS_WORKER_PUBLISHER : ADS_WORKER_CONSUMER;
			(*out)[i].enabled = DatumGetBool(SPI_getbinval(tup, td, 6, &isnull));
		}
	}

	ads_end_tx();
	return n;
}

/*
 * One round of the launcher's work.  An error here (the extension being
 * dropped under us) is logged and the round
 * retried; the launcher itself must not exit, because a new launcher cannot
 * adopt the running workers and would have to restart them all.
 */
static long
launcher_round(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	DesiredWorker *desired = NULL;
	long		wait_ms = adstream_launcher_naptime_ms;

	PG_TRY();
	{
		int			ndesired = read_desired(&desired);

		/* Without the extension nothing may run: stop everything. */
		wait_ms = reconcile(desired, ndesired);
		if (ndesired < 0)
			wait_ms = Max(wait_ms, 5000);
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream launcher: %s", edata->message),
				 errhint("The launcher tries again in a second; running workers are not affected.")));
		FreeErrorData(edata);
		wait_ms = 1000;
	}
	PG_END_TRY();
	if (desired)
		pfree(desired);
	return wait_ms;
}

static bool
start_worker(int slotno, const DesiredWorker *d, int worker_index, int32 restarts)
{
	BackgroundWorker bgw;
	AdsWorkerArgs args;
	AdsWorkerSlot *slot = &ads_registry->slots[slotno];
	bool		publisher = (d->kind == ADS_WORKER_PUBLISHER);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "adstream", BGW_MAXLEN);
	if (publisher)
	{
		strlcpy(bgw.bgw_function_name, "adstream_publisher_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "adstream sink %s", d->name);
		strlcpy(bgw.bgw_type, "adstream sink", BGW_MAXLEN);
	}
	else
	{
		strlcpy(bgw.bgw_function_name, "adstream_consumer_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "adstream consumer %d/%d of source %s",
				 worker_index + 1, d->nworkers, d->name);
		strlcpy(bgw.bgw_type, "adstream consumer", BGW_MAXLEN);
	}
	bgw.bgw_notify_pid = MyProcPid;

	args.slot = slotno;
	args.kind = d->kind;
	args.owner_id = d->owner_id;
	args.worker_index = worker_index;
	args.nworkers = d->nworkers;
	args.generation = d->generation;
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	SpinLockAcquire(&slot->mutex);
	/* Status (issue #14): a slot kept for this worker keeps its error until it recovers. */
	if (!(local_slots[slotno].reserved && slot->in_use && slot->kind == d->kind &&
		  slot->owner_id == d->owner_id && slot->worker_index == worker_index &&
		  slot->database == MyDatabaseId))
	{
		slot->last_error[0] = '\0';
		slot->last_error_at = 0;
		slot->error_class = ADS_ERRCLASS_NONE;
		slot->errors_total = 0;
		slot->recent_error[0] = '\0';
		slot->recent_error_at = 0;
		slot->connected = ADS_CONN_UNKNOWN;
		slot->connected_since = 0;
		slot->hw_current_at = 0;
		slot->topic_partitions = 0;
	}
	slot->in_use = true;
	slot->database = MyDatabaseId;
	slot->kind = d->kind;
	slot->owner_id = d->owner_id;
	strlcpy(slot->owner_name, d->name, NAMEDATALEN);
	slot->worker_index = worker_index;
	slot->nworkers = d->nworkers;
	slot->generation = d->generation;
	slot->pid = 0;
	slot->restarts = restarts;
	slot->npositions = 0;
	slot->started_at = 0;
	slot->last_commit_at = 0;
	slot->stop_reason[0] = '\0';
	slot->topic_partitions = 0;
	strlcpy(slot->state, "starting", ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);

	if (!RegisterDynamicBackgroundWorker(&bgw, &local_slots[slotno].handle))
	{
		TimestampTz now = GetCurrentTimestamp();
		char		msg[ADS_ERROR_LEN];

		/*
		 * Status (issue #14): the slot stays, without a process, so that
		 * the worker's rows say why nothing reads its partitions; the
		 * launcher tries again every round.
		 */
		snprintf(msg, sizeof(msg),
				 "no background worker slot: max_worker_processes (%d) is used up; raise it and restart the server",
				 max_worker_processes);
		SpinLockAcquire(&slot->mutex);
		strlcpy(slot->state, "no worker slot", ADS_STATE_LEN);
		SpinLockRelease(&slot->mutex);
		ads_slot_set_error_class(slot, ADS_ERRCLASS_EXIT, msg);
		local_slots[slotno].handle = NULL;
		local_slots[slotno].reserved = true;
		if (TimestampDifferenceExceeds(last_no_slot_warning, now, 60000))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg(publisher ? "adstream could not start the worker of sink \"%s\"" :
							"adstream could not start a consumer of source \"%s\"", d->name),
					 errhint("Raise max_worker_processes (it must also cover other background workers) and restart the server.")));
			last_no_slot_warning = now;
		}
		return false;
	}
	local_slots[slotno].stop_requested = false;
	local_slots[slotno].stop_forced = false;
	local_slots[slotno].started_at = GetCurrentTimestamp();
	local_slots[slotno].reserved = false;
	return true;
}

/*
 * A slot whose worker has stopped: decide whether that was a failure, and
 * free the slot.
 */
static void
reap_slot(int slotno)
{
	AdsWorkerSlot *slot = &ads_registry->slots[slotno];
	LocalSlot  *ls = &local_slots[slotno];
	AdsWorkerKind kind;
	int32		owner_id,
				worker_index,
				nworkers,
				partitions;
	char		name[NAMEDATALEN];
	char		error[ADS_ERROR_LEN];

	SpinLockAcquire(&slot->mutex);
	kind = slot->kind;
	owner_id = slot->owner_id;
	worker_index = slot->worker_index;
	nworkers = slot->nworkers;
	partitions = slot->topic_partitions;
	strlcpy(name, slot->owner_name, NAMEDATALEN);
	strlcpy(error, slot->last_error, ADS_ERROR_LEN);

	/*
	 * A consumer with no partition of its topic stops by itself (consumer.c):
	 * not a failure.  It is not started again until the topic has grown.
	 */
	if (kind == ADS_WORKER_CONSUMER && partitions > 0 && worker_index >= partitions)
		ls->stop_requested = true;
	/* Status (issue #14): a failed worker's slot stays, with its error, until its restart. */
	slot->in_use = !ls->stop_requested;
	slot->pid = 0;
	slot->npositions = 0;
	if (!ls->stop_requested)
		strlcpy(slot->state, "restarting", ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
	ls->reserved = !ls->stop_requested;
	if (kind == ADS_WORKER_CONSUMER)
		note_partitions(owner_id, partitions);

	if (!ls->stop_requested)
	{
		Backoff    *b = get_backoff(kind, owner_id, worker_index);
		TimestampTz now = GetCurrentTimestamp();
		long		delay;

		if (TimestampDifferenceExceeds(ls->started_at, now, HEALTHY_AFTER_MS))
			b->failures = 0;
		delay = ads_backoff_ms(b->failures, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
		b->failures++;
		b->restarts++;
		b->not_before = TimestampTzPlusMilliseconds(now, delay);
		SpinLockAcquire(&slot->mutex);
		slot->restarts = b->restarts;
		SpinLockRelease(&slot->mutex);
		if (kind == ADS_WORKER_PUBLISHER)
			ereport(LOG,
					(errmsg("adstream sink \"%s\" exited unexpectedly; restarting in %ld ms",
							name, delay),
					 error[0] ? errdetail("Its error: %s", error) : 0));
		else
			ereport(LOG,
					(errmsg("adstream consumer %d/%d of source \"%s\" exited unexpectedly; restarting in %ld ms",
							worker_index + 1, nworkers, name, delay),
					 error[0] ? errdetail("Its error: %s", error) : 0));
	}
	if (ls->handle)
		pfree(ls->handle);
	ls->handle = NULL;
	ls->stop_requested = false;
}

/*
 * Why a running worker is not wanted any more, for its LOG line (it logs
 * it as it stops): NULL when it is wanted.
 */
static const char *
stop_reason(AdsWorkerSlot *slot, DesiredWorker *desired, int ndesired, char *buf, size_t len)
{
	const char *what = ads_worker_kind_owner(slot->kind);

	if (ndesired < 0)
		return "the extension was dropped (or is not installed) in this database";
	for (int d = 0; d < ndesired; d++)
	{
		DesiredWorker *w = &desired[d];

		if (w->kind != slot->kind || w->owner_id != slot->owner_id)
			continue;
		if (!w->enabled)
			snprintf(buf, len, "the %s was paused", what);
		else if (w->generation == slot->generation && w->nworkers == slot->nworkers)
			return NULL;
		else if (strcmp(w->name, slot->owner_name) != 0)
			snprintf(buf, len, "the %s was renamed to \"%s\"", what, w->name);
		else if (w->nworkers != slot->nworkers)
			snprintf(buf, len, "the source's workers changed from %d to %d", slot->nworkers, w->nworkers);
		else
			snprintf(buf, len, "the %s was changed (altered, resumed or adopted); it restarts with its new settings", what);
		return buf;
	}
	snprintf(buf, len, "the %s was dropped", what);
	return buf;
}

static long
reconcile(DesiredWorker *desired, int ndesired)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = adstream_launcher_naptime_ms;
	AdsUnplaced unplaced[ADS_MAX_UNPLACED];
	int			nunplaced = 0;

	/* 1. Reap stopped workers; stop unwanted ones, saying why. */
	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *slot = &ads_registry->slots[i];
		LocalSlot  *ls = &local_slots[i];
		pid_t		pid;
		const char *why;
		char		buf[ADS_STOP_REASON_LEN];

		if (ls->handle == NULL)
		{
			/* Status (issue #14): a kept slot whose worker is no longer wanted is freed. */
			if (ls->reserved)
			{
				bool		wanted = false;

				for (int d = 0; d < ndesired; d++)
					if (desired[d].kind == slot->kind &&
						desired[d].owner_id == slot->owner_id &&
						desired[d].generation == slot->generation &&
						desired[d].nworkers == slot->nworkers)
						wanted = true;
				if (!wanted)
				{
					SpinLockAcquire(&slot->mutex);
					slot->in_use = false;
					strlcpy(slot->state, "stopped", ADS_STATE_LEN);
					SpinLockRelease(&slot->mutex);
					ls->reserved = false;
				}
			}
			continue;
		}
		if (GetBackgroundWorkerPid(ls->handle, &pid) == BGWH_STOPPED)
		{
			reap_slot(i);
			continue;
		}
		if (slot->kind == ADS_WORKER_CONSUMER)
			note_partitions(slot->owner_id, slot->topic_partitions);
		why = stop_reason(slot, desired, ndesired, buf, sizeof(buf));
		if (why != NULL && !ls->stop_requested)
		{
			ads_slot_set_stop_reason(slot, why);
			TerminateBackgroundWorker(ls->handle);
			ls->stop_requested = true;
			ls->stop_requested_at = now;
		}
		/* Not stopped in time (waiting for a lock, say): at once, now. */
		if (ls->stop_requested && !ls->stop_forced && ls->stop_requested_at != 0)
		{
			if (TimestampDifferenceExceeds(ls->stop_requested_at, now, ADS_STOP_GRACE_MS))
			{
				if (slot->kind == ADS_WORKER_PUBLISHER)
					ereport(LOG,
							(errmsg("adstream sink \"%s\" did not stop within %d s; terminating it",
									slot->owner_name, ADS_STOP_GRACE_MS / 1000)));
				else
					ereport(LOG,
							(errmsg("adstream consumer %d/%d of source \"%s\" did not stop within %d s; terminating it",
									slot->worker_index + 1, slot->nworkers, slot->owner_name,
									ADS_STOP_GRACE_MS / 1000)));
				if (pid != 0)
					kill(pid, SIGUSR2);	/* die() (worker.c) */
				ls->stop_forced = true;
			}
			else
				wait_ms = Min(wait_ms, 1000);
		}
	}

	/* 2. Start what is missing. */
	for (int d = 0; d < ndesired; d++)
	{
		int32		partitions = desired[d].kind == ADS_WORKER_CONSUMER ?
			known_partitions(desired[d].owner_id) : 0;

		if (!desired[d].enabled)
			continue;
		for (int w = 0; w < desired[d].nworkers; w++)
		{
			int			free_slot = -1;
			bool		running = false;
			Backoff    *b;

			int			kept_slot = -1;

			for (int i = 0; i < ads_registry->nslots; i++)
			{
				AdsWorkerSlot *slot = &ads_registry->slots[i];

				if (local_slots[i].handle == NULL)
				{
					/* Status (issue #14): the slot kept for this very worker, if any. */
					if (local_slots[i].reserved)
					{
						if (slot->kind == desired[d].kind && slot->owner_id == desired[d].owner_id &&
							slot->worker_index == w)
							kept_slot = i;
						continue;
					}
					if (free_slot < 0)
						free_slot = i;
					continue;
				}
				/* A stopping worker of an old generation still owns the partitions. */
				if (slot->kind == desired[d].kind &&
					slot->owner_id == desired[d].owner_id &&
					(slot->worker_index == w || local_slots[i].stop_requested))
					running = true;
			}
			if (running)
				continue;
			/* A worker without a partition would only take a slot. */
			if (partitions > 0 && w >= partitions)
				continue;
			if (kept_slot >= 0)
				free_slot = kept_slot;
			b = get_backoff(desired[d].kind, desired[d].owner_id, w);
			if (b->not_before > now)
			{
				long		ms = (long) ((b->not_before - now) / 1000) + 1;

				wait_ms = Min(wait_ms, ms);
				continue;
			}
			if (free_slot < 0)
			{
				/* Status (issue #14): shown as "no worker slot" in worker_status(). */
				if (nunplaced < ADS_MAX_UNPLACED)
				{
					AdsUnplaced *u = &unplaced[nunplaced++];

					memset(u, 0, sizeof(AdsUnplaced));
					u->database = MyDatabaseId;
					u->kind = desired[d].kind;
					u->owner_id = desired[d].owner_id;
					u->worker_index = w;
					strlcpy(u->owner_name, desired[d].name, NAMEDATALEN);
				}
				if (TimestampDifferenceExceeds(last_no_slot_warning, now, 60000))
				{
					ereport(WARNING,
							(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
							 errmsg("adstream has no free worker slot for %s \"%s\"",
									ads_worker_kind_owner(desired[d].kind), desired[d].name),
							 errhint("Raise adstream.max_workers (currently %d) and restart the server.",
									 adstream_max_workers)));
					last_no_slot_warning = now;
				}
				continue;
			}
			start_worker(free_slot, &desired[d], w, b->restarts);
		}
	}
	ads_registry_set_unplaced(nunplaced, unplaced);
	return wait_ms;
}

/* The launcher proper, in adstream.database. */
void
adstream_launcher_db_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(adstream_database, NULL, 0);
	ads_worker_set_application_name("adstream launcher");

	local_slots = MemoryContextAllocZero(TopMemoryContext, sizeof(LocalSlot) * ads_registry->nslots);
	backoffs = MemoryContextAllocZero(TopMemoryContext, sizeof(Backoff) * ads_registry->nslots * 2);
	topic_sizes = MemoryContextAllocZero(TopMemoryContext, sizeof(TopicSize) * ads_registry->nslots * 2);

	/*
	 * A previous launcher may have died and left workers we hold no handle
	 * for.  Ask them to stop; they release their slots on exit and are
	 * started again under our handles.
	 */
	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *slot = &ads_registry->slots[i];
		pid_t		pid;

		SpinLockAcquire(&slot->mutex);
		pid = slot->in_use ? slot->pid : 0;
		slot->in_use = false;
		SpinLockRelease(&slot->mutex);
		if (pid != 0)
			kill(pid, SIGTERM);
	}

	ads_registry_set_launcher(&MyProc->procLatch);
	before_shmem_exit(launcher_detach, (Datum) 0);

	ereport(LOG, (errmsg("adstream launcher started in database \"%s\"", adstream_database)));

	while (!ShutdownRequestPending)
	{
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		ads_worker_reload_config();

		wait_ms = launcher_round();
		/* Status (issue #14): the workers' changes into adstream.status_history. */
		wait_ms = Min(wait_ms, ads_status_round());
		/* Maintenance where pg_cron does not run it (src/maintenance.c). */
		wait_ms = Min(wait_ms, ads_maintenance_round());
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* Our dynamic workers are stopped by the postmaster at shutdown. */
	proc_exit(0);
}
