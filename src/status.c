/*
 * status.c
 *     The durable history of the workers' states and errors (issue #14):
 *     adstream.status_history, one row per change, and
 *     adstream.status_counters, errors and restarts per source and sink.
 *
 * Who writes it: the launcher, never a worker.  The workers only put their
 * state, connection and current error in their registry slots (as they
 * did before) and wake the launcher when one of them changes; the launcher
 * compares each slot with what it last recorded for that worker and writes
 * the differences in a short transaction of its own.  So:
 *   - nothing of it is in a batch's transaction: a failure to record cannot
 *     roll a batch back, and recording adds nothing to the exactly-once
 *     path;
 *   - a worker that dies (FATAL, crash) still has its last error recorded,
 *     because the slot outlives it (launcher.c keeps a failed worker's slot
 *     until its restart);
 *   - rows are written on changes only, never per batch.  The states a
 *     batch passes through ("committing") are recorded as the state they
 *     return to; a change of error text alone, in the same state, is
 *     recorded at most once a minute per worker (a broker that is down
 *     varies its complaint); an error cleared is always recorded.
 * A change that lasts less than one round of the launcher (about a
 * millisecond after a worker wakes it, up to adstream.launcher_naptime
 * otherwise) can be missed; the counters still count it.
 *
 * Retention: adstream.expire_status_history(), in the retention job,
 * deletes rows older than adstream.status_history_retention.
 */
#include "status.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "registry.h"
#include "txn.h"

#define ERROR_ONLY_EVERY_MS 60000
#define COUNTERS_EVERY_MS 10000
#define FAILURE_LOG_EVERY_MS 60000

/* What was last recorded for one worker (kind, owner, index). */
typedef struct Recorded
{
	bool		used;
	bool		seen;			/* in the current round */
	AdsWorkerKind kind;
	int32		owner_id;
	int32		worker_index;
	char		name[NAMEDATALEN];
	char		state[ADS_STATE_LEN];
	int8		connected;
	char		error[ADS_ERROR_LEN];
	TimestampTz recorded_at;
	TimestampTz transient_at;	/* when an error that came and went was last recorded */
	/* counters: the slot's values last seen, and what is not written yet */
	int64		slot_errors;
	int32		slot_restarts;
	int64		pending_errors;
	int64		pending_restarts;
} Recorded;

/* A row to write. */
typedef struct Change
{
	AdsWorkerKind kind;
	int32		owner_id;
	int32		worker_index;
	char		name[NAMEDATALEN];
	char		state[ADS_STATE_LEN];
	int8		connected;
	char		error[ADS_ERROR_LEN];
	TimestampTz error_at;
	int32		restarts;
} Change;

static Recorded *recorded = NULL;
static int	nrecorded = 0;
static Change *changes = NULL;
static TimestampTz counters_written_at = 0;
static TimestampTz failure_logged_at = 0;

/* The state a history row names: a batch's passing states are the state it returns to. */
static const char *
recorded_state(const char *state)
{
	if (strcmp(state, "committing") == 0)
		return "consuming";
	return state;
}

static Recorded *
find_recorded(AdsWorkerKind kind, int32 owner_id, int32 worker_index)
{
	Recorded   *unused = NULL;

	for (int i = 0; i < nrecorded; i++)
	{
		Recorded   *r = &recorded[i];

		if (!r->used)
		{
			if (unused == NULL)
				unused = r;
			continue;
		}
		if (r->kind == kind && r->owner_id == owner_id && r->worker_index == worker_index)
			return r;
	}
	if (unused != NULL)
	{
		memset(unused, 0, sizeof(Recorded));
		unused->used = true;
		unused->kind = kind;
		unused->owner_id = owner_id;
		unused->worker_index = worker_index;
		unused->connected = ADS_CONN_UNKNOWN;
		unused->slot_restarts = -1;	/* not seen yet */
	}
	return unused;
}

static void
add_change(int *nchanges, const Recorded *r, const char *state, int8 connected,
		   const char *error, TimestampTz error_at, int32 restarts)
{
	Change	   *c;

	if (*nchanges >= nrecorded)
		return;
	c = &changes[(*nchanges)++];
	c->kind = r->kind;
	c->owner_id = r->owner_id;
	c->worker_index = r->worker_index;
	strlcpy(c->name, r->name, NAMEDATALEN);
	strlcpy(c->state, state, ADS_STATE_LEN);
	c->connected = connected;
	strlcpy(c->error, error, ADS_ERROR_LEN);
	c->error_at = error_at;
	c->restarts = restarts;
}

/* Writes the changes and the counters; false if the tables are not there (a schema before 0.6). */
static bool
write_changes(int nchanges, bool with_counters)
{
	bool		isnull;
	bool		exists;

	ads_begin_tx("adstream launcher: recording status changes");
	if (SPI_execute("SELECT pg_catalog.to_regclass('adstream.status_history') IS NOT NULL "
					"AND pg_catalog.to_regclass('adstream.status_counters') IS NOT NULL",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not look for adstream.status_history");
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (exists)
	{
		for (int i = 0; i < nchanges; i++)
		{
			Change	   *c = &changes[i];
			Datum		values[9];
			char		nulls[9];

			memset(nulls, ' ', sizeof(nulls));
			values[0] = CStringGetTextDatum(c->kind == ADS_WORKER_PUBLISHER ? "sink" : "source");
			values[1] = Int32GetDatum(c->owner_id);
			values[2] = CStringGetTextDatum(c->name);
			values[3] = Int32GetDatum(c->worker_index);
			nulls[3] = c->kind == ADS_WORKER_PUBLISHER ? 'n' : ' ';
			values[4] = CStringGetTextDatum(c->state);
			values[5] = BoolGetDatum(c->connected == ADS_CONN_UP);
			nulls[5] = c->connected == ADS_CONN_UNKNOWN ? 'n' : ' ';
			values[6] = CStringGetTextDatum(c->error);
			nulls[6] = c->error[0] == '\0' ? 'n' : ' ';
			values[7] = TimestampTzGetDatum(c->error_at);
			nulls[7] = (c->error[0] == '\0' || c->error_at == 0) ? 'n' : ' ';
			values[8] = Int32GetDatum(c->restarts);
			if (SPI_execute_with_args("INSERT INTO adstream.status_history "
									  "(kind, object_id, name, worker, state, connected, error, error_at, restarts) "
									  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
									  9, (Oid[]) {TEXTOID, INT4OID, TEXTOID, INT4OID, TEXTOID, BOOLOID,
									  TEXTOID, TIMESTAMPTZOID, INT4OID},
									  values, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "adstream: could not insert into adstream.status_history");
		}
		for (int i = 0; with_counters && i < nrecorded; i++)
		{
			Recorded   *r = &recorded[i];

			if (!r->used || (r->pending_errors == 0 && r->pending_restarts == 0))
				continue;
			if (SPI_execute_with_args("INSERT INTO adstream.status_counters AS c (kind, object_id, name, errors, restarts) "
									  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, object_id) DO UPDATE "
									  "SET name = excluded.name, errors = c.errors + excluded.errors, "
									  "restarts = c.restarts + excluded.restarts, updated_at = now()",
									  5, (Oid[]) {TEXTOID, INT4OID, TEXTOID, INT8OID, INT8OID},
									  (Datum[]) {CStringGetTextDatum(r->kind == ADS_WORKER_PUBLISHER ? "sink" : "source"),
										  Int32GetDatum(r->owner_id), CStringGetTextDatum(r->name),
									  Int64GetDatum(r->pending_errors), Int64GetDatum(r->pending_restarts)},
									  NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "adstream: could not update adstream.status_counters");
		}
	}
	ads_end_tx();
	return exists;
}

/*
 * Compares one worker as its slot shows it (copy) with what was last
 * recorded for it, and queues a row if it changed.
 */
static void
observe(const AdsWorkerSlot *c, TimestampTz now, int *nchanges)
{
	const AdsWorkerSlot *copy = c;
	Recorded   *r;
	const char *state;
	bool		state_changed;
	bool		error_changed;

	r = find_recorded(copy->kind, copy->owner_id, copy->kind == ADS_WORKER_PUBLISHER ? 0 : copy->worker_index);
	if (r == NULL)
		return;
	r->seen = true;
	strlcpy(r->name, copy->owner_name, NAMEDATALEN);

	/*
	 * An error that came and went (or was replaced) since the last
	 * look, as an offset gap does when the next batch commits: its own
	 * row, so that no error goes unrecorded (at most once a minute per
	 * worker, as other changes of the error alone).
	 */
	if (copy->errors_total != r->slot_errors && copy->recent_error[0] != '\0' &&
		strcmp(copy->recent_error, copy->last_error) != 0 && strcmp(copy->recent_error, r->error) != 0 &&
		TimestampDifferenceExceeds(r->transient_at, now, ERROR_ONLY_EVERY_MS))
	{
		strlcpy(r->error, copy->recent_error, ADS_ERROR_LEN);
		r->recorded_at = r->transient_at = now;
		add_change(nchanges, r, r->state[0] ? r->state : recorded_state(copy->state), copy->connected,
				   copy->recent_error, copy->recent_error_at, copy->restarts);
	}

	/*
	 * counters: what the slot added since the last look (a slot given
	 * to another worker starts again from 0).  The launcher's restart
	 * count of a worker goes on across pauses: a worker seen anew
	 * counts its restarts from here.
	 */
	if (r->slot_restarts < 0)
		r->slot_restarts = copy->restarts;
	r->pending_errors += copy->errors_total >= r->slot_errors ? copy->errors_total - r->slot_errors : copy->errors_total;
	r->slot_errors = copy->errors_total;
	r->pending_restarts += copy->restarts >= r->slot_restarts ? copy->restarts - r->slot_restarts : copy->restarts;
	r->slot_restarts = copy->restarts;

	state = recorded_state(copy->state);
	state_changed = strcmp(r->state, state) != 0 || r->connected != copy->connected;
	error_changed = strcmp(r->error, copy->last_error) != 0;
	if (state_changed ||
		(error_changed && (copy->last_error[0] == '\0' || r->error[0] == '\0' ||
						   TimestampDifferenceExceeds(r->recorded_at, now, ERROR_ONLY_EVERY_MS))))
	{
		strlcpy(r->state, state, ADS_STATE_LEN);
		r->connected = copy->connected;
		strlcpy(r->error, copy->last_error, ADS_ERROR_LEN);
		r->recorded_at = now;
		add_change(nchanges, r, state, copy->connected, copy->last_error, copy->last_error_at, copy->restarts);
	}
}

long
ads_status_round(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();
	int			nchanges = 0;
	bool		counters_due;
	bool		pending = false;
	AdsWorkerSlot *copy;

	if (ads_registry == NULL)
		return adstream_launcher_naptime_ms;
	if (recorded == NULL)
	{
		/* room for every slot's worker and as many that just stopped */
		nrecorded = ads_registry->nslots * 2;
		recorded = MemoryContextAllocZero(TopMemoryContext, sizeof(Recorded) * nrecorded);
		changes = MemoryContextAllocZero(TopMemoryContext, sizeof(Change) * nrecorded);
	}

	for (int i = 0; i < nrecorded; i++)
		recorded[i].seen = false;
	copy = palloc(sizeof(AdsWorkerSlot));

	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *s = &ads_registry->slots[i];

		SpinLockAcquire(&s->mutex);
		memcpy(copy, s, offsetof(AdsWorkerSlot, positions));
		SpinLockRelease(&s->mutex);
		if (!copy->in_use || copy->database != MyDatabaseId)
			continue;
		observe(copy, now, &nchanges);
	}

	/* Workers without a registry slot (adstream.max_workers), as worker_status() shows them. */
	{
		AdsUnplaced unplaced[ADS_MAX_UNPLACED];
		int			n = ads_registry_get_unplaced(unplaced);

		for (int i = 0; i < n; i++)
		{
			if (unplaced[i].database != MyDatabaseId)
				continue;
			memset(copy, 0, offsetof(AdsWorkerSlot, positions));
			copy->in_use = true;
			copy->database = unplaced[i].database;
			copy->kind = unplaced[i].kind;
			copy->owner_id = unplaced[i].owner_id;
			copy->worker_index = unplaced[i].worker_index;
			strlcpy(copy->owner_name, unplaced[i].owner_name, NAMEDATALEN);
			strlcpy(copy->state, "no worker slot", ADS_STATE_LEN);
			copy->connected = ADS_CONN_UNKNOWN;
			ads_unplaced_error(copy->last_error, ADS_ERROR_LEN);
			copy->last_error_at = unplaced[i].since;
			observe(copy, now, &nchanges);
		}
	}

	/* A worker whose slot was freed was stopped on purpose (pause, drop, a change). */
	for (int i = 0; i < nrecorded; i++)
	{
		Recorded   *r = &recorded[i];

		if (!r->used || r->seen)
			continue;
		if (strcmp(r->state, "stopped") != 0)
			add_change(&nchanges, r, "stopped", ADS_CONN_UNKNOWN, "", 0, Max(r->slot_restarts, 0));
		if (r->pending_errors == 0 && r->pending_restarts == 0)
			r->used = false;
		else
			strlcpy(r->state, "stopped", ADS_STATE_LEN);
	}

	for (int i = 0; i < nrecorded; i++)
		pending |= recorded[i].used && (recorded[i].pending_errors > 0 || recorded[i].pending_restarts > 0);
	pfree(copy);
	counters_due = pending && (nchanges > 0 ||
							   TimestampDifferenceExceeds(counters_written_at, now, COUNTERS_EVERY_MS));
	if (nchanges == 0 && !counters_due)
		return adstream_launcher_naptime_ms;

	PG_TRY();
	{
		(void) write_changes(nchanges, counters_due);
		if (counters_due)
		{
			counters_written_at = now;
			for (int i = 0; i < nrecorded; i++)
			{
				recorded[i].pending_errors = recorded[i].pending_restarts = 0;
				if (recorded[i].used && !recorded[i].seen)
					recorded[i].used = false;
			}
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		/* The changes are not written; the states stay for the next change. */
		if (TimestampDifferenceExceeds(failure_logged_at, now, FAILURE_LOG_EVERY_MS))
		{
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("adstream launcher: could not record status changes: %s", edata->message),
					 errhint("source_status and sink_status still show the current state; adstream.status_history misses these changes.")));
			failure_logged_at = now;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return adstream_launcher_naptime_ms;
}
