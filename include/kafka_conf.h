/*
 * kafka_conf.h
 *     librdkafka configurations as adstream builds them for both of its
 *     clients (src/kafka_conf.c).
 */
#ifndef ADSTREAM_KAFKA_CONF_H
#define ADSTREAM_KAFKA_CONF_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

/* A source's or sink's kafka_options: librdkafka properties, as text. */
typedef struct AdsKafkaProps
{
	int			n;
	char	  **keys;
	char	  **values;
} AdsKafkaProps;

extern bool ads_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
							   char *errbuf, size_t errlen);

/*
 * A configuration with our defaults (key, value, ..., NULL), then the user's
 * properties, then the settings we manage (which therefore win), and the
 * log callbacks that only buffer.  NULL with errbuf set on error.
 */
extern rd_kafka_conf_t *ads_kafka_conf(const char *const *defaults, const char *brokers,
									   const char *client_id, const AdsKafkaProps *props,
									   char *errbuf, size_t errlen);

#endif							/* ADSTREAM_KAFKA_CONF_H */
