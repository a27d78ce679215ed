/*
 * dedup_index.h
 *     The two-tier shared-memory index of event ids that deduplicates ad
 *     events, checked against adstream.dedup_log on a filter's "maybe".
 *     See src/dedup_index.c.
 */
#ifndef ADSTREAM_DEDUP_INDEX_H
#define ADSTREAM_DEDUP_INDEX_H

#include "postgres.h"

/* The shared-memory hooks of _PG_init. */
extern Size ads_dedup_index_shmem_size(void);
extern void ads_dedup_index_shmem_request(void);
extern void ads_dedup_index_shmem_init(void);

/* Inside a worker's batch transaction, with SPI connected. */
extern void ads_dedup_index_prepare(void);
extern void ads_dedup_claim(int32 source_id, int n, const uint8 *const *ids,
							const int32 *hours, bool *is_new, int32 *segs,
							TransactionId *held_by);

/*
 * Before the batch writes shared keys: the claims taken as duplicates stand.
 * With may_set_aside, the transactions still running are not waited for:
 * they are returned (*running, in the current memory context), and the
 * batch sets aside the events whose ids they hold.
 */
extern int	ads_dedup_confirm(bool may_set_aside, TransactionId **running);

/*
 * A partition handoff's committed ids, nrows rows of one hour each, into the
 * filter; segs receives each row's segment.  SPI connected, the expiry lock
 * held exclusively (src/handoff.c).
 */
extern void ads_dedup_import(int32 source_id, int nrows, const int32 *hours,
							 const uint8 *const *ids, const int *nids, int32 *segs);

/* After the batch transaction has ended: its claims stand or go.  Never throws. */
extern void ads_dedup_settle(bool committed);

/*
 * Forget a source's ids of the event-time hours [from_hour, to_hour) (hour
 * numbers since the epoch); the caller holds the expiry lock exclusively.
 * -1 when the index is not ready (being rebuilt after a restart).
 */
extern int64 ads_dedup_forget_hours(int32 source_id, int32 from_hour, int32 to_hour);

#endif							/* ADSTREAM_DEDUP_INDEX_H */
