--
-- timezones: every partition bound and every time bucket adstream computes
-- is in UTC, whatever the session's TimeZone (issue #11, case 5).
--
-- Up to 0.4, a server in Europe/Berlin made the day partition of 2026-10-25
-- 25 hours long (timestamptz + interval '1 day' is a day of the TimeZone's
-- clock), so the next day's partition "would overlap" and the worker retried
-- its batch for ever; in spring the partition of 2026-03-29 was 23 hours long
-- and a row at 23:30Z found no partition.
--
-- The same data -- rows at the edges of the UTC days and hours around the
-- six DST changes of 2026 in Europe/Berlin, America/New_York and
-- Australia/Sydney, clicks and orders 23.5 and 24.5 hours apart across them
-- -- goes through ensure_partitions, rollups, ad_stats and campaign_stats,
-- attribution, create_partitions_ahead and drop_expired_partitions with the
-- session in each of those zones in turn, on a fresh install.  Every
-- partition must be exactly one grain long from a UTC grain boundary, and
-- every result the same in all three zones.  Then an installation of 0.4
-- whose partitions and rollups were made in Europe/Berlin is updated, and
-- what 0.4 made wrong is repaired without losing a row.
--
-- No worker runs in this database (test/regress.conf).  The adstream.*
-- settings stay at their defaults: a one-day (86400 s, shown as 1d)
-- attribution window, a one-hour dedup horizon, 7 days of minute retention.
-- The data lie in 2026, behind the wall clock; create_partitions_ahead and
-- minute retention depend on the clock and are checked without printing it.
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- A time as UTC text, whatever the session's TimeZone.
CREATE FUNCTION pg_temp.utc(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE
RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI"Z"');

-- The DST changes of 2026, as the time zone database has them: the local
-- clock jumps at these instants.
CREATE TEMP TABLE dst (zone text, kind text, change timestamptz);
INSERT INTO dst VALUES
	('Europe/Berlin',    'spring', '2026-03-29 01:00:00+00'),
	('Europe/Berlin',    'autumn', '2026-10-25 01:00:00+00'),
	('America/New_York', 'spring', '2026-03-08 07:00:00+00'),
	('America/New_York', 'autumn', '2026-11-01 06:00:00+00'),
	('Australia/Sydney', 'autumn', '2026-04-04 16:00:00+00'),
	('Australia/Sydney', 'spring', '2026-10-03 16:00:00+00');
SELECT zone, kind, pg_temp.utc(change) AS change,
	   (change - interval '1 second') AT TIME ZONE zone AS clock_before,
	   change AT TIME ZONE zone AS clock_after
  FROM dst ORDER BY change;

-- Edge times: half an hour either side of each UTC midnight around a change
-- and of the change itself.
CREATE TEMP TABLE edge AS
SELECT DISTINCT e AS t
  FROM dst, date_trunc('day', change, 'UTC') AS d,
	   unnest(ARRAY[d - interval '30 minutes', d + interval '30 minutes',
					change - interval '30 minutes', change + interval '30 minutes',
					d + interval '23 hours 30 minutes', d + interval '24 hours 30 minutes']) AS e;
SELECT count(*) AS edge_times FROM edge;

-- Ad events kept for attribution and retention:
--   store 0: an impression at every edge time;
--   store 1: per change, one user's click 12 hours after it less 23.5 hours
--            (spring) or 24.5 hours (autumn), and that user's order 12 hours
--            after it: a one-day window credits the first and not the second;
--   store 2: per autumn change, clicks 19.5 and 18.5 hours before it, on
--            either side of the retention cutoff of the retention step.
CREATE TEMP TABLE ev AS
SELECT 'impression' AS type, 0::bigint AS user_id, 0::bigint AS store_id, t AS ts FROM edge
UNION ALL
SELECT 'click', row_number() OVER (ORDER BY change), 1,
	   change + interval '12 hours' - CASE kind WHEN 'spring' THEN interval '23 hours 30 minutes'
												ELSE interval '24 hours 30 minutes' END
  FROM dst
UNION ALL
SELECT 'click', 0, 2, change - o FROM dst, unnest(ARRAY[interval '19 hours 30 minutes', interval '18 hours 30 minutes']) AS o
 WHERE kind = 'autumn';
CREATE TEMP TABLE ord AS
SELECT row_number() OVER (ORDER BY change) AS user_id, zone, kind, change + interval '12 hours' AS ts FROM dst;
CREATE TEMP TABLE all_times AS SELECT t FROM edge UNION SELECT ts FROM ev;

-- Every partition of the time-partitioned tables, with its bounds.
CREATE FUNCTION pg_temp.partitions()
RETURNS TABLE (tbl text, part text, lo timestamptz, hi timestamptz, grain interval)
LANGUAGE sql STABLE AS $$
	SELECT t.name, c.relname::text,
		   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
		   adstream._partition_upper(c.oid), t.grain
	  FROM adstream.partitioned_tables t
	  JOIN pg_inherits i ON i.inhparent = ('adstream.' || t.name)::regclass
	  JOIN pg_class c ON c.oid = i.inhrelid
$$;

-- Per table: partitions that do not start on a UTC grain boundary, are not
-- exactly one grain long, or are not named after their UTC start.
CREATE FUNCTION pg_temp.partition_check()
RETURNS TABLE (tbl text, partitions bigint, not_on_utc_boundary bigint, not_one_grain_long bigint, misnamed bigint)
LANGUAGE sql STABLE AS $$
	SELECT tbl, count(*),
		   count(*) FILTER (WHERE lo IS DISTINCT FROM date_bin(grain, lo, timestamptz '1970-01-01 00:00:00+00')),
		   count(*) FILTER (WHERE extract(epoch FROM hi - lo) IS DISTINCT FROM extract(epoch FROM grain)),
		   count(*) FILTER (WHERE part <> tbl || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI'))
	  FROM pg_temp.partitions() GROUP BY tbl ORDER BY tbl
$$;

-- The data, as the workers store it.
CREATE FUNCTION pg_temp.load() RETURNS void LANGUAGE sql AS $$
	INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
	SELECT a.ad_id, 10, e.t, a.impressions, a.clicks FROM edge e, (VALUES (1, 1, 0), (2, 0, 1)) AS a(ad_id, impressions, clicks);
	INSERT INTO adstream.rollup_pending (window_start) SELECT t FROM edge;
	INSERT INTO adstream.dedup_log (source_id, hour, ids)
	SELECT s.id, date_bin('1 hour', e.t, timestamptz '1970-01-01 00:00:00+00'), decode(md5(pg_temp.utc(e.t)), 'hex')
	  FROM edge e, adstream.sources s WHERE s.name = 'tz_events';
	INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
	SELECT s.id, md5(v.type || v.user_id || v.store_id || pg_temp.utc(v.ts))::uuid, v.type, 1, 10,
		   v.user_id, v.store_id, v.ts
	  FROM ev v, adstream.sources s WHERE s.name = 'tz_events';
	INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts)
	SELECT md5('order' || o.user_id)::uuid, 'tz_orders', o.user_id, 1, 10.00, 'EUR', o.ts FROM ord o;
$$;

-- What each granularity of ad_stats() (and each rollup table) holds that
-- the minutes grouped by their UTC bucket do not, and the other way round.
CREATE FUNCTION pg_temp.width(g text) RETURNS interval LANGUAGE sql IMMUTABLE
RETURN CASE g WHEN 'minute' THEN interval '1 minute' WHEN 'hour' THEN interval '1 hour'
			  WHEN '6h' THEN interval '6 hours' WHEN 'day' THEN interval '24 hours' END;
CREATE FUNCTION pg_temp.truth(g text)
RETURNS TABLE (ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint)
LANGUAGE sql STABLE AS $$
	SELECT m.ad_id, max(m.campaign_id), date_bin(pg_temp.width(g), m.window_start, timestamptz '1970-01-01 00:00:00+00'),
		   sum(m.impressions)::bigint, sum(m.clicks)::bigint
	  FROM adstream.ad_stats_minute m GROUP BY 1, 3
$$;
CREATE FUNCTION pg_temp.stats_check(p_rollups boolean)
RETURNS TABLE (granularity text, ad_stats_differ bigint, rollup_differs bigint)
LANGUAGE plpgsql AS $$
BEGIN
	FOREACH granularity IN ARRAY ARRAY['minute', 'hour', '6h', 'day'] LOOP
		SELECT count(*) INTO ad_stats_differ FROM (
			(SELECT * FROM adstream.ad_stats('2026-01-01 00:00:00+00', '2027-01-01 00:00:00+00', granularity)
			 EXCEPT ALL SELECT * FROM pg_temp.truth(granularity))
			UNION ALL
			(SELECT * FROM pg_temp.truth(granularity)
			 EXCEPT ALL SELECT * FROM adstream.ad_stats('2026-01-01 00:00:00+00', '2027-01-01 00:00:00+00', granularity))) d;
		rollup_differs := NULL;
		IF p_rollups AND granularity <> 'minute' THEN
			EXECUTE format('SELECT count(*) FROM ((SELECT ad_id, campaign_id, window_start, impressions, clicks FROM adstream.%1$I '
						   'EXCEPT ALL SELECT * FROM pg_temp.truth(%2$L)) UNION ALL (SELECT * FROM pg_temp.truth(%2$L) '
						   'EXCEPT ALL SELECT ad_id, campaign_id, window_start, impressions, clicks FROM adstream.%1$I)) d',
						   'ad_stats_' || granularity, granularity) INTO rollup_differs;
		END IF;
		RETURN NEXT;
	END LOOP;
END
$$;

-------------------------------------------------------------------------------
-- Europe/Berlin, America/New_York, Australia/Sydney: the same steps, on a
-- fresh install each time
-------------------------------------------------------------------------------

\set zone 'Europe/Berlin'
DROP EXTENSION adstream;
CREATE EXTENSION adstream;
SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('tz_events', 'k:9092', 'tz-events');
SELECT adstream.create_source('tz_orders', 'k:9092', 'tz-orders', kind => 'orders');
RESET client_min_messages;
-- the ad-events watermark is past every order
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tz_events', 'tz-events', 0, 0, '2026-12-01 00:00:00+00');
SET timezone = :'zone';
SHOW timezone;

-- The partitions of every table for every time, as the workers ask for them.
SELECT name, adstream.ensure_partitions(name, (SELECT array_agg(t) FROM all_times)) AS created
  FROM adstream.partitioned_tables ORDER BY name;
SELECT * FROM pg_temp.partition_check();
SELECT part, pg_temp.utc(lo) AS from_utc, pg_temp.utc(hi) AS to_utc
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute' ORDER BY lo;
-- Every row finds its partition.
SELECT pg_temp.load();
SELECT (SELECT count(*) FROM adstream.ad_stats_minute) AS minute_rows,
	   (SELECT count(*) FROM adstream.dedup_log) AS dedup_log_rows,
	   (SELECT count(*) FROM adstream.ad_events) AS ad_events_rows;

-- Before the rollups: the whole UTC day of each spring change, though asked
-- up to 00:30Z of it (a day of 23 hours on the zone's clock later).
SELECT d.zone, pg_temp.utc(s.window_start) AS day, s.ad_id, s.impressions, s.clicks
  FROM dst d, adstream.ad_stats(date_trunc('day', d.change, 'UTC'),
								date_trunc('day', d.change, 'UTC') + interval '30 minutes', 'day') s
 WHERE d.kind = 'spring' ORDER BY s.window_start, s.ad_id;
SELECT * FROM pg_temp.stats_check(false);
-- The rollups: hours, six-hour blocks and days of UTC.
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT * FROM pg_temp.stats_check(true);
SELECT pg_temp.utc(window_start) AS day, ads, impressions, clicks
  FROM adstream.campaign_stats('2026-03-01 00:00:00+00', '2026-11-03 00:00:00+00', 'day') ORDER BY window_start;

-- Attribution: the window is 86400 s long, across a change too.
SELECT adstream.attribute_orders() AS judged;
SELECT o.zone, o.kind, pg_temp.utc(o.ts) AS order_at, pg_temp.utc(v.ts) AS click_at, o.ts - v.ts AS before,
	   r.status, r.event_ts = v.ts AS credited
  FROM ord o JOIN ev v ON v.user_id = o.user_id AND v.store_id = 1
  JOIN adstream.orders r ON r.user_id = o.user_id
 ORDER BY o.ts;

-- Partitions ahead: the next 48 hours of UTC are covered, still UTC-aligned
-- (in one transaction, so that now() does not move).
BEGIN;
SELECT adstream.create_partitions_ahead('2 days') > 0 AS created_ahead;
SELECT t.name, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_temp.partitions() p
												   WHERE p.tbl = t.name AND p.lo <= x AND x < p.hi)) AS uncovered
  FROM adstream.partitioned_tables t, generate_series(now(), now() + interval '48 hours', interval '1 hour') AS x
 GROUP BY t.name ORDER BY t.name;
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();

-- Retention, with the ad-events watermark 6 hours past the zone's autumn
-- change: ad events go behind it less the one-day attribution window and
-- the one-hour dedup horizon, 25 hours of UTC (the click 19.5 hours before
-- the change goes, the one 18.5 hours before stays).
UPDATE adstream.offsets SET max_event_ts = (SELECT change + interval '6 hours' FROM dst
											 WHERE zone = :'zone' AND kind = 'autumn');
BEGIN;
SELECT adstream.drop_expired_partitions() > 0 AS dropped;
SELECT pg_temp.utc(ts) AS kept_click FROM adstream.ad_events WHERE store_id = 2 ORDER BY ts;
-- Minute partitions wholly behind adstream.minute_retention (in seconds) are
-- gone; the current day's stays.
SELECT count(*) FILTER (WHERE hi <= now() - make_interval(secs => extract(epoch FROM current_setting('adstream.minute_retention')::interval))) AS expired_left,
	   count(*) FILTER (WHERE lo <= now() AND now() < hi) AS current_day
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute';
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();
RESET timezone;

\set zone 'America/New_York'
DROP EXTENSION adstream;
CREATE EXTENSION adstream;
SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('tz_events', 'k:9092', 'tz-events');
SELECT adstream.create_source('tz_orders', 'k:9092', 'tz-orders', kind => 'orders');
RESET client_min_messages;
-- the ad-events watermark is past every order
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tz_events', 'tz-events', 0, 0, '2026-12-01 00:00:00+00');
SET timezone = :'zone';
SHOW timezone;

-- The partitions of every table for every time, as the workers ask for them.
SELECT name, adstream.ensure_partitions(name, (SELECT array_agg(t) FROM all_times)) AS created
  FROM adstream.partitioned_tables ORDER BY name;
SELECT * FROM pg_temp.partition_check();
SELECT part, pg_temp.utc(lo) AS from_utc, pg_temp.utc(hi) AS to_utc
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute' ORDER BY lo;
-- Every row finds its partition.
SELECT pg_temp.load();
SELECT (SELECT count(*) FROM adstream.ad_stats_minute) AS minute_rows,
	   (SELECT count(*) FROM adstream.dedup_log) AS dedup_log_rows,
	   (SELECT count(*) FROM adstream.ad_events) AS ad_events_rows;

-- Before the rollups: the whole UTC day of each spring change, though asked
-- up to 00:30Z of it (a day of 23 hours on the zone's clock later).
SELECT d.zone, pg_temp.utc(s.window_start) AS day, s.ad_id, s.impressions, s.clicks
  FROM dst d, adstream.ad_stats(date_trunc('day', d.change, 'UTC'),
								date_trunc('day', d.change, 'UTC') + interval '30 minutes', 'day') s
 WHERE d.kind = 'spring' ORDER BY s.window_start, s.ad_id;
SELECT * FROM pg_temp.stats_check(false);
-- The rollups: hours, six-hour blocks and days of UTC.
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT * FROM pg_temp.stats_check(true);
SELECT pg_temp.utc(window_start) AS day, ads, impressions, clicks
  FROM adstream.campaign_stats('2026-03-01 00:00:00+00', '2026-11-03 00:00:00+00', 'day') ORDER BY window_start;

-- Attribution: the window is 86400 s long, across a change too.
SELECT adstream.attribute_orders() AS judged;
SELECT o.zone, o.kind, pg_temp.utc(o.ts) AS order_at, pg_temp.utc(v.ts) AS click_at, o.ts - v.ts AS before,
	   r.status, r.event_ts = v.ts AS credited
  FROM ord o JOIN ev v ON v.user_id = o.user_id AND v.store_id = 1
  JOIN adstream.orders r ON r.user_id = o.user_id
 ORDER BY o.ts;

-- Partitions ahead: the next 48 hours of UTC are covered, still UTC-aligned
-- (in one transaction, so that now() does not move).
BEGIN;
SELECT adstream.create_partitions_ahead('2 days') > 0 AS created_ahead;
SELECT t.name, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_temp.partitions() p
												   WHERE p.tbl = t.name AND p.lo <= x AND x < p.hi)) AS uncovered
  FROM adstream.partitioned_tables t, generate_series(now(), now() + interval '48 hours', interval '1 hour') AS x
 GROUP BY t.name ORDER BY t.name;
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();

-- Retention, with the ad-events watermark 6 hours past the zone's autumn
-- change: ad events go behind it less the one-day attribution window and
-- the one-hour dedup horizon, 25 hours of UTC (the click 19.5 hours before
-- the change goes, the one 18.5 hours before stays).
UPDATE adstream.offsets SET max_event_ts = (SELECT change + interval '6 hours' FROM dst
											 WHERE zone = :'zone' AND kind = 'autumn');
BEGIN;
SELECT adstream.drop_expired_partitions() > 0 AS dropped;
SELECT pg_temp.utc(ts) AS kept_click FROM adstream.ad_events WHERE store_id = 2 ORDER BY ts;
-- Minute partitions wholly behind adstream.minute_retention (in seconds) are
-- gone; the current day's stays.
SELECT count(*) FILTER (WHERE hi <= now() - make_interval(secs => extract(epoch FROM current_setting('adstream.minute_retention')::interval))) AS expired_left,
	   count(*) FILTER (WHERE lo <= now() AND now() < hi) AS current_day
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute';
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();
RESET timezone;

\set zone 'Australia/Sydney'
DROP EXTENSION adstream;
CREATE EXTENSION adstream;
SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('tz_events', 'k:9092', 'tz-events');
SELECT adstream.create_source('tz_orders', 'k:9092', 'tz-orders', kind => 'orders');
RESET client_min_messages;
-- the ad-events watermark is past every order
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('tz_events', 'tz-events', 0, 0, '2026-12-01 00:00:00+00');
SET timezone = :'zone';
SHOW timezone;

-- The partitions of every table for every time, as the workers ask for them.
SELECT name, adstream.ensure_partitions(name, (SELECT array_agg(t) FROM all_times)) AS created
  FROM adstream.partitioned_tables ORDER BY name;
SELECT * FROM pg_temp.partition_check();
SELECT part, pg_temp.utc(lo) AS from_utc, pg_temp.utc(hi) AS to_utc
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute' ORDER BY lo;
-- Every row finds its partition.
SELECT pg_temp.load();
SELECT (SELECT count(*) FROM adstream.ad_stats_minute) AS minute_rows,
	   (SELECT count(*) FROM adstream.dedup_log) AS dedup_log_rows,
	   (SELECT count(*) FROM adstream.ad_events) AS ad_events_rows;

-- Before the rollups: the whole UTC day of each spring change, though asked
-- up to 00:30Z of it (a day of 23 hours on the zone's clock later).
SELECT d.zone, pg_temp.utc(s.window_start) AS day, s.ad_id, s.impressions, s.clicks
  FROM dst d, adstream.ad_stats(date_trunc('day', d.change, 'UTC'),
								date_trunc('day', d.change, 'UTC') + interval '30 minutes', 'day') s
 WHERE d.kind = 'spring' ORDER BY s.window_start, s.ad_id;
SELECT * FROM pg_temp.stats_check(false);
-- The rollups: hours, six-hour blocks and days of UTC.
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT * FROM pg_temp.stats_check(true);
SELECT pg_temp.utc(window_start) AS day, ads, impressions, clicks
  FROM adstream.campaign_stats('2026-03-01 00:00:00+00', '2026-11-03 00:00:00+00', 'day') ORDER BY window_start;

-- Attribution: the window is 86400 s long, across a change too.
SELECT adstream.attribute_orders() AS judged;
SELECT o.zone, o.kind, pg_temp.utc(o.ts) AS order_at, pg_temp.utc(v.ts) AS click_at, o.ts - v.ts AS before,
	   r.status, r.event_ts = v.ts AS credited
  FROM ord o JOIN ev v ON v.user_id = o.user_id AND v.store_id = 1
  JOIN adstream.orders r ON r.user_id = o.user_id
 ORDER BY o.ts;

-- Partitions ahead: the next 48 hours of UTC are covered, still UTC-aligned
-- (in one transaction, so that now() does not move).
BEGIN;
SELECT adstream.create_partitions_ahead('2 days') > 0 AS created_ahead;
SELECT t.name, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_temp.partitions() p
												   WHERE p.tbl = t.name AND p.lo <= x AND x < p.hi)) AS uncovered
  FROM adstream.partitioned_tables t, generate_series(now(), now() + interval '48 hours', interval '1 hour') AS x
 GROUP BY t.name ORDER BY t.name;
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();

-- Retention, with the ad-events watermark 6 hours past the zone's autumn
-- change: ad events go behind it less the one-day attribution window and
-- the one-hour dedup horizon, 25 hours of UTC (the click 19.5 hours before
-- the change goes, the one 18.5 hours before stays).
UPDATE adstream.offsets SET max_event_ts = (SELECT change + interval '6 hours' FROM dst
											 WHERE zone = :'zone' AND kind = 'autumn');
BEGIN;
SELECT adstream.drop_expired_partitions() > 0 AS dropped;
SELECT pg_temp.utc(ts) AS kept_click FROM adstream.ad_events WHERE store_id = 2 ORDER BY ts;
-- Minute partitions wholly behind adstream.minute_retention (in seconds) are
-- gone; the current day's stays.
SELECT count(*) FILTER (WHERE hi <= now() - make_interval(secs => extract(epoch FROM current_setting('adstream.minute_retention')::interval))) AS expired_left,
	   count(*) FILTER (WHERE lo <= now() AND now() < hi) AS current_day
  FROM pg_temp.partitions() WHERE tbl = 'ad_stats_minute';
COMMIT;
SELECT tbl, not_on_utc_boundary, not_one_grain_long, misnamed FROM pg_temp.partition_check();
RESET timezone;

-------------------------------------------------------------------------------
-- An installation of 0.4 in Europe/Berlin, updated to 0.5
-------------------------------------------------------------------------------

DROP EXTENSION adstream;
CREATE EXTENSION adstream VERSION '0.4';
SET timezone = 'Europe/Berlin';
-- 0.4 makes the day partitions one at a time, as the days come: that of
-- 2026-03-29 is 23 hours long, that of 2026-10-24 25 hours (it ends at
-- 02:00 on the clock of 2026-10-25, which comes twice, and PostgreSQL takes
-- the second).
SELECT pg_temp.utc(d) AS day, adstream.ensure_partitions('ad_stats_minute', ARRAY[d]) AS created
  FROM unnest(ARRAY['2026-03-28 12:00:00+00', '2026-03-29 12:00:00+00', '2026-03-30 12:00:00+00',
					'2026-10-24 12:00:00+00']::timestamptz[]) WITH ORDINALITY AS u(d, n)
 ORDER BY n;
-- The next day's partition would overlap, and the spring day's last hour
-- has no partition: the batches that hold them fail for ever.
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2026-10-25 12:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2026-03-29 23:30:00+00', 1, 0);
-- Hour partitions are right (an hour is an hour in every zone).
SELECT adstream.ensure_partitions('ad_events',
		ARRAY['2026-10-25 00:30:00+00', '2026-10-25 01:30:00+00']::timestamptz[]) AS created;
SELECT adstream.ensure_partitions('dedup_log',
		ARRAY['2026-03-29 00:30:00+00', '2026-03-29 01:30:00+00']::timestamptz[]) AS created;
-- One more made in America/New_York, 25 hours long and empty.
SET timezone = 'America/New_York';
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2026-11-01 12:00:00+00']::timestamptz[]) AS created;
SET timezone = 'Europe/Berlin';
SELECT tbl, part, pg_temp.utc(lo) AS from_utc, pg_temp.utc(hi) AS to_utc, hi - lo AS length
  FROM pg_temp.partitions() ORDER BY tbl, lo;

-- What the partitions of 0.4 hold, the first hour of 2026-10-25 in the
-- long partition of the day before.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2026-03-28 23:30:00+00', 1, 0), (1, 10, '2026-03-29 00:30:00+00', 1, 0),
	   (1, 10, '2026-03-29 22:30:00+00', 1, 0), (1, 10, '2026-03-30 00:30:00+00', 1, 0),
	   (1, 10, '2026-10-24 23:30:00+00', 1, 0), (1, 10, '2026-10-25 00:30:00+00', 1, 0),
	   (2, 10, '2026-10-25 00:59:00+00', 0, 1);
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
VALUES (1, '00000000-0000-4000-8000-000000000001', 'click', 1, 10, 1, 1, '2026-10-25 00:30:00+00'),
	   (1, '00000000-0000-4000-8000-000000000002', 'click', 1, 10, 1, 1, '2026-10-25 01:30:00+00');
INSERT INTO adstream.dedup_log (source_id, hour, ids)
VALUES (1, '2026-03-29 00:00:00+00', '\x00000000000040008000000000000001'),
	   (1, '2026-03-29 01:00:00+00', '\x00000000000040008000000000000002');
SELECT m.tableoid::regclass AS partition, pg_temp.utc(m.window_start) AS window_start, m.ad_id
  FROM adstream.ad_stats_minute m ORDER BY m.window_start, m.ad_id;

-- 0.4's rollups in Berlin: the day of 2026-10-24 is summed over 25 hours,
-- which takes the first six-hour block of 2026-10-25 along, and counts that
-- block twice as 2026-10-25.
INSERT INTO adstream.rollup_pending (window_start) SELECT window_start FROM adstream.ad_stats_minute;
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT pg_temp.utc(window_start) AS day, ad_id, impressions, clicks FROM adstream.ad_stats_day ORDER BY window_start, ad_id;

CREATE TEMP TABLE before_minutes AS SELECT * FROM adstream.ad_stats_minute;
CREATE TEMP TABLE before_events AS SELECT * FROM adstream.ad_events;
CREATE TEMP TABLE before_dedup AS SELECT * FROM adstream.dedup_log;
CREATE TEMP TABLE before_hours AS SELECT * FROM adstream.ad_stats_hour;
CREATE TEMP TABLE before_6h AS SELECT * FROM adstream.ad_stats_6h;

-- The update replaces each wrong partition, and recomputes the wrong days.
ALTER EXTENSION adstream UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'adstream';
SELECT tbl, part, pg_temp.utc(lo) AS from_utc, pg_temp.utc(hi) AS to_utc, hi - lo AS length
  FROM pg_temp.partitions() ORDER BY tbl, lo;
SELECT * FROM pg_temp.partition_check();
-- no row lost or changed, each in its UTC day (0.5 adds source_id: 0, counted before 0.5)
CREATE TEMP VIEW minutes_05 AS
SELECT ad_id, campaign_id, window_start, impressions, clicks, updated_at FROM adstream.ad_stats_minute WHERE source_id = 0;
SELECT (SELECT count(*) FROM (TABLE before_minutes EXCEPT ALL TABLE pg_temp.minutes_05) d) AS minutes_lost,
	   (SELECT count(*) FROM (TABLE pg_temp.minutes_05 EXCEPT ALL TABLE before_minutes) d) AS minutes_added,
	   (SELECT count(*) FROM (TABLE before_events EXCEPT ALL TABLE adstream.ad_events) d) AS ad_events_lost,
	   (SELECT count(*) FROM (TABLE before_dedup EXCEPT ALL SELECT source_id, hour, ids FROM adstream.dedup_log) d) AS dedup_lost,
	   (SELECT count(*) FROM (TABLE before_hours EXCEPT ALL TABLE adstream.ad_stats_hour) d) AS hours_changed,
	   (SELECT count(*) FROM (TABLE before_6h EXCEPT ALL TABLE adstream.ad_stats_6h) d) AS six_hours_changed;
DROP VIEW pg_temp.minutes_05;	-- the extension is dropped below
SELECT m.tableoid::regclass AS partition, pg_temp.utc(m.window_start) AS window_start, m.ad_id
  FROM adstream.ad_stats_minute m ORDER BY m.window_start, m.ad_id;
-- the replaced partitions are gone
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
													AND d.deptype = 'e');
-- the days are the sums of their UTC six-hour blocks
SELECT pg_temp.utc(window_start) AS day, ad_id, impressions, clicks FROM adstream.ad_stats_day ORDER BY window_start, ad_id;
SELECT * FROM pg_temp.stats_check(true);

-- Ingestion goes on: the spring day's last hour, and the days after the
-- long one.
-- (These days lie far behind the server's clock, and an earlier test's
-- retention dropped them: ensure_partitions would refuse to create them again.)
UPDATE adstream.partitioned_tables SET dropped_before = '-infinity';
SELECT adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2026-03-29 23:30:00+00', '2026-10-25 12:00:00+00', '2026-10-26 12:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2026-03-29 23:30:00+00', 1, 0), (1, 10, '2026-10-25 12:00:00+00', 1, 0),
	   (1, 10, '2026-10-26 00:30:00+00', 1, 0);
SELECT m.tableoid::regclass AS partition, pg_temp.utc(m.window_start) AS window_start, m.ad_id
  FROM adstream.ad_stats_minute m WHERE m.window_start >= '2026-03-29 23:00:00+00' ORDER BY m.window_start, m.ad_id;
SELECT * FROM pg_temp.partition_check();

-- Back to a fresh install for the tests that follow.
RESET timezone;
DROP EXTENSION adstream;
CREATE EXTENSION adstream;
