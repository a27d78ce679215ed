/*
 * kafka_consumer.c
 *     The librdkafka consumer of a consumer worker, and the wake-up pipe
 *     that lets the worker sleep on its latch and on Kafka at once.
 */
#include "kafka_consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "kafka_log.h"
#include "kafka_prefetch.h"

/*
 * The whole configuration of a consumer: our defaults, the user's
 * properties, and the settings adstream owns.  Also what create_source and
 * alter_source build a client from, to validate a source's options
 * (sql_kafka.c).
 */
rd_kafka_conf_t *
ads_kafka_consumer_conf(const char *brokers, const char *group_id, const char *client_id,
						const AdsKafkaProps *props, int nworkers, char *errbuf, size_t errlen)
{
	/*
	 * Prefetch deeply: while a batch is written, librdkafka keeps fetching,
	 * so that the next batch is already local (librdkafka's defaults let a
	 * worker of 50,000-message batches wait for the broker about half the
	 * time).  The bytes are a budget per source on this node, shared by its
	 * workers: a worker's queue must hold a few fetch rounds of the
	 * partitions it reads (a message set each), and the partitions are
	 * shared among the workers.  Every byte of the queue is memory the
	 * worker touches, so a deeper one than that only costs CPU
	 * (docs/performance.md, "Memory: the kernel zeroing pages").
	 */
	char		kbytes[16];
	const char *const consumer_defaults[] = {
		"queued.min.messages", "1000000",
		"queued.max.messages.kbytes", kbytes,
		NULL
	};

	rd_kafka_conf_t *conf;

	snprintf(kbytes, sizeof(kbytes), "%d", ads_prefetch_kb(nworkers));
	conf = ads_kafka_conf(consumer_defaults, brokers, client_id, props, errbuf, errlen);

	if (conf == NULL)
		return NULL;
	if (!ads_kafka_conf_set(conf, "group.id", group_id, errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "enable.auto.commit", "false", errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "isolation.level", "read_committed", errbuf, errlen) ||
		/*
		 * Never move silently: a stored offset that is out of range (trimmed
		 * by retention, or beyond a re-created topic's end) comes to the
		 * worker as an error, and the worker records the gap with the move.
		 */
		!ads_kafka_conf_set(conf, "auto.offset.reset", "error", errbuf, errlen) ||
		!ads_kafka_conf_set(conf, "enable.partition.eof", "false", errbuf, errlen))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

AdsKafkaConsumer *
ads_kafka_consumer_open(const char *brokers, const char *group_id, const char *client_id,
						const AdsKafkaProps *props, int nworkers, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = ads_kafka_consumer_conf(brokers, group_id, client_id, props, nworkers,
													errbuf, errlen);
	AdsKafkaConsumer *k;
	int			flags;

	if (conf == NULL)
		return NULL;

	k = palloc0(sizeof(AdsKafkaConsumer));
	k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
	if (k->rk == NULL)
		goto fail;				/* rd_kafka_new takes conf only on success */
	conf = NULL;

	/* Serve everything (errors, commits) from the one consumer queue. */
	rd_kafka_poll_set_consumer(k->rk);
	k->queue = rd_kafka_queue_get_consumer(k->rk);

	/*
	 * librdkafka writes a byte to this pipe when the queue becomes
	 * non-empty, so the worker can wait on its latch and the pipe together
	 * and answer signals at once.
	 */
	if (pipe(k->wakeup_fd) != 0)
	{
		snprintf(errbuf, errlen, "could not create pipe: %s", strerror(errno));
		rd_kafka_destroy(k->rk);
		return NULL;
	}
	for (int i = 0; i < 2; i++)
	{
		flags = fcntl(k->wakeup_fd[i], F_GETFL);
		fcntl(k->wakeup_fd[i], F_SETFL, flags | O_NONBLOCK);
		fcntl(k->wakeup_fd[i], F_SETFD, FD_CLOEXEC);
	}
	rd_kafka_queue_io_event_enable(k->queue, k->wakeup_fd[1], "1", 1);
	return k;

fail:
	if (conf)
		rd_kafka_conf_destroy(conf);
	return NULL;
}

void
ads_kafka_consumer_clear_wakeup(AdsKafkaConsumer *k)
{
	char		buf[256];

	while (read(k->wakeup_fd[0], buf, sizeof(buf)) > 0)
		;
}

int
ads_kafka_partition_count(AdsKafkaConsumer *k, const char *topic, int timeout_ms)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, topic, NULL);
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;
	int			count = -1;

	if (rkt == NULL)
		return -1;
	err = rd_kafka_metadata(k->rk, 0, rkt, &md, timeout_ms);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		count = -2;				/* status (issue #14): no broker answered */
	else
	{
		if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			count = md->topics[0].partition_cnt;
		else if (md->topic_cnt == 1)
			ads_kafka_log_push(3, "metadata for topic %s: %s", topic,
							   rd_kafka_err2str(md->topics[0].err));
		rd_kafka_metadata_destroy(md);
	}
	rd_kafka_topic_destroy(rkt);
	return count;
}
