/*
 * sql_validate.c
 *     validate_event() and validate_order(): the workers' parser and
 *     contract, callable from SQL to check a message by hand.
 */
#include "postgres.h"

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_parse.h"
#include "event_time.h"
#include "guc.h"

/*
 * The row of validate_event() / validate_order(): reason and detail, then the
 * message's fields, which are NULL unless it was accepted (the caller fills
 * values[2..] when reason is ADS_OK).
 */
static void
validation_row_start(AdsReason reason, const char *detail, Datum *values, bool *nulls, int ncols)
{
	memset(nulls, reason != ADS_OK, sizeof(bool) * ncols);
	values[0] = CStringGetTextDatum(ads_reason_name(reason));
	nulls[0] = false;
	values[1] = CStringGetTextDatum(detail);
	nulls[1] = (reason == ADS_OK);
}

static Datum
validation_row(FunctionCallInfo fcinfo, Datum *values, bool *nulls)
{
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

static Datum
uuid_datum(const uint8 id[16])
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	memcpy(uuid->data, id, UUID_LEN);
	return UUIDPGetDatum(uuid);
}

PG_FUNCTION_INFO_V1(adstream_validate_event);
Datum
adstream_validate_event(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	AdsEvent	ev;
	AdsReason	reason;
	char		detail[ADS_DETAIL_LEN];
	Datum		values[9];
	bool		nulls[9];

	reason = ads_parse_event(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
							 (size_t) adstream_max_message_bytes, &ev,
							 detail, sizeof(detail));
	validation_row_start(reason, detail, values, nulls, 9);
	if (reason == ADS_OK)
	{
		values[2] = uuid_datum(ev.event_id);
		values[3] = CStringGetTextDatum(ev.type == ADS_EV_CLICK ? "click" : "impression");
		values[4] = Int64GetDatum(ev.ad_id);
		values[5] = Int64GetDatum(ev.campaign_id);
		values[6] = Int64GetDatum(ev.user_id);
		values[7] = Int64GetDatum(ev.store_id);
		values[8] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(ev.ts_us));
	}
	PG_RETURN_DATUM(validation_row(fcinfo, values, nulls));
}

PG_FUNCTION_INFO_V1(adstream_validate_order);
Datum
adstream_validate_order(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	AdsOrder	o;
	AdsReason	reason;
	char		detail[ADS_DETAIL_LEN];
	Datum		values[8];
	bool		nulls[8];

	reason = ads_parse_order(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
							 (size_t) adstream_max_message_bytes, &o,
							 detail, sizeof(detail));
	validation_row_start(reason, detail, values, nulls, 8);
	if (reason == ADS_OK)
	{
		values[2] = uuid_datum(o.order_id);
		values[3] = Int64GetDatum(o.user_id);
		values[4] = Int64GetDatum(o.store_id);
		values[5] = DirectFunctionCall3(numeric_in, CStringGetDatum(o.amount),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		values[6] = CStringGetTextDatum(o.currency);
		values[7] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(o.ts_us));
	}
	PG_RETURN_DATUM(validation_row(fcinfo, values, nulls));
}
