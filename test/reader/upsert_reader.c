/*-------------------------------------------------------------------------
 *
 * upsert_reader.c
 *	  Read a Kafka topic the way a Pinot upsert table would, and print what
 *	  such a table would hold.
 *
 * adstream publishes its results as upsert records: the message key is the
 * Pinot primary key and the JSON value carries a "version" that only grows
 * per key.  Tests need to know what Pinot would show without running Pinot,
 * so this program applies the same rule to a whole topic:
 *
 *	  - the high watermark of every partition is read first, and every
 *		partition is consumed from its beginning up to that watermark
 *		(explicit assignment, isolation.level=read_committed, no consumer
 *		group, no offset commits), so the result describes the topic as it
 *		was when the program started;
 *	  - for each message key the value with the greatest top-level integer
 *		"version" is kept; on a tie the message consumed later wins, as in
 *		Pinot, where the later record of a partition replaces an equal one;
 *	  - every kept value is printed to stdout, one per line, in no
 *		particular order, followed on stderr by "read=N keys=K".
 *
 * A partition whose low watermark is above 0 has lost its oldest records
 * (retention, or the mock cluster's size limit), so the result may miss
 * keys: each such partition is named on stderr in a line containing
 * "trimmed", before the summary.  --watermarks prints, instead of reading
 * anything, one line "PARTITION LOW HIGH" per partition; it works on any
 * topic, whatever its records look like.
 *
 * --copies reads any topic as well, and prints instead one line "PARTITION
 * OFFSET" per message whose "adstream-seq" header (adstream-loadgen
 * --seq-headers: one value per send) an earlier message already had: the
 * copies the broker stored of a retried write.  Messages without that
 * header are never copies.  The summary line is then "read=N copies=C".
 *
 * The value is printed as it was received, except that line breaks (which
 * in valid JSON can only be insignificant whitespace) become spaces, so
 * that every value is exactly one line.
 *
 * A key that appears in more than one partition would break Pinot's upsert
 * (each partition is upserted on its own); such keys are counted and
 * reported on stderr as a warning, before the summary line.
 *
 * Usage:
 *	  adstream-upsert-reader --brokers B --topic T [--timeout-s SECONDS]
 *	                         [--watermarks | --copies]
 *	                         [-X librdkafka.property=value]...
 *
 * Exit status: 0 on success; 1 on a usage error, a Kafka error, or when the
 * watermarks were not reached within the timeout (default 30 s, for the
 * whole run); 2 when a message has no key or its value is not a JSON
 * object with a top-level integer "version" (that message's partition and
 * offset are named on stderr).
 *
 * Note: librdkafka's mock cluster does not filter aborted transactions, so
 * against it this program also sees records of aborted transactions.
 *
 * Build:
 *	  cc -O2 -Wall -Wextra -Werror -o /tmp/adstream-upsert-reader \
 *	     test/reader/upsert_reader.c $(pkg-config --cflags --libs rdkafka)
 *
 *-------------------------------------------------------------------------
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define EXIT_KAFKA		1
#define EXIT_BAD_RECORD	2

#define MAX_JSON_DEPTH	512
#define POLL_MS			200
#define MAX_PROPS		64
#define SEQ_HEADER		"adstream-seq"	/* adstream-loadgen --seq-headers */

static const char *progname = "adstream-upsert-reader";

static void
die(int status, const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		die(EXIT_KAFKA, "out of memory");
	return p;
}

static void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		die(EXIT_KAFKA, "out of memory");
	return p;
}

static void *
xmemdup(const void *src, size_t n)
{
	void	   *p = xmalloc(n);

	if (n > 0)
		memcpy(p, src, n);
	return p;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until the deadline, at least 0 and at most INT_MAX. */
static int
remaining_ms(int64_t deadline)
{
	int64_t		left = deadline - now_ms();

	if (left < 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int) left;
}

/*-------------------------------------------------------------------------
 * Finding the top-level "version" of a JSON object
 *
 * The value must be one JSON object (RFC 8259 grammar, surrounding
 * whitespace allowed).  The whole text is checked, strings included, so
 * that a "version" inside a string or a nested object is never mistaken
 * for the top-level one.  Member names are compared after unescaping, as
 * a JSON parser such as Pinot's would.
 *-------------------------------------------------------------------------
 */

typedef enum
{
	V_OK,
	V_NOT_OBJECT,				/* not a JSON object (or not valid JSON) */
	V_MISSING,					/* no top-level "version" */
	V_NOT_INTEGER,				/* "version" is not an integer */
	V_OUT_OF_RANGE,				/* "version" does not fit in 64 bits */
	V_DUPLICATE					/* "version" appears more than once */
} VersionResult;

typedef struct
{
	const unsigned char *p;
	const unsigned char *end;
} Scan;

static void
skip_ws(Scan *s)
{
	while (s->p < s->end &&
		   (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Scan a string starting at its opening quote.  If name is not NULL, the
 * unescaped text is stored there when it is short and plain ASCII (enough
 * to recognise "version"); *name_len is set to its length, or to SIZE_MAX
 * when it was not stored.
 */
static bool
scan_string(Scan *s, char *name, size_t name_cap, size_t *name_len)
{
	size_t		n = 0;
	bool		storable = (name != NULL);

	if (s->p >= s->end || *s->p != '"')
		return false;
	s->p++;
	for (;;)
	{
		unsigned char c;
		unsigned	cp;

		if (s->p >= s->end)
			return false;
		c = *s->p++;
		if (c == '"')
			break;
		if (c < 0x20)
			return false;		/* control characters must be escaped */
		if (c != '\\')
		{
			cp = c;
			if (c >= 0x80)
				storable = false;
		}
		else
		{
			if (s->p >= s->end)
				return false;
			c = *s->p++;
			switch (c)
			{
				case '"':
				case '\\':
				case '/':
					cp = c;
					break;
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
					cp = 0;
					for (int i = 0; i < 4; i++)
					{
						int			h;

						if (s->p >= s->end || (h = hexval(*s->p)) < 0)
							return false;
						cp = cp * 16 + (unsigned) h;
						s->p++;
					}
					if (cp >= 0x80)
						storable = false;
					break;
				default:
					return false;
			}
		}
		if (storable)
		{
			if (n + 1 >= name_cap)
				storable = false;
			else
				name[n++] = (char) cp;
		}
	}
	if (name != NULL)
	{
		if (storable)
			name[n] = '\0';
		*name_len = storable ? n : SIZE_MAX;
	}
	return true;
}

/*
 * Scan a number.  *is_int tells whether it has neither fraction nor
 * exponent; then *value holds it and *overflow whether it did not fit.
 */
static bool
scan_number(Scan *s, bool *is_int, int64_t *value, bool *overflow)
{
	bool		neg = false;
	uint64_t	mag = 0;
	uint64_t	limit;

	*is_int = true;
	*overflow = false;
	if (s->p < s->end && *s->p == '-')
	{
		neg = true;
		s->p++;
	}
	limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
	if (s->p >= s->end || *s->p < '0' || *s->p > '9')
		return false;
	if (*s->p == '0')
		s->p++;
	else
	{
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		{
			unsigned	d = (unsigned) (*s->p - '0');

			if (mag > (limit - d) / 10)
				*overflow = true;
			else
				mag = mag * 10 + d;
			s->p++;
		}
	}
	if (s->p < s->end && *s->p == '.')
	{
		*is_int = false;
		s->p++;
		if (s->p >= s->end || *s->p < '0' || *s->p > '9')
			return false;
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
			s->p++;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
	{
		*is_int = false;
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (s->p >= s->end || *s->p < '0' || *s->p > '9')
			return false;
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
			s->p++;
	}
	if (!*overflow)
	{
		if (neg)
			*value = mag == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) mag;
		else
			*value = (int64_t) mag;
	}
	return true;
}

static bool
scan_literal(Scan *s, const char *lit)
{
	size_t		n = strlen(lit);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return false;
	s->p += n;
	return true;
}

static bool scan_value(Scan *s, int depth);

static bool
scan_container(Scan *s, int depth)
{
	bool		is_object = (*s->p == '{');
	unsigned char close = is_object ? '}' : ']';

	if (depth >= MAX_JSON_DEPTH)
		return false;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close)
	{
		s->p++;
		return true;
	}
	for (;;)
	{
		skip_ws(s);
		if (is_object)
		{
			if (!scan_string(s, NULL, 0, NULL))
				return false;
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return false;
			s->p++;
			skip_ws(s);
		}
		if (!scan_value(s, depth + 1))
			return false;
		skip_ws(s);
		if (s->p >= s->end)
			return false;
		if (*s->p == ',')
		{
			s->p++;
			continue;
		}
		if (*s->p == close)
		{
			s->p++;
			return true;
		}
		return false;
	}
}

static bool
scan_value(Scan *s, int depth)
{
	bool		is_int,
				overflow;
	int64_t		v;

	if (s->p >= s->end)
		return false;
	switch (*s->p)
	{
		case '{':
		case '[':
			return scan_container(s, depth);
		case '"':
			return scan_string(s, NULL, 0, NULL);
		case 't':
			return scan_literal(s, "true");
		case 'f':
			return scan_literal(s, "false");
		case 'n':
			return scan_literal(s, "null");
		default:
			return scan_number(s, &is_int, &v, &overflow);
	}
}

static VersionResult
find_version(const void *buf, size_t len, int64_t *version)
{
	Scan		s = {(const unsigned char *) buf, (const unsigned char *) buf + len};
	VersionResult result = V_MISSING;
	bool		found = false;

	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{')
		return V_NOT_OBJECT;
	s.p++;
	skip_ws(&s);
	if (s.p < s.end && *s.p == '}')
		s.p++;
	else
	{
		for (;;)
		{
			char		name[16];
			size_t		name_len;

			skip_ws(&s);
			if (!scan_string(&s, name, sizeof(name), &name_len))
				return V_NOT_OBJECT;
			skip_ws(&s);
			if (s.p >= s.end || *s.p != ':')
				return V_NOT_OBJECT;
			s.p++;
			skip_ws(&s);
			if (name_len == 7 && memcmp(name, "version", 7) == 0)
			{
				if (found)
					result = V_DUPLICATE;
				found = true;
				if (s.p < s.end && (*s.p == '-' || (*s.p >= '0' && *s.p <= '9')))
				{
					bool		is_int,
								overflow;
					int64_t		v = 0;

					if (!scan_number(&s, &is_int, &v, &overflow))
						return V_NOT_OBJECT;
					if (result != V_DUPLICATE)
					{
						if (!is_int)
							result = V_NOT_INTEGER;
						else if (overflow)
							result = V_OUT_OF_RANGE;
						else
						{
							result = V_OK;
							*version = v;
						}
					}
				}
				else
				{
					if (!scan_value(&s, 1))
						return V_NOT_OBJECT;
					if (result != V_DUPLICATE)
						result = V_NOT_INTEGER;
				}
			}
			else if (!scan_value(&s, 1))
				return V_NOT_OBJECT;
			skip_ws(&s);
			if (s.p >= s.end)
				return V_NOT_OBJECT;
			if (*s.p == ',')
			{
				s.p++;
				continue;
			}
			if (*s.p == '}')
			{
				s.p++;
				break;
			}
			return V_NOT_OBJECT;
		}
	}
	skip_ws(&s);
	if (s.p != s.end)
		return V_NOT_OBJECT;	/* trailing bytes after the object */
	return result;
}

static const char *
version_error(VersionResult r)
{
	switch (r)
	{
		case V_NOT_OBJECT:
			return "the value is not a valid JSON object";
		case V_MISSING:
			return "the value has no top-level \"version\"";
		case V_NOT_INTEGER:
			return "the top-level \"version\" is not an integer";
		case V_OUT_OF_RANGE:
			return "the top-level \"version\" does not fit in a signed 64-bit integer";
		case V_DUPLICATE:
			return "the value has more than one top-level \"version\"";
		case V_OK:
			break;
	}
	return "ok";
}

/*-------------------------------------------------------------------------
 * The upsert state: message key -> kept value
 *-------------------------------------------------------------------------
 */

typedef struct
{
	char	   *key;			/* NULL: empty slot */
	size_t		key_len;
	uint64_t	hash;
	int64_t		version;
	char	   *value;
	size_t		value_len;
	int32_t		partition;		/* partition of the first message seen */
	bool		split;			/* also seen in another partition */
} Entry;

static Entry *table;
static size_t table_cap;		/* a power of two */
static size_t table_used;
static size_t keys_split;

static uint64_t
hash_bytes(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint64_t	h = UINT64_C(14695981039346656037);

	for (size_t i = 0; i < len; i++)
	{
		h ^= p[i];
		h *= UINT64_C(1099511628211);
	}
	return h;
}

static void
table_grow(void)
{
	size_t		new_cap = table_cap ? table_cap * 2 : 1024;
	Entry	   *new_table = xcalloc(new_cap, sizeof(Entry));

	for (size_t i = 0; i < table_cap; i++)
	{
		Entry	   *e = &table[i];
		size_t		j;

		if (e->key == NULL)
			continue;
		for (j = e->hash & (new_cap - 1); new_table[j].key != NULL; j = (j + 1) & (new_cap - 1))
			;
		new_table[j] = *e;
	}
	free(table);
	table = new_table;
	table_cap = new_cap;
}

/*
 * The entry of a key; a new one (*is_new, no value, the key copied) if the
 * key was not there.
 */
static Entry *
table_entry(const void *key, size_t key_len, bool *is_new)
{
	uint64_t	h = hash_bytes(key, key_len);
	Entry	   *e;

	if ((table_used + 1) * 10 > table_cap * 7)
		table_grow();
	for (size_t i = h & (table_cap - 1);; i = (i + 1) & (table_cap - 1))
	{
		e = &table[i];
		if (e->key == NULL)
		{
			/* (A zero-length key is stored as a 1-byte allocation.) */
			e->key = xmemdup(key, key_len);
			e->key_len = key_len;
			e->hash = h;
			table_used++;
			*is_new = true;
			return e;
		}
		if (e->hash == h && e->key_len == key_len &&
			(key_len == 0 || memcmp(e->key, key, key_len) == 0))
		{
			*is_new = false;
			return e;
		}
	}
}

/* Apply Pinot's upsert rule to one message. */
static void
upsert(const void *key, size_t key_len, int64_t version,
	   const void *value, size_t value_len, int32_t partition)
{
	bool		is_new;
	Entry	   *e = table_entry(key, key_len, &is_new);

	if (is_new)
	{
		e->version = version;
		e->value = xmemdup(value, value_len);
		e->value_len = value_len;
		e->partition = partition;
		e->split = false;
		return;
	}
	if (partition != e->partition && !e->split)
	{
		e->split = true;
		keys_split++;
	}
	/* Greater version wins; on a tie the later message does. */
	if (version >= e->version)
	{
		free(e->value);
		e->value = xmemdup(value, value_len);
		e->value_len = value_len;
		e->version = version;
	}
}

/* One value per line: line breaks, only possible as whitespace, become spaces. */
static void
print_value(const char *value, size_t len)
{
	size_t		start = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (value[i] == '\n' || value[i] == '\r')
		{
			fwrite(value + start, 1, i - start, stdout);
			fputc(' ', stdout);
			start = i + 1;
		}
	}
	fwrite(value + start, 1, len - start, stdout);
	fputc('\n', stdout);
}

/*-------------------------------------------------------------------------
 * Kafka
 *-------------------------------------------------------------------------
 */

typedef struct
{
	int32_t		id;
	int64_t		low;
	int64_t		target;			/* high watermark at start: read up to here */
	bool		done;
} Part;

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: %s --brokers B --topic T [--timeout-s SECONDS] [--watermarks | --copies]\n"
			"          [-X property=value]...\n"
			"\n"
			"Reads every partition of topic T from its beginning up to the high watermark\n"
			"it had at start (isolation.level=read_committed), keeps for each message key\n"
			"the value with the greatest top-level integer \"version\" (ties: the later\n"
			"message), prints each kept value on one line to stdout and \"read=N keys=K\"\n"
			"to stderr; partitions whose oldest records are gone are named there as\n"
			"\"trimmed\".  --watermarks prints \"PARTITION LOW HIGH\" per partition and\n"
			"reads nothing.  --copies prints \"PARTITION OFFSET\" per message whose\n"
			"\"" SEQ_HEADER "\" header an earlier message had (a write the broker stored\n"
			"twice).  -X passes a librdkafka property (e.g. security settings).\n"
			"\n"
			"Exit status: 0 ok; 1 usage, Kafka error or timeout (default 30 s);\n"
			"2 a message without key or without a parsable \"version\".\n",
			progname);
}

static void
conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		die(EXIT_KAFKA, "invalid librdkafka property \"%s\": %s", name, errstr);
}

/* Option value: "--name value" or "--name=value". */
static bool
take_option(const char *name, int argc, char **argv, int *i, const char **value)
{
	size_t		n = strlen(name);
	const char *arg = argv[*i];

	if (strncmp(arg, name, n) != 0)
		return false;
	if (arg[n] == '=')
	{
		*value = arg + n + 1;
		return true;
	}
	if (arg[n] != '\0')
		return false;
	if (*i + 1 >= argc)
	{
		fprintf(stderr, "%s: option %s needs a value\n", progname, name);
		usage(stderr);
		exit(EXIT_KAFKA);
	}
	*value = argv[++*i];
	return true;
}

int
main(int argc, char **argv)
{
	const char *brokers = NULL;
	const char *topic = NULL;
	long		timeout_s = 30;
	const char *props[MAX_PROPS];
	int			nprops = 0;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	const struct rd_kafka_metadata *md = NULL;
	const struct rd_kafka_metadata_topic *mt = NULL;
	rd_kafka_topic_partition_list_t *assignment;
	rd_kafka_resp_err_t err;
	char		errstr[512];
	char		group_id[128];
	int64_t		deadline;
	Part	   *parts;
	int			nparts;
	int			pending = 0;
	uint64_t	nread = 0;
	bool		watermarks_only = false;
	bool		copies_only = false;
	uint64_t	ncopies = 0;
	int			ntrimmed = 0;
	rd_kafka_resp_err_t last_warned = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (int i = 1; i < argc; i++)
	{
		const char *v;

		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (take_option("--brokers", argc, argv, &i, &v))
			brokers = v;
		else if (take_option("--topic", argc, argv, &i, &v))
			topic = v;
		else if (take_option("--timeout-s", argc, argv, &i, &v))
		{
			char	   *endp;

			errno = 0;
			timeout_s = strtol(v, &endp, 10);
			if (errno != 0 || endp == v || *endp != '\0' || timeout_s < 1 || timeout_s > 86400)
				die(EXIT_KAFKA, "--timeout-s must be an integer from 1 to 86400, not \"%s\"", v);
		}
		else if (strcmp(argv[i], "--watermarks") == 0)
			watermarks_only = true;
		else if (strcmp(argv[i], "--copies") == 0)
			copies_only = true;
		else if (strcmp(argv[i], "-X") == 0 && i + 1 < argc)
		{
			if (nprops == MAX_PROPS)
				die(EXIT_KAFKA, "too many -X properties");
			props[nprops++] = argv[++i];
		}
		else
		{
			fprintf(stderr, "%s: unexpected argument \"%s\"\n", progname, argv[i]);
			usage(stderr);
			return EXIT_KAFKA;
		}
	}
	if (brokers == NULL || brokers[0] == '\0' || topic == NULL || topic[0] == '\0')
	{
		fprintf(stderr, "%s: --brokers and --topic are required\n", progname);
		usage(stderr);
		return EXIT_KAFKA;
	}
	deadline = now_ms() + (int64_t) timeout_s * 1000;

	/*
	 * Partitions are assigned explicitly and nothing is ever committed.
	 * librdkafka wants a group.id for rd_kafka_assign(); a per-process name
	 * is given, and the group never joins, so it leaves no trace.
	 */
	snprintf(group_id, sizeof(group_id), "%s-%ld-%ld", progname, (long) getpid(), (long) time(NULL));
	conf = rd_kafka_conf_new();
	conf_set(conf, "bootstrap.servers", brokers);
	conf_set(conf, "group.id", group_id);
	conf_set(conf, "client.id", progname);
	conf_set(conf, "isolation.level", "read_committed");
	conf_set(conf, "enable.auto.commit", "false");
	conf_set(conf, "enable.auto.offset.store", "false");
	conf_set(conf, "enable.partition.eof", "true");
	conf_set(conf, "auto.offset.reset", "earliest");
	for (int i = 0; i < nprops; i++)
	{
		char	   *name = strdup(props[i]);
		char	   *eq = name ? strchr(name, '=') : NULL;

		if (eq == NULL)
			die(EXIT_KAFKA, "-X needs property=value, not \"%s\"", props[i]);
		*eq = '\0';
		conf_set(conf, name, eq + 1);
		free(name);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		die(EXIT_KAFKA, "could not create a Kafka consumer: %s", errstr);
	rd_kafka_poll_set_consumer(rk);

	/* Partitions of the topic; retry while leaders are not known yet. */
	rkt = rd_kafka_topic_new(rk, topic, NULL);
	if (rkt == NULL)
		die(EXIT_KAFKA, "invalid topic \"%s\": %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
	for (int64_t unknown_since = -1;;)
	{
		bool		ready = false;

		err = rd_kafka_metadata(rk, 0, rkt, &md, remaining_ms(deadline) < 5000 ? remaining_ms(deadline) : 5000);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			mt = NULL;
			for (int t = 0; t < md->topic_cnt; t++)
				if (strcmp(md->topics[t].topic, topic) == 0)
					mt = &md->topics[t];
			if (mt != NULL && mt->err == RD_KAFKA_RESP_ERR_NO_ERROR && mt->partition_cnt > 0)
				ready = true;
			else if (mt != NULL && mt->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
				die(EXIT_KAFKA, "topic \"%s\": %s", topic, rd_kafka_err2str(mt->err));
			else if (mt != NULL && mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
			{
				/* Give a topic that is being created a moment to appear. */
				if (unknown_since < 0)
					unknown_since = now_ms();
				else if (now_ms() - unknown_since >= 3000)
					die(EXIT_KAFKA, "topic \"%s\" does not exist", topic);
			}
		}
		if (ready)
			break;
		if (remaining_ms(deadline) == 0)
			die(EXIT_KAFKA, "could not read the metadata of topic \"%s\" within %ld s: %s", topic, timeout_s,
				rd_kafka_err2str(err != RD_KAFKA_RESP_ERR_NO_ERROR ? err :
								 mt != NULL ? mt->err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
		if (md != NULL)
		{
			rd_kafka_metadata_destroy(md);
			md = NULL;
		}
		rd_kafka_poll(rk, 100);
	}

	/* Where each partition ends now. */
	nparts = mt->partition_cnt;
	parts = xcalloc((size_t) nparts, sizeof(Part));
	for (int i = 0; i < nparts; i++)
		parts[i].id = mt->partitions[i].id;
	rd_kafka_metadata_destroy(md);
	assignment = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts; i++)
	{
		Part	   *p = &parts[i];

		for (;;)
		{
			err = rd_kafka_query_watermark_offsets(rk, topic, p->id, &p->low, &p->target,
												   remaining_ms(deadline) < 5000 ? remaining_ms(deadline) : 5000);
			if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
				break;
			if (remaining_ms(deadline) == 0)
				die(EXIT_KAFKA, "could not read the watermarks of partition %" PRId32 " of \"%s\": %s",
					p->id, topic, rd_kafka_err2str(err));
			rd_kafka_poll(rk, 100);
		}
		if (watermarks_only)
		{
			printf("%" PRId32 " %" PRId64 " %" PRId64 "\n", p->id, p->low, p->target);
			continue;
		}
		if (p->low > 0)
		{
			fprintf(stderr, "%s: warning: partition %" PRId32 " of \"%s\" starts at offset %" PRId64
					": older records were trimmed\n", progname, p->id, topic, p->low);
			ntrimmed++;
		}
		p->done = (p->target <= p->low);
		if (!p->done)
		{
			rd_kafka_topic_partition_list_add(assignment, topic, p->id)->offset = RD_KAFKA_OFFSET_BEGINNING;
			pending++;
		}
	}
	if (watermarks_only)
	{
		rd_kafka_topic_partition_list_destroy(assignment);
		rd_kafka_topic_destroy(rkt);
		rd_kafka_destroy(rk);
		free(parts);
		if (fflush(stdout) != 0 || ferror(stdout))
			die(EXIT_KAFKA, "could not write to stdout: %s", strerror(errno));
		return 0;
	}
	if (pending > 0 && (err = rd_kafka_assign(rk, assignment)) != RD_KAFKA_RESP_ERR_NO_ERROR)
		die(EXIT_KAFKA, "could not assign the partitions of \"%s\": %s", topic, rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(assignment);

	while (pending > 0)
	{
		rd_kafka_message_t *m;
		Part	   *p = NULL;
		int64_t		version = 0;
		VersionResult vr;

		if (remaining_ms(deadline) == 0)
		{
			fprintf(stderr, "%s: timed out after %ld s; partitions not read to their watermark:", progname, timeout_s);
			for (int i = 0; i < nparts; i++)
				if (!parts[i].done)
					fprintf(stderr, " %" PRId32 " (up to %" PRId64 ")", parts[i].id, parts[i].target);
			fputc('\n', stderr);
			exit(EXIT_KAFKA);
		}
		m = rd_kafka_consumer_poll(rk, remaining_ms(deadline) < POLL_MS ? remaining_ms(deadline) : POLL_MS);
		if (m == NULL)
			continue;
		if (m->rkt != NULL && strcmp(rd_kafka_topic_name(m->rkt), topic) == 0)
		{
			for (int i = 0; i < nparts; i++)
				if (parts[i].id == m->partition)
					p = &parts[i];
		}

		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			/* m->offset is where the partition ends now (aborted data and markers included). */
			if (p != NULL && !p->done && m->offset >= p->target)
			{
				p->done = true;
				pending--;
			}
			rd_kafka_message_destroy(m);
			continue;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			char		fatal[512];

			if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR)
				die(EXIT_KAFKA, "fatal Kafka error: %s", fatal);
			if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
				m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
				m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
				m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE)
				die(EXIT_KAFKA, "reading \"%s\": %s", topic, rd_kafka_message_errstr(m));
			/* Transient (a broker away, a leader moving): librdkafka retries. */
			if (m->err != last_warned)
			{
				fprintf(stderr, "%s: warning: %s (retrying)\n", progname, rd_kafka_message_errstr(m));
				last_warned = m->err;
			}
			rd_kafka_message_destroy(m);
			continue;
		}
		if (p == NULL || p->done || m->offset >= p->target)
		{
			/* Written after we started, or a partition already complete. */
			if (p != NULL && !p->done)
			{
				p->done = true;
				pending--;
			}
			rd_kafka_message_destroy(m);
			continue;
		}

		if (copies_only)
		{
			rd_kafka_headers_t *hdrs;
			const void *seq;
			size_t		seq_len;
			bool		is_new;

			if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
				rd_kafka_header_get_last(hdrs, SEQ_HEADER, &seq, &seq_len) == RD_KAFKA_RESP_ERR_NO_ERROR)
			{
				table_entry(seq, seq_len, &is_new);
				if (!is_new)
				{
					printf("%" PRId32 " %" PRId64 "\n", m->partition, m->offset);
					ncopies++;
				}
			}
		}
		else
		{
			if (m->key == NULL)
				die(EXIT_BAD_RECORD, "partition %" PRId32 " offset %" PRId64 ": the message has no key",
					m->partition, m->offset);
			vr = find_version(m->payload, m->payload ? m->len : 0, &version);
			if (vr != V_OK)
				die(EXIT_BAD_RECORD, "partition %" PRId32 " offset %" PRId64 ": %s",
					m->partition, m->offset, m->payload ? version_error(vr) : "the message has no value");
			upsert(m->key, m->key_len, version, m->payload, m->len, m->partition);
		}
		nread++;

		if (m->offset + 1 >= p->target)
		{
			p->done = true;
			pending--;
		}
		rd_kafka_message_destroy(m);
	}

	rd_kafka_consumer_close(rk);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);

	if (copies_only)
	{
		if (fflush(stdout) != 0 || ferror(stdout))
			die(EXIT_KAFKA, "could not write to stdout: %s", strerror(errno));
		fprintf(stderr, "read=%" PRIu64 " copies=%" PRIu64 "\n", nread, ncopies);
		free(parts);
		return 0;
	}
	for (size_t i = 0; i < table_cap; i++)
		if (table[i].key != NULL)
			print_value(table[i].value, table[i].value_len);
	if (fflush(stdout) != 0 || ferror(stdout))
		die(EXIT_KAFKA, "could not write to stdout: %s", strerror(errno));

	if (keys_split > 0)
		fprintf(stderr, "%s: warning: %zu keys appear in more than one partition; "
				"a Pinot upsert table would keep one row per partition for them\n",
				progname, keys_split);
	if (ntrimmed > 0)
		fprintf(stderr, "%s: warning: %d partitions were trimmed; keys may be missing\n",
				progname, ntrimmed);
	fprintf(stderr, "read=%" PRIu64 " keys=%zu\n", nread, table_used);
	free(parts);
	return 0;
}
