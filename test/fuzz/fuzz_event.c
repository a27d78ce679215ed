/*
 * fuzz_event.c
 *     libFuzzer harness for ads_parse_event() (src/event_parse.c).
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_event.c src/event_parse.c -o /tmp/fuzz_event
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
	AdsEvent	ev;
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
	/* order-only reasons */
	CHECK(r != ADS_R_INVALID_AMOUNT && r != ADS_R_INVALID_CURRENCY);
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

static void
check_event(const AdsEvent *ev)
{
	CHECK(ev->type == ADS_EV_IMPRESSION || ev->type == ADS_EV_CLICK);
	CHECK(ev->ad_id >= 0);
	CHECK(ev->campaign_id >= 0);
	CHECK(ev->user_id >= 0);
	CHECK(ev->store_id >= 0);
	CHECK(ev->ts_us >= ADS_TS_MIN_US && ev->ts_us <= ADS_TS_MAX_US);
	check_uuid_roundtrip(ev->event_id);
}

/* Run the parser once with fresh, identically pre-filled output buffers. */
static void
run(const uint8_t *data, size_t size, size_t max_bytes, Result *res)
{
	memset(res, 0xA5, sizeof(*res));
	memset(res->detail, CANARY_BYTE, sizeof(res->detail));
	res->reason = ads_parse_event((const char *) data, size, max_bytes,
								  &res->ev, res->detail, ADS_DETAIL_LEN);
	check_reason(res->reason);
	check_detail(res->detail, ADS_DETAIL_LEN);
	if (res->reason == ADS_OK)
		check_event(&res->ev);
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
	return memcmp(a->ev.event_id, b->ev.event_id, 16) == 0 &&
		a->ev.type == b->ev.type &&
		a->ev.ad_id == b->ev.ad_id &&
		a->ev.campaign_id == b->ev.campaign_id &&
		a->ev.user_id == b->ev.user_id &&
		a->ev.store_id == b->ev.store_id &&
		a->ev.ts_us == b->ev.ts_us;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static Result a, b, c;
	char		small[SMALL_DETAIL + CANARY_LEN];
	char		none[CANARY_LEN];
	AdsEvent	ev;
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
	r = ads_parse_event((const char *) data, size, 64 * 1024, &ev,
						small, SMALL_DETAIL);
	CHECK(r == a.reason);
	check_detail(small, SMALL_DETAIL);
	CHECK(strncmp(small, a.detail, SMALL_DETAIL - 1) == 0);

	/* detail_len == 0, then out == NULL and detail == NULL: nothing is written */
	memset(none, CANARY_BYTE, sizeof(none));
	r = ads_parse_event((const char *) data, size, 64 * 1024, &ev, none, 0);
	CHECK(r == a.reason);
	for (i = 0; i < sizeof(none); i++)
		CHECK((unsigned char) none[i] == CANARY_BYTE);
	r = ads_parse_event((const char *) data, size, 64 * 1024, NULL, NULL, 0);
	CHECK(r == a.reason);

	return 0;
}
