/*
 * publish_record.c
 *     The JSON value of one published ad_stats record (docs/pinot.md), for
 *     adstream._outbox_page.
 *
 * Issue #12, item 4: the publisher shares the cores ingestion needs, and
 * most of its time per record went into jsonb_build_object, the record
 * uuid's string functions and numeric epoch arithmetic.  This writes the
 * text jsonb_build_object(...)::text wrote, byte for byte: keys in jsonb's
 * order (shorter first, then by bytes), ", " and ": " between them, strings
 * escaped as jsonb escapes them.  The record uuid is
 * adstream.record_uuid('ad_stats', key): the MD5 of "adstream/ad_stats/"
 * and the key, with version 3 and the RFC 4122 variant.  Times are epoch
 * milliseconds rounded as (extract(epoch FROM t) * 1000)::bigint rounds
 * them, half away from zero.  The regress test "publish" compares this with
 * the SQL it stands for.
 */
#include "publish_record.h"

#include "common/md5.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "event_time.h"

PG_FUNCTION_INFO_V1(adstream_ad_stats_record);

/* Epoch milliseconds of a timestamp, as (extract(epoch FROM t) * 1000)::bigint. */
static int64
epoch_ms(TimestampTz t)
{
	int64		us;
	int64		ms;
	int64		rest;

	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("a published record's time must be finite"),
				 errhint("Aggregates are keyed by finite minutes; an infinite time is a bug.")));
	us = ads_timestamptz_to_unix_us(t);
	ms = us / 1000;
	rest = us % 1000;			/* has the sign of us */
	if (rest >= 500)
		ms++;
	else if (rest <= -500)
		ms--;
	return ms;
}

/* adstream.record_uuid('ad_stats', key), quoted, appended to out. */
static void
append_record_uuid(StringInfo out, const char *key, int keylen)
{
	static const char prefix[] = "adstream/ad_stats/";
	StringInfoData name;
	const char *errstr = NULL;
	char		h[33];
	int			nibble;

	initStringInfo(&name);
	appendBinaryStringInfo(&name, prefix, sizeof(prefix) - 1);
	appendBinaryStringInfo(&name, key, keylen);
	if (!pg_md5_hash(name.data, name.len, h, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the MD5 of a record key: %s", errstr ? errstr : "unknown error"),
				 errhint("MD5 may be disabled by the server's FIPS mode.")));
	pfree(name.data);

	h[12] = '3';				/* version 3: name-based, MD5 */
	nibble = (h[16] >= 'a') ? h[16] - 'a' + 10 : h[16] - '0';
	h[16] = "89ab"[nibble % 4];	/* variant 10 */

	appendStringInfo(out, "\"%.8s-%.4s-%.4s-%.4s-%.12s\"", h, h + 8, h + 12, h + 16, h + 20);
}

/* The arguments of _ad_stats_record, by position. */
static const char *const arg_names[] = {
	"key", "node", "ad_id", "window_start", "campaign_id", "impressions", "clicks", "version", "updated_at"
};
#define ARG_CAMPAIGN_ID 4

/*
 * adstream._ad_stats_record(key, node, ad_id, window_start, campaign_id,
 *     impressions, clicks, version, updated_at): the record's value, its
 * record_uuid that of key (adstream._record_key's).
 */
Datum
adstream_ad_stats_record(PG_FUNCTION_ARGS)
{
	text	   *key;
	char	   *node;
	StringInfoData out;

	for (int i = 0; i < lengthof(arg_names); i++)
		if (i != ARG_CAMPAIGN_ID && PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("an ad_stats record needs its %s", arg_names[i]),
					 errhint("Only campaign_id may be null: a minute whose every count was forgotten.")));
	key = PG_GETARG_TEXT_PP(0);
	node = text_to_cstring(PG_GETARG_TEXT_PP(1));

	/* jsonb's order: node, ad_id, clicks, version, updated_at, campaign_id, impressions, record_uuid, window_start */
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"node\": ");
	escape_json(&out, node);
	appendStringInfo(&out, ", \"ad_id\": " INT64_FORMAT, PG_GETARG_INT64(2));
	appendStringInfo(&out, ", \"clicks\": " INT64_FORMAT, PG_GETARG_INT64(6));
	appendStringInfo(&out, ", \"version\": " INT64_FORMAT, PG_GETARG_INT64(7));
	appendStringInfo(&out, ", \"updated_at\": " INT64_FORMAT, epoch_ms(PG_GETARG_TIMESTAMPTZ(8)));
	if (PG_ARGISNULL(ARG_CAMPAIGN_ID))
		appendStringInfoString(&out, ", \"campaign_id\": null");
	else
		appendStringInfo(&out, ", \"campaign_id\": " INT64_FORMAT, PG_GETARG_INT64(ARG_CAMPAIGN_ID));
	appendStringInfo(&out, ", \"impressions\": " INT64_FORMAT, PG_GETARG_INT64(5));
	appendStringInfoString(&out, ", \"record_uuid\": ");
	append_record_uuid(&out, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	appendStringInfo(&out, ", \"window_start\": " INT64_FORMAT "}", epoch_ms(PG_GETARG_TIMESTAMPTZ(3)));

	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
