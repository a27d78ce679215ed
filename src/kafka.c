/*
 * kafka.c
 *     The librdkafka side of a consumer worker: client configuration, the
 *     wake-up pipe that lets the worker sleep on its latch, and the buffer
 *     through which librdkafka's threads hand log lines to the worker.
 *
 * librdkafka calls log and error callbacks from its own threads, where
 * ereport() must never run (it is not thread-safe and may longjmp).  The
 * callbacks only copy the text into a small mutex-protected ring; the
 * worker's loop drains it with ads_kafka_report().
 */
#include "adstream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "kafka.h"
#include "utils/timestamp.h"

#define RING_SIZE 64
#define LINE_LEN 256
#define REPEAT_SUPPRESS_MS 30000

typedef struct LogLine
{
	int			level;			/* syslog level; <= 3 is an error */
	char		text[LINE_LEN];
} LogLine;

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static LogLine ring[RING_SIZE];
static int	ring_head;			/* next to read */
static int	ring_count;
static int	ring_dropped;

/* worker-thread only: suppression of identical repeated lines */
static char last_reported[LINE_LEN];
static TimestampTz last_reported_at;
static int	repeats_suppressed;

static void
ring_push(int level, const char *fmt, const char *a, const char *b)
{
	pthread_mutex_lock(&ring_lock);
	if (ring_count == RING_SIZE)
		ring_dropped++;
	else
	{
		LogLine    *l = &ring[(ring_head + ring_count) % RING_SIZE];

		l->level = level;
		snprintf(l->text, LINE_LEN, fmt, a, b);
		ring_count++;
	}
	pthread_mutex_unlock(&ring_lock);
}

static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	ring_push(level, "%s: %s", fac, buf);
}

static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	ring_push(3, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}

void
ads_kafka_report(AdsWorkerSlot *slot, const char *kind, const char *name)
{
	for (;;)
	{
		LogLine		line;
		int			dropped;
		TimestampTz now;

		pthread_mutex_lock(&ring_lock);
		if (ring_count == 0)
		{
			pthread_mutex_unlock(&ring_lock);
			return;
		}
		line = ring[ring_head];
		ring_head = (ring_head + 1) % RING_SIZE;
		ring_count--;
		dropped = ring_dropped;
		ring_dropped = 0;
		pthread_mutex_unlock(&ring_lock);

		if (line.level <= 3)
			ads_slot_set_error(slot, line.text);

		/* A broker that is down repeats the same complaint every second. */
		now = GetCurrentTimestamp();
		if (strcmp(line.text, last_reported) == 0 &&
			!TimestampDifferenceExceeds(last_reported_at, now, REPEAT_SUPPRESS_MS))
		{
			repeats_suppressed++;
			continue;
		}
		ereport(line.level <= 3 ? WARNING : LOG,
				(errmsg("adstream %s \"%s\": kafka: %s", kind, name, line.text),
				 (repeats_suppressed > 0 || dropped > 0) ?
				 errdetail("%d repeated and %d overflowed librdkafka messages were not logged.",
						   repeats_suppressed, dropped) : 0));
		strlcpy(last_reported, line.text, LINE_LEN);
		last_reported_at = now;
		repeats_suppressed = 0;
	}
}

static bool
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
		 char *errbuf, size_t errlen)
{
	return rd_kafka_conf_set(conf, key, value, errbuf, errlen) == RD_KAFKA_CONF_OK;
}

/*
 * A configuration with our defaults (key, value, ..., NULL), then the user's
 * properties, then the settings we manage (which therefore win), and the
 * callbacks that only buffer.  NULL with errbuf set on error.
 */
static rd_kafka_conf_t *
make_conf(const char *const *defaults, const char *brokers, const char *client_id,
		  int nprops, char **keys, char **values, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	for (int i = 0; defaults != NULL && defaults[i] != NULL; i += 2)
		if (!conf_set(conf, defaults[i], defaults[i + 1], errbuf, errlen))
			goto fail;
	for (int i = 0; i < nprops; i++)
		if (!conf_set(conf, keys[i], values[i], errbuf, errlen))
			goto fail;
	if (!conf_set(conf, "bootstrap.servers", brokers, errbuf, errlen) ||
		!conf_set(conf, "client.id", client_id, errbuf, errlen) ||
		/* Errors and warnings only: info-level chatter is not for the server log. */
		!conf_set(conf, "log_level", "4", errbuf, errlen))
		goto fail;
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	return conf;

fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

rd_kafka_t *
ads_kafka_producer(const char *brokers, const char *transactional_id,
				   const char *transaction_timeout_ms, const char *client_id,
				   int nprops, char **keys, char **values, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = make_conf(NULL, brokers, client_id, nprops, keys, values, errbuf, errlen);
	rd_kafka_t *rk;

	if (conf == NULL)
		return NULL;
	/* Transactions imply idempotence and acks=all. */
	if (!conf_set(conf, "transactional.id", transactional_id, errbuf, errlen) ||
		!conf_set(conf, "enable.idempotence", "true", errbuf, errlen) ||
		!conf_set(conf, "transaction.timeout.ms", transaction_timeout_ms, errbuf, errlen) ||
		/* The Java clients' partitioner, so other producers of a key agree. */
		!conf_set(conf, "partitioner", "murmur2_random", errbuf, errlen) ||
		!conf_set(conf, "linger.ms", "5", errbuf, errlen))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
	if (rk == NULL)
		rd_kafka_conf_destroy(conf);
	return rk;
}

AdsKafka *
ads_kafka_open(const char *brokers, const char *group_id, const char *client_id,
			   int nprops, char **keys, char **values,
			   char *errbuf, size_t errlen)
{
	/*
	 * Prefetch deeply: while a batch is written, librdkafka keeps fetching,
	 * so that the next batch is already local (librdkafka's defaults let a
	 * worker of 50,000-message batches wait for the broker about half the
	 * time).  Bounded by the 256 MiB.
	 */
	static const char *const consumer_defaults[] = {
		"queued.min.messages", "1000000",
		"queued.max.messages.kbytes", "262144",
		NULL
	};
	rd_kafka_conf_t *conf = make_conf(consumer_defaults, brokers, client_id, nprops, keys, values,
									  errbuf, errlen);
	AdsKafka   *k;
	int			flags;

	if (conf == NULL)
		return NULL;
	if (!conf_set(conf, "group.id", group_id, errbuf, errlen) ||
		!conf_set(conf, "enable.auto.commit", "false", errbuf, errlen) ||
		!conf_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) ||
		!conf_set(conf, "isolation.level", "read_committed", errbuf, errlen) ||
		/* Only reached when a stored offset fell out of retention. */
		!conf_set(conf, "auto.offset.reset", "earliest", errbuf, errlen) ||
		!conf_set(conf, "enable.partition.eof", "false", errbuf, errlen))
		goto fail;

	k = palloc0(sizeof(AdsKafka));
	k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
	if (k->rk == NULL)
		goto fail;				/* rd_kafka_new takes conf only on success */
	conf = NULL;

	/* Serve everything (errors, commits) from the one consumer queue. */
	rd_kafka_poll_set_consumer(k->rk);
	k->queue = rd_kafka_queue_get_consumer(k->rk);

	/*
	 * librdkafka writes a byte to this pipe when the queue becomes
	 * non-empty, so the worker can wait on its latch and the pipe together
	 * and answer signals at once.
	 */
	if (pipe(k->wakeup_fd) != 0)
	{
		snprintf(errbuf, errlen, "could not create pipe: %s", strerror(errno));
		rd_kafka_destroy(k->rk);
		return NULL;
	}
	for (int i = 0; i < 2; i++)
	{
		flags = fcntl(k->wakeup_fd[i], F_GETFL);
		fcntl(k->wakeup_fd[i], F_SETFL, flags | O_NONBLOCK);
		fcntl(k->wakeup_fd[i], F_SETFD, FD_CLOEXEC);
	}
	rd_kafka_queue_io_event_enable(k->queue, k->wakeup_fd[1], "1", 1);
	return k;

fail:
	if (conf)
		rd_kafka_conf_destroy(conf);
	return NULL;
}

void
ads_kafka_clear_wakeup(AdsKafka *k)
{
	char		buf[256];

	while (read(k->wakeup_fd[0], buf, sizeof(buf)) > 0)
		;
}

int
ads_kafka_partition_count(AdsKafka *k, const char *topic, int timeout_ms)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, topic, NULL);
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;
	int			count = -1;

	if (rkt == NULL)
		return -1;
	err = rd_kafka_metadata(k->rk, 0, rkt, &md, timeout_ms);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			count = md->topics[0].partition_cnt;
		else if (md->topic_cnt == 1)
			ring_push(3, "metadata for topic %s: %s", topic,
					  rd_kafka_err2str(md->topics[0].err));
		rd_kafka_metadata_destroy(md);
	}
	rd_kafka_topic_destroy(rkt);
	return count;
}
