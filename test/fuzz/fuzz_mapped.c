/*
 * fuzz_mapped.c
 *     libFuzzer harness for ads_parse_event_fmt() under a field mapping
 *     (src/event_parse.c): the parser contract of fuzz_contract.h, and a
 *     differential check -- the input wrapped as {"w":{"v": input}} under the
 *     mapping "w.v.<field>" must get the default parser's verdict on the bare
 *     input (from duplicate_key on, and the same event when accepted).
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_mapped.c src/event_parse.c -o /tmp/fuzz_mapped
 */
#include <stdlib.h>

#include "fuzz_contract.h"

static AdsFormat producer,
			wrapped;
static int	ready;

static void
setup(void)
{
	static const char *const pmap[] = {
		"event_id", "eventId", "type", "kind", "ad_id", "payload.ad.id",
		"campaign_id", "payload.ad.campaign", "user_id", "user.id",
		"store_id", "storeId", "ts", "time", NULL
	};
	static const char *const fields[] = {"event_id", "type", "ad_id", "campaign_id", "user_id", "store_id", "ts"};
	char		err[256],
				path[64];
	int			i;

	ads_format_init(&producer, 0);
	for (i = 0; pmap[i]; i += 2)
		CHECK(ads_format_set_field(&producer, pmap[i], pmap[i + 1], err, sizeof(err)));
	CHECK(ads_format_set_ts(&producer, "epoch_us", err, sizeof(err)));
	CHECK(ads_format_finish(&producer, err, sizeof(err)) && producer.mapped);

	ads_format_init(&wrapped, 0);
	for (i = 0; i < 7; i++)
	{
		snprintf(path, sizeof(path), "w.v.%s", fields[i]);
		CHECK(ads_format_set_field(&wrapped, fields[i], path, err, sizeof(err)));
	}
	CHECK(ads_format_finish(&wrapped, err, sizeof(err)) && wrapped.mapped);
	ready = 1;
}

static AdsReason
parse(const char *buf, size_t len, size_t max_bytes, FuzzOut *out, char *detail, size_t detail_len)
{
	return ads_parse_event_fmt(buf, len, max_bytes, &producer, out ? &out->ev : NULL, detail, detail_len);
}

static int
reason_possible(AdsReason r)
{
	return r <= ADS_R_INVALID_TIMESTAMP;
}

static void
check_ok(const FuzzOut *out)
{
	const AdsEvent *ev = &out->ev;

	CHECK(ev->type == ADS_EV_IMPRESSION || ev->type == ADS_EV_CLICK);
	CHECK(ev->ad_id >= 0 && ev->campaign_id >= 0 && ev->user_id >= 0 && ev->store_id >= 0);
	CHECK(ev->ts_us >= ADS_TS_MIN_US && ev->ts_us <= ADS_TS_MAX_US);
	check_uuid_roundtrip(ev->event_id);
}

static int
same_out(const FuzzOut *a, const FuzzOut *b)
{
	return memcmp(&a->ev, &b->ev, sizeof(AdsEvent)) == 0;
}

static const FuzzParser parser = {parse, reason_possible, check_ok, same_out};

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	AdsEvent	e1,
				e2;
	AdsReason	r1,
				r2;
	char	   *w;

	if (!ready)
		setup();
	fuzz_contract(&parser, data, size);

	/* the differential */
	if (size > 60000)
		return 0;
	w = malloc(size + 12);
	memcpy(w, "{\"w\":{\"v\":", 10);
	memcpy(w + 10, data, size);
	memcpy(w + 10 + size, "}}", 2);
	memset(&e1, 0, sizeof(e1));
	memset(&e2, 0, sizeof(e2));
	r1 = ads_parse_event((const char *) data, size, GENEROUS_LIMIT, &e1, NULL, 0);
	r2 = ads_parse_event_fmt(w, size + 12, GENEROUS_LIMIT, &wrapped, &e2, NULL, 0);
	free(w);
	/* nesting two levels deeper may cross the depth limit */
	if (r1 == ADS_OK || r1 >= ADS_R_DUPLICATE_KEY)
		CHECK(r2 == r1 || r2 == ADS_R_INVALID_JSON);
	if (r1 == ADS_OK && r2 == ADS_OK)
		CHECK(memcmp(&e1, &e2, sizeof(e1)) == 0);
	return 0;
}
