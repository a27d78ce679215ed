/*
 * redrive.c
 *     Reading marked dead letters back into a batch: see include/redrive.h
 *     and docs/formats.md ("Re-driving dead letters").
 *
 * Only dead letters kept whole are marked (adstream.dead_letter_payload_bytes
 * decides how much of a value is kept), so what is judged again is the
 * message as Kafka delivered it.  Messages of the batch are not librdkafka's:
 * the partition, offset and value are copied into the batch's memory, and
 * ads_batch_reset() knows not to hand them to librdkafka.
 */
#include "redrive.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "guc.h"
#include "txn.h"

int
ads_redrive_fill(AdsBatch *b, AdsInput *in, int64 generation)
{
	Datum	   *parts;
	ArrayType  *arr;
	int			n = 0;
	char		detail[ADS_DETAIL_LEN];

	Assert(b->nmsgs == 0);
	if (b->nparts == 0)
		return 0;
	parts = palloc(sizeof(Datum) * b->nparts);
	for (int i = 0; i < b->nparts; i++)
		parts[i] = Int32GetDatum(b->parts[i].partition);
	arr = construct_array(parts, b->nparts, INT4OID, sizeof(int32), true, TYPALIGN_INT);

	ads_begin_tx("adstream: reading dead letters to re-drive");
	if (SPI_execute_with_args("SELECT partition, \"offset\", payload FROM adstream.rejected_events "
							  "WHERE source = $1 AND topic = $2 AND partition = ANY ($3) "
							  "AND redrive_generation <= $5 AND payload_bytes = length(payload) "
							  "ORDER BY partition, \"offset\" LIMIT $4",
							  5, (Oid[]) {TEXTOID, TEXTOID, INT4ARRAYOID, INT4OID, INT8OID},
							  (Datum[]) {CStringGetTextDatum(b->source_name), CStringGetTextDatum(b->topic),
								  PointerGetDatum(arr), Int32GetDatum(Min(ADS_REDRIVE_BATCH, b->msgs_cap)),
							  Int64GetDatum(generation)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: could not read the dead letters to re-drive");

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		partition = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		int64		offset = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
		Datum		pd = SPI_getbinval(tup, td, 3, &isnull);
		bytea	   *payload = isnull ? NULL : DatumGetByteaPP(pd);
		size_t		len = payload ? VARSIZE_ANY_EXHDR(payload) : 0;
		rd_kafka_message_t *rkm;
		AdsMsg	   *m;
		int			idx = -1;

		for (int i = 0; i < b->nparts; i++)
			if (b->parts[i].partition == partition)
				idx = i;
		if (idx < 0)
			continue;

		rkm = MemoryContextAllocZero(b->ctx, sizeof(rd_kafka_message_t));
		rkm->partition = partition;
		rkm->offset = offset;
		rkm->len = len;
		rkm->payload = len > 0 ? MemoryContextAlloc(b->ctx, len) : NULL;
		if (len > 0)
			memcpy(rkm->payload, VARDATA_ANY(payload), len);

		/* an Avro schema that cannot be fetched: the rest waits for the next round */
		if (!ads_input_ready(in, rkm->payload, rkm->len, (size_t) adstream_max_message_bytes,
							 detail, sizeof(detail)))
			break;

		m = &b->msgs[n++];
		memset(m, 0, sizeof(AdsMsg));
		m->rkm = rkm;
		m->part = idx;
		if (b->is_orders)
			m->parse_reason = ads_input_parse_order(in, rkm->payload, rkm->len,
													(size_t) adstream_max_message_bytes,
													&m->order, detail, sizeof(detail));
		else
			m->parse_reason = ads_input_parse_event(in, rkm->payload, rkm->len,
													(size_t) adstream_max_message_bytes,
													&m->ev, detail, sizeof(detail));
		if (m->parse_reason != ADS_OK)
			m->detail = MemoryContextStrdup(b->ctx, detail);
	}
	ads_end_tx();

	b->nmsgs = n;
	b->redrive = n > 0;
	return n;
}
