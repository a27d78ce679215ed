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
#include "adstream.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "consumer.h"
#include "dedup_index.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define CONSUME_CHUNK 1024
#define METADATA_TIMEOUT_MS 250
#define STATUS_INTERVAL_MS 500
#define RETRY_MAX_MS 10000
#define ATTRIBUTION_INTERVAL_MS 1000
#define ATTRIBUTION_PASS 5000	/* adstream.attribute_orders() default limit */

static AdsConsumer consumer;

/* ---------------------------------------------------------------------
 * Short transactions around the batch: reading the source and offsets.
 * ---------------------------------------------------------------------
 */

/* Returns false when the source is gone, paused, or of another generation. */
static bool
load_source(AdsConsumer *c)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(c->args.source_id)};
	bool		ok = false;

	ads_begin_tx("adstream: reading source");
	if (SPI_execute_with_args("SELECT name, brokers, topic, start_policy, group_id, kind = 'orders' "
							  "FROM adstream.sources WHERE id = $1 AND enabled AND generation = $2",
							  2, (Oid[]) {INT4OID, INT8OID},
							  (Datum[]) {Int32GetDatum(c->args.source_id), Int64GetDatum(c->args.generation)},
							  NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		c->name = SPI_getvalue(tup, td, 1);
		c->brokers = SPI_getvalue(tup, td, 2);
		c->topic = SPI_getvalue(tup, td, 3);
		c->start_policy = SPI_getvalue(tup, td, 4);
		c->group_id = SPI_getvalue(tup, td, 5);
		c->is_orders = DatumGetBool(SPI_getbinval(tup, td, 6, &isnull));
		MemoryContextSwitchTo(old);

		if (SPI_execute_with_args("SELECT o.key, o.value FROM adstream.sources s, "
								  "jsonb_each_text(s.kafka_options) o WHERE s.id = $1",
								  1, argtypes, args, NULL, true, 0) == SPI_OK_SELECT)
		{
			old = MemoryContextSwitchTo(TopMemoryContext);
			c->nprops = (int) SPI_processed;
			c->prop_keys = palloc0(sizeof(char *) * Max(c->nprops, 1));
			c->prop_values = palloc0(sizeof(char *) * Max(c->nprops, 1));
			for (int i = 0; i < c->nprops; i++)
			{
				c->prop_keys[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
				c->prop_values[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
			}
			MemoryContextSwitchTo(old);
			ok = true;
		}
	}
	/* After a start, rebuild the dedup index now rather than in the first batch. */
	if (ok && !c->is_orders)
		ads_dedup_index_prepare();
	ads_end_tx();
	return ok;
}

/*
 * Reads the stored next_offset of each partition in c->parts.  With the
 * 'latest' start policy a partition without a row first gets one at the
 * broker's current end, so that a crash before the first commit cannot
 * move the starting point.
 */
static void
load_offsets(AdsConsumer *c)
{
	ads_begin_tx("adstream: reading offsets");
	for (int i = 0; i < c->nparts; i++)
		c->parts[i].committed = -1;

	if (SPI_execute_with_args("SELECT partition, next_offset FROM adstream.offsets "
							  "WHERE source = $1 AND topic = $2",
							  2, (Oid[]) {TEXTOID, TEXTOID},
							  (Datum[]) {CStringGetTextDatum(c->name), CStringGetTextDatum(c->topic)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not read offsets");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int32		partition = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		int64		next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));

		for (int i = 0; i < c->nparts; i++)
			if (c->parts[i].partition == partition)
				c->parts[i].committed = next;
	}

	if (strcmp(c->start_policy, "latest") == 0)
	{
		for (int i = 0; i < c->nparts; i++)
		{
			AdsPart    *p = &c->parts[i];
			int64		lo,
						hi;

			if (p->committed >= 0)
				continue;
			if (rd_kafka_query_watermark_offsets(c->kafka->rk, c->topic, p->partition,
												 &lo, &hi, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("adstream source \"%s\": could not read the end offset of partition %d",
								c->name, p->partition),
						 errhint("Check that the brokers are reachable; the worker retries.")));
			SPI_execute_with_args("INSERT INTO adstream.offsets (source, topic, partition, next_offset) "
								  "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
								  4, (Oid[]) {TEXTOID, TEXTOID, INT4OID, INT8OID},
								  (Datum[]) {CStringGetTextDatum(c->name), CStringGetTextDatum(c->topic),
							  Int32GetDatum(p->partition), Int64GetDatum(hi)},
								  NULL, false, 0);
			p->committed = hi;
		}
	}
	ads_end_tx();

	for (int i = 0; i < c->nparts; i++)
		c->parts[i].position = c->parts[i].committed;
}

/* ---------------------------------------------------------------------
 * Partitions
 * ---------------------------------------------------------------------
 */

static void
publish_partitions(AdsConsumer *c)
{
	AdsWorkerSlot *slot = c->slot;

	SpinLockAcquire(&slot->mutex);
	slot->nparts = c->nparts;
	for (int i = 0; i < c->nparts; i++)
	{
		int64		lo = -1,
					hi = -1;

		slot->parts[i].partition = c->parts[i].partition;
		slot->parts[i].position = c->parts[i].position;
		if (rd_kafka_get_watermark_offsets(c->kafka->rk, c->topic, c->parts[i].partition,
										   &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0)
			hi = -1;
		slot->parts[i].high_watermark = hi;
	}
	SpinLockRelease(&slot->mutex);
}

/* (Re)assign every owned partition at the position we expect next. */
static void
assign_all(AdsConsumer *c)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(c->nparts);
	int			maxp = -1;
	rd_kafka_resp_err_t err;

	for (int i = 0; i < c->nparts; i++)
	{
		rd_kafka_topic_partition_t *tp =
			rd_kafka_topic_partition_list_add(list, c->topic, c->parts[i].partition);

		tp->offset = c->parts[i].position >= 0 ? c->parts[i].position : RD_KAFKA_OFFSET_BEGINNING;
		maxp = Max(maxp, c->parts[i].partition);
	}
	err = rd_kafka_assign(c->kafka->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("adstream source \"%s\": could not assign partitions: %s",
						c->name, rd_kafka_err2str(err))));

	if (maxp + 1 > c->part_of_len)
	{
		if (c->part_of)
			pfree(c->part_of);
		c->part_of_len = maxp + 1;
		c->part_of = MemoryContextAlloc(TopMemoryContext, sizeof(int) * c->part_of_len);
	}
	for (int i = 0; i < c->part_of_len; i++)
		c->part_of[i] = -1;
	for (int i = 0; i < c->nparts; i++)
		c->part_of[c->parts[i].partition] = i;
	publish_partitions(c);
}

/*
 * Look for partitions of the topic that this worker owns and does not
 * consume yet.  Returns false if metadata was not available.
 */
static bool
discover_partitions(AdsConsumer *c)
{
	int			count = ads_kafka_partition_count(c->kafka, c->topic, METADATA_TIMEOUT_MS);
	int			added = 0;

	if (count < 0)
		return false;

	for (int p = 0; p < count; p++)
	{
		bool		have = false;

		if (p % c->args.nworkers != c->args.worker_index)
			continue;
		for (int i = 0; i < c->nparts; i++)
			if (c->parts[i].partition == p)
				have = true;
		if (have)
			continue;
		if (c->nparts >= ADS_MAX_PARTS_PER_WORKER)
		{
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("adstream source \"%s\": worker %d cannot take more than %d partitions",
							c->name, c->args.worker_index, ADS_MAX_PARTS_PER_WORKER),
					 errhint("Raise the source's \"workers\" option.")));
			break;
		}
		memset(&c->parts[c->nparts], 0, sizeof(AdsPart));
		c->parts[c->nparts].partition = p;
		c->parts[c->nparts].committed = -1;
		c->parts[c->nparts].position = -1;
		c->nparts++;
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
		int64	   *keep = palloc(sizeof(int64) * c->nparts);

		for (int i = 0; i < c->nparts - added; i++)
			keep[i] = c->parts[i].position;
		load_offsets(c);
		for (int i = 0; i < c->nparts - added; i++)
			c->parts[i].position = keep[i];
		pfree(keep);
	}
	ereport(LOG,
			(errmsg("adstream source \"%s\": worker %d consumes %d partition(s) of topic \"%s\"",
					c->name, c->args.worker_index, c->nparts, c->topic)));
	assign_all(c);
	return true;
}

/* ---------------------------------------------------------------------
 * Batches
 * ---------------------------------------------------------------------
 */

static void
release_batch(AdsConsumer *c)
{
	for (int i = 0; i < c->nmsgs; i++)
		rd_kafka_message_destroy(c->msgs[i].rkm);
	c->nmsgs = 0;
	MemoryContextReset(c->batch_ctx);
	c->msgs_cap = adstream_batch_max_messages;
	c->msgs = MemoryContextAlloc(c->batch_ctx, sizeof(AdsMsg) * c->msgs_cap);
}

/*
 * After a fence error: another process wrote our partitions' offsets.  Drop
 * what we hold and start over from what is stored.
 */
static void
reset_from_stored(AdsConsumer *c)
{
	release_batch(c);
	rd_kafka_assign(c->kafka->rk, NULL);
	load_offsets(c);
	assign_all(c);
}

static void
add_message(AdsConsumer *c, rd_kafka_message_t *rkm)
{
	int			idx;
	AdsPart    *p;
	AdsMsg	   *m;
	char		detail[ADS_DETAIL_LEN];

	if (rkm->err)
	{
		if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			char		buf[ADS_ERROR_LEN];

			snprintf(buf, sizeof(buf), "partition %d: %s", rkm->partition, rd_kafka_message_errstr(rkm));
			ads_slot_set_error(c->slot, buf);
			ereport(LOG, (errmsg("adstream source \"%s\": kafka: %s", c->name, buf)));
		}
		rd_kafka_message_destroy(rkm);
		return;
	}

	idx = (rkm->partition >= 0 && rkm->partition < c->part_of_len) ? c->part_of[rkm->partition] : -1;
	p = idx >= 0 ? &c->parts[idx] : NULL;
	/* Left over from before a reassignment: not ours, or already taken. */
	if (p == NULL || (p->position >= 0 && rkm->offset < p->position))
	{
		rd_kafka_message_destroy(rkm);
		return;
	}
	p->position = rkm->offset + 1;

	if (c->nmsgs == 0)
		c->batch_started = GetCurrentTimestamp();
	m = &c->msgs[c->nmsgs++];
	m->rkm = rkm;
	m->part = idx;
	m->detail = NULL;
	m->dedup_entry = NULL;
	if (c->is_orders)
		m->parse_reason = ads_parse_order(rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
										  &m->order, detail, sizeof(detail));
	else
		m->parse_reason = ads_parse_event(rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
										  &m->ev, detail, sizeof(detail));
	if (m->parse_reason != ADS_OK)
		m->detail = MemoryContextStrdup(c->batch_ctx, detail);
}

/* Tell Kafka's group offsets where we are, for lag monitors only. */
static void
commit_to_kafka(AdsConsumer *c)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(c->nparts);

	for (int i = 0; i < c->nparts; i++)
		if (c->parts[i].in_batch)
			rd_kafka_topic_partition_list_add(list, c->topic, c->parts[i].partition)->offset =
				c->parts[i].b_next;
	if (list->cnt > 0)
		(void) rd_kafka_commit(c->kafka->rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

static void
wait_ms(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Write the batch, retrying the same messages until it commits.  Only a
 * fence error gives them up, because then they belong to someone else.
 */
static void
flush_batch(AdsConsumer *c)
{
	for (int attempt = 0;; attempt++)
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		bool		ok = false;
		ErrorData  *edata = NULL;

		ads_slot_set_state(c->slot, attempt == 0 ? "committing" : "retrying");
		PG_TRY();
		{
			ads_batch_write(c);
			ok = true;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
		ads_batch_settle(c, ok);

		if (ok)
			break;

		ads_slot_set_error(c->slot, edata->message);
		ads_batch_forget_partitions(c);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream source \"%s\": batch of %d messages not written: %s",
						c->name, c->nmsgs, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("%s%sThe worker retries the same messages; nothing is skipped.",
						 edata->hint ? edata->hint : "", edata->hint ? " " : "")));
		FreeErrorData(edata);

		if (c->fenced)
		{
			c->fenced = false;
			reset_from_stored(c);
			return;
		}
		wait_ms(Min((long) RETRY_MAX_MS, 100L << Min(attempt, 7)));
	}

	for (int i = 0; i < c->nparts; i++)
		if (c->parts[i].in_batch)
			c->parts[i].committed = c->parts[i].b_next;
	commit_to_kafka(c);
	release_batch(c);

	SpinLockAcquire(&c->slot->mutex);
	c->slot->last_commit_at = GetCurrentTimestamp();
	SpinLockRelease(&c->slot->mutex);
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
		while (ads_attribute_orders() >= ATTRIBUTION_PASS)
			CHECK_FOR_INTERRUPTS();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		ads_slot_set_error(c->slot, edata->message);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("adstream source \"%s\": attribution pass failed: %s", c->name, edata->message),
				 errhint("Waiting orders stay in adstream.waiting_orders and are judged on the next pass.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
}

/* ---------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------
 */

static void
consumer_detach(int code, Datum arg)
{
	AdsWorkerSlot *slot = consumer.slot;

	SpinLockAcquire(&slot->mutex);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->nparts = 0;
		strlcpy(slot->state, "stopped", ADS_STATE_LEN);
	}
	SpinLockRelease(&slot->mutex);
}

void
adstream_consumer_main(Datum arg)
{
	AdsConsumer *c = &consumer;
	char		errbuf[512];
	char		client_id[NAMEDATALEN + 32];
	rd_kafka_message_t *chunk[CONSUME_CHUNK];
	TimestampTz next_discovery = 0;
	TimestampTz next_status = 0;
	TimestampTz next_attribution = 0;

	memcpy(&c->args, MyBgworkerEntry->bgw_extra, sizeof(AdsWorkerArgs));
	c->slot = &ads_shared->slots[c->args.slot];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(adstream_database, NULL, 0);

	SpinLockAcquire(&c->slot->mutex);
	c->slot->pid = MyProcPid;
	c->slot->started_at = GetCurrentTimestamp();
	c->slot->last_error[0] = '\0';
	c->slot->last_error_at = 0;
	strlcpy(c->slot->state, "starting", ADS_STATE_LEN);
	SpinLockRelease(&c->slot->mutex);
	before_shmem_exit(consumer_detach, (Datum) 0);

	if (!load_source(c))
		proc_exit(0);			/* paused or dropped meanwhile */

	snprintf(client_id, sizeof(client_id), "adstream-%s-%d", c->name, c->args.worker_index);
	c->kafka = ads_kafka_open(c->brokers, c->group_id, client_id, c->nprops,
							  c->prop_keys, c->prop_values, errbuf, sizeof(errbuf));
	if (c->kafka == NULL)
	{
		ads_slot_set_error(c->slot, errbuf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream source \"%s\": invalid Kafka configuration: %s", c->name, errbuf),
				 errhint("Drop and re-create the source with valid options.")));
	}

	c->batch_ctx = AllocSetContextCreate(TopMemoryContext, "adstream batch", ALLOCSET_DEFAULT_SIZES);
	c->ensured_ctx = AllocSetContextCreate(TopMemoryContext, "adstream partitions", ALLOCSET_SMALL_SIZES);
	release_batch(c);
	ads_slot_set_state(c->slot, "consuming");
	ereport(LOG, (errmsg("adstream consumer worker %d of source \"%s\" started",
						 c->args.worker_index, c->name)));

	for (;;)
	{
		TimestampTz now;
		int			n;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ads_kafka_report(c->slot, "source", c->name);

		now = GetCurrentTimestamp();
		if (now >= next_discovery && c->nmsgs == 0)
		{
			bool		found = discover_partitions(c);

			next_discovery = TimestampTzPlusMilliseconds(now, found ?
														 adstream_discovery_interval_s * 1000L : 1000);
		}
		if (now >= next_status)
		{
			publish_partitions(c);
			next_status = TimestampTzPlusMilliseconds(now, STATUS_INTERVAL_MS);
		}
		/* Orders wait for the ad events; look again every second. */
		if (c->is_orders && c->nmsgs == 0 && now >= next_attribution)
		{
			attribute_orders(c);
			next_attribution = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ATTRIBUTION_INTERVAL_MS);
		}

		/*
		 * Clear the wake-up pipe before reading, so that a message arriving
		 * after the read below writes to it again and the wait returns.
		 */
		ads_kafka_clear_wakeup(c->kafka);
		n = 0;
		if (c->nparts > 0 && c->nmsgs < c->msgs_cap)
		{
			n = (int) rd_kafka_consume_batch_queue(c->kafka->queue, 0, chunk,
												   Min(CONSUME_CHUNK, c->msgs_cap - c->nmsgs));
			for (int i = 0; i < n; i++)
				add_message(c, chunk[i]);
		}

		if (c->nmsgs > 0 &&
			(c->nmsgs >= c->msgs_cap ||
			 TimestampDifferenceExceeds(c->batch_started, GetCurrentTimestamp(), adstream_batch_max_ms)))
		{
			/* What is read but not yet committed shows while the batch is written. */
			publish_partitions(c);
			flush_batch(c);
			continue;
		}
		if (n > 0)
			continue;

		timeout = 1000;
		if (c->nmsgs > 0)
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
}
