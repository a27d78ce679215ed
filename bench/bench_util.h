/*
 * bench_util.h
 *	  The few helpers the benchmark's programs share: fatal errors, clocks,
 *	  and (for the Kafka clients) setting a librdkafka property or dying, a
 *	  consumer configured as adstream's, a topic's partition count.
 *	  Each program defines bench_progname before using die().
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kafka_prefetch.h"

extern const char *const bench_progname;

static void
die(const char *fmt, ...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "%s: ", bench_progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* seconds on the monotonic clock */
static inline double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* microseconds of wall-clock time since the epoch */
static inline int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#ifdef RD_KAFKA_VERSION
static inline void
set_conf(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		err[512];

	if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
		die("%s=%s: %s", key, value, err);
}

/*
 * A consumer as each of a source's nworkers workers reads: read_committed,
 * no offset commits, explicit assignment (the caller's), adstream's
 * prefetch (include/kafka_prefetch.h), and fetch.wait.max.ms = 10 (see
 * KAFKA_OPTS in measure.sh: the mock broker answers an idle fetch only when
 * that wait runs out).
 */
static inline rd_kafka_t *
bench_consumer(const char *brokers, const char *group_id, int nworkers)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	char		errstr[512];
	char		kbytes[16];

	set_conf(conf, "bootstrap.servers", brokers);
	set_conf(conf, "group.id", group_id);
	set_conf(conf, "enable.auto.commit", "false");
	set_conf(conf, "enable.auto.offset.store", "false");
	set_conf(conf, "isolation.level", "read_committed");
	set_conf(conf, "enable.partition.eof", "true");
	set_conf(conf, "log_level", "3");
	set_conf(conf, "queued.min.messages", "1000000");
	snprintf(kbytes, sizeof(kbytes), "%d", ads_prefetch_kb(nworkers));
	set_conf(conf, "queued.max.messages.kbytes", kbytes);
	set_conf(conf, "fetch.wait.max.ms", "10");
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		die("rd_kafka_new: %s", errstr);
	rd_kafka_poll_set_consumer(rk);
	return rk;
}

/* Number of partitions of the topic, from the broker's metadata. */
static inline int
bench_partition_count(rd_kafka_t *rk, const char *topic)
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
		die("topic %s: %s", topic,
			md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : "not found");
	n = md->topics[0].partition_cnt;
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}
#endif

#endif							/* BENCH_UTIL_H */
