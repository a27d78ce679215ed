/*
 * catalog.h
 *     How workers read their definitions from adstream.sources and
 *     adstream.sinks (src/catalog.c).  Called inside a transaction with SPI
 *     connected; results are allocated in TopMemoryContext, for the life of
 *     the worker.
 */
#ifndef ADSTREAM_CATALOG_H
#define ADSTREAM_CATALOG_H

#include "postgres.h"

#include "kafka_conf.h"

typedef struct AdsSourceDef
{
	char	   *name;
	bool		is_orders;		/* kind 'orders', else 'ad_events' */
	char	   *brokers;
	char	   *topic;
	char	   *start_policy;
	char	   *group_id;
	AdsKafkaProps props;
	/* input format (adstream.sources.input_format, docs/formats.md) */
	char	   *format;			/* "json" or "avro" */
	char	   *ts_format;		/* "epoch_ms", ... */
	char	   *registry_url;	/* avro only, else NULL */
	int			registry_timeout_ms;
	int			nfields;		/* field mapping: contract field -> path */
	char	  **field_keys;
	char	  **field_paths;
	int			npartitions;	/* -1: every partition of the topic */
	int32	   *partitions;		/* else these, ascending (the "partitions" option) */
	char	   *node_tag;		/* this node in the metadata of its Kafka commits */
	/* partitions imported from another node (a handoff), latest first per partition */
	int			nhanded;
	int32	   *handed_parts;
	char	  **handed_from;	/* that node's tag prefix: "adstream node <name> " */
} AdsSourceDef;

typedef struct AdsSinkDef
{
	char	   *name;
	char	   *brokers;
	AdsKafkaProps props;
} AdsSinkDef;

/* This installation's identity, palloc'd; see adstream.sources.origin. */
extern char *ads_catalog_origin(void);

/* False when the source or sink is gone, paused, or of another generation. */
extern bool ads_catalog_read_source(int32 id, int64 generation, AdsSourceDef *def);
extern bool ads_catalog_read_sink(int32 id, int64 generation, AdsSinkDef *def);
/* Whether the source is still enabled in this generation; no allocation. */
extern bool ads_catalog_source_current(int32 id, int64 generation);
extern bool ads_catalog_sink_current(int32 id, int64 generation);

#endif							/* ADSTREAM_CATALOG_H */
