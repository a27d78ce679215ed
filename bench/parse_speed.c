/*
 * parse_speed.c
 *     The parser's speed on each input format, without Kafka or PostgreSQL:
 *     the same generated events as JSON in the contract's shape (the
 *     default path), as JSON in a producer's shape through a field mapping,
 *     and as Avro in the Confluent wire format (libavro-encoded, decoded
 *     with src/avro_format.c through the same mapping).  Each format is
 *     parsed over and over for --seconds, and every pass must accept every
 *     event with the same values (a checksum), so nothing is optimised away
 *     and the three paths are seen to agree.
 *
 *   bench/bin/parse_speed [--events N] [--seconds S]     (20000, 1.0)
 *
 * Prints one Markdown table: format, bytes per message, ns per message,
 * messages per second and MB/s, on one core.  bench/run.sh runs it; the
 * machine may be shared, so the figures are indicative.
 */
#define _POSIX_C_SOURCE 200809L

#include <avro.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "avro_format.h"

static const char SCHEMA[] =
"{\"type\": \"record\", \"name\": \"AdEvent\", \"fields\": ["
"{\"name\": \"eventId\", \"type\": \"string\"},"
"{\"name\": \"kind\", \"type\": {\"type\": \"enum\", \"name\": \"Kind\", \"symbols\": [\"impression\", \"click\"]}},"
"{\"name\": \"payload\", \"type\": {\"type\": \"record\", \"name\": \"Payload\", \"fields\": ["
"  {\"name\": \"ad\", \"type\": {\"type\": \"record\", \"name\": \"Ad\", \"fields\": ["
"    {\"name\": \"id\", \"type\": \"long\"}, {\"name\": \"campaign\", \"type\": \"long\"}]}}]}},"
"{\"name\": \"user\", \"type\": [\"null\", {\"type\": \"record\", \"name\": \"User\", \"fields\": ["
"  {\"name\": \"id\", \"type\": \"long\"}]}]},"
"{\"name\": \"storeId\", \"type\": [\"null\", \"long\"]},"
"{\"name\": \"time\", \"type\": \"long\"}"
"]}";

static const char *const MAP[] = {
	"event_id", "eventId", "type", "kind", "ad_id", "payload.ad.id",
	"campaign_id", "payload.ad.campaign", "user_id", "user.id",
	"store_id", "storeId", "ts", "time", NULL
};

typedef struct Msg
{
	char	   *buf;
	size_t		len;
} Msg;

static uint64_t rng = UINT64_C(0x2545F4914F6CDD1D);

static uint64_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static Msg
dup_msg(const char *s, size_t n)
{
	Msg			m;

	m.buf = malloc(n);
	memcpy(m.buf, s, n);
	m.len = n;
	return m;
}

typedef enum
{
	JSON_DEFAULT, JSON_MAPPED, AVRO
} Which;

static AdsFormat mapped;
static AdsAvroReader *reader;

static uint64_t
parse_all(Which w, const Msg *msgs, int n)
{
	uint64_t	sum = 0;

	for (int i = 0; i < n; i++)
	{
		AdsEvent	ev;
		AdsReason	r;
		uint32_t	id;

		if (w == JSON_DEFAULT)
			r = ads_parse_event(msgs[i].buf, msgs[i].len, 1 << 20, &ev, NULL, 0);
		else if (w == JSON_MAPPED)
			r = ads_parse_event_fmt(msgs[i].buf, msgs[i].len, 1 << 20, &mapped, &ev, NULL, 0);
		else
		{
			r = ads_avro_header(msgs[i].buf, msgs[i].len, 1 << 20, &id, NULL, 0);
			if (r == ADS_OK)
				r = ads_avro_decode_event(reader, msgs[i].buf, msgs[i].len, &ev, NULL, 0);
		}
		if (r != ADS_OK)
		{
			fprintf(stderr, "parse_speed: message %d rejected (%s)\n", i, ads_reason_name(r));
			exit(1);
		}
		sum += (uint64_t) ev.ad_id * 31 + (uint64_t) ev.user_id + (uint64_t) ev.ts_us + ev.event_id[3] + ev.type;
	}
	return sum;
}

int
main(int argc, char **argv)
{
	int			n = 20000;
	double		seconds = 1.0;
	Msg		   *fmts[3];
	const char *names[3] = {"JSON, contract shape (default)", "JSON, field mapping", "Avro + field mapping"};
	uint64_t	sums[3];
	avro_schema_t schema;
	avro_value_iface_t *iface;
	char		err[256];

	for (int i = 1; i + 1 < argc; i += 2)
	{
		if (strcmp(argv[i], "--events") == 0)
			n = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			seconds = atof(argv[i + 1]);
	}
	if (n < 1 || seconds <= 0)
	{
		fprintf(stderr, "usage: parse_speed [--events N] [--seconds S]\n");
		return 2;
	}

	ads_format_init(&mapped, 0);
	for (int i = 0; MAP[i]; i += 2)
		ads_format_set_field(&mapped, MAP[i], MAP[i + 1], err, sizeof(err));
	if (!ads_format_finish(&mapped, err, sizeof(err)) ||
		avro_schema_from_json_length(SCHEMA, sizeof(SCHEMA) - 1, &schema) != 0 ||
		(reader = ads_avro_reader_new(1, SCHEMA, sizeof(SCHEMA) - 1, &mapped, err, sizeof(err))) == NULL)
	{
		fprintf(stderr, "parse_speed: setup: %s %s\n", err, avro_strerror());
		return 1;
	}
	iface = avro_generic_class_from_schema(schema);

	for (int k = 0; k < 3; k++)
		fmts[k] = malloc(sizeof(Msg) * (size_t) n);
	for (int i = 0; i < n; i++)
	{
		char		id[37],
					buf[1024];
		int64_t		ad = (int64_t) (next() % 100000),
					camp = ad % 500,
					user = (int64_t) (next() % 10000000),
					store = (int64_t) (next() % 2000),
					ts_ms = INT64_C(1764000000000) + (int64_t) (next() % 86400000);
		int			click = next() % 10 == 0;
		uint64_t	a = next(),
					b = next();
		int			len;
		avro_value_t v,
					f,
					g,
					h,
					br;
		avro_writer_t wr;

		snprintf(id, sizeof(id), "%08" PRIx32 "-%04" PRIx32 "-4%03" PRIx32 "-%04" PRIx32 "-%012" PRIx64,
				 (uint32_t) a, (uint32_t) (a >> 32) & 0xffff, (uint32_t) (a >> 48) & 0xfff,
				 (uint32_t) (0x8000 | (b & 0x3fff)), (b >> 16) & UINT64_C(0xffffffffffff));
		len = snprintf(buf, sizeof(buf),
					   "{\"event_id\":\"%s\",\"type\":\"%s\",\"ad_id\":%" PRId64 ",\"campaign_id\":%" PRId64
					   ",\"user_id\":%" PRId64 ",\"store_id\":%" PRId64 ",\"ts\":%" PRId64 "}",
					   id, click ? "click" : "impression", ad, camp, user, store, ts_ms);
		fmts[JSON_DEFAULT][i] = dup_msg(buf, (size_t) len);
		len = snprintf(buf, sizeof(buf),
					   "{\"eventId\":\"%s\",\"kind\":\"%s\",\"payload\":{\"ad\":{\"id\":%" PRId64 ",\"campaign\":%" PRId64
					   "}},\"user\":{\"id\":%" PRId64 "},\"storeId\":%" PRId64 ",\"time\":%" PRId64 "}",
					   id, click ? "click" : "impression", ad, camp, user, store, ts_ms);
		fmts[JSON_MAPPED][i] = dup_msg(buf, (size_t) len);

		avro_generic_value_new(iface, &v);
		avro_value_get_by_name(&v, "eventId", &f, NULL);
		avro_value_set_string(&f, id);
		avro_value_get_by_name(&v, "kind", &f, NULL);
		avro_value_set_enum(&f, click);
		avro_value_get_by_name(&v, "payload", &f, NULL);
		avro_value_get_by_name(&f, "ad", &g, NULL);
		avro_value_get_by_name(&g, "id", &h, NULL);
		avro_value_set_long(&h, ad);
		avro_value_get_by_name(&g, "campaign", &h, NULL);
		avro_value_set_long(&h, camp);
		avro_value_get_by_name(&v, "user", &f, NULL);
		avro_value_set_branch(&f, 1, &br);
		avro_value_get_by_name(&br, "id", &g, NULL);
		avro_value_set_long(&g, user);
		avro_value_get_by_name(&v, "storeId", &f, NULL);
		avro_value_set_branch(&f, 1, &br);
		avro_value_set_long(&br, store);
		avro_value_get_by_name(&v, "time", &f, NULL);
		avro_value_set_long(&f, ts_ms);
		memset(buf, 0, 5);
		buf[4] = 1;
		wr = avro_writer_memory(buf + 5, sizeof(buf) - 5);
		avro_value_write(wr, &v);
		fmts[AVRO][i] = dup_msg(buf, 5 + (size_t) avro_writer_tell(wr));
		avro_writer_free(wr);
		avro_value_decref(&v);
	}

	printf("| format | bytes/msg | ns/msg | msgs/s | MB/s |\n|---|---:|---:|---:|---:|\n");
	for (int k = 0; k < 3; k++)
	{
		double		t0,
					t;
		long		passes = 0;
		size_t		bytes = 0;

		for (int i = 0; i < n; i++)
			bytes += fmts[k][i].len;
		sums[k] = parse_all((Which) k, fmts[k], n);	/* warm-up and check */
		t0 = now_s();
		do
		{
			if (parse_all((Which) k, fmts[k], n) != sums[k])
			{
				fprintf(stderr, "parse_speed: %s is not deterministic\n", names[k]);
				return 1;
			}
			passes++;
			t = now_s() - t0;
		} while (t < seconds);
		printf("| %s | %.0f | %.0f | %.0f | %.1f |\n", names[k], (double) bytes / n,
			   t * 1e9 / ((double) passes * n), (double) passes * n / t,
			   (double) passes * (double) bytes / t / 1e6);
	}
	if (sums[JSON_DEFAULT] != sums[JSON_MAPPED] || sums[JSON_DEFAULT] != sums[AVRO])
	{
		fprintf(stderr, "parse_speed: the formats disagree on the events\n");
		return 1;
	}
	printf("\n%d events, each format parsed for %.1f s on one core; all three gave the same events.\n",
		   n, seconds);
	return 0;
}
