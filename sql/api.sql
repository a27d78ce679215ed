--
-- api: the SQL interface for managing sources, partitions and dedup expiry.
--
-- The background workers run in database 'postgres' (test/regress.conf), so
-- sources created here start nothing.  Errors are shown with their DETAIL and
-- HINT lines, which are part of the user interface; the PL/pgSQL CONTEXT
-- lines (line numbers) are not.
--
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-------------------------------------------------------------------------------
-- Extension basics
-------------------------------------------------------------------------------

SELECT extname, extversion, extrelocatable
  FROM pg_extension WHERE extname = 'adstream';
SELECT name, version, installed, superuser, relocatable
  FROM pg_available_extension_versions WHERE name = 'adstream' ORDER BY version;

-- Every relation and function of the extension lives in schema adstream.
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS outside_adstream
  FROM pg_depend d
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'adstream')
   AND d.deptype = 'e'
   AND coalesce(c.relnamespace, p.pronamespace) <> 'adstream'::regnamespace
 ORDER BY 1;

-- Already at the newest version: nothing to do.
ALTER EXTENSION adstream UPDATE;

SELECT rolname, rolcanlogin FROM pg_roles
 WHERE rolname IN ('adstream_admin', 'adstream_reader') ORDER BY 1;
SELECT pg_has_role('adstream_admin', 'adstream_reader', 'MEMBER') AS admin_is_reader;

-------------------------------------------------------------------------------
-- create_source: happy paths
-------------------------------------------------------------------------------

-- All defaults.
SELECT adstream.create_source('ads_eu', 'kafka1:9092,kafka2:9092', 'ad-events');
-- Named arguments, explicit kind, the three adstream options.
SELECT adstream.create_source(name => 'ads_us', brokers => 'kafka-us:9092',
		topic => 'ad.events.us', kind => 'ad_events',
		options => '{"workers": 4, "start": "latest", "group_id": "ads-us-consumer"}');
-- workers as a JSON string, the largest allowed value (adstream.max_workers).
SELECT adstream.create_source('ads_max', 'k:9092', 'big_topic', options => '{"workers": "16"}');
-- librdkafka properties, including credentials; numbers and booleans are
-- stored as strings.
SELECT adstream.create_source('ads_sasl', 'secure:9093', 'ad_events',
		options => '{"socket.timeout.ms": 5000,
					 "security.protocol": "SASL_SSL",
					 "sasl.mechanisms": "PLAIN",
					 "sasl.username": "ingest",
					 "sasl.password": "hunter2",
					 "ssl.key.password": "s3cret-key",
					 "enable.ssl.certificate.verification": true}');

SELECT name, kind, brokers, topic, start_policy, workers, group_id, enabled
  FROM adstream.source_config ORDER BY name;

-- Secrets are masked in source_config, other properties are shown as given.
SELECT name, kafka_options FROM adstream.source_config ORDER BY name;
SELECT count(*) AS leaks FROM adstream.source_config c
 WHERE c::text LIKE '%hunter2%' OR c::text LIKE '%s3cret-key%';
-- The table itself keeps the real values for the workers.
SELECT kafka_options ->> 'sasl.password' AS password, kafka_options ->> 'ssl.key.password' AS key_password
  FROM adstream.sources WHERE name = 'ads_sasl';

-- generation is an opaque version; only its type and presence are checked.
SELECT pg_typeof(generation) AS generation_type, count(*) AS sources,
	   count(DISTINCT generation) AS distinct_generations
  FROM adstream.sources GROUP BY 1;

-------------------------------------------------------------------------------
-- create_source: argument errors (each must leave no trace)
-------------------------------------------------------------------------------

-- name
SELECT adstream.create_source('bad name', 'k:9092', 't');
SELECT adstream.create_source('', 'k:9092', 't');
SELECT adstream.create_source('.hidden', 'k:9092', 't');
SELECT adstream.create_source('-dash', 'k:9092', 't');
SELECT adstream.create_source(repeat('n', 64), 'k:9092', 't');
SELECT adstream.create_source(NULL, 'k:9092', 't');
-- 63 characters is the limit and allowed; drop it again at once
SELECT adstream.create_source(repeat('n', 63), 'k:9092', 't');
SELECT adstream.drop_source(repeat('n', 63));

-- kind
SELECT adstream.create_source('s', 'k:9092', 't', kind => 'clicks');
SELECT adstream.create_source('s', 'k:9092', 't', kind => NULL);

-- brokers
SELECT adstream.create_source('s', '', 't');
SELECT adstream.create_source('s', '   ', 't');
SELECT adstream.create_source('s', NULL, 't');

-- topic
SELECT adstream.create_source('s', 'k:9092', 'bad/topic');
SELECT adstream.create_source('s', 'k:9092', 'with space');
SELECT adstream.create_source('s', 'k:9092', '..');
SELECT adstream.create_source('s', 'k:9092', '');
SELECT adstream.create_source('s', 'k:9092', repeat('t', 250));

-- options is not an object
SELECT adstream.create_source('s', 'k:9092', 't', options => '[1, 2]');
SELECT adstream.create_source('s', 'k:9092', 't', options => '"workers=2"');
SELECT adstream.create_source('s', 'k:9092', 't', options => NULL);

-- option values must be scalars
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"socket.timeout.ms": {"value": 5000}}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": [2]}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"start": null}');

-- start
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"start": "now"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"start": "EARLIEST"}');

-- workers
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": 0}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": 65}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": "x"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": 1.5}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"workers": -1}');

-- group_id
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"group_id": " "}');

-- librdkafka properties that adstream sets itself
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"enable.auto.commit": true}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"group.id": "other"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"bootstrap.servers": "elsewhere:9092"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"auto.offset.reset": "latest"}');

-- librdkafka rejects the property or its value
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"no.such.property": "1"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"socket.timeout.ms": "soon"}');
-- the value of a secret-looking property is never echoed back
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"sasl.oauthbearer.method": "hunter2"}');

-- "partitions": this server's share of a topic that several servers split
-- (issue #13); its workers take the listed partitions p with p % workers = i
SELECT adstream.create_source('split_a', 'split:9092', 'split_topic',
	options => '{"partitions": " 8,0-3, 10 - 11,2", "workers": 2}');
SELECT adstream.create_source('split_b', 'split2:9092', 'split_topic', options => '{"partitions": 7}');
SELECT name, workers, partitions FROM adstream.sources WHERE name LIKE 'split%' ORDER BY 1;
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"partitions": "5-2"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"partitions": "0-3,x"}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"partitions": ""}');
SELECT adstream.create_source('s', 'k:9092', 't', options => '{"partitions": -1}');
SELECT adstream.drop_source('split_a');
SELECT adstream.drop_source('split_b');

-- duplicate name
SELECT adstream.create_source('ads_eu', 'other:9092', 'other_topic');
-- a second source on the same topic of the same cluster (one broker in
-- common, whatever the case, order or protocol prefix) would count twice
SELECT adstream.create_source('ADS_EU', 'PLAINTEXT://KAFKA2:9092', 'ad-events');
-- the same topic name on another cluster, or another kind, is another stream
SELECT adstream.create_source('ads_eu_b', 'kafka9:9092', 'ad-events');
SELECT adstream.drop_source('ads_eu_b');

-- None of the failed calls left a source behind.
SELECT name FROM adstream.sources ORDER BY name;

-------------------------------------------------------------------------------
-- pause, resume, drop
-------------------------------------------------------------------------------

SELECT generation AS gen_before FROM adstream.sources WHERE name = 'ads_eu' \gset

SELECT adstream.pause_source('ads_eu');
SELECT name, enabled FROM adstream.source_config WHERE name = 'ads_eu';
-- pausing twice is harmless
SELECT adstream.pause_source('ads_eu');
SELECT generation = :'gen_before' AS generation_unchanged_by_pause
  FROM adstream.sources WHERE name = 'ads_eu';

SELECT generation AS gen_paused FROM adstream.sources WHERE name = 'ads_eu' \gset
SELECT adstream.resume_source('ads_eu');
SELECT name, enabled FROM adstream.source_config WHERE name = 'ads_eu';
-- resuming gives the source a new generation, so old workers stand down
SELECT generation <> :'gen_paused' AS new_generation_on_resume
  FROM adstream.sources WHERE name = 'ads_eu';

-- resuming a running source restarts its workers (a new generation): the way
-- to take up a partition stopped for another node (docs/deployment.md)
SELECT generation AS gen_running FROM adstream.sources WHERE name = 'ads_eu' \gset
SELECT adstream.resume_source('ads_eu');
SELECT enabled, generation <> :'gen_running' AS new_generation
  FROM adstream.sources WHERE name = 'ads_eu';

-- missing sources
SELECT adstream.pause_source('nosuch');
SELECT adstream.resume_source('nosuch');
SELECT adstream.drop_source('nosuch');
SELECT adstream.drop_source(NULL);

-------------------------------------------------------------------------------
-- source_status
-------------------------------------------------------------------------------

SELECT adstream.pause_source('ads_max');

-- No offsets and no workers yet: one row per source, without partition.
SELECT source, topic, source_state, partition, worker_pid, worker_state,
	   next_offset, lag, accepted, duplicates, rejected,
	   partition_watermark, source_watermark, last_error
  FROM adstream.source_status ORDER BY source, partition;

-- With committed offsets: one row per partition, the source watermark is
-- the highest partition watermark.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected)
VALUES ('ads_eu', 'ad-events', 0, 1000, '2024-03-01 12:00:00+00', 990, 7, 3),
	   ('ads_eu', 'ad-events', 1, 500, '2024-03-01 12:05:30.25+00', 480, 0, 20),
	   ('ads_eu', 'ad-events', 2, 0, NULL, 0, 0, 0);
-- An offsets row for another topic (the source was pointed elsewhere) is not shown.
INSERT INTO adstream.offsets (source, topic, partition, next_offset)
VALUES ('ads_eu', 'old-topic', 0, 42);

SELECT source, topic, source_state, partition, worker_state,
	   next_offset, accepted, duplicates, rejected,
	   partition_watermark, source_watermark
  FROM adstream.source_status ORDER BY source, partition;

SELECT adstream.source_watermark('ads_eu') AS ads_eu,
	   adstream.source_watermark('ads_us') AS ads_us,
	   adstream.source_watermark('nosuch') AS nosuch;

-------------------------------------------------------------------------------
-- drop_source removes offsets, keeps results
-------------------------------------------------------------------------------

INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes)
VALUES ('ads_eu', 'ad-events', 0, 17, 'invalid_json', 'unexpected end of input at byte 1', '\x7b', 1);

SELECT source, topic, partition FROM adstream.offsets ORDER BY 1, 2, 3;
SELECT adstream.drop_source('ads_eu');
SELECT count(*) AS ads_eu_offsets FROM adstream.offsets WHERE source = 'ads_eu';
SELECT source, "offset", reason FROM adstream.rejected_events;
SELECT name FROM adstream.sources ORDER BY name;
SELECT source FROM adstream.source_status ORDER BY source;
-- dropping twice fails
SELECT adstream.drop_source('ads_eu');
-- the name can be used again
SELECT adstream.create_source('ads_eu', 'kafka1:9092', 'ad-events');
SELECT count(*) AS ads_eu_offsets FROM adstream.offsets WHERE source = 'ads_eu';

-------------------------------------------------------------------------------
-- ensure_partitions
-------------------------------------------------------------------------------

-- Daily partitions for ad_stats_minute: two days from four times (and a NULL).
SELECT adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2024-03-01 10:15:00+00', '2024-03-01 23:59:59.999999+00',
			  '2024-03-02 00:00:00+00', '2024-03-02 18:00:00+00', NULL]::timestamptz[]) AS created;
-- idempotent
SELECT adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2024-03-01 00:00:00+00', '2024-03-02 12:00:00+00']::timestamptz[]) AS created;
-- binning is in UTC, whatever the session time zone
SET timezone = 'America/New_York';
SELECT adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2024-03-02 21:00:00-05']::timestamptz[]) AS created;	-- 2024-03-03 02:00 UTC
SET timezone = 'UTC';

-- Hourly partitions for dedup_log.
SELECT adstream.ensure_partitions('dedup_log',
		ARRAY['2024-03-01 09:00:00+00', '2024-03-01 09:59:59.999999+00', '2024-03-01 10:00:00+00',
			  '2024-03-01 11:30:00+00', '2024-03-01 12:00:00+00', '2024-03-01 13:45:00+00']::timestamptz[]) AS created;
SELECT adstream.ensure_partitions('dedup_log', '{}') AS created;
SELECT adstream.ensure_partitions('dedup_log', ARRAY[NULL]::timestamptz[]) AS created;

-- not an adstream partitioned table
SELECT adstream.ensure_partitions('offsets', ARRAY[now()]);

SELECT p.relname AS parent, c.relname AS partition,
	   pg_get_expr(c.relpartbound, c.oid) AS bounds, c.reloptions
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_class p ON p.oid = i.inhparent
 WHERE i.inhparent IN ('adstream.ad_stats_minute'::regclass, 'adstream.dedup_log'::regclass)
 ORDER BY c.relname;

-- Rows land in the partition of their UTC day / hour.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2024-03-01 23:59:00+00', 5, 1),
	   (1, 10, '2024-03-02 00:00:00+00', 3, 0)
RETURNING tableoid::regclass AS partition, ad_id, window_start;
INSERT INTO adstream.dedup_log (source_id, hour, ids)
VALUES (1, '2024-03-01 10:59:59.999999+00', uuid_send('f47ac10b-58cc-4372-a567-0e02b2c3d479'))
RETURNING tableoid::regclass AS partition;
-- a time without a partition is an error, not a silent drop
INSERT INTO adstream.dedup_log (source_id, hour, ids)
VALUES (1, '2030-01-01 00:00:00+00', uuid_send('f47ac10b-58cc-4372-a567-0e02b2c3d479'));

-------------------------------------------------------------------------------
-- expire_dedup_state (adstream.dedup_horizon is at its default of 1 hour)
-------------------------------------------------------------------------------

SHOW adstream.dedup_horizon;

-- No watermark anywhere yet: nothing is expired.
SELECT adstream.expire_dedup_state() AS dropped;

-- Expiry is per source, behind each source's slowest partition.  No worker
-- runs here, so every partition counts as having messages left to read and
-- holds its source at its own watermark; one that has accepted nothing yet
-- (ads_eu's partition 2) holds everything.  ads_us: 13:30 - 1h = 12:30, so
-- its state before 12:00 is given up.  ads_eu, ads_sasl and ads_max give up
-- nothing.  Both sources have ids in the 10:00 hour.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('ads_eu', 'ad-events', 0, 10, '2024-03-01 11:20:00+00'),
	   ('ads_eu', 'ad-events', 1, 10, '2024-03-01 12:00:00+00'),
	   ('ads_eu', 'ad-events', 2, 10, NULL),
	   ('ads_us', 'ad.events.us', 0, 10, '2024-03-01 13:30:00+00'),
	   ('ads_sasl', 'ad_events', 0, 0, NULL);
INSERT INTO adstream.dedup_log (source_id, hour, ids)
SELECT id, '2024-03-01 10:00:00+00', uuid_send('f47ac10b-58cc-4372-a567-0e02b2c3d479')
  FROM adstream.sources WHERE name IN ('ads_eu', 'ads_us');
SELECT adstream.expire_dedup_state() AS dropped;
SELECT name, dedup_expired_before FROM adstream.sources WHERE kind = 'ad_events' ORDER BY name;
-- The empty 09:00 and 11:00 hours go; 10:00 keeps ads_eu's ids and loses ads_us's.
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'adstream.dedup_log'::regclass ORDER BY 1;
SELECT s.name, d.hour FROM adstream.dedup_log d JOIN adstream.sources s ON s.id = d.source_id ORDER BY 1, 2;
-- the dropped tables are gone, not just detached
SELECT count(*) AS dropped_tables_left FROM pg_class
 WHERE relname IN ('dedup_log_p20240301_0900', 'dedup_log_p20240301_1100');
-- nothing more to do at the same watermarks
SELECT adstream.expire_dedup_state() AS dropped;

-- ads_eu's partition 2 accepts up to 12:10: its slowest is now partition 0
-- (11:20), so ads_eu gives up what is before 10:00 (11:20 - 1h = 10:20),
-- which leaves its 10:00 ids live.
UPDATE adstream.offsets SET max_event_ts = '2024-03-01 12:10:00+00'
 WHERE source = 'ads_eu' AND partition = 2;
SELECT adstream.expire_dedup_state() AS dropped;
SELECT name, dedup_expired_before FROM adstream.sources WHERE name = 'ads_eu';

-- Partition 0 advances to 13:45: partition 1 (12:00) is the slowest, so
-- ads_eu gives up the 10:00 hour, whose partition then holds nothing live.
UPDATE adstream.offsets SET max_event_ts = '2024-03-01 13:45:00+00'
 WHERE source = 'ads_eu' AND partition = 0;
SELECT adstream.expire_dedup_state() AS dropped;
SELECT name, dedup_expired_before FROM adstream.sources WHERE name = 'ads_eu';
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'adstream.dedup_log'::regclass ORDER BY 1;

-- What was given up is never taken back, even if a watermark moves back.
UPDATE adstream.offsets SET max_event_ts = '2024-03-01 09:00:00+00'
 WHERE source = 'ads_eu' AND partition = 1;
SELECT adstream.expire_dedup_state() AS dropped;
SELECT name, dedup_expired_before FROM adstream.sources WHERE name = 'ads_eu';
UPDATE adstream.offsets SET max_event_ts = '2024-03-01 12:00:00+00'
 WHERE source = 'ads_eu' AND partition = 1;

-- Dropping a source drops its hold on nothing else: it never held another.
SELECT adstream.drop_source('ads_us');
SELECT adstream.expire_dedup_state() AS dropped;

-- ad_stats_minute partitions are never expired by it.
SELECT count(*) AS ad_stats_partitions FROM pg_inherits
 WHERE inhparent = 'adstream.ad_stats_minute'::regclass;

-------------------------------------------------------------------------------
-- Sources of kind 'orders' (0.2)
-------------------------------------------------------------------------------

SELECT adstream.create_source('shop', 'k:9092', 'orders', kind => 'orders', options => '{"workers": 2}');
SELECT name, kind, topic, start_policy, workers, group_id, enabled
  FROM adstream.source_config WHERE name = 'shop';
SELECT source, topic, source_state, partition, worker_state FROM adstream.source_status WHERE source = 'shop';
SELECT adstream.pause_source('shop');
SELECT adstream.resume_source('shop');
SELECT name, kind, enabled FROM adstream.source_config WHERE name = 'shop';

-- The watermark of an orders source holds back neither the ad-events
-- watermark nor dedup expiry (orders are deduplicated by their primary key).
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('shop', 'orders', 0, 1, '2024-01-01 00:00:00+00');
SELECT adstream.source_watermark('shop') AS shop, adstream.ad_events_watermark() AS ad_events;
-- every partition of ads_eu moves to 15:00: it gives up what is before 14:00,
-- and the 12:00 and 13:00 partitions go
UPDATE adstream.offsets SET max_event_ts = '2024-03-01 15:00:00+00'
 WHERE source = 'ads_eu';
SELECT adstream.expire_dedup_state() AS dropped;
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'adstream.dedup_log'::regclass ORDER BY 1;

-- ad_events is partitioned by the hour, like dedup_log.
SELECT adstream.ensure_partitions('ad_events',
		ARRAY['2024-03-01 10:00:00+00', '2024-03-01 10:59:59.999999+00', '2024-03-01 11:00:00+00']::timestamptz[]) AS created;
SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bounds, c.reloptions
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'adstream.ad_events'::regclass ORDER BY 1;

SELECT adstream.drop_source('shop');

-------------------------------------------------------------------------------
-- DROP EXTENSION and CREATE EXTENSION again
-------------------------------------------------------------------------------

-- Partitions created at run time go with their parents.
DROP EXTENSION adstream;
SELECT count(*) AS leftover_relations FROM pg_class
 WHERE relname LIKE 'ad_stats_minute%' OR relname LIKE 'dedup_log%' OR relname LIKE 'ad_events%';
SELECT count(*) AS adstream_schemas FROM pg_namespace WHERE nspname = 'adstream';
-- the cluster-wide roles stay
SELECT rolname FROM pg_roles WHERE rolname IN ('adstream_admin', 'adstream_reader') ORDER BY 1;

CREATE EXTENSION adstream;
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
SELECT count(*) AS sources FROM adstream.sources;
SELECT name, grain, fillfactor FROM adstream.partitioned_tables ORDER BY name;
SELECT adstream.create_source('after_reinstall', 'k:9092', 't');
SELECT name, group_id FROM adstream.source_config;
SELECT adstream.drop_source('after_reinstall');
SELECT count(*) AS sources FROM adstream.sources;
