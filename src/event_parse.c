/*
 * event_parse.c
 *     Strict, allocation-free parser and validator for adstream's message
 *     contract.  See include/event_parse.h for the contract and the order in
 *     which checks are applied.
 *
 * Design notes
 * ------------
 * This runs once per consumed message (around a million times a second), so
 * the common case -- a well-formed, valid event -- is handled in a single
 * left-to-right pass over the bytes:
 *
 *   - The JSON scanner validates the complete syntax of the value, including
 *     every nested value we do not care about, without recursion: nesting is
 *     tracked with a depth counter and a 64-bit mask recording whether each
 *     open container is an object or an array (ADS_MAX_JSON_DEPTH is 64, so
 *     one bit per level fits exactly).
 *
 *   - While scanning, the top-level object's keys are matched against the
 *     fields of the message kind's contract (seven for events, six for
 *     orders) and the byte span of each matching value is remembered.  The
 *     typed field checks then only look at those spans.  The scanner is
 *     written once and inlined into each parser with the contract as a
 *     constant, so the event parser pays nothing for the order contract:
 *     key matching stays a switch on the key length.
 *
 *   - NUL bytes and UTF-8 well-formedness are not checked in a separate pass.
 *     Outside strings, JSON only allows printable ASCII, so a NUL byte or any
 *     byte >= 0x80 there is already a syntax error; inside strings, the
 *     scanner rejects control characters (which includes NUL) and validates
 *     each multi-byte UTF-8 sequence it meets.  Hence a successful scan
 *     proves there is no NUL byte and that the value is valid UTF-8.  Only
 *     when the scan fails do we run the (fused) NUL/UTF-8 pass over the whole
 *     value, because those reasons take priority over invalid_json and may be
 *     located after the syntax error.
 *
 * Every read of the input is bounds-checked against len; the input is not
 * NUL-terminated.  Nothing here allocates, and no input bytes are ever copied
 * into the detail message (only byte offsets and contract field names).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "event_parse.h"

/*
 * Contracts.  Each message kind has a fixed list of fields, numbered in the
 * order in which they are checked.  The scanner is shared; only the key
 * matcher (a switch on the key length, see match_event_field() and
 * match_order_field()) and the field checks differ.
 */
enum
{
	C_EVENT,
	C_ORDER,
	C_MAPPED					/* either contract, under a field mapping */
};

/* Event contract fields, in the order in which they are checked. */
enum
{
	F_EVENT_ID = 0,
	F_TYPE,
	F_AD_ID,
	F_CAMPAIGN_ID,
	F_USER_ID,
	F_STORE_ID,
	F_TS,
	F__COUNT
};

/* Order contract fields, in the order in which they are checked. */
enum
{
	O_ORDER_ID = 0,
	O_USER_ID,
	O_STORE_ID,
	O_AMOUNT,
	O_CURRENCY,
	O_TS,
	O__COUNT
};

/* Room for the larger contract; "seen" is a bit mask, so at most 32. */
#define MAX_FIELDS 7

static const char *const event_field_names[F__COUNT] = {
	"event_id", "type", "ad_id", "campaign_id", "user_id", "store_id", "ts"
};

static const char *const order_field_names[O__COUNT] = {
	"order_id", "user_id", "store_id", "amount", "currency", "ts"
};

static const char *const reason_names[] = {
	"ok",
	"empty",
	"oversized",
	"nul_byte",
	"invalid_utf8",
	"invalid_json",
	"not_object",
	"duplicate_key",
	"missing_field",
	"wrong_type",
	"invalid_uuid",
	"unknown_type",
	"out_of_range",
	"negative_id",
	"invalid_timestamp",
	"invalid_amount",
	"invalid_currency",
	"bad_magic_byte",
	"unknown_schema",
	"invalid_avro",
	"future_timestamp",
	"too_late"
};

/* Compile-time checks (C99 has no _Static_assert): one name per reason. */
typedef char reason_names_match_enum
			[(sizeof(reason_names) / sizeof(reason_names[0]) == ADS_R__COUNT) ? 1 : -1];
typedef char contracts_fit
			[(F__COUNT <= MAX_FIELDS && O__COUNT <= MAX_FIELDS &&
			  MAX_FIELDS == ADS_MAX_CONTRACT_FIELDS) ? 1 : -1];
typedef char map_nodes_fit[(ADS_MAP_MAX_NODES <= 64) ? 1 : -1];	/* a uint64_t mask */

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/*
 * Longest decoded string we ever need to look at: a canonical UUID is 36
 * bytes and the longest RFC 3339 form we accept is 35 bytes.  Anything that
 * decodes to more than this cannot be valid, so the decoder just gives up.
 */
#define DECODE_CAP 64

/* Longest contract key ("campaign_id", 11 bytes); longer keys cannot match. */
#define KEY_CAP 16

#define ONES	UINT64_C(0x0101010101010101)
#define HIGHS	UINT64_C(0x8080808080808080)

/* Nonzero iff some byte of v is zero (exact for the "any" question). */
#define HAS_ZERO_BYTE(v)	(((v) - ONES) & ~(v) & HIGHS)

/* Nonzero iff some byte of v is < n, for n <= 0x80. */
#define HAS_LESS_BYTE(v, n)	(((v) - ONES * (n)) & ~(v) & HIGHS)

/* The 2^63 magnitude of INT64_MIN, without relying on signed overflow. */
#define INT64_MIN_MAGNITUDE ((uint64_t) INT64_MAX + 1)

/*
 * Result of the syntax scan.  span[f] is valid only if bit f of "seen" is
 * set; start/end delimit the raw JSON value (quotes included for strings).
 */
typedef struct FieldSpan
{
	size_t		start;
	size_t		end;
	int			escaped;		/* string value contains backslash escapes */
} FieldSpan;

typedef struct JsonScan
{
	/* error reporting for invalid_json */
	const char *err_msg;		/* static text, formatted with err_pos */
	size_t		err_pos;
	int			err_depth;		/* nesting limit exceeded */

	int			top_is_object;
	unsigned	seen;			/* bit f: contract field f present */
	int			dup_field;		/* first duplicated contract field or -1 */
	int			dup_node;		/* C_MAPPED: its mapping node, or -1 */
	FieldSpan	span[MAX_FIELDS];
} JsonScan;


const char *
ads_reason_name(AdsReason reason)
{
	if ((int) reason < 0 || reason >= ADS_R__COUNT)
		return "unknown";
	return reason_names[reason];
}

#if defined(__GNUC__)
static void set_detail(char *detail, size_t detail_len, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
#endif

/*
 * Write a detail message.  vsnprintf truncates and always NUL-terminates
 * when size > 0; with detail_len == 0 we must not touch the buffer at all.
 */
static void
set_detail(char *detail, size_t detail_len, const char *fmt,...)
{
	va_list		ap;

	if (detail == NULL || detail_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(detail, detail_len, fmt, ap);
	va_end(ap);
}

/*
 * Length of the well-formed UTF-8 sequence starting at s (whose first byte
 * is >= 0x80), or 0 if it is not well-formed.  Follows Table 3-7 of the
 * Unicode standard, which excludes overlong forms, UTF-16 surrogates
 * (U+D800..U+DFFF) and code points above U+10FFFF, and never looks past
 * avail bytes, so truncated sequences are rejected.
 */
static inline size_t
utf8_seq_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80,
				hi = 0xBF;
	size_t		n;

	if (c < 0xC2)
		return 0;				/* continuation byte, or overlong C0/C1 */
	if (c < 0xE0)
		n = 2;
	else if (c < 0xF0)
	{
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;			/* overlong */
		else if (c == 0xED)
			hi = 0x9F;			/* surrogates */
	}
	else if (c < 0xF5)
	{
		n = 4;
		if (c == 0xF0)
			lo = 0x90;			/* overlong */
		else if (c == 0xF4)
			hi = 0x8F;			/* above U+10FFFF */
	}
	else
		return 0;

	if (avail < n)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	if (n >= 3 && (s[2] & 0xC0) != 0x80)
		return 0;
	if (n == 4 && (s[3] & 0xC0) != 0x80)
		return 0;
	return n;
}

int
ads_utf8_valid(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t		i = 0;

	if (s == NULL)
		return len == 0;

	while (i < len)
	{
		/* ASCII fast path: 8 bytes at a time */
		if (len - i >= 8)
		{
			uint64_t	v;

			memcpy(&v, s + i, 8);
			if ((v & HIGHS) == 0)
			{
				i += 8;
				continue;
			}
		}
		if (s[i] < 0x80)
			i++;
		else
		{
			size_t		n = utf8_seq_len(s + i, len - i);

			if (n == 0)
				return 0;
			i += n;
		}
	}
	return 1;
}

/*
 * Fused NUL / UTF-8 check, used only after the JSON scan failed to decide
 * whether a higher-priority reason applies.  Returns ADS_OK,
 * ADS_R_NUL_BYTE or ADS_R_INVALID_UTF8 and the offending offset.  A NUL
 * anywhere beats invalid UTF-8 anywhere, so after the first UTF-8 error we
 * still have to look for a NUL in the rest.
 */
static AdsReason
scan_nul_utf8(const unsigned char *s, size_t len, size_t *where)
{
	size_t		i = 0;

	while (i < len)
	{
		if (len - i >= 8)
		{
			uint64_t	v;

			memcpy(&v, s + i, 8);
			if ((v & HIGHS) == 0 && !HAS_ZERO_BYTE(v))
			{
				i += 8;
				continue;
			}
		}
		if (s[i] == 0)
		{
			*where = i;
			return ADS_R_NUL_BYTE;
		}
		if (s[i] < 0x80)
			i++;
		else
		{
			size_t		n = utf8_seq_len(s + i, len - i);

			if (n == 0)
			{
				const unsigned char *z = memchr(s + i, 0, len - i);

				if (z != NULL)
				{
					*where = (size_t) (z - s);
					return ADS_R_NUL_BYTE;
				}
				*where = i;
				return ADS_R_INVALID_UTF8;
			}
			i += n;
		}
	}
	return ADS_OK;
}

static inline int
hex_value(unsigned int c)
{
	if (c - '0' < 10)
		return (int) (c - '0');
	c |= 0x20;					/* fold to lower case */
	if (c - 'a' < 6)
		return (int) (c - 'a' + 10);
	return -1;
}

static inline int
is_digit(unsigned char c)
{
	return (unsigned int) (c - '0') < 10;
}

/* A byte a JSON string scanner must stop at: '"', '\\', < 0x20 or >= 0x80. */
static inline int
is_string_special(unsigned char c)
{
	return (unsigned int) (c - 0x20) >= 0x60 || c == '"' || c == '\\';
}

#define SKIP_WS(s, p, len) \
	while ((p) < (len) && \
		   ((s)[p] == ' ' || (s)[p] == '\t' || (s)[p] == '\n' || (s)[p] == '\r')) \
		(p)++

static inline int
scan_fail(JsonScan *js, const char *msg, size_t pos)
{
	js->err_msg = msg;
	js->err_pos = pos;
	return 0;
}

/*
 * Scan a JSON string starting at the opening quote s[*pp].  On success
 * leaves *pp just past the closing quote and sets *escaped if the string
 * contains any backslash escape.  Validates escapes, rejects raw control
 * characters and validates UTF-8 sequences.
 */
static inline int
scan_string(JsonScan *js, const unsigned char *s, size_t len, size_t *pp,
			int *escaped)
{
	size_t		p = *pp + 1;
	int			esc = 0;

	for (;;)
	{
		unsigned char c;

		/*
		 * Skip 8 ordinary bytes at a time; a word containing anything
		 * special falls through to the byte loop, which then stops within
		 * those 8 bytes.
		 */
		while (len - p >= 8)
		{
			uint64_t	v;

			memcpy(&v, s + p, 8);
			if ((HAS_ZERO_BYTE(v ^ (ONES * '"')) |
				 HAS_ZERO_BYTE(v ^ (ONES * '\\')) |
				 HAS_LESS_BYTE(v, 0x20) |
				 (v & HIGHS)) != 0)
				break;
			p += 8;
		}
		while (p < len && !is_string_special(s[p]))
			p++;
		if (p >= len)
			return scan_fail(js, "unterminated string starting at byte", *pp);

		c = s[p];
		if (c == '"')
		{
			*pp = p + 1;
			*escaped = esc;
			return 1;
		}
		else if (c == '\\')
		{
			if (len - p < 2)
				return scan_fail(js, "unterminated string starting at byte", *pp);
			esc = 1;
			switch (s[p + 1])
			{
				case '"':
				case '\\':
				case '/':
				case 'b':
				case 'f':
				case 'n':
				case 'r':
				case 't':
					p += 2;
					break;
				case 'u':
					if (len - p < 6 ||
						hex_value(s[p + 2]) < 0 || hex_value(s[p + 3]) < 0 ||
						hex_value(s[p + 4]) < 0 || hex_value(s[p + 5]) < 0)
						return scan_fail(js, "invalid \\u escape at byte", p);
					p += 6;
					break;
				default:
					return scan_fail(js, "invalid escape at byte", p);
			}
		}
		else if (c < 0x20)
			return scan_fail(js, "control character in string at byte", p);
		else
		{
			/* c >= 0x80: must start a well-formed UTF-8 sequence */
			size_t		n = utf8_seq_len(s + p, len - p);

			if (n == 0)
				return scan_fail(js, "invalid UTF-8 at byte", p);
			p += n;
		}
	}
}

/*
 * Decode the contents of a syntactically valid JSON string (without the
 * quotes) into out.  Returns 0 if the result would exceed cap bytes or if a
 * \u escape denotes an unpaired surrogate; such a string cannot equal any
 * value we compare against, and callers treat 0 as "no match".
 */
static int
decode_string(const unsigned char *s, size_t n, char *out, size_t cap,
			  size_t *outlen)
{
	size_t		i = 0,
				o = 0;

	while (i < n)
	{
		unsigned char c = s[i];
		uint32_t	cp;

		if (c != '\\')
		{
			if (o >= cap)
				return 0;
			out[o++] = (char) c;
			i++;
			continue;
		}

		/* the scanner guaranteed a complete, valid escape here */
		switch (s[i + 1])
		{
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u':
				cp = (uint32_t) ((hex_value(s[i + 2]) << 12) |
								 (hex_value(s[i + 3]) << 8) |
								 (hex_value(s[i + 4]) << 4) |
								 hex_value(s[i + 5]));
				i += 4;			/* plus 2 below */
				if (cp >= 0xDC00 && cp <= 0xDFFF)
					return 0;	/* lone low surrogate */
				if (cp >= 0xD800 && cp <= 0xDBFF)
				{
					uint32_t	lo;

					/* must be followed immediately by \uDC00..\uDFFF */
					if (n - (i + 2) < 6 || s[i + 2] != '\\' || s[i + 3] != 'u')
						return 0;
					lo = (uint32_t) ((hex_value(s[i + 4]) << 12) |
									 (hex_value(s[i + 5]) << 8) |
									 (hex_value(s[i + 6]) << 4) |
									 hex_value(s[i + 7]));
					if (lo < 0xDC00 || lo > 0xDFFF)
						return 0;
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				}
				break;
			default:
				/* '"', '\\' and '/' stand for themselves */
				cp = s[i + 1];
				break;
		}
		i += 2;

		/* emit cp as UTF-8 */
		if (cp < 0x80)
		{
			if (cap - o < 1)
				return 0;
			out[o++] = (char) cp;
		}
		else if (cp < 0x800)
		{
			if (cap - o < 2)
				return 0;
			out[o++] = (char) (0xC0 | (cp >> 6));
			out[o++] = (char) (0x80 | (cp & 0x3F));
		}
		else if (cp < 0x10000)
		{
			if (cap - o < 3)
				return 0;
			out[o++] = (char) (0xE0 | (cp >> 12));
			out[o++] = (char) (0x80 | ((cp >> 6) & 0x3F));
			out[o++] = (char) (0x80 | (cp & 0x3F));
		}
		else
		{
			if (cap - o < 4)
				return 0;
			out[o++] = (char) (0xF0 | (cp >> 18));
			out[o++] = (char) (0x80 | ((cp >> 12) & 0x3F));
			out[o++] = (char) (0x80 | ((cp >> 6) & 0x3F));
			out[o++] = (char) (0x80 | (cp & 0x3F));
		}
	}
	*outlen = o;
	return 1;
}

/* Map a decoded top-level key to an event contract field index, or -1. */
static inline int
match_event_field(const char *k, size_t n)
{
	switch (n)
	{
		case 2:
			return (k[0] == 't' && k[1] == 's') ? F_TS : -1;
		case 4:
			return memcmp(k, "type", 4) == 0 ? F_TYPE : -1;
		case 5:
			return memcmp(k, "ad_id", 5) == 0 ? F_AD_ID : -1;
		case 7:
			return memcmp(k, "user_id", 7) == 0 ? F_USER_ID : -1;
		case 8:
			if (memcmp(k, "event_id", 8) == 0)
				return F_EVENT_ID;
			if (memcmp(k, "store_id", 8) == 0)
				return F_STORE_ID;
			return -1;
		case 11:
			return memcmp(k, "campaign_id", 11) == 0 ? F_CAMPAIGN_ID : -1;
		default:
			return -1;
	}
}

/* The same for the order contract. */
static inline int
match_order_field(const char *k, size_t n)
{
	switch (n)
	{
		case 2:
			return (k[0] == 't' && k[1] == 's') ? O_TS : -1;
		case 6:
			return memcmp(k, "amount", 6) == 0 ? O_AMOUNT : -1;
		case 7:
			return memcmp(k, "user_id", 7) == 0 ? O_USER_ID : -1;
		case 8:
			switch (k[0])
			{
				case 'o':
					return memcmp(k, "order_id", 8) == 0 ? O_ORDER_ID : -1;
				case 's':
					return memcmp(k, "store_id", 8) == 0 ? O_STORE_ID : -1;
				case 'c':
					return memcmp(k, "currency", 8) == 0 ? O_CURRENCY : -1;
				default:
					return -1;
			}
		default:
			return -1;
	}
}

/*
 * contract is always a compile-time constant at the call sites, and the
 * callers are always inlined, so each parser gets its own copy of the
 * scanner with the other contract's matcher folded away.
 */
static ALWAYS_INLINE int
match_field(int contract, const char *k, size_t n)
{
	return contract == C_EVENT ? match_event_field(k, n) : match_order_field(k, n);
}

/* C_MAPPED: the child of mapping node "parent" named k[0..n), or -1. */
static inline int
match_child(const AdsFormat *fmt, int parent, const char *k, size_t n)
{
	int			c;

	for (c = fmt->node[parent].first_child; c >= 0; c = fmt->node[c].next_sibling)
		if (fmt->node[c].len == n && memcmp(fmt->node[c].name, k, n) == 0)
			return c;
	return -1;
}

/*
 * Validate that s[0..len) is exactly one JSON text, recording the spans of
 * the fields of the given contract in a top-level object.  Returns 1 if the
 * syntax is valid, else 0 with js->err_* set.
 *
 * Under C_MAPPED (fmt given), fields are found by following fmt's trie
 * instead: node_at[d] is the node whose children the keys of the object at
 * depth d are matched against (-1: that object is off every mapped path),
 * and child_node carries a matched inner node from its key to the '{' of
 * its value.  The member whose value is pending may then be at any depth up
 * to ADS_MAP_MAX_SEGMENTS (pdepth).  For the fixed contracts pdepth is the
 * constant 1 and all of this folds away.
 *
 * The scanner is a small state machine (the labels below) instead of a
 * recursive descent parser, so that hostile nesting costs no stack; the
 * container stack is the bit mask "objmask", where bit (d - 1) is set when
 * the container at depth d is an object.
 */
static ALWAYS_INLINE int
json_scan(JsonScan *js, const unsigned char *s, size_t len, const int contract,
		  const AdsFormat *fmt)
{
	size_t		p = 0;
	int			depth = 0;
	uint64_t	objmask = 0;
	int			pending = -1;	/* contract field whose value comes next */
	int			start_of = -1;	/* ditto, until its value's start is known */
	int			escaped;
	int			pdepth = 1;		/* depth of the pending member */
	int			child_node = 0; /* C_MAPPED: the root, for the top-level object */
	int			node_at[ADS_MAP_MAX_SEGMENTS + 1];
	uint64_t	nodes_seen = 0;

	js->top_is_object = 0;
	js->seen = 0;
	js->dup_field = -1;
	js->dup_node = -1;
	js->err_depth = 0;

	SKIP_WS(s, p, len);
	if (p < len && s[p] == '{')
		js->top_is_object = 1;

value:
	if (p >= len)
		return scan_fail(js, "unexpected end of input at byte", p);
	switch (s[p])
	{
		case '{':
			if (depth >= ADS_MAX_JSON_DEPTH)
			{
				js->err_depth = 1;
				return scan_fail(js, "JSON nesting too deep at byte", p);
			}
			objmask |= (uint64_t) 1 << depth;
			depth++;
			p++;
			if (contract == C_MAPPED)
			{
				if (depth <= ADS_MAP_MAX_SEGMENTS)
					node_at[depth] = child_node;
				child_node = -1;
			}
			SKIP_WS(s, p, len);
			if (p < len && s[p] == '}')
			{
				p++;
				depth--;
				goto after_value;
			}
			goto key;

		case '[':
			if (depth >= ADS_MAX_JSON_DEPTH)
			{
				js->err_depth = 1;
				return scan_fail(js, "JSON nesting too deep at byte", p);
			}
			objmask &= ~((uint64_t) 1 << depth);
			depth++;
			p++;
			if (contract == C_MAPPED)
				child_node = -1;	/* no path goes through an array */
			SKIP_WS(s, p, len);
			if (p < len && s[p] == ']')
			{
				p++;
				depth--;
				goto after_value;
			}
			goto value;

		case '"':
			if (!scan_string(js, s, len, &p, &escaped))
				return 0;
			if (pending >= 0 && depth == pdepth)
				js->span[pending].escaped = escaped;
			goto after_value;

		case '-':
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7':
		case '8':
		case '9':
			/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
			if (s[p] == '-')
			{
				p++;
				if (p >= len)
					return scan_fail(js, "unexpected end of input at byte", p);
			}
			if (s[p] == '0')
				p++;
			else if (is_digit(s[p]))
			{
				p++;
				while (p < len && is_digit(s[p]))
					p++;
			}
			else
				return scan_fail(js, "invalid number at byte", p);
			if (p < len && s[p] == '.')
			{
				p++;
				if (p >= len || !is_digit(s[p]))
					return scan_fail(js, "invalid number at byte", p);
				while (p < len && is_digit(s[p]))
					p++;
			}
			if (p < len && (s[p] == 'e' || s[p] == 'E'))
			{
				p++;
				if (p < len && (s[p] == '+' || s[p] == '-'))
					p++;
				if (p >= len || !is_digit(s[p]))
					return scan_fail(js, "invalid number at byte", p);
				while (p < len && is_digit(s[p]))
					p++;
			}
			goto after_value;

		case 't':
			if (len - p < 4 || memcmp(s + p, "true", 4) != 0)
				return scan_fail(js, "invalid literal at byte", p);
			p += 4;
			goto after_value;

		case 'f':
			if (len - p < 5 || memcmp(s + p, "false", 5) != 0)
				return scan_fail(js, "invalid literal at byte", p);
			p += 5;
			goto after_value;

		case 'n':
			if (len - p < 4 || memcmp(s + p, "null", 4) != 0)
				return scan_fail(js, "invalid literal at byte", p);
			p += 4;
			goto after_value;

		default:
			return scan_fail(js, "unexpected character at byte", p);
	}

after_value:
	/* a top-level (mapped) member's value, scalar or container, just ended */
	if (contract == C_MAPPED)
		child_node = -1;
	if (depth == pdepth && pending >= 0)
	{
		js->span[pending].end = p;
		pending = -1;
	}
	if (depth == 0)
	{
		SKIP_WS(s, p, len);
		if (p != len)
			return scan_fail(js, "unexpected trailing characters at byte", p);
		return 1;
	}
	SKIP_WS(s, p, len);
	if (p >= len)
		return scan_fail(js, "unexpected end of input at byte", p);
	if (s[p] == ',')
	{
		p++;
		SKIP_WS(s, p, len);
		if (objmask & ((uint64_t) 1 << (depth - 1)))
			goto key;
		goto value;
	}
	if (objmask & ((uint64_t) 1 << (depth - 1)))
	{
		if (s[p] != '}')
			return scan_fail(js, "expected ',' or '}' at byte", p);
	}
	else if (s[p] != ']')
		return scan_fail(js, "expected ',' or ']' at byte", p);
	p++;
	depth--;
	goto after_value;

key:
	/* p is at the start of an object member (whitespace already skipped) */
	if (p >= len)
		return scan_fail(js, "unexpected end of input at byte", p);
	if (s[p] != '"')
		return scan_fail(js, "expected string key at byte", p);
	{
		size_t		kstart = p + 1;

		if (!scan_string(js, s, len, &p, &escaped))
			return 0;
		if (contract == C_MAPPED)
		{
			if (depth <= ADS_MAP_MAX_SEGMENTS && node_at[depth] >= 0)
			{
				const unsigned char *k = s + kstart;
				size_t		klen = p - 1 - kstart;
				int			nd;

				if (escaped)
				{
					char		kbuf[ADS_MAP_NAME_MAX];
					size_t		n;

					nd = decode_string(k, klen, kbuf, sizeof(kbuf), &n) ?
						match_child(fmt, node_at[depth], kbuf, n) : -1;
				}
				else
					nd = match_child(fmt, node_at[depth], (const char *) k, klen);

				if (nd >= 0)
				{
					if (nodes_seen & ((uint64_t) 1 << nd))
					{
						if (js->dup_node < 0)
							js->dup_node = nd;
					}
					else
					{
						int			f = fmt->node[nd].field;

						nodes_seen |= (uint64_t) 1 << nd;
						if (f >= 0)
						{
							js->seen |= 1u << f;
							pending = f;
							pdepth = depth;
							start_of = f;
							js->span[f].escaped = 0;
						}
						else
							child_node = nd;
					}
				}
			}
		}
		else if (depth == 1)
		{
			const unsigned char *k = s + kstart;
			size_t		klen = p - 1 - kstart;
			int			f;

			if (escaped)
			{
				char		kbuf[KEY_CAP];
				size_t		n;

				f = decode_string(k, klen, kbuf, sizeof(kbuf), &n) ?
					match_field(contract, kbuf, n) : -1;
			}
			else
				f = match_field(contract, (const char *) k, klen);

			if (f >= 0)
			{
				if (js->seen & (1u << f))
				{
					/* keep the first occurrence; report the first dup */
					if (js->dup_field < 0)
						js->dup_field = f;
				}
				else
				{
					js->seen |= 1u << f;
					pending = f;
					start_of = f;
					js->span[f].escaped = 0;
				}
			}
		}
	}
	SKIP_WS(s, p, len);
	if (p >= len)
		return scan_fail(js, "unexpected end of input at byte", p);
	if (s[p] != ':')
		return scan_fail(js, "expected ':' at byte", p);
	p++;
	SKIP_WS(s, p, len);
	/*
	 * Not "pending": that stays set while we are inside the member's value,
	 * and keys nested there must not move the start of its span.
	 */
	if (start_of >= 0)
	{
		js->span[start_of].start = p;
		start_of = -1;
	}
	goto value;
}

/*
 * Parse an integer JSON number span (already known to be a syntactically
 * valid number).  Returns 0 and sets *val for an integer literal within
 * int64, 1 if the number has a fraction or exponent, 2 if it is an integer
 * literal outside int64.
 */
static int
parse_int_span(const unsigned char *s, size_t n, int64_t *val)
{
	size_t		i = 0,
				first;
	int			neg = 0;
	uint64_t	mag = 0;

	if (i < n && s[i] == '-')
	{
		neg = 1;
		i++;
	}
	first = i;
	while (i < n && is_digit(s[i]))
		i++;
	if (i != n)
		return 1;				/* '.', 'e' or 'E' follows the digits */

	/*
	 * Leading zeros are impossible in valid JSON, so more than 19 digits is
	 * at least 10^19 > 2^63: out of range.  19 digits always fit in uint64.
	 */
	if (n - first > 19)
		return 2;
	for (i = first; i < n; i++)
		mag = mag * 10 + (uint64_t) (s[i] - '0');

	if (neg)
	{
		if (mag > INT64_MIN_MAGNITUDE)
			return 2;
		*val = (mag == INT64_MIN_MAGNITUDE) ? INT64_MIN : -(int64_t) mag;
	}
	else
	{
		if (mag > (uint64_t) INT64_MAX)
			return 2;
		*val = (int64_t) mag;
	}
	return 0;
}

/*
 * Get the decoded bytes of a string field.  Unescaped strings are used in
 * place; escaped ones are decoded into buf.  Returns 0 if the decoded value
 * cannot be a valid value (too long, or an unpaired surrogate).
 */
static int
field_string(const unsigned char *s, const FieldSpan *sp, char *buf,
			 const char **str, size_t *n)
{
	const unsigned char *body = s + sp->start + 1;
	size_t		blen = sp->end - sp->start - 2;

	if (!sp->escaped)
	{
		*str = (const char *) body;
		*n = blen;
		return 1;
	}
	*str = buf;
	return decode_string(body, blen, buf, DECODE_CAP, n);
}

int
ads_parse_uuid(const char *s, size_t len, uint8_t out[16])
{
	/* offset of each byte's high nibble in the canonical 8-4-4-4-12 form */
	static const uint8_t pos[16] = {
		0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34
	};
	uint8_t		tmp[16];
	int			i;

	if (s == NULL || len != 36 ||
		s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-')
		return 0;
	for (i = 0; i < 16; i++)
	{
		int			hi = hex_value((unsigned char) s[pos[i]]);
		int			lo = hex_value((unsigned char) s[pos[i] + 1]);

		if (hi < 0 || lo < 0)
			return 0;
		tmp[i] = (uint8_t) ((hi << 4) | lo);
	}
	memcpy(out, tmp, 16);
	return 1;
}

void
ads_format_uuid(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int			i,
				o = 0;

	for (i = 0; i < 16; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[id[i] >> 4];
		out[o++] = hex[id[i] & 0x0F];
	}
	out[o] = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (any year >= 0). */
static int64_t
days_from_civil(int y, int m, int d)
{
	int64_t		era,
				yoe,
				doy,
				doe;

	y -= (m <= 2);
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static inline int
two_digits(const char *s, int *v)
{
	if (!is_digit((unsigned char) s[0]) || !is_digit((unsigned char) s[1]))
		return 0;
	*v = (s[0] - '0') * 10 + (s[1] - '0');
	return 1;
}

/*
 * Parse YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM) into UTC
 * microseconds since the epoch (fraction truncated to microseconds).
 * Returns 1 if well-formed (the result may lie outside the accepted range;
 * any 4-digit year fits comfortably in int64 microseconds), else 0.
 */
static int
rfc3339_to_us(const char *s, size_t len, int64_t *ts_us)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			yh,
				yl,
				year,
				mon,
				day,
				hour,
				min,
				sec,
				oh = 0,
				om = 0,
				dim;
	int64_t		frac_us = 0,
				secs;
	size_t		p;

	/* shortest form: YYYY-MM-DDTHH:MM:SSZ */
	if (s == NULL || len < 20)
		return 0;
	if (!two_digits(s, &yh) || !two_digits(s + 2, &yl) || s[4] != '-' ||
		!two_digits(s + 5, &mon) || s[7] != '-' ||
		!two_digits(s + 8, &day) ||
		(s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
		!two_digits(s + 11, &hour) || s[13] != ':' ||
		!two_digits(s + 14, &min) || s[16] != ':' ||
		!two_digits(s + 17, &sec))
		return 0;
	year = yh * 100 + yl;

	p = 19;
	if (s[p] == '.')
	{
		size_t		nd = 0;
		int64_t		scale = 100000;

		p++;
		while (p < len && is_digit((unsigned char) s[p]))
		{
			if (nd < 6)
			{
				frac_us += (s[p] - '0') * scale;
				scale /= 10;
			}
			nd++;
			p++;
		}
		if (nd < 1 || nd > 9)
			return 0;
	}
	if (p >= len)
		return 0;
	if (s[p] == 'Z' || s[p] == 'z')
	{
		if (len - p != 1)
			return 0;
	}
	else if (s[p] == '+' || s[p] == '-')
	{
		if (len - p != 6 || !two_digits(s + p + 1, &oh) || s[p + 3] != ':' ||
			!two_digits(s + p + 4, &om) || oh >= 24 || om >= 60)
			return 0;
		if (s[p] == '-')
		{
			oh = -oh;
			om = -om;
		}
	}
	else
		return 0;

	if (mon < 1 || mon > 12 || day < 1)
		return 0;
	dim = mdays[mon - 1];
	if (mon == 2 && (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
		dim = 29;
	if (day > dim || hour >= 24 || min >= 60 || sec >= 60)
		return 0;

	/* local time minus the offset gives UTC */
	secs = days_from_civil(year, mon, day) * 86400 +
		hour * 3600 + min * 60 + sec - (oh * 3600 + om * 60);
	*ts_us = secs * 1000000 + frac_us;
	return 1;
}

int
ads_parse_rfc3339(const char *s, size_t len, int64_t *ts_us)
{
	int64_t		v;

	/* the public helper also enforces the accepted range */
	if (!rfc3339_to_us(s, len, &v) || v < ADS_TS_MIN_US || v > ADS_TS_MAX_US)
		return 0;
	*ts_us = v;
	return 1;
}

static AdsReason
field_fail(char *detail, size_t detail_len, AdsReason r, const char *name,
		   const char *what)
{
	set_detail(detail, detail_len, "field \"%s\" %s", name, what);
	return r;
}

/* Check an id field: non-negative integer literal within int64. */
static AdsReason
check_id(const unsigned char *s, const FieldSpan *sp, const char *name,
		 int64_t *val, char *detail, size_t detail_len)
{
	unsigned char c = s[sp->start];
	int			rc;

	if (c != '-' && !is_digit(c))
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not an integer");
	rc = parse_int_span(s + sp->start, sp->end - sp->start, val);
	if (rc == 1)
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not an integer");
	if (rc == 2)
		return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name,
						  "is out of range");
	if (*val < 0)
		return field_fail(detail, detail_len, ADS_R_NEGATIVE_ID, name,
						  "is negative");
	return ADS_OK;
}

/* Check a UUID field: a string holding a canonical UUID. */
static ALWAYS_INLINE AdsReason
check_uuid(const unsigned char *s, const FieldSpan *sp, const char *name,
		   uint8_t id[16], char *detail, size_t detail_len)
{
	char		dbuf[DECODE_CAP];
	const char *str;
	size_t		n;

	if (s[sp->start] != '"')
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not a string");
	if (!field_string(s, sp, dbuf, &str, &n) || !ads_parse_uuid(str, n, id))
		return field_fail(detail, detail_len, ADS_R_INVALID_UUID, name,
						  "is not a canonical UUID");
	return ADS_OK;
}

/* Microseconds per unit of a numeric ts. */
static inline int64_t
ts_unit_us(AdsTsFormat unit)
{
	return unit == ADS_TS_EPOCH_S ? 1000000 : unit == ADS_TS_EPOCH_US ? 1 : 1000;
}

/*
 * Check a timestamp field: an integer number of epoch milliseconds (or the
 * source's unit), or an RFC 3339 string; either way within
 * ADS_TS_MIN_US..ADS_TS_MAX_US.  With ADS_TS_RFC3339 only the string.
 */
static ALWAYS_INLINE AdsReason
check_ts(const unsigned char *s, const FieldSpan *sp, const char *name,
		 AdsTsFormat unit, int64_t *ts_us, char *detail, size_t detail_len)
{
	unsigned char c = s[sp->start];
	char		dbuf[DECODE_CAP];
	const char *str;
	size_t		n;

	if ((c == '-' || is_digit(c)) && unit != ADS_TS_RFC3339)
	{
		int64_t		v = 0;
		int64_t		per = ts_unit_us(unit);
		int			rc = parse_int_span(s + sp->start, sp->end - sp->start, &v);

		if (rc == 1)
			return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
							  "is not an integer or RFC 3339 string");
		/* converting to microseconds must stay in range */
		if (rc == 2 || v < ADS_TS_MIN_US / per || v > ADS_TS_MAX_US / per)
			return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name,
							  "is out of range");
		*ts_us = v * per;
	}
	else if (c == '"')
	{
		int64_t		us = 0;

		if (!field_string(s, sp, dbuf, &str, &n) || !rfc3339_to_us(str, n, &us))
			return field_fail(detail, detail_len, ADS_R_INVALID_TIMESTAMP, name,
							  "is not a valid RFC 3339 timestamp");
		if (us < ADS_TS_MIN_US || us > ADS_TS_MAX_US)
			return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name,
							  "is out of range");
		*ts_us = us;
	}
	else
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  unit == ADS_TS_RFC3339 ? "is not an RFC 3339 string" :
						  "is not an integer or RFC 3339 string");
	return ADS_OK;
}

/* The dotted path of mapping node nd, for details. */
static void
node_path(const AdsFormat *fmt, int nd, char *out, size_t cap)
{
	int			chain[ADS_MAP_MAX_SEGMENTS + 1];
	int			k = 0;
	size_t		o = 0;

	for (; nd > 0 && k <= ADS_MAP_MAX_SEGMENTS; nd = fmt->node[nd].parent)
		chain[k++] = nd;
	out[0] = '\0';
	while (k-- > 0)
	{
		const AdsMapNode *n = &fmt->node[chain[k]];

		if (o + n->len + 2 > cap)
			break;
		if (o > 0)
			out[o++] = '.';
		memcpy(out + o, n->name, n->len);
		o += n->len;
		out[o] = '\0';
	}
}

/*
 * Checks 1-7 of the header, common to every contract: everything up to the
 * per-field checks.  Returns ADS_OK with *js filled in, or the reason.
 */
static ALWAYS_INLINE AdsReason
check_message(const unsigned char *s, size_t len, size_t max_bytes,
			  JsonScan *js, const int contract, const AdsFormat *fmt,
			  const char *const *names, char *detail, size_t detail_len)
{
	AdsReason	r;

	if (s == NULL || len == 0)
	{
		set_detail(detail, detail_len, "empty message");
		return ADS_R_EMPTY;
	}
	if (len > max_bytes)
	{
		set_detail(detail, detail_len, "message is %zu bytes, limit is %zu",
				   len, max_bytes);
		return ADS_R_OVERSIZED;
	}

	if (!json_scan(js, s, len, contract, fmt))
	{
		size_t		where = 0;

		/* NUL bytes and bad UTF-8 outrank syntax errors; look for them */
		r = scan_nul_utf8(s, len, &where);
		if (r == ADS_R_NUL_BYTE)
		{
			set_detail(detail, detail_len, "NUL byte at byte %zu", where);
			return r;
		}
		if (r == ADS_R_INVALID_UTF8)
		{
			set_detail(detail, detail_len, "invalid UTF-8 at byte %zu", where);
			return r;
		}
		if (js->err_depth)
			set_detail(detail, detail_len, "JSON nesting deeper than %d",
					   ADS_MAX_JSON_DEPTH);
		else
			set_detail(detail, detail_len, "%s %zu", js->err_msg, js->err_pos);
		return ADS_R_INVALID_JSON;
	}

	if (!js->top_is_object)
	{
		set_detail(detail, detail_len, "top-level JSON value is not an object");
		return ADS_R_NOT_OBJECT;
	}
	if (contract == C_MAPPED && js->dup_node >= 0)
	{
		char		path[ADS_MAP_PATH_MAX];

		node_path(fmt, js->dup_node, path, sizeof(path));
		set_detail(detail, detail_len, "duplicate field \"%s\"", path);
		return ADS_R_DUPLICATE_KEY;
	}
	if (contract != C_MAPPED && js->dup_field >= 0)
	{
		set_detail(detail, detail_len, "duplicate field \"%s\"",
				   names[js->dup_field]);
		return ADS_R_DUPLICATE_KEY;
	}
	return ADS_OK;
}

/*
 * The event parser; contract is C_EVENT (fmt NULL or unmapped: names are
 * the contract's) or C_MAPPED (names are fmt's paths).
 */
static ALWAYS_INLINE AdsReason
parse_event(const char *buf, size_t len, size_t max_bytes, const int contract,
			const AdsFormat *fmt, AdsEvent *out, char *detail, size_t detail_len)
{
	const unsigned char *s = (const unsigned char *) buf;
	JsonScan	js;
	AdsEvent	ev;
	AdsReason	r;
	const FieldSpan *sp;
	char		dbuf[DECODE_CAP];
	const char *str;
	size_t		n;
	int			f;
	AdsTsFormat unit = fmt ? fmt->ts_format : ADS_TS_EPOCH_MS;

	r = check_message(s, len, max_bytes, &js, contract, fmt, event_field_names,
					  detail, detail_len);
	if (r != ADS_OK)
		return r;

	/*
	 * Field checks, in contract order.  Presence is checked per field (not
	 * all up front) so that e.g. a bad event_id is reported before a missing
	 * ts, as the header specifies.
	 */
	memset(&ev, 0, sizeof(ev));
	for (f = 0; f < F__COUNT; f++)
	{
		const char *name = contract == C_MAPPED ? fmt->path[f] : event_field_names[f];

		if (!(js.seen & (1u << f)))
		{
			set_detail(detail, detail_len, "missing field \"%s\"", name);
			return ADS_R_MISSING_FIELD;
		}
		sp = &js.span[f];

		switch (f)
		{
			case F_EVENT_ID:
				if ((r = check_uuid(s, sp, name, ev.event_id, detail, detail_len)) != ADS_OK)
					return r;
				break;

			case F_TYPE:
				if (s[sp->start] != '"')
					return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
									  "is not a string");
				if (!field_string(s, sp, dbuf, &str, &n))
					n = 0;		/* undecodable: matches nothing below */
				if (n == 10 && memcmp(str, "impression", 10) == 0)
					ev.type = ADS_EV_IMPRESSION;
				else if (n == 5 && memcmp(str, "click", 5) == 0)
					ev.type = ADS_EV_CLICK;
				else
					return field_fail(detail, detail_len, ADS_R_UNKNOWN_TYPE, name,
									  "must be \"impression\" or \"click\"");
				break;

			case F_AD_ID:
				if ((r = check_id(s, sp, name, &ev.ad_id, detail, detail_len)) != ADS_OK)
					return r;
				break;
			case F_CAMPAIGN_ID:
				if ((r = check_id(s, sp, name, &ev.campaign_id, detail, detail_len)) != ADS_OK)
					return r;
				break;
			case F_USER_ID:
				if ((r = check_id(s, sp, name, &ev.user_id, detail, detail_len)) != ADS_OK)
					return r;
				break;
			case F_STORE_ID:
				if ((r = check_id(s, sp, name, &ev.store_id, detail, detail_len)) != ADS_OK)
					return r;
				break;

			case F_TS:
				if ((r = check_ts(s, sp, name, unit, &ev.ts_us, detail, detail_len)) != ADS_OK)
					return r;
				break;
		}
	}

	if (out != NULL)
		*out = ev;
	if (detail != NULL && detail_len > 0)
		detail[0] = '\0';
	return ADS_OK;
}

AdsReason
ads_parse_event(const char *buf, size_t len, size_t max_bytes,
				AdsEvent *out, char *detail, size_t detail_len)
{
	return parse_event(buf, len, max_bytes, C_EVENT, NULL, out, detail, detail_len);
}

AdsReason
ads_parse_event_fmt(const char *buf, size_t len, size_t max_bytes,
					const AdsFormat *fmt, AdsEvent *out,
					char *detail, size_t detail_len)
{
	if (fmt == NULL || !fmt->mapped)
		return parse_event(buf, len, max_bytes, C_EVENT, fmt, out, detail, detail_len);
	return parse_event(buf, len, max_bytes, C_MAPPED, fmt, out, detail, detail_len);
}

/* ---------------------------------------------------------------------
 * Orders
 * ---------------------------------------------------------------------
 */

/* Limits of an amount, see event_parse.h. */
#define AMOUNT_INT_DIGITS	18
#define AMOUNT_FRAC_DIGITS	9

/*
 * The characters of a value, one at a time: the raw bytes of a JSON number,
 * or the decoded contents of a JSON string.  Amounts and currencies are pure
 * ASCII, so this does not bother to assemble multi-byte characters: a byte
 * >= 0x80, or a \u escape for anything beyond ASCII, comes out as some value
 * >= 0x80, which no check accepts.  Unlike decode_string() this needs no
 * buffer, so arbitrarily long values are classified exactly (a 40-digit
 * string is out_of_range however it is escaped).
 */
typedef struct CharSource
{
	const unsigned char *s;
	size_t		n;
	size_t		i;
	int			escaped;
} CharSource;

static inline void
source_init(CharSource *cs, const unsigned char *s, const FieldSpan *sp)
{
	if (s[sp->start] == '"')
	{
		cs->s = s + sp->start + 1;
		cs->n = sp->end - sp->start - 2;
		cs->escaped = sp->escaped;
	}
	else
	{
		cs->s = s + sp->start;
		cs->n = sp->end - sp->start;
		cs->escaped = 0;
	}
	cs->i = 0;
}

/* Next character, or -1 at the end. */
static inline int32_t
source_next(CharSource *cs)
{
	unsigned char c;

	if (cs->i >= cs->n)
		return -1;
	c = cs->s[cs->i];
	if (c != '\\' || !cs->escaped)
	{
		cs->i++;
		return c;
	}
	/* the scanner guaranteed a complete, valid escape here */
	c = cs->s[cs->i + 1];
	if (c == 'u')
	{
		int32_t		cp = (hex_value(cs->s[cs->i + 2]) << 12) |
			(hex_value(cs->s[cs->i + 3]) << 8) |
			(hex_value(cs->s[cs->i + 4]) << 4) |
			hex_value(cs->s[cs->i + 5]);

		cs->i += 6;
		return cp;
	}
	cs->i += 2;
	switch (c)
	{
		case 'b':
			return '\b';
		case 'f':
			return '\f';
		case 'n':
			return '\n';
		case 'r':
			return '\r';
		case 't':
			return '\t';
		default:
			return c;			/* '"', '\\' and '/' */
	}
}

/*
 * Check an amount: a JSON number, or a JSON string whose contents follow
 * the JSON number grammar; in both cases without an exponent, not negative
 * (minus zero is zero), with at most 18 integer and 9 fraction digits.
 * Malformed text, an exponent and a negative value are invalid_amount (in
 * that order of precedence), too many digits is out_of_range.  On success
 * writes the canonical text: the integer part (which the grammar already
 * keeps free of leading zeros) and, if present, the fraction as given.
 */
static AdsReason
check_amount(const unsigned char *s, const FieldSpan *sp, const char *name,
			 char out[ADS_AMOUNT_LEN], char *detail, size_t detail_len)
{
	unsigned char c0 = s[sp->start];
	CharSource	cs;
	char		buf[AMOUNT_INT_DIGITS + 1 + AMOUNT_FRAC_DIGITS + 1];
	size_t		o = 0;
	size_t		int_digits = 0,
				frac_digits = 0;
	int			neg = 0,
				nonzero = 0;
	int32_t		c;

	if (c0 != '"' && c0 != '-' && !is_digit(c0))
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not a number or string");

	source_init(&cs, s, sp);
	c = source_next(&cs);
	if (c == '-')
	{
		neg = 1;
		c = source_next(&cs);
	}

	/* integer part: 0 | [1-9][0-9]* */
	if (c == '0')
	{
		buf[o++] = '0';
		int_digits = 1;
		c = source_next(&cs);
	}
	else if (c >= '1' && c <= '9')
	{
		nonzero = 1;
		do
		{
			if (int_digits < AMOUNT_INT_DIGITS)
				buf[o++] = (char) c;
			int_digits++;
			c = source_next(&cs);
		} while (c >= '0' && c <= '9');
	}
	else
		goto malformed;

	/* fraction: \.[0-9]+ */
	if (c == '.')
	{
		c = source_next(&cs);
		if (!(c >= '0' && c <= '9'))
			goto malformed;
		if (int_digits <= AMOUNT_INT_DIGITS)
			buf[o++] = '.';
		do
		{
			if (c != '0')
				nonzero = 1;
			if (int_digits <= AMOUNT_INT_DIGITS && frac_digits < AMOUNT_FRAC_DIGITS)
				buf[o++] = (char) c;
			frac_digits++;
			c = source_next(&cs);
		} while (c >= '0' && c <= '9');
	}

	/* exponent: well-formed or not, the amount is invalid */
	if (c == 'e' || c == 'E')
	{
		c = source_next(&cs);
		if (c == '+' || c == '-')
			c = source_next(&cs);
		if (!(c >= '0' && c <= '9'))
			goto malformed;
		do
			c = source_next(&cs);
		while (c >= '0' && c <= '9');
		if (c != -1)
			goto malformed;
		return field_fail(detail, detail_len, ADS_R_INVALID_AMOUNT, name,
						  "has an exponent");
	}
	if (c != -1)
		goto malformed;

	if (neg && nonzero)
		return field_fail(detail, detail_len, ADS_R_INVALID_AMOUNT, name,
						  "is negative");
	if (int_digits > AMOUNT_INT_DIGITS)
		return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name,
						  "has more than 18 integer digits");
	if (frac_digits > AMOUNT_FRAC_DIGITS)
		return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name,
						  "has more than 9 fraction digits");
	buf[o] = '\0';
	memcpy(out, buf, o + 1);
	return ADS_OK;

malformed:
	return field_fail(detail, detail_len, ADS_R_INVALID_AMOUNT, name,
					  "is not a decimal number");
}

/* Check a currency: a string of exactly three ASCII letters A-Z. */
static AdsReason
check_currency(const unsigned char *s, const FieldSpan *sp, const char *name,
			   char out[4], char *detail, size_t detail_len)
{
	CharSource	cs;
	char		buf[4];
	int			k;

	if (s[sp->start] != '"')
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not a string");
	source_init(&cs, s, sp);
	for (k = 0; k < 3; k++)
	{
		int32_t		c = source_next(&cs);

		if (c < 'A' || c > 'Z')
			break;
		buf[k] = (char) c;
	}
	if (k < 3 || source_next(&cs) != -1)
		return field_fail(detail, detail_len, ADS_R_INVALID_CURRENCY, name,
						  "must be three upper-case letters A-Z");
	buf[3] = '\0';
	memcpy(out, buf, 4);
	return ADS_OK;
}

static ALWAYS_INLINE AdsReason
parse_order(const char *buf, size_t len, size_t max_bytes, const int contract,
			const AdsFormat *fmt, AdsOrder *out, char *detail, size_t detail_len)
{
	const unsigned char *s = (const unsigned char *) buf;
	JsonScan	js;
	AdsOrder	ord;
	AdsReason	r;
	const FieldSpan *sp;
	int			f;
	AdsTsFormat unit = fmt ? fmt->ts_format : ADS_TS_EPOCH_MS;

	r = check_message(s, len, max_bytes, &js, contract, fmt, order_field_names,
					  detail, detail_len);
	if (r != ADS_OK)
		return r;

	memset(&ord, 0, sizeof(ord));
	for (f = 0; f < O__COUNT; f++)
	{
		const char *name = contract == C_MAPPED ? fmt->path[f] : order_field_names[f];

		if (!(js.seen & (1u << f)))
		{
			set_detail(detail, detail_len, "missing field \"%s\"", name);
			return ADS_R_MISSING_FIELD;
		}
		sp = &js.span[f];

		switch (f)
		{
			case O_ORDER_ID:
				r = check_uuid(s, sp, name, ord.order_id, detail, detail_len);
				break;
			case O_USER_ID:
				r = check_id(s, sp, name, &ord.user_id, detail, detail_len);
				break;
			case O_STORE_ID:
				r = check_id(s, sp, name, &ord.store_id, detail, detail_len);
				break;
			case O_AMOUNT:
				r = check_amount(s, sp, name, ord.amount, detail, detail_len);
				break;
			case O_CURRENCY:
				r = check_currency(s, sp, name, ord.currency, detail, detail_len);
				break;
			case O_TS:
				r = check_ts(s, sp, name, unit, &ord.ts_us, detail, detail_len);
				break;
		}
		if (r != ADS_OK)
			return r;
	}

	if (out != NULL)
		*out = ord;
	if (detail != NULL && detail_len > 0)
		detail[0] = '\0';
	return ADS_OK;
}

AdsReason
ads_parse_order(const char *buf, size_t len, size_t max_bytes,
				AdsOrder *out, char *detail, size_t detail_len)
{
	return parse_order(buf, len, max_bytes, C_ORDER, NULL, out, detail, detail_len);
}

AdsReason
ads_parse_order_fmt(const char *buf, size_t len, size_t max_bytes,
					const AdsFormat *fmt, AdsOrder *out,
					char *detail, size_t detail_len)
{
	if (fmt == NULL || !fmt->mapped)
		return parse_order(buf, len, max_bytes, C_ORDER, fmt, out, detail, detail_len);
	return parse_order(buf, len, max_bytes, C_MAPPED, fmt, out, detail, detail_len);
}

/* ---------------------------------------------------------------------
 * Formats: compiling a field mapping
 * ---------------------------------------------------------------------
 */

int
ads_contract_nfields(int is_orders)
{
	return is_orders ? O__COUNT : F__COUNT;
}

const char *
ads_contract_field(int is_orders, int f)
{
	if (f < 0 || f >= ads_contract_nfields(is_orders))
		return NULL;
	return is_orders ? order_field_names[f] : event_field_names[f];
}

static const char *const ts_format_names[] = {"epoch_ms", "epoch_s", "epoch_us", "rfc3339"};

const char *
ads_ts_format_name(AdsTsFormat f)
{
	return ((unsigned) f < 4) ? ts_format_names[f] : "unknown";
}

void
ads_format_init(AdsFormat *fmt, int is_orders)
{
	int			f;

	memset(fmt, 0, sizeof(*fmt));
	fmt->is_orders = is_orders;
	fmt->ts_format = ADS_TS_EPOCH_MS;
	fmt->nfields = ads_contract_nfields(is_orders);
	for (f = 0; f < fmt->nfields; f++)
		strcpy(fmt->path[f], ads_contract_field(is_orders, f));
}

int
ads_format_set_field(AdsFormat *fmt, const char *field, const char *path,
					 char *err, size_t err_len)
{
	int			f;
	size_t		n,
				seg = 0,
				nseg = 1,
				i;

	for (f = 0; f < fmt->nfields; f++)
		if (strcmp(field, ads_contract_field(fmt->is_orders, f)) == 0)
			break;
	if (f == fmt->nfields)
	{
		set_detail(err, err_len, "\"%.64s\" is not a field of the %s contract", field,
				   fmt->is_orders ? "orders" : "ad events");
		return 0;
	}
	n = strlen(path);
	if (n == 0 || n >= ADS_MAP_PATH_MAX)
	{
		set_detail(err, err_len, "the path of field \"%s\" must have 1 to %d bytes",
				   field, ADS_MAP_PATH_MAX - 1);
		return 0;
	}
	for (i = 0; i <= n; i++)
	{
		unsigned char c = (unsigned char) path[i];

		if (c == '.' || c == '\0')
		{
			if (seg == 0 || seg > ADS_MAP_NAME_MAX)
			{
				set_detail(err, err_len, "the path of field \"%s\" has an empty member name or one longer than %d bytes",
						   field, ADS_MAP_NAME_MAX);
				return 0;
			}
			if (c == '.')
				nseg++;
			seg = 0;
		}
		else if (c < 0x20 || c > 0x7e)
		{
			set_detail(err, err_len, "the path of field \"%s\" must be printable ASCII", field);
			return 0;
		}
		else
			seg++;
	}
	if (nseg > ADS_MAP_MAX_SEGMENTS)
	{
		set_detail(err, err_len, "the path of field \"%s\" has more than %d members",
				   field, ADS_MAP_MAX_SEGMENTS);
		return 0;
	}
	memcpy(fmt->path[f], path, n + 1);
	fmt->nnodes = 0;
	return 1;
}

int
ads_format_set_ts(AdsFormat *fmt, const char *ts_format, char *err, size_t err_len)
{
	int			i;

	for (i = 0; i < 4; i++)
		if (strcmp(ts_format, ts_format_names[i]) == 0)
		{
			fmt->ts_format = (AdsTsFormat) i;
			return 1;
		}
	set_detail(err, err_len, "unknown ts_format \"%.32s\"", ts_format);
	return 0;
}

int
ads_format_finish(AdsFormat *fmt, char *err, size_t err_len)
{
	int			f;

	memset(fmt->node, 0, sizeof(fmt->node));
	fmt->node[0].parent = -1;
	fmt->node[0].first_child = -1;
	fmt->node[0].next_sibling = -1;
	fmt->node[0].field = -1;
	fmt->nnodes = 1;
	fmt->mapped = 0;

	for (f = 0; f < fmt->nfields; f++)
	{
		const char *p = fmt->path[f];
		int			cur = 0;

		if (strcmp(p, ads_contract_field(fmt->is_orders, f)) != 0)
			fmt->mapped = 1;
		for (;;)
		{
			const char *dot = strchr(p, '.');
			size_t		n = dot ? (size_t) (dot - p) : strlen(p);
			int			c = match_child(fmt, cur, p, n);

			if (c >= 0 && fmt->node[c].field >= 0)
			{
				set_detail(err, err_len, "field \"%s\" has the same path as field \"%s\", or a path inside it",
						   ads_contract_field(fmt->is_orders, f),
						   ads_contract_field(fmt->is_orders, fmt->node[c].field));
				return 0;
			}
			if (c < 0)
			{
				AdsMapNode *nd;

				if (fmt->nnodes >= ADS_MAP_MAX_NODES)
				{
					set_detail(err, err_len, "the paths have more than %d members in all",
							   ADS_MAP_MAX_NODES - 1);
					return 0;
				}
				c = fmt->nnodes++;
				nd = &fmt->node[c];
				nd->parent = (int16_t) cur;
				nd->first_child = -1;
				nd->next_sibling = fmt->node[cur].first_child;
				fmt->node[cur].first_child = (int16_t) c;
				nd->field = -1;
				nd->len = (uint16_t) n;
				memcpy(nd->name, p, n);
			}
			else if (!dot)
			{
				/* an object on another field's way */
				set_detail(err, err_len, "the path of field \"%s\" is inside another field's path",
						   ads_contract_field(fmt->is_orders, f));
				return 0;
			}
			cur = c;
			if (!dot)
				break;
			p = dot + 1;
		}
		fmt->node[cur].field = (int16_t) f;
	}
	return 1;
}

/* ---------------------------------------------------------------------
 * Checks on typed values (Avro)
 * ---------------------------------------------------------------------
 */

AdsReason
ads_field_reason(AdsReason r, const char *name, const char *what,
				 char *detail, size_t detail_len)
{
	return field_fail(detail, detail_len, r, name, what);
}

AdsReason
ads_check_uuid_text(const char *s, size_t n, const char *name,
					uint8_t id[16], char *detail, size_t detail_len)
{
	if (!ads_parse_uuid(s, n, id))
		return field_fail(detail, detail_len, ADS_R_INVALID_UUID, name,
						  "is not a canonical UUID");
	return ADS_OK;
}

AdsReason
ads_check_type_text(const char *s, size_t n, const char *name,
					AdsEventType *type, char *detail, size_t detail_len)
{
	if (n == 10 && memcmp(s, "impression", 10) == 0)
		*type = ADS_EV_IMPRESSION;
	else if (n == 5 && memcmp(s, "click", 5) == 0)
		*type = ADS_EV_CLICK;
	else
		return field_fail(detail, detail_len, ADS_R_UNKNOWN_TYPE, name,
						  "must be \"impression\" or \"click\"");
	return ADS_OK;
}

AdsReason
ads_check_id_value(int64_t v, const char *name, int64_t *out,
				   char *detail, size_t detail_len)
{
	if (v < 0)
		return field_fail(detail, detail_len, ADS_R_NEGATIVE_ID, name, "is negative");
	*out = v;
	return ADS_OK;
}

AdsReason
ads_check_ts_value(int64_t v, AdsTsFormat unit, const char *name,
				   int64_t *ts_us, char *detail, size_t detail_len)
{
	int64_t		per = ts_unit_us(unit);

	if (unit == ADS_TS_RFC3339)
		return field_fail(detail, detail_len, ADS_R_WRONG_TYPE, name,
						  "is not an RFC 3339 string");
	if (v < ADS_TS_MIN_US / per || v > ADS_TS_MAX_US / per)
		return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name, "is out of range");
	*ts_us = v * per;
	return ADS_OK;
}

AdsReason
ads_check_ts_text(const char *s, size_t n, const char *name,
				  int64_t *ts_us, char *detail, size_t detail_len)
{
	int64_t		us = 0;

	if (!rfc3339_to_us(s, n, &us))
		return field_fail(detail, detail_len, ADS_R_INVALID_TIMESTAMP, name,
						  "is not a valid RFC 3339 timestamp");
	if (us < ADS_TS_MIN_US || us > ADS_TS_MAX_US)
		return field_fail(detail, detail_len, ADS_R_OUT_OF_RANGE, name, "is out of range");
	*ts_us = us;
	return ADS_OK;
}
