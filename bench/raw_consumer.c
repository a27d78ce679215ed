/*
 * raw_consumer.c
 *	  The ceiling of the benchmark: a tight librdkafka consumer that only
 *	  reads.  It asks for each partition's high watermark, assigns every
 *	  partition from the beginning, receives messages in batches until each
 *	  partition has delivered its message before the high watermark (or
 *	  reported its end), and prints how many messages and bytes it got and
 *	  how long that took, from the assignment to the last message.
 *
 *	  With --timestamps FILE it also writes one line "PARTITION OFFSET
 *	  TIMESTAMP_MS" per message (the Kafka message timestamp, CreateTime as
 *	  set by the producer), which the freshness measurement joins with the
 *	  committed offsets.  That mode is not timed for the ceiling.
 *
 *	  raw_consumer --brokers B --topic T [--timestamps FILE]
 *
 *	  Output, one line on stdout:
 *	  msgs=N bytes=B seconds=S msgs_per_s=R librdkafka=VERSION
 */
#define _POSIX_C_SOURCE 200809L

#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "bench_util.h"

const char *const bench_progname = "raw_consumer";

#define BATCH 10000

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"topic", required_argument, NULL, 't'},
		{"timestamps", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0}
	};
	const char *brokers = NULL;
	const char *topic = NULL;
	const char *ts_path = NULL;
	FILE	   *ts_out = NULL;
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	rd_kafka_topic_partition_list_t *parts;
	rd_kafka_message_t **msgs;
	rd_kafka_resp_err_t err;
	char	   *at_end;
	int64_t    *high;
	int			nparts;
	int			ended = 0;
	int64_t		nmsgs = 0;
	int64_t		nbytes = 0;
	double		t0;
	double		t1;
	double		t10 = 0;
	double		t90 = 0;
	double		t_first = 0;
	int64_t		total = 0;
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'b':
				brokers = optarg;
				break;
			case 't':
				topic = optarg;
				break;
			case 's':
				ts_path = optarg;
				break;
			default:
				die("usage: raw_consumer --brokers B --topic T [--timestamps FILE]");
		}
	}
	if (brokers == NULL || topic == NULL)
		die("usage: raw_consumer --brokers B --topic T [--timestamps FILE]");
	if (ts_path != NULL && (ts_out = fopen(ts_path, "w")) == NULL)
		die("cannot open %s", ts_path);

	rk = bench_consumer(brokers, "adstream-bench-raw", 1);
	queue = rd_kafka_queue_get_consumer(rk);

	nparts = bench_partition_count(rk, topic);
	at_end = calloc((size_t) nparts, 1);
	high = calloc((size_t) nparts, sizeof(int64_t));
	msgs = malloc(sizeof(*msgs) * BATCH);
	if (at_end == NULL || high == NULL || msgs == NULL)
		die("out of memory");
	/* where each partition ends now: waiting for its EOF would add a fetch wait */
	for (int p = 0; p < nparts; p++)
	{
		int64_t		low;

		err = rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high[p], 10000);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			die("watermarks of partition %d: %s", p, rd_kafka_err2str(err));
		total += high[p] > low ? high[p] - low : 0;
		if (high[p] <= low)
		{
			at_end[p] = 1;
			ended++;
		}
	}
	parts = rd_kafka_topic_partition_list_new(nparts);
	for (int p = 0; p < nparts; p++)
		rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;

	t0 = mono_s();
	err = rd_kafka_assign(rk, parts);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("assign: %s", rd_kafka_err2str(err));

	while (ended < nparts)
	{
		ssize_t		n = rd_kafka_consume_batch_queue(queue, 1, msgs, BATCH);

		if (n < 0)
			die("consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
		for (ssize_t i = 0; i < n; i++)
		{
			rd_kafka_message_t *m = msgs[i];

			if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			{
				nmsgs++;
				nbytes += (int64_t) m->len;
				if (nmsgs == 1)
					t_first = mono_s();
				/* the sustained rate is taken between 10% and 90%, as for the consumers measured against it */
				if (nmsgs == total / 10)
					t10 = mono_s();
				if (nmsgs == total * 9 / 10)
					t90 = mono_s();
				if (ts_out != NULL)
					fprintf(ts_out, "%d %" PRId64 " %" PRId64 "\n", (int) m->partition,
							(int64_t) m->offset, (int64_t) rd_kafka_message_timestamp(m, NULL));
				if (m->offset + 1 >= high[m->partition] && !at_end[m->partition])
				{
					at_end[m->partition] = 1;
					ended++;
				}
			}
			else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			{
				if (m->partition >= 0 && m->partition < nparts && !at_end[m->partition])
				{
					at_end[m->partition] = 1;
					ended++;
				}
			}
			else
				die("partition %d: %s", (int) m->partition, rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
		}
	}
	t1 = mono_s();

	if (ts_out != NULL && fclose(ts_out) != 0)
		die("writing %s failed", ts_path);
	printf("first_s=%.4f t10_s=%.4f t90_s=%.4f ", t_first - t0, t10 - t0, t90 - t0);
	printf("msgs=%" PRId64 " bytes=%" PRId64 " seconds=%.4f msgs_per_s=%.0f sustained_per_s=%.0f librdkafka=%s\n",
		   nmsgs, nbytes, t1 - t0, (double) nmsgs / (t1 - t0),
		   t90 > t10 ? (double) (total * 9 / 10 - total / 10) / (t90 - t10) : 0.0, rd_kafka_version_str());

	rd_kafka_topic_partition_list_destroy(parts);
	rd_kafka_queue_destroy(queue);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	free(at_end);
	free(high);
	free(msgs);
	return 0;
}
