/*
 * handoff.c
 *     Moving partitions between nodes (issue #13, part 3; docs/deployment.md,
 *     "Moving partitions between nodes").  Export, copy and import are SQL
 *     (adstream.export_partitions, handoff_data, import_partitions); this is
 *     the one step SQL cannot take: the imported event ids into the shared
 *     dedup index, as committed ids, in the importing transaction.
 */
#include "handoff.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "dedup_index.h"
#include "event_time.h"

/*
 * adstream._dedup_import(source int4, hours timestamptz[], ids bytea[]):
 * the ids of each row (16-byte event ids, concatenated) into the source's
 * hour in the index; returns each row's segment, for dedup_log.seg.  The
 * caller (adstream._handoff_apply) holds the expiry lock exclusively.
 */
PG_FUNCTION_INFO_V1(adstream_dedup_import);
Datum
adstream_dedup_import(PG_FUNCTION_ARGS)
{
	int32		source_id = PG_GETARG_INT32(0);
	ArrayType  *hours_arr = PG_GETARG_ARRAYTYPE_P(1);
	ArrayType  *ids_arr = PG_GETARG_ARRAYTYPE_P(2);
	Datum	   *hour_d,
			   *id_d;
	bool	   *hour_null,
			   *id_null;
	int			nhours,
				nrows;
	int32	   *hours;
	const uint8 **ids;
	int		   *nids;
	int32	   *segs;
	Datum	   *out;

	deconstruct_array(hours_arr, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &hour_d, &hour_null, &nhours);
	deconstruct_array(ids_arr, BYTEAOID, -1, false, TYPALIGN_INT, &id_d, &id_null, &nrows);
	if (nhours != nrows)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("adstream._dedup_import needs one hour per row of ids (%d hours, %d rows)", nhours, nrows)));
	hours = palloc(sizeof(int32) * Max(nrows, 1));
	ids = palloc(sizeof(uint8 *) * Max(nrows, 1));
	nids = palloc(sizeof(int) * Max(nrows, 1));
	segs = palloc(sizeof(int32) * Max(nrows, 1));
	out = palloc(sizeof(Datum) * Max(nrows, 1));
	for (int r = 0; r < nrows; r++)
	{
		bytea	   *b;
		TimestampTz t;

		if (hour_null[r] || id_null[r])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("adstream._dedup_import: row %d has no hour or no ids", r + 1)));
		t = DatumGetTimestampTz(hour_d[r]);
		if (TIMESTAMP_NOT_FINITE(t))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("adstream._dedup_import: row %d has an infinite hour", r + 1)));
		hours[r] = ads_hour_number(ads_timestamptz_to_unix_us(t));
		b = DatumGetByteaPP(id_d[r]);
		if (VARSIZE_ANY_EXHDR(b) % 16 != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("adstream._dedup_import: row %d holds %d bytes, not 16-byte ids",
							r + 1, (int) VARSIZE_ANY_EXHDR(b))));
		ids[r] = (const uint8 *) VARDATA_ANY(b);
		nids[r] = VARSIZE_ANY_EXHDR(b) / 16;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "adstream: SPI_connect failed");
	ads_dedup_import(source_id, nrows, hours, ids, nids, segs);
	SPI_finish();

	for (int r = 0; r < nrows; r++)
		out[r] = Int32GetDatum(segs[r]);
	PG_RETURN_ARRAYTYPE_P(construct_array(out, nrows, INT4OID, 4, true, TYPALIGN_INT));
}
