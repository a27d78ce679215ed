/*
 * node_watch.h
 *     Several nodes on one topic, as a consumer worker sees them
 *     (src/node_watch.c): its commits to the Kafka group carry its node's
 *     tag, another node on its partitions is detected from them, and
 *     messages that break the co-partitioning contract are counted.
 */
#ifndef ADSTREAM_NODE_WATCH_H
#define ADSTREAM_NODE_WATCH_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "registry.h"

typedef struct AdsNodePartition
{
	int32		partition;
	bool		own_seen;		/* Kafka showed our own commit for it */
	int64		other_offset;	/* the last other node's commit seen, or -1 */
	int64		start;			/* our stored offset when first seen here, or -1 */
	bool		stopped;		/* another node consumes it too */
	int64		committed;		/* then: its stored offset, committed again */
	char		other[ADS_ERROR_LEN / 2];	/* that node's tag, after "adstream node " */
} AdsNodePartition;

typedef struct AdsNodeWatch
{
	const char *tag;			/* this node: "adstream node <name> <origin>" */
	const char *source;			/* for messages */
	const char *topic;
	const char *group_id;
	bool		check_contract; /* the source has a "partitions" option */
	int			topic_partitions;	/* the topic's partition count, once known */
	int64		misplaced;		/* valid messages not on their key's partition */
	int64		misplaced_reported;
	int32		misplaced_example;
	int			nparts;
	AdsNodePartition parts[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
	/* partitions handed over by another node, and its tag prefix */
	int			nhanded;
	const int32 *handed_parts;
	char	  **handed_from;
} AdsNodeWatch;

/* This node's tag as metadata of a commit (the list frees it). */
extern void ads_node_tag_commit(const AdsNodeWatch *w, rd_kafka_topic_partition_t *tp);

/* A valid message: count it if it is not on its key's partition. */
extern void ads_node_note_message(AdsNodeWatch *w, const rd_kafka_message_t *rkm);

/* Whether another node was found on the partition: it is not read here. */
extern bool ads_node_stopped(const AdsNodeWatch *w, int32 partition);

/*
 * Reads the group's commits of the partitions read here (partitions[],
 * with their stored offsets committed[]) and reports the contract; returns
 * how many partitions it stopped now, their numbers in stop[].
 */
extern int	ads_node_check(AdsNodeWatch *w, rd_kafka_t *rk, AdsWorkerSlot *slot,
						   const int32 *partitions, const int64 *committed, int n,
						   int32 *stop);

#endif							/* ADSTREAM_NODE_WATCH_H */
