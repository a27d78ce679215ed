/*
 * test_event_parse.c
 *     Standalone unit tests for src/event_parse.c.
 *
 * Build and run from the repository root:
 *   cc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude \
 *      -o test/bin/test_event_parse test/unit/test_event_parse.c src/event_parse.c
 *   test/bin/test_event_parse
 *
 * Every input is handed to the parser in an exactly-sized heap buffer, so
 * that AddressSanitizer or valgrind flags any read past the end (the parser
 * must never assume NUL termination).
 *
 * The last line of output is always "N passed, N failed"; the exit status
 * is 0 only when nothing failed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_parse.h"

#define DEFAULT_MAX 4096
#define MAX_FAIL_LINES 200

static int	n_passed;
static int	n_failed;
static int	fail_lines;

/* Print one failure line, but do not flood the output if things go badly. */
static void
report_failure(const char *name, const char *what)
{
	if (fail_lines++ < MAX_FAIL_LINES)
		printf("FAIL [%s]: %s\n", name, what);
}

static void
tally(int ok)
{
	if (ok)
		n_passed++;
	else
		n_failed++;
}

/* ---------------------------------------------------------------------
 * The default, valid message and the event it must produce
 * ---------------------------------------------------------------------
 */
#define UUID_TEXT "0f8fad5b-d9cb-469f-a165-70867728950e"
#define DEF_FIELDS \
	"\"event_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"ad_id\":42," \
	"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"ts\":1700000000123"
#define DEF_MSG "{" DEF_FIELDS "}"

static const uint8_t default_uuid[16] = {
	0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f,
	0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95, 0x0e
};

static AdsEvent
default_event(void)
{
	AdsEvent	ev;

	memset(&ev, 0, sizeof(ev));
	memcpy(ev.event_id, default_uuid, 16);
	ev.type = ADS_EV_IMPRESSION;
	ev.ad_id = 42;
	ev.campaign_id = 7;
	ev.user_id = 1001;
	ev.store_id = 3;
	ev.ts_us = INT64_C(1700000000123000);
	return ev;
}

static const char *const field_key[7] = {
	"event_id", "type", "ad_id", "campaign_id", "user_id", "store_id", "ts"
};

static const char *const field_default[7] = {
	"\"" UUID_TEXT "\"", "\"impression\"", "42", "7", "1001", "3",
	"1700000000123"
};

enum
{
	EVENT_ID, TYPE, AD_ID, CAMPAIGN_ID, USER_ID, STORE_ID, TS
};

/* ---------------------------------------------------------------------
 * Running one case
 * ---------------------------------------------------------------------
 */

/* Returns 1 if detail is NUL-terminated printable ASCII shorter than cap. */
static int
detail_sane(const char *detail, size_t cap)
{
	size_t		i;

	for (i = 0; i < cap; i++)
	{
		unsigned char c = (unsigned char) detail[i];

		if (c == '\0')
			return 1;
		if (c < 0x20 || c > 0x7e)
			return 0;
	}
	return 0;
}

/*
 * Parse text[0..len) from an exact-size heap copy and check the reason,
 * the detail (sanity, and optionally a substring) and, for ADS_OK, the
 * event against *want; if want_uuid is set, the event id is compared in
 * canonical text form instead.  Returns 1 if every check passed.
 */
static int
check_parse(const char *name, const char *text, size_t len, size_t max_bytes,
			AdsReason expect, const char *detail_sub, const AdsEvent *want,
			const char *want_uuid)
{
	char	   *copy = NULL;
	char		detail[ADS_DETAIL_LEN];
	char		msg[512];
	AdsEvent	ev;
	AdsReason	r;
	int			ok = 1;

	if (len > 0)
	{
		copy = malloc(len);
		if (copy == NULL)
		{
			report_failure(name, "out of memory");
			return 0;
		}
		memcpy(copy, text, len);
	}
	memset(&ev, 0xA5, sizeof(ev));
	memset(detail, 'X', sizeof(detail));
	r = ads_parse_event(copy, len, max_bytes, &ev, detail, sizeof(detail));

	if (!detail_sane(detail, sizeof(detail)))
	{
		report_failure(name, "detail is not NUL-terminated printable ASCII");
		ok = 0;
		detail[0] = '\0';
	}
	if (r != expect)
	{
		snprintf(msg, sizeof(msg), "expected %s, got %s (%s)",
				 ads_reason_name(expect), ads_reason_name(r), detail);
		report_failure(name, msg);
		ok = 0;
	}
	else if (detail_sub != NULL && strstr(detail, detail_sub) == NULL)
	{
		snprintf(msg, sizeof(msg), "detail \"%s\" lacks \"%s\"",
				 detail, detail_sub);
		report_failure(name, msg);
		ok = 0;
	}
	else if (r == ADS_OK && detail[0] != '\0')
	{
		report_failure(name, "detail not empty on success");
		ok = 0;
	}
	else if (r != ADS_OK && detail[0] == '\0')
	{
		report_failure(name, "empty detail on failure");
		ok = 0;
	}

	if (ok && r == ADS_OK && want != NULL)
	{
		char		got_uuid[37];

		ads_format_uuid(ev.event_id, got_uuid);
		if (want_uuid != NULL ? strcmp(got_uuid, want_uuid) != 0
			: memcmp(ev.event_id, want->event_id, 16) != 0)
		{
			snprintf(msg, sizeof(msg), "event_id mismatch: got %s", got_uuid);
			report_failure(name, msg);
			ok = 0;
		}
#define CHECK_FIELD(fld) \
		if (ev.fld != want->fld) \
		{ \
			snprintf(msg, sizeof(msg), #fld " mismatch: expected %lld, got %lld", \
					 (long long) want->fld, (long long) ev.fld); \
			report_failure(name, msg); \
			ok = 0; \
		}
		CHECK_FIELD(type);
		CHECK_FIELD(ad_id);
		CHECK_FIELD(campaign_id);
		CHECK_FIELD(user_id);
		CHECK_FIELD(store_id);
		CHECK_FIELD(ts_us);
#undef CHECK_FIELD
	}

	/* the reason must not depend on whether out/detail are supplied */
	if (ok)
	{
		AdsReason	r2 = ads_parse_event(copy, len, max_bytes, NULL, NULL, 0);

		if (r2 != r)
		{
			report_failure(name, "different reason with out/detail NULL");
			ok = 0;
		}
	}

	free(copy);
	return ok;
}

/* ---------------------------------------------------------------------
 * Raw message cases
 * ---------------------------------------------------------------------
 */
typedef struct RawCase
{
	const char *name;
	const char *text;
	size_t		len;			/* 0: strlen(text) */
	AdsReason	expect;
	int			want_default;	/* ok case: must parse to default_event() */
	const char *detail_sub;		/* substring the detail must contain */
} RawCase;

/* explicit length for literals with embedded NUL bytes */
#define L(s) s, sizeof(s) - 1

static const RawCase raw_cases[] = {
	/* baseline */
	{"default message", DEF_MSG, 0, ADS_OK, 1, NULL},
	{"surrounding whitespace", " \t\r\n" DEF_MSG " \n\t\r ", 0, ADS_OK, 1, NULL},
	{"fields in other order",
		"{\"ts\":1700000000123,\"store_id\":3,\"user_id\":1001,\"campaign_id\":7,"
		"\"ad_id\":42,\"type\":\"impression\",\"event_id\":\"" UUID_TEXT "\"}",
	0, ADS_OK, 1, NULL},
	{"whitespace everywhere",
		"{ \"event_id\" : \"" UUID_TEXT "\" ,\n\"type\"\t:\t\"impression\" , \"ad_id\" :42 ,"
		"\"campaign_id\": 7,\"user_id\" :1001\r\n,\"store_id\":3 , \"ts\" : 1700000000123 }",
	0, ADS_OK, 1, NULL},

	/* empty / whitespace */
	{"whitespace only", " \n ", 0, ADS_R_INVALID_JSON, 0, "end of input"},

	/* NUL bytes: outrank everything after the size check */
	{"NUL inside string", L("{\"a\":\"x\0y\"," DEF_FIELDS "}"), ADS_R_NUL_BYTE, 0, "NUL"},
	{"NUL after value", L(DEF_MSG "\0"), ADS_R_NUL_BYTE, 0, NULL},
	{"NUL first byte", L("\0"), ADS_R_NUL_BYTE, 0, NULL},
	{"NUL after invalid JSON", L("[1,,\0"), ADS_R_NUL_BYTE, 0, NULL},
	{"NUL after invalid UTF-8", L("{\"a\":\"\xC0\xAF\",\0}"), ADS_R_NUL_BYTE, 0, NULL},
	{"NUL in truncated UTF-8", L("[\"\xC3\0\"]"), ADS_R_NUL_BYTE, 0, NULL},

	/* UTF-8 */
	{"overlong C0 AF", "{\"a\":\"\xC0\xAF\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, "UTF-8"},
	{"overlong E0 80 AF", "{\"a\":\"\xE0\x80\xAF\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"overlong F0 8F BF BF", "{\"a\":\"\xF0\x8F\xBF\xBF\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"surrogate ED A0 80", "{\"a\":\"\xED\xA0\x80\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"surrogate ED BF BF", "{\"a\":\"\xED\xBF\xBF\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"max code point F4 8F BF BF ok", "{\"a\":\"\xF4\x8F\xBF\xBF\"," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"above max F4 90 80 80", "{\"a\":\"\xF4\x90\x80\x80\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"F5 lead byte", "{\"a\":\"\xF5\x80\x80\x80\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"lone continuation byte", "{\"a\":\"\x80\"," DEF_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"truncated sequence at end", "{\"a\":1}\xE2\x82", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"truncated sequence in string", "{\"a\":\"\xE2\x82\"}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"FF byte outside string", "{\xFF}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"bad UTF-8 after syntax error", "[1,,\"\xC0\xAF\"]", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"valid 2/3/4-byte text in ignored field",
		"{\"note\":\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF\"," DEF_FIELDS "}",
	0, ADS_OK, 1, NULL},
	{"non-ASCII key ignored", "{\"\xC3\xA9t\xC3\xA9\":1," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"valid UTF-8 outside string", "{\xC3\xA9}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"BOM is not JSON", "\xEF\xBB\xBF" DEF_MSG, 0, ADS_R_INVALID_JSON, 0, NULL},

	/* JSON syntax */
	{"trailing garbage", DEF_MSG " x", 0, ADS_R_INVALID_JSON, 0, "trailing"},
	{"two values", DEF_MSG DEF_MSG, 0, ADS_R_INVALID_JSON, 0, NULL},
	{"unterminated array", "[1,2", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"unterminated object", "{" DEF_FIELDS, 0, ADS_R_INVALID_JSON, 0, NULL},
	{"trailing comma in object", "{" DEF_FIELDS ",}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"trailing comma in array", "{\"a\":[1,]," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"leading comma", "{," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"missing colon", "{\"a\" 1," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"missing comma", "{\"a\":1 " DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"unquoted key", "{a:1," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"single quotes", "{\"a\":'x'," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"mismatched brackets", "{\"a\":[1}," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"mismatched braces", "{\"a\":{\"b\":1]," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"leading zero", "{\"a\":01," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"negative leading zero", "{\"a\":-01," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"bare minus", "{\"a\":-," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"plus sign", "{\"a\":+1," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"dot without digits", "{\"a\":1.," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"leading dot", "{\"a\":.5," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"exponent without digits", "{\"a\":1e+," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"hex number", "{\"a\":0x10," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"NaN", "{\"a\":NaN," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"truncated literal", "{\"a\":tru," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"capitalised literal", "{\"a\":True," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"literal at end of input", "nul", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"raw tab in string", "{\"a\":\"x\ty\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "control"},
	{"raw newline in key", "{\"a\nb\":1," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "control"},
	{"raw 0x1F in string", "{\"a\":\"\x1F\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"DEL in string is fine", "{\"a\":\"\x7F\"," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"invalid escape \\x", "{\"a\":\"\\x41\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "escape"},
	{"invalid escape \\'", "{\"a\":\"\\'\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "escape"},
	{"bad hex in \\u", "{\"a\":\"\\u12G4\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "escape"},
	{"short \\u", "{\"a\":\"\\u123\"," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"\\u at end of input", "{\"a\":\"\\u12", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"backslash at end of input", "{\"a\":\"\\", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"unterminated string", "{\"a\":\"abcdefghijklmnopqrstuvwxyz", 0, ADS_R_INVALID_JSON, 0, "unterminated"},
	{"unexpected character detail", "{\"a\":1,\"b\":@," DEF_FIELDS "}", 0, ADS_R_INVALID_JSON, 0, "unexpected character at byte 11"},
	{"bad key position detail", "{\"a\":1," DEF_FIELDS ",@}", 0, ADS_R_INVALID_JSON, 0, "at byte 151"},

	/* top level */
	{"top-level array", "[1,2]", 0, ADS_R_NOT_OBJECT, 0, "not an object"},
	{"top-level string", "\"" UUID_TEXT "\"", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"top-level number", " 42 ", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"top-level null", "null", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"top-level true", "true", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"empty object", "{}", 0, ADS_R_MISSING_FIELD, 0, "missing field \"event_id\""},

	/* duplicates */
	{"duplicate ad_id", "{\"ad_id\":1," DEF_FIELDS "}", 0, ADS_R_DUPLICATE_KEY, 0, "duplicate field \"ad_id\""},
	{"duplicate via escaped key", "{" DEF_FIELDS ",\"ad\\u005fid\":42}", 0, ADS_R_DUPLICATE_KEY, 0, "\"ad_id\""},
	{"duplicate ts, first dup named", "{" DEF_FIELDS ",\"ts\":1,\"type\":\"click\"}", 0, ADS_R_DUPLICATE_KEY, 0, "\"ts\""},
	{"duplicate outranks missing", "{\"ad_id\":1,\"ad_id\":2}", 0, ADS_R_DUPLICATE_KEY, 0, NULL},
	{"duplicate with bad value still duplicate", "{\"ts\":true," DEF_FIELDS "}", 0, ADS_R_DUPLICATE_KEY, 0, NULL},
	{"syntax error outranks duplicate", "{\"ad_id\":1," DEF_FIELDS ",}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"not_object is not duplicate", "[{\"ad_id\":1,\"ad_id\":1}]", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"duplicate unknown keys ignored", "{\"x\":1,\"x\":2," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"nested duplicate of contract key ignored",
		"{\"meta\":{\"ad_id\":1,\"ad_id\":\"no\"}," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},

	/* keys */
	{"escaped key event_id",
		"{\"ev\\u0065nt_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"ad_id\":42,"
		"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"ts\":1700000000123}",
	0, ADS_OK, 1, NULL},
	{"fully escaped key ts",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"ad_id\":42,"
		"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"\\u0074\\u0073\":1700000000123}",
	0, ADS_OK, 1, NULL},
	{"key with lone surrogate matches nothing",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"ad_id\\ud800\":42,"
		"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"ts\":1700000000123}",
	0, ADS_R_MISSING_FIELD, 0, "missing field \"ad_id\""},
	{"key with escaped NUL matches nothing",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"ad_id\\u0000\":42,"
		"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"ts\":1700000000123}",
	0, ADS_R_MISSING_FIELD, 0, "\"ad_id\""},
	{"keys are case sensitive",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"impression\",\"AD_ID\":42,"
		"\"campaign_id\":7,\"user_id\":1001,\"store_id\":3,\"ts\":1700000000123}",
	0, ADS_R_MISSING_FIELD, 0, "\"ad_id\""},
	{"long escaped unknown key",
		"{\"\\u0063\\u0061\\u006d\\u0070\\u0061\\u0069\\u0067\\u006e\\u005f\\u0069\\u0064\\u0078\":1,"
		DEF_FIELDS "}", 0, ADS_OK, 1, NULL},

	/* ignored values */
	{"nested ignored fields",
		"{\"meta\":{\"a\":[1,{\"b\":null,\"c\":[true,false,-1.5e-3]}],\"ad_id\":\"x\",\"e\":{}},"
		"\"list\":[[],[[]],{}]," DEF_FIELDS ",\"z\":0}", 0, ADS_OK, 1, NULL},
	{"escapes in ignored string",
		"{\"note\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0000\"," DEF_FIELDS "}",
	0, ADS_OK, 1, NULL},
	{"lone high surrogate in ignored field", "{\"n\":\"\\ud800\"," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"lone low surrogate in ignored field", "{\"n\":\"\\udc00x\\ud800\\u0041\"," DEF_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"ignored numbers of every shape",
		"{\"n\":[0,-0,1.5,-2.25e10,3E+2,4e-2,123456789012345678901234567890]," DEF_FIELDS "}",
	0, ADS_OK, 1, NULL},

	/* check order */
	{"event_id checked before type",
		"{\"event_id\":\"nope\",\"type\":\"view\",\"ad_id\":-1,\"campaign_id\":7,"
		"\"user_id\":1001,\"store_id\":3,\"ts\":-5}", 0, ADS_R_INVALID_UUID, 0, "\"event_id\""},
	{"type checked before ids",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"view\",\"ad_id\":-1,\"campaign_id\":7,"
		"\"user_id\":1001,\"store_id\":3,\"ts\":-5}", 0, ADS_R_UNKNOWN_TYPE, 0, "\"type\""},
	{"bad event_id before missing ts",
		"{\"event_id\":1,\"type\":\"click\"}", 0, ADS_R_WRONG_TYPE, 0, "\"event_id\""},
	{"missing type before bad ad_id",
		"{\"event_id\":\"" UUID_TEXT "\",\"ad_id\":\"x\"}", 0, ADS_R_MISSING_FIELD, 0, "missing field \"type\""},
	{"store_id checked before ts",
		"{\"event_id\":\"" UUID_TEXT "\",\"type\":\"click\",\"ad_id\":1,\"campaign_id\":2,"
		"\"user_id\":3,\"store_id\":-4,\"ts\":true}", 0, ADS_R_NEGATIVE_ID, 0, "\"store_id\""},
};

/* ---------------------------------------------------------------------
 * Single-field cases: the default message with one field replaced
 * ---------------------------------------------------------------------
 */
typedef struct FieldCase
{
	const char *name;
	int			field;
	const char *json;			/* replacement value text; NULL: omit field */
	AdsReason	expect;
	int64_t		value;			/* ok: expected value (type enum, id, ts_us) */
	const char *uuid;			/* ok, event_id: expected canonical text */
} FieldCase;

static const FieldCase field_cases[] = {
	/* event_id */
	{"event_id lower case", EVENT_ID, "\"" UUID_TEXT "\"", ADS_OK, 0, UUID_TEXT},
	{"event_id upper case", EVENT_ID, "\"0F8FAD5B-D9CB-469F-A165-70867728950E\"", ADS_OK, 0, UUID_TEXT},
	{"event_id mixed case", EVENT_ID, "\"0f8FAD5b-d9CB-469f-A165-70867728950e\"", ADS_OK, 0, UUID_TEXT},
	{"event_id nil", EVENT_ID, "\"00000000-0000-0000-0000-000000000000\"", ADS_OK, 0,
	"00000000-0000-0000-0000-000000000000"},
	{"event_id all f", EVENT_ID, "\"ffffffff-ffff-ffff-ffff-ffffffffffff\"", ADS_OK, 0,
	"ffffffff-ffff-ffff-ffff-ffffffffffff"},
	{"event_id with escapes", EVENT_ID, "\"0f8fad5b\\u002dd9cb-469f-a165-70867728950\\u0065\"", ADS_OK, 0, UUID_TEXT},
	{"event_id number", EVENT_ID, "123", ADS_R_WRONG_TYPE, 0, NULL},
	{"event_id null", EVENT_ID, "null", ADS_R_WRONG_TYPE, 0, NULL},
	{"event_id object", EVENT_ID, "{\"a\":1}", ADS_R_WRONG_TYPE, 0, NULL},
	{"event_id array", EVENT_ID, "[\"" UUID_TEXT "\"]", ADS_R_WRONG_TYPE, 0, NULL},
	/* the span must be the whole object, not the value nested in it */
	{"event_id object holding uuid", EVENT_ID, "{\"id\":\"" UUID_TEXT "\"}", ADS_R_WRONG_TYPE, 0, NULL},
	{"event_id braces", EVENT_ID, "\"{" UUID_TEXT "}\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id no hyphens", EVENT_ID, "\"0f8fad5bd9cb469fa16570867728950e\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id misplaced hyphen", EVENT_ID, "\"0f8fad5-bd9cb-469f-a165-70867728950e\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id leading space", EVENT_ID, "\" " UUID_TEXT "\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id trailing space", EVENT_ID, "\"" UUID_TEXT " \"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id short", EVENT_ID, "\"0f8fad5b-d9cb-469f-a165-70867728950\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id non-hex", EVENT_ID, "\"0f8fad5b-d9cb-469f-a165-70867728950g\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id empty", EVENT_ID, "\"\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id urn", EVENT_ID, "\"urn:uuid:" UUID_TEXT "\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id lone surrogate", EVENT_ID, "\"\\ud800\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id very long", EVENT_ID, "\"" UUID_TEXT UUID_TEXT UUID_TEXT "\"", ADS_R_INVALID_UUID, 0, NULL},
	{"event_id missing", EVENT_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL},

	/* type */
	{"type impression", TYPE, "\"impression\"", ADS_OK, ADS_EV_IMPRESSION, NULL},
	{"type click", TYPE, "\"click\"", ADS_OK, ADS_EV_CLICK, NULL},
	{"type escaped click", TYPE, "\"cl\\u0069ck\"", ADS_OK, ADS_EV_CLICK, NULL},
	{"type number", TYPE, "1", ADS_R_WRONG_TYPE, 0, NULL},
	{"type null", TYPE, "null", ADS_R_WRONG_TYPE, 0, NULL},
	{"type object holding click", TYPE, "{\"t\":\"click\"}", ADS_R_WRONG_TYPE, 0, NULL},
	{"type object, nested keys, spaces", TYPE, "{ \"a\" : 1 , \"b\" : \"click\" }", ADS_R_WRONG_TYPE, 0, NULL},
	{"type capitalised", TYPE, "\"Click\"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type view", TYPE, "\"view\"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type empty", TYPE, "\"\"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type trailing space", TYPE, "\"click \"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type prefix", TYPE, "\"impressio\"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type lone surrogate", TYPE, "\"\\udc00\"", ADS_R_UNKNOWN_TYPE, 0, NULL},
	{"type missing", TYPE, NULL, ADS_R_MISSING_FIELD, 0, NULL},

	/* ad_id: the full set of integer boundaries */
	{"ad_id zero", AD_ID, "0", ADS_OK, 0, NULL},
	{"ad_id minus zero", AD_ID, "-0", ADS_OK, 0, NULL},
	{"ad_id int64 max", AD_ID, "9223372036854775807", ADS_OK, INT64_MAX, NULL},
	{"ad_id int64 max + 1", AD_ID, "9223372036854775808", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ad_id 20 digits", AD_ID, "99999999999999999999", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ad_id uint64 max", AD_ID, "18446744073709551615", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ad_id -1", AD_ID, "-1", ADS_R_NEGATIVE_ID, 0, NULL},
	{"ad_id int64 min", AD_ID, "-9223372036854775808", ADS_R_NEGATIVE_ID, 0, NULL},
	{"ad_id int64 min - 1", AD_ID, "-9223372036854775809", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ad_id huge negative", AD_ID, "-99999999999999999999", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ad_id 1.0", AD_ID, "1.0", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id 1e3", AD_ID, "1e3", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id 1E+0", AD_ID, "1E+0", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id huge with fraction", AD_ID, "99999999999999999999.5", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id string", AD_ID, "\"42\"", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id true", AD_ID, "true", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id null", AD_ID, "null", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id array", AD_ID, "[42]", ADS_R_WRONG_TYPE, 0, NULL},
	{"ad_id missing", AD_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL},

	/* the other ids share the code path; spot-check each */
	{"campaign_id max", CAMPAIGN_ID, "9223372036854775807", ADS_OK, INT64_MAX, NULL},
	{"campaign_id negative", CAMPAIGN_ID, "-7", ADS_R_NEGATIVE_ID, 0, NULL},
	{"campaign_id fraction", CAMPAIGN_ID, "7.5", ADS_R_WRONG_TYPE, 0, NULL},
	{"campaign_id missing", CAMPAIGN_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL},
	{"user_id big", USER_ID, "123456789012345678", ADS_OK, INT64_C(123456789012345678), NULL},
	{"user_id out of range", USER_ID, "9223372036854775808", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"user_id false", USER_ID, "false", ADS_R_WRONG_TYPE, 0, NULL},
	{"user_id missing", USER_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL},
	{"store_id zero", STORE_ID, "0", ADS_OK, 0, NULL},
	{"store_id object", STORE_ID, "{}", ADS_R_WRONG_TYPE, 0, NULL},
	{"store_id negative", STORE_ID, "-3", ADS_R_NEGATIVE_ID, 0, NULL},
	{"store_id missing", STORE_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL},

	/* ts as epoch milliseconds */
	{"ts ms zero", TS, "0", ADS_OK, 0, NULL},
	{"ts ms minus zero", TS, "-0", ADS_OK, 0, NULL},
	{"ts ms typical", TS, "1700000000123", ADS_OK, INT64_C(1700000000123000), NULL},
	{"ts ms max", TS, "253402300799999", ADS_OK, INT64_C(253402300799999000), NULL},
	{"ts ms max + 1", TS, "253402300800000", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts ms negative", TS, "-1", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts ms int64 max", TS, "9223372036854775807", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts ms beyond int64", TS, "9223372036854775808", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts ms fraction", TS, "1700000000123.5", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts ms exponent", TS, "1.7e12", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts true", TS, "true", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts null", TS, "null", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts object", TS, "{\"ms\":1}", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts array", TS, "[1]", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts object holding rfc3339", TS, "{\"t\":\"2024-01-01T00:00:00Z\"}", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts object holding ms", TS, "{\"ms\":1700000000123}", ADS_R_WRONG_TYPE, 0, NULL},
	{"ts missing", TS, NULL, ADS_R_MISSING_FIELD, 0, NULL},

	/* ts as RFC 3339 */
	{"ts epoch", TS, "\"1970-01-01T00:00:00Z\"", ADS_OK, 0, NULL},
	{"ts 2024-01-01", TS, "\"2024-01-01T00:00:00Z\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts leap day 2024-02-29", TS, "\"2024-02-29T12:00:00Z\"", ADS_OK, INT64_C(1709208000000000), NULL},
	{"ts leap day 2000-02-29", TS, "\"2000-02-29T00:00:00Z\"", ADS_OK, INT64_C(951782400000000), NULL},
	{"ts 2023-02-29 invalid", TS, "\"2023-02-29T12:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts 2100-02-29 invalid", TS, "\"2100-02-29T12:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts 2024-04-31 invalid", TS, "\"2024-04-31T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts month 13", TS, "\"2024-13-01T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts month 00", TS, "\"2024-00-01T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts day 00", TS, "\"2024-01-00T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts hour 24", TS, "\"2024-01-01T24:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts minute 60", TS, "\"2024-01-01T23:60:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts leap second 60", TS, "\"2016-12-31T23:59:60Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts fraction 1 digit", TS, "\"2024-03-10T08:15:30.1Z\"", ADS_OK, INT64_C(1710058530100000), NULL},
	{"ts fraction 6 digits", TS, "\"2024-03-10T08:15:30.123456Z\"", ADS_OK, INT64_C(1710058530123456), NULL},
	{"ts fraction 9 digits truncated", TS, "\"2024-03-10T08:15:30.123456999Z\"", ADS_OK, INT64_C(1710058530123456), NULL},
	{"ts fraction 10 digits", TS, "\"2024-03-10T08:15:30.1234567890Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts fraction empty", TS, "\"2024-03-10T08:15:30.Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts lower-case t and z", TS, "\"2024-01-01t00:00:00z\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts space separator", TS, "\"2024-01-01 00:00:00Z\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts offset +01:00", TS, "\"2024-01-01T01:00:00+01:00\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts offset -05:00 crosses year", TS, "\"2023-12-31T19:00:00-05:00\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts offset -05:30", TS, "\"2024-06-15T23:30:00-05:30\"", ADS_OK, INT64_C(1718514000000000), NULL},
	{"ts offset +23:59", TS, "\"2024-06-15T00:10:00+23:59\"", ADS_OK, INT64_C(1718323860000000), NULL},
	{"ts offset -23:59", TS, "\"2024-06-15T23:59:59-23:59\"", ADS_OK, INT64_C(1718582339000000), NULL},
	{"ts offset -00:00", TS, "\"2024-01-01T00:00:00-00:00\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts offset hour 24", TS, "\"2024-01-01T00:00:00+24:00\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts offset minute 60", TS, "\"2024-01-01T00:00:00+05:60\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts offset without colon", TS, "\"2024-01-01T00:00:00+0500\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts no zone", TS, "\"2024-01-01T00:00:00\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts date only", TS, "\"2024-01-01\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts trailing garbage", TS, "\"2024-01-01T00:00:00Zx\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts single-digit month", TS, "\"2024-1-01T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts numeric string", TS, "\"1700000000123\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts empty string", TS, "\"\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts escaped Z", TS, "\"2024-01-01T00:00:00\\u005a\"", ADS_OK, INT64_C(1704067200000000), NULL},
	{"ts lone surrogate", TS, "\"2024-01-01T00:00:00\\ud800\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
	{"ts max", TS, "\"9999-12-31T23:59:59.999999Z\"", ADS_OK, ADS_TS_MAX_US, NULL},
	{"ts max with 9 digits", TS, "\"9999-12-31T23:59:59.999999999Z\"", ADS_OK, ADS_TS_MAX_US, NULL},
	{"ts beyond max via offset", TS, "\"9999-12-31T23:59:59.999999-00:01\"", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts before epoch", TS, "\"1969-12-31T23:59:59.999999Z\"", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts before epoch via offset", TS, "\"1970-01-01T00:00:00+00:01\"", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts year 0000", TS, "\"0000-01-01T00:00:00Z\"", ADS_R_OUT_OF_RANGE, 0, NULL},
	{"ts 1900-02-29 malformed before range", TS, "\"1900-02-29T00:00:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL},
};

/* Build the default message with field f replaced by json (or omitted). */
static size_t
build_message(char *out, size_t cap, int f, const char *json)
{
	size_t		n = 0;
	int			i,
				first = 1;

	n += (size_t) snprintf(out + n, cap - n, "{");
	for (i = 0; i < 7; i++)
	{
		const char *v = (i == f) ? json : field_default[i];

		if (v == NULL)
			continue;
		n += (size_t) snprintf(out + n, cap - n, "%s\"%s\":%s",
							   first ? "" : ",", field_key[i], v);
		first = 0;
	}
	n += (size_t) snprintf(out + n, cap - n, "}");
	return n;
}

static void
run_field_cases(void)
{
	size_t		i;

	for (i = 0; i < sizeof(field_cases) / sizeof(field_cases[0]); i++)
	{
		const FieldCase *fc = &field_cases[i];
		char		text[1024];
		char		sub[64];
		size_t		len = build_message(text, sizeof(text), fc->field, fc->json);
		AdsEvent	want = default_event();

		switch (fc->field)
		{
			case TYPE:
				want.type = (AdsEventType) fc->value;
				break;
			case AD_ID:
				want.ad_id = fc->value;
				break;
			case CAMPAIGN_ID:
				want.campaign_id = fc->value;
				break;
			case USER_ID:
				want.user_id = fc->value;
				break;
			case STORE_ID:
				want.store_id = fc->value;
				break;
			case TS:
				want.ts_us = fc->value;
				break;
		}
		/* every field-level failure must name the field */
		snprintf(sub, sizeof(sub), "\"%s\"", field_key[fc->field]);
		tally(check_parse(fc->name, text, len, DEFAULT_MAX, fc->expect,
						  fc->expect == ADS_OK ? NULL : sub, &want,
						  fc->field == EVENT_ID ? fc->uuid : NULL));
	}
}

static void
run_raw_cases(void)
{
	size_t		i;
	AdsEvent	want = default_event();

	for (i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++)
	{
		const RawCase *rc = &raw_cases[i];
		size_t		len = rc->len ? rc->len : strlen(rc->text);

		tally(check_parse(rc->name, rc->text, len, DEFAULT_MAX, rc->expect,
						  rc->detail_sub, rc->want_default ? &want : NULL, NULL));
	}
}

/* ---------------------------------------------------------------------
 * Generated cases: empty, size limit, nesting depth
 * ---------------------------------------------------------------------
 */
static void
run_generated_cases(void)
{
	AdsEvent	want = default_event();
	char	   *buf;
	size_t		n,
				base = strlen(DEF_MSG);
	int			k;
	char		detail[ADS_DETAIL_LEN];
	AdsReason	r;

	/* empty: NULL buffer, and a non-NULL buffer with length 0 */
	tally(check_parse("empty NULL", NULL, 0, DEFAULT_MAX, ADS_R_EMPTY, "empty", NULL, NULL));
	r = ads_parse_event(NULL, 5, DEFAULT_MAX, NULL, detail, sizeof(detail));
	if (r != ADS_R_EMPTY)
		report_failure("NULL with nonzero length", "expected empty");
	tally(r == ADS_R_EMPTY);
	{
		char		one = '{';

		r = ads_parse_event(&one, 0, DEFAULT_MAX, NULL, detail, sizeof(detail));
		if (r != ADS_R_EMPTY)
			report_failure("zero length non-NULL", "expected empty");
		tally(r == ADS_R_EMPTY);
	}

	/* size limit: a valid message padded to exactly 512 bytes */
	buf = malloc(1024);
	memcpy(buf, DEF_MSG, base);
	memset(buf + base, ' ', 512 - base);
	tally(check_parse("size exactly at limit", buf, 512, 512, ADS_OK, NULL, &want, NULL));
	tally(check_parse("size limit + 1", buf, 512, 511, ADS_R_OVERSIZED, "limit is 511", NULL, NULL));
	/* oversized outranks NUL bytes */
	buf[600] = '\0';
	memset(buf + 512, '\0', 100);
	tally(check_parse("oversized outranks NUL", buf, 612, 511, ADS_R_OVERSIZED, NULL, NULL, NULL));
	free(buf);

	buf = malloc(200000);

	/* depth: {"x":[[...]], fields}, top-level object counts as level 1 */
	for (k = 63; k <= 64; k++)
	{
		n = 0;
		memcpy(buf + n, "{\"x\":", 5);
		n += 5;
		memset(buf + n, '[', (size_t) k);
		n += (size_t) k;
		memset(buf + n, ']', (size_t) k);
		n += (size_t) k;
		buf[n++] = ',';
		memcpy(buf + n, DEF_FIELDS "}", base - 1);
		n += base - 1;
		if (k == 63)
			tally(check_parse("array depth 64 ok", buf, n, DEFAULT_MAX, ADS_OK, NULL, &want, NULL));
		else
			tally(check_parse("array depth 65 rejected", buf, n, DEFAULT_MAX,
							  ADS_R_INVALID_JSON, "nesting deeper than 64", NULL, NULL));
	}

	/* depth with objects: {fields,"x":{"y":{"y":...0...}}} */
	for (k = 63; k <= 64; k++)
	{
		int			j;

		n = 0;
		memcpy(buf + n, "{" DEF_FIELDS ",\"x\":", base + 4);
		n += base + 4;
		for (j = 1; j < k; j++)
		{
			memcpy(buf + n, "{\"y\":", 5);
			n += 5;
		}
		buf[n++] = '0';
		memset(buf + n, '}', (size_t) k);
		n += (size_t) k;
		if (k == 63)
			tally(check_parse("object depth 63 ok", buf, n, DEFAULT_MAX, ADS_OK, NULL, &want, NULL));
		else
			tally(check_parse("object depth 64 ok", buf, n, DEFAULT_MAX, ADS_OK, NULL, &want, NULL));
	}
	{
		int			j;

		n = 0;
		memcpy(buf + n, "{" DEF_FIELDS ",\"x\":", base + 4);
		n += base + 4;
		for (j = 0; j < 64; j++)
		{
			memcpy(buf + n, "{\"y\":", 5);
			n += 5;
		}
		buf[n++] = '0';
		memset(buf + n, '}', 65);
		n += 65;
		tally(check_parse("object depth 65 rejected", buf, n, DEFAULT_MAX,
						  ADS_R_INVALID_JSON, "nesting", NULL, NULL));
	}

	/* top-level arrays: 64 levels is valid JSON (not_object), 65 is not */
	memset(buf, '[', 64);
	memset(buf + 64, ']', 64);
	tally(check_parse("top array depth 64", buf, 128, DEFAULT_MAX, ADS_R_NOT_OBJECT, NULL, NULL, NULL));
	memset(buf, '[', 65);
	memset(buf + 65, ']', 65);
	tally(check_parse("top array depth 65", buf, 130, DEFAULT_MAX, ADS_R_INVALID_JSON, "nesting", NULL, NULL));

	/* hostile nesting must not recurse or be slow */
	memset(buf, '[', 200000);
	tally(check_parse("200000 open brackets", buf, 200000, 1000000, ADS_R_INVALID_JSON, "nesting", NULL, NULL));

	free(buf);
}

/* ---------------------------------------------------------------------
 * Detail buffer handling
 * ---------------------------------------------------------------------
 */
static void
run_detail_cases(void)
{
	const char *bad = "{\"event_id\":1}";
	char		d[16];
	AdsReason	r;
	int			ok;

	/* detail_len 0: the buffer must not be touched */
	memset(d, '#', sizeof(d));
	r = ads_parse_event(bad, strlen(bad), DEFAULT_MAX, NULL, d, 0);
	ok = (r == ADS_R_WRONG_TYPE && d[0] == '#');
	if (!ok)
		report_failure("detail_len 0", "buffer written or wrong reason");
	tally(ok);

	/* short buffer: truncated and NUL-terminated, nothing written past it */
	memset(d, '#', sizeof(d));
	r = ads_parse_event(bad, strlen(bad), DEFAULT_MAX, NULL, d, 8);
	ok = (r == ADS_R_WRONG_TYPE && strlen(d) == 7 && d[8] == '#');
	if (!ok)
		report_failure("detail_len 8", "not truncated to 7 chars + NUL");
	tally(ok);

	/* detail_len 1: just the terminator */
	memset(d, '#', sizeof(d));
	r = ads_parse_event(DEF_MSG, strlen(DEF_MSG), DEFAULT_MAX, NULL, d, 1);
	ok = (r == ADS_OK && d[0] == '\0' && d[1] == '#');
	if (!ok)
		report_failure("detail_len 1 ok", "expected empty detail");
	tally(ok);
}

/* ---------------------------------------------------------------------
 * Helper functions
 * ---------------------------------------------------------------------
 */
typedef struct Utf8Case
{
	const char *bytes;
	size_t		len;
	int			valid;
} Utf8Case;

static void
run_helper_cases(void)
{
	static const Utf8Case u8[] = {
		{L(""), 1},
		{L("plain ascii, longer than eight bytes"), 1},
		{L("with\0nul"), 1},	/* NUL is valid UTF-8 */
		{L("\xC2\x80"), 1},
		{L("\xDF\xBF"), 1},
		{L("\xE0\xA0\x80"), 1},
		{L("\xED\x9F\xBF"), 1},
		{L("\xEE\x80\x80"), 1},
		{L("\xF0\x90\x80\x80"), 1},
		{L("\xF4\x8F\xBF\xBF"), 1},
		{L("abcdefgh\xE2\x82\xAC" "abcdefgh"), 1},
		{L("\xC0\xAF"), 0},
		{L("\xC1\xBF"), 0},
		{L("\xE0\x9F\xBF"), 0},
		{L("\xED\xA0\x80"), 0},
		{L("\xF0\x8F\xBF\xBF"), 0},
		{L("\xF4\x90\x80\x80"), 0},
		{L("\xF8\x88\x80\x80\x80"), 0},
		{L("\x80"), 0},
		{L("\xC2"), 0},
		{L("abcdefgh\xE2\x82"), 0},
		{L("\xE2\x28\xA1"), 0},
		{L("\xFF"), 0},
	};
	size_t		i;
	int			ok;
	uint8_t		id[16];
	char		text[37];
	int64_t		ts;
	int			r;

	ok = 1;
	for (i = 0; i < sizeof(u8) / sizeof(u8[0]); i++)
	{
		char	   *copy = malloc(u8[i].len ? u8[i].len : 1);

		memcpy(copy, u8[i].bytes, u8[i].len);
		if (ads_utf8_valid(copy, u8[i].len) != u8[i].valid)
		{
			char		msg[64];

			snprintf(msg, sizeof(msg), "ads_utf8_valid case %zu", i);
			report_failure("utf8", msg);
			ok = 0;
		}
		free(copy);
	}
	tally(ok);

	/* uuid round trip and byte order */
	r = ads_parse_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E", 36, id);
	ads_format_uuid(id, text);
	ok = (r == 1 && memcmp(id, default_uuid, 16) == 0 &&
		  strcmp(text, UUID_TEXT) == 0);
	if (!ok)
		report_failure("uuid round trip", text);
	tally(ok);

	/* ads_parse_uuid honours len and leaves out alone on failure */
	memset(id, 0x77, sizeof(id));
	r = ads_parse_uuid(UUID_TEXT "0", 36, id);
	ok = (r == 1);
	r = ads_parse_uuid(UUID_TEXT, 35, id);
	ok = ok && r == 0;
	memset(id, 0x77, sizeof(id));
	r = ads_parse_uuid("0f8fad5b-d9cb-469f-a165-70867728950x", 36, id);
	ok = ok && r == 0 && id[0] == 0x77;
	if (!ok)
		report_failure("uuid length handling", "unexpected result");
	tally(ok);

	/* public rfc3339 helper also applies the range */
	ts = -1;
	ok = ads_parse_rfc3339("2024-01-01T00:00:00Z", 20, &ts) == 1 &&
		ts == INT64_C(1704067200000000) &&
		ads_parse_rfc3339("1969-12-31T23:59:59Z", 20, &ts) == 0 &&
		ads_parse_rfc3339("2024-02-30T00:00:00Z", 20, &ts) == 0 &&
		ads_parse_rfc3339("2024-01-01T00:00:00Zjunk", 20, &ts) == 1;
	if (!ok)
		report_failure("ads_parse_rfc3339", "unexpected result");
	tally(ok);

	/* reason names */
	{
		static const char *const names[ADS_R__COUNT] = {
			"ok", "empty", "oversized", "nul_byte", "invalid_utf8",
			"invalid_json", "not_object", "duplicate_key", "missing_field",
			"wrong_type", "invalid_uuid", "unknown_type", "out_of_range",
			"negative_id", "invalid_timestamp", "invalid_amount",
			"invalid_currency", "bad_magic_byte", "unknown_schema",
			"invalid_avro", "future_timestamp", "too_late"
		};
		int			j;

		ok = 1;
		for (j = 0; j < ADS_R__COUNT; j++)
			if (ads_reason_name((AdsReason) j) == NULL ||
				strcmp(ads_reason_name((AdsReason) j), names[j]) != 0)
			{
				report_failure("ads_reason_name", names[j]);
				ok = 0;
			}
		if (ads_reason_name(ADS_R__COUNT) == NULL)
			ok = 0;
		tally(ok);
	}
}

/* ---------------------------------------------------------------------
 * Robustness: every prefix, and random mutations
 * ---------------------------------------------------------------------
 */
static uint64_t rng_state = UINT64_C(0x9E3779B97F4A7C15);

static uint64_t
xorshift64(void)
{
	uint64_t	x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

static const char *const fuzz_bases[] = {
	DEF_MSG,
	"{\"meta\":{\"src\":\"caf\xC3\xA9 \\u00e9\\ud83d\\ude00\",\"tags\":[1,-2.5e3,true,null,[]]},"
	"\"ev\\u0065nt_id\":\"0F8FAD5B-D9CB-469F-A165-70867728950E\",\"type\":\"cl\\u0069ck\","
	"\"ad_id\":9223372036854775807,\"campaign_id\":0,\"user_id\":-0,\"store_id\":12,"
	"\"ts\":\"2024-02-29T23:59:59.123456789+05:30\"}",
	"{ \"ts\" : \"1970-01-01 00:00:00z\" , \"store_id\" : 1 , \"user_id\" : 2 , "
	"\"campaign_id\" : 3 , \"ad_id\" : 4 , \"type\" : \"impression\" , "
	"\"event_id\" : \"" UUID_TEXT "\" }",
};

/*
 * Check one parse result against properties that must hold for any input:
 * a legal reason, determinism, and agreement of nul_byte / invalid_utf8
 * with an independent check.
 */
static int
check_invariants(const char *buf, size_t len, char *why, size_t whylen)
{
	char		d1[ADS_DETAIL_LEN],
				d2[ADS_DETAIL_LEN];
	AdsEvent	ev;
	AdsReason	r1,
				r2,
				r3;
	int			has_nul = (len > 0 && memchr(buf, 0, len) != NULL);
	int			utf8 = ads_utf8_valid(buf, len);

	r1 = ads_parse_event(buf, len, DEFAULT_MAX, &ev, d1, sizeof(d1));
	r2 = ads_parse_event(buf, len, DEFAULT_MAX, NULL, d2, sizeof(d2));
	r3 = ads_parse_event(buf, len, DEFAULT_MAX, NULL, NULL, 0);

	if ((int) r1 < 0 || r1 >= ADS_R__COUNT ||
		r1 == ADS_R_FUTURE_TIMESTAMP || r1 == ADS_R_TOO_LATE)
		return snprintf(why, whylen, "illegal reason %d", (int) r1), 0;
	if (r1 != r2 || r1 != r3 || strcmp(d1, d2) != 0)
		return snprintf(why, whylen, "nondeterministic result"), 0;
	if (!detail_sane(d1, sizeof(d1)))
		return snprintf(why, whylen, "bad detail"), 0;
	if (len == 0)
		return r1 == ADS_R_EMPTY ? 1 : (snprintf(why, whylen, "len 0 not empty"), 0);
	if (has_nul && r1 != ADS_R_NUL_BYTE)
		return snprintf(why, whylen, "NUL present but reason %s", ads_reason_name(r1)), 0;
	if (!has_nul && !utf8 && r1 != ADS_R_INVALID_UTF8)
		return snprintf(why, whylen, "bad UTF-8 but reason %s", ads_reason_name(r1)), 0;
	if (!has_nul && utf8 && (r1 == ADS_R_NUL_BYTE || r1 == ADS_R_INVALID_UTF8))
		return snprintf(why, whylen, "clean input but reason %s", ads_reason_name(r1)), 0;
	if (r1 == ADS_OK &&
		(ev.ad_id < 0 || ev.campaign_id < 0 || ev.user_id < 0 || ev.store_id < 0 ||
		 ev.ts_us < ADS_TS_MIN_US || ev.ts_us > ADS_TS_MAX_US ||
		 (ev.type != ADS_EV_IMPRESSION && ev.type != ADS_EV_CLICK)))
		return snprintf(why, whylen, "ok with out-of-contract values"), 0;
	return 1;
}

static void
run_prefix_checks(void)
{
	size_t		b;

	for (b = 0; b < sizeof(fuzz_bases) / sizeof(fuzz_bases[0]); b++)
	{
		const char *base = fuzz_bases[b];
		size_t		blen = strlen(base);
		size_t		n;
		int			ok = 1;
		char		why[128];
		char		name[64];

		snprintf(name, sizeof(name), "prefixes of base %zu", b);

		/* the whole message is valid ... */
		if (check_parse(name, base, blen, DEFAULT_MAX, ADS_OK, NULL, NULL, NULL) == 0)
			ok = 0;

		/* ... and no proper prefix of it is */
		for (n = 0; n < blen; n++)
		{
			char	   *copy = malloc(n ? n : 1);
			AdsReason	r;

			memcpy(copy, base, n);
			r = ads_parse_event(n ? copy : NULL, n, DEFAULT_MAX, NULL, NULL, 0);
			if (!check_invariants(n ? copy : NULL, n, why, sizeof(why)) ||
				r == ADS_OK)
			{
				char		msg[200];

				snprintf(msg, sizeof(msg), "prefix length %zu: %s", n,
						 r == ADS_OK ? "accepted" : why);
				report_failure(name, msg);
				ok = 0;
			}
			free(copy);
		}
		tally(ok);
	}
}

static const char interesting[] = "{}[]\":,\\/ 0123456789-+.eEtrufalsnbu\x00\x01\x1F\x7F"
"\x80\xBF\xC0\xC2\xDF\xE0\xED\xEF\xF0\xF4\xF5\xFF";

static void
run_mutation_checks(int iterations)
{
	char	   *work = malloc(4096);
	int			i;
	int			ok = 1;
	int			n_ok = 0;

	for (i = 0; i < iterations; i++)
	{
		const char *base = fuzz_bases[xorshift64() % (sizeof(fuzz_bases) / sizeof(fuzz_bases[0]))];
		size_t		len = strlen(base);
		int			nmut = 1 + (int) (xorshift64() % 4);
		int			m;
		char	   *copy;
		char		why[128];

		memcpy(work, base, len);
		for (m = 0; m < nmut; m++)
		{
			size_t		pos = len ? (size_t) (xorshift64() % len) : 0;
			unsigned	op = (unsigned) (xorshift64() % 6);
			char		c = (xorshift64() & 1) ?
				interesting[xorshift64() % (sizeof(interesting) - 1)] :
				(char) (xorshift64() & 0xFF);

			switch (op)
			{
				case 0:			/* overwrite */
				case 1:
					if (len)
						work[pos] = c;
					break;
				case 2:			/* delete */
					if (len)
					{
						memmove(work + pos, work + pos + 1, len - pos - 1);
						len--;
					}
					break;
				case 3:			/* insert */
					if (len < 4000)
					{
						memmove(work + pos + 1, work + pos, len - pos);
						work[pos] = c;
						len++;
					}
					break;
				case 4:			/* truncate */
					len = pos;
					break;
				case 5:			/* duplicate a chunk */
					{
						size_t		cl = 1 + (size_t) (xorshift64() % 16);

						if (pos + cl <= len && len + cl < 4000)
						{
							memmove(work + pos + cl, work + pos, len - pos);
							len += cl;
						}
					}
					break;
			}
		}

		copy = malloc(len ? len : 1);
		memcpy(copy, work, len);
		if (!check_invariants(len ? copy : NULL, len, why, sizeof(why)))
		{
			char		msg[200];

			snprintf(msg, sizeof(msg), "iteration %d (len %zu): %s", i, len, why);
			report_failure("mutation", msg);
			ok = 0;
		}
		else if (ads_parse_event(len ? copy : NULL, len, DEFAULT_MAX, NULL, NULL, 0) == ADS_OK)
			n_ok++;
		free(copy);
	}
	free(work);
	tally(ok);

	/* sanity: the mutator should not only ever produce garbage */
	if (n_ok == 0)
		report_failure("mutation", "no mutated message was accepted");
	tally(n_ok > 0);
}

/* =====================================================================
 * Orders
 * =====================================================================
 */
#define ORDER_UUID "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define DEF_ORDER_FIELDS \
	"\"order_id\":\"" ORDER_UUID "\",\"user_id\":1001,\"store_id\":3," \
	"\"amount\":\"12.50\",\"currency\":\"EUR\",\"ts\":1700000000123"
#define DEF_ORDER "{" DEF_ORDER_FIELDS "}"

static const uint8_t default_order_uuid[16] = {
	0x7c, 0x9e, 0x66, 0x79, 0x74, 0x25, 0x40, 0xde,
	0x94, 0x4b, 0xe0, 0x7f, 0xc1, 0xf9, 0x0a, 0xe7
};

static AdsOrder
default_order(void)
{
	AdsOrder	o;

	memset(&o, 0, sizeof(o));
	memcpy(o.order_id, default_order_uuid, 16);
	o.user_id = 1001;
	o.store_id = 3;
	strcpy(o.amount, "12.50");
	strcpy(o.currency, "EUR");
	o.ts_us = INT64_C(1700000000123000);
	return o;
}

enum
{
	O_ORDER_ID, O_USER_ID, O_STORE_ID, O_AMOUNT, O_CURRENCY, O_TS, O_NFIELDS
};

static const char *const order_key[O_NFIELDS] = {
	"order_id", "user_id", "store_id", "amount", "currency", "ts"
};

static const char *const order_default[O_NFIELDS] = {
	"\"" ORDER_UUID "\"", "1001", "3", "\"12.50\"", "\"EUR\"", "1700000000123"
};

/*
 * Independent check of the canonical amount text:
 * (0|[1-9][0-9]{0,17})(\.[0-9]{1,9})?, NUL-terminated within the field.
 */
static int
amount_canonical(const char *a)
{
	size_t		n = 0,
				i = 0,
				k;

	while (n < ADS_AMOUNT_LEN && a[n] != '\0')
		n++;
	if (n == 0 || n >= ADS_AMOUNT_LEN)
		return 0;
	if (a[0] == '0')
		i = 1;
	else
	{
		while (i < n && a[i] >= '0' && a[i] <= '9')
			i++;
		if (i == 0 || i > 18)
			return 0;
	}
	if (i == n)
		return 1;
	if (a[i] != '.')
		return 0;
	for (k = i + 1; k < n; k++)
		if (a[k] < '0' || a[k] > '9')
			return 0;
	return n - i - 1 >= 1 && n - i - 1 <= 9;
}

/* The ADS_OK-only properties every parsed order must have. */
static int
order_sane(const AdsOrder *o)
{
	int			k;

	if (o->user_id < 0 || o->store_id < 0 ||
		o->ts_us < ADS_TS_MIN_US || o->ts_us > ADS_TS_MAX_US ||
		!amount_canonical(o->amount) || o->currency[3] != '\0')
		return 0;
	for (k = 0; k < 3; k++)
		if (o->currency[k] < 'A' || o->currency[k] > 'Z')
			return 0;
	return 1;
}

/*
 * The order counterpart of check_parse(): parse an exact-size heap copy,
 * check reason and detail, and for ADS_OK compare with *want (order id as
 * canonical text if want_uuid is set).
 */
static int
check_parse_order(const char *name, const char *text, size_t len,
				  size_t max_bytes, AdsReason expect, const char *detail_sub,
				  const AdsOrder *want, const char *want_uuid)
{
	char	   *copy = NULL;
	char		detail[ADS_DETAIL_LEN];
	char		msg[512];
	AdsOrder	o;
	AdsReason	r;
	int			ok = 1;

	if (len > 0)
	{
		copy = malloc(len);
		if (copy == NULL)
		{
			report_failure(name, "out of memory");
			return 0;
		}
		memcpy(copy, text, len);
	}
	memset(&o, 0xA5, sizeof(o));
	memset(detail, 'X', sizeof(detail));
	r = ads_parse_order(copy, len, max_bytes, &o, detail, sizeof(detail));

	if (!detail_sane(detail, sizeof(detail)))
	{
		report_failure(name, "detail is not NUL-terminated printable ASCII");
		ok = 0;
		detail[0] = '\0';
	}
	if (r != expect)
	{
		snprintf(msg, sizeof(msg), "expected %s, got %s (%s)",
				 ads_reason_name(expect), ads_reason_name(r), detail);
		report_failure(name, msg);
		ok = 0;
	}
	else if (detail_sub != NULL && strstr(detail, detail_sub) == NULL)
	{
		snprintf(msg, sizeof(msg), "detail \"%s\" lacks \"%s\"", detail, detail_sub);
		report_failure(name, msg);
		ok = 0;
	}
	else if (r == ADS_OK && detail[0] != '\0')
	{
		report_failure(name, "detail not empty on success");
		ok = 0;
	}
	else if (r != ADS_OK && detail[0] == '\0')
	{
		report_failure(name, "empty detail on failure");
		ok = 0;
	}

	if (ok && r == ADS_OK)
	{
		char		got_uuid[37];

		if (!order_sane(&o))
		{
			report_failure(name, "ok with out-of-contract values");
			ok = 0;
		}
		ads_format_uuid(o.order_id, got_uuid);
		if (want != NULL &&
			(want_uuid != NULL ? strcmp(got_uuid, want_uuid) != 0
			 : memcmp(o.order_id, want->order_id, 16) != 0))
		{
			snprintf(msg, sizeof(msg), "order_id mismatch: got %s", got_uuid);
			report_failure(name, msg);
			ok = 0;
		}
		if (want != NULL &&
			(o.user_id != want->user_id || o.store_id != want->store_id ||
			 o.ts_us != want->ts_us))
		{
			snprintf(msg, sizeof(msg),
					 "got user_id %lld store_id %lld ts_us %lld, expected %lld %lld %lld",
					 (long long) o.user_id, (long long) o.store_id, (long long) o.ts_us,
					 (long long) want->user_id, (long long) want->store_id,
					 (long long) want->ts_us);
			report_failure(name, msg);
			ok = 0;
		}
		if (want != NULL &&
			(memchr(o.amount, '\0', ADS_AMOUNT_LEN) == NULL ||
			 strcmp(o.amount, want->amount) != 0 ||
			 memchr(o.currency, '\0', 4) == NULL ||
			 strcmp(o.currency, want->currency) != 0))
		{
			snprintf(msg, sizeof(msg), "got amount \"%.*s\" currency \"%.3s\","
					 " expected \"%s\" \"%s\"", ADS_AMOUNT_LEN - 1, o.amount,
					 o.currency, want->amount, want->currency);
			report_failure(name, msg);
			ok = 0;
		}
	}

	if (ok)
	{
		AdsReason	r2 = ads_parse_order(copy, len, max_bytes, NULL, NULL, 0);

		if (r2 != r)
		{
			report_failure(name, "different reason with out/detail NULL");
			ok = 0;
		}
	}

	free(copy);
	return ok;
}

/* ---------------------------------------------------------------------
 * Raw order cases
 * ---------------------------------------------------------------------
 */
static const RawCase order_raw_cases[] = {
	{"order: default message", DEF_ORDER, 0, ADS_OK, 1, NULL},
	{"order: other order, whitespace",
		" {\n \"ts\" : 1700000000123 , \"currency\":\"EUR\", \"amount\" : \"12.50\","
		"\"store_id\":3,\"user_id\":1001 ,\"order_id\":\"" ORDER_UUID "\" }\n", 0, ADS_OK, 1, NULL},
	{"order: ignored fields incl. event keys",
		"{\"event_id\":\"x\",\"type\":\"view\",\"ad_id\":-1,\"items\":[{\"sku\":\"A\",\"amount\":1e9}],"
		DEF_ORDER_FIELDS ",\"note\":\"caf\xC3\xA9\"}", 0, ADS_OK, 1, NULL},
	{"order: escaped keys",
		"{\"order\\u005fid\":\"" ORDER_UUID "\",\"user_id\":1001,\"store_id\":3,"
		"\"\\u0061mount\":\"12.50\",\"curr\\u0065ncy\":\"EUR\",\"\\u0074s\":1700000000123}",
	0, ADS_OK, 1, NULL},

	/* precedence of the message-level checks */
	{"order: NUL outranks everything", L("{\"a\":\"\0\",\"amount\":-1}"), ADS_R_NUL_BYTE, 0, "NUL"},
	{"order: NUL after invalid UTF-8", L("{\"a\":\"\xC0\xAF\"," DEF_ORDER_FIELDS "\0}"), ADS_R_NUL_BYTE, 0, NULL},
	{"order: invalid UTF-8", "{\"a\":\"\xED\xA0\x80\"," DEF_ORDER_FIELDS "}", 0, ADS_R_INVALID_UTF8, 0, "UTF-8"},
	{"order: invalid UTF-8 after syntax error", "{\"amount\":,\"\xFF\"}", 0, ADS_R_INVALID_UTF8, 0, NULL},
	{"order: invalid JSON", "{" DEF_ORDER_FIELDS ",}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"order: truncated", "{" DEF_ORDER_FIELDS, 0, ADS_R_INVALID_JSON, 0, "end of input"},
	{"order: NaN amount is invalid JSON", "{\"order_id\":\"" ORDER_UUID "\",\"amount\":NaN}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"order: leading-zero amount is invalid JSON", "{" DEF_ORDER_FIELDS ",\"amount\":007}", 0, ADS_R_INVALID_JSON, 0, NULL},
	{"order: top-level array", "[" DEF_ORDER "]", 0, ADS_R_NOT_OBJECT, 0, "not an object"},
	{"order: top-level string", "\"12.50\"", 0, ADS_R_NOT_OBJECT, 0, NULL},
	{"order: duplicate amount", "{" DEF_ORDER_FIELDS ",\"amount\":\"12.50\"}", 0, ADS_R_DUPLICATE_KEY, 0, "duplicate field \"amount\""},
	{"order: duplicate currency via escape", "{" DEF_ORDER_FIELDS ",\"\\u0063urrency\":\"EUR\"}", 0, ADS_R_DUPLICATE_KEY, 0, "\"currency\""},
	{"order: duplicate outranks bad fields", "{\"order_id\":1,\"ts\":true,\"ts\":false}", 0, ADS_R_DUPLICATE_KEY, 0, "\"ts\""},
	{"order: duplicate event keys ignored", "{\"ad_id\":1,\"ad_id\":2," DEF_ORDER_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"order: nested duplicate ignored", "{\"x\":{\"amount\":1,\"amount\":2}," DEF_ORDER_FIELDS "}", 0, ADS_OK, 1, NULL},
	{"order: empty object", "{}", 0, ADS_R_MISSING_FIELD, 0, "missing field \"order_id\""},
	{"order: an event is not an order", DEF_MSG, 0, ADS_R_MISSING_FIELD, 0, "missing field \"order_id\""},

	/* field precedence: contract order */
	{"order: order_id before everything",
		"{\"order_id\":\"x\",\"user_id\":-1,\"amount\":-1,\"currency\":\"x\",\"ts\":true}",
	0, ADS_R_INVALID_UUID, 0, "\"order_id\""},
	{"order: bad order_id before missing ts", "{\"order_id\":5}", 0, ADS_R_WRONG_TYPE, 0, "\"order_id\""},
	{"order: user_id before amount",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":-1,\"store_id\":3,\"amount\":1e3,"
		"\"currency\":\"x\",\"ts\":true}", 0, ADS_R_NEGATIVE_ID, 0, "\"user_id\""},
	{"order: missing store_id before bad amount",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":1,\"amount\":\"x\"}", 0, ADS_R_MISSING_FIELD, 0, "\"store_id\""},
	{"order: amount before currency",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":1,\"store_id\":3,\"amount\":-5,"
		"\"currency\":\"usd\",\"ts\":true}", 0, ADS_R_INVALID_AMOUNT, 0, "is negative"},
	{"order: missing amount before bad currency",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":1,\"store_id\":3,"
		"\"currency\":\"usd\",\"ts\":true}", 0, ADS_R_MISSING_FIELD, 0, "\"amount\""},
	{"order: currency before ts",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":1,\"store_id\":3,\"amount\":5,"
		"\"currency\":\"usd\",\"ts\":\"yesterday\"}", 0, ADS_R_INVALID_CURRENCY, 0, "\"currency\""},
	{"order: missing ts last",
		"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":1,\"store_id\":3,\"amount\":5,"
		"\"currency\":\"USD\"}", 0, ADS_R_MISSING_FIELD, 0, "missing field \"ts\""},
};

/* ---------------------------------------------------------------------
 * Single-field order cases
 * ---------------------------------------------------------------------
 */
typedef struct OrderFieldCase
{
	const char *name;
	int			field;
	const char *json;			/* replacement value text; NULL: omit field */
	AdsReason	expect;
	int64_t		value;			/* ok: user_id, store_id or ts_us */
	const char *text;			/* ok: order_id, amount or currency text */
	const char *detail_sub;		/* extra substring of the detail, or NULL */
} OrderFieldCase;

#define D19 "1000000000000000000"
#define D18 "999999999999999999"
#define D40 "1234567890123456789012345678901234567890"

static const OrderFieldCase order_field_cases[] = {
	/* order_id */
	{"order_id upper case", O_ORDER_ID, "\"7C9E6679-7425-40DE-944B-E07FC1F90AE7\"", ADS_OK, 0, ORDER_UUID, NULL},
	{"order_id escaped", O_ORDER_ID, "\"7c9e6679\\u002d7425-40de-944b-e07fc1f90ae\\u0037\"", ADS_OK, 0, ORDER_UUID, NULL},
	{"order_id number", O_ORDER_ID, "42", ADS_R_WRONG_TYPE, 0, NULL, "not a string"},
	{"order_id null", O_ORDER_ID, "null", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order_id not a uuid", O_ORDER_ID, "\"not-a-uuid\"", ADS_R_INVALID_UUID, 0, NULL, NULL},
	{"order_id non-hex", O_ORDER_ID, "\"7c9e6679-7425-40de-944b-e07fc1f90aez\"", ADS_R_INVALID_UUID, 0, NULL, NULL},
	{"order_id braces", O_ORDER_ID, "\"{" ORDER_UUID "}\"", ADS_R_INVALID_UUID, 0, NULL, NULL},
	{"order_id missing", O_ORDER_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},

	/* user_id, store_id */
	{"order user_id max", O_USER_ID, "9223372036854775807", ADS_OK, INT64_MAX, NULL, NULL},
	{"order user_id zero", O_USER_ID, "0", ADS_OK, 0, NULL, NULL},
	{"order user_id -1", O_USER_ID, "-1", ADS_R_NEGATIVE_ID, 0, NULL, "is negative"},
	{"order user_id 2^63", O_USER_ID, "9223372036854775808", ADS_R_OUT_OF_RANGE, 0, NULL, NULL},
	{"order user_id string", O_USER_ID, "\"1001\"", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order user_id fraction", O_USER_ID, "1001.0", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order user_id missing", O_USER_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},
	{"order store_id 7", O_STORE_ID, "7", ADS_OK, 7, NULL, NULL},
	{"order store_id negative", O_STORE_ID, "-3", ADS_R_NEGATIVE_ID, 0, NULL, NULL},
	{"order store_id huge", O_STORE_ID, "-99999999999999999999", ADS_R_OUT_OF_RANGE, 0, NULL, NULL},
	{"order store_id true", O_STORE_ID, "true", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order store_id missing", O_STORE_ID, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},

	/* amount: accepted forms and the canonical text */
	{"amount 0", O_AMOUNT, "0", ADS_OK, 0, "0", NULL},
	{"amount 0.0", O_AMOUNT, "0.0", ADS_OK, 0, "0.0", NULL},
	{"amount \"0\"", O_AMOUNT, "\"0\"", ADS_OK, 0, "0", NULL},
	{"amount 12.50", O_AMOUNT, "12.50", ADS_OK, 0, "12.50", NULL},
	{"amount \"12.50\"", O_AMOUNT, "\"12.50\"", ADS_OK, 0, "12.50", NULL},
	{"amount 12", O_AMOUNT, "12", ADS_OK, 0, "12", NULL},
	{"amount \"12\"", O_AMOUNT, "\"12\"", ADS_OK, 0, "12", NULL},
	{"amount 0.5", O_AMOUNT, "0.5", ADS_OK, 0, "0.5", NULL},
	{"amount 100.000 keeps zeros", O_AMOUNT, "100.000", ADS_OK, 0, "100.000", NULL},
	{"amount minus zero is zero", O_AMOUNT, "-0", ADS_OK, 0, "0", NULL},
	{"amount \"-0.00\" is zero", O_AMOUNT, "\"-0.00\"", ADS_OK, 0, "0.00", NULL},
	{"amount escaped digits", O_AMOUNT, "\"\\u0031\\u0032.5\\u0030\"", ADS_OK, 0, "12.50", NULL},
	{"amount 18 integer digits", O_AMOUNT, D18, ADS_OK, 0, D18, NULL},
	{"amount \"18 integer digits\"", O_AMOUNT, "\"" D18 "\"", ADS_OK, 0, D18, NULL},
	{"amount 9 fraction digits", O_AMOUNT, "0.123456789", ADS_OK, 0, "0.123456789", NULL},
	{"amount largest", O_AMOUNT, "\"" D18 ".999999999\"", ADS_OK, 0, D18 ".999999999", NULL},

	/* amount: out_of_range */
	{"amount 19 integer digits", O_AMOUNT, D19, ADS_R_OUT_OF_RANGE, 0, NULL, "18 integer digits"},
	{"amount \"19 integer digits\"", O_AMOUNT, "\"" D19 ".5\"", ADS_R_OUT_OF_RANGE, 0, NULL, "18 integer digits"},
	{"amount 10 fraction digits", O_AMOUNT, "0.1234567890", ADS_R_OUT_OF_RANGE, 0, NULL, "9 fraction digits"},
	{"amount \"10 fraction digits\"", O_AMOUNT, "\"1.0000000000\"", ADS_R_OUT_OF_RANGE, 0, NULL, "9 fraction digits"},
	{"amount 40 digits", O_AMOUNT, D40 "." D40, ADS_R_OUT_OF_RANGE, 0, NULL, NULL},
	{"amount 40 escaped digits", O_AMOUNT,
		"\"\\u0031" D40 "\\u0031" D40 "\"", ADS_R_OUT_OF_RANGE, 0, NULL, "18 integer digits"},

	/* amount: invalid_amount */
	{"amount 1e3", O_AMOUNT, "1e3", ADS_R_INVALID_AMOUNT, 0, NULL, "exponent"},
	{"amount 1.5E-2", O_AMOUNT, "1.5E-2", ADS_R_INVALID_AMOUNT, 0, NULL, "exponent"},
	{"amount 0e0", O_AMOUNT, "0e0", ADS_R_INVALID_AMOUNT, 0, NULL, "exponent"},
	{"amount \"1e3\"", O_AMOUNT, "\"1e3\"", ADS_R_INVALID_AMOUNT, 0, NULL, "exponent"},
	{"amount -1e3 (exponent first)", O_AMOUNT, "-1e3", ADS_R_INVALID_AMOUNT, 0, NULL, "exponent"},
	{"amount -1", O_AMOUNT, "-1", ADS_R_INVALID_AMOUNT, 0, NULL, "is negative"},
	{"amount -0.01", O_AMOUNT, "-0.01", ADS_R_INVALID_AMOUNT, 0, NULL, "is negative"},
	{"amount \"-12.50\"", O_AMOUNT, "\"-12.50\"", ADS_R_INVALID_AMOUNT, 0, NULL, "is negative"},
	{"amount huge negative is negative", O_AMOUNT, "-" D40, ADS_R_INVALID_AMOUNT, 0, NULL, "is negative"},
	{"amount \"12.5x\"", O_AMOUNT, "\"12.5x\"", ADS_R_INVALID_AMOUNT, 0, NULL, "not a decimal"},
	{"amount \"\"", O_AMOUNT, "\"\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"007\"", O_AMOUNT, "\"007\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"-007\"", O_AMOUNT, "\"-007\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"+5\"", O_AMOUNT, "\"+5\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \" 5\"", O_AMOUNT, "\" 5\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"5 \"", O_AMOUNT, "\"5 \"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \".5\"", O_AMOUNT, "\".5\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"5.\"", O_AMOUNT, "\"5.\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"-\"", O_AMOUNT, "\"-\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"1e\"", O_AMOUNT, "\"1e\"", ADS_R_INVALID_AMOUNT, 0, NULL, "not a decimal"},
	{"amount \"1,000.00\"", O_AMOUNT, "\"1,000.00\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"0x10\"", O_AMOUNT, "\"0x10\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"NaN\"", O_AMOUNT, "\"NaN\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"12.50 EUR\"", O_AMOUNT, "\"12.50 EUR\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount \"12\\u0000\"", O_AMOUNT, "\"12\\u0000\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount fullwidth digit", O_AMOUNT, "\"\xEF\xBC\x91\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},
	{"amount lone surrogate", O_AMOUNT, "\"1\\ud800\"", ADS_R_INVALID_AMOUNT, 0, NULL, NULL},

	/* amount: wrong_type, missing */
	{"amount true", O_AMOUNT, "true", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount false", O_AMOUNT, "false", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount null", O_AMOUNT, "null", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount object", O_AMOUNT, "{\"value\":\"12.50\"}", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount array", O_AMOUNT, "[12.50]", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount object holding number", O_AMOUNT, "{\"v\":12}", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"currency object holding EUR", O_CURRENCY, "{\"c\":\"EUR\"}", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order_id object holding uuid", O_ORDER_ID, "{\"id\":\"" ORDER_UUID "\"}", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"amount missing", O_AMOUNT, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},

	/* currency */
	{"currency EUR", O_CURRENCY, "\"EUR\"", ADS_OK, 0, "EUR", NULL},
	{"currency USD", O_CURRENCY, "\"USD\"", ADS_OK, 0, "USD", NULL},
	{"currency GBP", O_CURRENCY, "\"GBP\"", ADS_OK, 0, "GBP", NULL},
	{"currency \\u0045UR", O_CURRENCY, "\"\\u0045UR\"", ADS_OK, 0, "EUR", NULL},
	{"currency fully escaped", O_CURRENCY, "\"\\u0058\\u0041\\u0055\"", ADS_OK, 0, "XAU", NULL},
	{"currency usd", O_CURRENCY, "\"usd\"", ADS_R_INVALID_CURRENCY, 0, NULL, "A-Z"},
	{"currency Eur", O_CURRENCY, "\"Eur\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency US", O_CURRENCY, "\"US\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency USDX", O_CURRENCY, "\"USDX\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency empty", O_CURRENCY, "\"\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency digits", O_CURRENCY, "\"978\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency U$D", O_CURRENCY, "\"U$D\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency leading space", O_CURRENCY, "\" EUR\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency escaped NUL", O_CURRENCY, "\"EU\\u0000\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency escaped lower", O_CURRENCY, "\"\\u0065UR\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency accented", O_CURRENCY, "\"\xC3\x89UR\"", ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency long", O_CURRENCY, "\"EUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUREUR\"",
	ADS_R_INVALID_CURRENCY, 0, NULL, NULL},
	{"currency number", O_CURRENCY, "978", ADS_R_WRONG_TYPE, 0, NULL, "not a string"},
	{"currency null", O_CURRENCY, "null", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"currency array", O_CURRENCY, "[\"EUR\"]", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"currency missing", O_CURRENCY, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},

	/* ts: the event rules */
	{"order ts ms", O_TS, "1700000000999", ADS_OK, INT64_C(1700000000999000), NULL, NULL},
	{"order ts rfc3339", O_TS, "\"2024-01-01T01:00:00.5+01:00\"", ADS_OK, INT64_C(1704067200500000), NULL, NULL},
	{"order ts bad date", O_TS, "\"2024-13-45T25:61:00Z\"", ADS_R_INVALID_TIMESTAMP, 0, NULL, NULL},
	{"order ts before epoch", O_TS, "\"1969-12-31T23:59:59Z\"", ADS_R_OUT_OF_RANGE, 0, NULL, NULL},
	{"order ts negative ms", O_TS, "-1", ADS_R_OUT_OF_RANGE, 0, NULL, NULL},
	{"order ts fraction", O_TS, "1700000000123.5", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order ts true", O_TS, "true", ADS_R_WRONG_TYPE, 0, NULL, NULL},
	{"order ts missing", O_TS, NULL, ADS_R_MISSING_FIELD, 0, NULL, NULL},
};

static size_t
build_order(char *out, size_t cap, int f, const char *json)
{
	size_t		n = 0;
	int			i,
				first = 1;

	n += (size_t) snprintf(out + n, cap - n, "{");
	for (i = 0; i < O_NFIELDS; i++)
	{
		const char *v = (i == f) ? json : order_default[i];

		if (v == NULL)
			continue;
		n += (size_t) snprintf(out + n, cap - n, "%s\"%s\":%s",
							   first ? "" : ",", order_key[i], v);
		first = 0;
	}
	n += (size_t) snprintf(out + n, cap - n, "}");
	return n;
}

static void
run_order_cases(void)
{
	size_t		i;
	AdsOrder	def = default_order();

	for (i = 0; i < sizeof(order_raw_cases) / sizeof(order_raw_cases[0]); i++)
	{
		const RawCase *rc = &order_raw_cases[i];
		size_t		len = rc->len ? rc->len : strlen(rc->text);

		tally(check_parse_order(rc->name, rc->text, len, DEFAULT_MAX, rc->expect,
								rc->detail_sub, rc->want_default ? &def : NULL, NULL));
	}

	for (i = 0; i < sizeof(order_field_cases) / sizeof(order_field_cases[0]); i++)
	{
		const OrderFieldCase *fc = &order_field_cases[i];
		char		text[1024];
		char		sub[64];
		size_t		len = build_order(text, sizeof(text), fc->field, fc->json);
		AdsOrder	want = default_order();
		int			ok;

		switch (fc->field)
		{
			case O_USER_ID:
				want.user_id = fc->value;
				break;
			case O_STORE_ID:
				want.store_id = fc->value;
				break;
			case O_AMOUNT:
				if (fc->text)
					strcpy(want.amount, fc->text);
				break;
			case O_CURRENCY:
				if (fc->text)
					strcpy(want.currency, fc->text);
				break;
			case O_TS:
				want.ts_us = fc->value;
				break;
		}
		snprintf(sub, sizeof(sub), "\"%s\"", order_key[fc->field]);
		ok = check_parse_order(fc->name, text, len, DEFAULT_MAX, fc->expect,
							   fc->expect == ADS_OK ? NULL : sub, &want,
							   fc->field == O_ORDER_ID ? fc->text : NULL);
		if (ok && fc->detail_sub != NULL)
			ok = check_parse_order(fc->name, text, len, DEFAULT_MAX, fc->expect,
								   fc->detail_sub, &want,
								   fc->field == O_ORDER_ID ? fc->text : NULL);
		tally(ok);
	}
}

/* Empty, size limit, nesting and detail handling, as for events. */
static void
run_order_generated_cases(void)
{
	AdsOrder	want = default_order();
	char	   *buf;
	size_t		base = strlen(DEF_ORDER);
	char		d[16];
	AdsReason	r;
	int			ok;

	tally(check_parse_order("order: empty NULL", NULL, 0, DEFAULT_MAX, ADS_R_EMPTY, "empty", NULL, NULL));
	r = ads_parse_order(NULL, 7, DEFAULT_MAX, NULL, NULL, 0);
	if (r != ADS_R_EMPTY)
		report_failure("order: NULL with nonzero length", "expected empty");
	tally(r == ADS_R_EMPTY);

	buf = malloc(2048);
	memcpy(buf, DEF_ORDER, base);
	memset(buf + base, '\n', 300 - base);
	tally(check_parse_order("order: size at limit", buf, 300, 300, ADS_OK, NULL, &want, NULL));
	tally(check_parse_order("order: size limit + 1", buf, 300, 299, ADS_R_OVERSIZED, "limit is 299", NULL, NULL));
	memset(buf + 300, '\0', 10);
	tally(check_parse_order("order: oversized outranks NUL", buf, 310, 299, ADS_R_OVERSIZED, NULL, NULL, NULL));

	/* nesting: 65 levels inside an ignored field */
	{
		size_t		n = 0;

		memcpy(buf, "{\"x\":", 5);
		n = 5;
		memset(buf + n, '[', 64);
		n += 64;
		memset(buf + n, ']', 64);
		n += 64;
		buf[n++] = ',';
		memcpy(buf + n, DEF_ORDER_FIELDS "}", base - 1);
		n += base - 1;
		tally(check_parse_order("order: depth 65 rejected", buf, n, DEFAULT_MAX,
								ADS_R_INVALID_JSON, "nesting", NULL, NULL));
	}
	free(buf);

	/* detail buffer: truncated, never written past detail_len */
	memset(d, '#', sizeof(d));
	r = ads_parse_order("{\"order_id\":1}", 14, DEFAULT_MAX, NULL, d, 8);
	ok = (r == ADS_R_WRONG_TYPE && strlen(d) == 7 && d[8] == '#');
	if (!ok)
		report_failure("order: detail_len 8", "not truncated to 7 chars + NUL");
	tally(ok);
	memset(d, '#', sizeof(d));
	r = ads_parse_order("{\"order_id\":1}", 14, DEFAULT_MAX, NULL, d, 0);
	ok = (r == ADS_R_WRONG_TYPE && d[0] == '#');
	if (!ok)
		report_failure("order: detail_len 0", "buffer written or wrong reason");
	tally(ok);

	/* out is left alone on failure */
	{
		AdsOrder	o;

		memset(&o, 0x5A, sizeof(o));
		r = ads_parse_order("{\"order_id\":1}", 14, DEFAULT_MAX, &o, NULL, 0);
		ok = (r == ADS_R_WRONG_TYPE && o.amount[0] == 0x5A && o.user_id != 0);
		if (!ok)
			report_failure("order: out untouched on failure", "out was written");
		tally(ok);
	}
}

static const char *const order_fuzz_bases[] = {
	DEF_ORDER,
	"{\"meta\":{\"src\":\"caf\xC3\xA9 \\u00e9\\ud83d\\ude00\",\"items\":[{\"sku\":\"A-1\",\"qty\":2,\"amount\":-1e3}]},"
	"\"\\u006frder_id\":\"7C9E6679-7425-40DE-944B-E07FC1F90AE7\",\"user_id\":9223372036854775807,"
	"\"store_id\":0,\"amount\":999999999999999999.999999999,\"currency\":\"\\u0047BP\","
	"\"ts\":\"2024-02-29T23:59:59.123456789+05:30\"}",
	"{ \"ts\" : \"1970-01-01 00:00:00z\" , \"currency\" : \"USD\" , \"amount\" : \"0.5\" , "
	"\"store_id\" : 12 , \"user_id\" : -0 , \"order_id\" : \"" ORDER_UUID "\" }",
	"{\"order_id\":\"" ORDER_UUID "\",\"user_id\":5,\"store_id\":6,\"amount\":12.345,"
	"\"currency\":\"EUR\",\"ts\":1700000000000}",
};

/*
 * Order counterpart of check_invariants(), plus one cross-check: the
 * message-level reasons (empty .. not_object) cannot depend on the
 * contract, so the event parser must agree on them.
 */
static int
check_order_invariants(const char *buf, size_t len, char *why, size_t whylen)
{
	char		d1[ADS_DETAIL_LEN],
				d2[ADS_DETAIL_LEN];
	AdsOrder	o;
	AdsReason	r1,
				r2,
				r3,
				re;
	int			has_nul = (len > 0 && memchr(buf, 0, len) != NULL);
	int			utf8 = ads_utf8_valid(buf, len);

	memset(&o, 0, sizeof(o));
	r1 = ads_parse_order(buf, len, DEFAULT_MAX, &o, d1, sizeof(d1));
	r2 = ads_parse_order(buf, len, DEFAULT_MAX, NULL, d2, sizeof(d2));
	r3 = ads_parse_order(buf, len, DEFAULT_MAX, NULL, NULL, 0);
	re = ads_parse_event(buf, len, DEFAULT_MAX, NULL, NULL, 0);

	if ((int) r1 < 0 || r1 >= ADS_R__COUNT || r1 == ADS_R_UNKNOWN_TYPE ||
		r1 == ADS_R_FUTURE_TIMESTAMP || r1 == ADS_R_TOO_LATE)
		return snprintf(why, whylen, "illegal reason %d", (int) r1), 0;
	if (re == ADS_R_INVALID_AMOUNT || re == ADS_R_INVALID_CURRENCY)
		return snprintf(why, whylen, "event parser said %s", ads_reason_name(re)), 0;
	if (r1 != r2 || r1 != r3 || strcmp(d1, d2) != 0)
		return snprintf(why, whylen, "nondeterministic result"), 0;
	if (!detail_sane(d1, sizeof(d1)))
		return snprintf(why, whylen, "bad detail"), 0;
	if (((r1 >= ADS_R_EMPTY && r1 <= ADS_R_NOT_OBJECT) ||
		 (re >= ADS_R_EMPTY && re <= ADS_R_NOT_OBJECT)) && r1 != re)
		return snprintf(why, whylen, "order %s but event %s",
						ads_reason_name(r1), ads_reason_name(re)), 0;
	if (len == 0)
		return r1 == ADS_R_EMPTY ? 1 : (snprintf(why, whylen, "len 0 not empty"), 0);
	if (has_nul && r1 != ADS_R_NUL_BYTE)
		return snprintf(why, whylen, "NUL present but reason %s", ads_reason_name(r1)), 0;
	if (!has_nul && !utf8 && r1 != ADS_R_INVALID_UTF8)
		return snprintf(why, whylen, "bad UTF-8 but reason %s", ads_reason_name(r1)), 0;
	if (!has_nul && utf8 && (r1 == ADS_R_NUL_BYTE || r1 == ADS_R_INVALID_UTF8))
		return snprintf(why, whylen, "clean input but reason %s", ads_reason_name(r1)), 0;
	if (r1 == ADS_OK && !order_sane(&o))
		return snprintf(why, whylen, "ok with out-of-contract values"), 0;
	return 1;
}

static void
run_order_prefix_checks(void)
{
	size_t		b;

	for (b = 0; b < sizeof(order_fuzz_bases) / sizeof(order_fuzz_bases[0]); b++)
	{
		const char *base = order_fuzz_bases[b];
		size_t		blen = strlen(base);
		size_t		n;
		int			ok = 1;
		char		why[128];
		char		name[64];

		snprintf(name, sizeof(name), "prefixes of order base %zu", b);
		if (check_parse_order(name, base, blen, DEFAULT_MAX, ADS_OK, NULL, NULL, NULL) == 0)
			ok = 0;
		for (n = 0; n < blen; n++)
		{
			char	   *copy = malloc(n ? n : 1);
			AdsReason	r;

			memcpy(copy, base, n);
			r = ads_parse_order(n ? copy : NULL, n, DEFAULT_MAX, NULL, NULL, 0);
			if (!check_order_invariants(n ? copy : NULL, n, why, sizeof(why)) ||
				r == ADS_OK)
			{
				char		msg[200];

				snprintf(msg, sizeof(msg), "prefix length %zu: %s", n,
						 r == ADS_OK ? "accepted" : why);
				report_failure(name, msg);
				ok = 0;
			}
			free(copy);
		}
		tally(ok);
	}
}

/* the event set plus letters that can make or break a currency */
static const char order_interesting[] = "{}[]\":,\\/ 0123456789-+.eEtrufalsnbuUSDEGBPxX\x00\x01\x1F\x7F"
"\x80\xBF\xC0\xC2\xDF\xE0\xED\xEF\xF0\xF4\xF5\xFF";

static void
run_order_mutation_checks(int iterations)
{
	char	   *work = malloc(4096);
	int			i;
	int			ok = 1;
	long		hist[ADS_R__COUNT] = {0};

	for (i = 0; i < iterations; i++)
	{
		const char *base = order_fuzz_bases[xorshift64() %
											(sizeof(order_fuzz_bases) / sizeof(order_fuzz_bases[0]))];
		size_t		len = strlen(base);
		int			nmut = 1 + (int) (xorshift64() % 4);
		int			m;
		char	   *copy;
		char		why[128];

		memcpy(work, base, len);
		for (m = 0; m < nmut; m++)
		{
			size_t		pos = len ? (size_t) (xorshift64() % len) : 0;
			unsigned	op = (unsigned) (xorshift64() % 6);
			char		c = (xorshift64() & 1) ?
				order_interesting[xorshift64() % (sizeof(order_interesting) - 1)] :
				(char) (xorshift64() & 0xFF);

			switch (op)
			{
				case 0:
				case 1:
					if (len)
						work[pos] = c;
					break;
				case 2:
					if (len)
					{
						memmove(work + pos, work + pos + 1, len - pos - 1);
						len--;
					}
					break;
				case 3:
					if (len < 4000)
					{
						memmove(work + pos + 1, work + pos, len - pos);
						work[pos] = c;
						len++;
					}
					break;
				case 4:
					len = pos;
					break;
				case 5:
					{
						size_t		cl = 1 + (size_t) (xorshift64() % 16);

						if (pos + cl <= len && len + cl < 4000)
						{
							memmove(work + pos + cl, work + pos, len - pos);
							len += cl;
						}
					}
					break;
			}
		}

		copy = malloc(len ? len : 1);
		memcpy(copy, work, len);
		if (!check_order_invariants(len ? copy : NULL, len, why, sizeof(why)))
		{
			char		msg[200];

			snprintf(msg, sizeof(msg), "iteration %d (len %zu): %s", i, len, why);
			report_failure("order mutation", msg);
			ok = 0;
		}
		else
			hist[ads_parse_order(len ? copy : NULL, len, DEFAULT_MAX, NULL, NULL, 0)]++;
		free(copy);
	}
	free(work);
	tally(ok);

	/* the mutator must reach acceptance and the order-specific reasons */
	{
		static const AdsReason need[] = {
			ADS_OK, ADS_R_INVALID_AMOUNT, ADS_R_INVALID_CURRENCY, ADS_R_WRONG_TYPE,
			ADS_R_MISSING_FIELD, ADS_R_INVALID_UUID, ADS_R_DUPLICATE_KEY
		};
		size_t		k;

		ok = 1;
		if (iterations >= 10000)
			for (k = 0; k < sizeof(need) / sizeof(need[0]); k++)
				if (hist[need[k]] == 0)
				{
					report_failure("order mutation", ads_reason_name(need[k]));
					ok = 0;
				}
		tally(ok);
	}
}


/* ---------------------------------------------------------------------
 * Formats: field mapping and the unit of ts
 * ---------------------------------------------------------------------
 */

/* A format from "field=path" pairs (NULL-terminated) and a ts_format; 1 = ok. */
static int
make_format(AdsFormat *fmt, int is_orders, const char *const *pairs,
			const char *ts_format, char *err, size_t errlen)
{
	int			i;

	ads_format_init(fmt, is_orders);
	err[0] = '\0';
	for (i = 0; pairs && pairs[i]; i += 2)
		if (!ads_format_set_field(fmt, pairs[i], pairs[i + 1], err, errlen))
			return 0;
	if (ts_format && !ads_format_set_ts(fmt, ts_format, err, errlen))
		return 0;
	return ads_format_finish(fmt, err, errlen);
}

static const char *const producer_map[] = {
	"event_id", "eventId", "type", "kind", "ad_id", "payload.ad.id",
	"campaign_id", "payload.ad.campaign", "user_id", "user.id",
	"store_id", "storeId", "ts", "time", NULL
};

#define PRODUCER_MSG(ts) \
	"{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\"," \
	"\"payload\":{\"other\":{\"id\":-5},\"ad\":{\"id\":42,\"campaign\":7},\"ad_id\":-1}," \
	"\"user\":{\"id\":1001},\"storeId\":3,\"time\":" ts ",\"ad_id\":\"ignored\"}"

typedef struct FormatCase
{
	const char *name;
	const char *ts_format;
	const char *msg;
	AdsReason	want;
	const char *detail;			/* substring, or NULL */
	int64_t		want_ts_us;		/* checked when want is ADS_OK */
} FormatCase;

static const FormatCase format_cases[] = {
	{"mapped, epoch ms", NULL, PRODUCER_MSG("1700000000123"), ADS_OK, NULL, INT64_C(1700000000123000)},
	{"mapped, epoch s", "epoch_s", PRODUCER_MSG("1700000000"), ADS_OK, NULL, INT64_C(1700000000000000)},
	{"mapped, epoch us", "epoch_us", PRODUCER_MSG("1700000000123456"), ADS_OK, NULL, INT64_C(1700000000123456)},
	{"mapped, rfc3339", "rfc3339", PRODUCER_MSG("\"2023-11-14T22:13:20.5Z\""), ADS_OK, NULL, INT64_C(1700000000500000)},
	{"epoch_s still takes RFC 3339", "epoch_s", PRODUCER_MSG("\"2023-11-14T22:13:20Z\""), ADS_OK, NULL, INT64_C(1700000000000000)},
	{"rfc3339 refuses a number", "rfc3339", PRODUCER_MSG("1700000000123"), ADS_R_WRONG_TYPE, "field \"time\" is not an RFC 3339 string", 0},
	{"epoch_s out of range", "epoch_s", PRODUCER_MSG("253402300800"), ADS_R_OUT_OF_RANGE, "field \"time\"", 0},
	{"epoch_s last second", "epoch_s", PRODUCER_MSG("253402300799"), ADS_OK, NULL, INT64_C(253402300799000000)},
	{"epoch_us negative", "epoch_us", PRODUCER_MSG("-1"), ADS_R_OUT_OF_RANGE, NULL, 0},
	{"epoch_s fraction", "epoch_s", PRODUCER_MSG("1700000000.5"), ADS_R_WRONG_TYPE, NULL, 0},
	{"escaped mapped keys",
		NULL, "{\"event\\u0049d\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"p\\u0061yload\":{\"ad\":{\"i\\u0064\":42,\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1700000000123}", ADS_OK, NULL, INT64_C(1700000000123000)},
	{"inner field missing",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_MISSING_FIELD, "missing field \"payload.ad.id\"", 0},
	{"object on the way is a number",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":5,"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_MISSING_FIELD, "missing field \"payload.ad.id\"", 0},
	{"object on the way is an array",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":[{\"ad\":{\"id\":42,\"campaign\":7}}],"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_MISSING_FIELD, "missing field \"payload.ad.id\"", 0},
	{"default name does not count",
		NULL, "{\"event_id\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":42,\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_MISSING_FIELD, "missing field \"eventId\"", 0},
	{"duplicate object on the way",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":42,\"campaign\":7}},"
		"\"payload\":{},\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_DUPLICATE_KEY, "duplicate field \"payload\"", 0},
	{"duplicate inner field",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":42,\"campaign\":7,\"id\":43}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_DUPLICATE_KEY, "duplicate field \"payload.ad.id\"", 0},
	{"negative inner id",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":-42,\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_NEGATIVE_ID, "field \"payload.ad.id\" is negative", 0},
	{"inner value is an object",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":{\"v\":1},\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3,\"time\":1}", ADS_R_WRONG_TYPE, "field \"payload.ad.id\" is not an integer", 0},
	{"bad uuid reported before missing ts",
		NULL, "{\"eventId\":\"nope\",\"kind\":\"impression\",\"payload\":{\"ad\":{\"id\":42,\"campaign\":7}},"
		"\"user\":{\"id\":1001},\"storeId\":3}", ADS_R_INVALID_UUID, "field \"eventId\"", 0},
	{"syntax still checked off the path",
		NULL, "{\"eventId\":\"" UUID_TEXT "\",\"x\":{\"y\":[1,2,}]}}", ADS_R_INVALID_JSON, NULL, 0},
	{"not an object", NULL, "[" PRODUCER_MSG("1") "]", ADS_R_NOT_OBJECT, NULL, 0},
};

/* Wrap msg as {"w": {"v": msg}} into out; returns the length. */
static size_t
wrap_twice(const char *msg, size_t len, char *out)
{
	memcpy(out, "{\"w\":{\"v\":", 10);
	memcpy(out + 10, msg, len);
	memcpy(out + 10 + len, "}}", 2);
	return len + 12;
}

static void
run_format_cases(int iterations)
{
	AdsFormat	fmt;
	char		err[256];
	size_t		i;
	int			ok;

	/* compile errors */
	{
		static const struct
		{
			const char *field;
			const char *path;
			const char *err;
		}			bad[] = {
			{"ad", "x", "not a field"},
			{"ad_id", "", "1 to"},
			{"ad_id", "a..b", "empty member name"},
			{"ad_id", "a.", "empty member name"},
			{"ad_id", "a.b.c.d.e.f.g.h.i", "more than 8 members"},
			{"ad_id", "caf\xC3\xA9", "printable ASCII"},
			{"order_id", "x", "not a field of the ad events"},
		};

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		{
			ads_format_init(&fmt, 0);
			ok = !ads_format_set_field(&fmt, bad[i].field, bad[i].path, err, sizeof(err)) &&
				strstr(err, bad[i].err) != NULL;
			if (!ok)
				report_failure("format: bad path", err);
			tally(ok);
		}
	}
	{
		static const char *const same[] = {"ad_id", "x", "campaign_id", "x", NULL};
		static const char *const inside[] = {"ad_id", "a.b", "campaign_id", "a.b.c", NULL};
		static const char *const around[] = {"ad_id", "a.b.c", "campaign_id", "a.b", NULL};
		static const char *const moved[] = {"ad_id", "type", NULL};

		tally(!make_format(&fmt, 0, same, NULL, err, sizeof(err)) && strstr(err, "same path") != NULL);
		tally(!make_format(&fmt, 0, inside, NULL, err, sizeof(err)) && strstr(err, "inside") != NULL);
		tally(!make_format(&fmt, 0, around, NULL, err, sizeof(err)) && strstr(err, "inside") != NULL);
		/* ad_id at "type" collides with type's own default path */
		tally(!make_format(&fmt, 0, moved, NULL, err, sizeof(err)));
		tally(!make_format(&fmt, 0, NULL, "epoch_ns", err, sizeof(err)) && strstr(err, "ts_format") != NULL);
		tally(make_format(&fmt, 0, NULL, "epoch_us", err, sizeof(err)) && !fmt.mapped &&
			  fmt.ts_format == ADS_TS_EPOCH_US);
	}

	/* mapped messages */
	for (i = 0; i < sizeof(format_cases) / sizeof(format_cases[0]); i++)
	{
		const FormatCase *fc = &format_cases[i];
		AdsEvent	ev,
					want = default_event();
		char		detail[ADS_DETAIL_LEN];
		size_t		len = strlen(fc->msg);
		char	   *copy = malloc(len);
		AdsReason	r;
		char		msg[300];

		if (!make_format(&fmt, 0, producer_map, fc->ts_format, err, sizeof(err)) || !fmt.mapped)
		{
			report_failure(fc->name, err);
			tally(0);
			free(copy);
			continue;
		}
		memcpy(copy, fc->msg, len);
		r = ads_parse_event_fmt(copy, len, DEFAULT_MAX, &fmt, &ev, detail, sizeof(detail));
		want.ts_us = fc->want_ts_us;
		ok = r == fc->want && detail_sane(detail, sizeof(detail)) &&
			(fc->detail == NULL || strstr(detail, fc->detail) != NULL) &&
			(r != ADS_OK || memcmp(&ev, &want, sizeof(ev)) == 0);
		if (!ok)
		{
			snprintf(msg, sizeof(msg), "got %s (%s), want %s", ads_reason_name(r), detail,
					 ads_reason_name(fc->want));
			report_failure(fc->name, msg);
		}
		tally(ok);
		free(copy);
	}

	/* orders: mapped, and seconds */
	{
		static const char *const omap[] = {"order_id", "id", "amount", "total.value", "currency", "total.ccy",
		"ts", "at", NULL};
		const char *m = "{\"id\":\"" UUID_TEXT "\",\"user_id\":5,\"store_id\":6,"
			"\"total\":{\"value\":\"12.50\",\"ccy\":\"EUR\"},\"at\":1700000000}";
		AdsOrder	o;
		char		detail[ADS_DETAIL_LEN];

		ok = make_format(&fmt, 1, omap, "epoch_s", err, sizeof(err)) &&
			ads_parse_order_fmt(m, strlen(m), DEFAULT_MAX, &fmt, &o, detail, sizeof(detail)) == ADS_OK &&
			strcmp(o.amount, "12.50") == 0 && strcmp(o.currency, "EUR") == 0 &&
			o.ts_us == INT64_C(1700000000000000) && o.user_id == 5;
		if (!ok)
			report_failure("orders mapped", detail);
		tally(ok);
	}

	/*
	 * Differential: any message wrapped in {"w":{"v": ...}} under the map
	 * "w.v.<field>" gets the default parser's verdict on the bare message,
	 * from duplicate_key on (a bare non-object is an object when wrapped).
	 */
	{
		const char *wpairs[2 * 7 + 1];
		char		paths[7][32];
		int			f,
					bad = 0;
		char	   *work = malloc(4096);
		char	   *wrapped = malloc(4096 + 16);

		for (f = 0; f < 7; f++)
		{
			snprintf(paths[f], sizeof(paths[f]), "w.v.%s", field_key[f]);
			wpairs[2 * f] = field_key[f];
			wpairs[2 * f + 1] = paths[f];
		}
		wpairs[14] = NULL;
		ok = make_format(&fmt, 0, wpairs, NULL, err, sizeof(err));
		for (i = 0; ok && i < (size_t) iterations; i++)
		{
			const char *base = fuzz_bases[xorshift64() % (sizeof(fuzz_bases) / sizeof(fuzz_bases[0]))];
			size_t		len = strlen(base);
			int			nmut = (int) (xorshift64() % 3);
			AdsEvent	e1,
						e2;
			AdsReason	r1,
						r2;
			size_t		wlen;
			char	   *wcopy;

			memcpy(work, base, len);
			while (nmut-- > 0 && len > 0)
				work[xorshift64() % len] = interesting[xorshift64() % (sizeof(interesting) - 1)];
			wlen = wrap_twice(work, len, wrapped);
			wcopy = malloc(wlen);
			memcpy(wcopy, wrapped, wlen);
			memset(&e1, 0, sizeof(e1));
			memset(&e2, 0, sizeof(e2));
			r1 = ads_parse_event(work, len, DEFAULT_MAX, &e1, NULL, 0);
			r2 = ads_parse_event_fmt(wcopy, wlen, DEFAULT_MAX, &fmt, &e2, NULL, 0);
			free(wcopy);
			if (r1 < ADS_R_DUPLICATE_KEY && r1 != ADS_OK)
				continue;
			if (r1 != r2 || (r1 == ADS_OK && memcmp(&e1, &e2, sizeof(e1)) != 0))
			{
				char		msg[200];

				snprintf(msg, sizeof(msg), "iteration %zu: bare %s, wrapped %s", i,
						 ads_reason_name(r1), ads_reason_name(r2));
				report_failure("wrapped mapping agrees with the default", msg);
				bad = 1;
				break;
			}
		}
		tally(ok && !bad);
		free(work);
		free(wrapped);
	}
}

int
main(int argc, char **argv)
{
	int			iterations = 200000;

	if (argc > 1)
		iterations = atoi(argv[1]);

	run_raw_cases();
	run_field_cases();
	run_generated_cases();
	run_detail_cases();
	run_helper_cases();
	run_prefix_checks();
	run_mutation_checks(iterations);
	run_order_cases();
	run_order_generated_cases();
	run_order_prefix_checks();
	run_order_mutation_checks(iterations);
	run_format_cases(iterations);

	if (fail_lines > MAX_FAIL_LINES)
		printf("(%d further failure lines suppressed)\n", fail_lines - MAX_FAIL_LINES);
	printf("%d passed, %d failed\n", n_passed, n_failed);
	return n_failed == 0 ? 0 : 1;
}
