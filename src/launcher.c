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
 * The launcher is woken by a latch when a source changes (commit hook in
 * adstream.c) and when a worker starts or stops (bgw_notify_pid), and
 * otherwise polls every adstream.launcher_naptime.
 */
#include "launcher.h"

#include <signal.h>

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
#include "utils/timestamp.h"

#include "catalog.h"
#include "guc.h"
#include "maintenance.h"
#include "registry.h"
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
} DesiredWorker;

/* Launcher-local bookkeeping parallel to the shared slots. */
typedef struct LocalSlot
{
	BackgroundWorkerHandle *handle;
	bool		stop_requested;
	TimestampTz started_at;
} LocalSlot;

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
static TimestampTz last_no_slot_warning;

static long reconcile(DesiredWorker *desired, int ndesired);

void
ads_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Never on a standby: the postmaster starts it when recovery ends, at a promotion too. */
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "adstream", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "adstream_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "adstream launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "adstream launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
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
 * Only the enabled sources and sinks of this installation run: a row whose
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
		SPI_execute_with_args(psprintf("SELECT id, workers, generation, name, false FROM adstream.sources "
									   "WHERE enabled%s UNION ALL "
									   "SELECT id, 1, generation, name, true FROM adstream.sinks "
									   "WHERE enabled%s ORDER BY 5, 1", mine, mine),
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
		wait_ms = reconcile(desired, Max(ndesired, 0));
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
		snprintf(bgw.bgw_name, BGW_MAXLEN, "adstream publisher of sink %s", d->name);
		strlcpy(bgw.bgw_type, "adstream publisher", BGW_MAXLEN);
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
	strlcpy(slot->state, "starting", ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);

	if (!RegisterDynamicBackgroundWorker(&bgw, &local_slots[slotno].handle))
	{
		TimestampTz now = GetCurrentTimestamp();

		SpinLockAcquire(&slot->mutex);
		slot->in_use = false;
		SpinLockRelease(&slot->mutex);
		local_slots[slotno].handle = NULL;
		if (TimestampDifferenceExceeds(last_no_slot_warning, now, 60000))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("adstream could not start the %s of %s \"%s\"",
							publisher ? "publisher" : "consumer",
							ads_worker_kind_owner(d->kind), d->name),
					 errhint("Raise max_worker_processes (it must also cover other background workers) and restart the server.")));
			last_no_slot_warning = now;
		}
		return false;
	}
	local_slots[slotno].stop_requested = false;
	local_slots[slotno].started_at = GetCurrentTimestamp();
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
				nworkers;
	char		name[NAMEDATALEN];

	SpinLockAcquire(&slot->mutex);
	kind = slot->kind;
	owner_id = slot->owner_id;
	worker_index = slot->worker_index;
	nworkers = slot->nworkers;
	strlcpy(name, slot->owner_name, NAMEDATALEN);
	slot->in_use = false;
	slot->pid = 0;
	SpinLockRelease(&slot->mutex);

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
		if (kind == ADS_WORKER_PUBLISHER)
			ereport(LOG,
					(errmsg("adstream publisher of sink \"%s\" exited unexpectedly; restarting in %ld ms",
							name, delay)));
		else
			ereport(LOG,
					(errmsg("adstream consumer %d/%d of source \"%s\" exited unexpectedly; restarting in %ld ms",
							worker_index + 1, nworkers, name, delay)));
	}
	if (ls->handle)
		pfree(ls->handle);
	ls->handle = NULL;
	ls->stop_requested = false;
}

static long
reconcile(DesiredWorker *desired, int ndesired)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = adstream_launcher_naptime_ms;

	/* 1. Reap stopped workers; stop unwanted ones. */
	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *slot = &ads_registry->slots[i];
		LocalSlot  *ls = &local_slots[i];
		pid_t		pid;
		bool		wanted = false;

		if (ls->handle == NULL)
			continue;
		if (GetBackgroundWorkerPid(ls->handle, &pid) == BGWH_STOPPED)
		{
			reap_slot(i);
			continue;
		}
		for (int d = 0; d < ndesired; d++)
			if (desired[d].kind == slot->kind &&
				desired[d].owner_id == slot->owner_id &&
				desired[d].generation == slot->generation &&
				desired[d].nworkers == slot->nworkers)
				wanted = true;
		if (!wanted && !ls->stop_requested)
		{
			TerminateBackgroundWorker(ls->handle);
			ls->stop_requested = true;
		}
	}

	/* 2. Start what is missing. */
	for (int d = 0; d < ndesired; d++)
	{
		for (int w = 0; w < desired[d].nworkers; w++)
		{
			int			free_slot = -1;
			bool		running = false;
			Backoff    *b;

			for (int i = 0; i < ads_registry->nslots; i++)
			{
				AdsWorkerSlot *slot = &ads_registry->slots[i];

				if (local_slots[i].handle == NULL)
				{
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
			b = get_backoff(desired[d].kind, desired[d].owner_id, w);
			if (b->not_before > now)
			{
				long		ms = (long) ((b->not_before - now) / 1000) + 1;

				wait_ms = Min(wait_ms, ms);
				continue;
			}
			if (free_slot < 0)
			{
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
	return wait_ms;
}

void
adstream_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(adstream_database, NULL, 0);

	local_slots = MemoryContextAllocZero(TopMemoryContext, sizeof(LocalSlot) * ads_registry->nslots);
	backoffs = MemoryContextAllocZero(TopMemoryContext, sizeof(Backoff) * ads_registry->nslots * 2);

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
		/* Maintenance where pg_cron does not run it (src/maintenance.c). */
		wait_ms = Min(wait_ms, ads_maintenance_round());
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* Our dynamic workers are stopped by the postmaster at shutdown. */
	proc_exit(0);
}
