/*
 * fuzz_avro.c
 *     libFuzzer harness for src/avro_format.c: any bytes, read as a message
 *     in the Confluent wire format, decode (whatever the schema id says) with
 *     the transcoder's producer schema (test/formats/transcode.c) through a
 *     field mapping.  Checks: no crash, leak or read past the input (ASan),
 *     a reason the Avro path can give, a printable detail, the same result
 *     twice, and an accepted event within the contract.
 *
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         test/fuzz/fuzz_avro.c src/avro_format.c src/event_parse.c -lavro -o /tmp/fuzz_avro
 */
#include <stdlib.h>
#include <string.h>

#include "avro_format.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

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

static AdsAvroReader *reader;

static void
setup(void)
{
	static const char *const map[] = {
		"event_id", "eventId", "type", "kind", "ad_id", "payload.ad.id",
		"campaign_id", "payload.ad.campaign", "user_id", "user.id",
		"store_id", "storeId", "ts", "time", NULL
	};
	AdsFormat	fmt;
	char		err[256];

	ads_format_init(&fmt, 0);
	for (int i = 0; map[i]; i += 2)
		CHECK(ads_format_set_field(&fmt, map[i], map[i + 1], err, sizeof(err)));
	CHECK(ads_format_set_ts(&fmt, "epoch_us", err, sizeof(err)));
	CHECK(ads_format_finish(&fmt, err, sizeof(err)));
	reader = ads_avro_reader_new(1, SCHEMA, sizeof(SCHEMA) - 1, &fmt, err, sizeof(err));
	CHECK(reader != NULL);
}

static AdsReason
decode(const char *buf, size_t len, AdsEvent *ev, char *detail)
{
	uint32_t	id;
	AdsReason	r = ads_avro_header(buf, len, 65536, &id, detail, ADS_DETAIL_LEN);

	if (r != ADS_OK)
		return r;
	return ads_avro_decode_event(reader, buf, len, ev, detail, ADS_DETAIL_LEN);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		d1[ADS_DETAIL_LEN],
				d2[ADS_DETAIL_LEN];
	AdsEvent	e1,
				e2;
	AdsReason	r1,
				r2;
	size_t		i;

	if (reader == NULL)
		setup();
	memset(&e1, 0, sizeof(e1));
	memset(&e2, 0, sizeof(e2));
	r1 = decode((const char *) data, size, &e1, d1);
	r2 = decode((const char *) data, size, &e2, d2);
	CHECK(r1 == r2 && strcmp(d1, d2) == 0);
	CHECK(r1 == ADS_OK || r1 == ADS_R_EMPTY || r1 == ADS_R_OVERSIZED || r1 == ADS_R_BAD_MAGIC_BYTE ||
		  r1 == ADS_R_INVALID_AVRO || r1 == ADS_R_MISSING_FIELD || r1 == ADS_R_WRONG_TYPE ||
		  r1 == ADS_R_INVALID_UUID || r1 == ADS_R_UNKNOWN_TYPE || r1 == ADS_R_NEGATIVE_ID ||
		  r1 == ADS_R_OUT_OF_RANGE || r1 == ADS_R_INVALID_TIMESTAMP);
	for (i = 0; i < sizeof(d1) && d1[i]; i++)
		CHECK((unsigned char) d1[i] >= 0x20 && (unsigned char) d1[i] <= 0x7e);
	CHECK(i < sizeof(d1));
	if (r1 == ADS_OK)
	{
		CHECK(memcmp(&e1, &e2, sizeof(e1)) == 0);
		CHECK(e1.type == ADS_EV_IMPRESSION || e1.type == ADS_EV_CLICK);
		CHECK(e1.ad_id >= 0 && e1.campaign_id >= 0 && e1.user_id >= 0 && e1.store_id >= 0);
		CHECK(e1.ts_us >= ADS_TS_MIN_US && e1.ts_us <= ADS_TS_MAX_US);
	}
	return 0;
}
