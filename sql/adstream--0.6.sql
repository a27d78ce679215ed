/* adstream--0.6.sql -- install script: the whole schema of 0.6 */

\echo Use "CREATE EXTENSION adstream" to load this file. \quit

/*
 * A fresh CREATE EXTENSION runs this script alone.  An installation of an
 * earlier version reaches the same schema through the upgrade scripts
 * (adstream--0.1.sql, then --0.1--0.2, --0.2--0.3, --0.3--0.4, --0.4--0.5
 * and --0.5--0.6); the regression test sql/upgrade.sql compares the catalog
 * the two paths leave and fails on any difference.  So whatever changes here
 * must change in an upgrade script too, and the other way round.
 *
 * Sections:
 *   roles and schema
 *   configuration     partitioned tables, helpers shared by the API
 *   sources           sources, offsets, dead letters, the consumers' API
 *   aggregates        per-minute aggregates and their rollups
 *   dedup             the durable log of the shared-memory dedup index
 *   attribution       ad events, orders, credited orders
 *   publishing        the outbox and the sinks that publish it to Kafka
 *   maintenance       partitions ahead, retention, pg_cron jobs
 *   automatic maintenance   the jobs run by pg_cron or the launcher, and their status
 *   status            the monitoring views
 *   privileges
 *
 * Dump and restore (issue #11).  Every table's contents that a restored copy
 * needs to continue exactly are registered with pg_extension_config_dump
 * beside its definition, or say there why not: sources, offsets, dead
 * letters, rollups and the minutes pending for them, orders and credited
 * orders, sinks and the outbox, and the sequences of sources, sinks and
 * outbox.  The partitions of the time-partitioned tables (ad_stats_minute,
 * dedup_log, ad_events) are made at run time, do not belong to the
 * extension, and pg_dump saves them with their rows like any table; their
 * parents hold no rows.  partitioned_tables is not dumped.  A restored
 * source or sink keeps the origin of the installation it came from, and no
 * worker runs for it until adstream.adopt_restored() (see "Dump and
 * restore" below).
 */

-------------------------------------------------------------------------------
-- Roles and schema
-------------------------------------------------------------------------------

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
 * Time-partitioned tables and their partition grain.  Workers create the
 * partitions they need on demand (adstream.ensure_partitions); expired ones
 * are detached and dropped whole, never deleted row by row.  PostgreSQL 15
 * keeps no storage parameters on a partitioned table, so each partition
 * gets its fillfactor and storage_options when it is created.  Each table
 * adds its row below, beside its definition.
 */
CREATE TABLE adstream.partitioned_tables (
	name			text PRIMARY KEY,
	grain			interval NOT NULL,
	fillfactor		integer NOT NULL DEFAULT 100,
	storage_options	text[] NOT NULL DEFAULT '{}',
	-- retention has dropped the partitions before this (0.6)
	dropped_before	timestamptz NOT NULL DEFAULT '-infinity'
);
COMMENT ON TABLE adstream.partitioned_tables IS
	'Grain and fillfactor of the time-partitioned adstream tables';
COMMENT ON COLUMN adstream.partitioned_tables.storage_options IS
	'Storage parameters besides fillfactor given to each new partition';
-- Not dumped (no pg_extension_config_dump): its rows are the extension's
-- own, written by the install and upgrade scripts, and CREATE EXTENSION
-- writes those of the version being restored into.  Dumping them would
-- fail the restore on the primary key, or bring back an older version's
-- settings.  The partitions that exist are dumped with their own storage
-- parameters.

/*
 * Time is UTC.  Partition bounds and names, rollup and ad_stats() buckets,
 * attribution windows, the dedup horizon and retention cutoffs are all
 * computed in UTC, whatever the server's or the session's TimeZone.
 * timestamptz + interval '1 day' (like date_trunc, ::date, to_char and
 * generate_series by days) follows the TimeZone's clock, on which a day is
 * 23 or 25 hours long across a DST change: up to 0.4 that made day
 * partitions that overlapped or left an hour out, and stopped ingestion
 * (issue #11).  So each function that does such arithmetic runs with
 * timezone = UTC (a SET clause), and adstream.bucket() uses date_bin, whose
 * strides are fixed lengths.  The workers compute minutes and hours in C,
 * on the Unix epoch (include/event_time.h).
 */

/*
 * A source's (or sink's) generation tells its workers apart from those of an
 * older version of it (paused and resumed, or dropped and re-created under
 * the same id after DROP EXTENSION): the microseconds of the clock, never
 * reused.
 */
CREATE FUNCTION adstream._new_generation()
RETURNS bigint LANGUAGE sql VOLATILE
RETURN (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;

/*
 * This installation's identity, '<system identifier>/<database oid>/<extension
 * oid>'.  create_source and create_sink record it in the row's origin; a row
 * restored from a dump carries the origin of the installation it was dumped
 * from (or none, from a dump older than 0.5), and the launcher runs no worker
 * for it until adstream.adopt_restored() (see "Dump and restore").
 */
CREATE FUNCTION adstream._origin()
RETURNS text LANGUAGE C STRICT STABLE
AS 'MODULE_PATHNAME', 'adstream_origin';
COMMENT ON FUNCTION adstream._origin() IS
	'Internal: this installation''s identity (system identifier/database oid/extension oid), which a source''s or sink''s origin must equal for its workers to run';

/*
 * Wakes the launcher when the calling transaction commits, so that it starts
 * and stops workers at once, not at its next round.
 */
CREATE FUNCTION adstream._wake_launcher()
RETURNS void LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'adstream_wake_launcher';

/*
 * adstream's own locks, in a lock space that pg_advisory_lock() cannot
 * reach: no role that can merely connect can take the lock the batches wait
 * for, and stall ingestion.
 */
CREATE FUNCTION adstream._lock(p_name text, p_key integer, p_exclusive boolean)
RETURNS void LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_lock';
COMMENT ON FUNCTION adstream._lock(text, integer, boolean) IS
	'Internal: takes one of adstream''s own transaction-level locks (shared or exclusive), waiting';

/* librdkafka's verdict on one property (NULL when it accepts it). */
CREATE FUNCTION adstream._kafka_property_error(key text, value text)
RETURNS text LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'adstream_kafka_property_error';

/*
 * librdkafka properties that run programs, load code or read files on the
 * server.  create_source and create_sink run with the extension owner's
 * rights, so only a superuser may set them; an adstream_admin may not.
 */
CREATE FUNCTION adstream._is_privileged_property(p_key text)
RETURNS boolean LANGUAGE sql IMMUTABLE
RETURN p_key IN ('plugin.library.paths', 'sasl.kerberos.kinit.cmd', 'sasl.kerberos.keytab',
				 'ssl.engine.location', 'ssl.engine.id', 'ssl_engine_callback_data',
				 'opaque', 'interceptors', 'ssl.keystore.location')
	OR p_key LIKE '%.location';

/* Property names whose values are never shown. */
CREATE FUNCTION adstream._is_secret(p_key text)
RETURNS boolean LANGUAGE sql IMMUTABLE
RETURN p_key ~* '(password|secret|sasl\.jaas|sasl\.oauthbearer|ssl\.key\.|ssl_key|token|credential)';

-------------------------------------------------------------------------------
-- Sources, offsets and dead letters
-------------------------------------------------------------------------------

/* The kinds of source this version consumes. */
CREATE FUNCTION adstream._source_kinds()
RETURNS text[] LANGUAGE sql IMMUTABLE
RETURN ARRAY['ad_events', 'orders'];

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
	-- ad events before this are too_late: the source's dedup state of those
	-- hours is given up (adstream.expire_dedup_state); never moves back
	dedup_expired_before timestamptz NOT NULL DEFAULT '-infinity',
	-- the installation that created or adopted it (adstream._origin()); its
	-- workers run only there.  No default: a row that did not come through
	-- create_source (restored from a dump older than 0.5) has none, and waits.
	origin			text,
	-- how many partitions the topic has, as its workers last saw it (NULL
	-- until one has started): dedup expiry holds the source until it sees
	-- each of them through a stored offset or a running worker
	partition_count	integer CHECK (partition_count > 0),
	-- how a message reads: format, field mapping, ts unit, schema registry
	-- (adstream._input_format(); docs/formats.md); '{}' is JSON as in the README
	input_format	jsonb NOT NULL DEFAULT '{}',
	CHECK (kind IN ('ad_events', 'orders')),
	CHECK (start_policy IN ('earliest', 'latest')),
	CHECK (workers BETWEEN 1 AND 64)
);
COMMENT ON TABLE adstream.sources IS
	'Kafka sources consumed by adstream workers; readable by superusers only because kafka_options may hold credentials (see adstream.source_config)';
SELECT pg_catalog.pg_extension_config_dump('adstream.sources', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.sources_id_seq', '');

/*
 * Committed consumer position per partition.  Written in the same
 * transaction as the batch's aggregates, dedup ids and dead letters: this
 * row *is* the exactly-once boundary.  Broker-side group offsets are only a
 * courtesy copy for lag monitors and are never read back.  Updated by every
 * batch: vacuumed by row count, without cost delay.
 */
CREATE TABLE adstream.offsets (
	source			text NOT NULL REFERENCES adstream.sources (name) ON UPDATE CASCADE ON DELETE CASCADE,
	topic			text NOT NULL,
	partition		integer NOT NULL,
	next_offset		bigint NOT NULL,
	max_event_ts	timestamptz,	-- event-time watermark of this partition
	accepted		bigint NOT NULL DEFAULT 0,
	duplicates		bigint NOT NULL DEFAULT 0,
	rejected		bigint NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, topic, partition)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
		autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE adstream.offsets IS
	'Next Kafka offset to consume per source partition, committed atomically with results';
SELECT pg_catalog.pg_extension_config_dump('adstream.offsets', '');

/*
 * Dead letters, kept for adstream.rejected_retention
 * (adstream.expire_rejected_events).  Dumped: they are results, and their
 * messages are behind the restored offsets, never read again.
 */
CREATE TABLE adstream.rejected_events (
	source			text NOT NULL,
	topic			text NOT NULL,
	partition		integer NOT NULL,
	"offset"		bigint NOT NULL,
	reason			text NOT NULL,
	detail			text,
	payload			bytea,			-- the message value's first adstream.dead_letter_payload_bytes (8 KiB)
	payload_bytes	integer NOT NULL,	-- full size of the message value
	received_at		timestamptz NOT NULL DEFAULT now(),
	-- set by adstream.redrive_dead_letters() to the source's generation: its
	-- consumers of that generation or later judge it again
	redrive_generation bigint,
	PRIMARY KEY (source, topic, partition, "offset")
) WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX ON adstream.rejected_events (received_at);
CREATE INDEX rejected_events_redrive ON adstream.rejected_events (source, topic, partition, "offset")
	WHERE redrive_generation IS NOT NULL;
COMMENT ON TABLE adstream.rejected_events IS
	'Dead letters: every message that failed validation, with its reason';
SELECT pg_catalog.pg_extension_config_dump('adstream.rejected_events', '');

/*
 * Every stretch of a partition that adstream could not read, recorded in the
 * transaction that moves the partition's offset past it: messages the
 * broker trimmed before they were read (retention shorter than the lag), or
 * a stored offset beyond the partition's end (the topic was deleted and
 * created again).  The events are gone; nothing is lost without this record.
 */
CREATE TABLE adstream.offset_gaps (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source			text NOT NULL,
	topic			text NOT NULL,
	partition		integer NOT NULL,
	from_offset		bigint NOT NULL,	-- the first offset not read
	to_offset		bigint NOT NULL,	-- where reading resumed
	reason			text NOT NULL,
	detected_at		timestamptz NOT NULL DEFAULT now(),
	CHECK (reason IN ('retention', 'offset_beyond_end'))
);
CREATE INDEX ON adstream.offset_gaps (source, topic, partition);
COMMENT ON TABLE adstream.offset_gaps IS
	'Stretches of partitions that were never read (trimmed by retention before they were read, or a stored offset beyond a re-created topic''s end), recorded with the offset move';
SELECT pg_catalog.pg_extension_config_dump('adstream.offset_gaps', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.offset_gaps_id_seq', '');

/* What the consumer workers report from shared memory. */
CREATE FUNCTION adstream.worker_status(
	OUT source_id integer, OUT worker_index integer, OUT pid integer,
	OUT state text, OUT started_at timestamptz, OUT last_commit_at timestamptz,
	OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer,
	OUT connected boolean, OUT connected_since timestamptz, OUT errors_total bigint,
	OUT topic_partitions integer, OUT positions_at timestamptz)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 8		-- not 1000: source_status would cost enough to be JIT-compiled (a second per query)
AS 'MODULE_PATHNAME', 'adstream_worker_status';
COMMENT ON FUNCTION adstream.worker_status() IS
	'One row per running or restarting consumer worker, from shared memory: state, current error (cleared on recovery), restarts, whether the broker answers and since when, errors since the slot was assigned, the topic''s partition count and when the broker''s ends were last known current';

CREATE FUNCTION adstream.partition_status(
	OUT source_id integer, OUT partition integer, OUT pid integer,
	OUT high_watermark bigint, OUT read_position bigint)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_partition_status';
COMMENT ON FUNCTION adstream.partition_status() IS
	'Per assigned partition: broker high watermark and in-memory consume position';

CREATE FUNCTION adstream.partition_lag(
	OUT source_id integer, OUT partition integer, OUT pid integer,
	OUT high_watermark bigint, OUT read_position bigint,
	OUT last_high_watermark bigint, OUT positions_at timestamptz, OUT stale boolean,
	OUT pending_since timestamptz)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 64		-- as worker_status
AS 'MODULE_PATHNAME', 'adstream_partition_status';
COMMENT ON FUNCTION adstream.partition_lag() IS
	'partition_status() and what source_status''s lag needs: the last high watermark seen however old, since when it is known current, whether it is stale (reported more than 5 s ago, or the broker not answering), and since when the oldest message not committed has waited at most (NULL: caught up, or not known yet)';

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

/*
 * The consumer's parser under a source's input-format options, on one value:
 * try a field mapping or a ts_format before creating the source with it.
 * JSON only (an Avro value needs its schema from the registry).
 */
CREATE FUNCTION adstream._validate_event_with(payload bytea, keys text[], paths text[], ts_format text,
	OUT reason text, OUT detail text, OUT event_id uuid, OUT type text,
	OUT ad_id bigint, OUT campaign_id bigint, OUT user_id bigint,
	OUT store_id bigint, OUT ts timestamptz)
RETURNS record LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'adstream_validate_event_with';
COMMENT ON FUNCTION adstream._validate_event_with(bytea, text[], text[], text) IS
	'Internal: the event parser under a field mapping and ts_format, for validate_event(payload, options)';

CREATE FUNCTION adstream.validate_event(payload bytea, options jsonb,
	OUT reason text, OUT detail text, OUT event_id uuid, OUT type text,
	OUT ad_id bigint, OUT campaign_id bigint, OUT user_id bigint,
	OUT store_id bigint, OUT ts timestamptz)
RETURNS record
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_format	jsonb := adstream._input_format('ad_events', coalesce(options, '{}'));
BEGIN
	IF v_format->>'format' = 'avro' THEN
		RAISE EXCEPTION 'validate_event checks JSON values only'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'An Avro value needs its writer schema from the schema registry; create the source and watch adstream.rejected_events.';
	END IF;
	SELECT * INTO reason, detail, event_id, type, ad_id, campaign_id, user_id, store_id, ts
	  FROM adstream._validate_event_with(payload,
			ARRAY(SELECT e.key FROM jsonb_each_text(coalesce(v_format->'fields', '{}')) e ORDER BY e.key),
			ARRAY(SELECT e.value FROM jsonb_each_text(coalesce(v_format->'fields', '{}')) e ORDER BY e.key),
			v_format->>'ts_format');
END
$$;
COMMENT ON FUNCTION adstream.validate_event(bytea, jsonb) IS
	'Runs the consumer''s parser on one message value under a source''s input-format options (fields, ts_format; JSON only)';

CREATE FUNCTION adstream.validate_event(payload text, options jsonb,
	OUT reason text, OUT detail text, OUT event_id uuid, OUT type text,
	OUT ad_id bigint, OUT campaign_id bigint, OUT user_id bigint,
	OUT store_id bigint, OUT ts timestamptz)
RETURNS record LANGUAGE sql STABLE PARALLEL SAFE
RETURN adstream.validate_event(pg_catalog.convert_to(payload, 'UTF8'), options);
COMMENT ON FUNCTION adstream.validate_event(text, jsonb) IS
	'Text form of adstream.validate_event(bytea, jsonb)';

-- The source management API runs as the extension owner (SECURITY DEFINER),
-- so that an adstream_admin manages sources without reading credentials.

/* The broker addresses of a bootstrap list, for telling whether two lists name one cluster. */
CREATE FUNCTION adstream._broker_set(p_brokers text)
RETURNS text[] LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(SELECT DISTINCT lower(regexp_replace(btrim(b), '^[A-Za-z_]+://', ''))
			   FROM unnest(string_to_array(p_brokers, ',')) AS b WHERE btrim(b) <> '');
COMMENT ON FUNCTION adstream._broker_set(text) IS
	'Internal: the broker addresses of a bootstrap list, lower-case and without a protocol prefix';

/*
 * What create_source, alter_source and rename_source check about a name:
 * 1 to 63 characters, the same for sources and sinks (p_what).
 */
CREATE FUNCTION adstream._check_name(p_what text, p_name text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid % name %', p_what, coalesce('"' || p_name || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('A %s name is 1 to 63 characters from A-Z, a-z, 0-9, "_", "." and "-", not starting with "." or "-".', p_what),
				  HINT = format('Choose a name such as ''%s''.', CASE p_what WHEN 'sink' THEN 'region_b' ELSE 'ads_eu' END);
	END IF;
END
$$;

/*
 * The hint for librdkafka's refusal of a configuration: the properties its
 * message names, or what to do about Kerberos, which SASL means unless
 * sasl.mechanisms says otherwise.
 */
CREATE FUNCTION adstream._kafka_error_hint(p_error text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN p_error ~* 'kerberos|kinit|GSSAPI' THEN
		'With security.protocol SASL_PLAINTEXT or SASL_SSL, librdkafka uses "sasl.mechanisms" GSSAPI (Kerberos) unless told otherwise: set "sasl.mechanisms" to PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER with its credentials, or set up Kerberos for the server''s user.'
	ELSE coalesce(
		(SELECT format('Check librdkafka %s %s (see librdkafka''s CONFIGURATION.md).',
					   CASE WHEN count(*) = 1 THEN 'property' ELSE 'properties' END,
					   string_agg(format('"%s"', m.prop), ', ' ORDER BY m.n))
		   FROM (SELECT x.found[1] AS prop, min(x.n) AS n
				   FROM regexp_matches(p_error, '([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)', 'g') WITH ORDINALITY AS x(found, n)
				  GROUP BY 1) m
		 HAVING count(*) > 0),
		'Options other than adstream''s own are passed to librdkafka; see its CONFIGURATION.md.')
	END;

/*
 * Builds the client a worker would run with (a consumer for a source, the
 * transactional producer for a sink) and creates it, in this backend, so
 * that a configuration librdkafka refuses only in rd_kafka_new (a SASL
 * mechanism without credentials, Kerberos that is not set up, a CA file it
 * cannot read) fails the SQL call instead of a worker's every start.  With
 * p_timeout_ms > 0 it also asks the brokers for the topic's partition count
 * and the cluster's id (NULL when they do not answer in time).
 */
CREATE FUNCTION adstream._kafka_check(p_role text, p_brokers text, p_keys text[], p_values text[],
	p_topic text DEFAULT NULL, p_timeout_ms integer DEFAULT 0,
	OUT error text, OUT partitions integer, OUT cluster_id text)
RETURNS record LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'adstream_kafka_check';
COMMENT ON FUNCTION adstream._kafka_check(text, text, text[], text[], text, integer) IS
	'Internal: builds and destroys the librdkafka client a worker would run with; its error, and optionally the topic''s partition count and the cluster id';

/*
 * Refuses a configuration librdkafka refuses: the whole of it, as the
 * worker would build it.  Secret values never reach the message.  Returns
 * what _kafka_check found out (partitions, cluster id).
 */
CREATE FUNCTION adstream._kafka_config_check(p_role text, p_brokers text, p_props jsonb,
	p_topic text DEFAULT NULL, p_timeout_ms integer DEFAULT 0,
	OUT partitions integer, OUT cluster_id text)
RETURNS record LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_check		record;
	v_err		text;
	v_key		text;
	v_val		text;
BEGIN
	SELECT * INTO v_check
	  FROM adstream._kafka_check(p_role, p_brokers,
			ARRAY(SELECT key FROM jsonb_each_text(p_props) ORDER BY key),
			ARRAY(SELECT value FROM jsonb_each_text(p_props) ORDER BY key),
			p_topic, p_timeout_ms);
	IF v_check.error IS NOT NULL THEN
		v_err := v_check.error;
		FOR v_key, v_val IN SELECT * FROM jsonb_each_text(p_props) LOOP
			IF adstream._is_secret(v_key) AND v_val <> '' THEN
				v_err := replace(v_err, v_val, '***');
			END IF;
		END LOOP;
		RAISE EXCEPTION 'librdkafka refuses the configuration of this %', p_role
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = v_err,
				  HINT = adstream._kafka_error_hint(v_err);
	END IF;
	partitions := v_check.partitions;
	cluster_id := v_check.cluster_id;
END
$$;

/*
 * Everything create_source and alter_source check about a source, in one
 * place: its name, kind, brokers, topic and options as they would be stored
 * (p_id: the source being altered, NULL for a new one), the whole
 * librdkafka configuration (built into a client), and the number of
 * workers: at most adstream.max_workers and, when the brokers say how many
 * partitions the topic has, at most that.  p_stored: the librdkafka
 * properties stored now, which an alter may keep even where only a superuser
 * may set them.  Returns the columns to store.
 */
CREATE FUNCTION adstream._check_source(p_id integer, p_name text, p_kind text, p_brokers text,
	p_topic text, p_options jsonb, p_stored jsonb DEFAULT '{}',
	OUT start_policy text, OUT workers integer, OUT group_id text, OUT kafka_options jsonb,
	OUT input_format jsonb, OUT partitions integer[])
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_key		text;
	v_val		jsonb;
	v_text		text;
	v_err		text;
	v_max		integer := coalesce(current_setting('adstream.max_workers', true), '16')::integer;
	v_found		record;
	v_other		record;
	v_cluster	text;
BEGIN
	PERFORM adstream._check_name('source', p_name);
	start_policy := 'earliest';
	workers := 1;
	group_id := 'adstream.' || current_database() || '.' || p_name;
	kafka_options := '{}';
	IF p_kind IS NULL OR NOT p_kind = ANY (adstream._source_kinds()) THEN
		RAISE EXCEPTION 'unsupported source kind %', coalesce(quote_literal(p_kind), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Supported kinds: %s.', array_to_string(adstream._source_kinds(), ', '));
	END IF;
	IF p_brokers IS NULL OR btrim(p_brokers) = '' THEN
		RAISE EXCEPTION 'brokers must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give a bootstrap list such as ''kafka1:9092,kafka2:9092''.';
	END IF;
	IF p_topic IS NULL OR p_topic !~ '^[A-Za-z0-9._-]{1,249}$' OR p_topic IN ('.', '..') THEN
		RAISE EXCEPTION 'invalid Kafka topic name %', coalesce(quote_literal(p_topic), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kafka topic names are 1 to 249 characters from A-Z, a-z, 0-9, ".", "_" and "-".';
	END IF;
	IF p_options IS NULL OR jsonb_typeof(p_options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass for example ''{"workers": 2, "start": "latest", "security.protocol": "SASL_SSL"}''.';
	END IF;
	FOR v_key, v_val IN SELECT * FROM jsonb_each(p_options) LOOP
		-- the input format's options: adstream._input_format() below
		CONTINUE WHEN v_key = ANY (adstream._input_format_keys());
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
			start_policy := v_text;
		WHEN 'workers' THEN
			IF v_text !~ '^[0-9]{1,2}$' OR v_text::integer NOT BETWEEN 1 AND 64 THEN
				RAISE EXCEPTION 'invalid value for option "workers": %', quote_literal(v_text)
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use a whole number from 1 to 64; each worker takes the partitions p with p % workers = its index.';
			END IF;
			workers := v_text::integer;
		WHEN 'group_id' THEN
			IF btrim(v_text) = '' THEN
				RAISE EXCEPTION 'option "group_id" must not be empty'
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			group_id := v_text;
		WHEN 'partitions' THEN
			-- this node's share of the topic; other servers consume the rest
			partitions := adstream._parse_partitions(v_text);
		ELSE
			IF v_key IN ('bootstrap.servers', 'metadata.broker.list', 'group.id',
						 'enable.auto.commit', 'enable.auto.offset.store',
						 'isolation.level', 'auto.offset.reset', 'enable.partition.eof') THEN
				RAISE EXCEPTION 'librdkafka property "%" is managed by adstream', v_key
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use the brokers argument, or the options "group_id" and "start".';
			END IF;
			IF adstream._is_privileged_property(v_key) AND (p_stored->>v_key) IS DISTINCT FROM v_text
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
						  HINT = 'Options other than "start", "workers", "group_id", "partitions" and the input format''s (docs/formats.md) are passed to librdkafka; see its CONFIGURATION.md.';
			END IF;
			kafka_options := kafka_options || jsonb_build_object(v_key, v_text);
		END CASE;
	END LOOP;
	input_format := adstream._input_format(p_kind, p_options);

	-- Two sources of a kind on one topic of one cluster would count every
	-- event twice.  The same cluster: a broker address in common, or the same
	-- cluster id.  The brokers are asked (2 s at most each) only when another
	-- source has the topic; its workers check it again when they connect
	-- (consumer.c, verify_cluster), for brokers that did not answer here.
	FOR v_other IN SELECT s.name, s.brokers, s.kafka_options, s.cluster_id FROM adstream.sources s
	 WHERE s.kind = p_kind AND s.topic = p_topic AND s.id IS DISTINCT FROM p_id ORDER BY s.id LOOP
		IF NOT adstream._broker_set(v_other.brokers) && adstream._broker_set(p_brokers) THEN
			v_cluster := coalesce(v_cluster,
				(adstream._kafka_config_check('source', p_brokers, kafka_options, NULL, 2000)).cluster_id);
			CONTINUE WHEN v_cluster IS NULL;
			CONTINUE WHEN v_cluster IS DISTINCT FROM coalesce(v_other.cluster_id,
				(adstream._kafka_config_check('source', v_other.brokers, v_other.kafka_options, NULL, 2000)).cluster_id);
		END IF;
		RAISE EXCEPTION 'source "%" already consumes topic "%" of this Kafka cluster', v_other.name, p_topic
			USING ERRCODE = 'duplicate_object',
				  DETAIL = 'A second source on the same partitions would count every event again.'
						   || CASE WHEN v_cluster IS NOT NULL THEN format(' Both broker lists answer as cluster %s.', v_cluster) ELSE '' END,
				  HINT = 'Use the existing source (more workers: adstream.alter_source(name, ''{"workers": n}'')), or drop it first.';
	END LOOP;

	-- Each worker takes a slot of adstream.max_workers (and of
	-- max_worker_processes); more workers than partitions would be idle.
	IF workers > v_max THEN
		RAISE EXCEPTION 'a source cannot have more workers (%) than adstream.max_workers (%)', workers, v_max
			USING ERRCODE = 'configuration_limit_exceeded',
				  DETAIL = 'Each worker takes one of the adstream.max_workers slots, which the consumers of every source and the publishers of every sink share.',
				  HINT = 'Use fewer workers, or raise adstream.max_workers (and max_worker_processes) and restart the server.';
	END IF;
	-- The whole configuration, as a worker builds it.  With more than one
	-- worker, ask the brokers (1 s at most) how many partitions there are.
	SELECT * INTO v_found FROM adstream._kafka_config_check('source', p_brokers, kafka_options, p_topic,
															 CASE WHEN workers > 1 THEN 1000 ELSE 0 END);
	IF v_found.partitions IS NOT NULL AND workers > v_found.partitions THEN
		RAISE EXCEPTION 'topic "%" has % partition(s), fewer than the % workers asked for', p_topic, v_found.partitions, workers
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Worker i reads the partitions p with p % workers = i; the workers without a partition would be idle.',
				  HINT = format('Use at most %s workers (add partitions to the topic first for more).', v_found.partitions);
	END IF;
END
$$;

/*
 * Input formats (docs/formats.md): the options of create_source that say
 * how a message reads, as stored in adstream.sources.input_format.
 */
CREATE FUNCTION adstream._input_format_keys()
RETURNS text[] LANGUAGE sql IMMUTABLE
RETURN ARRAY['format', 'fields', 'ts_format', 'schema_registry', 'schema_registry_timeout_ms'];
COMMENT ON FUNCTION adstream._input_format_keys() IS
	'Internal: the options of create_source that define the input format';

/* The workers' compiler of a field mapping, as a check: errors say what is wrong. */
CREATE FUNCTION adstream._check_field_mapping(kind text, keys text[], paths text[], ts_format text)
RETURNS void LANGUAGE C
AS 'MODULE_PATHNAME', 'adstream_check_field_mapping';
COMMENT ON FUNCTION adstream._check_field_mapping(text, text[], text[], text) IS
	'Internal: compiles a field mapping and ts_format as the workers do, raising an error for a bad one';

/*
 * The input format of a source of this kind from create_source's options:
 * checked, and reduced to the keys that differ from the defaults.
 */
CREATE FUNCTION adstream._input_format(p_kind text, p_options jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_format	text := 'json';
	v_result	jsonb := '{}';
	v_val		jsonb;
	v_text		text;
BEGIN
	v_val := p_options->'format';
	IF v_val IS NOT NULL THEN
		IF jsonb_typeof(v_val) <> 'string' OR v_val #>> '{}' NOT IN ('json', 'avro') THEN
			RAISE EXCEPTION 'invalid value for option "format": %', v_val
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use "json" (the default) or "avro" (the Confluent wire format, with "schema_registry").';
		END IF;
		v_format := v_val #>> '{}';
	END IF;
	IF v_format = 'avro' THEN
		IF p_kind = 'orders' THEN
			RAISE EXCEPTION 'format "avro" is not supported for sources of kind "orders"'
				USING ERRCODE = 'feature_not_supported',
					  HINT = 'Orders are read as JSON; a field mapping ("fields") and "ts_format" apply to them.';
		END IF;
		v_val := p_options->'schema_registry';
		IF v_val IS NULL OR jsonb_typeof(v_val) <> 'string' THEN
			RAISE EXCEPTION 'format "avro" needs option "schema_registry"'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Give the schema registry''s base URL, such as "http://registry:8081"; schemas are fetched from {url}/schemas/ids/{id}.';
		END IF;
		v_text := v_val #>> '{}';
		IF v_text !~ '^https?://[!-~]+$' OR v_text ~ '[?#]' OR length(v_text) > 1024 THEN
			RAISE EXCEPTION 'invalid value for option "schema_registry": %', v_val
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use an http:// or https:// URL without spaces, query or fragment, such as "http://registry:8081".';
		END IF;
		v_result := jsonb_build_object('format', 'avro', 'schema_registry', v_text);
		v_val := p_options->'schema_registry_timeout_ms';
		IF v_val IS NOT NULL THEN
			IF jsonb_typeof(v_val) <> 'number' OR v_val::text !~ '^[0-9]{3,5}$'
			   OR (v_val::text)::integer NOT BETWEEN 100 AND 60000 THEN
				RAISE EXCEPTION 'invalid value for option "schema_registry_timeout_ms": %', v_val
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use a whole number of milliseconds from 100 to 60000 (default 5000).';
			END IF;
			v_result := v_result || jsonb_build_object('schema_registry_timeout_ms', (v_val::text)::integer);
		END IF;
	ELSIF p_options ? 'schema_registry' OR p_options ? 'schema_registry_timeout_ms' THEN
		RAISE EXCEPTION 'option "schema_registry" applies only to format "avro"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Add "format": "avro", or leave the schema registry out.';
	END IF;

	v_val := p_options->'ts_format';
	IF v_val IS NOT NULL AND jsonb_typeof(v_val) <> 'string' THEN
		RAISE EXCEPTION 'invalid value for option "ts_format": %', v_val
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use "epoch_ms" (the default), "epoch_s", "epoch_us" or "rfc3339".';
	END IF;
	v_val := p_options->'fields';
	IF v_val IS NOT NULL AND (jsonb_typeof(v_val) <> 'object'
		OR EXISTS (SELECT 1 FROM jsonb_each(v_val) e WHERE jsonb_typeof(e.value) <> 'string')) THEN
		RAISE EXCEPTION 'option "fields" must be a JSON object of strings'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Map contract fields to the producer''s paths, such as {"event_id": "eventId", "ad_id": "payload.ad.id"}.';
	END IF;
	PERFORM adstream._check_field_mapping(p_kind,
		ARRAY(SELECT e.key FROM jsonb_each_text(coalesce(v_val, '{}')) e ORDER BY e.key),
		ARRAY(SELECT e.value FROM jsonb_each_text(coalesce(v_val, '{}')) e ORDER BY e.key),
		p_options->>'ts_format');
	-- only what differs from the defaults
	IF p_options->>'ts_format' IS DISTINCT FROM 'epoch_ms' AND p_options ? 'ts_format' THEN
		v_result := v_result || jsonb_build_object('ts_format', p_options->>'ts_format');
	END IF;
	IF EXISTS (SELECT 1 FROM jsonb_each_text(coalesce(v_val, '{}')) e WHERE e.key <> e.value) THEN
		v_result := v_result || jsonb_build_object('fields',
			(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each_text(v_val) e WHERE e.key <> e.value));
	END IF;
	RETURN v_result;
END
$$;
COMMENT ON FUNCTION adstream._input_format(text, jsonb) IS
	'Internal: checks the input-format options of create_source and returns them as stored in adstream.sources.input_format';

CREATE FUNCTION adstream.create_source(
	name text,
	brokers text,
	topic text,
	kind text DEFAULT 'ad_events',
	options jsonb DEFAULT '{}')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v			record;
	v_id		integer;
BEGIN
	PERFORM adstream._check_name('source', create_source.name);
	IF EXISTS (SELECT 1 FROM adstream.sources s WHERE s.name = create_source.name) THEN
		RAISE EXCEPTION 'source "%" already exists', create_source.name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Change it with adstream.alter_source(), drop it first with adstream.drop_source(), or choose another name.';
	END IF;
	v := adstream._check_source(NULL, create_source.name, create_source.kind, create_source.brokers,
								create_source.topic, create_source.options);

	IF current_setting('adstream.database', true) IS DISTINCT FROM current_database() THEN
		RAISE WARNING 'adstream workers run in database "%", not in "%"',
			coalesce(current_setting('adstream.database', true), 'postgres'), current_database()
			USING HINT = 'This source is consumed only if adstream.database names this database and the server is restarted.';
	END IF;

	-- the node's name, which its commits to Kafka carry, is fixed from now on
	PERFORM adstream._ensure_node();
	INSERT INTO adstream.sources (name, kind, brokers, topic, start_policy, workers, group_id, kafka_options,
								  origin, input_format, partitions)
	VALUES (create_source.name, create_source.kind, create_source.brokers, create_source.topic,
			v.start_policy, v.workers, v.group_id, v.kafka_options, adstream._origin(), v.input_format,
			v.partitions)
	RETURNING id INTO v_id;
	PERFORM adstream._wake_launcher();
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION adstream.create_source(text, text, text, text, jsonb) IS
	'Registers a Kafka topic to consume and returns the new source''s id; workers start within about a second';

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

/*
 * Re-driving dead letters (docs/formats.md): after a fix to a source's
 * definition or to a setting, mark its dead letters; its consumers read
 * them back within about a second, judge them again, count those now valid
 * once (deduplicated by event id like any event) and keep the rest, with
 * their new reason.  A dead letter is marked with the source's generation,
 * and only workers of that generation or a later one take it: a definition
 * changed just before the call (which restarts the workers) is the one that
 * judges it.  Only dead letters kept whole can be re-driven
 * (adstream.dead_letter_payload_bytes); the others are counted as truncated.
 */
CREATE FUNCTION adstream.redrive_dead_letters(
	source text,
	reasons text[] DEFAULT NULL,
	received_after timestamptz DEFAULT NULL,
	received_before timestamptz DEFAULT NULL,
	OUT requested bigint,
	OUT truncated bigint)
RETURNS record
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_topic		text;
	v_generation bigint;
BEGIN
	PERFORM adstream._source_must_exist(redrive_dead_letters.source);
	SELECT s.topic, s.generation INTO v_topic, v_generation
	  FROM adstream.sources s WHERE s.name = redrive_dead_letters.source;
	WITH marked AS (
		UPDATE adstream.rejected_events r SET redrive_generation = v_generation
		 WHERE r.source = redrive_dead_letters.source AND r.topic = v_topic
		   AND (reasons IS NULL OR r.reason = ANY (reasons))
		   AND (received_after IS NULL OR r.received_at >= received_after)
		   AND (received_before IS NULL OR r.received_at < received_before)
		   AND r.payload_bytes = length(r.payload)
		   AND r.redrive_generation IS NULL
		RETURNING 1)
	SELECT count(*) INTO requested FROM marked;
	SELECT count(*) INTO truncated FROM adstream.rejected_events r
	 WHERE r.source = redrive_dead_letters.source AND r.topic = v_topic
	   AND (reasons IS NULL OR r.reason = ANY (reasons))
	   AND (received_after IS NULL OR r.received_at >= received_after)
	   AND (received_before IS NULL OR r.received_at < received_before)
	   AND r.payload_bytes > coalesce(length(r.payload), 0);
END
$$;
COMMENT ON FUNCTION adstream.redrive_dead_letters(text, text[], timestamptz, timestamptz) IS
	'Marks a source''s dead letters (optionally of some reasons or a time range) to be judged again by its consumers; those now valid are counted once';

/*
 * With forget_counts, also what the source counted: its rows of
 * ad_stats_minute go in the same transaction, their minutes are queued for
 * the rollups and, while sinks exist, for publishing, so that the rollups
 * and Pinot are corrected.  First the lock that every batch's upsert
 * conflicts with: batches in flight (of any source) commit before it is
 * granted, later ones wait for this transaction.  Then the source goes, and
 * its offsets with it (ON DELETE CASCADE), so that a batch of it that waited
 * fails on its offsets; the delete that follows, in a fresh snapshot, sees
 * every row the source counted.  (Taking row locks instead would deadlock
 * with a batch that holds its minutes and waits for its offsets.)  Minutes
 * already dropped by adstream.minute_retention are gone: their rollups keep
 * what it counted.
 */
CREATE FUNCTION adstream.drop_source(name text, forget_counts boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id		integer;
BEGIN
	PERFORM adstream._source_must_exist(name);
	-- No batch in flight (each holds this lock shared): one that has taken
	-- up events set aside holds their rows, which go with the source, and
	-- would wait for the offsets deleted below (a deadlock).
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);
	IF forget_counts THEN
		LOCK TABLE adstream.ad_stats_minute IN SHARE ROW EXCLUSIVE MODE;
	END IF;
	-- Offsets go with the source (ON DELETE CASCADE); aggregates and dead
	-- letters stay, they are results, unless asked to forget the counts.
	DELETE FROM adstream.sources s WHERE s.name = drop_source.name RETURNING s.id INTO v_id;
	IF forget_counts THEN
		WITH gone AS (
			DELETE FROM adstream.ad_stats_minute m WHERE m.source_id = v_id
			RETURNING m.ad_id, m.window_start),
		pending AS (
			INSERT INTO adstream.rollup_pending AS p (window_start, source_id)
			SELECT DISTINCT g.window_start, v_id FROM gone g ORDER BY 1
			ON CONFLICT (window_start, source_id, worker) DO UPDATE SET window_start = excluded.window_start)
		INSERT INTO adstream.outbox (kind, ad_id, window_start)
		SELECT 'ad_stats', g.ad_id, g.window_start FROM gone g
		 WHERE adstream._publishing()
		 ORDER BY 2, 3;		-- (ad, minute) order, like the batches
	END IF;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.drop_source(text, boolean) IS
	'Stops and forgets a source and its offsets; its aggregates and dead letters are kept, unless forget_counts removes what it counted from ad_stats_minute, the rollups and the sinks';

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

/*
 * Restarts a source's workers from the stored offsets: a paused source
 * resumes; a running one starts over, which takes up again a partition its
 * worker stopped because another node consumed it (docs/deployment.md), once
 * that is fixed.
 */
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
	 WHERE s.name = resume_source.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.resume_source(text) IS
	'Restarts a source''s workers from the stored offsets: a paused source resumes, a running one starts over';

/*
 * Changes a live source without forgetting anything (issue #14): its
 * offsets, dedup state, counts and dead letters stay, because they belong to
 * the source's id and name, which do not change.  options is a change:
 * "brokers", "workers", "start", "group_id" and librdkafka properties; a
 * JSON null takes one back to its default (a librdkafka property: removed).
 * The result is checked exactly as create_source checks a new source
 * (_check_source).  The topic and kind cannot change: the offsets are
 * positions in that topic.  Nor can the cluster: a new broker list must
 * have an address in common with the old one, or the brokers must say they
 * are the same cluster (its id), since offsets mean nothing in another.
 * A new generation makes the launcher stop the running workers and start
 * the new ones once every old one has exited (docs/architecture.md, "Changing
 * a source").  Nothing changes, and nothing restarts, when nothing differs.
 * Returns whether something changed.
 */
CREATE FUNCTION adstream.alter_source(name text, options jsonb)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s			adstream.sources;
	v			record;
	v_brokers	text;
	v_merged	jsonb;
	v_key		text;
	v_old_id	text;
	v_new_id	text;
BEGIN
	PERFORM adstream._source_must_exist(alter_source.name);
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the changes, for example ''{"workers": 3, "sasl.password": "..."}''; null resets an option.';
	END IF;
	FOREACH v_key IN ARRAY ARRAY['topic', 'kind', 'name'] LOOP
		IF options ? v_key THEN
			RAISE EXCEPTION 'the % of a source cannot be changed', v_key
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = CASE v_key WHEN 'name' THEN 'alter_source changes the options of a source.'
							   ELSE 'Its offsets, dedup state and counts belong to its topic and kind.' END,
					  HINT = CASE v_key WHEN 'name' THEN 'Use adstream.rename_source(name, new_name).'
							 ELSE 'Create another source for another topic or kind.' END;
		END IF;
	END LOOP;
	SELECT * INTO s FROM adstream.sources k WHERE k.name = alter_source.name FOR UPDATE;

	v_brokers := CASE WHEN options ? 'brokers' THEN options->>'brokers' ELSE s.brokers END;
	v_merged := jsonb_strip_nulls(jsonb_build_object('start', s.start_policy, 'workers', s.workers,
													 'group_id', s.group_id)
								  || s.kafka_options || s.input_format
								  || jsonb_build_object('partitions', array_to_string(s.partitions, ','))
								  || (options - 'brokers'));
	v := adstream._check_source(s.id, s.name, s.kind, v_brokers, s.topic, v_merged, s.kafka_options);
	IF v.partitions IS DISTINCT FROM s.partitions THEN
		RAISE EXCEPTION 'the partitions of a source cannot be changed by alter_source'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Another node may consume the partitions this one would take, or need those it would give up, with their offsets and dedup state.',
				  HINT = 'Keep "partitions" as it is (docs/deployment.md describes the topologies).';
	END IF;

	-- Offsets are positions in this cluster's topic.  The new brokers must
	-- answer as the source's cluster (recorded by its workers, or asked of the
	-- old brokers); when they do not answer, a broker address in common
	-- stands for it, and the workers check the cluster id when they connect.
	IF v_brokers IS DISTINCT FROM s.brokers THEN
		v_new_id := (adstream._kafka_config_check('source', v_brokers, v.kafka_options, NULL, 2000)).cluster_id;
		v_old_id := coalesce(s.cluster_id, CASE WHEN v_new_id IS NOT NULL THEN
			(adstream._kafka_config_check('source', s.brokers, s.kafka_options, NULL, 2000)).cluster_id END);
		IF (v_old_id IS NOT NULL AND v_new_id IS NOT NULL AND v_old_id <> v_new_id)
		   OR ((v_old_id IS NULL OR v_new_id IS NULL)
			   AND NOT adstream._broker_set(v_brokers) && adstream._broker_set(s.brokers)) THEN
			RAISE EXCEPTION 'brokers "%" are not known to be the Kafka cluster source "%" consumes', v_brokers, s.name
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The stored offsets are positions in topic "%s" of its cluster; they mean nothing in another. %s',
									  s.topic,
									  CASE WHEN v_old_id IS NULL OR v_new_id IS NULL
										   THEN format('The new list has no broker address in common with "%s", and the brokers did not both say which cluster they are.', s.brokers)
										   ELSE format('The cluster ids differ (%s, %s).', v_old_id, v_new_id) END),
					  HINT = 'If the cluster only moved to new addresses, make sure the new brokers answer, so that their cluster id can be compared; for another cluster, drop the source and create one.';
		END IF;
	END IF;

	IF v_brokers = s.brokers AND v.start_policy = s.start_policy AND v.workers = s.workers
	   AND v.group_id = s.group_id AND v.kafka_options = s.kafka_options
	   AND v.input_format = s.input_format THEN
		RETURN false;
	END IF;
	UPDATE adstream.sources k
	   SET brokers = v_brokers, start_policy = v.start_policy, workers = v.workers,
		   group_id = v.group_id, kafka_options = v.kafka_options, input_format = v.input_format,
		   generation = adstream._new_generation(), updated_at = now()
	 WHERE k.id = s.id;
	PERFORM adstream._wake_launcher();
	RETURN true;
END
$$;
COMMENT ON FUNCTION adstream.alter_source(text, jsonb) IS
	'Changes the brokers, workers, start, group_id, input format or librdkafka properties of a source, checked as create_source checks them, keeping its offsets, dedup state and counts; its workers restart with the new settings within about a second';

/*
 * A new name for a source.  Its offsets follow (ON UPDATE CASCADE), and so
 * do its dead letters and offset gaps; its id, which its counts and dedup
 * state carry, does not change.  Orders keep the name of the source that
 * delivered them.  Its workers restart under the new name.
 */
CREATE FUNCTION adstream.rename_source(name text, new_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._source_must_exist(rename_source.name);
	PERFORM adstream._check_name('source', new_name);
	IF EXISTS (SELECT 1 FROM adstream.sources s WHERE s.name = new_name) THEN
		RAISE EXCEPTION 'source "%" already exists', new_name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Choose another name.';
	END IF;
	UPDATE adstream.sources s
	   SET name = new_name, generation = adstream._new_generation(), updated_at = now()
	 WHERE s.name = rename_source.name;
	UPDATE adstream.rejected_events r SET source = new_name WHERE r.source = rename_source.name;
	UPDATE adstream.offset_gaps g SET source = new_name WHERE g.source = rename_source.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.rename_source(text, text) IS
	'Renames a source; its offsets, dead letters, offset gaps, counts and dedup state stay with it';

-------------------------------------------------------------------------------
-- Aggregates: per-minute windows and their rollups
-------------------------------------------------------------------------------

/*
 * Updated in place by every batch: fillfactor 50 leaves room on each page for
 * the new row versions, so that the updates are HOT (no index entry) even
 * while concurrent batches keep the old versions from being pruned (at 70,
 * 10% of the updates were not HOT at one worker and 28% at four; at 50,
 * at most 2.4%: docs/performance.md).  A partition is vacuumed once 1% of it is
 * dead, not the default 20% of a whole day's rows.
 */
INSERT INTO adstream.partitioned_tables (name, grain, fillfactor, storage_options) VALUES
	('ad_stats_minute', interval '1 day', 50,
	 ARRAY['autovacuum_vacuum_scale_factor=0.01', 'autovacuum_vacuum_threshold=5000',
		   'autovacuum_analyze_scale_factor=0.02']);

CREATE TABLE adstream.ad_stats_minute (
	ad_id			bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	window_start	timestamptz NOT NULL,
	impressions		bigint NOT NULL DEFAULT 0,
	clicks			bigint NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	source_id		integer NOT NULL DEFAULT 0,
	stripe			smallint NOT NULL DEFAULT 0,
	PRIMARY KEY (ad_id, window_start, source_id, stripe)
) PARTITION BY RANGE (window_start);
COMMENT ON TABLE adstream.ad_stats_minute IS
	'Deduplicated impressions and clicks per ad, one-minute UTC event-time window, source and stripe; readers sum over sources and stripes';
COMMENT ON COLUMN adstream.ad_stats_minute.source_id IS
	'The source that counted them (sources.id), so that drop_source(forget_counts) can remove them; 0: counted before 0.5';
-- 0.6, issue #12: each worker of a source upserts its own rows (its index),
-- so that workers never wait for each other's row locks (docs/architecture.md,
-- "Workers in parallel").
COMMENT ON COLUMN adstream.ad_stats_minute.stripe IS
	'Which worker of the source counted them (its index; 0 before 0.6): rows of one (ad, minute) differ only by it, and are summed';
-- The parent holds no rows: pg_dump saves each day's partition with its rows
-- (not an extension member).  Its index comes with it, but attaching the
-- partition to this parent at restore builds it already: README's restore
-- list leaves the partitions' indexes out.

/*
 * Minute windows written since the last rollup refresh; workers add them in
 * the batch transaction, each worker in its own rows, the refresh consumes
 * them in its own (refresh_rollups: why a row is written again when it is
 * already pending).
 */
CREATE TABLE adstream.rollup_pending (
	window_start	timestamptz NOT NULL,
	source_id		integer NOT NULL DEFAULT 0,		-- who wrote the minute: a source's worker,
	worker			smallint NOT NULL DEFAULT -1,	-- by its index; -1: a SQL function
	PRIMARY KEY (window_start, source_id, worker)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
		autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE adstream.rollup_pending IS
	'Minute windows changed since the rollups were last refreshed';
SELECT pg_catalog.pg_extension_config_dump('adstream.rollup_pending', '');

CREATE TABLE adstream.ad_stats_hour (
	ad_id			bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	window_start	timestamptz NOT NULL,
	impressions		bigint NOT NULL,
	clicks			bigint NOT NULL,
	PRIMARY KEY (ad_id, window_start)
) WITH (fillfactor = 90);
CREATE TABLE adstream.ad_stats_6h (LIKE adstream.ad_stats_hour INCLUDING ALL) WITH (fillfactor = 90);
CREATE TABLE adstream.ad_stats_day (LIKE adstream.ad_stats_hour INCLUDING ALL) WITH (fillfactor = 90);
COMMENT ON TABLE adstream.ad_stats_hour IS 'Hourly rollup of ad_stats_minute (UTC)';
COMMENT ON TABLE adstream.ad_stats_6h IS 'Six-hour rollup of ad_stats_minute (UTC, from 00:00)';
COMMENT ON TABLE adstream.ad_stats_day IS 'Daily rollup of ad_stats_minute (UTC)';
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_hour', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_6h', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_day', '');

/*
 * Start of the bucket of a given granularity that holds ts, in UTC: date_bin
 * steps fixed lengths from the epoch, so no TimeZone enters.  No SET clause,
 * so that the planner can inline it.
 */
CREATE FUNCTION adstream.bucket(p_granularity text, p_ts timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.date_bin(CASE p_granularity WHEN 'minute' THEN interval '1 minute'
									WHEN 'hour' THEN interval '1 hour'
									WHEN '6h' THEN interval '6 hours'
									WHEN 'day' THEN interval '1 day' END,
				p_ts, timestamptz '1970-01-01 00:00:00+00');
COMMENT ON FUNCTION adstream.bucket(text, timestamptz) IS
	'Start of the UTC minute, hour, 6-hour block or day that holds a time';

/*
 * Recompute only the hours, six-hour blocks and days that contain a minute
 * written since the last refresh.  Refreshes serialise on adstream's own
 * lock.  Nothing is missed: the pending rows are read first (their versions,
 * by xmin), the rollups recomputed in later snapshots, which see every batch
 * that wrote a row read, and at the end exactly the row versions read are
 * forgotten.  A batch that writes a minute while this runs writes its row
 * again (batch.c, P_PENDING): a new version, which the final DELETE leaves
 * for the next refresh (it waits for a batch still holding the row, then
 * finds another xmin), or, if the DELETE came first, which the batch inserts
 * anew once this refresh has committed.
 */
CREATE FUNCTION adstream.refresh_rollups()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- a day is 24 hours (see "Time is UTC")
AS $$
DECLARE
	v_minutes	timestamptz[];
	v_rows		record;
	v_level		text;
	v_below		text;
	v_width		interval;
BEGIN
	PERFORM adstream._lock('adstream.rollups', 0, true);
	SELECT array_agg(p.window_start) AS starts, array_agg(p.source_id) AS sources,
		   array_agg(p.worker) AS workers, array_agg(p.xmin) AS xmins
	  INTO v_rows FROM adstream.rollup_pending p;
	IF v_rows.starts IS NULL THEN
		RETURN 0;
	END IF;
	v_minutes := ARRAY(SELECT DISTINCT t FROM unnest(v_rows.starts) t ORDER BY 1);

	-- Each level from the one below it: hours from minutes, 6h from hours, days from 6h.
	-- First the rows of an ad whose bucket has nothing left below (its
	-- minutes were forgotten by drop_source), but only while the bucket's
	-- minutes are kept: a bucket whose partition of ad_stats_minute is gone
	-- (minute_retention) keeps its rollup, it is all that remains of it.
	-- Partitions are one UTC day, so a bucket starts in one iff it lies in it.
	FOR v_level, v_below, v_width IN
		VALUES ('hour', 'ad_stats_minute', interval '1 hour'),
			   ('6h', 'ad_stats_hour', interval '6 hours'),
			   ('day', 'ad_stats_6h', interval '1 day')
	LOOP
		EXECUTE format($q$
			DELETE FROM adstream.%1$I r
			 USING (SELECT DISTINCT adstream.bucket(%3$L, t) AS b FROM unnest($1) t) b
			 WHERE r.window_start = b.b
			   AND NOT EXISTS (SELECT 1 FROM adstream.%2$I s
								WHERE s.ad_id = r.ad_id AND s.window_start >= b.b AND s.window_start < b.b + $2)
			   AND EXISTS (SELECT 1 FROM pg_inherits i
							WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
							  AND adstream._partition_upper(i.inhrelid) > b.b
							  AND adstream._partition_upper(i.inhrelid) <= b.b + interval '24 hours')$q$,
			'ad_stats_' || v_level, v_below, v_level)
		USING v_minutes, v_width;
		EXECUTE format($q$
			INSERT INTO adstream.%1$I AS r (ad_id, campaign_id, window_start, impressions, clicks)
			SELECT s.ad_id, max(s.campaign_id), adstream.bucket(%3$L, s.window_start), sum(s.impressions), sum(s.clicks)
			  FROM adstream.%2$I s
			  JOIN (SELECT DISTINCT adstream.bucket(%3$L, t) AS b FROM unnest($1) t) b
				ON s.window_start >= b.b AND s.window_start < b.b + $2
			 GROUP BY s.ad_id, 3
			ON CONFLICT (ad_id, window_start) DO UPDATE
			   SET campaign_id = excluded.campaign_id, impressions = excluded.impressions, clicks = excluded.clicks$q$,
			'ad_stats_' || v_level, v_below, v_level)
		USING v_minutes, v_width;
	END LOOP;

	-- the row versions read, and only those: one written since stays pending
	DELETE FROM adstream.rollup_pending p
	 USING unnest(v_rows.starts, v_rows.sources, v_rows.workers, v_rows.xmins) AS r(window_start, source_id, worker, x)
	 WHERE p.window_start = r.window_start AND p.source_id = r.source_id AND p.worker = r.worker
	   AND p.xmin = r.x;
	RETURN cardinality(v_minutes);
END
$$;
COMMENT ON FUNCTION adstream.refresh_rollups() IS
	'Recomputes the hour, 6h and day rollups of the windows written since the last run; returns how many minutes were pending';

/*
 * Exact totals per ad and bucket over [p_from, p_to): buckets with minutes
 * not rolled up yet are summed from ad_stats_minute, the others read from
 * their rollup.  One statement, so one snapshot.
 */
CREATE FUNCTION adstream.ad_stats(p_from timestamptz, p_to timestamptz, p_granularity text DEFAULT 'hour')
RETURNS TABLE (ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
BEGIN
	IF p_granularity IS NULL OR p_granularity NOT IN ('minute', 'hour', '6h', 'day') THEN
		RAISE EXCEPTION 'invalid granularity %', coalesce(quote_literal(p_granularity), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''minute'', ''hour'', ''6h'' or ''day''.';
	END IF;
	IF p_granularity = 'minute' THEN
		RETURN QUERY SELECT m.ad_id, max(m.campaign_id), m.window_start, sum(m.impressions)::bigint, sum(m.clicks)::bigint
		  FROM adstream.ad_stats_minute m WHERE m.window_start >= p_from AND m.window_start < p_to
		 GROUP BY m.ad_id, m.window_start;	-- over sources
		RETURN;
	END IF;
	RETURN QUERY EXECUTE format($q$
		WITH dirty AS (
			SELECT DISTINCT adstream.bucket(%1$L, p.window_start) AS b FROM adstream.rollup_pending p)
		SELECT r.ad_id, r.campaign_id, r.window_start, r.impressions, r.clicks
		  FROM adstream.%2$I r
		 WHERE r.window_start >= $1 AND r.window_start < $2
		   AND r.window_start NOT IN (SELECT b FROM dirty)
		UNION ALL
		SELECT m.ad_id, max(m.campaign_id), adstream.bucket(%1$L, m.window_start),
			   sum(m.impressions)::bigint, sum(m.clicks)::bigint
		  FROM adstream.ad_stats_minute m
		 WHERE m.window_start >= $1 AND m.window_start < $2 + interval '1 day'	-- prunes partitions
		   AND adstream.bucket(%1$L, m.window_start) IN (SELECT b FROM dirty)
		   AND adstream.bucket(%1$L, m.window_start) >= $1 AND adstream.bucket(%1$L, m.window_start) < $2
		 GROUP BY m.ad_id, 3$q$,
		p_granularity, 'ad_stats_' || p_granularity)
	USING adstream.bucket(p_granularity, p_from), p_to;
END
$$;
COMMENT ON FUNCTION adstream.ad_stats(timestamptz, timestamptz, text) IS
	'Exact impressions and clicks per ad and bucket (minute, hour, 6h, day), for the buckets that start in [bucket of from, to), including minutes not rolled up yet';

CREATE FUNCTION adstream.campaign_stats(p_from timestamptz, p_to timestamptz, p_granularity text DEFAULT 'hour')
RETURNS TABLE (campaign_id bigint, window_start timestamptz, ads bigint, impressions bigint, clicks bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.campaign_id, s.window_start, count(*), sum(s.impressions)::bigint, sum(s.clicks)::bigint
	  FROM adstream.ad_stats(p_from, p_to, p_granularity) s
	 GROUP BY s.campaign_id, s.window_start;
END;
COMMENT ON FUNCTION adstream.campaign_stats(timestamptz, timestamptz, text) IS
	'Exact impressions and clicks per campaign and bucket over [from, to)';

-------------------------------------------------------------------------------
-- Dedup: a shared-memory index of event ids (src/dedup_index.c), made
-- durable by one row of ids per batch and event-time hour
-------------------------------------------------------------------------------

/* Insert-only and dropped whole within hours: no vacuum for inserts. */
INSERT INTO adstream.partitioned_tables (name, grain, fillfactor, storage_options) VALUES
	('dedup_log', interval '1 hour', 100, ARRAY['autovacuum_vacuum_insert_threshold=-1']);

CREATE TABLE adstream.dedup_log (
	source_id	integer NOT NULL,
	hour		timestamptz NOT NULL,	-- event-time hour of the ids
	ids			bytea NOT NULL,			-- 16-byte event ids, concatenated in id order
	seg			integer NOT NULL DEFAULT 0	-- segment of the hour in the dedup index's filter (0.6)
) PARTITION BY RANGE (hour);
COMMENT ON TABLE adstream.dedup_log IS
	'Event ids claimed per source and event-time hour within adstream.dedup_horizon; the durable form of the shared-memory dedup index';
COMMENT ON COLUMN adstream.dedup_log.seg IS
	'Segment of the source''s hour these ids belong to: where the dedup index looks them up when its filter says maybe';
-- The parent holds no rows; pg_dump saves each hour's partition with its
-- rows, as it does those of ad_stats_minute and ad_events.  After a restore
-- the first worker rebuilds the index from them (a new dedup_log).

/*
 * Ad events set aside (issue #12; docs/architecture.md, point 5).  A batch
 * that finds an event's id claimed by another worker's batch still in
 * progress does not wait for that batch: it writes the event here, in its
 * own transaction, and a later batch of the event's partition judges it
 * again, once the claim has settled (a duplicate if it committed, new if
 * not).  Meanwhile the event counts neither as accepted nor as a duplicate,
 * its hour's dedup state is kept (_dedup_expiry_marks) and attribution waits
 * for it (ad_events_watermark).  Dumped: the stored offsets are past it.
 */
CREATE TABLE adstream.set_aside (
	source_id	integer NOT NULL REFERENCES adstream.sources (id) ON DELETE CASCADE,
	partition	integer NOT NULL,
	"offset"	bigint NOT NULL,
	event_id	uuid NOT NULL,
	type		text NOT NULL CHECK (type IN ('click', 'impression')),
	ad_id		bigint NOT NULL,
	campaign_id	bigint NOT NULL,
	user_id		bigint NOT NULL,
	store_id	bigint NOT NULL,
	ts			timestamptz NOT NULL,
	payload		bytea NOT NULL,			-- the message value, for a dead letter should it be one after all
	set_aside_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source_id, partition, "offset")
);
COMMENT ON TABLE adstream.set_aside IS
	'Ad events whose id another worker''s batch held uncommitted when theirs committed: judged again by the next batch of their partition';
SELECT pg_catalog.pg_extension_config_dump('adstream.set_aside', '');

CREATE FUNCTION adstream._dedup_forget(p_sources integer[], p_before timestamptz[])
RETURNS bigint LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_forget_sources';
COMMENT ON FUNCTION adstream._dedup_forget(integer[], timestamptz[]) IS
	'Internal: forgets, per listed source, the dedup index entries of the hours ending at or before its time, and every entry of a source not listed; returns how many';

CREATE FUNCTION adstream.dedup_index_status(
	OUT capacity bigint, OUT entries bigint, OUT shared_memory_bytes bigint, OUT ready boolean,
	OUT hot_entries bigint, OUT filter_entries bigint, OUT segments integer, OUT moved_to_filter bigint,
	OUT disk_lookups bigint, OUT disk_duplicates bigint, OUT disk_lookup_ms bigint, OUT rebuild_ms bigint)
RETURNS record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_index_status';
COMMENT ON FUNCTION adstream.dedup_index_status() IS
	'Capacity (adstream.dedup_index_size) and use of the shared-memory dedup index (its hot tier and its filter); ids looked up in dedup_log since the start, found there, and the time it took; ready once rebuilt after a start';

/*
 * Expire dedup state, source by source, so that no source holds another's
 * state hostage.  A source's expiry watermark is the event time of its
 * slowest partition that still has messages to read, as Flink's watermark is
 * the minimum of its inputs: a partition that is caught up does not hold it
 * back, one whose position is unknown (its worker is not running, or has not
 * reported for 5 s) holds it at its own watermark, and one assigned but not
 * read yet holds everything.  The
 * source's state is given up to the hour boundary at or before that
 * watermark minus adstream.dedup_horizon, and sources.dedup_expired_before
 * records how far, never moving back.  Batches judge too_late against that
 * column, so an event is dead-lettered only when the state that would catch
 * its duplicate is really gone, whatever the order partitions are read in.
 *
 * The lock comes first: every batch that committed before it is seen, and no
 * batch judges until this commits.  Then the expired sources' rows leave
 * dedup_log (whole partitions when nothing in them is live), and the index
 * forgets the same hours, and every id of a source that no longer exists.
 */
/*
 * How far each ad-events source may give its dedup state up now: its expiry
 * watermark (the slowest of its partitions not committed to their end)
 * less adstream.dedup_horizon, on the hour.  expire_dedup_state() records
 * it under the expiry lock; _dedup_expiry_due() asks without the lock.
 */
CREATE FUNCTION adstream._dedup_expiry_marks(OUT source_id integer, OUT expired_before timestamptz)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- the horizon is subtracted as a duration (see "Time is UTC")
AS $$
BEGIN
	RETURN QUERY
	-- Read to its end means committed to its end: what a worker has read
	-- into memory but not written is judged after this, against what it gives up.
	WITH pos AS (
		SELECT p.source_id, p.partition, p.high_watermark
		  FROM adstream.partition_status() p),
	parts AS (
		SELECT s.id, o.partition, o.max_event_ts, coalesce(o.next_offset >= pos.high_watermark, false) AS caught_up
		  FROM adstream.sources s
		  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
		  LEFT JOIN pos ON pos.source_id = s.id AND pos.partition = o.partition
		 WHERE s.kind = 'ad_events'
		UNION ALL
		SELECT s.id, pos.partition, NULL, coalesce(pos.high_watermark = 0, false)
		  FROM adstream.sources s JOIN pos ON pos.source_id = s.id
		 WHERE s.kind = 'ad_events'
		   AND NOT EXISTS (SELECT 1 FROM adstream.offsets o
							WHERE o.source = s.name AND o.topic = s.topic AND o.partition = pos.partition)),
	-- A partition of the source seen neither way (its worker not started
	-- yet) holds the whole source: nothing of it is known.  The source's
	-- partitions are the topic's, or those its "partitions" option lists.
	wm AS (
		SELECT p.id,
			   CASE WHEN count(DISTINCT p.partition) FILTER (WHERE p.partition < s.partition_count
						 AND (s.partitions IS NULL OR p.partition = ANY (s.partitions)))
						 < CASE WHEN s.partitions IS NULL THEN s.partition_count
								ELSE (SELECT count(*) FROM unnest(s.partitions) x WHERE x < s.partition_count) END
					THEN '-infinity'
					ELSE coalesce(min(CASE WHEN NOT p.caught_up THEN coalesce(p.max_event_ts, '-infinity') END),
								  max(p.max_event_ts)) END AS wm
		  FROM parts p JOIN adstream.sources s ON s.id = p.id
		 GROUP BY p.id, s.partition_count, s.partitions)
	-- An event set aside is judged again against its hour's state: kept.
	SELECT wm.id, date_bin('1 hour', least(wm.wm - current_setting('adstream.dedup_horizon')::interval,
										   (SELECT min(a.ts) FROM adstream.set_aside a WHERE a.source_id = wm.id)),
						   timestamptz '1970-01-01 00:00:00+00')
	  FROM wm WHERE isfinite(wm.wm);
END
$$;
COMMENT ON FUNCTION adstream._dedup_expiry_marks() IS
	'Internal: how far each ad-events source may give up its dedup state now (its expiry watermark less adstream.dedup_horizon, on the hour)';

CREATE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- the horizon is subtracted as a duration (see "Time is UTC")
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_latest	timestamptz;
	v_rel		regclass;
	v_upper		timestamptz;
	v_live		boolean;
	v_dropped	integer := 0;
BEGIN
	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);

	-- What a worker has read into memory but not written is judged after
	-- this, against what it gives up (_dedup_expiry_marks).
	UPDATE adstream.sources s
	   SET dedup_expired_before = greatest(s.dedup_expired_before, m.expired_before)
	  FROM adstream._dedup_expiry_marks() m
	 WHERE m.source_id = s.id;

	SELECT max(dedup_expired_before) INTO v_latest FROM adstream.sources WHERE kind = 'ad_events';
	FOR v_rel, v_upper IN
		SELECT i.inhrelid::regclass, adstream._partition_upper(i.inhrelid)
		  FROM pg_inherits i WHERE i.inhparent = 'adstream.dedup_log'::regclass
	LOOP
		CONTINUE WHEN v_latest IS NULL OR v_upper > v_latest;
		-- Rows of an hour are live while their source still remembers it.
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s d JOIN adstream.sources s ON s.id = d.source_id '
					   'WHERE s.dedup_expired_before < %L)', v_rel, v_upper) INTO v_live;
		IF v_live THEN
			EXECUTE format('DELETE FROM %s d WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s '
						   'WHERE s.id = d.source_id AND s.dedup_expired_before < %L)', v_rel, v_upper);
		ELSE
			EXECUTE format('ALTER TABLE adstream.dedup_log DETACH PARTITION %s', v_rel);
			EXECUTE format('DROP TABLE %s', v_rel);
			v_dropped := v_dropped + 1;
		END IF;
	END LOOP;

	-- Last, once the rows are gone: the index forgets the same hours.
	PERFORM adstream._dedup_forget(coalesce(array_agg(id), '{}'), coalesce(array_agg(dedup_expired_before), '{}'))
	   FROM adstream.sources WHERE kind = 'ad_events';
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.expire_dedup_state() IS
	'Gives up each ad-events source''s dedup state behind its slowest unread partition minus adstream.dedup_horizon (recorded in sources.dedup_expired_before), and drops or empties those dedup_log hours; returns how many partitions were dropped';

/*
 * Whether expire_dedup_state() would give anything up now: a source's mark
 * would move (the same watermark as there), or dedup_log still holds an hour
 * at or before the latest mark.  Read without the expiry lock, so that the
 * retention job takes that lock, which stalls every worker of every source
 * until the batches in flight have committed, only when expiry has work
 * (issue #12).  A stale answer only moves expiry to the next round.  The
 * ids of a dropped source are forgotten by the next expiry that runs (at the
 * latest when the index is 80% full: adstream_dedup_expiry always runs).
 */
CREATE FUNCTION adstream._dedup_expiry_due()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
DECLARE
	v_latest	timestamptz;
BEGIN
	IF EXISTS (SELECT 1 FROM adstream._dedup_expiry_marks() m JOIN adstream.sources s ON s.id = m.source_id
				WHERE m.expired_before > s.dedup_expired_before) THEN
		RETURN true;
	END IF;
	SELECT max(dedup_expired_before) INTO v_latest FROM adstream.sources WHERE kind = 'ad_events';
	RETURN v_latest IS NOT NULL AND EXISTS (
		SELECT 1 FROM pg_inherits i
		 WHERE i.inhparent = 'adstream.dedup_log'::regclass
		   AND adstream._partition_upper(i.inhrelid) <= v_latest);
END
$$;
COMMENT ON FUNCTION adstream._dedup_expiry_due() IS
	'Whether expire_dedup_state() has anything to give up now (read without its lock; the retention job asks first)';

-------------------------------------------------------------------------------
-- Attribution: ad events kept for it, orders, and the orders credited
-------------------------------------------------------------------------------

/* Insert-only and dropped whole within hours: no vacuum for inserts. */
INSERT INTO adstream.partitioned_tables (name, grain, fillfactor, storage_options) VALUES
	('ad_events', interval '1 hour', 100, ARRAY['autovacuum_vacuum_insert_threshold=-1']);

CREATE TABLE adstream.ad_events (
	source_id	integer NOT NULL,
	event_id	uuid NOT NULL,
	type		text NOT NULL CHECK (type IN ('click', 'impression')),
	ad_id		bigint NOT NULL,
	campaign_id	bigint NOT NULL,
	user_id		bigint NOT NULL,
	store_id	bigint NOT NULL,
	ts			timestamptz NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX ON adstream.ad_events (user_id, store_id, type, ts, event_id);
COMMENT ON TABLE adstream.ad_events IS
	'Deduplicated clicks (and impressions when view-through is on) kept for attribution; partitions expire behind the ad-events watermark';
-- Dumped like ad_stats_minute: the hours' partitions with their rows.

CREATE TABLE adstream.orders (
	order_id		uuid PRIMARY KEY,
	source			text NOT NULL,
	user_id			bigint NOT NULL,
	store_id		bigint NOT NULL,
	amount			numeric NOT NULL,
	currency		text NOT NULL,
	ts				timestamptz NOT NULL,
	received_at		timestamptz NOT NULL DEFAULT now(),
	status			text NOT NULL DEFAULT 'waiting'
					CHECK (status IN ('waiting', 'attributed', 'unattributed')),
	decided_at		timestamptz,
	attribution		text CHECK (attribution IN ('click', 'view')),
	ad_id			bigint,
	campaign_id		bigint,
	event_id		uuid,			-- the credited click (or impression)
	event_ts		timestamptz
);
-- (ts, received_at): a pass finds the orders the watermark has passed by a
-- range of ts, and those that waited attribution_max_wait without reading
-- the rows of the others (attribute_orders).
CREATE INDEX orders_waiting_idx ON adstream.orders (ts, received_at) WHERE status = 'waiting';
COMMENT ON TABLE adstream.orders IS
	'Every distinct order; the attribution columns stay null while it waits or when nothing matched';
SELECT pg_catalog.pg_extension_config_dump('adstream.orders', '');

CREATE TABLE adstream.attributed_orders (
	order_id		uuid PRIMARY KEY,
	ad_id			bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	click_event_id	uuid NOT NULL,
	click_ts		timestamptz NOT NULL,
	order_ts		timestamptz NOT NULL,
	amount			numeric NOT NULL,
	currency		text NOT NULL,
	attribution		text NOT NULL DEFAULT 'click' CHECK (attribution IN ('click', 'view')),
	record_uuid		uuid NOT NULL UNIQUE,
	attributed_at	timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE adstream.attributed_orders IS
	'Orders credited to the last click (or, with view-through, the last impression) before them';
SELECT pg_catalog.pg_extension_config_dump('adstream.attributed_orders', '');
-- (its trigger queue_for_publishing is defined with the outbox, below)

/*
 * How far all ad events have arrived: the lowest partition watermark over
 * every enabled ad-events source.  An order is judged once this passes its
 * time, so the clicks before it have been ingested.  NULL when no ad events
 * have arrived yet.  A partition that has messages to read but no watermark
 * yet (a worker that started on a backlog and has not committed its first
 * batch) holds it back at -infinity.
 */
CREATE FUNCTION adstream.ad_events_watermark()
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN least(CASE
	WHEN EXISTS (
		SELECT 1 FROM adstream.sources s
		  JOIN adstream.partition_status() p ON p.source_id = s.id
		  LEFT JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic AND o.partition = p.partition
		 WHERE s.kind = 'ad_events' AND s.enabled AND o.max_event_ts IS NULL
		   AND (p.high_watermark IS NULL OR p.high_watermark > coalesce(o.next_offset, 0)))
	THEN '-infinity'::timestamptz
	ELSE (SELECT min(o.max_event_ts)
			FROM adstream.offsets o JOIN adstream.sources s ON s.name = o.source AND s.topic = o.topic
		   WHERE s.kind = 'ad_events' AND s.enabled AND o.max_event_ts IS NOT NULL)
END,
	-- an event set aside is not kept yet: orders of its time and later wait for it
	(SELECT min(a.ts) - interval '1 microsecond'
	   FROM adstream.set_aside a JOIN adstream.sources s ON s.id = a.source_id WHERE s.enabled));
COMMENT ON FUNCTION adstream.ad_events_watermark() IS
	'Lowest event-time watermark over the partitions of all enabled ad-events sources, and below every event set aside; -infinity while a partition with messages to read has none yet';

-- The watermark is read once per query (a subquery), not once per order:
-- 300,000 waiting orders took 3 s to list, 20 ms now.
CREATE VIEW adstream.waiting_orders AS
SELECT o.order_id, o.source, o.user_id, o.store_id, o.amount, o.currency, o.ts, o.received_at,
	   (SELECT adstream.ad_events_watermark()) AS ad_events_watermark,
	   o.received_at + make_interval(secs => extract(epoch FROM current_setting('adstream.attribution_max_wait')::interval))
		   AS decide_by
  FROM adstream.orders o
 WHERE o.status = 'waiting';
COMMENT ON VIEW adstream.waiting_orders IS
	'Orders not yet judged: waiting for the ad-events watermark to pass their time, or until decide_by';

CREATE FUNCTION adstream.validate_order(payload bytea,
	OUT reason text, OUT detail text, OUT order_id uuid, OUT user_id bigint,
	OUT store_id bigint, OUT amount numeric, OUT currency text, OUT ts timestamptz)
RETURNS record LANGUAGE C STRICT STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'adstream_validate_order';
COMMENT ON FUNCTION adstream.validate_order(bytea) IS
	'Runs the consumer''s order parser on one message value; reason is ''ok'' or the dead-letter reason (the clock-dependent future_timestamp check excluded)';

CREATE FUNCTION adstream.validate_order(payload text,
	OUT reason text, OUT detail text, OUT order_id uuid, OUT user_id bigint,
	OUT store_id bigint, OUT amount numeric, OUT currency text, OUT ts timestamptz)
RETURNS record LANGUAGE sql STRICT STABLE PARALLEL SAFE
RETURN adstream.validate_order(pg_catalog.convert_to(payload, 'UTF8'));
COMMENT ON FUNCTION adstream.validate_order(text) IS
	'Text form of adstream.validate_order(bytea)';

/*
 * Stable per order, so a re-run after a crash produces the same record: a
 * name-based (MD5, version 3) UUID of the record's kind and key, the MD5 of
 * 'adstream/' || kind || '/' || key with the version and variant bits set
 * (src/publish_record.c; an SQL function until 0.6, with the same result).
 */
CREATE FUNCTION adstream.record_uuid(p_kind text, p_key text)
RETURNS uuid LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'adstream_record_uuid';
COMMENT ON FUNCTION adstream.record_uuid(text, text) IS
	'Deterministic record UUID of a published row, from its kind and key';

/*
 * The attribution rule, in one place: the event an order at p_ts by
 * (p_user_id, p_store_id) is credited to.  Last click wins within
 * p_window before the order; with view-through on (p_view > 0), the last
 * impression within p_view when no click matched.  One row, all null if
 * nothing matched.  Inlined by the planner into attribute_orders() and
 * _store_orders() (SQL, stable, no SET clause; the body is parsed when the
 * function is created, so the caller's search_path cannot change it).
 */
CREATE FUNCTION adstream._last_touch(p_user_id bigint, p_store_id bigint, p_ts timestamptz,
									 p_window interval, p_view interval)
RETURNS TABLE (type text, ad_id bigint, campaign_id bigint, event_id uuid, ts timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT coalesce(c.type, v.type), coalesce(c.ad_id, v.ad_id), coalesce(c.campaign_id, v.campaign_id),
		   coalesce(c.event_id, v.event_id), coalesce(c.ts, v.ts)
	  FROM (VALUES (1)) AS one(x)
	  LEFT JOIN LATERAL (
		SELECT e.type, e.ad_id, e.campaign_id, e.event_id, e.ts FROM adstream.ad_events e
		 WHERE e.user_id = p_user_id AND e.store_id = p_store_id AND e.type = 'click'
		   AND e.ts <= p_ts AND e.ts > p_ts - p_window
		 ORDER BY e.ts DESC, e.event_id DESC LIMIT 1) c ON true
	  LEFT JOIN LATERAL (
		SELECT e.type, e.ad_id, e.campaign_id, e.event_id, e.ts FROM adstream.ad_events e
		 WHERE c.event_id IS NULL AND p_view > interval '0'
		   AND e.user_id = p_user_id AND e.store_id = p_store_id AND e.type = 'impression'
		   AND e.ts <= p_ts AND e.ts > p_ts - p_view
		 ORDER BY e.ts DESC, e.event_id DESC LIMIT 1) v ON true;
END;
COMMENT ON FUNCTION adstream._last_touch(bigint, bigint, timestamptz, interval, interval) IS
	'Internal: the attribution rule, the event an order is credited to (last click within the window, else with view-through the last impression)';

/*
 * The one place a judged order is credited: given the rows of orders a
 * judgment wrote (attribute_orders() updates waiting orders,
 * _store_orders() stores judged ones), insert into attributed_orders
 * those that matched an event, each with its stable record UUID, in the
 * caller's transaction; the table's statement trigger queues them for
 * publishing.  An order credited before keeps its credit.  Returns how
 * many were credited.
 */
CREATE FUNCTION adstream._credit_orders(p_orders adstream.orders[])
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH credited AS (
		INSERT INTO adstream.attributed_orders
			(order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts, amount, currency,
			 attribution, record_uuid)
		SELECT o.order_id, o.ad_id, o.campaign_id, o.event_id, o.event_ts, o.ts, o.amount, o.currency,
			   o.attribution, adstream.record_uuid('attributed_orders', o.order_id::text)
		  FROM unnest(p_orders) o
		 WHERE o.event_id IS NOT NULL
		ON CONFLICT (order_id) DO NOTHING
		RETURNING 1)
	SELECT count(*)::integer FROM credited
$$;
COMMENT ON FUNCTION adstream._credit_orders(adstream.orders[]) IS
	'Internal: credits judged orders that matched an event (attributed_orders, with their record UUIDs); returns how many';

/*
 * Judge the orders that are ready, in one transaction: last click wins
 * within adstream.attribution_window before the order; with view-through
 * on, the last impression within adstream.view_through_window when no click
 * matched.  Several workers may run this at once (SKIP LOCKED).  The ready
 * orders are found in two ranges of orders_waiting_idx: those the watermark
 * has passed (ts up to it) and, after it, those that waited
 * attribution_max_wait (received_at, checked in the index), so that a pass
 * costs what it judges, not what waits.  The update finds each order by the
 * row version it locked (ctid): locked, it cannot move, and no second
 * look-up through the primary key is needed.  p_wm is the ad-events
 * watermark, read by the caller in this transaction before the pass's
 * snapshots: every click up to it is committed with the offsets it comes
 * from, so the look-ups see all clicks before an order it has passed.
 */
CREATE FUNCTION adstream._attribute_orders(p_limit integer, p_wm timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- a one-day window is 24 hours
SET jit = off				-- a pass is index probes: compiling them costs more than it saves
AS $$
DECLARE
	v_wm		timestamptz := p_wm;
	v_window	interval := current_setting('adstream.attribution_window')::interval;
	v_view		interval := current_setting('adstream.view_through_window')::interval;
	v_wait		interval := current_setting('adstream.attribution_max_wait')::interval;
	v_done		integer;
	v_judged	adstream.orders[];
BEGIN
	WITH ready AS (
		SELECT * FROM (
			SELECT * FROM (
				SELECT o.ctid AS row_id, o.order_id, o.user_id, o.store_id, o.ts
				  FROM adstream.orders o
				 WHERE o.status = 'waiting' AND o.ts <= v_wm
				 ORDER BY o.ts
				 LIMIT p_limit
				   FOR UPDATE SKIP LOCKED) passed
			UNION ALL
			SELECT * FROM (
				SELECT o.ctid AS row_id, o.order_id, o.user_id, o.store_id, o.ts
				  FROM adstream.orders o
				 WHERE o.status = 'waiting' AND o.ts > coalesce(v_wm, '-infinity')
				   AND o.received_at <= now() - v_wait
				 ORDER BY o.ts
				 LIMIT p_limit
				   FOR UPDATE SKIP LOCKED) waited) r
		 ORDER BY r.ts
		 LIMIT p_limit
	), judged AS (
		SELECT r.row_id, t.type, t.ad_id, t.campaign_id, t.event_id, t.ts AS event_ts
		  FROM ready r
		  CROSS JOIN LATERAL adstream._last_touch(r.user_id, r.store_id, r.ts, v_window, v_view) t
	), updated AS (
		UPDATE adstream.orders o
		   SET status = CASE WHEN j.event_id IS NULL THEN 'unattributed' ELSE 'attributed' END,
			   decided_at = now(),
			   attribution = CASE j.type WHEN 'click' THEN 'click' WHEN 'impression' THEN 'view' END,
			   ad_id = j.ad_id, campaign_id = j.campaign_id, event_id = j.event_id, event_ts = j.event_ts
		  FROM judged j
		 WHERE o.ctid = j.row_id
		RETURNING o
	)
	SELECT count(*), array_agg(u.o) FILTER (WHERE (u.o).event_id IS NOT NULL) INTO v_done, v_judged
	  FROM updated u;
	PERFORM adstream._credit_orders(v_judged);
	RETURN v_done;
END
$$;
COMMENT ON FUNCTION adstream._attribute_orders(integer, timestamptz) IS
	'Internal: attribute_orders() with the ad-events watermark read by the caller (the orders worker, which also keeps it)';

/* A pass at the watermark as it is now (the orders worker passes the one it read). */
CREATE FUNCTION adstream.attribute_orders(p_limit integer DEFAULT 5000)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN adstream._attribute_orders(p_limit, adstream.ad_events_watermark());
COMMENT ON FUNCTION adstream.attribute_orders(integer) IS
	'Judges the waiting orders whose time the ad-events watermark has passed (or that waited attribution_max_wait); returns how many';

/*
 * Store a batch's orders for the orders worker (src/batch.c), judging those
 * the ad-events watermark has already passed as they are stored: such an
 * order is written once, judged, instead of inserted waiting and updated
 * by a later attribute_orders() pass (a second, non-HOT row version, its
 * index entries and a row lock).  The watermark is read in this
 * transaction, before the inserts' snapshots, as attribute_orders() reads
 * it: every click up to it is committed with the offsets it comes from, so
 * the lookup sees all clicks before such an order.  The rule is
 * attribute_orders()'s (_last_touch), the credit _credit_orders().  Orders
 * beyond the watermark are stored waiting by a plain insert of their own
 * (no lookup, nothing to credit), and judged by a pass.  Returns the ids of
 * the orders stored (an order stored before, or judged on the node this one
 * took its partition over from, is a duplicate and not returned).
 */
CREATE FUNCTION adstream._store_orders(p_source text, p_order_ids uuid[], p_user_ids bigint[],
	p_store_ids bigint[], p_amounts text[], p_currencies text[], p_ts timestamptz[], p_partitions integer[])
RETURNS SETOF uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- a one-day window is 24 hours
SET jit = off
AS $$
DECLARE
	v_wm		timestamptz := adstream.ad_events_watermark();
	v_window	interval := current_setting('adstream.attribution_window')::interval;
	v_view		interval := current_setting('adstream.view_through_window')::interval;
	v_credited	adstream.orders[];	-- the judged orders that matched an event
	v_stored	uuid[];
BEGIN
	RETURN QUERY
	INSERT INTO adstream.orders AS o (order_id, source, user_id, store_id, amount, currency, ts, partition)
	SELECT u.order_id, p_source, u.user_id, u.store_id, u.amount::numeric, u.currency, u.ts, u.partition
	  FROM unnest(p_order_ids, p_user_ids, p_store_ids, p_amounts, p_currencies, p_ts, p_partitions)
		   AS u(order_id, user_id, store_id, amount, currency, ts, partition)
	 WHERE NOT coalesce(u.ts <= v_wm, false)
	   AND NOT EXISTS (SELECT 1 FROM adstream.orders_seen_elsewhere x WHERE x.order_id = u.order_id)
	ON CONFLICT (order_id) DO NOTHING
	RETURNING o.order_id;
	IF v_wm IS NULL THEN
		RETURN;
	END IF;

	WITH stored AS (
		INSERT INTO adstream.orders AS o (order_id, source, user_id, store_id, amount, currency, ts, partition,
			status, decided_at, attribution, ad_id, campaign_id, event_id, event_ts)
		SELECT u.order_id, p_source, u.user_id, u.store_id, u.amount::numeric, u.currency, u.ts, u.partition,
			   CASE WHEN t.event_id IS NULL THEN 'unattributed' ELSE 'attributed' END, now(),
			   CASE t.type WHEN 'click' THEN 'click' WHEN 'impression' THEN 'view' END,
			   t.ad_id, t.campaign_id, t.event_id, t.ts
		  FROM unnest(p_order_ids, p_user_ids, p_store_ids, p_amounts, p_currencies, p_ts, p_partitions)
			   AS u(order_id, user_id, store_id, amount, currency, ts, partition)
		  CROSS JOIN LATERAL adstream._last_touch(u.user_id, u.store_id, u.ts, v_window, v_view) t
		 WHERE u.ts <= v_wm
		   AND NOT EXISTS (SELECT 1 FROM adstream.orders_seen_elsewhere x WHERE x.order_id = u.order_id)
		ON CONFLICT (order_id) DO NOTHING
		RETURNING o
	)
	SELECT array_agg(s.o) FILTER (WHERE (s.o).event_id IS NOT NULL), array_agg((s.o).order_id)
	  INTO v_credited, v_stored
	  FROM stored s;
	PERFORM adstream._credit_orders(v_credited);
	RETURN QUERY SELECT unnest(v_stored);
END
$$;
COMMENT ON FUNCTION adstream._store_orders(text, uuid[], bigint[], bigint[], text[], text[], timestamptz[], integer[]) IS
	'The orders worker''s insert of a batch''s orders: those the ad-events watermark has passed are judged as they are stored (as attribute_orders() would); returns the ids stored';

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
-- The Kafka cluster id of the source's brokers, recorded by its workers when
-- they first connect: its offsets are positions in that cluster's topic, and
-- a worker that finds its brokers answering as another cluster, or another
-- source of the kind already on the topic of this cluster, does not consume.
ALTER TABLE adstream.sources ADD COLUMN cluster_id text;

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

-------------------------------------------------------------------------------
-- #13 partition handoff: moving partitions between running nodes (issue #13,
-- part 3; docs/deployment.md, "Moving partitions between nodes";
-- docs/architecture.md, point 13)
-------------------------------------------------------------------------------

-- The Kafka partition an order came from, written by the orders consumer, so
-- that a handoff moves exactly the moved partitions' waiting orders.  NULL
-- for orders stored before 0.6.
ALTER TABLE adstream.orders ADD COLUMN partition integer;

/*
 * The ids of orders another node judged, on partitions this node took over
 * from it: a copy of one arriving here is a duplicate, never a new order.
 * The orders consumer skips them as it skips the orders of adstream.orders.
 */
CREATE TABLE adstream.orders_seen_elsewhere (
	order_id		uuid PRIMARY KEY,
	source			text NOT NULL,
	partition		integer,		-- NULL: stored before 0.6 on the other node
	from_node		text NOT NULL,
	handoff_id		bigint NOT NULL
);
COMMENT ON TABLE adstream.orders_seen_elsewhere IS
	'Ids of orders judged by another node on partitions handed over to this one: their copies are duplicates here';
SELECT pg_catalog.pg_extension_config_dump('adstream.orders_seen_elsewhere', '');

/*
 * Handoffs this node exported ('out', numbered by handoff_id_seq) or
 * imported ('in', under the exporting node's name and number).  An export
 * keeps its data (handoff_items) until it is confirmed: the operator's copy
 * may fail and be done again.
 */
CREATE SEQUENCE adstream.handoff_id_seq;
SELECT pg_catalog.pg_extension_config_dump('adstream.handoff_id_seq', '');
CREATE TABLE adstream.handoffs (
	direction		text NOT NULL CHECK (direction IN ('out', 'in')),
	from_node		text NOT NULL,
	handoff_id		bigint NOT NULL,
	partitions		integer[] NOT NULL,
	sources			text[] NOT NULL,
	state			text NOT NULL CHECK (state IN ('exported', 'confirmed', 'cancelled', 'imported')),
	exported_at		timestamptz NOT NULL,
	imported_at		timestamptz,
	finished_at		timestamptz,	-- confirmed or cancelled
	items			jsonb NOT NULL,	-- how many items of each kind
	PRIMARY KEY (direction, from_node, handoff_id),
	CHECK ((direction = 'out') = (state IN ('exported', 'confirmed', 'cancelled')))
);
COMMENT ON TABLE adstream.handoffs IS
	'Partition handoffs exported from this node or imported into it (adstream.export_partitions, adstream.import_partitions)';
SELECT pg_catalog.pg_extension_config_dump('adstream.handoffs', '');

/*
 * What an export took from this node, one item per row: each source's
 * definition, and the moved partitions' offsets, dead letters and waiting
 * orders (taken away here), the source's dedup ids and kept clicks, and the
 * ids of orders judged (copied).  Removed when the handoff is confirmed.
 */
CREATE TABLE adstream.handoff_items (
	handoff_id		bigint NOT NULL,
	item			text NOT NULL
					CHECK (item IN ('source', 'offset', 'dedup', 'event', 'order', 'order_id', 'dead_letter', 'set_aside')),
	source			text NOT NULL,
	data			jsonb NOT NULL
);
CREATE INDEX handoff_items_handoff_idx ON adstream.handoff_items (handoff_id);
COMMENT ON TABLE adstream.handoff_items IS
	'The data of this node''s exported handoffs until they are confirmed (read with adstream.handoff_data)';
SELECT pg_catalog.pg_extension_config_dump('adstream.handoff_items', '');

/*
 * Where the operator copies a handoff on the receiving node:
 *   psql -h old -c "COPY (SELECT * FROM adstream.handoff_data(7)) TO STDOUT" |
 *   psql -h new -c "COPY adstream.handoff_in FROM STDIN"
 * import_partitions() reads it and empties it.
 */
CREATE TABLE adstream.handoff_in (
	from_node		text NOT NULL,
	handoff_id		bigint NOT NULL,
	item			text NOT NULL,
	source			text,
	data			jsonb NOT NULL
);
CREATE INDEX handoff_in_handoff_idx ON adstream.handoff_in (from_node, handoff_id);
COMMENT ON TABLE adstream.handoff_in IS
	'A handoff copied from another node (COPY ... FROM STDIN), waiting for adstream.import_partitions()';

REVOKE ALL ON adstream.orders_seen_elsewhere, adstream.handoffs, adstream.handoff_items, adstream.handoff_in
	FROM PUBLIC;

/*
 * Ids of a handoff into the dedup index, as committed ids of the source's
 * hours, before they are written to dedup_log in the same transaction;
 * returns each row's segment.  Rebuilds the index first if it has not been.
 */
CREATE FUNCTION adstream._dedup_import(p_source integer, p_hours timestamptz[], p_ids bytea[])
RETURNS integer[] LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_import';
COMMENT ON FUNCTION adstream._dedup_import(integer, timestamptz[], bytea[]) IS
	'Internal: puts a handoff''s event ids into the dedup index of the source and returns the segment of each row for dedup_log';

/*
 * A source's counters in adstream.metrics stay monotonic across a handoff:
 * the counters of the partitions that leave (negative deltas) or arrive
 * travel with their offsets rows, and the metrics' baseline moves with them.
 */
CREATE FUNCTION adstream._metrics_shift(p_source integer, p_created timestamptz,
	p_accepted numeric, p_duplicates numeric, p_rejected numeric)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO adstream.metrics_reset AS r (kind, object_id, stats_reset, baseline)
VALUES ('source', p_source, p_created,
		jsonb_build_object('messages_accepted_total', p_accepted, 'messages_duplicate_total', p_duplicates,
						   'messages_rejected_total', p_rejected))
ON CONFLICT (kind, object_id) DO UPDATE
   SET baseline = r.baseline || jsonb_build_object(
		'messages_accepted_total', coalesce((r.baseline->>'messages_accepted_total')::numeric, 0) + p_accepted,
		'messages_duplicate_total', coalesce((r.baseline->>'messages_duplicate_total')::numeric, 0) + p_duplicates,
		'messages_rejected_total', coalesce((r.baseline->>'messages_rejected_total')::numeric, 0) + p_rejected)
$$;
COMMENT ON FUNCTION adstream._metrics_shift(integer, timestamptz, numeric, numeric, numeric) IS
	'Internal: moves a source''s metrics baseline by the counters a handoff took away or brought, so that its counters stay monotonic';

/*
 * Moves partitions away from this node: every source here that consumes
 * any of them gives them up, in one transaction that
 *   - takes the expiry lock exclusively, which waits for every batch in
 *     flight and holds back the next ones until it commits;
 *   - deletes the moved partitions' offsets (a batch of a worker that still
 *     runs then fails on its offsets: the fence of the batch), their dead
 *     letters and, of an orders source, their waiting orders;
 *   - keeps all that, with each source's definition, its dedup ids and
 *     dedup_expired_before, its kept clicks and the ids of the orders it
 *     judged, in handoff_items;
 *   - takes the partitions out of the sources' "partitions" (a source left
 *     with none is dropped; its counts stay) with a new generation.
 * sources, if given, limits the export to those sources.  A user's clicks
 * and orders must stay on one node: move the ad-events and orders sources
 * of the same partitions together, in one export.
 * Returns the handoff's number, for adstream.handoff_data().
 */
CREATE FUNCTION adstream.export_partitions(partitions text, sources text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
DECLARE
	v_parts		integer[] := adstream._parse_partitions(partitions);
	v_node		text := adstream._ensure_node();
	v_id		bigint;
	s			adstream.sources;
	v_all		integer[];
	v_move		integer[];
	v_keep		integer[];
	v_names		text[] := '{}';
	v_moved		integer[] := '{}';
	v_n			bigint;
	v_name		text;
BEGIN
	-- Each statement must see what committed before the lock below: a
	-- snapshot of the whole transaction, taken earlier, could miss a
	-- batch's first offset and hand over a partition without it.
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'export_partitions must run at isolation level READ COMMITTED'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'Call it in its own transaction, or after SET TRANSACTION ISOLATION LEVEL READ COMMITTED.';
	END IF;
	FOREACH v_name IN ARRAY coalesce(sources, '{}') LOOP
		PERFORM adstream._source_must_exist(v_name);
	END LOOP;
	-- Every batch in flight commits (or not) before this goes on, and no
	-- batch starts until this commits: the offsets read below are final.
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);

	FOR s IN SELECT * FROM adstream.sources k
			  WHERE (k.partitions IS NULL OR k.partitions && v_parts)
				AND (sources IS NULL OR k.name = ANY (sources))
			  ORDER BY k.name FOR UPDATE
	LOOP
		IF s.partitions IS NULL AND s.partition_count IS NULL THEN
			RAISE EXCEPTION 'source "%" consumes every partition of topic "%", and how many it has is not known yet', s.name, s.topic
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Let its workers start (they record the topic''s partition count), then export again.';
		END IF;
		v_all := coalesce(s.partitions, ARRAY(SELECT generate_series(0, s.partition_count - 1)));
		v_move := ARRAY(SELECT unnest(v_all) INTERSECT SELECT unnest(v_parts) ORDER BY 1);
		CONTINUE WHEN cardinality(v_move) = 0;
		v_keep := ARRAY(SELECT unnest(v_all) EXCEPT SELECT unnest(v_parts) ORDER BY 1);
		IF s.kind = 'orders' THEN
			SELECT count(*) INTO v_n FROM adstream.orders o
			 WHERE o.source = s.name AND o.status = 'waiting' AND o.partition IS NULL;
			IF v_n > 0 THEN
				RAISE EXCEPTION 'source "%" has % waiting orders of an unknown partition', s.name, v_n
					USING ERRCODE = 'object_not_in_prerequisite_state',
						  DETAIL = 'Orders stored before 0.6 do not record their partition, so a handoff cannot tell whose they are.',
						  HINT = 'Wait until attribution has judged them (at the latest adstream.attribution_max_wait after they arrived; see adstream.waiting_orders), then export again.';
			END IF;
		END IF;
		IF v_id IS NULL THEN
			v_id := nextval('adstream.handoff_id_seq');
		END IF;
		v_names := v_names || s.name;
		v_moved := ARRAY(SELECT unnest(v_moved) UNION SELECT unnest(v_move) ORDER BY 1);

		INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
		VALUES (v_id, 'source', s.name, jsonb_build_object(
			'kind', s.kind, 'brokers', s.brokers, 'topic', s.topic, 'start', s.start_policy,
			'workers', s.workers, 'group_id', s.group_id,
			'kafka_options', (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') FROM jsonb_each(s.kafka_options) e
							   WHERE NOT adstream._is_secret(e.key)),
			'input_format', s.input_format, 'partition_count', s.partition_count,
			'dedup_expired_before', s.dedup_expired_before, 'partitions', to_jsonb(v_move)));

		-- The fence: a batch of this node that still holds one of these
		-- partitions finds no offset to move (or, for a first offset, a
		-- partition that is no longer the source's) and rolls back.
		WITH gone AS (
			DELETE FROM adstream.offsets o
			 WHERE o.source = s.name AND o.topic = s.topic AND o.partition = ANY (v_move)
			RETURNING o.*)
		INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
		SELECT v_id, 'offset', s.name,
			   jsonb_build_object('partition', g.partition, 'next_offset', g.next_offset, 'max_event_ts', g.max_event_ts,
								  'accepted', g.accepted, 'duplicates', g.duplicates, 'rejected', g.rejected)
		  FROM gone g;

		WITH gone AS (
			DELETE FROM adstream.rejected_events r
			 WHERE r.source = s.name AND r.topic = s.topic AND r.partition = ANY (v_move)
			RETURNING r.*)
		INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
		SELECT v_id, 'dead_letter', s.name, to_jsonb(g) - 'source' - 'topic' FROM gone g;

		IF s.kind = 'ad_events' THEN
			-- Everything the source remembers (its dedup_log within its
			-- horizon), and every click it keeps for attribution: duplicates
			-- and a user's clicks stay on their partition, so the extra ids
			-- and clicks of partitions not moved never meet an event there.
			INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
			SELECT v_id, 'dedup', s.name, jsonb_build_object('hour', d.hour, 'ids', encode(d.ids, 'hex'))
			  FROM adstream.dedup_log d
			 WHERE d.source_id = s.id AND d.hour >= s.dedup_expired_before;
			INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
			SELECT v_id, 'event', s.name, to_jsonb(e) - 'source_id'
			  FROM adstream.ad_events e WHERE e.source_id = s.id;
			-- Events set aside on these partitions are judged by their next reader.
			WITH gone AS (
				DELETE FROM adstream.set_aside a
				 WHERE a.source_id = s.id AND a.partition = ANY (v_move)
				RETURNING a.*)
			INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
			SELECT v_id, 'set_aside', s.name, to_jsonb(g) - 'source_id' FROM gone g;
		ELSE
			-- Waiting orders move (one node judges each); of those judged,
			-- the ids, so that their copies stay duplicates.
			WITH gone AS (
				DELETE FROM adstream.orders o
				 WHERE o.source = s.name AND o.status = 'waiting' AND o.partition = ANY (v_move)
				RETURNING o.*)
			INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
			SELECT v_id, 'order', s.name,
				   jsonb_build_object('order_id', g.order_id, 'user_id', g.user_id, 'store_id', g.store_id,
									  'amount', g.amount, 'currency', g.currency, 'ts', g.ts,
									  'received_at', g.received_at, 'partition', g.partition)
			  FROM gone g;
			INSERT INTO adstream.handoff_items (handoff_id, item, source, data)
			SELECT v_id, 'order_id', s.name, jsonb_build_object('order_id', o.order_id, 'partition', o.partition)
			  FROM adstream.orders o
			 WHERE o.source = s.name AND o.status <> 'waiting' AND (o.partition IS NULL OR o.partition = ANY (v_move))
			UNION ALL
			SELECT v_id, 'order_id', s.name, jsonb_build_object('order_id', e.order_id, 'partition', e.partition)
			  FROM adstream.orders_seen_elsewhere e
			 WHERE e.source = s.name AND (e.partition IS NULL OR e.partition = ANY (v_move));
		END IF;

		IF cardinality(v_keep) = 0 THEN
			-- Drained: the source goes, its counts and dead letters stay.
			DELETE FROM adstream.sources k WHERE k.id = s.id;
		ELSE
			PERFORM adstream._metrics_shift(s.id, s.created_at, -coalesce(sum((i.data->>'accepted')::numeric), 0),
											-coalesce(sum((i.data->>'duplicates')::numeric), 0),
											-coalesce(sum((i.data->>'rejected')::numeric), 0))
			   FROM adstream.handoff_items i
			  WHERE i.handoff_id = v_id AND i.item = 'offset' AND i.source = s.name;
			UPDATE adstream.sources k
			   SET partitions = v_keep, generation = adstream._new_generation(), updated_at = now()
			 WHERE k.id = s.id;
		END IF;
	END LOOP;

	IF v_id IS NULL THEN
		RAISE EXCEPTION 'no source % consumes partitions %',
			CASE WHEN sources IS NULL THEN 'of this node' ELSE array_to_string(sources, ', ') END, partitions
			USING ERRCODE = 'undefined_object',
				  HINT = 'See the "partitions" of adstream.source_config; export partitions this node consumes.';
	END IF;
	IF cardinality(v_moved) < cardinality(v_parts) THEN
		RAISE EXCEPTION 'partitions % are not consumed by this node',
			array_to_string(ARRAY(SELECT unnest(v_parts) EXCEPT SELECT unnest(v_moved) ORDER BY 1), ',')
			USING ERRCODE = 'undefined_object',
				  HINT = 'See the "partitions" of adstream.source_config; export partitions this node consumes.';
	END IF;

	INSERT INTO adstream.handoffs (direction, from_node, handoff_id, partitions, sources, state, exported_at, items)
	SELECT 'out', v_node, v_id, v_parts, v_names, 'exported', now(),
		   (SELECT jsonb_object_agg(c.item, c.n) FROM
				(SELECT i.item, count(*) AS n FROM adstream.handoff_items i WHERE i.handoff_id = v_id GROUP BY i.item) c);
	PERFORM adstream._wake_launcher();
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION adstream.export_partitions(text, text[]) IS
	'Stops consuming the partitions (such as ''0-15'') on this node and keeps their offsets, dead letters, waiting orders and the sources'' dedup ids, clicks and judged order ids as a handoff for another node; returns its number';

/* The rows to copy to the receiving node's adstream.handoff_in. */
CREATE FUNCTION adstream.handoff_data(id bigint)
RETURNS TABLE (from_node text, handoff_id bigint, item text, source text, data jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	h			adstream.handoffs;
	v_id		bigint := $1;
BEGIN
	SELECT * INTO h FROM adstream.handoffs k WHERE k.direction = 'out' AND k.handoff_id = v_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'this node exported no handoff %', v_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.handoff_status.';
	END IF;
	IF h.state <> 'exported' THEN
		RAISE EXCEPTION 'handoff % is %: its data is gone', v_id, h.state
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Only a handoff that is exported and not yet confirmed or cancelled can be copied.';
	END IF;
	RETURN QUERY
	SELECT h.from_node, h.handoff_id, 'handoff'::text, NULL::text,
		   jsonb_build_object('format', 1, 'partitions', to_jsonb(h.partitions), 'sources', to_jsonb(h.sources),
							  'exported_at', h.exported_at, 'items', h.items)
	UNION ALL
	SELECT h.from_node, h.handoff_id, i.item, i.source, i.data
	  FROM adstream.handoff_items i WHERE i.handoff_id = v_id;
END
$$;
COMMENT ON FUNCTION adstream.handoff_data(bigint) IS
	'The rows of an exported handoff, to copy into the receiving node''s adstream.handoff_in';

/*
 * Applies a handoff staged in handoff_in (from another node, or this node's
 * own for a cancel) in one transaction, under the expiry lock: sources
 * created or given the partitions (new generation), offsets, dedup ids
 * (dedup_log and the index), dedup_expired_before raised to the exporter's,
 * clicks, waiting orders, judged order ids and dead letters.  The
 * launcher starts the workers only after the commit, from these offsets.
 */
CREATE FUNCTION adstream._handoff_apply(p_from_node text, p_handoff_id bigint, p_options jsonb)
RETURNS integer[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET enable_hashagg = off	-- the dedup rows' chunks one after another, not all in memory at once
AS $$
DECLARE
	v_head		jsonb;
	v_want		bigint;
	v_got		bigint;
	v_item		text;
	d			jsonb;
	l			adstream.sources;
	v_move		integer[];
	v_expired	timestamptz;
	v_hours		timestamptz[];
	v_ids		bytea[];
	v_segs		integer[];
	v_times		timestamptz[];
	v_opts		jsonb;
BEGIN
	SELECT i.data INTO v_head FROM adstream.handoff_in i
	 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'handoff';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no handoff % of node "%" in adstream.handoff_in', p_handoff_id, p_from_node
			USING ERRCODE = 'undefined_object',
				  HINT = format('Copy it first: psql <old node> -c "COPY (SELECT * FROM adstream.handoff_data(%s)) TO STDOUT" | psql <this node> -c "COPY adstream.handoff_in FROM STDIN"', p_handoff_id);
	END IF;
	-- Each statement must see what committed before the lock below: a
	-- snapshot of the whole transaction, taken earlier, could miss a
	-- batch's first offset and hand over a partition without it.
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'import_partitions and cancel_handoff must run at isolation level READ COMMITTED'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'Call it in its own transaction, or after SET TRANSACTION ISOLATION LEVEL READ COMMITTED.';
	END IF;
	IF (v_head->>'format')::integer IS DISTINCT FROM 1 THEN
		RAISE EXCEPTION 'handoff % of node "%" has format %, this version reads format 1', p_handoff_id, p_from_node, v_head->>'format'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Install the same adstream version on both nodes.';
	END IF;
	-- Complete: as many items of each kind as the export wrote, once.
	FOR v_item, v_want IN
		SELECT k.key, k.value::bigint FROM jsonb_each_text(v_head->'items') k
		UNION SELECT i.item, 0 FROM adstream.handoff_in i
		 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id
		   AND i.item <> 'handoff' AND NOT (v_head->'items') ? i.item
		UNION SELECT 'handoff', 1
	LOOP
		SELECT count(*) INTO v_got FROM adstream.handoff_in i
		 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = v_item;
		IF v_got <> v_want THEN
			RAISE EXCEPTION 'handoff % of node "%" is not complete in adstream.handoff_in', p_handoff_id, p_from_node
				USING ERRCODE = 'data_corrupted',
					  DETAIL = format('%s rows of kind %s where the export wrote %s.', v_got, v_item, v_want),
					  HINT = format('Delete it (DELETE FROM adstream.handoff_in WHERE from_node = %L AND handoff_id = %s) and copy it again.',
									p_from_node, p_handoff_id);
		END IF;
	END LOOP;

	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);

	FOR v_item, d IN
		SELECT i.source, i.data FROM adstream.handoff_in i
		 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'source'
		 ORDER BY i.source
	LOOP
		v_move := ARRAY(SELECT jsonb_array_elements_text(d->'partitions')::integer ORDER BY 1);
		SELECT * INTO l FROM adstream.sources k WHERE k.name = v_item FOR UPDATE;
		IF FOUND THEN
			IF l.kind <> d->>'kind' OR l.topic <> d->>'topic' THEN
				RAISE EXCEPTION 'source "%" of this node consumes % of topic "%", the handoff''s % of topic "%"',
					l.name, l.kind, l.topic, d->>'kind', d->>'topic'
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'A handoff goes to the source of the same name, kind and topic; rename or drop this node''s source.';
			END IF;
			IF NOT adstream._broker_set(l.brokers) && adstream._broker_set(d->>'brokers') THEN
				RAISE EXCEPTION 'source "%" of this node reads brokers "%", the handoff''s "%"', l.name, l.brokers, d->>'brokers'
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = 'Offsets are positions in one Kafka cluster''s topic.',
						  HINT = 'Give this node''s source an address of the same cluster (adstream.alter_source).';
			END IF;
			IF l.partitions IS NULL OR l.partitions && v_move THEN
				RAISE EXCEPTION 'source "%" of this node already consumes partitions %', l.name,
					array_to_string(ARRAY(SELECT unnest(coalesce(l.partitions, v_move)) INTERSECT SELECT unnest(v_move) ORDER BY 1), ',')
					USING ERRCODE = 'duplicate_object',
						  HINT = 'A partition must be consumed by one node only; export it from the node that consumes it.';
			END IF;
			UPDATE adstream.sources k
			   SET partitions = ARRAY(SELECT unnest(l.partitions) UNION SELECT unnest(v_move) ORDER BY 1),
				   partition_count = coalesce(k.partition_count, (d->>'partition_count')::integer),
				   generation = adstream._new_generation(), updated_at = now()
			 WHERE k.id = l.id;
		ELSE
			-- Created here, with the exporter's settings (its secrets stay
			-- there: pass them in options) and only these partitions.
			v_opts := jsonb_build_object('start', d->'start', 'workers', d->'workers', 'group_id', d->'group_id')
					  || (d->'kafka_options') || (d->'input_format') || (p_options - 'brokers')
					  || jsonb_build_object('partitions', array_to_string(v_move, ','));
			PERFORM adstream.create_source(v_item, coalesce(p_options->>'brokers', d->>'brokers'), d->>'topic',
										   d->>'kind', v_opts);
			UPDATE adstream.sources k SET partition_count = (d->>'partition_count')::integer
			 WHERE k.name = v_item;
		END IF;
		SELECT * INTO l FROM adstream.sources k WHERE k.name = v_item;

		-- What the exporter gave up is given up here too: an event of those
		-- hours is too_late, as it would have been there.
		UPDATE adstream.sources k
		   SET dedup_expired_before = greatest(k.dedup_expired_before, (d->>'dedup_expired_before')::timestamptz)
		 WHERE k.id = l.id
		RETURNING k.dedup_expired_before INTO v_expired;

		DELETE FROM adstream.offsets o WHERE o.source = l.name AND o.topic = l.topic AND o.partition = ANY (v_move);
		PERFORM adstream._metrics_shift(l.id, l.created_at, coalesce(sum((i.data->>'accepted')::numeric), 0),
										coalesce(sum((i.data->>'duplicates')::numeric), 0),
										coalesce(sum((i.data->>'rejected')::numeric), 0))
		   FROM adstream.handoff_in i
		  WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'offset' AND i.source = l.name;
		INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected)
		SELECT l.name, l.topic, (i.data->>'partition')::integer, (i.data->>'next_offset')::bigint,
			   (i.data->>'max_event_ts')::timestamptz, (i.data->>'accepted')::bigint,
			   (i.data->>'duplicates')::bigint, (i.data->>'rejected')::bigint
		  FROM adstream.handoff_in i
		 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'offset' AND i.source = l.name;

		INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes,
											  received_at, redrive_generation)
		SELECT l.name, l.topic, r.partition, r."offset", r.reason, r.detail, r.payload, r.payload_bytes, r.received_at,
			   CASE WHEN r.redrive_generation IS NOT NULL THEN l.generation END
		  FROM adstream.handoff_in i,
			   jsonb_populate_record(NULL::adstream.rejected_events, i.data) r
		 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'dead_letter' AND i.source = l.name
		ON CONFLICT DO NOTHING;

		IF l.kind = 'ad_events' THEN
			-- In chunks of 500 rows (a batch's ids of an hour each), so that
			-- no array comes near the 1 GB a value can hold.
			FOR v_hours, v_ids IN
				SELECT array_agg(c.hour ORDER BY c.n), array_agg(c.ids ORDER BY c.n)
				  FROM (SELECT (i.data->>'hour')::timestamptz AS hour, decode(i.data->>'ids', 'hex') AS ids,
							   row_number() OVER () AS n
						  FROM adstream.handoff_in i
						 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'dedup'
						   AND i.source = l.name AND (i.data->>'hour')::timestamptz >= v_expired) c
				 GROUP BY (c.n - 1) / 500 ORDER BY (c.n - 1) / 500
			LOOP
				PERFORM adstream.ensure_partitions('dedup_log', v_hours);
				v_segs := adstream._dedup_import(l.id, v_hours, v_ids);
				INSERT INTO adstream.dedup_log (source_id, hour, seg, ids)
				SELECT l.id, u.hour, u.seg, u.ids FROM unnest(v_hours, v_segs, v_ids) AS u(hour, seg, ids);
			END LOOP;

			SELECT coalesce(array_agg(DISTINCT date_trunc('hour', (i.data->>'ts')::timestamptz)), '{}') INTO v_times
			  FROM adstream.handoff_in i
			 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'event' AND i.source = l.name;
			PERFORM adstream.ensure_partitions('ad_events', v_times);
			INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts)
			SELECT l.id, e.event_id, e.type, e.ad_id, e.campaign_id, e.user_id, e.store_id, e.ts
			  FROM adstream.handoff_in i, jsonb_populate_record(NULL::adstream.ad_events, i.data) e
			 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'event' AND i.source = l.name
			   AND NOT EXISTS (SELECT 1 FROM adstream.ad_events x
								WHERE x.user_id = e.user_id AND x.store_id = e.store_id AND x.type = e.type
								  AND x.ts = e.ts AND x.event_id = e.event_id);
			INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id,
											store_id, ts, payload, set_aside_at)
			SELECT l.id, a.partition, a."offset", a.event_id, a.type, a.ad_id, a.campaign_id, a.user_id, a.store_id,
				   a.ts, a.payload, a.set_aside_at
			  FROM adstream.handoff_in i, jsonb_populate_record(NULL::adstream.set_aside, i.data) a
			 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'set_aside' AND i.source = l.name
			ON CONFLICT DO NOTHING;
		ELSE
			INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts, received_at, partition)
			SELECT o.order_id, l.name, o.user_id, o.store_id, o.amount, o.currency, o.ts, o.received_at, o.partition
			  FROM adstream.handoff_in i, jsonb_populate_record(NULL::adstream.orders, i.data) o
			 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'order' AND i.source = l.name
			ON CONFLICT (order_id) DO NOTHING;
			INSERT INTO adstream.orders_seen_elsewhere (order_id, source, partition, from_node, handoff_id)
			SELECT (i.data->>'order_id')::uuid, l.name, (i.data->>'partition')::integer, p_from_node, p_handoff_id
			  FROM adstream.handoff_in i
			 WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id AND i.item = 'order_id' AND i.source = l.name
			   AND NOT EXISTS (SELECT 1 FROM adstream.orders o WHERE o.order_id = (i.data->>'order_id')::uuid)
			ON CONFLICT (order_id) DO NOTHING;
		END IF;
	END LOOP;

	DELETE FROM adstream.handoff_in i WHERE i.from_node = p_from_node AND i.handoff_id = p_handoff_id;
	PERFORM adstream._wake_launcher();
	RETURN ARRAY(SELECT jsonb_array_elements_text(v_head->'partitions')::integer ORDER BY 1);
END
$$;
COMMENT ON FUNCTION adstream._handoff_apply(text, bigint, jsonb) IS
	'Internal: applies a handoff staged in adstream.handoff_in (import_partitions, cancel_handoff)';

/*
 * Takes over the partitions of a handoff copied into handoff_in, from
 * another node; once only.  options: for a source this node does not have
 * yet, what to change in the exporter's settings ("brokers", "workers",
 * secret librdkafka properties, which the handoff does not carry).
 */
CREATE FUNCTION adstream.import_partitions(from_node text, handoff_id bigint, options jsonb DEFAULT '{}')
RETURNS integer[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_node		text := adstream._ensure_node();
	v_from		text := $1;
	v_id		bigint := $2;
	v_head		jsonb;
	v_parts		integer[];
BEGIN
	IF v_from IS NULL OR v_id IS NULL THEN
		RAISE EXCEPTION 'from_node and handoff_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass for example ''{"workers": 2, "sasl.password": "..."}''.';
	END IF;
	IF v_from = v_node THEN
		RAISE EXCEPTION 'handoff % of node "%" cannot be imported by the node that exported it', v_id, v_node
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Nodes on one topic must have different names (adstream.set_node_name).',
				  HINT = 'Import it on another node, or take the partitions back here with adstream.cancel_handoff().';
	END IF;
	-- Serialises imports of one handoff: the second finds the first's row.
	PERFORM adstream._lock('adstream.handoff', hashtext(v_from || '|' || v_id), true);
	IF EXISTS (SELECT 1 FROM adstream.handoffs h
				WHERE h.direction = 'in' AND h.from_node = v_from AND h.handoff_id = v_id) THEN
		RAISE EXCEPTION 'handoff % of node "%" was already imported', v_id, v_from
			USING ERRCODE = 'duplicate_object',
				  DETAIL = 'Importing it again would count its partitions twice.',
				  HINT = format('Delete the copy (DELETE FROM adstream.handoff_in WHERE from_node = %L AND handoff_id = %s), and confirm the handoff on node "%s" with adstream.confirm_handoff(%s).',
								v_from, v_id, v_from, v_id);
	END IF;
	SELECT i.data INTO v_head FROM adstream.handoff_in i
	 WHERE i.from_node = v_from AND i.handoff_id = v_id AND i.item = 'handoff' LIMIT 1;
	v_parts := adstream._handoff_apply(v_from, v_id, options);
	INSERT INTO adstream.handoffs (direction, from_node, handoff_id, partitions, sources, state, exported_at,
								   imported_at, items)
	VALUES ('in', v_from, v_id, v_parts, ARRAY(SELECT jsonb_array_elements_text(v_head->'sources')), 'imported',
			(v_head->>'exported_at')::timestamptz, now(), v_head->'items');
	RETURN v_parts;
END
$$;
COMMENT ON FUNCTION adstream.import_partitions(text, bigint, jsonb) IS
	'Takes over the partitions of another node''s handoff, copied into adstream.handoff_in, once; returns them';

/*
 * On the exporting node, once the receiving node has imported the handoff
 * (its adstream.handoff_status says imported): its data is deleted here.
 */
CREATE FUNCTION adstream.confirm_handoff(handoff_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id		bigint := $1;
	v_state		text;
BEGIN
	SELECT h.state INTO v_state FROM adstream.handoffs h
	 WHERE h.direction = 'out' AND h.handoff_id = v_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'this node exported no handoff %', v_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.handoff_status.';
	END IF;
	IF v_state <> 'exported' THEN
		RAISE EXCEPTION 'handoff % is already %', v_id, v_state
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	DELETE FROM adstream.handoff_items i WHERE i.handoff_id = v_id;
	UPDATE adstream.handoffs h SET state = 'confirmed', finished_at = now()
	 WHERE h.direction = 'out' AND h.handoff_id = v_id;
END
$$;
COMMENT ON FUNCTION adstream.confirm_handoff(bigint) IS
	'Records that another node imported this node''s handoff, and deletes its data here';

/*
 * On the exporting node, when the handoff will never be imported (the
 * receiving node failed before importing it, and its copy is deleted): the
 * partitions come back here as they were exported.  Never after an import.
 */
CREATE FUNCTION adstream.cancel_handoff(handoff_id bigint)
RETURNS integer[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h			adstream.handoffs;
	v_id		bigint := $1;
	v_parts		integer[];
BEGIN
	SELECT * INTO h FROM adstream.handoffs k WHERE k.direction = 'out' AND k.handoff_id = v_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'this node exported no handoff %', v_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.handoff_status.';
	END IF;
	IF h.state <> 'exported' THEN
		RAISE EXCEPTION 'handoff % is already %', v_id, h.state
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	DELETE FROM adstream.handoff_in i WHERE i.from_node = h.from_node AND i.handoff_id = v_id;
	INSERT INTO adstream.handoff_in (from_node, handoff_id, item, source, data)
	SELECT * FROM adstream.handoff_data(v_id);
	v_parts := adstream._handoff_apply(h.from_node, v_id, '{}');
	DELETE FROM adstream.handoff_items i WHERE i.handoff_id = v_id;
	UPDATE adstream.handoffs k SET state = 'cancelled', finished_at = now()
	 WHERE k.direction = 'out' AND k.handoff_id = v_id;
	RETURN v_parts;
END
$$;
COMMENT ON FUNCTION adstream.cancel_handoff(bigint) IS
	'Takes the partitions of a handoff this node exported back, when no node imported it (never after an import)';

/* Handoffs on both sides; a copy in handoff_in not yet imported is "copied". */
CREATE VIEW adstream.handoff_status AS
SELECT h.direction, h.from_node, h.handoff_id, h.partitions, h.sources, h.state,
	   h.exported_at, h.imported_at, h.finished_at, h.items
  FROM adstream.handoffs h
UNION ALL
SELECT 'in', i.from_node, i.handoff_id,
	   ARRAY(SELECT jsonb_array_elements_text(i.data->'partitions')::integer),
	   ARRAY(SELECT jsonb_array_elements_text(i.data->'sources')), 'copied',
	   (i.data->>'exported_at')::timestamptz, NULL, NULL, i.data->'items'
  FROM adstream.handoff_in i
 WHERE i.item = 'handoff'
   AND NOT EXISTS (SELECT 1 FROM adstream.handoffs h
					WHERE h.direction = 'in' AND h.from_node = i.from_node AND h.handoff_id = i.handoff_id);
COMMENT ON VIEW adstream.handoff_status IS
	'Partition handoffs: exported (data kept here until confirmed or cancelled), copied (waiting in handoff_in), imported';

REVOKE ALL ON adstream.handoff_status FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream._dedup_import(integer, timestamptz[], bytea[]),
	adstream._metrics_shift(integer, timestamptz, numeric, numeric, numeric),
	adstream.export_partitions(text, text[]), adstream.handoff_data(bigint),
	adstream._handoff_apply(text, bigint, jsonb), adstream.import_partitions(text, bigint, jsonb),
	adstream.confirm_handoff(bigint), adstream.cancel_handoff(bigint) FROM PUBLIC;
-- Watching handoffs is for admins; making them, for superusers (a handoff
-- writes offsets, dedup state and orders).
GRANT SELECT ON adstream.handoff_status TO adstream_admin;

-------------------------------------------------------------------------------
-- Publishing: the transactional outbox and the sinks that publish it
-------------------------------------------------------------------------------

/*
 * One row per change Pinot must see, written in the transaction that makes
 * the change.  It names the changed row; the publisher reads that row's
 * current state when it sends it, under a version drawn from
 * record_version_seq as it reads it (plus the epoch of _version_base, which
 * rises at failovers): a record read later carries a later state and a
 * higher version, so for every key the highest version has the latest
 * state.  Ids would not do: they are taken in the batch, not at its commit,
 * and two sources write one key through different rows.  txid
 * places the row in a publishing window (see _outbox_page).  A queue:
 * vacuumed by row count, without cost delay.
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
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
		autovacuum_vacuum_cost_delay = 0);
CREATE INDEX outbox_txid_idx ON adstream.outbox (txid);
COMMENT ON TABLE adstream.outbox IS
	'Changes to publish, written in the same transaction as the results; pruned once every sink has passed them';
-- Dumped, rows and version sequence: what a sink had not published yet must
-- reach it from the restored copy.  The rows' txids are the original
-- cluster's; adopt_restored re-dates them and versions jump ahead (see
-- "Dump and restore").
SELECT pg_catalog.pg_extension_config_dump('adstream.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.outbox_id_seq', '');
-- Versions keep ids below 2^48 and the epoch above (_version_base).
ALTER TABLE adstream.outbox ALTER COLUMN id SET MAXVALUE 281474976710655;
-- The published versions, drawn in the order records are read (see above);
-- dumped, so that a restored copy goes on above what the original drew.
CREATE SEQUENCE adstream.record_version_seq MAXVALUE 281474976710655;
SELECT pg_catalog.pg_extension_config_dump('adstream.record_version_seq', '');

/*
 * Kafka clusters to publish to.  Each has a durable cursor, updated by every
 * Kafka transaction: fillfactor 50, vacuumed by row count without delay.
 */
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
	created_at			timestamptz NOT NULL DEFAULT now(),
	-- the installation that created or adopted it, as sources.origin
	origin				text
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
		autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE adstream.sinks IS
	'Kafka clusters that receive every result for Pinot, each with its own durable cursor; superusers only (credentials)';
SELECT pg_catalog.pg_extension_config_dump('adstream.sinks', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.sinks_id_seq', '');

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

/*
 * The Pinot key of an outbox row.  No SET clause, so that the planner
 * inlines it into _outbox_page's query; the body is parsed when the
 * function is created, so the caller's search_path cannot change it.
 */
CREATE FUNCTION adstream._record_key(p_kind text, p_ad_id bigint, p_window timestamptz, p_order uuid)
RETURNS text LANGUAGE sql STABLE
RETURN CASE p_kind
	WHEN 'ad_stats' THEN adstream.node_name() || '|' || p_ad_id || '|'
						 || (extract(epoch FROM p_window) * 1000)::bigint
	ELSE p_order::text END;

/*
 * The value of an ad_stats record: what jsonb_build_object('node', ...,
 * 'ad_id', ..., 'campaign_id', ..., 'window_start', <epoch ms>,
 * 'impressions', ..., 'clicks', ..., 'version', ...,
 * 'record_uuid', record_uuid('ad_stats', p_key),
 * 'updated_at', <epoch ms>)::text writes, written in C
 * (src/publish_record.c): the publisher's time per record (issue #12,
 * item 4).  The regress test "publish" compares the two.
 */
CREATE FUNCTION adstream._ad_stats_record(p_key text, p_node text, p_ad_id bigint, p_window timestamptz,
										  p_campaign_id bigint, p_impressions bigint, p_clicks bigint,
										  p_version bigint, p_updated_at timestamptz)
RETURNS text LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'adstream_ad_stats_record';
COMMENT ON FUNCTION adstream._ad_stats_record(text, text, bigint, timestamptz, bigint, bigint, bigint, bigint, timestamptz) IS
	'Internal: the JSON value of a published ad_stats record, as jsonb_build_object writes it, with the record_uuid of its key';

/*
 * The next page of the sink's current window: outbox rows committed after
 * done_snapshot and by target_snapshot (taken now if there is no window
 * open), after last_id, with the current value of the row they name.
 * An ad's minute is the sum over the sources that counted it; one whose
 * every count was forgotten (drop_source) is sent with zeros and no
 * campaign, so that Pinot's record is corrected.  Rows whose partition is
 * gone (dropped by retention) are skipped.  A key named by several rows of
 * the page is sent once, by its last row (the others have a null value and
 * send nothing): the value is read now, so it holds every change they name,
 * and its version is drawn now, above every version sent before.  Keys are
 * computed in the query (_record_key is inlined), and an ad_stats value by
 * one C function (_ad_stats_record), not by SQL functions called per row.
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
	WITH page AS (
		SELECT o.id, o.kind, o.ad_id, o.window_start, o.order_id
		  FROM adstream.outbox o
		 WHERE o.txid >= pg_snapshot_xmin(s.done_snapshot)
		   AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
		   AND pg_visible_in_snapshot(o.txid, v_target)
		   AND o.id > s.last_id
		 ORDER BY o.id
		 LIMIT p_limit),
	o AS (
		-- A key's last row in the page sends its current value, which holds
		-- every change its other rows name (they are in this snapshot): those
		-- send nothing.
		SELECT p.*, p.id = max(p.id) OVER (PARTITION BY p.kind, p.ad_id, p.window_start, p.order_id) AS sends,
			   adstream._record_key(p.kind, p.ad_id, p.window_start, p.order_id) AS rkey
		  FROM page p)
	SELECT o.id,
		   CASE o.kind WHEN 'ad_stats' THEN s.topic_ad_stats ELSE s.topic_orders END,
		   o.rkey,
		   CASE WHEN NOT o.sends THEN NULL
		   WHEN o.kind = 'ad_stats' THEN
			CASE WHEN m.n > 0
					  OR EXISTS (SELECT 1 FROM pg_inherits i
								  WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
									AND adstream._partition_upper(i.inhrelid) > o.window_start
									AND adstream._partition_upper(i.inhrelid) <= o.window_start + interval '24 hours')
			THEN adstream._ad_stats_record(o.rkey, v_node, o.ad_id, o.window_start, m.campaign_id,
										   coalesce(m.impressions, 0), coalesce(m.clicks, 0),
										   v_base + nextval('adstream.record_version_seq'),
										   coalesce(m.updated_at, now())) END
		   ELSE
			(SELECT jsonb_build_object(
				'order_id', a.order_id, 'node', v_node, 'ad_id', a.ad_id,
				'campaign_id', a.campaign_id, 'click_event_id', a.click_event_id,
				'click_ts', (extract(epoch FROM a.click_ts) * 1000)::bigint,
				'order_ts', (extract(epoch FROM a.order_ts) * 1000)::bigint,
				'amount', a.amount::text, 'currency', a.currency, 'attribution', a.attribution,
				'record_uuid', a.record_uuid, 'version', v_base + nextval('adstream.record_version_seq'),
				'attributed_at', (extract(epoch FROM a.attributed_at) * 1000)::bigint)::text
			   FROM adstream.attributed_orders a WHERE a.order_id = o.order_id)
		   END
	  FROM o
	  -- an ad's minute: the sum over the sources and stripes that counted it
	  LEFT JOIN LATERAL (
		SELECT count(*) AS n, max(x.campaign_id) AS campaign_id, sum(x.impressions)::bigint AS impressions,
			   sum(x.clicks)::bigint AS clicks, max(x.updated_at) AS updated_at
		  FROM adstream.ad_stats_minute x
		 WHERE o.sends AND o.kind = 'ad_stats' AND x.ad_id = o.ad_id AND x.window_start = o.window_start) m ON true
	 ORDER BY o.id;
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

/*
 * Outbox rows every sink has published (or all committed ones, without
 * sinks).  A sink held after a restore has published nothing here yet (its
 * cursor is the original cluster's): it keeps every row not superseded.
 *
 * #13 cross-region: and rows of an (ad, minute) superseded by a later row
 * of the same key, where every sink has either passed the earlier row or
 * not read the later one, nor can have read it before the earlier one
 * committed: the later row lies beyond the sink's window, or in its open
 * window with the earlier one (a window's rows committed before any of its
 * pages was read).  A sink reads a key's current value when it sends it,
 * under a version drawn then, so it sends all the earlier row would have
 * (both committed before this prune began) and more.  The
 * sinks' cursors are held still (FOR SHARE) while they are looked at: a
 * publisher opens a window or advances only after.  (A later id is not a
 * later commit: two sources write one key through different rows.)  So a
 * sink that is down for hours (its region's Kafka) keeps about one row per
 * key it has not published, not one per change.  Rows locked by another
 * prune are skipped, so that two never wait for each other.
 */
CREATE FUNCTION adstream.prune_outbox()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_horizon	xid8;
	v_n			bigint;
	v_superseded bigint;
BEGIN
	SELECT coalesce(min(CASE WHEN k.origin = adstream._origin() THEN pg_snapshot_xmin(k.done_snapshot)
							 ELSE '3'::xid8 END),
					pg_snapshot_xmin(pg_current_snapshot()))
	  INTO v_horizon FROM adstream.sinks k;
	DELETE FROM adstream.outbox WHERE txid < v_horizon;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	PERFORM 1 FROM adstream.sinks ORDER BY id FOR SHARE;
	DELETE FROM adstream.outbox d
	 WHERE d.id IN (SELECT o.id
					  FROM adstream.outbox o
					  JOIN (SELECT l.ad_id, l.window_start, max(l.id) AS keep
							  FROM adstream.outbox l
							 WHERE l.kind = 'ad_stats' AND l.txid >= v_horizon
							 GROUP BY l.ad_id, l.window_start HAVING count(*) > 1) k
						ON o.ad_id = k.ad_id AND o.window_start = k.window_start AND o.id < k.keep
					  JOIN adstream.outbox kr ON kr.id = k.keep
					 WHERE o.kind = 'ad_stats' AND o.txid >= v_horizon
					   -- no sink of this installation still needs o and has passed the
					   -- later row, or has it in its open window while o comes later
					   AND NOT EXISTS (
						SELECT 1 FROM adstream.sinks s
						 CROSS JOIN LATERAL (SELECT
							pg_visible_in_snapshot(o.txid, s.done_snapshot) AS o_done,
							coalesce(pg_visible_in_snapshot(o.txid, s.target_snapshot), false) AS o_win,
							pg_visible_in_snapshot(kr.txid, s.done_snapshot) AS k_done,
							coalesce(pg_visible_in_snapshot(kr.txid, s.target_snapshot), false) AS k_win) v
						 WHERE s.origin = adstream._origin()
						   AND NOT (v.o_done OR (v.o_win AND o.id <= s.last_id))
						   AND (v.k_done OR (v.k_win AND kr.id <= s.last_id) OR (v.k_win AND NOT v.o_win)))
					   FOR UPDATE OF o SKIP LOCKED);
	GET DIAGNOSTICS v_superseded = ROW_COUNT;
	RETURN v_n + v_superseded;
END
$$;
COMMENT ON FUNCTION adstream.prune_outbox() IS
	'Deletes outbox rows that every sink has published, and rows superseded by a later change of the same key; returns how many';

-- The sink management API runs as the extension owner, like that of sources.

/*
 * Everything create_sink and alter_sink check about a sink, in one place:
 * its name, brokers and options as they would be stored, and the whole
 * librdkafka configuration of its transactional producer (built into a
 * client).  p_stored as in _check_source.  Returns the columns to store.
 */
CREATE FUNCTION adstream._check_sink(p_name text, p_brokers text, p_options jsonb, p_stored jsonb DEFAULT '{}',
	OUT topic_ad_stats text, OUT topic_orders text, OUT kafka_options jsonb)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_key		text;
	v_val		jsonb;
	v_text		text;
	v_err		text;
BEGIN
	PERFORM adstream._check_name('sink', p_name);
	topic_ad_stats := 'adstream.ad_stats';
	topic_orders := 'adstream.attributed_orders';
	kafka_options := '{}';
	IF p_brokers IS NULL OR btrim(p_brokers) = '' THEN
		RAISE EXCEPTION 'brokers must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give a bootstrap list such as ''kafka1:9092,kafka2:9092''.';
	END IF;
	IF p_options IS NULL OR jsonb_typeof(p_options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass for example ''{"topic_ad_stats": "ads.stats", "security.protocol": "SASL_SSL"}''.';
	END IF;

	FOR v_key, v_val IN SELECT * FROM jsonb_each(p_options) LOOP
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
			IF v_key = 'topic_ad_stats' THEN topic_ad_stats := v_text; ELSE topic_orders := v_text; END IF;
			CONTINUE;
		END IF;
		IF v_key IN ('bootstrap.servers', 'metadata.broker.list', 'transactional.id',
					 'enable.idempotence', 'acks', 'transaction.timeout.ms', 'partitioner',
					 'client.id', 'linger.ms') THEN
			RAISE EXCEPTION 'librdkafka property "%" is managed by adstream', v_key
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Publishing uses an idempotent, transactional producer with transactional.id adstream.<node>.<database>.<sink>.';
		END IF;
		IF adstream._is_privileged_property(v_key) AND (p_stored->>v_key) IS DISTINCT FROM v_text
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
		kafka_options := kafka_options || jsonb_build_object(v_key, v_text);
	END LOOP;
	PERFORM adstream._kafka_config_check('sink', p_brokers, kafka_options);
END
$$;


CREATE FUNCTION adstream.create_sink(name text, brokers text, options jsonb DEFAULT '{}')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v			record;
	v_snap		pg_snapshot;
	v_id		integer;
BEGIN
	PERFORM adstream._check_name('sink', create_sink.name);
	IF EXISTS (SELECT 1 FROM adstream.sinks s WHERE s.name = create_sink.name) THEN
		RAISE EXCEPTION 'sink "%" already exists', create_sink.name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Change it with adstream.alter_sink(), drop it first with adstream.drop_sink(), or choose another name.';
	END IF;
	v := adstream._check_sink(create_sink.name, create_sink.brokers, create_sink.options);

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
	VALUES (create_sink.name, create_sink.brokers, v.topic_ad_stats, v.topic_orders, v.kafka_options, v_snap,
			adstream._origin())
	RETURNING id INTO v_id;
	INSERT INTO adstream.outbox (kind, ad_id, window_start)
	SELECT DISTINCT 'ad_stats', m.ad_id, m.window_start FROM adstream.ad_stats_minute m ORDER BY 2, 3;	-- one per (ad, minute)
	INSERT INTO adstream.outbox (kind, order_id)
	SELECT 'attributed_orders', a.order_id FROM adstream.attributed_orders a;
	PERFORM adstream._wake_launcher();
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION adstream.create_sink(text, text, jsonb) IS
	'Registers a Kafka cluster that receives every result for Pinot, starting with the current state; returns the new sink''s id';


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

/*
 * Changes a sink without forgetting its cursor (issue #14): "brokers" and
 * librdkafka properties (a JSON null removes one), checked exactly as
 * create_sink checks them (_check_sink).  Its topics cannot change, nor its
 * cluster (as alter_source): what it published is in those topics of that
 * cluster, and a new sink there is sent the whole current state.  The
 * publisher restarts with the new settings; it stops between Kafka
 * transactions, and what it sent but had not recorded is sent again with
 * the same versions (docs/pinot.md).  Returns whether something changed.
 */
CREATE FUNCTION adstream.alter_sink(name text, options jsonb)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k			adstream.sinks;
	v			record;
	v_brokers	text;
	v_merged	jsonb;
	v_old_id	text;
	v_new_id	text;
BEGIN
	PERFORM adstream._sink_must_exist(alter_sink.name);
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the changes, for example ''{"sasl.password": "..."}''; null removes a property.';
	END IF;
	IF options ?| ARRAY['topic_ad_stats', 'topic_orders', 'name'] THEN
		RAISE EXCEPTION 'the topics and the name of a sink cannot be changed by alter_sink'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'What the sink published is in its topics; a new topic must first receive the whole current state.',
				  HINT = 'Create another sink for other topics (it is sent the current state); rename with adstream.rename_sink().';
	END IF;
	SELECT * INTO k FROM adstream.sinks s WHERE s.name = alter_sink.name FOR UPDATE;

	v_brokers := CASE WHEN options ? 'brokers' THEN options->>'brokers' ELSE k.brokers END;
	v_merged := jsonb_strip_nulls(jsonb_build_object('topic_ad_stats', k.topic_ad_stats, 'topic_orders', k.topic_orders)
								  || k.kafka_options || (options - 'brokers'));
	v := adstream._check_sink(k.name, v_brokers, v_merged, k.kafka_options);

	IF NOT adstream._broker_set(v_brokers) && adstream._broker_set(k.brokers) THEN
		v_old_id := (adstream._kafka_config_check('sink', k.brokers, k.kafka_options, NULL, 2000)).cluster_id;
		IF v_old_id IS NOT NULL THEN
			v_new_id := (adstream._kafka_config_check('sink', v_brokers, v.kafka_options, NULL, 2000)).cluster_id;
		END IF;
		IF v_old_id IS NULL OR v_new_id IS NULL OR v_old_id <> v_new_id THEN
			RAISE EXCEPTION 'brokers "%" are not known to be the Kafka cluster sink "%" publishes to', v_brokers, k.name
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The sink''s cursor says what its topics of cluster "%s" hold; another cluster holds none of it. The new list has no broker address in common with the old one, and %s.',
									  k.brokers,
									  CASE WHEN v_old_id IS NULL OR v_new_id IS NULL
										   THEN 'the brokers did not both say which cluster they are'
										   ELSE format('the cluster ids differ (%s, %s)', v_old_id, v_new_id) END),
					  HINT = 'Keep an address of the current list in the new one, or create a new sink for the other cluster (it is sent the whole current state).';
		END IF;
	END IF;

	IF v_brokers = k.brokers AND v.kafka_options = k.kafka_options THEN
		RETURN false;
	END IF;
	UPDATE adstream.sinks s
	   SET brokers = v_brokers, kafka_options = v.kafka_options, generation = adstream._new_generation()
	 WHERE s.id = k.id;
	PERFORM adstream._wake_launcher();
	RETURN true;
END
$$;
COMMENT ON FUNCTION adstream.alter_sink(text, jsonb) IS
	'Changes the brokers or librdkafka properties of a sink, checked as create_sink checks them, keeping its cursor; its publisher restarts with them within about a second';

/*
 * A new name for a sink; its cursor and counters stay.  The publisher's
 * transactional.id contains the name, so the new publisher does not fence
 * the old one in Kafka: it starts only after the old one has exited (the
 * sink's lock, publisher.c), and a Kafka transaction the old one left open
 * is aborted by the broker after transaction.timeout.ms (10 s).
 */
CREATE FUNCTION adstream.rename_sink(name text, new_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM adstream._sink_must_exist(rename_sink.name);
	PERFORM adstream._check_name('sink', new_name);
	IF EXISTS (SELECT 1 FROM adstream.sinks s WHERE s.name = new_name) THEN
		RAISE EXCEPTION 'sink "%" already exists', new_name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Choose another name.';
	END IF;
	UPDATE adstream.sinks s SET name = new_name, generation = adstream._new_generation()
	 WHERE s.name = rename_sink.name;
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.rename_sink(text, text) IS
	'Renames a sink; its cursor and counters stay with it';

/* What the publisher workers report from shared memory. */
CREATE FUNCTION adstream.publisher_status(
	OUT sink_id integer, OUT pid integer, OUT state text, OUT started_at timestamptz,
	OUT last_commit_at timestamptz, OUT last_error text, OUT last_error_at timestamptz, OUT restarts integer,
	OUT connected boolean, OUT connected_since timestamptz, OUT errors_total bigint)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE
ROWS 4		-- as worker_status
AS 'MODULE_PATHNAME', 'adstream_publisher_status';
COMMENT ON FUNCTION adstream.publisher_status() IS
	'One row per running or restarting publisher worker, from shared memory: state, current error (cleared on recovery), restarts, whether the broker answers and since when, errors since the slot was assigned';

-------------------------------------------------------------------------------
-- Dump and restore: sources and sinks that came from another installation
-- wait until they are adopted
-------------------------------------------------------------------------------

/*
 * pg_restore creates the extension and then loads one table after another,
 * each in its own transaction: the launcher would start a source's workers
 * as soon as its row arrived, before its offsets, and they would count the
 * topic again from 'earliest'.  A restored copy running beside the original
 * would consume the same topics twice.  So a source or sink runs only in the
 * installation of its origin (adstream._origin(), recorded by create_source
 * and create_sink), and one restored from a dump is held (source_status,
 * sink_status) until this is called, once the restore is complete and the
 * original no longer consumes: with no name for every held source and sink,
 * with a name for the source and the sink of that name.  Returns how many
 * it adopted.
 *
 * Publishing continues from the dumped outbox.  Its rows carry the original
 * cluster's transaction ids, which mean nothing here, and so do the restored
 * cursors.  Adopting the first sink re-dates every row to transaction 3,
 * before any snapshot taken here, and each adopted sink starts from the
 * cursor '3:3:', which has published nothing: it sends every row still in
 * the outbox.  (Until every restored sink is adopted, no row is pruned, and
 * no sink can be created.)  A sink restored from a dump older than 0.5,
 * which had no outbox, is sent the whole current state, as a new sink is.
 * Sending a row again is harmless: the value sent is always the current
 * one, and Pinot keeps the highest version of a key.  Versions carry an
 * epoch, the timeline plus adstream.node.version_epoch (_version_base), and
 * this cluster's timelines start again at 1: the adoption raises
 * version_epoch past the original's epoch as the dump recorded it
 * (published_timeline), with room for 100 failovers of the original after
 * the dump, so that this installation's records win over anything the
 * original publishes until it stops.  A dump without adstream.node (older
 * than 0.6) published versions below any epoch's.
 */
CREATE FUNCTION adstream.adopt_restored(name text DEFAULT NULL)
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
COMMENT ON FUNCTION adstream.adopt_restored(text) IS
	'Lets the workers of sources and sinks restored from a dump of another installation run here (all, or those of the given name); call it once the restore is complete and the original has stopped; returns how many';

-------------------------------------------------------------------------------
-- Maintenance: partitions ahead, retention, rollups (plain functions, and
-- pg_cron jobs through schedule_maintenance)
-------------------------------------------------------------------------------

/*
 * Creates the partitions that hold the given times.  Creators serialise on
 * the lock ATTACH takes anyway (inserts are not blocked); unlike an advisory
 * lock, taking it also processes catalog invalidations, so two workers never
 * both create the same partition.
 */
CREATE FUNCTION adstream.ensure_partitions(p_table text, p_times timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- bounds v_lo + v_grain: a day partition is 24 hours
AS $$
DECLARE
	v_grain		interval;
	v_fill		integer;
	v_options	text[];
	v_lo		timestamptz;
	v_name		text;
	v_created	integer := 0;
	v_dropped	timestamptz;
BEGIN
	SELECT grain, fillfactor, storage_options, dropped_before INTO v_grain, v_fill, v_options, v_dropped
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

	-- Serialise creators with the lock ATTACH takes anyway (inserts are not
	-- blocked).  Unlike an advisory lock, taking it also processes catalog
	-- invalidations, so the check below sees a partition that the previous
	-- holder created and committed.
	EXECUTE format('LOCK TABLE adstream.%I IN SHARE UPDATE EXCLUSIVE MODE', p_table);

	FOR v_lo IN
		SELECT DISTINCT date_bin(v_grain, t, timestamptz '1970-01-01 00:00:00+00')
		  FROM unnest(p_times) AS t WHERE t IS NOT NULL
	LOOP
		v_name := p_table || '_p' || to_char(v_lo AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
		CONTINUE WHEN to_regclass(format('adstream.%I', v_name)) IS NOT NULL;
		-- A day of minutes that retention dropped is never created again: its
		-- rollups are all that is left of it, and refresh_rollups takes a day
		-- partition that exists for the whole of its minutes.  (Batches judge
		-- its events too_late; one that read the mark before the drop fails
		-- here and is read again.)
		IF p_table = 'ad_stats_minute' AND v_lo < v_dropped THEN
			RAISE EXCEPTION 'the minutes of % were dropped by retention', v_lo::date
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('adstream.ad_stats_minute holds no minute before %s any more; the rollups keep what was counted.', v_dropped),
					  HINT = 'A worker reads the batch again and judges its events of that day too_late.';
		END IF;
		-- CREATE + ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so
		-- readers and other workers' inserts are not blocked.
		EXECUTE format('CREATE TABLE adstream.%I (LIKE adstream.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (%s)',
					   v_name, p_table, array_to_string(ARRAY['fillfactor=' || v_fill] || v_options, ', '));
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
 * Upper bound of a range partition, from its bound expression: printed and
 * read back in UTC, so that no zone abbreviation can be misread.
 */
CREATE FUNCTION adstream._partition_upper(p_rel regclass)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
RETURN (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
		  FROM pg_class c WHERE c.oid = p_rel);

/* Detach and drop the partitions of p_table wholly before p_cutoff. */
CREATE FUNCTION adstream._drop_partitions_before(p_table text, p_cutoff timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_rel		regclass;
	v_dropped	integer := 0;
BEGIN
	IF p_cutoff IS NULL THEN
		RETURN 0;
	END IF;
	FOR v_rel IN
		SELECT i.inhrelid::regclass FROM pg_inherits i
		 WHERE i.inhparent = format('adstream.%I', p_table)::regclass
		   AND adstream._partition_upper(i.inhrelid) <= p_cutoff
	LOOP
		UPDATE adstream.partitioned_tables
		   SET dropped_before = greatest(dropped_before, adstream._partition_upper(v_rel))
		 WHERE name = p_table;
		EXECUTE format('ALTER TABLE adstream.%I DETACH PARTITION %s', p_table, v_rel);
		EXECUTE format('DROP TABLE %s', v_rel);
		v_dropped := v_dropped + 1;
	END LOOP;
	RETURN v_dropped;
END
$$;

/*
 * Deletes dead letters received longer than adstream.rejected_retention ago,
 * in rounds of p_batch rows so that no transaction grows large.  Dead letters
 * stay bounded by rate x retention x (row + first 8 KiB of the message).
 */
CREATE FUNCTION adstream.expire_rejected_events(p_batch integer DEFAULT 50000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- the retention's days are 24 hours
AS $$
DECLARE
	v_before	timestamptz := now() - current_setting('adstream.rejected_retention')::interval;
	v_n			bigint;
	v_total		bigint := 0;
BEGIN
	IF p_batch < 1 THEN
		RAISE EXCEPTION 'p_batch must be positive'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the number of rows to delete per round.';
	END IF;
	LOOP
		DELETE FROM adstream.rejected_events r
		 WHERE r.ctid = ANY (ARRAY(SELECT ctid FROM adstream.rejected_events
									WHERE received_at < v_before LIMIT p_batch));
		GET DIAGNOSTICS v_n = ROW_COUNT;
		v_total := v_total + v_n;
		EXIT WHEN v_n < p_batch;
	END LOOP;
	RETURN v_total;
END
$$;
COMMENT ON FUNCTION adstream.expire_rejected_events(integer) IS
	'Deletes dead letters older than adstream.rejected_retention; returns how many';

/*
 * Drop what has expired: dedup ids behind watermark - horizon; ad events
 * behind the ad-events watermark - (attribution window + dedup horizon),
 * but never what a waiting order still needs; minute aggregates older than
 * adstream.minute_retention (their rollups are refreshed first and kept);
 * dead letters older than adstream.rejected_retention; status history older
 * than adstream.status_history_retention.
 */
CREATE FUNCTION adstream.drop_expired_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
SET timezone = 'UTC'		-- windows, horizon and retention: their days are 24 hours
AS $$
DECLARE
	v_window	interval := greatest(current_setting('adstream.attribution_window')::interval,
									 current_setting('adstream.view_through_window')::interval);
	v_events	timestamptz;
	v_dropped	integer;
BEGIN
	-- Only when there is something to give up: expiry's lock stalls every worker.
	v_dropped := CASE WHEN adstream._dedup_expiry_due() THEN adstream.expire_dedup_state() ELSE 0 END;

	v_events := least(adstream.ad_events_watermark(),
					  (SELECT min(ts) FROM adstream.orders WHERE status = 'waiting'))
				- v_window - current_setting('adstream.dedup_horizon')::interval;
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_events', v_events);

	PERFORM adstream.refresh_rollups();
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_stats_minute',
		now() - current_setting('adstream.minute_retention')::interval);
	PERFORM adstream.expire_rejected_events();
	PERFORM adstream.expire_status_history();
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.drop_expired_partitions() IS
	'Drops expired partitions of dedup_log, ad_events and ad_stats_minute (returns how many), dead letters older than adstream.rejected_retention and status history older than adstream.status_history_retention';

/* Partitions for the next p_ahead of wall-clock time, so workers rarely create any. */
CREATE FUNCTION adstream.create_partitions_ahead(p_ahead interval DEFAULT '1 day')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- now() + p_ahead: a day is 24 hours
AS $$
DECLARE
	v_times		timestamptz[];
	v_created	integer := 0;
	v_table		text;
BEGIN
	SELECT array_agg(t) INTO v_times
	  FROM generate_series(now(), now() + p_ahead, interval '1 hour') t;
	FOR v_table IN SELECT name FROM adstream.partitioned_tables ORDER BY name LOOP
		v_created := v_created + adstream.ensure_partitions(v_table, v_times);
	END LOOP;
	RETURN v_created;
END
$$;
COMMENT ON FUNCTION adstream.create_partitions_ahead(interval) IS
	'Creates the partitions of every adstream table for the coming period; returns how many';

CREATE FUNCTION adstream.schedule_maintenance()
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'undefined_object',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name, and run CREATE EXTENSION pg_cron; or call the maintenance functions yourself.';
	END IF;
	RETURN QUERY EXECUTE $q$
		SELECT cron.schedule_in_database(j.name, j.schedule, j.command, current_database())
		  FROM (VALUES ('adstream_partitions', '*/10 * * * *', 'SELECT adstream.create_partitions_ahead()'),
					   ('adstream_retention', '*/5 * * * *', 'SELECT adstream.drop_expired_partitions()'),
					   ('adstream_rollups', '* * * * *', 'SELECT adstream.refresh_rollups()')) AS j(name, schedule, command)$q$;
END
$$;
COMMENT ON FUNCTION adstream.schedule_maintenance() IS
	'Installs (or updates) the pg_cron jobs that create partitions ahead, drop expired ones and refresh rollups; returns their job ids';

CREATE FUNCTION adstream.unschedule_maintenance()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_n	integer;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RETURN 0;
	END IF;
	EXECUTE $q$SELECT count(cron.unschedule(jobid))::integer FROM cron.job
				WHERE jobname IN ('adstream_partitions', 'adstream_retention', 'adstream_rollups')
				  AND database = current_database()$q$ INTO v_n;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION adstream.unschedule_maintenance() IS
	'Removes the pg_cron jobs installed by schedule_maintenance; returns how many';

-------------------------------------------------------------------------------
-- Automatic maintenance (issue #15): the jobs run by themselves, in pg_cron
-- where it is installed in this database, in the launcher otherwise
-------------------------------------------------------------------------------

/*
 * The maintenance jobs, one list for the launcher, pg_cron and
 * maintenance_status: what each runs and how often (its setting), and the
 * pg_cron schedule nearest to that interval (pg_cron before 1.5 runs a job at
 * most once a minute).  adstream_dedup_expiry has no interval: the launcher
 * runs it whenever the dedup index is 80% full (adstream_retention expires
 * dedup state on its own schedule too).
 */
CREATE FUNCTION adstream._maintenance_jobs(
	OUT job text, OUT command text, OUT every interval, OUT cron_schedule text)
RETURNS SETOF record LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seconds	boolean := false;	-- pg_cron 1.5 takes '[1-59] seconds'
	v_s			bigint;
BEGIN
	IF to_regclass('cron.job') IS NOT NULL THEN
		SELECT coalesce((v[1]::int, v[2]::int) >= (1, 5), false) INTO v_seconds
		  FROM pg_extension e, regexp_match(e.extversion, '^(\d+)\.(\d+)') AS v
		 WHERE e.extname = 'pg_cron';
	END IF;
	FOR job, command, every IN
		VALUES ('adstream_partitions', 'adstream.create_partitions_ahead()',
				coalesce(current_setting('adstream.partitions_interval', true), '10min')::interval),
			   ('adstream_retention', 'adstream.drop_expired_partitions()',
				coalesce(current_setting('adstream.retention_interval', true), '5min')::interval),
			   ('adstream_rollups', 'adstream.refresh_rollups()',
				coalesce(current_setting('adstream.rollups_interval', true), '1min')::interval),
			   ('adstream_dedup_expiry', 'adstream.expire_dedup_state()', NULL)
	LOOP
		v_s := extract(epoch FROM every)::bigint;
		cron_schedule := CASE
			WHEN v_s IS NULL THEN NULL
			WHEN v_s < 60 AND v_seconds THEN format('%s seconds', greatest(v_s, 1))
			WHEN v_s < 120 THEN '* * * * *'
			WHEN v_s < 3600 THEN format('*/%s * * * *', round(v_s / 60.0))
			WHEN v_s < 86400 THEN format('0 */%s * * *', round(v_s / 3600.0))
			ELSE '0 0 * * *' END;
		RETURN NEXT;
	END LOOP;
END
$$;

/*
 * The last run of each job through adstream.run_maintenance (by the
 * launcher, by the pg_cron jobs adstream schedules, or by hand), and the last
 * error the launcher saw.  pg_cron's own record of its runs is
 * cron.job_run_details; maintenance_status shows the newer of the two.  Not
 * dumped: it describes this installation's runs, and a restored copy starts
 * its own.
 */
CREATE TABLE adstream.maintenance_runs (
	job				text PRIMARY KEY,
	last_start		timestamptz NOT NULL,
	last_duration	interval NOT NULL,
	last_ok			timestamptz,	-- start of the last run that succeeded
	last_result		text,			-- what it did
	last_error		text,
	last_error_at	timestamptz
);
COMMENT ON TABLE adstream.maintenance_runs IS
	'The last run of each maintenance job through adstream.run_maintenance, and the last error the launcher recorded (see adstream.maintenance_status)';
REVOKE ALL ON adstream.maintenance_runs FROM PUBLIC;

/*
 * Whether maintenance may run here: a source of this installation exists,
 * and nothing restored from a dump waits for adstream.adopt_restored().
 * pg_restore creates the extension and then loads one table after another:
 * partitions made ahead, or expiry, while it runs would collide with the
 * restored partitions or give up state before its rows arrive.
 */
CREATE FUNCTION adstream._maintenance_open()
RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN EXISTS (SELECT 1 FROM adstream.sources WHERE origin = adstream._origin())
	   AND NOT EXISTS (SELECT 1 FROM adstream.sources WHERE origin IS DISTINCT FROM adstream._origin())
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks WHERE origin IS DISTINCT FROM adstream._origin());
END
$$;

/*
 * Whether pg_cron runs jobs for this database: preloaded, with its schema
 * here (it can only be created in cron.database_name).
 */
CREATE FUNCTION adstream._cron_ready()
RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN to_regclass('cron.job') IS NOT NULL
	   AND current_setting('cron.database_name', true) = current_database()
	   AND EXISTS (SELECT 1 FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) AS l
				   WHERE btrim(l, ' "') ~ '(^|/)pg_cron$');
END
$$;

/*
 * Runs one maintenance job and records it in maintenance_runs, in the
 * caller's transaction.  What the launcher and adstream's pg_cron jobs call;
 * call it from your own scheduler with adstream.auto_maintenance off.  Does
 * nothing while maintenance may not run (see _maintenance_open).
 */
CREATE FUNCTION adstream.run_maintenance(p_job text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_start		timestamptz := clock_timestamp();
	v_before	bigint;
	v_result	text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM adstream._maintenance_jobs() j WHERE j.job = p_job) THEN
		RAISE EXCEPTION 'maintenance job "%" does not exist', p_job
			USING ERRCODE = 'undefined_object',
				  HINT = 'The jobs are listed in adstream.maintenance_status.';
	END IF;
	IF NOT adstream._maintenance_open() THEN
		RETURN 'skipped: no source of this installation, or a restored one waits for adstream.adopt_restored()';
	END IF;
	CASE p_job
		WHEN 'adstream_partitions' THEN
			v_result := format('%s partitions created', adstream.create_partitions_ahead());
		WHEN 'adstream_retention' THEN
			v_result := format('%s partitions dropped', adstream.drop_expired_partitions());
		WHEN 'adstream_rollups' THEN
			v_result := format('%s minutes rolled up', adstream.refresh_rollups());
		WHEN 'adstream_dedup_expiry' THEN
			SELECT s.entries INTO v_before FROM adstream.dedup_index_status() s;
			v_result := format('%s partitions dropped', adstream.expire_dedup_state());
			v_result := format('%s; the dedup index holds %s event ids (%s before)', v_result,
							   (SELECT s.entries FROM adstream.dedup_index_status() s), v_before);
	END CASE;
	INSERT INTO adstream.maintenance_runs AS r (job, last_start, last_duration, last_ok, last_result)
	VALUES (p_job, v_start, clock_timestamp() - v_start, v_start, v_result)
	ON CONFLICT (job) DO UPDATE
	   SET last_start = excluded.last_start, last_duration = excluded.last_duration,
		   last_ok = excluded.last_ok, last_result = excluded.last_result;
	RETURN v_result;
END
$$;
COMMENT ON FUNCTION adstream.run_maintenance(text) IS
	'Runs a maintenance job (adstream_partitions, adstream_retention, adstream_rollups or adstream_dedup_expiry) and records it in adstream.maintenance_status; returns what it did';

/* The launcher records a job that failed, in a transaction of its own. */
CREATE FUNCTION adstream._maintenance_failed(p_job text, p_start timestamptz, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO adstream.maintenance_runs AS r (job, last_start, last_duration, last_error, last_error_at)
	VALUES (p_job, p_start, clock_timestamp() - p_start, p_error, clock_timestamp())
	ON CONFLICT (job) DO UPDATE
	   SET last_start = excluded.last_start, last_duration = excluded.last_duration,
		   last_error = excluded.last_error, last_error_at = excluded.last_error_at;
END
$$;

/*
 * What the launcher asks at most once a second: the jobs it must run itself,
 * each with the milliseconds until it is due (0: now).  On the way it keeps
 * the pg_cron jobs in step with adstream.auto_maintenance and the intervals:
 * where pg_cron is ready, each job is scheduled there (as the launcher's
 * role, which runs it) unless another role already has an active job of that
 * name here (schedule_maintenance()); a job whose schedule, command, node
 * (cron.host and the port are copied into cron.job when it is scheduled) or
 * state differs is scheduled anew.  With auto_maintenance off, the jobs
 * adstream scheduled itself are removed, and nothing is returned.  Dedup
 * expiry is due while the index is 80% full: 2 s after its last run if a
 * batch has committed since (the watermarks may have moved), 10 s otherwise.
 */
CREATE FUNCTION adstream._maintenance_plan(OUT job text, OUT due_in_ms bigint)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron		boolean := adstream._cron_ready();
	v_job		record;
	v_command	text;
	v_theirs	boolean;
	v_jobid		bigint;
	v_same		boolean;
	v_last		timestamptz;
	v_entries	bigint;
	v_capacity	bigint;
BEGIN
	IF NOT coalesce(current_setting('adstream.auto_maintenance', true), 'on')::boolean THEN
		IF v_cron THEN
			EXECUTE $q$SELECT count(cron.unschedule(jobid)) FROM cron.job
						WHERE database = current_database() AND username = current_user
						  AND command LIKE 'SELECT adstream.run_maintenance(%'$q$;
		END IF;
		RETURN;
	END IF;
	IF NOT adstream._maintenance_open() THEN
		RETURN;
	END IF;

	FOR v_job IN SELECT * FROM adstream._maintenance_jobs() j WHERE j.every IS NOT NULL LOOP
		job := v_job.job;
		IF v_cron THEN
			v_command := format('SELECT adstream.run_maintenance(%L)', v_job.job);
			EXECUTE $q$SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND database = current_database()
											AND active AND username <> current_user)$q$
			   INTO v_theirs USING v_job.job;
			CONTINUE WHEN v_theirs;
			EXECUTE $q$SELECT jobid, schedule = $2 AND command = $3 AND database = current_database() AND active
								AND (coalesce(current_setting('cron.use_background_workers', true), 'off') = 'on'
									 OR (nodename = current_setting('cron.host', true)
										 AND nodeport = current_setting('port')::int))
						 FROM cron.job WHERE jobname = $1 AND username = current_user$q$
			   INTO v_jobid, v_same USING v_job.job, v_job.cron_schedule, v_command;
			IF v_jobid IS NOT NULL AND NOT v_same THEN
				EXECUTE 'SELECT cron.unschedule($1)' USING v_jobid;
			END IF;
			IF v_jobid IS NULL OR NOT v_same THEN
				EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, current_database())'
				   USING v_job.job, v_job.cron_schedule, v_command;
			END IF;
			CONTINUE;
		END IF;
		SELECT r.last_start INTO v_last FROM adstream.maintenance_runs r WHERE r.job = v_job.job;
		due_in_ms := CASE WHEN v_last IS NULL THEN 0
						  ELSE greatest(ceil(extract(epoch FROM v_last + v_job.every - now()) * 1000), 0) END;
		RETURN NEXT;
	END LOOP;

	SELECT s.entries, s.capacity INTO v_entries, v_capacity FROM adstream.dedup_index_status() s;
	IF v_entries >= 0.8 * v_capacity THEN
		job := 'adstream_dedup_expiry';
		SELECT r.last_start INTO v_last FROM adstream.maintenance_runs r WHERE r.job = 'adstream_dedup_expiry';
		due_in_ms := CASE WHEN v_last IS NULL THEN 0
						  ELSE greatest(ceil(extract(epoch FROM v_last - now()
							  + CASE WHEN EXISTS (SELECT 1 FROM adstream.offsets o WHERE o.updated_at > v_last)
									 THEN interval '2 s' ELSE interval '10 s' END) * 1000), 0) END;
		RETURN NEXT;
	END IF;
END
$$;

/*
 * One row per job: who runs it, its last run, last error, when it is due
 * next and whether it is overdue (its last success is more than two
 * intervals and 30 s old, counted from the first source of this
 * installation or the server's start, whichever is later).  For a job in
 * pg_cron the runs come from cron.job_run_details (its last 10,000 rows),
 * merged with those recorded by run_maintenance.  Runs as the extension
 * owner: cron.job shows a role only its own jobs.
 */
CREATE FUNCTION adstream._maintenance_status(
	OUT job text, OUT runs_by text, OUT every interval, OUT last_start timestamptz,
	OUT last_duration interval, OUT last_result text, OUT last_error text, OUT last_error_at timestamptz,
	OUT next_due timestamptz, OUT overdue boolean, OUT note text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_auto		boolean := coalesce(current_setting('adstream.auto_maintenance', true), 'on')::boolean;
	v_cron		boolean := adstream._cron_ready();
	v_details	boolean := to_regclass('cron.job_run_details') IS NOT NULL;
	v_open		boolean := adstream._maintenance_open();
	v_since		timestamptz := greatest(pg_postmaster_start_time(),
		(SELECT min(s.created_at) FROM adstream.sources s WHERE s.origin = adstream._origin()));
	v_job		record;
	v_run		record;
	v_ok		timestamptz;
	-- the job in pg_cron, and its runs there
	c_jobid		bigint;
	c_user		text;
	c_start		timestamptz;
	c_duration	interval;
	c_result	text;
	c_ok		timestamptz;
	c_error		text;
	c_error_at	timestamptz;
BEGIN
	FOR v_job IN SELECT * FROM adstream._maintenance_jobs() LOOP
		job := v_job.job;
		every := v_job.every;
		note := NULL;
		SELECT * INTO v_run FROM adstream.maintenance_runs r WHERE r.job = v_job.job;
		c_jobid := NULL; c_user := NULL; c_start := NULL; c_duration := NULL;
		c_result := NULL; c_ok := NULL; c_error := NULL; c_error_at := NULL;
		IF v_cron AND v_job.every IS NOT NULL THEN
			EXECUTE format($q$
				WITH j AS (SELECT jobid, username FROM cron.job
							WHERE jobname = $1 AND database = current_database() AND active
							ORDER BY username = current_user DESC, jobid LIMIT 1),
					 d AS (SELECT d.* FROM cron.job_run_details d JOIN j USING (jobid)
							WHERE %s AND d.runid > (SELECT coalesce(max(runid), 0) - 10000 FROM cron.job_run_details))
				SELECT j.jobid, j.username,
					   (SELECT start_time FROM d ORDER BY runid DESC LIMIT 1),
					   (SELECT end_time - start_time FROM d ORDER BY runid DESC LIMIT 1),
					   (SELECT return_message FROM d WHERE status = 'succeeded' ORDER BY runid DESC LIMIT 1),
					   (SELECT max(start_time) FROM d WHERE status = 'succeeded'),
					   (SELECT return_message FROM d WHERE status = 'failed' ORDER BY runid DESC LIMIT 1),
					   (SELECT coalesce(end_time, start_time) FROM d WHERE status = 'failed' ORDER BY runid DESC LIMIT 1)
				  FROM j$q$, CASE WHEN v_details THEN 'true' ELSE 'false' END)
			   INTO c_jobid, c_user, c_start, c_duration, c_result, c_ok, c_error, c_error_at USING v_job.job;
		END IF;

		runs_by := CASE WHEN c_jobid IS NOT NULL THEN 'pg_cron'
						WHEN v_auto AND v_cron AND v_job.every IS NOT NULL THEN 'pg_cron'	-- scheduled once open
						WHEN v_auto THEN 'launcher'
						ELSE 'by hand' END;
		-- the newer of the two records
		IF c_start IS NOT NULL AND (v_run.last_start IS NULL OR c_start > v_run.last_start) THEN
			last_start := c_start;
			last_duration := c_duration;
		ELSE
			last_start := v_run.last_start;
			last_duration := v_run.last_duration;
		END IF;
		IF c_ok IS NOT NULL AND (v_run.last_ok IS NULL OR c_ok > v_run.last_ok) THEN
			last_result := c_result;
		ELSE
			last_result := v_run.last_result;
		END IF;
		v_ok := greatest(c_ok, v_run.last_ok);
		IF c_error_at IS NOT NULL AND (v_run.last_error_at IS NULL OR c_error_at > v_run.last_error_at) THEN
			last_error := c_error;
			last_error_at := c_error_at;
		ELSE
			last_error := v_run.last_error;
			last_error_at := v_run.last_error_at;
		END IF;

		next_due := CASE WHEN NOT v_open OR v_job.every IS NULL THEN NULL
						 WHEN runs_by = 'launcher' THEN coalesce(last_start + v_job.every, now())
						 WHEN runs_by = 'pg_cron' THEN coalesce(last_start, v_since) + v_job.every
						 ELSE coalesce(v_ok, v_since) + v_job.every END;
		-- two intervals and 30 s; pg_cron before 1.5 runs a job once a minute at most
		overdue := v_open AND v_job.every IS NOT NULL
			AND greatest(v_ok, v_since) < now() - (2 * greatest(v_job.every, CASE WHEN runs_by = 'pg_cron'
				THEN interval '1 minute' ELSE interval '0' END) + interval '30 seconds');
		IF NOT v_open THEN
			note := CASE WHEN EXISTS (SELECT 1 FROM adstream.sources s WHERE s.origin = adstream._origin())
						 THEN 'waiting: sources or sinks restored from a dump wait for adstream.adopt_restored()'
						 ELSE 'waiting: no source yet' END;
		ELSIF v_job.every IS NULL THEN
			note := CASE WHEN v_auto THEN 'runs whenever the dedup index is 80% full; adstream_retention expires dedup state too'
						 ELSE 'part of adstream_retention' END;
		ELSIF runs_by = 'pg_cron' AND c_user <> current_user THEN
			note := format('pg_cron job of role %s', c_user);
		ELSIF runs_by = 'pg_cron' AND NOT v_details THEN
			note := 'pg_cron keeps no run details here (cron.job_run_details is missing)';
		ELSIF runs_by = 'by hand' THEN
			note := format('adstream.auto_maintenance is off: call adstream.run_maintenance(%L) every %s', v_job.job, v_job.every);
		END IF;
		RETURN NEXT;
	END LOOP;
END
$$;

CREATE VIEW adstream.maintenance_status AS
SELECT * FROM adstream._maintenance_status();
COMMENT ON VIEW adstream.maintenance_status IS
	'One row per maintenance job: who runs it (pg_cron, the launcher, or by hand), its interval, last start, duration, result and error, when it is due next and whether it is overdue';
REVOKE ALL ON adstream.maintenance_status FROM PUBLIC;

/*
 * What source_status warns of, once per query: a dedup index 80% full or
 * more (a full one stops ingestion until expiry makes room), and every
 * overdue maintenance job; with a hint that names the job and what to look
 * at.  Runs as the extension owner (maintenance_status does).
 */
CREATE FUNCTION adstream._maintenance_warning(OUT warning text, OUT hint text)
RETURNS record
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_auto		boolean := coalesce(current_setting('adstream.auto_maintenance', true), 'on')::boolean;
	v_entries	bigint;
	v_capacity	bigint;
	v_warnings	text[] := '{}';
	v_hints		text[] := '{}';
	v_job		record;
BEGIN
	-- the index is in shared memory only where the library is preloaded
	IF current_setting('adstream.dedup_index_size', true) IS NOT NULL THEN
		SELECT s.entries, s.capacity INTO v_entries, v_capacity FROM adstream.dedup_index_status() s;
		IF v_entries >= 0.8 * v_capacity THEN
			v_warnings := v_warnings || CASE WHEN v_entries >= v_capacity
				THEN format('the dedup index is full (%s event ids): batches of ad events wait until expiry makes room', v_capacity)
				ELSE format('the dedup index is %s%% full (%s of %s event ids)', floor(100.0 * v_entries / v_capacity), v_entries, v_capacity) END;
			v_hints := v_hints || CASE WHEN v_auto
				THEN 'Maintenance job adstream_dedup_expiry runs whenever it is 80% full, but gives up only the hours adstream.dedup_horizon behind each source''s slowest unread partition (see adstream.maintenance_status and dedup_expired_before): lower adstream.dedup_horizon, or raise adstream.dedup_index_size and restart.'
				ELSE 'adstream.auto_maintenance is off: run adstream.run_maintenance(''adstream_retention''), which expires dedup state; or raise adstream.dedup_index_size and restart.' END;
		END IF;
	END IF;
	FOR v_job IN SELECT * FROM adstream._maintenance_status() m WHERE m.overdue ORDER BY m.job LOOP
		v_warnings := v_warnings || format('maintenance job %s is overdue (due every %s, last run %s)', v_job.job, v_job.every,
										   coalesce(v_job.last_start::text, 'never'));
		v_hints := v_hints || CASE v_job.runs_by
			WHEN 'pg_cron' THEN format('pg_cron runs %s: see its runs in cron.job_run_details (a job that cannot connect needs cron.use_background_workers = on or cron.host) and adstream.maintenance_status.', v_job.job)
			WHEN 'launcher' THEN format('The adstream launcher runs %s: see adstream.maintenance_status and the server log.', v_job.job)
			ELSE format('Call adstream.run_maintenance(''%s'') every %s, or set adstream.auto_maintenance = on.', v_job.job, v_job.every) END;
	END LOOP;
	warning := nullif(array_to_string(v_warnings, '; '), '');
	hint := nullif(array_to_string(v_hints, ' '), '');
EXCEPTION WHEN OTHERS THEN
	-- source_status must answer whatever pg_cron's tables look like
	warning := 'the state of maintenance is unknown: ' || SQLERRM;
	hint := 'See adstream.maintenance_status.';
END
$$;

REVOKE ALL ON FUNCTION adstream._maintenance_jobs(), adstream._maintenance_open(), adstream._cron_ready(),
	adstream.run_maintenance(text), adstream._maintenance_failed(text, timestamptz, text),
	adstream._maintenance_plan(), adstream._maintenance_status(), adstream._maintenance_warning() FROM PUBLIC;
-- maintenance_status and source_status are status: the readers see them
GRANT SELECT ON adstream.maintenance_status TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream._maintenance_status(), adstream._maintenance_warning() TO adstream_reader;

-------------------------------------------------------------------------------
-- Status: what the monitoring roles read
-------------------------------------------------------------------------------

CREATE VIEW adstream.source_config AS
SELECT s.name, s.kind, s.brokers, s.topic, s.start_policy, s.workers, s.group_id,
	   (SELECT coalesce(jsonb_object_agg(k, CASE WHEN adstream._is_secret(k) THEN to_jsonb('********'::text) ELSE v END), '{}')
		  FROM jsonb_each(s.kafka_options) AS o(k, v)) AS kafka_options,
	   s.enabled, s.created_at, s.updated_at,
	   -- 0.6: the input format, with credentials in the registry URL masked
	   CASE WHEN s.input_format ? 'schema_registry'
			THEN jsonb_set(s.input_format, '{schema_registry}',
						   to_jsonb(regexp_replace(s.input_format->>'schema_registry', '^([a-z]+://)[^/@]*@', '\1********@')))
			ELSE s.input_format END AS input_format,
	   s.partitions, s.cluster_id
  FROM adstream.sources s;
COMMENT ON VIEW adstream.source_config IS
	'Sources with secret librdkafka properties masked';

CREATE VIEW adstream.source_status AS
WITH parts AS (
	SELECT s.id, o.partition FROM adstream.sources s
	  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
	UNION
	SELECT s.id, p.partition FROM adstream.sources s
	  JOIN adstream.partition_lag() p ON p.source_id = s.id
	UNION
	-- every partition of the topic that a worker of the source has seen,
	-- also those whose own worker does not run (issue #14), of those the
	-- source consumes on this node (its "partitions", issue #13)
	SELECT t.source_id, g.partition
	  FROM (SELECT ws.source_id, max(ws.topic_partitions) AS n FROM adstream.worker_status() ws GROUP BY 1) t
	  JOIN adstream.sources s ON s.id = t.source_id
	 CROSS JOIN LATERAL generate_series(0, t.n - 1) AS g(partition)
	 WHERE s.partitions IS NULL OR g.partition = ANY (s.partitions)
)
SELECT s.name AS source,
	   s.topic,
	   CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS source_state,
	   pt.partition,
	   coalesce(ps.pid, w.pid) AS worker_pid,
	   coalesce(w.state, CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   o.next_offset,
	   ps.last_high_watermark AS high_watermark,
	   l.lag,
	   coalesce(o.accepted, 0) AS accepted,
	   coalesce(o.duplicates, 0) AS duplicates,
	   coalesce(o.rejected, 0) AS rejected,
	   o.max_event_ts AS partition_watermark,
	   adstream.source_watermark(s.name) AS source_watermark,
	   o.updated_at AS last_commit_at,
	   coalesce(w.last_error, CASE WHEN h.held THEN 'restored from another installation: no worker runs until adstream.adopt_restored() is called, once the restore is complete and the original has stopped' END) AS last_error,
	   w.last_error_at,
	   (SELECT count(*) FROM adstream.offset_gaps g
		 WHERE g.source = s.name AND g.topic = s.topic AND g.partition = pt.partition) AS offset_gaps,
	   s.dedup_expired_before,
	   mw.warning,
	   mw.hint AS warning_hint,
	   -- issue #14: whether the broker answers the partition's worker, lag in
	   -- seconds of wall time (how long the oldest message not committed has
	   -- waited at most) and of event time (how far the partition's
	   -- watermark is behind the clock while messages wait), and whether the
	   -- lag figures are stale (no worker reports the partition, its report
	   -- is older than 5 s, or the broker does not answer) as of positions_at
	   w.connected,
	   CASE WHEN l.lag = 0 THEN 0
			WHEN l.lag > 0 AND ps.pending_since IS NOT NULL
			THEN greatest(extract(epoch FROM now() - ps.pending_since), 0)::double precision END AS lag_seconds,
	   CASE WHEN l.lag = 0 THEN 0
			WHEN l.lag > 0 AND o.max_event_ts IS NOT NULL
			THEN greatest(extract(epoch FROM now() - o.max_event_ts), 0)::double precision END AS event_lag_seconds,
	   (ps.pid IS NULL OR ps.stale OR l.lag IS NULL OR (l.lag > 0 AND ps.pending_since IS NULL)) AS lag_stale,
	   ps.positions_at,
	   coalesce(w.restarts, 0) AS restarts
  FROM adstream.sources s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  -- a dedup index close to full, overdue maintenance (issue #15): once per query
  CROSS JOIN adstream._maintenance_warning() mw
  LEFT JOIN parts pt ON pt.id = s.id
  LEFT JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic AND o.partition = pt.partition
  LEFT JOIN adstream.partition_lag() ps ON ps.source_id = s.id AND ps.partition = pt.partition
  LEFT JOIN LATERAL (
	SELECT ws.pid, ws.state, ws.last_error, ws.last_error_at, ws.connected, ws.restarts
	  FROM adstream.worker_status() ws
	 WHERE ws.source_id = s.id
	   AND (pt.partition IS NULL OR ws.worker_index = pt.partition % s.workers)
	 ORDER BY ws.worker_index LIMIT 1) w ON true
  CROSS JOIN LATERAL (
	SELECT CASE WHEN ps.last_high_watermark IS NOT NULL
				THEN greatest(ps.last_high_watermark - coalesce(o.next_offset, 0), 0) END AS lag) l;
COMMENT ON VIEW adstream.source_status IS
	'One row per source and partition: worker and its state, whether the broker answers, offsets, lag in messages, wall-time and event-time seconds with a staleness flag, counts, watermark, the current error (cleared on recovery; never credentials), restarts, offset gaps recorded, up to where the source''s dedup state is given up, and a warning with its hint while the dedup index is 80% full or maintenance is overdue';

/*
 * A sink's backlog: the outbox rows it has not published yet, and their
 * size.  A held sink's cursor is the original cluster's: once adopted, it
 * sends every row.  A function of its own, called once per sink by
 * sink_status: written into the view, its cost was multiplied by the sinks'
 * estimated row count, so that with a backlog of 100,000 rows every status
 * query was JIT-compiled (0.8 s a query instead of 0.02), and whether the
 * sink is held was asked again for every outbox row.  Definer: readers of
 * sink_status may not read the outbox.
 */
CREATE FUNCTION adstream._sink_backlog(p_sink integer, OUT rows bigint, OUT bytes bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
	s		adstream.sinks;
	v_held	boolean;
BEGIN
	SELECT * INTO s FROM adstream.sinks k WHERE k.id = p_sink;
	v_held := s.origin IS DISTINCT FROM adstream._origin();
	SELECT count(*), coalesce(sum(pg_column_size(o.*)), 0) INTO rows, bytes
	  FROM adstream.outbox o
	 WHERE v_held
		OR (o.txid >= pg_snapshot_xmin(s.done_snapshot)
			AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
			AND (s.target_snapshot IS NULL OR o.id > s.last_id
				 OR NOT pg_visible_in_snapshot(o.txid, s.target_snapshot)));
END
$$;
COMMENT ON FUNCTION adstream._sink_backlog(integer) IS
	'Internal: the outbox rows a sink has not published yet, and their bytes (sink_status)';

CREATE VIEW adstream.sink_status AS
SELECT s.name AS sink,
	   CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS sink_state,
	   w.pid AS worker_pid,
	   coalesce(w.state, CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
	   s.done_snapshot::text AS cursor_snapshot,
	   s.last_id AS cursor_last_id,
	   b.rows AS backlog_rows,
	   b.bytes AS backlog_bytes,
	   s.records_published,
	   s.txns_committed,
	   s.txns_aborted,
	   s.last_publish_at,
	   coalesce(w.last_error, CASE WHEN h.held THEN 'restored from another installation: no worker runs until adstream.adopt_restored() is called, once the restore is complete and the original has stopped' END) AS last_error,
	   w.last_error_at,
	   -- issue #14: whether the broker answers, restarts of the publisher
	   w.connected,
	   coalesce(w.restarts, 0) AS restarts
  FROM adstream.sinks s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  CROSS JOIN LATERAL adstream._sink_backlog(s.id) b
  LEFT JOIN adstream.publisher_status() w ON w.sink_id = s.id;
COMMENT ON VIEW adstream.sink_status IS
	'One row per sink: worker and its state, whether the broker answers, cursor, backlog, Kafka transactions committed and aborted, the current error (cleared on recovery), restarts';

/*
 * Issue #14: every failure visible in SQL.  The history of the workers'
 * states and errors, the counters, and the metrics for Prometheus.
 */
/*
 * Status history (issue #14): one row per change of a worker's state, of
 * its connection to the broker or of its current error, as cron.job_run_details
 * keeps pg_cron's runs.  Written by the launcher (src/status.c), in short
 * transactions of its own, on changes only; never by a batch.  Trimmed to
 * adstream.status_history_retention by the retention job.
 */
CREATE TABLE adstream.status_history (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at			timestamptz NOT NULL DEFAULT now(),
	kind		text NOT NULL,		-- 'source' or 'sink'
	object_id	integer NOT NULL,	-- sources.id or sinks.id
	name		text NOT NULL,		-- its name at the time
	worker		integer,			-- a consumer's index (as worker_status), NULL for a sink
	state		text NOT NULL,		-- the worker's state from then on
	connected	boolean,			-- whether the broker answered; NULL not known yet
	error		text,				-- the current error from then on; NULL: none (cleared)
	error_at	timestamptz,
	restarts	integer NOT NULL DEFAULT 0,	-- unexpected exits of the worker so far
	CHECK (kind IN ('source', 'sink'))
);
CREATE INDEX ON adstream.status_history (kind, name, at);
CREATE INDEX ON adstream.status_history (at);
COMMENT ON TABLE adstream.status_history IS
	'Every change of a source''s or sink''s workers: state, connection to the broker, current error (NULL once cleared), restarts; kept for adstream.status_history_retention';
SELECT pg_catalog.pg_extension_config_dump('adstream.status_history', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.status_history_id_seq', '');

/* Errors and restarts per source and sink, counted by the launcher (status.c). */
CREATE TABLE adstream.status_counters (
	kind		text NOT NULL,
	object_id	integer NOT NULL,
	name		text NOT NULL,
	errors		bigint NOT NULL DEFAULT 0,
	restarts	bigint NOT NULL DEFAULT 0,
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (kind, object_id),
	CHECK (kind IN ('source', 'sink'))
);
COMMENT ON TABLE adstream.status_counters IS
	'Errors and unexpected worker exits per source and sink since it was created (adstream.metrics)';
SELECT pg_catalog.pg_extension_config_dump('adstream.status_counters', '');

/* Where adstream.reset_metrics() set each counter back to zero. */
CREATE TABLE adstream.metrics_reset (
	kind		text NOT NULL,
	object_id	integer NOT NULL,
	stats_reset	timestamptz NOT NULL DEFAULT now(),
	baseline	jsonb NOT NULL,		-- each counter's raw value at the reset
	PRIMARY KEY (kind, object_id),
	CHECK (kind IN ('source', 'sink'))
);
COMMENT ON TABLE adstream.metrics_reset IS
	'The counters'' values at the last adstream.reset_metrics(), per source and sink';
SELECT pg_catalog.pg_extension_config_dump('adstream.metrics_reset', '');

/* Deletes history older than adstream.status_history_retention (the retention job calls it). */
CREATE FUNCTION adstream.expire_status_history()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_deleted	bigint;
BEGIN
	DELETE FROM adstream.status_history
	 WHERE at < now() - coalesce(current_setting('adstream.status_history_retention', true), '30d')::interval;
	GET DIAGNOSTICS v_deleted = ROW_COUNT;
	-- the counters of sources and sinks that no longer exist
	DELETE FROM adstream.status_counters c
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s WHERE c.kind = 'source' AND s.id = c.object_id)
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks s WHERE c.kind = 'sink' AND s.id = c.object_id);
	DELETE FROM adstream.metrics_reset r
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s WHERE r.kind = 'source' AND s.id = r.object_id)
	   AND NOT EXISTS (SELECT 1 FROM adstream.sinks s WHERE r.kind = 'sink' AND s.id = r.object_id);
	RETURN v_deleted;
END
$$;
COMMENT ON FUNCTION adstream.expire_status_history() IS
	'Deletes adstream.status_history rows older than adstream.status_history_retention, and the counters of sources and sinks that no longer exist; returns how many history rows';

/*
 * Metrics (issue #14), shaped for Prometheus: one row per metric, source
 * or sink, with stable names.  Counters (*_total) count since the source or
 * sink was created, or since adstream.reset_metrics() (stats_reset); the
 * rest are gauges of now.  docs/postgres_exporter.yml turns them into
 * series for postgres_exporter.
 */
CREATE FUNCTION adstream._metric_counters(OUT kind text, OUT object_id integer, OUT name text,
	OUT created_at timestamptz, OUT counters jsonb)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT 'source', s.id, s.name, s.created_at,
	   jsonb_build_object(
		'messages_accepted_total', coalesce(o.accepted, 0),
		'messages_duplicate_total', coalesce(o.duplicates, 0),
		'messages_rejected_total', coalesce(o.rejected, 0),
		'offset_gaps_total', (SELECT count(*) FROM adstream.offset_gaps g WHERE g.source = s.name),
		'errors_total', coalesce(c.errors, 0),
		'restarts_total', coalesce(c.restarts, 0))
  FROM adstream.sources s
  LEFT JOIN LATERAL (SELECT sum(accepted) AS accepted, sum(duplicates) AS duplicates, sum(rejected) AS rejected
					   FROM adstream.offsets WHERE source = s.name) o ON true
  LEFT JOIN adstream.status_counters c ON c.kind = 'source' AND c.object_id = s.id
UNION ALL
SELECT 'sink', k.id, k.name, k.created_at,
	   jsonb_build_object(
		'records_published_total', k.records_published,
		'transactions_committed_total', k.txns_committed,
		'transactions_aborted_total', k.txns_aborted,
		'errors_total', coalesce(c.errors, 0),
		'restarts_total', coalesce(c.restarts, 0))
  FROM adstream.sinks k
  LEFT JOIN adstream.status_counters c ON c.kind = 'sink' AND c.object_id = k.id
$$;

CREATE FUNCTION adstream._metrics(OUT metric text, OUT kind text, OUT name text,
	OUT value double precision, OUT stats_reset timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off		-- scraped every few seconds: compiling costs more than it saves
AS $$
WITH c AS (
	SELECT m.kind, m.name, coalesce(r.stats_reset, m.created_at) AS stats_reset, m.counters,
		   coalesce(r.baseline, '{}') AS baseline
	  FROM adstream._metric_counters() m
	  LEFT JOIN adstream.metrics_reset r ON r.kind = m.kind AND r.object_id = m.object_id),
src AS (
	SELECT st.source AS name,
		   jsonb_build_object(
			'lag_messages', sum(st.lag),
			'lag_seconds', max(st.lag_seconds),
			'event_lag_seconds', max(st.event_lag_seconds),
			'lag_stale', bool_or(st.lag_stale)::int,
			'connected', coalesce(bool_and(st.connected) FILTER (WHERE st.worker_pid IS NOT NULL), false)::int,
			'workers_running', count(DISTINCT st.worker_pid),
			'partitions', count(st.partition),
			'enabled', bool_and(st.source_state = 'enabled')::int) AS gauges
	  FROM adstream.source_status st GROUP BY st.source),
snk AS (
	SELECT st.sink AS name,
		   jsonb_build_object(
			'backlog_rows', st.backlog_rows,
			'backlog_bytes', st.backlog_bytes,
			'connected', coalesce(st.connected, false)::int,
			'workers_running', (st.worker_pid IS NOT NULL)::int,
			'enabled', (st.sink_state = 'enabled')::int) AS gauges
	  FROM adstream.sink_status st)
SELECT e.key, c.kind, c.name,
	   e.value::text::double precision - coalesce((c.baseline ->> e.key)::double precision, 0), c.stats_reset
  FROM c CROSS JOIN LATERAL jsonb_each(c.counters) e
UNION ALL
SELECT e.key, 'source', src.name, e.value::text::double precision, c.stats_reset
  FROM src JOIN c ON c.kind = 'source' AND c.name = src.name
 CROSS JOIN LATERAL jsonb_each(src.gauges) e WHERE e.value <> 'null'
UNION ALL
SELECT e.key, 'sink', snk.name, e.value::text::double precision, c.stats_reset
  FROM snk JOIN c ON c.kind = 'sink' AND c.name = snk.name
 CROSS JOIN LATERAL jsonb_each(snk.gauges) e WHERE e.value <> 'null'
$$;

CREATE VIEW adstream.metrics AS
SELECT metric, kind, name, value, stats_reset FROM adstream._metrics();
COMMENT ON VIEW adstream.metrics IS
	'One row per metric and source or sink, for Prometheus (docs/postgres_exporter.yml): counters (*_total) since stats_reset, gauges of now; stable names';

CREATE FUNCTION adstream.reset_metrics(name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_n		integer;
BEGIN
	INSERT INTO adstream.metrics_reset AS r (kind, object_id, stats_reset, baseline)
	SELECT m.kind, m.object_id, now(), m.counters
	  FROM adstream._metric_counters() m
	 WHERE reset_metrics.name IS NULL OR m.name = reset_metrics.name
	ON CONFLICT (kind, object_id) DO UPDATE SET stats_reset = excluded.stats_reset, baseline = excluded.baseline;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n = 0 AND reset_metrics.name IS NOT NULL THEN
		RAISE EXCEPTION 'adstream: no source or sink named "%"', reset_metrics.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'See adstream.source_status and adstream.sink_status.';
	END IF;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION adstream.reset_metrics(text) IS
	'Sets the counters of adstream.metrics back to zero (all, or those of one source or sink) and their stats_reset to now; returns how many sources and sinks';

REVOKE ALL ON adstream.status_history, adstream.status_counters, adstream.metrics_reset, adstream.metrics FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream.expire_status_history(), adstream._metric_counters(), adstream._metrics(),
	adstream.reset_metrics(text), adstream.partition_lag() FROM PUBLIC;
-- status: the readers see the history and the metrics; resetting them is management
GRANT SELECT ON adstream.status_history, adstream.metrics TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream._metrics(), adstream.partition_lag() TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.reset_metrics(text) TO adstream_admin;

-------------------------------------------------------------------------------
-- #14 rewind: replaying a source, or some of its partitions, from an offset
-- or a time, with a defined effect on the counts (docs/operating.md,
-- "Rewinding a source"; docs/architecture.md, point 12)
-------------------------------------------------------------------------------

CREATE TABLE adstream.rewinds (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source			text NOT NULL REFERENCES adstream.sources (name) ON UPDATE CASCADE ON DELETE CASCADE,
	topic			text NOT NULL,
	mode			text NOT NULL,
	to_time			timestamptz,		-- the time asked for (NULL: rewound to offsets)
	window_from		timestamptz,		-- 'replace': the event-time window counted afresh
	window_to		timestamptz,
	lookback		interval,			-- 'replace': offsets are Kafka's for window_from - lookback
	removed_events	bigint NOT NULL DEFAULT 0,	-- 'replace': impressions + clicks removed from the window
	forgotten_ids	bigint NOT NULL DEFAULT 0,	-- 'replace': event ids of the window's hours forgotten
	created_at		timestamptz NOT NULL DEFAULT now(),
	CHECK (mode IN ('recount', 'replace')),
	CHECK ((mode = 'replace') = (window_from IS NOT NULL AND window_to IS NOT NULL))
);
COMMENT ON TABLE adstream.rewinds IS
	'Rewinds of sources (adstream.rewind_source): what was asked, and what a replace removed; their partitions are in rewind_partitions';
SELECT pg_catalog.pg_extension_config_dump('adstream.rewinds', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.rewinds_id_seq', '');

/*
 * One row per rewound partition: the replay runs from from_offset to
 * to_offset (the stored next_offset at rewind time, exclusive).  The batch
 * that writes a partition's offsets moves its row in the same transaction:
 * its counters, and finished_at once the position has passed to_offset.
 */
CREATE TABLE adstream.rewind_partitions (
	rewind_id		bigint NOT NULL REFERENCES adstream.rewinds (id) ON DELETE CASCADE,
	partition		integer NOT NULL,
	from_offset		bigint NOT NULL,
	to_offset		bigint NOT NULL,
	replayed		bigint NOT NULL DEFAULT 0,	-- messages read again below to_offset
	accepted		bigint NOT NULL DEFAULT 0,	-- of them, counted (again)
	duplicates		bigint NOT NULL DEFAULT 0,	-- ... found counted already
	rejected		bigint NOT NULL DEFAULT 0,	-- ... dead letters (not written twice)
	skipped			bigint NOT NULL DEFAULT 0,	-- 'replace': outside the window, left as counted
	finished_at		timestamptz,
	PRIMARY KEY (rewind_id, partition),
	CHECK (0 <= from_offset AND from_offset <= to_offset)
);
CREATE INDEX rewind_partitions_open ON adstream.rewind_partitions (rewind_id) WHERE finished_at IS NULL;
COMMENT ON TABLE adstream.rewind_partitions IS
	'The partitions of each rewind: the offsets replayed, what the replay counted, and when it passed to_offset';
SELECT pg_catalog.pg_extension_config_dump('adstream.rewind_partitions', '');

/*
 * A 'recount' rewind's replayed events of hours whose dedup state is given
 * up: each id once per rewind, written by the batch that counts it.  Emptied
 * when every partition of the rewind is finished (by the batch that sees
 * it, or by the next rewind_source()).
 */
CREATE TABLE adstream.rewind_ids (
	rewind_id		bigint NOT NULL REFERENCES adstream.rewinds (id) ON DELETE CASCADE,
	event_id		uuid NOT NULL,
	PRIMARY KEY (rewind_id, event_id)
);
COMMENT ON TABLE adstream.rewind_ids IS
	'Internal: event ids of expired hours a recount rewind has counted again, so that each is counted once per rewind';
SELECT pg_catalog.pg_extension_config_dump('adstream.rewind_ids', '');

/* Kafka's offsets-for-times for the source's client (src/rewind.c). */
CREATE FUNCTION adstream._kafka_offsets_for_times(p_brokers text, p_keys text[], p_values text[],
	p_topic text, p_partitions integer[], p_time timestamptz, p_timeout_ms integer)
RETURNS bigint[] LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'adstream_kafka_offsets_for_times';
COMMENT ON FUNCTION adstream._kafka_offsets_for_times(text, text[], text[], text, integer[], timestamptz, integer) IS
	'Internal: per partition, the earliest offset whose Kafka timestamp is at or after the time (the end when none is), asked with a short-lived client';

CREATE FUNCTION adstream._dedup_forget_hours(p_source integer, p_from timestamptz, p_to timestamptz)
RETURNS bigint LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_forget_hours';
COMMENT ON FUNCTION adstream._dedup_forget_hours(integer, timestamptz, timestamptz) IS
	'Internal: the dedup index forgets a source''s ids of the event-time hours [from, to); the caller holds the expiry lock';

/*
 * Rewinds a source, or some of its partitions, and replays them up to
 * where they were (docs/operating.md, "Rewinding a source").
 *
 * mode 'recount' (ad events and orders): to an offset per partition
 * (to_offsets, '{"0": 1234}'; the partitions are its keys) or to a time
 * (to_time: Kafka's offsets-for-times, for the given partitions or all).
 * The replayed messages are judged as on their first read: an id the dedup
 * state remembers is a duplicate, never counted twice.  An ad event whose
 * hour's dedup state is given up (before sources.dedup_expired_before) is
 * counted again instead of being a too_late dead letter, each id once per
 * rewind.  Dead letters are not written twice.
 *
 * mode 'replace' (ad events, all partitions): the event-time window
 * [to_time, window_end), on the hour, is counted afresh under the source's
 * current settings.  In one transaction the source's counts of the window
 * are removed (the rollups and, with sinks, Pinot follow), its dedup ids of
 * the window's hours forgotten, and every partition rewound to the offsets
 * Kafka gives for to_time - lookback (or to_offsets, the operator's own).
 * The replay counts the events inside the window and skips the others.  The
 * window must be within the dedup horizon (after dedup_expired_before).
 *
 * Offsets are resolved first, with no lock held; then the catalog changes
 * in a short transaction.  The workers restart (a new generation) and read
 * the new offsets.  Returns the rewind's id (adstream.rewind_status).
 */
CREATE FUNCTION adstream.rewind_source(
	name text,
	to_time timestamptz DEFAULT NULL,
	to_offsets jsonb DEFAULT NULL,
	partitions integer[] DEFAULT NULL,
	mode text DEFAULT 'recount',
	window_end timestamptz DEFAULT NULL,
	lookback interval DEFAULT '5 minutes')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- hours are UTC hours
AS $$
DECLARE
	s			adstream.sources;
	v_parts		integer[];
	v_from		bigint[];
	v_to		bigint[];
	v_ask		timestamptz;
	v_stored	bigint;
	v_busy		integer[];
	v_id		bigint;
	v_removed	bigint := 0;
	v_ids		bigint := 0;
	v_key		text;
	i			integer;
BEGIN
	PERFORM adstream._source_must_exist(rewind_source.name);
	SELECT * INTO s FROM adstream.sources k WHERE k.name = rewind_source.name;
	IF mode IS NULL OR mode NOT IN ('recount', 'replace') THEN
		RAISE EXCEPTION 'unknown rewind mode %', coalesce('"' || mode || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''recount'' (replay, counting again only what the dedup state has given up) or ''replace'' (remove a window''s counts and count it afresh).';
	END IF;
	IF to_offsets IS NOT NULL AND (jsonb_typeof(to_offsets) <> 'object' OR to_offsets = '{}') THEN
		RAISE EXCEPTION 'to_offsets must be a JSON object of partitions and offsets'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example ''{"0": 1200, "3": 0}''.';
	END IF;
	IF to_offsets IS NOT NULL AND partitions IS NOT NULL THEN
		RAISE EXCEPTION 'give the partitions either as to_offsets'' keys or as partitions, not both'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'With to_offsets, its keys are the partitions rewound.';
	END IF;

	IF mode = 'recount' THEN
		IF (to_time IS NULL) = (to_offsets IS NULL) THEN
			RAISE EXCEPTION 'a recount rewinds to a time or to offsets: give exactly one of to_time and to_offsets'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'For example rewind_source(''ads'', to_time => now() - interval ''1 hour'').';
		END IF;
		IF window_end IS NOT NULL THEN
			RAISE EXCEPTION 'window_end is for mode ''replace'''
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'A recount replays everything from the rewind point; pass mode => ''replace'' to count a window afresh.';
		END IF;
	ELSE
		IF s.kind <> 'ad_events' THEN
			RAISE EXCEPTION 'source "%" consumes orders: only a recount can rewind it', s.name
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = 'Orders are deduplicated for ever by their order_id in adstream.orders and credited once; there are no window counts to replace.',
					  HINT = 'Use mode ''recount'': replayed orders already stored are duplicates, and only orders not stored yet are taken.';
		END IF;
		IF to_time IS NULL OR window_end IS NULL THEN
			RAISE EXCEPTION 'a replace needs its window: to_time and window_end'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'For example to_time => ''2026-12-03 10:00+00'', window_end => ''2026-12-03 12:00+00''.';
		END IF;
		IF date_bin('1 hour', to_time, timestamptz '1970-01-01 00:00:00+00') <> to_time
		   OR date_bin('1 hour', window_end, timestamptz '1970-01-01 00:00:00+00') <> window_end
		   OR NOT isfinite(to_time) OR NOT isfinite(window_end) OR window_end <= to_time THEN
			RAISE EXCEPTION 'a replaced window must be whole UTC hours, to_time before window_end'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The window asked for is [%s, %s).', to_time, window_end),
					  HINT = 'The dedup state is kept per event-time hour; round the window out to the hour.';
		END IF;
		IF window_end > now() + current_setting('adstream.max_future_skew')::interval THEN
			RAISE EXCEPTION 'a replaced window must not end in the future'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Replace a window once its events have arrived.';
		END IF;
		IF to_time < s.dedup_expired_before
		   OR to_time < now() - current_setting('adstream.minute_retention')::interval THEN
			RAISE EXCEPTION 'the window of source "%" begins before what it still remembers', s.name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('Its dedup state before %s is given up (adstream.dedup_horizon), and minutes before %s are dropped (adstream.minute_retention); a replace must rebuild both exactly.',
									  s.dedup_expired_before, now() - current_setting('adstream.minute_retention')::interval),
					  HINT = 'Use mode ''recount'' for older events: it counts them again, once per rewind.';
		END IF;
		IF partitions IS NOT NULL THEN
			RAISE EXCEPTION 'a replace rewinds every partition of the source'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'Any partition may hold events of the window; its counts are removed for all of them.',
					  HINT = 'Leave partitions out.';
		END IF;
		IF lookback IS NULL OR lookback < interval '0' THEN
			RAISE EXCEPTION 'lookback must not be negative'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'It is how much earlier than its event time a message''s Kafka timestamp may be (producer clocks); 5 minutes by default.';
		END IF;
	END IF;

	-- The partitions: to_offsets' keys, those asked for, or every one stored.
	IF to_offsets IS NOT NULL THEN
		FOR v_key IN SELECT jsonb_object_keys(to_offsets) LOOP
			IF v_key !~ '^[0-9]{1,9}$' OR jsonb_typeof(to_offsets->v_key) <> 'number'
			   OR (to_offsets->>v_key) !~ '^[0-9]{1,18}$' THEN
				RAISE EXCEPTION 'to_offsets: "%": % is not a partition and an offset', v_key, to_offsets->v_key
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Keys are partition numbers, values non-negative offsets: ''{"0": 1200}''.';
			END IF;
		END LOOP;
		SELECT array_agg(k::integer ORDER BY k::integer), array_agg((to_offsets->>k)::bigint ORDER BY k::integer)
		  INTO v_parts, v_from FROM jsonb_object_keys(to_offsets) k;
	ELSIF partitions IS NOT NULL THEN
		SELECT array_agg(DISTINCT p ORDER BY p) INTO v_parts FROM unnest(partitions) p;
	ELSE
		SELECT array_agg(o.partition ORDER BY o.partition) INTO v_parts
		  FROM adstream.offsets o WHERE o.source = s.name AND o.topic = s.topic;
	END IF;
	IF v_parts IS NULL OR array_length(v_parts, 1) IS NULL OR EXISTS (SELECT 1 FROM unnest(v_parts) p WHERE p IS NULL) THEN
		RAISE EXCEPTION 'source "%" has nothing to rewind', s.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'No partition was named, or none has a stored offset yet.',
				  HINT = 'A partition is rewound once its workers have committed a first batch of it.';
	END IF;
	SELECT array_agg(p ORDER BY p) INTO v_busy FROM unnest(v_parts) p
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.offsets o
						WHERE o.source = s.name AND o.topic = s.topic AND o.partition = p);
	IF v_busy IS NOT NULL THEN
		RAISE EXCEPTION 'source "%" has no stored offset of %', s.name,
				CASE WHEN cardinality(v_busy) = 1 THEN 'partition ' ELSE 'partitions ' END || array_to_string(v_busy, ', ')
			USING ERRCODE = 'undefined_object',
				  DETAIL = format('Topic "%s" has %s partition(s); a partition is known once a batch of it has committed.',
								  s.topic, coalesce(s.partition_count::text, 'an unknown number of')),
				  HINT = 'See adstream.source_status for the source''s partitions.';
	END IF;
	IF mode = 'replace' AND EXISTS (
		SELECT 1 FROM adstream.offsets o WHERE o.source = s.name AND o.topic = s.topic AND o.partition <> ALL (v_parts)) THEN
		RAISE EXCEPTION 'to_offsets of a replace must name every partition of source "%"', s.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Any partition may hold events of the window; name them all, or leave to_offsets out to use Kafka''s offsets for to_time - lookback.';
	END IF;

	-- Offsets for a time: asked before anything is locked or written.
	IF v_from IS NULL THEN
		v_ask := CASE WHEN mode = 'replace' THEN to_time - lookback ELSE to_time END;
		v_from := adstream._kafka_offsets_for_times(s.brokers,
			ARRAY(SELECT key FROM jsonb_each_text(s.kafka_options) ORDER BY key),
			ARRAY(SELECT value FROM jsonb_each_text(s.kafka_options) ORDER BY key),
			s.topic, v_parts, v_ask, 10000);
	END IF;

	-- From here on, short: the catalog changes.
	IF rewind_source.mode = 'replace' THEN
		-- No batch in flight (so no dedup claim), and none until this commits;
		-- then every batch of the source is fenced by the offsets below.
		PERFORM adstream._lock('adstream.dedup_expiry', 0, true);
		LOCK TABLE adstream.ad_stats_minute IN SHARE ROW EXCLUSIVE MODE;
		-- Expiry may have moved while the brokers were asked.
		IF to_time < (SELECT k.dedup_expired_before FROM adstream.sources k WHERE k.id = s.id) THEN
			RAISE EXCEPTION 'the window of source "%" begins before what it still remembers', s.name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'Its dedup state of the window''s first hour was given up just now (adstream.dedup_horizon).',
					  HINT = 'Use mode ''recount'' for older events: it counts them again, once per rewind.';
		END IF;
	END IF;
	-- The stored positions, locked: to_offset is where the replay ends.
	v_to := array_fill(NULL::bigint, ARRAY[array_length(v_parts, 1)]);
	FOR i IN 1 .. array_length(v_parts, 1) LOOP
		SELECT o.next_offset INTO v_stored FROM adstream.offsets o
		 WHERE o.source = s.name AND o.topic = s.topic AND o.partition = v_parts[i] FOR UPDATE;
		IF v_from[i] IS NULL OR v_from[i] < 0 THEN
			RAISE EXCEPTION 'partition %: no offset to rewind to', v_parts[i]
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF v_from[i] > v_stored THEN
			IF to_offsets IS NOT NULL THEN
				RAISE EXCEPTION 'partition % of source "%" would move forward, from % to %',
						v_parts[i], s.name, v_stored, v_from[i]
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = 'A rewind only replays what was read: moving forward would skip messages never counted.',
						  HINT = 'Give an offset at or below the stored next_offset (adstream.offsets).';
			END IF;
			-- A time after everything read of the partition: nothing to replay there.
			v_from[i] := v_stored;
		END IF;
		v_to[i] := v_stored;
	END LOOP;

	SELECT array_agg(DISTINCT rp.partition ORDER BY rp.partition) INTO v_busy
	  FROM adstream.rewind_partitions rp JOIN adstream.rewinds r ON r.id = rp.rewind_id
	 WHERE r.source = s.name AND r.topic = s.topic AND rp.finished_at IS NULL
	   AND (rewind_source.mode = 'replace' OR rp.partition = ANY (v_parts));
	IF v_busy IS NOT NULL THEN
		RAISE EXCEPTION '% of source "%" % still being replayed',
				CASE WHEN cardinality(v_busy) = 1 THEN 'partition ' ELSE 'partitions ' END || array_to_string(v_busy, ', '),
				s.name, CASE WHEN cardinality(v_busy) = 1 THEN 'is' ELSE 'are' END
			USING ERRCODE = 'object_in_use',
				  DETAIL = 'A partition replays one rewind at a time.',
				  HINT = 'Wait until adstream.rewind_status shows the rewind finished.';
	END IF;

	IF rewind_source.mode = 'replace' THEN
		-- The source's counts of the window go, and the rollups and the sinks follow.
		WITH gone AS (
			DELETE FROM adstream.ad_stats_minute m
			 WHERE m.source_id = s.id AND m.window_start >= to_time AND m.window_start < window_end
			RETURNING m.ad_id, m.window_start, m.impressions + m.clicks AS n),
		pending AS (
			INSERT INTO adstream.rollup_pending AS p (window_start, source_id)
			SELECT DISTINCT g.window_start, s.id FROM gone g ORDER BY 1
			ON CONFLICT (window_start, source_id, worker) DO UPDATE SET window_start = excluded.window_start),
		published AS (
			INSERT INTO adstream.outbox (kind, ad_id, window_start)
			SELECT 'ad_stats', g.ad_id, g.window_start FROM (SELECT DISTINCT ad_id, window_start FROM gone) g
			 WHERE adstream._publishing()
			 ORDER BY 2, 3)		-- (ad, minute) order, like the batches
		SELECT coalesce(sum(g.n), 0) INTO v_removed FROM gone g;
		-- So do its dedup ids of the window's hours, on disk and in the index.
		WITH gone AS (
			DELETE FROM adstream.dedup_log d
			 WHERE d.source_id = s.id AND d.hour >= to_time AND d.hour < window_end
			RETURNING length(d.ids) / 16 AS n)
		SELECT coalesce(sum(n), 0) INTO v_ids FROM gone;
		PERFORM adstream._dedup_forget_hours(s.id, to_time, window_end);
		-- The clicks kept for attribution too: the replay keeps them again, as
		-- the current settings read them.  Orders already judged keep their credit.
		DELETE FROM adstream.ad_events e
		 WHERE e.source_id = s.id AND e.ts >= to_time AND e.ts < window_end;
		-- Events of the window were counted, so their messages lie below the
		-- stored offsets; brokers that place every offset for the time at or
		-- past them contradict the lookback's assumption (or answer wrongly):
		-- the window would be removed and never counted again.
		IF to_offsets IS NULL AND v_ids > 0 AND NOT EXISTS (
			SELECT 1 FROM unnest(v_from, v_to) AS p(from_offset, to_offset) WHERE p.from_offset < p.to_offset) THEN
			RAISE EXCEPTION 'the brokers place no message of source "%" at or after % before its stored offsets, yet % events of the window were counted',
					s.name, to_time - lookback, v_ids
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'Kafka''s offsets-for-times gave, for every partition, an offset at or past the stored next_offset: replaying from there would count none of the window again. Nothing was changed.',
					  HINT = 'Raise lookback (producer clocks ahead of the Kafka timestamps), or give to_offsets that precede the window (''{"0": 0, ...}'' is always safe).';
		END IF;
	END IF;

	INSERT INTO adstream.rewinds (source, topic, mode, to_time, window_from, window_to, lookback,
								  removed_events, forgotten_ids)
	VALUES (s.name, s.topic, rewind_source.mode, to_time,
			CASE WHEN rewind_source.mode = 'replace' THEN to_time END,
			CASE WHEN rewind_source.mode = 'replace' THEN window_end END,
			CASE WHEN rewind_source.mode = 'replace' AND to_offsets IS NULL THEN lookback END, v_removed, v_ids)
	RETURNING id INTO v_id;
	INSERT INTO adstream.rewind_partitions (rewind_id, partition, from_offset, to_offset, finished_at)
	SELECT v_id, p.partition, p.from_offset, p.to_offset, CASE WHEN p.from_offset = p.to_offset THEN now() END
	  FROM unnest(v_parts, v_from, v_to) AS p(partition, from_offset, to_offset) ORDER BY p.partition;
	-- The partitions start over from the rewind point, and so does their
	-- event-time watermark: expiry is held by the replay as by a first read.
	UPDATE adstream.offsets o SET next_offset = p.from_offset, max_event_ts = NULL, updated_at = now()
	  FROM unnest(v_parts, v_from, v_to) AS p(partition, from_offset, to_offset)
	 WHERE o.source = s.name AND o.topic = s.topic AND o.partition = p.partition AND p.from_offset < p.to_offset;

	-- Id sets of finished rewinds that no batch cleared (two finished at once).
	DELETE FROM adstream.rewind_ids x
	 WHERE NOT EXISTS (SELECT 1 FROM adstream.rewind_partitions rp
						WHERE rp.rewind_id = x.rewind_id AND rp.finished_at IS NULL);

	-- The workers restart and read the new offsets (alter_source does the same).
	UPDATE adstream.sources k SET generation = adstream._new_generation(), updated_at = now() WHERE k.id = s.id;
	PERFORM adstream._wake_launcher();
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION adstream.rewind_source(text, timestamptz, jsonb, integer[], text, timestamptz, interval) IS
	'Replays a source (or some partitions) from a time or offsets: ''recount'' never counts twice what the dedup state remembers and counts expired events again once; ''replace'' removes an event-time window''s counts and counts it afresh; returns the rewind''s id';

/* Each rewound partition: where its replay is, and what it counted. */
CREATE VIEW adstream.rewind_status AS
SELECT r.id AS rewind_id, r.source, rp.partition, r.mode, r.to_time, r.window_from, r.window_to,
	   rp.from_offset, rp.to_offset, o.next_offset AS position,
	   rp.finished_at IS NULL AS replaying,
	   CASE WHEN rp.finished_at IS NULL THEN greatest(rp.to_offset - coalesce(o.next_offset, rp.from_offset), 0) ELSE 0 END AS remaining,
	   rp.replayed, rp.accepted, rp.duplicates, rp.rejected, rp.skipped,
	   r.removed_events, r.forgotten_ids, r.created_at, rp.finished_at,
	   -- the rewind as a whole: finished once every partition of it is
	   CASE WHEN count(*) FILTER (WHERE rp.finished_at IS NULL) OVER (PARTITION BY r.id) = 0
			THEN max(rp.finished_at) OVER (PARTITION BY r.id) END AS rewind_finished_at
  FROM adstream.rewinds r
  JOIN adstream.rewind_partitions rp ON rp.rewind_id = r.id
  LEFT JOIN adstream.offsets o ON o.source = r.source AND o.topic = r.topic AND o.partition = rp.partition;
COMMENT ON VIEW adstream.rewind_status IS
	'Every rewound partition: from and to offsets, the position now, whether it still replays and how many messages remain, what the replay counted, and when the whole rewind finished';

REVOKE ALL ON adstream.rewinds, adstream.rewind_partitions, adstream.rewind_ids, adstream.rewind_status FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream._kafka_offsets_for_times(text, text[], text[], text, integer[], timestamptz, integer),
	adstream._dedup_forget_hours(integer, timestamptz, timestamptz),
	adstream.rewind_source(text, timestamptz, jsonb, integer[], text, timestamptz, interval) FROM PUBLIC;
GRANT SELECT ON adstream.rewinds, adstream.rewind_partitions, adstream.rewind_status TO adstream_admin;
GRANT EXECUTE ON FUNCTION adstream.rewind_source(text, timestamptz, jsonb, integer[], text, timestamptz, interval)
	TO adstream_admin;

-------------------------------------------------------------------------------
-- Privileges
--
-- adstream_reader reads results and status; adstream_admin (a member of
-- adstream_reader) also manages sources and sinks and reads the masked
-- configuration, positions and dead letters.  Everything else is for the
-- workers and pg_cron (superuser) only.  Credentials (sources, sinks) are
-- readable by superusers only.
-------------------------------------------------------------------------------

-- Tables and views: PUBLIC has no privileges on them by default; the REVOKE
-- makes each one's ACL explicit.  (dedup_log, new in 0.4, was left out of it
-- and keeps the default ACL, which grants the same.)
REVOKE ALL ON adstream.sources, adstream.offsets, adstream.offset_gaps, adstream.rejected_events, adstream.partitioned_tables,
	adstream.ad_stats_minute, adstream.rollup_pending, adstream.ad_stats_hour, adstream.ad_stats_6h,
	adstream.ad_stats_day, adstream.ad_events, adstream.orders, adstream.attributed_orders,
	adstream.waiting_orders, adstream.outbox, adstream.sinks, adstream.set_aside,
	adstream.source_config, adstream.source_status, adstream.sink_status FROM PUBLIC;
-- Functions: PUBLIC may execute any by default; here none.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA adstream FROM PUBLIC;

-- adstream_reader: results and status
GRANT SELECT ON adstream.ad_stats_minute, adstream.ad_stats_hour, adstream.ad_stats_6h, adstream.ad_stats_day,
	adstream.attributed_orders, adstream.source_status, adstream.sink_status TO adstream_reader;
GRANT EXECUTE ON FUNCTION
	adstream.validate_event(bytea), adstream.validate_event(text),
	adstream.validate_event(bytea, jsonb), adstream.validate_event(text, jsonb),
	adstream.validate_order(bytea), adstream.validate_order(text),
	adstream.ad_stats(timestamptz, timestamptz, text), adstream.campaign_stats(timestamptz, timestamptz, text),
	adstream.bucket(text, timestamptz), adstream.record_uuid(text, text),
	adstream.source_watermark(text), adstream.ad_events_watermark(),
	adstream.worker_status(), adstream.partition_status(), adstream.publisher_status(),
	adstream.dedup_index_status()
	TO adstream_reader;

-- adstream_admin: the masked configuration, positions, dead letters, orders,
-- and the management of sources and sinks
GRANT SELECT ON adstream.source_config, adstream.offsets, adstream.offset_gaps, adstream.rejected_events,
	adstream.orders, adstream.waiting_orders, adstream.ad_events, adstream.set_aside TO adstream_admin;
GRANT EXECUTE ON FUNCTION adstream._is_secret(text) TO adstream_admin;	-- called by source_config
-- validate_event with options runs the workers' compiler of a definition
GRANT EXECUTE ON FUNCTION adstream._validate_event_with(bytea, text[], text[], text),
	adstream._input_format(text, jsonb), adstream._check_field_mapping(text, text[], text[], text)
	TO adstream_reader;
GRANT EXECUTE ON FUNCTION
	adstream.create_source(text, text, text, text, jsonb),
	adstream.drop_source(text, boolean), adstream.pause_source(text), adstream.resume_source(text),
	adstream.create_sink(text, text, jsonb), adstream.drop_sink(text),
	adstream.pause_sink(text), adstream.resume_sink(text),
	adstream.redrive_dead_letters(text, text[], timestamptz, timestamptz)
	TO adstream_admin;

-- Changing and renaming sources and sinks (issue #14) is management.
GRANT EXECUTE ON FUNCTION adstream.alter_source(text, jsonb), adstream.rename_source(text, text),
	adstream.alter_sink(text, jsonb), adstream.rename_sink(text, text)
	TO adstream_admin;

-- Dump and restore: the status views ask _origin() whether a source or sink
-- is held; adopting restored ones is management.
GRANT EXECUTE ON FUNCTION adstream._origin() TO adstream_reader;
-- sink_status counts a sink's backlog through a definer function
GRANT EXECUTE ON FUNCTION adstream._sink_backlog(integer) TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.adopt_restored(text) TO adstream_admin;

-- Failover: readers may see the node's name; naming it is management.
REVOKE ALL ON adstream.node FROM PUBLIC;
GRANT SELECT ON adstream.node TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.node_name() TO adstream_reader;
GRANT EXECUTE ON FUNCTION adstream.set_node_name(text) TO adstream_admin;
