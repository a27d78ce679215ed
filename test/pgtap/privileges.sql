-- pgTAP: who may do what.  PUBLIC gets nothing; adstream_reader reads
-- results and status (0.2: rollups, credited orders, ad_stats and
-- campaign_stats); adstream_admin also manages sources and reads their
-- (masked) configuration, positions and dead letters (0.2: orders, waiting
-- orders, the ad events kept for attribution), but never the credentials in
-- adstream.sources.  Attribution, rollup refresh and partition maintenance
-- are for the workers and pg_cron only.  0.3: the reader sees the sinks'
-- status; the admin manages sinks through the API but never reads
-- adstream.sinks (credentials) or the outbox, and never runs what the
-- publisher runs.  Everything is rolled back, including the roles created
-- here.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

BEGIN;
SELECT plan(341);

CREATE ROLE tap_adstream_plain NOLOGIN;
CREATE ROLE tap_adstream_reader NOLOGIN IN ROLE adstream_reader;
CREATE ROLE tap_adstream_admin NOLOGIN IN ROLE adstream_admin;

-- Runs sql as role and returns its SQLSTATE ('00000' on success).  The role
-- switch is undone on both paths (the failing one by the subtransaction).
CREATE FUNCTION pg_temp.sqlstate_as(p_role name, p_sql text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		EXECUTE format('SET LOCAL ROLE %I', p_role);
		EXECUTE p_sql;
		RESET ROLE;
		RETURN '00000';
	EXCEPTION WHEN OTHERS THEN
		RETURN SQLSTATE;
	END;
END
$$;

-- The same as a login of that role: session_user changes too, as it does
-- for a real non-superuser connection (SET ROLE from a superuser does not).
CREATE FUNCTION pg_temp.sqlstate_as_login(p_role name, p_sql text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		EXECUTE format('SET LOCAL SESSION AUTHORIZATION %I', p_role);
		EXECUTE p_sql;
		RESET SESSION AUTHORIZATION;
		RETURN '00000';
	EXCEPTION WHEN OTHERS THEN
		RETURN SQLSTATE;
	END;
END
$$;

-------------------------------------------------------------------------------
-- Roles and schema
-------------------------------------------------------------------------------

SELECT has_role('adstream_reader');
SELECT has_role('adstream_admin');
SELECT is_member_of('adstream_reader', ARRAY['adstream_admin']);
SELECT schema_privs_are('adstream', 'public', ARRAY[]::name[], 'PUBLIC has no privileges on schema adstream');
SELECT schema_privs_are('adstream', 'adstream_reader', ARRAY['USAGE'], 'adstream_reader may use schema adstream');
SELECT schema_privs_are('adstream', 'adstream_admin', ARRAY['USAGE'], 'adstream_admin may use schema adstream');

-------------------------------------------------------------------------------
-- Tables and views (has_table_privilege, so membership counts)
-------------------------------------------------------------------------------

SELECT table_privs_are('adstream', t, r, privs,
		format('%s: %s', r, CASE WHEN privs = '{}' THEN 'no privileges' ELSE array_to_string(privs, ', ') END
			   || ' on adstream.' || t))
  FROM (VALUES
	('sources',            'public',          ARRAY[]::name[]),
	('sources',            'adstream_reader', ARRAY[]::name[]),
	('sources',            'adstream_admin',  ARRAY[]::name[]),
	('offsets',            'public',          ARRAY[]::name[]),
	('offsets',            'adstream_reader', ARRAY[]::name[]),
	('offsets',            'adstream_admin',  ARRAY['SELECT']::name[]),
	('partitioned_tables', 'public',          ARRAY[]::name[]),
	('partitioned_tables', 'adstream_reader', ARRAY[]::name[]),
	('partitioned_tables', 'adstream_admin',  ARRAY[]::name[]),
	('ad_stats_minute',    'public',          ARRAY[]::name[]),
	('ad_stats_minute',    'adstream_reader', ARRAY['SELECT']::name[]),
	('ad_stats_minute',    'adstream_admin',  ARRAY['SELECT']::name[]),
	('dedup_log',        'public',          ARRAY[]::name[]),
	('dedup_log',        'adstream_reader', ARRAY[]::name[]),
	('dedup_log',        'adstream_admin',  ARRAY[]::name[]),
	('rejected_events',    'public',          ARRAY[]::name[]),
	('rejected_events',    'adstream_reader', ARRAY[]::name[]),
	('rejected_events',    'adstream_admin',  ARRAY['SELECT']::name[]),
	('source_config',      'public',          ARRAY[]::name[]),
	('source_config',      'adstream_reader', ARRAY[]::name[]),
	('source_config',      'adstream_admin',  ARRAY['SELECT']::name[]),
	('source_status',      'public',          ARRAY[]::name[]),
	('source_status',      'adstream_reader', ARRAY['SELECT']::name[]),
	('source_status',      'adstream_admin',  ARRAY['SELECT']::name[]),
	-- 0.2
	('ad_events',          'public',          ARRAY[]::name[]),
	('ad_events',          'adstream_reader', ARRAY[]::name[]),
	('ad_events',          'adstream_admin',  ARRAY['SELECT']::name[]),
	('set_aside',          'public',          ARRAY[]::name[]),
	('set_aside',          'adstream_reader', ARRAY[]::name[]),
	('set_aside',          'adstream_admin',  ARRAY['SELECT']::name[]),
	('orders',             'public',          ARRAY[]::name[]),
	('orders',             'adstream_reader', ARRAY[]::name[]),
	('orders',             'adstream_admin',  ARRAY['SELECT']::name[]),
	('waiting_orders',     'public',          ARRAY[]::name[]),
	('waiting_orders',     'adstream_reader', ARRAY[]::name[]),
	('waiting_orders',     'adstream_admin',  ARRAY['SELECT']::name[]),
	('attributed_orders',  'public',          ARRAY[]::name[]),
	('attributed_orders',  'adstream_reader', ARRAY['SELECT']::name[]),
	('attributed_orders',  'adstream_admin',  ARRAY['SELECT']::name[]),
	('rollup_pending',     'public',          ARRAY[]::name[]),
	('rollup_pending',     'adstream_reader', ARRAY[]::name[]),
	('rollup_pending',     'adstream_admin',  ARRAY[]::name[]),
	('ad_stats_hour',      'public',          ARRAY[]::name[]),
	('ad_stats_hour',      'adstream_reader', ARRAY['SELECT']::name[]),
	('ad_stats_hour',      'adstream_admin',  ARRAY['SELECT']::name[]),
	('ad_stats_6h',        'public',          ARRAY[]::name[]),
	('ad_stats_6h',        'adstream_reader', ARRAY['SELECT']::name[]),
	('ad_stats_6h',        'adstream_admin',  ARRAY['SELECT']::name[]),
	('ad_stats_day',       'public',          ARRAY[]::name[]),
	('ad_stats_day',       'adstream_reader', ARRAY['SELECT']::name[]),
	('ad_stats_day',       'adstream_admin',  ARRAY['SELECT']::name[]),
	-- 0.3
	('sinks',              'public',          ARRAY[]::name[]),
	('sinks',              'adstream_reader', ARRAY[]::name[]),
	('sinks',              'adstream_admin',  ARRAY[]::name[]),
	('outbox',             'public',          ARRAY[]::name[]),
	('outbox',             'adstream_reader', ARRAY[]::name[]),
	('outbox',             'adstream_admin',  ARRAY[]::name[]),
	('sink_status',        'public',          ARRAY[]::name[]),
	('sink_status',        'adstream_reader', ARRAY['SELECT']::name[]),
	('sink_status',        'adstream_admin',  ARRAY['SELECT']::name[]),
	-- 0.5: automatic maintenance (issue #15): its status is the reader's
	('maintenance_runs',   'public',          ARRAY[]::name[]),
	('maintenance_runs',   'adstream_reader', ARRAY[]::name[]),
	('maintenance_runs',   'adstream_admin',  ARRAY[]::name[]),
	('maintenance_status', 'public',          ARRAY[]::name[]),
	('maintenance_status', 'adstream_reader', ARRAY['SELECT']::name[]),
	('maintenance_status', 'adstream_admin',  ARRAY['SELECT']::name[]),
	-- 0.6: rewinds are management, like the offsets they move (issue #14)
	('rewinds',            'public',          ARRAY[]::name[]),
	('rewinds',            'adstream_reader', ARRAY[]::name[]),
	('rewinds',            'adstream_admin',  ARRAY['SELECT']::name[]),
	('rewind_partitions',  'public',          ARRAY[]::name[]),
	('rewind_partitions',  'adstream_reader', ARRAY[]::name[]),
	('rewind_partitions',  'adstream_admin',  ARRAY['SELECT']::name[]),
	('rewind_ids',         'public',          ARRAY[]::name[]),
	('rewind_ids',         'adstream_reader', ARRAY[]::name[]),
	('rewind_ids',         'adstream_admin',  ARRAY[]::name[]),
	('rewind_status',      'public',          ARRAY[]::name[]),
	('rewind_status',      'adstream_reader', ARRAY[]::name[]),
	('rewind_status',      'adstream_admin',  ARRAY['SELECT']::name[]),
	-- 0.6: status history and metrics are the reader's (issue #14)
	('status_history',     'public',          ARRAY[]::name[]),
	('status_history',     'adstream_reader', ARRAY['SELECT']::name[]),
	('status_history',     'adstream_admin',  ARRAY['SELECT']::name[]),
	('metrics',            'public',          ARRAY[]::name[]),
	('metrics',            'adstream_reader', ARRAY['SELECT']::name[]),
	('metrics',            'adstream_admin',  ARRAY['SELECT']::name[]),
	('status_counters',    'public',          ARRAY[]::name[]),
	('status_counters',    'adstream_reader', ARRAY[]::name[]),
	('status_counters',    'adstream_admin',  ARRAY[]::name[]),
	('metrics_reset',      'public',          ARRAY[]::name[]),
	('metrics_reset',      'adstream_reader', ARRAY[]::name[]),
	('metrics_reset',      'adstream_admin',  ARRAY[]::name[]),
	-- 0.6: the node's name and versions' epoch (failover) are the reader's
	('node',               'public',          ARRAY[]::name[]),
	('node',               'adstream_reader', ARRAY['SELECT']::name[]),
	('node',               'adstream_admin',  ARRAY['SELECT']::name[])
  ) AS v(t, r, privs);

-------------------------------------------------------------------------------
-- Functions
-------------------------------------------------------------------------------

SELECT function_privs_are('adstream', f, args, r, privs,
		format('%s: %s on adstream.%s(%s)', r,
			   CASE WHEN privs = '{}' THEN 'no EXECUTE' ELSE 'EXECUTE' END, f, array_to_string(args, ', ')))
  FROM (VALUES
	('create_source',      ARRAY['text', 'text', 'text', 'text', 'jsonb']::name[], 'public',          ARRAY[]::name[]),
	('create_source',      ARRAY['text', 'text', 'text', 'text', 'jsonb']::name[], 'adstream_reader', ARRAY[]::name[]),
	('create_source',      ARRAY['text', 'text', 'text', 'text', 'jsonb']::name[], 'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('drop_source',        ARRAY['text', 'boolean']::name[],                       'public',          ARRAY[]::name[]),
	('drop_source',        ARRAY['text', 'boolean']::name[],                       'adstream_reader', ARRAY[]::name[]),
	('drop_source',        ARRAY['text', 'boolean']::name[],                       'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('pause_source',       ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('pause_source',       ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('pause_source',       ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('resume_source',      ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('resume_source',      ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('resume_source',      ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('validate_event',     ARRAY['bytea']::name[],                                 'public',          ARRAY[]::name[]),
	('validate_event',     ARRAY['bytea']::name[],                                 'adstream_reader', ARRAY['EXECUTE']::name[]),
	('validate_event',     ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('validate_event',     ARRAY['text']::name[],                                  'adstream_reader', ARRAY['EXECUTE']::name[]),
	('source_watermark',   ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('source_watermark',   ARRAY['text']::name[],                                  'adstream_reader', ARRAY['EXECUTE']::name[]),
	('ensure_partitions',  ARRAY['text', 'timestamp with time zone[]']::name[],                 'public',          ARRAY[]::name[]),
	('ensure_partitions',  ARRAY['text', 'timestamp with time zone[]']::name[],                 'adstream_admin',  ARRAY[]::name[]),
	('expire_dedup_state', ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('expire_dedup_state', ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_kafka_property_error', ARRAY['text', 'text']::name[],                       'adstream_admin',  ARRAY[]::name[]),
	('_wake_launcher',     ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	-- 0.2: the reader's functions
	('validate_order',     ARRAY['bytea']::name[],                                 'public',          ARRAY[]::name[]),
	('validate_order',     ARRAY['bytea']::name[],                                 'adstream_reader', ARRAY['EXECUTE']::name[]),
	('validate_order',     ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('validate_order',     ARRAY['text']::name[],                                  'adstream_reader', ARRAY['EXECUTE']::name[]),
	('ad_events_watermark', ARRAY[]::name[],                                       'public',          ARRAY[]::name[]),
	('ad_events_watermark', ARRAY[]::name[],                                       'adstream_reader', ARRAY['EXECUTE']::name[]),
	('record_uuid',        ARRAY['text', 'text']::name[],                          'public',          ARRAY[]::name[]),
	('record_uuid',        ARRAY['text', 'text']::name[],                          'adstream_reader', ARRAY['EXECUTE']::name[]),
	('bucket',             ARRAY['text', 'timestamp with time zone']::name[],      'public',          ARRAY[]::name[]),
	('bucket',             ARRAY['text', 'timestamp with time zone']::name[],      'adstream_reader', ARRAY['EXECUTE']::name[]),
	('ad_stats',           ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'public',          ARRAY[]::name[]),
	('ad_stats',           ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'adstream_reader', ARRAY['EXECUTE']::name[]),
	('ad_stats',           ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('campaign_stats',     ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'public',          ARRAY[]::name[]),
	('campaign_stats',     ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'adstream_reader', ARRAY['EXECUTE']::name[]),
	('campaign_stats',     ARRAY['timestamp with time zone', 'timestamp with time zone', 'text']::name[], 'adstream_admin',  ARRAY['EXECUTE']::name[]),
	-- 0.2: what only the workers and pg_cron (as superuser) run
	('attribute_orders',   ARRAY['integer']::name[],                               'public',          ARRAY[]::name[]),
	('attribute_orders',   ARRAY['integer']::name[],                               'adstream_reader', ARRAY[]::name[]),
	('attribute_orders',   ARRAY['integer']::name[],                               'adstream_admin',  ARRAY[]::name[]),
	('refresh_rollups',    ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('refresh_rollups',    ARRAY[]::name[],                                        'adstream_reader', ARRAY[]::name[]),
	('refresh_rollups',    ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('create_partitions_ahead', ARRAY['interval']::name[],                         'public',          ARRAY[]::name[]),
	('create_partitions_ahead', ARRAY['interval']::name[],                         'adstream_admin',  ARRAY[]::name[]),
	('drop_expired_partitions', ARRAY[]::name[],                                   'public',          ARRAY[]::name[]),
	('drop_expired_partitions', ARRAY[]::name[],                                   'adstream_admin',  ARRAY[]::name[]),
	('schedule_maintenance', ARRAY[]::name[],                                      'public',          ARRAY[]::name[]),
	('schedule_maintenance', ARRAY[]::name[],                                      'adstream_admin',  ARRAY[]::name[]),
	('unschedule_maintenance', ARRAY[]::name[],                                    'public',          ARRAY[]::name[]),
	('unschedule_maintenance', ARRAY[]::name[],                                    'adstream_admin',  ARRAY[]::name[]),
	('_source_kinds',      ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_partition_upper',   ARRAY['regclass']::name[],                              'adstream_admin',  ARRAY[]::name[]),
	('_drop_partitions_before', ARRAY['text', 'timestamp with time zone']::name[], 'adstream_admin',  ARRAY[]::name[]),
	-- 0.3: sink management for the admin, the publisher status for the reader
	('create_sink',        ARRAY['text', 'text', 'jsonb']::name[],                 'public',          ARRAY[]::name[]),
	('create_sink',        ARRAY['text', 'text', 'jsonb']::name[],                 'adstream_reader', ARRAY[]::name[]),
	('create_sink',        ARRAY['text', 'text', 'jsonb']::name[],                 'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('drop_sink',          ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('drop_sink',          ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('drop_sink',          ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('pause_sink',         ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('pause_sink',         ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('pause_sink',         ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('resume_sink',        ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('resume_sink',        ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('resume_sink',        ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('publisher_status',   ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('publisher_status',   ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	-- 0.3: what only the publisher (as superuser) runs
	('prune_outbox',       ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_outbox_page',       ARRAY['text', 'integer']::name[],                       'adstream_admin',  ARRAY[]::name[]),
	('_sink_advance',      ARRAY['text', 'bigint', 'bigint', 'integer', 'boolean']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_sink_aborted',      ARRAY['text']::name[],                                  'adstream_admin',  ARRAY[]::name[]),
	('_publishing',        ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_record_key',        ARRAY['text', 'bigint', 'timestamp with time zone', 'uuid']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_sink_must_exist',   ARRAY['text']::name[],                                  'adstream_admin',  ARRAY[]::name[]),
	('_queue_attributed_orders', ARRAY[]::name[],                                  'adstream_admin',  ARRAY[]::name[]),
	-- 0.4: the dedup index's status for the reader; retention for pg_cron only
	('dedup_index_status', ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('dedup_index_status', ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	('_dedup_forget',      ARRAY['integer[]', 'timestamp with time zone[]']::name[], 'public',          ARRAY[]::name[]),
	('_dedup_forget',      ARRAY['integer[]', 'timestamp with time zone[]']::name[], 'adstream_admin',  ARRAY[]::name[]),
	('expire_rejected_events', ARRAY['integer']::name[],                           'public',          ARRAY[]::name[]),
	('expire_rejected_events', ARRAY['integer']::name[],                           'adstream_admin',  ARRAY[]::name[]),
	('_lock',              ARRAY['text', 'integer', 'boolean']::name[],            'public',          ARRAY[]::name[]),
	('_lock',              ARRAY['text', 'integer', 'boolean']::name[],            'adstream_admin',  ARRAY[]::name[]),
	-- 0.5: adopting restored sources and sinks is the admin's; the status
	-- views ask _origin() whether one is held
	('adopt_restored',     ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('adopt_restored',     ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('adopt_restored',     ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('_origin',            ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('_origin',            ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	-- 0.5: maintenance runs as superuser (the launcher, pg_cron); its status
	-- (maintenance_status, source_status's warning) is the reader's
	('run_maintenance',    ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('run_maintenance',    ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('run_maintenance',    ARRAY['text']::name[],                                  'adstream_admin',  ARRAY[]::name[]),
	('_maintenance_plan',  ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_maintenance_failed', ARRAY['text', 'timestamp with time zone', 'text']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_maintenance_status', ARRAY[]::name[],                                       'public',          ARRAY[]::name[]),
	('_maintenance_status', ARRAY[]::name[],                                       'adstream_reader', ARRAY['EXECUTE']::name[]),
	('_maintenance_warning', ARRAY[]::name[],                                      'public',          ARRAY[]::name[]),
	('_maintenance_warning', ARRAY[]::name[],                                      'adstream_reader', ARRAY['EXECUTE']::name[]),
	-- 0.6: changing and renaming sources and sinks is the admin's (issue #14);
	-- the checks they share run inside them, as the extension owner
	('alter_source',       ARRAY['text', 'jsonb']::name[],                         'public',          ARRAY[]::name[]),
	('alter_source',       ARRAY['text', 'jsonb']::name[],                         'adstream_reader', ARRAY[]::name[]),
	('alter_source',       ARRAY['text', 'jsonb']::name[],                         'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('rename_source',      ARRAY['text', 'text']::name[],                          'adstream_reader', ARRAY[]::name[]),
	('rename_source',      ARRAY['text', 'text']::name[],                          'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('alter_sink',         ARRAY['text', 'jsonb']::name[],                         'adstream_reader', ARRAY[]::name[]),
	('alter_sink',         ARRAY['text', 'jsonb']::name[],                         'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('rename_sink',        ARRAY['text', 'text']::name[],                          'adstream_reader', ARRAY[]::name[]),
	('rename_sink',        ARRAY['text', 'text']::name[],                          'adstream_admin',  ARRAY['EXECUTE']::name[]),
	-- 0.6: rewinding a source is management; its helpers are its own
	('rewind_source',      ARRAY['text', 'timestamp with time zone', 'jsonb', 'integer[]', 'text', 'timestamp with time zone', 'interval']::name[], 'public', ARRAY[]::name[]),
	('rewind_source',      ARRAY['text', 'timestamp with time zone', 'jsonb', 'integer[]', 'text', 'timestamp with time zone', 'interval']::name[], 'adstream_reader', ARRAY[]::name[]),
	('rewind_source',      ARRAY['text', 'timestamp with time zone', 'jsonb', 'integer[]', 'text', 'timestamp with time zone', 'interval']::name[], 'adstream_admin', ARRAY['EXECUTE']::name[]),
	('_kafka_offsets_for_times', ARRAY['text', 'text[]', 'text[]', 'text', 'integer[]', 'timestamp with time zone', 'integer']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_dedup_forget_hours', ARRAY['integer', 'timestamp with time zone', 'timestamp with time zone']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_check_source',      ARRAY['integer', 'text', 'text', 'text', 'text', 'jsonb', 'jsonb']::name[], 'adstream_admin', ARRAY[]::name[]),
	('_check_sink',        ARRAY['text', 'text', 'jsonb', 'jsonb']::name[],        'adstream_admin',  ARRAY[]::name[]),
	('_kafka_check',       ARRAY['text', 'text', 'text[]', 'text[]', 'text', 'integer']::name[], 'adstream_admin', ARRAY[]::name[]),
	-- 0.6: status and metrics for the reader, resetting the metrics for the
	-- admin, the history's retention for the retention job (issue #14)
	('reset_metrics',      ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('reset_metrics',      ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('reset_metrics',      ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('_metrics',           ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('_metrics',           ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	('_sink_backlog',      ARRAY['integer']::name[],                               'public',          ARRAY[]::name[]),
	('_sink_backlog',      ARRAY['integer']::name[],                               'adstream_reader', ARRAY['EXECUTE']::name[]),
	('partition_lag',      ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('partition_lag',      ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	('expire_status_history', ARRAY[]::name[],                                     'public',          ARRAY[]::name[]),
	('expire_status_history', ARRAY[]::name[],                                     'adstream_admin',  ARRAY[]::name[]),
	('_metric_counters',   ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	-- 0.6: the node's name is the reader's; naming the node is the admin's;
	-- what the publisher runs is the superuser's (failover)
	('node_name',          ARRAY[]::name[],                                        'public',          ARRAY[]::name[]),
	('node_name',          ARRAY[]::name[],                                        'adstream_reader', ARRAY['EXECUTE']::name[]),
	('set_node_name',      ARRAY['text']::name[],                                  'public',          ARRAY[]::name[]),
	('set_node_name',      ARRAY['text']::name[],                                  'adstream_reader', ARRAY[]::name[]),
	('set_node_name',      ARRAY['text']::name[],                                  'adstream_admin',  ARRAY['EXECUTE']::name[]),
	('_publisher_identity', ARRAY['text']::name[],                                 'adstream_admin',  ARRAY[]::name[]),
	('_version_base',      ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[]),
	('_ensure_node',       ARRAY[]::name[],                                        'adstream_admin',  ARRAY[]::name[])
  ) AS v(f, args, r, privs);

SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_proc p
	   WHERE p.pronamespace = 'adstream'::regnamespace
		 AND has_function_privilege('public', p.oid, 'EXECUTE')$$,
	'no adstream function is executable by PUBLIC');
SELECT is_empty(
	$$SELECT c.relname FROM pg_class c
	   WHERE c.relnamespace = 'adstream'::regnamespace
		 AND has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
	'no adstream relation is accessible to PUBLIC');
SELECT is_empty(
	$$SELECT c.relname FROM pg_class c
	   WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v')
		 AND (has_table_privilege('adstream_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
			  OR has_table_privilege('adstream_admin', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))$$,
	'neither role may write any adstream relation directly');

-------------------------------------------------------------------------------
-- Behaviour under each role
-------------------------------------------------------------------------------

SELECT adstream.create_source('tap_priv_src', 'k:9092', 'tap_priv_topic',
		options => '{"sasl.password": "tap-priv-secret"}');
-- A sink (create_sink refuses this transaction, which has written).
INSERT INTO adstream.sinks (name, brokers, kafka_options, done_snapshot)
VALUES ('tap_priv_sink', 'k:9092', '{"sasl.password": "tap-priv-secret"}', pg_current_snapshot());
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tap_priv_src', 'tap_priv_topic', 0, 1, '2031-01-01 00:00:00+00');

-- a role outside adstream
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT adstream.create_source('tap_x', 'k:9092', 't')$$),
	'42501', 'plain role: create_source is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT adstream.pause_source('tap_priv_src')$$),
	'42501', 'plain role: pause_source is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT adstream.resume_source('tap_priv_src')$$),
	'42501', 'plain role: resume_source is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT adstream.drop_source('tap_priv_src')$$),
	'42501', 'plain role: drop_source is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.sources$$),
	'42501', 'plain role: adstream.sources is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.offsets$$),
	'42501', 'plain role: adstream.offsets is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.rejected_events$$),
	'42501', 'plain role: adstream.rejected_events is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.source_config$$),
	'42501', 'plain role: adstream.source_config is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.ad_stats(now(), now())$$),
	'42501', 'plain role: ad_stats is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', $$SELECT * FROM adstream.attributed_orders$$),
	'42501', 'plain role: adstream.attributed_orders is denied');
-- 0.3
SELECT is(pg_temp.sqlstate_as('tap_adstream_plain', sql), '42501', 'plain role: ' || what || ' is denied')
  FROM (VALUES
	($$SELECT * FROM adstream.sink_status$$, 'adstream.sink_status'),
	($$SELECT * FROM adstream.sinks$$, 'adstream.sinks'),
	($$SELECT * FROM adstream.outbox$$, 'adstream.outbox'),
	($$SELECT adstream.create_sink('tap_x', 'k:9092')$$, 'create_sink'),
	($$SELECT adstream.pause_sink('tap_priv_sink')$$, 'pause_sink'),
	($$SELECT adstream.drop_sink('tap_priv_sink')$$, 'drop_sink')
  ) AS v(sql, what);

-- adstream_reader
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.ad_stats_minute$$),
	'00000', 'reader: may read ad_stats_minute');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.source_status$$),
	'00000', 'reader: may read source_status');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT adstream.source_watermark('tap_priv_src')$$),
	'00000', 'reader: may call source_watermark');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.validate_event('{}')$$),
	'00000', 'reader: may call validate_event');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.sources$$),
	'42501', 'reader: adstream.sources is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.source_config$$),
	'42501', 'reader: adstream.source_config is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.offsets$$),
	'42501', 'reader: adstream.offsets is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT adstream.create_source('tap_x', 'k:9092', 't')$$),
	'42501', 'reader: create_source is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT adstream.pause_source('tap_priv_src')$$),
	'42501', 'reader: pause_source is denied');
-- 0.2
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', sql), '00000', 'reader: may ' || what)
  FROM (VALUES
	($$SELECT * FROM adstream.ad_stats_hour$$, 'read ad_stats_hour'),
	($$SELECT * FROM adstream.ad_stats_6h$$, 'read ad_stats_6h'),
	($$SELECT * FROM adstream.ad_stats_day$$, 'read ad_stats_day'),
	($$SELECT * FROM adstream.attributed_orders$$, 'read attributed_orders'),
	($$SELECT * FROM adstream.ad_stats(now() - interval '1 day', now(), 'hour')$$, 'call ad_stats'),
	($$SELECT * FROM adstream.ad_stats(now() - interval '1 day', now(), 'minute')$$, 'call ad_stats by the minute'),
	($$SELECT * FROM adstream.campaign_stats(now() - interval '1 day', now(), 'day')$$, 'call campaign_stats'),
	($$SELECT adstream.bucket('6h', now())$$, 'call bucket'),
	($$SELECT adstream.record_uuid('attributed_orders', 'k')$$, 'call record_uuid'),
	($$SELECT adstream.ad_events_watermark()$$, 'call ad_events_watermark'),
	($$SELECT * FROM adstream.validate_order('{}')$$, 'call validate_order')
  ) AS v(sql, what);
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', sql), '42501', 'reader: ' || what || ' is denied')
  FROM (VALUES
	($$SELECT * FROM adstream.orders$$, 'adstream.orders'),
	($$SELECT * FROM adstream.waiting_orders$$, 'adstream.waiting_orders'),
	($$SELECT * FROM adstream.ad_events$$, 'adstream.ad_events'),
	($$SELECT * FROM adstream.rollup_pending$$, 'adstream.rollup_pending'),
	($$SELECT adstream.refresh_rollups()$$, 'refresh_rollups'),
	($$SELECT adstream.attribute_orders()$$, 'attribute_orders'),
	($$DELETE FROM adstream.attributed_orders$$, 'deleting credits'),
	-- 0.3
	($$SELECT * FROM adstream.sinks$$, 'adstream.sinks'),
	($$SELECT * FROM adstream.outbox$$, 'adstream.outbox'),
	($$SELECT adstream.create_sink('tap_x', 'k:9092')$$, 'create_sink'),
	($$SELECT adstream.pause_sink('tap_priv_sink')$$, 'pause_sink'),
	($$SELECT adstream.resume_sink('tap_priv_sink')$$, 'resume_sink'),
	($$SELECT adstream.drop_sink('tap_priv_sink')$$, 'drop_sink'),
	($$SELECT * FROM adstream._outbox_page('tap_priv_sink', 1)$$, '_outbox_page')
  ) AS v(sql, what);
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.sink_status$$),
	'00000', 'reader: may read sink_status');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.maintenance_status$$),
	'00000', 'reader: may read maintenance_status');
SELECT is(pg_temp.sqlstate_as('tap_adstream_reader', $$SELECT * FROM adstream.publisher_status()$$),
	'00000', 'reader: may call publisher_status');

-- adstream_admin
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT adstream.create_source('tap_admin_src', 'k:9092', 't')$$),
	'00000', 'admin: may create a source');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT adstream.pause_source('tap_admin_src')$$),
	'00000', 'admin: may pause a source');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT adstream.resume_source('tap_admin_src')$$),
	'00000', 'admin: may resume a source');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT adstream.drop_source('tap_admin_src')$$),
	'00000', 'admin: may drop a source');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT * FROM adstream.source_config$$),
	'00000', 'admin: may read source_config');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin',
		$$DO 'BEGIN IF EXISTS (SELECT 1 FROM adstream.source_config c WHERE c::text LIKE ''%tap-priv-secret%'') THEN RAISE EXCEPTION ''secret visible''; END IF; END'$$),
	'00000', 'admin: source_config does not reveal the password');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT * FROM adstream.source_status$$),
	'00000', 'admin: may read source_status');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT * FROM adstream.offsets$$),
	'00000', 'admin: may read offsets');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT * FROM adstream.rejected_events$$),
	'00000', 'admin: may read rejected_events');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT * FROM adstream.sources$$),
	'42501', 'admin: adstream.sources (credentials) is denied');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$UPDATE adstream.offsets SET next_offset = 0$$),
	'42501', 'admin: may not rewrite offsets');
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin',
		$$SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2031-01-01 00:00:00+00']::timestamptz[])$$),
	'42501', 'admin: ensure_partitions is for the workers only');
-- 0.2
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', sql), '00000', 'admin: may ' || what)
  FROM (VALUES
	($$SELECT * FROM adstream.orders$$, 'read orders'),
	($$SELECT * FROM adstream.waiting_orders$$, 'read waiting_orders'),
	($$SELECT * FROM adstream.ad_events$$, 'read ad_events'),
	($$SELECT * FROM adstream.attributed_orders$$, 'read attributed_orders'),
	($$SELECT * FROM adstream.campaign_stats(now() - interval '1 day', now())$$, 'call campaign_stats'),
	($$SELECT adstream.create_source('tap_admin_shop', 'k:9092', 'orders', 'orders')$$, 'create an orders source'),
	($$SELECT adstream.drop_source('tap_admin_shop')$$, 'drop an orders source')
  ) AS v(sql, what);
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', sql), '42501', 'admin: ' || what || ' is denied')
  FROM (VALUES
	($$SELECT * FROM adstream.rollup_pending$$, 'adstream.rollup_pending'),
	($$UPDATE adstream.orders SET status = 'waiting'$$, 'rewriting orders'),
	($$SELECT adstream.attribute_orders()$$, 'attribute_orders'),
	($$SELECT adstream.refresh_rollups()$$, 'refresh_rollups'),
	($$SELECT adstream.create_partitions_ahead()$$, 'create_partitions_ahead'),
	($$SELECT adstream.drop_expired_partitions()$$, 'drop_expired_partitions'),
	($$SELECT adstream.schedule_maintenance()$$, 'schedule_maintenance'),
	($$SELECT adstream.unschedule_maintenance()$$, 'unschedule_maintenance'),
	($$SELECT adstream.run_maintenance('adstream_rollups')$$, 'run_maintenance'),
	-- 0.3: the credentials, the outbox and what the publisher runs
	($$SELECT * FROM adstream.sinks$$, 'adstream.sinks (credentials)'),
	($$SELECT * FROM adstream.outbox$$, 'adstream.outbox'),
	($$UPDATE adstream.sinks SET last_id = 0$$, 'moving a cursor'),
	($$DELETE FROM adstream.outbox$$, 'deleting from the outbox'),
	($$SELECT * FROM adstream._outbox_page('tap_priv_sink', 1)$$, '_outbox_page'),
	($$SELECT adstream._sink_advance('tap_priv_sink', 0, 0, 0, true)$$, '_sink_advance'),
	($$SELECT adstream._sink_aborted('tap_priv_sink')$$, '_sink_aborted'),
	($$SELECT adstream.prune_outbox()$$, 'prune_outbox'),
	($$SELECT adstream._publishing()$$, '_publishing')
  ) AS v(sql, what);
-- 0.3: manages sinks and sees their status, without the credentials
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', sql), '00000', 'admin: may ' || what)
  FROM (VALUES
	($$SELECT * FROM adstream.sink_status$$, 'read sink_status'),
	($$SELECT adstream.pause_sink('tap_priv_sink')$$, 'pause a sink'),
	($$SELECT adstream.resume_sink('tap_priv_sink')$$, 'resume a sink'),
	($$DO 'BEGIN IF EXISTS (SELECT 1 FROM adstream.sink_status s WHERE s::text LIKE ''%tap-priv-secret%'') THEN RAISE EXCEPTION ''secret visible''; END IF; END'$$,
	 'read sink_status without seeing the password')
  ) AS v(sql, what);
-- create_sink passes the privilege check and reaches its own rule (this
-- transaction has written)
SELECT is(pg_temp.sqlstate_as('tap_adstream_admin', $$SELECT adstream.create_sink('tap_admin_sink', 'k:9092')$$),
	'25001', 'admin: may call create_sink');
-- librdkafka properties that run commands or load code in the server
SELECT ok(pg_temp.sqlstate_as_login('tap_adstream_admin',
		$$SELECT adstream.create_source('tap_evil', 'k:9092', 't', options => '{"sasl.kerberos.kinit.cmd": "/bin/true"}')$$)
		IN ('22023', '42501'),
	'admin: sasl.kerberos.kinit.cmd is refused');
SELECT ok(pg_temp.sqlstate_as_login('tap_adstream_admin',
		$$SELECT adstream.create_source('tap_evil', 'k:9092', 't', options => '{"ssl.engine.location": "/nonexistent/engine.so"}')$$)
		IN ('22023', '42501'),
	'admin: ssl.engine.location is refused');
SELECT is(pg_temp.sqlstate_as_login('tap_adstream_admin',
		$$SELECT adstream.create_sink('tap_evil', 'k:9092', '{"sasl.kerberos.kinit.cmd": "/bin/true"}')$$),
	'42501', 'admin: sasl.kerberos.kinit.cmd is refused for a sink');
SELECT is(pg_temp.sqlstate_as_login('tap_adstream_admin',
		$$SELECT adstream.create_sink('tap_evil', 'k:9092', '{"plugin.library.paths": "/nonexistent/plugin.so"}')$$),
	'42501', 'admin: plugin.library.paths is refused for a sink');
SELECT lives_ok($$SELECT adstream.drop_sink('tap_priv_sink')$$, 'the superuser drops the sink');

SELECT is(current_user, session_user, 'back to the session user after the role checks');

SELECT * FROM finish();
ROLLBACK;
