/*
 * offset_poller.c
 *	  Watches the committed offsets of adstream sources over one libpq
 *	  connection.  Because adstream commits a partition's next_offset in the
 *	  same transaction as the aggregates of the messages before it, the first
 *	  poll that sees next_offset > o is when message o's counts became
 *	  visible (at most one poll interval plus one query late).
 *
 *	  offset_poller --db CONNINFO --sources a[,b...] [--interval-ms 20]
 *	                [--until N] [--timeout-s 600] [--out FILE]
 *	                [--table alt.offsets]
 *
 *	  Every poll runs SELECT partition, next_offset FROM adstream.offsets for
 *	  the named sources; each change is written to FILE as
 *	  "UNIX_US SOURCE PARTITION NEXT_OFFSET" with the time taken just
 *	  before the query was sent.  With --until it stops once the sum of
 *	  next_offset over the sources reaches N; otherwise at SIGTERM/SIGINT.
 *
 *	  Summary on stdout, one line:
 *	  done_us=T t10_us=T t90_us=T total=N polls=N mean_query_us=X
 *	  max_interval_us=X
 *	  where t10/t90 are the first polls at which the sum reached 10% and
 *	  90% of N (0 without --until), done_us when it reached N.
 *
 *	  --table alt.offsets watches the alternative consumer's offsets
 *	  instead (bench/alt_consumer.c); --sources then names its topics.
 *
 *	  --waits also samples, after each poll, what every adstream consumer
 *	  worker is doing (wait_event_type:wait_event in pg_stat_activity, CPU
 *	  when it waits on nothing; for a Lock wait also the backend types of
 *	  the blockers, after "<-"), counted while the committed offsets are
 *	  between 10% and 90% of --until, and adds to the summary line
 *	  worker_samples=N lock_samples=L waits=TYPE:EVENT=N,... (most frequent
 *	  first, at most 8).
 */
#define _POSIX_C_SOURCE 200809L

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "bench_util.h"

const char *const bench_progname = "offset_poller";

#define MAX_KEYS 4096

static volatile sig_atomic_t stop_requested = 0;

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
sleep_us(int64_t us)
{
	struct timespec ts;

	if (us <= 0)
		return;
	ts.tv_sec = (time_t) (us / 1000000);
	ts.tv_nsec = (long) (us % 1000000) * 1000;
	nanosleep(&ts, NULL);
}

/* Last seen next_offset per (source, partition), a small linear table. */
typedef struct Key
{
	char		source[64];
	int			partition;
	int64_t		next_offset;
} Key;

static Key keys[MAX_KEYS];
static int nkeys = 0;

/* Sampled wait events of the workers: a small linear table. */
#define MAX_WAITS 128
typedef struct Wait
{
	char		name[96];
	int64_t		n;
} Wait;

static Wait waits[MAX_WAITS];
static int nwaits = 0;
static int64_t worker_samples = 0;
static int64_t lock_samples = 0;

static void
count_wait(const char *type, const char *event)
{
	char		name[96];

	snprintf(name, sizeof(name), "%s:%s", type[0] ? type : "CPU", event[0] ? event : "-");
	/* one word: the summary line is KEY=VALUE separated by spaces */
	for (char *c = name; *c; c++)
		if (*c == ' ' || *c == ',' || *c == ';' || *c == '=')
			*c = '_';
	worker_samples++;
	if (strcmp(type, "Lock") == 0)
		lock_samples++;
	for (int i = 0; i < nwaits; i++)
		if (strcmp(waits[i].name, name) == 0)
		{
			waits[i].n++;
			return;
		}
	if (nwaits < MAX_WAITS)
	{
		snprintf(waits[nwaits].name, sizeof(waits[nwaits].name), "%s", name);
		waits[nwaits++].n = 1;
	}
}

static int
cmp_wait(const void *a, const void *b)
{
	const Wait *x = a;
	const Wait *y = b;

	return (x->n < y->n) - (x->n > y->n);
}

static Key *
lookup(const char *source, int partition)
{
	for (int i = 0; i < nkeys; i++)
		if (keys[i].partition == partition && strcmp(keys[i].source, source) == 0)
			return &keys[i];
	if (nkeys == MAX_KEYS)
		die("too many partitions");
	snprintf(keys[nkeys].source, sizeof(keys[nkeys].source), "%s", source);
	keys[nkeys].partition = partition;
	keys[nkeys].next_offset = -1;
	return &keys[nkeys++];
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"db", required_argument, NULL, 'd'},
		{"sources", required_argument, NULL, 's'},
		{"interval-ms", required_argument, NULL, 'i'},
		{"until", required_argument, NULL, 'u'},
		{"timeout-s", required_argument, NULL, 't'},
		{"out", required_argument, NULL, 'o'},
		{"table", required_argument, NULL, 'T'},
		{"waits", no_argument, NULL, 'w'},
		{NULL, 0, NULL, 0}
	};
	const char *conninfo = NULL;
	const char *sources = NULL;
	const char *out_path = NULL;
	int			alt = 0;
	int			sample_waits = 0;
	double		interval_ms = 20;
	int64_t		until = 0;
	double		timeout_s = 600;
	char		array[1024];
	const char *params[1];
	FILE	   *out = NULL;
	PGconn	   *conn;
	int64_t		start;
	int64_t		prev_poll = 0;
	int64_t		max_interval = 0;
	int64_t		query_us_sum = 0;
	int64_t		polls = 0;
	int64_t		total = 0;
	int64_t		t10 = 0,
				t90 = 0,
				done = 0;
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 's':
				sources = optarg;
				break;
			case 'i':
				interval_ms = atof(optarg);
				break;
			case 'u':
				until = strtoll(optarg, NULL, 10);
				break;
			case 't':
				timeout_s = atof(optarg);
				break;
			case 'o':
				out_path = optarg;
				break;
			case 'w':
				sample_waits = 1;
				break;
			case 'T':
				if (strcmp(optarg, "alt.offsets") == 0)
					alt = 1;
				else if (strcmp(optarg, "adstream.offsets") != 0)
					die("--table is adstream.offsets or alt.offsets");
				break;
			default:
				die("bad arguments");
		}
	}
	if (conninfo == NULL || sources == NULL || interval_ms <= 0)
		die("usage: offset_poller --db CONNINFO --sources a[,b] [--interval-ms MS] [--until N] [--timeout-s S] [--out FILE]");
	if (snprintf(array, sizeof(array), "{%s}", sources) >= (int) sizeof(array))
		die("--sources too long");
	params[0] = array;
	if (out_path != NULL && (out = fopen(out_path, "w")) == NULL)
		die("cannot open %s", out_path);

	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		die("connect: %s", PQerrorMessage(conn));
	PQclear(PQprepare(conn, "poll", alt ?
					  "SELECT topic, partition, next_offset FROM alt.offsets"
					  " WHERE topic = ANY ($1::text[])" :
					  "SELECT source, partition, next_offset FROM adstream.offsets"
					  " WHERE source = ANY ($1::text[])", 1, NULL));
	PQclear(PQprepare(conn, "waits",
					  "SELECT coalesce(a.wait_event_type, ''), coalesce(a.wait_event, '')"
					  "       || CASE WHEN a.wait_event_type = 'Lock' THEN '<-' || coalesce(("
					  "            SELECT string_agg(DISTINCT b.backend_type, '+') FROM pg_stat_activity b"
					  "             WHERE b.pid = ANY (pg_blocking_pids(a.pid))), '?') ELSE '' END"
					  "  FROM pg_stat_activity a WHERE a.backend_type = 'adstream consumer'", 0, NULL));

	start = wall_us();
	while (!stop_requested)
	{
		int64_t		t = wall_us();
		int64_t		t_after;
		PGresult   *res;

		if (prev_poll != 0 && t - prev_poll > max_interval)
			max_interval = t - prev_poll;
		prev_poll = t;
		res = PQexecPrepared(conn, "poll", 1, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die("poll: %s", PQerrorMessage(conn));
		t_after = wall_us();
		query_us_sum += t_after - t;
		polls++;
		total = 0;
		for (int i = 0; i < PQntuples(res); i++)
		{
			const char *src = PQgetvalue(res, i, 0);
			int			part = atoi(PQgetvalue(res, i, 1));
			int64_t		next = strtoll(PQgetvalue(res, i, 2), NULL, 10);
			Key		   *k = lookup(src, part);

			total += next;
			if (next != k->next_offset)
			{
				k->next_offset = next;
				if (out != NULL)
					fprintf(out, "%" PRId64 " %s %d %" PRId64 "\n", t, src, part, next);
			}
		}
		PQclear(res);
		if (sample_waits && t10 != 0 && t90 == 0)
		{
			res = PQexecPrepared(conn, "waits", 0, NULL, NULL, NULL, 0);
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				die("waits: %s", PQerrorMessage(conn));
			for (int i = 0; i < PQntuples(res); i++)
				count_wait(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
			PQclear(res);
		}
		if (until > 0)
		{
			if (t10 == 0 && total * 10 >= until)
				t10 = t;
			if (t90 == 0 && total * 10 >= until * 9)
				t90 = t;
			if (total >= until)
			{
				done = t;
				break;
			}
		}
		if ((double) (t_after - start) > timeout_s * 1e6)
		{
			fprintf(stderr, "offset_poller: timed out at total=%" PRId64 " of %" PRId64 "\n", total, until);
			break;
		}
		sleep_us((int64_t) (interval_ms * 1000) - (wall_us() - t));
	}

	if (out != NULL && fclose(out) != 0)
		die("writing %s failed", out_path);
	PQfinish(conn);
	printf("done_us=%" PRId64 " t10_us=%" PRId64 " t90_us=%" PRId64 " total=%" PRId64
		   " polls=%" PRId64 " mean_query_us=%.0f max_interval_us=%" PRId64 "\n",
		   done, t10, t90, total, polls, polls ? (double) query_us_sum / (double) polls : 0.0,
		   max_interval);
	if (sample_waits)
	{
		qsort(waits, (size_t) nwaits, sizeof(Wait), cmp_wait);
		printf("worker_samples=%" PRId64 " lock_samples=%" PRId64 " waits=", worker_samples, lock_samples);
		for (int i = 0; i < nwaits && i < 8; i++)
			printf("%s%s=%" PRId64, i ? "," : "", waits[i].name, waits[i].n);
		printf("\n");
	}
	return (until > 0 && done == 0) ? 2 : 0;
}
