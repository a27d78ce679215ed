--
-- Moving partitions between nodes (issue #13, part 3): export_partitions,
-- handoff_data, import_partitions, confirm_handoff, cancel_handoff and
-- handoff_status, with the state a worker would have written.  One server
-- here: the receiving node is this one under another name ("n0" below
-- stands for the node that exported), which is what the exporting node's
-- name in handoff_in says.  No broker is reachable and no worker runs.
--
\set SHOW_CONTEXT never
SET client_min_messages = error;	-- not the "workers run elsewhere" warning
SET timezone = 'UTC';

SELECT adstream.set_node_name('n1');
SELECT adstream.create_source('h_ads', 'hk:9092', 'h-ads', options => '{"partitions": "0-7", "workers": 2}') > 0 AS created;
SELECT adstream.create_source('h_shop', 'hk:9092', 'h-orders', 'orders', options => '{"partitions": "0-7", "sasl.password": "s3cret"}') > 0 AS created;
SELECT id AS ads_id FROM adstream.sources WHERE name = 'h_ads' \gset
UPDATE adstream.sources SET partition_count = 8 WHERE name IN ('h_ads', 'h_shop');

-- What the workers would have written: offsets, dedup ids, clicks, orders
-- (waiting and judged, of moved and kept partitions, one from before 0.6
-- without a partition), dead letters.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected)
SELECT 'h_ads', 'h-ads', p, 100 + p, timestamptz '2026-01-01 10:30+00', 90, 5, 5 FROM generate_series(0, 7) p
UNION ALL
SELECT 'h_shop', 'h-orders', p, 10 + p, NULL, 10, 0, 0 FROM generate_series(0, 7) p;
SELECT adstream.ensure_partitions('dedup_log', ARRAY['2026-01-01 09:00+00', '2026-01-01 10:00+00']::timestamptz[]) >= 0 AS ok;
SELECT adstream.ensure_partitions('ad_events', ARRAY['2026-01-01 10:00+00']::timestamptz[]) >= 0 AS ok;
UPDATE adstream.sources SET dedup_expired_before = '2026-01-01 10:00+00' WHERE name = 'h_ads';
INSERT INTO adstream.dedup_log (source_id, hour, seg, ids) VALUES
	(:ads_id, '2026-01-01 09:00+00', 0, '\x00000000000000000000000000000009'),	-- expired: not carried
	(:ads_id, '2026-01-01 10:00+00', 0, '\x0000000000000000000000000000000100000000000000000000000000000002');
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts) VALUES
	(:ads_id, '00000000-0000-0000-0000-000000000001', 'click', 1, 1, 7, 3, '2026-01-01 10:10+00');
INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, status, partition) VALUES
	('00000000-0000-0000-0000-0000000000a1', 'h_shop', 7, 3, 10, 'EUR', '2026-01-01 10:20+00', 'waiting', 2),
	('00000000-0000-0000-0000-0000000000a2', 'h_shop', 8, 3, 10, 'EUR', '2026-01-01 10:20+00', 'waiting', 6),
	('00000000-0000-0000-0000-0000000000a3', 'h_shop', 7, 3, 10, 'EUR', '2026-01-01 10:05+00', 'unattributed', 3),
	('00000000-0000-0000-0000-0000000000a4', 'h_shop', 9, 3, 10, 'EUR', '2026-01-01 10:05+00', 'unattributed', 6),
	('00000000-0000-0000-0000-0000000000a5', 'h_shop', 9, 3, 10, 'EUR', '2026-01-01 10:05+00', 'unattributed', NULL);
INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes)
VALUES ('h_ads', 'h-ads', 1, 7, 'invalid_json', 'x', '\x7b', 1), ('h_ads', 'h-ads', 5, 8, 'invalid_json', 'x', '\x7b', 1);

-------------------------------------------------------------------------------
-- Refusals, nothing changes
-------------------------------------------------------------------------------
\set VERBOSITY default
SELECT adstream.export_partitions('0-3,9', ARRAY['h_ads', 'h_shop']);
SELECT adstream.export_partitions('12', ARRAY['h_ads']);
SELECT adstream.export_partitions('0-3', ARRAY['nope']);
SELECT adstream.export_partitions('x');
-- A waiting order from before 0.6 (no partition) cannot be placed.
UPDATE adstream.orders SET status = 'waiting' WHERE order_id = '00000000-0000-0000-0000-0000000000a5';
SELECT adstream.export_partitions('0-3', ARRAY['h_ads', 'h_shop']);
UPDATE adstream.orders SET status = 'unattributed' WHERE order_id = '00000000-0000-0000-0000-0000000000a5';
SELECT adstream.handoff_data(424242);
SELECT adstream.confirm_handoff(424242);
SELECT adstream.import_partitions('n0', 424242);
SELECT adstream.import_partitions('n1', 1);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT adstream.export_partitions('0-3', ARRAY['h_ads', 'h_shop']);
ROLLBACK;
SELECT name, partitions FROM adstream.sources WHERE name LIKE 'h\_%' ORDER BY name;
\set VERBOSITY terse

-------------------------------------------------------------------------------
-- Export 0-3: the partitions leave, with their offsets, dead letters and
-- waiting orders; dedup ids within the horizon and clicks are copied
-------------------------------------------------------------------------------
SELECT metric, value FROM adstream.metrics WHERE name = 'h_ads' AND metric LIKE 'messages%' ORDER BY 1;
SELECT adstream.export_partitions('0-3', ARRAY['h_ads', 'h_shop']) AS hid \gset
-- The counters that left with the offsets leave the metrics' baseline too.
SELECT metric, value FROM adstream.metrics WHERE name = 'h_ads' AND metric LIKE 'messages%' ORDER BY 1;
SELECT sum(accepted) AS raw_accepted FROM adstream.offsets WHERE source = 'h_ads';
SELECT name, partitions FROM adstream.sources WHERE name LIKE 'h\_%' ORDER BY name;
SELECT source, array_agg(partition ORDER BY partition) FROM adstream.offsets WHERE source LIKE 'h\_%' GROUP BY 1 ORDER BY 1;
SELECT order_id, status, partition FROM adstream.orders WHERE source = 'h_shop' ORDER BY 1;
SELECT partition FROM adstream.rejected_events WHERE source = 'h_ads' ORDER BY 1;
SELECT direction, from_node, partitions, sources, state, items FROM adstream.handoff_status WHERE handoff_id = :hid;
SELECT item, source, count(*) FROM adstream.handoff_data(:hid) GROUP BY 1, 2 ORDER BY 1, 2;
-- The definition travels without secrets.
SELECT data->'kafka_options' AS kafka_options, data->'partitions' AS partitions, data->>'dedup_expired_before' AS expired
  FROM adstream.handoff_data(:hid) WHERE item = 'source' ORDER BY source;
SELECT data - 'received_at' AS data FROM adstream.handoff_data(:hid) WHERE item IN ('order', 'order_id') ORDER BY data->>'order_id';

-------------------------------------------------------------------------------
-- Import, as the receiving node would after the COPY: here the handoff
-- comes back from "n0", whose name the staged rows carry
-------------------------------------------------------------------------------
INSERT INTO adstream.handoff_in SELECT 'n0', d.handoff_id, d.item, d.source, d.data FROM adstream.handoff_data(:hid) d;
-- As if this node had never seen order a3, which "n0" judged.
DELETE FROM adstream.orders WHERE order_id = '00000000-0000-0000-0000-0000000000a3';
SELECT direction, from_node, state FROM adstream.handoff_status WHERE handoff_id = :hid ORDER BY 1;
-- An incomplete copy is refused.
CREATE TEMP TABLE gone AS SELECT * FROM adstream.handoff_in WHERE item = 'offset' LIMIT 1;
DELETE FROM adstream.handoff_in h USING gone g WHERE h.item = 'offset' AND h.data = g.data;
\set VERBOSITY default
SELECT adstream.import_partitions('n0', :hid);
\set VERBOSITY terse
INSERT INTO adstream.handoff_in SELECT * FROM gone;
-- The receiving node gives up at least what the exporting one had given up.
UPDATE adstream.sources SET dedup_expired_before = '-infinity' WHERE name = 'h_ads';
SELECT generation AS gen_before FROM adstream.sources WHERE name = 'h_ads' \gset
SELECT adstream.import_partitions('n0', :hid);
SELECT name, partitions, generation > :gen_before AS new_generation, dedup_expired_before
  FROM adstream.sources WHERE name LIKE 'h\_%' ORDER BY name;
SELECT ready FROM adstream.dedup_index_status();
SELECT metric, value FROM adstream.metrics WHERE name = 'h_ads' AND metric LIKE 'messages%' ORDER BY 1;
SELECT source, partition, next_offset, accepted, duplicates FROM adstream.offsets WHERE source LIKE 'h\_%' AND partition < 4 ORDER BY 1, 2;
SELECT order_id, status, partition FROM adstream.orders WHERE source = 'h_shop' ORDER BY 1;
SELECT count(*) AS staged_left FROM adstream.handoff_in;
-- The ids of 10:00 (not those of 9:00, expired) are in dedup_log twice now:
-- the export copied them, so the import brought them again.
SELECT hour, length(ids) / 16 AS ids, count(*) FROM adstream.dedup_log WHERE source_id = :ads_id GROUP BY 1, 2 ORDER BY 1;
SELECT count(*) AS clicks FROM adstream.ad_events WHERE source_id = :ads_id;
SELECT partition FROM adstream.rejected_events WHERE source = 'h_ads' ORDER BY 1;
SELECT direction, from_node, state, imported_at IS NOT NULL AS imported FROM adstream.handoff_status WHERE handoff_id = :hid ORDER BY 1;
-- Twice is refused.
INSERT INTO adstream.handoff_in SELECT 'n0', d.handoff_id, d.item, d.source, d.data FROM adstream.handoff_data(:hid) d;
\set VERBOSITY default
SELECT adstream.import_partitions('n0', :hid);
\set VERBOSITY terse
DELETE FROM adstream.handoff_in;
SELECT adstream.confirm_handoff(:hid);
SELECT state, finished_at IS NOT NULL AS finished FROM adstream.handoff_status WHERE direction = 'out' AND handoff_id = :hid;
SELECT count(*) AS items_left FROM adstream.handoff_items WHERE handoff_id = :hid;
SELECT adstream.handoff_data(:hid);
SELECT adstream.confirm_handoff(:hid);

-------------------------------------------------------------------------------
-- Drain (every partition) and cancel: the sources go, and come back
-------------------------------------------------------------------------------
SELECT adstream.export_partitions('0-7', ARRAY['h_ads', 'h_shop']) AS hid2 \gset
SELECT count(*) AS sources_left FROM adstream.sources WHERE name LIKE 'h\_%';
SELECT adstream.cancel_handoff(:hid2);
SELECT name, partitions, kind, topic, workers, kafka_options FROM adstream.sources WHERE name LIKE 'h\_%' ORDER BY name;
SELECT source, count(*) FROM adstream.offsets WHERE source LIKE 'h\_%' GROUP BY 1 ORDER BY 1;
SELECT order_id, status, partition FROM adstream.orders WHERE source = 'h_shop' ORDER BY 1;
SELECT state FROM adstream.handoff_status WHERE direction = 'out' AND handoff_id = :hid2;
SELECT adstream.cancel_handoff(:hid2);

-- A copy of an order judged elsewhere is a duplicate: orders_seen_elsewhere.
SELECT order_id, source, partition, from_node FROM adstream.orders_seen_elsewhere ORDER BY 1;

-- A source of every partition (one node growing to two) keeps the others
-- of the topic, once its workers have seen how many there are.
SELECT adstream.create_source('h_all', 'hk:9092', 'h-all') > 0 AS created;
\set VERBOSITY default
SELECT adstream.export_partitions('2-3', ARRAY['h_all']);
\set VERBOSITY terse
UPDATE adstream.sources SET partition_count = 4 WHERE name = 'h_all';
SELECT adstream.export_partitions('2-3', ARRAY['h_all']) > 0 AS exported;
SELECT partitions FROM adstream.sources WHERE name = 'h_all';

SELECT adstream.drop_source('h_ads'), adstream.drop_source('h_shop'), adstream.drop_source('h_all');
DELETE FROM adstream.orders WHERE source = 'h_shop';
DELETE FROM adstream.orders_seen_elsewhere;
