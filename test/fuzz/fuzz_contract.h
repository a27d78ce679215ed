/*
 * fuzz_contract.h
 *     The parser contract of include/event_parse.h, checked on one fuzz
 *     input, for any of the message kinds.  A harness describes its parser
 *     (FuzzParser) and calls fuzz_contract().  Every violated invariant ends
 *     the run with __builtin_trap(), which libFuzzer reports as a crash.
 */
#ifndef ADSTREAM_FUZZ_CONTRACT_H
#define ADSTREAM_FUZZ_CONTRACT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "event_parse.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

/* Bytes after an output buffer that the parser must never touch. */
#define CANARY_LEN 16
#define CANARY_BYTE 0x5A
#define SMALL_DETAIL 7
#define GENEROUS_LIMIT (64 * 1024)

typedef union FuzzOut
{
	AdsEvent	ev;
	AdsOrder	ord;
} FuzzOut;

/* One parser, seen through a uniform interface. */
typedef struct FuzzParser
{
	AdsReason	(*parse) (const char *buf, size_t len, size_t max_bytes, FuzzOut *out,
						  char *detail, size_t detail_len);
	int			(*reason_possible) (AdsReason r);	/* false for other kinds' reasons */
	void		(*check_ok) (const FuzzOut *out);	/* the fields of an accepted message */
	int			(*same_out) (const FuzzOut *a, const FuzzOut *b);	/* field-wise */
} FuzzParser;

typedef struct FuzzResult
{
	AdsReason	reason;
	FuzzOut		out;
	char		detail[ADS_DETAIL_LEN + CANARY_LEN];
} FuzzResult;

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
check_reason(const FuzzParser *p, AdsReason r)
{
	const char *name;

	CHECK((int) r >= 0 && r < ADS_R__COUNT);
	/* the caller decides these two, never the parser */
	CHECK(r != ADS_R_FUTURE_TIMESTAMP && r != ADS_R_TOO_LATE);
	CHECK(p->reason_possible(r));
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

/* Run the parser once with fresh, identically pre-filled output buffers. */
static void
run(const FuzzParser *p, const uint8_t *data, size_t size, size_t max_bytes, FuzzResult *res)
{
	memset(res, 0xA5, sizeof(*res));
	memset(res->detail, CANARY_BYTE, sizeof(res->detail));
	res->reason = p->parse((const char *) data, size, max_bytes, &res->out,
						   res->detail, ADS_DETAIL_LEN);
	check_reason(p, res->reason);
	check_detail(res->detail, ADS_DETAIL_LEN);
	if (res->reason == ADS_OK)
		p->check_ok(&res->out);
}

static int
same_result(const FuzzParser *p, const FuzzResult *a, const FuzzResult *b)
{
	if (a->reason != b->reason || strcmp(a->detail, b->detail) != 0)
		return 0;
	return a->reason != ADS_OK || p->same_out(&a->out, &b->out);
}

static int
fuzz_contract(const FuzzParser *p, const uint8_t *data, size_t size)
{
	static FuzzResult a, b, c;
	char		small[SMALL_DETAIL + CANARY_LEN];
	char		none[CANARY_LEN];
	FuzzOut		out;
	AdsReason	r;
	size_t		i;
	int			has_nul = memchr(data, 0, size) != NULL;

	/* generous limit, twice: deterministic */
	run(p, data, size, GENEROUS_LIMIT, &a);
	run(p, data, size, GENEROUS_LIMIT, &b);
	CHECK(same_result(p, &a, &b));

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
		run(p, data, size, size, &c);
		CHECK(same_result(p, &a, &c));

		/* one byte too many: oversized */
		run(p, data, size, size - 1, &c);
		CHECK(c.reason == ADS_R_OVERSIZED);
	}

	/* a tiny detail buffer truncates but never overflows */
	memset(small, CANARY_BYTE, sizeof(small));
	r = p->parse((const char *) data, size, GENEROUS_LIMIT, &out, small, SMALL_DETAIL);
	CHECK(r == a.reason);
	check_detail(small, SMALL_DETAIL);
	CHECK(strncmp(small, a.detail, SMALL_DETAIL - 1) == 0);

	/* detail_len == 0, then out == NULL and detail == NULL: nothing is written */
	memset(none, CANARY_BYTE, sizeof(none));
	r = p->parse((const char *) data, size, GENEROUS_LIMIT, &out, none, 0);
	CHECK(r == a.reason);
	for (i = 0; i < sizeof(none); i++)
		CHECK((unsigned char) none[i] == CANARY_BYTE);
	r = p->parse((const char *) data, size, GENEROUS_LIMIT, NULL, NULL, 0);
	CHECK(r == a.reason);

	return 0;
}

#endif
