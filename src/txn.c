/*
 * txn.c
 *     The transactions of adstream's workers, and adstream's own locks.
 */
#include "txn.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

/*
 * The SPI bracket every worker transaction uses: a short transaction with a
 * snapshot, reported in pg_stat_activity while it runs.
 *
 * A worker's commit is durable whatever the server's default: with
 * synchronous_commit = off a batch would be visible, and could be published
 * to a sink, before its WAL is flushed, and a crash could then lose what
 * Pinot already has.  Turned on for this transaction only, so that a server
 * that asks for more (remote_write, remote_apply) keeps it.
 */
void		(*ads_begin_tx_hook) (void) = NULL;

void
ads_begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		(void) set_config_option("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	if (ads_begin_tx_hook)
		ads_begin_tx_hook();
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

ErrorData *
ads_abort_tx(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	return edata;
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
