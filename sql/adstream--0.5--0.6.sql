/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Failover: the node's identity lives in the database, and published
-- versions rise across timelines (issue #13; docs/deployment.md)
-------------------------------------------------------------------------------

/* adstream.node_name (by default the host name): what a node is first named. */
CREATE FUNCTION adstream._node_name_setting()
RETURNS text LANGUAGE C STRICT STABLE
AS 'MODULE_PATHNAME', 'adstream_node_name_setting';
COMMENT ON FUNCTION adstream._node_name_setting() IS
	'Internal: the setting adstream.node_name (by default the host name), which names the node when adstream.node gets its row';

/* The timeline this server writes WAL on: it rises at every promotion. */
CREATE FUNCTION adstream._timeline()
RETURNS integer LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_timeline';
COMMENT ON FUNCTION adstream._timeline() IS
	'Internal: the timeline this server writes WAL on (on a standby, the one it replays)';

/*
 * The node's identity, replicated and dumped with the rest: a standby
 * promoted on another host publishes under the same name (the keys of
 * ad_stats in Pinot) and the same transactional.id (which fences the old
 * primary's publisher in Kafka).  The row is written when it is first needed
 * (the first sink, a publisher, an adoption), from adstream.node_name, and
 * not by CREATE EXTENSION, so that pg_restore brings the dumped one back
 * without a conflict.
 *
 * version_epoch and published_timeline make versions: see _version_base.
 */
CREATE TABLE adstream.node (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	name				text NOT NULL CHECK (name <> '' AND strpos(name, '|') = 0 AND length(name) <= 255),
	version_epoch		integer NOT NULL DEFAULT 0 CHECK (version_epoch >= 0),
	published_timeline	integer NOT NULL DEFAULT 0,
	named_at			timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE adstream.node IS
	'This node''s name in published records (part of Pinot''s key) and the epoch its versions start from; one row, replicated to standbys';
SELECT pg_catalog.pg_extension_config_dump('adstream.node', '');

/*
 * The node's name: the database's once it has one, else the setting.  In C,
 * read once per transaction: _record_key calls it for every published row.
 */
CREATE FUNCTION adstream.node_name()
RETURNS text LANGUAGE C STRICT STABLE
AS 'MODULE_PATHNAME', 'adstream_node_name_fn';
COMMENT ON FUNCTION adstream.node_name() IS
	'This node''s name in published records: adstream.node''s, or adstream.node_name until the first sink names it';

/* Names the node from the setting if it has no name yet; returns the name. */
CREATE FUNCTION adstream._ensure_node()
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO adstream.node (name) VALUES (adstream._node_name_setting()) ON CONFLICT (singleton) DO NOTHING;
	RETURN (SELECT n.name FROM adstream.node n);
END
$$;

/*
 * What every published version is added to: (version_epoch + timeline) in
 * the high bits (48 to 62), the outbox id (below 2^48) in the low ones.
 *
 * Within a timeline, versions are outbox ids, which rise per key in commit
 * order.  A standby promoted from an asynchronous primary lacks the last
 * transactions, whose records the old primary may have published: its
 * sequence reuses their ids, and its counts of the same keys start lower.
 * But it writes on a new timeline, higher than any in its history, so every
 * record it publishes outranks every record of the old one (which, if it
 * still runs, stays on its timeline).  A copy restored from a dump (or
 * pg_upgrade) starts a new history at timeline 1: adopt_restored raises
 * version_epoch past the original's.
 */
CREATE FUNCTION adstream._version_base()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_epoch		bigint := coalesce((SELECT n.version_epoch FROM adstream.node n), 0) + adstream._timeline();
BEGIN
	IF v_epoch >= 32768 THEN
		RAISE EXCEPTION 'adstream has no versions left: epoch % of 32767', v_epoch
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'Version epochs are the timeline plus adstream.node.version_epoch; see docs/deployment.md.';
	END IF;
	RETURN v_epoch << 48;
END
$$;
COMMENT ON FUNCTION adstream._version_base() IS
	'Internal: added to outbox ids to make published versions; the epoch (timeline plus adstream.node.version_epoch) in bits 48 to 62';

/*
 * A publisher's start: names the node if it has no name yet, notes the
 * timeline it publishes on (adopt_restored reads it from a dump), and
 * returns its Kafka transactional.id, which is the same on a promoted
 * standby, so that its init_transactions fences the old primary's
 * publisher.  conflict is set when adstream.node_name is set to another
 * name than the node's: the publisher then waits, with it as its error.
 */
CREATE FUNCTION adstream._publisher_identity(p_sink text, OUT transactional_id text, OUT conflict text)
RETURNS record LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_name		text := adstream._ensure_node();
BEGIN
	UPDATE adstream.node SET published_timeline = adstream._timeline()
	 WHERE published_timeline < adstream._timeline();
	transactional_id := 'adstream.' || v_name || '.' || current_database() || '.' || p_sink;
	SELECT format('adstream.node_name is set to %L, but this node is named %L in the database (adstream.node): '
				  'remove the setting or set it to %L, and restart', s.setting, v_name, v_name)
	  INTO conflict
	  FROM pg_settings s
	 WHERE s.name = 'adstream.node_name' AND s.source <> 'default' AND s.setting <> v_name;
END
$$;

/*
 * Names (or renames) the node.  Refused while sinks exist: Pinot holds the
 * old name's rows, and the new name's would be added to them.
 */
CREATE FUNCTION adstream.set_node_name(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL OR name = '' OR strpos(name, '|') > 0 OR length(name) > 255 THEN
		RAISE EXCEPTION 'invalid node name %', coalesce('"' || name || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A node name is 1 to 255 characters without "|", such as ''eu1''.';
	END IF;
	IF EXISTS (SELECT 1 FROM adstream.sinks) THEN
		RAISE EXCEPTION 'the node cannot be renamed while sinks exist'
			USING ERRCODE = 'object_in_use',
				  DETAIL = 'Pinot keeps the rows published under the old name; rows under a new name would be added to them.',
				  HINT = 'Drop the sinks first, and delete the old name''s rows from Pinot.';
	END IF;
	INSERT INTO adstream.node (name) VALUES (set_node_name.name)
	ON CONFLICT (singleton) DO UPDATE SET name = excluded.name, named_at = now();
END
$$;
COMMENT ON FUNCTION adstream.set_node_name(text) IS
	'Names this node in published records (kept in the database, so that a promoted standby keeps it); refused while sinks exist';

-- Versions keep ids below 2^48 and the epoch above (_version_base).
ALTER TABLE adstream.outbox ALTER COLUMN id SET MAXVALUE 281474976710655;

-- The node's name, in keys and values, and the versions' epoch.
CREATE OR REPLACE FUNCTION adstream._record_key(p_kind text, p_ad_id bigint, p_window timestamptz, p_order uuid)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE p_kind
	WHEN 'ad_stats' THEN adstream.node_name() || '|' || p_ad_id || '|'
						 || (extract(epoch FROM p_window) * 1000)::bigint
	ELSE p_order::text END;

CREATE OR REPLACE FUNCTION adstream._outbox_page(p_sink text, p_limit integer)
RETURNS TABLE (id bigint, topic text, record_key text, value text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s			adstream.sinks;
	v_target	pg_snapshot;
	v_n			bigint;
	v_node		text := adstream.node_name();
	v_base		bigint := adstream._version_base();	-- the epoch of versions (failover)
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
				'node', v_node, 'ad_id', o.ad_id, 'campaign_id', max(m.campaign_id),
				'window_start', (extract(epoch FROM o.window_start) * 1000)::bigint,
				'impressions', coalesce(sum(m.impressions), 0), 'clicks', coalesce(sum(m.clicks), 0), 'version', v_base + o.id,
				'record_uuid', adstream.record_uuid('ad_stats', adstream._record_key(o.kind, o.ad_id, o.window_start, NULL)),
				'updated_at', (extract(epoch FROM coalesce(max(m.updated_at), now())) * 1000)::bigint)::text
			   FROM adstream.ad_stats_minute m WHERE m.ad_id = o.ad_id AND m.window_start = o.window_start
			 HAVING count(*) > 0
				 OR EXISTS (SELECT 1 FROM pg_inherits i
							 WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
							   AND adstream._partition_upper(i.inhrelid) > o.window_start
							   AND adstream._partition_upper(i.inhrelid) <= o.window_start + interval '24 hours'))
		   ELSE
			(SELECT jsonb_build_object(
				'order_id', a.order_id, 'node', v_node, 'ad_id', a.ad_id,
				'campaign_id', a.campaign_id, 'click_event_id', a.click_event_id,
				'click_ts', (extract(epoch FROM a.click_ts) * 1000)::bigint,
				'order_ts', (extract(epoch FROM a.order_ts) * 1000)::bigint,
				'amount', a.amount::text, 'currency', a.currency, 'attribution', a.attribution,
				'record_uuid', a.record_uuid, 'version', v_base + o.id,
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

-- The first sink names the node; an adoption raises the versions' epoch.
CREATE OR REPLACE FUNCTION adstream.create_sink(name text, brokers text, options jsonb DEFAULT '{}')
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
	-- The outbox still holds the backlog of sinks restored from a dump, in
	-- the original cluster's transaction ids: adopt_restored re-dates it
	-- when it adopts the first of them, which must come before any sink
	-- of this installation publishes.
	IF EXISTS (SELECT 1 FROM adstream.sinks k WHERE k.origin IS DISTINCT FROM adstream._origin()) THEN
		RAISE EXCEPTION 'sinks restored from a dump are waiting to be adopted'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Call adstream.adopt_restored() once the restore is complete, or drop the restored sinks first.';
	END IF;
	-- Taken before this transaction writes, so its own xid (assigned by the
	-- first write) is not visible in it and the backfill below is published.
	v_snap := pg_current_snapshot();
	-- the node's name is fixed in the database from now on (failover)
	PERFORM adstream._ensure_node();
	INSERT INTO adstream.sinks (name, brokers, topic_ad_stats, topic_orders, kafka_options, done_snapshot, origin)
	VALUES (create_sink.name, create_sink.brokers, v_topic_a, v_topic_o, v_props, v_snap, adstream._origin());
	INSERT INTO adstream.outbox (kind, ad_id, window_start)
	SELECT DISTINCT 'ad_stats', m.ad_id, m.window_start FROM adstream.ad_stats_minute m ORDER BY 2, 3;	-- one per (ad, minute)
	INSERT INTO adstream.outbox (kind, order_id)
	SELECT 'attributed_orders', a.order_id FROM adstream.attributed_orders a;
	PERFORM adstream._wake_launcher();
END
$$;

CREATE OR REPLACE FUNCTION adstream.adopt_restored(name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_origin	text := adstream._origin();
	v_sources	integer;
	v_sinks		integer;
	v_first		boolean;
	v_no_outbox	boolean;
BEGIN
	IF adopt_restored.name IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM adstream.sources s WHERE s.name = adopt_restored.name)
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks k WHERE k.name = adopt_restored.name) THEN
		RAISE EXCEPTION 'source or sink "%" does not exist', adopt_restored.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.source_status and adstream.sink_status: restored ones are held.';
	END IF;
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'adopt_restored must run at isolation level READ COMMITTED'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'It must see the sinks as they are once it holds the outbox''s lock.';
	END IF;

	-- Serialises with create_sink, other adoptions and the batches that
	-- write the outbox.
	LOCK TABLE adstream.outbox IN SHARE ROW EXCLUSIVE MODE;

	SELECT count(*) INTO v_sources FROM adstream.sources s
	 WHERE s.origin IS DISTINCT FROM v_origin AND (adopt_restored.name IS NULL OR s.name = adopt_restored.name);
	SELECT count(*), coalesce(bool_or(k.origin IS NULL), false) INTO v_sinks, v_no_outbox FROM adstream.sinks k
	 WHERE k.origin IS DISTINCT FROM v_origin AND (adopt_restored.name IS NULL OR k.name = adopt_restored.name);
	IF v_sources + v_sinks = 0 THEN
		RETURN 0;
	END IF;
	v_first := NOT EXISTS (SELECT 1 FROM adstream.sinks k WHERE k.origin = v_origin);

	-- Before anything is written: versions ahead of the original's.
	PERFORM adstream._ensure_node();
	UPDATE adstream.node
	   SET version_epoch = greatest(version_epoch, version_epoch + published_timeline + 100 - adstream._timeline()),
		   published_timeline = adstream._timeline();

	IF v_sinks > 0 AND v_first THEN
		UPDATE adstream.outbox SET txid = '3' WHERE txid <> '3';
	END IF;
	IF v_no_outbox THEN
		INSERT INTO adstream.outbox (kind, ad_id, window_start)
		SELECT DISTINCT 'ad_stats', m.ad_id, m.window_start FROM adstream.ad_stats_minute m ORDER BY 2, 3;	-- one per (ad, minute)
		INSERT INTO adstream.outbox (kind, order_id)
		SELECT 'attributed_orders', a.order_id FROM adstream.attributed_orders a;
	END IF;
	UPDATE adstream.sinks k
	   SET origin = v_origin, done_snapshot = '3:3:', target_snapshot = NULL, last_id = 0,
		   generation = adstream._new_generation()
	 WHERE k.origin IS DISTINCT FROM v_origin AND (adopt_restored.name IS NULL OR k.name = adopt_restored.name);

	UPDATE adstream.sources s
	   SET origin = v_origin, generation = adstream._new_generation(), updated_at = now()
	 WHERE s.origin IS DISTINCT FROM v_origin AND (adopt_restored.name IS NULL OR s.name = adopt_restored.name);

	PERFORM adstream._wake_launcher();
	RETURN v_sources + v_sinks;
END
$$;

-- New functions: PUBLIC may execute none (as REVOKE ALL ON ALL FUNCTIONS in
-- the full script).
REVOKE ALL ON FUNCTION adstream._node_name_setting(), adstream._timeline(), adstream.node_name(),
	adstream._ensure_node(), adstream._version_base(), adstream._publisher_identity(text),
	adstream.set_node_name(text) FROM PUBLIC;

-- Failover: readers may see the node's name; naming it is management.
REVOKE ALL ON adstream.node FROM PUBLIC;
GRANT SELECT ON adstream.node TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.node_name() TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.set_node_name(text) TO adstream_admin;

-- An installation that already publishes keeps the name it publishes under
-- (0.5 read adstream.node_name at every use).
INSERT INTO adstream.node (name)
SELECT adstream._node_name_setting() WHERE EXISTS (SELECT 1 FROM adstream.sinks);

-------------------------------------------------------------------------------
-- Several nodes on one topic: each consumes the partitions its sources list
-- (issue #13; docs/deployment.md)
-------------------------------------------------------------------------------

/*
 * The partitions a source consumes, from create_source's "partitions" option
 * ('0-15', '0,2,5-7' or a single number); NULL: every partition of the topic.
 * Other nodes (other PostgreSQL servers) consume the rest.
 */
ALTER TABLE adstream.sources ADD COLUMN partitions integer[]
	CHECK (partitions IS NULL OR (cardinality(partitions) > 0 AND 0 <= ALL (partitions)));

/* '0-15,20' -> {0,...,15,20}: sorted, without duplicates; errors name the part. */
CREATE FUNCTION adstream._parse_partitions(p_spec text)
RETURNS integer[] LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_part		text;
	v_m			text[];
	v_out		integer[] := '{}';
BEGIN
	FOREACH v_part IN ARRAY string_to_array(p_spec, ',') LOOP
		v_m := regexp_match(btrim(v_part), '^([0-9]{1,5})(?:\s*-\s*([0-9]{1,5}))?$');
		IF v_m IS NULL OR coalesce(v_m[2], v_m[1])::integer < v_m[1]::integer THEN
			RAISE EXCEPTION 'invalid value for option "partitions": %', quote_literal(p_spec)
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('%s is neither a partition number nor a range from a lower to a higher one.',
									  quote_literal(btrim(v_part))),
					  HINT = 'List partitions and ranges, such as ''0-15'' or ''0,2,5-7''.';
		END IF;
		v_out := v_out || ARRAY(SELECT generate_series(v_m[1]::integer, coalesce(v_m[2], v_m[1])::integer));
	END LOOP;
	IF cardinality(v_out) = 0 THEN
		RAISE EXCEPTION 'invalid value for option "partitions": %', quote_literal(p_spec)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'List partitions and ranges, such as ''0-15'' or ''0,2,5-7''.';
	END IF;
	RETURN ARRAY(SELECT DISTINCT p FROM unnest(v_out) AS p ORDER BY p);
END
$$;
COMMENT ON FUNCTION adstream._parse_partitions(text) IS
	'Internal: the partition numbers of create_source''s "partitions" option, such as ''0-15,20''';

-- create_source takes the "partitions" option, and names the node.
CREATE OR REPLACE FUNCTION adstream.create_source(
	name text,
	brokers text,
	topic text,
	kind text DEFAULT 'ad_events',
	options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_start		text := 'earliest';
	v_workers	integer := 1;
	v_group		text;
	v_props		jsonb := '{}';
	v_key		text;
	v_val		jsonb;
	v_text		text;
	v_err		text;
	v_parts		integer[];
BEGIN
	IF name IS NULL OR name !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid source name %', coalesce('"' || name || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A source name is 1 to 63 characters from A-Z, a-z, 0-9, "_", "." and "-", not starting with "." or "-".',
				  HINT = 'Choose a name such as ''ads_eu''.';
	END IF;
	IF kind IS NULL OR NOT kind = ANY (adstream._source_kinds()) THEN
		RAISE EXCEPTION 'unsupported source kind %', coalesce(quote_literal(kind), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Supported kinds: %s.', array_to_string(adstream._source_kinds(), ', '));
	END IF;
	IF brokers IS NULL OR btrim(brokers) = '' THEN
		RAISE EXCEPTION 'brokers must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give a bootstrap list such as ''kafka1:9092,kafka2:9092''.';
	END IF;
	IF topic IS NULL OR topic !~ '^[A-Za-z0-9._-]{1,249}$' OR topic IN ('.', '..') THEN
		RAISE EXCEPTION 'invalid Kafka topic name %', coalesce(quote_literal(topic), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kafka topic names are 1 to 249 characters from A-Z, a-z, 0-9, ".", "_" and "-".';
	END IF;
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass for example ''{"workers": 2, "start": "latest", "security.protocol": "SASL_SSL"}''.';
	END IF;
	IF EXISTS (SELECT 1 FROM adstream.sources s WHERE s.name = create_source.name) THEN
		RAISE EXCEPTION 'source "%" already exists', create_source.name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it first with adstream.drop_source(), or choose another name.';
	END IF;
	-- Two sources of a kind on one topic of one cluster would count every
	-- event twice: the same cluster is any broker address in common.
	SELECT s.name INTO v_text FROM adstream.sources s
	 WHERE s.kind = create_source.kind AND s.topic = create_source.topic
	   AND adstream._broker_set(s.brokers) && adstream._broker_set(create_source.brokers)
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'source "%" already consumes topic "%" of this Kafka cluster', v_text, create_source.topic
			USING ERRCODE = 'duplicate_object',
				  DETAIL = 'A second source on the same partitions would count every event again.',
				  HINT = 'Use the existing source (more workers: its "workers" option), or drop it first.';
	END IF;

	v_group := 'adstream.' || current_database() || '.' || create_source.name;

	FOR v_key, v_val IN SELECT * FROM jsonb_each(options) LOOP
		IF jsonb_typeof(v_val) NOT IN ('string', 'number', 'boolean') THEN
			RAISE EXCEPTION 'option "%" must be a string, number or boolean', v_key
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_text := v_val #>> '{}';
		CASE v_key
		WHEN 'start' THEN
			IF v_text NOT IN ('earliest', 'latest') THEN
				RAISE EXCEPTION 'invalid value for option "start": %', quote_literal(v_text)
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use ''earliest'' (the default) or ''latest''; it applies only to partitions without a stored offset.';
			END IF;
			v_start := v_text;
		WHEN 'workers' THEN
			IF v_text !~ '^[0-9]{1,2}$' OR v_text::integer NOT BETWEEN 1 AND 64 THEN
				RAISE EXCEPTION 'invalid value for option "workers": %', quote_literal(v_text)
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use a whole number from 1 to 64; each worker takes the partitions p with p % workers = its index.';
			END IF;
			v_workers := v_text::integer;
		WHEN 'group_id' THEN
			IF btrim(v_text) = '' THEN
				RAISE EXCEPTION 'option "group_id" must not be empty'
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			v_group := v_text;
		WHEN 'partitions' THEN
			-- this node's share of the topic; other servers consume the rest
			v_parts := adstream._parse_partitions(v_text);
		ELSE
			IF v_key IN ('bootstrap.servers', 'metadata.broker.list', 'group.id',
						 'enable.auto.commit', 'enable.auto.offset.store',
						 'isolation.level', 'auto.offset.reset', 'enable.partition.eof') THEN
				RAISE EXCEPTION 'librdkafka property "%" is managed by adstream', v_key
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use the brokers argument, or the options "group_id" and "start".';
			END IF;
			IF adstream._is_privileged_property(v_key)
			   AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
				RAISE EXCEPTION 'only a superuser may set librdkafka property "%"', v_key
					USING ERRCODE = 'insufficient_privilege',
						  DETAIL = 'It makes the server run a program, load a library or read a file.',
						  HINT = 'Ask a superuser to create this source.';
			END IF;
			v_err := adstream._kafka_property_error(v_key, v_text);
			IF v_err IS NOT NULL THEN
				RAISE EXCEPTION 'invalid librdkafka property "%"', v_key
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = CASE WHEN adstream._is_secret(v_key) THEN 'The value was rejected.' ELSE v_err END,
						  HINT = 'Options other than "start", "workers", "group_id" and "partitions" are passed to librdkafka; see its CONFIGURATION.md.';
			END IF;
			v_props := v_props || jsonb_build_object(v_key, v_text);
		END CASE;
	END LOOP;

	IF current_setting('adstream.database', true) IS DISTINCT FROM current_database() THEN
		RAISE WARNING 'adstream workers run in database "%", not in "%"',
			coalesce(current_setting('adstream.database', true), 'postgres'), current_database()
			USING HINT = 'This source is consumed only if adstream.database names this database and the server is restarted.';
	END IF;

	-- the node's name, which its commits to Kafka carry, is fixed from now on
	PERFORM adstream._ensure_node();
	INSERT INTO adstream.sources (name, kind, brokers, topic, start_policy, workers, group_id, kafka_options,
								  origin, partitions)
	VALUES (create_source.name, create_source.kind, create_source.brokers, create_source.topic,
			v_start, v_workers, v_group, v_props, adstream._origin(), v_parts);
	PERFORM adstream._wake_launcher();
END
$$;

REVOKE ALL ON FUNCTION adstream._parse_partitions(text) FROM PUBLIC;
