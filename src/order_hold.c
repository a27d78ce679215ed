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

/* An array of *cap items of size bytes, doubled (to min at first); it lives as long as the worker. */
static void *
grow(void *items, int *cap, int min, Size size)
{
	*cap = Max(min, *cap * 2);
	return items == NULL ? MemoryContextAlloc(TopMemoryContext, size * *cap) : repalloc(items, size * *cap);
}

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
			h->queues = grow(h->queues, &h->capqueues, 16, sizeof(AdsHoldQueue));
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
			queue->items = grow(queue->items, &queue->cap, 256, sizeof(AdsHeldMsg));
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
