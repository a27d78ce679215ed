/*
 * kafka_producer.h
 *     The transactional librdkafka producer of a publisher (src/kafka_producer.c).
 */
#ifndef ADSTREAM_KAFKA_PRODUCER_H
#define ADSTREAM_KAFKA_PRODUCER_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "kafka_conf.h"

/* Its configuration; NULL with errbuf set when a property is refused. */
extern rd_kafka_conf_t *ads_kafka_producer_conf(const char *brokers, const char *transactional_id,
												const char *transaction_timeout_ms, const char *client_id,
												const AdsKafkaProps *props, char *errbuf, size_t errlen);
/* A transactional, idempotent producer; NULL with errbuf set on error. */
extern rd_kafka_t *ads_kafka_producer_open(const char *brokers, const char *transactional_id,
										   const char *transaction_timeout_ms, const char *client_id,
										   const AdsKafkaProps *props, char *errbuf, size_t errlen);

#endif							/* ADSTREAM_KAFKA_PRODUCER_H */
