/*
 * kafka.h
 *     librdkafka client of a consumer worker (src/kafka.c).
 */
#ifndef ADSTREAM_KAFKA_H
#define ADSTREAM_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "adstream.h"

typedef struct AdsKafka
{
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;	/* the consumer queue; all events arrive here */
	int			wakeup_fd[2];	/* [0] becomes readable when queue fills */
} AdsKafka;

/* NULL with errbuf set when librdkafka rejects the configuration. */
extern AdsKafka *ads_kafka_open(const char *brokers, const char *group_id,
								const char *client_id, int nprops,
								char **keys, char **values,
								char *errbuf, size_t errlen);
extern void ads_kafka_clear_wakeup(AdsKafka *k);
/* A transactional, idempotent producer; NULL with errbuf set on error. */
extern rd_kafka_t *ads_kafka_producer(const char *brokers, const char *transactional_id,
									  const char *transaction_timeout_ms, const char *client_id, int nprops, char **keys,
									  char **values, char *errbuf, size_t errlen);
/* Partition count of topic, or -1 when metadata is not available yet. */
extern int	ads_kafka_partition_count(AdsKafka *k, const char *topic, int timeout_ms);
/* Emit buffered librdkafka log lines; call from the worker's own thread. */
extern void ads_kafka_report(AdsWorkerSlot *slot, const char *kind, const char *name);

#endif
