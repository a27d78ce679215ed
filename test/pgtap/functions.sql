-- pgTAP: adstream's functions: signatures, languages, SECURITY DEFINER and
-- search_path, volatility, comments, and the behaviour of the API and the
-- partition maintenance functions.  Everything runs in one transaction that
-- is rolled back, so the launcher never sees the sources created here.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(346);

-------------------------------------------------------------------------------
-- Inventory and signatures
-------------------------------------------------------------------------------

SELECT functions_are('adstream', ARRAY[
	'_new_generation', '_wake_launcher', '_kafka_property_error', '_is_secret', '_is_privileged_property', '_source_must_exist',
	'worker_status', 'partition_status', 'validate_event', 'ensure_partitions', 'source_watermark',
	'expire_dedup_state', 'create_source', 'drop_source', 'pause_source', 'resume_source',
	-- 0.2
	'_source_kinds', '_partition_upper', '_drop_partitions_before', 'ad_events_watermark', 'validate_order',
	'record_uuid', 'attribute_orders', 'bucket', 'refresh_rollups', 'ad_stats', 'campaign_stats',
	'create_partitions_ahead', 'drop_expired_partitions', 'schedule_maintenance', 'unschedule_maintenance',
	-- 0.3
	'_publishing', '_queue_attributed_orders', '_record_key', '_ad_stats_record', '_outbox_page', '_sink_backlog', '_sink_advance', '_sink_aborted',
	'_sink_must_exist', 'prune_outbox', 'create_sink', 'drop_sink', 'pause_sink', 'resume_sink', 'publisher_status',
	-- 0.4
	'_dedup_forget', 'dedup_index_status', 'expire_rejected_events', '_lock',
	-- 0.5: dump and restore; one source of a kind per topic of a cluster (issue #11, case 6)
	'_origin', 'adopt_restored', '_broker_set',
	-- 0.5: automatic maintenance (issue #15)
	'_maintenance_jobs', '_maintenance_open', '_cron_ready', 'run_maintenance', '_maintenance_failed',
	'_maintenance_plan', '_maintenance_status', '_maintenance_warning',
	-- 0.6: alter and rename, the client built to check a configuration (issue #14)
	'_check_name', '_kafka_error_hint', '_kafka_check', '_kafka_config_check', '_check_source', '_check_sink',
	'alter_source', 'rename_source', 'alter_sink', 'rename_sink',
	-- 0.6: status history, lag and metrics (issue #14)
	'partition_lag', 'expire_status_history', '_metric_counters', '_metrics', 'reset_metrics',
	-- 0.6: input formats and re-driving dead letters (issue #14)
	'_input_format_keys', '_check_field_mapping', '_input_format', 'redrive_dead_letters', '_validate_event_with',
	-- 0.6: failover (the node's identity in the database, versions across timelines)
	'_node_name_setting', '_timeline', 'node_name', '_ensure_node', '_version_base', '_publisher_identity',
	'set_node_name', '_parse_partitions',
	-- 0.6: the retention job asks whether expiry has work first (issue #12)
	'_dedup_expiry_due', '_dedup_expiry_marks',
	-- 0.6: rewinding a source (issue #14)
	'rewind_source', '_kafka_offsets_for_times', '_dedup_forget_hours',
	-- 0.6: moving partitions between nodes (issue #13, part 3)
	'_dedup_import', 'export_partitions', 'handoff_data', '_handoff_apply', 'import_partitions',
	'confirm_handoff', 'cancel_handoff', '_metrics_shift',
	-- 0.6: the orders worker stores orders and judges those the watermark has passed (issue #12)
	'_store_orders', '_last_touch', '_credit_orders',
	-- 0.6: a pass at the watermark the orders worker read
	'_attribute_orders'],
	'adstream has exactly the expected functions');

SELECT has_function('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb']);
SELECT has_function('adstream', 'drop_source', ARRAY['text', 'boolean']);
SELECT has_function('adstream', 'pause_source', ARRAY['text']);
SELECT has_function('adstream', 'resume_source', ARRAY['text']);
SELECT has_function('adstream', 'validate_event', ARRAY['bytea']);
SELECT has_function('adstream', 'validate_event', ARRAY['text']);
SELECT has_function('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]']);
SELECT has_function('adstream', 'expire_dedup_state', ARRAY[]::name[]);
SELECT has_function('adstream', 'source_watermark', ARRAY['text']);
SELECT has_function('adstream', 'worker_status', ARRAY[]::name[]);
SELECT has_function('adstream', 'partition_status', ARRAY[]::name[]);

SELECT function_returns('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'integer');
SELECT function_returns('adstream', 'drop_source', ARRAY['text', 'boolean'], 'void');
SELECT function_returns('adstream', 'pause_source', ARRAY['text'], 'void');
SELECT function_returns('adstream', 'resume_source', ARRAY['text'], 'void');
SELECT function_returns('adstream', 'validate_event', ARRAY['bytea'], 'record');
SELECT function_returns('adstream', 'validate_event', ARRAY['text'], 'record');
SELECT function_returns('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]'], 'integer');
SELECT function_returns('adstream', 'expire_dedup_state', ARRAY[]::name[], 'integer');
SELECT function_returns('adstream', 'source_watermark', ARRAY['text'], 'timestamp with time zone');
SELECT function_returns('adstream', 'worker_status', ARRAY[]::name[], 'setof record');
SELECT function_returns('adstream', 'partition_status', ARRAY[]::name[], 'setof record');

-- 0.2
SELECT has_function('adstream', f, args, format('function adstream.%s(%s) exists', f, array_to_string(args, ', ')))
  FROM (VALUES
	('validate_order', ARRAY['bytea']::name[]),
	('validate_order', ARRAY['text']::name[]),
	('ad_events_watermark', ARRAY[]::name[]),
	('record_uuid', ARRAY['text', 'text']::name[]),
	('attribute_orders', ARRAY['integer']::name[]),
	('bucket', ARRAY['text', 'timestamp with time zone']::name[]),
	('refresh_rollups', ARRAY[]::name[]),
	('ad_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[]),
	('campaign_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[]),
	('create_partitions_ahead', ARRAY['interval']::name[]),
	('drop_expired_partitions', ARRAY[]::name[]),
	('schedule_maintenance', ARRAY[]::name[]),
	('unschedule_maintenance', ARRAY[]::name[]),
	('_source_kinds', ARRAY[]::name[]),
	('_partition_upper', ARRAY['regclass']::name[]),
	('_drop_partitions_before', ARRAY['text', 'timestamp with time zone']::name[]),
	-- 0.6: the orders worker's insert, judging what the watermark has passed
	('_store_orders', ARRAY['text', 'uuid[]', 'bigint[]', 'bigint[]', 'text[]', 'text[]', 'timestamp with time zone[]', 'integer[]']::name[]),
	-- 0.6: the attribution rule, in one place
	('_last_touch', ARRAY['bigint', 'bigint', 'timestamp with time zone', 'interval', 'interval']::name[]),
	-- 0.6: the one place a judged order is credited
	('_credit_orders', ARRAY['adstream.orders[]']::name[]),
	-- 0.6: attribute_orders() at a given watermark
	('_attribute_orders', ARRAY['integer', 'timestamp with time zone']::name[])
  ) AS v(f, args);
SELECT function_returns('adstream', f, args, r)
  FROM (VALUES
	('validate_order', ARRAY['bytea']::name[], 'record'),
	('validate_order', ARRAY['text']::name[], 'record'),
	('ad_events_watermark', ARRAY[]::name[], 'timestamp with time zone'),
	('record_uuid', ARRAY['text', 'text']::name[], 'uuid'),
	('attribute_orders', ARRAY['integer']::name[], 'integer'),
	('bucket', ARRAY['text', 'timestamp with time zone']::name[], 'timestamp with time zone'),
	('refresh_rollups', ARRAY[]::name[], 'integer'),
	('ad_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'setof record'),
	('campaign_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'setof record'),
	('create_partitions_ahead', ARRAY['interval']::name[], 'integer'),
	('drop_expired_partitions', ARRAY[]::name[], 'integer'),
	('schedule_maintenance', ARRAY[]::name[], 'setof bigint'),
	('unschedule_maintenance', ARRAY[]::name[], 'integer'),
	('_source_kinds', ARRAY[]::name[], 'text[]'),
	('_partition_upper', ARRAY['regclass']::name[], 'timestamp with time zone'),
	('_drop_partitions_before', ARRAY['text', 'timestamp with time zone']::name[], 'integer'),
	('_store_orders', ARRAY['text', 'uuid[]', 'bigint[]', 'bigint[]', 'text[]', 'text[]', 'timestamp with time zone[]', 'integer[]']::name[], 'setof uuid'),
	('_last_touch', ARRAY['bigint', 'bigint', 'timestamp with time zone', 'interval', 'interval']::name[], 'setof record'),
	('_credit_orders', ARRAY['orders[]']::name[], 'integer'),
	('_attribute_orders', ARRAY['integer', 'timestamp with time zone']::name[], 'integer')
  ) AS v(f, args, r);

-- 0.3
SELECT function_returns('adstream', f, args, r)
  FROM (VALUES
	('create_sink', ARRAY['text', 'text', 'jsonb']::name[], 'integer'),
	('drop_sink', ARRAY['text']::name[], 'void'),
	('pause_sink', ARRAY['text']::name[], 'void'),
	('resume_sink', ARRAY['text']::name[], 'void'),
	('publisher_status', ARRAY[]::name[], 'setof record'),
	('prune_outbox', ARRAY[]::name[], 'bigint'),
	('_publishing', ARRAY[]::name[], 'boolean'),
	('_queue_attributed_orders', ARRAY[]::name[], 'trigger'),
	('_record_key', ARRAY['text', 'bigint', 'timestamp with time zone', 'uuid']::name[], 'text'),
	('_ad_stats_record', ARRAY['text', 'text', 'bigint', 'timestamp with time zone', 'bigint', 'bigint', 'bigint', 'bigint', 'timestamp with time zone']::name[], 'text'),
	('_sink_backlog', ARRAY['integer']::name[], 'record'),
	('_outbox_page', ARRAY['text', 'integer']::name[], 'setof record'),
	('_sink_advance', ARRAY['text', 'bigint', 'bigint', 'integer', 'boolean']::name[], 'boolean'),
	('_sink_aborted', ARRAY['text']::name[], 'void'),
	('_sink_must_exist', ARRAY['text']::name[], 'void')
  ) AS v(f, args, r);

-- 0.4
SELECT function_returns('adstream', f, args, r)
  FROM (VALUES
	('_dedup_forget', ARRAY['integer[]', 'timestamp with time zone[]']::name[], 'bigint'),
	('dedup_index_status', ARRAY[]::name[], 'record'),
	('expire_rejected_events', ARRAY['integer']::name[], 'bigint'),
	('_lock', ARRAY['text', 'integer', 'boolean']::name[], 'void')
  ) AS v(f, args, r);

-- 0.6: changing and renaming sources and sinks (issue #14)
SELECT function_returns('adstream', f, args, r)
  FROM (VALUES
	('alter_source', ARRAY['text', 'jsonb']::name[], 'boolean'),
	('rename_source', ARRAY['text', 'text']::name[], 'void'),
	('alter_sink', ARRAY['text', 'jsonb']::name[], 'boolean'),
	('rename_sink', ARRAY['text', 'text']::name[], 'void')
  ) AS v(f, args, r);
SELECT is(pg_get_function_arguments('adstream.alter_source(text,jsonb)'::regprocedure),
	'name text, options jsonb', 'alter_source(name, options)');
SELECT is(pg_get_function_arguments('adstream.rename_sink(text,text)'::regprocedure),
	'name text, new_name text', 'rename_sink(name, new_name)');

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
	'OUT last_error text, OUT last_error_at timestamp with time zone, OUT restarts integer, '
	-- 0.6 (issue #14)
	'OUT connected boolean, OUT connected_since timestamp with time zone, OUT errors_total bigint, '
	'OUT topic_partitions integer, OUT positions_at timestamp with time zone',
	'worker_status() OUT columns');
SELECT is(pg_get_function_arguments('adstream.partition_status()'::regprocedure),
	'OUT source_id integer, OUT partition integer, OUT pid integer, OUT high_watermark bigint, OUT read_position bigint',
	'partition_status() OUT columns');
SELECT is(pg_get_function_arguments('adstream.ensure_partitions(text,timestamptz[])'::regprocedure),
	'p_table text, p_times timestamp with time zone[]', 'ensure_partitions(p_table, p_times)');
SELECT is(pg_get_function_arguments('adstream.validate_order(bytea)'::regprocedure),
	'payload bytea, OUT reason text, OUT detail text, OUT order_id uuid, OUT user_id bigint, '
	'OUT store_id bigint, OUT amount numeric, OUT currency text, OUT ts timestamp with time zone',
	'validate_order(bytea) OUT columns');
SELECT is(pg_get_function_arguments('adstream.validate_order(text)'::regprocedure),
	'payload text, OUT reason text, OUT detail text, OUT order_id uuid, OUT user_id bigint, '
	'OUT store_id bigint, OUT amount numeric, OUT currency text, OUT ts timestamp with time zone',
	'validate_order(text) OUT columns');
SELECT is(pg_get_function_arguments('adstream.ad_stats(timestamptz,timestamptz,text)'::regprocedure),
	'p_from timestamp with time zone, p_to timestamp with time zone, p_granularity text DEFAULT ''hour''::text',
	'ad_stats(p_from, p_to, p_granularity => ''hour'')');
SELECT is(pg_get_function_result('adstream.ad_stats(timestamptz,timestamptz,text)'::regprocedure),
	'TABLE(ad_id bigint, campaign_id bigint, window_start timestamp with time zone, impressions bigint, clicks bigint)',
	'ad_stats result columns');
SELECT is(pg_get_function_arguments('adstream.campaign_stats(timestamptz,timestamptz,text)'::regprocedure),
	'p_from timestamp with time zone, p_to timestamp with time zone, p_granularity text DEFAULT ''hour''::text',
	'campaign_stats(p_from, p_to, p_granularity => ''hour'')');
SELECT is(pg_get_function_result('adstream.campaign_stats(timestamptz,timestamptz,text)'::regprocedure),
	'TABLE(campaign_id bigint, window_start timestamp with time zone, ads bigint, impressions bigint, clicks bigint)',
	'campaign_stats result columns');
SELECT is(pg_get_function_arguments('adstream.attribute_orders(integer)'::regprocedure),
	'p_limit integer DEFAULT 5000', 'attribute_orders(p_limit => 5000)');
SELECT is(pg_get_function_arguments('adstream.create_partitions_ahead(interval)'::regprocedure),
	'p_ahead interval DEFAULT ''1 day''::interval', 'create_partitions_ahead(p_ahead => ''1 day'')');
SELECT is(pg_get_function_arguments('adstream.bucket(text,timestamptz)'::regprocedure),
	'p_granularity text, p_ts timestamp with time zone', 'bucket(p_granularity, p_ts)');
SELECT is(pg_get_function_arguments('adstream.record_uuid(text,text)'::regprocedure),
	'p_kind text, p_key text', 'record_uuid(p_kind, p_key)');
-- 0.3
SELECT is(pg_get_function_arguments('adstream.create_sink(text,text,jsonb)'::regprocedure),
	'name text, brokers text, options jsonb DEFAULT ''{}''::jsonb', 'create_sink(name, brokers, options => ''{}'')');
SELECT is(pg_get_function_arguments('adstream.publisher_status()'::regprocedure),
	'OUT sink_id integer, OUT pid integer, OUT state text, OUT started_at timestamp with time zone, '
	'OUT last_commit_at timestamp with time zone, OUT last_error text, OUT last_error_at timestamp with time zone, '
	'OUT restarts integer, '
	-- 0.6 (issue #14)
	'OUT connected boolean, OUT connected_since timestamp with time zone, OUT errors_total bigint',
	'publisher_status() OUT columns');
SELECT is(pg_get_function_result('adstream._outbox_page(text,integer)'::regprocedure),
	'TABLE(id bigint, topic text, record_key text, value text)', '_outbox_page result columns');
SELECT is(pg_get_function_arguments('adstream._sink_advance(text,bigint,bigint,integer,boolean)'::regprocedure),
	'p_sink text, p_from bigint, p_last_id bigint, p_records integer, p_window_done boolean',
	'_sink_advance(p_sink, p_from, p_last_id, p_records, p_window_done)');

-------------------------------------------------------------------------------
-- Language, SECURITY DEFINER, configuration, volatility
-------------------------------------------------------------------------------

SELECT function_lang_is('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'plpgsql');
SELECT function_lang_is('adstream', 'drop_source', ARRAY['text', 'boolean'], 'plpgsql');
SELECT function_lang_is('adstream', 'pause_source', ARRAY['text'], 'plpgsql');
SELECT function_lang_is('adstream', 'resume_source', ARRAY['text'], 'plpgsql');
SELECT function_lang_is('adstream', 'validate_event', ARRAY['bytea'], 'c');
SELECT function_lang_is('adstream', 'validate_event', ARRAY['text'], 'sql');
SELECT function_lang_is('adstream', 'ensure_partitions', ARRAY['text', 'timestamp with time zone[]'], 'plpgsql');
SELECT function_lang_is('adstream', 'expire_dedup_state', ARRAY[]::name[], 'plpgsql');
SELECT function_lang_is('adstream', 'worker_status', ARRAY[]::name[], 'c');
SELECT function_lang_is('adstream', 'partition_status', ARRAY[]::name[], 'c');
SELECT function_lang_is('adstream', f, args, l)
  FROM (VALUES
	('validate_order', ARRAY['bytea']::name[], 'c'),
	('validate_order', ARRAY['text']::name[], 'sql'),
	('ad_events_watermark', ARRAY[]::name[], 'sql'),
	('record_uuid', ARRAY['text', 'text']::name[], 'c'),		-- 0.6: in C, the same UUID
	('_store_orders', ARRAY['text', 'uuid[]', 'bigint[]', 'bigint[]', 'text[]', 'text[]', 'timestamp with time zone[]', 'integer[]']::name[], 'plpgsql'),
	('_last_touch', ARRAY['bigint', 'bigint', 'timestamp with time zone', 'interval', 'interval']::name[], 'sql'),
	('_credit_orders', ARRAY['orders[]']::name[], 'sql'),
	('bucket', ARRAY['text', 'timestamp with time zone']::name[], 'sql'),
	('campaign_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'sql'),
	('ad_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'plpgsql'),
	('attribute_orders', ARRAY['integer']::name[], 'sql'),	-- 0.6: _attribute_orders at the watermark
	('_attribute_orders', ARRAY['integer', 'timestamp with time zone']::name[], 'plpgsql'),
	('refresh_rollups', ARRAY[]::name[], 'plpgsql'),
	('create_partitions_ahead', ARRAY['interval']::name[], 'plpgsql'),
	('drop_expired_partitions', ARRAY[]::name[], 'plpgsql'),
	('schedule_maintenance', ARRAY[]::name[], 'plpgsql'),
	('unschedule_maintenance', ARRAY[]::name[], 'plpgsql'),
	-- 0.3
	('create_sink', ARRAY['text', 'text', 'jsonb']::name[], 'plpgsql'),
	('drop_sink', ARRAY['text']::name[], 'plpgsql'),
	('pause_sink', ARRAY['text']::name[], 'plpgsql'),
	('resume_sink', ARRAY['text']::name[], 'plpgsql'),
	('publisher_status', ARRAY[]::name[], 'c'),
	('prune_outbox', ARRAY[]::name[], 'plpgsql'),
	('_publishing', ARRAY[]::name[], 'plpgsql'),
	('_queue_attributed_orders', ARRAY[]::name[], 'plpgsql'),
	('_record_key', ARRAY['text', 'bigint', 'timestamp with time zone', 'uuid']::name[], 'sql'),
	('_ad_stats_record', ARRAY['text', 'text', 'bigint', 'timestamp with time zone', 'bigint', 'bigint', 'bigint', 'bigint', 'timestamp with time zone']::name[], 'c'),
	('_sink_backlog', ARRAY['integer']::name[], 'plpgsql'),
	('_outbox_page', ARRAY['text', 'integer']::name[], 'plpgsql')
  ) AS v(f, args, l);

-- The management API runs as the extension owner ...
SELECT is_definer('adstream', 'create_source', ARRAY['text', 'text', 'text', 'text', 'jsonb']);
SELECT is_definer('adstream', 'drop_source', ARRAY['text', 'boolean']);
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
-- 0.2: the two readers of tables their callers may not read are definers
-- (offsets and sources; rollup_pending) ...
SELECT is_definer('adstream', 'ad_events_watermark', ARRAY[]::name[]);
SELECT is_definer('adstream', 'ad_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']);
-- 0.3: the sink management API runs as the extension owner too (sinks and
-- the outbox are for superusers only); what the publisher runs does not
SELECT is_definer('adstream', f, args)
  FROM (VALUES ('create_sink', ARRAY['text', 'text', 'jsonb']::name[]), ('drop_sink', ARRAY['text']::name[]),
			   ('pause_sink', ARRAY['text']::name[]), ('resume_sink', ARRAY['text']::name[])) AS v(f, args);
-- sink_status's backlog: readers may not read the outbox
SELECT is_definer('adstream', '_sink_backlog', ARRAY['integer']::name[]);
SELECT isnt_definer('adstream', f, args)
  FROM (VALUES ('_outbox_page', ARRAY['text', 'integer']::name[]),
			   ('_sink_advance', ARRAY['text', 'bigint', 'bigint', 'integer', 'boolean']::name[]),
			   ('_sink_aborted', ARRAY['text']::name[]), ('prune_outbox', ARRAY[]::name[]),
			   ('_publishing', ARRAY[]::name[]), ('publisher_status', ARRAY[]::name[])) AS v(f, args);
-- ... the rest runs with the caller's rights
SELECT set_eq(
	$$SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p
	   WHERE p.pronamespace = 'adstream'::regnamespace AND p.prosecdef$$,
	ARRAY['create_source(name text, brokers text, topic text, kind text, options jsonb)', 'drop_source(name text, forget_counts boolean)',
		  'pause_source(name text)', 'resume_source(name text)', 'source_watermark(p_source text)',
		  'ad_events_watermark()',
		  'ad_stats(p_from timestamp with time zone, p_to timestamp with time zone, p_granularity text)',
		  'create_sink(name text, brokers text, options jsonb)', 'drop_sink(name text)',
		  'pause_sink(name text)', 'resume_sink(name text)', 'adopt_restored(name text)',
		  -- 0.6 (issue #14)
		  'alter_source(name text, options jsonb)', 'rename_source(name text, new_name text)',
		  'alter_sink(name text, options jsonb)', 'rename_sink(name text, new_name text)',
		  -- 0.5: they read cron.job, which shows a role only its own jobs
		  '_maintenance_status(OUT job text, OUT runs_by text, OUT every interval, '
		  'OUT last_start timestamp with time zone, OUT last_duration interval, OUT last_result text, '
		  'OUT last_error text, OUT last_error_at timestamp with time zone, OUT next_due timestamp with time zone, '
		  'OUT overdue boolean, OUT note text)',
		  '_maintenance_warning(OUT warning text, OUT hint text)',
		  -- 0.6: the metrics read offsets and counters the reader cannot
		  '_metrics(OUT metric text, OUT kind text, OUT name text, OUT value double precision, '
		  'OUT stats_reset timestamp with time zone)',
		  'reset_metrics(name text)',
		  -- 0.6: marks dead letters, which an adstream_admin cannot update
		  'redrive_dead_letters(source text, reasons text[], received_after timestamp with time zone, '
		  'received_before timestamp with time zone, OUT requested bigint, OUT truncated bigint)',
		  -- 0.6: naming the node is management (failover)
		  'set_node_name(name text)',
		  -- 0.6: a rewind reads the source's credentials and writes offsets (issue #14)
		  'rewind_source(name text, to_time timestamp with time zone, to_offsets jsonb, partitions integer[], '
		  'mode text, window_end timestamp with time zone, lookback interval)',
		  -- 0.6: moving partitions between nodes (superusers only, issue #13, part 3)
		  'export_partitions(partitions text, sources text[])',
		  'handoff_data(id bigint)',
		  'import_partitions(from_node text, handoff_id bigint, options jsonb)',
		  'confirm_handoff(handoff_id bigint)', 'cancel_handoff(handoff_id bigint)',
		  -- 0.6: sink_status's backlog reads the outbox, which the reader cannot
		  '_sink_backlog(p_sink integer, OUT rows bigint, OUT bytes bigint)'],
	'exactly these functions are SECURITY DEFINER');

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
SELECT ok('lock_timeout=2s' = ANY (proconfig), 'drop_expired_partitions never waits long for its locks')
  FROM pg_proc WHERE oid = 'adstream.drop_expired_partitions()'::regprocedure;

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
-- 0.2
SELECT volatility_is('adstream', f, args, v)
  FROM (VALUES
	('validate_order', ARRAY['bytea']::name[], 'stable'),
	('validate_order', ARRAY['text']::name[], 'stable'),
	('ad_events_watermark', ARRAY[]::name[], 'stable'),
	('record_uuid', ARRAY['text', 'text']::name[], 'immutable'),
	('_last_touch', ARRAY['bigint', 'bigint', 'timestamp with time zone', 'interval', 'interval']::name[], 'stable'),
	('bucket', ARRAY['text', 'timestamp with time zone']::name[], 'immutable'),
	('ad_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'stable'),
	('campaign_stats', ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'stable'),
	('_partition_upper', ARRAY['regclass']::name[], 'stable'),
	('_source_kinds', ARRAY[]::name[], 'immutable'),
	('attribute_orders', ARRAY['integer']::name[], 'volatile'),
	('_attribute_orders', ARRAY['integer', 'timestamp with time zone']::name[], 'volatile'),
	('_credit_orders', ARRAY['orders[]']::name[], 'volatile'),
	('refresh_rollups', ARRAY[]::name[], 'volatile'),
	('create_partitions_ahead', ARRAY['interval']::name[], 'volatile'),
	('drop_expired_partitions', ARRAY[]::name[], 'volatile'),
	('schedule_maintenance', ARRAY[]::name[], 'volatile'),
	('unschedule_maintenance', ARRAY[]::name[], 'volatile'),
	('_drop_partitions_before', ARRAY['text', 'timestamp with time zone']::name[], 'volatile'),
	-- 0.3
	('_record_key', ARRAY['text', 'bigint', 'timestamp with time zone', 'uuid']::name[], 'stable'),
	('_ad_stats_record', ARRAY['text', 'text', 'bigint', 'timestamp with time zone', 'bigint', 'bigint', 'bigint', 'bigint', 'timestamp with time zone']::name[], 'immutable'),
	('_sink_backlog', ARRAY['integer']::name[], 'stable'),
	('_outbox_page', ARRAY['text', 'integer']::name[], 'volatile'),
	('_publishing', ARRAY[]::name[], 'volatile'),
	('publisher_status', ARRAY[]::name[], 'volatile'),
	('prune_outbox', ARRAY[]::name[], 'volatile'),
	('create_sink', ARRAY['text', 'text', 'jsonb']::name[], 'volatile')
  ) AS v(f, args, v);
SELECT ok(proisstrict, format('%s is STRICT', oid::regprocedure))
  FROM pg_proc WHERE oid IN ('adstream.validate_order(bytea)'::regprocedure, 'adstream.validate_order(text)'::regprocedure,
						   'adstream.record_uuid(text,text)'::regprocedure);
SELECT is(proparallel, 's', format('%s is PARALLEL SAFE', oid::regprocedure))
  FROM pg_proc
 WHERE oid IN ('adstream.validate_order(bytea)'::regprocedure, 'adstream.validate_order(text)'::regprocedure,
			   'adstream.record_uuid(text,text)'::regprocedure, 'adstream.bucket(text,timestamptz)'::regprocedure)
 ORDER BY oid::regprocedure::text;

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

-- validate_order
SELECT results_eq(
	$$SELECT reason, order_id, user_id, store_id, amount, currency, ts FROM adstream.validate_order(
		'{"order_id":"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55","user_id":99812,"store_id":5,'
		'"amount":"42.50","currency":"EUR","ts":"2024-03-01T10:00:00Z"}')$$,
	$$VALUES ('ok'::text, '9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55'::uuid, 99812::bigint, 5::bigint, 42.50::numeric,
			  'EUR'::text, timestamptz '2024-03-01 10:00:00+00')$$,
	'validate_order parses a valid order');
SELECT is((SELECT reason FROM adstream.validate_order('{}')), 'missing_field', 'validate_order: {} lacks order_id');
SELECT is((SELECT reason FROM adstream.validate_order(
		'{"order_id":"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55","user_id":1,"store_id":5,"amount":"-1","currency":"EUR","ts":0}')),
	'invalid_amount', 'validate_order: a negative amount');
SELECT is((SELECT reason FROM adstream.validate_order(
		'{"order_id":"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55","user_id":1,"store_id":5,"amount":1,"currency":"eur","ts":0}')),
	'invalid_currency', 'validate_order: a lower-case currency');

-- orders sources
SELECT lives_ok($$SELECT adstream.create_source('tap_shop', 'k:9092', 'tap_orders', 'orders')$$,
	'create_source of kind orders');
SELECT is((SELECT kind FROM adstream.source_config WHERE name = 'tap_shop'), 'orders', 'the orders source is listed');
SELECT throws_ok($$SELECT adstream.create_source('tap_x', 'k:9092', 't', 'clicks')$$,
	'22023', 'unsupported source kind ''clicks''', 'an unknown kind is invalid_parameter_value');
SELECT is(adstream._source_kinds(), ARRAY['ad_events', 'orders'], '0.2 consumes ad events and orders');

-------------------------------------------------------------------------------
-- Sinks (0.3).  This transaction has written, so create_sink refuses it
-- after checking its arguments; a sink is inserted directly instead.  The
-- publishing windows are covered by the publish regression test.
-------------------------------------------------------------------------------

SELECT is(adstream._publishing(), false, '_publishing: nothing is queued without a sink');
SELECT throws_ok($$SELECT adstream.create_sink('tap_sink', 'k:9092')$$,
	'25001', 'create_sink must run in a transaction that has not written anything yet',
	'create_sink refuses a transaction that has written');
SELECT throws_ok($$SELECT adstream.create_sink('bad name', 'k:9092')$$,
	'22023', NULL, 'a bad sink name is invalid_parameter_value');
SELECT throws_ok($$SELECT adstream.create_sink('s', ' ')$$,
	'22023', 'brokers must not be empty', 'empty brokers are invalid_parameter_value');
SELECT throws_ok($$SELECT adstream.create_sink('s', 'k:9092', '[]')$$,
	'22023', 'options must be a JSON object', 'options must be an object');
SELECT throws_ok($$SELECT adstream.create_sink('s', 'k:9092', '{"transactional.id": "x"}')$$,
	'22023', 'librdkafka property "transactional.id" is managed by adstream', 'transactional.id is managed');
SELECT throws_ok($$SELECT adstream.create_sink('s', 'k:9092', '{"no.such.property": "1"}')$$,
	'22023', 'invalid librdkafka property "no.such.property"', 'an unknown librdkafka property is refused');
SELECT throws_ok($$SELECT adstream.create_sink('s', 'k:9092', '{"topic_orders": "a/b"}')$$,
	'22023', NULL, 'a bad topic name is refused');
SELECT throws_ok($$SELECT adstream.pause_sink('tap_nosuch')$$, '42704', 'sink "tap_nosuch" does not exist',
	'pausing a missing sink is undefined_object');
SELECT throws_ok($$SELECT adstream.resume_sink('tap_nosuch')$$, '42704', NULL, 'resuming a missing sink is undefined_object');
SELECT throws_ok($$SELECT adstream.drop_sink('tap_nosuch')$$, '42704', NULL, 'dropping a missing sink is undefined_object');
SELECT throws_ok($$SELECT * FROM adstream._outbox_page('tap_nosuch', 1)$$, '42704', NULL,
	'a missing sink has no page');

-- (a sink of this installation: one of another origin would be held)
INSERT INTO adstream.sinks (name, brokers, done_snapshot, origin)
VALUES ('tap_sink', 'k:9092', pg_current_snapshot(), adstream._origin());
SELECT is(adstream._publishing(), true, '_publishing: results are queued while a sink exists');
SELECT throws_ok($$SELECT adstream.create_sink('tap_sink', 'k:9092')$$,
	'42710', 'sink "tap_sink" already exists', 'a duplicate sink is duplicate_object');
SELECT results_eq(
	$$SELECT sink, sink_state, worker_state, cursor_last_id, records_published FROM adstream.sink_status$$,
	$$VALUES ('tap_sink'::text, 'enabled'::text, 'starting'::text, 0::bigint, 0::bigint)$$,
	'sink_status shows the sink, with no worker in this transaction');
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, record_uuid)
VALUES ('d0000000-0000-4000-8000-000000000001', 1, 1, 'e0000000-0000-4000-8000-000000000001', now(), now(), 1, 'EUR',
		adstream.record_uuid('attributed_orders', 'd0000000-0000-4000-8000-000000000001'));
SELECT results_eq(
	$$SELECT kind, order_id, txid = pg_current_xact_id() FROM adstream.outbox$$,
	$$VALUES ('attributed_orders'::text, 'd0000000-0000-4000-8000-000000000001'::uuid, true)$$,
	'a credited order is queued by the trigger, in the crediting transaction');
SELECT is(adstream._record_key('attributed_orders', NULL, NULL, 'd0000000-0000-4000-8000-000000000001'),
	'd0000000-0000-4000-8000-000000000001', 'the key of a credited order is its id');
SELECT is(adstream._record_key('ad_stats', 42, '2024-03-01 10:00:00+00', NULL),
	current_setting('adstream.node_name') || '|42|1709287200000',
	'the key of a minute is node|ad_id|window start in epoch milliseconds');
SELECT lives_ok($$SELECT adstream.pause_sink('tap_sink')$$, 'pause_sink');
SELECT is((SELECT sink_state || '/' || worker_state FROM adstream.sink_status), 'paused/stopped',
	'a paused sink is shown as paused');
SELECT lives_ok($$SELECT adstream.resume_sink('tap_sink')$$, 'resume_sink');
SELECT is((SELECT enabled FROM adstream.sinks WHERE name = 'tap_sink'), true, 'a resumed sink is enabled');
SELECT is(adstream.prune_outbox(), 0::bigint, 'prune_outbox keeps what the sink has not passed');
SELECT lives_ok($$SELECT adstream.drop_sink('tap_sink')$$, 'drop_sink');
SELECT is((SELECT count(*)::int FROM adstream.sinks), 0, 'the sink is gone');
SELECT is((SELECT count(*)::int FROM adstream.outbox), 1,
	'the outbox row of this running transaction is not pruned');
DELETE FROM adstream.outbox;
DELETE FROM adstream.attributed_orders WHERE order_id = 'd0000000-0000-4000-8000-000000000001';

-- record_uuid and bucket
SELECT matches(adstream.record_uuid('attributed_orders', 'k')::text, '^[0-9a-f]{8}-[0-9a-f]{4}-3[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$',
	'record_uuid is a name-based (version 3) UUID');
SELECT isnt(adstream.record_uuid('attributed_orders', 'k'), adstream.record_uuid('other', 'k'),
	'record_uuid depends on the kind');
SELECT results_eq(
	$$SELECT adstream.bucket(g, '2024-03-01 17:42:13+00') FROM unnest(ARRAY['minute', 'hour', '6h', 'day']) AS g$$,
	$$VALUES (timestamptz '2024-03-01 17:42:00+00'), ('2024-03-01 17:00:00+00'), ('2024-03-01 12:00:00+00'),
			 ('2024-03-01 00:00:00+00')$$,
	'bucket: minute, hour, 6-hour block from 00:00 UTC, day');
SELECT throws_ok($$SELECT * FROM adstream.ad_stats(now(), now(), 'week')$$,
	'22023', 'invalid granularity ''week''', 'ad_stats refuses other granularities');
SELECT throws_ok($$SELECT * FROM adstream.campaign_stats(now(), now(), NULL)$$,
	'22023', 'invalid granularity NULL', 'campaign_stats refuses a NULL granularity');

-- schedule_maintenance needs pg_cron, unschedule_maintenance does not
SELECT throws_ok($$SELECT adstream.schedule_maintenance()$$,
	'42704', 'pg_cron is not installed in this database',
	'schedule_maintenance without pg_cron is undefined_object');
SELECT is(adstream.unschedule_maintenance(), 0, 'unschedule_maintenance without pg_cron removes nothing');

-- 0.5: automatic maintenance (issue #15): one list of jobs, run and recorded
-- by run_maintenance (this transaction's sources are this installation's)
SELECT results_eq(
	$$SELECT job, command, cron_schedule FROM adstream._maintenance_jobs()$$,
	$$VALUES ('adstream_partitions', 'adstream.create_partitions_ahead()', '*/10 * * * *'),
			 ('adstream_retention', 'adstream.drop_expired_partitions()', '*/5 * * * *'),
			 ('adstream_rollups', 'adstream.refresh_rollups()', '* * * * *'),
			 ('adstream_dedup_expiry', 'adstream.expire_dedup_state()', NULL)$$,
	'the maintenance jobs, their functions and pg_cron schedules at the default intervals');
SELECT function_returns('adstream', 'run_maintenance', ARRAY['text'], 'text');
SELECT throws_ok($$SELECT adstream.run_maintenance('adstream_nosuch')$$, '42704', NULL,
	'run_maintenance of an unknown job is undefined_object');
SELECT matches(adstream.run_maintenance('adstream_rollups'), '^[0-9]+ minutes rolled up$',
	'run_maintenance runs a job and says what it did');
SELECT results_eq(
	$$SELECT runs_by, last_error IS NULL, last_result ~ 'minutes rolled up', overdue FROM adstream.maintenance_status
	   WHERE job = 'adstream_rollups'$$,
	$$VALUES ('launcher'::text, true, true, false)$$,
	'maintenance_status shows the run, and that the launcher runs the job (no pg_cron here)');

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
SELECT is(adstream.ensure_partitions('dedup_log',
		ARRAY['2031-01-01 10:00:00+00', '2031-01-01 10:59:59+00', '2031-01-01 11:00:00+00']::timestamptz[]),
	2, 'ensure_partitions creates one partition per UTC hour of dedup_log');
SELECT throws_ok($$SELECT adstream.ensure_partitions('sources', ARRAY[now()])$$,
	'22023', NULL, 'ensure_partitions refuses tables it does not manage');

SELECT is_partition_of('adstream', 'ad_stats_minute_p20310101_0000', 'adstream', 'ad_stats_minute',
	'ad_stats_minute_p20310101_0000 is a partition of ad_stats_minute');
SELECT is_partition_of('adstream', 'dedup_log_p20310101_1000', 'adstream', 'dedup_log',
	'dedup_log_p20310101_1000 is a partition of dedup_log');
SELECT is(pg_get_expr(relpartbound, oid),
	'FOR VALUES FROM (''2031-01-02 00:00:00+00'') TO (''2031-01-03 00:00:00+00'')',
	'a daily partition covers one UTC day')
  FROM pg_class WHERE oid = 'adstream.ad_stats_minute_p20310102_0000'::regclass;

SELECT is(reloptions, ARRAY['fillfactor=50', 'autovacuum_vacuum_scale_factor=0.01', 'autovacuum_vacuum_threshold=5000',
	'autovacuum_analyze_scale_factor=0.02'], 'ad_stats_minute partitions: fillfactor 50 (HOT updates), vacuumed at 1% dead')
  FROM pg_class WHERE oid = 'adstream.ad_stats_minute_p20310101_0000'::regclass;
SELECT is(reloptions, ARRAY['fillfactor=100', 'autovacuum_vacuum_insert_threshold=-1'],
	'dedup_log partitions: fillfactor 100, no vacuum for inserts (insert only, dropped whole)')
  FROM pg_class WHERE oid = 'adstream.dedup_log_p20310101_1000'::regclass;
SELECT is_empty(
	$$SELECT c.relname FROM adstream.partitioned_tables pt
		JOIN pg_inherits i ON i.inhparent = ('adstream.' || pt.name)::regclass
		JOIN pg_class c ON c.oid = i.inhrelid
	   WHERE c.reloptions IS DISTINCT FROM ARRAY['fillfactor=' || pt.fillfactor] || pt.storage_options$$,
	'every partition has the fillfactor and storage options of adstream.partitioned_tables');
SELECT is_empty(
	$$SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	   WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
		 AND NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary)$$,
	'every partition of ad_stats_minute carries the primary key');

-------------------------------------------------------------------------------
-- Watermark and dedup expiry (default adstream.dedup_horizon of 1 hour)
-------------------------------------------------------------------------------

INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tap_src', 'tap_topic', 0, 5, '2031-01-01 12:10:00+00'),
	   ('tap_src', 'tap_topic', 1, 5, '2031-01-01 12:05:00+00');
SELECT is(adstream.source_watermark('tap_src'), timestamptz '2031-01-01 12:10:00+00',
	'the source watermark is the highest partition watermark');
SELECT is(adstream.source_watermark('tap_nosuch'), NULL, 'a missing source has no watermark');
-- No worker runs, so each partition holds expiry at its own watermark: the
-- slowest (12:05) less the hour's horizon is 11:05, the hour boundary 11:00.
-- 10:00-11:00 goes, 11:00-12:00 stays.
SELECT cmp_ok(adstream.expire_dedup_state(), '>=', 1, 'expire_dedup_state drops what is behind the horizon');
SELECT is(dedup_expired_before, timestamptz '2031-01-01 11:00:00+00',
	'the source''s dedup state is given up to the hour behind its slowest partition less the horizon')
  FROM adstream.sources WHERE name = 'tap_src';
SELECT hasnt_table('adstream', 'dedup_log_p20310101_1000', 'the expired partition is gone');
SELECT has_table('adstream', 'dedup_log_p20310101_1100', 'the partition within the horizon stays');

-- drop_source takes the offsets along
SELECT lives_ok($$SELECT adstream.drop_source('tap_src')$$, 'drop_source');
SELECT is((SELECT count(*)::int FROM adstream.offsets WHERE source = 'tap_src'), 0, 'its offsets are gone');
SELECT is((SELECT count(*)::int FROM adstream.sources WHERE name = 'tap_src'), 0, 'the source is gone');

-------------------------------------------------------------------------------
-- Attribution (defaults: 24-hour window, view-through off, 10 minutes' wait)
-------------------------------------------------------------------------------

SELECT lives_ok($$SELECT adstream.create_source('tap_clicks', 'k:9092', 'tap_clicks')$$, 'create_source of ad events');
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tap_clicks', 'tap_clicks', 0, 1, '2031-02-01 12:00:00+00'),
	   ('tap_shop', 'tap_orders', 0, 1, '2031-01-01 00:00:00+00');
SELECT is(adstream.ad_events_watermark(), timestamptz '2031-02-01 12:00:00+00',
	'the ad-events watermark ignores orders sources');
SELECT is(adstream.ensure_partitions('ad_events', ARRAY['2031-02-01 09:00:00+00', '2031-02-01 09:59:00+00']::timestamptz[]),
	1, 'ensure_partitions creates one partition per UTC hour of ad_events');
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
SELECT s.id, e.event_id, 'click', e.ad_id, 70, 7, 5, e.ts
  FROM adstream.sources s,
	   (VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, 71, timestamptz '2031-02-01 09:00:00+00'),
			   ('a0000000-0000-4000-8000-000000000002'::uuid, 72, '2031-02-01 09:30:00+00'),
			   ('a0000000-0000-4000-8000-000000000003'::uuid, 73, '2031-02-01 09:30:00+00'),
			   ('a0000000-0000-4000-8000-000000000004'::uuid, 74, '2031-02-01 09:45:00+00')) AS e(event_id, ad_id, ts)
 WHERE s.name = 'tap_clicks';
INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts)
VALUES ('b0000000-0000-4000-8000-000000000001', 'tap_shop', 7, 5, 12.34, 'EUR', '2031-02-01 09:40:00+00'),
	   ('b0000000-0000-4000-8000-000000000002', 'tap_shop', 7, 6, 1, 'EUR', '2031-02-01 09:40:00+00'),
	   ('b0000000-0000-4000-8000-000000000003', 'tap_shop', 7, 5, 1, 'EUR', '2031-02-01 12:00:00.000001+00');
SELECT is(adstream.attribute_orders(), 2, 'attribute_orders judges the orders the watermark has passed');
SELECT results_eq(
	$$SELECT order_id, status, attribution, ad_id, event_id FROM adstream.orders ORDER BY order_id$$,
	$$VALUES ('b0000000-0000-4000-8000-000000000001'::uuid, 'attributed'::text, 'click'::text, 73::bigint,
			  'a0000000-0000-4000-8000-000000000003'::uuid),
			 ('b0000000-0000-4000-8000-000000000002', 'unattributed', NULL, NULL, NULL),
			 ('b0000000-0000-4000-8000-000000000003', 'waiting', NULL, NULL, NULL)$$,
	'last click before the order wins, ties go to the greater event_id, other stores do not count');
SELECT results_eq(
	$$SELECT order_id, ad_id, campaign_id, click_ts, amount, record_uuid FROM adstream.attributed_orders$$,
	$$VALUES ('b0000000-0000-4000-8000-000000000001'::uuid, 73::bigint, 70::bigint,
			  timestamptz '2031-02-01 09:30:00+00', 12.34::numeric,
			  adstream.record_uuid('attributed_orders', 'b0000000-0000-4000-8000-000000000001'))$$,
	'the credit is recorded once with its record_uuid');
SELECT is((SELECT count(*)::int FROM adstream.waiting_orders), 1, 'waiting_orders shows the order after the watermark');
UPDATE adstream.orders SET received_at = now() - interval '11 minutes'
 WHERE order_id = 'b0000000-0000-4000-8000-000000000003';
SELECT is(adstream.attribute_orders(), 1, 'an order that waited attribution_max_wait is judged anyway');
SELECT is((SELECT ad_id FROM adstream.orders WHERE order_id = 'b0000000-0000-4000-8000-000000000003'), 74::bigint,
	'and credited to the last click before it');

-------------------------------------------------------------------------------
-- Rollups and maintenance
-------------------------------------------------------------------------------

SELECT is(adstream.ensure_partitions('ad_stats_minute', ARRAY['2031-02-01 00:00:00+00']::timestamptz[]), 1,
	'a minute partition for the rollup test');
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (71, 70, '2031-02-01 05:59:00+00', 10, 1), (71, 70, '2031-02-01 06:00:00+00', 5, 2);
INSERT INTO adstream.rollup_pending VALUES ('2031-02-01 05:59:00+00'), ('2031-02-01 06:00:00+00');
SELECT results_eq(
	$$SELECT window_start, impressions, clicks FROM adstream.ad_stats('2031-02-01', '2031-02-02', '6h') WHERE ad_id = 71 ORDER BY 1$$,
	$$VALUES (timestamptz '2031-02-01 00:00:00+00', 10::bigint, 1::bigint), ('2031-02-01 06:00:00+00', 5, 2)$$,
	'ad_stats sums queued minutes before any refresh');
SELECT is(adstream.refresh_rollups(), 2, 'refresh_rollups consumes the queued minutes');
SELECT results_eq(
	$$SELECT impressions, clicks FROM adstream.ad_stats_day WHERE ad_id = 71$$,
	$$VALUES (15::bigint, 3::bigint)$$,
	'the day rollup holds the sum of its minutes');
SELECT results_eq(
	$$SELECT campaign_id, ads, impressions, clicks FROM adstream.campaign_stats('2031-02-01', '2031-02-02', 'day')
	   WHERE campaign_id = 70$$,
	$$VALUES (70::bigint, 1::bigint, 15::bigint, 3::bigint)$$,
	'campaign_stats adds up the ads of a campaign');

SELECT cmp_ok(adstream.create_partitions_ahead('3 hours'), '>=', 0, 'create_partitions_ahead runs');
SELECT is(adstream.create_partitions_ahead('3 hours'), 0, 'create_partitions_ahead is idempotent');
SELECT is_empty(
	$$SELECT p.name FROM adstream.partitioned_tables p
	   WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i
						  WHERE i.inhparent = ('adstream.' || p.name)::regclass
							AND adstream._partition_upper(i.inhrelid) > now() + interval '3 hours')$$,
	'every partitioned table has a partition for three hours from now');
SELECT is(adstream._partition_upper('adstream.ad_stats_minute_p20310201_0000'),
	timestamptz '2031-02-02 00:00:00+00', '_partition_upper reads the upper bound');

-- Minute aggregates older than adstream.minute_retention go, their rollups
-- stay.  (Workers dead-letter events older than the retention as too_late,
-- so no minute can arrive later for a bucket whose minutes were dropped;
-- test/t/140_rollups_maintenance.pl checks that.)
SELECT is(adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-05-01 00:00:00+00']::timestamptz[]), 1,
	'an old minute partition');
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (99, 90, '2024-05-01 10:00:00+00', 1000, 100);
INSERT INTO adstream.rollup_pending VALUES ('2024-05-01 10:00:00+00');
SELECT cmp_ok(adstream.drop_expired_partitions(), '>=', 1, 'drop_expired_partitions drops the expired minutes');
SELECT hasnt_table('adstream', 'ad_stats_minute_p20240501_0000', 'the expired minute partition is gone');
SELECT is((SELECT impressions FROM adstream.ad_stats_hour WHERE ad_id = 99), 1000::bigint,
	'its minutes were rolled up first');
SELECT is((SELECT impressions FROM adstream.ad_stats('2024-05-01', '2024-05-02', 'day') WHERE ad_id = 99), 1000::bigint,
	'ad_stats still answers from the kept rollup');
SELECT is((SELECT count(*)::int FROM adstream.ad_stats('2024-05-01', '2024-05-02', 'minute')), 0,
	'no expired minute is seen');

SELECT lives_ok($$SELECT adstream.drop_source('tap_shop')$$, 'drop_source of an orders source');
SELECT lives_ok($$SELECT adstream.drop_source('tap_clicks')$$, 'drop_source of the clicks source');

-------------------------------------------------------------------------------
-- 0.5: dump and restore.  A source or sink runs only in the installation of
-- its origin; one restored from a dump is held until adopt_restored.
-------------------------------------------------------------------------------

SELECT function_returns('adstream', 'adopt_restored', ARRAY['text'], 'integer');
SELECT function_returns('adstream', '_origin', ARRAY[]::name[], 'text');
SELECT is_definer('adstream', 'adopt_restored', ARRAY['text']);
SELECT isnt_definer('adstream', '_origin', ARRAY[]::name[]);
SELECT volatility_is('adstream', '_origin', ARRAY[]::name[], 'stable');
SELECT is(adstream._origin(),
	(SELECT system_identifier || '/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/'
			|| (SELECT oid FROM pg_extension WHERE extname = 'adstream') FROM pg_control_system()),
	'_origin is the system identifier, the database oid and the extension oid');
SELECT adstream.create_source('tap_restored', 'k:9092', 'tap_restored_topic');
SELECT is((SELECT origin FROM adstream.sources WHERE name = 'tap_restored'), adstream._origin(),
	'create_source records this installation as the origin');
UPDATE adstream.sources SET origin = NULL WHERE name = 'tap_restored';
SELECT results_eq(
	$$SELECT source_state, worker_state, last_error LIKE '%adstream.adopt_restored()%'
		FROM adstream.source_status WHERE source = 'tap_restored'$$,
	$$VALUES ('held', 'held', true)$$,
	'a source from elsewhere is held, and source_status names the function that adopts it');
SELECT throws_ok($$SELECT adstream.adopt_restored('tap_nosuch')$$, '42704', NULL,
	'adopt_restored of an unknown name fails');
SELECT is(adstream.adopt_restored('tap_restored'), 1, 'adopt_restored adopts the source of that name');
SELECT results_eq(
	$$SELECT source_state, worker_state, last_error FROM adstream.source_status WHERE source = 'tap_restored'$$,
	$$VALUES ('enabled', 'starting', NULL::text)$$,
	'an adopted source runs');
SELECT is(adstream.adopt_restored(), 0, 'adopt_restored finds nothing more to adopt');
-- What pg_dump saves: every table whose contents a restored copy needs
-- (the partitions of ad_stats_minute, dedup_log and ad_events belong to no
-- extension and are dumped like any table).
SELECT set_eq(
	$$SELECT x::regclass FROM pg_extension e, unnest(e.extconfig) x WHERE e.extname = 'adstream'$$,
	ARRAY['adstream.sources', 'adstream.sources_id_seq', 'adstream.offsets', 'adstream.rejected_events',
		  'adstream.offset_gaps', 'adstream.offset_gaps_id_seq',
		  'adstream.rollup_pending', 'adstream.ad_stats_hour', 'adstream.ad_stats_6h', 'adstream.ad_stats_day',
		  'adstream.orders', 'adstream.attributed_orders', 'adstream.outbox', 'adstream.outbox_id_seq', 'adstream.record_version_seq',
		  'adstream.sinks', 'adstream.sinks_id_seq',
		  -- 0.6: status history, counters and metric resets (issue #14)
		  'adstream.status_history', 'adstream.status_history_id_seq', 'adstream.status_counters',
		  'adstream.metrics_reset', 'adstream.node',
		  -- 0.6: rewinds (issue #14)
		  'adstream.rewinds', 'adstream.rewinds_id_seq', 'adstream.rewind_partitions',
		  'adstream.rewind_ids',
		  -- 0.6: partition handoffs (issue #13, part 3)
		  'adstream.orders_seen_elsewhere', 'adstream.handoff_id_seq', 'adstream.handoffs',
		  'adstream.handoff_items',
		  -- 0.6: events set aside (issue #12)
		  'adstream.set_aside']::regclass[],
	'pg_dump saves exactly these tables and sequences of the extension');
SELECT is_empty(
	$$SELECT x::regclass::text FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(x, n)
	   WHERE e.extname = 'adstream' AND e.extcondition[u.n] <> ''$$,
	'all of their rows (no table of them has rows of the install script)');

SELECT * FROM finish();
ROLLBACK;
