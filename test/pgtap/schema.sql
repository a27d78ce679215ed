-- pgTAP: adstream's schema, tables, columns, keys, partitioning, views,
-- roles and comments.  Run by test/t/001_pgtap.pl through pg_prove.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

BEGIN;
SELECT plan(107);

-------------------------------------------------------------------------------
-- Schema
-------------------------------------------------------------------------------

SELECT has_schema('adstream');
SELECT isnt(obj_description('adstream'::regnamespace, 'pg_namespace'), NULL,
	'schema adstream has a comment');

-- Run-time partitions (relispartition) are not part of the fixed schema.
SELECT set_eq(
	$$SELECT relname::text FROM pg_class
	   WHERE relnamespace = 'adstream'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition$$,
	ARRAY['sources', 'offsets', 'partitioned_tables', 'ad_stats_minute', 'dedup_state', 'rejected_events'],
	'adstream has exactly the expected tables');
SELECT set_eq(
	$$SELECT relname::text FROM pg_class
	   WHERE relnamespace = 'adstream'::regnamespace AND relkind IN ('v', 'm')$$,
	ARRAY['source_config', 'source_status'],
	'adstream has exactly the expected views');

-------------------------------------------------------------------------------
-- Tables and columns
-------------------------------------------------------------------------------

SELECT has_table('adstream', 'sources', 'table adstream.sources exists');
SELECT has_table('adstream', 'offsets', 'table adstream.offsets exists');
SELECT has_table('adstream', 'partitioned_tables', 'table adstream.partitioned_tables exists');
SELECT has_table('adstream', 'ad_stats_minute', 'table adstream.ad_stats_minute exists');
SELECT has_table('adstream', 'dedup_state', 'table adstream.dedup_state exists');
SELECT has_table('adstream', 'rejected_events', 'table adstream.rejected_events exists');

SELECT columns_are('adstream', 'sources', ARRAY['id', 'name', 'kind', 'brokers', 'topic', 'start_policy',
	'workers', 'group_id', 'kafka_options', 'enabled', 'generation', 'created_at', 'updated_at']);
SELECT columns_are('adstream', 'offsets', ARRAY['source', 'topic', 'partition', 'next_offset',
	'max_event_ts', 'accepted', 'duplicates', 'rejected', 'updated_at']);
SELECT columns_are('adstream', 'partitioned_tables', ARRAY['name', 'grain', 'fillfactor']);
SELECT columns_are('adstream', 'ad_stats_minute', ARRAY['ad_id', 'campaign_id', 'window_start',
	'impressions', 'clicks', 'updated_at']);
SELECT columns_are('adstream', 'dedup_state', ARRAY['source_id', 'event_id', 'event_ts']);
SELECT columns_are('adstream', 'rejected_events', ARRAY['source', 'topic', 'partition', 'offset',
	'reason', 'detail', 'payload', 'payload_bytes', 'received_at']);

-- 43 column types
SELECT col_type_is('adstream', t, c, ty, format('adstream.%s.%s is %s', t, c, ty))
  FROM (VALUES
	('sources', 'id', 'integer'),
	('sources', 'name', 'text'),
	('sources', 'kind', 'text'),
	('sources', 'brokers', 'text'),
	('sources', 'topic', 'text'),
	('sources', 'start_policy', 'text'),
	('sources', 'workers', 'integer'),
	('sources', 'group_id', 'text'),
	('sources', 'kafka_options', 'jsonb'),
	('sources', 'enabled', 'boolean'),
	('sources', 'generation', 'bigint'),
	('sources', 'created_at', 'timestamp with time zone'),
	('sources', 'updated_at', 'timestamp with time zone'),
	('offsets', 'source', 'text'),
	('offsets', 'topic', 'text'),
	('offsets', 'partition', 'integer'),
	('offsets', 'next_offset', 'bigint'),
	('offsets', 'max_event_ts', 'timestamp with time zone'),
	('offsets', 'accepted', 'bigint'),
	('offsets', 'duplicates', 'bigint'),
	('offsets', 'rejected', 'bigint'),
	('offsets', 'updated_at', 'timestamp with time zone'),
	('partitioned_tables', 'name', 'text'),
	('partitioned_tables', 'grain', 'interval'),
	('partitioned_tables', 'fillfactor', 'integer'),
	('ad_stats_minute', 'ad_id', 'bigint'),
	('ad_stats_minute', 'campaign_id', 'bigint'),
	('ad_stats_minute', 'window_start', 'timestamp with time zone'),
	('ad_stats_minute', 'impressions', 'bigint'),
	('ad_stats_minute', 'clicks', 'bigint'),
	('ad_stats_minute', 'updated_at', 'timestamp with time zone'),
	('dedup_state', 'source_id', 'integer'),
	('dedup_state', 'event_id', 'uuid'),
	('dedup_state', 'event_ts', 'timestamp with time zone'),
	('rejected_events', 'source', 'text'),
	('rejected_events', 'topic', 'text'),
	('rejected_events', 'partition', 'integer'),
	('rejected_events', 'offset', 'bigint'),
	('rejected_events', 'reason', 'text'),
	('rejected_events', 'detail', 'text'),
	('rejected_events', 'payload', 'bytea'),
	('rejected_events', 'payload_bytes', 'integer'),
	('rejected_events', 'received_at', 'timestamp with time zone')
  ) AS v(t, c, ty);

-- Only these columns may be NULL.
SELECT set_eq(
	$$SELECT c.relname || '.' || a.attname
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	   WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p')
		 AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped AND NOT a.attnotnull$$,
	ARRAY['offsets.max_event_ts', 'rejected_events.detail', 'rejected_events.payload'],
	'only the watermark, dead-letter detail and payload are nullable');

-------------------------------------------------------------------------------
-- Keys, constraints, indexes
-------------------------------------------------------------------------------

SELECT has_pk('adstream', 'sources', 'sources has a primary key');
SELECT has_pk('adstream', 'offsets', 'offsets has a primary key');
SELECT has_pk('adstream', 'partitioned_tables', 'partitioned_tables has a primary key');
SELECT has_pk('adstream', 'ad_stats_minute', 'ad_stats_minute has a primary key');
SELECT has_pk('adstream', 'dedup_state', 'dedup_state has a primary key');
SELECT has_pk('adstream', 'rejected_events', 'rejected_events has a primary key');

SELECT col_is_pk('adstream', 'sources', ARRAY['id'], 'sources PK is (id)');
SELECT col_is_pk('adstream', 'offsets', ARRAY['source', 'topic', 'partition'],
	'offsets PK is (source, topic, partition)');
SELECT col_is_pk('adstream', 'partitioned_tables', ARRAY['name'], 'partitioned_tables PK is (name)');
SELECT col_is_pk('adstream', 'ad_stats_minute', ARRAY['ad_id', 'window_start'],
	'ad_stats_minute PK is (ad_id, window_start)');
SELECT col_is_pk('adstream', 'dedup_state', ARRAY['source_id', 'event_id', 'event_ts'],
	'dedup_state PK is (source_id, event_id, event_ts)');
SELECT col_is_pk('adstream', 'rejected_events', ARRAY['source', 'topic', 'partition', 'offset'],
	'rejected_events PK is (source, topic, partition, offset)');

SELECT col_is_unique('adstream', 'sources', ARRAY['name'], 'source names are unique');
SELECT is(attidentity, 'a', 'sources.id is GENERATED ALWAYS AS IDENTITY')
  FROM pg_attribute WHERE attrelid = 'adstream.sources'::regclass AND attname = 'id';
SELECT fk_ok('adstream', 'offsets', ARRAY['source'], 'adstream', 'sources', ARRAY['name'],
	'offsets.source references sources.name');
SELECT is(confdeltype, 'c', 'offsets go with their source (ON DELETE CASCADE)')
  FROM pg_constraint WHERE conrelid = 'adstream.offsets'::regclass AND contype = 'f';
SELECT col_has_check('adstream', 'sources', ARRAY['kind'], 'sources.kind is checked');
SELECT col_has_check('adstream', 'sources', ARRAY['start_policy'], 'sources.start_policy is checked');
SELECT col_has_check('adstream', 'sources', ARRAY['workers'], 'sources.workers is checked');
SELECT throws_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id, workers) VALUES ('x', 'ad_events', 'b', 't', 'g', 65)$$,
	'23514', NULL, 'the workers check rejects 65');
SELECT throws_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id, start_policy) VALUES ('x', 'ad_events', 'b', 't', 'g', 'now')$$,
	'23514', NULL, 'the start_policy check rejects other values');
SELECT has_index('adstream', 'rejected_events', 'rejected_events_received_at_idx', ARRAY['received_at'],
	'dead letters are indexed by received_at');

SELECT is(reloptions, ARRAY['fillfactor=50'], 'offsets is created with fillfactor 50')
  FROM pg_class WHERE oid = 'adstream.offsets'::regclass;
SELECT set_eq(
	$$SELECT c.relname::text
		FROM pg_extension e, unnest(e.extconfig) AS x(oid) JOIN pg_class c ON c.oid = x.oid
	   WHERE e.extname = 'adstream'$$,
	ARRAY['sources', 'offsets'],
	'sources and offsets are dumped by pg_dump as configuration');

SELECT is(
	(SELECT count(*)::int FROM pg_attribute
	  WHERE attrelid = 'adstream.sources'::regclass AND attname = 'generation'
		AND atthasdef AND attnotnull),
	1, 'sources.generation is NOT NULL with a default');

-------------------------------------------------------------------------------
-- Partitioning
-------------------------------------------------------------------------------

SELECT is_partitioned('adstream', 'ad_stats_minute', 'ad_stats_minute is partitioned');
SELECT is_partitioned('adstream', 'dedup_state', 'dedup_state is partitioned');
SELECT isnt_partitioned('adstream', 'offsets', 'offsets is not partitioned');
SELECT isnt_partitioned('adstream', 'rejected_events', 'rejected_events is not partitioned');
SELECT is(pg_get_partkeydef('adstream.ad_stats_minute'::regclass), 'RANGE (window_start)',
	'ad_stats_minute is range-partitioned by window_start');
SELECT is(pg_get_partkeydef('adstream.dedup_state'::regclass), 'RANGE (event_ts)',
	'dedup_state is range-partitioned by event_ts');
SELECT results_eq(
	$$SELECT name, grain, fillfactor FROM adstream.partitioned_tables ORDER BY name$$,
	$$VALUES ('ad_stats_minute'::text, interval '1 day', 70), ('dedup_state'::text, interval '1 hour', 100)$$,
	'partition grains: a day for ad_stats_minute (fillfactor 70), an hour for dedup_state');
SELECT set_eq(
	$$SELECT relname::text FROM pg_class WHERE relnamespace = 'adstream'::regnamespace AND relkind = 'p'$$,
	$$SELECT name FROM adstream.partitioned_tables$$,
	'every partitioned table is registered in partitioned_tables');
SELECT is(
	(SELECT count(*)::int FROM pg_partitioned_table pt
	  WHERE pt.partrelid IN ('adstream.ad_stats_minute'::regclass, 'adstream.dedup_state'::regclass)
		AND pt.partdefid <> 0),
	0, 'no default partition swallows rows of a missing time range');

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

SELECT has_view('adstream', 'source_config', 'view adstream.source_config exists');
SELECT has_view('adstream', 'source_status', 'view adstream.source_status exists');
SELECT columns_are('adstream', 'source_config', ARRAY['name', 'kind', 'brokers', 'topic',
	'start_policy', 'workers', 'group_id', 'kafka_options', 'enabled', 'created_at', 'updated_at']);
SELECT columns_are('adstream', 'source_status', ARRAY['source', 'topic', 'source_state', 'partition',
	'worker_pid', 'worker_state', 'next_offset', 'high_watermark', 'lag', 'accepted', 'duplicates',
	'rejected', 'partition_watermark', 'source_watermark', 'last_commit_at', 'last_error', 'last_error_at']);
SELECT hasnt_column('adstream', 'source_config', 'generation', 'source_config hides the internal generation');
SELECT hasnt_column('adstream', 'source_status', 'kafka_options', 'source_status never shows librdkafka options');
SELECT col_type_is('adstream', 'source_status', 'lag', 'bigint', 'source_status.lag is bigint');
SELECT col_type_is('adstream', 'source_config', 'kafka_options', 'jsonb', 'source_config.kafka_options is jsonb');

-------------------------------------------------------------------------------
-- Roles
-------------------------------------------------------------------------------

SELECT has_role('adstream_reader');
SELECT has_role('adstream_admin');
SELECT is_member_of('adstream_reader', ARRAY['adstream_admin'], 'adstream_admin is a member of adstream_reader');
SELECT is(
	(SELECT count(*)::int FROM pg_roles
	  WHERE rolname IN ('adstream_reader', 'adstream_admin')
		AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)),
	0, 'the adstream roles are plain group roles');

-------------------------------------------------------------------------------
-- Comments
-------------------------------------------------------------------------------

SELECT is_empty(
	$$SELECT c.relname FROM pg_class c
	   WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
		 AND NOT c.relispartition
		 AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
	   ORDER BY 1$$,
	'every table and view of adstream has a comment');

SELECT * FROM finish();
ROLLBACK;
