/*
 * redrive.h
 *     Re-driving dead letters (src/redrive.c): a consumer reads back the dead
 *     letters of its partitions that adstream.redrive_dead_letters() marked,
 *     judges them again under the source's current definition and settings,
 *     and writes them as a re-drive batch (batch.h): those now valid are
 *     counted once (deduplicated by event id like any event), the rest stay
 *     dead letters with their new reason.
 */
#ifndef ADSTREAM_REDRIVE_H
#define ADSTREAM_REDRIVE_H

#include "postgres.h"

#include "batch.h"
#include "input_format.h"

/* Dead letters read per re-drive batch. */
#define ADS_REDRIVE_BATCH 5000

/*
 * Fill the empty batch b with up to ADS_REDRIVE_BATCH dead letters of its
 * partitions marked by a generation up to the worker's, parsed by in, in a
 * short transaction of its own; returns how many (b->redrive is then set).
 * 0 when there are none, or when the first one's Avro schema cannot be
 * fetched yet.
 */
extern int	ads_redrive_fill(AdsBatch *b, AdsInput *in, int64 generation);

#endif							/* ADSTREAM_REDRIVE_H */
