/*
 * node_watch.c
 *     Several nodes (PostgreSQL servers) on one topic, as a consumer worker
 *     sees them: overlap detection through the Kafka group's commits, and
 *     the messages that break the co-partitioning contract
 *     (docs/deployment.md, "Several nodes on one topic").
 *
 * Overlap: nodes split a topic with their sources' "partitions" option, and
 * one partition consumed by two of them would be counted by both.  Every
 * commit a worker makes to its source's Kafka consumer group (for lag
 * monitors) carries its node's tag, "adstream node <name> <origin>", as
 * metadata.  Reading the group's committed offsets back, a partition is
 * being consumed by another node now when its commit carries that node's
 * tag after Kafka has shown our own, or when two readings show that node's
 * commits at different offsets (it is moving on; needed when its commits
 * always land just after ours).  A previous owner's last commit (a
 * partition handed over) does neither: it stays where it was, and our first
 * commit overwrites it.  Such a partition stops here, with an error naming
 * the other node in source_status.  This node then goes on committing the
 * partition's stored offset under its tag at every check, so that the other
 * node also sees it after its own and stops the partition too, whichever of
 * the two noticed first.  Detection needs the nodes to share the consumer
 * group (the "group_id" option, by default adstream.<database>.<source>).
 *
 * A partition handed over by a node (export_partitions, import_partitions)
 * may see that node's last commits arrive late (librdkafka retries a commit
 * after a broker outage) or again (an old worker of it, stuck in a fenced
 * batch, stopping "our" partition).  They carry offsets at or below the
 * handed-over one, which is at or below where this node took the
 * partition: from that node, at or below our first stored offset seen
 * here, a commit is a previous owner's.  Above it, that node consumes the
 * partition again, and it stops here as any overlap.
 *
 * The contract: where nodes split a topic, the copies of an event and a
 * user's clicks and orders must land on one node, so producers key both
 * topics by user with Kafka's default partitioner.  What a node can count
 * of a broken contract: valid messages without a key, or on another
 * partition than their key's.
 */
#include "node_watch.h"

#include <stdlib.h>

#define TAG_PREFIX "adstream node "
#define TAG_PREFIX_LEN 14
#define COMMITTED_TIMEOUT_MS 250

/*
 * Kafka's default partitioner: murmur2 of the key, as the Java clients
 * compute it (librdkafka's murmur2_random for keyed messages).
 */
static uint32
kafka_murmur2(const void *key, size_t len)
{
	const unsigned char *data = key;
	const uint32 m = 0x5bd1e995;
	uint32		h = 0x9747b28c ^ (uint32) len;
	size_t		i;

	for (i = 0; i + 4 <= len; i += 4)
	{
		uint32		k = (uint32) data[i] | (uint32) data[i + 1] << 8 |
			(uint32) data[i + 2] << 16 | (uint32) data[i + 3] << 24;

		k *= m;
		k ^= k >> 24;
		k *= m;
		h *= m;
		h ^= k;
	}
	switch (len & 3)
	{
		case 3:
			h ^= (uint32) data[i + 2] << 16;
			/* FALLTHROUGH */
		case 2:
			h ^= (uint32) data[i + 1] << 8;
			/* FALLTHROUGH */
		case 1:
			h ^= (uint32) data[i];
			h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return h;
}

void
ads_node_tag_commit(const AdsNodeWatch *w, rd_kafka_topic_partition_t *tp)
{
	/* librdkafka frees it with the list */
	tp->metadata_size = strlen(w->tag);
	tp->metadata = malloc(tp->metadata_size);
	if (tp->metadata == NULL)
		tp->metadata_size = 0;
	else
		memcpy(tp->metadata, w->tag, tp->metadata_size);
}

void
ads_node_note_message(AdsNodeWatch *w, const rd_kafka_message_t *rkm)
{
	if (!w->check_contract || w->topic_partitions <= 0)
		return;
	if (rkm->key == NULL || rkm->key_len == 0 ||
		(int) ((kafka_murmur2(rkm->key, rkm->key_len) & 0x7fffffff) % (uint32) w->topic_partitions)
		!= rkm->partition)
	{
		w->misplaced++;
		w->misplaced_example = rkm->partition;
	}
}

static AdsNodePartition *
find(const AdsNodeWatch *w, int32 partition)
{
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].partition == partition)
			return (AdsNodePartition *) &w->parts[i];
	return NULL;
}

bool
ads_node_stopped(const AdsNodeWatch *w, int32 partition)
{
	AdsNodePartition *np = find(w, partition);

	return np != NULL && np->stopped;
}

/* Whether the tag is that of the node that handed the partition over. */
static bool
handed_from(const AdsNodeWatch *w, int32 partition, const void *meta, size_t len)
{
	for (int i = 0; i < w->nhanded; i++)
		if (w->handed_parts[i] == partition)
		{
			size_t		plen = strlen(w->handed_from[i]);

			return len > plen && memcmp(meta, w->handed_from[i], plen) == 0;
		}
	return false;
}

/* Reported with a WARNING when there are new ones, and in source_status. */
static void
report_contract(AdsNodeWatch *w, AdsWorkerSlot *slot)
{
	char		error[ADS_ERROR_LEN];

	if (w->misplaced == 0)
		return;
	snprintf(error, sizeof(error),
			 "%lld valid messages without a key or not on their key's partition (e.g. %d): co-partitioning contract broken",
			 (long long) w->misplaced, w->misplaced_example);
	if (w->misplaced > w->misplaced_reported)
	{
		ereport(WARNING,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("adstream source \"%s\": %s", w->source, error),
				 errdetail("Where nodes split a topic, a duplicate on another node's partition is counted there too, and an order is credited only to clicks on its own node."),
				 errhint("Key ad events and orders by user, with the default partitioner, and give both topics the same partition count.")));
		w->misplaced_reported = w->misplaced;
	}
	ads_slot_set_error(slot, error);
}

/* Stopped partitions: claim them again, so that the other node stops too. */
static void
claim_stopped(AdsNodeWatch *w, rd_kafka_t *rk)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(w->nparts, 1));

	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].stopped && w->parts[i].committed >= 0)
		{
			rd_kafka_topic_partition_t *tp =
				rd_kafka_topic_partition_list_add(list, w->topic, w->parts[i].partition);

			tp->offset = w->parts[i].committed;
			ads_node_tag_commit(w, tp);
		}
	if (list->cnt > 0)
		(void) rd_kafka_commit(rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

int
ads_node_check(AdsNodeWatch *w, rd_kafka_t *rk, AdsWorkerSlot *slot,
			   const int32 *partitions, const int64 *committed, int n, int32 *stop)
{
	rd_kafka_topic_partition_list_t *list;
	size_t		taglen = strlen(w->tag);
	int			nstop = 0;
	char		error[ADS_ERROR_LEN] = "";

	report_contract(w, slot);
	claim_stopped(w, rk);
	if (n == 0)
		return 0;

	/* A broker that does not answer in time is asked again at the next check. */
	list = rd_kafka_topic_partition_list_new(n);
	for (int i = 0; i < n; i++)
		rd_kafka_topic_partition_list_add(list, w->topic, partitions[i]);
	if (rd_kafka_committed(rk, list, COMMITTED_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rd_kafka_topic_partition_list_destroy(list);
		return 0;
	}
	for (int k = 0; k < list->cnt; k++)
	{
		rd_kafka_topic_partition_t *tp = &list->elems[k];
		AdsNodePartition *np;
		bool		other;

		if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR || tp->metadata == NULL || tp->metadata_size == 0)
			continue;
		np = find(w, tp->partition);
		if (np == NULL)
		{
			if (w->nparts >= ADS_MAX_TOPIC_PARTITIONS_PER_WORKER)
				continue;
			np = &w->parts[w->nparts++];
			memset(np, 0, sizeof(*np));
			np->partition = tp->partition;
			np->other_offset = -1;
			np->start = -1;
			for (int i = 0; i < n; i++)
				if (partitions[i] == tp->partition)
					np->start = committed[i];
		}
		if (tp->metadata_size == taglen && memcmp(tp->metadata, w->tag, taglen) == 0)
		{
			np->own_seen = true;
			continue;
		}
		other = tp->metadata_size > TAG_PREFIX_LEN && memcmp(tp->metadata, TAG_PREFIX, TAG_PREFIX_LEN) == 0;
		if (!other)
			continue;
		if (np->start >= 0 && tp->offset <= np->start &&
			handed_from(w, tp->partition, tp->metadata, tp->metadata_size))
			continue;			/* the last commits of the node that handed it over */
		if (!np->own_seen && (np->other_offset < 0 || np->other_offset == tp->offset))
		{
			np->other_offset = tp->offset;	/* not yet: a previous owner's? */
			continue;
		}

		/* Another node consumes it now. */
		{
			int			len = Min((int) tp->metadata_size - TAG_PREFIX_LEN, (int) sizeof(np->other) - 1);

			memcpy(np->other, (char *) tp->metadata + TAG_PREFIX_LEN, len);
			np->other[len] = '\0';
		}
		np->stopped = true;
		np->committed = -1;
		for (int i = 0; i < n; i++)
			if (partitions[i] == tp->partition)
				np->committed = committed[i];
		stop[nstop++] = tp->partition;
		ereport(WARNING,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("adstream source \"%s\": partition %d of topic \"%s\" is also consumed by node %s",
						w->source, tp->partition, w->topic, np->other),
				 errdetail("That node committed offsets of the partition to Kafka group \"%s\" after this node; its events are counted on both.",
						   w->group_id),
				 errhint("This node stops the partition.  Give each node its own partitions (the source's \"partitions\" option), then resume the source with adstream.resume_source().")));
	}
	rd_kafka_topic_partition_list_destroy(list);

	/*
	 * The error stays as long as a partition is stopped: of the class a
	 * commit of the other partitions does not clear (a stopped partition
	 * ends only with this worker, when the source is resumed).
	 */
	for (int i = 0; i < w->nparts && error[0] == '\0'; i++)
		if (w->parts[i].stopped)
			snprintf(error, sizeof(error), "partition %d stopped: also consumed by node %s",
					 w->parts[i].partition, w->parts[i].other);
	if (error[0] != '\0')
		ads_slot_set_error_class(slot, ADS_ERRCLASS_SETUP, error);
	return nstop;
}
