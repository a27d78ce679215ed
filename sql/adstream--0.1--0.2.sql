/* adstream--0.1--0.2.sql -- order attribution, rollups, maintenance on pg_cron */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.2'" to load this file. \quit

-------------------------------------------------------------------------------
-- Orders sources
-------------------------------------------------------------------------------

ALTER TABLE adstream.sources DROP CONSTRAINT sources_kind_check;
ALTER TABLE adstream.sources ADD CONSTRAINT sources_kind_check CHECK (kind IN ('ad_events', 'orders'));

-------------------------------------------------------------------------------
-- Ad events kept for attribution, expiring with the attribution window
-------------------------------------------------------------------------------

INSERT INTO adstream.partitioned_tables VALUES ('ad_events', interval '1 hour', 100);

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

-------------------------------------------------------------------------------
-- Orders and their attribution
-------------------------------------------------------------------------------

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
CREATE INDEX orders_waiting_idx ON adstream.orders (ts) WHERE status = 'waiting';
COMMENT ON TABLE adstream.orders IS
	'Every distinct order; the attribution columns stay null while it waits or when nothing matched';

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

/*
 * How far all ad events have arrived: the lowest partition watermark over
 * every enabled ad-events source.  An order is judged once this passes its
 * time, so the clicks before it have been ingested.  NULL when no ad events
 * have arrived yet.
 */
CREATE FUNCTION adstream.ad_events_watermark()
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN (SELECT min(o.max_event_ts)
		  FROM adstream.offsets o JOIN adstream.sources s ON s.name = o.source AND s.topic = o.topic
		 WHERE s.kind = 'ad_events' AND s.enabled AND o.max_event_ts IS NOT NULL);
COMMENT ON FUNCTION adstream.ad_events_watermark() IS
	'Lowest event-time watermark over the partitions of all enabled ad-events sources';

CREATE VIEW adstream.waiting_orders AS
SELECT o.order_id, o.source, o.user_id, o.store_id, o.amount, o.currency, o.ts, o.received_at,
	   adstream.ad_events_watermark() AS ad_events_watermark,
	   o.received_at + current_setting('adstream.attribution_max_wait')::interval AS decide_by
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
 * name-based (MD5, version 3) UUID of the record's kind and key.
 */
CREATE FUNCTION adstream.record_uuid(p_kind text, p_key text)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT (substr(h, 1, 12) || '3' || substr(h, 14, 3)
				|| substr('89ab', (('x' || substr(h, 17, 1))::bit(4)::integer % 4) + 1, 1)
				|| substr(h, 18))::uuid
		  FROM (SELECT pg_catalog.md5('adstream/' || p_kind || '/' || p_key) AS h) m);
COMMENT ON FUNCTION adstream.record_uuid(text, text) IS
	'Deterministic record UUID of a published row, from its kind and key';

/*
 * Judge the orders that are ready, in one transaction: last click wins
 * within adstream.attribution_window before the order; with view-through
 * on, the last impression within adstream.view_through_window when no click
 * matched.  Several workers may run this at once (SKIP LOCKED).
 */
CREATE FUNCTION adstream.attribute_orders(p_limit integer DEFAULT 5000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_wm		timestamptz := adstream.ad_events_watermark();
	v_window	interval := current_setting('adstream.attribution_window')::interval;
	v_view		interval := current_setting('adstream.view_through_window')::interval;
	v_wait		interval := current_setting('adstream.attribution_max_wait')::interval;
	v_done		integer;
BEGIN
	WITH ready AS (
		SELECT o.order_id, o.user_id, o.store_id, o.ts
		  FROM adstream.orders o
		 WHERE o.status = 'waiting'
		   AND (o.ts <= v_wm OR o.received_at <= now() - v_wait)
		 ORDER BY o.ts
		 LIMIT p_limit
		   FOR UPDATE SKIP LOCKED
	), judged AS (
		SELECT r.order_id, coalesce(c.type, v.type) AS type, coalesce(c.ad_id, v.ad_id) AS ad_id,
			   coalesce(c.campaign_id, v.campaign_id) AS campaign_id,
			   coalesce(c.event_id, v.event_id) AS event_id, coalesce(c.ts, v.ts) AS event_ts
		  FROM ready r
		  LEFT JOIN LATERAL (
			SELECT e.type, e.ad_id, e.campaign_id, e.event_id, e.ts FROM adstream.ad_events e
			 WHERE e.user_id = r.user_id AND e.store_id = r.store_id AND e.type = 'click'
			   AND e.ts <= r.ts AND e.ts > r.ts - v_window
			 ORDER BY e.ts DESC, e.event_id DESC LIMIT 1) c ON true
		  LEFT JOIN LATERAL (
			SELECT e.type, e.ad_id, e.campaign_id, e.event_id, e.ts FROM adstream.ad_events e
			 WHERE c.event_id IS NULL AND v_view > interval '0'
			   AND e.user_id = r.user_id AND e.store_id = r.store_id AND e.type = 'impression'
			   AND e.ts <= r.ts AND e.ts > r.ts - v_view
			 ORDER BY e.ts DESC, e.event_id DESC LIMIT 1) v ON true
	), updated AS (
		UPDATE adstream.orders o
		   SET status = CASE WHEN j.event_id IS NULL THEN 'unattributed' ELSE 'attributed' END,
			   decided_at = now(),
			   attribution = CASE j.type WHEN 'click' THEN 'click' WHEN 'impression' THEN 'view' END,
			   ad_id = j.ad_id, campaign_id = j.campaign_id, event_id = j.event_id, event_ts = j.event_ts
		  FROM judged j
		 WHERE o.order_id = j.order_id
		RETURNING o.*
	), credited AS (
		INSERT INTO adstream.attributed_orders
			(order_id, ad_id, campaign_id, click_event_id, click_ts, order_ts, amount, currency,
			 attribution, record_uuid)
		SELECT u.order_id, u.ad_id, u.campaign_id, u.event_id, u.event_ts, u.ts, u.amount, u.currency,
			   u.attribution, adstream.record_uuid('attributed_orders', u.order_id::text)
		  FROM updated u WHERE u.event_id IS NOT NULL
		ON CONFLICT (order_id) DO NOTHING
		RETURNING 1
	)
	SELECT count(*) INTO v_done FROM updated;
	RETURN v_done;
END
$$;
COMMENT ON FUNCTION adstream.attribute_orders(integer) IS
	'Judges the waiting orders whose time the ad-events watermark has passed (or that waited attribution_max_wait); returns how many';

-------------------------------------------------------------------------------
-- Rollups
-------------------------------------------------------------------------------

/* Minute windows written since the last rollup refresh; workers add them in
 * the batch transaction, the refresh consumes them in its own. */
CREATE TABLE adstream.rollup_pending (
	window_start	timestamptz PRIMARY KEY
);
COMMENT ON TABLE adstream.rollup_pending IS
	'Minute windows changed since the rollups were last refreshed';

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

/* Start of the bucket of a given granularity that holds ts, in UTC. */
-- No SET clause, so that the planner can inline it.
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
 * written since the last refresh.  A worker that commits while this runs
 * leaves its pending row for the next refresh, so nothing is missed.
 */
CREATE FUNCTION adstream.refresh_rollups()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_minutes	timestamptz[];
	v_level		text;
	v_below		text;
	v_width		interval;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('adstream.rollups'));
	WITH d AS (DELETE FROM adstream.rollup_pending RETURNING window_start)
	SELECT array_agg(window_start) INTO v_minutes FROM d;
	IF v_minutes IS NULL THEN
		RETURN 0;
	END IF;

	-- Each level from the one below it: hours from minutes, 6h from hours, days from 6h.
	FOR v_level, v_below, v_width IN
		VALUES ('hour', 'ad_stats_minute', interval '1 hour'),
			   ('6h', 'ad_stats_hour', interval '6 hours'),
			   ('day', 'ad_stats_6h', interval '1 day')
	LOOP
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
AS $$
BEGIN
	IF p_granularity IS NULL OR p_granularity NOT IN ('minute', 'hour', '6h', 'day') THEN
		RAISE EXCEPTION 'invalid granularity %', coalesce(quote_literal(p_granularity), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''minute'', ''hour'', ''6h'' or ''day''.';
	END IF;
	IF p_granularity = 'minute' THEN
		RETURN QUERY SELECT m.ad_id, m.campaign_id, m.window_start, m.impressions, m.clicks
		  FROM adstream.ad_stats_minute m WHERE m.window_start >= p_from AND m.window_start < p_to;
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
-- Maintenance: partitions ahead, retention, rollups (plain functions, and
-- pg_cron jobs through schedule_maintenance)
-------------------------------------------------------------------------------

/* Upper bound of a range partition, from its bound expression. */
CREATE FUNCTION adstream._partition_upper(p_rel regclass)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
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
		EXECUTE format('ALTER TABLE adstream.%I DETACH PARTITION %s', p_table, v_rel);
		EXECUTE format('DROP TABLE %s', v_rel);
		v_dropped := v_dropped + 1;
	END LOOP;
	RETURN v_dropped;
END
$$;

CREATE OR REPLACE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_cutoff	timestamptz;
BEGIN
	SELECT min(wm) - current_setting('adstream.dedup_horizon')::interval INTO v_cutoff
	  FROM (SELECT max(o.max_event_ts) AS wm
			  FROM adstream.offsets o JOIN adstream.sources s ON s.name = o.source
			 WHERE s.kind = 'ad_events'
			 GROUP BY o.source HAVING max(o.max_event_ts) IS NOT NULL) w;
	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM pg_advisory_xact_lock(hashtext('adstream.partitions'), hashtext('dedup_expiry'));
	RETURN adstream._drop_partitions_before('dedup_state', v_cutoff);
END
$$;

COMMENT ON FUNCTION adstream.expire_dedup_state() IS
	'Drops dedup_state partitions older than every ad-events source''s watermark minus adstream.dedup_horizon; returns how many';

/*
 * Drop what has expired: dedup state behind watermark - horizon; ad events
 * behind the ad-events watermark - (attribution window + dedup horizon),
 * but never what a waiting order still needs; minute aggregates older than
 * adstream.minute_retention (their rollups are refreshed first and kept).
 */
CREATE FUNCTION adstream.drop_expired_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
	v_window	interval := greatest(current_setting('adstream.attribution_window')::interval,
									 current_setting('adstream.view_through_window')::interval);
	v_events	timestamptz;
	v_dropped	integer;
BEGIN
	v_dropped := adstream.expire_dedup_state();

	v_events := least(adstream.ad_events_watermark(),
					  (SELECT min(ts) FROM adstream.orders WHERE status = 'waiting'))
				- v_window - current_setting('adstream.dedup_horizon')::interval;
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_events', v_events);

	PERFORM adstream.refresh_rollups();
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_stats_minute',
		now() - current_setting('adstream.minute_retention')::interval);
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.drop_expired_partitions() IS
	'Drops expired partitions of dedup_state, ad_events and ad_stats_minute; returns how many';

/* Partitions for the next p_ahead of wall-clock time, so workers rarely create any. */
CREATE FUNCTION adstream.create_partitions_ahead(p_ahead interval DEFAULT '1 day')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
-- Source management: orders sources
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION adstream._source_kinds()
RETURNS text[] LANGUAGE sql IMMUTABLE
RETURN ARRAY['ad_events', 'orders'];

-------------------------------------------------------------------------------
-- pg_dump: results are user data, dumped with the database
-------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('adstream.orders', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.attributed_orders', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.rollup_pending', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_hour', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_6h', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.ad_stats_day', '');

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

REVOKE ALL ON adstream.ad_events, adstream.orders, adstream.attributed_orders, adstream.rollup_pending,
	adstream.ad_stats_hour, adstream.ad_stats_6h, adstream.ad_stats_day, adstream.waiting_orders FROM PUBLIC;
REVOKE ALL ON FUNCTION adstream.ad_events_watermark(), adstream.record_uuid(text, text),
	adstream.attribute_orders(integer), adstream.bucket(text, timestamptz), adstream.refresh_rollups(),
	adstream.ad_stats(timestamptz, timestamptz, text), adstream.campaign_stats(timestamptz, timestamptz, text),
	adstream._partition_upper(regclass), adstream._drop_partitions_before(text, timestamptz),
	adstream.drop_expired_partitions(), adstream.create_partitions_ahead(interval),
	adstream.schedule_maintenance(), adstream.unschedule_maintenance(), adstream._source_kinds(),
	adstream.validate_order(bytea), adstream.validate_order(text) FROM PUBLIC;

GRANT SELECT ON adstream.ad_stats_hour, adstream.ad_stats_6h, adstream.ad_stats_day,
	adstream.attributed_orders TO adstream_reader;
GRANT SELECT ON adstream.orders, adstream.waiting_orders, adstream.ad_events TO adstream_admin;
GRANT EXECUTE ON FUNCTION adstream.validate_order(bytea), adstream.validate_order(text),
	adstream.ad_stats(timestamptz, timestamptz, text),
	adstream.campaign_stats(timestamptz, timestamptz, text), adstream.bucket(text, timestamptz),
	adstream.ad_events_watermark(), adstream.record_uuid(text, text) TO adstream_reader;
