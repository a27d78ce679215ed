--
-- source_counts: every count in ad_stats_minute names the source that
-- counted it, so that dropping a mistaken source can remove its
-- contribution exactly (issue #11, case 6).
--
-- Three sources on three topics count into the same ads and minutes (rows
-- written here as a batch writes them: its source's id, the minutes queued
-- for the rollups, a sink's outbox filled by create_sink).  sc_wrong is
-- dropped with forget_counts: ad_stats_minute, ad_stats() at every
-- granularity after refresh_rollups, and the values a sink publishes then
-- equal what the others counted.  sc_kept is dropped without it: its counts
-- stay.  Only ads 9001-9003 are looked at; earlier tests may leave others.
--
-- No publisher worker runs in this database (test/regress.conf); the page a
-- publisher would send is read with _outbox_page, as in publish.sql.
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('sc_right', 'k:9092', 'sc-right');
SELECT adstream.create_source('sc_wrong', 'k:9092', 'sc-wrong');
SELECT adstream.create_source('sc_kept', 'k:9092', 'sc-kept');
RESET client_min_messages;

-- totals(g): ad_stats() of the three ads at granularity g over the day.
CREATE FUNCTION pg_temp.totals(p_granularity text)
RETURNS TABLE (ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint)
LANGUAGE sql AS $$
	SELECT s.ad_id, s.campaign_id, s.window_start, s.impressions, s.clicks
	  FROM adstream.ad_stats('2025-01-15 00:00:00+00', '2025-01-16 00:00:00+00', p_granularity) s
	 WHERE s.ad_id BETWEEN 9001 AND 9003
	 ORDER BY 1, 3
$$;

-- published(): the value a sink sends last for each of the three ads'
-- minutes (every outbox row of a key carries the key's current value).
CREATE FUNCTION pg_temp.published(p_sink text)
RETURNS TABLE (ad_id bigint, window_start timestamptz, value text)
LANGUAGE sql AS $$
	SELECT DISTINCT (p.value::jsonb ->> 'ad_id')::bigint,
		   to_timestamp((p.value::jsonb ->> 'window_start')::bigint / 1000.0),
		   (p.value::jsonb - 'node' - 'version' - 'record_uuid' - 'updated_at' - 'ad_id' - 'window_start')::text
	  FROM adstream._outbox_page(p_sink, 100000) p
	 WHERE p.value::jsonb ->> 'ad_id' IN ('9001', '9002', '9003')
	 ORDER BY 1, 2
$$;

SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2025-01-15 10:00:00+00']::timestamptz[]) AS created;

-- sc_right and sc_wrong both count ad 9001's minutes (the double count of
-- two sources on one stream); only sc_wrong counted ad 9002 at 13:00, only
-- sc_kept ad 9003.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks, source_id)
SELECT v.ad_id, v.campaign_id, v.window_start::timestamptz, v.impressions, v.clicks, s.id
  FROM (VALUES ('sc_right', 9001, 90, '2025-01-15 10:00:00+00', 5, 1),
			   ('sc_right', 9001, 90, '2025-01-15 10:01:00+00', 2, 0),
			   ('sc_wrong', 9001, 90, '2025-01-15 10:00:00+00', 5, 1),
			   ('sc_wrong', 9001, 90, '2025-01-15 10:01:00+00', 1, 0),
			   ('sc_wrong', 9002, 91, '2025-01-15 13:00:00+00', 4, 2),
			   ('sc_kept', 9003, 90, '2025-01-15 10:00:00+00', 3, 0))
	   AS v(source, ad_id, campaign_id, window_start, impressions, clicks)
  JOIN adstream.sources s ON s.name = v.source;
INSERT INTO adstream.rollup_pending (window_start)
SELECT DISTINCT window_start FROM adstream.ad_stats_minute WHERE ad_id BETWEEN 9001 AND 9003
ON CONFLICT DO NOTHING;
SELECT adstream.refresh_rollups() > 0 AS refreshed;

-- One row per ad, minute and source; the key takes the source.
SELECT m.ad_id, m.window_start, s.name AS source, m.impressions, m.clicks
  FROM adstream.ad_stats_minute m JOIN adstream.sources s ON s.id = m.source_id
 WHERE m.ad_id BETWEEN 9001 AND 9003 ORDER BY 1, 2, 3;

-- Readers sum over sources: ad 9001 at 10:00 counted twice.
SELECT * FROM pg_temp.totals('minute');
SELECT * FROM pg_temp.totals('hour');
SELECT * FROM pg_temp.totals('6h');
SELECT * FROM pg_temp.totals('day');

-- A sink sends the current state: the sum per (ad, minute) too.  (Read in a
-- transaction rolled back, so that the sink's window stays closed.)
SELECT adstream.create_sink('sc_sink', 'k:9092');
BEGIN;
SELECT * FROM pg_temp.published('sc_sink');
ROLLBACK;

-------------------------------------------------------------------------------
-- Dropping without forget_counts keeps the counts
-------------------------------------------------------------------------------

SELECT adstream.drop_source('sc_kept');
SELECT m.ad_id, m.impressions, m.clicks, s.id IS NULL AS source_gone
  FROM adstream.ad_stats_minute m LEFT JOIN adstream.sources s ON s.id = m.source_id
 WHERE m.ad_id = 9003;
SELECT count(*) AS pending FROM adstream.rollup_pending
 WHERE window_start >= '2025-01-15 00:00:00+00' AND window_start < '2025-01-16 00:00:00+00';

-------------------------------------------------------------------------------
-- Dropping with forget_counts removes exactly what the source counted
-------------------------------------------------------------------------------

SELECT adstream.drop_source('sc_wrong', forget_counts => true);
SELECT m.ad_id, m.window_start, s.name AS source, m.impressions, m.clicks
  FROM adstream.ad_stats_minute m LEFT JOIN adstream.sources s ON s.id = m.source_id
 WHERE m.ad_id BETWEEN 9001 AND 9003 ORDER BY 1, 2, 3;
-- its minutes are queued for the rollups, and for the sink
SELECT window_start FROM adstream.rollup_pending
 WHERE window_start >= '2025-01-15 00:00:00+00' AND window_start < '2025-01-16 00:00:00+00' ORDER BY 1;
SELECT o.ad_id, o.window_start, count(*) AS outbox_rows FROM adstream.outbox o
 WHERE o.ad_id BETWEEN 9001 AND 9003 GROUP BY 1, 2 ORDER BY 1, 2;

-- Before the refresh, ad_stats() sums the minutes of the buckets pending.
SELECT * FROM pg_temp.totals('hour');
SELECT * FROM pg_temp.totals('day');

-- After it the rollups say the same: ad 9001 as sc_right counted it, ad
-- 9002's rows (counted by sc_wrong alone) gone at every level.
SELECT adstream.refresh_rollups() AS refreshed;
SELECT * FROM pg_temp.totals('minute');
SELECT * FROM pg_temp.totals('hour');
SELECT * FROM pg_temp.totals('6h');
SELECT * FROM pg_temp.totals('day');
SELECT 'hour' AS level, r.ad_id, r.window_start, r.impressions, r.clicks FROM adstream.ad_stats_hour r
 WHERE r.ad_id BETWEEN 9001 AND 9003
UNION ALL
SELECT '6h', r.ad_id, r.window_start, r.impressions, r.clicks FROM adstream.ad_stats_6h r
 WHERE r.ad_id BETWEEN 9001 AND 9003
UNION ALL
SELECT 'day', r.ad_id, r.window_start, r.impressions, r.clicks FROM adstream.ad_stats_day r
 WHERE r.ad_id BETWEEN 9001 AND 9003
 ORDER BY 1, 2, 3;

-- The sink sends the corrected sums, and zeros (no campaign) for ad 9002's
-- minute, which nobody else counted, so that Pinot's record is corrected.
SELECT * FROM pg_temp.published('sc_sink');

-- The rollup of a bucket whose minutes' partition is gone (retention) is
-- all that remains of it: a refresh never deletes it.
INSERT INTO adstream.ad_stats_day (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (9001, 90, '2000-01-01 00:00:00+00', 7, 1);
INSERT INTO adstream.rollup_pending VALUES ('2000-01-01 10:00:00+00');
SELECT adstream.refresh_rollups() AS refreshed;
SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats_day
 WHERE ad_id = 9001 AND window_start < '2001-01-01';

-- Unknown sources are refused either way.
SELECT adstream.drop_source('sc_wrong', forget_counts => true);

-- Clean up.
SELECT adstream.drop_sink('sc_sink');
SELECT adstream.drop_source('sc_right', true);
SELECT count(*) AS rows_left FROM adstream.ad_stats_minute WHERE ad_id BETWEEN 9001 AND 9003;
DELETE FROM adstream.ad_stats_minute WHERE ad_id BETWEEN 9001 AND 9003;
DELETE FROM adstream.ad_stats_hour WHERE ad_id BETWEEN 9001 AND 9003;
DELETE FROM adstream.ad_stats_6h WHERE ad_id BETWEEN 9001 AND 9003;
DELETE FROM adstream.ad_stats_day WHERE ad_id BETWEEN 9001 AND 9003;
SELECT adstream.refresh_rollups() >= 0 AS refreshed;
