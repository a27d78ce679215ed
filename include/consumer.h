/*
 * consumer.h
 *     State of one consumer worker, shared by its loop (consumer.c) and its
 *     batch transaction (batch.c).
 */
#ifndef ADSTREAM_CONSUMER_H
#define ADSTREAM_CONSUMER_H

#include "adstream.h"
#include "event_parse.h"
#include "kafka.h"

typedef enum AdsMsgStatus
{
	MSG_REJECTED,				/* dead letter; reason says why */
	MSG_DUPLICATE,				/* event id already counted */
	MSG_CANDIDATE,				/* valid, first in batch; dedup state decides */
	MSG_ACCEPTED				/* counted */
} AdsMsgStatus;

typedef struct AdsMsg
{
	rd_kafka_message_t *rkm;	/* held until the batch commits */
	int			part;			/* index into AdsConsumer.parts */
	AdsReason	parse_reason;	/* what the parser said */
	AdsReason	reason;			/* final reason when rejected */
	AdsMsgStatus status;
	char	   *detail;			/* parser detail, when rejected */
	void	   *dedup_entry;	/* its dedup index entry, once claimed */
	union
	{
		AdsEvent	ev;			/* kind 'ad_events' */
		AdsOrder	order;		/* kind 'orders' */
	};
} AdsMsg;

typedef struct AdsPart
{
	int32		partition;
	int64		committed;		/* next_offset stored in adstream.offsets; -1 if no row */
	int64		position;		/* next offset to take from Kafka; -1 = from the start */
	/* the current batch */
	bool		in_batch;
	int64		b_next;
	int64		b_accepted;
	int64		b_duplicates;
	int64		b_rejected;
	int64		b_max_ts_us;	/* INT64_MIN if no accepted event */
} AdsPart;

typedef struct AdsConsumer
{
	AdsWorkerArgs args;
	AdsWorkerSlot *slot;

	/* the source, as read at start */
	char	   *name;
	bool		is_orders;		/* kind 'orders', else 'ad_events' */
	char	   *brokers;
	char	   *topic;
	char	   *start_policy;
	char	   *group_id;
	int			nprops;
	char	  **prop_keys;
	char	  **prop_values;

	AdsKafka   *kafka;
	int			nparts;
	AdsPart		parts[ADS_MAX_PARTS_PER_WORKER];
	int		   *part_of;		/* partition number -> index into parts, or -1 */
	int			part_of_len;

	/* the batch being filled; everything in batch_ctx is freed per batch */
	MemoryContext batch_ctx;
	AdsMsg	   *msgs;
	int			nmsgs;
	int			msgs_cap;
	TimestampTz batch_started;

	/* hours of event time for which partitions are known to exist */
	struct hourset_hash *ensured;
	MemoryContext ensured_ctx;

	bool		fenced;			/* set when offsets moved under us */
	TransactionId claim_xid;	/* the batch transaction that claimed event ids */
} AdsConsumer;

/* batch.c */
extern void ads_batch_write(AdsConsumer *c);
extern void ads_batch_forget_partitions(AdsConsumer *c);
extern void ads_batch_settle(AdsConsumer *c, bool committed);
extern int	ads_attribute_orders(void);

static inline TimestampTz
ads_unix_us_to_timestamptz(int64 us)
{
	return (TimestampTz) (us - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY));
}

static inline int64
ads_timestamptz_to_unix_us(TimestampTz ts)
{
	return (int64) ts + ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

#endif
