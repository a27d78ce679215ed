/*
 * catalog.c
 *     Workers' reads of the configuration tables.
 */
#include "catalog.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/*
 * The installation this database is: the cluster's system identifier, the
 * database's oid and the extension's oid, as "sysid/dboid/extoid".  Every
 * row of adstream.sources and adstream.sinks records the origin it was
 * created (or adopted) in.  A row that pg_dump carried into another cluster,
 * another database or a re-created extension has another one (or none, from
 * a dump older than 0.5): the launcher runs nothing for it until
 * adstream.adopt_restored() rewrites it, so that no worker consumes while a
 * restore is still loading the offsets (docs/architecture.md, "Why it is
 * exactly-once", dump and restore).
 */
char *
ads_catalog_origin(void)
{
	return psprintf(UINT64_FORMAT "/%u/%u", GetSystemIdentifier(), MyDatabaseId,
					get_extension_oid("adstream", true));
}

/* The kafka_options of a row of adstream.sources or adstream.sinks. */
static bool
read_props(const char *table, int32 id, AdsKafkaProps *props)
{
	char	   *sql = psprintf("SELECT o.key, o.value FROM adstream.%s t, "
							   "jsonb_each_text(t.kafka_options) o WHERE t.id = $1", table);
	MemoryContext old;

	if (SPI_execute_with_args(sql, 1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(id)},
							  NULL, true, 0) != SPI_OK_SELECT)
		return false;
	old = MemoryContextSwitchTo(TopMemoryContext);
	props->n = (int) SPI_processed;
	props->keys = palloc0(sizeof(char *) * Max(props->n, 1));
	props->values = palloc0(sizeof(char *) * Max(props->n, 1));
	for (int i = 0; i < props->n; i++)
	{
		props->keys[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		props->values[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	MemoryContextSwitchTo(old);
	return true;
}

/* The field mapping of a source: contract field -> path. */
static bool
read_fields(int32 id, AdsSourceDef *def)
{
	MemoryContext old;

	if (SPI_execute_with_args("SELECT f.key, f.value FROM adstream.sources t, "
							  "jsonb_each_text(coalesce(t.input_format->'fields', '{}')) f WHERE t.id = $1",
							  1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(id)},
							  NULL, true, 0) != SPI_OK_SELECT)
		return false;
	old = MemoryContextSwitchTo(TopMemoryContext);
	def->nfields = (int) SPI_processed;
	def->field_keys = palloc0(sizeof(char *) * Max(def->nfields, 1));
	def->field_paths = palloc0(sizeof(char *) * Max(def->nfields, 1));
	for (int i = 0; i < def->nfields; i++)
	{
		def->field_keys[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		def->field_paths[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * The partitions of the source that came from another node (the latest
 * handoff of each, adstream.import_partitions), with that node's tag
 * prefix: its last commits to the Kafka group are a previous owner's.
 */
static bool
read_handed(AdsSourceDef *def)
{
	MemoryContext old;

	if (SPI_execute_with_args("SELECT DISTINCT ON (p) p, 'adstream node ' || h.from_node || ' ' "
							  "FROM adstream.handoffs h, unnest(h.partitions) p "
							  "WHERE h.direction = 'in' AND $1 = ANY (h.sources) "
							  "ORDER BY p, h.imported_at DESC",
							  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(def->name)},
							  NULL, true, 0) != SPI_OK_SELECT)
		return false;
	old = MemoryContextSwitchTo(TopMemoryContext);
	def->nhanded = (int) SPI_processed;
	def->handed_parts = palloc0(sizeof(int32) * Max(def->nhanded, 1));
	def->handed_from = palloc0(sizeof(char *) * Max(def->nhanded, 1));
	for (int i = 0; i < def->nhanded; i++)
	{
		bool		isnull;

		def->handed_parts[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		def->handed_from[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	MemoryContextSwitchTo(old);
	return true;
}

/* The enabled row of this generation, if any; SPI_tuptable then holds it. */
static bool
read_row(const char *sql, int32 id, int64 generation)
{
	return SPI_execute_with_args(sql, 2, (Oid[]) {INT4OID, INT8OID},
								 (Datum[]) {Int32GetDatum(id), Int64GetDatum(generation)},
								 NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1;
}

bool
ads_catalog_read_source(int32 id, int64 generation, AdsSourceDef *def)
{
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	MemoryContext old;
	char	   *parts;

	if (!read_row("SELECT name, brokers, topic, start_policy, group_id, kind = 'orders', "
				  "coalesce(input_format->>'format', 'json'), coalesce(input_format->>'ts_format', 'epoch_ms'), "
				  "input_format->>'schema_registry', coalesce((input_format->>'schema_registry_timeout_ms')::integer, 0), "
				  "array_to_string(partitions, ','), "
				  "'adstream node ' || adstream.node_name() || ' ' || adstream._origin() "
				  "FROM adstream.sources WHERE id = $1 AND enabled AND generation = $2",
				  id, generation))
		return false;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(TopMemoryContext);
	def->name = SPI_getvalue(tup, td, 1);
	def->brokers = SPI_getvalue(tup, td, 2);
	def->topic = SPI_getvalue(tup, td, 3);
	def->start_policy = SPI_getvalue(tup, td, 4);
	def->group_id = SPI_getvalue(tup, td, 5);
	def->is_orders = DatumGetBool(SPI_getbinval(tup, td, 6, &isnull));
	def->format = SPI_getvalue(tup, td, 7);
	def->ts_format = SPI_getvalue(tup, td, 8);
	def->registry_url = SPI_getvalue(tup, td, 9);	/* NULL when null */
	def->registry_timeout_ms = DatumGetInt32(SPI_getbinval(tup, td, 10, &isnull));
	parts = SPI_getvalue(tup, td, 11);
	def->npartitions = -1;
	if (parts != NULL)
	{
		char	   *next = parts;

		def->npartitions = 0;
		def->partitions = palloc(sizeof(int32) * (strlen(parts) / 2 + 1));
		while (*next != '\0')
		{
			def->partitions[def->npartitions++] = (int32) strtol(next, &next, 10);
			if (*next == ',')
				next++;
		}
	}
	def->node_tag = SPI_getvalue(tup, td, 12);
	MemoryContextSwitchTo(old);
	return read_fields(id, def) && read_handed(def) && read_props("sources", id, &def->props);
}

bool
ads_catalog_read_sink(int32 id, int64 generation, AdsSinkDef *def)
{
	MemoryContext old;

	if (!read_row("SELECT name, brokers FROM adstream.sinks "
				  "WHERE id = $1 AND enabled AND generation = $2", id, generation))
		return false;
	old = MemoryContextSwitchTo(TopMemoryContext);
	def->name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	def->brokers = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	MemoryContextSwitchTo(old);
	return read_props("sinks", id, &def->props);
}

/* Whether the source exists, enabled, in this generation (issue #14). */
bool
ads_catalog_source_current(int32 id, int64 generation)
{
	return read_row("SELECT 1 FROM adstream.sources WHERE id = $1 AND enabled AND generation = $2",
					id, generation);
}

/* Whether the sink exists, enabled, in this generation (issue #14). */
bool
ads_catalog_sink_current(int32 id, int64 generation)
{
	return read_row("SELECT 1 FROM adstream.sinks WHERE id = $1 AND enabled AND generation = $2",
					id, generation);
}
