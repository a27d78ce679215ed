/*
 * batch.h
 *     A batch of Kafka messages and the one transaction that writes it
 *     (src/batch.c).  The consumer fills the batch; batch.c judges every
 *     message, writes the results and advances the offsets, all or nothing.
 */
#ifndef ADSTREAM_BATCH_H
#define ADSTREAM_BATCH_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "event_parse.h"
#include "registry.h"

typedef enum AdsMsgStatus
{
	ADS_MSG_REJECTED,			/* dead letter; reason says why */
	ADS_MSG_DUPLICATE,			/* event id already counted */
	ADS_MSG_CANDIDATE,			/* valid, first in batch; dedup state decides */
	ADS_MSG_ACCEPTED,			/* counted */
	ADS_MSG_RECOUNT,			/* replayed by a 'recount' rewind, its hour's dedup state
								 * given up: the rewind's own id set decides */
	ADS_MSG_SKIPPED,			/* replayed by a 'replace' rewind, outside its window:
								 * counted before, left alone */
	ADS_MSG_SET_ASIDE			/* its id is held by another worker's batch still
								 * running: set aside (adstream.set_aside), judged
								 * again by a later batch */
} AdsMsgStatus;

typedef struct AdsMsg
{
	rd_kafka_message_t *rkm;	/* held until the batch commits */
	int			part;			/* index into AdsBatch.parts */
	AdsReason	parse_reason;	/* what the parser said */
	AdsReason	reason;			/* final reason when rejected */
	AdsMsgStatus status;
	char	   *detail;			/* parser detail, when rejected */
	bool		replay;			/* read again by a rewind (offset below its to_offset) */
	bool		recount;		/* an expired hour's event a 'recount' rewind counts
								 * again: judged by its id set, not kept for attribution */
	bool		taken_up;		/* read back from adstream.set_aside, not from Kafka
								 * (its rkm is the batch's own) */
	TransactionId held_by;		/* the running batch that holds its id, if any */
	union
	{
		AdsEvent	ev;			/* kind 'ad_events' */
		AdsOrder	order;		/* kind 'orders' */
	};
} AdsMsg;

/* One Kafka partition of the source's topic, as this worker reads it. */
typedef struct AdsPartition
{
	int32		partition;
	int64		committed;		/* next_offset stored in adstream.offsets; -1 if no row */
	int64		position;		/* next offset to take from Kafka; -1 = from the start */
	bool		out_of_range;	/* Kafka said position is out of range: a gap to record */
	/* the current batch */
	bool		in_batch;
	int64		b_next;
	int			b_last;			/* index in msgs of its last message read from
								 * Kafka in the batch; -1 if none */
	int64		b_accepted;
	int64		b_duplicates;
	int64		b_rejected;
	int64		b_max_ts_us;	/* INT64_MIN if no accepted event */

	/*
	 * A rewind being replayed (adstream.rewinds, read with the offsets; 0
	 * when none): messages below rw_to are judged by its rule, and counted
	 * in its row rather than in the partition's counters.
	 */
	int64		rw_id;
	int64		rw_to;
	bool		rw_replace;		/* mode 'replace': only [rw_from_us, rw_until_us) counts */
	int64		rw_from_us;
	int64		rw_until_us;
	int64		b_rw_replayed;
	int64		b_rw_accepted;
	int64		b_rw_duplicates;
	int64		b_rw_rejected;
	int64		b_rw_skipped;
} AdsPartition;

typedef struct AdsBatch
{
	/* the source */
	int32		source_id;
	const char *source_name;
	const char *topic;
	bool		is_orders;
	int16		stripe;			/* this worker's rows of ad_stats_minute: its index */
	int64		minutes_dropped_before_us;	/* retention dropped the minutes before (this batch's read) */

	/* the partitions the worker reads; messages point into this array */
	int			nparts;
	AdsPartition parts[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];

	/* the messages; everything in ctx is freed by ads_batch_reset() */
	MemoryContext ctx;
	AdsMsg	   *msgs;
	int			nmsgs;
	int			msgs_cap;

	/* hours of event time whose time partitions are known to exist */
	struct hourset_hash *ensured;
	MemoryContext ensured_ctx;

	bool		fenced;			/* set when offsets moved under us */

	/*
	 * Events set aside (adstream.set_aside) are taken up by the next batch
	 * of their partition, after its Kafka messages, up to aside_room of
	 * them (msgs has room for msgs_cap + aside_room).  aside_due: some may
	 * be waiting for this worker (so it writes a batch even when Kafka has
	 * nothing new); ntaken: how many this write appended.
	 */
	int			aside_room;
	int			ntaken;
	MemoryContext aside_ctx;	/* the taken events' messages: reset at each take,
								 * so that retries of a failing write do not pile
								 * them up in ctx */
	bool		aside_due;
	bool		aside_due_after;	/* aside_due once this write commits */
	bool		replay_held;	/* a rewind's replayed event depends on a running claim */

	/*
	 * A re-drive batch (src/redrive.c): its messages are dead letters read
	 * back from adstream.rejected_events, not from Kafka.  It removes them
	 * and writes again those still rejected, adjusts the partitions'
	 * counters, and moves no offset.
	 */
	bool		redrive;
} AdsBatch;

/* Set up an empty batch for a source, once per worker. */
extern void ads_batch_init(AdsBatch *b, int32 source_id, const char *source_name,
						   const char *topic, bool is_orders);
/*
 * Release the messages (and their librdkafka buffers, unless a re-drive
 * batch's); ready for the next batch, which is a Kafka batch.
 */
extern void ads_batch_reset(AdsBatch *b);

/*
 * Write the batch in one transaction.  Throws on failure, with the
 * transaction left for the caller to abort; the caller then calls
 * ads_batch_settle(b, false) and may retry the same messages.
 */
extern void ads_batch_write(AdsBatch *b);
/* After the batch transaction has ended, committed or not.  Never throws. */
extern void ads_batch_settle(AdsBatch *b, bool committed);

#endif							/* ADSTREAM_BATCH_H */
