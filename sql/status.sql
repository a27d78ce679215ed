--
-- status: the shape of what says whether sources and sinks work (issue #14):
-- source_status and sink_status (state, connection, lag in messages and
-- seconds with its staleness flag, current error, restarts), the history of
-- their changes with its retention, and the metrics for Prometheus with
-- their reset.
--
-- No worker runs in this database (test/regress.conf): a source is
-- 'starting' with its lag flagged stale, and the history is written here by
-- hand, as the launcher writes it (src/status.c).
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- The columns, in order: a monitoring query written against them keeps working.
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a WHERE a.attrelid = 'adstream.source_status'::regclass AND a.attnum > 0 ORDER BY 1;
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a WHERE a.attrelid = 'adstream.sink_status'::regclass AND a.attnum > 0 ORDER BY 1;
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a WHERE a.attrelid = 'adstream.status_history'::regclass AND a.attnum > 0 ORDER BY 1;
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a WHERE a.attrelid = 'adstream.metrics'::regclass AND a.attnum > 0 ORDER BY 1;

SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('st_src', 'k:9092', 'st-topic', options => '{"workers": 2}');
SELECT adstream.create_sink('st_sink', 'k:9092');
RESET client_min_messages;

-- Without a worker: no lag is known, and the flag says so.
SELECT source, partition, worker_state, connected, lag, lag_seconds, event_lag_seconds, lag_stale, restarts, last_error
  FROM adstream.source_status WHERE source = 'st_src';
SELECT sink, worker_state, connected, restarts, last_error FROM adstream.sink_status WHERE sink = 'st_sink';

-- Stored offsets, as batches leave them: the counts are counters; the lag of a
-- partition nobody reports is unknown, and flagged.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected)
VALUES ('st_src', 'st-topic', 0, 100, '2025-01-15 12:00:00+00', 90, 7, 3),
	   ('st_src', 'st-topic', 1, 50, '2025-01-15 12:00:00+00', 50, 0, 0);
SELECT source, partition, worker_state, next_offset, lag, lag_seconds, lag_stale, positions_at
  FROM adstream.source_status WHERE source = 'st_src' ORDER BY partition;

-- The metrics: stable names, one row per source or sink and metric.
SELECT metric, kind, name, value, stats_reset IS NOT NULL AS has_stats_reset
  FROM adstream.metrics WHERE name IN ('st_src', 'st_sink') ORDER BY kind, name, metric;

-- The launcher's counters, and a reset: counters start again from zero.
INSERT INTO adstream.status_counters (kind, object_id, name, errors, restarts)
SELECT 'source', id, name, 4, 2 FROM adstream.sources WHERE name = 'st_src';
SELECT metric, value FROM adstream.metrics
 WHERE name = 'st_src' AND metric IN ('errors_total', 'restarts_total', 'messages_accepted_total') ORDER BY 1;
SELECT adstream.reset_metrics('st_src') AS reset;
UPDATE adstream.offsets SET accepted = accepted + 5 WHERE source = 'st_src' AND partition = 0;
UPDATE adstream.status_counters SET errors = errors + 1 WHERE name = 'st_src';
SELECT metric, value, stats_reset > now() - interval '1 minute' AS reset_now FROM adstream.metrics
 WHERE name = 'st_src' AND metric LIKE '%\_total' ORDER BY 1;
-- the sink's were not reset
SELECT DISTINCT stats_reset = (SELECT created_at FROM adstream.sinks WHERE name = 'st_sink') AS since_created
  FROM adstream.metrics WHERE name = 'st_sink';
SELECT adstream.reset_metrics('nope');
SELECT adstream.reset_metrics() AS reset_all;

-- History: retention deletes rows older than adstream.status_history_retention (30 days).
INSERT INTO adstream.status_history (at, kind, object_id, name, worker, state, connected, error, error_at)
SELECT now() - d, 'source', id, name, 0, 'disconnected', false, 'all brokers down', now() - d
  FROM adstream.sources, (VALUES (interval '40 days'), (interval '1 day')) v(d) WHERE name = 'st_src';
SELECT adstream.expire_status_history() AS deleted;
SELECT kind, name, worker, state, connected, error, at > now() - interval '2 days' AS recent
  FROM adstream.status_history WHERE name = 'st_src';

-- Who reads what: readers see status, history and metrics, and cannot reset.
SET ROLE adstream_reader;
SELECT count(*) > 0 AS reader_sees_metrics FROM adstream.metrics;
SELECT count(*) AS reader_sees_history FROM adstream.status_history WHERE name = 'st_src';
SELECT count(*) > 0 AS reader_sees_lag FROM adstream.source_status WHERE lag_stale;
SELECT adstream.reset_metrics();
RESET ROLE;

-- Dropping a source forgets its counters at the next retention run.
SET client_min_messages = error;
SELECT adstream.drop_source('st_src');
SELECT adstream.drop_sink('st_sink');
RESET client_min_messages;
SELECT adstream.expire_status_history() >= 0 AS expired;
SELECT count(*) AS counters_left FROM adstream.status_counters WHERE name IN ('st_src', 'st_sink');
SELECT count(*) AS resets_left FROM adstream.metrics_reset;
