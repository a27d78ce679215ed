/*
 * publish_record.c
 *     What identifies and what carries a published record (docs/pinot.md):
 *     adstream.record_uuid(kind, key), and the JSON value of an ad_stats
 *     record for adstream._outbox_page.
 *
 * The record uuid is name-based (MD5, version 3): the MD5 of 'adstream/' ||
 * kind || '/' || key, its version nibble set to 3 and its variant bits to
 * 10.  It was an SQL function (substr over md5()'s hex digits), not
 * inlined because of its sub-select, so every call ran an executor of its
 * own: about 5.8 us against 0.6 now, once per credited order
 * (attribute_orders, _store_orders).  The result is the same, bit for bit
 * (sql/attribution.sql compares the two over many keys).
 *
 * Issue #12, item 4: the publisher shares the cores ingestion needs, and
 * most of its time per record went into jsonb_build_object, the record
 * uuid and numeric epoch arithmetic.  _ad_stats_record writes the text
 * jsonb_build_object(...)::text wrote, byte for byte: keys in jsonb's order
 * (shorter first, then by bytes), ", " and ": " between them, strings
 * escaped as jsonb escapes them.  Times are epoch milliseconds rounded as
 * (extract(epoch FROM t) * 1000)::bigint rounds them, half away from zero.
 * The regress test "publish" compares it with the SQL it stands for.
 */
#include "publish_record.h"

#include "common/md5.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_time.h"

PG_FUNCTION_INFO_V1(adstream_record_uuid);
PG_FUNCTION_INFO_V1(adstream_ad_stats_record);

/*
 * Epoch milliseconds of a timestamp, as (extract(epoch FROM t) * 1000)::bigint.
 * The instant is split into whole milliseconds and a rest of the
 * PostgreSQL epoch first, and moved to the Unix epoch in milliseconds: in
 * microseconds of the Unix epoch, the last 30 years of PostgreSQL's range
 * (after 294247-01-10 04:00:54.775807 UTC) do not fit in an int64.
 */
static int64
epoch_ms(TimestampTz t)
{
	int64		ms;
	int64		rest;

	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("a published record's time must be finite"),
				 errhint("Aggregates are keyed by finite minutes; an infinite time is a bug.")));
	ms = t / 1000 + ADS_UNIX_EPOCH_OFFSET_US / 1000;	/* the offset is whole milliseconds */
	rest = t % 1000;			/* has the sign of t */
	/* the rest takes the sign of the Unix instant ms * 1000 + rest */
	if (ms > 0 && rest < 0)
	{
		ms--;
		rest += 1000;
	}
	else if (ms < 0 && rest > 0)
	{
		ms++;
		rest -= 1000;
	}
	/* rounded half away from zero, as numeric is */
	if (rest >= 500)
		ms++;
	else if (rest <= -500)
		ms--;
	return ms;
}

/* The record uuid of (kind, key): adstream.record_uuid's. */
static void
record_uuid(const char *kind, int kindlen, const char *key, int keylen, pg_uuid_t *uuid)
{
	StringInfoData name;
	const char *errstr = NULL;

	initStringInfo(&name);
	appendStringInfoString(&name, "adstream/");
	appendBinaryStringInfo(&name, kind, kindlen);
	appendStringInfoChar(&name, '/');
	appendBinaryStringInfo(&name, key, keylen);
	StaticAssertStmt(sizeof(uuid->data) == MD5_DIGEST_LENGTH, "a UUID is an MD5 digest long");
	if (!pg_md5_binary(name.data, name.len, uuid->data, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("adstream: could not compute the MD5 of a record key: %s", errstr ? errstr : "unknown error"),
				 errhint("The server's cryptographic library refused MD5 (FIPS mode?).")));
	uuid->data[6] = (uuid->data[6] & 0x0F) | 0x30;	/* version 3 */
	uuid->data[8] = (uuid->data[8] & 0x3F) | 0x80;	/* variant 10 (RFC 4122) */
	pfree(name.data);
}

/* adstream.record_uuid(kind, key) */
Datum
adstream_record_uuid(PG_FUNCTION_ARGS)
{
	text	   *kind = PG_GETARG_TEXT_PP(0);
	text	   *key = PG_GETARG_TEXT_PP(1);
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	record_uuid(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), uuid);
	PG_RETURN_UUID_P(uuid);
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
	pg_uuid_t	uuid;
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
	record_uuid("ad_stats", 8, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), &uuid);
	appendStringInfoString(&out, ", \"record_uuid\": \"");
	for (int i = 0; i < UUID_LEN; i++)
	{
		static const char hex[] = "0123456789abcdef";

		if (i == 4 || i == 6 || i == 8 || i == 10)
			appendStringInfoChar(&out, '-');
		appendStringInfoChar(&out, hex[uuid.data[i] >> 4]);
		appendStringInfoChar(&out, hex[uuid.data[i] & 0x0F]);
	}
	appendStringInfoChar(&out, '"');
	appendStringInfo(&out, ", \"window_start\": " INT64_FORMAT "}", epoch_ms(PG_GETARG_TIMESTAMPTZ(3)));

	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
