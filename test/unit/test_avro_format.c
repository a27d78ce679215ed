/*
 * test_avro_format.c
 *     Unit tests for src/avro_format.c: records encoded by libavro's writer
 *     decode, through a field mapping, to the values they were written with;
 *     broken ones get their reasons.  Every record is decoded from an
 *     exactly-sized heap copy, so that ASan flags any read past its end.
 *
 *   make unitcheck     (builds test/bin/test_avro_format and runs it)
 *
 * The last line is "N passed, N failed"; the exit status is 0 only when
 * nothing failed.
 */
#include <avro.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avro_format.h"

static int	n_passed,
			n_failed;

static void
check(int ok, const char *what, const char *detail)
{
	if (ok)
		n_passed++;
	else
	{
		n_failed++;
		printf("FAIL [%s]: %s\n", what, detail ? detail : "");
	}
}

static const char SCHEMA[] =
"{\"type\": \"record\", \"name\": \"E\", \"fields\": ["
"{\"name\": \"eventId\", \"type\": \"string\"},"
"{\"name\": \"kind\", \"type\": {\"type\": \"enum\", \"name\": \"Kind\", \"symbols\": [\"impression\", \"click\", \"view\"]}},"
"{\"name\": \"payload\", \"type\": {\"type\": \"record\", \"name\": \"P\", \"fields\": ["
"  {\"name\": \"tags\", \"type\": {\"type\": \"array\", \"items\": \"string\"}},"
"  {\"name\": \"ad\", \"type\": [\"null\", {\"type\": \"record\", \"name\": \"Ad\", \"fields\": ["
"    {\"name\": \"id\", \"type\": \"long\"}, {\"name\": \"campaign\", \"type\": \"int\"}]}]}]}},"
"{\"name\": \"user\", \"type\": [\"null\", \"long\"]},"
"{\"name\": \"store\", \"type\": \"long\"},"
"{\"name\": \"time\", \"type\": [\"long\", \"string\"]}"
"]}";

static const char *const MAP[] = {
	"event_id", "eventId", "type", "kind", "ad_id", "payload.ad.id",
	"campaign_id", "payload.ad.campaign", "user_id", "user", "store_id", "store",
	"ts", "time", NULL
};

static avro_value_iface_t *iface;

typedef struct Rec
{
	const char *id;
	int			kind;
	int			ad_null;
	int64_t		ad;
	int32_t		campaign;
	int			user_null;
	int64_t		user;
	int64_t		store;
	const char *time_text;		/* NULL: time_long */
	int64_t		time_long;
	int			ntags;
} Rec;

/* Encodes r with header id into a fresh exact-size buffer. */
static char *
encode(const Rec *r, uint32_t id, size_t *len)
{
	char		buf[4096];
	avro_value_t v,
				f,
				g,
				h,
				br;
	avro_writer_t w;
	char	   *out;

	avro_generic_value_new(iface, &v);
	avro_value_get_by_name(&v, "eventId", &f, NULL);
	avro_value_set_string(&f, r->id);
	avro_value_get_by_name(&v, "kind", &f, NULL);
	avro_value_set_enum(&f, r->kind);
	avro_value_get_by_name(&v, "payload", &f, NULL);
	avro_value_get_by_name(&f, "tags", &g, NULL);
	for (int i = 0; i < r->ntags; i++)
	{
		avro_value_append(&g, &h, NULL);
		avro_value_set_string(&h, "tag");
	}
	avro_value_get_by_name(&f, "ad", &g, NULL);
	if (r->ad_null)
	{
		avro_value_set_branch(&g, 0, &br);
		avro_value_set_null(&br);
	}
	else
	{
		avro_value_set_branch(&g, 1, &br);
		avro_value_get_by_name(&br, "id", &h, NULL);
		avro_value_set_long(&h, r->ad);
		avro_value_get_by_name(&br, "campaign", &h, NULL);
		avro_value_set_int(&h, r->campaign);
	}
	avro_value_get_by_name(&v, "user", &f, NULL);
	avro_value_set_branch(&f, r->user_null ? 0 : 1, &br);
	if (r->user_null)
		avro_value_set_null(&br);
	else
		avro_value_set_long(&br, r->user);
	avro_value_get_by_name(&v, "store", &f, NULL);
	avro_value_set_long(&f, r->store);
	avro_value_get_by_name(&v, "time", &f, NULL);
	avro_value_set_branch(&f, r->time_text ? 1 : 0, &br);
	if (r->time_text)
		avro_value_set_string(&br, r->time_text);
	else
		avro_value_set_long(&br, r->time_long);

	buf[0] = 0;
	buf[1] = (char) (id >> 24);
	buf[2] = (char) (id >> 16);
	buf[3] = (char) (id >> 8);
	buf[4] = (char) id;
	w = avro_writer_memory(buf + 5, sizeof(buf) - 5);
	if (avro_value_write(w, &v) != 0)
	{
		printf("encode: %s\n", avro_strerror());
		exit(2);
	}
	*len = 5 + (size_t) avro_writer_tell(w);
	avro_writer_free(w);
	avro_value_decref(&v);
	out = malloc(*len);
	memcpy(out, buf, *len);
	return out;
}

static AdsReason
decode(AdsAvroReader *rd, const char *buf, size_t len, AdsEvent *ev, char *detail)
{
	uint32_t	id;
	AdsReason	r = ads_avro_header(buf, len, 65536, &id, detail, ADS_DETAIL_LEN);

	if (r != ADS_OK)
		return r;
	return ads_avro_decode_event(rd, buf, len, ev, detail, ADS_DETAIL_LEN);
}

static uint64_t rng = UINT64_C(88172645463325252);

static uint64_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int
main(void)
{
	avro_schema_t schema;
	AdsFormat	fmt,
				fmt_us;
	AdsAvroReader *rd,
			   *rd_us,
			   *rd_bad;
	char		err[256],
				detail[ADS_DETAIL_LEN];
	const char *uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
	Rec			base = {uuid, 1, 0, 42, 7, 0, 1001, 3, NULL, INT64_C(1700000000123), 2};
	AdsEvent	ev;
	char	   *buf;
	size_t		len;
	AdsReason	r;

	if (avro_schema_from_json_length(SCHEMA, sizeof(SCHEMA) - 1, &schema) != 0)
	{
		printf("schema: %s\n", avro_strerror());
		return 2;
	}
	iface = avro_generic_class_from_schema(schema);

	ads_format_init(&fmt, 0);
	for (int i = 0; MAP[i]; i += 2)
		ads_format_set_field(&fmt, MAP[i], MAP[i + 1], err, sizeof(err));
	check(ads_format_finish(&fmt, err, sizeof(err)), "format", err);
	fmt_us = fmt;
	ads_format_set_ts(&fmt_us, "epoch_us", err, sizeof(err));
	rd = ads_avro_reader_new(7, SCHEMA, sizeof(SCHEMA) - 1, &fmt, err, sizeof(err));
	check(rd != NULL, "reader", err);
	rd_us = ads_avro_reader_new(7, SCHEMA, sizeof(SCHEMA) - 1, &fmt_us, err, sizeof(err));
	check(rd_us != NULL, "reader us", err);
	if (rd == NULL || rd_us == NULL)
		return 1;

	/* readers refuse what is not a record schema */
	rd_bad = ads_avro_reader_new(8, "\"long\"", 6, &fmt, err, sizeof(err));
	check(rd_bad == NULL && strstr(err, "not a record") != NULL, "non-record schema", err);
	rd_bad = ads_avro_reader_new(8, "{\"type\": ", 9, &fmt, err, sizeof(err));
	check(rd_bad == NULL && strstr(err, "does not parse") != NULL, "broken schema", err);

	/* the base record and random ones decode to what was written */
	for (int i = 0; i < 2000; i++)
	{
		Rec			x = base;
		char		idbuf[37];

		if (i > 0)
		{
			snprintf(idbuf, sizeof(idbuf), "%08" PRIx32 "-0000-4000-8000-%012" PRIx64,
					 (uint32_t) next(), next() & UINT64_C(0xffffffffffff));
			x.id = idbuf;
			x.kind = (int) (next() % 2);
			x.ad = (int64_t) (next() >> 1);
			x.campaign = (int32_t) (next() % 100000);
			x.user = (int64_t) (next() % 1000000);
			x.store = (int64_t) (next() % 1000);
			x.time_long = (int64_t) (next() % INT64_C(4000000000000));
			x.ntags = (int) (next() % 4);
		}
		buf = encode(&x, 7, &len);
		memset(&ev, 0, sizeof(ev));
		r = decode(rd, buf, len, &ev, detail);
		{
			char		got[37];

			ads_format_uuid(ev.event_id, got);
			if (!(r == ADS_OK && strcmp(got, x.id) == 0 && ev.ad_id == x.ad &&
				  ev.campaign_id == x.campaign && ev.user_id == x.user && ev.store_id == x.store &&
				  ev.ts_us == x.time_long * 1000 &&
				  ev.type == (x.kind == 1 ? ADS_EV_CLICK : ADS_EV_IMPRESSION)))
			{
				check(0, "round trip", detail);
				free(buf);
				break;
			}
		}
		/* every proper prefix fails without reading past it */
		if (i < 20)
			for (size_t n = 0; n < len; n++)
			{
				char	   *cut = malloc(n ? n : 1);

				memcpy(cut, buf, n);
				if (decode(rd, n ? cut : NULL, n, &ev, detail) == ADS_OK)
					check(0, "prefix accepted", detail);
				free(cut);
			}
		free(buf);
	}
	check(1, "round trips", NULL);

	/* ts in microseconds; ts as RFC 3339 text */
	buf = encode(&base, 7, &len);
	check(decode(rd_us, buf, len, &ev, detail) == ADS_OK && ev.ts_us == INT64_C(1700000000123),
		  "epoch_us", detail);
	free(buf);
	{
		Rec			x = base;

		x.time_text = "2023-11-14T22:13:20.5Z";
		buf = encode(&x, 7, &len);
		check(decode(rd, buf, len, &ev, detail) == ADS_OK && ev.ts_us == INT64_C(1700000000500000),
			  "rfc3339 text", detail);
		free(buf);
		x.time_text = "soon";
		buf = encode(&x, 7, &len);
		check(decode(rd, buf, len, &ev, detail) == ADS_R_INVALID_TIMESTAMP &&
			  strstr(detail, "\"time\"") != NULL, "bad text ts", detail);
		free(buf);
	}

	/* reasons */
	{
		struct
		{
			Rec			r;
			AdsReason	want;
			const char *detail;
		}			cases[] = {
			{{uuid, 1, 1, 42, 7, 0, 1001, 3, NULL, 1, 0}, ADS_R_MISSING_FIELD, "missing field \"payload.ad.id\""},
			{{uuid, 1, 0, 42, 7, 1, 1001, 3, NULL, 1, 0}, ADS_R_MISSING_FIELD, "missing field \"user\""},
			{{"nope", 1, 0, 42, 7, 0, 1001, 3, NULL, 1, 0}, ADS_R_INVALID_UUID, "\"eventId\""},
			{{uuid, 2, 0, 42, 7, 0, 1001, 3, NULL, 1, 0}, ADS_R_UNKNOWN_TYPE, "\"kind\""},
			{{uuid, 1, 0, -1, 7, 0, 1001, 3, NULL, 1, 0}, ADS_R_NEGATIVE_ID, "\"payload.ad.id\""},
			{{uuid, 1, 0, 1, -7, 0, 1001, 3, NULL, 1, 0}, ADS_R_NEGATIVE_ID, "\"payload.ad.campaign\""},
			{{uuid, 1, 0, 1, 7, 0, 1001, 3, NULL, -1, 0}, ADS_R_OUT_OF_RANGE, "\"time\""},
			{{uuid, 1, 0, 1, 7, 0, 1001, 3, NULL, INT64_C(253402300800000), 0}, ADS_R_OUT_OF_RANGE, "\"time\""},
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		{
			buf = encode(&cases[i].r, 7, &len);
			r = decode(rd, buf, len, &ev, detail);
			check(r == cases[i].want && strstr(detail, cases[i].detail) != NULL,
				  ads_reason_name(cases[i].want), detail);
			free(buf);
		}
	}

	/* the header, leftovers, a field the schema lacks */
	buf = encode(&base, 7, &len);
	buf[0] = 1;
	check(decode(rd, buf, len, &ev, detail) == ADS_R_BAD_MAGIC_BYTE, "bad magic", detail);
	buf[0] = 0;
	check(decode(rd, buf, 4, &ev, detail) == ADS_R_INVALID_AVRO, "short header", detail);
	check(decode(rd, buf, 0, &ev, detail) == ADS_R_EMPTY, "empty", detail);
	{
		char	   *more = malloc(len + 1);

		memcpy(more, buf, len);
		more[len] = 0;
		check(decode(rd, more, len + 1, &ev, detail) == ADS_R_INVALID_AVRO &&
			  strstr(detail, "left over") != NULL, "left over", detail);
		free(more);
	}
	{
		AdsFormat	f2 = fmt;
		AdsAvroReader *r2;

		ads_format_set_field(&f2, "store_id", "shop.id", err, sizeof(err));
		ads_format_finish(&f2, err, sizeof(err));
		r2 = ads_avro_reader_new(9, SCHEMA, sizeof(SCHEMA) - 1, &f2, err, sizeof(err));
		check(r2 != NULL && decode(r2, buf, len, &ev, detail) == ADS_R_MISSING_FIELD &&
			  strstr(detail, "not in schema 9") != NULL, "path not in schema", detail);
		ads_avro_reader_free(r2);
	}
	/* a huge string length prefix is an error, not a crash */
	{
		char		evil[16] = {0, 0, 0, 0, 7, (char) 0xfe, (char) 0xff, (char) 0xff, (char) 0xff,
		(char) 0xff, (char) 0xff, (char) 0xff, (char) 0xff, (char) 0x7f, 'a', 'b'};
		char	   *e = malloc(sizeof(evil));

		memcpy(e, evil, sizeof(evil));
		check(decode(rd, e, sizeof(evil), &ev, detail) == ADS_R_INVALID_AVRO, "huge length", detail);
		free(e);
	}
	free(buf);
	ads_avro_reader_free(rd);
	ads_avro_reader_free(rd_us);
	printf("%d passed, %d failed\n", n_passed, n_failed);
	return n_failed == 0 ? 0 : 1;
}
