/*
 * input_format.c
 *     The consumer's view of a source's input format: see
 *     include/input_format.h and docs/formats.md.
 *
 * JSON goes straight to the parser with the compiled mapping (NULL-cost
 * when there is none).  Avro is checked in two steps so that a registry
 * outage never turns a good record into a dead letter: ads_input_ready()
 * reads the header and makes sure the schema is at hand (the cache, or one
 * HTTP request on a miss), and only then is the message taken into the
 * batch and decoded.  A record whose schema cannot be fetched is not taken
 * at all: the consumer holds it and retries, and its offset is not passed.
 */
#include "input_format.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_time.h"
#include "guc.h"

void
ads_input_compile(bool is_orders, const char *ts_format, int nfields,
				  char **keys, char **paths, AdsFormat *fmt)
{
	char		err[256];

	ads_format_init(fmt, is_orders ? 1 : 0);
	for (int i = 0; i < nfields; i++)
		if (!ads_format_set_field(fmt, keys[i], paths[i], err, sizeof(err)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid field mapping: %s", err),
					 errhint("Option \"fields\" maps contract fields (%s) to paths of member names joined by \".\", such as \"payload.ad.id\".",
							 is_orders ? "order_id, user_id, store_id, amount, currency, ts" :
							 "event_id, type, ad_id, campaign_id, user_id, store_id, ts")));
	if (ts_format != NULL && !ads_format_set_ts(fmt, ts_format, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"ts_format\": %s", err),
				 errhint("Use \"epoch_ms\" (the default), \"epoch_s\", \"epoch_us\" or \"rfc3339\".")));
	if (!ads_format_finish(fmt, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid field mapping: %s", err),
				 errhint("Each contract field needs a path of its own; a field not mapped keeps its own name at the top level.")));
}

/* Polled by libcurl during a request: stop waiting when the worker must go. */
static int
registry_should_abort(void)
{
	return ProcDiePending || QueryCancelPending;
}

void
ads_input_open(AdsInput *in, bool is_orders, const char *format,
			   const char *ts_format, int nfields, char **keys, char **paths,
			   const char *registry_url, int registry_timeout_ms)
{
	memset(in, 0, sizeof(*in));
	in->is_orders = is_orders;
	ads_input_compile(is_orders, ts_format, nfields, keys, paths, &in->fmt);
	in->avro = format != NULL && strcmp(format, "avro") == 0;
	if (in->avro)
	{
		in->registry = ads_schema_registry_new(registry_url, &in->fmt,
											   registry_timeout_ms > 0 ? registry_timeout_ms : ADS_REGISTRY_TIMEOUT_MS,
											   registry_should_abort);
		if (in->registry == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not set up the schema registry client")));
	}
}

bool
ads_input_ready(AdsInput *in, const char *buf, size_t len, size_t max_bytes,
				char *err, size_t err_len)
{
	uint32		id;

	if (!in->avro)
		return true;
	in->ready_valid = false;
	/* a bad header is the parser's business: a dead letter */
	if (ads_avro_header(buf, len, max_bytes, &id, NULL, 0) != ADS_OK)
		return true;
	in->ready_result = ads_schema_registry_lookup(in->registry, id, &in->ready_reader,
												  in->ready_err, sizeof(in->ready_err));
	if (in->ready_result == ADS_REG_UNAVAILABLE)
	{
		snprintf(err, err_len, "%s", in->ready_err);
		return false;
	}
	in->ready_id = id;
	in->ready_valid = true;
	return true;
}

AdsReason
ads_input_parse_event(AdsInput *in, const char *buf, size_t len, size_t max_bytes,
					  AdsEvent *out, char *detail, size_t detail_len)
{
	uint32		id;
	AdsReason	r;

	if (!in->avro)
		return ads_parse_event_fmt(buf, len, max_bytes, &in->fmt, out, detail, detail_len);

	r = ads_avro_header(buf, len, max_bytes, &id, detail, detail_len);
	if (r != ADS_OK)
		return r;
	/* ads_input_ready() has just looked this message's schema up */
	if (!in->ready_valid || in->ready_id != id)
		elog(ERROR, "adstream: schema %u of a message taken into the batch was not looked up", id);
	if (in->ready_result == ADS_REG_OK)
		return ads_avro_decode_event(in->ready_reader, buf, len, out, detail, detail_len);
	snprintf(detail, detail_len, "%s", in->ready_err);
	return ADS_R_UNKNOWN_SCHEMA;
}

AdsReason
ads_input_parse_order(AdsInput *in, const char *buf, size_t len, size_t max_bytes,
					  AdsOrder *out, char *detail, size_t detail_len)
{
	/* create_source refuses Avro for orders */
	return ads_parse_order_fmt(buf, len, max_bytes, &in->fmt, out, detail, detail_len);
}

/*
 * adstream._check_field_mapping(kind, keys, paths, ts_format): create_source
 * checks a definition with the compiler the workers use; an error says
 * what is wrong.
 */
PG_FUNCTION_INFO_V1(adstream_check_field_mapping);
Datum
adstream_check_field_mapping(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *ka = PG_GETARG_ARRAYTYPE_P(1);
	ArrayType  *pa = PG_GETARG_ARRAYTYPE_P(2);
	char	   *ts_format = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	Datum	   *kd,
			   *pd;
	bool	   *kn,
			   *pn;
	int			nk,
				np;
	char	  **keys,
			  **paths;
	AdsFormat	fmt;

	deconstruct_array(ka, TEXTOID, -1, false, TYPALIGN_INT, &kd, &kn, &nk);
	deconstruct_array(pa, TEXTOID, -1, false, TYPALIGN_INT, &pd, &pn, &np);
	if (nk != np)
		elog(ERROR, "adstream._check_field_mapping: %d keys but %d paths", nk, np);
	keys = palloc(sizeof(char *) * Max(nk, 1));
	paths = palloc(sizeof(char *) * Max(nk, 1));
	for (int i = 0; i < nk; i++)
	{
		if (kn[i] || pn[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid field mapping: a path is null"),
					 errhint("Map each field to a string such as \"payload.ad.id\".")));
		keys[i] = TextDatumGetCString(kd[i]);
		paths[i] = TextDatumGetCString(pd[i]);
	}
	ads_input_compile(strcmp(kind, "orders") == 0, ts_format, nk, keys, paths, &fmt);
	PG_RETURN_VOID();
}

/*
 * adstream._validate_event_with(payload, keys, paths, ts_format): the
 * consumer's JSON parser under a field mapping, on one value, for
 * validate_event(payload, options).
 */
PG_FUNCTION_INFO_V1(adstream_validate_event_with);
Datum
adstream_validate_event_with(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	ArrayType  *ka = PG_GETARG_ARRAYTYPE_P(1);
	ArrayType  *pa = PG_GETARG_ARRAYTYPE_P(2);
	char	   *ts_format = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	Datum	   *kd,
			   *pd;
	bool	   *kn,
			   *pn;
	int			nk,
				np;
	char	  **keys,
			  **paths;
	AdsFormat	fmt;
	AdsEvent	ev;
	AdsReason	reason;
	char		detail[ADS_DETAIL_LEN];
	Datum		values[9];
	bool		nulls[9];
	TupleDesc	tupdesc;

	deconstruct_array(ka, TEXTOID, -1, false, TYPALIGN_INT, &kd, &kn, &nk);
	deconstruct_array(pa, TEXTOID, -1, false, TYPALIGN_INT, &pd, &pn, &np);
	if (nk != np)
		elog(ERROR, "adstream._validate_event_with: %d keys but %d paths", nk, np);
	keys = palloc(sizeof(char *) * Max(nk, 1));
	paths = palloc(sizeof(char *) * Max(nk, 1));
	for (int i = 0; i < nk; i++)
	{
		keys[i] = kn[i] ? "" : TextDatumGetCString(kd[i]);
		paths[i] = pn[i] ? "" : TextDatumGetCString(pd[i]);
	}
	ads_input_compile(false, ts_format, nk, keys, paths, &fmt);
	reason = ads_parse_event_fmt(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
								 (size_t) adstream_max_message_bytes, &fmt, &ev,
								 detail, sizeof(detail));

	memset(nulls, reason != ADS_OK, sizeof(nulls));
	values[0] = CStringGetTextDatum(ads_reason_name(reason));
	nulls[0] = false;
	values[1] = CStringGetTextDatum(detail);
	nulls[1] = (reason == ADS_OK);
	if (reason == ADS_OK)
	{
		pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

		memcpy(uuid->data, ev.event_id, UUID_LEN);
		values[2] = UUIDPGetDatum(uuid);
		values[3] = CStringGetTextDatum(ev.type == ADS_EV_CLICK ? "click" : "impression");
		values[4] = Int64GetDatum(ev.ad_id);
		values[5] = Int64GetDatum(ev.campaign_id);
		values[6] = Int64GetDatum(ev.user_id);
		values[7] = Int64GetDatum(ev.store_id);
		values[8] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(ev.ts_us));
	}
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
