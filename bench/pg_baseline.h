/*
 * pg_baseline.h
 *	  What the benchmark's two libpq baselines share: alt_consumer.c (one
 *	  statement per event) and copy_consumer.c (COPY and set-based
 *	  statements).  Both judge messages as adstream does, own the partitions
 *	  p with p % N = I, run one transaction per poll batch that also stores
 *	  the partitions' offsets in alt.offsets, resume from there after a
 *	  failed transaction, and print the same exit line.  They differ only in
 *	  how a batch's messages reach the tables: a program fills in a
 *	  PgBaseline and calls baseline_main().
 *
 *	  prog --brokers B --topic T --db CONNINFO [--worker I --workers N] [--exit-at-eof]
 *
 *	  --exit-at-eof stops once every owned partition has been read to its end
 *	  and committed.  At exit: msgs=N accepted=A duplicates=D rejected=R
 *	  batches=B retries=X cpu_s=C seconds=S
 *
 *	  Include it once, after bench_util.h and event_parse.h.
 */
#ifndef PG_BASELINE_H
#define PG_BASELINE_H

#include <getopt.h>
#include <inttypes.h>
#include <string.h>
#include <sys/resource.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#define MAX_MESSAGE_BYTES	(1024 * 1024)	/* adstream.max_message_bytes */
#define FUTURE_SKEW_US		(INT64_C(300) * 1000000)	/* adstream.max_future_skew */
#define RETENTION_US		(INT64_C(7) * 86400 * 1000000)	/* adstream.minute_retention */
#define PAYLOAD_KEEP		8192	/* adstream.dead_letter_payload_bytes */
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
	int64_t		b_valid,		/* counted by the loop */
				b_rej,
				b_acc,			/* set by the program's add or finish */
				b_dup;
} Part;

typedef struct PgBaseline
{
	const char *group_id;
	int			batch;			/* messages per poll */
	int			wait_ms;		/* poll wait */
	/* after connecting: prepared statements, temporary tables */
	void		(*setup) (void);
	/* before the batch's first message */
	void		(*start_batch) (void);
	/*
	 * One message of the batch, inside its transaction, judged: reason
	 * ADS_OK with ev filled, or why it is rejected.  0 if a statement failed.
	 */
	int			(*add) (Part *p, const rd_kafka_message_t *m, AdsReason reason, const AdsEvent *ev);
	/* before COMMIT: the rest of the batch and the offsets; 0 on failure */
	int			(*finish) (void);
} PgBaseline;

static const char *topic;
static PGconn *conn;
static rd_kafka_t *rk;
static Part *parts;
static int	nparts;				/* partitions of the topic */
static int *owned;				/* index into parts by partition number, or -1 */
static int	nown;

/* Runs a statement without results; returns 0 (error printed) on failure. */
static int
run(const char *stmt)
{
	PGresult   *res = PQexec(conn, stmt);
	int			ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, "%s: %.60s: %s", bench_progname, stmt, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

/*
 * Reads the committed offsets and watermarks of our partitions and
 * (re)assigns them there: at start, and after a transaction failed.
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

/*
 * adstream's judgement of a message: its parser, then future_timestamp, and
 * too_late only past adstream.minute_retention: adstream judges an event
 * too late only once its hour's dedup state has expired, and the baselines
 * never forget an id, so an old event is still deduplicated exactly and
 * counts (as in adstream without expiry).
 */
static AdsReason
judge(const rd_kafka_message_t *m, int64_t now_us, AdsEvent *ev)
{
	char		detail[ADS_DETAIL_LEN];
	AdsReason	reason;

	reason = ads_parse_event(m->payload, m->len, MAX_MESSAGE_BYTES, ev, detail, sizeof(detail));
	if (reason == ADS_OK && ev->ts_us > now_us + FUTURE_SKEW_US)
		reason = ADS_R_FUTURE_TIMESTAMP;
	else if (reason == ADS_OK && ev->ts_us < now_us - RETENTION_US)
		reason = ADS_R_TOO_LATE;
	return reason;
}

static int64_t n_msgs,
			n_acc,
			n_dup,
			n_rej,
			n_batches,
			n_retries;

/* One poll batch in one transaction: 1 if committed, 0 if rolled back. */
static int
process_batch(const PgBaseline *b, rd_kafka_message_t **msgs, ssize_t n)
{
	int64_t		now_us = wall_us();
	int64_t		batch_msgs = 0;
	int			ok = 1;

	for (int i = 0; i < nown; i++)
	{
		Part	   *p = &parts[i];

		p->touched = 0;
		p->b_next = p->next;
		p->b_wm_us = p->wm_us;
		p->b_valid = p->b_rej = p->b_acc = p->b_dup = 0;
	}
	for (ssize_t i = 0; i < n && ok; i++)
	{
		rd_kafka_message_t *m = msgs[i];
		Part	   *p;
		AdsEvent	ev;
		AdsReason	reason;

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
			fprintf(stderr, "%s: partition %d: %s\n", bench_progname, p->id, rd_kafka_message_errstr(m));
			continue;
		}
		/* left over from before a seek back: not ours to count */
		if (p->b_next >= 0 && m->offset < p->b_next)
			continue;
		if (batch_msgs++ == 0)
		{
			if (!run("BEGIN"))
				die("BEGIN failed");
			b->start_batch();
		}
		p->at_end = 0;
		p->touched = 1;
		p->b_next = m->offset + 1;
		reason = judge(m, now_us, &ev);
		if (reason != ADS_OK)
			p->b_rej++;
		else
		{
			p->b_valid++;
			if (ev.ts_us > p->b_wm_us)
				p->b_wm_us = ev.ts_us;
		}
		ok = b->add(p, m, reason, &ev);
		if (!ok)
			fprintf(stderr, "%s: partition %d offset %" PRId64 ": %s",
					bench_progname, p->id, (int64_t) m->offset, PQerrorMessage(conn));
	}
	if (batch_msgs == 0)
		return 1;
	if (!(ok && b->finish() && run("COMMIT")))
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

static int
baseline_main(const PgBaseline *b, int argc, char **argv)
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
		die("usage: %s --brokers B --topic T --db CONNINFO [--worker I --workers N] [--exit-at-eof]",
			bench_progname);

	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		die("connect: %s", PQerrorMessage(conn));
	b->setup();

	rk = bench_consumer(brokers, b->group_id, workers);
	queue = rd_kafka_queue_get_consumer(rk);

	nparts = bench_partition_count(rk, topic);
	owned = malloc(sizeof(int) * (size_t) nparts);
	parts = calloc((size_t) nparts, sizeof(Part));
	msgs = malloc(sizeof(*msgs) * (size_t) b->batch);
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
		ssize_t		n = rd_kafka_consume_batch_queue(queue, b->wait_ms, msgs, (size_t) b->batch);
		int			committed;

		if (n < 0)
			die("consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
		committed = process_batch(b, msgs, n);
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

#endif							/* PG_BASELINE_H */
