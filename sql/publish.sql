--
-- publish: sinks, the outbox and the publishing cursor (0.3).
--
-- No publisher worker runs in this database (test/regress.conf), so the SQL
-- a publisher runs is driven here by hand, as the superuser:
-- _outbox_page reads a page of the sink's current window, _sink_advance
-- moves the cursor after a Kafka commit, _sink_aborted counts an aborted
-- Kafka transaction, prune_outbox deletes what every sink has published.
-- Each statement runs in its own transaction, so a statement that writes
-- outbox rows plays a batch that commits.
--
-- Never printed: the node's name (adstream.node_name, the host name by
-- default; keys and values are compared with adstream.node_name() instead),
-- snapshots and transaction ids, outbox ids (shown relative to the first
-- one), clock times, pids.  Versions are shown as their epoch (high bits)
-- and compared with the outbox id (low bits).
--
\set SHOW_CONTEXT never
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- adstream.node_name is fixed at server start and names this installation
-- in every ad_stats key.
SELECT name, context, vartype, current_setting(name) <> '' AS is_set
  FROM pg_settings WHERE name = 'adstream.node_name';
SET adstream.node_name = 'elsewhere';

-- Until the first sink, the node has no name in the database and takes the
-- setting's; versions are made on timeline 1, epoch 1 (failover).
SELECT count(*) AS named FROM adstream.node;
SELECT adstream.node_name() = current_setting('adstream.node_name') AS from_setting,
	   adstream._timeline() AS timeline, adstream._version_base() >> 48 AS epoch,
	   adstream._version_base() & ((1::bigint << 48) - 1) AS low_bits;
-- invalid names
SELECT adstream.set_node_name('a|b');
SELECT adstream.set_node_name('');
SELECT adstream.set_node_name(NULL);

-- page(): a page as the publisher reads it.  Ids are shown relative to
-- :base, the key without the node name in front, the value without the
-- fields checked separately (node, version, record_uuid).
CREATE FUNCTION pg_temp.page(p_sink text, p_limit integer, p_base bigint)
RETURNS TABLE (id bigint, topic text, key_ok boolean, key text, value text,
			   node_ok boolean, version_ok boolean, record_uuid_ok boolean)
LANGUAGE sql AS $$
	SELECT p.id - p_base, p.topic,
		   p.record_key = adstream._record_key(o.kind, o.ad_id, o.window_start, o.order_id),
		   CASE o.kind WHEN 'ad_stats' THEN
				CASE WHEN starts_with(p.record_key, adstream.node_name() || '|')
					 THEN '<node>' || substr(p.record_key, length(adstream.node_name()) + 1) END
				ELSE p.record_key END,
		   (p.value::jsonb - 'node' - 'version' - 'record_uuid')::text,
		   p.value::jsonb ->> 'node' = adstream.node_name(),
		   -- drawn as the page is read (record_version_seq), in the versions' epoch
		   ((p.value::jsonb -> 'version')::bigint - adstream._version_base()) BETWEEN 1 AND (1::bigint << 48) - 1,
		   (p.value::jsonb ->> 'record_uuid')::uuid = adstream.record_uuid(o.kind, p.record_key)
	  FROM adstream._outbox_page(p_sink, p_limit) p
	  LEFT JOIN adstream.outbox o ON o.id = p.id
	 ORDER BY p.id
$$;

-- cursor(): a sink's cursor and counters, snapshots compared with the ones
-- saved by \gset rather than shown.
CREATE FUNCTION pg_temp.cursor(p_sink text, p_base bigint)
RETURNS TABLE (name text, window_open boolean, last_id bigint, txns_committed bigint, txns_aborted bigint,
			   records_published bigint, published_at_set boolean)
LANGUAGE sql AS $$
	SELECT s.name, s.target_snapshot IS NOT NULL,
		   CASE WHEN s.last_id = 0 THEN 0 ELSE s.last_id - p_base END,
		   s.txns_committed, s.txns_aborted, s.records_published, s.last_publish_at IS NOT NULL
	  FROM adstream.sinks s WHERE s.name = p_sink
$$;

-------------------------------------------------------------------------------
-- Results that exist before any sink
-------------------------------------------------------------------------------

SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY['2024-03-01 10:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks, updated_at)
VALUES (1, 10, '2024-03-01 10:00:00+00', 5, 1, '2024-03-01 10:00:30+00'),
	   (1, 10, '2024-03-01 10:01:00+00', 3, 0, '2024-03-01 10:01:30+00'),
	   (2, 20, '2024-03-01 10:00:00+00', 7, 2, '2024-03-01 10:00:40+00');
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, attribution, record_uuid, attributed_at)
SELECT o, 1, 10, 'c0000000-0000-4000-8000-000000000001', '2024-03-01 09:55:00+00', '2024-03-01 10:05:00+00',
	   42.50, 'EUR', 'click', adstream.record_uuid('attributed_orders', o::text), '2024-03-01 10:20:00+00'
  FROM (VALUES ('00000000-0000-4000-8000-000000000001'::uuid)) AS v(o);
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, attribution, record_uuid, attributed_at)
SELECT o, 2, 20, 'c0000000-0000-4000-8000-000000000002', '2024-03-01 09:58:00+00', '2024-03-01 10:06:00+00',
	   10, 'USD', 'view', adstream.record_uuid('attributed_orders', o::text), '2024-03-01 10:21:00+00'
  FROM (VALUES ('00000000-0000-4000-8000-000000000002'::uuid)) AS v(o);

-- Without a sink nothing is published, so nothing is queued.
SELECT adstream._publishing() AS publishing;
SELECT count(*) AS outbox_rows FROM adstream.outbox;

-------------------------------------------------------------------------------
-- create_sink: argument errors (each must leave no trace)
-------------------------------------------------------------------------------

-- name
SELECT adstream.create_sink('bad name', 'k:9092');
SELECT adstream.create_sink('', 'k:9092');
SELECT adstream.create_sink('.hidden', 'k:9092');
SELECT adstream.create_sink('-dash', 'k:9092');
SELECT adstream.create_sink(repeat('n', 64), 'k:9092');
SELECT adstream.create_sink(NULL, 'k:9092');

-- brokers
SELECT adstream.create_sink('s', '');
SELECT adstream.create_sink('s', '  ');
SELECT adstream.create_sink('s', NULL);

-- options is not an object
SELECT adstream.create_sink('s', 'k:9092', '[1, 2]');
SELECT adstream.create_sink('s', 'k:9092', '"linger.ms=5"');
SELECT adstream.create_sink('s', 'k:9092', NULL);

-- option values must be scalars
SELECT adstream.create_sink('s', 'k:9092', '{"socket.timeout.ms": {"value": 5000}}');
SELECT adstream.create_sink('s', 'k:9092', '{"topic_ad_stats": ["a", "b"]}');
SELECT adstream.create_sink('s', 'k:9092', '{"topic_orders": null}');

-- topic options
SELECT adstream.create_sink('s', 'k:9092', '{"topic_ad_stats": "bad/topic"}');
SELECT adstream.create_sink('s', 'k:9092', '{"topic_orders": "with space"}');
SELECT adstream.create_sink('s', 'k:9092', '{"topic_orders": ""}');
SELECT adstream.create_sink('s', 'k:9092', jsonb_build_object('topic_ad_stats', repeat('t', 250)));

-- librdkafka properties that adstream sets itself (transactions)
SELECT adstream.create_sink('s', 'k:9092', '{"transactional.id": "mine"}');
SELECT adstream.create_sink('s', 'k:9092', '{"acks": "1"}');
SELECT adstream.create_sink('s', 'k:9092', '{"enable.idempotence": false}');
SELECT adstream.create_sink('s', 'k:9092', '{"transaction.timeout.ms": 1000}');
SELECT adstream.create_sink('s', 'k:9092', '{"bootstrap.servers": "elsewhere:9092"}');
SELECT adstream.create_sink('s', 'k:9092', '{"metadata.broker.list": "elsewhere:9092"}');
SELECT adstream.create_sink('s', 'k:9092', '{"partitioner": "random"}');

-- librdkafka rejects the property or its value
SELECT adstream.create_sink('s', 'k:9092', '{"no.such.property": "1"}');
SELECT adstream.create_sink('s', 'k:9092', '{"socket.timeout.ms": "soon"}');
-- the value of a secret-looking property is never echoed back
SELECT adstream.create_sink('s', 'k:9092', '{"sasl.oauthbearer.method": "hunter2"}');

-- None of the failed calls left a sink or an outbox row behind.
SELECT count(*) AS sinks FROM adstream.sinks;
SELECT count(*) AS outbox_rows FROM adstream.outbox;

-------------------------------------------------------------------------------
-- create_sink: happy path
-------------------------------------------------------------------------------

-- In a transaction that has already written, the backfill could not be told
-- apart from that transaction's own writes: refused.
BEGIN;
INSERT INTO adstream.rollup_pending VALUES ('2024-03-01 10:00:00+00');
SELECT adstream.create_sink('pinot_a', 'k:9092');
ROLLBACK;
-- Above READ COMMITTED, its snapshot would be older than its wait for the
-- running batches: refused too.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT adstream.create_sink('pinot_a', 'k:9092');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT adstream.create_sink('pinot_a', 'k:9092');
ROLLBACK;
SELECT count(*) AS sinks FROM adstream.sinks;

-- Topic options and librdkafka properties (numbers and booleans are stored
-- as strings), in a transaction that has only read so far.
BEGIN;
SELECT count(*) AS sinks FROM adstream.sinks;
SELECT adstream.create_sink('pinot_a', 'kafka1:9092,kafka2:9092',
		'{"topic_ad_stats": "pinot.ad_stats", "topic_orders": "pinot.orders",
		  "socket.timeout.ms": 5000, "enable.ssl.certificate.verification": false,
		  "security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
		  "sasl.username": "pub", "sasl.password": "hunter2"}');
COMMIT;

SELECT name, brokers, topic_ad_stats, topic_orders, enabled, last_id, target_snapshot IS NULL AS no_window,
	   txns_committed, txns_aborted, records_published, last_publish_at
  FROM adstream.sinks;
-- the table keeps the credentials for the publisher
SELECT kafka_options FROM adstream.sinks;

-- duplicate name
SELECT adstream.create_sink('pinot_a', 'other:9092');

-- The first sink named the node in the database, from the setting; it can
-- no longer be renamed (Pinot would add the new name's rows to the old).
SELECT name = current_setting('adstream.node_name') AS named_from_setting, version_epoch, published_timeline
  FROM adstream.node;
SELECT adstream.set_node_name('renamed');
-- A publisher's transactional.id is the node's, the database's and the
-- sink's name: the same on a promoted standby.  It notes the timeline it
-- publishes on.
SELECT transactional_id = 'adstream.' || adstream.node_name() || '.' || current_database() || '.pinot_a' AS txn_id_ok,
	   conflict
  FROM adstream._publisher_identity('pinot_a');
SELECT published_timeline FROM adstream.node;

-- The backfill: every current result is queued, in create_sink's
-- transaction, which the sink's cursor has not passed yet.
SELECT min(id) AS base FROM adstream.outbox \gset
SELECT kind, ad_id, window_start, order_id FROM adstream.outbox ORDER BY kind, ad_id, window_start, order_id;
SELECT count(DISTINCT o.txid) AS transactions,
	   bool_and(NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)) AS after_the_cursor
  FROM adstream.outbox o, adstream.sinks s WHERE s.name = 'pinot_a';

-- Now results are queued.
SELECT adstream._publishing() AS publishing;

-- sink_status: no worker in this database, everything is backlog.
SELECT sink, sink_state, worker_pid, worker_state, cursor_last_id, backlog_rows, backlog_bytes > 0 AS has_bytes,
	   records_published, txns_committed, txns_aborted, last_publish_at, last_error, last_error_at
  FROM adstream.sink_status;
SELECT s.cursor_snapshot = k.done_snapshot::text AS cursor_is_done_snapshot
  FROM adstream.sink_status s JOIN adstream.sinks k ON k.name = s.sink;

-------------------------------------------------------------------------------
-- The first window: the backfill
-------------------------------------------------------------------------------

SELECT done_snapshot::text AS done_0 FROM adstream.sinks WHERE name = 'pinot_a' \gset

-- The first page opens the window and returns the whole current state:
-- keys are <node>|<ad_id>|<window start in epoch ms> and order ids, values
-- JSON with a version drawn as it is read and record_uuid = record_uuid(kind, key).
SELECT * FROM pg_temp.page('pinot_a', 100, :base);
SELECT target_snapshot::text AS target_1 FROM adstream.sinks WHERE name = 'pinot_a' \gset
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'done_0' AS done_kept FROM adstream.sinks WHERE name = 'pinot_a';

-- A missing sink has no page.
SELECT * FROM adstream._outbox_page('nosuch', 10);

-- A batch commits after the window was opened: it is not in this window.
WITH m AS (
	INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks, updated_at)
	VALUES (3, 30, '2024-03-01 10:02:00+00', 1, 0, '2024-03-01 10:02:10+00')
	RETURNING ad_id, window_start)
INSERT INTO adstream.outbox (kind, ad_id, window_start) SELECT 'ad_stats', ad_id, window_start FROM m;

-- Reading again (as after an aborted Kafka transaction) gives the same
-- window, page by page (p_limit).
SELECT id, topic, key FROM pg_temp.page('pinot_a', 2, :base);
SELECT id, topic, key FROM pg_temp.page('pinot_a', 2, :base);
SELECT target_snapshot::text = :'target_1' AS target_kept FROM adstream.sinks WHERE name = 'pinot_a';
-- an aborted Kafka transaction is counted and changes nothing else
SELECT adstream._sink_aborted('pinot_a');
SELECT * FROM pg_temp.cursor('pinot_a', :base);

-- After the Kafka commit of a full page: the window stays open, the cursor
-- moves from where the page was read (0) to the page's last id.
SELECT adstream._sink_advance('pinot_a', 0, :base + 1, 2, false) AS moved;
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'done_0' AS done_kept, target_snapshot::text = :'target_1' AS target_kept
  FROM adstream.sinks WHERE name = 'pinot_a';
SELECT sink, cursor_last_id - :base AS cursor_last_id, backlog_rows FROM adstream.sink_status;
-- The same page committed again (by a second publisher of the sink) finds
-- the cursor gone from where it read: nothing changes.
SELECT adstream._sink_advance('pinot_a', 0, :base + 1, 2, false) AS moved;
SELECT * FROM pg_temp.cursor('pinot_a', :base);

SELECT id, topic, key FROM pg_temp.page('pinot_a', 2, :base);
SELECT adstream._sink_advance('pinot_a', :base + 1, :base + 3, 2, false) AS moved;
SELECT target_snapshot::text = :'target_1' AS target_kept FROM adstream.sinks WHERE name = 'pinot_a';

-- The last page is short: the window is done and closes; the next one
-- starts where it ended.
SELECT id, topic, key FROM pg_temp.page('pinot_a', 2, :base);
SELECT adstream._sink_advance('pinot_a', :base + 3, :base + 4, 1, true) AS moved;
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'target_1' AS done_is_previous_target FROM adstream.sinks WHERE name = 'pinot_a';
SELECT sink, cursor_last_id, backlog_rows FROM adstream.sink_status;
-- Without an open window there is nothing to advance.
SELECT adstream._sink_advance('pinot_a', 0, :base + 4, 1, true) AS moved;
SELECT * FROM pg_temp.cursor('pinot_a', :base);

-------------------------------------------------------------------------------
-- The next windows: what committed meanwhile
-------------------------------------------------------------------------------

-- A batch changes a minute already published: the same key again, with a
-- higher version.
WITH m AS (
	UPDATE adstream.ad_stats_minute SET impressions = impressions + 10, updated_at = '2024-03-01 10:03:00+00'
	 WHERE ad_id = 1 AND window_start = '2024-03-01 10:00:00+00'
	RETURNING ad_id, window_start)
INSERT INTO adstream.outbox (kind, ad_id, window_start) SELECT 'ad_stats', ad_id, window_start FROM m;
-- A credited order is queued by the trigger on attributed_orders.
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, attribution, record_uuid, attributed_at)
SELECT o, 3, 30, 'c0000000-0000-4000-8000-000000000003', '2024-03-01 10:02:00+00', '2024-03-01 10:07:00+00',
	   0.99, 'EUR', 'click', adstream.record_uuid('attributed_orders', o::text), '2024-03-01 10:22:00+00'
  FROM (VALUES ('00000000-0000-4000-8000-000000000003'::uuid)) AS v(o);
SELECT kind, ad_id, order_id FROM adstream.outbox WHERE id > :base + 5 ORDER BY id;
-- A queued minute whose partition retention has dropped since: no value,
-- nothing to send.  (A minute whose partition is kept but whose counts were
-- forgotten is sent with zeros: sql/source_counts.sql.)
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 99, '2024-02-29 09:00:00+00');

SELECT sink, backlog_rows FROM adstream.sink_status;
SELECT * FROM pg_temp.page('pinot_a', 100, :base);
SELECT target_snapshot::text AS target_2 FROM adstream.sinks WHERE name = 'pinot_a' \gset
-- three records sent (the fourth row has no value), the window closes
SELECT adstream._sink_advance('pinot_a', 0, :base + 8, 3, true) AS moved;
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'target_2' AS done_is_previous_target FROM adstream.sinks WHERE name = 'pinot_a';

-- Nothing new: an idle sink opens no window and writes nothing.
SELECT * FROM pg_temp.page('pinot_a', 100, :base);
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'target_2' AS done_kept FROM adstream.sinks WHERE name = 'pinot_a';

-- A window whose last page is full is closed by the next read, which finds
-- nothing left in it.
INSERT INTO adstream.outbox (kind, ad_id, window_start)
VALUES ('ad_stats', 1, '2024-03-01 10:00:00+00'), ('ad_stats', 1, '2024-03-01 10:01:00+00');
SELECT id, topic, key FROM pg_temp.page('pinot_a', 2, :base);
SELECT target_snapshot::text AS target_3 FROM adstream.sinks WHERE name = 'pinot_a' \gset
SELECT adstream._sink_advance('pinot_a', 0, :base + 10, 2, false) AS moved;
SELECT * FROM pg_temp.page('pinot_a', 2, :base);
SELECT * FROM pg_temp.cursor('pinot_a', :base);
SELECT done_snapshot::text = :'target_3' AS done_is_previous_target FROM adstream.sinks WHERE name = 'pinot_a';
SELECT sink, backlog_rows, records_published, txns_committed, txns_aborted, last_publish_at IS NOT NULL AS published
  FROM adstream.sink_status;

-------------------------------------------------------------------------------
-- The real writers queue their changes: attribute_orders (trigger)
-------------------------------------------------------------------------------

-- An order received more than attribution_max_wait ago is judged at once.
SELECT adstream.ensure_partitions('ad_events', ARRAY['2024-03-01 11:00:00+00']::timestamptz[]) AS created;
INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
VALUES (1, 'c0000000-0000-4000-8000-000000000004', 'click', 4, 40, 7, 5, '2024-03-01 11:00:00+00');
INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, received_at)
VALUES ('00000000-0000-4000-8000-000000000004', 'shop', 7, 5, 5.00, 'EUR', '2024-03-01 11:10:00+00',
		now() - interval '11 minutes');
SELECT adstream.attribute_orders() AS judged;
SELECT kind, order_id FROM adstream.outbox WHERE id > :base + 10 ORDER BY id;
SELECT id, topic, key, version_ok, record_uuid_ok FROM pg_temp.page('pinot_a', 100, :base);
SELECT adstream._sink_advance('pinot_a', 0, :base + 11, 1, true) AS moved;

-------------------------------------------------------------------------------
-- prune_outbox: only what every sink has published
-------------------------------------------------------------------------------

-- pinot_a has published everything.
SELECT count(*) AS outbox_rows FROM adstream.outbox;
SELECT adstream.prune_outbox() AS pruned;
SELECT count(*) AS outbox_rows FROM adstream.outbox;

-- A change, then a second sink with the default topics: its backfill
-- holds the change already, so its cursor starts after the change.
WITH m AS (
	UPDATE adstream.ad_stats_minute SET clicks = clicks + 1, updated_at = '2024-03-01 10:04:00+00'
	 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00'
	RETURNING ad_id, window_start)
INSERT INTO adstream.outbox (kind, ad_id, window_start) SELECT 'ad_stats', ad_id, window_start FROM m;
SELECT min(id) AS base_b FROM adstream.outbox \gset
SELECT adstream.create_sink('pinot_b', 'kafka-b:9092');
SELECT name, brokers, topic_ad_stats, topic_orders, kafka_options FROM adstream.sinks WHERE name = 'pinot_b';
SELECT count(*) AS outbox_rows, count(*) FILTER (WHERE id > :base_b) AS backfill_b FROM adstream.outbox;
SELECT count(*) AS backfill_ad_stats FROM adstream.ad_stats_minute;
SELECT count(*) AS backfill_orders FROM adstream.attributed_orders;
SELECT sink, backlog_rows FROM adstream.sink_status ORDER BY sink;

-- Neither sink has passed anything.  Only the change goes (#13
-- cross-region): pinot_b's backfill row of the same key supersedes it, and
-- both sinks send that row, with the key's current value and a higher
-- version.  The key keeps that one row.
SELECT adstream.prune_outbox() AS pruned;
SELECT count(*) AS rows_of_key, bool_and(id > :base_b) AS the_backfill_row FROM adstream.outbox
 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';

-- pinot_a publishes, as every sink does, pinot_b's backfill (committed
-- after pinot_a's cursor); the backfill is now behind pinot_a's cursor only.
SELECT count(*) AS rows_a FROM adstream._outbox_page('pinot_a', 100);
SELECT adstream._sink_advance('pinot_a', 0, max(id), count(*)::integer, true) AS moved FROM adstream.outbox;
SELECT sink, backlog_rows FROM adstream.sink_status ORDER BY sink;
SELECT adstream.prune_outbox() AS pruned;
SELECT count(*) AS outbox_rows, count(*) FILTER (WHERE id > :base_b) AS backfill_b FROM adstream.outbox;

-- pinot_b's first window is exactly its backfill.
SELECT count(*) AS rows_b, count(*) FILTER (WHERE topic = 'adstream.ad_stats') AS ad_stats,
	   count(*) FILTER (WHERE topic = 'adstream.attributed_orders') AS orders,
	   bool_and(value IS NOT NULL) AS all_with_values
  FROM adstream._outbox_page('pinot_b', 100);
SELECT adstream._sink_advance('pinot_b', 0, max(id), count(*)::integer, true) AS moved FROM adstream.outbox;
SELECT adstream.prune_outbox() AS pruned;
SELECT count(*) AS outbox_rows FROM adstream.outbox;
SELECT sink, backlog_rows FROM adstream.sink_status ORDER BY sink;

-------------------------------------------------------------------------------
-- pause, resume, drop
-------------------------------------------------------------------------------

SELECT generation AS gen_before FROM adstream.sinks WHERE name = 'pinot_b' \gset
SELECT adstream.pause_sink('pinot_b');
SELECT sink, sink_state, worker_state FROM adstream.sink_status ORDER BY sink;
-- pausing twice is harmless, and keeps the generation
SELECT adstream.pause_sink('pinot_b');
SELECT enabled, generation = :'gen_before' AS generation_unchanged FROM adstream.sinks WHERE name = 'pinot_b';
-- a paused sink keeps its backlog in the outbox
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 1, '2024-03-01 10:01:00+00');
SELECT count(*) AS rows_a FROM adstream._outbox_page('pinot_a', 100);
SELECT adstream._sink_advance('pinot_a', 0, max(id), 1, true) AS moved FROM adstream.outbox;
SELECT adstream.prune_outbox() AS pruned;
SELECT sink, sink_state, backlog_rows FROM adstream.sink_status ORDER BY sink;
-- #13 cross-region: while pinot_b waits, one key changes three times, and
-- pinot_a sends the first change only.  Pruning keeps the key's last row:
-- pinot_b (which sent none) and pinot_a (which sent the first) both send
-- it, with the key's current value under a version above the first send's.
UPDATE adstream.ad_stats_minute SET clicks = clicks + 1 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 2, '2024-03-01 10:00:00+00')
RETURNING id AS change_1 \gset
SELECT count(*) AS rows_a, max((value::jsonb -> 'version')::bigint) AS first_version
  FROM adstream._outbox_page('pinot_a', 100) \gset
SELECT :rows_a AS rows_a;
SELECT adstream._sink_advance('pinot_a', 0, :change_1, 1, true) AS moved;
UPDATE adstream.ad_stats_minute SET clicks = clicks + 1 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 2, '2024-03-01 10:00:00+00');
UPDATE adstream.ad_stats_minute SET clicks = clicks + 1 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 2, '2024-03-01 10:00:00+00')
RETURNING id AS change_3 \gset
SELECT sink, backlog_rows FROM adstream.sink_status ORDER BY sink;
SELECT adstream.prune_outbox() AS pruned;
SELECT id = :change_3 AS the_last_change FROM adstream.outbox
 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
SELECT sink, backlog_rows FROM adstream.sink_status ORDER BY sink;
SELECT p.id = :change_3 AS the_last_change, (p.value::jsonb ->> 'clicks')::bigint = m.clicks AS current_value,
	   (p.value::jsonb -> 'version')::bigint > :first_version AS its_version_is_higher
  FROM adstream._outbox_page('pinot_a', 100) p,
	   adstream.ad_stats_minute m WHERE m.ad_id = 2 AND m.window_start = '2024-03-01 10:00:00+00';
SELECT adstream._sink_advance('pinot_a', 0, :change_3, 1, true) AS moved;
-- Several rows of one key in a page send one record: the key's last row,
-- with its current value; the others send nothing (a null value).
UPDATE adstream.ad_stats_minute SET clicks = clicks + 1 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 2, '2024-03-01 10:00:00+00')
RETURNING id AS coalesce_1 \gset
UPDATE adstream.ad_stats_minute SET clicks = clicks + 1 WHERE ad_id = 2 AND window_start = '2024-03-01 10:00:00+00';
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats', 2, '2024-03-01 10:00:00+00')
RETURNING id AS coalesce_2 \gset
SELECT p.id - :coalesce_1 AS page_row, p.value IS NOT NULL AS sends,
	   (p.value::jsonb ->> 'clicks')::bigint = m.clicks AS current_value
  FROM adstream._outbox_page('pinot_a', 100) p,
	   adstream.ad_stats_minute m WHERE m.ad_id = 2 AND m.window_start = '2024-03-01 10:00:00+00'
 ORDER BY p.id;
SELECT adstream._sink_advance('pinot_a', 0, :coalesce_2, 1, true) AS moved;
-- resuming gives the sink a new generation, so an old publisher stands down
SELECT adstream.resume_sink('pinot_b');
SELECT enabled, generation <> :'gen_before' AS new_generation FROM adstream.sinks WHERE name = 'pinot_b';
SELECT generation AS gen_running FROM adstream.sinks WHERE name = 'pinot_b' \gset
-- resuming a running sink changes nothing
SELECT adstream.resume_sink('pinot_b');
SELECT enabled, generation = :'gen_running' AS generation_unchanged FROM adstream.sinks WHERE name = 'pinot_b';
SELECT sink, sink_state, worker_state FROM adstream.sink_status ORDER BY sink;

-- missing sinks
SELECT adstream.pause_sink('nosuch');
SELECT adstream.resume_sink('nosuch');
SELECT adstream.drop_sink('nosuch');
SELECT adstream.drop_sink(NULL);

-- Dropping a sink forgets its cursor and prunes what the others have
-- published: pinot_b's backlog row goes with it.
SELECT adstream.drop_sink('pinot_b');
SELECT name FROM adstream.sinks;
SELECT count(*) AS outbox_rows FROM adstream.outbox;
-- dropping twice fails
SELECT adstream.drop_sink('pinot_b');

-- Without sinks, prune_outbox deletes every committed row, and nothing new
-- is queued.
INSERT INTO adstream.outbox (kind, order_id) VALUES ('attributed_orders', '00000000-0000-4000-8000-000000000001');
SELECT adstream.drop_sink('pinot_a');
SELECT count(*) AS sinks FROM adstream.sinks;
SELECT count(*) AS outbox_rows FROM adstream.outbox;
INSERT INTO adstream.outbox (kind, order_id) VALUES ('attributed_orders', '00000000-0000-4000-8000-000000000002');
SELECT adstream.prune_outbox() AS pruned;
SELECT adstream._publishing() AS publishing;
INSERT INTO adstream.attributed_orders (order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts,
		amount, currency, record_uuid)
VALUES ('00000000-0000-4000-8000-000000000005', 1, 10, 'c0000000-0000-4000-8000-000000000005',
		'2024-03-01 09:59:00+00', '2024-03-01 10:08:00+00', 1, 'EUR',
		adstream.record_uuid('attributed_orders', '00000000-0000-4000-8000-000000000005'));
SELECT count(*) AS outbox_rows FROM adstream.outbox;
SELECT count(*) AS sink_status_rows FROM adstream.sink_status;

-- The outbox checks what a row names.
\set VERBOSITY terse
INSERT INTO adstream.outbox (kind, ad_id) VALUES ('ad_stats', 1);
INSERT INTO adstream.outbox (kind, order_id, ad_id, window_start)
VALUES ('attributed_orders', '00000000-0000-4000-8000-000000000001', 1, '2024-03-01 10:00:00+00');
INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats_hour', 1, '2024-03-01 10:00:00+00');
\set VERBOSITY default

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_adstream_pub_plain, regress_adstream_pub_reader, regress_adstream_pub_admin;
RESET client_min_messages;
CREATE ROLE regress_adstream_pub_plain NOLOGIN;
CREATE ROLE regress_adstream_pub_reader NOLOGIN IN ROLE adstream_reader;
CREATE ROLE regress_adstream_pub_admin NOLOGIN IN ROLE adstream_admin;

SELECT adstream.create_sink('perm_sink', 'k:9092', '{"sasl.password": "hunter2"}');

SELECT c.relname,
	   has_table_privilege('public', c.oid, 'SELECT') AS public_reads,
	   has_table_privilege('adstream_reader', c.oid, 'SELECT') AS reader_reads,
	   has_table_privilege('adstream_admin', c.oid, 'SELECT') AS admin_reads,
	   has_table_privilege('adstream_admin', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS admin_writes
  FROM pg_class c
 WHERE c.oid IN ('adstream.sinks'::regclass, 'adstream.outbox'::regclass, 'adstream.sink_status'::regclass)
 ORDER BY 1;
SELECT p.oid::regprocedure AS function,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_calls,
	   has_function_privilege('adstream_reader', p.oid, 'EXECUTE') AS reader_calls,
	   has_function_privilege('adstream_admin', p.oid, 'EXECUTE') AS admin_calls,
	   p.prosecdef AS definer
  FROM pg_proc p
 WHERE p.pronamespace = 'adstream'::regnamespace
   AND p.proname IN ('create_sink', 'drop_sink', 'pause_sink', 'resume_sink', 'publisher_status', 'prune_outbox',
					 '_publishing', '_queue_attributed_orders', '_record_key', '_outbox_page', '_sink_advance',
					 '_sink_aborted', '_sink_must_exist')
 ORDER BY p.oid::regprocedure::text;

-- a role outside adstream: nothing
SET SESSION AUTHORIZATION regress_adstream_pub_plain;
SELECT * FROM adstream.sink_status;
SELECT * FROM adstream.sinks;
SELECT * FROM adstream.outbox;
SELECT * FROM adstream.publisher_status();
SELECT adstream.create_sink('plain_sink', 'k:9092');
SELECT adstream.pause_sink('perm_sink');
SELECT adstream.drop_sink('perm_sink');
RESET SESSION AUTHORIZATION;

-- a reader: the status, not the configuration (credentials) nor the outbox
SET SESSION AUTHORIZATION regress_adstream_pub_reader;
SELECT sink, sink_state, worker_state, backlog_rows FROM adstream.sink_status;
SELECT count(*) AS publishers FROM adstream.publisher_status();
SELECT * FROM adstream.sinks;
SELECT * FROM adstream.outbox;
SELECT adstream.create_sink('reader_sink', 'k:9092');
SELECT adstream.pause_sink('perm_sink');
SELECT adstream.resume_sink('perm_sink');
SELECT adstream.drop_sink('perm_sink');
SELECT * FROM adstream._outbox_page('perm_sink', 10);
SELECT adstream._sink_advance('perm_sink', 0, 0, 0, true);
SELECT adstream.prune_outbox();
RESET SESSION AUTHORIZATION;

-- an admin: manages sinks through the API, sees their status, but not the
-- table with the credentials, the outbox, or the publisher's functions
SET SESSION AUTHORIZATION regress_adstream_pub_admin;
SELECT adstream.create_sink('admin_sink', 'k:9092', '{"topic_orders": "admin.orders", "sasl.password": "admin-secret"}');
SELECT adstream.pause_sink('admin_sink');
SELECT sink, sink_state, worker_state, backlog_rows FROM adstream.sink_status ORDER BY sink;
SELECT adstream.resume_sink('admin_sink');
SELECT adstream.pause_sink('perm_sink');
SELECT adstream.resume_sink('perm_sink');
SELECT count(*) AS leaks FROM adstream.sink_status s WHERE s::text LIKE '%secret%' OR s::text LIKE '%hunter2%';
SELECT * FROM adstream.sinks;
SELECT kafka_options FROM adstream.sinks;
SELECT * FROM adstream.outbox;
UPDATE adstream.sinks SET last_id = 0;
DELETE FROM adstream.outbox;
SELECT * FROM adstream._outbox_page('admin_sink', 10);
SELECT adstream._sink_advance('admin_sink', 0, 0, 0, true);
SELECT adstream._sink_aborted('admin_sink');
SELECT adstream.prune_outbox();
SELECT adstream._publishing();
SELECT adstream._record_key('attributed_orders', NULL, NULL, '00000000-0000-4000-8000-000000000001');
-- librdkafka properties that run programs or load code are for superusers
SELECT adstream.create_sink('admin_evil', 'k:9092', '{"sasl.kerberos.kinit.cmd": "/bin/true"}');
SELECT adstream.create_sink('admin_evil', 'k:9092', '{"ssl.engine.location": "/nonexistent/engine.so"}');
RESET SESSION AUTHORIZATION;
SELECT current_user = session_user AS back_to_superuser;
-- the admin's sink is configured as asked, credentials included
SELECT name, topic_ad_stats, topic_orders, enabled, kafka_options ->> 'sasl.password' AS password
  FROM adstream.sinks ORDER BY name;
SET SESSION AUTHORIZATION regress_adstream_pub_admin;
SELECT adstream.drop_sink('admin_sink');
SELECT sink FROM adstream.sink_status ORDER BY sink;
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- Dump and restore: a source or sink whose origin is another installation's
-- (what pg_restore leaves) is held until adopt_restored; adopting the first
-- sink re-dates the restored outbox, and the versions' epoch jumps ahead
-------------------------------------------------------------------------------

SELECT adstream.create_source('restored_src', 'k:9092', 'restored_topic');
-- what the API creates is this installation's
SELECT (SELECT bool_and(origin = adstream._origin()) FROM adstream.sources) AS sources_here,
	   (SELECT bool_and(origin = adstream._origin()) FROM adstream.sinks) AS sinks_here,
	   adstream._origin() ~ '^[0-9]+/[0-9]+/[0-9]+$' AS origin_format;
-- A restore: the rows, the sink's cursor and the outbox's transaction ids
-- are another cluster's.
UPDATE adstream.sources SET origin = '1/5/16384' WHERE name = 'restored_src';
UPDATE adstream.sinks SET origin = '1/5/16384', done_snapshot = '9000000:9000000:', target_snapshot = NULL, last_id = 0;
INSERT INTO adstream.outbox (txid, kind, order_id)
VALUES ('8999999', 'attributed_orders', '00000000-0000-4000-8000-000000000777'),
	   ('9000001', 'attributed_orders', '00000000-0000-4000-8000-000000000778');
SELECT count(*) AS outbox_rows FROM adstream.outbox \gset
SELECT source, source_state, worker_state, last_error FROM adstream.source_status WHERE source = 'restored_src';
SELECT sink, sink_state, worker_state, backlog_rows = :outbox_rows AS backlog_is_everything, last_error
  FROM adstream.sink_status;
-- While a restored sink waits, nothing is pruned and no sink is created.
SELECT adstream.prune_outbox() AS pruned;
SELECT adstream.create_sink('new_sink', 'k:9092');
-- The reader may not adopt; the admin may.
SET SESSION AUTHORIZATION regress_adstream_pub_reader;
SELECT adstream.adopt_restored();
RESET SESSION AUTHORIZATION;
SELECT adstream._version_base() >> 48 AS epoch_before \gset
SET SESSION AUTHORIZATION regress_adstream_pub_admin;
SELECT adstream.adopt_restored('no_such');
SELECT adstream.adopt_restored('perm_sink') AS adopted;
RESET SESSION AUTHORIZATION;
-- The copy's versions are ahead of the original's: its epoch (recorded as
-- published on timeline 1) plus room for 100 failovers.
SELECT (adstream._version_base() >> 48) - :epoch_before AS epoch_jump, version_epoch, published_timeline
  FROM adstream.node;
SELECT count(*) = :outbox_rows AS kept, bool_and(txid = '3') AS redated FROM adstream.outbox;
SELECT name, done_snapshot, target_snapshot, last_id, origin = adstream._origin() AS here FROM adstream.sinks;
SELECT sink, sink_state, backlog_rows = :outbox_rows AS backlog_is_everything, last_error FROM adstream.sink_status;
-- The adopted sink sends every row; the source is still held.
SELECT count(*) = :outbox_rows AS first_page_is_everything FROM adstream._outbox_page('perm_sink', 100000);
SELECT source, source_state FROM adstream.source_status WHERE source = 'restored_src';
SELECT adstream.adopt_restored() AS adopted;
SELECT source, source_state, worker_state, last_error FROM adstream.source_status WHERE source = 'restored_src';
SELECT adstream.adopt_restored() AS adopted;
-- A sink from a dump older than 0.5 has no origin, and the dump no outbox:
-- it is sent the whole current state.
DELETE FROM adstream.outbox;
UPDATE adstream.sinks SET origin = NULL, done_snapshot = '9000000:9000000:', target_snapshot = NULL, last_id = 0;
SELECT sink, sink_state FROM adstream.sink_status;
SELECT adstream.adopt_restored() AS adopted;
SELECT (SELECT count(*) FROM adstream.outbox WHERE kind = 'ad_stats') AS ad_stats_rows,
	   (SELECT count(*) FROM adstream.ad_stats_minute) AS minutes,
	   (SELECT count(*) FROM adstream.outbox WHERE kind = 'attributed_orders') AS order_rows,
	   (SELECT count(*) FROM adstream.attributed_orders) AS credited;
SELECT adstream.drop_source('restored_src');

-------------------------------------------------------------------------------
-- An ad_stats value is written in C (issue #12, publishing cost)
-------------------------------------------------------------------------------

-- _ad_stats_record writes what jsonb_build_object wrote, byte for byte:
-- node names that need escaping, negative and extreme ids, no campaign,
-- times before 1970 and half milliseconds (rounded away from zero), and the
-- record uuid of the key _record_key gives.
SELECT t.n AS case,
	   adstream._ad_stats_record(adstream._record_key('ad_stats', t.ad, t.w, NULL), t.node, t.ad, t.w,
								 t.camp, t.imp, t.clk, t.v, t.u)
	   = jsonb_build_object('node', t.node, 'ad_id', t.ad, 'campaign_id', t.camp,
			'window_start', (extract(epoch FROM t.w) * 1000)::bigint, 'impressions', t.imp, 'clicks', t.clk,
			'version', t.v,
			'record_uuid', adstream.record_uuid('ad_stats', adstream._record_key('ad_stats', t.ad, t.w, NULL)),
			'updated_at', (extract(epoch FROM t.u) * 1000)::bigint)::text AS same
  FROM (VALUES
	(1, adstream.node_name(), 42::bigint, '2024-03-01 10:00:00+00'::timestamptz, 7::bigint, 1234::bigint,
	 56::bigint, 281474976710656::bigint, '2024-03-01 10:00:12.345678+00'::timestamptz),
	(2, 'a "quoted" \ name' || chr(9) || 'é' || chr(1), -5, '1969-12-31 23:59:00+00', NULL, 0, 0, 1,
	 '1969-12-31 23:59:59.9995+00'),
	(3, '', 9223372036854775807, '2024-03-01 10:00:00+00', -1, 9223372036854775807, 1, 9223372036854775807,
	 '2024-03-01 10:00:00.0005+00'),
	(4, 'x', 1, '1900-01-01 00:00:00+00', 1, 1, 1, 1, '1969-12-31 23:59:59.9994+00'),
	(5, 'x', 1, '2024-03-01 10:00:00+00', 1, 1, 1, -1, '1969-12-31 23:59:59.9996+00')
  ) AS t(n, node, ad, w, camp, imp, clk, v, u)
 ORDER BY t.n;
-- every other argument is required, and times must be finite
\set VERBOSITY terse
SELECT adstream._ad_stats_record('k', 'x', 1, '2024-03-01 10:00:00+00', 1, 1, NULL, 1, now());
SELECT adstream._ad_stats_record('k', 'x', 1, 'infinity', 1, 1, 1, 1, now());
\set VERBOSITY default

-------------------------------------------------------------------------------
-- sink_status stays cheap with a large backlog
-------------------------------------------------------------------------------

-- Its backlog is counted once per sink, by a function: written into the
-- view, the count's cost was multiplied by the sinks' estimated rows, and
-- a backlog of 100,000 rows had every status query JIT-compiled.
CREATE FUNCTION pg_temp.plan_cost(q text) RETURNS float LANGUAGE plpgsql AS $$
DECLARE
	j	json;
BEGIN
	EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO j;
	RETURN (j -> 0 -> 'Plan' ->> 'Total Cost')::float;
END
$$;
SELECT adstream.create_sink('backlog_sink', 'k:9092');
INSERT INTO adstream.outbox (kind, ad_id, window_start)
SELECT 'ad_stats', g % 1000, '2024-03-01 00:00:00+00'::timestamptz + (g / 1000) * interval '1 minute'
  FROM generate_series(1, 150000) g;
ANALYZE adstream.outbox;
SELECT pg_temp.plan_cost('SELECT * FROM adstream.sink_status') < current_setting('jit_above_cost')::float
	   AS below_jit_cost;
SELECT sink, backlog_rows, backlog_bytes > 0 AS has_bytes FROM adstream.sink_status WHERE sink = 'backlog_sink';
SELECT adstream.drop_sink('backlog_sink');
DELETE FROM adstream.outbox;

-------------------------------------------------------------------------------
-- Clean up (roles are cluster-wide)
-------------------------------------------------------------------------------

SELECT adstream.drop_sink('perm_sink');
SELECT count(*) AS sinks FROM adstream.sinks;
SELECT count(*) AS outbox_rows FROM adstream.outbox;
DROP ROLE regress_adstream_pub_plain, regress_adstream_pub_reader, regress_adstream_pub_admin;
TRUNCATE adstream.orders, adstream.attributed_orders, adstream.ad_events, adstream.ad_stats_minute;
DROP TABLE adstream.ad_stats_minute_p20240301_0000, adstream.ad_events_p20240301_1100;
SELECT count(*) AS partitions_left FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
 WHERE c.relnamespace = 'adstream'::regnamespace;
