/*
 * input_format.h
 *     A source's input format as the consumer applies it (src/input_format.c):
 *     JSON with or without a field mapping, or Avro in the Confluent wire
 *     format with a schema registry.  Compiled once per worker from the
 *     source's row (adstream.sources.input_format); create_source checks a
 *     definition with the same code (ads_input_compile).
 */
#ifndef ADSTREAM_INPUT_FORMAT_H
#define ADSTREAM_INPUT_FORMAT_H

#include "postgres.h"

#include "avro_format.h"
#include "event_parse.h"
#include "schema_registry.h"

/* How long one schema registry request may take, by default. */
#define ADS_REGISTRY_TIMEOUT_MS 5000

typedef struct AdsInput
{
	bool		is_orders;
	bool		avro;
	AdsFormat	fmt;
	AdsSchemaRegistry *registry;	/* avro only */
	/* what ads_input_ready() found for the message it last passed */
	bool		ready_valid;
	uint32		ready_id;
	AdsRegistryResult ready_result;
	AdsAvroReader *ready_reader;
	char		ready_err[512];
} AdsInput;

/*
 * Compile a field mapping and ts_format into fmt; ereports ERROR
 * (invalid_parameter_value, with a hint) on a bad definition.
 */
extern void ads_input_compile(bool is_orders, const char *ts_format, int nfields,
							  char **keys, char **paths, AdsFormat *fmt);

/* Set up a worker's input; registry_url is NULL for JSON. */
extern void ads_input_open(AdsInput *in, bool is_orders, const char *format,
						   const char *ts_format, int nfields, char **keys, char **paths,
						   const char *registry_url, int registry_timeout_ms);

/*
 * Before a message is taken: false when it cannot be judged yet because
 * its schema cannot be fetched (err says why); the caller keeps it and asks
 * again later.  Always true for JSON.
 */
extern bool ads_input_ready(AdsInput *in, const char *buf, size_t len, size_t max_bytes,
							char *err, size_t err_len);

/* Parse and validate; after ads_input_ready() said true for the message. */
extern AdsReason ads_input_parse_event(AdsInput *in, const char *buf, size_t len,
									   size_t max_bytes, AdsEvent *out,
									   char *detail, size_t detail_len);
extern AdsReason ads_input_parse_order(AdsInput *in, const char *buf, size_t len,
									   size_t max_bytes, AdsOrder *out,
									   char *detail, size_t detail_len);

#endif							/* ADSTREAM_INPUT_FORMAT_H */
