/*
 * avro_format.h
 *     Avro records in the Confluent wire format (src/avro_format.c): a zero
 *     "magic" byte, the writer schema's id in the schema registry (4 bytes,
 *     big-endian), then the record in Avro's binary encoding.  Pure C on
 *     libavro, without PostgreSQL headers, like event_parse.c: the worker,
 *     the fuzzer and the benchmark share it.
 *
 * A reader is compiled once per schema id and source: libavro parses the
 * writer schema, and each contract field's path (the source's field
 * mapping, see AdsFormat) is resolved to record field positions, so that
 * decoding a record is libavro's read plus a walk down fixed indexes.  The
 * decoded values then get the JSON parser's field checks (ads_check_*), in
 * contract order, with the same reasons.
 *
 * Reasons, in the order they are checked: empty, oversized,
 * bad_magic_byte (first byte not 0), invalid_avro (shorter than the
 * 5-byte header); the schema id is then the caller's business (the
 * registry: unknown_schema); then invalid_avro (the body does not decode
 * with the schema, or has bytes left over), and the field checks
 * (missing_field: not in the schema, or null in a union; wrong_type, ...).
 */
#ifndef ADSTREAM_AVRO_FORMAT_H
#define ADSTREAM_AVRO_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "event_parse.h"

#define ADS_AVRO_HEADER_LEN 5

typedef struct AdsAvroReader AdsAvroReader;

/*
 * Compile schema_json (the registry's text for schema_id) for fmt's field
 * mapping.  NULL with a message in err when libavro cannot parse it or it
 * is not a record.  A path that the schema lacks is not an error here:
 * every record of the schema is then missing that field.
 */
extern AdsAvroReader *ads_avro_reader_new(uint32_t schema_id, const char *schema_json,
										  size_t len, const AdsFormat *fmt,
										  char *err, size_t err_len);
extern void ads_avro_reader_free(AdsAvroReader *r);

/* Checks the header; ADS_OK with the schema id, or the reason and detail. */
extern AdsReason ads_avro_header(const char *buf, size_t len, size_t max_bytes,
								 uint32_t *schema_id, char *detail, size_t detail_len);

/* Decodes and validates a whole message (header included) with its reader. */
extern AdsReason ads_avro_decode_event(AdsAvroReader *r, const char *buf, size_t len,
									   AdsEvent *out, char *detail, size_t detail_len);

#endif							/* ADSTREAM_AVRO_FORMAT_H */
