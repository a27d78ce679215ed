/*
 * alt_consumer.c
 *	  "The usual alternative" for the benchmark: the consumer a user would
 *	  write without adstream, made exactly as correct so that the comparison
 *	  is fair.
 *
 *	  - It parses with adstream's own parser (src/event_parse.c), so parsing
 *		costs the same, and judges future_timestamp and too_late as adstream
 *		does when no dedup state has expired (it never forgets an id): too
 *		late only past adstream.minute_retention.  It keeps each partition's
 *		event-time watermark in its offsets table, for the record.
 *	  - Each valid event is one statement: a CTE inserts the event id into
 *		alt.seen_events ON CONFLICT DO NOTHING RETURNING, and only a returned
 *		id feeds the INSERT ... ON CONFLICT DO UPDATE of its (ad, minute)
 *		row.  Each rejected message is one INSERT into alt.rejected_events.
 *	  - One transaction per poll batch, which also stores the partitions'
 *		next offsets in alt.offsets.  It starts from those offsets, and after
 *		any failed transaction (a deadlock between two consumers on the same
 *		duplicate ids, for instance) it rolls back, reloads them and seeks
 *		back, so every message is counted exactly once.
 *
 *	  The tables are created by bench/alt_schema.sql.
 *
 *	  Options, partitions, the batch loop and the exit line are those of
 *	  bench/pg_baseline.h.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "event_parse.h"

#include "bench_util.h"

const char *const bench_progname = "alt_consumer";

#include "pg_baseline.h"

static void
prepare(const char *name, const char *sql)
{
	PGresult   *res = PQprepare(conn, name, sql, 0, NULL);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die("prepare %s: %s", name, PQerrorMessage(conn));
	PQclear(res);
}

static void
setup(void)
{
	prepare("event",
			"WITH new AS (INSERT INTO alt.seen_events (event_id) VALUES ($1::uuid)"
			"             ON CONFLICT DO NOTHING RETURNING event_id)"
			" INSERT INTO alt.ad_stats_minute AS s (ad_id, window_start, campaign_id, impressions, clicks)"
			" SELECT $2::bigint, to_timestamp($4::bigint), $3::bigint, $5::bigint, $6::bigint FROM new"
			" ON CONFLICT (ad_id, window_start) DO UPDATE"
			" SET impressions = s.impressions + excluded.impressions, clicks = s.clicks + excluded.clicks");
	prepare("reject",
			"INSERT INTO alt.rejected_events (topic, partition, \"offset\", reason, payload)"
			" VALUES ($1, $2::int, $3::bigint, $4, $5::bytea)");
	prepare("offsets",
			"INSERT INTO alt.offsets AS o (topic, partition, next_offset, watermark_us, accepted, duplicates, rejected)"
			" VALUES ($1, $2::int, $3::bigint, $4::bigint, $5::bigint, $6::bigint, $7::bigint)"
			" ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset,"
			" watermark_us = excluded.watermark_us, accepted = o.accepted + excluded.accepted,"
			" duplicates = o.duplicates + excluded.duplicates, rejected = o.rejected + excluded.rejected");
}

static void
start_batch(void)
{
}

/* One statement for the message. */
static int
add(Part *p, const rd_kafka_message_t *m, AdsReason reason, const AdsEvent *ev)
{
	PGresult   *res;
	int			ok;

	if (reason != ADS_OK)
	{
		char		part[16],
					off[24];
		const char *values[5];
		int			lengths[5] = {0, 0, 0, 0, 0};
		int			formats[5] = {0, 0, 0, 0, 1};

		snprintf(part, sizeof(part), "%d", p->id);
		snprintf(off, sizeof(off), "%" PRId64, (int64_t) m->offset);
		values[0] = topic;
		values[1] = part;
		values[2] = off;
		values[3] = ads_reason_name(reason);
		values[4] = m->payload != NULL ? (const char *) m->payload : "";
		lengths[4] = (int) (m->len < PAYLOAD_KEEP ? m->len : PAYLOAD_KEEP);
		res = PQexecPrepared(conn, "reject", 5, values, lengths, formats, 0);
	}
	else
	{
		char		id[37],
					ad[24],
					campaign[24],
					window[24];
		const char *values[6];
		int64_t		minute_us = ev->ts_us - ev->ts_us % (INT64_C(60) * 1000000);
		int			is_click = ev->type == ADS_EV_CLICK;

		ads_format_uuid(ev->event_id, id);
		snprintf(ad, sizeof(ad), "%" PRId64, ev->ad_id);
		snprintf(campaign, sizeof(campaign), "%" PRId64, ev->campaign_id);
		snprintf(window, sizeof(window), "%" PRId64, minute_us / 1000000);
		values[0] = id;
		values[1] = ad;
		values[2] = campaign;
		values[3] = window;
		values[4] = is_click ? "0" : "1";
		values[5] = is_click ? "1" : "0";
		res = PQexecPrepared(conn, "event", 6, values, NULL, NULL, 0);
		/* one row upserted: a new event; none: its id was seen before */
		if (PQresultStatus(res) == PGRES_COMMAND_OK)
		{
			if (strcmp(PQcmdTuples(res), "1") == 0)
				p->b_acc++;
			else
				p->b_dup++;
		}
	}
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	return ok;
}

/* Stores the batch's offsets, watermarks and counts; 0 on failure. */
static int
finish(void)
{
	for (int i = 0; i < nown; i++)
	{
		Part	   *p = &parts[i];
		char		part[16],
					next[24],
					wm[24],
					acc[24],
					dup[24],
					rej[24];
		const char *values[7];
		PGresult   *res;
		int			ok;

		if (!p->touched)
			continue;
		snprintf(part, sizeof(part), "%d", p->id);
		snprintf(next, sizeof(next), "%" PRId64, p->b_next);
		snprintf(wm, sizeof(wm), "%" PRId64, p->b_wm_us);
		snprintf(acc, sizeof(acc), "%" PRId64, p->b_acc);
		snprintf(dup, sizeof(dup), "%" PRId64, p->b_dup);
		snprintf(rej, sizeof(rej), "%" PRId64, p->b_rej);
		values[0] = topic;
		values[1] = part;
		values[2] = next;
		values[3] = p->b_wm_us == NO_WATERMARK ? NULL : wm;
		values[4] = acc;
		values[5] = dup;
		values[6] = rej;
		res = PQexecPrepared(conn, "offsets", 7, values, NULL, NULL, 0);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			fprintf(stderr, "alt_consumer: storing offsets: %s", PQerrorMessage(conn));
		PQclear(res);
		if (!ok)
			return 0;
	}
	return 1;
}

int
main(int argc, char **argv)
{
	static const PgBaseline alt = {
		.group_id = "adstream-bench-alt",
		.batch = 10000,			/* as adstream.batch_max_messages was */
		.wait_ms = 500,
		.setup = setup,
		.start_batch = start_batch,
		.add = add,
		.finish = finish,
	};

	return baseline_main(&alt, argc, argv);
}
