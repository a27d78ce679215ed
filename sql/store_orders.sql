--
-- store_orders: an order the ad-events watermark has passed is judged as it
-- is stored (adstream._store_orders, the orders worker's insert), and must
-- get exactly the judgement an attribute_orders() pass gives it.  Every
-- order of a grid is stored twice, under two ids: once through
-- _store_orders, once waiting and judged by a pass; the two judgements are
-- compared, with clicks and impressions at the window's edges, ties on
-- time, orders at, before and after the watermark, an event set aside (the
-- watermark stays below it), view-through on and off.  Also: an order
-- judged on the node this one took its partition over from, a duplicate in
-- the batch, and a re-sent order with another time.
--
-- No worker runs in this database (test/regress.conf).
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SET client_min_messages = error;
SELECT adstream.create_source('so_clicks', 'k:9092', 'so-clicks', kind => 'ad_events') IS NOT NULL AS created;
SELECT adstream.create_source('so_shop', 'k:9092', 'so-orders', kind => 'orders') IS NOT NULL AS created;
RESET client_min_messages;

-- Events of users 1..6 at store 5 (user 7 has none): clicks and
-- impressions on both sides of the 24-hour window and of the watermark,
-- two clicks at the same time (the greater event id wins).
SELECT adstream.ensure_partitions('ad_events',
	   ARRAY['2024-05-01 00:00+00', '2024-05-02 00:00+00', '2024-04-30 00:00+00']::timestamptz[]
	   || ARRAY(SELECT generate_series('2024-04-30 00:00+00'::timestamptz, '2024-05-02 23:00+00', '1 hour'))) IS NOT NULL AS ok;
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
SELECT s.id, e.id::uuid, e.type, e.ad, e.ad / 10, e.usr, 5, e.ts::timestamptz
  FROM adstream.sources s,
	   (VALUES ('00000000-0000-4000-8000-000000000101', 'click', 11, 1, '2024-05-01 10:00:00+00'),
			   ('00000000-0000-4000-8000-000000000102', 'click', 12, 1, '2024-05-01 11:00:00+00'),
			   ('00000000-0000-4000-8000-000000000103', 'click', 13, 1, '2024-05-01 12:00:00+00'),
			   ('00000000-0000-4000-8000-000000000201', 'click', 21, 2, '2024-05-01 11:00:00+00'),
			   ('00000000-0000-4000-8000-000000000202', 'click', 22, 2, '2024-05-01 11:00:00+00'),
			   ('00000000-0000-4000-8000-000000000301', 'impression', 31, 3, '2024-05-01 11:00:00+00'),
			   ('00000000-0000-4000-8000-000000000302', 'click', 32, 3, '2024-04-30 10:00:00+00'),
			   ('00000000-0000-4000-8000-000000000401', 'impression', 41, 4, '2024-05-01 11:59:00+00'),
			   ('00000000-0000-4000-8000-000000000402', 'impression', 42, 4, '2024-05-01 11:59:00+00'),
			   ('00000000-0000-4000-8000-000000000501', 'click', 51, 5, '2024-05-01 11:30:00+00'),
			   ('00000000-0000-4000-8000-000000000601', 'click', 61, 6, '2024-04-30 12:00:00.000001+00'),
			   ('00000000-0000-4000-8000-000000000602', 'click', 62, 6, '2024-04-30 12:00:00+00'))
	   AS e(id, type, ad, usr, ts)
 WHERE s.name = 'so_clicks';

-- The partition's watermark is 12:00.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts)
VALUES ('so_clicks', 'so-clicks', 0, 100, '2024-05-01 12:00:00+00');
SELECT adstream.ad_events_watermark() AS watermark;

-- The grid: users 1..7, order times at the edges (a microsecond before and
-- after every event and the watermark, the events' own times, a window
-- after them).
CREATE TEMP TABLE grid AS
SELECT row_number() OVER (ORDER BY u, t) AS n, u AS user_id, t AS ts
  FROM generate_series(1, 7) u,
	   unnest(ARRAY['2024-05-01 09:59:59.999999', '2024-05-01 10:00', '2024-05-01 10:30',
					'2024-05-01 11:00', '2024-05-01 11:00:00.000001', '2024-05-01 11:29:59.999999',
					'2024-05-01 11:30', '2024-05-01 11:59', '2024-05-01 11:59:59.999999',
					'2024-05-01 12:00', '2024-05-01 12:00:00.000001', '2024-05-01 13:00',
					'2024-05-02 10:00', '2024-05-02 11:00', '2024-05-02 11:00:00.000001',
					'2024-05-01 00:00', '2024-05-01 12:00:00.000001']::timestamptz[]) t;

-- judge(round): the grid's orders stored by _store_orders (ids 'a'), and
-- the same orders stored waiting and judged by a pass (ids 'b'); returns
-- how many judgements differ.
CREATE FUNCTION pg_temp.judge(p_round text) RETURNS TABLE (stored bigint, judged_at_once bigint,
	 passed integer, attributed bigint, views bigint, differ bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_stored bigint;
	v_passed integer;
BEGIN
	SELECT count(*) INTO v_stored
	  FROM adstream._store_orders('so_shop',
			ARRAY(SELECT md5(p_round || 'a' || n)::uuid FROM grid ORDER BY n),
			ARRAY(SELECT user_id FROM grid ORDER BY n)::bigint[],
			ARRAY(SELECT 5 FROM grid ORDER BY n)::bigint[],
			ARRAY(SELECT (n * 1.25)::text FROM grid ORDER BY n),
			ARRAY(SELECT 'EUR' FROM grid ORDER BY n),
			ARRAY(SELECT ts FROM grid ORDER BY n),
			ARRAY(SELECT 0 FROM grid ORDER BY n));
	INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, partition)
	SELECT md5(p_round || 'b' || n)::uuid, 'so_shop', user_id, 5, n * 1.25, 'EUR', ts, 0 FROM grid;
	v_passed := adstream.attribute_orders(100000);
	RETURN QUERY
	SELECT v_stored,
		   count(*) FILTER (WHERE a.status <> 'waiting'),
		   v_passed,
		   count(*) FILTER (WHERE a.status = 'attributed'),
		   count(*) FILTER (WHERE a.attribution = 'view'),
		   count(*) FILTER (WHERE (a.status, a.attribution, a.ad_id, a.campaign_id, a.event_id, a.event_ts)
							   IS DISTINCT FROM (b.status, b.attribution, b.ad_id, b.campaign_id, b.event_id, b.event_ts)
							   OR (ca.order_id IS NULL) <> (cb.order_id IS NULL)
							   OR (ca.ad_id, ca.campaign_id, ca.click_event_id, ca.click_ts, ca.order_ts, ca.amount,
								   ca.currency, ca.attribution)
								  IS DISTINCT FROM (cb.ad_id, cb.campaign_id, cb.click_event_id, cb.click_ts, cb.order_ts,
													cb.amount, cb.currency, cb.attribution)
							   OR ca.record_uuid IS DISTINCT FROM
								  CASE WHEN ca.order_id IS NOT NULL
									   THEN adstream.record_uuid('attributed_orders', a.order_id::text) END)
	  FROM grid g
	  JOIN adstream.orders a ON a.order_id = md5(p_round || 'a' || g.n)::uuid
	  JOIN adstream.orders b ON b.order_id = md5(p_round || 'b' || g.n)::uuid
	  LEFT JOIN adstream.attributed_orders ca ON ca.order_id = a.order_id
	  LEFT JOIN adstream.attributed_orders cb ON cb.order_id = b.order_id;
END
$$;

-- The waiting ones of both halves wait alike (judged later by passes).
CREATE VIEW pg_temp.waiting_pairs AS
SELECT count(*) FILTER (WHERE o.order_id = md5(r.round || 'a' || g.n)::uuid) AS stored_waiting,
	   count(*) FILTER (WHERE o.order_id = md5(r.round || 'b' || g.n)::uuid) AS pass_waiting
  FROM grid g, (VALUES ('r1'), ('r2'), ('r3')) r(round), adstream.orders o
 WHERE o.status = 'waiting' AND o.order_id IN (md5(r.round || 'a' || g.n)::uuid, md5(r.round || 'b' || g.n)::uuid);

-- Round 1: clicks only.
SELECT * FROM pg_temp.judge('r1');

-- Round 2: an event set aside at 11:30 holds the watermark just below it.
INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id,
								store_id, ts, payload)
SELECT s.id, 0, 99, '00000000-0000-4000-8000-000000000701', 'click', 71, 7, 7, 5, '2024-05-01 11:30+00', '\x00'
  FROM adstream.sources s WHERE s.name = 'so_clicks';
SELECT adstream.ad_events_watermark() AS watermark;
SELECT * FROM pg_temp.judge('r2');
DELETE FROM adstream.set_aside;

-- Round 3: view-through on (an hour).
ALTER SYSTEM SET adstream.view_through_window = '1h';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW adstream.view_through_window;
SELECT * FROM pg_temp.judge('r3');
ALTER SYSTEM RESET adstream.view_through_window;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW adstream.view_through_window;

SELECT * FROM pg_temp.waiting_pairs;

-- A batch with an order judged on the node this one took the partition
-- over from, one stored before (judged), resent with another time, and
-- one twice in the batch: only the new one is stored, once, and returned.
INSERT INTO adstream.orders_seen_elsewhere (order_id, source, partition, from_node, handoff_id)
VALUES ('00000000-0000-4000-8000-00000000e001', 'so_shop', 0, 'other', 1);
SELECT right(id::text, 4) AS stored
  FROM adstream._store_orders('so_shop',
		ARRAY['00000000-0000-4000-8000-00000000e001', md5('r1a1')::text,
			  '00000000-0000-4000-8000-00000000e002', '00000000-0000-4000-8000-00000000e002']::uuid[],
		ARRAY[1, 1, 1, 2]::bigint[], ARRAY[5, 5, 5, 5]::bigint[], ARRAY['1', '2', '3', '4'],
		ARRAY['EUR', 'EUR', 'EUR', 'EUR'],
		ARRAY['2024-05-01 11:30+00', '2024-05-01 12:00+00', '2024-05-01 10:30+00', '2024-05-01 11:30+00']::timestamptz[],
		ARRAY[0, 0, 0, 0]) AS id;
SELECT right(order_id::text, 4) AS ord, user_id, ts, status, ad_id, amount
  FROM adstream.orders WHERE order_id IN ('00000000-0000-4000-8000-00000000e001', md5('r1a1')::uuid,
										  '00000000-0000-4000-8000-00000000e002')
 ORDER BY order_id;
SELECT count(*) AS credits FROM adstream.attributed_orders
 WHERE order_id IN ('00000000-0000-4000-8000-00000000e001', md5('r1a1')::uuid, '00000000-0000-4000-8000-00000000e002');

-- Clean up.
SET client_min_messages = error;
DELETE FROM adstream.orders_seen_elsewhere;
DELETE FROM adstream.attributed_orders;
DELETE FROM adstream.orders;
DELETE FROM adstream.outbox;
SELECT adstream.drop_source('so_shop');
SELECT adstream.drop_source('so_clicks');
