/*
 * kafka_consumer.h
 *     The librdkafka consumer of a consumer worker (src/kafka_consumer.c).
 */
#ifndef ADSTREAM_KAFKA_CONSUMER_H
#define ADSTREAM_KAFKA_CONSUMER_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "kafka_conf.h"

typedef struct AdsKafkaConsumer
{
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;	/* the consumer queue; all events arrive here */
	int			wakeup_fd[2];	/* [0] becomes readable when queue fills */
} AdsKafkaConsumer;

/*
 * The configuration of one of a source's nworkers consumers; NULL with
 * errbuf set when a property is refused.
 */
extern rd_kafka_conf_t *ads_kafka_consumer_conf(const char *brokers, const char *group_id,
												const char *client_id, const AdsKafkaProps *props,
												int nworkers, char *errbuf, size_t errlen);
/* NULL with errbuf set when librdkafka rejects the configuration. */
extern AdsKafkaConsumer *ads_kafka_consumer_open(const char *brokers, const char *group_id,
												 const char *client_id, const AdsKafkaProps *props,
												 int nworkers, char *errbuf, size_t errlen);
extern void ads_kafka_consumer_clear_wakeup(AdsKafkaConsumer *k);
/*
 * Partition count of topic, or < 0 when metadata is not available yet:
 * -1 when a broker answered (the topic is missing, say), -2 when none did.
 */
extern int	ads_kafka_partition_count(AdsKafkaConsumer *k, const char *topic, int timeout_ms);

#endif							/* ADSTREAM_KAFKA_CONSUMER_H */
