/* adstream--0.2--0.3.sql -- transactional outbox and publishing sinks for Pinot */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.3'" to load this file. \quit

-------------------------------------------------------------------------------
-- Outbox
-------------------------------------------------------------------------------

/*
 * One row per change Pinot must see, written in the transaction that makes
 * the change.  It names the changed row; the publisher reads that row's
 * current state when it sends it.  The id is the record's version: for one
 * key, writers are serialised by the result row's lock, so ids grow per key
 * in commit order.  txid places the row in a publishing window (see
 * _outbox_page).
 */
CREATE TABLE adstream.outbox (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	txid			xid8 NOT NULL DEFAULT pg_current_xact_id(),
	kind			text NOT NULL CHECK (kind IN ('ad_stats', 'attributed_orders')),
	ad_id			bigint,
	window_start	timestamptz,
	order_id		uuid,
	CHECK ((kind = 'ad_stats') = (ad_id IS NOT NULL AND window_start IS NOT NULL)),
	CHECK ((kind = 'attributed_orders') = (order_id IS NOT NULL))
);
CREATE INDEX outbox_txid_idx ON adstream.outbox (txid);
COMMENT ON TABLE adstream.outbox IS
	'Changes to publish, written in the same transaction as the results; pruned once every sink has passed them';

/*
 * Whether changes must go to the outbox: only while sinks exist.  The lock
 * makes the answer hold until commit: create_sink takes a SHARE lock on the
 * outbox, so it waits for transactions that decided there was no sink, and
 * its backfill then sees their results.
 */
CREATE FUNCTION adstream._publishing()
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	LOCK TABLE adstream.outbox IN ROW EXCLUSIVE MODE;
	RETURN EXISTS (SELECT 1 FROM adstream.sinks);
END
$$;

/* Credited orders go to the outbox in the transaction that credits them. */
CREATE FUNCTION adstream._queue_attributed_orders()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF adstream._publishing() THEN
		INSERT INTO adstream.outbox (kind, order_id)
		SELECT 'attributed_orders', n.order_id FROM new_rows n ORDER BY n.order_id;
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER queue_for_publishing AFTER INSERT ON adstream.attributed_orders
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
	EXECUTE FUNCTION adstream._queue_attributed_orders();

-------------------------------------------------------------------------------
-- Sinks
-------------------------------------------------------------------------------

CREATE TABLE adstream.sinks (
	id					integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name				text NOT NULL UNIQUE,
	brokers				text NOT NULL,
	topic_ad_stats		text NOT NULL DEFAULT 'adstream.ad_stats',
	topic_orders		text NOT NULL DEFAULT 'adstream.attributed_orders',
	kafka_options		jsonb NOT NULL DEFAULT '{}',	-- may hold credentials
	enabled				boolean NOT NULL DEFAULT true,
	generation			bigint NOT NULL DEFAULT adstream._new_generation(),
	-- the cursor: everything visible in done_snapshot is published; the
	-- window up to target_snapshot is published up to outbox id last_id
	done_snapshot		pg_snapshot NOT NULL,
	target_snapshot		pg_snapshot,
	last_id				bigint NOT NULL DEFAULT 0,
	txns_committed		bigint NOT NULL DEFAULT 0,
	txns_aborted		bigint NOT NULL DEFAULT 0,
	records_published	bigint NOT NULL DEFAULT 0,
	last_publish_at		timestamptz,
	created_at			timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE adstream.sinks IS
	'Kafka clusters that receive every result for Pinot, each with its own durable cursor; superusers only (credentials)';
SELECT pg_catalog.pg_extension_config_dump('adstream.sinks', '');
-- Outbox rows name transactions of this cluster only and are not dumped; the
-- version sequence is, so versions keep growing after a restore.
SELECT pg_catalog.pg_extension_config_dump('adstream.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.sinks_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.sources_id_seq', '');

/* The Pinot key of an outbox row. */
CREATE FUNCTION adstream._record_key(p_kind text, p_ad_id bigint, p_window timestamptz, p_order uuid)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE p_kind
	WHEN 'ad_stats' THEN current_setting('adstream.node_name') || '|' || p_ad_id || '|'
						 || (extract(epoch FROM p_window) * 1000)::bigint
	ELSE p_order::text END;

/*
 * The next page of the sink's current window: outbox rows committed after
 * done_snapshot and by target_snapshot (taken now if there is no window
 * open), after last_id, with the current value of the row they name.
 * Rows whose result is gone (dropped by retention) are skipped.
 */
CREATE FUNCTION adstream._outbox_page(p_sink text, p_limit integer)
RETURNS TABLE (id bigint, topic text, record_key text, value text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s			adstream.sinks;
	v_target	pg_snapshot;
	v_n			bigint;
BEGIN
	SELECT * INTO s FROM adstream.sinks k WHERE k.name = p_sink FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'sink "%" does not exist', p_sink USING ERRCODE = 'undefined_object';
	END IF;
	-- A cursor restored from another cluster names transactions that never
	-- ran here: it would silently skip changes.
	IF pg_snapshot_xmin(s.done_snapshot) > pg_current_xact_id() THEN
		RAISE EXCEPTION 'the cursor of sink "%" comes from another cluster', p_sink
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'After a restore, drop and re-create the sink; it then sends the current state again.';
	END IF;
	v_target := coalesce(s.target_snapshot, pg_current_snapshot());
	RETURN QUERY
	SELECT o.id,
		   CASE o.kind WHEN 'ad_stats' THEN s.topic_ad_stats ELSE s.topic_orders END,
		   adstream._record_key(o.kind, o.ad_id, o.window_start, o.order_id),
		   CASE o.kind
		   WHEN 'ad_stats' THEN
			(SELECT jsonb_build_object(
				'node', current_setting('adstream.node_name'), 'ad_id', m.ad_id, 'campaign_id', m.campaign_id,
				'window_start', (extract(epoch FROM m.window_start) * 1000)::bigint,
				'impressions', m.impressions, 'clicks', m.clicks, 'version', o.id,
				'record_uuid', adstream.record_uuid('ad_stats', adstream._record_key(o.kind, o.ad_id, o.window_start, NULL)),
				'updated_at', (extract(epoch FROM m.updated_at) * 1000)::bigint)::text
			   FROM adstream.ad_stats_minute m WHERE m.ad_id = o.ad_id AND m.window_start = o.window_start)
		   ELSE
			(SELECT jsonb_build_object(
				'order_id', a.order_id, 'node', current_setting('adstream.node_name'), 'ad_id', a.ad_id,
				'campaign_id', a.campaign_id, 'click_event_id', a.click_event_id,
				'click_ts', (extract(epoch FROM a.click_ts) * 1000)::bigint,
				'order_ts', (extract(epoch FROM a.order_ts) * 1000)::bigint,
				'amount', a.amount::text, 'currency', a.currency, 'attribution', a.attribution,
				'record_uuid', a.record_uuid, 'version', o.id,
				'attributed_at', (extract(epoch FROM a.attributed_at) * 1000)::bigint)::text
			   FROM adstream.attributed_orders a WHERE a.order_id = o.order_id)
		   END
	  FROM adstream.outbox o
	 WHERE o.txid >= pg_snapshot_xmin(s.done_snapshot)
	   AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
	   AND pg_visible_in_snapshot(o.txid, v_target)
	   AND o.id > s.last_id
	 ORDER BY o.id
	 LIMIT p_limit;
	GET DIAGNOSTICS v_n = ROW_COUNT;

	IF v_n > 0 AND s.target_snapshot IS NULL THEN
		-- open the window: its end is fixed until it is fully published
		UPDATE adstream.sinks SET target_snapshot = v_target WHERE name = p_sink;
	ELSIF v_n = 0 AND s.target_snapshot IS NOT NULL THEN
		-- an open window with nothing left: close it
		UPDATE adstream.sinks SET done_snapshot = target_snapshot, target_snapshot = NULL, last_id = 0
		 WHERE name = p_sink;
	END IF;
	-- (an idle sink with no window writes nothing)
END
$$;

/*
 * After a Kafka commit: the page read from position p_from up to p_last_id
 * is published; when the page was the window's last, the window is closed.
 * Returns false if the cursor is no longer where the page was read from
 * (another publisher moved it), in which case nothing changes.
 */
CREATE FUNCTION adstream._sink_advance(p_sink text, p_from bigint, p_last_id bigint, p_records integer,
									   p_window_done boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE adstream.sinks
	   SET done_snapshot = CASE WHEN p_window_done THEN target_snapshot ELSE done_snapshot END,
		   target_snapshot = CASE WHEN p_window_done THEN NULL ELSE target_snapshot END,
		   last_id = CASE WHEN p_window_done THEN 0 ELSE p_last_id END,
		   txns_committed = txns_committed + 1,
		   records_published = records_published + p_records,
		   last_publish_at = now()
	 WHERE name = p_sink AND last_id = p_from AND target_snapshot IS NOT NULL;
	RETURN FOUND;
END
$$;

CREATE FUNCTION adstream._sink_aborted(p_sink text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE adstream.sinks SET txns_aborted = txns_aborted + 1 WHERE name = p_sink;
END;

/* Outbox rows every sink has published (or all committed ones, without sinks). */
CREATE FUNCTION adstream.prune_outbox()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_horizon	xid8;
	v_n			bigint;
BEGIN
	SELECT coalesce(min(pg_snapshot_xmin(done_snapshot)), pg_snapshot_xmin(pg_current_snapshot()))
	  INTO v_horizon FROM adstream.sinks;
	DELETE FROM adstream.outbox WHERE txid < v_horizon;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION adstream.prune_outbox() IS
	'Deletes outbox rows that every sink has published; returns how many';

-------------------------------------------------------------------------------
-- Sink API
-------------------------------------------------------------------------------

CREATE FUNCTION adstream.create_sink(name text, brokers text, options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_key		text;
	v_val		jsonb;
	v_text		text;
	v_err		text;
	v_props		jsonb := '{}';
	v_topic_a	text := 'adstream.ad_stats';
	v_topic_o	text := 'adstream.attributed_orders';
	v_snap		pg_snapshot;
BEGIN
	IF name IS NULL OR name !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid sink name %', coalesce('"' || name || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A sink name is 1 to 63 characters from A-Z, a-z, 0-9, "_", "." and "-", such as ''region_b''.';
	END IF;
	IF brokers IS NULL OR btrim(brokers) = '' THEN
		RAISE EXCEPTION 'brokers must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give a bootstrap list such as ''kafka1:9092,kafka2:9092''.';
	END IF;
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass for example ''{"topic_ad_stats": "ads.stats", "security.protocol": "SASL_SSL"}''.';
	END IF;
	IF EXISTS (SELECT 1 FROM adstream.sinks s WHERE s.name = create_sink.name) THEN
		RAISE EXCEPTION 'sink "%" already exists', create_sink.name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it first with adstream.drop_sink(), or choose another name.';
	END IF;

	FOR v_key, v_val IN SELECT * FROM jsonb_each(options) LOOP
		IF jsonb_typeof(v_val) NOT IN ('string', 'number', 'boolean') THEN
			RAISE EXCEPTION 'option "%" must be a string, number or boolean', v_key
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_text := v_val #>> '{}';
		IF v_key IN ('topic_ad_stats', 'topic_orders') THEN
			IF v_text !~ '^[A-Za-z0-9._-]{1,249}$' OR v_text IN ('.', '..') THEN
				RAISE EXCEPTION 'invalid Kafka topic name % for option "%"', quote_literal(v_text), v_key
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF v_key = 'topic_ad_stats' THEN v_topic_a := v_text; ELSE v_topic_o := v_text; END IF;
			CONTINUE;
		END IF;
		IF v_key IN ('bootstrap.servers', 'metadata.broker.list', 'transactional.id',
					 'enable.idempotence', 'acks', 'transaction.timeout.ms', 'partitioner',
					 'client.id', 'linger.ms') THEN
			RAISE EXCEPTION 'librdkafka property "%" is managed by adstream', v_key
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Publishing uses an idempotent, transactional producer with transactional.id adstream.<database>.<sink>.';
		END IF;
		IF adstream._is_privileged_property(v_key)
		   AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
			RAISE EXCEPTION 'only a superuser may set librdkafka property "%"', v_key
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = 'It makes the server run a program, load a library or read a file.';
		END IF;
		v_err := adstream._kafka_property_error(v_key, v_text);
		IF v_err IS NOT NULL THEN
			RAISE EXCEPTION 'invalid librdkafka property "%"', v_key
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = CASE WHEN adstream._is_secret(v_key) THEN 'The value was rejected.' ELSE v_err END;
		END IF;
		v_props := v_props || jsonb_build_object(v_key, v_text);
	END LOOP;

	/*
	 * A new sink receives everything: the current state is queued as
	 * outbox rows in this transaction, and its cursor starts at this
	 * transaction's snapshot, which the rows are not visible in yet.  The
	 * lock waits for batches that saw no sink (see _publishing).
	 */
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'create_sink must run at isolation level READ COMMITTED'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'Its snapshot must be taken after it has waited for running batches.';
	END IF;
	IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
		RAISE EXCEPTION 'create_sink must run in a transaction that has not written anything yet'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'Call it in its own transaction.';
	END IF;
	-- (SHARE ROW EXCLUSIVE: also keeps two create_sink calls from deadlocking)
	LOCK TABLE adstream.outbox IN SHARE ROW EXCLUSIVE MODE;
	-- Taken before this transaction writes, so its own xid (assigned by the
	-- first write) is not visible in it and the backfill below is published.
	v_snap := pg_current_snapshot();
	INSERT INTO adstream.sinks (name, brokers, topic_ad_stats, topic_orders, kafka_options, done_snapshot)
	VALUES (create_sink.name, create_sink.brokers, v_topic_a, v_topic_o, v_props, v_snap);
	INSERT INTO adstream.outbox (kind, ad_id, window_start)
	SELECT 'ad_stats', m.ad_id, m.window_start FROM adstream.ad_stats_minute m;
	INSERT INTO adstream.outbox (kind, order_id)
	SELECT 'attributed_orders', a.order_id FROM adstream.attributed_orders a;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.create_sink(text, text, jsonb) IS
	'Registers a Kafka cluster that receives every result for Pinot, starting with the current state';

CREATE FUNCTION adstream._sink_must_exist(p_name text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM adstream.sinks WHERE name = p_name) THEN
		RAISE EXCEPTION 'sink % does not exist', coalesce('"' || p_name || '"', 'NULL')
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.sink_status for the existing sinks.';
	END IF;
END
$$;

CREATE FUNCTION adstream.drop_sink(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._sink_must_exist(name);
	DELETE FROM adstream.sinks s WHERE s.name = drop_sink.name;
	PERFORM adstream.prune_outbox();
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.drop_sink(text) IS 'Stops and forgets a sink and its cursor';

CREATE FUNCTION adstream.pause_sink(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._sink_must_exist(name);
	UPDATE adstream.sinks s SET enabled = false WHERE s.name = pause_sink.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.pause_sink(text) IS 'Stops publishing to a sink; its backlog waits in the outbox';

CREATE FUNCTION adstream.resume_sink(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._sink_must_exist(name);
	UPDATE adstream.sinks s SET enabled = true, generation = adstream._new_generation()
	 WHERE s.name = resume_sink.name AND NOT s.enabled;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.resume_sink(text) IS 'Resumes publishing to a sink from its cursor';

CREATE FUNCTION adstream.publisher_status(
	OUT sink_id integer, OUT pid integer, OUT state text, OUT started_at timestamptz,
	OUT last_commit_at timestamptz, OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_publisher_status';
COMMENT ON FUNCTION adstream.publisher_status() IS
	'One row per running or restarting publisher worker, from shared memory';

CREATE VIEW adstream.sink_status AS
SELECT s.name AS sink,
	   CASE WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS sink_state,
	   w.pid AS worker_pid,
	   coalesce(w.state, CASE WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   s.done_snapshot::text AS cursor_snapshot,
	   s.last_id AS cursor_last_id,
	   b.rows AS backlog_rows,
	   b.bytes AS backlog_bytes,
	   s.records_published,
	   s.txns_committed,
	   s.txns_aborted,
	   s.last_publish_at,
	   w.last_error,
	   w.last_error_at
  FROM adstream.sinks s
  LEFT JOIN LATERAL (
	SELECT count(*) AS rows, coalesce(sum(pg_column_size(o.*)), 0) AS bytes
	  FROM adstream.outbox o
	 WHERE o.txid >= pg_snapshot_xmin(s.done_snapshot)
	   AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
	   AND (s.target_snapshot IS NULL OR o.id > s.last_id
			OR NOT pg_visible_in_snapshot(o.txid, s.target_snapshot))) b ON true
  LEFT JOIN adstream.publisher_status() w ON w.sink_id = s.id;
COMMENT ON VIEW adstream.sink_status IS
	'One row per sink: worker, cursor, backlog, Kafka transactions committed and aborted, last error';

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

REVOKE ALL ON adstream.outbox, adstream.sinks, adstream.sink_status FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream._record_key(text, bigint, timestamptz, uuid), adstream._outbox_page(text, integer),
	adstream._sink_advance(text, bigint, bigint, integer, boolean), adstream._sink_aborted(text), adstream.prune_outbox(),
	adstream.create_sink(text, text, jsonb), adstream._sink_must_exist(text), adstream.drop_sink(text),
	adstream.pause_sink(text), adstream.resume_sink(text), adstream.publisher_status(),
	adstream._queue_attributed_orders(), adstream._publishing() FROM PUBLIC;
GRANT SELECT ON adstream.sink_status TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.publisher_status() TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.create_sink(text, text, jsonb), adstream.drop_sink(text),
	adstream.pause_sink(text), adstream.resume_sink(text) TO adstream_admin;
