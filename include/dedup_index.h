/*
 * dedup_index.h
 *     The shared-memory index of event ids that deduplicates ad events.
 *     See src/dedup_index.c.
 */
#ifndef ADSTREAM_DEDUP_INDEX_H
#define ADSTREAM_DEDUP_INDEX_H

#include "postgres.h"

extern int	adstream_dedup_index_size;

/* _PG_init, while preloading: the GUC and the shared-memory hooks' parts. */
extern void ads_dedup_index_define_guc(void);
extern Size ads_dedup_index_shmem_size(void);
extern void ads_dedup_index_shmem_request(void);
extern void ads_dedup_index_shmem_init(void);

/* Inside a worker's batch transaction, with SPI connected. */
extern void ads_dedup_index_prepare(void);
extern void ads_dedup_claim(int32 source_id, int n, const uint8 *const *ids,
							const int32 *hours, bool *is_new, void **entries);

/* After the batch transaction has ended; never throws. */
extern void ads_dedup_settle(int32 source_id, int n, const uint8 *const *ids,
							 void *const *entries, TransactionId xid, bool committed);

#endif							/* ADSTREAM_DEDUP_INDEX_H */
