/*
 * fuzz_order.c
 *     libFuzzer harness for ads_parse_order() (src/event_parse.c); the
 *     checks shared with events are in fuzz_contract.h.
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_order.c src/event_parse.c -o /tmp/fuzz_order
 */
#include "fuzz_contract.h"

static AdsReason
parse(const char *buf, size_t len, size_t max_bytes, FuzzOut *out, char *detail, size_t detail_len)
{
	return ads_parse_order(buf, len, max_bytes, out ? &out->ord : NULL, detail, detail_len);
}

static int
reason_possible(AdsReason r)
{
	return r != ADS_R_UNKNOWN_TYPE;	/* events only */
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
check_ok(const FuzzOut *out)
{
	const AdsOrder *o = &out->ord;

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

static int
same_out(const FuzzOut *a, const FuzzOut *b)
{
	return memcmp(a->ord.order_id, b->ord.order_id, 16) == 0 &&
		a->ord.user_id == b->ord.user_id &&
		a->ord.store_id == b->ord.store_id &&
		strcmp(a->ord.amount, b->ord.amount) == 0 &&
		strcmp(a->ord.currency, b->ord.currency) == 0 &&
		a->ord.ts_us == b->ord.ts_us;
}

static const FuzzParser parser = {parse, reason_possible, check_ok, same_out};

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_contract(&parser, data, size);
}
