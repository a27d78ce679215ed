/*
 * maintenance.c
 *     The launcher's share of maintenance: it runs the maintenance jobs
 *     (partitions ahead, retention, rollups) where pg_cron does not, keeps
 *     them scheduled in pg_cron where it does, and runs dedup expiry as soon
 *     as the dedup index is 80% full, so that a full index stops ingestion
 *     only while expiry cannot make room.
 *
 * What is due is decided in SQL, by adstream._maintenance_plan(), which also
 * schedules or unschedules the pg_cron jobs: the launcher, pg_cron and
 * adstream.maintenance_status read one list of jobs and their intervals
 * (adstream._maintenance_jobs()).  This file asks at most once a second and
 * runs each due job in a short transaction of its own, through
 * adstream.run_maintenance(job), which records the run.  A failed job is
 * logged and recorded in a fresh transaction (adstream._maintenance_failed)
 * and runs again after its interval; the launcher never exits for it, and
 * holds no transaction while it waits.
 *
 * After dedup expiry or retention, the consumers that are retrying a batch
 * (a full index fails it) are woken, so that they try again at once rather
 * than at the end of their backoff (up to 10 s).
 *
 * One job per call: the launcher looks after its workers between two jobs,
 * so a slow job delays a worker's (re)start by that one job only.  While a
 * job runs, SIGTERM ends the launcher at once (a shutdown must not wait for
 * a rollup refresh); between jobs it asks the loop to stop, as always.
 */
#include "maintenance.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "registry.h"
#include "txn.h"

#define PLAN_EVERY_MS 1000
#define MAX_DUE 8

/* The jobs the last plan found due, to run one per call. */
static char due[MAX_DUE][NAMEDATALEN];
static int	ndue = 0;
static TimestampTz next_plan_at = 0;

/*
 * Asks which jobs are due now (filling due[]).  Without the extension, or
 * with a schema older than 0.5 in this database, nothing is.
 */
static void
plan(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	ndue = 0;
	PG_TRY();
	{
		bool		isnull;

		ads_begin_tx("adstream launcher: planning maintenance");
		if (SPI_execute("SELECT pg_catalog.to_regprocedure('adstream._maintenance_plan()') IS NOT NULL",
						true, 1) == SPI_OK_SELECT &&
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			if (SPI_execute("SELECT job, due_in_ms FROM adstream._maintenance_plan()", false, 0) != SPI_OK_SELECT)
				elog(ERROR, "adstream._maintenance_plan() failed");
			for (uint64 i = 0; i < SPI_processed && ndue < MAX_DUE; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				int64		due_in_ms = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));

				if (!isnull && due_in_ms <= 0)
					strlcpy(due[ndue++], SPI_getvalue(tup, SPI_tuptable->tupdesc, 1), NAMEDATALEN);
			}
		}
		ads_end_tx();
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream launcher: could not plan maintenance: %s", edata->message),
				 errhint("The launcher asks again in a second; see adstream.maintenance_status.")));
		FreeErrorData(edata);
		ndue = 0;
	}
	PG_END_TRY();
}

/* Records a failed job; a failure to record it is only logged. */
static void
record_failure(const char *job, TimestampTz start, const char *message)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		ads_begin_tx("adstream launcher: recording a maintenance error");
		if (SPI_execute_with_args("SELECT adstream._maintenance_failed($1, $2, $3)", 3,
								  (Oid[]) {TEXTOID, TIMESTAMPTZOID, TEXTOID},
								  (Datum[]) {CStringGetTextDatum(job), TimestampTzGetDatum(start),
											 CStringGetTextDatum(message)},
								  NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "adstream._maintenance_failed() failed");
		ads_end_tx();
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		ereport(LOG,
				(errmsg("adstream launcher: could not record the failure of maintenance job %s: %s",
						job, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* Wakes the consumers that wait to retry a batch. */
static void
wake_retrying_consumers(void)
{
	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *slot = &ads_registry->slots[i];
		pid_t		pid;
		PGPROC	   *proc;

		SpinLockAcquire(&slot->mutex);
		pid = (slot->in_use && slot->kind == ADS_WORKER_CONSUMER && slot->database == MyDatabaseId &&
			   strcmp(slot->state, "retrying") == 0) ? slot->pid : 0;
		SpinLockRelease(&slot->mutex);
		if (pid != 0 && (proc = BackendPidGetProc(pid)) != NULL)
			SetLatch(&proc->procLatch);
	}
}

/*
 * Runs one job in a transaction of its own.  Its locks wait at most 10 s
 * (the jobs that must not stall ingestion set 2 s themselves).
 */
static void
run_job(const char *job)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz start = GetCurrentTimestamp();
	char		activity[NAMEDATALEN + 32];

	snprintf(activity, sizeof(activity), "adstream maintenance: %s", job);
	pqsignal(SIGTERM, die);
	PG_TRY();
	{
		ads_begin_tx(activity);
		(void) set_config_option("lock_timeout", "10s", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
		if (SPI_execute_with_args("SELECT adstream.run_maintenance($1)", 1, (Oid[]) {TEXTOID},
								  (Datum[]) {CStringGetTextDatum(job)}, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "adstream.run_maintenance() failed");
		ads_end_tx();
		if (strcmp(job, "adstream_dedup_expiry") == 0 || strcmp(job, "adstream_retention") == 0)
			wake_retrying_consumers();
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream maintenance job %s failed: %s", job, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("The launcher runs it again after its interval; see adstream.maintenance_status.")));
		record_failure(job, start, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
}

long
ads_maintenance_round(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (ndue == 0)
	{
		if (now < next_plan_at)
			return (long) ((next_plan_at - now) / 1000) + 1;
		next_plan_at = TimestampTzPlusMilliseconds(now, PLAN_EVERY_MS);
		plan();
	}
	if (ndue > 0 && !ShutdownRequestPending)
	{
		char		job[NAMEDATALEN];

		strlcpy(job, due[0], NAMEDATALEN);
		ndue--;
		memmove(due[0], due[1], sizeof(due[0]) * ndue);
		run_job(job);
	}
	if (ndue > 0)
		return 0;
	now = GetCurrentTimestamp();
	return next_plan_at > now ? (long) ((next_plan_at - now) / 1000) + 1 : 0;
}
