/*
 * fuzz_event.c
 *     libFuzzer harness for ads_parse_event() (src/event_parse.c); the
 *     checks are in fuzz_contract.h.
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_event.c src/event_parse.c -o /tmp/fuzz_event
 */
#include "fuzz_contract.h"

static AdsReason
parse(const char *buf, size_t len, size_t max_bytes, FuzzOut *out, char *detail, size_t detail_len)
{
	return ads_parse_event(buf, len, max_bytes, out ? &out->ev : NULL, detail, detail_len);
}

static int
reason_possible(AdsReason r)
{
	return r != ADS_R_INVALID_AMOUNT && r != ADS_R_INVALID_CURRENCY;	/* orders only */
}

static void
check_ok(const FuzzOut *out)
{
	const AdsEvent *ev = &out->ev;

	CHECK(ev->type == ADS_EV_IMPRESSION || ev->type == ADS_EV_CLICK);
	CHECK(ev->ad_id >= 0);
	CHECK(ev->campaign_id >= 0);
	CHECK(ev->user_id >= 0);
	CHECK(ev->store_id >= 0);
	CHECK(ev->ts_us >= ADS_TS_MIN_US && ev->ts_us <= ADS_TS_MAX_US);
	check_uuid_roundtrip(ev->event_id);
}

static int
same_out(const FuzzOut *a, const FuzzOut *b)
{
	return memcmp(a->ev.event_id, b->ev.event_id, 16) == 0 &&
		a->ev.type == b->ev.type &&
		a->ev.ad_id == b->ev.ad_id &&
		a->ev.campaign_id == b->ev.campaign_id &&
		a->ev.user_id == b->ev.user_id &&
		a->ev.store_id == b->ev.store_id &&
		a->ev.ts_us == b->ev.ts_us;
}

static const FuzzParser parser = {parse, reason_possible, check_ok, same_out};

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_contract(&parser, data, size);
}
