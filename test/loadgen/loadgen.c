/*-------------------------------------------------------------------------
 *
 * loadgen.c
 *	  Seeded load generator for adstream: produces ad events to Kafka and
 *	  computes the exact result the consumer must arrive at.
 *
 * Every message is decided by a PRNG seeded from --seed, so the same options
 * give the same stream, byte for byte and partition for partition, and the
 * same ground truth.  The only inputs besides the options are the wall clock
 * (the default for --now-ms, which in turn is the default for --start-ms and
 * the base of "future" events) and, with --realtime, the clock at send time.
 * Pass --now-ms for a fully reproducible run.
 *
 * The stream mixes:
 *	  - valid events, each with a fresh v4 UUID;
 *	  - duplicates: the exact bytes of one of the last ~1000 valid events,
 *		usually to a different partition than the original;
 *	  - old events (--late-ratio), impressions timed an hour (--horizon-s)
 *		plus a minute behind the newest accepted event of their partition.
 *		adstream counts them: an event is too late only once its hour's
 *		dedup state has expired, which only maintenance does, so a run
 *		that expires must keep its old events out of the hours it expires;
 *	  - future events, a day ahead of now;
 *	  - bad records with exactly one defect each (see make_bad()).
 *
 * The generator picks every message's partition itself (round robin by
 * message number) so that it can track each partition's event-time
 * watermark the same way the consumer does.  Keys are the ad id in decimal
 * for event-shaped records and NULL for bad ones; the consumer ignores them.
 *
 * Margins keep the truth independent of details the contract leaves open:
 * every other event is at least 1 s inside the horizon of its partition, and
 * a duplicate that would not be clearly in time there is replaced by a fresh
 * valid event.
 *
 * --dump FILE writes every record as a header line "PARTITION KEYLEN
 * VALUELEN" (KEYLEN -1 for no key), then the raw key and value bytes, then
 * a newline: handy for feeding the parser without Kafka (see --dry-run).
 * Records of the orders stream have the header "orders PARTITION KEYLEN
 * VALUELEN" instead.
 *
 * --replay FILE is the inverse: it produces the records of a dump-format
 * file to --topic, byte for byte and in file order (the producer is
 * idempotent, so each partition keeps that order), and generates nothing
 * else; --count and the truth options are ignored.  VALUELEN -1 sends a
 * NULL value.  Tests use it for hand-made hostile records (multi-MB
 * values, NUL bytes, invalid UTF-8, empty and NULL values).
 *
 * Orders (--orders-topic T2 --orders N): an optional second stream, produced
 * only after every event has been delivered, of orders whose last-click
 * attribution to the valid clicks of the events stream is part of the
 * truth (see "Orders" below).  The truth file then also has, after the
 * event lines:
 *	  order,ORDER_ID,AD_ID,CAMPAIGN_ID,CLICK_EVENT_ID,CLICK_TS_MS,ORDER_TS_MS,AMOUNT,CURRENCY
 *	  order,ORDER_ID,,,,,ORDER_TS_MS,AMOUNT,CURRENCY		(not attributed)
 *	  reject_order,REASON,COUNT
 *	  total,orders_sent|orders_unique|orders_duplicates|orders_rejected,N
 * one order line per distinct valid order, sorted by order id; times in
 * epoch milliseconds, AMOUNT as ads_parse_order() canonicalises it.  The
 * events stream does not depend on whether orders are generated: for a
 * given seed it is the same, byte for byte.
 *
 * Build:
 *	  cc -O2 -Wall -Wextra -Werror -Iinclude -o test/bin/adstream-loadgen \
 *	     test/loadgen/loadgen.c $(pkg-config --cflags --libs rdkafka) -lm
 *
 *-------------------------------------------------------------------------
 */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* Only for the AdsReason enum, so reason numbering cannot drift. */
#include "event_parse.h"

#define RING_SIZE		1000	/* duplicates come from this many recent events */
#define MAX_EVENT_LEN	1024	/* any valid event we render is shorter */
#define MOCK_PART_LIMIT (5 * 1024 * 1024)	/* librdkafka mock: bytes kept per partition */
#define DAY_MS			INT64_C(86400000)

/*
 * Stable names for the consumer's rejection reasons.  These are the strings
 * the truth file uses; they must match ads_reason_name() in src/, which we
 * deliberately do not link against.
 */
static const char *const reason_names[] = {
	[ADS_OK] = "ok",
	[ADS_R_EMPTY] = "empty",
	[ADS_R_OVERSIZED] = "oversized",
	[ADS_R_NUL_BYTE] = "nul_byte",
	[ADS_R_INVALID_UTF8] = "invalid_utf8",
	[ADS_R_INVALID_JSON] = "invalid_json",
	[ADS_R_NOT_OBJECT] = "not_object",
	[ADS_R_DUPLICATE_KEY] = "duplicate_key",
	[ADS_R_MISSING_FIELD] = "missing_field",
	[ADS_R_WRONG_TYPE] = "wrong_type",
	[ADS_R_INVALID_UUID] = "invalid_uuid",
	[ADS_R_UNKNOWN_TYPE] = "unknown_type",
	[ADS_R_OUT_OF_RANGE] = "out_of_range",
	[ADS_R_NEGATIVE_ID] = "negative_id",
	[ADS_R_INVALID_TIMESTAMP] = "invalid_timestamp",
	[ADS_R_INVALID_AMOUNT] = "invalid_amount",
	[ADS_R_INVALID_CURRENCY] = "invalid_currency",
	[ADS_R_BAD_MAGIC_BYTE] = "bad_magic_byte",
	[ADS_R_UNKNOWN_SCHEMA] = "unknown_schema",
	[ADS_R_INVALID_AVRO] = "invalid_avro",
	[ADS_R_FUTURE_TIMESTAMP] = "future_timestamp",
	[ADS_R_TOO_LATE] = "too_late",
};

_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == ADS_R__COUNT,
			   "reason_names[] is out of date with event_parse.h");
_Static_assert(ADS_R_INVALID_AMOUNT > ADS_R_INVALID_TIMESTAMP &&
			   ADS_R_INVALID_CURRENCY > ADS_R_INVALID_TIMESTAMP,
			   "event defects are the reasons ADS_R_EMPTY..ADS_R_INVALID_TIMESTAMP");

/* ----------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */
/* --seq-headers: the header naming each send (read by adstream-upsert-reader --copies) */
#define SEQ_HEADER "adstream-seq"

typedef struct Options
{
	const char *brokers;
	const char *topic;
	int64_t		count;
	uint64_t	seed;
	double		rate;
	int64_t		ads;
	int64_t		campaigns;
	int64_t		users;
	int64_t		stores;
	double		click_ratio;
	double		dup_ratio;
	double		bad_ratio;
	double		late_ratio;
	double		future_ratio;
	double		rfc3339_ratio;
	int64_t		now_ms;
	int64_t		start_ms;
	int			have_start;
	int64_t		span_s;
	int			realtime;
	int64_t		horizon_s;
	int64_t		max_bytes;
	int			partitions;
	const char *truth_path;
	const char *dump_path;
	int			progress;
	int			dry_run;
	int			timeout_s;
	const char *debug;
	/* the optional orders stream */
	const char *orders_topic;
	int64_t		orders;
	int			orders_partitions;
	int64_t		window_s;
	double		orders_bad_ratio;
	double		orders_dup_ratio;
	const char *replay_path;
	int			copart;			/* --co-partition */
	int			orders_interleaved;	/* --orders-interleaved */
	int			batch;			/* records handed to the producer per partition at once */
	int			linger_ms;
	int			report_sets;	/* --batch or --linger-ms given: report message sets */
	int			seq_headers;	/* --seq-headers */
} Options;

static Options opt;

/* ----------------------------------------------------------------------
 * PRNG: xoshiro256** seeded through splitmix64.  Written out here rather
 * than using random(3) so that the stream does not depend on libc.
 * ---------------------------------------------------------------------- */
typedef struct Prng
{
	uint64_t	s[4];
} Prng;

static Prng rng;

static uint64_t
splitmix64(uint64_t *x)
{
	uint64_t	z = (*x += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static void
prng_seed(Prng *p, uint64_t seed)
{
	int			i;

	for (i = 0; i < 4; i++)
		p->s[i] = splitmix64(&seed);
}

static uint64_t
prng_next(Prng *p)
{
	uint64_t   *s = p->s;
	uint64_t	result = rotl(s[1] * 5, 7) * 9;
	uint64_t	t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

/* uniform in [0, n) without modulo bias worth mentioning (Lemire) */
static uint64_t
rand_below(uint64_t n)
{
	return (uint64_t) (((unsigned __int128) prng_next(&rng) * n) >> 64);
}

/* uniform in [0, 1) with 53 bits */
static double
rand_unit(void)
{
	return (double) (prng_next(&rng) >> 11) * 0x1.0p-53;
}

static int64_t
rand_range(int64_t lo, int64_t hi)	/* inclusive */
{
	return lo + (int64_t) rand_below((uint64_t) (hi - lo + 1));
}

/* ----------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */
static void
die(const char *fmt,...)
{
	va_list		ap;

	fputs("adstream-loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n);

	if (p == NULL)
		die("out of memory");
	return p;
}

static int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int64_t
floor_div(int64_t a, int64_t b)
{
	int64_t		q = a / b;

	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* Growable-free output buffer: fixed capacity, overflow is a bug. */
typedef struct OutBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} OutBuf;

static void
ob_put(OutBuf *b, const char *s, size_t n)
{
	if (b->len + n > b->cap)
		die("internal error: record buffer overflow");
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

static void
ob_puts(OutBuf *b, const char *s)
{
	ob_put(b, s, strlen(s));
}

static void
ob_printf(OutBuf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t) n >= b->cap - b->len)
		die("internal error: record buffer overflow");
	b->len += (size_t) n;
}

/* ----------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------- */
typedef enum Layout
{
	LAYOUT_COMPACT,				/* contract order, no whitespace */
	LAYOUT_SPACED,				/* ": " and ", ", trailing newline */
	LAYOUT_SHUFFLED				/* other key order, nested ignored object */
} Layout;

typedef struct GenEvent
{
	char		id[37];
	int			is_click;
	int64_t		ad_id;
	int64_t		campaign_id;
	int64_t		user_id;
	int64_t		store_id;
	int64_t		ts_ms;
	int			rfc3339;		/* ts as string instead of epoch ms */
	int			frac_digits;	/* 0, 3 or 6 */
	int			offset_min;		/* zone offset used to print the string */
	int			zulu;			/* print "Z" rather than "+00:00" */
	int			device;
	int			country;
	int			city;
	Layout		layout;
} GenEvent;

static const char *const devices[] = {"ios", "android", "web", "ctv"};
static const char *const countries[] = {"US", "DE", "FR", "BR", "JP", "IN", "GB", "PL"};

/*
 * Ignored text with multi-byte UTF-8, JSON escapes, an escaped quote and a
 * 4-byte emoji; only the shuffled layout carries it.
 */
static const char *const cities[] = {
	"S\xc3\xa3o Paulo",
	"M\\u00fcnchen",
	"\xe6\x9d\xb1\xe4\xba\xac",
	"Krak\xc3\xb3w \xf0\x9f\x99\x82",
	"\\\"Big\\\" Apple \\\\ NYC",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const int zone_offsets[] = {0, 0, 120, -300, 330, 60};

static void
random_uuid(char out[37])
{
	uint8_t		b[16];
	uint64_t	r1 = prng_next(&rng);
	uint64_t	r2 = prng_next(&rng);
	static const char hex[] = "0123456789abcdef";
	int			i;
	int			o = 0;

	for (i = 0; i < 8; i++)
	{
		b[i] = (uint8_t) (r1 >> (8 * i));
		b[8 + i] = (uint8_t) (r2 >> (8 * i));
	}
	b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);	/* version 4 */
	b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);	/* RFC 4122 variant */
	for (i = 0; i < 16; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 15];
	}
	out[o] = '\0';
}

/*
 * Fill in a random event whose event time is ts_ms.  The RFC 3339 variant
 * without fractional seconds can only express whole seconds, so such events
 * get their time truncated here, before anything is counted.  floor_ms keeps
 * that truncation from going below the start of the stream.
 */
static void
random_event(GenEvent *ev, int64_t ts_ms, int64_t floor_ms, int allow_fancy)
{
	double		u;

	random_uuid(ev->id);
	ev->is_click = rand_unit() < opt.click_ratio;
	/* mildly skewed: low ad ids get more traffic, as real ads do */
	u = rand_unit();
	ev->ad_id = 1 + (int64_t) ((double) opt.ads * u * u);
	if (ev->ad_id > opt.ads)
		ev->ad_id = opt.ads;
	ev->campaign_id = 1 + ev->ad_id % opt.campaigns;
	ev->user_id = 1 + (int64_t) rand_below((uint64_t) opt.users);
	ev->store_id = 1 + (int64_t) rand_below((uint64_t) opt.stores);
	ev->device = (int) rand_below(NELEM(devices));
	ev->country = (int) rand_below(NELEM(countries));
	ev->city = (int) rand_below(NELEM(cities));

	u = rand_unit();
	if (!allow_fancy || u < 0.70)
		ev->layout = LAYOUT_COMPACT;
	else if (u < 0.85)
		ev->layout = LAYOUT_SPACED;
	else
		ev->layout = LAYOUT_SHUFFLED;

	ev->rfc3339 = rand_unit() < opt.rfc3339_ratio;
	ev->frac_digits = (int) rand_below(3) * 3;
	ev->offset_min = zone_offsets[rand_below(NELEM(zone_offsets))];
	ev->zulu = ev->offset_min == 0 && rand_below(4) != 0;
	if (ev->rfc3339 && ev->frac_digits == 0)
	{
		int64_t		whole = floor_div(ts_ms, 1000) * 1000;

		if (whole >= floor_ms)
			ts_ms = whole;
		else
			ev->frac_digits = 3;
	}
	ev->ts_ms = ts_ms;
}

/* Print ts as RFC 3339 in the event's zone; same instant as ts_ms. */
static void
format_rfc3339(const GenEvent *ev, char *out, size_t cap)
{
	int64_t		local_ms = ev->ts_ms + (int64_t) ev->offset_min * 60000;
	int64_t		secs = floor_div(local_ms, 1000);
	int			ms = (int) (local_ms - secs * 1000);
	time_t		t = (time_t) secs;
	struct tm	tm;
	char		frac[16] = "";
	char		zone[16];

	gmtime_r(&t, &tm);
	if (ev->frac_digits == 3)
		snprintf(frac, sizeof(frac), ".%03d", ms);
	else if (ev->frac_digits == 6)
		snprintf(frac, sizeof(frac), ".%03d000", ms);
	if (ev->offset_min == 0 && ev->zulu)
		strcpy(zone, "Z");
	else
	{
		int			a = ev->offset_min < 0 ? -ev->offset_min : ev->offset_min;

		snprintf(zone, sizeof(zone), "%c%02d:%02d",
				 ev->offset_min < 0 ? '-' : '+', a / 60, a % 60);
	}
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d%s%s",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, frac, zone);
}

/*
 * Field indexes, in contract order, followed by the ignored ones.
 */
enum
{
	F_EVENT_ID, F_TYPE, F_AD_ID, F_CAMPAIGN_ID, F_USER_ID, F_STORE_ID, F_TS,
	F_DEVICE, F_COUNTRY, F_CTX, F_DUP_AD_ID, F__COUNT
};

static const char *const field_keys[F__COUNT] = {
	"event_id", "type", "ad_id", "campaign_id", "user_id", "store_id", "ts",
	"device", "country", "ctx", "ad_id"
};

static const int order_contract[] = {
	F_EVENT_ID, F_TYPE, F_AD_ID, F_CAMPAIGN_ID, F_USER_ID, F_STORE_ID, F_TS,
	F_DEVICE, F_COUNTRY, F_DUP_AD_ID
};
static const int order_shuffled[] = {
	F_TS, F_COUNTRY, F_EVENT_ID, F_AD_ID, F_CAMPAIGN_ID, F_TYPE, F_STORE_ID,
	F_USER_ID, F_DEVICE, F_CTX, F_DUP_AD_ID
};

/*
 * Render ev as JSON into b.  defect names the one thing to get wrong
 * (ADS_OK for a valid event); only defects that live inside the object are
 * handled here, the rest are made by make_bad().  utf8_bad selects which
 * invalid sequence an ADS_R_INVALID_UTF8 record carries.
 */
static void
render_event(OutBuf *b, const GenEvent *ev, AdsReason defect, int utf8_bad)
{
	char		vals[F__COUNT][160];
	size_t		lens[F__COUNT];
	int			present[F__COUNT];
	const int  *order;
	int			norder;
	int			i;
	int			first = 1;
	const char *colon = ev->layout == LAYOUT_SPACED ? ": " : ":";
	const char *comma = ev->layout == LAYOUT_SPACED ? ", " : ",";

	for (i = 0; i < F__COUNT; i++)
		present[i] = 1;
	present[F_CTX] = ev->layout == LAYOUT_SHUFFLED;
	present[F_DUP_AD_ID] = defect == ADS_R_DUPLICATE_KEY;
	present[F_STORE_ID] = defect != ADS_R_MISSING_FIELD;

#define SETV(f, ...) (lens[f] = (size_t) snprintf(vals[f], sizeof(vals[f]), __VA_ARGS__))

	if (defect == ADS_R_INVALID_UUID)
	{
		/* either plainly not a UUID, or the right shape with a non-hex digit */
		if (rand_below(2) == 0)
			SETV(F_EVENT_ID, "\"not-a-uuid\"");
		else
			SETV(F_EVENT_ID, "\"%.35sz\"", ev->id);
	}
	else
		SETV(F_EVENT_ID, "\"%s\"", ev->id);

	if (defect == ADS_R_UNKNOWN_TYPE)
		SETV(F_TYPE, "\"view\"");
	else
		SETV(F_TYPE, "\"%s\"", ev->is_click ? "click" : "impression");

	if (defect == ADS_R_WRONG_TYPE)
		SETV(F_AD_ID, "\"%" PRId64 "\"", ev->ad_id);
	else
		SETV(F_AD_ID, "%" PRId64, ev->ad_id);
	SETV(F_DUP_AD_ID, "%" PRId64, ev->ad_id);

	if (defect == ADS_R_NEGATIVE_ID)
		SETV(F_CAMPAIGN_ID, "-5");
	else
		SETV(F_CAMPAIGN_ID, "%" PRId64, ev->campaign_id);

	if (defect == ADS_R_OUT_OF_RANGE)
		SETV(F_USER_ID, "99999999999999999999");
	else
		SETV(F_USER_ID, "%" PRId64, ev->user_id);

	SETV(F_STORE_ID, "%" PRId64, ev->store_id);

	if (defect == ADS_R_INVALID_TIMESTAMP)
		SETV(F_TS, "\"2024-13-45T25:61:00Z\"");
	else if (ev->rfc3339)
	{
		char		s[64];

		format_rfc3339(ev, s, sizeof(s));
		SETV(F_TS, "\"%s\"", s);
	}
	else
		SETV(F_TS, "%" PRId64, ev->ts_ms);

	SETV(F_DEVICE, "\"%s\"", devices[ev->device]);
	if (defect == ADS_R_NUL_BYTE || defect == ADS_R_INVALID_UTF8)
	{
		/*
		 * Splice raw bytes into the middle of the ignored "device" string;
		 * snprintf cannot carry a NUL, so build this one by hand.
		 */
		static const struct
		{
			const char *bytes;
			size_t		len;
		}			bad_utf8[] =
		{
			{"\xff", 1},		/* never valid in UTF-8 */
			{"\xff", 1},
			{"\xc0\x80", 2},	/* overlong encoding of U+0000 */
			{"\xed\xa0\x80", 3},	/* UTF-16 surrogate U+D800 */
			{"\xf4\x90\x80\x80", 4},	/* above U+10FFFF */
			{"\x80", 1},		/* stray continuation byte */
			{"\xe2\x82", 2},	/* truncated 3-byte sequence */
		};
		const char *dev = devices[ev->device];
		size_t		half = strlen(dev) / 2;
		const char *ins;
		size_t		inslen;
		size_t		o = 0;

		if (defect == ADS_R_NUL_BYTE)
		{
			ins = "\0";
			inslen = 1;
		}
		else
		{
			ins = bad_utf8[utf8_bad % (int) NELEM(bad_utf8)].bytes;
			inslen = bad_utf8[utf8_bad % (int) NELEM(bad_utf8)].len;
		}
		vals[F_DEVICE][o++] = '"';
		memcpy(vals[F_DEVICE] + o, dev, half);
		o += half;
		memcpy(vals[F_DEVICE] + o, ins, inslen);
		o += inslen;
		memcpy(vals[F_DEVICE] + o, dev + half, strlen(dev) - half);
		o += strlen(dev) - half;
		vals[F_DEVICE][o++] = '"';
		lens[F_DEVICE] = o;
	}

	SETV(F_COUNTRY, "\"%s\"", countries[ev->country]);
	SETV(F_CTX, "{\"city\":\"%s\",\"ab\":[1,2.5,-3e2,{}],\"ok\":true,\"ref\":null}",
		 cities[ev->city]);
#undef SETV

	if (ev->layout == LAYOUT_SHUFFLED)
	{
		order = order_shuffled;
		norder = (int) NELEM(order_shuffled);
	}
	else
	{
		order = order_contract;
		norder = (int) NELEM(order_contract);
	}

	ob_puts(b, "{");
	for (i = 0; i < norder; i++)
	{
		int			f = order[i];

		if (!present[f])
			continue;
		if (!first)
			ob_puts(b, comma);
		first = 0;
		ob_printf(b, "\"%s\"%s", field_keys[f], colon);
		ob_put(b, vals[f], lens[f]);
	}
	ob_puts(b, "}");
	if (ev->layout == LAYOUT_SPACED)
		ob_puts(b, "\n");		/* whitespace after the JSON text is legal */
}

/* ----------------------------------------------------------------------
 * Ground truth
 * ---------------------------------------------------------------------- */
typedef struct MinuteCell
{
	int64_t		ad_id;			/* 0 = empty slot */
	int64_t		window_s;
	int64_t		campaign_id;
	int64_t		impressions;
	int64_t		clicks;
} MinuteCell;

typedef struct Truth
{
	MinuteCell *cells;
	size_t		ncells;
	size_t		cap;			/* power of two */
	int64_t		rejects[ADS_R__COUNT];
	int64_t		sent;
	int64_t		valid;			/* well-formed and in time, duplicates included */
	int64_t		unique;
	int64_t		duplicates;
	int64_t		rejected;
} Truth;

static Truth truth;

static size_t
cell_hash(int64_t ad, int64_t win)
{
	uint64_t	x = (uint64_t) ad * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t) win;

	return (size_t) splitmix64(&x);
}

static void truth_add_minute(int64_t ad, int64_t camp, int64_t win, int click);
static void write_order_truth(FILE *f);

static void
truth_grow(void)
{
	MinuteCell *old = truth.cells;
	size_t		oldcap = truth.cap;
	size_t		i;

	truth.cap = oldcap ? oldcap * 2 : 4096;
	truth.cells = calloc(truth.cap, sizeof(MinuteCell));
	if (truth.cells == NULL)
		die("out of memory");
	truth.ncells = 0;
	for (i = 0; i < oldcap; i++)
	{
		MinuteCell *c = &old[i];
		size_t		j;

		if (c->ad_id == 0)
			continue;
		for (j = cell_hash(c->ad_id, c->window_s) & (truth.cap - 1);
			 truth.cells[j].ad_id != 0;
			 j = (j + 1) & (truth.cap - 1))
			;
		truth.cells[j] = *c;
		truth.ncells++;
	}
	free(old);
}

static void
truth_add_minute(int64_t ad, int64_t camp, int64_t win, int click)
{
	size_t		j;

	if (truth.ncells * 2 >= truth.cap)
		truth_grow();
	for (j = cell_hash(ad, win) & (truth.cap - 1);; j = (j + 1) & (truth.cap - 1))
	{
		MinuteCell *c = &truth.cells[j];

		if (c->ad_id == 0)
		{
			c->ad_id = ad;
			c->window_s = win;
			c->campaign_id = camp;
			truth.ncells++;
		}
		if (c->ad_id == ad && c->window_s == win)
		{
			if (click)
				c->clicks++;
			else
				c->impressions++;
			return;
		}
	}
}

static int
cell_cmp(const void *a, const void *b)
{
	const MinuteCell *x = a;
	const MinuteCell *y = b;

	if (x->ad_id != y->ad_id)
		return x->ad_id < y->ad_id ? -1 : 1;
	if (x->window_s != y->window_s)
		return x->window_s < y->window_s ? -1 : 1;
	return 0;
}

/*
 * Write the truth file: sorted, so equal runs give equal files.  Written to
 * a temporary name and renamed so that a reader never sees half a file.
 */
static void
write_truth(const char *path)
{
	char	   *tmp = xmalloc(strlen(path) + 8);
	FILE	   *f;
	MinuteCell *sorted;
	size_t		i;
	size_t		n = 0;
	int			r;

	sprintf(tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		die("cannot write %s: %s", tmp, strerror(errno));

	sorted = xmalloc(sizeof(MinuteCell) * (truth.ncells + 1));
	for (i = 0; i < truth.cap; i++)
		if (truth.cells[i].ad_id != 0)
			sorted[n++] = truth.cells[i];
	qsort(sorted, n, sizeof(MinuteCell), cell_cmp);
	for (i = 0; i < n; i++)
		fprintf(f, "minute,%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 "\n",
				sorted[i].ad_id, sorted[i].campaign_id, sorted[i].window_s,
				sorted[i].impressions, sorted[i].clicks);
	free(sorted);

	for (r = 1; r < ADS_R__COUNT; r++)
		if (truth.rejects[r] > 0)
			fprintf(f, "reject,%s,%" PRId64 "\n", reason_names[r], truth.rejects[r]);

	fprintf(f, "total,sent,%" PRId64 "\n", truth.sent);
	fprintf(f, "total,valid,%" PRId64 "\n", truth.valid);
	fprintf(f, "total,unique,%" PRId64 "\n", truth.unique);
	fprintf(f, "total,duplicates,%" PRId64 "\n", truth.duplicates);
	fprintf(f, "total,rejected,%" PRId64 "\n", truth.rejected);
	if (opt.orders_topic != NULL)
		write_order_truth(f);

	if (fflush(f) != 0 || ferror(f) || fclose(f) != 0)
		die("error writing %s: %s", tmp, strerror(errno));
	if (rename(tmp, path) != 0)
		die("cannot rename %s to %s: %s", tmp, path, strerror(errno));
	free(tmp);
}

/* ----------------------------------------------------------------------
 * Generation state
 * ---------------------------------------------------------------------- */
typedef struct RingEntry
{
	char		bytes[MAX_EVENT_LEN];
	size_t		len;
	char		key[24];
	size_t		keylen;
	int64_t		ts_ms;
	int			partition;
} RingEntry;

static RingEntry *ring;
static int	ring_n = 0;
static int	ring_next = 0;

/* per partition: newest event time among accepted events, and whether any */
static int64_t *part_max_ts;
static int *part_has;
static uint64_t *part_bytes;

/* bad-record kinds we can generate; oversized only for small limits */
static AdsReason bad_kinds[ADS_R__COUNT];
static int	n_bad_kinds = 0;
static int	gen_oversized = 0;

/* The record being sent. */
typedef struct Record
{
	OutBuf		val;
	char		key[24];
	int			has_key;
	size_t		keylen;
	int			partition;
} Record;

static void
set_key(Record *rec, const GenEvent *ev)
{
	/* with --co-partition the key is the user, as for orders */
	rec->keylen = (size_t) snprintf(rec->key, sizeof(rec->key), "%" PRId64,
									opt.copart ? ev->user_id : ev->ad_id);
	rec->has_key = 1;
}

/*
 * --co-partition: the producers' side of the co-partitioning contract
 * (docs/deployment.md).  A user's partition is the one Kafka's default
 * partitioner gives the user id's decimal string: murmur2, as the Java
 * clients compute it, of the key, positive, modulo the partition count.
 * Every valid event and order of a user, and every re-send of one, goes to
 * its user's partition (events and orders topics have the same count), so
 * that the servers that split the topics each see whole users.
 */
static uint32_t
kafka_murmur2(const char *data, size_t len)
{
	const uint32_t m = 0x5bd1e995;
	uint32_t	h = 0x9747b28c ^ (uint32_t) len;
	size_t		i;

	for (i = 0; i + 4 <= len; i += 4)
	{
		uint32_t	k = (uint32_t) (unsigned char) data[i] | (uint32_t) (unsigned char) data[i + 1] << 8 |
			(uint32_t) (unsigned char) data[i + 2] << 16 | (uint32_t) (unsigned char) data[i + 3] << 24;

		k *= m;
		k ^= k >> 24;
		k *= m;
		h *= m;
		h ^= k;
	}
	switch (len & 3)
	{
		case 3:
			h ^= (uint32_t) (unsigned char) data[i + 2] << 16;
			/* FALLTHROUGH */
		case 2:
			h ^= (uint32_t) (unsigned char) data[i + 1] << 8;
			/* FALLTHROUGH */
		case 1:
			h ^= (uint32_t) (unsigned char) data[i];
			h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return h;
}

static int
user_partition(int64_t user, int partitions)
{
	char		key[24];
	int			n = snprintf(key, sizeof(key), "%" PRId64, user);

	return (int) ((kafka_murmur2(key, (size_t) n) & 0x7fffffff) % (uint32_t) partitions);
}

/* users by partition, for --co-partition */
static int64_t **users_of;
static int *nusers_of;

static void
copart_begin(void)
{
	users_of = calloc((size_t) opt.partitions, sizeof(int64_t *));
	nusers_of = calloc((size_t) opt.partitions, sizeof(int));
	if (users_of == NULL || nusers_of == NULL)
		die("out of memory");
	for (int64_t u = 1; u <= opt.users; u++)
	{
		int			p = user_partition(u, opt.partitions);

		users_of[p] = realloc(users_of[p], (size_t) (nusers_of[p] + 1) * sizeof(int64_t));
		if (users_of[p] == NULL)
			die("out of memory");
		users_of[p][nusers_of[p]++] = u;
	}
	for (int p = 0; p < opt.partitions; p++)
		if (nusers_of[p] == 0)
			die("--co-partition: no user of the %" PRId64 " falls on partition %d; raise --users", opt.users, p);
}

/* A random user whose partition is p. */
static int64_t
user_on(int p)
{
	return users_of[p][rand_below((uint64_t) nusers_of[p])];
}

/*
 * Oldest event time a partition still accepts, plus a one-second margin so
 * that we never produce an event sitting exactly on the consumer's boundary
 * (where "<" versus "<=" would matter).
 */
static int64_t
safe_floor(int p)
{
	if (!part_has[p])
		return INT64_MIN;
	return part_max_ts[p] - opt.horizon_s * 1000 + 1000;
}

static void
accept_ts(int p, int64_t ts)
{
	if (!part_has[p] || ts > part_max_ts[p])
		part_max_ts[p] = ts;
	part_has[p] = 1;
}

static int64_t
now_for_event(void)
{
	return opt.realtime ? wall_ms() : opt.now_ms;
}

/*
 * Every distinct valid, in-time click, in send order: the candidates for
 * order attribution.  Duplicates are re-sends of these, and too-late,
 * future and bad events never get here, so nothing else can be attributed.
 */
typedef struct Click
{
	char		id[37];			/* lower-case canonical: strcmp = memcmp of bytes */
	int64_t		ad_id;
	int64_t		campaign_id;
	int64_t		user_id;
	int64_t		store_id;
	int64_t		ts_ms;
} Click;

static Click *clicks;
static size_t n_clicks;
static size_t cap_clicks;

/* event time covered by the valid events */
static int64_t valid_ts_min;
static int64_t valid_ts_max;
static int	have_valid_ts;

static void
note_valid_event(const GenEvent *ev)
{
	if (!have_valid_ts || ev->ts_ms < valid_ts_min)
		valid_ts_min = ev->ts_ms;
	if (!have_valid_ts || ev->ts_ms > valid_ts_max)
		valid_ts_max = ev->ts_ms;
	have_valid_ts = 1;

	if (!ev->is_click || opt.orders_topic == NULL)
		return;
	if (n_clicks == cap_clicks)
	{
		cap_clicks = cap_clicks ? cap_clicks * 2 : 4096;
		clicks = realloc(clicks, cap_clicks * sizeof(Click));
		if (clicks == NULL)
			die("out of memory");
	}
	memcpy(clicks[n_clicks].id, ev->id, sizeof(ev->id));
	clicks[n_clicks].ad_id = ev->ad_id;
	clicks[n_clicks].campaign_id = ev->campaign_id;
	clicks[n_clicks].user_id = ev->user_id;
	clicks[n_clicks].store_id = ev->store_id;
	clicks[n_clicks].ts_ms = ev->ts_ms;
	n_clicks++;
}

/* A fresh valid event for message i on partition p. */
static void
make_valid(Record *rec, int64_t i, int p)
{
	GenEvent	ev;
	int64_t		ts;
	int64_t		lo;
	RingEntry  *re;

	if (opt.realtime)
	{
		/* never ahead of the clock, so never "future" */
		ts = wall_ms() - rand_range(0, 2000);
		lo = 0;
	}
	else
	{
		double		frac = (double) i / (double) opt.count;

		ts = opt.start_ms + (int64_t) floor(frac * (double) opt.span_s * 1000.0);
		ts += rand_range(-2000, 2000);
		lo = opt.start_ms;
		if (ts < lo)
			ts = lo;
	}
	/* only matters with a horizon of a few seconds: stay clearly in time */
	if (ts < safe_floor(p))
		ts = safe_floor(p);
	if (ts < 0)
		ts = 0;

	random_event(&ev, ts, lo > safe_floor(p) ? lo : safe_floor(p), 1);
	if (opt.copart)
		ev.user_id = user_on(p);

	/*
	 * A click comes after everything before it on its partition.  An order
	 * is judged once every partition's watermark has reached its time, and
	 * a click behind its partition's watermark could arrive after that
	 * (across a batch boundary): whether it is credited would depend on
	 * timing, and the truth could not say.
	 */
	if (ev.is_click && part_has[p] && ev.ts_ms <= part_max_ts[p])
	{
		ev.ts_ms = part_max_ts[p] + 1;
		if (ev.rfc3339)
			ev.frac_digits = 3;
	}
	render_event(&rec->val, &ev, ADS_OK, 0);
	set_key(rec, &ev);
	if (rec->val.len >= MAX_EVENT_LEN || (int64_t) rec->val.len > opt.max_bytes)
		die("internal error: valid event of %zu bytes", rec->val.len);

	truth_add_minute(ev.ad_id, ev.campaign_id, floor_div(ev.ts_ms, 60000) * 60,
					 ev.is_click);
	truth.valid++;
	truth.unique++;
	accept_ts(p, ev.ts_ms);
	note_valid_event(&ev);

	/* remember it as a duplicate candidate */
	re = &ring[ring_next];
	memcpy(re->bytes, rec->val.data, rec->val.len);
	re->len = rec->val.len;
	memcpy(re->key, rec->key, rec->keylen);
	re->keylen = rec->keylen;
	re->ts_ms = ev.ts_ms;
	re->partition = p;
	ring_next = (ring_next + 1) % RING_SIZE;
	if (ring_n < RING_SIZE)
		ring_n++;
}

/* Exact re-send of a recent valid event; 0 if none fits this partition. */
static int
make_duplicate(Record *rec, int p)
{
	RingEntry  *re;

	if (ring_n == 0)
		return 0;
	re = &ring[rand_below((uint64_t) ring_n)];
	/* co-partitioned: a re-send goes where its original went */
	for (int tries = 0; opt.copart && re->partition != p; tries++)
	{
		if (tries == 64)
			return 0;
		re = &ring[rand_below((uint64_t) ring_n)];
	}
	/* a duplicate that would be too late here would not be a duplicate */
	if (re->ts_ms < safe_floor(p))
		return 0;
	rec->val.len = 0;
	ob_put(&rec->val, re->bytes, re->len);
	memcpy(rec->key, re->key, re->keylen);
	rec->keylen = re->keylen;
	rec->has_key = 1;
	truth.valid++;
	truth.duplicates++;
	accept_ts(p, re->ts_ms);
	return 1;
}

/*
 * A fresh impression a horizon and a minute behind the partition's
 * watermark: the state that would catch its duplicate is still there unless
 * maintenance expired that hour, so it counts.  An impression, so that it
 * cannot change which click an order is credited to.
 */
static int
make_old(Record *rec, int p)
{
	GenEvent	ev;
	int64_t		ts;

	if (!part_has[p])
		return 0;
	ts = part_max_ts[p] - opt.horizon_s * 1000 - 60000;
	if (ts < 0)
		return 0;				/* would be an invalid timestamp instead */
	random_event(&ev, ts, 0, 1);
	if (opt.copart)
		ev.user_id = user_on(p);
	ev.is_click = 0;
	render_event(&rec->val, &ev, ADS_OK, 0);
	set_key(rec, &ev);
	truth_add_minute(ev.ad_id, ev.campaign_id, floor_div(ev.ts_ms, 60000) * 60, 0);
	truth.valid++;
	truth.unique++;
	return 1;
}

static void
make_future(Record *rec)
{
	GenEvent	ev;
	int64_t		ts = now_for_event() + DAY_MS + rand_range(0, 60000);

	random_event(&ev, ts, ts - 1000, 1);
	if (opt.copart)
		ev.user_id = user_on(rec->partition);
	render_event(&rec->val, &ev, ADS_OK, 0);
	set_key(rec, &ev);
	truth.rejects[ADS_R_FUTURE_TIMESTAMP]++;
	truth.rejected++;
}

/*
 * A record with exactly one defect.  Bad records are built on the compact
 * ASCII layout so that, e.g., truncation cannot split a multi-byte
 * character and add an invalid_utf8 defect to an invalid_json one.  Their
 * timestamps are the current stream time so that nothing else about them
 * is off.
 */
static void
make_bad(Record *rec, int64_t i)
{
	AdsReason	kind = bad_kinds[rand_below((uint64_t) n_bad_kinds)];
	GenEvent	ev;
	int64_t		ts;

	if (opt.realtime)
		ts = wall_ms() - 1000;
	else
		ts = opt.start_ms + (int64_t) floor((double) i / (double) opt.count *
											(double) opt.span_s * 1000.0);
	random_event(&ev, ts, ts, 0);
	rec->val.len = 0;
	rec->has_key = 0;

	switch (kind)
	{
		case ADS_R_EMPTY:
			break;
		case ADS_R_OVERSIZED:
			{
				size_t		target = (size_t) opt.max_bytes + 1 + (size_t) rand_below(100);
				const char *padkey = ",\"pad\":\"";
				size_t		fixed;
				size_t		n;

				render_event(&rec->val, &ev, ADS_OK, 0);
				rec->val.len--;	/* drop the closing brace */
				fixed = rec->val.len + strlen(padkey) + 2;	/* '"' and '}' */
				if (fixed > target)
					die("internal error: --max-bytes too small for oversized records");
				ob_puts(&rec->val, padkey);
				for (n = fixed; n < target; n++)
					ob_put(&rec->val, "x", 1);
				ob_puts(&rec->val, "\"}");
				break;
			}
		case ADS_R_INVALID_JSON:
			render_event(&rec->val, &ev, ADS_OK, 0);
			/* any proper, non-empty prefix of an object is incomplete */
			rec->val.len = 1 + (size_t) rand_below(rec->val.len - 1);
			break;
		case ADS_R_NOT_OBJECT:
			{
				static const char *const texts[] = {
					"[1,2,3]", "\"impression\"", "42", "null", "true",
					"[{\"event_id\":\"00000000-0000-4000-8000-000000000000\"}]",
				};

				ob_puts(&rec->val, texts[rand_below(NELEM(texts))]);
				break;
			}
		case ADS_R_NUL_BYTE:
		case ADS_R_DUPLICATE_KEY:
		case ADS_R_MISSING_FIELD:
		case ADS_R_WRONG_TYPE:
		case ADS_R_INVALID_UUID:
		case ADS_R_UNKNOWN_TYPE:
		case ADS_R_OUT_OF_RANGE:
		case ADS_R_NEGATIVE_ID:
		case ADS_R_INVALID_TIMESTAMP:
			render_event(&rec->val, &ev, kind, 0);
			break;
		case ADS_R_INVALID_UTF8:
			render_event(&rec->val, &ev, kind, (int) rand_below(64));
			break;
		default:
			die("internal error: bad kind %d", (int) kind);
	}
	truth.rejects[kind]++;
	truth.rejected++;
}

/* ----------------------------------------------------------------------
 * Orders (optional second stream, --orders-topic)
 *
 * Orders go out after every ad event of the run, so the consumer has the
 * complete event stream by the time it sees them.  Each valid order takes
 * its user and store
 *	  - with probability 0.6 from one of the last ORDER_CLICK_POOL valid
 *		clicks, at that click's time plus 1..600 s (usually attributable,
 *		though maybe to a later click of the same pair, or to none if the
 *		attribution window is shorter than the delay); up to 5% of these
 *		sit on the edges of the rule instead: at the click's time, or, if
 *		W <= 600 s, W minus 1 ms or exactly W after it;
 *	  - with probability 0.1 from such a click, but 1..600 s before the
 *		earliest click of that user and store (never attributable);
 *	  - otherwise at random, at a random time within the events' span
 *		(usually not attributable).
 * Bad orders carry exactly one defect (see make_bad_order()); duplicates
 * are exact re-sends of recent valid orders.  Order times never lie ahead
 * of the reference clock (no future_timestamp) and are kept at least a
 * second inside the lateness horizon of their partition, as for events
 * (no too_late), so the truth has neither.
 *
 * The truth (write_order_truth()) applies the attribution rule: among the
 * valid clicks with the order's user_id and store_id and
 * order.ts - W < click.ts <= order.ts, the one with the greatest ts wins,
 * ties going to the greatest event id (as 16 bytes, memcmp).
 * ---------------------------------------------------------------------- */
#define ORDER_CLICK_POOL	10000	/* "recent" clicks orders are made from */
#define MAX_ORDER_LEN		600		/* any order we render is shorter */

typedef struct GenOrder
{
	char		id[37];
	int64_t		user_id;
	int64_t		store_id;
	int64_t		ts_ms;
	char		amount[ADS_AMOUNT_LEN];	/* canonical text, as the parser gives it */
	const char *currency;
	int			amount_string;	/* amount as a JSON string, not a number */
	int			amount_escaped; /* first character as a \u escape */
	int			currency_escaped;
	GenEvent	tsfmt;			/* only the RFC 3339 formatting fields */
	int			rfc3339;
	int			channel;
	Layout		layout;
} GenOrder;

typedef struct OrderTruth
{
	char		id[37];
	int64_t		user_id;
	int64_t		store_id;
	int64_t		ts_ms;
	char		amount[ADS_AMOUNT_LEN];
	char		currency[4];
} OrderTruth;

static struct
{
	OrderTruth *valid;			/* distinct valid orders */
	size_t		nvalid;
	size_t		cap;
	int64_t		rejects[ADS_R__COUNT];
	int64_t		sent;
	int64_t		unique;
	int64_t		duplicates;
	int64_t		rejected;
} otruth;

/* duplicate candidates: the last RING_SIZE valid orders */
typedef struct OrderRingEntry
{
	char		bytes[MAX_ORDER_LEN];
	size_t		len;
	char		key[24];
	size_t		keylen;
	int64_t		ts_ms;
	int			partition;
} OrderRingEntry;

static OrderRingEntry *oring;
static int	oring_n = 0;
static int	oring_next = 0;

/* per orders partition: newest accepted order time */
static int64_t *opart_max_ts;
static int *opart_has;

/* the clicks sorted by (user, store, ts, id), for attribution */
static Click *clicks_sorted;

static const char *const currencies[] = {"USD", "EUR", "GBP"};
static const char *const channels[] = {"web", "app", "store", "phone"};

static const AdsReason order_bad_kinds[] = {
	ADS_R_INVALID_JSON, ADS_R_MISSING_FIELD, ADS_R_WRONG_TYPE, ADS_R_INVALID_UUID,
	ADS_R_NEGATIVE_ID, ADS_R_INVALID_AMOUNT, ADS_R_INVALID_CURRENCY,
	ADS_R_INVALID_TIMESTAMP
};

static int
click_cmp(const void *a, const void *b)
{
	const Click *x = a;
	const Click *y = b;

	if (x->user_id != y->user_id)
		return x->user_id < y->user_id ? -1 : 1;
	if (x->store_id != y->store_id)
		return x->store_id < y->store_id ? -1 : 1;
	if (x->ts_ms != y->ts_ms)
		return x->ts_ms < y->ts_ms ? -1 : 1;
	return strcmp(x->id, y->id);
}

/*
 * Index of the first sorted click whose (user, store, ts) is greater than
 * the given one; ts = INT64_MIN finds the first click of the pair.
 */
static size_t
clicks_upper(int64_t user, int64_t store, int64_t ts)
{
	size_t		lo = 0,
				hi = n_clicks;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;
		const Click *c = &clicks_sorted[mid];
		int			le;

		if (c->user_id != user)
			le = c->user_id < user;
		else if (c->store_id != store)
			le = c->store_id < store;
		else
			le = c->ts_ms <= ts;
		if (le)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The attributed click of an order, or NULL. */
static const Click *
attribute(const OrderTruth *o)
{
	size_t		i = clicks_upper(o->user_id, o->store_id, o->ts_ms);
	const Click *c;

	/* i - 1 is the latest click at or before the order, greatest id last */
	if (i == 0)
		return NULL;
	c = &clicks_sorted[i - 1];
	if (c->user_id != o->user_id || c->store_id != o->store_id)
		return NULL;
	if (c->ts_ms <= o->ts_ms - opt.window_s * 1000)
		return NULL;
	return c;
}

static int64_t
now_for_order(void)
{
	return opt.realtime ? wall_ms() : opt.now_ms;
}

static int64_t
osafe_floor(int p)
{
	if (!opart_has[p])
		return INT64_MIN;
	return opart_max_ts[p] - opt.horizon_s * 1000 + 1000;
}

/* A random amount, written the way the parser canonicalises it. */
static void
random_amount(char out[ADS_AMOUNT_LEN])
{
	static const char *const edges[] = {
		"0", "0.00", "0.01", "0.000000001", "100000000", "999999999999999999.999999999",
	};
	double		u = rand_unit();
	int64_t		whole;

	if (u < 0.02)
	{
		snprintf(out, ADS_AMOUNT_LEN, "%s", edges[rand_below(NELEM(edges))]);
		return;
	}
	whole = rand_unit() < 0.95 ? rand_range(0, 999) : rand_range(1000, 999999);
	u = rand_unit();
	if (u < 0.80)
		snprintf(out, ADS_AMOUNT_LEN, "%" PRId64 ".%02d", whole, (int) rand_below(100));
	else if (u < 0.90)
		snprintf(out, ADS_AMOUNT_LEN, "%" PRId64, whole);
	else if (u < 0.95)
		snprintf(out, ADS_AMOUNT_LEN, "%" PRId64 ".%d", whole, (int) rand_below(10));
	else
		snprintf(out, ADS_AMOUNT_LEN, "%" PRId64 ".%03d", whole, (int) rand_below(1000));
}

/* Everything but the ids and time; fancy = escapes and other layouts. */
static void
random_order_details(GenOrder *o, int fancy)
{
	double		u;

	random_uuid(o->id);
	random_amount(o->amount);
	o->currency = currencies[rand_below(NELEM(currencies))];
	o->amount_string = rand_below(2) == 0;
	o->amount_escaped = fancy && o->amount_string && rand_unit() < 0.03;
	o->currency_escaped = fancy && rand_unit() < 0.03;
	o->channel = (int) rand_below(NELEM(channels));
	u = rand_unit();
	if (!fancy || u < 0.70)
		o->layout = LAYOUT_COMPACT;
	else if (u < 0.85)
		o->layout = LAYOUT_SPACED;
	else
		o->layout = LAYOUT_SHUFFLED;
	o->rfc3339 = rand_unit() < opt.rfc3339_ratio;
	memset(&o->tsfmt, 0, sizeof(o->tsfmt));
	o->tsfmt.frac_digits = (int) rand_below(3) * 3;
	o->tsfmt.offset_min = zone_offsets[rand_below(NELEM(zone_offsets))];
	o->tsfmt.zulu = o->tsfmt.offset_min == 0 && rand_below(4) != 0;
}

/* Order field indexes, in contract order, then the ignored ones. */
enum
{
	OF_ORDER_ID, OF_USER_ID, OF_STORE_ID, OF_AMOUNT, OF_CURRENCY, OF_TS,
	OF_CHANNEL, OF_ITEMS, OF__COUNT
};

static const char *const ofield_keys[OF__COUNT] = {
	"order_id", "user_id", "store_id", "amount", "currency", "ts", "channel", "items"
};

static const int ofields_contract[] = {
	OF_ORDER_ID, OF_USER_ID, OF_STORE_ID, OF_AMOUNT, OF_CURRENCY, OF_TS, OF_CHANNEL
};
static const int ofields_shuffled[] = {
	OF_CHANNEL, OF_TS, OF_AMOUNT, OF_ITEMS, OF_STORE_ID, OF_ORDER_ID, OF_CURRENCY,
	OF_USER_ID
};

/*
 * Render an order.  defect is ADS_OK or one of order_bad_kinds except
 * invalid_json (made by truncation); variant picks among the ways to get
 * that one thing wrong.
 */
static void
render_order(OutBuf *b, const GenOrder *o, AdsReason defect, int variant)
{
	char		vals[OF__COUNT][160];
	int			present[OF__COUNT];
	const int  *order;
	int			norder;
	int			i;
	int			first = 1;
	const char *colon = o->layout == LAYOUT_SPACED ? ": " : ":";
	const char *comma = o->layout == LAYOUT_SPACED ? ", " : ",";

#define OSETV(f, ...) snprintf(vals[f], sizeof(vals[f]), __VA_ARGS__)

	for (i = 0; i < OF__COUNT; i++)
		present[i] = 1;
	present[OF_ITEMS] = o->layout == LAYOUT_SHUFFLED;
	if (defect == ADS_R_MISSING_FIELD)
		present[variant % 6] = 0;	/* one of the six contract fields */

	if (defect == ADS_R_INVALID_UUID)
	{
		if (variant % 2 == 0)
			OSETV(OF_ORDER_ID, "\"not-a-uuid\"");
		else
			OSETV(OF_ORDER_ID, "\"%.35sz\"", o->id);
	}
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 0)
		OSETV(OF_ORDER_ID, "12345");
	else
		OSETV(OF_ORDER_ID, "\"%s\"", o->id);

	if (defect == ADS_R_NEGATIVE_ID && variant % 2 == 0)
		OSETV(OF_USER_ID, "-%" PRId64, o->user_id + 1);
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 1)
		OSETV(OF_USER_ID, "\"%" PRId64 "\"", o->user_id);
	else
		OSETV(OF_USER_ID, "%" PRId64, o->user_id);

	if (defect == ADS_R_NEGATIVE_ID && variant % 2 == 1)
		OSETV(OF_STORE_ID, "-1");
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 2)
		OSETV(OF_STORE_ID, "%" PRId64 ".5", o->store_id);
	else
		OSETV(OF_STORE_ID, "%" PRId64, o->store_id);

	if (defect == ADS_R_INVALID_AMOUNT)
	{
		static const char *const bad[] = {
			"-1%s", "\"-1%s\"", "%se3", "\"%s5x\"", "\"\"", "\"1,%s\"", "\" %s\"",
			"\"+%s\"", "\"00%s\"", "1.5E2", "\"%sE-2\"", "\"-\"",
		};
		const char *fmt = bad[variant % (int) NELEM(bad)];

		/*
		 * "%s" is the valid amount, the rest of each format breaks it; a
		 * leading "-1" keeps even a zero amount negative and valid JSON.
		 */
		if (strchr(fmt, '%'))
			OSETV(OF_AMOUNT, fmt, o->amount);
		else
			OSETV(OF_AMOUNT, "%s", fmt);
	}
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 3)
	{
		static const char *const notnum[] = {"true", "null", "[12.5]", "{\"v\":1}", "false"};

		OSETV(OF_AMOUNT, "%s", notnum[(variant / 6) % (int) NELEM(notnum)]);
	}
	else if (o->amount_escaped)
		OSETV(OF_AMOUNT, "\"\\u%04x%s\"", (unsigned) o->amount[0], o->amount + 1);
	else if (o->amount_string)
		OSETV(OF_AMOUNT, "\"%s\"", o->amount);
	else
		OSETV(OF_AMOUNT, "%s", o->amount);

	if (defect == ADS_R_INVALID_CURRENCY)
	{
		static const char *const bad[] = {
			"\"usd\"", "\"Eur\"", "\"US\"", "\"USDX\"", "\"\"", "\"U$D\"", "\"978\"", "\" GBP\"",
		};

		OSETV(OF_CURRENCY, "%s", bad[variant % (int) NELEM(bad)]);
	}
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 4)
		OSETV(OF_CURRENCY, "978");
	else if (o->currency_escaped)
		OSETV(OF_CURRENCY, "\"\\u%04X%s\"", (unsigned) o->currency[0], o->currency + 1);
	else
		OSETV(OF_CURRENCY, "\"%s\"", o->currency);

	if (defect == ADS_R_INVALID_TIMESTAMP)
		OSETV(OF_TS, variant % 2 ? "\"2024-13-45T25:61:00Z\"" : "\"yesterday\"");
	else if (defect == ADS_R_WRONG_TYPE && variant % 6 == 5)
		OSETV(OF_TS, "true");
	else if (o->rfc3339)
	{
		char		t[64];
		GenEvent	tf = o->tsfmt;

		tf.ts_ms = o->ts_ms;
		/* whole seconds only print without a fraction */
		if (tf.frac_digits == 0 && floor_div(tf.ts_ms, 1000) * 1000 != tf.ts_ms)
			tf.frac_digits = 3;
		format_rfc3339(&tf, t, sizeof(t));
		OSETV(OF_TS, "\"%s\"", t);
	}
	else
		OSETV(OF_TS, "%" PRId64, o->ts_ms);

	OSETV(OF_CHANNEL, "\"%s\"", channels[o->channel]);
	OSETV(OF_ITEMS, "[{\"sku\":\"A-%d\",\"qty\":2,\"amount\":-1e3},{\"note\":\"M\\u00fcller\"}]",
		  o->channel);
#undef OSETV

	if (o->layout == LAYOUT_SHUFFLED)
	{
		order = ofields_shuffled;
		norder = (int) NELEM(ofields_shuffled);
	}
	else
	{
		order = ofields_contract;
		norder = (int) NELEM(ofields_contract);
	}
	ob_puts(b, "{");
	for (i = 0; i < norder; i++)
	{
		int			f = order[i];

		if (!present[f])
			continue;
		if (!first)
			ob_puts(b, comma);
		first = 0;
		ob_printf(b, "\"%s\"%s%s", ofield_keys[f], colon, vals[f]);
	}
	ob_puts(b, "}");
	if (o->layout == LAYOUT_SPACED)
		ob_puts(b, "\n");
}

static void
set_order_key(Record *rec, const GenOrder *o)
{
	rec->keylen = (size_t) snprintf(rec->key, sizeof(rec->key), "%" PRId64, o->user_id);
	rec->has_key = 1;
}

/* A time within the span of the valid events. */
static int64_t
random_event_time(void)
{
	if (have_valid_ts)
		return rand_range(valid_ts_min, valid_ts_max);
	return opt.start_ms + (int64_t) rand_below((uint64_t) opt.span_s * 1000 + 1);
}

/* A fresh valid order on orders partition p. */
static void
make_valid_order(Record *rec, int p)
{
	GenOrder	o;
	double		u = rand_unit();
	int64_t		ts;
	OrderTruth *t;
	OrderRingEntry *re;
	const Click *c = NULL;

	random_order_details(&o, 1);
	/* interleaved, a pair's first click may still come: no order before it */
	if (n_clicks > 0 && u < (opt.orders_interleaved ? 0.6 : 0.7))
	{
		size_t		pool = n_clicks < ORDER_CLICK_POOL ? n_clicks : ORDER_CLICK_POOL;

		c = &clicks[n_clicks - 1 - rand_below(pool)];
		/* co-partitioned: a click of a user of this partition, if one is near */
		for (int tries = 0; opt.copart && user_partition(c->user_id, opt.partitions) != p; tries++)
		{
			if (tries == 256)
			{
				c = NULL;
				break;
			}
			c = &clicks[n_clicks - 1 - rand_below(pool)];
		}
	}
	if (c != NULL)
	{
		o.user_id = c->user_id;
		o.store_id = c->store_id;
		if (u < 0.6)
		{
			/*
			 * Mostly 1..600 s after the click; a few on the edges of the
			 * rule (click.ts <= order.ts, click.ts > order.ts - W).  The
			 * edges of W only when they fall within those 600 s anyway:
			 * orders far later than the rest would drag the orders
			 * partitions' watermarks along and skew every later order.
			 */
			double		v = rand_unit();
			int64_t		w = opt.window_s * 1000;
			int			edge_ok = w <= 600000 && c->ts_ms + w <= now_for_order();

			if (v < 0.02)
				ts = c->ts_ms;	/* same instant: attributable */
			else if (v < 0.035 && edge_ok)
				ts = c->ts_ms + w - 1;	/* last millisecond inside W */
			else if (v < 0.05 && edge_ok)
				ts = c->ts_ms + w;	/* first millisecond outside W */
			else
				ts = c->ts_ms + rand_range(1000, 600000);
		}
		else
		{
			/* before the first click of this user and store */
			const Click *f = &clicks_sorted[clicks_upper(c->user_id, c->store_id, INT64_MIN)];

			ts = f->ts_ms - rand_range(1000, 600000);
		}
	}
	else
	{
		o.user_id = opt.copart ? user_on(p) : 1 + (int64_t) rand_below((uint64_t) opt.users);
		o.store_id = 1 + (int64_t) rand_below((uint64_t) opt.stores);
		ts = random_event_time();
	}
	/* not ahead of the clock, clearly in time on p, and a valid time */
	if (ts > now_for_order())
		ts = now_for_order();
	if (ts < osafe_floor(p))
		ts = osafe_floor(p);
	if (ts < 0)
		ts = 0;
	o.ts_ms = ts;

	render_order(&rec->val, &o, ADS_OK, 0);
	set_order_key(rec, &o);
	if (rec->val.len >= MAX_ORDER_LEN || (int64_t) rec->val.len > opt.max_bytes)
		die("internal error: valid order of %zu bytes", rec->val.len);

	if (otruth.nvalid == otruth.cap)
	{
		otruth.cap = otruth.cap ? otruth.cap * 2 : 4096;
		otruth.valid = realloc(otruth.valid, otruth.cap * sizeof(OrderTruth));
		if (otruth.valid == NULL)
			die("out of memory");
	}
	t = &otruth.valid[otruth.nvalid++];
	memcpy(t->id, o.id, sizeof(t->id));
	t->user_id = o.user_id;
	t->store_id = o.store_id;
	t->ts_ms = o.ts_ms;
	memcpy(t->amount, o.amount, sizeof(t->amount));
	memcpy(t->currency, o.currency, 4);
	otruth.unique++;

	if (!opart_has[p] || ts > opart_max_ts[p])
		opart_max_ts[p] = ts;
	opart_has[p] = 1;

	re = &oring[oring_next];
	memcpy(re->bytes, rec->val.data, rec->val.len);
	re->len = rec->val.len;
	memcpy(re->key, rec->key, rec->keylen);
	re->keylen = rec->keylen;
	re->ts_ms = ts;
	re->partition = p;
	oring_next = (oring_next + 1) % RING_SIZE;
	if (oring_n < RING_SIZE)
		oring_n++;
}

/* Exact re-send of a recent valid order; 0 if none fits partition p. */
static int
make_duplicate_order(Record *rec, int p)
{
	OrderRingEntry *re;

	if (oring_n == 0)
		return 0;
	re = &oring[rand_below((uint64_t) oring_n)];
	for (int tries = 0; opt.copart && re->partition != p; tries++)
	{
		if (tries == 64)
			return 0;
		re = &oring[rand_below((uint64_t) oring_n)];
	}
	if (re->ts_ms < osafe_floor(p))
		return 0;
	rec->val.len = 0;
	ob_put(&rec->val, re->bytes, re->len);
	memcpy(rec->key, re->key, re->keylen);
	rec->keylen = re->keylen;
	rec->has_key = 1;
	otruth.duplicates++;
	if (!opart_has[p] || re->ts_ms > opart_max_ts[p])
		opart_max_ts[p] = re->ts_ms;
	opart_has[p] = 1;
	return 1;
}

/* An order with exactly one defect; compact ASCII layout, no key. */
static void
make_bad_order(Record *rec)
{
	AdsReason	kind = order_bad_kinds[rand_below(NELEM(order_bad_kinds))];
	int			variant = (int) rand_below(60);
	GenOrder	o;

	random_order_details(&o, 0);
	o.user_id = 1 + (int64_t) rand_below((uint64_t) opt.users);
	o.store_id = 1 + (int64_t) rand_below((uint64_t) opt.stores);
	o.ts_ms = random_event_time();
	if (o.ts_ms > now_for_order())
		o.ts_ms = now_for_order();
	if (o.ts_ms < 0)
		o.ts_ms = 0;
	rec->val.len = 0;
	rec->has_key = 0;
	if (kind == ADS_R_INVALID_JSON)
	{
		render_order(&rec->val, &o, ADS_OK, 0);
		/* any proper, non-empty prefix of an object is incomplete */
		rec->val.len = 1 + (size_t) rand_below(rec->val.len - 1);
	}
	else
		render_order(&rec->val, &o, kind, variant);
	otruth.rejects[kind]++;
	otruth.rejected++;
}

/* Called once, after the last event: sort the clicks for attribution. */
/* The clicks so far, by (user, store, ts, id), for attribute(). */
static void
sort_clicks(void)
{
	free(clicks_sorted);
	clicks_sorted = xmalloc((n_clicks + 1) * sizeof(Click));
	if (n_clicks > 0)
		memcpy(clicks_sorted, clicks, n_clicks * sizeof(Click));
	qsort(clicks_sorted, n_clicks, sizeof(Click), click_cmp);
}

static void
orders_begin(void)
{
	sort_clicks();
	oring = calloc(RING_SIZE, sizeof(OrderRingEntry));
	opart_max_ts = calloc((size_t) opt.orders_partitions, sizeof(int64_t));
	opart_has = calloc((size_t) opt.orders_partitions, sizeof(int));
	if (oring == NULL || opart_max_ts == NULL || opart_has == NULL)
		die("out of memory");
}

/* Order j of the run, for orders partition p. */
static void
make_order(Record *rec, int p)
{
	double		u = rand_unit();
	int			done = 0;

	rec->partition = p;
	rec->val.len = 0;
	rec->has_key = 0;
	if (u < opt.orders_dup_ratio)
		done = make_duplicate_order(rec, p);
	else if (u < opt.orders_dup_ratio + opt.orders_bad_ratio)
	{
		make_bad_order(rec);
		done = 1;
	}
	if (!done)
	{
		rec->val.len = 0;
		make_valid_order(rec, p);
	}
	otruth.sent++;
}

static int
order_truth_cmp(const void *a, const void *b)
{
	return strcmp(((const OrderTruth *) a)->id, ((const OrderTruth *) b)->id);
}

static void
write_order_truth(FILE *f)
{
	size_t		i;
	int			r;

	qsort(otruth.valid, otruth.nvalid, sizeof(OrderTruth), order_truth_cmp);
	for (i = 0; i < otruth.nvalid; i++)
	{
		const OrderTruth *o = &otruth.valid[i];
		const Click *c = attribute(o);

		if (c != NULL)
			fprintf(f, "order,%s,%" PRId64 ",%" PRId64 ",%s,%" PRId64 ",%" PRId64 ",%s,%s\n",
					o->id, c->ad_id, c->campaign_id, c->id, c->ts_ms, o->ts_ms,
					o->amount, o->currency);
		else
			fprintf(f, "order,%s,,,,,%" PRId64 ",%s,%s\n",
					o->id, o->ts_ms, o->amount, o->currency);
	}
	for (r = 1; r < ADS_R__COUNT; r++)
		if (otruth.rejects[r] > 0)
			fprintf(f, "reject_order,%s,%" PRId64 "\n", reason_names[r], otruth.rejects[r]);
	fprintf(f, "total,orders_sent,%" PRId64 "\n", otruth.sent);
	fprintf(f, "total,orders_unique,%" PRId64 "\n", otruth.unique);
	fprintf(f, "total,orders_duplicates,%" PRId64 "\n", otruth.duplicates);
	fprintf(f, "total,orders_rejected,%" PRId64 "\n", otruth.rejected);
}

/* ----------------------------------------------------------------------
 * Kafka
 * ---------------------------------------------------------------------- */
static int64_t delivered = 0;
static int64_t failed = 0;

static void
dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void) rk;
	(void) opaque;
	if (m->err)
	{
		if (failed < 10)
			fprintf(stderr, "adstream-loadgen: delivery to partition %d failed: %s\n",
					(int) m->partition, rd_kafka_err2str(m->err));
		failed++;
	}
	else
		delivered++;
}

/*
 * Mean records per message set the producer sent: librdkafka's statistics
 * give, per topic and interval, a histogram of records per batch ("batchcnt")
 * with its sum and count; a batch is one message set on the broker.
 */
static int64_t batch_records = 0;
static int64_t batch_count = 0;

static int64_t
json_int_after(const char *from, const char *end, const char *name)
{
	const char *p = strstr(from, name);

	if (p == NULL || p >= end)
		return 0;
	return strtoll(p + strlen(name), NULL, 10);
}

static int
stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
	const char *p = json;

	(void) rk;
	(void) json_len;
	(void) opaque;
	while ((p = strstr(p, "\"batchcnt\":")) != NULL)
	{
		const char *end = strchr(p, '}');

		if (end == NULL)
			break;
		batch_records += json_int_after(p, end, "\"sum\":");
		batch_count += json_int_after(p, end, "\"cnt\":");
		p = end;
	}
	return 0;					/* librdkafka frees json */
}

static void
set_conf(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		die("config %s=%s: %s", name, value, errstr);
}

static rd_kafka_t *
make_producer(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	rd_kafka_t *rk;

	set_conf(conf, "bootstrap.servers", opt.brokers);
	set_conf(conf, "client.id", "adstream-loadgen");
	/* no loss and no reordering or duplication by retries */
	set_conf(conf, "enable.idempotence", "true");
	set_conf(conf, "acks", "all");
	{
		char		linger[16];

		snprintf(linger, sizeof(linger), "%d", opt.linger_ms);
		set_conf(conf, "linger.ms", linger);
	}
	/* large batches: fewer, bigger message sets on the broker */
	set_conf(conf, "batch.num.messages", "10000");
	set_conf(conf, "batch.size", "1000000");
	set_conf(conf, "queue.buffering.max.messages", "1000000");
	set_conf(conf, "queue.buffering.max.kbytes", "1048576");
	if (opt.debug)
		set_conf(conf, "debug", opt.debug);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	/* for the mean message set size of the summary line */
	if (opt.report_sets)
	{
		set_conf(conf, "statistics.interval.ms", "100");
		rd_kafka_conf_set_stats_cb(conf, stats_cb);
	}

	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		die("rd_kafka_new: %s", errstr);
	return rk;
}

/* Partition count from metadata, retried while the topic is being created. */
static int
topic_partitions(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const char *name)
{
	double		deadline = mono_s() + 30;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	while (mono_s() < deadline)
	{
		const struct rd_kafka_metadata *md;
		int			n = 0;

		err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
				n = md->topics[0].partition_cnt;
			else if (md->topic_cnt == 1)
				err = md->topics[0].err;
			rd_kafka_metadata_destroy(md);
			if (n > 0)
				return n;
		}
		usleep(200 * 1000);
	}
	die("no partitions for topic \"%s\": %s", name, rd_kafka_err2str(err));
	return 0;
}

/* ----------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------- */
static void
usage(FILE *out)
{
	fprintf(out,
			"usage: adstream-loadgen --brokers B --topic T --count N [options]\n"
			"  --seed S            PRNG seed (1)\n"
			"  --rate EPS          messages per second, 0 = unthrottled (0)\n"
			"  --ads A --campaigns C --users U --stores S   (1000, 50, 100000, 200)\n"
			"  --click-ratio R     (0.1)      --dup-ratio R      (0.05)\n"
			"  --bad-ratio R       (0.01)     --late-ratio R     (0.002)\n"
			"  --future-ratio R    (0.001)    --rfc3339-ratio R  (0.2)\n"
			"  --now-ms MS         reference clock (default: wall clock at start)\n"
			"  --start-ms MS       event time of the first event (now - 30 min)\n"
			"  --span-s S          event time covered by the stream (600)\n"
			"  --realtime          event time = wall clock at send time\n"
			"  --horizon-s H       consumer's lateness horizon (3600)\n"
			"  --max-bytes M       consumer's message size limit (1048576)\n"
			"  --partitions P      partition count (default: from metadata)\n"
			"  --co-partition      key events by user, and send each user's events, orders\n"
			"                      and re-sends to the user's partition (Kafka's murmur2)\n"
			"  --truth FILE        write the ground truth CSV\n"
			"  --dump FILE         also write every record to FILE\n"
			"  --dry-run           generate only, no Kafka (needs --partitions)\n"
			"  --progress          one progress line per second on stderr\n"
			"  --timeout-s S       final flush timeout (120)\n"
			"  --debug CONTEXTS    librdkafka debug contexts\n"
			"  --batch N           hand each partition's records to the producer N at a\n"
			"                      time, for message sets of about N records (1)\n"
			"  --linger-ms MS      the producer's linger.ms (5)\n"
			"                      (either also reports message_sets and records_per_set)\n"
			"  --seq-headers       give every record sent a header \"" SEQ_HEADER "\" unique to\n"
			"                      that send, so that a copy the broker stored of a retried\n"
			"                      write is told apart from a re-sent duplicate\n"
			"orders (sent after all events; truth adds order/reject_order lines):\n"
			"  --orders-topic T2   topic for the orders stream\n"
			"  --orders N          number of order records (0)\n"
			"  --orders-partitions P2  partition count (default: from metadata)\n"
			"  --attribution-window-s W  last-click window (86400)\n"
			"  --orders-bad-ratio R (0.02)    --orders-dup-ratio R (0.05)\n"
			"  --orders-interleaved  with --realtime: send the orders among the events, evenly,\n"
			"                      at the clock's time (those from a recent click at the\n"
			"                      click's time plus 1..600 s, capped at the clock), instead\n"
			"                      of after them; none before the first click of their pair\n"
			"replay (nothing generated, no truth):\n"
			"  --replay FILE       produce the records of a --dump format FILE as they are\n");
}

static int64_t
arg_int(const char *name, const char *s, int64_t lo, int64_t hi)
{
	char	   *end;
	long long	v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
	{
		fprintf(stderr, "adstream-loadgen: --%s must be an integer in %" PRId64 "..%" PRId64 "\n",
				name, lo, hi);
		exit(2);
	}
	return (int64_t) v;
}

static double
arg_double(const char *name, const char *s, double lo, double hi)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
	{
		fprintf(stderr, "adstream-loadgen: --%s must be a number in %g..%g\n", name, lo, hi);
		exit(2);
	}
	return v;
}

static void
parse_args(int argc, char **argv)
{
	enum
	{
		O_BROKERS = 256, O_TOPIC, O_COUNT, O_SEED, O_RATE, O_ADS, O_CAMPAIGNS,
		O_USERS, O_STORES, O_CLICK, O_DUP, O_BAD, O_LATE, O_FUTURE, O_RFC,
		O_NOW, O_START, O_SPAN, O_REALTIME, O_HORIZON, O_MAXBYTES, O_PARTS,
		O_TRUTH, O_DUMP, O_PROGRESS, O_DRYRUN, O_TIMEOUT, O_DEBUG, O_HELP,
		O_OTOPIC, O_ORDERS, O_OPARTS, O_WINDOW, O_OBAD, O_ODUP, O_REPLAY, O_COPART,
		O_BATCH, O_LINGER, O_OINTERLEAVED, O_SEQHDR
	};
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, O_BROKERS},
		{"topic", required_argument, NULL, O_TOPIC},
		{"count", required_argument, NULL, O_COUNT},
		{"seed", required_argument, NULL, O_SEED},
		{"rate", required_argument, NULL, O_RATE},
		{"ads", required_argument, NULL, O_ADS},
		{"campaigns", required_argument, NULL, O_CAMPAIGNS},
		{"users", required_argument, NULL, O_USERS},
		{"stores", required_argument, NULL, O_STORES},
		{"click-ratio", required_argument, NULL, O_CLICK},
		{"dup-ratio", required_argument, NULL, O_DUP},
		{"bad-ratio", required_argument, NULL, O_BAD},
		{"late-ratio", required_argument, NULL, O_LATE},
		{"future-ratio", required_argument, NULL, O_FUTURE},
		{"rfc3339-ratio", required_argument, NULL, O_RFC},
		{"now-ms", required_argument, NULL, O_NOW},
		{"start-ms", required_argument, NULL, O_START},
		{"span-s", required_argument, NULL, O_SPAN},
		{"realtime", no_argument, NULL, O_REALTIME},
		{"horizon-s", required_argument, NULL, O_HORIZON},
		{"max-bytes", required_argument, NULL, O_MAXBYTES},
		{"partitions", required_argument, NULL, O_PARTS},
		{"truth", required_argument, NULL, O_TRUTH},
		{"dump", required_argument, NULL, O_DUMP},
		{"progress", no_argument, NULL, O_PROGRESS},
		{"dry-run", no_argument, NULL, O_DRYRUN},
		{"timeout-s", required_argument, NULL, O_TIMEOUT},
		{"debug", required_argument, NULL, O_DEBUG},
		{"help", no_argument, NULL, O_HELP},
		{"orders-topic", required_argument, NULL, O_OTOPIC},
		{"orders", required_argument, NULL, O_ORDERS},
		{"orders-partitions", required_argument, NULL, O_OPARTS},
		{"attribution-window-s", required_argument, NULL, O_WINDOW},
		{"orders-bad-ratio", required_argument, NULL, O_OBAD},
		{"orders-dup-ratio", required_argument, NULL, O_ODUP},
		{"replay", required_argument, NULL, O_REPLAY},
		{"co-partition", no_argument, NULL, O_COPART},
		{"batch", required_argument, NULL, O_BATCH},
		{"linger-ms", required_argument, NULL, O_LINGER},
		{"orders-interleaved", no_argument, NULL, O_OINTERLEAVED},
		{"seq-headers", no_argument, NULL, O_SEQHDR},
		{NULL, 0, NULL, 0}
	};
	/* ten thousand years of milliseconds either side is plenty */
	const int64_t ms_max = INT64_C(253402300799999);
	int			c;
	int			have_now = 0;

	opt.count = -1;
	opt.seed = 1;
	opt.ads = 1000;
	opt.campaigns = 50;
	opt.users = 100000;
	opt.stores = 200;
	opt.click_ratio = 0.1;
	opt.dup_ratio = 0.05;
	opt.bad_ratio = 0.01;
	opt.late_ratio = 0.002;
	opt.future_ratio = 0.001;
	opt.rfc3339_ratio = 0.2;
	opt.span_s = 600;
	opt.horizon_s = 3600;
	opt.max_bytes = 1048576;
	opt.timeout_s = 120;
	opt.orders = -1;
	opt.window_s = 86400;
	opt.orders_bad_ratio = 0.02;
	opt.orders_dup_ratio = 0.05;
	opt.batch = 1;
	opt.linger_ms = 5;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case O_BROKERS: opt.brokers = optarg; break;
			case O_TOPIC: opt.topic = optarg; break;
			case O_COUNT: opt.count = arg_int("count", optarg, 0, INT64_C(1) << 40); break;
			case O_SEED: opt.seed = (uint64_t) arg_int("seed", optarg, 0, INT64_MAX); break;
			case O_RATE: opt.rate = arg_double("rate", optarg, 0, 1e9); break;
			case O_ADS: opt.ads = arg_int("ads", optarg, 1, INT64_C(1) << 40); break;
			case O_CAMPAIGNS: opt.campaigns = arg_int("campaigns", optarg, 1, INT64_C(1) << 40); break;
			case O_USERS: opt.users = arg_int("users", optarg, 1, INT64_C(1) << 50); break;
			case O_STORES: opt.stores = arg_int("stores", optarg, 1, INT64_C(1) << 40); break;
			case O_CLICK: opt.click_ratio = arg_double("click-ratio", optarg, 0, 1); break;
			case O_DUP: opt.dup_ratio = arg_double("dup-ratio", optarg, 0, 1); break;
			case O_BAD: opt.bad_ratio = arg_double("bad-ratio", optarg, 0, 1); break;
			case O_LATE: opt.late_ratio = arg_double("late-ratio", optarg, 0, 1); break;
			case O_FUTURE: opt.future_ratio = arg_double("future-ratio", optarg, 0, 1); break;
			case O_RFC: opt.rfc3339_ratio = arg_double("rfc3339-ratio", optarg, 0, 1); break;
			case O_NOW: opt.now_ms = arg_int("now-ms", optarg, 0, ms_max); have_now = 1; break;
			case O_START: opt.start_ms = arg_int("start-ms", optarg, 0, ms_max); opt.have_start = 1; break;
			case O_SPAN: opt.span_s = arg_int("span-s", optarg, 0, INT64_C(1) << 32); break;
			case O_REALTIME: opt.realtime = 1; break;
			case O_HORIZON: opt.horizon_s = arg_int("horizon-s", optarg, 1, INT64_C(1) << 32); break;
			case O_MAXBYTES: opt.max_bytes = arg_int("max-bytes", optarg, 1024, 100000000); break;
			case O_PARTS: opt.partitions = (int) arg_int("partitions", optarg, 1, 100000); break;
			case O_COPART: opt.copart = 1; break;
			case O_TRUTH: opt.truth_path = optarg; break;
			case O_DUMP: opt.dump_path = optarg; break;
			case O_PROGRESS: opt.progress = 1; break;
			case O_DRYRUN: opt.dry_run = 1; break;
			case O_TIMEOUT: opt.timeout_s = (int) arg_int("timeout-s", optarg, 1, 86400); break;
			case O_DEBUG: opt.debug = optarg; break;
			case O_HELP: usage(stdout); exit(0);
			case O_OTOPIC: opt.orders_topic = optarg; break;
			case O_ORDERS: opt.orders = arg_int("orders", optarg, 0, INT64_C(1) << 40); break;
			case O_OPARTS: opt.orders_partitions = (int) arg_int("orders-partitions", optarg, 1, 100000); break;
			case O_WINDOW: opt.window_s = arg_int("attribution-window-s", optarg, 1, INT64_C(1) << 32); break;
			case O_OBAD: opt.orders_bad_ratio = arg_double("orders-bad-ratio", optarg, 0, 1); break;
			case O_ODUP: opt.orders_dup_ratio = arg_double("orders-dup-ratio", optarg, 0, 1); break;
			case O_REPLAY: opt.replay_path = optarg; break;
			case O_OINTERLEAVED: opt.orders_interleaved = 1; break;
			case O_SEQHDR: opt.seq_headers = 1; break;
			case O_BATCH: opt.batch = (int) arg_int("batch", optarg, 1, 10000); opt.report_sets = 1; break;
			case O_LINGER: opt.linger_ms = (int) arg_int("linger-ms", optarg, 0, 5000); opt.report_sets = 1; break;
			default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "adstream-loadgen: unexpected argument \"%s\"\n", argv[optind]);
		exit(2);
	}
	if (opt.replay_path != NULL && (opt.topic == NULL || opt.brokers == NULL))
	{
		fprintf(stderr, "adstream-loadgen: --replay needs --brokers and --topic\n");
		exit(2);
	}
	if (opt.replay_path != NULL)
		return;
	if (opt.topic == NULL || opt.count < 0 || (opt.brokers == NULL && !opt.dry_run))
	{
		fprintf(stderr, "adstream-loadgen: --brokers, --topic and --count are required\n");
		usage(stderr);
		exit(2);
	}
	if (opt.dry_run && opt.partitions == 0)
	{
		fprintf(stderr, "adstream-loadgen: --dry-run needs --partitions\n");
		exit(2);
	}
	if ((opt.orders_topic != NULL) != (opt.orders >= 0))
	{
		fprintf(stderr, "adstream-loadgen: --orders-topic and --orders go together\n");
		exit(2);
	}
	if (opt.orders_interleaved && (opt.orders_topic == NULL || !opt.realtime))
	{
		fprintf(stderr, "adstream-loadgen: --orders-interleaved needs --orders-topic and --realtime\n");
		exit(2);
	}
	if (opt.orders_topic != NULL && strcmp(opt.orders_topic, opt.topic) == 0)
	{
		fprintf(stderr, "adstream-loadgen: --orders-topic must differ from --topic\n");
		exit(2);
	}
	if (opt.orders_topic != NULL && opt.dry_run && opt.orders_partitions == 0)
	{
		fprintf(stderr, "adstream-loadgen: --dry-run needs --orders-partitions\n");
		exit(2);
	}
	if (opt.orders_bad_ratio + opt.orders_dup_ratio > 1.0)
	{
		fprintf(stderr, "adstream-loadgen: orders bad and dup ratios add up to more than 1\n");
		exit(2);
	}
	if (opt.dup_ratio + opt.bad_ratio + opt.late_ratio + opt.future_ratio > 1.0)
	{
		fprintf(stderr, "adstream-loadgen: dup, bad, late and future ratios add up to more than 1\n");
		exit(2);
	}
	if (!have_now)
		opt.now_ms = wall_ms();
	if (!opt.have_start)
		opt.start_ms = opt.now_ms - 30 * 60 * 1000;
	if (opt.start_ms < 0)
		opt.start_ms = 0;
	if (!opt.realtime && opt.start_ms + opt.span_s * 1000 + 2000 > opt.now_ms)
		fprintf(stderr,
				"adstream-loadgen: warning: event time runs up to %" PRId64 " ms past --now-ms;"
				" a consumer may count those events as future_timestamp\n",
				opt.start_ms + opt.span_s * 1000 + 2000 - opt.now_ms);
}

/*
 * Sending: the dump, pacing, the produce call and progress, shared by the
 * events and the orders stream.
 */
/*
 * Records held for one partition until --batch of them can go to the
 * producer together: each is a header (value length, key length or -1)
 * followed by the key and value bytes.
 */
typedef struct Hold
{
	rd_kafka_topic_t *rkt;
	char	   *data;
	size_t		len;
	size_t		cap;
	int			n;
} Hold;

typedef struct Sender
{
	rd_kafka_t *rk;
	Hold	   *hold;			/* per partition, with --batch > 1 */
	int			nhold;
	FILE	   *dump;
	double		t0;
	double		t_last_progress;
	int64_t		sent;			/* records of both streams */
	int64_t		sent_last_progress;
	double		tokens;
	double		burst;
	double		t_tokens;
} Sender;

/*
 * With --seq-headers, the headers of one send: SEQ_HEADER is this process's
 * id (pid and start time) and the send's number, unique across runs on a
 * topic.  A producer's retry carries the same headers, so a copy the broker
 * stored twice shares them with its original, and a deliberate re-send does
 * not.  NULL without the option; the producer takes ownership on success.
 */
static rd_kafka_headers_t *
send_headers(void)
{
	static char run_id[64];
	static uint64_t nsent;
	rd_kafka_headers_t *h;
	char		v[96];
	int			n;

	if (!opt.seq_headers)
		return NULL;
	if (run_id[0] == '\0')
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		snprintf(run_id, sizeof(run_id), "%ld.%lld.%ld", (long) getpid(), (long long) ts.tv_sec, ts.tv_nsec);
	}
	n = snprintf(v, sizeof(v), "%s.%" PRIu64, run_id, nsent++);
	h = rd_kafka_headers_new(1);
	rd_kafka_header_add(h, SEQ_HEADER, -1, v, n);
	return h;
}

static void
produce_one(Sender *sd, rd_kafka_topic_t *rkt, int p, const char *val, size_t vlen,
			const char *key, size_t klen)
{
	rd_kafka_headers_t *hdrs = send_headers();

	for (;;)
	{
		rd_kafka_resp_err_t err;

		/*
		 * Empty values are sent as a zero-length, non-NULL value; the
		 * consumer treats NULL and empty alike.
		 */
		err = rd_kafka_producev(sd->rk,
								RD_KAFKA_V_RKT(rkt),
								RD_KAFKA_V_PARTITION(p),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								/* parenthesised: the macro casts its argument */
								RD_KAFKA_V_VALUE(((char *) val), vlen),
								RD_KAFKA_V_KEY(((char *) key), klen),
								RD_KAFKA_V_HEADERS(hdrs),
								RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			break;
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			die("produce to %s partition %d failed: %s",
				rd_kafka_topic_name(rkt), p, rd_kafka_err2str(err));
		rd_kafka_poll(sd->rk, 10);
	}
}

/* Hands every record held for partition p to the producer, in order. */
static void
release_hold(Sender *sd, int p)
{
	Hold	   *h = &sd->hold[p];
	size_t		at = 0;

	while (at < h->len)
	{
		int32_t		lens[2];
		const char *key;

		memcpy(lens, h->data + at, sizeof(lens));
		at += sizeof(lens);
		key = lens[1] >= 0 ? h->data + at : NULL;
		at += (size_t) (lens[1] > 0 ? lens[1] : 0);
		produce_one(sd, h->rkt, p, h->data + at, (size_t) lens[0], key,
					(size_t) (lens[1] > 0 ? lens[1] : 0));
		at += (size_t) lens[0];
	}
	h->len = 0;
	h->n = 0;
	rd_kafka_poll(sd->rk, 0);
}

static void
release_all_holds(Sender *sd)
{
	for (int p = 0; p < sd->nhold; p++)
		if (sd->hold[p].n > 0)
			release_hold(sd, p);
}

/*
 * --batch N: the records keep their partitions and, within each partition,
 * their order; a partition's records go to the producer N at a time, so
 * that librdkafka puts them into one message set (a producer with a sticky
 * or per-partition batching strategy does the same).  The order across
 * partitions changes, which Kafka never promises anyway.
 */
static void
hold_record(Sender *sd, rd_kafka_topic_t *rkt, const Record *rec)
{
	int			p = rec->partition;
	Hold	   *h;
	int32_t		lens[2];
	size_t		need;

	if (p >= sd->nhold)
	{
		int			n = p + 1;

		sd->hold = realloc(sd->hold, sizeof(Hold) * (size_t) n);
		if (sd->hold == NULL)
			die("out of memory");
		memset(sd->hold + sd->nhold, 0, sizeof(Hold) * (size_t) (n - sd->nhold));
		sd->nhold = n;
	}
	h = &sd->hold[p];
	if (h->n > 0 && h->rkt != rkt)
		release_hold(sd, p);
	h->rkt = rkt;
	lens[0] = (int32_t) rec->val.len;
	lens[1] = rec->has_key ? (int32_t) rec->keylen : -1;
	need = sizeof(lens) + rec->val.len + (rec->has_key ? rec->keylen : 0);
	if (h->len + need > h->cap)
	{
		h->cap = (h->len + need) * 2;
		h->data = realloc(h->data, h->cap);
		if (h->data == NULL)
			die("out of memory");
	}
	memcpy(h->data + h->len, lens, sizeof(lens));
	h->len += sizeof(lens);
	if (rec->has_key)
	{
		memcpy(h->data + h->len, rec->key, rec->keylen);
		h->len += rec->keylen;
	}
	memcpy(h->data + h->len, rec->val.data, rec->val.len);
	h->len += rec->val.len;
	if (++h->n >= opt.batch)
		release_hold(sd, p);
}

static void
send_record(Sender *sd, rd_kafka_topic_t *rkt, const Record *rec, int is_order)
{
	int			p = rec->partition;

	if (sd->dump)
	{
		/* header line, then the raw key and value, then a newline */
		fprintf(sd->dump, "%s%d %d %zu\n", is_order ? "orders " : "",
				p, rec->has_key ? (int) rec->keylen : -1, rec->val.len);
		if (rec->has_key)
			fwrite(rec->key, 1, rec->keylen, sd->dump);
		fwrite(rec->val.data, 1, rec->val.len, sd->dump);
		fputc('\n', sd->dump);
	}
	sd->sent++;

	if (sd->rk == NULL)
		return;

	/* token bucket pacing */
	if (opt.rate > 0)
	{
		for (;;)
		{
			double		now = mono_s();

			sd->tokens += (now - sd->t_tokens) * opt.rate;
			sd->t_tokens = now;
			if (sd->tokens > sd->burst)
				sd->tokens = sd->burst;
			if (sd->tokens >= 1.0)
				break;
			rd_kafka_poll(sd->rk, 0);
			{
				double		wait = (1.0 - sd->tokens) / opt.rate;
				struct timespec ts;

				if (wait > 0.01)
					wait = 0.01;
				ts.tv_sec = 0;
				ts.tv_nsec = (long) (wait * 1e9);
				nanosleep(&ts, NULL);
			}
		}
		sd->tokens -= 1.0;
	}

	if (opt.batch > 1)
		hold_record(sd, rkt, rec);
	else
		produce_one(sd, rkt, p, rec->val.data, rec->val.len,
					rec->has_key ? rec->key : NULL, rec->has_key ? rec->keylen : 0);

	if (((sd->sent - 1) & 1023) == 0)
	{
		rd_kafka_poll(sd->rk, 0);
		if (opt.progress)
		{
			double		now = mono_s();

			if (now - sd->t_last_progress >= 1.0)
			{
				fprintf(stderr,
						"adstream-loadgen: sent=%" PRId64 " delivered=%" PRId64
						" failed=%" PRId64 " rate=%.0f/s (overall %.0f/s)\n",
						sd->sent, delivered, failed,
						(double) (sd->sent - sd->sent_last_progress) / (now - sd->t_last_progress),
						(double) sd->sent / (now - sd->t0));
				sd->t_last_progress = now;
				sd->sent_last_progress = sd->sent;
			}
		}
	}
}

/* Wait for every queued message; count the undelivered ones as failed. */
static void
flush_producer(rd_kafka_t *rk)
{
	rd_kafka_resp_err_t err = rd_kafka_flush(rk, opt.timeout_s * 1000);
	int			left = rd_kafka_outq_len(rk);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR || left > 0)
	{
		fprintf(stderr, "adstream-loadgen: flush: %s, %d messages not delivered\n",
				rd_kafka_err2str(err), left);
		failed += left;
	}
}

/*
 * --replay: produce the records of a dump-format file unchanged, in order.
 * Values may be as large as the broker takes (the mock broker keeps 5 MiB
 * per partition, so a few MiB per record at most there).
 */
static int
replay_main(void)
{
	FILE	   *in = fopen(opt.replay_path, "rb");
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	char		line[128];
	char	   *key = NULL;
	char	   *val = NULL;
	int64_t		sent = 0;
	int64_t		lineno = 0;
	double		t0 = mono_s();

	if (in == NULL)
		die("cannot open %s: %s", opt.replay_path, strerror(errno));
	{
		rd_kafka_conf_t *conf = rd_kafka_conf_new();
		char		errstr[512];

		set_conf(conf, "bootstrap.servers", opt.brokers);
		set_conf(conf, "client.id", "adstream-loadgen-replay");
		set_conf(conf, "enable.idempotence", "true");
		set_conf(conf, "acks", "all");
		set_conf(conf, "message.max.bytes", "67108864");
		if (opt.debug)
			set_conf(conf, "debug", opt.debug);
		rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
		rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
		if (rk == NULL)
			die("rd_kafka_new: %s", errstr);
	}
	rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
	if (rkt == NULL)
		die("rd_kafka_topic_new: %s", rd_kafka_err2str(rd_kafka_last_error()));

	while (fgets(line, sizeof(line), in) != NULL)
	{
		int			p;
		long long	klen,
					vlen;
		char		extra;
		rd_kafka_resp_err_t err;
		rd_kafka_headers_t *hdrs;

		lineno++;
		if (sscanf(line, "%d %lld %lld%c", &p, &klen, &vlen, &extra) != 4 || extra != '\n' ||
			p < 0 || klen < -1 || vlen < -1 || klen > (64 << 20) || vlen > (64 << 20))
			die("%s: record %" PRId64 ": bad header line", opt.replay_path, lineno);
		key = realloc(key, (size_t) (klen > 0 ? klen : 1));
		val = realloc(val, (size_t) (vlen > 0 ? vlen : 1));
		if (key == NULL || val == NULL)
			die("out of memory");
		if ((klen > 0 && fread(key, 1, (size_t) klen, in) != (size_t) klen) ||
			(vlen > 0 && fread(val, 1, (size_t) vlen, in) != (size_t) vlen) ||
			fgetc(in) != '\n')
			die("%s: record %" PRId64 ": truncated", opt.replay_path, lineno);
		hdrs = send_headers();
		for (;;)
		{
			err = rd_kafka_producev(rk,
									RD_KAFKA_V_RKT(rkt),
									RD_KAFKA_V_PARTITION(p),
									RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
									RD_KAFKA_V_VALUE((vlen >= 0 ? val : NULL), (size_t) (vlen > 0 ? vlen : 0)),
									RD_KAFKA_V_KEY((klen >= 0 ? key : NULL), (size_t) (klen > 0 ? klen : 0)),
									RD_KAFKA_V_HEADERS(hdrs),
									RD_KAFKA_V_END);
			if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(rk, 10);
		}
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			die("replay to %s partition %d failed: %s", opt.topic, p, rd_kafka_err2str(err));
		sent++;
		rd_kafka_poll(rk, 0);
	}
	if (ferror(in))
		die("error reading %s: %s", opt.replay_path, strerror(errno));
	fclose(in);
	free(key);
	free(val);
	flush_producer(rk);
	printf("sent=%" PRId64 " seconds=%.3f\n", sent, mono_s() - t0);
	fflush(stdout);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	if (failed > 0 || delivered != sent)
	{
		fprintf(stderr, "adstream-loadgen: %" PRId64 " of %" PRId64 " records delivered, %" PRId64 " failed\n",
				delivered, sent, failed);
		return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	rd_kafka_t *rk = NULL;
	rd_kafka_topic_t *rkt = NULL;
	rd_kafka_topic_t *orkt = NULL;
	Sender		sd;
	Record		rec;
	Record		orec;			/* an interleaved order */
	double		elapsed;
	int64_t		i;
	int			p;
	int			rc = 0;
	uint64_t	max_part_bytes = 0;

	parse_args(argc, argv);
	if (opt.replay_path != NULL)
		return replay_main();
	prng_seed(&rng, opt.seed);
	memset(&sd, 0, sizeof(sd));

	for (p = ADS_R_EMPTY; p <= ADS_R_INVALID_TIMESTAMP; p++)
	{
		/*
		 * Oversized records above 64 KiB would eat the mock broker's 5 MiB
		 * per-partition log in a handful of messages, so skip them.
		 */
		if (p == ADS_R_OVERSIZED && opt.max_bytes > 65536)
			continue;
		if (p == ADS_R_OVERSIZED)
			gen_oversized = 1;
		bad_kinds[n_bad_kinds++] = (AdsReason) p;
	}
	if (opt.bad_ratio > 0 && opt.max_bytes > 65536)
		fprintf(stderr, "adstream-loadgen: note: --max-bytes > 64 KiB, not generating oversized records\n");

	rec.val.cap = (size_t) (opt.max_bytes <= 65536 ? opt.max_bytes + 4096 : 4096);
	rec.val.data = xmalloc(rec.val.cap);
	orec.val.cap = rec.val.cap;
	orec.val.data = xmalloc(orec.val.cap);
	ring = calloc(RING_SIZE, sizeof(RingEntry));
	if (ring == NULL)
		die("out of memory");

	if (opt.dump_path)
	{
		sd.dump = fopen(opt.dump_path, "wb");
		if (sd.dump == NULL)
			die("cannot open %s: %s", opt.dump_path, strerror(errno));
	}

	if (!opt.dry_run)
	{
		rk = make_producer();
		rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
		if (rkt == NULL)
			die("rd_kafka_topic_new: %s", rd_kafka_err2str(rd_kafka_last_error()));
		if (opt.partitions == 0)
			opt.partitions = topic_partitions(rk, rkt, opt.topic);
		if (opt.orders_topic != NULL)
		{
			orkt = rd_kafka_topic_new(rk, opt.orders_topic, NULL);
			if (orkt == NULL)
				die("rd_kafka_topic_new: %s", rd_kafka_err2str(rd_kafka_last_error()));
			if (opt.orders_partitions == 0)
				opt.orders_partitions = topic_partitions(rk, orkt, opt.orders_topic);
		}
	}
	sd.rk = rk;

	part_max_ts = calloc((size_t) opt.partitions, sizeof(int64_t));
	part_has = calloc((size_t) opt.partitions, sizeof(int));
	part_bytes = calloc((size_t) opt.partitions, sizeof(uint64_t));
	if (!part_max_ts || !part_has || !part_bytes)
		die("out of memory");
	if (opt.copart)
	{
		if (opt.orders_topic != NULL && opt.orders_partitions != opt.partitions)
			die("--co-partition needs as many orders partitions (%d) as event partitions (%d)",
				opt.orders_partitions, opt.partitions);
		copart_begin();
	}

	/*
	 * Rough check against the mock broker's per-partition log limit: about
	 * 210 bytes per record with key and framing, plus oversized records.
	 */
	{
		double		per_rec = 210.0;
		double		est;

		if (gen_oversized)
			per_rec += opt.bad_ratio / n_bad_kinds * (double) opt.max_bytes;
		est = (double) opt.count * per_rec / opt.partitions;
		if (est > MOCK_PART_LIMIT)
			fprintf(stderr,
					"adstream-loadgen: note: about %.1f MiB per partition; librdkafka's mock broker"
					" keeps only the newest 5 MiB of each partition\n",
					est / 1048576.0);
		if (opt.orders_topic != NULL &&
			(double) opt.orders * 230.0 / opt.orders_partitions > MOCK_PART_LIMIT)
			fprintf(stderr,
					"adstream-loadgen: note: about %.1f MiB per orders partition; librdkafka's mock"
					" broker keeps only the newest 5 MiB of each partition\n",
					(double) opt.orders * 230.0 / opt.orders_partitions / 1048576.0);
	}
	if (opt.progress)
		fprintf(stderr,
				"adstream-loadgen: seed=%" PRIu64 " now-ms=%" PRId64 " start-ms=%" PRId64
				" span-s=%" PRId64 " partitions=%d%s\n",
				opt.seed, opt.now_ms, opt.start_ms, opt.span_s, opt.partitions,
				opt.realtime ? " realtime" : "");

	sd.t0 = mono_s();
	sd.t_last_progress = sd.t0;
	sd.t_tokens = sd.t0;
	sd.tokens = 1.0;
	sd.burst = opt.rate > 0 ? (opt.rate / 20.0 > 1.0 ? opt.rate / 20.0 : 1.0) : 0;

	if (opt.orders_interleaved)
		orders_begin();
	for (i = 0; i < opt.count; i++)
	{
		double		u = rand_unit();
		int			done = 0;

		p = (int) (i % opt.partitions);
		rec.partition = p;
		rec.val.len = 0;
		rec.has_key = 0;

		if (u < opt.dup_ratio)
			done = make_duplicate(&rec, p);
		else if (u < opt.dup_ratio + opt.bad_ratio)
		{
			make_bad(&rec, i);
			done = 1;
		}
		else if (u < opt.dup_ratio + opt.bad_ratio + opt.late_ratio)
			done = make_old(&rec, p);
		else if (u < opt.dup_ratio + opt.bad_ratio + opt.late_ratio + opt.future_ratio)
		{
			make_future(&rec);
			done = 1;
		}
		if (!done)
		{
			rec.val.len = 0;
			make_valid(&rec, i, p);
		}
		truth.sent++;
		part_bytes[p] += rec.val.len + (rec.has_key ? rec.keylen : 0);
		send_record(&sd, rkt, &rec, 0);
		/* interleaved orders: evenly, opt.orders over opt.count events */
		while (opt.orders_interleaved && otruth.sent < (int64_t) ((double) opt.orders * (double) (i + 1) / (double) opt.count))
		{
			make_order(&orec, (int) (otruth.sent % opt.orders_partitions));
			send_record(&sd, orkt, &orec, 1);
		}
	}

	if (rk != NULL)
	{
		release_all_holds(&sd);
		flush_producer(rk);
	}

	/*
	 * Orders, strictly after the events: the flush above means every event
	 * has been acknowledged before the first order is produced.
	 */
	if (opt.orders_topic != NULL && !opt.orders_interleaved)
	{
		orders_begin();
		for (i = 0; i < opt.orders; i++)
		{
			make_order(&rec, (int) (i % opt.orders_partitions));
			send_record(&sd, orkt, &rec, 1);
		}
		if (rk != NULL)
		{
			release_all_holds(&sd);
			flush_producer(rk);
		}
	}
	/* the statistics of the last interval, for the message set size */
	if (rk != NULL && opt.report_sets)
		rd_kafka_poll(rk, 150);
	elapsed = mono_s() - sd.t0;

	if (sd.dump && fclose(sd.dump) != 0)
		die("error writing %s: %s", opt.dump_path, strerror(errno));
	if (opt.orders_interleaved)
		sort_clicks();			/* every click, for the orders' truth */
	if (opt.truth_path)
		write_truth(opt.truth_path);

	for (p = 0; p < opt.partitions; p++)
	{
		/* ~25 bytes of record framing each, on top of key and value */
		uint64_t	b = part_bytes[p] + (uint64_t) (opt.count / opt.partitions + 1) * 25;

		if (b > max_part_bytes)
			max_part_bytes = b;
	}
	if (max_part_bytes > MOCK_PART_LIMIT)
		fprintf(stderr,
				"adstream-loadgen: note: up to %.1f MiB went to one partition; the mock broker"
				" would have trimmed the oldest records\n",
				(double) max_part_bytes / 1048576.0);

	printf("sent=%" PRId64 " valid=%" PRId64 " unique=%" PRId64 " duplicates=%" PRId64
		   " rejected=%" PRId64 " seconds=%.3f rate=%.0f",
		   truth.sent, truth.valid, truth.unique, truth.duplicates, truth.rejected,
		   elapsed, elapsed > 0 ? (double) sd.sent / elapsed : 0.0);
	if (opt.orders_topic != NULL)
		printf(" orders_sent=%" PRId64, otruth.sent);
	if (batch_count > 0)
		printf(" message_sets=%" PRId64 " records_per_set=%.1f", batch_count,
			   (double) batch_records / (double) batch_count);
	printf("\n");
	fflush(stdout);

	if (rk != NULL)
	{
		if (failed > 0 || delivered != sd.sent)
		{
			fprintf(stderr, "adstream-loadgen: %" PRId64 " of %" PRId64 " messages delivered, %"
					PRId64 " failed\n", delivered, sd.sent, failed);
			rc = 1;
		}
		if (orkt != NULL)
			rd_kafka_topic_destroy(orkt);
		rd_kafka_topic_destroy(rkt);
		rd_kafka_destroy(rk);
	}
	free(rec.val.data);
	free(orec.val.data);
	return rc;
}
