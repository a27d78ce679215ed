/*
 * event_parse.h
 *     Strict, allocation-free parser and validator for adstream's message
 *     contract.  Pure C99: no PostgreSQL headers, so that the same code runs
 *     inside the consumer worker, in unit tests and under a fuzzer.
 *
 * A message is checked in this fixed order, and the first failing check
 * decides the reason (so every rejected message has exactly one reason):
 *
 *   1. empty              value is NULL or zero bytes
 *   2. oversized          len > max_bytes
 *   3. nul_byte           a 0x00 byte anywhere in the value
 *   4. invalid_utf8       not well-formed UTF-8 (overlongs, surrogates and
 *                         code points above U+10FFFF are invalid)
 *   5. invalid_json       not one complete JSON text (RFC 8259), trailing
 *                         garbage, or nesting deeper than ADS_MAX_JSON_DEPTH
 *   6. not_object         the JSON text is not an object
 *   7. duplicate_key      a field the contract reads appears twice at top level
 *   8. field checks, field by field in contract order
 *      (event_id, type, ad_id, campaign_id, user_id, store_id, ts):
 *        missing_field, wrong_type, invalid_uuid, unknown_type,
 *        out_of_range, negative_id, invalid_timestamp
 *
 * future_timestamp and too_late depend on the wall clock and on the
 * source's watermark, so the caller decides them after a successful parse.
 * bad_magic_byte, unknown_schema and invalid_avro are the Avro decoder's
 * (include/avro_format.h), which then applies the field checks of 8.
 */
#ifndef ADSTREAM_EVENT_PARSE_H
#define ADSTREAM_EVENT_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define ADS_MAX_JSON_DEPTH 64
#define ADS_DETAIL_LEN 128

typedef enum AdsReason
{
	ADS_OK = 0,
	ADS_R_EMPTY,
	ADS_R_OVERSIZED,
	ADS_R_NUL_BYTE,
	ADS_R_INVALID_UTF8,
	ADS_R_INVALID_JSON,
	ADS_R_NOT_OBJECT,
	ADS_R_DUPLICATE_KEY,
	ADS_R_MISSING_FIELD,
	ADS_R_WRONG_TYPE,
	ADS_R_INVALID_UUID,
	ADS_R_UNKNOWN_TYPE,
	ADS_R_OUT_OF_RANGE,
	ADS_R_NEGATIVE_ID,
	ADS_R_INVALID_TIMESTAMP,
	ADS_R_INVALID_AMOUNT,		/* orders only */
	ADS_R_INVALID_CURRENCY,		/* orders only */
	ADS_R_BAD_MAGIC_BYTE,		/* Avro: not the Confluent wire format */
	ADS_R_UNKNOWN_SCHEMA,		/* Avro: the registry has no such schema id */
	ADS_R_INVALID_AVRO,			/* Avro: the record does not decode */
	ADS_R_FUTURE_TIMESTAMP,		/* decided by the caller */
	ADS_R_TOO_LATE,				/* decided by the caller */
	ADS_R__COUNT
} AdsReason;

typedef enum AdsEventType
{
	ADS_EV_IMPRESSION = 1,
	ADS_EV_CLICK = 2
} AdsEventType;

typedef struct AdsEvent
{
	uint8_t		event_id[16];	/* UUID bytes in network order */
	AdsEventType type;
	int64_t		ad_id;
	int64_t		campaign_id;
	int64_t		user_id;
	int64_t		store_id;
	int64_t		ts_us;			/* microseconds since 1970-01-01T00:00:00Z */
} AdsEvent;

/*
 * An order (kind 'orders').  Its contract, checked with the same precedence
 * rules, field by field in this order: order_id (canonical UUID), user_id,
 * store_id (non-negative int64), amount (a non-negative decimal: a JSON
 * number without exponent, or a string holding one; at most 18 integer and 9
 * fraction digits), currency (a string of exactly three upper-case ASCII
 * letters, ISO 4217 style), ts (as for events).
 */
#define ADS_AMOUNT_LEN 32

typedef struct AdsOrder
{
	uint8_t		order_id[16];
	int64_t		user_id;
	int64_t		store_id;
	char		amount[ADS_AMOUNT_LEN];	/* canonical decimal text, NUL-terminated */
	char		currency[4];	/* NUL-terminated */
	int64_t		ts_us;
} AdsOrder;

/* Lowest and highest accepted event time: 1970-01-01 .. 9999-12-31T23:59:59.999999Z */
#define ADS_TS_MIN_US INT64_C(0)
#define ADS_TS_MAX_US INT64_C(253402300799999999)

/* Stable lower-case reason code ("invalid_json", ...); "ok" for ADS_OK. */
const char *ads_reason_name(AdsReason reason);

/*
 * Parse and validate one message value.  Returns ADS_OK and fills *out, or a
 * reason and a short NUL-terminated ASCII detail (at most detail_len bytes,
 * never containing bytes copied from the input other than printable ASCII),
 * e.g. "missing field \"ad_id\"".  Never reads outside buf[0..len), never
 * allocates, never aborts.  buf may be NULL when len is 0.
 */
AdsReason	ads_parse_event(const char *buf, size_t len, size_t max_bytes,
							AdsEvent *out, char *detail, size_t detail_len);

/* The same for an order value. */
AdsReason	ads_parse_order(const char *buf, size_t len, size_t max_bytes,
							AdsOrder *out, char *detail, size_t detail_len);

/* ---------------------------------------------------------------------
 * Input formats: where the contract's fields are, and the unit of ts
 * ---------------------------------------------------------------------
 *
 * By default a contract field is the top-level member of its own name, and
 * a numeric ts is epoch milliseconds.  A source may map each field to a
 * path of member names ("payload.ad.id": member "id" of the object in
 * member "ad" of the object in top-level member "payload"), and choose the
 * unit of a numeric ts.  The mapping is compiled once (ads_format_*) into a
 * small trie that the JSON scanner follows while it validates the syntax,
 * so a mapped message is still read in one pass without allocation, and a
 * source without a mapping runs the same code as before.  Everything else
 * is unchanged: the order of the checks, the reasons, and the rule that
 * members nobody maps are ignored.  A duplicate_key is any member on a
 * mapped path (a field or an object on the way) given twice.  Details name
 * the field by its path as the producer writes it.
 */
typedef enum AdsTsFormat
{
	ADS_TS_EPOCH_MS = 0,		/* integer epoch ms, or an RFC 3339 string (default) */
	ADS_TS_EPOCH_S,				/* integer epoch seconds, or an RFC 3339 string */
	ADS_TS_EPOCH_US,			/* integer epoch microseconds, or an RFC 3339 string */
	ADS_TS_RFC3339				/* an RFC 3339 string only; a number is wrong_type */
} AdsTsFormat;

#define ADS_MAX_CONTRACT_FIELDS 7
#define ADS_MAP_MAX_SEGMENTS 8		/* members in a path */
#define ADS_MAP_NAME_MAX 64			/* bytes of one member name */
#define ADS_MAP_PATH_MAX 160		/* bytes of a whole path */
#define ADS_MAP_MAX_NODES 64		/* distinct path prefixes, root included */

typedef struct AdsMapNode
{
	int16_t		parent;			/* -1 for the root */
	int16_t		first_child;	/* -1 if none */
	int16_t		next_sibling;	/* -1 if none */
	int16_t		field;			/* contract field whose value this is, or -1 */
	uint16_t	len;
	char		name[ADS_MAP_NAME_MAX];
} AdsMapNode;

typedef struct AdsFormat
{
	int			is_orders;
	int			mapped;			/* some field is not its own top-level member */
	AdsTsFormat ts_format;
	int			nfields;
	char		path[ADS_MAX_CONTRACT_FIELDS][ADS_MAP_PATH_MAX];	/* NUL-terminated */
	int			nnodes;			/* 0 until ads_format_finish() */
	AdsMapNode	node[ADS_MAP_MAX_NODES];	/* node[0] is the root */
} AdsFormat;

/* Every field at its own name, ts in epoch milliseconds (today's contract). */
void		ads_format_init(AdsFormat *fmt, int is_orders);

/*
 * Map contract field "field" to "path" (member names joined by '.').  Each
 * returns 1, or 0 with a message in err: an unknown field, an empty or too
 * long path or member name, a control character.
 */
int			ads_format_set_field(AdsFormat *fmt, const char *field, const char *path,
								 char *err, size_t err_len);
/* "epoch_ms" (the default), "epoch_s", "epoch_us" or "rfc3339". */
int			ads_format_set_ts(AdsFormat *fmt, const char *ts_format, char *err, size_t err_len);
/* Builds the trie; 0 with err when two paths are equal or one lies inside another. */
int			ads_format_finish(AdsFormat *fmt, char *err, size_t err_len);

/* The contract: how many fields, and field f's name ("event_id", ...). */
int			ads_contract_nfields(int is_orders);
const char *ads_contract_field(int is_orders, int f);
const char *ads_ts_format_name(AdsTsFormat f);

/*
 * ads_parse_event() and ads_parse_order() under a compiled format; fmt NULL
 * is the default.  Same guarantees.
 */
AdsReason	ads_parse_event_fmt(const char *buf, size_t len, size_t max_bytes,
								const AdsFormat *fmt, AdsEvent *out,
								char *detail, size_t detail_len);
AdsReason	ads_parse_order_fmt(const char *buf, size_t len, size_t max_bytes,
								const AdsFormat *fmt, AdsOrder *out,
								char *detail, size_t detail_len);

/*
 * The field checks on values another decoder (Avro) has already typed, with
 * the JSON parser's reasons and details; name is the field as the producer
 * calls it.  Each returns ADS_OK and stores the value, or the reason.
 */
AdsReason	ads_check_uuid_text(const char *s, size_t n, const char *name,
								uint8_t id[16], char *detail, size_t detail_len);
AdsReason	ads_check_type_text(const char *s, size_t n, const char *name,
								AdsEventType *type, char *detail, size_t detail_len);
AdsReason	ads_check_id_value(int64_t v, const char *name, int64_t *out,
							   char *detail, size_t detail_len);
AdsReason	ads_check_ts_value(int64_t v, AdsTsFormat unit, const char *name,
							   int64_t *ts_us, char *detail, size_t detail_len);
AdsReason	ads_check_ts_text(const char *s, size_t n, const char *name,
							  int64_t *ts_us, char *detail, size_t detail_len);
AdsReason	ads_field_reason(AdsReason r, const char *name, const char *what,
							 char *detail, size_t detail_len);

/* Helpers shared with the rest of the code. */
int			ads_utf8_valid(const char *buf, size_t len);
int			ads_parse_uuid(const char *s, size_t len, uint8_t out[16]);	/* 1 = ok */
int			ads_parse_rfc3339(const char *s, size_t len, int64_t *ts_us);	/* 1 = ok */
void		ads_format_uuid(const uint8_t id[16], char out[37]);

#endif
