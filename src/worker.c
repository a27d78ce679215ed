/*
 * worker.c
 *     The life of an adstream background worker, common to consumers and
 *     publishers (the launcher uses the reload and backoff parts).
 */
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/guc.h"

#include "guc.h"
#include "txn.h"

/* ---------------------------------------------------------------------
 * Stopping cleanly (issue #14, section 3)
 *
 * The launcher stops the workers of a paused, dropped or changed source or
 * sink with SIGTERM, as the postmaster does at shutdown.  SIGTERM only asks:
 * the worker finishes what it is doing (a batch, a Kafka transaction), logs
 * why it stops and exits with 0 at its next safe point, so that a routine
 * pause is one LOG line naming the source, not a FATAL "terminating
 * background worker ... due to administrator command" that trips log
 * alerting.  (The postmaster signals a child and its process group, so a
 * worker may see SIGTERM twice: counting them would not do.)  SIGUSR2 is
 * PostgreSQL's die(): FATAL at the next CHECK_FOR_INTERRUPTS, whatever the
 * worker is doing, which the exactly-once argument allows
 * (docs/architecture.md); the launcher sends it when SIGTERM was not
 * answered within ADS_STOP_GRACE_MS (the worker waits for a lock, say).
 * ---------------------------------------------------------------------
 */
static volatile sig_atomic_t stop_requests = 0;
static AdsWorkerSlot *my_slot;
static char my_name[NAMEDATALEN + 64];

static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	stop_requests = 1;
	SetLatch(MyLatch);
	errno = save_errno;
}

bool
ads_worker_stop_requested(void)
{
	return stop_requests > 0;
}

const char *
ads_worker_name(void)
{
	return my_name;
}

void
ads_worker_exit(const char *why)
{
	ereport(LOG, (errmsg("%s stopped: %s", my_name, why)));
	proc_exit(0);
}

void
ads_worker_exit_if_stopped(void)
{
	char		reason[ADS_STOP_REASON_LEN];

	if (stop_requests == 0)
		return;
	SpinLockAcquire(&my_slot->mutex);
	strlcpy(reason, my_slot->stop_reason, sizeof(reason));
	SpinLockRelease(&my_slot->mutex);
	ads_worker_exit(reason[0] ? reason : "asked to stop (server shutdown, or pg_terminate_backend)");
}

/*
 * Keep the memory a worker frees for its next batch.  librdkafka receives
 * every fetch response into a buffer of its own (up to a partition's fetch
 * size, a megabyte by default) and frees it once the messages are
 * consumed, and a batch's memory context gives its large blocks back when
 * it is reset.  With glibc's defaults, blocks of that size are mapped and
 * unmapped (or trimmed off the top of the heap) each time, and the kernel
 * zeroes every page again when it is touched: a fifth of a consumer's CPU
 * went to clearing pages (perf, docs/performance.md).  Served from the
 * heap and never trimmed, the same pages are reused.  What a worker keeps
 * is its own peak, which librdkafka's queue limits and batch_max_messages
 * bound.
 */
static void
keep_freed_memory(void)
{
#ifdef __GLIBC__
	(void) mallopt(M_ARENA_MAX, 1);
	(void) mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);	/* glibc's most */
	(void) mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
#endif
}

/*
 * A worker must not outlive its postmaster: while one of the old server's
 * processes stays attached to its shared memory, no new server can start
 * ("pre-existing shared memory block is still in use").  Every wait of the
 * worker's own watches for the postmaster's death, but a call that blocks
 * without watching (a librdkafka call, a wait inside PostgreSQL that does
 * not check, whatever the next one is: the soak found two) would keep it
 * alive.  So a thread of its own waits for the postmaster's end of the
 * "postmaster alive" pipe to close, gives the worker's normal exit
 * PM_DEATH_GRACE_S to happen, then ends the process.  The server is gone:
 * what the worker was doing is recovered from the WAL by the next start,
 * as after kill -9.  The thread touches no PostgreSQL state (no elog: a
 * plain write to stderr, which is the server log) and takes no signals.
 */
#define PM_DEATH_GRACE_S 5

static char pm_death_msg[BGW_MAXLEN + 128];	/* written before the thread starts */

static void *
pm_death_watchdog(void *arg)
{
	struct pollfd pfd = {.fd = postmaster_alive_fds[POSTMASTER_FD_WATCH],.events = POLLIN};

	/* Nothing is ever written to the pipe: it turns readable at EOF. */
	while (poll(&pfd, 1, -1) < 0)
	{
		if (errno != EINTR)
			return NULL;
	}
	sleep(PM_DEATH_GRACE_S);
	if (write(STDERR_FILENO, pm_death_msg, strlen(pm_death_msg)) < 0)
	{
		/* nothing to do: the process ends anyway */
	}
	_exit(1);
	return NULL;
}

static void
start_pm_death_watchdog(void)
{
	pthread_t	thread;
	pthread_attr_t attr;
	sigset_t	all,
				old;
	int			rc;

	/* Which process, for the log: the line has no prefix of PostgreSQL's. */
	snprintf(pm_death_msg, sizeof(pm_death_msg),
			 "adstream: the postmaster died and this worker (pid %d, %s) had not exited "
			 CppAsString2(PM_DEATH_GRACE_S) " s later: exiting now\n",
			 MyProcPid, MyBgworkerEntry->bgw_name);

	/* The thread inherits this mask: every signal stays the main thread's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	rc = pthread_create(&thread, &attr, pm_death_watchdog, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("adstream: could not start the worker's postmaster watchdog thread: %s", strerror(rc)),
				 errhint("The launcher restarts the worker; check the server's limits on threads.")));
}

/*
 * DROP EXTENSION wakes the launcher, which stops the workers with a LOG line
 * (adstream.c); a worker that begins a transaction before its stop request
 * arrives would find its tables gone and fail with an ERROR.  It stops with
 * the same LOG line instead.
 */
static void
exit_if_extension_dropped(void)
{
	if (!OidIsValid(get_extension_oid("adstream", true)))
		ads_worker_exit("the extension was dropped (or is not installed) in this database");
}

AdsWorkerSlot *
ads_worker_start(AdsWorkerArgs *args)
{
	AdsWorkerSlot *slot;
	char		appname[NAMEDATALEN + 64];
	char		owner[NAMEDATALEN];

	keep_freed_memory();
	memcpy(args, MyBgworkerEntry->bgw_extra, sizeof(AdsWorkerArgs));
	slot = &ads_registry->slots[args->slot];
	my_slot = slot;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	pqsignal(SIGUSR2, die);		/* the launcher's forced stop */
	BackgroundWorkerUnblockSignals();
	start_pm_death_watchdog();
	BackgroundWorkerInitializeConnection(adstream_database, NULL, 0);
	ads_begin_tx_hook = exit_if_extension_dropped;

	/* Names in the log and in pg_stat_activity: a publisher is its sink. */
	SpinLockAcquire(&slot->mutex);
	strlcpy(owner, slot->owner_name, sizeof(owner));
	SpinLockRelease(&slot->mutex);
	if (args->kind == ADS_WORKER_PUBLISHER)
	{
		snprintf(my_name, sizeof(my_name), "adstream sink \"%s\"", owner);
		snprintf(appname, sizeof(appname), "adstream sink %s", owner);
	}
	else
	{
		snprintf(my_name, sizeof(my_name), "adstream consumer %d/%d of source \"%s\"",
				 args->worker_index + 1, args->nworkers, owner);
		snprintf(appname, sizeof(appname), "adstream consumer %s %d/%d",
				 owner, args->worker_index + 1, args->nworkers);
	}
	ads_worker_set_application_name(appname);

	ads_slot_attach(slot);
	return slot;
}

/* What pg_stat_activity shows as the worker's application_name. */
void
ads_worker_set_application_name(const char *name)
{
	SetConfigOption("application_name", name, PGC_USERSET, PGC_S_SESSION);
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
	ads_worker_exit_if_stopped();
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

void
ads_worker_exit_if_changed(bool (*is_current) (int32 owner_id, int64 generation),
						   const AdsWorkerArgs *args, const char *what)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	int			current = -1;

	PG_TRY();
	{
		ads_begin_tx("adstream: checking the worker's definition");
		current = is_current(args->owner_id, args->generation) ? 1 : 0;
		ads_end_tx();
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		/* adstream.sources or .sinks is gone: DROP EXTENSION */
		current = (edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE) ? 0 : -1;
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (current != 0)
		return;
	ads_worker_wait(1000);		/* exits at once with the launcher's reason */
	ads_worker_exit(psprintf("its %s was paused, changed, renamed or dropped", what));
}
