/*
 * sql_kafka.c
 *     librdkafka configuration checked from SQL: one property at a time
 *     (_kafka_property_error) and the whole client a source or sink would
 *     run with (_kafka_check), so that create_* and alter_* refuse what a
 *     worker would fail on.
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "kafka_consumer.h"
#include "kafka_producer.h"
#include "sql_array.h"

/*
 * Returns NULL when librdkafka accepts the property, else its message.  Used
 * by create_source so that a typo fails at once, with a hint, rather than in
 * a worker's log.
 */
PG_FUNCTION_INFO_V1(adstream_kafka_property_error);
Datum
adstream_kafka_property_error(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *value = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	rd_kafka_conf_res_t res;

	res = rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr));
	rd_kafka_conf_destroy(conf);
	if (res == RD_KAFKA_CONF_OK)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(errstr));
}

/* ---------------------------------------------------------------------
 * alter_source / alter_sink (issue #14): the whole librdkafka
 * configuration checked by building the client
 * ---------------------------------------------------------------------
 */

/*
 * adstream._kafka_check(role, brokers, keys, values, topic, timeout_ms):
 * builds the very configuration a consumer ('source') or a publisher
 * ('sink') would run with, and creates the client from it (rd_kafka_new,
 * then rd_kafka_destroy), so that what only rd_kafka_new checks (a SASL
 * mechanism without its credentials, Kerberos without kinit, an unreadable
 * CA file) is refused by the SQL call rather than in a worker's restart
 * loop.  Returns librdkafka's error (NULL when the client could be built),
 * and, with timeout_ms > 0, the topic's partition count and the cluster's
 * id when the brokers answer within it (NULL otherwise).  librdkafka's
 * threads only fill the log ring (kafka_log.c), never ereport; they are
 * gone when this returns.
 */
PG_FUNCTION_INFO_V1(adstream_kafka_check);
Datum
adstream_kafka_check(PG_FUNCTION_ARGS)
{
	char	   *role = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *brokers = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *topic = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	int			timeout_ms = PG_ARGISNULL(5) ? 0 : Min(PG_GETARG_INT32(5), 10000);
	bool		consumer = (role != NULL && strcmp(role, "source") == 0);
	AdsKafkaProps props = {0};
	char	  **values;
	char		errbuf[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk = NULL;
	TupleDesc	tupdesc;
	Datum		result[3] = {0};
	bool		nulls[3] = {true, true, true};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (role == NULL || brokers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("adstream._kafka_check: role and brokers must not be null")));
	if (!PG_ARGISNULL(2) && !PG_ARGISNULL(3))
	{
		props.n = ads_text_array_cstrings(PG_GETARG_ARRAYTYPE_P(2), &props.keys);
		if (ads_text_array_cstrings(PG_GETARG_ARRAYTYPE_P(3), &values) != props.n)
			elog(ERROR, "adstream._kafka_check: as many values as keys expected");
		props.values = values;
	}

	errbuf[0] = '\0';
	if (consumer)
		conf = ads_kafka_consumer_conf(brokers, "adstream.validate", "adstream-validate", &props, 1,
									   errbuf, sizeof(errbuf));
	else
		/* transaction.timeout.ms as the publisher sets it (publisher.c) */
		conf = ads_kafka_producer_conf(brokers, "adstream.validate", "10000", "adstream-validate",
									   &props, errbuf, sizeof(errbuf));
	if (conf != NULL)
	{
		rk = rd_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, errbuf, sizeof(errbuf));
		if (rk == NULL)
			rd_kafka_conf_destroy(conf);	/* rd_kafka_new takes it only on success */
	}
	if (rk == NULL)
	{
		result[0] = CStringGetTextDatum(errbuf[0] ? errbuf : "librdkafka refused the configuration");
		nulls[0] = false;
	}
	else
	{
		if (timeout_ms > 0 && topic != NULL && consumer)
		{
			AdsKafkaConsumer k = {.rk = rk};
			int			count = ads_kafka_partition_count(&k, topic, timeout_ms);

			if (count > 0)
			{
				result[1] = Int32GetDatum(count);
				nulls[1] = false;
			}
		}
		if (timeout_ms > 0)
		{
			char	   *id = rd_kafka_clusterid(rk, timeout_ms);

			if (id != NULL)
			{
				result[2] = CStringGetTextDatum(id);
				nulls[2] = false;
				rd_kafka_mem_free(rk, id);
			}
		}
		rd_kafka_destroy(rk);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, nulls)));
}
