/*
 * rewind.h
 *     Rewinding a source (issue #14, section 4): the SQL-callable helpers of
 *     adstream.rewind_source() (src/rewind.c).  The replay itself is judged
 *     by the batch (src/batch.c) from the rewind's rows in adstream.rewinds,
 *     which the consumer reads with the offsets.
 */
#ifndef ADSTREAM_REWIND_H
#define ADSTREAM_REWIND_H

#include "postgres.h"

#include "fmgr.h"

/* adstream._kafka_offsets_for_times(brokers, keys, values, topic, partitions, time, timeout_ms) */
extern Datum adstream_kafka_offsets_for_times(PG_FUNCTION_ARGS);
/* adstream._dedup_forget_hours(source_id, from, to) */
extern Datum adstream_dedup_forget_hours(PG_FUNCTION_ARGS);

#endif							/* ADSTREAM_REWIND_H */
