/*
 * worker.c
 *     The life of an adstream background worker, common to consumers and
 *     publishers (the launcher uses the reload and backoff parts).
 */
#include "worker.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/guc.h"

#include "guc.h"
#include "txn.h"

AdsWorkerSlot *
ads_worker_start(AdsWorkerArgs *args)
{
	AdsWorkerSlot *slot;

	memcpy(args, MyBgworkerEntry->bgw_extra, sizeof(AdsWorkerArgs));
	slot = &ads_registry->slots[args->slot];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(adstream_database, NULL, 0);

	ads_slot_attach(slot);
	return slot;
}

void
ads_worker_reload_config(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

void
ads_worker_wait(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

long
ads_backoff_ms(int attempt, long min_ms, long max_ms)
{
	return Min(max_ms, min_ms << Min(attempt, 16));
}

/* ---------------------------------------------------------------------
 * Status (issue #14): a library newer or older than the SQL objects
 * ---------------------------------------------------------------------
 */

#ifndef ADS_EXTVERSION
#error "ADS_EXTVERSION must be defined (the Makefile takes it from adstream.control)"
#endif

/* The installed version of the extension's SQL objects, palloc'd; NULL without it. */
static char *
installed_version(void)
{
	char	   *v = NULL;

	ads_begin_tx("adstream: checking the extension's version");
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'adstream'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		MemoryContextSwitchTo(old);
	}
	ads_end_tx();
	return v;
}

/*
 * The library serves the SQL objects of its own version only: a server
 * restarted with a new build before ALTER EXTENSION adstream UPDATE (or an
 * old build under new objects) would fail in the middle of a batch.  The
 * worker waits instead, in state "waiting for update", with the reason as
 * its current error, which source_status and sink_status show (whatever
 * the installed version's views are: they read worker_status() and
 * publisher_status(), whose first columns every version has), and looks
 * again every second.
 */
void
ads_worker_wait_for_schema(AdsWorkerSlot *slot, const char *kind, const char *name)
{
	bool		said = false;

	for (;;)
	{
		char	   *v = installed_version();
		char		buf[ADS_ERROR_LEN];

		if (v != NULL && strcmp(v, ADS_EXTVERSION) == 0)
		{
			pfree(v);
			if (said)
			{
				ads_slot_clear_error(slot, ADS_ERRCLASS_SETUP);
				ereport(LOG,
						(errmsg("adstream %s \"%s\": the extension's SQL objects are version %s now; starting",
								kind, name, ADS_EXTVERSION)));
			}
			return;
		}
		if (!said)
		{
			snprintf(buf, sizeof(buf),
					 "the adstream library is version %s but the extension's SQL objects are version %s: run ALTER EXTENSION adstream UPDATE",
					 ADS_EXTVERSION, v ? v : "(none)");
			ads_slot_set_error_class(slot, ADS_ERRCLASS_SETUP, buf);
			ads_slot_set_state(slot, "waiting for update");
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("adstream %s \"%s\": the adstream library is version %s but the extension's SQL objects are version %s",
							kind, name, ADS_EXTVERSION, v ? v : "(none)"),
					 errhint("Run ALTER EXTENSION adstream UPDATE in database \"%s\"; the worker waits and starts by itself.",
							 adstream_database)));
			said = true;
		}
		if (v)
			pfree(v);
		ads_worker_wait(1000);
	}
}
