/*
 * fuzz_order.c
 *     libFuzzer harness for ads_parse_order() (src/event_parse.c).
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_order.c src/event_parse.c -o /tmp/fuzz_order
 *
 * Every violated invariant of the contract in include/event_parse.h ends the
 * run with __builtin_trap(), which libFuzzer reports as a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "event_parse.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

/* Bytes after the detail buffer that the parser must never touch. */
#define CANARY_LEN 16
#define CANARY_BYTE 0x5A
#define SMALL_DETAIL 7

typedef struct Result
{
	AdsReason	reason;
	AdsOrder	ord;
	char		detail[ADS_DETAIL_LEN + CANARY_LEN];
} Result;

/* detail must hold a NUL within detail_len, and only printable ASCII before it. */
static void
check_detail(const char *detail, size_t detail_len)
{
	size_t		i;

	for (i = 0; i < detail_len; i++)
	{
		unsigned char c = (unsigned char) detail[i];

		if (c == '\0')
			break;
		CHECK(c >= 0x20 && c <= 0x7E);
	}
	CHECK(i < detail_len);
	for (i = detail_len; i < detail_len + CANARY_LEN; i++)
		CHECK((unsigned char) detail[i] == CANARY_BYTE);
}

static void
check_reason(AdsReason r)
{
	const char *name;

	CHECK((int) r >= 0 && r < ADS_R__COUNT);
	/* the caller decides these two, never the parser */
	CHECK(r != ADS_R_FUTURE_TIMESTAMP && r != ADS_R_TOO_LATE);
	/* event-only reason */
	CHECK(r != ADS_R_UNKNOWN_TYPE);
	name = ads_reason_name(r);
	CHECK(name != NULL);
	CHECK(name[0] != '\0');
}

static void
check_uuid_roundtrip(const uint8_t id[16])
{
	char		text[37 + CANARY_LEN];
	uint8_t		back[16];
	size_t		i;

	memset(text, CANARY_BYTE, sizeof(text));
	ads_format_uuid(id, text);
	CHECK(text[36] == '\0');
	for (i = 37; i < sizeof(text); i++)
		CHECK((unsigned char) text[i] == CANARY_BYTE);
	CHECK(strlen(text) == 36);
	memset(back, 0, sizeof(back));
	CHECK(ads_parse_uuid(text, 36, back) == 1);
	CHECK(memcmp(id, back, 16) == 0);
}

/* Length of the run of ASCII digits starting at p. */
static size_t
digits(const char *p)
{
	size_t		n = 0;

	while (p[n] >= '0' && p[n] <= '9')
		n++;
	return n;
}

/* Hand-written matcher for ^(0|[1-9][0-9]{0,17})(\.[0-9]{1,9})?$ */
static int
amount_ok(const char *a, size_t cap)
{
	size_t		n;
	const char *p = a;

	if (memchr(a, '\0', cap) == NULL)
		return 0;
	n = digits(p);
	if (n == 0 || n > 18)
		return 0;
	if (n > 1 && p[0] == '0')
		return 0;
	p += n;
	if (*p == '.')
	{
		p++;
		n = digits(p);
		if (n == 0 || n > 9)
			return 0;
		p += n;
	}
	return *p == '\0';
}

static void
check_order(const AdsOrder *o)
{
	CHECK(o->user_id >= 0);
	CHECK(o->store_id >= 0);
	CHECK(o->ts_us >= ADS_TS_MIN_US && o->ts_us <= ADS_TS_MAX_US);
	CHECK(amount_ok(o->amount, sizeof(o->amount)));
	CHECK(o->currency[0] >= 'A' && o->currency[0] <= 'Z');
	CHECK(o->currency[1] >= 'A' && o->currency[1] <= 'Z');
	CHECK(o->currency[2] >= 'A' && o->currency[2] <= 'Z');
	CHECK(o->currency[3] == '\0');
	check_uuid_roundtrip(o->order_id);
}

/* Run the parser once with fresh, identically pre-filled output buffers. */
static void
run(const uint8_t *data, size_t size, size_t max_bytes, Result *res)
{
	memset(res, 0xA5, sizeof(*res));
	memset(res->detail, CANARY_BYTE, sizeof(res->detail));
	res->reason = ads_parse_order((const char *) data, size, max_bytes,
								  &res->ord, res->detail, ADS_DETAIL_LEN);
	check_reason(res->reason);
	check_detail(res->detail, ADS_DETAIL_LEN);
	if (res->reason == ADS_OK)
		check_order(&res->ord);
}

/* Field-wise comparison (struct padding is not part of the output). */
static int
same_result(const Result *a, const Result *b)
{
	if (a->reason != b->reason)
		return 0;
	if (strcmp(a->detail, b->detail) != 0)
		return 0;
	if (a->reason != ADS_OK)
		return 1;
	return memcmp(a->ord.order_id, b->ord.order_id, 16) == 0 &&
		a->ord.user_id == b->ord.user_id &&
		a->ord.store_id == b->ord.store_id &&
		strcmp(a->ord.amount, b->ord.amount) == 0 &&
		strcmp(a->ord.currency, b->ord.currency) == 0 &&
		a->ord.ts_us == b->ord.ts_us;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static Result a, b, c;
	char		small[SMALL_DETAIL + CANARY_LEN];
	char		none[CANARY_LEN];
	AdsOrder	ord;
	AdsReason	r;
	size_t		i;
	int			has_nul = memchr(data, 0, size) != NULL;

	/* generous limit, twice: deterministic */
	run(data, size, 64 * 1024, &a);
	run(data, size, 64 * 1024, &b);
	CHECK(same_result(&a, &b));

	/* precedence of the first three checks */
	if (size == 0)
		CHECK(a.reason == ADS_R_EMPTY);
	else if (has_nul)
		CHECK(a.reason == ADS_R_NUL_BYTE);
	else
		CHECK(a.reason != ADS_R_EMPTY && a.reason != ADS_R_NUL_BYTE &&
			  a.reason != ADS_R_OVERSIZED);
	if (has_nul)
		CHECK(a.reason != ADS_OK);

	/* max_bytes == size: the limit is inclusive, same outcome */
	if (size > 0)
	{
		run(data, size, size, &c);
		CHECK(same_result(&a, &c));

		/* one byte too many: oversized */
		run(data, size, size - 1, &c);
		CHECK(c.reason == ADS_R_OVERSIZED);
	}

	/* a tiny detail buffer truncates but never overflows */
	memset(small, CANARY_BYTE, sizeof(small));
	r = ads_parse_order((const char *) data, size, 64 * 1024, &ord,
						small, SMALL_DETAIL);
	CHECK(r == a.reason);
	check_detail(small, SMALL_DETAIL);
	CHECK(strncmp(small, a.detail, SMALL_DETAIL - 1) == 0);

	/* detail_len == 0, then out == NULL and detail == NULL: nothing is written */
	memset(none, CANARY_BYTE, sizeof(none));
	r = ads_parse_order((const char *) data, size, 64 * 1024, &ord, none, 0);
	CHECK(r == a.reason);
	for (i = 0; i < sizeof(none); i++)
		CHECK((unsigned char) none[i] == CANARY_BYTE);
	r = ads_parse_order((const char *) data, size, 64 * 1024, NULL, NULL, 0);
	CHECK(r == a.reason);

	return 0;
}
