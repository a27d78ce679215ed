/*
 * order_hold.c
 *     The orders worker's hold: orders read from Kafka whose time the
 *     ad-events watermark has not passed yet, kept in the worker's memory
 *     instead of being stored waiting, so that each is written once,
 *     judged, when the watermark passes it (docs/attribution.md, "Orders
 *     held for the watermark").
 *
 * A queue per partition, in offset order: once a partition holds a
 * message, every later message of it is held behind it, so what the
 * worker commits of a partition is always a prefix of what it read, and
 * the stored offset never passes a held message.  A held message is,
 * to the database, a message not yet read: a crash or a restart loses
 * the hold and the messages are read again from the stored offset.
 * Policy (what to hold, when to let go) is the consumer's; this file
 * only keeps the queues.
 */
#include "order_hold.h"

#include "utils/memutils.h"

static AdsHoldQueue *
find_queue(const AdsHold *h, int32 partition)
{
	for (int q = 0; q < h->nqueues; q++)
		if (h->queues[q].partition == partition)
			return &h->queues[q];
	return NULL;
}

bool
ads_hold_partition_held(const AdsHold *h, int32 partition)
{
	AdsHoldQueue *queue = find_queue(h, partition);

	return queue != NULL && queue->n > 0;
}

void
ads_hold_push(AdsHold *h, int32 partition, rd_kafka_message_t *rkm,
			  const AdsOrder *order, TimestampTz now)
{
	AdsHoldQueue *queue = find_queue(h, partition);
	AdsHeldMsg *m;

	if (queue == NULL)
	{
		if (h->nqueues == h->capqueues)
		{
			int			cap = Max(16, h->capqueues * 2);

			h->queues = h->queues == NULL ?
				MemoryContextAllocZero(TopMemoryContext, sizeof(AdsHoldQueue) * cap) :
				repalloc(h->queues, sizeof(AdsHoldQueue) * cap);
			h->capqueues = cap;
		}
		queue = &h->queues[h->nqueues++];
		memset(queue, 0, sizeof(*queue));
		queue->partition = partition;
	}
	if (queue->head + queue->n == queue->cap)
	{
		if (queue->head > 0)
		{
			/* slide down before growing */
			memmove(queue->items, queue->items + queue->head, sizeof(AdsHeldMsg) * queue->n);
			queue->head = 0;
		}
		if (queue->n == queue->cap)
		{
			int			cap = Max(256, queue->cap * 2);

			queue->items = queue->items == NULL ?
				MemoryContextAlloc(TopMemoryContext, sizeof(AdsHeldMsg) * cap) :
				repalloc(queue->items, sizeof(AdsHeldMsg) * cap);
			queue->cap = cap;
		}
	}
	m = &queue->items[queue->head + queue->n++];
	m->rkm = rkm;
	m->is_order = (order != NULL);
	if (order != NULL)
		m->order = *order;
	m->since = now;
	h->total++;
}

const AdsHeldMsg *
ads_hold_peek(const AdsHold *h, int q)
{
	const AdsHoldQueue *queue = &h->queues[q];

	return queue->n > 0 ? &queue->items[queue->head] : NULL;
}

rd_kafka_message_t *
ads_hold_pop(AdsHold *h, int q)
{
	AdsHoldQueue *queue = &h->queues[q];
	rd_kafka_message_t *rkm;

	Assert(queue->n > 0);
	rkm = queue->items[queue->head].rkm;
	queue->head++;
	queue->n--;
	if (queue->n == 0)
		queue->head = 0;
	h->total--;
	return rkm;
}

void
ads_hold_drop(AdsHold *h, int32 partition)
{
	for (int q = 0; q < h->nqueues; q++)
	{
		AdsHoldQueue *queue = &h->queues[q];

		if (partition >= 0 && queue->partition != partition)
			continue;
		while (queue->n > 0)
			rd_kafka_message_destroy(ads_hold_pop(h, q));
	}
}
