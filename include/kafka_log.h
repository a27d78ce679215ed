/*
 * kafka_log.h
 *     librdkafka's log and error callbacks, which run on librdkafka's own
 *     threads, and the worker-side drain that reports what they buffered
 *     (src/kafka_log.c).
 */
#ifndef ADSTREAM_KAFKA_LOG_H
#define ADSTREAM_KAFKA_LOG_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "registry.h"

/* Route a configuration's log and error callbacks into the buffer. */
extern void ads_kafka_log_install(rd_kafka_conf_t *conf);

/* Buffer a line (syslog level; <= 3 is an error).  Safe on any thread. */
extern void ads_kafka_log_push(int level, const char *fmt, const char *a, const char *b);

/*
 * Emit the buffered lines, on the worker's own thread: errors also become
 * the slot's last_error.  kind and name say whose client it is
 * ("source", "sink").
 */
extern void ads_kafka_report(AdsWorkerSlot *slot, const char *kind, const char *name);

/* Status (issue #14): does a broker answer a metadata request within timeout_ms? */
extern bool ads_kafka_ping(rd_kafka_t *rk, int timeout_ms);

#endif							/* ADSTREAM_KAFKA_LOG_H */
