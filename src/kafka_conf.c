/*
 * kafka_conf.c
 *     librdkafka configurations: our defaults, the user's properties, and
 *     the settings adstream must own.
 */
#include "kafka_conf.h"

#include "kafka_log.h"

bool
ads_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
				   char *errbuf, size_t errlen)
{
	return rd_kafka_conf_set(conf, key, value, errbuf, errlen) == RD_KAFKA_CONF_OK;
}

rd_kafka_conf_t *
ads_kafka_conf(const char *const *defaults, const char *brokers, const char *client_id,
			   const AdsKafkaProps *props, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	for (int i = 0; defaults != NULL && defaults[i] != NULL; i += 2)
		if (!ads_kafka_conf_set(conf, defaults[i], defaults[i + 1], errbuf, errlen))
			goto fail;
	for (int i = 0; i < props->n; i++)
		if (!ads_kafka_conf_set(conf, props->keys[i], props->values[i], errbuf, errlen))
			goto fail;
	if (!ads_kafka_conf_set(conf, "bootstrap.servers", brokers, errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "client.id", client_id, errbuf, errlen) ||
		/* Errors and warnings only: info-level chatter is not for the server log. */
		!ads_kafka_conf_set(conf, "log_level", "4", errbuf, errlen))
		goto fail;
	ads_kafka_log_install(conf);
	return conf;

fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}
