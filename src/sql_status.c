/*
 * sql_status.c
 *     SQL-callable status from shared memory: one row per consumer or
 *     publisher slot (worker_status, publisher_status) and each assigned
 *     partition's position and watermarks (partition_status).
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "registry.h"

static Datum
timestamptz_or_null(TimestampTz ts, bool *isnull)
{
	*isnull = (ts == 0);
	return TimestampTzGetDatum(ts);
}

/*
 * One row per consumer or publisher slot of this database.  A consumer's row
 * has its worker index after the id; the columns are otherwise the same.
 * A slot without a process is a worker waiting for its restart, or for a
 * background worker slot (state "restarting", "no worker slot").
 *
 * Status (issue #14): the columns after restarts are new in 0.6 (connected,
 * connected_since, errors_total; consumers also topic_partitions,
 * positions_at).  The row is built to the caller's declaration, so the SQL
 * objects of an older version, which declare fewer columns, still read it
 * (their views show a version mismatch this way).
 */
static Datum
slot_rows(FunctionCallInfo fcinfo, AdsWorkerKind kind)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		publishers = (kind == ADS_WORKER_PUBLISHER);
	int			k = publishers ? 0 : 1;	/* shift after the id column */

	InitMaterializedSRF(fcinfo, 0);
	if (ads_registry == NULL)
		return (Datum) 0;

	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *s = &ads_registry->slots[i];
		AdsWorkerSlot copy;
		Datum		values[14];
		bool		nulls[14] = {0};

		SpinLockAcquire(&s->mutex);
		memcpy(&copy, s, offsetof(AdsWorkerSlot, positions));
		SpinLockRelease(&s->mutex);
		if (!copy.in_use || copy.database != MyDatabaseId || copy.kind != kind)
			continue;

		values[0] = Int32GetDatum(copy.owner_id);
		if (!publishers)
			values[1] = Int32GetDatum(copy.worker_index);
		values[k + 1] = Int32GetDatum(copy.pid);
		nulls[k + 1] = (copy.pid == 0);
		values[k + 2] = CStringGetTextDatum(copy.state);
		values[k + 3] = timestamptz_or_null(copy.started_at, &nulls[k + 3]);
		values[k + 4] = timestamptz_or_null(copy.last_commit_at, &nulls[k + 4]);
		values[k + 5] = CStringGetTextDatum(copy.last_error);
		nulls[k + 5] = (copy.last_error[0] == '\0');
		values[k + 6] = timestamptz_or_null(copy.last_error_at, &nulls[k + 6]);
		values[k + 7] = Int32GetDatum(copy.restarts);
		values[k + 8] = BoolGetDatum(copy.connected == ADS_CONN_UP);
		nulls[k + 8] = (copy.connected == ADS_CONN_UNKNOWN || copy.pid == 0);
		values[k + 9] = timestamptz_or_null(copy.connected_since, &nulls[k + 9]);
		nulls[k + 9] |= nulls[k + 8];
		values[k + 10] = Int64GetDatum(copy.errors_total);
		if (!publishers)
		{
			values[k + 11] = Int32GetDatum(copy.topic_partitions);
			nulls[k + 11] = (copy.topic_partitions <= 0);
			values[k + 12] = timestamptz_or_null(Min(copy.positions_at, copy.hw_current_at), &nulls[k + 12]);
		}
		Assert(rsinfo->setDesc->natts <= lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	/* Workers the launcher has no registry slot for (adstream.max_workers). */
	{
		AdsUnplaced unplaced[ADS_MAX_UNPLACED];
		int			n = ads_registry_get_unplaced(unplaced);
		char		msg[ADS_ERROR_LEN];

		ads_unplaced_error(msg, sizeof(msg));
		for (int i = 0; i < n; i++)
		{
			AdsUnplaced *u = &unplaced[i];
			Datum		values[14];
			bool		nulls[14];

			if (u->database != MyDatabaseId || u->kind != kind)
				continue;
			memset(nulls, true, sizeof(nulls));
			values[0] = Int32GetDatum(u->owner_id);
			nulls[0] = false;
			if (!publishers)
			{
				values[1] = Int32GetDatum(u->worker_index);
				nulls[1] = false;
			}
			values[k + 2] = CStringGetTextDatum("no worker slot");
			nulls[k + 2] = false;
			values[k + 5] = CStringGetTextDatum(msg);
			nulls[k + 5] = false;
			values[k + 6] = TimestampTzGetDatum(u->since);
			nulls[k + 6] = false;
			values[k + 7] = Int32GetDatum(0);
			nulls[k + 7] = false;
			values[k + 10] = Int64GetDatum(0);
			nulls[k + 10] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(adstream_worker_status);
Datum
adstream_worker_status(PG_FUNCTION_ARGS)
{
	return slot_rows(fcinfo, ADS_WORKER_CONSUMER);
}

PG_FUNCTION_INFO_V1(adstream_publisher_status);
Datum
adstream_publisher_status(PG_FUNCTION_ARGS)
{
	return slot_rows(fcinfo, ADS_WORKER_PUBLISHER);
}

PG_FUNCTION_INFO_V1(adstream_partition_status);
Datum
adstream_partition_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	AdsPositionInfo *parts = palloc(sizeof(AdsPositionInfo) * ADS_MAX_TOPIC_PARTITIONS_PER_WORKER);

	InitMaterializedSRF(fcinfo, 0);
	if (ads_registry == NULL)
		return (Datum) 0;

	for (int i = 0; i < ads_registry->nslots; i++)
	{
		AdsWorkerSlot *s = &ads_registry->slots[i];
		bool		in_use;
		int32		source_id;
		pid_t		pid;
		int			nparts;
		TimestampTz reported_at;
		TimestampTz current_at;
		bool		connected;
		bool		stale;

		SpinLockAcquire(&s->mutex);
		in_use = s->in_use && s->pid != 0 && s->database == MyDatabaseId &&
			s->kind == ADS_WORKER_CONSUMER;
		source_id = s->owner_id;
		pid = s->pid;
		nparts = s->npositions;
		memcpy(parts, s->positions, sizeof(AdsPositionInfo) * nparts);
		reported_at = s->positions_at;
		current_at = Min(s->positions_at, s->hw_current_at);
		connected = s->connected == ADS_CONN_UP;
		SpinLockRelease(&s->mutex);
		stale = TimestampDifferenceExceeds(reported_at, GetCurrentTimestamp(), ADS_POSITIONS_STALE_MS);
		if (!in_use)
			continue;

		for (int p = 0; p < nparts; p++)
		{
			Datum		values[9];
			bool		nulls[9] = {0};

			values[0] = Int32GetDatum(source_id);
			values[1] = Int32GetDatum(parts[p].partition);
			values[2] = Int32GetDatum(pid);
			/* A broker end the worker saw too long ago is not known any more. */
			values[3] = Int64GetDatum(parts[p].high_watermark);
			nulls[3] = (parts[p].high_watermark < 0 || stale);
			values[4] = Int64GetDatum(parts[p].position);
			nulls[4] = (parts[p].position < 0);

			/*
			 * Status (issue #14), new in 0.6: the broker's end as last seen
			 * however old, since when it has been known current, whether it
			 * is stale (reported too long ago, or the broker not answering),
			 * and since when the oldest message not committed has waited at
			 * most (NULL: caught up, or not known).
			 */
			values[5] = Int64GetDatum(parts[p].high_watermark);
			nulls[5] = (parts[p].high_watermark < 0);
			values[6] = timestamptz_or_null(current_at, &nulls[6]);
			values[7] = BoolGetDatum(stale || !connected || current_at == 0);
			values[8] = TimestampTzGetDatum(parts[p].pending_since);
			nulls[8] = (parts[p].pending_since <= 0);
			Assert(rsinfo->setDesc->natts <= lengthof(values));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}
