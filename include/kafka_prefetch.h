/*
 * kafka_prefetch.h
 *     How much a consumer worker lets librdkafka prefetch: a budget per
 *     source on a node, shared by its workers (src/kafka_consumer.c).  Plain
 *     C, so that the benchmark's consumers (bench/bench_util.h) prefetch
 *     exactly as the workers do.
 */
#ifndef ADSTREAM_KAFKA_PREFETCH_H
#define ADSTREAM_KAFKA_PREFETCH_H

#define ADS_PREFETCH_KB_PER_SOURCE (128 * 1024)	/* what a source's workers prefetch in all */
#define ADS_PREFETCH_KB_MIN (16 * 1024)			/* the least one worker prefetches */

/* queued.max.messages.kbytes for each of a source's nworkers workers */
static inline int
ads_prefetch_kb(int nworkers)
{
	int			kb = ADS_PREFETCH_KB_PER_SOURCE / (nworkers > 1 ? nworkers : 1);

	return kb > ADS_PREFETCH_KB_MIN ? kb : ADS_PREFETCH_KB_MIN;
}

#endif							/* ADSTREAM_KAFKA_PREFETCH_H */
