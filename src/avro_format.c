/*
 * avro_format.c
 *     Avro records in the Confluent wire format: see include/avro_format.h.
 *
 * libavro does the Avro work: it parses the writer schema and reads a
 * record into a generic value that the reader keeps and reuses, so no
 * allocation happens per record beyond libavro's own buffers for strings.
 * What is ours is the walk from the record to each contract field along
 * indexes resolved once per schema, and the checks, which are the JSON
 * parser's (ads_check_*), so that a field breaks the contract in Avro for
 * the same reason as in JSON.
 *
 * Unions: a path may pass through a union (["null", {"type": "record"
 * ...}], the usual optional nested record); at compile time the step keeps
 * the record branch's index, and a record whose union holds another branch
 * lacks the field (missing_field).  A field's own value may be a union too,
 * usually ["null", "long"]: its current branch is checked, null as missing.
 *
 * libavro trusts the length prefixes of strings, bytes and arrays: it
 * allocates what a prefix says before it finds that the record is shorter.
 * Our allocator (bounded_alloc) refuses, while a record is read, any single
 * allocation larger than the record could need (a generous multiple of its
 * size), so a hostile prefix is an undecodable record, not an exabyte
 * request.  Outside reads it does not limit anything.
 *
 * libavro also leaks the buffer of a string or bytes value whose read
 * fails (it allocates, the read comes up short, and it returns).  So the
 * allocator remembers every block it hands out during a read; when the
 * read fails, the reader's value is destroyed (freeing what it holds) and
 * whatever is still remembered is what libavro lost, and is freed, before
 * a fresh value is made.  A stream of broken records costs nothing.
 */
#include <avro.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avro_format.h"

/* Largest single allocation libavro may make; SIZE_MAX outside reads. */
static size_t alloc_cap = SIZE_MAX;
static int	allocator_set = 0;

/* Blocks handed out during the current read (tracking on), live ones only. */
static int	tracking = 0;
static void **tracked = NULL;
static size_t ntracked = 0,
			tracked_cap = 0;

static void
untrack(void *ptr)
{
	for (size_t i = ntracked; i-- > 0;)
		if (tracked[i] == ptr)
		{
			tracked[i] = tracked[--ntracked];
			return;
		}
}

static void *
bounded_alloc(void *user_data, void *ptr, size_t osize, size_t nsize)
{
	void	   *p;

	(void) user_data;
	(void) osize;
	if (nsize == 0)
	{
		if (tracking && ptr != NULL)
			untrack(ptr);
		free(ptr);
		return NULL;
	}
	if (nsize > alloc_cap)
		return NULL;
	if (tracking && ntracked == tracked_cap)
	{
		size_t		cap = tracked_cap ? tracked_cap * 2 : 64;
		void	  **grown = realloc(tracked, cap * sizeof(void *));

		if (grown == NULL)
			return NULL;
		tracked = grown;
		tracked_cap = cap;
	}
	if (tracking && ptr != NULL)
		untrack(ptr);
	p = realloc(ptr, nsize);
	if (tracking)
		tracked[ntracked++] = p != NULL ? p : ptr;	/* a failed realloc keeps ptr */
	return p;
}

typedef struct AvroStep
{
	int			index;			/* field of the record at this step */
	int			branch;			/* union branch to go through, or -1 */
} AvroStep;

struct AdsAvroReader
{
	uint32_t	schema_id;
	AdsFormat	fmt;
	avro_schema_t schema;
	avro_value_iface_t *iface;
	avro_value_t value;			/* the record, reused */
	avro_reader_t reader;		/* memory reader, repointed per record */
	int			nsteps[ADS_MAX_CONTRACT_FIELDS];	/* -1: the schema lacks the path */
	AvroStep	steps[ADS_MAX_CONTRACT_FIELDS][ADS_MAP_MAX_SEGMENTS];
};

#if defined(__GNUC__)
static void set_err(char *err, size_t err_len, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
#endif

static void
set_err(char *err, size_t err_len, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* Named types referred to by name are links; follow them. */
static avro_schema_t
resolve(avro_schema_t s)
{
	while (s != NULL && is_avro_link(s))
		s = avro_schema_link_target(s);
	return s;
}

/* Resolve one field's path in the record schema; -1 if the schema lacks it. */
static int
resolve_path(avro_schema_t record, const char *path, AvroStep *steps)
{
	char		seg[ADS_MAP_NAME_MAX + 1];
	const char *p = path;
	avro_schema_t cur = record;
	int			n = 0;

	for (;;)
	{
		const char *dot = strchr(p, '.');
		size_t		len = dot ? (size_t) (dot - p) : strlen(p);
		int			idx;
		avro_schema_t fs;

		if (cur == NULL || !is_avro_record(cur) || n >= ADS_MAP_MAX_SEGMENTS ||
			len == 0 || len > ADS_MAP_NAME_MAX)
			return -1;
		memcpy(seg, p, len);
		seg[len] = '\0';
		idx = avro_schema_record_field_get_index(cur, seg);
		if (idx < 0)
			return -1;
		steps[n].index = idx;
		steps[n].branch = -1;
		fs = resolve(avro_schema_record_field_get_by_index(cur, idx));
		if (dot != NULL && fs != NULL && is_avro_union(fs))
		{
			/* go through the union's record branch */
			size_t		b,
						nb = avro_schema_union_size(fs);
			avro_schema_t rec = NULL;

			for (b = 0; b < nb; b++)
			{
				avro_schema_t bs = resolve(avro_schema_union_branch(fs, (int) b));

				if (bs != NULL && is_avro_record(bs))
				{
					steps[n].branch = (int) b;
					rec = bs;
					break;
				}
			}
			fs = rec;
		}
		cur = fs;
		n++;
		if (dot == NULL)
			return n;
		p = dot + 1;
	}
}

AdsAvroReader *
ads_avro_reader_new(uint32_t schema_id, const char *schema_json, size_t len,
					const AdsFormat *fmt, char *err, size_t err_len)
{
	AdsAvroReader *r = calloc(1, sizeof(AdsAvroReader));
	int			f;

	if (r == NULL)
	{
		set_err(err, err_len, "out of memory");
		return NULL;
	}
	if (!allocator_set)
	{
		avro_set_allocator(bounded_alloc, NULL);
		allocator_set = 1;
	}
	r->schema_id = schema_id;
	r->fmt = *fmt;
	if (avro_schema_from_json_length(schema_json, len, &r->schema) != 0)
	{
		set_err(err, err_len, "schema %u does not parse: %s", schema_id, avro_strerror());
		free(r);
		return NULL;
	}
	if (!is_avro_record(r->schema))
	{
		set_err(err, err_len, "schema %u is not a record", schema_id);
		avro_schema_decref(r->schema);
		free(r);
		return NULL;
	}
	r->iface = avro_generic_class_from_schema(r->schema);
	if (r->iface == NULL || avro_generic_value_new(r->iface, &r->value) != 0)
	{
		set_err(err, err_len, "schema %u: %s", schema_id, avro_strerror());
		if (r->iface)
			avro_value_iface_decref(r->iface);
		avro_schema_decref(r->schema);
		free(r);
		return NULL;
	}
	r->reader = avro_reader_memory("", 0);
	for (f = 0; f < fmt->nfields; f++)
		r->nsteps[f] = resolve_path(r->schema, fmt->path[f], r->steps[f]);
	return r;
}

void
ads_avro_reader_free(AdsAvroReader *r)
{
	if (r == NULL)
		return;
	avro_reader_free(r->reader);
	avro_value_decref(&r->value);
	avro_value_iface_decref(r->iface);
	avro_schema_decref(r->schema);
	free(r);
}

AdsReason
ads_avro_header(const char *buf, size_t len, size_t max_bytes,
				uint32_t *schema_id, char *detail, size_t detail_len)
{
	const unsigned char *s = (const unsigned char *) buf;

	if (s == NULL || len == 0)
	{
		set_err(detail, detail_len, "empty message");
		return ADS_R_EMPTY;
	}
	if (len > max_bytes)
	{
		set_err(detail, detail_len, "message is %zu bytes, limit is %zu", len, max_bytes);
		return ADS_R_OVERSIZED;
	}
	if (s[0] != 0)
	{
		set_err(detail, detail_len, "first byte is 0x%02x, not the magic byte 0x00", s[0]);
		return ADS_R_BAD_MAGIC_BYTE;
	}
	if (len < ADS_AVRO_HEADER_LEN)
	{
		set_err(detail, detail_len, "message is %zu bytes, shorter than the 5-byte header", len);
		return ADS_R_INVALID_AVRO;
	}
	*schema_id = ((uint32_t) s[1] << 24) | ((uint32_t) s[2] << 16) |
		((uint32_t) s[3] << 8) | (uint32_t) s[4];
	return ADS_OK;
}

/* Field f's value, through its steps; 0 if absent (not in schema, other branch, null). */
static int
field_value(AdsAvroReader *r, int f, avro_value_t *out)
{
	avro_value_t cur = r->value,
				child;
	int			k;

	if (r->nsteps[f] < 0)
		return 0;
	for (k = 0; k < r->nsteps[f]; k++)
	{
		if (avro_value_get_by_index(&cur, (size_t) r->steps[f][k].index, &child, NULL) != 0)
			return 0;
		if (r->steps[f][k].branch >= 0)
		{
			int			disc;

			if (avro_value_get_discriminant(&child, &disc) != 0 ||
				disc != r->steps[f][k].branch ||
				avro_value_get_current_branch(&child, &child) != 0)
				return 0;
		}
		cur = child;
	}
	if (avro_value_get_type(&cur) == AVRO_UNION &&
		avro_value_get_current_branch(&cur, &cur) != 0)
		return 0;
	if (avro_value_get_type(&cur) == AVRO_NULL)
		return 0;
	*out = cur;
	return 1;
}

/* An int or long field; 0 if of another type. */
static int
int_value(avro_value_t *v, int64_t *out)
{
	int32_t		i32;

	switch (avro_value_get_type(v))
	{
		case AVRO_INT64:
			return avro_value_get_long(v, out) == 0;
		case AVRO_INT32:
			if (avro_value_get_int(v, &i32) != 0)
				return 0;
			*out = i32;
			return 1;
		default:
			return 0;
	}
}

/* A string field's bytes (libavro counts the NUL it stores); 0 if not a string. */
static int
text_value(avro_value_t *v, const char **s, size_t *n)
{
	size_t		size = 0;

	if (avro_value_get_type(v) != AVRO_STRING ||
		avro_value_get_string(v, s, &size) != 0)
		return 0;
	*n = size > 0 ? size - 1 : 0;
	return 1;
}

AdsReason
ads_avro_decode_event(AdsAvroReader *r, const char *buf, size_t len,
					  AdsEvent *out, char *detail, size_t detail_len)
{
	AdsEvent	ev;
	AdsReason	rc = ADS_OK;
	char		extra;
	int			f;

	avro_reader_memory_set_source(r->reader, buf + ADS_AVRO_HEADER_LEN,
								  (int64_t) (len - ADS_AVRO_HEADER_LEN));
	avro_value_reset(&r->value);
	/* a record's values cannot need much more than its bytes */
	alloc_cap = 256 * len + 16 * 1024 * 1024;
	avro_set_error("%s", "");	/* libavro's error text accumulates otherwise */
	ntracked = 0;
	tracking = 1;
	rc = avro_value_read(r->reader, &r->value) != 0 ? ADS_R_INVALID_AVRO : ADS_OK;
	if (rc != ADS_OK)
	{
		/* free what libavro lost: all it still holds goes with the value */
		avro_value_decref(&r->value);
		for (size_t i = 0; i < ntracked; i++)
			free(tracked[i]);
		ntracked = 0;
		tracking = 0;
		alloc_cap = SIZE_MAX;
		if (avro_generic_value_new(r->iface, &r->value) != 0)
			abort();			/* out of memory with nothing to report it to */
	}
	tracking = 0;
	alloc_cap = SIZE_MAX;
	if (rc != ADS_OK)
	{
		const char *why = avro_strerror();
		size_t		i;

		set_err(detail, detail_len, "record does not decode with schema %u: %s", r->schema_id, why);
		/* libavro's text may quote input; keep the detail printable ASCII */
		for (i = 0; detail && i < detail_len && detail[i]; i++)
			if ((unsigned char) detail[i] < 0x20 || (unsigned char) detail[i] > 0x7e)
				detail[i] = '?';
		return ADS_R_INVALID_AVRO;
	}
	if (avro_read(r->reader, &extra, 1) == 0)
	{
		set_err(detail, detail_len, "bytes left over after the record of schema %u", r->schema_id);
		return ADS_R_INVALID_AVRO;
	}

	memset(&ev, 0, sizeof(ev));
	for (f = 0; f < r->fmt.nfields && rc == ADS_OK; f++)
	{
		const char *name = r->fmt.path[f];
		avro_value_t v;
		const char *s;
		size_t		n;
		int64_t		i;

		if (!field_value(r, f, &v))
		{
			if (r->nsteps[f] < 0)
				set_err(detail, detail_len, "missing field \"%s\" (not in schema %u)", name, r->schema_id);
			else
				set_err(detail, detail_len, "missing field \"%s\"", name);
			return ADS_R_MISSING_FIELD;
		}
		switch (f)
		{
			case 0:				/* event_id */
				rc = text_value(&v, &s, &n) ?
					ads_check_uuid_text(s, n, name, ev.event_id, detail, detail_len) :
					ads_field_reason(ADS_R_WRONG_TYPE, name, "is not a string", detail, detail_len);
				break;
			case 1:				/* type: a string or an enum symbol */
				if (avro_value_get_type(&v) == AVRO_ENUM)
				{
					int			sym;

					s = NULL;
					/* libavro does not check a symbol's index against the schema */
					if (avro_value_get_enum(&v, &sym) == 0 && sym >= 0 &&
						sym < avro_schema_enum_number_of_symbols(avro_value_get_schema(&v)))
						s = avro_schema_enum_get(avro_value_get_schema(&v), sym);
					if (s == NULL)
						return ads_field_reason(ADS_R_INVALID_AVRO, name, "is an enum symbol the schema does not have",
												detail, detail_len);
					rc = ads_check_type_text(s ? s : "", s ? strlen(s) : 0, name, &ev.type,
											 detail, detail_len);
				}
				else
					rc = text_value(&v, &s, &n) ?
						ads_check_type_text(s, n, name, &ev.type, detail, detail_len) :
						ads_field_reason(ADS_R_WRONG_TYPE, name, "is not a string", detail, detail_len);
				break;
			case 2:
			case 3:
			case 4:
			case 5:
				{
					int64_t    *dst = f == 2 ? &ev.ad_id : f == 3 ? &ev.campaign_id :
						f == 4 ? &ev.user_id : &ev.store_id;

					rc = int_value(&v, &i) ?
						ads_check_id_value(i, name, dst, detail, detail_len) :
						ads_field_reason(ADS_R_WRONG_TYPE, name, "is not an integer", detail, detail_len);
				}
				break;
			case 6:				/* ts */
				if (int_value(&v, &i))
					rc = ads_check_ts_value(i, r->fmt.ts_format, name, &ev.ts_us, detail, detail_len);
				else if (text_value(&v, &s, &n))
					rc = ads_check_ts_text(s, n, name, &ev.ts_us, detail, detail_len);
				else
					rc = ads_field_reason(ADS_R_WRONG_TYPE, name,
										  r->fmt.ts_format == ADS_TS_RFC3339 ?
										  "is not an RFC 3339 string" :
										  "is not an integer or RFC 3339 string",
										  detail, detail_len);
				break;
		}
	}
	if (rc != ADS_OK)
		return rc;
	if (out != NULL)
		*out = ev;
	if (detail != NULL && detail_len > 0)
		detail[0] = '\0';
	return ADS_OK;
}
