/*
 * worker.c
 *     The life of an adstream background worker, common to consumers and
 *     publishers (the launcher uses the reload and backoff parts).
 */
#include "worker.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "guc.h"

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
