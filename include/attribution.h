/*
 * attribution.h
 *     The orders worker's attribution passes (src/attribution.c).
 */
#ifndef ADSTREAM_ATTRIBUTION_H
#define ADSTREAM_ATTRIBUTION_H

#include "postgres.h"

/*
 * Judge the waiting orders that are ready, in a transaction of its own.
 * Returns how many were decided; a full pass (ADS_ATTRIBUTION_PASS) means
 * more may be ready.  *watermark_us is the ad-events watermark read in
 * the same transaction: PG_INT64_MIN for -infinity (a partition with
 * messages to read has none yet), PG_INT64_MAX when there is none at all
 * (no ad events to wait for: every order passes).
 */
#define ADS_ATTRIBUTION_PASS 5000	/* orders a pass judges at most */
extern int	ads_attribute_orders(int64 *watermark_us);

#endif							/* ADSTREAM_ATTRIBUTION_H */
