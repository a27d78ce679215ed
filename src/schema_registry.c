/*
 * schema_registry.c
 *     Fetch and cache Avro writer schemas by id: see include/schema_registry.h.
 *
 * One blocking libcurl request at a time, on the calling thread (in the
 * worker, the worker's own process thread, never a librdkafka thread),
 * with a connect and a total timeout, no redirects and only http/https.
 * The cache is a small open array: a source meets a handful of schema ids
 * over its life, and the last id hit is checked first, which is the id of
 * nearly every record.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* memmem */
#endif
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schema_registry.h"

typedef struct CacheEntry
{
	uint32_t	id;
	AdsAvroReader *reader;		/* NULL: unknown */
	char	   *why;			/* unknown: the registry's reason */
	time_t		expires;		/* unknown ids are asked again after this; 0 = never */
} CacheEntry;

struct AdsSchemaRegistry
{
	char	   *url;
	char	   *shown_url;		/* url without credentials, for messages */
	AdsFormat	fmt;
	long		timeout_ms;
	int			(*should_abort) (void);
	CURL	   *curl;
	CacheEntry *cache;
	int			ncache;
	int			cap;
	int			last;			/* index of the last hit, or -1 */
};

typedef struct Body
{
	char	   *data;
	size_t		len;
	int			too_big;
} Body;

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

int
ads_schema_registry_url_ok(const char *url, char *err, size_t err_len)
{
	size_t		i;

	if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
	{
		set_err(err, err_len, "the schema registry URL must begin with http:// or https://");
		return 0;
	}
	if (strlen(url) > 1024)
	{
		set_err(err, err_len, "the schema registry URL is longer than 1024 bytes");
		return 0;
	}
	for (i = 0; url[i]; i++)
		if ((unsigned char) url[i] <= 0x20 || (unsigned char) url[i] >= 0x7f ||
			url[i] == '?' || url[i] == '#')
		{
			set_err(err, err_len, "the schema registry URL must be printable ASCII without spaces, query or fragment");
			return 0;
		}
	return 1;
}

/*
 * A URL may carry credentials ("https://key:secret@registry"); messages
 * (last_error, the log) show it without them.
 */
static char *
hide_credentials(const char *url)
{
	const char *host = strstr(url, "://");
	const char *at,
			   *slash;
	char	   *out;

	if (host == NULL)
		return strdup(url);
	host += 3;
	slash = strchr(host, '/');
	at = memchr(host, '@', slash ? (size_t) (slash - host) : strlen(host));
	if (at == NULL)
		return strdup(url);
	out = malloc(strlen(url) + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, url, (size_t) (host - url));
	strcpy(out + (host - url), "***@");
	strcat(out, at + 1);
	return out;
}

AdsSchemaRegistry *
ads_schema_registry_new(const char *url, const AdsFormat *fmt, long timeout_ms,
				 int (*should_abort) (void))
{
	static int	curl_ready = 0;
	AdsSchemaRegistry *reg = calloc(1, sizeof(AdsSchemaRegistry));
	size_t		n;

	if (reg == NULL)
		return NULL;
	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			free(reg);
			return NULL;
		}
		curl_ready = 1;
	}
	reg->url = strdup(url);
	if (reg->url == NULL)
	{
		free(reg);
		return NULL;
	}
	/* no trailing slash: paths are appended */
	n = strlen(reg->url);
	while (n > 0 && reg->url[n - 1] == '/')
		reg->url[--n] = '\0';
	reg->shown_url = hide_credentials(reg->url);
	if (reg->shown_url == NULL)
	{
		free(reg->url);
		free(reg);
		return NULL;
	}
	reg->fmt = *fmt;
	reg->timeout_ms = timeout_ms;
	reg->should_abort = should_abort;
	reg->last = -1;
	return reg;
}

void
ads_schema_registry_free(AdsSchemaRegistry *reg)
{
	int			i;

	if (reg == NULL)
		return;
	for (i = 0; i < reg->ncache; i++)
	{
		ads_avro_reader_free(reg->cache[i].reader);
		free(reg->cache[i].why);
	}
	free(reg->cache);
	if (reg->curl)
		curl_easy_cleanup(reg->curl);
	free(reg->url);
	free(reg->shown_url);
	free(reg);
}

static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Body	   *b = userdata;
	size_t		n = size * nmemb;
	char	   *grown;

	if (b->len + n > ADS_REGISTRY_MAX_RESPONSE)
	{
		b->too_big = 1;
		return 0;				/* makes curl fail the transfer */
	}
	grown = realloc(b->data, b->len + n + 1);
	if (grown == NULL)
		return 0;
	b->data = grown;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static int
progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	AdsSchemaRegistry *reg = clientp;

	(void) dltotal;
	(void) dlnow;
	(void) ultotal;
	(void) ulnow;
	return reg->should_abort != NULL && reg->should_abort() ? 1 : 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
hex4(const char *s, const char *end, unsigned *cp)
{
	int			i;

	*cp = 0;
	if (end - s < 4)
		return 0;
	for (i = 0; i < 4; i++)
	{
		int			h = hexval(s[i]);

		if (h < 0)
			return 0;
		*cp = (*cp << 4) | (unsigned) h;
	}
	return 1;
}

/*
 * The value of the member "schema" of the registry's JSON answer, decoded:
 * malloc'd, NUL-terminated; NULL if there is none.  The schema is a JSON
 * string holding the schema's JSON text, so inside it every quote is
 * escaped and the key cannot be confused with its contents.
 */
static char *
schema_text(const char *body, size_t len, size_t *out_len)
{
	const char *end = body + len;
	const char *p = body;
	char	   *out,
			   *o;

	for (;;)
	{
		const char *k = memmem(p, (size_t) (end - p), "\"schema\"", 8);

		if (k == NULL)
			return NULL;
		p = k + 8;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		if (p < end && *p == ':')
			break;
	}
	p++;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (p >= end || *p != '"')
		return NULL;
	p++;
	out = o = malloc((size_t) (end - p) + 1);
	if (out == NULL)
		return NULL;
	while (p < end && *p != '"')
	{
		unsigned	cp;

		if (*p != '\\')
		{
			*o++ = *p++;
			continue;
		}
		if (end - p < 2)
			break;
		p++;
		switch (*p)
		{
			case 'n':
				*o++ = '\n';
				p++;
				continue;
			case 't':
				*o++ = '\t';
				p++;
				continue;
			case 'r':
				*o++ = '\r';
				p++;
				continue;
			case 'b':
				*o++ = '\b';
				p++;
				continue;
			case 'f':
				*o++ = '\f';
				p++;
				continue;
			case 'u':
				if (!hex4(p + 1, end, &cp))
					goto bad;
				p += 5;
				if (cp >= 0xD800 && cp <= 0xDBFF)
				{
					unsigned	lo;

					if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) ||
						lo < 0xDC00 || lo > 0xDFFF)
						goto bad;
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					p += 6;
				}
				else if (cp >= 0xDC00 && cp <= 0xDFFF)
					goto bad;
				if (cp < 0x80)
					*o++ = (char) cp;
				else if (cp < 0x800)
				{
					*o++ = (char) (0xC0 | (cp >> 6));
					*o++ = (char) (0x80 | (cp & 0x3F));
				}
				else if (cp < 0x10000)
				{
					*o++ = (char) (0xE0 | (cp >> 12));
					*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
					*o++ = (char) (0x80 | (cp & 0x3F));
				}
				else
				{
					*o++ = (char) (0xF0 | (cp >> 18));
					*o++ = (char) (0x80 | ((cp >> 12) & 0x3F));
					*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
					*o++ = (char) (0x80 | (cp & 0x3F));
				}
				continue;
			default:			/* '"', '\\', '/' */
				*o++ = *p++;
				continue;
		}
	}
	if (p >= end)
		goto bad;
	*o = '\0';
	*out_len = (size_t) (o - out);
	return out;
bad:
	free(out);
	return NULL;
}

static CacheEntry *
cache_add(AdsSchemaRegistry *reg, uint32_t id)
{
	int			i;

	for (i = 0; i < reg->ncache; i++)
		if (reg->cache[i].id == id)
		{
			ads_avro_reader_free(reg->cache[i].reader);
			free(reg->cache[i].why);
			memset(&reg->cache[i], 0, sizeof(CacheEntry));
			reg->cache[i].id = id;
			return &reg->cache[i];
		}
	if (reg->ncache == reg->cap)
	{
		int			cap = reg->cap ? reg->cap * 2 : 16;
		CacheEntry *grown = realloc(reg->cache, sizeof(CacheEntry) * (size_t) cap);

		if (grown == NULL)
			return NULL;
		reg->cache = grown;
		reg->cap = cap;
	}
	memset(&reg->cache[reg->ncache], 0, sizeof(CacheEntry));
	reg->cache[reg->ncache].id = id;
	return &reg->cache[reg->ncache++];
}

/* Ask the registry; fills *e (reader or why) unless UNAVAILABLE. */
static AdsRegistryResult
fetch(AdsSchemaRegistry *reg, uint32_t id, CacheEntry **ep, char *err, size_t err_len)
{
	char		url[1200],
				shown[1200];
	char		curl_err[CURL_ERROR_SIZE];
	Body		body = {NULL, 0, 0};
	struct curl_slist *headers = NULL;
	CURLcode	cc;
	long		status = 0;
	AdsRegistryResult res;
	CacheEntry *e;

	if (reg->curl == NULL && (reg->curl = curl_easy_init()) == NULL)
	{
		set_err(err, err_len, "schema registry: cannot initialise libcurl");
		return ADS_REG_UNAVAILABLE;
	}
	snprintf(url, sizeof(url), "%s/schemas/ids/%u", reg->url, id);
	snprintf(shown, sizeof(shown), "%s/schemas/ids/%u", reg->shown_url, id);
	curl_easy_reset(reg->curl);
	curl_err[0] = '\0';
	headers = curl_slist_append(headers, "Accept: application/vnd.schemaregistry.v1+json, application/json");
	curl_easy_setopt(reg->curl, CURLOPT_URL, url);
	curl_easy_setopt(reg->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(reg->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(reg->curl, CURLOPT_TIMEOUT_MS, reg->timeout_ms);
	curl_easy_setopt(reg->curl, CURLOPT_CONNECTTIMEOUT_MS, reg->timeout_ms);
	curl_easy_setopt(reg->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(reg->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(reg->curl, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(reg->curl, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(reg->curl, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(reg->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(reg->curl, CURLOPT_XFERINFOFUNCTION, progress);
	curl_easy_setopt(reg->curl, CURLOPT_XFERINFODATA, reg);
	cc = curl_easy_perform(reg->curl);
	curl_slist_free_all(headers);
	if (cc == CURLE_OK)
		curl_easy_getinfo(reg->curl, CURLINFO_RESPONSE_CODE, &status);

	if (cc != CURLE_OK)
	{
		set_err(err, err_len, "schema registry %s: %s", shown,
				body.too_big ? "answer too large" : curl_err[0] ? curl_err : curl_easy_strerror(cc));
		res = ADS_REG_UNAVAILABLE;
	}
	else if (status == 404 && body.data != NULL && strstr(body.data, "40403") != NULL)
	{
		e = cache_add(reg, id);
		if (e == NULL)
		{
			set_err(err, err_len, "schema registry: out of memory");
			res = ADS_REG_UNAVAILABLE;
		}
		else
		{
			char		why[128];

			snprintf(why, sizeof(why), "schema id %u is not in the schema registry", id);
			e->why = strdup(why);
			e->expires = time(NULL) + ADS_REGISTRY_NEGATIVE_TTL_S;
			*ep = e;
			res = ADS_REG_UNKNOWN;
		}
	}
	else if (status != 200)
	{
		set_err(err, err_len, "schema registry %s: HTTP status %ld", shown, status);
		res = ADS_REG_UNAVAILABLE;
	}
	else
	{
		size_t		slen = 0;
		char	   *schema = body.data ? schema_text(body.data, body.len, &slen) : NULL;

		if (schema == NULL)
		{
			set_err(err, err_len, "schema registry %s: the answer has no \"schema\" string", shown);
			res = ADS_REG_UNAVAILABLE;
		}
		else if ((e = cache_add(reg, id)) == NULL)
		{
			set_err(err, err_len, "schema registry: out of memory");
			res = ADS_REG_UNAVAILABLE;
		}
		else
		{
			char		why[256];

			why[0] = '\0';
			e->reader = ads_avro_reader_new(id, schema, slen, &reg->fmt, why, sizeof(why));
			if (e->reader == NULL)
				e->why = strdup(why);	/* never asked again: an id's schema is fixed */
			*ep = e;
			res = e->reader ? ADS_REG_OK : ADS_REG_UNKNOWN;
		}
		free(schema);
	}
	free(body.data);
	return res;
}

AdsRegistryResult
ads_schema_registry_lookup(AdsSchemaRegistry *reg, uint32_t schema_id,
					AdsAvroReader **reader, char *err, size_t err_len)
{
	CacheEntry *e = NULL;
	AdsRegistryResult res;
	int			i;

	if (reg->last >= 0 && reg->cache[reg->last].id == schema_id)
		e = &reg->cache[reg->last];
	else
		for (i = 0; i < reg->ncache; i++)
			if (reg->cache[i].id == schema_id)
			{
				e = &reg->cache[i];
				break;
			}
	if (e != NULL && e->reader == NULL && e->expires != 0 && time(NULL) >= e->expires)
		e = NULL;				/* an unknown id: ask again */
	if (e == NULL)
	{
		res = fetch(reg, schema_id, &e, err, err_len);
		if (res == ADS_REG_UNAVAILABLE)
			return res;
	}
	reg->last = (int) (e - reg->cache);
	if (e->reader == NULL)
	{
		set_err(err, err_len, "%s", e->why ? e->why : "unknown schema");
		return ADS_REG_UNKNOWN;
	}
	*reader = e->reader;
	return ADS_REG_OK;
}
