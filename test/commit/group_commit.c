/*-------------------------------------------------------------------------
 *
 * group_commit.c
 *	  Commit one partition's offset, with metadata, to a Kafka consumer
 *	  group, as another node's consumer would.
 *
 * adstream's consumers tag their commits to a source's group with their
 * node ("adstream node <name> <origin>") and read the group back to see
 * another node on their partitions (src/node_watch.c).  Tests use this to
 * play a node's late commit after a partition handoff, or a node that
 * consumes a partition again.
 *
 * Usage:
 *	  adstream-group-commit --brokers B --group G --topic T --partition P
 *	                        --offset O --metadata M
 * Exits 0 once the broker has acknowledged the commit.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

static void
usage(void)
{
	fprintf(stderr, "usage: adstream-group-commit --brokers B --group G --topic T --partition P "
			"--offset O --metadata M\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *brokers = NULL,
			   *group = NULL,
			   *topic = NULL,
			   *metadata = NULL;
	long		partition = -1;
	long long	offset = -1;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_topic_partition_t *tp;
	rd_kafka_resp_err_t err;

	for (int i = 1; i + 1 < argc; i += 2)
	{
		if (strcmp(argv[i], "--brokers") == 0)
			brokers = argv[i + 1];
		else if (strcmp(argv[i], "--group") == 0)
			group = argv[i + 1];
		else if (strcmp(argv[i], "--topic") == 0)
			topic = argv[i + 1];
		else if (strcmp(argv[i], "--partition") == 0)
			partition = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--offset") == 0)
			offset = strtoll(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--metadata") == 0)
			metadata = argv[i + 1];
		else
			usage();
	}
	if (!brokers || !group || !topic || !metadata || partition < 0 || offset < 0)
		usage();

	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "adstream-group-commit: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "adstream-group-commit: %s\n", errstr);
		return 1;
	}
	list = rd_kafka_topic_partition_list_new(1);
	tp = rd_kafka_topic_partition_list_add(list, topic, (int32_t) partition);
	tp->offset = offset;
	tp->metadata_size = strlen(metadata);
	tp->metadata = malloc(tp->metadata_size);	/* freed with the list */
	memcpy(tp->metadata, metadata, tp->metadata_size);
	err = rd_kafka_commit(rk, list, 0);			/* synchronous */
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && list->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		err = list->elems[0].err;
	rd_kafka_topic_partition_list_destroy(list);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		fprintf(stderr, "adstream-group-commit: %s\n", rd_kafka_err2str(err));
		return 1;
	}
	return 0;
}
