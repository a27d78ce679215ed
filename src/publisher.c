/*
 * publisher.c
 *     A publisher worker: sends one sink everything in the outbox, as upsert
 *     records for Pinot, with a Kafka transactional producer.
 *
 * One round:
 *   1. read a page of the sink's current window (adstream._outbox_page),
 *      in a short transaction;
 *   2. begin a Kafka transaction, produce the page, commit it;
 *   3. advance the sink's cursor (adstream._sink_advance).
 * A crash between 2 and 3 sends the page again: same keys, same versions, so
 * Pinot's upsert keeps one of each.  A failed Kafka transaction is aborted
 * and the same page retried.  The stable transactional.id fences a previous
 * incarnation of this publisher that might still be sending.
 */
#include "publisher.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "guc.h"
#include "kafka_log.h"
#include "kafka_producer.h"
#include "registry.h"
#include "txn.h"
#include "worker.h"

/*
 * A page is at most PAGE_ROWS outbox rows, and so at most as many records in
 * one Kafka transaction; a key named by several rows of a page is sent once
 * (adstream._outbox_page).  A window opens at most every WINDOW_MS, so that
 * consecutive batches' changes to a key meet in one window and are sent
 * once: the publisher's CPU grows with the records it sends, and it shares
 * the cores with ingestion (issue #12, item 4).  docs/pinot.md promises
 * Pinot this cadence.
 */
#define PAGE_ROWS 20000
#define WINDOW_MS 100
#define KAFKA_CALL_MS 500		/* longest a librdkafka call blocks the loop */
#define TXN_TIMEOUT "10000"		/* transaction.timeout.ms: a dead publisher blocks readers this long */
#define COMMIT_TIMEOUT_MS 9000
#define PRUNE_INTERVAL_MS 10000
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 10000

typedef struct PubRow
{
	int64		id;
	char	   *topic;
	char	   *key;
	char	   *value;			/* NULL when the result row is gone */
} PubRow;

typedef struct Publisher
{
	AdsWorkerArgs args;
	AdsWorkerSlot *slot;
	AdsSinkDef	sink;			/* as read at start */
	rd_kafka_t *rk;
	MemoryContext page_ctx;
	PubRow	   *rows;
	int			nrows;
	int64		from;			/* the cursor's last_id when the page was read */
} Publisher;

static Publisher pub;

static bool
load_sink(Publisher *p)
{
	bool		ok;

	ads_begin_tx("adstream publisher: reading sink");
	ok = ads_catalog_read_sink(p->args.owner_id, p->args.generation, &p->sink);
	ads_end_tx();
	return ok;
}

/* Read the next page of the window into p->rows, noting where it started. */
static void
read_page(Publisher *p)
{
	MemoryContextReset(p->page_ctx);
	p->nrows = 0;
	ads_begin_tx("adstream publisher: reading outbox");
	if (SPI_execute_with_args("SELECT last_id FROM adstream.sinks WHERE name = $1",
							  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(p->sink.name)},
							  NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;

		p->from = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (SPI_execute_with_args("SELECT id, topic, record_key, value FROM adstream._outbox_page($1, $2)",
							  2, (Oid[]) {TEXTOID, INT4OID},
							  (Datum[]) {CStringGetTextDatum(p->sink.name), Int32GetDatum(PAGE_ROWS)},
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not read the outbox");
	p->rows = MemoryContextAlloc(p->page_ctx, sizeof(PubRow) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		PubRow	   *row = &p->rows[p->nrows++];

		row->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		row->topic = MemoryContextStrdup(p->page_ctx, SPI_getvalue(tup, td, 2));
		row->key = MemoryContextStrdup(p->page_ctx, SPI_getvalue(tup, td, 3));
		SPI_getbinval(tup, td, 4, &isnull);
		row->value = isnull ? NULL : MemoryContextStrdup(p->page_ctx, SPI_getvalue(tup, td, 4));
	}
	ads_end_tx();
}

/* read_page(), stopping cleanly if the sink went away under it. */
static void
read_page_or_stop(Publisher *p)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorData  *edata = NULL;

	PG_TRY();
	{
		read_page(p);
	}
	PG_CATCH();
	{
		edata = ads_abort_tx(oldcxt);
	}
	PG_END_TRY();
	if (edata == NULL)
		return;
	ads_worker_exit_if_changed(ads_catalog_sink_current, &p->args, "sink");
	ReThrowError(edata);
}

static void
run_sql(const char *activity, const char *sql, int nargs, Oid *types, Datum *args)
{
	ads_begin_tx(activity);
	if (SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0) < 0)
		elog(ERROR, "adstream: \"%s\" failed", sql);
	ads_end_tx();
}

/* Keep a librdkafka error for the slot and the log. */
static void
note_error(Publisher *p, const char *what, rd_kafka_error_t *error)
{
	char		buf[ADS_ERROR_LEN];

	snprintf(buf, sizeof(buf), "%s: %s", what, rd_kafka_error_string(error));
	ads_slot_set_error(p->slot, buf);
	ereport(WARNING,
			(errmsg("adstream sink \"%s\": %s", p->sink.name, buf),
			 errhint("The page is published again; nothing is skipped.")));
}

/*
 * Between the slices of a librdkafka call that may take long: answer
 * signals, and exit if the postmaster died (a publisher must not outlive
 * it attached to shared memory while its sink is unreachable).
 */
static void
between_kafka_calls(void)
{
	Publisher  *p = &pub;

	CHECK_FOR_INTERRUPTS();
	/*
	 * Keep sink_status true while a call waits on brokers that are down
	 * (issue #13): serve librdkafka's error callback and report it, so that
	 * "all brokers down" shows as disconnected now, not once the commit
	 * has timed out.
	 */
	if (p->rk != NULL && p->slot != NULL)
	{
		rd_kafka_poll(p->rk, 0);
		ads_kafka_report(p->slot, "sink", p->sink.name);
		if (ads_slot_connected(p->slot) == ADS_CONN_DOWN)
			ads_slot_set_state(p->slot, "disconnected");
	}
	if (!PostmasterIsAlive())
		proc_exit(1);
	/*
	 * Asked to stop while a Kafka call takes long (its broker is slow or
	 * down): stop now rather than hold up a pause or a shutdown for the
	 * commit timeout.  A Kafka transaction left open is aborted by the
	 * broker after transaction.timeout.ms; the page is sent again later.
	 */
	ads_worker_exit_if_stopped();
}

/*
 * Call a librdkafka transaction step that may take long in short slices,
 * answering signals in between.  Returns NULL on success.
 */
static rd_kafka_error_t *
txn_step(rd_kafka_t *rk, rd_kafka_error_t *(*step) (rd_kafka_t *, int), int total_ms)
{
	for (int waited = 0;; waited += KAFKA_CALL_MS)
	{
		rd_kafka_error_t *error = step(rk, KAFKA_CALL_MS);

		if (error == NULL)
			return NULL;
		if (rd_kafka_error_code(error) != RD_KAFKA_RESP_ERR__TIMED_OUT || waited >= total_ms)
			return error;
		rd_kafka_error_destroy(error);
		between_kafka_calls();
	}
}

/* Send the page in one Kafka transaction.  Returns false if it was aborted. */
static bool
send_page(Publisher *p)
{
	rd_kafka_error_t *error;

	if ((error = rd_kafka_begin_transaction(p->rk)) != NULL)
	{
		note_error(p, "begin transaction", error);
		if (rd_kafka_error_is_fatal(error))
			ereport(ERROR, (errmsg("adstream sink \"%s\": producer failed fatally: %s", p->sink.name,
								   rd_kafka_error_string(error))));
		rd_kafka_error_destroy(error);
		return false;
	}
	for (int i = 0; i < p->nrows; i++)
	{
		PubRow	   *row = &p->rows[i];
		rd_kafka_resp_err_t err;

		if (row->value == NULL)
			continue;
		for (;;)
		{
			err = rd_kafka_producev(p->rk,
									RD_KAFKA_V_TOPIC(row->topic),
									RD_KAFKA_V_KEY(row->key, strlen(row->key)),
									RD_KAFKA_V_VALUE(row->value, strlen(row->value)),
									RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
									RD_KAFKA_V_END);
			if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(p->rk, 50);
			between_kafka_calls();
		}
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			error = rd_kafka_error_new(err, "%s", rd_kafka_err2str(err));
			note_error(p, "produce", error);
			rd_kafka_error_destroy(error);
			goto abort;
		}
	}
	if ((error = txn_step(p->rk, rd_kafka_commit_transaction, COMMIT_TIMEOUT_MS)) == NULL)
		return true;
	note_error(p, "commit transaction", error);
	if (rd_kafka_error_is_fatal(error))
		ereport(ERROR, (errmsg("adstream sink \"%s\": producer failed fatally: %s", p->sink.name,
							   rd_kafka_error_string(error))));
	/*
	 * The commit timed out and goes on in the background (its cluster is
	 * unreachable, issue #13): librdkafka refuses an abort while it does
	 * ("Conflicting commit_transaction API call"), which used to be the
	 * error shown.  Start over with a new producer instead, which fences
	 * this one; the broker aborts the transaction after
	 * transaction.timeout.ms, and the page is sent again with the same
	 * versions.
	 */
	if (rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__TIMED_OUT && !rd_kafka_error_txn_requires_abort(error))
	{
		char		reason[ADS_ERROR_LEN];

		strlcpy(reason, rd_kafka_error_string(error), sizeof(reason));
		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("adstream sink \"%s\": Kafka did not commit a transaction within %d ms: %s",
						p->sink.name, COMMIT_TIMEOUT_MS, reason),
				 errhint("Its brokers may be unreachable; the publisher restarts with a new producer and sends the page again.")));
	}
	rd_kafka_error_destroy(error);

abort:
	if ((error = txn_step(p->rk, rd_kafka_abort_transaction, COMMIT_TIMEOUT_MS)) != NULL)
	{
		char		reason[ADS_ERROR_LEN];

		note_error(p, "abort transaction", error);
		strlcpy(reason, rd_kafka_error_string(error), sizeof(reason));
		rd_kafka_error_destroy(error);
		/* The producer is in an unknown state: start over with a new one. */
		ereport(ERROR, (errmsg("adstream sink \"%s\": could not abort a Kafka transaction: %s",
							   p->sink.name, reason)));
	}
	run_sql("adstream publisher: counting an abort", "SELECT adstream._sink_aborted($1)",
			1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(p->sink.name)});
	return false;
}

/* Move the cursor past the page just committed to Kafka. */
static void
advance(Publisher *p, int produced, bool window_done)
{
	bool		moved;
	bool		isnull;

	ads_begin_tx("adstream publisher: advancing the cursor");
	if (SPI_execute_with_args("SELECT adstream._sink_advance($1, $2, $3, $4, $5)",
							  5, (Oid[]) {TEXTOID, INT8OID, INT8OID, INT4OID, BOOLOID},
							  (Datum[]) {CStringGetTextDatum(p->sink.name), Int64GetDatum(p->from),
								  Int64GetDatum(p->rows[p->nrows - 1].id), Int32GetDatum(produced),
							  BoolGetDatum(window_done)},
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not advance the cursor");
	moved = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ads_end_tx();
	if (!moved)
		ads_worker_exit_if_changed(ads_catalog_sink_current, &p->args, "sink");
	if (!moved)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("adstream sink \"%s\": the cursor moved under this worker", p->sink.name),
				 errhint("Another worker of the same sink ran (or the sink was renamed or dropped); this one restarts from the stored cursor.")));
}

/*
 * The sink's transactional.id, from the node's name in the database
 * (adstream._publisher_identity), so that a standby promoted on another host
 * uses the same one and its init_transactions fences the old primary's
 * publisher.  While adstream.node_name is set to another name than the
 * database's, the publisher waits, with the conflict as its error.
 */
static void
read_identity(Publisher *p, char *txn_id, size_t len)
{
	for (bool warned = false;; warned = true)
	{
		char	   *conflict = NULL;

		ads_begin_tx("adstream publisher: reading the node's identity");
		if (SPI_execute_with_args("SELECT transactional_id, conflict FROM adstream._publisher_identity($1)",
								  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(p->sink.name)},
								  NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "adstream: could not read the node's identity");
		strlcpy(txn_id, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), len);
		conflict = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		if (conflict != NULL)
			conflict = MemoryContextStrdup(TopMemoryContext, conflict);
		ads_end_tx();
		if (conflict == NULL)
			return;
		ads_slot_set_error(p->slot, conflict);
		ads_slot_set_state(p->slot, "waiting");
		if (!warned)
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("adstream sink \"%s\" does not publish: %s", p->sink.name, conflict),
					 errhint("The node's name is kept in the database so that a promoted standby keeps it; see docs/deployment.md.")));
		pfree(conflict);
		ads_worker_wait(5000);
		ads_worker_reload_config();
	}
}

/*
 * One publisher per sink: a session-level lock (ads_lock), held until this
 * process exits.  A predecessor that has not exited yet is waited for.
 */
static void
lock_sink(Publisher *p)
{
	for (;;)
	{
		bool		got;

		ads_begin_tx("adstream publisher: locking the sink");
		got = ads_lock("adstream.sink", p->args.owner_id, true, true, false);
		ads_end_tx();
		if (got)
			return;
		ads_slot_set_state(p->slot, "waiting");
		ads_worker_wait(200);
	}
}

void
adstream_publisher_main(Datum arg)
{
	Publisher  *p = &pub;
	char		errbuf[512];
	char		txn_id[NAMEDATALEN * 2 + 272];	/* node names have up to 255 bytes */
	char		client_id[NAMEDATALEN + 32];
	rd_kafka_error_t *error;
	TimestampTz next_prune = 0;
	TimestampTz next_ping = 0;
	TimestampTz window_opened = 0;	/* when the current window's first page was read */
	bool		in_window = false;
	int			failures = 0;

	p->slot = ads_worker_start(&p->args);
	ads_worker_wait_for_schema(p->slot, "sink", p->slot->owner_name);
	if (!load_sink(p))
	{
		/* Changed before it started: the launcher says why in a moment. */
		ads_worker_wait(1000);
		ads_worker_exit("its sink was paused, changed, renamed or dropped as it started");
	}
	lock_sink(p);

	/* Unique per node, database and sink: nodes must not fence each other. */
	read_identity(p, txn_id, sizeof(txn_id));
	snprintf(client_id, sizeof(client_id), "adstream-publisher-%s", p->sink.name);
	p->rk = ads_kafka_producer_open(p->sink.brokers, txn_id, TXN_TIMEOUT, client_id, &p->sink.props,
									errbuf, sizeof(errbuf));
	if (p->rk == NULL)
	{
		ads_slot_set_error(p->slot, errbuf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream sink \"%s\": invalid Kafka configuration: %s", p->sink.name, errbuf),
				 errhint("Correct the options with adstream.alter_sink(); the worker retries.")));
	}

	/* Also fences an earlier publisher with our transactional.id. */
	ads_slot_set_state(p->slot, "connecting");
	while ((error = rd_kafka_init_transactions(p->rk, KAFKA_CALL_MS)) != NULL)
	{
		if (!rd_kafka_error_is_retriable(error))
		{
			note_error(p, "init transactions", error);
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("adstream sink \"%s\": could not initialise transactions: %s",
							p->sink.name, rd_kafka_error_string(error)),
					 errhint("Check the sink's brokers and librdkafka options (security.protocol, sasl.*); the publisher is restarted with a backoff.")));
		}
		rd_kafka_error_destroy(error);
		/* Status (issue #14): "disconnected" once librdkafka says every broker is down. */
		ads_slot_set_state(p->slot, ads_slot_connected(p->slot) == ADS_CONN_DOWN ? "disconnected" : "connecting");
		/*
		 * This polls: librdkafka's error callback runs only from a poll, and
		 * without one a publisher that starts while its cluster is down
		 * (issue #13: a region's Kafka down across a restart) never learns
		 * "all brokers down" and shows "connecting" for ever.
		 */
		between_kafka_calls();
	}
	/* The broker answered: an error that ended a predecessor is over. */
	ads_slot_set_connected(p->slot, true);
	ads_slot_clear_error(p->slot, ADS_ERRCLASS_EXIT);

	p->page_ctx = AllocSetContextCreate(TopMemoryContext, "adstream page", ALLOCSET_DEFAULT_SIZES);
	ads_slot_set_state(p->slot, "publishing");
	ereport(LOG, (errmsg("%s started", ads_worker_name()),
				  errdetail("Kafka transactional.id \"%s\".", txn_id)));

	for (;;)
	{
		int			produced = 0;
		bool		window_done;
		bool		first_page = !in_window;

		CHECK_FOR_INTERRUPTS();
		/* Between Kafka transactions: nothing is half sent. */
		ads_worker_exit_if_stopped();
		ads_worker_reload_config();
		ads_kafka_report(p->slot, "sink", p->sink.name);
		rd_kafka_poll(p->rk, 0);
		ads_kafka_report(p->slot, "sink", p->sink.name);

		/*
		 * Status (issue #14): while librdkafka says every broker is down,
		 * or a Kafka error waits to be proven over, ask a broker every
		 * second; an answer, like a committed transaction, proves the
		 * connection up.
		 */
		if (!ads_slot_healthy(p->slot) && GetCurrentTimestamp() >= next_ping)
		{
			if (ads_kafka_ping(p->rk, 250))
				ads_slot_set_connected(p->slot, true);
			next_ping = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		}
		ads_slot_set_state(p->slot, ads_slot_connected(p->slot) == ADS_CONN_DOWN ? "disconnected" : "publishing");

		read_page_or_stop(p);
		window_done = p->nrows < PAGE_ROWS;
		if (first_page && p->nrows > 0)
		{
			window_opened = GetCurrentTimestamp();
			in_window = true;
		}
		if (p->nrows > 0)
		{
			if (!send_page(p))
			{
				ads_slot_set_state(p->slot, "retrying");
				failures++;
				ads_worker_wait(ads_backoff_ms(failures, RETRY_MIN_MS, RETRY_MAX_MS));
				continue;
			}
			failures = 0;
			for (int i = 0; i < p->nrows; i++)
				produced += (p->rows[i].value != NULL);
		}
		if (p->nrows > 0)
		{
			advance(p, produced, window_done);
			ads_slot_set_connected(p->slot, true);	/* a committed Kafka transaction */
			ads_slot_note_commit(p->slot);
		}

		if (GetCurrentTimestamp() >= next_prune)
		{
			run_sql("adstream publisher: pruning the outbox", "SELECT adstream.prune_outbox()", 0, NULL, NULL);
			next_prune = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PRUNE_INTERVAL_MS);
		}
		/*
		 * A window done: the next opens WINDOW_MS after this one did (a read
		 * that found nothing opened none: wait WINDOW_MS).  A page that
		 * failed (above) keeps its window open and is retried after its
		 * backoff.
		 */
		if (window_done)
		{
			long		wait_ms = WINDOW_MS;

			if (in_window)
			{
				wait_ms = WINDOW_MS - TimestampDifferenceMilliseconds(window_opened, GetCurrentTimestamp());
				in_window = false;
			}
			if (wait_ms > 0)
				ads_worker_wait(wait_ms);
		}
	}
}
