/*
 * schema_registry.h
 *     A schema registry client with a per-process cache (src/schema_registry.c):
 *     the writer schema of an Avro record, by its id, from GET
 *     {url}/schemas/ids/{id} (Confluent's API), compiled into an
 *     AdsAvroReader for the source's format.  Pure C on libcurl, no
 *     PostgreSQL headers.
 *
 * An id's schema never changes, so a schema once fetched is kept for the
 * life of the process and the registry is asked again only for ids not yet
 * seen.  The answers fall in three classes, and the caller acts on them:
 *   OK           the reader;
 *   UNKNOWN      the registry answered that it has no such id (HTTP 404 with
 *                Confluent's error_code 40403), or a schema that does not
 *                compile (not Avro, not a record): the record can never be
 *                read, so it is a dead letter (unknown_schema).  A missing id
 *                is asked again after ADS_REGISTRY_NEGATIVE_TTL_S;
 *   UNAVAILABLE  no usable answer: the registry is unreachable, slow past
 *                the timeout, answers 5xx or anything that is not a
 *                registry's answer (a wrong URL); the record must wait, not
 *                be dead-lettered.
 */
#ifndef ADSTREAM_SCHEMA_REGISTRY_H
#define ADSTREAM_SCHEMA_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "avro_format.h"

#define ADS_REGISTRY_NEGATIVE_TTL_S 60
#define ADS_REGISTRY_MAX_RESPONSE (4 * 1024 * 1024)

typedef enum AdsRegistryResult
{
	ADS_REG_OK,
	ADS_REG_UNKNOWN,
	ADS_REG_UNAVAILABLE
} AdsRegistryResult;

typedef struct AdsSchemaRegistry AdsSchemaRegistry;

/*
 * url: "http://host:port[/prefix]" (or https).  should_abort, if given, is
 * polled during a request; a nonzero answer abandons it (UNAVAILABLE), so
 * that a worker asked to stop does not wait for the timeout.
 */
extern AdsSchemaRegistry *ads_schema_registry_new(const char *url, const AdsFormat *fmt,
										   long timeout_ms, int (*should_abort) (void));
extern void ads_schema_registry_free(AdsSchemaRegistry *reg);

/* The reader for schema_id, from the cache or the registry; err says why not. */
extern AdsRegistryResult ads_schema_registry_lookup(AdsSchemaRegistry *reg, uint32_t schema_id,
											 AdsAvroReader **reader, char *err, size_t err_len);

/* 1 if url has the form ads_schema_registry_new() takes, else 0 with err. */
extern int	ads_schema_registry_url_ok(const char *url, char *err, size_t err_len);

#endif							/* ADSTREAM_SCHEMA_REGISTRY_H */
