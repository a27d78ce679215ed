/*
 * attribution.c
 *     Order attribution as the orders worker drives it.  The rules live in
 *     SQL (adstream.attribute_orders(), see docs/attribution.md); this runs
 *     a pass in its own transaction, because a batch of orders must be
 *     committed before its orders may be judged.
 */
#include "attribution.h"

#include "executor/spi.h"
#include "utils/timestamp.h"

#include "event_time.h"
#include "txn.h"

int
ads_attribute_orders(int64 *watermark_us)
{
	bool		isnull;
	int			done;
	Datum		wm;

	ads_begin_tx("adstream: attributing orders");

	/* The watermark is read once: the pass judges by it, and the caller keeps it. */
	if (SPI_execute("SELECT adstream._attribute_orders(" CppAsString2(ADS_ATTRIBUTION_PASS) ", w), w "
					"FROM adstream.ad_events_watermark() AS w", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: attribute_orders failed");
	done = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	wm = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		*watermark_us = PG_INT64_MAX;	/* no ad events to wait for */
	else if (TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(wm)))
		*watermark_us = PG_INT64_MIN;
	else
		*watermark_us = ads_timestamptz_to_unix_us(DatumGetTimestampTz(wm));

	ads_end_tx();
	return done;
}
