--
-- rewind_source and rewind_status (issue #14, section 4) without a broker:
-- every refusal leaves the source as it was; a recount to offsets moves the
-- stored offsets, starts the partitions' watermarks over, records the
-- rewind and restarts the workers (a new generation).  The replay itself
-- is tested against a broker in test/t/230_rewind.pl.
--
\set SHOW_CONTEXT never
SET client_min_messages = error;	-- not the "workers run elsewhere" warning

SELECT adstream.create_source('rw', 'k1:9092', 'rw-topic') AS rw_id \gset
SELECT adstream.create_source('rw_orders', 'k1:9092', 'rw-orders', 'orders') IS NOT NULL AS orders_source;
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted)
VALUES ('rw', 'rw-topic', 0, 100, '2026-01-01 10:30+00', 90), ('rw', 'rw-topic', 1, 50, '2026-01-01 10:40+00', 50),
	   ('rw', 'rw-topic', 2, 70, '2026-01-01 10:20+00', 70);
-- A window of whole hours two hours ago, and a count in it.
SELECT date_bin('1 hour', now(), timestamptz '1970-01-01 00:00+00') - interval '2 hours' AS w0,
	   date_bin('1 hour', now(), timestamptz '1970-01-01 00:00+00') - interval '1 hour' AS w1 \gset
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY[:'w0'::timestamptz]) IS NOT NULL AS ensured;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks, source_id)
VALUES (1, 1, :'w0'::timestamptz + interval '5 minutes', 5, 1, :rw_id);
SELECT generation AS gen0 FROM adstream.sources WHERE name = 'rw' \gset
CREATE TEMP VIEW rw_state AS
SELECT string_agg(partition || ':' || next_offset || ':' || coalesce(max_event_ts::text, 'null'), ' ' ORDER BY partition) AS offsets,
	   (SELECT count(*) FROM adstream.rewinds) AS rewinds,
	   (SELECT generation <> :gen0 FROM adstream.sources WHERE name = 'rw') AS restarted,
	   (SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute WHERE source_id = :rw_id) AS counted
  FROM adstream.offsets WHERE source = 'rw';
SET timezone = 'UTC';

-------------------------------------------------------------------------------
-- Refused: nothing changes
-------------------------------------------------------------------------------

SELECT adstream.rewind_source('nope', to_time => now());
SELECT adstream.rewind_source('rw');
SELECT adstream.rewind_source('rw', to_time => now(), to_offsets => '{"0": 1}');
SELECT adstream.rewind_source('rw', to_offsets => '[0]');
SELECT adstream.rewind_source('rw', to_offsets => '{}');
SELECT adstream.rewind_source('rw', to_offsets => '{"x": 1}');
SELECT adstream.rewind_source('rw', to_offsets => '{"0": -5}');
SELECT adstream.rewind_source('rw', to_offsets => '{"0": "5"}');
SELECT adstream.rewind_source('rw', to_offsets => '{"0": 5}', partitions => '{0}');
SELECT adstream.rewind_source('rw', to_offsets => '{"0": 101}');		-- forward
SELECT adstream.rewind_source('rw', to_offsets => '{"0": 5, "7": 0}');	-- unknown partition
SELECT adstream.rewind_source('rw', to_time => now(), mode => 'again');
SELECT adstream.rewind_source('rw', to_offsets => '{"0": 5}', window_end => now());
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0');
\set VERBOSITY terse
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0'::timestamptz + interval '30 minutes', window_end => :'w1');
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w1', window_end => :'w0');
\set VERBOSITY default
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w1'::timestamptz + interval '1 day', window_end => :'w1'::timestamptz + interval '2 days');
\set VERBOSITY terse
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => '2026-01-01 10:00+00', window_end => '2026-01-01 11:00+00');	-- past retention
\set VERBOSITY default
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0', window_end => :'w1',
	partitions => '{0}');
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0', window_end => :'w1',
	lookback => '-1 minute');
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0', window_end => :'w1',
	to_offsets => '{"0": 0}');											-- not every partition
SELECT adstream.rewind_source('rw_orders', mode => 'replace', to_time => :'w0', window_end => :'w1');
SELECT adstream.rewind_source('rw_orders', to_offsets => '{"0": 0}');	-- no stored offset yet
-- The dedup index of this database is not ready (no worker runs here): a
-- replace cannot forget the window's ids, and rolls back what it removed.
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0', window_end => :'w1',
	to_offsets => '{"0": 0, "1": 0, "2": 0}');
SELECT * FROM rw_state;

-------------------------------------------------------------------------------
-- A recount to offsets
-------------------------------------------------------------------------------

SELECT adstream.rewind_source('rw', to_offsets => '{"0": 40, "2": 70}') AS rewind_id \gset
SELECT * FROM rw_state;
SELECT rewind_id = :rewind_id AS same_id, source, partition, mode, to_time, window_from, from_offset, to_offset, position,
	   replaying, remaining, replayed, accepted, duplicates, rejected, skipped, finished_at IS NOT NULL AS finished
  FROM adstream.rewind_status ORDER BY partition;
-- partition 0 replays until a batch passes offset 100: a second rewind of it waits
SELECT adstream.rewind_source('rw', to_offsets => '{"0": 10}');
-- another partition may be rewound meanwhile
SELECT adstream.rewind_source('rw', to_offsets => '{"1": 0}') > :rewind_id AS second_rewind;
-- nothing to replay: finished at once
SELECT adstream.rewind_source('rw', to_offsets => '{"2": 70}') > :rewind_id AS third_rewind;
SELECT partition, replaying, remaining, rewind_finished_at IS NOT NULL AS rewind_finished
  FROM adstream.rewind_status ORDER BY rewind_id, partition;
-- and a replace waits for every partition
SELECT adstream.rewind_source('rw', mode => 'replace', to_time => :'w0', window_end => :'w1',
	to_offsets => '{"0": 0, "1": 0, "2": 0}');

-------------------------------------------------------------------------------
-- Who may rewind
-------------------------------------------------------------------------------

CREATE ROLE rw_reader IN ROLE adstream_reader;
CREATE ROLE rw_admin IN ROLE adstream_admin;
SET ROLE rw_reader;
SELECT adstream.rewind_source('rw', to_offsets => '{"2": 0}');
SELECT count(*) FROM adstream.rewind_status;
SET ROLE rw_admin;
SELECT count(*) AS admin_sees FROM adstream.rewind_status;
RESET ROLE;
DROP ROLE rw_reader;
DROP ROLE rw_admin;

-- Dropping the source drops its rewinds.
SELECT adstream.drop_source('rw');
SELECT count(*) AS rewinds_left FROM adstream.rewinds;
SELECT adstream.drop_source('rw_orders');
