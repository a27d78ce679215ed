/* adstream--0.1.sql -- install script */

\echo Use "CREATE EXTENSION adstream" to load this file. \quit

/*
 * Roles are cluster-wide, so they may exist from an earlier installation or
 * from another database; create them only when missing.
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'adstream_reader') THEN
		CREATE ROLE adstream_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'adstream_admin') THEN
		CREATE ROLE adstream_admin NOLOGIN;
	END IF;
END
$roles$;
GRANT adstream_reader TO adstream_admin;

CREATE SCHEMA adstream;
COMMENT ON SCHEMA adstream IS 'adstream: exactly-once Kafka ingestion of ad events';
GRANT USAGE ON SCHEMA adstream TO adstream_reader, adstream_admin;

-------------------------------------------------------------------------------
-- Configuration
-------------------------------------------------------------------------------

/*
 * A source's generation tells its workers apart from those of an older
 * version of it (paused and resumed, or dropped and re-created under the same
 * id after DROP EXTENSION): the microseconds of the clock, never reused.
 */
CREATE FUNCTION adstream._new_generation()
RETURNS bigint LANGUAGE sql VOLATILE
RETURN (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;

CREATE TABLE adstream.sources (
	id				integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL UNIQUE,
	kind			text NOT NULL,
	brokers			text NOT NULL,
	topic			text NOT NULL,
	start_policy	text NOT NULL DEFAULT 'earliest',
	workers			integer NOT NULL DEFAULT 1,
	group_id		text NOT NULL,
	kafka_options	jsonb NOT NULL DEFAULT '{}',	-- librdkafka properties; may hold credentials
	enabled			boolean NOT NULL DEFAULT true,
	generation		bigint NOT NULL DEFAULT adstream._new_generation(),	-- new value when workers must restart
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	CHECK (kind IN ('ad_events')),
	CHECK (start_policy IN ('earliest', 'latest')),
	CHECK (workers BETWEEN 1 AND 64)
);
COMMENT ON TABLE adstream.sources IS
	'Kafka sources consumed by adstream workers; readable by superusers only because kafka_options may hold credentials (see adstream.source_config)';
SELECT pg_catalog.pg_extension_config_dump('adstream.sources', '');

/*
 * Committed consumer position per partition.  Written in the same
 * transaction as the batch's aggregates, dedup state and dead letters: this
 * row *is* the exactly-once boundary.  Broker-side group offsets are only a
 * courtesy copy for lag monitors and are never read back.
 */
CREATE TABLE adstream.offsets (
	source			text NOT NULL REFERENCES adstream.sources (name) ON DELETE CASCADE,
	topic			text NOT NULL,
	partition		integer NOT NULL,
	next_offset		bigint NOT NULL,
	max_event_ts	timestamptz,	-- event-time watermark of this partition
	accepted		bigint NOT NULL DEFAULT 0,
	duplicates		bigint NOT NULL DEFAULT 0,
	rejected		bigint NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, topic, partition)
) WITH (fillfactor = 50);
COMMENT ON TABLE adstream.offsets IS
	'Next Kafka offset to consume per source partition, committed atomically with results';
SELECT pg_catalog.pg_extension_config_dump('adstream.offsets', '');

-------------------------------------------------------------------------------
-- Results
-------------------------------------------------------------------------------

/*
 * Time-partitioned tables and their partition grain.  Workers create the
 * partitions they need on demand (adstream.ensure_partitions); expired ones
 * are detached and dropped whole, never deleted row by row.
 */
CREATE TABLE adstream.partitioned_tables (
	name		text PRIMARY KEY,
	grain		interval NOT NULL,
	fillfactor	integer NOT NULL DEFAULT 100
);
COMMENT ON TABLE adstream.partitioned_tables IS
	'Grain and fillfactor of the time-partitioned adstream tables';
INSERT INTO adstream.partitioned_tables VALUES
	('ad_stats_minute', interval '1 day', 70),	-- room for HOT updates
	('dedup_state', interval '1 hour', 100);

CREATE TABLE adstream.ad_stats_minute (
	ad_id			bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	window_start	timestamptz NOT NULL,
	impressions		bigint NOT NULL DEFAULT 0,
	clicks			bigint NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (ad_id, window_start)
) PARTITION BY RANGE (window_start);
COMMENT ON TABLE adstream.ad_stats_minute IS
	'Deduplicated impressions and clicks per ad and one-minute UTC event-time window';

CREATE TABLE adstream.dedup_state (
	source_id	integer NOT NULL,
	event_id	uuid NOT NULL,
	event_ts	timestamptz NOT NULL,
	PRIMARY KEY (source_id, event_id, event_ts)
) PARTITION BY RANGE (event_ts);
COMMENT ON TABLE adstream.dedup_state IS
	'Event ids seen per source within adstream.dedup_horizon of event time';

CREATE TABLE adstream.rejected_events (
	source			text NOT NULL,
	topic			text NOT NULL,
	partition		integer NOT NULL,
	"offset"		bigint NOT NULL,
	reason			text NOT NULL,
	detail			text,
	payload			bytea,			-- first 8 KiB of the message value
	payload_bytes	integer NOT NULL,	-- full size of the message value
	received_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, topic, partition, "offset")
);
CREATE INDEX ON adstream.rejected_events (received_at);
COMMENT ON TABLE adstream.rejected_events IS
	'Dead letters: every message that failed validation, with its reason';

-------------------------------------------------------------------------------
-- Internal C functions
-------------------------------------------------------------------------------

CREATE FUNCTION adstream._wake_launcher()
RETURNS void LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'adstream_wake_launcher';

CREATE FUNCTION adstream._kafka_property_error(key text, value text)
RETURNS text LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'adstream_kafka_property_error';

CREATE FUNCTION adstream.worker_status(
	OUT source_id integer, OUT worker_index integer, OUT pid integer,
	OUT state text, OUT started_at timestamptz, OUT last_commit_at timestamptz,
	OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_worker_status';
COMMENT ON FUNCTION adstream.worker_status() IS
	'One row per running or restarting consumer worker, from shared memory';

CREATE FUNCTION adstream.partition_status(
	OUT source_id integer, OUT partition integer, OUT pid integer,
	OUT high_watermark bigint, OUT read_position bigint)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_partition_status';
COMMENT ON FUNCTION adstream.partition_status() IS
	'Per assigned partition: broker high watermark and in-memory consume position';

CREATE FUNCTION adstream.validate_event(payload bytea,
	OUT reason text, OUT detail text, OUT event_id uuid, OUT type text,
	OUT ad_id bigint, OUT campaign_id bigint, OUT user_id bigint,
	OUT store_id bigint, OUT ts timestamptz)
RETURNS record LANGUAGE C STRICT STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'adstream_validate_event';
COMMENT ON FUNCTION adstream.validate_event(bytea) IS
	'Runs the consumer''s parser on one message value; reason is ''ok'' or the dead-letter reason (clock- and watermark-dependent checks excluded)';

CREATE FUNCTION adstream.validate_event(payload text,
	OUT reason text, OUT detail text, OUT event_id uuid, OUT type text,
	OUT ad_id bigint, OUT campaign_id bigint, OUT user_id bigint,
	OUT store_id bigint, OUT ts timestamptz)
RETURNS record LANGUAGE sql STRICT STABLE PARALLEL SAFE
RETURN adstream.validate_event(pg_catalog.convert_to(payload, 'UTF8'));
COMMENT ON FUNCTION adstream.validate_event(text) IS
	'Text form of adstream.validate_event(bytea)';

-------------------------------------------------------------------------------
-- Partitions
-------------------------------------------------------------------------------

CREATE FUNCTION adstream.ensure_partitions(p_table text, p_times timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_grain		interval;
	v_fill		integer;
	v_lo		timestamptz;
	v_name		text;
	v_created	integer := 0;
BEGIN
	SELECT grain, fillfactor INTO v_grain, v_fill
	  FROM adstream.partitioned_tables WHERE name = p_table;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'table "%" is not partitioned by adstream', p_table
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'See adstream.partitioned_tables.';
	END IF;

	-- Usually every partition exists: answer without taking the lock, which
	-- would otherwise serialise all workers until the end of their batches.
	IF NOT EXISTS (
		SELECT 1 FROM unnest(p_times) AS t
		 WHERE t IS NOT NULL
		   AND to_regclass(format('adstream.%I', p_table || '_p' ||
				to_char(date_bin(v_grain, t, timestamptz '1970-01-01 00:00:00+00') AT TIME ZONE 'UTC',
						'YYYYMMDD"_"HH24MI'))) IS NULL) THEN
		RETURN 0;
	END IF;

	-- Serialise creators; the check below then makes creation idempotent.
	PERFORM pg_advisory_xact_lock(hashtext('adstream.partitions'), hashtext(p_table));

	FOR v_lo IN
		SELECT DISTINCT date_bin(v_grain, t, timestamptz '1970-01-01 00:00:00+00')
		  FROM unnest(p_times) AS t WHERE t IS NOT NULL
	LOOP
		v_name := p_table || '_p' || to_char(v_lo AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
		CONTINUE WHEN to_regclass(format('adstream.%I', v_name)) IS NOT NULL;
		-- CREATE + ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so
		-- readers and other workers' inserts are not blocked.
		EXECUTE format('CREATE TABLE adstream.%I (LIKE adstream.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (fillfactor = %s)',
					   v_name, p_table, v_fill);
		EXECUTE format('ALTER TABLE adstream.%I ATTACH PARTITION adstream.%I FOR VALUES FROM (%L) TO (%L)',
					   p_table, v_name, v_lo, v_lo + v_grain);
		v_created := v_created + 1;
	END LOOP;
	RETURN v_created;
END
$$;
COMMENT ON FUNCTION adstream.ensure_partitions(text, timestamptz[]) IS
	'Creates the partitions of an adstream table that hold the given times; returns how many were created';

/*
 * The event-time watermark of a source: the highest event time accepted on
 * any of its partitions.
 */
CREATE FUNCTION adstream.source_watermark(p_source text)
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN (SELECT max(max_event_ts) FROM adstream.offsets WHERE source = p_source);
COMMENT ON FUNCTION adstream.source_watermark(text) IS
	'Event-time watermark of a source: the highest event time accepted on any of its partitions';

/*
 * Drop dedup partitions that lie wholly behind every source's watermark
 * minus the dedup horizon.  Any event that would fall into them is rejected
 * as too_late before dedup, so dropping cannot let a duplicate through.
 */
CREATE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_cutoff	timestamptz;
	v_part		record;
	v_dropped	integer := 0;
BEGIN
	SELECT min(wm) - current_setting('adstream.dedup_horizon')::interval INTO v_cutoff
	  FROM (SELECT max(max_event_ts) AS wm FROM adstream.offsets
			 GROUP BY source HAVING max(max_event_ts) IS NOT NULL) w;
	IF v_cutoff IS NULL THEN
		RETURN 0;
	END IF;

	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM pg_advisory_xact_lock(hashtext('adstream.partitions'), hashtext('dedup_expiry'));
	FOR v_part IN
		SELECT c.oid::regclass AS rel,
			   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
		  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		 WHERE i.inhparent = 'adstream.dedup_state'::regclass
	LOOP
		CONTINUE WHEN v_part.upper_bound IS NULL OR v_part.upper_bound > v_cutoff;
		EXECUTE format('ALTER TABLE adstream.dedup_state DETACH PARTITION %s', v_part.rel);
		EXECUTE format('DROP TABLE %s', v_part.rel);
		v_dropped := v_dropped + 1;
	END LOOP;
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.expire_dedup_state() IS
	'Drops dedup_state partitions older than every source''s watermark minus adstream.dedup_horizon; returns how many';

-------------------------------------------------------------------------------
-- Source management API
-------------------------------------------------------------------------------

/*
 * librdkafka properties that run programs, load code or read files on the
 * server.  create_source runs with the extension owner's rights, so only a
 * superuser may set them; an adstream_admin may not.
 */
CREATE FUNCTION adstream._is_privileged_property(p_key text)
RETURNS boolean LANGUAGE sql IMMUTABLE
RETURN p_key IN ('plugin.library.paths', 'sasl.kerberos.kinit.cmd', 'sasl.kerberos.keytab',
				 'ssl.engine.location', 'ssl.engine.id', 'ssl_engine_callback_data',
				 'opaque', 'interceptors', 'ssl.keystore.location')
	OR p_key LIKE '%.location';

/* The kinds of source this version consumes. */
CREATE FUNCTION adstream._source_kinds()
RETURNS text[] LANGUAGE sql IMMUTABLE
RETURN ARRAY['ad_events'];

/* Property names whose values are never shown. */
CREATE FUNCTION adstream._is_secret(p_key text)
RETURNS boolean LANGUAGE sql IMMUTABLE
RETURN p_key ~* '(password|secret|sasl\.jaas|sasl\.oauthbearer|ssl\.key\.|ssl_key|token|credential)';

CREATE FUNCTION adstream.create_source(
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
						  HINT = 'Options other than "start", "workers" and "group_id" are passed to librdkafka; see its CONFIGURATION.md.';
			END IF;
			v_props := v_props || jsonb_build_object(v_key, v_text);
		END CASE;
	END LOOP;

	IF current_setting('adstream.database', true) IS DISTINCT FROM current_database() THEN
		RAISE WARNING 'adstream workers run in database "%", not in "%"',
			coalesce(current_setting('adstream.database', true), 'postgres'), current_database()
			USING HINT = 'This source is consumed only if adstream.database names this database and the server is restarted.';
	END IF;

	INSERT INTO adstream.sources (name, kind, brokers, topic, start_policy, workers, group_id, kafka_options)
	VALUES (create_source.name, create_source.kind, create_source.brokers, create_source.topic,
			v_start, v_workers, v_group, v_props);
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.create_source(text, text, text, text, jsonb) IS
	'Registers a Kafka topic to consume; workers start within about a second';

CREATE FUNCTION adstream._source_must_exist(p_name text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM adstream.sources WHERE name = p_name) THEN
		RAISE EXCEPTION 'source % does not exist', coalesce('"' || p_name || '"', 'NULL')
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.source_status for the existing sources.';
	END IF;
END
$$;

CREATE FUNCTION adstream.drop_source(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._source_must_exist(name);
	-- Offsets go with the source (ON DELETE CASCADE); aggregates and dead
	-- letters stay, they are results.
	DELETE FROM adstream.sources s WHERE s.name = drop_source.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.drop_source(text) IS
	'Stops and forgets a source and its offsets; its aggregates and dead letters are kept';

CREATE FUNCTION adstream.pause_source(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._source_must_exist(name);
	UPDATE adstream.sources s SET enabled = false, updated_at = now()
	 WHERE s.name = pause_source.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.pause_source(text) IS
	'Stops a source''s workers; consumption resumes from the stored offsets';

CREATE FUNCTION adstream.resume_source(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._source_must_exist(name);
	UPDATE adstream.sources s
	   SET enabled = true, generation = adstream._new_generation(), updated_at = now()
	 WHERE s.name = resume_source.name AND NOT s.enabled;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.resume_source(text) IS
	'Restarts a paused source''s workers from the stored offsets';

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

CREATE VIEW adstream.source_config AS
SELECT s.name, s.kind, s.brokers, s.topic, s.start_policy, s.workers, s.group_id,
	   (SELECT coalesce(jsonb_object_agg(k, CASE WHEN adstream._is_secret(k) THEN to_jsonb('********'::text) ELSE v END), '{}')
		  FROM jsonb_each(s.kafka_options) AS o(k, v)) AS kafka_options,
	   s.enabled, s.created_at, s.updated_at
  FROM adstream.sources s;
COMMENT ON VIEW adstream.source_config IS
	'Sources with secret librdkafka properties masked';

CREATE VIEW adstream.source_status AS
WITH parts AS (
	SELECT s.id, s.name, o.partition FROM adstream.sources s
	  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
	UNION
	SELECT s.id, s.name, p.partition FROM adstream.sources s
	  JOIN adstream.partition_status() p ON p.source_id = s.id
)
SELECT s.name AS source,
	   s.topic,
	   CASE WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS source_state,
	   pt.partition,
	   coalesce(ps.pid, w.pid) AS worker_pid,
	   coalesce(w.state, CASE WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   o.next_offset,
	   ps.high_watermark,
	   CASE WHEN ps.high_watermark IS NOT NULL
			THEN greatest(ps.high_watermark - coalesce(o.next_offset, 0), 0) END AS lag,
	   coalesce(o.accepted, 0) AS accepted,
	   coalesce(o.duplicates, 0) AS duplicates,
	   coalesce(o.rejected, 0) AS rejected,
	   o.max_event_ts AS partition_watermark,
	   adstream.source_watermark(s.name) AS source_watermark,
	   o.updated_at AS last_commit_at,
	   w.last_error,
	   w.last_error_at
  FROM adstream.sources s
  LEFT JOIN parts pt ON pt.id = s.id
  LEFT JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic AND o.partition = pt.partition
  LEFT JOIN adstream.partition_status() ps ON ps.source_id = s.id AND ps.partition = pt.partition
  LEFT JOIN LATERAL (
	SELECT ws.pid, ws.state, ws.last_error, ws.last_error_at
	  FROM adstream.worker_status() ws
	 WHERE ws.source_id = s.id
	   AND (pt.partition IS NULL OR ws.worker_index = pt.partition % s.workers)
	 ORDER BY ws.worker_index LIMIT 1) w ON true;
COMMENT ON VIEW adstream.source_status IS
	'One row per source and partition: worker, offsets, lag, counts, watermark and last error (never credentials)';

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA adstream FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA adstream FROM PUBLIC;

GRANT SELECT ON adstream.ad_stats_minute, adstream.source_status TO adstream_reader;
GRANT SELECT ON adstream.offsets, adstream.rejected_events, adstream.source_config TO adstream_admin;
GRANT EXECUTE ON FUNCTION
	adstream.validate_event(bytea), adstream.validate_event(text),
	adstream.source_watermark(text), adstream.worker_status(), adstream.partition_status()
	TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream._is_secret(text) TO adstream_admin;
GRANT EXECUTE ON FUNCTION
	adstream.create_source(text, text, text, text, jsonb),
	adstream.drop_source(text), adstream.pause_source(text), adstream.resume_source(text)
	TO adstream_admin;
