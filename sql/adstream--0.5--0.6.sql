/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Input formats (issue #14, section 5): field mapping, ts units, Avro with a
-- schema registry.  The column, the option checks, and create_source taking
-- the new options.
-------------------------------------------------------------------------------

ALTER TABLE adstream.sources ADD COLUMN input_format jsonb NOT NULL DEFAULT '{}';

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
	v_input		jsonb;
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

	v_input := adstream._input_format(create_source.kind, options);

	INSERT INTO adstream.sources (name, kind, brokers, topic, start_policy, workers, group_id, kafka_options,
								  origin, input_format)
	VALUES (create_source.name, create_source.kind, create_source.brokers, create_source.topic,
			v_start, v_workers, v_group, v_props, adstream._origin(), v_input);
	PERFORM adstream._wake_launcher();
END
$$;
COMMENT ON FUNCTION adstream.create_source(text, text, text, text, jsonb) IS
	'Registers a Kafka topic to consume; workers start within about a second';
REVOKE ALL ON FUNCTION adstream._input_format_keys(), adstream._check_field_mapping(text, text[], text[], text),
	adstream._input_format(text, jsonb) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Re-driving dead letters (issue #14, section 4): payloads kept whole when
-- adstream.dead_letter_payload_bytes allows, marked dead letters judged again.
-------------------------------------------------------------------------------

ALTER TABLE adstream.rejected_events ADD COLUMN redrive_generation bigint;
CREATE INDEX rejected_events_redrive ON adstream.rejected_events (source, topic, partition, "offset")
	WHERE redrive_generation IS NOT NULL;

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
REVOKE ALL ON FUNCTION adstream.redrive_dead_letters(text, text[], timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.redrive_dead_letters(text, text[], timestamptz, timestamptz) TO adstream_admin;

-------------------------------------------------------------------------------
-- validate_event under a source's input-format options (issue #14, section 5)
-------------------------------------------------------------------------------

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
REVOKE ALL ON FUNCTION adstream._validate_event_with(bytea, text[], text[], text),
	adstream.validate_event(bytea, jsonb), adstream.validate_event(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.validate_event(bytea, jsonb), adstream.validate_event(text, jsonb) TO adstream_reader;
-- validate_event with options runs the workers' compiler of a definition
GRANT EXECUTE ON FUNCTION adstream._validate_event_with(bytea, text[], text[], text),
	adstream._input_format(text, jsonb), adstream._check_field_mapping(text, text[], text[], text)
	TO adstream_reader;

-------------------------------------------------------------------------------
-- source_config shows the input format (issue #14, section 5), credentials in
-- the schema registry URL masked
-------------------------------------------------------------------------------

CREATE OR REPLACE VIEW adstream.source_config AS
SELECT s.name, s.kind, s.brokers, s.topic, s.start_policy, s.workers, s.group_id,
	   (SELECT coalesce(jsonb_object_agg(k, CASE WHEN adstream._is_secret(k) THEN to_jsonb('********'::text) ELSE v END), '{}')
		  FROM jsonb_each(s.kafka_options) AS o(k, v)) AS kafka_options,
	   s.enabled, s.created_at, s.updated_at,
	   -- 0.6: the input format, with credentials in the registry URL masked
	   CASE WHEN s.input_format ? 'schema_registry'
			THEN jsonb_set(s.input_format, '{schema_registry}',
						   to_jsonb(regexp_replace(s.input_format->>'schema_registry', '^([a-z]+://)[^/@]*@', '\1********@')))
			ELSE s.input_format END AS input_format
  FROM adstream.sources s;
COMMENT ON VIEW adstream.source_config IS
	'Sources with secret librdkafka properties masked';
