--
-- upgrade: two ways to reach 0.6 leave the same schema.
--
--   the chain   CREATE EXTENSION adstream VERSION '0.1' (adstream--0.1.sql),
--               then ALTER EXTENSION adstream UPDATE to 0.2, 0.3, 0.4, 0.5 and 0.6,
--               the default version, with data in the tables at every step;
--   fresh       CREATE EXTENSION adstream: the full install script
--               adstream--0.6.sql alone.
--
-- Along the chain, every source and its data survive each update.  At the
-- end the catalog of schema adstream is captured after the chain and again
-- after a fresh install, and the differences are printed: there must be
-- none.  The roles are dropped before each path, so both create them.
--
-- So this test fails when the full script and the chain disagree on any
-- object: a relation, column, constraint, index, view, function, trigger,
-- rule, policy, type, sequence or statistics object missing, extra or
-- different -- column types, collations, defaults, NOT NULL, identity,
-- storage; check, unique and foreign keys; index definitions; view queries;
-- function signatures, attributes (language, volatility, strictness,
-- parallel safety, SECURITY DEFINER, SET clauses, cost) and whole bodies;
-- triggers and whether they fire; storage parameters (reloptions);
-- partition keys; row security; sequence parameters and owning columns;
-- owners; the ACLs of the schema, relations, columns, functions and types,
-- the initial privileges pg_dump starts from, and default privileges;
-- comments on all of these; extension membership; the tables and sequences
-- pg_dump saves, with their filter conditions; the rows the scripts put into
-- partitioned_tables; the roles' attributes and memberships.  It does not
-- see what the C library does, nor objects of other kinds than these beyond
-- their membership.  Run-time partitions are data, not schema, and are left
-- out.
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SELECT * FROM pg_extension_update_paths('adstream') ORDER BY source, target;

-- The chain starts from nothing: no extension and no roles (they are
-- cluster-wide and outlive DROP EXTENSION), so that 0.1 creates them.
DROP EXTENSION adstream;
DROP ROLE adstream_admin, adstream_reader;
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

ALTER EXTENSION adstream UPDATE TO '0.4';
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
ALTER EXTENSION adstream UPDATE TO '0.4';

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
-- The 0.5 library does not run 0.4's expiry (its helper changed signature):
-- it asks for the update instead of misreading its arguments.
SELECT adstream.expire_dedup_state() AS dropped;
SELECT count(*) AS dedup_log_rows FROM adstream.dedup_log;

-------------------------------------------------------------------------------
-- The update to the default version (0.6, through 0.5)
-------------------------------------------------------------------------------

CREATE TEMP TABLE before_dedup_log AS SELECT * FROM adstream.dedup_log;

ALTER EXTENSION adstream UPDATE;
SELECT extname, extversion FROM pg_extension WHERE extname = 'adstream';
-- nothing more to do
ALTER EXTENSION adstream UPDATE;

-- Every source and result survives (0.5 adds dedup_expired_before to sources,
-- and source_id to ad_stats_minute: 0, counted before 0.5).
SELECT (SELECT count(*) FROM (TABLE before_sources EXCEPT
		SELECT id, name, kind, brokers, topic, start_policy, workers, group_id, kafka_options, enabled,
			   generation, created_at, updated_at FROM adstream.sources) d) AS sources_changed,
	   (SELECT count(*) FROM (TABLE before_offsets EXCEPT TABLE adstream.offsets) d) AS offsets_changed,
	   (SELECT count(*) FROM (TABLE before_minutes EXCEPT
		SELECT ad_id, campaign_id, window_start, impressions, clicks, updated_at
		  FROM adstream.ad_stats_minute WHERE source_id = 0) d) AS minutes_changed,
	   (SELECT count(*) FROM (TABLE before_credits EXCEPT TABLE adstream.attributed_orders) d) AS credits_changed,
	   -- (0.6 adds redrive_generation to rejected_events)
	   (SELECT count(*) FROM (TABLE before_rejected EXCEPT
		SELECT source, topic, partition, "offset", reason, detail, payload, payload_bytes, received_at
		  FROM adstream.rejected_events) d) AS dead_letters_changed,
	   (SELECT count(*) FROM (TABLE before_dedup_log EXCEPT SELECT source_id, hour, ids FROM adstream.dedup_log) d) AS dedup_log_changed;

-- 0.4 may have dropped dedup hours before its oldest remaining dedup_log
-- partition: each ad-events source starts 0.5 having given up at least that
-- much, so an event of such an hour is too_late, never counted again.
SELECT name, dedup_expired_before FROM adstream.sources WHERE kind = 'ad_events' ORDER BY name;
-- The upgraded data expires like new data: no worker runs, so up_src is held
-- at its slowest partition (11:00) less the horizon, which is behind what is
-- given up already; its ids of the 12:00 hour stay.
SELECT adstream.expire_dedup_state() AS dropped;
SELECT count(*) AS dedup_log_rows FROM adstream.dedup_log;

-------------------------------------------------------------------------------
-- The schema the chain leaves equals that of the full install script
-------------------------------------------------------------------------------

CREATE FUNCTION pg_temp.adstream_catalog()
RETURNS TABLE (kind text, object text, detail text)
LANGUAGE sql STABLE AS $$
	WITH ext AS (
		SELECT e.oid FROM pg_extension e WHERE e.extname = 'adstream'
	), rel AS (
		-- the relations of the schema; partitions only if the extension owns
		-- them (run-time partitions are data)
		SELECT c.* FROM pg_class c
		 WHERE c.relnamespace = 'adstream'::regnamespace
		   AND (NOT c.relispartition
				OR EXISTS (SELECT 1 FROM pg_depend d, ext
							WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
							  AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid))
	)
	-- the extension and its schema
	SELECT 'extension', e.extname::text,
		   concat_ws(' | ', e.extnamespace::regnamespace, e.extrelocatable, pg_get_userbyid(e.extowner))
	  FROM pg_extension e WHERE e.extname = 'adstream'
	UNION ALL
	SELECT 'schema', n.nspname::text,
		   concat_ws(' | ', pg_get_userbyid(n.nspowner), n.nspacl::text, obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n WHERE n.nspname = 'adstream'
	UNION ALL
	-- relations: kind, persistence, owner, storage parameters, ACL, partition
	-- key and bound, row security, replica identity, comment
	SELECT 'relation', c.relname::text,
		   concat_ws(' | ', c.relkind, c.relpersistence, pg_get_userbyid(c.relowner), c.reloptions::text,
					 c.relacl::text, pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid),
					 c.relrowsecurity, c.relforcerowsecurity, c.relreplident, obj_description(c.oid, 'pg_class'))
	  FROM rel c WHERE c.relkind NOT IN ('i', 'I')
	UNION ALL
	-- sequences: parameters, and the column that owns them (identity or serial)
	SELECT 'sequence', c.relname::text,
		   concat_ws(' | ', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
					 s.seqcache, s.seqcycle,
					 (SELECT string_agg(d.refobjid::regclass || '.' || a.attname || ' ' || d.deptype::text, ',')
						FROM pg_depend d
						JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
					   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
						 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	  FROM rel c JOIN pg_sequence s ON s.seqrelid = c.oid
	UNION ALL
	-- columns, in order: type, collation (if not the type's), nullability,
	-- default, identity, generation, storage, compression, statistics
	-- target, options, ACL, comment.  (The server this was written on stamps
	-- every new column with an option pg_attver=<counter>, which differs
	-- between any two creations: it is left out.)
	SELECT 'column', c.relname || '.' || a.attname,
		   concat_ws(' | ', a.attnum, format_type(a.atttypid, a.atttypmod),
					 CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
					 a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
					 a.attstorage, a.attcompression, a.attstattarget,
					 (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(a.attoptions) AS o
					   WHERE o NOT LIKE 'pg\_attver=%'),
					 a.attacl::text, col_description(c.oid, a.attnum))
	  FROM rel c
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  JOIN pg_type t ON t.oid = a.atttypid
	  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
	UNION ALL
	-- constraints of tables (check, not null, unique, primary and foreign
	-- keys, exclusion) and of domains
	SELECT 'constraint', c.relname || '.' || k.conname,
		   concat_ws(' | ', pg_get_constraintdef(k.oid), obj_description(k.oid, 'pg_constraint'))
	  FROM pg_constraint k JOIN rel c ON c.oid = k.conrelid
	UNION ALL
	SELECT 'constraint', k.contypid::regtype || '.' || k.conname,
		   concat_ws(' | ', pg_get_constraintdef(k.oid), obj_description(k.oid, 'pg_constraint'))
	  FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid
	 WHERE t.typnamespace = 'adstream'::regnamespace
	UNION ALL
	-- indexes (their storage parameters are part of the definition)
	SELECT 'index', i.relname::text,
		   concat_ws(' | ', pg_get_indexdef(i.oid), x.indisclustered, x.indisreplident,
					 obj_description(i.oid, 'pg_class'))
	  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN rel c ON c.oid = x.indrelid
	UNION ALL
	-- views
	SELECT 'view', c.relname::text, pg_get_viewdef(c.oid)
	  FROM rel c WHERE c.relkind IN ('v', 'm')
	UNION ALL
	-- types other than those of relations and arrays: domains, enums, ranges
	SELECT 'type', t.typname::text,
		   concat_ws(' | ', t.typtype, pg_get_userbyid(t.typowner), format_type(t.typbasetype, t.typtypmod),
					 t.typnotnull, t.typdefault,
					 (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
					 t.typacl::text, obj_description(t.oid, 'pg_type'))
	  FROM pg_type t
	 WHERE t.typnamespace = 'adstream'::regnamespace AND t.typtype <> 'c'
	   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
	UNION ALL
	-- functions: signature, attributes, owner, ACL, comment, and the whole
	-- definition; aggregates with their parts
	SELECT 'function', p.oid::regprocedure::text,
		   concat_ws(' | ', p.prokind, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
					 l.lanname, p.prosecdef, p.provolatile, p.proparallel, p.proisstrict,
					 p.proleakproof, p.proretset, p.procost, p.prorows, p.prosupport, p.proconfig::text,
					 pg_get_userbyid(p.proowner), p.proacl::text, obj_description(p.oid, 'pg_proc'))
	  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	 WHERE p.pronamespace = 'adstream'::regnamespace
	UNION ALL
	SELECT 'function body', p.oid::regprocedure::text, pg_get_functiondef(p.oid)
	  FROM pg_proc p WHERE p.pronamespace = 'adstream'::regnamespace AND p.prokind <> 'a'
	UNION ALL
	SELECT 'aggregate', a.aggfnoid::regprocedure::text,
		   concat_ws(' | ', a.aggkind, a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
					 a.aggdeserialfn, format_type(a.aggtranstype, NULL), a.agginitval, a.aggsortop::regoperator)
	  FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
	 WHERE p.pronamespace = 'adstream'::regnamespace
	UNION ALL
	-- triggers (and whether they fire), rules, policies, statistics objects
	SELECT 'trigger', c.relname || '.' || t.tgname,
		   concat_ws(' | ', pg_get_triggerdef(t.oid), t.tgenabled, obj_description(t.oid, 'pg_trigger'))
	  FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid
	 WHERE NOT t.tgisinternal
	UNION ALL
	SELECT 'rule', c.relname || '.' || r.rulename, concat_ws(' | ', pg_get_ruledef(r.oid), r.ev_enabled)
	  FROM pg_rewrite r JOIN rel c ON c.oid = r.ev_class
	 WHERE r.rulename <> '_RETURN'
	UNION ALL
	SELECT 'policy', c.relname || '.' || pl.polname,
		   concat_ws(' | ', pl.polcmd, pl.polpermissive,
					 (SELECT string_agg(x.role, ',' ORDER BY x.role)
						FROM (SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END AS role
								FROM unnest(pl.polroles) AS r) x),
					 pg_get_expr(pl.polqual, pl.polrelid), pg_get_expr(pl.polwithcheck, pl.polrelid))
	  FROM pg_policy pl JOIN rel c ON c.oid = pl.polrelid
	UNION ALL
	SELECT 'statistics', s.stxname::text, pg_get_statisticsobjdef(s.oid)
	  FROM pg_statistic_ext s JOIN rel c ON c.oid = s.stxrelid
	UNION ALL
	-- what belongs to the extension; the privileges pg_dump takes as the
	-- extension's own; default privileges in the schema or of its roles
	SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), NULL
	  FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND d.refobjid = ext.oid
	UNION ALL
	SELECT 'initial privileges', pg_describe_object(i.classoid, i.objoid, i.objsubid),
		   concat_ws(' | ', i.privtype, i.initprivs::text)
	  FROM pg_init_privs i
	 WHERE EXISTS (SELECT 1 FROM pg_depend d, ext
					WHERE d.classid = i.classoid AND d.objid = i.objoid AND d.deptype = 'e'
					  AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid)
	UNION ALL
	SELECT 'default privileges', concat_ws(' ', pg_get_userbyid(a.defaclrole), a.defaclobjtype), a.defaclacl::text
	  FROM pg_default_acl a
	 WHERE a.defaclnamespace = 'adstream'::regnamespace
		OR a.defaclrole IN (SELECT r.oid FROM pg_roles r WHERE r.rolname IN ('adstream_reader', 'adstream_admin'))
	UNION ALL
	-- which tables and sequences pg_dump saves, and which rows of them
	SELECT 'config table', x.rel::regclass::text, e.extcondition[x.n]
	  FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS x(rel, n)
	 WHERE e.extname = 'adstream'
	UNION ALL
	-- rows the install scripts put into tables
	SELECT 'partitioned_tables row', t.name, concat_ws(' | ', t.grain, t.fillfactor, t.storage_options::text)
	  FROM adstream.partitioned_tables t
	UNION ALL
	-- the extension's roles
	SELECT 'role', r.rolname::text,
		   concat_ws(' | ', r.rolcanlogin, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
					 r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil, r.rolconfig::text,
					 (SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN ' (admin)' ELSE '' END, ','
										ORDER BY g.rolname)
						FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid),
					 shobj_description(r.oid, 'pg_authid'))
	  FROM pg_roles r WHERE r.rolname IN ('adstream_reader', 'adstream_admin')
$$;

CREATE TEMP TABLE upgraded_catalog AS SELECT * FROM pg_temp.adstream_catalog();

-- The fresh install, from nothing again.  It runs adstream--0.6.sql alone:
-- PostgreSQL prefers the install script of the target version to any chain,
-- and the script is installed.
DROP EXTENSION adstream;
DROP ROLE adstream_admin, adstream_reader;
SELECT (pg_stat_file(setting || '/extension/adstream--0.6.sql')).size > 0 AS full_script_installed
  FROM pg_config WHERE name = 'SHAREDIR';
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
