/*
 * copy_consumer.c
 *	  The strong baseline of the benchmark: the best consumer a competent
 *	  engineer would write in a day with libpq and librdkafka, exactly once
 *	  and checked against the same truth as adstream.
 *
 *	  Per poll batch (up to 50,000 messages or 100 ms, adstream's defaults),
 *	  in one transaction:
 *	  - the valid events go by COPY into a temporary table (ON COMMIT DELETE
 *		ROWS), the rejected messages by COPY into alt.rejected_events;
 *	  - one statement deduplicates and aggregates, set-based: INSERT INTO
 *		alt.seen_events ... ON CONFLICT DO NOTHING RETURNING gives the new
 *		ids (within the batch, an id's first occurrence stands for it); only
 *		those feed one INSERT ... ON CONFLICT DO UPDATE of the batch's
 *		(ad, minute) rows, sorted, and the statement returns the accepted
 *		count per partition;
 *	  - one statement upserts the partitions' next offsets, event-time
 *		watermarks and counts in alt.offsets;
 *	  - COMMIT.  It starts from alt.offsets, and after a failed transaction
 *		(two processes can still deadlock on each other's new ids) it rolls
 *		back, reloads the offsets and seeks back, as bench/alt_consumer.c.
 *	  Parsing and the future_timestamp / too_late judgement are the same as
 *	  alt_consumer's (adstream's parser; too late only past retention).
 *
 *	  The tables are those of bench/alt_schema.sql.
 *
 *	  copy_consumer --brokers B --topic T --db CONNINFO
 *	                [--worker I --workers N] [--exit-at-eof]
 *
 *	  Consumer I of N owns the partitions p with p % N = I.  At exit it
 *	  prints one line:
 *	  msgs=N accepted=A duplicates=D rejected=R batches=B retries=X
 *	  cpu_s=C seconds=S
 */
#define _POSIX_C_SOURCE 200809L

#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "event_parse.h"

#include "bench_util.h"

const char *const bench_progname = "copy_consumer";

#define BATCH				50000	/* adstream.batch_max_messages */
#define BATCH_WAIT_MS		100		/* adstream.batch_max_wait */
#define MAX_MESSAGE_BYTES	(1024 * 1024)	/* adstream.max_message_bytes */
#define FUTURE_SKEW_US		(INT64_C(300) * 1000000)	/* adstream.max_future_skew */
#define RETENTION_US		(INT64_C(7) * 86400 * 1000000)	/* adstream.minute_retention */
#define PAYLOAD_KEEP		8192
#define NO_WATERMARK		INT64_MIN

typedef struct Part
{
	int			id;
	int64_t		next;			/* committed next offset (-1: none yet) */
	int64_t		wm_us;			/* committed event-time watermark */
	int			at_end;
	/* this batch */
	int			touched;
	int64_t		b_next;
	int64_t		b_wm_us;
	int64_t		b_valid,
				b_acc,
				b_rej;
} Part;

/* A growing text buffer for COPY data and statements. */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_reserve(Buf *b, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		b->cap = (b->len + n + 1) * 2;
		b->data = realloc(b->data, b->cap);
		if (b->data == NULL)
			die("out of memory");
	}
}

static void
buf_printf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, (size_t) n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
}

/* bytea in COPY text format: \\x and hex digits */
static void
buf_bytea(Buf *b, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	buf_reserve(b, 3 + 2 * n);
	b->data[b->len++] = '\\';
	b->data[b->len++] = '\\';
	b->data[b->len++] = 'x';
	for (size_t i = 0; i < n; i++)
	{
		b->data[b->len++] = hex[p[i] >> 4];
		b->data[b->len++] = hex[p[i] & 15];
	}
	b->data[b->len] = '\0';
}

static const char *topic;
static PGconn *conn;
static rd_kafka_t *rk;
static Part *parts;
static int nparts;
static int *owned;
static int nown;
static Buf events,
			rejects,
			sql;

static int
partition_count(void)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;
	int			n;

	if (rkt == NULL)
		die("rd_kafka_topic_new: %s", rd_kafka_err2str(rd_kafka_last_error()));
	err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("metadata of %s: %s", topic, rd_kafka_err2str(err));
	if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("topic %s not found", topic);
	n = md->topics[0].partition_cnt;
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

/* Runs a statement without results; returns 0 (error printed) on failure. */
static int
run(const char *stmt)
{
	PGresult   *res = PQexec(conn, stmt);
	int			ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, "copy_consumer: %.60s: %s", stmt, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

/* COPY ... FROM STDIN of the buffer; 0 on failure. */
static int
copy_in(const char *stmt, const Buf *data)
{
	PGresult   *res = PQexec(conn, stmt);
	int			ok = PQresultStatus(res) == PGRES_COPY_IN;

	PQclear(res);
	if (!ok)
	{
		fprintf(stderr, "copy_consumer: %s: %s", stmt, PQerrorMessage(conn));
		return 0;
	}
	if (data->len > 0 && PQputCopyData(conn, data->data, (int) data->len) != 1)
		ok = 0;
	if (PQputCopyEnd(conn, ok ? NULL : "client error") != 1)
		ok = 0;
	res = PQgetResult(conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "copy_consumer: %s: %s", stmt, PQerrorMessage(conn));
		ok = 0;
	}
	PQclear(res);
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	return ok;
}

static void
resume_from_database(void)
{
	const char *params[1] = {topic};
	PGresult   *res;
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	for (int i = 0; i < nown; i++)
	{
		parts[i].next = -1;
		parts[i].wm_us = NO_WATERMARK;
		parts[i].at_end = 0;
	}
	res = PQexecParams(conn, "SELECT partition, next_offset, watermark_us FROM alt.offsets WHERE topic = $1",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		die("loading offsets: %s", PQerrorMessage(conn));
	for (int r = 0; r < PQntuples(res); r++)
	{
		int			p = atoi(PQgetvalue(res, r, 0));

		if (p < 0 || p >= nparts || owned[p] < 0)
			continue;
		parts[owned[p]].next = strtoll(PQgetvalue(res, r, 1), NULL, 10);
		if (!PQgetisnull(res, r, 2))
			parts[owned[p]].wm_us = strtoll(PQgetvalue(res, r, 2), NULL, 10);
	}
	PQclear(res);

	list = rd_kafka_topic_partition_list_new(nown);
	for (int i = 0; i < nown; i++)
		rd_kafka_topic_partition_list_add(list, topic, parts[i].id)->offset =
			parts[i].next >= 0 ? parts[i].next : RD_KAFKA_OFFSET_BEGINNING;
	err = rd_kafka_assign(rk, list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("assign: %s", rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(list);
}

static int64_t n_msgs,
			n_acc,
			n_dup,
			n_rej,
			n_batches,
			n_retries;

/* Parses and judges one message into the COPY buffers. */
static void
add_message(Part *p, const rd_kafka_message_t *m, int64_t now_us)
{
	AdsEvent	ev;
	char		detail[ADS_DETAIL_LEN];
	AdsReason	reason;

	reason = ads_parse_event(m->payload, m->len, MAX_MESSAGE_BYTES, &ev, detail, sizeof(detail));
	if (reason == ADS_OK)
	{
		if (ev.ts_us > now_us + FUTURE_SKEW_US)
			reason = ADS_R_FUTURE_TIMESTAMP;
		/*
		 * Too late only past adstream.minute_retention: adstream judges an
		 * event too late only once its hour's dedup state has expired, and
		 * this consumer never forgets an id, so an old event is still
		 * deduplicated exactly and counts (as in adstream without expiry).
		 */
		else if (ev.ts_us < now_us - RETENTION_US)
			reason = ADS_R_TOO_LATE;
	}
	if (reason != ADS_OK)
	{
		size_t		keep = m->len < PAYLOAD_KEEP ? m->len : PAYLOAD_KEEP;

		buf_printf(&rejects, "%s\t%d\t%" PRId64 "\t%s\t", topic, p->id, (int64_t) m->offset,
				   ads_reason_name(reason));
		buf_bytea(&rejects, m->payload != NULL ? m->payload : (const void *) "", keep);
		buf_printf(&rejects, "\n");
		p->b_rej++;
		return;
	}
	{
		char		id[37];
		int64_t		minute_s = (ev.ts_us - ev.ts_us % (INT64_C(60) * 1000000)) / 1000000;

		if (ev.ts_us > p->b_wm_us)
			p->b_wm_us = ev.ts_us;
		ads_format_uuid(ev.event_id, id);
		/* event_id, partition, offset, ad_id, campaign_id, minute (epoch s), click */
		buf_printf(&events, "%s\t%d\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%c\n",
				   id, p->id, (int64_t) m->offset, ev.ad_id, ev.campaign_id, minute_s,
				   ev.type == ADS_EV_CLICK ? 't' : 'f');
		p->b_valid++;
	}
}

/*
 * New ids (seen_events), their minutes (ad_stats_minute) and the accepted
 * count per partition, in one statement.  Within the batch the first
 * occurrence of an id (by partition and offset) stands for it; the inserts
 * go in key order so that concurrent consumers take locks in one order.
 */
static const char *const apply_sql =
"WITH firsts AS ("
"  SELECT DISTINCT ON (event_id) * FROM batch ORDER BY event_id, partition, off), "
"new AS ("
"  INSERT INTO alt.seen_events (event_id) SELECT event_id FROM firsts ORDER BY event_id "
"  ON CONFLICT DO NOTHING RETURNING event_id), "
"acc AS (SELECT f.* FROM firsts f JOIN new USING (event_id)), "
"agg AS ("
"  INSERT INTO alt.ad_stats_minute AS s (ad_id, window_start, campaign_id, impressions, clicks) "
"  SELECT ad_id, to_timestamp(minute_s), min(campaign_id), count(*) FILTER (WHERE NOT click), "
"         count(*) FILTER (WHERE click) "
"  FROM acc GROUP BY ad_id, minute_s ORDER BY ad_id, minute_s "
"  ON CONFLICT (ad_id, window_start) DO UPDATE "
"  SET impressions = s.impressions + excluded.impressions, clicks = s.clicks + excluded.clicks "
"  RETURNING 1) "
"SELECT partition, count(*), (SELECT count(*) FROM agg) FROM acc GROUP BY partition";

static int
apply_batch(void)
{
	PGresult   *res;

	if (events.len > 0)
	{
		if (!copy_in("COPY batch FROM STDIN", &events))
			return 0;
		res = PQexec(conn, apply_sql);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "copy_consumer: applying the batch: %s", PQerrorMessage(conn));
			PQclear(res);
			return 0;
		}
		for (int r = 0; r < PQntuples(res); r++)
		{
			int			p = atoi(PQgetvalue(res, r, 0));

			if (p >= 0 && p < nparts && owned[p] >= 0)
				parts[owned[p]].b_acc = strtoll(PQgetvalue(res, r, 1), NULL, 10);
		}
		PQclear(res);
	}
	if (rejects.len > 0 &&
		!copy_in("COPY alt.rejected_events (topic, partition, \"offset\", reason, payload) FROM STDIN", &rejects))
		return 0;

	/* the offsets, watermarks and counts of the partitions in the batch */
	sql.len = 0;
	buf_printf(&sql, "INSERT INTO alt.offsets AS o (topic, partition, next_offset, watermark_us, accepted, duplicates, rejected) VALUES ");
	{
		int			first = 1;
		char	   *lit = PQescapeLiteral(conn, topic, strlen(topic));

		for (int i = 0; i < nown; i++)
		{
			Part	   *p = &parts[i];

			if (!p->touched)
				continue;
			buf_printf(&sql, "%s(%s, %d, %" PRId64 ", ", first ? "" : ", ", lit, p->id, p->b_next);
			if (p->b_wm_us == NO_WATERMARK)
				buf_printf(&sql, "NULL");
			else
				buf_printf(&sql, "%" PRId64, p->b_wm_us);
			buf_printf(&sql, ", %" PRId64 ", %" PRId64 ", %" PRId64 ")",
					   p->b_acc, p->b_valid - p->b_acc, p->b_rej);
			first = 0;
		}
		PQfreemem(lit);
	}
	buf_printf(&sql, " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset,"
			   " watermark_us = excluded.watermark_us, accepted = o.accepted + excluded.accepted,"
			   " duplicates = o.duplicates + excluded.duplicates, rejected = o.rejected + excluded.rejected");
	return run(sql.data);
}

/* One poll batch in one transaction: 1 if committed, 0 if rolled back. */
static int
process_batch(rd_kafka_message_t **msgs, ssize_t n)
{
	int64_t		now_us = wall_us();
	int64_t		batch_msgs = 0;
	int			ok;

	events.len = 0;
	rejects.len = 0;
	for (int i = 0; i < nown; i++)
	{
		Part	   *p = &parts[i];

		p->touched = 0;
		p->b_next = p->next;
		p->b_wm_us = p->wm_us;
		p->b_valid = p->b_acc = p->b_rej = 0;
	}
	for (ssize_t i = 0; i < n; i++)
	{
		rd_kafka_message_t *m = msgs[i];
		Part	   *p;

		if (m->partition < 0 || m->partition >= nparts || owned[m->partition] < 0)
			continue;
		p = &parts[owned[m->partition]];
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			p->at_end = 1;
			continue;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			fprintf(stderr, "copy_consumer: partition %d: %s\n", p->id, rd_kafka_message_errstr(m));
			continue;
		}
		/* left over from before a seek back: not ours to count */
		if (p->b_next >= 0 && m->offset < p->b_next)
			continue;
		p->at_end = 0;
		p->touched = 1;
		p->b_next = m->offset + 1;
		batch_msgs++;
		add_message(p, m, now_us);
	}
	if (batch_msgs == 0)
		return 1;

	ok = run("BEGIN") && apply_batch() && run("COMMIT");
	if (!ok)
	{
		run("ROLLBACK");
		return 0;
	}
	for (int i = 0; i < nown; i++)
	{
		Part	   *p = &parts[i];

		if (!p->touched)
			continue;
		p->next = p->b_next;
		p->wm_us = p->b_wm_us;
		n_acc += p->b_acc;
		n_dup += p->b_valid - p->b_acc;
		n_rej += p->b_rej;
	}
	n_msgs += batch_msgs;
	n_batches++;
	return 1;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"topic", required_argument, NULL, 't'},
		{"db", required_argument, NULL, 'd'},
		{"worker", required_argument, NULL, 'i'},
		{"workers", required_argument, NULL, 'n'},
		{"exit-at-eof", no_argument, NULL, 'e'},
		{NULL, 0, NULL, 0}
	};
	const char *brokers = NULL;
	const char *conninfo = NULL;
	int			worker = 0;
	int			workers = 1;
	int			exit_at_eof = 0;
	rd_kafka_queue_t *queue;
	rd_kafka_message_t **msgs;
	struct rusage ru;
	double		t0;
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'b':
				brokers = optarg;
				break;
			case 't':
				topic = optarg;
				break;
			case 'd':
				conninfo = optarg;
				break;
			case 'i':
				worker = atoi(optarg);
				break;
			case 'n':
				workers = atoi(optarg);
				break;
			case 'e':
				exit_at_eof = 1;
				break;
			default:
				die("bad arguments");
		}
	}
	if (brokers == NULL || topic == NULL || conninfo == NULL || workers < 1 ||
		worker < 0 || worker >= workers)
		die("usage: copy_consumer --brokers B --topic T --db CONNINFO [--worker I --workers N] [--exit-at-eof]");

	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		die("connect: %s", PQerrorMessage(conn));
	if (!run("CREATE TEMP TABLE batch (event_id uuid, partition int, off bigint, ad_id bigint,"
			 " campaign_id bigint, minute_s bigint, click bool) ON COMMIT DELETE ROWS"))
		die("cannot create the batch table");

	rk = bench_consumer(brokers, "adstream-bench-copy");
	queue = rd_kafka_queue_get_consumer(rk);

	nparts = partition_count();
	owned = malloc(sizeof(int) * (size_t) nparts);
	parts = calloc((size_t) nparts, sizeof(Part));
	msgs = malloc(sizeof(*msgs) * BATCH);
	if (owned == NULL || parts == NULL || msgs == NULL)
		die("out of memory");
	for (int p = 0; p < nparts; p++)
	{
		owned[p] = -1;
		if (p % workers == worker)
		{
			parts[nown].id = p;
			owned[p] = nown++;
		}
	}
	if (nown == 0)
		die("worker %d of %d owns no partition of %s", worker, workers, topic);

	t0 = mono_s();
	resume_from_database();
	for (;;)
	{
		ssize_t		n = rd_kafka_consume_batch_queue(queue, BATCH_WAIT_MS, msgs, BATCH);
		int			committed;

		if (n < 0)
			die("consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
		committed = process_batch(msgs, n);
		for (ssize_t i = 0; i < n; i++)
			rd_kafka_message_destroy(msgs[i]);
		if (!committed)
		{
			n_retries++;
			resume_from_database();
			continue;
		}
		if (exit_at_eof)
		{
			int			all = 1;

			for (int i = 0; i < nown && all; i++)
				all = parts[i].at_end;
			if (all)
				break;
		}
	}

	getrusage(RUSAGE_SELF, &ru);
	printf("msgs=%" PRId64 " accepted=%" PRId64 " duplicates=%" PRId64 " rejected=%" PRId64
		   " batches=%" PRId64 " retries=%" PRId64 " cpu_s=%.3f seconds=%.3f\n",
		   n_msgs, n_acc, n_dup, n_rej, n_batches, n_retries,
		   (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
		   (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6,
		   mono_s() - t0);
	rd_kafka_queue_destroy(queue);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	PQfinish(conn);
	return 0;
}
