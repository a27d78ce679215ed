/*
 * consumer.c
 *     A consumer worker: owns the partitions p of one source's topic with
 *     p % workers = its index, reads them from the offsets stored in
 *     adstream.offsets, and hands full batches to batch.c.
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
#include "guc.h"
#include "kafka_consumer.h"
#include "kafka_log.h"
#include "registry.h"
#include "txn.h"
#include "worker.h"

#define CONSUME_CHUNK 1024
#define METADATA_TIMEOUT_MS 250
#define STATUS_INTERVAL_MS 500
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 10000
#define ATTRIBUTION_INTERVAL_MS 1000

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
} AdsConsumer;

static AdsConsumer consumer;

static void assign_all(AdsConsumer *c);

/* ---------------------------------------------------------------------
 * Short transactions around the batch: reading the source and offsets.
 * ---------------------------------------------------------------------
 */

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
		SPI_execute_with_args("INSERT INTO adstream.offsets (source, topic, partition, next_offset) "
							  "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
							  4, (Oid[]) {TEXTOID, TEXTOID, INT4OID, INT8OID},
							  (Datum[]) {CStringGetTextDatum(c->source.name), CStringGetTextDatum(c->source.topic),
						  Int32GetDatum(p), Int64GetDatum(end_offset(c, p))},
							  NULL, false, 0);
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

	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];
		int64		lo,
					hi;
		const char *reason = NULL;

		if (!p->out_of_range)
			continue;
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
	c->out_of_range = false;
	assign_all(c);
}

/* ---------------------------------------------------------------------
 * Kafka partitions
 * ---------------------------------------------------------------------
 */

/* Show in the registry where each partition is read, and the broker's end. */
static void
report_positions(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	AdsPositionInfo info[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];

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
	}
	ads_slot_set_positions(c->slot, b->nparts, info);
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
 * Look for partitions of the topic that this worker owns and does not
 * consume yet.  Returns false if metadata was not available.
 */
static bool
discover_partitions(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	int			count = ads_kafka_partition_count(c->kafka, c->source.topic, METADATA_TIMEOUT_MS);
	int			added = 0;

	if (count < 0)
		return false;

	for (int p = 0; p < count; p++)
	{
		bool		have = false;

		if (p % c->args.nworkers != c->args.worker_index)
			continue;
		for (int i = 0; i < b->nparts; i++)
			if (b->parts[i].partition == p)
				have = true;
		if (have)
			continue;
		if (b->nparts >= ADS_MAX_TOPIC_PARTITIONS_PER_WORKER)
		{
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("adstream source \"%s\": worker %d cannot take more than %d partitions",
							c->source.name, c->args.worker_index, ADS_MAX_TOPIC_PARTITIONS_PER_WORKER),
					 errhint("Raise the source's \"workers\" option.")));
			break;
		}
		memset(&b->parts[b->nparts], 0, sizeof(AdsPartition));
		b->parts[b->nparts].partition = p;
		b->parts[b->nparts].committed = -1;
		b->parts[b->nparts].position = -1;
		b->nparts++;
		added++;
	}
	if (added == 0)
		return true;

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
			(errmsg("adstream source \"%s\": worker %d consumes %d partition(s) of topic \"%s\"",
					c->source.name, c->args.worker_index, b->nparts, c->source.topic)));
	assign_all(c);
	return true;
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
	ads_batch_reset(&c->batch);
	rd_kafka_assign(c->kafka->rk, NULL);
	load_offsets(c);
	assign_all(c);
}

static void
add_message(AdsConsumer *c, rd_kafka_message_t *rkm)
{
	AdsBatch   *b = &c->batch;
	int			idx;
	AdsPartition *p;
	AdsMsg	   *m;
	char		detail[ADS_DETAIL_LEN];

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
		return;
	}
	if (rkm->err)
	{
		if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			char		buf[ADS_ERROR_LEN];

			snprintf(buf, sizeof(buf), "partition %d: %s", rkm->partition, rd_kafka_message_errstr(rkm));
			ads_slot_set_error(c->slot, buf);
			ereport(LOG, (errmsg("adstream source \"%s\": kafka: %s", c->source.name, buf)));
		}
		rd_kafka_message_destroy(rkm);
		return;
	}

	idx = (rkm->partition >= 0 && rkm->partition < c->part_of_len) ? c->part_of[rkm->partition] : -1;
	p = idx >= 0 ? &b->parts[idx] : NULL;
	/* Left over from before a reassignment: not ours, or already taken. */
	if (p == NULL || (p->position >= 0 && rkm->offset < p->position))
	{
		rd_kafka_message_destroy(rkm);
		return;
	}
	p->position = rkm->offset + 1;

	if (b->nmsgs == 0)
		c->batch_started = GetCurrentTimestamp();
	m = &b->msgs[b->nmsgs++];
	m->rkm = rkm;
	m->part = idx;
	m->detail = NULL;
	if (b->is_orders)
		m->parse_reason = ads_parse_order(rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
										  &m->order, detail, sizeof(detail));
	else
		m->parse_reason = ads_parse_event(rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
										  &m->ev, detail, sizeof(detail));
	if (m->parse_reason != ADS_OK)
		m->detail = MemoryContextStrdup(b->ctx, detail);
}

/* Tell Kafka's group offsets where we are, for lag monitors only. */
static void
commit_to_kafka(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(b->nparts);

	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].in_batch)
			rd_kafka_topic_partition_list_add(list, c->source.topic, b->parts[i].partition)->offset =
				b->parts[i].b_next;
	if (list->cnt > 0)
		(void) rd_kafka_commit(c->kafka->rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Write the batch, retrying the same messages until it commits.  Only a
 * fence error gives them up, because then they belong to someone else.
 */
static void
flush_batch(AdsConsumer *c)
{
	AdsBatch   *b = &c->batch;

	for (int attempt = 0;; attempt++)
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		bool		ok = false;
		ErrorData  *edata = NULL;

		ads_slot_set_state(c->slot, attempt == 0 ? "committing" : "retrying");
		PG_TRY();
		{
			ads_batch_write(b);
			ok = true;
		}
		PG_CATCH();
		{
			edata = ads_abort_tx(oldcxt);
		}
		PG_END_TRY();
		ads_batch_settle(b, ok);

		if (ok)
			break;

		ads_slot_set_error(c->slot, edata->message);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream source \"%s\": batch of %d messages not written: %s",
						c->source.name, b->nmsgs, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("%s%sThe worker retries the same messages; nothing is skipped.",
						 edata->hint ? edata->hint : "", edata->hint ? " " : "")));
		FreeErrorData(edata);

		if (b->fenced)
		{
			b->fenced = false;
			reset_from_stored(c);
			return;
		}
		ads_worker_wait(ads_backoff_ms(attempt, RETRY_MIN_MS, RETRY_MAX_MS));
	}

	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].in_batch)
			b->parts[i].committed = b->parts[i].b_next;
	commit_to_kafka(c);
	ads_batch_reset(b);

	ads_slot_note_commit(c->slot);
	ads_slot_set_state(c->slot, "consuming");
}

/*
 * Judge the waiting orders that have become ready.  An error (a lock
 * timeout, say) is logged and the pass retried later: orders wait durably.
 */
static void
attribute_orders(AdsConsumer *c)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		/* A full pass means more may be ready. */
		while (ads_attribute_orders() >= ADS_ATTRIBUTION_PASS)
			CHECK_FOR_INTERRUPTS();
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
}

/* ---------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------
 */

/* Wait for the batch's deadline, new messages (the wake-up pipe) or the latch. */
static void
wait_for_messages(AdsConsumer *c)
{
	long		timeout = 1000;

	if (c->batch.nmsgs > 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(),
							TimestampTzPlusMilliseconds(c->batch_started, adstream_batch_max_ms),
							&secs, &usecs);
		timeout = Max(1, secs * 1000 + usecs / 1000);
	}
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

	c->slot = ads_worker_start(&c->args);
	if (!load_source(c))
		proc_exit(0);			/* paused or dropped meanwhile */

	snprintf(client_id, sizeof(client_id), "adstream-%s-%d", c->source.name, c->args.worker_index);
	c->kafka = ads_kafka_consumer_open(c->source.brokers, c->source.group_id, client_id,
									   &c->source.props, errbuf, sizeof(errbuf));
	if (c->kafka == NULL)
	{
		ads_slot_set_error(c->slot, errbuf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream source \"%s\": invalid Kafka configuration: %s", c->source.name, errbuf),
				 errhint("Drop and re-create the source with valid options.")));
	}

	ads_batch_init(b, c->args.owner_id, c->source.name, c->source.topic, c->source.is_orders);
	b->stripe = (int16) Min(c->args.worker_index, PG_INT16_MAX);
	ads_slot_set_state(c->slot, "consuming");
	ereport(LOG, (errmsg("adstream consumer %d/%d of source \"%s\" started",
						 c->args.worker_index + 1, c->args.nworkers, c->source.name)));

	for (;;)
	{
		TimestampTz now;
		int			n;

		CHECK_FOR_INTERRUPTS();
		ads_worker_reload_config();
		ads_kafka_report(c->slot, "source", c->source.name);

		now = GetCurrentTimestamp();
		if (now >= next_discovery && b->nmsgs == 0)
		{
			bool		found = discover_partitions(c);

			next_discovery = TimestampTzPlusMilliseconds(now, found ?
														 adstream_discovery_interval_s * 1000L : 1000);
		}
		if (now >= next_status)
		{
			report_positions(c);
			next_status = TimestampTzPlusMilliseconds(now, STATUS_INTERVAL_MS);
		}
		/* Between batches, so that what is stored is where the gap begins. */
		if (c->out_of_range && b->nmsgs == 0)
			record_gaps(c);
		/* Orders wait for the ad events; look again every second. */
		if (b->is_orders && b->nmsgs == 0 && now >= next_attribution)
		{
			attribute_orders(c);
			next_attribution = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ATTRIBUTION_INTERVAL_MS);
		}

		/*
		 * Clear the wake-up pipe before reading, so that a message arriving
		 * after the read below writes to it again and the wait returns.
		 */
		ads_kafka_consumer_clear_wakeup(c->kafka);
		n = 0;
		if (b->nparts > 0 && b->nmsgs < b->msgs_cap)
		{
			n = (int) rd_kafka_consume_batch_queue(c->kafka->queue, 0, chunk,
												   Min(CONSUME_CHUNK, b->msgs_cap - b->nmsgs));
			for (int i = 0; i < n; i++)
				add_message(c, chunk[i]);
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
