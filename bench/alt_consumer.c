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
 *	  alt_consumer --brokers B --topic T --db CONNINFO
 *	               [--worker I --workers N] [--exit-at-eof]
 *
 *	  Consumer I of N owns the partitions p with p % N = I, as adstream's
 *	  workers do.  --exit-at-eof stops once every owned partition has been
 *	  read to its end and committed.  At exit it prints one line:
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

const char *const bench_progname = "alt_consumer";

#define BATCH				10000	/* messages per poll, as adstream.batch_max_messages */
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
	int64_t		b_acc,
				b_dup,
				b_rej;
} Part;

static const char *topic;
static PGconn *conn;
static rd_kafka_t *rk;
static Part *parts;
static int nparts;				/* partitions of the topic */
static int *owned;				/* index into parts by partition number, or -1 */
static int nown;

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

/* Runs a statement without results; returns 0 and leaves the error in conn on failure. */
static int
run(const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	int			ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, "alt_consumer: %s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

static void
prepare(const char *name, const char *sql)
{
	PGresult   *res = PQprepare(conn, name, sql, 0, NULL);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die("prepare %s: %s", name, PQerrorMessage(conn));
	PQclear(res);
}

/*
 * Reads the committed offsets and watermarks of our partitions and (re)assigns
 * them there: at start, and after a transaction failed.
 */
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
	res = PQexecPrepared(conn, "load", 1, params, NULL, NULL, 0);
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

/* Counters for the exit line. */
static int64_t n_msgs,
			n_acc,
			n_dup,
			n_rej,
			n_batches,
			n_retries;

/*
 * One message inside the batch transaction.  Returns 0 if a statement
 * failed (the transaction is then aborted).
 */
static int
handle_message(Part *p, const rd_kafka_message_t *m, int64_t now_us)
{
	AdsEvent	ev;
	char		detail[ADS_DETAIL_LEN];
	AdsReason	reason;
	PGresult   *res;
	int			ok;

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
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		p->b_rej++;
		return ok;
	}

	{
		char		id[37],
					ad[24],
					campaign[24],
					window[24];
		const char *values[6];
		int64_t		minute_us = ev.ts_us - ev.ts_us % (INT64_C(60) * 1000000);
		int			is_click = ev.type == ADS_EV_CLICK;

		if (ev.ts_us > p->b_wm_us)
			p->b_wm_us = ev.ts_us;
		ads_format_uuid(ev.event_id, id);
		snprintf(ad, sizeof(ad), "%" PRId64, ev.ad_id);
		snprintf(campaign, sizeof(campaign), "%" PRId64, ev.campaign_id);
		snprintf(window, sizeof(window), "%" PRId64, minute_us / 1000000);
		values[0] = id;
		values[1] = ad;
		values[2] = campaign;
		values[3] = window;
		values[4] = is_click ? "0" : "1";
		values[5] = is_click ? "1" : "0";
		res = PQexecPrepared(conn, "event", 6, values, NULL, NULL, 0);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (ok)
		{
			/* one row upserted: a new event; none: its id was seen before */
			if (strcmp(PQcmdTuples(res), "1") == 0)
				p->b_acc++;
			else
				p->b_dup++;
		}
		PQclear(res);
		return ok;
	}
}

/* Stores the batch's offsets, watermarks and counts; 0 on failure. */
static int
store_offsets(void)
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

/*
 * One poll batch in one transaction.  Returns 1 if committed, 0 if it was
 * rolled back (the caller then resumes from the database).
 */
static int
process_batch(rd_kafka_message_t **msgs, ssize_t n)
{
	int64_t		now_us = wall_us();
	int			began = 0;
	int			ok = 1;
	int64_t		batch_msgs = 0;

	for (int i = 0; i < nown; i++)
	{
		Part	   *p = &parts[i];

		p->touched = 0;
		p->b_next = p->next;
		p->b_wm_us = p->wm_us;
		p->b_acc = p->b_dup = p->b_rej = 0;
	}

	for (ssize_t i = 0; i < n && ok; i++)
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
			fprintf(stderr, "alt_consumer: partition %d: %s\n", p->id, rd_kafka_message_errstr(m));
			continue;
		}
		/* left over from before a seek back: not ours to count */
		if (p->b_next >= 0 && m->offset < p->b_next)
			continue;
		if (!began)
		{
			if (!run("BEGIN"))
				die("BEGIN failed");
			began = 1;
		}
		p->at_end = 0;
		p->touched = 1;
		p->b_next = m->offset + 1;
		batch_msgs++;
		ok = handle_message(p, m, now_us);
		if (!ok)
			fprintf(stderr, "alt_consumer: partition %d offset %" PRId64 ": %s",
					p->id, (int64_t) m->offset, PQerrorMessage(conn));
	}
	if (!began)
		return 1;
	if (ok)
		ok = store_offsets();
	if (ok)
		ok = run("COMMIT");
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
		n_dup += p->b_dup;
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
		die("usage: alt_consumer --brokers B --topic T --db CONNINFO [--worker I --workers N] [--exit-at-eof]");

	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		die("connect: %s", PQerrorMessage(conn));
	prepare("load", "SELECT partition, next_offset, watermark_us FROM alt.offsets WHERE topic = $1");
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

	rk = bench_consumer(brokers, "adstream-bench-alt");
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
		ssize_t		n = rd_kafka_consume_batch_queue(queue, 500, msgs, BATCH);
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
