/*
 * kafka_log.c
 *     The buffer through which librdkafka's threads hand log lines to the
 *     worker.
 *
 * librdkafka calls log and error callbacks from its own threads, where
 * ereport() must never run (it is not thread-safe and may longjmp).  The
 * callbacks only copy the text into a small mutex-protected ring; the
 * worker's loop drains it with ads_kafka_report().
 */
#include "kafka_log.h"

#include <pthread.h>

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
static bool all_brokers_down;	/* status (issue #14): seen since the last drain */

/* worker-thread only: suppression of identical repeated lines */
static char last_reported[LINE_LEN];
static TimestampTz last_reported_at;
static int	repeats_suppressed;

void
ads_kafka_log_push(int level, const char *fmt, const char *a, const char *b)
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
	ads_kafka_log_push(level, "%s: %s", fac, buf);
}

static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
	{
		pthread_mutex_lock(&ring_lock);
		all_brokers_down = true;
		pthread_mutex_unlock(&ring_lock);
	}
	ads_kafka_log_push(3, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}

void
ads_kafka_log_install(rd_kafka_conf_t *conf)
{
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
}

void
ads_kafka_report(AdsWorkerSlot *slot, const char *kind, const char *name)
{
	bool		down;

	/* Status (issue #14): the client says no broker answers. */
	pthread_mutex_lock(&ring_lock);
	down = all_brokers_down;
	all_brokers_down = false;
	pthread_mutex_unlock(&ring_lock);
	if (down)
		ads_slot_set_connected(slot, false);

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
			ads_slot_set_error_class(slot, ADS_ERRCLASS_KAFKA, line.text);

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

/*
 * Status (issue #14): whether a broker answers a metadata request within
 * timeout_ms (on the worker's thread; blocks at most that long).  A client
 * learns that brokers are down from librdkafka, but nothing tells it that
 * they are back while it has nothing to send: an idle worker asks.
 */
bool
ads_kafka_ping(rd_kafka_t *rk, int timeout_ms)
{
	const struct rd_kafka_metadata *md;

	if (rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return false;
	rd_kafka_metadata_destroy(md);
	return true;
}
