/*
 * order_hold.h
 *     Orders read from Kafka and held, uncommitted, until the ad-events
 *     watermark passes them; per partition, in offset order.  See
 *     src/order_hold.c.
 */
#ifndef ADSTREAM_ORDER_HOLD_H
#define ADSTREAM_ORDER_HOLD_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "datatype/timestamp.h"
#include "event_parse.h"

typedef struct AdsHeldMsg
{
	rd_kafka_message_t *rkm;
	bool		is_order;		/* a valid order, parsed (else a dead letter to be) */
	AdsOrder	order;			/* if is_order */
	TimestampTz since;			/* when it was read */
} AdsHeldMsg;

typedef struct AdsHoldQueue
{
	int32		partition;
	int			head;			/* items[head .. head + n) */
	int			n;
	int			cap;
	AdsHeldMsg *items;
} AdsHoldQueue;

/* The hold of one worker: a queue for each partition that has held something. */
typedef struct AdsHold
{
	int			nqueues;
	int			capqueues;
	AdsHoldQueue *queues;
	int64		total;			/* messages held over all queues */
} AdsHold;

extern bool ads_hold_partition_held(const AdsHold *h, int32 partition);
/* order: the message parsed, or NULL if it is not a valid order */
extern void ads_hold_push(AdsHold *h, int32 partition, rd_kafka_message_t *rkm,
						  const AdsOrder *order, TimestampTz now);
/* The oldest message of queue q, or NULL; pop removes it (the caller owns it). */
extern const AdsHeldMsg *ads_hold_peek(const AdsHold *h, int q);
extern rd_kafka_message_t *ads_hold_pop(AdsHold *h, int q);
/* Destroy what partition's queue holds (every queue with partition < 0). */
extern void ads_hold_drop(AdsHold *h, int32 partition);

#endif
