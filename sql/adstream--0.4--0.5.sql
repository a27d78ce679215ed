/* adstream--0.4--0.5.sql -- 0.5, the redesign release */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.5'" to load this file. \quit

/*
 * 0.5 is the redesign release.  From 0.5 on, a fresh install runs the full
 * script adstream--0.5.sql instead of 0.1 and the chain of upgrades; this
 * script takes an installation of 0.4 to the same schema.  Whatever 0.5
 * changes goes both here and into adstream--0.5.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Offset gaps (issue #11, case 4: retention gaps were silent)
-------------------------------------------------------------------------------

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
REVOKE ALL ON adstream.offset_gaps FROM PUBLIC;
GRANT SELECT ON adstream.offset_gaps TO adstream_admin;

-------------------------------------------------------------------------------
-- Dedup expiry per source, behind the slowest partition (issue #11: backfill
-- and catch-up lost events as too_late; one paused source froze expiry for
-- all; expiry raced a new source's first batch)
-------------------------------------------------------------------------------

ALTER TABLE adstream.sources
	ADD COLUMN dedup_expired_before timestamptz NOT NULL DEFAULT '-infinity';

/*
 * What 0.4 has given up already: every dedup_log hour before its oldest
 * remaining partition may have been dropped, so each ad-events source has
 * expired at least that far.  Without any partition, 0.4's own rule says how
 * far it would have rejected: the source's watermark minus the horizon.
 */
UPDATE adstream.sources s
   SET dedup_expired_before = coalesce(
		(SELECT min((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz)
		   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		  WHERE i.inhparent = 'adstream.dedup_log'::regclass),
		(SELECT date_bin('1 hour', max(o.max_event_ts) - current_setting('adstream.dedup_horizon')::interval,
						 timestamptz '1970-01-01 00:00:00+00')
		   FROM adstream.offsets o WHERE o.source = s.name),
		'-infinity')
 WHERE s.kind = 'ad_events';

DROP FUNCTION adstream._dedup_forget(timestamptz);
CREATE FUNCTION adstream._dedup_forget(p_sources integer[], p_before timestamptz[])
RETURNS bigint LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_forget_sources';
COMMENT ON FUNCTION adstream._dedup_forget(integer[], timestamptz[]) IS
	'Internal: forgets, per listed source, the dedup index entries of the hours ending at or before its time, and every entry of a source not listed; returns how many';
REVOKE ALL ON FUNCTION adstream._dedup_forget(integer[], timestamptz[]) FROM PUBLIC;

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
CREATE OR REPLACE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- the horizon is subtracted as a duration (see "Time is UTC")
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_horizon	interval := current_setting('adstream.dedup_horizon')::interval;
	v_latest	timestamptz;
	v_rel		regclass;
	v_upper		timestamptz;
	v_live		boolean;
	v_dropped	integer := 0;
BEGIN
	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);

	-- Read to its end means committed to its end: what a worker has read
	-- into memory but not written is judged after this, against what it gives up.
	WITH pos AS (
		SELECT p.source_id, p.partition, p.high_watermark
		  FROM adstream.partition_status() p),
	parts AS (
		SELECT s.id, o.max_event_ts, coalesce(o.next_offset >= pos.high_watermark, false) AS caught_up
		  FROM adstream.sources s
		  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
		  LEFT JOIN pos ON pos.source_id = s.id AND pos.partition = o.partition
		 WHERE s.kind = 'ad_events'
		UNION ALL
		SELECT s.id, NULL, coalesce(pos.high_watermark = 0, false)
		  FROM adstream.sources s JOIN pos ON pos.source_id = s.id
		 WHERE s.kind = 'ad_events'
		   AND NOT EXISTS (SELECT 1 FROM adstream.offsets o
							WHERE o.source = s.name AND o.topic = s.topic AND o.partition = pos.partition)),
	wm AS (
		SELECT id, coalesce(min(CASE WHEN NOT caught_up THEN coalesce(max_event_ts, '-infinity') END),
							max(max_event_ts)) AS wm
		  FROM parts GROUP BY id)
	UPDATE adstream.sources s
	   SET dedup_expired_before = greatest(s.dedup_expired_before,
			   date_bin('1 hour', wm.wm - v_horizon, timestamptz '1970-01-01 00:00:00+00'))
	  FROM wm
	 WHERE wm.id = s.id AND isfinite(wm.wm);

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

-------------------------------------------------------------------------------
-- Time is UTC (issue #11, case 5: DST stopped ingestion for good)
-------------------------------------------------------------------------------

/*
 * Up to 0.4, timestamptz + interval '1 day' and the like were computed on
 * the clock of the session's TimeZone, where a day across a DST change is 23
 * or 25 hours long.  ensure_partitions made such day partitions: a 23-hour
 * one left its day's last hour without a partition, a 25-hour one took the
 * next day's first hour, so that day's partition "would overlap"; either way
 * a worker retried its batch for ever.  refresh_rollups summed such a
 * 25-hour day, counting the next day's first six-hour block twice as that
 * day.  Windows, horizons and retention cutoffs of whole days were an hour
 * off.  From 0.5 every function that does such arithmetic runs with
 * timezone = UTC (see "Time is UTC" in adstream--0.5.sql); here they are
 * replaced, and then what 0.4 made wrong is repaired.
 */

CREATE OR REPLACE FUNCTION adstream.ensure_partitions(p_table text, p_times timestamptz[])
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
BEGIN
	SELECT grain, fillfactor, storage_options INTO v_grain, v_fill, v_options
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

CREATE OR REPLACE FUNCTION adstream._partition_upper(p_rel regclass)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
RETURN (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
		  FROM pg_class c WHERE c.oid = p_rel);

CREATE OR REPLACE FUNCTION adstream.refresh_rollups()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- a day is 24 hours (see "Time is UTC")
AS $$
DECLARE
	v_minutes	timestamptz[];
	v_level		text;
	v_below		text;
	v_width		interval;
BEGIN
	PERFORM adstream._lock('adstream.rollups', 0, true);
	WITH d AS (DELETE FROM adstream.rollup_pending RETURNING window_start)
	SELECT array_agg(window_start) INTO v_minutes FROM d;
	IF v_minutes IS NULL THEN
		RETURN 0;
	END IF;

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

	RETURN cardinality(v_minutes);
END
$$;

CREATE OR REPLACE FUNCTION adstream.ad_stats(p_from timestamptz, p_to timestamptz, p_granularity text DEFAULT 'hour')
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

CREATE OR REPLACE FUNCTION adstream.attribute_orders(p_limit integer DEFAULT 5000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- a one-day window is 24 hours
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

CREATE OR REPLACE FUNCTION adstream.expire_rejected_events(p_batch integer DEFAULT 50000)
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

CREATE OR REPLACE FUNCTION adstream.drop_expired_partitions()
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
	v_dropped := adstream.expire_dedup_state();

	v_events := least(adstream.ad_events_watermark(),
					  (SELECT min(ts) FROM adstream.orders WHERE status = 'waiting'))
				- v_window - current_setting('adstream.dedup_horizon')::interval;
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_events', v_events);

	PERFORM adstream.refresh_rollups();
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_stats_minute',
		now() - current_setting('adstream.minute_retention')::interval);
	PERFORM adstream.expire_rejected_events();
	RETURN v_dropped;
END
$$;

CREATE OR REPLACE FUNCTION adstream.create_partitions_ahead(p_ahead interval DEFAULT '1 day')
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

CREATE OR REPLACE VIEW adstream.waiting_orders AS
SELECT o.order_id, o.source, o.user_id, o.store_id, o.amount, o.currency, o.ts, o.received_at,
	   adstream.ad_events_watermark() AS ad_events_watermark,
	   o.received_at + make_interval(secs => extract(epoch FROM current_setting('adstream.attribution_max_wait')::interval))
		   AS decide_by
  FROM adstream.orders o
 WHERE o.status = 'waiting';

/*
 * Replace each partition that is not exactly one grain long from a UTC grain
 * boundary (0.4 made day partitions of 23 and 25 hours; hour partitions were
 * right, but every table is checked).  The wrong partitions of a table are
 * detached and renamed first, since the right ones overlap them; then, for
 * each, the right partitions are made for its start and for every bucket
 * its rows fall in, its rows are moved through the parent, and it is
 * dropped.  Rows of the next day in a 25-hour partition so land in that
 * day's new partition.  Partitions whose bounds are not two times (a
 * DEFAULT partition made by hand) are not adstream's and are left alone.
 */
DO $repair$
DECLARE
	v_table		text;
	v_grain		interval;
	v_parent	regclass;
	v_key		text;
	v_cols		text;
	v_bad		regclass[];
	v_lower		timestamptz[];
	v_upper		timestamptz[];
	v_name		text;
	v_times		timestamptz[];
	v_moved		bigint;
	v_rows		bigint;
	v_list		text;
BEGIN
	FOR v_table, v_grain IN SELECT name, grain FROM adstream.partitioned_tables ORDER BY name LOOP
		v_parent := format('adstream.%I', v_table)::regclass;
		SELECT array_agg(p.rel ORDER BY p.lo), array_agg(p.lo ORDER BY p.lo), array_agg(p.hi ORDER BY p.lo)
		  INTO v_bad, v_lower, v_upper
		  FROM (SELECT i.inhrelid::regclass AS rel,
					   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lo,
					   adstream._partition_upper(i.inhrelid) AS hi
				  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
				 WHERE i.inhparent = v_parent) p
		 WHERE p.lo IS NOT NULL AND p.hi IS NOT NULL
		   AND (p.lo <> date_bin(v_grain, p.lo, timestamptz '1970-01-01 00:00:00+00')
				OR extract(epoch FROM p.hi) - extract(epoch FROM p.lo) <> extract(epoch FROM v_grain));
		CONTINUE WHEN v_bad IS NULL;

		SELECT quote_ident(a.attname) INTO v_key
		  FROM pg_partitioned_table t
		  JOIN pg_attribute a ON a.attrelid = t.partrelid AND a.attnum = t.partattrs[0]
		 WHERE t.partrelid = v_parent;
		SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
		  FROM pg_attribute a WHERE a.attrelid = v_parent AND a.attnum > 0 AND NOT a.attisdropped;

		-- Detach and rename them all first, and their indexes, so that the new
		-- partitions and their indexes get the usual names.
		FOR i IN 1 .. cardinality(v_bad) LOOP
			EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_parent, v_bad[i]);
			EXECUTE format('ALTER TABLE %s RENAME TO %I', v_bad[i],
						   left((SELECT relname FROM pg_class WHERE oid = v_bad[i]), 50) || '_replaced');
			FOR v_name IN SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
						   WHERE x.indrelid = v_bad[i] LOOP
				EXECUTE format('ALTER INDEX adstream.%I RENAME TO %I', v_name, left(v_name, 50) || '_replaced');
			END LOOP;
		END LOOP;

		v_rows := 0;
		v_list := NULL;
		FOR i IN 1 .. cardinality(v_bad) LOOP
			v_name := v_table || '_p' || to_char(v_lower[i] AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
			BEGIN
				EXECUTE format('SELECT array_agg(DISTINCT date_bin(%L, %s, timestamptz ''1970-01-01 00:00:00+00'')) FROM %s',
							   v_grain, v_key, v_bad[i]) INTO v_times;
				PERFORM adstream.ensure_partitions(v_table, coalesce(v_times, '{}') || v_lower[i]);
				EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s', v_parent, v_cols, v_cols, v_bad[i]);
				GET DIAGNOSTICS v_moved = ROW_COUNT;
				EXECUTE format('DROP TABLE %s', v_bad[i]);
			EXCEPTION WHEN OTHERS THEN
				RAISE EXCEPTION 'cannot replace partition % of adstream.%, which does not span exactly % from a UTC boundary',
					v_name, v_table, v_grain
					USING ERRCODE = 'object_not_in_prerequisite_state',
						  DETAIL = format('Its bounds are [%s, %s) UTC. %s',
										  to_char(v_lower[i] AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
										  to_char(v_upper[i] AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), SQLERRM),
						  HINT = 'Its rows need partitions one grain long from a UTC boundary (adstream.partitioned_tables): make room for them (a DEFAULT partition must hold no rows of their range), or move the rows out and drop this partition; then run ALTER EXTENSION adstream UPDATE again.';
			END;
			v_rows := v_rows + v_moved;
			v_list := concat_ws('; ', v_list,
								format('%s [%s, %s) with %s rows', v_name,
									   to_char(v_lower[i] AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
									   to_char(v_upper[i] AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), v_moved));
		END LOOP;
		-- INFO reaches the client whatever client_min_messages says (an
		-- update script raises it to WARNING).
		RAISE INFO 'adstream: replaced % partitions of adstream.% that did not span exactly % from a UTC boundary; % rows moved',
			cardinality(v_bad), v_table, v_grain, v_rows
			USING DETAIL = format('Their bounds came from a session TimeZone with DST (adstream 0.4 and earlier). In UTC: %s.', v_list);
	END LOOP;
END
$repair$;

/*
 * Recompute the days whose rollup differs from the sum of their UTC
 * six-hour blocks: 0.4 took the next day's first block into a 25-hour day,
 * and so wrote the next day's total from that block alone, or with it
 * twice.  Hours and six-hour blocks were right.
 */
DO $rollups$
DECLARE
	v_days	bigint;
BEGIN
	INSERT INTO adstream.ad_stats_day AS r (ad_id, campaign_id, window_start, impressions, clicks)
	SELECT s.ad_id, max(s.campaign_id), adstream.bucket('day', s.window_start), sum(s.impressions), sum(s.clicks)
	  FROM adstream.ad_stats_6h s
	 GROUP BY s.ad_id, 3
	ON CONFLICT (ad_id, window_start) DO UPDATE
	   SET campaign_id = excluded.campaign_id, impressions = excluded.impressions, clicks = excluded.clicks
	 WHERE (r.campaign_id, r.impressions, r.clicks) IS DISTINCT FROM (excluded.campaign_id, excluded.impressions, excluded.clicks);
	GET DIAGNOSTICS v_days = ROW_COUNT;
	IF v_days > 0 THEN
		RAISE INFO 'adstream: recomputed % rows of adstream.ad_stats_day from their UTC six-hour blocks', v_days;
	END IF;
END
$rollups$;

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
-- Dump and restore (issue #11, case 8): pg_dump saves the dead letters and the
-- outbox too; a source or sink restored from a dump of another installation
-- waits, held, until adstream.adopt_restored().  adstream--0.5.sql explains
-- (its header and "Dump and restore").
-------------------------------------------------------------------------------

CREATE FUNCTION adstream._origin()
RETURNS text LANGUAGE C STRICT STABLE
AS 'MODULE_PATHNAME', 'adstream_origin';
COMMENT ON FUNCTION adstream._origin() IS
	'Internal: this installation''s identity (system identifier/database oid/extension oid), which a source''s or sink''s origin must equal for its workers to run';
REVOKE ALL ON FUNCTION adstream._origin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream._origin() TO adstream_reader;

-- The sources and sinks that exist are this installation's own.
ALTER TABLE adstream.sources ADD COLUMN origin text;
UPDATE adstream.sources SET origin = adstream._origin();
ALTER TABLE adstream.sinks ADD COLUMN origin text;
UPDATE adstream.sinks SET origin = adstream._origin();

SELECT pg_catalog.pg_extension_config_dump('adstream.rejected_events', '');
SELECT pg_catalog.pg_extension_config_dump('adstream.outbox', '');

/* The broker addresses of a bootstrap list, for telling whether two lists name one cluster. */
CREATE FUNCTION adstream._broker_set(p_brokers text)
RETURNS text[] LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(SELECT DISTINCT lower(regexp_replace(btrim(b), '^[A-Za-z_]+://', ''))
			   FROM unnest(string_to_array(p_brokers, ',')) AS b WHERE btrim(b) <> '');
COMMENT ON FUNCTION adstream._broker_set(text) IS
	'Internal: the broker addresses of a bootstrap list, lower-case and without a protocol prefix';
REVOKE ALL ON FUNCTION adstream._broker_set(text) FROM PUBLIC;

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

	INSERT INTO adstream.sources (name, kind, brokers, topic, start_policy, workers, group_id, kafka_options,
								  origin)
	VALUES (create_source.name, create_source.kind, create_source.brokers, create_source.topic,
			v_start, v_workers, v_group, v_props, adstream._origin());
	PERFORM adstream._wake_launcher();
END
$$;

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
	INSERT INTO adstream.sinks (name, brokers, topic_ad_stats, topic_orders, kafka_options, done_snapshot, origin)
	VALUES (create_sink.name, create_sink.brokers, v_topic_a, v_topic_o, v_props, v_snap, adstream._origin());
	INSERT INTO adstream.outbox (kind, ad_id, window_start)
	SELECT DISTINCT 'ad_stats', m.ad_id, m.window_start FROM adstream.ad_stats_minute m ORDER BY 2, 3;	-- one per (ad, minute)
	INSERT INTO adstream.outbox (kind, order_id)
	SELECT 'attributed_orders', a.order_id FROM adstream.attributed_orders a;
	PERFORM adstream._wake_launcher();
END
$$;

CREATE OR REPLACE FUNCTION adstream.prune_outbox()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_horizon	xid8;
	v_n			bigint;
BEGIN
	SELECT coalesce(min(CASE WHEN k.origin = adstream._origin() THEN pg_snapshot_xmin(k.done_snapshot)
							 ELSE '3'::xid8 END),
					pg_snapshot_xmin(pg_current_snapshot()))
	  INTO v_horizon FROM adstream.sinks k;
	DELETE FROM adstream.outbox WHERE txid < v_horizon;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	RETURN v_n;
END
$$;

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
	PERFORM setval('adstream.outbox_id_seq', (SELECT last_value FROM adstream.outbox_id_seq) + 1099511627776);	-- 2^40

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
REVOKE ALL ON FUNCTION adstream.adopt_restored(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.adopt_restored(text) TO adstream_admin;

CREATE OR REPLACE VIEW adstream.source_status AS
WITH parts AS (
	SELECT s.id, s.name, o.partition FROM adstream.sources s
	  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
	UNION
	SELECT s.id, s.name, p.partition FROM adstream.sources s
	  JOIN adstream.partition_status() p ON p.source_id = s.id
)
SELECT s.name AS source,
	   s.topic,
	   CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'enabled' ELSE 'paused' END AS source_state,
	   pt.partition,
	   coalesce(ps.pid, w.pid) AS worker_pid,
	   coalesce(w.state, CASE WHEN h.held THEN 'held' WHEN s.enabled THEN 'starting' ELSE 'stopped' END) AS worker_state,
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
	   coalesce(w.last_error, CASE WHEN h.held THEN 'restored from another installation: no worker runs until adstream.adopt_restored() is called, once the restore is complete and the original has stopped' END) AS last_error,
	   w.last_error_at,
	   (SELECT count(*) FROM adstream.offset_gaps g
		 WHERE g.source = s.name AND g.topic = s.topic AND g.partition = pt.partition) AS offset_gaps,
	   s.dedup_expired_before,
	   mw.warning,
	   mw.hint AS warning_hint
  FROM adstream.sources s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  -- a dedup index close to full, overdue maintenance (issue #15): once per query
  CROSS JOIN adstream._maintenance_warning() mw
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
	'One row per source and partition: worker, offsets, lag, counts, watermark, last error (never credentials), offset gaps recorded, up to where the source''s dedup state is given up, and a warning with its hint while the dedup index is 80% full or maintenance is overdue';

CREATE OR REPLACE VIEW adstream.sink_status AS
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
	   w.last_error_at
  FROM adstream.sinks s
  CROSS JOIN LATERAL (SELECT s.origin IS DISTINCT FROM adstream._origin() AS held) h
  LEFT JOIN LATERAL (
	-- a held sink's cursor is the original cluster's: once adopted, it
	-- sends every row of the outbox
	SELECT count(*) AS rows, coalesce(sum(pg_column_size(o.*)), 0) AS bytes
	  FROM adstream.outbox o
	 WHERE h.held
		OR (o.txid >= pg_snapshot_xmin(s.done_snapshot)
			AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
			AND (s.target_snapshot IS NULL OR o.id > s.last_id
				 OR NOT pg_visible_in_snapshot(o.txid, s.target_snapshot)))) b ON true
  LEFT JOIN adstream.publisher_status() w ON w.sink_id = s.id;


-------------------------------------------------------------------------------
-- Counts attributable to their source (issue #11, case 6: a mistaken source's
-- contribution could never be removed)
-------------------------------------------------------------------------------

/*
 * Every row of ad_stats_minute names the source that counted it; rows
 * counted before 0.5 are not attributable (0).  The primary key takes the
 * source: dropping and adding it on the parent rebuilds the index of every
 * partition.  Readers (ad_stats, the rollups, the outbox) sum over sources.
 */
ALTER TABLE adstream.ad_stats_minute ADD COLUMN source_id integer NOT NULL DEFAULT 0;
ALTER TABLE adstream.ad_stats_minute DROP CONSTRAINT ad_stats_minute_pkey;
ALTER TABLE adstream.ad_stats_minute ADD PRIMARY KEY (ad_id, window_start, source_id);
COMMENT ON TABLE adstream.ad_stats_minute IS
	'Deduplicated impressions and clicks per ad, one-minute UTC event-time window and source; readers sum over sources';
COMMENT ON COLUMN adstream.ad_stats_minute.source_id IS
	'The source that counted them (sources.id), so that drop_source(forget_counts) can remove them; 0: counted before 0.5';

CREATE OR REPLACE FUNCTION adstream._outbox_page(p_sink text, p_limit integer)
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
				'node', current_setting('adstream.node_name'), 'ad_id', o.ad_id, 'campaign_id', max(m.campaign_id),
				'window_start', (extract(epoch FROM o.window_start) * 1000)::bigint,
				'impressions', coalesce(sum(m.impressions), 0), 'clicks', coalesce(sum(m.clicks), 0), 'version', o.id,
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

DROP FUNCTION adstream.drop_source(text);
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
			INSERT INTO adstream.rollup_pending (window_start)
			SELECT DISTINCT g.window_start FROM gone g ORDER BY 1
			ON CONFLICT DO NOTHING)
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
REVOKE ALL ON FUNCTION adstream.drop_source(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.drop_source(text, boolean) TO adstream_admin;
