/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Every failure visible in SQL (issue #14, section 2, and the metrics of
-- section 3): the shared-memory status functions gain columns (connection,
-- staleness, wall-time lag), source_status and sink_status say the truth
-- (states, connection, lag in seconds, restarts), the history of states and
-- errors with its retention, and the metrics for Prometheus.
-------------------------------------------------------------------------------

DROP VIEW adstream.source_status;
DROP VIEW adstream.sink_status;
DROP FUNCTION adstream.worker_status();
DROP FUNCTION adstream.publisher_status();

CREATE FUNCTION adstream.worker_status(
	OUT source_id integer, OUT worker_index integer, OUT pid integer,
	OUT state text, OUT started_at timestamptz, OUT last_commit_at timestamptz,
	OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer,
	OUT connected boolean, OUT connected_since timestamptz, OUT errors_total bigint,
	OUT topic_partitions integer, OUT positions_at timestamptz)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 8		-- not 1000: source_status would cost enough to be JIT-compiled (a second per query)
AS 'MODULE_PATHNAME', 'adstream_worker_status';
COMMENT ON FUNCTION adstream.worker_status() IS
	'One row per running or restarting consumer worker, from shared memory: state, current error (cleared on recovery), restarts, whether the broker answers and since when, errors since the slot was assigned, the topic''s partition count and when the broker''s ends were last known current';

CREATE FUNCTION adstream.partition_lag(
	OUT source_id integer, OUT partition integer, OUT pid integer,
	OUT high_watermark bigint, OUT read_position bigint,
	OUT last_high_watermark bigint, OUT positions_at timestamptz, OUT stale boolean,
	OUT pending_since timestamptz)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 64		-- as worker_status
AS 'MODULE_PATHNAME', 'adstream_partition_status';
COMMENT ON FUNCTION adstream.partition_lag() IS
	'partition_status() and what source_status''s lag needs: the last high watermark seen however old, since when it is known current, whether it is stale (reported more than 5 s ago, or the broker not answering), and since when the oldest message not committed has waited at most (NULL: caught up, or not known yet)';

CREATE FUNCTION adstream.publisher_status(
	OUT sink_id integer, OUT pid integer, OUT state text, OUT started_at timestamptz,
	OUT last_commit_at timestamptz, OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer,
	OUT connected boolean, OUT connected_since timestamptz, OUT errors_total bigint)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 4		-- as worker_status
AS 'MODULE_PATHNAME', 'adstream_publisher_status';
COMMENT ON FUNCTION adstream.publisher_status() IS
	'One row per running or restarting publisher worker, from shared memory: state, current error (cleared on recovery), restarts, whether the broker answers and since when, errors since the slot was assigned';

/*
 * Status history (issue #14): one row per change of a worker's state, of
 * its connection to the broker or of its current error, as cron.job_run_details
 * keeps pg_cron's runs.  Written by the launcher (src/status.c), in short
 * transactions of its own, on changes only; never by a batch.  Trimmed to
 * adstream.status_history_retention by the retention job.
 */
CREATE TABLE adstream.status_history (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at			timestamptz NOT NULL DEFAULT now(),
	kind		text NOT NULL,		-- 'source' or 'sink'
	object_id	integer NOT NULL,	-- sources.id or sinks.id
	name		text NOT NULL,		-- its name at the time
	worker		integer,			-- a consumer's index (as worker_status), NULL for a sink
	state		text NOT NULL,		-- the worker's state from then on
	connected	boolean,			-- whether the broker answered; NULL not known yet
	error		text,				-- the current error from then on; NULL: none (cleared)
	error_at	timestamptz,
	restarts	integer NOT NULL DEFAULT 0,	-- unexpected exits of the worker so far
	CHECK (kind IN ('source', 'sink'))
);
CREATE INDEX ON adstream.status_history (kind, name, at);
CREATE INDEX ON adstream.status_history (at);
COMMENT ON TABLE adstream.status_history IS
	'Every change of a source''s or sink''s workers: state, connection to the broker, current error (NULL once cleared), restarts; kept for adstream.status_history_retention';
SELECT pg_catalog.pg_extension_config_dump('adstream.status_history', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.status_history_id_seq', '');

/* Errors and restarts per source and sink, counted by the launcher (status.c). */
CREATE TABLE adstream.status_counters (
	kind		text NOT NULL,
	object_id	integer NOT NULL,
	name		text NOT NULL,
	errors		bigint NOT NULL DEFAULT 0,
	restarts	bigint NOT NULL DEFAULT 0,
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (kind, object_id),
	CHECK (kind IN ('source', 'sink'))
);
COMMENT ON TABLE adstream.status_counters IS
	'Errors and unexpected worker exits per source and sink since it was created (adstream.metrics)';
SELECT pg_catalog.pg_extension_config_dump('adstream.status_counters', '');

/* Where adstream.reset_metrics() set each counter back to zero. */
CREATE TABLE adstream.metrics_reset (
	kind		text NOT NULL,
	object_id	integer NOT NULL,
	stats_reset	timestamptz NOT NULL DEFAULT now(),
	baseline	jsonb NOT NULL,		-- each counter's raw value at the reset
	PRIMARY KEY (kind, object_id),
	CHECK (kind IN ('source', 'sink'))
);
COMMENT ON TABLE adstream.metrics_reset IS
	'The counters'' values at the last adstream.reset_metrics(), per source and sink';
SELECT pg_catalog.pg_extension_config_dump('adstream.metrics_reset', '');

/* Deletes history older than adstream.status_history_retention (the retention job calls it). */
CREATE FUNCTION adstream.expire_status_history()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_deleted	bigint;
BEGIN
	DELETE FROM adstream.status_history
	 WHERE at < now() - coalesce(current_setting('adstream.status_history_retention', true), '30d')::interval;
	GET DIAGNOSTICS v_deleted = ROW_COUNT;
	-- the counters of sources and sinks that no longer exist
	DELETE FROM adstream.status_counters c
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s WHERE c.kind = 'source' AND s.id = c.object_id)
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks s WHERE c.kind = 'sink' AND s.id = c.object_id);
	DELETE FROM adstream.metrics_reset r
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s WHERE r.kind = 'source' AND s.id = r.object_id)
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks s WHERE r.kind = 'sink' AND s.id = r.object_id);
	RETURN v_deleted;
END
$$;
COMMENT ON FUNCTION adstream.expire_status_history() IS
	'Deletes adstream.status_history rows older than adstream.status_history_retention, and the counters of sources and sinks that no longer exist; returns how many history rows';

CREATE OR REPLACE FUNCTION adstream.drop_expired_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
SET timezone = 'UTC'		-- windows, horizon and retention: their days are 24 hours
AS $$
DECLARE
	v_window	interval := greatest(current_setting('adstream.attribution_window')::interval,
									 current_setting('adstream.view_through_window')::interval);
	v_events	timestamptz;
	v_dropped	integer;
BEGIN
	v_dropped := adstream.expire_dedup_state();

	v_events := least(adstream.ad_events_watermark(),
					  (SELECT min(ts) FROM adstream.orders WHERE status = 'waiting'))
				- v_window - current_setting('adstream.dedup_horizon')::interval;
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_events', v_events);

	PERFORM adstream.refresh_rollups();
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_stats_minute',
		now() - current_setting('adstream.minute_retention')::interval);
	PERFORM adstream.expire_rejected_events();
	PERFORM adstream.expire_status_history();
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.drop_expired_partitions() IS
	'Drops expired partitions of dedup_log, ad_events and ad_stats_minute (returns how many), dead letters older than adstream.rejected_retention and status history older than adstream.status_history_retention';

CREATE VIEW adstream.source_status AS
WITH parts AS (
	SELECT s.id, o.partition FROM adstream.sources s
	  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
	UNION
	SELECT s.id, p.partition FROM adstream.sources s
	  JOIN adstream.partition_lag() p ON p.source_id = s.id
	UNION
	-- every partition of the topic that a worker of the source has seen,
	-- also those whose own worker does not run (issue #14)
	SELECT t.source_id, g.partition
	  FROM (SELECT ws.source_id, max(ws.topic_partitions) AS n FROM adstream.worker_status() ws GROUP BY 1) t
	 CROSS JOIN LATERAL generate_series(0, t.n - 1) AS g(partition)
)
SELECT s.name AS source,
	   s.topic,
	   CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS source_state,
	   pt.partition,
	   coalesce(ps.pid, w.pid) AS worker_pid,
	   coalesce(w.state, CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   o.next_offset,
	   ps.last_high_watermark AS high_watermark,
	   l.lag,
	   coalesce(o.accepted, 0) AS accepted,
	   coalesce(o.duplicates, 0) AS duplicates,
	   coalesce(o.rejected, 0) AS rejected,
	   o.max_event_ts AS partition_watermark,
	   adstream.source_watermark(s.name) AS source_watermark,
	   o.updated_at AS last_commit_at,
	   coalesce(w.last_error, CASE WHEN h.held THEN 'restored from another installation: no worker runs until adstream.adopt_restored() is called, once the restore is complete and the original has stopped' END) AS last_error,
	   w.last_error_at,
	   (SELECT count(*) FROM adstream.offset_gaps g
		 WHERE g.source = s.name AND g.topic = s.topic AND g.partition = pt.partition) AS offset_gaps,
	   s.dedup_expired_before,
	   mw.warning,
	   mw.hint AS warning_hint,
	   -- issue #14: whether the broker answers the partition's worker, lag in
	   -- seconds of wall time (how long the oldest message not committed has
	   -- waited at most) and of event time (how far the partition's
	   -- watermark is behind the clock while messages wait), and whether the
	   -- lag figures are stale (no worker reports the partition, its report
	   -- is older than 5 s, or the broker does not answer) as of positions_at
	   w.connected,
	   CASE WHEN l.lag = 0 THEN 0
			WHEN l.lag > 0 AND ps.pending_since IS NOT NULL
			THEN greatest(extract(epoch FROM now() - ps.pending_since), 0)::double precision END AS lag_seconds,
	   CASE WHEN l.lag = 0 THEN 0
			WHEN l.lag > 0 AND o.max_event_ts IS NOT NULL
			THEN greatest(extract(epoch FROM now() - o.max_event_ts), 0)::double precision END AS event_lag_seconds,
	   (ps.pid IS NULL OR ps.stale OR l.lag IS NULL OR (l.lag > 0 AND ps.pending_since IS NULL)) AS lag_stale,
	   ps.positions_at,
	   coalesce(w.restarts, 0) AS restarts
  FROM adstream.sources s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  -- a dedup index close to full, overdue maintenance (issue #15): once per query
  CROSS JOIN adstream._maintenance_warning() mw
  LEFT JOIN parts pt ON pt.id = s.id
  LEFT JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic AND o.partition = pt.partition
  LEFT JOIN adstream.partition_lag() ps ON ps.source_id = s.id AND ps.partition = pt.partition
  LEFT JOIN LATERAL (
	SELECT ws.pid, ws.state, ws.last_error, ws.last_error_at, ws.connected, ws.restarts
	  FROM adstream.worker_status() ws
	 WHERE ws.source_id = s.id
	   AND (pt.partition IS NULL OR ws.worker_index = pt.partition % s.workers)
	 ORDER BY ws.worker_index LIMIT 1) w ON true
  CROSS JOIN LATERAL (
	SELECT CASE WHEN ps.last_high_watermark IS NOT NULL
				THEN greatest(ps.last_high_watermark - coalesce(o.next_offset, 0), 0) END AS lag) l;
COMMENT ON VIEW adstream.source_status IS
	'One row per source and partition: worker and its state, whether the broker answers, offsets, lag in messages, wall-time and event-time seconds with a staleness flag, counts, watermark, the current error (cleared on recovery; never credentials), restarts, offset gaps recorded, up to where the source''s dedup state is given up, and a warning with its hint while the dedup index is 80% full or maintenance is overdue';

CREATE VIEW adstream.sink_status AS
SELECT s.name AS sink,
	   CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS sink_state,
	   w.pid AS worker_pid,
	   coalesce(w.state, CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   s.done_snapshot::text AS cursor_snapshot,
	   s.last_id AS cursor_last_id,
	   b.rows AS backlog_rows,
	   b.bytes AS backlog_bytes,
	   s.records_published,
	   s.txns_committed,
	   s.txns_aborted,
	   s.last_publish_at,
	   coalesce(w.last_error, CASE WHEN h.held THEN 'restored from another installation: no worker runs until adstream.adopt_restored() is called, once the restore is complete and the original has stopped' END) AS last_error,
	   w.last_error_at,
	   -- issue #14: whether the broker answers, restarts of the publisher
	   w.connected,
	   coalesce(w.restarts, 0) AS restarts
  FROM adstream.sinks s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  LEFT JOIN LATERAL (
	-- a held sink's cursor is the original cluster's: once adopted, it
	-- sends every row of the outbox
	SELECT count(*) AS rows, coalesce(sum(pg_column_size(o.*)), 0) AS bytes
	  FROM adstream.outbox o
	 WHERE h.held
		OR (o.txid >= pg_snapshot_xmin(s.done_snapshot)
			AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
			AND (s.target_snapshot IS NULL OR o.id > s.last_id
				 OR NOT pg_visible_in_snapshot(o.txid, s.target_snapshot)))) b ON true
  LEFT JOIN adstream.publisher_status() w ON w.sink_id = s.id;
COMMENT ON VIEW adstream.sink_status IS
	'One row per sink: worker and its state, whether the broker answers, cursor, backlog, Kafka transactions committed and aborted, the current error (cleared on recovery), restarts';

REVOKE ALL ON FUNCTION adstream.worker_status(), adstream.publisher_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.worker_status(), adstream.publisher_status() TO adstream_reader;
REVOKE ALL ON adstream.source_status, adstream.sink_status FROM PUBLIC;
GRANT SELECT ON adstream.source_status, adstream.sink_status TO adstream_reader;

/*
 * Metrics (issue #14), shaped for Prometheus: one row per metric, source
 * or sink, with stable names.  Counters (*_total) count since the source or
 * sink was created, or since adstream.reset_metrics() (stats_reset); the
 * rest are gauges of now.  docs/postgres_exporter.yml turns them into
 * series for postgres_exporter.
 */
CREATE FUNCTION adstream._metric_counters(OUT kind text, OUT object_id integer, OUT name text,
	OUT created_at timestamptz, OUT counters jsonb)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT 'source', s.id, s.name, s.created_at,
	   jsonb_build_object(
		'messages_accepted_total', coalesce(o.accepted, 0),
		'messages_duplicate_total', coalesce(o.duplicates, 0),
		'messages_rejected_total', coalesce(o.rejected, 0),
		'offset_gaps_total', (SELECT count(*) FROM adstream.offset_gaps g WHERE g.source = s.name),
		'errors_total', coalesce(c.errors, 0),
		'restarts_total', coalesce(c.restarts, 0))
  FROM adstream.sources s
  LEFT JOIN LATERAL (SELECT sum(accepted) AS accepted, sum(duplicates) AS duplicates, sum(rejected) AS rejected
					   FROM adstream.offsets WHERE source = s.name) o ON true
  LEFT JOIN adstream.status_counters c ON c.kind = 'source' AND c.object_id = s.id
UNION ALL
SELECT 'sink', k.id, k.name, k.created_at,
	   jsonb_build_object(
		'records_published_total', k.records_published,
		'transactions_committed_total', k.txns_committed,
		'transactions_aborted_total', k.txns_aborted,
		'errors_total', coalesce(c.errors, 0),
		'restarts_total', coalesce(c.restarts, 0))
  FROM adstream.sinks k
  LEFT JOIN adstream.status_counters c ON c.kind = 'sink' AND c.object_id = k.id
$$;

CREATE FUNCTION adstream._metrics(OUT metric text, OUT kind text, OUT name text,
	OUT value double precision, OUT stats_reset timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off		-- scraped every few seconds: compiling costs more than it saves
AS $$
WITH c AS (
	SELECT m.kind, m.name, coalesce(r.stats_reset, m.created_at) AS stats_reset, m.counters,
		   coalesce(r.baseline, '{}') AS baseline
	  FROM adstream._metric_counters() m
	  LEFT JOIN adstream.metrics_reset r ON r.kind = m.kind AND r.object_id = m.object_id),
src AS (
	SELECT st.source AS name,
		   jsonb_build_object(
			'lag_messages', sum(st.lag),
			'lag_seconds', max(st.lag_seconds),
			'event_lag_seconds', max(st.event_lag_seconds),
			'lag_stale', bool_or(st.lag_stale)::int,
			'connected', coalesce(bool_and(st.connected) FILTER (WHERE st.worker_pid IS NOT NULL), false)::int,
			'workers_running', count(DISTINCT st.worker_pid),
			'partitions', count(st.partition),
			'enabled', bool_and(st.source_state = 'enabled')::int) AS gauges
	  FROM adstream.source_status st GROUP BY st.source),
snk AS (
	SELECT st.sink AS name,
		   jsonb_build_object(
			'backlog_rows', st.backlog_rows,
			'backlog_bytes', st.backlog_bytes,
			'connected', coalesce(st.connected, false)::int,
			'workers_running', (st.worker_pid IS NOT NULL)::int,
			'enabled', (st.sink_state = 'enabled')::int) AS gauges
	  FROM adstream.sink_status st)
SELECT e.key, c.kind, c.name,
	   e.value::text::double precision - coalesce((c.baseline ->> e.key)::double precision, 0), c.stats_reset
  FROM c CROSS JOIN LATERAL jsonb_each(c.counters) e
UNION ALL
SELECT e.key, 'source', src.name, e.value::text::double precision, c.stats_reset
  FROM src JOIN c ON c.kind = 'source' AND c.name = src.name
 CROSS JOIN LATERAL jsonb_each(src.gauges) e WHERE e.value <> 'null'
UNION ALL
SELECT e.key, 'sink', snk.name, e.value::text::double precision, c.stats_reset
  FROM snk JOIN c ON c.kind = 'sink' AND c.name = snk.name
 CROSS JOIN LATERAL jsonb_each(snk.gauges) e WHERE e.value <> 'null'
$$;

CREATE VIEW adstream.metrics AS
SELECT metric, kind, name, value, stats_reset FROM adstream._metrics();
COMMENT ON VIEW adstream.metrics IS
	'One row per metric and source or sink, for Prometheus (docs/postgres_exporter.yml): counters (*_total) since stats_reset, gauges of now; stable names';

CREATE FUNCTION adstream.reset_metrics(name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_n		integer;
BEGIN
	INSERT INTO adstream.metrics_reset AS r (kind, object_id, stats_reset, baseline)
	SELECT m.kind, m.object_id, now(), m.counters
	  FROM adstream._metric_counters() m
	 WHERE reset_metrics.name IS NULL OR m.name = reset_metrics.name
	ON CONFLICT (kind, object_id) DO UPDATE SET stats_reset = excluded.stats_reset, baseline = excluded.baseline;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n = 0 AND reset_metrics.name IS NOT NULL THEN
		RAISE EXCEPTION 'adstream: no source or sink named "%"', reset_metrics.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.source_status and adstream.sink_status.';
	END IF;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION adstream.reset_metrics(text) IS
	'Sets the counters of adstream.metrics back to zero (all, or those of one source or sink) and their stats_reset to now; returns how many sources and sinks';

REVOKE ALL ON adstream.status_history, adstream.status_counters, adstream.metrics_reset, adstream.metrics FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream.expire_status_history(), adstream._metric_counters(), adstream._metrics(),
	adstream.reset_metrics(text), adstream.partition_lag() FROM PUBLIC;
-- status: the readers see the history and the metrics; resetting them is management
GRANT SELECT ON adstream.status_history, adstream.metrics TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream._metrics(), adstream.partition_lag() TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.reset_metrics(text) TO adstream_admin;
