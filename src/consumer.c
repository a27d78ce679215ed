/*
 * consumer.c
 *     A consumer worker: owns the partitions p of one source's topic with
 *     p % workers = its index (among those of its "partitions" option),
 *     reads them from the offsets stored in adstream.offsets, and hands
 *     full batches to batch.c.
 *
 * No transaction is open while the worker waits for Kafka: messages are
 * collected and parsed first, and only a complete batch starts one.  The
 * worker sleeps on its latch and on a pipe that librdkafka writes to when
 * messages arrive, so SIGTERM and new data are both answered at once.
 */
#include "consumer.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "attribution.h"
#include "batch.h"
#include "catalog.h"
#include "dedup_index.h"
#include "event_time.h"
#include "guc.h"
#include "input_format.h"
#include "kafka_consumer.h"
#include "kafka_log.h"
#include "redrive.h"
#include "node_watch.h"
#include "order_hold.h"
#include "registry.h"
#include "txn.h"
#include "worker.h"

#define CONSUME_CHUNK 1024
#define METADATA_TIMEOUT_MS 250
#define STATUS_INTERVAL_MS 500
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 10000
/*
 * Orders wait for the ad events: a pass that judged some looks again after
 * ATTRIBUTION_BUSY_MS (the events move on, and an order is judged that much
 * after they pass it), one that judged none after ATTRIBUTION_INTERVAL_MS
 * (a pass that finds nothing ready costs a few milliseconds).
 */
#define ATTRIBUTION_BUSY_MS 100
#define ATTRIBUTION_INTERVAL_MS 1000
/*
 * Orders held for the watermark (adstream.attribution_hold): at most this
 * many messages; past it the hold is let go into batches, partition by
 * partition (stored waiting), so a stalled watermark costs no more memory.
 */
#define ORDER_HOLD_MAX 100000
#define REDRIVE_INTERVAL_MS 1000
/*
 * Events set aside, while their ids' holders still run: a batch of them alone
 * after SET_ASIDE_RETRY_MS, doubling while they stay set aside (a holder that
 * runs long, a re-drive say, would otherwise have them deleted and written
 * back 50 times a second) up to SET_ASIDE_RETRY_MAX_MS.
 */
#define SET_ASIDE_RETRY_MS 20
#define SET_ASIDE_RETRY_MAX_MS 1000
#define OVERLAP_CHECK_MS 2000	/* how often the group's commits are read back */

typedef struct AdsConsumer
{
	AdsWorkerArgs args;
	AdsWorkerSlot *slot;
	AdsSourceDef source;		/* as read at start */

	AdsKafkaConsumer *kafka;
	int		   *part_of;		/* partition number -> index into batch.parts, or -1 */
	int			part_of_len;

	AdsBatch	batch;			/* the partitions and the batch being filled */
	TimestampTz batch_started;
	bool		out_of_range;	/* some partition has a gap to record */
	int			recorded_partitions;	/* sources.partition_count as this worker last wrote it */
	bool		cluster_verified;	/* the brokers answer as the source's cluster */

	/*
	 * Status (issue #14), per partition as in batch.parts: the Kafka
	 * timestamp (ms) of the last message read and of the last committed,
	 * and when the partition was last seen committed to the broker's end;
	 * 0 when unknown.  They bound how long the oldest message not yet
	 * committed has waited (pending_since).
	 */
	int64		read_ts_ms[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	int64		committed_ts_ms[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	TimestampTz caught_up_at[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	bool		answered;		/* a broker has answered since this worker started */
	const char *shown_state;	/* the state last put in the slot by set_running_state */

	AdsInput	input;			/* the source's format, compiled */

	/*
	 * Messages read but not yet taken, because the schema of the first one
	 * could not be fetched (the registry is away): taken in order once it
	 * answers, before anything new is read.
	 */
	rd_kafka_message_t *held[CONSUME_CHUNK];
	int			nheld;
	int			held_first;
	int			held_attempt;
	TimestampTz held_retry_at;

	AdsNodeWatch nodes;			/* other nodes on the topic (src/node_watch.c) */

	/*
	 * The orders worker: orders read whose time the ad-events watermark had
	 * not passed, held unread (src/order_hold.c), and the watermark as the
	 * last attribution pass read it (see ads_attribute_orders; PG_INT64_MIN
	 * until the first pass).
	 */
	AdsHold		hold;
	int64		watermark_us;
	bool		hold_started;	/* the hold was empty and now is not: read the watermark soon */
} AdsConsumer;

static AdsConsumer consumer;

static void assign_all(AdsConsumer *c);

/* ---------------------------------------------------------------------
 * Short transactions around the batch: reading the source and offsets.
 * ---------------------------------------------------------------------
 */

/* The partition is in the source's "partitions" option (or it has none). */
static bool
listed(AdsConsumer *c, int32 partition)
{
	if (c->source.npartitions < 0)
		return true;
	for (int i = 0; i < c->source.npartitions; i++)
		if (c->source.partitions[i] == partition)
			return true;
	return false;
}

/* Returns false when the source is gone, paused, or of another generation. */
static bool
load_source(AdsConsumer *c)
{
	bool		ok;

	ads_begin_tx("adstream: reading source");
	ok = ads_catalog_read_source(c->args.owner_id, c->args.generation, &c->source);
	/* After a start, rebuild the dedup index now rather than in the first batch. */
	if (ok && !c->source.is_orders)
		ads_dedup_index_prepare();
	ads_end_tx();
	return ok;
}

/* The broker's end of a partition, outside any wait we could not answer. */
static int64
end_offset(AdsConsumer *c, int32 partition)
{
	int64		lo,
				hi;

	if (rd_kafka_query_watermark_offsets(c->kafka->rk, c->source.topic, partition,
										 &lo, &hi, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("adstream source \"%s\": could not read the end offset of partition %d",
						c->source.name, partition),
				 errhint("Check that the brokers are reachable; the worker retries.")));
	return hi;
}

/*
 * With the 'latest' start policy, the source's first start stores the
 * broker's current end of every partition of the topic, in one transaction
 * and before anything is consumed, so that a crash before the first commit
 * cannot move the starting point.  Partitions that appear later, without a
 * stored offset, are read from their beginning: their first messages came
 * after the source started.
 */
static void
store_latest_offsets(AdsConsumer *c)
{
	int			count = ads_kafka_partition_count(c->kafka, c->source.topic, 1000);

	if (count < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("adstream source \"%s\": could not read the partitions of topic \"%s\"",
						c->source.name, c->source.topic),
				 errhint("Check that the brokers are reachable; the worker retries.")));
	for (int p = 0; p < count; p++)
		if (listed(c, p))
			SPI_execute_with_args("INSERT INTO adstream.offsets (source, topic, partition, next_offset) "
							  "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
							  4, (Oid[]) {TEXTOID, TEXTOID, INT4OID, INT8OID},
							  (Datum[]) {CStringGetTextDatum(c->source.name), CStringGetTextDatum(c->source.topic),
						  Int32GetDatum(p), Int64GetDatum(end_offset(c, p))},
							  NULL, false, 0);
}

/*
 * The rewinds being replayed (adstream.rewinds, unfinished), read in the
 * transaction that reads the offsets: the batch judges the messages below a
 * rewind's to_offset by its rule (src/batch.c) and moves its row with the
 * offsets, so what is replayed and what is not is always what is committed.
 */
static void
load_rewinds(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;

	for (int i = 0; i < b->nparts; i++)
		b->parts[i].rw_id = 0;
	if (SPI_execute_with_args("SELECT rp.partition, r.id, rp.to_offset, r.mode = 'replace', "
							  "(extract(epoch FROM r.window_from) * 1000000)::int8, "
							  "(extract(epoch FROM r.window_to) * 1000000)::int8 "
							  "FROM adstream.rewinds r JOIN adstream.rewind_partitions rp ON rp.rewind_id = r.id "
							  "WHERE r.source = $1 AND r.topic = $2 AND rp.finished_at IS NULL",
							  2, (Oid[]) {TEXTOID, TEXTOID},
							  (Datum[]) {CStringGetTextDatum(c->source.name), CStringGetTextDatum(c->source.topic)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not read rewinds");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));

		for (int i = 0; i < b->nparts; i++)
		{
			AdsPartition *p = &b->parts[i];
			bool		replace;

			if (p->partition != partition)
				continue;
			p->rw_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			p->rw_to = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			replace = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
			p->rw_replace = replace;
			p->rw_from_us = replace ? DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull)) : 0;
			p->rw_until_us = replace ? DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull)) : 0;
		}
	}
	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].rw_id != 0)
			ereport(LOG,
					(errmsg("%s replays partition %d up to offset %lld (rewind %lld, %s)",
							ads_worker_name(), b->parts[i].partition, (long long) b->parts[i].rw_to,
							(long long) b->parts[i].rw_id, b->parts[i].rw_replace ? "replace" : "recount")));
}

/* Reads the stored next_offset of each partition in the batch. */
static void
load_offsets(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	bool		first_start;

	ads_begin_tx("adstream: reading offsets");
	for (int i = 0; i < b->nparts; i++)
		b->parts[i].committed = -1;

	for (int attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_with_args("SELECT partition, next_offset FROM adstream.offsets "
								  "WHERE source = $1 AND topic = $2",
								  2, (Oid[]) {TEXTOID, TEXTOID},
								  (Datum[]) {CStringGetTextDatum(c->source.name), CStringGetTextDatum(c->source.topic)},
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "adstream: could not read offsets");
		first_start = (SPI_processed == 0);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int32		partition = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
			int64		next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));

			for (int i = 0; i < b->nparts; i++)
				if (b->parts[i].partition == partition)
					b->parts[i].committed = next;
		}
		if (!first_start || strcmp(c->source.start_policy, "latest") != 0)
			break;
		/* Read back what is stored: another worker of the source may have been first. */
		store_latest_offsets(c);
	}
	load_rewinds(c);
	ads_end_tx();

	for (int i = 0; i < b->nparts; i++)
		b->parts[i].position = b->parts[i].committed;
}

/*
 * Kafka said a partition's position is out of range: the broker trimmed
 * messages before we read them (retention shorter than the lag), or the
 * stored offset lies beyond the partition's end (the topic was deleted and
 * created again).  Those events are gone.  Record the stretch in
 * adstream.offset_gaps in the same transaction that moves the stored offset
 * past it, say so, and read on from the partition's beginning.  Called
 * between batches, so position is also what is stored.
 */
static void
record_gaps(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	bool		pending = false;

	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];
		int64		lo,
					hi;
		const char *reason = NULL;

		if (!p->out_of_range)
			continue;
		/* What it holds is let go into a batch first (release_orders), so that position is stored. */
		if (ads_hold_partition_held(&c->hold, p->partition))
		{
			pending = true;
			continue;
		}
		if (rd_kafka_query_watermark_offsets(c->kafka->rk, c->source.topic, p->partition,
											 &lo, &hi, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
			return;				/* the broker is away: try again later */
		if (p->position >= 0 && p->position < lo)
			reason = "retention";
		else if (p->position > hi)
			reason = "offset_beyond_end";

		if (reason != NULL)
		{
			ads_begin_tx("adstream: recording an offset gap");
			if (SPI_execute_with_args(
									  "WITH gap AS (INSERT INTO adstream.offset_gaps "
									  "  (source, topic, partition, from_offset, to_offset, reason) "
									  "  VALUES ($1, $2, $3, $4, $5, $6)) "
									  "UPDATE adstream.offsets SET next_offset = $5, updated_at = now() "
									  "WHERE source = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
									  6, (Oid[]) {TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID, TEXTOID},
									  (Datum[]) {CStringGetTextDatum(c->source.name), CStringGetTextDatum(c->source.topic),
										  Int32GetDatum(p->partition), Int64GetDatum(p->position),
									  Int64GetDatum(lo), CStringGetTextDatum(reason)},
									  NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("offsets of source \"%s\" moved under this worker", c->source.name),
						 errhint("Another worker consumed the same partitions; this worker starts over.")));
			ads_end_tx();
			ereport(WARNING,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("adstream source \"%s\": partition %d, offsets %lld to %lld of topic \"%s\" were never read",
							c->source.name, p->partition, (long long) p->position, (long long) lo, c->source.topic),
					 strcmp(reason, "retention") == 0 ?
					 errdetail("The broker removed them before they were read. The gap is recorded in adstream.offset_gaps.") :
					 errdetail("The stored offset is beyond the partition's end (%lld): the topic was deleted and created again. Reading resumes at its beginning. The gap is recorded in adstream.offset_gaps.",
							   (long long) hi),
					 errhint("Kafka must keep messages longer than adstream can fall behind, pauses included.")));
			{
				char		buf[ADS_ERROR_LEN];

				snprintf(buf, sizeof(buf), "partition %d: offsets %lld to %lld never read (%s; see adstream.offset_gaps)",
						 p->partition, (long long) p->position, (long long) lo, reason);
				ads_slot_set_error(c->slot, buf);
			}
			p->position = p->committed = lo;
		}
		p->out_of_range = false;
	}
	c->out_of_range = pending;
	assign_all(c);
}

/* ---------------------------------------------------------------------
 * Kafka partitions
 * ---------------------------------------------------------------------
 */

/*
 * Status (issue #14): the time since which the oldest message of partition
 * i not yet committed has been waiting at most, or 0 when everything up to
 * the broker's end hi is committed.  Two upper bounds, of which the later
 * (tighter) one is taken: the last time the partition was seen committed
 * to its end (every message after that arrived later), and the Kafka
 * timestamp of the last committed message (the next one was produced no
 * earlier, as far as the producers' clocks agree).  -1 when neither is
 * known yet (the first batch after a start).
 */
static TimestampTz
pending_since(AdsConsumer *c, int i, int64 hi, TimestampTz now)
{
	AdsPartition *p = &c->batch.parts[i];
	TimestampTz bound = -1;

	if (hi < 0)
		return -1;
	if (p->committed >= hi)
	{
		c->caught_up_at[i] = now;
		return 0;
	}
	if (c->caught_up_at[i] != 0)
		bound = c->caught_up_at[i];
	if (c->committed_ts_ms[i] > 0)
	{
		TimestampTz ts = ads_unix_us_to_timestamptz(c->committed_ts_ms[i] * 1000);

		bound = Max(bound, Min(ts, now));
	}
	return bound;
}

/* Show in the registry where each partition is read, and the broker's end. */
static void
report_positions(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	AdsPositionInfo info[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < b->nparts; i++)
	{
		int64		lo = -1,
					hi = -1;

		info[i].partition = b->parts[i].partition;
		info[i].position = b->parts[i].position;
		if (rd_kafka_get_watermark_offsets(c->kafka->rk, c->source.topic, b->parts[i].partition,
										   &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0)
			hi = -1;
		info[i].high_watermark = hi;
		info[i].pending_since = pending_since(c, i, hi, now);
	}
	ads_slot_set_positions(c->slot, b->nparts, info);
}

/*
 * Status (issue #14): the worker's state between batches says whether the
 * broker answers: "connecting" until it first does, "disconnected" once
 * librdkafka says every broker is down (until one answers again), else
 * "consuming".
 */
static void
set_running_state(AdsConsumer *c)
{
	int			conn = ads_slot_connected(c->slot);
	const char *state = c->nheld > 0 ? "registry_wait" :	/* a record waits for its schema */
		conn == ADS_CONN_UP ? "consuming" :
		conn == ADS_CONN_DOWN ? "disconnected" : "connecting";

	if (state != c->shown_state)
	{
		ads_slot_set_state(c->slot, state);
		c->shown_state = state;
	}
}

/*
 * A broker answered a metadata request: the connection is up, and an error
 * that ended a predecessor is over.  Messages are no proof: librdkafka hands
 * out what it fetched before the brokers went down.
 */
static void
broker_answered(AdsConsumer *c)
{
	ads_slot_set_connected(c->slot, true);
	if (!c->answered)
	{
		ads_slot_clear_error(c->slot, ADS_ERRCLASS_EXIT);
		c->answered = true;
	}
}

/* (Re)assign every owned partition at the position we expect next. */
static void
assign_all(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(b->nparts);
	int			maxp = -1;
	rd_kafka_resp_err_t err;

	for (int i = 0; i < b->nparts; i++)
	{
		rd_kafka_topic_partition_t *tp =
			rd_kafka_topic_partition_list_add(list, c->source.topic, b->parts[i].partition);

		tp->offset = b->parts[i].position >= 0 ? b->parts[i].position : RD_KAFKA_OFFSET_BEGINNING;
		maxp = Max(maxp, b->parts[i].partition);
	}
	err = rd_kafka_assign(c->kafka->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("adstream source \"%s\": could not assign partitions: %s",
						c->source.name, rd_kafka_err2str(err))));

	if (maxp + 1 > c->part_of_len)
	{
		if (c->part_of)
			pfree(c->part_of);
		c->part_of_len = maxp + 1;
		c->part_of = MemoryContextAlloc(TopMemoryContext, sizeof(int) * c->part_of_len);
	}
	for (int i = 0; i < c->part_of_len; i++)
		c->part_of[i] = -1;
	for (int i = 0; i < b->nparts; i++)
		c->part_of[b->parts[i].partition] = i;
	report_positions(c);
}

/*
 * Record how many partitions the topic has, before anything of them is
 * consumed.  Dedup expiry gives up a source's hours behind its slowest
 * partition; a partition that has neither a stored offset nor a worker
 * reporting it (its worker has no slot yet, or waits in a backoff, or the
 * source was paused before it started) would otherwise be invisible, and
 * its history judged too_late once read.  With the count, expiry holds the
 * source until it sees every partition (docs/architecture.md, "Dedup
 * expiry").  Every worker records the whole topic's count, so one running
 * worker is enough.
 */
static void
record_partition_count(AdsConsumer *c, int count)
{
	if (count == c->recorded_partitions)
		return;
	ads_begin_tx("adstream: recording the topic's partitions");
	SPI_execute_with_args("UPDATE adstream.sources SET partition_count = $2 "
						  "WHERE name = $1 AND partition_count IS DISTINCT FROM $2",
						  2, (Oid[]) {TEXTOID, INT4OID},
						  (Datum[]) {CStringGetTextDatum(c->source.name), Int32GetDatum(count)},
						  NULL, false, 0);
	ads_end_tx();
	c->recorded_partitions = count;
}

/*
 * The brokers must be the source's Kafka cluster: its offsets are positions
 * in that cluster's topic.  The first worker to connect records the cluster
 * id in sources.cluster_id; a worker whose brokers answer as another cluster
 * (a broker list moved in two steps, a DNS name that now points elsewhere, a
 * database restored beside another Kafka) does not consume, nor does one of
 * a source whose topic another, older source of the kind already consumes in
 * this cluster (under another address: create_source could not tell).  The
 * error (class SETUP) stays in source_status; the worker retries after its
 * backoff, and alter_source or drop_source resolve it.  Brokers too old to
 * have a cluster id are taken as they are.
 */
static void
verify_cluster(AdsConsumer *c)
{
	char	   *id = rd_kafka_clusterid(c->kafka->rk, 0);	/* known from the metadata just read */
	char		recorded[128] = "";
	char		other[NAMEDATALEN] = "";
	char		msg[ADS_ERROR_LEN];

	if (id == NULL)
		return;
	ads_begin_tx("adstream: checking the Kafka cluster");
	if (SPI_execute_with_args("WITH u AS (UPDATE adstream.sources SET cluster_id = $2 "
							  "           WHERE id = $1 AND cluster_id IS NULL RETURNING cluster_id) "
							  "SELECT coalesce((SELECT cluster_id FROM u), s.cluster_id), "
							  "(SELECT o.name FROM adstream.sources o WHERE o.id < s.id AND o.kind = s.kind "
							  " AND o.topic = s.topic AND o.cluster_id = $2 ORDER BY o.id LIMIT 1) "
							  "FROM adstream.sources s WHERE s.id = $1",
							  2, (Oid[]) {INT4OID, TEXTOID},
							  (Datum[]) {Int32GetDatum(c->args.owner_id), CStringGetTextDatum(id)},
							  NULL, false, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *r = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *o = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		/* copied: SPI's memory goes at commit */
		strlcpy(recorded, r ? r : "", sizeof(recorded));
		strlcpy(other, o ? o : "", sizeof(other));
	}
	ads_end_tx();

	if (recorded[0] != '\0' && strcmp(recorded, id) != 0)
	{
		snprintf(msg, sizeof(msg), "brokers \"%s\" answer as Kafka cluster %s, but the offsets of this source are positions in cluster %s",
				 c->source.brokers, id, recorded);
		ads_slot_set_error_class(c->slot, ADS_ERRCLASS_SETUP, msg);
		rd_kafka_mem_free(c->kafka->rk, id);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream source \"%s\": %s", c->source.name, msg),
				 errhint("Point the source at its cluster again with adstream.alter_source(); a source for another cluster is a new source (drop and create).")));
	}
	if (other[0] != '\0')
	{
		snprintf(msg, sizeof(msg), "source \"%s\" already consumes topic \"%s\" of Kafka cluster %s",
				 other, c->source.topic, id);
		ads_slot_set_error_class(c->slot, ADS_ERRCLASS_SETUP, msg);
		rd_kafka_mem_free(c->kafka->rk, id);
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("adstream source \"%s\": %s", c->source.name, msg),
				 errdetail("A second source on the same partitions would count every event again."),
				 errhint("Drop this source, and use the existing one.")));
	}
	rd_kafka_mem_free(c->kafka->rk, id);
	c->cluster_verified = true;
}

/*
 * Look for partitions of the topic that this worker owns and does not
 * consume yet.  Returns false if metadata was not available.
 */
static bool
discover_partitions(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	int			count = ads_kafka_partition_count(c->kafka, c->source.topic, METADATA_TIMEOUT_MS);
	int			added = 0;

	if (count >= 0)
		broker_answered(c);
	else if (count == -1)
		ads_slot_set_connection(c->slot, true, false);	/* answered, with an error (no such topic) */
	if (count < 0)
		return false;
	if (count > 0)
		record_partition_count(c, count);
	if (!c->cluster_verified)
		verify_cluster(c);

	/*
	 * Workers capped (issue #14): the launcher starts no worker that would
	 * own no partition, once any worker has said how many there are; one
	 * started before that, with none to read, says so and stops.  It is
	 * started again when the topic has grown.
	 */
	ads_slot_set_topic_partitions(c->slot, count);
	if (c->args.worker_index >= count && b->nparts == 0)
	{
		char		why[ADS_STOP_REASON_LEN + 64];

		ads_registry_wake_launcher();
		snprintf(why, sizeof(why), "topic \"%s\" has %d partition(s), none for this worker; it starts again if the topic grows",
				 c->source.topic, count);
		ads_worker_exit(why);
	}
	c->nodes.topic_partitions = count;

	for (int p = 0; p < count; p++)
	{
		bool		have = false;

		if (p % c->args.nworkers != c->args.worker_index || !listed(c, p))
			continue;
		for (int i = 0; i < b->nparts; i++)
			if (b->parts[i].partition == p)
				have = true;
		if (ads_node_stopped(&c->nodes, p))
			have = true;		/* another node consumes it */
		if (have)
			continue;
		if (b->nparts >= ADS_MAX_TOPIC_PARTITIONS_PER_WORKER)
		{
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("%s cannot take more than %d partitions",
							ads_worker_name(), ADS_MAX_TOPIC_PARTITIONS_PER_WORKER),
					 errhint("Raise the source's \"workers\" option.")));
			break;
		}
		memset(&b->parts[b->nparts], 0, sizeof(AdsPartition));
		c->read_ts_ms[b->nparts] = c->committed_ts_ms[b->nparts] = 0;
		c->caught_up_at[b->nparts] = 0;
		b->parts[b->nparts].partition = p;
		b->parts[b->nparts].committed = -1;
		b->parts[b->nparts].position = -1;
		b->nparts++;
		added++;
	}
	if (added == 0)
		return true;
	/* Events may have been set aside on them (before a restart, a handoff). */
	if (!b->is_orders)
		b->aside_due = true;

	/*
	 * Positions of partitions we already consume are in memory (they may run
	 * ahead of the database by the unwritten batch); only new ones need their
	 * stored offsets.
	 */
	{
		int64	   *keep = palloc(sizeof(int64) * b->nparts);

		for (int i = 0; i < b->nparts - added; i++)
			keep[i] = b->parts[i].position;
		load_offsets(c);
		for (int i = 0; i < b->nparts - added; i++)
			b->parts[i].position = keep[i];
		pfree(keep);
	}
	ereport(LOG,
			(errmsg("%s consumes %d partition(s) of topic \"%s\"",
					ads_worker_name(), b->nparts, c->source.topic)));
	assign_all(c);
	return true;
}

/*
 * Between batches: another node on our partitions stops them here (see
 * src/node_watch.c), and the co-partitioning contract is reported.
 */
static void
check_nodes(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	int32		partitions[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	int64		committed[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	int32		stop[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	int			nstop;
	int			kept = 0;

	for (int i = 0; i < b->nparts; i++)
	{
		partitions[i] = b->parts[i].partition;
		committed[i] = b->parts[i].committed;
	}
	nstop = ads_node_check(&c->nodes, c->kafka->rk, c->slot, partitions, committed, b->nparts, stop);
	if (nstop == 0)
		return;
	for (int i = 0; i < b->nparts; i++)
		if (!ads_node_stopped(&c->nodes, b->parts[i].partition))
		{
			/* with the status kept beside each partition */
			c->read_ts_ms[kept] = c->read_ts_ms[i];
			c->committed_ts_ms[kept] = c->committed_ts_ms[i];
			c->caught_up_at[kept] = c->caught_up_at[i];
			b->parts[kept++] = b->parts[i];
		}
		else
			ads_hold_drop(&c->hold, b->parts[i].partition);	/* read again by their new owner */
	b->nparts = kept;
	assign_all(c);
}

/* ---------------------------------------------------------------------
 * Batches
 * ---------------------------------------------------------------------
 */

/*
 * After a fence error: another process wrote our partitions' offsets.  Drop
 * what we hold and start over from what is stored.
 */
static void
reset_from_stored(AdsConsumer *c)
{
	for (int i = c->held_first; i < c->nheld; i++)
		rd_kafka_message_destroy(c->held[i]);
	c->nheld = c->held_first = 0;
	ads_hold_drop(&c->hold, -1);
	ads_batch_reset(&c->batch);
	for (int i = 0; i < c->batch.nparts; i++)
		c->read_ts_ms[i] = c->committed_ts_ms[i] = c->caught_up_at[i] = 0;
	rd_kafka_assign(c->kafka->rk, NULL);
	load_offsets(c);
	assign_all(c);
}

/* The ad-events watermark, as last read, has passed ts. */
static inline bool
watermark_passed(const AdsConsumer *c, int64 ts_us)
{
	return c->watermark_us != PG_INT64_MIN && ts_us <= c->watermark_us;
}

/*
 * Put a message read from partition index idx into the batch, parsed (an
 * order held was parsed when it was read: parsed is that order).
 */
static AdsMsg *
batch_message(AdsConsumer *c, rd_kafka_message_t *rkm, int idx, const AdsOrder *parsed)
{
	AdsBatch   *b = &c->batch;
	AdsMsg	   *m;
	char		detail[ADS_DETAIL_LEN];

	if (b->nmsgs == 0)
		c->batch_started = GetCurrentTimestamp();
	m = &b->msgs[b->nmsgs++];
	m->rkm = rkm;
	m->part = idx;
	m->detail = NULL;
	m->taken_up = false;
	if (parsed != NULL)
	{
		m->parse_reason = ADS_OK;
		m->order = *parsed;
	}
	else if (b->is_orders)
		m->parse_reason = ads_input_parse_order(&c->input, rkm->payload, rkm->len,
												(size_t) adstream_max_message_bytes,
												&m->order, detail, sizeof(detail));
	else
		m->parse_reason = ads_input_parse_event(&c->input, rkm->payload, rkm->len,
												(size_t) adstream_max_message_bytes,
												&m->ev, detail, sizeof(detail));
	if (m->parse_reason != ADS_OK)
		m->detail = MemoryContextStrdup(b->ctx, detail);
	return m;
}

/*
 * The orders worker: move held messages into the batch, each partition's
 * in offset order, while its oldest is an order the watermark has passed,
 * not an order (a dead letter to be), held adstream.attribution_hold, or
 * the partition's gap must be recorded.  A hold grown to ORDER_HOLD_MAX,
 * or turned off, is let go whole.  Those the watermark has not passed are
 * then stored waiting, as without a hold.
 */
static void
release_orders(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	TimestampTz due;
	bool		all;

	if (c->hold.total == 0)
		return;
	due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), -adstream_attribution_hold_ms);
	all = (c->hold.total >= ORDER_HOLD_MAX || adstream_attribution_hold_ms == 0);
	for (int q = 0; q < c->hold.nqueues && b->nmsgs < b->msgs_cap; q++)
	{
		int32		partition = c->hold.queues[q].partition;
		int			idx = (partition < c->part_of_len) ? c->part_of[partition] : -1;
		const AdsHeldMsg *m;

		Assert(idx >= 0);		/* a partition's hold is dropped with it */
		while (b->nmsgs < b->msgs_cap && (m = ads_hold_peek(&c->hold, q)) != NULL)
		{
			if (!(all || !m->is_order || watermark_passed(c, m->order.ts_us) || m->since <= due ||
				  b->parts[idx].out_of_range))
				break;
			(void) batch_message(c, m->rkm, idx, m->is_order ? &m->order : NULL);
			(void) ads_hold_pop(&c->hold, q);
		}
	}
}

/*
 * Take one message into the batch.  Returns false, taking nothing, when
 * the message cannot be judged yet (its Avro schema cannot be fetched): the
 * caller holds it and the ones after it, and tries again later.
 */
static bool
add_message(AdsConsumer *c, rd_kafka_message_t *rkm)
{
	AdsBatch   *b = &c->batch;
	int			idx;
	AdsPartition *p;
	char		regerr[512];

	if (rkm->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
	{
		/* Fetching this partition has stopped; record_gaps() takes over. */
		idx = (rkm->partition >= 0 && rkm->partition < c->part_of_len) ? c->part_of[rkm->partition] : -1;
		if (idx >= 0)
		{
			b->parts[idx].out_of_range = true;
			c->out_of_range = true;
		}
		rd_kafka_message_destroy(rkm);
		return true;
	}
	if (rkm->err)
	{
		if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			char		buf[ADS_ERROR_LEN];

			snprintf(buf, sizeof(buf), "partition %d: %s", rkm->partition, rd_kafka_message_errstr(rkm));
			ads_slot_set_error_class(c->slot, ADS_ERRCLASS_KAFKA, buf);
			ereport(LOG, (errmsg("adstream source \"%s\": kafka: %s", c->source.name, buf)));
		}
		rd_kafka_message_destroy(rkm);
		return true;
	}

	idx = (rkm->partition >= 0 && rkm->partition < c->part_of_len) ? c->part_of[rkm->partition] : -1;
	p = idx >= 0 ? &b->parts[idx] : NULL;
	/* Left over from before a reassignment: not ours, or already taken. */
	if (p == NULL || (p->position >= 0 && rkm->offset < p->position))
	{
		rd_kafka_message_destroy(rkm);
		return true;
	}
	if (!ads_input_ready(&c->input, rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
						 regerr, sizeof(regerr)))
	{
		char		buf[ADS_ERROR_LEN];

		snprintf(buf, sizeof(buf), "partition %d offset %lld waits for its schema: %s",
				 rkm->partition, (long long) rkm->offset, regerr);
		ads_slot_set_error(c->slot, buf);
		if (c->held_attempt == 0)
			ereport(WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("adstream source \"%s\": partition %d offset %lld waits for its schema",
							c->source.name, rkm->partition, (long long) rkm->offset),
					 errdetail_internal("%s", regerr),
					 errhint("The worker holds this message and the ones after it, and asks the schema registry again with backoff; nothing is dead-lettered or skipped.")));
		return false;
	}
	p->position = rkm->offset + 1;
	c->read_ts_ms[idx] = rd_kafka_message_timestamp(rkm, NULL);

	if (b->is_orders && adstream_attribution_hold_ms > 0)
	{
		AdsOrder	order;
		char		detail[ADS_DETAIL_LEN];
		bool		valid;

		valid = ads_input_parse_order(&c->input, rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
									  &order, detail, sizeof(detail)) == ADS_OK;
		if (valid)
			ads_node_note_message(&c->nodes, rkm);
		if (ads_hold_partition_held(&c->hold, p->partition) || (valid && !watermark_passed(c, order.ts_us)))
		{
			/* Not for this batch: held, in order, until the watermark passes it. */
			if (c->hold.total == 0)
				c->hold_started = true;
			ads_hold_push(&c->hold, p->partition, rkm, valid ? &order : NULL, GetCurrentTimestamp());
		}
		else
			(void) batch_message(c, rkm, idx, valid ? &order : NULL);	/* not valid: parsed again, for its detail */
		return true;
	}
	if (batch_message(c, rkm, idx, NULL)->parse_reason == ADS_OK)
		ads_node_note_message(&c->nodes, rkm);
	return true;
}

/*
 * Take messages[0..n) in order; on the first that must wait, hold it and
 * the rest (held[] is empty or being drained from itself).
 */
static void
take_messages(AdsConsumer *c, rd_kafka_message_t **messages, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (add_message(c, messages[i]))
			continue;
		memmove(c->held, messages + i, sizeof(rd_kafka_message_t *) * (n - i));
		c->held_first = 0;
		c->nheld = n - i;
		c->held_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   ads_backoff_ms(c->held_attempt, RETRY_MIN_MS, RETRY_MAX_MS));
		c->held_attempt++;
		return;
	}
	c->nheld = c->held_first = 0;
	if (c->held_attempt > 0)
	{
		c->held_attempt = 0;
		ads_slot_set_state(c->slot, "consuming");
		ereport(LOG,
				(errmsg("adstream source \"%s\": the schema registry answers again; held messages taken",
						c->source.name)));
	}
}

/* Tell Kafka's group offsets where we are, for lag monitors only. */
static void
commit_to_kafka(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(b->nparts);

	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].in_batch)
		{
			rd_kafka_topic_partition_t *tp =
				rd_kafka_topic_partition_list_add(list, c->source.topic, b->parts[i].partition);

			tp->offset = b->parts[i].b_next;
			ads_node_tag_commit(&c->nodes, tp);	/* read back by other nodes */
		}
	if (list->cnt > 0)
		(void) rd_kafka_commit(c->kafka->rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Write the batch in one transaction and settle its dedup claims either way.
 * Returns NULL once committed, else the error (the transaction rolled back).
 */
static ErrorData *
try_write(AdsBatch *b)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorData  *edata = NULL;

	PG_TRY();
	{
		ads_batch_write(b);
	}
	PG_CATCH();
	{
		edata = ads_abort_tx(oldcxt);
	}
	PG_END_TRY();
	ads_batch_settle(b, edata == NULL);
	return edata;
}

/*
 * Write the batch, retrying the same messages until it commits.  Only a
 * fence error gives them up, because then they belong to someone else.
 */
static void
flush_batch(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;

	c->shown_state = NULL;		/* states of the flush below; set_running_state sets it again */
	for (int attempt = 0;; attempt++)
	{
		ErrorData  *edata;

		ads_slot_set_state(c->slot, attempt == 0 ? "committing" : "retrying");
		edata = try_write(b);
		if (edata == NULL)
			break;

		/*
		 * A fenced batch of a worker about to stop for a changed source (its
		 * partitions handed to another node, export_partitions) says so
		 * before the worker goes: the one trace that the fence held.
		 */
		if (b->fenced)
			ereport(LOG,
					(errmsg("adstream source \"%s\": batch of %d messages not written: %s",
							c->source.name, b->nmsgs, edata->message),
					 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
		ads_worker_exit_if_changed(ads_catalog_source_current, &c->args, "source");
		ads_slot_set_error(c->slot, edata->message);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream source \"%s\": batch of %d messages not written: %s",
						c->source.name, b->nmsgs, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("%s%sThe worker retries the same messages; nothing is skipped.",
						 edata->hint ? edata->hint : "", edata->hint ? " " : "")));
		FreeErrorData(edata);

		/*
		 * (A source renamed, altered or dropped under this worker has
		 * stopped it above: re-reading its offsets by a name that may now
		 * be another source's is not for this worker to do.)
		 */
		if (b->fenced)
		{
			b->fenced = false;
			reset_from_stored(c);
			return;
		}
		/* The batch is given up here; it is read again by whoever runs next. */
		ads_worker_exit_if_stopped();
		ads_worker_wait(ads_backoff_ms(attempt, RETRY_MIN_MS, RETRY_MAX_MS));
	}

	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].in_batch)
		{
			b->parts[i].committed = b->parts[i].b_next;

			/*
			 * Everything read of it is in the batch, unless orders are held
			 * behind it: then what is committed ends at the batch's last.
			 */
			if (!ads_hold_partition_held(&c->hold, b->parts[i].partition))
				c->committed_ts_ms[i] = c->read_ts_ms[i];
			else if (b->parts[i].b_last >= 0)
				c->committed_ts_ms[i] = rd_kafka_message_timestamp(b->msgs[b->parts[i].b_last].rkm, NULL);
		}
	commit_to_kafka(c);
	ads_batch_reset(b);

	ads_slot_note_commit(c->slot);
	c->shown_state = NULL;
	set_running_state(c);
}

/*
 * Write a re-drive batch once.  On failure it is dropped: its dead letters
 * are still marked, and the next round reads them again.
 */
static void
flush_redrive(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	int			n = b->nmsgs;
	ErrorData  *edata = try_write(b);

	b->fenced = false;			/* offsets are not a re-drive's business */
	ads_batch_reset(b);
	if (edata == NULL)
	{
		ereport(LOG,
				(errmsg("adstream source \"%s\": %d dead letter(s) re-driven", c->source.name, n)));
		return;
	}
	ads_slot_set_error(c->slot, edata->message);
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("adstream source \"%s\": re-drive of %d dead letters not written: %s",
					c->source.name, n, edata->message),
			 errhint("They stay marked and are tried again within a second.")));
	FreeErrorData(edata);
}

/*
 * Judge the waiting orders that have become ready; returns how many were
 * judged.  An error (a lock timeout, say) is logged and the pass retried
 * later: orders wait durably.
 */
static int
attribute_orders(AdsConsumer *c)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile int judged = 0;

	PG_TRY();
	{
		int			n;

		/* A full pass means more may be ready. */
		do
		{
			CHECK_FOR_INTERRUPTS();
			n = ads_attribute_orders(&c->watermark_us);
			judged += n;
		} while (n >= ADS_ATTRIBUTION_PASS);
	}
	PG_CATCH();
	{
		ErrorData  *edata = ads_abort_tx(oldcxt);

		ads_slot_set_error(c->slot, edata->message);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream source \"%s\": attribution pass failed: %s", c->source.name, edata->message),
				 errhint("Waiting orders stay in adstream.waiting_orders and are judged on the next pass.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return judged;
}

/* ---------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------
 */

/*
 * Wait for the batch's deadline, new messages (the wake-up pipe) or the
 * latch; an idle worker still reports its positions every
 * STATUS_INTERVAL_MS, which bounds how far lag_seconds overshoots.
 */
static void
wait_for_messages(AdsConsumer *c)
{
	long		timeout = STATUS_INTERVAL_MS;

	if (c->batch.nmsgs > 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(),
							TimestampTzPlusMilliseconds(c->batch_started, adstream_batch_max_ms),
							&secs, &usecs);
		timeout = Min(timeout, Max(1, secs * 1000 + usecs / 1000));
	}
	if (c->nheld > 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(), c->held_retry_at, &secs, &usecs);
		timeout = Max(1, Min(timeout, secs * 1000 + usecs / 1000));
	}
	if (c->batch.aside_due && c->batch.nparts > 0)
		timeout = Min(timeout, SET_ASIDE_RETRY_MS);
	/* orders held: the watermark is read again, and the oldest may be due */
	if (c->hold.total > 0)
		timeout = Min(timeout, ATTRIBUTION_BUSY_MS);
	(void) WaitLatchOrSocket(MyLatch,
							 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 c->kafka->wakeup_fd[0], timeout, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

void
adstream_consumer_main(Datum arg)
{
	AdsConsumer *c = &consumer;
	AdsBatch   *b = &c->batch;
	char		errbuf[512];
	char		client_id[NAMEDATALEN + 32];
	rd_kafka_message_t *chunk[CONSUME_CHUNK];
	TimestampTz next_discovery = 0;
	TimestampTz next_status = 0;
	TimestampTz next_attribution = 0;
	TimestampTz last_attribution = 0;
	TimestampTz next_redrive = 0;
	TimestampTz next_overlap = 0;
	TimestampTz next_aside = 0;
	int			aside_retry_ms = SET_ASIDE_RETRY_MS;

	c->slot = ads_worker_start(&c->args);
	c->watermark_us = PG_INT64_MIN;
	ads_worker_wait_for_schema(c->slot, "source", c->slot->owner_name);
	if (!load_source(c))
	{
		/* Changed before it started: the launcher says why in a moment. */
		ads_worker_wait(1000);
		ads_worker_exit("its source was paused, changed, renamed or dropped as it started");
	}
	ads_input_open(&c->input, c->source.is_orders, c->source.format, c->source.ts_format,
				   c->source.nfields, c->source.field_keys, c->source.field_paths,
				   c->source.registry_url, c->source.registry_timeout_ms);

	snprintf(client_id, sizeof(client_id), "adstream-%s-%d", c->source.name, c->args.worker_index);
	c->kafka = ads_kafka_consumer_open(c->source.brokers, c->source.group_id, client_id,
									   &c->source.props, c->args.nworkers, errbuf, sizeof(errbuf));
	if (c->kafka == NULL)
	{
		ads_slot_set_error(c->slot, errbuf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream source \"%s\": invalid Kafka configuration: %s", c->source.name, errbuf),
				 errhint("Correct the options with adstream.alter_source(); the worker retries.")));
	}

	ads_batch_init(b, c->args.owner_id, c->source.name, c->source.topic, c->source.is_orders);
	c->nodes.tag = c->source.node_tag;
	c->nodes.source = c->source.name;
	c->nodes.topic = c->source.topic;
	c->nodes.group_id = c->source.group_id;
	c->nodes.check_contract = (c->source.npartitions >= 0);
	c->nodes.nhanded = c->source.nhanded;
	c->nodes.handed_parts = c->source.handed_parts;
	c->nodes.handed_from = c->source.handed_from;
	b->stripe = (int16) Min(c->args.worker_index, PG_INT16_MAX);
	set_running_state(c);		/* "connecting" until a broker answers */
	ereport(LOG, (errmsg("%s started", ads_worker_name())));

	for (;;)
	{
		TimestampTz now;
		int			n;

		CHECK_FOR_INTERRUPTS();
		/* Asked to stop: what is collected is not committed, so it is read again. */
		ads_worker_exit_if_stopped();
		ads_worker_reload_config();
		ads_kafka_report(c->slot, "source", c->source.name);

		now = GetCurrentTimestamp();
		if (now >= next_discovery && b->nmsgs == 0)
		{
			bool		found = discover_partitions(c);

			/* While no broker answers, or an error waits to be proven over, ask every second. */
			next_discovery = TimestampTzPlusMilliseconds(now, found && ads_slot_healthy(c->slot) ?
														 adstream_discovery_interval_s * 1000L : 1000);
		}
		set_running_state(c);
		if (now >= next_status)
		{
			report_positions(c);
			next_status = TimestampTzPlusMilliseconds(now, STATUS_INTERVAL_MS);
		}
		/* Between batches, so that what is stored is where the gap begins. */
		if (c->out_of_range && b->nmsgs == 0)
			record_gaps(c);
		if (b->nmsgs == 0 && now >= next_overlap)
		{
			check_nodes(c);
			next_overlap = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), OVERLAP_CHECK_MS);
		}
		/*
		 * Orders wait for the ad events: judge those they have passed, and
		 * read the watermark for the orders held (soon after a hold begins).
		 */
		if (c->hold_started)
		{
			next_attribution = Min(next_attribution, TimestampTzPlusMilliseconds(last_attribution, ATTRIBUTION_BUSY_MS));
			c->hold_started = false;
		}
		if (b->is_orders && b->nmsgs == 0 && now >= next_attribution)
		{
			int			judged = attribute_orders(c);

			last_attribution = GetCurrentTimestamp();
			next_attribution = TimestampTzPlusMilliseconds(last_attribution,
														   judged > 0 || c->hold.total > 0 ?
														   ATTRIBUTION_BUSY_MS : ATTRIBUTION_INTERVAL_MS);
		}
		if (b->is_orders)
			release_orders(c);

		/*
		 * Events set aside for this worker (their ids held by another
		 * worker's running batch) are judged again even when Kafka has
		 * nothing new: a batch of them alone.
		 */
		if (!b->aside_due)
			aside_retry_ms = SET_ASIDE_RETRY_MS;
		if (b->aside_due && b->nparts > 0 && b->nmsgs == 0 && c->nheld == 0 && now >= next_aside)
		{
			flush_batch(c);
			next_aside = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), aside_retry_ms);
			aside_retry_ms = Min(aside_retry_ms * 2, SET_ASIDE_RETRY_MAX_MS);
			continue;
		}

		/* Dead letters marked for a re-drive, between batches. */
		if (b->nmsgs == 0 && c->nheld == 0 && now >= next_redrive)
		{
			int			n = ads_redrive_fill(b, &c->input, c->args.generation);

			if (n > 0)
				flush_redrive(c);
			next_redrive = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   n >= ADS_REDRIVE_BATCH ? 0 : REDRIVE_INTERVAL_MS);
		}

		/*
		 * Clear the wake-up pipe before reading, so that a message arriving
		 * after the read below writes to it again and the wait returns.
		 */
		ads_kafka_consumer_clear_wakeup(c->kafka);
		n = 0;
		if (c->nheld > 0)
		{
			/* held for the schema registry: retry them first, nothing new meanwhile */
			if (now >= c->held_retry_at && b->nmsgs + (c->nheld - c->held_first) <= b->msgs_cap)
			{
				int			count = c->nheld - c->held_first;
				rd_kafka_message_t *again[CONSUME_CHUNK];

				memcpy(again, c->held + c->held_first, sizeof(rd_kafka_message_t *) * count);
				c->nheld = c->held_first = 0;
				take_messages(c, again, count);
				n = c->nheld > 0 ? 0 : count;
			}
		}
		else if (b->nparts > 0 && b->nmsgs < b->msgs_cap)
		{
			n = (int) rd_kafka_consume_batch_queue(c->kafka->queue, 0, chunk,
												   Min(CONSUME_CHUNK, b->msgs_cap - b->nmsgs));
			take_messages(c, chunk, n);
			if (c->nheld > 0)
				n = 0;
		}

		if (b->nmsgs > 0 &&
			(b->nmsgs >= b->msgs_cap ||
			 TimestampDifferenceExceeds(c->batch_started, GetCurrentTimestamp(), adstream_batch_max_ms)))
		{
			/* What is read but not yet committed shows while the batch is written. */
			report_positions(c);
			flush_batch(c);
			continue;
		}
		if (n > 0)
			continue;
		wait_for_messages(c);
	}
}
