--
-- upgrade: ALTER EXTENSION adstream UPDATE from 0.1 to 0.2, then to 0.3 and
-- 0.4, keeps every source and its data, and leaves exactly the schema of a
-- fresh install of the default version (0.4).
--
-- The comparison captures the catalog of schema adstream (relations,
-- columns, constraints, indexes, views, functions with their attributes and
-- bodies, ACLs, comments, extension membership and configuration tables)
-- after the upgrade and again after a fresh CREATE EXTENSION, and prints
-- the differences, which must be none.  Run-time partitions are left out.
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SELECT * FROM pg_extension_update_paths('adstream') ORDER BY source, target;

DROP EXTENSION adstream;
CREATE EXTENSION adstream VERSION '0.1';
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';

-- The objects of 0.1.
SELECT c.relname, c.relkind FROM pg_class c
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v')
 ORDER BY 1;
SELECT p.oid::regprocedure AS function FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace ORDER BY p.oid::regprocedure::text;

-------------------------------------------------------------------------------
-- Data under 0.1
-------------------------------------------------------------------------------

-- 0.1 consumes ad events only.
SELECT adstream.create_source('shop_early', 'k:9092', 'orders', kind => 'orders');

SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('up_src', 'k1:9092,k2:9092', 'up-topic',
		options => '{"workers": 2, "start": "latest", "sasl.username": "u", "sasl.password": "pw-0.1"}');
SELECT adstream.create_source('up_paused', 'k:9092', 'paused-topic');
RESET client_min_messages;
SELECT adstream.pause_source('up_paused');

INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected)
VALUES ('up_src', 'up-topic', 0, 1000, '2024-03-01 12:00:00+00', 990, 7, 3),
	   ('up_src', 'up-topic', 1, 500, '2024-03-01 11:00:00+00', 500, 0, 0);
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-03-01 12:00:00+00']::timestamptz[]) AS created;
SELECT adstream.ensure_partitions('dedup_state', ARRAY['2024-03-01 12:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2024-03-01 12:00:00+00', 5, 1), (2, 10, '2024-03-01 12:01:00+00', 3, 0);
INSERT INTO adstream.dedup_state (source_id, event_id, event_ts)
SELECT id, 'f47ac10b-58cc-4372-a567-0e02b2c3d479', '2024-03-01 12:00:00+00' FROM adstream.sources WHERE name = 'up_src';
INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes)
VALUES ('up_src', 'up-topic', 0, 17, 'invalid_json', 'unexpected end of input at byte 1', '\x7b', 1);

-- What must survive, taken before the update.
CREATE TEMP TABLE before_sources AS SELECT * FROM adstream.sources;
CREATE TEMP TABLE before_offsets AS SELECT * FROM adstream.offsets;
CREATE TEMP TABLE before_minutes AS SELECT * FROM adstream.ad_stats_minute;
CREATE TEMP TABLE before_dedup AS SELECT * FROM adstream.dedup_state;
CREATE TEMP TABLE before_rejected AS SELECT * FROM adstream.rejected_events;
CREATE TEMP TABLE before_partitions AS
SELECT i.inhparent::regclass::text AS parent, i.inhrelid::regclass::text AS partition,
	   pg_get_expr(c.relpartbound, c.oid) AS bounds, c.reloptions
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind = 'r';

-------------------------------------------------------------------------------
-- The update to 0.2
-------------------------------------------------------------------------------

ALTER EXTENSION adstream UPDATE TO '0.2';
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
-- nothing more to do
ALTER EXTENSION adstream UPDATE TO '0.2';

-- Sources, their configuration (credentials included) and their generations
-- are unchanged, so running workers are not restarted by an update.
SELECT name, kind, brokers, topic, start_policy, workers, group_id, enabled
  FROM adstream.source_config ORDER BY name;
SELECT name, kafka_options FROM adstream.source_config ORDER BY name;
SELECT (SELECT count(*) FROM (TABLE before_sources EXCEPT TABLE adstream.sources) d) AS sources_changed,
	   (SELECT count(*) FROM (TABLE adstream.sources EXCEPT TABLE before_sources) d) AS sources_added,
	   (SELECT count(*) FROM (TABLE before_offsets EXCEPT TABLE adstream.offsets) d) AS offsets_changed,
	   (SELECT count(*) FROM (TABLE before_minutes EXCEPT TABLE adstream.ad_stats_minute) d) AS minutes_changed,
	   (SELECT count(*) FROM (TABLE before_dedup EXCEPT TABLE adstream.dedup_state) d) AS dedup_changed,
	   (SELECT count(*) FROM (TABLE before_rejected EXCEPT TABLE adstream.rejected_events) d) AS dead_letters_changed;
-- the partitions made under 0.1 are still attached, with their bounds
SELECT p.parent, p.partition, p.bounds, p.reloptions,
	   EXISTS (SELECT 1 FROM pg_inherits i
				WHERE i.inhrelid = p.partition::regclass AND i.inhparent = p.parent::regclass) AS attached
  FROM before_partitions p ORDER BY 1, 2;
SELECT source, topic, source_state, partition, next_offset, accepted, duplicates, rejected,
	   partition_watermark, source_watermark
  FROM adstream.source_status ORDER BY source, partition;

-- The 0.2 objects work on the upgraded data.
SELECT name, grain, fillfactor FROM adstream.partitioned_tables ORDER BY name;
SELECT adstream.ad_events_watermark() AS ad_events_watermark;
INSERT INTO adstream.rollup_pending SELECT DISTINCT window_start FROM adstream.ad_stats_minute;
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'day') ORDER BY ad_id;
SET client_min_messages = error;
SELECT adstream.create_source('shop', 'k:9092', 'orders', kind => 'orders');
RESET client_min_messages;
SELECT name, kind FROM adstream.source_config ORDER BY name;
-- the new check of sources.kind is in force (terse: the failing row holds
-- the clock)
\set VERBOSITY terse
INSERT INTO adstream.sources (name, kind, brokers, topic, group_id) VALUES ('bad', 'clicks', 'k', 't', 'g');
\set VERBOSITY default

-------------------------------------------------------------------------------
-- Data under 0.2, and the update to 0.3
-------------------------------------------------------------------------------

-- A credited order, as attribute_orders leaves it.
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, record_uuid, attributed_at)
VALUES ('00000000-0000-4000-8000-000000000001', 1, 10, 'f47ac10b-58cc-4372-a567-0e02b2c3d479',
		'2024-03-01 12:00:00+00', '2024-03-01 12:05:00+00', 42.50, 'EUR',
		adstream.record_uuid('attributed_orders', '00000000-0000-4000-8000-000000000001'),
		'2024-03-01 12:10:00+00');
CREATE TEMP TABLE before_credits AS SELECT * FROM adstream.attributed_orders;
CREATE TEMP TABLE before_rollups AS SELECT * FROM adstream.ad_stats_day;
CREATE TEMP TABLE relations_02 AS
SELECT c.relname::text AS relname, c.relkind FROM pg_class c
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition;
CREATE TEMP TABLE functions_02 AS
SELECT p.oid::regprocedure::text AS function FROM pg_proc p WHERE p.pronamespace = 'adstream'::regnamespace;

ALTER EXTENSION adstream UPDATE TO '0.3';
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
-- nothing more to do
ALTER EXTENSION adstream UPDATE TO '0.3';

-- What 0.3 adds; nothing is removed.
SELECT c.relname, c.relkind FROM pg_class c
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
   AND c.relname::text NOT IN (SELECT relname FROM relations_02)
 ORDER BY 1;
SELECT p.oid::regprocedure AS function FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace
   AND p.oid::regprocedure::text NOT IN (SELECT function FROM functions_02)
 ORDER BY p.oid::regprocedure::text;
SELECT (SELECT count(*) FROM relations_02 r WHERE to_regclass('adstream.' || quote_ident(r.relname)) IS NULL) AS relations_gone,
	   (SELECT count(*) FROM functions_02 f WHERE to_regprocedure(f.function) IS NULL) AS functions_gone;
SELECT t.tgname, pg_get_triggerdef(t.oid) AS definition FROM pg_trigger t
 WHERE t.tgrelid = 'adstream.attributed_orders'::regclass AND NOT t.tgisinternal;

-- Every result survives; the update queues nothing, there being no sink.
SELECT (SELECT count(*) FROM (TABLE before_sources EXCEPT TABLE adstream.sources) d) AS sources_changed,
	   (SELECT count(*) FROM (TABLE before_offsets EXCEPT TABLE adstream.offsets) d) AS offsets_changed,
	   (SELECT count(*) FROM (TABLE before_minutes EXCEPT TABLE adstream.ad_stats_minute) d) AS minutes_changed,
	   (SELECT count(*) FROM (TABLE before_credits EXCEPT TABLE adstream.attributed_orders) d) AS credits_changed,
	   (SELECT count(*) FROM (TABLE before_rollups EXCEPT TABLE adstream.ad_stats_day) d) AS rollups_changed;
SELECT count(*) AS sinks FROM adstream.sinks;
SELECT count(*) AS outbox_rows FROM adstream.outbox;
SELECT adstream._publishing() AS publishing;

-- A sink created after the update starts with the upgraded results.
SELECT adstream.create_sink('up_sink', 'k:9092');
SELECT kind, ad_id, window_start, order_id FROM adstream.outbox ORDER BY kind, ad_id, window_start, order_id;
SELECT o.topic,
	   o.record_key = adstream._record_key(b.kind, b.ad_id, b.window_start, b.order_id) AS key_ok,
	   (o.value::jsonb ->> 'record_uuid')::uuid = adstream.record_uuid(b.kind, o.record_key) AS record_uuid_ok
  FROM adstream._outbox_page('up_sink', 100) o JOIN adstream.outbox b ON b.id = o.id
 ORDER BY o.id;
SELECT sink, sink_state, worker_state, backlog_rows FROM adstream.sink_status;
SELECT adstream.drop_sink('up_sink');
SELECT count(*) AS outbox_rows FROM adstream.outbox;

-------------------------------------------------------------------------------
-- The update to 0.4: event ids move from dedup_state to dedup_log
-------------------------------------------------------------------------------

-- Two more ids remembered under 0.3, one of them in another hour.
SELECT adstream.ensure_partitions('dedup_state', ARRAY['2024-03-01 13:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.dedup_state (source_id, event_id, event_ts)
SELECT id, u.event_id, u.ts FROM adstream.sources,
	   (VALUES ('00000000-0000-4000-8000-0000000000aa'::uuid, '2024-03-01 12:59:59+00'::timestamptz),
			   ('00000000-0000-4000-8000-0000000000bb'::uuid, '2024-03-01 13:00:00+00'::timestamptz)) AS u(event_id, ts)
 WHERE name = 'up_src';
CREATE TEMP TABLE before_dedup_03 AS
SELECT source_id, date_bin('1 hour', event_ts, timestamptz '1970-01-01') AS hour, event_id FROM adstream.dedup_state;

ALTER EXTENSION adstream UPDATE;
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
ALTER EXTENSION adstream UPDATE;

SELECT to_regclass('adstream.dedup_state') AS dedup_state, to_regclass('adstream.dedup_log') AS dedup_log;
SELECT name, grain, fillfactor FROM adstream.partitioned_tables ORDER BY name;
-- every remembered id is in dedup_log, in its hour, in id order
SELECT l.source_id, l.hour, length(l.ids) / 16 AS ids, l.tableoid::regclass AS partition
  FROM adstream.dedup_log l ORDER BY 1, 2;
WITH logged AS (
	SELECT l.source_id, l.hour, i AS pos, substring(l.ids FROM 16 * i + 1 FOR 16) AS id
	  FROM adstream.dedup_log l, generate_series(0, length(l.ids) / 16 - 1) AS i)
SELECT (SELECT count(*) FROM before_dedup_03) AS before,
	   (SELECT count(*) FROM logged) AS after,
	   (SELECT count(*) FROM before_dedup_03 b
		 WHERE NOT EXISTS (SELECT 1 FROM logged g WHERE g.source_id = b.source_id AND g.hour = b.hour
												   AND g.id = uuid_send(b.event_id))) AS missing,
	   (SELECT bool_and(a.id < b.id) FROM logged a JOIN logged b
			ON b.source_id = a.source_id AND b.hour = a.hour AND b.pos = a.pos + 1) AS sorted;
-- the upgraded data expires like new data: the ads of up_src are at 12:00,
-- so the cutoff (11:00) keeps both hours
SELECT adstream.expire_dedup_state() AS dropped;
SELECT count(*) AS dedup_log_rows FROM adstream.dedup_log;

-------------------------------------------------------------------------------
-- The upgraded schema equals a fresh install
-------------------------------------------------------------------------------

CREATE FUNCTION pg_temp.adstream_catalog()
RETURNS TABLE (kind text, object text, detail text)
LANGUAGE sql STABLE AS $$
	-- the schema
	SELECT 'schema', n.nspname::text,
		   concat_ws(' | ', n.nspacl::text, obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n WHERE n.nspname = 'adstream'
	UNION ALL
	-- relations other than run-time partitions
	SELECT 'relation', c.relname::text,
		   concat_ws(' | ', c.relkind, c.relpersistence, c.reloptions::text, c.relacl::text,
					 pg_get_partkeydef(c.oid), obj_description(c.oid, 'pg_class'))
	  FROM pg_class c
	 WHERE c.relnamespace = 'adstream'::regnamespace AND NOT c.relispartition
	   AND c.relkind NOT IN ('i', 'I')
	UNION ALL
	-- columns, in order, with type, nullability, default, identity, comment
	SELECT 'column', c.relname || '.' || a.attname,
		   concat_ws(' | ', a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull,
					 pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
					 col_description(c.oid, a.attnum))
	  FROM pg_class c
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	 WHERE c.relnamespace = 'adstream'::regnamespace AND NOT c.relispartition
	   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
	UNION ALL
	-- constraints
	SELECT 'constraint', c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
	  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
	 WHERE c.relnamespace = 'adstream'::regnamespace AND NOT c.relispartition
	UNION ALL
	-- indexes
	SELECT 'index', i.relname::text, pg_get_indexdef(i.oid)
	  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
	 WHERE c.relnamespace = 'adstream'::regnamespace AND NOT c.relispartition
	UNION ALL
	-- views
	SELECT 'view', c.relname::text, pg_get_viewdef(c.oid)
	  FROM pg_class c WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('v', 'm')
	UNION ALL
	-- functions: signature, attributes, ACL, comment, and the whole definition
	SELECT 'function', p.oid::regprocedure::text,
		   concat_ws(' | ', p.prokind, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
					 l.lanname, p.prosecdef, p.provolatile, p.proparallel, p.proisstrict,
					 p.proleakproof, p.proretset, p.procost, p.prorows, p.proconfig::text, p.proacl::text,
					 obj_description(p.oid, 'pg_proc'))
	  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	 WHERE p.pronamespace = 'adstream'::regnamespace
	UNION ALL
	SELECT 'function body', p.oid::regprocedure::text, pg_get_functiondef(p.oid)
	  FROM pg_proc p WHERE p.pronamespace = 'adstream'::regnamespace
	UNION ALL
	-- triggers, rules and policies
	SELECT 'trigger', c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
	  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
	 WHERE c.relnamespace = 'adstream'::regnamespace AND NOT t.tgisinternal
	UNION ALL
	SELECT 'rule', r.rulename::text, pg_get_ruledef(r.oid)
	  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
	 WHERE c.relnamespace = 'adstream'::regnamespace AND r.rulename <> '_RETURN'
	UNION ALL
	SELECT 'policy', c.relname || '.' || pl.polname, pl.polcmd::text
	  FROM pg_policy pl JOIN pg_class c ON c.oid = pl.polrelid
	 WHERE c.relnamespace = 'adstream'::regnamespace
	UNION ALL
	-- what belongs to the extension, and which tables pg_dump saves
	SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), NULL
	  FROM pg_depend d
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'adstream')
	UNION ALL
	SELECT 'config table', x.rel::regclass::text, e.extcondition[x.n]
	  FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS x(rel, n)
	 WHERE e.extname = 'adstream'
	UNION ALL
	-- rows the install scripts put into tables
	SELECT 'partitioned_tables row', t.name, concat_ws(' | ', t.grain, t.fillfactor)
	  FROM adstream.partitioned_tables t
	UNION ALL
	-- the extension's roles
	SELECT 'role', r.rolname::text,
		   concat_ws(' | ', r.rolcanlogin, r.rolsuper, r.rolinherit,
					 (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname)
						FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid))
	  FROM pg_roles r WHERE r.rolname IN ('adstream_reader', 'adstream_admin')
$$;

CREATE TEMP TABLE upgraded_catalog AS SELECT * FROM pg_temp.adstream_catalog();

DROP EXTENSION adstream;
CREATE EXTENSION adstream;
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
CREATE TEMP TABLE fresh_catalog AS SELECT * FROM pg_temp.adstream_catalog();

-- Both captures are complete ...
SELECT f.kind, count(*) > 0 AS captured,
	   count(*) = (SELECT count(*) FROM upgraded_catalog u WHERE u.kind = f.kind) AS same_count
  FROM fresh_catalog f GROUP BY f.kind ORDER BY 1;
-- ... and equal.
(SELECT 'only after update' AS side, * FROM upgraded_catalog EXCEPT SELECT 'only after update', * FROM fresh_catalog)
UNION ALL
(SELECT 'only when fresh', * FROM fresh_catalog EXCEPT SELECT 'only when fresh', * FROM upgraded_catalog)
ORDER BY 2, 3, 1;

SELECT count(*) AS sources FROM adstream.sources;
