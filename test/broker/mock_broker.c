/*-------------------------------------------------------------------------
 *
 * mock_broker.c
 *	  A stand-alone Kafka "cluster" for adstream's tests.
 *
 * There is no real Kafka broker on the test machines, so this program wraps
 * librdkafka's mock cluster (rdkafka_mock.h) in a process that serves the
 * real Kafka protocol on loopback ports.  Anything that speaks Kafka (the
 * extension's consumer, kcat, the load generator) can use it through the
 * bootstrap address it prints.
 *
 * Usage:
 *	  adstream-mock-broker [--brokers N] [--topic NAME:PARTITIONS]...
 *	                       [--no-stdin] [--debug CONTEXTS]
 *
 * Once every broker listens and every --topic exists, exactly one line
 *
 *	  BOOTSTRAP 127.0.0.1:port[,127.0.0.1:port...]
 *
 * is written to stdout.  After that, unless --no-stdin is given, commands
 * are read from stdin one per line and each gets exactly one answer line,
 * "OK ..." or "ERR <message>".  Blank lines and lines starting with '#' are
 * ignored and get no answer.
 *
 *	  ping                          OK pong
 *	  bootstrap                     OK <bootstrap servers>
 *	  topic NAME PARTITIONS         create a topic
 *	  down ID|all, up ID|all        take brokers off / back on the network
 *	  leader TOPIC PARTITION ID     move a partition leader (-1: no leader)
 *	  errors APIKEY COUNT CODE...   fail the next COUNT requests of APIKEY;
 *	                                the codes are used in turn, cycling
 *	  clear APIKEY                  drop pending injected errors
 *	  rtt ID|all MS                 add round-trip delay to responses
 *	  quit                          exit 0
 *
 * End of file on stdin also exits 0, so a broker started by a test script
 * goes away with the script.  SIGTERM and SIGINT always exit 0 after
 * tearing the cluster down.
 *
 * Topics get replication factor min(N, 3): one replica per partition on a
 * single broker, and on larger clusters enough followers that "leader"
 * can move partitions around while keeping the replica set realistic.
 *
 * Behaviour of librdkafka 2.0's mock cluster worth knowing when writing
 * tests (observed, not promised by its API):
 *	  - Ports are random loopback ports, chosen anew on every start; "down"
 *		and "up" keep them.  There is no way to ask for fixed ports.
 *	  - "down" drops existing connections and refuses new ones (connection
 *		refused); it does not move leadership, and metadata keeps showing
 *		the broker.  After "up", clients come back only when their
 *		reconnect backoff expires, up to reconnect.backoff.max.ms (10 s by
 *		default), so lower that in clients or wait long enough.
 *	  - kcat gives up when all brokers are down unless run with -E.
 *	  - With several brokers each partition's leader is picked at random.
 *	  - Each partition keeps at most 5 MiB / 100,000 message sets; older
 *		data is trimmed silently.  Aborted transactions are not filtered
 *		for read_committed consumers.  Everything lives in memory.
 *	  - Error code _TRANSPORT (-195) makes it drop the connection rather
 *		than answer.
 *	  - With stdin at EOF (e.g. </dev/null, as in CI) this program exits
 *		right after BOOTSTRAP: run it with --no-stdin there.
 *
 * Build:
 *	  cc -O2 -Wall -Wextra -Werror -o test/bin/adstream-mock-broker \
 *	     test/broker/mock_broker.c $(pkg-config --cflags --libs rdkafka) -lpthread
 *
 *-------------------------------------------------------------------------
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_LINE		4096
#define MAX_TOKENS		256
#define MAX_TOPICS		64
#define MAX_ERRORS		100000
#define MAX_PARTITIONS	10000
#define MAX_BROKERS		64

/* Set from signal handlers; everything else happens in the main loop. */
static volatile sig_atomic_t got_signal = 0;
static int	signal_pipe[2] = {-1, -1};

static rd_kafka_mock_cluster_t *mcluster = NULL;
static int	broker_count = 1;

/* Kafka protocol request keys that tests are likely to want to break. */
static const struct
{
	const char *name;
	int16_t		key;
}			api_keys[] =
{
	{"Produce", 0},
	{"Fetch", 1},
	{"ListOffsets", 2},
	{"Metadata", 3},
	{"OffsetCommit", 8},
	{"OffsetFetch", 9},
	{"FindCoordinator", 10},
	{"JoinGroup", 11},
	{"Heartbeat", 12},
	{"LeaveGroup", 13},
	{"SyncGroup", 14},
	{"ApiVersions", 18},
	{"InitProducerId", 22},
	{"OffsetForLeaderEpoch", 23},
	{"AddPartitionsToTxn", 24},
	{"AddOffsetsToTxn", 25},
	{"EndTxn", 26},
	{"TxnOffsetCommit", 28},
};

/*
 * Names Kafka itself uses for codes that librdkafka's enum still spells the
 * old way.  Tests are written against the protocol documentation, so accept
 * both.
 */
static const struct
{
	const char *name;
	int			code;
}			err_aliases[] =
{
	{"NOT_LEADER_OR_FOLLOWER", 6},
	{"UNKNOWN_SERVER_ERROR", -1},
};

static void
handle_signal(int signo)
{
	int			save_errno = errno;

	got_signal = signo;
	/* write() is async-signal-safe; it wakes the poll() in the main loop */
	if (signal_pipe[1] >= 0)
	{
		ssize_t		rc = write(signal_pipe[1], "s", 1);

		(void) rc;
	}
	errno = save_errno;
}

/*
 * librdkafka log lines go to stderr, tagged so that test logs show where
 * they came from.  The host handle has no bootstrap.servers on purpose (it
 * only hosts the cluster), so librdkafka's warning about that is noise.
 */
static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void) rk;
	if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
		return;
	fprintf(stderr, "adstream-mock-broker: rdkafka %d %s: %s\n", level, fac, buf);
}

static void
usage(FILE *out)
{
	fprintf(out,
			"usage: adstream-mock-broker [--brokers N] [--topic NAME:PARTITIONS]...\n"
			"                            [--no-stdin] [--debug CONTEXTS]\n"
			"Prints \"BOOTSTRAP <servers>\" when ready, then serves commands on stdin:\n"
			"  ping | bootstrap | topic NAME PARTS | down ID|all | up ID|all\n"
			"  leader TOPIC PART ID | errors APIKEY COUNT CODE... | clear APIKEY\n"
			"  rtt ID|all MS | quit\n");
}

/*
 * Strict integer parsing: the whole string must be a number in range.
 * Returns 1 on success.
 */
static int
parse_long(const char *s, long min, long max, long *out)
{
	char	   *end;
	long		v;

	if (s == NULL || *s == '\0')
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return 0;
	*out = v;
	return 1;
}

/* Reply helpers: exactly one line per command, flushed at once. */
static int
reply(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	/* A vanished reader (EPIPE) means our parent is gone: time to leave. */
	return fflush(stdout) == 0 ? 0 : -1;
}

/*
 * Parse a broker id argument: a number 1..N, or "all" (-1 for the mock API).
 */
static int
parse_broker_id(const char *s, int allow_all, int32_t *id, const char **err)
{
	long		v;

	if (allow_all && strcasecmp(s, "all") == 0)
	{
		*id = -1;
		return 1;
	}
	if (!parse_long(s, 1, broker_count, &v))
	{
		static char msg[64];

		snprintf(msg, sizeof(msg), "broker id must be 1..%d%s",
				 broker_count, allow_all ? " or \"all\"" : "");
		*err = msg;
		return 0;
	}
	*id = (int32_t) v;
	return 1;
}

static int
parse_api_key(const char *s, int16_t *key)
{
	long		v;
	size_t		i;

	for (i = 0; i < sizeof(api_keys) / sizeof(api_keys[0]); i++)
	{
		if (strcasecmp(s, api_keys[i].name) == 0)
		{
			*key = api_keys[i].key;
			return 1;
		}
	}
	/* 0..74 covers every request type defined by Kafka so far, and more */
	if (parse_long(s, 0, 1000, &v))
	{
		*key = (int16_t) v;
		return 1;
	}
	return 0;
}

/*
 * Parse an error code: a number, or a librdkafka error name with or without
 * its RD_KAFKA_RESP_ERR_ prefix, matched case-insensitively.  Local
 * (negative, underscore-prefixed) librdkafka codes are accepted by name or
 * number because the mock gives some of them a meaning: _TRANSPORT makes it
 * drop the connection instead of answering.
 */
static int
parse_err_code(const char *s, rd_kafka_resp_err_t *code)
{
	const struct rd_kafka_err_desc *descs;
	size_t		ndescs;
	size_t		i;
	long		v;
	const char *name = s;

	rd_kafka_get_err_descs(&descs, &ndescs);

	if (parse_long(s, INT_MIN, INT_MAX, &v))
	{
		/* Protocol codes are >= -1; local codes must be ones librdkafka knows */
		if (v >= -1 && v <= SHRT_MAX)
		{
			*code = (rd_kafka_resp_err_t) v;
			return 1;
		}
		for (i = 0; i < ndescs; i++)
		{
			if (descs[i].name != NULL && (long) descs[i].code == v)
			{
				*code = descs[i].code;
				return 1;
			}
		}
		return 0;
	}

	if (strncasecmp(name, "RD_KAFKA_RESP_ERR_", 18) == 0)
		name += 18;

	for (i = 0; i < ndescs; i++)
	{
		if (descs[i].name != NULL && strcasecmp(descs[i].name, name) == 0)
		{
			*code = descs[i].code;
			return 1;
		}
	}
	for (i = 0; i < sizeof(err_aliases) / sizeof(err_aliases[0]); i++)
	{
		if (strcasecmp(err_aliases[i].name, name) == 0)
		{
			*code = (rd_kafka_resp_err_t) err_aliases[i].code;
			return 1;
		}
	}
	return 0;
}

static int
reply_kafka_err(rd_kafka_resp_err_t err)
{
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return reply("OK");
	return reply("ERR %s: %s", rd_kafka_err2name(err), rd_kafka_err2str(err));
}

/*
 * Replication factor for new topics; see the header comment.
 */
static int
replication_factor(void)
{
	return broker_count < 3 ? broker_count : 3;
}

/*
 * Execute one command line.  Returns 1 to keep going, 0 for "quit", -1 if
 * stdout is gone.
 */
static int
run_command(char *line)
{
	char	   *tok[MAX_TOKENS];
	int			ntok = 0;
	char	   *save = NULL;
	char	   *t;
	const char *err = NULL;
	long		v;
	int32_t		id;

	for (t = strtok_r(line, " \t\r\n", &save);
		 t != NULL;
		 t = strtok_r(NULL, " \t\r\n", &save))
	{
		if (ntok == MAX_TOKENS)
			return reply("ERR too many arguments") < 0 ? -1 : 1;
		tok[ntok++] = t;
	}
	if (ntok == 0 || tok[0][0] == '#')
		return 1;				/* blank or comment: no answer by design */

#define REPLY(...) do { if (reply(__VA_ARGS__) < 0) return -1; return 1; } while (0)
#define NEED_ARGS(lo, hi, syn) \
	do { if (ntok - 1 < (lo) || ntok - 1 > (hi)) REPLY("ERR usage: %s", syn); } while (0)

	if (strcasecmp(tok[0], "ping") == 0)
	{
		NEED_ARGS(0, 0, "ping");
		REPLY("OK pong");
	}
	else if (strcasecmp(tok[0], "bootstrap") == 0)
	{
		NEED_ARGS(0, 0, "bootstrap");
		REPLY("OK %s", rd_kafka_mock_cluster_bootstraps(mcluster));
	}
	else if (strcasecmp(tok[0], "quit") == 0 || strcasecmp(tok[0], "exit") == 0)
	{
		NEED_ARGS(0, 0, "quit");
		if (reply("OK bye") < 0)
			return -1;
		return 0;
	}
	else if (strcasecmp(tok[0], "topic") == 0)
	{
		NEED_ARGS(2, 2, "topic NAME PARTITIONS");
		if (!parse_long(tok[2], 1, MAX_PARTITIONS, &v))
			REPLY("ERR partitions must be 1..%d", MAX_PARTITIONS);
		if (strlen(tok[1]) > 249)
			REPLY("ERR topic name too long");
		if (reply_kafka_err(rd_kafka_mock_topic_create(mcluster, tok[1], (int) v,
													   replication_factor())) < 0)
			return -1;
		return 1;
	}
	else if (strcasecmp(tok[0], "down") == 0 || strcasecmp(tok[0], "up") == 0)
	{
		rd_kafka_resp_err_t rc;

		NEED_ARGS(1, 1, "down|up ID|all");
		if (!parse_broker_id(tok[1], 1, &id, &err))
			REPLY("ERR %s", err);
		if (tolower((unsigned char) tok[0][0]) == 'd')
			rc = rd_kafka_mock_broker_set_down(mcluster, id);
		else
			rc = rd_kafka_mock_broker_set_up(mcluster, id);
		if (reply_kafka_err(rc) < 0)
			return -1;
		return 1;
	}
	else if (strcasecmp(tok[0], "leader") == 0)
	{
		long		part;
		long		bid;

		NEED_ARGS(3, 3, "leader TOPIC PARTITION BROKERID");
		if (!parse_long(tok[2], 0, INT32_MAX, &part))
			REPLY("ERR bad partition");
		/* -1 makes the partition leaderless, which is a useful failure too */
		if (!parse_long(tok[3], -1, broker_count, &bid) || bid == 0)
			REPLY("ERR broker id must be 1..%d or -1", broker_count);
		if (reply_kafka_err(rd_kafka_mock_partition_set_leader(mcluster, tok[1],
															   (int32_t) part,
															   (int32_t) bid)) < 0)
			return -1;
		return 1;
	}
	else if (strcasecmp(tok[0], "errors") == 0)
	{
		int16_t		key;
		long		cnt;
		int			ncodes = ntok - 3;
		rd_kafka_resp_err_t codes[MAX_TOKENS];
		rd_kafka_resp_err_t *errs;
		int			i;

		if (ntok < 4)
			REPLY("ERR usage: errors APIKEY COUNT ERRCODE [ERRCODE...]");
		if (!parse_api_key(tok[1], &key))
			REPLY("ERR unknown api key \"%s\"", tok[1]);
		if (!parse_long(tok[2], 1, MAX_ERRORS, &cnt))
			REPLY("ERR count must be 1..%d", MAX_ERRORS);
		if (ncodes > cnt)
			REPLY("ERR more error codes than COUNT");
		for (i = 0; i < ncodes; i++)
		{
			if (!parse_err_code(tok[3 + i], &codes[i]))
				REPLY("ERR unknown error code \"%s\"", tok[3 + i]);
		}
		errs = malloc(sizeof(*errs) * (size_t) cnt);
		if (errs == NULL)
			REPLY("ERR out of memory");
		for (i = 0; i < cnt; i++)
			errs[i] = codes[i % ncodes];
		rd_kafka_mock_push_request_errors_array(mcluster, key, (size_t) cnt, errs);
		free(errs);
		REPLY("OK");
	}
	else if (strcasecmp(tok[0], "clear") == 0)
	{
		int16_t		key;

		NEED_ARGS(1, 1, "clear APIKEY");
		if (!parse_api_key(tok[1], &key))
			REPLY("ERR unknown api key \"%s\"", tok[1]);
		rd_kafka_mock_clear_request_errors(mcluster, key);
		REPLY("OK");
	}
	else if (strcasecmp(tok[0], "rtt") == 0)
	{
		long		ms;

		NEED_ARGS(2, 2, "rtt ID|all MS");
		if (!parse_broker_id(tok[1], 1, &id, &err))
			REPLY("ERR %s", err);
		if (!parse_long(tok[2], 0, 3600 * 1000, &ms))
			REPLY("ERR rtt must be 0..3600000 ms");
		if (reply_kafka_err(rd_kafka_mock_broker_set_rtt(mcluster, id, (int) ms)) < 0)
			return -1;
		return 1;
	}

	REPLY("ERR unknown command \"%s\"", tok[0]);

#undef NEED_ARGS
#undef REPLY
}

/*
 * Wait for commands (or only for a signal with --no-stdin).  stdin is read
 * with read(2) rather than stdio so that a single poll() can watch both it
 * and the signal pipe.
 */
static void
serve(int use_stdin)
{
	char		buf[MAX_LINE + 1];
	size_t		len = 0;
	int			discarding = 0;	/* inside an over-long line */
	int			eof = !use_stdin;

	for (;;)
	{
		struct pollfd pfd[2];
		int			nfds = 0;
		int			rc;

		if (got_signal)
			return;

		pfd[nfds].fd = signal_pipe[0];
		pfd[nfds].events = POLLIN;
		nfds++;
		if (!eof)
		{
			pfd[nfds].fd = STDIN_FILENO;
			pfd[nfds].events = POLLIN;
			nfds++;
		}

		rc = poll(pfd, (nfds_t) nfds, -1);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			perror("adstream-mock-broker: poll");
			return;
		}
		if (got_signal)
			return;
		if (eof || !(pfd[1].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;

		{
			ssize_t		n = read(STDIN_FILENO, buf + len, MAX_LINE - len);
			size_t		start = 0;
			size_t		i;

			if (n < 0)
			{
				if (errno == EINTR || errno == EAGAIN)
					continue;
				perror("adstream-mock-broker: read stdin");
				return;
			}
			if (n == 0)
			{
				/* EOF: run an unterminated last command, then leave */
				if (len > 0 && !discarding)
				{
					buf[len] = '\0';
					(void) run_command(buf);
				}
				return;
			}
			len += (size_t) n;

			for (i = 0; i < len; i++)
			{
				if (buf[i] != '\n')
					continue;
				buf[i] = '\0';
				if (discarding)
				{
					discarding = 0;
					if (reply("ERR line too long") < 0)
						return;
				}
				else
				{
					rc = run_command(buf + start);
					if (rc <= 0)
						return;
				}
				start = i + 1;
			}
			/* keep the partial line at the front of the buffer */
			memmove(buf, buf + start, len - start);
			len -= start;
			if (len == MAX_LINE)
			{
				/* no newline in a full buffer: drop it, answer at its end */
				discarding = 1;
				len = 0;
			}
		}
	}
}

int
main(int argc, char **argv)
{
	const char *topics[MAX_TOPICS];
	int			topic_parts[MAX_TOPICS];
	int			ntopics = 0;
	int			use_stdin = 1;
	const char *debug = NULL;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	struct sigaction sa;
	sigset_t	sigs;
	int			i;

	for (i = 1; i < argc; i++)
	{
		const char *arg = argv[i];
		const char *val = NULL;
		char	   *eq = NULL;

		/* accept both "--opt value" and "--opt=value" */
		if (strncmp(arg, "--", 2) == 0 && (eq = strchr(arg, '=')) != NULL)
			val = eq + 1;

#define OPT_IS(name) (eq ? (strncmp(arg, name, (size_t) (eq - arg)) == 0 && \
							strlen(name) == (size_t) (eq - arg)) \
					 : strcmp(arg, name) == 0)
#define TAKE_VAL() \
		do { \
			if (val == NULL) \
			{ \
				if (i + 1 >= argc) \
				{ \
					fprintf(stderr, "adstream-mock-broker: %s needs a value\n", arg); \
					return 2; \
				} \
				val = argv[++i]; \
			} \
		} while (0)

		if (OPT_IS("--brokers"))
		{
			long		v;

			TAKE_VAL();
			if (!parse_long(val, 1, MAX_BROKERS, &v))
			{
				fprintf(stderr, "adstream-mock-broker: --brokers must be 1..%d\n",
						MAX_BROKERS);
				return 2;
			}
			broker_count = (int) v;
		}
		else if (OPT_IS("--topic"))
		{
			const char *colon;
			long		v;
			char	   *name;

			TAKE_VAL();
			colon = strrchr(val, ':');
			if (colon == NULL || colon == val ||
				!parse_long(colon + 1, 1, MAX_PARTITIONS, &v))
			{
				fprintf(stderr, "adstream-mock-broker: --topic wants NAME:PARTITIONS (1..%d), not \"%s\"\n",
						MAX_PARTITIONS, val);
				return 2;
			}
			if (ntopics == MAX_TOPICS)
			{
				fprintf(stderr, "adstream-mock-broker: at most %d --topic options\n",
						MAX_TOPICS);
				return 2;
			}
			name = strndup(val, (size_t) (colon - val));
			if (name == NULL)
				return 1;
			topics[ntopics] = name;
			topic_parts[ntopics] = (int) v;
			ntopics++;
		}
		else if (OPT_IS("--no-stdin"))
		{
			if (eq)
			{
				fprintf(stderr, "adstream-mock-broker: --no-stdin takes no value\n");
				return 2;
			}
			use_stdin = 0;
		}
		else if (OPT_IS("--debug"))
		{
			TAKE_VAL();
			debug = val;
		}
		else if (OPT_IS("--help") || OPT_IS("-h"))
		{
			usage(stdout);
			return 0;
		}
		else
		{
			fprintf(stderr, "adstream-mock-broker: unknown argument \"%s\"\n", arg);
			usage(stderr);
			return 2;
		}
#undef TAKE_VAL
#undef OPT_IS
	}

	/*
	 * Signal plumbing.  The handler only sets a flag and pokes a pipe.  We
	 * block the signals before librdkafka starts its threads, so those
	 * threads inherit a mask that keeps signals away from them, then unblock
	 * them in this thread only: the handler then always runs here and
	 * interrupts our poll().
	 */
	if (pipe(signal_pipe) != 0)
	{
		perror("adstream-mock-broker: pipe");
		return 1;
	}
	for (i = 0; i < 2; i++)
	{
		int			fl = fcntl(signal_pipe[i], F_GETFL);

		(void) fcntl(signal_pipe[i], F_SETFL, fl | O_NONBLOCK);
		(void) fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A parent that closed our stdout should give EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	/*
	 * The mock cluster needs a client handle for its bookkeeping; a producer
	 * without bootstrap servers never connects anywhere by itself.
	 */
	conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, log_cb);
	if (debug != NULL &&
		rd_kafka_conf_set(conf, "debug", debug, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "adstream-mock-broker: %s\n", errstr);
		return 2;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "adstream-mock-broker: rd_kafka_new: %s\n", errstr);
		return 1;
	}

	mcluster = rd_kafka_mock_cluster_new(rk, broker_count);
	if (mcluster == NULL)
	{
		fprintf(stderr, "adstream-mock-broker: could not create mock cluster\n");
		rd_kafka_destroy(rk);
		return 1;
	}

	for (i = 0; i < ntopics; i++)
	{
		rd_kafka_resp_err_t err;

		err = rd_kafka_mock_topic_create(mcluster, topics[i], topic_parts[i],
										 replication_factor());
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			fprintf(stderr, "adstream-mock-broker: creating topic \"%s\": %s\n",
					topics[i], rd_kafka_err2str(err));
			rd_kafka_mock_cluster_destroy(mcluster);
			rd_kafka_destroy(rk);
			return 1;
		}
	}

	pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);

	/* Listeners are bound and topics exist: tell whoever started us. */
	if (!got_signal)
	{
		printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mcluster));
		fflush(stdout);
		serve(use_stdin);
	}

	rd_kafka_mock_cluster_destroy(mcluster);
	rd_kafka_destroy(rk);
	for (i = 0; i < ntopics; i++)
		free((void *) topics[i]);
	return 0;
}
