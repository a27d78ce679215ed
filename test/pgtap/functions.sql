-- pgTAP: adstream's functions: signatures, languages, SECURITY DEFINER and
-- search_path, volatility, comments, and the behaviour of the API and the
-- partition maintenance functions.  Everything runs in one transaction that
-- is rolled back, so the launcher never sees the sources created here.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(102);

-------------------------------------------------------------------------------
-- Inventory and signatures
-------------------------------------------------------------------------------

SELECT functions_are('adstream', ARRAY[
	'_new_generation', '_wake_launcher', '_kafka_property_error', '_is_secret', '_is_privileged_property', '_source_must_exist',
	'worker_status', 'partition_status', 'validate_event', 'ensure_partitions', 'source_watermark',
	'expire_dedup_state', 'create_source', 'drop_source', 'pause_source', 'resume_source'],
	'adstream has exactly the expected functions');

SELECT has_function('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb']);
SELECT has_function('adstream', 'drop_source', ARRAY['text']);
SELECT has_function('adstream', 'pause_source', ARRAY['text']);
SELECT has_function('adstream', 'resume_source', ARRAY['text']);
SELECT has_function('adstream', 'validate_event', ARRAY['bytea']);
SELECT has_function('adstream', 'validate_event', ARRAY['text']);
SELECT has_function('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]']);
SELECT has_function('adstream', 'expire_dedup_state', ARRAY[]::name[]);
SELECT has_function('adstream', 'source_watermark', ARRAY['text']);
SELECT has_function('adstream', 'worker_status', ARRAY[]::name[]);
SELECT has_function('adstream', 'partition_status', ARRAY[]::name[]);

SELECT function_returns('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'void');
SELECT function_returns('adstream', 'drop_source', ARRAY['text'], 'void');
SELECT function_returns('adstream', 'pause_source', ARRAY['text'], 'void');
SELECT function_returns('adstream', 'resume_source', ARRAY['text'], 'void');
SELECT function_returns('adstream', 'validate_event', ARRAY['bytea'], 'record');
SELECT function_returns('adstream', 'validate_event', ARRAY['text'], 'record');
SELECT function_returns('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]'], 'integer');
SELECT function_returns('adstream', 'expire_dedup_state', ARRAY[]::name[], 'integer');
SELECT function_returns('adstream', 'source_watermark', ARRAY['text'], 'timestamp with time zone');
SELECT function_returns('adstream', 'worker_status', ARRAY[]::name[], 'setof record');
SELECT function_returns('adstream', 'partition_status', ARRAY[]::name[], 'setof record');

-- Argument names, defaults and OUT columns are part of the API.
SELECT is(pg_get_function_arguments('adstream.create_source(text,text,text,text,jsonb)'::regprocedure),
	'name text, brokers text, topic text, kind text DEFAULT ''ad_events''::text, options jsonb DEFAULT ''{}''::jsonb',
	'create_source(name, brokers, topic, kind => ''ad_events'', options => ''{}'')');
SELECT is(pg_get_function_arguments('adstream.validate_event(bytea)'::regprocedure),
	'payload bytea, OUT reason text, OUT detail text, OUT event_id uuid, OUT type text, OUT ad_id bigint, '
	'OUT campaign_id bigint, OUT user_id bigint, OUT store_id bigint, OUT ts timestamp with time zone',
	'validate_event(bytea) OUT columns');
SELECT is(pg_get_function_arguments('adstream.validate_event(text)'::regprocedure),
	'payload text, OUT reason text, OUT detail text, OUT event_id uuid, OUT type text, OUT ad_id bigint, '
	'OUT campaign_id bigint, OUT user_id bigint, OUT store_id bigint, OUT ts timestamp with time zone',
	'validate_event(text) OUT columns');
SELECT is(pg_get_function_arguments('adstream.worker_status()'::regprocedure),
	'OUT source_id integer, OUT worker_index integer, OUT pid integer, OUT state text, '
	'OUT started_at timestamp with time zone, OUT last_commit_at timestamp with time zone, '
	'OUT last_error text, OUT last_error_at timestamp with time zone, OUT restarts integer',
	'worker_status() OUT columns');
SELECT is(pg_get_function_arguments('adstream.partition_status()'::regprocedure),
	'OUT source_id integer, OUT partition integer, OUT pid integer, OUT high_watermark bigint, OUT read_position bigint',
	'partition_status() OUT columns');
SELECT is(pg_get_function_arguments('adstream.ensure_partitions(text,timestamptz[])'::regprocedure),
	'p_table text, p_times timestamp with time zone[]', 'ensure_partitions(p_table, p_times)');

-------------------------------------------------------------------------------
-- Language, SECURITY DEFINER, configuration, volatility
-------------------------------------------------------------------------------

SELECT function_lang_is('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'plpgsql');
SELECT function_lang_is('adstream', 'drop_source', ARRAY['text'], 'plpgsql');
SELECT function_lang_is('adstream', 'pause_source', ARRAY['text'], 'plpgsql');
SELECT function_lang_is('adstream', 'resume_source', ARRAY['text'], 'plpgsql');
SELECT function_lang_is('adstream', 'validate_event', ARRAY['bytea'], 'c');
SELECT function_lang_is('adstream', 'validate_event', ARRAY['text'], 'sql');
SELECT function_lang_is('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]'], 'plpgsql');
SELECT function_lang_is('adstream', 'expire_dedup_state', ARRAY[]::name[], 'plpgsql');
SELECT function_lang_is('adstream', 'worker_status', ARRAY[]::name[], 'c');
SELECT function_lang_is('adstream', 'partition_status', ARRAY[]::name[], 'c');

-- The management API runs as the extension owner ...
SELECT is_definer('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb']);
SELECT is_definer('adstream', 'drop_source', ARRAY['text']);
SELECT is_definer('adstream', 'pause_source', ARRAY['text']);
SELECT is_definer('adstream', 'resume_source', ARRAY['text']);
-- ... nothing that reads or writes data on the caller's behalf does.
SELECT isnt_definer('adstream', 'validate_event', ARRAY['bytea']);
SELECT isnt_definer('adstream', 'validate_event', ARRAY['text']);
SELECT isnt_definer('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]']);
SELECT isnt_definer('adstream', 'expire_dedup_state', ARRAY[]::name[]);
SELECT isnt_definer('adstream', 'worker_status', ARRAY[]::name[]);
SELECT isnt_definer('adstream', 'partition_status', ARRAY[]::name[]);
SELECT isnt_definer('adstream', '_kafka_property_error', ARRAY['text', 'text']);
SELECT isnt_definer('adstream', '_wake_launcher', ARRAY[]::name[]);
SELECT isnt_definer('adstream', '_is_secret', ARRAY['text']);

SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_proc p
	   WHERE p.pronamespace = 'adstream'::regnamespace AND p.prosecdef
		 AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)$$,
	'every SECURITY DEFINER function has search_path = pg_catalog, pg_temp');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	   WHERE p.pronamespace = 'adstream'::regnamespace AND l.lanname = 'plpgsql'
		 AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')$$,
	'every PL/pgSQL function pins its search_path');
SELECT ok('lock_timeout=2s' = ANY (proconfig), 'expire_dedup_state never waits long for its locks')
  FROM pg_proc WHERE oid = 'adstream.expire_dedup_state()'::regprocedure;

SELECT volatility_is('adstream', 'worker_status', ARRAY[]::name[], 'volatile');
SELECT volatility_is('adstream', 'partition_status', ARRAY[]::name[], 'volatile');
SELECT volatility_is('adstream', 'source_watermark', ARRAY['text'], 'stable');
SELECT volatility_is('adstream', '_is_secret', ARRAY['text'], 'immutable');
SELECT volatility_is('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'volatile');
SELECT volatility_is('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]'], 'volatile');
SELECT ok(proisstrict, 'validate_event(bytea) is STRICT')
  FROM pg_proc WHERE oid = 'adstream.validate_event(bytea)'::regprocedure;
SELECT ok(proisstrict, 'validate_event(text) is STRICT')
  FROM pg_proc WHERE oid = 'adstream.validate_event(text)'::regprocedure;

-------------------------------------------------------------------------------
-- Comments
-------------------------------------------------------------------------------

SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_proc p
	   WHERE p.pronamespace = 'adstream'::regnamespace AND p.proname !~ '^_'
		 AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''
	   ORDER BY 1$$,
	'every public function of adstream has a comment');

-------------------------------------------------------------------------------
-- Source management
-------------------------------------------------------------------------------

SELECT lives_ok(
	$$SELECT adstream.create_source('tap_src', 'kafka:9092', 'tap_topic',
			options => '{"workers": 3, "start": "latest", "sasl.password": "tap-secret"}')$$,
	'create_source with options');
SELECT results_eq(
	$$SELECT name, topic, start_policy, workers, group_id, enabled FROM adstream.source_config WHERE name = 'tap_src'$$,
	$$VALUES ('tap_src'::text, 'tap_topic'::text, 'latest'::text, 3, 'adstream.' || current_database()::text COLLATE "default" || '.tap_src', true)$$,
	'the source is configured as asked');
SELECT is((SELECT kafka_options ->> 'sasl.password' FROM adstream.source_config WHERE name = 'tap_src'),
	'********', 'source_config masks the password');
SELECT is((SELECT kafka_options ->> 'sasl.password' FROM adstream.sources WHERE name = 'tap_src'),
	'tap-secret', 'sources keeps the password for the workers');
SELECT throws_ok($$SELECT adstream.create_source('bad name', 'k:9092', 't')$$,
	'22023', NULL, 'a bad source name is invalid_parameter_value');
SELECT throws_ok($$SELECT adstream.create_source('tap_src', 'k:9092', 't')$$,
	'42710', NULL, 'a duplicate source is duplicate_object');
SELECT throws_ok($$SELECT adstream.create_source('s', 'k:9092', 't', options => '{"group.id": "g"}')$$,
	'22023', NULL, 'a managed librdkafka property is refused');
SELECT throws_ok($$SELECT adstream.create_source('s', 'k:9092', 't', options => '{"no.such.property": "1"}')$$,
	'22023', NULL, 'an unknown librdkafka property is refused');
SELECT throws_ok($$SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": 0}')$$,
	'22023', NULL, 'workers = 0 is refused');
SELECT throws_ok($$SELECT adstream.pause_source('tap_nosuch')$$,
	'42704', NULL, 'pausing a missing source is undefined_object');
SELECT throws_ok($$SELECT adstream.drop_source('tap_nosuch')$$,
	'42704', NULL, 'dropping a missing source is undefined_object');

SELECT lives_ok($$SELECT adstream.pause_source('tap_src')$$, 'pause_source');
SELECT is((SELECT enabled FROM adstream.sources WHERE name = 'tap_src'), false, 'a paused source is disabled');
SELECT lives_ok($$SELECT adstream.resume_source('tap_src')$$, 'resume_source');
SELECT is((SELECT enabled FROM adstream.sources WHERE name = 'tap_src'), true, 'a resumed source is enabled');

-- validate_event
SELECT results_eq(
	$$SELECT reason, event_id, type, ad_id, ts FROM adstream.validate_event(
		'{"event_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479","type":"click","ad_id":7,"campaign_id":8,'
		'"user_id":9,"store_id":10,"ts":"2024-03-01T10:00:00.5+01:00"}')$$,
	$$VALUES ('ok'::text, 'f47ac10b-58cc-4372-a567-0e02b2c3d479'::uuid, 'click'::text, 7::bigint,
			  timestamptz '2024-03-01 09:00:00.5+00')$$,
	'validate_event parses a valid event');
SELECT is((SELECT reason FROM adstream.validate_event('{}')), 'missing_field', 'validate_event: {} lacks event_id');
SELECT is((SELECT reason FROM adstream.validate_event('\x00'::bytea)), 'nul_byte', 'validate_event: NUL byte');

-- _is_secret decides what source_config masks
SELECT results_eq(
	$$SELECT k, adstream._is_secret(k) FROM unnest(ARRAY['sasl.password', 'ssl.key.password',
		'ssl.keystore.password', 'sasl.oauthbearer.client.secret', 'sasl.jaas.config', 'ssl.key.pem',
		'sasl.username', 'socket.timeout.ms', 'ssl.certificate.pem', 'security.protocol']) AS k$$,
	$$VALUES ('sasl.password', true), ('ssl.key.password', true), ('ssl.keystore.password', true),
			 ('sasl.oauthbearer.client.secret', true), ('sasl.jaas.config', true), ('ssl.key.pem', true),
			 ('sasl.username', false), ('socket.timeout.ms', false), ('ssl.certificate.pem', false),
			 ('security.protocol', false)$$,
	'secret property names are recognised');

-------------------------------------------------------------------------------
-- ensure_partitions and fillfactor
-------------------------------------------------------------------------------

SELECT is(adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2031-01-01 00:00:00+00', '2031-01-01 23:59:59+00', '2031-01-02 05:00:00+00']::timestamptz[]),
	2, 'ensure_partitions creates one partition per UTC day of ad_stats_minute');
SELECT is(adstream.ensure_partitions('ad_stats_minute', ARRAY['2031-01-01 12:00:00+00']::timestamptz[]),
	0, 'ensure_partitions is idempotent');
SELECT is(adstream.ensure_partitions('dedup_state',
		ARRAY['2031-01-01 10:00:00+00', '2031-01-01 10:59:59+00', '2031-01-01 11:00:00+00']::timestamptz[]),
	2, 'ensure_partitions creates one partition per UTC hour of dedup_state');
SELECT throws_ok($$SELECT adstream.ensure_partitions('sources', ARRAY[now()])$$,
	'22023', NULL, 'ensure_partitions refuses tables it does not manage');

SELECT is_partition_of('adstream', 'ad_stats_minute_p20310101_0000', 'adstream', 'ad_stats_minute',
	'ad_stats_minute_p20310101_0000 is a partition of ad_stats_minute');
SELECT is_partition_of('adstream', 'dedup_state_p20310101_1000', 'adstream', 'dedup_state',
	'dedup_state_p20310101_1000 is a partition of dedup_state');
SELECT is(pg_get_expr(relpartbound, oid),
	'FOR VALUES FROM (''2031-01-02 00:00:00+00'') TO (''2031-01-03 00:00:00+00'')',
	'a daily partition covers one UTC day')
  FROM pg_class WHERE oid = 'adstream.ad_stats_minute_p20310102_0000'::regclass;

SELECT is(reloptions, ARRAY['fillfactor=70'], 'ad_stats_minute partitions have fillfactor 70 (HOT updates)')
  FROM pg_class WHERE oid = 'adstream.ad_stats_minute_p20310101_0000'::regclass;
SELECT is(reloptions, ARRAY['fillfactor=100'], 'dedup_state partitions have fillfactor 100 (insert only)')
  FROM pg_class WHERE oid = 'adstream.dedup_state_p20310101_1000'::regclass;
SELECT is_empty(
	$$SELECT c.relname FROM adstream.partitioned_tables pt
		JOIN pg_inherits i ON i.inhparent = ('adstream.' || pt.name)::regclass
		JOIN pg_class c ON c.oid = i.inhrelid
	   WHERE c.reloptions IS DISTINCT FROM ARRAY['fillfactor=' || pt.fillfactor]$$,
	'every partition has the fillfactor of adstream.partitioned_tables');
SELECT is_empty(
	$$SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	   WHERE i.inhparent IN ('adstream.ad_stats_minute'::regclass, 'adstream.dedup_state'::regclass)
		 AND NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary)$$,
	'every partition carries the primary key');

-------------------------------------------------------------------------------
-- Watermark and dedup expiry (default adstream.dedup_horizon of 1 hour)
-------------------------------------------------------------------------------

INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tap_src', 'tap_topic', 0, 5, '2031-01-01 12:10:00+00'),
	   ('tap_src', 'tap_topic', 1, 5, '2031-01-01 11:00:00+00');
SELECT is(adstream.source_watermark('tap_src'), timestamptz '2031-01-01 12:10:00+00',
	'the source watermark is the highest partition watermark');
SELECT is(adstream.source_watermark('tap_nosuch'), NULL, 'a missing source has no watermark');
-- cutoff 11:10 (unless another source's watermark is lower): 10:00-11:00 goes, 11:00-12:00 stays
SELECT cmp_ok(adstream.expire_dedup_state(), '>=', 1, 'expire_dedup_state drops what is behind the horizon');
SELECT hasnt_table('adstream', 'dedup_state_p20310101_1000', 'the expired partition is gone');
SELECT has_table('adstream', 'dedup_state_p20310101_1100', 'the partition within the horizon stays');

-- drop_source takes the offsets along
SELECT lives_ok($$SELECT adstream.drop_source('tap_src')$$, 'drop_source');
SELECT is((SELECT count(*)::int FROM adstream.offsets WHERE source = 'tap_src'), 0, 'its offsets are gone');
SELECT is((SELECT count(*)::int FROM adstream.sources WHERE name = 'tap_src'), 0, 'the source is gone');

SELECT * FROM finish();
ROLLBACK;
