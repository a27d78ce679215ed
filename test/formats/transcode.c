/*
 * transcode.c
 *     Re-writes the load generator's events in the shape of a "real"
 *     producer, for the input-format tests (test/t/220_formats.pl) and the
 *     parser benchmark: JSON with other member names and nesting, with ts in
 *     seconds, milliseconds, microseconds or RFC 3339, or Avro in the
 *     Confluent wire format, encoded by libavro.
 *
 *   adstream-transcode --in DUMP --out DUMP --format json|avro
 *       [--ts-format epoch_s|epoch_ms|epoch_us|rfc3339] [--schema-id N]
 *   adstream-transcode --write-schema FILE
 *   adstream-transcode --bad-out DUMP --bad-truth FILE --format json|avro
 *       [--ts-format ...] [--schema-id N]
 *
 * DUMP files are adstream-loadgen's --dump format (replayed with --replay).
 * Every record of --in must be a valid event (run the generator with
 * --bad-ratio 0): it is parsed with the consumer's own parser and written
 * again with the same values, so the generator's ground truth still holds
 * (a ts in seconds is floored, which keeps its minute).  Equal inputs give
 * equal outputs, so duplicates stay duplicates.
 *
 * --bad-out writes a fixed set of broken records, one defect each, and
 * --bad-truth the dead letters they must give, as truth lines
 * ("reject,REASON,N", "total,rejected,N") for check_truth.
 *
 * The producer's shape, and the mapping a source needs for it:
 *   {"eventId": "...", "kind": "click",
 *    "payload": {"ad": {"id": 1, "campaign": 2}},
 *    "user": {"id": 3}, "storeId": 4, "time": ...}
 *   {"event_id": "eventId", "type": "kind", "ad_id": "payload.ad.id",
 *    "campaign_id": "payload.ad.campaign", "user_id": "user.id",
 *    "store_id": "storeId", "ts": "time"}
 * In Avro, kind is an enum, user a union with null, storeId ["null", "long"]
 * and time a long.
 *
 * Orders (the "orders ..." records of a dump made with --orders-topic) go
 * to --orders-out, as JSON only, in the shape
 *   {"id": "...", "buyer": {"id": 1}, "shop": {"id": 2},
 *    "total": {"value": "12.50", "ccy": "EUR"}, "at": ...}
 *   {"order_id": "id", "user_id": "buyer.id", "store_id": "shop.id",
 *    "amount": "total.value", "currency": "total.ccy", "ts": "at"}
 * (generate them with --orders-bad-ratio 0).
 */
#define _DEFAULT_SOURCE

#include <avro.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event_parse.h"

static const char SCHEMA[] =
"{\"type\": \"record\", \"name\": \"AdEvent\", \"namespace\": \"test.adstream\", \"fields\": ["
"{\"name\": \"eventId\", \"type\": \"string\"},"
"{\"name\": \"kind\", \"type\": {\"type\": \"enum\", \"name\": \"Kind\", \"symbols\": [\"impression\", \"click\"]}},"
"{\"name\": \"payload\", \"type\": {\"type\": \"record\", \"name\": \"Payload\", \"fields\": ["
"  {\"name\": \"ad\", \"type\": {\"type\": \"record\", \"name\": \"Ad\", \"fields\": ["
"    {\"name\": \"id\", \"type\": \"long\"}, {\"name\": \"campaign\", \"type\": \"long\"}]}}]}},"
"{\"name\": \"user\", \"type\": [\"null\", {\"type\": \"record\", \"name\": \"User\", \"fields\": ["
"  {\"name\": \"id\", \"type\": \"long\"}]}]},"
"{\"name\": \"storeId\", \"type\": [\"null\", \"long\"]},"
"{\"name\": \"time\", \"type\": \"long\"},"
"{\"name\": \"note\", \"type\": [\"null\", \"string\"], \"default\": null}"
"]}";

typedef enum
{
	TS_S, TS_MS, TS_US, TS_RFC
} TsUnit;

static int	avro_out;
static TsUnit unit = TS_MS;
static uint32_t schema_id = 1;
static avro_schema_t schema;
static avro_value_iface_t *iface;

static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "adstream-transcode: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int64_t
floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0 ? 1 : 0);
}

static int64_t
ts_value(int64_t ts_us)
{
	return unit == TS_S ? floor_div(ts_us, 1000000) : unit == TS_MS ? floor_div(ts_us, 1000) : ts_us;
}

static void
rfc3339(int64_t ts_us, char *out, size_t cap)
{
	time_t		secs = (time_t) floor_div(ts_us, 1000000);
	struct tm	tm;

	gmtime_r(&secs, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRId64 "Z",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts_us - floor_div(ts_us, 1000000) * 1000000);
}

/* Defects of hand-made records. */
typedef enum
{
	D_NONE,
	D_NULL_USER,				/* avro: user is null; json: payload.ad.id missing */
	D_NEGATIVE_AD,
	D_BAD_UUID,
	D_TS_RANGE,
	D_PAYLOAD_NUMBER,			/* json only */
	D_DUP_PAYLOAD,				/* json only */
	D_TS_TEXT,					/* json only: ts "yesterday" */
	D_STORE_TEXT				/* json only: storeId "x" */
} Defect;

static size_t
render_json(const AdsEvent *ev, Defect d, char *out, size_t cap)
{
	char		id[37],
				ts[64];
	int64_t		ts_us = d == D_TS_RANGE ? INT64_C(-86400000000) : ev->ts_us;

	ads_format_uuid(ev->event_id, id);
	if (unit == TS_RFC)
	{
		char		r[48];

		rfc3339(ts_us, r, sizeof(r));
		snprintf(ts, sizeof(ts), "\"%s\"", r);
	}
	else
		snprintf(ts, sizeof(ts), "%" PRId64, ts_value(ts_us));
	if (d == D_TS_TEXT)
		snprintf(ts, sizeof(ts), "\"yesterday\"");
	return (size_t) snprintf(out, cap,
							 "{\"eventId\":\"%s\",\"kind\":\"%s\",%s\"user\":{\"id\":%" PRId64 "},"
							 "\"storeId\":%s,\"time\":%s,\"note\":{\"ad\":{\"id\":-1}}}",
							 d == D_BAD_UUID ? "not-a-uuid" : id,
							 ev->type == ADS_EV_CLICK ? "click" : "impression",
							 d == D_NULL_USER ? "\"payload\":{\"ad\":{\"campaign\":1}}," :
							 d == D_PAYLOAD_NUMBER ? "\"payload\":5," :
							 d == D_DUP_PAYLOAD ? "\"payload\":{\"ad\":{\"id\":1,\"campaign\":1}},\"payload\":{}," :
							 d == D_NEGATIVE_AD ? "\"payload\":{\"ad\":{\"id\":-7,\"campaign\":1}}," :
							 "\"payload\":{\"ad\":{\"id\":AD,\"campaign\":CAMP}},",
							 ev->user_id,
							 d == D_STORE_TEXT ? "\"x\"" : "STORE", ts);
}

/* render_json with the placeholders filled (keeps the format string short). */
static size_t
json_event(const AdsEvent *ev, Defect d, char *out, size_t cap)
{
	char		tmp[1024],
				num[32];
	char	   *p;
	size_t		n = render_json(ev, d, tmp, sizeof(tmp));
	const char *keys[3] = {"AD", "CAMP", "STORE"};
	int64_t		vals[3] = {ev->ad_id, ev->campaign_id, ev->store_id};

	(void) n;
	for (int k = 0; k < 3; k++)
		if ((p = strstr(tmp, keys[k])) != NULL)
		{
			char		rest[1024];

			snprintf(num, sizeof(num), "%" PRId64, vals[k]);
			snprintf(rest, sizeof(rest), "%s", p + strlen(keys[k]));
			snprintf(p, sizeof(tmp) - (size_t) (p - tmp), "%s%s", num, rest);
		}
	return (size_t) snprintf(out, cap, "%s", tmp);
}

static size_t
avro_event(const AdsEvent *ev, Defect d, uint32_t id_in_header, char *out, size_t cap)
{
	avro_value_t rec,
				f,
				g,
				h,
				br;
	avro_writer_t w;
	char		id[37];
	size_t		len;

	ads_format_uuid(ev->event_id, id);
	if (avro_generic_value_new(iface, &rec) != 0)
		die("avro: %s", avro_strerror());
	avro_value_get_by_name(&rec, "eventId", &f, NULL);
	avro_value_set_string(&f, d == D_BAD_UUID ? "not-a-uuid" : id);
	avro_value_get_by_name(&rec, "kind", &f, NULL);
	avro_value_set_enum(&f, ev->type == ADS_EV_CLICK ? 1 : 0);
	avro_value_get_by_name(&rec, "payload", &f, NULL);
	avro_value_get_by_name(&f, "ad", &g, NULL);
	avro_value_get_by_name(&g, "id", &h, NULL);
	avro_value_set_long(&h, d == D_NEGATIVE_AD ? -7 : ev->ad_id);
	avro_value_get_by_name(&g, "campaign", &h, NULL);
	avro_value_set_long(&h, ev->campaign_id);
	avro_value_get_by_name(&rec, "user", &f, NULL);
	if (d == D_NULL_USER)
	{
		avro_value_set_branch(&f, 0, &br);
		avro_value_set_null(&br);
	}
	else
	{
		avro_value_set_branch(&f, 1, &br);
		avro_value_get_by_name(&br, "id", &g, NULL);
		avro_value_set_long(&g, ev->user_id);
	}
	avro_value_get_by_name(&rec, "storeId", &f, NULL);
	avro_value_set_branch(&f, 1, &br);
	avro_value_set_long(&br, ev->store_id);
	avro_value_get_by_name(&rec, "time", &f, NULL);
	avro_value_set_long(&f, d == D_TS_RANGE ? -1 : ts_value(ev->ts_us));
	avro_value_get_by_name(&rec, "note", &f, NULL);
	avro_value_set_branch(&f, 0, &br);
	avro_value_set_null(&br);

	out[0] = 0;
	out[1] = (char) (id_in_header >> 24);
	out[2] = (char) (id_in_header >> 16);
	out[3] = (char) (id_in_header >> 8);
	out[4] = (char) id_in_header;
	w = avro_writer_memory(out + 5, (int64_t) cap - 5);
	if (avro_value_write(w, &rec) != 0)
		die("avro write: %s", avro_strerror());
	len = 5 + (size_t) avro_writer_tell(w);
	avro_writer_free(w);
	avro_value_decref(&rec);
	return len;
}

static size_t
encode(const AdsEvent *ev, Defect d, char *out, size_t cap)
{
	return avro_out ? avro_event(ev, d, schema_id, out, cap) : json_event(ev, d, out, cap);
}

static void
put_record(FILE *f, int part, const char *v, size_t n)
{
	fprintf(f, "%d -1 %zu\n", part, n);
	fwrite(v, 1, n, f);
	fputc('\n', f);
}

/* The defects of each format and the reasons they must give. */
static void
write_bad(const char *dump, const char *truth)
{
	FILE	   *f = fopen(dump, "wb"),
			   *t = fopen(truth, "w");
	AdsEvent	ev;
	char		buf[2048];
	size_t		n;
	int			total = 0;
	static const uint8_t uuid[16] = {0x5a, 0x1d, 0x00, 0x00, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1};

	if (f == NULL || t == NULL)
		die("cannot write %s or %s", dump, truth);
	memset(&ev, 0, sizeof(ev));
	memcpy(ev.event_id, uuid, 16);
	ev.type = ADS_EV_CLICK;
	ev.ad_id = 3;
	ev.campaign_id = 4;
	ev.user_id = 5;
	ev.store_id = 6;
	ev.ts_us = (int64_t) time(NULL) * 1000000 - INT64_C(600000000);

#define BAD(reason, count) do { fprintf(t, "reject,%s,%d\n", reason, count); total += count; } while (0)
	if (avro_out)
	{
		n = encode(&ev, D_NONE, buf, sizeof(buf));
		buf[0] = 1;				/* bad magic */
		put_record(f, 0, buf, n);
		BAD("bad_magic_byte", 1);
		put_record(f, 1, "\0\0\0", 3);	/* shorter than the header */
		n = avro_event(&ev, D_NONE, 4242, buf, sizeof(buf));	/* unknown id */
		put_record(f, 0, buf, n);
		BAD("unknown_schema", 1);
		n = encode(&ev, D_NONE, buf, sizeof(buf));
		put_record(f, 1, buf, 8);	/* body cut short */
		memcpy(buf + n, "\x02\x02", 2);	/* bytes left over */
		put_record(f, 0, buf, n + 2);
		BAD("invalid_avro", 3);
		n = encode(&ev, D_NULL_USER, buf, sizeof(buf));
		put_record(f, 1, buf, n);
		BAD("missing_field", 1);
	}
	else
	{
		n = encode(&ev, D_NULL_USER, buf, sizeof(buf));
		put_record(f, 0, buf, n);
		n = encode(&ev, D_PAYLOAD_NUMBER, buf, sizeof(buf));
		put_record(f, 1, buf, n);
		BAD("missing_field", 2);
		n = encode(&ev, D_DUP_PAYLOAD, buf, sizeof(buf));
		put_record(f, 0, buf, n);
		BAD("duplicate_key", 1);
		n = encode(&ev, D_TS_TEXT, buf, sizeof(buf));
		put_record(f, 1, buf, n);
		BAD("invalid_timestamp", 1);
		n = encode(&ev, D_STORE_TEXT, buf, sizeof(buf));
		put_record(f, 0, buf, n);
		BAD("wrong_type", 1);
	}
	n = encode(&ev, D_NEGATIVE_AD, buf, sizeof(buf));
	put_record(f, 1, buf, n);
	BAD("negative_id", 1);
	n = encode(&ev, D_BAD_UUID, buf, sizeof(buf));
	put_record(f, 0, buf, n);
	BAD("invalid_uuid", 1);
	n = encode(&ev, D_TS_RANGE, buf, sizeof(buf));
	put_record(f, 1, buf, n);
	BAD("out_of_range", 1);
	fprintf(t, "total,rejected,%d\n", total);
	fclose(f);
	fclose(t);
}

static size_t
json_order(const AdsOrder *ord, char *out, size_t cap)
{
	char		id[37],
				ts[64];

	ads_format_uuid(ord->order_id, id);
	if (unit == TS_RFC)
	{
		char		r[48];

		rfc3339(ord->ts_us, r, sizeof(r));
		snprintf(ts, sizeof(ts), "\"%s\"", r);
	}
	else
		snprintf(ts, sizeof(ts), "%" PRId64, ts_value(ord->ts_us));
	return (size_t) snprintf(out, cap,
							 "{\"id\":\"%s\",\"buyer\":{\"id\":%" PRId64 "},\"shop\":{\"id\":%" PRId64 "},"
							 "\"total\":{\"value\":\"%s\",\"ccy\":\"%s\"},\"at\":%s}",
							 id, ord->user_id, ord->store_id, ord->amount, ord->currency, ts);
}

static void
transcode(const char *in, const char *out, const char *orders_out)
{
	FILE	   *f = fopen(in, "rb"),
			   *o = fopen(out, "wb"),
			   *oo = orders_out ? fopen(orders_out, "wb") : NULL;
	char		line[256];
	char	   *val = malloc(1 << 20),
			   *buf = malloc(1 << 16);
	long		count = 0;

	if (f == NULL || o == NULL)
		die("cannot read %s or write %s", in, out);
	while (fgets(line, sizeof(line), f) != NULL)
	{
		int			part;
		long		klen,
					vlen;
		AdsEvent	ev;
		AdsOrder	ord;
		char		detail[ADS_DETAIL_LEN];
		AdsReason	r;
		size_t		n;
		int			is_order = strncmp(line, "orders ", 7) == 0;

		if (sscanf(line + (is_order ? 7 : 0), "%d %ld %ld", &part, &klen, &vlen) != 3)
			die("bad dump header: %s", line);
		if (klen > 0 && fseek(f, klen, SEEK_CUR) != 0)
			die("short dump");
		if (vlen < 0 || vlen > (1 << 20) || fread(val, 1, (size_t) vlen, f) != (size_t) vlen)
			die("bad dump value");
		fgetc(f);
		if (is_order)
		{
			if (oo == NULL)
				die("the dump has orders: give --orders-out");
			r = ads_parse_order(val, (size_t) vlen, 1 << 20, &ord, detail, sizeof(detail));
			if (r != ADS_OK)
				die("order record is not valid (%s: %s); generate with --orders-bad-ratio 0",
					ads_reason_name(r), detail);
			n = json_order(&ord, buf, 1 << 16);
			put_record(oo, part, buf, n);
			continue;
		}
		r = ads_parse_event(val, (size_t) vlen, 1 << 20, &ev, detail, sizeof(detail));
		if (r != ADS_OK)
			die("record %ld is not a valid event (%s: %s); generate with --bad-ratio 0",
				count, ads_reason_name(r), detail);
		n = encode(&ev, D_NONE, buf, 1 << 16);
		put_record(o, part, buf, n);
		count++;
	}
	fclose(f);
	fclose(o);
	if (oo)
		fclose(oo);
	printf("transcoded=%ld\n", count);
}

int
main(int argc, char **argv)
{
	const char *in = NULL,
			   *out = NULL,
			   *schema_file = NULL,
			   *bad_out = NULL,
			   *bad_truth = NULL,
			   *orders_out = NULL;
	static const struct option opts[] = {
		{"in", required_argument, NULL, 'i'},
		{"out", required_argument, NULL, 'o'},
		{"format", required_argument, NULL, 'f'},
		{"ts-format", required_argument, NULL, 't'},
		{"schema-id", required_argument, NULL, 's'},
		{"write-schema", required_argument, NULL, 'w'},
		{"bad-out", required_argument, NULL, 'b'},
		{"bad-truth", required_argument, NULL, 'B'},
		{"orders-out", required_argument, NULL, 'O'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
		switch (c)
		{
			case 'i':
				in = optarg;
				break;
			case 'o':
				out = optarg;
				break;
			case 'f':
				if (strcmp(optarg, "avro") == 0)
					avro_out = 1;
				else if (strcmp(optarg, "json") != 0)
					die("--format json or avro");
				break;
			case 't':
				unit = strcmp(optarg, "epoch_s") == 0 ? TS_S : strcmp(optarg, "epoch_ms") == 0 ? TS_MS :
					strcmp(optarg, "epoch_us") == 0 ? TS_US : strcmp(optarg, "rfc3339") == 0 ? TS_RFC :
					(die("unknown --ts-format %s", optarg), TS_MS);
				break;
			case 's':
				schema_id = (uint32_t) strtoul(optarg, NULL, 10);
				break;
			case 'w':
				schema_file = optarg;
				break;
			case 'b':
				bad_out = optarg;
				break;
			case 'B':
				bad_truth = optarg;
				break;
			case 'O':
				orders_out = optarg;
				break;
			default:
				die("usage: see the comment at the top of test/formats/transcode.c");
		}
	if (avro_out && unit == TS_RFC)
		die("the Avro schema's time is a long: use an epoch ts format");
	if (avro_schema_from_json_length(SCHEMA, sizeof(SCHEMA) - 1, &schema) != 0)
		die("schema: %s", avro_strerror());
	iface = avro_generic_class_from_schema(schema);
	if (schema_file)
	{
		FILE	   *f = fopen(schema_file, "w");

		if (f == NULL || fputs(SCHEMA, f) < 0 || fclose(f) != 0)
			die("cannot write %s", schema_file);
	}
	if (bad_out && bad_truth)
		write_bad(bad_out, bad_truth);
	if (in && out)
		transcode(in, out, orders_out);
	return 0;
}
