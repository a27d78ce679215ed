--
-- attribution: order attribution, rollups and partition maintenance (0.2).
--
-- No worker runs in this database (test/regress.conf), so the tables the
-- workers write are filled here by hand, as the superuser, and the SQL
-- functions the workers and pg_cron call are driven directly.  The
-- adstream.* settings are PGC_SIGHUP and stay at their defaults: a 24-hour
-- attribution window, view-through off, 10 minutes of maximum wait, 7 days of
-- minute retention.  All event and order times lie in 2024, far behind the
-- wall clock (so always past minute retention); only received_at (for
-- attribution_max_wait) and the partitions made ahead of now() depend on the
-- clock, and neither is printed.
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SHOW adstream.attribution_window;
SHOW adstream.view_through_window;
SHOW adstream.attribution_max_wait;
SHOW adstream.minute_retention;
SHOW adstream.dedup_horizon;

-- Sources: two of ad events, one of orders.
SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SELECT adstream.create_source('clicks_a', 'k:9092', 'clicks-a');
SELECT adstream.create_source('clicks_b', 'k:9092', 'clicks-b', kind => 'ad_events');
SELECT adstream.create_source('shop', 'k:9092', 'orders', kind => 'orders');
RESET client_min_messages;
SELECT name, kind, topic, enabled FROM adstream.source_config ORDER BY name;

-- ev(): an ad event as the ingest path stores it, creating its partition.
CREATE PROCEDURE pg_temp.ev(p_source text, p_event_id uuid, p_ad_id bigint, p_campaign_id bigint,
						   p_user_id bigint, p_store_id bigint, p_ts timestamptz, p_type text DEFAULT 'click')
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM adstream.ensure_partitions('ad_events', ARRAY[p_ts]);
	INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
	SELECT s.id, p_event_id, p_type, p_ad_id, p_campaign_id, p_user_id, p_store_id, p_ts
	  FROM adstream.sources s WHERE s.name = p_source;
END
$$;

-- ord(): an order as the ingest path stores it (status 'waiting').
CREATE PROCEDURE pg_temp.ord(p_order_id uuid, p_user_id bigint, p_store_id bigint, p_ts timestamptz,
							p_received_ago interval DEFAULT '0', p_amount numeric DEFAULT 10.00)
LANGUAGE sql AS $$
	INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, received_at)
	VALUES (p_order_id, 'shop', p_user_id, p_store_id, p_amount, 'EUR', p_ts, now() - p_received_ago)
$$;

-- The judged orders, as the order worker leaves them.
CREATE VIEW pg_temp.judged AS
SELECT right(o.order_id::text, 4) AS ord, o.user_id, o.store_id, o.ts, o.status, o.attribution,
	   o.ad_id, o.campaign_id, right(o.event_id::text, 4) AS event, o.event_ts,
	   o.decided_at IS NOT NULL AS decided
  FROM adstream.orders o;

-------------------------------------------------------------------------------
-- The ad-events watermark
-------------------------------------------------------------------------------

-- Nothing ingested yet.
SELECT adstream.ad_events_watermark() AS no_watermark_yet;

-- Without a watermark only attribution_max_wait decides: an order received
-- 11 minutes ago is judged (nothing to credit), one received now waits.
CALL pg_temp.ord('00000000-0000-4000-8000-000000000001', 1, 5, '2024-03-02 10:00+00', '11 min');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000002', 1, 5, '2024-03-02 10:00+00');
SELECT adstream.attribute_orders() AS judged;
SELECT ord, status, attribution, ad_id, event, decided FROM pg_temp.judged ORDER BY ord;
DELETE FROM adstream.orders;

-- Committed positions.  The lowest partition watermark over every enabled
-- ad-events source counts; partitions without one do not hold it back, nor
-- do orders sources or offsets of a topic the source no longer reads.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('clicks_a', 'clicks-a', 0, 10, '2024-03-02 12:00:00+00'),
	   ('clicks_a', 'clicks-a', 1, 10, '2024-03-02 13:00:00+00'),
	   ('clicks_a', 'clicks-a', 2, 0, NULL),
	   ('clicks_a', 'old-topic', 0, 10, '2024-01-01 00:00:00+00'),
	   ('clicks_b', 'clicks-b', 0, 10, '2024-03-02 14:00:00+00'),
	   ('shop', 'orders', 0, 10, '2024-01-01 00:00:00+00');
SELECT adstream.ad_events_watermark() AS watermark;
-- a paused source does not count
SELECT adstream.pause_source('clicks_a');
SELECT adstream.ad_events_watermark() AS watermark_clicks_a_paused;
SELECT adstream.resume_source('clicks_a');
SELECT adstream.ad_events_watermark() AS watermark;
-- the per-source watermark is the highest of its partitions
SELECT adstream.source_watermark('clicks_a') AS clicks_a, adstream.source_watermark('clicks_b') AS clicks_b;

-------------------------------------------------------------------------------
-- Last click wins (watermark 2024-03-02 12:00, window 24 hours)
-------------------------------------------------------------------------------

-- user 101: the last of three clicks before the order, not the one after it
CALL pg_temp.ev('clicks_a', '10100000-0000-4000-8000-000000000001', 11, 1, 101, 5, '2024-03-02 08:00+00');
CALL pg_temp.ev('clicks_b', '10100000-0000-4000-8000-000000000002', 12, 1, 101, 5, '2024-03-02 09:30+00');
CALL pg_temp.ev('clicks_a', '10100000-0000-4000-8000-000000000003', 13, 2, 101, 5, '2024-03-02 10:00:00.000001+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000101', 101, 5, '2024-03-02 10:00+00', p_amount => 42.50);
-- user 102: a click at the very time of the order counts
CALL pg_temp.ev('clicks_a', '10200000-0000-4000-8000-000000000001', 21, 2, 102, 5, '2024-03-02 10:00+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000102', 102, 5, '2024-03-02 10:00+00');
-- user 103: only a click one microsecond after the order
CALL pg_temp.ev('clicks_a', '10300000-0000-4000-8000-000000000001', 31, 3, 103, 5, '2024-03-02 10:00:00.000001+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000103', 103, 5, '2024-03-02 10:00+00');
-- user 104: clicks exactly 24 hours and more before the order are outside the window
CALL pg_temp.ev('clicks_a', '10400000-0000-4000-8000-000000000001', 41, 4, 104, 5, '2024-03-01 10:00+00');
CALL pg_temp.ev('clicks_b', '10400000-0000-4000-8000-000000000002', 42, 4, 104, 5, '2024-02-29 23:00+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000104', 104, 5, '2024-03-02 10:00+00');
-- user 105: one microsecond inside the window
CALL pg_temp.ev('clicks_a', '10500000-0000-4000-8000-000000000001', 51, 5, 105, 5, '2024-03-01 10:00:00.000001+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000105', 105, 5, '2024-03-02 10:00+00');
-- user 106 at store 6: a click of the same user at another store and one of
-- another user at the same store do not count
CALL pg_temp.ev('clicks_a', '10600000-0000-4000-8000-000000000001', 61, 6, 106, 5, '2024-03-02 09:00+00');
CALL pg_temp.ev('clicks_a', '10600000-0000-4000-8000-000000000002', 62, 6, 107, 6, '2024-03-02 09:00+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000106', 106, 6, '2024-03-02 10:00+00');
-- user 108: an impression is not a click (view-through is off)
CALL pg_temp.ev('clicks_a', '10800000-0000-4000-8000-000000000001', 81, 8, 108, 5, '2024-03-02 09:00+00', 'impression');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000108', 108, 5, '2024-03-02 10:00+00');
-- user 109: the last click wins over a later impression
CALL pg_temp.ev('clicks_a', '10900000-0000-4000-8000-000000000001', 91, 9, 109, 5, '2024-03-02 08:00+00');
CALL pg_temp.ev('clicks_b', '10900000-0000-4000-8000-000000000002', 92, 9, 109, 5, '2024-03-02 09:50+00', 'impression');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000109', 109, 5, '2024-03-02 10:00+00');
-- user 110: three clicks at the same time: the greatest event_id wins,
-- whatever the order of arrival or the source
CALL pg_temp.ev('clicks_a', 'a1100000-0000-4000-8000-000000000001', 101, 10, 110, 5, '2024-03-02 09:00+00');
CALL pg_temp.ev('clicks_b', 'f1100000-0000-4000-8000-000000000002', 102, 10, 110, 5, '2024-03-02 09:00+00');
CALL pg_temp.ev('clicks_a', '01100000-0000-4000-8000-000000000003', 103, 10, 110, 5, '2024-03-02 09:00+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000110', 110, 5, '2024-03-02 10:00+00');
-- user 111: an order exactly at the watermark is ready
CALL pg_temp.ev('clicks_a', '11100000-0000-4000-8000-000000000001', 111, 11, 111, 5, '2024-03-02 11:59+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000111', 111, 5, '2024-03-02 12:00+00');
-- users 112-114: orders after the watermark wait for it, unless they were
-- received more than attribution_max_wait ago
CALL pg_temp.ev('clicks_a', '11200000-0000-4000-8000-000000000001', 112, 12, 112, 5, '2024-03-02 12:10+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000112', 112, 5, '2024-03-02 12:30+00');
CALL pg_temp.ev('clicks_a', '11300000-0000-4000-8000-000000000001', 113, 13, 113, 5, '2024-03-02 12:10+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000113', 113, 5, '2024-03-02 12:30+00', '11 min');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000114', 114, 5, '2024-03-02 12:00:00.000001+00', '9 min');

SELECT adstream.ad_events_watermark() AS watermark;
SELECT count(*) AS waiting FROM adstream.orders WHERE status = 'waiting';

SELECT adstream.attribute_orders() AS judged;
SELECT ord, user_id, store_id, status, attribution, ad_id, campaign_id, event, event_ts, decided
  FROM pg_temp.judged ORDER BY ord;

-- Every credited order, once, with a record_uuid derived from its id.
SELECT right(order_id::text, 4) AS ord, ad_id, campaign_id, right(click_event_id::text, 4) AS click,
	   click_ts, order_ts, amount, currency, attribution,
	   record_uuid = adstream.record_uuid('attributed_orders', order_id::text) AS record_uuid_ok
  FROM adstream.attributed_orders ORDER BY order_id;
-- attributed_orders and the attributed orders agree
SELECT count(*) AS mismatches
  FROM adstream.orders o FULL JOIN adstream.attributed_orders a USING (order_id)
 WHERE (o.status = 'attributed') IS DISTINCT FROM (a.order_id IS NOT NULL)
	OR a.ad_id IS DISTINCT FROM o.ad_id AND a.order_id IS NOT NULL
	OR a.click_event_id IS DISTINCT FROM o.event_id AND a.order_id IS NOT NULL;
-- unattributed orders carry no credit at all
SELECT count(*) AS unattributed_with_credit FROM adstream.orders
 WHERE status = 'unattributed' AND num_nonnulls(attribution, ad_id, campaign_id, event_id, event_ts) > 0;

-- Nothing more is ready.
SELECT adstream.attribute_orders() AS judged;

-- waiting_orders shows what still waits, the watermark it waits for and
-- when max_wait will decide it.
SELECT right(order_id::text, 4) AS ord, user_id, ts, ad_events_watermark,
	   decide_by - received_at AS max_wait
  FROM adstream.waiting_orders ORDER BY order_id;

-- It reads the watermark once per query, not once per waiting order (with
-- 300,000 orders waiting, a listing took 3 s).
BEGIN;
SET LOCAL track_functions = 'all';
SELECT count(*) AS waiting, count(ad_events_watermark) AS with_watermark FROM adstream.waiting_orders;
SELECT f.calls AS watermark_calls FROM pg_stat_xact_user_functions f
 WHERE f.schemaname = 'adstream' AND f.funcname = 'ad_events_watermark';
COMMIT;

-- A click before order 112 arrives late, then the watermark passes both
-- waiting orders: 112 gets the later click, 114 has none.
CALL pg_temp.ev('clicks_b', '11200000-0000-4000-8000-000000000002', 1122, 12, 112, 5, '2024-03-02 12:20+00');
UPDATE adstream.offsets SET max_event_ts = '2024-03-02 13:00:00+00'
 WHERE source = 'clicks_a' AND topic = 'clicks-a' AND partition = 0;
SELECT adstream.ad_events_watermark() AS watermark;
SELECT adstream.attribute_orders() AS judged;
SELECT ord, status, ad_id, event, event_ts FROM pg_temp.judged WHERE ord IN ('0112', '0114') ORDER BY ord;
SELECT count(*) AS waiting FROM adstream.waiting_orders;

-- p_limit: the oldest orders first, the rest on the next call.
CALL pg_temp.ord('00000000-0000-4000-8000-000000000121', 121, 5, '2024-03-02 11:03+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000122', 122, 5, '2024-03-02 11:01+00');
CALL pg_temp.ord('00000000-0000-4000-8000-000000000123', 123, 5, '2024-03-02 11:02+00');
SELECT adstream.attribute_orders(2) AS judged;
SELECT ord, status FROM pg_temp.judged WHERE ord IN ('0121', '0122', '0123') ORDER BY ord;
SELECT adstream.attribute_orders() AS judged;
SELECT count(*) AS waiting FROM adstream.waiting_orders;

-- Judging an order again (as after a crash) gives the same result and
-- never a second credit.
SELECT record_uuid AS record_uuid_101 FROM adstream.attributed_orders
 WHERE order_id = '00000000-0000-4000-8000-000000000101' \gset
UPDATE adstream.orders SET status = 'waiting', decided_at = NULL, attribution = NULL,
	   ad_id = NULL, campaign_id = NULL, event_id = NULL, event_ts = NULL
 WHERE order_id = '00000000-0000-4000-8000-000000000101';
SELECT adstream.attribute_orders() AS judged;
SELECT ord, status, ad_id, event FROM pg_temp.judged WHERE ord = '0101';
SELECT count(*) AS credits, bool_and(record_uuid = :'record_uuid_101') AS same_record_uuid
  FROM adstream.attributed_orders WHERE order_id = '00000000-0000-4000-8000-000000000101';

-- record_uuid is a pure function of kind and key.
SELECT adstream.record_uuid('attributed_orders', '00000000-0000-4000-8000-000000000101') AS record_uuid;
SELECT adstream.record_uuid('attributed_orders', 'k') = adstream.record_uuid('attributed_orders', 'k') AS same_input_same_uuid,
	   adstream.record_uuid('attributed_orders', 'k') <> adstream.record_uuid('other_kind', 'k') AS kind_matters,
	   adstream.record_uuid('attributed_orders', 'k') <> adstream.record_uuid('attributed_orders', 'K') AS key_matters,
	   substr(adstream.record_uuid('attributed_orders', 'k')::text, 15, 1) = '3'
	   AND substr(adstream.record_uuid('attributed_orders', 'k')::text, 20, 1) IN ('8', '9', 'a', 'b') AS rfc4122_version_3;
-- In C since 0.6: the same UUID as the SQL function before it (the MD5 of
-- 'adstream/' || kind || '/' || key, version and variant bits set), over
-- kinds and keys of every length and multibyte characters; NULL in, NULL out.
SELECT count(*) AS keys,
	   count(*) FILTER (WHERE adstream.record_uuid(k, key) IS DISTINCT FROM
		   (SELECT (substr(h, 1, 12) || '3' || substr(h, 14, 3)
					|| substr('89ab', (('x' || substr(h, 17, 1))::bit(4)::integer % 4) + 1, 1)
					|| substr(h, 18))::uuid
			  FROM (SELECT md5('adstream/' || k || '/' || key) AS h) m)) AS differ_from_sql
  FROM unnest(ARRAY['attributed_orders', 'ad_stats', '', 'é']) k,
	   LATERAL (SELECT CASE g % 3 WHEN 0 THEN md5(g::text)::uuid::text WHEN 1 THEN g || 'é€' ELSE repeat('x', g % 300) END
				  FROM generate_series(1, 5000) g) x(key);
SELECT adstream.record_uuid(NULL, 'k') IS NULL AND adstream.record_uuid('attributed_orders', NULL) IS NULL AS null_in_null_out;

-------------------------------------------------------------------------------
-- bucket()
-------------------------------------------------------------------------------

SELECT g, adstream.bucket(g, '2024-03-01 17:42:13.5+00') AS bucket
  FROM unnest(ARRAY['minute', 'hour', '6h', 'day']) AS g;
-- six-hour blocks start at 00:00 UTC
SELECT t, adstream.bucket('6h', t) AS block
  FROM unnest(ARRAY['2024-03-01 00:00:00+00', '2024-03-01 05:59:59.999999+00', '2024-03-01 06:00:00+00',
					'2024-03-01 18:00:00+00', '2024-03-01 23:59:59.999999+00']::timestamptz[]) AS t;
-- buckets are UTC whatever the session time zone (India is UTC+05:30)
SET timezone = 'Asia/Kolkata';
SELECT g, adstream.bucket(g, '2024-03-01 10:45:00+05:30') AT TIME ZONE 'UTC' AS bucket_utc
  FROM unnest(ARRAY['minute', 'hour', '6h', 'day']) AS g;
SET timezone = 'America/New_York';
SELECT adstream.bucket('day', '2024-03-01 22:00:00-05') AT TIME ZONE 'UTC' AS day_utc;
SET timezone = 'UTC';

-------------------------------------------------------------------------------
-- Rollups: refresh_rollups(), ad_stats(), campaign_stats()
-------------------------------------------------------------------------------

SELECT adstream.ensure_partitions('ad_stats_minute',
		ARRAY['2024-03-01 00:00:00+00', '2024-03-02 00:00:00+00']::timestamptz[]) AS created;

-- Minutes as the workers write them, each queued for the rollups.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2024-03-01 05:58:00+00', 10, 1),
	   (1, 10, '2024-03-01 05:59:00+00', 5, 0),
	   (1, 10, '2024-03-01 06:00:00+00', 7, 2),
	   (1, 10, '2024-03-01 23:59:00+00', 3, 1),
	   (1, 10, '2024-03-02 00:00:00+00', 4, 0),
	   (2, 10, '2024-03-01 06:30:00+00', 20, 3),
	   (3, 20, '2024-03-01 12:15:00+00', 1, 1);
INSERT INTO adstream.rollup_pending SELECT DISTINCT window_start FROM adstream.ad_stats_minute;

-- Before any refresh the rollups are empty, and ad_stats sums the minutes.
SELECT (SELECT count(*) FROM adstream.ad_stats_hour) AS hour_rows,
	   (SELECT count(*) FROM adstream.ad_stats_6h) AS six_hour_rows,
	   (SELECT count(*) FROM adstream.ad_stats_day) AS day_rows;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-03') ORDER BY ad_id, window_start;	-- default: hour
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-03', 'day') ORDER BY ad_id, window_start;

SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT count(*) AS still_pending FROM adstream.rollup_pending;
SELECT 'hour' AS rollup, * FROM adstream.ad_stats_hour
UNION ALL SELECT '6h', * FROM adstream.ad_stats_6h
UNION ALL SELECT 'day', * FROM adstream.ad_stats_day
 ORDER BY 1, 2, 4;
-- nothing queued, nothing to do
SELECT adstream.refresh_rollups() AS pending_minutes;

-- Each granularity, read from the rollups now; [from, to) by bucket start.
SELECT * FROM adstream.ad_stats('2024-03-01 05:00', '2024-03-01 06:30', 'minute') ORDER BY ad_id, window_start;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-01 06:00', 'hour') ORDER BY ad_id, window_start;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-03', '6h') ORDER BY ad_id, window_start;
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-03', 'day') ORDER BY ad_id, window_start;
SELECT * FROM adstream.campaign_stats('2024-03-01', '2024-03-03', 'day') ORDER BY campaign_id, window_start;
SELECT * FROM adstream.campaign_stats('2024-03-01', '2024-03-02') ORDER BY campaign_id, window_start;

-- Buckets without queued minutes come from the rollup (shown by marking a
-- rollup row, which ad_stats then returns).
BEGIN;
UPDATE adstream.ad_stats_day SET impressions = -1 WHERE ad_id = 3;
SELECT ad_id, window_start, impressions FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'day') WHERE ad_id = 3;
ROLLBACK;

-- A late minute: ad 1 at 05:10 is written and queued.  Until the next
-- refresh, ad_stats sums the minutes of every bucket that holds it, so its
-- totals are exact at once; the rollups catch up on refresh.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (1, 10, '2024-03-01 05:10:00+00', 100, 10);
INSERT INTO adstream.rollup_pending VALUES ('2024-03-01 05:10:00+00');
SELECT g, s.* FROM unnest(ARRAY['hour', '6h', 'day']) AS g,
	   adstream.ad_stats('2024-03-01', '2024-03-02', g) s
 WHERE s.ad_id = 1 ORDER BY 1, s.window_start;
SELECT impressions AS hour_rollup_before_refresh FROM adstream.ad_stats_hour
 WHERE ad_id = 1 AND window_start = '2024-03-01 05:00+00';
SELECT adstream.refresh_rollups() AS pending_minutes;
SELECT 'hour' AS rollup, * FROM adstream.ad_stats_hour WHERE ad_id = 1 AND window_start = '2024-03-01 05:00+00'
UNION ALL SELECT '6h', * FROM adstream.ad_stats_6h WHERE ad_id = 1 AND window_start = '2024-03-01 00:00+00'
UNION ALL SELECT 'day', * FROM adstream.ad_stats_day WHERE ad_id = 1 AND window_start = '2024-03-01 00:00+00';

-- Rollups and minutes agree at every granularity.
SELECT g, (SELECT count(*) FROM (
		(SELECT ad_id, adstream.bucket(g, window_start), sum(impressions), sum(clicks)
		   FROM adstream.ad_stats_minute GROUP BY 1, 2
		 EXCEPT
		 SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats('2024-01-01', '2025-01-01', g))
		UNION ALL
		(SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats('2024-01-01', '2025-01-01', g)
		 EXCEPT
		 SELECT ad_id, adstream.bucket(g, window_start), sum(impressions), sum(clicks)
		   FROM adstream.ad_stats_minute GROUP BY 1, 2)) d) AS differences
  FROM unnest(ARRAY['hour', '6h', 'day']) AS g ORDER BY g;

-- Only the four granularities exist.
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'week');
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', NULL);
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-02', 'Hour');
SELECT * FROM adstream.campaign_stats('2024-03-01', '2024-03-02', '1 hour');

-------------------------------------------------------------------------------
-- create_partitions_ahead()
-------------------------------------------------------------------------------

-- One transaction, so that now() stays put.  The day ahead needs 25 hourly
-- partitions of ad_events and of dedup_log and 2 daily ones of
-- ad_stats_minute; none exist yet.
BEGIN;
SELECT adstream.create_partitions_ahead() AS created;
SELECT p.name AS parent, count(*) AS partitions_ahead
  FROM adstream.partitioned_tables p
  JOIN pg_inherits i ON i.inhparent = ('adstream.' || p.name)::regclass
 WHERE adstream._partition_upper(i.inhrelid) > now()
 GROUP BY p.name ORDER BY 1;
-- rows at any time of the coming day have a partition in every table
SAVEPOINT s;
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
SELECT 1, gen_random_uuid(), 'click', 1, 1, 1, 1, t
  FROM generate_series(now(), now() + interval '1 day', interval '7 minutes') t;
INSERT INTO adstream.dedup_log (source_id, hour, ids)
SELECT 1, t, uuid_send(gen_random_uuid()) FROM generate_series(now(), now() + interval '1 day', interval '7 minutes') t;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start)
SELECT 1, 1, t FROM generate_series(date_trunc('minute', now()), now() + interval '1 day', interval '7 minutes') t;
SELECT 'all inserted' AS coverage;
ROLLBACK TO SAVEPOINT s;
-- idempotent, and a shorter period is covered already
SELECT adstream.create_partitions_ahead() AS created;
SELECT adstream.create_partitions_ahead('2 hours') AS created;
-- partitions made ahead get the fillfactor and storage options of their table
SELECT count(*) AS wrong_fillfactor
  FROM adstream.partitioned_tables p
  JOIN pg_inherits i ON i.inhparent = ('adstream.' || p.name)::regclass
  JOIN pg_class c ON c.oid = i.inhrelid
 WHERE c.reloptions IS DISTINCT FROM ARRAY['fillfactor=' || p.fillfactor] || p.storage_options;
COMMIT;

-------------------------------------------------------------------------------
-- drop_expired_partitions()
-------------------------------------------------------------------------------

-- Old dedup_log partitions, hourly from 2024-03-02 09:00 to 13:00.
SELECT adstream.ensure_partitions('dedup_log',
		ARRAY['2024-03-02 09:00+00', '2024-03-02 10:00+00', '2024-03-02 11:00+00',
			  '2024-03-02 12:00+00', '2024-03-02 13:00+00']::timestamptz[]) AS created;
-- One more ad_events hour long before everything else.
SELECT adstream.ensure_partitions('ad_events', ARRAY['2024-02-20 00:00+00']::timestamptz[]) AS created;
-- A minute that only the refresh inside drop_expired_partitions rolls up.
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
VALUES (4, 40, '2024-03-02 07:00:00+00', 9, 9);
INSERT INTO adstream.rollup_pending VALUES ('2024-03-02 07:00:00+00');
-- A waiting order from long ago holds back the ad events it may need.
CALL pg_temp.ord('00000000-0000-4000-8000-000000000201', 201, 5, '2024-03-01 01:30+00');

-- The partitions of 2024 (those made ahead of now() are not shown).
CREATE VIEW pg_temp.old_partitions AS
SELECT p.relname AS parent, c.relname AS partition
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
 WHERE p.relnamespace = 'adstream'::regnamespace
   AND adstream._partition_upper(c.oid) < '2025-01-01';
SELECT * FROM pg_temp.old_partitions ORDER BY 1, 2;

-- Cutoffs:
--   dedup_log:     per source: clicks_a gives up before 12:00 (13:00 - 1h),
--                    clicks_b before 13:00 (14:00 - 1h); the hours before
--                    13:00 hold no live id and go (the orders source does
--                    not count)
--   ad_events:       min(watermark 03-02 13:00, waiting order 03-01 01:30)
--                    - 24h - 1h = 02-29 00:30
--   ad_stats_minute: now() - 7 days, after the rollups are refreshed
SELECT adstream.drop_expired_partitions() AS dropped;
SELECT * FROM pg_temp.old_partitions ORDER BY 1, 2;
-- the dropped tables are gone, not merely detached
SELECT count(*) AS detached_leftovers FROM pg_class
 WHERE relnamespace = 'adstream'::regnamespace AND relkind = 'r' AND NOT relispartition
   AND relname ~ '_p\d{8}_\d{4}$';
-- the pending minute was rolled up before its partition went
SELECT count(*) AS still_pending FROM adstream.rollup_pending;
SELECT * FROM adstream.ad_stats_day ORDER BY ad_id, window_start;
-- ad_stats still answers from the rollups; the minutes are gone
SELECT * FROM adstream.ad_stats('2024-03-01', '2024-03-03', 'day') ORDER BY ad_id, window_start;
SELECT count(*) AS minutes FROM adstream.ad_stats('2024-03-01', '2024-03-03', 'minute');

-- Once the old order is judged, ad events expire up to 03-01 12:00.
SELECT adstream.attribute_orders() AS judged;
SELECT adstream.drop_expired_partitions() AS dropped;
SELECT * FROM pg_temp.old_partitions ORDER BY 1, 2;
SELECT adstream.drop_expired_partitions() AS dropped;

-------------------------------------------------------------------------------
-- pg_cron jobs (pg_cron is not installed in this database)
-------------------------------------------------------------------------------

SELECT * FROM adstream.schedule_maintenance();
SELECT adstream.unschedule_maintenance() AS unscheduled;

-------------------------------------------------------------------------------
-- Clean up
-------------------------------------------------------------------------------

SELECT adstream.drop_source(name) FROM adstream.sources ORDER BY name;
TRUNCATE adstream.orders, adstream.attributed_orders, adstream.ad_events, adstream.rollup_pending,
		 adstream.ad_stats_hour, adstream.ad_stats_6h, adstream.ad_stats_day, adstream.ad_stats_minute;
DO $$
DECLARE
	r regclass;
BEGIN
	FOR r IN SELECT i.inhrelid::regclass FROM pg_inherits i
			  WHERE i.inhparent IN ('adstream.ad_events'::regclass, 'adstream.dedup_log'::regclass,
									'adstream.ad_stats_minute'::regclass)
	LOOP
		EXECUTE format('DROP TABLE %s', r);
	END LOOP;
END
$$;
SELECT count(*) AS partitions_left FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
 WHERE c.relnamespace = 'adstream'::regnamespace;
SELECT count(*) AS sources_left FROM adstream.sources;
