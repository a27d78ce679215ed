/*
 * sql_api.c
 *     SQL-callable C functions: worker and partition status from shared
 *     memory, the event validator, librdkafka property checking, the
 *     installation's identity, and the timeline that versions are made from.
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "catalog/pg_type.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "executor/spi.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "catalog.h"
#include "event_parse.h"
#include "event_time.h"
#include "guc.h"
#include "kafka_consumer.h"
#include "kafka_producer.h"
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

/*
 * The row of validate_event() / validate_order(): reason and detail, then the
 * message's fields, which are NULL unless it was accepted (the caller fills
 * values[2..] when reason is ADS_OK).
 */
static void
validation_row_start(AdsReason reason, const char *detail, Datum *values, bool *nulls, int ncols)
{
	memset(nulls, reason != ADS_OK, sizeof(bool) * ncols);
	values[0] = CStringGetTextDatum(ads_reason_name(reason));
	nulls[0] = false;
	values[1] = CStringGetTextDatum(detail);
	nulls[1] = (reason == ADS_OK);
}

static Datum
validation_row(FunctionCallInfo fcinfo, Datum *values, bool *nulls)
{
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

static Datum
uuid_datum(const uint8 id[16])
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	memcpy(uuid->data, id, UUID_LEN);
	return UUIDPGetDatum(uuid);
}

PG_FUNCTION_INFO_V1(adstream_validate_event);
Datum
adstream_validate_event(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	AdsEvent	ev;
	AdsReason	reason;
	char		detail[ADS_DETAIL_LEN];
	Datum		values[9];
	bool		nulls[9];

	reason = ads_parse_event(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
							 (size_t) adstream_max_message_bytes, &ev,
							 detail, sizeof(detail));
	validation_row_start(reason, detail, values, nulls, 9);
	if (reason == ADS_OK)
	{
		values[2] = uuid_datum(ev.event_id);
		values[3] = CStringGetTextDatum(ev.type == ADS_EV_CLICK ? "click" : "impression");
		values[4] = Int64GetDatum(ev.ad_id);
		values[5] = Int64GetDatum(ev.campaign_id);
		values[6] = Int64GetDatum(ev.user_id);
		values[7] = Int64GetDatum(ev.store_id);
		values[8] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(ev.ts_us));
	}
	PG_RETURN_DATUM(validation_row(fcinfo, values, nulls));
}

PG_FUNCTION_INFO_V1(adstream_validate_order);
Datum
adstream_validate_order(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	AdsOrder	o;
	AdsReason	reason;
	char		detail[ADS_DETAIL_LEN];
	Datum		values[8];
	bool		nulls[8];

	reason = ads_parse_order(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
							 (size_t) adstream_max_message_bytes, &o,
							 detail, sizeof(detail));
	validation_row_start(reason, detail, values, nulls, 8);
	if (reason == ADS_OK)
	{
		values[2] = uuid_datum(o.order_id);
		values[3] = Int64GetDatum(o.user_id);
		values[4] = Int64GetDatum(o.store_id);
		values[5] = DirectFunctionCall3(numeric_in, CStringGetDatum(o.amount),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		values[6] = CStringGetTextDatum(o.currency);
		values[7] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(o.ts_us));
	}
	PG_RETURN_DATUM(validation_row(fcinfo, values, nulls));
}

/*
 * Returns NULL when librdkafka accepts the property, else its message.  Used
 * by create_source so that a typo fails at once, with a hint, rather than in
 * a worker's log.
 */
PG_FUNCTION_INFO_V1(adstream_kafka_property_error);
Datum
adstream_kafka_property_error(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *value = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	rd_kafka_conf_res_t res;

	res = rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr));
	rd_kafka_conf_destroy(conf);
	if (res == RD_KAFKA_CONF_OK)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(errstr));
}

/*
 * adstream._origin(): this installation's identity, which sources.origin and
 * sinks.origin must equal for their workers to run (see catalog.c).
 */
PG_FUNCTION_INFO_V1(adstream_origin);
Datum
adstream_origin(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ads_catalog_origin()));
}

/* ---------------------------------------------------------------------
 * alter_source / alter_sink (issue #14): the whole librdkafka
 * configuration checked by building the client
 * ---------------------------------------------------------------------
 */

/* text[] -> C strings, palloc'd in the current (the call's) memory context. */
static int
text_array_cstrings(ArrayType *arr, char ***out)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc0(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return n;
}

/*
 * adstream._kafka_check(role, brokers, keys, values, topic, timeout_ms):
 * builds the very configuration a consumer ('source') or a publisher
 * ('sink') would run with, and creates the client from it (rd_kafka_new,
 * then rd_kafka_destroy), so that what only rd_kafka_new checks (a SASL
 * mechanism without its credentials, Kerberos without kinit, an unreadable
 * CA file) is refused by the SQL call rather than in a worker's restart
 * loop.  Returns librdkafka's error (NULL when the client could be built),
 * and, with timeout_ms > 0, the topic's partition count and the cluster's
 * id when the brokers answer within it (NULL otherwise).  librdkafka's
 * threads only fill the log ring (kafka_log.c), never ereport; they are
 * gone when this returns.
 */
PG_FUNCTION_INFO_V1(adstream_kafka_check);
Datum
adstream_kafka_check(PG_FUNCTION_ARGS)
{
	char	   *role = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *brokers = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *topic = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	int			timeout_ms = PG_ARGISNULL(5) ? 0 : Min(PG_GETARG_INT32(5), 10000);
	bool		consumer = (role != NULL && strcmp(role, "source") == 0);
	AdsKafkaProps props = {0};
	char	  **values;
	char		errbuf[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk = NULL;
	TupleDesc	tupdesc;
	Datum		result[3] = {0};
	bool		nulls[3] = {true, true, true};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (role == NULL || brokers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("adstream._kafka_check: role and brokers must not be null")));
	if (!PG_ARGISNULL(2) && !PG_ARGISNULL(3))
	{
		props.n = text_array_cstrings(PG_GETARG_ARRAYTYPE_P(2), &props.keys);
		if (text_array_cstrings(PG_GETARG_ARRAYTYPE_P(3), &values) != props.n)
			elog(ERROR, "adstream._kafka_check: as many values as keys expected");
		props.values = values;
	}

	errbuf[0] = '\0';
	if (consumer)
		conf = ads_kafka_consumer_conf(brokers, "adstream.validate", "adstream-validate", &props,
									   errbuf, sizeof(errbuf));
	else
		/* transaction.timeout.ms as the publisher sets it (publisher.c) */
		conf = ads_kafka_producer_conf(brokers, "adstream.validate", "10000", "adstream-validate",
									   &props, errbuf, sizeof(errbuf));
	if (conf != NULL)
	{
		rk = rd_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, errbuf, sizeof(errbuf));
		if (rk == NULL)
			rd_kafka_conf_destroy(conf);	/* rd_kafka_new takes it only on success */
	}
	if (rk == NULL)
	{
		result[0] = CStringGetTextDatum(errbuf[0] ? errbuf : "librdkafka refused the configuration");
		nulls[0] = false;
	}
	else
	{
		if (timeout_ms > 0 && topic != NULL && consumer)
		{
			AdsKafkaConsumer k = {.rk = rk};
			int			count = ads_kafka_partition_count(&k, topic, timeout_ms);

			if (count > 0)
			{
				result[1] = Int32GetDatum(count);
				nulls[1] = false;
			}
		}
		if (timeout_ms > 0)
		{
			char	   *id = rd_kafka_clusterid(rk, timeout_ms);

			if (id != NULL)
			{
				result[2] = CStringGetTextDatum(id);
				nulls[2] = false;
				rd_kafka_mem_free(rk, id);
			}
		}
		rd_kafka_destroy(rk);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, nulls)));
}

/*
 * adstream._node_name_setting(): the name a node takes in adstream.node when
 * it is first named (adstream.node_name, by default the host name).
 */
PG_FUNCTION_INFO_V1(adstream_node_name_setting);
Datum
adstream_node_name_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ads_node_name_setting()));
}

/*
 * adstream.node_name(): the node's name, adstream.node's once it has a row,
 * else the setting.  Part of every ad_stats key, so _record_key asks for it
 * for every published row: looked up once per transaction (it cannot
 * change while sinks exist, see set_node_name).
 */
PG_FUNCTION_INFO_V1(adstream_node_name_fn);
Datum
adstream_node_name_fn(PG_FUNCTION_ARGS)
{
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static char *cached = NULL;

	if (cached == NULL || MyProc->lxid != cached_lxid)
	{
		char	   *name = NULL;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "adstream: SPI_connect failed");
		if (SPI_execute("SELECT name FROM adstream.node", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (cached)
			pfree(cached);
		cached = MemoryContextStrdup(TopMemoryContext, name ? name : ads_node_name_setting());
		SPI_finish();
		cached_lxid = MyProc->lxid;
	}
	PG_RETURN_TEXT_P(cstring_to_text(cached));
}

/*
 * adstream._timeline(): the timeline this server writes WAL on (on a standby,
 * the one it replays).  A promotion moves to a higher timeline than any the
 * cluster's history has used, so published versions, which carry it in their
 * high bits (adstream._version_base), rise across failovers.
 */
PG_FUNCTION_INFO_V1(adstream_timeline);
Datum
adstream_timeline(PG_FUNCTION_ARGS)
{
	TimeLineID	tli;

	if (RecoveryInProgress())
		(void) GetXLogReplayRecPtr(&tli);
	else
		tli = GetWALInsertionTimeLine();
	PG_RETURN_INT32((int32) tli);
}
