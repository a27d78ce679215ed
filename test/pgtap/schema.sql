-- pgTAP: adstream's schema, tables, columns, keys, partitioning, views,
-- roles and comments.  Run by test/t/001_pgtap.pl through pg_prove.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

BEGIN;
SELECT plan(274);

-------------------------------------------------------------------------------
-- Schema
-------------------------------------------------------------------------------

SELECT has_schema('adstream');
SELECT isnt(obj_description('adstream'::regnamespace, 'pg_namespace'), NULL,
	'schema adstream has a comment');

-- Run-time partitions (relispartition) are not part of the fixed schema.
SELECT set_eq(
	$$SELECT relname::text FROM pg_class
	   WHERE relnamespace = 'adstream'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition$$,
	ARRAY['sources', 'offsets', 'partitioned_tables', 'ad_stats_minute', 'dedup_log', 'rejected_events',
		  'ad_events', 'orders', 'attributed_orders', 'rollup_pending',
		  'ad_stats_hour', 'ad_stats_6h', 'ad_stats_day', 'outbox', 'sinks',
		  -- 0.5 (issue #11, case 4)
		  'offset_gaps',
		  -- 0.5: automatic maintenance (issue #15)
		  'maintenance_runs',
		  -- 0.6: status history, counters and metrics (issue #14)
		  'status_history', 'status_counters', 'metrics_reset',
		  -- 0.6: failover
		  'node',
		  -- 0.6: rewinds (issue #14)
		  'rewinds', 'rewind_partitions', 'rewind_ids',
		  -- 0.6: moving partitions between nodes (issue #13, part 3)
		  'orders_seen_elsewhere', 'handoffs', 'handoff_items', 'handoff_in',
		  -- 0.6: duplicates of a running batch's claims set aside (issue #12)
		  'set_aside'],
	'adstream has exactly the expected tables');
SELECT set_eq(
	$$SELECT relname::text FROM pg_class
	   WHERE relnamespace = 'adstream'::regnamespace AND relkind IN ('v', 'm')$$,
	ARRAY['source_config', 'source_status', 'waiting_orders', 'sink_status', 'maintenance_status',
		  -- 0.6 (issue #14)
		  'metrics', 'rewind_status',
		  -- 0.6: partition handoffs (issue #13, part 3)
		  'handoff_status'],
	'adstream has exactly the expected views');

-------------------------------------------------------------------------------
-- Tables and columns
-------------------------------------------------------------------------------

SELECT has_table('adstream', 'sources', 'table adstream.sources exists');
SELECT has_table('adstream', 'offsets', 'table adstream.offsets exists');
SELECT has_table('adstream', 'partitioned_tables', 'table adstream.partitioned_tables exists');
SELECT has_table('adstream', 'ad_stats_minute', 'table adstream.ad_stats_minute exists');
SELECT has_table('adstream', 'dedup_log', 'table adstream.dedup_log exists');
SELECT has_table('adstream', 'rejected_events', 'table adstream.rejected_events exists');
SELECT has_table('adstream', 'ad_events', 'table adstream.ad_events exists');
SELECT has_table('adstream', 'orders', 'table adstream.orders exists');
SELECT has_table('adstream', 'attributed_orders', 'table adstream.attributed_orders exists');
SELECT has_table('adstream', 'rollup_pending', 'table adstream.rollup_pending exists');
SELECT has_table('adstream', 'ad_stats_hour', 'table adstream.ad_stats_hour exists');
SELECT has_table('adstream', 'ad_stats_6h', 'table adstream.ad_stats_6h exists');
SELECT has_table('adstream', 'ad_stats_day', 'table adstream.ad_stats_day exists');
SELECT has_table('adstream', 'outbox', 'table adstream.outbox exists');
SELECT has_table('adstream', 'sinks', 'table adstream.sinks exists');

SELECT columns_are('adstream', 'sources', ARRAY['id', 'name', 'kind', 'brokers', 'topic', 'start_policy',
	'workers', 'group_id', 'kafka_options', 'enabled', 'generation', 'created_at', 'updated_at',
	'dedup_expired_before', 'origin', 'partition_count',
	-- 0.6: input formats (docs/formats.md)
	'input_format',
	-- 0.6: this node's share of a split topic (issue #13)
	'partitions',
	-- 0.6: the Kafka cluster its offsets belong to, recorded by its workers
	'cluster_id']);
SELECT columns_are('adstream', 'offsets', ARRAY['source', 'topic', 'partition', 'next_offset',
	'max_event_ts', 'accepted', 'duplicates', 'rejected', 'updated_at']);
SELECT columns_are('adstream', 'partitioned_tables', ARRAY['name', 'grain', 'fillfactor', 'storage_options',
	-- 0.6: how far retention dropped (a dropped day of minutes is never created again)
	'dropped_before']);
SELECT columns_are('adstream', 'ad_stats_minute', ARRAY['ad_id', 'campaign_id', 'window_start',
	'impressions', 'clicks', 'updated_at', 'source_id', 'stripe']);
SELECT columns_are('adstream', 'dedup_log', ARRAY['source_id', 'hour', 'ids', 'seg']);
SELECT columns_are('adstream', 'rejected_events', ARRAY['source', 'topic', 'partition', 'offset',
	'reason', 'detail', 'payload', 'payload_bytes', 'received_at',
	-- 0.6: re-driving dead letters
	'redrive_generation']);
SELECT columns_are('adstream', 'ad_events', ARRAY['source_id', 'event_id', 'type', 'ad_id', 'campaign_id',
	'user_id', 'store_id', 'ts']);
SELECT columns_are('adstream', 'orders', ARRAY['order_id', 'source', 'user_id', 'store_id', 'amount',
	'currency', 'ts', 'received_at', 'status', 'decided_at', 'attribution', 'ad_id', 'campaign_id',
	'event_id', 'event_ts', 'partition']);
SELECT columns_are('adstream', 'attributed_orders', ARRAY['order_id', 'ad_id', 'campaign_id',
	'click_event_id', 'click_ts', 'order_ts', 'amount', 'currency', 'attribution', 'record_uuid',
	'attributed_at']);
SELECT columns_are('adstream', 'rollup_pending', ARRAY['window_start', 'source_id', 'worker']);
SELECT columns_are('adstream', t, ARRAY['ad_id', 'campaign_id', 'window_start', 'impressions', 'clicks'],
		format('adstream.%s has the columns of a rollup', t))
  FROM unnest(ARRAY['ad_stats_hour', 'ad_stats_6h', 'ad_stats_day']) AS t;
SELECT columns_are('adstream', 'outbox', ARRAY['id', 'txid', 'kind', 'ad_id', 'window_start', 'order_id']);
SELECT columns_are('adstream', 'sinks', ARRAY['id', 'name', 'brokers', 'topic_ad_stats', 'topic_orders',
	'kafka_options', 'enabled', 'generation', 'done_snapshot', 'target_snapshot', 'last_id', 'txns_committed',
	'txns_aborted', 'records_published', 'last_publish_at', 'created_at', 'origin']);

-- 115 column types
SELECT col_type_is('adstream', t, c, ty, format('adstream.%s.%s is %s', t, c, ty))
  FROM (VALUES
	('sources', 'id', 'integer'),
	('sources', 'name', 'text'),
	('sources', 'kind', 'text'),
	('sources', 'brokers', 'text'),
	('sources', 'topic', 'text'),
	('sources', 'start_policy', 'text'),
	('sources', 'workers', 'integer'),
	('sources', 'group_id', 'text'),
	('sources', 'kafka_options', 'jsonb'),
	('sources', 'enabled', 'boolean'),
	('sources', 'generation', 'bigint'),
	('sources', 'created_at', 'timestamp with time zone'),
	('sources', 'updated_at', 'timestamp with time zone'),
	('offsets', 'source', 'text'),
	('offsets', 'topic', 'text'),
	('offsets', 'partition', 'integer'),
	('offsets', 'next_offset', 'bigint'),
	('offsets', 'max_event_ts', 'timestamp with time zone'),
	('offsets', 'accepted', 'bigint'),
	('offsets', 'duplicates', 'bigint'),
	('offsets', 'rejected', 'bigint'),
	('offsets', 'updated_at', 'timestamp with time zone'),
	('partitioned_tables', 'name', 'text'),
	('partitioned_tables', 'grain', 'interval'),
	('partitioned_tables', 'fillfactor', 'integer'),
	('partitioned_tables', 'storage_options', 'text[]'),
	('partitioned_tables', 'dropped_before', 'timestamp with time zone'),
	('ad_stats_minute', 'ad_id', 'bigint'),
	('ad_stats_minute', 'campaign_id', 'bigint'),
	('ad_stats_minute', 'window_start', 'timestamp with time zone'),
	('ad_stats_minute', 'impressions', 'bigint'),
	('ad_stats_minute', 'clicks', 'bigint'),
	('ad_stats_minute', 'updated_at', 'timestamp with time zone'),
	('ad_stats_minute', 'source_id', 'integer'),
	('dedup_log', 'source_id', 'integer'),
	('dedup_log', 'hour', 'timestamp with time zone'),
	('dedup_log', 'ids', 'bytea'),
	('dedup_log', 'seg', 'integer'),
	('rejected_events', 'source', 'text'),
	('rejected_events', 'topic', 'text'),
	('rejected_events', 'partition', 'integer'),
	('rejected_events', 'offset', 'bigint'),
	('rejected_events', 'reason', 'text'),
	('rejected_events', 'detail', 'text'),
	('rejected_events', 'payload', 'bytea'),
	('rejected_events', 'payload_bytes', 'integer'),
	('rejected_events', 'received_at', 'timestamp with time zone'),
	('ad_events', 'source_id', 'integer'),
	('ad_events', 'event_id', 'uuid'),
	('ad_events', 'type', 'text'),
	('ad_events', 'ad_id', 'bigint'),
	('ad_events', 'campaign_id', 'bigint'),
	('ad_events', 'user_id', 'bigint'),
	('ad_events', 'store_id', 'bigint'),
	('ad_events', 'ts', 'timestamp with time zone'),
	('orders', 'order_id', 'uuid'),
	('orders', 'source', 'text'),
	('orders', 'user_id', 'bigint'),
	('orders', 'store_id', 'bigint'),
	('orders', 'amount', 'numeric'),
	('orders', 'currency', 'text'),
	('orders', 'ts', 'timestamp with time zone'),
	('orders', 'received_at', 'timestamp with time zone'),
	('orders', 'status', 'text'),
	('orders', 'decided_at', 'timestamp with time zone'),
	('orders', 'attribution', 'text'),
	('orders', 'ad_id', 'bigint'),
	('orders', 'campaign_id', 'bigint'),
	('orders', 'event_id', 'uuid'),
	('orders', 'event_ts', 'timestamp with time zone'),
	('attributed_orders', 'order_id', 'uuid'),
	('attributed_orders', 'ad_id', 'bigint'),
	('attributed_orders', 'campaign_id', 'bigint'),
	('attributed_orders', 'click_event_id', 'uuid'),
	('attributed_orders', 'click_ts', 'timestamp with time zone'),
	('attributed_orders', 'order_ts', 'timestamp with time zone'),
	('attributed_orders', 'amount', 'numeric'),
	('attributed_orders', 'currency', 'text'),
	('attributed_orders', 'attribution', 'text'),
	('attributed_orders', 'record_uuid', 'uuid'),
	('attributed_orders', 'attributed_at', 'timestamp with time zone'),
	('rollup_pending', 'window_start', 'timestamp with time zone'),
	('rollup_pending', 'source_id', 'integer'),
	('rollup_pending', 'worker', 'smallint'),
	('ad_stats_hour', 'ad_id', 'bigint'),
	('ad_stats_hour', 'campaign_id', 'bigint'),
	('ad_stats_hour', 'window_start', 'timestamp with time zone'),
	('ad_stats_hour', 'impressions', 'bigint'),
	('ad_stats_hour', 'clicks', 'bigint'),
	('ad_stats_6h', 'ad_id', 'bigint'),
	('ad_stats_6h', 'campaign_id', 'bigint'),
	('ad_stats_6h', 'window_start', 'timestamp with time zone'),
	('ad_stats_6h', 'impressions', 'bigint'),
	('ad_stats_6h', 'clicks', 'bigint'),
	('ad_stats_day', 'ad_id', 'bigint'),
	('ad_stats_day', 'campaign_id', 'bigint'),
	('ad_stats_day', 'window_start', 'timestamp with time zone'),
	('ad_stats_day', 'impressions', 'bigint'),
	('ad_stats_day', 'clicks', 'bigint'),
	('outbox', 'id', 'bigint'),
	('outbox', 'txid', 'xid8'),
	('outbox', 'kind', 'text'),
	('outbox', 'ad_id', 'bigint'),
	('outbox', 'window_start', 'timestamp with time zone'),
	('outbox', 'order_id', 'uuid'),
	('sinks', 'id', 'integer'),
	('sinks', 'name', 'text'),
	('sinks', 'brokers', 'text'),
	('sinks', 'topic_ad_stats', 'text'),
	('sinks', 'topic_orders', 'text'),
	('sinks', 'kafka_options', 'jsonb'),
	('sinks', 'enabled', 'boolean'),
	('sinks', 'generation', 'bigint'),
	('sinks', 'done_snapshot', 'pg_snapshot'),
	('sinks', 'target_snapshot', 'pg_snapshot'),
	('sinks', 'last_id', 'bigint'),
	('sinks', 'txns_committed', 'bigint'),
	('sinks', 'txns_aborted', 'bigint'),
	('sinks', 'records_published', 'bigint'),
	('sinks', 'last_publish_at', 'timestamp with time zone'),
	('sinks', 'created_at', 'timestamp with time zone')
  ) AS v(t, c, ty);

-- Only these columns may be NULL.
SELECT set_eq(
	$$SELECT c.relname || '.' || a.attname
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	   WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p')
		 AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped AND NOT a.attnotnull$$,
	ARRAY['offsets.max_event_ts', 'rejected_events.detail', 'rejected_events.payload',
		  'orders.decided_at', 'orders.attribution', 'orders.ad_id', 'orders.campaign_id',
		  'orders.event_id', 'orders.event_ts',
		  'outbox.ad_id', 'outbox.window_start', 'outbox.order_id',
		  'sinks.target_snapshot', 'sinks.last_publish_at',
		  -- 0.5: none on rows restored from a dump older than 0.5 (held)
		  'sources.origin', 'sinks.origin',
		  -- 0.6: every partition of the topic unless listed (issue #13)
		  'sources.partitions',
		  -- 0.5: a maintenance job's run that failed, or never succeeded
		  'maintenance_runs.last_ok', 'maintenance_runs.last_result', 'maintenance_runs.last_error',
		  'maintenance_runs.last_error_at',
		  -- 0.6: a source's partition count and cluster id until one of its workers has seen the topic
		  'sources.partition_count', 'sources.cluster_id',
		  -- 0.6: a sink's history rows have no worker index; connection unknown; no error
		  'status_history.worker', 'status_history.connected', 'status_history.error',
		  'status_history.error_at',
		  -- 0.6: set only while a re-drive of the dead letter waits
		  'rejected_events.redrive_generation',
		  -- 0.6: a rewind to offsets has no time, a recount no window; a replay not finished yet
		  'rewinds.to_time', 'rewinds.window_from', 'rewinds.window_to', 'rewinds.lookback',
		  'rewind_partitions.finished_at',
		  -- 0.6: an order's partition, unknown for orders stored before 0.6 (issue #13, part 3);
		  -- likewise for the ids of such orders a handoff brings; a handoff's
		  -- steps not taken yet; a copied handoff's items outside any source
		  'orders.partition', 'orders_seen_elsewhere.partition',
		  'handoffs.imported_at', 'handoffs.finished_at', 'handoff_in.source'],
	'only the watermark, dead-letter detail and payload, the verdict of an order, what an outbox row '
	'names, a sink''s open window and its last publish time, the origin of a source or sink, and a '
	'source''s partition count and cluster id, are nullable');

-------------------------------------------------------------------------------
-- Keys, constraints, indexes
-------------------------------------------------------------------------------

SELECT has_pk('adstream', 'sources', 'sources has a primary key');
SELECT has_pk('adstream', 'offsets', 'offsets has a primary key');
SELECT has_pk('adstream', 'partitioned_tables', 'partitioned_tables has a primary key');
SELECT has_pk('adstream', 'ad_stats_minute', 'ad_stats_minute has a primary key');
SELECT hasnt_pk('adstream', 'dedup_log', 'dedup_log has no primary key: ids are looked up in the shared-memory index');
SELECT has_pk('adstream', 'rejected_events', 'rejected_events has a primary key');

SELECT col_is_pk('adstream', 'sources', ARRAY['id'], 'sources PK is (id)');
SELECT col_is_pk('adstream', 'offsets', ARRAY['source', 'topic', 'partition'],
	'offsets PK is (source, topic, partition)');
SELECT col_is_pk('adstream', 'partitioned_tables', ARRAY['name'], 'partitioned_tables PK is (name)');
SELECT col_is_pk('adstream', 'ad_stats_minute', ARRAY['ad_id', 'window_start', 'source_id', 'stripe'],
	'ad_stats_minute PK is (ad_id, window_start, source_id, stripe)');
SELECT col_not_null('adstream', 'dedup_log', 'ids', 'dedup_log.ids is NOT NULL');
SELECT col_is_pk('adstream', 'rejected_events', ARRAY['source', 'topic', 'partition', 'offset'],
	'rejected_events PK is (source, topic, partition, offset)');
SELECT col_is_pk('adstream', 'orders', ARRAY['order_id'], 'orders PK is (order_id): orders are deduplicated by it');
SELECT col_is_pk('adstream', 'attributed_orders', ARRAY['order_id'], 'attributed_orders PK is (order_id): one credit per order');
SELECT columns_are('adstream', 'set_aside', ARRAY['source_id', 'partition', 'offset', 'event_id', 'type', 'ad_id',
	'campaign_id', 'user_id', 'store_id', 'ts', 'payload', 'set_aside_at']);
SELECT col_is_pk('adstream', 'set_aside', ARRAY['source_id', 'partition', 'offset'],
	'set_aside PK is (source_id, partition, offset): a message is set aside once at a time');
SELECT col_is_pk('adstream', 'rollup_pending', ARRAY['window_start', 'source_id', 'worker'],
	'rollup_pending PK is (window_start, source_id, worker): each worker queues its minutes in its own rows');
SELECT col_is_pk('adstream', t, ARRAY['ad_id', 'window_start'], format('%s PK is (ad_id, window_start)', t))
  FROM unnest(ARRAY['ad_stats_hour', 'ad_stats_6h', 'ad_stats_day']) AS t;
SELECT col_is_unique('adstream', 'attributed_orders', ARRAY['record_uuid'], 'record_uuid is unique');
SELECT has_index('adstream', 'ad_events', 'ad_events_user_id_store_id_type_ts_event_id_idx',
	ARRAY['user_id', 'store_id', 'type', 'ts', 'event_id'],
	'ad events are indexed for the last-click lookup (user, store, type, then newest ts and event_id)');
SELECT has_index('adstream', 'orders', 'orders_waiting_idx', ARRAY['ts', 'received_at'], 'waiting orders are indexed by ts and received_at');
SELECT is(pg_get_expr(indpred, indrelid), '(status = ''waiting''::text)', 'orders_waiting_idx holds only waiting orders')
  FROM pg_index WHERE indexrelid = 'adstream.orders_waiting_idx'::regclass;
SELECT col_has_check('adstream', 'orders', ARRAY['status'], 'orders.status is checked');
SELECT col_has_check('adstream', 'orders', ARRAY['attribution'], 'orders.attribution is checked');
SELECT col_has_check('adstream', 'ad_events', ARRAY['type'], 'ad_events.type is checked');
SELECT col_default_is('adstream', 'orders', 'status', 'waiting', 'an order starts waiting');
SELECT col_default_is('adstream', 'attributed_orders', 'attribution', 'click', 'a credit is a click unless marked');
SELECT throws_ok(
	$$INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, status)
	  VALUES (gen_random_uuid(), 's', 1, 1, 1, 'EUR', now(), 'lost')$$,
	'23514', NULL, 'the orders.status check rejects other values');
SELECT throws_ok(
	$$INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, attribution)
	  VALUES (gen_random_uuid(), 's', 1, 1, 1, 'EUR', now(), 'impression')$$,
	'23514', NULL, 'the orders.attribution check allows only click and view');
SELECT throws_ok(
	$$INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
	  VALUES (1, gen_random_uuid(), 'view', 1, 1, 1, 1, now())$$,
	'23514', NULL, 'the ad_events.type check allows only click and impression');

SELECT col_is_unique('adstream', 'sources', ARRAY['name'], 'source names are unique');
SELECT is(attidentity, 'a', 'sources.id is GENERATED ALWAYS AS IDENTITY')
  FROM pg_attribute WHERE attrelid = 'adstream.sources'::regclass AND attname = 'id';
SELECT fk_ok('adstream', 'offsets', ARRAY['source'], 'adstream', 'sources', ARRAY['name'],
	'offsets.source references sources.name');
SELECT is(confdeltype, 'c', 'offsets go with their source (ON DELETE CASCADE)')
  FROM pg_constraint WHERE conrelid = 'adstream.offsets'::regclass AND contype = 'f';
SELECT col_has_check('adstream', 'sources', ARRAY['kind'], 'sources.kind is checked');
SELECT col_has_check('adstream', 'sources', ARRAY['start_policy'], 'sources.start_policy is checked');
SELECT col_has_check('adstream', 'sources', ARRAY['workers'], 'sources.workers is checked');
SELECT throws_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id, workers) VALUES ('x', 'ad_events', 'b', 't', 'g', 65)$$,
	'23514', NULL, 'the workers check rejects 65');
SELECT throws_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id, start_policy) VALUES ('x', 'ad_events', 'b', 't', 'g', 'now')$$,
	'23514', NULL, 'the start_policy check rejects other values');
SELECT throws_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id) VALUES ('x', 'clicks', 'b', 't', 'g')$$,
	'23514', NULL, 'the kind check rejects other kinds');
SELECT lives_ok(
	$$INSERT INTO adstream.sources (name, kind, brokers, topic, group_id) VALUES ('tap_kind_orders', 'orders', 'b', 't', 'g');
	  DELETE FROM adstream.sources WHERE name = 'tap_kind_orders'$$,
	'the kind check accepts orders');
SELECT has_index('adstream', 'rejected_events', 'rejected_events_received_at_idx', ARRAY['received_at'],
	'dead letters are indexed by received_at');

-- 0.3: the outbox and the sinks
SELECT col_is_pk('adstream', 'outbox', ARRAY['id'], 'outbox PK is (id): the version of a record');
SELECT col_is_pk('adstream', 'sinks', ARRAY['id'], 'sinks PK is (id)');
SELECT col_is_unique('adstream', 'sinks', ARRAY['name'], 'sink names are unique');
SELECT is(attidentity, 'a', format('%s.id is GENERATED ALWAYS AS IDENTITY', attrelid::regclass))
  FROM pg_attribute
 WHERE attrelid IN ('adstream.outbox'::regclass, 'adstream.sinks'::regclass) AND attname = 'id'
 ORDER BY attrelid::regclass::text;
SELECT has_index('adstream', 'outbox', 'outbox_txid_idx', ARRAY['txid'],
	'the outbox is indexed by transaction id (publishing windows)');
SELECT col_default_is('adstream', 'outbox', 'txid', 'pg_current_xact_id()',
	'an outbox row records the transaction that wrote it');
SELECT col_has_check('adstream', 'outbox', ARRAY['kind'], 'outbox.kind is checked');
SELECT throws_ok(
	$$INSERT INTO adstream.outbox (kind, ad_id, window_start) VALUES ('ad_stats_hour', 1, now())$$,
	'23514', NULL, 'the outbox takes ad_stats and attributed_orders rows only');
SELECT throws_ok(
	$$INSERT INTO adstream.outbox (kind, ad_id) VALUES ('ad_stats', 1)$$,
	'23514', NULL, 'an ad_stats row names an ad and a minute');
SELECT throws_ok(
	$$INSERT INTO adstream.outbox (kind, order_id, ad_id, window_start) VALUES ('attributed_orders', gen_random_uuid(), 1, now())$$,
	'23514', NULL, 'an attributed_orders row names an order, not a minute');
SELECT throws_ok(
	$$INSERT INTO adstream.outbox (id, kind, order_id) VALUES (1, 'attributed_orders', gen_random_uuid())$$,
	'428C9', NULL, 'outbox ids (versions) are never given by hand');
SELECT col_default_is('adstream', 'sinks', 'topic_ad_stats', 'adstream.ad_stats', 'ad_stats go to adstream.ad_stats by default');
SELECT col_default_is('adstream', 'sinks', 'topic_orders', 'adstream.attributed_orders',
	'credited orders go to adstream.attributed_orders by default');
SELECT col_hasnt_default('adstream', 'sinks', 'done_snapshot', 'a sink''s cursor is always set by create_sink');
SELECT has_trigger('adstream', 'attributed_orders', 'queue_for_publishing',
	'attributed_orders queues what it credits for publishing');
SELECT trigger_is('adstream', 'attributed_orders', 'queue_for_publishing', 'adstream', '_queue_attributed_orders',
	'the trigger runs _queue_attributed_orders');
SELECT is(
	(SELECT tgtype::int & 127 FROM pg_trigger
	  WHERE tgrelid = 'adstream.attributed_orders'::regclass AND tgname = 'queue_for_publishing'),
	4, 'the trigger fires once per statement, after INSERT only');

SELECT is(reloptions, ARRAY['fillfactor=50', 'autovacuum_vacuum_scale_factor=0', 'autovacuum_vacuum_threshold=1000',
	'autovacuum_vacuum_cost_delay=0'], 'offsets: fillfactor 50, vacuumed every 1000 dead rows without delay')
  FROM pg_class WHERE oid = 'adstream.offsets'::regclass;
SELECT is(reloptions, ARRAY['fillfactor=90'], format('%s is created with fillfactor 90', t))
  FROM unnest(ARRAY['ad_stats_hour', 'ad_stats_6h', 'ad_stats_day']) AS t
  JOIN pg_class c ON c.oid = ('adstream.' || t)::regclass;
SELECT ok(
	(SELECT array_agg(c.relname::text)
	   FROM pg_extension e, unnest(e.extconfig) AS x(oid) JOIN pg_class c ON c.oid = x.oid
	  WHERE e.extname = 'adstream') @> ARRAY['sources', 'offsets'],
	'sources and offsets are dumped by pg_dump as configuration');
-- 0.3: the sinks and the id sequences (record versions must keep growing
-- after a restore).  0.5: the outbox too, and the dead letters; its rows'
-- transaction ids are re-dated when a restored sink is adopted
-- (adopt_restored).
SELECT ok(
	(SELECT array_agg(c.relname::text)
	   FROM pg_extension e, unnest(e.extconfig) AS x(oid) JOIN pg_class c ON c.oid = x.oid
	  WHERE e.extname = 'adstream')
	@> ARRAY['sinks', 'outbox', 'rejected_events', 'outbox_id_seq', 'sinks_id_seq', 'sources_id_seq'],
	'sinks, the outbox, the dead letters and the id sequences are dumped by pg_dump');
-- Offsets are committed together with orders, credits and the rollup queue,
-- so pg_dump must save those tables too, or a restored database has offsets
-- past orders it no longer holds.  Extension member tables are dumped only
-- when marked with pg_extension_config_dump (run-time partitions are not
-- members and are dumped anyway).
SELECT is_empty(
	$$SELECT t FROM unnest(ARRAY['orders', 'attributed_orders', 'rollup_pending',
								 'ad_stats_hour', 'ad_stats_6h', 'ad_stats_day']) AS t
	   WHERE NOT EXISTS (SELECT 1 FROM pg_extension e
						  WHERE e.extname = 'adstream' AND ('adstream.' || t)::regclass = ANY (e.extconfig))$$,
	'orders, credits, the rollup queue and the rollups are dumped by pg_dump');

SELECT is(
	(SELECT count(*)::int FROM pg_attribute
	  WHERE attrelid = 'adstream.sources'::regclass AND attname = 'generation'
		AND atthasdef AND attnotnull),
	1, 'sources.generation is NOT NULL with a default');

-------------------------------------------------------------------------------
-- Partitioning
-------------------------------------------------------------------------------

SELECT is_partitioned('adstream', 'ad_stats_minute', 'ad_stats_minute is partitioned');
SELECT is_partitioned('adstream', 'dedup_log', 'dedup_log is partitioned');
SELECT is_partitioned('adstream', 'ad_events', 'ad_events is partitioned');
SELECT isnt_partitioned('adstream', t, format('%s is not partitioned', t))
  FROM unnest(ARRAY['orders', 'attributed_orders', 'rollup_pending', 'ad_stats_hour', 'ad_stats_6h', 'ad_stats_day']) AS t;
SELECT is(pg_get_partkeydef('adstream.ad_events'::regclass), 'RANGE (ts)',
	'ad_events is range-partitioned by ts');
SELECT isnt_partitioned('adstream', 'offsets', 'offsets is not partitioned');
SELECT isnt_partitioned('adstream', 'rejected_events', 'rejected_events is not partitioned');
SELECT isnt_partitioned('adstream', 'outbox', 'outbox is not partitioned');
SELECT isnt_partitioned('adstream', 'sinks', 'sinks is not partitioned');
SELECT is(pg_get_partkeydef('adstream.ad_stats_minute'::regclass), 'RANGE (window_start)',
	'ad_stats_minute is range-partitioned by window_start');
SELECT is(pg_get_partkeydef('adstream.dedup_log'::regclass), 'RANGE (hour)',
	'dedup_log is range-partitioned by hour');
SELECT results_eq(
	$$SELECT name, grain, fillfactor FROM adstream.partitioned_tables ORDER BY name$$,
	$$VALUES ('ad_events'::text, interval '1 hour', 100), ('ad_stats_minute'::text, interval '1 day', 50),
			 ('dedup_log'::text, interval '1 hour', 100)$$,
	'partition grains: an hour for ad_events and dedup_log, a day for ad_stats_minute (fillfactor 50)');
SELECT set_eq(
	$$SELECT relname::text FROM pg_class WHERE relnamespace = 'adstream'::regnamespace AND relkind = 'p'$$,
	$$SELECT name FROM adstream.partitioned_tables$$,
	'every partitioned table is registered in partitioned_tables');
SELECT is(
	(SELECT count(*)::int FROM pg_partitioned_table pt
	  WHERE pt.partrelid IN ('adstream.ad_stats_minute'::regclass, 'adstream.dedup_log'::regclass,
							 'adstream.ad_events'::regclass)
		AND pt.partdefid <> 0),
	0, 'no default partition swallows rows of a missing time range');

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

SELECT has_view('adstream', 'source_config', 'view adstream.source_config exists');
SELECT has_view('adstream', 'source_status', 'view adstream.source_status exists');
SELECT columns_are('adstream', 'source_config', ARRAY['name', 'kind', 'brokers', 'topic',
	'start_policy', 'workers', 'group_id', 'kafka_options', 'enabled', 'created_at', 'updated_at',
	-- 0.6: the input format, registry credentials masked; the partitions and the cluster
	'input_format', 'partitions', 'cluster_id']);
SELECT columns_are('adstream', 'source_status', ARRAY['source', 'topic', 'source_state', 'partition',
	'worker_pid', 'worker_state', 'next_offset', 'high_watermark', 'lag', 'accepted', 'duplicates',
	'rejected', 'partition_watermark', 'source_watermark', 'last_commit_at', 'last_error', 'last_error_at',
	'offset_gaps', 'dedup_expired_before', 'warning', 'warning_hint',
	-- 0.6 (issue #14)
	'connected', 'lag_seconds', 'event_lag_seconds', 'lag_stale', 'positions_at', 'restarts']);
SELECT hasnt_column('adstream', 'source_config', 'generation', 'source_config hides the internal generation');
SELECT hasnt_column('adstream', 'source_status', 'kafka_options', 'source_status never shows librdkafka options');
SELECT col_type_is('adstream', 'source_status', 'lag', 'bigint', 'source_status.lag is bigint');
SELECT col_type_is('adstream', 'source_config', 'kafka_options', 'jsonb', 'source_config.kafka_options is jsonb');
SELECT has_view('adstream', 'waiting_orders', 'view adstream.waiting_orders exists');
SELECT columns_are('adstream', 'waiting_orders', ARRAY['order_id', 'source', 'user_id', 'store_id', 'amount',
	'currency', 'ts', 'received_at', 'ad_events_watermark', 'decide_by']);
SELECT col_type_is('adstream', 'waiting_orders', 'decide_by', 'timestamp with time zone',
	'waiting_orders.decide_by is a time');
SELECT has_view('adstream', 'sink_status', 'view adstream.sink_status exists');
SELECT columns_are('adstream', 'sink_status', ARRAY['sink', 'sink_state', 'worker_pid', 'worker_state',
	'cursor_snapshot', 'cursor_last_id', 'backlog_rows', 'backlog_bytes', 'records_published', 'txns_committed',
	'txns_aborted', 'last_publish_at', 'last_error', 'last_error_at',
	-- 0.6 (issue #14)
	'connected', 'restarts']);
SELECT hasnt_column('adstream', 'sink_status', c, format('sink_status never shows %s', c))
  FROM unnest(ARRAY['brokers', 'kafka_options']) AS c;
SELECT col_type_is('adstream', 'sink_status', 'backlog_rows', 'bigint', 'sink_status.backlog_rows is bigint');
-- 0.5: automatic maintenance (issue #15)
SELECT has_table('adstream', 'maintenance_runs', 'table adstream.maintenance_runs exists');
SELECT columns_are('adstream', 'maintenance_runs', ARRAY['job', 'last_start', 'last_duration', 'last_ok',
	'last_result', 'last_error', 'last_error_at']);
SELECT col_is_pk('adstream', 'maintenance_runs', ARRAY['job'], 'maintenance_runs PK is (job): its last run');
SELECT has_view('adstream', 'maintenance_status', 'view adstream.maintenance_status exists');
-- 0.6: status history and metrics (issue #14)
SELECT columns_are('adstream', 'status_history', ARRAY['id', 'at', 'kind', 'object_id', 'name', 'worker', 'state',
	'connected', 'error', 'error_at', 'restarts']);
SELECT columns_are('adstream', 'metrics', ARRAY['metric', 'kind', 'name', 'value', 'stats_reset']);
SELECT col_type_is('adstream', 'source_status', 'lag_stale', 'boolean', 'source_status.lag_stale is boolean');
SELECT columns_are('adstream', 'maintenance_status', ARRAY['job', 'runs_by', 'every', 'last_start', 'last_duration',
	'last_result', 'last_error', 'last_error_at', 'next_due', 'overdue', 'note']);

-------------------------------------------------------------------------------
-- Roles
-------------------------------------------------------------------------------

SELECT has_role('adstream_reader');
SELECT has_role('adstream_admin');
SELECT is_member_of('adstream_reader', ARRAY['adstream_admin'], 'adstream_admin is a member of adstream_reader');
SELECT is(
	(SELECT count(*)::int FROM pg_roles
	  WHERE rolname IN ('adstream_reader', 'adstream_admin')
		AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)),
	0, 'the adstream roles are plain group roles');

-------------------------------------------------------------------------------
-- Comments
-------------------------------------------------------------------------------

SELECT is_empty(
	$$SELECT c.relname FROM pg_class c
	   WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
		 AND NOT c.relispartition
		 AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
	   ORDER BY 1$$,
	'every table and view of adstream has a comment');

SELECT * FROM finish();
ROLLBACK;
