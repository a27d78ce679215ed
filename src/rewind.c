/*
 * rewind.c
 *     The C helpers of adstream.rewind_source() (issue #14, section 4).
 *
 * Resolving a time to offsets asks the brokers (Kafka's offsets-for-times:
 * for each partition, the earliest offset whose message timestamp is at or
 * after the time) with a short-lived consumer client built in the calling
 * backend, exactly as the source's workers build theirs, and with a time
 * limit.  rewind_source() calls it before it changes anything: no lock is
 * held and no transaction id is taken while the brokers are asked.
 *
 * Forgetting the dedup ids of a window's hours (mode 'replace') is the
 * index's part of a replace; rewind_source() holds the expiry lock
 * exclusively and has deleted the same hours' dedup_log rows of the source.
 *
 * librdkafka's threads only fill the log ring (kafka_log.c), never ereport;
 * the client is destroyed before any error is raised here.
 */
#include "rewind.h"

#include <librdkafka/rdkafka.h>

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "dedup_index.h"
#include "event_time.h"
#include "kafka_consumer.h"
#include "sql_array.h"

#define MAX_TIMEOUT_MS 30000

/*
 * adstream._kafka_offsets_for_times(brokers, keys, values, topic,
 * partitions, time, timeout_ms) returns bigint[]: for each partition, the
 * earliest offset whose Kafka timestamp is at or after time, or the
 * partition's end when no message is (Kafka answers -1 then).
 */
PG_FUNCTION_INFO_V1(adstream_kafka_offsets_for_times);
Datum
adstream_kafka_offsets_for_times(PG_FUNCTION_ARGS)
{
	char	   *brokers;
	char	   *topic;
	AdsKafkaProps props = {0};
	char	  **values;
	Datum	   *pdatums;
	bool	   *pnulls;
	int			nparts;
	int64		ms;
	int			timeout_ms;
	char		errbuf[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;
	Datum	   *result;
	int			failed_partition = -1;
	rd_kafka_resp_err_t failed_err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (int i = 0; i < 7; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("adstream._kafka_offsets_for_times: arguments must not be null")));
	brokers = text_to_cstring(PG_GETARG_TEXT_PP(0));
	props.n = ads_text_array_cstrings(PG_GETARG_ARRAYTYPE_P(1), &props.keys);
	if (ads_text_array_cstrings(PG_GETARG_ARRAYTYPE_P(2), &values) != props.n)
		elog(ERROR, "adstream._kafka_offsets_for_times: as many values as keys expected");
	props.values = values;
	topic = text_to_cstring(PG_GETARG_TEXT_PP(3));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(4), INT4OID, 4, true, TYPALIGN_INT,
					  &pdatums, &pnulls, &nparts);
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(5)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a rewind's time must be finite")));
	ms = ads_floor_div(ads_timestamptz_to_unix_us(PG_GETARG_TIMESTAMPTZ(5)), 1000);
	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a rewind's time must not be before 1970"),
				 errhint("Kafka timestamps are milliseconds since the Unix epoch.")));
	timeout_ms = Max(100, Min(PG_GETARG_INT32(6), MAX_TIMEOUT_MS));

	errbuf[0] = '\0';
	conf = ads_kafka_consumer_conf(brokers, "adstream.rewind", "adstream-rewind", &props, 1,
								   errbuf, sizeof(errbuf));
	if (conf == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("librdkafka refuses the source's configuration: %s", errbuf),
				 errhint("Correct it with adstream.alter_source().")));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, sizeof(errbuf));
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("librdkafka refuses the source's configuration: %s", errbuf),
				 errhint("Correct it with adstream.alter_source().")));
	}

	list = rd_kafka_topic_partition_list_new(Max(nparts, 1));
	for (int i = 0; i < nparts; i++)
		rd_kafka_topic_partition_list_add(list, topic, DatumGetInt32(pdatums[i]))->offset = ms;
	err = nparts > 0 ? rd_kafka_offsets_for_times(rk, list, timeout_ms) : RD_KAFKA_RESP_ERR_NO_ERROR;

	result = palloc(sizeof(Datum) * Max(nparts, 1));
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		for (int i = 0; i < list->cnt && failed_partition < 0; i++)
		{
			rd_kafka_topic_partition_t *tp = &list->elems[i];
			int64		offset = tp->offset;

			if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			{
				failed_partition = tp->partition;
				failed_err = tp->err;
				break;
			}
			if (offset < 0)
			{
				/* No message at or after the time: the partition's end. */
				int64		lo,
							hi;

				failed_err = rd_kafka_query_watermark_offsets(rk, topic, tp->partition, &lo, &hi, timeout_ms);
				if (failed_err != RD_KAFKA_RESP_ERR_NO_ERROR)
				{
					failed_partition = tp->partition;
					break;
				}
				offset = hi;
			}
			result[i] = Int64GetDatum(offset);
		}
	rd_kafka_topic_partition_list_destroy(list);
	rd_kafka_destroy(rk);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the brokers of topic \"%s\" did not say which offsets the time falls on: %s",
						topic, rd_kafka_err2str(err)),
				 errdetail("Kafka's offsets-for-times was asked with a limit of %d ms.", timeout_ms),
				 errhint("Check that the brokers are reachable and try again, or rewind to offsets (to_offsets).")));
	if (failed_partition >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("partition %d of topic \"%s\": the brokers did not say which offset the time falls on: %s",
						failed_partition, topic, rd_kafka_err2str(failed_err)),
				 errhint("Check that the partition exists and its leader is reachable, and try again.")));
	PG_RETURN_ARRAYTYPE_P(construct_array(result, nparts, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * adstream._dedup_forget_hours(source_id, from, to): the dedup index forgets
 * the source's ids of the event-time hours in [from, to), which must be on
 * the hour.  Returns how many.
 */
PG_FUNCTION_INFO_V1(adstream_dedup_forget_hours);
Datum
adstream_dedup_forget_hours(PG_FUNCTION_ARGS)
{
	int32		source_id = PG_GETARG_INT32(0);
	int64		from_us = ads_timestamptz_to_unix_us(PG_GETARG_TIMESTAMPTZ(1));
	int64		to_us = ads_timestamptz_to_unix_us(PG_GETARG_TIMESTAMPTZ(2));
	int64		forgotten;

	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(1)) || TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(2)) ||
		ads_hour_start_us(from_us) != from_us || ads_hour_start_us(to_us) != to_us)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("adstream._dedup_forget_hours: bounds must be finite and on the hour")));
	forgotten = ads_dedup_forget_hours(source_id, ads_hour_number(from_us), ads_hour_number(to_us));
	if (forgotten < 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the dedup index is not ready"),
				 errdetail("It is rebuilt from adstream.dedup_log after a restart, by the first ad-events worker that starts."),
				 errhint("Try again once adstream.dedup_index_status() shows ready.")));
	PG_RETURN_INT64(forgotten);
}
