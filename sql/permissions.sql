--
-- permissions: what PUBLIC, adstream_reader and adstream_admin may do.
-- (0.3's sinks and outbox are covered in depth by the publish test; here
-- they appear in the catalog checks and once per role.)
--
-- Roles are cluster-wide: the test roles are created here and dropped at the
-- end.  Owners and grantors are never printed (they depend on the bootstrap
-- superuser's name).
--
\set SHOW_CONTEXT never
SET search_path = public;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_adstream_plain, regress_adstream_reader, regress_adstream_admin;
RESET client_min_messages;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

CREATE ROLE regress_adstream_plain NOLOGIN;
CREATE ROLE regress_adstream_reader NOLOGIN IN ROLE adstream_reader;
CREATE ROLE regress_adstream_admin NOLOGIN IN ROLE adstream_admin;

-- Something to read, set up by the superuser.
SELECT adstream.create_source('perm_src', 'k:9092', 'perm_topic',
		options => '{"sasl.username": "ingest", "sasl.password": "hunter2"}');
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted)
VALUES ('perm_src', 'perm_topic', 0, 100, '2024-03-01 10:00:00+00', 99);
INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, payload_bytes)
VALUES ('perm_src', 'perm_topic', 0, 7, 'empty', 0);
-- (These days lie far behind the server's clock, and an earlier test's
-- retention dropped them: ensure_partitions would refuse to create them again.)
UPDATE adstream.partitioned_tables SET dropped_before = '-infinity';
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-03-01 10:00:00+00']::timestamptz[]);
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2024-03-01 10:00:00+00', 5, 1);
-- 0.2: an ad event, an attributed order, a waiting one, rollups.
SELECT adstream.ensure_partitions('ad_events', ARRAY['2024-03-01 09:00:00+00']::timestamptz[]);
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
SELECT id, 'f47ac10b-58cc-4372-a567-0e02b2c3d479', 'click', 1, 10, 7, 5, '2024-03-01 09:30:00+00'
  FROM adstream.sources WHERE name = 'perm_src';
INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts)
VALUES ('00000000-0000-4000-8000-000000000001', 'perm_src', 7, 5, 42.50, 'EUR', '2024-03-01 09:45:00+00'),
	   ('00000000-0000-4000-8000-000000000002', 'perm_src', 8, 5, 10.00, 'EUR', '2024-03-01 11:00:00+00');
SELECT adstream.attribute_orders() AS judged;
INSERT INTO adstream.rollup_pending VALUES ('2024-03-01 10:00:00+00');
SELECT adstream.refresh_rollups() AS pending_minutes;
-- 0.3: a sink, which queues the results above for publishing.
SELECT adstream.create_sink('perm_sink', 'k:9092', '{"sasl.password": "hunter2"}');

-------------------------------------------------------------------------------
-- The catalog: grants, PUBLIC, SECURITY DEFINER
-------------------------------------------------------------------------------

-- Who may read and write each relation (partitions are reached through
-- their parents).  Writes are for the superuser-run workers only.
SELECT c.relname,
	   has_table_privilege('public', c.oid, 'SELECT') AS public_reads,
	   has_table_privilege('adstream_reader', c.oid, 'SELECT') AS reader_reads,
	   has_table_privilege('adstream_admin', c.oid, 'SELECT') AS admin_reads,
	   has_table_privilege('public', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
	   OR has_table_privilege('adstream_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
	   OR has_table_privilege('adstream_admin', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS anyone_writes
  FROM pg_class c
 WHERE c.relnamespace = 'adstream'::regnamespace
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
 ORDER BY c.relname;

-- Who may call each function of the API (internal "_" functions and the
-- shared-memory readers behind source_status and sink_status are left out).
SELECT p.oid::regprocedure::text AS function,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_calls,
	   has_function_privilege('adstream_reader', p.oid, 'EXECUTE') AS reader_calls,
	   has_function_privilege('adstream_admin', p.oid, 'EXECUTE') AS admin_calls
  FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace
   AND p.proname !~ '^_' AND p.proname NOT IN ('worker_status', 'partition_status', 'partition_lag', 'publisher_status')
 ORDER BY 1;

-- Nothing at all is open to PUBLIC (function defaults would grant EXECUTE).
SELECT p.oid::regprocedure AS public_function FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT has_schema_privilege('public', 'adstream', 'USAGE') AS public_usage,
	   has_schema_privilege('public', 'adstream', 'CREATE') AS public_create,
	   has_schema_privilege('adstream_reader', 'adstream', 'CREATE') AS reader_create,
	   has_schema_privilege('adstream_admin', 'adstream', 'CREATE') AS admin_create;

-- The management functions are SECURITY DEFINER, and every SECURITY DEFINER
-- function runs with a fixed search_path that puts pg_temp last.
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace
   AND p.proname IN ('create_source', 'drop_source', 'pause_source', 'resume_source',
					 'create_sink', 'drop_sink', 'pause_sink', 'resume_sink')
 ORDER BY 1;
-- All SECURITY DEFINER functions: the source and sink management API and the readers
-- that need tables their callers may not read (offsets, sources,
-- rollup_pending).
SELECT p.oid::regprocedure AS definer_function
  FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace AND p.prosecdef
 ORDER BY p.oid::regprocedure::text;
SELECT p.oid::regprocedure AS definer_without_safe_search_path
  FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace AND p.prosecdef
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);

-------------------------------------------------------------------------------
-- A role with no adstream membership
-------------------------------------------------------------------------------

SET SESSION AUTHORIZATION regress_adstream_plain;
SELECT current_user;
SELECT adstream.create_source('plain_src', 'k:9092', 't');
SELECT adstream.pause_source('perm_src');
SELECT adstream.resume_source('perm_src');
SELECT adstream.drop_source('perm_src');
SELECT * FROM adstream.sources;
SELECT * FROM adstream.offsets;
SELECT * FROM adstream.rejected_events;
SELECT * FROM adstream.source_config;
SELECT * FROM adstream.source_status;
SELECT * FROM adstream.ad_stats_minute;
SELECT * FROM adstream.validate_event('{}');
SELECT * FROM adstream.ad_stats_hour;
SELECT * FROM adstream.attributed_orders;
SELECT * FROM adstream.orders;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02');
SELECT * FROM adstream.validate_order('{}');
-- 0.3
SELECT * FROM adstream.sink_status;
SELECT * FROM adstream.sinks;
SELECT adstream.create_sink('plain_sink', 'k:9092');
RESET SESSION AUTHORIZATION;
SELECT current_user = session_user AS back_to_superuser;

-------------------------------------------------------------------------------
-- A member of adstream_reader
-------------------------------------------------------------------------------

SET ROLE regress_adstream_reader;
SELECT current_user;
-- may read results and status
SELECT ad_id, campaign_id, window_start, impressions, clicks FROM adstream.ad_stats_minute;
SELECT source, topic, source_state, partition, worker_state, next_offset, accepted,
	   partition_watermark, source_watermark
  FROM adstream.source_status ORDER BY source, partition;
SELECT adstream.source_watermark('perm_src');
SELECT reason, detail FROM adstream.validate_event('{}');
-- 0.2: may read rollups and credited orders, and call the stats functions
SELECT ad_id, campaign_id, window_start, impressions, clicks FROM adstream.ad_stats_hour;
SELECT count(*) AS six_hour_rows FROM adstream.ad_stats_6h;
SELECT count(*) AS day_rows FROM adstream.ad_stats_day;
SELECT ad_id, campaign_id, amount, currency, attribution,
	   record_uuid = adstream.record_uuid('attributed_orders', order_id::text) AS record_uuid_ok
  FROM adstream.attributed_orders;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'day');
SELECT * FROM adstream.campaign_stats('2024-03-01', '2024-03-02', 'day');
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'minute');
SELECT adstream.bucket('6h', '2024-03-01 10:00:00+00');
SELECT adstream.ad_events_watermark();
SELECT reason, detail FROM adstream.validate_order('{}');
-- 0.3: may read the sinks' status, but not their configuration or the outbox
SELECT sink, sink_state, worker_state FROM adstream.sink_status;
SELECT * FROM adstream.sinks;
SELECT * FROM adstream.outbox;
SELECT adstream.create_sink('reader_sink', 'k:9092');
SELECT adstream.pause_sink('perm_sink');
-- may not change results
UPDATE adstream.ad_stats_minute SET clicks = 0;
DELETE FROM adstream.ad_stats_minute;
UPDATE adstream.ad_stats_day SET clicks = 0;
DELETE FROM adstream.attributed_orders;
-- may not see configuration, positions or dead letters
SELECT * FROM adstream.sources;
SELECT * FROM adstream.source_config;
SELECT * FROM adstream.offsets;
SELECT * FROM adstream.rejected_events;
SELECT * FROM adstream.partitioned_tables;
-- nor orders, the ad events kept for attribution or the rollup queue
SELECT * FROM adstream.orders;
SELECT * FROM adstream.waiting_orders;
SELECT * FROM adstream.ad_events;
SELECT * FROM adstream.rollup_pending;
-- may not manage sources or partitions
SELECT adstream.create_source('reader_src', 'k:9092', 't');
SELECT adstream.pause_source('perm_src');
SELECT adstream.resume_source('perm_src');
SELECT adstream.drop_source('perm_src');
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-03-02 00:00:00+00']::timestamptz[]);
SELECT adstream.expire_dedup_state();
-- nor run what the workers and pg_cron run
SELECT adstream.attribute_orders();
SELECT adstream.refresh_rollups();
SELECT adstream.create_partitions_ahead();
SELECT adstream.drop_expired_partitions();
SELECT adstream.schedule_maintenance();
SELECT adstream.unschedule_maintenance();
-- nor call the internals the views use directly
SELECT adstream._is_secret('sasl.password');
SELECT adstream._wake_launcher();
SELECT adstream._source_kinds();
SELECT adstream._partition_upper('adstream.ad_stats_minute_p20240301_0000');
-- nor create objects in the schema
CREATE TABLE adstream.mine (x int);
RESET ROLE;

-------------------------------------------------------------------------------
-- A member of adstream_admin
-------------------------------------------------------------------------------

SET SESSION AUTHORIZATION regress_adstream_admin;
SELECT current_user;
-- manages sources through the API
SELECT adstream.create_source('admin_src', 'k:9092', 'admin_topic',
		options => '{"workers": 2, "sasl.password": "admin-secret", "ssl.key.password": "key-secret"}');
SELECT adstream.pause_source('admin_src');
SELECT adstream.resume_source('admin_src');
-- sees configuration with secrets masked
SELECT name, topic, workers, enabled, kafka_options FROM adstream.source_config ORDER BY name;
SELECT count(*) AS leaks FROM adstream.source_config c
 WHERE c::text LIKE '%hunter2%' OR c::text LIKE '%secret%';
-- a rejected secret value is not echoed back either
SELECT adstream.create_source('admin_bad', 'k:9092', 't', options => '{"sasl.oauthbearer.method": "hunter2"}');
-- sees positions, dead letters, results and status
SELECT source, topic, partition, next_offset, max_event_ts, accepted FROM adstream.offsets ORDER BY 1, 2, 3;
SELECT source, "offset", reason FROM adstream.rejected_events;
SELECT count(*) AS stats_rows FROM adstream.ad_stats_minute;
SELECT source, source_state, partition, next_offset FROM adstream.source_status ORDER BY source, partition;
SELECT adstream.source_watermark('perm_src');
-- 0.2: sees orders, what waits, the ad events kept for attribution, and
-- everything a reader sees
SELECT right(order_id::text, 4) AS ord, user_id, amount, status, ad_id FROM adstream.orders ORDER BY 1;
SELECT right(order_id::text, 4) AS ord, ts, ad_events_watermark, decide_by - received_at AS max_wait
  FROM adstream.waiting_orders;
SELECT type, ad_id, user_id, ts FROM adstream.ad_events;
SELECT count(*) AS credited FROM adstream.attributed_orders;
SELECT * FROM adstream.campaign_stats('2024-03-01', '2024-03-02');
-- may manage an orders source
SELECT adstream.create_source('admin_shop', 'k:9092', 'admin_orders', kind => 'orders');
SELECT name, kind FROM adstream.source_config WHERE name = 'admin_shop';
SELECT adstream.drop_source('admin_shop');
-- 0.3: manages sinks, sees their status, not their credentials or the outbox
SELECT adstream.create_sink('admin_sink', 'k:9092', '{"sasl.password": "admin-secret"}');
SELECT adstream.pause_sink('admin_sink');
SELECT adstream.resume_sink('admin_sink');
SELECT sink, sink_state FROM adstream.sink_status ORDER BY sink;
SELECT * FROM adstream.sinks;
SELECT * FROM adstream.outbox;
SELECT adstream.prune_outbox();
SELECT adstream.drop_sink('admin_sink');
-- but not the queue, the internals or the maintenance
SELECT * FROM adstream.rollup_pending;
SELECT adstream.attribute_orders();
SELECT adstream.refresh_rollups();
SELECT adstream.create_partitions_ahead();
SELECT adstream.drop_expired_partitions();
SELECT adstream.schedule_maintenance();
SELECT adstream.unschedule_maintenance();
SELECT adstream._drop_partitions_before('ad_events', now());
-- but not the table holding the credentials
SELECT * FROM adstream.sources;
SELECT kafka_options FROM adstream.sources;
-- and may not write around the API
UPDATE adstream.sources SET enabled = false;
UPDATE adstream.offsets SET next_offset = 0;
DELETE FROM adstream.rejected_events;
TRUNCATE adstream.rejected_events;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start) VALUES (2, 20, '2024-03-01 10:00:00+00');
DROP TABLE adstream.offsets;
UPDATE adstream.orders SET status = 'waiting';
DELETE FROM adstream.attributed_orders;
INSERT INTO adstream.rollup_pending VALUES ('2024-03-01 10:00:00+00');
UPDATE adstream.ad_stats_hour SET impressions = 0;
DELETE FROM adstream.ad_events;
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-03-02 00:00:00+00']::timestamptz[]);
SELECT adstream.expire_dedup_state();
SELECT adstream._kafka_property_error('socket.timeout.ms', '1');
-- librdkafka properties that load code or run commands in the server must
-- not be available to a non-superuser (either error code counts as refused)
DO $$
DECLARE
	k text;
BEGIN
	FOREACH k IN ARRAY ARRAY['sasl.kerberos.kinit.cmd', 'plugin.library.paths', 'ssl.engine.location'] LOOP
		BEGIN
			PERFORM adstream.create_source('admin_evil', 'k:9092', 't',
					options => jsonb_build_object(k, '/nonexistent/adstream-regress'));
			RAISE NOTICE '%: accepted', k;
			PERFORM adstream.drop_source('admin_evil');
		EXCEPTION WHEN invalid_parameter_value OR insufficient_privilege THEN
			RAISE NOTICE '%: refused', k;
		END;
	END LOOP;
END
$$;
SELECT adstream.drop_source('admin_src');
SELECT name FROM adstream.source_config ORDER BY name;
RESET SESSION AUTHORIZATION;

-- SET ROLE to the group roles themselves behaves the same.
SET ROLE adstream_reader;
SELECT count(*) AS stats_rows FROM adstream.ad_stats_minute;
SELECT adstream.pause_source('perm_src');
RESET ROLE;
SET ROLE adstream_admin;
SELECT adstream.pause_source('perm_src');
SELECT name, enabled FROM adstream.source_config ORDER BY name;
SELECT adstream.resume_source('perm_src');
RESET ROLE;

-------------------------------------------------------------------------------
-- Clean up (roles are cluster-wide)
-------------------------------------------------------------------------------

SELECT adstream.drop_source('perm_src');
SELECT adstream.drop_sink('perm_sink');
SELECT count(*) AS outbox_rows FROM adstream.outbox;
DELETE FROM adstream.rejected_events WHERE source = 'perm_src';
DROP TABLE adstream.ad_stats_minute_p20240301_0000;
DROP TABLE adstream.ad_events_p20240301_0900;
TRUNCATE adstream.orders, adstream.attributed_orders, adstream.ad_stats_hour, adstream.ad_stats_6h,
		 adstream.ad_stats_day;
SELECT count(*) AS sources FROM adstream.sources;
DROP ROLE regress_adstream_plain, regress_adstream_reader, regress_adstream_admin;
SELECT count(*) AS leftover_roles FROM pg_roles WHERE rolname LIKE 'regress\_adstream\_%';
