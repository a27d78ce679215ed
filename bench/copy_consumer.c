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
 *	  Options, partitions, the batch loop and the exit line are those of
 *	  bench/pg_baseline.h.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "event_parse.h"

#include "bench_util.h"

const char *const bench_progname = "copy_consumer";

#include "pg_baseline.h"

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

static Buf events,
			rejects,
			sql;

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
setup(void)
{
	if (!run("CREATE TEMP TABLE batch (event_id uuid, partition int, off bigint, ad_id bigint,"
			 " campaign_id bigint, minute_s bigint, click bool) ON COMMIT DELETE ROWS"))
		die("cannot create the batch table");
}

static void
start_batch(void)
{
	events.len = 0;
	rejects.len = 0;
}

/* The message into the COPY buffers. */
static int
add(Part *p, const rd_kafka_message_t *m, AdsReason reason, const AdsEvent *ev)
{
	if (reason != ADS_OK)
	{
		size_t		keep = m->len < PAYLOAD_KEEP ? m->len : PAYLOAD_KEEP;

		buf_printf(&rejects, "%s\t%d\t%" PRId64 "\t%s\t", topic, p->id, (int64_t) m->offset,
				   ads_reason_name(reason));
		buf_bytea(&rejects, m->payload != NULL ? m->payload : (const void *) "", keep);
		buf_printf(&rejects, "\n");
	}
	else
	{
		char		id[37];
		int64_t		minute_s = (ev->ts_us - ev->ts_us % (INT64_C(60) * 1000000)) / 1000000;

		ads_format_uuid(ev->event_id, id);
		/* event_id, partition, offset, ad_id, campaign_id, minute (epoch s), click */
		buf_printf(&events, "%s\t%d\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%c\n",
				   id, p->id, (int64_t) m->offset, ev->ad_id, ev->campaign_id, minute_s,
				   ev->type == ADS_EV_CLICK ? 't' : 'f');
	}
	return 1;
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

/* The batch's events and dead letters, and the offsets; 0 on failure. */
static int
finish(void)
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
	for (int i = 0; i < nown; i++)
		parts[i].b_dup = parts[i].b_valid - parts[i].b_acc;
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
					   p->b_acc, p->b_dup, p->b_rej);
			first = 0;
		}
		PQfreemem(lit);
	}
	buf_printf(&sql, " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset,"
			   " watermark_us = excluded.watermark_us, accepted = o.accepted + excluded.accepted,"
			   " duplicates = o.duplicates + excluded.duplicates, rejected = o.rejected + excluded.rejected");
	return run(sql.data);
}

int
main(int argc, char **argv)
{
	static const PgBaseline copy = {
		.group_id = "adstream-bench-copy",
		.batch = 50000,			/* adstream.batch_max_messages */
		.wait_ms = 100,			/* adstream.batch_max_wait */
		.setup = setup,
		.start_batch = start_batch,
		.add = add,
		.finish = finish,
	};

	return baseline_main(&copy, argc, argv);
}
