/*
 * kafka_producer.c
 *     The transactional producer with which a publisher sends a sink's
 *     upsert records.
 */
#include "kafka_producer.h"

/*
 * The whole configuration of a publisher's producer (also what create_sink
 * and alter_sink build a client from, to validate a sink's options).
 */
rd_kafka_conf_t *
ads_kafka_producer_conf(const char *brokers, const char *transactional_id,
						const char *transaction_timeout_ms, const char *client_id,
						const AdsKafkaProps *props, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = ads_kafka_conf(NULL, brokers, client_id, props, errbuf, errlen);

	if (conf == NULL)
		return NULL;
	/* Transactions imply idempotence and acks=all. */
	if (!ads_kafka_conf_set(conf, "transactional.id", transactional_id, errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "enable.idempotence", "true", errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "transaction.timeout.ms", transaction_timeout_ms, errbuf, errlen) ||
		/* The Java clients' partitioner, so other producers of a key agree. */
		!ads_kafka_conf_set(conf, "partitioner", "murmur2_random", errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "linger.ms", "5", errbuf, errlen))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

rd_kafka_t *
ads_kafka_producer_open(const char *brokers, const char *transactional_id,
						const char *transaction_timeout_ms, const char *client_id,
						const AdsKafkaProps *props, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = ads_kafka_producer_conf(brokers, transactional_id, transaction_timeout_ms,
													client_id, props, errbuf, errlen);
	rd_kafka_t *rk;

	if (conf == NULL)
		return NULL;
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
	if (rk == NULL)
		rd_kafka_conf_destroy(conf);
	return rk;
}
